//! The switch core's cost per call, sans-I/O: every message of a whole call parsed, matched and
//! answered, with the admission answered in place (the rules' decision is measured apart, in
//! `trunking`'s `decision` bench). One answered call: the customer's INVITE, its 100; the
//! B-leg INVITE; the carrier's 100, 180 and 200 (180 and 200 relayed); both ACKs; the caller's
//! BYE, its 200 and the B-leg BYE with the carrier's 200; the call's record out. And one INVITE
//! refused at admission (403), with its ACK.
//!
//! The core is warmed with 10,000 answered calls in progress, so lookups are not served by tiny
//! tables; the clock advances 1 ms per call and due timers run inside the measurement, so the
//! tables hold what lingers at 1,000 calls a second (transactions absorbing retransmissions for
//! up to 64*T1).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use engine::admission::{Admission, AdmittedCall, CallContext};
use engine::call::RouteTarget;
use engine::counters::LocalCounters;
use engine::switch::{CallNotice, Core, SwitchConfig};
use engine::{Inbound, Target, TransportKind};
use sip::{Framing, Message, Method};
use trunking::outbound::ChannelLimits;

const PBX: &str = "192.0.2.10:5062";
const SWITCH: &str = "192.0.2.1:5060";
const CARRIER: &str = "198.51.100.7:5060";

fn inbound(text: String, from: &str) -> Inbound {
    Inbound {
        data: Bytes::from(text),
        kind: TransportKind::Udp,
        local: SWITCH.parse().unwrap(),
        remote: from.parse().unwrap(),
        conn: None,
    }
}

fn pbx_request(method: &str, n: u64, branch: &str, cseq: u32, to_tag: Option<&str>) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let body = if method == "INVITE" {
        "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    } else {
        ""
    };
    let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    format!(
        "{method} sip:+12125551212@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK{branch}{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+12125550100@10.0.0.5>;tag=f{n}\r\nTo: <sip:+12125551212@192.0.2.1>{tag}\r\n\
         Call-ID: call-{n}@10.0.0.5\r\nCSeq: {cseq} {method}\r\nContact: <sip:pbx@10.0.0.5:5062>\r\n{ct}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The carrier's response to a request we sent it.
fn carrier_answer(req: &Message, status: u16) -> Inbound {
    let mut resp = req.response_to(status, "X", (status > 100).then_some("carrier-tag"));
    if status == 200 && req.method() == Some(Method::Invite) {
        resp.push_header(sip::HeaderName::Contact, &format!("<sip:carrier@{CARRIER}>"));
    }
    Inbound {
        data: resp.to_bytes(),
        kind: TransportKind::Udp,
        local: SWITCH.parse().unwrap(),
        remote: CARRIER.parse().unwrap(),
        conn: None,
    }
}

fn admitted(counters: &LocalCounters, call_control_id: &str, received: SystemTime) -> Admission {
    let limits = ChannelLimits { account: ("acct".into(), None), profile: None, connection: ("conn".into(), None) };
    let lease = counters.acquire(&limits, call_control_id).expect("unlimited");
    Admission::Admit(Box::new(AdmittedCall {
        context: CallContext {
            direction: engine::admission::Direction::Outbound,
            call_control_id: call_control_id.to_owned(),
            account_id: "acct".into(),
            connection_id: "conn".into(),
            profile_id: None,
            from_received: "+12125550100".into(),
            to_received: "+12125551212".into(),
            destination: Some("+12125551212".into()),
            rate: Some(("0.012".parse().unwrap(), trunking::rating::BillingIncrement { first: 6, next: 6 })),
            webhook: None,
            started: received,
            trace: trunking::Trace::new(),
        },
        routes: vec![RouteTarget {
            carrier_id: "carrier".into(),
            host: "198.51.100.7".into(),
            port: 5060,
            transport: trunking::routing::Transport::Udp,
            user: "12125551212".into(),
            credentials: None,
            request_uri: None,
        }],
        targets: vec![Some(Target {
            kind: TransportKind::Udp,
            addr: CARRIER.parse::<SocketAddr>().unwrap(),
            host: "198.51.100.7".into(),
        })],
        caller: "+12125550100".into(),
        anonymous: false,
        lease,
        b_headers: Vec::new(),
        timeouts: None,
        ring_together: 0,
        forward: None,
    }))
}

fn sent(core: &mut Core) -> Vec<Message> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|o| Message::parse(o.data, Framing::Datagram).expect("we send valid SIP"))
        .collect()
}

