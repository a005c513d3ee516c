//! UAC registration: opentrunk registering itself, as a user agent, to a customer's PBX for a
//! `uac_connection` (its `external_uac_settings`), so that the PBX sends the connection's calls
//! to us over that registration. One [`UacRegistration`] per connection, sans-I/O in the style
//! of the transactions and [`crate::call`]: `handle_*` for what happened, `poll_action` /
//! `poll_timeout` / `poll_event` for what to do next, `now` always passed in. It opens no
//! sockets, reads no clock and draws no randomness: the Call-ID, From tag and digest client
//! nonce come from the driver, which also adds the Via (with its branch) and runs the non-INVITE
//! client transaction of every REGISTER it is handed.
//!
//! The life of a registration (RFC 3261 section 10.2):
//!
//! - `Idle` -> `Locating`: the first hop (the outbound proxy when set, else the registrar named
//!   by `proxy`) is located with RFC 3263 ([`UacAction::Locate`], answered by
//!   [`UacRegistration::handle_targets`]).
//! - `Registering`: a REGISTER to the first target. `401`/`407` is answered with digest
//!   credentials; a second challenge to credentials we computed for a fresh challenge (unless
//!   the server says `stale=true`), or to the same nonce, means the password is wrong.
//!   `423` is retried at the registrar's `Min-Expires`. `408`, `5xx`, a transaction timeout or a
//!   transport error moves to the next target; when none is left, `Failed`.
//! - `Registered { expires_at, refresh_at }`: refreshed at half the granted time or 5 s before
//!   it runs out, whichever is earlier (at least 1 s away), in `Refreshing`, with the same
//!   Call-ID and a higher CSeq (section 10.2.4). The nonce of the last challenge is reused with
//!   a growing nonce count, so a refresh usually costs one round trip.
//! - `Failed { until }`: a capped exponential backoff (5 s doubling to 5 min), then located
//!   afresh, since the DNS may have changed while the PBX was unreachable.
//! - [`UacRegistration::unregister`] (the connection deleted, the switch stopping): `Expires: 0`
//!   for our contact where a binding may exist, then `Stopped`.
//!
//! At most one REGISTER is outstanding at any time: a new one is built only once the previous
//! one has its final response or its failure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;
use sip::Message;
use sip::headers::{Auth, Contacts, HeaderName, NameAddr};

use crate::dns::{LocateError, Target};
use crate::transport::TransportKind;

/// Registration interval when `expiration_sec` is null. The contract gives no default; this is
/// the registrar's default of RFC 3261 section 10.2.1.1.
pub const DEFAULT_EXPIRATION_SEC: u32 = 3600;
/// First wait after a failed registration.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between registration attempts: a PBX back from maintenance is found within
/// five minutes, and a dead one costs one REGISTER (per target) every five minutes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A refresh goes out at least this long before the binding runs out.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5);
/// ... but never sooner than this after the `200`, so a tiny grant cannot make us spin.
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);
/// Challenges answered toward one target before giving up: the first, and a couple of
/// `stale=true` renewals; a server that keeps issuing fresh stale nonces must not loop us.
const MAX_CHALLENGES: u32 = 3;
/// The document's private field holding `external_uac_settings.password` (the API keeps it
/// out of `external_uac_settings`; see `api::uac_connections::EXTERNAL_PASSWORD_FIELD`).
pub const EXTERNAL_PASSWORD_FIELD: &str = "_external_uac_password";

/// What we register with, from a stored `uac_connection` document.
#[derive(Clone, PartialEq, Eq)]
pub struct UacSettings {
    /// The user of the address of record we register (`sip:username@proxy-host`).
    pub username: String,
    /// The digest user name (`auth_username`, else `username`).
    pub auth_username: String,
    pub password: String,
    /// The registrar, `host[:port]` (a host name, IPv4 or `[IPv6]`).
    pub proxy: String,
    /// Where requests go first instead of the registrar, `host[:port]`.
    pub outbound_proxy: Option<String>,
    pub transport: TransportKind,
    pub expiration_sec: u32,
    /// The user of our Contact (`from_user`, else `username`): the PBX sends calls there.
    pub from_user: Option<String>,
}

impl std::fmt::Debug for UacSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line.
        f.debug_struct("UacSettings")
            .field("username", &self.username)
            .field("auth_username", &self.auth_username)
            .field("proxy", &self.proxy)
            .field("outbound_proxy", &self.outbound_proxy)
            .field("transport", &self.transport)
            .field("expiration_sec", &self.expiration_sec)
            .field("from_user", &self.from_user)
            .finish_non_exhaustive()
    }
}

impl UacSettings {
    /// Reads `external_uac_settings` of a stored `uac_connection` document. The password is in
    /// the document's private field (as the API stores it), or in `external_uac_settings` for a
    /// document as a client wrote it. A connection without `proxy`, `username` or password
    /// cannot register: that is an `Err` naming what is missing.
    pub fn from_document(doc: &Value) -> Result<UacSettings, String> {
        let s = doc
            .get("external_uac_settings")
            .filter(|v| v.is_object())
            .ok_or_else(|| "external_uac_settings is not set".to_owned())?;
        let text = |name: &str| -> Result<Option<String>, String> {
            match s.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(t)) if !t.is_empty() => Ok(Some(t.clone())),
                Some(_) => Err(format!("external_uac_settings.{name} must be a non-empty string")),
            }
        };
        let user = |name: &str| -> Result<Option<String>, String> {
            let v = text(name)?;
            match v {
                Some(u) if !is_user_part(&u) => Err(format!("external_uac_settings.{name} is not a SIP user part")),
                v => Ok(v),
            }
        };
        let host_port = |name: &str| -> Result<Option<String>, String> {
            let v = text(name)?;
            match v {
                Some(h) if sip::uri::parse_host(&h).is_err() => {
                    Err(format!("external_uac_settings.{name} is not host[:port]"))
                }
                v => Ok(v),
            }
        };
        let username = user("username")?.ok_or_else(|| "external_uac_settings.username is not set".to_owned())?;
        let proxy = host_port("proxy")?.ok_or_else(|| "external_uac_settings.proxy is not set".to_owned())?;
        let outbound_proxy = host_port("outbound_proxy")?;
        let password = match doc.get(EXTERNAL_PASSWORD_FIELD).or_else(|| s.get("password")) {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            _ => return Err("external_uac_settings.password is not set".to_owned()),
        };
        let transport = match text("transport")? {
            None => TransportKind::Udp,
            Some(t) => TransportKind::from_token(&t)
                .ok_or_else(|| format!("external_uac_settings.transport {t:?} is not UDP, TCP or TLS"))?,
        };
        let expiration_sec = match s.get("expiration_sec") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SEC,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| "external_uac_settings.expiration_sec must be 1 to 4294967295".to_owned())?,
        };
        let auth_username = user("auth_username")?.unwrap_or_else(|| username.clone());
        let from_user = user("from_user")?;
        Ok(UacSettings {
            username,
            auth_username,
            password,
            proxy,
            outbound_proxy,
            transport,
            expiration_sec,
            from_user,
        })
    }
}

