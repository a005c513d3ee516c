//! The registrar of credential connections, table-driven: each row is one REGISTER against the
//! fixture platform (credential connection `cred`, user `alice`, password `secret123`) and what
//! the product documentation and RFC 3261 section 10.3 make of it; then bindings over several
//! requests (refresh, removal, the cap, Path, outbound, NAT), the failed-attempt limiter, and a
//! property: no REGISTER makes the registrar panic.

#[path = "support/fixture.rs"]
mod fixture;

use std::net::SocketAddr;

use fixture::*;
use proptest::prelude::*;
use sip::{Auth, Framing, HeaderName, Message};
use trunking::Reason;
use trunking::config::{Config, ConnectionKind};
use trunking::digest::{self, DigestRealm, ReplayGuard, StoredDigest};
use trunking::registrar::{
    Binding, FailedAuthLimiter, Guards, LimiterRules, Refusal, RegisterOutcome, RegisterRequest, Registered,
    RegistrarRules, register, username_fault,
};
use trunking::routing::Transport;
use trunking::time::Timestamp;
use trunking::trace::Trace;

const SOURCE: &str = "203.0.113.5:40000";
const AOR: &str = "sip:alice@sip.opentrunk.test";

fn source() -> SocketAddr {
    SOURCE.parse().unwrap()
}

/// A registrar's state across requests, as the engine keeps it.
struct Registrar {
    config: Config,
    rules: RegistrarRules,
    realm: DigestRealm,
    replay: ReplayGuard,
    limiter: FailedAuthLimiter,
    bindings: Vec<Binding>,
    cseq: u32,
    nc: u32,
}

impl Registrar {
    fn new() -> Self {
        Registrar::with(platform(), RegistrarRules::default(), LimiterRules::default())
    }

    fn with(config: Config, rules: RegistrarRules, limits: LimiterRules) -> Self {
        Registrar {
            config,
            rules,
            realm: realm(),
            replay: ReplayGuard::default(),
            limiter: FailedAuthLimiter::new(limits),
            bindings: Vec::new(),
            cseq: 0,
            nc: 0,
        }
    }

    /// Decides a REGISTER as given (headers after the request line), keeping accepted bindings.
    fn send(&mut self, headers: &str, from: &str, now: Timestamp) -> (RegisterOutcome, Trace) {
        let msg = message(headers);
        let req = RegisterRequest::of(&msg, from.parse().unwrap(), Transport::Udp);
        let mut trace = Trace::new();
        let guards = Guards { realm: &self.realm, replay: &mut self.replay, limiter: &mut self.limiter };
        let out = register(&self.config, &self.rules, &req, guards, &self.bindings, now, &mut trace);
        if let RegisterOutcome::Accepted(r) = &out {
            self.bindings = r.bindings.clone();
        }
        (out, trace)
    }

    /// A REGISTER of `alice` with `extra` headers (Contact, Expires, ...), with credentials for
    /// `user`/`password` answering a fresh challenge (`algorithm` 0 = MD5, 1 = SHA-256).
    fn authed(&mut self, extra: &str, user: &str, password: &str, algorithm: usize, now: Timestamp) -> RegisterOutcome {
        self.authed_from(extra, user, password, algorithm, SOURCE, now).0
    }

    fn authed_from(
        &mut self,
        extra: &str,
        user: &str,
        password: &str,
        algorithm: usize,
        from: &str,
        now: Timestamp,
    ) -> (RegisterOutcome, Trace) {
        let challenge = self.realm.challenges(now, false).swap_remove(algorithm);
        let auth = Auth::parse(&challenge).unwrap();
        self.nc += 1;
        let creds =
            digest::authorization(&auth, "REGISTER", "sip:sip.opentrunk.test", user, password, "c0ffee", 1).unwrap();
        self.cseq += 1;
        // `message` adds the AOR's To when `extra` has none.
        let headers = format!("CSeq: {} REGISTER\r\nAuthorization: {creds}\r\n{extra}", self.cseq);
        self.send(&headers, from, now)
    }

