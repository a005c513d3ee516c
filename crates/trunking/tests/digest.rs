//! SIP digest authentication: known answers from the RFCs, round trips through our own
//! challenge and client, one row per verdict and fault, expiry, replay, tampering, a
//! SIPp-shaped client, and totality over arbitrary header text.

use md5::{Digest, Md5};
use proptest::prelude::*;
use sip::headers::Auth;
use trunking::Timestamp;
use trunking::digest::{
    DEFAULT_NONCE_LIFETIME_MS, DigestAlgorithm, DigestFault, DigestRealm, DigestVerdict, ReplayGuard, StoredDigest,
    authorization, username,
};

const REALM: &str = "sip.opentrunk.local";
const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const USER: &str = "myusername123";
const PASSWORD: &str = "my123secure456password789";
const URI: &str = "sip:+15551234567@sip.opentrunk.local";
const T0: Timestamp = Timestamp(1_795_737_600_000);

fn realm() -> DigestRealm {
    DigestRealm::new(REALM, KEY, DEFAULT_NONCE_LIFETIME_MS)
}

fn stored() -> StoredDigest {
    StoredDigest::from_password(USER, REALM, PASSWORD)
}

fn auth(s: &str) -> Auth<'_> {
    Auth::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
}

/// The challenge for `algorithm` among the realm's challenges issued at `now`.
fn challenge_for(r: &DigestRealm, algorithm: DigestAlgorithm, now: Timestamp) -> String {
    let marker = format!("algorithm={}", algorithm.as_str());
    r.challenges(now, false).into_iter().find(|c| c.contains(&marker)).unwrap()
}

fn answer(challenge: &str, password: &str, nc: u32) -> String {
    authorization(&auth(challenge), "INVITE", URI, USER, password, "c0ffee42", nc).unwrap()
}

