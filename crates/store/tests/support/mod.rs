//! The backends every store test runs against: an embedded SQLite file, and PostgreSQL on
//! 127.0.0.1:5432 (database `test`) in a schema of its own so runs never collide. Without a
//! PostgreSQL server the PostgreSQL half prints one line and is skipped, unless
//! `OPENTRUNK_REQUIRE_SERVICES=1` (CI) makes it required.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use store::{Registration, Store};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A name no other test of any run uses: the process, a per-process sequence (two tests of one
/// process can read the same clock value) and the time, last so stale-schema cleanup can read it.
fn unique(prefix: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{seq}_{nanos}", std::process::id())
}

/// The URL of a SQLite file no other test uses, not created yet.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("{}.db", unique("ot_store")));
    format!("sqlite://{}", path.display())
}

/// A fresh SQLite store in a temporary file.
pub async fn sqlite() -> Store {
    Store::open(&sqlite_url()).await.expect("open sqlite store")
}

/// A fresh PostgreSQL store in its own schema, or `None` when no server is reachable.
pub async fn postgres() -> Option<Store> {
    let url = postgres_url().await?;
    Some(Store::open(&url).await.expect("open postgres store"))
}

/// Two stores on one fresh PostgreSQL schema: two nodes of a cluster.
pub async fn postgres_nodes() -> Option<(Store, Store)> {
    let url = postgres_url().await?;
    Some((Store::open(&url).await.expect("node a"), Store::open(&url).await.expect("node b")))
}

/// The URL of a fresh schema, or `None` when no server is reachable.
async fn postgres_url() -> Option<String> {
    sqlx::any::install_default_drivers();
    let admin = match sqlx::AnyPool::connect(PG_BASE).await {
        Ok(p) => p,
        Err(e) => {
            if std::env::var("OPENTRUNK_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
                panic!("PostgreSQL is required at {PG_BASE}: {e}");
            }
            println!("skipped: PostgreSQL not reachable at {PG_BASE} ({e})");
            return None;
        }
    };
    // Leftovers of earlier runs (older than an hour) go; a running test's schema is younger.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let stale: Vec<(String,)> =
        sqlx::query_as("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'ot_test_%'")
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    for (name,) in stale {
        let born: u128 = name.rsplit('_').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if now.saturating_sub(born) > 3_600_000_000_000 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE"))).execute(&admin).await;
        }
    }
    let schema = unique("ot_test");
    // The schema name is ours (letters, digits, underscores), not input. Concurrent tests
    // cleaning up the same stale schemas can make PostgreSQL refuse a catalog change once
    // ("tuple concurrently updated"): try again. The name is unique, so IF NOT EXISTS only makes
    // a retry after an attempt that did land succeed.
    let mut last = None;
    for _ in 0..5 {
        match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(&admin).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(e) = last {
        panic!("create schema {schema}: {e}");
    }
    Some(format!("{PG_BASE}?options=-c%20search_path%3D{schema}"))
}

/// Every available backend, SQLite first.
pub async fn backends() -> Vec<Store> {
    let mut v = vec![sqlite().await];
    v.extend(postgres().await);
    v
}

/// A binding of `contact` to `connection`, registered at 2026-01-02T00:00:00Z.
pub fn binding(connection: &str, contact: &str, expires_at: i64) -> Registration {
    Registration {
        connection_id: connection.into(),
        binding_key: Registration::key_of(contact, None, None),
        account_id: "acct-a".into(),
        username: format!("user{connection}"),
        contact: contact.into(),
        instance: None,
        reg_id: None,
        q: None,
        path: Vec::new(),
        call_id: "reg-1@192.0.2.10".into(),
        cseq: 1,
        source_ip: "192.0.2.10".into(),
        source_port: 5060,
        transport: "UDP".into(),
        nat: false,
        user_agent: None,
        node: None,
        registered_at: 1_767_312_000_000,
        updated_at: 1_767_312_000_000,
        expires_at,
    }
}

/// A record with every optional field `set` or empty.
pub fn record(id: &str, set: bool) -> store::CallDetailRecord {
    use store::{AttemptOutcome, CallDetailRecord, Direction, HangupSource, RawJson, RouteAttempt, cdr_timestamp};
    let at = |ms: i64| cdr_timestamp(1_767_312_000_000 + ms);
    let some = |s: &str| set.then(|| s.to_owned());
    CallDetailRecord {
        id: id.into(),
        account_id: "acct-a".into(),
        connection_id: "conn-1".into(),
        outbound_voice_profile_id: some("ovp-1"),
        direction: if set { Direction::Outbound } else { Direction::Inbound },
        a_leg_call_id: "a@192.0.2.10".into(),
        b_leg_call_id: some("b@opentrunk"),
        from_received: "+12125551234".into(),
        to_received: "2125556789".into(),
        from_sent: some("+12125551234"),
        to_sent: some("+12125556789"),
        started_at: at(0),
        answered_at: set.then(|| at(4_250)),
        ended_at: at(65_250),
        call_sec: if set { 61 } else { 0 },
        billed_sec: if set { 120 } else { 0 },
        rate: some("0.0100"),
        cost: some("0.0200"),
        sip_response_code: if set { 200 } else { 403 },
        reason_code: (!set).then(|| "D1".to_owned()),
        hangup_source: if set { HangupSource::Caller } else { HangupSource::System },
        route_attempts: if set {
            vec![RouteAttempt {
                carrier_id: "carrier-a".into(),
                gateway: "sip.carrier-a.example".into(),
                port: 5060,
                transport: "UDP".into(),
                target: Some("203.0.113.7:5060".into()),
                outcome: AttemptOutcome::Response { sip_response_code: 503 },
                started_at: at(10),
                ended_at: at(900),
            }]
        } else {
            Vec::new()
        },
        trace: RawJson::from_text(
            r#"[{"rule":"identify.source","verdict":"note","facts":{"ip":"192.0.2.10"}}]"#.into(),
        )
        .unwrap(),
    }
}
