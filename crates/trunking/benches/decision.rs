//! The full outbound decision for a typical INVITE (facts read from the parsed message,
//! identification, every outbound check, rating, the route plan, with the trace kept) against a
//! platform of 10,000 connections, 100,000 numbers and a 1,000,000-prefix rate deck; and the
//! inbound decision for a carrier's INVITE to one of those numbers.
//!
//! `cargo bench -p trunking --bench decision`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use trunking::config::{
    Account, AniOverrideType, Config, Connection, ConnectionKind, InboundDelivery, InboundSettings, IpAuthentication,
    OutboundVoiceProfile, PhoneNumber,
};
use trunking::digest::{DigestRealm, ReplayGuard};
use trunking::identify::{CallFacts, Identification, identify};
use trunking::inbound::{self, InboundDecision, InboundRequest, NoRegistrations};
use trunking::numbering::{Country, NumberingPlan};
use trunking::outbound::{OutboundDecision, OutboundRequest, Scope, Usage, decide};
use trunking::rating::{BillingIncrement, RateDeck};
use trunking::routing::{Carrier, GatewayOrder, HostTargets, IpTarget, Transport};
use trunking::time::Timestamp;
use trunking::trace::Trace;

#[path = "../tests/support/fixture.rs"]
mod fixture;

use fixture::carrier;

fn round_robin(mut c: Carrier) -> Carrier {
    c.routing = GatewayOrder::RoundRobin;
    c
}

fn inbound_from(mut c: Carrier, blocks: &[&str]) -> Carrier {
    c.inbound_ips = blocks.iter().map(|b| b.to_string()).collect();
    c
}

const CONNECTIONS: usize = 10_000;
const NUMBERS: usize = 100_000;
const PREFIXES: usize = 1_000_000;

struct Idle;
impl Usage for Idle {
    fn channels(&self, _: Scope, _: &str) -> u32 {
        3
    }
    fn spend_today(&self, _: &str, _: u64) -> Decimal {
        Decimal::new(1234, 2)
    }
    fn calls_to(&self, _: &str, _: &str, _: Timestamp) -> u32 {
        0
    }
}

/// A deterministic spread of numbers (no randomness crate needed).
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 29)
}

fn platform() -> Config {
    let plan = Arc::new(NumberingPlan::new());
    // A million distinct prefixes: every 1-3 digit prefix, then 4 to 7 digit prefixes of
    // country codes 1 and 44 and a spread of others.
    let mut rows: Vec<(String, String)> = Vec::with_capacity(PREFIXES);
    let mut seen = std::collections::HashSet::with_capacity(PREFIXES);
    for p in
        (0..10).map(|d| d.to_string()).chain((10..100).map(|d| d.to_string())).chain((100..1000).map(|d| d.to_string()))
    {
        seen.insert(p.clone());
        rows.push((p, "0.0500".into()));
    }
    let mut i = 0u64;
    while rows.len() < PREFIXES {
        let x = mix(i);
        i += 1;
        let len = 4 + (x % 4) as usize; // 4..=7 digits
        let body = format!("{:07}", x % 10_000_000);
        let p = match x % 3 {
            0 => format!("1{}", &body[..len - 1]),
            1 => format!("44{}", &body[..len - 2]),
            _ => body[..len].trim_start_matches('0').to_owned(),
        };
        if p.is_empty() || !seen.insert(p.clone()) {
            continue;
        }
        rows.push((p, format!("0.{:04}", x % 900 + 10)));
    }
    let deck = RateDeck::build(rows.iter().map(|(p, r)| (p.as_str(), r.as_str()))).expect("a deck");

    let mut b = Config::builder(plan)
        .rate_deck("deck".into(), Arc::new(deck), BillingIncrement::PER_MINUTE)
        .carrier(round_robin(inbound_from(carrier("c1", 1, &[]), &["203.0.113.0/24", "198.51.100.0/24"])))
        .carrier(round_robin(carrier("c2", 2, &["1"])))
        .carrier(round_robin(carrier("c3", 3, &["44"])));
    let accounts = CONNECTIONS / 4;
    for a in 0..accounts {
        b = b.account(Account {
            id: format!("acc-{a}").into(),
            enabled: true,
            concurrent_call_limit: Some(100),
            rate_deck_id: Some("deck".into()),
        });
        b = b.profile(OutboundVoiceProfile {
            id: format!("ovp-{a}").into(),
            account_id: format!("acc-{a}").into(),
            enabled: true,
            whitelisted_destinations: vec![Country::US, Country::CA, Country::GB],
            max_destination_rate: Some(Decimal::new(50, 2)),
            daily_spend_limit: Some(Decimal::new(10_000, 2)),
            concurrent_call_limit: Some(50),
            calling_window: None,
        });
    }
    for c in 0..CONNECTIONS {
        let a = c % accounts;
        let third = (c / 256) as u8;
        b = b.connection(Connection {
            id: format!("conn-{c}").into(),
            account_id: format!("acc-{a}").into(),
            name: format!("conn-{c}").into(),
            kind: ConnectionKind::Ip,
            active: true,
            credentials: None,
            addresses: vec![std::net::IpAddr::from([10, 1, third, (c % 256) as u8])],
            ip_authentication: IpAuthentication::Token,
            token: Some(format!("token-{c:08}-abcdef").into()),
            tech_prefix: None,
            outbound_voice_profile_id: Some(format!("ovp-{a}").into()),
            localization: None,
            ani_override: None,
            ani_override_type: AniOverrideType::Always,
            channel_limit: Some(20),
            ani_number_format: Default::default(),
            dnis_number_format: Default::default(),
            inbound: InboundSettings::new(InboundDelivery::Ips(HostTargets::listed(vec![IpTarget {
                address: format!("10.1.{third}.{}", c % 256),
                port: 5060,
                transport: Transport::Udp,
            }]))),
        });
    }
    for n in 0..NUMBERS {
        // +1 312 2xx xxxx: valid Chicago numbers.
        let c = n % CONNECTIONS;
        b = b.number(PhoneNumber {
            e164: format!("+131220{n:05}").into(),
            account_id: format!("acc-{}", c % accounts).into(),
            connection_id: Some(format!("conn-{c}").into()),
            call_forwarding: Default::default(),
        });
    }
    b.build()
}

