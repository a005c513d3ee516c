//! Route plans and failover: the tables of "Round Robin Routing", "Failover & Retries" and
//! "SRV Records", row by row, and properties that hold for any configuration.

use proptest::prelude::*;
use trunking::Timestamp;
use trunking::routing::{
    AttemptOutcome, CallForwarding, Carrier, FAILOVER_TRIGGERS, FORWARD_ON_FAILURE_MAX_CARRIERS, FailoverRule,
    ForwardingType, FqdnTarget, Gateway, GatewayOrder, HostTargets, InboundEndpoints, InboundStep, InboundTargets,
    IpTarget, NO_FAILOVER_EXAMPLES, Next, RegisteredContact, RoutePlan, Transport, after_attempt, final_for_caller,
    plan_inbound, plan_outbound,
};
use trunking::trace::{Trace, Value, Verdict};

fn gw(host: &str) -> Gateway {
    Gateway { host: host.into(), port: 5060, transport: Transport::Udp, priority: 1, weight: 1 }
}

fn gw_pw(host: &str, priority: u16, weight: u16) -> Gateway {
    Gateway { priority, weight, ..gw(host) }
}

fn carrier(id: &str, priority: u16, prefixes: &[&str], gateways: Vec<Gateway>) -> Carrier {
    Carrier {
        id: id.into(),
        name: format!("Carrier {id}"),
        gateways,
        routing: GatewayOrder::Sequential,
        priority,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        inbound_ips: vec![],
        username: None,
        password: None,
        tech_prefix: None,
        enabled: true,
    }
}

fn carrier_order(plan: &RoutePlan<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &plan.attempts {
        if out.last().map(String::as_str) != Some(a.carrier_id()) {
            out.push(a.carrier_id().to_owned());
        }
    }
    out
}

fn traced(plan: &RoutePlan<'_>) -> Trace {
    let mut trace = Trace::new();
    plan.record(&mut trace);
    trace
}

fn hosts<'a>(plan: &RoutePlan<'a>) -> Vec<&'a str> {
    plan.attempts.iter().map(|a| a.host()).collect()
}

// --- Failover ---------------------------------------------------------------------------------

/// "Triggers failover", row by row, plus the timeout the SRV section retries on.
#[test]
fn failover_triggers_mirror_the_documentation() {
    let documented = [
        (AttemptOutcome::Response(408), "Request Timeout"),
        (AttemptOutcome::Response(480), "Temporarily Unavailable"),
        (AttemptOutcome::Response(503), "Service Unavailable"),
        (AttemptOutcome::Response(504), "Server Timeout"),
        (AttemptOutcome::TransportError, "Network/TCP failure"),
        (AttemptOutcome::Timeout, "No response (Timer B)"),
    ];
    assert_eq!(FAILOVER_TRIGGERS.len(), documented.len());
    for (row, (outcome, meaning)) in FAILOVER_TRIGGERS.iter().zip(documented) {
        assert_eq!(*row, FailoverRule { outcome, meaning });
        assert_eq!(after_attempt(outcome), Next::TryNextRoute, "{outcome:?}");
    }
}

/// "Does NOT trigger failover (call considered connected)", row by row.
#[test]
fn documented_non_triggers_finish() {
    let documented =
        [(180, "Ringing"), (200, "OK (answered)"), (404, "Not Found"), (486, "Busy Here"), (603, "Decline")];
    assert_eq!(NO_FAILOVER_EXAMPLES.len(), documented.len());
    for (row, (code, meaning)) in NO_FAILOVER_EXAMPLES.iter().zip(documented) {
        assert_eq!(*row, FailoverRule { outcome: AttemptOutcome::Response(code), meaning });
        assert_eq!(after_attempt(row.outcome), Next::Finish, "{code}");
    }
}

