//! The core's calls: the transaction user that joins a customer's INVITE to a [`Call`], carries
//! the call's actions out as transactions on both legs, and routes what comes back (responses
//! by client transaction, in-dialog requests and ACKs by Call-ID and local tag, CANCEL by the
//! INVITE it cancels) into the call. Still sans-I/O: admission goes out as an
//! [`AdmissionRequest`] and comes back through [`Core::admit`]; a call's end goes out as a
//! [`CallNotice`] with its report.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rust_decimal::Decimal;
use sip::headers::HeaderName;
use sip::transaction::{ClientEvent, ClientTransaction, TransactionKey};
use sip::{Message, Method};
use tracing::debug;
use trunking::catalog::Reason;
use trunking::rating;
use trunking::routing::AttemptOutcome;

use super::{Core, Due, HashMap, PlacementNote, ReplyRoute, bump};
use crate::admission::{Admission, AdmissionRequest, AdmittedCall, CallContext};
use crate::call::{Action, Call, CallEvent, CallSetup, CallState, HangupBy, OutRef, RouteTarget, Side, TxnRef};
use crate::counters::ChannelLease;
use crate::dns::Target;
use crate::transport::{Inbound, Outbound, TransportKind};

/// A call's dialog on one leg, as requests toward us name it: Call-ID and our tag (the To tag
/// of requests we receive). Looked up by its borrowed form ([`DialogId`]), so finding the
/// dialog of a request allocates nothing.
pub(super) struct DialogKey {
    call_id: Box<str>,
    tag: Box<str>,
}

impl DialogKey {
    fn new(call_id: &str, tag: &str) -> DialogKey {
        DialogKey { call_id: call_id.into(), tag: tag.into() }
    }
}

/// A dialog's Call-ID and our tag, owned ([`DialogKey`]) or borrowed from a request.
pub(super) trait DialogId {
    fn parts(&self) -> (&str, &str);
}

impl DialogId for DialogKey {
    fn parts(&self) -> (&str, &str) {
        (&self.call_id, &self.tag)
    }
}

impl DialogId for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        *self
    }
}

// Owned and borrowed forms hash and compare alike (through `parts`), as `Borrow` requires.
impl std::hash::Hash for dyn DialogId + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn DialogId + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn DialogId + '_ {}

impl std::hash::Hash for DialogKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self as &dyn DialogId).hash(state);
    }
}

impl PartialEq for DialogKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for DialogKey {}

impl<'a> std::borrow::Borrow<dyn DialogId + 'a> for DialogKey {
    fn borrow(&self) -> &(dyn DialogId + 'a) {
        self
    }
}

/// An INVITE waiting for its admission.
pub(super) struct Pending {
    pub(super) a_txn: TransactionKey,
    pub(super) a_route: ReplyRoute,
    pub(super) received: Instant,
    /// The INVITE, once its transaction answered it (a CANCEL) and let it go: the call's
    /// record is still made from it when the admission comes back.
    pub(super) invite: Option<Box<Message>>,
}

/// What a client transaction of ours is for.
#[derive(Clone, Copy, Debug)]
pub(super) enum ClientRole {
    Invite {
        call: u64,
        attempt: usize,
    },
    Cancel,
    /// A request the call sent in a dialog.
    Dialog {
        call: u64,
        out: OutRef,
    },
    /// A BYE for an answer that came too late: nobody waits for its answer.
    Bye,
    /// A REGISTER of a UAC connection's registration.
    Uac {
        uac: u64,
    },
}

pub(super) struct ClientEntry {
    /// In place: the table's slab holds live entries only (its index holds the spare buckets).
    pub(super) txn: ClientTransaction,
    /// The deadline this transaction has in the core's timer wheel: one entry at a time.
    pub(super) scheduled: Option<Instant>,
    pub(super) role: ClientRole,
    pub(super) dest: Dest,
}

/// Where a request of ours goes.
#[derive(Clone, Debug)]
pub(super) struct Dest {
    kind: TransportKind,
    remote: SocketAddr,
    conn: Option<crate::transport::ConnId>,
    local: Option<SocketAddr>,
    server_name: Option<String>,
}

impl Dest {
    /// A located target, from our listener of its transport.
    pub(super) fn to_target(target: &Target, local: Option<SocketAddr>) -> Dest {
        Dest {
            kind: target.kind,
            remote: target.addr,
            conn: None,
            local,
            server_name: (target.kind == TransportKind::Tls).then(|| target.host.clone()),
        }
    }

    fn outbound(&self, data: Bytes) -> Outbound {
        Outbound {
            kind: self.kind,
            remote: self.remote,
            conn: self.conn,
            local: self.local,
            server_name: self.server_name.clone(),
            data,
        }
    }
}

/// One route attempt as it went, for the call's record.
#[derive(Clone, Debug)]
pub struct AttemptReport {
    pub route: RouteTarget,
    /// Where the INVITE went; `None` when the gateway's name did not resolve.
    pub target: Option<SocketAddr>,
    pub outcome: AttemptOutcome,
    pub started: SystemTime,
    pub ended: SystemTime,
}

/// Who ended a call, as its record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    Caller,
    Callee,
    /// The platform: a refusal, a timeout, the idle limit, a drain.
    System,
}

