//! SIP transports (RFC 3261 section 18): UDP, TCP and TLS listeners, outbound connections, and
//! a connection table so responses and in-dialog requests reuse the connection a peer opened
//! (RFC 5923 alias semantics). The layer only moves bytes: it cuts messages out of streams
//! with `sip::frame` and hands every datagram or message to the switch as an [`Inbound`].
//!
//! Abuse limits live here because only here are they cheap: message size, connections in all
//! and per source address, idle connections reaped, TLS handshakes bounded in time.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The transport protocols of a SIP hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    /// Reliable transports need no retransmissions (RFC 3261 section 17).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }
    /// The transport token of a Via header.
    pub fn via_name(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }
    /// Parses a Via transport token or URI `transport` parameter.
    pub fn from_token(t: &str) -> Option<TransportKind> {
        if t.eq_ignore_ascii_case("udp") {
            Some(TransportKind::Udp)
        } else if t.eq_ignore_ascii_case("tcp") {
            Some(TransportKind::Tcp)
        } else if t.eq_ignore_ascii_case("tls") {
            Some(TransportKind::Tls)
        } else {
            None
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
        })
    }
}

/// One listener, written `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT` (IPv6 as `[::1]:5060`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    pub kind: TransportKind,
    pub addr: SocketAddr,
}

impl FromStr for ListenSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (kind, addr) = s.split_once(':').ok_or_else(|| format!("listener `{s}`: expected KIND:IP:PORT"))?;
        let kind =
            TransportKind::from_token(kind).ok_or_else(|| format!("listener `{s}`: unknown transport `{kind}`"))?;
        let addr = addr.parse().map_err(|e| format!("listener `{s}`: {e}"))?;
        Ok(ListenSpec { kind, addr })
    }
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.addr)
    }
}

/// Limits that keep the transport layer bounded under abuse.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Largest message accepted on a stream (header section and body); larger ones close the
    /// connection. Datagrams are bounded by UDP itself.
    pub max_message_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// A message begun on a stream must be complete within this time.
    pub message_timeout: Duration,
    /// Depth of the queue of stream messages toward the switch (a full queue makes the
    /// connections wait). Datagrams do not queue here: the switch reads its UDP listeners
    /// itself, and under overload the kernel drops them (see [`Transports::dropped_datagrams`]).
    pub inbound_queue: usize,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_message_size: 65_535,
            max_connections: 20_000,
            max_connections_per_ip: 256,
            idle_timeout: Duration::from_secs(300),
            tls_handshake_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(30),
            inbound_queue: 65_536,
        }
    }
}

/// Identifies one stream connection for the life of the process.
pub type ConnId = u64;

/// A datagram or framed stream message from the network.
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub kind: TransportKind,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection it came on (streams only); replies go back on it.
    pub conn: Option<ConnId>,
}

/// Bytes to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub kind: TransportKind,
    pub remote: SocketAddr,
    /// Prefer this connection (the one the request came on).
    pub conn: Option<ConnId>,
    /// For UDP: send from the socket bound to this address.
    pub local: Option<SocketAddr>,
    /// For TLS connections we open: the name to verify the peer's certificate against.
    pub server_name: Option<String>,
    pub data: Bytes,
}

struct Conn {
    kind: TransportKind,
    remote: SocketAddr,
    tx: Writer,
}

/// The sending side of a stream connection. The queue is unbounded so that messages keep
/// their order, and bounded in bytes instead: a peer that stops reading while more than
/// `MAX_QUEUED_BYTES` wait for it loses the connection rather than our memory.
#[derive(Clone)]
struct Writer {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// Held while connecting to one target.
type ConnectGate = Arc<tokio::sync::Mutex<()>>;

/// Who a stream connection is, for the messages it delivers.
#[derive(Clone, Copy)]
struct StreamEnds {
    id: ConnId,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
}

const MAX_QUEUED_BYTES: usize = 4 << 20;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Writer {
    fn push(&self, data: Bytes) -> io::Result<()> {
        let n = data.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "peer is not reading: send queue full"));
        }
        self.tx.send(data).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"))
    }
}

