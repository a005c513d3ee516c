//! Many nodes, one platform: two `opentrunk serve` nodes on their own loopback addresses share
//! one PostgreSQL (a schema of the test's) and one Redis (keys under a prefix of the test's).
//! Limits hold across both, a digest challenge of one node is answered at the other, the
//! configuration written through one reaches the other within a second, a node killed with
//! SIGKILL leaks no channel and loses no call record, and a Redis restart under load stops no
//! call.
//!
//! Needs PostgreSQL, Redis and SIPp; each missing one skips with one line, except in CI
//! (`OPENTRUNK_REQUIRE_SERVICES=1`, `OPENTRUNK_REQUIRE_SIPP=1`).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sip::headers::HeaderName;
use sip::{Framing, Message};

mod peers;
mod support;

use peers::*;
use support::Server;
use support::pg::{PgSchema, services_required};

const NODE_A_IP: &str = "127.0.0.11";
const NODE_B_IP: &str = "127.0.0.12";
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// Short, so a lost node's channels come back within the test.
const LEASE_TTL_SECS: u64 = 3;

/// Two nodes sharing the test's schema and Redis keys.
struct Cluster {
    a: Server,
    b: Server,
    dir: std::path::PathBuf,
    // Dropped last: the nodes go first.
    _schema: PgSchema,
}

fn redis_reachable(test: &str, addr: &str) -> bool {
    let ok = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if !ok {
        assert!(!services_required(), "{test}: Redis is required at {addr}");
        println!("skipped: {test}: Redis not reachable at {addr}");
    }
    ok
}

/// Starts node A then node B (B finds the schema migrated), or `None` when a service is missing.
fn cluster(test: &str, redis_url: &str) -> Option<Cluster> {
    if !sipp_available() {
        return None;
    }
    if redis_url == SHARED_REDIS && !redis_reachable(test, "127.0.0.1:6379") {
        return None;
    }
    let schema = PgSchema::create(test)?;
    let url = schema.url();
    let prefix = format!("ot-test-{}:", schema.name);
    let toml = format!(
        "[calls]\ntimeout_1xx_secs = 2\ntimeout_2xx_secs = 3\nmax_duration_secs = 60\n\
         [cluster]\nlease_ttl_secs = {LEASE_TTL_SECS}\nredis_key_prefix = \"{prefix}\"\n"
    );
    let log = std::env::var("OPENTRUNK_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let env = [
        ("OPENTRUNK_ADMIN_API_KEY", OPERATOR_KEY),
        ("OPENTRUNK_LOG", log.as_str()),
        ("OPENTRUNK_DATABASE_URL", url.as_str()),
        ("OPENTRUNK_REDIS_URL", redis_url),
    ];
    let a = Server::start_at(NODE_A_IP, &toml, &env);
    let b = Server::start_at(NODE_B_IP, &toml, &env);
    Some(Cluster { a, b, dir: work_dir(test), _schema: schema })
}

/// The account's PBX calling through `node`: `calls` calls held `hold_ms` each.
fn pbx(dir: &Path, name: &str, node: &Server, calls: u32, hold_ms: u32) -> Sipp {
    Sipp::pbx(dir, name, "pbx_call.xml", node, PBX_IP, DESTINATION).args([
        "-m".to_owned(),
        calls.to_string(),
        "-l".to_owned(),
        calls.to_string(),
        "-r".to_owned(),
        "50".to_owned(),
        "-d".to_owned(),
        hold_ms.to_string(),
    ])
}

/// One call through `node` that the switch refuses: its final status line.
fn refused_at(dir: &Path, name: &str, node: &Server) -> String {
    let run = Sipp::pbx(dir, name, "pbx_refused.xml", node, PBX_IP, DESTINATION).run();
    run.assert_succeeded("the refused call's scenario", 1);
    run.last_final().unwrap_or_else(|| panic!("no final response in {}", run.log.display())).to_owned()
}

