//! One outbound call through the back-to-back user agent, as a sans-I/O state machine: the
//! customer's leg (A, where we are the UAS) and the carrier legs (B, one per route attempt, where
//! we are the UAC). The driver owns the transactions and the sockets; the call decides what to
//! send on each leg, and when. It reads the same way as the transactions (quinn-proto's
//! vocabulary): `handle_*` for what happened, `poll_action` / `poll_timeout` / `poll_event` for
//! what to do next; `now` is always passed in.
//!
//! This part covers call setup: the route plan walked attempt by attempt, failover exactly where
//! `trunking::routing::after_attempt` says, the per-attempt timeouts (`timeout_1xx_secs`: no
//! provisional answer; `timeout_2xx_secs`: no final answer), provisional responses relayed (with
//! their SDP), the answer relayed and its ACK carried end to end, a CANCEL from the caller, and
//! the caller's final answer when every route failed (the last meaningful response, or `503` with
//! the `PE` code). Topology hiding: the B-leg has its own Call-ID, tags, CSeq and Contact; nothing
//! of the carrier's Contact, Record-Route or Via reaches the caller, nor the caller's the carrier.
//! SDP passes unchanged: media anchoring will rewrite bodies at [`Call::offer_for_b`] and
//! [`Call::answer_for_a`], the seam kept for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::Message;
use sip::headers::HeaderName;
use sip::message::push_u32;
use trunking::catalog::Reason;
use trunking::routing::{AttemptOutcome, Next, Transport, after_attempt, final_for_caller};

mod dialog;

/// One route of the plan, owned (the decision's plan borrows the configuration; a call outlives
/// a configuration change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    pub carrier_id: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// The Request-URI user toward the carrier: its tech prefix and the number.
    pub user: String,
    /// The carrier's digest login, answered when it challenges our INVITE (401/407).
    pub credentials: Option<CarrierLogin>,
    /// The Request-URI as is (a registered contact's), instead of one made of `user`, `host`
    /// and `port`.
    pub request_uri: Option<String>,
}

/// A carrier's digest user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct CarrierLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for CarrierLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line.
        f.debug_struct("CarrierLogin").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A CSeq value: `number method`.
fn write_cseq(v: &mut String, cseq: u32, method: &str) {
    push_u32(v, cseq);
    v.push(' ');
    v.push_str(method);
}

impl RouteTarget {
    /// The owned targets of a decision's route plan, in order.
    pub fn from_plan(plan: &trunking::routing::RoutePlan<'_>) -> Vec<RouteTarget> {
        plan.attempts
            .iter()
            .map(|a| RouteTarget {
                carrier_id: a.carrier_id().to_owned(),
                host: a.host().to_owned(),
                port: a.port(),
                transport: a.transport(),
                user: a.dial(&plan.number).to_string(),
                credentials: a
                    .credentials()
                    .map(|c| CarrierLogin { username: c.username.to_owned(), password: c.password.to_owned() }),
                request_uri: None,
            })
            .collect()
    }

    pub fn uri(&self) -> String {
        if let Some(uri) = &self.request_uri {
            return uri.clone();
        }
        let mut uri = String::with_capacity(self.user.len() + self.host.len() + 32);
        self.push_uri(&mut uri);
        uri
    }

    /// Appends [`RouteTarget::uri`] to `out` (a header value is written in place).
    pub fn push_uri(&self, out: &mut String) {
        if let Some(uri) = &self.request_uri {
            out.push_str(uri);
            return;
        }
        out.push_str("sip:");
        out.push_str(&self.user);
        out.push('@');
        // An IPv6 address is bracketed in a URI.
        let bracketed = self.host.contains(':');
        if bracketed {
            out.push('[');
        }
        out.push_str(&self.host);
        if bracketed {
            out.push(']');
        }
        out.push(':');
        push_u32(out, u32::from(self.port));
        match self.transport {
            Transport::Udp => {}
            Transport::Tcp => out.push_str(";transport=tcp"),
            Transport::Tls => out.push_str(";transport=tls"),
        }
    }
}

/// What a new call is made of. Identifiers are drawn by the driver (the call draws no
/// randomness).
#[derive(Clone, Debug)]
pub struct CallSetup {
    /// The customer's INVITE as received.
    pub invite: Message,
    pub routes: Vec<RouteTarget>,
    /// The caller number to present toward carriers (the decision's), and whether anonymously.
    pub caller: String,
    pub anonymous: bool,
    /// Our host (and port) as carriers and customers must reach us: Contact and From host.
    /// Shared by every call: the switch's one copy.
    pub local: Arc<str>,
    /// The To tag of our answers on the A-leg.
    pub a_tag: String,
    /// The B-leg's Call-ID and From tag (one dialog per call toward carriers, new CSeq per attempt).
    pub b_call_id: String,
    pub b_tag: String,
    /// No provisional answer (above 100) within this: the attempt failed, try the next route.
    pub timeout_1xx: Duration,
    /// No final answer within this after the attempt began: the call ends `408`.
    pub timeout_2xx: Duration,
    /// An answered call with no signalling for this long is torn down (a lower `Session-Expires`
    /// agreed by the peers wins, RFC 4028).
    pub idle_limit: Duration,
    /// `Server`/`User-Agent` product token (shared, like `local`).
    pub product: Arc<str>,
    /// The client nonce of our digest answers to carriers (drawn by the driver).
    pub cnonce: String,
    /// Header fields the rules want on the B-leg INVITE (an inbound call's
    /// `P-Asserted-Identity` as the carrier sent it).
    pub b_headers: Vec<(HeaderName, String)>,
    /// The first this many routes ring at once (simultaneous ringing of registered contacts):
    /// the first answer wins, the others get CANCEL; 0 or 1 tries routes one by one.
    pub ring_together: usize,
}

/// What the driver must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer on the A-leg's INVITE server transaction (a provisional or the final response).
    RespondA(Message),
    /// Start an INVITE client transaction toward `routes[attempt]`; the driver adds its Via
    /// (with a new branch) and resolves the target (RFC 3263).
    InviteB { attempt: usize, request: Message },
    /// Cancel the INVITE of `attempt` (the driver builds the CANCEL from that transaction's
    /// request, RFC 3261 section 9.1, once a provisional response has come).
    CancelB { attempt: usize },
    /// Send this ACK for a 2xx on the B-leg (end to end: outside any transaction).
    AckB { attempt: usize, request: Message },
    /// Hang up an answer that came too late (after a CANCEL): BYE in the B dialog.
    ByeB { attempt: usize, request: Message },
    /// Start a client transaction for this in-dialog request on `side`'s leg; its responses
    /// come back through [`Call::handle_dialog_response`] with `out`.
    Request { side: Side, out: OutRef, request: Message },
    /// Answer a request received in a dialog (on the server transaction the driver named `txn`).
    Respond { side: Side, txn: TxnRef, response: Message },
    /// Send this ACK on `side`'s leg, outside any transaction (a re-INVITE's 2xx, end to end).
    Ack { side: Side, request: Message },
}

/// A leg of the call: the caller's (A) or the callee's (B, the carrier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Caller,
    Callee,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// Who ended an answered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupBy {
    Caller,
    Callee,
    /// The platform: no signalling within the idle limit or the session timer.
    System,
}

/// A server transaction of the driver's, named by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxnRef(pub u64);

/// A request the call sent in a dialog, named by the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutRef(pub u32);

/// How the call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// An attempt is in progress without a provisional answer yet: failover is still possible.
    Trying {
        attempt: usize,
    },
    /// A provisional answer came: this route carries the call until its final answer.
    Early {
        attempt: usize,
    },
    Answered {
        attempt: usize,
    },
    /// An answered call that has been hung up.
    Ended,
    /// Setup failed or was cancelled: the final response to the caller is sent.
    Failed,
}

