//! Locating SIP servers (RFC 3263): which transport, address and port a request for a SIP or
//! SIPS URI goes to, as an ordered list that failover walks from the front.
//!
//! Two halves, in house style. [`Resolution`] is the pure core: it takes DNS answers as plain
//! data, says which queries it still needs ([`Resolution::poll_queries`]) and, once it has them
//! all, computes the ordered targets ([`Resolution::finish`]); randomness for the SRV weights is
//! passed in. [`Locator`] is the thin driver: it asks hickory-resolver those queries and caches
//! the answers per destination until the lowest TTL among them runs out.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use rand::{Rng, RngExt};
use sip::{Host, SipUri};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::transport::TransportKind;

/// Longest time a "does not exist" answer is believed (RFC 2308 allows the SOA minimum, often
/// an hour; a trunk whose DNS was just fixed should not stay dark that long).
pub const NEGATIVE_TTL_CAP: Duration = Duration::from_secs(30);
/// Longest time a result is cached when one of the queries behind it failed (timeout,
/// SERVFAIL): the result may be partial, so it is retried soon.
pub const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Longest time any result is cached, whatever the TTLs say (as hickory's own `MAX_TTL`).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Destinations the [`Locator`] remembers.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Longest a [`Locator::locate`] may take, all queries included: well inside the 32 s an INVITE
/// client transaction lives (RFC 3261 Timer B), so failover still has time to act.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One place to send a request: the next hop of RFC 3263 section 4.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub kind: TransportKind,
    pub addr: SocketAddr,
    /// The name a TLS server must prove and the SNI to send: the host of the URI, never a name
    /// learnt from NAPTR or SRV, which whoever answers the DNS could choose (RFC 5922 section
    /// 4, RFC 6125 section 6.2.1). An IP address as text when the URI host is one.
    pub host: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.kind, self.addr, self.host)
    }
}

/// Why no target was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocateError {
    /// The name does not exist, or nothing in the DNS leads to an address.
    NotFound,
    /// The DNS servers did not answer in time.
    Timeout,
    /// The URI asks for something this switch does not speak (`transport=sctp`, SIPS over UDP).
    Unsupported(String),
    /// Any other failure: SERVFAIL, REFUSED, a resolver that could not be set up.
    Other(String),
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocateError::NotFound => f.write_str("no SIP server found"),
            LocateError::Timeout => f.write_str("DNS timed out"),
            LocateError::Unsupported(what) => write!(f, "unsupported: {what}"),
            LocateError::Other(what) => write!(f, "DNS failure: {what}"),
        }
    }
}

impl std::error::Error for LocateError {}

/// What of a SIP or SIPS URI server location depends on (RFC 3263 section 4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// TARGET of RFC 3263 section 4: the `maddr` parameter if present, else the host. A domain
    /// name in lowercase without a trailing dot, or an IP address as text.
    pub target: String,
    /// `target` as an address when it is numeric: no DNS at all then.
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// The `transport` parameter; for a SIPS URI always TLS.
    pub transport: Option<TransportKind>,
    /// `sips:`: only TLS may be used (RFC 3261 section 26.2.2).
    pub secure: bool,
    /// See [`Target::host`].
    pub tls_name: String,
}

impl Destination {
    pub fn from_uri(uri: &SipUri<'_>) -> Result<Destination, LocateError> {
        let transport = match uri.transport() {
            None => None,
            Some(token) => match (TransportKind::from_token(token), uri.secure) {
                (Some(TransportKind::Udp), true) => {
                    return Err(LocateError::Unsupported("sips with transport=udp".into()));
                }
                // `sips:...;transport=tcp` is TLS over TCP (RFC 3261 section 26.2.2).
                (Some(_), true) => Some(TransportKind::Tls),
                (Some(kind), false) => Some(kind),
                (None, _) => return Err(LocateError::Unsupported(format!("transport={token}"))),
            },
        };
        // An address's text is written once, without the formatting machinery: every call
        // locates its gateways by an IP literal.
        let ip_text = |ip: IpAddr| {
            let mut s = String::with_capacity(15);
            sip::message::push_ip(&mut s, ip);
            s
        };
        let tls_name = match uri.host {
            Host::Domain(d) => normalize(d),
            Host::Ipv4(a) => ip_text(IpAddr::V4(a)),
            Host::Ipv6(a) => ip_text(IpAddr::V6(a)),
        };
        let (target, ip) = match (uri.maddr(), uri.host.ip()) {
            (Some(maddr), _) => {
                let bare = maddr.strip_prefix('[').and_then(|m| m.strip_suffix(']')).unwrap_or(maddr);
                match bare.parse::<IpAddr>() {
                    Ok(ip) => (ip_text(ip), Some(ip)),
                    Err(_) => (normalize(maddr), None),
                }
            }
            // The host's own address: its text is the TLS name's.
            (None, ip) => (tls_name.clone(), ip),
        };
        Ok(Destination { target, ip, port: uri.port, transport, secure: uri.secure, tls_name })
    }

    /// The transport when nothing in the URI or the DNS says which: UDP for SIP, TLS for SIPS
    /// (RFC 3263 section 4.1; its "TCP for a SIPS URI" is TLS over TCP).
    fn default_kind(&self) -> TransportKind {
        if self.secure { TransportKind::Tls } else { TransportKind::Udp }
    }
}

/// A DNS question the core needs answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    /// Lowercase, without the trailing dot; always meant as an absolute name.
    pub name: String,
    pub rtype: QueryType,
}

