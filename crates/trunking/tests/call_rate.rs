//! Calls per second: which buckets a call takes a token from, as a table; the settings' values;
//! the trace and response of a take.

use std::net::IpAddr;

use trunking::call_rate::{self, CallOrigin, CallRate, CallRateBucket, CallRateKey, CallRateLimits};
use trunking::catalog::Reason;
use trunking::config::Id;
use trunking::trace::{Trace, Value, Verdict};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rate(per_second: u32, burst: u32) -> CallRate {
    CallRate::new(per_second, burst).unwrap()
}

#[test]
fn the_buckets_a_call_takes_from() {
    let account: Id = "acc-1".into();
    let source = || CallRateKey::Source(ip("192.0.2.7"));
    let account_key = || CallRateKey::Account(account.clone());
    let both = CallRateLimits { per_source: Some(rate(10, 20)), per_account: Some(rate(5, 5)) };
    let customer = CallOrigin::Customer { source: ip("192.0.2.7"), account: &account, emergency: false };
    let emergency = CallOrigin::Customer { source: ip("192.0.2.7"), account: &account, emergency: true };
    let outsider = CallOrigin::ByName { source: ip("192.0.2.7"), caller_account: None };
    let by_customer = CallOrigin::ByName { source: ip("192.0.2.7"), caller_account: Some(&account) };
    let s = |r| CallRateBucket { key: source(), rate: r };
    let a = |r| CallRateBucket { key: account_key(), rate: r };

    #[rustfmt::skip]
    let table: Vec<(&str, CallRateLimits, CallOrigin, Vec<CallRateBucket>)> = vec![
        ("outbound: source, then account", both, customer, vec![s(rate(10, 20)), a(rate(5, 5))]),
        ("outbound, source limit only", CallRateLimits { per_account: None, ..both }, customer, vec![s(rate(10, 20))]),
        ("outbound, account limit only", CallRateLimits { per_source: None, ..both }, customer, vec![a(rate(5, 5))]),
        ("outbound, no limits", CallRateLimits::NONE, customer, vec![]),
        ("outbound, defaults", CallRateLimits::default(), customer, vec![s(rate(100, 200))]),
        ("emergency: never limited", both, emergency, vec![]),
        ("SIP URI / subdomain from outside: source", both, outsider, vec![s(rate(10, 20))]),
        ("SIP URI / subdomain from a customer", both, by_customer, vec![s(rate(10, 20)), a(rate(5, 5))]),
        ("a carrier's call: never limited", both, CallOrigin::Carrier, vec![]),
    ];
    for (case, limits, origin, expected) in table {
        assert_eq!(limits.buckets(origin), expected, "{case}");
    }
}

#[test]
fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
    #[rustfmt::skip]
    let table = [
        ("192.0.2.7", "source:192.0.2.7"),
        ("::ffff:192.0.2.7", "source:192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "source:2001:db8:1:2::"),
        ("2001:db8:1:2::1", "source:2001:db8:1:2::"),
        ("2001:db8:1:3::1", "source:2001:db8:1:3::"),
        ("::1", "source:::"),
    ];
    for (address, key) in table {
        assert_eq!(CallRateKey::source(ip(address)).to_string(), key, "{address}");
    }
    assert_eq!(CallRateKey::Account("acc-9".into()).to_string(), "account:acc-9");
}

#[test]
fn a_rate_admits_something() {
    #[rustfmt::skip]
    let table = [
        ((0, 10), None),
        ((10, 0), None),
        ((0, 0), None),
        ((1, 1), Some((1, 1))),
        ((100, 200), Some((100, 200))),
    ];
    for ((per_second, burst), expected) in table {
        let made = CallRate::new(per_second, burst).map(|r| (r.per_second(), r.burst()));
        assert_eq!(made, expected, "{per_second}/s burst {burst}");
    }
    assert_eq!(CallRateLimits::default().per_source, Some(CallRateLimits::DEFAULT_PER_SOURCE));
    assert_eq!(CallRateLimits::default().per_account, None);
}

/// A counters backend's answer to a take: `Err(i)` names the first bucket without a token.
type Taken = Result<(), usize>;
/// The bucket a refusal's trace step names: its kind and id.
type Named = Option<(&'static str, Value)>;

#[test]
fn an_exhausted_bucket_refuses_with_p05_and_names_itself_in_the_trace() {
    let buckets = CallRateLimits { per_source: Some(rate(10, 20)), per_account: Some(rate(5, 6)) }
        .buckets(CallOrigin::Customer { source: ip("192.0.2.7"), account: &Id::from("acc-1"), emergency: false });
    #[rustfmt::skip]
    let table: [(Taken, Result<(), Reason>, Verdict, Named); 3] = [
        (Ok(()), Ok(()), Verdict::Pass, None),
        (Err(0), Err(Reason::P05), Verdict::Fail, Some(("source", Value::Ip(ip("192.0.2.7"))))),
        (Err(1), Err(Reason::P05), Verdict::Fail, Some(("account", Value::from("acc-1")))),
    ];
    for (taken, expected, verdict, named) in table {
        let mut trace = Trace::new();
        assert_eq!(call_rate::outcome(&mut trace, &buckets, taken), expected, "{taken:?}");
        let step = trace.get(call_rate::RULE).expect("a trace step");
        assert_eq!(step.verdict, verdict, "{taken:?}");
        if let Some((kind, id)) = named {
            assert_eq!(step.fact("bucket"), Some(&Value::Static(kind)));
            assert_eq!(step.fact("id"), Some(&id));
            let (per_second, burst) = if kind == "source" { (10u32, 20u32) } else { (5, 6) };
            assert_eq!(step.fact("per_second"), Some(&per_second.into()));
            assert_eq!(step.fact("burst"), Some(&burst.into()));
        }
    }
    assert_eq!(Reason::P05.response().status, 403);
    assert_eq!(Reason::P05.response().phrase, "CPS limit exceeded P05");

    // No bucket (an emergency call): skipped, admitted.
    let mut trace = Trace::new();
    assert_eq!(call_rate::outcome(&mut trace, &[], Ok(())), Ok(()));
    assert_eq!(trace.get(call_rate::RULE).unwrap().verdict, Verdict::Skip);
}
