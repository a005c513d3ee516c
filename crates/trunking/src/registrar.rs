//! The registrar of credential connections (RFC 3261 section 10.3): a device proves it is a
//! connection's user with digest credentials and binds contacts to the connection's address of
//! record (AOR), where inbound calls then go. Pure: the engine reads the request's facts, the
//! AOR's current bindings (from its cache of the store) and the clock, calls [`register`], then
//! stores what changed and answers.
//!
//! The order, one rule each (the trace names them):
//! 1. `register.to_tag`: a To tag is out of a dialog's place here (`P04`).
//! 2. `register.contact_length`: a Contact field over 512 bytes (`P51`).
//! 3. `register.contacts`: parsable To and Contact, `*` only alone with `Expires: 0` (`400`),
//!    one contact per request unless the rules allow several (`R47`).
//! 4. `register.username`: the AOR's user and the digest user name are well formed
//!    (`R14` empty, `R16` invalid, `R17` too short) and the same (`R18`).
//! 5. `register.throttle`: the source address or user name is cooling down after too many
//!    failed attempts ([`FailedAuthLimiter`]).
//! 6. `register.digest`: credentials verify against the connection's stored digest (`401` with
//!    a challenge when absent or stale, `D25` when wrong).
//! 7. `register.expires`: each contact's interval within bounds (`423` below the minimum,
//!    lowered to the maximum).
//! 8. `register.bindings`: adds, refreshes and removes bindings (Call-ID/CSeq ordering per
//!    RFC 3261 section 10.3 step 7), keeping at most [`RegistrarRules::max_bindings`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use sip::headers::{Auth, NameAddr, parse_number};
use sip::scan::{split_list, trim_lws};
use sip::{HeaderName, Message, Uri};

use crate::catalog::Reason;
use crate::config::{Config, ConnectionKind, ConnectionRef, Id};
use crate::digest::{self, DigestFault, DigestRealm, DigestVerdict, ReplayGuard};
use crate::routing::Transport;
use crate::time::Timestamp;
use crate::trace::{Trace, Value};

/// The registrar's bounds, set by the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistrarRules {
    /// Shortest interval accepted, seconds; shorter ones get `423` with `Min-Expires`.
    pub min_expires: u32,
    /// Longest interval granted, seconds; longer ones are lowered to it.
    pub max_expires: u32,
    /// The interval when neither the contact nor the request gives one (RFC 3261 suggests 3600).
    pub default_expires: u32,
    /// Contacts kept per AOR; a new one beyond it replaces the least recently refreshed.
    pub max_bindings: usize,
    /// Whether one REGISTER may carry several contacts (the product refuses it: `R47`).
    pub multiple_contacts_per_request: bool,
    /// Longest Contact field accepted, bytes (`P51`).
    pub max_contact_bytes: usize,
}

impl Default for RegistrarRules {
    fn default() -> Self {
        RegistrarRules {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings: 10,
            multiple_contacts_per_request: false,
            max_contact_bytes: 512,
        }
    }
}

/// The facts of one REGISTER, as written (header values raw; [`register`] parses them, so a
/// malformed value is answered rather than lost).
#[derive(Clone, Debug, Default)]
pub struct RegisterRequest<'a> {
    /// Where the request came from, and over what.
    pub source: Option<SocketAddr>,
    pub transport: Transport,
    pub to: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub cseq: Option<&'a str>,
    /// Every Contact field value, in order.
    pub contacts: Vec<&'a str>,
    pub expires: Option<&'a str>,
    /// Every Path field value, in order (RFC 3327).
    pub path: Vec<&'a str>,
    /// Every Supported field value (`outbound`, `path`).
    pub supported: Vec<&'a str>,
    /// The first `Authorization` (or `Proxy-Authorization`, which some devices send) value.
    pub credentials: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl<'a> RegisterRequest<'a> {
    /// Reads the facts of a REGISTER received from `source` over `transport`.
    pub fn of(msg: &'a Message, source: SocketAddr, transport: Transport) -> RegisterRequest<'a> {
        let mut r = RegisterRequest { source: Some(source), transport, ..RegisterRequest::default() };
        let mut proxy_credentials = None;
        for (name, v) in msg.header_fields() {
            match name {
                HeaderName::To if r.to.is_none() => r.to = Some(v),
                HeaderName::CallId if r.call_id.is_none() => r.call_id = Some(v),
                HeaderName::CSeq if r.cseq.is_none() => r.cseq = Some(v),
                HeaderName::Contact => r.contacts.push(v),
                HeaderName::Expires if r.expires.is_none() => r.expires = Some(v),
                HeaderName::Path => r.path.push(v),
                HeaderName::Supported => r.supported.push(v),
                HeaderName::Authorization if r.credentials.is_none() => r.credentials = Some(v),
                HeaderName::ProxyAuthorization if proxy_credentials.is_none() => proxy_credentials = Some(v),
                HeaderName::UserAgent if r.user_agent.is_none() => r.user_agent = Some(v),
                _ => {}
            }
        }
        r.credentials = r.credentials.or(proxy_credentials);
        r
    }
}

/// Where a device's REGISTER came from: the flow calls to it go back over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    pub address: SocketAddr,
    pub transport: Transport,
}

