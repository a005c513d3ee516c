//! Call webhooks, as the product sends them: `call.initiated`, `call.answered`, `call.hangup`
//! (and `call.cost` when the connection sets `call_cost_in_webhooks`), POSTed to the connection's
//! `webhook_event_url` in Telnyx's API v2 envelope and signed the way Telnyx signs, so receivers
//! that verify with the official SDKs accept ours unchanged.
//!
//! Three layers:
//! - events: plain data the engine fills in ([`Event`], [`CallInfo`], [`Hangup`], [`CallCost`]);
//! - the wire format, pure: [`event_data`] (the `data` object, serialised once per event),
//!   [`envelope`] (`{"data": ..., "meta": {"attempt", "delivered_to"}}`, per attempt), [`sign`]
//!   and [`verify`]: `telnyx-signature-ed25519` is the standard base64 of the Ed25519 signature of
//!   `"{telnyx-timestamp}|{body}"`, the timestamp in Unix seconds;
//! - delivery: [`Webhooks::start`] spawns one dispatcher task fed by a bounded queue.
//!   [`Webhooks::enqueue`] never waits (a full queue drops the event, counted and logged), so a
//!   slow receiver never slows a call. Each event is delivered by its own task (at most
//!   `max_in_flight` at once): the primary URL, then the failover URL when the primary fails
//!   (non-2xx, connection error, or no answer within the connection's `webhook_timeout_secs`),
//!   and again after an exponential backoff (capped) for `retries` more rounds. Every try counts
//!   in `meta.attempt` and names its URL in `meta.delivered_to`, and is signed afresh with the
//!   current timestamp (receivers reject timestamps older than five minutes).
//!   [`WebhookDriver::shutdown`] closes the queue and keeps delivering what is queued until a
//!   deadline. Delivery order is not guaranteed (neither is Telnyx's): `occurred_at` orders events.
//!
//! The HTTP client is hyper-util's pooled client over hyper-rustls: the workspace already builds
//! hyper 1 (axum) and rustls with the ring provider, and webhooks need nothing of a higher-level
//! client (redirects must not be followed, no cookies, proxies or decompression); reqwest 0.13's
//! rustls feature would bring aws-lc-rs (a C build) and a second provider. Roots are Mozilla's
//! (webpki-roots, compiled in, so a container without a CA bundle works); an operator with a
//! private CA passes its own `rustls::ClientConfig`.
//!
//! The signing key is the operator's (`api::public_key` keeps it in the store's settings and
//! serves its public half at `GET /v2/public_key`); it is passed in here as a value.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// The signature header (base64 Ed25519 signature of `"{timestamp}|{body}"`).
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// The timestamp header (Unix seconds, decimal).
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";
/// Per-attempt timeout when the connection sets no `webhook_timeout_secs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `webhook_timeout_secs` the contract allows.
pub const MAX_TIMEOUT_SECS: u64 = 30;
/// How much of a receiver's answer is read (to keep the connection for the next webhook).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
const AGENT: &str = concat!("opentrunk-webhooks/", env!("CARGO_PKG_VERSION"));

// ----- events: plain data -----

/// The call's direction as the customer sees it: `incoming` for a call delivered to the
/// connection (a carrier calling one of its numbers), `outgoing` for a call the connection
/// placed through us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// Why a call ended: the contract's `hangup_cause` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupCause {
    CallRejected,
    NormalClearing,
    OriginatorCancel,
    Timeout,
    TimeLimit,
    UserBusy,
    NotFound,
    NoAnswer,
    Unspecified,
}

impl HangupCause {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupCause::CallRejected => "call_rejected",
            HangupCause::NormalClearing => "normal_clearing",
            HangupCause::OriginatorCancel => "originator_cancel",
            HangupCause::Timeout => "timeout",
            HangupCause::TimeLimit => "time_limit",
            HangupCause::UserBusy => "user_busy",
            HangupCause::NotFound => "not_found",
            HangupCause::NoAnswer => "no_answer",
            HangupCause::Unspecified => "unspecified",
        }
    }

    /// The cause of a call that ended unanswered with this final SIP status (a call that was
    /// answered and then hung up is [`HangupCause::NormalClearing`]).
    pub fn for_final_status(status: u16) -> HangupCause {
        match status {
            200..=299 => HangupCause::NormalClearing,
            486 | 600 => HangupCause::UserBusy,
            404 | 484 | 604 => HangupCause::NotFound,
            480 => HangupCause::NoAnswer,
            408 => HangupCause::Timeout,
            487 => HangupCause::OriginatorCancel,
            403 | 603 => HangupCause::CallRejected,
            _ => HangupCause::Unspecified,
        }
    }
}

