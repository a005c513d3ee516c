//! The in-process counters: channel limits taken all or none, in the product's order (account
//! `D1`, profile `D2`, connection `D3`); leases that cannot leak; spend per UTC day; calls per
//! called number and their pruning; and the same under random sequences and several threads.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread;

use engine::counters::{CALLS_TO_RETENTION_MS, ChannelLease, Counters, LocalCounters, NodeCounters};
use proptest::prelude::*;
use rust_decimal::Decimal;
use trunking::Reason;
use trunking::call_rate::{CallRate, CallRateBucket, CallRateKey};
use trunking::config::Id;
use trunking::outbound::{ChannelLimits, Scope, Usage};
use trunking::time::Timestamp;

fn limits(
    account: (&str, Option<u32>),
    profile: Option<(&str, Option<u32>)>,
    connection: (&str, Option<u32>),
) -> ChannelLimits {
    ChannelLimits {
        account: (Id::from(account.0), account.1),
        profile: profile.map(|(id, l)| (Id::from(id), l)),
        connection: (Id::from(connection.0), connection.1),
    }
}

/// `n` live calls on one scope's id, each elsewhere on fresh unlimited ids.
fn occupy(c: &LocalCounters, scope: Scope, id: &str, n: u32) -> Vec<ChannelLease> {
    (0..n)
        .map(|i| {
            let other = format!("other-{scope:?}-{id}-{i}");
            let l = match scope {
                Scope::Account => limits((id, None), None, (&other, None)),
                Scope::Profile => limits((&other, None), Some((id, None)), (&other, None)),
                Scope::Connection => limits((&other, None), None, (id, None)),
            };
            c.acquire(&l, "filler").expect("unlimited")
        })
        .collect()
}

/// Polls a future once: the local counters' futures are ready when made.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("local counters answered later"),
    }
}

fn lives(c: &LocalCounters) -> [u32; 3] {
    [c.live(Scope::Account, "A"), c.live(Scope::Profile, "P"), c.live(Scope::Connection, "C")]
}