fn bench(c: &mut Criterion) {
    let config = platform();
    // Connection 4242 (account 1742) calls Chicago from one of its own numbers.
    let conn = 4242usize;
    let own_number = format!("+131220{:05}", conn);
    let text = format!(
        "INVITE sip:+13125550199@sip.opentrunk.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.1.16.146:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:+13125550199@sip.opentrunk.test>\r\n\
         From: \"Front desk\" <sip:{own_number}@pbx.example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pbx.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:{own_number}@10.1.16.146:5060>\r\n\
         X-Telnyx-Token: token-{conn:08}-abcdef\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let msg = sip::Message::parse(text.into_bytes().into(), sip::Framing::Datagram).expect("an INVITE");
    let source = std::net::IpAddr::from([10, 1, (conn / 256) as u8, (conn % 256) as u8]);
    let realm = DigestRealm::new("sip.opentrunk.test", [7; 32], 300_000);
    let mut guard = ReplayGuard::default();
    let now = Timestamp(1_795_780_800_000);

    let mut rotation = 0u64;
    let mut run = |guard: &mut ReplayGuard| {
        let facts = CallFacts::of(&msg, source);
        let mut trace = Trace::new();
        let Identification::Identified(identified) = identify(&config, &facts, &realm, guard, now, &mut trace) else {
            panic!("not identified: {trace:#?}");
        };
        rotation += 1;
        let req = OutboundRequest { message: &msg, facts: &facts, identified, usage: &Idle, rotation, now };
        match decide(&config, &req, &mut trace) {
            OutboundDecision::Route(call) => black_box((call.routes.len(), trace.len())),
            OutboundDecision::Reject(r) => panic!("rejected {r:?}: {trace:#?}"),
        }
    };
    // The decision must route before it is timed.
    run(&mut guard);
    c.bench_function("outbound decision (10k connections, 100k numbers, 1M prefixes)", |b| b.iter(|| run(&mut guard)));

    // Its parts, to see where the time goes.
    c.bench_function("part: request facts", |b| b.iter(|| black_box(CallFacts::of(black_box(&msg), source))));
    let facts = CallFacts::of(&msg, source);
    c.bench_function("part: identify (IP + token)", |b| {
        b.iter(|| {
            let mut trace = Trace::new();
            black_box(identify(&config, black_box(&facts), &realm, &mut guard, now, &mut trace))
        })
    });
    let mut trace = Trace::new();
    let Identification::Identified(identified) = identify(&config, &facts, &realm, &mut guard, now, &mut trace) else {
        panic!("not identified");
    };
    c.bench_function("part: outbound checks, rating, route plan", |b| {
        b.iter(|| {
            let mut trace = Trace::new();
            let req = OutboundRequest { message: &msg, facts: &facts, identified, usage: &Idle, rotation: 1, now };
            black_box(matches!(decide(&config, &req, &mut trace), OutboundDecision::Route(_)))
        })
    });
    c.bench_function("part: caller number (header priority)", |b| {
        b.iter(|| black_box(trunking::caller_id::caller_number(black_box(&msg)).is_some()))
    });
    let plan = config.numbering();
    c.bench_function("part: destination (dial)", |b| b.iter(|| black_box(plan.dial(black_box("+13125550199"), None))));

    // A carrier's call to connection 4242's number, in national form (read as E.164 first).
    let text = format!(
        "INVITE sip:31220{conn:05}@sip.opentrunk.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:31220{conn:05}@sip.opentrunk.test>\r\n\
         From: <sip:+13125550199@carrier.example.net>;tag=1928301774\r\n\
         Call-ID: b84b4c76e66710@carrier.example.net\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+13125550199@203.0.113.5:5060>\r\n\
         P-Asserted-Identity: <sip:+13125550199@carrier.example.net>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let msg = sip::Message::parse(text.into_bytes().into(), sip::Framing::Datagram).expect("an INVITE");
    let mut rotation = 0u64;
    let mut run = || {
        rotation += 1;
        let mut trace = Trace::new();
        let source = std::net::IpAddr::from([203, 0, 113, 5]);
        let req = InboundRequest { message: &msg, source, registered: &NoRegistrations, rotation, now };
        match inbound::decide(&config, &req, &mut trace) {
            InboundDecision::Route(call) => black_box((call.routes.len(), trace.len())),
            InboundDecision::Reject(r) => panic!("rejected {r:?}: {trace:#?}"),
        }
    };
    run();
    c.bench_function("inbound decision (carrier block, national number, IP connection)", |b| b.iter(&mut run));
}

criterion_group!(benches, bench);
criterion_main!(benches);
