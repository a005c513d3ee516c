//! What the running platform does around the switch's calls: keeps the call rules' policy
//! current with the stored configuration, and turns the switch's call notices into live calls
//! for the API, webhooks, spend and call records. The switch core only hands notices out; all
//! of this runs in its own tasks, so none of it can slow a call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use api::live_calls::CallDirection;
use api::{LiveCall, LiveCallTable};
use engine::admission::{Direction, Policy};
use engine::counters::{Counters, NodeCounters};
use engine::switch::{CallNotice, CallReport, CallSummary, EndedBy};
use engine::webhooks::{self, CallInfo, Destination, Event, EventKind, Hangup, HangupCause, HangupSource, Webhooks};
use rustc_hash::FxHashMap;
use store::{CallDetailRecord, RawJson, SnapshotHandle, Store};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use trunking::numbering::NumberingPlan;
use trunking::routing::AttemptOutcome;

use crate::records::CdrSink;

/// The connection kinds a customer's webhooks can be set on.
const CONNECTION_KINDS: [&str; 4] = [
    api::policy::CREDENTIAL_CONNECTION_KIND,
    api::policy::IP_CONNECTION_KIND,
    api::policy::FQDN_CONNECTION_KIND,
    api::policy::UAC_CONNECTION_KIND,
];

/// How long one FQDN connection's host name may take to resolve while the policy is built.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often FQDN connections' host names are looked up again: their addresses can change
/// with no change of configuration.
const FQDN_REFRESH: Duration = Duration::from_secs(30);

/// Where the call rules' policy comes from: the store, the numbering plan, and the resolver
/// FQDN connections' host names are looked up with (the configured one, else the system's).
pub struct PolicySource {
    pub store: Store,
    pub plan: Arc<NumberingPlan>,
    pub resolver: Option<Arc<engine::Locator>>,
    /// What the operator configured on the node: SIP URI calling (the platform's domain, the
    /// hosts that mean the same, the rate of calls from outside), the call rate limits.
    pub settings: api::policy::OperatorSettings,
}

/// What a policy was built from that the next build goes on from: the FQDN connections' host
/// names' addresses, and the rate decks as read.
pub struct PolicyInputs {
    resolved: HashMap<String, Vec<IpAddr>>,
    decks: api::policy::RateDeckCache,
}

impl PolicySource {
    /// The first policy (so the switch never decides with an empty one once configured), and
    /// what it was built from that [`PolicySource::keep`] goes on from.
    pub async fn first(&self, snapshot: &SnapshotHandle) -> (Policy, PolicyInputs) {
        let snap = snapshot.current();
        let mut inputs =
            PolicyInputs { resolved: self.resolve_fqdns(&snap).await, decks: api::policy::RateDeckCache::default() };
        let policy = match self.build(&snap, &mut inputs).await {
            Ok(p) => p,
            Err(e) => {
                warn!("call policy: {e}; starting with no customers until the configuration loads");
                let config = trunking::config::Config::builder(self.plan.clone()).build();
                Policy { config: Arc::new(config), webhooks: FxHashMap::default(), generation: 0 }
            }
        };
        (policy, inputs)
    }

