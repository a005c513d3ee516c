//! Every RFC 4475/5118 torture message, sent over the wire to a running `opentrunk serve`, gets
//! the response the conformance table expects (or none where it must be dropped), and the
//! switch keeps answering OPTIONS afterwards. The messages name foreign hosts, so the test runs
//! inside a loopback-only network namespace.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::{Framing, Message, Method};

#[path = "../../sip/tests/support/corpus.rs"]
mod corpus;
mod support;

use corpus::Outcome;

/// Methods `opentrunk serve` answers today; the door gives the others 501 (with Allow).
const SERVED: &[&str] = &["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "REGISTER"];

/// What the registrar answers the torture REGISTERs, with no connection configured: a user name
/// the product refuses gets `403` (`R16`: escnull's `%00`, the dots of dblreq's and regaut01's),
/// a To that is no SIP AOR `400` (unksm2, as RFC 4475 says), anything else is challenged (`401`:
/// an unknown name is not told apart from a known one). cparam02 and regescrt repeat the branch
/// and sent-by of cparam01 and escnull, sent just before: to a server they are retransmissions
/// of those transactions (RFC 3261 section 17.2.3), answered with those responses, which carry
/// the other Call-IDs, so nothing of their own.
const REGISTRAR: &[(&str, Option<u16>)] = &[
    ("escnull.sip", Some(403)),
    ("dblreq.sip", Some(403)),
    ("unksm2.sip", Some(400)),
    ("regaut01.sip", Some(403)),
    ("cparam01.sip", Some(401)),
    ("cparam02.sip", None),
    ("regescrt.sip", None),
    ("ipv6-good.sip", Some(401)),
    ("port-ambiguous.sip", Some(401)),
    ("port-unambiguous.sip", Some(401)),
];

/// The status the running switch must send for a message, `None` for silence.
fn wire_expectation(file: &str, outcome: Outcome, msg: Option<&Message>) -> Option<u16> {
    let method = msg.and_then(|m| m.method());
    let served = method.is_some_and(|m| SERVED.contains(&m.as_str()));
    match outcome {
        Outcome::Drop => None,
        Outcome::Reject(code) => Some(code),
        Outcome::Accept => match method {
            None => None, // a response matching no transaction: dropped
            Some(_) if !served => Some(501),
            Some(Method::Options) => Some(200),
            Some(Method::Register) => match REGISTRAR.iter().find(|(f, _)| *f == file) {
                Some((_, code)) => *code,
                None => panic!("{file}: no registrar expectation"),
            },
            // No connection is configured: the switch asks the caller for credentials; an
            // INVITE inside a dialog we do not have is 481 like any other in-dialog request.
            Some(Method::Invite) if msg.is_some_and(|m| m.to().is_ok_and(|t| t.tag().is_some())) => Some(481),
            Some(Method::Invite) => Some(407),
            Some(m) if ["BYE", "UPDATE", "INFO"].contains(&m.as_str()) => Some(481),
            Some(m) => panic!("{file}: no wire expectation for {m}"),
        },
    }
}

/// Where the switch must send its answer (RFC 3261 section 18.2.2): the source address, at the
/// top Via's port (5060 when absent). Sending from that port makes rport agree too.
fn reply_port(msg: Option<&Message>) -> u16 {
    msg.and_then(|m| m.top_via().ok()).and_then(|v| v.port).unwrap_or(5060)
}

fn call_id_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("call-id") || n.eq_ignore_ascii_case("i")).then(|| v.trim().to_owned())
        })
        .filter(|c| !c.is_empty())
}

/// Waits for responses carrying `call_id` (or any, when the request has none); returns their
/// status codes in arrival order, stopping after a final one.
fn collect(sock: &UdpSocket, call_id: Option<&str>, wait: Duration) -> Vec<(u16, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let data = buf[..n].to_vec();
        if call_id.is_some() && call_id_of(&data).as_deref() != call_id {
            continue; // a retransmission for an earlier message
        }
        let code = std::str::from_utf8(&data[..12.min(n)]).ok().and_then(|s| s.get(8..11)?.parse().ok()).unwrap_or(0);
        got.push((code, data));
        if code >= 200 {
            break;
        }
    }
    got
}