#[test]
fn every_other_outcome_finishes() {
    use AttemptOutcome::Response as R;
    let table = [
        // Provisional: the call is progressing, so it stays on this route.
        (R(180), Next::Finish),
        (R(181), Next::Finish),
        (R(182), Next::Finish),
        (R(183), Next::Finish),
        (R(199), Next::Finish),
        // 100 Trying is hop-by-hop: keep waiting for this route's outcome.
        (R(100), Next::Wait),
        (R(200), Next::Finish),
        (R(202), Next::Finish),
        (R(302), Next::Finish),
        (R(401), Next::Finish),
        (R(403), Next::Finish),
        (R(404), Next::Finish),
        (R(407), Next::Finish),
        (R(484), Next::Finish),
        (R(486), Next::Finish),
        (R(487), Next::Finish),
        (R(488), Next::Finish),
        (R(500), Next::Finish),
        (R(502), Next::Finish),
        (R(505), Next::Finish),
        (R(580), Next::Finish),
        (R(600), Next::Finish),
        (R(603), Next::Finish),
        (R(604), Next::Finish),
        (R(606), Next::Finish),
        // Not SIP statuses at all: nothing to fail over on.
        (R(0), Next::Finish),
        (R(99), Next::Finish),
        (R(700), Next::Finish),
        (R(u16::MAX), Next::Finish),
        // The triggers, once more, next to their neighbours.
        (R(407), Next::Finish),
        (R(408), Next::TryNextRoute),
        (R(409), Next::Finish),
        (R(479), Next::Finish),
        (R(480), Next::TryNextRoute),
        (R(481), Next::Finish),
        (R(503), Next::TryNextRoute),
        (R(504), Next::TryNextRoute),
        (AttemptOutcome::Timeout, Next::TryNextRoute),
        (AttemptOutcome::TransportError, Next::TryNextRoute),
    ];
    for (outcome, next) in table {
        assert_eq!(after_attempt(outcome), next, "{outcome:?}");
    }
}

#[test]
fn the_caller_gets_the_last_response_a_route_sent() {
    use AttemptOutcome::{Response as R, Timeout, TransportError};
    let table: &[(&[AttemptOutcome], Option<u16>)] = &[
        (&[], None),
        (&[Timeout], None),
        (&[TransportError, Timeout], None),
        (&[R(503)], Some(503)),
        (&[R(503), R(480)], Some(480)),
        // A response beats a later timeout or transport error.
        (&[R(480), Timeout], Some(480)),
        (&[R(408), TransportError, Timeout], Some(408)),
        (&[R(503), Timeout, R(486)], Some(486)),
        // A carrier's challenge is not the caller's to answer.
        (&[R(486), R(407)], Some(486)),
        (&[R(401)], None),
        // Provisional and success responses are no failure to relay.
        (&[R(180), Timeout], None),
        (&[R(503), R(100)], Some(503)),
        (&[R(200)], None),
        (&[R(302)], Some(302)),
        (&[R(603)], Some(603)),
        (&[R(0), R(999)], None),
    ];
    for (outcomes, expected) in table {
        assert_eq!(final_for_caller(outcomes), *expected, "{outcomes:?}");
    }
}

// --- Outbound: carriers -------------------------------------------------------------------------

#[test]
fn carriers_order_by_priority_then_specificity_then_id() {
    struct Case {
        name: &'static str,
        carriers: Vec<Carrier>,
        number: &'static str,
        order: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "lowest priority first",
            carriers: vec![carrier("b", 2, &[], vec![gw("b1")]), carrier("a", 1, &[], vec![gw("a1")])],
            number: "14155550100",
            order: &["a", "b"],
        },
        Case {
            name: "priority beats a more specific prefix",
            carriers: vec![carrier("specific", 2, &["1415"], vec![gw("s1")]), carrier("any", 1, &[], vec![gw("x1")])],
            number: "14155550100",
            order: &["any", "specific"],
        },
        Case {
            name: "at equal priority the more specific prefix goes first",
            carriers: vec![
                carrier("any", 5, &[], vec![gw("x1")]),
                carrier("us", 5, &["1"], vec![gw("u1")]),
                carrier("sf", 5, &["1", "1415"], vec![gw("s1")]),
            ],
            number: "14155550100",
            order: &["sf", "us", "any"],
        },
        Case {
            name: "full ties go by id, whatever the listed order",
            carriers: vec![
                carrier("zeta", 1, &["44"], vec![gw("z1")]),
                carrier("alpha", 1, &["44"], vec![gw("a1")]),
                carrier("mid", 1, &["44"], vec![gw("m1")]),
            ],
            number: "442071234567",
            order: &["alpha", "mid", "zeta"],
        },
        Case {
            name: "prefixes that do not start the number exclude the carrier",
            carriers: vec![
                carrier("uk", 1, &["44"], vec![gw("k1")]),
                carrier("us", 2, &["1"], vec![gw("u1")]),
                carrier("tollfree", 0, &["1800"], vec![gw("t1")]),
            ],
            number: "14155550100",
            order: &["us"],
        },
        Case {
            name: "a leading + on the number or a prefix is ignored",
            carriers: vec![carrier("us", 1, &["+1"], vec![gw("u1")]), carrier("uk", 1, &["44"], vec![gw("k1")])],
            number: "+14155550100",
            order: &["us"],
        },
        Case {
            name: "no eligible carrier: an empty plan",
            carriers: vec![carrier("uk", 1, &["44"], vec![gw("k1")])],
            number: "14155550100",
            order: &[],
        },
        Case { name: "no carriers at all", carriers: vec![], number: "14155550100", order: &[] },
    ];
    for case in &cases {
        let plan = plan_outbound(&case.carriers, case.number, 0);
        assert_eq!(carrier_order(&plan), case.order, "{}", case.name);
        assert_eq!(plan.is_empty(), case.order.is_empty(), "{}", case.name);
    }
}

