//! A platform to decide calls against: two accounts, connections of every authentication
//! method, numbers, a rate deck and carriers; plus the request builder and counters' values.
//! Shared by the decision tests and the decision benchmark.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use rust_decimal::Decimal;
use sip::{Framing, Message};
use trunking::config::{
    Account, AniOverrideType, Config, ConfigBuilder, Connection, ConnectionKind, InboundDelivery, InboundSettings,
    IpAuthentication, OutboundVoiceProfile, PhoneNumber, Platform,
};
use trunking::digest::{DigestRealm, StoredDigest};
use trunking::numbering::{Country, NumberingPlan};
use trunking::outbound::{Scope, Usage};
use trunking::rating::{BillingIncrement, RateDeck};
use trunking::routing::{Carrier, Gateway, GatewayOrder, HostTargets, IpTarget, Transport};
use trunking::time::Timestamp;

pub const REALM: &str = "sip.opentrunk.test";
pub const TOKEN: &str = "token-abcdefghij";
/// 2026-11-27T12:00:00Z.
pub const NOON: Timestamp = Timestamp(1_795_780_800_000);

/// Compiling the numbering metadata takes a while: once per test binary.
pub static PLAN: LazyLock<Arc<NumberingPlan>> = LazyLock::new(|| Arc::new(NumberingPlan::new()));

pub fn realm() -> DigestRealm {
    DigestRealm::new(REALM, [7u8; 32], 300_000)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP literal")
}

