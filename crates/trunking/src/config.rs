//! The configuration the rules read: accounts, connections, outbound voice profiles, phone
//! numbers, carriers and rate decks as typed plain data, with the indexes the hot path needs
//! (source address, SIP user name, IP token, number) built once per configuration change. The
//! engine builds a [`Config`] from the store's snapshot (and the addresses its FQDNs resolve to)
//! and swaps it whole; a call decision never touches the database.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rust_decimal::Decimal;
use rustc_hash::FxBuildHasher;

use crate::caller_id::NumberOwners;
use crate::digest::StoredDigest;
use crate::numbering::{Country, E164, NumberingPlan};
use crate::rating::{BillingIncrement, RateDeck};
use crate::routing::Carrier;

/// The configuration's maps hash with FxHash: their keys (ids, addresses, tokens, numbers) are
/// written by the operator, not the network, and a request only looks keys up, so a fast hash
/// cannot be flooded; SipHash would cost a fifth of a decision's time.
type HashMap<K, V> = StdHashMap<K, V, FxBuildHasher>;

/// Ids are shared, not copied, between the configuration and the decisions that name them.
pub type Id = Arc<str>;

/// A tenant.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: Id,
    pub enabled: bool,
    /// Concurrent calls across the account (`403 User channel limit exceeded D1`); `None`: no limit.
    pub concurrent_call_limit: Option<u32>,
    /// The deck that prices the account's calls.
    pub rate_deck_id: Option<Id>,
}

/// Which of the product's connection types a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    Credential,
    Ip,
    Fqdn,
    Uac,
}

/// How an IP or FQDN connection's outbound calls are told apart from others on the same source
/// address (`outbound.ip_authentication_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpAuthentication {
    /// IP connections' default `tech-prefixp-charge-info`: the tech prefix or a `P-Charge-Info`
    /// number single a connection out; alone on its address, the address suffices.
    TechPrefixOrChargeInfo,
    /// `token`: `X-Telnyx-Token` must match.
    Token,
    /// FQDN connections' `ip-authentication`: by the FQDN's resolved addresses.
    Address,
    /// FQDN connections' `credential-authentication`: digest only.
    Credentials,
}

/// When the connection's `ani_override` replaces the caller's number (`ani_override_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AniOverrideType {
    Always,
    Normal,
    Emergency,
}

/// `inbound.ani_number_format` / `inbound.dnis_number_format` are the numbering module's;
/// re-exported here for the connection.
pub use crate::caller_id::{AniFormat, DnisFormat};

/// A SIP connection: how its traffic is recognised and what applies to its calls.
#[derive(Clone, Debug)]
pub struct Connection {
    pub id: Id,
    pub account_id: Id,
    pub name: Arc<str>,
    pub kind: ConnectionKind,
    /// `active`: an inactive connection answers `404 SIP connection inactive D18`.
    pub active: bool,
    /// Digest credentials (credential connections; FQDN connections authenticating by
    /// credentials): the user name and its HA1 values.
    pub credentials: Option<(Arc<str>, StoredDigest)>,
    /// The source addresses its outbound traffic comes from: an IP connection's IPs, an FQDN
    /// connection's resolved addresses (resolution is the engine's).
    pub addresses: Vec<IpAddr>,
    pub ip_authentication: IpAuthentication,
    /// `X-Telnyx-Token` value (12-48 characters, unique on the platform).
    pub token: Option<Arc<str>>,
    /// The 4-digit tech prefix the PBX prepends to the dial string.
    pub tech_prefix: Option<[u8; 4]>,
    pub outbound_voice_profile_id: Option<Id>,
    /// The numbering country of the connection's calls; `None` means US rules.
    pub localization: Option<Country>,
    /// `ani_override` (read as E.164 when the configuration is loaded) and when it applies.
    pub ani_override: Option<E164>,
    pub ani_override_type: AniOverrideType,
    /// Concurrent calls on the connection (`D3`); `None`: no limit.
    pub channel_limit: Option<u32>,
    pub ani_number_format: AniFormat,
    pub dnis_number_format: DnisFormat,
}

