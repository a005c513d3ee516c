//! Call admission: what happens to a new customer INVITE before any carrier hears of it. The
//! rules are `trunking`'s (identify, decide, which call rate buckets a call takes from); this
//! adds what they leave to the engine: the clock, fetching the counters a decision reads, the
//! call rate take and the channel take under the decision's limits (the steps that may wait,
//! on a shared counter backend), and locating each route's gateway (RFC 3263). The switch core
//! hands an [`AdmissionRequest`] out and takes the [`Admission`] back; it never waits in
//! between.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use sip::Message;
use sip::headers::HeaderName;
use tokio::sync::watch;
use trunking::call_rate::{self, CallOrigin, CallRateBucket};
use trunking::catalog::Reason;
use trunking::config::SipUriCalling;
use trunking::config::{Config, Id};
use trunking::digest::{DigestRealm, ReplayGuard};
use trunking::identify::{CallFacts, Identification, identify};
use trunking::inbound::{self, InboundDecision, InboundRequest, InboundRoute, NoRegistrations, Registrations};
use trunking::outbound::{Caller, ChannelLimits, OutboundDecision, OutboundRequest, Scope, decide, usage_reads};
use trunking::rating::BillingIncrement;
use trunking::registrar::FailedAuthLimiter;
use trunking::subdomain::{self, SubdomainDecision, SubdomainRequest};
use trunking::time::Timestamp;
use trunking::trace::Trace;
use trunking::uri_calling::{self, Callee, UriCallDecision, UriCallRequest};

use crate::call::RouteTarget;
use crate::counters::{ChannelLease, Counters};
use crate::dns::{Locator, Target};
use crate::transport::TransportKind;
use crate::webhooks::Destination;

/// What the switch decides calls with: the rules' configuration and each connection's webhook
/// settings, swapped as a whole when the stored configuration changes.
#[derive(Debug)]
pub struct Policy {
    pub config: Arc<Config>,
    /// Connection id to its webhook destination (connections with a `webhook_event_url`).
    pub webhooks: FxHashMap<String, Arc<Destination>>,
    /// The stored configuration's generation this was built from.
    pub generation: u64,
}

/// A new customer INVITE waiting for its admission.
#[derive(Debug)]
pub struct AdmissionRequest {
    /// The switch's name for the call.
    pub id: u64,
    pub invite: Message,
    pub source: SocketAddr,
    pub transport: TransportKind,
    pub received: SystemTime,
    /// The identifier the API and webhooks know the call by.
    pub call_control_id: String,
}

/// Which way a call goes, seen from the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A customer's call out to the carriers.
    Outbound,
    /// A carrier's call to a customer's number.
    Inbound,
}

/// Who the call belongs to and what it is worth: what its record and events are made of.
#[derive(Debug)]
pub struct CallContext {
    pub direction: Direction,
    pub call_control_id: String,
    pub account_id: String,
    pub connection_id: String,
    pub profile_id: Option<String>,
    /// The calling and called party as the customer sent them (From and Request-URI users).
    pub from_received: String,
    pub to_received: String,
    /// The destination as E.164 (or the emergency number), when the decision got that far.
    pub destination: Option<String>,
    /// Per-minute rate and billing increment, when rated.
    pub rate: Option<(Decimal, BillingIncrement)>,
    pub webhook: Option<Arc<Destination>>,
    pub started: SystemTime,
    /// The rules' decision trace.
    pub trace: Trace,
}

/// An admitted call: its routes, where each gateway is, and the channels it holds.
#[derive(Debug)]
pub struct AdmittedCall {
    pub context: CallContext,
    pub routes: Vec<RouteTarget>,
    /// `targets[i]`: where `routes[i]`'s INVITE goes; `None` when its name did not resolve
    /// (the attempt then fails as a transport error and the call fails over).
    pub targets: Vec<Option<Target>>,
    /// The caller number presented on the B-leg, and whether anonymously.
    pub caller: String,
    pub anonymous: bool,
    pub lease: ChannelLease,
    /// Header fields for the B-leg INVITE besides the call's own.
    pub b_headers: Vec<(HeaderName, String)>,
    /// The 1xx and 2xx timeouts when the rules set them (an inbound connection's own), else the
    /// switch's.
    pub timeouts: Option<(std::time::Duration, std::time::Duration)>,
    /// The first this many routes ring at once (a connection's registered contacts with
    /// simultaneous ringing).
    pub ring_together: usize,
    /// Call forwarding: the routes from this index on are the outbound call to the forwarding
    /// number, billed at this rate when one of them answers.
    pub forward: Option<Forwarding>,
}

