//! SIP URI calling, table-driven: every `sip_uri_calling_preference` against every kind of
//! caller (a connection of the same account, another account's connection, a caller from
//! outside), then what is no URI call at all (numbers, digit-first user names, other hosts),
//! unknown users, and a user with nothing registered. Each refusal must be explained by the
//! check of [`URI_CALL_CHECKS`] that answers it.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::time::Duration;

use fixture::*;
use rust_decimal::Decimal;
use sip::{Framing, Message};
use trunking::Reason;
use trunking::config::{
    Account, Config, ConfigBuilder, Connection, ConnectionKind, ConnectionRef, INBOUND_COUNTER_PREFIX, InboundDelivery,
    SipUriCalling, UriCallingSettings,
};
use trunking::digest::StoredDigest;
use trunking::inbound::{InboundRoute, NoRegistrations, Registrations};
use trunking::routing::{GatewayOrder, RegisteredContact};
use trunking::time::Timestamp;
use trunking::trace::{Trace, Verdict};
use trunking::uri_calling::{
    Callee, URI_CALL_CHECKS, UriCall, UriCallDecision, UriCallRequest, UriCaller, callee, decide,
};

const DOMAIN: &str = "sip.acme-voice.example";
/// The switch's own address, written by devices that registered to it by address.
const OWN_IP: &str = "192.0.2.99";
const OWN_IP6: &str = "2001:db8::99";

/// A credential connection of `account` with user name `user` and `preference`.
fn credential(id: &str, account: &str, user: &str, preference: SipUriCalling) -> Connection {
    let mut c = ip_connection(id, account, &[]);
    c.kind = ConnectionKind::Credential;
    c.inbound.delivery = InboundDelivery::Registrations;
    c.inbound.sip_uri_calling = preference;
    c.credentials = Some((user.into(), StoredDigest::from_password(user, REALM, "secret123")));
    c
}

/// The platform: acc-a has `alice` (unrestricted, ringing everywhere, limits set), `bob`
/// (internal), `carol` (disabled), `dave` (unrestricted, never registered), `erin`
/// (unrestricted, inactive), `1234abc` (unrestricted: a digit-first name) and an FQDN
/// connection authenticating by digest as `frank` (unrestricted, but no credential
/// connection); its PBX `pbx-a` calls out; acc-b's PBX is `pbx-b`.
fn uri_platform(settings: UriCallingSettings) -> Config {
    let mut alice = credential("alice-conn", "acc-a", "alice", SipUriCalling::Unrestricted);
    alice.inbound.channel_limit = Some(4);
    alice.inbound.timeout_1xx_secs = 7;
    alice.inbound.timeout_2xx_secs = 45;
    alice.inbound.simultaneous_ringing = true;
    let bob = credential("bob-conn", "acc-a", "bob", SipUriCalling::Internal);
    let carol = credential("carol-conn", "acc-a", "carol", SipUriCalling::Disabled);
    let dave = credential("dave-conn", "acc-a", "dave", SipUriCalling::Unrestricted);
    let mut erin = credential("erin-conn", "acc-a", "erin", SipUriCalling::Unrestricted);
    erin.active = false;
    let digits = credential("digits-conn", "acc-a", "1234abc", SipUriCalling::Unrestricted);
    let mut frank = credential("frank-conn", "acc-a", "frank", SipUriCalling::Unrestricted);
    frank.kind = ConnectionKind::Fqdn;

    let account =
        |id: &str| Account { id: id.into(), enabled: true, concurrent_call_limit: Some(3), rate_deck_id: None };
    let mut b: ConfigBuilder =
        Config::builder(PLAN.clone()).account(account("acc-a")).account(account("acc-b")).uri_calling(settings);
    for c in [
        alice,
        bob,
        carol,
        dave,
        erin,
        digits,
        frank,
        ip_connection("pbx-a", "acc-a", &["192.0.2.10"]),
        ip_connection("pbx-b", "acc-b", &["192.0.2.20"]),
    ] {
        b = b.connection(c);
    }
    b.build()
}

