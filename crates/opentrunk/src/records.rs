//! The CDR writer: every finished call's record goes from the switch into a queue, and from the
//! queue to the store in batches, so the switch never waits on a database and no record is lost
//! when the database is slow, down, or the process is told to stop.
//!
//! - Intake: [`CdrSink::submit`] is O(1) and never waits (the switch calls it from its event
//!   loop). The queue is unbounded on purpose: a bounded one would have to either block the
//!   switch or drop billing records when the database stalls, and both are worse than memory
//!   growing while an operator is told. Its depth is exported (`opentrunk_cdrs_queued`) so a
//!   stalled database shows on the dashboards long before memory runs short.
//! - The writer task takes up to `batch_size` records, or what arrived within `flush_interval`
//!   of the first, and stores them with [`store::Store::insert_new_cdrs`]. A failed batch stays
//!   at the head of the queue, in order, and is tried again after a capped exponential backoff.
//! - [`CdrWriter::shutdown`] closes the intake, drains it and keeps writing for
//!   `shutdown_timeout`; whatever the database still refuses then is appended to the spool file
//!   (JSON lines of [`CallDetailRecord`]) and fsynced.
//! - [`start`] queues the spool's records ahead of any new one and removes the file once they are
//!   stored. A crash between a batch's commit and that removal replays records already stored:
//!   `insert_new_cdrs` skips ids it holds, so no call is billed twice.
//! - A record the store would refuse however often it is tried (a time not in the
//!   [`store::cdr_timestamp`] shape; a NUL in a text field, which PostgreSQL text cannot hold)
//!   would stall every record behind it: it goes to `<spool>.rejected` instead, logged and
//!   counted, for the operator to mend and replay. Spool lines that do not parse (a write torn by
//!   a crash) are kept in `<spool>.unreadable` the same way.
//!
//! The open-call journal, so that a node killed mid-call (SIGKILL, power) loses no record: a sink
//! made journaling by [`JournalHandle::journaling`] also takes each call's start
//! ([`CdrSink::call_opened`], the record as known then, under the id its finished record will
//! carry) and answer ([`CdrSink::call_answered`]). They go through the same queue and task as
//! the records, so a call's journal writes always land before its record, whose insert removes
//! the call's journal row in the same transaction. Journal changes are written within
//! `flush_interval` of arriving, coalesced per call (a call that ends before its start was
//! written never touches the journal), in their own transaction ahead of each batch: a failed
//! journal write is logged, counted and retried with its own backoff, and never holds records
//! back. [`start_journal`] runs the node's heartbeat and the reaper, which turns the open calls
//! of nodes silent for the node-loss age (this node's previous run included) into records
//! ([`store::Store::reap_lost_nodes`]). A call started within `flush_interval` of the node's
//! death is not journaled yet and is lost with it.

// Until `serve` hands the switch a `CdrSink`, nothing outside the tests calls this module.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use store::{Billing, CallDetailRecord, JournalWrite, OpenCall, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The first wait after a failed batch; it doubles with each failure in a row up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a batch: a database back from an outage is used again
/// within this.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How the writer batches, and where records go that could not be stored at shutdown.
#[derive(Clone, Debug)]
pub struct CdrWriterConfig {
    /// Records per insert at most.
    pub batch_size: usize,
    /// How long the first record of a batch waits for others before the batch is written.
    pub flush_interval: Duration,
    /// Records not stored by the shutdown deadline are appended here (JSON lines), and read back
    /// at the next start.
    pub spool_path: PathBuf,
    /// How long shutdown keeps trying the database before spooling the rest.
    pub shutdown_timeout: Duration,
}

impl CdrWriterConfig {
    pub const DEFAULT_BATCH_SIZE: usize = 500;
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
    /// Well inside the usual grace between SIGTERM and SIGKILL (30 s under Kubernetes), which
    /// the switch's own drain shares.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults, spooling to `spool_path`.
    pub fn new(spool_path: impl Into<PathBuf>) -> CdrWriterConfig {
        CdrWriterConfig {
            batch_size: Self::DEFAULT_BATCH_SIZE,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            spool_path: spool_path.into(),
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// The writer's counters, shared by the sinks and the task.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    already_stored: AtomicU64,
    failed_attempts: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    rejected: AtomicU64,
    lost: AtomicU64,
    journaled: AtomicU64,
    journal_failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> CdrWriterStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CdrWriterStats {
            queued: get(&self.queued),
            written: get(&self.written),
            already_stored: get(&self.already_stored),
            failed_attempts: get(&self.failed_attempts),
            spooled: get(&self.spooled),
            replayed: get(&self.replayed),
            rejected: get(&self.rejected),
            lost: get(&self.lost),
            journaled: get(&self.journaled),
            journal_failures: get(&self.journal_failures),
        }
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

fn sub(c: &AtomicU64, n: usize) {
    c.fetch_sub(n as u64, Ordering::Relaxed);
}

/// A snapshot of the writer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CdrWriterStats {
    /// Records submitted or replayed and not yet stored, spooled or set aside.
    pub queued: u64,
    /// Records stored.
    pub written: u64,
    /// Records the store held already, skipped rather than stored twice: replayed after a crash
    /// that came between a commit and the spool's removal, or a batch whose commit landed as
    /// shutdown cut its insert short.
    pub already_stored: u64,
    /// Batch inserts that failed (each is tried again).
    pub failed_attempts: u64,
    /// Records appended to the spool file: not stored by the shutdown deadline, or submitted
    /// after shutdown.
    pub spooled: u64,
    /// Records read back from the spool file at start.
    pub replayed: u64,
    /// Records the store would never accept, set aside in `<spool>.rejected`.
    pub rejected: u64,
    /// Records neither stored nor written to a file (the file could not be written): logged.
    pub lost: u64,
    /// Open-call journal changes (a call started, a call answered) written.
    pub journaled: u64,
    /// Journal writes that failed (each is tried again), and journal changes dropped because
    /// the store could never take them.
    pub journal_failures: u64,
}

impl CdrWriterStats {
    /// Prometheus families: name, type, help, value.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 10] {
        [
            ("opentrunk_cdrs_queued", "gauge", "call records waiting to be stored", self.queued),
            ("opentrunk_cdrs_written_total", "counter", "call records stored", self.written),
            (
                "opentrunk_cdrs_already_stored_total",
                "counter",
                "call records found stored already and skipped",
                self.already_stored,
            ),
            (
                "opentrunk_cdr_write_failures_total",
                "counter",
                "call record batch inserts that failed and were retried",
                self.failed_attempts,
            ),
            ("opentrunk_cdrs_spooled_total", "counter", "call records written to the spool file", self.spooled),
            ("opentrunk_cdrs_replayed_total", "counter", "call records read back from the spool file", self.replayed),
            (
                "opentrunk_cdrs_rejected_total",
                "counter",
                "call records the store cannot accept, set aside in the rejected file",
                self.rejected,
            ),
            ("opentrunk_cdrs_lost_total", "counter", "call records neither stored nor written to a file", self.lost),
            (
                "opentrunk_cdr_journal_writes_total",
                "counter",
                "open-call journal changes written (calls started and answered)",
                self.journaled,
            ),
            (
                "opentrunk_cdr_journal_failures_total",
                "counter",
                "open-call journal writes that failed and were retried, or changes dropped",
                self.journal_failures,
            ),
        ]
    }
}

/// What the writer task takes: a finished call's record, or a change to the open-call journal.
#[derive(Debug)]
// Records are nearly every item (a call's journal changes are at most two, and often none):
// boxing them would add an allocation to each.
#[allow(clippy::large_enum_variant)]
enum Item {
    Record(CallDetailRecord),
    Journal(JournalWrite),
}

/// What the sinks tell the writer task besides the items themselves. While a batch gathers, the
/// task does not wait on the queue (every item would wake it: up to three a call, the record
/// and two journal changes, each a poll of the task and a new timer); it sleeps until the flush
/// interval ends, or until the sinks say a batch's worth is waiting.
#[derive(Debug)]
struct Intake {
    /// Items sent and not yet taken by the task. A sink counts an item just after sending it,
    /// so the task may take it first: the count is briefly below the truth, even below zero.
    unread: AtomicIsize,
    /// How many unread items fill the gathering batch (set by the task before it sleeps).
    room: AtomicIsize,
    full: Notify,
}

impl Intake {
    fn new() -> Intake {
        Intake { unread: AtomicIsize::new(0), room: AtomicIsize::new(isize::MAX), full: Notify::new() }
    }

