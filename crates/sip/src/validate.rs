//! What a server must do with a message that arrived: accept it, answer it with an error
//! response (as a value, for the caller to send), or drop it in silence. Pure: no I/O.
//!
//! Rules and their RFCs: malformed requests get `400` naming the fault (RFC 3261 section 21.4.1);
//! a version other than SIP/2.0 gets `505`; an unsupported Request-URI scheme `416` (8.2.2.1);
//! an unknown `Require` option tag `420` with `Unsupported` (8.2.2.3); Max-Forwards 0 gets `483`
//! (16.3); a message over the size limit `513`; a method the server does not implement `501`
//! with `Allow` (8.2.1); a session body it cannot read `415` with `Accept` (8.2.3). Malformed
//! responses are dropped, never answered (RFC 3261 section 18.1.2, RFC 4475 section 3.1.2.19).

use std::borrow::Cow;

use bytes::Bytes;

use crate::Error;
use crate::headers::{HeaderName, MediaType, NameAddr, parse_number};
use crate::message::{Framing, Message, Method, ViaLayout};
use crate::uri::Uri;

/// What the server supports: the inputs of the checks that are not pure syntax.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Larger messages get `513 Message Too Large`.
    pub max_message_size: usize,
    /// Methods the server implements; others get `501` (with these in `Allow`).
    pub methods: Vec<String>,
    /// Option tags the server supports (for `Require`); others get `420`.
    pub supported: Vec<String>,
    /// Request-URI schemes the server routes; others get `416`.
    pub uri_schemes: Vec<String>,
    /// Body types accepted in requests that carry a session description (INVITE, UPDATE,
    /// PRACK, ACK); others get `415`.
    pub session_bodies: Vec<String>,
}

impl Default for Policy {
    /// The switch's policy: a B2BUA for calls and registrations.
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect();
        Policy {
            max_message_size: 65_535,
            methods: v(&[
                "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "REFER", "NOTIFY",
                "MESSAGE",
            ]),
            supported: v(&["100rel", "timer", "replaces", "path", "outbound", "norefersub", "gruu"]),
            uri_schemes: v(&["sip", "sips", "tel"]),
            session_bodies: v(&["application/sdp", "multipart/mixed", "multipart/alternative"]),
        }
    }
}

/// An error response to send, as a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: Cow<'static, str>,
    /// Extra headers the response must carry (`Unsupported`, `Allow`, `Accept`, ...).
    pub headers: Vec<(HeaderName, String)>,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { status, reason: reason.into(), headers: Vec::new() }
    }
    fn bad(e: Error) -> Rejection {
        Rejection::new(400, format!("Bad Request ({e})"))
    }
    /// A 400 naming the header whose value is at fault.
    fn bad_in(header: HeaderName, e: Error) -> Rejection {
        Rejection::new(400, format!("Bad Request ({}: {e})", header.as_str()))
    }
    fn with(mut self, name: HeaderName, value: String) -> Rejection {
        self.headers.push((name, value));
        self
    }
    /// The response to `request`, with a To tag when the request's To has none.
    pub fn response(&self, request: &Message, to_tag: Option<&str>) -> Message {
        let mut r = request.response_to(self.status, &self.reason, to_tag);
        for (name, value) in &self.headers {
            r.push_header(*name, value);
        }
        r
    }
}

/// The outcome of [`inspect`].
#[derive(Debug)]
pub enum Verdict {
    /// A well-formed message to hand to the transaction layer.
    Accept(Message),
    /// A request to answer with this error (the request as far as it could be split).
    Reject { rejection: Rejection, request: Box<Message> },
    /// Nothing may be sent back: a malformed response, or a request too broken to answer.
    Drop(Error),
}