impl Query {
    pub fn new(name: &str, rtype: QueryType) -> Query {
        Query { name: normalize(name), rtype }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryType {
    Naptr,
    Srv,
    A,
    Aaaa,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NaptrRecord {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    /// The next name to query; empty for the root (a record that uses REGEXP instead, which
    /// SIP does not).
    pub replacement: String,
    pub ttl: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Empty for `.`, "decidedly not available" (RFC 2782).
    pub target: String,
    pub ttl: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRecord {
    pub ip: IpAddr,
    pub ttl: u32,
}

/// The answer to one [`Query`], as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Naptr(Vec<NaptrRecord>),
    Srv(Vec<SrvRecord>),
    /// For an A or an AAAA query.
    Addrs(Vec<AddrRecord>),
    /// No records of that type (NODATA), or no such name at all (NXDOMAIN); the negative TTL
    /// comes from the SOA of the response, when it had one (RFC 2308 section 5).
    NoRecords {
        nxdomain: bool,
        negative_ttl: Option<u32>,
    },
    /// The query failed. Counted as empty so the rest of the search goes on; reported as the
    /// error if nothing at all is found.
    Failed(QueryFailure),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryFailure {
    Timeout,
    Other(String),
}

/// The ordered targets for a destination, with how long they may be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub targets: Vec<Target>,
    /// The lowest TTL of the answers used (capped by [`MAX_TTL`], and by [`FAILURE_TTL`] when a
    /// query failed); `None` when no DNS was involved (a numeric IP).
    pub ttl: Option<Duration>,
}

/// No target, and how long that verdict may be cached (only a [`LocateError::NotFound`] is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub error: LocateError,
    pub ttl: Option<Duration>,
}

/// RFC 3263 server location for one destination, without I/O.
///
/// Feed it the answers to what [`poll_queries`](Self::poll_queries) asks, in any order, until it
/// asks for nothing more; then [`finish`](Self::finish). Queries come in at most three rounds
/// (NAPTR, then SRV, then A and AAAA) and each round may be sent all at once. A finished
/// resolution can be finished again with fresh randomness: that is how cached answers still
/// spread load by SRV weight.
#[derive(Clone, Debug)]
pub struct Resolution {
    dest: Destination,
    answers: HashMap<Query, Answer>,
}

impl Resolution {
    pub fn new(dest: Destination) -> Resolution {
        Resolution { dest, answers: HashMap::new() }
    }

    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Records the answer to a query; the answer of the right variant for the query type, or
    /// `NoRecords`/`Failed` (any other variant counts as no records).
    pub fn handle_answer(&mut self, query: Query, answer: Answer) {
        self.answers.insert(query, answer);
    }

    /// The queries still needed before [`finish`](Self::finish); empty when there are none.
    pub fn poll_queries(&self) -> Vec<Query> {
        if self.unreachable() {
            return Vec::new();
        }
        self.plan().err().unwrap_or_default()
    }

    /// Queries timed out and none was answered: the servers are unreachable, and every further
    /// query would go to them and wait as long again.
    fn unreachable(&self) -> bool {
        self.answers.values().any(|a| *a == Answer::Failed(QueryFailure::Timeout))
            && self.answers.values().all(|a| matches!(a, Answer::Failed(_)))
    }

    /// The targets in the order to try them: RFC 3263 section 4 applied to the answers, SRV
    /// weights drawn from `rng`.
    pub fn finish<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Located, Unresolved> {
        let plan = self.plan().map_err(|missing| Unresolved {
            error: if self.unreachable() {
                LocateError::Timeout
            } else {
                LocateError::Other(format!("{} DNS answers missing", missing.len()))
            },
            ttl: None,
        })?;
        let mut targets: Vec<Target> = Vec::new();
        let mut push = |kind, ip, port| {
            let t = Target { kind, addr: SocketAddr::new(ip, port), host: self.dest.tls_name.clone() };
            if !targets.contains(&t) {
                targets.push(t);
            }
        };
        for group in &plan.groups {
            match group {
                Group::Ip { kind, ip, port } => push(*kind, *ip, *port),
                Group::Host { kind, name, port } => self.addrs(name).for_each(|ip| push(*kind, ip, *port)),
                Group::Srv { kind, records } => {
                    for r in order_srv(records, rng) {
                        self.addrs(&r.target).for_each(|ip| push(*kind, ip, r.port));
                    }
                }
            }
        }
        if targets.is_empty() {
            let error = match plan.failed {
                Some(QueryFailure::Timeout) => LocateError::Timeout,
                Some(QueryFailure::Other(e)) => LocateError::Other(e),
                None => LocateError::NotFound,
            };
            let ttl =
                (error == LocateError::NotFound).then(|| plan.ttl.unwrap_or(NEGATIVE_TTL_CAP).min(NEGATIVE_TTL_CAP));
            return Err(Unresolved { error, ttl });
        }
        Ok(Located { targets, ttl: plan.ttl.map(|t| t.min(MAX_TTL)) })
    }

    /// Walks RFC 3263 as far as the answers at hand allow: the plan, or the queries that block
    /// it.
    fn plan(&self) -> Result<Plan, Vec<Query>> {
        let d = &self.dest;
        let mut walk = Walk { answers: &self.answers, missing: Vec::new(), ttl: None, failed: None };
        let mut groups = Vec::new();
        if let Some(ip) = d.ip {
            // Section 4.1/4.2: a numeric IP is used as is.
            let kind = d.transport.unwrap_or(d.default_kind());
            groups.push(Group::Ip { kind, ip, port: d.port.unwrap_or(default_port(kind)) });
        } else if let Some(port) = d.port {
            // Section 4.2: with a port there is no NAPTR or SRV, only A/AAAA.
            groups.push(Group::Host { kind: d.transport.unwrap_or(d.default_kind()), name: d.target.clone(), port });
        } else {
            let (services, fallback) = match d.transport {
                // Section 4.2: an explicit transport goes straight to its SRV name.
                Some(kind) => (vec![(srv_name(kind, &d.target), kind)], kind),
                None => {
                    let naptr = walk.get(&d.target, QueryType::Naptr).ok_or_else(|| walk.missing.clone())?;
                    if matches!(naptr, Answer::NoRecords { nxdomain: true, .. }) {
                        // No such name: nothing below it exists either (RFC 8020).
                        return Ok(walk.into_plan(groups));
                    }
                    let records = match naptr {
                        Answer::Naptr(r) => r.as_slice(),
                        _ => &[],
                    };
                    let chosen = select_naptr(records, d.secure);
                    match chosen.first() {
                        Some(&(_, kind)) => (chosen, kind),
                        None => (default_services(&d.target, d.secure), d.default_kind()),
                    }
                }
            };
            let mut any_srv = false;
            for (name, kind) in services {
                if let Some(Answer::Srv(records)) = walk.get(&name, QueryType::Srv) {
                    any_srv |= !records.is_empty();
                    let records: Vec<_> = records.iter().filter(|r| !r.target.is_empty()).cloned().collect();
                    if !records.is_empty() {
                        groups.push(Group::Srv { kind, records });
                    }
                }
            }
            if !walk.missing.is_empty() {
                return Err(walk.missing);
            }
            if !any_srv {
                // Section 4.2: no SRV, so A/AAAA of the domain at the transport's default port.
                groups.push(Group::Host { kind: fallback, name: d.target.clone(), port: default_port(fallback) });
            }
        }
        // Section 4.2: every SRV target expands to all its addresses.
        for group in &groups {
            let names: Vec<&str> = match group {
                Group::Ip { .. } => vec![],
                Group::Host { name, .. } => vec![name],
                Group::Srv { records, .. } => records.iter().map(|r| r.target.as_str()).collect(),
            };
            for name in names {
                walk.get(name, QueryType::A);
                walk.get(name, QueryType::Aaaa);
            }
        }
        if !walk.missing.is_empty() {
            return Err(walk.missing);
        }
        Ok(walk.into_plan(groups))
    }

    /// The addresses of `name`, IPv4 first: most carrier peers still listen on IPv4 only, and
    /// failover reaches the IPv6 ones anyway.
    fn addrs(&self, name: &str) -> impl Iterator<Item = IpAddr> + '_ {
        let answers = [QueryType::A, QueryType::Aaaa].map(|rtype| self.answers.get(&Query::new(name, rtype)));
        answers.into_iter().flat_map(|answer| {
            let records = match answer {
                Some(Answer::Addrs(r)) => r.as_slice(),
                _ => &[],
            };
            records.iter().map(|r| r.ip)
        })
    }
}

/// One step of the ordered list, before randomness and address expansion.
enum Group {
    Ip { kind: TransportKind, ip: IpAddr, port: u16 },
    Host { kind: TransportKind, name: String, port: u16 },
    Srv { kind: TransportKind, records: Vec<SrvRecord> },
}

struct Plan {
    groups: Vec<Group>,
    ttl: Option<Duration>,
    failed: Option<QueryFailure>,
}

/// The bookkeeping of one walk: what was missing, the lowest TTL seen, the first failure.
struct Walk<'a> {
    answers: &'a HashMap<Query, Answer>,
    missing: Vec<Query>,
    ttl: Option<Duration>,
    failed: Option<QueryFailure>,
}