/// One contact bound to a credential connection's AOR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub connection_id: Id,
    /// The AOR's user: the connection's user name.
    pub username: Arc<str>,
    /// The Contact URI as written, without header parameters.
    pub contact: String,
    /// RFC 5626 `+sip.instance` as written (quotes kept), and `reg-id`.
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    /// The `q` preference in thousandths.
    pub q: Option<u16>,
    /// The Path the REGISTER carried (RFC 3327): calls to this contact take it as their route.
    pub path: Vec<String>,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from.
    pub source: Flow,
    /// The Contact cannot be reached as written (a private address, or not the address the
    /// request came from): calls go to [`Binding::source`] instead.
    pub nat: bool,
    pub user_agent: Option<String>,
    /// When the contact was first bound (kept across refreshes), and last refreshed.
    pub registered_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Binding {
    /// Seconds left at `now` (0 once expired).
    pub fn expires_in(&self, now: Timestamp) -> u32 {
        let ms = self.expires_at.as_millis().saturating_sub(now.as_millis());
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    }

    /// The flow to send calls to when the Contact is not reachable as written.
    pub fn received(&self) -> Option<Flow> {
        self.nat.then_some(self.source)
    }

    /// The Contact value a `200` lists for this binding.
    pub fn contact_value(&self, now: Timestamp) -> String {
        let mut v = format!("<{}>;expires={}", self.contact, self.expires_in(now));
        if let Some(instance) = &self.instance {
            v.push_str(";+sip.instance=");
            v.push_str(instance);
        }
        if let Some(reg_id) = self.reg_id {
            v.push_str(&format!(";reg-id={reg_id}"));
        }
        v
    }
}

/// A refusal: a product reason, or one of the protocol's own answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A row of the response-code catalog.
    Product(Reason),
    /// `423 Interval Too Brief` with `Min-Expires`.
    IntervalTooBrief { min_expires: u32 },
    /// `400 Bad Request` with the reason phrase.
    BadRequest(&'static str),
    /// Too many failed attempts: `403` with the catalog's authentication failure (`D25`) and
    /// `Retry-After`. Not `429`: SIP registers 429 as "Provide Referrer Identity" (RFC 3892), so a
    /// device would misread it, and `D25` is what the product documents for failed credentials;
    /// a scanner learns nothing it did not already get from a wrong password, while a real device
    /// reads when to try again.
    CoolingDown { retry_after_secs: u64 },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Product(r) => r.response().status,
            Refusal::IntervalTooBrief { .. } => 423,
            Refusal::BadRequest(_) => 400,
            Refusal::CoolingDown { .. } => Reason::D25.response().status,
        }
    }

    pub fn phrase(&self) -> &'static str {
        match self {
            Refusal::Product(r) => r.response().phrase,
            Refusal::IntervalTooBrief { .. } => "Interval Too Brief",
            Refusal::BadRequest(p) => p,
            Refusal::CoolingDown { .. } => Reason::D25.response().phrase,
        }
    }

    /// The product reason, when it is one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Refusal::Product(r) => Some(*r),
            Refusal::CoolingDown { .. } => Some(Reason::D25),
            _ => None,
        }
    }

    /// Header fields the answer carries.
    pub fn headers(&self) -> Vec<(HeaderName, String)> {
        match self {
            Refusal::IntervalTooBrief { min_expires } => vec![(HeaderName::MinExpires, min_expires.to_string())],
            Refusal::CoolingDown { retry_after_secs } => {
                vec![(HeaderName::RetryAfter, retry_after_secs.to_string())]
            }
            _ => Vec::new(),
        }
    }
}

