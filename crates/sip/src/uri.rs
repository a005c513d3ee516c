//! SIP, SIPS and tel URIs (RFC 3261 sections 19.1 and 25.1, RFC 3966, RFC 5118).
//!
//! Parsing is zero-copy and never allocates: every piece of text a URI hands back borrows the
//! input, with escapes left as written; [`unescape`] decodes on demand. Each component is checked
//! against exactly the characters its production allows, `%HH` escapes only where the grammar
//! allows them (user, password, parameters and headers, never the host), so a URI that parses
//! here is one the RFC accepts and nothing downstream has to validate it again.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Error;
use crate::scan::{
    Params, is_hnv_unreserved, is_hostname, is_param_unreserved, is_password_extra, is_unreserved, is_user_unreserved,
};

/// A URI as it appears in a Request-URI or a name-addr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Uri<'a> {
    Sip(SipUri<'a>),
    Tel(TelUri<'a>),
    /// Any other `absoluteURI`, kept opaque.
    Other(AbsoluteUri<'a>),
}

/// A `sip:` or `sips:` URI. Text fields are as written, escapes kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SipUri<'a> {
    /// `sips:`.
    pub secure: bool,
    /// May contain `;` and `?` (RFC 4475 semiuri: `user;par=u%40example.net`).
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// From the first `;` after the host and port up to `?` or the end.
    #[cfg_attr(feature = "serde", serde(serialize_with = "params_as_str"))]
    pub params: Params<'a>,
    /// The text after `?`, without it.
    pub headers: Option<&'a str>,
}

/// The host of a SIP URI or of a Via sent-by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A hostname as written (case kept, trailing dot kept).
    Domain(&'a str),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

/// A `tel:` URI (RFC 3966).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TelUri<'a> {
    /// `+1-201-555-0123` (global, with the `+`) or a local number such as `7042`, visual
    /// separators kept.
    pub number: &'a str,
    pub global: bool,
    #[cfg_attr(feature = "serde", serde(serialize_with = "params_as_str"))]
    pub params: Params<'a>,
}

/// Any other URI: `scheme ":" rest`, checked only for URI characters.
#[derive(Clone, Copy, Debug, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AbsoluteUri<'a> {
    /// As written.
    pub scheme: &'a str,
    pub rest: &'a str,
}

/// Schemes compare without regard to case (RFC 3986 section 3.1), so `Display`, which writes
/// the scheme in lowercase, round-trips to an equal value.
impl PartialEq for AbsoluteUri<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme) && self.rest == other.rest
    }
}

#[cfg(feature = "serde")]
fn params_as_str<S: serde::Serializer>(p: &Params<'_>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

#[cfg(feature = "serde")]
impl serde::Serialize for Host<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'a> Uri<'a> {
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
    pub fn as_tel(&self) -> Option<&TelUri<'a>> {
        match self {
            Uri::Tel(t) => Some(t),
            _ => None,
        }
    }
    /// `sip`, `sips` or `tel` in lowercase; any other scheme as written.
    pub fn scheme(&self) -> &'a str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other(o) => o.scheme,
        }
    }
    /// The SIP user part or the tel number, as written.
    pub fn user(&self) -> Option<&'a str> {
        match self {
            Uri::Sip(u) => u.user,
            Uri::Tel(t) => Some(t.number),
            Uri::Other(_) => None,
        }
    }
}

impl<'a> SipUri<'a> {
    /// The URI parameter `name` (case-insensitive); `Some(None)` is a flag such as `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }
    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }
    pub fn has_lr(&self) -> bool {
        self.params.contains("lr")
    }
    pub fn maddr(&self) -> Option<&'a str> {
        self.param("maddr").flatten()
    }
    /// The `user=` parameter (`phone`, `ip`, ...).
    pub fn user_param(&self) -> Option<&'a str> {
        self.param("user").flatten()
    }
}

impl Host<'_> {
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = self.user {
            f.write_str(user)?;
            if let Some(pw) = self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(self.params.as_str())?;
        if let Some(h) = self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TelUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params.as_str())
    }
}

impl fmt::Display for AbsoluteUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.scheme.chars() {
            fmt::Write::write_char(f, c.to_ascii_lowercase())?;
        }
        write!(f, ":{}", self.rest)
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => t.fmt(f),
            Uri::Other(o) => o.fmt(f),
        }
    }
}

