//! Counters that must hold across calls (and, with the Redis backend, across nodes): live
//! channels per account, outbound voice profile and connection; calls per second per source
//! address and per account (token buckets); each profile's spend per UTC day; calls per called
//! number for a calling window's `calls_per_cld`.
//!
//! One abstraction, [`Counters`], two backends: [`LocalCounters`] here (one node, in process)
//! and [`RedisCounters`] (a cluster's nodes sharing one Redis); [`NodeCounters`] is either, the
//! type a node runs with. The decision in `trunking` reads counters through [`Usage`] (reads
//! only, advisory); the engine then takes the call's rate tokens with
//! [`Counters::take_call_rate`] and its channels with [`Counters::acquire`], which are
//! authoritative: all of them or none, under the limits `trunking` named ([`CallRateBucket`],
//! [`ChannelLimits`]). A refused take names its bucket or its [`Scope`], which
//! `trunking::call_rate::outcome` and [`Scope::limit_reason`] turn into `P05` and
//! `D1`/`D2`/`D3`.
//!
//! Why the writes are async and the reads are not: Redis must answer a take before the call can
//! proceed (one script round trip, atomic on the server), so `acquire`, `take_call_rate`,
//! `add_spend`, `record_call_to` and `prefetch` return futures and the engine is written once
//! against them. The local backend hands back futures that are ready when made
//! (`std::future::ready`: no allocation, done on the first poll), so that costs nothing. The
//! trait uses `-> impl Future + Send` rather than `#[async_trait]`, which would box every call;
//! it is therefore not object safe: the engine holds a concrete backend, or [`NodeCounters`].
//! The reads stay synchronous because the pure decision calls them in the middle of its checks;
//! the Redis backend answers them from a node-local view it keeps fresh, and
//! [`Counters::prefetch`] makes the spend and calls-to reads a decision is about to make
//! current first. That is enough for channels because the take, not the read, enforces them.
//! Releasing stays synchronous too: a lease is released on every call end path including
//! `Drop`, which cannot await; Redis hands the release to a background task (its leases carry a
//! TTL for node loss, hence `call_id`).
//!
//! Calls per second are token buckets: each holds at most its burst and refills at its rate,
//! a call takes one token from each of its buckets. Time is passed in (`now`) for the local
//! backend; Redis uses its own clock, shared by every node.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, ready};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rust_decimal::Decimal;
use rustc_hash::FxBuildHasher;
use trunking::call_rate::{CallRate, CallRateBucket, CallRateKey};
use trunking::config::Id;
use trunking::outbound::{ChannelLimits, Scope, Usage, UsageReads};
use trunking::time::Timestamp;

use crate::redis_counters::{RedisCounters, RedisTake};

/// How long calls to a number are remembered: a calling window is at most a day long, so
/// `calls_to` is exact for any `since` within a day of the latest record.
pub const CALLS_TO_RETENTION_MS: u64 = 86_400_000;

/// A shard of call records is swept of entries past retention every 1/32 of the retention (by
/// record time): memory stays within a few percent of the retention's calls, and each number
/// is visited rarely (a sweep walks every number of its shard, cold in cache).
const SWEEPS_PER_RETENTION: u64 = 32;

/// Shards per map: enough that unrelated accounts rarely share a lock on two cores or twenty.
const SHARDS: usize = 32;

/// The counters the engine keeps per call. Reads come from [`Usage`] (what the decision sees).
pub trait Counters: Usage + Send + Sync {
    /// Takes one channel on the account, the profile (if any) and the connection, all or none,
    /// each under its limit (`None`: unlimited, yet counted: emergency calls come that way).
    /// A refusal names the first full scope in the order account, profile, connection.
    /// `call_id` names the lease (the Redis backend expires a lost node's leases by it).
    fn acquire(
        &self,
        limits: &ChannelLimits,
        call_id: &str,
    ) -> impl Future<Output = Result<ChannelLease, Scope>> + Send;

    /// Adds a call's cost to the profile's spend on UTC day `utc_day` ([`Timestamp::utc_day`]).
    fn add_spend(&self, profile_id: &str, utc_day: u64, amount: Decimal) -> impl Future<Output = ()> + Send;