/// Everything the record of one call needs, handed out once when it ends.
#[derive(Debug)]
pub struct CallReport {
    pub context: CallContext,
    pub a_call_id: String,
    pub b_call_id: Option<String>,
    /// The parties as sent to carriers (From user, Request-URI user), when an INVITE went.
    pub from_sent: Option<String>,
    pub to_sent: Option<String>,
    pub answered_at: Option<SystemTime>,
    pub ended_at: SystemTime,
    pub call_sec: u32,
    pub billed_sec: u32,
    pub cost: Option<Decimal>,
    /// The final status the caller got (200 for an answered call).
    pub status: u16,
    pub reason: Option<Reason>,
    pub ended_by: EndedBy,
    pub attempts: Vec<AttemptReport>,
}

/// What the platform around the core learns of calls (live calls, webhooks, records).
#[derive(Debug)]
pub enum CallNotice {
    /// A call was admitted and its first INVITE toward carriers is on its way.
    Initiated {
        call_control_id: String,
        a_call_id: String,
        /// Boxed: the summary is most of the notice, and every notice is as large as its largest.
        context: Box<CallSummary>,
    },
    Answered {
        call_control_id: String,
        at: SystemTime,
    },
    /// The call ended (or was refused after identification): its record.
    Ended(Box<CallReport>),
}

/// The parts of a call's context that live-call views and events show.
#[derive(Clone, Debug)]
pub struct CallSummary {
    pub direction: crate::admission::Direction,
    pub account_id: String,
    pub connection_id: String,
    pub from: String,
    pub to: String,
    pub started: SystemTime,
    pub webhook: Option<std::sync::Arc<crate::webhooks::Destination>>,
    /// What the call's record needs from its start, journaled while it lives so that a node
    /// lost mid-call still leaves a billed record: the profile, the called party as received,
    /// and the per-minute rate with its billing increment when rated.
    pub profile_id: Option<String>,
    pub to_received: String,
    pub rate: Option<(Decimal, rating::BillingIncrement)>,
}

/// A call over whose INVITE client transactions still linger (Timer M, or D after a non-2xx):
/// what a late 2xx needs. The call's state, dialogs and indexes are gone.
pub(super) struct EndedCall {
    /// Client transactions of the call still alive.
    clients: usize,
    /// The ACK sent for each attempt's 2xx, sent again when that 2xx is retransmitted.
    acks: Vec<(usize, Outbound)>,
}

/// One attempt as it goes: its index in the plan, when it began, where it went, and how and
/// when it ended.
type Attempt = (usize, Instant, Option<SocketAddr>, Option<(AttemptOutcome, Instant)>);

/// Our 2xx to the caller, repeated until the ACK comes (RFC 3261 section 13.3.1.4).
struct AnswerRetransmit {
    data: Bytes,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

pub(super) struct CallEntry {
    call: Call,
    context: Option<CallContext>,
    lease: Option<ChannelLease>,
    a_txn: TransactionKey,
    a_route: ReplyRoute,
    a_call_id: String,
    b_call_id: String,
    targets: Vec<Option<Target>>,
    /// The INVITE client transaction of each attempt (the latest, after a digest retry).
    invites: HashMap<usize, TransactionKey>,
    /// Server transactions of in-dialog requests, by the name the call knows them by.
    server_txns: HashMap<TxnRef, TransactionKey>,
    /// The ACK sent for each attempt's 2xx, sent again when the 2xx is retransmitted.
    acks: HashMap<usize, Outbound>,
    answer: Option<AnswerRetransmit>,
    /// Client transactions still running for this call.
    clients: usize,
    received: Instant,
    answered_at: Option<Instant>,
    answered_attempt: Option<usize>,
    attempts: Vec<Attempt>,
    from_sent: Option<String>,
    to_sent: Option<String>,
    reported: bool,
    /// Call forwarding's outbound leg: where its routes start, its rate and channels.
    forward: Option<crate::admission::Forwarding>,
    /// The deadline this call has in the core's timer wheel.
    scheduled: Option<Instant>,
}

impl CallEntry {
    fn wall(&self, at: Instant, started: SystemTime) -> SystemTime {
        started + at.saturating_duration_since(self.received)
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.call.poll_timeout(), self.answer.as_ref().map(|a| a.next.min(a.give_up))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn done(&self) -> bool {
        self.reported && self.clients == 0 && self.answer.is_none()
    }

    /// Over and reported, the caller's ACK in, no request of either leg waiting for our answer
    /// and nothing the call still has to do: what is left is client transactions lingering.
    fn settled(&self) -> bool {
        self.reported && self.answer.is_none() && self.server_txns.is_empty() && self.call.settled()
    }
}

/// The part of a received request a dialog is found by.
fn dialog_id(msg: &Message) -> Option<(&str, &str)> {
    Some((msg.call_id().ok()?, msg.to_tag().ok()??))
}

fn user_of(uri: &str) -> Option<String> {
    match sip::uri::parse_uri(uri) {
        Ok(sip::Uri::Sip(u)) => u.user.map(|u| u.split(';').next().unwrap_or_default().to_owned()),
        _ => None,
    }
}

impl Core {
    /// A new INVITE outside any dialog, with its server transaction made: loops are refused,
    /// the rest waits for admission.
    pub(super) fn new_invite(&mut self, key: &TransactionKey, msg: &Message, inbound: &Inbound, now: Instant) {
        let looped = msg.call_id().is_ok_and(|c| self.b_call_ids.contains(c));
        let hops = msg.max_forwards().ok().flatten().unwrap_or(70);
        if looped || hops <= 1 {
            // Relayed on, it would arrive with no hops left, or it is our own B-leg back.
            let r = Reason::P93.response();
            self.respond(key, r.status, r.phrase, now);
            self.stats.call_refused_early(r.status, Some(Reason::P93));
            return;
        }
        let id = self.next_call;
        self.next_call += 1;
        let Some(entry) = self.servers.get(key) else { return };
        let a_route = ReplyRoute { remote: inbound.remote, ..entry.route };
        self.pending.insert(id, Pending { a_txn: key.clone(), a_route, received: now, invite: None });
        let call_control_id = self.new_uuid();
        self.admissions.push_back(AdmissionRequest {
            id,
            invite: msg.clone(),
            source: inbound.remote,
            transport: inbound.kind,
            received: self.wall_clock(now),
            call_control_id,
        });
    }