/// Parses a whole URI; any trailing text, whitespace, `<`, `>` or `"` is an error.
pub fn parse_uri(s: &str) -> Result<Uri<'_>, Error> {
    let b = s.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return Err(Error("invalid URI scheme"));
    }
    let colon = match b.iter().position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))) {
        Some(i) if b[i] == b':' => i,
        _ => return Err(Error("invalid URI scheme")),
    };
    let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
    if scheme.eq_ignore_ascii_case("sip") {
        parse_sip(rest, false).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("sips") {
        parse_sip(rest, true).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        parse_tel(rest).map(Uri::Tel)
    } else {
        // absoluteURI: hier-part and opaque-part are both made of uric; `[` `]` for IPv6
        // literals (RFC 3986).
        let end = scan(rest.as_bytes(), 0, |c| is_uric(c) || c == b'[' || c == b']')?;
        if rest.is_empty() || end != rest.len() {
            return Err(Error("invalid URI"));
        }
        Ok(Uri::Other(AbsoluteUri { scheme, rest }))
    }
}

/// Parses `host [":" port]`, the whole of `s` (the hostport of a SIP URI, a Via sent-by).
pub fn parse_host(s: &str) -> Result<(Host<'_>, Option<u16>), Error> {
    let (host, port, end) = hostport(s, 0)?;
    if end != s.len() {
        return Err(Error("invalid host"));
    }
    Ok((host, port))
}

/// Decodes `%HH` escapes. Borrows when there is no `%`; never stops at `%00`; a `%` that is not
/// followed by two hex digits is kept as written.
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    let Some(first) = memchr::memchr(b'%', b) else {
        return Cow::Borrowed(b);
    };
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..first]);
    let mut i = first;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_user_char(c: u8) -> bool {
    is_unreserved(c) || is_user_unreserved(c)
}

fn is_password_char(c: u8) -> bool {
    is_unreserved(c) || is_password_extra(c)
}

fn is_param_char(c: u8) -> bool {
    is_unreserved(c) || is_param_unreserved(c)
}

fn is_hnv_char(c: u8) -> bool {
    is_unreserved(c) || is_hnv_unreserved(c)
}

/// `uric` less `escaped`: reserved is user-unreserved plus `:` and `@`.
fn is_uric(c: u8) -> bool {
    is_unreserved(c) || is_user_unreserved(c) || c == b':' || c == b'@'
}

/// Skips bytes matching `ok` and `%HH` escapes from `i`; returns where they stop. A `%` not
/// followed by two hex digits is an error.
#[inline]
fn scan(b: &[u8], mut i: usize, ok: impl Fn(u8) -> bool) -> Result<usize, Error> {
    while let Some(&c) = b.get(i) {
        if ok(c) {
            i += 1;
        } else if c == b'%' {
            if b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) {
                i += 3;
            } else {
                return Err(Error("malformed escape in URI"));
            }
        } else {
            break;
        }
    }
    Ok(i)
}

/// The part after `sip:` / `sips:`.
fn parse_sip(s: &str, secure: bool) -> Result<SipUri<'_>, Error> {
    let b = s.as_bytes();
    // Neither host, parameters nor headers may hold a bare '@', so the first one ends userinfo,
    // however many ';' and '?' the user part contains before it.
    let (user, password, start) = match memchr::memchr(b'@', b) {
        Some(at) => {
            let ui = &b[..at];
            let user_end = scan(ui, 0, is_user_char)?;
            if user_end == 0 {
                return Err(Error("invalid user in URI"));
            }
            let password = match ui.get(user_end) {
                None => None,
                Some(b':') => {
                    if scan(ui, user_end + 1, is_password_char)? != at {
                        return Err(Error("invalid password in URI"));
                    }
                    Some(&s[user_end + 1..at])
                }
                Some(_) => return Err(Error("invalid user in URI")),
            };
            (Some(&s[..user_end]), password, at + 1)
        }
        None => (None, None, 0),
    };
    let (host, port, mut i) = hostport(s, start)?;

    let params_start = i;
    while b.get(i) == Some(&b';') {
        let name_end = scan(b, i + 1, is_param_char)?;
        if name_end == i + 1 {
            return Err(Error("empty URI parameter"));
        }
        i = name_end;
        if b.get(i) == Some(&b'=') {
            let value_end = scan(b, i + 1, is_param_char)?;
            if value_end == i + 1 {
                return Err(Error("empty URI parameter value"));
            }
            i = value_end;
        }
    }
    let params = Params::from_raw(&s[params_start..i]);

    let headers = if b.get(i) == Some(&b'?') {
        let headers_start = i + 1;
        i = headers_start;
        loop {
            let name_end = scan(b, i, is_hnv_char)?;
            if name_end == i || b.get(name_end) != Some(&b'=') {
                return Err(Error("malformed URI header"));
            }
            i = scan(b, name_end + 1, is_hnv_char)?;
            if b.get(i) != Some(&b'&') {
                break;
            }
            i += 1;
        }
        Some(&s[headers_start..i])
    } else {
        None
    };

    if i != b.len() {
        return Err(Error("invalid character in URI"));
    }
    Ok(SipUri { secure, user, password, host, port, params, headers })
}

