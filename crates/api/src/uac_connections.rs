//! `/v2/uac_connections`: connections where the platform is the SIP client. It registers toward
//! the customer's PBX (`external_uac_settings`: its `proxy`, the `username`/`password` the PBX
//! expects, `auth_username`, `from_user`, `outbound_proxy`, `transport`, `expiration_sec`) and
//! sends calls there, instead of the PBX registering to the platform. Follows the contract's
//! `UacConnection` field for field; the shared fields, rules and handlers are in
//! [`crate::connections_common`]:
//!
//! - Create answers 201, delete 200 with the deleted connection. Only `connection_name` is
//!   required. Defaults are the create schema's (`default_on_hold_comfort_noise_enabled`
//!   false, `sip_uri_calling_preference` `disabled` as for credential connections);
//!   `external_uac_settings` starts with its nullable fields null and `proxy`, `username`,
//!   `password` absent; `internal_uac_settings` starts empty.
//! - `webhook_api_version` `texml` is accepted on create only (the update schema lists `1` and
//!   `2`), and only with `outbound.call_parking_enabled` true.
//! - `user_name`/`password` (top level) are SIP credentials toward the platform, kept exactly as
//!   credential connections keep theirs (only the SIP digest is stored; the password is shown
//!   only by the response to the request that sets it; the user name is unique on the platform
//!   with every other SIP user name). Both optional, but together
//!   ([`cc::set_optional_sip_digest`]).
//! - Response fields the platform derives: `authentication` is `uac-authentication` and
//!   `fqdn_outbound_authentication` `credential-authentication` (the contract's only values);
//!   `fqdns` is empty and `fqdn`, `inbound.sip_subdomain` and
//!   `inbound.sip_subdomain_receive_settings` are absent, since the platform manages no DNS
//!   names for UAC connections yet; `registration_status` and `registration_status_updated_at`
//!   are null (no registration has been attempted). Nothing is invented.
//! - `external_uac_settings.username`: 4 to 32 characters, letters, digits, hyphens and
//!   underscores, starting with a letter or digit (the contract). `auth_username` and
//!   `from_user`: the user part of a SIP URI. `proxy` and `outbound_proxy`: a host name, IPv4
//!   address or `[IPv6]` address, with an optional `:port`. `expiration_sec`: 1 to 2^32-1
//!   (RFC 3261's range). `internal_uac_settings.destination_uri`: `userinfo@host` without
//!   `sip:`, the user info letters, digits, hyphens and underscores (the contract names
//!   Telnyx's own SIP domains; a self-hosted platform has its own, so any host name is taken).
//! - `POST /v2/uac_connections/{id}/actions/check_registration_status` answers the contract's
//!   `Registration Status` with `Not Registered` and the external `username` as `sip_username`
//!   (left out when unset): no registration client runs yet.
//!
//! # The external password is kept in plain text
//!
//! Unlike every other password here, `external_uac_settings.password` is not the platform's to
//! check but to *use*: the platform answers the PBX's digest challenge with it. A digest HA1
//! cannot be kept instead, because it is made with the realm, which the PBX chooses and names
//! only in its challenge; any form the platform can use is therefore reversible. A reversible
//! form whose key sits in the same database protects nothing, and the API has no secret of its
//! own yet (no key outside the database that it and the SIP engine share). So the password is
//! stored as written, but only in the private field `_external_uac_password` of the document,
//! never in `external_uac_settings` and never shown after the response to the request that
//! sets it (as the contract's example shows it there). Null clears it. Encrypting it with a
//! platform key held outside the database is the step to take once such a key exists; the
//! private field is the one place to change.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::connections_common::{self as cc, ConnectionType, Spec, Specs};
use crate::fields::Fields;
use crate::{ApiError, ApiState, Caller};

/// The private field holding `external_uac_settings.password` (see the module documentation).
pub const EXTERNAL_PASSWORD_FIELD: &str = "_external_uac_password";

/// The user part of a SIP URI (RFC 3261 `user`): letters, digits, `-_.!~*'()&=+$,;?/` and
/// `%HH` escapes.
pub fn is_sip_user_part(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => i += 3,
            c if c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c) => i += 1,
            _ => return false,
        }
    }
    !s.is_empty()
}