impl<'a> Walk<'a> {
    fn get(&mut self, name: &str, rtype: QueryType) -> Option<&'a Answer> {
        let query = Query::new(name, rtype);
        let Some(answer) = self.answers.get(&query) else {
            if !self.missing.contains(&query) {
                self.missing.push(query);
            }
            return None;
        };
        let secs = |ttls: &mut dyn Iterator<Item = u32>| ttls.min().map(|t| Duration::from_secs(t.into()));
        let ttl = match answer {
            Answer::Naptr(r) => secs(&mut r.iter().map(|r| r.ttl)),
            Answer::Srv(r) => secs(&mut r.iter().map(|r| r.ttl)),
            Answer::Addrs(r) => secs(&mut r.iter().map(|r| r.ttl)),
            Answer::NoRecords { negative_ttl, .. } => {
                Some(negative_ttl.map_or(NEGATIVE_TTL_CAP, |t| Duration::from_secs(t.into())))
            }
            Answer::Failed(f) => {
                self.failed.get_or_insert_with(|| f.clone());
                Some(FAILURE_TTL)
            }
        };
        if let Some(ttl) = ttl {
            self.ttl = Some(self.ttl.map_or(ttl, |t| t.min(ttl)));
        }
        Some(answer)
    }

    fn into_plan(self, groups: Vec<Group>) -> Plan {
        Plan { groups, ttl: self.ttl, failed: self.failed }
    }
}