/// Characters that may stand in the user part of a SIP URI (RFC 3261 `user`, escapes kept).
fn is_user_part(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&c))
}

/// Where the PBX reaches us: our advertised `host:port` on the connection's transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UacLocal {
    pub host_port: String,
    pub transport: TransportKind,
}

/// Identifiers the driver draws for one registration (kept for its whole life: RFC 3261
/// section 10.2.4 wants the same Call-ID on every refresh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UacIds {
    pub call_id: String,
    pub from_tag: String,
    /// The client nonce of our digest answers.
    pub cnonce: String,
}

/// What the driver must do.
// Register is the usual action and at most one is queued per connection: boxing would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum UacAction {
    /// Locate this SIP URI (RFC 3263) and answer with [`UacRegistration::handle_targets`].
    Locate { uri: String },
    /// Send this REGISTER to `target` in a new non-INVITE client transaction (the driver adds
    /// the Via). Its final response goes to [`UacRegistration::handle_response`], its timeout
    /// or transport error to [`UacRegistration::handle_request_failed`].
    Register { request: Message, target: Target },
}

/// How a REGISTER got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFailure {
    /// Timer F fired (treated as `408`, RFC 3261 section 8.1.3.1).
    Timeout,
    /// The transport could not send it (treated as `503`).
    Transport,
}

/// Changes the driver reports (the connection's `registration_status`, logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UacEvent {
    Registered {
        expires_at: Instant,
    },
    /// The attempt failed; the next starts at `retry_at`.
    Failed {
        status: Option<u16>,
        reason: String,
        retry_at: Instant,
    },
    /// A binding ran out without being refreshed.
    Expired,
    /// [`UacRegistration::unregister`] is done.
    Unregistered,
}

/// Where a registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UacState {
    Idle,
    Locating,
    Registering,
    Registered { expires_at: Instant, refresh_at: Instant },
    Refreshing,
    Failed { until: Instant },
    Unregistering,
    Stopped,
}

/// What the registration-status endpoints show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UacStatus {
    pub state: UacState,
    /// A binding granted by the PBX is in force.
    pub registered: bool,
    /// The last final response (a timeout as `408`, a transport error as `503`).
    pub last_response: Option<(u16, String)>,
    pub last_event_at: Option<Instant>,
    /// Failed attempts since the last success.
    pub failures: u32,
    pub expires_at: Option<Instant>,
}

impl UacStatus {
    /// The contract's `registration_status` value.
    pub fn label(&self) -> &'static str {
        match self.state {
            _ if self.registered => "Registered",
            UacState::Stopped => "Unregistered",
            UacState::Failed { .. } => "Failed",
            _ if self.failures > 0 => "Failed",
            _ => "Not Registered",
        }
    }
}

/// The digest challenge we answer, and how many requests used its nonce.
#[derive(Clone, Debug)]
struct Credentials {
    /// `Authorization` or `Proxy-Authorization`.
    header: HeaderName,
    challenge: String,
    nonce: String,
    nc: u32,
}

/// The REGISTER in flight.
#[derive(Clone, Debug)]
struct Outstanding {
    cseq: u32,
    target: Target,
    expires: u32,
    /// The nonce its credentials used, if any.
    nonce: Option<String>,
    /// Its credentials answered a challenge just received (not reused from an earlier one):
    /// a new challenge then means they were refused.
    fresh_answer: bool,
}

/// One UAC connection's registration to its PBX.
#[derive(Debug)]
pub struct UacRegistration {
    settings: UacSettings,
    ids: UacIds,
    state: UacState,
    request_uri: String,
    /// Our address of record: To and From.
    aor: String,
    contact: String,
    contact_user: String,
    route: Option<String>,
    /// The URI located for the first hop.
    first_hop: String,
    targets: Vec<Target>,
    current: usize,
    cseq: u32,
    /// The expiry we ask for (raised by `423`).
    expires: u32,
    credentials: Option<Credentials>,
    challenges: u32,
    outstanding: Option<Outstanding>,
    actions: VecDeque<UacAction>,
    events: VecDeque<UacEvent>,
    /// Where a binding of ours is in force, and until when.
    binding: Option<(Target, Instant)>,
    failures: u32,
    last_response: Option<(u16, String)>,
    last_event_at: Option<Instant>,
    /// `unregister` was asked.
    stopping: bool,
}

fn transport_param(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Udp => "",
        TransportKind::Tcp => ";transport=tcp",
        TransportKind::Tls => ";transport=tls",
    }
}

impl UacRegistration {
    pub fn new(settings: UacSettings, local: UacLocal, ids: UacIds) -> UacRegistration {
        let t = transport_param(settings.transport);
        let request_uri = format!("sip:{}{t}", settings.proxy);
        // The AOR's domain is the registrar's host without a port (RFC 3261 section 10.2).
        let domain = match sip::uri::parse_host(&settings.proxy) {
            Ok((host, _)) => host.to_string(),
            Err(_) => settings.proxy.clone(),
        };
        let aor = format!("sip:{}@{domain}", settings.username);
        let contact_user = settings.from_user.clone().unwrap_or_else(|| settings.username.clone());
        let contact = format!("sip:{contact_user}@{}{}", local.host_port, transport_param(local.transport));
        let (route, first_hop) = match &settings.outbound_proxy {
            Some(op) => (Some(format!("<sip:{op};lr{t}>")), format!("sip:{op}{t}")),
            None => (None, request_uri.clone()),
        };
        let expires = settings.expiration_sec;
        UacRegistration {
            settings,
            ids,
            state: UacState::Idle,
            request_uri,
            aor,
            contact,
            contact_user,
            route,
            first_hop,
            targets: Vec::new(),
            current: 0,
            cseq: 0,
            expires,
            credentials: None,
            challenges: 0,
            outstanding: None,
            actions: VecDeque::with_capacity(1),
            events: VecDeque::with_capacity(2),
            binding: None,
            failures: 0,
            last_response: None,
            last_event_at: None,
            stopping: false,
        }
    }

    pub fn state(&self) -> UacState {
        self.state
    }

    pub fn settings(&self) -> &UacSettings {
        &self.settings
    }

    /// The Contact URI we register: inbound calls from the PBX arrive with it as their
    /// Request-URI.
    pub fn contact(&self) -> &str {
        &self.contact
    }

    /// Where our binding is in force: inbound calls for the connection go there.
    pub fn bound_target(&self) -> Option<&Target> {
        self.binding.as_ref().map(|b| &b.0)
    }

    /// The address of record we register (`sip:username@registrar-host`).
    pub fn aor(&self) -> &str {
        &self.aor
    }

    pub fn status(&self) -> UacStatus {
        UacStatus {
            state: self.state,
            registered: self.binding.is_some(),
            last_response: self.last_response.clone(),
            last_event_at: self.last_event_at,
            failures: self.failures,
            expires_at: self.binding.as_ref().map(|b| b.1),
        }
    }

