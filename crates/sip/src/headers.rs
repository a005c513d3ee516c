//! Header names (long and compact forms) and the typed, lazily decoded header values a switch
//! needs. Every typed value borrows the message text.

use std::borrow::Cow;

use crate::message::{LayoutHost, Message, Method, ViaLayout};
use crate::scan::{
    self, Cursor, Params, is_token, parse_params, parse_params_finding, parse_u32, split_list, trim_lws,
};
use crate::uri::{Host, Uri, parse_host, parse_uri};
use crate::{Error, SipUri};

macro_rules! header_names {
    ($( $variant:ident = $name:literal $(| $compact:literal)? ),* $(,)?) => {
        /// A header field name. Known names (and their compact forms) map to one variant;
        /// every other name is `Other` and keeps its text in the message.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HeaderName { $($variant,)* Other }

        impl HeaderName {
            /// The canonical (long) name; `""` for `Other`.
            pub fn as_str(&self) -> &'static str {
                match self { $(HeaderName::$variant => $name,)* HeaderName::Other => "" }
            }
            /// Every known name with its compact form, for tables and tests.
            pub const ALL: &'static [(HeaderName, &'static str, Option<u8>)] = &[
                $((HeaderName::$variant, $name, header_names!(@compact $($compact)?)),)*
            ];

        }
    };
    (@compact $c:literal) => { Some($c) };
    (@compact) => { None };
}

header_names! {
    Accept = "Accept",
    AcceptContact = "Accept-Contact" | b'a',
    AcceptEncoding = "Accept-Encoding",
    AcceptLanguage = "Accept-Language",
    AlertInfo = "Alert-Info",
    Allow = "Allow",
    AllowEvents = "Allow-Events" | b'u',
    AuthenticationInfo = "Authentication-Info",
    Authorization = "Authorization",
    CallId = "Call-ID" | b'i',
    CallInfo = "Call-Info",
    Contact = "Contact" | b'm',
    ContentDisposition = "Content-Disposition",
    ContentEncoding = "Content-Encoding" | b'e',
    ContentLanguage = "Content-Language",
    ContentLength = "Content-Length" | b'l',
    ContentType = "Content-Type" | b'c',
    CSeq = "CSeq",
    Date = "Date",
    Diversion = "Diversion",
    ErrorInfo = "Error-Info",
    Event = "Event" | b'o',
    Expires = "Expires",
    From = "From" | b'f',
    Geolocation = "Geolocation",
    GeolocationError = "Geolocation-Error",
    GeolocationRouting = "Geolocation-Routing",
    Identity = "Identity" | b'y',
    IdentityInfo = "Identity-Info" | b'n',
    InReplyTo = "In-Reply-To",
    MaxForwards = "Max-Forwards",
    MimeVersion = "MIME-Version",
    MinExpires = "Min-Expires",
    MinSe = "Min-SE",
    Organization = "Organization",
    PAssertedIdentity = "P-Asserted-Identity",
    PChargeInfo = "P-Charge-Info",
    PPreferredIdentity = "P-Preferred-Identity",
    Path = "Path",
    Priority = "Priority",
    Privacy = "Privacy",
    ProxyAuthenticate = "Proxy-Authenticate",
    ProxyAuthorization = "Proxy-Authorization",
    ProxyRequire = "Proxy-Require",
    RAck = "RAck",
    Reason = "Reason",
    RecordRoute = "Record-Route",
    ReferTo = "Refer-To" | b'r',
    ReferredBy = "Referred-By" | b'b',
    RejectContact = "Reject-Contact" | b'j',
    RemotePartyId = "Remote-Party-ID",
    Replaces = "Replaces",
    ReplyTo = "Reply-To",
    RequestDisposition = "Request-Disposition" | b'd',
    Require = "Require",
    RetryAfter = "Retry-After",
    Route = "Route",
    RSeq = "RSeq",
    Server = "Server",
    SessionExpires = "Session-Expires" | b'x',
    Subject = "Subject" | b's',
    SubscriptionState = "Subscription-State",
    Supported = "Supported" | b'k',
    Timestamp = "Timestamp",
    To = "To" | b't',
    Unsupported = "Unsupported",
    UserAgent = "User-Agent",
    Via = "Via" | b'v',
    Warning = "Warning",
    WwwAuthenticate = "WWW-Authenticate",
}

impl HeaderName {
    /// Maps a name as written (any case, long or compact) to its variant.
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        match name {
            [] => HeaderName::Other,
            [c] => match c.to_ascii_lowercase() {
                b'a' => HeaderName::AcceptContact,
                b'b' => HeaderName::ReferredBy,
                b'c' => HeaderName::ContentType,
                b'd' => HeaderName::RequestDisposition,
                b'e' => HeaderName::ContentEncoding,
                b'f' => HeaderName::From,
                b'i' => HeaderName::CallId,
                b'j' => HeaderName::RejectContact,
                b'k' => HeaderName::Supported,
                b'l' => HeaderName::ContentLength,
                b'm' => HeaderName::Contact,
                b'n' => HeaderName::IdentityInfo,
                b'o' => HeaderName::Event,
                b'r' => HeaderName::ReferTo,
                b's' => HeaderName::Subject,
                b't' => HeaderName::To,
                b'u' => HeaderName::AllowEvents,
                b'v' => HeaderName::Via,
                b'x' => HeaderName::SessionExpires,
                b'y' => HeaderName::Identity,
                _ => HeaderName::Other,
            },
            // Extension headers (`X-...`) are never known names: skip the lookup.
            [b'x' | b'X', b'-', ..] => HeaderName::Other,
            _ => lookup_long(name),
        }
    }

    /// Headers whose value is a comma-separated list that may be split across fields
    /// (RFC 3261 section 7.3.1). From, To, Call-ID, CSeq and the like are not.
    pub fn is_list(&self) -> bool {
        use HeaderName as H;
        matches!(
            self,
            H::Via
                | H::Contact
                | H::Route
                | H::RecordRoute
                | H::Path
                | H::Allow
                | H::Supported
                | H::Require
                | H::ProxyRequire
                | H::Unsupported
                | H::Accept
                | H::AcceptEncoding
                | H::AcceptLanguage
                | H::ContentEncoding
                | H::ContentLanguage
                | H::AllowEvents
                | H::PAssertedIdentity
                | H::PPreferredIdentity
                | H::Diversion
                | H::RemotePartyId
                | H::Geolocation
                | H::Reason
                | H::Warning
                | H::CallInfo
                | H::AlertInfo
                | H::ErrorInfo
                | H::InReplyTo
                | H::Identity
        )
    }
}

