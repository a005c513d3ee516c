//! The numbering plan's share of the per-call budget: reading a dialed number and a caller
//! number (normalise to E.164 + country + kind), the whole Caller ID Policy, a national format
//! for delivery; and `phonenumber::parse`, which the compiled plan replaces, for comparison.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use trunking::Trace;
use trunking::caller_id::{self, CallerHeader, CallerIdSettings, CallerIdentity};
use trunking::numbering::{Country, NumberingPlan};

fn bench(c: &mut Criterion) {
    let started = Instant::now();
    let plan = NumberingPlan::new();
    eprintln!("numbering plan built in {:?} ({} automaton states)", started.elapsed(), plan.automaton_states());

    let us = Country::US;
    c.bench_function("dial US national 3129457420", |b| {
        b.iter(|| plan.classify_dialed(black_box("3129457420"), black_box(us)))
    });
    c.bench_function("dial US +13129457420", |b| b.iter(|| plan.classify_dialed(black_box("+13129457420"), us)));
    c.bench_function("dial US 911 (emergency)", |b| b.iter(|| plan.classify_dialed(black_box("911"), us)));
    c.bench_function("dial Canada +14165550123", |b| b.iter(|| plan.classify_dialed(black_box("+14165550123"), us)));
    c.bench_function("dial Jamaica +18765551234", |b| b.iter(|| plan.classify_dialed(black_box("+18765551234"), us)));
    c.bench_function("dial US 011 44 20 7946 0000", |b| {
        b.iter(|| plan.classify_dialed(black_box("011 44 20 7946 0000"), us))
    });
    let gb = Country::GB;
    c.bench_function("dial GB national 020 7946 0000", |b| {
        b.iter(|| plan.classify_dialed(black_box("020 7946 0000"), gb))
    });
    c.bench_function("caller ID parse US 13129457420", |b| b.iter(|| plan.parse(black_box("13129457420"), us)));

    let destination = plan.classify_dialed("2125550123", us).unwrap();
    let owners: HashMap<String, String> = HashMap::from([("+13129457420".into(), "acct".into())]);
    let settings = CallerIdSettings { localization: Some(us), ani_override: None };
    let identity = CallerIdentity { header: CallerHeader::PAssertedIdentity, user: "13129457420".into() };
    c.bench_function("caller ID check (policy + trace)", |b| {
        b.iter(|| {
            let mut trace = Trace::new();
            caller_id::check(
                Some(black_box(&identity)),
                false,
                &destination,
                &settings,
                &owners,
                "acct",
                &plan,
                &mut trace,
            )
        })
    });

    let gb_number = plan.e164("+442079460000").unwrap().e164;
    c.bench_function("national format +442079460000", |b| b.iter(|| plan.national_format(black_box(&gb_number))));

    c.bench_function("phonenumber::parse US 3129457420 (replaced)", |b| {
        b.iter(|| phonenumber::parse(Some(phonenumber::country::US), black_box("3129457420")))
    });
    c.bench_function("phonenumber::parse +13129457420 + is_valid (replaced)", |b| {
        b.iter(|| phonenumber::parse(None, black_box("+13129457420")).map(|p| p.is_valid()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