fn verify(r: &DigestRealm, credentials: &str, now: Timestamp, guard: &mut ReplayGuard) -> DigestVerdict {
    r.verify(&auth(credentials), "INVITE", &stored(), now, guard)
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Known answers.

#[test]
fn rfc2617_section_3_5_md5() {
    let challenge = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    let a =
        authorization(&auth(challenge), "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1).unwrap();
    assert_eq!(
        a,
        r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41""#
    );
}

#[test]
fn rfc7616_section_3_9_1_sha256_and_md5() {
    let base = r#"realm="http-auth@example.org", qop="auth, auth-int", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    for (algorithm, response) in [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ] {
        let challenge = format!("Digest {base}, algorithm={algorithm}");
        let a =
            authorization(&auth(&challenge), "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce, 1).unwrap();
        let a = auth(&a);
        assert_eq!(a.param("response").unwrap(), response, "{algorithm}");
        assert_eq!(a.param("algorithm").unwrap(), algorithm);
        assert_eq!(a.param("nc").unwrap(), "00000001");
        assert_eq!(a.param("qop").unwrap(), "auth");
        assert_eq!(a.param("cnonce").unwrap(), cnonce);
        assert_eq!(a.param("opaque").unwrap(), "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS");
    }
}

#[test]
fn stored_digest_matches_the_api() {
    // The vector of crates/api connections_common `ha1_both_variants`.
    let d = stored();
    assert_eq!(d.ha1_md5, "b046f88fafa33d8bbbb99323db59792b");
    assert_eq!(d.ha1_sha256, "b453a5d8c98b27a3e6d81c0f7980421062006ff6d194d302a1c85b2dcc9d48bf");
    // The API's `_digest` document reads as a StoredDigest (its user_name is ignored).
    let doc = serde_json::json!({
        "user_name": USER, "realm": REALM,
        "ha1_md5": "b046f88fafa33d8bbbb99323db59792b",
        "ha1_sha256": "b453a5d8c98b27a3e6d81c0f7980421062006ff6d194d302a1c85b2dcc9d48bf",
    });
    assert_eq!(serde_json::from_value::<StoredDigest>(doc).unwrap(), d);
}

// ---------------------------------------------------------------------------------------------
// Challenges and round trips.

#[test]
fn an_operator_may_offer_md5_alone() {
    let r = realm().with_algorithms(&[DigestAlgorithm::Md5]);
    let c = r.challenges(T0, false);
    assert_eq!(c.len(), 1);
    assert_eq!(auth(&c[0]).param("algorithm").unwrap(), "MD5");
    let r = realm().with_algorithms(&[DigestAlgorithm::Sha256, DigestAlgorithm::Md5]);
    let order: Vec<_> =
        r.challenges(T0, false).iter().map(|c| auth(c).param("algorithm").unwrap().into_owned()).collect();
    assert_eq!(order, ["SHA-256", "MD5"]);
}

#[test]
fn challenges_md5_first_then_sha256_with_one_nonce() {
    let r = realm().with_opaque("op1");
    let c = r.challenges(T0, false);
    assert_eq!(c.len(), 2);
    let (md5, sha) = (auth(&c[0]), auth(&c[1]));
    assert_eq!(sha.param("algorithm").unwrap(), "SHA-256");
    assert_eq!(md5.param("algorithm").unwrap(), "MD5");
    for a in [&sha, &md5] {
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.param("realm").unwrap(), REALM);
        assert_eq!(a.param("qop").unwrap(), "auth");
        assert_eq!(a.param("opaque").unwrap(), "op1");
        assert!(a.param("stale").is_none());
        assert!(c[0].contains(r#"qop="auth""#));
    }
    assert_eq!(sha.param("nonce"), md5.param("nonce"));
    let nonce = sha.param("nonce").unwrap();
    assert_eq!(c[0], format!(r#"Digest realm="{REALM}", nonce="{nonce}", opaque="op1", algorithm=MD5, qop="auth""#));

    let stale = realm().challenges(T0, true);
    assert!(stale.iter().all(|c| auth(c).param("stale").as_deref() == Some("true")));
    // Every challenge carries a new nonce.
    assert_ne!(auth(&r.challenges(T0, false)[0]).param("nonce").unwrap(), nonce);
}

#[test]
fn round_trip_both_algorithms() {
    for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
        let r = realm();
        let mut guard = ReplayGuard::default();
        let challenge = challenge_for(&r, algorithm, T0);
        let first = answer(&challenge, PASSWORD, 1);
        assert_eq!(username(&auth(&first)).unwrap(), USER);
        assert_eq!(verify(&r, &first, T0.plus_millis(120), &mut guard), DigestVerdict::Valid, "{algorithm:?}");
        // The same nonce serves the next request with a higher count.
        let second = answer(&challenge, PASSWORD, 2);
        assert_eq!(verify(&r, &second, T0.plus_millis(5_000), &mut guard), DigestVerdict::Valid, "{algorithm:?}");
        assert_eq!(
            verify(&r, &second, T0.plus_millis(5_001), &mut guard),
            DigestVerdict::Invalid(DigestFault::Replay),
            "{algorithm:?}"
        );
    }
}

#[test]
fn another_node_with_the_same_key_verifies() {
    let (a, b) = (realm(), realm());
    let credentials = answer(&challenge_for(&a, DigestAlgorithm::Sha256, T0), PASSWORD, 1);
    assert_eq!(verify(&b, &credentials, T0.plus_millis(10), &mut ReplayGuard::default()), DigestVerdict::Valid);
}

// ---------------------------------------------------------------------------------------------
// One row per verdict and fault.

struct Row {
    name: &'static str,
    credentials: String,
    method: &'static str,
    stored: StoredDigest,
    now: Timestamp,
    /// Verify the credentials once before the checked call (for replay).
    used_before: bool,
    want: DigestVerdict,
}

fn row(name: &'static str, credentials: String, want: DigestVerdict) -> Row {
    Row { name, credentials, method: "INVITE", stored: stored(), now: T0.plus_millis(100), used_before: false, want }
}

/// A valid MD5 credential with one parameter's text replaced.
fn with_param(credentials: &str, name: &str, value: &str) -> String {
    let a = auth(credentials);
    let items: Vec<String> = sip::scan::split_list(a.params)
        .map(|p| {
            let (n, _) = p.split_once('=').unwrap();
            if n.trim().eq_ignore_ascii_case(name) { format!("{n}={value}") } else { p.to_owned() }
        })
        .collect();
    format!("{} {}", a.scheme, items.join(", "))
}

fn without_param(credentials: &str, name: &str) -> String {
    let a = auth(credentials);
    let items: Vec<&str> = sip::scan::split_list(a.params)
        .filter(|p| !p.split_once('=').unwrap().0.trim().eq_ignore_ascii_case(name))
        .collect();
    format!("{} {}", a.scheme, items.join(", "))
}

#[test]
fn every_verdict_and_fault() {
    use DigestFault::*;
    let r = realm();
    let md5_challenge = challenge_for(&r, DigestAlgorithm::Md5, T0);
    let good = answer(&md5_challenge, PASSWORD, 1);
    let good_sha = answer(&challenge_for(&r, DigestAlgorithm::Sha256, T0), PASSWORD, 1);
    let nonce = auth(&md5_challenge).param("nonce").unwrap().into_owned();
    // A nonce with its issue time moved: the client answers it correctly, but it is not ours.
    let mut tampered = nonce.clone().into_bytes();
    tampered[12] = if tampered[12] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign = DigestRealm::new(REALM, [9; 32], DEFAULT_NONCE_LIFETIME_MS).challenges(T0, false).remove(0);
    let other_realm =
        answer(&format!(r#"Digest realm="other.example", nonce="{nonce}", algorithm=MD5, qop="auth""#), PASSWORD, 1);
    let no_qop = answer(&format!(r#"Digest realm="{REALM}", nonce="{nonce}""#), PASSWORD, 1);

    let rows = vec![
        row("valid md5", good.clone(), DigestVerdict::Valid),
        row("valid sha-256", good_sha.clone(), DigestVerdict::Valid),
        row("valid without qop (RFC 2069)", no_qop.clone(), DigestVerdict::Valid),
        Row { now: T0.plus_millis(DEFAULT_NONCE_LIFETIME_MS), ..row("stale", good.clone(), DigestVerdict::Stale) },
        row("wrong scheme", good.replacen("Digest", "Basic", 1), DigestVerdict::Invalid(WrongScheme)),
        row("missing username", without_param(&good, "username"), DigestVerdict::Invalid(MissingParameter("username"))),
        row("missing realm", without_param(&good, "realm"), DigestVerdict::Invalid(MissingParameter("realm"))),
        row("missing nonce", without_param(&good, "nonce"), DigestVerdict::Invalid(MissingParameter("nonce"))),
        row("missing uri", without_param(&good, "uri"), DigestVerdict::Invalid(MissingParameter("uri"))),
        row("missing response", without_param(&good, "response"), DigestVerdict::Invalid(MissingParameter("response"))),
        row("missing nc", without_param(&good, "nc"), DigestVerdict::Invalid(MissingParameter("nc"))),
        row("missing cnonce", without_param(&good, "cnonce"), DigestVerdict::Invalid(MissingParameter("cnonce"))),
        row("empty cnonce", with_param(&good, "cnonce", "\"\""), DigestVerdict::Invalid(MissingParameter("cnonce"))),
        row("malformed nc", with_param(&good, "nc", "1"), DigestVerdict::Invalid(MalformedParameter("nc"))),
        row(
            "repeated nonce",
            format!("{good}, nonce=\"{nonce}\""),
            DigestVerdict::Invalid(MalformedParameter("nonce")),
        ),
        row(
            "tampered nonce",
            answer(&md5_challenge.replace(&nonce, &tampered), PASSWORD, 1),
            DigestVerdict::Invalid(UnknownNonce),
        ),
        row("foreign nonce", answer(&foreign, PASSWORD, 1), DigestVerdict::Invalid(UnknownNonce)),
        row("garbage nonce", with_param(&good, "nonce", "\"abc\""), DigestVerdict::Invalid(UnknownNonce)),
        row("realm mismatch", other_realm, DigestVerdict::Invalid(RealmMismatch)),
        Row {
            stored: StoredDigest::from_password(USER, "other.example", PASSWORD),
            ..row("stored for another realm", good.clone(), DigestVerdict::Invalid(RealmMismatch))
        },
        row(
            "unsupported algorithm",
            with_param(&good, "algorithm", "MD5-sess"),
            DigestVerdict::Invalid(UnsupportedAlgorithm),
        ),
        row("unsupported qop", with_param(&good, "qop", "auth-int"), DigestVerdict::Invalid(UnsupportedQop)),
        Row {
            stored: StoredDigest { ha1_sha256: String::new(), ..stored() },
            ..row("no stored sha-256", good_sha.clone(), DigestVerdict::Invalid(NoStoredDigest))
        },
        row("wrong password", answer(&md5_challenge, "guess", 1), DigestVerdict::Invalid(WrongResponse)),
        Row { method: "BYE", ..row("other method", good.clone(), DigestVerdict::Invalid(WrongResponse)) },
        row("other uri", with_param(&good, "uri", "\"sip:evil@example.com\""), DigestVerdict::Invalid(WrongResponse)),
        row("truncated response", with_param(&good, "response", "\"abc\""), DigestVerdict::Invalid(WrongResponse)),
        Row {
            now: T0.plus_millis(DEFAULT_NONCE_LIFETIME_MS),
            ..row("stale but wrong password", answer(&md5_challenge, "guess", 1), DigestVerdict::Invalid(WrongResponse))
        },
        Row { used_before: true, ..row("replay", good.clone(), DigestVerdict::Invalid(Replay)) },
        Row { used_before: true, ..row("replay without qop", no_qop, DigestVerdict::Invalid(Replay)) },
    ];

    for row in rows {
        let mut guard = ReplayGuard::default();
        let credentials = auth(&row.credentials);
        if row.used_before {
            assert_eq!(
                r.verify(&credentials, row.method, &row.stored, row.now, &mut guard),
                DigestVerdict::Valid,
                "{}",
                row.name
            );
        }
        assert_eq!(r.verify(&credentials, row.method, &row.stored, row.now, &mut guard), row.want, "{}", row.name);
    }
}

#[test]
fn fault_names_are_stable() {
    use DigestFault::*;
    let names: Vec<String> = [
        WrongScheme,
        MissingParameter("nonce"),
        MalformedParameter("nc"),
        UnknownNonce,
        RealmMismatch,
        UnsupportedAlgorithm,
        UnsupportedQop,
        NoStoredDigest,
        WrongResponse,
        Replay,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        names,
        [
            "wrong_scheme",
            "missing_parameter (nonce)",
            "malformed_parameter (nc)",
            "unknown_nonce",
            "realm_mismatch",
            "unsupported_algorithm",
            "unsupported_qop",
            "no_stored_digest",
            "wrong_response",
            "replay"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry, replay, tampering.

#[test]
fn stale_after_expiry_then_fresh_challenge_works() {
    let r = DigestRealm::new(REALM, KEY, 1_000);
    let mut guard = ReplayGuard::default();
    let credentials = answer(&challenge_for(&r, DigestAlgorithm::Md5, T0), PASSWORD, 1);
    assert_eq!(verify(&r, &credentials, T0.plus_millis(999), &mut guard), DigestVerdict::Valid);
    let later = answer(&challenge_for(&r, DigestAlgorithm::Md5, T0), PASSWORD, 1);
    assert_eq!(verify(&r, &later, T0.plus_millis(1_000), &mut guard), DigestVerdict::Stale);
    // Stale does not consume anything; the client re-answers a stale=true challenge.
    let now = T0.plus_millis(1_000);
    let rechallenge = r.challenges(now, true).remove(0);
    let retry = answer(&rechallenge, PASSWORD, 1);
    assert_eq!(verify(&r, &retry, now.plus_millis(50), &mut guard), DigestVerdict::Valid);
}

#[test]
fn replay_rejected_and_counts_must_grow() {
    let r = realm();
    let mut guard = ReplayGuard::default();
    let challenge = challenge_for(&r, DigestAlgorithm::Sha256, T0);
    let now = T0.plus_millis(10);
    assert_eq!(verify(&r, &answer(&challenge, PASSWORD, 5), now, &mut guard), DigestVerdict::Valid);
    for nc in [5, 4, 1] {
        assert_eq!(
            verify(&r, &answer(&challenge, PASSWORD, nc), now, &mut guard),
            DigestVerdict::Invalid(DigestFault::Replay),
            "nc {nc}"
        );
    }
    assert_eq!(verify(&r, &answer(&challenge, PASSWORD, 6), now, &mut guard), DigestVerdict::Valid);
    // A wrong response never consumes a count.
    assert_eq!(
        verify(&r, &answer(&challenge, "guess", 7), now, &mut guard),
        DigestVerdict::Invalid(DigestFault::WrongResponse)
    );
    assert_eq!(verify(&r, &answer(&challenge, PASSWORD, 7), now, &mut guard), DigestVerdict::Valid);
    assert_eq!(guard.len(), 1);
}

#[test]
fn full_guard_never_lets_a_replay_through() {
    let r = realm();
    let mut guard = ReplayGuard::new(4);
    let now = T0.plus_millis(10);
    let first = answer(&challenge_for(&r, DigestAlgorithm::Md5, T0), PASSWORD, 1);
    assert_eq!(verify(&r, &first, now, &mut guard), DigestVerdict::Valid);
    for i in 0..8 {
        let c = answer(&challenge_for(&r, DigestAlgorithm::Md5, T0.plus_millis(1 + i)), PASSWORD, 1);
        assert_eq!(verify(&r, &c, now, &mut guard), DigestVerdict::Valid);
    }
    assert_eq!(guard.len(), 4);
    // `first` was evicted while alive: replayed, it is sent back for a fresh nonce, not accepted.
    assert_eq!(verify(&r, &first, now, &mut guard), DigestVerdict::Stale);
    // Expired nonces are dropped as time passes.
    guard.prune(T0.plus_millis(DEFAULT_NONCE_LIFETIME_MS + 100));
    assert!(guard.is_empty());
}

#[test]
fn tampered_nonce_rejected_at_every_position() {
    let r = realm();
    let challenge = challenge_for(&r, DigestAlgorithm::Md5, T0);
    let nonce = auth(&challenge).param("nonce").unwrap().into_owned();
    for i in 0..nonce.len() {
        let mut bytes = nonce.clone().into_bytes();
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let forged = String::from_utf8(bytes).unwrap();
        // The client computes a correct response for the forged nonce: only the tag can tell.
        let credentials = answer(&challenge.replace(&nonce, &forged), PASSWORD, 1);
        assert_eq!(
            verify(&r, &credentials, T0.plus_millis(10), &mut ReplayGuard::default()),
            DigestVerdict::Invalid(DigestFault::UnknownNonce),
            "position {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A real client's shape: SIPp `[authentication]` (MD5, qop=auth).

/// Credentials exactly as SIPp's auth.cpp writes them (no spaces, cnonce from `%x` of rand(),
/// nc `%08x`, uri `sip:` + the scenario's auth uri), computed independently of our code.
fn sipp_credentials(challenge: &str, uri: &str, algorithm: Option<&str>) -> String {
    let c = auth(challenge);
    let (realm, nonce) = (c.param("realm").unwrap(), c.param("nonce").unwrap());
    let (cnonce, nc) = ("6b8b4567", "00000001");
    let ha1 = md5_hex(&format!("{USER}:{realm}:{PASSWORD}"));
    let ha2 = md5_hex(&format!("INVITE:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let algorithm = algorithm.map(|a| format!(",algorithm={a}")).unwrap_or_default();
    format!(
        r#"Digest username="{USER}",realm="{realm}",cnonce="{cnonce}",nc={nc},qop=auth,uri="{uri}",nonce="{nonce}",response="{response}"{algorithm}"#
    )
}

#[test]
fn sipp_md5_credentials_verify() {
    let r = realm();
    // Whichever challenge of the 407 a client reads, the nonce is the same. Here SIPp answers the
    // MD5 one, and also when it reads the SHA-256 one but computes MD5 without `algorithm`.
    for (challenge, algorithm) in [
        (DigestAlgorithm::Md5, Some("MD5")),
        (DigestAlgorithm::Md5, Some("\"MD5\"")),
        (DigestAlgorithm::Md5, Some("md5")),
        (DigestAlgorithm::Md5, None),
        (DigestAlgorithm::Sha256, None),
    ] {
        let challenge = challenge_for(&r, challenge, T0);
        // The auth uri need not be the Request-URI: the hash covers the uri the client sent.
        for uri in [URI, "sip:sip.opentrunk.local"] {
            let credentials = sipp_credentials(&challenge, uri, algorithm);
            assert_eq!(
                verify(&r, &credentials, T0.plus_millis(30), &mut ReplayGuard::default()),
                DigestVerdict::Valid,
                "{credentials}"
            );
        }
    }
}

#[test]
fn username_lookup() {
    assert_eq!(username(&auth(r#"Digest username="alice", realm="r""#)).unwrap(), "alice");
    assert_eq!(username(&auth(r#"digest USERNAME=bob"#)).unwrap(), "bob");
    assert_eq!(username(&auth(r#"Digest username="a\"b""#)).unwrap(), "a\"b");
    assert!(username(&auth(r#"Digest username="", realm="r""#)).is_none());
    assert!(username(&auth(r#"Digest realm="r""#)).is_none());
    assert!(username(&auth(r#"Basic username="alice""#)).is_none());
}

// ---------------------------------------------------------------------------------------------
// Client side faults.

#[test]
fn client_faults() {
    let go = |challenge: &str, cnonce: &str| authorization(&auth(challenge), "INVITE", URI, USER, PASSWORD, cnonce, 1);
    assert_eq!(go(r#"Basic realm="r""#, "c"), Err(DigestFault::WrongScheme));
    assert_eq!(go(r#"Digest nonce="n""#, "c"), Err(DigestFault::MissingParameter("realm")));
    assert_eq!(go(r#"Digest realm="r""#, "c"), Err(DigestFault::MissingParameter("nonce")));
    assert_eq!(
        go(r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#, "c"),
        Err(DigestFault::UnsupportedAlgorithm)
    );
    assert_eq!(go(r#"Digest realm="r", nonce="n", qop="auth-int""#, "c"), Err(DigestFault::UnsupportedQop));
    assert_eq!(go(r#"Digest realm="r", nonce="n", qop="auth""#, ""), Err(DigestFault::MissingParameter("cnonce")));
    assert_eq!(go(r#"Digest realm="r", nonce="n", nonce="m""#, "c"), Err(DigestFault::MalformedParameter("nonce")));
    assert_eq!(
        authorization(&auth(r#"Digest realm="r", nonce="n""#), "INVITE", "sip:a\r\nX: y", USER, PASSWORD, "c", 1),
        Err(DigestFault::MalformedParameter("uri"))
    );
    // Quoted algorithm, no qop: the RFC 2069 form, algorithm echoed.
    let a = go(r#"Digest realm="r", nonce="n", algorithm="md5""#, "c").unwrap();
    let a = auth(&a);
    assert_eq!(a.param("algorithm").unwrap(), "MD5");
    assert!(a.param("qop").is_none() && a.param("nc").is_none() && a.param("cnonce").is_none());
    let ha1 = md5_hex(&format!("{USER}:r:{PASSWORD}"));
    let ha2 = md5_hex(&format!("INVITE:{URI}"));
    assert_eq!(a.param("response").unwrap(), md5_hex(&format!("{ha1}:n:{ha2}")));
    // Quotes in values survive the round trip.
    let a = authorization(&auth(r#"Digest realm="r\"x", nonce="n""#), "INVITE", URI, "a\"b", PASSWORD, "c", 1).unwrap();
    assert_eq!(auth(&a).param("realm").unwrap(), "r\"x");
    assert_eq!(auth(&a).param("username").unwrap(), "a\"b");
}

// ---------------------------------------------------------------------------------------------
// Totality.

/// Header-ish text: a scheme and parameters with names and values drawn from the digest
/// vocabulary, so the generator reaches deep into verification, not only the parser.
fn digestish() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("username".to_owned()),
        Just("realm".to_owned()),
        Just("nonce".to_owned()),
        Just("uri".to_owned()),
        Just("response".to_owned()),
        Just("algorithm".to_owned()),
        Just("qop".to_owned()),
        Just("nc".to_owned()),
        Just("cnonce".to_owned()),
        Just("opaque".to_owned()),
        Just("stale".to_owned()),
        "[a-zA-Z-]{1,8}",
    ];
    let value = prop_oneof![
        Just(format!("\"{REALM}\"")),
        Just("auth".to_owned()),
        Just("\"auth,auth-int\"".to_owned()),
        Just("MD5".to_owned()),
        Just("SHA-256".to_owned()),
        Just("00000001".to_owned()),
        "\"[0-9a-f]{0,70}\"",
        "\"[^\"\\\\]{0,20}\"",
        "[0-9a-zA-Z]{1,10}",
    ];
    let scheme = prop_oneof![Just("Digest".to_owned()), "[A-Za-z]{1,8}"];
    (scheme, prop::collection::vec((name, value), 0..14)).prop_map(|(scheme, params)| {
        let params: Vec<String> = params.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("{scheme} {}", params.join(", "))
    })
}

/// Any text, or a valid credential with some bytes overwritten.
fn header_text() -> impl Strategy<Value = String> {
    let r = realm();
    let good = answer(&challenge_for(&r, DigestAlgorithm::Md5, T0), PASSWORD, 1);
    let mutated = (prop::collection::vec((0usize..512, any::<char>()), 1..4)).prop_map(move |edits| {
        let mut chars: Vec<char> = good.chars().collect();
        for (i, ch) in edits {
            let i = i % chars.len();
            chars[i] = ch;
        }
        chars.into_iter().collect()
    });
    prop_oneof![any::<String>(), "\\PC{0,300}", digestish(), mutated]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn verify_never_panics(text in header_text(), method in prop_oneof![Just("INVITE".to_owned()), "[A-Z]{0,8}"],
        now in prop_oneof![any::<u64>(), T0.0..T0.0 + 2 * DEFAULT_NONCE_LIFETIME_MS],
        small_guard in any::<bool>()) {
        let r = realm().with_opaque("x");
        let mut guard = ReplayGuard::new(if small_guard { 1 } else { 64 });
        if let Ok(credentials) = Auth::parse(&text) {
            let _ = username(&credentials);
            for stored in [stored(), StoredDigest { realm: String::new(), ha1_md5: "zz".into(), ha1_sha256: "\u{e9}".into() }] {
                let first = r.verify(&credentials, &method, &stored, Timestamp(now), &mut guard);
                let again = r.verify(&credentials, &method, &stored, Timestamp(now), &mut guard);
                // A second identical request is never accepted after a first acceptance.
                prop_assert!(!(first == DigestVerdict::Valid && again == DigestVerdict::Valid), "{text}");
            }
        }
    }

    #[test]
    fn authorization_never_panics(
        text in prop_oneof![any::<String>(), digestish()],
        method in "\\PC{0,10}",
        uri in "\\PC{0,40}",
        user in "\\PC{0,20}",
        password in any::<String>(),
        cnonce in "\\PC{0,20}",
        nc in any::<u32>(),
    ) {
        if let Ok(challenge) = Auth::parse(&text)
            && let Ok(value) = authorization(&challenge, &method, &uri, &user, &password, &cnonce, nc)
        {
            // What we write parses back as a header with the same user name.
            let parsed = Auth::parse(&value);
            prop_assert!(parsed.is_ok(), "{value}");
            if let Ok(parsed) = parsed {
                let echoed = parsed.param("username");
                prop_assert_eq!(echoed.as_deref(), Some(user.as_str()));
            }
        }
    }

    #[test]
    fn our_client_always_satisfies_our_server(
        password in "\\PC{0,30}",
        cnonce in "[0-9a-zA-Z/+]{1,40}",
        nc in 1u32..,
        sha in any::<bool>(),
        delay in 0u64..DEFAULT_NONCE_LIFETIME_MS,
    ) {
        let r = realm();
        let stored = StoredDigest::from_password(USER, REALM, &password);
        let algorithm = if sha { DigestAlgorithm::Sha256 } else { DigestAlgorithm::Md5 };
        let challenge = challenge_for(&r, algorithm, T0);
        let value = authorization(&auth(&challenge), "INVITE", URI, USER, &password, &cnonce, nc).unwrap();
        let verdict = r.verify(&auth(&value), "INVITE", &stored, T0.plus_millis(delay), &mut ReplayGuard::default());
        prop_assert_eq!(verdict, DigestVerdict::Valid);
    }
}
