//! `store`: persistence behind one interface, on two backends. SQLite is the embedded default
//! (one file, WAL mode, nothing else to run); PostgreSQL serves a cluster of nodes. Both run the
//! same queries through sqlx's `Any` driver with `$N` placeholders (the records writer's inserts
//! take the backend's own driver, with the same statements and values); each backend has its
//! own migration folder because DDL differs. Queries are checked at run time, not build time,
//! so a build needs no database.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tracing::info;

mod cdr;
mod journal;
mod rates;
mod registrations;
mod repository;
mod snapshot;
mod stats;
pub use cdr::{
    AttemptOutcome, CallDetailRecord, CdrFilter, Direction, HangupSource, RawJson, RouteAttempt, cdr_timestamp,
    is_cdr_timestamp, new_cdr_id,
};
pub use journal::{Billing, JournalWrite, LOST_UNANSWERED_STATUS, NODE_LOST_RULE, OpenCall, Reaped, lost_call_record};
pub use rates::{MAX_PREFIX_DIGITS, RATE_DECK, RatePage};
pub use registrations::{Registration, RegistrationNotice, RegistrationWrite};
pub use repository::Repository;
pub use snapshot::{Snapshot, SnapshotHandle};
pub use stats::{BUCKETS, Latency, Operation, StoreStats};

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store failure.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A value that must be unique in this scope is held by another resource.
    Conflict { scope: String },
    /// Anything else, with the context an operator needs.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict { scope } => write!(f, "already taken: {scope}"),
            StoreError::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Failed(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Failed(format!("migration: {e}"))
    }
}

/// One API resource as stored: a JSON document and the columns that find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `account`, `outbound_voice_profile`, `credential_connection`, ...
    pub kind: String,
    pub id: String,
    /// The owning account (an account owns itself).
    pub account_id: String,
    pub name: String,
    /// The resource's JSON document.
    pub body: String,
    /// RFC 3339 timestamps.
    pub created_at: String,
    pub updated_at: String,
}

pub(crate) type ResourceRow = (String, String, String, String, String, String, String);

pub(crate) fn resource(r: ResourceRow) -> Resource {
    let (kind, id, account_id, name, body, created_at, updated_at) = r;
    Resource { kind, id, account_id, name, body, created_at, updated_at }
}

pub(crate) const RESOURCE_COLUMNS: &str = "kind, id, account_id, name, body, created_at, updated_at";

/// Every SQLite connection's settings, run as it opens.
///
/// 16 KiB pages for a new database (first: the size is fixed when the first page is written,
/// and WAL mode cannot change it; on an existing file it is a no-op). A call detail record is
/// about 2.5 KB: on the default 4 KiB pages each took a page of its own, and every dirty page is
/// a WAL frame written at commit and again at the checkpoint. On 16 KiB pages six share one: per
/// record stored in batches (`benches/cdr_insert.rs`), 5.6 write and 1.3 read system calls
/// became 1.7 and 0.3, and CPU time fell by 28%. Larger pages saved no more CPU and make every
/// small commit write more.
///
/// WAL lets the API read while the engine writes; foreign keys are off by default in SQLite; a
/// busy writer makes others wait instead of failing.
const SQLITE_PRAGMAS: [&str; 4] =
    ["PRAGMA page_size=16384", "PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"];

/// The batch writers' connection's own settings, after [`SQLITE_PRAGMAS`]: statement journals
/// in memory. A multi-row statement that a constraint could abort halfway (the journal's and
/// the registrar's upserts) keeps a statement journal, the pages it changes, so that it can be
/// undone alone; past 64 KiB, four of these 16 KiB pages, SQLite spilled it to a temporary
/// file, created and unlinked in `/var/tmp` for every batch (the call records' inserts did too,
/// at 500 calls/s 1.4 writes of 16 KiB a call, until they became `OR IGNORE`, which needs
/// none: `cdr::write`). One statement's journal holds at most the pages it changes (64 rows and
/// their index entries), freed when the statement ends.
const SQLITE_WRITER_PRAGMAS: [&str; 1] = ["PRAGMA temp_store=MEMORY"];

