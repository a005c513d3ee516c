//! The embedded SQLite file: a new database is made with 16 KiB pages (several call detail
//! records to a page), and a database made earlier with another page size opens, migrates and
//! works as it is.

mod support;

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

/// The records writer's inserts (`insert_new_cdrs`) go through SQLite's own driver, the API's
/// (`insert_cdrs`) through sqlx's `Any`: the rows are the same, value for value and storage class
/// for storage class (`cdr_replay.rs` reads them back on both backends).
#[tokio::test]
async fn records_are_the_same_rows_through_either_driver() {
    let path = path("drivers");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store.insert_cdrs(&[support::record("any-set", true), support::record("any-empty", false)]).await.unwrap();
    assert_eq!(
        store.insert_new_cdrs(&[support::record("own-set", true), support::record("own-empty", false)]).await,
        Ok(2)
    );

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
