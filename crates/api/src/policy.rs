//! From stored configuration to the call rules: [`config_from_snapshot`] reads every document the
//! API stores (accounts, outbound voice profiles, connections of the four types with their IPs and
//! FQDN records, phone numbers, carriers, rate decks) out of a [`store::Snapshot`] and builds the
//! typed [`trunking::config::Config`] the rules decide calls against; [`load_rate_decks`] reads
//! the decks' rates, which live outside the snapshot.
//!
//! Inbound delivery comes from the same documents: a connection's `inbound` object (its
//! `channel_limit`, `timeout_1xx_secs`/`timeout_2xx_secs`, `default_routing_method`,
//! `simultaneous_ringing` and default primary/secondary/tertiary IP or FQDN), its
//! `transport_protocol`, its IP records (address and port) or FQDN records (name, and the port
//! of an `a` record: an `srv` record is located by SRV), a number's `voice.call_forwarding`, and
//! the carriers' `inbound_ips`. A credential or UAC connection's `sip_uri_calling_preference`
//! (top level in the contract) goes with its inbound settings; unreadable, it is `disabled`.
//! The platform's SIP domain and unidentified-source rate are the operator's, not the store's:
//! [`config_from_snapshot_with`] takes them.
//!
//! The API validated every document when it was written, so a document that cannot be read here
//! means a bug, a hand edit or a newer writer. Such a document never stops the platform and
//! never loosens a rule: each fault is reported as a [`ConfigWarning`], and
//!
//! - a resource whose limit, money amount, enablement, authentication method or routing scope
//!   cannot be read is left out of the configuration (so its calls are refused: a connection is
//!   not recognised, a missing profile answers `D38`, an account `D10`, a deck `TM1`, a carrier
//!   routes nothing), never given "no limit" or "every destination";
//! - a field that only shapes presentation or timing (number formats, gateway or target order,
//!   a transport, ringing timeouts, simultaneous ringing) takes the API's default; a list entry
//!   that cannot be read (a whitelisted country, a carrier's inbound IP, an IP or FQDN record's
//!   port, a default target naming no record of the connection) is dropped, which only narrows
//!   what is allowed or where calls go; call forwarding that cannot be read is off.
//!
//! Absent and null mean the same for optional fields (the API writes `null` for some unset
//! fields and leaves others out, e.g. an FQDN connection's `outbound.channel_limit`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value};
use store::{Repository, Resource, Snapshot, StoreError};
use trunking::config::{
    Account, AniFormat, AniOverrideType, CallingWindow, Config, Connection, ConnectionKind, DnisFormat, Id,
    InboundDelivery, InboundSettings, IpAuthentication, IpBlock, OutboundVoiceProfile, PhoneNumber, Platform,
    SipUriCalling, UriCallingSettings,
};
use trunking::digest::StoredDigest;
use trunking::numbering::{Country, E164, NumberingPlan};
use trunking::rating::{self, BillingIncrement, RateDeck};
use trunking::routing::{
    CallForwarding, Carrier, ForwardingType, FqdnTarget, Gateway, GatewayOrder, HostTargets, IpTarget, Transport,
};

use crate::connections_common as cc;

/// The stored kinds read here (the modules that own them keep theirs private where noted).
pub const ACCOUNT_KIND: &str = "account"; // accounts.rs
pub const PROFILE_KIND: &str = cc::PROFILE_KIND;
pub const CREDENTIAL_CONNECTION_KIND: &str = "credential_connection";
pub const IP_CONNECTION_KIND: &str = crate::ip_connections::KIND;
pub const FQDN_CONNECTION_KIND: &str = "fqdn_connection";
pub const UAC_CONNECTION_KIND: &str = "uac_connection";
pub const IP_KIND: &str = crate::ips::KIND;
pub const FQDN_RECORD_KIND: &str = cc::FQDN_RECORD_KIND;
pub const PHONE_NUMBER_KIND: &str = "phone_number"; // phone_numbers.rs
pub const CARRIER_KIND: &str = "carrier"; // carriers.rs
pub const RATE_DECK_KIND: &str = store::RATE_DECK;

/// Rates read per query by [`load_rate_decks`].
pub const RATE_PAGE: u64 = 50_000;

/// A stored document, or a field of one, that could not be read: the resource's kind and id,
/// and what was wrong and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub kind: &'static str,
    pub id: String,
    pub detail: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.id, self.detail)
    }
}

/// The warnings of one build.
struct Warnings(Vec<ConfigWarning>);

impl Warnings {
    fn push(&mut self, kind: &'static str, id: &str, detail: impl Into<String>) {
        self.0.push(ConfigWarning { kind, id: id.to_owned(), detail: detail.into() });
    }

    /// A resource left out of the configuration, forgetting what was noted about its fields
    /// since `mark` (they no longer matter).
    fn skipped_since(&mut self, mark: usize, kind: &'static str, id: &str, why: &str) {
        self.0.truncate(mark);
        self.skipped(kind, id, why);
    }

    /// A resource left out of the configuration.
    fn skipped(&mut self, kind: &'static str, id: &str, why: &str) {
        self.push(kind, id, format!("{why}; left out of the configuration"));
    }
}

/// Builds the call rules' configuration from every stored resource.
///
/// `decks` holds each rate deck's rates by deck id ([`load_rate_decks`]); `resolved` the
/// addresses each FQDN record's host name resolves to, by host name (the engine resolves them;
/// a key may be the name as stored or in lowercase without a final dot). Never fails: what
/// cannot be read is reported in the warnings and left out, or defaulted where that loosens no
/// rule (see the module documentation).
pub fn config_from_snapshot(
    snapshot: &Snapshot,
    plan: Arc<NumberingPlan>,
    decks: &HashMap<String, Arc<RateDeck>>,
    resolved: &HashMap<String, Vec<IpAddr>>,
) -> (Config, Vec<ConfigWarning>) {
    config_from_snapshot_with(snapshot, plan, decks, resolved, OperatorSettings::default())
}

/// What the operator sets in the node's configuration rather than through the API.
#[derive(Clone, Debug, Default)]
pub struct OperatorSettings {
    /// The platform's SIP domain and its equivalent hosts, the unidentified-source rate.
    pub uri_calling: UriCallingSettings,
    /// Calls per second per source address and per account.
    pub call_rates: trunking::call_rate::CallRateLimits,
}

