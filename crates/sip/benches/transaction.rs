//! Transaction layer cost per message for a typical carrier-trunk INVITE (`benches/invite.sip`),
//! against a table of 10 000 live server transactions. Run:
//! `cargo bench -p sip --bench transaction`.
//!
//! - `transaction/key`: `TransactionKey::for_server` (top Via decode, one small allocation).
//! - `transaction/retransmission`: what a driver does for a retransmitted INVITE once it is
//!   parsed: key, `HashMap` lookup, `handle_request` (re-queues the last response), drain
//!   `poll_transmit`.
//! - `transaction/parse+retransmission`: the same, starting from the datagram.
//! - `transaction/create`: a new INVITE: key, `ServerTransaction::new` (builds and serializes
//!   `100 Trying`), insert into and remove from the table.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sip::{Framing, Message, ServerTransaction, Timers, TransactionKey};

static INVITE: &[u8] = include_bytes!("invite.sip");

fn parse(buf: Bytes) -> Message {
    Message::parse(buf, Framing::Datagram).expect("INVITE parses")
}

/// The bench INVITE with another branch: the other live transactions in the table.
fn with_branch(i: usize) -> Message {
    let text = std::str::from_utf8(INVITE).expect("UTF-8").replace("z9hG4bK7f3a9c21e0", &format!("z9hG4bK{i:012x}"));
    parse(Bytes::from(text))
}

fn bench(c: &mut Criterion) {
    let timers = Timers::default();
    let now = Instant::now();
    let invite = parse(Bytes::from_static(INVITE));
    let key = TransactionKey::for_server(&invite).expect("key");
    assert_eq!(key.as_str(), "SINVITE 203.0.113.17:5060 z9hG4bK7f3a9c21e0");

    let mut table: HashMap<TransactionKey, ServerTransaction> = HashMap::with_capacity(16_384);
    for i in 0..9_999 {
        let m = with_branch(i);
        let tx = ServerTransaction::new(m, false, &timers, now).expect("transaction");
        table.insert(tx.key().clone(), tx);
    }
    let mut tx = ServerTransaction::new(invite.clone(), false, &timers, now).expect("transaction");
    while tx.poll_transmit().is_some() {}
    table.insert(key.clone(), tx);

    let mut g = c.benchmark_group("transaction");
    g.throughput(Throughput::Elements(1));
    g.bench_function("key", |b| b.iter(|| TransactionKey::for_server(black_box(&invite))));
    g.bench_function("retransmission", |b| {
        b.iter_batched(
            || invite.clone(),
            |m| {
                let key = TransactionKey::for_server(&m).expect("key");
                let tx = table.get_mut(&key).expect("matched");
                tx.handle_request(m, now).expect("absorbed");
                black_box(tx.poll_transmit())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("parse+retransmission", |b| {
        b.iter(|| {
            let m = parse(Bytes::from_static(black_box(INVITE)));
            let key = TransactionKey::for_server(&m).expect("key");
            let tx = table.get_mut(&key).expect("matched");
            tx.handle_request(m, now).expect("absorbed");
            black_box(tx.poll_transmit())
        })
    });
    g.bench_function("create", |b| {
        b.iter_batched(
            || invite.clone(),
            |m| {
                let mut tx = ServerTransaction::new(m, false, &timers, now).expect("transaction");
                let trying = tx.poll_transmit();
                let key = tx.key().clone();
                let old = table.insert(key.clone(), tx);
                black_box(trying);
                // Put the table back as it was for the next iteration.
                match old {
                    Some(old) => table.insert(key, old),
                    None => table.remove(&key),
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
