//! RFC 3263 server location against a local authoritative DNS server (hickory-server on
//! 127.0.0.1, ephemeral port): nothing here queries the internet. The addresses in the zone are
//! documentation ranges and are never contacted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::dns::{LocateError, Locator, SrvRecord, Target, order_srv};
use engine::transport::TransportKind;
use engine::transport::TransportKind::{Tcp, Tls, Udp};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::{LowerName, Name, RecordType};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, UdpSocket};

const ZONE: &str = r#"
$ORIGIN example.test.
$TTL 300
@        IN SOA ns admin ( 1 3600 600 86400 60 )
@        IN NS  ns
ns       IN A   127.0.0.1

; NAPTR -> SRV -> A/AAAA. Order 10 holds TCP (preference 10) and UDP (20); SCTP is not spoken;
; the order 20 record is never reached for SIP but is the only one a SIPS URI may use.
naptr              IN NAPTR 10 20 "S" "SIP+D2U"  "" _sip._udp.naptr
naptr              IN NAPTR 10 10 "S" "SIP+D2T"  "" _sip._tcp.naptr
naptr              IN NAPTR 10 5  "S" "SIP+D2S"  "" _sip._sctp.naptr
naptr              IN NAPTR 20 10 "S" "SIPS+D2T" "" _sips._tcp.naptr
_sip._tcp.naptr    IN SRV 10 0 5070 b.hosts
_sip._udp.naptr    IN SRV 10 0 5080 a.hosts
_sip._sctp.naptr   IN SRV 10 0 5090 a.hosts
_sips._tcp.naptr   IN SRV 10 0 5061 c.hosts

; SRV only: priorities 10 and 20 under UDP, one TCP record, no TLS.
_sip._udp.srv      IN SRV 20 0 5060 c.hosts
_sip._udp.srv      IN SRV 10 0 5060 a.hosts
_sip._tcp.srv      IN SRV 10 0 5062 b.hosts
srv                IN A    192.0.2.40

; Weighted: one priority, weights 3 and 1.
_sip._udp.weighted IN SRV 10 3 5060 a.hosts
_sip._udp.weighted IN SRV 10 1 5060 b.hosts

; A/AAAA only.
plain              IN A    192.0.2.50
plain              IN AAAA 2001:db8::50

; Short TTLs for the cache test.
short       1      IN A    192.0.2.60

a.hosts            IN A    192.0.2.1
b.hosts            IN A    192.0.2.2
b.hosts            IN AAAA 2001:db8::2
c.hosts            IN A    192.0.2.3
"#;

type Log = Arc<Mutex<Vec<(String, RecordType)>>>;

/// The catalog, with every question it gets written down.
struct Recording {
    catalog: Catalog,
    log: Log,
}

#[async_trait::async_trait]
impl RequestHandler for Recording {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let name = info.query.name().to_string();
            self.log.lock().unwrap().push((name.trim_end_matches('.').to_string(), info.query.query_type()));
        }
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

struct TestDns {
    addr: SocketAddr,
    log: Log,
    _server: Server<Recording>,
}

impl TestDns {
    /// Serves `example.test.` on UDP and TCP at the same ephemeral port of 127.0.0.1.
    async fn start() -> TestDns {
        let origin = Name::from_ascii("example.test.").unwrap();
        let (origin, records) = Parser::new(ZONE, None, Some(origin)).parse().unwrap();
        let zone = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            origin.clone(),
            records,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .unwrap();
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let log = Log::default();
        let mut server = Server::new(Recording { catalog, log: log.clone() });
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        TestDns { addr, log, _server: server }
    }

    fn locator(&self) -> Locator {
        Locator::with_nameservers(vec![self.addr]).unwrap()
    }

    fn queries(&self) -> Vec<(String, RecordType)> {
        self.log.lock().unwrap().clone()
    }

    fn asked(&self, name: &str, rtype: RecordType) -> bool {
        self.queries().iter().any(|(n, t)| n == name && *t == rtype)
    }
}

async fn locate(locator: &Locator, uri: &str) -> Result<Vec<Target>, LocateError> {
    let uri = sip::uri::parse_uri(uri).unwrap();
    locator.locate(uri.as_sip().unwrap()).await
}

/// `(transport, address)` pairs, for compact assertions.
fn hops(targets: &[Target]) -> Vec<(TransportKind, String)> {
    targets.iter().map(|t| (t.kind, t.addr.to_string())).collect()
}

