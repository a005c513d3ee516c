//! SIPp (Debian's `sip-tester`) as a real peer of `opentrunk serve`, on loopback: OPTIONS at
//! 2,000/s for 10 s all answered, and INVITEs under 10% simulated loss each completing their
//! transaction exactly once.

use std::path::PathBuf;
use std::process::{Command, Stdio};

mod support;

fn sipp_available() -> bool {
    let ok = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        if std::env::var("OPENTRUNK_REQUIRE_SIPP").is_ok_and(|v| v == "1") {
            panic!("SIPp is required (scripts/install-test-deps installs sip-tester)");
        }
        println!("skipped: sipp not installed (scripts/install-test-deps installs sip-tester)");
    }
    ok
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

/// Runs SIPp to completion; returns its exit code and its closing statistics screen.
fn sipp(server: &support::Server, scenario_file: &str, args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("ot-sipp-{}-{scenario_file}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = support::free_port().to_string();
    let out = Command::new("sipp")
        .arg(server.sip.to_string())
        .arg("-sf")
        .arg(scenario(scenario_file))
        .args(["-i", "127.0.0.1", "-p", &port, "-t", "u1", "-nostdin", "-timeout", "90s"])
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run sipp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    (out.status.code().unwrap_or(-1), text)
}

/// The cumulative column of a row of SIPp's final screen, e.g. "Successful call".
fn cumulative(screen: &str, row: &str) -> Option<u64> {
    screen.lines().rfind(|l| l.trim_start().starts_with(row))?.split('|').nth(2)?.trim().parse().ok()
}

fn metric(server: &support::Server, name: &str) -> u64 {
    let (_, body) = support::http_get(server.api, "/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[test]
fn options_at_2000_per_second_all_answered() {
    if !sipp_available() {
        return;
    }
    let server = support::Server::start(&[]);
    let (code, screen) = sipp(&server, "options.xml", &["-r", "2000", "-m", "20000"]);
    assert_eq!(code, 0, "SIPp reported failures:\n{screen}");
    assert_eq!(cumulative(&screen, "Successful call"), Some(20_000), "{screen}");
    assert_eq!(cumulative(&screen, "Failed call"), Some(0), "{screen}");
    assert_eq!(metric(&server, "opentrunk_sip_datagrams_dropped_total"), 0);
}

#[test]
fn invite_under_loss_completes_each_transaction_once() {
    if !sipp_available() {
        return;
    }
    let server = support::Server::start(&[]);
    let calls = 200;
    let (code, screen) = sipp(&server, "invite_rejected.xml", &["-r", "50", "-m", &calls.to_string(), "-lost", "10"]);
    assert_eq!(code, 0, "SIPp reported failures:\n{screen}");
    assert_eq!(cumulative(&screen, "Successful call"), Some(calls), "{screen}");
    // Each INVITE made exactly one server transaction, however often SIPp retransmitted it
    // (and a lost ACK is absorbed by the same transaction).
    assert_eq!(metric(&server, "opentrunk_sip_server_transactions_total"), calls);
    assert!(metric(&server, "opentrunk_sip_retransmissions_absorbed_total") > 0, "10% loss must cause retransmissions");
}