#[derive(Default)]
struct ConnTable {
    by_id: HashMap<ConnId, Conn>,
    by_remote: HashMap<(TransportKind, SocketAddr), ConnId>,
    /// Connections per source address, counting those still in their TLS handshake.
    per_ip: HashMap<IpAddr, usize>,
    /// Accepted connections not yet registered (TLS handshakes in progress).
    pending: usize,
}

impl ConnTable {
    fn release_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// A connection slot taken against the limits before a connection is usable (so TLS
/// handshakes count too); given back on drop unless a registered connection took it over.
struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
    live: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.live
            && let Ok(mut t) = self.inner.conns.lock()
        {
            t.pending -= 1;
            t.release_ip(self.ip);
        }
    }
}

/// A UDP listener with its bound address kept, so choosing the socket to send from costs no
/// `getsockname` per datagram.
struct UdpListener {
    sock: Arc<UdpPort>,
    local: SocketAddr,
    /// The kernel's count of datagrams this socket dropped because its receive buffer was
    /// full, as last reported with a received datagram (`SO_RXQ_OVFL`).
    overflows: AtomicU64,
}

struct Inner {
    udp: Vec<UdpListener>,
    conns: Mutex<ConnTable>,
    limits: TransportLimits,
    tls_client: Option<tokio_rustls::TlsConnector>,
    inbound: mpsc::Sender<Inbound>,
    next_id: AtomicU64,
    bound: Vec<ListenSpec>,
    /// One connect at a time per target, so concurrent sends to a new peer share a connection.
    connecting: Mutex<HashMap<(TransportKind, SocketAddr), ConnectGate>>,
}

/// The transport layer: every listener and connection. Cheap to clone.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

/// TLS material for the transport layer.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// Required when any listener is `tls:`.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Used for TLS connections the switch opens.
    pub client: Option<Arc<rustls::ClientConfig>>,
}

