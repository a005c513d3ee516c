//! RFC 4475 and RFC 5118 torture messages from `../shared/conformance`, read in place.
//!
//! Each manifest row is checked against the outcome the switch (a B2BUA) must produce, from the
//! table below; a row without an entry in the table fails, so a new message cannot slip by.
//! Where the manifest allows a choice (e.g. "400 OR accept liberally") the table records ours.

use bytes::Bytes;
use sip::headers::HeaderName;
use sip::{Frame, Framing, Message, Policy, Uri, Verdict, frame, inspect};

#[path = "support/corpus.rs"]
mod corpus;
use corpus::{EXPECTED, Outcome, Outcome::*, conformance_dir, rows};

fn outcome(v: &Verdict) -> Outcome {
    match v {
        Verdict::Accept(_) => Accept,
        Verdict::Reject { rejection, .. } => Reject(rejection.status),
        Verdict::Drop(_) => Drop,
    }
}

#[test]
fn every_manifest_message_gets_the_expected_outcome() {
    let Some(dir) = conformance_dir() else { return };
    let policy = Policy::default();
    let rows = rows(&dir);
    assert_eq!(rows.len(), 62, "50 RFC 4475 + 12 RFC 5118 messages");
    let mut failures = Vec::new();
    for row in &rows {
        let Some(&(_, want)) = EXPECTED.iter().find(|(f, _)| *f == row.file) else {
            failures.push(format!("{}/{}: no expectation in the table", row.suite, row.file));
            continue;
        };
        // Our table must agree with the manifest's words.
        match want {
            Reject(code) => assert!(
                row.action.contains(&code.to_string()),
                "{}: table says {code} but the manifest says: {}",
                row.file,
                row.action
            ),
            Drop => assert!(
                row.action.contains("discard") || row.action.contains("drop"),
                "{}: table says drop but the manifest says: {}",
                row.file,
                row.action
            ),
            Accept => assert!(row.expect != "invalid" || row.action.contains("OR ignore") || row.file == "baddate.sip"),
        }
        let verdict = inspect(Bytes::from(row.bytes.clone()), Framing::Datagram, &policy);
        let got = outcome(&verdict);
        if got != want {
            failures.push(format!("{}/{}: want {want:?}, got {verdict:?}", row.suite, row.file));
        }
        // Every message the manifest calls valid parses, and its routing headers decode.
        if row.expect != "invalid" {
            let msg = Message::parse(Bytes::from(row.bytes.clone()), Framing::Datagram)
                .unwrap_or_else(|e| panic!("{}: valid message failed to parse: {e}", row.file));
            if msg.is_request() && msg.request_uri().is_some_and(|u| u.is_err()) {
                failures.push(format!("{}: Request-URI does not parse", row.file));
            }
            let typed = [msg.top_via().err(), msg.from().err(), msg.to().err(), msg.cseq().err(), msg.call_id().err()];
            if let Some(e) = typed.iter().flatten().next() {
                failures.push(format!("{}: typed header failed: {e}", row.file));
            }
            // Untouched, it serializes byte-exact (dblreq: only the message, not the noise).
            let out = msg.to_bytes();
            assert!(row.bytes.starts_with(&out), "{}: serialization differs", row.file);
            if row.file != "dblreq.sip" {
                assert_eq!(out.len(), row.bytes.len(), "{}", row.file);
            }
        }
        // A rejection is a well-formed response that routes back to the sender.
        if let Verdict::Reject { rejection, request } = &verdict {
            let resp = rejection.response(request, Some("srv1"));
            let back = Message::parse(resp.to_bytes(), Framing::Stream)
                .unwrap_or_else(|e| panic!("{}: our {} does not parse: {e}", row.file, rejection.status));
            assert_eq!(back.status(), Some(rejection.status));
            assert_eq!(back.count(HeaderName::Via), request.count(HeaderName::Via), "{}", row.file);
            assert_eq!(back.header(HeaderName::CallId), request.header(HeaderName::CallId));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn load(dir: &std::path::Path, suite: &str, file: &str) -> Bytes {
    Bytes::from(std::fs::read(dir.join(suite).join(file)).expect("message"))
}

fn accept(dir: &std::path::Path, suite: &str, file: &str) -> Message {
    match inspect(load(dir, suite, file), Framing::Datagram, &Policy::default()) {
        Verdict::Accept(m) => m,
        other => panic!("{file}: {other:?}"),
    }
}

fn reject(dir: &std::path::Path, file: &str) -> (sip::Rejection, Box<Message>) {
    match inspect(load(dir, "rfc4475", file), Framing::Datagram, &Policy::default()) {
        Verdict::Reject { rejection, request } => (rejection, request),
        other => panic!("{file}: {other:?}"),
    }
}

#[test]
fn the_details_the_rfc_points_at() {
    let Some(dir) = conformance_dir() else { return };
    let d = dir.as_path();

    // wsinv: folding, leading zeros, compact names, an opaque unknown header value.
    let m = accept(d, "rfc4475", "wsinv.sip");
    assert_eq!(m.max_forwards(), Ok(Some(68)));
    assert_eq!(m.cseq().unwrap().seq, 9);
    assert_eq!(m.header_by_name("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(m.vias().count(), 3);
    assert_eq!(m.top_via().unwrap().transport, "UDP");
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    assert_eq!(m.from().unwrap().display_name_text().unwrap(), "J Rosenberg \\\"");
    let Some(sip::Contacts::List(c)) = m.contacts().unwrap() else { panic!() };
    assert_eq!(c[0].q(), Some(330));
    assert_eq!(m.body().len(), 150);

    // esc02: "C%6Fntact" is an extension header, so two Contact values, not three.
    let (r, req) = reject(d, "esc02.sip");
    assert_eq!(r.status, 501);
    assert!(r.headers.iter().any(|(n, v)| *n == HeaderName::Allow && v.contains("INVITE")));
    let Ok(Some(sip::Contacts::List(c))) = req.contacts() else { panic!() };
    assert_eq!(c.len(), 2);

    // escnull: %00 is kept, not a terminator.
    let m = accept(d, "rfc4475", "escnull.sip");
    let to = m.to().unwrap();
    let user = sip::uri::unescape(to.user().unwrap());
    assert_eq!(&user[..], b"null-\0-null");
    let Some(sip::Contacts::List(c)) = m.contacts().unwrap() else { panic!() };
    assert_ne!(c[0].uri, c[1].uri);

    // semiuri: the ';' before '@' belongs to the user part.
    let m = accept(d, "rfc4475", "semiuri.sip");
    let Some(Ok(Uri::Sip(u))) = m.request_uri() else { panic!() };
    assert_eq!(u.user, Some("user;par=u%40example.net"));
    assert_eq!(u.host.to_string(), "example.com");

    // cparam01/02: where "unknownparam" belongs.
    let m = accept(d, "rfc4475", "cparam01.sip");
    let Some(sip::Contacts::List(c)) = m.contacts().unwrap() else { panic!() };
    assert!(c[0].params.contains("unknownparam") && c[0].sip_uri().unwrap().params.is_empty());
    let m = accept(d, "rfc4475", "cparam02.sip");
    let Some(sip::Contacts::List(c)) = m.contacts().unwrap() else { panic!() };
    assert!(!c[0].params.contains("unknownparam") && c[0].sip_uri().unwrap().params.contains("unknownparam"));

    // regescrt: the escaped Route stays inside the bound URI.
    let m = accept(d, "rfc4475", "regescrt.sip");
    let Some(sip::Contacts::List(c)) = m.contacts().unwrap() else { panic!() };
    assert_eq!(c[0].sip_uri().unwrap().headers, Some("Route=%3Csip:sip.example.com%3E"));

    // dblreq: the trailing INVITE is noise on UDP.
    let m = accept(d, "rfc4475", "dblreq.sip");
    assert_eq!(m.method(), Some(sip::Method::Register));
    assert!(m.body().is_empty());

    // mpart01: framed by Content-Length, binary body intact.
    let m = accept(d, "rfc4475", "mpart01.sip");
    assert_eq!(m.body().len(), 553);

    // inv2543: no Content-Length on UDP: the body is the rest of the datagram.
    let m = accept(d, "rfc4475", "inv2543.sip");
    assert!(!m.top_via().unwrap().has_rfc3261_branch());
    assert!(!m.body().is_empty());

    // unreason: a UTF-8 reason phrase.
    let m = accept(d, "rfc4475", "unreason.sip");
    assert_eq!(m.status(), Some(200));
    assert!(!m.reason().unwrap().is_ascii());
    let m = accept(d, "rfc4475", "noreason.sip");
    assert_eq!((m.status(), m.reason()), (Some(100), Some("")));

    // bext01: 420 lists what Require asked for, not Proxy-Require.
    let (r, _) = reject(d, "bext01.sip");
    let unsupported = &r.headers.iter().find(|(n, _)| *n == HeaderName::Unsupported).unwrap().1;
    assert_eq!(unsupported, "nothingSupportsThis, nothingSupportsThisEither");
    // invut: 415 says what is accepted.
    let (r, _) = reject(d, "invut.sip");
    assert!(r.headers.iter().any(|(n, v)| *n == HeaderName::Accept && v.contains("application/sdp")));

    // RFC 5118 hosts.
    let m = accept(d, "rfc5118", "port-ambiguous.sip");
    let Some(Ok(Uri::Sip(u))) = m.request_uri() else { panic!() };
    assert_eq!((u.host.to_string().as_str(), u.port), ("[2001:db8::10:5070]", None));
    let m = accept(d, "rfc5118", "port-unambiguous.sip");
    let Some(Ok(Uri::Sip(u))) = m.request_uri() else { panic!() };
    assert_eq!((u.host.to_string().as_str(), u.port), ("[2001:db8::10]", Some(5070)));
    let m = accept(d, "rfc5118", "via-received-param-with-delim.sip");
    assert_eq!(m.top_via().unwrap().received(), Some("[2001:db8::9:255]"));
    let m = accept(d, "rfc5118", "mult-ip-in-header.sip");
    assert_eq!(m.vias().count(), 3);
    assert!(m.vias().all(|v| v.is_ok()));
}

/// Over a stream the same bytes frame differently (RFC 3261 section 18.3).
#[test]
fn stream_framing_of_the_torture_messages() {
    let Some(dir) = conformance_dir() else { return };
    let bytes = |f: &str| std::fs::read(dir.join("rfc4475").join(f)).unwrap();
    const MAX: usize = 65_536;
    // clerr: Content-Length 9999 with 154 octets: wait for the rest.
    assert_eq!(frame(&bytes("clerr.sip"), MAX), Frame::Incomplete);
    // ncl (negative) and mcl01 (conflicting): unrecoverable, close the connection.
    assert!(matches!(frame(&bytes("ncl.sip"), MAX), Frame::Invalid(_)));
    assert!(matches!(frame(&bytes("mcl01.sip"), MAX), Frame::Invalid(_)));
    // inv2543: no Content-Length is an error on a stream.
    assert!(matches!(frame(&bytes("inv2543.sip"), MAX), Frame::Invalid(_)));
    // dblreq: on a stream the trailing bytes are the next message.
    let b = bytes("dblreq.sip");
    let Frame::Message(n) = frame(&b, MAX) else { panic!() };
    let first = Message::parse(Bytes::copy_from_slice(&b[..n]), Framing::Stream).unwrap();
    assert_eq!(first.method(), Some(sip::Method::Register));
    let rest = &b[n..];
    let skip = match frame(rest, MAX) {
        Frame::KeepAlive(k) => k,
        _ => 0,
    };
    assert!(rest[skip..].starts_with(b"INVITE "));
    // intmeth is sent over TCP: it frames whole and parses.
    let b = bytes("intmeth.sip");
    assert_eq!(frame(&b, MAX), Frame::Message(b.len()));
    assert!(Message::parse(Bytes::from(b), Framing::Stream).is_ok());
}
