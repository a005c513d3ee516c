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
use engine::counters::{Counters, LocalCounters};
use engine::switch::{CallNotice, CallReport, EndedBy};
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

/// Where the call rules' policy comes from: the store, the numbering plan, and the resolver
/// FQDN connections' host names are looked up with (the configured one, else the system's).
pub struct PolicySource {
    pub store: Store,
    pub plan: Arc<NumberingPlan>,
    pub resolver: Option<Arc<engine::Locator>>,
    /// The platform's SIP domain, the hosts that mean the same, and the rate of SIP URI calls
    /// from outside.
    pub uri_calling: trunking::config::UriCallingSettings,
}

impl PolicySource {
    /// The first policy (so the switch never decides with an empty one once configured).
    pub async fn first(&self, snapshot: &SnapshotHandle) -> Policy {
        match self.build(&snapshot.current()).await {
            Ok(p) => p,
            Err(e) => {
                warn!("call policy: {e}; starting with no customers until the configuration loads");
                let config = trunking::config::Config::builder(self.plan.clone()).build();
                Policy { config: Arc::new(config), webhooks: FxHashMap::default(), generation: 0 }
            }
        }
    }

    /// Rebuilds the policy on every configuration change, for as long as the switch runs. A
    /// build that fails (a rate deck unreadable) keeps the previous policy: never a looser one.
    pub async fn keep(self, mut snapshot: SnapshotHandle, policy: watch::Sender<Arc<Policy>>) {
        while let Some(snap) = snapshot.changed().await {
            match self.build(&snap).await {
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

    async fn build(&self, snap: &store::Snapshot) -> Result<Policy, String> {
        let decks = api::policy::load_rate_decks(&self.store, snap).await.map_err(|e| format!("rate decks: {e}"))?;
        let resolved = self.resolve_fqdns(snap).await;
        let (config, warnings) = api::policy::config_from_snapshot_with(
            snap,
            self.plan.clone(),
            &decks,
            &resolved,
            self.uri_calling.clone(),
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
                Ok((host, Some(addrs))) => {
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
    pub counters: Arc<LocalCounters>,
    /// Notices handled (a test waits on it through the metrics).
    pub handled: Arc<AtomicU64>,
}

/// Handles notices until the switch stops sending them.
pub async fn handle_notices(mut rx: mpsc::UnboundedReceiver<CallNotice>, services: CallServices) {
    // What each live call's events need, by call control id.
    let mut calls: HashMap<String, (CallInfo, Option<Arc<Destination>>)> = HashMap::new();
    while let Some(notice) = rx.recv().await {
        match notice {
            CallNotice::Initiated { call_control_id, a_call_id: _, context } => {
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
                send(&services, &context.webhook, &info, EventKind::Initiated, context.started);
                calls.insert(call_control_id, (info, context.webhook));
            }
            CallNotice::Answered { call_control_id, at } => {
                services.live.answered(&call_control_id, unix_ms(at));
                if let Some((info, hook)) = calls.get(&call_control_id) {
                    send(&services, hook, info, EventKind::Answered, at);
                }
            }
            CallNotice::Ended(report) => {
                let id = report.context.call_control_id.clone();
                services.live.remove(&id);
                if let Some((info, hook)) = calls.remove(&id) {
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
                    send(&services, &hook, &info, EventKind::Hangup(hangup), report.ended_at);
                    if let (Some((rate, _)), Some(cost)) = (report.context.rate, report.cost) {
                        let kind = EventKind::Cost(webhooks::CallCost {
                            billed_duration_secs: u64::from(report.billed_sec),
                            rate,
                            cost,
                            currency: "USD".into(),
                        });
                        send(&services, &hook, &info, kind, report.ended_at);
                    }
                }
                if let (Some(profile), Some(cost)) = (&report.context.profile_id, report.cost) {
                    let day = engine::admission::timestamp(report.ended_at).utc_day();
                    Counters::add_spend(&*services.counters, profile, day, cost).await;
                }
                match record_of(*report) {
                    Ok(r) => services.records.submit(r),
                    Err(e) => warn!("call record not made: {e}"),
                }
            }
        }
        services.handled.fetch_add(1, Ordering::Relaxed);
    }
}

fn send(services: &CallServices, hook: &Option<Arc<Destination>>, info: &CallInfo, kind: EventKind, at: SystemTime) {
    if let (Some(w), Some(d)) = (&services.webhooks, hook) {
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

/// The store's record of a call.
fn record_of(r: CallReport) -> Result<CallDetailRecord, String> {
    let started_ms = unix_ms(r.context.started);
    let ts = |t: SystemTime| store::cdr_timestamp(unix_ms(t));
    let attempts = r
        .attempts
        .iter()
        .map(|a| store::RouteAttempt {
            carrier_id: a.route.carrier_id.clone(),
            gateway: a.route.host.clone(),
            port: a.route.port,
            transport: a.route.transport.as_str().to_owned(),
            target: a.target.map(|t| t.to_string()),
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
        id: store::new_cdr_id(started_ms).map_err(|e| e.to_string())?,
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
        rate: r.context.rate.map(|(rate, _)| rate.to_string()),
        cost: r.cost.map(|c| c.to_string()),
        sip_response_code: r.status,
        reason_code: r.reason.map(|c| c.code().to_owned()).filter(|c| !c.is_empty()),
        hangup_source: match r.ended_by {
            EndedBy::Caller => store::HangupSource::Caller,
            EndedBy::Callee => store::HangupSource::Callee,
            EndedBy::System => store::HangupSource::System,
        },
        route_attempts: attempts,
        trace: RawJson::of(&r.context.trace).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::reserved_name;

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
