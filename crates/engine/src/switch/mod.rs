//! The switch core: every message from the transports passes the door (`sip::inspect`), finds
//! or creates its transaction, and reaches the transaction user; what must be sent comes back
//! out as [`Outbound`]. The core owns no socket and reads no clock: `now` is passed in, so the
//! whole of it runs under a test with a fake clock. [`run_sharded`] is the thin async driver.

mod calls;
mod placement;
mod table;
mod timers;
mod uac;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sip::headers::HeaderName;
use sip::transaction::{ServerEvent, ServerState, ServerTransaction, Timers, TransactionKey};
use sip::{Framing, Message, Method, Policy, Verdict};
use tracing::{debug, info, warn};
use trunking::catalog::Reason;

use crate::admission::Direction;
use crate::transport::{ConnId, Inbound, Outbound, TransportKind};

pub use calls::{AttemptReport, CallNotice, CallReport, CallSummary, EndedBy};
pub use placement::{Placement, PlacementNote, core_mark};
pub use uac::{UacChange, UacConnection};

/// The core's tables. Most are keyed by what the network chooses (transaction keys, Call-IDs,
/// tags): the hasher stays keyed, with a per-process random seed, so colliding keys cannot be
/// computed in advance (HashDoS); but foldhash, not SipHash-1-3, which took 2.5% of the
/// process at 2,000 calls/s for a guarantee these tables do not need (nothing here is secret).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// What the core needs to know; the binary fills it from configuration.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    pub timers: Timers,
    pub policy: Policy,
    /// `Server` / `User-Agent` product token.
    pub product: String,
    /// Seconds a client should wait before retrying while we drain or are full.
    pub drain_retry_after: u32,
    /// Live transactions beyond which new requests get `503` statelessly: memory stays
    /// bounded under a flood (each lives up to 64*T1 after its answer).
    pub max_transactions: usize,
    pub calls: CallTimers,
    /// Our host as peers must reach it (Via sent-by, Contact, From host toward carriers).
    pub local_host: String,
    /// On a switch of several cores: the datagrams (or queued stream messages) a turn of the
    /// first core must hold for its new calls to be dealt round the cores; in shorter turns
    /// they stay on the first ([`Placement`]). 1 deals every call.
    pub spread_from: usize,
    /// The listeners as bound: requests we send leave from the one of their transport.
    pub listeners: Vec<(TransportKind, SocketAddr)>,
}

/// How long a call may wait for its peers.
#[derive(Clone, Copy, Debug)]
pub struct CallTimers {
    /// No provisional answer (above 100) from a route within this: try the next route.
    pub timeout_1xx: Duration,
    /// No final answer within this: the call ends `408`.
    pub timeout_2xx: Duration,
    /// An answered call with no signalling for this long is torn down.
    pub max_duration: Duration,
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            timeout_1xx: Duration::from_secs(3),
            timeout_2xx: Duration::from_secs(90),
            max_duration: Duration::from_secs(14_400),
        }
    }
}

impl SwitchConfig {
    /// The listener requests of transport `kind` leave from.
    fn listener(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.listeners.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Our Via sent-by for transport `kind`.
    fn sent_by(&self, kind: TransportKind) -> String {
        let port = self.listener(kind).or_else(|| self.listeners.first().map(|l| l.1)).map_or(5060, |a| a.port());
        format!("{}:{port}", self.host_for_uri())
    }

    fn host_for_uri(&self) -> String {
        if self.local_host.contains(':') { format!("[{}]", self.local_host) } else { self.local_host.clone() }
    }

    /// Our Contact address (host and UDP port, else the first listener's).
    fn local(&self) -> String {
        self.sent_by(TransportKind::Udp)
    }
}

impl Default for SwitchConfig {
    fn default() -> Self {
        // Only what the switch serves today; the rest answers 501 with this list in Allow.
        let methods = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "REGISTER"]
            .iter()
            .map(|m| (*m).to_owned())
            .collect();
        let policy = Policy { methods, ..Policy::default() };
        SwitchConfig {
            timers: Timers::default(),
            policy,
            product: concat!("opentrunk/", env!("CARGO_PKG_VERSION")).to_owned(),
            drain_retry_after: 30,
            max_transactions: 200_000,
            calls: CallTimers::default(),
            local_host: "127.0.0.1".to_owned(),
            listeners: Vec::new(),
            spread_from: SPREAD_FROM,
        }
    }
}

/// [`SwitchConfig::spread_from`]'s default: sixteen datagrams waiting, about a quarter of a
/// millisecond of the first core's work. With two cores on a 2-vCPU guest it dealt 4-16 of
/// 7,500 calls at 500 calls/s (CPU a call as one core's), 1% at 1,000/s and 8% at 2,000/s (4-15%
/// more CPU a call); from 8, 13% at 1,000/s for 8-24% more, and from 4, 16% more at 500/s
/// (docs/performance.md, fifteenth round).
pub const SPREAD_FROM: usize = 16;

/// Counters an operator (and a test) reads, shared with the API's `/metrics` while the core
/// updates them.
#[derive(Debug, Default)]
pub struct SwitchStats {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
    /// Server transactions created: a retransmitted request must not create another.
    pub server_transactions: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    pub stray_responses: AtomicU64,
    /// Server transactions alive now.
    pub live_transactions: AtomicU64,
    /// Client transactions created, and alive now.
    pub client_transactions: AtomicU64,
    pub live_client_transactions: AtomicU64,
    /// Requests we sent again (client transactions' timers, ACKs repeated for repeated
    /// finals and 2xx) and responses we sent again (server transactions, our 2xx until its ACK).
    pub requests_retransmitted: AtomicU64,
    pub responses_retransmitted: AtomicU64,
    /// New INVITEs, by [`CALL_DIRECTIONS`]: counted when admission decides (the direction is
    /// known then), or when refused before it. Each ends up answered or failed.
    pub calls_attempted: [AtomicU64; 3],
    pub calls_answered: [AtomicU64; 3],
    /// Calls that got a final response other than 2xx, by status and product reason. A map
    /// under a lock, touched once per failed call: the pairs seen are few.
    calls_failed: Mutex<BTreeMap<(u16, Option<Reason>), u64>>,
    /// Requests refused with 503 because the transaction table was full.
    pub overloaded: AtomicU64,
    /// Calls admitted, and calls alive now.
    pub calls: AtomicU64,
    pub calls_active: AtomicU64,
    /// Calls holding channels now: back to 0 when every call has ended.
    pub channels_held: AtomicU64,
    /// Cores that have begun to drain (a drain reaches every core; none comes back from it).
    pub cores_draining: AtomicU64,
    /// New calls the first core dealt to another ([`Placement`]), and callers' Call-IDs it
    /// remembers as another core's now.
    pub calls_dealt: AtomicU64,
    pub call_ids_dealt: AtomicU64,
}

/// The `direction` label of the call counters, by index; `unknown` for calls refused before
/// their direction was known (unidentified callers, loops, overload, drain).
pub const CALL_DIRECTIONS: [&str; 3] = ["outbound", "inbound", "unknown"];

fn direction_index(direction: Option<Direction>) -> usize {
    match direction {
        Some(Direction::Outbound) => 0,
        Some(Direction::Inbound) => 1,
        None => 2,
    }
}

impl SwitchStats {
    /// Calls that failed, by status and product reason, in that order.
    pub fn calls_failed(&self) -> Vec<(u16, Option<Reason>, u64)> {
        let failed = self.calls_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.iter().map(|(&(status, reason), &n)| (status, reason, n)).collect()
    }

    /// Calls of one direction ([`CALL_DIRECTIONS`]): attempted and answered.
    pub fn calls_by_direction(&self) -> [(&'static str, u64, u64); 3] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        std::array::from_fn(|i| (CALL_DIRECTIONS[i], v(&self.calls_attempted[i]), v(&self.calls_answered[i])))
    }

    fn call_attempted(&self, direction: Option<Direction>) {
        bump(&self.calls_attempted[direction_index(direction)]);
    }

    fn call_answered(&self, direction: Option<Direction>) {
        bump(&self.calls_answered[direction_index(direction)]);
    }

    fn call_failed(&self, status: u16, reason: Option<Reason>) {
        let mut failed = self.calls_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *failed.entry((status, reason)).or_insert(0) += 1;
    }

    /// A call refused before admission could tell its direction: attempted and failed.
    fn call_refused_early(&self, status: u16, reason: Option<Reason>) {
        self.call_attempted(None);
        self.call_failed(status, reason);
    }

    /// Name, help and value of every unlabelled counter, for the Prometheus text format.
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 15] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("opentrunk_sip_messages_received_total", "counter", "SIP messages received", v(&self.received)),
            ("opentrunk_sip_messages_accepted_total", "counter", "messages past the door", v(&self.accepted)),
            ("opentrunk_sip_messages_rejected_total", "counter", "requests answered at the door", v(&self.rejected)),
            ("opentrunk_sip_messages_dropped_total", "counter", "messages dropped unanswered", v(&self.dropped)),
            (
                "opentrunk_sip_server_transactions_total",
                "counter",
                "server transactions created",
                v(&self.server_transactions),
            ),
            (
                "opentrunk_sip_client_transactions_total",
                "counter",
                "client transactions created",
                v(&self.client_transactions),
            ),
            (
                "opentrunk_sip_retransmissions_absorbed_total",
                "counter",
                "requests absorbed by a transaction",
                v(&self.retransmissions_absorbed),
            ),
            (
                "opentrunk_sip_stray_responses_total",
                "counter",
                "responses matching no transaction",
                v(&self.stray_responses),
            ),
            ("opentrunk_sip_overload_rejections_total", "counter", "503s: transaction table full", v(&self.overloaded)),
            ("opentrunk_calls_total", "counter", "calls admitted", v(&self.calls)),
            (
                "opentrunk_sip_calls_dealt_total",
                "counter",
                "new calls the first switch core handed to another",
                v(&self.calls_dealt),
            ),
            (
                "opentrunk_sip_call_ids_dealt",
                "gauge",
                "callers' Call-IDs routed to a switch core other than the first",
                v(&self.call_ids_dealt),
            ),
            ("opentrunk_calls_active", "gauge", "calls alive", v(&self.calls_active)),
            ("opentrunk_channels_held", "gauge", "calls holding channels", v(&self.channels_held)),
            (
                "opentrunk_sip_cores_draining",
                "gauge",
                "switch cores draining (refusing new calls)",
                v(&self.cores_draining),
            ),
        ]
    }
}

/// One core's place among a switch's cores.
#[derive(Clone, Copy, Debug)]
struct Shard {
    index: usize,
    count: usize,
}