#[test]
fn limits_table() {
    type Row = (&'static str, [u32; 3], [Option<u32>; 3], bool, Result<(), Scope>);
    // (case, live before (account, profile, connection), limits, with a profile, outcome)
    let rows: &[Row] = &[
        ("room everywhere", [0, 0, 0], [Some(2), Some(2), Some(2)], true, Ok(())),
        ("one below every limit", [1, 1, 1], [Some(2), Some(2), Some(2)], true, Ok(())),
        ("account full", [2, 0, 0], [Some(2), Some(5), Some(5)], true, Err(Scope::Account)),
        ("profile full", [0, 2, 0], [Some(5), Some(2), Some(5)], true, Err(Scope::Profile)),
        ("connection full", [0, 0, 2], [Some(5), Some(5), Some(2)], true, Err(Scope::Connection)),
        ("account and profile full", [2, 2, 0], [Some(2), Some(2), Some(5)], true, Err(Scope::Account)),
        ("account and connection full", [2, 0, 2], [Some(2), Some(5), Some(2)], true, Err(Scope::Account)),
        ("profile and connection full", [0, 2, 2], [Some(5), Some(2), Some(2)], true, Err(Scope::Profile)),
        ("all full", [3, 3, 3], [Some(3), Some(3), Some(3)], true, Err(Scope::Account)),
        ("over a lowered limit", [4, 0, 0], [Some(2), None, None], true, Err(Scope::Account)),
        ("limit zero", [0, 0, 0], [Some(5), Some(5), Some(0)], true, Err(Scope::Connection)),
        ("unlimited account", [50, 0, 0], [None, Some(1), Some(1)], true, Ok(())),
        ("unlimited profile", [0, 50, 0], [Some(1), None, Some(1)], true, Ok(())),
        ("unlimited connection", [0, 0, 50], [Some(1), Some(1), None], true, Ok(())),
        ("unlimited everywhere", [9, 9, 9], [None, None, None], true, Ok(())),
        ("no profile, connection full", [0, 7, 1], [Some(5), Some(1), Some(1)], false, Err(Scope::Connection)),
        ("no profile: its count is not read", [0, 7, 0], [Some(5), Some(1), Some(1)], false, Ok(())),
        // Emergency calls come with every limit lifted: taken whatever the counts.
        ("emergency over full scopes", [5, 5, 5], [None, None, None], true, Ok(())),
        ("emergency, no profile", [5, 5, 5], [None, None, None], false, Ok(())),
    ];
    for &(case, live, [la, lp, lc], with_profile, expected) in rows {
        let c = LocalCounters::new();
        let _held: Vec<_> =
            [(Scope::Account, "A", live[0]), (Scope::Profile, "P", live[1]), (Scope::Connection, "C", live[2])]
                .into_iter()
                .flat_map(|(scope, id, n)| occupy(&c, scope, id, n))
                .collect();
        assert_eq!(lives(&c), live, "{case}: setup");
        let l = limits(("A", la), with_profile.then_some(("P", lp)), ("C", lc));
        let got = c.acquire(&l, "call-1");
        assert_eq!(got.as_ref().map(|_| ()).map_err(|s| *s), expected, "{case}");
        let after = match expected {
            Ok(()) => [live[0] + 1, live[1] + u32::from(with_profile), live[2] + 1],
            // All or none: a refusal takes nothing.
            Err(_) => live,
        };
        assert_eq!(lives(&c), after, "{case}: counts after");
        drop(got);
        assert_eq!(lives(&c), live, "{case}: counts after release");
    }
}

#[test]
fn scopes_map_to_the_products_reasons() {
    assert_eq!(Scope::Account.limit_reason(), Reason::D1);
    assert_eq!(Scope::Profile.limit_reason(), Reason::D2);
    assert_eq!(Scope::Connection.limit_reason(), Reason::D3);
}

#[test]
fn emergency_calls_are_counted() {
    let c = LocalCounters::new();
    let emergency = limits(("A", None), Some(("P", None)), ("C", None));
    let leases: Vec<_> = (0..3).map(|_| c.acquire(&emergency, "e").expect("never limited")).collect();
    assert_eq!(lives(&c), [3, 3, 3]);
    // They fill the channels an ordinary call is limited by.
    let normal = limits(("A", Some(3)), Some(("P", Some(10))), ("C", Some(10)));
    assert_eq!(c.acquire(&normal, "n").map(|_| ()), Err(Scope::Account));
    drop(leases);
    assert_eq!(lives(&c), [0, 0, 0]);
    assert!(c.acquire(&normal, "n").is_ok());
}

#[test]
fn leases_release_on_drop_and_once() {
    let c = LocalCounters::new();
    let l = limits(("A", Some(2)), Some(("P", Some(2))), ("C", Some(2)));
    let mut first = c.acquire(&l, "1").expect("room");
    let second = c.acquire(&l, "2").expect("room");
    assert_eq!(lives(&c), [2, 2, 2]);
    assert_eq!(c.acquire(&l, "3").map(|_| ()), Err(Scope::Account));

    assert!(first.is_held());
    assert!(first.release());
    assert!(!first.is_held());
    // A second release, and the drop after it, give back nothing more: the other call's
    // channels stay counted.
    assert!(!first.release());
    drop(first);
    assert_eq!(lives(&c), [1, 1, 1]);

    {
        let _third = c.acquire(&l, "3").expect("room again");
        assert_eq!(lives(&c), [2, 2, 2]);
    } // dropped: released
    assert_eq!(lives(&c), [1, 1, 1]);
    drop(second);
    assert_eq!(lives(&c), [0, 0, 0]);
    // A lease dropped unread inside an unpolled future releases too.
    drop(Counters::acquire(&c, &l, "4"));
    assert_eq!(lives(&c), [0, 0, 0]);
}

#[test]
fn unknown_ids_read_zero() {
    let c = LocalCounters::new();
    assert_eq!(c.live(Scope::Account, "nobody"), 0);
    assert_eq!(c.spend("nobody", 3), Decimal::ZERO);
    assert_eq!(c.calls_to("nobody", "+14155550100", Timestamp(0)), 0);
}

/// The engine is written against the trait; the decision reads through `Usage`.
#[test]
fn through_the_traits() {
    fn usage_of(u: &dyn Usage) -> (u32, Decimal, u32) {
        (u.channels(Scope::Connection, "C"), u.spend_today("P", 20_000), u.calls_to("P", "+14155550100", Timestamp(0)))
    }
    async fn call<C: Counters>(c: &C) -> Result<engine::counters::ChannelLease, Scope> {
        let l = limits(("A", Some(1)), Some(("P", Some(1))), ("C", Some(1)));
        let lease = c.acquire(&l, "call-1").await?;
        c.add_spend("P", 20_000, Decimal::new(25, 2)).await;
        c.record_call_to("P", "+14155550100", Timestamp(5)).await;
        Ok(lease)
    }
    let c = LocalCounters::new();
    let lease = ready(call(&c)).expect("room");
    assert_eq!(Counters::live(&c, Scope::Account, "A"), 1);
    assert_eq!(usage_of(&c), (1, Decimal::new(25, 2), 1));
    assert_eq!(ready(call(&c)).map(|_| ()), Err(Scope::Account));
    drop(lease);
    assert_eq!(usage_of(&c).0, 0);
}

#[test]
fn spend_per_utc_day() {
    let c = LocalCounters::new();
    // 2026-11-27T00:00:00Z; the last millisecond before it is the day before.
    let midnight = Timestamp::from_secs(1_795_737_600);
    let (yesterday, today) = (Timestamp(midnight.0 - 1).utc_day(), midnight.utc_day());
    assert_eq!(yesterday + 1, today);

    c.add_spend("P", yesterday, Decimal::new(10, 2));
    c.add_spend("P", yesterday, Decimal::new(20, 2));
    assert_eq!(c.spend("P", yesterday), Decimal::new(30, 2), "exact decimals: 0.10 + 0.20 = 0.30");
    assert_eq!(c.spend("P", today), Decimal::ZERO, "a new day starts at zero");
    assert_eq!(c.spend_today("P", today), Decimal::ZERO);

    c.add_spend("P", today, Decimal::new(1_5, 1));
    assert_eq!(c.spend("P", today), Decimal::new(15, 1));
    // A call that crossed midnight may still add to yesterday.
    c.add_spend("P", yesterday, Decimal::new(5, 2));
    assert_eq!(c.spend("P", yesterday), Decimal::new(35, 2));
    // A correction can be negative.
    c.add_spend("P", today, Decimal::new(-5, 1));
    assert_eq!(c.spend("P", today), Decimal::ONE);
    // Profiles are apart.
    assert_eq!(c.spend("Q", today), Decimal::ZERO);

    // Two days on: only the latest two days are kept; older spend reaches no limit.
    c.add_spend("P", today + 2, Decimal::TWO);
    assert_eq!(c.spend("P", today + 2), Decimal::TWO);
    assert_eq!(c.spend("P", today), Decimal::ONE);
    assert_eq!(c.spend("P", yesterday), Decimal::ZERO);
    c.add_spend("P", yesterday, Decimal::TEN);
    assert_eq!(c.spend("P", yesterday), Decimal::ZERO, "too old to keep");
    // A day between the two kept replaces the older.
    c.add_spend("P", today + 1, Decimal::ONE);
    assert_eq!(
        [c.spend("P", today), c.spend("P", today + 1), c.spend("P", today + 2)],
        [Decimal::ZERO, Decimal::ONE, Decimal::TWO]
    );

    // Housekeeping forgets profiles with nothing today or yesterday.
    c.prune(Timestamp((today + 4) * 86_400_000));
    assert_eq!(c.spend("P", today + 2), Decimal::ZERO);
    c.add_spend("P", today + 4, Decimal::ONE);
    c.prune(Timestamp((today + 5) * 86_400_000));
    assert_eq!(c.spend("P", today + 4), Decimal::ONE, "yesterday's spend survives");
}

#[test]
fn calls_to_windows() {
    let c = LocalCounters::new();
    let t0 = Timestamp::from_secs(1_795_737_600);
    let n = "+14155550100";
    for dt in [0, 1_000, 10_000] {
        c.record_call_to("P", n, t0.plus_millis(dt));
    }
    // `since` is inclusive.
    let cases = [(0, 3), (1, 2), (1_000, 2), (1_001, 1), (10_000, 1), (10_001, 0)];
    for (since, expected) in cases {
        assert_eq!(c.calls_to("P", n, t0.plus_millis(since)), expected, "since t0+{since}ms");
    }
    assert_eq!(c.calls_to("P", n, Timestamp(0)), 3);
    assert_eq!(c.calls_to("P", "+14155550101", Timestamp(0)), 0, "another number");
    assert_eq!(c.calls_to("Q", n, Timestamp(0)), 0, "another profile");
    // A record that arrives late (another thread's) still counts in its place.
    c.record_call_to("P", n, t0.plus_millis(5_000));
    assert_eq!(c.calls_to("P", n, t0.plus_millis(4_000)), 2);
    assert_eq!(c.calls_to("P", n, t0.plus_millis(6_000)), 1);
    // The default retention covers a whole day's window.
    let late = t0.plus_millis(CALLS_TO_RETENTION_MS);
    c.record_call_to("P", n, late);
    assert_eq!(c.calls_to("P", n, t0), 5);
    assert_eq!(Usage::calls_to(&c, "P", n, t0.plus_millis(1)), 4);
}

#[test]
fn calls_to_pruned_past_retention() {
    let hour = 3_600_000;
    let c = LocalCounters::with_retention(hour);
    let t0 = Timestamp::from_secs(1_795_737_600);
    let n = "+14155550100";
    c.record_call_to("P", n, t0);
    c.record_call_to("P", n, t0.plus_millis(hour / 2));
    // A record an hour and a bit later drops the first.
    c.record_call_to("P", n, t0.plus_millis(hour + 1));
    assert_eq!(c.recorded_calls(), 2);
    assert_eq!(c.calls_to("P", n, t0), 2);

    // Many numbers, each called once: memory follows the last hour (plus at most two sweep
    // periods of 1/32 hour, rounded up to minutes), without any housekeeping call.
    let c = LocalCounters::with_retention(hour);
    let per_minute = 200;
    let mut most = 0;
    for minute in 0..240u64 {
        for i in 0..per_minute {
            let number = format!("+1415{:07}", minute * per_minute + i);
            c.record_call_to("P", &number, t0.plus_millis(minute * 60_000 + i));
        }
        most = most.max(c.recorded_calls());
    }
    let bound = (60 + 4) * per_minute as usize;
    assert!(most <= bound, "kept {most} records, more than {bound}");
    assert!(most >= 60 * per_minute as usize, "the last hour is kept ({most})");

    // Housekeeping drops everything past retention.
    c.prune(t0.plus_millis(240 * 60_000 + hour));
    assert_eq!(c.recorded_calls(), 0);
}

#[test]
fn pruning_keeps_held_slots() {
    let c = LocalCounters::new();
    let l = limits(("A", Some(1)), Some(("P", Some(1))), ("C", Some(1)));
    let held = c.acquire(&l, "1").expect("room");
    let other = limits(("B", Some(1)), None, ("D", Some(1)));
    drop(c.acquire(&other, "2").expect("room"));
    c.prune(Timestamp(0));
    // The held call is still counted (its slots were kept), the idle ones read zero.
    assert_eq!(lives(&c), [1, 1, 1]);
    assert_eq!(c.acquire(&l, "3").map(|_| ()), Err(Scope::Account));
    assert_eq!(c.live(Scope::Account, "B"), 0);
    drop(held);
    assert_eq!(lives(&c), [0, 0, 0]);
    c.prune(Timestamp(0));
    assert!(c.acquire(&l, "4").is_ok());
}

proptest! {
    /// Counting since a time agrees with a plain count, whatever the records' order and
    /// duplicates.
    #[test]
    fn calls_to_counts_like_a_scan(
        times in proptest::collection::vec(0..200u64, 0..80),
        sinces in proptest::collection::vec(0..220u64, 1..10),
    ) {
        let c = LocalCounters::new();
        for &t in &times {
            c.record_call_to("P", "+14155550100", Timestamp(1_000_000 + t));
        }
        prop_assert_eq!(c.recorded_calls(), times.len());
        for since in sinces {
            let expected = times.iter().filter(|&&t| t >= since).count() as u32;
            prop_assert_eq!(c.calls_to("P", "+14155550100", Timestamp(1_000_000 + since)), expected, "since {}", since);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Account index, profile index (None: no profile), connection index, emergency.
    Acquire(usize, Option<usize>, usize, bool),
    Release(usize),
    ReleaseTwice(usize),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, proptest::option::of(0..3usize), 0..4usize, proptest::bool::weighted(0.1))
            .prop_map(|(a, p, c, e)| Op::Acquire(a, p, c, e)),
        1 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::ReleaseTwice),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

proptest! {
    /// Random takes, releases and drops against a model: every take is granted exactly when the
    /// model has room (else refused on the first full scope, taking nothing), counts match the
    /// model throughout, limited calls never exceed a limit, and everything ends at zero.
    #[test]
    fn random_sequences_match_a_model(
        limits_by_scope in proptest::collection::vec(proptest::option::of(0..4u32), 9),
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let ids: [(Scope, &[&str]); 3] = [
            (Scope::Account, &["A0", "A1"]),
            (Scope::Profile, &["P0", "P1", "P2"]),
            (Scope::Connection, &["C0", "C1", "C2", "C3"]),
        ];
        let limit_of: HashMap<&str, Option<u32>> =
            ids.iter().flat_map(|(_, names)| names.iter().copied()).zip(limits_by_scope.iter().copied()).collect();
        let c = LocalCounters::new();
        // Held leases with the ids they count on and whether they were emergency calls.
        let mut held: Vec<(ChannelLease, Vec<&str>, bool)> = Vec::new();
        let mut model: HashMap<&str, u32> = HashMap::new();
        let mut emergency_on: HashMap<&str, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Acquire(a, p, conn, emergency) => {
                    let (a, p, conn) = (ids[0].1[a], p.map(|p| ids[1].1[p]), ids[2].1[conn]);
                    let lim = |id: &str| if emergency { None } else { limit_of[id] };
                    let l = limits((a, lim(a)), p.map(|p| (p, lim(p))), (conn, lim(conn)));
                    let full = |id: &str| lim(id).is_some_and(|l| model.get(id).copied().unwrap_or(0) >= l);
                    let expected = if full(a) {
                        Err(Scope::Account)
                    } else if p.is_some_and(full) {
                        Err(Scope::Profile)
                    } else if full(conn) {
                        Err(Scope::Connection)
                    } else {
                        Ok(())
                    };
                    let got = c.acquire(&l, "call");
                    prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|s| *s), expected);
                    if let Ok(lease) = got {
                        let taken: Vec<&str> = [Some(a), p, Some(conn)].into_iter().flatten().collect();
                        for id in &taken {
                            *model.entry(id).or_default() += 1;
                            if emergency {
                                *emergency_on.entry(id).or_default() += 1;
                            }
                        }
                        held.push((lease, taken, emergency));
                    }
                }
                Op::Release(i) | Op::ReleaseTwice(i) | Op::Drop(i) if !held.is_empty() => {
                    let i = i % held.len();
                    let (mut lease, taken, emergency) = held.swap_remove(i);
                    match op {
                        Op::Release(_) => prop_assert!(lease.release()),
                        Op::ReleaseTwice(_) => {
                            prop_assert!(lease.release());
                            prop_assert!(!lease.release());
                        }
                        _ => {}
                    }
                    drop(lease);
                    for id in taken {
                        *model.get_mut(id).expect("counted") -= 1;
                        if emergency {
                            *emergency_on.get_mut(id).expect("counted") -= 1;
                        }
                    }
                }
                _ => {}
            }
            for (scope, names) in &ids {
                for id in *names {
                    let live = c.live(*scope, id);
                    prop_assert_eq!(live, model.get(id).copied().unwrap_or(0), "{:?} {}", scope, id);
                    // Only calls with their limits lifted may be over a limit.
                    if let Some(l) = limit_of[id] {
                        let lifted = emergency_on.get(id).copied().unwrap_or(0);
                        prop_assert!(live - lifted <= l, "{} live {} ({} lifted) limit {}", id, live, lifted, l);
                    }
                }
            }
        }
        drop(held);
        for (scope, names) in &ids {
            for id in *names {
                prop_assert_eq!(c.live(*scope, id), 0);
            }
        }
    }
}

