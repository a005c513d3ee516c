//! `RedisCounters` against the machine's Redis (127.0.0.1:6379), two instances standing for two
//! nodes of a cluster. Each test keeps its keys under a prefix of its own and deletes them at
//! the end. Without Redis each test prints one line and passes, unless `CI=true` or
//! `OPENTRUNK_REQUIRE_SERVICES=1` makes Redis required.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::counters::{CALLS_TO_RETENTION_MS, ChannelLease, Counters};
use engine::redis_counters::RedisCounters;
use rust_decimal::Decimal;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use trunking::call_rate::{CallRate, CallRateBucket, CallRateKey};
use trunking::config::Id;
use trunking::outbound::{ChannelLimits, Scope, Usage, UsageReads};
use trunking::time::Timestamp;

const REDIS_ADDR: &str = "127.0.0.1:6379";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("OPENTRUNK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A key prefix no other test of any run uses.
fn unique_prefix() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("ot-test:{}:{seq}:{nanos}:", std::process::id())
}

/// A node on `url` under `prefix`, or `None` (after one printed line) when Redis is absent.
async fn node(url: &str, name: &str, prefix: &str, ttl: Duration) -> Option<RedisCounters> {
    match RedisCounters::connect_with_prefix(url, name, ttl, prefix).await {
        Ok(node) => Some(node),
        Err(e) if required() => panic!("Redis is required at {url}: {e}"),
        Err(e) => {
            println!("skipped: Redis not reachable at {url} ({e})");
            None
        }
    }
}

/// Two nodes sharing the machine's Redis under a fresh prefix.
async fn two_nodes(ttl: Duration) -> Option<(RedisCounters, RedisCounters, String)> {
    let prefix = unique_prefix();
    let a = node(REDIS_URL, "node-a", &prefix, ttl).await?;
    let b = node(REDIS_URL, "node-b", &prefix, ttl).await?;
    Some((a, b, prefix))
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
}

fn limits(account: Option<u32>, profile: Option<u32>, connection: (&str, Option<u32>)) -> ChannelLimits {
    ChannelLimits {
        account: (Id::from("acc-1"), account),
        profile: Some((Id::from("ovp-1"), profile)),
        connection: (Id::from(connection.0), connection.1),
    }
}

