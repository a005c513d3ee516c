//! The transports and the switch driver, end to end over real sockets: a switch runs in-process
//! (`Transports::bind` + `Core` + `switch::run_sharded`) and the tests talk to it as a peer would, over
//! UDP, TCP and TLS on loopback only (127.0.0.1 and [::1], ephemeral ports). Every test is
//! bounded in time.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use engine::switch::Control;
use engine::transport::{Outbound, TlsSettings, TransportKind, TransportLimits};
use sip::{HeaderName, Message};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

mod support {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use engine::switch::{Control, Core, SwitchConfig, SwitchStats};
    use engine::transport::{ListenSpec, TlsSettings, TransportKind, TransportLimits, Transports};
    use sip::{Frame, Framing, Message};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::UdpSocket;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    /// The longest any single exchange may take.
    pub const STEP: Duration = Duration::from_secs(3);
    /// How long "nothing arrives" is watched for.
    pub const QUIET: Duration = Duration::from_millis(300);

    /// Runs a whole test under a deadline.
    pub async fn bounded(test: impl Future<Output = ()>) {
        timeout(Duration::from_secs(30), test).await.expect("test did not finish in time");
    }

    /// A switch running in-process.
    pub struct Switch {
        pub transports: Transports,
        pub stats: Arc<SwitchStats>,
        pub control: mpsc::Sender<Control>,
        pub done: JoinHandle<Arc<SwitchStats>>,
    }

    /// Call plumbing with no customers configured: every INVITE is refused by admission (407: a caller no connection knows by its address is asked for credentials).
    fn no_customers() -> engine::switch::CallPlumbing<engine::counters::LocalCounters> {
        use engine::admission::{Admitter, Policy};
        let plan = Arc::new(trunking::numbering::NumberingPlan::new());
        let config = Arc::new(trunking::config::Config::builder(plan).build());
        let policy = Arc::new(Policy { config, webhooks: Default::default(), generation: 1 });
        let (_keep, rx) = tokio::sync::watch::channel(policy);
        let realm = trunking::digest::DigestRealm::new("sip.opentrunk.test", [7; 32], 60_000);
        let counters = Arc::new(engine::counters::LocalCounters::new());
        let admitter = Arc::new(Admitter::new(rx, counters, realm, None));
        let (notices, _) = mpsc::unbounded_channel();
        engine::switch::CallPlumbing { admitter, notices, registrar: None, locator: None }
    }

    impl Switch {
        pub async fn start(specs: &[&str], tls: TlsSettings, limits: TransportLimits) -> Switch {
            Switch::start_draining_within(specs, tls, limits, Duration::from_secs(10)).await
        }

        pub async fn start_draining_within(
            specs: &[&str],
            tls: TlsSettings,
            limits: TransportLimits,
            drain_timeout: Duration,
        ) -> Switch {
            let core = Core::new(SwitchConfig::default(), 0x5eed);
            Switch::launch(specs, tls, limits, drain_timeout, vec![core]).await
        }

        /// As [`Switch::start`], with the switch's work spread over `cores` cores, every
        /// call dealt round them.
        pub async fn start_cores(specs: &[&str], cores: usize) -> Switch {
            let config = SwitchConfig { spread_from: 1, ..SwitchConfig::default() };
            let cores = Core::shards(config, 0x5eed, cores);
            let (tls, limits) = (TlsSettings::default(), TransportLimits::default());
            Switch::launch(specs, tls, limits, Duration::from_secs(10), cores).await
        }

        async fn launch(
            specs: &[&str],
            tls: TlsSettings,
            limits: TransportLimits,
            drain_timeout: Duration,
            cores: Vec<Core>,
        ) -> Switch {
            let specs: Vec<ListenSpec> = specs.iter().map(|s| s.parse().expect("listen spec")).collect();
            let (in_tx, in_rx) = mpsc::channel(limits.inbound_queue);
            let transports = Transports::bind(&specs, tls, limits, in_tx).await.expect("bind listeners");
            let stats = cores[0].stats();
            let (control, control_rx) = mpsc::channel(1);
            let done = tokio::spawn(engine::switch::run_sharded(
                cores,
                transports.clone(),
                in_rx,
                control_rx,
                drain_timeout,
                no_customers(),
            ));
            Switch { transports, stats, control, done }
        }

        /// The bound address of the first listener of this kind.
        pub fn addr(&self, kind: TransportKind) -> SocketAddr {
            self.transports.listeners().iter().find(|l| l.kind == kind).expect("listener of that kind").addr
        }

        /// Waits until the switch holds `n` stream connections.
        pub async fn wait_connections(&self, n: usize) {
            let t = &self.transports;
            timeout(STEP, async {
                while t.connection_count() != n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("connection count stayed {} instead of {n}", t.connection_count()));
        }
    }