/// What the rest of the platform must learn (CDRs, webhooks, counters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// An attempt ended: the carrier, and how.
    AttemptEnded {
        attempt: usize,
        outcome: AttemptOutcome,
    },
    Answered {
        attempt: usize,
    },
    /// An answered call ended, and who ended it.
    Ended {
        by: HangupBy,
    },
    /// Setup ended without an answer: the status (and product reason) the caller got.
    Failed {
        status: u16,
        reason: Option<Reason>,
        cancelled: bool,
    },
}

/// The B-leg dialog state of an answered attempt (what the BYE and in-dialog requests need).
#[derive(Clone, Debug)]
struct BDialog {
    attempt: usize,
    remote_tag: String,
    remote_target: String,
    route_set: Vec<String>,
}

/// One outbound call's setup.
#[derive(Debug)]
pub struct Call {
    setup: CallSetup,
    state: CallState,
    /// CSeq of the last B-leg request.
    b_cseq: u32,
    /// When the current attempt began.
    attempt_started: Option<Instant>,
    /// Outcomes of the attempts so far, in order.
    outcomes: Vec<AttemptOutcome>,
    /// Attempts that sent a provisional answer (a CANCEL may be sent to them).
    provisional: Vec<usize>,
    /// Attempts ringing besides the current one (simultaneous ringing).
    forks: Vec<usize>,
    /// The route the next attempt takes.
    next_route: usize,
    /// Attempts to cancel once they send a provisional response (RFC 3261 section 9.1: no
    /// CANCEL before one); kept across attempts, a route given up on still gets its CANCEL.
    cancel_pending: Vec<usize>,
    answered: Option<BDialog>,
    /// Attempts whose INVITE was already re-sent with our digest answer: a second challenge
    /// is a refusal (wrong credentials), not a loop.
    authenticated: Vec<usize>,
    dialog: dialog::DialogState,
    actions: VecDeque<Action>,
    events: VecDeque<CallEvent>,
}