#[test]
fn threads_never_exceed_a_limit() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 20_000;
    let c = LocalCounters::new();
    let (account_limit, profile_limit, connection_limit) = (3, 2, 2);
    let done = AtomicBool::new(false);
    // Leases held right now, as the threads count them: never more than a limit.
    let held = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
    let refused = AtomicU32::new(0);
    thread::scope(|s| {
        // A reader that watches the counters the whole time.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                assert!(c.live(Scope::Account, "A") <= account_limit);
                assert!(c.live(Scope::Profile, "P") <= profile_limit);
                assert!(c.live(Scope::Connection, "C0") <= connection_limit);
                assert!(c.live(Scope::Connection, "C1") <= connection_limit);
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (c, held, refused) = (&c, &held, &refused);
                s.spawn(move || {
                    let conn = ["C0", "C1"][t % 2];
                    for round in 0..ROUNDS {
                        let with_profile = (round + t) % 3 != 0;
                        let l = limits(
                            ("A", Some(account_limit)),
                            with_profile.then_some(("P", Some(profile_limit))),
                            (conn, Some(connection_limit)),
                        );
                        let Ok(lease) = c.acquire(&l, "call") else {
                            refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let counted = [Some(0), with_profile.then_some(1), Some(2 + t % 2)];
                        let limit_of = [account_limit, profile_limit, connection_limit, connection_limit];
                        for i in counted.into_iter().flatten() {
                            let now = held[i].fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= limit_of[i], "counter {i}: {now} held, limit {}", limit_of[i]);
                        }
                        if round % 7 == 0 {
                            thread::yield_now();
                        }
                        for i in counted.into_iter().flatten() {
                            held[i].fetch_sub(1, Ordering::SeqCst);
                        }
                        drop(lease);
                    }
                })
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        // Stop the reader before a worker's failure is raised, or the scope would wait for it.
        done.store(true, Ordering::Relaxed);
        for r in results {
            r.expect("worker");
        }
    });
    assert!(refused.load(Ordering::Relaxed) > 0, "the limits were reached at some point");
    assert_eq!(lives_of(&c, &["A"], &["P"], &["C0", "C1"]), 0);
}

