//! Call detail records (CDRs): one per call the switch handled, written in batches from a queue
//! ([`crate::Repository::insert_cdrs`], or [`crate::Store::insert_new_cdrs`] to replay without
//! duplicates) and read by the API, newest first ([`crate::Repository::list_cdrs`]). A record is
//! plain data; it names its account, connection and carriers by id but references nothing, so it
//! outlives them (billing history stays).
//!
//! Times are RFC 3339 UTC text with milliseconds in one fixed shape, `2026-01-02T03:04:05.678Z`
//! ([`cdr_timestamp`] makes one from Unix milliseconds): text order is then time order on both
//! backends, which the indexes and date filters rely on, so the store refuses any other shape.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::any::AnyRow;
use sqlx::{Arguments as _, Row};

use crate::{Backend, StoreError, conflict_or};

/// Which way the call went, seen from the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer's connection toward a carrier (termination).
    Outbound,
    /// From a carrier toward the customer's number (origination).
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    pub fn from_token(s: &str) -> Option<Direction> {
        [Direction::Outbound, Direction::Inbound].into_iter().find(|d| d.as_str() == s)
    }
}

/// Which side ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupSource {
    /// The calling party: a BYE or CANCEL from the A leg.
    Caller,
    /// The called party: a BYE or final failure from the B leg.
    Callee,
    /// The platform: a rejection by the rules, every route failed, a timeout, a drain.
    System,
}

impl HangupSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupSource::Caller => "caller",
            HangupSource::Callee => "callee",
            HangupSource::System => "system",
        }
    }

    pub fn from_token(s: &str) -> Option<HangupSource> {
        [HangupSource::Caller, HangupSource::Callee, HangupSource::System].into_iter().find(|h| h.as_str() == s)
    }
}

/// How one route attempt ended; in JSON, `"outcome"` with `"sip_response_code"` for a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// A final response arrived with this status.
    Response { sip_response_code: u16 },
    /// No final response in time (Timer B).
    Timeout,
    /// The request could not be sent (refused, reset, TLS failure, ICMP error).
    TransportError,
}

/// One try of one route of the call: a carrier's gateway, and the address the INVITE went to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAttempt {
    pub carrier_id: String,
    /// The gateway's host as configured on the carrier.
    pub gateway: String,
    pub port: u16,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    /// The address the request was sent to (`203.0.113.7:5060`); `None` when the gateway's name
    /// did not resolve.
    pub target: Option<String>,
    #[serde(flatten)]
    pub outcome: AttemptOutcome,
    pub started_at: String,
    pub ended_at: String,
}

/// One call as it happened and was billed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDetailRecord {
    /// A UUID ([`new_cdr_id`]).
    pub id: String,
    pub account_id: String,
    pub connection_id: String,
    /// The outbound voice profile that applied (outbound calls).
    pub outbound_voice_profile_id: Option<String>,
    pub direction: Direction,
    /// The SIP Call-ID of the leg with the caller (the customer's for outbound calls, the
    /// carrier's for inbound ones).
    pub a_leg_call_id: String,
    /// The SIP Call-ID of the leg toward the callee; `None` when none was created (a call
    /// refused before routing).
    pub b_leg_call_id: Option<String>,
    /// The calling and called party as the A leg carried them.
    pub from_received: String,
    pub to_received: String,
    /// The calling and called party as sent on the B leg (after normalisation, caller ID
    /// policy, ANI/DNIS formats, tech prefix); `None` when nothing was sent.
    pub from_sent: Option<String>,
    pub to_sent: Option<String>,
    /// When the INVITE arrived, was answered (`None`: never) and the call ended.
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: String,
    /// Seconds from answer to end (0 when unanswered), and the seconds billed after the
    /// billing increments.
    pub call_sec: u32,
    pub billed_sec: u32,
    /// The per-minute rate and the call's cost, exact decimals in USD; `None` when not rated.
    pub rate: Option<String>,
    pub cost: Option<String>,
    /// The final SIP status the caller got (200 for an answered call).
    pub sip_response_code: u16,
    /// The product's reason code (`D1`, `PE1`, ...), when the platform decided the outcome.
    pub reason_code: Option<String>,
    pub hangup_source: HangupSource,
    /// Every route tried, in order.
    pub route_attempts: Vec<RouteAttempt>,
    /// The rules' decision trace as JSON (`RawJson::of_trace`), kept as is.
    pub trace: RawJson,
}