#[test]
fn matched_prefix_is_the_longest() {
    let carriers = [carrier("c", 1, &["1", "1415", "14"], vec![gw("g")])];
    let plan = plan_outbound(&carriers, "14155550100", 0);
    assert_eq!(plan.attempts[0].matched_prefix, "1415");
    let catch_all = [carrier("c", 1, &[], vec![gw("g")])];
    assert_eq!(plan_outbound(&catch_all, "14155550100", 0).attempts[0].matched_prefix, "");
}

#[test]
fn disabled_carriers_are_skipped() {
    let mut off = carrier("off", 0, &[], vec![gw("o1"), gw("o2")]);
    off.enabled = false;
    let carriers = [off, carrier("on", 9, &[], vec![gw("n1")])];
    let plan = plan_outbound(&carriers, "14155550100", 0);
    assert_eq!(hosts(&plan), ["n1"]);
    let trace = traced(&plan);
    let step = trace.get("routing.carriers").unwrap();
    assert_eq!(step.verdict, Verdict::Note);
    assert_eq!(step.fact("disabled"), Some(&Value::Int(1)));
    assert_eq!(step.fact("order"), Some(&Value::Str("on".into())));

    // Only disabled carriers: nowhere to go, and the trace says why.
    let plan = plan_outbound(&carriers[..1], "14155550100", 0);
    assert!(plan.is_empty());
    let trace = traced(&plan);
    let failed = trace.failed().unwrap();
    assert_eq!(failed.rule, "routing.carriers");
    assert_eq!(failed.fact("disabled"), Some(&Value::Int(1)));
    assert_eq!(failed.fact("number"), Some(&Value::Str("14155550100".into())));
    assert!(!trace.has("routing.gateways"));
}

#[test]
fn tech_prefix_goes_before_the_number() {
    let mut with = carrier("with", 1, &[], vec![gw("w1")]);
    with.tech_prefix = Some("7788#".into());
    let carriers = [with, carrier("without", 2, &[], vec![gw("n1")])];
    let plan = plan_outbound(&carriers, "+14155550100", 0);
    let dials: Vec<String> = plan.attempts.iter().map(|a| a.dial(&plan.number).to_string()).collect();
    assert_eq!(dials, ["7788#14155550100", "14155550100"]);
    let mut buf = String::new();
    plan.attempts[0].dial(&plan.number).write_to(&mut buf);
    assert_eq!(buf, "7788#14155550100");
    assert_eq!(plan.attempts[0].dial(&plan.number).len(), buf.len());
}

#[test]
fn attempts_carry_gateway_and_credentials() {
    let mut c = carrier("c", 1, &[], vec![Gateway { port: 5061, transport: Transport::Tls, ..gw("sip.example.net") }]);
    c.username = Some("trunk".into());
    c.password = Some("s3cret".into());
    let carriers = [c];
    let plan = plan_outbound(&carriers, "14155550100", 0);
    let a = plan.attempts[0];
    assert_eq!((a.carrier_id(), a.host(), a.port(), a.transport()), ("c", "sip.example.net", 5061, Transport::Tls));
    let creds = a.credentials().unwrap();
    assert_eq!((creds.carrier_id, creds.username, creds.password), ("c", "trunk", "s3cret"));
    // The password stays out of debug output.
    assert!(!format!("{a:?} {creds:?}").contains("s3cret"));

    let mut half = carriers[0].clone();
    half.password = None;
    assert_eq!(half.credentials(), None);
}

