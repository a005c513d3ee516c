//! Where a call goes: the ordered routes of an outbound call (carriers and their gateways), the
//! ordered targets of an inbound call (a connection's IPs, FQDNs or registered contacts, then
//! call forwarding on failure), and the failover rules that walk them ("Round Robin Routing",
//! "Failover & Retries" and "SRV Records" of the product documentation).
//!
//! # Outbound: [`plan_outbound`]
//!
//! A carrier is eligible when it is `enabled` and terminates the destination: one of its
//! `prefixes` starts the number, or it lists none (it takes every destination). Eligible
//! carriers are tried in this order:
//!
//! 1. `priority`, lowest first. Priority is the operator's word and always wins: a carrier at
//!    priority 1 that takes every destination goes before a priority-2 carrier that names the
//!    destination's exact range. An operator who wants the specific route first gives it the
//!    lower priority.
//! 2. At equal priority, the more specific match first: the carrier whose longest matching
//!    prefix is longest (a catch-all carrier counts as a prefix of length 0), so a carrier
//!    that names `1800` goes before one that names `1` or none.
//! 3. Then by carrier id (byte order), then by listed position: a stable rule that does not
//!    depend on the order the configuration happened to be loaded in.
//!
//! Within a carrier the gateways are ordered by its `routing`:
//!
//! - `sequential`: gateway `priority` lowest first, then `weight` highest first, then listed
//!   order.
//! - `round-robin`: the listed gateways, starting at `rotation % n` and wrapping, so every
//!   gateway is a backup of the others ("If IP 2 is selected first and fails, the system tries
//!   IP 3, then IP 1"). Priority and weight do not matter here: round robin gives each gateway
//!   an equal share of calls, and counts calls only, not load. `rotation` is a counter the
//!   engine increments per call (0 for the first call picks the first gateway).
//!
//! Each [`RouteAttempt`] is one gateway: a hostname or an address, a port and a transport.
//! Resolving it is the engine's (RFC 3263: NAPTR/SRV/A/AAAA), which expands each attempt into
//! its ordered DNS targets and walks those first, applying [`after_attempt`] to each target's
//! outcome, before moving to the next attempt. So is retrying from the platform's second
//! signaling address ("on failure, retry all routes via IP2"): that is a property of the
//! deployment, not of the plan. An empty plan (no enabled carrier terminates the number) is a
//! value, not an error: the caller answers it `503 No routes found PE1`.
//!
//! # Failover: [`after_attempt`] and [`final_for_caller`]
//!
//! Only the outcomes of [`FAILOVER_TRIGGERS`] (408, 480, 503, 504, a transport error, no answer
//! in time) move on to the next target; everything else ends the call's routing, including any
//! provisional response but `100 Trying` (the call is progressing: `180 Ringing`, `183 Session
//! Progress`). `100 Trying` is hop-by-hop and says nothing about the call, so it means "wait".
//!
//! # Inbound: [`plan_inbound`]
//!
//! A connection's IPs or FQDNs: `sequential` tries the designated primary, secondary and
//! tertiary in that order and no other (an IP listed on a connection may be there only to
//! authorize its outbound traffic); the whole list, in order, when none is designated.
//! `round-robin` spreads calls over every listed target, rotated as for gateways. The engine
//! locates FQDNs: by SRV when they have no port, by A/AAAA on their port otherwise. Registered
//! contacts go highest `q` first, then most recently registered; `round-robin` rotates among
//! contacts of equal `q`. Every step fails over by the same [`after_attempt`] rules. Call
//! forwarding on failure, when set, is the last step; forwarding `always` is the only step.
//! An empty plan means nowhere to send the call.
//!
//! # Trace
//!
//! Planning allocates only the list of routes (no text); [`RoutePlan::record`] and
//! [`InboundPlan::record`] write what was decided (`routing.carriers`, `routing.gateways`,
//! `routing.inbound`) into a decision's [`Trace`] when the caller keeps one.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use crate::time::Timestamp;
use crate::trace::{Trace, Value};

// ---------------------------------------------------------------------------------------------
// Configuration