    /// Admission requests to decide (the driver answers each with [`Core::admit`]).
    pub fn poll_admission(&mut self) -> Option<AdmissionRequest> {
        self.admissions.pop_front()
    }

    pub fn poll_notice(&mut self) -> Option<CallNotice> {
        self.notices.pop_front()
    }

    /// Whether call notices wait to be taken.
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// Calls alive (admitted and not yet ended) and channel leases held.
    pub fn calls(&self) -> usize {
        self.live_calls
    }

    pub fn leases_held(&self) -> usize {
        self.leases_held
    }

    /// Calls still owing work (setting up, answered, or finishing their transactions).
    pub fn call_entries(&self) -> usize {
        self.calls.len() + self.pending.len() + self.ended.len()
    }

    /// The admission of call `id` is decided.
    pub fn admit(&mut self, id: u64, admission: Admission, now: Instant) {
        let Some(mut pending) = self.pending.remove(&id) else { return };
        let open = self.servers.get(&pending.a_txn).is_some_and(|e| !e.final_sent);
        // The attempt is counted now that its direction is known; a call not started here
        // failed with what the caller got: the refusal, or the 487 of its CANCEL.
        let direction = match &admission {
            Admission::Refuse { context, .. } => context.as_ref().map(|c| c.direction),
            Admission::Admit(admitted) => Some(admitted.context.direction),
        };
        self.stats.call_attempted(direction);
        match (&admission, open) {
            (Admission::Refuse { status, reason, .. }, true) => self.stats.call_failed(*status, *reason),
            (_, false) => self.stats.call_failed(487, None),
            (Admission::Admit(_), true) => {}
        }
        let invite = match (self.servers.get(&pending.a_txn).and_then(|e| e.txn.request()), pending.invite.take()) {
            (Some(request), _) => request.clone(),
            (None, Some(kept)) => *kept,
            (None, None) => {
                // The INVITE's transaction is gone (it can only have been answered): a call
                // admitted meanwhile is dropped, its lease with it.
                return;
            }
        };
        match admission {
            Admission::Refuse { status, phrase, reason, headers, context } => {
                if open {
                    self.respond_with(&pending.a_txn, status, phrase, &headers, now);
                    self.pump(&pending.a_txn);
                }
                if let Some(context) = context {
                    let report = refused_report(*context, &invite, status, reason, self.wall_clock(now));
                    self.notices.push_back(CallNotice::Ended(Box::new(report)));
                }
            }
            Admission::Admit(admitted) if !open => {
                // Cancelled while admission ran: the caller already has its 487.
                let AdmittedCall { context, mut lease, .. } = *admitted;
                lease.release();
                let report = refused_report(context, &invite, 487, None, self.wall_clock(now));
                self.notices.push_back(CallNotice::Ended(Box::new(CallReport { ended_by: EndedBy::Caller, ..report })));
            }
            Admission::Admit(admitted) => self.start_call(id, *admitted, invite, pending, now),
        }
    }

    fn start_call(&mut self, id: u64, admitted: AdmittedCall, invite: Message, pending: Pending, now: Instant) {
        let AdmittedCall {
            context,
            routes,
            targets,
            caller,
            anonymous,
            lease,
            b_headers,
            timeouts,
            ring_together,
            forward,
        } = admitted;
        let (timeout_1xx, timeout_2xx) =
            timeouts.unwrap_or((self.config.calls.timeout_1xx, self.config.calls.timeout_2xx));
        let a_tag = self.new_tag();
        let b_tag = self.new_tag();
        let b_call_id = self.new_call_id();
        let a_call_id = invite.call_id().unwrap_or_default().to_owned();
        let setup = CallSetup {
            invite,
            routes,
            caller,
            anonymous,
            local: self.local.clone(),
            a_tag,
            b_call_id: b_call_id.clone(),
            b_tag,
            timeout_1xx,
            timeout_2xx,
            idle_limit: self.config.calls.max_duration,
            product: self.product.clone(),
            cnonce: self.new_tag(),
            b_headers,
            ring_together,
        };
        let summary = CallSummary {
            direction: context.direction,
            account_id: context.account_id.clone(),
            connection_id: context.connection_id.clone(),
            from: context.from_received.clone(),
            to: context.destination.clone().unwrap_or_else(|| context.to_received.clone()),
            started: context.started,
            webhook: context.webhook.clone(),
            profile_id: context.profile_id.clone(),
            to_received: context.to_received.clone(),
            rate: context.rate,
        };
        self.notices.push_back(CallNotice::Initiated {
            call_control_id: context.call_control_id.clone(),
            a_call_id: a_call_id.clone(),
            context: Box::new(summary),
        });
        self.dialogs.insert(DialogKey::new(&a_call_id, &setup.a_tag), (id, Side::Caller));
        self.dialogs.insert(DialogKey::new(&b_call_id, &setup.b_tag), (id, Side::Callee));
        self.b_call_ids.insert(b_call_id.as_str().into());
        self.a_invites.insert(pending.a_txn.clone(), id);
        self.note_placement(&a_call_id, true);
        let entry = CallEntry {
            call: Call::new(setup, now),
            context: Some(context),
            lease: Some(lease),
            a_txn: pending.a_txn,
            a_route: pending.a_route,
            a_call_id,
            b_call_id,
            targets,
            invites: HashMap::default(),
            server_txns: HashMap::default(),
            acks: HashMap::default(),
            answer: None,
            clients: 0,
            received: pending.received,
            answered_at: None,
            answered_attempt: None,
            attempts: Vec::new(),
            from_sent: None,
            to_sent: None,
            reported: false,
            forward,
            scheduled: None,
        };
        self.calls.insert(id, Box::new(entry));
        self.live_calls += 1;
        self.leases_held += 1;
        bump(&self.stats.calls);
        self.drive(id, now);
    }

