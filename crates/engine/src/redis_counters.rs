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
//! Releases are synchronous ([`ChannelLease`] releases on `Drop`): the lease leaves this node's
//! book at once (so it is never refreshed again) and a background task removes it from Redis.
//! If that removal fails, or the counters were dropped first, the lease still goes within the
//! TTL. The same task refreshes the leases and the node-local view.
//!
//! Reads ([`Usage`]) are synchronous and answer from that node-local view: the counts this node
//! saw at its last take, release, spend or record on a key, refreshed from Redis every third of
//! the TTL (or at once with [`RedisCounters::refresh_view`]). A read of a key the node has not
//! seen yet answers zero and makes the next refresh fetch it; [`RedisCounters::prefetch`]
//! fetches a call's spend and calls-to keys at once, for a decision that must be current. A
//! read can be that stale; limits on channels still hold because the take, not the read,
//! enforces them.
//!
//! Spend is kept as integer micro-units (amounts are rounded to 6 decimal places) with `INCRBY`
//! per profile and UTC day (`{prefix}spend:{profile}:{day}`, expiring after two days), so sums
//! are exact. Calls to a number are a sorted set per profile and destination
//! (`{prefix}cld:{profile}:{destination}`) scored by call time and trimmed past
//! [`CALLS_TO_RETENTION_MS`].
//!
//! Redis unreachable. A take that cannot reach Redis (an error or no answer within
//! [`REDIS_TIMEOUT`]) fails open to node-local counting: the call takes its channels in an
//! in-process [`LocalCounters`] under the same limits, logged and counted
//! ([`RedisCounters::fallback_takes`]). During an outage each node therefore enforces every
//! limit on its own calls alone (a cluster of N nodes may admit up to N times a limit); calls
//! keep flowing rather than every call failing. Each take tries Redis first, so counting is
//! shared again as soon as Redis answers; leases taken locally stay local until their calls end.
//! A spend or call record that cannot be written is logged, counted
//! ([`RedisCounters::write_failures`]) and kept in this node's view only.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};
use trunking::outbound::{ChannelLimits, Scope, Usage};
use trunking::time::Timestamp;

use crate::counters::{CALLS_TO_RETENTION_MS, ChannelLease, Counters, LocalCounters};

/// The key prefix of a deployment's counters.
pub const DEFAULT_KEY_PREFIX: &str = "ot:";

/// How long a take waits for Redis before counting locally: a call setup can afford this once.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Spend is stored in millionths: exact integers, and finer than any rate's precision.
const SPEND_SCALE: u32 = 6;

/// A day's spend key outlives its day by one, for a call that ends after midnight.
const SPEND_KEY_TTL_SECS: i64 = 2 * 86_400;

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

/// KEYS: sets, ARGV: lease TTL (ms), then the lease id per key. Re-scores leases still there
/// (`XX`: one already gone, released or expired, is not brought back).
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
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

/// Counters in Redis, shared by every node pointed at it. Needs a Tokio runtime (a background
/// task refreshes leases and the view); share it in an `Arc`.
pub struct RedisCounters {
    conn: ConnectionManager,
    shared: Arc<Shared>,
    prefix: Box<str>,
    node_id: Box<str>,
    lease_ttl_ms: u64,
    sequence: AtomicU64,
    fallback: LocalCounters,
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
            .field("fallback_takes", &self.fallback_takes())
            .finish_non_exhaustive()
    }
}

/// The sets one lease is in: its account's, profile's (if any) and connection's.
type LeaseKeys = Arc<[Box<str>]>;