/// Parses and checks one message from the network.
pub fn inspect(buf: Bytes, framing: Framing, policy: &Policy) -> Verdict {
    let too_large = buf.len() > policy.max_message_size;
    let msg = match Message::parse(buf, framing) {
        Ok(m) => m,
        Err(e) => {
            return match e.partial {
                Some(p) if p.is_request() && p.count(HeaderName::Via) > 0 => {
                    let rejection = if e.status == 505 {
                        Rejection::new(505, "Version Not Supported")
                    } else if too_large {
                        Rejection::new(513, "Message Too Large")
                    } else {
                        Rejection::bad(e.error)
                    };
                    Verdict::Reject { rejection, request: p }
                }
                _ => Verdict::Drop(e.error),
            };
        }
    };
    let mut msg = msg;
    if msg.is_response() {
        return match check_response_at(&msg) {
            Ok(layout) => {
                remember(&mut msg, layout);
                Verdict::Accept(msg)
            }
            Err(e) => Verdict::Drop(e),
        };
    }
    if msg.count(HeaderName::Via) == 0 {
        return Verdict::Drop(Error("request without Via"));
    }
    if too_large {
        return Verdict::Reject { rejection: Rejection::new(513, "Message Too Large"), request: Box::new(msg) };
    }
    match check_request_at(&msg, policy) {
        Ok(layout) => {
            remember(&mut msg, layout);
            Verdict::Accept(msg)
        }
        Err(rejection) => Verdict::Reject { rejection, request: Box::new(msg) },
    }
}

/// Where the headers the checks decoded lie, for everything that reads them after the door.
struct Decoding {
    top_via: Option<ViaLayout>,
    to_tag: Option<Option<(u32, u32)>>,
    cseq: Option<(u32, (u32, u32))>,
}

/// Keeps what the checks decoded.
fn remember(msg: &mut Message, d: Decoding) {
    if let Some(layout) = d.top_via {
        msg.remember_top_via(layout);
    }
    if let Some(tag) = d.to_tag {
        msg.remember_to_tag(tag);
    }
    if let Some(cseq) = d.cseq {
        msg.remember_cseq(cseq);
    }
    // Both checks accept only a well-formed Call-ID.
    msg.remember_call_id();
}

/// A response is usable only if it can be matched to a transaction: status line, Via, CSeq,
/// From, To and Call-ID must all be well formed.
pub fn check_response(msg: &Message) -> Result<(), Error> {
    check_response_at(msg).map(|_| ())
}

/// [`check_response`], returning where the headers it decoded lie.
fn check_response_at(msg: &Message) -> Result<Decoding, Error> {
    // Every Via parsed once; the first is the top one.
    let mut vias = msg.vias();
    let top_via = vias.next().unwrap_or(Err(Error("missing Via")))?;
    for via in vias {
        via?;
    }
    let cseq = msg.cseq()?;
    msg.from()?;
    let to = msg.to()?;
    msg.call_id()?;
    Ok(Decoding {
        top_via: msg.top_via_layout(&top_via),
        to_tag: msg.to_tag_layout(to.tag()),
        cseq: msg.cseq_layout(&cseq),
    })
}

/// The checks on a parsed request, in the order a server applies them.
pub fn check_request(msg: &Message, policy: &Policy) -> Result<(), Rejection> {
    check_request_at(msg, policy).map(|_| ())
}