impl Call {
    /// Starts a call: the first route's INVITE, or the caller's final answer when there is
    /// no route.
    pub fn new(setup: CallSetup, now: Instant) -> Call {
        let mut call = Call {
            setup,
            state: CallState::Failed,
            b_cseq: 0,
            attempt_started: None,
            outcomes: Vec::new(),
            provisional: Vec::new(),
            forks: Vec::new(),
            next_route: 0,
            cancel_pending: Vec::new(),
            answered: None,
            authenticated: Vec::new(),
            dialog: dialog::DialogState::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        call.start_attempt(0, now);
        call
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    pub fn attempts(&self) -> &[AttemptOutcome] {
        &self.outcomes
    }

    /// Our tags: the caller's dialog's (A) and the carrier's (B).
    pub fn tags(&self) -> (&str, &str) {
        (&self.setup.a_tag, &self.setup.b_tag)
    }

    /// The route plan, in order (attempt `i` took `routes()[i]`).
    pub fn routes(&self) -> &[RouteTarget] {
        &self.setup.routes
    }

    /// The body offered to the carrier: the caller's, unchanged until media anchoring.
    fn offer_for_b(&self) -> (Option<String>, Bytes) {
        let ct = self.setup.invite.header(HeaderName::ContentType).map(str::to_owned);
        (ct, self.setup.invite.body().clone())
    }

    /// The body answered to the caller: the carrier's, unchanged until media anchoring.
    fn answer_for_a(&self, resp: &Message) -> (Option<String>, Bytes) {
        (resp.header(HeaderName::ContentType).map(str::to_owned), resp.body().clone())
    }

    fn start_attempt(&mut self, attempt: usize, now: Instant) {
        if attempt >= self.setup.routes.len() {
            self.fail_to_caller(now);
            return;
        }
        // The first routes may ring together; the rest one by one.
        let together = if attempt == 0 { self.setup.ring_together.clamp(1, self.setup.routes.len()) } else { 1 };
        self.state = CallState::Trying { attempt };
        self.attempt_started = Some(now);
        self.provisional.clear();
        self.forks = (attempt + 1..attempt + together).collect();
        self.next_route = attempt + together;
        for a in attempt..attempt + together {
            let req = self.invite_for(a);
            self.actions.push_back(Action::InviteB { attempt: a, request: req });
        }
    }

    /// Whether `attempt` is still ringing (the current one or a fork of it).
    fn live(&self, attempt: usize) -> bool {
        !matches!(self.state, CallState::Answered { .. })
            && (self.current_attempt() == Some(attempt) || self.forks.contains(&attempt))
    }

    /// Every attempt still ringing, the current one first.
    fn ringing(&self) -> Vec<usize> {
        match self.state {
            CallState::Trying { attempt } | CallState::Early { attempt } => {
                std::iter::once(attempt).chain(self.forks.iter().copied()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// `attempt` failed while others still ring: drop it (the current one's place goes to a
    /// fork, one that rang first). `true` when others still ring.
    fn drop_fork(&mut self, attempt: usize) -> bool {
        if self.forks.is_empty() {
            return false;
        }
        if self.forks.contains(&attempt) {
            self.forks.retain(|a| *a != attempt);
            return true;
        }
        let pick = self.forks.iter().position(|a| self.provisional.contains(a)).unwrap_or(0);
        let next = self.forks.remove(pick);
        self.state = if self.provisional.contains(&next) {
            CallState::Early { attempt: next }
        } else {
            match self.state {
                CallState::Early { .. } if !self.provisional.is_empty() => CallState::Early { attempt: next },
                _ => CallState::Trying { attempt: next },
            }
        };
        true
    }

    /// The INVITE toward `routes[attempt]`, with the next CSeq of the B dialog.
    fn invite_for(&mut self, attempt: usize) -> Message {
        let uri = self.setup.routes[attempt].uri();
        self.b_cseq += 1;
        let mut req = Message::new_request("INVITE", &uri);
        let max_forwards = self.setup.invite.max_forwards().ok().flatten().unwrap_or(70).saturating_sub(1);
        req.push_header_with(HeaderName::MaxForwards, |v| push_u32(v, u32::from(max_forwards)));
        req.push_header_with(HeaderName::From, |v| self.write_b_from(v));
        req.push_header_with(HeaderName::To, |v| {
            v.push('<');
            v.push_str(&uri);
            v.push('>');
        });
        req.push_header(HeaderName::CallId, &self.setup.b_call_id);
        req.push_header_with(HeaderName::CSeq, |v| {
            push_u32(v, self.b_cseq);
            v.push_str(" INVITE");
        });
        req.push_header_with(HeaderName::Contact, |v| self.write_contact(v));
        if self.setup.anonymous {
            req.push_header_with(HeaderName::PAssertedIdentity, |v| {
                v.push_str("<sip:");
                v.push_str(&self.setup.caller);
                v.push('@');
                v.push_str(&self.setup.local);
                v.push('>');
            });
            req.push_header(HeaderName::Privacy, "id");
        }
        for (name, value) in &self.setup.b_headers {
            req.push_header(*name, value);
        }
        req.push_header(HeaderName::UserAgent, &self.setup.product);
        // RFC 4028: the caller's session timer request goes end to end; the answer's
        // Session-Expires comes back the same way and both legs refresh through us.
        for name in [HeaderName::SessionExpires, HeaderName::MinSe] {
            for v in self.setup.invite.header_values(name) {
                req.push_header(name, v);
            }
        }
        // Only the `timer` option: the others (100rel above all) are the caller's with us, and
        // we do not acknowledge reliable provisionals on its behalf.
        let timer = self
            .setup
            .invite
            .header_values(HeaderName::Supported)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("timer"));
        if timer {
            req.push_header(HeaderName::Supported, "timer");
        }
        let (content_type, body) = self.offer_for_b();
        if !body.is_empty() {
            req.set_body(body, content_type.as_deref());
        }
        req
    }

    /// The INVITE of `attempt` again, answering the carrier's digest challenge (RFC 3261
    /// section 22.2), once per attempt; `None` when the route has no login or the challenge
    /// cannot be answered.
    fn answer_challenge(&mut self, attempt: usize, resp: &Message) -> Option<Message> {
        if self.authenticated.contains(&attempt) {
            return None;
        }
        let login = self.setup.routes.get(attempt)?.credentials.clone()?;
        let (challenge_header, answer_header) = match resp.status()? {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            _ => (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization),
        };
        let uri = self.setup.routes[attempt].uri();
        let answer = resp.auth(challenge_header).flatten().find_map(|challenge| {
            trunking::digest::authorization(
                &challenge,
                "INVITE",
                &uri,
                &login.username,
                &login.password,
                &self.setup.cnonce,
                1,
            )
            .ok()
        })?;
        self.authenticated.push(attempt);
        let mut req = self.invite_for(attempt);
        req.push_header(answer_header, &answer);
        Some(req)
    }

    fn current_attempt(&self) -> Option<usize> {
        match self.state {
            CallState::Trying { attempt } | CallState::Early { attempt } | CallState::Answered { attempt } => {
                Some(attempt)
            }
            CallState::Failed | CallState::Ended => None,
        }
    }

    /// A response on the B-leg INVITE of `attempt` (provisional, final, or a 2xx retransmission).
    pub fn handle_b_response(&mut self, attempt: usize, resp: &Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        if let Some(i) = self.cancel_pending.iter().position(|a| *a == attempt) {
            match status {
                101..=199 => {
                    self.cancel_pending.swap_remove(i);
                    self.actions.push_back(Action::CancelB { attempt });
                    return;
                }
                200.. => {
                    self.cancel_pending.swap_remove(i); // ended on its own: nothing to cancel
                }
                _ => return,
            }
        }
        if (200..300).contains(&status) {
            self.b_answered(attempt, resp, now);
            return;
        }
        if !self.live(attempt) {
            return; // a late answer of an abandoned attempt
        }
        if status < 200 {
            if status == 100 {
                return; // the next hop's, not the call's
            }
            if !self.provisional.contains(&attempt) {
                self.provisional.push(attempt);
            }
            if matches!(after_attempt(AttemptOutcome::Response(status)), Next::Finish) {
                // The ringing route becomes the current one (a fork that rang first).
                if let Some(current) = self.current_attempt().filter(|c| *c != attempt) {
                    self.forks.retain(|a| *a != attempt);
                    self.forks.push(current);
                }
                self.state = CallState::Early { attempt };
            }
            let mut a = self.response_for_a(status, resp.reason().unwrap_or(""));
            let (ct, body) = self.answer_for_a(resp);
            if !body.is_empty() {
                a.set_body(body, ct.as_deref());
            }
            self.actions.push_back(Action::RespondA(a));
            return;
        }
        if matches!(status, 401 | 407)
            && let Some(req) = self.answer_challenge(attempt, resp)
        {
            // Same attempt, same timers: the carrier asked who we are.
            self.actions.push_back(Action::InviteB { attempt, request: req });
            return;
        }
        // A final failure: fail over or finish (once nothing else rings).
        self.attempt_ended(attempt, AttemptOutcome::Response(status));
        if self.drop_fork(attempt) {
            return;
        }
        let early = matches!(self.state, CallState::Early { .. });
        if !early && matches!(after_attempt(AttemptOutcome::Response(status)), Next::TryNextRoute) {
            self.start_attempt(self.next_route, now);
        } else if !self.outcomes.is_empty() && self.setup.ring_together > 1 && !early {
            // Every route rung together failed: the best of their answers.
            self.fail_to_caller(now);
        } else {
            let resp_a = self.response_for_a(status, resp.reason().unwrap_or(""));
            self.finish_failed(resp_a, status, None, false);
        }
    }

    /// The B-leg INVITE of `attempt` got no final answer in time (Timer B) or its transport
    /// failed: fail over.
    pub fn handle_b_failure(&mut self, attempt: usize, outcome: AttemptOutcome, now: Instant) {
        if !self.live(attempt) {
            return;
        }
        self.attempt_ended(attempt, outcome);
        if self.drop_fork(attempt) {
            return;
        }
        match (self.state, after_attempt(outcome)) {
            (CallState::Trying { .. }, Next::TryNextRoute) => self.start_attempt(self.next_route, now),
            _ => self.fail_to_caller(now),
        }
    }

    /// The caller cancelled: cancel the B-leg; the A-leg ends `487` (the driver's server
    /// transaction answers the CANCEL itself with `200`).
    pub fn handle_a_cancel(&mut self, _now: Instant) {
        if self.current_attempt().is_none() || matches!(self.state, CallState::Answered { .. }) {
            return; // too late: the answer crossed the CANCEL
        }
        for attempt in self.ringing() {
            self.cancel(attempt);
            self.attempt_ended(attempt, AttemptOutcome::Response(487));
        }
        self.forks.clear();
        let resp = self.response_for_a(487, "Request Terminated");
        self.finish_failed(resp, 487, None, true);
    }

    /// The caller's ACK for our 2xx: carried to the carrier end to end, with its body (a late
    /// offer's answer).
    fn handle_a_ack(&mut self, ack: &Message, _now: Instant) {
        let Some(d) = self.answered.clone() else { return };
        let mut req = self.in_b_dialog("ACK", &d, self.b_cseq);
        if !ack.body().is_empty() {
            req.set_body(ack.body().clone(), ack.header(HeaderName::ContentType));
        }
        self.actions.push_back(Action::AckB { attempt: d.attempt, request: req });
    }

    /// Timers: the attempt's 1xx and 2xx deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let CallState::Answered { .. } = self.state {
            if self.dialog.idle_deadline().is_some_and(|d| now >= d) {
                self.hang_up(HangupBy::System, now);
            }
            return;
        }
        let Some(started) = self.attempt_started else { return };
        match self.state {
            CallState::Trying { .. } if now >= started + self.setup.timeout_1xx => {
                // No sign of life from these routes: give them up and try the next.
                let ringing = self.ringing();
                let last = ringing.last().copied();
                for attempt in ringing {
                    self.cancel(attempt);
                    if Some(attempt) != last {
                        self.attempt_ended(attempt, AttemptOutcome::Timeout);
                    }
                }
                self.forks.clear();
                if let Some(attempt) = last {
                    // The current one's place, so the failure below fails over.
                    self.state = CallState::Trying { attempt };
                    self.handle_b_failure(attempt, AttemptOutcome::Timeout, now);
                }
            }
            CallState::Early { .. } if now >= started + self.setup.timeout_2xx => {
                for attempt in self.ringing() {
                    self.cancel(attempt);
                    self.attempt_ended(attempt, AttemptOutcome::Timeout);
                }
                self.forks.clear();
                let resp = self.response_for_a(408, "Request Timeout");
                self.finish_failed(resp, 408, None, false);
            }
            _ => {}
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Over, with nothing left to do but answer late 2xx responses of its INVITEs: no relayed
    /// request waits for an answer or an ACK, no CANCEL is owed, nothing is queued and no timer
    /// runs. Such a call's driver may let it go and keep only the ACKs it sent
    /// ([`ack_and_bye_for_2xx`] answers any other 2xx).
    pub fn settled(&self) -> bool {
        matches!(self.state, CallState::Ended | CallState::Failed)
            && self.cancel_pending.is_empty()
            && self.actions.is_empty()
            && self.events.is_empty()
            && self.dialog.is_idle()
            && self.poll_timeout().is_none()
    }

    /// When [`Call::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let CallState::Answered { .. } = self.state {
            return self.dialog.idle_deadline();
        }
        let started = self.attempt_started?;
        match self.state {
            CallState::Trying { .. } => Some(started + self.setup.timeout_1xx.min(self.setup.timeout_2xx)),
            CallState::Early { .. } => Some(started + self.setup.timeout_2xx),
            _ => None,
        }
    }

    fn b_answered(&mut self, attempt: usize, resp: &Message, now: Instant) {
        let remote_tag = resp.to_tag().ok().flatten().unwrap_or_default();
        if let Some(done) = &self.answered {
            // A retransmitted 2xx (our ACK was lost) or another fork's 2xx.
            if done.attempt == attempt && done.remote_tag == remote_tag {
                return; // the driver re-sends the ACK it sent for the first one
            }
            // Another dialog answered too: accept and hang it up at once.
            self.refuse_answer(attempt, resp);
            return;
        }
        let stale = !self.live(attempt) || self.state == CallState::Failed;
        if stale {
            // Answered after we gave the route up (a CANCEL crossed the 200): ACK and BYE.
            self.refuse_answer(attempt, resp);
            return;
        }
        let dialog = BDialog {
            attempt,
            remote_tag: remote_tag.to_owned(),
            remote_target: remote_target(resp)
                .unwrap_or_else(|| self.setup.routes.get(attempt).map(RouteTarget::uri).unwrap_or_default()),
            route_set: uac_route_set(resp),
        };
        // The first answer wins: the others ringing are cancelled.
        for other in self.ringing().into_iter().filter(|a| *a != attempt) {
            self.cancel(other);
            self.attempt_ended(other, AttemptOutcome::Response(487));
        }
        self.forks.clear();
        self.state = CallState::Answered { attempt };
        self.dialog.answered(resp, now, self.setup.idle_limit);
        self.answered = Some(dialog);
        let mut a = self.response_for_a(resp.status().unwrap_or(200), resp.reason().unwrap_or("OK"));
        a.push_header_with(HeaderName::Contact, |v| self.write_contact(v));
        for name in [HeaderName::SessionExpires, HeaderName::Require] {
            for v in resp.header_values(name) {
                a.push_header(name, v);
            }
        }
        let (ct, body) = self.answer_for_a(resp);
        if !body.is_empty() {
            a.set_body(body, ct.as_deref());
        }
        self.actions.push_back(Action::RespondA(a));
        self.outcomes.push(AttemptOutcome::Response(resp.status().unwrap_or(200)));
        self.events.push_back(CallEvent::AttemptEnded { attempt, outcome: AttemptOutcome::Response(200) });
        self.events.push_back(CallEvent::Answered { attempt });
    }

    /// A 2xx the call does not want (another fork's, or one that crossed our CANCEL): ACK it
    /// and hang its dialog up at once.
    fn refuse_answer(&mut self, attempt: usize, resp: &Message) {
        let fallback = self.setup.routes.get(attempt).map(RouteTarget::uri);
        if let Some((ack, bye)) = ack_and_bye_for_2xx(resp, fallback.as_deref()) {
            // Our later requests of the B-leg's Call-ID stay above this BYE's CSeq.
            self.b_cseq = self.b_cseq.max(resp.cseq().map_or(0, |c| c.seq.saturating_add(1)));
            self.actions.push_back(Action::AckB { attempt, request: ack });
            self.actions.push_back(Action::ByeB { attempt, request: bye });
        }
    }

    /// A request in the answered B dialog (RFC 3261 section 12.2.1.1).
    fn in_b_dialog(&self, method: &str, d: &BDialog, cseq: u32) -> Message {
        let mut req = Message::new_request(method, &d.remote_target);
        for r in &d.route_set {
            req.push_header(HeaderName::Route, r);
        }
        req.push_header(HeaderName::MaxForwards, "70");
        req.push_header_with(HeaderName::From, |v| self.write_b_from(v));
        req.push_header_with(HeaderName::To, |v| {
            v.push('<');
            if let Some(route) = self.setup.routes.get(d.attempt) {
                route.push_uri(v);
            }
            v.push_str(">;tag=");
            v.push_str(&d.remote_tag);
        });
        req.push_header(HeaderName::CallId, &self.setup.b_call_id);
        req.push_header_with(HeaderName::CSeq, |v| write_cseq(v, cseq, method));
        req
    }

    /// Our From on the B-leg: the caller's number (or anonymous) at our address, with our tag.
    fn write_b_from(&self, v: &mut String) {
        let from_user = if self.setup.anonymous { "anonymous" } else { &self.setup.caller };
        let from_host = if self.setup.anonymous { "anonymous.invalid" } else { &self.setup.local };
        v.push_str("<sip:");
        v.push_str(from_user);
        v.push('@');
        v.push_str(from_host);
        v.push_str(">;tag=");
        v.push_str(&self.setup.b_tag);
    }

    /// Our Contact on either leg: `<sip:` our address `>`.
    fn write_contact(&self, v: &mut String) {
        v.push_str("<sip:");
        v.push_str(&self.setup.local);
        v.push('>');
    }

    /// Cancels the current attempt now, or once it has sent a provisional response.
    fn cancel(&mut self, attempt: usize) {
        if self.provisional.contains(&attempt) {
            self.actions.push_back(Action::CancelB { attempt });
        } else {
            self.cancel_pending.push(attempt);
        }
    }

    fn attempt_ended(&mut self, attempt: usize, outcome: AttemptOutcome) {
        self.outcomes.push(outcome);
        self.events.push_back(CallEvent::AttemptEnded { attempt, outcome });
    }

    /// Every route failed (or there was none): the last meaningful response, or `503 PE`.
    fn fail_to_caller(&mut self, _now: Instant) {
        match final_for_caller(&self.outcomes) {
            Some(status) => {
                let resp = self.response_for_a(status, reason_phrase(status));
                self.finish_failed(resp, status, None, false);
            }
            None => {
                let reason = if self.setup.routes.is_empty() { Reason::PE1 } else { Reason::PE2 };
                let r = reason.response();
                let resp = self.response_for_a(r.status, r.phrase);
                self.finish_failed(resp, r.status, Some(reason), false);
            }
        }
    }

    fn finish_failed(&mut self, resp: Message, status: u16, reason: Option<Reason>, cancelled: bool) {
        self.state = CallState::Failed;
        self.attempt_started = None;
        self.actions.push_back(Action::RespondA(resp));
        self.events.push_back(CallEvent::Failed { status, reason, cancelled });
    }

    /// A response on the A-leg with our tag and no trace of the carrier's topology.
    fn response_for_a(&self, status: u16, reason: &str) -> Message {
        let mut r = self.setup.invite.response_to(status, reason, Some(&self.setup.a_tag));
        r.push_header(HeaderName::Server, &self.setup.product);
        r
    }
}

/// The ACK and the BYE of the dialog a 2xx to one of our INVITEs made, from the 2xx alone
/// (RFC 3261 sections 12.1.2 and 13.2.2.4): the remote target is its first Contact (else
/// `fallback`, the URI the INVITE went to), the route set its Record-Route reversed; From, To
/// and Call-ID are the response's, which are the INVITE's with the callee's tag. The ACK
/// carries the INVITE's CSeq number, the BYE the next. The driver adds the Via. `None` when
/// the response has no CSeq or no target can be found.
pub fn ack_and_bye_for_2xx(resp: &Message, fallback: Option<&str>) -> Option<(Message, Message)> {
    let seq = resp.cseq().ok()?.seq;
    let target = remote_target(resp).or_else(|| fallback.map(str::to_owned))?;
    let routes = uac_route_set(resp);
    let (from, to, call_id) =
        (resp.header(HeaderName::From)?, resp.header(HeaderName::To)?, resp.header(HeaderName::CallId)?);
    let request = |method: &str, cseq: u32| {
        let mut req = Message::new_request(method, &target);
        for r in &routes {
            req.push_header(HeaderName::Route, r);
        }
        req.push_header(HeaderName::MaxForwards, "70");
        req.push_header(HeaderName::From, from);
        req.push_header(HeaderName::To, to);
        req.push_header(HeaderName::CallId, call_id);
        req.push_header_with(HeaderName::CSeq, |v| write_cseq(v, cseq, method));
        req
    };
    Some((request("ACK", seq), request("BYE", seq.saturating_add(1))))
}

/// The remote target a 2xx to our INVITE names: its first Contact's URI.
fn remote_target(resp: &Message) -> Option<String> {
    match resp.first_contact() {
        Ok(Some(c)) => Some(c.uri_str.to_owned()),
        _ => None,
    }
}

/// The route set of a UAC from a 2xx: its Record-Route in reverse order (RFC 3261 section
/// 12.1.2), each entry a header value.
fn uac_route_set(resp: &Message) -> Vec<String> {
    resp.name_addrs(HeaderName::RecordRoute)
        .map(|v| v.iter().rev().map(|r| format!("<{}>", r.uri_str)).collect())
        .unwrap_or_default()
}

/// The standard phrase of a status we answer with ourselves (a relayed response keeps the
/// carrier's phrase).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Call Failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::Framing;

    const SDP: &str =
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn parse(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_owned()), Framing::Datagram).expect("a message")
    }