/// A calling window: when calls may start (UTC seconds of the day, `start` inclusive, `end`
/// exclusive; a window that wraps midnight has `end < start`), and how many calls one called
/// number may get within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallingWindow {
    pub start: Option<u32>,
    pub end: Option<u32>,
    pub calls_per_cld: Option<u32>,
}

/// An outbound voice profile: which destinations, at what price, how many at once.
#[derive(Clone, Debug)]
pub struct OutboundVoiceProfile {
    pub id: Id,
    pub account_id: Id,
    pub enabled: bool,
    /// ISO alpha-2 countries the profile may call (`whitelisted_destinations`); empty: none.
    pub whitelisted_destinations: Vec<Country>,
    /// USD per minute; a destination rated above it is refused (`D24`).
    pub max_destination_rate: Option<Decimal>,
    /// USD per UTC day, when `daily_spend_limit_enabled`.
    pub daily_spend_limit: Option<Decimal>,
    /// Concurrent calls on the profile (`D2`); `None`: no limit.
    pub concurrent_call_limit: Option<u32>,
    pub calling_window: Option<CallingWindow>,
}

/// A phone number on the platform and whose it is.
#[derive(Clone, Debug)]
pub struct PhoneNumber {
    /// E.164 with `+`.
    pub e164: Arc<str>,
    pub account_id: Id,
    /// The connection it is pointed at, if any.
    pub connection_id: Option<Id>,
}

/// Platform-wide rules an operator sets.
#[derive(Clone, Debug, Default)]
pub struct Platform {
    /// Dialed prefixes (E.164 digits, no `+`) refused on every account for fraud prevention (`D41`).
    pub forbidden_prefixes: Vec<Arc<str>>,
}

/// Everything a call decision reads, indexed.
#[derive(Debug)]
pub struct Config {
    accounts: HashMap<Id, Account>,
    connections: Vec<Connection>,
    connection_index: HashMap<Id, usize>,
    profiles: HashMap<Id, OutboundVoiceProfile>,
    numbers: HashMap<Arc<str>, PhoneNumber>,
    carriers: Vec<Carrier>,
    /// Shared: a deck of a million prefixes is 23 MiB, and a configuration change elsewhere must
    /// not copy it.
    rate_decks: HashMap<Id, (Arc<RateDeck>, BillingIncrement)>,
    platform: Platform,
    /// Built once at start (it compiles the numbering metadata) and shared by every configuration.
    plan: Arc<NumberingPlan>,
    /// Source address -> IP/FQDN connections whose outbound traffic may come from it.
    by_address: HashMap<IpAddr, Vec<usize>>,
    /// Digest user name -> connection.
    by_user: HashMap<Arc<str>, usize>,
    /// `X-Telnyx-Token` -> connection.
    by_token: HashMap<Arc<str>, usize>,
}

/// A connection as the rules see it: its index in the configuration (cheap to pass around).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionRef(pub(crate) usize);

