//! A Redis restart under live calls, for real: the test runs its own `redis-server` on a free
//! loopback port with no persistence (`--save "" --appendonly no`), so a restart loses every
//! key, as it would in production without persistence. Two nodes hold leases, the server is
//! killed, takes fall back to the nodes, the server comes back on the same port, and the counts
//! in Redis converge on the calls actually up: live leases put back (those taken during the
//! outage too), released ones gone, takes shared again with no help (the connection reconnects,
//! the scripts are loaded again); the day's spend and the call records are put back as the
//! nodes last saw them, plus what they could not write meanwhile. Without `redis-server` the test prints one line and passes,
//! unless `CI=true` or `OPENTRUNK_REQUIRE_SERVICES=1`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::counters::{ChannelLease, Counters, NodeCounters};
use engine::redis_counters::RedisCounters;
use rust_decimal::Decimal;
use trunking::call_rate::{CallRate, CallRateBucket, CallRateKey};
use trunking::config::Id;
use trunking::outbound::{ChannelLimits, Scope, Usage};
use trunking::time::Timestamp;

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("OPENTRUNK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A `redis-server` of the test's own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits (at most five seconds) until it answers PING.
    async fn ready(&self) {
        for _ in 0..100 {
            if let Ok(mut conn) = self.client().get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// The call ids of the leases in a set, as `node:call`.
    async fn leases(&self, key: &str) -> BTreeSet<String> {
        let mut conn = self.client().get_multiplexed_async_connection().await.unwrap();
        let members: Vec<String> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
        // Lease ids are `{node}:{call}:{sequence}`.
        members.iter().map(|m| m.rsplit_once(':').map_or(m.as_str(), |(lease, _)| lease).to_owned()).collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_server_installed() -> bool {
    Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn limits(account: u32) -> ChannelLimits {
    ChannelLimits { account: (Id::from("acc-1"), Some(account)), profile: None, connection: (Id::from("conn-1"), None) }
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
}

/// Waits (at most ten seconds) for `check`, polling.
async fn soon(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn after_a_redis_restart_the_counts_converge_on_the_live_calls() {
    if !redis_server_installed() {
        assert!(!required(), "redis-server is required (scripts/install-test-deps installs it)");
        println!("skipped: redis-server not installed");
        return;
    }
    let port = free_port();
    let mut server = Server::start(port);
    server.ready().await;
    let ttl = Duration::from_secs(30);
    let a = RedisCounters::connect_with_prefix(&server.url(), "node-a", ttl, "t:").await.unwrap();
    let b = RedisCounters::connect_with_prefix(&server.url(), "node-b", ttl, "t:").await.unwrap();
    let account_set = "t:ch:account:acc-1";
    let rate = [CallRateBucket { key: CallRateKey::Account("acc-1".into()), rate: CallRate::new(100, 100).unwrap() }];

    let mut calls: Vec<(&str, ChannelLease)> = Vec::new();
    for call in ["a-1", "a-2", "a-3"] {
        calls.push((call, a.acquire(&limits(10), call).await.unwrap()));
    }
    for call in ["b-1", "b-2"] {
        calls.push((call, b.acquire(&limits(10), call).await.unwrap()));
    }
    assert_eq!(a.take_call_rate(&rate, now()).await, Ok(()));
    assert_eq!(
        server.leases(account_set).await,
        set(&["node-a:a-1", "node-a:a-2", "node-a:a-3", "node-b:b-1", "node-b:b-2"])
    );

    // Spend and a call record, seen by node a.
    let day = now().utc_day();
    let t0 = now();
    b.add_spend("ovp-1", day, Decimal::new(25, 1)).await;
    a.record_call_to("ovp-1", "+13125550199", t0).await;
    a.fetch_usage("ovp-1", Some(day), None).await.unwrap();
    a.refresh_view().await.unwrap();
    assert_eq!(a.channels(Scope::Account, "acc-1"), 5);
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(25, 1));

    // Redis dies with every key. One call ends, two start: counted on their nodes.
    server.kill();
    calls.retain(|(call, _)| *call != "a-3");
    calls.push(("a-4", a.acquire(&limits(10), "a-4").await.expect("fails open")));
    calls.push(("b-3", b.acquire(&limits(10), "b-3").await.expect("fails open")));
    assert_eq!(a.take_call_rate(&rate, now()).await, Ok(()), "node-local buckets");
    assert_eq!((a.fallback_takes(), b.fallback_takes()), (2, 1));
    assert!(!a.is_reachable() && !b.is_reachable());
    assert_eq!(a.channels(Scope::Account, "acc-1"), 5, "a's view: the 5 it last saw in Redis, less a-3, plus a-4");
    // Spend and call records are kept on their nodes meanwhile.
    a.add_spend("ovp-1", day, Decimal::ONE).await;
    b.add_spend("ovp-1", day, Decimal::new(25, 2)).await;
    a.record_call_to("ovp-1", "+13125550199", t0.plus_millis(1)).await;
    assert_eq!((a.write_failures(), b.write_failures()), (2, 1));
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(35, 1));
    assert_eq!(a.calls_to("ovp-1", "+13125550199", t0), 2);

    // Back on the same port, empty. The nodes find it by themselves and put their live
    // leases back before they count there again.
    let server = Server::start(port);
    server.ready().await;
    soon("both nodes reach Redis again", async || a.is_reachable() && b.is_reachable()).await;
    assert_eq!(
        server.leases(account_set).await,
        set(&["node-a:a-1", "node-a:a-2", "node-a:a-4", "node-b:b-1", "node-b:b-2", "node-b:b-3"]),
        "every live call, a-3 (released while Redis was down) not among them"
    );
    assert_eq!((a.leases_restored(), b.leases_restored()), (3, 3));
    // The day's spend as the nodes last saw it is put back once, then what each could not
    // write is added; likewise the call records.
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let spend_key = format!("t:spend:ovp-1:{day}");
    let spend: i64 = redis::cmd("GET").arg(&spend_key).query_async(&mut conn).await.unwrap();
    assert_eq!(spend, 3_750_000, "2.5 seen by both, 1 from a and 0.25 from b written after");
    let records: i64 = redis::cmd("ZCARD").arg("t:cld:ovp-1:+13125550199").query_async(&mut conn).await.unwrap();
    assert_eq!(records, 2);
    a.refresh_view().await.unwrap();
    assert_eq!(a.spend_today("ovp-1", day), Decimal::new(375, 2));
    assert_eq!(a.calls_to("ovp-1", "+13125550199", t0), 2);
    b.refresh_view().await.unwrap();
    assert_eq!(b.spend_today("ovp-1", day), Decimal::new(375, 2));

    // Takes are shared again (ACQUIRE and the call rate script were loaded again on NOSCRIPT).
    let fallbacks = (a.fallback_takes(), b.fallback_takes());
    let seventh = b.acquire(&limits(7), "b-4").await.expect("6 live, limit 7");
    assert_eq!(a.acquire(&limits(7), "a-5").await.unwrap_err(), Scope::Account, "b's take counted in Redis");
    assert_eq!(a.take_call_rate(&rate, now()).await, Ok(()));
    assert_eq!((a.fallback_takes(), b.fallback_takes()), fallbacks, "nothing counted on the nodes alone");
    let exists: bool = redis::cmd("EXISTS").arg("t:cps:account:acc-1").query_async(&mut conn).await.unwrap();
    assert!(exists, "the call rate bucket is in the new Redis");

    // Every call ends: the sets empty, and the node type reports what happened.
    drop(seventh);
    calls.clear();
    soon("every lease released in Redis", async || server.leases(account_set).await.is_empty()).await;
    let node = NodeCounters::from(a);
    assert_eq!(node.redis_reachable(), Some(true));
    assert_eq!((node.leases_restored(), node.fallback_takes()), (3, 2));
    assert!(node.lease_refreshes() >= 3, "the restoring round refreshed a-1, a-2 and a-4");
}
