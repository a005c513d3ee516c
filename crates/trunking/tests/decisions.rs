//! Identification and the outbound decision, table-driven: each row is one request against the
//! fixture platform and the outcome the product documentation gives it, with the trace step
//! that must explain it.

#[path = "support/fixture.rs"]
mod fixture;

use fixture::*;
use proptest::prelude::*;
use sip::Message;
use trunking::Reason;
use trunking::config::{CallingWindow, Config};
use trunking::digest::{self, ReplayGuard};
use trunking::identify::{AuthMethod, CallFacts, IP_TOKEN_BEHAVIOUR, Identification, Identified, identify};
use trunking::outbound::{Caller, OUTBOUND_CHECKS, OutboundDecision, OutboundRequest, decide};
use trunking::trace::{Trace, Verdict};

/// What identification must decide.
#[derive(Debug, PartialEq)]
enum Expect {
    Identified(&'static str, AuthMethod),
    Challenge,
    Rejected(Reason),
}

fn identify_once(config: &Config, msg: &Message, source: &str) -> (Identification, Trace) {
    let facts = CallFacts::of(msg, ip(source));
    let mut trace = Trace::new();
    let mut guard = ReplayGuard::default();
    (identify(config, &facts, &realm(), &mut guard, NOON, &mut trace), trace)
}

fn outcome(config: &Config, id: Identification) -> Expect {
    match id {
        Identification::Identified(i) => {
            Expect::Identified(Box::leak(config.connection(i.connection).id.to_string().into_boxed_str()), i.method)
        }
        Identification::Challenge { .. } => Expect::Challenge,
        Identification::Rejected(r) => Expect::Rejected(r),
    }
}

/// A `Proxy-Authorization` for `user`/`password` answering a fresh challenge of the realm.
fn credentials(user: &str, password: &str) -> String {
    let challenge = realm().challenges(NOON, false).into_iter().find(|c| c.contains("MD5")).expect("an MD5 challenge");
    let auth = sip::Auth::parse(&challenge).expect("a challenge");
    let value =
        digest::authorization(&auth, "INVITE", "sip:+13125550199@sip.opentrunk.test", user, password, "0a4f113b", 1)
            .expect("an answer");
    format!("Proxy-Authorization: {value}\r\n")
}

#[test]
fn identification_table() {
    let config = platform();
    let good = credentials("alice", "secret123");
    let bad = credentials("alice", "wrong-password");
    let stranger = credentials("mallory", "secret123");
    let token = format!("X-Telnyx-Token: {TOKEN}\r\n");
    let rows: Vec<(&str, &str, String, &str, Expect)> = vec![
        // Credentials (Authentication: credential-based).
        (
            "digest: no credentials yet",
            "+13125550199",
            "X-Telnyx-Username: alice\r\n".into(),
            "203.0.113.9",
            Expect::Challenge,
        ),
        ("digest: valid", "+13125550199", good.clone(), "203.0.113.9", Expect::Identified("cred", AuthMethod::Digest)),
        ("digest: wrong password", "+13125550199", bad, "203.0.113.9", Expect::Rejected(Reason::D25)),
        ("digest: unknown user", "+13125550199", stranger, "203.0.113.9", Expect::Rejected(Reason::D25)),
        (
            "digest: X-Telnyx-Username forces digest on a token connection's address",
            "+13125550199",
            format!("X-Telnyx-Username: alice\r\n{token}"),
            "192.0.2.10",
            Expect::Challenge,
        ),
        (
            "digest: X-Telnyx-Username names another user than the credentials",
            "+13125550199",
            format!("X-Telnyx-Username: bob\r\n{good}"),
            "203.0.113.9",
            Expect::Rejected(Reason::R18),
        ),
        // IP + token (Authentication behavior table).
        (
            "token: IP and token match",
            "+13125550199",
            token.clone(),
            "192.0.2.10",
            Expect::Identified("token", AuthMethod::IpToken),
        ),
        (
            "token: IP matches, token wrong",
            "+13125550199",
            "X-Telnyx-Token: token-wrongwrong\r\n".into(),
            "192.0.2.10",
            Expect::Rejected(Reason::D26),
        ),
        (
            "token: IP matches, token missing",
            "+13125550199",
            String::new(),
            "192.0.2.10",
            Expect::Rejected(Reason::D26),
        ),
        (
            "token: IP mismatch, token matches",
            "+13125550199",
            token.clone(),
            "192.0.2.99",
            Expect::Rejected(Reason::D26),
        ),
        // IP + tech prefix.
        (
            "prefix: correct",
            "1234+13125550199",
            String::new(),
            "192.0.2.20",
            Expect::Identified("prefix-a", AuthMethod::TechPrefix),
        ),
        (
            "prefix: the other connection's",
            "567813125550199",
            String::new(),
            "192.0.2.20",
            Expect::Identified("prefix-b", AuthMethod::TechPrefix),
        ),
        ("prefix: missing on a shared address", "+13125550199", String::new(), "192.0.2.20", Expect::Challenge),
        ("prefix: incorrect on a shared address", "999913125550199", String::new(), "192.0.2.20", Expect::Challenge),
        // IP + P-Charge-Info.
        (
            "p-charge-info: a number of the connection",
            "+13125550199",
            "P-Charge-Info: <sip:+13125550100@pbx.example.com>\r\n".into(),
            "192.0.2.20",
            Expect::Identified("prefix-a", AuthMethod::ChargeInfo),
        ),
        (
            "p-charge-info: a number of no connection here",
            "+13125550199",
            "P-Charge-Info: <sip:+13125550101@pbx.example.com>\r\n".into(),
            "192.0.2.20",
            Expect::Rejected(Reason::D28),
        ),
        (
            "p-charge-info: not E.164",
            "+13125550199",
            "P-Charge-Info: <sip:3125550100@pbx.example.com>\r\n".into(),
            "192.0.2.20",
            Expect::Rejected(Reason::D28),
        ),
        (
            "p-charge-info: another number from a connection alone on its address",
            "+13125550199",
            "P-Charge-Info: <sip:+13125550111@pbx.example.com>\r\n".into(),
            "192.0.2.30",
            Expect::Identified("alone", AuthMethod::Address),
        ),
        // The address alone.
        (
            "address: alone on its address",
            "+13125550199",
            String::new(),
            "192.0.2.30",
            Expect::Identified("alone", AuthMethod::Address),
        ),
        (
            "address: two connections, nothing tells them apart",
            "+13125550199",
            String::new(),
            "192.0.2.60",
            Expect::Rejected(Reason::D29),
        ),
        ("address: unknown, no credentials", "+13125550199", String::new(), "203.0.113.9", Expect::Challenge),
    ];
    for (name, ruri, extra, source, expect) in rows {
        let msg = invite(ruri, "+13125550100", &extra);
        let (id, trace) = identify_once(&config, &msg, source);
        assert_eq!(outcome(&config, id), expect, "{name}\n{trace:#?}");
        assert!(!trace.is_empty(), "{name}: no trace");
        if !matches!(expect, Expect::Identified(..)) {
            assert!(trace.failed().is_some(), "{name}: a refusal names its failed rule");
        }
    }
}

#[test]
fn the_token_table_is_the_documentation_s() {
    // | IP matches + token matches | Authenticated | / missing or incorrect | Rejected | / IP
    // mismatch + token matches | Rejected |
    let rows: Vec<(bool, bool, bool)> = IP_TOKEN_BEHAVIOUR
        .iter()
        .map(|(ip, t, r)| (*ip, *t == trunking::identify::TokenMatch::Matches, r.is_none()))
        .collect();
    assert_eq!(rows, [(true, true, true), (true, false, false), (false, true, false)]);
}

#[test]
fn a_stale_nonce_is_challenged_again() {
    let config = platform();
    let msg = invite("+13125550199", "+13125550100", &credentials("alice", "secret123"));
    let facts = CallFacts::of(&msg, ip("203.0.113.9"));
    let mut trace = Trace::new();
    let later = NOON.plus_millis(301_000);
    let id = identify(&config, &facts, &realm(), &mut ReplayGuard::default(), later, &mut trace);
    assert_eq!(id, Identification::Challenge { stale: true });
}

/// Identifies (which must succeed) then decides.
fn decide_for(config: &Config, msg: &Message, source: &str, counts: &Counts) -> (Result<Decided, Reason>, Trace) {
    let facts = CallFacts::of(msg, ip(source));
    let mut trace = Trace::new();
    let Identification::Identified(identified) =
        identify(config, &facts, &realm(), &mut ReplayGuard::default(), NOON, &mut trace)
    else {
        panic!("not identified: {trace:#?}");
    };
    let req = OutboundRequest { message: msg, facts: &facts, identified, usage: counts, rotation: 0, now: NOON };
    let r = match decide(config, &req, &mut trace) {
        OutboundDecision::Route(call) => Ok(Decided {
            identified,
            destination: call.destination.e164.map(|n| n.to_string()),
            caller: match &call.caller {
                Caller::Number(n) => n.to_string(),
                Caller::AsSent(s) => s.clone(),
            },
            anonymous: call.anonymous,
            rate: call.rate.map(|(r, _)| r.per_minute.to_string()),
            routes: call.routes.len(),
            emergency: call.is_emergency(),
            limits: [
                call.channels.account.1,
                call.channels.profile.as_ref().and_then(|p| p.1),
                call.channels.connection.1,
            ],
        }),
        OutboundDecision::Reject(r) => Err(r),
    };
    (r, trace)
}

#[derive(Debug)]
struct Decided {
    identified: Identified,
    destination: Option<String>,
    caller: String,
    anonymous: bool,
    rate: Option<String>,
    routes: usize,
    emergency: bool,
    limits: [Option<u32>; 3],
}

#[test]
fn outbound_checks_in_order() {
    let config = platform();
    let full = Counts { account: 10, profile: 5, connection: 3, spend: decimal("100"), calls_to: 99 };
    let full_channels = full.clone();
    let spent = Counts { spend: decimal("100.00"), ..Counts::default() };
    let at = |account, profile, connection| Counts { account, profile, connection, ..Counts::default() };
    let privacy = "Privacy: id\r\n";
    // (name, request user, caller (From), extra headers, source, counts, expected reason, rule)
    type Row = (&'static str, &'static str, &'static str, &'static str, &'static str, Counts, Reason, &'static str);
    let rows: Vec<Row> = vec![
        (
            "inactive connection",
            "+13125550199",
            "+13125550100",
            "",
            "192.0.2.50",
            Counts::default(),
            Reason::D18,
            "outbound.connection_active",
        ),
        (
            "no profile",
            "+13125550199",
            "+13125550100",
            "",
            "192.0.2.40",
            Counts::default(),
            Reason::D38,
            "outbound.profile",
        ),
        (
            "not a number",
            "4321555",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::InvalidDestination,
            "outbound.destination",
        ),
        (
            "a short code",
            "4321411",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D59,
            "outbound.destination",
        ),
        (
            "caller ID invalid",
            "4321+13125550199",
            "12",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D35,
            "caller_id.format",
        ),
        (
            "caller ID of another account",
            "4321+13125550199",
            "+13125550111",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D36,
            "caller_id.owner",
        ),
        (
            "spoofed caller ID abroad",
            "4321+442079460000",
            "+13125559999",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::SpoofedInternational,
            "caller_id.spoofing",
        ),
        (
            "national caller ID abroad",
            "4321+442079460000",
            "3125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D35,
            "caller_id.format",
        ),
        (
            "destination not whitelisted",
            "4321+861012345678",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D41,
            "outbound.destination_allowed",
        ),
        (
            "forbidden prefix",
            "4321+18095551234",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D41,
            "outbound.destination_allowed",
        ),
        (
            "no rate",
            "4321+35318401234",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::TM1,
            "outbound.rate",
        ),
        (
            "rate above max",
            "4321+19005551234",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts::default(),
            Reason::D24,
            "outbound.max_destination_rate",
        ),
        (
            "daily spend reached",
            "4321+13125550199",
            "+13125550100",
            "",
            "192.0.2.30",
            spent,
            Reason::D19,
            "outbound.daily_spend",
        ),
        (
            "account channels",
            "4321+13125550199",
            "+13125550100",
            "",
            "192.0.2.30",
            at(10, 0, 0),
            Reason::D1,
            "outbound.account_channels",
        ),
        (
            "profile channels",
            "4321+13125550199",
            "+13125550100",
            "",
            "192.0.2.30",
            at(9, 5, 0),
            Reason::D2,
            "outbound.profile_channels",
        ),
        (
            "connection channels",
            "4321+13125550199",
            "+13125550100",
            "",
            "192.0.2.30",
            at(9, 4, 3),
            Reason::D3,
            "outbound.connection_channels",
        ),
        (
            "everything full: spend answers before channels",
            "4321+13125550199",
            "+13125550100",
            privacy,
            "192.0.2.30",
            full,
            Reason::D19,
            "outbound.daily_spend",
        ),
        (
            "channels full: the account's answers first",
            "4321+13125550199",
            "+13125550100",
            "",
            "192.0.2.30",
            Counts { spend: decimal("0"), ..full_channels },
            Reason::D1,
            "outbound.account_channels",
        ),
    ];
    for (name, ruri, from, extra, source, counts, reason, rule) in rows {
        let msg = invite(ruri, from, extra);
        let (r, trace) = decide_for(&config, &msg, source, &counts);
        match r {
            Err(got) => assert_eq!(got, reason, "{name}\n{trace:#?}"),
            Ok(d) => panic!("{name}: routed {d:?}\n{trace:#?}"),
        }
        let failed = trace.failed().unwrap_or_else(|| panic!("{name}: no failed step"));
        assert_eq!(failed.rule, rule, "{name}\n{trace:#?}");
        assert_eq!(failed.verdict, Verdict::Fail);
    }
}

#[test]
fn a_call_within_every_limit_is_routed_with_its_rate_and_limits() {
    let config = platform();
    let counts = Counts { account: 9, profile: 4, connection: 2, spend: decimal("99.99"), calls_to: 0 };
    let rows = [
        // (request user, From user, extra, caller presented, anonymous, rate, routes)
        ("4321+13125550199", "+13125550100", "", "+13125550100", false, "0.0100", 2),
        ("432113125550199", "13125550100", "Privacy: id\r\n", "+13125550100", true, "0.0100", 2),
        ("43213125550199", "3125550100", "", "+13125550100", false, "0.0100", 2),
        // Toll-free destinations always see the real number.
        ("4321+18005550100", "+13125550100", "Privacy: id\r\n", "+13125550100", false, "0.0100", 2),
        // Abroad with the account's own number, longest prefix 447, the +44 carrier first.
        ("4321+447400123456", "+13125550100", "", "+13125550100", false, "0.0450", 4),
        // P-Preferred-Identity wins over a From that would fail.
        (
            "4321+13125550199",
            "12",
            "P-Preferred-Identity: <sip:+13125550101@pbx.example.com>\r\n",
            "+13125550101",
            false,
            "0.0100",
            2,
        ),
    ];
    for (ruri, from, extra, caller, anonymous, rate, routes) in rows {
        let msg = invite(ruri, from, extra);
        let (r, trace) = decide_for(&config, &msg, "192.0.2.30", &counts);
        let d = r.unwrap_or_else(|reason| panic!("{ruri} from {from}: {reason:?}\n{trace:#?}"));
        assert_eq!(d.caller, caller, "{ruri}");
        assert!(d.destination.is_some_and(|n| ruri.ends_with(n.trim_start_matches('+'))), "{ruri}");
        assert_eq!(d.anonymous, anonymous, "{ruri}");
        assert_eq!(d.rate.as_deref(), Some(rate), "{ruri}");
        assert_eq!(d.routes, routes, "{ruri}");
        assert_eq!(d.identified.prefix_len, 4);
        assert_eq!(d.limits, [Some(10), Some(5), Some(3)]);
        assert!(trace.failed().is_none(), "{trace:#?}");
        assert!(trace.has("outbound.rate") && trace.has("outbound.routes"));
    }
}

#[test]
fn emergency_calls_are_never_limited() {
    // Every limit exhausted, no profile, a caller ID that would fail: 911 and 933 still go out.
    let full = Counts { account: 10, profile: 5, connection: 3, spend: decimal("1000"), calls_to: 99 };
    let config = platform_with(|conns, profiles, _| {
        conns.iter_mut().find(|c| c.id.as_ref() == "alone").unwrap().outbound_voice_profile_id = None;
        profiles[0].whitelisted_destinations.clear();
    });
    for number in ["4321911", "4321933"] {
        let msg = invite(number, "12", "");
        let (r, trace) = decide_for(&config, &msg, "192.0.2.30", &full);
        let d = r.unwrap_or_else(|reason| panic!("{number}: {reason:?}\n{trace:#?}"));
        assert!(d.emergency, "{number}");
        assert_eq!(d.limits, [None, None, None], "{number}");
        assert_eq!(d.routes, 2);
        assert!(trace.failed().is_none(), "{trace:#?}");
    }
}

#[test]
fn calling_window_and_calls_per_cld() {
    let window = |start, end, calls| {
        platform_with(move |_, profiles, _| {
            profiles[0].calling_window =
                Some(CallingWindow { start: Some(start), end: Some(end), calls_per_cld: calls })
        })
    };
    let msg = invite("4321+13125550199", "+13125550100", "");
    let h = |hours: u32| hours * 3600;
    // NOON is 12:00 UTC.
    let rows = [
        (h(8), h(20), None, 0, None),
        (h(13), h(20), None, 0, Some(Reason::D17)),
        (h(8), h(12), None, 0, Some(Reason::D17)),
        (h(22), h(13), None, 0, None), // wraps midnight
        (h(9), h(9), None, 0, None),   // starts where it ends: the whole day
        (h(8), h(20), Some(5), 4, None),
        (h(8), h(20), Some(5), 5, Some(Reason::D22)),
    ];
    for (start, end, per_cld, calls_to, expect) in rows {
        let config = window(start, end, per_cld);
        let counts = Counts { calls_to, ..Counts::default() };
        let (r, trace) = decide_for(&config, &msg, "192.0.2.30", &counts);
        assert_eq!(r.err(), expect, "{start}-{end} {per_cld:?} {calls_to}\n{trace:#?}");
    }
}

#[test]
fn no_carrier_for_the_destination_is_pe1() {
    let config = platform_with(|_, _, carriers| carriers.retain(|c| c.prefixes.iter().any(|p| p == "44")));
    let (r, _) = decide_for(&config, &invite("4321+13125550199", "+13125550100", ""), "192.0.2.30", &Counts::default());
    assert_eq!(r.err(), Some(Reason::PE1));
}

#[test]
fn the_check_table_names_every_rule_the_decision_uses() {
    // Every rule a rejection in the tests above names is in the order table, and the table's
    // reasons are all catalogued with a 4xx/5xx status.
    for (rule, reasons) in OUTBOUND_CHECKS {
        assert!(rule.starts_with("outbound."));
        for r in *reasons {
            assert!(r.response().status >= 400, "{rule}: {r:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the dial string, caller and counters, the decision is total (no panic), a
    /// refusal names a failed rule, and an emergency number is never refused by a limit.
    #[test]
    fn decisions_are_total(
        dial in "[0-9+#*]{0,20}",
        from in "[0-9+a-z]{0,16}",
        account in 0u32..20, profile in 0u32..20, connection in 0u32..20,
        spend in 0u32..200, calls_to in 0u32..10,
        emergency in proptest::bool::ANY,
    ) {
        let config = platform();
        let dial = if emergency { "911".to_owned() } else { dial };
        let counts = Counts { account, profile, connection, spend: spend.into(), calls_to };
        let text = format!("4321{dial}");
        let user = if text.is_empty() { "x" } else { &text };
        let Ok(msg) = std::panic::catch_unwind(|| invite(user, if from.is_empty() { "x" } else { &from }, "")) else {
            return Ok(()); // not a SIP message this fixture can write
        };
        let facts = CallFacts::of(&msg, ip("192.0.2.30"));
        let mut trace = Trace::new();
        let Identification::Identified(identified) =
            identify(&config, &facts, &realm(), &mut ReplayGuard::default(), NOON, &mut trace) else { return Ok(()) };
        let req = OutboundRequest { message: &msg, facts: &facts, identified, usage: &counts, rotation: 7, now: NOON };
        match decide(&config, &req, &mut trace) {
            OutboundDecision::Route(call) => {
                prop_assert!(trace.failed().is_none());
                prop_assert!(!call.routes.is_empty());
            }
            OutboundDecision::Reject(r) => {
                prop_assert!(trace.failed().is_some());
                prop_assert!(!emergency, "emergency call refused with {:?}: {:#?}", r, trace);
            }
        }
    }
}