fn hop(kind: TransportKind, addr: &str) -> (TransportKind, String) {
    (kind, addr.to_string())
}

#[tokio::test]
async fn naptr_srv_a_chain_in_order() {
    let dns = TestDns::start().await;
    let targets = locate(&dns.locator(), "sip:alice@naptr.example.test").await.unwrap();
    // TCP (preference 10) before UDP (20); SCTP skipped; b.hosts expands to IPv4 then IPv6.
    assert_eq!(
        hops(&targets),
        vec![hop(Tcp, "192.0.2.2:5070"), hop(Tcp, "[2001:db8::2]:5070"), hop(Udp, "192.0.2.1:5080")]
    );
    // TLS verification is against the URI host, not the SRV target (RFC 5922 section 4).
    assert!(targets.iter().all(|t| t.host == "naptr.example.test"));
    assert!(!dns.asked("_sip._sctp.naptr.example.test", RecordType::SRV));
    assert!(!dns.asked("_sips._tcp.naptr.example.test", RecordType::SRV), "order 20 must not be consulted");
}

#[tokio::test]
async fn srv_only_respects_priorities_and_transport_preference() {
    let dns = TestDns::start().await;
    let targets = locate(&dns.locator(), "sip:srv.example.test").await.unwrap();
    // No NAPTR: `_sips._tcp` (absent), `_sip._tcp`, then `_sip._udp` with priority 10 before 20.
    assert_eq!(
        hops(&targets),
        vec![
            hop(Tcp, "192.0.2.2:5062"),
            hop(Tcp, "[2001:db8::2]:5062"),
            hop(Udp, "192.0.2.1:5060"),
            hop(Udp, "192.0.2.3:5060"),
        ]
    );
    assert!(dns.asked("srv.example.test", RecordType::NAPTR));
    assert!(dns.asked("_sips._tcp.srv.example.test", RecordType::SRV));
    assert!(!dns.asked("srv.example.test", RecordType::A), "SRV found: no A fallback");
}

#[tokio::test]
async fn a_and_aaaa_only_fall_back_to_default_ports() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    let targets = locate(&locator, "sip:plain.example.test").await.unwrap();
    assert_eq!(hops(&targets), vec![hop(Udp, "192.0.2.50:5060"), hop(Udp, "[2001:db8::50]:5060")]);
    let targets = locate(&locator, "sips:plain.example.test").await.unwrap();
    assert_eq!(hops(&targets), vec![hop(Tls, "192.0.2.50:5061"), hop(Tls, "[2001:db8::50]:5061")]);
    assert!(targets.iter().all(|t| t.host == "plain.example.test"));
}

#[tokio::test]
async fn numeric_ip_sends_no_query() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    let cases = [
        ("sip:192.0.2.9", hop(Udp, "192.0.2.9:5060")),
        ("sips:192.0.2.9", hop(Tls, "192.0.2.9:5061")),
        ("sip:[2001:db8::9]:5071;transport=tcp", hop(Tcp, "[2001:db8::9]:5071")),
    ];
    for (uri, expected) in cases {
        let targets = locate(&locator, uri).await.unwrap();
        assert_eq!(hops(&targets), vec![expected], "{uri}");
    }
    assert!(dns.queries().is_empty());
}

#[tokio::test]
async fn explicit_port_skips_naptr_and_srv() {
    let dns = TestDns::start().await;
    let targets = locate(&dns.locator(), "sip:srv.example.test:5099").await.unwrap();
    assert_eq!(hops(&targets), vec![hop(Udp, "192.0.2.40:5099")]);
    let types: Vec<RecordType> = dns.queries().into_iter().map(|(_, t)| t).collect();
    assert!(types.iter().all(|t| matches!(t, RecordType::A | RecordType::AAAA)), "{types:?}");
}

#[tokio::test]
async fn transport_param_picks_that_srv_only() {
    let dns = TestDns::start().await;
    let targets = locate(&dns.locator(), "sip:srv.example.test;transport=tcp").await.unwrap();
    assert_eq!(hops(&targets), vec![hop(Tcp, "192.0.2.2:5062"), hop(Tcp, "[2001:db8::2]:5062")]);
    assert!(!dns.asked("srv.example.test", RecordType::NAPTR));
    assert!(!dns.asked("_sip._udp.srv.example.test", RecordType::SRV));
}

