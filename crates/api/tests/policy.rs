//! From the API to the call rules, on both store backends: a platform made through the real API
//! (an account with its rate deck, a profile, credential, IP and FQDN connections with their IPs,
//! FQDN and token, a carrier with gateways and credentials, numbers) is read out of the store's
//! snapshot into the rules' configuration with every field carried; then an INVITE from the IP
//! connection's address with its token is identified and decided by `trunking` itself (routed to
//! the carrier at the deck's rate, and `D2` once the profile's channels are taken). Documents
//! that cannot be read are left out with a warning, never given "no limit".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use api::policy::{
    ConfigWarning, config_from_snapshot, config_from_snapshot_with, load_rate_decks, load_rate_decks_cached,
    load_rate_decks_in_pages, utc_time_of_day,
};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sip::{Framing, Message};
use store::{Repository, Resource, Store};
use trunking::Reason;
use trunking::config::{
    AniFormat, AniOverrideType, CallingWindow, Config, ConnectionKind, DnisFormat, InboundDelivery, InboundSettings,
    IpAuthentication, SipUriCalling, UriCallingSettings,
};
use trunking::digest::{DigestRealm, ReplayGuard, StoredDigest};
use trunking::identify::{AuthMethod, CallFacts, Identification, identify};
use trunking::inbound::{self, InboundDecision, InboundRequest, InboundRoute, NoRegistrations};
use trunking::numbering::{Country, NumberingPlan};
use trunking::outbound::{OutboundDecision, OutboundRequest, Scope, Usage, decide};
use trunking::rating::{BillingIncrement, parse_amount};
use trunking::routing::{
    ForwardingType, FqdnTarget, Gateway, GatewayOrder, HostTargets, IpTarget, RegisteredContact, Transport,
};
use trunking::time::Timestamp;
use trunking::trace::Trace;
use trunking::uri_calling::{self, UriCallDecision, UriCallRequest, UriCaller};

mod common;

use common::{OPERATOR, account_with, apps_and_stores, post, post_as};

/// Compiling the numbering metadata takes a while: once per test binary.
static PLAN: LazyLock<Arc<NumberingPlan>> = LazyLock::new(|| Arc::new(NumberingPlan::new()));