    /// An item was sent.
    fn arrived(&self) {
        if self.unread.fetch_add(1, Ordering::SeqCst) + 1 == self.room.load(Ordering::SeqCst) {
            // A permit is kept if the task is not waiting yet, so the news is not lost.
            self.full.notify_one();
        }
    }

    /// The task took `n` items.
    fn taken(&self, n: usize) {
        self.unread.fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::SeqCst);
    }

    /// Before the task sleeps on a gathering batch with `room` left: whether that many are
    /// waiting already (an item sent before `room` was set did not ring; this catches it).
    fn filled(&self, room: usize) -> bool {
        let room = isize::try_from(room).unwrap_or(isize::MAX);
        self.room.store(room, Ordering::SeqCst);
        self.unread.load(Ordering::SeqCst) >= room
    }
}

/// Where the switch hands finished calls' records, and live calls' journal changes when it
/// journals. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CdrSink {
    tx: mpsc::UnboundedSender<Item>,
    intake: Arc<Intake>,
    counters: Arc<Counters>,
    spool: Arc<Spool>,
    /// The node whose live calls this sink journals; `None`: no journal.
    node_id: Option<Arc<str>>,
}

impl CdrSink {
    /// Queues a record for the store. Never waits and never drops it.
    pub fn submit(&self, record: CallDetailRecord) {
        // Counted before it is sent, so the task never counts it out before it was counted in.
        add(&self.counters.queued, 1);
        let sent = self.tx.send(Item::Record(record));
        if sent.is_ok() {
            self.intake.arrived();
        }
        if let Err(mpsc::error::SendError(Item::Record(record))) = sent {
            sub(&self.counters.queued, 1);
            // The writer has shut down and the switch is still finishing calls: the record goes
            // straight to the spool. Only ever after shutdown, so the file write delays no call.
            warn!(id = %record.id, "call record submitted after the CDR writer stopped: spooled");
            self.spool.append_counted(std::slice::from_ref(&record), &self.counters);
        }
    }

    /// Journals a call that started on this node: `record` is its record as known at the start
    /// (parties, rate, times; its id the one its finished record will carry), and
    /// `billing_increment` (`60/60`) how its answered time is billed when it is rated. Never
    /// waits; ignored by a sink that does not journal.
    pub fn call_opened(&self, record: CallDetailRecord, billing_increment: Option<String>, started: SystemTime) {
        let Some(node_id) = &self.node_id else { return };
        let call = OpenCall {
            node_id: node_id.to_string(),
            record,
            billing_increment,
            answered_at_ms: None,
            updated_at_ms: unix_ms(started),
        };
        self.journal(JournalWrite::Open(Box::new(call)));
    }

    /// Journals the answer of a call journaled by [`CdrSink::call_opened`] (by its record's id).
    pub fn call_answered(&self, call_id: &str, at: SystemTime) {
        if self.node_id.is_none() {
            return;
        }
        let ms = unix_ms(at);
        self.journal(JournalWrite::Answered { call_id: call_id.to_owned(), answered_at_ms: ms, updated_at_ms: ms });
    }

    fn journal(&self, write: JournalWrite) {
        // After shutdown the calls are over and their records go to the spool: nothing to journal.
        match self.tx.send(Item::Journal(write)) {
            Ok(()) => self.intake.arrived(),
            Err(_) => debug!("open-call journal change after the CDR writer stopped: dropped"),
        }
    }

    /// Whether this sink journals live calls.
    pub fn journals(&self) -> bool {
        self.node_id.is_some()
    }

    pub fn stats(&self) -> CdrWriterStats {
        self.counters.snapshot()
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The writer task. Stop it with [`CdrWriter::shutdown`]; dropped instead, the task shuts down
/// the same way on its own.
#[derive(Debug)]
pub struct CdrWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl CdrWriter {
    /// Closes the intake, stores everything queued (spooling what the database still refuses
    /// after `shutdown_timeout`), and returns the final counts.
    pub async fn shutdown(self) -> CdrWriterStats {
        // An error means the task ended already (it panicked; the join says so).
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            error!("CDR writer task failed: {e}");
        }
        self.counters.snapshot()
    }

    pub fn stats(&self) -> CdrWriterStats {
        self.counters.snapshot()
    }
}

/// Starts the writer on `store`. The spool file, if one was left, is read now and its records
/// are stored ahead of any submitted. Must be called within a Tokio runtime.
pub fn start(store: Store, config: CdrWriterConfig) -> (CdrSink, CdrWriter) {
    let counters = Arc::new(Counters::default());
    let spool = Arc::new(Spool::new(config.spool_path.clone()));
    let (tx, rx) = mpsc::unbounded_channel();
    let batch_size = config.batch_size.max(1);
    let intake = Arc::new(Intake::new());
    let mut task = Task {
        store,
        intake: intake.clone(),
        batch_size,
        flush_interval: config.flush_interval,
        shutdown_timeout: config.shutdown_timeout,
        counters: counters.clone(),
        spool: spool.clone(),
        rx,
        pending: VecDeque::new(),
        replay_left: 0,
        replay_len: None,
        failures_in_row: 0,
        backoff: RETRY_FIRST,
        journal: HashMap::default(),
        journal_due: Instant::now(),
        journal_backoff: RETRY_FIRST,
    };
    match spool.load() {
        Ok(None) => {}
        Ok(Some((records, len))) => {
            info!(path = %spool.path.display(), records = records.len(), "replaying spooled call records");
            add(&counters.replayed, records.len());
            add(&counters.queued, records.len());
            task.take(records.into_iter().map(Item::Record));
            task.replay_left = task.pending.len();
            task.replay_len = Some(len);
            if task.replay_left == 0 {
                task.replay_done();
            }
        }
        Err(e) => error!(
            path = %spool.path.display(),
            "CDR spool unreadable, left in place and not replayed: {e}"
        ),
    }
    let (stop, stop_rx) = oneshot::channel();
    let handle = tokio::spawn(task.run(stop_rx));
    (
        CdrSink { tx, intake, counters: counters.clone(), spool, node_id: None },
        CdrWriter { stop, task: handle, counters },
    )
}

/// The node's heartbeat and reaper, and what their task counted. Stop it with
/// [`JournalHandle::shutdown`] after the CDR writer's shutdown.
#[derive(Debug)]
pub struct JournalHandle {
    node_id: Arc<str>,
    store: Store,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    counters: Arc<JournalCounters>,
}

#[derive(Debug, Default)]
struct JournalCounters {
    heartbeats: AtomicU64,
    heartbeat_failures: AtomicU64,
    lost_nodes: AtomicU64,
    lost_calls: AtomicU64,
    reap_failures: AtomicU64,
}

/// What the heartbeat and the reaper did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Heartbeats written, and those that failed.
    pub heartbeats: u64,
    pub heartbeat_failures: u64,
    /// Lost nodes this node reaped, and the records it made of their open calls.
    pub lost_nodes: u64,
    pub lost_calls: u64,
    /// Reaper runs that failed (the next one tries again).
    pub reap_failures: u64,
}

impl JournalStats {
    /// Prometheus families: name, type, help, value.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 5] {
        [
            ("opentrunk_node_heartbeats_total", "counter", "node heartbeats written", self.heartbeats),
            (
                "opentrunk_node_heartbeat_failures_total",
                "counter",
                "node heartbeats that could not be written",
                self.heartbeat_failures,
            ),
            (
                "opentrunk_lost_nodes_reaped_total",
                "counter",
                "lost nodes whose open calls this node reaped",
                self.lost_nodes,
            ),
            (
                "opentrunk_lost_calls_recorded_total",
                "counter",
                "call records this node made of lost nodes' open calls",
                self.lost_calls,
            ),
            ("opentrunk_reap_failures_total", "counter", "reaper runs that failed", self.reap_failures),
        ]
    }
}

/// Reads a node's [`JournalStats`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JournalStatsReader(Arc<JournalCounters>);

impl JournalStatsReader {
    pub fn stats(&self) -> JournalStats {
        self.0.snapshot()
    }
}