/// A SIP transport toward a gateway or target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The port a gateway listens on when none is given (RFC 3261 section 19.1.2).
    pub const fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// As the API writes it: `UDP`, `TCP`, `TLS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// From the API's (or a URI's) token, regardless of case.
    pub fn from_token(token: &str) -> Option<Transport> {
        [Transport::Udp, Transport::Tcp, Transport::Tls].into_iter().find(|t| t.as_str().eq_ignore_ascii_case(token))
    }
}

/// In which order a carrier's gateways, or a connection's targets, are tried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum GatewayOrder {
    /// By designation or priority: the same first choice for every call.
    #[default]
    #[serde(rename = "sequential")]
    Sequential,
    /// Each call starts one further along the list; the rest follow as backups.
    #[serde(rename = "round-robin")]
    RoundRobin,
}

impl GatewayOrder {
    /// As the API writes it: `sequential`, `round-robin`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GatewayOrder::Sequential => "sequential",
            GatewayOrder::RoundRobin => "round-robin",
        }
    }

    pub fn from_token(token: &str) -> Option<GatewayOrder> {
        [GatewayOrder::Sequential, GatewayOrder::RoundRobin].into_iter().find(|o| o.as_str() == token)
    }
}

/// One signaling address of a carrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// A hostname (resolved by the engine, RFC 3263) or an IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Lowest first, in `sequential` routing.
    pub priority: u16,
    /// Highest first among equal priorities, in `sequential` routing.
    pub weight: u16,
}

/// An upstream carrier calls terminate to (`/v2/carriers`).
#[derive(Clone, PartialEq, Eq)]
pub struct Carrier {
    pub id: String,
    pub name: String,
    pub gateways: Vec<Gateway>,
    pub routing: GatewayOrder,
    /// Carriers are tried lowest first.
    pub priority: u16,
    /// Destination prefixes (E.164 digits) it terminates; empty: every destination.
    pub prefixes: Vec<String>,
    /// Where its origination traffic comes from (addresses or CIDR blocks, as written).
    pub inbound_ips: Vec<String>,
    /// Digest credentials toward the carrier, for its challenges.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Digits put before the destination toward the carrier.
    pub tech_prefix: Option<String>,
    pub enabled: bool,
}

// The password stays out of logs and test failures.
impl fmt::Debug for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carrier")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("gateways", &self.gateways)
            .field("routing", &self.routing)
            .field("priority", &self.priority)
            .field("prefixes", &self.prefixes)
            .field("inbound_ips", &self.inbound_ips)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tech_prefix", &self.tech_prefix)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Carrier {
    /// Whether the carrier terminates `digits` (E.164, a leading `+` ignored), and by which
    /// prefix: the longest that starts the number, `""` when the carrier lists none. `None`
    /// when it lists prefixes and none matches. Enabled or not is not looked at.
    pub fn matching_prefix(&self, digits: &str) -> Option<&str> {
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        if self.prefixes.is_empty() {
            return Some("");
        }
        self.prefixes
            .iter()
            .map(|p| p.strip_prefix('+').unwrap_or(p))
            .filter(|p| digits.starts_with(p))
            .max_by_key(|p| p.len())
    }

    /// The digest credentials toward the carrier, when both halves are set.
    pub fn credentials(&self) -> Option<CarrierCredentials<'_>> {
        match (self.username.as_deref(), self.password.as_deref()) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Some(CarrierCredentials { carrier_id: &self.id, username, password })
            }
            _ => None,
        }
    }
}

/// Where the engine finds what to answer a carrier's `401`/`407` with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CarrierCredentials<'a> {
    pub carrier_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

impl fmt::Debug for CarrierCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CarrierCredentials")
            .field("carrier_id", &self.carrier_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound plan

/// The Request-URI user part toward a carrier: its tech prefix, then the number. Kept as two
/// borrowed halves (no allocation); `to_string()` or [`DialString::write_to`] joins them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialString<'a> {
    pub tech_prefix: &'a str,
    /// E.164 digits, without `+`.
    pub number: &'a str,
}

impl DialString<'_> {
    pub fn write_to(&self, out: &mut String) {
        out.push_str(self.tech_prefix);
        out.push_str(self.number);
    }

    pub fn len(&self) -> usize {
        self.tech_prefix.len() + self.number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for DialString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tech_prefix)?;
        f.write_str(self.number)
    }
}