/// The database behind the platform.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// A pool of the backend's own driver for the batch writers: the records writer's inserts
    /// ([`Store::insert_new_cdrs`]) and the registrar's binding changes
    /// ([`Store::write_registrations`]). Through `Any` every bound value is copied once more
    /// (into `Any`'s arguments, then into the driver's), a record's 23 values about 2.5 KB.
    /// Opened at the first write; on SQLite one connection (writers take turns), on PostgreSQL
    /// one for each writer, so neither waits for the other's batch.
    records: RecordsPool,
    /// Bumped after every committed configuration change made through this store; the
    /// snapshot keeper waits on it (other nodes learn of changes through PostgreSQL NOTIFY).
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    url: String,
    /// How long the node's own database work takes (`/metrics`).
    stats: std::sync::Arc<StoreStats>,
}

/// The records writer's pool, of the backend's own driver.
#[derive(Clone, Debug)]
pub(crate) enum RecordsPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// What [`Store::ensure_admin_key`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminKey {
    /// The key given in the configuration is the operator's key (its hash is stored).
    Configured,
    /// A key was stored earlier; it stays the operator's key.
    Existing,
    /// No key existed: this one was generated. Show it once; only its hash is kept.
    Generated(String),
}

pub(crate) const ADMIN_KEY_HASH: &str = "admin_api_key_sha256";

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`:
    /// `sqlite://PATH` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Failed(format!("database URL `{url}`: expected sqlite:// or postgres://")));
        };
        let connect_url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let mut options = AnyPoolOptions::new().max_connections(if backend == Backend::Sqlite { 4 } else { 16 });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in SQLITE_PRAGMAS {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool =
            options.connect(&connect_url).await.map_err(|e| StoreError::Failed(format!("database {url}: {e}")))?;
        let bad_url = |e: sqlx::Error| StoreError::Failed(format!("database {url}: {e}"));
        let records = match backend {
            Backend::Sqlite => {
                let file: sqlx::sqlite::SqliteConnectOptions = connect_url.parse().map_err(bad_url)?;
                let records = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).after_connect(|conn, _| {
                    Box::pin(async move {
                        for pragma in SQLITE_PRAGMAS.into_iter().chain(SQLITE_WRITER_PRAGMAS) {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                });
                RecordsPool::Sqlite(records.connect_lazy_with(file))
            }
            Backend::Postgres => {
                let server: sqlx::postgres::PgConnectOptions = connect_url.parse().map_err(bad_url)?;
                RecordsPool::Postgres(sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_lazy_with(server))
            }
        };
        let (changes, _) = tokio::sync::watch::channel(0);
        let store = Store {
            pool,
            backend,
            records,
            changes: std::sync::Arc::new(changes),
            url: url.to_owned(),
            stats: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Latency of the node's database work, shared by every clone of this store.
    pub fn stats(&self) -> std::sync::Arc<StoreStats> {
        self.stats.clone()
    }

    /// Makes sure the operator has an API key. A configured key wins (its hash replaces any
    /// stored one); otherwise a stored one stays; otherwise one is generated, returned to be
    /// shown once, and only its hash is stored.
    pub async fn ensure_admin_key(&self, configured: Option<&str>) -> Result<AdminKey, StoreError> {
        if let Some(key) = configured {
            self.put_setting(ADMIN_KEY_HASH, &hash_api_key(key)).await?;
            return Ok(AdminKey::Configured);
        }
        if self.setting(ADMIN_KEY_HASH).await?.is_some() {
            return Ok(AdminKey::Existing);
        }
        let key = generate_api_key()?;
        self.put_setting(ADMIN_KEY_HASH, &hash_api_key(&key)).await?;
        info!("generated the operator API key");
        Ok(AdminKey::Generated(key))
    }
}

impl Store {}

/// On PostgreSQL, tells every node of a configuration change (delivered at commit).
pub(crate) async fn announce(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    kind: &str,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify('opentrunk_config', $1)").bind(kind).execute(&mut **tx).await?;
    }
    Ok(())
}

pub(crate) async fn claim_unique(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
    id: &str,
    unique: &[(&str, &str)],
) -> Result<(), StoreError> {
    for (scope, value) in unique {
        sqlx::query("INSERT INTO unique_values (scope, value, kind, id) VALUES ($1, $2, $3, $4)")
            .bind(*scope)
            .bind(*value)
            .bind(kind)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(|e| conflict_or(e, scope))?;
    }
    Ok(())
}

/// Frees every unique value a resource holds (before it is deleted or claims new ones).
pub(crate) async fn release_unique(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
    id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM unique_values WHERE kind = $1 AND id = $2").bind(kind).bind(id).execute(&mut **tx).await?;
    Ok(())
}

pub(crate) fn conflict_or(e: sqlx::Error, scope: &str) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::Conflict { scope: scope.to_owned() },
        _ => e.into(),
    }
}

