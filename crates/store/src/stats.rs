//! How long the node's work against the database takes, per operation, as latency histograms
//! for `/metrics` (`opentrunk_store_seconds{operation}`). Fixed buckets of atomics: recording is
//! a few relaxed adds, reading never blocks a writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the node does against the database on its own (the API's reads and writes are the
/// operator's and are not timed here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Reading every resource into the configuration snapshot.
    SnapshotLoad,
    /// A batch of call detail records written by the CDR writer.
    CdrInsert,
    /// Registrar bindings added, refreshed or removed.
    RegistrationWrite,
    /// The sweep of expired registrar bindings.
    RegistrationExpire,
    /// Calls started and answered, written to the open-call journal.
    JournalWrite,
    /// The node's heartbeat beside its open calls.
    NodeHeartbeat,
    /// Lost nodes' open calls turned into records.
    JournalReap,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::SnapshotLoad,
        Operation::CdrInsert,
        Operation::RegistrationWrite,
        Operation::RegistrationExpire,
        Operation::JournalWrite,
        Operation::NodeHeartbeat,
        Operation::JournalReap,
    ];

    /// The `operation` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::SnapshotLoad => "snapshot_load",
            Operation::CdrInsert => "cdr_insert",
            Operation::RegistrationWrite => "registration_write",
            Operation::RegistrationExpire => "registration_expire",
            Operation::JournalWrite => "journal_write",
            Operation::NodeHeartbeat => "node_heartbeat",
            Operation::JournalReap => "journal_reap",
        }
    }
}

/// Upper bounds of the buckets, in seconds: from a local SQLite write (well under a
/// millisecond) to a PostgreSQL across a congested network; `+Inf` is implied after the last.
pub const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// One operation's latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as read: cumulative counts per bucket of [`BUCKETS`] and then `+Inf` (the
/// total), and the sum of every observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub cumulative: [u64; BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl Latency {
    pub fn count(&self) -> u64 {
        self.cumulative[BUCKETS.len()]
    }
}

/// Latency histograms of every [`Operation`].
#[derive(Debug, Default)]
pub struct StoreStats {
    histograms: [Histogram; Operation::ALL.len()],
}

impl StoreStats {
    pub fn observe(&self, op: Operation, took: Duration) {
        let h = &self.histograms[op as usize];
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        h.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        h.sum_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Times `op` until the returned guard is dropped: every way out of a store function
    /// (success or error) is measured, a slow failure being latency too.
    pub fn time(&self, op: Operation) -> Timing<'_> {
        Timing { stats: self, op, started: Instant::now() }
    }

    pub fn latency(&self, op: Operation) -> Latency {
        let h = &self.histograms[op as usize];
        let mut cumulative = [0; BUCKETS.len() + 1];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&h.buckets) {
            total += b.load(Ordering::Relaxed);
            *c = total;
        }
        Latency { cumulative, sum_seconds: h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9 }
    }
}

/// Records its operation's time when dropped (see [`StoreStats::time`]).
pub struct Timing<'a> {
    stats: &'a StoreStats,
    op: Operation,
    started: Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        self.stats.observe(self.op, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_read_back_cumulative() {
        let stats = StoreStats::default();
        // (observation, index of its bucket): on a bound is inside it; past the last is +Inf.
        let cases = [(0.0001, 0), (0.0005, 0), (0.0006, 1), (0.02, 5), (2.5, 11), (3.0, 12)];
        for (seconds, _) in cases {
            stats.observe(Operation::CdrInsert, Duration::from_secs_f64(seconds));
        }
        let l = stats.latency(Operation::CdrInsert);
        for (i, c) in l.cumulative.iter().enumerate() {
            let want = cases.iter().filter(|(_, b)| *b <= i).count() as u64;
            assert_eq!(*c, want, "bucket {i}");
        }
        assert_eq!(l.count(), 6);
        assert!((l.sum_seconds - 5.5212).abs() < 1e-6, "{}", l.sum_seconds);
        // Other operations are untouched.
        assert_eq!(stats.latency(Operation::SnapshotLoad).count(), 0);
    }

    #[test]
    fn a_timing_guard_records_once_when_dropped() {
        let stats = StoreStats::default();
        {
            let _t = stats.time(Operation::RegistrationWrite);
            assert_eq!(stats.latency(Operation::RegistrationWrite).count(), 0);
        }
        assert_eq!(stats.latency(Operation::RegistrationWrite).count(), 1);
    }

    #[test]
    fn label_values_are_distinct() {
        let mut names: Vec<_> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len());
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "ALL is in declaration order");
        }
    }
}
