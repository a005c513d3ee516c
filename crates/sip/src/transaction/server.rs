//! Server transactions: RFC 3261 section 17.2 with the Accepted state of RFC 6026 section 7.1.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Retransmit, Timers, TransactionKey, deadline, earliest, fired};
use crate::Error;
use crate::headers::HeaderName;
use crate::message::{Message, Method};

/// The state of a server transaction. INVITE: Proceeding, Completed then Confirmed, or
/// Accepted, Terminated. Non-INVITE: Trying, Proceeding, Completed, Terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// INVITE after a 2xx (RFC 6026): the TU retransmits the 2xx through the transaction, ACKs
    /// pass up, INVITE retransmissions are absorbed, until Timer L.
    Accepted,
    Terminated,
}

/// What the transaction user learns from a server transaction. The request itself is the TU's
/// already: it created the transaction with it.
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// An ACK that matched the INVITE transaction in Accepted (RFC 6026 section 7.1): the ACK
    /// for a 2xx, which belongs to the TU.
    Ack(Message),
    /// Timer H fired: the non-2xx final response was never acknowledged.
    Timeout,
    /// The transport could not send a response. The transaction stays in its state (RFC 6026
    /// sections 7.1 and 8.8); its timers end it.
    TransportError,
    /// The last event: drop the transaction once `poll_transmit` is empty.
    Terminated,
}

/// A server transaction (RFC 3261 section 17.2): receives one request (and its
/// retransmissions) and sends the TU's responses.
#[derive(Debug)]
pub struct ServerTransaction {
    key: TransactionKey,
    invite: bool,
    reliable: bool,
    timers: Timers,
    state: ServerState,
    /// The request, until the final response is sent: what lingers after it needs the key,
    /// the last response and the timers only (a Completed or Accepted transaction lives 64*T1,
    /// far longer than it is busy). Boxed so that it costs a pointer once dropped.
    request: Option<Box<Message>>,
    /// What a retransmitted request gets: the last provisional in Proceeding, the final in
    /// Completed.
    last_response: Option<Bytes>,
    /// RFC 2543 fallback matching only: the To tag of the non-2xx final response, which the ACK
    /// must carry (17.2.3).
    final_to_tag: Option<Box<str>>,
    /// Timer G.
    retransmit: Option<Retransmit>,
    /// Timer H.
    timeout: Option<Instant>,
    /// Timer I, J or L: the wait in Confirmed, Completed (non-INVITE) or Accepted.
    linger: Option<Instant>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<ServerEvent>,
    /// Responses sent again: the last one for a retransmitted request, a final on Timer G.
    retransmissions: u32,
}

impl ServerTransaction {
    /// Creates the server transaction for a request that matched none (17.2.3). An INVITE
    /// transaction queues `100 Trying` at once (17.2.1, with the request's Timestamp, 8.2.6.1).
    /// ACK never creates a server transaction.
    pub fn new(request: Message, reliable: bool, timers: &Timers, now: Instant) -> Result<Self, Error> {
        // No timer runs in Trying or Proceeding; `now` keeps the constructors alike.
        let _ = now;
        let method = request.method().ok_or(Error("not a request"))?;
        if method == Method::Ack {
            return Err(Error("ACK does not create a server transaction"));
        }
        let key = TransactionKey::for_server(&request)?;
        let invite = method == Method::Invite;
        let mut tx = ServerTransaction {
            key,
            invite,
            reliable,
            timers: *timers,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            request: Some(Box::new(request)),
            last_response: None,
            final_to_tag: None,
            retransmit: None,
            timeout: None,
            linger: None,
            transmit: VecDeque::with_capacity(2),
            events: VecDeque::new(),
            retransmissions: 0,
        };
        if let Some(request) = tx.request.as_deref().filter(|_| invite) {
            let mut trying = request.response_to(100, "Trying", None);
            if let Some(ts) = request.header(HeaderName::Timestamp) {
                trying.push_header(HeaderName::Timestamp, ts);
            }
            let bytes = trying.to_bytes();
            tx.transmit.push_back(bytes.clone());
            tx.last_response = Some(bytes);
        }
        Ok(tx)
    }

    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The request that created the transaction, until a final response is sent (then only
    /// what answering retransmissions needs is kept).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_deref()
    }