    /// A request as a peer sends it, with `Content-Length: 0`. `branch` also names the dialog
    /// identifiers, so every request of a test can be told apart.
    pub fn request(method: &str, transport: &str, sent_by: &str, branch: &str, rport: bool) -> String {
        let rport = if rport { ";rport" } else { "" };
        format!(
            "{method} sip:switch@opentrunk.invalid SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {sent_by};branch=z9hG4bK{branch}{rport}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@example.invalid>;tag=f{branch}\r\n\
             To: <sip:switch@opentrunk.invalid>\r\n\
             Call-ID: {branch}@example.invalid\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:probe@{sent_by}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    pub fn options(transport: &str, sent_by: &str, branch: &str) -> String {
        request("OPTIONS", transport, sent_by, branch, true)
    }

    /// The ACK for a non-2xx final response to `request(INVITE, ..)` with the same arguments.
    pub fn ack(transport: &str, sent_by: &str, branch: &str, to_tag: &str) -> String {
        format!(
            "ACK sip:switch@opentrunk.invalid SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {sent_by};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@example.invalid>;tag=f{branch}\r\n\
             To: <sip:switch@opentrunk.invalid>;tag={to_tag}\r\n\
             Call-ID: {branch}@example.invalid\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// `req` (with `Content-Length: 0`) carrying `body`.
    pub fn with_body(req: String, body: &str) -> String {
        let len = format!("Content-Type: text/plain\r\nContent-Length: {}", body.len());
        req.replace("Content-Length: 0", &len) + body
    }

    pub fn branch_of(msg: &Message) -> String {
        msg.top_via().expect("Via").branch().expect("branch").trim_start_matches("z9hG4bK").to_owned()
    }

    pub fn to_tag(msg: &Message) -> String {
        msg.to().expect("To").tag().expect("To tag").to_owned()
    }

    /// A UDP peer on the loopback address of the given family.
    pub async fn udp_peer(v6: bool) -> UdpSocket {
        UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).await.expect("bind UDP peer")
    }

    pub async fn recv_udp(sock: &UdpSocket) -> (Message, SocketAddr) {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(STEP, sock.recv_from(&mut buf)).await.expect("no datagram in time").expect("recv");
        let msg = Message::parse(Bytes::copy_from_slice(&buf[..n]), Framing::Datagram).expect("datagram parses");
        (msg, from)
    }

    /// The next response with this status for this branch; others (100s, retransmissions of
    /// earlier finals) are skipped.
    pub async fn recv_status(sock: &UdpSocket, branch: &str, status: u16) -> Message {
        loop {
            let (msg, _) = recv_udp(sock).await;
            if msg.status() == Some(status) && branch_of(&msg) == branch {
                return msg;
            }
        }
    }

    /// Asserts that nothing arrives on `sock` for [`QUIET`].
    pub async fn assert_udp_silent(sock: &UdpSocket) {
        let mut buf = vec![0u8; 65_536];
        if let Ok(r) = timeout(QUIET, sock.recv_from(&mut buf)).await {
            let (n, from) = r.expect("recv");
            panic!("unexpected datagram from {from}: {:?}", String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// A stream peer: reads framed SIP messages off any stream.
    pub struct Peer<S> {
        pub stream: S,
        buf: BytesMut,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
        pub fn new(stream: S) -> Peer<S> {
            Peer { stream, buf: BytesMut::new() }
        }

        pub async fn send(&mut self, data: impl AsRef<[u8]>) {
            self.stream.write_all(data.as_ref()).await.expect("write");
            self.stream.flush().await.expect("flush");
        }

        async fn fill(&mut self) {
            let n =
                timeout(STEP, self.stream.read_buf(&mut self.buf)).await.expect("nothing read in time").expect("read");
            assert!(n > 0, "connection closed; had {:?}", String::from_utf8_lossy(&self.buf));
        }

        /// The next message on the stream.
        pub async fn message(&mut self) -> Message {
            loop {
                match sip::frame(&self.buf, 65_535) {
                    Frame::Message(n) => {
                        let data = self.buf.split_to(n).freeze();
                        return Message::parse(data, Framing::Stream).expect("response parses");
                    }
                    Frame::KeepAlive(n) => panic!("unexpected {n} keep-alive bytes"),
                    Frame::Incomplete => self.fill().await,
                    Frame::Invalid(e) => panic!("unframeable response: {e}"),
                }
            }
        }

        /// Exactly `n` raw bytes.
        pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
            while self.buf.len() < n {
                self.fill().await;
            }
            self.buf.split_to(n).to_vec()
        }

        /// Reads until the peer closes (EOF or reset) within `within`; returns what came before.
        pub async fn closed_within(&mut self, within: Duration) -> Vec<u8> {
            let r = timeout(within, async {
                loop {
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            let got = String::from_utf8_lossy(&self.buf).into_owned();
            assert!(r.is_ok(), "connection still open after {within:?}; got {got:?}");
            self.buf.split().to_vec()
        }

        /// Asserts that the connection stays open and silent for [`QUIET`].
        pub async fn assert_open_and_silent(&mut self) {
            match timeout(QUIET, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => {}
                Ok(Ok(0)) => panic!("connection closed"),
                Ok(Ok(_)) => panic!("unexpected bytes {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(Err(e)) => panic!("connection failed: {e}"),
            }
        }
    }

    /// A self-signed certificate for `localhost`: the server side and a client trusting it.
    pub fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("trust anchor");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    pub fn tls_server_only() -> TlsSettings {
        TlsSettings { server: Some(tls_configs().0), client: None }
    }
}

fn limits() -> TransportLimits {
    TransportLimits::default()
}

async fn tcp_peer(addr: SocketAddr) -> Peer<TcpStream> {
    let s = timeout(STEP, TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
    s.set_nodelay(true).expect("nodelay");
    Peer::new(s)
}

/// Asserts the switch's answer to `options(..)` carries the capability headers.
fn assert_options_200(resp: &Message) {
    assert_eq!(resp.status(), Some(200), "{resp}");
    let allow = resp.header(HeaderName::Allow).expect("Allow");
    for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
        assert!(allow.contains(m), "Allow `{allow}` lacks {m}");
    }
    assert_eq!(resp.header(HeaderName::Accept), Some("application/sdp"));
    assert!(resp.header(HeaderName::Supported).is_some(), "no Supported: {resp}");
    assert!(resp.header(HeaderName::Server).is_some_and(|s| s.starts_with("opentrunk/")), "Server: {resp}");
    assert!(!to_tag(resp).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 1. UDP

#[tokio::test]
async fn udp_options_answered_at_rport_with_received() {
    bounded(async {
        let sw = Switch::start(&["udp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let peer = udp_peer(false).await;
        // The sent-by port names another socket: the answer must go to the source port.
        let decoy = udp_peer(false).await;
        let sent_by = format!("client.example.invalid:{}", decoy.local_addr().unwrap().port());
        let req = options("UDP", &sent_by, "udp1");
        peer.send_to(req.as_bytes(), sw.addr(TransportKind::Udp)).await.unwrap();

        let (resp, from) = recv_udp(&peer).await;
        assert_eq!(from, sw.addr(TransportKind::Udp), "answered from the listener it was sent to");
        assert_options_200(&resp);
        assert_eq!(branch_of(&resp), "udp1");
        let via = resp.top_via().unwrap();
        assert_eq!(via.received(), Some("127.0.0.1"));
        assert_eq!(via.rport(), Some(Some(peer.local_addr().unwrap().port())));
        assert_eq!(resp.call_id().unwrap(), "udp1@example.invalid");
        assert_udp_silent(&decoy).await;
    })
    .await;
}

/// The switch's cores run on threads of their own, its UDP listeners watched there: while the
/// runtime that started it is held up (an API request's work, a slow task), datagrams are still
/// read and answered. The test blocks its own runtime's only thread and talks to the switch from
/// a plain socket.
#[tokio::test]
async fn udp_is_answered_while_the_runtime_that_started_the_switch_is_blocked() {
    bounded(async {
        let sw = Switch::start(&["udp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        // Once answered, the switch is up (its task has started the cores' threads).
        let first = udp_peer(false).await;
        let sent_by = first.local_addr().unwrap().to_string();
        first.send_to(options("UDP", &sent_by, "up").as_bytes(), sw.addr(TransportKind::Udp)).await.unwrap();
        assert_options_200(&recv_udp(&first).await.0);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(STEP)).unwrap();
        let mut buf = vec![0u8; 65_536];
        for i in 0..3 {
            let req = options("UDP", &peer.local_addr().unwrap().to_string(), &format!("held{i}"));
            peer.send_to(req.as_bytes(), sw.addr(TransportKind::Udp)).unwrap();
            // A blocking receive: this runtime runs nothing else meanwhile.
            let (n, from) = peer.recv_from(&mut buf).expect("no answer while the runtime was blocked");
            assert_eq!(from, sw.addr(TransportKind::Udp));
            let resp =
                Message::parse(Bytes::copy_from_slice(&buf[..n]), sip::Framing::Datagram).expect("a SIP response");
            assert_options_200(&resp);
            assert_eq!(branch_of(&resp), format!("held{i}"));
        }
    })
    .await;
}

#[tokio::test]
async fn udp_without_rport_answered_at_sent_by_port() {
    bounded(async {
        let sw = Switch::start(&["udp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let peer = udp_peer(false).await;
        let listener = udp_peer(false).await;
        let sent_by = listener.local_addr().unwrap().to_string();
        let req = request("OPTIONS", "UDP", &sent_by, "udp2", false);
        peer.send_to(req.as_bytes(), sw.addr(TransportKind::Udp)).await.unwrap();

        let (resp, _) = recv_udp(&listener).await;
        assert_options_200(&resp);
        let via = resp.top_via().unwrap();
        assert_eq!(via.rport(), None, "no rport unless asked");
        assert_eq!(via.received(), None, "sent-by already is the source address");
        assert_udp_silent(&peer).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. TCP

#[tokio::test]
async fn tcp_message_split_across_writes() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let req = options("TCP", "client.example.invalid:5060", "split");
        let b = req.as_bytes();
        // Cut inside the request line, inside a header, and between the final CRLFs.
        for chunk in [&b[..5], &b[5..60], &b[60..b.len() - 1], &b[b.len() - 1..]] {
            peer.send(chunk).await;
            sleep(Duration::from_millis(50)).await;
        }
        let resp = peer.message().await;
        assert_options_200(&resp);
        assert_eq!(branch_of(&resp), "split");
        let via = resp.top_via().unwrap();
        assert_eq!(via.received(), Some("127.0.0.1"));
        assert_eq!(via.rport(), Some(Some(peer.stream.local_addr().unwrap().port())));
        // Answered on the connection the request came on: the switch opened none of its own.
        assert_eq!(sw.transports.connection_count(), 1);
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 1);
    })
    .await;
}

#[tokio::test]
async fn tcp_two_messages_in_one_write() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let sent_by = "client.example.invalid:5060";
        let both = options("TCP", sent_by, "first") + &options("TCP", sent_by, "second");
        peer.send(both).await;
        let mut branches = vec![branch_of(&peer.message().await), branch_of(&peer.message().await)];
        branches.sort();
        assert_eq!(branches, ["first", "second"]);
        assert_eq!(sw.transports.connection_count(), 1);
        peer.assert_open_and_silent().await;
    })
    .await;
}

/// Production runs a multi-threaded runtime; so does this test. Probabilistic: with 300
/// INVITEs on one connection the 100 of some INVITE follows its 407 in nearly every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_responses_keep_their_order_on_a_connection() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let n = 300;
        let burst: String =
            (0..n).map(|i| request("INVITE", "TCP", "client.example.invalid", &format!("ord{i}"), false)).collect();
        peer.send(burst).await;
        let mut finals = std::collections::HashSet::new();
        let mut late = Vec::new();
        for _ in 0..2 * n {
            let m = peer.message().await;
            match m.status() {
                Some(100) if finals.contains(&branch_of(&m)) => late.push(branch_of(&m)),
                Some(100) => {}
                Some(407) => {
                    finals.insert(branch_of(&m));
                }
                s => panic!("unexpected status {s:?}"),
            }
        }
        assert!(late.is_empty(), "{} 100 Trying sent after their 407: {late:?}", late.len());
    })
    .await;
}

#[tokio::test]
async fn tcp_crlf_keepalive_gets_pong() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        // RFC 5626 section 4.4.1: a CRLFCRLF ping gets a single CRLF pong.
        peer.send("\r\n\r\n").await;
        assert_eq!(peer.bytes(2).await, b"\r\n");
        peer.assert_open_and_silent().await;
        // A ping in front of a request: pong, then the answer.
        peer.send("\r\n\r\n".to_owned() + &options("TCP", "client.example.invalid", "afterping")).await;
        assert_eq!(peer.bytes(2).await, b"\r\n");
        assert_options_200(&peer.message().await);
        // A lone CRLF (a pong, or stray line breaks) gets nothing back.
        peer.send("\r\n").await;
        peer.assert_open_and_silent().await;
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 1, "keep-alives never reach the switch");
    })
    .await;
}

#[tokio::test]
async fn tcp_crlf_keepalive_split_across_segments_gets_pong() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        // The stream carries CRLFCRLF; that it arrives in two reads must not matter.
        peer.send("\r\n").await;
        sleep(Duration::from_millis(100)).await;
        peer.send("\r\n").await;
        assert_eq!(peer.bytes(2).await, b"\r\n");
    })
    .await;
}

#[tokio::test]
async fn tcp_truncated_message_then_close_produces_nothing() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let req = options("TCP", "client.example.invalid", "short").replace("Content-Length: 0", "Content-Length: 100");
        peer.send(req + "only ten b").await;
        peer.stream.shutdown().await.expect("half-close");
        let got = peer.closed_within(STEP).await;
        assert!(got.is_empty(), "answered a message that never arrived whole: {:?}", String::from_utf8_lossy(&got));
        sw.wait_connections(0).await;
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 0, "the partial message reached the switch");
    })
    .await;
}