    /// Remembers a call of the profile to `destination` (E.164) placed at `at`, for
    /// [`Usage::calls_to`].
    fn record_call_to(&self, profile_id: &str, destination: &str, at: Timestamp) -> impl Future<Output = ()> + Send;

    /// Takes one token from each bucket, all or none (calls per second). `Err(i)`: `buckets[i]`
    /// is the first without a token, and nothing was taken. `now` is the local backend's clock
    /// (Redis keeps time itself). The buckets' keys are distinct.
    fn take_call_rate(
        &self,
        buckets: &[CallRateBucket],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), usize>> + Send;

    /// Makes the reads an outbound decision is about to make current ([`UsageReads`]): a shared
    /// backend answers [`Usage`] from a view that may lag behind other nodes. In process the
    /// reads are always current, so by default there is nothing to do.
    fn prefetch(&self, reads: &UsageReads) -> impl Future<Output = ()> + Send {
        let _ = reads;
        ready(())
    }

    /// Live calls of an account, profile or connection: the engine's (and metrics') name for
    /// [`Usage::channels`].
    fn live(&self, scope: Scope, id: &str) -> u32 {
        self.channels(scope, id)
    }
}

/// The channels one call holds. Released exactly once: by [`ChannelLease::release`] on any call
/// end path, or when dropped, so no path can leak a channel; a second release does nothing.
#[must_use = "dropping a lease releases its channels at once"]
pub struct ChannelLease {
    held: Option<Held>,
}

/// What a lease holds, per backend.
enum Held {
    Local(LocalTake),
    Redis(RedisTake),
}

impl ChannelLease {
    /// Gives the channels back. True the first time, false (and nothing done) after.
    pub fn release(&mut self) -> bool {
        match self.held.take() {
            Some(Held::Local(take)) => {
                take.release();
                true
            }
            Some(Held::Redis(take)) => {
                take.release();
                true
            }
            None => false,
        }
    }

    /// A lease on channels taken in Redis.
    pub(crate) fn redis(take: RedisTake) -> Self {
        ChannelLease { held: Some(Held::Redis(take)) }
    }

    /// Whether the lease still holds its channels.
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }
}

impl Drop for ChannelLease {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for ChannelLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelLease").field("held", &self.is_held()).finish()
    }
}

/// In-process counters: one node, nothing else to run. Thread safe; share it in an `Arc`.
///
/// Each account, profile and connection has a slot: a live count and a small lock. A take locks
/// the call's two or three slots in scope order (account, profile, connection; every take and
/// release does the same, so no two ever wait on each other in a cycle), checks every limit,
/// then counts all of them, so no concurrent take sees a partial one; a release locks them the
/// same way. Unrelated accounts never share a slot lock. Reads are single atomic loads. Slots
/// are found in sharded maps and a lease keeps its slots, so a release looks nothing up.
///
/// Its inherent methods are the [`Counters`] operations, synchronous; the trait wraps them in
/// ready futures.
pub struct LocalCounters {
    accounts: SlotMap,
    profiles: SlotMap,
    connections: SlotMap,
    rates: RateBuckets,
    spend: Box<[Mutex<HashMap<Id, SpendDays, FxBuildHasher>>]>,
    calls: Box<[Mutex<CallsShard>]>,
    retention_ms: u64,
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCounters")
            .field("retention_ms", &self.retention_ms)
            .field("recorded_calls", &self.recorded_calls())
            .finish_non_exhaustive()
    }
}

impl LocalCounters {
    /// Calls to numbers are kept for [`CALLS_TO_RETENTION_MS`].
    pub fn new() -> Self {
        Self::with_retention(CALLS_TO_RETENTION_MS)
    }

    /// Calls to numbers are kept `retention_ms` after the latest record in their shard.
    pub fn with_retention(retention_ms: u64) -> Self {
        LocalCounters {
            accounts: SlotMap::new(),
            profiles: SlotMap::new(),
            connections: SlotMap::new(),
            rates: RateBuckets::new(),
            spend: (0..SHARDS).map(|_| Mutex::default()).collect(),
            calls: (0..SHARDS).map(|_| Mutex::default()).collect(),
            retention_ms,
        }
    }

