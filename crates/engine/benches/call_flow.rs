//! The switch core's cost per call, sans-I/O: every message of a whole call parsed, matched and
//! answered, with the admission answered in place (the rules' decision is measured apart, in
//! `trunking`'s `decision` bench). One answered call: the customer's INVITE, its 100; the
//! B-leg INVITE; the carrier's 100, 180 and 200 (180 and 200 relayed); both ACKs; the caller's
//! BYE, its 200 and the B-leg BYE with the carrier's 200; the call's record out. And one INVITE
//! refused at admission (403), with its ACK.
//!
//! The core is warmed with 10,000 answered calls in progress, so lookups are not served by tiny
//! tables; the clock advances 1 ms per call and due timers run inside the measurement, so the
//! tables hold what lingers at 1,000 calls a second (transactions absorbing retransmissions for
//! up to 64*T1).

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use engine::admission::Admission;
use engine::counters::LocalCounters;

use common::{PBX, answer, inbound, pbx_request, sent, udp_core, whole_call};

fn bench(c: &mut Criterion) {
    let counters = LocalCounters::new();
    let t0 = Instant::now();
    let mut core = udp_core(t0);
    for n in 0..10_000 {
        answer(&mut core, &counters, 1_000_000_000 + n, t0);
        while core.poll_notice().is_some() {}
    }
    let mut n = 0u64;
    let mut now = t0;
    let mut group = c.benchmark_group("switch core");
    group.bench_function("answered call, 12 messages in, 11 out, record", |b| {
        b.iter(|| {
            n += 1;
            now += Duration::from_millis(1);
            core.handle_timeout(now);
            whole_call(&mut core, &counters, n, now);
        })
    });
    group.bench_function("INVITE refused at admission, with its ACK", |b| {
        b.iter(|| {
            n += 1;
            now += Duration::from_millis(1);
            core.handle_timeout(now);
            let t0 = now;
            core.handle_inbound(inbound(pbx_request("INVITE", n, "r", 1, None), PBX), t0);
            let req = core.poll_admission().expect("an admission");
            let refusal = Admission::refuse(trunking::Reason::D25, None);
            core.admit(req.id, refusal, t0);
            let out = sent(&mut core);
            let tag = out.iter().find(|m| m.status() == Some(403)).and_then(|m| m.to().ok()?.tag().map(str::to_owned));
            core.handle_inbound(inbound(pbx_request("ACK", n, "r", 1, tag.as_deref()), PBX), t0);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
