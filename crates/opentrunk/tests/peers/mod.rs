//! Real peers around a running `opentrunk serve` for the call tests: SIPp as the customer's PBX
//! and as the carriers' gateways (scenarios in `tests/sipp/`), each on its own loopback address
//! so the switch tells them apart by source IP, and the platform's resources made through the
//! `/v2` API as an operator and a customer would make them.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, Server};

/// The operator's key the tests start the switch with (`OPENTRUNK_ADMIN_API_KEY`).
pub const OPERATOR_KEY: &str = "operator-key-for-call-tests-0001";
/// Where the customer's PBX sends from (IP connections name this address).
pub const PBX_IP: &str = "127.0.0.4";
/// A PBX of a credential connection: an address no IP connection has.
pub const ROAMING_PBX_IP: &str = "127.0.0.5";
/// The carrier's gateways.
pub const GATEWAY_1_IP: &str = "127.0.0.2";
pub const GATEWAY_2_IP: &str = "127.0.0.3";
/// The caller's number: a valid US number of no account on the platform.
pub const CALLER: &str = "+13125550100";
/// A destination the rate deck prices at [`RATE`] a minute.
pub const DESTINATION: &str = "+12125550123";
/// A destination the rate deck prices above every profile's `max_destination_rate`.
pub const EXPENSIVE_DESTINATION: &str = "+13125550199";
pub const RATE: &str = "0.012";
/// Billing increment: at least 30 s, then 6 s steps.
pub const INCREMENT: (u32, u32) = (30, 6);

/// Whether SIPp is installed; when it is not, one line says so and the test is skipped, except
/// where `OPENTRUNK_REQUIRE_SIPP=1` (CI) makes it required.
pub fn sipp_available() -> bool {
    let ok = Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        if std::env::var("OPENTRUNK_REQUIRE_SIPP").is_ok_and(|v| v == "1") {
            panic!("SIPp is required (scripts/install-test-deps installs sip-tester)");
        }
        println!("skipped: sipp not installed (scripts/install-test-deps installs sip-tester)");
    }
    ok
}

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

/// The switch with the operator's key and short call timers, so failover and no-answer cases
/// take seconds, not minutes. `extra_toml` is appended to the configuration.
pub fn start_switch(extra_toml: &str) -> Server {
    let toml = format!("[calls]\ntimeout_1xx_secs = 2\ntimeout_2xx_secs = 3\nmax_duration_secs = 60\n{extra_toml}");
    let log = std::env::var("OPENTRUNK_TEST_LOG").unwrap_or_else(|_| "warn".into());
    Server::start_with_config(&toml, &[("OPENTRUNK_ADMIN_API_KEY", OPERATOR_KEY), ("OPENTRUNK_LOG", &log)])
}

// ---------------------------------------------------------------------------------------------
// The API.