impl JournalCounters {
    fn snapshot(&self) -> JournalStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JournalStats {
            heartbeats: get(&self.heartbeats),
            heartbeat_failures: get(&self.heartbeat_failures),
            lost_nodes: get(&self.lost_nodes),
            lost_calls: get(&self.lost_calls),
            reap_failures: get(&self.reap_failures),
        }
    }
}

/// How often a node beats and reaps for a node-loss age: six beats per age, so a node is
/// declared lost only after several missed beats, and at most every 5 s (the default 30 s age).
pub fn heartbeat_interval(node_loss_after: Duration) -> Duration {
    (node_loss_after / 6).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Starts `node_id`'s heartbeat and the reaper: every [`heartbeat_interval`] the node says it
/// is alive, then (from the second beat on, so a spool left by this node's previous run is
/// replayed first, its real records winning over reaped ones) turns the open calls of every
/// other node silent for `node_loss_after` into records ([`store::Store::reap_lost_nodes`],
/// billed by [`bill_lost_call`]). `node_loss_after` is the same age as the counters' lease TTL
/// (default 30 s): a node is lost for its calls' records when its channels free. A node reaps
/// only while its own heartbeat is current: cut off from the database, it judges no one. Must be
/// called within a Tokio runtime.
pub fn start_journal(store: Store, node_id: String, node_loss_after: Duration) -> JournalHandle {
    let node_id: Arc<str> = node_id.into();
    let counters = Arc::new(JournalCounters::default());
    let (stop, mut stop_rx) = oneshot::channel::<()>();
    let beat = heartbeat_interval(node_loss_after);
    let lost_after_ms = i64::try_from(node_loss_after.as_millis()).unwrap_or(i64::MAX);
    let task = {
        let (store, node_id, counters) = (store.clone(), node_id.clone(), counters.clone());
        tokio::spawn(async move {
            let started_ms = unix_ms(SystemTime::now());
            let mut last_beat: Option<Instant> = None;
            let mut first = true;
            loop {
                let now_ms = unix_ms(SystemTime::now());
                match store.node_heartbeat(&node_id, started_ms, now_ms).await {
                    Ok(()) => {
                        add(&counters.heartbeats, 1);
                        last_beat = Some(Instant::now());
                    }
                    Err(e) => {
                        add(&counters.heartbeat_failures, 1);
                        warn!(node = %node_id, "node heartbeat not written: {e}");
                    }
                }
                let current = last_beat.is_some_and(|t| t.elapsed() < node_loss_after / 2);
                if !first && current {
                    match store.reap_lost_nodes(&node_id, now_ms, lost_after_ms, &bill_lost_call).await {
                        Ok(r) => {
                            add(&counters.lost_nodes, r.nodes.len());
                            add(&counters.lost_calls, usize::try_from(r.records).unwrap_or(usize::MAX));
                            if !r.nodes.is_empty() || r.records + r.already_stored > 0 {
                                warn!(
                                    lost_nodes = ?r.nodes,
                                    records = r.records,
                                    already_stored = r.already_stored,
                                    "lost nodes' open calls recorded"
                                );
                            }
                        }
                        Err(e) => {
                            add(&counters.reap_failures, 1);
                            warn!("lost nodes not reaped: {e}");
                        }
                    }
                }
                first = false;
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(beat) => {}
                }
            }
        })
    };
    JournalHandle { node_id, store, stop, task, counters }
}

/// Bills a lost call's answered time as the switch bills a finished call's: the billing
/// increments and the cost rule of `trunking::rating`, at the rate journaled when it started.
/// An unrated call (or one whose journaled rate or increment does not read) bills nothing, as
/// the switch bills an unrated call.
pub fn bill_lost_call(call: &OpenCall, call_ms: u64) -> Billing {
    let rate = call.record.rate.as_deref().and_then(trunking::rating::parse_amount);
    let increment =
        call.billing_increment.as_deref().and_then(|s| s.parse::<trunking::rating::BillingIncrement>().ok());
    match (rate, increment) {
        (Some(per_minute), Some(inc)) => {
            let billed = trunking::rating::billed_seconds(call_ms, inc);
            Billing {
                billed_sec: u32::try_from(billed).unwrap_or(u32::MAX),
                cost: Some(trunking::rating::cost(per_minute, billed).to_string()),
            }
        }
        _ => Billing::default(),
    }
}

impl JournalHandle {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// `records` journaling this node's live calls: hand the switch's notices this sink.
    pub fn journaling(&self, records: CdrSink) -> CdrSink {
        CdrSink { node_id: Some(self.node_id.clone()), ..records }
    }

    pub fn stats(&self) -> JournalStats {
        self.counters.snapshot()
    }

    /// A reader of [`JournalHandle::stats`] that outlives a borrow of the handle (for
    /// `/metrics`, while the handle waits for shutdown).
    pub fn stats_reader(&self) -> JournalStatsReader {
        JournalStatsReader(self.counters.clone())
    }

    /// Stops the heartbeat and the reaper. The node's row goes when none of its calls is open
    /// (call this after the CDR writer's shutdown); otherwise it stays to age, and reapers
    /// record the calls left open.
    pub async fn shutdown(self) -> JournalStats {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            error!("node heartbeat task failed: {e}");
        }
        match self.store.node_stopped(&self.node_id).await {
            Ok(true) => info!(node = %self.node_id, "node left the journal"),
            Ok(false) => warn!(node = %self.node_id, "node stopped with calls open: reapers will record them"),
            Err(e) => warn!(node = %self.node_id, "node row not removed, it will be reaped: {e}"),
        }
        self.counters.snapshot()
    }
}

/// Why the store would refuse `r` however often it is tried, if it would.
fn unstorable(r: &CallDetailRecord) -> Option<&'static str> {
    let times = [Some(&r.started_at), r.answered_at.as_ref(), Some(&r.ended_at)];
    if times.into_iter().flatten().any(|t| !store::is_cdr_timestamp(t)) {
        return Some("a time not like 2026-01-02T03:04:05.678Z");
    }
    let texts = [
        Some(&r.id),
        Some(&r.account_id),
        Some(&r.connection_id),
        r.outbound_voice_profile_id.as_ref(),
        Some(&r.a_leg_call_id),
        r.b_leg_call_id.as_ref(),
        Some(&r.from_received),
        Some(&r.to_received),
        r.from_sent.as_ref(),
        r.to_sent.as_ref(),
        r.rate.as_ref(),
        r.cost.as_ref(),
        r.reason_code.as_ref(),
    ];
    if texts.into_iter().flatten().any(|t| t.as_bytes().contains(&0)) {
        return Some("a NUL character in a text field");
    }
    None
}

