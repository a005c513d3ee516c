//! Client transactions: RFC 3261 section 17.1 with the Accepted state of RFC 6026 section 7.2.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::key::top_via_text;
use super::{Retransmit, Timers, TransactionKey, deadline, earliest, fired};
use crate::Error;
use crate::headers::HeaderName;
use crate::message::{Message, Method, itoa_u32};

/// The state of a client transaction. INVITE: Calling, Proceeding, Accepted or Completed,
/// Terminated. Non-INVITE: Trying, Proceeding, Completed, Terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    /// INVITE after a 2xx (RFC 6026): further 2xx pass up until Timer M.
    Accepted,
    Completed,
    Terminated,
}

/// What the transaction user learns from a client transaction.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// A 1xx response.
    Provisional(Message),
    /// A final response. For INVITE every 2xx received in Accepted is passed up too (RFC 6026
    /// section 8.4): forked 2xx and retransmissions, which the TU acknowledges itself.
    Final(Message),
    /// Timer B or F fired: no final response came.
    Timeout,
    /// The transport could not send this transaction's request or ACK.
    TransportError,
    /// The last event: drop the transaction once `poll_transmit` is empty.
    Terminated,
}

/// A client transaction (RFC 3261 section 17.1): sends one request and delivers its responses.
#[derive(Debug)]
pub struct ClientTransaction {
    key: TransactionKey,
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ClientState,
    /// The request and its bytes, until a final response: then only the key, the ACK for a
    /// non-2xx and the timers are needed for the 64*T1 the transaction lingers. Boxed so that
    /// it costs a pointer once dropped.
    request: Option<Box<Message>>,
    request_bytes: Bytes,
    /// The ACK for a non-2xx final response, once built.
    ack: Option<Bytes>,
    /// Timer A (INVITE) or E (non-INVITE).
    retransmit: Option<Retransmit>,
    /// Timer B (INVITE) or F (non-INVITE).
    timeout: Option<Instant>,
    /// Timer D, K or M: the wait in Completed or Accepted before Terminated.
    linger: Option<Instant>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    /// Requests sent again: the request by Timer A or E, the ACK for a repeated final.
    retransmissions: u32,
}

impl ClientTransaction {
    /// Starts a client transaction for `request` and queues it for sending.
    ///
    /// The request needs a top Via with a branch and a CSeq whose method is the request's; an
    /// INVITE also needs the From and Call-ID that its ACK repeats. ACK never starts a client
    /// transaction (17.1).
    pub fn new(request: Message, reliable: bool, timers: &Timers, now: Instant) -> Result<Self, Error> {
        let method = request.method().ok_or(Error("not a request"))?;
        if method == Method::Ack {
            return Err(Error("ACK does not start a client transaction"));
        }
        let invite = method == Method::Invite;
        let key = TransactionKey::for_client_request(&request)?;
        if invite {
            // What the ACK for a non-2xx response copies (17.1.1.3); checked once, here.
            request.from()?;
            request.call_id()?;
            top_via_text(&request).ok_or(Error("missing Via"))?;
        }
        let timers = *timers;
        let request_bytes = request.to_bytes();
        let (state, first, timeout) = if invite {
            (ClientState::Calling, timers.a(), timers.b())
        } else {
            (ClientState::Trying, timers.e(), timers.f())
        };
        let mut tx = ClientTransaction {
            key,
            invite,
            reliable,
            timers,
            state,
            request: Some(Box::new(request)),
            request_bytes: request_bytes.clone(),
            ack: None,
            retransmit: if reliable { None } else { Retransmit::start(now, first) },
            timeout: deadline(now, timeout),
            linger: None,
            transmit: VecDeque::with_capacity(2),
            events: VecDeque::with_capacity(2),
            retransmissions: 0,
        };
        tx.transmit.push_back(request_bytes);
        Ok(tx)
    }

    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The request this transaction sends, until a final response arrives (a CANCEL is built
    /// from it while there is none).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_deref()
    }

    /// `true` for an INVITE client transaction.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// How many times this transaction has sent a request again (its request on Timer A or
    /// E, its ACK for a retransmitted final response).
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// A response from the network. `Err` when it is not a response to this transaction (top
    /// Via branch and CSeq method, 17.1.3) or cannot be acknowledged; the state is unchanged
    /// then. Responses the state machine absorbs (retransmissions, late 1xx) return `Ok`.
    pub fn handle_response(&mut self, response: Message, now: Instant) -> Result<(), Error> {
        let status = response.status().ok_or(Error("not a response"))?;
        if !(100..=699).contains(&status) {
            return Err(Error("status code out of range"));
        }
        if !self.key.matches_client_response(&response) {
            return Err(Error("response does not match the transaction"));
        }
        use ClientState as S;
        match (self.invite, self.state, status) {
            (_, S::Terminated, _) => {}
            // INVITE (17.1.1.2 and RFC 6026 section 8.4).
            (true, S::Calling | S::Proceeding, 100..=199) => {
                // Leaving Calling stops Timers A and B.
                self.retransmit = None;
                self.timeout = None;
                self.state = S::Proceeding;
                self.events.push_back(ClientEvent::Provisional(response));
            }
            (true, S::Calling | S::Proceeding, 200..=299) => {
                self.retransmit = None;
                self.timeout = None;
                self.state = S::Accepted;
                self.drop_request();
                self.linger = deadline(now, self.timers.m());
                self.events.push_back(ClientEvent::Final(response));
            }
            (true, S::Calling | S::Proceeding, _) => {
                let request = self.request.as_deref().ok_or(Error("request already dropped"))?;
                let ack = build_ack(request, &response)?.to_bytes();
                self.retransmit = None;
                self.timeout = None;
                self.state = S::Completed;
                self.drop_request();
                self.transmit.push_back(ack.clone());
                self.ack = Some(ack);
                self.events.push_back(ClientEvent::Final(response));
                self.linger_or_terminate(self.timers.d(self.reliable), now);
            }
            (true, S::Accepted, 200..=299) => self.events.push_back(ClientEvent::Final(response)),
            (true, S::Completed, 300..=699) => {
                // A retransmitted final response: ACK again, tell the TU nothing.
                if let Some(ack) = &self.ack {
                    self.transmit.push_back(ack.clone());
                    self.retransmissions += 1;
                }
            }
            // Non-INVITE (17.1.2.2).
            (false, S::Trying | S::Proceeding, 100..=199) => {
                self.state = S::Proceeding;
                self.events.push_back(ClientEvent::Provisional(response));
            }
            (false, S::Trying | S::Proceeding, _) => {
                self.retransmit = None;
                self.timeout = None;
                self.state = S::Completed;
                self.drop_request();
                self.events.push_back(ClientEvent::Final(response));
                self.linger_or_terminate(self.timers.k(self.reliable), now);
            }
            // Anything else is a retransmission or a late provisional: absorbed.
            _ => {}
        }
        Ok(())
    }