// --- Outbound: gateways -------------------------------------------------------------------------

#[test]
fn sequential_gateways_by_priority_then_weight_then_listed_order() {
    let c = carrier(
        "c",
        1,
        &[],
        vec![
            gw_pw("p2", 2, 100),
            gw_pw("p1w10", 1, 10),
            gw_pw("p1w50a", 1, 50),
            gw_pw("p0", 0, 1),
            gw_pw("p1w50b", 1, 50),
        ],
    );
    let carriers = [c];
    for rotation in [0, 1, 2, 7, u64::MAX] {
        let plan = plan_outbound(&carriers, "14155550100", rotation);
        assert_eq!(hosts(&plan), ["p0", "p1w50a", "p1w50b", "p1w10", "p2"], "rotation {rotation}");
    }
}

/// "Call 1 → IP 1, Call 2 → IP 2, Call 3 → IP 3, Call 4 → IP 1 (cycle repeats)", and "If IP 2
/// is selected first and fails, the system tries IP 3, then IP 1".
#[test]
fn round_robin_rotates_and_keeps_every_gateway_as_backup() {
    let mut c = carrier("c", 1, &[], vec![gw_pw("ip1", 9, 1), gw_pw("ip2", 1, 1), gw_pw("ip3", 5, 99)]);
    c.routing = GatewayOrder::RoundRobin;
    let carriers = [c];
    let table: [(u64, [&str; 3]); 6] = [
        (0, ["ip1", "ip2", "ip3"]),
        (1, ["ip2", "ip3", "ip1"]),
        (2, ["ip3", "ip1", "ip2"]),
        (3, ["ip1", "ip2", "ip3"]),
        (4, ["ip2", "ip3", "ip1"]),
        // u64::MAX % 3 == 0.
        (u64::MAX, ["ip1", "ip2", "ip3"]),
    ];
    for (rotation, expected) in table {
        let plan = plan_outbound(&carriers, "14155550100", rotation);
        assert_eq!(hosts(&plan), expected, "rotation {rotation}");
    }
}

#[test]
fn each_carrier_keeps_its_own_gateway_order() {
    let mut rr = carrier("rr", 1, &[], vec![gw("r1"), gw("r2")]);
    rr.routing = GatewayOrder::RoundRobin;
    let seq = carrier("seq", 2, &[], vec![gw_pw("s1", 2, 1), gw_pw("s2", 1, 1)]);
    let carriers = [seq, rr];
    let plan = plan_outbound(&carriers, "14155550100", 1);
    assert_eq!(hosts(&plan), ["r2", "r1", "s2", "s1"]);
    let trace = traced(&plan);
    let routes = trace.get("routing.gateways").unwrap().fact("routes").unwrap();
    assert_eq!(routes, &Value::Str("rr: r2:5060/UDP r1:5060/UDP | seq: s2:5060/UDP s1:5060/UDP".into()));
}

#[test]
fn ipv6_gateways_are_bracketed_in_the_trace() {
    let carriers = [carrier(
        "v6",
        1,
        &[],
        vec![
            gw("2001:db8::1"),
            Gateway { port: 65535, transport: Transport::Tls, ..gw("a") },
            Gateway { port: 0, transport: Transport::Tcp, ..gw("b") },
        ],
    )];
    let plan = plan_outbound(&carriers, "1", 0);
    let trace = traced(&plan);
    let routes = trace.get("routing.gateways").unwrap().fact("routes").unwrap();
    assert_eq!(routes, &Value::Str("v6: [2001:db8::1]:5060/UDP a:65535/TLS b:0/TCP".into()));
}

#[test]
fn a_carrier_without_gateways_adds_nothing() {
    let carriers = [carrier("empty", 0, &[], vec![]), carrier("full", 1, &[], vec![gw("f1")])];
    let plan = plan_outbound(&carriers, "14155550100", 0);
    assert_eq!(hosts(&plan), ["f1"]);
    assert_eq!(traced(&plan).get("routing.carriers").unwrap().fact("no_gateways"), Some(&Value::Int(1)));
}