/// FNV-1a of a Call-ID's bytes: which datagrams of a turn are one call's (`setup_first`).
fn call_id_hash(call_id: &[u8]) -> u64 {
    call_id.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A gauge of [`SwitchStats`] as one core last published it. The cores of a sharded switch
/// share one `SwitchStats`: each adds the change in its own count, so the gauge is their sum.
#[derive(Debug, Default)]
struct GaugeShare(std::cell::Cell<u64>);

impl GaugeShare {
    fn publish(&self, gauge: &AtomicU64, now: usize) {
        let now = now as u64;
        let last = self.0.replace(now);
        if now != last {
            gauge.fetch_add(now.wrapping_sub(last), Ordering::Relaxed);
        }
    }
}

/// This core's shares of the shared gauges.
#[derive(Debug, Default)]
struct GaugeShares {
    server_transactions: GaugeShare,
    client_transactions: GaugeShare,
    calls: GaugeShare,
    channels: GaugeShare,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds what a transaction sent again during one step (its count went from `before` to `after`).
fn add_retransmissions(c: &AtomicU64, before: u32, after: u32) {
    if after > before {
        c.fetch_add(u64::from(after - before), Ordering::Relaxed);
    }
}

/// Where responses to a request go (RFC 3261 section 18.2.2, RFC 3581).
#[derive(Clone, Copy, Debug)]
struct ReplyRoute {
    kind: TransportKind,
    remote: SocketAddr,
    local: SocketAddr,
    conn: Option<ConnId>,
}

impl ReplyRoute {
    fn for_request(msg: &Message, from: &Inbound) -> ReplyRoute {
        let mut remote = from.remote;
        if !from.kind.is_reliable()
            && let Ok(via) = msg.top_via()
        {
            // Unreliable: the source address, at the rport if the client asked for it, else
            // at the sent-by port (default 5060); a multicast maddr wins over both.
            // `Via::rport` and `Via::maddr` (the first of each), in one pass over the parameters.
            let (mut rport, mut maddr) = (false, None);
            for (name, value) in via.params.iter() {
                if !rport && name.eq_ignore_ascii_case("rport") {
                    rport = true;
                } else if maddr.is_none() && name.eq_ignore_ascii_case("maddr") {
                    maddr = Some(value);
                }
            }
            let port = if rport { from.remote.port() } else { via.port.unwrap_or(5060) };
            // maddr is honoured only for multicast groups, its purpose: a unicast maddr would
            // let anyone aim our responses at a third party (reflection).
            remote = match maddr.flatten().and_then(|m| m.parse::<IpAddr>().ok()).filter(IpAddr::is_multicast) {
                Some(ip) => SocketAddr::new(ip, via.port.unwrap_or(5060)),
                None => SocketAddr::new(from.remote.ip(), port),
            };
        }
        ReplyRoute { kind: from.kind, remote, local: from.local, conn: from.conn }
    }

    fn outbound(&self, data: Bytes) -> Outbound {
        Outbound {
            kind: self.kind,
            remote: self.remote,
            conn: self.conn,
            local: Some(self.local),
            server_name: None,
            data,
        }
    }
}

struct ServerEntry {
    /// In place: the table's slab holds live entries only (its index holds the spare buckets).
    txn: ServerTransaction,
    route: ReplyRoute,
    final_sent: bool,
    /// The deadline this transaction has in the core's timer wheel: one entry at a time.
    scheduled: Option<Instant>,
}

/// What a deadline on the timer wheel belongs to: a transaction by its place in its table
/// (reached without hashing; a stale one finds nothing), a call or UAC registration by id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Due {
    Server(table::Slot),
    Client(table::Slot),
    Call(u64),
    Uac(u64),
}

/// The methods the transaction user tells apart today.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Options,
    Invite,
    Cancel,
    Register,
    Other,
}

/// The sans-I/O switch core.
pub struct Core {
    config: SwitchConfig,
    servers: table::TransactionTable<ServerEntry>,
    /// Deadlines of transactions and calls (a timing wheel). Each holds one entry at a time (the
    /// `scheduled` of its table entry): a deadline moved later waits for the earlier entry to
    /// fire and re-arms then; entries of ended ones are skipped when taken.
    timers: timers::TimerWheel<Due>,
    outbox: VecDeque<Outbound>,
    draining: bool,
    stats: Arc<SwitchStats>,
    gauges: GaugeShares,
    /// Which of the switch's cores this is, of how many: the Call-IDs this core makes carry
    /// its mark ([`core_mark`]), so every message of its calls comes back here.
    shard: Shard,
    /// On a core other than the first: callers' Call-IDs whose calls started or ended here,
    /// for the first core's [`Placement`].
    placement_notes: VecDeque<PlacementNote>,
    tag_seed: u64,
    /// Our Via up to the branch's random part, by transport (UDP, TCP, TLS), and our Contact
    /// address: made once, not formatted again for every request we send.
    via_prefix: [String; 3],
    /// What every call's setup shares: our host (and port) for Contact and From, and the
    /// product token (`SwitchConfig::product`).
    local: Arc<str>,
    product: Arc<str>,
    /// A moment and the wall-clock time at it: records and events carry wall-clock times.
    wall_base: (Instant, SystemTime),
    clients: table::TransactionTable<calls::ClientEntry>,
    /// Boxed: a call entry is about 2 KB, moved out and back on every step of its call, and
    /// the table's spare buckets would each cost one.
    calls: HashMap<u64, Box<calls::CallEntry>>,
    /// Calls over but for their INVITE client transactions' last 64*T1: only the ACKs sent
    /// for 2xx responses are kept, not the call (a zero-length call would otherwise hold its
    /// whole state for 32 s after its BYE).
    ended: HashMap<u64, calls::EndedCall>,
    pending: HashMap<u64, calls::Pending>,
    admissions: VecDeque<crate::admission::AdmissionRequest>,
    notices: VecDeque<CallNotice>,
    dialogs: HashMap<calls::DialogKey, (u64, crate::call::Side)>,
    /// Our B-legs' Call-IDs: one arriving as a new call is a loop.
    b_call_ids: HashSet<Box<str>>,
    /// The caller's INVITE transaction of each call, for its CANCEL.
    a_invites: HashMap<TransactionKey, u64>,
    next_call: u64,
    next_txn: u64,
    /// Calls admitted and not yet ended, and those holding their channels (kept as counts:
    /// the gauges are published after every call step).
    live_calls: usize,
    leases_held: usize,
    registrations: VecDeque<crate::registrar::RegistrationRequest>,
    pending_registrations: HashMap<u64, TransactionKey>,
    uacs: HashMap<u64, uac::UacEntry>,
    uac_locates: VecDeque<(u64, String)>,
    uac_changes: VecDeque<UacChange>,
}

impl Core {
    pub fn new(config: SwitchConfig, seed: u64) -> Core {
        let via_prefix = [TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls]
            .map(|kind| format!("SIP/2.0/{} {};branch=z9hG4bK", kind.via_name(), config.sent_by(kind)));
        let local = config.local();
        let product: Arc<str> = config.product.as_str().into();
        // The tables are sized for the most transactions the switch takes (the server table
        // never grows past `max_transactions`; our client transactions are about half as
        // many): growing one rehashed every entry at once, and at thousands of calls a second
        // each doubling held up every message behind it for milliseconds. Memory is reserved,
        // not touched, until used (see `table`).
        let most = config.max_transactions;
        Core {
            servers: table::TransactionTable::with_capacity(most),
            timers: timers::TimerWheel::default(),
            config,
            outbox: VecDeque::new(),
            draining: false,
            stats: Arc::new(SwitchStats::default()),
            gauges: GaugeShares::default(),
            shard: Shard { index: 0, count: 1 },
            placement_notes: VecDeque::new(),
            tag_seed: seed | 1,
            via_prefix,
            local: local.into(),
            product,
            wall_base: (Instant::now(), SystemTime::now()),
            clients: table::TransactionTable::with_capacity(most / 2),
            calls: HashMap::default(),
            ended: HashMap::default(),
            pending: HashMap::default(),
            admissions: VecDeque::new(),
            notices: VecDeque::new(),
            dialogs: HashMap::default(),
            b_call_ids: HashSet::default(),
            a_invites: HashMap::default(),
            next_call: 1,
            next_txn: 1,
            live_calls: 0,
            leases_held: 0,
            registrations: VecDeque::new(),
            pending_registrations: HashMap::default(),
            uacs: HashMap::default(),
            uac_locates: VecDeque::new(),
            uac_changes: VecDeque::new(),
        }
    }

    /// The `count` cores of a sharded switch: each owns the calls dealt to it ([`Placement`])
    /// and those of the Call-IDs it makes, and they share one [`SwitchStats`]. Each takes its
    /// share of `max_transactions`.
    pub fn shards(config: SwitchConfig, seed: u64, count: usize) -> Vec<Core> {
        let count = count.clamp(1, usize::from(u16::MAX));
        let stats = Arc::new(SwitchStats::default());
        let mut config = config;
        config.max_transactions = config.max_transactions.div_ceil(count);
        (0..count)
            .map(|index| {
                // Distinct, non-zero seeds: the cores' tags and ids must not repeat each other's.
                let seed = seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut core = Core::new(config.clone(), seed);
                core.stats = stats.clone();
                core.shard = Shard { index, count };
                core
            })
            .collect()
    }

    /// Sets the wall-clock time at `at` (tests; the core reads the clock once when made).
    pub fn with_wall_clock(mut self, at: Instant, wall: SystemTime) -> Core {
        self.wall_base = (at, wall);
        self
    }

    fn wall_clock(&self, now: Instant) -> SystemTime {
        let (at, wall) = self.wall_base;
        match now.checked_duration_since(at) {
            Some(d) => wall + d,
            None => wall - at.duration_since(now),
        }
    }

    pub fn stats(&self) -> Arc<SwitchStats> {
        self.stats.clone()
    }

    /// Live transactions.
    pub fn transactions(&self) -> usize {
        self.servers.len()
    }

    /// Transactions a drain must wait for: those still owing a final response, and INVITEs
    /// whose error response still waits for its ACK (the rest only absorb retransmissions);
    /// and calls up or waiting for admission.
    pub fn busy_transactions(&self) -> usize {
        self.servers
            .values()
            .filter(|e| !e.final_sent || (e.txn.is_invite() && e.txn.state() == ServerState::Completed))
            .count()
            + self.calls()
            + self.pending.len()
            + self.uac_registrations()
    }

    /// Stop taking new calls: new INVITEs (and OPTIONS pings, so load balancers notice) get
    /// `503` with `Retry-After`; running transactions finish.
    pub fn begin_drain(&mut self) {
        if !self.draining {
            bump(&self.stats.cores_draining);
        }
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// One message from the network.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Instant) {
        bump(&self.stats.received);
        let framing = if inbound.kind.is_reliable() { Framing::Stream } else { Framing::Datagram };
        match sip::inspect(inbound.data.clone(), framing, &self.config.policy) {
            Verdict::Accept(msg) if msg.is_request() => {
                bump(&self.stats.accepted);
                self.handle_request(msg, &inbound, now);
            }
            Verdict::Accept(msg) => {
                bump(&self.stats.accepted);
                // A response that matches none of our client transactions is dropped (a B2BUA
                // never forwards statelessly).
                self.handle_response(msg, now);
            }
            Verdict::Reject { rejection, request } => {
                bump(&self.stats.rejected);
                debug!(remote = %inbound.remote, status = rejection.status, reason = %rejection.reason, "rejected");
                if request.method() == Some(Method::Ack) {
                    return; // an ACK is never answered
                }
                let route = ReplyRoute::for_request(&request, &inbound);
                let tag = self.new_tag();
                let mut resp = rejection.response(&request, Some(&tag));
                self.decorate(&mut resp);
                self.outbox.push_back(route.outbound(resp.to_bytes()));
            }
            Verdict::Drop(e) => {
                bump(&self.stats.dropped);
                debug!(remote = %inbound.remote, error = %e, "dropped");
            }
        }
    }

    fn handle_request(&mut self, mut msg: Message, inbound: &Inbound, now: Instant) {
        msg.stamp_received(inbound.remote);
        let Ok(key) = TransactionKey::for_server(&msg) else {
            bump(&self.stats.dropped);
            return;
        };
        if let Some((slot, entry)) = self.servers.get_slot_mut(&key) {
            // A retransmission, or the ACK of a non-2xx final: the transaction absorbs it.
            bump(&self.stats.retransmissions_absorbed);
            let before = entry.txn.retransmissions();
            let _ = entry.txn.handle_request(msg, now);
            add_retransmissions(&self.stats.responses_retransmitted, before, entry.txn.retransmissions());
            self.pump_at(slot);
            return;
        }
        // In a dialog of one of our calls (ACK for a 2xx, BYE, re-INVITE, ...)?
        let to_tagged = msg.to_tag().ok().map(|t| t.is_some());
        if to_tagged == Some(true) && self.in_dialog(&key, &msg, inbound, now) {
            return;
        }
        let served = match msg.method() {
            Some(Method::Ack) | None => {
                // An ACK for a 2xx of no dialog of ours is stray: never answered.
                return;
            }
            Some(Method::Options) => Served::Options,
            Some(Method::Invite) if to_tagged == Some(false) => Served::Invite,
            Some(Method::Cancel) => Served::Cancel,
            Some(Method::Register) => Served::Register,
            Some(_) => Served::Other,
        };
        let Some(slot) = self.new_server_transaction(&key, &msg, inbound, now) else { return };
        self.serve(&key, served, &msg, inbound, now);
        // By the slot it was made at: a transaction `serve` ended (and removed) is not found.
        self.pump_at(slot);
    }