/// One route of an outbound call: a gateway of a carrier, what to dial there and how to
/// answer its challenge. The engine expands it into its RFC 3263 targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteAttempt<'a> {
    pub carrier: &'a Carrier,
    pub gateway: &'a Gateway,
    /// Positions in the configuration's carrier list and in the carrier's gateway list.
    pub carrier_index: usize,
    pub gateway_index: usize,
    /// The carrier prefix that matched the destination; `""` for a carrier without prefixes.
    pub matched_prefix: &'a str,
}

impl<'a> RouteAttempt<'a> {
    pub fn carrier_id(&self) -> &'a str {
        &self.carrier.id
    }

    pub fn host(&self) -> &'a str {
        &self.gateway.host
    }

    pub fn port(&self) -> u16 {
        self.gateway.port
    }

    pub fn transport(&self) -> Transport {
        self.gateway.transport
    }

    pub fn credentials(&self) -> Option<CarrierCredentials<'a>> {
        self.carrier.credentials()
    }

    /// What to dial at this route: the carrier's tech prefix, then `number` (the plan's).
    pub fn dial<'n>(&self, number: &'n str) -> DialString<'n>
    where
        'a: 'n,
    {
        DialString { tech_prefix: self.carrier.tech_prefix.as_deref().unwrap_or(""), number }
    }
}

/// The routes of an outbound call, in the order to try them, and what they were chosen from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan<'a> {
    pub attempts: Vec<RouteAttempt<'a>>,
    /// The destination as dialed (E.164 digits, without `+`). Owned, so a plan outlives the
    /// number it was made for (a decision normalises the number itself).
    pub number: String,
    pub rotation: u64,
    pub eligibility: Eligibility,
}

/// How many carriers were looked at, and why the others were left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eligibility {
    pub carriers: u32,
    /// Not `enabled`.
    pub disabled: u32,
    /// It lists prefixes and none starts the number.
    pub no_prefix_match: u32,
    /// Eligible, but without a gateway to send to.
    pub no_gateways: u32,
}

/// At most this many carriers take a call forwarded on failure ("up to 10 termination
/// carriers"); see [`RoutePlan::limit_carriers`].
pub const FORWARD_ON_FAILURE_MAX_CARRIERS: usize = 10;

impl RoutePlan<'_> {
    /// No route: answered `503 No routes found PE1`.
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    /// Keeps the attempts of the first `n` carriers only.
    pub fn limit_carriers(&mut self, n: usize) {
        let mut seen = 0;
        let mut last = None;
        let keep = self
            .attempts
            .iter()
            .position(|a| {
                if last != Some(a.carrier_index) {
                    last = Some(a.carrier_index);
                    seen += 1;
                }
                seen > n
            })
            .unwrap_or(self.attempts.len());
        self.attempts.truncate(keep);
    }

    /// Writes the plan into a decision's trace: `routing.carriers` (what was eligible and the
    /// carriers' order; `fail` when no route is left) and, when there are routes,
    /// `routing.gateways` (every attempt in order). Kept out of [`plan_outbound`] so the hot
    /// path pays for the text only when a trace is kept.
    pub fn record(&self, trace: &mut Trace) {
        let e = self.eligibility;
        let order = describe_order(&self.attempts);
        let facts = vec![
            ("number", Value::from(self.number.as_str())),
            ("carriers", Value::from(e.carriers)),
            ("disabled", Value::from(e.disabled)),
            ("no_prefix_match", Value::from(e.no_prefix_match)),
            ("no_gateways", Value::from(e.no_gateways)),
            ("order", Value::from(order)),
        ];
        if self.attempts.is_empty() {
            trace.fail("routing.carriers", facts);
            return;
        }
        trace.note("routing.carriers", facts);
        trace.note(
            "routing.gateways",
            vec![
                ("rotation", Value::from(self.rotation)),
                ("attempts", Value::from(self.attempts.len() as u64)),
                ("routes", Value::from(describe_routes(&self.attempts))),
            ],
        );
    }
}