    /// Rebuilds the policy on every configuration change, and when an FQDN connection's host
    /// name resolves to other addresses (looked up every [`FQDN_REFRESH`]), for as long as the
    /// switch runs. A build that fails (a rate deck unreadable) keeps the previous policy: never
    /// a looser one. Rate decks whose documents did not change are not read again.
    pub async fn keep(
        self,
        mut snapshot: SnapshotHandle,
        policy: watch::Sender<Arc<Policy>>,
        mut inputs: PolicyInputs,
    ) {
        let mut snap = snapshot.current();
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + FQDN_REFRESH, FQDN_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = snapshot.changed() => {
                    let Some(next) = changed else { return };
                    snap = next;
                    inputs.resolved = self.resolve_fqdns(&snap).await;
                }
                _ = refresh.tick() => {
                    if snap.of_kind(api::policy::FQDN_RECORD_KIND).is_empty() {
                        continue;
                    }
                    let now = self.resolve_fqdns(&snap).await;
                    if now == inputs.resolved {
                        continue;
                    }
                    info!("an FQDN connection's addresses changed; rebuilding the call policy");
                    inputs.resolved = now;
                }
            }
            match self.build(&snap, &mut inputs).await {
                Ok(p) => {
                    if policy.send(Arc::new(p)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(generation = snap.generation, "call policy not rebuilt, keeping the previous one: {e}")
                }
            }
        }
    }

    async fn build(&self, snap: &store::Snapshot, inputs: &mut PolicyInputs) -> Result<Policy, String> {
        let decks = api::policy::load_rate_decks_cached(&self.store, snap, &mut inputs.decks)
            .await
            .map_err(|e| format!("rate decks: {e}"))?;
        let (config, warnings) = api::policy::config_from_snapshot_with(
            snap,
            self.plan.clone(),
            &decks,
            &inputs.resolved,
            self.settings.clone(),
        );
        for w in &warnings {
            warn!("configuration: {w}");
        }
        let mut hooks = FxHashMap::default();
        for kind in CONNECTION_KINDS {
            for r in snap.of_kind(kind) {
                let Ok(doc) = serde_json::from_str::<serde_json::Value>(&r.body) else { continue };
                if let Some(d) = Destination::from_connection(&doc) {
                    hooks.insert(r.id.clone(), Arc::new(d));
                }
            }
        }
        info!(generation = snap.generation, warnings = warnings.len(), "call policy built");
        Ok(Policy { config: Arc::new(config), webhooks: hooks, generation: snap.generation })
    }

    /// The addresses of every FQDN record's host name, looked up concurrently (names that do
    /// not resolve are left out: their connection then matches no source address).
    async fn resolve_fqdns(&self, snap: &store::Snapshot) -> HashMap<String, Vec<IpAddr>> {
        let mut names = std::collections::BTreeSet::new();
        for r in snap.of_kind(api::policy::FQDN_RECORD_KIND) {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&r.body) else { continue };
            if let Some(host) = doc.get("fqdn").and_then(|v| v.as_str()).filter(|h| !reserved_name(h)) {
                names.insert(host.to_owned());
            }
        }
        let mut lookups = tokio::task::JoinSet::new();
        for host in names {
            let resolver = self.resolver.clone();
            lookups.spawn(async move {
                let found = tokio::time::timeout(RESOLVE_TIMEOUT, addresses_of(host.clone(), resolver)).await;
                (host, found.ok().flatten())
            });
        }
        let mut out = HashMap::new();
        while let Some(done) = lookups.join_next().await {
            match done {
                Ok((host, Some(mut addrs))) => {
                    // In one order, so a later lookup that only rotates them is no change.
                    addrs.sort_unstable();
                    addrs.dedup();
                    out.insert(host, addrs);
                }
                Ok((host, None)) => {
                    warn!(fqdn = host, "FQDN does not resolve; its connection matches no address for now")
                }
                Err(e) => warn!("FQDN lookup task: {e}"),
            }
        }
        out
    }
}

/// A host name's addresses: A/AAAA through the configured resolver (a SIP URI with a port
/// asks for nothing else), else the system's.
async fn addresses_of(host: String, resolver: Option<Arc<engine::Locator>>) -> Option<Vec<IpAddr>> {
    let name = host.trim_end_matches('.');
    match resolver {
        Some(locator) => {
            let uri = format!("sip:{name}:5060");
            let Ok(sip::Uri::Sip(parsed)) = sip::uri::parse_uri(&uri) else { return None };
            let targets = locator.locate(&parsed).await.ok()?;
            Some(targets.into_iter().map(|t| t.addr.ip()).collect())
        }
        None => Some(tokio::net::lookup_host((name, 0)).await.ok()?.map(|a| a.ip()).collect()),
    }
}