    /// [`Counters::acquire`], synchronously. `call_id` is not needed in process.
    pub fn acquire(&self, limits: &ChannelLimits, _call_id: &str) -> Result<ChannelLease, Scope> {
        let account = self.accounts.slot(&limits.account.0);
        let profile = limits.profile.as_ref().map(|(id, limit)| (self.profiles.slot(id), *limit));
        let connection = self.connections.slot(&limits.connection.0);
        {
            // Scope order; see the type's documentation.
            let _account = lock(&account.lock);
            let _profile = profile.as_ref().map(|(p, _)| lock(&p.lock));
            let _connection = lock(&connection.lock);
            if !account.has_room(limits.account.1) {
                return Err(Scope::Account);
            }
            if let Some((p, limit)) = &profile
                && !p.has_room(*limit)
            {
                return Err(Scope::Profile);
            }
            if !connection.has_room(limits.connection.1) {
                return Err(Scope::Connection);
            }
            account.add_one();
            if let Some((p, _)) = &profile {
                p.add_one();
            }
            connection.add_one();
        }
        let take = LocalTake { account, profile: profile.map(|(p, _)| p), connection };
        Ok(ChannelLease { held: Some(Held::Local(take)) })
    }

    /// Live calls of an account, profile or connection.
    pub fn live(&self, scope: Scope, id: &str) -> u32 {
        self.slots(scope).live(id)
    }

    /// [`Counters::take_call_rate`], synchronously.
    pub fn take_call_rate(&self, buckets: &[CallRateBucket], now: Timestamp) -> Result<(), usize> {
        self.rates.take(buckets, now)
    }

    /// [`Counters::add_spend`], synchronously. Each profile keeps its two most recent UTC days
    /// (today and yesterday, for a call that crossed midnight); spend for an older day can no
    /// longer reach a limit and is not kept.
    pub fn add_spend(&self, profile_id: &str, utc_day: u64, amount: Decimal) {
        let mut shard = lock(&self.spend[shard_of(profile_id)]);
        match shard.get_mut(profile_id) {
            Some(days) => days.add(utc_day, amount),
            None => {
                let mut days = SpendDays::default();
                days.add(utc_day, amount);
                shard.insert(Id::from(profile_id), days);
            }
        }
    }

    /// The profile's spend on UTC day `utc_day` (zero until something is added that day).
    pub fn spend(&self, profile_id: &str, utc_day: u64) -> Decimal {
        lock(&self.spend[shard_of(profile_id)]).get(profile_id).map_or(Decimal::ZERO, |d| d.on(utc_day))
    }

    /// [`Counters::record_call_to`], synchronously. Records past retention are dropped as the
    /// shard's time moves on (at most 1/32 of the retention late), so memory follows the
    /// retention's calls without any housekeeping call.
    pub fn record_call_to(&self, profile_id: &str, destination: &str, at: Timestamp) {
        let mut guard = lock(&self.calls[calls_shard_of(profile_id, destination)]);
        let shard = &mut *guard;
        let horizon = at.as_millis().saturating_sub(self.retention_ms);
        if at.as_millis() >= shard.next_sweep {
            shard.sweep(horizon);
            shard.next_sweep = at.as_millis().saturating_add((self.retention_ms / SWEEPS_PER_RETENTION).max(1));
        }
        // One lookup when the key is known (`entry` would need an owned key every time).
        let numbers = match shard.profiles.get_mut(profile_id) {
            Some(numbers) => numbers,
            None => shard.profiles.entry(Id::from(profile_id)).or_default(),
        };
        let times = match numbers.get_mut(destination) {
            Some(times) => times,
            None => numbers.entry(Box::from(destination)).or_default(),
        };
        while times.front().is_some_and(|&t| t < horizon) {
            times.pop_front();
        }
        // Records arrive in time order but for races between threads: keep the deque sorted.
        let at = at.as_millis();
        if times.back().is_none_or(|&last| last <= at) {
            times.push_back(at);
        } else {
            times.insert(times.partition_point(|&t| t <= at), at);
        }
    }

    /// Calls the profile placed to `destination` at or after `since`.
    pub fn calls_to(&self, profile_id: &str, destination: &str, since: Timestamp) -> u32 {
        let shard = lock(&self.calls[calls_shard_of(profile_id, destination)]);
        let Some(times) = shard.profiles.get(profile_id).and_then(|n| n.get(destination)) else { return 0 };
        u32::try_from(count_since(times, since.as_millis())).unwrap_or(u32::MAX)
    }

