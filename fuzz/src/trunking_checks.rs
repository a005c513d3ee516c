//! Checks for the `trunking` crate's readers of network input: numbers as dialed and as caller
//! IDs (the numbering plan), and digest credentials. Shared with
//! `crates/trunking/tests/fuzz_regressions.rs` through `#[path]`, so a saved input replays
//! through the very calls that found it.

use std::sync::LazyLock;

use trunking::caller_id::{AniFormat, DnisFormat, format_ani, format_dnis};
use trunking::digest::{self, DigestRealm, ReplayGuard, StoredDigest};
use trunking::numbering::{Country, NumberingPlan};
use trunking::time::Timestamp;

static PLAN: LazyLock<NumberingPlan> = LazyLock::new(NumberingPlan::new);
const COUNTRIES: [Country; 5] = [Country::US, Country::CA, Country::GB, Country::IE, Country::AU];

/// Builds the numbering plan (the targets' `init`, so no input is timed with it).
pub fn init() {
    LazyLock::force(&PLAN);
}

/// A number read in any localization: never a panic; a number read is valid E.164 that reads
/// back to itself; its national format and the delivery formats never panic.
pub fn numbering(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let plan = &*PLAN;
    let _ = plan.e164(text);
    let _ = plan.dial(text, None);
    for country in COUNTRIES {
        let _ = plan.dial(text, country);
        let _ = plan.is_emergency(text, country);
        let Ok(parsed) = plan.parse(text, country) else { continue };
        let n = parsed.number.e164;
        let again = plan.e164(n.as_str()).unwrap_or_else(|| panic!("{n} read from {text:?} does not read back"));
        assert_eq!(again.e164, n, "{text:?}");
        // The national format is written, never asserted to read back: the metadata makes some
        // national texts ambiguous (Gabon's 7- and 8-digit numbers write `04747900` alike; a
        // Japanese `0037...` number reads as the `0037` international prefix), as in
        // libphonenumber itself. Fuzzing found both; see the regression tests.
        if let Some(home) = parsed.number.country {
            let national = plan.national_format(&n);
            let _ = plan.parse(national.as_str(), home);
        }
        for f in [AniFormat::PlusE164, AniFormat::E164, AniFormat::PlusE164National, AniFormat::E164National] {
            let _ = format_ani(plan, &n, &n, f);
        }
        for f in [DnisFormat::PlusE164, DnisFormat::E164, DnisFormat::National, DnisFormat::SipUsername] {
            let _ = format_dnis(plan, &n, f, Some(text));
        }
    }
}

static REALM: LazyLock<DigestRealm> = LazyLock::new(|| DigestRealm::new("sip.opentrunk.test", [9; 32], 300_000));

/// Digest credentials as any header text: never a panic, never accepted without the password
/// (the fuzzer does not know it), and a challenge read back from the text answers without panic.
pub fn digest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(auth) = sip::Auth::parse(text) else { return };
    let _ = digest::username(&auth);
    let stored = StoredDigest::from_password("alice", "sip.opentrunk.test", "a password the fuzzer cannot know");
    let mut guard = ReplayGuard::new(16);
    let now = Timestamp(1_795_780_800_000);
    let verdict = REALM.verify(&auth, "INVITE", &stored, now, &mut guard);
    assert!(!matches!(verdict, digest::DigestVerdict::Valid), "accepted without the password: {text:?}");
    if let Ok(answer) = digest::authorization(&auth, "INVITE", "sip:x@h", "alice", "pw", "0a4f113b", 1) {
        assert!(sip::Auth::parse(&answer).is_ok(), "our answer does not parse: {answer:?}");
    }
}
