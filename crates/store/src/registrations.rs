//! The registrar's bindings (`registrations`): what a device of a credential connection bound
//! with REGISTER, shared by every node (each keeps an in-memory cache; this is the truth a node
//! starting or taking over reads). Written by the node as REGISTERs change them, what queued
//! meanwhile in one transaction ([`crate::Store::write_registrations`]), swept by
//! [`crate::Store::expire_registrations`], read by the API
//! ([`crate::Repository::list_registrations`]).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoreError;

/// One binding of a contact to a credential connection's address of record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub connection_id: String,
    /// The binding within its connection: the RFC 5626 instance and `reg-id` when given, else
    /// the Contact URI ([`Registration::key_of`]).
    pub binding_key: String,
    pub account_id: String,
    /// The AOR's user: the connection's SIP user name.
    pub username: String,
    /// The Contact URI as written.
    pub contact: String,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    /// `q` in thousandths.
    pub q: Option<u16>,
    /// The Path values the REGISTER carried (RFC 3327), in order.
    pub path: Vec<String>,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from, and over what (`UDP`, `TCP`, `TLS`).
    pub source_ip: String,
    pub source_port: u16,
    pub transport: String,
    /// Calls go to the source rather than the Contact as written.
    pub nat: bool,
    pub user_agent: Option<String>,
    /// The node that accepted the last REGISTER.
    pub node: Option<String>,
    /// Unix milliseconds: first bound, last refreshed, expiry.
    pub registered_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
}

impl Registration {
    /// The binding key of a contact: `instance` + `reg-id` when both are given (RFC 5626
    /// section 6: the flow, whatever the Contact), else the Contact URI.
    pub fn key_of(contact: &str, instance: Option<&str>, reg_id: Option<u32>) -> String {
        match (instance, reg_id) {
            (Some(i), Some(r)) => format!("{i};reg-id={r}"),
            _ => contact.to_owned(),
        }
    }
}

const COLUMNS: &str = "connection_id, binding_key, account_id, username, contact, instance, reg_id, q, path, call_id, \
                       cseq, source_ip, source_port, transport, nat, user_agent, node, registered_at, updated_at, \
                       expires_at";

fn from_row(row: &AnyRow) -> Result<Registration, StoreError> {
    let connection_id: String = row.try_get(0)?;
    let bad = |what: &str| StoreError::Failed(format!("registration of {connection_id}: unreadable {what}"));
    let small = |v: Option<i64>, what: &str| v.map(|v| u32::try_from(v).map_err(|_| bad(what))).transpose();
    let path: String = row.try_get(8)?;
    Ok(Registration {
        binding_key: row.try_get(1)?,
        account_id: row.try_get(2)?,
        username: row.try_get(3)?,
        contact: row.try_get(4)?,
        instance: row.try_get(5)?,
        reg_id: small(row.try_get(6)?, "reg_id")?,
        q: small(row.try_get(7)?, "q")?.map(|q| u16::try_from(q).map_err(|_| bad("q"))).transpose()?,
        path: serde_json::from_str(&path).map_err(|_| bad("path"))?,
        call_id: row.try_get(9)?,
        cseq: small(Some(row.try_get(10)?), "cseq")?.unwrap_or_default(),
        source_ip: row.try_get(11)?,
        source_port: u16::try_from(row.try_get::<i64, _>(12)?).map_err(|_| bad("source_port"))?,
        transport: row.try_get(13)?,
        nat: row.try_get::<i64, _>(14)? != 0,
        user_agent: row.try_get(15)?,
        node: row.try_get(16)?,
        registered_at: row.try_get(17)?,
        updated_at: row.try_get(18)?,
        expires_at: row.try_get(19)?,
        connection_id,
    })
}

impl crate::Store {
    /// Adds or replaces bindings (by connection and binding key), all or nothing.
    pub async fn upsert_registrations(&self, bindings: &[Registration]) -> Result<(), StoreError> {
        let writes: Vec<RegistrationWrite> =
            bindings.iter().map(|b| RegistrationWrite::Upsert(Box::new(b.clone()))).collect();
        self.write_registrations(&writes, None).await.map(|_| ())
    }

