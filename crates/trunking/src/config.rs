//! The configuration the rules read: accounts, connections, outbound voice profiles, phone
//! numbers, carriers and rate decks as typed plain data, with the indexes the hot path needs
//! (source address, SIP user name, IP token, number, a carrier's origination addresses) built
//! once per configuration change. The engine builds a [`Config`] from the store's snapshot (and
//! the addresses its FQDNs resolve to) and swaps it whole; a call decision never touches the
//! database.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use rustc_hash::FxBuildHasher;

use crate::call_rate::CallRateLimits;
use crate::caller_id::NumberOwners;
use crate::digest::StoredDigest;
use crate::numbering::{Country, E164, NumberingPlan};
use crate::rating::{BillingIncrement, RateDeck};
use crate::routing::{CallForwarding, Carrier, FqdnTarget, GatewayOrder, HostTargets, IpTarget};

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
    /// How calls to its numbers are delivered (`inbound`).
    pub inbound: InboundSettings,
}

/// Where a connection's inbound calls go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundDelivery {
    /// An IP connection's IPs (`/v2/ips`), with its default primary, secondary and tertiary.
    Ips(HostTargets<IpTarget>),
    /// An FQDN connection's FQDN records (`/v2/fqdns`), with its default FQDNs.
    Fqdns(HostTargets<FqdnTarget>),
    /// The contacts registered at call time: a credential connection's devices (a UAC
    /// connection's PBX, reached over the registration the platform keeps with it).
    Registrations,
}

/// A connection's `inbound` settings, as the inbound decision reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundSettings {
    pub delivery: InboundDelivery,
    /// `default_routing_method`: `sequential` (the contract's default) or `round-robin`.
    pub routing: GatewayOrder,
    /// `channel_limit`: concurrent inbound calls to the connection's numbers; `None`: no limit.
    pub channel_limit: Option<u32>,
    /// `timeout_1xx_secs` (1-120): how long a target may take to send a provisional response.
    pub timeout_1xx_secs: u16,
    /// `timeout_2xx_secs` (1-600): how long a call may ring unanswered.
    pub timeout_2xx_secs: u16,
    /// `simultaneous_ringing` `enabled`: every registered contact is rung at once.
    pub simultaneous_ringing: bool,
    /// `sip_uri_calling_preference`: who may call the connection's user name at the platform's
    /// SIP domain (the product documentation counts it among the inbound settings; the contract
    /// keeps it at the connection's top level).
    pub sip_uri_calling: SipUriCalling,
    /// `sip_subdomain` (IP and FQDN connections): `sip:<anything>@<subdomain>.<the platform's
    /// domain>` is delivered to the connection like a call to one of its numbers.
    pub sip_subdomain: Option<Arc<str>>,
    /// `sip_subdomain_receive_settings` `from_anyone`; otherwise (`only_my_connections`, the
    /// default) only the same account's connections may call the subdomain.
    pub subdomain_from_anyone: bool,
}

/// `sip_uri_calling_preference`: who reaches a credential connection by `sip:user@<the
/// platform's SIP domain>` ([`crate::uri_calling`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SipUriCalling {
    /// Nobody: the product's default ("disabled by default").
    #[default]
    Disabled,
    /// Only calls from connections of the same account.
    Internal,
    /// Anyone, including callers from outside the platform (billed at the unidentified-source
    /// rate, [`UriCallingSettings::unidentified_source_rate`]).
    Unrestricted,
}

impl SipUriCalling {
    /// The contract's token (`disabled`, `internal`, `unrestricted`).
    pub fn from_token(s: &str) -> Option<SipUriCalling> {
        match s {
            "disabled" => Some(SipUriCalling::Disabled),
            "internal" => Some(SipUriCalling::Internal),
            "unrestricted" => Some(SipUriCalling::Unrestricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SipUriCalling::Disabled => "disabled",
            SipUriCalling::Internal => "internal",
            SipUriCalling::Unrestricted => "unrestricted",
        }
    }
}

/// What the operator sets for SIP URI calling across the platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriCallingSettings {
    /// The platform's SIP domain: `sip:user@<domain>` names a credential connection's user.
    pub domain: Arc<str>,
    /// Hosts that mean the same as `domain` in a Request-URI: the switch's advertised host and
    /// its own addresses (a device often writes the address it registered to).
    pub equivalent_hosts: Vec<Arc<str>>,
    /// USD per minute billed to the called connection's account for an `unrestricted` call
    /// from a source no connection of the platform is identified as.
    pub unidentified_source_rate: Decimal,
}