/// Waits until `node` decides calls with a configuration of `resources` resources; returns
/// how long that took.
fn applied_on(node: &Server, resources: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(limit, &format!("{resources} resources applied on {}", node.sip), || {
        let loaded = metric(node, "opentrunk_config_resources") == Some(resources);
        let (config, policy) = generations(node);
        (loaded && policy.is_some_and(|p| p >= config)).then_some(())
    });
    start.elapsed()
}

/// The platform of these tests, made through node A: an account with `limit` channels, its
/// profile, a carrier whose gateway answers every call, and (last, timed) the PBX's IP
/// connection. Returns the account, the connection's id and how long node B took to apply it.
fn platform(c: &Cluster, limit: u32) -> (Account, String, Running, Duration) {
    let before = generations(&c.a);
    let account = account(&c.a, "cluster", Some(limit));
    let profile = profile(&c.a, &account, None);
    let (gateway, at) = Running::gateway(&c.dir, "carrier", "carrier_answer.xml", GATEWAY_1_IP, None);
    carrier(&c.a, "upstream", &[at], None, None);
    let conn = create(
        &c.a,
        "/v2/ip_connections",
        &account.key,
        json!({"connection_name": "pbx", "outbound": {"outbound_voice_profile_id": profile}}),
    );
    wait_config_applied(&c.a, before);
    let resources_before = metric(&c.a, "opentrunk_config_resources").unwrap_or(0.0);
    create(&c.a, "/v2/ips", &account.key, json!({"connection_id": id(&conn), "ip_address": PBX_IP}));
    // What A stored, B must apply: one more resource than before the IP.
    let on_b = applied_on(&c.b, resources_before + 1.0, Duration::from_secs(10));
    applied_on(&c.a, resources_before + 1.0, Duration::from_secs(10));
    (account, id(&conn), gateway, on_b)
}

/// With an account limit of 3: two calls up through node A and one through node B (held
/// `hold_ms`), then a fourth through either node is refused D1.
fn three_calls_fit_across_the_nodes_and_a_fourth_does_not(c: &Cluster, hold_ms: u32) {
    let held_a = pbx(&c.dir, "held-a", &c.a, 2, hold_ms).spawn();
    let held_b = pbx(&c.dir, "held-b", &c.b, 1, hold_ms).spawn();
    wait_metric(&c.a, "opentrunk_calls_active", 2.0, Duration::from_secs(10));
    wait_metric(&c.b, "opentrunk_calls_active", 1.0, Duration::from_secs(10));
    assert_eq!(refused_at(&c.dir, "fourth-at-b", &c.b), "SIP/2.0 403 User channel limit exceeded D1");
    assert_eq!(refused_at(&c.dir, "fourth-at-a", &c.a), "SIP/2.0 403 User channel limit exceeded D1");
    held_a.wait(Duration::from_secs(30)).assert_succeeded("node A's two calls", 2);
    held_b.wait(Duration::from_secs(30)).assert_succeeded("node B's call", 1);
}

#[test]
fn limits_challenges_and_configuration_hold_across_two_nodes() {
    let Some(c) = cluster("cluster-limits", SHARED_REDIS) else { return };
    let (_account, _conn, _gateway, on_b) = platform(&c, 3);
    assert!(on_b <= Duration::from_secs(1), "node B applied node A's new connection after {on_b:?}");
    // And it takes effect there: B admits the PBX's call.
    pbx(&c.dir, "first-at-b", &c.b, 1, 200).run().assert_succeeded("a call through node B", 1);

    // Three calls up across both nodes (the account's limit), then a fourth on either node.
    three_calls_fit_across_the_nodes_and_a_fourth_does_not(&c, 8000);

    // A phone's REGISTER challenged by node A is answered at node B.
    let generation = generations(&c.a);
    let account = peers::account(&c.a, "phones", None);
    wait_config_applied(&c.a, generation);
    let before = metric(&c.a, "opentrunk_config_resources").unwrap_or(0.0);
    let body = json!({"connection_name": "phones", "user_name": "cluster7", "password": "correct-horse-battery"});
    create(&c.a, "/v2/credential_connections", &account.key, body);
    applied_on(&c.b, before + 1.0, Duration::from_secs(10));
    let phone = UdpSocket::bind((ROAMING_PBX_IP, 0)).unwrap();
    phone.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let challenge = register(&phone, c.a.sip, 1, None);
    assert_eq!(challenge.status(), Some(401), "node A challenges");
    let header = challenge.header(HeaderName::WwwAuthenticate).expect("WWW-Authenticate").to_owned();
    let parsed = sip::Auth::parse(&header).expect("a digest challenge");
    let uri = format!("sip:{}", c.b.sip);
    let answer =
        trunking::digest::authorization(&parsed, "REGISTER", &uri, "cluster7", "correct-horse-battery", "c1", 1)
            .expect("an answerable challenge");
    let ok = register(&phone, c.b.sip, 2, Some(&answer));
    assert_eq!(ok.status(), Some(200), "node B accepts node A's nonce: {ok:?}");
}

