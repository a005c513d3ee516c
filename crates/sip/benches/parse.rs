//! Parse cost of one typical carrier-trunk INVITE with SDP (`benches/invite.sip`, 852 bytes),
//! ours against `rsipstack` (its `rsip` module). Run: `cargo bench -p sip --bench parse`.
//! Figures and how they were taken: `docs/performance.md`.
//!
//! - `opentrunk/parse`: split into start line, header fields and body; nothing decoded.
//! - `opentrunk/parse+typed`: parse, then decode the six headers every transaction and dialog
//!   needs: top Via (branch), From (tag), To, CSeq, Call-ID, Contact.
//! - `opentrunk/inspect`: the switch's real door path, parse plus every validation check.
//! - `rsipstack/parse`, `rsipstack/parse+typed`: the same two steps with `rsipstack`, decoding
//!   the same six headers through its typed headers.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rsipstack::rsip::prelude::{HeadersExt, ToTypedHeader};

static INVITE: &[u8] = include_bytes!("invite.sip");

fn ours_parse(buf: &'static [u8]) -> sip::Message {
    sip::Message::parse(Bytes::from_static(buf), sip::Framing::Datagram).expect("INVITE parses")
}

fn ours_typed(buf: &'static [u8]) {
    let msg = ours_parse(buf);
    let via = msg.top_via().expect("Via");
    black_box(via.branch());
    black_box(&via);
    let from = msg.from().expect("From");
    black_box(from.tag());
    black_box(&from);
    black_box(msg.to().expect("To"));
    black_box(msg.cseq().expect("CSeq"));
    black_box(msg.call_id().expect("Call-ID"));
    black_box(msg.contacts().expect("Contact"));
}

fn theirs_parse(buf: &[u8]) -> rsipstack::rsip::Request {
    rsipstack::rsip::Request::try_from(buf).expect("INVITE parses")
}

fn theirs_typed(buf: &[u8]) {
    let msg = theirs_parse(buf);
    // The message has one Via value, so the first Via field is the top Via.
    let via = msg.via_header().expect("Via").typed().expect("typed Via");
    black_box(via.branch());
    black_box(&via);
    let from = msg.from_header().expect("From").typed().expect("typed From");
    black_box(from.tag());
    black_box(&from);
    black_box(msg.to_header().expect("To").typed().expect("typed To"));
    black_box(msg.cseq_header().expect("CSeq").typed().expect("typed CSeq"));
    black_box(msg.call_id_header().expect("Call-ID").value());
    black_box(msg.contact_header().expect("Contact").typed().expect("typed Contact"));
}

/// Both parsers must read the message the same way before their speed means anything.
fn sanity() {
    let ours = ours_parse(INVITE);
    assert_eq!(ours.top_via().unwrap().branch(), Some("z9hG4bK7f3a9c21e0"));
    assert_eq!(ours.from().unwrap().tag(), Some("as6f2b9c1e"));
    assert_eq!(ours.cseq().unwrap().seq, 102);
    assert_eq!(ours.body().len(), 238);
    assert!(matches!(
        sip::inspect(Bytes::from_static(INVITE), sip::Framing::Datagram, &sip::Policy::default()),
        sip::Verdict::Accept(_)
    ));

    let theirs = theirs_parse(INVITE);
    let via = theirs.via_header().unwrap().typed().unwrap();
    assert_eq!(via.branch().map(|b| b.to_string()).as_deref(), Some("z9hG4bK7f3a9c21e0"));
    let from = theirs.from_header().unwrap().typed().unwrap();
    assert_eq!(from.tag().map(|t| t.to_string()).as_deref(), Some("as6f2b9c1e"));
    assert_eq!(theirs.cseq_header().unwrap().typed().unwrap().seq, 102);
    assert_eq!(theirs.body().len(), 238);
}

fn bench(c: &mut Criterion) {
    sanity();
    let policy = sip::Policy::default();

    let mut g = c.benchmark_group("invite");
    // One element is one message: criterion then reports messages per second.
    g.throughput(Throughput::Elements(1));
    g.bench_function("opentrunk/parse", |b| b.iter(|| ours_parse(black_box(INVITE))));
    g.bench_function("opentrunk/parse+typed", |b| b.iter(|| ours_typed(black_box(INVITE))));
    g.bench_function("opentrunk/inspect", |b| {
        b.iter(|| sip::inspect(Bytes::from_static(black_box(INVITE)), sip::Framing::Datagram, &policy))
    });
    g.bench_function("rsipstack/parse", |b| b.iter(|| theirs_parse(black_box(INVITE))));
    g.bench_function("rsipstack/parse+typed", |b| b.iter(|| theirs_typed(black_box(INVITE))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
