//! The in-process counters' cost per call: taking a call's three channels and releasing them
//! (alone; through the async trait; on two threads at once, on the same account, profile and
//! connection and on different ones), the reads a decision makes, a calls-per-number record,
//! and a call rate take from a source's and an account's token buckets.
//!
//! The maps hold 1,000 accounts of 10 connections each (UUID-sized ids), so lookups are not
//! served by a single tiny map.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use engine::counters::{CALLS_TO_RETENTION_MS, Counters, LocalCounters};
use trunking::call_rate::{CallOrigin, CallRate, CallRateLimits};
use trunking::config::Id;
use trunking::outbound::{ChannelLimits, Scope, Usage};
use trunking::time::Timestamp;

fn id(kind: &str, n: usize) -> Id {
    Id::from(format!("{kind}-{n:08x}-7c1e-4a5b-9f0d-3e2a1b4c5d6e").as_str())
}

fn limits(account: usize, connection: usize) -> ChannelLimits {
    ChannelLimits {
        account: (id("acct", account), Some(1_000)),
        profile: Some((id("prof", account), Some(1_000))),
        connection: (id("conn", account * 10 + connection), Some(1_000)),
    }
}

fn populated() -> Arc<LocalCounters> {
    let counters = LocalCounters::new();
    for a in 0..1_000 {
        for c in 0..10 {
            drop(counters.acquire(&limits(a, c), "warm"));
        }
    }
    Arc::new(counters)
}

fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("local counters answer at once"),
    }
}

/// Two threads each take and release `iters` times; the time per take+release on each thread.
fn two_threads(counters: &Arc<LocalCounters>, mine: &ChannelLimits, theirs: &ChannelLimits, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let other = {
        let (counters, barrier, theirs) = (counters.clone(), barrier.clone(), theirs.clone());
        thread::spawn(move || {
            barrier.wait();
            for _ in 0..iters {
                drop(black_box(counters.acquire(&theirs, "b")));
            }
        })
    };
    barrier.wait();
    let start = Instant::now();
    for _ in 0..iters {
        drop(black_box(counters.acquire(mine, "a")));
    }
    let elapsed = start.elapsed();
    other.join().expect("bench thread");
    elapsed
}

fn bench(c: &mut Criterion) {
    let counters = populated();
    let call = limits(417, 3);
    let mut group = c.benchmark_group("counters");

    group.bench_function("acquire_release", |b| {
        b.iter(|| {
            let lease = counters.acquire(black_box(&call), "call").expect("room");
            drop(lease);
        })
    });
    group.bench_function("acquire_release_async_trait", |b| {
        b.iter(|| {
            let lease = poll_ready(Counters::acquire(&*counters, black_box(&call), "call")).expect("room");
            drop(lease);
        })
    });
    group.bench_function("acquire_release_emergency_unlimited", |b| {
        let emergency = ChannelLimits {
            account: (call.account.0.clone(), None),
            profile: None,
            connection: (call.connection.0.clone(), None),
        };
        b.iter(|| drop(counters.acquire(black_box(&emergency), "call").expect("room")))
    });
    group.bench_function("acquire_refused_account_full", |b| {
        let full = ChannelLimits { account: (call.account.0.clone(), Some(0)), ..call.clone() };
        b.iter(|| counters.acquire(black_box(&full), "call").expect_err("full"))
    });
    group.bench_function("two_threads_same_limits", |b| {
        b.iter_custom(|iters| two_threads(&counters, &call, &call, iters))
    });
    let elsewhere = limits(901, 7);
    group.bench_function("two_threads_other_account", |b| {
        b.iter_custom(|iters| two_threads(&counters, &call, &elsewhere, iters))
    });
    group.bench_function("decision_reads", |b| {
        b.iter(|| {
            let u: &dyn Usage = &*counters;
            black_box(u.channels(Scope::Account, &call.account.0))
                + black_box(u.channels(Scope::Profile, &call.profile.as_ref().expect("profile").0))
                + black_box(u.channels(Scope::Connection, &call.connection.0))
        })
    });
    group.bench_function("spend_today", |b| {
        counters.add_spend(&call.account.0, 20_000, rust_decimal::Decimal::new(12, 3));
        b.iter(|| counters.spend(black_box(&call.account.0), 20_000))
    });
    // A call from one of 1,000 sources of an account: two buckets, never empty (the time moves
    // a millisecond a call, the rate refills faster than that).
    let rates = CallRate::new(100_000, 100_000);
    let limits = CallRateLimits { per_source: rates, per_account: rates };
    let buckets: Vec<_> = (0..1_000u32)
        .map(|i| {
            let source = std::net::IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            limits.buckets(CallOrigin::Customer { source, account: &call.account.0, emergency: false })
        })
        .collect();
    let mut at = 1_795_737_600_000u64;
    group.bench_function("call_rate_source_and_account", |b| {
        b.iter(|| {
            at += 1;
            let call = &buckets[(at % 1_000) as usize];
            counters.take_call_rate(black_box(call), Timestamp(at)).expect("a token")
        })
    });
    // A dialer's day: numbers called in turn, a call every 10 ms, each count over the last
    // hour. 10,000 numbers: each called every 100 s and keeping 864 records at the default
    // one-day retention (70 MB in all, so every number is cold in cache); 100 numbers: every
    // second, warm.
    for numbers in [100, 10_000] {
        let numbers: Vec<String> = (0..numbers).map(|i| format!("+1415555{i:04}")).collect();
        let mut now = 1_795_737_600_000u64;
        let mut turn = 0usize;
        let counters = LocalCounters::new();
        // A day of records first, so the deques are at their steady size.
        for _ in 0..CALLS_TO_RETENTION_MS / 10 {
            now += 10;
            turn = (turn + 1) % numbers.len();
            counters.record_call_to("prof-1", &numbers[turn], Timestamp(now));
        }
        group.bench_function(format!("record_call_to_and_count_{}_numbers", numbers.len()), |b| {
            b.iter(|| {
                now += 10;
                turn = (turn + 1) % numbers.len();
                let number = &numbers[turn];
                counters.record_call_to("prof-1", number, Timestamp(now));
                black_box(counters.calls_to("prof-1", number, Timestamp(now - 3_600_000)))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