/// Who ended the call: the contract's `hangup_source` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupSource {
    Caller,
    Callee,
    Unknown,
}

impl HangupSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupSource::Caller => "caller",
            HangupSource::Callee => "callee",
            HangupSource::Unknown => "unknown",
        }
    }
}

/// What every event of one call leg carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub call_control_id: String,
    pub call_leg_id: String,
    pub call_session_id: String,
    pub connection_id: String,
    /// Number or SIP URI placing the call.
    pub from: String,
    /// Destination number or SIP URI.
    pub to: String,
    pub direction: Direction,
    /// When the call started (the INVITE arrived).
    pub start_time: SystemTime,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hangup {
    pub cause: HangupCause,
    pub source: HangupSource,
    /// The SIP status that ended it; `None` is written `unspecified` (a BYE, for example).
    pub sip_status: Option<u16>,
    pub end_time: SystemTime,
}

/// What a call cost (the `call.cost` event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallCost {
    pub billed_duration_secs: u64,
    /// Per-minute rate applied.
    pub rate: Decimal,
    pub cost: Decimal,
    /// ISO 4217, such as `USD`.
    pub currency: String,
}

/// Which event this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Initiated,
    Answered,
    Hangup(Hangup),
    /// Sent only to connections with `call_cost_in_webhooks` ([`Webhooks::enqueue`] skips it
    /// for the others).
    Cost(CallCost),
}

/// One webhook event of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub occurred_at: SystemTime,
    pub call: CallInfo,
    pub kind: EventKind,
}

impl Event {
    /// The `event_type`: `call.initiated`, `call.answered`, `call.hangup` or `call.cost`.
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            EventKind::Initiated => "call.initiated",
            EventKind::Answered => "call.answered",
            EventKind::Hangup(_) => "call.hangup",
            EventKind::Cost(_) => "call.cost",
        }
    }
}

// ----- the wire format (pure) -----

#[derive(Serialize)]
struct Data<'a> {
    record_type: &'static str,
    event_type: &'static str,
    id: &'a str,
    occurred_at: String,
    payload: Payload<'a>,
}

/// The fields of every event type in one struct; each event writes only its own (the SDKs'
/// models of `call.initiated`, `call.answered`, `call.hangup` and `call.cost`).
#[derive(Default, Serialize)]
struct Payload<'a> {
    call_control_id: &'a str,
    connection_id: &'a str,
    call_leg_id: &'a str,
    call_session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hangup_cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hangup_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sip_hangup_cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billed_duration_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_cost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_parts: Option<[CostPart<'a>; 1]>,
}

#[derive(Serialize)]
struct CostPart<'a> {
    call_part: &'static str,
    billed_duration_secs: u64,
    rate: String,
    cost: String,
    currency: &'a str,
}

#[derive(Serialize)]
struct Meta<'a> {
    attempt: u32,
    delivered_to: &'a str,
}

/// The event's `data` object as JSON: `record_type` `event`, `event_type`, `id`,
/// `occurred_at` and the `payload`. It is the same on every attempt.
pub fn event_data(event: &Event, id: &str) -> String {
    let c = &event.call;
    let mut p = Payload {
        call_control_id: &c.call_control_id,
        connection_id: &c.connection_id,
        call_leg_id: &c.call_leg_id,
        call_session_id: &c.call_session_id,
        ..Payload::default()
    };
    let occurred_at = iso8601(event.occurred_at);
    match &event.kind {
        EventKind::Initiated | EventKind::Answered | EventKind::Hangup(_) => {
            p.from = Some(&c.from);
            p.to = Some(&c.to);
            p.start_time = Some(iso8601(c.start_time));
        }
        EventKind::Cost(_) => {}
    }
    match &event.kind {
        EventKind::Initiated => {
            p.direction = Some(c.direction.as_str());
            // Never parked for call control here: the switch is already bridging the call.
            p.state = Some("bridging");
        }
        EventKind::Answered => p.state = Some("answered"),
        EventKind::Hangup(h) => {
            p.state = Some("hangup");
            p.end_time = Some(iso8601(h.end_time));
            p.hangup_cause = Some(h.cause.as_str());
            p.hangup_source = Some(h.source.as_str());
            p.sip_hangup_cause = Some(h.sip_status.map_or_else(|| "unspecified".to_owned(), |s| s.to_string()));
        }
        EventKind::Cost(cost) => {
            p.occurred_at = Some(occurred_at.clone());
            p.status = Some("success");
            p.billed_duration_secs = Some(cost.billed_duration_secs);
            p.total_cost = Some(cost.cost.to_string());
            p.cost_parts = Some([CostPart {
                call_part: "sip-trunking",
                billed_duration_secs: cost.billed_duration_secs,
                rate: cost.rate.to_string(),
                cost: cost.cost.to_string(),
                currency: &cost.currency,
            }]);
        }
    }
    let data = Data { record_type: "event", event_type: event.event_type(), id, occurred_at, payload: p };
    serde_json::to_string(&data).expect("plain strings and numbers serialise")
}