fn lives_of(c: &LocalCounters, accounts: &[&str], profiles: &[&str], connections: &[&str]) -> u32 {
    let sum = |scope, ids: &[&str]| ids.iter().map(|id| c.live(scope, id)).sum::<u32>();
    sum(Scope::Account, accounts) + sum(Scope::Profile, profiles) + sum(Scope::Connection, connections)
}

/// All or none, under contention: a take that is refused on its connection never holds the
/// account's only channel even for an instant, so another call on that account, alone on it,
/// is never refused.
#[test]
fn a_refused_take_is_never_seen_half_done() {
    const ROUNDS: usize = 50_000;
    let c = LocalCounters::new();
    let stop = AtomicBool::new(false);
    let blocked = limits(("A", Some(1)), Some(("P", Some(5))), ("FULL", Some(0)));
    let alone = limits(("A", Some(1)), Some(("P", Some(5))), ("OPEN", None));
    thread::scope(|s| {
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut attempts = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        assert!(c.acquire(&blocked, "blocked").is_err());
                        attempts += 1;
                    }
                    attempts
                })
            })
            .collect();
        let refused = (0..ROUNDS).filter(|_| c.acquire(&alone, "alone").is_err()).count();
        stop.store(true, Ordering::Relaxed);
        let attempts: Vec<_> = spinners.into_iter().map(|s| s.join().expect("spinner")).collect();
        assert_eq!(refused, 0, "the account's channel seemed taken by a take that failed");
        assert!(attempts.iter().all(|&a| a > 0));
    });
    assert_eq!(lives_of(&c, &["A"], &["P"], &["FULL", "OPEN"]), 0);
}

