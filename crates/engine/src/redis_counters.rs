//! [`Counters`] shared by the nodes of a cluster through Redis: [`RedisCounters`].
//!
//! Channels. Each account, profile and connection has a sorted set of the leases on it
//! (`{prefix}ch:{scope}:{id}`, the prefix `ot:` unless a test picks its own), each lease scored
//! by the time (ms, Redis' clock) it expires. A take is one Lua script: it drops every scope's
//! expired leases, counts the rest, and adds the call's lease to all of them only if every
//! scope has room, so the take is atomic across nodes without any lock. The node re-scores its
//! live leases every third of the lease TTL, so a live call never expires, and a node that dies
//! stops counting within the TTL with no cleanup job: the next take on those scopes drops its
//! leases. The sets themselves expire a TTL after their last write, so abandoned ids vanish
//! (hence every node of a cluster uses the same TTL). A take's keys are several, so this needs
//! one Redis (with replicas if wanted), not Redis Cluster.
//!
//! Every node keeps a book of its own live leases. The refresh puts back any of them Redis does
//! not hold: after a Redis restart (no persistence: every set is gone), after a partition longer
//! than the TTL, and for leases taken while Redis was unreachable. So the counts converge on the
//! calls actually up, within a third of the TTL, or at once when the node sees Redis answer
//! again; each one put back is counted ([`RedisCounters::leases_restored`]).
//!
//! Releases are synchronous ([`ChannelLease`] releases on `Drop`): the lease leaves this node's
//! book at once (so it is never refreshed again) and a background task removes it from Redis.
//! If that removal fails, or the counters were dropped first, the lease still goes within the
//! TTL. The same task refreshes the leases and the node-local view.
//!
//! Calls per second. A bucket is a hash (`{prefix}cps:source:{address}`,
//! `{prefix}cps:account:{id}`) holding its level in micro-tokens and when it was last taken
//! from (µs, Redis' clock); one script refills every bucket of a call, checks them and takes a
//! token from each, all or none. A bucket expires when it would be full again, so an idle one
//! costs nothing and a missing one is a full one (a Redis restart refills every bucket once).
//!
//! Reads ([`Usage`]) are synchronous and answer from that node-local view: the counts this node
//! saw at its last take, release, spend or record on a key, refreshed from Redis every third of
//! the TTL (or at once with [`RedisCounters::refresh_view`]). A read of a key the node has not
//! seen yet answers zero and makes the next refresh fetch it; [`Counters::prefetch`] (or
//! [`RedisCounters::fetch_usage`]) fetches the spend and calls-to keys an outbound decision is
//! about to read. A channel read can be that stale; limits on channels still hold because the
//! take, not the read, enforces them.
//!
//! Spend is kept as integer micro-units (amounts are rounded to 6 decimal places) with `INCRBY`
//! per profile and UTC day (`{prefix}spend:{profile}:{day}`, expiring after two days), so sums
//! are exact. Calls to a number are a sorted set per profile and destination
//! (`{prefix}cld:{profile}:{destination}`) scored by call time and trimmed past
//! [`CALLS_TO_RETENTION_MS`].
//!
//! Redis unreachable. An operation that cannot reach Redis (an error or no answer within
//! [`REDIS_TIMEOUT`]) marks it unreachable ([`RedisCounters::is_reachable`], logged once);
//! until it answers again no call waits for it. Takes fail open to node-local counting,
//! counted ([`RedisCounters::fallback_takes`]): a channel take counts this node's own live
//! calls (its book, whether Redis holds them or not) under the same limits, a call rate take
//! uses node-local buckets at the same rates. During an outage each node therefore enforces
//! every limit on its own calls alone (a cluster of N nodes may admit up to N times a limit);
//! calls keep flowing rather than every call failing. The refresher tries Redis every
//! [`RETRY_INTERVAL`]; the round that goes through puts this node's leases (those taken during
//! the outage too) into Redis and only then declares it reachable, so takes are shared again
//! against counts that include every live call of the nodes that are back. A spend or call
//! record that cannot be written is counted ([`RedisCounters::write_failures`]), kept in this
//! node's view, and written by the first refresh that reaches Redis (a write that timed out
//! after Redis applied it is then written twice: spend errs on the safe side of a limit). The
//! connection reconnects by itself (`ConnectionManager`), and scripts a restarted Redis no
//! longer has are loaded again on `NOSCRIPT` (`Script::invoke_async`).
//!
//! Redis restarted without persistence. Leases come back as above. A spend key Redis lost is
//! put back with the total the node writing or refreshing it last saw (at most a refresh
//! period old; the first node to do so wins), then the increments since, so a day's spend
//! limit still holds. A calls set Redis lost is put back by the next refresh from the call
//! times the node saw, under names every node derives alike; a record written to the set
//! before that refresh makes the set exist again, and the older records are then not put back.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use rust_decimal::Decimal;
use tokio::sync::{Notify, mpsc, oneshot};
use trunking::call_rate::{CallRateBucket, CallRateKey};
use trunking::outbound::{ChannelLimits, Scope, Usage, UsageReads};
use trunking::time::Timestamp;

use crate::counters::{CALLS_TO_RETENTION_MS, ChannelLease, Counters, RateBuckets};

/// The key prefix of a deployment's counters.
pub const DEFAULT_KEY_PREFIX: &str = "ot:";