/// The request body of one attempt: `{"data": <data>, "meta": {"attempt", "delivered_to"}}`.
pub fn envelope(data: &str, attempt: u32, delivered_to: &str) -> String {
    let meta = serde_json::to_string(&Meta { attempt, delivered_to }).expect("a number and a string serialise");
    let mut body = String::with_capacity(data.len() + meta.len() + 20);
    let _ = write!(body, "{{\"data\":{data},\"meta\":{meta}}}");
    body
}

/// The `telnyx-signature-ed25519` value: standard base64 of the Ed25519 signature of
/// `"{timestamp}|{body}"`.
pub fn sign(key: &SigningKey, timestamp: u64, body: &str) -> String {
    let signature = key.sign(&signed_message(&timestamp.to_string(), body));
    BASE64.encode(signature.to_bytes())
}

/// Whether `signature` (base64) signs `"{timestamp}|{body}"` under `public_key`, as a
/// receiver checks it (the SDKs also reject a timestamp more than five minutes away).
pub fn verify(public_key: &VerifyingKey, timestamp: &str, body: &str, signature: &str) -> bool {
    let Ok(bytes) = BASE64.decode(signature.trim()) else { return false };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else { return false };
    public_key.verify(&signed_message(timestamp, body), &Signature::from_bytes(&bytes)).is_ok()
}

fn signed_message(timestamp: &str, body: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + 1 + body.len());
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'|');
    m.extend_from_slice(body.as_bytes());
    m
}

/// The public key as receivers configure it (and `GET /v2/public_key` serves it): standard
/// base64 of the 32 key bytes.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    BASE64.encode(key.as_bytes())
}

/// A public key from its base64 form.
pub fn public_key_from_base64(s: &str) -> Option<VerifyingKey> {
    let bytes = BASE64.decode(s.trim()).ok()?;
    VerifyingKey::from_bytes(&<[u8; 32]>::try_from(bytes.as_slice()).ok()?).ok()
}

/// `2018-02-02T22:25:27.521992Z` (UTC, microseconds), as the events write times. Times before
/// 1970 are written as the epoch.
pub fn iso8601(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t.max(UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A random (version 4) UUID, the form of Telnyx's event ids.
fn new_event_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

// ----- where a connection's webhooks go -----

/// A connection's webhook settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `webhook_event_url`.
    pub url: String,
    /// `webhook_event_failover_url` (empty in the document means none).
    pub failover_url: Option<String>,
    /// `webhook_timeout_secs`: `None` (or 0) takes the configured default.
    pub timeout: Option<Duration>,
    /// `call_cost_in_webhooks`: whether `call.cost` events are sent.
    pub call_cost: bool,
}

impl Destination {
    /// From a connection's document (any kind): `None` when it has no `webhook_event_url`.
    pub fn from_connection(doc: &serde_json::Value) -> Option<Destination> {
        let url = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty());
        Some(Destination {
            url: url("webhook_event_url")?.to_owned(),
            failover_url: url("webhook_event_failover_url").map(str::to_owned),
            timeout: doc
                .get("webhook_timeout_secs")
                .and_then(|v| v.as_u64())
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.min(MAX_TIMEOUT_SECS))),
            call_cost: doc.get("call_cost_in_webhooks").and_then(|v| v.as_bool()).unwrap_or(false),
        })
    }
}

// ----- delivery -----