impl UriCallingSettings {
    pub const DEFAULT_DOMAIN: &str = "sip.opentrunk.local";
    /// The product documentation's price for unidentifiable sources: 0.002 USD per minute.
    pub const DEFAULT_UNIDENTIFIED_SOURCE_RATE: Decimal = Decimal::from_parts(2, 0, 0, false, 3);
}

impl Default for UriCallingSettings {
    fn default() -> Self {
        UriCallingSettings {
            domain: UriCallingSettings::DEFAULT_DOMAIN.into(),
            equivalent_hosts: Vec::new(),
            unidentified_source_rate: UriCallingSettings::DEFAULT_UNIDENTIFIED_SOURCE_RATE,
        }
    }
}

impl InboundSettings {
    /// The contract's defaults for `timeout_1xx_secs` and `timeout_2xx_secs`.
    pub const DEFAULT_TIMEOUT_1XX_SECS: u16 = 3;
    pub const DEFAULT_TIMEOUT_2XX_SECS: u16 = 90;

    /// Settings with the contract's defaults, delivering to `delivery`.
    pub fn new(delivery: InboundDelivery) -> InboundSettings {
        InboundSettings {
            delivery,
            routing: GatewayOrder::Sequential,
            channel_limit: None,
            timeout_1xx_secs: InboundSettings::DEFAULT_TIMEOUT_1XX_SECS,
            timeout_2xx_secs: InboundSettings::DEFAULT_TIMEOUT_2XX_SECS,
            simultaneous_ringing: false,
            sip_uri_calling: SipUriCalling::Disabled,
            sip_subdomain: None,
            subdomain_from_anyone: false,
        }
    }

    pub fn timeout_1xx(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_1xx_secs))
    }

    pub fn timeout_2xx(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_2xx_secs))
    }
}

