//! Digest authentication's cost per request: issuing a 407's challenges, verifying credentials
//! (MD5 and SHA-256, steady state with a replay guard that keeps filling), and answering a
//! carrier's challenge.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sip::headers::Auth;
use trunking::Timestamp;
use trunking::digest::{
    DEFAULT_NONCE_LIFETIME_MS, DEFAULT_REPLAY_CAPACITY, DigestAlgorithm, DigestRealm, DigestVerdict, ReplayGuard,
    StoredDigest, authorization, username,
};

const REALM: &str = "sip.opentrunk.local";
const USER: &str = "myusername123";
const PASSWORD: &str = "my123secure456password789";
const URI: &str = "sip:+15551234567@sip.opentrunk.local";
const T0: Timestamp = Timestamp(1_795_737_600_000);
/// Distinct credentials (each with its own nonce) cycled through, so every verification is a
/// first use and the guard works as under load.
const CREDENTIALS: usize = 8_192;

fn credentials(realm: &DigestRealm, algorithm: DigestAlgorithm) -> Vec<String> {
    let index = usize::from(algorithm == DigestAlgorithm::Md5);
    (0..CREDENTIALS)
        .map(|i| {
            let challenge = realm.challenges(T0, false).remove(index);
            let cnonce = format!("{i:08x}");
            authorization(&Auth::parse(&challenge).unwrap(), "INVITE", URI, USER, PASSWORD, &cnonce, 1).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let realm = DigestRealm::new(REALM, [42; 32], DEFAULT_NONCE_LIFETIME_MS);
    let stored = StoredDigest::from_password(USER, REALM, PASSWORD);
    let now = T0.plus_millis(200);

    c.bench_function("digest/challenges", |b| b.iter(|| realm.challenges(black_box(now), false)));

    for algorithm in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
        let all = credentials(&realm, algorithm);
        let name = format!("digest/parse_lookup_verify_{}", algorithm.as_str());
        c.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                // A new guard per pass over the credentials (its cost spread over 8192 calls).
                let mut guard = ReplayGuard::new(DEFAULT_REPLAY_CAPACITY);
                let start = Instant::now();
                for i in 0..iters as usize {
                    let i = i % CREDENTIALS;
                    if i == 0 {
                        guard = ReplayGuard::new(DEFAULT_REPLAY_CAPACITY);
                    }
                    let credentials = Auth::parse(black_box(all[i].as_str())).unwrap();
                    black_box(username(&credentials));
                    let verdict = realm.verify(&credentials, "INVITE", &stored, now, &mut guard);
                    assert_eq!(verdict, DigestVerdict::Valid);
                }
                start.elapsed()
            })
        });
    }

    let challenge = realm.challenges(T0, false).remove(1);
    let challenge = Auth::parse(&challenge).unwrap();
    c.bench_function("digest/authorization_MD5", |b| {
        b.iter(|| authorization(black_box(&challenge), "INVITE", URI, USER, PASSWORD, "0a4f113b", 1))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