#[tokio::test]
async fn tcp_negative_content_length_closes_connection() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        sw.wait_connections(1).await;
        let req = options("TCP", "client.example.invalid", "neg").replace("Content-Length: 0", "Content-Length: -1");
        peer.send(req).await;
        let got = peer.closed_within(STEP).await;
        assert!(got.is_empty(), "unexpected answer: {:?}", String::from_utf8_lossy(&got));
        sw.wait_connections(0).await;
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. TLS

#[tokio::test]
async fn tls_options_answered_on_the_tls_connection() {
    bounded(async {
        let (server, client) = tls_configs();
        let tls = TlsSettings { server: Some(server), client: None };
        let sw = Switch::start(&["tls:127.0.0.1:0"], tls, limits()).await;
        let tcp = TcpStream::connect(sw.addr(TransportKind::Tls)).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = timeout(STEP, tokio_rustls::TlsConnector::from(client).connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let mut peer = Peer::new(stream);
        peer.send(options("TLS", "client.example.invalid:5061", "tls1")).await;
        let resp = peer.message().await;
        assert_options_200(&resp);
        assert_eq!(branch_of(&resp), "tls1");
        assert_eq!(resp.top_via().unwrap().transport, "TLS");
        // A keep-alive ping works inside TLS too.
        peer.send("\r\n\r\n").await;
        assert_eq!(peer.bytes(2).await, b"\r\n");
        assert_eq!(sw.transports.connection_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn tls_port_drops_plaintext_garbage() {
    bounded(async {
        let sw = Switch::start(&["tls:127.0.0.1:0"], tls_server_only(), limits()).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tls)).await;
        peer.send(options("TCP", "client.example.invalid", "plain")).await;
        // Well before the (default, 10 s) handshake timeout; a TLS alert may precede the close.
        let got = peer.closed_within(STEP).await;
        assert!(!got.starts_with(b"SIP/2.0"), "answered plaintext on a TLS port");
        assert_eq!(sw.transports.connection_count(), 0);
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 0);
    })
    .await;
}

#[tokio::test]
async fn tls_silent_client_dropped_after_handshake_timeout() {
    bounded(async {
        let limits = TransportLimits { tls_handshake_timeout: Duration::from_millis(300), ..limits() };
        let sw = Switch::start(&["tls:127.0.0.1:0"], tls_server_only(), limits).await;
        let started = Instant::now();
        let mut peer = tcp_peer(sw.addr(TransportKind::Tls)).await;
        let got = peer.closed_within(STEP).await;
        let waited = started.elapsed();
        assert!(got.is_empty());
        assert!(waited >= Duration::from_millis(290), "closed after {waited:?}, before the handshake timeout");
        assert!(waited < Duration::from_secs(2), "closed only after {waited:?}");
    })
    .await;
}

#[tokio::test]
async fn tls_handshakes_in_progress_count_against_per_ip_limit() {
    bounded(async {
        let limits = TransportLimits { max_connections_per_ip: 3, ..limits() };
        let sw = Switch::start(&["tls:127.0.0.1:0"], tls_server_only(), limits).await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(tcp_peer(sw.addr(TransportKind::Tls)).await);
        }
        sleep(Duration::from_millis(100)).await;
        // Three handshakes are pending from 127.0.0.1: a fourth connection is over the limit.
        let mut fourth = tcp_peer(sw.addr(TransportKind::Tls)).await;
        fourth.closed_within(Duration::from_secs(1)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. IPv6

#[tokio::test]
async fn ipv6_udp_options() {
    bounded(async {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            println!("skipped: ::1 is not available");
            return;
        }
        let sw = Switch::start(&["udp:[::1]:0"], TlsSettings::default(), limits()).await;
        let peer = udp_peer(true).await;
        let sent_by = format!("{}", peer.local_addr().unwrap());
        peer.send_to(options("UDP", &sent_by, "v6").as_bytes(), sw.addr(TransportKind::Udp)).await.unwrap();
        let (resp, from) = recv_udp(&peer).await;
        assert_eq!(from, sw.addr(TransportKind::Udp));
        assert_options_200(&resp);
        let via = resp.top_via().expect("Via of the response parses");
        assert_eq!(via.rport(), Some(Some(peer.local_addr().unwrap().port())));
        assert!(via.received().is_some_and(|r| r.contains("::1")), "received: {:?}", via.received());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Limits

#[tokio::test]
async fn per_ip_limit_refuses_the_fourth_connection() {
    bounded(async {
        let limits = TransportLimits { max_connections_per_ip: 3, ..limits() };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let addr = sw.addr(TransportKind::Tcp);
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(tcp_peer(addr).await);
        }
        sw.wait_connections(3).await;
        let mut fourth = tcp_peer(addr).await;
        let started = Instant::now();
        assert!(fourth.closed_within(Duration::from_secs(1)).await.is_empty());
        assert!(started.elapsed() < Duration::from_millis(500), "the fourth was not closed at once");
        for (i, p) in peers.iter_mut().enumerate() {
            let branch = format!("ip{i}");
            p.send(options("TCP", "client.example.invalid", &branch)).await;
            let resp = p.message().await;
            assert_options_200(&resp);
            assert_eq!(branch_of(&resp), branch);
        }
        assert_eq!(sw.transports.connection_count(), 3);
        // A place frees up when one closes.
        drop(peers.pop());
        sw.wait_connections(2).await;
        let mut again = tcp_peer(addr).await;
        again.send(options("TCP", "client.example.invalid", "again")).await;
        assert_options_200(&again.message().await);
    })
    .await;
}

#[tokio::test]
async fn total_connection_limit() {
    bounded(async {
        let limits = TransportLimits { max_connections: 2, ..limits() };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let addr = sw.addr(TransportKind::Tcp);
        let _a = tcp_peer(addr).await;
        let _b = tcp_peer(addr).await;
        sw.wait_connections(2).await;
        let mut third = tcp_peer(addr).await;
        assert!(third.closed_within(Duration::from_secs(1)).await.is_empty());
        assert_eq!(sw.transports.connection_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn idle_connection_is_reaped() {
    bounded(async {
        let limits = TransportLimits { idle_timeout: Duration::from_millis(300), ..limits() };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        peer.send(options("TCP", "client.example.invalid", "idle")).await;
        assert_options_200(&peer.message().await);
        assert_eq!(sw.transports.connection_count(), 1);
        let started = Instant::now();
        assert!(peer.closed_within(STEP).await.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200), "closed after {waited:?}, before it was idle");
        sw.wait_connections(0).await;
    })
    .await;
}

#[tokio::test]
async fn traffic_keeps_a_connection_from_being_reaped() {
    bounded(async {
        let limits = TransportLimits { idle_timeout: Duration::from_millis(300), ..limits() };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        for _ in 0..5 {
            sleep(Duration::from_millis(150)).await;
            peer.send("\r\n\r\n").await;
            assert_eq!(peer.bytes(2).await, b"\r\n");
        }
        assert_eq!(sw.transports.connection_count(), 1);
    })
    .await;
}

/// A peer trickling a message a few bytes at a time keeps the connection from being idle, but
/// must still finish the message within `message_timeout` (no slowloris).
#[tokio::test]
async fn a_message_trickled_too_slowly_closes_the_connection() {
    bounded(async {
        let limits = TransportLimits {
            idle_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_millis(600),
            ..limits()
        };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let req = options("TCP", "client.example.invalid", "trickle");
        let started = Instant::now();
        let mut closed = false;
        for chunk in req.as_bytes().chunks(4) {
            if peer.stream.write_all(chunk).await.is_err() {
                closed = true;
                break;
            }
            sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        assert!(closed || peer.closed_within(STEP).await.is_empty(), "still open after the whole message");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(500), "closed after {waited:?}, before its time was up");
        assert!(waited < Duration::from_secs(3), "closed only after {waited:?}");
        sw.wait_connections(0).await;
    })
    .await;
}

#[tokio::test]
async fn oversized_stream_message_closes_connection() {
    bounded(async {
        let limits = TransportLimits { max_message_size: 1024, ..limits() };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits).await;
        let addr = sw.addr(TransportKind::Tcp);

        // One byte over the limit, in one write.
        let mut peer = tcp_peer(addr).await;
        peer.send(sized(1025, "big")).await;
        assert!(peer.closed_within(STEP).await.is_empty());

        // A body far past the limit, declared up front and sent in pieces.
        let mut peer = tcp_peer(addr).await;
        let req = with_body(options("TCP", "client.example.invalid", "huge"), &"x".repeat(4000));
        for chunk in req.as_bytes().chunks(500) {
            if peer.stream.write_all(chunk).await.is_err() {
                break;
            }
        }
        assert!(peer.closed_within(STEP).await.is_empty());

        // A header section that never ends.
        let mut peer = tcp_peer(addr).await;
        let mut head = options("TCP", "client.example.invalid", "bighead");
        head.truncate(head.len() - 2);
        peer.send(head).await;
        for i in 0..40 {
            if peer.stream.write_all(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes()).await.is_err() {
                break;
            }
        }
        assert!(peer.closed_within(STEP).await.is_empty());

        // Exactly at the limit is fine.
        let mut peer = tcp_peer(addr).await;
        peer.send(sized(1024, "fits")).await;
        assert_options_200(&peer.message().await);
        assert_eq!(sw.stats.received.load(Ordering::Relaxed), 1);
    })
    .await;
}

/// An OPTIONS whose body brings it to exactly `total` bytes.
fn sized(total: usize, branch: &str) -> String {
    let req = || options("TCP", "client.example.invalid", branch);
    let mut body = total - req().len();
    loop {
        let msg = with_body(req(), &"x".repeat(body));
        match msg.len().cmp(&total) {
            std::cmp::Ordering::Equal => return msg,
            std::cmp::Ordering::Greater => body -= msg.len() - total,
            std::cmp::Ordering::Less => body += total - msg.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Outbound

fn outbound(kind: TransportKind, remote: SocketAddr, data: &'static [u8]) -> Outbound {
    Outbound { kind, remote, conn: None, local: None, server_name: None, data: Bytes::from_static(data) }
}

#[tokio::test]
async fn outbound_tcp_opens_one_connection_and_reuses_it() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = far.local_addr().unwrap();

        sw.transports.send(outbound(TransportKind::Tcp, remote, b"first ")).await.expect("first send");
        let (stream, _) = timeout(STEP, far.accept()).await.expect("accept in time").unwrap();
        let mut peer = Peer::new(stream);
        assert_eq!(peer.bytes(6).await, b"first ");
        assert_eq!(sw.transports.connection_count(), 1);

        sw.transports.send(outbound(TransportKind::Tcp, remote, b"second")).await.expect("second send");
        assert_eq!(peer.bytes(6).await, b"second");
        assert!(timeout(QUIET, far.accept()).await.is_err(), "a second connection was opened");
        assert_eq!(sw.transports.connection_count(), 1);

        // The connection the switch opened carries requests the other way too.
        peer.send(options("TCP", "far.example.invalid", "backward")).await;
        let resp = peer.message().await;
        assert_options_200(&resp);
        assert_eq!(branch_of(&resp), "backward");
        assert!(timeout(QUIET, far.accept()).await.is_err(), "the answer opened a new connection");

        // Once the far end closes, the next send opens a fresh connection.
        drop(peer);
        sw.wait_connections(0).await;
        sw.transports.send(outbound(TransportKind::Tcp, remote, b"third!")).await.expect("third send");
        let (stream, _) = timeout(STEP, far.accept()).await.expect("accept in time").unwrap();
        assert_eq!(Peer::new(stream).bytes(6).await, b"third!");
    })
    .await;
}

#[tokio::test]
async fn concurrent_sends_to_a_new_peer_share_one_connection() {
    bounded(async {
        let sw = Switch::start(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = far.local_addr().unwrap();
        let (a, b) = tokio::join!(
            sw.transports.send(outbound(TransportKind::Tcp, remote, b"a")),
            sw.transports.send(outbound(TransportKind::Tcp, remote, b"b")),
        );
        a.expect("first send");
        b.expect("second send");
        let mut accepted = Vec::new();
        while let Ok(r) = timeout(QUIET, far.accept()).await {
            accepted.push(r.unwrap().0);
        }
        assert_eq!(accepted.len(), 1, "connections opened to one peer");
        assert_eq!(sw.transports.connection_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn outbound_tls_verifies_the_server_name() {
    bounded(async {
        let (server, client) = tls_configs();
        let tls = TlsSettings { server: None, client: Some(client) };
        let sw = Switch::start(&["tcp:127.0.0.1:0"], tls, limits()).await;
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = far.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let accept = tokio::spawn(async move {
            let (tcp, _) = far.accept().await.unwrap();
            let mut peer = Peer::new(acceptor.accept(tcp).await.expect("server handshake"));
            peer.bytes(5).await
        });
        let out =
            Outbound { server_name: Some("localhost".to_owned()), ..outbound(TransportKind::Tls, remote, b"hello") };
        sw.transports.send(out).await.expect("send over TLS");
        assert_eq!(timeout(STEP, accept).await.expect("in time").unwrap(), b"hello");

        // Without the name the certificate is checked against the IP address, and fails.
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = far.local_addr().unwrap();
        let (server, _) = tls_configs();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            if let Ok((tcp, _)) = far.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let r = timeout(STEP, sw.transports.send(outbound(TransportKind::Tls, remote, b"nope!"))).await;
        assert!(r.expect("in time").is_err(), "a certificate for localhost passed for 127.0.0.1");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Drain

#[tokio::test]
async fn drain_answers_503_and_run_returns_when_idle() {
    bounded(async {
        let sw = Switch::start(&["udp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        let to = sw.addr(TransportKind::Udp);
        let peer = udp_peer(false).await;
        let sent_by = peer.local_addr().unwrap().to_string();

        // Before the drain: INVITE gets 100 then 407. Left unacknowledged, it keeps the drain
        // waiting (the 407 is retransmitted until its ACK).
        peer.send_to(request("INVITE", "UDP", &sent_by, "inv1", true).as_bytes(), to).await.unwrap();
        let (trying, _) = recv_udp(&peer).await;
        assert_eq!(trying.status(), Some(100));
        let forbidden = recv_status(&peer, "inv1", 407).await;

        sw.control.send(Control::Drain).await.unwrap();
        sleep(Duration::from_millis(50)).await;
        assert!(!sw.done.is_finished(), "run returned while an INVITE waits for its ACK");

        // New calls and pings are refused with Retry-After.
        peer.send_to(request("INVITE", "UDP", &sent_by, "inv2", true).as_bytes(), to).await.unwrap();
        let unavailable = recv_status(&peer, "inv2", 503).await;
        assert_eq!(unavailable.header(HeaderName::RetryAfter), Some("30"));
        peer.send_to(options("UDP", &sent_by, "opt").as_bytes(), to).await.unwrap();
        let resp = recv_status(&peer, "opt", 503).await;
        assert_eq!(resp.header(HeaderName::RetryAfter), Some("30"));
        assert!(resp.header(HeaderName::Allow).is_none());

        peer.send_to(ack("UDP", &sent_by, "inv1", &to_tag(&forbidden)).as_bytes(), to).await.unwrap();
        sleep(Duration::from_millis(50)).await;
        assert!(!sw.done.is_finished(), "run returned while the 503'd INVITE waits for its ACK");
        peer.send_to(ack("UDP", &sent_by, "inv2", &to_tag(&unavailable)).as_bytes(), to).await.unwrap();

        let stats = timeout(STEP, sw.done).await.expect("run returns once idle").expect("run did not panic");
        assert_eq!(stats.server_transactions.load(Ordering::Relaxed), 3);
    })
    .await;
}

/// A branch (and so a Call-ID, `<branch>@example.invalid`) whose call goes to core `index`:
/// it carries that core's mark, as the Call-IDs the core makes do (`engine::switch::core_mark`).
fn branch_for_core(prefix: &str, index: usize) -> String {
    let branch = format!("{prefix}~{index}");
    assert_eq!(engine::switch::core_mark(format!("{branch}@example.invalid").as_bytes()), Some(index));
    branch
}

#[tokio::test]
async fn a_switch_of_two_cores_answers_on_both_and_drains_only_when_both_have() {
    bounded(async {
        let sw = Switch::start_cores(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], 2).await;
        let to = sw.addr(TransportKind::Udp);
        let peer = udp_peer(false).await;
        let sent_by = peer.local_addr().unwrap().to_string();
        let (first, second) = (branch_for_core("a", 0), branch_for_core("b", 1));

        // An INVITE for each core: each gets 100 and 407 and waits for its ACK.
        let mut forbidden = Vec::new();
        for b in [&first, &second] {
            peer.send_to(request("INVITE", "UDP", &sent_by, b, true).as_bytes(), to).await.unwrap();
            forbidden.push(recv_status(&peer, b, 407).await);
        }
        // One gauge for the switch: each core adds its own transaction to it.
        assert_eq!(sw.stats.live_transactions.load(Ordering::Relaxed), 2);
        // A stream's messages reach the second core too.
        let mut stream = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        let over_tcp = branch_for_core("t", 1);
        stream.send(options("TCP", "client.example.invalid", &over_tcp)).await;
        assert_options_200(&stream.message().await);

        sw.control.send(Control::Drain).await.unwrap();
        // The order reaches the second core through the first, as messages may: wait until
        // both have it before asking for new calls.
        let both = async {
            while sw.stats.cores_draining.load(Ordering::Relaxed) < 2 {
                sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(STEP, both).await.expect("both cores draining");
        // Both cores refuse new calls now.
        for b in [branch_for_core("c", 0), branch_for_core("d", 1)] {
            peer.send_to(request("INVITE", "UDP", &sent_by, &b, true).as_bytes(), to).await.unwrap();
            let unavailable = recv_status(&peer, &b, 503).await;
            peer.send_to(ack("UDP", &sent_by, &b, &to_tag(&unavailable)).as_bytes(), to).await.unwrap();
        }
        // The first core's INVITE is over; the second's still waits: so does the drain.
        peer.send_to(ack("UDP", &sent_by, &first, &to_tag(&forbidden[0])).as_bytes(), to).await.unwrap();
        sleep(Duration::from_millis(300)).await;
        assert!(!sw.done.is_finished(), "run returned while the second core's INVITE waits for its ACK");
        peer.send_to(ack("UDP", &sent_by, &second, &to_tag(&forbidden[1])).as_bytes(), to).await.unwrap();

        let stats = timeout(STEP, sw.done).await.expect("run returns once both cores are idle").unwrap();
        // One set of statistics for the switch: 2 INVITEs, 1 OPTIONS, 2 refused INVITEs.
        assert_eq!(stats.server_transactions.load(Ordering::Relaxed), 5);
    })
    .await;
}

#[tokio::test]
async fn drain_gives_up_after_drain_timeout() {
    bounded(async {
        let drain = Duration::from_millis(300);
        let sw = Switch::start_draining_within(&["tcp:127.0.0.1:0"], TlsSettings::default(), limits(), drain).await;
        let mut peer = tcp_peer(sw.addr(TransportKind::Tcp)).await;
        peer.send(request("INVITE", "TCP", "client.example.invalid", "stuck", false)).await;
        assert_eq!(peer.message().await.status(), Some(100));
        assert_eq!(peer.message().await.status(), Some(407));
        // Never acknowledged: the drain waits for it until the drain timeout.
        let started = Instant::now();
        sw.control.send(Control::Drain).await.unwrap();
        timeout(STEP, sw.done).await.expect("run returns at the drain timeout").unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(290), "returned after {waited:?}");
    })
    .await;
}

#[tokio::test]
async fn drain_with_nothing_busy_returns_at_once() {
    bounded(async {
        let sw = Switch::start(&["udp:127.0.0.1:0"], TlsSettings::default(), limits()).await;
        // An answered OPTIONS lingers to absorb retransmissions (Timer J) but is not busy.
        let peer = udp_peer(false).await;
        let sent_by = peer.local_addr().unwrap().to_string();
        peer.send_to(options("UDP", &sent_by, "o").as_bytes(), sw.addr(TransportKind::Udp)).await.unwrap();
        assert_options_200(&recv_udp(&peer).await.0);
        sw.control.send(Control::Drain).await.unwrap();
        let stats = timeout(Duration::from_secs(1), sw.done).await.expect("run returns at once").unwrap();
        assert_eq!(stats.received.load(Ordering::Relaxed), 1);
    })
    .await;
}