fn bucket(key: CallRateKey, per_second: u32, burst: u32) -> CallRateBucket {
    CallRateBucket { key, rate: CallRate::new(per_second, burst).unwrap() }
}

fn source(ip: &str) -> CallRateKey {
    CallRateKey::source(ip.parse().unwrap())
}

fn account(id: &str) -> CallRateKey {
    CallRateKey::Account(Id::from(id))
}

/// A take's answer: `Err(i)` names the first bucket without a token.
type Taken = Result<(), usize>;

/// Token buckets under a clock the test moves: each row takes from some buckets at a time (ms)
/// and expects the take, or the first bucket without a token. The same rows run through
/// `NodeCounters` (the node's type), whose local futures are ready at once.
#[test]
fn call_rate_buckets_table() {
    let s = || bucket(source("192.0.2.1"), 2, 3);
    let a = || bucket(account("acc-1"), 1, 1);
    let other = || bucket(source("192.0.2.2"), 2, 3);
    #[rustfmt::skip]
    let table: Vec<(u64, Vec<CallRateBucket>, Taken, &str)> = vec![
        (0, vec![s()], Ok(()), "a burst of 3: 1st"),
        (0, vec![s()], Ok(()), "2nd"),
        (0, vec![s()], Ok(()), "3rd"),
        (0, vec![s()], Err(0), "4th at once: empty"),
        (0, vec![other()], Ok(()), "another source has its own bucket"),
        (499, vec![s()], Err(0), "2/s: not a whole token after 499 ms"),
        (500, vec![s()], Ok(()), "one token after 500 ms"),
        (500, vec![s(), a()], Err(0), "source empty: the first bucket is named"),
        (1_000, vec![s(), a()], Ok(()), "both have a token"),
        (1_500, vec![s(), a()], Err(1), "the account's has half a token: named"),
        (1_500, vec![s()], Ok(()), "the refused take took nothing from the source's"),
        (1_900, vec![s()], Err(0), "0.8 of a token"),
        (2_000, vec![s()], Ok(()), "1.0"),
        (400, vec![s()], Err(0), "a clock gone back refills nothing"),
        (60_000, vec![s()], Ok(()), "refilled to the burst, no further: 1st"),
        (60_000, vec![s()], Ok(()), "2nd"),
        (60_000, vec![s()], Ok(()), "3rd"),
        (60_000, vec![s()], Err(0), "4th"),
        (60_000, vec![], Ok(()), "no bucket: nothing to take"),
    ];
    let c = LocalCounters::new();
    let node = NodeCounters::Local(LocalCounters::new());
    for (at, buckets, expected, case) in table {
        assert_eq!(c.take_call_rate(&buckets, Timestamp(at)), expected, "{case} (t={at})");
        assert_eq!(ready(node.take_call_rate(&buckets, Timestamp(at))), expected, "NodeCounters: {case} (t={at})");
    }

    // Full buckets are as good as none: pruning forgets them, and keeps the empty one.
    assert_eq!(c.call_rate_buckets(), 3);
    c.prune(Timestamp(60_000));
    assert_eq!(c.call_rate_buckets(), 1, "the source's bucket is empty at 60 s");
    c.prune(Timestamp(61_499));
    assert_eq!(c.call_rate_buckets(), 1, "2.998 tokens of 3");
    c.prune(Timestamp(61_500));
    assert_eq!(c.call_rate_buckets(), 0);
    assert_eq!(c.take_call_rate(&[s()], Timestamp(61_500)), Ok(()), "a forgotten bucket is a full one");
}