    /// A server transaction (of key `key`, as [`TransactionKey::for_server`] made it) for a new
    /// request, unless the table is full (then `503`, statelessly): where it was put, `None` when
    /// none was made.
    fn new_server_transaction(
        &mut self,
        key: &TransactionKey,
        msg: &Message,
        inbound: &Inbound,
        now: Instant,
    ) -> Option<table::Slot> {
        let route = ReplyRoute::for_request(msg, inbound);
        if self.servers.len() >= self.config.max_transactions {
            bump(&self.stats.overloaded);
            if msg.method() == Some(Method::Invite) && msg.to_tag().is_ok_and(|t| t.is_none()) {
                self.stats.call_refused_early(503, None);
            }
            let tag = self.new_tag();
            let mut resp = msg.response_to(503, "Service Unavailable", Some(&tag));
            resp.push_header(HeaderName::RetryAfter, &self.config.drain_retry_after.to_string());
            self.decorate(&mut resp);
            self.outbox.push_back(route.outbound(resp.to_bytes()));
            return None;
        }
        let reliable = inbound.kind.is_reliable();
        let txn = match ServerTransaction::new(msg.clone(), reliable, &self.config.timers, now) {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %e, "no transaction");
                return None;
            }
        };
        bump(&self.stats.server_transactions);
        let slot = self.servers.insert(key.clone(), ServerEntry { txn, route, final_sent: false, scheduled: None });
        self.gauges.server_transactions.publish(&self.stats.live_transactions, self.servers.len());
        Some(slot)
    }

    /// The transaction user for requests outside any dialog.
    fn serve(&mut self, key: &TransactionKey, served: Served, msg: &Message, inbound: &Inbound, now: Instant) {
        if served == Served::Invite && self.draining {
            self.stats.call_refused_early(503, None);
        }
        let (status, reason): (u16, &str) = match served {
            Served::Options | Served::Invite if self.draining => (503, "Service Unavailable"),
            Served::Options => (200, "OK"),
            Served::Invite => {
                // Answered by admission (or at once when it is a loop).
                self.new_invite(key, msg, inbound, now);
                return;
            }
            Served::Register => {
                // Answered by the registrar.
                let id = self.next_call;
                self.next_call += 1;
                self.pending_registrations.insert(id, key.clone());
                self.registrations.push_back(crate::registrar::RegistrationRequest {
                    id,
                    message: msg.clone(),
                    source: inbound.remote,
                    transport: inbound.kind,
                });
                return;
            }
            Served::Cancel => {
                // RFC 3261 section 9.2: a CANCEL matching an INVITE transaction gets 200; the
                // INVITE ends with 487 unless it already has its final answer.
                let target = self
                    .servers
                    .get(key)
                    .and_then(|e| e.txn.request())
                    .and_then(|r| TransactionKey::cancel_target(r).ok());
                match target.filter(|t| self.servers.get(t).is_some_and(|e| e.txn.is_invite())) {
                    Some(t) => {
                        // The CANCEL's 200 first, then the INVITE's 487 (the order of 9.2,
                        // and what callers expect).
                        self.respond(key, 200, "OK", now);
                        self.pump(key);
                        if !self.cancel_call(&t, now) && self.servers.get(&t).is_some_and(|e| !e.final_sent) {
                            // The transaction lets its request go with the 487; a pending
                            // admission still wants it for the call's record.
                            self.keep_pending_invite(&t);
                            self.respond(&t, 487, "Request Terminated", now);
                            self.pump(&t);
                        }
                        return;
                    }
                    None => (481, "Call/Transaction Does Not Exist"),
                }
            }
            // BYE and the rest of the dialog methods outside a dialog of ours.
            _ => (481, "Call/Transaction Does Not Exist"),
        };
        self.respond(key, status, reason, now);
    }

    fn respond(&mut self, key: &TransactionKey, status: u16, reason: &str, now: Instant) {
        self.respond_with(key, status, reason, &[], now);
    }

    /// REGISTERs to answer (the driver answers each with [`Core::answer_registration`]).
    pub fn poll_registration(&mut self) -> Option<crate::registrar::RegistrationRequest> {
        self.registrations.pop_front()
    }

    /// The registrar's answer to REGISTER `id`.
    pub fn answer_registration(&mut self, id: u64, answer: crate::registrar::RegistrationAnswer, now: Instant) {
        let Some(key) = self.pending_registrations.remove(&id) else { return };
        self.respond_with(&key, answer.status, answer.phrase, &answer.headers, now);
        self.pump(&key);
    }

    /// A final or provisional answer from the switch itself, with extra header fields.
    fn respond_with(
        &mut self,
        key: &TransactionKey,
        status: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
        now: Instant,
    ) {
        let tag = self.new_tag();
        let draining = self.draining;
        let retry_after = self.config.drain_retry_after;
        let Some(request) = self.servers.get(key).and_then(|e| e.txn.request()) else {
            debug!("no response once the final one is sent");
            return;
        };
        let mut resp = request.response_to(status, reason, Some(&tag));
        if status == 200 && request.method() == Some(Method::Options) {
            resp.push_header(HeaderName::Allow, &self.config.policy.methods.join(", "));
            resp.push_header(HeaderName::Accept, "application/sdp");
            resp.push_header(HeaderName::Supported, &self.config.policy.supported.join(", "));
        }
        if status == 503 && draining {
            resp.push_header(HeaderName::RetryAfter, &retry_after.to_string());
        }
        for (name, value) in headers {
            resp.push_header(*name, value);
        }
        self.decorate(&mut resp);
        if let Some(entry) = self.servers.get_mut(key) {
            if status >= 200 {
                entry.final_sent = true;
            }
            if let Err(e) = entry.txn.send_response(resp, now) {
                warn!(error = %e, "response refused by the transaction");
            }
        }
    }

    fn decorate(&self, resp: &mut Message) {
        resp.push_header(HeaderName::Server, &self.config.product);
    }

    /// Timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, due)) = self.timers.pop_due(now) {
            match due {
                Due::Server(slot) => {
                    let Some((_, entry)) = self.servers.at_mut(slot) else { continue };
                    if entry.scheduled != Some(at) {
                        continue; // superseded by an earlier deadline, which has its own entry
                    }
                    entry.scheduled = None;
                    if entry.txn.poll_timeout().is_some_and(|t| t <= now) {
                        let before = entry.txn.retransmissions();
                        entry.txn.handle_timeout(now);
                        add_retransmissions(&self.stats.responses_retransmitted, before, entry.txn.retransmissions());
                    }
                    self.pump_at(slot);
                }
                Due::Client(slot) => {
                    let Some((_, entry)) = self.clients.at_mut(slot) else { continue };
                    if entry.scheduled != Some(at) {
                        continue;
                    }
                    entry.scheduled = None;
                    if entry.txn.poll_timeout().is_some_and(|t| t <= now) {
                        let before = entry.txn.retransmissions();
                        entry.txn.handle_timeout(now);
                        add_retransmissions(&self.stats.requests_retransmitted, before, entry.txn.retransmissions());
                    }
                    self.pump_client(slot, now);
                }
                Due::Call(id) => self.call_timeout(id, now),
                Due::Uac(id) => self.uac_timeout(id, now),
            }
        }
    }

    /// A send failed: the transaction learns of it (RFC 3261 section 18.4).
    pub fn handle_transport_error(&mut self, key: &TransactionKey, now: Instant) {
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.handle_transport_error(now);
        }
        self.pump(key);
    }

    /// Collects what a transaction wants sent, its next deadline and its events.
    fn pump(&mut self, key: &TransactionKey) {
        if let Some(slot) = self.servers.slot_of(key) {
            self.pump_at(slot);
        }
    }

    /// [`Core::pump`] for the transaction at `slot`.
    fn pump_at(&mut self, slot: table::Slot) {
        let Some((_, entry)) = self.servers.at_mut(slot) else { return };
        while let Some(data) = entry.txn.poll_transmit() {
            self.outbox.push_back(entry.route.outbound(data));
        }
        let mut terminated = false;
        while let Some(ev) = entry.txn.poll_event() {
            match ev {
                ServerEvent::Terminated => terminated = true,
                ServerEvent::Timeout => debug!("server transaction timed out without ACK"),
                ServerEvent::TransportError => debug!("server transaction transport error"),
                ServerEvent::Ack(_) => {}
            }
        }
        if terminated {
            if let Some((key, _)) = self.servers.remove_at(slot) {
                // A CANCEL now finds no INVITE transaction (481): the call's index entry can go.
                self.a_invites.remove(&key);
            }
            self.gauges.server_transactions.publish(&self.stats.live_transactions, self.servers.len());
            return;
        }
        if let Some(at) = entry.txn.poll_timeout()
            && entry.scheduled.is_none_or(|s| at < s)
        {
            entry.scheduled = Some(at);
            self.timers.push(at, Due::Server(slot));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Outbound> {
        self.outbox.pop_front()
    }

    /// Whether anything waits to be sent.
    pub fn has_transmits(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The earliest deadline, rounded up to the timer wheel's millisecond (stale entries may
    /// make it early, never late).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    fn new_tag(&mut self) -> String {
        let mut tag = String::with_capacity(16);
        sip::message::push_hex(&mut tag, self.next_random(), 0);
        tag
    }

    /// xorshift64*: tags and branches must be unique, not secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.tag_seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.tag_seed = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A UUID-shaped identifier (version 4 layout) for call control ids and B-leg Call-IDs:
    /// unique, not secret (the API checks who may see a call).
    fn new_uuid(&mut self) -> String {
        let mut id = String::with_capacity(36);
        self.push_uuid(&mut id);
        id
    }

    /// A new Call-ID of ours (a B-leg's, a UAC registration's): a [`Core::new_uuid`] at our
    /// host; on a switch of several cores marked with this core's index ([`core_mark`]), so
    /// that every message of its calls comes back here.
    fn new_call_id(&mut self) -> String {
        let mut id = String::with_capacity(40 + self.config.local_host.len());
        self.push_uuid(&mut id);
        if self.shard.count > 1 {
            placement::push_core_mark(&mut id, self.shard.index);
        }
        id.push('@');
        id.push_str(&self.config.local_host);
        id
    }

    /// Appends a new [`Core::new_uuid`] to `out`.
    fn push_uuid(&mut self, out: &mut String) {
        let mut word = || {
            let mut x = self.tag_seed;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.tag_seed = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (a, b) = (word(), word());
        let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
        let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        // `{:08x}-{:04x}-{:04x}-{:04x}-{:012x}`, without the formatting machinery.
        let parts = [(a >> 32, 8), ((a >> 16) & 0xffff, 4), (a & 0xffff, 4), (b >> 48, 4), (b & 0xffff_ffff_ffff, 12)];
        for (i, (part, width)) in parts.into_iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            sip::message::push_hex(out, part, width);
        }
    }
}

/// How the driver is told to stop.
pub enum Control {
    Drain,
    /// The UAC connections to keep registered now (every configuration change).
    UacConnections(Vec<UacConnection>),
}

/// What the driver needs for calls: the admitter deciding new INVITEs, and where the core's
/// call notices go (live calls, webhooks, records: the platform's business, not the switch's).
pub struct CallPlumbing<C> {
    pub admitter: Arc<crate::admission::Admitter<C>>,
    pub notices: tokio::sync::mpsc::UnboundedSender<CallNotice>,
    /// Answers REGISTERs; without one they are refused (403).
    pub registrar: Option<Arc<crate::registrar::Registrar>>,
    /// RFC 3263 for UAC registrations' registrars.
    pub locator: Option<Arc<crate::Locator>>,
}

impl<C> Clone for CallPlumbing<C> {
    fn clone(&self) -> Self {
        CallPlumbing {
            admitter: self.admitter.clone(),
            notices: self.notices.clone(),
            registrar: self.registrar.clone(),
            locator: self.locator.clone(),
        }
    }
}

/// Messages a core of a sharded switch may have waiting for it: beyond this the first core
/// drops what it reads for it, as a full socket buffer would.
const SHARD_INBOX: usize = 65_536;

/// Drives the cores of [`Core::shards`] (or one [`Core`]) with the transports and tokio's
/// clock until a drain completes (every transaction and call ended) or `drain_timeout` passes
/// after the drain began; then every call still up is hung up, so each one's record goes out.
/// Every core runs on a thread of its own, each with a current-thread runtime; this future
/// only waits for them. The first reads the UDP listeners and the stream connections' messages
/// and hands each message to the core its call belongs to ([`Placement`]: new calls stay on the
/// first while its turns are short, and are dealt round the cores in crowded ones); each core
/// sends what it has to send itself. So a burst is handled on as many cores as the machine
/// gives, while each call still lives on one core, in order.
/// A drain ends when every core has drained (or at `drain_timeout`).
pub async fn run_sharded<C: crate::counters::Counters + 'static>(
    cores: Vec<Core>,
    transports: crate::Transports,
    inbound: tokio::sync::mpsc::Receiver<Inbound>,
    control: tokio::sync::mpsc::Receiver<Control>,
    drain_timeout: Duration,
    plumbing: CallPlumbing<C>,
) -> Arc<SwitchStats> {
    let mut cores = cores.into_iter();
    let Some(first) = cores.next() else {
        return Arc::new(SwitchStats::default());
    };
    let linger = first.config.timers.t1 * 64;
    let spread_from = first.config.spread_from;
    // Each core took its share of the switch's transactions: the whole is the bound.
    let most = first.config.max_transactions.saturating_mul(cores.len() + 1);
    let (notes_tx, notes) = std::sync::mpsc::channel();
    let mut others = Vec::new();
    for (i, core) in cores.enumerate() {
        let (inbox, inbox_rx) = tokio::sync::mpsc::channel(SHARD_INBOX);
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(8);
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let role = Role::Other { drained: drained.clone(), notes: notes_tx.clone() };
        let (transports, plumbing) = (transports.clone(), plumbing.clone());
        let done = on_core_thread(i + 1, move || async move {
            drive(core, role, transports, inbox_rx, control_rx, drain_timeout, plumbing).await
        });
        others.push(OtherCore { inbox, control: control_tx, drained, done });
    }
    let placement = Placement::new(others.len() + 1, linger, most);
    let dealer = Box::new(Dealer { others, placement, notes, spread_from });
    // The first core has a thread of its own too, its listeners registered with that thread's
    // reactor: the main runtime (the API, call records, webhooks) never runs between two of its
    // turns, and a datagram wakes only the thread that reads it.
    let stats = on_core_thread(0, move || async move {
        let datagrams = match transports.datagram_reader() {
            Ok(d) => d,
            // Without it no datagram would ever be read: better no switch than a deaf one.
            Err(e) => panic!("SIP core: the UDP listeners cannot be watched: {e}"),
        };
        drive(first, Role::First { datagrams, dealer }, transports, inbound, control, drain_timeout, plumbing).await
    });
    match stats.await {
        Ok(stats) => stats,
        Err(_) => panic!("SIP core 0 ended without its figures"),
    }
}