impl Config {
    /// A builder over the platform's numbering plan.
    pub fn builder(plan: Arc<NumberingPlan>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                accounts: HashMap::default(),
                connections: Vec::new(),
                connection_index: HashMap::default(),
                profiles: HashMap::default(),
                numbers: HashMap::default(),
                carriers: Vec::new(),
                rate_decks: HashMap::default(),
                platform: Platform::default(),
                plan,
                by_address: HashMap::default(),
                by_user: HashMap::default(),
                by_token: HashMap::default(),
            },
        }
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn connection(&self, r: ConnectionRef) -> &Connection {
        &self.connections[r.0]
    }

    pub fn connection_by_id(&self, id: &str) -> Option<ConnectionRef> {
        self.connection_index.get(id).copied().map(ConnectionRef)
    }

    pub fn connections(&self) -> impl Iterator<Item = (ConnectionRef, &Connection)> {
        self.connections.iter().enumerate().map(|(i, c)| (ConnectionRef(i), c))
    }

    pub fn profile(&self, id: &str) -> Option<&OutboundVoiceProfile> {
        self.profiles.get(id)
    }

    /// A platform number by E.164 (with `+`).
    pub fn number(&self, e164: &str) -> Option<&PhoneNumber> {
        self.numbers.get(e164)
    }

    pub fn carriers(&self) -> &[Carrier] {
        &self.carriers
    }

    /// A rate deck and its billing increment.
    pub fn rate_deck(&self, id: &str) -> Option<&(Arc<RateDeck>, BillingIncrement)> {
        self.rate_decks.get(id)
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    pub fn numbering(&self) -> &NumberingPlan {
        &self.plan
    }

    /// IP and FQDN connections whose outbound traffic may come from `ip`.
    pub fn connections_at(&self, ip: IpAddr) -> impl Iterator<Item = ConnectionRef> + '_ {
        self.by_address.get(&ip).into_iter().flatten().copied().map(ConnectionRef)
    }

    /// The connection whose digest user name is `user`.
    pub fn connection_of_user(&self, user: &str) -> Option<ConnectionRef> {
        self.by_user.get(user).copied().map(ConnectionRef)
    }

    /// The connection whose `X-Telnyx-Token` is `token`.
    pub fn connection_of_token(&self, token: &str) -> Option<ConnectionRef> {
        self.by_token.get(token).copied().map(ConnectionRef)
    }
}

/// Who owns a number: the account of a platform number.
impl NumberOwners for Config {
    fn owner(&self, e164: &str) -> Option<&str> {
        self.numbers.get(e164).map(|n| n.account_id.as_ref())
    }
}

/// Collects configuration, then indexes it once ([`ConfigBuilder::build`]).
#[derive(Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    pub fn account(mut self, a: Account) -> Self {
        self.config.accounts.insert(a.id.clone(), a);
        self
    }

    pub fn connection(mut self, c: Connection) -> Self {
        self.config.connections.push(c);
        self
    }

    pub fn profile(mut self, p: OutboundVoiceProfile) -> Self {
        self.config.profiles.insert(p.id.clone(), p);
        self
    }

    pub fn number(mut self, n: PhoneNumber) -> Self {
        self.config.numbers.insert(n.e164.clone(), n);
        self
    }

    pub fn carrier(mut self, c: Carrier) -> Self {
        self.config.carriers.push(c);
        self
    }

    pub fn rate_deck(mut self, id: Id, deck: Arc<RateDeck>, increment: BillingIncrement) -> Self {
        self.config.rate_decks.insert(id, (deck, increment));
        self
    }

    pub fn platform(mut self, p: Platform) -> Self {
        self.config.platform = p;
        self
    }

    /// Indexes what was collected. A user name or token held by two connections (the store
    /// keeps them unique, so only a hand-built configuration can do it) indexes neither: such a
    /// request is then never guessed to be one of them.
    pub fn build(mut self) -> Config {
        let c = &mut self.config;
        let mut users: HashMap<Arc<str>, Option<usize>> = HashMap::default();
        let mut tokens: HashMap<Arc<str>, Option<usize>> = HashMap::default();
        for (i, conn) in c.connections.iter().enumerate() {
            c.connection_index.insert(conn.id.clone(), i);
            if let Some((user, _)) = &conn.credentials {
                users.entry(user.clone()).and_modify(|e| *e = None).or_insert(Some(i));
            }
            if let Some(token) = &conn.token {
                tokens.entry(token.clone()).and_modify(|e| *e = None).or_insert(Some(i));
            }
            let by_address = matches!(conn.kind, ConnectionKind::Ip | ConnectionKind::Fqdn)
                && conn.ip_authentication != IpAuthentication::Credentials;
            if by_address {
                for ip in &conn.addresses {
                    let at = c.by_address.entry(*ip).or_default();
                    if !at.contains(&i) {
                        at.push(i);
                    }
                }
            }
        }
        c.by_user = users.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
        c.by_token = tokens.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
        self.config
    }
}
