//! `/metrics` of a running `opentrunk serve` as Prometheus scrapes it: a call the platform
//! refuses shows under its status and product reason code, its attempt under its direction, the
//! response repeated for a repeated INVITE among retransmissions, and the store's work as
//! latency histograms. The caller is a plain UDP socket on a loopback address of its own, so
//! the test needs no SIPp; nothing is routed anywhere (the call is refused before routing).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::json;

mod peers;
mod support;

use peers::*;

/// The PBX: an address only this test's connection names.
const PBX: &str = "127.0.0.7";

/// The final response answering `call_id` (provisional ones skipped): its status line and To
/// tag.
fn final_response(sock: &UdpSocket, call_id: &str, limit: Duration) -> (String, String) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 65_536];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]);
        let status = text.lines().next().unwrap_or_default();
        if text.contains(call_id) && !status.starts_with("SIP/2.0 1") {
            let to = text.lines().find(|l| l.starts_with("To:")).unwrap_or_default();
            let tag = to.split_once(";tag=").map(|(_, t)| t.trim()).unwrap_or_default();
            return (status.to_owned(), tag.to_owned());
        }
    }
    panic!("no final response to {call_id} within {limit:?}");
}

/// Waits until `/metrics` has the sample `series` (name and labels) at `value`.
fn wait_sample(server: &support::Server, series: &str, value: f64) {
    wait_for(Duration::from_secs(10), &format!("{series} == {value} (now {:?})", metric(server, series)), || {
        (metric(server, series) == Some(value)).then_some(())
    });
}

#[test]
fn a_refused_call_shows_on_metrics_under_its_status_and_reason_code() {
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "metrics", None);
    // A connection without an outbound voice profile: its calls are refused 403 D38.
    let conn = ip_connection(&server, &account, "pbx-no-profile", PBX, json!({}));
    wait_config_applied(&server, before);
    assert_eq!(metric(&server, r#"opentrunk_calls_attempted_total{direction="outbound"}"#), Some(0.0));

    let sock = UdpSocket::bind((PBX, 0)).expect("bind the PBX's address");
    let local = sock.local_addr().unwrap();
    let call_id = format!("metrics-{}@{PBX}", std::process::id());
    let sdp = format!("v=0\r\no=- 1 1 IN IP4 {PBX}\r\ns=-\r\nc=IN IP4 {PBX}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n");
    let head = |method: &str, to_tag: &str| {
        format!(
            "{method} sip:{DESTINATION}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKmetrics1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{CALLER}@{PBX}>;tag=pbx1\r\nTo: <sip:{DESTINATION}@{sip}>{to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:pbx@{local}>\r\n",
            sip = server.sip
        )
    };
    let invite =
        format!("{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", head("INVITE", ""), sdp.len());
    sock.send_to(invite.as_bytes(), server.sip).unwrap();
    let refusal = final_response(&sock, &call_id, Duration::from_secs(10));
    assert_eq!(refusal.0, "SIP/2.0 403 No outbound voice profile D38");
    // The INVITE again, as if our 403 were lost: the transaction answers it with the same 403.
    sock.send_to(invite.as_bytes(), server.sip).unwrap();
    assert_eq!(final_response(&sock, &call_id, Duration::from_secs(10)), refusal);
    let ack = format!("{}Content-Length: 0\r\n\r\n", head("ACK", &format!(";tag={}", refusal.1)));
    sock.send_to(ack.as_bytes(), server.sip).unwrap();

    wait_sample(&server, r#"opentrunk_calls_failed_total{status="403",reason="D38"}"#, 1.0);
    assert_eq!(metric(&server, r#"opentrunk_calls_attempted_total{direction="outbound"}"#), Some(1.0));
    assert_eq!(metric(&server, r#"opentrunk_calls_attempted_total{direction="unknown"}"#), Some(0.0));
    assert_eq!(metric(&server, r#"opentrunk_calls_answered_total{direction="outbound"}"#), Some(0.0));
    let repeated = metric(&server, r#"opentrunk_sip_retransmissions_sent_total{message="response"}"#);
    assert!(repeated.is_some_and(|n| n >= 1.0), "the 403 sent again: {repeated:?}");
    assert_eq!(metric(&server, r#"opentrunk_sip_retransmissions_sent_total{message="request"}"#), Some(0.0));

    // The store's work: the snapshot loads at start and after the writes; the refused call's
    // record is written in a batch.
    let loads = metric(&server, r#"opentrunk_store_seconds_count{operation="snapshot_load"}"#);
    assert!(loads.is_some_and(|n| n >= 2.0), "the first load and at least one reload: {loads:?}");
    wait_cdr(&server, &id(&conn), &call_id);
    let inserts = metric(&server, r#"opentrunk_store_seconds_count{operation="cdr_insert"}"#);
    assert!(inserts.is_some_and(|n| n >= 1.0), "the record's batch: {inserts:?}");
    let inf = metric(&server, r#"opentrunk_store_seconds_bucket{operation="cdr_insert",le="+Inf"}"#);
    assert_eq!(inf, inserts, "+Inf holds every observation");

    // Each family's HELP and TYPE once, whatever its labels.
    let (_, body) = support::http_get(server.api, "/metrics").expect("/metrics");
    for family in ["opentrunk_calls_failed_total", "opentrunk_sip_transactions", "opentrunk_store_seconds"] {
        assert_eq!(body.matches(&format!("# TYPE {family} ")).count(), 1, "{family}:\n{body}");
    }
}
