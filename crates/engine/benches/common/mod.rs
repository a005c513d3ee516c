//! What the switch-core benches share: a UDP core as the bench configures it, the customer's
//! and the carrier's messages, and a whole answered call driven through the core.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use engine::admission::{Admission, AdmittedCall, CallContext};
use engine::call::RouteTarget;
use engine::counters::LocalCounters;
use engine::switch::{CallNotice, Core, SwitchConfig};
use engine::{Inbound, Target, TransportKind};
use sip::{Framing, Message, Method};
use trunking::outbound::ChannelLimits;

pub const PBX: &str = "192.0.2.10:5062";
pub const SWITCH: &str = "192.0.2.1:5060";
pub const CARRIER: &str = "198.51.100.7:5060";

pub fn inbound(text: String, from: &str) -> Inbound {
    Inbound {
        data: Bytes::from(text),
        kind: TransportKind::Udp,
        local: SWITCH.parse().unwrap(),
        remote: from.parse().unwrap(),
        conn: None,
    }
}

pub fn pbx_request(method: &str, n: u64, branch: &str, cseq: u32, to_tag: Option<&str>) -> String {
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
pub fn carrier_answer(req: &Message, status: u16) -> Inbound {
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

pub fn admitted(counters: &LocalCounters, call_control_id: &str, received: SystemTime) -> Admission {
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

pub fn sent(core: &mut Core) -> Vec<Message> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|o| Message::parse(o.data, Framing::Datagram).expect("we send valid SIP"))
        .collect()
}

/// Sets a call up to the caller's ACK; returns the caller's To tag and the B-leg INVITE.
pub fn answer(core: &mut Core, counters: &LocalCounters, n: u64, now: Instant) -> (String, Message) {
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

pub fn whole_call(core: &mut Core, counters: &LocalCounters, n: u64, now: Instant) {
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

/// The switch as the benches run it: UDP at 192.0.2.1:5060, the defaults otherwise.
pub fn udp_core(t0: Instant) -> Core {
    let config = SwitchConfig {
        local_host: "192.0.2.1".into(),
        listeners: vec![(TransportKind::Udp, SWITCH.parse().unwrap())],
        ..SwitchConfig::default()
    };
    Core::new(config, 7).with_wall_clock(t0, SystemTime::now())
}
