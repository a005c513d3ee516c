//! The inbound decision, table-driven: each row is one carrier INVITE against an origination
//! platform (carriers with their `inbound_ips`, IP, FQDN and credential connections, numbers
//! with and without call forwarding) and the outcome the product gives it, with the trace
//! step that must explain a refusal.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::time::Duration;

use fixture::*;
use proptest::prelude::*;
use sip::{Framing, Message};
use trunking::Reason;
use trunking::config::{
    Account, AniFormat, Config, Connection, ConnectionKind, DnisFormat, INBOUND_COUNTER_PREFIX, InboundDelivery,
    IpBlock, PhoneNumber,
};
use trunking::digest::StoredDigest;
use trunking::inbound::{
    INBOUND_CHECKS, InboundCall, InboundDecision, InboundRequest, InboundRoute, NoRegistrations, Registrations, decide,
};
use trunking::routing::{
    CallForwarding, ForwardingType, FqdnTarget, GatewayOrder, HostTargets, IpTarget, RegisteredContact, Transport,
};
use trunking::time::Timestamp;
use trunking::trace::Trace;

/// The carrier's signaling address and a block of its.
const CARRIER_IP: &str = "198.51.100.1";
const CARRIER_BLOCK_IP: &str = "203.0.113.77";

fn ip_targets(addresses: &[&str]) -> Vec<IpTarget> {
    addresses.iter().map(|a| IpTarget { address: a.to_string(), port: 5060, transport: Transport::Udp }).collect()
}

fn ip_route(host: &str) -> InboundRoute {
    InboundRoute::Ip { host: host.into(), port: 5060, transport: Transport::Udp }
}

fn forward(number: &str) -> InboundRoute {
    InboundRoute::Forward { number: number.into() }
}

fn contact(uri: &str) -> InboundRoute {
    InboundRoute::Contact { uri: uri.into() }
}

fn forwarding(kind: ForwardingType, to: &str) -> CallForwarding {
    CallForwarding { enabled: true, forwarding_type: Some(kind), forwards_to: Some(to.into()) }
}

fn connection(id: &str, kind: ConnectionKind, delivery: InboundDelivery) -> Connection {
    let mut c = ip_connection(id, "acc-a", &[]);
    c.kind = kind;
    c.inbound.delivery = delivery;
    c
}