/// [`config_from_snapshot`] with the operator's settings.
pub fn config_from_snapshot_with(
    snapshot: &Snapshot,
    plan: Arc<NumberingPlan>,
    decks: &HashMap<String, Arc<RateDeck>>,
    resolved: &HashMap<String, Vec<IpAddr>>,
    settings: OperatorSettings,
) -> (Config, Vec<ConfigWarning>) {
    let mut w = Warnings(Vec::new());
    let mut b = Config::builder(plan.clone()).uri_calling(settings.uri_calling).call_rate_limits(settings.call_rates);

    // Rate decks first: accounts are checked against the decks that made it in.
    let mut deck_ids: Vec<&str> = Vec::new();
    for r in snapshot.of_kind(RATE_DECK_KIND) {
        let Some(doc) = document(r, RATE_DECK_KIND, &mut w) else { continue };
        let increment = match doc.get("billing_increment").and_then(Value::as_str).map(BillingIncrement::from_str) {
            Some(Ok(inc)) => inc,
            Some(Err(e)) => {
                w.skipped(RATE_DECK_KIND, &r.id, &format!("billing_increment: {e}"));
                continue;
            }
            None => {
                w.skipped(RATE_DECK_KIND, &r.id, "billing_increment is missing or not a string");
                continue;
            }
        };
        let Some(deck) = decks.get(&r.id) else {
            w.skipped(RATE_DECK_KIND, &r.id, "its rates were not loaded");
            continue;
        };
        // The configuration owns its decks; the caller's map stays theirs.
        b = b.rate_deck(r.id.as_str().into(), deck.clone(), increment);
        deck_ids.push(&r.id);
    }

    for r in snapshot.of_kind(ACCOUNT_KIND) {
        let Some(doc) = document(r, ACCOUNT_KIND, &mut w) else { continue };
        let mark = w.0.len();
        match account(r, doc, &deck_ids, &mut w) {
            Ok(a) => b = b.account(a),
            Err(why) => w.skipped_since(mark, ACCOUNT_KIND, &r.id, &why),
        }
    }

    for r in snapshot.of_kind(PROFILE_KIND) {
        let Some(doc) = document(r, PROFILE_KIND, &mut w) else { continue };
        let mark = w.0.len();
        match profile(r, doc, &mut w) {
            Ok(p) => b = b.profile(p),
            Err(why) => w.skipped_since(mark, PROFILE_KIND, &r.id, &why),
        }
    }

    let owners = Owners::index(snapshot);
    let addresses = Addresses::of(snapshot, &owners, resolved, &mut w);
    for kind in CONNECTION_KINDS {
        for r in snapshot.of_kind(kind.stored) {
            let Some(doc) = document(r, kind.stored, &mut w) else { continue };
            let mark = w.0.len();
            match connection(kind, r, doc, &owners, &plan, &addresses, &mut w) {
                Ok(c) => b = b.connection(c),
                Err(why) => w.skipped_since(mark, kind.stored, &r.id, &why),
            }
        }
    }

    for r in snapshot.of_kind(PHONE_NUMBER_KIND) {
        let Some(doc) = document(r, PHONE_NUMBER_KIND, &mut w) else { continue };
        let mark = w.0.len();
        match phone_number(r, doc, &owners, &mut w) {
            Ok(n) => b = b.number(n),
            Err(why) => w.skipped_since(mark, PHONE_NUMBER_KIND, &r.id, &why),
        }
    }

    for r in snapshot.of_kind(CARRIER_KIND) {
        let Some(doc) = document(r, CARRIER_KIND, &mut w) else { continue };
        let mark = w.0.len();
        match carrier(r, doc, &mut w) {
            Ok(c) => b = b.carrier(c),
            Err(why) => w.skipped_since(mark, CARRIER_KIND, &r.id, &why),
        }
    }

    // Platform-wide rules (forbidden prefixes) have no API resource yet.
    b = b.platform(Platform::default());
    (b.build(), w.0)
}

/// Reads every rate deck's rates from the store, [`RATE_PAGE`] rows per query, and builds each
/// deck, by deck id. A deck whose rates cannot be built is an error naming it; so is one whose
/// rates kept changing while they were read.
pub async fn load_rate_decks(
    repo: &dyn Repository,
    snapshot: &Snapshot,
) -> Result<HashMap<String, Arc<RateDeck>>, StoreError> {
    load_rate_decks_in_pages(repo, snapshot, RATE_PAGE).await
}

/// [`load_rate_decks`], `page` rows per query (at least 1).
pub async fn load_rate_decks_in_pages(
    repo: &dyn Repository,
    snapshot: &Snapshot,
    page: u64,
) -> Result<HashMap<String, Arc<RateDeck>>, StoreError> {
    let mut out = HashMap::new();
    for r in snapshot.of_kind(RATE_DECK_KIND) {
        if let Some(deck) = load_rate_deck(repo, r, page.max(1)).await? {
            out.insert(r.id.clone(), Arc::new(deck));
        }
    }
    Ok(out)
}

/// The rate decks as last read, by deck id, each with the `updated_at` of the deck's document
/// it was read under. Replacing a deck's rates rewrites its document in the same transaction,
/// so a deck whose document is unchanged need not be read again: a configuration change
/// elsewhere (a connection added) does not reload a million-row deck.
#[derive(Default)]
pub struct RateDeckCache {
    decks: HashMap<String, (String, Arc<RateDeck>)>,
}

/// [`load_rate_decks`], reading only the decks whose document changed since `cache` last saw
/// them (and letting go of decks no longer configured).
pub async fn load_rate_decks_cached(
    repo: &dyn Repository,
    snapshot: &Snapshot,
    cache: &mut RateDeckCache,
) -> Result<HashMap<String, Arc<RateDeck>>, StoreError> {
    let mut out = HashMap::new();
    let mut kept = HashMap::new();
    for r in snapshot.of_kind(RATE_DECK_KIND) {
        let deck = match cache.decks.remove(&r.id) {
            Some((updated_at, deck)) if updated_at == r.updated_at => Some(deck),
            _ => load_rate_deck(repo, r, RATE_PAGE).await?.map(Arc::new),
        };
        if let Some(deck) = deck {
            out.insert(r.id.clone(), deck.clone());
            kept.insert(r.id.clone(), (r.updated_at.clone(), deck));
        }
    }
    cache.decks = kept;
    Ok(out)
}