/// A forwarding leg as the outbound rules decided it: its routes and where each goes, its rate,
/// the channels it must take, its profile.
type ForwardingLeg =
    (Vec<RouteTarget>, Vec<Option<Target>>, Option<(Decimal, BillingIncrement)>, ChannelLimits, Option<String>);

/// A call addressed to one connection by name (SIP URI or subdomain), as its decision gave it.
struct ConnectionCall<'a> {
    /// The caller's account when the caller is one of the platform's connections.
    caller_account: Option<&'a Id>,
    account_id: &'a Id,
    connection_id: &'a Id,
    user: &'a str,
    rate: Option<(Decimal, BillingIncrement)>,
    channels: &'a ChannelLimits,
    routes: &'a [InboundRoute],
    timeouts: (std::time::Duration, std::time::Duration),
    simultaneous_ringing: bool,
}

/// The outbound leg of a forwarded call; also an on-net call's delivery (from route 0: every
/// route), holding the called connection's inbound channels.
#[derive(Debug)]
pub struct Forwarding {
    pub from_route: usize,
    pub rate: Option<(Decimal, BillingIncrement)>,
    /// The outbound voice profile the forwarded leg went out under (its spend).
    pub profile_id: Option<String>,
    /// The outbound channels, taken at once when the call forwards always (on failure, the
    /// limits were checked when the call came in).
    pub lease: Option<ChannelLease>,
}

/// How a new call is answered.
#[derive(Debug)]
pub enum Admission {
    /// Refused with this response (and these extra headers: a digest challenge). `context` is
    /// set when the call was identified: it is then recorded (a CDR of a refused call).
    Refuse {
        status: u16,
        phrase: &'static str,
        reason: Option<Reason>,
        headers: Vec<(HeaderName, String)>,
        context: Option<Box<CallContext>>,
    },
    Admit(Box<AdmittedCall>),
}

impl Admission {
    /// Refused with `reason`'s response; `context` when the call was identified (recorded).
    pub fn refuse(reason: Reason, context: Option<CallContext>) -> Admission {
        let r = reason.response();
        Admission::Refuse {
            status: r.status,
            phrase: r.phrase,
            reason: Some(reason),
            headers: Vec::new(),
            context: context.map(Box::new),
        }
    }
}

/// Admits calls: shared by every admission in flight (each may wait on the counters).
pub struct Admitter<C> {
    policy: watch::Receiver<Arc<Policy>>,
    counters: Arc<C>,
    realm: DigestRealm,
    replay: Mutex<ReplayGuard>,
    /// Failed digest answers per source address and per user name: a scanner guessing
    /// passwords is turned away for a while (`403` D25 with `Retry-After`), not answered at line
    /// rate.
    limiter: Mutex<FailedAuthLimiter>,
    rotation: AtomicU64,
    locator: Option<Locator>,
    registrar: Option<Arc<crate::registrar::Registrar>>,
}

/// Nonces that may be answered at most once are remembered this many at a time.
const REPLAY_CAPACITY: usize = 65_536;

impl<C: Counters> Admitter<C> {
    /// `locator`: RFC 3263 for gateways named by DNS; without it only IP gateways are reachable.
    pub fn new(
        policy: watch::Receiver<Arc<Policy>>,
        counters: Arc<C>,
        realm: DigestRealm,
        locator: Option<Locator>,
    ) -> Admitter<C> {
        Admitter {
            policy,
            counters,
            realm,
            replay: Mutex::new(ReplayGuard::new(REPLAY_CAPACITY)),
            limiter: Mutex::new(FailedAuthLimiter::default()),
            rotation: AtomicU64::new(0),
            locator,
            registrar: None,
        }
    }