/// [`check_request`], returning where the headers it decoded lie.
fn check_request_at(msg: &Message, policy: &Policy) -> Result<Decoding, Rejection> {
    let method = msg.method().ok_or_else(|| Rejection::bad(Error("not a request")))?;

    // Syntax of the headers every request needs (RFC 3261 section 8.1.1).
    // Every Via parsed once; the first is the top one.
    let mut vias = msg.vias();
    let top_via = vias.next().unwrap_or(Err(Error("missing Via"))).map_err(Rejection::bad)?;
    for via in vias {
        via.map_err(Rejection::bad)?;
    }
    msg.from().map_err(|e| Rejection::bad_in(HeaderName::From, e))?;
    let to = msg.to().map_err(|e| Rejection::bad_in(HeaderName::To, e))?;
    msg.call_id().map_err(Rejection::bad)?;
    let cseq = msg.cseq().map_err(Rejection::bad)?;
    let max_forwards = msg.max_forwards().map_err(Rejection::bad)?;
    if max_forwards.is_none() && top_via.has_rfc3261_branch() {
        // RFC 2543 senders (no magic cookie) may omit it (RFC 4475 section 3.4.1).
        return Err(Rejection::bad(Error("missing Max-Forwards")));
    }
    if msg.count(HeaderName::MaxForwards) > 1 {
        return Err(Rejection::bad(Error("more than one Max-Forwards")));
    }

    // The Request-URI.
    let uri = match msg.request_uri() {
        // Escaped headers in a Request-URI have no meaning (RFC 4475 section 3.1.2.11).
        Some(Ok(Uri::Sip(s))) if s.headers.is_some() => {
            return Err(Rejection::bad(Error("Request-URI with headers")));
        }
        Some(Ok(u)) => u,
        Some(Err(_)) => return Err(Rejection::bad(Error("malformed Request-URI"))),
        None => return Err(Rejection::bad(Error("missing Request-URI"))),
    };

    // Other headers the switch reads, when present.
    if let Some(ct) = msg.header(HeaderName::ContentType) {
        MediaType::parse(ct).map_err(|_| Rejection::bad(Error("malformed Content-Type")))?;
    }
    if let Some(e) = msg.header(HeaderName::Expires) {
        parse_number(e).map_err(|_| Rejection::bad(Error("malformed Expires")))?;
    }
    check_contacts(msg)?;
    for name in [HeaderName::Route, HeaderName::RecordRoute] {
        msg.name_addrs(name).map_err(|_| {
            Rejection::bad(Error(if name == HeaderName::Route { "malformed Route" } else { "malformed Record-Route" }))
        })?;
    }
    for name in [HeaderName::Require, HeaderName::ProxyRequire, HeaderName::Supported] {
        msg.tokens(name).map_err(|_| Rejection::bad(Error("malformed option-tag list")))?;
    }

    // Method support comes before the CSeq method check: an unknown method with a
    // mismatched CSeq is preferably a 501 (RFC 4475 section 3.1.2.18).
    if !policy.methods.iter().any(|m| m == method.as_str()) {
        return Err(Rejection::new(501, "Not Implemented").with(HeaderName::Allow, policy.methods.join(", ")));
    }
    if cseq.method != method {
        return Err(Rejection::bad(Error("CSeq method does not match the request method")));
    }

    if !policy.uri_schemes.iter().any(|s| s.eq_ignore_ascii_case(uri.scheme())) {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }

    if method == Method::Register {
        // The To of a REGISTER is the address-of-record: a SIP or SIPS URI (RFC 3261 10.3).
        if !matches!(to.uri, Uri::Sip(_)) {
            return Err(Rejection::bad(Error("To of a REGISTER is not a SIP URI")));
        }
    }

    if max_forwards == Some(0) {
        return Err(Rejection::new(483, "Too Many Hops"));
    }

    if !matches!(method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<&str> = msg
            .tokens(HeaderName::Require)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(420, "Bad Extension").with(HeaderName::Unsupported, unsupported.join(", ")));
        }
    }

    if matches!(method, Method::Invite | Method::Update | Method::Prack | Method::Ack) {
        let carries_body = !msg.body().is_empty();
        if carries_body && let Ok(Some(ct)) = msg.content_type() {
            let ok = policy.session_bodies.iter().any(|b| {
                let (k, s) = b.split_once('/').unwrap_or((b, "*"));
                ct.is(k, s)
            });
            if !ok && method != Method::Ack {
                return Err(Rejection::new(415, "Unsupported Media Type")
                    .with(HeaderName::Accept, policy.session_bodies.join(", ")));
            }
        }
        if method == Method::Invite
            && let Some(accept) = msg.header(HeaderName::Accept)
        {
            let ranges: Vec<_> = crate::scan::split_list(accept).filter_map(|r| MediaType::parse(r).ok()).collect();
            if !ranges.is_empty() && !ranges.iter().any(|r| r.matches("application", "sdp")) {
                return Err(Rejection::new(406, "Not Acceptable")
                    .with(HeaderName::Warning, "399 - \"application/sdp is required\"".to_owned()));
            }
        }
    }
    Ok(Decoding {
        top_via: msg.top_via_layout(&top_via),
        to_tag: msg.to_tag_layout(to.tag()),
        cseq: msg.cseq_layout(&cseq),
    })
}

