//! The route plan's share of the per-call budget: planning an outbound call over a realistic
//! carrier set, an inbound call over a round-robin connection, and a failover decision.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use trunking::Trace;
use trunking::routing::{
    AttemptOutcome, CallForwarding, Carrier, ForwardingType, Gateway, GatewayOrder, HostTargets, InboundEndpoints,
    InboundTargets, IpTarget, Transport, after_attempt, final_for_caller, plan_inbound, plan_outbound,
};

fn carrier(id: &str, priority: u16, prefixes: &[&str], routing: GatewayOrder, gateways: usize) -> Carrier {
    Carrier {
        id: id.into(),
        name: id.into(),
        gateways: (0..gateways)
            .map(|i| Gateway {
                host: format!("sip{i}.{id}.example.net"),
                port: 5060,
                transport: Transport::Udp,
                priority: 1,
                weight: 1,
            })
            .collect(),
        routing,
        priority,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        inbound_ips: vec![],
        username: Some("trunk".into()),
        password: Some("secret".into()),
        tech_prefix: Some("0099".into()),
        enabled: true,
    }
}

fn bench(c: &mut Criterion) {
    // Eight carriers, three eligible for a US number, two gateways each.
    let carriers = vec![
        carrier("us-primary", 1, &["1"], GatewayOrder::RoundRobin, 2),
        carrier("us-backup", 2, &["1"], GatewayOrder::Sequential, 2),
        carrier("global", 5, &[], GatewayOrder::Sequential, 2),
        carrier("uk", 1, &["44"], GatewayOrder::Sequential, 2),
        carrier("de", 1, &["49"], GatewayOrder::Sequential, 2),
        carrier("fr", 1, &["33"], GatewayOrder::Sequential, 2),
        carrier("au", 1, &["61"], GatewayOrder::Sequential, 2),
        carrier("off", 0, &[], GatewayOrder::Sequential, 2),
    ];
    let mut rotation = 0u64;
    c.bench_function("plan_outbound 8 carriers, 6 routes", |b| {
        b.iter(|| {
            rotation = rotation.wrapping_add(1);
            black_box(plan_outbound(black_box(&carriers), black_box("14155550100"), rotation))
        })
    });

    c.bench_function("plan_outbound + record into a trace", |b| {
        b.iter(|| {
            rotation = rotation.wrapping_add(1);
            let plan = plan_outbound(black_box(&carriers), black_box("14155550100"), rotation);
            let mut trace = Trace::new();
            plan.record(&mut trace);
            black_box((plan, trace))
        })
    });

    let targets = InboundTargets {
        endpoints: InboundEndpoints::Ips(HostTargets::listed(
            (1..=3)
                .map(|i| IpTarget { address: format!("192.0.2.{i}"), port: 5060, transport: Transport::Udp })
                .collect(),
        )),
        routing: GatewayOrder::RoundRobin,
        call_forwarding: CallForwarding {
            enabled: true,
            forwarding_type: Some(ForwardingType::OnFailure),
            forwards_to: Some("+13035559123".into()),
        },
    };
    c.bench_function("plan_inbound 3 IPs round robin + forwarding", |b| {
        b.iter(|| {
            rotation = rotation.wrapping_add(1);
            black_box(plan_inbound(black_box(&targets), rotation))
        })
    });

    let outcomes = [AttemptOutcome::Response(503), AttemptOutcome::Timeout, AttemptOutcome::TransportError];
    c.bench_function("after_attempt + final_for_caller", |b| {
        b.iter(|| {
            let next = after_attempt(black_box(AttemptOutcome::Response(486)));
            black_box((next, final_for_caller(black_box(&outcomes))))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