/// How many times a deck is read again when its rates were replaced while being read.
const DECK_READ_ATTEMPTS: usize = 3;

/// One deck's rates, `None` when the deck was deleted meanwhile.
async fn load_rate_deck(repo: &dyn Repository, deck: &Resource, limit: u64) -> Result<Option<RateDeck>, StoreError> {
    let name = |r: &Resource| format!("rate deck {} ({:?})", r.id, r.name);
    for _ in 0..DECK_READ_ATTEMPTS {
        // Replacing a deck's rates rewrites its document (`updated_at`) in the same transaction,
        // so the same `updated_at` before and after the pages means the pages are one version.
        let Some(before) = repo.get_resource(RATE_DECK_KIND, &deck.id).await? else { return Ok(None) };
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut offset = 0u64;
        loop {
            let page = repo.rates(&deck.id, None, offset, limit).await?;
            let n = page.rates.len() as u64;
            rows.extend(page.rates);
            offset += n;
            if n < limit || offset >= page.total {
                break;
            }
        }
        let after = repo.get_resource(RATE_DECK_KIND, &deck.id).await?;
        if after.as_ref().map(|a| &a.updated_at) != Some(&before.updated_at) {
            continue;
        }
        return RateDeck::build(rows)
            .map(Some)
            .map_err(|e| StoreError::Failed(format!("{} cannot be built: {e}", name(&before))));
    }
    Err(StoreError::Failed(format!("{}: its rates changed while being read, {DECK_READ_ATTEMPTS} times", name(deck))))
}

// ---------------------------------------------------------------------------------------------
// Reading fields.

/// The resource's JSON document, when it is an object.
fn document(r: &Resource, kind: &'static str, w: &mut Warnings) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(&r.body) {
        Ok(Value::Object(o)) => Some(o),
        Ok(_) => {
            w.skipped(kind, &r.id, "the document is not a JSON object");
            None
        }
        Err(e) => {
            w.skipped(kind, &r.id, &format!("the document is not JSON ({e})"));
            None
        }
    }
}

/// Absent and null are the same for optional fields.
fn given<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn required_bool(o: &Map<String, Value>, key: &str) -> Result<bool, String> {
    o.get(key).and_then(Value::as_bool).ok_or_else(|| format!("{key} is missing or not true/false"))
}

/// A count limit: absent or null is no limit, an integer from 0 to 2^32-1 is the limit,
/// anything else cannot be read (an error: the caller leaves the resource out).
fn limit(o: &Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match given(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} is not a count ({v})")),
    }
}

/// An optional string field: absent or null is `None`; another type is an error.
fn optional_str<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match given(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{key} is not a string ({v})")),
    }
}

/// A nested object; absent is `None`, anything else but an object an error.
fn object<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match given(o, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(format!("{key} is not an object ({v})")),
    }
}

/// A UTC time of day as the API stores a calling window's bounds (`HH:MM`, `HH:MM:SS` or
/// `HH:MM:SS.ff`, optionally ending in `Z`), in seconds since 00:00 UTC; fractions of a second
/// are dropped. `None` for anything else.
pub fn utc_time_of_day(s: &str) -> Option<u32> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (hms, fraction) = match s.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (s, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let two = |p: &str, max: u32| {
        (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
            .filter(|v| *v <= max)
    };
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next());
    if parts.next().is_some() || (sec.is_none() && fraction.is_some()) {
        return None;
    }
    let sec = match sec {
        Some(p) => two(p, 59)?,
        None => 0,
    };
    Some(two(h, 23)? * 3600 + two(m, 59)? * 60 + sec)
}

// ---------------------------------------------------------------------------------------------
// Accounts and profiles.

fn account(r: &Resource, o: Map<String, Value>, decks: &[&str], w: &mut Warnings) -> Result<Account, String> {
    let enabled = required_bool(&o, "enabled")?;
    let concurrent_call_limit = limit(&o, "concurrent_call_limit")?;
    let rate_deck_id = match optional_str(&o, "rate_deck_id") {
        Ok(d) => d,
        // Without a deck its calls are unrated and refused (TM1): nothing is loosened.
        Err(e) => {
            w.push(ACCOUNT_KIND, &r.id, format!("{e}; the account has no rate deck"));
            None
        }
    };
    if let Some(d) = rate_deck_id
        && !decks.contains(&d)
    {
        w.push(ACCOUNT_KIND, &r.id, format!("rate_deck_id {d} names no loaded rate deck; its calls are unrated (TM1)"));
    }
    Ok(Account { id: r.id.as_str().into(), enabled, concurrent_call_limit, rate_deck_id: rate_deck_id.map(Id::from) })
}