    fn a_invite() -> Message {
        parse(&format!(
            "INVITE sip:+13125550199@sip.opentrunk.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcustomer1\r\n\
             Record-Route: <sip:edge.customer.example;lr>\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+13125550100@pbx.customer.example>;tag=a1\r\n\
             To: <sip:+13125550199@sip.opentrunk.test>\r\n\
             Call-ID: customer-call-1@pbx.customer.example\r\n\
             CSeq: 10 INVITE\r\n\
             Contact: <sip:pbx@192.0.2.10:5060>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ))
    }

    fn route(host: &str) -> RouteTarget {
        RouteTarget {
            carrier_id: "carrier-1".into(),
            host: host.into(),
            port: 5060,
            transport: Transport::Udp,
            user: "13125550199".into(),
            credentials: None,
            request_uri: None,
        }
    }

    fn setup(routes: Vec<RouteTarget>) -> CallSetup {
        CallSetup {
            invite: a_invite(),
            routes,
            caller: "+13125550100".into(),
            anonymous: false,
            local: "203.0.113.1:5060".into(),
            a_tag: "ours-a".into(),
            b_call_id: "b-leg-1@203.0.113.1".into(),
            b_tag: "ours-b".into(),
            timeout_1xx: Duration::from_secs(3),
            timeout_2xx: Duration::from_secs(90),
            idle_limit: Duration::from_secs(7200),
            product: "opentrunk/test".into(),
            cnonce: "c0ffee".into(),
            b_headers: Vec::new(),
            ring_together: 0,
        }
    }

    /// A response from the carrier to the B-leg INVITE `req`.
    fn b_response(req: &Message, status: u16, reason: &str, extra: &str, body: &str) -> Message {
        let mut text = format!("SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKb\r\n");
        for name in [HeaderName::From, HeaderName::CallId, HeaderName::CSeq] {
            text.push_str(&format!("{}: {}\r\n", name.as_str(), req.header(name).unwrap()));
        }
        let to = req.header(HeaderName::To).unwrap();
        text.push_str(&format!("To: {to}{}\r\n", if status > 100 { ";tag=carrier-tag" } else { "" }));
        text.push_str(extra);
        if body.is_empty() {
            text.push_str("Content-Length: 0\r\n\r\n");
        } else {
            text.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        }
        parse(&text)
    }

    fn drain(call: &mut Call) -> Vec<Action> {
        std::iter::from_fn(|| call.poll_action()).collect()
    }

    fn invite_of(actions: &[Action], n: usize) -> Message {
        match &actions[n] {
            Action::InviteB { request, .. } => request.clone(),
            other => panic!("expected an INVITE, got {other:?}"),
        }
    }

    fn status_of(a: &Action) -> u16 {
        match a {
            Action::RespondA(m) => m.status().unwrap(),
            other => panic!("expected a response to A, got {other:?}"),
        }
    }

    #[test]
    fn the_b_leg_is_a_new_dialog_that_hides_the_customer() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let actions = drain(&mut call);
        let b = invite_of(&actions, 0);
        assert_eq!(b.request_uri_str(), Some("sip:13125550199@198.51.100.1:5060"));
        assert_eq!(b.call_id().unwrap(), "b-leg-1@203.0.113.1");
        assert_eq!(b.from().unwrap().tag(), Some("ours-b"));
        assert_eq!(b.from().unwrap().user(), Some("+13125550100"));
        assert_eq!(b.max_forwards().unwrap(), Some(69));
        assert_eq!(b.body().as_ref(), SDP.as_bytes(), "SDP passes unchanged");
        let text = String::from_utf8(b.to_bytes().to_vec()).unwrap();
        for leak in ["customer.example", "192.0.2.10:5060;branch", "customer-call-1"] {
            assert!(!text.contains(leak), "{leak} leaked into the B-leg:\n{text}");
        }
        assert_eq!(call.state(), CallState::Trying { attempt: 0 });
    }

    #[test]
    fn fails_over_on_503_and_connects_on_the_next_gateway() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1"), route("198.51.100.2")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 503, "Service Unavailable", "", ""), now);
        let actions = drain(&mut call);
        let second = invite_of(&actions, 0);
        assert_eq!(second.request_uri_str(), Some("sip:13125550199@198.51.100.2:5060"));
        assert_eq!(second.cseq().unwrap().seq, 2, "a new transaction in the same B dialog");
        let answer = b_response(
            &second,
            200,
            "OK",
            "Contact: <sip:carrier@198.51.100.2:5060>\r\nRecord-Route: <sip:sbc.carrier.example;lr>\r\n",
            SDP,
        );
        call.handle_b_response(1, &answer, now);
        let actions = drain(&mut call);
        let Action::RespondA(ok) = &actions[0] else { panic!("{actions:?}") };
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.to().unwrap().tag(), Some("ours-a"));
        assert_eq!(ok.body().as_ref(), SDP.as_bytes());
        let text = String::from_utf8(ok.to_bytes().to_vec()).unwrap();
        assert!(!text.contains("carrier.example") && !text.contains("198.51.100.2"), "{text}");
        assert!(text.contains("Contact: <sip:203.0.113.1:5060>"));
        assert_eq!(call.state(), CallState::Answered { attempt: 1 });
        let events: Vec<_> = std::iter::from_fn(|| call.poll_event()).collect();
        assert_eq!(
            events,
            [
                CallEvent::AttemptEnded { attempt: 0, outcome: AttemptOutcome::Response(503) },
                CallEvent::AttemptEnded { attempt: 1, outcome: AttemptOutcome::Response(200) },
                CallEvent::Answered { attempt: 1 },
            ]
        );