impl Transports {
    /// Binds every listener (so that, when this returns, each is up) and starts serving the
    /// stream listeners: their messages go to `inbound`. The UDP listeners are read by the
    /// switch's driver itself through [`Transports::datagram_reader`] (in batches, with no
    /// task or queue between the socket and the core).
    pub async fn bind(
        specs: &[ListenSpec],
        tls: TlsSettings,
        limits: TransportLimits,
        inbound: mpsc::Sender<Inbound>,
    ) -> io::Result<Transports> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut bound = Vec::new();
        for spec in specs {
            match spec.kind {
                TransportKind::Udp => {
                    let sock = UdpPort::bind(spec.addr).map_err(|e| ctx(e, spec))?;
                    tune_udp_listener(sock.socket(), spec);
                    let addr = sock.socket().local_addr()?;
                    bound.push(ListenSpec { kind: spec.kind, addr });
                    udp.push(UdpListener { sock: Arc::new(sock), local: addr, overflows: AtomicU64::new(0) });
                }
                TransportKind::Tcp | TransportKind::Tls => {
                    if spec.kind == TransportKind::Tls && tls.server.is_none() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("listener {spec}: TLS needs a certificate and key"),
                        ));
                    }
                    let l = TcpListener::bind(spec.addr).await.map_err(|e| ctx(e, spec))?;
                    let addr = l.local_addr()?;
                    bound.push(ListenSpec { kind: spec.kind, addr });
                    tcp.push((spec.kind, l));
                }
            }
        }
        let inner = Arc::new(Inner {
            udp,
            conns: Mutex::new(ConnTable::default()),
            limits,
            tls_client: tls.client.map(tokio_rustls::TlsConnector::from),
            inbound,
            next_id: AtomicU64::new(1),
            bound: bound.clone(),
            connecting: Mutex::new(HashMap::new()),
        });
        let acceptor = tls.server.map(tokio_rustls::TlsAcceptor::from);
        for (kind, l) in tcp {
            tokio::spawn(accept_loop(inner.clone(), l, kind, acceptor.clone()));
        }
        for spec in &bound {
            info!(listener = %spec, "SIP listener up");
        }
        Ok(Transports { inner })
    }

    /// The listeners as bound (port 0 resolved to the real port).
    pub fn listeners(&self) -> &[ListenSpec] {
        &self.inner.bound
    }

    /// Open stream connections.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().map(|t| t.by_id.len()).unwrap_or(0)
    }

    /// Datagrams the kernel dropped because a UDP listener's receive buffer was full (the
    /// switch did not read fast enough). The kernel reports them with the next datagram it
    /// queues on that listener, so they show once traffic goes on.
    pub fn dropped_datagrams(&self) -> u64 {
        self.inner.udp.iter().map(|l| l.overflows.load(Ordering::Relaxed)).sum()
    }

    /// The reader of the UDP listeners, for the switch's driver. It registers the listeners
    /// with the current runtime's reactor: make it on the runtime whose thread reads them, and
    /// keep one at a time (two would both be woken by every datagram).
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled.
    pub fn datagram_reader(&self) -> io::Result<DatagramReader> {
        // Deprecated because a type may change or close the descriptor it reports; `Watched`
        // holds the socket it names, which owns its one descriptor until the last holder
        // drops it, and the safe form keeps `unsafe` out of the crate.
        #[allow(deprecated)]
        let watch = |l: &UdpListener| AsyncFd::with_interest(Watched(l.sock.clone()), tokio::io::Interest::READABLE);
        let watched = self.inner.udp.iter().map(watch).collect::<io::Result<_>>()?;
        Ok(DatagramReader {
            inner: self.inner.clone(),
            watched,
            bufs: vec![vec![0u8; MAX_DATAGRAM]; RECV_BATCH],
            got: Vec::with_capacity(RECV_BATCH),
            first: 0,
            batch: RECV_BATCH_FIRST,
        })
    }

    /// Sends bytes. Streams: on the given connection, else on a connection already open to
    /// the remote address, else on a new one.
    pub async fn send(&self, out: Outbound) -> io::Result<()> {
        match out.kind {
            TransportKind::Udp => {
                let sock = self.udp_socket(out.local, out.remote)?;
                sock.send_to(&out.data, out.remote).await
            }
            TransportKind::Tcp | TransportKind::Tls => {
                let tx = match self.existing(out.kind, out.conn, out.remote) {
                    Some(tx) => tx,
                    None => self.connect_once(out.kind, out.remote, out.server_name.as_deref()).await?,
                };
                tx.push(out.data)
            }
        }
    }

    /// Queues bytes on an open stream connection without waiting, so messages for one
    /// connection leave in the order they were queued. `Ok(false)`: no connection is open
    /// (the caller connects with [`Transports::send`]).
    pub fn try_send_stream(&self, out: &Outbound) -> io::Result<bool> {
        let Some(tx) = self.existing(out.kind, out.conn, out.remote) else { return Ok(false) };
        tx.push(out.data.clone()).map(|()| true)
    }

    /// Connects unless a concurrent caller already did: the first one in connects, the others
    /// wait for it and use its connection.
    async fn connect_once(
        &self,
        kind: TransportKind,
        remote: SocketAddr,
        server_name: Option<&str>,
    ) -> io::Result<Writer> {
        let gate = {
            let mut c = self.inner.connecting.lock().map_err(|_| io::Error::other("poisoned"))?;
            c.entry((kind, remote)).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            match self.existing(kind, None, remote) {
                Some(tx) => Ok(tx),
                None => self.connect(kind, remote, server_name).await,
            }
        };
        if let Ok(mut c) = self.inner.connecting.lock()
            && c.get(&(kind, remote)).is_some_and(|g| Arc::strong_count(g) <= 2)
        {
            c.remove(&(kind, remote));
        }
        result
    }

    fn udp_socket(&self, local: Option<SocketAddr>, remote: SocketAddr) -> io::Result<&Arc<UdpPort>> {
        self.udp_listener(local, remote).map(|i| &self.inner.udp[i].sock)
    }

    /// The index of the UDP listener to send from: the one bound to `local`, else the first
    /// of the remote's address family.
    fn udp_listener(&self, local: Option<SocketAddr>, remote: SocketAddr) -> io::Result<usize> {
        let socks = &self.inner.udp;
        let by_local = local.and_then(|l| socks.iter().position(|s| s.local == l));
        by_local
            .or_else(|| socks.iter().position(|s| s.local.is_ipv4() == remote.is_ipv4()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no UDP listener for that address family"))
    }

    /// Sends datagrams without waiting, in as few system calls as the kernel allows
    /// (`sendmmsg` per listener). Datagrams from one listener leave in their order; when its
    /// socket buffer is full, what is left of them is sent by one task, in order. Errors of a
    /// single datagram are logged and the others still go.
    pub fn try_send_udp_batch(&self, batch: &[Outbound]) {
        if batch.is_empty() {
            return;
        }
        // The listener of each datagram, resolved once.
        let mut routed: Vec<(usize, &Outbound)> = Vec::with_capacity(batch.len());
        for out in batch {
            match self.udp_listener(out.local, out.remote) {
                Ok(i) => routed.push((i, out)),
                Err(e) => debug!(remote = %out.remote, error = %e, "send failed"),
            }
        }
        for (i, listener) in self.inner.udp.iter().enumerate() {
            let mine: Vec<&Outbound> = routed.iter().filter(|(l, _)| *l == i).map(|(_, o)| *o).collect();
            let mut at = 0;
            while at < mine.len() {
                let chunk = &mine[at..mine.len().min(at + SEND_BATCH)];
                match send_batch(&listener.sock, chunk) {
                    Ok(n) if n > 0 => at += n,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                        // The first datagram of the chunk was refused (an unreachable
                        // address and the like): it alone is lost.
                        debug!(remote = %chunk[0].remote, error = %e, "send failed");
                        at += 1;
                    }
                    _ => {
                        // The socket buffer is full: the rest leaves in order from a task.
                        let sock = listener.sock.clone();
                        let rest: Vec<(Bytes, SocketAddr)> =
                            mine[at..].iter().map(|o| (o.data.clone(), o.remote)).collect();
                        tokio::spawn(async move {
                            for (data, remote) in rest {
                                if let Err(e) = sock.send_to(&data, remote).await {
                                    debug!(%remote, error = %e, "send failed");
                                }
                            }
                        });
                        break;
                    }
                }
            }
        }
    }

    fn existing(&self, kind: TransportKind, conn: Option<ConnId>, remote: SocketAddr) -> Option<Writer> {
        let t = self.inner.conns.lock().ok()?;
        if let Some(c) = conn.and_then(|id| t.by_id.get(&id)) {
            return Some(c.tx.clone());
        }
        t.by_remote.get(&(kind, remote)).and_then(|id| t.by_id.get(id)).map(|c| c.tx.clone())
    }

    async fn connect(&self, kind: TransportKind, remote: SocketAddr, server_name: Option<&str>) -> io::Result<Writer> {
        let slot = self.inner.reserve(remote.ip()).ok_or_else(|| io::Error::other("connection limit reached"))?;
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(remote))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let inner = self.inner.clone();
        match kind {
            TransportKind::Tls => {
                let connector = self
                    .inner
                    .tls_client
                    .clone()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no TLS client configuration"))?;
                let name = server_name.map(str::to_owned).unwrap_or_else(|| remote.ip().to_string());
                let name = rustls_pki_types::ServerName::try_from(name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = tokio::time::timeout(inner.limits.tls_handshake_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                Ok(register_and_run(inner, slot, tls, kind, local, remote))
            }
            _ => Ok(register_and_run(inner, slot, tcp, kind, local, remote)),
        }
    }
}

fn ctx(e: io::Error, spec: &ListenSpec) -> io::Error {
    io::Error::new(e.kind(), format!("listener {spec}: {e}"))
}

/// Room for the largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6).
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams taken per `recvmmsg` at most: enough to empty the buffer of a burst in a few calls.
const RECV_BATCH: usize = 32;
/// Datagrams asked for at least: each `recvmmsg` lays out a header for every slot it asks for
/// (about 30 instructions a slot), which at a datagram or two a turn cost more than the
/// reading. The size doubles while batches come back full and otherwise keeps twice what the
/// last one found: at 4 and no headroom, 500 calls/s made 0.5 more `recvmmsg` a call (3.4 ->
/// 3.9) as batches of a turn's few datagrams filled.
const RECV_BATCH_FIRST: usize = 8;
/// Datagrams given to one `sendmmsg`.
const SEND_BATCH: usize = 64;
/// The receive buffer asked for each UDP listener: at 10,000 datagrams a second of about
/// 1 KiB, some 400 ms of traffic the switch can fall behind by before the kernel drops any.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Raises the listener's receive buffer (the default, about 200 KiB, overflows in bursts
/// under load) and asks the kernel to report with each datagram how many it dropped for want
/// of room. `SO_RCVBUFFORCE` (root, `CAP_NET_ADMIN`) ignores `net.core.rmem_max`; without the
/// privilege `SO_RCVBUF` gets at most that maximum.
fn tune_udp_listener(sock: &std::net::UdpSocket, spec: &ListenSpec) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &UDP_RECEIVE_BUFFER).is_err()
        && let Err(e) = setsockopt(sock, sockopt::RcvBuf, &UDP_RECEIVE_BUFFER)
    {
        warn!(listener = %spec, error = %e, "could not raise the UDP receive buffer");
    }
    if let Err(e) = setsockopt(sock, sockopt::RxqOvfl, &1) {
        warn!(listener = %spec, error = %e, "the kernel will not report dropped datagrams");
    }
}