    /// The next thing to send. A new registration starts locating its first hop here.
    pub fn poll_action(&mut self) -> Option<UacAction> {
        if self.state == UacState::Idle && !self.stopping {
            self.locate();
        }
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<UacEvent> {
        self.events.pop_front()
    }

    /// When [`UacRegistration::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            UacState::Registered { refresh_at, .. } => Some(refresh_at),
            UacState::Failed { until } => Some(until),
            UacState::Stopped => return None,
            _ => None,
        };
        let expiry = self.binding.as_ref().map(|b| b.1);
        match (state, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.binding.as_ref().is_some_and(|b| b.1 <= now) {
            self.binding = None;
            self.last_event_at = Some(now);
            self.events.push_back(UacEvent::Expired);
        }
        match self.state {
            UacState::Registered { refresh_at, .. } if refresh_at <= now && !self.stopping => {
                match self.targets.get(self.current).cloned() {
                    Some(target) => {
                        self.state = UacState::Refreshing;
                        self.challenges = 0;
                        self.send_register(target, self.expires);
                    }
                    None => self.locate(),
                }
            }
            UacState::Failed { until } if until <= now && !self.stopping => self.locate(),
            _ => {}
        }
    }

    /// The first hop's targets, in failover order, or why there are none.
    pub fn handle_targets(&mut self, located: Result<Vec<Target>, LocateError>, now: Instant) {
        if self.state != UacState::Locating {
            return;
        }
        match located {
            Ok(targets) if !targets.is_empty() => {
                self.targets = targets;
                self.current = 0;
                self.credentials = None;
                self.challenges = 0;
                self.state = UacState::Registering;
                self.send_register(self.targets[0].clone(), self.expires);
            }
            Ok(_) => self.fail(None, format!("{}: {}", self.first_hop, LocateError::NotFound), now),
            Err(e) => self.fail(None, format!("{}: {e}", self.first_hop), now),
        }
        self.settle(now);
    }

    /// A final response to the outstanding REGISTER (provisional ones and responses to any other
    /// request are ignored).
    pub fn handle_response(&mut self, response: &Message, now: Instant) {
        let Some(code) = response.status() else { return };
        if code < 200 {
            return;
        }
        let matches = self.outstanding.as_ref().is_some_and(|o| {
            response.cseq().is_ok_and(|c| c.seq == o.cseq && c.method == sip::Method::Register)
                && response.call_id().is_ok_and(|id| id == self.ids.call_id)
        });
        if !matches {
            return;
        }
        let Some(sent) = self.outstanding.take() else { return };
        let reason = response.reason().unwrap_or_default().to_owned();
        self.last_response = Some((code, reason.clone()));
        self.last_event_at = Some(now);

        if self.state == UacState::Unregistering {
            if matches!(code, 401 | 407) && self.take_challenge(response, code, &sent) {
                self.send_register(sent.target, 0);
            } else {
                self.finish_stop();
            }
            return;
        }
        match code {
            200..=299 => self.registered(response, sent, now),
            401 | 407 => {
                if self.take_challenge(response, code, &sent) {
                    self.send_register(sent.target, sent.expires);
                } else {
                    self.fail(Some(code), reason, now);
                }
            }
            423 => match response.header(HeaderName::MinExpires).and_then(|v| sip::headers::parse_number(v).ok()) {
                // Only upward: a Min-Expires at or below what we asked would loop.
                Some(min) if min > sent.expires => {
                    self.expires = min;
                    self.send_register(sent.target, min);
                }
                _ => self.fail(Some(code), reason, now),
            },
            408 | 500..=599 => self.next_target(Some(code), reason, now),
            _ => self.fail(Some(code), reason, now),
        }
        self.settle(now);
    }

    /// The outstanding REGISTER's transaction timed out or could not be sent.
    pub fn handle_request_failed(&mut self, failure: RequestFailure, now: Instant) {
        if self.outstanding.take().is_none() {
            return;
        }
        let (code, reason) = match failure {
            RequestFailure::Timeout => (408, "Request Timeout"),
            RequestFailure::Transport => (503, "Service Unavailable"),
        };
        self.last_response = Some((code, reason.to_owned()));
        self.last_event_at = Some(now);
        if self.state == UacState::Unregistering {
            self.finish_stop();
            return;
        }
        self.next_target(Some(code), reason.to_owned(), now);
        self.settle(now);
    }

    /// Removes our binding (`Expires: 0`) and stops: the connection was deleted or the switch
    /// stops. A REGISTER in flight is let finish first, since it may create a binding.
    pub fn unregister(&mut self, now: Instant) {
        if self.stopping || self.state == UacState::Stopped {
            return;
        }
        self.stopping = true;
        // Nothing the driver has not taken yet is sent: a queued REGISTER never left.
        if self.actions.iter().any(|a| matches!(a, UacAction::Register { .. })) {
            self.outstanding = None;
        }
        self.actions.clear();
        self.settle(now);
    }

    fn locate(&mut self) {
        self.state = UacState::Locating;
        self.actions.push_back(UacAction::Locate { uri: self.first_hop.clone() });
    }

    /// Once `unregister` was asked and nothing is in flight: remove the binding, or stop.
    fn settle(&mut self, now: Instant) {
        if !self.stopping || self.outstanding.is_some() {
            return;
        }
        if matches!(self.state, UacState::Unregistering | UacState::Stopped) {
            return;
        }
        self.last_event_at = Some(now);
        match self.binding.clone() {
            Some((target, _)) => {
                self.state = UacState::Unregistering;
                self.challenges = 0;
                if self.targets.get(self.current) != Some(&target) {
                    self.credentials = None;
                }
                self.send_register(target, 0);
            }
            None => self.finish_stop(),
        }
    }

    fn finish_stop(&mut self) {
        self.binding = None;
        self.state = UacState::Stopped;
        self.actions.clear();
        self.events.push_back(UacEvent::Unregistered);
    }

    fn registered(&mut self, response: &Message, sent: Outstanding, now: Instant) {
        let granted = self.granted(response, sent.expires);
        if granted == 0 {
            // A registrar that grants nothing has not registered us.
            self.fail(Some(200), "binding granted for 0 seconds".to_owned(), now);
            return;
        }
        let g = Duration::from_secs(u64::from(granted));
        let expires_at = now + g;
        let refresh_at = now + (g / 2).min(g.saturating_sub(REFRESH_MARGIN)).max(MIN_REFRESH_DELAY);
        self.binding = Some((sent.target, expires_at));
        self.failures = 0;
        self.challenges = 0;
        self.state = UacState::Registered { expires_at, refresh_at };
        self.events.push_back(UacEvent::Registered { expires_at });
    }

    /// The granted time: our Contact's `expires`, else `Expires`, else what we asked.
    fn granted(&self, response: &Message, requested: u32) -> u32 {
        if let Ok(Some(Contacts::List(list))) = response.contacts()
            && let Some(e) = list.iter().filter(|c| self.is_our_contact(c)).find_map(NameAddr::expires)
        {
            return e;
        }
        response.expires().ok().flatten().unwrap_or(requested)
    }

    fn is_our_contact(&self, contact: &NameAddr<'_>) -> bool {
        let Some(uri) = contact.sip_uri() else { return false };
        let host_port = match uri.port {
            Some(p) => format!("{}:{p}", uri.host),
            None => uri.host.to_string(),
        };
        let local = self.contact.split_once('@').map_or("", |(_, rest)| rest.split(';').next().unwrap_or(rest));
        uri.user == Some(self.contact_user.as_str()) && host_port.eq_ignore_ascii_case(local)
    }