const TOKEN: &str = "acme-token-0001";
const FQDN_HOST: &str = "pbx.acme.example";
/// 2026-11-27T12:00:00Z: inside the profile's calling window.
const NOON: Timestamp = Timestamp(1_795_780_800_000);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn amount(s: &str) -> Decimal {
    parse_amount(s).unwrap()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// What the API made, by role.
struct Made {
    account: String,
    deck: String,
    profile: String,
    credential: String,
    ip_connection: String,
    tech_prefix: String,
    fqdn_connection: String,
    fqdn_record: String,
    carrier: String,
}

/// The platform, made through the API as the operator and as the account.
async fn make(app: &axum::Router) -> Made {
    let deck = post(
        app,
        "/v2/rate_decks",
        OPERATOR,
        json!({
            "name": "retail",
            "billing_increment": "6/6",
            "rates": [
                {"prefix": "1", "rate": "0.0100"},
                {"prefix": "1312", "rate": "0.0200"},
                {"prefix": "44", "rate": "0.0300"},
            ],
        }),
    )
    .await;
    let deck = id(&deck);
    let (account, key) =
        account_with(app, json!({"name": "acme", "rate_deck_id": deck, "concurrent_call_limit": 20})).await;

    let profile = post_as(
        app,
        "/v2/outbound_voice_profiles",
        &key,
        json!({
            "name": "main",
            "whitelisted_destinations": ["US", "CA", "GB"],
            "max_destination_rate": 0.5,
            "daily_spend_limit": "100.00",
            "daily_spend_limit_enabled": true,
            "concurrent_call_limit": 2,
            "calling_window": {"start_time": "08:00:00.00Z", "end_time": "20:30Z", "calls_per_cld": 5},
        }),
        StatusCode::OK,
    )
    .await;
    let profile = id(&profile);

    let credential = post(
        app,
        "/v2/credential_connections",
        &key,
        json!({
            "connection_name": "pbx-cred",
            "user_name": "acmepbx1",
            "password": "s3cretpass",
            "inbound": {"ani_number_format": "+E.164", "dnis_number_format": "national"},
            "outbound": {
                "outbound_voice_profile_id": profile,
                "channel_limit": 4,
                "localization": "US",
                "ani_override": "+13125550100",
                "ani_override_type": "emergency",
            },
        }),
    )
    .await;

    let ip_connection = post(
        app,
        "/v2/ip_connections",
        &key,
        json!({
            "connection_name": "pbx-ip",
            "outbound": {
                "ip_authentication_method": "token",
                "ip_authentication_token": TOKEN,
                "outbound_voice_profile_id": profile,
                "channel_limit": 3,
            },
        }),
    )
    .await;
    for address in ["192.0.2.10", "2001:db8::10"] {
        post(app, "/v2/ips", &key, json!({"connection_id": ip_connection["id"], "ip_address": address})).await;
    }

    let fqdn_connection = post(
        app,
        "/v2/fqdn_connections",
        &key,
        json!({
            "connection_name": "pbx-fqdn",
            "outbound": {
                "ip_authentication_method": "ip-authentication",
                "outbound_voice_profile_id": profile,
                "tech_prefix": "7777",
                "localization": "GB",
            },
        }),
    )
    .await;
    let fqdn_record = post(
        app,
        "/v2/fqdns",
        &key,
        json!({"connection_id": fqdn_connection["id"], "fqdn": FQDN_HOST, "dns_record_type": "a"}),
    )
    .await;

    let carrier = post(
        app,
        "/v2/carriers",
        OPERATOR,
        json!({
            "name": "upstream",
            "gateways": [
                {"host": "203.0.113.5", "port": 5070, "transport": "TCP", "priority": 1, "weight": 10},
                {"host": "sip.carrier.example", "transport": "TLS", "priority": 2},
            ],
            "routing": "round-robin",
            "priority": 3,
            "prefixes": ["1", "44"],
            "inbound_ips": ["203.0.113.0/24"],
            "username": "opentrunk",
            "password": "carrier-pass",
            "tech_prefix": "99",
        }),
    )
    .await;

    for (number, connection) in [("+13125550100", Some(&ip_connection["id"])), ("+13125550101", None)] {
        let mut body = json!({"phone_number": number, "account_id": account});
        if let Some(c) = connection {
            body["connection_id"] = c.clone();
        }
        post(app, "/v2/phone_numbers", OPERATOR, body).await;
    }

    Made {
        account,
        deck,
        profile,
        credential: id(&credential),
        tech_prefix: ip_connection["outbound"]["tech_prefix"].as_str().unwrap().to_owned(),
        ip_connection: id(&ip_connection),
        fqdn_connection: id(&fqdn_connection),
        fqdn_record: id(&fqdn_record),
        carrier: id(&carrier),
    }
}

/// The configuration of everything the store holds now, FQDNs resolved as given.
async fn configuration(store: &Store, resolved: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
    let snapshot = store.load_snapshot(1).await.unwrap();
    let decks = load_rate_decks(store, &snapshot).await.unwrap();
    let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (host, address) in resolved {
        names.entry(host.to_string()).or_default().push(ip(address));
    }
    config_from_snapshot(&snapshot, PLAN.clone(), &decks, &names)
}

#[tokio::test]
async fn every_field_reaches_the_rules() {
    for (app, store) in apps_and_stores().await {
        let m = make(&app).await;
        let (config, warnings) = configuration(&store, &[(FQDN_HOST, "198.51.100.7")]).await;
        assert_eq!(warnings, vec![], "{:?}", store.backend());

        let a = config.account(&m.account).expect("the account");
        assert!(a.enabled);
        assert_eq!(a.concurrent_call_limit, Some(20));
        assert_eq!(a.rate_deck_id.as_deref(), Some(m.deck.as_str()));

        let p = config.profile(&m.profile).expect("the profile");
        assert_eq!((p.enabled, p.account_id.as_ref()), (true, m.account.as_str()));
        assert_eq!(p.whitelisted_destinations, vec![Country::US, Country::CA, Country::GB]);
        assert_eq!(p.max_destination_rate, Some(amount("0.5")));
        assert_eq!(p.daily_spend_limit, Some(amount("100.00")));
        assert_eq!(p.concurrent_call_limit, Some(2));
        assert_eq!(
            p.calling_window,
            Some(CallingWindow { start: Some(28_800), end: Some(73_800), calls_per_cld: Some(5) })
        );

        // The credential connection, by its digest user.
        let c = config.connection(config.connection_of_user("acmepbx1").expect("the digest user"));
        assert_eq!((c.id.as_ref(), c.kind, c.active), (m.credential.as_str(), ConnectionKind::Credential, true));
        assert_eq!(c.account_id.as_ref(), m.account);
        assert_eq!(c.name.as_ref(), "pbx-cred");
        let (user, digest) = c.credentials.as_ref().expect("credentials");
        assert_eq!(user.as_ref(), "acmepbx1");
        let realm = api::connections_common::digest::REALM;
        assert_eq!(*digest, StoredDigest::from_password("acmepbx1", realm, "s3cretpass"));
        assert_eq!(c.outbound_voice_profile_id.as_deref(), Some(m.profile.as_str()));
        assert_eq!(c.channel_limit, Some(4));
        assert_eq!(c.localization, Some(Country::US));
        assert_eq!(c.ani_override.map(|n| n.to_string()).as_deref(), Some("+13125550100"));
        assert_eq!(c.ani_override_type, AniOverrideType::Emergency);
        assert_eq!((c.ani_number_format, c.dnis_number_format), (AniFormat::PlusE164, DnisFormat::National));
        assert!(c.addresses.is_empty() && c.token.is_none() && c.tech_prefix.is_none());

        // The IP connection, by its token and at both its addresses.
        let ip_ref = config.connection_of_token(TOKEN).expect("the token");
        let c = config.connection(ip_ref);
        assert_eq!((c.id.as_ref(), c.kind), (m.ip_connection.as_str(), ConnectionKind::Ip));
        assert_eq!(c.ip_authentication, IpAuthentication::Token);
        assert_eq!(c.tech_prefix.as_ref().map(|p| &p[..]), Some(m.tech_prefix.as_bytes()));
        assert_eq!(c.channel_limit, Some(3));
        assert_eq!(c.localization, None, "an IP connection's localization is null by default");
        assert_eq!((c.ani_override, c.ani_override_type), (None, AniOverrideType::Always));
        assert_eq!((c.ani_number_format, c.dnis_number_format), (AniFormat::E164National, DnisFormat::E164));
        assert!(c.credentials.is_none());
        for address in ["192.0.2.10", "2001:db8::10"] {
            assert_eq!(config.connections_at(ip(address)).collect::<Vec<_>>(), vec![ip_ref], "{address}");
        }

        // The FQDN connection, at its name's resolved address.
        let at: Vec<_> = config.connections_at(ip("198.51.100.7")).collect();
        assert_eq!(at.len(), 1);
        let c = config.connection(at[0]);
        assert_eq!((c.id.as_ref(), c.kind), (m.fqdn_connection.as_str(), ConnectionKind::Fqdn));
        assert_eq!(c.ip_authentication, IpAuthentication::Address);
        assert_eq!(c.tech_prefix, Some(*b"7777"));
        assert_eq!(c.localization, Some(Country::GB));
        assert_eq!(c.channel_limit, None, "an FQDN connection's channel limit is unset until set");

        // Numbers.
        let n = config.number("+13125550100").expect("a number");
        assert_eq!(
            (n.account_id.as_ref(), n.connection_id.as_deref()),
            (m.account.as_str(), Some(m.ip_connection.as_str()))
        );
        let n = config.number("+13125550101").expect("a number");
        assert_eq!((n.account_id.as_ref(), n.connection_id.as_deref()), (m.account.as_str(), None));

        // The deck prices a number by its longest prefix, billed by its increment.
        let (deck, increment) = config.rate_deck(&m.deck).expect("the deck");
        assert_eq!(*increment, BillingIncrement { first: 6, next: 6 });
        let rate = deck.rate_for("13125550199").expect("a rate");
        assert_eq!((rate.prefix.as_str(), rate.per_minute), ("1312", amount("0.0200")));
        assert_eq!(deck.rate_for("442079460000").map(|r| r.per_minute), Some(amount("0.0300")));
        assert_eq!(deck.rate_for("861012345678"), None);

        // The carrier, with its gateways and credentials.
        let [carrier] = config.carriers() else { panic!("one carrier: {:?}", config.carriers()) };
        assert_eq!((carrier.id.as_str(), carrier.name.as_str()), (m.carrier.as_str(), "upstream"));
        assert_eq!(
            carrier.gateways,
            vec![
                Gateway { host: "203.0.113.5".into(), port: 5070, transport: Transport::Tcp, priority: 1, weight: 10 },
                Gateway {
                    host: "sip.carrier.example".into(),
                    port: 5061,
                    transport: Transport::Tls,
                    priority: 2,
                    weight: 1
                },
            ]
        );
        assert_eq!((carrier.routing, carrier.priority, carrier.enabled), (GatewayOrder::RoundRobin, 3, true));
        assert_eq!(carrier.prefixes, vec!["1", "44"]);
        assert_eq!(carrier.inbound_ips, vec!["203.0.113.0/24"]);
        let creds = carrier.credentials().expect("credentials toward the carrier");
        assert_eq!((creds.username, creds.password), ("opentrunk", "carrier-pass"));
        assert_eq!(carrier.tech_prefix.as_deref(), Some("99"));
    }
}

/// Counters' values as the engine would read them.
#[derive(Default)]
struct Counts {
    profile: u32,
}

impl Usage for Counts {
    fn channels(&self, scope: Scope, _: &str) -> u32 {
        if scope == Scope::Profile { self.profile } else { 0 }
    }
    fn spend_today(&self, _: &str, _: u64) -> Decimal {
        Decimal::ZERO
    }
    fn calls_to(&self, _: &str, _: &str, _: Timestamp) -> u32 {
        0
    }
}

fn invite(to: &str, from: &str, extra: &str) -> Message {
    let text = format!(
        "INVITE sip:{to}@sip.opentrunk.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{to}@sip.opentrunk.test>\r\n\
         From: \"Acme\" <sip:{from}@pbx.acme.example>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pbx.acme.example\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from}@192.0.2.10:5060>\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

#[tokio::test]
async fn an_invite_is_decided_against_the_stored_configuration() {
    for (app, store) in apps_and_stores().await {
        let m = make(&app).await;
        let (config, warnings) = configuration(&store, &[(FQDN_HOST, "198.51.100.7")]).await;
        assert_eq!(warnings, vec![]);
        let realm = DigestRealm::new("sip.opentrunk.local", [7u8; 32], 300_000);
        let msg = invite("+13125550199", "+13125550100", &format!("X-Telnyx-Token: {TOKEN}\r\n"));

        for (counts, expected) in [(Counts::default(), None), (Counts { profile: 2 }, Some(Reason::D2))] {
            let facts = CallFacts::of(&msg, ip("192.0.2.10"));
            let mut trace = Trace::new();
            let Identification::Identified(identified) =
                identify(&config, &facts, &realm, &mut ReplayGuard::default(), NOON, &mut trace)
            else {
                panic!("not identified: {trace:#?}");
            };
            assert_eq!(identified.method, AuthMethod::IpToken);
            assert_eq!(config.connection(identified.connection).id.as_ref(), m.ip_connection);
            let req =
                OutboundRequest { message: &msg, facts: &facts, identified, usage: &counts, rotation: 0, now: NOON };
            match (decide(&config, &req, &mut trace), expected) {
                (OutboundDecision::Route(call), None) => {
                    let (rate, increment) = call.rate.expect("rated");
                    assert_eq!((rate.prefix.as_str(), rate.per_minute), ("1312", amount("0.0200")));
                    assert_eq!(increment, BillingIncrement { first: 6, next: 6 });
                    assert_eq!(call.profile_id.as_deref(), Some(m.profile.as_str()));
                    assert_eq!(call.channels.account.1, Some(20));
                    assert_eq!(call.channels.profile.as_ref().and_then(|p| p.1), Some(2));
                    assert_eq!(call.channels.connection.1, Some(3));
                    let first = &call.routes.attempts[0];
                    assert_eq!((first.carrier_id(), first.gateway.host.as_str()), (m.carrier.as_str(), "203.0.113.5"));
                    assert_eq!(call.routes.len(), 2, "both gateways of the carrier");
                }
                (OutboundDecision::Reject(r), Some(want)) => {
                    assert_eq!(r, want, "{trace:#?}");
                    assert_eq!(trace.failed().map(|s| s.rule), Some("outbound.profile_channels"));
                }
                (other, want) => panic!("{other:?}, expected {want:?}: {trace:#?}"),
            }
        }
    }
}

/// A resource written straight to the store, as a bug or a hand edit might leave it.
async fn put(store: &Store, kind: &str, id: &str, account: &str, body: Value) {
    let r = Resource {
        kind: kind.into(),
        id: id.into(),
        account_id: account.into(),
        name: id.into(),
        body: body.to_string(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
    };
    store.insert_resource(&r, &[]).await.unwrap();
}

fn warned<'a>(warnings: &'a [ConfigWarning], id: &str) -> Vec<&'a str> {
    warnings.iter().filter(|w| w.id == id).map(|w| w.detail.as_str()).collect()
}

#[tokio::test]
async fn unreadable_documents_are_left_out_with_a_warning() {
    for (app, store) in apps_and_stores().await {
        let m = make(&app).await;
        let outbound = json!({"outbound_voice_profile_id": m.profile, "ip_authentication_method": "token"});
        // A profile whose channel limit is unreadable must not become "no limit".
        put(
            &store,
            "outbound_voice_profile",
            "ovp-bad",
            &m.account,
            json!({"enabled": true, "concurrent_call_limit": "ten"}),
        )
        .await;
        // A spend limit enabled without an amount.
        put(
            &store,
            "outbound_voice_profile",
            "ovp-spend",
            &m.account,
            json!({"enabled": true, "daily_spend_limit_enabled": true}),
        )
        .await;
        // A connection whose channel limit is negative, one whose outbound is not an object.
        let mut bad_limit = outbound.clone();
        bad_limit["channel_limit"] = json!(-1);
        put(&store, "ip_connection", "ipc-limit", &m.account, json!({"active": true, "outbound": bad_limit})).await;
        put(&store, "ip_connection", "ipc-outbound", &m.account, json!({"active": true, "outbound": "x"})).await;
        // An unknown authentication method.
        put(
            &store,
            "fqdn_connection",
            "fc-method",
            &m.account,
            json!({"active": true, "outbound": {"ip_authentication_method": "magic"}}),
        )
        .await;
        // A carrier whose prefixes cannot be read must not take every destination.
        put(
            &store,
            "carrier",
            "carrier-bad",
            "operator",
            json!({"enabled": true, "priority": 0, "prefixes": "44", "gateways": [{"host": "192.0.2.99"}]}),
        )
        .await;
        // Not JSON at all.
        let r = Resource {
            kind: "account".into(),
            id: "acc-broken".into(),
            account_id: "acc-broken".into(),
            name: "broken".into(),
            body: "{not json".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        };
        store.insert_resource(&r, &[]).await.unwrap();
        // A number naming a connection that does not exist is detached.
        put(
            &store,
            "phone_number",
            "pn-orphan",
            &m.account,
            json!({"phone_number": "+13125550102", "connection_id": "gone"}),
        )
        .await;

        // The FQDN is not resolved this time.
        let (config, warnings) = configuration(&store, &[]).await;
        for (id, skipped) in [
            ("ovp-bad", true),
            ("ovp-spend", true),
            ("ipc-limit", true),
            ("ipc-outbound", true),
            ("fc-method", true),
            ("carrier-bad", true),
            ("acc-broken", true),
            ("pn-orphan", false),
        ] {
            let w = warned(&warnings, id);
            assert_eq!(w.len(), 1, "{id}: {warnings:#?}");
            assert_eq!(w[0].ends_with("left out of the configuration"), skipped, "{id}: {}", w[0]);
        }
        assert!(config.profile("ovp-bad").is_none() && config.profile("ovp-spend").is_none());
        assert!(config.connection_by_id("ipc-limit").is_none() && config.connection_by_id("ipc-outbound").is_none());
        assert!(config.connection_by_id("fc-method").is_none());
        assert!(config.carriers().iter().all(|c| c.id != "carrier-bad"));
        assert_eq!(config.number("+13125550102").map(|n| n.connection_id.clone()), Some(None));
        assert!(warned(&warnings, &m.fqdn_record)[0].contains("no resolved address"), "{warnings:#?}");
        assert_eq!(config.connections_at(ip("198.51.100.7")).count(), 0);
        // The good ones are all there.
        assert!(config.profile(&m.profile).is_some() && config.connection_of_token(TOKEN).is_some());
        assert_eq!(warnings.len(), 9, "{warnings:#?}");
    }
}

#[tokio::test]
async fn rate_decks_are_read_in_pages() {
    for (app, store) in apps_and_stores().await {
        let rates: Vec<Value> =
            (0..1200).map(|i| json!({"prefix": format!("{}", 1000 + i * 7), "rate": format!("0.{i:04}")})).collect();
        let deck = post(&app, "/v2/rate_decks", OPERATOR, json!({"name": "big", "rates": rates})).await;
        let deck_id = deck["id"].as_str().unwrap();
        let snapshot = store.load_snapshot(1).await.unwrap();
        // One page, pages that split the rows unevenly, and pages that end exactly at the last row.
        for page in [50_000, 500, 400, 1] {
            let decks = load_rate_decks_in_pages(&store, &snapshot, page).await.unwrap();
            let loaded = &decks[deck_id];
            assert_eq!(loaded.len(), 1200, "pages of {page}");
            for i in 0..1200u32 {
                let number = format!("{}55501", 1000 + i * 7);
                assert_eq!(
                    loaded.rate_for(&number).map(|r| r.per_minute),
                    Some(amount(&format!("0.{i:04}"))),
                    "{number}, pages of {page}"
                );
            }
        }
        // The API's default billing increment.
        let decks = load_rate_decks(&store, &snapshot).await.unwrap();
        let (config, _) = config_from_snapshot(&snapshot, PLAN.clone(), &decks, &HashMap::new());
        assert_eq!(config.rate_deck(deck_id).map(|d| d.1), Some(BillingIncrement::PER_MINUTE));
    }
}

/// A deck is read again only when its document changed (replacing its rates rewrites it).
#[tokio::test]
async fn rate_decks_are_read_again_only_when_they_change() {
    for (app, store) in apps_and_stores().await {
        let deck =
            post(&app, "/v2/rate_decks", OPERATOR, json!({"name": "d", "rates": [{"prefix": "1", "rate": "0.0100"}]}))
                .await;
        let deck_id = deck["id"].as_str().unwrap();
        let mut cache = api::policy::RateDeckCache::default();
        let snapshot = store.load_snapshot(1).await.unwrap();
        let first = load_rate_decks_cached(&store, &snapshot, &mut cache).await.unwrap();
        // Another change of configuration: the deck is not read again.
        post(&app, "/v2/rate_decks", OPERATOR, json!({"name": "e", "rates": [{"prefix": "44", "rate": "0.0200"}]}))
            .await;
        let snapshot = store.load_snapshot(2).await.unwrap();
        let second = load_rate_decks_cached(&store, &snapshot, &mut cache).await.unwrap();
        assert!(Arc::ptr_eq(&first[deck_id], &second[deck_id]), "an unchanged deck was read again");
        assert_eq!(second.len(), 2);
        // Its rates replaced: read again, with the new rate.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let uri = format!("/v2/rate_decks/{deck_id}/rates");
        let (status, v) = common::call(
            &app,
            "PUT",
            &uri,
            Some(OPERATOR),
            Some(json!({"rates": [{"prefix": "1", "rate": "0.0300"}]})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let snapshot = store.load_snapshot(3).await.unwrap();
        let third = load_rate_decks_cached(&store, &snapshot, &mut cache).await.unwrap();
        assert!(!Arc::ptr_eq(&first[deck_id], &third[deck_id]));
        assert_eq!(third[deck_id].rate_for("12125550123").map(|r| r.per_minute), Some(amount("0.0300")));
        assert_eq!(third.len(), 2);
    }
}

#[test]
fn calling_window_times() {
    assert_eq!(utc_time_of_day("08:00:00.00Z"), Some(28_800));
    assert_eq!(utc_time_of_day("20:30Z"), Some(73_800));
    assert_eq!(utc_time_of_day("25:00"), None);
}

#[tokio::test]
async fn a_deck_that_cannot_be_built_is_an_error_naming_it() {
    for (app, store) in apps_and_stores().await {
        let deck =
            post(&app, "/v2/rate_decks", OPERATOR, json!({"name": "odd", "rates": [{"prefix": "1", "rate": "0.01"}]}))
                .await;
        let deck_id = deck["id"].as_str().unwrap();
        // A rate the API would refuse, written past it.
        let doc = store.get_resource("rate_deck", deck_id).await.unwrap().unwrap();
        assert!(store.replace_rates(&doc, &[("1", "-0.01")]).await.unwrap());
        let snapshot = store.load_snapshot(1).await.unwrap();
        let e = load_rate_decks(&store, &snapshot).await.unwrap_err().to_string();
        assert!(e.contains(deck_id) && e.contains("odd"), "{e}");
    }
}

/// A PATCH that must succeed.
async fn patch(app: &axum::Router, uri: &str, key: &str, body: Value) -> Value {
    let (status, v) = common::call(app, "PATCH", uri, Some(key), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "PATCH {uri}: {v}");
    v["data"].clone()
}

/// A carrier's INVITE to `user`.
fn carrier_invite(user: &str, from: &str) -> Message {
    let text = format!(
        "INVITE sip:{user}@sip.opentrunk.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{user}@sip.opentrunk.test>\r\n\
         From: <sip:{from}@carrier.example.net>;tag=1928301774\r\n\
         Call-ID: inbound-1@carrier.example.net\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from}@203.0.113.5:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

#[tokio::test]
async fn inbound_delivery_reaches_the_rules() {
    for (app, store) in apps_and_stores().await {
        let (account, key) = account_with(&app, json!({"name": "acme"})).await;
        post(
            &app,
            "/v2/carriers",
            OPERATOR,
            json!({"name": "origin", "gateways": [{"host": "203.0.113.5"}], "inbound_ips": ["203.0.113.0/24", "198.51.100.9"]}),
        )
        .await;

        let ip_conn = post(
            &app,
            "/v2/ip_connections",
            &key,
            json!({
                "connection_name": "pbx-ip",
                "transport_protocol": "TCP",
                "inbound": {
                    "channel_limit": 5,
                    "timeout_1xx_secs": 5,
                    "timeout_2xx_secs": 30,
                    "default_routing_method": "sequential",
                    "ani_number_format": "+E.164",
                    "dnis_number_format": "national",
                },
            }),
        )
        .await;
        let ip_conn = id(&ip_conn);
        let mut ips = Vec::new();
        for (address, port) in [("10.0.0.1", Some(5070)), ("10.0.0.2", None), ("10.0.0.3", None)] {
            let mut body = json!({"connection_id": ip_conn, "ip_address": address});
            if let Some(p) = port {
                body["port"] = json!(p);
            }
            ips.push(id(&post(&app, "/v2/ips", &key, body).await));
        }
        patch(
            &app,
            &format!("/v2/ip_connections/{ip_conn}"),
            &key,
            json!({"inbound": {"default_primary_ip_id": ips[2], "default_secondary_ip_id": ips[0]}}),
        )
        .await;

        let fqdn_conn = post(
            &app,
            "/v2/fqdn_connections",
            &key,
            json!({"connection_name": "pbx-fqdn", "transport_protocol": "TLS", "inbound": {"default_routing_method": "round-robin"}}),
        )
        .await;
        let fqdn_conn = id(&fqdn_conn);
        for body in [
            json!({"connection_id": fqdn_conn, "fqdn": "pbx.acme.example", "dns_record_type": "srv"}),
            json!({"connection_id": fqdn_conn, "fqdn": "backup.acme.example", "dns_record_type": "a", "port": 5080}),
        ] {
            post(&app, "/v2/fqdns", &key, body).await;
        }

        let cred = post(
            &app,
            "/v2/credential_connections",
            &key,
            json!({
                "connection_name": "pbx-cred",
                "user_name": "acmeinbound1",
                "password": "s3cretpass",
                "inbound": {"simultaneous_ringing": "enabled", "dnis_number_format": "sip_username"},
            }),
        )
        .await;
        let cred = id(&cred);

        for (number, connection) in [("+13122000001", &ip_conn), ("+13122000002", &fqdn_conn), ("+13122000003", &cred)]
        {
            post(
                &app,
                "/v2/phone_numbers",
                OPERATOR,
                json!({"phone_number": number, "account_id": account, "connection_id": connection}),
            )
            .await;
        }
        let numbers =
            common::call(&app, "GET", "/v2/phone_numbers?filter[phone_number]=3122000001", Some(&key), None).await;
        let number_id = numbers.1["data"][0]["id"].as_str().expect("the number").to_owned();
        patch(
            &app,
            &format!("/v2/phone_numbers/{number_id}/voice"),
            &key,
            json!({"call_forwarding": {"forwarding_type": "on-failure", "forwards_to": "+13122009999"}}),
        )
        .await;

        let (config, warnings) = configuration(&store, &[]).await;
        // The FQDN connection authenticates by address and its names are not resolved here.
        assert!(warnings.iter().all(|w| w.detail.contains("no resolved address")), "{warnings:#?}");

        // The IP connection: its IPs with their ports, the connection's transport, defaults.
        let c = config.connection(config.connection_by_id(&ip_conn).expect("the IP connection"));
        let tcp = |address: &str, port: u16| IpTarget { address: address.into(), port, transport: Transport::Tcp };
        assert_eq!(
            c.inbound,
            InboundSettings {
                delivery: InboundDelivery::Ips(HostTargets {
                    listed: vec![tcp("10.0.0.1", 5070), tcp("10.0.0.2", 5060), tcp("10.0.0.3", 5060)],
                    primary: Some(2),
                    secondary: Some(0),
                    tertiary: None,
                }),
                routing: GatewayOrder::Sequential,
                channel_limit: Some(5),
                timeout_1xx_secs: 5,
                timeout_2xx_secs: 30,
                simultaneous_ringing: false,
                sip_uri_calling: SipUriCalling::Disabled,
                sip_subdomain: None,
                subdomain_from_anyone: false,
            }
        );
        // The FQDN connection: SRV for the srv record, the a record's port.
        let c = config.connection(config.connection_by_id(&fqdn_conn).expect("the FQDN connection"));
        let tls = |fqdn: &str, port| FqdnTarget { fqdn: fqdn.into(), port, transport: Transport::Tls };
        assert_eq!(
            c.inbound.delivery,
            InboundDelivery::Fqdns(HostTargets::listed(vec![
                tls("pbx.acme.example", None),
                tls("backup.acme.example", Some(5080))
            ]))
        );
        assert_eq!((c.inbound.routing, c.inbound.channel_limit), (GatewayOrder::RoundRobin, None));
        assert_eq!((c.inbound.timeout_1xx_secs, c.inbound.timeout_2xx_secs), (3, 90), "the contract's defaults");
        // The credential connection: its registrations, all rung at once.
        let c = config.connection(config.connection_by_id(&cred).expect("the credential connection"));
        assert_eq!((&c.inbound.delivery, c.inbound.simultaneous_ringing), (&InboundDelivery::Registrations, true));

        let n = config.number("+13122000001").expect("the number");
        assert_eq!(n.call_forwarding.active(), Some((ForwardingType::OnFailure, "+13122009999")));
        assert_eq!(config.number("+13122000002").expect("a number").call_forwarding.active(), None);
        assert_eq!(config.carrier_at(ip("203.0.113.200")).map(|c| c.name.as_str()), Some("origin"));
        assert_eq!(config.carrier_at(ip("198.51.100.9")).map(|c| c.name.as_str()), Some("origin"));
        assert!(config.carrier_at(ip("198.51.100.10")).is_none());

        // A carrier's call to the IP connection's number in national form, decided by the rules.
        let msg = carrier_invite("3122000001", "3122005555");
        let mut trace = Trace::new();
        let req = InboundRequest {
            message: &msg,
            source: ip("203.0.113.5"),
            registered: &NoRegistrations,
            rotation: 0,
            now: NOON,
        };
        let InboundDecision::Route(call) = inbound::decide(&config, &req, &mut trace) else {
            panic!("not routed: {trace:#?}");
        };
        assert_eq!(
            call.routes,
            vec![
                InboundRoute::Ip { host: "10.0.0.3".into(), port: 5060, transport: Transport::Tcp },
                InboundRoute::Ip { host: "10.0.0.1".into(), port: 5070, transport: Transport::Tcp },
                InboundRoute::Forward { number: "+13122009999".into() },
            ]
        );
        assert_eq!((call.ani.as_str(), call.dnis.as_str()), ("+13122005555", "3122000001"));
        assert_eq!(call.channels.connection.1, Some(5));

        // The credential connection's number: its registered contact, else RG1.
        let msg = carrier_invite("+13122000003", "+13122005555");
        let contact = RegisteredContact { uri: "sip:acmeinbound1@10.9.0.1:5062".into(), q: None, registered_at: NOON };
        let registered = HashMap::from([(cred.clone(), vec![contact])]);
        let req = InboundRequest {
            message: &msg,
            source: ip("203.0.113.5"),
            registered: &registered,
            rotation: 0,
            now: NOON,
        };
        let InboundDecision::Route(call) = inbound::decide(&config, &req, &mut Trace::new()) else {
            panic!("not routed");
        };
        assert_eq!(call.routes, vec![InboundRoute::Contact { uri: "sip:acmeinbound1@10.9.0.1:5062".into() }]);
        assert_eq!(call.dnis, "acmeinbound1");
        let req = InboundRequest { registered: &NoRegistrations, ..req };
        assert_eq!(inbound::decide(&config, &req, &mut Trace::new()), InboundDecision::Reject(Reason::RG1));
    }
}

#[tokio::test]
async fn unreadable_inbound_fields_never_loosen_a_limit() {
    for (app, store) in apps_and_stores().await {
        let (account, key) = account_with(&app, json!({"name": "acme"})).await;
        let ip_conn = id(&post(&app, "/v2/ip_connections", &key, json!({"connection_name": "pbx-ip"})).await);
        let ip_record =
            id(&post(&app, "/v2/ips", &key, json!({"connection_id": ip_conn, "ip_address": "10.0.0.1"})).await);
        let outbound = json!({"ip_authentication_method": "tech-prefixp-charge-info"});
        // An unreadable inbound channel limit, or an inbound that is no object: left out.
        put(
            &store,
            "ip_connection",
            "ipc-inbound-limit",
            &account,
            json!({"active": true, "outbound": outbound, "inbound": {"channel_limit": "x"}}),
        )
        .await;
        put(
            &store,
            "ip_connection",
            "ipc-inbound",
            &account,
            json!({"active": true, "outbound": outbound, "inbound": []}),
        )
        .await;
        // Timing and order that cannot be read take the contract's defaults; a default IP that
        // names no IP of the connection is ignored.
        put(
            &store,
            "ip_connection",
            "ipc-odd",
            &account,
            json!({
                "active": true,
                "outbound": outbound,
                "transport_protocol": "SCTP",
                "inbound": {
                    "timeout_1xx_secs": 0,
                    "timeout_2xx_secs": "long",
                    "default_routing_method": "random",
                    "default_primary_ip_id": ip_record,
                },
            }),
        )
        .await;
        // An IP whose port cannot be read still identifies its connection, but takes no calls.
        put(
            &store,
            "ip",
            "ip-port",
            &account,
            json!({"connection_id": "ipc-odd", "ip_address": "10.0.0.9", "port": 0}),
        )
        .await;
        // Call forwarding to something that is no number is off.
        put(
            &store,
            "phone_number",
            "pn-forward",
            &account,
            json!({"phone_number": "+13122000001", "voice": {"call_forwarding": {"forwarding_type": "always", "forwards_to": "12345"}}}),
        )
        .await;
        // A carrier's inbound IP that is no address.
        put(
            &store,
            "carrier",
            "carrier-odd",
            "operator",
            json!({"enabled": true, "priority": 1, "prefixes": [], "gateways": [{"host": "192.0.2.99"}], "inbound_ips": ["not-an-ip", "192.0.2.0/24"]}),
        )
        .await;

        let (config, warnings) = configuration(&store, &[]).await;
        let one = |id: &str| {
            let w = warned(&warnings, id);
            assert_eq!(w.len(), 1, "{id}: {warnings:#?}");
            w[0].to_owned()
        };
        assert!(one("ipc-inbound-limit").contains("inbound.channel_limit"));
        assert!(one("ipc-inbound").ends_with("left out of the configuration"));
        assert!(
            config.connection_by_id("ipc-inbound-limit").is_none() && config.connection_by_id("ipc-inbound").is_none()
        );
        let odd = warned(&warnings, "ipc-odd");
        assert_eq!(odd.len(), 5, "{odd:#?}");
        let c = config.connection(config.connection_by_id("ipc-odd").expect("kept"));
        assert_eq!(c.inbound.delivery, InboundDelivery::Ips(HostTargets::listed(vec![])));
        assert_eq!(
            (c.inbound.timeout_1xx_secs, c.inbound.timeout_2xx_secs, c.inbound.routing),
            (3, 90, GatewayOrder::Sequential)
        );
        assert!(one("ip-port").contains("port"));
        assert_eq!(config.connections_at(ip("10.0.0.9")).count(), 1, "the address still identifies it");
        assert!(one("pn-forward").contains("forwarding is off"));
        assert_eq!(config.number("+13122000001").expect("kept").call_forwarding.active(), None);
        assert!(one("carrier-odd").contains("not-an-ip"));
        assert!(config.carrier_at(ip("192.0.2.7")).is_some());
        // The good IP connection is untouched.
        let good = config.connection(config.connection_by_id(&ip_conn).expect("the IP connection"));
        assert_eq!(
            good.inbound.delivery,
            InboundDelivery::Ips(HostTargets::listed(vec![IpTarget {
                address: "10.0.0.1".into(),
                port: 5060,
                transport: Transport::Udp
            }]))
        );
    }
}

/// An INVITE to `sip:{user}@{host}` from outside the platform.
fn uri_invite(user: &str, host: &str) -> Message {
    let text = format!(
        "INVITE sip:{user}@{host} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:{user}@{host}>\r\n\
         From: <sip:someone@elsewhere.example>;tag=1928301774\r\n\
         Call-ID: uri-1@elsewhere.example\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:someone@203.0.113.5:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes().into(), Framing::Datagram).expect("a well-formed INVITE")
}

#[tokio::test]
async fn sip_uri_calling_preference_reaches_the_rules() {
    for (app, store) in apps_and_stores().await {
        let (account, key) = account_with(&app, json!({"name": "acme"})).await;
        let credential = |name: &str, user: &str, preference: Option<&str>| {
            let mut body = json!({"connection_name": name, "user_name": user, "password": "s3cretpass"});
            if let Some(p) = preference {
                body["sip_uri_calling_preference"] = json!(p);
            }
            body
        };
        let mut ids = Vec::new();
        for (name, user, preference) in [
            ("default", "defaultuser", None),
            ("off", "offuser", Some("disabled")),
            ("inside", "insideuser", Some("internal")),
            ("open", "openuser", Some("unrestricted")),
        ] {
            ids.push(id(&post(&app, "/v2/credential_connections", &key, credential(name, user, preference)).await));
        }
        let uac = id(&post(
            &app,
            "/v2/uac_connections",
            &key,
            json!({"connection_name": "uac", "sip_uri_calling_preference": "internal"}),
        )
        .await);
        // Written by hand: a preference the contract does not have, and one on an IP connection
        // (the contract gives it none).
        put(
            &store,
            "credential_connection",
            "cc-odd",
            &account,
            json!({"active": true, "outbound": {}, "user_name": "odduser", "sip_uri_calling_preference": "everyone"}),
        )
        .await;
        put(
            &store,
            "ip_connection",
            "ipc-uri",
            &account,
            json!({"active": true, "outbound": {}, "sip_uri_calling_preference": "unrestricted"}),
        )
        .await;

        let (config, warnings) = configuration(&store, &[]).await;
        let preference = |id: &str| {
            config.connection(config.connection_by_id(id).unwrap_or_else(|| panic!("{id}"))).inbound.sip_uri_calling
        };
        let expected =
            [SipUriCalling::Disabled, SipUriCalling::Disabled, SipUriCalling::Internal, SipUriCalling::Unrestricted];
        for (id, want) in ids.iter().zip(expected) {
            assert_eq!(preference(id), want, "{id}");
            assert_eq!(warned(&warnings, id), Vec::<&str>::new(), "{id}");
        }
        assert_eq!(preference(&uac), SipUriCalling::Internal);
        assert_eq!(preference("cc-odd"), SipUriCalling::Disabled);
        assert!(
            warned(&warnings, "cc-odd").iter().any(|w| w.contains("sip_uri_calling_preference \"everyone\"")),
            "{warnings:#?}"
        );
        assert_eq!(preference("ipc-uri"), SipUriCalling::Disabled);
        assert_eq!(warned(&warnings, "ipc-uri"), Vec::<&str>::new());

        // A PATCH reaches the rules.
        patch(
            &app,
            &format!("/v2/credential_connections/{}", ids[2]),
            &key,
            json!({"sip_uri_calling_preference": "unrestricted"}),
        )
        .await;
        let (config, _) = configuration(&store, &[]).await;
        let inside = config.connection(config.connection_by_id(&ids[2]).expect("kept"));
        assert_eq!(inside.inbound.sip_uri_calling, SipUriCalling::Unrestricted);
        // The snapshot carries no operator settings: the product's defaults.
        assert_eq!(config.uri_calling(), &UriCallingSettings::default());

        // End to end: the operator's domain and rate, a caller from outside, a registered phone.
        let snapshot = store.load_snapshot(1).await.unwrap();
        let settings = UriCallingSettings {
            domain: "voice.acme.example".into(),
            equivalent_hosts: vec!["127.0.0.1".into()],
            unidentified_source_rate: amount("0.004"),
        };
        let (config, _) = config_from_snapshot_with(
            &snapshot,
            PLAN.clone(),
            &HashMap::new(),
            &HashMap::new(),
            api::policy::OperatorSettings { uri_calling: settings, ..Default::default() },
        );
        let phones: HashMap<String, Vec<RegisteredContact>> = ids
            .iter()
            .map(|id| {
                let contact =
                    RegisteredContact { uri: format!("sip:{id}@10.9.0.1:5062"), q: None, registered_at: NOON };
                (id.clone(), vec![contact])
            })
            .collect();
        let decide = |user: &str, host: &str| {
            let msg = uri_invite(user, host);
            let req = UriCallRequest { message: &msg, caller: None, registered: &phones, rotation: 0 };
            uri_calling::decide(&config, &req, &mut Trace::new())
        };
        match decide("openuser", "voice.acme.example") {
            UriCallDecision::Route(call) => {
                assert_eq!(call.connection_id.as_ref(), ids[3]);
                assert_eq!(call.account_id.as_ref(), account);
                assert_eq!((call.caller, call.rate), (UriCaller::Unidentified, Some(amount("0.004"))));
                assert_eq!(call.routes, vec![InboundRoute::Contact { uri: format!("sip:{}@10.9.0.1:5062", ids[3]) }]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide("openuser", "127.0.0.1"), UriCallDecision::Route(_)));
        assert_eq!(decide("openuser", "sip.opentrunk.local"), UriCallDecision::NotUriCall);
        assert_eq!(decide("defaultuser", "voice.acme.example"), UriCallDecision::Reject(Reason::D30));
        assert_eq!(decide("offuser", "voice.acme.example"), UriCallDecision::Reject(Reason::D30));
    }
}