/// RFC 3263 section 4.1 with RFC 3403 section 4: keep the terminal (`S`) records whose service
/// we speak (only SIPS ones for a SIPS URI), then only those of the lowest order (a client MUST
/// NOT move on to another order once one matched), by preference. Each becomes an SRV name with
/// its transport, duplicates dropped.
pub fn select_naptr(records: &[NaptrRecord], secure: bool) -> Vec<(String, TransportKind)> {
    let mut usable: Vec<(&NaptrRecord, TransportKind)> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s") && !r.replacement.is_empty())
        .filter_map(|r| naptr_transport(&r.services, secure).map(|kind| (r, kind)))
        .collect();
    let Some(lowest) = usable.iter().map(|(r, _)| r.order).min() else {
        return Vec::new();
    };
    usable.retain(|(r, _)| r.order == lowest);
    usable.sort_by_key(|(r, _)| r.preference);
    let mut out: Vec<(String, TransportKind)> = Vec::new();
    for (r, kind) in usable {
        let entry = (normalize(&r.replacement), kind);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// The transport of a NAPTR service field (RFC 3263 section 4.1), if we speak it. SCTP
/// (`SIP+D2S`) is not spoken; WebSocket (`SIP+D2W`, `SIPS+D2W`, RFC 7118) slots in here once
/// the transport layer has it.
fn naptr_transport(services: &str, secure: bool) -> Option<TransportKind> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" if !secure => Some(TransportKind::Udp),
        "SIP+D2T" if !secure => Some(TransportKind::Tcp),
        "SIPS+D2T" => Some(TransportKind::Tls),
        _ => None,
    }
}

/// Section 4.1 without NAPTR: an SRV query per transport we speak, most secure first.
fn default_services(target: &str, secure: bool) -> Vec<(String, TransportKind)> {
    let kinds: &[TransportKind] =
        if secure { &[TransportKind::Tls] } else { &[TransportKind::Tls, TransportKind::Tcp, TransportKind::Udp] };
    kinds.iter().map(|&kind| (srv_name(kind, target), kind)).collect()
}

/// Section 4.2: `_sips` for TLS (also under a SIP URI), `_sip` otherwise.
fn srv_name(kind: TransportKind, target: &str) -> String {
    match kind {
        TransportKind::Udp => format!("_sip._udp.{target}"),
        TransportKind::Tcp => format!("_sip._tcp.{target}"),
        TransportKind::Tls => format!("_sips._tcp.{target}"),
    }
}

/// RFC 3261 section 19.1.2.
fn default_port(kind: TransportKind) -> u16 {
    match kind {
        TransportKind::Tls => 5061,
        TransportKind::Udp | TransportKind::Tcp => 5060,
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// RFC 2782 ordering of one SRV RRset (RFC 3263 section 4.2): ascending priority; within a
/// priority, repeated weighted random selection.
///
/// RFC 2782 draws from `0..=sum`, which gives the first record one extra chance in `sum + 1`
/// (weights 3:1 come out 60:40, not 75:25). Here weighted records are drawn from `0..sum`, so
/// their shares are exactly proportional, and the one extra value, only when weight-0 records
/// are present, picks a weight-0 record: the "very small chance" RFC 2782 asks for them.
pub fn order_srv<R: Rng + ?Sized>(records: &[SrvRecord], rng: &mut R) -> Vec<SrvRecord> {
    let mut sorted: Vec<&SrvRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    for same_priority in sorted.chunk_by(|a, b| a.priority == b.priority) {
        // Weight-0 records first, in the order given.
        let (mut pool, weighted): (Vec<&SrvRecord>, Vec<&SrvRecord>) =
            same_priority.iter().partition(|r| r.weight == 0);
        pool.extend(weighted);
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|r| u64::from(r.weight)).sum();
            let has_zero = pool[0].weight == 0;
            let pick = if total == 0 {
                0
            } else {
                let draw = rng.random_range(0..total + u64::from(has_zero));
                let mut running = 0;
                pool.iter()
                    .position(|r| {
                        running += u64::from(r.weight);
                        running > draw
                    })
                    .unwrap_or(0) // the extra draw: the first weight-0 record
            };
            out.push(pool.remove(pick).clone());
        }
    }
    out
}

/// RFC 3263 server location over the network, with a cache.
///
/// The cache keeps the DNS answers of each destination (host or `maddr`, port, transport,
/// scheme) until the lowest TTL among them expires, so a second `locate` within the TTL sends
/// no query; the order is drawn afresh on every call, so SRV weights still spread the load.
/// "No such name" is kept for at most [`NEGATIVE_TTL_CAP`]; failures are not kept.
pub struct Locator {
    resolver: TokioResolver,
    cache: Mutex<Cache>,
    timeout: Duration,
}

impl Locator {
    /// Uses the system's resolver configuration (`/etc/resolv.conf`).
    pub fn system() -> Result<Locator, LocateError> {
        let mut builder = TokioResolver::builder_tokio().map_err(|e| LocateError::Other(e.to_string()))?;
        tune(builder.options_mut());
        Self::build(builder.build())
    }