/// Sends the switch the UAC connections to keep registered: now, and on every configuration
/// change. A connection whose settings cannot be read is left out (and said so).
pub async fn keep_uac_connections(mut snapshot: SnapshotHandle, control: mpsc::Sender<engine::switch::Control>) {
    let mut snap = snapshot.current();
    loop {
        let mut wanted = Vec::new();
        for r in snap.of_kind(api::policy::UAC_CONNECTION_KIND) {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&r.body) else { continue };
            if doc.get("active").and_then(|v| v.as_bool()) == Some(false) {
                continue;
            }
            match engine::uac::UacSettings::from_document(&doc) {
                Ok(settings) => wanted.push(engine::switch::UacConnection {
                    connection_id: r.id.clone(),
                    account_id: r.account_id.clone(),
                    settings,
                }),
                Err(e) => warn!(connection = %r.id, "UAC connection not registered: {e}"),
            }
        }
        if control.send(engine::switch::Control::UacConnections(wanted)).await.is_err() {
            return;
        }
        match snapshot.changed().await {
            Some(next) => snap = next,
            None => return,
        }
    }
}

/// Names RFC 2606 and RFC 6761 reserve (`.test`, `.example`, `.invalid`, `.localhost`,
/// `example.com` ...): they never name a customer's host, so they are never looked up (no query
/// leaves the machine for them).
fn reserved_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let under = |d: &str| h == d || h.ends_with(&format!(".{d}"));
    ["test", "example", "invalid", "localhost", "example.com", "example.net", "example.org"].into_iter().any(under)
}

/// Where call notices go.
pub struct CallServices {
    pub live: Arc<LiveCallTable>,
    pub webhooks: Option<Webhooks>,
    pub records: CdrSink,
    pub counters: Arc<NodeCounters>,
    /// Notices handled (a test waits on it through the metrics).
    pub handled: Arc<AtomicU64>,
}

/// Handles notices until the switch stops sending them.
pub async fn handle_notices(mut rx: mpsc::UnboundedReceiver<CallNotice>, services: CallServices) {
    // What each live call's events need (only for a call whose events go somewhere), and its
    // record's id (journaled while it lives), by call control id.
    type LiveCallNotes = (Option<(CallInfo, Arc<Destination>)>, Option<String>);
    let mut calls: FxHashMap<String, LiveCallNotes> = FxHashMap::default();
    while let Some(notice) = rx.recv().await {
        match notice {
            CallNotice::Initiated { call_control_id, a_call_id, context } => {
                let record_id = Some(store::new_cdr_id(unix_ms(context.started)));
                if let Some(record_id) = record_id.as_ref().filter(|_| services.records.journals()) {
                    match opening_record(record_id.clone(), a_call_id, &context) {
                        Ok(r) => services.records.call_opened(
                            r,
                            context.rate.map(|(_, increment)| increment.text()),
                            context.started,
                        ),
                        Err(e) => warn!(call = %call_control_id, "open call not journaled: {e}"),
                    }
                }
                let events = context.webhook.clone().filter(|_| services.webhooks.is_some()).map(|hook| {
                    let info = CallInfo {
                        call_control_id: call_control_id.clone(),
                        call_leg_id: call_control_id.clone(),
                        call_session_id: call_control_id.clone(),
                        connection_id: context.connection_id.clone(),
                        from: context.from.clone(),
                        to: context.to.clone(),
                        direction: match context.direction {
                            Direction::Outbound => webhooks::Direction::Outgoing,
                            Direction::Inbound => webhooks::Direction::Incoming,
                        },
                        start_time: context.started,
                    };
                    (info, hook)
                });
                services.live.insert(LiveCall {
                    call_control_id: call_control_id.clone(),
                    call_leg_id: call_control_id.clone(),
                    call_session_id: call_control_id.clone(),
                    connection_id: context.connection_id.clone(),
                    account_id: context.account_id.clone(),
                    from: context.from.clone(),
                    to: context.to.clone(),
                    direction: match context.direction {
                        Direction::Outbound => CallDirection::Outgoing,
                        Direction::Inbound => CallDirection::Incoming,
                    },
                    started_at_ms: unix_ms(context.started),
                    answered_at_ms: None,
                    client_state: None,
                });
                send(&services, &events, EventKind::Initiated, context.started);
                calls.insert(call_control_id, (events, record_id));
            }
            CallNotice::Answered { call_control_id, at } => {
                services.live.answered(&call_control_id, unix_ms(at));
                if let Some((events, record_id)) = calls.get(&call_control_id) {
                    send(&services, events, EventKind::Answered, at);
                    if let Some(record_id) = record_id {
                        services.records.call_answered(record_id, at);
                    }
                }
            }
            CallNotice::Ended(report) => {
                let id = report.context.call_control_id.clone();
                services.live.remove(&id);
                let mut record_id = None;
                if let Some((events, journaled_id)) = calls.remove(&id) {
                    record_id = journaled_id;
                    let hangup = Hangup {
                        cause: hangup_cause(&report),
                        source: match report.ended_by {
                            EndedBy::Caller => HangupSource::Caller,
                            EndedBy::Callee => HangupSource::Callee,
                            EndedBy::System => HangupSource::Unknown,
                        },
                        sip_status: (report.status != 200 || report.answered_at.is_none()).then_some(report.status),
                        end_time: report.ended_at,
                    };
                    send(&services, &events, EventKind::Hangup(hangup), report.ended_at);
                    if let (Some((rate, _)), Some(cost)) = (report.context.rate, report.cost) {
                        let kind = EventKind::Cost(webhooks::CallCost {
                            billed_duration_secs: u64::from(report.billed_sec),
                            rate,
                            cost,
                            currency: "USD".into(),
                        });
                        send(&services, &events, kind, report.ended_at);
                    }
                }
                if let (Some(profile), Some(cost)) = (&report.context.profile_id, report.cost) {
                    let day = engine::admission::timestamp(report.ended_at).utc_day();
                    Counters::add_spend(&*services.counters, profile, day, cost).await;
                }
                // A call refused before it started has no id yet.
                let record_id = match record_id {
                    Some(id) => Ok(id),
                    None => Ok(store::new_cdr_id(unix_ms(report.context.started))),
                };
                match record_id.and_then(|id| record_of(*report, id)) {
                    Ok(r) => services.records.submit(r),
                    Err(e) => warn!("call record not made: {e}"),
                }
            }
        }
        services.handled.fetch_add(1, Ordering::Relaxed);
    }
}