    /// Runs what call `id` wants done, records what happened to it, and schedules its timer.
    fn drive(&mut self, id: u64, now: Instant) {
        let Some(mut entry) = self.calls.remove(&id) else { return };
        loop {
            let mut progressed = false;
            while let Some(action) = entry.call.poll_action() {
                progressed = true;
                self.execute(id, &mut entry, action, now);
            }
            while let Some(event) = entry.call.poll_event() {
                progressed = true;
                self.observe(&mut entry, event, now);
            }
            if !progressed {
                break;
            }
        }
        if entry.done() {
            self.forget(&entry);
            self.publish_gauges();
            return;
        }
        if entry.settled() {
            self.forget(&entry);
            let entry = *entry;
            self.ended.insert(id, EndedCall { clients: entry.clients, acks: entry.acks.into_iter().collect() });
            self.publish_gauges();
            return;
        }
        // One deadline in the heap per call: a later one waits for the earlier to fire (an
        // answered call's idle deadline moves with every message; pushing each would fill the
        // heap for hours).
        if let Some(at) = entry.deadline()
            && entry.scheduled.is_none_or(|s| at < s)
        {
            entry.scheduled = Some(at);
            self.timers.push(at, Due::Call(id));
        }
        self.calls.insert(id, entry);
        self.publish_gauges();
    }

    pub(super) fn publish_client_count(&self) {
        self.gauges.client_transactions.publish(&self.stats.live_client_transactions, self.clients.len());
    }

    fn publish_gauges(&self) {
        self.gauges.calls.publish(&self.stats.calls_active, self.calls());
        self.gauges.channels.publish(&self.stats.channels_held, self.leases_held());
    }

    fn forget(&mut self, entry: &CallEntry) {
        let (a_tag, b_tag) = entry.call.tags();
        self.dialogs.remove(&(entry.a_call_id.as_str(), a_tag) as &dyn DialogId);
        self.dialogs.remove(&(entry.b_call_id.as_str(), b_tag) as &dyn DialogId);
        self.b_call_ids.remove(entry.b_call_id.as_str());
        self.a_invites.remove(&entry.a_txn);
        self.note_placement(&entry.a_call_id, false);
    }

    /// On a core other than the first: a call of this caller's Call-ID started (`held`) or is
    /// over, for the first core's [`super::Placement`]. The first keeps no notes of its own.
    fn note_placement(&mut self, a_call_id: &str, held: bool) {
        if self.shard.index != 0 {
            self.placement_notes.push_back(PlacementNote { call_id: a_call_id.as_bytes().into(), held });
        }
    }

    /// What this core (not the first) tells the first core's [`super::Placement`].
    pub fn poll_placement_note(&mut self) -> Option<PlacementNote> {
        self.placement_notes.pop_front()
    }