struct Task {
    store: Store,
    intake: Arc<Intake>,
    batch_size: usize,
    flush_interval: Duration,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
    spool: Arc<Spool>,
    rx: mpsc::UnboundedReceiver<Item>,
    /// Records taken from the intake, oldest first; a failed batch stays at the head.
    pending: VecDeque<CallDetailRecord>,
    /// Journal changes not written yet, one per call (an answer folds into its call's start).
    journal: HashMap<String, JournalWrite, foldhash::fast::RandomState>,
    /// When the journal may be written next (later after a failure).
    journal_due: Instant,
    journal_backoff: Duration,
    /// How many records at the head of `pending` came from the spool and are not stored yet.
    replay_left: usize,
    /// The spool's length when it was read, while its records are being replayed.
    replay_len: Option<u64>,
    failures_in_row: u32,
    /// The wait before the next try after a failure.
    backoff: Duration,
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut intake_open = true;
        let mut buf = Vec::with_capacity(self.batch_size);
        'running: loop {
            if self.failures_in_row > 0 {
                // Retrying: top the batch up with what is waiting, without waiting for more.
                intake_open &= self.take_waiting(&mut buf);
            } else if self.pending.len() < self.batch_size && intake_open {
                if self.pending.is_empty() && !self.journal_ready() {
                    // Journal changes waiting out a failure wake the task when they are due.
                    let retry = (!self.journal.is_empty()).then_some(self.journal_due);
                    tokio::select! {
                        biased;
                        _ = &mut stop => break 'running,
                        _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {}
                        n = self.rx.recv_many(&mut buf, self.batch_size) => {
                            intake_open = n > 0;
                            self.intake.taken(n);
                            self.take(buf.drain(..));
                        }
                    }
                }
                // The first record or journal change starts the flush clock; a full batch goes
                // at once. The task sleeps meanwhile (see `Intake`), and takes what came when
                // the interval ends or the sinks say a batch's worth is waiting.
                let flush = tokio::time::sleep_until(Instant::now() + self.flush_interval);
                tokio::pin!(flush);
                loop {
                    intake_open &= self.take_waiting(&mut buf);
                    if !(intake_open
                        && (!self.pending.is_empty() || self.journal_ready())
                        && self.pending.len() < self.batch_size)
                    {
                        break;
                    }
                    if self.intake.filled(self.batch_size - self.pending.len()) {
                        continue;
                    }
                    tokio::select! {
                        biased;
                        _ = &mut stop => break 'running,
                        _ = &mut flush => {
                            intake_open &= self.take_waiting(&mut buf);
                            break;
                        }
                        _ = self.intake.full.notified() => {}
                    }
                }
            }
            if self.pending.is_empty() && !self.journal_ready() {
                if intake_open {
                    continue;
                }
                // Every sink is gone: nothing more will come.
                let _ = (&mut stop).await;
                break;
            }
            // A stop cuts an insert short: shutdown tries the same batch again, and an insert
            // that did commit before it was cut is skipped then as stored.
            let result = tokio::select! {
                biased;
                _ = &mut stop => break 'running,
                r = self.write_batch() => r,
            };
            if let Err(e) = result {
                let wait = self.failed(&e);
                tokio::select! {
                    biased;
                    _ = &mut stop => break 'running,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.finish().await;
    }

    /// Stores everything still queued within the shutdown deadline; spools the rest.
    async fn finish(mut self) {
        self.rx.close();
        let mut rest = Vec::new();
        while let Some(r) = self.rx.recv().await {
            rest.push(r);
        }
        self.intake.taken(rest.len());
        self.take(rest);
        let deadline = Instant::now() + self.shutdown_timeout;
        while !self.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = match tokio::time::timeout(left, self.write_batch()).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => self.failed(&e),
                Err(_) => self.failed(&StoreError::Failed("no answer before the shutdown deadline".into())),
            };
            tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        if !self.pending.is_empty() {
            let rest: Vec<_> = self.pending.drain(..).collect();
            error!(
                records = rest.len(),
                path = %self.spool.path.display(),
                "call records not stored by the shutdown deadline: spooled for the next start"
            );
            sub(&self.counters.queued, rest.len());
            self.spool.append_counted(&rest, &self.counters);
        }
        // Calls still open (their records never came): one try for their journal changes, so
        // the reapers can make their records.
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.journal.is_empty() && !left.is_zero() {
            let _ = tokio::time::timeout(left, self.write_journal()).await;
        }
        if !self.journal.is_empty() {
            warn!(changes = self.journal.len(), "open-call journal changes not written at shutdown");
        }
    }