#[tokio::test]
async fn sips_uses_tls_records_only() {
    let dns = TestDns::start().await;
    let targets = locate(&dns.locator(), "sips:naptr.example.test").await.unwrap();
    // Only the SIPS+D2T record qualifies, even though its order is higher.
    assert_eq!(hops(&targets), vec![hop(Tls, "192.0.2.3:5061")]);
    assert_eq!(targets[0].host, "naptr.example.test");
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    let first = locate(&locator, "sip:short.example.test").await.unwrap();
    assert_eq!(hops(&first), vec![hop(Udp, "192.0.2.60:5060")]);
    let asked = dns.queries().len();
    assert!(asked > 0);
    assert_eq!(locate(&locator, "sip:short.example.test").await.unwrap(), first);
    assert_eq!(dns.queries().len(), asked, "within the 1 s TTL nothing is asked again");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(locate(&locator, "sip:short.example.test").await.unwrap(), first);
    assert_eq!(dns.queries().len(), 2 * asked, "after the TTL the same questions again");
}

#[tokio::test]
async fn cached_answers_still_spread_by_weight() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    let mut first_a = 0;
    for _ in 0..200 {
        let targets = locate(&locator, "sip:weighted.example.test;transport=udp").await.unwrap();
        assert_eq!(targets.len(), 3, "a.hosts, and b.hosts with two addresses");
        first_a += usize::from(targets[0].addr.to_string() == "192.0.2.1:5060");
    }
    // 3:1 gives ~150 of 200; anything strictly between 100 and 195 shows both the draw and
    // the cache at work (the queries were asked once).
    assert!((100..195).contains(&first_a), "{first_a}");
    assert_eq!(dns.queries().iter().filter(|(_, t)| *t == RecordType::SRV).count(), 1);
}

#[tokio::test]
async fn nxdomain_is_not_found_and_cached() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    assert_eq!(locate(&locator, "sip:nope.example.test").await, Err(LocateError::NotFound));
    // NXDOMAIN on the name itself ends the search: nothing below it exists (RFC 8020).
    assert_eq!(dns.queries(), vec![("nope.example.test".to_string(), RecordType::NAPTR)]);
    assert_eq!(locate(&locator, "sip:nope.example.test").await, Err(LocateError::NotFound));
    assert_eq!(dns.queries().len(), 1, "the negative answer is cached");
}

#[tokio::test]
async fn unsupported_transports_are_refused() {
    let dns = TestDns::start().await;
    let locator = dns.locator();
    assert!(matches!(
        locate(&locator, "sip:plain.example.test;transport=sctp").await,
        Err(LocateError::Unsupported(_))
    ));
    assert!(matches!(
        locate(&locator, "sips:plain.example.test;transport=udp").await,
        Err(LocateError::Unsupported(_))
    ));
    assert!(dns.queries().is_empty());
}

#[tokio::test]
async fn a_silent_dns_times_out() {
    // Bound and never read: queries vanish without an ICMP error.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let locator =
        Locator::with_nameservers(vec![silent.local_addr().unwrap()]).unwrap().with_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(locate(&locator, "sip:plain.example.test").await, Err(LocateError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Callers spawn `locate` on the multi-threaded runtime: its future must be `Send`.
#[allow(dead_code)]
fn locate_future_is_send(locator: &Locator, uri: &sip::SipUri<'_>) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(locator.locate(uri));
}

/// RFC 2782 weighted selection on the pure core: weights 3 and 1 put the first record first
/// about 75% of the time; weight 0 beside a weighted record comes first only rarely.
#[test]
fn srv_weights_distribute_statistically() {
    let srv = |weight, target: &str| SrvRecord { priority: 10, weight, port: 5060, target: target.into(), ttl: 60 };
    let mut rng = StdRng::seed_from_u64(3263);
    let runs = 10_000;
    let records = [srv(1, "light"), srv(3, "heavy")];
    let heavy_first = (0..runs).filter(|_| order_srv(&records, &mut rng)[0].target == "heavy").count();
    let share = heavy_first as f64 / runs as f64;
    assert!((share - 0.75).abs() < 0.02, "{share}");

    // Weight 0 against weight 100: chosen first when the draw is 0, 1 time in 101.
    let records = [srv(100, "weighted"), srv(0, "zero")];
    let zero_first = (0..runs).filter(|_| order_srv(&records, &mut rng)[0].target == "zero").count();
    assert!(zero_first > 0 && zero_first < runs / 40, "{zero_first}");
}