    /// `true` for an INVITE server transaction.
    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// How many times this transaction has sent a response again (the last response to a
    /// retransmitted request, a non-2xx final on Timer G).
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// A request that matched this transaction's key: a retransmission, or for INVITE an ACK.
    ///
    /// A retransmission gets the last response again (Proceeding, Completed) or is absorbed
    /// (Trying, Confirmed, and Accepted per RFC 6026). An ACK in Completed confirms (Timer I); in
    /// Accepted it passes up as [`ServerEvent::Ack`]; otherwise it is absorbed. `Err` when the
    /// method cannot belong to this transaction, or (RFC 2543 matching) when an ACK's To tag is
    /// not the final response's.
    pub fn handle_request(&mut self, request: Message, now: Instant) -> Result<(), Error> {
        let method = request.method().ok_or(Error("not a request"))?;
        let is_ack = method == Method::Ack;
        let belongs = if self.invite {
            is_ack || method == Method::Invite
        } else {
            // The key carries the request's method (17.2.3), and outlives the request.
            !is_ack && self.key.method() == method.as_str()
        };
        if !belongs {
            return Err(Error("request does not belong to this transaction"));
        }
        use ServerState as S;
        match (self.state, is_ack) {
            (S::Terminated, _) => {}
            (S::Completed, true) => {
                if let Some(tag) = &self.final_to_tag
                    && request.to().ok().and_then(|t| t.tag()) != Some(&**tag)
                {
                    return Err(Error("ACK To tag does not match the final response"));
                }
                // 17.2.1: stop G and H, absorb ACK retransmissions for Timer I.
                self.retransmit = None;
                self.timeout = None;
                self.state = S::Confirmed;
                self.linger_or_terminate(self.timers.i(self.reliable), now);
            }
            (S::Accepted, true) => self.events.push_back(ServerEvent::Ack(request)),
            (S::Proceeding | S::Completed, false) => {
                if let Some(r) = &self.last_response {
                    self.transmit.push_back(r.clone());
                    self.retransmissions += 1;
                }
            }
            // Trying (no response yet), Confirmed, Accepted (RFC 6026: INVITE retransmissions are
            // absorbed; 2xx retransmission is the TU's), an ACK before any final: absorbed.
            _ => {}
        }
        Ok(())
    }

    /// The TU's response. 1xx: Proceeding. 2xx to INVITE: Accepted with Timer L; later 2xx from
    /// the TU (its retransmissions, 13.3.1.4) are sent as they come, the transaction never
    /// retransmits a 2xx itself. 300-699 to INVITE: Completed, with Timer G over unreliable
    /// transports and Timer H. Final to non-INVITE: Completed with Timer J. `Err` for a response
    /// the state does not allow (a second final, a 1xx after a final, anything once Terminated).
    pub fn send_response(&mut self, response: Message, now: Instant) -> Result<(), Error> {
        let status = response.status().ok_or(Error("not a response"))?;
        if !(100..=699).contains(&status) {
            return Err(Error("status code out of range"));
        }
        use ServerState as S;
        match (self.invite, self.state, status) {
            (true, S::Proceeding, 100..=199) | (false, S::Trying | S::Proceeding, 100..=199) => {
                let bytes = response.to_bytes();
                self.transmit.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.state = S::Proceeding;
            }
            (true, S::Proceeding, 200..=299) => {
                self.transmit.push_back(response.to_bytes());
                self.last_response = None;
                self.request = None;
                self.state = S::Accepted;
                self.linger = deadline(now, self.timers.l());
            }
            (true, S::Accepted, 200..=299) => self.transmit.push_back(response.to_bytes()),
            (true, S::Proceeding, _) => {
                if !self.key.is_rfc3261() {
                    self.final_to_tag = response.to().ok().and_then(|t| t.tag()).map(Box::from);
                }
                let bytes = response.to_bytes();
                self.transmit.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.request = None;
                self.state = S::Completed;
                if !self.reliable {
                    self.retransmit = Retransmit::start(now, self.timers.g());
                }
                self.timeout = deadline(now, self.timers.h());
            }
            (false, S::Trying | S::Proceeding, _) => {
                let bytes = response.to_bytes();
                self.transmit.push_back(bytes.clone());
                self.last_response = Some(bytes);
                self.request = None;
                self.state = S::Completed;
                self.linger_or_terminate(self.timers.j(self.reliable), now);
            }
            (_, S::Terminated, _) => return Err(Error("transaction terminated")),
            _ => return Err(Error("response not allowed in this transaction state")),
        }
        Ok(())
    }

    /// Fires every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ServerState::Terminated {
            return;
        }
        if fired(self.timeout, now) {
            // Timer H: no ACK came.
            self.events.push_back(ServerEvent::Timeout);
            self.terminate();
            return;
        }
        if fired(self.linger, now) {
            // Timer I, J or L.
            self.terminate();
            return;
        }
        if let Some(r) = self.retransmit.filter(|r| r.at <= now) {
            // Timer G.
            if let Some(bytes) = &self.last_response {
                self.transmit.push_back(bytes.clone());
                self.retransmissions += 1;
            }
            self.retransmit = r.rearm(self.timers.next_capped(r.interval), now);
        }
    }

    /// The transport failed to send a response. The TU is told; the transaction keeps its state
    /// and its timers (RFC 6026 sections 7.1 and 8.8 replace the transition to Terminated of RFC
    /// 3261 17.2.4).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != ServerState::Terminated {
            self.events.push_back(ServerEvent::TransportError);
        }
    }

    /// The next datagram or stream write: a response or a retransmission of one.
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

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let next = self.events.pop_front();
        if next.is_none() && self.request.is_none() && self.events.capacity() != 0 {
            self.events = VecDeque::new();
        }
        next
    }

    fn linger_or_terminate(&mut self, wait: Duration, now: Instant) {
        if wait.is_zero() {
            self.terminate();
        } else {
            self.linger = deadline(now, wait);
        }
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.timeout = None;
        self.linger = None;
        self.last_response = None;
        self.request = None;
        self.events.push_back(ServerEvent::Terminated);
    }
}
