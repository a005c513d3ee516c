//! The open-call journal: each node keeps its live calls in the store as the records they would
//! leave if the node died now, and says it is alive with a heartbeat. Any node's reaper turns
//! the open calls of a node whose heartbeat is older than the node-loss age into call detail
//! records ended at that heartbeat, so a node killed mid-call loses no record. A call's journal
//! row goes in the transaction that stores its record ([`crate::Store::insert_new_cdrs`]).
//!
//! Exactly once: a lost node's records are inserted by id with "skip if stored", and its rows
//! go in the same transaction; on PostgreSQL the reaper locks the node's row and skips nodes
//! another reaper holds (`FOR UPDATE SKIP LOCKED`), on SQLite writers take turns. A record the
//! node itself stored before it died wins over the reaper's (the reaper's insert is skipped).
//!
//! Times are Unix milliseconds passed in by the caller; nodes' clocks must agree to well within
//! the node-loss age (NTP does).

use serde_json::value::RawValue;

use crate::cdr::{self, CallDetailRecord, HangupSource, RawJson, Taken, cdr_timestamp};
use crate::{Backend, Store, StoreError};

/// A live call as the node handling it journaled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenCall {
    /// The node handling the call.
    pub node_id: String,
    /// The call's record as known when it started; its id is the call's id in the journal and
    /// the id of the record it will have.
    pub record: CallDetailRecord,
    /// How a rated call's answered time is billed (`60/60`); `None` when not rated.
    pub billing_increment: Option<String>,
    pub answered_at_ms: Option<i64>,
    /// When the row was last written.
    pub updated_at_ms: i64,
}

/// One change to the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalWrite {
    /// A call started.
    Open(Box<OpenCall>),
    /// A call was answered (a call answered already keeps its first answer time).
    Answered { call_id: String, answered_at_ms: i64, updated_at_ms: i64 },
}

impl JournalWrite {
    pub fn call_id(&self) -> &str {
        match self {
            JournalWrite::Open(c) => &c.record.id,
            JournalWrite::Answered { call_id, .. } => call_id,
        }
    }
}

/// What a lost call's answered time is billed: the seconds and the cost (a decimal, USD).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Billing {
    pub billed_sec: u32,
    pub cost: Option<String>,
}

/// What one reaping did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// The lost nodes whose rows went, by id.
    pub nodes: Vec<String>,
    /// Records made from open calls and stored.
    pub records: u64,
    /// Open calls whose record was stored already (the node stored it, then died before its
    /// row went: impossible in one transaction, but a row written back after its record was is
    /// handled the same way).
    pub already_stored: u64,
}

/// The rule of the trace entry a lost call's record gets.
pub const NODE_LOST_RULE: &str = "cluster.node_lost";

/// The status a lost call's record carries when it was never answered: the caller got no final
/// response from the lost node, and its own transaction timed out (RFC 3261 Timer B: 408).
pub const LOST_UNANSWERED_STATUS: u16 = 408;

/// The record an open call leaves when its node was lost: ended at `ended_at_ms` (the node's
/// last heartbeat; never before the answer or the start), `call_sec` from the answer to then,
/// billed by `bill` (given the answered milliseconds; an unanswered call bills nothing), 200
/// when answered else [`LOST_UNANSWERED_STATUS`], ended by the system, no product reason code
/// (none describes it), and the call's trace with a [`NODE_LOST_RULE`] note naming the node and
/// its last heartbeat.
pub fn lost_call_record(
    call: &OpenCall,
    ended_at_ms: i64,
    bill: &(dyn Fn(&OpenCall, u64) -> Billing + Sync),
) -> CallDetailRecord {
    let mut r = call.record.clone();
    let ended_ms = call.answered_at_ms.map_or(ended_at_ms, |a| ended_at_ms.max(a));
    let ended = cdr_timestamp(ended_ms);
    // Text order is time order in the one shape: an end before the start is the start.
    r.ended_at = if ended < r.started_at { r.started_at.clone() } else { ended };
    r.answered_at = call.answered_at_ms.map(cdr_timestamp);
    let call_ms = call.answered_at_ms.map_or(0, |a| u64::try_from(ended_ms - a).unwrap_or(0));
    let billing = if call.answered_at_ms.is_some() { bill(call, call_ms) } else { Billing::default() };
    r.call_sec = u32::try_from(call_ms / 1000).unwrap_or(u32::MAX);
    r.billed_sec = billing.billed_sec;
    r.cost = billing.cost;
    r.sip_response_code = if call.answered_at_ms.is_some() { 200 } else { LOST_UNANSWERED_STATUS };
    r.reason_code = None;
    r.hangup_source = HangupSource::System;
    r.trace = with_node_lost(&r.trace, &call.node_id, ended_at_ms);
    r
}

