//! The CPU a call detail record costs to store on SQLite, the embedded default, as the CDR
//! writer stores them: batches of `BATCH` records (400: 2,000 calls/s for the writer's 200 ms
//! flush interval), each through `Store::insert_new_cdrs` in its own transaction, into a fresh
//! database file. Records are about 2.4 KB (a full record with four route attempts and a
//! 10-step decision trace), as the switch writes them.
//!
//! Prints per record: the CPU time of every thread of the process (SQLite runs on sqlx's
//! worker threads), and the write and read system calls made (`/proc/self/io`: pwrite64 of
//! the WAL and the checkpoints, pread64). Run with
//! `cargo bench -p store --bench cdr_insert -- [RECORDS] [BATCH] [DIR] [CONNECTIONS]` (defaults
//! 20000, 400, the temporary directory, 500: calls spread over 500 connections of 50 accounts
//! insert all over the per-account and per-connection indexes; with 1, as under `bench/run`, every
//! index grows at its end). The store opens the file exactly as the node does. With a
//! `postgres://` URL for DIR the records go to PostgreSQL instead, into a schema of their own
//! (dropped after): the CPU printed is then this process's alone, the client's side of the
//! insert (the write and read counts miss its socket's sends and receives).

use std::time::Instant;

use serde_json::json;
use store::{AttemptOutcome, CallDetailRecord, Direction, HangupSource, RawJson, RouteAttempt, Store, cdr_timestamp};

/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;

/// A decision trace of the shape `trunking::trace::Trace` serializes to.
fn trace(n: usize) -> RawJson {
    let mut steps = vec![
        json!({"rule": "identify.source", "verdict": "note", "facts": {"ip": "192.0.2.10", "matches": 1}}),
        json!({"rule": "identify.digest", "verdict": "pass", "facts": {"user": "acme-pbx", "algorithm": "SHA-256"}}),
        json!({"rule": "outbound.rate", "verdict": "note", "facts": {"prefix": "1212", "rate": "0.0100"}}),
        json!({"rule": "outbound.channels", "verdict": "pass", "facts": {"account": 3, "limit": null}}),
    ];
    steps.extend((0..n).map(|i| json!({"rule": "outbound.check", "verdict": "pass", "facts": {"step": i}})));
    RawJson::of(&steps).expect("a trace")
}

fn attempt(carrier: &str, at: &dyn Fn(i64) -> String, from: i64, to: i64, code: u16) -> RouteAttempt {
    RouteAttempt {
        carrier_id: format!("{carrier}-7c1e-4a5b-9f0d-3e2a1b4c5d6e"),
        gateway: format!("sip.{carrier}.example"),
        port: 5060,
        transport: "UDP".into(),
        target: Some("203.0.113.7:5060".into()),
        outcome: AttemptOutcome::Response { sip_response_code: code },
        started_at: at(from),
        ended_at: at(to),
    }
}

