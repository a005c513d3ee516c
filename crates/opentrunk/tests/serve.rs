//! `opentrunk serve` as an operator meets it: the operator key on first start, `/health`,
//! one log line per listener (JSON with `--json-logs`), and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

struct Run {
    stdout: String,
    stderr: String,
    status: std::process::ExitStatus,
}

/// Starts the binary, waits for `/health`, runs `during` against the API address, sends
/// SIGTERM and collects its output.
fn run_once(db: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    run_with(db, extra, env, |_| {})
}

fn run_with(
    db: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
    during: impl FnOnce(std::net::SocketAddr),
) -> Run {
    let port = support::free_port();
    let api = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opentrunk"))
        .arg("serve")
        .args(extra)
        .env("OPENTRUNK_SIP_LISTEN", format!("udp:127.0.0.1:{port},tcp:127.0.0.1:{port}"))
        .env("OPENTRUNK_API_LISTEN", format!("127.0.0.1:{api}"))
        .env("OPENTRUNK_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env_remove("OPENTRUNK_ADMIN_API_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = format!("127.0.0.1:{api}").parse().unwrap();
    let start = Instant::now();
    let mut healthy = None;
    while start.elapsed() < Duration::from_secs(20) && healthy.is_none() {
        healthy = support::http_get(addr, "/health").filter(|(c, _)| *c == 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = healthy.expect("healthy");
    assert_eq!(body.trim(), r#"{"status":"ok"}"#);
    during(addr);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stdout =
        BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n");
    let stderr =
        BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n");
    let status = child.wait().expect("wait");
    Run { stdout, stderr, status }
}

#[test]
fn operator_key_is_printed_once_and_logs_name_each_listener() {
    let db = std::env::temp_dir().join(format!("ot-serve-{}.db", std::process::id()));
    let first = run_once(&db, &[], &[("OPENTRUNK_LOG", "info")]);
    assert!(first.status.success(), "{}", first.stderr);
    let key_lines: Vec<&str> = first.stdout.lines().filter(|l| l.contains("Operator API key")).collect();
    assert_eq!(key_lines.len(), 1, "stdout: {}", first.stdout);
    let key = key_lines[0].rsplit(' ').next().unwrap();
    assert!(key.starts_with("KEY") && key.len() == 67);
    assert!(!first.stderr.contains(key), "the key must not reach the logs");
    assert_eq!(first.stderr.lines().filter(|l| l.contains("SIP listener up")).count(), 2, "{}", first.stderr);
    assert_eq!(first.stderr.lines().filter(|l| l.contains("API listener up")).count(), 1);

    // The second start finds the stored key: nothing printed. JSON logs on request.
    let second = run_once(&db, &["--json-logs"], &[("OPENTRUNK_LOG", "info")]);
    assert!(second.status.success());
    assert!(!second.stdout.contains("Operator API key"), "{}", second.stdout);
    let listener_lines: Vec<&str> = second.stderr.lines().filter(|l| l.contains("SIP listener up")).collect();
    assert_eq!(listener_lines.len(), 2);
    for l in listener_lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON log line");
        assert!(
            v["fields"]["listener"].as_str().is_some_and(|s| s.starts_with("udp:") || s.starts_with("tcp:")),
            "{l}"
        );
    }
    std::fs::remove_file(&db).ok();
}

#[test]
fn a_bad_configuration_exits_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_opentrunk"))
        .arg("serve")
        .env("OPENTRUNK_SIP_LISTEN", "sctp:127.0.0.1:5060")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown transport"));
}

#[test]
fn the_configured_operator_key_drives_the_api() {
    let db = std::env::temp_dir().join(format!("ot-serve-api-{}.db", std::process::id()));
    let run = run_with(&db, &[], &[("OPENTRUNK_ADMIN_API_KEY", "KEYoperator-from-env")], |api| {
        let (code, body) = support::http(api, "GET", "/v2/accounts", None, None).unwrap();
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("10009"));
        let (code, body) =
            support::http(api, "POST", "/v2/accounts", Some("KEYoperator-from-env"), Some(r#"{"name":"Acme"}"#))
                .unwrap();
        assert_eq!(code, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let key = v["data"]["api_key"].as_str().unwrap();
        let (code, body) = support::http(api, "GET", "/v2/accounts", Some(key), None).unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("\"total_results\":1"), "{body}");
    });
    assert!(run.status.success());
    assert!(!run.stdout.contains("Operator API key"), "a configured key is never printed");
    std::fs::remove_file(&db).ok();
}
