//! Signalling memory per call in the switch core, sans-I/O (issue 9: "memory per active call,
//! 10,000 concurrent held calls, under 10 KiB of signalling state"). Not a timing bench: it
//! counts the heap bytes the core holds (an instrumented global allocator: bytes asked for, not
//! the allocator's overhead) and the process's RSS, at four moments:
//!
//! 1. 10,000 calls just answered: each with its caller's INVITE transaction in Accepted (Timer
//!    L) and the carrier's in Accepted (Timer M), 64*T1 = 32 s each.
//! 2. The same calls held 40 s later: those transactions ended, the calls alone.
//! 3. All of them hung up by the caller (BYE, 200; BYE to the carrier, 200): what lingers per
//!    finished call (the BYE server transaction for Timer J, the BYE client transaction for K).
//!    The call entries wait for their BYE client transaction (Timer K, 5 s).
//! 4. 10 s later: only the BYE server transactions (Timer J, 32 s) linger.
//! 5. 100 s later: everything ended; what is left is the tables' capacity.
//!
//! `cargo bench -p engine --bench call_memory`

// `whole_call` is the timing bench's.
#[allow(dead_code)]
mod common;

use std::alloc::System;
use std::time::{Duration, Instant};

use engine::counters::LocalCounters;
use engine::switch::Core;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

use common::{PBX, answer, carrier_answer, inbound, pbx_request, sent, udp_core};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: u64 = 10_000;

/// Heap bytes in use now, as the instrumented allocator counts them.
fn heap_bytes() -> i64 {
    let s = GLOBAL.stats();
    // A reallocation counts in both already (its growth or its shrinking).
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Resident set size, from /proc/self/statm (pages).
fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn report(label: &str, core: &Core, base: (i64, i64), per: u64) {
    let stats = core.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let heap = heap_bytes() - base.0;
    let rss = rss_bytes() - base.1;
    println!(
        "| {label} | {} ({} entries) | {} | {} | {:.2} | {:.2} |",
        core.calls(),
        core.call_entries(),
        load(&stats.live_transactions),
        load(&stats.live_client_transactions),
        heap as f64 / per as f64 / 1024.0,
        rss as f64 / per as f64 / 1024.0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter.
    let counters = LocalCounters::new();
    let t0 = Instant::now();
    let mut core = udp_core(t0);
    let base = (heap_bytes(), rss_bytes());
    println!("Signalling memory in the switch core, {CALLS} calls (KiB per call above the empty core):\n");
    println!("| moment | calls up | server txns | client txns | heap KiB/call | RSS KiB/call |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");

    let mut tags = Vec::with_capacity(CALLS as usize);
    for n in 0..CALLS {
        let (a_tag, _) = answer(&mut core, &counters, n, t0);
        while core.poll_notice().is_some() {}
        tags.push(a_tag);
    }
    let tags_bytes = tags.iter().map(|t| t.capacity() as i64).sum::<i64>() + (tags.capacity() * 24) as i64;
    let base = (base.0 + tags_bytes, base.1);
    report("answered, INVITE transactions lingering (Timers L, M)", &core, base, CALLS);

    let held = t0 + Duration::from_secs(40);
    core.handle_timeout(held);
    sent(&mut core);
    report("held 40 s: the calls alone", &core, base, CALLS);

    for (n, a_tag) in tags.iter().enumerate() {
        let n = n as u64;
        core.handle_inbound(inbound(pbx_request("BYE", n, "b", 2, Some(a_tag)), PBX), held);
        let bye = sent(&mut core).into_iter().find(|m| m.method() == Some(sip::Method::Bye)).expect("BYE");
        core.handle_inbound(carrier_answer(&bye, 200), held);
        sent(&mut core);
        while core.poll_notice().is_some() {}
    }
    report("hung up: what lingers per finished call (Timers J, K)", &core, base, CALLS);

    core.handle_timeout(held + Duration::from_secs(10));
    sent(&mut core);
    report("10 s later: the BYE server transactions alone (Timer J)", &core, base, CALLS);

    core.handle_timeout(held + Duration::from_secs(100));
    sent(&mut core);
    report("100 s later: tables' capacity", &core, base, CALLS);
}