/// Runs a core's driver on a thread of its own (`sip-core-N`), on a single-threaded runtime;
/// resolves to the core's figures when it ends.
fn on_core_thread<F, Fut>(index: usize, drive: F) -> tokio::sync::oneshot::Receiver<Arc<SwitchStats>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Arc<SwitchStats>>,
{
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name(format!("sip-core-{index}")).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => {
                let _ = done_tx.send(rt.block_on(drive()));
            }
            Err(e) => warn!(error = %e, "SIP core thread: no runtime"),
        }
    });
    if let Err(e) = thread {
        // Its calls would go unanswered: better none of the cores than a switch with a hole.
        panic!("SIP core thread: {e}");
    }
    done
}

/// Another core of a sharded switch, as the first sees it.
struct OtherCore {
    inbox: tokio::sync::mpsc::Sender<Inbound>,
    control: tokio::sync::mpsc::Sender<Control>,
    /// Set while it drains and has no transaction waiting for an answer.
    drained: Arc<std::sync::atomic::AtomicBool>,
    /// Resolves when its thread has ended (every call's record sent).
    done: tokio::sync::oneshot::Receiver<Arc<SwitchStats>>,
}

/// What a core's driver does besides driving its core.
enum Role {
    /// Reads every listener and hands the other cores their messages.
    First { datagrams: crate::transport::DatagramReader, dealer: Box<Dealer> },
    /// Takes its messages from the first; says when it has drained, and which callers'
    /// Call-IDs it holds calls of.
    Other { drained: Arc<std::sync::atomic::AtomicBool>, notes: std::sync::mpsc::Sender<PlacementNote> },
}

/// The first core's hand in dealing messages to the cores.
struct Dealer {
    others: Vec<OtherCore>,
    placement: Placement,
    /// The other cores' [`PlacementNote`]s: read at each turn, never waking the first core
    /// (a note only makes the table forget sooner).
    notes: std::sync::mpsc::Receiver<PlacementNote>,
    spread_from: usize,
}

impl Dealer {
    /// Before a turn: takes the other cores' notes and forgets the Call-IDs whose time is up.
    fn catch_up(&mut self, now: Instant, stats: &SwitchStats) {
        if self.others.is_empty() {
            return;
        }
        while let Ok(note) = self.notes.try_recv() {
            self.placement.note(note, now);
        }
        self.placement.expire(now);
        stats.call_ids_dealt.store(self.placement.len() as u64, Ordering::Relaxed);
    }
}

/// Handles `msg` on `core` when it is this core's (or there is no `dealer`), or hands it to
/// the core it belongs to. `crowd`: the messages of the turn it came in.
fn deliver(dealer: Option<&mut Dealer>, core: &mut Core, msg: Inbound, now: Instant, crowd: usize) {
    let Some(dealer) = dealer.filter(|d| !d.others.is_empty()) else {
        return core.handle_inbound(msg, now);
    };
    // A retransmission of an INVITE the first core took stays with it.
    let first_holds =
        |invite: &Message| TransactionKey::for_server(invite).is_ok_and(|k| core.servers.get(&k).is_some());
    let remembered = dealer.placement.len();
    let i = dealer.placement.core_of(&msg, crowd >= dealer.spread_from, now, first_holds);
    if dealer.placement.len() > remembered {
        bump(&core.stats.calls_dealt);
    }
    if i == 0 {
        return core.handle_inbound(msg, now);
    }
    if let Err(e) = dealer.others[i - 1].inbox.try_send(msg) {
        bump(&core.stats.dropped);
        debug!(core = i, error = %e, "message dropped: its core is behind or gone");
    }
}