/// The origination platform; `edit` changes its connections before they are indexed.
fn origination_with(edit: impl FnOnce(&mut Vec<Connection>)) -> Config {
    // Sequential: primary is the third IP, secondary the first, no tertiary.
    let mut seq = connection(
        "pbx-ip",
        ConnectionKind::Ip,
        InboundDelivery::Ips(HostTargets {
            listed: ip_targets(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            primary: Some(2),
            secondary: Some(0),
            tertiary: None,
        }),
    );
    seq.inbound.channel_limit = Some(7);
    seq.inbound.timeout_1xx_secs = 10;
    seq.inbound.timeout_2xx_secs = 20;

    let mut rr = connection(
        "pbx-rr",
        ConnectionKind::Ip,
        InboundDelivery::Ips(HostTargets::listed(ip_targets(&["10.0.1.1", "10.0.1.2", "10.0.1.3"]))),
    );
    rr.inbound.routing = GatewayOrder::RoundRobin;

    let fqdn = connection(
        "pbx-fqdn",
        ConnectionKind::Fqdn,
        InboundDelivery::Fqdns(HostTargets::listed(vec![
            FqdnTarget { fqdn: "pbx.acme.example".into(), port: None, transport: Transport::Tcp },
            FqdnTarget { fqdn: "backup.acme.example".into(), port: Some(5080), transport: Transport::Tls },
        ])),
    );

    let mut cred = connection("pbx-cred", ConnectionKind::Credential, InboundDelivery::Registrations);
    cred.credentials = Some(("alice".into(), StoredDigest::from_password("alice", REALM, "secret123")));
    cred.inbound.simultaneous_ringing = true;

    let empty = connection("pbx-empty", ConnectionKind::Ip, InboundDelivery::Ips(HostTargets::listed(vec![])));
    let mut off =
        connection("pbx-off", ConnectionKind::Ip, InboundDelivery::Ips(HostTargets::listed(ip_targets(&["10.0.2.1"]))));
    off.active = false;

    let mut connections = vec![seq, rr, fqdn, cred, empty, off];
    edit(&mut connections);

    let mut enabled = carrier("carrier-in", 1, &[]);
    enabled.inbound_ips = vec![CARRIER_IP.into(), "203.0.113.0/24".into(), "2001:db8:c::/48".into(), "bogus".into()];
    let mut disabled = carrier("carrier-off", 2, &[]);
    disabled.inbound_ips = vec!["192.0.2.200".into()];
    disabled.enabled = false;

    let number = |e164: &str, connection: Option<&str>, call_forwarding: CallForwarding| PhoneNumber {
        e164: e164.into(),
        account_id: "acc-a".into(),
        connection_id: connection.map(Into::into),
        call_forwarding,
    };
    let none = CallForwarding::default;
    let mut b = Config::builder(PLAN.clone())
        .account(Account { id: "acc-a".into(), enabled: true, concurrent_call_limit: Some(1), rate_deck_id: None })
        .carrier(enabled)
        .carrier(disabled)
        .number(number("+13122000001", Some("pbx-ip"), none()))
        .number(number("+13122000002", Some("pbx-rr"), none()))
        .number(number("+13122000003", Some("pbx-fqdn"), none()))
        .number(number("+13122000004", Some("pbx-cred"), none()))
        .number(number("+13122000005", Some("pbx-empty"), none()))
        .number(number("+13122000006", Some("pbx-off"), none()))
        .number(number("+13122000007", None, none()))
        .number(number("+13122000008", Some("pbx-ip"), forwarding(ForwardingType::Always, "+442079460000")))
        .number(number("+13122000009", Some("pbx-cred"), forwarding(ForwardingType::OnFailure, "+13122009999")))
        .number(number("+13122000010", Some("pbx-empty"), forwarding(ForwardingType::OnFailure, "+13122009999")))
        .number(number("+13122000011", Some("ghost"), none()))
        // Forwarding switched off: the connection's targets only.
        .number(number(
            "+13122000012",
            Some("pbx-ip"),
            CallForwarding { enabled: false, ..forwarding(ForwardingType::Always, "+13122009999") },
        ))
        .number(number("+442079460001", Some("pbx-ip"), none()));
    for c in connections {
        b = b.connection(c);
    }
    b.build()
}

fn origination() -> Config {
    origination_with(|_| {})
}

/// A carrier's INVITE to `ruri` (a whole Request-URI) from `from_user`, with `extra` header
/// lines (each ending in CRLF).
fn carrier_invite(ruri: &str, from_user: &str, extra: &str) -> Message {
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <{ruri}>\r\n\
         From: \"Caller\" <sip:{from_user}@carrier.example.net>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@carrier.example.net\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from_user}@198.51.100.1:5060>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

fn sip_to(user: &str) -> String {
    format!("sip:{user}@sip.opentrunk.test")
}

fn registered(contacts: &[(&str, Option<u16>, u64)]) -> HashMap<&'static str, Vec<RegisteredContact>> {
    let list = contacts
        .iter()
        .map(|(uri, q, at)| RegisteredContact { uri: uri.to_string(), q: *q, registered_at: Timestamp(*at) })
        .collect();
    HashMap::from([("pbx-cred", list)])
}

fn decide_once(
    config: &Config,
    msg: &Message,
    source: &str,
    registrations: &dyn Registrations,
    rotation: u64,
) -> (InboundDecision, Trace) {
    let mut trace = Trace::new();
    let req = InboundRequest { message: msg, source: ip(source), registered: registrations, rotation, now: NOON };
    (decide(config, &req, &mut trace), trace)
}

fn routed(decision: InboundDecision, trace: &Trace) -> InboundCall {
    match decision {
        InboundDecision::Route(call) => {
            assert!(trace.failed().is_none(), "{trace:#?}");
            *call
        }
        InboundDecision::Reject(r) => panic!("refused with {r:?}: {trace:#?}"),
    }
}

/// The rule of [`INBOUND_CHECKS`] that answers `reason`.
fn rule_of(reason: Reason) -> &'static str {
    INBOUND_CHECKS.iter().find(|(_, reasons)| reasons.contains(&reason)).map(|(rule, _)| *rule).expect("a check")
}

#[derive(Debug)]
enum Expect {
    Routes(Vec<InboundRoute>),
    Reject(Reason),
}