/// A host name: dot-separated DNS labels (one is enough), a final dot allowed, 253 in all.
pub fn is_host_name(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    (1..=253).contains(&name.len()) && name.split('.').all(cc::is_dns_label)
}

fn is_port(s: &str) -> bool {
    !s.starts_with('0') && s.parse::<u16>().is_ok_and(|p| p > 0)
}

/// `host[:port]`: a host name, an IPv4 address or a bracketed IPv6 address, and an optional
/// port from 1 to 65535.
pub fn is_host_port(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(is_port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    port.is_none_or(is_port) && (host.parse::<std::net::Ipv4Addr>().is_ok() || is_host_name(host))
}

/// `UacExternalSettings.username`: letters, digits, hyphens and underscores, starting with a
/// letter or digit.
pub fn is_uac_username(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `UacInternalSettings.destination_uri`: `userinfo@host`, no scheme.
pub fn is_destination_uri(s: &str) -> bool {
    let Some((user, host)) = s.split_once('@') else { return false };
    !user.is_empty() && user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') && is_host_name(host)
}

const SIP_USER_DETAIL: &str = "Must be the user part of a SIP URI (letters, digits and -_.!~*'()&=+$,;?/), or null.";
const HOST_DETAIL: &str =
    "Must be a host name or IP address with an optional :port, such as \"sip-pbx.example.com:5061\".";

const EXTERNAL: &[Spec] = &[
    Spec::nullable_text("auth_username", 1, 64, is_sip_user_part, SIP_USER_DETAIL, None),
    Spec::nullable_int("expiration_sec", 1, 4_294_967_295),
    Spec::nullable_text("from_user", 1, 64, is_sip_user_part, SIP_USER_DETAIL, None),
    Spec::nullable_text("outbound_proxy", 1, 261, is_host_port, HOST_DETAIL, None),
    Spec::text("password", 1, 128, cc::any_text, "", None),
    Spec::text("proxy", 1, 261, is_host_port, HOST_DETAIL, None),
    Spec::nullable_one_of("transport", cc::TRANSPORT_PROTOCOLS),
    Spec::text(
        "username",
        4,
        32,
        is_uac_username,
        "Must be letters, digits, hyphens and underscores, starting with a letter or digit.",
        None,
    ),
];
const INTERNAL: &[Spec] = &[Spec::text(
    "destination_uri",
    3,
    255,
    is_destination_uri,
    "Must be userinfo@host without sip: (user info: letters, digits, hyphens and underscores).",
    None,
)];

const INBOUND: Specs = &[cc::INBOUND, &[cc::SIMULTANEOUS_RINGING, cc::SIP_REGION]];
const OUTBOUND: Specs = &[cc::OUTBOUND];
const OWN: &[Spec] = &[
    Spec::object("external_uac_settings", &[EXTERNAL]),
    Spec::object("inbound", INBOUND),
    Spec::object("internal_uac_settings", &[INTERNAL]),
    Spec::object("outbound", OUTBOUND),
    cc::SIP_URI_CALLING_PREFERENCE,
    cc::USER_NAME,
    cc::PASSWORD,
];

/// The UAC connection type for the generic handlers.
pub static UAC_CONNECTION: ConnectionType = ConnectionType {
    kind: "uac_connection",
    create_fields: &[cc::CONNECTION, OWN, &[cc::WEBHOOK_API_VERSION_TEXML]],
    update_fields: &[cc::CONNECTION, OWN],
    rules,
    unique: cc::sip_user_name_claims,
    unique_pointers: &[(cc::SIP_USER_NAME_SCOPE, "/user_name")],
};

fn rules(f: &mut Fields, doc: &mut Value) {
    cc::set_optional_sip_digest(f, doc);
    keep_external_password(f, doc);
    doc["authentication"] = json!("uac-authentication");
    doc["fqdn_outbound_authentication"] = json!("credential-authentication");
    if !doc["fqdns"].is_array() {
        doc["fqdns"] = json!([]);
    }
    for field in ["registration_status", "registration_status_updated_at"] {
        if doc.get(field).is_none() {
            doc[field] = Value::Null;
        }
    }
}

/// Moves a new `external_uac_settings.password` to the private field; null (on the password,
/// or on the whole object) clears it.
fn keep_external_password(f: &Fields, doc: &mut Value) {
    let sent = f.value("external_uac_settings");
    let cleared = sent.is_some_and(Value::is_null) || sent.and_then(|v| v.get("password")).is_some_and(Value::is_null);
    let given = doc.get_mut("external_uac_settings").and_then(Value::as_object_mut).and_then(|o| o.remove("password"));
    match (given, doc.as_object_mut()) {
        (Some(p), Some(o)) => {
            o.insert(EXTERNAL_PASSWORD_FIELD.into(), p);
        }
        (None, Some(o)) if cleared => {
            o.remove(EXTERNAL_PASSWORD_FIELD);
        }
        _ => {}
    }
}

/// The external password a request sets, to show in its response.
fn sent_external_password(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("external_uac_settings")?.get("password").filter(|p| p.is_string()).cloned()
}

fn show_external_password(data: &mut Value, password: Option<Value>) {
    if let (Some(p), Some(settings)) = (password, data.get_mut("external_uac_settings").and_then(Value::as_object_mut))
    {
        settings.insert("password".into(), p);
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/uac_connections", get(list).post(create))
        .route("/uac_connections/{id}", get(show).patch(update).delete(remove))
        .route("/uac_connections/{id}/actions/check_registration_status", post(check_registration_status))
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    cc::list_connections(&*s.store, &caller, &[UAC_CONNECTION.kind], q.as_deref()).await.map(Json)
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, Json(mut v)) = cc::create(&UAC_CONNECTION, &s, &caller, &body).await?;
    show_external_password(&mut v["data"], sent_external_password(&body));
    Ok((status, Json(v)))
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    cc::show(&UAC_CONNECTION, &s, &caller, &id).await
}

async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Json(mut v) = cc::update(&UAC_CONNECTION, &s, &caller, &id, &body).await?;
    show_external_password(&mut v["data"], sent_external_password(&body));
    Ok(Json(v))
}

async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    cc::remove(&UAC_CONNECTION, &s, &caller, &id).await
}