/// `trace` with the node-lost note appended (a trace that is not a JSON array is kept whole
/// under `"trace"` in the note, never dropped).
fn with_node_lost(trace: &RawJson, node_id: &str, heartbeat_ms: i64) -> RawJson {
    let mut facts = serde_json::json!({ "node_id": node_id, "last_heartbeat": cdr_timestamp(heartbeat_ms) });
    let mut steps = match serde_json::from_str::<Vec<Box<RawValue>>>(trace.get()) {
        Ok(steps) => steps,
        Err(_) => {
            facts["trace"] = serde_json::from_str(trace.get()).unwrap_or(serde_json::Value::Null);
            Vec::new()
        }
    };
    let note = serde_json::json!({ "rule": NODE_LOST_RULE, "verdict": "note", "facts": facts });
    if let Ok(raw) = serde_json::value::to_raw_value(&note) {
        steps.push(raw);
    }
    // A list of JSON values serializes; the fallback keeps the trace as it was.
    RawJson::of(&steps).unwrap_or_else(|_| trace.clone())
}

/// `(?,?),(?,?)` on SQLite, `($1,$2),($3,$4)` on PostgreSQL: `rows` tuples of `cols`.
pub(crate) fn tuples(backend: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for row in 0..rows {
        s.push_str(if row == 0 { "(" } else { ",(" });
        for col in 0..cols {
            if col > 0 {
                s.push(',');
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(row * cols + col + 1).to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

/// Removes the journal rows of `ids` in the open transaction (their records are being stored).
pub(crate) async fn close<DB: cdr::RecordDb>(
    conn: &mut DB::Connection,
    backend: Backend,
    ids: &[&str],
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> DB::Text<'t>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    for chunk in cdr::shaped_chunks(ids) {
        let list = tuples(backend, 1, chunk.len());
        let sql = format!("DELETE FROM open_calls WHERE call_id IN {list}");
        let mut q = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(DB::text(id));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`Store::write_journal`] through `pool`, in one transaction.
async fn write_journal_in<DB: cdr::RecordDb>(
    pool: &sqlx::Pool<DB>,
    backend: Backend,
    opens: &[&OpenCall],
    records: &[String],
    answers: &[(&str, i64, i64)],
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> DB::Text<'t>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<DB::Text<'t>>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let mut tx = pool.begin().await?;
    for (chunk, texts) in cdr::shaped_chunks(opens).zip(cdr::shaped_chunks(records)) {
        let sql = format!(
            "INSERT INTO open_calls ({OPEN_CALL_COLUMNS}) VALUES {} ON CONFLICT (call_id) DO NOTHING",
            tuples(backend, chunk.len(), 6)
        );
        let mut q = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
        for (c, text) in chunk.iter().zip(texts) {
            q = q
                .bind(DB::text(&c.record.id))
                .bind(DB::text(&c.node_id))
                .bind(DB::text(text))
                .bind(c.billing_increment.as_deref().map(DB::text))
                .bind(c.answered_at_ms)
                .bind(c.updated_at_ms);
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in cdr::shaped_chunks(answers) {
        // VALUES columns are column1.. on both backends.
        let sql = format!(
            "UPDATE open_calls SET answered_at = COALESCE(open_calls.answered_at, v.column2), updated_at = \
             v.column3 FROM (VALUES {}) AS v WHERE open_calls.call_id = v.column1",
            tuples(backend, chunk.len(), 3)
        );
        let mut q = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
        for (id, answered, updated) in chunk {
            q = q.bind(DB::text(id)).bind(*answered).bind(*updated);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

type OpenCallRow = (String, String, String, Option<String>, Option<i64>, i64);

const OPEN_CALL_COLUMNS: &str = "call_id, node_id, record, billing_increment, answered_at, updated_at";

fn open_call(row: OpenCallRow) -> Result<OpenCall, StoreError> {
    let (call_id, node_id, record, billing_increment, answered_at_ms, updated_at_ms) = row;
    let record: CallDetailRecord = serde_json::from_str(&record)
        .map_err(|e| StoreError::Failed(format!("open call {call_id}: unreadable record: {e}")))?;
    if record.id != call_id {
        return Err(StoreError::Failed(format!("open call {call_id}: its record is {}", record.id)));
    }
    Ok(OpenCall { node_id, record, billing_increment, answered_at_ms, updated_at_ms })
}

impl Store {
    /// Says `node_id` is alive at `now_ms` (a node started at `started_ms`). A heartbeat never
    /// moves back in time.
    pub async fn node_heartbeat(&self, node_id: &str, started_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        let _timing = self.stats.time(crate::Operation::NodeHeartbeat);
        sqlx::query(
            "INSERT INTO nodes (node_id, started_at, heartbeat_at) VALUES ($1, $2, $3) ON CONFLICT (node_id) DO \
             UPDATE SET heartbeat_at = CASE WHEN excluded.heartbeat_at > nodes.heartbeat_at THEN \
             excluded.heartbeat_at ELSE nodes.heartbeat_at END",
        )
        .bind(node_id)
        .bind(started_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A node stopping on purpose: its row goes when none of its calls is open (says whether
    /// it went). With calls still open it stays, its heartbeat ages, and reapers take them.
    pub async fn node_stopped(&self, node_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM nodes WHERE node_id = $1 AND NOT EXISTS (SELECT 1 FROM open_calls WHERE node_id = $1)",
        )
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every node's last heartbeat: (node id, started, heartbeat), by id.
    pub async fn nodes(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query_as("SELECT node_id, started_at, heartbeat_at FROM nodes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Writes `writes` to the journal, all or nothing. An opened call already journaled stays as
    /// it was; an answer to a call no longer journaled (its record is stored) changes nothing.
    pub async fn write_journal<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a JournalWrite>,
    ) -> Result<(), StoreError> {
        let _timing = self.stats.time(crate::Operation::JournalWrite);
        let mut opens = Vec::new();
        let mut answers = Vec::new();
        for w in writes {
            match w {
                JournalWrite::Open(c) => opens.push(&**c),
                JournalWrite::Answered { call_id, answered_at_ms, updated_at_ms } => {
                    answers.push((call_id.as_str(), *answered_at_ms, *updated_at_ms))
                }
            }
        }
        let records = opens
            .iter()
            .map(|c| {
                cdr::check(&c.record)?;
                serde_json::to_string(&c.record)
                    .map_err(|e| StoreError::Failed(format!("open call {}: record: {e}", c.record.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // On the records writer's own connection, as the records' batches are: a write on
        // another connection made this one's next transaction find the database changed and
        // drop its whole page cache (every page of six B-trees read again, each batch).
        match &self.records {
            crate::RecordsPool::Sqlite(pool) => write_journal_in(pool, self.backend, &opens, &records, &answers).await,
            crate::RecordsPool::Postgres(pool) => {
                write_journal_in(pool, self.backend, &opens, &records, &answers).await
            }
        }
    }

    /// Every open call in the journal, by id.
    pub async fn open_calls(&self) -> Result<Vec<OpenCall>, StoreError> {
        let sql = format!("SELECT {OPEN_CALL_COLUMNS} FROM open_calls ORDER BY call_id");
        let rows: Vec<OpenCallRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.into_iter().map(open_call).collect()
    }

    /// Turns the open calls of every node but `this_node` whose heartbeat is older than
    /// `now_ms - lost_after_ms` into records ([`lost_call_record`], ended at that heartbeat,
    /// billed by `bill`), stores those not stored yet, and removes the calls' rows and the nodes'
    /// rows, all in one transaction. Open calls whose node has no row (it stopped on purpose
    /// with calls open, or its row was reaped while it still wrote) are lost once their own row
    /// is that old, ended at its last write.
    pub async fn reap_lost_nodes(
        &self,
        this_node: &str,
        now_ms: i64,
        lost_after_ms: i64,
        bill: &(dyn Fn(&OpenCall, u64) -> Billing + Sync),
    ) -> Result<Reaped, StoreError> {
        let _timing = self.stats.time(crate::Operation::JournalReap);
        let cutoff = now_ms.saturating_sub(lost_after_ms);
        let (lock, skip_locked) = match self.backend {
            Backend::Postgres => (" FOR UPDATE", " FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => ("", ""),
        };
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Sqlite {
            // Take the write lock before reading: a read snapshot cannot be upgraded once
            // another writer has committed, and a second reaper waits here instead.
            sqlx::query("UPDATE nodes SET heartbeat_at = heartbeat_at WHERE node_id = $1")
                .bind(this_node)
                .execute(&mut *tx)
                .await?;
        }
        let lost: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT node_id, heartbeat_at FROM nodes WHERE heartbeat_at < $1 AND node_id <> $2 ORDER BY node_id \
             {skip_locked}"
        )))
        .bind(cutoff)
        .bind(this_node)
        .fetch_all(&mut *tx)
        .await?;
        let mut records = Vec::new();
        let mut ids = Vec::new();
        for (node, heartbeat_ms) in &lost {
            // By the ids read here: a row the node writes after this (it was slow, not dead) is
            // not removed without its record.
            let sql = format!("SELECT {OPEN_CALL_COLUMNS} FROM open_calls WHERE node_id = $1 ORDER BY call_id{lock}");
            let rows: Vec<OpenCallRow> =
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(node).fetch_all(&mut *tx).await?;
            for row in rows {
                let call = open_call(row)?;
                records.push(lost_call_record(&call, *heartbeat_ms, bill));
                ids.push(call.record.id);
            }
        }
        let sql = format!(
            "SELECT {OPEN_CALL_COLUMNS} FROM open_calls o WHERE updated_at < $1 AND node_id <> $2 AND NOT EXISTS \
             (SELECT 1 FROM nodes n WHERE n.node_id = o.node_id) ORDER BY call_id{skip_locked}"
        );
        let orphans: Vec<OpenCallRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(cutoff).bind(this_node).fetch_all(&mut *tx).await?;
        for row in orphans {
            let call = open_call(row)?;
            records.push(lost_call_record(&call, call.updated_at_ms, bill));
            ids.push(call.record.id);
        }
        let stored = cdr::write::<sqlx::Any>(&mut tx, self.backend, &records, Taken::Skip).await?;
        close::<sqlx::Any>(&mut tx, self.backend, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        for (node, _) in &lost {
            sqlx::query("DELETE FROM nodes WHERE node_id = $1").bind(node).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Reaped {
            nodes: lost.into_iter().map(|(n, _)| n).collect(),
            records: stored,
            already_stored: records.len() as u64 - stored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::Direction;

    /// 2026-01-02T00:00:00.000Z.
    const T0: i64 = 1_767_312_000_000;

    fn open(answered: Option<i64>, trace: &str) -> OpenCall {
        OpenCall {
            node_id: "node-a".into(),
            record: CallDetailRecord {
                id: "019b7ca9-0000-7000-8000-000000000001".into(),
                account_id: "acct".into(),
                connection_id: "conn".into(),
                outbound_voice_profile_id: Some("ovp".into()),
                direction: Direction::Outbound,
                a_leg_call_id: "a@192.0.2.1".into(),
                b_leg_call_id: None,
                from_received: "+12125551234".into(),
                to_received: "2125556789".into(),
                from_sent: None,
                to_sent: None,
                started_at: cdr_timestamp(T0),
                answered_at: None,
                ended_at: cdr_timestamp(T0),
                call_sec: 0,
                billed_sec: 0,
                rate: Some("0.0100".into()),
                cost: None,
                sip_response_code: 100,
                reason_code: None,
                hangup_source: HangupSource::Caller,
                route_attempts: Vec::new(),
                trace: RawJson::from_text(trace.into()).unwrap(),
            },
            billing_increment: Some("60/60".into()),
            answered_at_ms: answered,
            updated_at_ms: T0,
        }
    }

    /// Bills every started second at a cent (the rule itself is the caller's).
    fn by_the_second(_: &OpenCall, call_ms: u64) -> Billing {
        let s = call_ms.div_ceil(1000);
        Billing { billed_sec: s as u32, cost: Some(format!("0.{s:02}")) }
    }

    #[test]
    fn lost_calls_records() {
        struct Case {
            answered: Option<i64>,
            heartbeat: i64,
            ended: i64,
            call_sec: u32,
            billed_sec: u32,
            cost: Option<&'static str>,
            status: u16,
        }
        let cases = [
            // Answered 2 s in, lost 62.5 s in: 60.5 s talked.
            Case {
                answered: Some(2_000),
                heartbeat: 62_500,
                ended: 62_500,
                call_sec: 60,
                billed_sec: 61,
                cost: Some("0.61"),
                status: 200,
            },
            // Never answered: nothing billed, the caller timed out.
            Case {
                answered: None,
                heartbeat: 9_000,
                ended: 9_000,
                call_sec: 0,
                billed_sec: 0,
                cost: None,
                status: 408,
            },
            // Answered after the last heartbeat (the answer landed, the next beat did not).
            Case {
                answered: Some(5_000),
                heartbeat: 4_000,
                ended: 5_000,
                call_sec: 0,
                billed_sec: 0,
                cost: Some("0.00"),
                status: 200,
            },
            // A heartbeat before the start (clocks apart): the end is the start.
            Case { answered: None, heartbeat: -500, ended: 0, call_sec: 0, billed_sec: 0, cost: None, status: 408 },
        ];
        for (i, c) in cases.iter().enumerate() {
            let call = open(c.answered.map(|a| T0 + a), "[]");
            let r = lost_call_record(&call, T0 + c.heartbeat, &by_the_second);
            assert_eq!(r.ended_at, cdr_timestamp(T0 + c.ended), "case {i}");
            assert_eq!(r.answered_at, c.answered.map(|a| cdr_timestamp(T0 + a)), "case {i}");
            assert_eq!((r.call_sec, r.billed_sec, r.cost.as_deref()), (c.call_sec, c.billed_sec, c.cost), "case {i}");
            assert_eq!(r.sip_response_code, c.status, "case {i}");
            assert_eq!((r.hangup_source, r.reason_code.as_deref()), (HangupSource::System, None), "case {i}");
            assert_eq!((r.id.as_str(), r.rate.as_deref()), (call.record.id.as_str(), Some("0.0100")), "case {i}");
        }
    }

    #[test]
    fn the_trace_says_which_node_was_lost() {
        let call = open(None, r#"[{"rule":"identify.source","verdict":"note","facts":{}}]"#);
        let r = lost_call_record(&call, T0 + 1_000, &by_the_second);
        let trace: serde_json::Value = serde_json::from_str(r.trace.get()).unwrap();
        assert_eq!(trace[0]["rule"], "identify.source");
        assert_eq!(trace[1]["rule"], NODE_LOST_RULE);
        assert_eq!(trace[1]["verdict"], "note");
        assert_eq!(trace[1]["facts"]["node_id"], "node-a");
        assert_eq!(trace[1]["facts"]["last_heartbeat"], "2026-01-02T00:00:01.000Z");
        // A trace that is not a list is kept inside the note.
        let r = lost_call_record(&open(None, r#"{"odd":1}"#), T0, &by_the_second);
        let trace: serde_json::Value = serde_json::from_str(r.trace.get()).unwrap();
        assert_eq!(trace[0]["facts"]["trace"]["odd"], 1);
    }

    #[test]
    fn tuples_per_backend() {
        assert_eq!(tuples(Backend::Sqlite, 2, 3), "(?,?,?),(?,?,?)");
        assert_eq!(tuples(Backend::Postgres, 2, 3), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(tuples(Backend::Postgres, 1, 2), "($1,$2)");
    }
}