    /// Call rate buckets currently kept (metrics; shows that full ones are dropped).
    pub fn call_rate_buckets(&self) -> usize {
        self.rates.len()
    }

    /// Call records currently kept (metrics; shows pruning at work).
    pub fn recorded_calls(&self) -> usize {
        self.calls
            .iter()
            .map(|s| lock(s).profiles.values().flat_map(|n| n.values()).map(VecDeque::len).sum::<usize>())
            .sum()
    }

    /// Housekeeping (say once a minute): forgets slots of accounts, profiles and connections
    /// with no live call (ids the configuration no longer has), call rate buckets that have
    /// filled up again, spend older than yesterday and call records past retention. Counting
    /// needs none of it; memory does.
    pub fn prune(&self, now: Timestamp) {
        for map in [&self.accounts, &self.profiles, &self.connections] {
            map.prune();
        }
        self.rates.prune(now);
        let yesterday = now.utc_day().saturating_sub(1);
        for shard in self.spend.iter() {
            lock(shard).retain(|_, days| days.recent.0 >= yesterday);
        }
        let horizon = now.as_millis().saturating_sub(self.retention_ms);
        for shard in self.calls.iter() {
            lock(shard).sweep(horizon);
        }
    }

    fn slots(&self, scope: Scope) -> &SlotMap {
        match scope {
            Scope::Account => &self.accounts,
            Scope::Profile => &self.profiles,
            Scope::Connection => &self.connections,
        }
    }
}

impl Usage for LocalCounters {
    fn channels(&self, scope: Scope, id: &str) -> u32 {
        LocalCounters::live(self, scope, id)
    }

    fn spend_today(&self, profile_id: &str, utc_day: u64) -> Decimal {
        LocalCounters::spend(self, profile_id, utc_day)
    }

    fn calls_to(&self, profile_id: &str, destination: &str, since: Timestamp) -> u32 {
        LocalCounters::calls_to(self, profile_id, destination, since)
    }
}

impl Counters for LocalCounters {
    fn acquire(
        &self,
        limits: &ChannelLimits,
        call_id: &str,
    ) -> impl Future<Output = Result<ChannelLease, Scope>> + Send {
        ready(LocalCounters::acquire(self, limits, call_id))
    }

    fn add_spend(&self, profile_id: &str, utc_day: u64, amount: Decimal) -> impl Future<Output = ()> + Send {
        LocalCounters::add_spend(self, profile_id, utc_day, amount);
        ready(())
    }

    fn record_call_to(&self, profile_id: &str, destination: &str, at: Timestamp) -> impl Future<Output = ()> + Send {
        LocalCounters::record_call_to(self, profile_id, destination, at);
        ready(())
    }

    fn take_call_rate(
        &self,
        buckets: &[CallRateBucket],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), usize>> + Send {
        ready(LocalCounters::take_call_rate(self, buckets, now))
    }

    fn live(&self, scope: Scope, id: &str) -> u32 {
        LocalCounters::live(self, scope, id)
    }
}

/// The counters a node runs with: in process when it runs alone, in Redis when it is one of a
/// cluster's nodes. One type, so the admission, the calls and the metrics are written once.
#[derive(Debug)]
pub enum NodeCounters {
    Local(LocalCounters),
    Redis(RedisCounters),
}

impl NodeCounters {
    /// Times a live lease's expiry was pushed back in Redis (0 in process).
    pub fn lease_refreshes(&self) -> u64 {
        match self {
            NodeCounters::Local(_) => 0,
            NodeCounters::Redis(r) => r.lease_refreshes(),
        }
    }

    /// Live leases put back into Redis after it lost them (a restart) or before it had them
    /// (taken while it was unreachable); 0 in process.
    pub fn leases_restored(&self) -> u64 {
        match self {
            NodeCounters::Local(_) => 0,
            NodeCounters::Redis(r) => r.leases_restored(),
        }
    }

    /// Channel and call rate takes counted on this node alone because Redis could not be
    /// reached (0 in process).
    pub fn fallback_takes(&self) -> u64 {
        match self {
            NodeCounters::Local(_) => 0,
            NodeCounters::Redis(r) => r.fallback_takes(),
        }
    }

    /// Spend and call records Redis did not take (0 in process).
    pub fn write_failures(&self) -> u64 {
        match self {
            NodeCounters::Local(_) => 0,
            NodeCounters::Redis(r) => r.write_failures(),
        }
    }