/// Buckets that fill up again are swept as calls come, without any housekeeping call: a flood
/// of one-call sources leaves at most a second's worth behind.
#[test]
fn call_rate_buckets_are_swept_as_time_passes() {
    let c = LocalCounters::new();
    for i in 0..2_000u64 {
        let ip = format!("10.0.{}.{}", i / 250, i % 250);
        // 2,000 sources over 20 s, one call each; each bucket is full again 10 ms later.
        assert_eq!(c.take_call_rate(&[bucket(source(&ip), 100, 1)], Timestamp(i * 10)), Ok(()));
    }
    assert!(c.call_rate_buckets() <= 2 * 100 + 32, "{} buckets kept", c.call_rate_buckets());
}

/// The node's counters type, in process: reads, takes and metrics as `LocalCounters`.
#[test]
fn node_counters_in_process() {
    let node = NodeCounters::from(LocalCounters::new());
    let l = limits(("A", Some(1)), None, ("C", None));
    let lease = ready(node.acquire(&l, "call-1")).expect("room");
    assert_eq!(ready(node.acquire(&l, "call-2")).unwrap_err(), Scope::Account);
    assert_eq!(node.channels(Scope::Account, "A"), 1);
    assert_eq!(Counters::live(&node, Scope::Connection, "C"), 1);
    drop(lease);
    assert_eq!(node.channels(Scope::Account, "A"), 0);
    ready(node.add_spend("P", 3, Decimal::ONE));
    assert_eq!(node.spend_today("P", 3), Decimal::ONE);
    ready(node.record_call_to("P", "+14155550100", Timestamp(9)));
    assert_eq!(node.calls_to("P", "+14155550100", Timestamp(0)), 1);
    assert_eq!(
        (node.lease_refreshes(), node.leases_restored(), node.fallback_takes(), node.write_failures()),
        (0, 0, 0, 0)
    );
    assert_eq!(node.redis_reachable(), None, "no Redis to reach");
}

/// Four threads take from one shared bucket (1,000 tokens) and each from its own (300): the
/// shared tokens go to calls exactly, none to a take its own bucket refused (1,200 own tokens
/// in all, so a refused take that kept a shared token would leave fewer than 1,000 calls).
#[test]
fn call_rate_takes_are_all_or_none_under_threads() {
    let c = LocalCounters::new();
    let shared = bucket(account("acc-1"), 1, 1_000);
    let taken: Vec<u32> = thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (c, shared) = (&c, shared.clone());
                s.spawn(move || {
                    let call = [shared, bucket(source(&format!("192.0.2.{t}")), 1, 300)];
                    (0..1_000).filter(|_| c.take_call_rate(&call, Timestamp(0)).is_ok()).count() as u32
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(taken.iter().all(|&n| n <= 300), "{taken:?}");
    assert_eq!(taken.iter().sum::<u32>(), 1_000, "{taken:?}");
}