    /// Uses exactly these DNS servers, over UDP with TCP for truncated answers, and no hosts
    /// file: for operators who pin resolvers, and for tests.
    pub fn with_nameservers(servers: Vec<SocketAddr>) -> Result<Locator, LocateError> {
        let servers = servers
            .into_iter()
            .map(|server| {
                let mut config = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut config.connections {
                    connection.port = server.port();
                }
                config
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        tune(options);
        options.use_hosts_file = ResolveHosts::Never;
        Self::build(builder.build())
    }

    /// Keeps at most `capacity` destinations (default [`DEFAULT_CACHE_CAPACITY`]); 0 turns the
    /// cache off.
    pub fn with_cache_capacity(self, capacity: usize) -> Locator {
        Locator { cache: Mutex::new(Cache::new(capacity)), ..self }
    }

    /// Bounds each `locate`, all its queries together (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Locator {
        Locator { timeout, ..self }
    }

    fn build(resolver: Result<TokioResolver, NetError>) -> Result<Locator, LocateError> {
        let resolver = resolver.map_err(|e| LocateError::Other(e.to_string()))?;
        Ok(Locator { resolver, cache: Mutex::new(Cache::new(DEFAULT_CACHE_CAPACITY)), timeout: DEFAULT_TIMEOUT })
    }

    /// The targets for `uri`, in the order to try them (RFC 3263 section 4).
    pub async fn locate(&self, uri: &SipUri<'_>) -> Result<Vec<Target>, LocateError> {
        let dest = Destination::from_uri(uri)?;
        if dest.ip.is_some() {
            return Resolution::new(dest).finish(&mut rand::rng()).map(|l| l.targets).map_err(|u| u.error);
        }
        let cached = self.cache().get(&dest, Instant::now());
        match cached {
            Some(Cached::Found(resolution)) => {
                return resolution.finish(&mut rand::rng()).map(|l| l.targets).map_err(|u| u.error);
            }
            Some(Cached::NotFound) => return Err(LocateError::NotFound),
            None => {}
        }
        let mut resolution = Resolution::new(dest.clone());
        tokio::time::timeout(self.timeout, self.ask(&mut resolution)).await.map_err(|_| LocateError::Timeout)??;
        let outcome = resolution.finish(&mut rand::rng());
        let now = Instant::now();
        match &outcome {
            Ok(Located { ttl: Some(ttl), .. }) if !ttl.is_zero() => {
                self.cache().insert(dest, Cached::Found(Arc::new(resolution)), now + *ttl, now);
            }
            Err(Unresolved { ttl: Some(ttl), .. }) if !ttl.is_zero() => {
                self.cache().insert(dest, Cached::NotFound, now + *ttl, now);
            }
            _ => {}
        }
        outcome.map(|l| l.targets).map_err(|u| u.error)
    }

    /// Asks what the resolution needs, round by round, each round's queries at once.
    async fn ask(&self, resolution: &mut Resolution) -> Result<(), LocateError> {
        // NAPTR, SRV, A/AAAA: three rounds; one more lets `poll_queries` say it is done.
        for _ in 0..4 {
            let queries = resolution.poll_queries();
            if queries.is_empty() {
                break;
            }
            let mut lookups = JoinSet::new();
            for query in queries {
                let resolver = self.resolver.clone();
                lookups.spawn(async move {
                    let answer = lookup(&resolver, &query).await;
                    (query, answer)
                });
            }
            while let Some(done) = lookups.join_next().await {
                let (query, answer) = done.map_err(|e| LocateError::Other(e.to_string()))?;
                resolution.handle_answer(query, answer);
            }
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One cache, ours: hickory's would keep answers that ours already holds, under its own
/// expiry. A capacity of 0 disables it entirely (moka stores nothing then).
fn tune(options: &mut ResolverOpts) {
    options.cache_size = 0;
}

/// Asks one query. Names are sent absolute: the host of a SIP URI is a domain name, not a
/// candidate for the resolv.conf search list.
async fn lookup(resolver: &TokioResolver, query: &Query) -> Answer {
    let rtype = match query.rtype {
        QueryType::Naptr => RecordType::NAPTR,
        QueryType::Srv => RecordType::SRV,
        QueryType::A => RecordType::A,
        QueryType::Aaaa => RecordType::AAAA,
    };
    let name = match Name::from_ascii(format!("{}.", query.name)) {
        Ok(name) => name,
        Err(e) => return Answer::Failed(QueryFailure::Other(format!("{}: {e}", query.name))),
    };
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => answer_from_records(query.rtype, lookup.answers()),
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => Answer::NoRecords {
            nxdomain: none.response_code == hickory_resolver::proto::op::ResponseCode::NXDomain,
            negative_ttl: none.negative_ttl,
        },
        Err(NetError::Timeout) => Answer::Failed(QueryFailure::Timeout),
        Err(e) => Answer::Failed(QueryFailure::Other(e.to_string())),
    }
}

/// The records of the queried type; CNAMEs on the way are followed by hickory and dropped here.
fn answer_from_records(rtype: QueryType, records: &[Record]) -> Answer {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match rtype {
        QueryType::Naptr => Answer::Naptr(
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NAPTR(n) => Some(NaptrRecord {
                        order: n.order,
                        preference: n.preference,
                        flags: text(&n.flags),
                        services: text(&n.services),
                        replacement: normalize(&n.replacement.to_ascii()),
                        ttl: r.ttl,
                    }),
                    _ => None,
                })
                .collect(),
        ),
        QueryType::Srv => Answer::Srv(
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(SrvRecord {
                        priority: s.priority,
                        weight: s.weight,
                        port: s.port,
                        target: normalize(&s.target.to_ascii()),
                        ttl: r.ttl,
                    }),
                    _ => None,
                })
                .collect(),
        ),
        QueryType::A | QueryType::Aaaa => Answer::Addrs(
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) if rtype == QueryType::A => Some(AddrRecord { ip: IpAddr::V4(a.0), ttl: r.ttl }),
                    RData::AAAA(a) if rtype == QueryType::Aaaa => Some(AddrRecord { ip: IpAddr::V6(a.0), ttl: r.ttl }),
                    _ => None,
                })
                .collect(),
        ),
    }
}

