//! What the fuzz targets do with one input. Shared by the targets (`fuzz_targets/*.rs`) and the
//! regression tests (`crates/sip/tests/fuzz_regressions.rs`, via `#[path]`), so a minimized
//! input replays through exactly the calls that found it. Any panic or failed assert is a bug.

use bytes::Bytes;
use sip::headers::{Contacts, HeaderName, NameAddr, parse_name_addr_list};
use sip::uri::{parse_host, parse_uri, unescape};
use sip::{Auth, CSeq, Frame, Framing, Identity, MediaType, Message, Policy, Reason, Verdict, Via, frame, inspect};

/// The top Via the edit check prepends.
const OUR_VIA: &str = "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKfuzz";

/// Target `message`: parse (both framings), frame, inspect; on every message obtained, every
/// typed accessor, serialization round trips, a rejection response and proxy edits.
pub fn message(data: &[u8]) {
    for framing in [Framing::Datagram, Framing::Stream] {
        parse_and_check(data, framing);
    }
    match frame(data, 65536) {
        Frame::Message(n) => {
            assert!(n <= data.len(), "frame: Message({n}) beyond {} bytes", data.len());
            framer_agrees(&data[..n]);
            parse_and_check(&data[..n], Framing::Stream);
            check_verdict(inspect(Bytes::copy_from_slice(&data[..n]), Framing::Stream, &Policy::default()));
        }
        Frame::KeepAlive(n) => assert!(n > 0 && n <= data.len(), "frame: KeepAlive({n})"),
        Frame::Incomplete | Frame::Invalid(_) => {}
    }
    check_verdict(inspect(Bytes::copy_from_slice(data), Framing::Datagram, &Policy::default()));
}

/// `frame` cut these bytes by a Content-Length: the parser must see that field too. Otherwise a
/// stream is split by a length the parser calls malformed or absent (a desync).
fn framer_agrees(msg: &[u8]) {
    let m = match Message::parse(Bytes::copy_from_slice(msg), Framing::Stream) {
        Ok(m) => m,
        Err(e) => match e.partial {
            Some(p) => *p,
            None => return,
        },
    };
    assert!(m.header(HeaderName::ContentLength).is_some(), "frame used a Content-Length line the parser drops");
}

fn parse_and_check(data: &[u8], framing: Framing) {
    match Message::parse(Bytes::copy_from_slice(data), framing) {
        Ok(m) => {
            accessors(&m);
            round_trip(&m, data, framing);
            edits(&m, framing);
        }
        Err(e) => {
            if let Some(p) = e.partial {
                accessors(&p);
                let _ = p.to_bytes();
            }
        }
    }
}

fn check_verdict(v: Verdict) {
    match v {
        Verdict::Accept(m) => accessors(&m),
        Verdict::Reject { rejection, request } => {
            accessors(&request);
            let resp = rejection.response(&request, Some("t")).to_bytes();
            match Message::parse(resp.clone(), Framing::Datagram) {
                Ok(r) => {
                    assert_eq!(r.status(), Some(rejection.status), "rejection response status");
                    accessors(&r);
                }
                Err(e) => panic!("rejection response does not parse ({e}): {resp:?}"),
            }
        }
        Verdict::Drop(_) => {}
    }
}

/// Every typed accessor; results are only computed, a malformed value is an `Err`, not a bug.
fn accessors(m: &Message) {
    let _ = (m.method(), m.status(), m.reason(), m.version(), m.body().len(), m.fault());
    if let Some(Ok(u)) = m.request_uri() {
        let _ = (u.scheme(), u.user(), u.to_string());
    }
    for (name, value) in m.headers() {
        let _ = (m.header_by_name(name), value.len());
    }
    let _ = m.header_fields().count();
    let _ = m.vias().collect::<Vec<_>>();
    if let Ok(v) = m.top_via() {
        let _ = (v.branch(), v.has_rfc3261_branch(), v.received(), v.rport(), v.maddr(), v.ttl());
    }
    for na in [m.from(), m.to()].iter().flatten() {
        name_addr(na);
    }
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length(), m.content_type(), m.expires());
    if let Ok(Some(Contacts::List(list))) = m.contacts() {
        list.iter().for_each(name_addr);
    }
    if let Ok(list) = m.name_addrs(HeaderName::Route) {
        list.iter().for_each(name_addr);
    }
    let _ = (m.tokens(HeaderName::Supported), m.privacy());
    for a in m.auth(HeaderName::Authorization).flatten() {
        let _ = (a.param("nonce"), a.param("realm"));
    }
    for r in m.reasons().flatten() {
        let _ = (r.cause(), r.text());
    }
    for i in m.identities().flatten() {
        let _ = (i.info(), i.alg(), i.ppt());
    }
}