    /// Takes the challenge of a `401`/`407` to answer, unless it shows that our credentials
    /// were refused (see the module documentation) or no challenge can be answered.
    fn take_challenge(&mut self, response: &Message, code: u16, sent: &Outstanding) -> bool {
        if self.challenges >= MAX_CHALLENGES {
            return false;
        }
        let (from, answer) = if code == 401 {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        } else {
            (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization)
        };
        let chosen = response.header_values(from).find_map(|value| {
            let auth = Auth::parse(value).ok()?;
            let nonce = auth.param("nonce")?.into_owned();
            // Only a challenge we can compute an answer for (scheme, algorithm, qop).
            let probe = trunking::digest::authorization(
                &auth,
                "REGISTER",
                &self.request_uri,
                &self.settings.auth_username,
                &self.settings.password,
                &self.ids.cnonce,
                1,
            );
            probe.ok()?;
            let stale = auth.param("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
            Some((value.to_owned(), nonce, stale))
        });
        let Some((challenge, nonce, stale)) = chosen else { return false };
        if sent.nonce.as_deref() == Some(nonce.as_str()) || (sent.fresh_answer && !stale) {
            return false;
        }
        self.challenges += 1;
        self.credentials = Some(Credentials { header: answer, challenge, nonce, nc: 0 });
        true
    }

    fn next_target(&mut self, status: Option<u16>, reason: String, now: Instant) {
        // A binding elsewhere is refreshed on the next target: a new binding there.
        if self.current + 1 < self.targets.len() {
            self.current += 1;
            self.credentials = None;
            self.challenges = 0;
            let target = self.targets[self.current].clone();
            self.send_register(target, self.expires);
        } else {
            self.fail(status, reason, now);
        }
    }

    fn fail(&mut self, status: Option<u16>, reason: String, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        let wait = BACKOFF_FIRST.saturating_mul(1 << doublings).min(BACKOFF_MAX);
        let until = now + wait;
        self.outstanding = None;
        self.credentials = None;
        self.challenges = 0;
        self.last_event_at = Some(now);
        self.state = UacState::Failed { until };
        self.events.push_back(UacEvent::Failed { status, reason, retry_at: until });
    }

    fn send_register(&mut self, target: Target, expires: u32) {
        debug_assert!(self.outstanding.is_none());
        self.cseq = self.cseq.wrapping_add(1).max(1);
        let mut r = Message::new_request("REGISTER", &self.request_uri);
        if let Some(route) = &self.route {
            r.push_header(HeaderName::Route, route);
        }
        r.push_header(HeaderName::MaxForwards, "70");
        r.push_header(HeaderName::From, &format!("<{}>;tag={}", self.aor, self.ids.from_tag));
        r.push_header(HeaderName::To, &format!("<{}>", self.aor));
        r.push_header(HeaderName::CallId, &self.ids.call_id);
        r.push_header(HeaderName::CSeq, &format!("{} REGISTER", self.cseq));
        r.push_header(HeaderName::Contact, &format!("<{}>", self.contact));
        r.push_header(HeaderName::Expires, &expires.to_string());
        let mut nonce = None;
        let mut fresh_answer = false;
        if let Some(c) = &mut self.credentials {
            let answer = Auth::parse(&c.challenge).ok().and_then(|auth| {
                trunking::digest::authorization(
                    &auth,
                    "REGISTER",
                    &self.request_uri,
                    &self.settings.auth_username,
                    &self.settings.password,
                    &self.ids.cnonce,
                    c.nc + 1,
                )
                .ok()
            });
            if let Some(value) = answer {
                fresh_answer = c.nc == 0;
                c.nc += 1;
                nonce = Some(c.nonce.clone());
                r.push_header(c.header, &value);
            }
        }
        self.outstanding = Some(Outstanding { cseq: self.cseq, target: target.clone(), expires, nonce, fresh_answer });
        self.actions.push_back(UacAction::Register { request: r, target });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;
    use sip::Framing;
    use trunking::digest::{DigestAlgorithm, DigestRealm, DigestVerdict, ReplayGuard, StoredDigest};
    use trunking::time::Timestamp;

    const PASSWORD: &str = "testtesttest";

    fn document() -> Value {
        json!({
            "record_type": "uac_connection",
            "external_uac_settings": {
                "auth_username": "auth8492", "expiration_sec": 600, "from_user": "8492",
                "outbound_proxy": null, "proxy": "pbx.example.com", "transport": "UDP", "username": "ext8492"
            },
            "_external_uac_password": PASSWORD,
        })
    }

    fn target(n: u8) -> Target {
        Target {
            kind: TransportKind::Udp,
            addr: format!("192.0.2.{n}:5060").parse().unwrap(),
            host: "pbx.example.com".into(),
        }
    }

    fn registration(doc: &Value) -> UacRegistration {
        let settings = UacSettings::from_document(doc).unwrap();
        let local = UacLocal { host_port: "203.0.113.10:5060".into(), transport: TransportKind::Udp };
        let ids = UacIds { call_id: "reg-1@opentrunk".into(), from_tag: "ft1".into(), cnonce: "c0ffee".into() };
        UacRegistration::new(settings, local, ids)
    }

    fn parse(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_owned()), Framing::Datagram).unwrap()
    }

    /// A registration that has located `targets` and sent its first REGISTER.
    fn started(targets: Vec<Target>, now: Instant) -> (UacRegistration, Message, Target) {
        let mut r = registration(&document());
        match r.poll_action() {
            Some(UacAction::Locate { uri }) => assert_eq!(uri, "sip:pbx.example.com"),
            other => panic!("expected Locate, got {other:?}"),
        }
        assert_eq!(r.state(), UacState::Locating);
        r.handle_targets(Ok(targets), now);
        let (req, t) = register(&mut r);
        (r, req, t)
    }

    /// The REGISTER the registration wants sent now, as the PBX would parse it.
    fn register(r: &mut UacRegistration) -> (Message, Target) {
        match r.poll_action() {
            Some(UacAction::Register { mut request, target }) => {
                assert!(r.poll_action().is_none(), "one action at a time");
                request.prepend_header(HeaderName::Via, "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKx");
                (parse(&request.to_string()), target)
            }
            other => panic!("expected Register, got {other:?}"),
        }
    }

    fn respond(req: &Message, code: u16, reason: &str, extra: &[(HeaderName, &str)]) -> Message {
        let mut resp = req.response_to(code, reason, Some("pbx-tag"));
        for (name, value) in extra {
            resp.push_header(*name, value);
        }
        parse(&resp.to_string())
    }

    struct Pbx {
        realm: DigestRealm,
        guard: ReplayGuard,
        stored: StoredDigest,
    }

