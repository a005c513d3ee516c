//! The answered call: two dialogs (RFC 3261 section 12) joined back to back. Requests inside
//! either dialog (re-INVITE and UPDATE for hold and resume, INFO, OPTIONS) are relayed to the
//! other leg with that leg's own Call-ID, tags, CSeq and route set, and their responses relayed
//! back; the ACK of a relayed re-INVITE's 2xx is carried end to end. A BYE from either side is
//! answered at once and sent to the other side. A call with no signalling within the idle limit
//! (or the `Session-Expires` the peers agreed, RFC 4028, whichever is shorter) is torn down with
//! a BYE on both legs: no call outlives its peers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sip::Message;
use sip::headers::HeaderName;

use super::{Action, Call, CallEvent, CallState, HangupBy, OutRef, Side, TxnRef};

/// A request received on one leg and relayed to the other, waiting for its answer.
#[derive(Clone, Debug)]
struct Relay {
    origin: Side,
    txn: TxnRef,
    request: Message,
    /// The CSeq the relayed copy carries on the other leg.
    relayed_cseq: u32,
}

/// An ACK the originator of a relayed re-INVITE owes, to carry to the other leg.
#[derive(Clone, Copy, Debug)]
struct PendingAck {
    origin: Side,
    /// The relayed INVITE's CSeq on the other leg.
    cseq: u32,
}

#[derive(Debug, Default)]
pub(super) struct DialogState {
    /// Our CSeq toward the caller.
    a_cseq: u32,
    next_out: u32,
    relays: HashMap<OutRef, Relay>,
    pending_ack: Option<PendingAck>,
    initial_ack_sent: bool,
    last_signal: Option<Instant>,
    idle: Duration,
}

impl DialogState {
    pub(super) fn answered(&mut self, answer: &Message, now: Instant, idle_limit: Duration) {
        self.last_signal = Some(now);
        // RFC 4028: the interval the peers agreed; without a refresh within it the session is
        // gone.
        let session = answer
            .header(HeaderName::SessionExpires)
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        self.idle = session.map_or(idle_limit, |s| s.min(idle_limit));
    }

    /// No relayed request waits for its answer, nor a relayed re-INVITE's 2xx for its ACK.
    pub(super) fn is_idle(&self) -> bool {
        self.relays.is_empty() && self.pending_ack.is_none()
    }

    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        self.last_signal.map(|t| t + self.idle)
    }
}

impl Call {
    /// A request in the call's dialog on `side`'s leg (the driver matched it by Call-ID and
    /// tags and made a server transaction it names `txn`). ACKs go to [`Call::handle_ack`].
    pub fn handle_dialog_request(&mut self, side: Side, txn: TxnRef, req: &Message, now: Instant) {
        let Some(method) = req.method().map(|m| m.as_str().to_owned()) else { return };
        if !matches!(self.state, CallState::Answered { .. }) {
            let resp = req.response_to(481, "Call/Transaction Does Not Exist", None);
            self.actions.push_back(Action::Respond { side, txn, response: resp });
            return;
        }
        self.dialog.last_signal = Some(now);
        if method == "BYE" {
            let ok = req.response_to(200, "OK", None);
            self.actions.push_back(Action::Respond { side, txn, response: ok });
            let by = if side == Side::Caller { HangupBy::Caller } else { HangupBy::Callee };
            self.end_dialogs(&[side.other()], by);
            return;
        }
        // Relay to the other leg as a new request of its dialog.
        let other = side.other();
        let cseq = self.next_cseq(other);
        let mut relayed = self.in_dialog(other, &method, cseq);
        for name in [HeaderName::SessionExpires, HeaderName::MinSe, HeaderName::Supported, HeaderName::Require] {
            for v in req.header_values(name) {
                relayed.push_header(name, v);
            }
        }
        if method == "INVITE" || method == "UPDATE" {
            relayed.push_header_with(HeaderName::Contact, |v| self.write_contact(v));
        }
        if !req.body().is_empty() {
            relayed.set_body(req.body().clone(), req.header(HeaderName::ContentType));
        }
        let out = OutRef(self.dialog.next_out);
        self.dialog.next_out += 1;
        self.dialog.relays.insert(out, Relay { origin: side, txn, request: req.clone(), relayed_cseq: cseq });
        self.actions.push_back(Action::Request { side: other, out, request: relayed });
    }

    /// A response to a request the call sent in a dialog (`out`): relayed to the leg the
    /// request came from.
    pub fn handle_dialog_response(&mut self, out: OutRef, resp: &Message, now: Instant) {
        let Some(status) = resp.status() else { return };
        let Some(relay) = self.dialog.relays.get(&out).cloned() else { return };
        if status >= 200 {
            self.dialog.relays.remove(&out);
        }
        if status == 100 {
            return;
        }
        self.dialog.last_signal = Some(now);
        let mut back = relay.request.response_to(status, resp.reason().unwrap_or(""), None);
        let is_invite = relay.request.method().is_some_and(|m| m.as_str() == "INVITE");
        if (200..300).contains(&status) {
            if is_invite || relay.request.method().is_some_and(|m| m.as_str() == "UPDATE") {
                back.push_header_with(HeaderName::Contact, |v| self.write_contact(v));
            }
            for v in resp.header_values(HeaderName::SessionExpires) {
                back.push_header(HeaderName::SessionExpires, v);
            }
            if is_invite {
                self.dialog.pending_ack = Some(PendingAck { origin: relay.origin, cseq: relay.relayed_cseq });
            }
        }
        if !resp.body().is_empty() {
            back.set_body(resp.body().clone(), resp.header(HeaderName::ContentType));
        }
        self.actions.push_back(Action::Respond { side: relay.origin, txn: relay.txn, response: back });
    }