    /// Whether Redis answers, as the node last saw; `None` in process (no Redis to reach).
    pub fn redis_reachable(&self) -> Option<bool> {
        match self {
            NodeCounters::Local(_) => None,
            NodeCounters::Redis(r) => Some(r.is_reachable()),
        }
    }

    /// Housekeeping, as [`LocalCounters::prune`] (Redis: its node-local call rate buckets).
    pub fn prune(&self, now: Timestamp) {
        match self {
            NodeCounters::Local(l) => l.prune(now),
            NodeCounters::Redis(r) => r.prune(now),
        }
    }
}

impl From<LocalCounters> for NodeCounters {
    fn from(c: LocalCounters) -> Self {
        NodeCounters::Local(c)
    }
}

impl From<RedisCounters> for NodeCounters {
    fn from(c: RedisCounters) -> Self {
        NodeCounters::Redis(c)
    }
}

impl Usage for NodeCounters {
    fn channels(&self, scope: Scope, id: &str) -> u32 {
        match self {
            NodeCounters::Local(c) => c.channels(scope, id),
            NodeCounters::Redis(c) => c.channels(scope, id),
        }
    }

    fn spend_today(&self, profile_id: &str, utc_day: u64) -> Decimal {
        match self {
            NodeCounters::Local(c) => c.spend_today(profile_id, utc_day),
            NodeCounters::Redis(c) => c.spend_today(profile_id, utc_day),
        }
    }

    fn calls_to(&self, profile_id: &str, destination: &str, since: Timestamp) -> u32 {
        match self {
            NodeCounters::Local(c) => Usage::calls_to(c, profile_id, destination, since),
            NodeCounters::Redis(c) => c.calls_to(profile_id, destination, since),
        }
    }
}

// The two backends' futures differ in type, so each method is an `async fn` over both; the
// local arm is done on its first poll as before.
impl Counters for NodeCounters {
    async fn acquire(&self, limits: &ChannelLimits, call_id: &str) -> Result<ChannelLease, Scope> {
        match self {
            NodeCounters::Local(c) => LocalCounters::acquire(c, limits, call_id),
            NodeCounters::Redis(c) => c.acquire(limits, call_id).await,
        }
    }

    async fn add_spend(&self, profile_id: &str, utc_day: u64, amount: Decimal) {
        match self {
            NodeCounters::Local(c) => LocalCounters::add_spend(c, profile_id, utc_day, amount),
            NodeCounters::Redis(c) => c.add_spend(profile_id, utc_day, amount).await,
        }
    }

    async fn record_call_to(&self, profile_id: &str, destination: &str, at: Timestamp) {
        match self {
            NodeCounters::Local(c) => LocalCounters::record_call_to(c, profile_id, destination, at),
            NodeCounters::Redis(c) => c.record_call_to(profile_id, destination, at).await,
        }
    }

    async fn take_call_rate(&self, buckets: &[CallRateBucket], now: Timestamp) -> Result<(), usize> {
        match self {
            NodeCounters::Local(c) => LocalCounters::take_call_rate(c, buckets, now),
            NodeCounters::Redis(c) => c.take_call_rate(buckets, now).await,
        }
    }

    async fn prefetch(&self, reads: &UsageReads) {
        if let NodeCounters::Redis(c) = self {
            c.prefetch(reads).await;
        }
    }

    fn live(&self, scope: Scope, id: &str) -> u32 {
        self.channels(scope, id)
    }
}

/// A token is a million micro-tokens: a millisecond of refill at 1 call a second is a whole
/// number of them, so levels stay exact integers.
const TOKEN: u64 = 1_000_000;

/// Call rate buckets by key, sharded, in process (the local backend's, and the Redis backend's
/// while Redis is unreachable). A bucket that is not there is a full one, so buckets that
/// have filled up again are dropped: each shard sweeps them at most once a second of call
/// time, and memory follows the sources and accounts calling now. Keys include callers'
/// addresses, so the maps hash with SipHash.
pub(crate) struct RateBuckets {
    shards: Box<[Mutex<RateShard>]>,
}

#[derive(Default)]
struct RateShard {
    buckets: HashMap<CallRateKey, TokenBucket, RandomState>,
    next_sweep: u64,
}