fn profile(r: &Resource, o: Map<String, Value>, w: &mut Warnings) -> Result<OutboundVoiceProfile, String> {
    let enabled = required_bool(&o, "enabled")?;
    let concurrent_call_limit = limit(&o, "concurrent_call_limit")?;

    // Every entry that is not a country is dropped: the profile then allows fewer destinations.
    let mut whitelisted_destinations = Vec::new();
    match o.get("whitelisted_destinations").and_then(Value::as_array) {
        Some(list) => {
            for v in list {
                match v.as_str().and_then(Country::parse) {
                    Some(c) => whitelisted_destinations.push(c),
                    None => {
                        w.push(PROFILE_KIND, &r.id, format!("whitelisted_destinations: {v} is no country; dropped"))
                    }
                }
            }
        }
        None => {
            w.push(PROFILE_KIND, &r.id, "whitelisted_destinations is missing or not a list; no destination is allowed")
        }
    }

    let max_destination_rate = match given(&o, "max_destination_rate") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .and_then(rating::amount_from_f64)
                .ok_or_else(|| format!("max_destination_rate is not a non-negative amount ({v})"))?,
        ),
    };

    let spend_enabled = match o.get("daily_spend_limit_enabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(format!("daily_spend_limit_enabled is not true/false ({v})")),
    };
    let daily_spend_limit = if spend_enabled {
        let text = optional_str(&o, "daily_spend_limit")?
            .ok_or("daily_spend_limit_enabled is true but daily_spend_limit is not set")?;
        Some(rating::parse_amount(text).ok_or_else(|| format!("daily_spend_limit {text:?} is not an amount"))?)
    } else {
        None
    };

    let calling_window = match object(&o, "calling_window")? {
        None => None,
        Some(cw) => {
            let bound = |key: &str| -> Result<Option<u32>, String> {
                match optional_str(cw, key).map_err(|e| format!("calling_window.{e}"))? {
                    None => Ok(None),
                    Some(s) => utc_time_of_day(s)
                        .map(Some)
                        .ok_or_else(|| format!("calling_window.{key} {s:?} is not a UTC time of day")),
                }
            };
            Some(CallingWindow {
                start: bound("start_time")?,
                end: bound("end_time")?,
                calls_per_cld: limit(cw, "calls_per_cld").map_err(|e| format!("calling_window.{e}"))?,
            })
        }
    };

    Ok(OutboundVoiceProfile {
        id: r.id.as_str().into(),
        account_id: r.account_id.as_str().into(),
        enabled,
        whitelisted_destinations,
        max_destination_rate,
        daily_spend_limit,
        concurrent_call_limit,
        calling_window,
    })
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// How each connection type's documents are read.
struct ConnectionType {
    stored: &'static str,
    kind: ConnectionKind,
    /// Whether `_digest` must be there (credential connections); optional for FQDN and UAC.
    digest_required: bool,
}

const CONNECTION_KINDS: &[ConnectionType] = &[
    ConnectionType { stored: CREDENTIAL_CONNECTION_KIND, kind: ConnectionKind::Credential, digest_required: true },
    ConnectionType { stored: IP_CONNECTION_KIND, kind: ConnectionKind::Ip, digest_required: false },
    ConnectionType { stored: FQDN_CONNECTION_KIND, kind: ConnectionKind::Fqdn, digest_required: false },
    ConnectionType { stored: UAC_CONNECTION_KIND, kind: ConnectionKind::Uac, digest_required: false },
];

/// The owning account of each connection and profile, by kind and id (`Snapshot::get` scans a
/// kind's list, too slow once per number or IP).
struct Owners<'s>(HashMap<(&'s str, &'s str), &'s str>);

impl<'s> Owners<'s> {
    fn index(snapshot: &'s Snapshot) -> Owners<'s> {
        let kinds = crate::connections::KINDS.iter().chain([&PROFILE_KIND]);
        Owners(
            kinds
                .flat_map(|k| snapshot.of_kind(k))
                .map(|r| ((r.kind.as_str(), r.id.as_str()), r.account_id.as_str()))
                .collect(),
        )
    }

    fn of(&self, kind: &str, id: &str) -> Option<&'s str> {
        self.0.get(&(kind, id)).copied()
    }
}

/// The source addresses of IP and FQDN connections: their `/v2/ips` records, and the resolved
/// addresses of their `/v2/fqdns` records, by connection id.
struct Addresses {
    by_connection: HashMap<String, Vec<IpAddr>>,
    /// FQDN connections with a record whose name has no resolved address (warned once the
    /// connection is known to authenticate by address).
    unresolved: HashMap<String, Vec<(String, String)>>,
    /// Where each IP connection takes its calls: (IP record id, address, port), oldest first.
    ip_targets: HashMap<String, Vec<(String, String, u16)>>,
    /// Where each FQDN connection takes its calls: (FQDN record id, name, port of an `a`
    /// record), oldest first.
    fqdn_targets: HashMap<String, Vec<(String, String, Option<u16>)>>,
}

/// A record's `port`: 1 to 65535, `default` when absent or null.
fn record_port(doc: &Map<String, Value>, default: u16) -> Result<u16, String> {
    match given(doc, "port") {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port is not 1 to 65535 ({v}); calls are not delivered to it")),
    }
}

impl Addresses {
    fn of(
        snapshot: &Snapshot,
        owners: &Owners<'_>,
        resolved: &HashMap<String, Vec<IpAddr>>,
        w: &mut Warnings,
    ) -> Addresses {
        let mut by_connection: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let mut unresolved: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut ip_targets: HashMap<String, Vec<(String, String, u16)>> = HashMap::new();
        let mut fqdn_targets: HashMap<String, Vec<(String, String, Option<u16>)>> = HashMap::new();
        let mut add = |connection: &str, ip: IpAddr| {
            let list = by_connection.entry(connection.to_owned()).or_default();
            if !list.contains(&ip) {
                list.push(ip);
            }
        };
        // The record must name a connection of the type, of its own account (the API keeps it so).
        let owner_ok = |kind: &str, record: &Resource, connection: &str| {
            owners.of(kind, connection) == Some(record.account_id.as_str())
        };

        for r in snapshot.of_kind(IP_KIND) {
            let Some(doc) = document(r, IP_KIND, w) else { continue };
            let Some(connection) = doc.get("connection_id").and_then(Value::as_str) else {
                w.skipped(IP_KIND, &r.id, "connection_id is missing or not a string");
                continue;
            };
            if !owner_ok(IP_CONNECTION_KIND, r, connection) {
                w.skipped(IP_KIND, &r.id, &format!("connection_id {connection} names no IP connection of its account"));
                continue;
            }
            match doc.get("ip_address").and_then(Value::as_str).map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => {
                    let ip = ip.to_canonical();
                    add(connection, ip);
                    match record_port(&doc, 5060) {
                        Ok(port) => ip_targets.entry(connection.to_owned()).or_default().push((
                            r.id.clone(),
                            ip.to_string(),
                            port,
                        )),
                        Err(why) => w.push(IP_KIND, &r.id, why),
                    }
                }
                _ => w.skipped(IP_KIND, &r.id, "ip_address is not an IP address"),
            }
        }