    fn execute(&mut self, id: u64, entry: &mut CallEntry, action: Action, now: Instant) {
        match action {
            Action::RespondA(resp) => {
                // The call wrote its own Server header.
                let ok = resp.status().is_some_and(|s| (200..300).contains(&s));
                let reliable = entry.a_route.kind.is_reliable();
                if ok && !reliable {
                    let t1 = self.config.timers.t1;
                    entry.answer = Some(AnswerRetransmit {
                        data: resp.to_bytes(),
                        next: now + t1,
                        interval: t1,
                        give_up: now + t1 * 64,
                    });
                }
                if let Some(server) = self.servers.get_mut(&entry.a_txn) {
                    if resp.status().is_some_and(|s| s >= 200) {
                        server.final_sent = true;
                    }
                    if let Err(e) = server.txn.send_response(resp, now) {
                        debug!(error = %e, "caller's INVITE transaction refused a response");
                    }
                }
                let key = entry.a_txn.clone();
                self.pump(&key);
            }
            Action::InviteB { attempt, request } => {
                if entry.attempts.last().is_none_or(|a| a.0 != attempt) {
                    let target = entry.targets.get(attempt).and_then(|t| t.as_ref().map(|t| t.addr));
                    entry.attempts.push((attempt, now, target, None));
                }
                entry.from_sent = request.from().ok().and_then(|f| f.user().map(str::to_owned));
                entry.to_sent = request.request_uri_str().and_then(user_of);
                let Some(dest) = self.b_dest(entry, attempt) else {
                    entry.call.handle_b_failure(attempt, AttemptOutcome::TransportError, now);
                    return;
                };
                match self.start_client(request, dest, ClientRole::Invite { call: id, attempt }, now) {
                    Some(key) => {
                        entry.invites.insert(attempt, key);
                        entry.clients += 1;
                    }
                    None => entry.call.handle_b_failure(attempt, AttemptOutcome::TransportError, now),
                }
            }
            Action::CancelB { attempt } => {
                let Some(invite) = entry.invites.get(&attempt).and_then(|k| self.clients.get(k)) else { return };
                // No CANCEL once a final response came (the request is gone then: 9.1).
                let cancel = invite.txn.request().and_then(cancel_for);
                let dest = invite.dest.clone();
                if let Some(cancel) = cancel
                    && self.start_client_as_is(cancel, dest, ClientRole::Cancel, now).is_some()
                {
                    // A CANCEL's transaction keeps no call alive: its answer changes nothing.
                }
            }
            Action::AckB { attempt, request } => {
                let Some(dest) = self.b_dest(entry, attempt) else { return };
                let request = self.with_via(request, dest.kind);
                let out = dest.outbound(request.to_bytes());
                self.outbox.push_back(out.clone());
                entry.acks.insert(attempt, out);
            }
            Action::ByeB { attempt, request } => {
                if let Some(dest) = self.b_dest(entry, attempt) {
                    self.start_client(request, dest, ClientRole::Bye, now);
                }
            }
            Action::Request { side, out, request } => {
                let dest = match side {
                    Side::Caller => Some(self.a_dest(entry)),
                    Side::Callee => entry.answered_attempt.and_then(|a| self.b_dest(entry, a)),
                };
                let started =
                    dest.and_then(|d| self.start_client(request, d, ClientRole::Dialog { call: id, out }, now));
                match started {
                    Some(_) => entry.clients += 1,
                    None => entry.call.handle_dialog_failure(out, now),
                }
            }
            Action::Respond { txn, mut response, .. } => {
                let Some(key) = entry.server_txns.get(&txn).cloned() else { return };
                self.decorate(&mut response);
                if response.status().is_some_and(|s| s >= 200) {
                    entry.server_txns.remove(&txn);
                }
                if let Some(server) = self.servers.get_mut(&key) {
                    if response.status().is_some_and(|s| s >= 200) {
                        server.final_sent = true;
                    }
                    if let Err(e) = server.txn.send_response(response, now) {
                        debug!(error = %e, "in-dialog transaction refused a response");
                    }
                }
                self.pump(&key);
            }
            Action::Ack { side, request } => {
                let dest = match side {
                    Side::Caller => Some(self.a_dest(entry)),
                    Side::Callee => entry.answered_attempt.and_then(|a| self.b_dest(entry, a)),
                };
                if let Some(dest) = dest {
                    let request = self.with_via(request, dest.kind);
                    self.outbox.push_back(dest.outbound(request.to_bytes()));
                }
            }
        }
    }

    fn observe(&mut self, entry: &mut CallEntry, event: CallEvent, now: Instant) {
        match event {
            CallEvent::AttemptEnded { attempt, outcome } => {
                if let Some(a) = entry.attempts.iter_mut().rev().find(|a| a.0 == attempt && a.3.is_none()) {
                    a.3 = Some((outcome, now));
                }
            }
            CallEvent::Answered { attempt } => {
                self.stats.call_answered(entry.context.as_ref().map(|c| c.direction));
                entry.answered_at = Some(now);
                entry.answered_attempt = Some(attempt);
                if let Some(ctx) = &entry.context {
                    let at = entry.wall(now, ctx.started);
                    self.notices.push_back(CallNotice::Answered { call_control_id: ctx.call_control_id.clone(), at });
                }
            }
            CallEvent::Ended { by } => {
                let ended_by = match by {
                    HangupBy::Caller => EndedBy::Caller,
                    HangupBy::Callee => EndedBy::Callee,
                    HangupBy::System => EndedBy::System,
                };
                self.finish(entry, 200, None, ended_by, now);
            }
            CallEvent::Failed { status, reason, cancelled } => {
                self.stats.call_failed(status, reason);
                let ended_by = if cancelled {
                    EndedBy::Caller
                } else if reason.is_some()
                    || entry.attempts.last().is_some_and(|a| {
                        matches!(a.3, Some((AttemptOutcome::Timeout | AttemptOutcome::TransportError, _)))
                    })
                {
                    EndedBy::System
                } else {
                    EndedBy::Callee
                };
                self.finish(entry, status, reason, ended_by, now);
            }
        }
    }