fn send(services: &CallServices, events: &Option<(CallInfo, Arc<Destination>)>, kind: EventKind, at: SystemTime) {
    if let (Some(w), Some((info, d))) = (&services.webhooks, events) {
        w.enqueue(d.clone(), Event { occurred_at: at, call: info.clone(), kind });
    }
}

fn hangup_cause(r: &CallReport) -> HangupCause {
    match (r.answered_at, r.ended_by) {
        (Some(_), EndedBy::System) => HangupCause::TimeLimit,
        (Some(_), _) => HangupCause::NormalClearing,
        (None, EndedBy::Caller) => HangupCause::OriginatorCancel,
        (None, _) => HangupCause::for_final_status(r.status),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A call's record as known when it starts, as it would stand if the node were lost at once
/// (what the reaper then writes: unanswered, the caller timed out, ended by the system). The
/// rate is the one decided at the start; a forwarded call billed at its forwarding leg's rate
/// is known only when it ends.
fn opening_record(id: String, a_call_id: String, s: &CallSummary) -> Result<CallDetailRecord, String> {
    let started = store::cdr_timestamp(unix_ms(s.started));
    Ok(CallDetailRecord {
        id,
        account_id: s.account_id.clone(),
        connection_id: s.connection_id.clone(),
        outbound_voice_profile_id: s.profile_id.clone(),
        direction: match s.direction {
            Direction::Outbound => store::Direction::Outbound,
            Direction::Inbound => store::Direction::Inbound,
        },
        a_leg_call_id: a_call_id,
        b_leg_call_id: None,
        from_received: s.from.clone(),
        to_received: s.to_received.clone(),
        from_sent: None,
        to_sent: None,
        started_at: started.clone(),
        answered_at: None,
        ended_at: started,
        call_sec: 0,
        billed_sec: 0,
        rate: s.rate.map(|(rate, _)| trunking::rating::decimal_text(&rate)),
        cost: None,
        sip_response_code: store::LOST_UNANSWERED_STATUS,
        reason_code: None,
        hangup_source: store::HangupSource::System,
        route_attempts: Vec::new(),
        trace: RawJson::from_text("[]".to_owned()).map_err(|e| e.to_string())?,
    })
}

/// The store's record of a call, under `id` (the one journaled when it started).
fn record_of(r: CallReport, id: String) -> Result<CallDetailRecord, String> {
    let ts = |t: SystemTime| store::cdr_timestamp(unix_ms(t));
    let attempts = r
        .attempts
        .iter()
        .map(|a| store::RouteAttempt {
            carrier_id: a.route.carrier_id.clone(),
            gateway: a.route.host.clone(),
            port: a.route.port,
            transport: a.route.transport.as_str().to_owned(),
            target: a.target.map(|t| {
                let mut s = String::with_capacity(21);
                sip::message::push_socket_addr(&mut s, t);
                s
            }),
            outcome: match a.outcome {
                AttemptOutcome::Response(code) => store::AttemptOutcome::Response { sip_response_code: code },
                AttemptOutcome::Timeout => store::AttemptOutcome::Timeout,
                AttemptOutcome::TransportError => store::AttemptOutcome::TransportError,
            },
            started_at: ts(a.started),
            ended_at: ts(a.ended),
        })
        .collect();
    Ok(CallDetailRecord {
        id,
        account_id: r.context.account_id,
        connection_id: r.context.connection_id,
        outbound_voice_profile_id: r.context.profile_id,
        direction: match r.context.direction {
            Direction::Outbound => store::Direction::Outbound,
            Direction::Inbound => store::Direction::Inbound,
        },
        a_leg_call_id: r.a_call_id,
        b_leg_call_id: r.b_call_id,
        from_received: r.context.from_received,
        to_received: r.context.to_received,
        from_sent: r.from_sent,
        to_sent: r.to_sent,
        started_at: ts(r.context.started),
        answered_at: r.answered_at.map(ts),
        ended_at: ts(r.ended_at),
        call_sec: r.call_sec,
        billed_sec: r.billed_sec,
        rate: r.context.rate.map(|(rate, _)| trunking::rating::decimal_text(&rate)),
        cost: r.cost.map(|c| trunking::rating::decimal_text(&c)),
        sip_response_code: r.status,
        reason_code: r.reason.map(|c| c.code().to_owned()).filter(|c| !c.is_empty()),
        hangup_source: match r.ended_by {
            EndedBy::Caller => store::HangupSource::Caller,
            EndedBy::Callee => store::HangupSource::Callee,
            EndedBy::System => store::HangupSource::System,
        },
        route_attempts: attempts,
        trace: RawJson::of_trace(&r.context.trace),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::UNIX_EPOCH;

    use engine::admission::CallContext;
    use store::Repository;
    use trunking::rating::{BillingIncrement, parse_amount};

    use crate::records::{CdrWriterConfig, start, start_journal};

    /// Polls `done` (a store read) until it holds, failing after 10 s.
    async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
        let start = std::time::Instant::now();
        while !done().await {
            assert!(start.elapsed() < Duration::from_secs(10), "waited 10 s for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A call's notices through `handle_notices` with a journaling sink: journaled at start
    /// with what its record needs, updated at answer, and its record stored under the journaled
    /// id, which takes its journal row with it.
    #[tokio::test]
    async fn a_call_is_journaled_while_it_lives_under_its_records_id() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let base = std::env::temp_dir().join(format!("ot_calls_journal_{}_{nanos}", std::process::id()));
        let store = Store::open(&format!("sqlite://{}.db", base.display())).await.unwrap();
        let journal = start_journal(store.clone(), "node-t".into(), Duration::from_secs(30));
        let config = CdrWriterConfig {
            flush_interval: Duration::from_millis(20),
            ..CdrWriterConfig::new(base.with_extension("spool"))
        };
        let (records, writer) = start(store.clone(), config);
        let handled = Arc::new(AtomicU64::new(0));
        let services = CallServices {
            live: Arc::new(LiveCallTable::new()),
            webhooks: None,
            records: journal.journaling(records),
            counters: Arc::new(engine::counters::LocalCounters::new().into()),
            handled: handled.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(handle_notices(rx, services));

        let started = UNIX_EPOCH + Duration::from_millis(1_767_312_000_000);
        let rate = (parse_amount("0.0100").unwrap(), BillingIncrement::new(6, 6).unwrap());
        let summary = CallSummary {
            direction: Direction::Outbound,
            account_id: "acct".into(),
            connection_id: "conn".into(),
            from: "+12125551234".into(),
            to: "+12125556789".into(),
            started,
            webhook: None,
            profile_id: Some("ovp".into()),
            to_received: "2125556789".into(),
            rate: Some(rate),
        };
        let notice = CallNotice::Initiated {
            call_control_id: "cc-1".into(),
            a_call_id: "a-1@192.0.2.10".into(),
            context: Box::new(summary),
        };
        tx.send(notice).unwrap();
        tx.send(CallNotice::Answered { call_control_id: "cc-1".into(), at: started + Duration::from_secs(2) }).unwrap();
        until("the call journaled", || async { store.open_calls().await.unwrap().len() == 1 }).await;
        let open = store.open_calls().await.unwrap().remove(0);
        assert_eq!(open.node_id, "node-t");
        assert_eq!(open.billing_increment.as_deref(), Some("6/6"));
        assert_eq!(open.answered_at_ms, Some(1_767_312_002_000));
        let r = &open.record;
        assert_eq!((r.account_id.as_str(), r.connection_id.as_str()), ("acct", "conn"));
        assert_eq!(r.outbound_voice_profile_id.as_deref(), Some("ovp"));
        assert_eq!((r.from_received.as_str(), r.to_received.as_str()), ("+12125551234", "2125556789"));
        assert_eq!((r.a_leg_call_id.as_str(), r.rate.as_deref()), ("a-1@192.0.2.10", Some("0.0100")));
        assert_eq!(r.started_at, "2026-01-02T00:00:00.000Z");

        let context = CallContext {
            direction: Direction::Outbound,
            call_control_id: "cc-1".into(),
            account_id: "acct".into(),
            connection_id: "conn".into(),
            profile_id: Some("ovp".into()),
            from_received: "+12125551234".into(),
            to_received: "2125556789".into(),
            destination: Some("+12125556789".into()),
            rate: Some(rate),
            webhook: None,
            started,
            trace: trunking::Trace::new(),
        };
        let report = CallReport {
            context,
            a_call_id: "a-1@192.0.2.10".into(),
            b_call_id: Some("b-1@opentrunk".into()),
            from_sent: Some("+12125551234".into()),
            to_sent: Some("+12125556789".into()),
            answered_at: Some(started + Duration::from_secs(2)),
            ended_at: started + Duration::from_secs(62),
            call_sec: 60,
            billed_sec: 60,
            cost: parse_amount("0.0100"),
            status: 200,
            reason: None,
            ended_by: EndedBy::Caller,
            attempts: Vec::new(),
        };
        tx.send(CallNotice::Ended(Box::new(report))).unwrap();
        let id = open.record.id.clone();
        until("the call's record", || async { store.get_cdr(&id).await.unwrap().is_some() }).await;
        assert!(store.open_calls().await.unwrap().is_empty(), "the journal row went with the record");
        let stored = store.get_cdr(&id).await.unwrap().unwrap();
        assert_eq!((stored.call_sec, stored.billed_sec, stored.sip_response_code), (60, 60, 200));

        drop(tx);
        task.await.unwrap();
        assert_eq!(handled.load(Ordering::Relaxed), 3);
        assert_eq!(writer.shutdown().await.journaled, 1, "the answer folded into the start");
        journal.shutdown().await;
        assert!(store.nodes().await.unwrap().is_empty(), "a node stopping with no call open leaves");
    }

    #[test]
    fn reserved_names_are_never_looked_up() {
        for name in ["pbx.example.com", "EXAMPLE.org.", "a.b.test", "x.invalid", "localhost", "host.example"] {
            assert!(reserved_name(name), "{name}");
        }
        for name in ["pbx.customer.com", "examplecom.net", "sip.telnyx.com", "testing.io"] {
            assert!(!reserved_name(name), "{name}");
        }
    }
}