/// One `sendmmsg` of datagrams from one socket: how many the kernel took (at least one), or
/// the error of the first.
fn send_batch(sock: &UdpPort, chunk: &[&Outbound]) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::os::fd::AsRawFd;
    if let [one] = chunk {
        // A lone datagram needs none of the batch's bookkeeping.
        return sock.socket().send_to(&one.data, one.remote).map(|_| 1);
    }
    let slices: Vec<[io::IoSlice<'_>; 1]> = chunk.iter().map(|o| [io::IoSlice::new(&o.data)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk.iter().map(|o| Some(SockaddrStorage::from(o.remote))).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let cmsgs: [ControlMessage<'_>; 0] = [];
    sendmmsg(sock.socket().as_raw_fd(), &mut headers, &slices, &addrs, cmsgs, MsgFlags::MSG_DONTWAIT)
        .map(|sent| sent.count())
        .map_err(io::Error::from)
}

/// A UDP listener's socket. Sends are plain non-blocking system calls from whatever thread
/// sends; only a send that finds the buffer full waits, by retrying (it never happens on a
/// healthy host). Readability is watched by one reactor alone, its [`DatagramReader`]'s, on the
/// thread that reads the socket: the switch's first core runs on a thread of its own, and a
/// socket also registered with the main runtime would wake that runtime for every datagram.
struct UdpPort(std::net::UdpSocket);

