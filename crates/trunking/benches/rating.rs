//! Rating's cost: the longest-prefix lookup in a deck of a million random prefixes (1 to 15
//! digits) for typical E.164 numbers, cache-warm (a few thousand numbers cycled) and spread (a
//! million numbers, so most reads miss the caches); building that deck from its rows; billed
//! seconds and cost.
//!
//! Decks and numbers come from a fixed-seed generator, so runs compare.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use trunking::rating::{BillingIncrement, RateDeck, billed_seconds, cost};

const PREFIXES: usize = 1_000_000;

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize, out: &mut String) {
        for _ in 0..n {
            out.push(char::from(b'0' + self.below(10) as u8));
        }
    }
}

/// Country codes numbers are drawn from (the busiest destinations).
const COUNTRY_CODES: &[&str] = &["1", "44", "49", "33", "39", "34", "52", "55", "61", "81", "86", "91", "234", "353"];

/// `n` unique prefixes of 1 to 15 digits: a third uniform in length and digits; two thirds
/// under the country codes numbers are drawn from, 1 to 8 digits past the code, as real decks
/// are (most rows are the busy countries' area and mobile codes). Rates: a few thousand
/// distinct values of 4 decimals.
fn deck_rows(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = Rng(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n {
        let mut prefix = String::with_capacity(15);
        if rng.below(3) == 0 {
            let len = 1 + rng.below(15) as usize;
            rng.digits(len, &mut prefix);
        } else {
            let code = COUNTRY_CODES[rng.below(COUNTRY_CODES.len() as u64) as usize];
            prefix.push_str(code);
            let len = 1 + rng.below(8) as usize;
            rng.digits(len, &mut prefix);
        }
        if seen.insert(prefix.clone()) {
            let rate = Decimal::new(1 + rng.below(5_000) as i64, 4).to_string();
            rows.push((prefix, rate));
        }
    }
    rows
}

/// `n` E.164 numbers (`+`, a country code, 10 national digits).
fn numbers(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let mut number = String::with_capacity(16);
            number.push('+');
            number.push_str(COUNTRY_CODES[rng.below(COUNTRY_CODES.len() as u64) as usize]);
            rng.digits(10, &mut number);
            number
        })
        .collect()
}

/// Numbers laid out back to back (each 16 bytes, its length last), so the benchmark reads
/// the numbers themselves sequentially and only the deck at random.
fn packed(numbers: &[String]) -> Vec<[u8; 16]> {
    numbers
        .iter()
        .map(|n| {
            let mut slot = [0u8; 16];
            slot[..n.len()].copy_from_slice(n.as_bytes());
            slot[15] = n.len() as u8;
            slot
        })
        .collect()
}

fn number(slot: &[u8; 16]) -> &str {
    std::str::from_utf8(&slot[..usize::from(slot[15])]).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let rows = deck_rows(PREFIXES, 0x5eed_0001);
    let started = Instant::now();
    let deck = RateDeck::build(rows.iter().map(|(p, r)| (p, r))).unwrap();
    let built = started.elapsed();
    let warm = packed(&numbers(4_096, 0x5eed_0002));
    let spread = packed(&numbers(1 << 20, 0x5eed_0003));
    let rated = spread.iter().filter(|n| deck.rate_for(number(n)).is_some()).count();
    eprintln!(
        "rating: {} prefixes, {} distinct rates, built in {:.0?}, {:.1} MiB; {:.1}% of numbers rated",
        deck.len(),
        deck.distinct_rates(),
        built,
        deck.memory_bytes() as f64 / (1 << 20) as f64,
        100.0 * rated as f64 / spread.len() as f64
    );

    let mut g = c.benchmark_group("rating");
    for (name, set) in [("rate_for_1m_warm", &warm), ("rate_for_1m_spread", &spread)] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (set.len() - 1);
                black_box(deck.rate_for(black_box(number(&set[i]))))
            })
        });
    }
    let small = RateDeck::build(deck_rows(10_000, 0x5eed_0004).iter().map(|(p, r)| (p, r))).unwrap();
    let mut i = 0usize;
    g.bench_function("rate_for_10k_warm", |b| {
        b.iter(|| {
            i = (i + 1) & (warm.len() - 1);
            black_box(small.rate_for(black_box(number(&warm[i]))))
        })
    });
    g.bench_function("billed_seconds_and_cost", |b| {
        let increment = BillingIncrement { first: 30, next: 6 };
        let rate = Decimal::new(123, 4);
        let mut ms = 0u64;
        b.iter(|| {
            ms = (ms + 7_919) % 7_200_000;
            black_box(cost(rate, billed_seconds(black_box(ms), increment)))
        })
    });
    g.sample_size(10);
    g.bench_function("build_1m", |b| {
        b.iter(|| black_box(RateDeck::build(rows.iter().map(|(p, r)| (p.as_str(), r.as_str()))).map(|d| d.len())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