fn settings() -> UriCallingSettings {
    UriCallingSettings {
        domain: DOMAIN.into(),
        equivalent_hosts: vec![OWN_IP.into(), format!("[{OWN_IP6}]").into(), "edge.acme-voice.example.".into()],
        ..UriCallingSettings::default()
    }
}

/// Every connection registered at two contacts, except `dave` (never registered).
fn registrations() -> HashMap<String, Vec<RegisteredContact>> {
    let contacts = |user: &str| {
        vec![
            RegisteredContact { uri: format!("sip:{user}@10.9.0.1:5062"), q: Some(500), registered_at: Timestamp(1) },
            RegisteredContact { uri: format!("sip:{user}@10.9.0.2:5060"), q: None, registered_at: Timestamp(2) },
        ]
    };
    [
        ("alice-conn", "alice"),
        ("bob-conn", "bob"),
        ("carol-conn", "carol"),
        ("erin-conn", "erin"),
        ("digits-conn", "1234abc"),
        ("frank-conn", "frank"),
    ]
    .into_iter()
    .map(|(conn, user)| (conn.to_owned(), contacts(user)))
    .collect()
}

/// An INVITE to the whole Request-URI `ruri`.
fn invite_to(ruri: &str) -> Message {
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <{ruri}>\r\n\
         From: \"Caller\" <sip:someone@elsewhere.example>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@elsewhere.example\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:someone@203.0.113.5:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

fn uri(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}

fn caller(config: &Config, id: Option<&str>) -> Option<ConnectionRef> {
    id.map(|id| config.connection_by_id(id).expect("the caller's connection"))
}

fn decide_once(
    config: &Config,
    ruri: &str,
    from: Option<&str>,
    registered: &dyn Registrations,
) -> (UriCallDecision, Trace) {
    let msg = invite_to(ruri);
    let mut trace = Trace::new();
    let req = UriCallRequest { message: &msg, caller: caller(config, from), registered, rotation: 0 };
    (decide(config, &req, &mut trace), trace)
}

/// The check of [`URI_CALL_CHECKS`] that answers `reason`; the refusal must be its failure.
fn assert_explained(reason: Reason, trace: &Trace, row: &str) {
    let failed = trace.failed().unwrap_or_else(|| panic!("{row}: refused without a failed rule: {trace:#?}"));
    let (_, reasons) = URI_CALL_CHECKS
        .iter()
        .find(|(rule, _)| *rule == failed.rule)
        .unwrap_or_else(|| panic!("{row}: {} is no URI calling check", failed.rule));
    assert!(reasons.contains(&reason), "{row}: {} does not answer {reason:?}", failed.rule);
}

fn routed(decision: UriCallDecision, trace: &Trace, row: &str) -> UriCall {
    match decision {
        UriCallDecision::Route(call) => {
            assert!(trace.failed().is_none(), "{row}: {trace:#?}");
            *call
        }
        other => panic!("{row}: {other:?}: {trace:#?}"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Routed, with the caller as billing sees it and the per-minute rate.
    Route(UriCaller, Option<Decimal>),
    Reject(Reason),
}

fn rate(s: &str) -> Option<Decimal> {
    Some(decimal(s))
}

#[test]
fn every_preference_against_every_caller() {
    let config = uri_platform(settings());
    let reg = registrations();
    let same = || UriCaller::SameAccount { connection_id: "pbx-a".into() };
    let other = || UriCaller::OtherAccount { account_id: "acc-b".into(), connection_id: "pbx-b".into() };
    let rows: Vec<(&str, &str, Option<&str>, Outcome)> = vec![
        ("unrestricted, same account", "alice", Some("pbx-a"), Outcome::Route(same(), None)),
        ("unrestricted, other account", "alice", Some("pbx-b"), Outcome::Route(other(), None)),
        ("unrestricted, outside", "alice", None, Outcome::Route(UriCaller::Unidentified, rate("0.002"))),
        ("internal, same account", "bob", Some("pbx-a"), Outcome::Route(same(), None)),
        ("internal, other account", "bob", Some("pbx-b"), Outcome::Reject(Reason::D30)),
        ("internal, outside", "bob", None, Outcome::Reject(Reason::D30)),
        ("disabled, same account", "carol", Some("pbx-a"), Outcome::Reject(Reason::D30)),
        ("disabled, other account", "carol", Some("pbx-b"), Outcome::Reject(Reason::D30)),
        ("disabled, outside", "carol", None, Outcome::Reject(Reason::D30)),
        // A connection calling its own user name is within its account.
        (
            "internal, from a credential connection of the account",
            "bob",
            Some("alice-conn"),
            Outcome::Route(UriCaller::SameAccount { connection_id: "alice-conn".into() }, None),
        ),
    ];
    for (row, user, from, expected) in rows {
        let (decision, trace) = decide_once(&config, &uri(user), from, &reg);
        let outcome = match &decision {
            UriCallDecision::Route(call) => {
                assert_eq!(call.connection_id.as_ref(), format!("{user}-conn"), "{row}");
                assert_eq!(call.account_id.as_ref(), "acc-a", "{row}");
                assert_eq!(call.user, user, "{row}");
                assert!(trace.failed().is_none(), "{row}: {trace:#?}");
                Outcome::Route(call.caller.clone(), call.rate)
            }
            UriCallDecision::Reject(r) => {
                assert_explained(*r, &trace, row);
                assert_eq!(trace.failed().map(|s| s.rule), Some("uri_call.preference"), "{row}");
                Outcome::Reject(*r)
            }
            UriCallDecision::NotUriCall => panic!("{row}: no URI call"),
        };
        assert_eq!(outcome, expected, "{row}: {trace:#?}");
    }
}

#[test]
fn what_is_no_uri_call_and_what_is_refused() {
    let config = uri_platform(settings());
    let reg = registrations();
    let nobody = NoRegistrations;
    #[derive(Debug)]
    enum Expect {
        NotUriCall,
        Reject(Reason),
        RouteTo(&'static str),
    }
    let rows: Vec<(&str, String, &dyn Registrations, Expect)> = vec![
        // Digit-first names are numbers, even one a credential connection has.
        ("a digit-first user name", uri("1234abc"), &reg, Expect::NotUriCall),
        ("a number", uri("13125550100"), &reg, Expect::NotUriCall),
        ("an E.164 number", uri("+13125550100"), &reg, Expect::NotUriCall),
        ("a plus first", uri("+alice"), &reg, Expect::NotUriCall),
        ("user=phone", format!("sip:alice@{DOMAIN};user=phone"), &reg, Expect::NotUriCall),
        ("no user part", format!("sip:{DOMAIN}"), &reg, Expect::NotUriCall),
        ("a tel URI", "tel:+13125550100".into(), &reg, Expect::NotUriCall),
        ("another domain", "sip:alice@sip.elsewhere.example".into(), &reg, Expect::NotUriCall),
        ("a subdomain of ours", format!("sip:alice@pbx.{DOMAIN}"), &reg, Expect::NotUriCall),
        ("another address", "sip:alice@192.0.2.98".into(), &reg, Expect::NotUriCall),
        // Our hosts, however written.
        ("the domain", uri("alice"), &reg, Expect::RouteTo("alice-conn")),
        ("the domain in capitals, a final dot", format!("sip:alice@{}.", DOMAIN.to_uppercase()), &reg, {
            Expect::RouteTo("alice-conn")
        }),
        ("with a port", format!("sip:alice@{DOMAIN}:5080"), &reg, Expect::RouteTo("alice-conn")),
        ("sips", format!("sips:alice@{DOMAIN}"), &reg, Expect::RouteTo("alice-conn")),
        ("our address", format!("sip:alice@{OWN_IP}"), &reg, Expect::RouteTo("alice-conn")),
        ("our IPv6 address", format!("sip:alice@[{OWN_IP6}]"), &reg, Expect::RouteTo("alice-conn")),
        ("our advertised host", "sip:alice@EDGE.acme-voice.example".into(), &reg, Expect::RouteTo("alice-conn")),
        ("an escaped user name", uri("%61lice"), &reg, Expect::RouteTo("alice-conn")),
        ("user parameters", uri("alice;ext=1"), &reg, Expect::RouteTo("alice-conn")),
        // Names the platform does not know: the same answer as `disabled`.
        ("an unknown user", uri("zoe"), &reg, Expect::Reject(Reason::D30)),
        ("user names compare exactly", uri("Alice"), &reg, Expect::Reject(Reason::D30)),
        ("an FQDN connection's digest user", uri("frank"), &reg, Expect::Reject(Reason::D30)),
        // Admitted, then the connection and its contacts.
        ("an inactive connection", uri("erin"), &reg, Expect::Reject(Reason::D18)),
        ("never registered", uri("dave"), &reg, Expect::Reject(Reason::RG1)),
        ("nothing registered anywhere", uri("alice"), &nobody, Expect::Reject(Reason::RG1)),
    ];
    for (row, ruri, registered, expected) in rows {
        let (decision, trace) = decide_once(&config, &ruri, None, registered);
        match (&decision, &expected) {
            (UriCallDecision::NotUriCall, Expect::NotUriCall) => {
                assert!(trace.failed().is_none(), "{row}");
                assert_eq!(trace.get("uri_call.request_uri").map(|s| s.verdict), Some(Verdict::Skip), "{row}");
                assert_eq!(callee(&config, &invite_to(&ruri)), Callee::NotUriCall, "{row}");
            }
            (UriCallDecision::Reject(r), Expect::Reject(want)) if r == want => assert_explained(*r, &trace, row),
            (UriCallDecision::Route(call), Expect::RouteTo(conn)) => {
                assert_eq!(call.connection_id.as_ref(), *conn, "{row}");
                assert!(trace.failed().is_none(), "{row}");
            }
            _ => panic!("{row}: expected {expected:?}, got {decision:?}: {trace:#?}"),
        }
    }
}

#[test]
fn a_routed_call_carries_the_contacts_limits_and_timeouts() {
    let config = uri_platform(settings());
    let (decision, trace) = decide_once(&config, &uri("alice"), None, &registrations());
    let call = routed(decision, &trace, "alice from outside");
    // Highest q first (no q is 1.0), every contact rung at once.
    assert_eq!(
        call.routes,
        vec![
            InboundRoute::Contact { uri: "sip:alice@10.9.0.2:5060".into() },
            InboundRoute::Contact { uri: "sip:alice@10.9.0.1:5062".into() },
        ]
    );
    assert!(call.simultaneous_ringing);
    assert_eq!(call.preference, SipUriCalling::Unrestricted);
    assert_eq!(call.timeout_1xx, Duration::from_secs(7));
    assert_eq!(call.timeout_2xx, Duration::from_secs(45));
    // The callee's inbound counters, as for a call to one of its numbers; no account limit.
    assert_eq!(call.channels.connection, (format!("{INBOUND_COUNTER_PREFIX}alice-conn").into(), Some(4)));
    assert_eq!(call.channels.account, (format!("{INBOUND_COUNTER_PREFIX}acc-a").into(), None));
    assert_eq!(call.channels.profile, None);
    // The rate is on record with whom it bills.
    let billed = trace.get("uri_call.rate").expect("the rate step");
    assert_eq!(billed.fact("billed_account").and_then(|v| v.as_str()), Some("acc-a"));

    // Defaults: contract timeouts, no simultaneous ringing; round-robin starts where rotated.
    let mut other = uri_platform(settings());
    let (decision, trace) = decide_once(&other, &uri("bob"), Some("pbx-a"), &registrations());
    let call = routed(decision, &trace, "bob");
    assert!(!call.simultaneous_ringing);
    assert_eq!((call.timeout_1xx, call.timeout_2xx), (Duration::from_secs(3), Duration::from_secs(90)));
    assert_eq!(call.channels.connection.1, None);

    other = {
        let mut bob = credential("bob-conn", "acc-a", "bob", SipUriCalling::Unrestricted);
        bob.inbound.routing = GatewayOrder::RoundRobin;
        Config::builder(PLAN.clone()).uri_calling(settings()).connection(bob).build()
    };
    // Round-robin rotates among contacts of equal q.
    let equal: HashMap<&str, Vec<RegisteredContact>> = HashMap::from([(
        "bob-conn",
        ["sip:bob@10.9.0.1:5060", "sip:bob@10.9.0.2:5060"]
            .map(|uri| RegisteredContact { uri: uri.into(), q: None, registered_at: Timestamp(1) })
            .to_vec(),
    )]);
    let starts: Vec<String> = (0..4)
        .map(|rotation| {
            let msg = invite_to(&uri("bob"));
            let reg = &equal;
            let req = UriCallRequest { message: &msg, caller: None, registered: reg, rotation };
            match decide(&other, &req, &mut Trace::new()) {
                UriCallDecision::Route(call) => match &call.routes[0] {
                    InboundRoute::Contact { uri } => uri.clone(),
                    r => panic!("{r:?}"),
                },
                d => panic!("{d:?}"),
            }
        })
        .collect();
    assert_ne!(starts[0], starts[1], "round-robin rotates the first contact");
    assert_eq!((&starts[0], &starts[1]), (&starts[2], &starts[3]));
}

#[test]
fn the_operator_sets_the_domain_and_the_unidentified_source_rate() {
    // Defaults: the product's 0.002 per minute at sip.opentrunk.local.
    let defaults = Config::builder(PLAN.clone()).build();
    assert_eq!(defaults.uri_calling().domain.as_ref(), "sip.opentrunk.local");
    assert_eq!(defaults.uri_calling().unidentified_source_rate, decimal("0.002"));
    assert_eq!(UriCallingSettings::DEFAULT_UNIDENTIFIED_SOURCE_RATE, decimal("0.002"));

    let alice = || credential("alice-conn", "acc-a", "alice", SipUriCalling::Unrestricted);
    let config = Config::builder(PLAN.clone())
        .connection(alice())
        .sip_domain("voice.example.org")
        .unidentified_source_rate(decimal("0.0150"))
        .build();
    let reg = registrations();
    let (decision, trace) = decide_once(&config, "sip:alice@voice.example.org", None, &reg);
    assert_eq!(routed(decision, &trace, "the operator's domain").rate, rate("0.0150"));
    // The default domain is no longer ours.
    let (decision, _) = decide_once(&config, "sip:alice@sip.opentrunk.local", None, &reg);
    assert_eq!(decision, UriCallDecision::NotUriCall);

    let config = Config::builder(PLAN.clone()).connection(alice()).build();
    let (decision, trace) = decide_once(&config, "sip:alice@sip.opentrunk.local", None, &reg);
    assert_eq!(routed(decision, &trace, "the default domain").rate, rate("0.002"));
}

#[test]
fn callee_tells_the_engine_whether_to_identify() {
    let config = uri_platform(settings());
    let callee_of = |user: &str| callee(&config, &invite_to(&uri(user)));
    for (user, preference) in
        [("alice", SipUriCalling::Unrestricted), ("bob", SipUriCalling::Internal), ("carol", SipUriCalling::Disabled)]
    {
        match callee_of(user) {
            Callee::Connection { user: u, connection, preference: p } => {
                assert_eq!((u.as_str(), p), (user, preference));
                assert_eq!(config.connection(connection).id.as_ref(), format!("{user}-conn"));
            }
            other => panic!("{user}: {other:?}"),
        }
    }
    assert_eq!(callee_of("zoe"), Callee::Unknown { user: "zoe".into() });
    assert_eq!(callee_of("1234abc"), Callee::NotUriCall);
}

#[test]
fn preference_tokens_are_the_contracts() {
    for (token, p) in [
        ("disabled", SipUriCalling::Disabled),
        ("internal", SipUriCalling::Internal),
        ("unrestricted", SipUriCalling::Unrestricted),
    ] {
        assert_eq!(SipUriCalling::from_token(token), Some(p));
        assert_eq!(p.as_str(), token);
    }
    assert_eq!(SipUriCalling::from_token("everyone"), None);
    assert_eq!(SipUriCalling::default(), SipUriCalling::Disabled);
}