/// An address or a CIDR block a carrier's origination traffic comes from (`inbound_ips`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock {
    /// The network address (host bits cleared).
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// `203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`. Host bits set under the mask are
    /// cleared (`203.0.113.7/24` is `203.0.113.0/24`); an IPv4-mapped IPv6 address alone is
    /// the IPv4 one, as the source addresses it is compared with are.
    pub fn parse(s: &str) -> Option<IpBlock> {
        let s = s.trim();
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (a, Some(p.parse::<u8>().ok()?)),
            Some(_) => return None,
            None => (s, None),
        };
        let ip: IpAddr = address.parse().ok()?;
        let (ip, max) = match (ip, prefix) {
            (IpAddr::V6(v6), None) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), 32),
                None => (ip, 128),
            },
            (IpAddr::V4(_), _) => (ip, 32),
            (IpAddr::V6(_), Some(_)) => (ip, 128),
        };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(IpBlock { network: mask(ip, prefix), prefix })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// One address (`/32`, `/128`).
    pub fn is_single(&self) -> bool {
        self.prefix == if self.network.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `ip` (made canonical first) is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
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
    /// Where its calls go instead of, or after, the connection (`call_forwarding`).
    pub call_forwarding: CallForwarding,
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
    /// Connections by `sip_subdomain`, in lowercase.
    subdomains: HashMap<Box<str>, usize>,
    profiles: HashMap<Id, OutboundVoiceProfile>,
    numbers: HashMap<Arc<str>, PhoneNumber>,
    carriers: Vec<Carrier>,
    /// Shared: a deck of a million prefixes is 23 MiB, and a configuration change elsewhere must
    /// not copy it.
    rate_decks: HashMap<Id, (Arc<RateDeck>, BillingIncrement)>,
    platform: Platform,
    uri_calling: UriCallingSettings,
    /// Calls per second per source address and per account (`P05`).
    call_rate_limits: CallRateLimits,
    /// Built once at start (it compiles the numbering metadata) and shared by every configuration.
    plan: Arc<NumberingPlan>,
    /// Source address -> IP/FQDN connections whose outbound traffic may come from it.
    by_address: HashMap<IpAddr, Vec<usize>>,
    /// Digest user name -> connection.
    by_user: HashMap<Arc<str>, usize>,
    /// `X-Telnyx-Token` -> connection.
    by_token: HashMap<Arc<str>, usize>,
    /// Origination source address -> enabled carrier (single addresses of `inbound_ips`).
    carrier_by_address: HashMap<IpAddr, usize>,
    /// The CIDR blocks of enabled carriers' `inbound_ips`, longest prefix first.
    carrier_blocks: Vec<(IpBlock, usize)>,
    /// Per connection, the counter ids its inbound calls are counted under: (account, connection).
    inbound_counters: Vec<(Id, Id)>,
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
                subdomains: HashMap::default(),
                profiles: HashMap::default(),
                numbers: HashMap::default(),
                carriers: Vec::new(),
                rate_decks: HashMap::default(),
                platform: Platform::default(),
                uri_calling: UriCallingSettings::default(),
                call_rate_limits: CallRateLimits::default(),
                plan,
                by_address: HashMap::default(),
                by_user: HashMap::default(),
                by_token: HashMap::default(),
                carrier_by_address: HashMap::default(),
                carrier_blocks: Vec::new(),
                inbound_counters: Vec::new(),
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

    /// The connection whose `sip_subdomain` is `label` (any case).
    pub fn connection_of_subdomain(&self, label: &str) -> Option<ConnectionRef> {
        self.subdomains.get(label.to_ascii_lowercase().as_str()).copied().map(ConnectionRef)
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

    /// The platform's SIP domain, its equivalent hosts and the unidentified-source rate.
    pub fn uri_calling(&self) -> &UriCallingSettings {
        &self.uri_calling
    }

    /// The operator's calls-per-second limits.
    pub fn call_rate_limits(&self) -> &CallRateLimits {
        &self.call_rate_limits
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

    /// The enabled carrier whose `inbound_ips` hold `ip`: an address listed alone first, then
    /// the most specific block. Disabled carriers send no origination traffic.
    pub fn carrier_at(&self, ip: IpAddr) -> Option<&Carrier> {
        let ip = ip.to_canonical();
        let i = self
            .carrier_by_address
            .get(&ip)
            .copied()
            .or_else(|| self.carrier_blocks.iter().find(|(block, _)| block.contains(ip)).map(|(_, i)| *i))?;
        self.carriers.get(i)
    }

    /// The counter ids a connection's inbound calls are counted under (account, connection):
    /// apart from its outbound calls, which the connection's and account's outbound limits
    /// (`D1`, `D3`) count alone.
    pub fn inbound_counters(&self, r: ConnectionRef) -> &(Id, Id) {
        &self.inbound_counters[r.0]
    }

    /// The channels an inbound call to connection `r` takes: its inbound counters, under the
    /// connection's inbound `channel_limit` (the account's concurrent call limit is outbound's).
    pub fn inbound_channels(&self, r: ConnectionRef) -> crate::outbound::ChannelLimits {
        let (account, connection) = self.inbound_counters(r);
        crate::outbound::ChannelLimits {
            account: (account.clone(), None),
            profile: None,
            connection: (connection.clone(), self.connection(r).inbound.channel_limit),
        }
    }
}

/// The prefix of the counter ids inbound calls are counted under ([`Config::inbound_counters`]).
pub const INBOUND_COUNTER_PREFIX: &str = "inbound:";

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

    /// SIP URI calling's platform settings (default: [`UriCallingSettings::default`]).
    pub fn uri_calling(mut self, s: UriCallingSettings) -> Self {
        self.config.uri_calling = s;
        self
    }

    /// The platform's SIP domain (default `sip.opentrunk.local`).
    pub fn sip_domain(mut self, domain: impl Into<Arc<str>>) -> Self {
        self.config.uri_calling.domain = domain.into();
        self
    }

    /// USD per minute for `unrestricted` SIP URI calls from unidentified sources (default 0.002).
    pub fn unidentified_source_rate(mut self, per_minute: Decimal) -> Self {
        self.config.uri_calling.unidentified_source_rate = per_minute;
        self
    }

    /// Calls per second per source address and per account (default:
    /// [`CallRateLimits::default`]).
    pub fn call_rate_limits(mut self, limits: CallRateLimits) -> Self {
        self.config.call_rate_limits = limits;
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
            if let Some(label) = &conn.inbound.sip_subdomain {
                c.subdomains.insert(label.to_ascii_lowercase().into(), i);
            }
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
        c.inbound_counters = c
            .connections
            .iter()
            .map(|conn| {
                let key = |id: &str| Id::from(format!("{INBOUND_COUNTER_PREFIX}{id}"));
                (key(&conn.account_id), key(&conn.id))
            })
            .collect();
        // Origination sources: the API refuses overlapping blocks across carriers; a hand-built
        // overlap goes to the first carrier listed (the most specific block still wins).
        for (i, carrier) in c.carriers.iter().enumerate().filter(|(_, carrier)| carrier.enabled) {
            for block in carrier.inbound_ips.iter().filter_map(|s| IpBlock::parse(s)) {
                if block.is_single() {
                    c.carrier_by_address.entry(block.network()).or_insert(i);
                } else if !c.carrier_blocks.iter().any(|(b, _)| *b == block) {
                    c.carrier_blocks.push((block, i));
                }
            }
        }
        c.carrier_blocks.sort_by_key(|(block, _)| std::cmp::Reverse(block.prefix()));
        self.config
    }
}