/// Long names are found through a table built at compile time: a hash of the name's length
/// and three of its bytes (case folded with `| 0x20`, exact for letters, `-` and digits) picks
/// a slot (linear probing), so a lookup costs a few instructions and one or two comparisons
/// instead of a scan of every name.
const NAME_SLOTS: usize = 256;

const fn name_hash(name: &[u8]) -> usize {
    let n = name.len();
    if n == 0 {
        return 0;
    }
    let first = (name[0] | 0x20) as u32;
    let mid = (name[n / 2] | 0x20) as u32;
    let last = (name[n - 1] | 0x20) as u32;
    let h =
        (n as u32).wrapping_mul(0x9e37_79b1) ^ first.wrapping_mul(0x85eb_ca6b) ^ mid.wrapping_mul(0xc2b2_ae35) ^ last;
    (h ^ (h >> 15)) as usize % NAME_SLOTS
}

/// Slot -> index into `HeaderName::ALL` plus one (0 = empty).
static NAME_TABLE: [u8; NAME_SLOTS] = {
    let mut t = [0u8; NAME_SLOTS];
    let all = HeaderName::ALL;
    let mut i = 0;
    while i < all.len() {
        let mut slot = name_hash(all[i].1.as_bytes());
        while t[slot] != 0 {
            slot = (slot + 1) % NAME_SLOTS;
        }
        t[slot] = (i + 1) as u8;
        i += 1;
    }
    t
};

/// Case-insensitive equality of a known name (letters, digits, `-`) with a token: OR-ing
/// `0x20` folds case exactly for those, and no other token byte folds onto them.
#[inline]
fn eq_folded(known: &[u8], token: &[u8]) -> bool {
    known.len() == token.len() && known.iter().zip(token).all(|(k, t)| (k | 0x20) == (t | 0x20))
}

fn lookup_long(name: &[u8]) -> HeaderName {
    let mut slot = name_hash(name);
    loop {
        let entry = NAME_TABLE[slot] as usize;
        if entry == 0 {
            return HeaderName::Other;
        }
        let (header, long, _) = HeaderName::ALL[entry - 1];
        if eq_folded(long.as_bytes(), name) {
            return header;
        }
        slot = (slot + 1) % NAME_SLOTS;
    }
}

/// `Via` (RFC 3261 section 20.42, RFC 3581 rport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// `SIP/2.0` as written, whitespace removed only around the slashes.
    pub protocol_name: &'a str,
    pub protocol_version: &'a str,
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, `WSS` or any other token.
    pub transport: &'a str,
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The first `branch` parameter's value, as `params.get("branch").flatten()` finds it:
    /// found while the parameters are checked, since every transaction lookup asks for it.
    pub(crate) branch: Option<&'a str>,
}

impl<'a> Via<'a> {
    pub fn parse(s: &'a str) -> Result<Via<'a>, Error> {
        let bad = Error("malformed Via");
        let mut c = Cursor::new(s);
        c.skip_lws();
        let protocol_name = c.token().map_err(|_| bad)?;
        if !c.eat_sep(b'/') {
            return Err(bad);
        }
        let protocol_version = c.token().map_err(|_| bad)?;
        if !c.eat_sep(b'/') {
            return Err(bad);
        }
        let transport = c.token().map_err(|_| bad)?;
        if c.skip_lws() == 0 {
            return Err(bad);
        }
        // sent-by = host [ COLON port ], where COLON may have whitespace around it.
        let host_start = c.pos();
        if c.peek() == Some(b'[') {
            c.take_while(|b| b != b']');
            c.eat(b']');
        } else {
            c.take_while(scan::is_hostname);
        }
        let sent_by_error = Error("malformed Via sent-by");
        let (host, _) = parse_host(&s[host_start..c.pos()]).map_err(|_| sent_by_error)?;
        let port = if c.eat_sep(b':') {
            Some(c.take_while(|b| b.is_ascii_digit()).parse::<u16>().map_err(|_| sent_by_error)?)
        } else {
            None
        };
        let (params, branch) = parse_params_finding(&mut c, "branch").map_err(|_| Error("malformed Via parameter"))?;
        c.skip_lws();
        if !c.at_end() {
            return Err(bad);
        }
        Ok(Via { protocol_name, protocol_version, transport, host, port, params, branch: branch.flatten() })
    }
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }
    /// `true` when the branch carries the RFC 3261 magic cookie (`z9hG4bK`) and something after
    /// it, so the transaction can be matched by branch alone.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }
    /// `Some(None)`: rport requested; `Some(Some(p))`: filled in by a server.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }
    pub fn ttl(&self) -> Option<u8> {
        self.params.get("ttl").flatten().and_then(|t| t.parse().ok())
    }
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route, P-Asserted-Identity, Diversion, Refer-To and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: a quoted string's content (escapes kept) or the tokens.
    pub display_name: Option<&'a str>,
    pub uri: Uri<'a>,
    /// The URI text as written.
    pub uri_str: &'a str,
    /// `true` for the `<...>` form.
    pub bracketed: bool,
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, Error> {
        let mut c = Cursor::new(s);
        let na = Self::parse_at(&mut c)?;
        c.skip_lws();
        if !c.at_end() {
            return Err(Error("unexpected text after address"));
        }
        Ok(na)
    }