/// The routes of an outbound call to `e164_digits` (E.164 digits; a leading `+` is ignored),
/// over `carriers`, with `rotation` (a per-call counter) starting round-robin carriers'
/// gateway lists. Ordering rules: see the module documentation.
pub fn plan_outbound<'a>(carriers: &'a [Carrier], e164_digits: &str, rotation: u64) -> RoutePlan<'a> {
    let number = e164_digits.strip_prefix('+').unwrap_or(e164_digits);
    let mut eligibility =
        Eligibility { carriers: u32::try_from(carriers.len()).unwrap_or(u32::MAX), ..Eligibility::default() };
    let total_gateways = carriers.iter().map(|c| c.gateways.len()).sum();
    let mut attempts = Vec::with_capacity(total_gateways);
    for (carrier_index, carrier) in carriers.iter().enumerate() {
        if !carrier.enabled {
            eligibility.disabled = eligibility.disabled.saturating_add(1);
            continue;
        }
        let Some(matched_prefix) = carrier.matching_prefix(number) else {
            eligibility.no_prefix_match = eligibility.no_prefix_match.saturating_add(1);
            continue;
        };
        if carrier.gateways.is_empty() {
            eligibility.no_gateways = eligibility.no_gateways.saturating_add(1);
        }
        attempts.extend(carrier.gateways.iter().enumerate().map(|(gateway_index, gateway)| RouteAttempt {
            carrier,
            gateway,
            carrier_index,
            gateway_index,
            matched_prefix,
        }));
    }
    // Every key ends in positions, which are unique: the order is total, so an unstable sort
    // (no allocation) gives the same result as a stable one.
    attempts.sort_unstable_by(|a, b| attempt_order(a, b, rotation));

    RoutePlan { attempts, number: number.to_owned(), rotation, eligibility }
}

fn attempt_order(a: &RouteAttempt<'_>, b: &RouteAttempt<'_>, rotation: u64) -> Ordering {
    if a.carrier_index != b.carrier_index {
        return a
            .carrier
            .priority
            .cmp(&b.carrier.priority)
            .then(b.matched_prefix.len().cmp(&a.matched_prefix.len()))
            .then_with(|| a.carrier.id.cmp(&b.carrier.id))
            .then(a.carrier_index.cmp(&b.carrier_index));
    }
    match a.carrier.routing {
        GatewayOrder::Sequential => a
            .gateway
            .priority
            .cmp(&b.gateway.priority)
            .then(b.gateway.weight.cmp(&a.gateway.weight))
            .then(a.gateway_index.cmp(&b.gateway_index)),
        GatewayOrder::RoundRobin => {
            let n = a.carrier.gateways.len();
            let start = rotation_start(rotation, n);
            turn(a.gateway_index, start, n).cmp(&turn(b.gateway_index, start, n))
        }
    }
}

/// Where a round-robin list of `n` starts for the call with this `rotation` counter.
fn rotation_start(rotation: u64, n: usize) -> usize {
    match u64::try_from(n) {
        // The remainder is below n, so it fits back into usize.
        Ok(n) if n > 0 => usize::try_from(rotation % n).unwrap_or(0),
        _ => 0,
    }
}

/// The place of `index` in a list of `n` started at `start`.
fn turn(index: usize, start: usize, n: usize) -> usize {
    if index >= start { index - start } else { n - start + index }
}

