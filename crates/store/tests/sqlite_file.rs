//! The embedded SQLite file: a new database is made with 16 KiB pages (several call detail
//! records to a page), and a database made earlier with another page size opens, migrates and
//! works as it is.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row;
use store::{Repository, Store};

fn path(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("ot_store_{name}_{}_{nanos}.db", std::process::id()))
}

/// `PRAGMA page_size` and `PRAGMA journal_mode` of the file, read on a connection of its own.
async fn page_size_and_journal(path: &std::path::Path) -> (i64, String) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let size: i64 = sqlx::query("PRAGMA page_size").fetch_one(&pool).await.unwrap().try_get(0).unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&pool).await.unwrap().try_get(0).unwrap();
    pool.close().await;
    (size, mode)
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn a_new_database_has_16_kib_pages_in_wal_mode() {
    let path = path("new");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store.put_setting("k", "v").await.unwrap();
    assert_eq!(page_size_and_journal(&path).await, (16_384, "wal".to_owned()));
    drop(store);
    remove(&path);
}

#[tokio::test]
async fn an_older_database_keeps_its_page_size() {
    let path = path("old");
    sqlx::any::install_default_drivers();
    // Made as earlier versions made it: default (4 KiB) pages, then WAL mode.
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE earlier (x INTEGER)").execute(&pool).await.unwrap();
    pool.close().await;

    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store.put_setting("k", "v").await.unwrap();
    assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(page_size_and_journal(&path).await, (4_096, "wal".to_owned()));
    drop(store);
    remove(&path);
}

/// A record with every optional field `set` or empty.
fn record(id: &str, set: bool) -> store::CallDetailRecord {
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

/// The records writer's inserts (`insert_new_cdrs`) go through SQLite's own driver, the API's
/// (`insert_cdrs`) through sqlx's `Any`: the rows are the same, value for value and storage class
/// for storage class.
#[tokio::test]
async fn records_are_the_same_rows_through_either_driver() {
    let path = path("drivers");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store.insert_cdrs(&[record("any-set", true), record("any-empty", false)]).await.unwrap();
    assert_eq!(store.insert_new_cdrs(&[record("own-set", true), record("own-empty", false)]).await, Ok(2));

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('call_detail_records') ORDER BY cid")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .filter(|c| c != "id")
        .collect();
    assert!(columns.len() >= 22, "{columns:?}");
    let typed: Vec<String> = columns.iter().map(|c| format!("typeof({c}) || ' ' || quote({c})")).collect();
    let sql = format!("SELECT {} FROM call_detail_records WHERE id = $1", typed.join(", "));
    let row = |id: &'static str| {
        let (pool, sql) = (&pool, &sql);
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(id).fetch_one(pool).await.unwrap();
            (0..row.len()).map(|i| row.try_get::<String, _>(i).unwrap()).collect::<Vec<_>>()
        }
    };
    for (any, own) in [("any-set", "own-set"), ("any-empty", "own-empty")] {
        let (a, o) = (row(any).await, row(own).await);
        assert_eq!(a, o, "{any} and {own}");
        assert!(a.iter().any(|v| v.starts_with("integer ")) && a.iter().any(|v| v.starts_with("text ")), "{a:?}");
    }
    assert!(row("any-empty").await.iter().any(|v| v == "null NULL"));
    pool.close().await;
    drop(store);
    remove(&path);
}