/// JSON text kept as written (a record's decision trace): checked once when made, then stored
/// and read back without being parsed into values, and serialized as the JSON it holds. The
/// engine serializes a trace straight to text: building a `serde_json::Value` and writing it out
/// again took about a fifth of a batch insert's time.
///
/// A trace written by [`RawJson::of_trace`] (JSON by construction) is kept as written, not parsed
/// again to be checked: that check cost more than the writing.
#[derive(Clone, Debug)]
pub struct RawJson(Text);

#[derive(Clone, Debug)]
enum Text {
    /// Parsed once to be checked (read back from the store, or serialized by serde_json).
    Checked(Box<RawValue>),
    /// Written as JSON by construction.
    Written(String),
}

impl RawJson {
    /// `value` serialized to JSON text.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<RawJson, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|raw| RawJson(Text::Checked(raw)))
    }

    /// A decision trace's JSON text ([`trunking::trace::Trace::to_json`]: its `Serialize` form,
    /// written directly; valid JSON by construction, so not checked again).
    pub fn of_trace(trace: &trunking::trace::Trace) -> RawJson {
        RawJson(Text::Written(trace.to_json()))
    }

    /// JSON text, checked to be one JSON value.
    pub fn from_text(text: String) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text).map(|raw| RawJson(Text::Checked(raw)))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        match &self.0 {
            Text::Checked(raw) => raw.get(),
            Text::Written(text) => text,
        }
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Text::Checked(raw) => raw.serialize(s),
            // Only a record spooled before it was stored gets here; borrowed, so no copy.
            Text::Written(text) => {
                let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
                raw.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawJson, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| RawJson(Text::Checked(raw)))
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

/// Which records a list returns. Every field narrows; `Default` is every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdrFilter {
    /// One account's records; `None` (the operator) for every account's.
    pub account_id: Option<String>,
    pub connection_id: Option<String>,
    pub sip_response_code: Option<u16>,
    /// Records that started at or after / at or before this time (inclusive), in the
    /// [`cdr_timestamp`] shape.
    pub started_at_gte: Option<String>,
    pub started_at_lte: Option<String>,
}

/// The columns, in the order they are written and read.
const COLUMNS: [&str; 23] = [
    "id",
    "account_id",
    "connection_id",
    "outbound_voice_profile_id",
    "direction",
    "a_leg_call_id",
    "b_leg_call_id",
    "from_received",
    "to_received",
    "from_sent",
    "to_sent",
    "started_at",
    "answered_at",
    "ended_at",
    "call_sec",
    "billed_sec",
    "rate",
    "cost",
    "sip_response_code",
    "reason_code",
    "hangup_source",
    "route_attempts",
    "trace",
];

/// Records per INSERT statement, largest first: a batch is cut into statements of these sizes
/// (100 records: 64 + 16 + 16 + 4), so a connection prepares four statements once and reuses
/// them. Batches of every size between 1 and 500 each made a statement of their own, prepared
/// anew as they pushed each other out of the statement cache (1.8% of the process's CPU at
/// 1,000 calls/s). 23 x 64 parameters is within both backends' limits.
pub(crate) const SHAPES: [usize; 4] = [64, 16, 4, 1];

/// Whether `s` has the one shape CDR times take: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn is_cdr_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Unix milliseconds as a CDR time (`2026-01-02T03:04:05.678Z`), for years 0 to 9999 (times
/// outside are clamped to that range's ends).
pub fn cdr_timestamp(unix_ms: i64) -> String {
    // 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
    let ms = unix_ms.clamp(-62_167_219_200_000, 253_402_300_799_999);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    // The calendar date by the days-to-civil algorithm (H. Hinnant, "chrono-compatible
    // low-level date algorithms"), and digits written in place: through `time`'s
    // `OffsetDateTime` (i128 nanoseconds) and the formatting machinery it was about 900
    // instructions a time, and a call's record carries three and two per route attempt.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    let ms_of_day = ms_of_day as u32; // below 86,400,000
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, ms_of_day / 3_600_000);
    put(14, 2, ms_of_day / 60_000 % 60);
    put(17, 2, ms_of_day / 1000 % 60);
    put(20, 3, ms_of_day % 1000);
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01, for years 0
/// to 9999 (what [`cdr_timestamp`] clamps to).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    // Counted from 0000-03-01, so that the leap day ends a year; eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let mp = (5 * day_of_year + 2) / 153; // [0, 11], March first
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year.clamp(0, 9999) as u32, month as u32, day as u32)
}