/// How long an operation waits for Redis before counting locally: a call setup can afford this
/// once.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// While Redis is unreachable, the refresher tries it this often; calls count on the node
/// meanwhile instead of each waiting out [`REDIS_TIMEOUT`].
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Spend is stored in millionths: exact integers, and finer than any rate's precision.
const SPEND_SCALE: u32 = 6;

/// A day's spend key outlives its day by one, for a call that ends after midnight.
const SPEND_KEY_TTL_SECS: i64 = 2 * 86_400;

/// Leases per refresh script: Redis runs one script at a time, so each stays short.
const REFRESH_BATCH: usize = 256;

/// KEYS: the scopes' sets. ARGV: lease TTL (ms), lease id, then one limit per key (-1: none).
/// Returns 0 (taken) or the 1-based index of the first full key, then each key's count.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  counts[i] = redis.call('ZCARD', key)
end
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + i])
  if limit >= 0 and counts[i] >= limit then
    return {i, unpack(counts)}
  end
end
for i, key in ipairs(KEYS) do
  counts[i] = counts[i] + redis.call('ZADD', key, now + ttl, ARGV[2])
  redis.call('PEXPIRE', key, ttl)
end
return {0, unpack(counts)}
",
    )
});

/// KEYS: sets, ARGV: lease TTL (ms), then the lease id per key. Scores each lease to expire a
/// TTL from now, adding it back if the set lost it (a restart, a partition past the TTL, a
/// lease taken while Redis was unreachable); returns the 1-based indices of the keys it was
/// added back to. Adding back is safe because only this node's live leases are refreshed, and
/// a release's removal is sent after any refresh that could still add its lease (see [`run`]).
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
local added = {}
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, expiry, ARGV[i + 1]) == 1 then
    added[#added + 1] = i
  end
  redis.call('PEXPIRE', key, ttl)
end
return added
",
    )
});

/// KEYS: sets. Returns each set's leases not yet expired.
static LIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCOUNT', key, string.format('(%d', now), '+inf')
end
return out
",
    )
});

/// KEYS: spend keys (a profile's UTC day each). ARGV: the keys' TTL (s), then per key the
/// total this node last saw, put back first if Redis lost the key (0: nothing to put back),
/// and the amount to add. Returns each key's total.
static SPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local seen, adding = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if seen > 0 and redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[2 * i], 'EX', ttl)
  end
  if adding ~= 0 then
    redis.call('INCRBY', key, ARGV[2 * i + 1])
    redis.call('EXPIRE', key, ttl)
  end
  out[i] = tonumber(redis.call('GET', key) or '0')
end
return out
",
    )
});

/// KEYS: one calls set. ARGV: retention (ms), horizon (ms), how many call times follow to put
/// back if Redis lost the set, those times, then (time, member) pairs to add (records this
/// node could not write). Put back records are named `{time}:restored:{n}`, the same on every
/// node, so two nodes putting back the same records add them once. Returns the set's members
/// from the horizon on.
static CALLS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = KEYS[1]
local n = tonumber(ARGV[3])
if n > 0 and redis.call('EXISTS', key) == 0 then
  local seen = {}
  for i = 4, 3 + n do
    local at = ARGV[i]
    seen[at] = (seen[at] or 0) + 1
    redis.call('ZADD', key, at, at .. ':restored:' .. seen[at])
  end
end
for i = 4 + n, #ARGV, 2 do
  redis.call('ZADD', key, ARGV[i], ARGV[i + 1])
end
if redis.call('EXISTS', key) == 1 then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2])
  redis.call('PEXPIRE', key, ARGV[1])
end
return redis.call('ZRANGEBYSCORE', key, ARGV[2], '+inf')
",
    )
});

/// KEYS: a call's token buckets. ARGV: per key, its rate (calls a second) then its burst.
/// Levels are micro-tokens and times µs, so a rate of r calls a second refills r micro-tokens a
/// µs, exactly. Returns 0 (a token taken from every bucket) or the 1-based index of the first
/// bucket without one (nothing taken). A bucket expires when it would be full again: absent
/// and full are the same.
static CALL_RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token = 1000000
local levels = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local full = tonumber(ARGV[2 * i]) * token
  local state = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(state[1]), tonumber(state[2])
  if level == nil or at == nil then
    level = full
  elseif now > at then
    level = math.min(full, level + (now - at) * rate)
  else
    level = math.min(full, level)
  end
  if level < token then
    return i
  end
  levels[i] = level
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local full = tonumber(ARGV[2 * i]) * token
  local level = levels[i] - token
  redis.call('HSET', key, 'level', string.format('%.0f', level), 'at', string.format('%.0f', now))
  redis.call('PEXPIRE', key, math.floor((full - level) / math.max(rate, 1) / 1000) + 1)
end
return 0
",
    )
});

/// Counters in Redis, shared by every node pointed at it. Needs a Tokio runtime (a background
/// task refreshes leases and the view); share it in an `Arc`.
pub struct RedisCounters {
    conn: ConnectionManager,
    shared: Arc<Shared>,
    prefix: Box<str>,
    node_id: Box<str>,
    lease_ttl_ms: u64,
    sequence: AtomicU64,
    /// Call rate buckets while Redis is unreachable.
    fallback_rates: RateBuckets,
    fallback_takes: AtomicU64,
    /// Dropped with the counters: stops the background task.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("lease_ttl_ms", &self.lease_ttl_ms)
            .field("reachable", &self.is_reachable())
            .field("fallback_takes", &self.fallback_takes())
            .finish_non_exhaustive()
    }
}