/// The carriers' ids in plan order: `a,b,c`.
fn describe_order(attempts: &[RouteAttempt<'_>]) -> String {
    let mut out = String::with_capacity(attempts.iter().map(|a| a.carrier.id.len() + 1).sum());
    let mut last = None;
    for a in attempts {
        if last != Some(a.carrier_index) {
            if last.is_some() {
                out.push(',');
            }
            out.push_str(&a.carrier.id);
            last = Some(a.carrier_index);
        }
    }
    out
}

/// `carrier: host:port/TRANSPORT host:port/TRANSPORT | carrier: ...`, written in one pass
/// into a buffer sized for the longest it can be (no growth).
fn describe_routes(attempts: &[RouteAttempt<'_>]) -> String {
    // Per attempt: " [" host "]:" 5 digits "/" 3 letters, and its carrier's " | " id ":".
    let most = attempts.iter().map(|a| a.gateway.host.len() + 13 + a.carrier.id.len() + 4).sum();
    let mut out = String::with_capacity(most);
    let mut last = None;
    for a in attempts {
        if last != Some(a.carrier_index) {
            if last.is_some() {
                out.push_str(" | ");
            }
            out.push_str(&a.carrier.id);
            out.push(':');
            last = Some(a.carrier_index);
        }
        let host = a.gateway.host.as_str();
        if host.as_bytes().contains(&b':') {
            out.push_str(" [");
            out.push_str(host);
            out.push_str("]:");
        } else {
            out.push(' ');
            out.push_str(host);
            out.push(':');
        }
        push_u16(&mut out, a.gateway.port);
        out.push('/');
        out.push_str(a.gateway.transport.as_str());
    }
    out
}

/// Decimal digits, without the formatting machinery.
fn push_u16(out: &mut String, v: u16) {
    let mut divisor = 10_000;
    let mut started = false;
    while divisor > 0 {
        let digit = (v / divisor) % 10;
        if digit != 0 || started || divisor == 1 {
            started = true;
            out.push(char::from(b'0' + digit as u8));
        }
        divisor /= 10;
    }
}

// ---------------------------------------------------------------------------------------------
// Failover

/// How one try of one target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// A response arrived with this status code.
    Response(u16),
    /// No final response in time (the INVITE client transaction timed out, Timer B).
    Timeout,
    /// The request could not be sent: connection refused or reset, TLS failure, ICMP error.
    TransportError,
}

/// What the engine does after an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    /// Try the next DNS target of this attempt, else the next attempt of the plan.
    TryNextRoute,
    /// This route decided the call: relay the outcome, stop failing over.
    Finish,
    /// `100 Trying`: the next hop has the request; keep waiting on this route.
    Wait,
}

/// A row of the documentation's failover tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverRule {
    pub outcome: AttemptOutcome,
    pub meaning: &'static str,
}

/// The outcomes that trigger failover ("Failover & Retries", "Triggers failover"), plus a
/// timeout with no response at all, which is a `408` the engine generates itself and what the
/// SRV section means by "on timeout or error, retry". Nothing else does.
pub const FAILOVER_TRIGGERS: [FailoverRule; 6] = [
    FailoverRule { outcome: AttemptOutcome::Response(408), meaning: "Request Timeout" },
    FailoverRule { outcome: AttemptOutcome::Response(480), meaning: "Temporarily Unavailable" },
    FailoverRule { outcome: AttemptOutcome::Response(503), meaning: "Service Unavailable" },
    FailoverRule { outcome: AttemptOutcome::Response(504), meaning: "Server Timeout" },
    FailoverRule { outcome: AttemptOutcome::TransportError, meaning: "Network/TCP failure" },
    FailoverRule { outcome: AttemptOutcome::Timeout, meaning: "No response (Timer B)" },
];

/// The documentation's "Does NOT trigger failover (call considered connected)" table: examples
/// of the rule that every other outcome ends routing.
pub const NO_FAILOVER_EXAMPLES: [FailoverRule; 5] = [
    FailoverRule { outcome: AttemptOutcome::Response(180), meaning: "Ringing" },
    FailoverRule { outcome: AttemptOutcome::Response(200), meaning: "OK (answered)" },
    FailoverRule { outcome: AttemptOutcome::Response(404), meaning: "Not Found" },
    FailoverRule { outcome: AttemptOutcome::Response(486), meaning: "Busy Here" },
    FailoverRule { outcome: AttemptOutcome::Response(603), meaning: "Decline" },
];

/// What follows an outcome: [`Next::TryNextRoute`] for the rows of [`FAILOVER_TRIGGERS`],
/// [`Next::Wait`] for `100 Trying`, [`Next::Finish`] for everything else (any other
/// provisional response: the call is progressing; any other final response, including a status
/// no SIP response can carry). A carrier's `401`/`407` is answered by the engine with the
/// attempt's credentials first; only what follows that is an outcome here.
pub fn after_attempt(outcome: AttemptOutcome) -> Next {
    if outcome == AttemptOutcome::Response(100) {
        Next::Wait
    } else if FAILOVER_TRIGGERS.iter().any(|rule| rule.outcome == outcome) {
        Next::TryNextRoute
    } else {
        Next::Finish
    }
}

