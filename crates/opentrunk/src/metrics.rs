//! The node's Prometheus metrics (`/metrics`): the switch's counters, the transports', the
//! configuration's, call records' and webhooks'.

use std::sync::Arc;

use axum::extract::State;
use engine::Transports;
use engine::admission::Admitter;
use engine::switch::SwitchStats;
use engine::webhooks::Webhooks;

/// What `/metrics` reads.
pub struct Metrics {
    pub stats: Arc<SwitchStats>,
    pub transports: Transports,
    pub snapshot: store::SnapshotHandle,
    pub admitter: Arc<Admitter<engine::counters::LocalCounters>>,
    pub records: crate::records::CdrSink,
    pub webhooks: Webhooks,
}

/// Prometheus text exposition of the switch's counters.
pub async fn metrics_handler(State(m): State<Arc<Metrics>>) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(4096);
    let extra = [
        ("opentrunk_sip_connections", "gauge", "open stream connections", m.transports.connection_count() as u64),
        (
            "opentrunk_sip_datagrams_dropped_total",
            "counter",
            "datagrams dropped: switch queue full",
            m.transports.dropped_datagrams(),
        ),
        (
            "opentrunk_config_generation",
            "gauge",
            "reloads of the configuration snapshot",
            m.snapshot.current().generation,
        ),
        (
            "opentrunk_config_resources",
            "gauge",
            "resources in the configuration snapshot",
            m.snapshot.current().len() as u64,
        ),
        (
            "opentrunk_policy_generation",
            "gauge",
            "configuration generation new calls are decided with",
            m.admitter.generation(),
        ),
    ];
    let families = m
        .stats
        .families()
        .into_iter()
        .chain(extra)
        .chain(m.records.stats().families())
        .chain(m.webhooks.counts().families());
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out
}