    impl Pbx {
        fn new(password: &str) -> Pbx {
            Pbx {
                realm: DigestRealm::new("pbx.example.com", [7; 32], 300_000),
                guard: ReplayGuard::default(),
                stored: StoredDigest::from_password("auth8492", "pbx.example.com", password),
            }
        }
        fn challenge(&self, stale: bool) -> String {
            let nonce = self.realm.nonce(Timestamp(1_000));
            self.realm.challenge(DigestAlgorithm::Md5, &nonce, stale)
        }
        fn verify(&mut self, req: &Message) -> DigestVerdict {
            let creds = Auth::parse(req.header(HeaderName::Authorization).expect("credentials")).unwrap();
            self.realm.verify(&creds, "REGISTER", &self.stored, Timestamp(2_000), &mut self.guard)
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn settings_from_the_stored_document() {
        let s = UacSettings::from_document(&document()).unwrap();
        assert_eq!(s.username, "ext8492");
        assert_eq!(s.auth_username, "auth8492");
        assert_eq!(s.password, PASSWORD);
        assert_eq!(s.proxy, "pbx.example.com");
        assert_eq!(s.transport, TransportKind::Udp);
        assert_eq!(s.expiration_sec, 600);
        assert_eq!(s.from_user.as_deref(), Some("8492"));
        assert!(!format!("{s:?}").contains(PASSWORD), "no password in Debug");

        // Nullable fields null: the defaults. The password as a client wrote it is read too.
        let doc = json!({"external_uac_settings": {
            "auth_username": null, "expiration_sec": null, "from_user": null, "outbound_proxy": "[2001:db8::1]:5070",
            "transport": "TLS", "proxy": "198.51.100.7:5061", "username": "ext8492", "password": "pw"}});
        let s = UacSettings::from_document(&doc).unwrap();
        assert_eq!(s.auth_username, "ext8492");
        assert_eq!(s.expiration_sec, DEFAULT_EXPIRATION_SEC);
        assert_eq!(s.transport, TransportKind::Tls);
        assert_eq!(s.outbound_proxy.as_deref(), Some("[2001:db8::1]:5070"));
        assert_eq!(s.password, "pw");

        // What the API stores for a new connection: nothing to register with yet.
        let fresh = json!({"external_uac_settings": {"auth_username": null, "expiration_sec": null,
            "from_user": null, "outbound_proxy": null, "transport": null}});
        assert_eq!(UacSettings::from_document(&fresh).unwrap_err(), "external_uac_settings.username is not set");
        let mut no_password = document();
        no_password.as_object_mut().unwrap().remove(EXTERNAL_PASSWORD_FIELD);
        assert!(UacSettings::from_document(&no_password).unwrap_err().contains("password"));
        let mut bad = document();
        bad["external_uac_settings"]["transport"] = json!("SCTP");
        assert!(UacSettings::from_document(&bad).unwrap_err().contains("transport"));
        bad = document();
        bad["external_uac_settings"]["expiration_sec"] = json!(0);
        assert!(UacSettings::from_document(&bad).is_err());
        bad = document();
        bad["external_uac_settings"]["proxy"] = json!("pbx example");
        assert!(UacSettings::from_document(&bad).unwrap_err().contains("proxy"));
        assert!(UacSettings::from_document(&json!({})).is_err());
    }

    #[test]
    fn first_registration_answers_the_challenge() {
        let t0 = Instant::now();
        let (mut r, req, target) = started(vec![target(1)], t0);
        assert_eq!(target, self::target(1));
        assert_eq!(r.state(), UacState::Registering);
        assert_eq!(req.request_uri_str(), Some("sip:pbx.example.com"));
        assert_eq!(req.header(HeaderName::From), Some("<sip:ext8492@pbx.example.com>;tag=ft1"));
        assert_eq!(req.header(HeaderName::To), Some("<sip:ext8492@pbx.example.com>"));
        assert_eq!(req.header(HeaderName::Contact), Some("<sip:8492@203.0.113.10:5060>"));
        assert_eq!(req.header(HeaderName::Expires), Some("600"));
        assert_eq!(req.header(HeaderName::CallId), Some("reg-1@opentrunk"));
        assert_eq!(req.header(HeaderName::CSeq), Some("1 REGISTER"));
        assert_eq!(req.header(HeaderName::Route), None);
        assert_eq!(req.header(HeaderName::Authorization), None);

        let mut pbx = Pbx::new(PASSWORD);
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (req2, target2) = register(&mut r);
        assert_eq!(target2, self::target(1));
        assert_eq!(req2.header(HeaderName::CSeq), Some("2 REGISTER"));
        assert_eq!(req2.header(HeaderName::CallId), Some("reg-1@opentrunk"));
        assert_eq!(pbx.verify(&req2), DigestVerdict::Valid);
        let creds = Auth::parse(req2.header(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!(creds.param("username").as_deref(), Some("auth8492"));
        assert_eq!(creds.param("uri").as_deref(), Some("sip:pbx.example.com"));
        assert_eq!(creds.param("nc").as_deref(), Some("00000001"));

        // The registrar grants less than asked, on our contact (another binding is not ours).
        let t1 = t0 + secs(1);
        let contacts = "<sip:other@198.51.100.1>;expires=3000, <sip:8492@203.0.113.10:5060>;expires=120";
        r.handle_response(
            &respond(&req2, 200, "OK", &[(HeaderName::Contact, contacts), (HeaderName::Expires, "600")]),
            t1,
        );
        assert_eq!(r.state(), UacState::Registered { expires_at: t1 + secs(120), refresh_at: t1 + secs(60) });
        assert_eq!(r.poll_event(), Some(UacEvent::Registered { expires_at: t1 + secs(120) }));
        let status = r.status();
        assert!(status.registered);
        assert_eq!(status.label(), "Registered");
        assert_eq!(status.last_response, Some((200, "OK".into())));
        assert_eq!(status.last_event_at, Some(t1));
        assert_eq!(status.expires_at, Some(t1 + secs(120)));
        assert_eq!(status.failures, 0);
        assert_eq!(r.poll_timeout(), Some(t1 + secs(60)));
        assert!(r.poll_action().is_none());
    }

    #[test]
    fn outbound_proxy_and_transport_shape_the_request() {
        let mut doc = document();
        doc["external_uac_settings"]["outbound_proxy"] = json!("edge.example.net:5061");
        doc["external_uac_settings"]["transport"] = json!("TLS");
        doc["external_uac_settings"]["proxy"] = json!("pbx.example.com:5061");
        let settings = UacSettings::from_document(&doc).unwrap();
        let local = UacLocal { host_port: "sip.example.org:5061".into(), transport: TransportKind::Tls };
        let ids = UacIds { call_id: "c".into(), from_tag: "f".into(), cnonce: "n".into() };
        let mut r = UacRegistration::new(settings, local, ids);
        match r.poll_action() {
            Some(UacAction::Locate { uri }) => assert_eq!(uri, "sip:edge.example.net:5061;transport=tls"),
            other => panic!("{other:?}"),
        }
        let mut t = target(9);
        t.kind = TransportKind::Tls;
        r.handle_targets(Ok(vec![t.clone()]), Instant::now());
        let (req, to) = register(&mut r);
        assert_eq!(to, t);
        assert_eq!(req.request_uri_str(), Some("sip:pbx.example.com:5061;transport=tls"));
        assert_eq!(req.header(HeaderName::Route), Some("<sip:edge.example.net:5061;lr;transport=tls>"));
        assert_eq!(req.header(HeaderName::To), Some("<sip:ext8492@pbx.example.com>"));
        assert_eq!(req.header(HeaderName::Contact), Some("<sip:8492@sip.example.org:5061;transport=tls>"));
        assert_eq!(r.contact(), "sip:8492@sip.example.org:5061;transport=tls");
    }

    #[test]
    fn refresh_at_half_the_grant_with_the_same_call_id_and_a_counted_nonce() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        let mut pbx = Pbx::new(PASSWORD);
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (req, _) = register(&mut r);
        assert_eq!(pbx.verify(&req), DigestVerdict::Valid);
        // No contact in the answer: the Expires header.
        r.handle_response(&respond(&req, 200, "OK", &[(HeaderName::Expires, "600")]), t0);
        assert_eq!(r.poll_timeout(), Some(t0 + secs(300)));
        r.handle_timeout(t0 + secs(299));
        assert!(r.poll_action().is_none(), "not yet");
        r.handle_timeout(t0 + secs(300));
        assert_eq!(r.state(), UacState::Refreshing);
        assert!(r.status().registered, "the binding holds while it is refreshed");
        let (refresh, to) = register(&mut r);
        assert_eq!(to, target(1));
        assert_eq!(refresh.header(HeaderName::CallId), Some("reg-1@opentrunk"));
        assert_eq!(refresh.header(HeaderName::CSeq), Some("3 REGISTER"));
        assert_eq!(refresh.header(HeaderName::Expires), Some("600"));
        // The known nonce, counted on: no extra round trip, and the PBX takes it.
        let creds = Auth::parse(refresh.header(HeaderName::Authorization).unwrap()).unwrap();
        assert_eq!(creds.param("nc").as_deref(), Some("00000002"));
        assert_eq!(pbx.verify(&refresh), DigestVerdict::Valid);

        // A short grant: 5 s before it runs out rather than half.
        let t1 = t0 + secs(301);
        r.handle_response(&respond(&refresh, 200, "OK", &[(HeaderName::Expires, "8")]), t1);
        assert_eq!(r.state(), UacState::Registered { expires_at: t1 + secs(8), refresh_at: t1 + secs(3) });
        r.handle_timeout(t1 + secs(3));
        let (refresh, _) = register(&mut r);
        // A tiny one: never sooner than a second.
        let t2 = t1 + secs(4);
        r.handle_response(&respond(&refresh, 200, "OK", &[(HeaderName::Expires, "2")]), t2);
        assert_eq!(r.state(), UacState::Registered { expires_at: t2 + secs(2), refresh_at: t2 + secs(1) });
        // No Expires at all: what we asked.
        r.handle_timeout(t2 + secs(1));
        let (refresh, _) = register(&mut r);
        let t3 = t2 + secs(1);
        r.handle_response(&respond(&refresh, 200, "OK", &[]), t3);
        assert_eq!(r.state(), UacState::Registered { expires_at: t3 + secs(600), refresh_at: t3 + secs(300) });
    }

    #[test]
    fn a_refresh_that_gets_no_answer_lets_the_binding_expire() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        r.handle_response(&respond(&req, 200, "OK", &[(HeaderName::Expires, "60")]), t0);
        r.handle_timeout(t0 + secs(30));
        let _ = register(&mut r);
        r.poll_event();
        r.handle_request_failed(RequestFailure::Timeout, t0 + secs(62));
        assert_eq!(r.state(), UacState::Failed { until: t0 + secs(67) });
        assert_eq!(r.status().last_response, Some((408, "Request Timeout".into())));
        // The binding still runs to its end, then is gone.
        assert!(r.status().registered);
        assert_eq!(r.poll_timeout(), Some(t0 + secs(60)));
        r.handle_timeout(t0 + secs(60));
        assert!(!r.status().registered);
        assert_eq!(r.status().label(), "Failed");
        assert!(matches!(r.poll_event(), Some(UacEvent::Failed { status: Some(408), .. })));
        assert_eq!(r.poll_event(), Some(UacEvent::Expired));
    }

    #[test]
    fn interval_too_brief_is_retried_at_min_expires() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        r.handle_response(&respond(&req, 423, "Interval Too Brief", &[(HeaderName::MinExpires, "1800")]), t0);
        let (req2, to) = register(&mut r);
        assert_eq!(to, target(1));
        assert_eq!(req2.header(HeaderName::Expires), Some("1800"));
        assert_eq!(req2.header(HeaderName::CSeq), Some("2 REGISTER"));
        r.handle_response(&respond(&req2, 200, "OK", &[]), t0);
        assert_eq!(r.state(), UacState::Registered { expires_at: t0 + secs(1800), refresh_at: t0 + secs(900) });
        // Refreshes keep the raised interval.
        r.handle_timeout(t0 + secs(900));
        let (req3, _) = register(&mut r);
        assert_eq!(req3.header(HeaderName::Expires), Some("1800"));
        // A Min-Expires no higher than what we asked (or none) cannot be met: failed.
        r.handle_response(&respond(&req3, 423, "Interval Too Brief", &[(HeaderName::MinExpires, "1800")]), t0);
        assert!(matches!(r.state(), UacState::Failed { .. }));
        assert!(r.poll_action().is_none());
    }