    /// Where inbound calls find a credential connection's registered contacts.
    pub fn with_registrar(mut self, registrar: Arc<crate::registrar::Registrar>) -> Admitter<C> {
        self.registrar = Some(registrar);
        self
    }

    pub fn counters(&self) -> &Arc<C> {
        &self.counters
    }

    /// The generation of the policy calls are decided with now.
    pub fn generation(&self) -> u64 {
        self.policy.borrow().generation
    }

    /// Decides one INVITE: a carrier's (by its source address) is an inbound call, anything
    /// else a customer's outbound call.
    pub async fn admit(&self, req: AdmissionRequest) -> Admission {
        let policy = self.policy.borrow().clone();
        if policy.config.carrier_at(req.source.ip()).is_some() {
            return self.admit_inbound(&policy, req).await;
        }
        if let Some(label) = subdomain::subdomain_of(&policy.config, &req.invite) {
            return self.admit_subdomain(&policy, req, &label).await;
        }
        match uri_calling::callee(&policy.config, &req.invite) {
            Callee::NotUriCall => {}
            callee => return self.admit_uri_call(&policy, req, callee).await,
        }
        let config = &*policy.config;
        let now = timestamp(req.received);
        let facts = CallFacts::of(&req.invite, req.source.ip());
        let mut trace = Trace::new();
        let user = facts.credentials.as_ref().and_then(trunking::digest::username).unwrap_or_default().into_owned();
        let source = Some(req.source.ip());
        let cooling = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).cooling_down(source, &user, now);
        if let Some(secs) = cooling.filter(|_| facts.credentials.is_some()) {
            let r = Reason::D25.response();
            let headers = vec![(HeaderName::RetryAfter, secs.to_string())];
            return Admission::Refuse {
                status: r.status,
                phrase: r.phrase,
                reason: Some(Reason::D25),
                headers,
                context: None,
            };
        }
        let identification = {
            let mut replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
            replay.prune(now);
            identify(config, &facts, &self.realm, &mut replay, now, &mut trace)
        };
        if facts.credentials.is_some() {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            match identification {
                Identification::Rejected(Reason::D25) => limiter.failed(source, &user, now),
                Identification::Identified(_) => limiter.succeeded(&user),
                _ => {}
            }
        }
        let identified = match identification {
            Identification::Identified(i) => i,
            Identification::Challenge { stale } => {
                let r = Reason::ProxyAuthenticationRequired.response();
                let headers =
                    self.realm.challenges(now, stale).into_iter().map(|c| (HeaderName::ProxyAuthenticate, c)).collect();
                return Admission::Refuse { status: r.status, phrase: r.phrase, reason: None, headers, context: None };
            }
            // Not one of our customers' calls: nobody to record it for.
            Identification::Rejected(reason) => return Admission::refuse(reason, None),
        };
        let connection = config.connection(identified.connection);
        let mut context = CallContext {
            direction: Direction::Outbound,
            call_control_id: req.call_control_id.clone(),
            account_id: connection.account_id.to_string(),
            connection_id: connection.id.to_string(),
            profile_id: connection.outbound_voice_profile_id.as_ref().map(ToString::to_string),
            from_received: from_user(&req.invite),
            to_received: facts.dial_string.to_owned(),
            destination: None,
            rate: None,
            webhook: policy.webhooks.get(connection.id.as_ref()).cloned(),
            started: req.received,
            trace: Trace::new(),
        };
        // A shared backend answers the decision's reads from a view: make them current first.
        if let Some(reads) = usage_reads(config, &facts, identified, now) {
            self.counters.prefetch(&reads).await;
        }
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let decision = decide(
            config,
            &OutboundRequest { message: &req.invite, facts: &facts, identified, usage: &*self.counters, rotation, now },
            &mut trace,
        );
        let call = match decision {
            OutboundDecision::Route(call) => call,
            OutboundDecision::Reject(reason) => return refused(context, trace, reason),
        };
        context.profile_id = call.profile_id.as_ref().map(ToString::to_string);
        context.destination = call.destination.e164.as_ref().map(ToString::to_string);
        context.rate = call.rate.map(|(rate, inc)| (rate.per_minute, inc));
        let origin =
            CallOrigin::Customer { source: req.source.ip(), account: &call.account_id, emergency: call.is_emergency() };
        let buckets = config.call_rate_limits().buckets(origin);
        if let Err(reason) = self.take_call_rate(&buckets, now, &mut trace).await {
            return refused(context, trace, reason);
        }
        let lease = match self.take(&call.channels, &req.call_control_id).await {
            Ok(lease) => lease,
            Err(reason) => return refused(context, trace, reason),
        };
        if let (Some(profile), Some(dest)) = (&context.profile_id, &context.destination) {
            self.counters.record_call_to(profile, dest, now).await;
        }
        let caller = match &call.caller {
            Caller::Number(n) => n.to_string(),
            Caller::AsSent(s) => s.clone(),
        };
        let anonymous = call.anonymous;
        // One of the platform's own numbers: delivered on-net, straight to its connection.
        let on_net = context.destination.as_deref().and_then(|dest| {
            let registered = self.registrations();
            inbound::on_net(config, dest, registered, rotation, &mut trace)
        });
        if let Some(on_net) = on_net {
            drop(call);
            let on = match on_net {
                Ok(on) => on,
                Err(reason) => return refused(context, trace, reason),
            };
            let callee_lease = match self.take(&on.channels, &req.call_control_id).await {
                Ok(lease) => lease,
                Err(reason) => return refused(context, trace, reason),
            };
            let (routes, targets) = self.deliveries(&on.routes, &on.connection_id, &on.dnis).await;
            let ring_together = ring_together(on.simultaneous_ringing, &on.routes, &routes);
            let leg = Forwarding {
                from_route: 0,
                rate: context.rate,
                profile_id: context.profile_id.clone(),
                lease: Some(callee_lease),
            };
            context.trace = trace;
            return Admission::Admit(Box::new(AdmittedCall {
                context,
                routes,
                targets,
                caller,
                anonymous,
                lease,
                b_headers: Vec::new(),
                timeouts: Some((on.timeout_1xx, on.timeout_2xx)),
                ring_together,
                forward: Some(leg),
            }));
        }
        let routes = RouteTarget::from_plan(&call.routes);
        drop(call);
        let mut targets = Vec::with_capacity(routes.len());
        for route in &routes {
            targets.push(self.locate(route).await);
        }
        context.trace = trace;
        Admission::Admit(Box::new(AdmittedCall {
            context,
            routes,
            targets,
            caller,
            anonymous,
            lease,
            b_headers: Vec::new(),
            timeouts: None,
            ring_together: 0,
            forward: None,
        }))
    }

    /// A carrier's call to one of the platform's numbers.
    async fn admit_inbound(&self, policy: &Policy, req: AdmissionRequest) -> Admission {
        let now = timestamp(req.received);
        let mut trace = Trace::new();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let decision = inbound::decide(
            &policy.config,
            &InboundRequest {
                message: &req.invite,
                source: req.source.ip(),
                registered: self.registrations(),
                rotation,
                now,
            },
            &mut trace,
        );
        let call = match decision {
            InboundDecision::Route(call) => call,
            // Not yet any customer's call: nobody to record it for.
            InboundDecision::Reject(reason) => return Admission::refuse(reason, None),
        };
        let mut context = CallContext {
            direction: Direction::Inbound,
            call_control_id: req.call_control_id.clone(),
            account_id: call.account_id.to_string(),
            connection_id: call.connection_id.to_string(),
            profile_id: None,
            from_received: from_user(&req.invite),
            to_received: match req.invite.request_uri() {
                Some(Ok(uri)) => uri.user().unwrap_or_default().to_owned(),
                _ => String::new(),
            },
            destination: Some(call.number.to_string()),
            rate: None,
            webhook: policy.webhooks.get(call.connection_id.as_ref()).cloned(),
            started: req.received,
            trace: Trace::new(),
        };
        let lease = match self.take(&call.channels, &req.call_control_id).await {
            Ok(lease) => lease,
            Err(reason) => return refused(context, trace, reason),
        };
        let (mut routes, mut targets) = self.deliveries(&call.routes, &call.connection_id, &call.dnis).await;
        let b_headers = call.p_asserted_identity.iter().map(|v| (HeaderName::PAssertedIdentity, v.clone())).collect();
        let ring_together = ring_together(call.simultaneous_ringing, &call.routes, &routes);
        let mut forward = None;
        let forwards_to = call.routes.iter().find_map(|r| match r {
            InboundRoute::Forward { number } => Some(number.clone()),
            _ => None,
        });
        if let Some(number) = forwards_to {
            let always = call.forwarding == Some(trunking::routing::ForwardingType::Always);
            match self.forwarding(policy, &call, &number, &req, &mut trace).await {
                Ok((f_routes, f_targets, rate, limits, profile_id)) => {
                    let lease = if always {
                        match self.take(&limits, &req.call_control_id).await {
                            Ok(l) => Some(l),
                            Err(reason) => return refused(context, trace, reason),
                        }
                    } else {
                        None
                    };
                    forward = Some(Forwarding { from_route: routes.len(), rate, profile_id, lease });
                    routes.extend(f_routes);
                    targets.extend(f_targets);
                }
                // Forwarding is refused by the outbound rules: the call ends where the
                // connection's routes do (the reason is in the trace).
                Err(reason) if always || routes.is_empty() => return refused(context, trace, reason),
                Err(_) => {}
            }
        }
        context.trace = trace;
        Admission::Admit(Box::new(AdmittedCall {
            context,
            routes,
            targets,
            caller: call.ani.clone(),
            anonymous: false,
            lease,
            b_headers,
            timeouts: Some((call.timeout_1xx, call.timeout_2xx)),
            ring_together,
            forward,
        }))
    }

    /// The outbound call forwarding makes: the called connection calls `number` through the
    /// outbound rules (its profile, limits, rating, carriers), presenting the original caller.
    async fn forwarding(
        &self,
        policy: &Policy,
        call: &trunking::inbound::InboundCall,
        number: &str,
        req: &AdmissionRequest,
        trace: &mut Trace,
    ) -> Result<ForwardingLeg, Reason> {
        let config = &*policy.config;
        let connection = config.connection_by_id(&call.connection_id).ok_or(Reason::D21)?;
        let caller = call.caller.as_ref().map_or_else(|| call.ani.clone(), ToString::to_string);
        let mut invite = Message::new_request("INVITE", &format!("sip:{number}@{}", config.uri_calling().domain));
        invite.push_header(HeaderName::From, &format!("<sip:{caller}@{}>;tag=fwd", config.uri_calling().domain));
        invite.push_header(HeaderName::To, &format!("<sip:{number}@{}>", config.uri_calling().domain));
        let facts = CallFacts::of(&invite, req.source.ip());
        let identified = trunking::identify::Identified {
            connection,
            method: trunking::identify::AuthMethod::Address,
            prefix_len: 0,
        };
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let (routes, rate, limits, profile_id) = {
            let request = OutboundRequest {
                message: &invite,
                facts: &facts,
                identified,
                usage: &*self.counters,
                rotation,
                now: timestamp(req.received),
            };
            let out = match decide(config, &request, trace) {
                OutboundDecision::Route(out) => out,
                OutboundDecision::Reject(reason) => return Err(reason),
            };
            let rate = out.rate.map(|(r, inc)| (r.per_minute, inc));
            (
                RouteTarget::from_plan(&out.routes),
                rate,
                out.channels.clone(),
                out.profile_id.as_ref().map(ToString::to_string),
            )
        };
        let mut targets = Vec::with_capacity(routes.len());
        for r in &routes {
            targets.push(self.locate(r).await);
        }
        Ok((routes, targets, rate, limits, profile_id))
    }

    /// Who places a call to one of the platform's own addresses (a SIP URI or subdomain): the
    /// caller's connection when identification recognises it, else `None` (a caller from
    /// outside). `may_challenge`: only the same account's connections may call, so a caller
    /// nothing recognised yet is asked for credentials (`Err`: the 407 to send).
    fn caller_of(
        &self,
        config: &Config,
        req: &AdmissionRequest,
        may_challenge: bool,
        trace: &mut Trace,
    ) -> Result<Option<trunking::config::ConnectionRef>, Admission> {
        let now = timestamp(req.received);
        let facts = CallFacts::of(&req.invite, req.source.ip());
        let identification = {
            let mut replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
            identify(config, &facts, &self.realm, &mut replay, now, trace)
        };
        match identification {
            Identification::Identified(i) => Ok(Some(i.connection)),
            Identification::Challenge { stale } if may_challenge => {
                let r = Reason::ProxyAuthenticationRequired.response();
                let headers =
                    self.realm.challenges(now, stale).into_iter().map(|c| (HeaderName::ProxyAuthenticate, c)).collect();
                Err(Admission::Refuse { status: r.status, phrase: r.phrase, reason: None, headers, context: None })
            }
            Identification::Challenge { .. } | Identification::Rejected(_) => Ok(None),
        }
    }

    /// A call to `<anything>@<subdomain>.<our domain>`: delivered to the subdomain's connection
    /// as a call to one of its numbers is.
    async fn admit_subdomain(&self, policy: &Policy, req: AdmissionRequest, label: &str) -> Admission {
        let config = &*policy.config;
        let mut trace = Trace::new();
        let from_anyone =
            config.connection_of_subdomain(label).is_some_and(|c| config.connection(c).inbound.subdomain_from_anyone);
        let caller = match self.caller_of(config, &req, !from_anyone, &mut trace) {
            Ok(caller) => caller,
            Err(challenge) => return challenge,
        };
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let decision = {
            let registered = self.registrations();
            let over_tls = req.transport == TransportKind::Tls;
            let request = SubdomainRequest { message: &req.invite, caller, over_tls, registered, rotation };
            subdomain::decide(config, &request, &mut trace)
        };
        let call = match decision {
            SubdomainDecision::Route(call) => call,
            SubdomainDecision::Reject(reason) => return Admission::refuse(reason, None),
            SubdomainDecision::NotSubdomain => return Admission::refuse(Reason::D31, None),
        };
        let caller_account = caller.map(|c| &config.connection(c).account_id);
        let to = ConnectionCall {
            caller_account,
            account_id: &call.account_id,
            connection_id: &call.connection_id,
            user: &call.user,
            rate: None,
            channels: &call.channels,
            routes: &call.routes,
            timeouts: (call.timeout_1xx, call.timeout_2xx),
            simultaneous_ringing: call.simultaneous_ringing,
        };
        self.admit_to_connection(policy, &req, to, trace).await
    }

    /// A call to `sip:user@<our domain>`: a credential connection's registered devices, when
    /// its `sip_uri_calling_preference` lets this caller in.
    async fn admit_uri_call(&self, policy: &Policy, req: AdmissionRequest, callee: Callee) -> Admission {
        let config = &*policy.config;
        let mut trace = Trace::new();
        // Who calls: only an `internal` callee needs to know (and may challenge for it); for
        // the others a caller nothing identifies is one from outside.
        let internal = matches!(callee, Callee::Connection { preference: SipUriCalling::Internal, .. });
        let caller = match self.caller_of(config, &req, internal, &mut trace) {
            Ok(caller) => caller,
            Err(challenge) => return challenge,
        };
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let decision = {
            let registered = self.registrations();
            let request = UriCallRequest { message: &req.invite, caller, registered, rotation };
            uri_calling::decide(config, &request, &mut trace)
        };
        let call = match decision {
            UriCallDecision::Route(call) => call,
            UriCallDecision::Reject(reason) => return Admission::refuse(reason, None),
            // `callee` said it was one; a policy swap in between is the only way here.
            UriCallDecision::NotUriCall => return Admission::refuse(Reason::D30, None),
        };
        let caller_account = caller.map(|c| &config.connection(c).account_id);
        let to = ConnectionCall {
            caller_account,
            account_id: &call.account_id,
            connection_id: &call.connection_id,
            user: &call.user,
            // Callers from outside are billed to the callee by the minute at the operator's rate.
            rate: call.rate.map(|r| (r, BillingIncrement { first: 60, next: 60 })),
            channels: &call.channels,
            routes: &call.routes,
            timeouts: (call.timeout_1xx, call.timeout_2xx),
            simultaneous_ringing: call.simultaneous_ringing,
        };
        self.admit_to_connection(policy, &req, to, trace).await
    }

    /// A call addressed to one of our connections by name (a SIP URI or subdomain call): its
    /// record, its channels, its routes.
    async fn admit_to_connection(
        &self,
        policy: &Policy,
        req: &AdmissionRequest,
        to: ConnectionCall<'_>,
        mut trace: Trace,
    ) -> Admission {
        let context = CallContext {
            direction: Direction::Inbound,
            call_control_id: req.call_control_id.clone(),
            account_id: to.account_id.to_string(),
            connection_id: to.connection_id.to_string(),
            profile_id: None,
            from_received: from_user(&req.invite),
            to_received: to.user.to_owned(),
            destination: None,
            rate: to.rate,
            webhook: policy.webhooks.get(to.connection_id.as_ref()).cloned(),
            started: req.received,
            trace: Trace::new(),
        };
        let origin = CallOrigin::ByName { source: req.source.ip(), caller_account: to.caller_account };
        let buckets = policy.config.call_rate_limits().buckets(origin);
        if let Err(reason) = self.take_call_rate(&buckets, timestamp(req.received), &mut trace).await {
            return refused(context, trace, reason);
        }
        let lease = match self.take(to.channels, &req.call_control_id).await {
            Ok(lease) => lease,
            Err(reason) => return refused(context, trace, reason),
        };
        let (routes, targets) = self.deliveries(to.routes, to.connection_id, to.user).await;
        let ring_together = ring_together(to.simultaneous_ringing, to.routes, &routes);
        let caller = context.from_received.clone();
        Admission::Admit(Box::new(AdmittedCall {
            context: CallContext { trace, ..context },
            routes,
            targets,
            caller,
            anonymous: false,
            lease,
            b_headers: Vec::new(),
            timeouts: Some(to.timeouts),
            ring_together,
            forward: None,
        }))
    }

    /// Where inbound deliveries find registered contacts.
    fn registrations(&self) -> &dyn Registrations {
        match &self.registrar {
            Some(r) => &**r,
            None => &NoRegistrations,
        }
    }

    /// Takes a token from each of a call's call rate buckets, or refuses it (`P05`); the
    /// trace says which.
    async fn take_call_rate(
        &self,
        buckets: &[CallRateBucket],
        now: Timestamp,
        trace: &mut Trace,
    ) -> Result<(), Reason> {
        let taken = if buckets.is_empty() { Ok(()) } else { self.counters.take_call_rate(buckets, now).await };
        call_rate::outcome(trace, buckets, taken)
    }

    /// Takes a call's channels under `limits`, or names the limit that is full.
    async fn take(&self, limits: &ChannelLimits, call_control_id: &str) -> Result<ChannelLease, Reason> {
        self.counters.acquire(limits, call_control_id).await.map_err(Scope::limit_reason)
    }

    /// The call's routes toward a connection (and where each goes), from its planned ones.
    async fn deliveries(
        &self,
        planned: &[InboundRoute],
        connection_id: &str,
        user: &str,
    ) -> (Vec<RouteTarget>, Vec<Option<Target>>) {
        let mut routes = Vec::new();
        let mut targets = Vec::new();
        for route in planned {
            self.inbound_targets(route, connection_id, user, &mut routes, &mut targets).await;
        }
        (routes, targets)
    }

    /// The routes (and where each goes) an inbound route stands for: an IP is one; an FQDN is
    /// every target RFC 3263 finds for it, in order; a registered contact is one.
    async fn inbound_targets(
        &self,
        route: &InboundRoute,
        connection_id: &str,
        user: &str,
        routes: &mut Vec<RouteTarget>,
        targets: &mut Vec<Option<Target>>,
    ) {
        let target = |host: &str, port: u16, transport, request_uri: Option<String>| RouteTarget {
            carrier_id: connection_id.to_owned(),
            host: host.to_owned(),
            port,
            transport,
            user: user.to_owned(),
            credentials: None,
            request_uri,
        };
        match route {
            InboundRoute::Ip { host, port, transport } => {
                let r = target(host, *port, *transport, None);
                targets.push(self.locate(&r).await);
                routes.push(r);
            }
            InboundRoute::Fqdn { name, port, transport } => {
                let r = target(name, port.unwrap_or(0), *transport, None);
                let uri = match port {
                    Some(p) => format!("sip:{user}@{name}:{p}"),
                    None => format!("sip:{user}@{name}"),
                };
                let uri = match transport {
                    trunking::routing::Transport::Udp => uri,
                    t => format!("{uri};transport={}", t.as_str().to_ascii_lowercase()),
                };
                let found = match (&self.locator, sip::uri::parse_uri(&uri)) {
                    (Some(locator), Ok(sip::Uri::Sip(parsed))) => locator.locate(&parsed).await.unwrap_or_default(),
                    _ => Vec::new(),
                };
                if found.is_empty() {
                    // Unresolvable: the attempt fails as a transport error and the call moves on.
                    targets.push(None);
                    routes.push(r);
                    return;
                }
                for t in found {
                    routes.push(RouteTarget { port: t.addr.port(), request_uri: Some(uri.clone()), ..r.clone() });
                    targets.push(Some(t));
                }
            }
            InboundRoute::Contact { uri } => {
                let parsed = sip::uri::parse_uri(uri);
                let Ok(sip::Uri::Sip(sip_uri)) = parsed else {
                    return;
                };
                let host = match sip_uri.host {
                    sip::Host::Ipv6(ip) => ip.to_string(),
                    h => h.to_string(),
                };
                let r =
                    target(&host, sip_uri.port.unwrap_or(5060), trunking::routing::Transport::Udp, Some(uri.clone()));
                // Behind NAT: the flow its REGISTER came over, not the Contact as written.
                let flow = self.registrar.as_ref().and_then(|reg| reg.flow(connection_id, uri));
                let located = match flow {
                    Some((addr, kind)) => Some(Target { kind, addr, host: host.clone() }),
                    None => self.locate(&r).await,
                };
                targets.push(located);
                routes.push(r);
            }
            // Forwarding to the PSTN goes out through the outbound path (its rules, limits and
            // rating): not delivered from here yet.
            InboundRoute::Forward { .. } => {}
        }
    }

    /// The first RFC 3263 target of a route's gateway.
    async fn locate(&self, route: &RouteTarget) -> Option<Target> {
        let uri = route.uri();
        let Ok(sip::Uri::Sip(parsed)) = sip::uri::parse_uri(&uri) else { return None };
        match &self.locator {
            Some(locator) => locator.locate(&parsed).await.ok()?.into_iter().next(),
            None => {
                let ip = route.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
                let kind = match route.transport {
                    trunking::routing::Transport::Udp => TransportKind::Udp,
                    trunking::routing::Transport::Tcp => TransportKind::Tcp,
                    trunking::routing::Transport::Tls => TransportKind::Tls,
                };
                Some(Target { kind, addr: SocketAddr::new(ip, route.port), host: route.host.clone() })
            }
        }
    }
}

/// The user part of a request's From: the calling party as received.
fn from_user(msg: &Message) -> String {
    msg.from().ok().and_then(|f| f.user().map(str::to_owned)).unwrap_or_default()
}

/// A call refused after it was identified: recorded with the rules' trace.
fn refused(mut context: CallContext, trace: Trace, reason: Reason) -> Admission {
    context.trace = trace;
    Admission::refuse(reason, Some(context))
}

/// How many of the call's first routes ring together: with simultaneous ringing, every
/// registered contact (they lead the plan; each is one route); otherwise one at a time.
fn ring_together(simultaneous: bool, planned: &[InboundRoute], routes: &[RouteTarget]) -> usize {
    if !simultaneous {
        return 0;
    }
    let contacts = planned.iter().take_while(|r| matches!(r, InboundRoute::Contact { .. })).count();
    contacts.min(routes.len())
}

/// Milliseconds since the epoch of a wall-clock time (0 before the epoch).
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}