        for r in snapshot.of_kind(FQDN_RECORD_KIND) {
            let Some(doc) = document(r, FQDN_RECORD_KIND, w) else { continue };
            let Some(connection) = doc.get("connection_id").and_then(Value::as_str) else {
                w.skipped(FQDN_RECORD_KIND, &r.id, "connection_id is missing or not a string");
                continue;
            };
            if !owner_ok(FQDN_CONNECTION_KIND, r, connection) {
                let why = format!("connection_id {connection} names no FQDN connection of its account");
                w.skipped(FQDN_RECORD_KIND, &r.id, &why);
                continue;
            }
            let Some(host) = doc.get("fqdn").and_then(Value::as_str) else {
                w.skipped(FQDN_RECORD_KIND, &r.id, "fqdn is missing or not a string");
                continue;
            };
            // Where its calls go: SRV locates an `srv` record; an `a` record has its port.
            let port = match doc.get("dns_record_type").and_then(Value::as_str) {
                Some("srv") => Ok(None),
                Some("a") => record_port(&doc, 5060).map(Some),
                other => Err(format!("dns_record_type {other:?} is not a or srv; calls are not delivered to it")),
            };
            match port {
                Ok(port) => {
                    fqdn_targets.entry(connection.to_owned()).or_default().push((r.id.clone(), host.to_owned(), port))
                }
                Err(why) => w.push(FQDN_RECORD_KIND, &r.id, why),
            }
            let normal = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            match resolved.get(host).or_else(|| resolved.get(&normal)).filter(|a| !a.is_empty()) {
                Some(ips) => ips.iter().for_each(|ip| add(connection, ip.to_canonical())),
                None => unresolved.entry(connection.to_owned()).or_default().push((r.id.clone(), host.to_owned())),
            }
        }
        Addresses { by_connection, unresolved, ip_targets, fqdn_targets }
    }
}

fn connection(
    t: &ConnectionType,
    r: &Resource,
    o: Map<String, Value>,
    owners: &Owners<'_>,
    plan: &NumberingPlan,
    addresses: &Addresses,
    w: &mut Warnings,
) -> Result<Connection, String> {
    let kind = t.stored;
    let active = required_bool(&o, "active")?;
    // Every limit and authentication setting is under `outbound`: unreadable, nothing is.
    let out = object(&o, "outbound")?.ok_or("outbound is missing")?;
    let channel_limit = limit(out, "channel_limit").map_err(|e| format!("outbound.{e}"))?;

    let method = optional_str(out, "ip_authentication_method").map_err(|e| format!("outbound.{e}"))?;
    let ip_authentication = match (t.kind, method) {
        (ConnectionKind::Ip, None | Some("tech-prefixp-charge-info")) => IpAuthentication::TechPrefixOrChargeInfo,
        (ConnectionKind::Ip, Some("token")) => IpAuthentication::Token,
        (ConnectionKind::Fqdn, None | Some("ip-authentication")) => IpAuthentication::Address,
        (ConnectionKind::Fqdn, Some("credential-authentication")) => IpAuthentication::Credentials,
        (ConnectionKind::Credential | ConnectionKind::Uac, _) => IpAuthentication::Credentials,
        (_, Some(m)) => return Err(format!("outbound.ip_authentication_method {m:?} is unknown")),
    };

    let token: Option<Arc<str>> = match t.kind {
        ConnectionKind::Ip | ConnectionKind::Fqdn => {
            optional_str(out, "ip_authentication_token").map_err(|e| format!("outbound.{e}"))?.map(Arc::from)
        }
        _ => None,
    };
    if ip_authentication == IpAuthentication::Token && token.is_none() {
        // Every request then lacks the token (D26): refused, as it should be.
        w.push(kind, &r.id, "ip_authentication_method is token but no ip_authentication_token is set");
    }

    let tech_prefix = match t.kind {
        ConnectionKind::Ip | ConnectionKind::Fqdn => match optional_str(out, "tech_prefix") {
            Ok(None | Some("")) => None,
            Ok(Some(p)) if p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some([p.as_bytes()[0], p.as_bytes()[1], p.as_bytes()[2], p.as_bytes()[3]])
            }
            // Without it the connection is told apart only by P-Charge-Info or its address alone.
            Ok(Some(p)) => {
                w.push(kind, &r.id, format!("outbound.tech_prefix {p:?} is not 4 digits; ignored"));
                None
            }
            Err(e) => {
                w.push(kind, &r.id, format!("outbound.{e}; ignored"));
                None
            }
        },
        _ => None,
    };

    let credentials = credentials(t, r, &o, w);

    let outbound_voice_profile_id =
        match optional_str(out, "outbound_voice_profile_id").map_err(|e| format!("outbound.{e}"))? {
            None => None,
            Some(p) => match owners.of(PROFILE_KIND, p) {
                Some(account) if account == r.account_id => Some(Id::from(p)),
                // Another account's profile would apply its limits and price to these calls.
                Some(_) => {
                    w.push(kind, &r.id, format!("outbound_voice_profile_id {p} is another account's; calls get D38"));
                    None
                }
                None => {
                    w.push(kind, &r.id, format!("outbound_voice_profile_id {p} names no profile; calls get D38"));
                    Some(Id::from(p))
                }
            },
        };

    // A wrong numbering country would read dialed numbers as another country's: left out.
    let localization = match optional_str(out, "localization").map_err(|e| format!("outbound.{e}"))? {
        None | Some("") => None,
        Some(c) => Some(Country::parse(c).ok_or_else(|| format!("outbound.localization {c:?} is no country"))?),
    };
    if let Some(c) = localization
        && !plan.knows(c)
    {
        w.push(kind, &r.id, format!("outbound.localization {c} has no numbering plan; its numbers cannot be read"));
    }

    let ani_override = match optional_str(out, "ani_override") {
        Ok(None | Some("")) => None,
        Ok(Some(s)) => {
            let e164 = ani_override(plan, s, localization);
            if e164.is_none() {
                // The caller's own number is then judged by the Caller ID Policy, as without one.
                w.push(kind, &r.id, format!("outbound.ani_override {s:?} is not a valid number; ignored"));
            }
            e164
        }
        Err(e) => {
            w.push(kind, &r.id, format!("outbound.{e}; ignored"));
            None
        }
    };
    let ani_override_type = match optional_str(out, "ani_override_type").map_err(|e| format!("outbound.{e}"))? {
        None | Some("always") => AniOverrideType::Always,
        Some("normal") => AniOverrideType::Normal,
        Some("emergency") => AniOverrideType::Emergency,
        Some(other) => return Err(format!("outbound.ani_override_type {other:?} is unknown")),
    };

    // Unreadable, its inbound channel limit would be none: left out.
    let inbound = object(&o, "inbound")?;
    let ani_number_format = format_field::<AniFormat>(inbound, "ani_number_format", kind, &r.id, w);
    let dnis_number_format = format_field::<DnisFormat>(inbound, "dnis_number_format", kind, &r.id, w);
    let inbound = inbound_settings(t, r, &o, inbound, addresses, w)?;

    let mut conn_addresses = addresses.by_connection.get(&r.id).cloned().unwrap_or_default();
    conn_addresses.sort();
    if ip_authentication == IpAuthentication::Address
        && let Some(names) = addresses.unresolved.get(&r.id)
    {
        for (record, host) in names {
            w.push(
                FQDN_RECORD_KIND,
                record,
                format!("{host} has no resolved address; calls from it are not recognised"),
            );
        }
    }

    let name = o.get("connection_name").and_then(Value::as_str).unwrap_or(&r.name);
    Ok(Connection {
        id: r.id.as_str().into(),
        account_id: r.account_id.as_str().into(),
        name: name.into(),
        kind: t.kind,
        active,
        credentials,
        addresses: conn_addresses,
        ip_authentication,
        token,
        tech_prefix,
        outbound_voice_profile_id,
        localization,
        ani_override,
        ani_override_type,
        channel_limit,
        ani_number_format,
        dnis_number_format,
        inbound,
    })
}

