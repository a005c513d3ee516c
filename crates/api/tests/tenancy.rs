//! Tenancy across the whole API, through the router, on both store backends. Accounts A and B
//! each get one resource of every kind an account has; then, with B's key:
//!
//! - every route that names a resource ([`BY_ID`]), tried on each of A's ids, answers exactly
//!   what it answers for a random id that does not exist: 404, the same bytes;
//! - every request of B's that names one of A's resources ([`CROSS`]) is refused exactly as if
//!   that id did not exist, and stores nothing;
//! - B's lists ([`LISTS`]), filtered or not, never show anything of A's;
//! - the operator's endpoints ([`OPERATOR_ONLY`]) answer 403;
//!
//! and A's resources read the same afterwards. Without a key (or with a wrong one) every route
//! of every table answers 401, code 10009.
//!
//! The routes are data: a new resource is a row in [`BY_ID`] (and [`LISTS`], and [`CROSS`] for
//! each id it refers to), plus its creation in [`tenant`].

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::OPERATOR;

/// The connection types; kind `connection` in the tables stands for each of them in turn.
const CONNECTIONS: [&str; 4] = ["credential_connection", "ip_connection", "fqdn_connection", "uac_connection"];

/// Every route that names one resource: (method, path, kind of the resource `{id}` names,
/// body). Bodies are valid: B's key on B's own resource of the kind succeeds with them.
const BY_ID: &[(&str, &str, &str, Option<&str>)] = &[
    ("GET", "/v2/accounts/{id}", "account", None),
    ("PATCH", "/v2/accounts/{id}", "account", Some(r#"{"name": "taken over"}"#)),
    ("DELETE", "/v2/accounts/{id}", "account", None),
    ("GET", "/v2/outbound_voice_profiles/{id}", "outbound_voice_profile", None),
    ("PATCH", "/v2/outbound_voice_profiles/{id}", "outbound_voice_profile", Some(r#"{"name": "taken over"}"#)),
    ("DELETE", "/v2/outbound_voice_profiles/{id}", "outbound_voice_profile", None),
    ("GET", "/v2/credential_connections/{id}", "credential_connection", None),
    ("PATCH", "/v2/credential_connections/{id}", "credential_connection", Some(r#"{"connection_name": "taken over"}"#)),
    ("DELETE", "/v2/credential_connections/{id}", "credential_connection", None),
    ("POST", "/v2/credential_connections/{id}/actions/check_registration_status", "credential_connection", None),
    ("GET", "/v2/ip_connections/{id}", "ip_connection", None),
    ("PATCH", "/v2/ip_connections/{id}", "ip_connection", Some(r#"{"connection_name": "taken over"}"#)),
    ("DELETE", "/v2/ip_connections/{id}", "ip_connection", None),
    ("GET", "/v2/fqdn_connections/{id}", "fqdn_connection", None),
    ("PATCH", "/v2/fqdn_connections/{id}", "fqdn_connection", Some(r#"{"connection_name": "taken over"}"#)),
    ("DELETE", "/v2/fqdn_connections/{id}", "fqdn_connection", None),
    ("GET", "/v2/uac_connections/{id}", "uac_connection", None),
    ("PATCH", "/v2/uac_connections/{id}", "uac_connection", Some(r#"{"connection_name": "taken over"}"#)),
    ("DELETE", "/v2/uac_connections/{id}", "uac_connection", None),
    ("POST", "/v2/uac_connections/{id}/actions/check_registration_status", "uac_connection", None),
    ("GET", "/v2/connections/{id}", "connection", None),
    ("GET", "/v2/connections/{id}/active_calls", "connection", None),
    ("GET", "/v2/ips/{id}", "ip", None),
    ("PATCH", "/v2/ips/{id}", "ip", Some(r#"{"ip_address": "198.51.100.200"}"#)),
    ("DELETE", "/v2/ips/{id}", "ip", None),
    ("GET", "/v2/fqdns/{id}", "fqdn", None),
    ("PATCH", "/v2/fqdns/{id}", "fqdn", Some(r#"{"fqdn": "taken-over.example.com"}"#)),
    ("DELETE", "/v2/fqdns/{id}", "fqdn", None),
    ("GET", "/v2/phone_numbers/{id}", "phone_number", None),
    ("PATCH", "/v2/phone_numbers/{id}", "phone_number", Some(r#"{"customer_reference": "taken over"}"#)),
    ("DELETE", "/v2/phone_numbers/{id}", "phone_number", None),
    ("GET", "/v2/phone_numbers/{id}/voice", "phone_number", None),
    ("PATCH", "/v2/phone_numbers/{id}/voice", "phone_number", Some(r#"{"tech_prefix_enabled": true}"#)),
    // Dynamic emergency addresses and endpoints have no PATCH (the contract has none).
    ("GET", "/v2/dynamic_emergency_addresses/{id}", "dynamic_emergency_address", None),
    ("DELETE", "/v2/dynamic_emergency_addresses/{id}", "dynamic_emergency_address", None),
    ("GET", "/v2/dynamic_emergency_endpoints/{id}", "dynamic_emergency_endpoint", None),
    ("DELETE", "/v2/dynamic_emergency_endpoints/{id}", "dynamic_emergency_endpoint", None),
];

/// Every list an account reads. `{a:KIND}` is A's id of that kind: B filtering by A's ids must
/// still see only B's. Each list without a query is also read with `filter[account_id]` A.
const LISTS: &[&str] = &[
    "/v2/accounts",
    "/v2/outbound_voice_profiles",
    "/v2/credential_connections",
    "/v2/ip_connections",
    "/v2/fqdn_connections",
    "/v2/uac_connections",
    "/v2/connections",
    "/v2/ips",
    "/v2/fqdns",
    "/v2/phone_numbers",
    "/v2/phone_numbers/voice",
    "/v2/dynamic_emergency_addresses",
    "/v2/dynamic_emergency_endpoints",
    "/v2/connections?filter[outbound_voice_profile_id]={a:outbound_voice_profile}",
    "/v2/credential_connections?filter[outbound_voice_profile_id]={a:outbound_voice_profile}",
    "/v2/connections?filter[fqdn]=alpha.example.com",
    "/v2/fqdn_connections?filter[fqdn]=alpha.example.com",
    "/v2/connections?filter[connection_name][contains]=alpha",
    "/v2/ips?filter[connection_id]={a:ip_connection}",
    "/v2/ips?filter[ip_address]=192.0.2.10",
    "/v2/fqdns?filter[connection_id]={a:fqdn_connection}",
    "/v2/fqdns?filter[fqdn]=alpha.example.com",
    "/v2/phone_numbers?filter[connection_id]={a:credential_connection}",
    "/v2/phone_numbers?filter[phone_number]=3035551100",
    "/v2/phone_numbers/voice?filter[phone_number]=3035551100",
    "/v2/dynamic_emergency_endpoints?filter[country_code]=US",
    "/v2/accounts?filter[name][contains]=alpha",
];

/// A request of B's own (or the operator's for B) naming one of A's resources: `{ref}` in the
/// body is A's id of kind `refers_to`; `{own:KIND}` is B's id of that kind. It must be refused
/// with `status`, one fault at `pointer`, exactly as the same request naming a missing id.
struct Cross {
    operator: bool,
    method: &'static str,
    path: &'static str,
    body: &'static str,
    refers_to: &'static str,
    status: u16,
    pointer: &'static str,
}

const fn b(method: &'static str, path: &'static str, body: &'static str, refers_to: &'static str) -> Cross {
    Cross { operator: false, method, path, body, refers_to, status: 422, pointer: "" }
}

impl Cross {
    const fn at(self, pointer: &'static str) -> Cross {
        Cross { pointer, ..self }
    }
    const fn by_operator(self) -> Cross {
        Cross { operator: true, ..self }
    }
}

const OVP_REF: &str = "/outbound/outbound_voice_profile_id";

const CROSS: &[Cross] = &[
    // A connection of B's with A's outbound voice profile.
    b(
        "POST",
        "/v2/credential_connections",
        r#"{"connection_name": "bravo ref", "user_name": "bravoref1", "password": "bravo-password-2",
            "outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "POST",
        "/v2/ip_connections",
        r#"{"connection_name": "bravo ref", "outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "POST",
        "/v2/fqdn_connections",
        r#"{"connection_name": "bravo ref", "outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "POST",
        "/v2/uac_connections",
        r#"{"connection_name": "bravo ref", "outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "PATCH",
        "/v2/credential_connections/{own:credential_connection}",
        r#"{"outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "PATCH",
        "/v2/ip_connections/{own:ip_connection}",
        r#"{"outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "PATCH",
        "/v2/fqdn_connections/{own:fqdn_connection}",
        r#"{"outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    b(
        "PATCH",
        "/v2/uac_connections/{own:uac_connection}",
        r#"{"outbound": {"outbound_voice_profile_id": "{ref}"}}"#,
        "outbound_voice_profile",
    )
    .at(OVP_REF),
    // B's connections' default IP / FQDN set to A's.
    b("PATCH", "/v2/ip_connections/{own:ip_connection}", r#"{"inbound": {"default_primary_ip_id": "{ref}"}}"#, "ip")
        .at("/inbound/default_primary_ip_id"),
    b(
        "PATCH",
        "/v2/fqdn_connections/{own:fqdn_connection}",
        r#"{"inbound": {"default_primary_fqdn_id": "{ref}"}}"#,
        "fqdn",
    )
    .at("/inbound/default_primary_fqdn_id"),
    // B's IP / FQDN on A's connection.
    b("POST", "/v2/ips", r#"{"connection_id": "{ref}", "ip_address": "192.0.2.99"}"#, "ip_connection")
        .at("/connection_id"),
    b("PATCH", "/v2/ips/{own:ip}", r#"{"connection_id": "{ref}", "ip_address": "192.0.2.21"}"#, "ip_connection")
        .at("/connection_id"),
    b(
        "POST",
        "/v2/fqdns",
        r#"{"connection_id": "{ref}", "fqdn": "bravo-ref.example.com", "dns_record_type": "a"}"#,
        "fqdn_connection",
    )
    .at("/connection_id"),
    b("PATCH", "/v2/fqdns/{own:fqdn}", r#"{"connection_id": "{ref}"}"#, "fqdn_connection").at("/connection_id"),
    // B's endpoint at A's address.
    b(
        "POST",
        "/v2/dynamic_emergency_endpoints",
        r#"{"dynamic_emergency_address_id": "{ref}", "callback_number": "+13125550001", "caller_name": "bravo ref"}"#,
        "dynamic_emergency_address",
    )
    .at("/dynamic_emergency_address_id"),
    // B's number to A's connection (each type), by B and by the operator.
    b("PATCH", "/v2/phone_numbers/{own:phone_number}", r#"{"connection_id": "{ref}"}"#, "connection")
        .at("/connection_id"),
    b("PATCH", "/v2/phone_numbers/{own:phone_number}", r#"{"connection_id": "{ref}"}"#, "connection")
        .at("/connection_id")
        .by_operator(),
    b(
        "POST",
        "/v2/phone_numbers",
        r#"{"phone_number": "+13035550299", "account_id": "{own:account}", "connection_id": "{ref}"}"#,
        "connection",
    )
    .at("/connection_id")
    .by_operator(),
    // B creating in A's account, or moving its own resources there.
    b("POST", "/v2/outbound_voice_profiles", r#"{"name": "bravo ref", "account_id": "{ref}"}"#, "account")
        .at("/account_id"),
    b(
        "POST",
        "/v2/credential_connections",
        r#"{"connection_name": "bravo ref", "user_name": "bravoref2", "password": "bravo-password-3",
            "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b("POST", "/v2/ip_connections", r#"{"connection_name": "bravo ref", "account_id": "{ref}"}"#, "account")
        .at("/account_id"),
    b("POST", "/v2/fqdn_connections", r#"{"connection_name": "bravo ref", "account_id": "{ref}"}"#, "account")
        .at("/account_id"),
    b("POST", "/v2/uac_connections", r#"{"connection_name": "bravo ref", "account_id": "{ref}"}"#, "account")
        .at("/account_id"),
    b(
        "POST",
        "/v2/ips",
        r#"{"connection_id": "{own:ip_connection}", "ip_address": "192.0.2.98", "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b(
        "POST",
        "/v2/fqdns",
        r#"{"connection_id": "{own:fqdn_connection}", "fqdn": "bravo-ref.example.com", "dns_record_type": "a",
            "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b(
        "POST",
        "/v2/dynamic_emergency_addresses",
        r#"{"house_number": "1", "street_name": "Main", "locality": "Chicago", "administrative_area": "IL",
            "postal_code": "60612", "country_code": "US", "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b(
        "POST",
        "/v2/dynamic_emergency_endpoints",
        r#"{"dynamic_emergency_address_id": "{own:dynamic_emergency_address}", "callback_number": "+13125550002",
            "caller_name": "bravo ref", "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b(
        "PATCH",
        "/v2/outbound_voice_profiles/{own:outbound_voice_profile}",
        r#"{"name": "x y z", "account_id": "{ref}"}"#,
        "account",
    )
    .at("/account_id"),
    b("PATCH", "/v2/ip_connections/{own:ip_connection}", r#"{"account_id": "{ref}"}"#, "account").at("/account_id"),
    b("PATCH", "/v2/ips/{own:ip}", r#"{"ip_address": "192.0.2.21", "account_id": "{ref}"}"#, "account")
        .at("/account_id"),
    b("PATCH", "/v2/fqdns/{own:fqdn}", r#"{"account_id": "{ref}"}"#, "account").at("/account_id"),
    b("PATCH", "/v2/phone_numbers/{own:phone_number}", r#"{"account_id": "{ref}"}"#, "account").at("/account_id"),
];

/// The operator's endpoints, which an account's key may not use even on its own account
/// (403, code 10010). `{carrier}` and `{rate_deck}` are the operator's; a row whose collection
/// the router does not have (rate decks, until they land) is skipped.
const OPERATOR_ONLY: &[(&str, &str, Option<&str>)] = &[
    ("POST", "/v2/accounts", Some(r#"{"name": "mallory"}"#)),
    ("PATCH", "/v2/accounts/{own:account}", Some(r#"{"concurrent_call_limit": 999}"#)),
    ("DELETE", "/v2/accounts/{own:account}", None),
    ("POST", "/v2/phone_numbers", Some(r#"{"phone_number": "+13035550300", "account_id": "{own:account}"}"#)),
    ("DELETE", "/v2/phone_numbers/{own:phone_number}", None),
    ("GET", "/v2/carriers", None),
    ("POST", "/v2/carriers", Some(r#"{"name": "mallory", "gateways": [{"host": "gw.mallory.example"}]}"#)),
    ("GET", "/v2/carriers/{carrier}", None),
    ("PATCH", "/v2/carriers/{carrier}", Some(r#"{"enabled": false}"#)),
    ("DELETE", "/v2/carriers/{carrier}", None),
    ("GET", "/v2/rate_decks", None),
    ("POST", "/v2/rate_decks", Some(r#"{"name": "mallory"}"#)),
    ("GET", "/v2/rate_decks/{rate_deck}", None),
    ("PATCH", "/v2/rate_decks/{rate_deck}", Some(r#"{"name": "mallory"}"#)),
    ("DELETE", "/v2/rate_decks/{rate_deck}", None),
    ("GET", "/v2/rate_decks/{rate_deck}/rates", None),
    ("PUT", "/v2/rate_decks/{rate_deck}/rates", Some(r#"{"rates": [{"prefix": "1", "rate": "0.5"}]}"#)),
];

// ---------------------------------------------------------------------------------------------

/// One request; the status and the body's exact text.
async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).expect("a UTF-8 body"))
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A created resource's `data`, after checking the status.
async fn create(app: &axum::Router, key: &str, uri: &str, body: Value, status: StatusCode) -> Value {
    let (st, text) = send(app, "POST", uri, Some(key), Some(&body.to_string())).await;
    assert_eq!(st, status, "POST {uri}: {text}");
    parse(&text)["data"].clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// `{name}` placeholders of `template` replaced; every placeholder must be known.
fn fill(template: &str, vars: &[(String, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    let unfilled = out.match_indices('{').find_map(|(i, _)| {
        let rest = &out[i + 1..];
        let name = &rest[..rest.find('}')?];
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b':')).then_some(name)
    });
    assert!(unfilled.is_none(), "unknown placeholder {unfilled:?} in {template}");
    out
}

fn var(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// An id of the same shape as `like` (19 digits, or a UUID) that no resource has.
fn missing_like(like: &str) -> String {
    let r = || RandomState::new().hash_one(0u8);
    if like.contains('-') {
        let h = format!("{:016x}{:016x}", r(), r());
        format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
    } else {
        (r() % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000).to_string()
    }
}

/// An account with one resource of every kind an account has.
struct Tenant {
    key: String,
    ids: BTreeMap<&'static str, String>,
    /// What identifies A's data in a response besides its ids.
    marks: Vec<String>,
}

impl Tenant {
    /// Its ids of `kind` (`connection`: one of each connection type).
    fn ids(&self, kind: &str) -> Vec<&str> {
        let kinds: Vec<&str> = if kind == "connection" { CONNECTIONS.to_vec() } else { vec![kind] };
        kinds.into_iter().map(|k| self.ids.get(k).unwrap_or_else(|| panic!("no {k} in the tenant")).as_str()).collect()
    }

    /// `{PREFIX:KIND}` for each of its ids.
    fn vars(&self, prefix: &str) -> Vec<(String, String)> {
        self.ids.iter().map(|(k, v)| (format!("{prefix}:{k}"), v.clone())).collect()
    }
}

/// Account `name` (`alpha`, `bravo`) with its resources; `n` keeps numbers and addresses apart.
async fn tenant(app: &axum::Router, name: &str, n: u8) -> Tenant {
    let account = create(app, OPERATOR, "/v2/accounts", json!({"name": name}), StatusCode::CREATED).await;
    let key = account["api_key"].as_str().unwrap().to_owned();
    let mut ids = BTreeMap::new();
    ids.insert("account", id(&account));
    let k = key.as_str();

    let ovp =
        create(app, k, "/v2/outbound_voice_profiles", json!({"name": format!("{name} profile")}), StatusCode::OK).await;
    let outbound = json!({"outbound_voice_profile_id": id(&ovp)});
    ids.insert("outbound_voice_profile", id(&ovp));
    let credential = json!({
        "connection_name": format!("{name} credential"),
        "user_name": format!("{name}cred1"),
        "password": format!("{name}-password-1"),
        "outbound": outbound,
    });
    let c = create(app, k, "/v2/credential_connections", credential, StatusCode::CREATED).await;
    ids.insert("credential_connection", id(&c));
    let ip = json!({"connection_name": format!("{name} ip"), "outbound": outbound});
    let c = create(app, k, "/v2/ip_connections", ip, StatusCode::CREATED).await;
    ids.insert("ip_connection", id(&c));
    let fqdn = json!({"connection_name": format!("{name} fqdn"), "outbound": outbound});
    let c = create(app, k, "/v2/fqdn_connections", fqdn, StatusCode::CREATED).await;
    ids.insert("fqdn_connection", id(&c));
    let uac = json!({
        "connection_name": format!("{name} uac"),
        "outbound": outbound,
        "external_uac_settings": {"proxy": format!("pbx.{name}.example"), "username": format!("{name}ext"),
            "password": format!("{name}-secret-1")},
    });
    let c = create(app, k, "/v2/uac_connections", uac, StatusCode::CREATED).await;
    ids.insert("uac_connection", id(&c));

    let address = format!("192.0.2.{n}0");
    let body = json!({"connection_id": ids["ip_connection"], "ip_address": address});
    ids.insert("ip", id(&create(app, k, "/v2/ips", body, StatusCode::CREATED).await));
    let body =
        json!({"connection_id": ids["fqdn_connection"], "fqdn": format!("{name}.example.com"), "dns_record_type": "a"});
    ids.insert("fqdn", id(&create(app, k, "/v2/fqdns", body, StatusCode::CREATED).await));

    let number = format!("+1303555{n}100");
    let body =
        json!({"phone_number": number, "account_id": ids["account"], "connection_id": ids["credential_connection"]});
    ids.insert("phone_number", id(&create(app, OPERATOR, "/v2/phone_numbers", body, StatusCode::CREATED).await));

    let body = json!({
        "house_number": format!("{n}901"), "street_pre_directional": "W", "street_name": "MADISON",
        "street_suffix": "ST", "locality": "CHICAGO", "administrative_area": "IL", "postal_code": "60612",
        "country_code": "US",
    });
    let a = create(app, k, "/v2/dynamic_emergency_addresses", body, StatusCode::CREATED).await;
    ids.insert("dynamic_emergency_address", id(&a));
    let body = json!({"dynamic_emergency_address_id": id(&a), "callback_number": "+13125550000", "caller_name": format!("{name} caller")});
    let e = create(app, k, "/v2/dynamic_emergency_endpoints", body, StatusCode::CREATED).await;
    ids.insert("dynamic_emergency_endpoint", id(&e));

    let mut marks: Vec<String> = ids.values().cloned().collect();
    marks.extend([name.to_owned(), number, address]);
    for v in [&a, &e] {
        for token in ["sip_geolocation_id", "sip_from_id"] {
            marks.extend(v[token].as_str().map(str::to_owned));
        }
    }
    Tenant { key, ids, marks }
}

/// What `t`'s key reads: every GET route of [`BY_ID`] on its ids, and its lists.
async fn view(app: &axum::Router, t: &Tenant) -> Vec<(String, StatusCode, String)> {
    let mut out = Vec::new();
    let mut uris: Vec<String> = LISTS.iter().filter(|l| !l.contains('?')).map(|l| (*l).to_owned()).collect();
    for (method, path, kind, _) in BY_ID {
        if *method == "GET" {
            uris.extend(t.ids(kind).into_iter().map(|id| fill(path, &[var("id", id)])));
        }
    }
    for uri in uris {
        let (st, body) = send(app, "GET", &uri, Some(&t.key), None).await;
        out.push((uri, st, body));
    }
    out
}

fn pointers(body: &str) -> Vec<String> {
    parse(body)["errors"]
        .as_array()
        .map(|e| e.iter().map(|e| e["source"]["pointer"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

/// Every scalar value in `v`, as text (strings without their quotes).
fn scalars(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(scalars).collect(),
        Value::Object(o) => o.values().flat_map(scalars).collect(),
        Value::String(s) => vec![s.clone()],
        other => vec![other.to_string()],
    }
}

async fn apps() -> Vec<(&'static str, axum::Router)> {
    ["sqlite", "postgres"].into_iter().zip(common::apps().await).collect()
}

#[tokio::test]
async fn another_accounts_resources_are_out_of_reach() {
    for (backend, app) in apps().await {
        let app = &app;
        let mut faults: Vec<String> = Vec::new();
        let a = tenant(app, "alpha", 1).await;
        let b = tenant(app, "bravo", 2).await;

        // The operator's own resources, for the operator-only rows. Rate decks may be absent.
        let carrier = json!({"name": "upstream", "gateways": [{"host": "sip.upstream.example"}]});
        let carrier = id(&create(app, OPERATOR, "/v2/carriers", carrier, StatusCode::CREATED).await);
        let mut ops = vec![var("carrier", &carrier)];
        let (st, deck) = send(app, "POST", "/v2/rate_decks", Some(OPERATOR), Some(r#"{"name": "tenancy deck"}"#)).await;
        let rate_decks = st != StatusCode::NOT_FOUND;
        if rate_decks {
            assert_eq!(st, StatusCode::CREATED, "{deck}");
            ops.push(var("rate_deck", &id(&parse(&deck)["data"])));
        }
        let mut b_vars = b.vars("own");
        b_vars.extend(ops);
        let every_id: Vec<&String> = a.ids.values().chain(b.ids.values()).collect();

        let a_before = view(app, &a).await;
        for (uri, st, body) in &a_before {
            assert_eq!(*st, StatusCode::OK, "A reads its own {uri}: {body}");
        }

        // Every route naming one of A's resources, with B's key: exactly a missing id's answer.
        // DELETEs last, so a leaking one cannot hide the other rows' results.
        for deletes in [false, true] {
            for (method, path, kind, body) in BY_ID.iter().filter(|r| (r.0 == "DELETE") == deletes) {
                for (a_id, b_id) in a.ids(kind).into_iter().zip(b.ids(kind)) {
                    let missing = missing_like(a_id);
                    assert!(!every_id.contains(&&missing));
                    let uri = fill(path, &[var("id", a_id)]);
                    let (st, got) = send(app, method, &uri, Some(&b.key), *body).await;
                    let (mst, want) = send(app, method, &fill(path, &[var("id", &missing)]), Some(&b.key), *body).await;
                    if mst != StatusCode::NOT_FOUND || parse(&want)["errors"][0]["code"] != "10005" {
                        faults.push(format!("{backend}: {method} {path} on a missing id answers {mst} {want}"));
                    }
                    if (st, &got) != (mst, &want) {
                        faults.push(format!(
                            "{backend}: LEAK {method} {path} with B's key on A's {kind} {a_id}: {st} {got} \
                             (a missing id: {mst} {want})"
                        ));
                    }
                    // The same request on B's own resource works, so the 404 is not a bad body.
                    if !deletes {
                        let own = fill(path, &[var("id", b_id)]);
                        let (mut cst, mut c) = send(app, method, &own, Some(&b.key), *body).await;
                        if cst == StatusCode::FORBIDDEN {
                            (cst, c) = send(app, method, &own, Some(OPERATOR), *body).await;
                        }
                        if !cst.is_success() {
                            faults.push(format!("{backend}: {method} {path} on B's own {kind}: {cst} {c}"));
                        }
                    }
                }
            }
        }

        // B's lists, even filtered by A's ids or account, show nothing of A's.
        let a_vars = a.vars("a");
        let mut lists: Vec<String> = LISTS.iter().map(|l| fill(l, &a_vars)).collect();
        for l in LISTS.iter().filter(|l| !l.contains('?')) {
            lists.push(format!("{l}?filter[account_id]={}&page[size]=250", a.ids["account"]));
        }
        for uri in &lists {
            let (st, body) = send(app, "GET", uri, Some(&b.key), None).await;
            if st != StatusCode::OK {
                faults.push(format!("{backend}: GET {uri} with B's key: {st} {body}"));
            }
            // Values only: a field name may contain a mark (`country_iso_alpha2` holds "alpha").
            let values = match parse(&body) {
                Value::Null => vec![body.clone()],
                v => scalars(&v),
            };
            for mark in a.marks.iter().filter(|m| values.iter().any(|v| v.contains(m.as_str()))) {
                faults.push(format!("{backend}: LEAK GET {uri} with B's key shows A's {mark:?}: {body}"));
            }
            if !uri.contains('?') && parse(&body)["data"].as_array().is_none_or(Vec::is_empty) {
                faults.push(format!("{backend}: GET {uri} with B's key does not show B's own: {body}"));
            }
        }

        // B's requests naming A's resources: refused like a missing id, nothing stored.
        let b_lists: Vec<&str> = LISTS.iter().copied().filter(|l| !l.contains('?')).collect();
        let b_state = async || {
            let mut out = Vec::new();
            for l in &b_lists {
                out.push(send(app, "GET", l, Some(&b.key), None).await);
            }
            out
        };
        let mut observed = Vec::new();
        for c in CROSS {
            let key = if c.operator { OPERATOR } else { b.key.as_str() };
            let who = if c.operator { "the operator for B" } else { "B" };
            let uri = fill(c.path, &b_vars);
            for a_id in a.ids(c.refers_to) {
                let missing = missing_like(a_id);
                let body = |r: &str| {
                    let mut vars = b_vars.clone();
                    vars.push(var("ref", r));
                    fill(c.body, &vars)
                };
                let before = b_state().await;
                let (st, got) = send(app, c.method, &uri, Some(key), Some(&body(a_id))).await;
                let (mst, want) = send(app, c.method, &uri, Some(key), Some(&body(&missing))).await;
                let after = b_state().await;
                let what = format!("{backend}: {who}: {} {} naming A's {} {a_id}", c.method, c.path, c.refers_to);
                let by = if c.operator { " (operator)" } else { "" };
                observed.push(format!("{} {}{by} naming A's {}: {}", c.method, c.path, c.refers_to, st.as_u16()));
                if st.is_success() {
                    faults.push(format!("{what}: LEAK, accepted: {st} {got}"));
                } else if st.as_u16() != c.status || pointers(&got) != [c.pointer] {
                    faults.push(format!("{what}: expected {} at {}, got {st} {got}", c.status, c.pointer));
                }
                if (st, &got) != (mst, &want) {
                    faults.push(format!("{what}: LEAK, answered {st} {got} but for a missing id {mst} {want}"));
                }
                if before != after {
                    faults.push(format!("{what}: B's resources changed"));
                }
            }
        }
        observed.dedup();
        println!("{backend}: cross references refused with:\n  {}", observed.join("\n  "));
        println!("{backend}: rate decks {}", if rate_decks { "present: checked" } else { "absent: skipped" });

        // The operator's endpoints: 403 for an account's key, nothing changed.
        let ops_view = async || {
            let mut out = Vec::new();
            for uri in [format!("/v2/carriers/{carrier}"), format!("/v2/accounts/{}", b.ids["account"])] {
                out.push(send(app, "GET", &uri, Some(OPERATOR), None).await);
            }
            out.push(send(app, "GET", "/v2/accounts", Some(OPERATOR), None).await);
            out.push(send(app, "GET", "/v2/carriers", Some(OPERATOR), None).await);
            if rate_decks {
                out.push(send(app, "GET", "/v2/rate_decks", Some(OPERATOR), None).await);
            }
            out
        };
        let before = ops_view().await;
        let present = |path: &str| rate_decks || !path.starts_with("/v2/rate_decks");
        for (method, path, body) in OPERATOR_ONLY.iter().filter(|r| present(r.1)) {
            let body = body.map(|t| fill(t, &b_vars));
            let (st, got) = send(app, method, &fill(path, &b_vars), Some(&b.key), body.as_deref()).await;
            if st != StatusCode::FORBIDDEN || parse(&got)["errors"][0]["code"] != "10010" {
                faults.push(format!("{backend}: {method} {path} with B's key: {st} {got} (expected 403, 10010)"));
            }
        }
        if ops_view().await != before {
            faults.push(format!("{backend}: an account's key changed the operator's resources"));
        }

        // Without a key, or with a wrong one: 401, code 10009, on every route of every table.
        let mut routes: Vec<(String, String, Option<String>)> = Vec::new();
        for (method, path, kind, body) in BY_ID {
            for a_id in a.ids(kind) {
                routes.push(((*method).into(), fill(path, &[var("id", a_id)]), body.map(str::to_owned)));
            }
        }
        routes.extend(lists.iter().map(|l| ("GET".to_owned(), l.clone(), None)));
        for c in CROSS {
            let mut vars = b_vars.clone();
            vars.push(var("ref", a.ids(c.refers_to)[0]));
            routes.push((c.method.into(), fill(c.path, &vars), Some(fill(c.body, &vars))));
        }
        for (method, path, body) in OPERATOR_ONLY.iter().filter(|r| present(r.1)) {
            routes.push(((*method).into(), fill(path, &b_vars), body.map(|t| fill(t, &b_vars))));
        }
        for (method, uri, body) in &routes {
            for key in [None, Some("KEYnot-a-key-of-anyone")] {
                let (st, got) = send(app, method, uri, key, body.as_deref()).await;
                if st != StatusCode::UNAUTHORIZED || parse(&got)["errors"][0]["code"] != "10009" {
                    faults.push(format!("{backend}: {method} {uri} with key {key:?}: {st} {got}"));
                }
            }
        }

        // A reads exactly what it read before.
        let a_after = view(app, &a).await;
        for (before, after) in a_before.iter().zip(&a_after) {
            if before != after {
                faults.push(format!(
                    "{backend}: A's {} changed: {} {} -> {} {}",
                    before.0, before.1, before.2, after.1, after.2
                ));
            }
        }

        assert!(faults.is_empty(), "{} tenancy fault(s):\n{}", faults.len(), faults.join("\n"));
    }
}
