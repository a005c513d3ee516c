//! Inputs the `numbering` and `digest` fuzz targets in `fuzz/` found, replayed through the very
//! checks the targets run (`fuzz/src/trunking_checks.rs`, included below). See `fuzz/README.md`.

#[path = "../../../fuzz/src/trunking_checks.rs"]
mod checks;

/// The harness passes on ordinary input, so a failure below is the code's.
#[test]
fn checks_pass_on_well_formed_input() {
    checks::init();
    for n in [
        "+13129457420",
        "3129457420",
        "13129457420",
        "011 44 20 7946 0000",
        "01-840-1234",
        "911",
        "000",
        "+353-1-840-1234",
    ] {
        checks::numbering(n.as_bytes());
    }
    checks::digest(
        br#"Digest username="alice", realm="sip.opentrunk.test", nonce="00", uri="sip:x@h", response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="x""#,
    );
    checks::digest(br#"Digest realm="carrier.example", nonce="abc", qop="auth", algorithm=SHA-256"#);
}

/// Two finds of the national-format round trip the check first asserted, both the metadata's
/// ambiguity rather than ours (libphonenumber reads them the same way), so the check no longer
/// asserts it: Gabon's old 7-digit +241 4747900 writes nationally as `04747900`, also the valid
/// 8-digit +241 04747900 (`crash-991bd31a`); a Japanese number whose national text starts
/// `0037`, which Japan also dials as an international prefix (`crash-0d73afcc`).
#[test]
fn ambiguous_national_texts_stay_total() {
    checks::numbering(b"011241474 7900");
    checks::numbering(b"001681003768600195529");
}