/// ACK for a non-2xx final answer to an INVITE (RFC 3261 section 17.1.1.3), so the server's
/// transaction stops retransmitting.
fn ack_for(invite: &Message, response: &[u8]) -> Option<Bytes> {
    let resp = Message::parse(Bytes::copy_from_slice(response), Framing::Datagram).ok()?;
    let mut ack = Message::new_request("ACK", invite.request_uri_str()?);
    ack.push_header(sip::HeaderName::Via, invite.header(sip::HeaderName::Via)?);
    ack.push_header(sip::HeaderName::MaxForwards, "70");
    ack.push_header(sip::HeaderName::From, invite.header(sip::HeaderName::From)?);
    ack.push_header(sip::HeaderName::To, resp.header(sip::HeaderName::To)?);
    ack.push_header(sip::HeaderName::CallId, invite.header(sip::HeaderName::CallId)?);
    ack.push_header(sip::HeaderName::CSeq, &format!("{} ACK", invite.cseq().ok()?.seq));
    Some(ack.to_bytes())
}

#[test]
fn torture_messages_over_udp_and_tcp() {
    if !support::in_loopback_namespace("torture_messages_over_udp_and_tcp") {
        return;
    }
    let Some(dir) = corpus::conformance_dir() else { return };
    let server = support::Server::start(&[]);
    let mut failures = Vec::new();
    let mut sockets: std::collections::HashMap<u16, UdpSocket> = std::collections::HashMap::new();

    for row in corpus::rows(&dir) {
        let &(_, outcome) = corpus::EXPECTED.iter().find(|(f, _)| *f == row.file).expect("row in table");
        let parsed = Message::parse(Bytes::from(row.bytes.clone()), Framing::Datagram)
            .ok()
            .or_else(|| Message::parse(Bytes::from(row.bytes.clone()), Framing::Datagram).err()?.partial.map(|b| *b));
        let want = wire_expectation(&row.file, outcome, parsed.as_ref());
        let port = reply_port(parsed.as_ref());
        let sock = sockets
            .entry(port)
            .or_insert_with(|| UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}")));
        sock.send_to(&row.bytes, server.sip).expect("send");
        let call_id = call_id_of(&row.bytes);
        let wait = if want.is_some() { Duration::from_secs(2) } else { Duration::from_millis(300) };
        let got = collect(sock, call_id.as_deref(), wait);
        let final_code = got.iter().map(|(c, _)| *c).find(|c| *c >= 200);
        if final_code != want {
            failures.push(format!(
                "{}/{}: want {want:?}, got {:?}",
                row.suite,
                row.file,
                got.iter().map(|g| g.0).collect::<Vec<_>>()
            ));
        }
        if let (Some(msg), Some((code, data))) = (parsed.as_ref(), got.last())
            && msg.method() == Some(Method::Invite)
            && *code >= 300
        {
            if let Some(ack) = ack_for(msg, data) {
                sock.send_to(&ack, server.sip).expect("send ACK");
            }
            // An INVITE past the door gets 100 Trying before its final answer (the door's own
            // rejections are stateless: no 100).
            if outcome == Outcome::Accept && got.first().map(|g| g.0) != Some(100) {
                failures.push(format!("{}: no 100 Trying before the final answer", row.file));
            }
        }
    }

    // Over TCP: intmeth (sent over TCP in the RFC) is answered on the connection; ncl and mcl01
    // cannot be framed, so the connection is closed without an answer.
    let tcp_case = |file: &str| -> (Option<u16>, bool) {
        let bytes = std::fs::read(dir.join("rfc4475").join(file)).unwrap();
        let mut s = TcpStream::connect(server.sip).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = vec![0u8; 65_536];
        match s.read(&mut buf) {
            Ok(0) => (None, true),
            Ok(n) => (String::from_utf8_lossy(&buf[..n]).get(8..11).and_then(|c| c.parse().ok()), false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => (None, true),
            Err(_) => (None, false),
        }
    };
    assert_eq!(tcp_case("intmeth.sip"), (Some(501), false), "intmeth over TCP");
    assert_eq!(tcp_case("ncl.sip"), (None, true), "ncl over TCP closes the connection");
    assert_eq!(tcp_case("mcl01.sip"), (None, true), "mcl01 over TCP closes the connection");

    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));

    // Still serving.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(server.options_ping(&probe, 1), Some(200));
    let mut server = server;
    let status = server.terminate(Duration::from_secs(40)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