/// How the delivery queue behaves.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Events waiting for delivery; beyond it new events are dropped.
    pub queue_capacity: usize,
    /// Events being delivered at once (each holds a slot through its retries).
    pub max_in_flight: usize,
    /// Per-attempt timeout for connections without `webhook_timeout_secs`.
    pub default_timeout: Duration,
    /// Rounds after the first (each round: the primary URL, then the failover URL).
    pub retries: u32,
    /// The wait before the first retry round; it doubles every round, up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// TLS for `https` URLs; `None`: rustls (ring) with Mozilla's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            queue_capacity: 10_000,
            max_in_flight: 64,
            default_timeout: DEFAULT_TIMEOUT,
            retries: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl WebhookConfig {
    /// The wait before retry round `round` (1 for the first retry): `backoff_initial` doubled
    /// each round, never above `backoff_max`.
    pub fn backoff(&self, round: u32) -> Duration {
        let factor = 1u32.checked_shl(round.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }
}

/// What [`Webhooks::enqueue`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// The queue was full (or shut down): the event is lost, and counted.
    Dropped,
    /// A `call.cost` event for a connection without `call_cost_in_webhooks`.
    NotWanted,
}

/// Delivery counters (read them with [`Webhooks::counts`]).
#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
}

/// A snapshot of the delivery counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Events accepted into the queue.
    pub queued: u64,
    /// Events dropped because the queue was full (or already shut down).
    pub dropped: u64,
    /// HTTP requests made (every URL of every round).
    pub attempts: u64,
    /// Events a receiver answered with 2xx.
    pub delivered: u64,
    /// Events that failed every attempt.
    pub failed: u64,
    /// Events still queued or being delivered when the shutdown deadline passed.
    pub abandoned: u64,
}

impl WebhookCounts {
    /// Prometheus families: name, type, help, value.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 6] {
        [
            ("opentrunk_webhooks_queued_total", "counter", "webhook events queued", self.queued),
            (
                "opentrunk_webhooks_dropped_total",
                "counter",
                "webhook events dropped: queue full or shut down",
                self.dropped,
            ),
            ("opentrunk_webhook_attempts_total", "counter", "webhook HTTP requests made", self.attempts),
            ("opentrunk_webhooks_delivered_total", "counter", "webhook events delivered (2xx)", self.delivered),
            ("opentrunk_webhooks_failed_total", "counter", "webhook events that failed every attempt", self.failed),
            (
                "opentrunk_webhooks_abandoned_total",
                "counter",
                "webhook events left undelivered at shutdown",
                self.abandoned,
            ),
        ]
    }
}

impl Stats {
    fn counts(&self) -> WebhookCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookCounts {
            queued: get(&self.queued),
            dropped: get(&self.dropped),
            attempts: get(&self.attempts),
            delivered: get(&self.delivered),
            failed: get(&self.failed),
            abandoned: get(&self.abandoned),
        }
    }
}

struct Job {
    destination: Arc<Destination>,
    event: Event,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What every delivery task shares.
struct Shared {
    config: WebhookConfig,
    key: SigningKey,
    client: HttpClient,
    stats: Arc<Stats>,
}

/// The handle the engine enqueues events with; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// Owns the dispatcher task; [`WebhookDriver::shutdown`] drains it.
pub struct WebhookDriver {
    stop: oneshot::Sender<Duration>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

/// Why the delivery queue could not start.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "webhooks: {}", self.0)
    }
}

impl std::error::Error for StartError {}

impl Webhooks {
    /// Starts the dispatcher (on the current tokio runtime), signing with `key`.
    pub fn start(config: WebhookConfig, key: SigningKey) -> Result<(Webhooks, WebhookDriver), StartError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &config.tls {
            Some(tls) => builder.with_tls_config(tls.as_ref().clone()),
            None => builder
                .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
                .map_err(|e| StartError(format!("TLS: {e}")))?,
        };
        let connector = builder.https_or_http().enable_http1().build();
        // Idle connections are closed after 30 s (the pool needs a timer for that).
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (stop, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared { config, key, client, stats: stats.clone() });
        let task = tokio::spawn(dispatch(shared, rx, stop_rx));
        Ok((Webhooks { tx, stats: stats.clone() }, WebhookDriver { stop, task, stats }))
    }

    /// Queues `event` for `destination` without ever waiting: a full queue drops it (counted,
    /// and logged once per thousand drops).
    pub fn enqueue(&self, destination: Arc<Destination>, event: Event) -> Enqueued {
        if matches!(event.kind, EventKind::Cost(_)) && !destination.call_cost {
            return Enqueued::NotWanted;
        }
        match self.tx.try_send(Job { destination, event }) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Enqueued::Queued
            }
            Err(e) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "shut down",
                    };
                    warn!(dropped = n + 1, "webhook event dropped: {why}");
                }
                Enqueued::Dropped
            }
        }
    }

    pub fn counts(&self) -> WebhookCounts {
        self.stats.counts()
    }
}