/// A call record as written to a calls set: its time (ms) and its member name.
type CallRecord = (u64, String);

/// The sets one lease is in: its account's, profile's (if any) and connection's.
type LeaseKeys = Arc<[Box<str>]>;

/// What the counters, their leases and the background task share.
struct Shared {
    book: Mutex<Book>,
    /// Live channels per set, as this node last saw them in Redis.
    channels: Mutex<HashMap<Box<str>, u32>>,
    /// Spend per day key, in millionths.
    spend: Mutex<HashMap<Box<str>, i64>>,
    /// Call times (ms, sorted) per calls key.
    calls: Mutex<HashMap<Box<str>, Vec<u64>>>,
    /// Spend Redis did not take (millionths per day key), in the view meanwhile: added to
    /// Redis by the next refresh that reaches it.
    unsent_spend: Mutex<HashMap<Box<str>, i64>>,
    /// Call records Redis did not take, (time, member) per calls key: likewise.
    unsent_calls: Mutex<HashMap<Box<str>, Vec<CallRecord>>>,
    releases: mpsc::UnboundedSender<Release>,
    health: Health,
    lease_refreshes: AtomicU64,
    leases_restored: AtomicU64,
    write_failures: AtomicU64,
    lease_ttl_ms: u64,
}

/// This node's live leases: what the refresher keeps in Redis, and what a take counts while
/// Redis is unreachable.
#[derive(Default)]
struct Book {
    leases: HashMap<Arc<str>, BookedLease>,
    /// Per set, this node's live leases on it.
    sets: HashMap<Box<str>, SetCount>,
    /// Leases Redis does not hold yet.
    outside_redis: usize,
}

struct BookedLease {
    keys: LeaseKeys,
    /// Whether Redis holds it (as far as this node knows): false for a lease taken while Redis
    /// was unreachable, until the refresher puts it there.
    in_redis: bool,
}

#[derive(Default)]
struct SetCount {
    live: u32,
    /// Of those, the ones Redis does not hold yet: what the view must add to Redis' count.
    not_in_redis: u32,
}

impl Book {
    fn add(&mut self, id: Arc<str>, keys: LeaseKeys, in_redis: bool) {
        for key in keys.iter() {
            let count = match self.sets.get_mut(key) {
                Some(count) => count,
                None => self.sets.entry(key.clone()).or_default(),
            };
            count.live += 1;
            count.not_in_redis += u32::from(!in_redis);
        }
        self.outside_redis += usize::from(!in_redis);
        self.leases.insert(id, BookedLease { keys, in_redis });
    }

    fn remove(&mut self, id: &str) -> Option<BookedLease> {
        let lease = self.leases.remove(id)?;
        self.outside_redis -= usize::from(!lease.in_redis);
        for key in lease.keys.iter() {
            if let Some(count) = self.sets.get_mut(key) {
                count.live = count.live.saturating_sub(1);
                count.not_in_redis = count.not_in_redis.saturating_sub(u32::from(!lease.in_redis));
                if count.live == 0 {
                    self.sets.remove(key);
                }
            }
        }
        Some(lease)
    }

    /// The first set (by index) where this node's own calls already reach the limit.
    fn first_full(&self, keys: &[Box<str>], limits: &[Option<u32>]) -> Option<usize> {
        keys.iter().zip(limits).position(|(key, limit)| {
            let live = self.sets.get(key).map_or(0, |c| c.live);
            limit.is_some_and(|limit| live >= limit)
        })
    }

    /// Redis holds the lease now (the refresher put it there).
    fn in_redis(&mut self, id: &str) {
        let Some(lease) = self.leases.get_mut(id) else { return };
        if lease.in_redis {
            return;
        }
        lease.in_redis = true;
        self.outside_redis -= 1;
        for key in lease.keys.iter() {
            if let Some(count) = self.sets.get_mut(key) {
                count.not_in_redis = count.not_in_redis.saturating_sub(1);
            }
        }
    }

    fn not_in_redis(&self, key: &str) -> u32 {
        self.sets.get(key).map_or(0, |c| c.not_in_redis)
    }
}

/// Whether Redis answers. Only the refresher declares it reachable again, after it has put
/// this node's leases back, so no take is counted in Redis before them.
struct Health {
    reachable: AtomicBool,
    /// Woken when an operation finds Redis unreachable: the refresher starts probing.
    lost: Notify,
}

impl Health {
    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The refresher's round went through.
    fn answered(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!("redis reachable again: this node's leases are back, counting is shared");
        }
    }

    fn failed(&self, error: &RedisError) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unreachable: limits counted on this node alone until it answers");
            self.lost.notify_one();
        }
    }
}

/// A lease for the background task to remove from Redis.
struct Release {
    id: Arc<str>,
    keys: LeaseKeys,
}

/// The channels a Redis lease holds (see [`ChannelLease`]).
pub(crate) struct RedisTake {
    shared: Arc<Shared>,
    id: Arc<str>,
    keys: LeaseKeys,
}