/// One API request: status and the decoded body (`null` when empty or not JSON).
pub fn api(server: &Server, method: &str, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (code, body) = support::http(server.api, method, path, Some(key), text.as_deref())
        .unwrap_or_else(|| panic!("{method} {path}: no answer from the API"));
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// POSTs `body` and expects 200 or 201; its `data`.
pub fn create(server: &Server, path: &str, key: &str, body: Value) -> Value {
    let (code, v) = api(server, "POST", path, key, Some(&body));
    assert!(code == 200 || code == 201, "POST {path} answered {code}: {v}\nrequest: {body}");
    v["data"].clone()
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_owned()
}

/// A metric's value on `/metrics`, `None` when the switch does not export it.
pub fn metric(server: &Server, name: &str) -> Option<f64> {
    let (_, body) = support::http_get(server.api, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The configuration generations: (stored configuration, the switch's policy).
pub fn generations(server: &Server) -> (u64, Option<u64>) {
    let g = |name| metric(server, name).map(|v| v as u64);
    (g("opentrunk_config_generation").unwrap_or(0), g("opentrunk_policy_generation"))
}

/// Waits until what was written through the API after `before` (read with [`generations`])
/// is what the switch decides with: the stored configuration reloaded past `before`, the
/// policy caught up with it, and both steady for longer than the reload debounce (a reload in
/// the middle of a series of writes is not the last one).
pub fn wait_config_applied(server: &Server, before: (u64, Option<u64>)) {
    const STEADY: Duration = Duration::from_millis(600);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = (0, None);
    let mut since = Instant::now();
    loop {
        let now = generations(server);
        if now != last {
            last = now;
            since = Instant::now();
        }
        let (config, policy) = now;
        let applied = config > before.0 && policy.is_some_and(|p| p >= config && Some(p) > before.1);
        if applied && since.elapsed() >= STEADY {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the switch did not apply the configuration: config generation {config} (before {}), policy generation \
             {policy:?} (before {:?}); is opentrunk_policy_generation exported?",
            before.0,
            before.1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 100 ms until it gives `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a gauge reads `value`.
pub fn wait_metric(server: &Server, name: &str, value: f64, limit: Duration) {
    wait_for(limit, &format!("{name} == {value} (now {:?})", metric(server, name)), || {
        (metric(server, name) == Some(value)).then_some(())
    });
}

/// The operator's view of the call detail records, newest first (up to 250).
pub fn cdrs(server: &Server, filter: &str) -> Vec<Value> {
    let path = format!("/v2/detail_records?filter[record_type]=sip-trunking&page[size]=250{filter}");
    let (code, v) = api(server, "GET", &path, OPERATOR_KEY, None);
    assert_eq!(code, 200, "GET {path}: {v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// `meta.total_results` of the detail records matching `filter`.
pub fn cdr_total(server: &Server, filter: &str) -> u64 {
    let path = format!("/v2/detail_records?filter[record_type]=sip-trunking&page[size]=1{filter}");
    let (code, v) = api(server, "GET", &path, OPERATOR_KEY, None);
    assert_eq!(code, 200, "GET {path}: {v}");
    v["meta"]["total_results"].as_u64().unwrap_or_else(|| panic!("no meta.total_results in {v}"))
}

/// Waits for the CDR of the call whose A-leg Call-ID is `call_id` (CDR writes are asynchronous).
pub fn wait_cdr(server: &Server, connection_id: &str, call_id: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("the CDR of call {call_id}"), || {
        cdrs(server, &format!("&filter[connection_id]={connection_id}"))
            .into_iter()
            .find(|r| r["a_leg_call_id"] == call_id)
    })
}

/// The cost of a call of `billed_sec` at `rate` a minute, in micro-dollars (the CDR's cost has
/// 6 decimal places).
pub fn micro_cost(rate: &str, billed_sec: u64) -> i64 {
    (decimal_micros(rate) as i128 * billed_sec as i128 / 60) as i64
}

/// A decimal string as millionths (`"0.012"` is 12000); the tests' amounts have at most 6
/// decimals.
pub fn decimal_micros(s: &str) -> i64 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 6, "{s}: more than 6 decimals");
    let frac = format!("{frac:0<6}");
    int.parse::<i64>().unwrap() * 1_000_000 + frac.parse::<i64>().unwrap()
}

/// A record's time (`2026-01-02T03:04:05.678Z`) in Unix milliseconds.
pub fn utc_ms(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 {
        s.get(r.clone()).and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("{s:?} is not a record time ({r:?})"))
    };
    assert!(s.len() == 24 && s.ends_with('Z'), "{s:?} is not a record time");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

/// The seconds billed for a call of `seconds` (a started second counts) under an (initial,
/// subsequent) increment.
pub fn billed(seconds: u64, (first, next): (u32, u32)) -> u64 {
    let (first, next) = (u64::from(first), u64::from(next));
    match seconds {
        0 => 0,
        s if s <= first => first,
        s => first + (s - first).div_ceil(next) * next,
    }
}

// ---------------------------------------------------------------------------------------------
// The platform's resources.

/// An account of the platform with its rate deck, and its key.
pub struct Account {
    pub id: String,
    pub key: String,
    pub deck: String,
}

/// A rate deck pricing every US number at [`RATE`] and [`EXPENSIVE_DESTINATION`]'s prefix at a
/// dollar a minute, and an account using it with `concurrent_call_limit` (`None`: the API's
/// default).
pub fn account(server: &Server, name: &str, concurrent_call_limit: Option<u32>) -> Account {
    let deck = create(
        server,
        "/v2/rate_decks",
        OPERATOR_KEY,
        json!({
            "name": format!("{name}-deck"),
            "billing_increment": format!("{}/{}", INCREMENT.0, INCREMENT.1),
            "rates": [{"prefix": "1", "rate": RATE}, {"prefix": "1312555019", "rate": "1.00"}],
        }),
    );
    let mut body = json!({"name": name, "rate_deck_id": id(&deck)});
    if let Some(l) = concurrent_call_limit {
        body["concurrent_call_limit"] = json!(l);
    }
    let a = create(server, "/v2/accounts", OPERATOR_KEY, body);
    Account { id: id(&a), key: a["api_key"].as_str().expect("api_key").to_owned(), deck: id(&deck) }
}

/// An outbound voice profile (US and Canada, at most 0.50 a minute) with `concurrent_call_limit`.
pub fn profile(server: &Server, account: &Account, concurrent_call_limit: Option<u32>) -> String {
    let mut body = json!({"name": "office", "max_destination_rate": 0.5});
    if let Some(l) = concurrent_call_limit {
        body["concurrent_call_limit"] = json!(l);
    }
    id(&create(server, "/v2/outbound_voice_profiles", &account.key, body))
}

/// A carrier for every destination whose gateways are `gateways` (address, port) tried in that
/// order; with `login` and `tech_prefix` when given.
pub fn carrier(
    server: &Server,
    name: &str,
    gateways: &[SocketAddr],
    login: Option<(&str, &str)>,
    tech_prefix: Option<&str>,
) -> String {
    carrier_for(server, name, gateways, &[], login, tech_prefix)
}

/// As [`carrier`], terminating only `prefixes`.
pub fn carrier_for(
    server: &Server,
    name: &str,
    gateways: &[SocketAddr],
    prefixes: &[&str],
    login: Option<(&str, &str)>,
    tech_prefix: Option<&str>,
) -> String {
    let gateways: Vec<Value> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| json!({"host": g.ip().to_string(), "port": g.port(), "transport": "UDP", "priority": i + 1}))
        .collect();
    let mut body = json!({"name": name, "gateways": gateways, "routing": "sequential", "prefixes": prefixes});
    if let Some((user, password)) = login {
        body["username"] = json!(user);
        body["password"] = json!(password);
    }
    if let Some(p) = tech_prefix {
        body["tech_prefix"] = json!(p);
    }
    id(&create(server, "/v2/carriers", OPERATOR_KEY, body))
}

/// An IP connection of `account` calling from `address` with `outbound` settings (merged over
/// the profile), and its IP. Returns the connection's document.
pub fn ip_connection(server: &Server, account: &Account, name: &str, address: &str, outbound: Value) -> Value {
    let c = create(server, "/v2/ip_connections", &account.key, json!({"connection_name": name, "outbound": outbound}));
    create(server, "/v2/ips", &account.key, json!({"connection_id": id(&c), "ip_address": address}));
    c
}

/// The connection's platform-assigned tech prefix.
pub fn tech_prefix(connection: &Value) -> String {
    connection["outbound"]["tech_prefix"]
        .as_str()
        .unwrap_or_else(|| panic!("no tech prefix in {connection}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// SIPp.

/// A port free for UDP on `ip` right now.
pub fn free_udp_port(ip: &str) -> u16 {
    let s = UdpSocket::bind((ip, 0)).expect("bind a probe socket");
    s.local_addr().expect("probe address").port()
}

/// Whether a UDP socket is bound to `addr` (IPv4), read from `/proc/net/udp` rather than by
/// binding a probe, which could take the port from under the peer starting on it.
pub fn udp_bound(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else { return false };
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
}

/// Where each SIPp run keeps its message log and screen, kept when a test fails.
pub fn work_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ot-calls-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// What a SIPp run left: its exit code, closing screen and every message it sent and received.
#[derive(Debug)]
pub struct SippRun {
    pub code: Option<i32>,
    pub screen: String,
    pub messages: String,
    pub log: PathBuf,
}

impl SippRun {
    /// The cumulative column of a row of the closing screen ("Successful call").
    pub fn cumulative(&self, row: &str) -> Option<u64> {
        self.screen.lines().rfind(|l| l.trim_start().starts_with(row))?.split('|').nth(2)?.trim().parse().ok()
    }

    /// Status lines received or sent (`SIP/2.0 403 User channel limit exceeded D1`), in order.
    pub fn status_lines(&self) -> Vec<&str> {
        self.messages.lines().filter(|l| l.starts_with("SIP/2.0 ")).collect()
    }

    /// The last final (>= 200) status line in the log.
    pub fn last_final(&self) -> Option<&str> {
        self.status_lines()
            .into_iter()
            .rfind(|l| l.get(8..11).and_then(|c| c.parse::<u16>().ok()).is_some_and(|c| c >= 200))
    }

    /// Request lines of `method` in the log (`INVITE sip:...`).
    pub fn requests(&self, method: &str) -> Vec<&str> {
        let prefix = format!("{method} ");
        self.messages.lines().filter(|l| l.starts_with(&prefix) && l.ends_with(" SIP/2.0")).collect()
    }

    /// The Call-IDs of the dialogs in the log, in first-seen order.
    pub fn call_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.messages.lines() {
            if let Some(v) = l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")) {
                let v = v.trim().to_owned();
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Panics with the run's screen unless it exited 0 with `calls` successful calls.
    pub fn assert_succeeded(&self, what: &str, calls: u64) {
        assert!(
            self.code == Some(0) && self.cumulative("Successful call") == Some(calls),
            "{what}: SIPp exited {:?}, {:?} successful calls of {calls} (message log {})\n{}",
            self.code,
            self.cumulative("Successful call"),
            self.log.display(),
            self.screen
        );
    }
}

/// How to run one SIPp instance.
pub struct Sipp {
    args: Vec<String>,
    dir: PathBuf,
    name: String,
    /// `-key` values (the scenarios' `[caller]`, `[extra_header]`), set once each.
    keys: Vec<(String, String)>,
}

impl Sipp {
    /// A SIPp of `scenario_file` bound to `ip` (`port` 0: any), logs in `dir` under `name`.
    pub fn new(dir: &Path, name: &str, scenario_file: &str, ip: &str, port: u16) -> Sipp {
        let mut args = vec!["-sf".into(), scenario(scenario_file).display().to_string(), "-i".into(), ip.into()];
        if port != 0 {
            args.extend(["-p".into(), port.to_string()]);
        }
        args.extend(["-t".into(), "u1".into(), "-nostdin".into(), "-trace_msg".into()]);
        args.extend(["-message_file".into(), dir.join(format!("{name}.messages")).display().to_string()]);
        Sipp { args, dir: dir.to_owned(), name: name.to_owned(), keys: Vec::new() }
    }

    /// A PBX calling `dial` (the Request-URI user) through the switch from `ip` with
    /// `scenario_file`: one call as [`CALLER`], with a harmless extra header, held 500 ms,
    /// unless [`Sipp::key`] and [`Sipp::args`] say otherwise.
    pub fn pbx(dir: &Path, name: &str, scenario_file: &str, server: &Server, ip: &str, dial: &str) -> Sipp {
        // A port of its own: SIPp would otherwise take 5060 when free, and PBXs share addresses.
        let mut s = Sipp::new(dir, name, scenario_file, ip, free_udp_port(ip));
        s.args.insert(0, server.sip.to_string());
        s.args.extend(["-s".into(), dial.into(), "-timeout".into(), "60s".into(), "-timeout_error".into()]);
        // Later options win: a test may ask for more calls or a longer hold.
        s.args.extend(["-m".into(), "1".into(), "-d".into(), "500".into()]);
        s.keys = vec![("caller".into(), CALLER.into()), ("extra_header".into(), "Subject: opentrunk test".into())];
        s
    }

    /// Sets a scenario keyword (`-key NAME VALUE`).
    pub fn key(mut self, name: &str, value: &str) -> Sipp {
        match self.keys.iter_mut().find(|(k, _)| k == name) {
            Some(kv) => kv.1 = value.to_owned(),
            None => self.keys.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    /// More command-line options.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, more: I) -> Sipp {
        self.args.extend(more.into_iter().map(Into::into));
        self
    }

    /// Runs to the end.
    pub fn run(self) -> SippRun {
        self.spawn().wait(Duration::from_secs(120))
    }

    /// Starts in the background.
    pub fn spawn(self) -> Running {
        let screen = self.dir.join(format!("{}.screen", self.name));
        let out = std::fs::File::create(&screen).expect("screen file");
        let err = out.try_clone().expect("screen file");
        let mut cmd = Command::new("sipp");
        cmd.args(&self.args);
        for (k, v) in &self.keys {
            cmd.args(["-key", k, v]);
        }
        let child = cmd.current_dir(&self.dir).stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("run sipp");
        Running { child: Some(child), screen, log: self.dir.join(format!("{}.messages", self.name)) }
    }
}

/// A SIPp running in the background (a carrier gateway, or PBX calls held up).
pub struct Running {
    child: Option<Child>,
    screen: PathBuf,
    log: PathBuf,
}

impl Running {
    /// A gateway: `scenario_file` answering on `ip`, a fresh port, for `calls` calls (`None`:
    /// until stopped). Returns once it listens.
    pub fn gateway(dir: &Path, name: &str, scenario_file: &str, ip: &str, calls: Option<u64>) -> (Running, SocketAddr) {
        let port = free_udp_port(ip);
        let mut s = Sipp::new(dir, name, scenario_file, ip, port).args(["-timeout", "100s"]);
        if let Some(n) = calls {
            s = s.args(["-m".to_owned(), n.to_string(), "-timeout_error".to_owned()]);
        }
        let running = s.spawn();
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        wait_for(Duration::from_secs(5), &format!("SIPp {name} listening on {addr}"), || udp_bound(addr).then_some(()));
        (running, addr)
    }

    /// Waits for the end (at most `limit`, then it is stopped and the run reported as such).
    pub fn wait(mut self, limit: Duration) -> SippRun {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.read(code)
    }

    /// Asks it to finish its calls and exit (SIGUSR1), then waits.
    pub fn stop(self, limit: Duration) -> SippRun {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-USR1", &c.id().to_string()]).status();
        }
        self.wait(limit)
    }

    fn read(&self, code: Option<i32>) -> SippRun {
        SippRun {
            code,
            screen: std::fs::read_to_string(&self.screen).unwrap_or_default(),
            messages: std::fs::read_to_string(&self.log).unwrap_or_default(),
            log: self.log.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The loopback address as an `IpAddr`.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A carrier that only brings calls in: from `inbound_ip`. Its one gateway is a loopback
/// address nothing answers at, so an outbound call routed to it never leaves the machine.
pub fn origination_carrier(server: &Server, inbound_ip: &str) -> String {
    let body = json!({
        "name": "origination",
        "gateways": [{"host": "127.0.0.1", "port": 9, "transport": "UDP", "priority": 1}],
        "inbound_ips": [inbound_ip],
    });
    id(&create(server, "/v2/carriers", OPERATOR_KEY, body))
}

/// The platform number `number` (E.164) given to `account` and pointed at `connection_id`.
pub fn phone_number(server: &Server, account: &Account, number: &str, connection_id: &str) -> Value {
    create(
        server,
        "/v2/phone_numbers",
        OPERATOR_KEY,
        json!({"phone_number": number, "account_id": account.id, "connection_id": connection_id}),
    )
}