/// The connection's `inbound` settings and where its calls go. Only an unreadable
/// `channel_limit` is an error (the connection is left out); the rest take the contract's
/// defaults with a warning.
fn inbound_settings(
    t: &ConnectionType,
    r: &Resource,
    o: &Map<String, Value>,
    inbound: Option<&Map<String, Value>>,
    addresses: &Addresses,
    w: &mut Warnings,
) -> Result<InboundSettings, String> {
    let kind = t.stored;
    let empty = Map::new();
    let i = inbound.unwrap_or(&empty);
    let channel_limit = limit(i, "channel_limit").map_err(|e| format!("inbound.{e}"))?;

    let mut timeout = |key: &str, max: u64, default: u16| match given(i, key) {
        None => default,
        Some(v) => match v.as_u64().filter(|n| (1..=max).contains(n)).and_then(|n| u16::try_from(n).ok()) {
            Some(n) => n,
            None => {
                w.push(kind, &r.id, format!("inbound.{key} is not 1 to {max} ({v}); {default} is used"));
                default
            }
        },
    };
    let timeout_1xx_secs = timeout("timeout_1xx_secs", 120, InboundSettings::DEFAULT_TIMEOUT_1XX_SECS);
    let timeout_2xx_secs = timeout("timeout_2xx_secs", 600, InboundSettings::DEFAULT_TIMEOUT_2XX_SECS);

    let routing = match given(i, "default_routing_method") {
        None => GatewayOrder::Sequential,
        Some(v) => v.as_str().and_then(GatewayOrder::from_token).unwrap_or_else(|| {
            w.push(kind, &r.id, format!("inbound.default_routing_method {v} is unknown; sequential"));
            GatewayOrder::Sequential
        }),
    };
    let simultaneous_ringing = match given(i, "simultaneous_ringing").map(|v| (v, v.as_str())) {
        None | Some((_, Some("disabled"))) => false,
        Some((_, Some("enabled"))) => true,
        Some((v, _)) => {
            w.push(kind, &r.id, format!("inbound.simultaneous_ringing {v} is unknown; disabled"));
            false
        }
    };

    // IP and FQDN connections deliver over their `transport_protocol` (UDP by default).
    let transport = match given(o, "transport_protocol") {
        None => Transport::Udp,
        Some(v) => v.as_str().and_then(Transport::from_token).unwrap_or_else(|| {
            w.push(kind, &r.id, format!("transport_protocol {v} is unknown; UDP"));
            Transport::Udp
        }),
    };
    let delivery = match t.kind {
        ConnectionKind::Credential | ConnectionKind::Uac => InboundDelivery::Registrations,
        ConnectionKind::Ip => {
            let records = addresses.ip_targets.get(&r.id).map_or(&[][..], Vec::as_slice);
            let ids: Vec<&str> = records.iter().map(|(id, _, _)| id.as_str()).collect();
            let listed = records
                .iter()
                .map(|(_, address, port)| IpTarget { address: address.clone(), port: *port, transport })
                .collect();
            InboundDelivery::Ips(designated(listed, &ids, i, "ip", kind, &r.id, w))
        }
        ConnectionKind::Fqdn => {
            let records = addresses.fqdn_targets.get(&r.id).map_or(&[][..], Vec::as_slice);
            let ids: Vec<&str> = records.iter().map(|(id, _, _)| id.as_str()).collect();
            let listed = records
                .iter()
                .map(|(_, fqdn, port)| FqdnTarget { fqdn: fqdn.clone(), port: *port, transport })
                .collect();
            InboundDelivery::Fqdns(designated(listed, &ids, i, "fqdn", kind, &r.id, w))
        }
    };
    let sip_uri_calling = sip_uri_calling(t, r, o, w);
    // A subdomain is an IP or FQDN connection's (the API stores it unique on the platform).
    let sip_subdomain = match t.kind {
        ConnectionKind::Ip | ConnectionKind::Fqdn => {
            given(i, "sip_subdomain").and_then(Value::as_str).filter(|s| !s.is_empty()).map(Into::into)
        }
        _ => None,
    };
    let subdomain_from_anyone =
        given(i, "sip_subdomain_receive_settings").and_then(Value::as_str) == Some("from_anyone");
    Ok(InboundSettings {
        delivery,
        routing,
        channel_limit,
        timeout_1xx_secs,
        timeout_2xx_secs,
        simultaneous_ringing,
        sip_uri_calling,
        sip_subdomain,
        subdomain_from_anyone,
    })
}