/// Takes on `node` until it succeeds (a release reaches Redis through a background task), for
/// at most two seconds.
async fn take_soon(node: &RedisCounters, limits: &ChannelLimits, call_id: &str) -> ChannelLease {
    for _ in 0..100 {
        if let Ok(lease) = node.acquire(limits, call_id).await {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{call_id}: channels were not freed");
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
}

#[tokio::test]
async fn an_account_limit_holds_across_two_nodes() {
    let Some((a, b, prefix)) = two_nodes(Duration::from_secs(30)).await else { return };
    let l = limits(Some(3), None, ("conn-1", None));

    let first = a.acquire(&l, "call-1").await.expect("1st on a");
    let second = b.acquire(&l, "call-2").await.expect("2nd on b");
    let mut third = a.acquire(&l, "call-3").await.expect("3rd on a");
    assert_eq!(a.acquire(&l, "call-4").await.unwrap_err(), Scope::Account);
    assert_eq!(b.acquire(&l, "call-4").await.unwrap_err(), Scope::Account);

    // Each node's view: what it saw at its last take, then what Redis holds.
    assert_eq!(a.channels(Scope::Account, "acc-1"), 3);
    b.refresh_view().await.unwrap();
    assert_eq!(b.channels(Scope::Account, "acc-1"), 3);
    assert_eq!(b.channels(Scope::Profile, "ovp-1"), 3);
    assert_eq!(b.channels(Scope::Connection, "conn-1"), 3);

    // A release on node a frees a channel for node b.
    assert!(third.release());
    assert!(!third.release());
    assert_eq!(a.channels(Scope::Account, "acc-1"), 2);
    let fourth = take_soon(&b, &l, "call-4").await;
    assert_eq!(a.acquire(&l, "call-5").await.unwrap_err(), Scope::Account);

    drop((first, second, fourth));
    let again = take_soon(&a, &l, "call-6").await;
    drop(again);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_refused_take_names_the_first_full_scope_and_takes_nothing() {
    let Some((a, b, prefix)) = two_nodes(Duration::from_secs(30)).await else { return };
    let on_1 = limits(Some(10), Some(2), ("conn-1", Some(1)));
    let on_2 = limits(Some(10), Some(2), ("conn-2", None));

    let x = a.acquire(&on_1, "x").await.unwrap();
    assert_eq!(b.acquire(&on_1, "y").await.unwrap_err(), Scope::Connection);
    let z = b.acquire(&on_2, "z").await.unwrap();
    // Profile full (2) before the connection: the profile is named.
    assert_eq!(a.acquire(&on_1, "w").await.unwrap_err(), Scope::Profile);
    assert_eq!(a.acquire(&on_2, "w").await.unwrap_err(), Scope::Profile);

    // The refused takes counted nothing anywhere.
    a.refresh_view().await.unwrap();
    assert_eq!(a.channels(Scope::Account, "acc-1"), 2);
    assert_eq!(a.channels(Scope::Profile, "ovp-1"), 2);
    assert_eq!(a.channels(Scope::Connection, "conn-1"), 1);
    assert_eq!(a.channels(Scope::Connection, "conn-2"), 1);
    drop((x, z));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_dead_nodes_channels_are_free_again_after_the_lease_ttl() {
    let ttl = Duration::from_secs(1);
    let Some((a, b, prefix)) = two_nodes(ttl).await else { return };
    let l = limits(Some(1), None, ("conn-1", None));

    // Node a dies with a live call: its lease is never released and no longer refreshed.
    std::mem::forget(a.acquire(&l, "lost").await.unwrap());
    drop(a);
    assert_eq!(b.acquire(&l, "new").await.unwrap_err(), Scope::Account);

    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let lease = b.acquire(&l, "new").await.expect("the dead node's channel expired");
    drop(lease);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_live_nodes_leases_outlive_the_ttl() {
    let ttl = Duration::from_secs(1);
    let Some((a, b, prefix)) = two_nodes(ttl).await else { return };
    let l = limits(Some(1), None, ("conn-1", None));

    let lease = a.acquire(&l, "long call").await.unwrap();
    tokio::time::sleep(ttl * 5 / 2).await;
    assert_eq!(b.acquire(&l, "other").await.unwrap_err(), Scope::Account);
    assert!(a.lease_refreshes() >= 3, "refreshed {} times", a.lease_refreshes());

    drop(lease);
    drop(take_soon(&b, &l, "other").await);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn spend_and_calls_to_add_up_across_nodes() {
    let Some((a, b, prefix)) = two_nodes(Duration::from_secs(30)).await else { return };
    let t0 = now();
    let day = t0.utc_day();

    a.add_spend("ovp-1", day, Decimal::new(125, 2)).await;
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(125, 2));
    b.add_spend("ovp-1", day, Decimal::new(1, 6)).await;
    assert_eq!(b.spend_today("ovp-1", day), Decimal::new(1_250_001, 6));
    a.add_spend("ovp-1", day, Decimal::new(25, 1)).await;
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(3_750_001, 6));
    // Below a millionth rounds to the nearest millionth.
    b.add_spend("ovp-1", day, Decimal::new(4, 8)).await;
    assert_eq!(b.spend_today("ovp-1", day), Decimal::new(3_750_001, 6));
    b.add_spend("ovp-1", day - 1, Decimal::ONE).await;
    b.refresh_view().await.unwrap();
    assert_eq!(b.spend_today("ovp-1", day), Decimal::new(3_750_001, 6));
    assert_eq!(b.spend_today("ovp-1", day - 1), Decimal::ONE);
    assert_eq!(b.spend_today("ovp-1", day + 1), Decimal::ZERO);
    assert_eq!(b.spend_today("ovp-2", day), Decimal::ZERO);

    a.record_call_to("ovp-1", "+15551230001", t0).await;
    a.record_call_to("ovp-1", "+15551230001", t0.plus_millis(1_000)).await;
    b.record_call_to("ovp-1", "+15551230001", t0.plus_millis(2_000)).await;
    b.record_call_to("ovp-1", "+15551230002", t0).await;
    assert_eq!(b.calls_to("ovp-1", "+15551230001", t0), 3);
    assert_eq!(b.calls_to("ovp-1", "+15551230001", t0.plus_millis(1_500)), 1);
    assert_eq!(a.calls_to("ovp-1", "+15551230001", t0), 2, "a's view before a refresh");
    assert_eq!(a.calls_to("ovp-1", "+15551230002", t0), 0, "a key a has not seen yet");
    a.refresh_view().await.unwrap();
    assert_eq!(a.calls_to("ovp-1", "+15551230001", t0), 3);
    assert_eq!(a.calls_to("ovp-1", "+15551230002", t0), 1);
    assert_eq!(a.calls_to("ovp-2", "+15551230001", t0), 0);
    // A fetch makes a node current for one call's keys at once.
    b.record_call_to("ovp-1", "+15551230004", t0).await;
    b.add_spend("ovp-3", day, Decimal::TWO).await;
    a.fetch_usage("ovp-3", Some(day), Some("+15551230004")).await.unwrap();
    assert_eq!(a.spend_today("ovp-3", day), Decimal::TWO);
    assert_eq!(a.calls_to("ovp-1", "+15551230004", t0), 0, "another profile's key");
    a.fetch_usage("ovp-1", None, Some("+15551230004")).await.unwrap();
    assert_eq!(a.calls_to("ovp-1", "+15551230004", t0), 1);
    // The trait's prefetch, as the admission calls it with the decision's reads.
    b.record_call_to("ovp-1", "+13125550199", t0).await;
    b.add_spend("ovp-1", day, Decimal::TWO).await;
    let plan = trunking::numbering::NumberingPlan::new();
    let destination = plan.dial("+13125550199", None).destination().and_then(|d| d.e164);
    assert!(destination.is_some());
    let reads = UsageReads { profile_id: "ovp-1".into(), spend_day: Some(day), calls_to: destination };
    assert_eq!(a.calls_to("ovp-1", "+13125550199", t0), 0);
    Counters::prefetch(&a, &reads).await;
    assert_eq!(a.calls_to("ovp-1", "+13125550199", t0), 1);
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(5_750_001, 6));

    // Records past retention are trimmed.
    let old = Timestamp(t0.as_millis() - CALLS_TO_RETENTION_MS - 10);
    a.record_call_to("ovp-1", "+15551230003", old).await;
    b.record_call_to("ovp-1", "+15551230003", t0).await;
    assert_eq!(b.calls_to("ovp-1", "+15551230003", Timestamp(0)), 1);
    cleanup(&prefix).await;
}

/// A TCP relay to Redis that can be cut and restored, to take Redis away from one node.
struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(addr: &str) -> Relay {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropped with the task: aborting the task cuts every relayed connection.
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut redis) = TcpStream::connect(REDIS_ADDR).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut redis).await;
                    }
                });
            }
        });
        Relay { addr, task }
    }

    async fn cut(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

/// Waits (at most five seconds) until the node counts in Redis again.
async fn reachable_soon(node: &RedisCounters) {
    for _ in 0..100 {
        if node.is_reachable() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not find Redis again");
}

#[tokio::test]
async fn without_redis_channels_are_counted_on_the_node_and_sharing_resumes() {
    let prefix = unique_prefix();
    let ttl = Duration::from_secs(30);
    let Some(b) = node(REDIS_URL, "node-b", &prefix, ttl).await else { return };
    let relay = Relay::start("127.0.0.1:0").await;
    let a = node(&format!("redis://{}", relay.addr), "node-a", &prefix, ttl).await.expect("through the relay");
    let l = limits(Some(3), None, ("conn-1", None));

    let shared = a.acquire(&l, "shared").await.unwrap();
    assert_eq!(a.fallback_takes(), 0);
    assert!(a.is_reachable());

    // Redis gone for node a: it counts its own calls alone, the shared one included, under
    // the same limit, and says so.
    let addr = relay.cut().await;
    let local_1 = a.acquire(&l, "local-1").await.expect("fails open");
    assert!(!a.is_reachable());
    let started = std::time::Instant::now();
    let local_2 = a.acquire(&l, "local-2").await.expect("fails open");
    assert!(started.elapsed() < Duration::from_millis(100), "no wait once Redis is known unreachable");
    assert_eq!(a.acquire(&l, "local-3").await.unwrap_err(), Scope::Account, "its own 3 calls");
    assert_eq!(a.fallback_takes(), 3);
    // Its view adds the calls Redis does not hold to the shared ones it last saw.
    assert_eq!(a.channels(Scope::Account, "acc-1"), 3);
    // Node b still shares: only the shared lease counts there.
    let b_1 = b.acquire(&l, "b-1").await.unwrap();
    let b_2 = b.acquire(&l, "b-2").await.unwrap();
    assert_eq!(b.acquire(&l, "b-3").await.unwrap_err(), Scope::Account);
    drop((b_1, b_2));

    // Redis back: node a finds it by itself and puts its two local calls there first.
    let relay = Relay::start(&addr.to_string()).await;
    reachable_soon(&a).await;
    assert_eq!(a.leases_restored(), 2, "local-1 and local-2 are in Redis now");
    assert_eq!(b.acquire(&l, "b-4").await.unwrap_err(), Scope::Account, "b counts a's local calls");
    drop(local_2);
    let b_5 = take_soon(&b, &l, "b-5").await;
    assert_eq!(b.acquire(&l, "b-6").await.unwrap_err(), Scope::Account, "shared, local-1, b-5");
    let fallbacks = a.fallback_takes();
    assert_eq!(a.acquire(&l, "a-2").await.unwrap_err(), Scope::Account, "a counts in Redis again");
    assert_eq!(a.fallback_takes(), fallbacks);
    assert_eq!(a.channels(Scope::Account, "acc-1"), 3);

    drop((shared, local_1, b_5));
    drop(take_soon(&a, &l, "a-3").await);
    let _ = relay.cut().await;
    cleanup(&prefix).await;
}

/// A token bucket for the tests: `per_second` calls a second, `burst` at once.
fn bucket(key: CallRateKey, per_second: u32, burst: u32) -> CallRateBucket {
    CallRateBucket { key, rate: CallRate::new(per_second, burst).unwrap() }
}

#[tokio::test]
async fn call_rate_buckets_are_shared_by_the_nodes_all_or_none() {
    let Some((a, b, prefix)) = two_nodes(Duration::from_secs(30)).await else { return };
    // 1 call a second, 3 at once: the test's few milliseconds refill a few thousandths.
    let source = bucket(CallRateKey::source("192.0.2.7".parse().unwrap()), 1, 3);
    let account = bucket(CallRateKey::Account("acc-1".into()), 1, 1);
    let t = now();
    let one = |b: &CallRateBucket| vec![b.clone()];

    assert_eq!(a.take_call_rate(&one(&source), t).await, Ok(()));
    assert_eq!(b.take_call_rate(&[source.clone(), account.clone()], t).await, Ok(()));
    // The account's only token is gone: refused, named, and the source's not taken.
    assert_eq!(a.take_call_rate(&[source.clone(), account.clone()], t).await, Err(1));
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let source_key = format!("{prefix}cps:source:192.0.2.7");
    let level: i64 = redis::cmd("HGET").arg(&source_key).arg("level").query_async(&mut conn).await.unwrap();
    assert!(
        (1_000_000..1_100_000).contains(&level),
        "one token left after two calls, none taken by the refusal: {level}"
    );
    // A bucket expires when it would be full: two tokens short is two seconds at 1 a second.
    let pttl: i64 = redis::cmd("PTTL").arg(&source_key).query_async(&mut conn).await.unwrap();
    assert!((1_800..=2_001).contains(&pttl), "expires in {pttl} ms");

    assert_eq!(b.take_call_rate(&one(&source), t).await, Ok(()));
    assert_eq!(a.take_call_rate(&one(&source), t).await, Err(0), "3 at once across two nodes");
    assert_eq!(b.take_call_rate(&one(&source), t).await, Err(0));
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(a.take_call_rate(&one(&source), t).await, Ok(()), "refilled at 1 a second");
    assert_eq!(b.take_call_rate(&one(&source), t).await, Err(0));
    assert_eq!(a.take_call_rate(&[], t).await, Ok(()), "no bucket: nothing to take");
    assert_eq!((a.fallback_takes(), b.fallback_takes()), (0, 0));
    cleanup(&prefix).await;
}