/// An accepted REGISTER: the AOR's bindings after it, and what changed, for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub connection: ConnectionRef,
    pub connection_id: Id,
    /// Every current binding of the AOR after the request, oldest first.
    pub bindings: Vec<Binding>,
    /// Bindings that went: removed by the request, expired, or replaced over the cap.
    pub removed: Vec<Binding>,
    /// The interval granted to the request's contact (the `Expires` of the answer), when it
    /// bound one.
    pub granted: Option<u32>,
    /// The request's Path, echoed in the answer (RFC 3327 section 5.3).
    pub path: Vec<String>,
    /// The device asked for outbound (RFC 5626) and a binding of it has a flow: `Require: outbound`.
    pub outbound: bool,
}

impl Registered {
    /// The header fields of the `200 OK`: each current Contact with its time left, `Expires`,
    /// the Path and `Require: outbound` when they apply.
    pub fn headers(&self, now: Timestamp) -> Vec<(HeaderName, String)> {
        let mut out: Vec<(HeaderName, String)> =
            self.bindings.iter().map(|b| (HeaderName::Contact, b.contact_value(now))).collect();
        if let Some(granted) = self.granted {
            out.push((HeaderName::Expires, granted.to_string()));
        }
        out.extend(self.path.iter().map(|p| (HeaderName::Path, p.clone())));
        if self.outbound {
            out.push((HeaderName::Require, "outbound".to_owned()));
        }
        out
    }
}

/// What the registrar decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Answer `200 OK` with [`Registered::headers`].
    Accepted(Registered),
    /// Answer `401 Unauthorized` with [`DigestRealm::challenges`] as `WWW-Authenticate`
    /// (`stale=true` when the right password came with an expired nonce).
    Challenge {
        stale: bool,
    },
    Rejected(Refusal),
}

/// What [`register`] authenticates with: the realm, the nonce counts already seen, and the
/// failed-attempt limiter.
#[derive(Debug)]
pub struct Guards<'a> {
    pub realm: &'a DigestRealm,
    pub replay: &'a mut ReplayGuard,
    pub limiter: &'a mut FailedAuthLimiter,
}

/// A contact of the request, parsed.
struct Offered<'a> {
    uri: &'a str,
    addr: NameAddr<'a>,
}

