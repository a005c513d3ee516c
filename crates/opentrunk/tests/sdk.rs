//! The official `telnyx` Python SDK (from PyPI, unmodified) against a real `opentrunk serve`,
//! once per storage backend: SQLite always; PostgreSQL (127.0.0.1:5432, database `test`, a
//! schema of its own) when it answers, required with `OPENTRUNK_REQUIRE_SERVICES=1`.
//!
//! Each run starts the switch with a known operator key, creates an account over HTTP for its
//! key, makes the venv with `scripts/sdk-venv` (once per test binary) and runs
//! `python -m pytest -q tests/sdk` with `OPENTRUNK_BASE_URL`, `OPENTRUNK_ACCOUNT_KEY` and
//! `OPENTRUNK_ADMIN_KEY` set. Without `python3 -m venv` or PyPI it prints one `skipped:` line,
//! unless `OPENTRUNK_REQUIRE_SDK=1` makes that a failure. New resources need only more test
//! functions under tests/sdk/.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod support;

const ADMIN_KEY: &str = "KEYsdk-tests-operator-key";
use support::pg::PgSchema;
/// Exit code of `scripts/sdk-venv` when Python's venv or PyPI is unavailable.
const SDK_UNAVAILABLE: i32 = 3;

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Runs `cmd` with its output collected, killing it after `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let (o, e) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            panic!(
                "{cmd:?} did not finish within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n({status})",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// The venv's python from `scripts/sdk-venv`, made once for every test here; `None` (after one
/// `skipped:` line) when Python's venv or PyPI is unavailable and the SDK is not required.
fn sdk_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = PYTHON.get_or_init(|| {
        let out = output_within(
            Command::new("bash").arg(repo_root().join("scripts/sdk-venv")).current_dir(repo_root()),
            Duration::from_secs(300),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                Ok(PathBuf::from(stdout.lines().last().expect("sdk-venv prints the python path").trim()))
            }
            Some(SDK_UNAVAILABLE) => {
                let why = stderr.lines().last().unwrap_or("sdk-venv: unavailable").to_owned();
                if !flag("OPENTRUNK_REQUIRE_SDK") {
                    println!("skipped: the telnyx SDK tests need python3 -m venv and PyPI ({why})");
                }
                Err(why)
            }
            _ => panic!("scripts/sdk-venv failed ({}):\n{stderr}", out.status),
        }
    });
    match made {
        Ok(python) => Some(python.clone()),
        Err(why) if flag("OPENTRUNK_REQUIRE_SDK") => {
            panic!("the SDK tests are required (OPENTRUNK_REQUIRE_SDK=1): {why}")
        }
        Err(_) => None,
    }
}

/// Starts the switch on `database_url`, makes an account, and runs the Python tests.
fn run_sdk_tests(backend: &str, database_url: Option<&str>) {
    let start = Instant::now();
    let Some(python) = sdk_python() else { return };
    let mut env = vec![("OPENTRUNK_ADMIN_API_KEY", ADMIN_KEY)];
    if let Some(url) = database_url {
        env.push(("OPENTRUNK_DATABASE_URL", url));
    }
    let server = support::Server::start(&env);

    let (code, body) =
        support::http(server.api, "POST", "/v2/accounts", Some(ADMIN_KEY), Some(r#"{"name":"SDK tests"}"#))
            .expect("POST /v2/accounts");
    assert_eq!(code, 201, "POST /v2/accounts: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let account_key = created["data"]["api_key"].as_str().expect("data.api_key").to_owned();

    let out = output_within(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "tests/sdk"])
            .current_dir(repo_root())
            .env("OPENTRUNK_BASE_URL", format!("http://{}/v2", server.api))
            .env("OPENTRUNK_ACCOUNT_KEY", &account_key)
            .env("OPENTRUNK_ADMIN_KEY", ADMIN_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("TELNYX_API_KEY")
            .env_remove("TELNYX_BASE_URL")
            .env_remove("TELNYX_CUSTOM_HEADERS")
            .env_remove("PYTEST_ADDOPTS"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest tests/sdk on {backend} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    println!("sdk tests on {backend}: {summary} (whole run {:.1?})", start.elapsed());
}

#[test]
fn telnyx_python_sdk_on_sqlite() {
    run_sdk_tests("sqlite", None);
}

#[test]
fn telnyx_python_sdk_on_postgres() {
    let Some(schema) = PgSchema::create("telnyx_python_sdk_on_postgres") else { return };
    run_sdk_tests("postgres", Some(&schema.url()));
}