/// A new record id: a UUID version 7 (RFC 9562), its first 48 bits `unix_ms`, so ids of one
/// batch land next to each other in the primary key's index. The random bits come from the
/// thread's generator (a CSPRNG seeded from the operating system): asking the kernel for them
/// was a system call per call.
pub fn new_cdr_id(unix_ms: i64) -> String {
    use rand::Rng as _;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b[6..]);
    let ms = u64::try_from(unix_ms).unwrap_or(0).to_be_bytes();
    b[..6].copy_from_slice(&ms[2..]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    // 8-4-4-4-12 hex digits, written in place (one allocation; one per call).
    let mut id = String::with_capacity(36);
    for (i, group) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]].into_iter().enumerate() {
        if i > 0 {
            id.push('-');
        }
        crate::push_hex(&mut id, group);
    }
    id
}

/// `attempts` as the JSON text serde_json makes of them (`RouteAttempt`'s derived form, fields
/// in declaration order, the outcome flattened in), written straight into one string: through
/// serde_json's generic path (a map, for the flattened outcome) it was about 18% of a batch
/// insert's CPU (four attempts, about 1 KB).
pub(crate) fn route_attempts_json(attempts: &[RouteAttempt]) -> String {
    let text: usize = attempts
        .iter()
        .map(|a| a.carrier_id.len() + a.gateway.len() + a.transport.len() + a.target.as_ref().map_or(0, String::len))
        .sum();
    // The names, punctuation and two times come to about 190 bytes an attempt.
    let mut out = String::with_capacity(2 + text + attempts.len() * 200);
    out.push('[');
    for (i, a) in attempts.iter().enumerate() {
        // Every field named: one added to `RouteAttempt` fails to compile here until written.
        let RouteAttempt { carrier_id, gateway, port, transport, target, outcome, started_at, ended_at } = a;
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"carrier_id\":");
        trunking::json::push_str(&mut out, carrier_id);
        out.push_str(",\"gateway\":");
        trunking::json::push_str(&mut out, gateway);
        out.push_str(",\"port\":");
        push_decimal(&mut out, *port);
        out.push_str(",\"transport\":");
        trunking::json::push_str(&mut out, transport);
        out.push_str(",\"target\":");
        match target {
            Some(t) => trunking::json::push_str(&mut out, t),
            None => out.push_str("null"),
        }
        match outcome {
            AttemptOutcome::Response { sip_response_code } => {
                out.push_str(",\"outcome\":\"response\",\"sip_response_code\":");
                push_decimal(&mut out, *sip_response_code);
            }
            AttemptOutcome::Timeout => out.push_str(",\"outcome\":\"timeout\""),
            AttemptOutcome::TransportError => out.push_str(",\"outcome\":\"transport_error\""),
        }
        out.push_str(",\"started_at\":");
        trunking::json::push_str(&mut out, started_at);
        out.push_str(",\"ended_at\":");
        trunking::json::push_str(&mut out, ended_at);
        out.push('}');
    }
    out.push(']');
    out
}

/// `n` in decimal (serde_json's own integer writer, `itoa`).
fn push_decimal(out: &mut String, n: u16) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Refuses a record whose times are not in the one shape (they would sort wrongly).
pub(crate) fn check(r: &CallDetailRecord) -> Result<(), StoreError> {
    let times =
        [("started_at", Some(&r.started_at)), ("answered_at", r.answered_at.as_ref()), ("ended_at", Some(&r.ended_at))];
    for (name, t) in times {
        if let Some(t) = t
            && !is_cdr_timestamp(t)
        {
            return Err(StoreError::Failed(format!(
                "call detail record {}: {name} `{t}` is not a UTC time like 2026-01-02T03:04:05.678Z",
                r.id
            )));
        }
    }
    Ok(())
}

/// What an insert does with a record whose id is stored already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Fails the whole insert with a conflict in scope `id`.
    Conflict,
    /// Leaves the stored record as it is and writes the others.
    Skip,
}

/// `items` cut greedily into runs of the [`SHAPES`]' sizes.
pub(crate) fn shaped_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let rows = SHAPES.into_iter().find(|&n| n <= rest.len())?;
        let (chunk, after) = rest.split_at(rows);
        rest = after;
        Some(chunk)
    })
}