/// Decides a REGISTER against the AOR's current `bindings` (those the engine holds for the
/// connection the request names; expired ones are dropped here).
pub fn register(
    config: &Config,
    rules: &RegistrarRules,
    req: &RegisterRequest<'_>,
    guards: Guards<'_>,
    bindings: &[Binding],
    now: Timestamp,
    trace: &mut Trace,
) -> RegisterOutcome {
    use RegisterOutcome::Rejected;
    let bad = |trace: &mut Trace, rule: &'static str, what: &'static str, phrase: &'static str| {
        trace.fail(rule, [("fault", Value::Static(what))]);
        Rejected(Refusal::BadRequest(phrase))
    };

    // 1. To tag.
    let Some(to) = req.to.and_then(|t| NameAddr::parse(t).ok()) else {
        return bad(trace, "register.to", "missing or malformed To", "Bad Request");
    };
    if to.tag().is_some() {
        trace.fail("register.to_tag", [("tag", to.tag().into())]);
        return Rejected(Refusal::Product(Reason::P04));
    }

    // 2. Contact length, on the fields as written.
    if let Some(long) = req.contacts.iter().map(|c| c.len()).max().filter(|l| *l > rules.max_contact_bytes) {
        trace.fail("register.contact_length", [("bytes", (long as u64).into())]);
        return Rejected(Refusal::Product(Reason::P51));
    }

    // 3. Contacts and the request's own Expires.
    let header_expires = match req.expires.map(parse_number) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => return bad(trace, "register.contacts", "malformed Expires", "Bad Request"),
    };
    let mut star = false;
    let mut offered = Vec::new();
    for field in &req.contacts {
        if trim_lws(field) == "*" {
            star = true;
            continue;
        }
        for part in split_list(field) {
            match NameAddr::parse(part) {
                Ok(addr) if matches!(addr.uri, Uri::Sip(_)) => offered.push(Offered { uri: addr.uri_str, addr }),
                _ => return bad(trace, "register.contacts", "malformed Contact", "Bad Request"),
            }
        }
    }
    if star && (!offered.is_empty() || header_expires != Some(0)) {
        // RFC 3261 section 10.3 step 6: `*` only alone and with `Expires: 0`.
        return bad(trace, "register.contacts", "wildcard misused", "Invalid Wildcard");
    }
    if offered.len() > 1 && !rules.multiple_contacts_per_request {
        trace.fail("register.contacts", [("contacts", (offered.len() as u64).into())]);
        return Rejected(Refusal::Product(Reason::R47));
    }
    let (Some(call_id), Some(cseq)) =
        (req.call_id.map(trim_lws), req.cseq.and_then(|c| sip::CSeq::parse(c).ok()).map(|c| c.seq))
    else {
        return bad(trace, "register.contacts", "missing Call-ID or CSeq", "Bad Request");
    };
    trace.pass("register.contacts", [("contacts", (offered.len() as u64).into()), ("wildcard", star.into())]);

    // 4. User names: the AOR's, and the credentials'.
    let aor_user = to.user().unwrap_or_default();
    let credentials =
        req.credentials.and_then(|c| Auth::parse(c).ok()).filter(|a| a.scheme.eq_ignore_ascii_case("Digest"));
    let digest_user = credentials.as_ref().map(|c| digest::username(c).unwrap_or_default());
    let checked = digest_user.as_deref().unwrap_or(aor_user);
    if let Some(reason) = username_fault(checked) {
        trace.fail("register.username", [("user", checked.into()), ("reason", Value::Static(reason.code()))]);
        return Rejected(Refusal::Product(reason));
    }
    if digest_user.as_deref().is_some_and(|u| u != aor_user) {
        trace.fail("register.username", [("user", checked.into()), ("aor_user", aor_user.into())]);
        return Rejected(Refusal::Product(Reason::R18));
    }
    trace.pass("register.username", [("user", checked.into())]);

    // 5. Cool-down after failed attempts.
    let source_ip = req.source.map(|s| s.ip());
    if let Some(retry_after_secs) = guards.limiter.cooling_down(source_ip, checked, now) {
        trace.fail(
            "register.throttle",
            [("source", source_ip.into()), ("user", checked.into()), ("retry_after", retry_after_secs.into())],
        );
        return Rejected(Refusal::CoolingDown { retry_after_secs });
    }

    // 6. Digest.
    const DIGEST: &str = "register.digest";
    let Some(credentials) = credentials else {
        trace.fail(DIGEST, [("credentials", Value::Absent), ("user", aor_user.into())]);
        return RegisterOutcome::Challenge { stale: false };
    };
    let user = checked;
    let conn = config
        .connection_of_user(user)
        .filter(|c| config.connection(*c).kind == ConnectionKind::Credential)
        .and_then(|c| config.connection(c).credentials.as_ref().map(|(_, stored)| (c, stored)));
    let Some((conn, stored)) = conn else {
        // Answered like a wrong password: the caller learns nothing about which names exist.
        guards.limiter.failed(source_ip, user, now);
        trace.fail(DIGEST, [("user", user.into()), ("fault", Value::Static("unknown user"))]);
        return Rejected(Refusal::Product(Reason::D25));
    };
    let connection = config.connection(conn);
    match guards.realm.verify(&credentials, "REGISTER", stored, now, guards.replay) {
        DigestVerdict::Valid => {
            guards.limiter.succeeded(user);
            trace.pass(DIGEST, [("user", user.into()), ("connection", (&connection.id).into())]);
        }
        DigestVerdict::Stale => {
            trace.fail(DIGEST, [("user", user.into()), ("fault", Value::Static("stale nonce"))]);
            return RegisterOutcome::Challenge { stale: true };
        }
        DigestVerdict::Invalid(fault) => {
            trace.fail(DIGEST, [("user", user.into()), ("fault", Value::Static(fault.as_str()))]);
            return match fault {
                // A guess: the only fault that tests a password, so the only one counted.
                DigestFault::WrongResponse => {
                    guards.limiter.failed(source_ip, user, now);
                    Rejected(Refusal::Product(Reason::D25))
                }
                // A nonce of another key (a restart, another cluster) or one already used:
                // a fresh challenge lets an honest device go on.
                DigestFault::UnknownNonce | DigestFault::Replay => RegisterOutcome::Challenge { stale: false },
                _ => Rejected(Refusal::Product(Reason::D25)),
            };
        }
    }
    if !connection.active {
        trace.fail("register.connection", [("connection", (&connection.id).into()), ("active", false.into())]);
        return Rejected(Refusal::Product(Reason::D18));
    }

    // 7. Intervals.
    let mut intervals = Vec::with_capacity(offered.len());
    for o in &offered {
        let asked = o.addr.expires().or(header_expires).unwrap_or(rules.default_expires);
        if asked != 0 && asked < rules.min_expires {
            trace.fail("register.expires", [("asked", asked.into()), ("min", rules.min_expires.into())]);
            return Rejected(Refusal::IntervalTooBrief { min_expires: rules.min_expires });
        }
        intervals.push(asked.min(rules.max_expires));
    }
    if let Some(first) = intervals.first() {
        trace.pass("register.expires", [("granted", (*first).into()), ("max", rules.max_expires.into())]);
    }

    // 8. Bindings.
    let mut removed = Vec::new();
    let mut current: Vec<Binding> = Vec::with_capacity(bindings.len() + offered.len());
    // Another connection's bindings are not this request's to touch, even if handed in.
    for b in bindings.iter().filter(|b| b.connection_id == connection.id) {
        if b.expires_at <= now {
            removed.push(b.clone());
        } else {
            current.push(b.clone());
        }
    }
    if star {
        // Removal of every binding, unless one was refreshed later in the same call (its
        // Call-ID with a higher CSeq).
        let (stale, kept): (Vec<_>, Vec<_>) = current.into_iter().partition(|b| b.call_id != call_id || b.cseq < cseq);
        removed.extend(stale);
        current = kept;
        trace.pass("register.bindings", [("removed", (removed.len() as u64).into()), ("wildcard", true.into())]);
        return accepted(conn, connection.id.clone(), current, removed, None, Vec::new(), false);
    }
    let path: Vec<String> = req.path.iter().flat_map(|p| split_list(p)).map(str::to_owned).collect();
    let source = req.source.map(|address| Flow { address, transport: req.transport });
    let wants_outbound = req.supported.iter().flat_map(|s| split_list(s)).any(|t| t.eq_ignore_ascii_case("outbound"));
    let mut fresh = Vec::new();
    let mut granted = None;
    for (o, expires) in offered.iter().zip(intervals) {
        let instance = o.addr.params.get("+sip.instance").flatten().map(str::to_owned);
        let reg_id = o.addr.params.get("reg-id").flatten().and_then(|v| v.parse::<u32>().ok());
        let existing = current
            .iter()
            .position(|b| same_binding(b, o.uri, instance.as_deref(), reg_id.filter(|_| instance.is_some())));
        if let Some(i) = existing {
            let b = &current[i];
            if b.call_id == call_id && b.cseq >= cseq {
                // RFC 3261 section 10.3 step 7: an older request arrived late.
                trace.fail("register.bindings", [("contact", o.uri.into()), ("cseq", cseq.into())]);
                return Rejected(Refusal::Product(Reason::P29));
            }
        }
        let previous = existing.map(|i| current.remove(i));
        if expires == 0 {
            removed.extend(previous);
            continue;
        }
        let Some(source) = source else {
            return bad(trace, "register.bindings", "no source address", "Bad Request");
        };
        granted = Some(expires);
        fresh.push(Binding {
            connection_id: connection.id.clone(),
            username: Arc::from(user),
            contact: o.uri.to_owned(),
            instance,
            reg_id,
            q: o.addr.q(),
            path: path.clone(),
            call_id: call_id.to_owned(),
            cseq,
            source,
            nat: behind_nat(&o.addr, source),
            user_agent: req.user_agent.map(|u| u.trim().to_owned()),
            registered_at: previous.as_ref().map_or(now, |p| p.registered_at),
            updated_at: now,
            expires_at: now.plus_millis(u64::from(expires) * 1000),
        });
    }
    // Over the cap: the least recently refreshed others make room.
    let room = rules.max_bindings.saturating_sub(fresh.len().min(rules.max_bindings));
    if current.len() > room {
        current.sort_by_key(|b| b.updated_at);
        removed.extend(current.drain(..current.len() - room));
    }
    fresh.truncate(rules.max_bindings);
    let outbound = wants_outbound && fresh.iter().any(|b| b.instance.is_some() && b.reg_id.is_some());
    current.extend(fresh);
    current.sort_by_key(|b| b.registered_at);
    trace.pass(
        "register.bindings",
        [("bindings", (current.len() as u64).into()), ("removed", (removed.len() as u64).into())],
    );
    let echoed = if granted.is_some() { path } else { Vec::new() };
    accepted(conn, connection.id.clone(), current, removed, granted, echoed, outbound)
}