impl WebhookDriver {
    /// Stops taking events and delivers what is queued or in flight, retries included, for at
    /// most `within`; what is left then is abandoned (counted). Returns the final counts.
    pub async fn shutdown(self, within: Duration) -> WebhookCounts {
        let _ = self.stop.send(within);
        let _ = self.task.await;
        self.stats.counts()
    }

    pub fn counts(&self) -> WebhookCounts {
        self.stats.counts()
    }
}

async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>, mut stop: oneshot::Receiver<Duration>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let within = loop {
        while tasks.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            within = &mut stop => break within.unwrap_or_default(),
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let job = tokio::select! {
            biased;
            within = &mut stop => break within.unwrap_or_default(),
            job = rx.recv() => job,
        };
        match job {
            Some(job) => {
                tasks.spawn(deliver(shared.clone(), job, slot));
            }
            // Every handle is gone: finish what is in flight and stop.
            None => {
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
    };
    rx.close();
    let queued = rx.len() + tasks.len();
    if queued > 0 {
        info!(events = queued, ?within, "webhooks: delivering what is queued before stopping");
    }
    let deadline = tokio::time::Instant::now() + within;
    let drained = tokio::time::timeout_at(deadline, async {
        // A slot first, then a job: a job is never held where the deadline could lose it.
        loop {
            let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let Some(job) = rx.recv().await else { break };
            tasks.spawn(deliver(shared.clone(), job, slot));
        }
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let mut left = tasks.len() as u64;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        tasks.abort_all();
        shared.stats.abandoned.fetch_add(left, Ordering::Relaxed);
        warn!(abandoned = left, "webhooks: shutdown deadline passed with events undelivered");
    }
}

/// One event: primary then failover, round after round, until a 2xx or the last round.
async fn deliver(shared: Arc<Shared>, job: Job, _slot: tokio::sync::OwnedSemaphorePermit) {
    let id = new_event_id();
    let data = event_data(&job.event, &id);
    let d = &job.destination;
    let timeout = d.timeout.unwrap_or(shared.config.default_timeout);
    let urls = std::iter::once(d.url.as_str()).chain(d.failover_url.as_deref());
    let mut attempt = 0u32;
    for round in 0..=shared.config.retries {
        if round > 0 {
            tokio::time::sleep(shared.config.backoff(round)).await;
        }
        for url in urls.clone() {
            attempt += 1;
            shared.stats.attempts.fetch_add(1, Ordering::Relaxed);
            match post(&shared, url, &data, attempt, timeout).await {
                Ok(()) => {
                    shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    debug!(event = %id, event_type = job.event.event_type(), %url, attempt, "webhook delivered");
                    return;
                }
                Err(e) => debug!(event = %id, %url, attempt, "webhook attempt failed: {e}"),
            }
        }
    }
    shared.stats.failed.fetch_add(1, Ordering::Relaxed);
    warn!(
        event = %id,
        event_type = job.event.event_type(),
        connection = %job.event.call.connection_id,
        attempts = attempt,
        "webhook undeliverable: every attempt failed"
    );
}

/// One signed POST; `Ok` on a 2xx within `timeout` (the answer's body included, up to 64 KiB,
/// so the connection can serve the next webhook).
async fn post(shared: &Shared, url: &str, data: &str, attempt: u32, timeout: Duration) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let body = envelope(data, attempt, url);
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let signature = sign(&shared.key, timestamp, &body);
    let request = hyper::Request::post(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(AGENT))
        .header(SIGNATURE_HEADER, signature)
        .header(TIMESTAMP_HEADER, timestamp)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let exchange = async {
        let response = shared.client.request(request).await.map_err(|e| format!("{e}"))?;
        let status = response.status();
        // Read (a bounded part of) the answer; an oversized one only costs the connection.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("answered {status}")) }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times() {
        let at =
            |secs: u64, micros: u64| iso8601(UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_517_610_327, 521_992), "2018-02-02T22:25:27.521992Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(iso8601(UNIX_EPOCH - std::time::Duration::from_secs(1)), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn uuid_v4_form() {
        let id = new_event_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_event_id());
    }
}