    /// The call is over: its channels go back and its record goes out.
    fn finish(&mut self, entry: &mut CallEntry, status: u16, reason: Option<Reason>, by: EndedBy, now: Instant) {
        if let Some(mut lease) = entry.lease.take() {
            lease.release();
            self.leases_held -= 1;
        }
        if let Some(mut lease) = entry.forward.as_mut().and_then(|f| f.lease.take()) {
            lease.release();
        }
        let Some(mut context) = entry.context.take() else { return };
        entry.reported = true;
        self.live_calls -= 1;
        let started = context.started;
        let call_ms = entry.answered_at.map_or(0, |a| now.saturating_duration_since(a).as_millis() as u64);
        // A forwarded call answered on its outbound leg is billed at that leg's rate.
        if let Some(f) = entry.forward.as_ref().filter(|f| entry.answered_attempt.is_some_and(|a| a >= f.from_route)) {
            context.rate = f.rate;
            context.profile_id.clone_from(&f.profile_id);
        }
        let (billed, cost) = match (entry.answered_at, context.rate) {
            (Some(_), Some((per_minute, inc))) => {
                let billed = rating::billed_seconds(call_ms, inc);
                (billed, Some(rating::cost(per_minute, billed)))
            }
            _ => (0, None),
        };
        let attempts = entry
            .attempts
            .iter()
            .map(|(i, at, target, end)| {
                let (outcome, ended) = end.unwrap_or((AttemptOutcome::Response(status), now));
                AttemptReport {
                    route: entry.call.routes()[*i].clone(),
                    target: *target,
                    outcome,
                    started: entry.wall(*at, started),
                    ended: entry.wall(ended, started),
                }
            })
            .collect();
        let report = CallReport {
            a_call_id: entry.a_call_id.clone(),
            b_call_id: (!entry.attempts.is_empty()).then(|| entry.b_call_id.clone()),
            from_sent: entry.from_sent.clone(),
            to_sent: entry.to_sent.clone(),
            answered_at: entry.answered_at.map(|a| entry.wall(a, started)),
            ended_at: entry.wall(now, started),
            call_sec: (call_ms / 1000) as u32,
            billed_sec: billed as u32,
            cost,
            status,
            reason,
            ended_by: by,
            attempts,
            context,
        };
        self.notices.push_back(CallNotice::Ended(Box::new(report)));
    }

    /// Where `attempt`'s requests go, and from which of our listeners.
    fn b_dest(&self, entry: &CallEntry, attempt: usize) -> Option<Dest> {
        let target = entry.targets.get(attempt)?.as_ref()?;
        Some(Dest {
            kind: target.kind,
            remote: target.addr,
            conn: None,
            local: self.config.listener(target.kind),
            server_name: (target.kind == TransportKind::Tls).then(|| target.host.clone()),
        })
    }

    /// Requests toward the caller go where its INVITE came from (the customer may sit behind a
    /// NAT its Contact does not show), on the same connection when it is a stream.
    fn a_dest(&self, entry: &CallEntry) -> Dest {
        let r = entry.a_route;
        Dest { kind: r.kind, remote: r.remote, conn: r.conn, local: Some(r.local), server_name: None }
    }

    /// Our Via on top of a request we send (a new branch: a new transaction, or an ACK for a 2xx).
    pub(super) fn with_via(&mut self, mut request: Message, kind: TransportKind) -> Message {
        let branch = self.next_random();
        let prefix = &self.via_prefix[match kind {
            TransportKind::Udp => 0,
            TransportKind::Tcp => 1,
            TransportKind::Tls => 2,
        }];
        request.prepend_header_with(HeaderName::Via, |via| {
            via.push_str(prefix);
            sip::message::push_hex(via, branch, 0);
            via.push_str(";rport");
        });
        request
    }

    fn start_client(&mut self, request: Message, dest: Dest, role: ClientRole, now: Instant) -> Option<TransactionKey> {
        let request = self.with_via(request, dest.kind);
        self.start_client_as_is(request, dest, role, now)
    }

    pub(super) fn start_client_as_is(
        &mut self,
        request: Message,
        dest: Dest,
        role: ClientRole,
        now: Instant,
    ) -> Option<TransactionKey> {
        let txn = match ClientTransaction::new(request, dest.kind.is_reliable(), &self.config.timers, now) {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %e, "no client transaction");
                return None;
            }
        };
        let key = txn.key().clone();
        let slot = self.clients.insert(key.clone(), ClientEntry { txn, scheduled: None, role, dest });
        bump(&self.stats.client_transactions);
        self.pump_client(slot, now);
        Some(key)
    }

    /// A response from the network: its client transaction's.
    pub(super) fn handle_response(&mut self, msg: Message, now: Instant) {
        let Ok(key) = TransactionKey::for_client_response(&msg) else {
            bump(&self.stats.stray_responses);
            return;
        };
        let Some((slot, entry)) = self.clients.get_slot_mut(&key) else {
            bump(&self.stats.stray_responses);
            return;
        };
        let before = entry.txn.retransmissions();
        if entry.txn.handle_response(msg, now).is_err() {
            bump(&self.stats.stray_responses);
        }
        super::add_retransmissions(&self.stats.requests_retransmitted, before, entry.txn.retransmissions());
        self.pump_client(slot, now);
    }