fn accepted(
    connection: ConnectionRef,
    connection_id: Id,
    bindings: Vec<Binding>,
    removed: Vec<Binding>,
    granted: Option<u32>,
    path: Vec<String>,
    outbound: bool,
) -> RegisterOutcome {
    RegisterOutcome::Accepted(Registered { connection, connection_id, bindings, removed, granted, path, outbound })
}

/// The product's user name faults: empty (`R14`), not 4 to 32 letters and digits with a letter
/// among the first five as the API accepts them (`R16`), shorter than 4 (`R17`).
pub fn username_fault(user: &str) -> Option<Reason> {
    if user.is_empty() {
        return Some(Reason::R14);
    }
    let well_formed = user.len() <= 32
        && user.bytes().all(|b| b.is_ascii_alphanumeric())
        && user.bytes().take(5).any(|b| b.is_ascii_alphabetic());
    if !well_formed {
        return Some(Reason::R16);
    }
    (user.len() < 4).then_some(Reason::R17)
}

/// Whether an existing binding is the one a contact refreshes: the same RFC 5626 instance and
/// flow (`reg-id`) when the device gives them, otherwise the same URI.
fn same_binding(b: &Binding, uri: &str, instance: Option<&str>, reg_id: Option<u32>) -> bool {
    match (instance, reg_id) {
        (Some(i), Some(r)) => b.instance.as_deref() == Some(i) && b.reg_id == Some(r),
        _ => b.reg_id.is_none() && same_uri(&b.contact, uri),
    }
}