/// The statement of one of the [`SHAPES`], written once per process.
fn insert_sql_cached(backend: Backend, rows: usize, taken: Taken) -> &'static str {
    use std::sync::OnceLock;
    static TEXTS: [[[OnceLock<String>; SHAPES.len()]; 2]; 2] =
        [const { [const { [const { OnceLock::new() }; 4] }; 2] }; 2];
    let shape = SHAPES.iter().position(|&n| n == rows).expect("a statement shape");
    let b = usize::from(backend == Backend::Postgres);
    let t = usize::from(taken == Taken::Skip);
    TEXTS[b][t][shape].get_or_init(|| insert_sql(backend, rows, taken))
}

/// `INSERT ... VALUES` for `rows` records: anonymous `?` on SQLite (numbered parameters are
/// looked up by name there, quadratic in their number), `$N` on PostgreSQL.
fn insert_sql(backend: Backend, rows: usize, taken: Taken) -> String {
    let n = COLUMNS.len();
    let mut sql = String::with_capacity(64 + n * 12 + rows * n * 6);
    // SQLite: `OR IGNORE` rather than `ON CONFLICT (id) DO NOTHING` (see `write`).
    sql.push_str(if taken == Taken::Skip && backend == Backend::Sqlite {
        "INSERT OR IGNORE INTO call_detail_records ("
    } else {
        "INSERT INTO call_detail_records ("
    });
    sql.push_str(&COLUMNS.join(", "));
    sql.push_str(") VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for col in 0..n {
            if col > 0 {
                sql.push(',');
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(row * n + col + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    if taken == Taken::Skip && backend == Backend::Postgres {
        sql.push_str(" ON CONFLICT (id) DO NOTHING");
    }
    sql
}

/// How many of `ids` ids the table holds, on SQLite (the only backend that asks): anonymous
/// `?`, as [`insert_sql`] writes them there.
fn stored_count_sql(ids: usize) -> String {
    let mut sql = String::with_capacity(64 + ids * 2);
    sql.push_str("SELECT COUNT(*) FROM call_detail_records WHERE id IN (");
    for i in 0..ids {
        sql.push_str(if i == 0 { "?" } else { ",?" });
    }
    sql.push(')');
    sql
}

/// Writes `records` in the open transaction, in statements of the [`SHAPES`]. A taken id is a
/// conflict in scope `id`.
pub(crate) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    records: &[CallDetailRecord],
) -> Result<(), StoreError> {
    write::<sqlx::Any>(tx, backend, records, Taken::Conflict).await.map(|_| ())
}

/// A driver records are written through: sqlx's `Any` (either backend), or the backend's own,
/// which the records writer's inserts take ([`crate::Store`]'s `records` pool). The statements
/// and the values bound are the same on each ([`write`]).
pub(crate) trait RecordDb: sqlx::Database {
    /// A text value as the driver takes it at least cost.
    type Text<'a>;

    fn text(s: &str) -> Self::Text<'_>;

    /// Rows a statement added or removed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl RecordDb for sqlx::Any {
    type Text<'a> = &'a str;

    fn text(s: &str) -> &str {
        s
    }

    fn rows_affected(done: &sqlx::any::AnyQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl RecordDb for sqlx::Postgres {
    /// Written straight into the driver's buffer.
    type Text<'a> = &'a str;

    fn text(s: &str) -> &str {
        s
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl RecordDb for sqlx::Sqlite {
    /// The driver keeps each text in an `Arc` until the statement has run: an `Arc<str>` is
    /// taken as it is (one allocation), where a `&str` becomes an `Arc<String>` (two).
    type Text<'a> = std::sync::Arc<str>;

    fn text(s: &str) -> std::sync::Arc<str> {
        std::sync::Arc::from(s)
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl crate::Store {
    /// Stores the records whose ids are not stored yet, all or nothing, in one transaction, and
    /// returns how many that was; a record whose id is taken is left as stored. The CDR writer
    /// writes through this: after a crash between a batch's commit and the removal of the spool
    /// it was replayed from, the same records come again, and a call must not be billed twice.
    pub async fn insert_new_cdrs(&self, records: &[CallDetailRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let _timing = self.stats.time(crate::Operation::CdrInsert);
        match &self.records {
            crate::RecordsPool::Sqlite(pool) => insert_new(pool, self.backend, records).await,
            crate::RecordsPool::Postgres(pool) => insert_new(pool, self.backend, records).await,
        }
    }
}

/// [`crate::Store::insert_new_cdrs`] through `pool`.
async fn insert_new<DB: RecordDb>(
    pool: &sqlx::Pool<DB>,
    backend: Backend,
    records: &[CallDetailRecord],
) -> Result<u64, StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> DB::Text<'t>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<DB::Text<'t>>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut tx = pool.begin().await?;
    let new = write::<DB>(&mut tx, backend, records, Taken::Skip).await?;
    // The calls are over: their open-call journal rows go with the records' commit.
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    crate::journal::close::<DB>(&mut tx, backend, &ids).await?;
    tx.commit().await?;
    Ok(new)
}

/// Writes `records` in the open transaction, in statements of the [`SHAPES`], and returns how many rows
/// were added.
pub(crate) async fn write<DB: RecordDb>(
    conn: &mut DB::Connection,
    backend: Backend,
    records: &[CallDetailRecord],
    taken: Taken,
) -> Result<u64, StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'t> DB::Text<'t>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<DB::Text<'t>>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    records.iter().try_for_each(check)?;
    let mut added = 0;
    for chunk in shaped_chunks(records) {
        let rows = chunk.len();
        let sql = insert_sql_cached(backend, rows, taken);
        let mut args = DB::Arguments::default();
        // A record's values come to about 2.5 KB.
        args.reserve(rows * COLUMNS.len(), rows * 2_560);
        let bound = chunk.iter().try_for_each(|r| {
            args.add(DB::text(&r.id))?;
            args.add(DB::text(&r.account_id))?;
            args.add(DB::text(&r.connection_id))?;
            args.add(r.outbound_voice_profile_id.as_deref().map(DB::text))?;
            args.add(DB::text(r.direction.as_str()))?;
            args.add(DB::text(&r.a_leg_call_id))?;
            args.add(r.b_leg_call_id.as_deref().map(DB::text))?;
            args.add(DB::text(&r.from_received))?;
            args.add(DB::text(&r.to_received))?;
            args.add(r.from_sent.as_deref().map(DB::text))?;
            args.add(r.to_sent.as_deref().map(DB::text))?;
            args.add(DB::text(&r.started_at))?;
            args.add(r.answered_at.as_deref().map(DB::text))?;
            args.add(DB::text(&r.ended_at))?;
            args.add(i64::from(r.call_sec))?;
            args.add(i64::from(r.billed_sec))?;
            args.add(r.rate.as_deref().map(DB::text))?;
            args.add(r.cost.as_deref().map(DB::text))?;
            args.add(i64::from(r.sip_response_code))?;
            args.add(r.reason_code.as_deref().map(DB::text))?;
            args.add(DB::text(r.hangup_source.as_str()))?;
            // Moved in, not copied again.
            args.add(route_attempts_json(&r.route_attempts))?;
            args.add(DB::text(r.trace.get()))
        });
        bound.map_err(|e| StoreError::Failed(format!("call detail record values: {e}")))?;
        let q = sqlx::query_with::<DB, _>(sqlx::AssertSqlSafe(sql), args);
        added += DB::rows_affected(&q.execute(&mut *conn).await.map_err(|e| conflict_or(e, "id"))?);
    }
    // On SQLite a skipping insert is `OR IGNORE`: with `ON CONFLICT (id) DO NOTHING` the other
    // constraints (NOT NULL, CHECK) could still abort a statement halfway, so SQLite kept a
    // statement journal of every page each statement changed (16 KiB copies, spilled to a
    // temporary file past 64 KiB) to undo it alone. `OR IGNORE` would skip a row those refuse
    // as silently as one stored already: the values here cannot break them (`check` and the
    // types: enums' texts, no NULL where NOT NULL), and when rows were skipped the batch counts
    // the ones the table holds, so a record skipped for another reason fails the batch instead
    // of going missing.
    if taken == Taken::Skip && backend == Backend::Sqlite && added < records.len() as u64 {
        // A batch may carry one id twice (a record and its replay): each counts once.
        let ids: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut args = DB::Arguments::default();
        for id in &ids {
            args.add(DB::text(id)).map_err(|e| StoreError::Failed(format!("call detail record ids: {e}")))?;
        }
        let sql = stored_count_sql(ids.len());
        let row = sqlx::query_with::<DB, _>(sqlx::AssertSqlSafe(sql), args).fetch_one(&mut *conn).await?;
        let held = usize::try_from(sqlx::Row::try_get::<i64, _>(&row, 0usize)?).unwrap_or(0);
        if held < ids.len() {
            return Err(StoreError::Failed(format!(
                "{} of {} call detail records neither stored nor held already",
                ids.len() - held,
                ids.len()
            )));
        }
    }
    Ok(added)
}

/// A value bound to a list query's condition.
enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// The `WHERE` clause of `filter` (with its first parameter numbered `$1`) and its values.
fn conditions(filter: &CdrFilter) -> (String, Vec<Param<'_>>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params = Vec::new();
    let text = [("account_id =", &filter.account_id), ("connection_id =", &filter.connection_id)];
    for (cond, value) in text {
        if let Some(v) = value {
            params.push(Param::Text(v));
            conds.push(format!("{cond} ${}", params.len()));
        }
    }
    if let Some(s) = filter.sip_response_code {
        params.push(Param::Int(i64::from(s)));
        conds.push(format!("sip_response_code = ${}", params.len()));
    }
    let range = [("started_at >=", &filter.started_at_gte), ("started_at <=", &filter.started_at_lte)];
    for (cond, value) in range {
        if let Some(v) = value {
            params.push(Param::Text(v));
            conds.push(format!("{cond} ${}", params.len()));
        }
    }
    let clause = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (clause, params)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &'q [Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for p in params {
        q = match p {
            Param::Text(t) => q.bind(*t),
            Param::Int(i) => q.bind(*i),
        };
    }
    q
}

/// `SELECT` list of every column.
fn select_columns() -> String {
    COLUMNS.join(", ")
}

/// One page of records matching `filter`, newest first (ties by id, descending), and how many
/// match in all.
pub(crate) async fn list(
    pool: &sqlx::AnyPool,
    filter: &CdrFilter,
    offset: u64,
    limit: u64,
) -> Result<(Vec<CallDetailRecord>, u64), StoreError> {
    // A malformed bound matches nothing rather than comparing as text by accident.
    if [&filter.started_at_gte, &filter.started_at_lte].into_iter().flatten().any(|t| !is_cdr_timestamp(t)) {
        return Ok((Vec::new(), 0));
    }
    let (clause, params) = conditions(filter);
    let count_sql = format!("SELECT COUNT(*) FROM call_detail_records{clause}");
    let next = params.len() + 1;
    let page_sql = format!(
        "SELECT {} FROM call_detail_records{clause} ORDER BY started_at DESC, id DESC LIMIT ${next} OFFSET ${}",
        select_columns(),
        next + 1
    );
    let total: i64 =
        bind_all(sqlx::query(sqlx::AssertSqlSafe(count_sql)), &params).fetch_one(pool).await?.try_get(0)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows =
        bind_all(sqlx::query(sqlx::AssertSqlSafe(page_sql)), &params).bind(limit).bind(offset).fetch_all(pool).await?;
    let records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok((records, u64::try_from(total).unwrap_or(0)))
}

/// The record `id`.
pub(crate) async fn get(pool: &sqlx::AnyPool, id: &str) -> Result<Option<CallDetailRecord>, StoreError> {
    let sql = format!("SELECT {} FROM call_detail_records WHERE id = $1", select_columns());
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
    row.as_ref().map(from_row).transpose()
}

fn from_row(row: &AnyRow) -> Result<CallDetailRecord, StoreError> {
    let id: String = row.try_get(0)?;
    let bad = |what: &str| StoreError::Failed(format!("call detail record {id}: unreadable {what}"));
    let text = |i: usize| row.try_get::<String, _>(i);
    let opt = |i: usize| row.try_get::<Option<String>, _>(i);
    let int = |i: usize| row.try_get::<i64, _>(i);
    let direction = Direction::from_token(&text(4)?).ok_or_else(|| bad("direction"))?;
    let hangup_source = HangupSource::from_token(&text(20)?).ok_or_else(|| bad("hangup_source"))?;
    let route_attempts = serde_json::from_str(&text(21)?).map_err(|_| bad("route_attempts"))?;
    let trace = RawJson::from_text(text(22)?).map_err(|_| bad("trace"))?;
    Ok(CallDetailRecord {
        account_id: text(1)?,
        connection_id: text(2)?,
        outbound_voice_profile_id: opt(3)?,
        direction,
        a_leg_call_id: text(5)?,
        b_leg_call_id: opt(6)?,
        from_received: text(7)?,
        to_received: text(8)?,
        from_sent: opt(9)?,
        to_sent: opt(10)?,
        started_at: text(11)?,
        answered_at: opt(12)?,
        ended_at: text(13)?,
        call_sec: u32::try_from(int(14)?).map_err(|_| bad("call_sec"))?,
        billed_sec: u32::try_from(int(15)?).map_err(|_| bad("billed_sec"))?,
        rate: opt(16)?,
        cost: opt(17)?,
        sip_response_code: u16::try_from(int(18)?).map_err(|_| bad("sip_response_code"))?,
        reason_code: opt(19)?,
        hangup_source,
        route_attempts,
        trace,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(cdr_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(cdr_timestamp(1_767_323_045_678), "2026-01-02T03:04:05.678Z");
        assert_eq!(cdr_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(cdr_timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(cdr_timestamp(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(cdr_timestamp(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(cdr_timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(cdr_timestamp(1_709_210_096_007), "2024-02-29T12:34:56.007Z");
        assert_eq!(cdr_timestamp(-62_135_596_800_000), "0001-01-01T00:00:00.000Z");
        for ms in [0, 1_767_323_045_678, -1, i64::MIN, i64::MAX, 4_102_444_800_000] {
            assert!(is_cdr_timestamp(&cdr_timestamp(ms)), "{ms}");
        }
        // Days across the whole range and every day from 1900 to 2100, at midnight and at a
        // time across the day, as the `time` crate dates them.
        let reference = |ms: i64| {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let (h, m, s, milli) = t.to_hms_milli();
            format!("{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z", t.year(), u8::from(t.month()), t.day())
        };
        let (first, last) = (-62_167_219_200_000i64 / 86_400_000, 253_402_300_799_999i64 / 86_400_000);
        let mut spread = 0x9e37_79b9_7f4a_7c15u64;
        for day in (first..=last).step_by(37).chain(-25_567..=47_482).chain([first, last]) {
            spread = spread.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let ms = day * 86_400_000 + (spread >> 33) as i64 % 86_400_000;
            assert_eq!(cdr_timestamp(ms), reference(ms), "{ms}");
            assert_eq!(cdr_timestamp(day * 86_400_000), reference(day * 86_400_000), "day {day}");
        }
        for bad in [
            "",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.678+00:00",
            "2026-01-02 03:04:05.678Z",
            "2026-01-02T03:04:05.67xZ",
        ] {
            assert!(!is_cdr_timestamp(bad), "{bad}");
        }
    }

    /// A written trace serializes (into the spool, say) as the JSON it holds, as a checked one
    /// does, and reads back equal.
    #[test]
    fn a_written_trace_serializes_as_its_json() {
        let mut trace = trunking::trace::Trace::new();
        trace.note("identify.source", vec![("ip", "192.0.2.1".into()), ("note", "a \"quoted\"\n".into())]);
        let written = RawJson::of_trace(&trace);
        let checked = RawJson::from_text(trace.to_json()).unwrap();
        assert_eq!(written, checked);
        let text = serde_json::to_string(&written).unwrap();
        assert_eq!(text, trace.to_json());
        assert_eq!(text, serde_json::to_string(&checked).unwrap());
        assert_eq!(serde_json::from_str::<RawJson>(&text).unwrap(), written);
    }

    #[test]
    fn ids_are_uuid_v7() {
        let a = new_cdr_id(1_767_323_045_678);
        let b = new_cdr_id(1_767_323_045_678);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[..13], "019b7ca9-8f2e", "{a}");
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert!(new_cdr_id(1) < new_cdr_id(2), "time ordered");
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
    }

    #[test]
    fn batches_are_cut_into_the_few_statement_shapes() {
        let sizes = |n: usize| shaped_chunks(&vec![0u8; n]).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(100), [64, 16, 16, 4]);
        assert_eq!(sizes(87), [64, 16, 4, 1, 1, 1]);
        for n in 0..600 {
            let s = sizes(n);
            assert_eq!(s.iter().sum::<usize>(), n);
            assert!(s.iter().all(|k| SHAPES.contains(k)));
        }
    }

    #[test]
    fn insert_sql_per_backend() {
        let pg = insert_sql(Backend::Postgres, 2, Taken::Conflict);
        assert!(pg.starts_with("INSERT INTO call_detail_records (id, account_id, "));
        assert!(pg.ends_with(
            "($24,$25,$26,$27,$28,$29,$30,$31,$32,$33,$34,$35,$36,$37,$38,$39,$40,$41,$42,$43,$44,$45,$46)"
        ));
        let lite = insert_sql(Backend::Sqlite, 2, Taken::Conflict);
        assert_eq!(lite.matches('?').count(), 46);
        assert!(lite.ends_with(
            ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        ));
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let conflict = insert_sql(backend, 1, Taken::Conflict);
            assert!(conflict.starts_with("INSERT INTO") && !conflict.contains("ON CONFLICT"), "{conflict}");
        }
        let skip = insert_sql(Backend::Postgres, 1, Taken::Skip);
        assert!(skip.starts_with("INSERT INTO") && skip.ends_with(") ON CONFLICT (id) DO NOTHING"), "{skip}");
        let skip = insert_sql(Backend::Sqlite, 1, Taken::Skip);
        assert!(skip.starts_with("INSERT OR IGNORE INTO") && !skip.contains("ON CONFLICT"), "{skip}");
        assert_eq!(stored_count_sql(3), "SELECT COUNT(*) FROM call_detail_records WHERE id IN (?,?,?)");
    }

    /// An attempt answered 503, started at `start_ms` and ended a millisecond later.
    fn attempt(start_ms: i64) -> RouteAttempt {
        RouteAttempt {
            carrier_id: "c1".into(),
            gateway: "sip.carrier.example".into(),
            port: 5060,
            transport: "UDP".into(),
            target: Some("203.0.113.7:5060".into()),
            outcome: AttemptOutcome::Response { sip_response_code: 503 },
            started_at: cdr_timestamp(start_ms),
            ended_at: cdr_timestamp(start_ms + 1),
        }
    }

    #[test]
    fn attempts_written_as_serde_json_writes_them() {
        let at = |ms: i64| cdr_timestamp(1_767_323_045_678 + ms);
        let base = attempt(1_767_323_045_678);
        // Every ASCII byte, the ones escaped among them, and characters beyond ASCII.
        let ascii: String = (0u8..0x80).map(char::from).collect();
        let texts = [
            "",
            "plain",
            &ascii,
            "\"quoted\" back\\slash / solidus",
            "\u{7f}\u{80}é漢字🙂\u{2028}\u{2029}\u{fffd}",
            "end\\",
            "\n",
        ];
        let mut attempts = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            attempts.push(RouteAttempt {
                carrier_id: (*text).into(),
                gateway: format!("{text}.example"),
                port: [0, 9, 10, 5060, u16::MAX][i % 5],
                transport: (*text).into(),
                target: (i % 2 == 0).then(|| format!("[{text}]")),
                outcome: [
                    AttemptOutcome::Response { sip_response_code: [0, 100, 487, 699, u16::MAX][i % 5] },
                    AttemptOutcome::Timeout,
                    AttemptOutcome::TransportError,
                ][i % 3],
                started_at: (*text).into(),
                ended_at: at(i as i64),
            });
        }
        for n in [0, 7, 8, 10, 99, 100, 999, 1000, 9999, 10_000, 65_534] {
            attempts.push(RouteAttempt {
                port: n,
                outcome: AttemptOutcome::Response { sip_response_code: n },
                ..base.clone()
            });
        }
        attempts.push(RouteAttempt { target: None, outcome: AttemptOutcome::Timeout, ..base.clone() });
        for slice in [&attempts[..0], &attempts[..1], &attempts[..], &[base][..]] {
            assert_eq!(route_attempts_json(slice), serde_json::to_string(slice).unwrap());
        }
    }

    #[test]
    fn attempt_json() {
        let a = attempt(0);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["outcome"], "response");
        assert_eq!(v["sip_response_code"], 503);
        assert_eq!(serde_json::from_value::<RouteAttempt>(v).unwrap(), a);
        let t = RouteAttempt { outcome: AttemptOutcome::TransportError, target: None, ..a };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["outcome"], "transport_error");
        assert!(v.get("sip_response_code").is_none());
        assert_eq!(serde_json::from_value::<RouteAttempt>(v).unwrap(), t);
    }
}