/// What the counters, their leases and the background task share.
struct Shared {
    /// This node's live leases (lease id -> its sets): what the refresher re-scores.
    leases: Mutex<HashMap<Arc<str>, LeaseKeys>>,
    /// Live channels per set, as this node last saw them.
    channels: Mutex<HashMap<Box<str>, u32>>,
    /// Spend per day key, in millionths.
    spend: Mutex<HashMap<Box<str>, i64>>,
    /// Call times (ms, sorted) per calls key.
    calls: Mutex<HashMap<Box<str>, Vec<u64>>>,
    releases: mpsc::UnboundedSender<Release>,
    lease_refreshes: AtomicU64,
    write_failures: AtomicU64,
    lease_ttl_ms: u64,
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
        lock(&self.shared.leases).remove(&self.id);
        {
            let mut view = lock(&self.shared.channels);
            for key in self.keys.iter() {
                if let Some(n) = view.get_mut(key) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        // A closed channel means the counters are gone: the lease then expires by its TTL.
        let _ = self.shared.releases.send(Release { id: self.id, keys: self.keys });
    }
}

impl RedisCounters {
    /// Connects to `url` (`redis://host:port/db`) with the keys under [`DEFAULT_KEY_PREFIX`].
    /// `node_id` names this node's leases; `lease_ttl` is how long a dead node's channels stay
    /// counted (30 s is a sensible default).
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
            leases: Mutex::default(),
            channels: Mutex::default(),
            spend: Mutex::default(),
            calls: Mutex::default(),
            releases,
            lease_refreshes: AtomicU64::new(0),
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
            fallback: LocalCounters::new(),
            fallback_takes: AtomicU64::new(0),
            _stop: stop,
        })
    }

    /// Takes counted locally because Redis could not be reached (metrics).
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

    /// Reads every key of the node-local view from Redis now, rather than at the next
    /// background refresh; keys no longer in Redis leave the view.
    pub async fn refresh_view(&self) -> Result<(), RedisError> {
        self.shared.refresh_view(&mut self.conn.clone()).await
    }

    /// Reads a profile's spend on `utc_day` and its calls to `destination` from Redis into the
    /// view now: what the engine calls before a decision that must see other nodes' latest
    /// spend and calls (the view alone may be a refresh period behind, or not know the keys).
    pub async fn prefetch(&self, profile_id: &str, destination: &str, utc_day: u64) -> Result<(), RedisError> {
        let spend = [self.spend_key(profile_id, utc_day).into_boxed_str()];
        let calls = [self.calls_key(profile_id, destination).into_boxed_str()];
        self.shared.refresh_keys(&mut self.conn.clone(), &[], &spend, &calls).await
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
        let answer: Result<Vec<i64>, RedisError> =
            match tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut conn)).await {
                Ok(answer) => answer,
                Err(_) => Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))),
            };
        let answer = match answer {
            Ok(answer) if answer.len() == keys.len() + 1 => answer,
            other => {
                self.fallback_takes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(call_id, error = ?other.err(), "redis unreachable: channels counted on this node only");
                return LocalCounters::acquire(&self.fallback, limits, call_id);
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
        lock(&self.shared.leases).insert(id.clone(), keys.clone());
        Ok(ChannelLease::redis(RedisTake { shared: self.shared.clone(), id, keys }))
    }

    async fn spend_in_redis(&self, profile_id: &str, utc_day: u64, amount: Decimal) {
        let key = self.spend_key(profile_id, utc_day);
        let mut micros = amount.round_dp(SPEND_SCALE);
        micros.rescale(SPEND_SCALE);
        let micros =
            i64::try_from(micros.mantissa()).unwrap_or(if amount.is_sign_negative() { i64::MIN } else { i64::MAX });
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&key, micros).expire(&key, SPEND_KEY_TTL_SECS).ignore();
        let total: Result<(i64,), RedisError> = pipe.query_async(&mut self.conn.clone()).await;
        let mut view = lock(&self.shared.spend);
        let entry = view.entry(key.into()).or_default();
        match total {
            Ok((total,)) => *entry = total,
            Err(error) => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(profile_id, %error, "redis unreachable: spend kept on this node only");
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
        let members: Result<(Vec<String>,), RedisError> = pipe.query_async(&mut self.conn.clone()).await;
        let mut view = lock(&self.shared.calls);
        let times = view.entry(key.into()).or_default();
        match members {
            Ok((members,)) => *times = call_times(&members),
            Err(error) => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(profile_id, %error, "redis unreachable: call record kept on this node only");
                times.insert(times.partition_point(|&t| t <= at), at);
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
    /// This node's view of the scope's live channels, plus any it counts locally (Redis down).
    fn channels(&self, scope: Scope, id: &str) -> u32 {
        let shared = *seen(&mut lock(&self.shared.channels), self.channel_key(scope, id));
        shared.saturating_add(self.fallback.live(scope, id))
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
}

/// The background task: removes released leases, and every third of the lease TTL re-scores
/// the live ones and refreshes the view. Ends when the counters are dropped, after sending
/// the releases already queued.
async fn run(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    mut releases: mpsc::UnboundedReceiver<Release>,
    mut stop: oneshot::Receiver<()>,
) {
    let period = Duration::from_millis(shared.lease_ttl_ms / 3).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(release) = releases.recv() => remove_lease(&mut conn, &release).await,
            _ = tick.tick() => {
                if let Err(error) = shared.refresh_leases(&mut conn).await {
                    tracing::warn!(%error, "redis: lease refresh failed");
                }
                if let Err(error) = shared.refresh_view(&mut conn).await {
                    tracing::warn!(%error, "redis: counters view refresh failed");
                }
            }
        }
    }
    while let Ok(release) = releases.try_recv() {
        remove_lease(&mut conn, &release).await;
    }
}

async fn remove_lease(conn: &mut ConnectionManager, release: &Release) {
    let mut pipe = redis::pipe();
    for key in release.keys.iter() {
        pipe.zrem(&**key, &*release.id).ignore();
    }
    if let Err(error) = pipe.query_async::<()>(conn).await {
        // Not refreshed any more, so it expires within the TTL anyway.
        tracing::warn!(lease = &*release.id, %error, "redis: lease release failed; it will expire");
    }
}

impl Shared {
    async fn refresh_leases(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        let leases: Vec<(Arc<str>, LeaseKeys)> =
            lock(&self.leases).iter().map(|(id, keys)| (id.clone(), keys.clone())).collect();
        // Batches keep each script call short: Redis runs one script at a time.
        for batch in leases.chunks(256) {
            let mut invocation = REFRESH.prepare_invoke();
            invocation.arg(self.lease_ttl_ms);
            for (id, keys) in batch {
                for key in keys.iter() {
                    invocation.key(&**key).arg(&**id);
                }
            }
            invocation.invoke_async::<i64>(conn).await?;
            self.lease_refreshes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn refresh_view(&self, conn: &mut ConnectionManager) -> Result<(), RedisError> {
        let channels: Vec<Box<str>> = lock(&self.channels).keys().cloned().collect();
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
        for batch in channels.chunks(256) {
            let mut invocation = LIVE.prepare_invoke();
            for key in batch {
                invocation.key(&**key);
            }
            let counts: Vec<u32> = invocation.invoke_async(conn).await?;
            let mut view = lock(&self.channels);
            for (key, count) in batch.iter().zip(counts) {
                if count == 0 {
                    view.remove(key);
                } else {
                    view.insert(key.clone(), count);
                }
            }
        }

        for batch in spend.chunks(256) {
            let mut mget = redis::cmd("MGET");
            for key in batch {
                mget.arg(&**key);
            }
            let totals: Vec<Option<i64>> = mget.query_async(conn).await?;
            let mut view = lock(&self.spend);
            for (key, total) in batch.iter().zip(totals) {
                match total {
                    Some(total) => view.insert(key.clone(), total),
                    None => view.remove(key),
                };
            }
        }

        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let horizon = now.saturating_sub(CALLS_TO_RETENTION_MS);
        for batch in calls.chunks(256) {
            let mut pipe = redis::pipe();
            for key in batch {
                pipe.cmd("ZRANGEBYSCORE").arg(&**key).arg(horizon).arg("+inf");
            }
            let all: Vec<Vec<String>> = pipe.query_async(conn).await?;
            let mut view = lock(&self.calls);
            for (key, members) in batch.iter().zip(all) {
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