fn name_addr(na: &NameAddr<'_>) {
    let _ = (na.tag(), na.display_name_text(), na.q(), na.expires(), na.user(), na.sip_uri());
}

/// An untouched message serializes to a prefix of its input and re-parses to the same message.
fn round_trip(m: &Message, data: &[u8], framing: Framing) {
    assert!(m.is_untouched());
    let out = m.to_bytes();
    assert!(data.starts_with(&out), "untouched to_bytes is not a prefix of the input: {out:?}");
    let again = Message::parse(out, framing).expect("untouched to_bytes does not re-parse");
    assert_same(m, &again);
}

fn assert_same(a: &Message, b: &Message) {
    assert_eq!(
        (a.method(), a.request_uri_str(), a.status(), a.reason(), a.version()),
        (b.method(), b.request_uri_str(), b.status(), b.reason(), b.version()),
        "start line differs after re-parse"
    );
    assert!(a.headers().eq(b.headers()), "headers differ after re-parse");
    assert_eq!(a.body(), b.body(), "body differs after re-parse");
}

/// What a proxy does to a request: Max-Forwards down, top Via off, its own Via on.
fn edits(m: &Message, framing: Framing) {
    let mut e = m.clone();
    let _ = e.decrement_max_forwards();
    let _ = e.remove_first_value(HeaderName::Via);
    e.prepend_header(HeaderName::Via, OUR_VIA);
    let out = e.to_bytes();
    let p = match Message::parse(out.clone(), framing) {
        Ok(p) => p,
        Err(err) => panic!("edited message does not re-parse ({err}): {out:?}"),
    };
    assert_eq!(p.header(HeaderName::Via), Some(OUR_VIA), "prepended Via is not on top");
    assert_eq!(p.body(), m.body(), "body changed by header edits");
    accessors(&p);
}

/// Target `uri`: the URI and header-value parsers on one string.
pub fn uri(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(u) = parse_uri(s) {
        let shown = u.to_string();
        match parse_uri(&shown) {
            Ok(again) => assert_eq!(u, again, "URI {s:?} displays as {shown:?}, which parses differently"),
            Err(e) => panic!("URI {s:?} displays as {shown:?}, which does not parse: {e}"),
        }
        let _ = (u.scheme(), u.user());
        if let Some(sip) = u.as_sip() {
            let _ = (sip.transport(), sip.has_lr(), sip.maddr(), sip.user_param(), sip.host.ip());
            let _ = sip.params.iter().count();
        }
    }
    let _ = unescape(s);
    let _ = parse_host(s);
    if let Ok(na) = NameAddr::parse(s) {
        name_addr(&na);
    }
    if let Ok(v) = Via::parse(s) {
        let _ = (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl(), v.params.iter().count());
    }
    if let Ok(list) = parse_name_addr_list(s) {
        list.iter().for_each(name_addr);
    }
    if let Ok(a) = Auth::parse(s) {
        let _ = (a.param("nonce"), a.param("realm"));
    }
    let _ = CSeq::parse(s);
    if let Ok(t) = MediaType::parse(s) {
        let _ = (t.is("application", "sdp"), t.matches("application", "sdp"), t.params.iter().count());
    }
    if let Ok(i) = Identity::parse(s) {
        let _ = (i.info(), i.alg(), i.ppt());
    }
    if let Ok(r) = Reason::parse(s) {
        let _ = (r.cause(), r.text());
    }
}