    fn parse_at(c: &mut Cursor<'a>) -> Result<NameAddr<'a>, Error> {
        c.skip_lws();
        let mut display_name = None;
        let start = c.pos();
        if c.peek() == Some(b'"') {
            display_name = Some(c.quoted_string()?);
            c.skip_lws();
            if c.peek() != Some(b'<') {
                return Err(Error("display name without <URI>"));
            }
        } else if c.peek() != Some(b'<') {
            // Either `*(token LWS) <uri>` or an addr-spec: look ahead for '<'.
            let mut end = start;
            loop {
                let t = c.take_while(is_token);
                if t.is_empty() {
                    break;
                }
                end = c.pos();
                c.skip_lws();
            }
            if c.peek() == Some(b'<') {
                display_name = Some(&c.src()[start..end]);
            } else {
                c.set_pos(start);
            }
        }
        if c.eat(b'<') {
            let uri_start = c.pos();
            c.take_while(|b| b != b'>');
            let uri_str = &c.src()[uri_start..c.pos()];
            if !c.eat(b'>') {
                return Err(Error("unterminated <URI>"));
            }
            let uri = parse_uri(uri_str)?;
            let params = parse_params(c)?;
            return Ok(NameAddr { display_name, uri, uri_str, bracketed: true, params });
        }
        // addr-spec: the URI ends at ';' (what follows are header parameters), and may not
        // contain ',', ';' or '?' (RFC 3261 section 20: such URIs must be bracketed).
        let uri_start = c.pos();
        c.take_while(|b| b != b';' && b != b',' && !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        let uri_str = &c.src()[uri_start..c.pos()];
        if uri_str.is_empty() {
            return Err(Error("missing URI"));
        }
        if uri_str.contains('?') {
            return Err(Error("URI with headers must be in angle brackets"));
        }
        let uri = parse_uri(uri_str)?;
        let params = parse_params(c)?;
        Ok(NameAddr { display_name: None, uri, uri_str, bracketed: false, params })
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
    /// The SIP URI, when it is one.
    pub fn sip_uri(&self) -> Option<&SipUri<'a>> {
        self.uri.as_sip()
    }
    /// The user part of a sip/sips URI or the number of a tel URI.
    pub fn user(&self) -> Option<&'a str> {
        self.uri.user()
    }
    /// The display name with quoted-pair escapes resolved.
    pub fn display_name_text(&self) -> Option<Cow<'a, str>> {
        self.display_name.map(unquote)
    }
    /// The `expires` contact parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params.get("expires").flatten().and_then(parse_u32)
    }
    /// The `q` contact parameter in thousandths (`q=0.33` is 330).
    pub fn q(&self) -> Option<u16> {
        let v = self.params.get("q").flatten()?;
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole: u16 = match int {
            "0" => 0,
            "1" => 1,
            _ => return None,
        };
        let mut thousandths = 0u16;
        for (i, d) in frac.bytes().enumerate() {
            thousandths += u16::from(d - b'0') * [100, 10, 1][i];
        }
        let q = whole * 1000 + thousandths;
        (q <= 1000).then_some(q)
    }
}

/// Parses a comma-separated list of name-addrs (Contact, Route, Record-Route, Path,
/// P-Asserted-Identity, Diversion, ...).
pub fn parse_name_addr_list(s: &str) -> Result<Vec<NameAddr<'_>>, Error> {
    let mut out = Vec::new();
    for part in split_list(s) {
        if part.is_empty() {
            return Err(Error("empty list element"));
        }
        out.push(NameAddr::parse(part)?);
    }
    Ok(out)
}

/// Resolves quoted-pair escapes (`\"` -> `"`).
pub fn unquote(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// `Contact`: `*` or a list of addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts<'a> {
    Star,
    List(Vec<NameAddr<'a>>),
}

/// `CSeq` (RFC 3261 section 20.16): a 32-bit sequence number and a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    pub fn parse(s: &'a str) -> Result<CSeq<'a>, Error> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let n = c.take_while(|b| b.is_ascii_digit());
        let seq = parse_u32(n).ok_or(Error("CSeq number missing or larger than 2^32-1"))?;
        if c.skip_lws() == 0 {
            return Err(Error("malformed CSeq"));
        }
        let m = c.token().map_err(|_| Error("malformed CSeq method"))?;
        c.skip_lws();
        if !c.at_end() {
            return Err(Error("malformed CSeq"));
        }
        Ok(CSeq { seq, method: Method::parse(m) })
    }
}