/// Sets a call up to the caller's ACK; returns the caller's To tag and the B-leg INVITE.
fn answer(core: &mut Core, counters: &LocalCounters, n: u64, now: Instant) -> (String, Message) {
    core.handle_inbound(inbound(pbx_request("INVITE", n, "i", 1, None), PBX), now);
    let req = core.poll_admission().expect("an admission");
    core.admit(req.id, admitted(counters, &req.call_control_id, req.received), now);
    let out = sent(core);
    let b_invite = out.into_iter().find(|m| m.method() == Some(Method::Invite)).expect("B-leg INVITE");
    core.handle_inbound(carrier_answer(&b_invite, 100), now);
    core.handle_inbound(carrier_answer(&b_invite, 180), now);
    core.handle_inbound(carrier_answer(&b_invite, 200), now);
    let out = sent(core);
    let ok = out.iter().find(|m| m.status() == Some(200)).expect("200 to the caller");
    let a_tag = ok.to().unwrap().tag().unwrap().to_owned();
    core.handle_inbound(inbound(pbx_request("ACK", n, "a", 1, Some(&a_tag)), PBX), now);
    sent(core);
    (a_tag, b_invite)
}

fn whole_call(core: &mut Core, counters: &LocalCounters, n: u64, now: Instant) {
    let (a_tag, _) = answer(core, counters, n, now);
    let later = now + Duration::from_secs(30);
    core.handle_inbound(inbound(pbx_request("BYE", n, "b", 2, Some(&a_tag)), PBX), later);
    let out = sent(core);
    let bye = out.into_iter().find(|m| m.method() == Some(Method::Bye)).expect("BYE to the carrier");
    core.handle_inbound(carrier_answer(&bye, 200), later);
    while let Some(notice) = core.poll_notice() {
        if let CallNotice::Ended(report) = notice {
            black_box(report);
        }
    }
}

fn bench(c: &mut Criterion) {
    let counters = LocalCounters::new();
    let config = SwitchConfig {
        local_host: "192.0.2.1".into(),
        listeners: vec![(TransportKind::Udp, SWITCH.parse().unwrap())],
        ..SwitchConfig::default()
    };
    let t0 = Instant::now();
    let mut core = Core::new(config, 7).with_wall_clock(t0, SystemTime::now());
    for n in 0..10_000 {
        answer(&mut core, &counters, 1_000_000_000 + n, t0);
        while core.poll_notice().is_some() {}
    }
    let mut n = 0u64;
    let mut now = t0;
    let mut group = c.benchmark_group("switch core");
    group.bench_function("answered call, 12 messages in, 11 out, record", |b| {
        b.iter(|| {
            n += 1;
            now += Duration::from_millis(1);
            core.handle_timeout(now);
            whole_call(&mut core, &counters, n, now);
        })
    });
    group.bench_function("INVITE refused at admission, with its ACK", |b| {
        b.iter(|| {
            n += 1;
            now += Duration::from_millis(1);
            core.handle_timeout(now);
            let t0 = now;
            core.handle_inbound(inbound(pbx_request("INVITE", n, "r", 1, None), PBX), t0);
            let req = core.poll_admission().expect("an admission");
            let refusal = Admission::refuse(trunking::Reason::D25, None);
            core.admit(req.id, refusal, t0);
            let out = sent(&mut core);
            let tag = out.iter().find(|m| m.status() == Some(403)).and_then(|m| m.to().ok()?.tag().map(str::to_owned));
            core.handle_inbound(inbound(pbx_request("ACK", n, "r", 1, tag.as_deref()), PBX), t0);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