impl RedisTake {
    pub(crate) fn release(self) {
        let booked = lock(&self.shared.book).remove(&self.id);
        // The view counts what Redis holds: a lease it never had is not in it.
        if booked.is_some_and(|b| b.in_redis) {
            let mut view = lock(&self.shared.channels);
            for key in self.keys.iter() {
                if let Some(n) = view.get_mut(key) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // Sent even for a lease Redis did not hold: a refresh under way may be adding it.
        // A closed channel means the counters are gone: the lease then expires by its TTL.
        let _ = self.shared.releases.send(Release { id: self.id, keys: self.keys });
    }
}

impl RedisCounters {
    /// Connects to `url` (`redis://host:port/db`) with the keys under [`DEFAULT_KEY_PREFIX`].
    /// `node_id` names this node's leases (unique per node); `lease_ttl` is how long a dead
    /// node's channels stay counted (30 s is a sensible default). Fails if Redis does not
    /// answer now: a node is not started against a Redis it cannot reach.
    pub async fn connect(url: &str, node_id: &str, lease_ttl: Duration) -> Result<RedisCounters, RedisError> {
        Self::connect_with_prefix(url, node_id, lease_ttl, DEFAULT_KEY_PREFIX).await
    }

    /// [`RedisCounters::connect`] with every key under `prefix` (tests, or two deployments
    /// sharing one Redis).
    pub async fn connect_with_prefix(
        url: &str,
        node_id: &str,
        lease_ttl: Duration,
        prefix: &str,
    ) -> Result<RedisCounters, RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let lease_ttl_ms = u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX).max(3);
        let (releases, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            book: Mutex::default(),
            channels: Mutex::default(),
            spend: Mutex::default(),
            calls: Mutex::default(),
            unsent_spend: Mutex::default(),
            unsent_calls: Mutex::default(),
            releases,
            health: Health { reachable: AtomicBool::new(true), lost: Notify::new() },
            lease_refreshes: AtomicU64::new(0),
            leases_restored: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            lease_ttl_ms,
        });
        tokio::spawn(run(shared.clone(), conn.clone(), rx, stopped));
        Ok(RedisCounters {
            conn,
            shared,
            prefix: prefix.into(),
            node_id: node_id.into(),
            lease_ttl_ms,
            sequence: AtomicU64::new(0),
            fallback_rates: RateBuckets::new(),
            fallback_takes: AtomicU64::new(0),
            _stop: stop,
        })
    }

    /// Channel and call rate takes counted on this node alone because Redis could not be
    /// reached (metrics).
    pub fn fallback_takes(&self) -> u64 {
        self.fallback_takes.load(Ordering::Relaxed)
    }

    /// Spend or call records Redis did not take (metrics).
    pub fn write_failures(&self) -> u64 {
        self.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Times a live lease's expiry was pushed back (metrics).
    pub fn lease_refreshes(&self) -> u64 {
        self.shared.lease_refreshes.load(Ordering::Relaxed)
    }

    /// Live leases put back into Redis: ones it lost (a restart, a partition past the TTL) and
    /// ones taken while it was unreachable (metrics).
    pub fn leases_restored(&self) -> u64 {
        self.shared.leases_restored.load(Ordering::Relaxed)
    }

    /// Whether this node counts in Redis (metrics: a gauge): false from an operation Redis did
    /// not answer until the refresher reaches it again.
    pub fn is_reachable(&self) -> bool {
        self.shared.health.is_reachable()
    }

    /// Housekeeping (say once a minute): forgets the node-local call rate buckets that have
    /// filled up again.
    pub fn prune(&self, now: Timestamp) {
        self.fallback_rates.prune(now);
    }

    /// Reads every key of the node-local view from Redis now, rather than at the next
    /// background refresh; keys no longer in Redis leave the view.
    pub async fn refresh_view(&self) -> Result<(), RedisError> {
        self.shared.refresh_view(&mut self.conn.clone()).await
    }

    /// Reads a profile's spend on `spend_day` and its calls to `calls_to` from Redis into the
    /// view now (either may be absent): what an outbound decision must see of other nodes'
    /// latest spend and calls (the view alone may be a refresh period behind, or not know the
    /// keys). [`Counters::prefetch`] is this with the errors logged.
    pub async fn fetch_usage(
        &self,
        profile_id: &str,
        spend_day: Option<u64>,
        calls_to: Option<&str>,
    ) -> Result<(), RedisError> {
        let spend: Vec<Box<str>> =
            spend_day.map(|d| self.spend_key(profile_id, d).into_boxed_str()).into_iter().collect();
        let calls: Vec<Box<str>> =
            calls_to.map(|n| self.calls_key(profile_id, n).into_boxed_str()).into_iter().collect();
        if spend.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        match self.shared.attempt(self.shared.refresh_keys(&mut conn, &[], &spend, &calls)).await {
            Some(result) => result,
            None => Err(not_tried()),
        }
    }

    fn channel_key(&self, scope: Scope, id: &str) -> String {
        let scope = match scope {
            Scope::Account => "account",
            Scope::Profile => "profile",
            Scope::Connection => "connection",
        };
        format!("{}ch:{scope}:{id}", self.prefix)
    }

    fn spend_key(&self, profile_id: &str, utc_day: u64) -> String {
        format!("{}spend:{profile_id}:{utc_day}", self.prefix)
    }

    /// Destinations are E.164 (no `:`), so the key is unambiguous.
    fn calls_key(&self, profile_id: &str, destination: &str) -> String {
        format!("{}cld:{profile_id}:{destination}", self.prefix)
    }

    fn rate_key(&self, key: &CallRateKey) -> String {
        format!("{}cps:{key}", self.prefix)
    }

    async fn take(&self, limits: &ChannelLimits, call_id: &str) -> Result<ChannelLease, Scope> {
        let mut scopes = vec![(Scope::Account, &limits.account.0, limits.account.1)];
        if let Some((id, limit)) = &limits.profile {
            scopes.push((Scope::Profile, id, *limit));
        }
        scopes.push((Scope::Connection, &limits.connection.0, limits.connection.1));
        let keys: LeaseKeys = scopes.iter().map(|(s, id, _)| self.channel_key(*s, id).into()).collect();
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{}:{call_id}:{seq}", self.node_id).into();

        let mut invocation = ACQUIRE.prepare_invoke();
        for key in keys.iter() {
            invocation.key(&**key);
        }
        invocation.arg(self.lease_ttl_ms).arg(&*id);
        for (_, _, limit) in &scopes {
            invocation.arg(limit.map_or(-1, i64::from));
        }
        let mut conn = self.conn.clone();
        let answer = self.shared.attempt(invocation.invoke_async::<Vec<i64>>(&mut conn)).await;
        let answer = match answer {
            Some(Ok(answer)) if answer.len() == keys.len() + 1 => answer,
            other => {
                self.fallback_takes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(call_id, error = ?other.and_then(Result::err), "redis unreachable: channels counted on this node alone");
                return self.take_on_node(&scopes, keys, id);
            }
        };
        {
            let mut view = lock(&self.shared.channels);
            for (key, count) in keys.iter().zip(&answer[1..]) {
                let count = u32::try_from(*count).unwrap_or(u32::MAX);
                match view.get_mut(key) {
                    Some(n) => *n = count,
                    None => {
                        view.insert(key.clone(), count);
                    }
                }
            }
        }
        if answer[0] != 0 {
            let full = usize::try_from(answer[0] - 1).ok().and_then(|i| scopes.get(i));
            return Err(full.map_or(Scope::Account, |(scope, _, _)| *scope));
        }
        lock(&self.shared.book).add(id.clone(), keys.clone(), true);
        Ok(ChannelLease::redis(RedisTake { shared: self.shared.clone(), id, keys }))
    }

    /// A take while Redis is unreachable: this node's own live calls (its book, whether Redis
    /// holds them or not) under the call's limits. The lease goes into the book as one Redis
    /// does not hold, so the refresher puts it there once Redis answers.
    fn take_on_node(
        &self,
        scopes: &[(Scope, &trunking::config::Id, Option<u32>)],
        keys: LeaseKeys,
        id: Arc<str>,
    ) -> Result<ChannelLease, Scope> {
        let limits: Vec<Option<u32>> = scopes.iter().map(|(_, _, limit)| *limit).collect();
        {
            let mut book = lock(&self.shared.book);
            if let Some(i) = book.first_full(&keys, &limits) {
                return Err(scopes[i].0);
            }
            book.add(id.clone(), keys.clone(), false);
        }
        // The view's keys are what the refresh reads back, once the lease is in Redis.
        let mut view = lock(&self.shared.channels);
        for key in keys.iter() {
            if !view.contains_key(key) {
                view.insert(key.clone(), 0);
            }
        }
        drop(view);
        Ok(ChannelLease::redis(RedisTake { shared: self.shared.clone(), id, keys }))
    }

    async fn take_rate(&self, buckets: &[CallRateBucket], now: Timestamp) -> Result<(), usize> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut invocation = CALL_RATE.prepare_invoke();
        for bucket in buckets {
            invocation.key(self.rate_key(&bucket.key)).arg(bucket.rate.per_second()).arg(bucket.rate.burst());
        }
        let mut conn = self.conn.clone();
        let answer = self.shared.attempt(invocation.invoke_async::<i64>(&mut conn)).await;
        let error = match answer {
            Some(Ok(0)) => return Ok(()),
            Some(Ok(i)) => {
                match usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).filter(|&i| i < buckets.len()) {
                    Some(i) => return Err(i),
                    None => Some(format!("unexpected answer {i}")),
                }
            }
            Some(Err(error)) => Some(error.to_string()),
            None => None,
        };
        self.fallback_takes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?error, "redis unreachable: call rate counted on this node alone");
        self.fallback_rates.take(buckets, now)
    }

    async fn prefetch_usage(&self, reads: &UsageReads) {
        let calls_to = reads.calls_to.as_ref().map(|n| n.as_str());
        if let Err(error) = self.fetch_usage(&reads.profile_id, reads.spend_day, calls_to).await {
            tracing::debug!(%error, profile = &*reads.profile_id, "redis: usage not fetched; the decision reads the node's view");
        }
    }

    async fn spend_in_redis(&self, profile_id: &str, utc_day: u64, amount: Decimal) {
        let key: Box<str> = self.spend_key(profile_id, utc_day).into();
        let mut micros = amount.round_dp(SPEND_SCALE);
        micros.rescale(SPEND_SCALE);
        let micros =
            i64::try_from(micros.mantissa()).unwrap_or(if amount.is_sign_negative() { i64::MIN } else { i64::MAX });
        let mut invocation = SPEND.prepare_invoke();
        invocation.key(&*key).arg(SPEND_KEY_TTL_SECS).arg(self.shared.spend_to_restore(&key, utc_today())).arg(micros);
        let mut conn = self.conn.clone();
        let total = self.shared.attempt(invocation.invoke_async::<Vec<i64>>(&mut conn)).await;
        match total {
            Some(Ok(total)) if total.len() == 1 => self.shared.spend_seen(&key, total[0]),
            other => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(profile_id, error = ?other.and_then(Result::err), "redis: spend kept on this node until it answers");
                *lock(&self.shared.unsent_spend).entry(key.clone()).or_default() += micros;
                let mut view = lock(&self.shared.spend);
                let entry = view.entry(key).or_default();
                *entry = entry.saturating_add(micros);
            }
        }
    }

    async fn call_to_in_redis(&self, profile_id: &str, destination: &str, at: Timestamp) {
        let key = self.calls_key(profile_id, destination);
        let at = at.as_millis();
        let horizon = at.saturating_sub(CALLS_TO_RETENTION_MS);
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        // The time leads the member so the view can read it back without scores.
        let member = format!("{at}:{}:{seq}", self.node_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&key, &member, at)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({horizon}"))
            .ignore()
            .pexpire(&key, i64::try_from(CALLS_TO_RETENTION_MS).unwrap_or(i64::MAX))
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(horizon)
            .arg("+inf");
        let mut conn = self.conn.clone();
        let members = self.shared.attempt(pipe.query_async::<(Vec<String>,)>(&mut conn)).await;
        let mut view = lock(&self.shared.calls);
        let times = view.entry(key.as_str().into()).or_default();
        match members {
            Some(Ok((members,))) => *times = call_times(&members),
            other => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(profile_id, error = ?other.and_then(Result::err), "redis: call record kept on this node until it answers");
                times.insert(times.partition_point(|&t| t <= at), at);
                drop(view);
                lock(&self.shared.unsent_calls).entry(key.into()).or_default().push((at, member));
            }
        }
    }
}