impl UdpPort {
    fn bind(addr: SocketAddr) -> io::Result<UdpPort> {
        let sock = std::net::UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        Ok(UdpPort(sock))
    }

    fn socket(&self) -> &std::net::UdpSocket {
        &self.0
    }

    /// Sends one datagram, waiting while the socket's buffer is full.
    async fn send_to(&self, data: &[u8], remote: SocketAddr) -> io::Result<()> {
        let mut wait = Duration::from_micros(500);
        let give_up = Instant::now() + Duration::from_secs(2);
        loop {
            match self.socket().send_to(data, remote) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < give_up => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A listener's socket as a reactor watches it (shared with the senders).
struct Watched(Arc<UdpPort>);

impl std::os::fd::AsRawFd for Watched {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.socket().as_raw_fd()
    }
}

/// Reads the UDP listeners for the switch's driver: waits until one has datagrams, then
/// takes them in batches (`recvmmsg`) into one set of buffers kept from call to call, and
/// copies each into its own [`Inbound`].
pub struct DatagramReader {
    inner: Arc<Inner>,
    /// Each listener's socket (in `inner.udp`'s order) as the reading thread's reactor watches
    /// it, for readability only: tokio's `UdpSocket` also asks for writability, and then every
    /// datagram sent raises a write-space event (`sock_wfree`, edge-triggered), so the thread
    /// parked in `epoll_wait` woke for nothing after each send, about once a call at 500/s.
    watched: Vec<AsyncFd<Watched>>,
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the last batch.
    got: Vec<(usize, SocketAddr)>,
    /// The listener read first on the next turn: turns go round, so a flood on one listener
    /// cannot use every turn's budget before the others are read.
    first: usize,
    /// Datagrams the next `recvmmsg` asks for: from [`RECV_BATCH_FIRST`] up to [`RECV_BATCH`],
    /// following how many the last ones found.
    batch: usize,
}

impl DatagramReader {
    /// Resolves when some UDP listener has datagrams to read (or an error to report); never,
    /// when there is no UDP listener.
    pub async fn readable(&self) {
        std::future::poll_fn(|cx| {
            for w in &self.watched {
                if w.poll_read_ready(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Reads up to `budget` datagrams from the listeners that have some, handing each to
    /// `deliver` with the time it was read; returns how many were read. A listener read
    /// until it has nothing left stops being ready, so [`DatagramReader::readable`] waits
    /// again; one cut short by the budget stays ready for the next turn.
    pub fn read(&mut self, budget: usize, mut deliver: impl FnMut(Inbound, std::time::Instant)) -> usize {
        let mut read = 0;
        let count = self.inner.udp.len();
        let first = self.first;
        self.first = (first + 1) % count.max(1);
        let order = (first..count).chain(0..first);
        for (l, watched) in order.map(|i| (&self.inner.udp[i], &self.watched[i])) {
            // Each error counts against the budget so a socket in trouble cannot spin us.
            while read < budget {
                let want = (budget - read).min(self.batch);
                let result = recv_batch(l, watched, &mut self.bufs[..want], &mut self.got);
                let full = self.got.len() == want;
                self.batch = if full {
                    (want * 2).clamp(RECV_BATCH_FIRST, RECV_BATCH)
                } else {
                    (self.got.len() * 2).next_power_of_two().clamp(RECV_BATCH_FIRST, RECV_BATCH)
                };
                match result {
                    // A short batch comes as WouldBlock with its datagrams (see `recv_batch`).
                    _ if !self.got.is_empty() => {
                        let now = std::time::Instant::now();
                        read += self.got.len();
                        for (i, &(n, remote)) in self.got.iter().enumerate() {
                            if n == 0 {
                                continue;
                            }
                            let data = Bytes::copy_from_slice(&self.bufs[i][..n]);
                            let msg = Inbound { data, kind: TransportKind::Udp, local: l.local, remote, conn: None };
                            deliver(msg, now);
                        }
                        if !full {
                            // The socket had no more: the next call would only say so.
                            break;
                        }
                    }
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP errors surface here on some systems; they are not fatal to a
                        // listener.
                        debug!(local = %l.local, error = %e, "UDP receive error");
                        read += 1;
                    }
                }
            }
        }
        read
    }
}

/// One `recvmmsg` into `bufs`: each datagram's length and sender, in the order of `bufs`.
/// The kernel's count of drops for want of buffer, when it reports one, is kept on the
/// listener.
fn recv_batch(
    l: &UdpListener,
    watched: &AsyncFd<Watched>,
    bufs: &mut [Vec<u8>],
    out: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
    use std::os::fd::AsRawFd;
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), Some(nix::cmsg_space!(u32)));
    let want = bufs.len();
    let mut slices: Vec<[io::IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [io::IoSliceMut::new(b)]).collect();
    out.clear();
    watched.try_io(tokio::io::Interest::READABLE, |sock| {
        let got = recvmmsg(sock.as_raw_fd(), &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(io::Error::from)?;
        for msg in got {
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::RxqOvfl(dropped) = c {
                        l.overflows.fetch_max(u64::from(dropped), Ordering::Relaxed);
                    }
                }
            }
            let remote = msg.address.as_ref().and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(*v4))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
            });
            // A datagram without an IP sender cannot be answered; its slot still counts.
            out.push((if remote.is_some() { msg.bytes } else { 0 }, remote.unwrap_or(l.local)));
        }
        // Without MSG_WAITFORONE, recvmmsg stops short only where the socket ran dry: saying
        // so (WouldBlock, the datagrams kept in `out`) lets the runtime clear the socket's
        // readiness now, instead of a turn later by another call that finds it empty. A
        // datagram arriving after this still wakes the reader: readiness is edge-triggered.
        if out.len() < want { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
    })
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    kind: TransportKind,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = inner.reserve(remote.ip()) else {
            debug!(%remote, "connection refused: limit reached");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        match (kind, &acceptor) {
            (TransportKind::Tls, Some(acc)) => {
                let acc = acc.clone();
                let inner = inner.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(inner.limits.tls_handshake_timeout, acc.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            register_and_run(inner, slot, tls, kind, local, remote);
                        }
                        Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
            _ => {
                register_and_run(inner.clone(), slot, tcp, kind, local, remote);
            }
        }
    }
}

impl Inner {
    /// Takes a connection slot if the limits allow one.
    fn reserve(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut t = self.conns.lock().ok()?;
        if t.by_id.len() + t.pending >= self.limits.max_connections
            || t.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_connections_per_ip
        {
            return None;
        }
        t.pending += 1;
        *t.per_ip.entry(ip).or_default() += 1;
        Some(Slot { inner: self.clone(), ip, live: true })
    }
}

/// Registers a connection on its slot and spawns its task.
fn register_and_run<S>(
    inner: Arc<Inner>,
    mut slot: Slot,
    stream: S,
    kind: TransportKind,
    local: SocketAddr,
    remote: SocketAddr,
) -> Writer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let tx = Writer { tx: sender, queued: queued.clone() };
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut t) = inner.conns.lock() {
        // The slot's per-IP count now belongs to the registered connection.
        t.pending -= 1;
        slot.live = false;
        t.by_id.insert(id, Conn { kind, remote, tx: tx.clone() });
        t.by_remote.insert((kind, remote), id);
    }
    drop(slot);
    debug!(%remote, %kind, id, "connection open");
    tokio::spawn(async move {
        let ends = StreamEnds { id, kind, local, remote };
        let reason = run_stream(&inner, stream, ends, rx, &queued).await;
        debug!(%remote, id, reason, "connection closed");
        if let Ok(mut t) = inner.conns.lock()
            && let Some(c) = t.by_id.remove(&id)
        {
            if t.by_remote.get(&(c.kind, c.remote)) == Some(&id) {
                t.by_remote.remove(&(c.kind, c.remote));
            }
            t.release_ip(c.remote.ip());
        }
    });
    tx
}