/// `host [":" port]` from `start`; returns where it ends.
fn hostport(s: &str, start: usize) -> Result<(Host<'_>, Option<u16>, usize), Error> {
    let b = s.as_bytes();
    let tail = b.get(start..).unwrap_or_default();
    let (host, mut i) = if tail.first() == Some(&b'[') {
        let len = tail.iter().position(|&c| c == b']').ok_or(Error("unterminated IPv6 reference"))?;
        // Both ends sit on ASCII brackets, so they are char boundaries.
        let inner = &s[start + 1..start + len];
        (Host::Ipv6(parse_ipv6(inner).ok_or(Error("invalid IPv6 reference"))?), start + len + 1)
    } else {
        match ipv4_prefix(tail) {
            // Most hosts a carrier sees are addresses (about 30 URIs a call): read in the pass
            // that finds their end. An address followed by more hostname characters is not one
            // (`1.2.3.4.example`, `1.2.3.4567`): it is judged as a name below.
            Some((a, len)) if !tail.get(len).is_some_and(|&c| is_hostname(c)) => (Host::Ipv4(a), start + len),
            _ => {
                let end = start + tail.iter().take_while(|&&c| is_hostname(c)).count();
                let name = &s[start..end];
                if name.is_empty() {
                    return Err(Error("missing host in URI"));
                }
                if !is_hostname_str(name) {
                    return Err(Error("invalid host in URI"));
                }
                (Host::Domain(name), end)
            }
        }
    };
    let port = if b.get(i) == Some(&b':') {
        // Digits read as they are found; too many for a port is an error like none at all.
        let digits_start = i + 1;
        i = digits_start;
        let mut port = 0u32;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            port = (port * 10 + u32::from(c - b'0')).min(1 << 16);
            i += 1;
        }
        let port = u16::try_from(port).ok().filter(|_| i > digits_start);
        Some(port.ok_or(Error("invalid port in URI"))?)
    } else {
        None
    };
    Ok((host, port, i))
}

/// Four decimal octets of one to three digits each, each at most 255, at the start of `b`:
/// the address and its length.
fn ipv4_prefix(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    // A byte loop rather than `split('.')`: this runs for most hosts a carrier sees.
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = i;
        let mut value = 0u16;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit() && i - first < 3) {
            value = value * 10 + u16::from(c - b'0');
            i += 1;
        }
        if i == first {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((Ipv4Addr::from(octets), i))
}

/// `*( domainlabel "." ) toplabel [ "." ]`, where labels are alphanumerics with inner hyphens
/// and the top label starts with a letter.
fn is_hostname_str(s: &str) -> bool {
    let b = s.as_bytes();
    let b = b.strip_suffix(b".").unwrap_or(b);
    // One pass: each label starts and ends with an alphanumeric; the last starts with a letter.
    let mut label_start = true;
    let mut prev = b'.';
    let mut top_first = 0u8;
    for &c in b {
        match c {
            b'.' => {
                if label_start || prev == b'-' {
                    return false;
                }
                label_start = true;
            }
            b'-' if !label_start => {}
            c if c.is_ascii_alphanumeric() => {
                if label_start {
                    top_first = c;
                    label_start = false;
                }
            }
            _ => return false,
        }
        prev = c;
    }
    !label_start && prev != b'-' && top_first.is_ascii_alphabetic()
}

/// An IPv6 address between brackets. RFC 5118 section 4.10: RFC 3261's ABNF (from RFC 2373)
/// admits `hexseq "::"` followed by `":" IPv4address`, three colons, and implementations must
/// tolerate it; only that one position is read as `::`, without allocating.
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let p = s.find(":::")?;
    let (head, tail) = (&s[..p], &s[p + 3..]);
    if head.contains("::") || tail.contains(':') || !tail.contains('.') {
        return None;
    }
    let mut buf = [0u8; 64];
    let n = s.len() - 1;
    buf.get_mut(..p + 2)?.copy_from_slice(s.as_bytes().get(..p + 2)?);
    buf.get_mut(p + 2..n)?.copy_from_slice(tail.as_bytes());
    std::str::from_utf8(buf.get(..n)?).ok()?.parse().ok()
}