#[test]
fn inbound_table() {
    let config = origination();
    let two = registered(&[("sip:alice@10.9.0.1:5062", Some(500), 1_000), ("sip:alice@10.9.0.2:5060", None, 2_000)]);
    let nobody = NoRegistrations;
    let rows: Vec<(&str, String, &str, &dyn Registrations, Expect)> = vec![
        // The source.
        ("unknown source", sip_to("+13122000001"), "192.0.2.1", &nobody, Expect::Reject(Reason::D27)),
        ("a disabled carrier's address", sip_to("+13122000001"), "192.0.2.200", &nobody, Expect::Reject(Reason::D27)),
        (
            "a carrier's address",
            sip_to("+13122000001"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "inside a carrier's IPv4 block",
            sip_to("+13122000001"),
            CARRIER_BLOCK_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "inside a carrier's IPv6 block",
            sip_to("+13122000001"),
            "2001:db8:c:1::5",
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "the carrier's address, IPv4-mapped",
            sip_to("+13122000001"),
            "::ffff:198.51.100.1",
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        ("next to the IPv6 block", sip_to("+13122000001"), "2001:db8:d::5", &nobody, Expect::Reject(Reason::D27)),
        // The called number.
        ("unknown number", sip_to("+13122009998"), CARRIER_IP, &nobody, Expect::Reject(Reason::InvalidDestination)),
        ("not a number", sip_to("alice"), CARRIER_IP, &nobody, Expect::Reject(Reason::InvalidDestination)),
        (
            "no user part",
            "sip:sip.opentrunk.test".into(),
            CARRIER_IP,
            &nobody,
            Expect::Reject(Reason::InvalidDestination),
        ),
        (
            "E.164 without +",
            sip_to("13122000001"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "US national form",
            sip_to("3122000001"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "GB national form",
            sip_to("02079460001"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "user parameters are not the number",
            sip_to("+13122000001;npdi;rn=+13122990000"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "escaped +",
            sip_to("%2B13122000001"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "tel: URI with visual separators",
            "tel:+1-312-200-0001".into(),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        // The connection.
        ("a number without a connection", sip_to("+13122000007"), CARRIER_IP, &nobody, Expect::Reject(Reason::D21)),
        ("a connection that is gone", sip_to("+13122000011"), CARRIER_IP, &nobody, Expect::Reject(Reason::D21)),
        ("an inactive connection", sip_to("+13122000006"), CARRIER_IP, &nobody, Expect::Reject(Reason::D18)),
        // Endpoints and routes.
        ("an IP connection without IPs", sip_to("+13122000005"), CARRIER_IP, &nobody, Expect::Reject(Reason::D40)),
        (
            "a credential connection, nobody registered",
            sip_to("+13122000004"),
            CARRIER_IP,
            &nobody,
            Expect::Reject(Reason::RG1),
        ),
        (
            "FQDNs: the SRV one and the A one, in listed order",
            sip_to("+13122000003"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![
                InboundRoute::Fqdn { name: "pbx.acme.example".into(), port: None, transport: Transport::Tcp },
                InboundRoute::Fqdn { name: "backup.acme.example".into(), port: Some(5080), transport: Transport::Tls },
            ]),
        ),
        (
            "registered contacts: highest q first",
            sip_to("+13122000004"),
            CARRIER_IP,
            &two,
            Expect::Routes(vec![contact("sip:alice@10.9.0.2:5060"), contact("sip:alice@10.9.0.1:5062")]),
        ),
        // Call forwarding.
        (
            "forwarding always: straight to the number",
            sip_to("+13122000008"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![forward("+442079460000")]),
        ),
        (
            "forwarding switched off",
            sip_to("+13122000012"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]),
        ),
        (
            "forwarding on failure: after the contacts",
            sip_to("+13122000009"),
            CARRIER_IP,
            &two,
            Expect::Routes(vec![
                contact("sip:alice@10.9.0.2:5060"),
                contact("sip:alice@10.9.0.1:5062"),
                forward("+13122009999"),
            ]),
        ),
        (
            "forwarding on failure: nobody registered forwards",
            sip_to("+13122000009"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![forward("+13122009999")]),
        ),
        (
            "forwarding on failure: no IPs forwards",
            sip_to("+13122000010"),
            CARRIER_IP,
            &nobody,
            Expect::Routes(vec![forward("+13122009999")]),
        ),
    ];
    for (name, ruri, source, registrations, expect) in rows {
        let msg = carrier_invite(&ruri, "+13122001234", "");
        let (decision, trace) = decide_once(&config, &msg, source, registrations, 0);
        match (decision, expect) {
            (InboundDecision::Route(call), Expect::Routes(routes)) => {
                assert_eq!(call.routes, routes, "{name}: {trace:#?}");
                assert!(trace.failed().is_none(), "{name}: {trace:#?}");
                assert_eq!(call.carrier_id, "carrier-in", "{name}");
            }
            (InboundDecision::Reject(r), Expect::Reject(want)) => {
                assert_eq!(r, want, "{name}: {trace:#?}");
                assert_eq!(trace.failed().map(|s| s.rule), Some(rule_of(want)), "{name}: {trace:#?}");
            }
            (got, want) => panic!("{name}: {got:?}, expected {want:?}: {trace:#?}"),
        }
    }
}

#[test]
fn the_checks_run_in_order() {
    // An unknown source is refused before its number is even read; an inactive connection
    // without IPs answers D18, not D40.
    let config = origination_with(|cs| {
        let off = cs.iter_mut().find(|c| c.id.as_ref() == "pbx-off").expect("pbx-off");
        off.inbound.delivery = InboundDelivery::Ips(HostTargets::listed(vec![]));
    });
    let (d, trace) = decide_once(&config, &carrier_invite(&sip_to("+1"), "x", ""), "192.0.2.1", &NoRegistrations, 0);
    assert_eq!(d, InboundDecision::Reject(Reason::D27));
    assert!(!trace.has("inbound.number"));
    let (d, _) =
        decide_once(&config, &carrier_invite(&sip_to("+13122000006"), "x", ""), CARRIER_IP, &NoRegistrations, 0);
    assert_eq!(d, InboundDecision::Reject(Reason::D18));
    let names: Vec<&str> = INBOUND_CHECKS.iter().map(|(rule, _)| *rule).collect();
    let msg = carrier_invite(&sip_to("+13122000001"), "x", "");
    let (_, trace) = decide_once(&config, &msg, CARRIER_IP, &NoRegistrations, 0);
    let checked: Vec<&str> = trace.steps().map(|s| s.rule).filter(|r| names.contains(r)).collect();
    assert_eq!(checked, names, "every check, once, in the table's order");
    for (rule, reasons) in INBOUND_CHECKS {
        assert!(rule.starts_with("inbound."));
        for r in *reasons {
            assert!(r.response().status >= 400, "{rule}: {r:?}");
        }
    }
    assert_eq!(Reason::D21.response().status, 480);
    assert_eq!(Reason::RG1.response().phrase, "User not registered RG1");
}

#[test]
fn sequential_and_round_robin_orders() {
    let config = origination();
    let msg = carrier_invite(&sip_to("+13122000002"), "+13122001234", "");
    let orders: Vec<Vec<InboundRoute>> = (0..4).map(|rotation| routed_call(&config, &msg, rotation).routes).collect();
    let [a, b, c] = [ip_route("10.0.1.1"), ip_route("10.0.1.2"), ip_route("10.0.1.3")];
    assert_eq!(orders[0], vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(orders[1], vec![b.clone(), c.clone(), a.clone()], "IP 2 first, then IP 3, then IP 1");
    assert_eq!(orders[2], vec![c.clone(), a.clone(), b.clone()]);
    assert_eq!(orders[3], orders[0], "the cycle repeats");

    // Sequential: the designated primary and secondary, whatever the rotation.
    let msg = carrier_invite(&sip_to("+13122000001"), "+13122001234", "");
    for rotation in 0..3 {
        assert_eq!(routed_call(&config, &msg, rotation).routes, vec![ip_route("10.0.0.3"), ip_route("10.0.0.1")]);
    }
    // Without designations, every IP in listed order.
    let config = origination_with(|cs| {
        let c = cs.iter_mut().find(|c| c.id.as_ref() == "pbx-ip").expect("pbx-ip");
        c.inbound.delivery = InboundDelivery::Ips(HostTargets::listed(ip_targets(&["10.0.0.1", "10.0.0.2"])));
    });
    assert_eq!(routed_call(&config, &msg, 1).routes, vec![ip_route("10.0.0.1"), ip_route("10.0.0.2")]);

    // Round robin over contacts of equal q.
    let config = origination_with(|cs| {
        let c = cs.iter_mut().find(|c| c.id.as_ref() == "pbx-cred").expect("pbx-cred");
        c.inbound.routing = GatewayOrder::RoundRobin;
    });
    let two = registered(&[("sip:a@10.9.0.1", None, 1_000), ("sip:b@10.9.0.2", None, 1_000)]);
    let msg = carrier_invite(&sip_to("+13122000004"), "+13122001234", "");
    let firsts: Vec<InboundRoute> = (0..2)
        .map(|rotation| {
            let (d, trace) = decide_once(&config, &msg, CARRIER_IP, &two, rotation);
            routed(d, &trace).routes[0].clone()
        })
        .collect();
    assert_eq!(firsts, vec![contact("sip:a@10.9.0.1"), contact("sip:b@10.9.0.2")]);
}

fn routed_call(config: &Config, msg: &Message, rotation: u64) -> InboundCall {
    let (d, trace) = decide_once(config, msg, CARRIER_IP, &NoRegistrations, rotation);
    routed(d, &trace)
}

#[test]
fn the_call_carries_the_connection_settings() {
    let config = origination();
    let pai = "P-Asserted-Identity: <sip:+13122001234@carrier.example.net>\r\n\
               P-Asserted-Identity: <tel:+13122001234>\r\n";
    let msg = carrier_invite(&sip_to("+13122000001"), "+13122001234", pai);
    let call = routed_call(&config, &msg, 0);
    assert_eq!((call.account_id.as_ref(), call.connection_id.as_ref()), ("acc-a", "pbx-ip"));
    assert_eq!(call.number.as_str(), "+13122000001");
    assert_eq!(call.caller.map(|c| c.to_string()).as_deref(), Some("+13122001234"));
    assert_eq!(call.p_asserted_identity, vec!["<sip:+13122001234@carrier.example.net>", "<tel:+13122001234>"]);
    assert_eq!((call.timeout_1xx, call.timeout_2xx), (Duration::from_secs(10), Duration::from_secs(20)));
    // Inbound calls count on their own counters: the account's limit (1, outbound) is not theirs.
    assert_eq!(call.channels.account, (format!("{INBOUND_COUNTER_PREFIX}acc-a").into(), None));
    assert_eq!(call.channels.connection, (format!("{INBOUND_COUNTER_PREFIX}pbx-ip").into(), Some(7)));
    assert_eq!(call.channels.profile, None);
    assert_eq!((call.forwarding, call.simultaneous_ringing), (None, false));

    // The contract's defaults; no P-Asserted-Identity to pass on.
    let call = routed_call(&config, &carrier_invite(&sip_to("+13122000002"), "+13122001234", ""), 0);
    assert_eq!((call.timeout_1xx, call.timeout_2xx), (Duration::from_secs(3), Duration::from_secs(90)));
    assert_eq!(call.channels.connection.1, None);
    assert!(call.p_asserted_identity.is_empty());

    // Simultaneous ringing is a property of registered contacts; forwarding is named.
    let two = registered(&[("sip:a@10.9.0.1", None, 1_000)]);
    let msg = carrier_invite(&sip_to("+13122000009"), "+13122001234", "");
    let (d, trace) = decide_once(&config, &msg, CARRIER_IP, &two, 0);
    let call = routed(d, &trace);
    assert_eq!((call.forwarding, call.simultaneous_ringing), (Some(ForwardingType::OnFailure), true));
    let call = routed_call(&config, &carrier_invite(&sip_to("+13122000008"), "+13122001234", ""), 0);
    assert_eq!(call.forwarding, Some(ForwardingType::Always));
}

#[test]
fn number_formats() {
    // (caller as sent, ani format, expected ANI)
    let ani_rows = [
        ("+13122001234", AniFormat::PlusE164, "+13122001234"),
        ("+13122001234", AniFormat::E164, "13122001234"),
        ("+13122001234", AniFormat::PlusE164National, "3122001234"),
        ("+13122001234", AniFormat::E164National, "3122001234"),
        // Read in the called number's country: national, and E.164 without its +.
        ("3122001234", AniFormat::PlusE164, "+13122001234"),
        ("442079460000", AniFormat::PlusE164, "+442079460000"),
        // From abroad, the national forms keep the country code.
        ("+442079460000", AniFormat::PlusE164National, "+442079460000"),
        ("+442079460000", AniFormat::E164National, "442079460000"),
        // No number: passed on as sent.
        ("anonymous", AniFormat::PlusE164, "anonymous"),
    ];
    for (from, format, want) in ani_rows {
        let config = origination_with(|cs| {
            cs.iter_mut().find(|c| c.id.as_ref() == "pbx-ip").expect("pbx-ip").ani_number_format = format;
        });
        let call = routed_call(&config, &carrier_invite(&sip_to("+13122000001"), from, ""), 0);
        assert_eq!(call.ani, want, "{from} as {format}");
    }
    // P-Asserted-Identity outranks From for the caller's number.
    let config = origination_with(|cs| {
        cs.iter_mut().find(|c| c.id.as_ref() == "pbx-ip").expect("pbx-ip").ani_number_format = AniFormat::PlusE164;
    });
    let msg =
        carrier_invite(&sip_to("+13122000001"), "anonymous", "P-Asserted-Identity: <sip:+13122005555@c.example>\r\n");
    assert_eq!(routed_call(&config, &msg, 0).ani, "+13122005555");

    // (connection, called, dnis format, expected DNIS)
    let dnis_rows = [
        ("pbx-ip", "+13122000001", DnisFormat::PlusE164, "+13122000001"),
        ("pbx-ip", "+13122000001", DnisFormat::E164, "13122000001"),
        ("pbx-ip", "+13122000001", DnisFormat::National, "3122000001"),
        ("pbx-ip", "+442079460001", DnisFormat::National, "02079460001"),
        // No SIP user name on an IP connection: the default.
        ("pbx-ip", "+13122000001", DnisFormat::SipUsername, "13122000001"),
        ("pbx-cred", "+13122000004", DnisFormat::SipUsername, "alice"),
    ];
    let one = registered(&[("sip:alice@10.9.0.1", None, 1_000)]);
    for (conn, called, format, want) in dnis_rows {
        let config = origination_with(|cs| {
            cs.iter_mut().find(|c| c.id.as_ref() == conn).expect("the connection").dnis_number_format = format;
        });
        let (d, trace) =
            decide_once(&config, &carrier_invite(&sip_to(called), "+13122001234", ""), CARRIER_IP, &one, 0);
        assert_eq!(routed(d, &trace).dnis, want, "{called} as {format}");
    }
}

#[test]
fn carrier_blocks() {
    for (block, inside, outside) in [
        ("203.0.113.0/24", "203.0.113.255", "203.0.114.0"),
        ("203.0.113.9/24", "203.0.113.1", "203.0.112.255"),
        ("0.0.0.0/0", "8.8.8.8", "::1"),
        ("192.0.2.7", "192.0.2.7", "192.0.2.8"),
        ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::1"),
        ("::ffff:192.0.2.7", "192.0.2.7", "192.0.2.6"),
    ] {
        let b = IpBlock::parse(block).expect(block);
        assert!(b.contains(ip(inside)), "{block} holds {inside}");
        assert!(!b.contains(ip(outside)), "{block} does not hold {outside}");
    }
    assert!(IpBlock::parse("::ffff:192.0.2.7").expect("mapped").contains(ip("::ffff:192.0.2.7")));
    for bad in ["", "192.0.2.1/33", "2001:db8::/129", "192.0.2.1/", "192.0.2.1/x", "host.example", "192.0.2/24"] {
        assert_eq!(IpBlock::parse(bad), None, "{bad}");
    }
    // The most specific block wins; a single address before any block.
    let mut wide = carrier("wide", 1, &[]);
    wide.inbound_ips = vec!["10.0.0.0/8".into()];
    let mut narrow = carrier("narrow", 2, &[]);
    narrow.inbound_ips = vec!["10.1.0.0/16".into()];
    let mut single = carrier("single", 3, &[]);
    single.inbound_ips = vec!["10.1.2.3".into()];
    let config = Config::builder(PLAN.clone()).carrier(wide).carrier(narrow).carrier(single).build();
    let at = |s: &str| config.carrier_at(ip(s)).map(|c| c.id.as_str());
    assert_eq!(at("10.9.9.9"), Some("wide"));
    assert_eq!(at("10.1.9.9"), Some("narrow"));
    assert_eq!(at("10.1.2.3"), Some("single"));
    assert_eq!(at("11.0.0.1"), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the called user, caller, source, registrations and rotation, the decision is
    /// total (no panic), a refusal names a failed check of the table, and a route has a step.
    #[test]
    fn inbound_decisions_are_total(
        called in prop_oneof!["\\+?1312200000[0-9]{1,2}", "[0-9+a-z]{0,16}"],
        from in "[0-9+a-z]{1,16}",
        source in prop::sample::select(vec![CARRIER_IP, CARRIER_BLOCK_IP, "192.0.2.1", "192.0.2.200", "2001:db8:c::9"]),
        contacts in prop::collection::vec((0u16..1200, 0u64..5), 0..4),
        rotation in 0u64..1000,
    ) {
        let config = origination();
        let user = if called.is_empty() { "x".to_owned() } else { called };
        let Ok(msg) = std::panic::catch_unwind(|| carrier_invite(&sip_to(&user), &from, "")) else {
            return Ok(()); // not a SIP message this fixture can write
        };
        let list: Vec<(String, Option<u16>, u64)> =
            contacts.iter().enumerate().map(|(i, (q, at))| (format!("sip:d{i}@10.9.0.{i}"), Some(*q), *at)).collect();
        let refs: Vec<(&str, Option<u16>, u64)> = list.iter().map(|(u, q, at)| (u.as_str(), *q, *at)).collect();
        let registrations = registered(&refs);
        let (decision, trace) = decide_once(&config, &msg, source, &registrations, rotation);
        match decision {
            InboundDecision::Route(call) => {
                prop_assert!(trace.failed().is_none());
                prop_assert!(!call.routes.is_empty());
            }
            InboundDecision::Reject(r) => {
                let failed = trace.failed().map(|s| s.rule);
                prop_assert_eq!(failed, Some(rule_of(r)), "{:?}: {:#?}", r, trace);
            }
        }
    }
}

/// (subdomain label, caller, over TLS, the first route's host or the refusal)
type SubdomainRow = (&'static str, Option<trunking::config::ConnectionRef>, bool, Result<&'static str, Reason>);

/// Calls to a connection's SIP subdomain (`trunking::subdomain`), each caller and setting.
#[test]
fn sip_subdomain_table() {
    use trunking::subdomain::{SubdomainDecision, SubdomainRequest, decide, subdomain_of};
    let config = origination_with(|cs| {
        cs[0].inbound.sip_subdomain = Some("acme".into()); // pbx-ip, only its account's callers
        cs[1].inbound.sip_subdomain = Some("open".into()); // pbx-rr, from anyone
        cs[1].inbound.subdomain_from_anyone = true;
        cs[5].inbound.sip_subdomain = Some("dark".into()); // pbx-off, inactive
    });
    let same_account = config.connection_by_id("pbx-fqdn");
    let domain = config.uri_calling().domain.to_string();
    let none = HashMap::<&str, Vec<RegisteredContact>>::new();
    // (Request-URI host, caller, over TLS, outcome: routes' first host or the refusal)
    let rows: &[SubdomainRow] = &[
        ("acme", same_account, false, Ok("10.0.0.3")),
        ("ACME", same_account, false, Ok("10.0.0.3")),
        ("acme", None, false, Err(Reason::D31)),
        ("open", None, false, Ok("10.0.1.1")),
        ("open", None, true, Err(Reason::D31)),
        ("nobody", same_account, false, Err(Reason::D31)),
        ("dark", same_account, false, Err(Reason::D18)),
    ];
    for (label, caller, over_tls, want) in rows {
        let msg = carrier_invite(&format!("sip:reception@{label}.{domain}"), "+13125550100", "");
        assert_eq!(subdomain_of(&config, &msg).as_deref(), Some(*label));
        let request =
            SubdomainRequest { message: &msg, caller: *caller, over_tls: *over_tls, registered: &none, rotation: 0 };
        let mut trace = Trace::new();
        match (decide(&config, &request, &mut trace), want) {
            (SubdomainDecision::Route(call), Ok(host)) => {
                assert_eq!(call.user, "reception");
                assert!(matches!(&call.routes[0], InboundRoute::Ip { host: h, .. } if h == host), "{label}: {call:?}");
            }
            (SubdomainDecision::Reject(r), Err(w)) => assert_eq!(r, *w, "{label}"),
            (other, want) => panic!("{label} caller {caller:?} tls {over_tls}: {other:?}, want {want:?}"),
        }
    }
    // Neither the domain itself nor a deeper name, nor another domain, is a subdomain call.
    for ruri in [format!("sip:alice@{domain}"), format!("sip:x@a.b.{domain}"), "sip:x@acme.example.com".to_owned()] {
        let msg = carrier_invite(&ruri, "+13125550100", "");
        assert_eq!(subdomain_of(&config, &msg), None, "{ruri}");
    }
}
