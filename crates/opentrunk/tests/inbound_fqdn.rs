//! Inbound calls to an FQDN connection through `opentrunk serve`: the connection's FQDN
//! (`pbx.acme.test`, an `srv` record) is answered by a local authoritative DNS server
//! (hickory-server on 127.0.0.1, a free port, handed to the switch as `OPENTRUNK_DNS_SERVERS`)
//! with two SRV targets of different priority, each a SIPp PBX on its own loopback address.
//! The lower priority value takes the calls; when it does not answer within the connection's
//! `timeout_1xx_secs`, or nothing listens there, the call goes to the other one.
//!
//! `.test` is a reserved name: the policy never looks it up to tell FQDN connections apart by
//! source, but delivery must locate it (RFC 3263) through the pinned resolver. Nothing here
//! queries a resolver of the host.
//!
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server as DnsServer;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::{LowerName, Name, RecordType};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use serde_json::{Value, json};

mod peers;
mod support;

use peers::*;

const CARRIER_IP: &str = "127.0.0.2";
/// The PBX the SRV record of priority 10 names, and the one of priority 20.
const PRIMARY_IP: &str = "127.0.0.3";
const SECONDARY_IP: &str = "127.0.0.6";
const FQDN: &str = "pbx.acme.test";
const SRV_NAME: &str = "_sip._udp.pbx.acme.test";
const NUMBER: &str = "+12125550123";

type Queries = Arc<Mutex<Vec<(String, RecordType)>>>;

/// The catalog, with every question it is asked written down.
struct Recording {
    catalog: Catalog,
    queries: Queries,
}

#[async_trait::async_trait]
impl RequestHandler for Recording {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let name = info.query.name().to_string();
            self.queries.lock().unwrap().push((name.trim_end_matches('.').to_owned(), info.query.query_type()));
        }
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

/// `acme.test.` served on UDP and TCP at one free port of 127.0.0.1, on a runtime of its own
/// (the tests are synchronous).
struct Dns {
    addr: SocketAddr,
    queries: Queries,
    _server: DnsServer<Recording>,
    _runtime: tokio::runtime::Runtime,
}

impl Dns {
    /// The zone: `_sip._udp.pbx` with priority 10 at `primary` and 20 at `secondary`. The
    /// priority 20 record is written first, so a locator keeping the zone's order (or the
    /// server's) instead of sorting by priority goes to the wrong PBX.
    fn start(primary: SocketAddr, secondary: SocketAddr) -> Dns {
        let zone = format!(
            "$ORIGIN acme.test.\n$TTL 300\n\
             @ IN SOA ns admin ( 1 3600 600 86400 60 )\n\
             @ IN NS ns\n\
             ns IN A 127.0.0.1\n\
             _sip._udp.pbx IN SRV 20 0 {} pbx-b\n\
             _sip._udp.pbx IN SRV 10 0 {} pbx-a\n\
             pbx-a IN A {}\n\
             pbx-b IN A {}\n",
            secondary.port(),
            primary.port(),
            primary.ip(),
            secondary.ip(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let queries = Queries::default();
        let (addr, server) = runtime.block_on(async {
            let origin = Name::from_ascii("acme.test.").unwrap();
            let (origin, records) = Parser::new(&zone, None, Some(origin)).parse().expect("the test zone parses");
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .unwrap();
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler)]);
            let mut server = DnsServer::new(Recording { catalog, queries: queries.clone() });
            let (udp, tcp) = loop {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                    break (udp, tcp);
                }
            };
            let addr = udp.local_addr().unwrap();
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 16);
            (addr, server)
        });
        Dns { addr, queries, _server: server, _runtime: runtime }
    }

    fn asked(&self, name: &str, rtype: RecordType) -> bool {
        self.queries.lock().unwrap().iter().any(|(n, t)| n == name && *t == rtype)
    }
}

struct Platform {
    server: support::Server,
    dns: Dns,
    dir: std::path::PathBuf,
    connection: Value,
}

impl Platform {
    /// The switch resolving through the test's DNS server, a carrier at [`CARRIER_IP`], and an
    /// FQDN connection (1 s to the first provisional) whose SRV targets are `primary` and
    /// `secondary`, with [`NUMBER`] pointed at it; returns once the switch decides with it.
    fn new(test: &str, primary: SocketAddr, secondary: SocketAddr) -> Platform {
        let dns = Dns::start(primary, secondary);
        let log = std::env::var("OPENTRUNK_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let server = support::Server::start_with_config(
            "[calls]\ntimeout_1xx_secs = 1\ntimeout_2xx_secs = 3\nmax_duration_secs = 60\n",
            &[
                ("OPENTRUNK_ADMIN_API_KEY", OPERATOR_KEY),
                ("OPENTRUNK_LOG", &log),
                ("OPENTRUNK_DNS_SERVERS", &dns.addr.to_string()),
            ],
        );
        let before = generations(&server);
        let account = account(&server, "acme", None);
        origination_carrier(&server, CARRIER_IP);
        let connection = create(
            &server,
            "/v2/fqdn_connections",
            &account.key,
            json!({"connection_name": "acme-pbx", "inbound": {"timeout_1xx_secs": 1, "timeout_2xx_secs": 5}}),
        );
        let record = create(
            &server,
            "/v2/fqdns",
            &account.key,
            json!({"connection_id": id(&connection), "fqdn": FQDN, "dns_record_type": "srv"}),
        );
        assert_eq!(record["port"], Value::Null, "an srv record has no port of its own: {record}");
        phone_number(&server, &account, NUMBER, &id(&connection));
        wait_config_applied(&server, before);
        Platform { server, dns, dir: work_dir(test), connection }
    }