/// A bucket's level (micro-tokens) at `at` (ms), and the rate it last refilled at.
#[derive(Clone, Copy)]
struct TokenBucket {
    level: u64,
    at: u64,
    rate: CallRate,
}

/// How often (ms of call time) a shard drops the buckets that have filled up.
const RATE_SWEEP_MS: u64 = 1_000;

impl TokenBucket {
    fn full(rate: CallRate) -> u64 {
        u64::from(rate.burst()) * TOKEN
    }

    /// The level at `now` under `rate` (a clock that went back refills nothing).
    fn level_at(&self, rate: CallRate, now: u64) -> u64 {
        let refill = now.saturating_sub(self.at).saturating_mul(u64::from(rate.per_second()) * (TOKEN / 1_000));
        self.level.saturating_add(refill).min(TokenBucket::full(rate))
    }
}

impl RateBuckets {
    pub(crate) fn new() -> Self {
        RateBuckets { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    /// [`Counters::take_call_rate`]: the buckets' shards are locked in shard order (every take
    /// does the same, so none waits on another in a cycle), every level checked, then every
    /// bucket takes its token.
    pub(crate) fn take(&self, buckets: &[CallRateBucket], now: Timestamp) -> Result<(), usize> {
        let now = now.as_millis();
        let shard_of_bucket: Vec<usize> = buckets.iter().map(|b| spread(FxBuildHasher.hash_one(&b.key))).collect();
        let mut order = shard_of_bucket.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, RateShard>> = order.iter().map(|&i| lock(&self.shards[i])).collect();
        let guard_of = |shard: usize| order.binary_search(&shard).unwrap_or_default();

        let mut levels = Vec::with_capacity(buckets.len());
        for (i, bucket) in buckets.iter().enumerate() {
            let shard = &guards[guard_of(shard_of_bucket[i])];
            let level = match shard.buckets.get(&bucket.key) {
                Some(b) => b.level_at(bucket.rate, now),
                None => TokenBucket::full(bucket.rate),
            };
            if level < TOKEN {
                return Err(i);
            }
            levels.push(level);
        }
        for (i, bucket) in buckets.iter().enumerate() {
            let shard = &mut guards[guard_of(shard_of_bucket[i])];
            let at = shard.buckets.get(&bucket.key).map_or(now, |b| b.at.max(now));
            let taken = TokenBucket { level: levels[i] - TOKEN, at, rate: bucket.rate };
            shard.buckets.insert(bucket.key.clone(), taken);
        }
        for shard in guards.iter_mut() {
            if now >= shard.next_sweep {
                shard.sweep(now);
                shard.next_sweep = now.saturating_add(RATE_SWEEP_MS);
            }
        }
        Ok(())
    }

    /// Drops every bucket that has filled up by `now`.
    pub(crate) fn prune(&self, now: Timestamp) {
        for shard in self.shards.iter() {
            lock(shard).sweep(now.as_millis());
        }
    }

    /// Buckets kept (metrics, tests: shows the sweep at work).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).buckets.len()).sum()
    }
}

impl RateShard {
    fn sweep(&mut self, now: u64) {
        self.buckets.retain(|_, b| b.level_at(b.rate, now) < TokenBucket::full(b.rate));
    }
}

/// One account's, profile's or connection's live calls. Written only under `lock`, read
/// without it. A cache line each, so two busy slots never share one.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    lock: Mutex<()>,
    live: AtomicU32,
}

impl Slot {
    /// Room for one more call under `limit`; the count saturates at `u32::MAX` rather than wrap.
    fn has_room(&self, limit: Option<u32>) -> bool {
        self.live.load(Ordering::Relaxed) < limit.unwrap_or(u32::MAX)
    }

    /// Called with `lock` held (and after `has_room`), so a load and a store are enough.
    fn add_one(&self) {
        self.live.store(self.live.load(Ordering::Relaxed).saturating_add(1), Ordering::Relaxed);
    }