/// The view's value for `key`; a key not in the view yet reads as empty and joins it, so the
/// next refresh brings what other nodes wrote there.
fn seen<T: Default>(view: &mut HashMap<Box<str>, T>, key: String) -> &mut T {
    view.entry(key.into_boxed_str()).or_default()
}

impl Usage for RedisCounters {
    /// This node's view of the scope's live channels, plus its own that Redis does not hold
    /// yet (taken while it was unreachable).
    fn channels(&self, scope: Scope, id: &str) -> u32 {
        let key = self.channel_key(scope, id);
        let not_in_redis = lock(&self.shared.book).not_in_redis(&key);
        let in_redis = *seen(&mut lock(&self.shared.channels), key);
        in_redis.saturating_add(not_in_redis)
    }

    fn spend_today(&self, profile_id: &str, utc_day: u64) -> Decimal {
        Decimal::new(*seen(&mut lock(&self.shared.spend), self.spend_key(profile_id, utc_day)), SPEND_SCALE)
    }

    fn calls_to(&self, profile_id: &str, destination: &str, since: Timestamp) -> u32 {
        let mut view = lock(&self.shared.calls);
        let times = seen(&mut view, self.calls_key(profile_id, destination));
        let count = times.len() - times.partition_point(|&t| t < since.as_millis());
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

impl Counters for RedisCounters {
    fn acquire(
        &self,
        limits: &ChannelLimits,
        call_id: &str,
    ) -> impl Future<Output = Result<ChannelLease, Scope>> + Send {
        self.take(limits, call_id)
    }

    fn add_spend(&self, profile_id: &str, utc_day: u64, amount: Decimal) -> impl Future<Output = ()> + Send {
        self.spend_in_redis(profile_id, utc_day, amount)
    }

    fn record_call_to(&self, profile_id: &str, destination: &str, at: Timestamp) -> impl Future<Output = ()> + Send {
        self.call_to_in_redis(profile_id, destination, at)
    }

    fn take_call_rate(
        &self,
        buckets: &[CallRateBucket],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), usize>> + Send {
        self.take_rate(buckets, now)
    }

    fn prefetch(&self, reads: &UsageReads) -> impl Future<Output = ()> + Send {
        self.prefetch_usage(reads)
    }
}

/// The background task: every third of the lease TTL refreshes this node's leases, putting
/// back the ones Redis lacks, then the view; removes released leases. While Redis is
/// unreachable it tries every [`RETRY_INTERVAL`] instead, and the round that goes through
/// declares Redis reachable again. Ends when the counters are dropped, after sending the
/// releases already queued.
///
/// Why putting leases back cannot revive a released one: a release takes the lease out of the
/// book before it queues the removal, and this one task both refreshes (from a copy of the
/// book) and removes, one after the other. A refresh that copied the book before the release
/// may put the lease back, but the removal is queued behind that copy and runs after the
/// refresh.
async fn run(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut releases: mpsc::UnboundedReceiver<Release>,
    mut stop: oneshot::Receiver<()>,
) {
    let period = Duration::from_millis(shared.lease_ttl_ms / 3).max(Duration::from_millis(1));
    let mut last = tokio::time::Instant::now();
    let mut batch = Vec::new();
    loop {
        let wait = if shared.health.is_reachable() { period } else { period.min(RETRY_INTERVAL) };
        tokio::select! {
            biased;
            _ = &mut stop => break,
            () = tokio::time::sleep_until(last + wait) => {
                shared.refresh(&mut conn).await;
                last = tokio::time::Instant::now();
            }
            // Only to start waiting the shorter time.
            () = shared.health.lost.notified() => {}
            n = releases.recv_many(&mut batch, REFRESH_BATCH) => {
                if n == 0 {
                    break;
                }
                remove_leases(&shared, &mut conn, &batch).await;
                batch.clear();
            }
        }
    }
    while let Ok(release) = releases.try_recv() {
        batch.push(release);
    }
    remove_leases(&shared, &mut conn, &batch).await;
}

/// Removes released leases from Redis, in one round trip.
async fn remove_leases(shared: &Shared, conn: &mut ConnectionManager, releases: &[Release]) {
    // Unreachable: not tried (each would wait out the timeout). The leases are no longer
    // refreshed, so they expire within the TTL, and a restarted Redis never had them.
    if releases.is_empty() || !shared.health.is_reachable() {
        return;
    }
    let mut pipe = redis::pipe();
    for release in releases {
        for key in release.keys.iter() {
            pipe.zrem(&**key, &*release.id).ignore();
        }
    }
    if let Err(error) = within(pipe.query_async::<()>(conn)).await {
        shared.health.failed(&error);
        tracing::debug!(leases = releases.len(), %error, "redis: lease releases failed; they will expire");
    }
}

impl Shared {
    /// Runs a call path operation on Redis unless Redis is known unreachable (the refresher
    /// finds out when it answers again). `None`: not tried.
    async fn attempt<T>(&self, op: impl Future<Output = Result<T, RedisError>>) -> Option<Result<T, RedisError>> {
        if !self.health.is_reachable() {
            return None;
        }
        let result = within(op).await;
        if let Err(error) = &result {
            self.health.failed(error);
        }
        Some(result)
    }

    /// The refresher's round: leases, then the view; what ends an outage. Leases taken on the
    /// node while the round ran are put in Redis by a second pass, so none waits a period.
    async fn refresh(&self, conn: &mut ConnectionManager) {
        let mut result = self.refresh_leases(conn).await;
        if result.is_ok() {
            result = self.refresh_view(conn).await;
        }
        if result.is_ok() && !self.health.is_reachable() {
            self.health.answered();
            if lock(&self.book).outside_redis > 0 {
                result = self.refresh_leases(conn).await;
            }
        }
        if let Err(error) = result {
            self.health.failed(&error);
            tracing::debug!(%error, "redis: counters refresh failed");
        }
    }

    async fn refresh_leases(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        let leases: Vec<(Arc<str>, LeaseKeys)> =
            lock(&self.book).leases.iter().map(|(id, l)| (id.clone(), l.keys.clone())).collect();
        for batch in leases.chunks(REFRESH_BATCH) {
            let mut invocation = REFRESH.prepare_invoke();
            invocation.arg(self.lease_ttl_ms);
            // The lease (its index in the batch) of each key, in key order.
            let mut owner = Vec::with_capacity(batch.len() * 3);
            for (n, (id, keys)) in batch.iter().enumerate() {
                for key in keys.iter() {
                    invocation.key(&**key).arg(&**id);
                    owner.push(n);
                }
            }
            let added: Vec<usize> = within(invocation.invoke_async(conn)).await?;
            let mut restored: Vec<usize> =
                added.iter().filter_map(|i| i.checked_sub(1).and_then(|i| owner.get(i).copied())).collect();
            restored.dedup();
            self.lease_refreshes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            if !restored.is_empty() {
                self.leases_restored.fetch_add(restored.len() as u64, Ordering::Relaxed);
                tracing::info!(leases = restored.len(), "redis: live leases it lacked put back");
            }
            let mut book = lock(&self.book);
            for (id, _) in batch {
                book.in_redis(id);
            }
        }
        Ok(())
    }

    /// What to put back in a spend key if Redis lost it: the total this node last saw there,
    /// less what it could not write (added on its own), for today's and yesterday's keys (an
    /// older one expired by design).
    fn spend_to_restore(&self, key: &str, today: u64) -> i64 {
        let day = key.rsplit(':').next().and_then(|d| d.parse::<u64>().ok());
        if day.is_none_or(|day| day.saturating_add(1) < today) {
            return 0;
        }
        let seen = lock(&self.spend).get(key).copied().unwrap_or(0);
        let unsent = lock(&self.unsent_spend).get(key).copied().unwrap_or(0);
        seen.saturating_sub(unsent).max(0)
    }

    /// The view of a spend key from Redis' total: plus what this node has not written yet.
    fn spend_seen(&self, key: &str, total: i64) {
        let unsent = lock(&self.unsent_spend).get(key).copied().unwrap_or(0);
        let mut view = lock(&self.spend);
        match total.saturating_add(unsent) {
            0 => view.remove(key),
            value => view.insert(key.into(), value),
        };
    }

    /// Writes a calls set's unsent records, putting back the records this node saw if Redis lost
    /// the set; returns its members from `horizon` on.
    async fn sync_calls(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        horizon: u64,
        unsent: &[CallRecord],
    ) -> Result<Vec<String>, RedisError> {
        // The records seen in Redis: the view's, less the unsent ones (written by name).
        let mut seen: Vec<u64> = lock(&self.calls).get(key).map_or_else(Vec::new, |t| t.clone());
        for (at, _) in unsent {
            if let Some(i) = seen.iter().position(|t| t == at) {
                seen.remove(i);
            }
        }
        seen.retain(|&t| t >= horizon);
        let mut invocation = CALLS.prepare_invoke();
        invocation.key(key).arg(CALLS_TO_RETENTION_MS).arg(horizon).arg(seen.len());
        for at in &seen {
            invocation.arg(*at);
        }
        for (at, member) in unsent {
            invocation.arg(*at).arg(member);
        }
        let members: Vec<String> = within(invocation.invoke_async(conn)).await?;
        let mut pending = lock(&self.unsent_calls);
        if let Some(left) = pending.get_mut(key) {
            left.retain(|record| !unsent.contains(record));
            if left.is_empty() {
                pending.remove(key);
            }
        }
        Ok(members)
    }

    async fn refresh_view(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        let channels: Vec<Box<str>> = lock(&self.channels).keys().cloned().collect();
        // Unsent writes are in the view too, so its keys cover them.
        let spend: Vec<Box<str>> = lock(&self.spend).keys().cloned().collect();
        let calls: Vec<Box<str>> = lock(&self.calls).keys().cloned().collect();
        self.refresh_keys(conn, &channels, &spend, &calls).await
    }

    /// Reads these keys into the view; a key Redis no longer has (or counts nothing in)
    /// leaves it.
    async fn refresh_keys(
        &self,
        conn: &mut ConnectionManager,
        channels: &[Box<str>],
        spend: &[Box<str>],
        calls: &[Box<str>],
    ) -> Result<(), RedisError> {
        for batch in channels.chunks(REFRESH_BATCH) {
            let mut invocation = LIVE.prepare_invoke();
            for key in batch {
                invocation.key(&**key);
            }
            let counts: Vec<u32> = within(invocation.invoke_async(conn)).await?;
            let mut view = lock(&self.channels);
            for (key, count) in batch.iter().zip(counts) {
                if count == 0 {
                    view.remove(key);
                } else {
                    view.insert(key.clone(), count);
                }
            }
        }

        let today = utc_today();
        for batch in spend.chunks(REFRESH_BATCH) {
            let adding: Vec<i64> = {
                let unsent = lock(&self.unsent_spend);
                batch.iter().map(|key| unsent.get(key).copied().unwrap_or(0)).collect()
            };
            let mut invocation = SPEND.prepare_invoke();
            invocation.arg(SPEND_KEY_TTL_SECS);
            for (key, adding) in batch.iter().zip(&adding) {
                invocation.key(&**key).arg(self.spend_to_restore(key, today)).arg(*adding);
            }
            let totals: Vec<i64> = within(invocation.invoke_async(conn)).await?;
            {
                // Written now; what failed meanwhile stays unsent.
                let mut unsent = lock(&self.unsent_spend);
                for (key, sent) in batch.iter().zip(&adding).filter(|(_, sent)| **sent != 0) {
                    if let Some(left) = unsent.get_mut(key) {
                        *left -= sent;
                        if *left == 0 {
                            unsent.remove(key);
                        }
                    }
                }
            }
            for (key, total) in batch.iter().zip(totals) {
                self.spend_seen(key, total);
            }
        }

        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let horizon = now.saturating_sub(CALLS_TO_RETENTION_MS);
        for batch in calls.chunks(REFRESH_BATCH) {
            let mut pipe = redis::pipe();
            for key in batch {
                pipe.cmd("ZRANGEBYSCORE").arg(&**key).arg(horizon).arg("+inf");
            }
            let all: Vec<Vec<String>> = within(pipe.query_async(conn)).await?;
            for (key, mut members) in batch.iter().zip(all) {
                // Records to write, or a set Redis lost that this node saw: one script each.
                let unsent = lock(&self.unsent_calls).get(key).cloned().unwrap_or_default();
                let lost = members.is_empty() && lock(&self.calls).get(key).is_some_and(|t| t.last() >= Some(&horizon));
                if lost || !unsent.is_empty() {
                    members = self.sync_calls(conn, key, horizon, &unsent).await?;
                }
                let mut view = lock(&self.calls);
                if members.is_empty() {
                    view.remove(key);
                } else {
                    view.insert(key.clone(), call_times(&members));
                }
            }
        }
        Ok(())
    }
}

/// Today's UTC day on this node's clock ([`Timestamp::utc_day`]).
fn utc_today() -> u64 {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)).utc_day()
}

/// `op`, or a timeout error if Redis has not answered within [`REDIS_TIMEOUT`].
async fn within<T>(op: impl Future<Output = Result<T, RedisError>>) -> Result<T, RedisError> {
    match tokio::time::timeout(REDIS_TIMEOUT, op).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))),
    }
}

/// The error of an operation not tried because Redis is unreachable.
fn not_tried() -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, "redis unreachable; retried later"))
}

/// Call times from call members (`{at}:{node}:{seq}`), sorted.
fn call_times(members: &[String]) -> Vec<u64> {
    let mut times: Vec<u64> = members.iter().filter_map(|m| m.split(':').next().and_then(|t| t.parse().ok())).collect();
    times.sort_unstable();
    times
}

// Each critical section is a few map operations that cannot leave a map half changed, so a
// poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