    #[test]
    fn failover_across_targets_then_capped_backoff() {
        let t0 = Instant::now();
        let (mut r, req, to) = started(vec![target(1), target(2)], t0);
        assert_eq!(to, target(1));
        r.handle_response(&respond(&req, 503, "Service Unavailable", &[]), t0);
        let (req2, to) = register(&mut r);
        assert_eq!(to, target(2));
        assert_eq!(req2.header(HeaderName::CSeq), Some("2 REGISTER"));
        r.handle_request_failed(RequestFailure::Timeout, t0 + secs(32));
        let t1 = t0 + secs(32);
        assert_eq!(r.state(), UacState::Failed { until: t1 + secs(5) });
        assert_eq!(r.status().failures, 1);
        assert_eq!(r.status().label(), "Failed");
        assert!(r.poll_action().is_none());
        assert_eq!(r.poll_timeout(), Some(t1 + secs(5)));
        r.handle_timeout(t1 + secs(4));
        assert!(r.poll_action().is_none(), "still backing off");

        // Each round locates afresh and walks every target; the wait doubles up to 5 minutes.
        let mut now = t1 + secs(5);
        let mut waits = Vec::new();
        for _ in 0..8 {
            r.handle_timeout(now);
            match r.poll_action() {
                Some(UacAction::Locate { uri }) => assert_eq!(uri, "sip:pbx.example.com"),
                other => panic!("{other:?}"),
            }
            r.handle_targets(Ok(vec![target(1), target(2)]), now);
            let (_, to) = register(&mut r);
            assert_eq!(to, target(1));
            r.handle_request_failed(RequestFailure::Transport, now);
            let (_, to) = register(&mut r);
            assert_eq!(to, target(2));
            r.handle_response(&respond(&register_again(&r), 500, "Server Internal Error", &[]), now);
            let UacState::Failed { until } = r.state() else { panic!("{:?}", r.state()) };
            waits.push((until - now).as_secs());
            now = until;
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(r.status().failures, 9);

        // A success resets the count; a failed lookup counts as a failure.
        r.handle_timeout(now);
        r.poll_action();
        r.handle_targets(Err(LocateError::Timeout), now);
        assert_eq!(r.state(), UacState::Failed { until: now + secs(300) });
        now += secs(300);
        r.handle_timeout(now);
        r.poll_action();
        r.handle_targets(Ok(vec![target(2)]), now);
        let (req, _) = register(&mut r);
        r.handle_response(&respond(&req, 200, "OK", &[]), now);
        assert_eq!(r.status().failures, 0);
        r.handle_timeout(now + secs(300));
        let (req, _) = register(&mut r);
        r.handle_response(&respond(&req, 503, "Service Unavailable", &[]), now + secs(300));
        assert_eq!(r.state(), UacState::Failed { until: now + secs(305) }, "the only target: failed, first wait");
    }

    /// The REGISTER in flight as the PBX sees it (for answering one already taken).
    fn register_again(r: &UacRegistration) -> Message {
        let o = r.outstanding.as_ref().expect("a REGISTER in flight");
        parse(&format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.10;branch=z9hG4bKy\r\n\
             From: <sip:ext8492@pbx.example.com>;tag=ft1\r\nTo: <sip:ext8492@pbx.example.com>\r\n\
             Call-ID: reg-1@opentrunk\r\nCSeq: {} REGISTER\r\nContent-Length: 0\r\n\r\n",
            o.cseq
        ))
    }

