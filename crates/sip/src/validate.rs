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
use crate::headers::{Contacts, HeaderName, MediaType, parse_number};
use crate::message::{Framing, Message, Method};
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
    if msg.is_response() {
        return match check_response(&msg) {
            Ok(()) => Verdict::Accept(msg),
            Err(e) => Verdict::Drop(e),
        };
    }
    if msg.count(HeaderName::Via) == 0 {
        return Verdict::Drop(Error("request without Via"));
    }
    if too_large {
        return Verdict::Reject { rejection: Rejection::new(513, "Message Too Large"), request: Box::new(msg) };
    }
    match check_request(&msg, policy) {
        Ok(()) => Verdict::Accept(msg),
        Err(rejection) => Verdict::Reject { rejection, request: Box::new(msg) },
    }
}

/// A response is usable only if it can be matched to a transaction: status line, Via, CSeq,
/// From, To and Call-ID must all be well formed.
pub fn check_response(msg: &Message) -> Result<(), Error> {
    for via in msg.vias() {
        via?;
    }
    msg.top_via()?;
    msg.cseq()?;
    msg.from()?;
    msg.to()?;
    msg.call_id()?;
    Ok(())
}

/// The checks on a parsed request, in the order a server applies them.
pub fn check_request(msg: &Message, policy: &Policy) -> Result<(), Rejection> {
    let method = msg.method().ok_or_else(|| Rejection::bad(Error("not a request")))?;

    // Syntax of the headers every request needs (RFC 3261 section 8.1.1).
    for via in msg.vias() {
        via.map_err(Rejection::bad)?;
    }
    let top_via = msg.top_via().map_err(Rejection::bad)?;
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
    if let Some(Contacts::List(list)) = msg.contacts().map_err(|e| Rejection::bad(contact_fault(e)))? {
        for c in &list {
            if let Some(Some(e)) = c.params.get("expires")
                && crate::scan::parse_u32(e).is_none()
            {
                return Err(Rejection::bad(Error("malformed Contact expires")));
            }
        }
    }
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
    Ok(())
}

fn contact_fault(e: Error) -> Error {
    match e.0 {
        "URI with headers must be in angle brackets" => e,
        _ => Error("malformed Contact"),
    }
}