/// Writes that keep references between resources whole: a resource that names another (a
/// connection its outbound voice profile, a phone number its connection) is written only while
/// that one exists, and a resource that others name is deleted only while none does. Each is one
/// transaction that locks the named row (PostgreSQL) or the database (SQLite, whose writers take
/// turns) before it looks, so a write and a delete running together cannot both succeed.
impl Store {
    /// Whether every resource of `refs` exists in `account_id`, locking each one found until
    /// the transaction ends: shared on PostgreSQL; on SQLite a write (which changes nothing)
    /// takes the database's write lock, so the transaction never has to upgrade a read later.
    pub(crate) async fn lock_references(
        conn: &mut sqlx::AnyConnection,
        backend: Backend,
        account_id: &str,
        refs: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        for (kind, id) in refs {
            let found = match backend {
                Backend::Postgres => {
                    sqlx::query("SELECT 1 FROM resources WHERE kind = $1 AND id = $2 AND account_id = $3 FOR SHARE")
                        .bind(*kind)
                        .bind(*id)
                        .bind(account_id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .is_some()
                }
                Backend::Sqlite => {
                    sqlx::query("UPDATE resources SET id = id WHERE kind = $1 AND id = $2 AND account_id = $3")
                        .bind(*kind)
                        .bind(*id)
                        .bind(account_id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                        > 0
                }
            };
            if !found {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Counts, by value, the resources of `referrers` with a string at `path` in their
    /// document, only those naming `only` when given, of `account_id` when given.
    pub(crate) async fn count_references(
        conn: &mut sqlx::AnyConnection,
        backend: Backend,
        referrers: &[&str],
        path: &[&str],
        only: Option<&str>,
        account_id: Option<&str>,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        // Path segments are written into the query, so they are names, never input.
        let named = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if path.is_empty() || !path.iter().all(named) {
            return Err(StoreError::Failed(format!("document path {path:?}: expected field names")));
        }
        if referrers.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let (value, is_string) = match backend {
            Backend::Sqlite => {
                let p = format!("'$.{}'", path.join("."));
                (format!("json_extract(body, {p})"), format!("json_type(body, {p}) = 'text'"))
            }
            Backend::Postgres => {
                let p = format!("'{{{}}}'", path.join(","));
                (format!("(body::jsonb #>> {p})"), format!("jsonb_typeof(body::jsonb #> {p}) = 'string'"))
            }
        };
        let kinds: Vec<String> = (1..=referrers.len()).map(|i| format!("${i}")).collect();
        let mut sql =
            format!("SELECT {value}, COUNT(*) FROM resources WHERE kind IN ({}) AND {is_string}", kinds.join(", "));
        let mut next = referrers.len() + 1;
        if only.is_some() {
            sql.push_str(&format!(" AND {value} = ${next}"));
            next += 1;
        }
        if account_id.is_some() {
            sql.push_str(&format!(" AND account_id = ${next}"));
        }
        sql.push_str(" GROUP BY 1");
        let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
        for kind in referrers {
            q = q.bind(*kind);
        }
        if let Some(v) = only {
            q = q.bind(v);
        }
        if let Some(a) = account_id {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        Ok(rows.into_iter().map(|(v, n)| (v, u64::try_from(n).unwrap_or(0))).collect())
    }
}

/// API keys are long random tokens, so a fast cryptographic hash is enough to keep them out
/// of the database (a slow hash protects low-entropy passwords, which keys are not).
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A new API key: `KEY` and 32 random bytes in hex, from the operating system's generator.
pub fn generate_api_key() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Failed(format!("random source: {e}")))?;
    Ok(format!("KEY{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    /// The batch writers' statement journals stay in memory (see [`super::SQLITE_WRITER_PRAGMAS`]).
    #[tokio::test]
    async fn the_batch_writer_keeps_statement_journals_in_memory() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("ot_store_writer_{}_{nanos}.db", std::process::id()));
        let store = super::Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
        let super::RecordsPool::Sqlite(pool) = &store.records else { panic!("a SQLite store") };
        let (temp_store,): (i64,) = sqlx::query_as("PRAGMA temp_store").fetch_one(pool).await.unwrap();
        assert_eq!(temp_store, 2, "MEMORY");
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size").fetch_one(pool).await.unwrap();
        assert_eq!(page_size, 16_384, "the shared settings too");
    }
}
