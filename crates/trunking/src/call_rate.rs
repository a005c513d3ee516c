//! Calls per second: how fast a caller may start calls. A caller over its call rate is refused
//! with `403 CPS limit exceeded P05`. Each limit is a token bucket: it holds at most `burst`
//! calls and refills at `per_second`, so a caller may start `burst` calls at once and
//! `per_second` a second for as long as it likes.
//!
//! The operator sets two limits ([`CallRateLimits`]): per source address and per account. Which
//! buckets a call takes from is the rule here ([`CallRateLimits::buckets`]); the engine's
//! counters take one token from each, all or none, and [`outcome`] records the result in the
//! decision's trace and names the response.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::catalog::Reason;
use crate::config::Id;
use crate::trace::{Trace, Value};

/// The response to a caller over its call rate.
pub const REASON: Reason = Reason::P05;

/// The trace's name for the call rate check.
pub const RULE: &str = "call_rate.limit";

/// A call rate: a token bucket refilled at `per_second` calls a second, holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallRate {
    per_second: u32,
    burst: u32,
}

impl CallRate {
    /// `None` when either is zero: a bucket that never refills, or never holds a call, would
    /// refuse every call, which is what disabling the caller is for, not a rate.
    pub const fn new(per_second: u32, burst: u32) -> Option<CallRate> {
        if per_second == 0 || burst == 0 { None } else { Some(CallRate { per_second, burst }) }
    }

    pub const fn per_second(self) -> u32 {
        self.per_second
    }

    pub const fn burst(self) -> u32 {
        self.burst
    }
}

/// The operator's call rate limits (`None`: no limit of that kind).
///
/// Defaults: 100 calls a second per source address with a burst of 200, no limit per account.
/// A source address is a PBX, an SBC, a dialer or a scanner. 100 calls a second is more than
/// any office PBX starts and as much as a large contact-center dialer on one trunk, so honest
/// traffic does not meet it, while a runaway dialer or a scanner behind one address is held to a
/// rate one node carries alongside everyone else's calls; the burst of two seconds' worth lets
/// a PBX redial its queue after an outage at once. Accounts differ by orders of magnitude (one
/// desk phone to a call center, each with its own channel limits already), so no single
/// per-account figure fits them: the operator sets one for the rate they sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRateLimits {
    pub per_source: Option<CallRate>,
    pub per_account: Option<CallRate>,
}

impl CallRateLimits {
    /// The default per source address: 100 calls a second, 200 at once.
    pub const DEFAULT_PER_SOURCE: CallRate = CallRate { per_second: 100, burst: 200 };

    /// No call rate limit at all.
    pub const NONE: CallRateLimits = CallRateLimits { per_source: None, per_account: None };

    /// The buckets a call takes one token from, in the order they are checked (source first:
    /// the address is known before anything else about the caller).
    pub fn buckets(&self, origin: CallOrigin<'_>) -> Vec<CallRateBucket> {
        let (source, account) = match origin {
            CallOrigin::Customer { emergency: true, .. } | CallOrigin::Carrier => return Vec::new(),
            CallOrigin::Customer { source, account, emergency: false } => (source, Some(account)),
            CallOrigin::ByName { source, caller_account } => (source, caller_account),
        };
        let mut buckets = Vec::with_capacity(2);
        if let Some(rate) = self.per_source {
            buckets.push(CallRateBucket { key: CallRateKey::source(source), rate });
        }
        if let (Some(rate), Some(account)) = (self.per_account, account) {
            buckets.push(CallRateBucket { key: CallRateKey::Account(account.clone()), rate });
        }
        buckets
    }
}

impl Default for CallRateLimits {
    fn default() -> Self {
        CallRateLimits { per_source: Some(CallRateLimits::DEFAULT_PER_SOURCE), per_account: None }
    }
}

/// Who starts a call, as the call rate limits see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOrigin<'a> {
    /// An identified customer's outbound call (an on-net one too). Emergency calls are never
    /// refused for their rate, as for every other limit, and take no token.
    Customer { source: IpAddr, account: &'a Id, emergency: bool },
    /// A call to one of the platform's connections by name (a SIP URI or a subdomain): from a
    /// connection of the platform (its account is the caller's) or from outside (`None`).
    ByName { source: IpAddr, caller_account: Option<&'a Id> },
    /// A carrier's call to one of the platform's numbers: not limited, the calls are what the
    /// customers buy numbers for, and a carrier's rate is its own to police.
    Carrier,
}

/// What a bucket counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallRateKey {
    /// One source address: an IPv4 address, or an IPv6 address's /64 (one host or site
    /// usually holds a whole /64, so its addresses are one caller).
    Source(IpAddr),
    Account(Id),
}

impl CallRateKey {
    /// The bucket of calls from `ip` (an IPv4-mapped IPv6 address is its IPv4 one).
    pub fn source(ip: IpAddr) -> CallRateKey {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & (u128::MAX << 64);
                CallRateKey::Source(IpAddr::V6(Ipv6Addr::from(network)))
            }
            v4 => CallRateKey::Source(v4),
        }
    }

    /// `source` or `account`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallRateKey::Source(_) => "source",
            CallRateKey::Account(_) => "account",
        }
    }
}

/// `source:192.0.2.1`, `source:2001:db8::`, `account:<id>`: a bucket's name in a shared store.
impl fmt::Display for CallRateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallRateKey::Source(ip) => write!(f, "source:{ip}"),
            CallRateKey::Account(id) => write!(f, "account:{id}"),
        }
    }
}

/// One bucket a call takes a token from, under its rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRateBucket {
    pub key: CallRateKey,
    pub rate: CallRate,
}

impl CallRateBucket {
    fn facts(&self) -> [(&'static str, Value); 4] {
        let id = match &self.key {
            CallRateKey::Source(ip) => Value::Ip(*ip),
            CallRateKey::Account(id) => Value::from(id),
        };
        [
            ("bucket", Value::Static(self.key.kind())),
            ("id", id),
            ("per_second", self.rate.per_second.into()),
            ("burst", self.rate.burst.into()),
        ]
    }
}

/// Records a call rate take in the trace: `taken` is the counters' answer for `buckets` (`Err(i)`:
/// `buckets[i]` had no token left). An exhausted bucket refuses the call with [`REASON`].
pub fn outcome(trace: &mut Trace, buckets: &[CallRateBucket], taken: Result<(), usize>) -> Result<(), Reason> {
    match taken {
        _ if buckets.is_empty() => {
            trace.skip(RULE, [("buckets", 0u32.into())]);
            Ok(())
        }
        Ok(()) => {
            trace.pass(RULE, [("buckets", (buckets.len() as u64).into())]);
            Ok(())
        }
        Err(i) => {
            // An index out of range is a backend's fault; the first bucket is named then.
            trace.fail(RULE, buckets.get(i).unwrap_or(&buckets[0]).facts());
            Err(REASON)
        }
    }
}