    /// A request the call sent in a dialog got no answer (timeout or transport error). A lost
    /// BYE changes nothing (the call is over); anything else is answered `408` to its origin.
    pub fn handle_dialog_failure(&mut self, out: OutRef, _now: Instant) {
        if let Some(relay) = self.dialog.relays.remove(&out) {
            let resp = relay.request.response_to(408, "Request Timeout", None);
            self.actions.push_back(Action::Respond { side: relay.origin, txn: relay.txn, response: resp });
        }
    }

    /// An ACK on `side`'s leg: the caller's for our answer, or the originator's for a relayed
    /// re-INVITE's 2xx. Carried to the other leg with its body.
    pub fn handle_ack(&mut self, side: Side, ack: &Message, now: Instant) {
        if side == Side::Caller && !self.dialog.initial_ack_sent && self.answered.is_some() {
            self.dialog.initial_ack_sent = true;
            self.handle_a_ack(ack, now);
            return;
        }
        let Some(p) = self.dialog.pending_ack.filter(|p| p.origin == side) else { return };
        self.dialog.pending_ack = None;
        self.dialog.last_signal = Some(now);
        let mut req = self.in_dialog(side.other(), "ACK", p.cseq);
        if !ack.body().is_empty() {
            req.set_body(ack.body().clone(), ack.header(HeaderName::ContentType));
        }
        self.actions.push_back(Action::Ack { side: side.other(), request: req });
    }

    /// Ends an answered call from the platform's side (idle limit, operator action): BYE on
    /// both legs.
    pub fn hang_up(&mut self, by: HangupBy, _now: Instant) {
        if matches!(self.state, CallState::Answered { .. }) {
            self.end_dialogs(&[Side::Caller, Side::Callee], by);
        }
    }

    /// Sends BYE on the legs `to`, answers every relayed request still open with 487, and ends
    /// the call.
    fn end_dialogs(&mut self, to: &[Side], by: HangupBy) {
        for &side in to {
            let cseq = self.next_cseq(side);
            let bye = self.in_dialog(side, "BYE", cseq);
            let out = self.next_out();
            self.actions.push_back(Action::Request { side, out, request: bye });
        }
        for (_, relay) in self.dialog.relays.drain() {
            let resp = relay.request.response_to(487, "Request Terminated", None);
            self.actions.push_back(Action::Respond { side: relay.origin, txn: relay.txn, response: resp });
        }
        self.dialog.last_signal = None;
        self.state = CallState::Ended;
        self.events.push_back(CallEvent::Ended { by });
    }

    fn next_out(&mut self) -> OutRef {
        let out = OutRef(self.dialog.next_out);
        self.dialog.next_out += 1;
        out
    }

    fn next_cseq(&mut self, side: Side) -> u32 {
        match side {
            Side::Caller => {
                self.dialog.a_cseq += 1;
                self.dialog.a_cseq
            }
            Side::Callee => {
                self.b_cseq += 1;
                self.b_cseq
            }
        }
    }

    /// A request in `side`'s dialog.
    fn in_dialog(&self, side: Side, method: &str, cseq: u32) -> Message {
        match side {
            Side::Callee => match &self.answered {
                Some(d) => self.in_b_dialog(method, d, cseq),
                None => Message::new_request(method, "sip:invalid"),
            },
            Side::Caller => self.in_a_dialog(method, cseq),
        }
    }

    /// A request toward the caller, in the dialog we answered as UAS (RFC 3261 section 12.1.1:
    /// the remote target is the INVITE's Contact, the route set its Record-Route in order).
    fn in_a_dialog(&self, method: &str, cseq: u32) -> Message {
        let invite = &self.setup.invite;
        let target = match invite.first_contact() {
            Ok(Some(c)) => Some(c.uri_str.to_owned()),
            _ => None,
        }
        .unwrap_or_else(|| invite.request_uri_str().unwrap_or("sip:invalid").to_owned());
        let mut req = Message::new_request(method, &target);
        if let Ok(routes) = invite.name_addrs(HeaderName::RecordRoute) {
            for r in routes {
                req.push_header_with(HeaderName::Route, |v| {
                    v.push('<');
                    v.push_str(r.uri_str);
                    v.push('>');
                });
            }
        }
        req.push_header(HeaderName::MaxForwards, "70");
        let to = invite.header(HeaderName::To).unwrap_or_default();
        req.push_header_with(HeaderName::From, |v| {
            v.push_str(to);
            v.push_str(";tag=");
            v.push_str(&self.setup.a_tag);
        });
        req.push_header(HeaderName::To, invite.header(HeaderName::From).unwrap_or_default());
        req.push_header(HeaderName::CallId, invite.header(HeaderName::CallId).unwrap_or_default());
        req.push_header_with(HeaderName::CSeq, |v| super::write_cseq(v, cseq, method));
        req
    }
}