    fn carrier_call(&self, name: &str) -> Sipp {
        Sipp::pbx(&self.dir, name, "pbx_call.xml", &self.server, CARRIER_IP, NUMBER)
    }

    /// The connection's call records once `n` are written, oldest first.
    fn records(&self, n: usize) -> Vec<Value> {
        let filter = format!("&filter[connection_id]={}", id(&self.connection));
        let mut found = wait_for(Duration::from_secs(10), &format!("{n} inbound call records"), || {
            Some(cdrs(&self.server, &filter)).filter(|r| r.len() >= n)
        });
        found.reverse();
        found
    }

    fn assert_located(&self) {
        assert!(self.dns.asked(SRV_NAME, RecordType::SRV), "the switch asked for {SRV_NAME} SRV");
    }
}

/// The ports of a record's route attempts with their response codes.
fn attempts(cdr: &Value) -> Vec<(u64, u64)> {
    let list = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("no route_attempts: {cdr}"));
    list.iter()
        .map(|a| (a["port"].as_u64().unwrap_or_default(), a["sip_response_code"].as_u64().unwrap_or_default()))
        .collect()
}

#[test]
fn the_lower_srv_priority_takes_the_calls() {
    if !sipp_available() {
        return;
    }
    let (primary, at_1) =
        Running::gateway(&work_dir("fqdn-priority"), "pbx-10", "carrier_answer.xml", PRIMARY_IP, None);
    let (secondary, at_2) =
        Running::gateway(&work_dir("fqdn-priority"), "pbx-20", "carrier_answer.xml", SECONDARY_IP, None);
    let p = Platform::new("fqdn-priority", at_1, at_2);

    // Several calls: a locator choosing at random between the two would not send them all to one.
    let carrier = p.carrier_call("carrier").args(["-m", "5", "-r", "5", "-d", "200"]).run();
    carrier.assert_succeeded("the carrier's 5 calls", 5);
    let primary = primary.stop(Duration::from_secs(10));
    let secondary = secondary.stop(Duration::from_secs(10));
    assert_eq!(primary.requests("INVITE").len(), 5, "priority 10 takes every call:\n{}", primary.messages);
    assert!(secondary.requests("INVITE").is_empty(), "priority 20 hears of none:\n{}", secondary.messages);
    assert!(
        primary.requests("INVITE")[0].contains("12125550123@"),
        "the number reaches the PBX: {:?}",
        primary.requests("INVITE")
    );
    p.assert_located();
    for cdr in p.records(5) {
        assert_eq!((&cdr["direction"], &cdr["sip_response_code"]), (&json!("inbound"), &json!(200)), "{cdr}");
        assert_eq!(attempts(&cdr), [(u64::from(at_1.port()), 200)], "{cdr}");
    }
}

#[test]
fn a_silent_first_target_times_out_and_the_next_priority_answers() {
    if !sipp_available() {
        return;
    }
    let dir = work_dir("fqdn-silent");
    let (silent, at_1) = Running::gateway(&dir, "pbx-10", "pbx_silent.xml", PRIMARY_IP, None);
    let (answering, at_2) = Running::gateway(&dir, "pbx-20", "carrier_answer.xml", SECONDARY_IP, Some(1));
    let p = Platform::new("fqdn-silent", at_1, at_2);

    let started = std::time::Instant::now();
    let carrier = p.carrier_call("carrier").run();
    carrier.assert_succeeded("the carrier's call", 1);
    // 1 s of silence, then the call moves on, well before the 2xx timeout or Timer B.
    assert!(started.elapsed() < Duration::from_secs(5), "the call took {:?}", started.elapsed());
    let answering = answering.wait(Duration::from_secs(10));
    answering.assert_succeeded("PBX of priority 20 (answers)", 1);
    let silent = silent.stop(Duration::from_secs(10));
    assert!(!silent.requests("INVITE").is_empty(), "priority 10 was tried first:\n{}", silent.messages);
    assert!(silent.status_lines().is_empty(), "the silent PBX said nothing:\n{}", silent.messages);
    p.assert_located();

    let cdr = p.records(1).remove(0);
    assert_eq!(cdr["sip_response_code"], json!(200), "{cdr}");
    let tried = attempts(&cdr);
    assert_eq!(tried.len(), 2, "{cdr}");
    assert_eq!(tried[0].0, u64::from(at_1.port()), "{cdr}");
    assert_ne!(tried[0].1, 200, "{cdr}");
    assert_eq!(tried[1], (u64::from(at_2.port()), 200), "{cdr}");
}

#[test]
fn nothing_listening_at_the_first_target_moves_the_call_to_the_next_priority() {
    if !sipp_available() {
        return;
    }
    let dir = work_dir("fqdn-nobody");
    // A port nothing is bound to on the primary's address.
    let nobody: SocketAddr = format!("{PRIMARY_IP}:{}", free_udp_port(PRIMARY_IP)).parse().unwrap();
    let (answering, at_2) = Running::gateway(&dir, "pbx-20", "carrier_answer.xml", SECONDARY_IP, Some(1));
    let p = Platform::new("fqdn-nobody", nobody, at_2);

    let carrier = p.carrier_call("carrier").run();
    carrier.assert_succeeded("the carrier's call", 1);
    answering.wait(Duration::from_secs(10)).assert_succeeded("PBX of priority 20 (answers)", 1);
    p.assert_located();
    let cdr = p.records(1).remove(0);
    let tried = attempts(&cdr);
    assert_eq!(tried.len(), 2, "{cdr}");
    assert_eq!(tried[0].0, u64::from(nobody.port()), "{cdr}");
    assert_eq!(tried[1], (u64::from(at_2.port()), 200), "{cdr}");
}