    #[test]
    fn a_wrong_password_fails_and_backs_off() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1), target(2)], t0);
        let mut pbx = Pbx::new("not the password");
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (req2, _) = register(&mut r);
        assert!(matches!(pbx.verify(&req2), DigestVerdict::Invalid(_)));
        // A new challenge, not stale, to the answer we just computed: refused, no loop, and no
        // other target (the PBX answered).
        r.handle_response(
            &respond(&req2, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        assert_eq!(r.state(), UacState::Failed { until: t0 + secs(5) });
        assert!(r.poll_action().is_none());
        assert_eq!(r.status().last_response, Some((401, "Unauthorized".into())));
        assert!(matches!(r.poll_event(), Some(UacEvent::Failed { status: Some(401), .. })));

        // Same nonce again (even with stale=true) is refused too.
        r.handle_timeout(t0 + secs(5));
        r.poll_action();
        r.handle_targets(Ok(vec![target(1)]), t0 + secs(5));
        let (req, _) = register(&mut r);
        let nonce = pbx.realm.nonce(Timestamp(1_000));
        let challenge = pbx.realm.challenge(DigestAlgorithm::Md5, &nonce, false);
        r.handle_response(
            &respond(&req, 407, "Proxy Authentication Required", &[(HeaderName::ProxyAuthenticate, &challenge)]),
            t0,
        );
        let (req, _) = register(&mut r);
        assert!(req.header(HeaderName::ProxyAuthorization).is_some());
        let again = pbx.realm.challenge(DigestAlgorithm::Md5, &nonce, true);
        r.handle_response(
            &respond(&req, 407, "Proxy Authentication Required", &[(HeaderName::ProxyAuthenticate, &again)]),
            t0,
        );
        assert!(matches!(r.state(), UacState::Failed { .. }));
        assert_eq!(r.status().failures, 2);

        // 403 outright.
        r.handle_timeout(t0 + secs(100));
        r.poll_action();
        r.handle_targets(Ok(vec![target(1)]), t0 + secs(100));
        let (req, _) = register(&mut r);
        r.handle_response(&respond(&req, 403, "Forbidden", &[]), t0 + secs(100));
        assert_eq!(r.state(), UacState::Failed { until: t0 + secs(120) });
    }

    #[test]
    fn a_stale_nonce_is_answered_again() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        let mut pbx = Pbx::new(PASSWORD);
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (req, _) = register(&mut r);
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(true))]),
            t0,
        );
        let (req, _) = register(&mut r);
        assert_eq!(pbx.verify(&req), DigestVerdict::Valid);
        assert_eq!(r.state(), UacState::Registering);
        // A refresh with the reused nonce that the PBX no longer takes: a fresh challenge (not
        // stale) to reused credentials is answered, once.
        r.handle_response(&respond(&req, 200, "OK", &[(HeaderName::Expires, "60")]), t0);
        r.handle_timeout(t0 + secs(30));
        let (req, _) = register(&mut r);
        r.handle_response(
            &respond(&req, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (req, _) = register(&mut r);
        assert_eq!(pbx.verify(&req), DigestVerdict::Valid);
        r.handle_response(&respond(&req, 200, "OK", &[(HeaderName::Expires, "60")]), t0 + secs(30));
        assert!(matches!(r.state(), UacState::Registered { .. }));
    }

    #[test]
    fn unregister_removes_our_binding_then_stops() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1), target(2)], t0);
        r.handle_response(&respond(&req, 503, "Service Unavailable", &[]), t0);
        let (req, to) = register(&mut r);
        assert_eq!(to, target(2));
        r.handle_response(&respond(&req, 200, "OK", &[]), t0);
        r.poll_event();
        r.unregister(t0 + secs(10));
        assert_eq!(r.state(), UacState::Unregistering);
        let (bye, to) = register(&mut r);
        assert_eq!(to, target(2), "where the binding is");
        assert_eq!(bye.header(HeaderName::Expires), Some("0"));
        assert_eq!(bye.header(HeaderName::Contact), Some("<sip:8492@203.0.113.10:5060>"));
        assert_eq!(bye.header(HeaderName::CallId), Some("reg-1@opentrunk"));
        assert_eq!(bye.header(HeaderName::CSeq), Some("3 REGISTER"));
        // Challenged: answered, then done.
        let pbx = Pbx::new(PASSWORD);
        r.handle_response(
            &respond(&bye, 401, "Unauthorized", &[(HeaderName::WwwAuthenticate, &pbx.challenge(false))]),
            t0,
        );
        let (bye, _) = register(&mut r);
        assert_eq!(bye.header(HeaderName::Expires), Some("0"));
        assert!(bye.header(HeaderName::Authorization).is_some());
        r.handle_response(&respond(&bye, 200, "OK", &[]), t0 + secs(11));
        assert_eq!(r.state(), UacState::Stopped);
        assert_eq!(r.poll_event(), Some(UacEvent::Unregistered));
        let status = r.status();
        assert!(!status.registered);
        assert_eq!(status.label(), "Unregistered");
        assert_eq!(r.poll_timeout(), None);
        r.handle_timeout(t0 + secs(10_000));
        assert!(r.poll_action().is_none());
        r.unregister(t0);
        assert!(r.poll_action().is_none());
    }

    #[test]
    fn unregister_waits_for_the_register_in_flight() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        r.unregister(t0);
        assert!(r.poll_action().is_none(), "never two REGISTERs at once");
        // It made a binding: removed.
        r.handle_response(&respond(&req, 200, "OK", &[]), t0);
        let (bye, _) = register(&mut r);
        assert_eq!(bye.header(HeaderName::Expires), Some("0"));
        r.handle_request_failed(RequestFailure::Timeout, t0 + secs(32));
        assert_eq!(r.state(), UacState::Stopped);

        // Nothing ever bound (still locating, or failed): stopped at once, nothing sent.
        let mut r = registration(&document());
        assert!(matches!(r.poll_action(), Some(UacAction::Locate { .. })));
        r.unregister(t0);
        assert_eq!(r.state(), UacState::Stopped);
        assert!(r.poll_action().is_none());
        r.handle_targets(Ok(vec![target(1)]), t0);
        assert!(r.poll_action().is_none(), "a late lookup is ignored");

        // A REGISTER queued but not taken is dropped, not sent.
        let mut r = registration(&document());
        r.poll_action();
        r.handle_targets(Ok(vec![target(1)]), t0);
        r.unregister(t0);
        assert!(r.poll_action().is_none());
        assert_eq!(r.state(), UacState::Stopped);
    }

    #[test]
    fn stray_responses_are_ignored() {
        let t0 = Instant::now();
        let (mut r, req, _) = started(vec![target(1)], t0);
        let mut old = respond(&req, 200, "OK", &[]);
        old.set_header(HeaderName::CSeq, "7 REGISTER");
        r.handle_response(&parse(&old.to_string()), t0);
        r.handle_response(&respond(&req, 100, "Trying", &[]), t0);
        assert_eq!(r.state(), UacState::Registering);
        r.handle_response(&respond(&req, 200, "OK", &[]), t0);
        assert!(matches!(r.state(), UacState::Registered { .. }));
        // The same 200 again (a retransmission the transaction let through) changes nothing.
        let before = r.state();
        r.handle_response(&respond(&req, 200, "OK", &[]), t0 + secs(5));
        assert_eq!(r.state(), before);
        r.handle_request_failed(RequestFailure::Timeout, t0);
        assert_eq!(r.state(), before);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Respond { status: u16, nonce: u8, stale: bool, proxy: bool, expires: Option<u32> },
        Stray { status: u16 },
        Fail { timeout: bool },
        Located { targets: usize },
        Tick { secs: u64 },
        Unregister,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let status = prop_oneof![
            Just(200u16),
            Just(202),
            Just(401),
            Just(407),
            Just(403),
            Just(404),
            Just(408),
            Just(423),
            Just(500),
            Just(503),
            Just(603),
            100u16..700
        ];
        prop_oneof![
            6 => (status, 0u8..3, any::<bool>(), any::<bool>(), proptest::option::of(0u32..4000))
                .prop_map(|(status, nonce, stale, proxy, expires)| Step::Respond { status, nonce, stale, proxy, expires }),
            1 => (100u16..700).prop_map(|status| Step::Stray { status }),
            2 => any::<bool>().prop_map(|timeout| Step::Fail { timeout }),
            2 => (0usize..4).prop_map(|targets| Step::Located { targets }),
            3 => (0u64..1000).prop_map(|secs| Step::Tick { secs }),
            1 => Just(Step::Unregister),
        ]
    }

    proptest::proptest! {
        /// Whatever the PBX, the DNS and the clock do: no panic, never a second REGISTER while
        /// one is outstanding, CSeq always rising on one Call-ID, and nothing sent once stopped.
        #[test]
        fn never_two_registers_outstanding(steps in proptest::collection::vec(step(), 0..60)) {
            let mut now = Instant::now();
            let mut r = registration(&document());
            let mut outstanding: Option<Message> = None;
            let mut last_cseq = 0u32;
            let collect = |r: &mut UacRegistration, outstanding: &mut Option<Message>, last_cseq: &mut u32| {
                while let Some(a) = r.poll_action() {
                    if let UacAction::Register { request, .. } = a {
                        proptest::prop_assert!(outstanding.is_none(), "a second REGISTER while one is outstanding");
                        proptest::prop_assert!(r.state() != UacState::Stopped);
                        let req = parse(&request.to_string());
                        let cseq = req.cseq().unwrap().seq;
                        proptest::prop_assert!(cseq > *last_cseq, "CSeq {} after {}", cseq, last_cseq);
                        proptest::prop_assert_eq!(req.call_id().unwrap(), "reg-1@opentrunk");
                        *last_cseq = cseq;
                        *outstanding = Some(req);
                    }
                }
                Ok(())
            };
            collect(&mut r, &mut outstanding, &mut last_cseq)?;
            for s in steps {
                match s {
                    Step::Respond { status, nonce, stale, proxy, expires } => {
                        if let Some(req) = outstanding.take() {
                            let mut extra = Vec::new();
                            let challenge = format!(
                                "Digest realm=\"pbx\", nonce=\"n{nonce}\", qop=\"auth\"{}",
                                if stale { ", stale=true" } else { "" }
                            );
                            let header = if proxy { HeaderName::ProxyAuthenticate } else { HeaderName::WwwAuthenticate };
                            extra.push((header, challenge.as_str()));
                            let e = expires.map(|e| e.to_string());
                            if let Some(e) = &e {
                                extra.push((HeaderName::Expires, e.as_str()));
                                extra.push((HeaderName::MinExpires, e.as_str()));
                            }
                            let resp = respond(&req, status, "X", &extra);
                            r.handle_response(&resp, now);
                            if status < 200 {
                                outstanding = Some(req);
                            }
                        }
                    }
                    Step::Stray { status } => {
                        let resp = parse(&format!(
                            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 203.0.113.10;branch=z9hG4bKs\r\n\
                             From: <sip:ext8492@pbx.example.com>;tag=ft1\r\nTo: <sip:ext8492@pbx.example.com>\r\n\
                             Call-ID: reg-1@opentrunk\r\nCSeq: {} REGISTER\r\nContent-Length: 0\r\n\r\n",
                            last_cseq + 1000
                        ));
                        r.handle_response(&resp, now);
                    }
                    Step::Fail { timeout } => {
                        if outstanding.take().is_some() {
                            let f = if timeout { RequestFailure::Timeout } else { RequestFailure::Transport };
                            r.handle_request_failed(f, now);
                        }
                    }
                    Step::Located { targets } => {
                        let located = if targets == 0 { Err(LocateError::NotFound) } else { Ok((1..=targets as u8).map(target).collect()) };
                        r.handle_targets(located, now);
                    }
                    Step::Tick { secs } => {
                        now += Duration::from_secs(secs);
                        if r.poll_timeout().is_some_and(|t| t <= now) {
                            r.handle_timeout(now);
                        }
                    }
                    Step::Unregister => r.unregister(now),
                }
                collect(&mut r, &mut outstanding, &mut last_cseq)?;
                while r.poll_event().is_some() {}
                let status = r.status();
                proptest::prop_assert_eq!(status.registered, status.expires_at.is_some());
                // Every waiting state has a timer, so no registration is ever left stuck.
                if matches!(r.state(), UacState::Failed { .. } | UacState::Registered { .. }) {
                    proptest::prop_assert!(r.poll_timeout().is_some());
                }
            }
        }
    }
}