    /// Sends what the client transaction at `slot` wants sent, sets its next deadline and
    /// hands its events to its call.
    pub(super) fn pump_client(&mut self, slot: super::table::Slot, now: Instant) {
        let Some((key, entry)) = self.clients.at_mut(slot) else { return };
        while let Some(data) = entry.txn.poll_transmit() {
            self.outbox.push_back(entry.dest.outbound(data));
        }
        let role = entry.role;
        let mut events = Vec::new();
        while let Some(ev) = entry.txn.poll_event() {
            events.push(ev);
        }
        let next = entry.txn.poll_timeout();
        // The key only when there are events to hand on: a timer re-armed needs none.
        let key = if events.is_empty() { None } else { Some(key.clone()) };
        let mut touched = None;
        for ev in events {
            let Some(key) = key.as_ref() else { break };
            let call = match role {
                ClientRole::Invite { call, .. } | ClientRole::Dialog { call, .. } => call,
                ClientRole::Uac { uac } => {
                    if matches!(ev, ClientEvent::Terminated) {
                        self.clients.remove(key);
                    }
                    self.uac_client_event(uac, key, ev, now);
                    continue;
                }
                ClientRole::Cancel | ClientRole::Bye => {
                    if matches!(ev, ClientEvent::Terminated) {
                        self.clients.remove(key);
                    }
                    continue;
                }
            };
            let Some(c) = self.calls.get_mut(&call) else {
                self.ended_call_event(call, role, key, ev, now);
                continue;
            };
            touched = Some(call);
            match (role, ev) {
                (ClientRole::Invite { attempt, .. }, ClientEvent::Provisional(m)) => {
                    c.call.handle_b_response(attempt, &m, now)
                }
                (ClientRole::Invite { attempt, .. }, ClientEvent::Final(m)) => {
                    let ok = m.status().is_some_and(|s| (200..300).contains(&s));
                    let repeat = ok && c.acks.contains_key(&attempt);
                    c.call.handle_b_response(attempt, &m, now);
                    if repeat {
                        // A retransmitted 2xx: our ACK was lost; the same ACK again.
                        if let Some(ack) = c.acks.get(&attempt) {
                            self.outbox.push_back(ack.clone());
                            bump(&self.stats.requests_retransmitted);
                        }
                    }
                }
                (ClientRole::Invite { attempt, .. }, ClientEvent::Timeout) => {
                    c.call.handle_b_failure(attempt, AttemptOutcome::Timeout, now)
                }
                (ClientRole::Invite { attempt, .. }, ClientEvent::TransportError) => {
                    c.call.handle_b_failure(attempt, AttemptOutcome::TransportError, now)
                }
                (ClientRole::Dialog { out, .. }, ClientEvent::Provisional(m) | ClientEvent::Final(m)) => {
                    c.call.handle_dialog_response(out, &m, now)
                }
                (ClientRole::Dialog { out, .. }, ClientEvent::Timeout | ClientEvent::TransportError) => {
                    c.call.handle_dialog_failure(out, now)
                }
                (_, ClientEvent::Terminated) => {
                    self.clients.remove(key);
                    c.clients = c.clients.saturating_sub(1);
                    if let ClientRole::Invite { attempt, .. } = role {
                        // Past Timer M a repeated 2xx matches no transaction and there is
                        // nothing left to CANCEL: the held call keeps neither its ACK nor the key.
                        c.acks.remove(&attempt);
                        if c.invites.get(&attempt) == Some(key) {
                            c.invites.remove(&attempt);
                        }
                        if c.acks.is_empty() {
                            c.acks = HashMap::default();
                        }
                        if c.invites.is_empty() {
                            c.invites = HashMap::default();
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(at) = next
            && let Some((_, entry)) = self.clients.at_mut(slot)
            && entry.scheduled.is_none_or(|s| at < s)
        {
            entry.scheduled = Some(at);
            self.timers.push(at, Due::Client(slot));
        }
        self.publish_client_count();
        if let Some(call) = touched {
            self.drive(call, now);
        }
    }

    /// An event of a client transaction whose call is over ([`EndedCall`]) or gone. A 2xx
    /// repeated because our ACK was lost gets that ACK again; a 2xx of another dialog is
    /// ACKed and hung up (RFC 3261 section 13.2.2.4). The rest changes nothing.
    fn ended_call_event(&mut self, call: u64, role: ClientRole, key: &TransactionKey, ev: ClientEvent, now: Instant) {
        match ev {
            ClientEvent::Terminated => {
                self.clients.remove(key);
                if let Some(e) = self.ended.get_mut(&call) {
                    e.clients = e.clients.saturating_sub(1);
                    if let ClientRole::Invite { attempt, .. } = role {
                        e.acks.retain(|(a, _)| *a != attempt);
                    }
                    if e.clients == 0 {
                        self.ended.remove(&call);
                    }
                }
            }
            ClientEvent::Final(m) if m.status().is_some_and(|s| (200..300).contains(&s)) => {
                let ClientRole::Invite { attempt, .. } = role else { return };
                let Some(e) = self.ended.get(&call) else { return };
                let tag = m.to_tag().ok().flatten();
                // Rare (our ACK was lost): the ACK is read again to tell its dialog.
                let same_dialog = |out: &&Outbound| {
                    Message::parse(out.data.clone(), sip::Framing::Datagram)
                        .is_ok_and(|ack| ack.to_tag().ok().flatten() == tag)
                };
                if let Some(out) = e.acks.iter().filter(|(a, _)| *a == attempt).map(|(_, o)| o).find(same_dialog) {
                    self.outbox.push_back(out.clone());
                    bump(&self.stats.requests_retransmitted);
                    return;
                }
                let Some(dest) = self.clients.get(key).map(|c| c.dest.clone()) else { return };
                let Some((ack, bye)) = crate::call::ack_and_bye_for_2xx(&m, None) else {
                    debug!("a late 2xx without a Contact: not answered");
                    return;
                };
                let ack = self.with_via(ack, dest.kind);
                self.outbox.push_back(dest.outbound(ack.to_bytes()));
                self.start_client(bye, dest, ClientRole::Bye, now);
            }
            _ => {}
        }
    }

    /// A request carrying a To tag: it belongs to a dialog of one of our calls, or to none
    /// (`false`: the caller answers it as outside any dialog).
    pub(super) fn in_dialog(&mut self, key: &TransactionKey, msg: &Message, inbound: &Inbound, now: Instant) -> bool {
        let Some(dialog) = dialog_id(msg) else { return false };
        let Some(&(id, side)) = self.dialogs.get(&dialog as &dyn DialogId) else { return false };
        if msg.method() == Some(Method::Ack) {
            if let Some(c) = self.calls.get_mut(&id) {
                if side == Side::Caller {
                    c.answer = None; // the 2xx arrived
                }
                c.call.handle_ack(side, msg, now);
            }
            self.drive(id, now);
            return true;
        }
        if self.new_server_transaction(key, msg, inbound, now).is_none() {
            return true;
        }
        let key = key.clone();
        let txn = TxnRef(self.next_txn);
        self.next_txn += 1;
        if let Some(c) = self.calls.get_mut(&id) {
            c.server_txns.insert(txn, key);
            c.call.handle_dialog_request(side, txn, msg, now);
        }
        self.drive(id, now);
        true
    }

    /// Keeps the INVITE of transaction `invite` with its pending admission, if it has one,
    /// before the transaction answers it and lets it go.
    pub(super) fn keep_pending_invite(&mut self, invite: &TransactionKey) {
        let Some(request) = self.servers.get(invite).and_then(|e| e.txn.request()) else { return };
        // Admissions in flight are few: a scan, not another index.
        if let Some(p) = self.pending.values_mut().find(|p| &p.a_txn == invite) {
            p.invite = Some(Box::new(request.clone()));
        }
    }

    /// The caller cancelled an INVITE that belongs to a call.
    pub(super) fn cancel_call(&mut self, invite: &TransactionKey, now: Instant) -> bool {
        let Some(&id) = self.a_invites.get(invite) else { return false };
        if let Some(c) = self.calls.get_mut(&id) {
            c.call.handle_a_cancel(now);
        }
        self.drive(id, now);
        true
    }

    /// A call's timer is due.
    pub(super) fn call_timeout(&mut self, id: u64, now: Instant) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        if c.scheduled.is_some_and(|s| s > now) {
            return; // a deadline that moved earlier fires on its own entry
        }
        c.scheduled = None;
        if c.call.poll_timeout().is_some_and(|t| t <= now) {
            c.call.handle_timeout(now);
        }
        let mut resend = None;
        let mut abandon = false;
        if let Some(a) = &mut c.answer {
            if now >= a.give_up {
                abandon = true;
            } else if now >= a.next {
                resend = Some(a.data.clone());
                a.interval = (a.interval * 2).min(self.config.timers.t2);
                a.next = now + a.interval;
            }
        }
        if abandon {
            // No ACK for our 2xx in 64*T1: the caller is gone; end the call (RFC 3261 13.3.1.4).
            c.answer = None;
            c.call.hang_up(HangupBy::System, now);
        }
        if let Some(data) = resend {
            let out = c.a_route.outbound(data);
            self.outbox.push_back(out);
            bump(&self.stats.responses_retransmitted);
        }
        self.drive(id, now);
    }

    /// Ends every call now (a drain that ran out of time): BYE on both legs, records out.
    pub fn hang_up_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.calls.get_mut(&id) {
                match c.call.state() {
                    CallState::Answered { .. } => c.call.hang_up(HangupBy::System, now),
                    CallState::Trying { .. } | CallState::Early { .. } => c.call.handle_a_cancel(now),
                    CallState::Ended | CallState::Failed => {}
                }
            }
            self.drive(id, now);
        }
    }
}

/// The CANCEL of an INVITE we sent (RFC 3261 section 9.1): its Request-URI, Call-ID, From, To,
/// Route and top Via (same branch), CSeq number with the method CANCEL.
fn cancel_for(invite: &Message) -> Option<Message> {
    let mut cancel = Message::new_request("CANCEL", invite.request_uri_str()?);
    cancel.push_header(HeaderName::Via, invite.header(HeaderName::Via)?);
    for r in invite.header_values(HeaderName::Route) {
        cancel.push_header(HeaderName::Route, r);
    }
    cancel.push_header(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        cancel.push_header(name, invite.header(name)?);
    }
    cancel.push_header(HeaderName::CSeq, &format!("{} CANCEL", invite.cseq().ok()?.seq));
    Some(cancel)
}

/// The record of a call refused after identification (or cancelled before its first route).
fn refused_report(
    context: CallContext,
    invite: &Message,
    status: u16,
    reason: Option<Reason>,
    now: SystemTime,
) -> CallReport {
    CallReport {
        a_call_id: invite.call_id().unwrap_or_default().to_owned(),
        b_call_id: None,
        from_sent: None,
        to_sent: None,
        answered_at: None,
        ended_at: now,
        call_sec: 0,
        billed_sec: 0,
        cost: None,
        status,
        reason,
        ended_by: EndedBy::System,
        attempts: Vec::new(),
        context,
    }
}