/// `sip_uri_calling_preference` of a credential or UAC connection (the only types the contract
/// gives it; others are `disabled`). Absent, it is the product's default, `disabled`; unreadable,
/// too, which only narrows who may call.
fn sip_uri_calling(t: &ConnectionType, r: &Resource, o: &Map<String, Value>, w: &mut Warnings) -> SipUriCalling {
    if !matches!(t.kind, ConnectionKind::Credential | ConnectionKind::Uac) {
        return SipUriCalling::Disabled;
    }
    match given(o, "sip_uri_calling_preference") {
        None => SipUriCalling::Disabled,
        Some(v) => v.as_str().and_then(SipUriCalling::from_token).unwrap_or_else(|| {
            w.push(t.stored, &r.id, format!("sip_uri_calling_preference {v} is unknown; disabled"));
            SipUriCalling::Disabled
        }),
    }
}

/// The targets with the positions of `default_primary_<what>_id`, `default_secondary_...` and
/// `default_tertiary_...` among them (`ids` are the targets' record ids, in order). One that
/// names no target of the connection is ignored.
fn designated<T>(
    listed: Vec<T>,
    ids: &[&str],
    inbound: &Map<String, Value>,
    what: &str,
    kind: &'static str,
    id: &str,
    w: &mut Warnings,
) -> HostTargets<T> {
    let mut position = |rank: &str| {
        let key = format!("default_{rank}_{what}_id");
        let named = given(inbound, &key)?;
        let found = named.as_str().and_then(|n| ids.iter().position(|i| *i == n));
        if found.is_none() {
            w.push(kind, id, format!("inbound.{key} {named} names no {what} of the connection; ignored"));
        }
        found
    };
    let (primary, secondary, tertiary) = (position("primary"), position("secondary"), position("tertiary"));
    HostTargets { listed, primary, secondary, tertiary }
}

/// `ani_override` as E.164: with its `+`, as E.164 digits without it (FQDN connections store
/// it so), or as a number of the connection's numbering country (US by default), as the Caller
/// ID Policy reads caller numbers.
fn ani_override(plan: &NumberingPlan, s: &str, localization: Option<Country>) -> Option<E164> {
    plan.e164(s)
        .or_else(|| (!s.starts_with('+')).then(|| plan.e164(&format!("+{s}"))).flatten())
        .or_else(|| plan.parse(s, localization.unwrap_or(Country::US)).ok().map(|p| p.number))
        .map(|n| n.e164)
}

/// A number format of `inbound`; absent or unreadable, the API's default.
fn format_field<F: FromStr + Default>(
    inbound: Option<&Map<String, Value>>,
    key: &str,
    kind: &'static str,
    id: &str,
    w: &mut Warnings,
) -> F {
    match inbound.and_then(|i| given(i, key)) {
        None => F::default(),
        Some(v) => match v.as_str().map(F::from_str) {
            Some(Ok(f)) => f,
            _ => {
                w.push(kind, id, format!("inbound.{key} {v} is unknown; the default is used"));
                F::default()
            }
        },
    }
}

/// The digest credentials of `_digest` (`{user_name, realm, ha1_md5, ha1_sha256}`), for the
/// connection's `user_name`. Unreadable, the connection has none (its digest requests fail).
fn credentials(
    t: &ConnectionType,
    r: &Resource,
    o: &Map<String, Value>,
    w: &mut Warnings,
) -> Option<(Arc<str>, StoredDigest)> {
    let Some(d) = o.get("_digest").filter(|d| !d.is_null()) else {
        if t.digest_required {
            w.push(t.stored, &r.id, "_digest is missing; digest authentication cannot succeed");
        }
        return None;
    };
    let hex = |key: &str, len: usize| {
        d.get(key)
            .and_then(Value::as_str)
            .filter(|h| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
    };
    let user = d.get("user_name").and_then(Value::as_str).filter(|u| !u.is_empty());
    let realm = d.get("realm").and_then(Value::as_str);
    let (Some(user), Some(realm), Some(ha1_md5), Some(ha1_sha256)) =
        (user, realm, hex("ha1_md5", 32), hex("ha1_sha256", 64))
    else {
        w.push(t.stored, &r.id, "_digest cannot be read; digest authentication cannot succeed");
        return None;
    };
    // The HA1 values were made with the digest's user name; a device uses the document's.
    if o.get("user_name").and_then(Value::as_str) != Some(user) {
        w.push(t.stored, &r.id, "_digest was made for another user_name; digest authentication cannot succeed");
        return None;
    }
    Some((user.into(), StoredDigest { realm: realm.to_owned(), ha1_md5, ha1_sha256 }))
}

// ---------------------------------------------------------------------------------------------
// Numbers and carriers.

fn phone_number(
    r: &Resource,
    o: Map<String, Value>,
    owners: &Owners<'_>,
    w: &mut Warnings,
) -> Result<PhoneNumber, String> {
    let number = o.get("phone_number").and_then(Value::as_str).ok_or("phone_number is missing")?;
    let digits = number.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(format!("phone_number {number:?} is not +E.164"));
    }
    let connection_id = match optional_str(&o, "connection_id") {
        Ok(None | Some("")) => None,
        Ok(Some(c)) => {
            let owned = crate::connections::KINDS.iter().any(|k| owners.of(k, c) == Some(r.account_id.as_str()));
            if owned {
                Some(Id::from(c))
            } else {
                // The API shows such a number as detached (its connection was deleted meanwhile).
                w.push(
                    PHONE_NUMBER_KIND,
                    &r.id,
                    format!("connection_id {c} names no connection of its account; detached"),
                );
                None
            }
        }
        Err(e) => {
            w.push(PHONE_NUMBER_KIND, &r.id, format!("{e}; detached"));
            None
        }
    };
    let call_forwarding = call_forwarding(r, &o, w);
    Ok(PhoneNumber { e164: number.into(), account_id: r.account_id.as_str().into(), connection_id, call_forwarding })
}

