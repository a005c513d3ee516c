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

// Until `serve` hands the switch a `CdrSink`, nothing outside the tests calls this module.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::{CallDetailRecord, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

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
}

impl CdrWriterStats {
    /// Prometheus families: name, type, help, value.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 8] {
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
        ]
    }
}

/// Where the switch hands finished calls' records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CdrSink {
    tx: mpsc::UnboundedSender<CallDetailRecord>,
    counters: Arc<Counters>,
    spool: Arc<Spool>,
}

impl CdrSink {
    /// Queues a record for the store. Never waits and never drops it.
    pub fn submit(&self, record: CallDetailRecord) {
        // Counted before it is sent, so the task never counts it out before it was counted in.
        add(&self.counters.queued, 1);
        if let Err(mpsc::error::SendError(record)) = self.tx.send(record) {
            sub(&self.counters.queued, 1);
            // The writer has shut down and the switch is still finishing calls: the record goes
            // straight to the spool. Only ever after shutdown, so the file write delays no call.
            warn!(id = %record.id, "call record submitted after the CDR writer stopped: spooled");
            self.spool.append_counted(std::slice::from_ref(&record), &self.counters);
        }
    }

    pub fn stats(&self) -> CdrWriterStats {
        self.counters.snapshot()
    }
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
    let mut task = Task {
        store,
        batch_size: config.batch_size.max(1),
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
    };
    match spool.load() {
        Ok(None) => {}
        Ok(Some((records, len))) => {
            info!(path = %spool.path.display(), records = records.len(), "replaying spooled call records");
            add(&counters.replayed, records.len());
            add(&counters.queued, records.len());
            task.take(records);
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
    (CdrSink { tx, counters: counters.clone(), spool }, CdrWriter { stop, task: handle, counters })
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
    if texts.into_iter().flatten().any(|t| t.contains('\0')) {
        return Some("a NUL character in a text field");
    }
    None
}

struct Task {
    store: Store,
    batch_size: usize,
    flush_interval: Duration,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
    spool: Arc<Spool>,
    rx: mpsc::UnboundedReceiver<CallDetailRecord>,
    /// Records taken from the intake, oldest first; a failed batch stays at the head.
    pending: VecDeque<CallDetailRecord>,
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
                while self.pending.len() < self.batch_size
                    && let Ok(r) = self.rx.try_recv()
                {
                    buf.push(r);
                }
                self.take(buf.drain(..));
            } else if self.pending.len() < self.batch_size && intake_open {
                if self.pending.is_empty() {
                    tokio::select! {
                        biased;
                        _ = &mut stop => break 'running,
                        n = self.rx.recv_many(&mut buf, self.batch_size) => {
                            intake_open = n > 0;
                            self.take(buf.drain(..));
                        }
                    }
                }
                // The first record starts the flush clock; a full batch goes at once.
                let deadline = Instant::now() + self.flush_interval;
                while intake_open && !self.pending.is_empty() && self.pending.len() < self.batch_size {
                    let room = self.batch_size - self.pending.len();
                    tokio::select! {
                        biased;
                        _ = &mut stop => break 'running,
                        _ = tokio::time::sleep_until(deadline) => break,
                        n = self.rx.recv_many(&mut buf, room) => {
                            intake_open = n > 0;
                            self.take(buf.drain(..));
                        }
                    }
                }
            }
            if self.pending.is_empty() {
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
    }

    /// Queues `records`, setting aside those the store would never accept.
    fn take(&mut self, records: impl IntoIterator<Item = CallDetailRecord>) {
        let mut refused = Vec::new();
        for r in records {
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

    /// Stores the batch at the head of the queue.
    async fn write_batch(&mut self) -> Result<(), StoreError> {
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
            id: new_cdr_id(T0 + n * 1000).unwrap(),
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
        };
        let families = stats.families();
        let values: Vec<u64> = families.iter().map(|f| f.3).collect();
        assert_eq!(values, (1..=8).collect::<Vec<_>>());
        let names: HashSet<&str> = families.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), families.len());
        for (name, kind, help, _) in families {
            assert!(name.starts_with("opentrunk_cdr"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(matches!(kind, "counter" | "gauge") && !help.is_empty());
        }
    }
}