/// Reads messages off a stream and writes what is queued for it, until either side closes,
/// the peer sends something that cannot be framed, or it stays idle too long.
async fn run_stream<S>(
    inner: &Inner,
    mut stream: S,
    ends: StreamEnds,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: &AtomicUsize,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = inner.limits.max_message_size;
    let mut buf = BytesMut::with_capacity(4096);
    let mut deadline = Instant::now() + inner.limits.idle_timeout;
    // Keep-alive line-break bytes since the last message: a ping may arrive in pieces.
    let mut keepalive = 0usize;
    // When the unfinished message in `buf` began: a peer trickling bytes must still finish
    // a message in time (no slowloris).
    let mut partial_since: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    // The two deadlines' timers live as long as the stream and move with their deadlines: a
    // timer made anew for every message registers with the runtime's timer wheel each time.
    let idle = tokio::time::sleep_until(deadline);
    tokio::pin!(idle);
    let unfinished = tokio::time::sleep_until(far);
    tokio::pin!(unfinished);
    loop {
        let message_deadline = partial_since.map_or(far, |t| t + inner.limits.message_timeout);
        if idle.deadline() != deadline {
            idle.as_mut().reset(deadline);
        }
        if unfinished.deadline() != message_deadline {
            unfinished.as_mut().reset(message_deadline);
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => {
                match read {
                    Ok(0) => return "closed by peer",
                    Ok(_) => {}
                    Err(_) => return "read error",
                }
                deadline = Instant::now() + inner.limits.idle_timeout;
                loop {
                    match sip::frame(&buf, max) {
                        sip::Frame::Message(n) if n > max => return "message too large",
                        sip::Frame::Message(n) => {
                            keepalive = 0;
                            let data = buf.split_to(n).freeze();
                            let StreamEnds { id, kind, local, remote } = ends;
                            let msg = Inbound { data, kind, local, remote, conn: Some(id) };
                            if inner.inbound.send(msg).await.is_err() {
                                return "switch stopped";
                            }
                        }
                        sip::Frame::KeepAlive(n) => {
                            // RFC 5626 section 4.4.1: a double-CRLF ping gets a CRLF pong.
                            buf.advance(n);
                            keepalive += n;
                            while keepalive >= 4 {
                                keepalive -= 4;
                                if stream.write_all(b"\r\n").await.is_err() {
                                    return "write error";
                                }
                            }
                        }
                        sip::Frame::Incomplete => {
                            if buf.len() > max {
                                return "message too large";
                            }
                            break;
                        }
                        sip::Frame::Invalid(_) => return "unframeable stream",
                    }
                }
                partial_since = if buf.is_empty() { None } else { partial_since.or(Some(Instant::now())) };
            }
            out = rx.recv() => {
                let Some(data) = out else { return "closed locally" };
                queued.fetch_sub(data.len(), Ordering::Relaxed);
                // A peer that stops reading must not hold this task (and its queue) forever.
                match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return "write error",
                    Err(_) => return "peer stopped reading",
                }
                deadline = Instant::now() + inner.limits.idle_timeout;
            }
            () = &mut idle => return "idle",
            () = &mut unfinished => return "message not finished in time",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One UDP listener on loopback (its stream receiver, kept by the caller), its address, and
    /// a peer socket to send to it from.
    async fn udp_listener_and_peer() -> (Transports, SocketAddr, std::net::UdpSocket, mpsc::Receiver<Inbound>) {
        let spec: ListenSpec = "udp:127.0.0.1:0".parse().expect("spec");
        let (tx, rx) = mpsc::channel(1);
        let t = Transports::bind(&[spec], TlsSettings::default(), TransportLimits::default(), tx).await.expect("bind");
        let to = t.listeners()[0].addr;
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        (t, to, peer, rx)
    }

    /// However many come at once (one, a burst larger than any batch, a few again), every
    /// datagram is read once, in the order sent, as the batch size follows the traffic.
    #[tokio::test]
    async fn datagrams_are_read_once_in_order_whatever_the_batch() {
        let (t, to, peer, _rx) = udp_listener_and_peer().await;
        let mut reader = t.datagram_reader().expect("reader");
        let mut next = 0u32;
        let mut seen = Vec::new();
        for burst in [1, 200, 3, 1, 70, 5, 33, 1] {
            for _ in 0..burst {
                peer.send_to(format!("datagram {next}").as_bytes(), to).expect("send");
                next += 1;
            }
            while seen.len() < next as usize {
                tokio::time::timeout(Duration::from_secs(5), reader.readable()).await.expect("readable");
                reader.read(256, |m, _| seen.push(String::from_utf8(m.data.to_vec()).expect("text")));
            }
        }
        let sent: Vec<String> = (0..next).map(|i| format!("datagram {i}")).collect();
        assert_eq!(seen, sent);
        assert!(tokio::time::timeout(Duration::from_millis(100), reader.readable()).await.is_err(), "more than sent");
    }

    /// Datagrams the switch did not read in time are dropped by the kernel, and counted.
    #[tokio::test]
    async fn datagrams_dropped_by_a_full_receive_buffer_are_counted() {
        let (t, to, peer, _rx) = udp_listener_and_peer().await;
        // Far more than the receive buffer holds: nobody reads meanwhile.
        let datagram = [b'x'; 1200];
        for _ in 0..20_000 {
            let _ = peer.send_to(&datagram, to);
        }
        let mut reader = t.datagram_reader().expect("reader");
        let mut read = 0;
        let me = peer.local_addr().expect("addr");
        async fn drain(reader: &mut DatagramReader, me: SocketAddr) -> usize {
            let mut n = 0;
            while tokio::time::timeout(Duration::from_millis(300), reader.readable()).await.is_ok() {
                n += reader.read(256, |m, _| {
                    assert_eq!(m.data.len(), 1200);
                    assert_eq!(m.remote, me);
                });
            }
            n
        }
        read += drain(&mut reader, me).await;
        // The kernel reports its drops with the next datagram it queues.
        let _ = peer.send_to(&datagram, to);
        read += drain(&mut reader, me).await;
        assert!(read > 0, "nothing was read");
        assert!(t.dropped_datagrams() > 0, "the kernel's drops were not counted");
    }
}