        // The caller's ACK goes to the carrier end to end, in its dialog.
        call.handle_ack(Side::Caller, &parse("ACK sip:x@203.0.113.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"), now);
        let Action::AckB { attempt: 1, request: ack } = call.poll_action().unwrap() else { panic!() };
        assert_eq!(ack.request_uri_str(), Some("sip:carrier@198.51.100.2:5060"));
        assert_eq!(ack.header(HeaderName::Route), Some("<sip:sbc.carrier.example;lr>"));
        assert_eq!(ack.to().unwrap().tag(), Some("carrier-tag"));
        assert_eq!(ack.cseq().unwrap().seq, 2);
    }

    #[test]
    fn a_carrier_challenge_is_answered_once_with_its_login() {
        let now = Instant::now();
        let mut with_login = route("198.51.100.1");
        with_login.credentials = Some(CarrierLogin { username: "trunk7".into(), password: "s3cret".into() });
        let mut call = Call::new(setup(vec![with_login, route("198.51.100.2")]), now);
        let first = invite_of(&drain(&mut call), 0);
        let challenge = "Proxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n1\", qop=\"auth\"\r\n";
        call.handle_b_response(0, &b_response(&first, 407, "Proxy Authentication Required", challenge, ""), now);
        let actions = drain(&mut call);
        let Action::InviteB { attempt: 0, request: again } = &actions[0] else { panic!("{actions:?}") };
        assert_eq!(again.cseq().unwrap().seq, 2);
        let answer = again.header(HeaderName::ProxyAuthorization).expect("answers the challenge");
        assert!(answer.contains("username=\"trunk7\"") && answer.contains("cnonce=\"c0ffee\""), "{answer}");
        assert!(!answer.contains("s3cret"));
        // A second challenge means the login is wrong: the attempt failed (407 is no failover).
        call.handle_b_response(0, &b_response(again, 407, "Proxy Authentication Required", challenge, ""), now);
        let actions = drain(&mut call);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(status_of(&actions[0]), 407);
        // Without a login the challenge is the attempt's answer at once.
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 401, "Unauthorized", "", ""), now);
        assert_eq!(status_of(&drain(&mut call)[0]), 401);
    }

    #[test]
    fn session_timers_asked_by_the_caller_reach_the_carrier_and_its_interval_ends_a_silent_call() {
        let now = Instant::now();
        let mut s = setup(vec![route("198.51.100.1")]);
        let text = String::from_utf8(s.invite.to_bytes().to_vec()).unwrap().replace(
            "CSeq: 10 INVITE\r\n",
            "CSeq: 10 INVITE\r\nSupported: 100rel, timer\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\n",
        );
        s.invite = parse(&text);
        let mut call = Call::new(s, now);
        let b = invite_of(&drain(&mut call), 0);
        assert_eq!(b.header(HeaderName::SessionExpires), Some("1800;refresher=uac"));
        assert_eq!(b.header(HeaderName::MinSe), Some("90"));
        assert_eq!(b.header(HeaderName::Supported), Some("timer"));
        let ok = b_response(&b, 200, "OK", "Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\n", SDP);
        call.handle_b_response(0, &ok, now);
        let Action::RespondA(a) = &drain(&mut call)[0] else { panic!() };
        assert_eq!(a.header(HeaderName::SessionExpires), Some("1800;refresher=uac"));
        assert_eq!(a.header(HeaderName::Require), Some("timer"));
        // No refresh within the interval: both legs get a BYE.
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(1800)));
        call.handle_timeout(now + Duration::from_secs(1800));
        let byes = drain(&mut call).iter().filter(|a| matches!(a, Action::Request { request, .. } if request.method().is_some_and(|m| m.as_str() == "BYE"))).count();
        assert_eq!(byes, 2);
    }

    #[test]
    fn routes_ringing_together_the_first_answer_wins_and_the_others_are_cancelled() {
        let now = Instant::now();
        let mut s = setup(vec![route("198.51.100.1"), route("198.51.100.2"), route("198.51.100.3")]);
        s.ring_together = 2;
        let mut call = Call::new(s, now);
        let actions = drain(&mut call);
        assert_eq!(actions.len(), 2, "both ring at once: {actions:?}");
        let (first, second) = (invite_of(&actions, 0), invite_of(&actions, 1));
        // One is busy: the other still rings, the caller hears nothing yet.
        call.handle_b_response(0, &b_response(&first, 486, "Busy Here", "", ""), now);
        assert!(drain(&mut call).is_empty());
        call.handle_b_response(1, &b_response(&second, 180, "Ringing", "", ""), now);
        assert_eq!(status_of(&drain(&mut call)[0]), 180);
        call.handle_b_response(1, &b_response(&second, 200, "OK", "Contact: <sip:b@198.51.100.2>\r\n", SDP), now);
        assert_eq!(status_of(&drain(&mut call)[0]), 200);
        assert_eq!(call.state(), CallState::Answered { attempt: 1 });

        // Both ring; the first answers: the other, once it has rung, gets its CANCEL.
        let mut s = setup(vec![route("198.51.100.1"), route("198.51.100.2")]);
        s.ring_together = 2;
        let mut call = Call::new(s, now);
        let actions = drain(&mut call);
        let (first, second) = (invite_of(&actions, 0), invite_of(&actions, 1));
        call.handle_b_response(0, &b_response(&first, 200, "OK", "Contact: <sip:a@198.51.100.1>\r\n", SDP), now);
        assert_eq!(status_of(&drain(&mut call)[0]), 200);
        call.handle_b_response(1, &b_response(&second, 180, "Ringing", "", ""), now);
        let actions = drain(&mut call);
        assert!(matches!(actions[..], [Action::CancelB { attempt: 1 }]), "{actions:?}");
        // Every route rung together failing: the caller gets the best answer, not a failover
        // to nowhere.
        let mut s = setup(vec![route("198.51.100.1"), route("198.51.100.2")]);
        s.ring_together = 2;
        let mut call = Call::new(s, now);
        let actions = drain(&mut call);
        let (first, second) = (invite_of(&actions, 0), invite_of(&actions, 1));
        call.handle_b_response(0, &b_response(&first, 486, "Busy Here", "", ""), now);
        call.handle_b_response(1, &b_response(&second, 480, "Temporarily Unavailable", "", ""), now);
        let actions = drain(&mut call);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(matches!(call.state(), CallState::Failed));
    }

    #[test]
    fn failover_follows_the_product_table() {
        // (first gateway's answer, whether the second is tried)
        let rows = [
            (408, true),
            (480, true),
            (503, true),
            (504, true),
            (404, false),
            (486, false),
            (603, false),
            (500, false),
        ];
        for (status, next) in rows {
            let now = Instant::now();
            let mut call = Call::new(setup(vec![route("198.51.100.1"), route("198.51.100.2")]), now);
            let first = invite_of(&drain(&mut call), 0);
            call.handle_b_response(0, &b_response(&first, status, "X", "", ""), now);
            let actions = drain(&mut call);
            if next {
                assert!(matches!(actions[0], Action::InviteB { attempt: 1, .. }), "{status}: {actions:?}");
            } else {
                assert_eq!(status_of(&actions[0]), status, "{status} goes back to the caller");
                assert_eq!(call.state(), CallState::Failed);
            }
        }
    }

    #[test]
    fn every_route_failing_returns_the_last_meaningful_response_or_pe() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1"), route("198.51.100.2")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 480, "Temporarily Unavailable", "", ""), now);
        drain(&mut call);
        call.handle_b_failure(1, AttemptOutcome::TransportError, now);
        let actions = drain(&mut call);
        assert_eq!(status_of(&actions[0]), 480);

        // Nothing meaningful at all: 503 with the PE code.
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        drain(&mut call);
        call.handle_b_failure(0, AttemptOutcome::Timeout, now);
        let Action::RespondA(r) = call.poll_action().unwrap() else { panic!() };
        assert_eq!((r.status(), r.reason()), (Some(503), Some("No routes found PE2")));

        let mut call = Call::new(setup(vec![]), now);
        let Action::RespondA(r) = call.poll_action().unwrap() else { panic!() };
        assert_eq!((r.status(), r.reason()), (Some(503), Some("No routes found PE1")));
    }

    #[test]
    fn no_provisional_answer_in_time_moves_to_the_next_route() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1"), route("198.51.100.2")]), now);
        let first = invite_of(&drain(&mut call), 0);
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(3)));
        call.handle_timeout(now + Duration::from_secs(3));
        let actions = drain(&mut call);
        assert!(matches!(actions[0], Action::InviteB { attempt: 1, .. }), "{actions:?}");
        assert_eq!(call.attempts(), [AttemptOutcome::Timeout]);
        // The abandoned route wakes up: it is cancelled, and the call stays on the new one.
        call.handle_b_response(0, &b_response(&first, 180, "Ringing", "", ""), now);
        assert!(matches!(drain(&mut call)[..], [Action::CancelB { attempt: 0 }]));
        assert_eq!(call.state(), CallState::Trying { attempt: 1 });
    }

    #[test]
    fn provisional_answers_are_relayed_and_end_failover() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1"), route("198.51.100.2")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 100, "Trying", "", ""), now);
        assert!(drain(&mut call).is_empty(), "100 Trying is hop by hop");
        call.handle_b_response(0, &b_response(&first, 183, "Session Progress", "", SDP), now);
        let actions = drain(&mut call);
        let Action::RespondA(early) = &actions[0] else { panic!() };
        assert_eq!((early.status(), early.body().as_ref()), (Some(183), SDP.as_bytes()));
        assert_eq!(call.state(), CallState::Early { attempt: 0 });
        // A 503 after ringing is the call's answer, not a reason to try elsewhere.
        call.handle_b_response(0, &b_response(&first, 503, "Service Unavailable", "", ""), now);
        assert_eq!(status_of(&drain(&mut call)[0]), 503);
    }

    #[test]
    fn no_answer_after_ringing_ends_with_408_and_cancels_the_carrier() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 180, "Ringing", "", ""), now);
        drain(&mut call);
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(90)));
        call.handle_timeout(now + Duration::from_secs(90));
        let actions = drain(&mut call);
        assert!(matches!(actions[0], Action::CancelB { attempt: 0 }));
        assert_eq!(status_of(&actions[1]), 408);
    }

    #[test]
    fn a_cancel_from_the_caller_cancels_the_carrier_once_it_may() {
        let now = Instant::now();
        // Before any provisional answer: the CANCEL waits for one (RFC 3261 section 9.1).
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_a_cancel(now);
        assert_eq!(status_of(&drain(&mut call)[0]), 487);
        call.handle_b_response(0, &b_response(&first, 180, "Ringing", "", ""), now);
        assert!(matches!(drain(&mut call)[..], [Action::CancelB { attempt: 0 }]));

        // After ringing: at once.
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let first = invite_of(&drain(&mut call), 0);
        call.handle_b_response(0, &b_response(&first, 180, "Ringing", "", ""), now);
        drain(&mut call);
        call.handle_a_cancel(now);
        let actions = drain(&mut call);
        assert!(matches!(actions[0], Action::CancelB { attempt: 0 }));
        assert_eq!(status_of(&actions[1]), 487);
        let events: Vec<_> = std::iter::from_fn(|| call.poll_event()).collect();
        assert!(events.contains(&CallEvent::Failed { status: 487, reason: None, cancelled: true }));

        // The carrier answered anyway (the 200 crossed the CANCEL): ACK it and hang up.
        call.handle_b_response(0, &b_response(&first, 200, "OK", "Contact: <sip:c@198.51.100.1>\r\n", SDP), now);
        let actions = drain(&mut call);
        assert!(matches!(&actions[..], [Action::AckB { .. }, Action::ByeB { .. }]), "{actions:?}");
    }

    #[test]
    fn anonymous_callers_are_presented_anonymously_with_their_identity_asserted() {
        let now = Instant::now();
        let mut s = setup(vec![route("198.51.100.1")]);
        s.anonymous = true;
        let mut call = Call::new(s, now);
        let b = invite_of(&drain(&mut call), 0);
        assert_eq!(b.from().unwrap().user(), Some("anonymous"));
        assert_eq!(b.header(HeaderName::Privacy), Some("id"));
        assert_eq!(b.header(HeaderName::PAssertedIdentity), Some("<sip:+13125550100@203.0.113.1:5060>"));
    }

    /// A call answered on the first route, its initial ACK carried.
    fn answered_call(now: Instant, answer_extra: &str) -> Call {
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        let first = invite_of(&drain(&mut call), 0);
        let extra = format!("Contact: <sip:carrier@198.51.100.1:5060>\r\n{answer_extra}");
        call.handle_b_response(0, &b_response(&first, 200, "OK", &extra, SDP), now);
        call.handle_ack(Side::Caller, &parse("ACK sip:x@203.0.113.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"), now);
        drain(&mut call);
        while call.poll_event().is_some() {}
        call
    }

    fn in_dialog_request(method: &str, from_caller: bool, cseq: u32, body: &str) -> Message {
        let (from, to, call_id) = if from_caller {
            (
                "<sip:+13125550100@pbx.customer.example>;tag=a1",
                "<sip:+13125550199@sip.opentrunk.test>;tag=ours-a",
                "customer-call-1@pbx.customer.example",
            )
        } else {
            (
                "<sip:13125550199@198.51.100.1:5060>;tag=carrier-tag",
                "<sip:+13125550100@203.0.113.1:5060>;tag=ours-b",
                "b-leg-1@203.0.113.1",
            )
        };
        let mut text = format!(
            "{method} sip:203.0.113.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKindialog{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        );
        if body.is_empty() {
            text.push_str("Content-Length: 0\r\n\r\n");
        } else {
            text.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        }
        parse(&text)
    }

    fn request_of(a: &Action) -> (Side, OutRef, Message) {
        match a {
            Action::Request { side, out, request } => (*side, *out, request.clone()),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn a_bye_from_the_caller_is_answered_and_carried_to_the_carrier() {
        let now = Instant::now();
        let mut call = answered_call(now, "Record-Route: <sip:sbc.carrier.example;lr>\r\n");
        call.handle_dialog_request(Side::Caller, TxnRef(7), &in_dialog_request("BYE", true, 11, ""), now);
        let actions = drain(&mut call);
        let Action::Respond { side: Side::Caller, txn: TxnRef(7), response } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(response.status(), Some(200));
        let (side, _, bye) = request_of(&actions[1]);
        assert_eq!(side, Side::Callee);
        assert_eq!(bye.request_uri_str(), Some("sip:carrier@198.51.100.1:5060"));
        assert_eq!(bye.header(HeaderName::Route), Some("<sip:sbc.carrier.example;lr>"));
        assert_eq!(bye.call_id().unwrap(), "b-leg-1@203.0.113.1");
        assert_eq!(bye.to().unwrap().tag(), Some("carrier-tag"));
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert_eq!(call.state(), CallState::Ended);
        assert_eq!(call.poll_event(), Some(CallEvent::Ended { by: HangupBy::Caller }));
        assert_eq!(call.poll_timeout(), None);
    }

    #[test]
    fn a_bye_from_the_carrier_reaches_the_caller_in_its_dialog() {
        let now = Instant::now();
        let mut call = answered_call(now, "");
        call.handle_dialog_request(Side::Callee, TxnRef(3), &in_dialog_request("BYE", false, 5, ""), now);
        let actions = drain(&mut call);
        assert!(matches!(&actions[0], Action::Respond { side: Side::Callee, .. }));
        let (side, _, bye) = request_of(&actions[1]);
        assert_eq!(side, Side::Caller);
        assert_eq!(bye.request_uri_str(), Some("sip:pbx@192.0.2.10:5060"));
        assert_eq!(bye.header(HeaderName::Route), Some("<sip:edge.customer.example;lr>"));
        assert_eq!(bye.call_id().unwrap(), "customer-call-1@pbx.customer.example");
        assert_eq!(bye.from().unwrap().tag(), Some("ours-a"));
        assert_eq!(bye.to().unwrap().tag(), Some("a1"));
        assert_eq!(call.poll_event(), Some(CallEvent::Ended { by: HangupBy::Callee }));
    }

    #[test]
    fn hold_by_re_invite_is_relayed_with_its_answer_and_ack() {
        let now = Instant::now();
        let mut call = answered_call(now, "");
        let hold = SDP.replace("m=audio 4000 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n");
        call.handle_dialog_request(Side::Caller, TxnRef(9), &in_dialog_request("INVITE", true, 12, &hold), now);
        let (side, out, relayed) = request_of(&drain(&mut call)[0]);
        assert_eq!(side, Side::Callee);
        assert_eq!(relayed.method().unwrap().as_str(), "INVITE");
        assert_eq!(relayed.cseq().unwrap().seq, 2);
        assert_eq!(relayed.body().as_ref(), hold.as_bytes());
        assert_eq!(relayed.header(HeaderName::Contact), Some("<sip:203.0.113.1:5060>"));
        let held = SDP.replace("m=audio 4000 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n");
        call.handle_dialog_response(out, &b_response(&relayed, 200, "OK", "", &held), now);
        let actions = drain(&mut call);
        let Action::Respond { side: Side::Caller, txn: TxnRef(9), response } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!((response.status(), response.body().as_ref()), (Some(200), held.as_bytes()));
        assert_eq!(response.cseq().unwrap().seq, 12, "the caller's own transaction");
        call.handle_ack(Side::Caller, &in_dialog_request("ACK", true, 12, ""), now);
        let Some(Action::Ack { side: Side::Callee, request }) = call.poll_action() else { panic!() };
        assert_eq!(request.cseq().unwrap().seq, 2);
        assert_eq!(request.cseq().unwrap().method.as_str(), "ACK");
    }

    #[test]
    fn options_from_the_carrier_is_answered_by_the_caller() {
        let now = Instant::now();
        let mut call = answered_call(now, "");
        call.handle_dialog_request(Side::Callee, TxnRef(4), &in_dialog_request("OPTIONS", false, 6, ""), now);
        let (side, out, relayed) = request_of(&drain(&mut call)[0]);
        assert_eq!(side, Side::Caller);
        assert_eq!(relayed.cseq().unwrap().seq, 1);
        call.handle_dialog_response(out, &parse(&format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            relayed.header(HeaderName::From).unwrap(), relayed.header(HeaderName::To).unwrap(), relayed.call_id().unwrap())), now);
        let actions = drain(&mut call);
        assert!(matches!(&actions[..], [Action::Respond { side: Side::Callee, txn: TxnRef(4), .. }]), "{actions:?}");
        // Unanswered in-dialog requests get 408 back.
        call.handle_dialog_request(Side::Caller, TxnRef(5), &in_dialog_request("INFO", true, 13, ""), now);
        let (_, out, _) = request_of(&drain(&mut call)[0]);
        call.handle_dialog_failure(out, now);
        let Some(Action::Respond { response, .. }) = call.poll_action() else { panic!() };
        assert_eq!(response.status(), Some(408));
    }

    #[test]
    fn a_silent_call_is_torn_down_on_both_legs() {
        let now = Instant::now();
        let mut call = answered_call(now, "");
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(7200)));
        // Signalling keeps it alive.
        let later = now + Duration::from_secs(3600);
        call.handle_dialog_request(Side::Callee, TxnRef(1), &in_dialog_request("OPTIONS", false, 7, ""), later);
        drain(&mut call);
        assert_eq!(call.poll_timeout(), Some(later + Duration::from_secs(7200)));
        call.handle_timeout(later + Duration::from_secs(7200));
        let actions = drain(&mut call);
        let sides: Vec<Side> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { side, request, .. } if request.method().unwrap().as_str() == "BYE" => Some(*side),
                _ => None,
            })
            .collect();
        assert_eq!(sides, [Side::Caller, Side::Callee]);
        assert!(std::iter::from_fn(|| call.poll_event()).any(|e| e == CallEvent::Ended { by: HangupBy::System }));

        // A shorter session interval agreed by the peers wins.
        let call = answered_call(now, "Session-Expires: 1800;refresher=uac\r\n");
        assert_eq!(call.poll_timeout(), Some(now + Duration::from_secs(1800)));
    }

    #[test]
    fn in_dialog_requests_before_an_answer_get_481() {
        let now = Instant::now();
        let mut call = Call::new(setup(vec![route("198.51.100.1")]), now);
        drain(&mut call);
        call.handle_dialog_request(Side::Caller, TxnRef(2), &in_dialog_request("BYE", true, 11, ""), now);
        let Some(Action::Respond { response, .. }) = call.poll_action() else { panic!() };
        assert_eq!(response.status(), Some(481));
    }

    #[derive(Clone, Debug)]
    enum Step {
        Response { attempt: usize, status: u16 },
        Failure { attempt: usize, timeout: bool },
        Tick { secs: u64 },
        Cancel,
        Ack,
        Bye { caller: bool },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let status = prop_oneof![
            Just(100u16),
            Just(180),
            Just(183),
            Just(200),
            Just(404),
            Just(408),
            Just(480),
            Just(486),
            Just(487),
            Just(500),
            Just(503),
            Just(504),
            Just(603),
            100u16..700
        ];
        prop_oneof![
            4 => (0usize..4, status).prop_map(|(attempt, status)| Step::Response { attempt, status }),
            1 => (0usize..4, any::<bool>()).prop_map(|(attempt, timeout)| Step::Failure { attempt, timeout }),
            1 => (0u64..200).prop_map(|secs| Step::Tick { secs }),
            1 => Just(Step::Cancel),
            1 => Just(Step::Ack),
            1 => any::<bool>().prop_map(|caller| Step::Bye { caller }),
        ]
    }

    proptest::proptest! {
        /// Whatever the peers do, in any order: no panic, the caller's INVITE gets exactly one
        /// final answer once the call is decided, nothing is sent toward a new route after
        /// that, and the call's end is reported once.
        #[test]
        fn call_setup_is_total_and_answers_once(
            steps in proptest::collection::vec(step(), 0..40),
            routes in 0usize..4,
            ring_together in 0usize..4,
        ) {
            let start = Instant::now();
            let mut now = start;
            let routes: Vec<RouteTarget> = (0..routes).map(|i| route(&format!("198.51.100.{}", i + 1))).collect();
            let mut call = Call::new(CallSetup { ring_together, ..setup(routes) }, now);
            let mut invites: Vec<Message> = Vec::new();
            let mut finals = 0;
            let mut decided = call.state() == CallState::Failed;
            let mut ends = 0;
            let mut txn = 0u64;
            let collect = |call: &mut Call, invites: &mut Vec<Message>, finals: &mut i32, decided: bool| {
                while let Some(a) = call.poll_action() {
                    match a {
                        Action::InviteB { attempt, request } => {
                            proptest::prop_assert!(!decided, "a new route after the call was decided");
                            proptest::prop_assert_eq!(attempt, invites.len());
                            invites.push(request);
                        }
                        Action::RespondA(r) if r.status().unwrap() >= 200 => *finals += 1,
                        _ => {}
                    }
                }
                Ok(())
            };
            collect(&mut call, &mut invites, &mut finals, decided)?;
            for s in steps {
                match s {
                    Step::Response { attempt, status } => {
                        if let Some(req) = invites.get(attempt).cloned() {
                            let extra = "Contact: <sip:c@198.51.100.9>\r\n";
                            call.handle_b_response(attempt, &b_response(&req, status, "X", extra, ""), now);
                        }
                    }
                    Step::Failure { attempt, timeout } => {
                        let outcome = if timeout { AttemptOutcome::Timeout } else { AttemptOutcome::TransportError };
                        call.handle_b_failure(attempt, outcome, now);
                    }
                    Step::Tick { secs } => {
                        now += Duration::from_secs(secs);
                        if call.poll_timeout().is_some_and(|t| t <= now) {
                            call.handle_timeout(now);
                        }
                    }
                    Step::Cancel => call.handle_a_cancel(now),
                    Step::Ack => call.handle_ack(Side::Caller, &parse("ACK sip:x@203.0.113.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"), now),
                    Step::Bye { caller } => {
                        txn += 1;
                        let side = if caller { Side::Caller } else { Side::Callee };
                        call.handle_dialog_request(side, TxnRef(txn), &in_dialog_request("BYE", caller, 50, ""), now);
                    }
                }
                decided |= matches!(call.state(), CallState::Answered { .. } | CallState::Failed | CallState::Ended);
                collect(&mut call, &mut invites, &mut finals, decided)?;
                while let Some(e) = call.poll_event() {
                    if matches!(e, CallEvent::Failed { .. } | CallEvent::Ended { .. }) {
                        ends += 1;
                    }
                }
            }
            proptest::prop_assert!(finals <= 1, "{} final answers to the caller", finals);
            proptest::prop_assert_eq!(finals == 1, decided, "decided {} but {} finals", decided, finals);
            proptest::prop_assert!(ends <= 1);
        }
    }
}