#[derive(Clone)]
enum Cached {
    Found(Arc<Resolution>),
    NotFound,
}

struct CacheEntry {
    value: Cached,
    expires: Instant,
}

/// Destination -> answers, bounded: when full, expired entries go first, then the eighth that
/// would expire soonest (amortised, so a full cache does not scan on every insert).
struct Cache {
    map: HashMap<Destination, CacheEntry>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache { map: HashMap::new(), capacity }
    }

    fn get(&mut self, key: &Destination, now: Instant) -> Option<Cached> {
        let entry = self.map.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        self.map.remove(key);
        None
    }

    fn insert(&mut self, key: Destination, value: Cached, expires: Instant, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.map.retain(|_, e| e.expires > now);
            if self.map.len() >= self.capacity {
                let mut expiries: Vec<Instant> = self.map.values().map(|e| e.expires).collect();
                let evict = (self.capacity / 8).max(1);
                let (_, &mut cutoff, _) = expiries.select_nth_unstable(evict - 1);
                self.map.retain(|_, e| e.expires > cutoff);
            }
        }
        self.map.insert(key, CacheEntry { value, expires });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn dest(uri: &str) -> Destination {
        let uri = sip::uri::parse_uri(uri).unwrap();
        Destination::from_uri(uri.as_sip().unwrap()).unwrap()
    }

    fn naptr(order: u16, preference: u16, flags: &str, services: &str, replacement: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference,
            flags: flags.into(),
            services: services.into(),
            replacement: replacement.into(),
            ttl: 300,
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port, target: target.into(), ttl: 300 }
    }

    fn v4(last: u8, ttl: u32) -> Answer {
        Answer::Addrs(vec![AddrRecord { ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), ttl }])
    }

    const NODATA: Answer = Answer::NoRecords { nxdomain: false, negative_ttl: Some(600) };

    fn q(name: &str, rtype: QueryType) -> Query {
        Query::new(name, rtype)
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn addrs(located: &Located) -> Vec<(TransportKind, String)> {
        located.targets.iter().map(|t| (t.kind, t.addr.to_string())).collect()
    }

    #[test]
    fn destination_from_uri() {
        let d = dest("sips:Carrier.Example.com.;transport=tcp");
        assert_eq!((d.target.as_str(), d.transport, d.secure), ("carrier.example.com", Some(TransportKind::Tls), true));
        assert_eq!(d.tls_name, "carrier.example.com");
        let d = dest("sip:a@[2001:db8::1]:5070");
        assert_eq!(
            (d.ip, d.port, d.tls_name.as_str()),
            (Some("2001:db8::1".parse().unwrap()), Some(5070), "2001:db8::1")
        );
        let d = dest("sip:example.com;maddr=192.0.2.7");
        assert_eq!((d.ip, d.tls_name.as_str()), (Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))), "example.com"));
        let d = dest("sip:example.com;maddr=Proxy.example.net;transport=TLS");
        assert_eq!((d.target.as_str(), d.ip, d.transport), ("proxy.example.net", None, Some(TransportKind::Tls)));
        for (uri, err) in
            [("sips:example.com;transport=udp", "sips with transport=udp"), ("sip:x;transport=sctp", "transport=sctp")]
        {
            let uri = sip::uri::parse_uri(uri).unwrap();
            assert_eq!(Destination::from_uri(uri.as_sip().unwrap()), Err(LocateError::Unsupported(err.into())));
        }
    }

    #[test]
    fn numeric_ip_needs_no_dns() {
        let cases = [
            ("sip:192.0.2.1", TransportKind::Udp, "192.0.2.1:5060"),
            ("sips:192.0.2.1", TransportKind::Tls, "192.0.2.1:5061"),
            ("sip:192.0.2.1;transport=tcp", TransportKind::Tcp, "192.0.2.1:5060"),
            ("sip:[2001:db8::1]:5080;transport=tls", TransportKind::Tls, "[2001:db8::1]:5080"),
        ];
        for (uri, kind, addr) in cases {
            let r = Resolution::new(dest(uri));
            assert!(r.poll_queries().is_empty(), "{uri}");
            let located = r.finish(&mut rng()).unwrap();
            assert_eq!(addrs(&located), vec![(kind, addr.to_string())], "{uri}");
            assert_eq!(located.ttl, None);
        }
    }

    #[test]
    fn explicit_port_goes_straight_to_addresses() {
        let mut r = Resolution::new(dest("sips:example.com:5999"));
        assert_eq!(r.poll_queries(), vec![q("example.com", QueryType::A), q("example.com", QueryType::Aaaa)]);
        r.handle_answer(q("example.com", QueryType::A), v4(1, 120));
        r.handle_answer(
            q("example.com", QueryType::Aaaa),
            Answer::Addrs(vec![AddrRecord { ip: IpAddr::V6(Ipv6Addr::LOCALHOST), ttl: 60 }]),
        );
        assert!(r.poll_queries().is_empty());
        let located = r.finish(&mut rng()).unwrap();
        assert_eq!(
            addrs(&located),
            vec![(TransportKind::Tls, "192.0.2.1:5999".into()), (TransportKind::Tls, "[::1]:5999".into())]
        );
        assert!(located.targets.iter().all(|t| t.host == "example.com"));
        assert_eq!(located.ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn naptr_then_srv_then_addresses() {
        let mut r = Resolution::new(dest("sip:example.com"));
        assert_eq!(r.poll_queries(), vec![q("example.com", QueryType::Naptr)]);
        r.handle_answer(
            q("example.com", QueryType::Naptr),
            Answer::Naptr(vec![
                naptr(50, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
                naptr(50, 5, "S", "SIP+D2T", "_sip._tcp.example.com"),
                naptr(50, 1, "S", "SIP+D2S", "_sip._sctp.example.com"),
                naptr(50, 1, "", "SIP+D2U", "other.example.com"),
                naptr(90, 1, "S", "SIPS+D2T", "_sips._tcp.example.com"),
            ]),
        );
        assert_eq!(
            r.poll_queries(),
            vec![q("_sip._tcp.example.com", QueryType::Srv), q("_sip._udp.example.com", QueryType::Srv)]
        );
        r.handle_answer(
            q("_sip._tcp.example.com", QueryType::Srv),
            Answer::Srv(vec![srv(1, 0, 5070, "tcp.example.com")]),
        );
        r.handle_answer(
            q("_sip._udp.example.com", QueryType::Srv),
            Answer::Srv(vec![srv(1, 0, 5080, "udp.example.com")]),
        );
        let mut expected = vec![
            q("tcp.example.com", QueryType::A),
            q("tcp.example.com", QueryType::Aaaa),
            q("udp.example.com", QueryType::A),
            q("udp.example.com", QueryType::Aaaa),
        ];
        assert_eq!(r.poll_queries(), expected);
        r.handle_answer(expected.remove(0), v4(1, 300));
        r.handle_answer(expected.remove(0), NODATA);
        r.handle_answer(expected.remove(0), v4(2, 30));
        r.handle_answer(expected.remove(0), NODATA);
        let located = r.finish(&mut rng()).unwrap();
        assert_eq!(
            addrs(&located),
            vec![(TransportKind::Tcp, "192.0.2.1:5070".into()), (TransportKind::Udp, "192.0.2.2:5080".into())]
        );
        assert_eq!(located.ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn naptr_selection_rules() {
        let records = [
            naptr(10, 20, "S", "sip+d2u", "_sip._udp.a."),
            naptr(10, 10, "S", "SIPS+D2T", "_sips._tcp.a."),
            naptr(10, 5, "S", "SIP+D2W", "_sip._ws.a."),
            naptr(10, 30, "U", "SIP+D2T", "_sip._tcp.a."),
            naptr(20, 1, "S", "SIP+D2T", "_sip._tcp.b."),
            naptr(10, 40, "S", "SIP+D2U", "_sip._udp.a."),
        ];
        assert_eq!(
            select_naptr(&records, false),
            vec![("_sips._tcp.a".into(), TransportKind::Tls), ("_sip._udp.a".into(), TransportKind::Udp)]
        );
        assert_eq!(select_naptr(&records, true), vec![("_sips._tcp.a".into(), TransportKind::Tls)]);
        // Only higher orders usable: they are used.
        assert_eq!(select_naptr(&records[4..5], false), vec![("_sip._tcp.b".into(), TransportKind::Tcp)]);
        assert_eq!(select_naptr(&records[4..5], true), vec![]);
    }

    #[test]
    fn no_naptr_queries_srv_per_transport_then_falls_back_to_a() {
        let mut r = Resolution::new(dest("sip:example.com"));
        r.handle_answer(q("example.com", QueryType::Naptr), NODATA);
        let srvs = r.poll_queries();
        assert_eq!(
            srvs,
            vec![
                q("_sips._tcp.example.com", QueryType::Srv),
                q("_sip._tcp.example.com", QueryType::Srv),
                q("_sip._udp.example.com", QueryType::Srv),
            ]
        );
        for s in srvs {
            r.handle_answer(s, Answer::NoRecords { nxdomain: true, negative_ttl: Some(45) });
        }
        assert_eq!(r.poll_queries(), vec![q("example.com", QueryType::A), q("example.com", QueryType::Aaaa)]);
        r.handle_answer(q("example.com", QueryType::A), v4(9, 3600));
        r.handle_answer(q("example.com", QueryType::Aaaa), NODATA);
        let located = r.finish(&mut rng()).unwrap();
        assert_eq!(addrs(&located), vec![(TransportKind::Udp, "192.0.2.9:5060".into())]);
        assert_eq!(located.ttl, Some(Duration::from_secs(45)));

        // SIPS: only `_sips._tcp`, then A at 5061 over TLS.
        let mut r = Resolution::new(dest("sips:example.com"));
        r.handle_answer(q("example.com", QueryType::Naptr), NODATA);
        assert_eq!(r.poll_queries(), vec![q("_sips._tcp.example.com", QueryType::Srv)]);
        r.handle_answer(q("_sips._tcp.example.com", QueryType::Srv), NODATA);
        r.handle_answer(q("example.com", QueryType::A), v4(9, 3600));
        r.handle_answer(q("example.com", QueryType::Aaaa), NODATA);
        assert_eq!(addrs(&r.finish(&mut rng()).unwrap()), vec![(TransportKind::Tls, "192.0.2.9:5061".into())]);
    }

    #[test]
    fn explicit_transport_skips_naptr() {
        let mut r = Resolution::new(dest("sip:example.com;transport=tcp"));
        assert_eq!(r.poll_queries(), vec![q("_sip._tcp.example.com", QueryType::Srv)]);
        r.handle_answer(q("_sip._tcp.example.com", QueryType::Srv), NODATA);
        r.handle_answer(q("example.com", QueryType::A), v4(3, 300));
        r.handle_answer(q("example.com", QueryType::Aaaa), NODATA);
        assert_eq!(addrs(&r.finish(&mut rng()).unwrap()), vec![(TransportKind::Tcp, "192.0.2.3:5060".into())]);
        // TLS under a SIP URI uses `_sips` (section 4.2).
        let r = Resolution::new(dest("sip:example.com;transport=tls"));
        assert_eq!(r.poll_queries(), vec![q("_sips._tcp.example.com", QueryType::Srv)]);
    }

    #[test]
    fn nxdomain_is_not_found_at_once_and_cached_briefly() {
        let mut r = Resolution::new(dest("sip:nope.example.com"));
        r.handle_answer(
            q("nope.example.com", QueryType::Naptr),
            Answer::NoRecords { nxdomain: true, negative_ttl: Some(3600) },
        );
        assert!(r.poll_queries().is_empty());
        let err = r.finish(&mut rng()).unwrap_err();
        assert_eq!(err, Unresolved { error: LocateError::NotFound, ttl: Some(NEGATIVE_TTL_CAP) });
    }

    #[test]
    fn srv_dot_means_not_available_without_fallback() {
        let mut r = Resolution::new(dest("sip:example.com;transport=udp"));
        r.handle_answer(q("_sip._udp.example.com", QueryType::Srv), Answer::Srv(vec![srv(0, 0, 0, "")]));
        assert!(r.poll_queries().is_empty());
        assert_eq!(r.finish(&mut rng()).unwrap_err().error, LocateError::NotFound);
    }

    #[test]
    fn failures_count_as_empty_and_surface_when_nothing_is_found() {
        let mut r = Resolution::new(dest("sip:example.com"));
        r.handle_answer(q("example.com", QueryType::Naptr), Answer::Failed(QueryFailure::Timeout));
        r.handle_answer(q("_sips._tcp.example.com", QueryType::Srv), Answer::Failed(QueryFailure::Timeout));
        r.handle_answer(q("_sip._tcp.example.com", QueryType::Srv), NODATA);
        r.handle_answer(
            q("_sip._udp.example.com", QueryType::Srv),
            Answer::Srv(vec![srv(0, 0, 5060, "h.example.com")]),
        );
        r.handle_answer(q("h.example.com", QueryType::A), v4(4, 300));
        r.handle_answer(q("h.example.com", QueryType::Aaaa), NODATA);
        let located = r.finish(&mut rng()).unwrap();
        assert_eq!(addrs(&located), vec![(TransportKind::Udp, "192.0.2.4:5060".into())]);
        assert_eq!(located.ttl, Some(FAILURE_TTL));

        let mut r = Resolution::new(dest("sip:example.com:5060"));
        r.handle_answer(q("example.com", QueryType::A), Answer::Failed(QueryFailure::Timeout));
        r.handle_answer(q("example.com", QueryType::Aaaa), Answer::Failed(QueryFailure::Other("SERVFAIL".into())));
        assert_eq!(r.finish(&mut rng()).unwrap_err(), Unresolved { error: LocateError::Timeout, ttl: None });
    }

    #[test]
    fn an_unreachable_dns_ends_the_search() {
        let mut r = Resolution::new(dest("sip:example.com"));
        r.handle_answer(q("example.com", QueryType::Naptr), Answer::Failed(QueryFailure::Timeout));
        assert!(r.poll_queries().is_empty(), "no SRV queries to a DNS that does not answer");
        assert_eq!(r.finish(&mut rng()).unwrap_err(), Unresolved { error: LocateError::Timeout, ttl: None });
        // Refused rather than silent: the search goes on.
        let mut r = Resolution::new(dest("sip:example.com"));
        r.handle_answer(q("example.com", QueryType::Naptr), Answer::Failed(QueryFailure::Other("REFUSED".into())));
        assert_eq!(r.poll_queries().len(), 3);
    }

    #[test]
    fn srv_priorities_first_then_weights() {
        let records = [srv(20, 0, 1, "c"), srv(10, 1, 1, "b"), srv(10, 0, 1, "a"), srv(30, 5, 1, "d")];
        for seed in 0..50 {
            let ordered = order_srv(&records, &mut StdRng::seed_from_u64(seed));
            let prios: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            assert_eq!(prios, vec![10, 10, 20, 30]);
        }
        // All weights zero: the order as given (RFC 2782 draws 0 every time).
        let zeros = [srv(1, 0, 1, "x"), srv(1, 0, 2, "y")];
        assert_eq!(order_srv(&zeros, &mut rng()), zeros.to_vec());
    }

    #[test]
    fn cache_is_bounded() {
        let now = Instant::now();
        let mut cache = Cache::new(16);
        for i in 0..100u64 {
            let d = dest(&format!("sip:h{i}.example.com"));
            cache.insert(d, Cached::NotFound, now + Duration::from_secs(100 + i), now);
            assert!(cache.map.len() <= 16);
        }
        // The newest (longest-lived) survive, the soonest-expiring went first.
        assert!(cache.get(&dest("sip:h99.example.com"), now).is_some());
        assert!(cache.get(&dest("sip:h0.example.com"), now).is_none());
        // Expired entries are not served.
        assert!(cache.get(&dest("sip:h99.example.com"), now + Duration::from_secs(500)).is_none());
        let mut off = Cache::new(0);
        off.insert(dest("sip:x"), Cached::NotFound, now + Duration::from_secs(1), now);
        assert!(off.map.is_empty());
    }
}