/// `Content-Type` (and `Accept` elements): `type/subtype;params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub kind: &'a str,
    pub subtype: &'a str,
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    pub fn parse(s: &'a str) -> Result<MediaType<'a>, Error> {
        let bad = Error("malformed media type");
        let mut c = Cursor::new(s);
        c.skip_lws();
        let kind = c.token().map_err(|_| bad)?;
        if !c.eat_sep(b'/') {
            return Err(bad);
        }
        let subtype = c.token().map_err(|_| bad)?;
        let params = parse_params(&mut c).map_err(|_| bad)?;
        c.skip_lws();
        if !c.at_end() {
            return Err(bad);
        }
        Ok(MediaType { kind, subtype, params })
    }
    /// Case-insensitive `type/subtype` comparison.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
    /// Whether this range (as in `Accept`, with `*` wildcards) covers `kind/subtype`.
    pub fn matches(&self, kind: &str, subtype: &str) -> bool {
        (self.kind == "*" || self.kind.eq_ignore_ascii_case(kind))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

/// `Authorization`, `Proxy-Authorization`, `WWW-Authenticate`, `Proxy-Authenticate`:
/// a scheme and comma-separated `name=value` parameters (RFC 3261 section 25.1, RFC 8760).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    pub scheme: &'a str,
    /// The parameter text after the scheme, as written.
    pub params: &'a str,
}

impl<'a> Auth<'a> {
    pub fn parse(s: &'a str) -> Result<Auth<'a>, Error> {
        let bad = Error("malformed authentication header");
        let mut c = Cursor::new(s);
        c.skip_lws();
        let scheme = c.token().map_err(|_| bad)?;
        let params = trim_lws(c.rest());
        if !params.is_empty() && c.skip_lws() == 0 {
            return Err(bad);
        }
        let a = Auth { scheme, params };
        for p in split_list(params) {
            if params.is_empty() {
                break;
            }
            let (n, v) = p.split_once('=').ok_or(bad)?;
            if !scan::is_token_str(trim_lws(n)) || trim_lws(v).is_empty() {
                return Err(bad);
            }
            let v = trim_lws(v);
            if v.starts_with('"') && (v.len() < 2 || !v.ends_with('"')) {
                return Err(bad);
            }
        }
        Ok(a)
    }
    /// A parameter's value with quotes removed and escapes resolved (`realm`, `nonce`,
    /// `response`, `algorithm`, `qop`, ...). Names are case-insensitive.
    pub fn param(&self, name: &str) -> Option<Cow<'a, str>> {
        split_list(self.params).find_map(|p| {
            let (n, v) = p.split_once('=')?;
            if !trim_lws(n).eq_ignore_ascii_case(name) {
                return None;
            }
            let v = trim_lws(v);
            Some(match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => unquote(inner),
                None => Cow::Borrowed(v),
            })
        })
    }
}

/// `Reason` (RFC 3326): `SIP ;cause=503 ;text="..."` or `Q.850;cause=16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason<'a> {
    pub protocol: &'a str,
    pub params: Params<'a>,
}

impl<'a> Reason<'a> {
    pub fn parse(s: &'a str) -> Result<Reason<'a>, Error> {
        let (protocol, params) = token_with_params(s, Error("malformed Reason"))?;
        Ok(Reason { protocol, params })
    }
    pub fn cause(&self) -> Option<u32> {
        self.params.get("cause").flatten().and_then(parse_u32)
    }
    pub fn text(&self) -> Option<Cow<'a, str>> {
        let t = self.params.get("text").flatten()?;
        Some(match t.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => unquote(inner),
            None => Cow::Borrowed(t),
        })
    }
}

/// `Identity` (RFC 8224): a compact or full PASSporT, then `;info=<uri>;alg=..;ppt=..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    pub token: &'a str,
    pub params: Params<'a>,
}

impl<'a> Identity<'a> {
    pub fn parse(s: &'a str) -> Result<Identity<'a>, Error> {
        let bad = Error("malformed Identity");
        let mut c = Cursor::new(s);
        c.skip_lws();
        if c.peek() == Some(b'"') {
            // RFC 4474 quoted form; kept for completeness.
            let token = c.quoted_string()?;
            let params = parse_params(&mut c).map_err(|_| bad)?;
            return Ok(Identity { token, params });
        }
        let token = c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+' | b'/'));
        if token.is_empty() {
            return Err(bad);
        }
        let params = parse_identity_params(&mut c).ok_or(bad)?;
        c.skip_lws();
        if !c.at_end() {
            return Err(bad);
        }
        Ok(Identity { token, params })
    }
    /// The `info` parameter's URI, brackets removed.
    pub fn info(&self) -> Option<&'a str> {
        let v = self.params.get("info").flatten()?;
        Some(v.strip_prefix('<').and_then(|v| v.strip_suffix('>')).unwrap_or(v))
    }
    pub fn alg(&self) -> Option<&'a str> {
        self.params.get("alg").flatten()
    }
    pub fn ppt(&self) -> Option<&'a str> {
        self.params.get("ppt").flatten().map(|v| v.trim_matches('"'))
    }
}

/// Identity parameters allow `info=<URI>`, which generic-param does not.
fn parse_identity_params<'a>(c: &mut Cursor<'a>) -> Option<Params<'a>> {
    let start = c.pos();
    let mut end = start;
    while c.eat_sep(b';') {
        c.token().ok()?;
        if c.eat_sep(b'=') {
            match c.peek() {
                Some(b'<') => {
                    c.take_while(|b| b != b'>');
                    if !c.eat(b'>') {
                        return None;
                    }
                }
                Some(b'"') => {
                    c.quoted_string().ok()?;
                }
                _ => {
                    if c.take_while(|b| is_token(b) || b == b':').is_empty() {
                        return None;
                    }
                }
            }
        }
        end = c.pos();
    }
    c.set_pos(end);
    Some(Params::from_raw(&c.src()[start..end]))
}