/// A REGISTER of user `cluster7` from `phone` to `node`: the final answer.
fn register(phone: &UdpSocket, node: SocketAddr, cseq: u32, authorization: Option<&str>) -> Message {
    let me = phone.local_addr().unwrap();
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let text = format!(
        "REGISTER sip:{node} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcluster{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:cluster7@{node}>;tag=ph1\r\nTo: <sip:cluster7@{node}>\r\n\
         Call-ID: cluster-registration@{me}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:cluster7@{me}>\r\n\
         Expires: 300\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    phone.send_to(text.as_bytes(), node).unwrap();
    let mut buf = [0u8; 65_535];
    loop {
        let (n, _) = phone.recv_from(&mut buf).expect("an answer to the REGISTER");
        let m = Message::parse(Bytes::copy_from_slice(&buf[..n]), Framing::Datagram).expect("valid SIP");
        if m.status().is_some_and(|s| s >= 200) {
            return m;
        }
    }
}

/// The Call-IDs of the calls a SIPp run placed.
fn call_ids(run: &SippRun) -> Vec<String> {
    let mut ids = run.call_ids();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn a_node_killed_during_calls_frees_their_channels_and_keeps_their_records() {
    let Some(mut c) = cluster("cluster-sigkill", SHARED_REDIS) else { return };
    let (_account, conn, _gateway, _) = platform(&c, 3);
    // One call on A, two on B, all held long; then B dies.
    let held_a = pbx(&c.dir, "held-a", &c.a, 1, 20_000).spawn();
    let held_b = pbx(&c.dir, "held-b", &c.b, 2, 20_000).spawn();
    wait_metric(&c.a, "opentrunk_calls_active", 1.0, Duration::from_secs(10));
    wait_metric(&c.b, "opentrunk_calls_active", 2.0, Duration::from_secs(10));
    // The journal is written in batches (every 200 ms): a call set up in the last moment
    // before a node dies may leave no record; these have been up a second.
    std::thread::sleep(Duration::from_secs(1));
    c.b.kill();
    let killed = Instant::now();
    let lost = call_ids(&held_b.stop(Duration::from_secs(1)));
    assert_eq!(lost.len(), 2, "node B's two calls");
    // B's leases outlive it for up to the TTL: the account is full at first...
    assert_eq!(refused_at(&c.dir, "right-after", &c.a), "SIP/2.0 403 User channel limit exceeded D1");
    // ...and its two channels are free within the TTL (plus a refresh period of slack).
    let mut attempt = 0;
    wait_for(Duration::from_secs(LEASE_TTL_SECS + 5), "node B's channels freed", || {
        attempt += 1;
        let run = pbx(&c.dir, &format!("retry-{attempt}"), &c.a, 1, 100).args(["-timeout", "5s"]).run();
        (run.code == Some(0)).then_some(())
    });
    let freed = killed.elapsed();
    assert!(freed <= Duration::from_secs(LEASE_TTL_SECS + 2), "channels came back after {freed:?}");
    // Two new calls fit beside A's held one.
    pbx(&c.dir, "two-more", &c.a, 2, 500).run().assert_succeeded("two calls in B's freed channels", 2);
    held_a.wait(Duration::from_secs(30)).assert_succeeded("node A's call", 1);

    // B's calls have their records, written by A from the open-call journal, exactly once.
    let records_of = |call_id: &str| -> Vec<Value> {
        cdrs(&c.a, &format!("&filter[connection_id]={conn}"))
            .into_iter()
            .filter(|r| r["a_leg_call_id"] == call_id)
            .collect()
    };
    for call_id in &lost {
        wait_for(Duration::from_secs(20), &format!("the record of lost call {call_id}"), || {
            (!records_of(call_id).is_empty()).then_some(())
        });
    }
    // Reapers run every few seconds on every node: let them run again, then count.
    std::thread::sleep(Duration::from_secs(LEASE_TTL_SECS + 2));
    for call_id in &lost {
        let records = records_of(call_id);
        assert_eq!(records.len(), 1, "one record of lost call {call_id}: {records:?}");
        assert_eq!(records[0]["sip_response_code"], json!(200), "{}", records[0]);
    }
}

/// A Redis server of the test's own, on a free loopback port, that can be stopped and started
/// again on the same port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(test: &str) -> Option<OwnRedis> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !found {
            assert!(!services_required(), "{test}: redis-server is required (scripts/install-test-deps)");
            println!("skipped: {test}: redis-server not installed");
            return None;
        }
        let mut r = OwnRedis { port: support::free_port(), child: None };
        r.up();
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        wait_for(Duration::from_secs(5), "redis-server listening", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok().then_some(())
        });
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn calls_keep_flowing_through_a_redis_restart() {
    let Some(mut redis) = OwnRedis::start("cluster-redis-restart") else { return };
    let Some(c) = cluster("cluster-redis-restart", &redis.url()) else { return };
    let (account, _conn, _gateway, _) = platform(&c, 50);
    // 10 calls a second for 6 s through each node, each held 1 s; Redis goes away for 1.5 s of it.
    let load_a = pbx(&c.dir, "load-a", &c.a, 60, 1000).args(["-r", "10", "-l", "50"]).spawn();
    let load_b = pbx(&c.dir, "load-b", &c.b, 60, 1000).args(["-r", "10", "-l", "50"]).spawn();
    std::thread::sleep(Duration::from_millis(1500));
    redis.down();
    std::thread::sleep(Duration::from_millis(1500));
    redis.up();
    load_a.wait(Duration::from_secs(60)).assert_succeeded("node A's calls through the restart", 60);
    load_b.wait(Duration::from_secs(60)).assert_succeeded("node B's calls through the restart", 60);
    let fallbacks = metric(&c.a, "opentrunk_counters_fallback_takes_total").unwrap_or(0.0)
        + metric(&c.b, "opentrunk_counters_fallback_takes_total").unwrap_or(0.0);
    assert!(fallbacks > 0.0, "calls were counted locally while Redis was away");
    wait_metric(&c.a, "opentrunk_calls_active", 0.0, Duration::from_secs(10));
    wait_metric(&c.b, "opentrunk_calls_active", 0.0, Duration::from_secs(10));

    assert_eq!(metric(&c.a, "opentrunk_counters_redis_up"), Some(1.0), "node A uses Redis again");
    assert_eq!(metric(&c.b, "opentrunk_counters_redis_up"), Some(1.0), "node B uses Redis again");

    // Converged: with the account's limit down to 3, three calls fit across both nodes and the
    // fourth is refused on either, so no lease of the load (taken in Redis, or locally while it
    // was away) is still counted and the count is shared again.
    let before = generations(&c.b);
    let (code, v) = api(
        &c.a,
        "PATCH",
        &format!("/v2/accounts/{}", account.id),
        OPERATOR_KEY,
        Some(&json!({"concurrent_call_limit": 3})),
    );
    assert_eq!(code, 200, "{v}");
    wait_config_applied(&c.b, before);
    three_calls_fit_across_the_nodes_and_a_fourth_does_not(&c, 6000);
}