    fn remove_one(&self) {
        self.live.store(self.live.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
    }
}

/// The slots a local lease holds.
struct LocalTake {
    account: Arc<Slot>,
    profile: Option<Arc<Slot>>,
    connection: Arc<Slot>,
}

impl LocalTake {
    fn release(self) {
        let _account = lock(&self.account.lock);
        let _profile = self.profile.as_ref().map(|p| lock(&p.lock));
        let _connection = lock(&self.connection.lock);
        self.account.remove_one();
        if let Some(p) = &self.profile {
            p.remove_one();
        }
        self.connection.remove_one();
    }
}

/// Slots by id, sharded. FxHash: ids are written by the operator, never by the network.
struct SlotMap {
    shards: Box<[RwLock<SlotShard>]>,
}

type SlotShard = HashMap<Id, Arc<Slot>, FxBuildHasher>;

impl SlotMap {
    fn new() -> Self {
        SlotMap { shards: (0..SHARDS).map(|_| RwLock::default()).collect() }
    }

    fn slot(&self, id: &Id) -> Arc<Slot> {
        let shard = &self.shards[shard_of(id)];
        if let Some(slot) = read(shard).get(id) {
            return slot.clone();
        }
        write(shard).entry(id.clone()).or_default().clone()
    }

    fn live(&self, id: &str) -> u32 {
        read(&self.shards[shard_of(id)]).get(id).map_or(0, |s| s.live.load(Ordering::Relaxed))
    }

    /// Forgets slots nothing holds: not a lease, not a take in progress (both hold a clone, and
    /// a clone is only made under the shard's lock, which this holds).
    fn prune(&self) {
        for shard in self.shards.iter() {
            write(shard).retain(|_, slot| Arc::strong_count(slot) > 1);
        }
    }
}

/// A profile's spend on its two most recent UTC days: `(day, total)`, the latest first.
#[derive(Clone, Copy, Default)]
struct SpendDays {
    recent: (u64, Decimal),
    previous: (u64, Decimal),
}

impl SpendDays {
    fn add(&mut self, day: u64, amount: Decimal) {
        if day == self.recent.0 {
            self.recent.1 = self.recent.1.saturating_add(amount);
        } else if day > self.recent.0 {
            self.previous = self.recent;
            self.recent = (day, amount);
        } else if day == self.previous.0 {
            self.previous.1 = self.previous.1.saturating_add(amount);
        } else if day > self.previous.0 {
            self.previous = (day, amount);
        }
    }

    fn on(&self, day: u64) -> Decimal {
        if day == self.recent.0 {
            self.recent.1
        } else if day == self.previous.0 {
            self.previous.1
        } else {
            Decimal::ZERO
        }
    }
}

/// Call times (ms) per profile and called number, oldest first. Numbers are dialed by
/// customers, so their maps hash with SipHash.
#[derive(Default)]
struct CallsShard {
    profiles: HashMap<Id, HashMap<Box<str>, VecDeque<u64>, RandomState>, FxBuildHasher>,
    next_sweep: u64,
}

impl CallsShard {
    fn sweep(&mut self, horizon: u64) {
        self.profiles.retain(|_, numbers| {
            numbers.retain(|_, times| {
                while times.front().is_some_and(|&t| t < horizon) {
                    times.pop_front();
                }
                if times.capacity() > 4 * times.len().max(4) {
                    times.shrink_to_fit();
                }
                !times.is_empty()
            });
            !numbers.is_empty()
        });
    }
}

/// Records at or after `since` in a sorted deque. It gallops back from the newest record before
/// a binary search: a recent `since` then reads only the end the last record just warmed, and
/// an old one costs about twice a plain binary search's few reads.
fn count_since(times: &VecDeque<u64>, since: u64) -> usize {
    let n = times.len();
    let mut reach = 1;
    while reach <= n && times[n - reach] >= since {
        reach *= 2;
    }
    // The first record at or after `since` is in `lo..=hi` (`hi == n`: none is).
    let (mut lo, mut hi) = (n.saturating_sub(reach), n - reach / 2);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if times[mid] < since {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    n - lo
}

fn shard_of(id: &str) -> usize {
    spread(FxBuildHasher.hash_one(id))
}

fn calls_shard_of(profile_id: &str, destination: &str) -> usize {
    spread(FxBuildHasher.hash_one((profile_id, destination)))
}

/// A shard from a hash, mixed so that a shard's keys still spread over its map's buckets.
fn spread(hash: u64) -> usize {
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros())) as usize
}

// A panic elsewhere never holds these locks in an inconsistent state (each critical section
// is a few loads and stores), so a poisoned lock is used as is rather than spreading the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