/// `voice.call_forwarding`: enabled (by default), a type and a +E.164 number forward calls.
/// Anything unreadable turns forwarding off: the call then ends where it would without it.
fn call_forwarding(r: &Resource, o: &Map<String, Value>, w: &mut Warnings) -> CallForwarding {
    let read = || -> Result<CallForwarding, String> {
        let Some(voice) = object(o, "voice")? else { return Ok(CallForwarding::default()) };
        let Some(cf) = object(voice, "call_forwarding").map_err(|e| format!("voice.{e}"))? else {
            return Ok(CallForwarding::default());
        };
        let enabled = match given(cf, "call_forwarding_enabled") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| format!("call_forwarding_enabled is not true/false ({v})"))?,
        };
        let forwarding_type = match optional_str(cf, "forwarding_type")? {
            None => None,
            Some("always") => Some(ForwardingType::Always),
            Some("on-failure") => Some(ForwardingType::OnFailure),
            Some(other) => return Err(format!("forwarding_type {other:?} is unknown")),
        };
        let forwards_to = match optional_str(cf, "forwards_to")? {
            None | Some("") => None,
            Some(n) => {
                let digits = n.strip_prefix('+').unwrap_or("");
                let e164 = (7..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0');
                if !e164 {
                    return Err(format!("forwards_to {n:?} is not +E.164"));
                }
                Some(n.to_owned())
            }
        };
        Ok(CallForwarding { enabled, forwarding_type, forwards_to })
    };
    read().unwrap_or_else(|e| {
        w.push(PHONE_NUMBER_KIND, &r.id, format!("voice.call_forwarding: {e}; forwarding is off"));
        CallForwarding::default()
    })
}

fn carrier(r: &Resource, o: Map<String, Value>, w: &mut Warnings) -> Result<Carrier, String> {
    let enabled = required_bool(&o, "enabled")?;
    let priority = o
        .get("priority")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("priority is missing or not 0 to 65535")?;
    // An unreadable prefix list must never become "every destination".
    let prefixes = o
        .get("prefixes")
        .and_then(Value::as_array)
        .ok_or("prefixes is missing or not a list")?
        .iter()
        .map(|p| {
            p.as_str()
                .filter(|p| (1..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
                .ok_or_else(|| format!("prefixes: {p} is not 1 to 15 digits"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut gateways = Vec::new();
    for (i, g) in
        o.get("gateways").and_then(Value::as_array).ok_or("gateways is missing or not a list")?.iter().enumerate()
    {
        match gateway(g) {
            Ok(gw) => gateways.push(gw),
            Err(why) => w.push(CARRIER_KIND, &r.id, format!("gateways/{i}: {why}; dropped")),
        }
    }
    if gateways.is_empty() {
        return Err("no gateway can be read".into());
    }

    let routing = match optional_str(&o, "routing") {
        Ok(None) => GatewayOrder::Sequential,
        Ok(Some(s)) => GatewayOrder::from_token(s).unwrap_or_else(|| {
            w.push(CARRIER_KIND, &r.id, format!("routing {s:?} is unknown; sequential"));
            GatewayOrder::Sequential
        }),
        Err(e) => {
            w.push(CARRIER_KIND, &r.id, format!("{e}; sequential"));
            GatewayOrder::Sequential
        }
    };

    let mut inbound_ips = Vec::new();
    for v in o.get("inbound_ips").and_then(Value::as_array).into_iter().flatten() {
        match v.as_str() {
            Some(s) if IpBlock::parse(s).is_some() => inbound_ips.push(s.to_owned()),
            _ => w.push(CARRIER_KIND, &r.id, format!("inbound_ips: {v} is not an address or CIDR block; dropped")),
        }
    }

    let tech_prefix = optional_str(&o, "tech_prefix")?
        .map(|p| {
            (p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.to_owned())
                .ok_or_else(|| format!("tech_prefix {p:?} is not digits"))
        })
        .transpose()?;

    let username = optional_str(&o, "username").ok().flatten().map(str::to_owned);
    let password = optional_str(&o, "_password").ok().flatten().map(str::to_owned);
    if username.is_some() != password.is_some() {
        // The engine answers a challenge only with both.
        w.push(CARRIER_KIND, &r.id, "username and password are not both set; no credentials toward the carrier");
    }

    let name = o.get("name").and_then(Value::as_str).unwrap_or(&r.name).to_owned();
    Ok(Carrier {
        id: r.id.clone(),
        name,
        gateways,
        routing,
        priority,
        prefixes,
        inbound_ips,
        username,
        password,
        tech_prefix,
        enabled,
    })
}

fn gateway(g: &Value) -> Result<Gateway, String> {
    let g = g.as_object().ok_or("not an object")?;
    let host = g.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()).ok_or("host is missing")?;
    let transport = match optional_str(g, "transport")? {
        None => Transport::Udp,
        Some(t) => Transport::from_token(t).ok_or_else(|| format!("transport {t:?} is unknown"))?,
    };
    let number = |key: &str, default: u16, min: u16| -> Result<u16, String> {
        match given(g, key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n >= min)
                .ok_or_else(|| format!("{key} is not {min} to 65535 ({v})")),
        }
    };
    Ok(Gateway {
        host: host.to_owned(),
        port: number("port", transport.default_port(), 1)?,
        transport,
        priority: number("priority", 1, 0)?,
        weight: number("weight", 1, 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day() {
        for (s, secs) in [
            ("00:00", 0),
            ("08:00", 28_800),
            ("08:00Z", 28_800),
            ("08:00:00.00Z", 28_800),
            ("20:30:15", 73_815),
            ("23:59:59.999Z", 86_399),
        ] {
            assert_eq!(utc_time_of_day(s), Some(secs), "{s}");
        }
        for bad in ["", "8:00", "24:00", "12:60", "12:00:60", "12:00.5", "12:00:00.", "12:00:00.x", "12:00:00:00", "12"]
        {
            assert_eq!(utc_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits() {
        let o = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(limit(&o(serde_json::json!({})), "l"), Ok(None));
        assert_eq!(limit(&o(serde_json::json!({"l": null})), "l"), Ok(None));
        assert_eq!(limit(&o(serde_json::json!({"l": 0})), "l"), Ok(Some(0)));
        for bad in
            [serde_json::json!(-1), serde_json::json!(1.5), serde_json::json!("3"), serde_json::json!(1u64 << 33)]
        {
            assert!(limit(&o(serde_json::json!({ "l": bad })), "l").is_err(), "{bad}");
        }
    }
}