/// The status to answer the caller with when routing ended without an answer: the last final
/// non-2xx response a route sent (a response beats a timeout or a transport error, even an
/// earlier one), leaving out a carrier's `401`/`407` challenge (the caller cannot answer it).
/// `None` when no route answered that way: the caller then gets `503 ... PE2`.
pub fn final_for_caller(outcomes: &[AttemptOutcome]) -> Option<u16> {
    outcomes.iter().rev().find_map(|o| match *o {
        AttemptOutcome::Response(code) if (300..=699).contains(&code) && code != 401 && code != 407 => Some(code),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Inbound plan

/// An IP of an IP connection, with where and how it takes calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpTarget {
    pub address: String,
    pub port: u16,
    pub transport: Transport,
}

/// An FQDN of an FQDN connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FqdnTarget {
    pub fqdn: String,
    /// `None`: located by SRV (`dns_record_type` `srv`); a port: by A/AAAA on that port.
    pub port: Option<u16>,
    pub transport: Transport,
}

impl FqdnTarget {
    pub fn uses_srv(&self) -> bool {
        self.port.is_none()
    }
}

/// A registered contact of a credential connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredContact {
    pub uri: String,
    /// The contact's `q` in thousandths (`q=0.5` is 500); `None` counts as 1000, values above
    /// 1000 as 1000.
    pub q: Option<u16>,
    /// When it last registered (or refreshed).
    pub registered_at: Timestamp,
}

impl RegisteredContact {
    fn q(&self) -> u16 {
        self.q.unwrap_or(1000).min(1000)
    }
}

/// A connection's targets with their designations: positions in `listed` of the default
/// primary, secondary and tertiary (`default_primary_ip_id` ... resolved by the caller; a
/// position out of range is ignored, as is one named twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTargets<T> {
    pub listed: Vec<T>,
    pub primary: Option<usize>,
    pub secondary: Option<usize>,
    pub tertiary: Option<usize>,
}

impl<T> HostTargets<T> {
    /// Targets without designations.
    pub fn listed(listed: Vec<T>) -> HostTargets<T> {
        HostTargets { listed, primary: None, secondary: None, tertiary: None }
    }

    /// The valid designations, in order, without repeats.
    fn designated(&self) -> impl Iterator<Item = usize> + '_ {
        let [p, s, t] = [self.primary, self.secondary, self.tertiary];
        let valid = move |i: Option<usize>| i.filter(|i| *i < self.listed.len());
        let p = valid(p);
        let s = valid(s).filter(|s| Some(*s) != p);
        let t = valid(t).filter(|t| Some(*t) != p && Some(*t) != s);
        [p, s, t].into_iter().flatten()
    }
}

/// Where a connection takes its inbound calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundEndpoints {
    Ips(HostTargets<IpTarget>),
    Fqdns(HostTargets<FqdnTarget>),
    Contacts(Vec<RegisteredContact>),
}

/// A phone number's `call_forwarding.forwarding_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ForwardingType {
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// A phone number's call forwarding settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallForwarding {
    /// `call_forwarding_enabled`.
    pub enabled: bool,
    pub forwarding_type: Option<ForwardingType>,
    /// `forwards_to`, +E.164; blank forwards nowhere.
    pub forwards_to: Option<String>,
}

impl CallForwarding {
    /// Where and when calls forward, if they do: enabled, a type and a number are all needed.
    pub fn active(&self) -> Option<(ForwardingType, &str)> {
        let to = self.forwards_to.as_deref().filter(|to| !to.trim().is_empty())?;
        if self.enabled { self.forwarding_type.map(|t| (t, to)) } else { None }
    }
}

/// What an inbound call to a number can reach: its connection's endpoints, in the connection's
/// routing method, and the number's call forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundTargets {
    pub endpoints: InboundEndpoints,
    /// The connection's `default_routing_method`.
    pub routing: GatewayOrder,
    pub call_forwarding: CallForwarding,
}