    /// Takes what the intake holds now, up to a batch's room in records, without waiting;
    /// returns whether the intake is still open.
    fn take_waiting(&mut self, buf: &mut Vec<Item>) -> bool {
        let mut open = true;
        let room = self.batch_size.saturating_sub(self.pending.len());
        while buf.len() < room {
            match self.rx.try_recv() {
                Ok(item) => buf.push(item),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        self.intake.taken(buf.len());
        self.take(buf.drain(..));
        open
    }

    /// Takes records and journal changes from the intake: records are queued, those the store
    /// would never accept set aside; a record replaces its call's unwritten journal changes.
    fn take(&mut self, items: impl IntoIterator<Item = Item>) {
        let mut refused = Vec::new();
        for item in items {
            let r = match item {
                Item::Record(r) => r,
                Item::Journal(w) => {
                    self.take_journal(w);
                    continue;
                }
            };
            // Its row, if written, goes with the record's insert.
            self.journal.remove(&r.id);
            match unstorable(&r) {
                None => self.pending.push_back(r),
                Some(why) => {
                    error!(id = %r.id, path = %self.spool.rejected.display(), "call record set aside: {why}");
                    refused.push(r);
                }
            }
        }
        if refused.is_empty() {
            return;
        }
        sub(&self.counters.queued, refused.len());
        let lines = refused.iter().map(spool_line).collect::<Result<Vec<_>, _>>();
        let _guard = self.spool.lock.lock().unwrap_or_else(|p| p.into_inner());
        match lines.and_then(|l| append_lines(&self.spool.rejected, &l)) {
            Ok(()) => add(&self.counters.rejected, refused.len()),
            Err(e) => {
                error!(records = refused.len(), path = %self.spool.rejected.display(), "call records lost: {e}");
                add(&self.counters.lost, refused.len());
            }
        }
    }

    /// Folds a journal change into the unwritten ones.
    fn take_journal(&mut self, w: JournalWrite) {
        match w {
            JournalWrite::Open(c) => {
                if let Some(why) = unstorable(&c.record) {
                    // Its record will be set aside the same way when the call ends.
                    warn!(id = %c.record.id, "open call not journaled: {why}");
                    add(&self.counters.journal_failures, 1);
                    return;
                }
                self.journal.insert(c.record.id.clone(), JournalWrite::Open(c));
            }
            JournalWrite::Answered { call_id, answered_at_ms, updated_at_ms } => match self.journal.get_mut(&call_id) {
                Some(JournalWrite::Open(c)) => {
                    c.answered_at_ms.get_or_insert(answered_at_ms);
                    c.updated_at_ms = updated_at_ms;
                }
                // Answered twice: the first answer stands.
                Some(JournalWrite::Answered { .. }) => {}
                None => {
                    let w = JournalWrite::Answered { call_id: call_id.clone(), answered_at_ms, updated_at_ms };
                    self.journal.insert(call_id, w);
                }
            },
        }
    }

    /// Whether unwritten journal changes are due.
    fn journal_ready(&self) -> bool {
        !self.journal.is_empty() && Instant::now() >= self.journal_due
    }

    /// Writes the unwritten journal changes in one transaction; on failure they stay, counted,
    /// for a try after their own backoff. Cut short, nothing is lost: the changes stay until a
    /// write of them returns, and writing one twice changes nothing.
    async fn write_journal(&mut self) {
        match self.store.write_journal(self.journal.values()).await {
            Ok(()) => {
                add(&self.counters.journaled, self.journal.len());
                self.journal.clear();
                self.journal_backoff = RETRY_FIRST;
            }
            Err(e) => {
                add(&self.counters.journal_failures, 1);
                warn!(
                    changes = self.journal.len(),
                    retry_in_ms = self.journal_backoff.as_millis() as u64,
                    "open-call journal not written, kept for the next try: {e}"
                );
                self.journal_due = Instant::now() + self.journal_backoff;
                self.journal_backoff = (self.journal_backoff * 2).min(RETRY_MAX);
            }
        }
    }

    /// Writes the journal changes when due, then stores the batch at the head of the queue (the
    /// journal first: a call's start lands before its record, whose insert removes it).
    async fn write_batch(&mut self) -> Result<(), StoreError> {
        if self.journal_ready() {
            self.write_journal().await;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len().min(self.batch_size);
        let added = self.store.insert_new_cdrs(&self.pending.make_contiguous()[..n]).await?;
        self.pending.drain(..n);
        let added = usize::try_from(added).unwrap_or(n).min(n);
        add(&self.counters.written, added);
        add(&self.counters.already_stored, n - added);
        sub(&self.counters.queued, n);
        if self.failures_in_row > 0 {
            info!(failed_attempts = self.failures_in_row, "call records are being stored again");
            self.failures_in_row = 0;
            self.backoff = RETRY_FIRST;
        }
        if self.replay_left > 0 {
            self.replay_left -= n.min(self.replay_left);
            if self.replay_left == 0 {
                self.replay_done();
            }
        }
        Ok(())
    }

    /// Counts a failed batch; returns how long to wait before the next try.
    fn failed(&mut self, e: &StoreError) -> Duration {
        add(&self.counters.failed_attempts, 1);
        self.failures_in_row += 1;
        let wait = self.backoff;
        warn!(
            queued = self.counters.queued.load(Ordering::Relaxed),
            attempt = self.failures_in_row,
            retry_in_ms = wait.as_millis() as u64,
            "call records not stored, kept for the next try: {e}"
        );
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        wait
    }

    /// Every replayed record is stored: the spool can go.
    fn replay_done(&mut self) {
        let Some(len) = self.replay_len.take() else { return };
        match self.spool.remove_if_unchanged(len) {
            Ok(true) => info!(path = %self.spool.path.display(), "spooled call records stored; spool removed"),
            // Records came after it was read (submitted after shutdown): it stays, and its
            // stored records are skipped at the next replay.
            Ok(false) => {}
            Err(e) => error!(path = %self.spool.path.display(), "spooled call records stored, spool not removed: {e}"),
        }
    }
}

/// The spool file and the files beside it. Appends and the removal take `lock`, so a record
/// submitted after shutdown and the task's own writes never interleave or undo each other.
#[derive(Debug)]
struct Spool {
    path: PathBuf,
    /// Records the store cannot accept.
    rejected: PathBuf,
    /// Spool lines that did not parse.
    unreadable: PathBuf,
    lock: Mutex<()>,
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// A record as one spool line (without the newline).
fn spool_line(r: &CallDetailRecord) -> io::Result<String> {
    let line = serde_json::to_string(r).map_err(io::Error::other)?;
    // The decision trace is JSON kept as written: a newline in it can only be whitespace
    // between tokens (in a string it is escaped), so a space keeps its meaning and the line whole.
    Ok(if line.contains(['\n', '\r']) { line.replace(['\n', '\r'], " ") } else { line })
}

/// Appends `lines` to `path` and makes them durable (the file, and its directory entry when
/// the file is new).
fn append_lines(path: &Path, lines: &[String]) -> io::Result<()> {
    let created = !path.exists();
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    if created {
        sync_dir(path)?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

impl Spool {
    fn new(path: PathBuf) -> Spool {
        Spool {
            rejected: beside(&path, ".rejected"),
            unreadable: beside(&path, ".unreadable"),
            path,
            lock: Mutex::new(()),
        }
    }

    /// Appends `records`, counting them spooled, or lost when the file cannot be written.
    fn append_counted(&self, records: &[CallDetailRecord], counters: &Counters) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = records.iter().map(spool_line).collect::<io::Result<Vec<_>>>();
        match result.and_then(|lines| append_lines(&self.path, &lines)) {
            Ok(()) => add(&counters.spooled, records.len()),
            Err(e) => {
                error!(records = records.len(), path = %self.path.display(), "call records lost: spool not written: {e}");
                add(&counters.lost, records.len());
            }
        }
    }

    /// The spool's records, the first of each id in file order, and the file's length; `None`
    /// when there is no spool. Lines that do not parse are moved to the unreadable file.
    fn load(&self) -> io::Result<Option<(Vec<CallDetailRecord>, u64)>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            match serde_json::from_slice::<CallDetailRecord>(line) {
                Ok(r) => {
                    if seen.insert(r.id.clone()) {
                        records.push(r);
                    }
                }
                Err(_) => unreadable.push(String::from_utf8_lossy(line).into_owned()),
            }
        }
        if !unreadable.is_empty() {
            error!(
                lines = unreadable.len(),
                path = %self.unreadable.display(),
                "CDR spool lines that do not parse as call records: kept aside"
            );
            append_lines(&self.unreadable, &unreadable)?;
        }
        Ok(Some((records, bytes.len() as u64)))
    }

    /// Removes the spool if it is still `len` bytes long (nothing was appended since it was
    /// read); says whether it did.
    fn remove_if_unchanged(&self, len: u64) -> io::Result<bool> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::metadata(&self.path) {
            Ok(m) if m.len() == len => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        std::fs::remove_file(&self.path)?;
        sync_dir(&self.path)?;
        Ok(true)
    }
}

#[cfg(test)]
#[path = "../tests/support/pg.rs"]
mod pg_wire;

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;
    use std::time::{SystemTime, UNIX_EPOCH};

    use store::{CdrFilter, Direction, HangupSource, RawJson, Repository, cdr_timestamp, new_cdr_id};

    /// 2026-01-02T00:00:00.000Z.
    const T0: i64 = 1_767_312_000_000;
    use super::pg_wire::{PG_ADDR, pg_simple_query};

    /// A unique name for this process and test: the pid, a sequence and the time, last (the
    /// store tests' cleanup of stale `ot_test_` schemas reads it there).
    fn unique(prefix: &str) -> String {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{prefix}_{}_{seq}_{nanos}", std::process::id())
    }

    fn record(n: i64) -> CallDetailRecord {
        let at = |d: i64| cdr_timestamp(T0 + n * 1000 + d);
        CallDetailRecord {
            id: new_cdr_id(T0 + n * 1000),
            account_id: "acct-a".into(),
            connection_id: format!("conn-{}", n % 7),
            outbound_voice_profile_id: Some("ovp-1".into()),
            direction: Direction::Outbound,
            a_leg_call_id: format!("a-{n}@192.0.2.10"),
            b_leg_call_id: Some(format!("b-{n}@opentrunk")),
            from_received: "+12125551234".into(),
            to_received: "2125556789".into(),
            from_sent: Some("+12125551234".into()),
            to_sent: Some("+12125556789".into()),
            started_at: at(0),
            answered_at: Some(at(2_000)),
            ended_at: at(62_000),
            call_sec: 60,
            billed_sec: 60,
            rate: Some("0.0100".into()),
            cost: Some("0.0100".into()),
            sip_response_code: 200,
            reason_code: None,
            hangup_source: HangupSource::Caller,
            route_attempts: Vec::new(),
            trace: RawJson::from_text(format!(r#"[{{"rule":"outbound.rate","facts":{{"n":{n}}}}}]"#)).unwrap(),
        }
    }

    fn records(range: std::ops::Range<i64>) -> Vec<CallDetailRecord> {
        range.map(record).collect()
    }

    fn temp_path(what: &str) -> PathBuf {
        std::env::temp_dir().join(unique(what))
    }

    async fn sqlite() -> Store {
        let path = temp_path("ot_records").with_extension("db");
        Store::open(&format!("sqlite://{}", path.display())).await.expect("open sqlite store")
    }

    fn config(spool_path: PathBuf) -> CdrWriterConfig {
        CdrWriterConfig {
            batch_size: 500,
            flush_interval: Duration::from_millis(20),
            spool_path,
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// Every stored record, by id.
    async fn stored(store: &Store) -> Vec<CallDetailRecord> {
        let (mut all, total) = store.list_cdrs(&CdrFilter::default(), 0, 100_000).await.unwrap();
        assert_eq!(all.len() as u64, total);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn by_id(mut records: Vec<CallDetailRecord>) -> Vec<CallDetailRecord> {
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }

    fn read_lines(path: &Path) -> Vec<CallDetailRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path:?}: {e}: {l}")))
            .collect()
    }

    /// Polls `done` until it holds, failing after `limit`.
    async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn flag(name: &str, value: &str) -> bool {
        std::env::var(name).is_ok_and(|v| v == value)
    }

    /// A PostgreSQL schema of its own for one test, dropped afterwards.
    struct PgSchema {
        name: String,
    }

    impl PgSchema {
        /// `None` (after one `skipped:` line) when PostgreSQL is unreachable and not required
        /// (CI=true or OPENTRUNK_REQUIRE_SERVICES=1 require it).
        fn create(test: &str) -> Option<PgSchema> {
            let name = unique("ot_test_records");
            match pg_simple_query(&format!("CREATE SCHEMA {name}")) {
                Ok(()) => Some(PgSchema { name }),
                Err(e) if flag("CI", "true") || flag("OPENTRUNK_REQUIRE_SERVICES", "1") => {
                    panic!("PostgreSQL is required at {PG_ADDR}: {e}")
                }
                Err(e) => {
                    println!("skipped: {test}: PostgreSQL not reachable at {PG_ADDR} ({e})");
                    None
                }
            }
        }

        fn url(&self, addr: &str) -> String {
            format!("postgres://postgres@{addr}/test?options=-c%20search_path%3D{}", self.name)
        }
    }

    impl Drop for PgSchema {
        fn drop(&mut self) {
            let _ = pg_simple_query(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }

    /// A TCP relay to PostgreSQL that can be cut: the database as seen over a network that
    /// fails. Cut, it drops every relayed connection and closes each new one on accept (a
    /// refused connection would make the pool wait out its acquire timeout instead of failing).
    struct Link {
        addr: String,
        up: Arc<AtomicBool>,
        relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
        accept: JoinHandle<()>,
    }

    impl Link {
        async fn start() -> Link {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let up = Arc::new(AtomicBool::new(true));
            let relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
            let (up2, relays2) = (up.clone(), relays.clone());
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up2.load(Ordering::SeqCst) {
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(PG_ADDR).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    relays2.lock().unwrap().push(relay.abort_handle());
                }
            });
            Link { addr, up, relays, accept }
        }

        fn cut(&self) {
            self.up.store(false, Ordering::SeqCst);
            for r in self.relays.lock().unwrap().drain(..) {
                r.abort();
            }
        }

        fn restore(&self) {
            self.up.store(true, Ordering::SeqCst);
        }
    }

    impl Drop for Link {
        fn drop(&mut self) {
            self.cut();
            self.accept.abort();
        }
    }

    async fn writes_every_record(store: Store) {
        let spool = temp_path("ot_spool");
        let (sink, writer) = start(store.clone(), config(spool.clone()));
        let sent = records(0..1_234);
        for r in &sent {
            sink.submit(r.clone());
        }
        let stats = writer.shutdown().await;
        assert_eq!(stats, CdrWriterStats { written: 1_234, ..CdrWriterStats::default() }, "{:?}", store.backend());
        assert_eq!(stored(&store).await, by_id(sent), "{:?}", store.backend());
        assert!(!spool.exists());
    }

    #[tokio::test]
    async fn records_written_on_sqlite() {
        writes_every_record(sqlite().await).await;
    }

    #[tokio::test]
    async fn records_written_on_postgres() {
        let Some(schema) = PgSchema::create("records_written_on_postgres") else { return };
        writes_every_record(Store::open(&schema.url(PG_ADDR)).await.unwrap()).await;
    }

    #[tokio::test]
    async fn records_batched_by_size_then_by_interval() {
        let store = sqlite().await;
        // Batches of 100; a part batch waits an hour for more.
        let config = CdrWriterConfig {
            batch_size: 100,
            flush_interval: Duration::from_secs(3600),
            ..config(temp_path("ot_spool"))
        };
        let (sink, writer) = start(store.clone(), config.clone());
        records(0..250).into_iter().for_each(|r| sink.submit(r));
        wait_for("two full batches", Duration::from_secs(10), || sink.stats().written == 200).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = sink.stats();
        assert_eq!((stats.written, stats.queued), (200, 50), "the part batch waits: {stats:?}");
        assert_eq!(writer.stats(), stats);
        assert_eq!(stored(&store).await.len(), 200);
        // Shutdown does not wait for the interval.
        let stats = writer.shutdown().await;
        assert_eq!((stats.written, stats.queued), (250, 0));

        // A short interval writes a part batch on its own.
        let config = CdrWriterConfig { flush_interval: Duration::from_millis(50), ..config };
        let (sink, writer) = start(store.clone(), config);
        records(1000..1003).into_iter().for_each(|r| sink.submit(r));
        wait_for("the interval's flush", Duration::from_secs(10), || sink.stats().written == 3).await;
        assert_eq!(stored(&store).await.len(), 253);
        assert_eq!(writer.shutdown().await.written, 3);
    }

    /// The task sleeps while a batch gathers: the sinks wake it when the rest of a batch has
    /// come, however much of it the task took before.
    #[tokio::test]
    async fn a_gathering_batch_goes_when_the_rest_of_it_arrives() {
        let store = sqlite().await;
        let config = CdrWriterConfig {
            batch_size: 100,
            flush_interval: Duration::from_secs(3600),
            ..config(temp_path("ot_spool"))
        };
        let (sink, writer) = start(store.clone(), config);
        let mut all = records(0..100).into_iter();
        all.by_ref().take(60).for_each(|r| sink.submit(r));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sink.stats().written, 0, "60 of 100 wait for the rest");
        all.for_each(|r| sink.submit(r));
        wait_for("the batch filled", Duration::from_secs(10), || sink.stats().written == 100).await;
        assert_eq!(writer.shutdown().await.written, 100);
    }

    #[tokio::test]
    async fn shutdown_drains_everything() {
        let store = sqlite().await;
        let spool = temp_path("ot_spool");
        let config = CdrWriterConfig { flush_interval: Duration::from_secs(3600), ..config(spool.clone()) };
        let (sink, writer) = start(store.clone(), config);
        let sent = records(0..1_300);
        sent.iter().cloned().for_each(|r| sink.submit(r));
        let stats = writer.shutdown().await;
        assert_eq!(stats, CdrWriterStats { written: 1_300, ..CdrWriterStats::default() });
        assert_eq!(stored(&store).await, by_id(sent));
        assert!(!spool.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spooled_when_the_database_is_down_then_replayed_once() {
        let Some(schema) = PgSchema::create("spooled_when_the_database_is_down_then_replayed_once") else { return };
        let link = Link::start().await;
        let store = Store::open(&schema.url(&link.addr)).await.unwrap();
        let spool = temp_path("ot_spool");
        let config = CdrWriterConfig { shutdown_timeout: Duration::from_millis(500), ..config(spool.clone()) };
        let (sink, writer) = start(store.clone(), config.clone());
        let before = records(0..10);
        before.iter().cloned().for_each(|r| sink.submit(r));
        wait_for("the first records stored", Duration::from_secs(10), || sink.stats().written == 10).await;

        link.cut();
        let during = records(10..30);
        during.iter().cloned().for_each(|r| sink.submit(r));
        wait_for("a refused insert", Duration::from_secs(10), || sink.stats().failed_attempts > 0).await;
        let stats = writer.shutdown().await;
        assert_eq!((stats.written, stats.spooled, stats.queued, stats.lost), (10, 20, 0, 0), "{stats:?}");
        assert_eq!(read_lines(&spool), during, "the spool holds the unstored records, in order");

        // A crash after five of them were stored again but before the spool was removed.
        link.restore();
        store.insert_cdrs(&during[..5]).await.unwrap();
        let (sink, writer) = start(store.clone(), config);
        let after = records(30..33);
        after.iter().cloned().for_each(|r| sink.submit(r));
        let stats = writer.shutdown().await;
        let expected = CdrWriterStats { replayed: 20, written: 18, already_stored: 5, ..CdrWriterStats::default() };
        assert_eq!(stats, expected);
        assert!(!spool.exists(), "the spool goes once its records are stored");
        assert_eq!(stored(&store).await, by_id([before, during, after].concat()), "each record once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submit_never_waits_for_a_database_that_is_down() {
        let Some(schema) = PgSchema::create("submit_never_waits_for_a_database_that_is_down") else { return };
        let link = Link::start().await;
        let store = Store::open(&schema.url(&link.addr)).await.unwrap();
        let (sink, writer) = start(store.clone(), config(temp_path("ot_spool")));
        link.cut();
        let sent = records(0..10_000);
        let mut slowest = Duration::ZERO;
        let start = std::time::Instant::now();
        for r in sent.iter().cloned() {
            let t = std::time::Instant::now();
            sink.submit(r);
            slowest = slowest.max(t.elapsed());
        }
        let took = start.elapsed();
        println!("10,000 submits with the database down: {took:?}, slowest {slowest:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(slowest < Duration::from_millis(100), "{slowest:?}");
        assert_eq!(sink.stats().queued, 10_000);
        wait_for("refused inserts", Duration::from_secs(10), || sink.stats().failed_attempts >= 2).await;
        assert_eq!(sink.stats().written, 0);

        link.restore();
        wait_for("the backlog stored", Duration::from_secs(60), || sink.stats().written == 10_000).await;
        let stats = writer.shutdown().await;
        assert_eq!((stats.written, stats.queued, stats.spooled), (10_000, 0, 0), "{stats:?}");
        assert_eq!(stored(&store).await, by_id(sent));
    }

    #[tokio::test]
    async fn spool_replayed_without_duplicates_torn_line_kept_aside() {
        let store = sqlite().await;
        let spool = temp_path("ot_spool");
        let spooled = records(0..6);
        let mut text = String::new();
        for r in spooled.iter().chain([&spooled[2]]) {
            text.push_str(&spool_line(r).unwrap());
            text.push('\n');
        }
        text.push_str(r#"{"id":"0195-torn","account_id":"ac"#);
        std::fs::write(&spool, &text).unwrap();
        // Two were stored before the crash that left the spool.
        store.insert_cdrs(&spooled[..2]).await.unwrap();

        let (sink, writer) = start(store.clone(), config(spool.clone()));
        let new = records(6..9);
        new.iter().cloned().for_each(|r| sink.submit(r));
        let stats = writer.shutdown().await;
        let expected = CdrWriterStats { replayed: 6, written: 7, already_stored: 2, ..CdrWriterStats::default() };
        assert_eq!(stats, expected);
        assert!(!spool.exists());
        assert_eq!(stored(&store).await, by_id([spooled, new].concat()));
        let torn = std::fs::read_to_string(beside(&spool, ".unreadable")).unwrap();
        assert_eq!(torn, "{\"id\":\"0195-torn\",\"account_id\":\"ac\n");
    }

    #[tokio::test]
    async fn unstorable_records_set_aside_without_stalling_the_rest() {
        let store = sqlite().await;
        let spool = temp_path("ot_spool");
        let (sink, writer) = start(store.clone(), config(spool.clone()));
        let good = records(0..4);
        let mut bad_time = record(10);
        bad_time.ended_at = "2026-01-02T00:01:00Z".into();
        let mut nul = record(11);
        nul.from_received = "+1212555\0".into();
        sink.submit(good[0].clone());
        sink.submit(bad_time.clone());
        sink.submit(good[1].clone());
        sink.submit(nul.clone());
        good[2..].iter().cloned().for_each(|r| sink.submit(r));
        let stats = writer.shutdown().await;
        assert_eq!(stats, CdrWriterStats { written: 4, rejected: 2, ..CdrWriterStats::default() });
        assert_eq!(stored(&store).await, by_id(good));
        assert_eq!(read_lines(&beside(&spool, ".rejected")), vec![bad_time, nul]);
        assert!(!spool.exists(), "set aside, not spooled for replay");
    }

    #[tokio::test]
    async fn a_record_after_shutdown_is_spooled_and_stored_at_the_next_start() {
        let store = sqlite().await;
        let spool = temp_path("ot_spool");
        let (sink, writer) = start(store.clone(), config(spool.clone()));
        assert_eq!(writer.shutdown().await, CdrWriterStats::default());
        let mut late = record(1);
        // A trace written with newlines still makes one spool line.
        late.trace = RawJson::from_text("[\n  {\"rule\": \"x\"}\r\n]".into()).unwrap();
        sink.submit(late.clone());
        assert_eq!(sink.stats(), CdrWriterStats { spooled: 1, ..CdrWriterStats::default() });
        assert_eq!(std::fs::read_to_string(&spool).unwrap().lines().count(), 1);

        let (_, writer) = start(store.clone(), config(spool.clone()));
        let stats = writer.shutdown().await;
        assert_eq!(stats, CdrWriterStats { replayed: 1, written: 1, ..CdrWriterStats::default() });
        let back = store.get_cdr(&late.id).await.unwrap().unwrap();
        let json = |r: &CallDetailRecord| serde_json::from_str::<serde_json::Value>(r.trace.get()).unwrap();
        assert_eq!(json(&back), json(&late));
        assert_eq!(CallDetailRecord { trace: late.trace.clone(), ..back }, late);
        assert!(!spool.exists());
    }

    #[test]
    fn default_config() {
        let c = CdrWriterConfig::new("/var/lib/opentrunk/cdr-spool.jsonl");
        assert_eq!((c.batch_size, c.flush_interval), (500, Duration::from_millis(200)));
        assert_eq!(c.shutdown_timeout, CdrWriterConfig::DEFAULT_SHUTDOWN_TIMEOUT);
        assert_eq!(c.spool_path, Path::new("/var/lib/opentrunk/cdr-spool.jsonl"));
        assert_eq!(beside(&c.spool_path, ".rejected"), Path::new("/var/lib/opentrunk/cdr-spool.jsonl.rejected"));
    }

    #[test]
    fn families_name_every_count() {
        let stats = CdrWriterStats {
            queued: 1,
            written: 2,
            already_stored: 3,
            failed_attempts: 4,
            spooled: 5,
            replayed: 6,
            rejected: 7,
            lost: 8,
            journaled: 9,
            journal_failures: 10,
        };
        let families = stats.families();
        let values: Vec<u64> = families.iter().map(|f| f.3).collect();
        assert_eq!(values, (1..=10).collect::<Vec<_>>());
        let names: HashSet<&str> = families.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), families.len());
        for (name, kind, help, _) in families {
            assert!(name.starts_with("opentrunk_cdr"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(matches!(kind, "counter" | "gauge") && !help.is_empty());
        }
    }

    // -----------------------------------------------------------------------------------------
    // The open-call journal

    /// A call as journaled when it starts: `n`'s record, unanswered and ended at its start.
    fn opening(n: i64) -> CallDetailRecord {
        let r = record(n);
        CallDetailRecord {
            answered_at: None,
            ended_at: r.started_at.clone(),
            call_sec: 0,
            billed_sec: 0,
            cost: None,
            b_leg_call_id: None,
            from_sent: None,
            to_sent: None,
            sip_response_code: store::LOST_UNANSWERED_STATUS,
            hangup_source: HangupSource::System,
            trace: RawJson::from_text("[]".into()).unwrap(),
            ..r
        }
    }

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    fn journaled_ids(calls: &[store::OpenCall]) -> Vec<&str> {
        calls.iter().map(|c| c.record.id.as_str()).collect()
    }

    /// Starts, answers, ends: the journal holds a call while it lives and not after its record
    /// is stored; a call that ends before its start was written never touches the journal.
    async fn journal_follows_calls(store: Store) {
        let b = store.backend();
        let node = unique("node");
        let journal = start_journal(store.clone(), node.clone(), Duration::from_secs(30));
        assert_eq!(journal.node_id(), node);
        let config = CdrWriterConfig { flush_interval: Duration::from_millis(50), ..config(temp_path("ot_spool")) };
        let (sink, writer) = start(store.clone(), config);
        let plain = sink.clone();
        let sink = journal.journaling(sink);
        assert!(sink.journals() && !plain.journals());
        let (a, b_call) = (opening(1), opening(2));
        sink.call_opened(a.clone(), Some("60/60".into()), at(T0 + 1_000));
        sink.call_opened(b_call.clone(), None, at(T0 + 2_000));
        sink.call_answered(&a.id, at(T0 + 3_000));
        // A sink that does not journal ignores calls.
        plain.call_opened(opening(3), None, at(T0));
        wait_for("the starts journaled", Duration::from_secs(10), || sink.stats().journaled == 2).await;
        let open = store.open_calls().await.unwrap();
        assert_eq!(
            journaled_ids(&open),
            by_id(vec![a.clone(), b_call.clone()]).iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            "{b:?}"
        );
        let journaled_a = open.iter().find(|c| c.record.id == a.id).unwrap();
        assert_eq!(journaled_a.record, a, "{b:?}");
        assert_eq!(
            (journaled_a.node_id.as_str(), journaled_a.billing_increment.as_deref()),
            (node.as_str(), Some("60/60"))
        );
        // The answer came in the same flush as the start: folded into it.
        assert_eq!((journaled_a.answered_at_ms, journaled_a.updated_at_ms), (Some(T0 + 3_000), T0 + 3_000), "{b:?}");

        // A answered after its start was written: an update.
        sink.call_answered(&b_call.id, at(T0 + 4_000));
        wait_for("the answer journaled", Duration::from_secs(10), || sink.stats().journaled == 3).await;
        let open = store.open_calls().await.unwrap();
        assert_eq!(open.iter().find(|c| c.record.id == b_call.id).unwrap().answered_at_ms, Some(T0 + 4_000));

        // A's record: its row goes.
        sink.submit(CallDetailRecord { id: a.id.clone(), ..record(1) });
        wait_for("A's record", Duration::from_secs(10), || sink.stats().written == 1).await;
        assert_eq!(journaled_ids(&store.open_calls().await.unwrap()), [b_call.id.as_str()], "{b:?}");

        // A call over before its start was written: nothing journaled, the record stored.
        let short = opening(4);
        sink.call_opened(short.clone(), None, at(T0));
        sink.call_answered(&short.id, at(T0 + 10));
        sink.submit(CallDetailRecord { id: short.id.clone(), ..record(4) });
        wait_for("the short call's record", Duration::from_secs(10), || sink.stats().written == 2).await;
        assert_eq!(sink.stats().journaled, 3, "{b:?}: the short call never reached the journal");
        assert_eq!(journaled_ids(&store.open_calls().await.unwrap()), [b_call.id.as_str()], "{b:?}");

        let stats = writer.shutdown().await;
        assert_eq!((stats.written, stats.journaled, stats.journal_failures), (2, 3, 0), "{b:?}");
        // B is still open: the node's row stays for the reapers.
        let js = journal.shutdown().await;
        assert!(js.heartbeats >= 1 && js.heartbeat_failures == 0, "{js:?}");
        assert_eq!(store.nodes().await.unwrap().len(), 1, "{b:?}");
    }

    #[tokio::test]
    async fn journal_follows_calls_on_sqlite() {
        journal_follows_calls(sqlite().await).await;
    }

    #[tokio::test]
    async fn journal_follows_calls_on_postgres() {
        let Some(schema) = PgSchema::create("journal_follows_calls_on_postgres") else { return };
        journal_follows_calls(Store::open(&schema.url(PG_ADDR)).await.unwrap()).await;
    }

    /// A node dies with three calls open (one answered): another node, or the same database's
    /// next run, records them once the node's heartbeat is older than the node-loss age.
    async fn a_dead_nodes_calls_are_recorded(store: Store) {
        let b = store.backend();
        let loss = Duration::from_millis(600);
        let dead = start_journal(store.clone(), unique("dead"), loss);
        let (sink, _writer) = start(store.clone(), config(temp_path("ot_spool")));
        let sink = dead.journaling(sink);
        let now = unix_ms(SystemTime::now());
        let calls: Vec<CallDetailRecord> = (10..13).map(opening).collect();
        for c in &calls {
            sink.call_opened(c.clone(), Some("6/6".into()), at(now - 40_000));
        }
        sink.call_answered(&calls[0].id, at(now - 30_000));
        wait_for("the calls journaled", Duration::from_secs(10), || sink.stats().journaled == 3).await;
        // Killed: no more heartbeats, and its records never come.
        dead.task.abort();

        let survivor = start_journal(store.clone(), unique("survivor"), loss);
        wait_for("the dead node reaped", Duration::from_secs(10), || survivor.stats().lost_calls == 3).await;
        assert!(store.open_calls().await.unwrap().is_empty(), "{b:?}");
        let answered = store.get_cdr(&calls[0].id).await.unwrap().expect("the answered call's record");
        // Answered 30 s before it was journaled and lost within about a second.
        assert_eq!(answered.sip_response_code, 200, "{b:?}");
        assert!((30..33).contains(&answered.call_sec), "{answered:?}");
        assert_eq!(answered.billed_sec % 6, 0, "{b:?}: billed in 6 s steps");
        assert!(answered.billed_sec >= answered.call_sec, "{answered:?}");
        let expected_cost = trunking::rating::cost("0.0100".parse().unwrap(), u64::from(answered.billed_sec));
        assert_eq!(answered.cost, Some(expected_cost.to_string()), "{b:?}");
        for c in &calls[1..] {
            let r = store.get_cdr(&c.id).await.unwrap().expect("an unanswered call's record");
            assert_eq!((r.sip_response_code, r.call_sec, r.billed_sec, r.cost), (408, 0, 0, None), "{b:?}");
            assert!(r.trace.get().contains(store::NODE_LOST_RULE), "{b:?}");
        }
        let reader = survivor.stats_reader();
        let js = survivor.shutdown().await;
        assert_eq!((js.lost_nodes, js.lost_calls, js.reap_failures), (1, 3, 0), "{js:?}");
        assert_eq!(reader.stats(), js);
        assert!(store.nodes().await.unwrap().is_empty(), "{b:?}: the dead node's row and the survivor's went");
    }

    #[tokio::test]
    async fn a_dead_nodes_calls_are_recorded_on_sqlite() {
        a_dead_nodes_calls_are_recorded(sqlite().await).await;
    }

    #[tokio::test]
    async fn a_dead_nodes_calls_are_recorded_on_postgres() {
        let Some(schema) = PgSchema::create("a_dead_nodes_calls_are_recorded_on_postgres") else { return };
        a_dead_nodes_calls_are_recorded(Store::open(&schema.url(PG_ADDR)).await.unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journal_writes_wait_out_a_database_outage_without_holding_calls() {
        let Some(schema) = PgSchema::create("journal_writes_wait_out_a_database_outage") else { return };
        let link = Link::start().await;
        let store = Store::open(&schema.url(&link.addr)).await.unwrap();
        let journal = start_journal(store.clone(), unique("node"), Duration::from_secs(30));
        let (sink, writer) = start(store.clone(), config(temp_path("ot_spool")));
        let sink = journal.journaling(sink);
        link.cut();
        let calls: Vec<CallDetailRecord> = (0..1_000).map(opening).collect();
        let started = std::time::Instant::now();
        for c in &calls {
            sink.call_opened(c.clone(), None, at(T0));
        }
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        wait_for("a failed journal write", Duration::from_secs(10), || sink.stats().journal_failures > 0).await;
        assert_eq!(sink.stats().journaled, 0);
        link.restore();
        wait_for("the journal written", Duration::from_secs(20), || sink.stats().journaled == 1_000).await;
        assert_eq!(store.open_calls().await.unwrap().len(), 1_000);
        writer.shutdown().await;
        journal.shutdown().await;
    }

    #[test]
    fn lost_calls_are_billed_like_finished_ones() {
        let call = |rate: Option<&str>, increment: Option<&str>| store::OpenCall {
            node_id: "n".into(),
            record: CallDetailRecord { rate: rate.map(str::to_owned), ..opening(1) },
            billing_increment: increment.map(str::to_owned),
            answered_at_ms: Some(T0),
            updated_at_ms: T0,
        };
        // (rate, increment, answered ms, billed seconds, cost)
        type Case = (Option<&'static str>, Option<&'static str>, u64, u32, Option<&'static str>);
        let cases: [Case; 8] = [
            (Some("0.0100"), Some("60/60"), 1, 60, Some("0.0100")),
            (Some("0.0100"), Some("60/60"), 60_001, 120, Some("0.0200")),
            (Some("0.0120"), Some("6/6"), 7_000, 12, Some("0.0024")),
            (Some("0.0120"), Some("30/6"), 31_000, 36, Some("0.0072")),
            (Some("0.5"), Some("1/1"), 0, 0, Some("0")),
            (None, Some("60/60"), 10_000, 0, None),
            (Some("0.0100"), None, 10_000, 0, None),
            (Some("-1"), Some("60/60"), 10_000, 0, None),
        ];
        for (i, (rate, inc, ms, billed, cost)) in cases.into_iter().enumerate() {
            let b = bill_lost_call(&call(rate, inc), ms);
            assert_eq!((b.billed_sec, b.cost.as_deref()), (billed, cost), "case {i}");
        }
    }

    #[test]
    fn journal_families_name_every_count() {
        let stats =
            JournalStats { heartbeats: 1, heartbeat_failures: 2, lost_nodes: 3, lost_calls: 4, reap_failures: 5 };
        let families = stats.families();
        assert_eq!(families.iter().map(|f| f.3).collect::<Vec<_>>(), (1..=5).collect::<Vec<_>>());
        let names: HashSet<&str> = families.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), families.len());
        for (name, kind, help, _) in families {
            assert!(name.starts_with("opentrunk_") && name.ends_with("_total") && kind == "counter", "{name}");
            assert!(!help.is_empty());
        }
    }

    #[test]
    fn heartbeats_fit_the_node_loss_age() {
        for (age_ms, beat_ms) in [(30_000, 5_000), (60_000, 5_000), (12_000, 2_000), (600, 100), (60, 50)] {
            assert_eq!(heartbeat_interval(Duration::from_millis(age_ms)), Duration::from_millis(beat_ms), "{age_ms}");
        }
    }
}