async fn check_registration_status(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, doc) = cc::fetch(&*s.store, &caller, UAC_CONNECTION.kind, &id).await?;
    let username = doc["external_uac_settings"]["username"].as_str();
    let mut status = crate::registration_status::status_of(&s, &id, username.unwrap_or_default()).await?;
    if username.is_none()
        && let Some(o) = status.as_object_mut()
    {
        o.remove("sip_username");
    }
    Ok(Json(json!({ "data": status })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for ok in ["8492", "alice.smith", "a%20b", "+1-555;x=1"] {
            assert!(is_sip_user_part(ok), "{ok}");
        }
        for bad in ["", "a b", "a@b", "a:b", "a%2", "a%zz", "<a>"] {
            assert!(!is_sip_user_part(bad), "{bad}");
        }
        for ok in [
            "sip-pbx.acme.example",
            "outbound.sip-pbx.acme.example:5061",
            "pbx",
            "10.0.0.1:5060",
            "[::1]",
            "[2001:db8::1]:5061",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "sip:pbx.example.com",
            "pbx.example.com:0",
            "pbx:65536",
            "pbx:050",
            "::1",
            "[::1",
            "[x]:5060",
            "a b",
            "pbx:",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
        assert!(
            is_uac_username("ext8492")
                && is_uac_username("9_a-b")
                && !is_uac_username("_ext")
                && !is_uac_username("ext.1")
        );
        assert!(is_destination_uri("14155550123@acme.sip.telnyx.com") && is_destination_uri("a_b-1@pbx"));
        for bad in ["sip:1@acme.sip.telnyx.com", "@acme.example", "1@", "a.b@acme.example", "no-at-sign"] {
            assert!(!is_destination_uri(bad), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let d = cc::defaults(UAC_CONNECTION.create_fields);
        assert_eq!(
            d["external_uac_settings"],
            json!({"auth_username": null, "expiration_sec": null, "from_user": null, "outbound_proxy": null, "transport": null})
        );
        assert_eq!(d["internal_uac_settings"], json!({}));
        assert_eq!(d["default_on_hold_comfort_noise_enabled"], false);
        assert_eq!(d["inbound"]["sip_region"], "US");
    }
}