/// Call `i` of the run: a record with every field set, ids of the node's shape (UUIDv7), over
/// `connections` connections, ten to an account.
fn record(i: usize, connections: usize, trace: &RawJson) -> CallDetailRecord {
    let accounts = connections.div_ceil(10);
    let ms = i64::try_from(i).expect("a small index") / 2;
    let at = |d: i64| cdr_timestamp(T0 + ms + d);
    let id = store::new_cdr_id(T0 + ms);
    CallDetailRecord {
        account_id: format!("acct-{:04}-7c1e-4a5b-9f0d-3e2a1b4c5d6e", i % accounts),
        connection_id: format!("conn-{:04}-7c1e-4a5b-9f0d-3e2a1b4c5d6e", i % connections),
        outbound_voice_profile_id: Some(format!("ovp-{:04}-7c1e-4a5b-9f0d-3e2a1b4c5d6e", i % accounts)),
        direction: Direction::Outbound,
        a_leg_call_id: format!("{i}-{}@192.0.2.10", std::process::id()),
        b_leg_call_id: Some(format!("b-{id}@opentrunk")),
        from_received: "+12125551234".into(),
        to_received: "2125556789".into(),
        from_sent: Some("+12125551234".into()),
        to_sent: Some("+12125556789".into()),
        started_at: at(0),
        answered_at: Some(at(4_250)),
        ended_at: at(65_250),
        call_sec: 61,
        billed_sec: 120,
        rate: Some("0.0100".into()),
        cost: Some("0.0200".into()),
        sip_response_code: [200, 200, 200, 486, 503][i % 5],
        reason_code: None,
        hangup_source: HangupSource::Caller,
        route_attempts: vec![
            attempt("carrier-a", &at, 10, 900, 503),
            attempt("carrier-b", &at, 900, 1_900, 503),
            attempt("carrier-c", &at, 1_900, 3_950, 486),
            attempt("carrier-d", &at, 3_950, 4_250, 200),
        ],
        trace: trace.clone(),
        id,
    }
}

/// CPU time of every live thread of this process, in nanoseconds (`/proc/self/task/*/schedstat`:
/// the time on a CPU, nanosecond-exact, unlike the 10 ms ticks of `/proc/self/stat`).
fn cpu_ns() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// Write and read system calls this process made so far (`syscw`, `syscr` of `/proc/self/io`).
fn syscalls() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| {
        io.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).expect("an /proc/self/io field")
    };
    (field("syscw:"), field("syscr:"))
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let dir = args.get(2).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let connections: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(500).max(1);
    let path = dir.join(format!("cdr_insert_{}.db", std::process::id()));
    let postgres = args.get(2).filter(|a| a.starts_with("postgres://")).cloned();
    let schema = format!("cdr_insert_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let url = match &postgres {
            Some(base) => {
                sqlx::any::install_default_drivers();
                let admin = sqlx::AnyPool::connect(base).await.expect("connect to PostgreSQL");
                // The name is ours (letters, digits, underscores), not input.
                let create = format!("CREATE SCHEMA {schema}");
                sqlx::query(sqlx::AssertSqlSafe(create)).execute(&admin).await.expect("a schema");
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
            None => format!("sqlite://{}", path.display()),
        };
        let store = Store::open(&url).await.expect("open the store");
        let trace = trace(6);
        let records: Vec<CallDetailRecord> = (0..n).map(|i| record(i, connections, &trace)).collect();
        let bytes: usize = records.iter().map(|r| serde_json::to_string(r).expect("json").len()).sum();
        // Warm the connection and its prepared statements, as a running node's are.
        store.insert_new_cdrs(&records[..batch.min(n) / 2]).await.expect("warm-up");
        let rest = &records[batch.min(n) / 2..];
        let (cpu, (w, r), started) = (cpu_ns(), syscalls(), Instant::now());
        for chunk in rest.chunks(batch) {
            store.insert_new_cdrs(chunk).await.expect("insert");
        }
        let (took, cpu) = (started.elapsed(), cpu_ns() - cpu);
        let (w2, r2) = syscalls();
        let m = rest.len() as f64;
        println!(
            "{} records of {:.0} B of JSON in batches of {batch}, {connections} connections: {:.1} us CPU, {:.1} us wall, {:.2} writes, {:.2} \
             reads per record; file {} KiB",
            rest.len(),
            bytes as f64 / n as f64,
            cpu as f64 / 1e3 / m,
            took.as_secs_f64() * 1e6 / m,
            (w2 - w) as f64 / m,
            (r2 - r) as f64 / m,
            std::fs::metadata(&path).map_or(0, |m| m.len() / 1024),
        );
        drop(store);
        if let Some(base) = &postgres {
            let admin = sqlx::AnyPool::connect(base).await.expect("connect to PostgreSQL");
            let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop_schema)).execute(&admin).await.expect("the schema dropped");
        }
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