    /// Applies binding changes in their order in one transaction, all or nothing, and tells the
    /// other nodes once per connection changed. `node` is the node removing bindings (an
    /// upsert names its own). Returns how many bindings the removals found. The registrar's
    /// changes arrive at the REGISTER rate (a storm of 2,000 a second): one commit each cost
    /// more than the REGISTER itself.
    pub async fn write_registrations(
        &self,
        writes: &[RegistrationWrite],
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let _timing = self.stats.time(crate::Operation::RegistrationWrite);
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        let mut changed: Vec<(&str, Option<&str>)> = Vec::new();
        for write in writes {
            let connection = match write {
                RegistrationWrite::Upsert(b) => {
                    upsert(&mut tx, b).await?;
                    (b.connection_id.as_str(), b.node.as_deref())
                }
                RegistrationWrite::Remove { connection_id, binding_key } => {
                    let n = sqlx::query("DELETE FROM registrations WHERE connection_id = $1 AND binding_key = $2")
                        .bind(connection_id)
                        .bind(binding_key)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    removed += n;
                    if n == 0 {
                        continue;
                    }
                    (connection_id.as_str(), node)
                }
            };
            if !changed.contains(&connection) {
                changed.push(connection);
            }
        }
        for (connection_id, node) in changed {
            self.announce_registration(&mut tx, connection_id, node).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// On PostgreSQL, tells every node that a connection's bindings changed (delivered at
    /// commit): `connection_id` and the writing node, space separated.
    async fn announce_registration(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        connection_id: &str,
        node: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.backend == crate::Backend::Postgres {
            let payload = format!("{connection_id} {}", node.unwrap_or_default());
            sqlx::query("SELECT pg_notify('opentrunk_registrations', $1)").bind(payload).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Changes of bindings written by any node, as they commit (PostgreSQL; on SQLite, one
    /// node, nothing ever arrives). After the listening connection is lost and back, a
    /// [`RegistrationNotice::Resync`] says notices may have been missed.
    pub fn registration_notices(&self) -> tokio::sync::mpsc::Receiver<RegistrationNotice> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        if self.backend == crate::Backend::Postgres {
            tokio::spawn(listen_for_registrations(self.url.clone(), tx));
        }
        rx
    }

    /// Removes bindings of a connection by key; returns how many were there.
    /// `node` is the node removing them (named in the notice to the others).
    pub async fn remove_registrations(
        &self,
        connection_id: &str,
        keys: &[&str],
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        let writes: Vec<RegistrationWrite> = keys
            .iter()
            .map(|k| RegistrationWrite::Remove {
                connection_id: connection_id.to_owned(),
                binding_key: (*k).to_owned(),
            })
            .collect();
        self.write_registrations(&writes, node).await
    }

    /// Removes every binding that expired at or before `now_ms` (Unix ms); returns how many.
    pub async fn expire_registrations(&self, now_ms: i64) -> Result<u64, StoreError> {
        let _timing = self.stats.time(crate::Operation::RegistrationExpire);
        let done =
            sqlx::query("DELETE FROM registrations WHERE expires_at <= $1").bind(now_ms).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Every binding of a SIP user name, oldest registration first.
    pub async fn registrations_of_user(&self, username: &str) -> Result<Vec<Registration>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM registrations WHERE username = $1 ORDER BY registered_at, binding_key");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(username).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }
}

/// One change of the stored bindings, for [`crate::Store::write_registrations`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationWrite {
    Upsert(Box<Registration>),
    Remove { connection_id: String, binding_key: String },
}

impl RegistrationWrite {
    /// The binding it changes: (connection, binding key).
    pub fn binding(&self) -> (&str, &str) {
        match self {
            RegistrationWrite::Upsert(b) => (&b.connection_id, &b.binding_key),
            RegistrationWrite::Remove { connection_id, binding_key } => (connection_id, binding_key),
        }
    }
}

/// Adds or replaces one binding in the open transaction.
async fn upsert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, b: &Registration) -> Result<(), StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO registrations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20) ON CONFLICT (connection_id, binding_key) DO UPDATE SET \
             account_id = excluded.account_id, username = excluded.username, contact = excluded.contact, \
             instance = excluded.instance, reg_id = excluded.reg_id, q = excluded.q, path = excluded.path, \
             call_id = excluded.call_id, cseq = excluded.cseq, source_ip = excluded.source_ip, \
             source_port = excluded.source_port, transport = excluded.transport, nat = excluded.nat, \
             user_agent = excluded.user_agent, node = excluded.node, registered_at = excluded.registered_at, \
             updated_at = excluded.updated_at, expires_at = excluded.expires_at"
        )
    });
    let path = serde_json::to_string(&b.path).map_err(|e| StoreError::Failed(e.to_string()))?;
    sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(&b.connection_id)
        .bind(&b.binding_key)
        .bind(&b.account_id)
        .bind(&b.username)
        .bind(&b.contact)
        .bind(&b.instance)
        .bind(b.reg_id.map(i64::from))
        .bind(b.q.map(i64::from))
        .bind(path)
        .bind(&b.call_id)
        .bind(i64::from(b.cseq))
        .bind(&b.source_ip)
        .bind(i64::from(b.source_port))
        .bind(&b.transport)
        .bind(i64::from(b.nat))
        .bind(&b.user_agent)
        .bind(&b.node)
        .bind(b.registered_at)
        .bind(b.updated_at)
        .bind(b.expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A change of the stored bindings, from [`crate::Store::registration_notices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationNotice {
    /// A node wrote the bindings of a connection.
    Changed { connection_id: String, node: Option<String> },
    /// Notices may have been lost (the listening connection was down): read everything again.
    Resync,
}

/// LISTENs for binding changes, reconnecting after errors; a `Resync` follows each (re)connect.
async fn listen_for_registrations(url: String, out: tokio::sync::mpsc::Sender<RegistrationNotice>) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen("opentrunk_registrations").await {
                Err(e) => tracing::warn!(error = %e, "LISTEN for registrations failed"),
                Ok(()) => {
                    if out.send(RegistrationNotice::Resync).await.is_err() {
                        return;
                    }
                    loop {
                        match listener.recv().await {
                            Ok(n) => {
                                let (connection_id, node) = n.payload().split_once(' ').unwrap_or((n.payload(), ""));
                                let notice = RegistrationNotice::Changed {
                                    connection_id: connection_id.to_owned(),
                                    node: (!node.is_empty()).then(|| node.to_owned()),
                                };
                                if out.send(notice).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "registrations listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "registrations listener cannot connect"),
        }
        if out.is_closed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Every binding of a connection, expired or not (expiry is the sweep's), oldest registration
/// first.
pub(crate) async fn list(pool: &sqlx::AnyPool, connection_id: &str) -> Result<Vec<Registration>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM registrations WHERE connection_id = $1 ORDER BY registered_at, binding_key");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(connection_id).fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}