#[test]
fn forwarded_calls_take_at_most_ten_carriers() {
    let carriers: Vec<Carrier> = (0..12u16)
        .map(|i| carrier(&format!("c{i:02}"), i, &[], vec![gw(&format!("a{i}")), gw(&format!("b{i}"))]))
        .collect();
    let mut plan = plan_outbound(&carriers, "14155550100", 0);
    assert_eq!(plan.len(), 24);
    plan.limit_carriers(FORWARD_ON_FAILURE_MAX_CARRIERS);
    assert_eq!(plan.len(), 20);
    assert_eq!(carrier_order(&plan).last().map(String::as_str), Some("c09"));
    plan.limit_carriers(0);
    assert!(plan.is_empty());
}

#[test]
fn tokens_match_the_api() {
    for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        assert_eq!(Transport::from_token(t.as_str()), Some(t));
        assert_eq!(Transport::from_token(&t.as_str().to_lowercase()), Some(t));
    }
    assert_eq!(Transport::from_token("SCTP"), None);
    assert_eq!((Transport::Udp.default_port(), Transport::Tls.default_port()), (5060, 5061));
    assert_eq!(GatewayOrder::from_token("sequential"), Some(GatewayOrder::Sequential));
    assert_eq!(GatewayOrder::from_token("round-robin"), Some(GatewayOrder::RoundRobin));
    assert_eq!(GatewayOrder::from_token("random"), None);
    assert_eq!(serde_json::to_string(&GatewayOrder::RoundRobin).unwrap(), r#""round-robin""#);
    assert_eq!(serde_json::to_string(&Transport::Tls).unwrap(), r#""TLS""#);
}

// --- Inbound ------------------------------------------------------------------------------------

fn ip(address: &str) -> IpTarget {
    IpTarget { address: address.into(), port: 5060, transport: Transport::Udp }
}

fn ips(listed: &[&str], designated: [Option<usize>; 3]) -> InboundEndpoints {
    let [primary, secondary, tertiary] = designated;
    InboundEndpoints::Ips(HostTargets { listed: listed.iter().map(|a| ip(a)).collect(), primary, secondary, tertiary })
}

fn inbound(endpoints: InboundEndpoints, routing: GatewayOrder) -> InboundTargets {
    InboundTargets { endpoints, routing, call_forwarding: CallForwarding::default() }
}

fn on_failure(to: &str) -> CallForwarding {
    CallForwarding { enabled: true, forwarding_type: Some(ForwardingType::OnFailure), forwards_to: Some(to.into()) }
}

/// Each step as text: the address, FQDN, contact URI, or `pstn:+E164`.
fn step_names(targets: &InboundTargets, rotation: u64) -> Vec<String> {
    plan_inbound(targets, rotation)
        .steps
        .iter()
        .map(|s| match s {
            InboundStep::Ip(t) => t.address.clone(),
            InboundStep::Fqdn(t) => t.fqdn.clone(),
            InboundStep::Contact(c) => c.uri.clone(),
            InboundStep::ForwardToPstn(to) => format!("pstn:{to}"),
        })
        .collect()
}

#[test]
fn sequential_ips_follow_primary_secondary_tertiary() {
    let listed = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
    let table: &[([Option<usize>; 3], &[&str])] = &[
        ([Some(2), Some(0), Some(3)], &["10.0.0.3", "10.0.0.1", "10.0.0.4"]),
        ([Some(1), None, None], &["10.0.0.2"]),
        ([None, Some(3), Some(0)], &["10.0.0.4", "10.0.0.1"]),
        // Named twice: tried once.
        ([Some(1), Some(1), Some(2)], &["10.0.0.2", "10.0.0.3"]),
        // A designation that no longer points anywhere is ignored.
        ([Some(9), Some(2), None], &["10.0.0.3"]),
        // None designated (or none valid): the listed order.
        ([None, None, None], &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
        ([Some(4), Some(usize::MAX), None], &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
    ];
    for (designated, expected) in table {
        let targets = inbound(ips(&listed, *designated), GatewayOrder::Sequential);
        for rotation in [0, 1, 2] {
            assert_eq!(step_names(&targets, rotation), *expected, "{designated:?} rotation {rotation}");
        }
    }
}

#[test]
fn round_robin_ips_cycle_over_every_listed_ip() {
    // Designations do not matter: round robin spreads over every IP of the connection.
    let targets = inbound(ips(&["ip1", "ip2", "ip3"], [Some(2), None, None]), GatewayOrder::RoundRobin);
    let table: [(u64, [&str; 3]); 5] = [
        (0, ["ip1", "ip2", "ip3"]),
        (1, ["ip2", "ip3", "ip1"]),
        (2, ["ip3", "ip1", "ip2"]),
        (3, ["ip1", "ip2", "ip3"]),
        (u64::MAX, ["ip1", "ip2", "ip3"]),
    ];
    for (rotation, expected) in table {
        assert_eq!(step_names(&targets, rotation), expected, "rotation {rotation}");
    }
}

#[test]
fn fqdns_without_port_use_srv() {
    let fqdn = |name: &str, port| FqdnTarget { fqdn: name.into(), port, transport: Transport::Tcp };
    let endpoints = InboundEndpoints::Fqdns(HostTargets {
        listed: vec![fqdn("a.example.com", Some(5080)), fqdn("b.example.com", None)],
        primary: Some(1),
        secondary: Some(0),
        tertiary: None,
    });
    let targets = inbound(endpoints, GatewayOrder::Sequential);
    let plan = plan_inbound(&targets, 0);
    let InboundStep::Fqdn(first) = plan.steps[0] else { panic!("{:?}", plan.steps) };
    assert_eq!(first.fqdn, "b.example.com");
    assert!(first.uses_srv());
    let InboundStep::Fqdn(second) = plan.steps[1] else { panic!("{:?}", plan.steps) };
    assert!(!second.uses_srv());
    assert_eq!(plan.steps.len(), 2);
}

#[test]
fn contacts_go_by_q_then_most_recent() {
    let contact = |uri: &str, q, at| RegisteredContact { uri: uri.into(), q, registered_at: Timestamp(at) };
    let contacts = vec![
        contact("sip:old@a", None, 100),
        contact("sip:low@b", Some(100), 900),
        contact("sip:new@c", Some(1000), 300),
        contact("sip:over@d", Some(5000), 200),
        contact("sip:half@e", Some(500), 50),
    ];
    let seq = inbound(InboundEndpoints::Contacts(contacts.clone()), GatewayOrder::Sequential);
    // q above 1 counts as 1; no q counts as 1.
    let expected = ["sip:new@c", "sip:over@d", "sip:old@a", "sip:half@e", "sip:low@b"];
    for rotation in [0, 1, 2] {
        assert_eq!(step_names(&seq, rotation), expected);
    }
    // Round robin rotates among contacts of equal q only.
    let rr = inbound(InboundEndpoints::Contacts(contacts), GatewayOrder::RoundRobin);
    let table: [(u64, [&str; 5]); 3] = [
        (0, ["sip:new@c", "sip:over@d", "sip:old@a", "sip:half@e", "sip:low@b"]),
        (1, ["sip:over@d", "sip:old@a", "sip:new@c", "sip:half@e", "sip:low@b"]),
        (2, ["sip:old@a", "sip:new@c", "sip:over@d", "sip:half@e", "sip:low@b"]),
    ];
    for (rotation, expected) in table {
        assert_eq!(step_names(&rr, rotation), expected, "rotation {rotation}");
    }
}

#[test]
fn forwarding_on_failure_is_the_last_step() {
    let table: &[(CallForwarding, &[&str])] = &[
        (on_failure("+13035559123"), &["ip1", "ip2", "pstn:+13035559123"]),
        (CallForwarding { enabled: false, ..on_failure("+13035559123") }, &["ip1", "ip2"]),
        (CallForwarding { forwards_to: None, ..on_failure("x") }, &["ip1", "ip2"]),
        (CallForwarding { forwards_to: Some(" ".into()), ..on_failure("x") }, &["ip1", "ip2"]),
        (CallForwarding { forwarding_type: None, ..on_failure("+13035559123") }, &["ip1", "ip2"]),
        // Forwarding `always` skips the connection.
        (
            CallForwarding { forwarding_type: Some(ForwardingType::Always), ..on_failure("+13035559123") },
            &["pstn:+13035559123"],
        ),
    ];
    for (forwarding, expected) in table {
        let targets = InboundTargets {
            endpoints: ips(&["ip1", "ip2"], [None; 3]),
            routing: GatewayOrder::Sequential,
            call_forwarding: forwarding.clone(),
        };
        assert_eq!(step_names(&targets, 0), *expected, "{forwarding:?}");
    }
}

#[test]
fn forwarding_reaches_a_connection_without_targets() {
    let targets = InboundTargets {
        endpoints: InboundEndpoints::Contacts(vec![]),
        routing: GatewayOrder::RoundRobin,
        call_forwarding: on_failure("+13035559123"),
    };
    let plan = plan_inbound(&targets, 5);
    assert_eq!(plan.steps, [InboundStep::ForwardToPstn("+13035559123")]);
    let mut trace = Trace::new();
    plan.record(&mut trace);
    let step = trace.get("routing.inbound").unwrap();
    assert_eq!(step.verdict, Verdict::Note);
    assert_eq!(step.fact("forwarding"), Some(&Value::Static("on-failure")));
    assert_eq!(step.fact("forwards_to"), Some(&Value::Str("+13035559123".into())));
}

#[test]
fn nowhere_to_send_fails_in_the_trace() {
    let targets = inbound(InboundEndpoints::Contacts(vec![]), GatewayOrder::Sequential);
    let plan = plan_inbound(&targets, 0);
    assert!(plan.is_empty());
    let mut trace = Trace::new();
    plan.record(&mut trace);
    let failed = trace.failed().unwrap();
    assert_eq!(failed.rule, "routing.inbound");
    assert_eq!(failed.fact("endpoints"), Some(&Value::Static("contacts")));
    assert_eq!(failed.fact("forwards_to"), Some(&Value::Absent));
}

// --- Properties ---------------------------------------------------------------------------------

fn arb_gateway() -> impl Strategy<Value = Gateway> {
    ("[a-c]{1,2}", any::<u16>(), 0..3u8, 0..3u16, 0..3u16).prop_map(|(host, port, t, priority, weight)| Gateway {
        host,
        port,
        transport: [Transport::Udp, Transport::Tcp, Transport::Tls][usize::from(t)],
        priority,
        weight,
    })
}

fn arb_carrier() -> impl Strategy<Value = Carrier> {
    (
        "[a-c]{0,2}",
        prop::collection::vec(arb_gateway(), 0..5),
        any::<bool>(),
        0..3u16,
        prop::collection::vec("\\+?[0-9]{0,3}", 0..3),
        prop::option::of("[0-9#*]{0,4}"),
        any::<bool>(),
    )
        .prop_map(|(id, gateways, rr, priority, prefixes, tech_prefix, enabled)| Carrier {
            id,
            name: String::new(),
            gateways,
            routing: if rr { GatewayOrder::RoundRobin } else { GatewayOrder::Sequential },
            priority,
            prefixes,
            inbound_ips: vec![],
            username: None,
            password: None,
            tech_prefix,
            enabled,
        })
}

proptest! {
    #[test]
    fn every_eligible_gateway_appears_exactly_once(
        carriers in prop::collection::vec(arb_carrier(), 0..6),
        number in "\\+?[0-9]{0,6}|\\PC{0,8}",
        rotation in any::<u64>(),
    ) {
        let plan = plan_outbound(&carriers, &number, rotation);
        let digits = number.strip_prefix('+').unwrap_or(&number);
        for (ci, c) in carriers.iter().enumerate() {
            let eligible = c.enabled
                && (c.prefixes.is_empty()
                    || c.prefixes.iter().any(|p| digits.starts_with(p.strip_prefix('+').unwrap_or(p))));
            for (gi, g) in c.gateways.iter().enumerate() {
                let seen = plan.attempts.iter().filter(|a| std::ptr::eq(a.gateway, g)).count();
                prop_assert_eq!(seen, usize::from(eligible), "carrier {} gateway {}", ci, gi);
            }
        }
        // Carriers are contiguous and in non-decreasing priority; dial strings are right.
        let mut finished: Vec<usize> = Vec::new();
        for pair in plan.attempts.windows(2) {
            prop_assert!(pair[0].carrier.priority <= pair[1].carrier.priority);
            if pair[0].carrier_index != pair[1].carrier_index {
                prop_assert!(!finished.contains(&pair[1].carrier_index));
                finished.push(pair[0].carrier_index);
            }
        }
        for a in &plan.attempts {
            prop_assert_eq!(a.dial(&plan.number).to_string(), format!("{}{}", a.carrier.tech_prefix.as_deref().unwrap_or(""), digits));
            prop_assert!(std::ptr::eq(a.carrier, &carriers[a.carrier_index]));
            prop_assert!(std::ptr::eq(a.gateway, &a.carrier.gateways[a.gateway_index]));
        }
        prop_assert_eq!(traced(&plan).failed().is_some(), plan.is_empty());
    }

    #[test]
    fn round_robin_is_a_rotation(n in 1usize..8, rotation in any::<u64>()) {
        let mut c = carrier("c", 1, &[], (0..n).map(|i| gw(&i.to_string())).collect());
        c.routing = GatewayOrder::RoundRobin;
        let carriers = [c];
        let plan = plan_outbound(&carriers, "1", rotation);
        let start = usize::try_from(rotation % n as u64).unwrap();
        let order: Vec<usize> = plan.attempts.iter().map(|a| a.gateway_index).collect();
        let expected: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        prop_assert_eq!(order, expected);
    }

    #[test]
    fn inbound_plans_never_panic_and_use_each_target_once(
        listed in prop::collection::vec("[a-d]{1,2}", 0..6),
        designated in prop::array::uniform3(prop::option::of(0usize..8)),
        contacts in prop::collection::vec((prop::option::of(any::<u16>()), 0u64..4), 0..6),
        rr in any::<bool>(),
        use_contacts in any::<bool>(),
        forwarding in prop::option::of((any::<bool>(), any::<bool>())),
        rotation in any::<u64>(),
    ) {
        let routing = if rr { GatewayOrder::RoundRobin } else { GatewayOrder::Sequential };
        let endpoints = if use_contacts {
            InboundEndpoints::Contacts(
                contacts
                    .iter()
                    .enumerate()
                    .map(|(i, (q, at))| RegisteredContact { uri: i.to_string(), q: *q, registered_at: Timestamp(*at) })
                    .collect(),
            )
        } else {
            let [primary, secondary, tertiary] = designated;
            InboundEndpoints::Ips(HostTargets { listed: listed.iter().map(|a| ip(a)).collect(), primary, secondary, tertiary })
        };
        let call_forwarding = match forwarding {
            None => CallForwarding::default(),
            Some((enabled, always)) => CallForwarding {
                enabled,
                forwarding_type: Some(if always { ForwardingType::Always } else { ForwardingType::OnFailure }),
                forwards_to: Some("+13035559123".into()),
            },
        };
        let always = matches!(forwarding, Some((true, true)));
        let forwards = matches!(forwarding, Some((true, _)));
        let targets = InboundTargets { endpoints, routing, call_forwarding };
        let plan = plan_inbound(&targets, rotation);

        // Forwarding, when active, is the last step and appears once.
        let pstn = plan.steps.iter().filter(|s| matches!(s, InboundStep::ForwardToPstn(_))).count();
        prop_assert_eq!(pstn, usize::from(forwards));
        if forwards {
            prop_assert!(matches!(plan.steps.last(), Some(InboundStep::ForwardToPstn(_))));
        }
        // No target is tried twice; round robin and contacts try every one.
        let expected = if always {
            0
        } else {
            match &targets.endpoints {
                InboundEndpoints::Contacts(c) => c.len(),
                InboundEndpoints::Ips(h) if rr => h.listed.len(),
                InboundEndpoints::Ips(h) => {
                    let mut valid: Vec<usize> = [h.primary, h.secondary, h.tertiary]
                        .into_iter()
                        .flatten()
                        .filter(|i| *i < h.listed.len())
                        .collect();
                    valid.sort_unstable();
                    valid.dedup();
                    if valid.is_empty() { h.listed.len() } else { valid.len() }
                }
                InboundEndpoints::Fqdns(_) => unreachable!(),
            }
        };
        prop_assert_eq!(plan.steps.len() - pstn, expected);
        for (i, a) in plan.steps.iter().enumerate() {
            for b in &plan.steps[i + 1..] {
                let same = match (a, b) {
                    (InboundStep::Ip(x), InboundStep::Ip(y)) => std::ptr::eq(*x, *y),
                    (InboundStep::Contact(x), InboundStep::Contact(y)) => std::ptr::eq(*x, *y),
                    _ => false,
                };
                prop_assert!(!same);
            }
        }
        let mut trace = Trace::new();
        plan.record(&mut trace);
        prop_assert_eq!(trace.failed().is_some(), plan.is_empty());
    }

    #[test]
    fn failover_is_total(code in any::<u16>()) {
        let next = after_attempt(AttemptOutcome::Response(code));
        let triggers = [408, 480, 503, 504].contains(&code);
        prop_assert_eq!(next == Next::TryNextRoute, triggers);
        prop_assert_eq!(next == Next::Wait, code == 100);
    }
}
