//! The node's Prometheus metrics (`/metrics`): the switch's calls, transactions and
//! retransmissions, the transports', the configuration's, the store's latency, call records'
//! and webhooks', and whatever else the node adds through [`Metrics::extra`].
//!
//! The text format is written by [`Exposition`], a few dozen lines of our own rather than the
//! `prometheus` or `metrics` crates: every figure here already lives in an atomic owned by the
//! part that counts it, so a registry of the crate's own metric objects (or a global recorder
//! and its exporter) would only add a copy of each figure and a dependency tree, where writing
//! the exposition format from those atomics is one pass into one buffer.

use std::fmt::{self, Display, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use engine::Transports;
use engine::admission::Admitter;
use engine::switch::SwitchStats;
use engine::webhooks::Webhooks;

/// What renders more families into `/metrics` (the counters' backend, for one).
pub type ExtraFamilies = Box<dyn Fn(&mut Exposition) + Send + Sync>;

/// What `/metrics` reads.
pub struct Metrics {
    pub stats: Arc<SwitchStats>,
    pub transports: Transports,
    pub snapshot: store::SnapshotHandle,
    pub admitter: Arc<Admitter<engine::counters::NodeCounters>>,
    pub records: crate::records::CdrSink,
    pub webhooks: Webhooks,
    /// The store's latency of the node's own database work.
    pub store: Arc<store::StoreStats>,
    /// Rendered after the node's own families, in order; each writes its families whole.
    pub extra: Vec<ExtraFamilies>,
}

/// Prometheus text exposition of everything the node counts.
pub async fn metrics_handler(State(m): State<Arc<Metrics>>) -> String {
    render(&m)
}

fn render(m: &Metrics) -> String {
    let mut e = Exposition::with_capacity(8192);
    switch(&mut e, &m.stats);
    let snapshot = m.snapshot.current();
    e.flat([
        ("opentrunk_sip_connections", "gauge", "open stream connections", m.transports.connection_count() as u64),
        (
            "opentrunk_sip_datagrams_dropped_total",
            "counter",
            "datagrams the kernel dropped: a UDP listener's receive buffer was full",
            m.transports.dropped_datagrams(),
        ),
        (
            "opentrunk_config_generation",
            "gauge",
            "configuration snapshots published (reloads that found the configuration changed)",
            snapshot.generation,
        ),
        ("opentrunk_config_resources", "gauge", "resources in the configuration snapshot", snapshot.len() as u64),
        (
            "opentrunk_policy_generation",
            "gauge",
            "configuration generation new calls are decided with",
            m.admitter.generation(),
        ),
    ]);
    e.flat(m.records.stats().families());
    e.flat(m.webhooks.counts().families());
    store_latency(&mut e, &m.store);
    for extra in &m.extra {
        extra(&mut e);
    }
    e.into_string()
}

/// The switch's counters: the flat ones, and calls, transactions and retransmissions by label.
fn switch(e: &mut Exposition, stats: &SwitchStats) {
    e.flat(stats.families());
    let by_direction = stats.calls_by_direction();
    let mut f =
        e.family("opentrunk_calls_attempted_total", Kind::Counter, "new INVITEs, by direction once admission knows it");
    for (direction, attempted, _) in by_direction {
        f.sample(&[("direction", &direction)], attempted);
    }
    let mut f = e.family("opentrunk_calls_answered_total", Kind::Counter, "calls answered, by direction");
    for (direction, _, answered) in by_direction {
        f.sample(&[("direction", &direction)], answered);
    }
    let mut f = e.family(
        "opentrunk_calls_failed_total",
        Kind::Counter,
        "calls ended without answer or refused, by the status the caller got and the product reason code",
    );
    for (status, reason, n) in stats.calls_failed() {
        let code = reason.map(|r| r.code()).filter(|c| !c.is_empty()).unwrap_or("none");
        f.sample(&[("status", &status), ("reason", &code)], n);
    }
    let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.family("opentrunk_sip_transactions", Kind::Gauge, "transactions alive")
        .sample(&[("kind", &"server")], v(&stats.live_transactions))
        .sample(&[("kind", &"client")], v(&stats.live_client_transactions));
    e.family(
        "opentrunk_sip_retransmissions_sent_total",
        Kind::Counter,
        "messages we sent again: requests (client transactions, ACKs) and responses (server transactions, our 2xx)",
    )
    .sample(&[("message", &"request")], v(&stats.requests_retransmitted))
    .sample(&[("message", &"response")], v(&stats.responses_retransmitted));
}

fn store_latency(e: &mut Exposition, stats: &store::StoreStats) {
    let mut f = e.family("opentrunk_store_seconds", Kind::Histogram, "time the node's own database work takes");
    for op in store::Operation::ALL {
        let l = stats.latency(op);
        f.histogram(&[("operation", &op.as_str())], &store::BUCKETS, &l.cumulative, l.sum_seconds);
    }
}

/// A family's type, as `# TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The Prometheus text format (version 0.0.4) written into one buffer: each family's `# HELP`
/// and `# TYPE` once, then its samples (a family is written whole through [`Family`]); label
/// values and help text escaped as the format asks.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn with_capacity(bytes: usize) -> Exposition {
        Exposition { out: String::with_capacity(bytes) }
    }

    /// Starts a family: its help and type, then the samples written through the result.
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        Family { out: &mut self.out, name }
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// Unlabelled families as the parts list them: name, type (`counter` or `gauge`), help,
    /// value.
    pub fn flat<'a>(&mut self, families: impl IntoIterator<Item = (&'a str, &'a str, &'a str, u64)>) {
        for (name, kind, help, value) in families {
            let kind = if kind == "gauge" { Kind::Gauge } else { Kind::Counter };
            self.single(name, kind, help, value);
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// The samples of one family (see [`Exposition::family`]).
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

/// Label names and values of one sample; values are anything displayable (no allocation for
/// numbers).
pub type Labels<'l> = [(&'l str, &'l dyn Display)];

impl Family<'_> {
    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, labels: &Labels<'_>, value: u64) -> &mut Self {
        self.line("", labels, None, value);
        self
    }

    /// One histogram: a `_bucket` sample per upper bound with its cumulative count, `+Inf`
    /// (the last of `cumulative`, which has one more entry than `bounds`), `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &Labels<'_>, bounds: &[f64], cumulative: &[u64], sum: f64) -> &mut Self {
        debug_assert_eq!(cumulative.len(), bounds.len() + 1);
        for (bound, count) in bounds.iter().map(Some).chain([None]).zip(cumulative) {
            self.line("_bucket", labels, Some(bound), *count);
        }
        let count = cumulative.last().copied().unwrap_or(0);
        self.start("_sum", labels, None);
        write_float(self.out, sum);
        self.out.push('\n');
        self.line("_count", labels, None, count);
        self
    }

    fn line(&mut self, suffix: &str, labels: &Labels<'_>, le: Option<Option<&f64>>, value: u64) {
        self.start(suffix, labels, le);
        let _ = write!(self.out, "{value}");
        self.out.push('\n');
    }

    /// `name_suffix{labels[,le="bound"]} ` (`le` only for buckets; `None` inside is `+Inf`).
    fn start(&mut self, suffix: &str, labels: &Labels<'_>, le: Option<Option<&f64>>) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                let _ = write!(Escaped(self.out), "{value}");
                self.out.push('"');
            }
            if let Some(bound) = le {
                if !labels.is_empty() {
                    self.out.push(',');
                }
                self.out.push_str("le=\"");
                match bound {
                    Some(b) => write_float(self.out, *b),
                    None => self.out.push_str("+Inf"),
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

/// A float as the format spells it (`+Inf`, `-Inf`, `NaN`; Rust's `Display` never uses an
/// exponent, which the format accepts either way).
fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Writes a label value escaped: backslash, double quote and line feed.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            self.0.push_str(&rest[..i]);
            self.0.push_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            });
            rest = &rest[i + 1..];
        }
        self.0.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use engine::admission::Admission;
    use engine::switch::{Core, SwitchConfig};
    use engine::{Inbound, TransportKind};

    use super::*;

    #[test]
    fn a_family_has_its_help_and_type_once_and_escaped_label_values() {
        let mut e = Exposition::default();
        e.family("opentrunk_things_total", Kind::Counter, "things \\ counted\nhere")
            .sample(&[("name", &"a\"b\\c\nd"), ("code", &403u16)], 7)
            .sample(&[("name", &"plain"), ("code", &200u16)], 0);
        e.single("opentrunk_up", Kind::Gauge, "up", 1);
        assert_eq!(
            e.into_string(),
            "# HELP opentrunk_things_total things \\\\ counted\\nhere\n\
             # TYPE opentrunk_things_total counter\n\
             opentrunk_things_total{name=\"a\\\"b\\\\c\\nd\",code=\"403\"} 7\n\
             opentrunk_things_total{name=\"plain\",code=\"200\"} 0\n\
             # HELP opentrunk_up up\n\
             # TYPE opentrunk_up gauge\n\
             opentrunk_up 1\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_ending_at_inf_then_sum_and_count() {
        let mut e = Exposition::default();
        let mut f = e.family("opentrunk_store_seconds", Kind::Histogram, "latency");
        f.histogram(&[("operation", &"cdr_insert")], &[0.005, 0.1], &[1, 3, 4], 1.25);
        f.histogram(&[], &[1.0], &[0, 0], 0.0);
        assert_eq!(
            e.into_string(),
            "# HELP opentrunk_store_seconds latency\n\
             # TYPE opentrunk_store_seconds histogram\n\
             opentrunk_store_seconds_bucket{operation=\"cdr_insert\",le=\"0.005\"} 1\n\
             opentrunk_store_seconds_bucket{operation=\"cdr_insert\",le=\"0.1\"} 3\n\
             opentrunk_store_seconds_bucket{operation=\"cdr_insert\",le=\"+Inf\"} 4\n\
             opentrunk_store_seconds_sum{operation=\"cdr_insert\"} 1.25\n\
             opentrunk_store_seconds_count{operation=\"cdr_insert\"} 4\n\
             opentrunk_store_seconds_bucket{le=\"1\"} 0\n\
             opentrunk_store_seconds_bucket{le=\"+Inf\"} 0\n\
             opentrunk_store_seconds_sum 0\n\
             opentrunk_store_seconds_count 0\n"
        );
    }

    #[test]
    fn the_store_latency_family_has_every_operation() {
        let stats = store::StoreStats::default();
        stats.observe(store::Operation::CdrInsert, Duration::from_millis(3));
        let mut e = Exposition::default();
        store_latency(&mut e, &stats);
        let text = e.into_string();
        assert_eq!(text.matches("# TYPE opentrunk_store_seconds histogram").count(), 1);
        for op in store::Operation::ALL {
            assert!(
                text.contains(&format!("opentrunk_store_seconds_count{{operation=\"{}\"}}", op.as_str())),
                "{op:?}"
            );
        }
        assert!(text.contains("opentrunk_store_seconds_bucket{operation=\"cdr_insert\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("opentrunk_store_seconds_bucket{operation=\"cdr_insert\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("opentrunk_store_seconds_count{operation=\"cdr_insert\"} 1\n"), "{text}");
    }

    #[test]
    fn a_refused_call_shows_under_its_status_and_reason_code() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let invite = "INVITE sip:+12125551212@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKm1;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:pbx@10.0.0.5>;tag=f1\r\nTo: <sip:+12125551212@192.0.2.1>\r\n\
             Call-ID: metrics-1@10.0.0.5\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        core.handle_inbound(
            Inbound {
                data: Bytes::from_static(invite.as_bytes()),
                kind: TransportKind::Udp,
                local: "192.0.2.1:5060".parse().unwrap(),
                remote: "192.0.2.10:5062".parse().unwrap(),
                conn: None,
            },
            Instant::now(),
        );
        let req = core.poll_admission().expect("the INVITE waits for admission");
        let refusal = Admission::refuse(trunking::Reason::D25, None);
        core.admit(req.id, refusal, Instant::now());
        let mut e = Exposition::default();
        switch(&mut e, &core.stats());
        let text = e.into_string();
        assert!(text.contains("opentrunk_calls_failed_total{status=\"403\",reason=\"D25\"} 1\n"), "{text}");
        assert!(text.contains("opentrunk_calls_attempted_total{direction=\"unknown\"} 1\n"), "{text}");
        assert!(text.contains("opentrunk_calls_attempted_total{direction=\"outbound\"} 0\n"), "{text}");
        assert!(text.contains("opentrunk_sip_transactions{kind=\"server\"} 1\n"), "{text}");
        for family in ["opentrunk_calls_failed_total", "opentrunk_sip_transactions", "opentrunk_calls_active"] {
            assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family} once");
        }
    }
}
