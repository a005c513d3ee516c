//! RFC 3261 section 17 transactions as sans-I/O state machines, with the corrections of RFC 6026.
//!
//! Each transaction is driven the way quinn-proto drives a connection: input through `handle_*`
//! (a message from the network, a timer that fired, a transport error), commands from the
//! transaction user (`send_response`), and output through `poll_transmit` (bytes to send),
//! `poll_timeout` (when to call `handle_timeout` next) and `poll_event` (what the TU must learn).
//! Time is always passed in as a value; nothing here reads a clock, touches a socket or spawns.
//!
//! - [`ClientTransaction`]: INVITE (figure 5 with RFC 6026's Accepted state) and non-INVITE
//!   (figure 6). Retransmits the request (Timers A/E), times out (B/F), builds and re-sends the
//!   ACK for a non-2xx final response (17.1.1.3), lingers to absorb retransmissions (D/K/M).
//! - [`ServerTransaction`]: INVITE (figure 7 with RFC 6026's Accepted state) and non-INVITE
//!   (figure 8). Sends `100 Trying` for INVITE at once, answers request retransmissions with the
//!   last response, retransmits a non-2xx final to INVITE (G) until the ACK or H, lingers
//!   (I/J/L).
//! - [`TransactionKey`]: the matching rules of 17.1.3, 17.2.3 and 9.2 as an owned hashable key.
//!
//! What the driver does around them: parse, find the transaction by key (creating a server
//! transaction for a new request that is not ACK), pump `poll_*` after every `handle_*`, and
//! drop the transaction once it reports [`ClientEvent::Terminated`] / [`ServerEvent::Terminated`]
//! and its transmit queue is drained.

mod client;
mod key;
mod server;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use client::{ClientEvent, ClientState, ClientTransaction};
pub use key::TransactionKey;
pub use server::{ServerEvent, ServerState, ServerTransaction};

/// The base timer values of RFC 3261 section 17 (table 4 of appendix A), configurable, and the
/// timers derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timers {
    /// Round-trip time estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::RFC3261
    }
}

impl Timers {
    /// The defaults of RFC 3261: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    pub const RFC3261: Timers =
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) };

    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer A, first interval: INVITE request retransmission (unreliable only), T1, doubling.
    pub fn a(&self) -> Duration {
        self.t1
    }
    /// Timer B: INVITE transaction timeout, 64*T1.
    pub fn b(&self) -> Duration {
        self.t1x64()
    }
    /// Timer D: wait for response retransmissions. At least 32 s for unreliable transports (we
    /// use the larger of 32 s and 64*T1, the longest a server retransmits with the same T1),
    /// zero for reliable ones.
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t1x64().max(Duration::from_secs(32)) }
    }
    /// Timer E, first interval: non-INVITE request retransmission, T1, doubling up to T2.
    pub fn e(&self) -> Duration {
        self.t1
    }
    /// Timer F: non-INVITE transaction timeout, 64*T1.
    pub fn f(&self) -> Duration {
        self.t1x64()
    }
    /// Timer G, first interval: INVITE non-2xx final response retransmission, T1, doubling up
    /// to T2.
    pub fn g(&self) -> Duration {
        self.t1
    }
    /// Timer H: wait for the ACK of a non-2xx final response, 64*T1.
    pub fn h(&self) -> Duration {
        self.t1x64()
    }
    /// Timer I: wait for ACK retransmissions, T4 for unreliable transports, zero for reliable.
    pub fn i(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }
    /// Timer J: wait for non-INVITE request retransmissions, 64*T1 unreliable, zero reliable.
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t1x64() }
    }
    /// Timer K: wait for non-INVITE response retransmissions, T4 unreliable, zero reliable.
    pub fn k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }
    /// Timer L (RFC 6026): server INVITE transaction in Accepted, 64*T1 on every transport.
    pub fn l(&self) -> Duration {
        self.t1x64()
    }
    /// Timer M (RFC 6026): client INVITE transaction in Accepted, 64*T1 on every transport.
    pub fn m(&self) -> Duration {
        self.t1x64()
    }

    /// The next interval of Timer A after `prev`: doubled, no cap (17.1.1.2).
    pub fn next_a(&self, prev: Duration) -> Duration {
        prev.saturating_mul(2)
    }
    /// The next interval of Timers E and G after `prev`: doubled, capped at T2 (17.1.2.2,
    /// 17.2.1).
    pub fn next_capped(&self, prev: Duration) -> Duration {
        prev.saturating_mul(2).min(self.cap())
    }

    /// T2 as the cap of E and G. A T2 configured below T1 counts as T1, so that intervals never
    /// shrink below the first one.
    pub(crate) fn cap(&self) -> Duration {
        self.t2.max(self.t1)
    }
}

/// A pending retransmission: when it fires and the interval it was armed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

impl Retransmit {
    fn start(now: Instant, interval: Duration) -> Option<Retransmit> {
        now.checked_add(interval).map(|at| Retransmit { at, interval })
    }

    /// Re-arms after firing with `interval`. The schedule follows the deadlines (so a driver that
    /// wakes a little late does not drift the schedule), but never lands in the past.
    fn rearm(self, interval: Duration, now: Instant) -> Option<Retransmit> {
        let at = match self.at.checked_add(interval) {
            Some(at) if at >= now => at,
            _ => now.checked_add(interval)?,
        };
        Some(Retransmit { at, interval })
    }
}

/// `now + d`, or `None` (never) when that is not representable.
fn deadline(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// The earliest of some optional deadlines.
fn earliest(deadlines: [Option<Instant>; 3]) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

fn fired(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| at <= now)
}