/// The part after `tel:` (RFC 3966). A local number's `phone-context` is not required.
fn parse_tel(s: &str) -> Result<TelUri<'_>, Error> {
    let b = s.as_bytes();
    let visual = |c: u8| matches!(c, b'-' | b'.' | b'(' | b')');
    let global = b.first() == Some(&b'+');
    let (digits_start, end) = if global {
        (1, 1 + b[1..].iter().take_while(|&&c| c.is_ascii_digit() || visual(c)).count())
    } else {
        (0, b.iter().take_while(|&&c| c.is_ascii_hexdigit() || matches!(c, b'*' | b'#') || visual(c)).count())
    };
    // At least one digit (global) or one hex digit, '*' or '#' (local) beside the separators.
    if !b[digits_start..end].iter().any(|&c| !visual(c)) {
        return Err(Error("invalid tel URI number"));
    }
    let mut i = end;
    while b.get(i) == Some(&b';') {
        let name_start = i + 1;
        i = name_start + b[name_start..].iter().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'-').count();
        if i == name_start {
            return Err(Error("empty tel URI parameter"));
        }
        if b.get(i) == Some(&b'=') {
            let value_end = if s[name_start..i].eq_ignore_ascii_case("isub") {
                scan(b, i + 1, |c| c != b';' && is_uric(c))?
            } else {
                scan(b, i + 1, is_param_char)?
            };
            if value_end == i + 1 {
                return Err(Error("empty tel URI parameter value"));
            }
            i = value_end;
        }
    }
    if i != b.len() {
        return Err(Error("invalid character in tel URI"));
    }
    Ok(TelUri { number: &s[..end], global, params: Params::from_raw(&s[end..]) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Expected fields of a parsed SIP URI; the host is given as its Display form.
    struct Sip {
        input: &'static str,
        secure: bool,
        user: Option<&'static str>,
        password: Option<&'static str>,
        host: &'static str,
        port: Option<u16>,
        params: &'static str,
        headers: Option<&'static str>,
        display: &'static str,
    }

    const fn sip(input: &'static str, user: Option<&'static str>, host: &'static str) -> Sip {
        Sip { input, secure: false, user, password: None, host, port: None, params: "", headers: None, display: input }
    }

    #[test]
    fn sip_uris_parse() {
        let intmeth = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let cases = [
            Sip {
                params: ";unknownparam",
                ..sip("sip:vivekg@chair-dnrc.example.com;unknownparam", Some("vivekg"), "chair-dnrc.example.com")
            },
            Sip {
                params: ";transport=TCP",
                ..sip("sip:%61lice@atlanta.com;transport=TCP", Some("%61lice"), "atlanta.com")
            },
            sip("sip:sips%3Auser%40example.com@example.net", Some("sips%3Auser%40example.com"), "example.net"),
            sip("sip:null-%00-null@example.com", Some("null-%00-null"), "example.com"),
            Sip { port: Some(5070), ..sip("sip:[2001:db8::10]:5070", None, "[2001:db8::10]") },
            sip("sip:[2001:db8::10:5070]", None, "[2001:db8::10:5070]"),
            Sip {
                headers: Some("Route=%3Csip:example.com%3E"),
                ..sip("sip:user@example.com?Route=%3Csip:example.com%3E", Some("user"), "example.com")
            },
            Sip { port: Some(19823), ..sip("sip:user@[::ffff:192.0.2.10]:19823", Some("user"), "[::ffff:192.0.2.10]") },
            Sip {
                display: "sip:user@[2001:db8::c000:201]",
                ..sip("sip:user@[2001:db8:::192.0.2.1]", Some("user"), "[2001:db8::c000:201]")
            },
            Sip { display: "sip:[::c000:201]", ..sip("sip:[:::192.0.2.1]", None, "[::c000:201]") },
            Sip {
                password: Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"),
                ..sip(intmeth, Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"), "example.com")
            },
            sip("sip:user;par=u%40example.net@example.com", Some("user;par=u%40example.net"), "example.com"),
            Sip { display: "sip:alice@Example.COM", ..sip("SIP:alice@Example.COM", Some("alice"), "Example.COM") },
            Sip {
                secure: true,
                port: Some(5061),
                params: ";transport=tls",
                display: "sips:alice@example.com:5061;transport=tls",
                ..sip("sIpS:alice@example.com:5061;transport=tls", Some("alice"), "example.com")
            },
            Sip { port: Some(0), ..sip("sip:192.0.2.1:0", None, "192.0.2.1") },
            Sip { port: Some(65535), ..sip("sip:host:65535", None, "host") },
            Sip { port: Some(5060), display: "sip:host:5060", ..sip("sip:host:0005060", None, "host") },
            Sip { display: "sip:10.0.0.1", ..sip("sip:010.000.0.1", None, "10.0.0.1") },
            Sip { password: Some(""), ..sip("sip:alice:@host", Some("alice"), "host") },
            Sip {
                password: Some("secret"),
                params: ";lr;maddr=[2001:db8::1];user=phone;x=%41",
                headers: Some("subject=hi&priority=urgent&empty=&q=a?b:[c]/$+"),
                ..sip(
                    "sip:alice:secret@host;lr;maddr=[2001:db8::1];user=phone;x=%41?subject=hi&priority=urgent&empty=&q=a?b:[c]/$+",
                    Some("alice"),
                    "host",
                )
            },
            sip("sip:host.example.com.", None, "host.example.com."),
            sip("sip:a-b.c1", None, "a-b.c1"),
            sip("sip:1.2.3.x", None, "1.2.3.x"),
            sip("sip:9.x9", None, "9.x9"),
            Sip {
                password: Some("1234"),
                params: ";user=phone",
                ..sip("sip:+1-212-555-1212:1234@gateway.com;user=phone", Some("+1-212-555-1212"), "gateway.com")
            },
            Sip { headers: Some("h="), ..sip("sip:host?h=", None, "host") },
        ];
        for c in &cases {
            let uri = parse_uri(c.input).unwrap_or_else(|e| panic!("{}: {e}", c.input));
            let u = uri.as_sip().unwrap_or_else(|| panic!("{}: not sip", c.input));
            assert_eq!(u.secure, c.secure, "{}", c.input);
            assert_eq!(u.user, c.user, "{}", c.input);
            assert_eq!(u.password, c.password, "{}", c.input);
            assert_eq!(u.host.to_string(), c.host, "{}", c.input);
            assert_eq!(u.port, c.port, "{}", c.input);
            assert_eq!(u.params.as_str(), c.params, "{}", c.input);
            assert_eq!(u.headers, c.headers, "{}", c.input);
            assert_eq!(uri.to_string(), c.display, "{}", c.input);
            assert_eq!(parse_uri(c.display), Ok(uri), "{}", c.input);
            assert_eq!(uri.user(), c.user);
        }
    }

    #[test]
    fn host_kinds_and_accessors() {
        let u = *parse_uri("sip:%61lice@atlanta.com;transport=TCP;LR;maddr=239.255.255.1;user=phone")
            .unwrap()
            .as_sip()
            .unwrap();
        assert_eq!(u.host, Host::Domain("atlanta.com"));
        assert_eq!(u.host.ip(), None);
        assert_eq!(u.transport(), Some("TCP"));
        assert!(u.has_lr());
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("nope"), None);
        assert_eq!(u.maddr(), Some("239.255.255.1"));
        assert_eq!(u.user_param(), Some("phone"));
        assert_eq!(unescape(u.user.unwrap()).as_ref(), b"alice");

        let u = *parse_uri("sip:user@[::ffff:192.0.2.10]:19823").unwrap().as_sip().unwrap();
        assert_eq!(u.host, Host::Ipv6("::ffff:192.0.2.10".parse().unwrap()));
        assert_eq!(u.host.ip(), Some("::ffff:192.0.2.10".parse().unwrap()));
        assert!(!u.has_lr());
        assert_eq!(u.transport(), None);

        let u = *parse_uri("sip:192.0.2.1").unwrap().as_sip().unwrap();
        assert_eq!(u.host, Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));

        let uri = parse_uri("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!(uri.as_sip().unwrap().host, Host::Ipv6("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(uri.as_sip().unwrap().port, None);
        assert_eq!(uri.scheme(), "sip");
        assert_eq!(parse_uri("SIPS:h").unwrap().scheme(), "sips");
    }

    #[test]
    fn escnull_keeps_the_whole_user() {
        let uri = parse_uri("sip:null-%00-null@example.com").unwrap();
        let user = unescape(uri.user().unwrap());
        assert_eq!(user.len(), 11);
        assert_eq!(user.as_ref(), b"null-\0-null");
    }

    #[test]
    fn unescape_rules() {
        assert!(matches!(unescape("plain"), Cow::Borrowed(b"plain")));
        assert_eq!(unescape("sips%3Auser%40example.com").as_ref(), b"sips:user@example.com");
        assert_eq!(unescape("%ff%FF").as_ref(), &[0xff, 0xff]);
        assert_eq!(unescape("a%").as_ref(), b"a%");
        assert_eq!(unescape("a%4").as_ref(), b"a%4");
        assert_eq!(unescape("%zz%41").as_ref(), b"%zzA");
        assert_eq!(unescape("%%41").as_ref(), b"%A");
        assert_eq!(unescape("é%41").as_ref(), "éA".as_bytes());
    }

    #[test]
    fn invalid_uris_fail() {
        let bad = [
            "",
            "sip",
            ":x",
            "1sip:host",
            "s p:host",
            "sip:",
            "sip:user@",
            "sip:@host",
            "sip::pw@host",
            "sip:user@example.com; lr",
            "sip:user@example.com ",
            " sip:user@example.com",
            "<sip:user@example.com>",
            "sip:user@example.com>",
            "sip:\"a\"@host",
            "sip:us er@host",
            "sip:alice@host\r\n",
            "sip:alice@host\t",
            "sip:é@host",
            "sip:host.é",
            "sip:host;a=é",
            "sip:a@b@c",
            "sip:a:b:c@host",
            "sip:host/path",
            "sip:host#frag",
            "sip:2001:db8::10",
            "sip:user@2001:db8::10",
            "sip:[2001:db8::10",
            "sip:[2001:db8::10]x",
            "sip:[2001:db8::10]]",
            "sip:[]",
            "sip:[2001:db8:::10]",
            "sip:[2001:db8::::192.0.2.1]",
            "sip:[2001:db8::1:::192.0.2.1]",
            "sip:[fe80::1%eth0]",
            "sip:[192.0.2.1]",
            "sip:host:",
            "sip:host:;lr",
            "sip:host:65536",
            "sip:host:99999999999999999999999",
            "sip:host:5o60",
            "sip:host:5060:5060",
            "sip:1.2.3.999",
            "sip:1.2.3.4.5",
            "sip:1.2.3",
            "sip:123",
            "sip:-host.com",
            "sip:host-.com",
            "sip:a..b",
            "sip:.a",
            "sip:.",
            "sip:a.-b",
            "sip:host_name",
            "sip:host;;lr",
            "sip:host;",
            "sip:host;a=",
            "sip:host;=a",
            "sip:host;a=b=c",
            "sip:host;a=\"b\"",
            "sip:%61@host%2ecom",
            "sip:al%6@host",
            "sip:al%zzce@host",
            "sip:al:p%4@host",
            "sip:host;a=%4",
            "sip:host;a%g=1",
            "sip:host?a=%",
            "sip:host?",
            "sip:host?a",
            "sip:host?a=b&",
            "sip:host?=b",
            "sip:host?a=b=c",
            "sip:host?a=b;c",
            "tel:",
            "tel:+",
            "tel:+-",
            "tel:-.()",
            "tel:+1 234",
            "tel:+12a",
            "tel:123;",
            "tel:123;=a",
            "tel:123;a=",
            "tel:123;a_b=1",
            "tel:123?x=y",
            "tel:123;a=%",
            "tel:<123>",
            "http:",
            "http://a b",
            "mailto:<x@y>",
            "urn:\"x\"",
            "urn:x%",
            "x:é",
        ];
        for s in bad {
            assert!(parse_uri(s).is_err(), "{s:?} should fail, got {:?}", parse_uri(s));
        }
    }

    #[test]
    fn tel_uris() {
        let cases: [(&str, &str, bool, &str, &str); 7] = [
            ("tel:+1-201-555-0123", "+1-201-555-0123", true, "", "tel:+1-201-555-0123"),
            ("tel:7042;phone-context=example.com", "7042", false, ";phone-context=example.com", ""),
            ("tel:863-1234;phone-context=+1-914-555", "863-1234", false, ";phone-context=+1-914-555", ""),
            (
                "TEL:+(1)234.5;ext=22;isub=a=b?c",
                "+(1)234.5",
                true,
                ";ext=22;isub=a=b?c",
                "tel:+(1)234.5;ext=22;isub=a=b?c",
            ),
            ("tel:*21#;phone-context=+1", "*21#", false, ";phone-context=+1", ""),
            ("tel:+12;foo;bar=%41", "+12", true, ";foo;bar=%41", ""),
            ("tel:abc-D", "abc-D", false, "", ""),
        ];
        for (input, number, global, params, display) in cases {
            let uri = parse_uri(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let Uri::Tel(t) = uri else { panic!("{input}: not tel") };
            assert_eq!(uri.as_tel(), Some(&t));
            assert_eq!((t.number, t.global, t.params.as_str()), (number, global, params), "{input}");
            assert_eq!(uri.user(), Some(number));
            assert_eq!(uri.scheme(), "tel");
            assert!(uri.as_sip().is_none());
            let display = if display.is_empty() { input } else { display };
            assert_eq!(uri.to_string(), display);
            assert_eq!(parse_uri(display), Ok(uri));
        }
        let t = *parse_uri("tel:7042;phone-context=example.com").unwrap().as_tel().unwrap();
        assert_eq!(t.params.get("PHONE-CONTEXT"), Some(Some("example.com")));
    }

    #[test]
    fn other_schemes_are_opaque() {
        let cases = [
            ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
            ("isbn:2983792873", "isbn", "2983792873"),
            ("http://www.example.com", "http", "//www.example.com"),
            ("name:John_Smith", "name", "John_Smith"),
            ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyKnowsThisScheme", "totallyopaquecontent"),
            ("mailto:alice@example.com", "mailto", "alice@example.com"),
            ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "urn", "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
            ("HTTP://[2001:db8::1]/x?y=%20", "HTTP", "//[2001:db8::1]/x?y=%20"),
            ("sip2:x", "sip2", "x"),
            ("a+b-c.d:/", "a+b-c.d", "/"),
        ];
        for (input, scheme, rest) in cases {
            let uri = parse_uri(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(uri, Uri::Other(AbsoluteUri { scheme, rest }));
            assert_eq!(uri.scheme(), scheme);
            assert_eq!(uri.user(), None);
            assert_eq!(uri.to_string(), format!("{}:{rest}", scheme.to_ascii_lowercase()));
        }
    }

    #[test]
    fn parse_host_whole_string() {
        assert_eq!(parse_host("example.com"), Ok((Host::Domain("example.com"), None)));
        assert_eq!(parse_host("192.0.2.1:5060"), Ok((Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), Some(5060))));
        assert_eq!(parse_host("[2001:db8::9:1]:5061"), Ok((Host::Ipv6("2001:db8::9:1".parse().unwrap()), Some(5061))));
        assert_eq!(parse_host("[::ffff:192.0.2.2]"), Ok((Host::Ipv6("::ffff:192.0.2.2".parse().unwrap()), None)));
        for bad in ["", "host:", "host:x", "host;x", "2001:db8::1", "[::1", "host ", "1.2.3.256", "[::1]:70000"] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_display() {
        assert_eq!(Host::Domain("Example.com").to_string(), "Example.com");
        assert_eq!(Host::Ipv4(Ipv4Addr::new(10, 0, 0, 1)).to_string(), "10.0.0.1");
        assert_eq!(Host::Ipv6(Ipv6Addr::LOCALHOST).to_string(), "[::1]");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes() {
        let uri = parse_uri("sip:alice@[::1]:5060;lr?x=y").unwrap();
        let v = serde_json::to_value(uri).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sip": {"secure": false, "user": "alice", "password": null, "host": "[::1]",
                "port": 5060, "params": ";lr", "headers": "x=y"}})
        );
        let v = serde_json::to_value(parse_uri("tel:+1;ext=2").unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"tel": {"number": "+1", "global": true, "params": ";ext=2"}}));
    }

    fn escaped() -> impl Strategy<Value = String> {
        "%[0-9a-fA-F]{2}"
    }

    /// One or more characters of `class` (a regex character class) or escapes.
    fn text(class: &'static str, max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof![4 => class, 1 => escaped()], 1..max).prop_map(|v| v.concat())
    }

    fn domain() -> impl Strategy<Value = String> {
        (
            prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?", 0..3),
            "[a-zA-Z]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?",
            any::<bool>(),
        )
            .prop_map(|(mut labels, top, dot)| {
                labels.push(top);
                let mut s = labels.join(".");
                if dot {
                    s.push('.');
                }
                s
            })
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            domain(),
            any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
            any::<[u16; 8]>().prop_map(|g| format!("[{}]", Ipv6Addr::from(g))),
        ]
    }

    const USER: &str = "[a-zA-Z0-9_.!~*'()&=+$,;?/-]";
    const PASSWORD: &str = "[a-zA-Z0-9_.!~*'()&=+$,-]";
    const PARAM: &str = "[a-zA-Z0-9_.!~*'()\\[\\]/:&+$-]";
    const HNV: &str = "[a-zA-Z0-9_.!~*'()\\[\\]/?:+$-]";

    #[derive(Debug, Clone)]
    struct Gen {
        scheme: &'static str,
        user: Option<(String, Option<String>)>,
        host: String,
        port: Option<u16>,
        params: Vec<(String, Option<String>)>,
        headers: Vec<(String, String)>,
    }

    fn gen_uri() -> impl Strategy<Value = Gen> {
        (
            prop::sample::select(vec!["sip", "SIP", "Sip", "sips", "SIPS", "sIpS"]),
            prop::option::of((text(USER, 8), prop::option::of(prop_oneof![Just(String::new()), text(PASSWORD, 6)]))),
            host(),
            prop::option::of(any::<u16>()),
            prop::collection::vec((text(PARAM, 5), prop::option::of(text(PARAM, 5))), 0..4),
            prop::collection::vec((text(HNV, 5), prop_oneof![Just(String::new()), text(HNV, 5)]), 0..3),
        )
            .prop_map(|(scheme, user, host, port, params, headers)| Gen {
                scheme,
                user,
                host,
                port,
                params,
                headers,
            })
    }

    impl Gen {
        fn render(&self) -> (String, String, String) {
            let mut s = format!("{}:", self.scheme);
            if let Some((u, pw)) = &self.user {
                s.push_str(u);
                if let Some(pw) = pw {
                    s.push(':');
                    s.push_str(pw);
                }
                s.push('@');
            }
            s.push_str(&self.host);
            if let Some(p) = self.port {
                s.push_str(&format!(":{p}"));
            }
            let mut params = String::new();
            for (n, v) in &self.params {
                params.push(';');
                params.push_str(n);
                if let Some(v) = v {
                    params.push('=');
                    params.push_str(v);
                }
            }
            s.push_str(&params);
            let headers = self.headers.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
            if !self.headers.is_empty() {
                s.push('?');
                s.push_str(&headers);
            }
            (s, params, headers)
        }
    }

    /// `hostport` as it was before addresses were read in one pass, kept to hold the new one to
    /// the same answers.
    fn hostport_reference(s: &str, start: usize) -> Result<(Host<'_>, Option<u16>, usize), Error> {
        fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 4 {
                return None;
            }
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(parts) {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                *o = p.parse::<u16>().ok().and_then(|v| u8::try_from(v).ok())?;
            }
            Some(Ipv4Addr::from(octets))
        }
        let b = s.as_bytes();
        let tail = b.get(start..).unwrap_or_default();
        if tail.first() == Some(&b'[') {
            // IPv6 references are read as they were: nothing to compare.
            return hostport(s, start);
        }
        let (host, mut i) = {
            let end = start + tail.iter().take_while(|&&c| is_hostname(c)).count();
            let name = &s[start..end];
            let host = if name.is_empty() {
                return Err(Error("missing host in URI"));
            } else if let Some(a) = parse_ipv4(name) {
                Host::Ipv4(a)
            } else if is_hostname_str(name) {
                Host::Domain(name)
            } else {
                return Err(Error("invalid host in URI"));
            };
            (host, end)
        };
        let port = if b.get(i) == Some(&b':') {
            let port_start = i + 1;
            i = port_start + b[port_start..].iter().take_while(|c| c.is_ascii_digit()).count();
            let port = crate::scan::parse_u32(&s[port_start..i]).and_then(|p| u16::try_from(p).ok());
            Some(port.ok_or(Error("invalid port in URI"))?)
        } else {
            None
        };
        Ok((host, port, i))
    }

    #[test]
    fn hostport_reads_addresses_and_names_as_before() {
        for s in [
            "1.2.3.4",
            "1.2.3.4:5060",
            "255.255.255.255:65535",
            "256.1.1.1",
            "1.2.3.4567",
            "1.2.3.4.",
            "1.2.3",
            "1.2.3.4a",
            "01.002.3.4",
            "1.2.3.4:",
            "1.2.3.4:65536",
            "1.2.3.4:99999999999999999999999",
            "a.b:1",
            "1.2.3.4;x",
            "[::1]:5",
            "1.2.3.4-5.example",
            "10.0.0.1.",
        ] {
            assert_eq!(hostport(s, 0), hostport_reference(s, 0), "{s}");
        }
    }

    proptest! {
        /// Text made of what hosts and ports are made of, and what ends them.
        #[test]
        fn hostport_answers_as_before(s in "[0-9.a-f:;>\\-\\[\\]]{0,24}", start in 0usize..4) {
            let start = start.min(s.len());
            prop_assert_eq!(hostport(&s, start), hostport_reference(&s, start));
        }

        /// Nearly addresses: one to five groups of up to four digits, then what may follow.
        #[test]
        fn hostport_answers_as_before_about_addresses(
            groups in prop::collection::vec("[0-9]{0,4}", 1..6),
            rest in "[.:;a-z0-9-]{0,6}",
        ) {
            let s = groups.join(".") + &rest;
            prop_assert_eq!(hostport(&s, 0), hostport_reference(&s, 0));
        }

        #[test]
        fn generated_sip_uris_round_trip(g in gen_uri()) {
            let (s, params, headers) = g.render();
            let uri = parse_uri(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            let u = uri.as_sip().expect("sip");
            prop_assert_eq!(u.secure, g.scheme.len() == 4);
            prop_assert_eq!(u.user, g.user.as_ref().map(|(u, _)| u.as_str()));
            prop_assert_eq!(u.password, g.user.as_ref().and_then(|(_, p)| p.as_deref()));
            prop_assert_eq!(u.host.to_string(), g.host.clone());
            prop_assert_eq!(u.port, g.port);
            prop_assert_eq!(u.params.as_str(), params.as_str());
            prop_assert_eq!(u.headers, (!g.headers.is_empty()).then_some(headers.as_str()));
            let shown = uri.to_string();
            prop_assert_eq!(parse_uri(&shown), Ok(uri));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            if let Ok(uri) = parse_uri(&s) {
                let shown = uri.to_string();
                let again = parse_uri(&shown).map_err(|e| TestCaseError::fail(format!("{s} -> {shown}: {e}")))?;
                prop_assert_eq!(again.to_string(), shown);
            }
            let _ = parse_host(&s);
            let _ = unescape(&s);
        }

        #[test]
        fn mutated_uris_never_panic(g in gen_uri(), at in any::<prop::sample::Index>(), c in any::<char>()) {
            let (mut s, _, _) = g.render();
            let mut i = at.index(s.len() + 1);
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            s.insert(i, c);
            if let Ok(uri) = parse_uri(&s) {
                let shown = uri.to_string();
                let again = parse_uri(&shown).map_err(|e| TestCaseError::fail(format!("{s} -> {shown}: {e}")))?;
                prop_assert_eq!(again.to_string(), shown);
            }
            let mut cut = at.index(s.len() + 1);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = parse_uri(&s[..cut]);
        }
    }
}