fn token_with_params(s: &str, bad: Error) -> Result<(&str, Params<'_>), Error> {
    let mut c = Cursor::new(s);
    c.skip_lws();
    let t = c.token().map_err(|_| bad)?;
    let params = parse_params(&mut c).map_err(|_| bad)?;
    c.skip_lws();
    if !c.at_end() {
        return Err(bad);
    }
    Ok((t, params))
}

/// A comma-separated list of tokens: option tags (Supported, Require, Unsupported,
/// Proxy-Require) and methods (Allow).
pub fn parse_token_list(s: &str) -> Result<Vec<&str>, Error> {
    let mut out = Vec::new();
    if trim_lws(s).is_empty() {
        return Ok(out);
    }
    for t in split_list(s) {
        if !scan::is_token_str(t) {
            return Err(Error("malformed token list"));
        }
        out.push(t);
    }
    Ok(out)
}

/// `Privacy` (RFC 3323): priv-values separated by `;` (`id`, `header`, `session`, `user`,
/// `none`, `critical`).
pub fn parse_privacy(s: &str) -> Result<Vec<&str>, Error> {
    let mut out = Vec::new();
    for v in s.split(';') {
        let v = trim_lws(v);
        if !scan::is_token_str(v) {
            return Err(Error("malformed Privacy"));
        }
        out.push(v);
    }
    Ok(out)
}

/// A header whose value is one unsigned 32-bit number (Expires, Min-Expires, Content-Length,
/// RSeq, Retry-After's first part).
pub fn parse_number(s: &str) -> Result<u32, Error> {
    let t = trim_lws(s);
    let n = t.split(|c: char| c == ';' || c == '(' || c.is_ascii_whitespace()).next().unwrap_or("");
    parse_u32(n).ok_or(Error("malformed number"))
}