    /// Fires every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ClientState::Terminated {
            return;
        }
        if fired(self.timeout, now) {
            // Timer B or F.
            self.events.push_back(ClientEvent::Timeout);
            self.terminate();
            return;
        }
        if fired(self.linger, now) {
            // Timer D, K or M.
            self.terminate();
            return;
        }
        if let Some(r) = self.retransmit.filter(|r| r.at <= now) {
            self.transmit.push_back(self.request_bytes.clone());
            self.retransmissions += 1;
            let interval = match (self.invite, self.state) {
                (true, _) => self.timers.next_a(r.interval),
                // In Proceeding Timer E is reset to T2 (17.1.2.2).
                (false, ClientState::Proceeding) => self.timers.cap(),
                (false, _) => self.timers.next_capped(r.interval),
            };
            self.retransmit = r.rearm(interval, now);
        }
    }

    /// The transport failed to send this transaction's request or ACK (17.1.4): the TU is told
    /// and the transaction ends.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ClientState::Terminated {
            self.events.push_back(ClientEvent::TransportError);
            self.terminate();
        }
    }

    /// The next datagram or stream write: the request, its retransmissions, the ACK.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let next = self.transmit.pop_front();
        if next.is_none() && self.request.is_none() && self.transmit.capacity() != 0 {
            // Past the final response the queue is mostly empty for 64*T1: free its buffer.
            self.transmit = VecDeque::new();
        }
        next
    }

    /// When `handle_timeout` must be called next; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest([self.retransmit.map(|r| r.at), self.timeout, self.linger])
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let next = self.events.pop_front();
        if next.is_none() && self.request.is_none() && self.events.capacity() != 0 {
            self.events = VecDeque::new();
        }
        next
    }

    /// Past the final response nothing is sent again but the ACK (17.1.1.3, 17.1.2.2).
    fn drop_request(&mut self) {
        self.request = None;
        self.request_bytes = Bytes::new();
    }

    fn linger_or_terminate(&mut self, wait: std::time::Duration, now: Instant) {
        if wait.is_zero() {
            self.terminate();
        } else {
            self.linger = deadline(now, wait);
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.drop_request();
        self.retransmit = None;
        self.timeout = None;
        self.linger = None;
        self.events.push_back(ClientEvent::Terminated);
    }
}

/// The ACK for a non-2xx final response to INVITE (17.1.1.3): Request-URI, Call-ID, From and
/// the top Via (as the only Via) of the request, To of the response, the request's CSeq number
/// with method ACK, the request's Route header fields. Max-Forwards, mandatory in every request
/// (8.1.1), is the request's (70 when it had none).
pub(crate) fn build_ack(request: &Message, response: &Message) -> Result<Message, Error> {
    let uri = request.request_uri_str().ok_or(Error("not a request"))?;
    let via = top_via_text(request).ok_or(Error("missing Via"))?;
    let from = request.header(HeaderName::From).ok_or(Error("missing From"))?;
    let call_id = request.header(HeaderName::CallId).ok_or(Error("missing Call-ID"))?;
    let seq = request.cseq()?.seq;
    let to = response.header(HeaderName::To).ok_or(Error("response has no To"))?;
    let mut ack = Message::new_request(Method::Ack.as_str(), uri);
    ack.push_header(HeaderName::Via, via);
    for route in request.header_values(HeaderName::Route) {
        ack.push_header(HeaderName::Route, route);
    }
    ack.push_header(HeaderName::MaxForwards, request.header(HeaderName::MaxForwards).unwrap_or("70"));
    ack.push_header(HeaderName::From, from);
    ack.push_header(HeaderName::To, to);
    ack.push_header(HeaderName::CallId, call_id);
    let seq = itoa_u32(seq);
    let mut cseq = String::with_capacity(seq.as_str().len() + 4);
    cseq.push_str(seq.as_str());
    cseq.push_str(" ACK");
    ack.push_header(HeaderName::CSeq, &cseq);
    Ok(ack)
}
