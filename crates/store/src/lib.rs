//! `store`: persistence behind one interface, on two backends. SQLite is the embedded default
//! (one file, WAL mode, nothing else to run); PostgreSQL serves a cluster of nodes. Both run the
//! same queries through sqlx's `Any` driver with `$N` placeholders; each backend has its own
//! migration folder because DDL differs. Queries are checked at run time, not build time, so a
//! build needs no database.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tracing::info;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store failure, with the context an operator needs.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError(format!("migration: {e}"))
    }
}

/// The database behind the platform.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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

const ADMIN_KEY_HASH: &str = "admin_api_key_sha256";

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
            return Err(StoreError(format!("database URL `{url}`: expected sqlite:// or postgres://")));
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
                    // WAL lets the API read while the engine writes; foreign keys are off by
                    // default in SQLite; a busy writer makes others wait instead of failing.
                    for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(&connect_url).await.map_err(|e| StoreError(format!("database {url}: {e}")))?;
        let store = Store { pool, backend };
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

    /// A platform setting.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|(v,)| v))
    }

    /// Sets a platform setting.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// Whether `presented` is the operator's key (compared by hash, in constant time).
    pub async fn is_admin_key(&self, presented: &str) -> Result<bool, StoreError> {
        let Some(stored) = self.setting(ADMIN_KEY_HASH).await? else { return Ok(false) };
        Ok(constant_time_eq(stored.as_bytes(), hash_api_key(presented).as_bytes()))
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
    getrandom::fill(&mut bytes).map_err(|e| StoreError(format!("random source: {e}")))?;
    Ok(format!("KEY{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
