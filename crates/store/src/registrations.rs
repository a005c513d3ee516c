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
    /// changes arrive at the REGISTER rate (a storm of 2,000 a second): a commit each cost
    /// more than the REGISTER itself, and a statement each (through `Any`, every statement a
    /// round trip to SQLite's worker thread) as much again. So they go through the records'
    /// pool (the backend's own driver), consecutive upserts of distinct bindings in multi-row
    /// statements.
    pub async fn write_registrations(
        &self,
        writes: &[RegistrationWrite],
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let _timing = self.stats.time(crate::Operation::RegistrationWrite);
        match &self.records {
            crate::RecordsPool::Sqlite(pool) => write::<sqlx::Sqlite>(pool, self.backend, writes, node).await,
            crate::RecordsPool::Postgres(pool) => write::<sqlx::Postgres>(pool, self.backend, writes, node).await,
        }
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

/// What [`write`] runs, in order: runs of upserts of distinct bindings (a run goes in
/// multi-row statements), and removals.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Upsert(Vec<&'a Registration>),
    Remove { connection_id: &'a str, binding_key: &'a str },
}

/// `writes` as [`Step`]s: a binding already in the current run, or a removal, ends the run, so
/// the changes still apply in their order.
fn steps(writes: &[RegistrationWrite]) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let mut run: Vec<&Registration> = Vec::new();
    let mut in_run: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    for write in writes {
        match write {
            RegistrationWrite::Upsert(b) => {
                if !in_run.insert((&b.connection_id, &b.binding_key)) {
                    steps.push(Step::Upsert(std::mem::take(&mut run)));
                    in_run.clear();
                    in_run.insert((&b.connection_id, &b.binding_key));
                }
                run.push(b);
            }
            RegistrationWrite::Remove { connection_id, binding_key } => {
                if !run.is_empty() {
                    steps.push(Step::Upsert(std::mem::take(&mut run)));
                    in_run.clear();
                }
                steps.push(Step::Remove { connection_id, binding_key });
            }
        }
    }
    if !run.is_empty() {
        steps.push(Step::Upsert(run));
    }
    steps
}