    fn ok(&mut self, extra: &str, now: Timestamp) -> Registered {
        match self.authed(extra, "alice", "secret123", 0, now) {
            RegisterOutcome::Accepted(r) => r,
            other => panic!("expected 200 for {extra:?}, got {other:?}"),
        }
    }
}

/// A REGISTER with the given headers (To, CSeq and Call-ID default when absent).
fn message(headers: &str) -> Message {
    let mut text = String::from(
        "REGISTER sip:sip.opentrunk.test SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bKreg1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.opentrunk.test>;tag=f1\r\n",
    );
    if !headers.contains("Call-ID:") {
        text.push_str("Call-ID: reg-call-1@203.0.113.5\r\n");
    }
    if !headers.contains("To:") {
        text.push_str(&format!("To: <{AOR}>\r\n"));
    }
    if !headers.contains("CSeq:") {
        text.push_str("CSeq: 1 REGISTER\r\n");
    }
    text.push_str(headers);
    text.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed REGISTER")
}

fn contact(host_port: &str) -> String {
    format!("Contact: <sip:alice@{host_port}>\r\n")
}

fn rejected(out: &RegisterOutcome) -> Refusal {
    match out {
        RegisterOutcome::Rejected(r) => *r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn rejections_have_the_documented_codes() {
    let long = format!("Contact: <sip:alice@203.0.113.5:40000;x={}>\r\n", "a".repeat(500));
    let two = "Contact: <sip:alice@203.0.113.5:40000>, <sip:alice@203.0.113.5:40001>\r\n";
    let c = contact(SOURCE);
    // (what, headers, refusal, the failing rule) before any credentials are looked at.
    let unauthenticated: &[(&str, String, Refusal, &str)] = &[
        ("To tag", format!("To: <{AOR}>;tag=abc\r\n{c}"), Refusal::Product(Reason::P04), "register.to_tag"),
        ("Contact of 513+ bytes", long, Refusal::Product(Reason::P51), "register.contact_length"),
        ("two contacts", two.into(), Refusal::Product(Reason::R47), "register.contacts"),
        (
            "wildcard kept",
            "Contact: *\r\nExpires: 3600\r\n".into(),
            Refusal::BadRequest("Invalid Wildcard"),
            "register.contacts",
        ),
        (
            "wildcard without Expires",
            "Contact: *\r\n".into(),
            Refusal::BadRequest("Invalid Wildcard"),
            "register.contacts",
        ),
        ("malformed Expires", format!("{c}Expires: soon\r\n"), Refusal::BadRequest("Bad Request"), "register.contacts"),
        (
            "AOR user too short",
            format!("To: <sip:abc@sip.opentrunk.test>\r\n{c}"),
            Refusal::Product(Reason::R17),
            "register.username",
        ),
        (
            "AOR user invalid",
            format!("To: <sip:al-ice@sip.opentrunk.test>\r\n{c}"),
            Refusal::Product(Reason::R16),
            "register.username",
        ),
        (
            "AOR user of digits",
            format!("To: <sip:12345678@sip.opentrunk.test>\r\n{c}"),
            Refusal::Product(Reason::R16),
            "register.username",
        ),
        (
            "AOR without user",
            format!("To: <sip:sip.opentrunk.test>\r\n{c}"),
            Refusal::Product(Reason::R14),
            "register.username",
        ),
        (
            "empty digest user name",
            format!(
                "{c}Authorization: Digest username=\"\", realm=\"{REALM}\", nonce=\"00\", uri=\"sip:x\", response=\"00\"\r\n"
            ),
            Refusal::Product(Reason::R14),
            "register.username",
        ),
    ];
    for (what, headers, refusal, rule) in unauthenticated {
        let mut r = Registrar::new();
        let (out, trace) = r.send(headers, SOURCE, NOON);
        assert_eq!(rejected(&out), *refusal, "{what}");
        assert_eq!(trace.failed().map(|s| s.rule), Some(*rule), "{what}");
    }
    // Codes come from the catalog: status and phrase as documented.
    assert_eq!(
        (Refusal::Product(Reason::P04).status(), Refusal::Product(Reason::P04).phrase()),
        (403, "REGISTER with To tag P04")
    );
    assert_eq!(Refusal::Product(Reason::P51).phrase(), "Contact header exceeds 512 bytes P51");
    assert_eq!(Refusal::Product(Reason::R47).phrase(), "Multiple Contact addresses R47");

    // A Contact of exactly 512 bytes is fine.
    let mut r = Registrar::new();
    let pad = 512 - "<sip:alice@203.0.113.5:40000;x=>".len();
    let exact = format!("Contact: <sip:alice@203.0.113.5:40000;x={}>\r\n", "a".repeat(pad));
    assert!(matches!(r.authed(&exact, "alice", "secret123", 0, NOON), RegisterOutcome::Accepted(_)));
}

#[test]
fn credentials_decide_with_md5_and_sha256() {
    let c = contact(SOURCE);
    // No credentials: a 401 challenge.
    let mut r = Registrar::new();
    let (out, trace) = r.send(&c, SOURCE, NOON);
    assert_eq!(out, RegisterOutcome::Challenge { stale: false });
    assert_eq!(trace.failed().unwrap().rule, "register.digest");
    for algorithm in [0, 1] {
        let mut r = Registrar::new();
        let out = r.authed(&c, "alice", "secret123", algorithm, NOON);
        let RegisterOutcome::Accepted(reg) = out else { panic!("algorithm {algorithm}: {out:?}") };
        assert_eq!(&*reg.connection_id, "cred");
        assert_eq!(reg.bindings.len(), 1);
        assert_eq!(reg.bindings[0].contact, "sip:alice@203.0.113.5:40000");
        assert_eq!(reg.granted, Some(3600));
    }
    // Wrong password, unknown user: D25 alike.
    let mut r = Registrar::new();
    assert_eq!(rejected(&r.authed(&c, "alice", "wrong-pass", 0, NOON)), Refusal::Product(Reason::D25));
    let mut r = Registrar::new();
    let out = r.authed(&format!("To: <sip:zelda99@sip.opentrunk.test>\r\n{c}"), "zelda99", "x", 0, NOON);
    assert_eq!(rejected(&out), Refusal::Product(Reason::D25));
    // Credentials of another user than the AOR's: R18.
    let mut r = Registrar::new();
    let out = r.authed(&format!("To: <sip:bobby1@sip.opentrunk.test>\r\n{c}"), "alice", "secret123", 0, NOON);
    assert_eq!(rejected(&out), Refusal::Product(Reason::R18));
    // A nonce gone stale with the right password: a challenge with stale=true.
    let mut r = Registrar::new();
    let old = Timestamp(NOON.0 - 400_000);
    let challenge = r.realm.challenges(old, false).swap_remove(0);
    let creds = digest::authorization(
        &Auth::parse(&challenge).unwrap(),
        "REGISTER",
        "sip:sip.opentrunk.test",
        "alice",
        "secret123",
        "c1",
        1,
    )
    .unwrap();
    let (out, _) = r.send(&format!("{c}Authorization: {creds}\r\n"), SOURCE, NOON);
    assert_eq!(out, RegisterOutcome::Challenge { stale: true });
}

#[test]
fn only_active_credential_connections_register() {
    let config = platform_with(|conns, _, _| {
        let mut off = conns[0].clone();
        off.id = "cred-off".into();
        off.active = false;
        off.credentials = Some(("carol1".into(), StoredDigest::from_password("carol1", REALM, "pw123456")));
        let mut fqdn = conns[0].clone();
        fqdn.id = "fqdn-cred".into();
        fqdn.kind = ConnectionKind::Fqdn;
        fqdn.credentials = Some(("dave01".into(), StoredDigest::from_password("dave01", REALM, "pw123456")));
        conns.extend([off, fqdn]);
    });
    let mut r = Registrar::with(config, RegistrarRules::default(), LimiterRules::default());
    let to = |u: &str| format!("To: <sip:{u}@sip.opentrunk.test>\r\n{}", contact(SOURCE));
    assert_eq!(rejected(&r.authed(&to("carol1"), "carol1", "pw123456", 1, NOON)), Refusal::Product(Reason::D18));
    assert_eq!(rejected(&r.authed(&to("dave01"), "dave01", "pw123456", 1, NOON)), Refusal::Product(Reason::D25));
}

#[test]
fn intervals_are_bounded() {
    let c = "Contact: <sip:alice@203.0.113.5:40000>";
    // (headers, granted seconds or the Min-Expires of a 423)
    let rows: &[(String, Result<u32, u32>)] = &[
        (format!("{c}\r\n"), Ok(3600)),
        (format!("{c}\r\nExpires: 120\r\n"), Ok(120)),
        (format!("{c};expires=300\r\nExpires: 120\r\n"), Ok(300)),
        (format!("{c}\r\nExpires: 86400\r\n"), Ok(3600)),
        (format!("{c}\r\nExpires: 60\r\n"), Ok(60)),
        (format!("{c}\r\nExpires: 59\r\n"), Err(60)),
        (format!("{c};expires=1\r\n"), Err(60)),
    ];
    for (headers, expect) in rows {
        let mut r = Registrar::new();
        match (r.authed(headers, "alice", "secret123", 0, NOON), expect) {
            (RegisterOutcome::Accepted(reg), Ok(secs)) => {
                assert_eq!(reg.granted, Some(*secs), "{headers}");
                assert_eq!(reg.bindings[0].expires_in(NOON), *secs);
                let h = reg.headers(NOON);
                assert!(h.contains(&(HeaderName::Contact, format!("<sip:alice@203.0.113.5:40000>;expires={secs}"))));
                assert!(h.contains(&(HeaderName::Expires, secs.to_string())));
            }
            (RegisterOutcome::Rejected(refusal), Err(min)) => {
                assert_eq!(refusal, Refusal::IntervalTooBrief { min_expires: *min }, "{headers}");
                assert_eq!(refusal.status(), 423);
                assert_eq!(refusal.headers(), vec![(HeaderName::MinExpires, min.to_string())]);
            }
            (out, _) => panic!("{headers}: {out:?}"),
        }
    }
    // The bounds are the operator's.
    let rules = RegistrarRules { min_expires: 300, max_expires: 600, ..RegistrarRules::default() };
    let mut r = Registrar::with(platform(), rules, LimiterRules::default());
    assert_eq!(rejected(&r.authed(&format!("{c}\r\nExpires: 120\r\n"), "alice", "secret123", 0, NOON)).status(), 423);
    assert_eq!(r.ok(&format!("{c}\r\n"), NOON).granted, Some(600));
}

#[test]
fn bindings_accumulate_refresh_and_go() {
    let mut r = Registrar::new();
    let at = |s: u64| NOON.plus_millis(s * 1000);
    r.ok(&contact("203.0.113.5:40000"), at(0));
    let reg = r.ok(&contact("203.0.113.5:40002"), at(10));
    assert_eq!(reg.bindings.len(), 2);
    // A refresh keeps the first registration time and moves expiry.
    let reg = r.ok(&format!("{}Expires: 600\r\n", contact("203.0.113.5:40000")), at(20));
    assert_eq!(reg.bindings.len(), 2);
    let first = reg.bindings.iter().find(|b| b.contact.ends_with(":40000")).unwrap();
    assert_eq!((first.registered_at, first.updated_at, first.expires_in(at(20))), (at(0), at(20), 600));
    // A query (no Contact) changes nothing and lists both.
    let reg = r.ok("", at(30));
    assert_eq!((reg.bindings.len(), reg.granted), (2, None));
    assert_eq!(reg.headers(at(30)).iter().filter(|(n, _)| *n == HeaderName::Contact).count(), 2);
    // Expires: 0 removes one.
    let reg = r.ok(&format!("{}Expires: 0\r\n", contact("203.0.113.5:40002")), at(40));
    assert_eq!(reg.bindings.len(), 1);
    assert_eq!(reg.removed.len(), 1);
    assert_eq!(reg.removed[0].contact, "sip:alice@203.0.113.5:40002");
    // Expired bindings are dropped and reported for removal.
    // Bindings of another connection handed in are neither kept nor removed.
    let mut foreign = r.bindings[0].clone();
    foreign.connection_id = "prefix-a".into();
    r.bindings.push(foreign);
    let reg = r.ok(&contact("203.0.113.5:40003"), at(20 + 601));
    assert_eq!(reg.removed.len(), 1);
    assert_eq!(reg.bindings.iter().map(|b| b.contact.as_str()).collect::<Vec<_>>(), ["sip:alice@203.0.113.5:40003"]);
    assert_eq!(reg.removed[0].contact, "sip:alice@203.0.113.5:40000");
    // `*` with Expires: 0 removes all.
    r.ok(&contact("203.0.113.5:40004"), at(700));
    let reg = r.ok("Contact: *\r\nExpires: 0\r\n", at(710));
    assert!(reg.bindings.is_empty());
    assert_eq!(reg.removed.len(), 2);
    assert!(reg.headers(at(710)).is_empty());
}

#[test]
fn a_late_request_of_the_same_call_fails() {
    let mut r = Registrar::new();
    r.ok(&contact(SOURCE), NOON);
    // Same Call-ID, an older CSeq: RFC 3261 section 10.3 step 7.
    r.cseq = 0;
    let out = r.authed(&contact(SOURCE), "alice", "secret123", 0, NOON.plus_millis(1000));
    assert_eq!(rejected(&out), Refusal::Product(Reason::P29));
    assert_eq!(rejected(&out).status(), 500);
    // Another Call-ID (the device restarted) replaces the binding whatever its CSeq.
    let out = r.authed(&format!("Call-ID: other@x\r\n{}", contact(SOURCE)), "alice", "secret123", 0, NOON);
    let RegisterOutcome::Accepted(reg) = out else { panic!("{out:?}") };
    assert_eq!((reg.bindings.len(), reg.bindings[0].call_id.as_str()), (1, "other@x"));
}

#[test]
fn several_contacts_are_capped_oldest_replaced() {
    let rules = RegistrarRules { max_bindings: 3, multiple_contacts_per_request: true, ..RegistrarRules::default() };
    let mut r = Registrar::with(platform(), rules, LimiterRules::default());
    for (i, port) in [40001, 40002, 40003, 40004].iter().enumerate() {
        r.ok(&contact(&format!("203.0.113.5:{port}")), NOON.plus_millis(i as u64 * 1000));
    }
    let ports: Vec<_> = r.bindings.iter().map(|b| b.contact.rsplit(':').next().unwrap().to_owned()).collect();
    assert_eq!(ports, ["40002", "40003", "40004"]);
    // Several in one request, where the rules allow it.
    let reg = r.ok("Contact: <sip:alice@203.0.113.5:40010>, <sip:alice@203.0.113.5:40011>\r\n", NOON.plus_millis(9000));
    assert_eq!(reg.bindings.len(), 3);
    assert!(reg.bindings.iter().any(|b| b.contact.ends_with("40010")));
    assert!(reg.bindings.iter().any(|b| b.contact.ends_with("40011")));
}

#[test]
fn path_outbound_and_nat_are_kept() {
    let mut r = Registrar::new();
    let instance = "\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    let headers = format!(
        "Supported: path, outbound\r\nPath: <sip:edge1.example.net;lr>\r\n\
         Contact: <sip:alice@192.168.1.10:5060;ob>;+sip.instance={instance};reg-id=1\r\n"
    );
    let reg = r.ok(&headers, NOON);
    let b = &reg.bindings[0];
    assert_eq!(b.path, ["<sip:edge1.example.net;lr>"]);
    assert_eq!((b.instance.as_deref(), b.reg_id), (Some(instance), Some(1)));
    assert!(b.nat);
    assert_eq!(b.received().map(|f| f.address), Some(source()));
    assert!(reg.outbound);
    let h = reg.headers(NOON);
    assert!(h.contains(&(HeaderName::Path, "<sip:edge1.example.net;lr>".into())));
    assert!(h.contains(&(HeaderName::Require, "outbound".into())));
    assert!(h.iter().any(|(n, v)| *n == HeaderName::Contact && v.contains(";reg-id=1") && v.contains(instance)));
    // The same instance and reg-id from a new address refreshes the one binding (RFC 5626).
    let reg = r.ok(&headers.replace("192.168.1.10", "192.168.1.11"), NOON.plus_millis(1000));
    assert_eq!(reg.bindings.len(), 1);
    assert!(reg.bindings[0].contact.contains("192.168.1.11"));

    // A Contact that is the source itself needs no NAT help; another port or a name does.
    for (contact_host, nat) in
        [(SOURCE, false), ("203.0.113.5:5060", true), ("10.0.0.7:40000", true), ("pbx.example.com", true)]
    {
        let mut r = Registrar::new();
        let reg = r.ok(&contact(contact_host), NOON);
        assert_eq!(reg.bindings[0].nat, nat, "{contact_host}");
        assert_eq!(reg.bindings[0].received().is_some(), nat);
        assert_eq!(reg.bindings[0].source.transport, Transport::Udp);
    }
}

#[test]
fn failed_attempts_cool_down() {
    let limits =
        LimiterRules { window_ms: 60_000, max_per_source: 8, max_per_user: 3, cooldown_ms: 120_000, capacity: 100 };
    let mut r = Registrar::with(platform(), RegistrarRules::default(), limits);
    let c = contact(SOURCE);
    for i in 0..3 {
        let out = r.authed(&c, "alice", "guess", 0, NOON.plus_millis(i * 1000));
        assert_eq!(rejected(&out), Refusal::Product(Reason::D25), "attempt {i}");
    }
    // The user name is cooling down: even the right password is refused, from anywhere.
    let (out, trace) = r.authed_from(&c, "alice", "secret123", 0, "198.51.100.9:5060", NOON.plus_millis(3000));
    let refusal = rejected(&out);
    assert_eq!(refusal, Refusal::CoolingDown { retry_after_secs: 119 });
    assert_eq!((refusal.status(), refusal.reason()), (403, Some(Reason::D25)));
    assert_eq!(refusal.headers(), vec![(HeaderName::RetryAfter, "119".into())]);
    assert_eq!(trace.failed().unwrap().rule, "register.throttle");
    // After the cool-down it registers.
    assert!(matches!(r.authed(&c, "alice", "secret123", 0, NOON.plus_millis(122_001)), RegisterOutcome::Accepted(_)));

    // One source guessing many names: the source cools down.
    let mut r = Registrar::with(platform(), RegistrarRules::default(), limits);
    for i in 0..8 {
        let user = format!("user{i:03}");
        let out = r.authed(&format!("To: <sip:{user}@sip.opentrunk.test>\r\n{c}"), &user, "x", 0, NOON);
        assert_eq!(rejected(&out), Refusal::Product(Reason::D25));
    }
    assert!(matches!(rejected(&r.authed(&c, "alice", "secret123", 0, NOON)), Refusal::CoolingDown { .. }));
    // ... while others may still register.
    let (out, _) = r.authed_from(&c, "alice", "secret123", 0, "198.51.100.9:5060", NOON);
    assert!(matches!(out, RegisterOutcome::Accepted(_)));

    // Failures spread over more than the window never add up.
    let mut r = Registrar::with(platform(), RegistrarRules::default(), limits);
    for i in 0..10u64 {
        let out = r.authed(&c, "alice", "guess", 0, NOON.plus_millis(i * 30_000));
        assert_eq!(rejected(&out), Refusal::Product(Reason::D25), "attempt {i}");
    }
}

#[test]
fn the_limiter_is_bounded() {
    let limits = LimiterRules { capacity: 50, ..LimiterRules::default() };
    let mut l = FailedAuthLimiter::new(limits);
    for i in 0..5_000u32 {
        let ip = std::net::IpAddr::from(i.to_be_bytes());
        l.failed(Some(ip), &format!("{i}{}", "x".repeat(200)), NOON);
    }
    assert_eq!(l.tracked(), (50, 50));
    // A user name longer than the key length still counts (by its first bytes).
    let mut l = FailedAuthLimiter::new(LimiterRules { max_per_user: 2, ..LimiterRules::default() });
    let long = "é".repeat(100);
    l.failed(None, &long, NOON);
    l.failed(None, &long, NOON);
    assert!(l.cooling_down(None, &long, NOON).is_some());
    assert!(l.cooling_down(None, "alice", NOON).is_none());
}

#[test]
fn username_faults() {
    for (user, fault) in [
        ("", Some(Reason::R14)),
        ("abc", Some(Reason::R17)),
        ("ab1", Some(Reason::R17)),
        ("alice", None),
        ("a234", None),
        ("1234a678", None),
        ("123456", Some(Reason::R16)),
        ("al ice", Some(Reason::R16)),
        ("alice@x", Some(Reason::R16)),
        (&"a".repeat(33), Some(Reason::R16)),
        (&"a".repeat(32), None),
    ] {
        assert_eq!(username_fault(user), fault, "{user:?}");
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("*".to_owned()),
        Just("<sip:alice@203.0.113.5:40000>;expires=0".to_owned()),
        Just("<sip:alice@sip.opentrunk.test>;tag=x".to_owned()),
        Just(
            "Digest username=\"alice\", realm=\"sip.opentrunk.test\", nonce=\"00\", uri=\"x\", response=\"00\""
                .to_owned()
        ),
        "[ -~]{0,80}",
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// Whatever the fields hold, the registrar answers, and an accepted request's bindings
    /// respect the cap and the bounds.
    #[test]
    fn no_register_panics(
        to in text(), call_id in text(), cseq in text(), contacts in proptest::collection::vec(text(), 0..3),
        expires in proptest::option::of(text()), path in proptest::collection::vec(text(), 0..2),
        credentials in proptest::option::of(text()), now in 0u64..u64::MAX,
    ) {
        let config = platform();
        let realm = realm();
        let mut replay = ReplayGuard::default();
        let mut limiter = FailedAuthLimiter::default();
        let req = RegisterRequest {
            source: Some(source()),
            transport: Transport::Tcp,
            to: Some(&to),
            call_id: Some(&call_id),
            cseq: Some(&cseq),
            contacts: contacts.iter().map(String::as_str).collect(),
            expires: expires.as_deref(),
            path: path.iter().map(String::as_str).collect(),
            supported: vec!["outbound"],
            credentials: credentials.as_deref(),
            user_agent: Some("x"),
        };
        let rules = RegistrarRules::default();
        let mut trace = Trace::new();
        let guards = Guards { realm: &realm, replay: &mut replay, limiter: &mut limiter };
        if let RegisterOutcome::Accepted(reg) = register(&config, &rules, &req, guards, &[], Timestamp(now), &mut trace) {
            prop_assert!(reg.bindings.len() <= rules.max_bindings);
            prop_assert!(reg.bindings.iter().all(|b| b.expires_in(Timestamp(now)) <= rules.max_expires));
        }
        prop_assert!(!trace.is_empty());
    }
}