/// What [`Message::contacts`] accepts, and each address's `expires` a number, checked one
/// address at a time (no list is built): the same faults, found in the same order.
fn check_contacts(msg: &Message) -> Result<(), Rejection> {
    let fault = |e: Error| Rejection::bad(contact_fault(e));
    let (mut star, mut addresses, mut bad_expires) = (false, false, false);
    for v in msg.header_values(HeaderName::Contact) {
        if crate::scan::trim_lws(v) == "*" {
            star = true;
            continue;
        }
        for part in crate::scan::split_list(v) {
            if part.is_empty() {
                return Err(fault(Error("empty list element")));
            }
            let c = NameAddr::parse(part).map_err(fault)?;
            addresses = true;
            if let Some(Some(e)) = c.params.get("expires")
                && crate::scan::parse_u32(e).is_none()
            {
                bad_expires = true;
            }
        }
    }
    if star && addresses {
        return Err(fault(Error("Contact * mixed with addresses")));
    }
    if bad_expires {
        return Err(Rejection::bad(Error("malformed Contact expires")));
    }
    Ok(())
}

fn contact_fault(e: Error) -> Error {
    match e.0 {
        "URI with headers must be in angle brackets" => e,
        _ => Error("malformed Contact"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "OPTIONS sip:gw@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds;rport\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:gw@192.0.2.1>\r\n\
        From: \"Alice\" <sip:alice@127.0.0.1>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33\r\n\
        CSeq: 63104 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";

    fn verdict(text: &str) -> Result<(), (u16, String)> {
        match inspect(Bytes::from(text.to_owned()), Framing::Datagram, &Policy::default()) {
            Verdict::Accept(_) => Ok(()),
            Verdict::Reject { rejection, .. } => Err((rejection.status, rejection.reason.into_owned())),
            Verdict::Drop(e) => Err((0, e.to_string())),
        }
    }

    /// Each row edits the base request and names the status the door must give (0 = drop).
    #[test]
    fn door_table() {
        let rows: &[(&str, &str, &str, u16)] = &[
            ("untouched", "", "", 200),
            ("missing Max-Forwards with cookie", "Max-Forwards: 70\r\n", "", 400),
            ("missing Call-ID", "Call-ID: a84b4c76e66710@pc33\r\n", "", 400),
            ("missing CSeq", "CSeq: 63104 OPTIONS\r\n", "", 400),
            ("missing Via is dropped", "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds;rport\r\n", "", 0),
            ("Max-Forwards 0", "Max-Forwards: 70", "Max-Forwards: 0", 483),
            ("Max-Forwards 256", "Max-Forwards: 70", "Max-Forwards: 256", 400),
            ("Max-Forwards text", "Max-Forwards: 70", "Max-Forwards: seventy", 400),
            ("CSeq method mismatch", "CSeq: 63104 OPTIONS", "CSeq: 63104 INVITE", 400),
            ("CSeq too large", "CSeq: 63104 OPTIONS", "CSeq: 4294967296 OPTIONS", 400),
            ("unknown method", "OPTIONS sip:gw", "FOO sip:gw", 501),
            ("SIP/3.0", "SIP/2.0\r\nVia", "SIP/3.0\r\nVia", 505),
            ("garbage version", "SIP/2.0\r\nVia", "SIPX\r\nVia", 400),
            ("unknown scheme", "sip:gw@192.0.2.1 SIP", "im:gw@192.0.2.1 SIP", 416),
            ("tel URI is routable", "sip:gw@192.0.2.1 SIP", "tel:+12125551212 SIP", 200),
            ("Require unknown", "Content-Length: 0\r\n", "Require: foo\r\nContent-Length: 0\r\n", 420),
            ("Require supported", "Content-Length: 0\r\n", "Require: timer, 100rel\r\nContent-Length: 0\r\n", 200),
            ("negative Content-Length", "Content-Length: 0", "Content-Length: -1", 400),
            ("Content-Length beyond datagram", "Content-Length: 0", "Content-Length: 10", 400),
            ("two Content-Length", "Content-Length: 0\r\n", "Content-Length: 0\r\nl: 0\r\n", 400),
            ("header without colon", "Content-Length: 0\r\n", "Bogus\r\nContent-Length: 0\r\n", 400),
            ("malformed Contact", "Content-Length: 0\r\n", "Contact: <sip:a@b\r\nContent-Length: 0\r\n", 400),
            ("malformed Route", "Content-Length: 0\r\n", "Route: <sip:a@b>;;\r\nContent-Length: 0\r\n", 400),
            ("X- header kept", "Content-Length: 0\r\n", "X-Telnyx-Token: abc;;,\r\nContent-Length: 0\r\n", 200),
            ("malformed Date is ignored", "Content-Length: 0\r\n", "Date: yesterday\r\nContent-Length: 0\r\n", 200),
        ];
        for (what, from, to, want) in rows {
            let text = if from.is_empty() { BASE.to_owned() } else { BASE.replacen(from, to, 1) };
            assert!(from.is_empty() || text != BASE, "{what}: the edit did not apply");
            let got = match verdict(&text) {
                Ok(()) => 200,
                Err((code, _)) => code,
            };
            assert_eq!(got, *want, "{what}: {:?}", verdict(&text));
        }
    }

    #[test]
    fn oversized_message_gets_513() {
        let big = BASE.replacen(
            "Content-Length: 0\r\n",
            &format!("X-Pad: {}\r\nContent-Length: 0\r\n", "a".repeat(70_000)),
            1,
        );
        assert_eq!(verdict(&big).unwrap_err().0, 513);
    }

    #[test]
    fn session_bodies() {
        let invite = BASE.replace("OPTIONS", "INVITE").replacen(
            "Content-Length: 0\r\n\r\n",
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            1,
        );
        assert_eq!(verdict(&invite), Ok(()));
        let other = invite.replace("application/sdp", "text/plain");
        assert_eq!(verdict(&other).unwrap_err().0, 415);
        let accept = invite.replacen("Content-Type", "Accept: text/html\r\nContent-Type", 1);
        assert_eq!(verdict(&accept).unwrap_err().0, 406);
        let accept_any = invite.replacen("Content-Type", "Accept: */*\r\nContent-Type", 1);
        assert_eq!(verdict(&accept_any), Ok(()));
    }

    #[test]
    fn malformed_responses_are_dropped() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nTo: <sip:a@b>;tag=1\r\n\
            From: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(verdict(ok), Ok(()));
        for (from, to) in [
            ("CSeq: 1 INVITE", "CSeq: 99999999999 INVITE"),
            ("200 OK", "2000 OK"),
            ("200 OK", "099 Low"),
            ("Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n", ""),
            ("Content-Length: 0", "Content-Length: 5"),
        ] {
            assert_eq!(verdict(&ok.replacen(from, to, 1)).map_err(|e| e.0), Err(0), "{to}");
        }
    }

    #[test]
    fn rejection_builds_a_routable_response() {
        let text = BASE.replacen("Content-Length: 0\r\n", "Require: foo, bar\r\nContent-Length: 0\r\n", 1);
        let Verdict::Reject { rejection, request } = inspect(Bytes::from(text), Framing::Datagram, &Policy::default())
        else {
            panic!()
        };
        let resp = rejection.response(&request, Some("abc"));
        let back = Message::parse(resp.to_bytes(), Framing::Stream).unwrap();
        assert_eq!(back.status(), Some(420));
        assert_eq!(back.header(HeaderName::Unsupported), Some("foo, bar"));
        assert_eq!(back.to().unwrap().tag(), Some("abc"));
        assert_eq!(back.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(back.cseq().unwrap().seq, 63104);
        assert_eq!(back.content_length(), Ok(Some(0)));
    }
}