pub fn decimal(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

/// An IP connection of account `account` at `addresses`.
pub fn ip_connection(id: &str, account: &str, addresses: &[&str]) -> Connection {
    Connection {
        id: id.into(),
        account_id: account.into(),
        name: id.into(),
        kind: ConnectionKind::Ip,
        active: true,
        credentials: None,
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ip_authentication: IpAuthentication::TechPrefixOrChargeInfo,
        token: None,
        tech_prefix: None,
        outbound_voice_profile_id: Some(if account == "acc-a" { "ovp-a" } else { "ovp-b" }.into()),
        localization: None,
        ani_override: None,
        ani_override_type: AniOverrideType::Always,
        channel_limit: None,
        ani_number_format: Default::default(),
        dnis_number_format: Default::default(),
        inbound: InboundSettings::new(InboundDelivery::Ips(HostTargets::listed(
            addresses
                .iter()
                .map(|a| IpTarget { address: a.to_string(), port: 5060, transport: Transport::Udp })
                .collect(),
        ))),
    }
}

pub fn profile(id: &str, account: &str) -> OutboundVoiceProfile {
    OutboundVoiceProfile {
        id: id.into(),
        account_id: account.into(),
        enabled: true,
        whitelisted_destinations: ["US", "CA", "GB", "IE"].iter().filter_map(|c| Country::parse(c)).collect(),
        max_destination_rate: Some(decimal("0.50")),
        daily_spend_limit: Some(decimal("100.00")),
        concurrent_call_limit: Some(5),
        calling_window: None,
    }
}

pub fn carrier(id: &str, priority: u16, prefixes: &[&str]) -> Carrier {
    Carrier {
        id: id.into(),
        name: id.into(),
        gateways: vec![
            Gateway { host: "198.51.100.1".into(), port: 5060, transport: Transport::Udp, priority: 1, weight: 1 },
            Gateway { host: "198.51.100.2".into(), port: 5060, transport: Transport::Udp, priority: 2, weight: 1 },
        ],
        routing: GatewayOrder::Sequential,
        priority,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        inbound_ips: Vec::new(),
        username: None,
        password: None,
        tech_prefix: None,
        enabled: true,
    }
}

/// The platform most tests decide against; `edit` changes it before it is indexed.
pub fn platform_with(
    edit: impl FnOnce(&mut Vec<Connection>, &mut Vec<OutboundVoiceProfile>, &mut Vec<Carrier>),
) -> Config {
    let mut cred = ip_connection("cred", "acc-a", &[]);
    cred.kind = ConnectionKind::Credential;
    cred.inbound.delivery = InboundDelivery::Registrations;
    cred.credentials = Some(("alice".into(), StoredDigest::from_password("alice", REALM, "secret123")));

    let mut token = ip_connection("token", "acc-a", &["192.0.2.10"]);
    token.ip_authentication = IpAuthentication::Token;
    token.token = Some(TOKEN.into());

    let mut prefixed_a = ip_connection("prefix-a", "acc-a", &["192.0.2.20"]);
    prefixed_a.tech_prefix = Some(*b"1234");
    let mut prefixed_b = ip_connection("prefix-b", "acc-b", &["192.0.2.20"]);
    prefixed_b.tech_prefix = Some(*b"5678");

    let mut alone = ip_connection("alone", "acc-a", &["192.0.2.30"]);
    alone.tech_prefix = Some(*b"4321");
    alone.channel_limit = Some(3);

    let mut no_profile = ip_connection("no-profile", "acc-a", &["192.0.2.40"]);
    no_profile.outbound_voice_profile_id = None;
    let mut inactive = ip_connection("inactive", "acc-a", &["192.0.2.50"]);
    inactive.active = false;
    let mut shared_1 = ip_connection("shared-1", "acc-a", &["192.0.2.60"]);
    shared_1.ip_authentication = IpAuthentication::Address;
    shared_1.kind = ConnectionKind::Fqdn;
    let mut shared_2 = ip_connection("shared-2", "acc-b", &["192.0.2.60"]);
    shared_2.ip_authentication = IpAuthentication::Address;
    shared_2.kind = ConnectionKind::Fqdn;

    let mut connections = vec![cred, token, prefixed_a, prefixed_b, alone, no_profile, inactive, shared_1, shared_2];
    let mut profiles = vec![profile("ovp-a", "acc-a"), profile("ovp-b", "acc-b")];
    let mut carriers = vec![carrier("carrier-1", 1, &[]), carrier("carrier-2", 2, &["44"])];
    edit(&mut connections, &mut profiles, &mut carriers);

    let deck =
        RateDeck::build([("1", "0.0100"), ("1900", "2.00"), ("44", "0.0200"), ("447", "0.0450"), ("86", "0.0300")])
            .expect("a deck");
    let mut b: ConfigBuilder = Config::builder(PLAN.clone())
        .account(Account {
            id: "acc-a".into(),
            enabled: true,
            concurrent_call_limit: Some(10),
            rate_deck_id: Some("deck-1".into()),
        })
        .account(Account {
            id: "acc-b".into(),
            enabled: true,
            concurrent_call_limit: Some(10),
            rate_deck_id: Some("deck-1".into()),
        })
        .rate_deck("deck-1".into(), Arc::new(deck), BillingIncrement::PER_MINUTE)
        .number(PhoneNumber {
            e164: "+13125550100".into(),
            account_id: "acc-a".into(),
            connection_id: Some("prefix-a".into()),
            call_forwarding: Default::default(),
        })
        .number(PhoneNumber {
            e164: "+13125550101".into(),
            account_id: "acc-a".into(),
            connection_id: None,
            call_forwarding: Default::default(),
        })
        .number(PhoneNumber {
            e164: "+13125550111".into(),
            account_id: "acc-b".into(),
            connection_id: Some("prefix-b".into()),
            call_forwarding: Default::default(),
        })
        .platform(Platform { forbidden_prefixes: vec!["1809".into()] });
    for c in connections {
        b = b.connection(c);
    }
    for p in profiles {
        b = b.profile(p);
    }
    for c in carriers {
        b = b.carrier(c);
    }
    b.build()
}

pub fn platform() -> Config {
    platform_with(|_, _, _| {})
}

/// An INVITE to `ruri_user` from `from_user`, with `extra` header lines (each ending in CRLF).
pub fn invite(ruri_user: &str, from_user: &str, extra: &str) -> Message {
    let text = format!(
        "INVITE sip:{ruri_user}@sip.opentrunk.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{ruri_user}@sip.opentrunk.test>\r\n\
         From: \"Caller\" <sip:{from_user}@pbx.example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pbx.example.com\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:{from_user}@192.0.2.10:5060>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

/// Counters' values as the engine would read them.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub account: u32,
    pub profile: u32,
    pub connection: u32,
    pub spend: Decimal,
    pub calls_to: u32,
}

impl Usage for Counts {
    fn channels(&self, scope: Scope, _: &str) -> u32 {
        match scope {
            Scope::Account => self.account,
            Scope::Profile => self.profile,
            Scope::Connection => self.connection,
        }
    }
    fn spend_today(&self, _: &str, _: u64) -> Decimal {
        self.spend
    }
    fn calls_to(&self, _: &str, _: &str, _: Timestamp) -> u32 {
        self.calls_to
    }
}