/// One step of an inbound call, tried in order with the failover rules of [`after_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundStep<'a> {
    Ip(&'a IpTarget),
    /// Located by the engine: SRV when it has no port, A/AAAA otherwise.
    Fqdn(&'a FqdnTarget),
    Contact(&'a RegisteredContact),
    /// Call forwarding: an outbound call to this +E.164 number over the carriers.
    ForwardToPstn(&'a str),
}

/// The steps of an inbound call, in order, and what they were chosen from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundPlan<'a> {
    pub steps: Vec<InboundStep<'a>>,
    pub targets: &'a InboundTargets,
    pub rotation: u64,
}

impl InboundPlan<'_> {
    /// Nowhere to send the call.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Writes `routing.inbound` into a decision's trace (`fail` when the plan is empty).
    pub fn record(&self, trace: &mut Trace) {
        let kind = match &self.targets.endpoints {
            InboundEndpoints::Ips(_) => "ips",
            InboundEndpoints::Fqdns(_) => "fqdns",
            InboundEndpoints::Contacts(_) => "contacts",
        };
        let forwarding = self.targets.call_forwarding.active();
        let facts = vec![
            ("endpoints", Value::Static(kind)),
            ("routing", Value::Static(self.targets.routing.as_str())),
            ("rotation", Value::from(self.rotation)),
            ("steps", Value::from(self.steps.len() as u64)),
            ("forwarding", Value::Static(forwarding.map_or("none", |(t, _)| forwarding_name(t)))),
            ("forwards_to", Value::from(forwarding.map(|(_, to)| to))),
        ];
        if self.steps.is_empty() {
            trace.fail("routing.inbound", facts);
        } else {
            trace.note("routing.inbound", facts);
        }
    }
}

/// The steps of an inbound call to `targets`, `rotation` being the per-call counter that starts
/// round-robin lists. Rules: see the module documentation.
pub fn plan_inbound(targets: &InboundTargets, rotation: u64) -> InboundPlan<'_> {
    let forwarding = targets.call_forwarding.active();
    let listed = match &targets.endpoints {
        InboundEndpoints::Ips(hosts) => hosts.listed.len(),
        InboundEndpoints::Fqdns(hosts) => hosts.listed.len(),
        InboundEndpoints::Contacts(contacts) => contacts.len(),
    };
    let mut steps = Vec::with_capacity(listed.saturating_add(1));
    match forwarding {
        Some((ForwardingType::Always, _)) => {}
        _ => match &targets.endpoints {
            InboundEndpoints::Ips(hosts) => host_steps(hosts, targets.routing, rotation, &mut steps, InboundStep::Ip),
            InboundEndpoints::Fqdns(hosts) => {
                host_steps(hosts, targets.routing, rotation, &mut steps, InboundStep::Fqdn)
            }
            InboundEndpoints::Contacts(contacts) => contact_steps(contacts, targets.routing, rotation, &mut steps),
        },
    }
    if let Some((_, to)) = forwarding {
        steps.push(InboundStep::ForwardToPstn(to));
    }
    InboundPlan { steps, targets, rotation }
}

fn forwarding_name(t: ForwardingType) -> &'static str {
    match t {
        ForwardingType::Always => "always",
        ForwardingType::OnFailure => "on-failure",
    }
}

fn host_steps<'a, T>(
    hosts: &'a HostTargets<T>,
    routing: GatewayOrder,
    rotation: u64,
    steps: &mut Vec<InboundStep<'a>>,
    step: fn(&'a T) -> InboundStep<'a>,
) {
    let n = hosts.listed.len();
    match routing {
        GatewayOrder::Sequential => {
            let before = steps.len();
            steps.extend(hosts.designated().map(|i| step(&hosts.listed[i])));
            if steps.len() == before {
                steps.extend(hosts.listed.iter().map(step));
            }
        }
        GatewayOrder::RoundRobin => {
            let start = rotation_start(rotation, n);
            steps.extend(hosts.listed[start..].iter().chain(&hosts.listed[..start]).map(step));
        }
    }
}

fn contact_steps<'a>(
    contacts: &'a [RegisteredContact],
    routing: GatewayOrder,
    rotation: u64,
    steps: &mut Vec<InboundStep<'a>>,
) {
    let mut sorted: Vec<&RegisteredContact> = contacts.iter().collect();
    // Stable: equal contacts keep their listed order.
    sorted.sort_by(|a, b| b.q().cmp(&a.q()).then(b.registered_at.cmp(&a.registered_at)));
    if routing == GatewayOrder::RoundRobin {
        for group in sorted.chunk_by_mut(|a, b| a.q() == b.q()) {
            let start = rotation_start(rotation, group.len());
            group.rotate_left(start);
        }
    }
    steps.extend(sorted.into_iter().map(InboundStep::Contact));
}