/// Typed access on a message. Each accessor decodes on call; a malformed value is an `Err`.
impl Message {
    /// Every Via value, top first, across fields.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, Error>> + '_ {
        self.header_values(HeaderName::Via).flat_map(split_list).map(Via::parse)
    }
    pub fn top_via(&self) -> Result<Via<'_>, Error> {
        match self.cached_top_via() {
            Some(via) => Ok(via),
            None => self.parse_top_via(),
        }
    }
    /// The top Via, decoded from the text (never from the cache).
    pub(crate) fn parse_top_via(&self) -> Result<Via<'_>, Error> {
        self.vias().next().unwrap_or(Err(Error("missing Via")))
    }
    pub fn from(&self) -> Result<NameAddr<'_>, Error> {
        self.single(HeaderName::From, "missing From").and_then(NameAddr::parse)
    }
    pub fn to(&self) -> Result<NameAddr<'_>, Error> {
        self.single(HeaderName::To, "missing To").and_then(NameAddr::parse)
    }
    /// Call-ID: `word [ "@" word ]`.
    pub fn call_id(&self) -> Result<&str, Error> {
        if let Some(v) = self.cached_call_id() {
            return Ok(v);
        }
        let v = self.single(HeaderName::CallId, "missing Call-ID")?;
        let (a, b) = v.split_once('@').unwrap_or((v, "x"));
        if scan::is_word_str(a) && scan::is_word_str(b) { Ok(v) } else { Err(Error("malformed Call-ID")) }
    }
    pub fn cseq(&self) -> Result<CSeq<'_>, Error> {
        if let Some(cseq) = self.cached_cseq() {
            return Ok(cseq);
        }
        self.single(HeaderName::CSeq, "missing CSeq").and_then(CSeq::parse)
    }
    /// `Ok(None)` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, Error> {
        match self.header(HeaderName::MaxForwards) {
            None => Ok(None),
            Some(v) => {
                let n = parse_u32(trim_lws(v)).ok_or(Error("malformed Max-Forwards"))?;
                u8::try_from(n).map(Some).map_err(|_| Error("Max-Forwards larger than 255"))
            }
        }
    }
    pub fn contacts(&self) -> Result<Option<Contacts<'_>>, Error> {
        let mut list = Vec::new();
        let mut star = false;
        for v in self.header_values(HeaderName::Contact) {
            if trim_lws(v) == "*" {
                star = true;
                continue;
            }
            list.extend(parse_name_addr_list(v)?);
        }
        match (star, list.is_empty()) {
            (false, true) => Ok(None),
            (true, true) => Ok(Some(Contacts::Star)),
            (true, false) => Err(Error("Contact * mixed with addresses")),
            (false, false) => Ok(Some(Contacts::List(list))),
        }
    }
    /// The first address of [`Message::contacts`]: `Ok(None)` when that is `None` or `*`, the
    /// same errors otherwise; every address is still checked, but no list is built.
    pub fn first_contact(&self) -> Result<Option<NameAddr<'_>>, Error> {
        let mut first = None;
        let mut star = false;
        for v in self.header_values(HeaderName::Contact) {
            if trim_lws(v) == "*" {
                star = true;
                continue;
            }
            for part in split_list(v) {
                if part.is_empty() {
                    return Err(Error("empty list element"));
                }
                let c = NameAddr::parse(part)?;
                first.get_or_insert(c);
            }
        }
        if star && first.is_some() {
            return Err(Error("Contact * mixed with addresses"));
        }
        Ok(first)
    }
    /// Route, Record-Route, Path and the like, across fields, in order.
    pub fn name_addrs(&self, name: HeaderName) -> Result<Vec<NameAddr<'_>>, Error> {
        let mut out = Vec::new();
        for v in self.header_values(name) {
            out.extend(parse_name_addr_list(v)?);
        }
        Ok(out)
    }
    pub fn content_length(&self) -> Result<Option<u32>, Error> {
        self.header(HeaderName::ContentLength).map(parse_number).transpose()
    }
    pub fn content_type(&self) -> Result<Option<MediaType<'_>>, Error> {
        self.header(HeaderName::ContentType).map(MediaType::parse).transpose()
    }
    pub fn expires(&self) -> Result<Option<u32>, Error> {
        self.header(HeaderName::Expires).map(parse_number).transpose()
    }
    /// All tokens of a list header across its fields (Supported, Require, Allow, ...).
    pub fn tokens(&self, name: HeaderName) -> Result<Vec<&str>, Error> {
        let mut out = Vec::new();
        for v in self.header_values(name) {
            out.extend(parse_token_list(v)?);
        }
        Ok(out)
    }
    pub fn privacy(&self) -> Result<Vec<&str>, Error> {
        let mut out = Vec::new();
        for v in self.header_values(HeaderName::Privacy) {
            out.extend(parse_privacy(v)?);
        }
        Ok(out)
    }
    pub fn auth(&self, name: HeaderName) -> impl Iterator<Item = Result<Auth<'_>, Error>> + '_ {
        self.header_values(name).map(Auth::parse)
    }
    pub fn reasons(&self) -> impl Iterator<Item = Result<Reason<'_>, Error>> + '_ {
        self.header_values(HeaderName::Reason).flat_map(split_list).map(Reason::parse)
    }
    pub fn identities(&self) -> impl Iterator<Item = Result<Identity<'_>, Error>> + '_ {
        self.header_values(HeaderName::Identity).flat_map(split_list).map(Identity::parse)
    }

    /// RFC 3261 section 18.2.1 and RFC 3581: records on the top Via where the request really
    /// came from: `received` when the sent-by is a name or another address, and the source port
    /// in an `rport` the client asked for. Returns `false` when there is no usable top Via.
    pub fn stamp_received(&mut self, source: std::net::SocketAddr) -> bool {
        let Ok(via) = self.top_via() else { return false };
        let ip = source.ip();
        let needs_received = via.host.ip() != Some(ip);
        // `Via::rport` is `Some(None)`: asked for. When the Via is rewritten anyway it is
        // found in the pass over the parameters below, not in one of its own.
        let wants_rport = |value: Option<&str>| value.and_then(|p| p.parse::<u16>().ok()).is_none();
        let mut rport_asked = None;
        if !needs_received {
            rport_asked = Some(via.params.get("rport").is_some_and(wants_rport));
            if rport_asked == Some(false) {
                return true;
            }
        }
        // Built by hand into one allocation (the formatting machinery cost more than the rest),
        // noting where each part lands so the new top Via need not be parsed again.
        let mut v = String::with_capacity(
            via.protocol_name.len()
                + via.protocol_version.len()
                + via.transport.len()
                + if let Host::Domain(d) = via.host { d.len() } else { 0 }
                + via.params.as_str().len()
                + 96,
        );
        let put = |v: &mut String, part: &str| {
            let start = v.len() as u32;
            v.push_str(part);
            (start, v.len() as u32)
        };
        let protocol_name = put(&mut v, via.protocol_name);
        v.push('/');
        let protocol_version = put(&mut v, via.protocol_version);
        v.push('/');
        let transport = put(&mut v, via.transport);
        v.push(' ');
        let host = match via.host {
            Host::Domain(d) => {
                let (a, b) = put(&mut v, d);
                LayoutHost::Domain(a, b)
            }
            Host::Ipv4(a) => {
                crate::message::push_ipv4(&mut v, a);
                LayoutHost::Ipv4(a)
            }
            Host::Ipv6(a) => {
                crate::message::push_host(&mut v, &via.host);
                LayoutHost::Ipv6(a)
            }
        };
        if let Some(p) = via.port {
            v.push(':');
            v.push_str(crate::message::itoa_u32(u32::from(p)).as_str());
        }
        let params_start = v.len() as u32;
        // Where the first `branch` lands (what `Via::branch` finds), noted on the way.
        let mut branch = None;
        let mut branch_seen = false;
        for (name, value) in via.params.iter() {
            if name.eq_ignore_ascii_case("rport") {
                // The first one decides, as `Params::get` finds it.
                rport_asked.get_or_insert_with(|| wants_rport(value));
                continue;
            }
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            v.push(';');
            v.push_str(name);
            let first_branch = !branch_seen && name.eq_ignore_ascii_case("branch");
            branch_seen |= first_branch;
            if let Some(value) = value {
                v.push('=');
                let at = put(&mut v, value);
                if first_branch {
                    branch = Some(at);
                }
            }
        }
        // RFC 3581 section 4: with rport, received is added even when the address matches.
        v.push_str(";received=");
        crate::message::push_ip(&mut v, ip);
        let wants_rport = rport_asked.unwrap_or(false);
        if wants_rport {
            v.push_str(";rport=");
            v.push_str(crate::message::itoa_u32(u32::from(source.port())).as_str());
        }
        let layout = ViaLayout {
            protocol_name,
            protocol_version,
            transport,
            host,
            port: via.port,
            params: (params_start, v.len() as u32),
            branch,
        };
        // The new field's value starts with `v`.
        let replaced = self.replace_first_value(HeaderName::Via, &v);
        if replaced {
            self.remember_top_via(layout);
        }
        replaced
    }

    /// The one value of a header that may appear once.
    fn single(&self, name: HeaderName, missing: &'static str) -> Result<&str, Error> {
        let mut it = self.header_values(name);
        let v = it.next().ok_or(Error(missing))?;
        if it.next().is_some() {
            return Err(Error(match name {
                HeaderName::From => "more than one From",
                HeaderName::To => "more than one To",
                HeaderName::CallId => "more than one Call-ID",
                HeaderName::CSeq => "more than one CSeq",
                _ => "header repeated",
            }));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_table_preconditions() {
        for &(_, long, _) in HeaderName::ALL {
            assert!(long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{long}: eq_folded needs this");
        }
        // Token bytes that are not letters, digits or '-' never fold onto a known name.
        assert_eq!(HeaderName::from_bytes(b"Vi_"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"T~"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Via\r"), HeaderName::Other);
    }

    #[test]
    fn names_long_and_compact() {
        for &(name, long, compact) in HeaderName::ALL {
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), name, "{long}");
            assert_eq!(HeaderName::from_bytes(long.to_ascii_lowercase().as_bytes()), name);
            assert_eq!(HeaderName::from_bytes(long.to_ascii_uppercase().as_bytes()), name);
            if let Some(c) = compact {
                assert_eq!(HeaderName::from_bytes(&[c]), name);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), name);
            }
        }
        assert_eq!(HeaderName::from_bytes(b"X-Telnyx-Token"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
    }

    #[test]
    fn via_variants() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!((v.protocol_name, v.protocol_version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;rport").unwrap();
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        let v = Via::parse("SIP/2.0/TCP host : 5061 ; received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        for bad in ["SIP/2.0/UDP", "SIP/2.0/UDP host;", "SIP/2.0/UDP host;;branch=x", "SIP/2.0 host", "SIP/2.0/UDP h x"]
        {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    /// The branch found while the parameters are checked is the one `Params::get` finds: any
    /// case, the first of several, a flag's none, a quoted one with its quotes.
    #[test]
    fn via_branch_is_the_first_by_any_case() {
        for (via, branch) in [
            ("SIP/2.0/UDP h;BRANCH=z9hG4bKa", Some("z9hG4bKa")),
            ("SIP/2.0/UDP h;rport;Branch = z9hG4bKb ;received=192.0.2.1", Some("z9hG4bKb")),
            ("SIP/2.0/UDP h;branch=z9hG4bKc;branch=z9hG4bKd", Some("z9hG4bKc")),
            ("SIP/2.0/UDP h;branch;branch=z9hG4bKe", None),
            ("SIP/2.0/UDP h;x-branch=1;branchy=2", None),
            ("SIP/2.0/UDP h;branch=\"q;x\"", Some("\"q;x\"")),
            ("SIP/2.0/UDP h", None),
        ] {
            let v = Via::parse(via).unwrap();
            assert_eq!(v.branch(), branch, "{via}");
            assert_eq!(v.branch(), v.params.get("branch").flatten(), "{via}");
        }
    }

    /// A Call-ID is `word [ "@" word ]`: every text of up to five characters from word
    /// characters, `@` and characters that are not word ones, against the rule written out.
    #[test]
    fn call_id_is_word_at_word() {
        let word = |s: &[char]| !s.is_empty() && s.iter().all(|&c| c.is_ascii() && scan::is_word(c as u8));
        let reference = |v: &str| {
            let chars: Vec<char> = v.chars().collect();
            match chars.iter().position(|&c| c == '@') {
                None => word(&chars),
                Some(i) => word(&chars[..i]) && word(&chars[i + 1..]),
            }
        };
        let alphabet = ['a', '@', '.', ' ', ';', '"', '\u{e9}'];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> =
                texts.iter().flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}"))).collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        for v in texts {
            let m = Message::parse(
                bytes::Bytes::from(format!("OPTIONS sip:x SIP/2.0\r\nCall-ID: {v}\r\n\r\n")),
                crate::Framing::Datagram,
            );
            let Ok(m) = m else { continue };
            // The field's value as the parser trimmed it.
            let value = m.header(HeaderName::CallId).unwrap_or_default().to_owned();
            assert_eq!(m.call_id().is_ok(), reference(&value), "{v:?}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8")
            .unwrap();
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.display_name_text().unwrap(), "J Rosenberg \\\"");
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name, Some("caller"));
        let n = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(!n.bracketed);
        assert!(n.params.contains("unknownparam"));
        assert!(n.sip_uri().unwrap().params.is_empty());
        let n = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(n.sip_uri().unwrap().params.contains("unknownparam"));
        assert!(n.params.is_empty());
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "< sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@bell-tel.com>",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:x@y>;",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn received_and_rport_stamped() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.1\r\n\
            Max-Forwards: 70\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let mut m = Message::parse(bytes::Bytes::from_static(text.as_bytes()), crate::Framing::Datagram).unwrap();
        assert!(m.stamp_received("192.0.2.7:40000".parse().unwrap()));
        let back = Message::parse(m.to_bytes(), crate::Framing::Datagram).unwrap();
        let v = back.top_via().unwrap();
        assert_eq!(v.received(), Some("192.0.2.7"));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(back.vias().count(), 2);
        // Sent from the address it names, without rport: nothing to add.
        let text2 = text.replace("pbx.example.com;branch=z9hG4bK1;rport", "192.0.2.7:5060;branch=z9hG4bK1");
        let mut m = Message::parse(bytes::Bytes::from(text2), crate::Framing::Datagram).unwrap();
        assert!(m.stamp_received("192.0.2.7:5060".parse().unwrap()));
        assert!(m.is_untouched());
    }

    /// A message as the switch holds it: accepted by `inspect`, with what it decoded.
    fn inspected(text: &'static str) -> Message {
        match crate::inspect(
            bytes::Bytes::from_static(text.as_bytes()),
            crate::Framing::Datagram,
            &crate::Policy::default(),
        ) {
            crate::Verdict::Accept(m) => m,
            _ => panic!("accepted"),
        }
    }

    #[test]
    fn decoded_top_via_follows_edits() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK1;rport, SIP/2.0/TCP h2\r\n\
            Via: SIP/2.0/UDP h3;branch=z9hG4bK3\r\nMax-Forwards: 70\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\n\
            Call-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let mut m = inspected(text);
        let fresh = |m: &Message| m.parse_top_via().map(|v| format!("{v:?}"));
        assert!(m.cached_top_via().is_some(), "inspect keeps the top Via it decoded");
        assert_eq!(m.top_via().map(|v| format!("{v:?}")), fresh(&m));
        assert!(m.stamp_received("[2001:db8::7]:40000".parse().unwrap()));
        let v = m.cached_top_via().expect("stamping keeps the new top Via");
        assert_eq!(v.received(), Some("2001:db8::7"));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(m.top_via().map(|v| format!("{v:?}")), fresh(&m));
        let copy = m.clone();
        assert_eq!(copy.top_via().map(|v| format!("{v:?}")), fresh(&m));
        m.remove_first_value(HeaderName::Via);
        assert!(m.cached_top_via().is_none());
        assert_eq!(m.top_via().unwrap().transport, "TCP");
        let mut m = copy;
        m.prepend_header(HeaderName::Via, "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnew");
        assert!(m.cached_top_via().is_none());
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKnew"));
        m.remove_headers(HeaderName::Via);
        assert_eq!(m.top_via(), Err(Error("missing Via")));
    }

    #[test]
    fn decoded_to_tag_follows_edits() {
        let text = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
            To: <sip:a@b>;tag=t1\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 2 BYE\r\n\r\n";
        let mut m = inspected(text);
        assert_eq!(m.to_tag(), Ok(Some("t1")));
        let r = m.response_to(200, "OK", Some("other"));
        assert_eq!(r.to_tag(), Ok(Some("t1")), "a To with a tag keeps it");
        m.set_header(HeaderName::To, "<sip:a@b>");
        assert_eq!(m.to_tag(), Ok(None));
        let r = m.response_to(200, "OK", Some("new"));
        assert_eq!(r.to_tag(), Ok(Some("new")));
        m.push_header(HeaderName::To, "<sip:a@b>;tag=t2");
        assert_eq!(m.to_tag(), Err(Error("more than one To")));
    }

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(CSeq::parse("0009\r\n  INVITE").unwrap(), CSeq { seq: 9, method: Method::Invite });
        assert!(CSeq::parse("36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert_eq!(parse_number(" 3600 "), Ok(3600));
        assert!(parse_number("-1").is_err());
    }

    #[test]
    fn q_values() {
        let q = |s: &str| NameAddr::parse(&format!("<sip:a@b>;q={s}")).unwrap().q();
        assert_eq!(q("0.33"), Some(330));
        assert_eq!(q("1"), Some(1000));
        assert_eq!(q("1.0"), Some(1000));
        assert_eq!(q("1.5"), None);
        assert_eq!(q("0.1234"), None);
    }

    #[test]
    fn first_contact_agrees_with_contacts() {
        let cases: [&[&str]; 8] = [
            &[],
            &["*"],
            &["<sip:a@b>;expires=60, <sip:c@d>"],
            &["<sip:a@b>", "<sip:c@d>"],
            &["*", "<sip:a@b>"],
            &["<sip:a@b>, "],
            &["<sip:a@b", "<sip:c@d>"],
            &["sip:a@b?x=y"],
        ];
        for contacts in cases {
            let mut m = Message::new_request("INVITE", "sip:x@y");
            for c in contacts {
                m.push_header(HeaderName::Contact, c);
            }
            let expected = m.contacts().map(|c| match c {
                Some(Contacts::List(list)) => list.first().cloned(),
                _ => None,
            });
            assert_eq!(m.first_contact(), expected, "{contacts:?}");
        }
    }

    #[test]
    fn auth_params() {
        let a = Auth::parse("Digest username=\"bob\", realm=\"atlanta.example.com\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", qop=auth, algorithm=SHA-256").unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.param("USERNAME").unwrap(), "bob");
        assert_eq!(a.param("qop").unwrap(), "auth");
        assert!(a.param("opaque").is_none());
        assert!(Auth::parse("Digest realm").is_err());
    }

    #[test]
    fn identity_reason_privacy() {
        let i = Identity::parse(
            "eyJhbGciOiJFUzI1NiJ9.eyJ.sig;info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken",
        )
        .unwrap();
        assert_eq!(i.info(), Some("https://cert.example.org/passport.cer"));
        assert_eq!(i.ppt(), Some("shaken"));
        let r = Reason::parse("Q.850 ;cause=16 ;text=\"Terminated\"").unwrap();
        assert_eq!((r.protocol, r.cause()), ("Q.850", Some(16)));
        assert_eq!(r.text().unwrap(), "Terminated");
        assert_eq!(parse_privacy("id; critical").unwrap(), vec!["id", "critical"]);
        assert!(parse_privacy("id;;").is_err());
    }
}