/// [`crate::Store::write_registrations`] through `pool`: the [`steps`] of `writes` in one
/// transaction, each run of upserts in statements of the records' [`crate::cdr::SHAPES`]
/// (each shape's text prepared once per connection).
async fn write<DB: crate::cdr::RecordDb>(
    pool: &sqlx::Pool<DB>,
    backend: crate::Backend,
    writes: &[RegistrationWrite],
    node: Option<&str>,
) -> Result<u64, StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> DB::Text<'t>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<DB::Text<'t>>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    use sqlx::Arguments as _;
    let mut tx = pool.begin().await?;
    let mut removed = 0;
    let mut changed: Vec<(&str, Option<&str>)> = Vec::new();
    for step in steps(writes) {
        match step {
            Step::Upsert(run) => {
                for b in &run {
                    let connection = (b.connection_id.as_str(), b.node.as_deref());
                    if !changed.contains(&connection) {
                        changed.push(connection);
                    }
                }
                for chunk in crate::cdr::shaped_chunks(&run) {
                    let mut args = DB::Arguments::default();
                    args.reserve(chunk.len() * COLUMN_COUNT, chunk.len() * 256);
                    for b in chunk {
                        let path = serde_json::to_string(&b.path).map_err(|e| StoreError::Failed(e.to_string()))?;
                        let bound = (|| {
                            args.add(DB::text(&b.connection_id))?;
                            args.add(DB::text(&b.binding_key))?;
                            args.add(DB::text(&b.account_id))?;
                            args.add(DB::text(&b.username))?;
                            args.add(DB::text(&b.contact))?;
                            args.add(b.instance.as_deref().map(DB::text))?;
                            args.add(b.reg_id.map(i64::from))?;
                            args.add(b.q.map(i64::from))?;
                            args.add(path)?;
                            args.add(DB::text(&b.call_id))?;
                            args.add(i64::from(b.cseq))?;
                            args.add(DB::text(&b.source_ip))?;
                            args.add(i64::from(b.source_port))?;
                            args.add(DB::text(&b.transport))?;
                            args.add(i64::from(b.nat))?;
                            args.add(b.user_agent.as_deref().map(DB::text))?;
                            args.add(b.node.as_deref().map(DB::text))?;
                            args.add(b.registered_at)?;
                            args.add(b.updated_at)?;
                            args.add(b.expires_at)
                        })();
                        bound.map_err(|e| StoreError::Failed(format!("registration values: {e}")))?;
                    }
                    let sql = upsert_sql_cached(backend, chunk.len());
                    sqlx::query_with::<DB, _>(sqlx::AssertSqlSafe(sql), args).execute(&mut *tx).await?;
                }
            }
            Step::Remove { connection_id, binding_key } => {
                let sql = match backend {
                    crate::Backend::Sqlite => "DELETE FROM registrations WHERE connection_id = ? AND binding_key = ?",
                    crate::Backend::Postgres => {
                        "DELETE FROM registrations WHERE connection_id = $1 AND binding_key = $2"
                    }
                };
                let done = sqlx::query::<DB>(sql)
                    .bind(DB::text(connection_id))
                    .bind(DB::text(binding_key))
                    .execute(&mut *tx)
                    .await?;
                let n = DB::rows_affected(&done);
                removed += n;
                let connection = (connection_id, node);
                if n > 0 && !changed.contains(&connection) {
                    changed.push(connection);
                }
            }
        }
    }
    if backend == crate::Backend::Postgres {
        // Every node learns which connection's bindings changed (delivered at commit):
        // `connection_id` and the writing node, space separated.
        for (connection_id, node) in changed {
            let payload = format!("{connection_id} {}", node.unwrap_or_default());
            sqlx::query::<DB>("SELECT pg_notify('opentrunk_registrations', $1)")
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(removed)
}

/// How many values a binding binds (the [`COLUMNS`]).
const COLUMN_COUNT: usize = 20;

/// The upsert of `rows` bindings, one of the [`crate::cdr::SHAPES`], written once per process.
fn upsert_sql_cached(backend: crate::Backend, rows: usize) -> &'static str {
    use std::sync::OnceLock;
    const SHAPES: usize = crate::cdr::SHAPES.len();
    static TEXTS: [[OnceLock<String>; SHAPES]; 2] = [const { [const { OnceLock::new() }; SHAPES] }; 2];
    let shape = crate::cdr::SHAPES.iter().position(|&n| n == rows).expect("a statement shape");
    let b = usize::from(backend == crate::Backend::Postgres);
    TEXTS[b][shape].get_or_init(|| {
        format!(
            "INSERT INTO registrations ({COLUMNS}) VALUES {} ON CONFLICT (connection_id, binding_key) DO UPDATE SET \
             account_id = excluded.account_id, username = excluded.username, contact = excluded.contact, \
             instance = excluded.instance, reg_id = excluded.reg_id, q = excluded.q, path = excluded.path, \
             call_id = excluded.call_id, cseq = excluded.cseq, source_ip = excluded.source_ip, \
             source_port = excluded.source_port, transport = excluded.transport, nat = excluded.nat, \
             user_agent = excluded.user_agent, node = excluded.node, registered_at = excluded.registered_at, \
             updated_at = excluded.updated_at, expires_at = excluded.expires_at",
            crate::journal::tuples(backend, rows, COLUMN_COUNT)
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(connection_id: &str, contact: &str) -> Registration {
        Registration {
            connection_id: connection_id.into(),
            binding_key: Registration::key_of(contact, None, None),
            account_id: "acct-1".into(),
            username: "alice".into(),
            contact: contact.into(),
            instance: None,
            reg_id: None,
            q: None,
            path: Vec::new(),
            call_id: "reg-1".into(),
            cseq: 1,
            source_ip: "192.0.2.9".into(),
            source_port: 5060,
            transport: "UDP".into(),
            nat: false,
            user_agent: None,
            node: None,
            registered_at: 0,
            updated_at: 0,
            expires_at: 60_000,
        }
    }

    #[test]
    fn a_repeated_binding_or_a_removal_ends_a_run_of_upserts() {
        let (a, b) = (binding("conn-1", "sip:a@192.0.2.1"), binding("conn-1", "sip:b@192.0.2.2"));
        // The same contact under another connection is another binding.
        let other_a = binding("conn-2", "sip:a@192.0.2.1");
        let up = |r: &Registration| RegistrationWrite::Upsert(Box::new(r.clone()));
        let writes = [
            up(&a),
            up(&b),
            up(&other_a),
            up(&a),
            RegistrationWrite::Remove { connection_id: "conn-1".into(), binding_key: b.binding_key.clone() },
            RegistrationWrite::Remove { connection_id: "conn-1".into(), binding_key: a.binding_key.clone() },
            up(&b),
        ];
        fn remove(r: &Registration) -> Step<'_> {
            Step::Remove { connection_id: "conn-1", binding_key: &r.binding_key }
        }
        assert_eq!(
            steps(&writes),
            [
                Step::Upsert(vec![&a, &b, &other_a]),
                Step::Upsert(vec![&a]),
                remove(&b),
                remove(&a),
                Step::Upsert(vec![&b]),
            ]
        );
        assert!(steps(&[]).is_empty());
    }
}