/// SIP URI equality as far as a binding goes (RFC 3261 section 19.1.4): scheme, user (exact),
/// host (any case), port and transport.
fn same_uri(a: &str, b: &str) -> bool {
    match (sip::uri::parse_uri(a), sip::uri::parse_uri(b)) {
        (Ok(Uri::Sip(x)), Ok(Uri::Sip(y))) => {
            x.secure == y.secure
                && x.user == y.user
                && x.host.to_string().eq_ignore_ascii_case(&y.host.to_string())
                && x.port == y.port
                && x.params.get("transport").flatten().map(str::to_ascii_lowercase)
                    == y.params.get("transport").flatten().map(str::to_ascii_lowercase)
        }
        _ => a == b,
    }
}

/// Whether calls must go to the request's source rather than the Contact as written: the
/// Contact names a host that is not the source's address and port (a private address behind a
/// NAT, a name, another port), or the device asked for an outbound flow (`ob`, RFC 5626).
fn behind_nat(contact: &NameAddr<'_>, source: Flow) -> bool {
    let Some(uri) = contact.sip_uri() else { return true };
    if uri.params.contains("ob") {
        return true;
    }
    let default_port = if uri.secure || source.transport == Transport::Tls { 5061 } else { 5060 };
    let port = uri.port.unwrap_or(default_port);
    match uri.host.ip() {
        Some(ip) => ip != source.address.ip() || port != source.address.port(),
        None => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Brute force.

/// Limits on failed digest attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterRules {
    /// The window failures are counted in, ms.
    pub window_ms: u64,
    /// Failures from one source address within the window before it cools down. Higher than
    /// per user: an office's phones share one public address.
    pub max_per_source: u32,
    /// Failures for one user name within the window before it cools down.
    pub max_per_user: u32,
    /// How long a source or user name is refused once over its limit, ms.
    pub cooldown_ms: u64,
    /// Sources and user names tracked at most, each (about 100 bytes an entry).
    pub capacity: usize,
}

impl Default for LimiterRules {
    fn default() -> Self {
        LimiterRules { window_ms: 60_000, max_per_source: 20, max_per_user: 5, cooldown_ms: 300_000, capacity: 65_536 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    window_start: Timestamp,
    count: u32,
    blocked_until: Option<Timestamp>,
}

/// Failure counts by key, at most `capacity` keys, the oldest tracked going first when full.
#[derive(Debug)]
struct Counters<K> {
    map: HashMap<K, Failures>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> Counters<K> {
    fn new() -> Self {
        Counters { map: HashMap::new(), order: VecDeque::new() }
    }

    fn blocked(&self, key: &K, now: Timestamp) -> Option<Timestamp> {
        self.map.get(key).and_then(|f| f.blocked_until).filter(|until| *until > now)
    }

    fn fail(&mut self, key: K, limit: u32, rules: &LimiterRules, now: Timestamp) {
        if !self.map.contains_key(&key) {
            // FIFO eviction keeps memory bounded whatever a flood of new keys does; a flood
            // large enough to evict a cooling key still meets the per-user limit.
            while self.map.len() >= rules.capacity.max(1) {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
        }
        let f = self.map.entry(key).or_insert(Failures { window_start: now, count: 0, blocked_until: None });
        if now.as_millis().saturating_sub(f.window_start.as_millis()) >= rules.window_ms {
            f.window_start = now;
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        if f.count >= limit {
            f.blocked_until = Some(now.plus_millis(rules.cooldown_ms));
            // The cool-down is the punishment; counting starts afresh after it.
            f.count = 0;
            f.window_start = now.plus_millis(rules.cooldown_ms);
        }
    }

    fn forget(&mut self, key: &K) {
        if let Some(f) = self.map.get_mut(key) {
            f.count = 0;
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Failed digest attempts per source address and per user name: beyond a limit within a window
/// the source (or the name) is refused for a cool-down, so a scanner cannot guess passwords at
/// line rate. Pure: time is passed in. Memory is bounded by [`LimiterRules::capacity`].
#[derive(Debug)]
pub struct FailedAuthLimiter {
    rules: LimiterRules,
    by_source: Counters<IpAddr>,
    by_user: Counters<Box<str>>,
}

/// User names are attacker-chosen: only this many bytes of one are kept as a key.
const USER_KEY_BYTES: usize = 64;

fn user_key(user: &str) -> Box<str> {
    let mut end = user.len().min(USER_KEY_BYTES);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].into()
}

impl FailedAuthLimiter {
    pub fn new(rules: LimiterRules) -> Self {
        FailedAuthLimiter { rules, by_source: Counters::new(), by_user: Counters::new() }
    }

    pub fn rules(&self) -> &LimiterRules {
        &self.rules
    }

    /// Seconds until the source or the user name may try again, when either is cooling down.
    pub fn cooling_down(&self, source: Option<IpAddr>, user: &str, now: Timestamp) -> Option<u64> {
        let by_source = source.and_then(|ip| self.by_source.blocked(&ip, now));
        let by_user = if user.is_empty() { None } else { self.by_user.blocked(&user_key(user), now) };
        let until = by_source.max(by_user)?;
        Some(until.as_millis().saturating_sub(now.as_millis()).div_ceil(1000))
    }

    /// Counts a failed attempt.
    pub fn failed(&mut self, source: Option<IpAddr>, user: &str, now: Timestamp) {
        if let Some(ip) = source {
            self.by_source.fail(ip, self.rules.max_per_source, &self.rules, now);
        }
        if !user.is_empty() {
            self.by_user.fail(user_key(user), self.rules.max_per_user, &self.rules, now);
        }
    }

    /// A user authenticated: its earlier failures no longer count (the source's still do, so a
    /// scanner holding one valid account cannot reset its own count).
    pub fn succeeded(&mut self, user: &str) {
        self.by_user.forget(&user_key(user));
    }

    /// Sources and user names tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_source.len(), self.by_user.len())
    }
}

impl Default for FailedAuthLimiter {
    fn default() -> Self {
        FailedAuthLimiter::new(LimiterRules::default())
    }
}
