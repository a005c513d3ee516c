//! The README's quickstart, run by `scripts/quickstart-check` exactly as the README writes it,
//! against this build's binary: a newcomer's first call must connect and show its detail record.
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::path::PathBuf;
use std::process::{Command, Stdio};

#[test]
fn readme_quickstart_places_a_call_and_shows_its_record() {
    let sipp = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !sipp {
        if std::env::var("OPENTRUNK_REQUIRE_SIPP").is_ok_and(|v| v == "1") {
            panic!("SIPp is required (scripts/install-test-deps installs sip-tester)");
        }
        println!("skipped: sipp not installed (scripts/install-test-deps installs sip-tester)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/quickstart-check"))
        .env("OPENTRUNK_BIN", env!("CARGO_BIN_EXE_opentrunk"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/quickstart-check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/quickstart-check failed ({}):\n{text}", out.status);
    assert!(text.contains("quickstart-check: the README's first call connected"), "{text}");
}