async fn drive<C: crate::counters::Counters + 'static>(
    mut core: Core,
    mut role: Role,
    transports: crate::Transports,
    mut inbound: tokio::sync::mpsc::Receiver<Inbound>,
    mut control: tokio::sync::mpsc::Receiver<Control>,
    drain_timeout: Duration,
    plumbing: CallPlumbing<C>,
) -> Arc<SwitchStats> {
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Admissions run as tasks (a shared counter backend may make them wait); their answers
    // come back here.
    let (admitted_tx, mut admitted_rx) = tokio::sync::mpsc::unbounded_channel();
    let (located_tx, mut located_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut notices_sent = Instant::now();
    // One timer for the core's next deadline, moved as that deadline moves rather than made
    // anew each turn: a new timer registers with the runtime's timer wheel, and one earlier
    // than the runtime's next planned wake-up wakes the worker parked in `epoll_wait` (an
    // eventfd write and a context switch). Its deadlines lie on a grid (WAKE_GRID) and at most
    // WAKE_HORIZON ahead, so that it rarely moves, and almost never earlier.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(3600));
    tokio::pin!(timer);
    let grid_origin = tokio::time::Instant::now();
    // A turn's datagrams, and `setup_first`'s room, kept from turn to turn.
    let mut turn: Vec<(Inbound, Instant)> = Vec::with_capacity(DATAGRAMS_PER_TURN);
    let mut turn_room = TurnRoom::default();
    loop {
        while let Some((id, uri)) = core.poll_uac_locate() {
            let locator = plumbing.locator.clone();
            let tx = located_tx.clone();
            tokio::spawn(async move {
                let located = match (locator, sip::uri::parse_uri(&uri)) {
                    (Some(l), Ok(sip::Uri::Sip(u))) => l.locate(&u).await,
                    (None, _) => Err(crate::LocateError::Other("no DNS resolver".into())),
                    (_, _) => Err(crate::LocateError::Unsupported(uri.clone())),
                };
                let _ = tx.send((id, located));
            });
        }
        while let Some(change) = core.poll_uac_change() {
            if let Some(r) = &plumbing.registrar {
                r.uac_changed(&change);
            }
        }
        answer_requests(&mut core, &plumbing, &admitted_tx);
        // Notices go in batches, at most one each NOTICE_BATCH: every hand-off wakes the main
        // runtime from this core's thread, and what the notices feed (records, live calls,
        // webhooks) is on no peer's clock.
        if core.has_notices() && notices_sent.elapsed() >= NOTICE_BATCH {
            while let Some(notice) = core.poll_notice() {
                let _ = plumbing.notices.send(notice);
            }
            notices_sent = Instant::now();
        }
        flush(&mut core, &transports);
        let drained = core.is_draining() && core.busy_transactions() == 0;
        match &role {
            Role::Other { drained: flag, notes } => {
                flag.store(drained, Ordering::Relaxed);
                while let Some(note) = core.poll_placement_note() {
                    let _ = notes.send(note);
                }
            }
            Role::First { dealer, .. } => {
                if drained && dealer.others.iter().all(|o| o.drained.load(Ordering::Relaxed)) {
                    info!(absorbing = core.transactions(), "drained: every transaction has its final answer");
                    break;
                }
            }
        }
        let notices_due = core.has_notices().then(|| notices_sent + NOTICE_BATCH);
        let next_timer = [core.poll_timeout(), notices_due].into_iter().flatten().min().map(|at| {
            let now = Instant::now();
            on_grid(grid_origin, tokio::time::Instant::now() + at.saturating_duration_since(now).min(WAKE_HORIZON))
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        // While draining, the first core looks again every so often whether the others have
        // drained (they do not wake it to say so).
        let next_timer = match (&role, drain_deadline) {
            (Role::First { dealer, .. }, Some(_)) if !dealer.others.is_empty() => {
                let soon = tokio::time::Instant::now() + DRAIN_CHECK;
                Some(next_timer.map_or(soon, |t| t.min(soon)))
            }
            _ => next_timer,
        };
        let next_timer = next_timer.unwrap_or(far);
        if timer.deadline() != next_timer {
            timer.as_mut().reset(next_timer);
        }
        let (datagrams, mut dealer) = match &mut role {
            Role::First { datagrams, dealer } => (Some(datagrams), Some(&mut **dealer)),
            Role::Other { .. } => (None, None),
        };
        let readable = async {
            match &datagrams {
                Some(d) => d.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = readable => {
                // Datagrams are read here, in batches, and handled in place: no task, queue
                // or wake-up between the socket and the core (the other cores' messages are
                // handed on in the same pass). Bounded per turn so timers and the other
                // channels are not starved under load.
                if let Some(datagrams) = datagrams {
                    // The turn's datagrams are read first, calls being set up put ahead
                    // (`setup_first`), then handled. Every datagram's requests are answered as
                    // it is handled (an INVITE's B leg is made at once). The first few of a turn
                    // are settled one by one (their sends gone) so a burst's last datagram does
                    // not hold back its first's; past them, sends wait for the datagrams after
                    // them, as batching saves most under load, but no longer than SEND_HOLD.
                    datagrams.read(DATAGRAMS_PER_TURN, |msg, now| turn.push((msg, now)));
                    setup_first(&mut turn, &mut turn_room);
                    let crowd = turn.len();
                    if let (Some(d), Some((_, now))) = (dealer.as_deref_mut(), turn.first()) {
                        d.catch_up(*now, &core.stats);
                    }
                    let mut held = HeldSends::default();
                    for (handled, (msg, now)) in turn.drain(..).enumerate() {
                        deliver(dealer.as_deref_mut(), &mut core, msg, now, crowd);
                        answer_requests(&mut core, &plumbing, &admitted_tx);
                        if handled < SETTLED_ALONE {
                            flush(&mut core, &transports);
                        } else {
                            held.after_message(&mut core, &transports);
                        }
                    }
                }
            }
            msg = inbound.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                if let Some(d) = dealer.as_deref_mut() {
                    d.catch_up(now, &core.stats);
                }
                deliver(dealer.as_deref_mut(), &mut core, msg, now, inbound.len() + 1);
                // Take whatever else is queued before flushing: batches under load, each
                // message's sends held no longer than SEND_HOLD.
                let mut held = HeldSends::default();
                for _ in 0..256 {
                    answer_requests(&mut core, &plumbing, &admitted_tx);
                    held.after_message(&mut core, &transports);
                    match inbound.try_recv() {
                        Ok(m) => deliver(dealer.as_deref_mut(), &mut core, m, Instant::now(), inbound.len() + 1),
                        Err(_) => break,
                    }
                }
            }
            Some((id, admission)) = admitted_rx.recv() => {
                core.admit(id, admission, Instant::now());
            }
            Some((id, located)) = located_rx.recv() => {
                core.uac_located(id, located, Instant::now());
            }
            () = &mut timer => {
                core.handle_timeout(Instant::now());
            }
            c = control.recv(), if drain_deadline.is_none() => {
                if let Some(Control::UacConnections(wanted)) = c {
                    core.set_uac_connections(wanted, Instant::now());
                    continue;
                }
                // A closed control channel drains too: nobody is left to ask.
                info!(transactions = core.transactions(), calls = core.calls(), "draining");
                for o in dealer.iter().flat_map(|d| d.others.iter()) {
                    let _ = o.control.try_send(Control::Drain);
                }
                core.begin_drain();
                // UAC registrations take their bindings back from the PBXes.
                core.unregister_uacs(Instant::now());
                drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => {
                warn!(transactions = core.transactions(), calls = core.calls(), "drain timeout: hanging up what is left");
                break;
            }
        }
    }
    // Whatever is still up ends now, with its record.
    core.hang_up_all(Instant::now());
    while let Some(notice) = core.poll_notice() {
        let _ = plumbing.notices.send(notice);
    }
    flush(&mut core, &transports);
    // The other cores stop when their inboxes close; each hangs up what it still has.
    if let Role::First { dealer, .. } = role {
        let mut done = Vec::new();
        for o in dealer.others {
            drop(o.inbox);
            done.push(o.done);
        }
        for d in done {
            let _ = d.await;
        }
    }
    core.stats()
}

/// Answers what the core asked for: admissions (in place when the counters answer at once,
/// else as a task whose answer comes back on `admitted`) and registrations.
fn answer_requests<C: crate::counters::Counters + 'static>(
    core: &mut Core,
    plumbing: &CallPlumbing<C>,
    admitted: &tokio::sync::mpsc::UnboundedSender<(u64, crate::admission::Admission)>,
) {
    while let Some(req) = core.poll_admission() {
        let id = req.id;
        let admitter = plumbing.admitter.clone();
        let mut admission = Box::pin(async move { admitter.admit(req).await });
        // With in-process counters the answer is ready at once: take it in place. Only
        // an admission that waits (a shared counter backend) becomes a task; it polls
        // the same future again with a real waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match admission.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(admission) => core.admit(id, admission, Instant::now()),
            std::task::Poll::Pending => {
                let tx = admitted.clone();
                tokio::spawn(async move {
                    let _ = tx.send((id, admission.await));
                });
            }
        }
    }
    // The registrar decides in memory (it never waits): answered in place.
    while let Some(req) = core.poll_registration() {
        let answer = match &plumbing.registrar {
            Some(r) => r.handle(&req, SystemTime::now()),
            None => crate::registrar::RegistrationAnswer { status: 403, phrase: "Forbidden", headers: Vec::new() },
        };
        core.answer_registration(req.id, answer, Instant::now());
    }
}

/// Puts the datagrams of a turn that set calls up (INVITEs and the responses to them) ahead of
/// the rest (ACKs, BYEs and their answers, registrations, OPTIONS ...), each call's own
/// datagrams kept in the order they came. Peers send in bursts (SIPp a tick's worth of calls at
/// once, a PBX its hang-ups and new calls together), and one core handles a turn in order: an
/// INVITE read behind four BYEs waited for their four answers and four B-leg BYEs, about 50 us
/// each with their sends, before its own B leg left. Post-dial delay is what a caller waits
/// on; a hang-up a few hundred microseconds later changes nothing. Bounded by the turn (at
/// most [`DATAGRAMS_PER_TURN`]), so nothing waits longer than the turn it came in. A setup
/// datagram whose call already has another kind of datagram earlier in the turn stays behind
/// it (a re-INVITE after its call's ACK), and so does any whose kind or call cannot be told
/// from its bytes: the order is then as it came.
fn setup_first(turn: &mut Vec<(Inbound, Instant)>, room: &mut TurnRoom) {
    if turn.len() < 2 {
        return;
    }
    let TurnRoom { front, rest, calls } = room;
    calls.clear();
    for item in turn.drain(..) {
        let (setup, call) = turn_order_key(&item.0.data);
        if setup && call.is_some_and(|c| !calls.contains(&c)) {
            front.push(item);
        } else {
            calls.extend(call);
            rest.push(item);
        }
    }
    turn.append(front);
    turn.append(rest);
}

/// [`setup_first`]'s room, kept from turn to turn.
#[derive(Default)]
struct TurnRoom {
    front: Vec<(Inbound, Instant)>,
    rest: Vec<(Inbound, Instant)>,
    /// The calls (Call-ID hashes) of the datagrams left in place so far.
    calls: Vec<u64>,
}

/// Whether a datagram sets a call up (an INVITE, or a response whose CSeq names INVITE), and a
/// hash of its Call-ID, read off its header lines without parsing them; `None` for the call
/// when there is no Call-ID line (such a datagram is not moved).
fn turn_order_key(data: &[u8]) -> (bool, Option<u64>) {
    let response = data.starts_with(b"SIP/2.0 ");
    let mut setup = data.starts_with(b"INVITE ");
    let mut call = None;
    let mut cseq_seen = !response;
    for (name, value) in placement::raw_headers(data) {
        match name {
            HeaderName::CallId => call = Some(call_id_hash(value)),
            HeaderName::CSeq if !cseq_seen => {
                cseq_seen = true;
                setup = value.rsplit(|b| b.is_ascii_whitespace()).next() == Some(&b"INVITE"[..]);
            }
            _ => {}
        }
        if call.is_some() && cseq_seen {
            break;
        }
    }
    (setup, call)
}

/// How many datagrams of a turn are each settled before the next is handled. Eight, not two:
/// the sends of the third to the eighth (a carrier's 100, 180 and 200 arrive together) then
/// leave at once; with two, the INVITE's way through the switch took 0.60-0.63 ms at the median
/// at 2,000 calls/s, 0.49-0.50 with eight, and at 4,500/s the setup's p99 was 13 and 48 ms
/// against 7.5-9.7 with eight, for no more CPU (docs/performance.md, fourteenth round). Turns
/// longer than that are the load where batching pays.
const SETTLED_ALONE: usize = 8;
/// How long a datagram of a turn past the first [`SETTLED_ALONE`] may wait to be sent while the
/// datagrams after it are handled, so that they leave together. Bounded: with the whole turn's
/// sends held to its end (up to [`DATAGRAMS_PER_TURN`] datagrams) an INVITE read early in a long
/// turn waited for all of it; near the edge, where turns grow long, the setup's p99 was 2.2 s at
/// 5,625 calls/s, 14 ms with this bound (docs/performance.md, thirteenth round). Sending each
/// datagram at once (no hold) cost more CPU at 4,500 calls/s and did not shorten the tail.
const SEND_HOLD: Duration = Duration::from_micros(300);

/// A turn's sends held back to leave together ([`SEND_HOLD`]).
#[derive(Default)]
struct HeldSends {
    /// When the oldest of them was first seen waiting.
    since: Option<Instant>,
}

impl HeldSends {
    /// After a message is handled: sends what waits once the oldest has waited [`SEND_HOLD`].
    fn after_message(&mut self, core: &mut Core, transports: &crate::Transports) {
        // The clock is read only when something waits.
        if self.due(core.has_transmits().then(Instant::now)) {
            flush(core, transports);
        }
    }

    /// Whether what waits is to go now: `waiting` is the time when sends wait, `None` when
    /// none do.
    fn due(&mut self, waiting: Option<Instant>) -> bool {
        let Some(now) = waiting else {
            self.since = None;
            return false;
        };
        match self.since {
            Some(since) if now.saturating_duration_since(since) >= SEND_HOLD => {
                self.since = None;
                true
            }
            Some(_) => false,
            None => {
                self.since = Some(now);
                false
            }
        }
    }
}

/// The grid the driver's wake-ups lie on: a deadline is rounded up to the next point of it,
/// so deadlines close together are served by one wake-up. The core's deadlines are mostly
/// timers of transactions that already ended (its wheel drops them when they come due, not
/// when they are cancelled), at 500 calls/s a few a call a few milliseconds apart: each was a
/// wake-up from `epoll_wait` and, as the timer was set again after firing, an eventfd write
/// and an `epoll_wait` that returned at once (1.1 writes a call). RFC 3261's timers start at
/// T1 (500 ms) and tolerate this much lateness; Kamailio's timer ticks every 62.5 ms.
const WAKE_GRID: Duration = Duration::from_millis(10);

/// The longest the driver sleeps while its core has a deadline: T1, the shortest timer a new
/// transaction starts, so that a new transaction's timer never comes before the one set (which
/// would wake the runtime's I/O driver), at the cost of a wake-up every T1 while only long
/// timers are pending.
const WAKE_HORIZON: Duration = Duration::from_millis(500);

/// `at` rounded up to the next point of the [`WAKE_GRID`] grid that starts at `origin` (`at`
/// itself when it is one).
fn on_grid(origin: tokio::time::Instant, at: tokio::time::Instant) -> tokio::time::Instant {
    let grid = WAKE_GRID.as_nanos();
    let points = at.saturating_duration_since(origin).as_nanos().div_ceil(grid);
    origin + Duration::from_nanos(u64::try_from(points * grid).unwrap_or(u64::MAX))
}

/// How long a core other than the first keeps its call notices before handing them on.
const NOTICE_BATCH: Duration = Duration::from_millis(10);

/// How often a draining first core looks whether the others have drained.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

fn flush(core: &mut Core, transports: &crate::Transports) {
    // The datagrams of one pass leave together, in as few system calls as possible.
    let mut datagrams = Vec::new();
    while let Some(out) = core.poll_transmit() {
        if out.kind == TransportKind::Udp {
            datagrams.push(out);
            continue;
        }
        // Neither path blocks the core. A stream message is queued on its connection in
        // order; only a message that needs a new connection (or meets a full queue) goes to
        // a task.
        if !matches!(transports.try_send_stream(&out), Ok(true)) {
            let t = transports.clone();
            tokio::spawn(async move {
                let remote = out.remote;
                if let Err(e) = t.send(out).await {
                    debug!(%remote, error = %e, "send failed");
                }
            });
        }
    }
    transports.try_send_udp_batch(&datagrams);
}

/// Datagrams read per turn of the driver's loop before it looks at timers and channels again.
const DATAGRAMS_PER_TURN: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Admission;

    const PBX: &str = "192.0.2.10:5062";
    const SWITCH: &str = "192.0.2.1:5060";

    /// A turn's sends wait for the messages after them at most SEND_HOLD from when they were
    /// first seen waiting; sends already gone start no wait.
    #[test]
    fn held_sends_go_once_the_oldest_has_waited_the_hold() {
        let t0 = Instant::now();
        let mut held = HeldSends::default();
        let steps = [
            (false, Duration::ZERO, false),
            (true, Duration::from_micros(10), false),
            (true, SEND_HOLD, false),
            (true, SEND_HOLD + Duration::from_micros(10), true),
            (true, SEND_HOLD + Duration::from_micros(20), false),
            (false, SEND_HOLD * 3, false),
            (true, SEND_HOLD * 4, false),
            (true, SEND_HOLD * 5 - Duration::from_micros(1), false),
            (true, SEND_HOLD * 5, true),
        ];
        for (i, (waiting, at, due)) in steps.into_iter().enumerate() {
            assert_eq!(held.due(waiting.then_some(t0 + at)), due, "step {i}");
        }
    }

    /// What a datagram is to a turn's order, read off its bytes: a setup (an INVITE, a response
    /// whose CSeq names INVITE) or not, and its call; compact and odd-case names, space around
    /// the colon, LF line ends and a body that looks like headers are read as a parser would.
    #[test]
    fn datagrams_are_told_apart_by_their_setup_and_call() {
        let call = |id: &str| turn_order_key(format!("BYE sip:a@b SIP/2.0\r\nCall-ID: {id}\r\n\r\n").as_bytes()).1;
        let (one, two) = (call("one@h"), call("two@h"));
        assert!(one.is_some() && one != two);
        let cases: [(&str, bool, Option<u64>); 12] = [
            ("INVITE sip:a@b SIP/2.0\r\nCall-ID: one@h\r\nCSeq: 1 INVITE\r\n\r\n", true, one),
            ("INVITE sip:a@b SIP/2.0\r\ni:one@h\r\n\r\n", true, one),
            ("INVITE sip:a@b SIP/2.0\ncall-id :  one@h \nCSeq: 1 INVITE\n\n", true, one),
            ("SIP/2.0 180 Ringing\r\nCALL-ID: two@h\r\nCSeq: 2 INVITE\r\n\r\n", true, two),
            ("SIP/2.0 200 OK\r\nCSeq:   9   INVITE\r\nCall-ID: two@h\r\n\r\n", true, two),
            ("SIP/2.0 200 OK\r\nCall-ID: two@h\r\nCSeq: 3 BYE\r\n\r\n", false, two),
            ("SIP/2.0 200 OK\r\nCall-ID: two@h\r\nCSeq: 3 invite\r\n\r\n", false, two),
            ("ACK sip:a@b SIP/2.0\r\nCall-ID: one@h\r\nCSeq: 1 ACK\r\n\r\n", false, one),
            ("CANCEL sip:a@b SIP/2.0\r\nCall-ID: one@h\r\nCSeq: 1 CANCEL\r\n\r\n", false, one),
            // No Call-ID, or none before the body: not moved.
            ("INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\nCall-ID: one@h\r\n", true, None),
            ("SIP/2.0 200 OK\r\nCall-ID: two@h\r\n\r\nCSeq: 1 INVITE\r\n", false, two),
            ("INVITE", false, None),
        ];
        for (i, (text, setup, call)) in cases.into_iter().enumerate() {
            assert_eq!(turn_order_key(text.as_bytes()), (setup, call), "case {i}: {text:?}");
        }
    }

    /// A turn's setups go first, everything else after, each part in the order it came, and a
    /// call's own datagrams never change places: a setup behind another datagram of its call,
    /// or one whose call is unknown, stays where it was.
    #[test]
    fn a_turn_puts_the_calls_being_set_up_first_and_keeps_each_calls_order() {
        let dgram = |name: &str, first: &str, call: &str, cseq: &str| {
            let call = if call.is_empty() { String::new() } else { format!("Call-ID: {call}\r\n") };
            udp(&format!("{first}\r\n{call}CSeq: {cseq}\r\nX-Name: {name}\r\n\r\n"))
        };
        let turn_of = |items: &[(&str, &str, &str, &str)]| -> Vec<(Inbound, Instant)> {
            let now = Instant::now();
            items.iter().map(|&(n, f, c, q)| (dgram(n, f, c, q), now)).collect()
        };
        let names = |turn: &[(Inbound, Instant)]| -> Vec<String> {
            turn.iter()
                .map(|(m, _)| {
                    let text = std::str::from_utf8(&m.data).unwrap();
                    text.split("X-Name: ").nth(1).unwrap().split('\r').next().unwrap().to_owned()
                })
                .collect()
        };
        let bye = "BYE sip:a@b SIP/2.0";
        let invite = "INVITE sip:a@b SIP/2.0";
        let ok = "SIP/2.0 200 OK";
        // (name, first line, Call-ID, CSeq) of each datagram as it came; the names in the new order.
        type Datagram<'a> = (&'a str, &'a str, &'a str, &'a str);
        let cases: [(&[Datagram], &[&str]); 6] = [
            // The burst the bench sees: hang-ups ahead of new calls and their answers.
            (
                &[
                    ("bye1", bye, "c1", "2 BYE"),
                    ("bye2", bye, "c2", "2 BYE"),
                    ("inv3", invite, "c3", "1 INVITE"),
                    ("ok-bye1", ok, "b1", "2 BYE"),
                    ("ok-inv4", ok, "b4", "1 INVITE"),
                    ("inv5", invite, "c5", "1 INVITE"),
                ],
                &["inv3", "ok-inv4", "inv5", "bye1", "bye2", "ok-bye1"],
            ),
            // A re-INVITE behind its call's ACK stays behind it; another call's INVITE moves.
            (
                &[
                    ("ack1", "ACK sip:a@b SIP/2.0", "c1", "1 ACK"),
                    ("reinv1", invite, "c1", "2 INVITE"),
                    ("inv2", invite, "c2", "1 INVITE"),
                ],
                &["inv2", "ack1", "reinv1"],
            ),
            // And so does everything of that call after it, in order.
            (
                &[
                    ("bye1", bye, "c1", "3 BYE"),
                    ("ok1", ok, "c1", "2 INVITE"),
                    ("ok1b", ok, "c1", "2 INVITE"),
                    ("bye2", bye, "c2", "2 BYE"),
                ],
                &["bye1", "ok1", "ok1b", "bye2"],
            ),
            // A setup behind its own call's CANCEL stays behind it.
            (
                &[
                    ("bye9", bye, "c9", "2 BYE"),
                    ("inv1", invite, "c1", "1 INVITE"),
                    ("cancel1", "CANCEL sip:a@b SIP/2.0", "c1", "1 CANCEL"),
                    ("inv1again", invite, "c1", "1 INVITE"),
                ],
                &["inv1", "bye9", "cancel1", "inv1again"],
            ),
            // No Call-ID: not moved.
            (&[("bye1", bye, "c1", "2 BYE"), ("inv-nocall", invite, "", "1 INVITE")], &["bye1", "inv-nocall"]),
            // Nothing to move.
            (&[("bye1", bye, "c1", "2 BYE"), ("bye2", bye, "c2", "2 BYE")], &["bye1", "bye2"]),
        ];
        let mut room = TurnRoom::default();
        for (i, (items, want)) in cases.into_iter().enumerate() {
            let mut turn = turn_of(items);
            setup_first(&mut turn, &mut room);
            assert_eq!(names(&turn), want, "case {i}");
            assert!(room.front.is_empty() && room.rest.is_empty(), "case {i}: the room is left empty");
        }
    }

    /// A wake-up is never earlier than asked, less than a grid step later, and deadlines within
    /// one step share it (one timer, one wake-up).
    #[test]
    fn deadlines_round_up_onto_the_wake_grid() {
        let origin = tokio::time::Instant::now();
        assert_eq!(on_grid(origin, origin), origin);
        assert_eq!(on_grid(origin, origin + WAKE_GRID), origin + WAKE_GRID);
        for ns in [1u64, 999, 1_000_000, 9_999_999, 10_000_001, 123_456_789, 3_600_000_000_000] {
            let at = origin + Duration::from_nanos(ns);
            let woken = on_grid(origin, at);
            assert!(woken >= at && woken - at < WAKE_GRID, "{ns} ns: {:?}", woken - origin);
            assert_eq!((woken - origin).as_nanos() % WAKE_GRID.as_nanos(), 0, "{ns} ns");
        }
        let a = origin + Duration::from_millis(501);
        let b = origin + Duration::from_micros(509_999);
        assert_eq!(on_grid(origin, a), on_grid(origin, b));
        assert_eq!(on_grid(origin, a), origin + Duration::from_millis(510));
        // Before the origin (the driver never asks: its deadlines are from now on): the origin.
        assert_eq!(on_grid(origin + WAKE_GRID, origin), origin + WAKE_GRID);
    }

    fn request(method: &str, branch: &str, cseq_method: &str) -> String {
        format!(
            "{method} sip:+12125551212@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:pbx@10.0.0.5>;tag=f1\r\nTo: <sip:+12125551212@192.0.2.1>\r\n\
             Call-ID: call-1@10.0.0.5\r\nCSeq: 7 {cseq_method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn udp(text: &str) -> Inbound {
        Inbound {
            data: Bytes::from(text.to_owned()),
            kind: TransportKind::Udp,
            local: SWITCH.parse().unwrap(),
            remote: PBX.parse().unwrap(),
            conn: None,
        }
    }

    /// Everything the core wants sent, as (destination, parsed message).
    fn sent(core: &mut Core) -> Vec<(SocketAddr, Message)> {
        std::iter::from_fn(|| core.poll_transmit())
            .map(|o| (o.remote, Message::parse(o.data, Framing::Datagram).expect("we send valid SIP")))
            .collect()
    }

    fn statuses(out: &[(SocketAddr, Message)]) -> Vec<u16> {
        out.iter().filter_map(|(_, m)| m.status()).collect()
    }

    /// Answers every waiting admission as an unknown caller's (403 D25, nothing recorded).
    fn refuse_admissions(core: &mut Core, now: Instant) {
        while let Some(req) = core.poll_admission() {
            let refusal = Admission::refuse(trunking::Reason::D25, None);
            core.admit(req.id, refusal, now);
        }
    }

    const CARRIER: &str = "198.51.100.7:5060";

    /// An outbound call of account `acct` on connection `conn`, as admission identifies it.
    fn outbound_context(req: &crate::admission::AdmissionRequest) -> crate::admission::CallContext {
        crate::admission::CallContext {
            direction: crate::admission::Direction::Outbound,
            call_control_id: req.call_control_id.clone(),
            account_id: "acct".into(),
            connection_id: "conn".into(),
            profile_id: None,
            from_received: "pbx".into(),
            to_received: "+12125551212".into(),
            destination: Some("+12125551212".into()),
            rate: Some(("0.012".parse().unwrap(), trunking::rating::BillingIncrement { first: 60, next: 6 })),
            webhook: None,
            started: req.received,
            trace: trunking::Trace::new(),
        }
    }

    /// Admits every waiting INVITE toward one carrier gateway, with a channel of `counters`.
    fn admit_all(core: &mut Core, counters: &crate::counters::LocalCounters, now: Instant) {
        use crate::admission::AdmittedCall;
        use trunking::outbound::ChannelLimits;
        while let Some(req) = core.poll_admission() {
            let limits =
                ChannelLimits { account: ("acct".into(), Some(1)), profile: None, connection: ("conn".into(), None) };
            let lease = counters.acquire(&limits, &req.call_control_id).expect("a free channel");
            let context = outbound_context(&req);
            let route = crate::call::RouteTarget {
                carrier_id: "carrier".into(),
                host: "198.51.100.7".into(),
                port: 5060,
                transport: trunking::routing::Transport::Udp,
                user: "12125551212".into(),
                credentials: None,
                request_uri: None,
            };
            let target = crate::dns::Target {
                kind: TransportKind::Udp,
                addr: CARRIER.parse().unwrap(),
                host: "198.51.100.7".into(),
            };
            let admitted = AdmittedCall {
                context,
                routes: vec![route],
                targets: vec![Some(target)],
                caller: "+12125550100".into(),
                anonymous: false,
                lease,
                b_headers: Vec::new(),
                timeouts: None,
                ring_together: 0,
                forward: None,
            };
            core.admit(req.id, Admission::Admit(Box::new(admitted)), now);
        }
    }

    /// The carrier's answer to a request we sent it.
    fn answer(req: &Message, status: u16, to_tag: &str) -> Inbound {
        let mut resp = req.response_to(status, "X", (status > 100).then_some(to_tag));
        if status == 200 && req.method() == Some(Method::Invite) {
            resp.push_header(HeaderName::Contact, &format!("<sip:carrier@{CARRIER}>"));
        }
        Inbound {
            data: resp.to_bytes(),
            kind: TransportKind::Udp,
            local: SWITCH.parse().unwrap(),
            remote: CARRIER.parse().unwrap(),
            conn: None,
        }
    }

    /// A core with one UDP listener at [`SWITCH`], advertising 192.0.2.1.
    fn udp_core() -> Core {
        let config = SwitchConfig {
            local_host: "192.0.2.1".into(),
            listeners: vec![(TransportKind::Udp, SWITCH.parse().unwrap())],
            ..SwitchConfig::default()
        };
        Core::new(config, 7)
    }

    #[test]
    fn a_call_flows_through_the_core_and_ends_with_its_record_and_no_channel_held() {
        let counters = crate::counters::LocalCounters::new();
        let mut core = udp_core();
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("INVITE", "z9hG4bKcall1", "INVITE")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![100]);
        admit_all(&mut core, &counters, t0);
        assert_eq!(counters.live(trunking::outbound::Scope::Account, "acct"), 1);
        let out = sent(&mut core);
        assert_eq!(out.len(), 1);
        let (to, b_invite) = &out[0];
        assert_eq!(to.to_string(), CARRIER);
        assert_eq!(b_invite.method(), Some(Method::Invite));
        assert!(b_invite.header(HeaderName::Via).unwrap().starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
        assert_ne!(b_invite.call_id().unwrap(), "call-1@10.0.0.5", "the B-leg has its own Call-ID");

        core.handle_inbound(answer(b_invite, 180, "carrier-tag"), t0);
        core.handle_inbound(answer(b_invite, 200, "carrier-tag"), t0 + Duration::from_secs(1));
        let out = sent(&mut core);
        assert_eq!(statuses(&out), vec![180, 200]);
        assert!(out.iter().all(|(to, _)| to.to_string() == PBX));
        let ok = &out[1].1;
        let a_tag = ok.to().unwrap().tag().unwrap().to_owned();

        // The caller's ACK reaches the carrier end to end.
        let ack = request("ACK", "z9hG4bKack1", "ACK")
            .replace("To: <sip:+12125551212@192.0.2.1>", &format!("To: <sip:+12125551212@192.0.2.1>;tag={a_tag}"));
        core.handle_inbound(udp(&ack), t0 + Duration::from_secs(1));
        let out = sent(&mut core);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.method(), Some(Method::Ack));
        assert_eq!(out[0].0.to_string(), CARRIER);

        // The caller hangs up after a minute and a half: 200 to it, BYE to the carrier.
        let bye = request("BYE", "z9hG4bKbye1", "BYE")
            .replace("To: <sip:+12125551212@192.0.2.1>", &format!("To: <sip:+12125551212@192.0.2.1>;tag={a_tag}"))
            .replace("CSeq: 7 BYE", "CSeq: 8 BYE");
        core.handle_inbound(udp(&bye), t0 + Duration::from_secs(91));
        let out = sent(&mut core);
        assert_eq!(statuses(&out), vec![200]);
        let b_bye = out.iter().find(|(_, m)| m.method() == Some(Method::Bye)).expect("BYE to the carrier").1.clone();
        assert_eq!(counters.live(trunking::outbound::Scope::Account, "acct"), 0, "the channel is back");
        core.handle_inbound(answer(&b_bye, 200, "carrier-tag"), t0 + Duration::from_secs(91));

        let reports: Vec<_> = std::iter::from_fn(|| core.poll_notice())
            .filter_map(|n| match n {
                CallNotice::Ended(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!((r.status, r.ended_by, r.call_sec, r.billed_sec), (200, EndedBy::Caller, 90, 90));
        assert_eq!(r.cost, Some("0.018".parse().unwrap()), "90 s at 0.012/min");
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(r.to_sent.as_deref(), Some("12125551212"));
        // Once the BYE's transaction ends, nothing of the call is left.
        core.handle_timeout(t0 + Duration::from_secs(200));
        assert_eq!(core.call_entries(), 0);
        assert_eq!(core.calls(), 0);
    }

    #[test]
    fn a_core_other_than_the_first_says_when_a_callers_call_id_is_held_and_when_it_is_free() {
        let counters = crate::counters::LocalCounters::new();
        for index in [0, 1] {
            let mut core = udp_core();
            core.shard = Shard { index, count: 2 };
            let t0 = Instant::now();
            core.handle_inbound(udp(&request("INVITE", "z9hG4bKcall1", "INVITE")), t0);
            admit_all(&mut core, &counters, t0);
            let out = sent(&mut core);
            let b_invite = &out.iter().find(|(_, m)| m.method() == Some(Method::Invite)).expect("the B leg").1;
            assert_eq!(core_mark(b_invite.call_id().unwrap().as_bytes()), Some(index), "the B leg's Call-ID is marked");
            let held = core.poll_placement_note();
            // The carrier refuses: the call is over.
            core.handle_inbound(answer(b_invite, 486, "carrier-tag"), t0);
            let notes: Vec<_> = held.into_iter().chain(std::iter::from_fn(|| core.poll_placement_note())).collect();
            if index == 0 {
                assert!(notes.is_empty(), "the first core keeps its own table: {notes:?}");
            } else {
                let note = |held| PlacementNote { call_id: b"call-1@10.0.0.5"[..].into(), held };
                assert_eq!(notes, vec![note(true), note(false)]);
            }
            assert_eq!(core.calls(), 0);
        }
    }

    #[test]
    fn each_core_of_a_sharded_switch_marks_the_call_ids_it_makes() {
        let mut cores = Core::shards(SwitchConfig::default(), 7, 3);
        assert_eq!(cores.len(), 3);
        let mut seen = HashSet::default();
        for (index, core) in cores.iter_mut().enumerate() {
            assert_eq!(core.config.max_transactions, 200_000usize.div_ceil(3));
            for _ in 0..50 {
                let id = core.new_call_id();
                assert_eq!(core_mark(id.as_bytes()), Some(index), "{id}");
                assert!(id.ends_with("@127.0.0.1"), "{id}");
                assert!(seen.insert(id), "a Call-ID made twice");
            }
        }
        // One core takes every Call-ID: its own are not marked.
        let mut one = Core::shards(SwitchConfig::default(), 7, 1);
        assert_eq!(one[0].config.max_transactions, 200_000);
        let id = one[0].new_call_id();
        assert_eq!(core_mark(id.as_bytes()), None, "{id}");
    }

    #[test]
    fn cores_sharing_stats_add_up_their_gauges() {
        let gauge = AtomicU64::new(0);
        let (a, b) = (GaugeShare::default(), GaugeShare::default());
        a.publish(&gauge, 3);
        b.publish(&gauge, 2);
        assert_eq!(gauge.load(Ordering::Relaxed), 5);
        a.publish(&gauge, 1);
        b.publish(&gauge, 2);
        assert_eq!(gauge.load(Ordering::Relaxed), 3);
        a.publish(&gauge, 0);
        b.publish(&gauge, 0);
        assert_eq!(gauge.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn options_ping_is_answered_at_the_rport() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("OPTIONS", "z9hG4bKo1", "OPTIONS")), t0);
        let out = sent(&mut core);
        assert_eq!(statuses(&out), vec![200]);
        let (to, resp) = &out[0];
        assert_eq!(to.to_string(), PBX, "rport: back to the source address and port");
        assert!(resp.header(HeaderName::Allow).unwrap().contains("INVITE"));
        assert!(resp.header(HeaderName::Supported).is_some());
        assert!(resp.to().unwrap().tag().is_some());
        let via = resp.top_via().unwrap();
        assert_eq!((via.received(), via.rport()), (Some("192.0.2.10"), Some(Some(5062))));
    }

    #[test]
    fn retransmitted_invite_is_absorbed_and_the_answer_repeated() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        let invite = request("INVITE", "z9hG4bKi1", "INVITE");
        core.handle_inbound(udp(&invite), t0);
        refuse_admissions(&mut core, t0);
        assert_eq!(statuses(&sent(&mut core)), vec![100, 403]);
        core.handle_inbound(udp(&invite), t0 + Duration::from_millis(500));
        assert_eq!(statuses(&sent(&mut core)), vec![403], "the last response again, nothing new");
        assert_eq!(core.stats().server_transactions.load(Ordering::Relaxed), 1);
        assert_eq!(core.stats().retransmissions_absorbed.load(Ordering::Relaxed), 1);
        assert_eq!(core.stats().responses_retransmitted.load(Ordering::Relaxed), 1);
        // Timer G retransmits the 403 until the ACK comes.
        core.handle_timeout(t0 + Duration::from_millis(600));
        assert_eq!(statuses(&sent(&mut core)), vec![403]);
        assert_eq!(core.stats().responses_retransmitted.load(Ordering::Relaxed), 2);
        let ack = request("ACK", "z9hG4bKi1", "ACK");
        core.handle_inbound(udp(&ack), t0 + Duration::from_millis(700));
        assert!(sent(&mut core).is_empty(), "an ACK is never answered");
        assert_eq!(core.busy_transactions(), 0);
        // Timer I (T4 = 5 s) ends it.
        core.handle_timeout(t0 + Duration::from_secs(6));
        assert_eq!(core.transactions(), 0);
    }

    #[test]
    fn a_transaction_holds_one_timer_entry_however_often_it_is_pumped() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        let options = request("OPTIONS", "z9hG4bKh1", "OPTIONS");
        core.handle_inbound(udp(&options), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![200]);
        // Each retransmission is answered and pumps the transaction; its Timer J is unchanged.
        for i in 1..=10 {
            core.handle_inbound(udp(&options), t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(statuses(&sent(&mut core)), vec![200; 10]);
        assert_eq!(core.timers.len(), 1, "one deadline, not one per pump");
        // Timer J (64*T1) still ends it.
        core.handle_timeout(t0 + Duration::from_secs(31));
        assert_eq!(core.transactions(), 1);
        core.handle_timeout(t0 + Duration::from_secs(33));
        assert_eq!((core.transactions(), core.timers.len()), (0, 0));
    }

    #[test]
    fn cancel_matches_its_invite() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("INVITE", "z9hG4bKc1", "INVITE")), t0);
        sent(&mut core);
        // Cancelled while its admission runs: 487 for the INVITE, 200 for the CANCEL; the
        // admission's answer is then dropped.
        core.handle_inbound(udp(&request("CANCEL", "z9hG4bKc1", "CANCEL")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![200, 487]);
        refuse_admissions(&mut core, t0);
        assert!(sent(&mut core).is_empty());
        // The call failed with what the caller got: the 487, once.
        assert_eq!(core.stats().calls_failed(), vec![(487, None, 1)]);
        assert_eq!(core.stats().calls_by_direction()[2], ("unknown", 1, 0));
        // The INVITE already has its final answer: the CANCEL gets 200 and changes nothing.
        core.handle_inbound(udp(&request("CANCEL", "z9hG4bKc1", "CANCEL")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![200]);
        core.handle_inbound(udp(&request("CANCEL", "z9hG4bKother", "CANCEL")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![481]);
    }

    #[test]
    fn bye_outside_a_dialog_gets_481_and_unknown_methods_501() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("BYE", "z9hG4bKb1", "BYE")), t0);
        core.handle_inbound(udp(&request("PUBLISH", "z9hG4bKp1", "PUBLISH")), t0);
        let out = sent(&mut core);
        assert_eq!(statuses(&out), vec![481, 501]);
        assert!(out[1].1.header(HeaderName::Allow).is_some());
    }

    #[test]
    fn draining_turns_new_calls_away_with_retry_after() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        core.begin_drain();
        core.handle_inbound(udp(&request("INVITE", "z9hG4bKd1", "INVITE")), Instant::now());
        let out = sent(&mut core);
        assert_eq!(statuses(&out), vec![100, 503]);
        assert_eq!(out[1].1.header(HeaderName::RetryAfter), Some("30"));
    }

    #[test]
    fn a_full_transaction_table_answers_503() {
        let config = SwitchConfig { max_transactions: 1, ..SwitchConfig::default() };
        let mut core = Core::new(config, 7);
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("OPTIONS", "z9hG4bKf1", "OPTIONS")), t0);
        core.handle_inbound(udp(&request("OPTIONS", "z9hG4bKf2", "OPTIONS")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![200, 503]);
        assert_eq!(core.stats().overloaded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn malformed_requests_are_answered_statelessly_and_responses_dropped() {
        let mut core = Core::new(SwitchConfig::default(), 7);
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("OPTIONS", "z9hG4bKm1", "INVITE")), t0);
        assert_eq!(statuses(&sent(&mut core)), vec![400]);
        assert_eq!(core.transactions(), 0);
        core.handle_inbound(udp("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\r\n"), t0);
        assert!(sent(&mut core).is_empty());
        core.handle_inbound(udp("\u{0}garbage"), t0);
        assert!(sent(&mut core).is_empty());
    }

    /// Each failed call's (status, reason code) and its count, as `/metrics` labels them.
    fn failed(core: &Core) -> Vec<(u16, &'static str, u64)> {
        core.stats().calls_failed().into_iter().map(|(s, r, n)| (s, r.map_or("none", |r| r.code()), n)).collect()
    }

    #[test]
    fn every_new_invite_is_counted_once_as_attempted_and_once_as_answered_or_failed_with_its_reason() {
        let counters = crate::counters::LocalCounters::new();
        let mut core = udp_core();
        let t0 = Instant::now();
        let invite =
            |n: u32| request("INVITE", &format!("z9hG4bKcount{n}"), "INVITE").replace("call-1@", &format!("call-{n}@"));

        // An identified outbound caller over its account's limit: 403 D1.
        core.handle_inbound(udp(&invite(1)), t0);
        let req = core.poll_admission().expect("an admission");
        let r = trunking::Reason::D1.response();
        let refusal = Admission::Refuse {
            status: r.status,
            phrase: r.phrase,
            reason: Some(trunking::Reason::D1),
            headers: Vec::new(),
            context: Some(Box::new(outbound_context(&req))),
        };
        core.admit(req.id, refusal, t0);
        assert_eq!(statuses(&sent(&mut core)), vec![100, 403]);
        assert_eq!(failed(&core), vec![(403, "D1", 1)]);

        // An unknown caller: D25, its direction never known.
        core.handle_inbound(udp(&invite(2)), t0);
        refuse_admissions(&mut core, t0);
        // A call the carrier answers, and one it refuses busy (no product code).
        core.handle_inbound(udp(&invite(3)), t0);
        admit_all(&mut core, &counters, t0);
        let b_invite = sent(&mut core).into_iter().find(|(_, m)| m.method() == Some(Method::Invite)).unwrap().1;
        core.handle_inbound(answer(&b_invite, 200, "carrier-tag"), t0);
        core.handle_inbound(udp(&invite(4)), t0);
        // The first call holds the account's one channel: the second takes the next lease.
        let counters_2 = crate::counters::LocalCounters::new();
        admit_all(&mut core, &counters_2, t0);
        let b_invite_2 =
            sent(&mut core).into_iter().filter(|(_, m)| m.method() == Some(Method::Invite)).last().unwrap().1;
        core.handle_inbound(answer(&b_invite_2, 486, "carrier-tag-2"), t0);
        // Max-Forwards spent: 483 P93 before admission.
        core.handle_inbound(udp(&invite(5).replace("Max-Forwards: 70", "Max-Forwards: 1")), t0);
        // Draining: 503 before admission, no reason code.
        core.begin_drain();
        core.handle_inbound(udp(&invite(6)), t0);
        sent(&mut core);

        let stats = core.stats();
        assert_eq!(
            stats.calls_by_direction(),
            [("outbound", 3, 1), ("inbound", 0, 0), ("unknown", 3, 0)],
            "(direction, attempted, answered)"
        );
        let p93 = trunking::Reason::P93.response().status;
        let mut want = vec![(403, "D1", 1), (403, "D25", 1), (486, "none", 1), (503, "none", 1), (p93, "P93", 1)];
        want.sort();
        let mut got = failed(&core);
        got.sort();
        assert_eq!(got, want);
        let attempted: u64 = stats.calls_by_direction().iter().map(|d| d.1).sum();
        let ended: u64 = stats.calls_by_direction().iter().map(|d| d.2).sum::<u64>()
            + stats.calls_failed().iter().map(|f| f.2).sum::<u64>();
        assert_eq!(attempted, ended, "every attempt answered or failed");
    }

    #[test]
    fn client_transactions_and_the_requests_they_send_again_are_counted() {
        let counters = crate::counters::LocalCounters::new();
        let mut core = udp_core();
        let t0 = Instant::now();
        core.handle_inbound(udp(&request("INVITE", "z9hG4bKretx", "INVITE")), t0);
        admit_all(&mut core, &counters, t0);
        let b_invite = sent(&mut core).into_iter().find(|(_, m)| m.method() == Some(Method::Invite)).unwrap().1;
        let stats = core.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((get(&stats.client_transactions), get(&stats.live_client_transactions)), (1, 1));
        assert_eq!(
            (get(&stats.server_transactions), get(&stats.live_transactions)),
            (1, 1),
            "the caller's INVITE transaction"
        );
        // Timer A: the carrier is silent for half a second, the INVITE goes again.
        core.handle_timeout(t0 + Duration::from_millis(500));
        let again: Vec<_> = sent(&mut core).into_iter().filter(|(_, m)| m.method() == Some(Method::Invite)).collect();
        assert_eq!(again.len(), 1);
        assert_eq!(get(&stats.requests_retransmitted), 1);
        // The carrier answers; our 2xx to the caller goes again on T1 until its ACK.
        core.handle_inbound(answer(&b_invite, 200, "carrier-tag"), t0 + Duration::from_millis(600));
        sent(&mut core);
        assert_eq!(get(&stats.responses_retransmitted), 0);
        core.handle_timeout(t0 + Duration::from_millis(1100));
        let ok = sent(&mut core);
        assert_eq!(statuses(&ok), vec![200]);
        assert_eq!(get(&stats.responses_retransmitted), 1);
        let a_tag = ok[0].1.to().unwrap().tag().unwrap().to_owned();
        let ack = request("ACK", "z9hG4bKretxack", "ACK")
            .replace("To: <sip:+12125551212@192.0.2.1>", &format!("To: <sip:+12125551212@192.0.2.1>;tag={a_tag}"));
        core.handle_inbound(udp(&ack), t0 + Duration::from_millis(1150));
        sent(&mut core);
        // The carrier's 2xx again (our ACK was lost): the same ACK again.
        core.handle_inbound(answer(&b_invite, 200, "carrier-tag"), t0 + Duration::from_millis(1200));
        let acks: Vec<_> = sent(&mut core).into_iter().filter(|(_, m)| m.method() == Some(Method::Ack)).collect();
        assert_eq!(acks.len(), 1);
        assert_eq!(get(&stats.requests_retransmitted), 2);
        // Timer M ends the carrier's INVITE transaction; the call stays up.
        core.handle_timeout(t0 + Duration::from_secs(40));
        assert_eq!(core.calls(), 1);
        assert_eq!(get(&stats.live_client_transactions), 0);
        assert_eq!(get(&stats.client_transactions), 1);
    }

    #[test]
    fn a_call_over_keeps_only_its_acks_for_the_carriers_late_2xx_until_timer_m() {
        let counters = crate::counters::LocalCounters::new();
        let mut core = udp_core();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        core.handle_inbound(udp(&request("INVITE", "z9hG4bKend", "INVITE")), t0);
        admit_all(&mut core, &counters, t0);
        let b_invite = sent(&mut core).into_iter().find(|(_, m)| m.method() == Some(Method::Invite)).unwrap().1;
        core.handle_inbound(answer(&b_invite, 200, "carrier-tag"), ms(10));
        let ok = sent(&mut core).into_iter().find(|(_, m)| m.status() == Some(200)).unwrap().1;
        let a_tag = ok.to().unwrap().tag().unwrap().to_owned();
        let in_dialog = |method: &str, branch: &str, cseq: &str| {
            request(method, branch, cseq)
                .replace("To: <sip:+12125551212@192.0.2.1>", &format!("To: <sip:+12125551212@192.0.2.1>;tag={a_tag}"))
        };
        core.handle_inbound(udp(&in_dialog("ACK", "z9hG4bKendack", "ACK")), ms(20));
        let first_ack = sent(&mut core).into_iter().find(|(_, m)| m.method() == Some(Method::Ack)).unwrap().1;
        // The caller hangs up; the carrier answers our BYE: the call is over and reported.
        core.handle_inbound(udp(&in_dialog("BYE", "z9hG4bKendbye", "BYE").replace("CSeq: 7", "CSeq: 8")), ms(30));
        let bye = sent(&mut core).into_iter().find(|(_, m)| m.method() == Some(Method::Bye)).unwrap().1;
        core.handle_inbound(answer(&bye, 200, "carrier-tag"), ms(40));
        sent(&mut core);
        assert!(matches!(core.poll_notice(), Some(CallNotice::Initiated { .. })));
        assert!(matches!(core.poll_notice(), Some(CallNotice::Answered { .. })));
        assert!(matches!(core.poll_notice(), Some(CallNotice::Ended(_))));
        assert_eq!(core.calls(), 0);
        assert_eq!((core.calls.len(), core.ended.len()), (0, 1), "only the ended call's ACKs are kept");

        // The carrier's 2xx again (our ACK was lost): the very same ACK.
        core.handle_inbound(answer(&b_invite, 200, "carrier-tag"), ms(50));
        let again = sent(&mut core);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.to_bytes(), first_ack.to_bytes());
        // A 2xx of another dialog (a fork downstream): ACKed and hung up, from the 2xx alone.
        core.handle_inbound(answer(&b_invite, 200, "fork-tag"), ms(60));
        let out = sent(&mut core);
        let methods: Vec<_> = out.iter().map(|(_, m)| m.method()).collect();
        assert_eq!(methods, vec![Some(Method::Ack), Some(Method::Bye)]);
        let invite_cseq = b_invite.cseq().unwrap().seq;
        for ((to, m), cseq) in out.iter().zip([invite_cseq, invite_cseq + 1]) {
            assert_eq!(to.to_string(), CARRIER);
            assert_eq!(m.request_uri_str(), Some(format!("sip:carrier@{CARRIER}").as_str()));
            assert_eq!(m.to().unwrap().tag(), Some("fork-tag"));
            assert_eq!(m.from().unwrap().tag(), b_invite.from().unwrap().tag());
            assert_eq!(m.call_id().unwrap(), b_invite.call_id().unwrap());
            assert_eq!(m.cseq().unwrap().seq, cseq);
        }
        // Timer M (and the fork's BYE's Timer F) end it all.
        core.handle_timeout(t0 + Duration::from_secs(40));
        core.handle_timeout(t0 + Duration::from_secs(80));
        assert_eq!(core.call_entries(), 0);
        assert_eq!(core.stats().live_client_transactions.load(Ordering::Relaxed), 0);
    }
}
