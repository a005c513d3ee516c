//! `/v2/fqdn_connections`: SIP connections whose calls reach the customer at host names, the
//! connection's FQDN records (`/v2/fqdns`, see [`crate::fqdns`]). Follows the contract's
//! `FqdnConnection` field for field; the shared fields, rules and handlers are in
//! [`crate::connections_common`]:
//!
//! - Create answers 201, delete 200 with the deleted connection; deleting a connection deletes
//!   its FQDN records and detaches its phone numbers. Only `connection_name` is required.
//! - Defaults are the create schema's where they differ from the shared tables:
//!   `default_on_hold_comfort_noise_enabled` true; `inbound.default_routing_method`
//!   `sequential` (or null), `inbound.sip_subdomain` null,
//!   `inbound.sip_subdomain_receive_settings` `from_anyone`,
//!   `inbound.default_{primary,secondary,tertiary}_fqdn_id` null;
//!   `outbound.instant_ringback_enabled` false, `outbound.t38_reinvite_source` `customer`,
//!   `outbound.ip_authentication_method` `ip-authentication`, `outbound.encrypted_media` null,
//!   `outbound.timeout_1xx_secs` 3 and `outbound.timeout_2xx_secs` 90. `outbound.ani_override`,
//!   `outbound.channel_limit`, `outbound.ip_authentication_token` and `outbound.tech_prefix`
//!   have no default and are absent until set.
//! - `microsoft_teams_sbc` (default false) is accepted on create only, as the update schema
//!   has it not; it is stored, and no `*.mstsbc` FQDN is made for it.
//! - `inbound.default_*_fqdn_id` must name an FQDN record of this connection (so on create,
//!   when it has none yet, only null is accepted); checked when set or changed, fault at its
//!   pointer. Deleting the record, or moving it to another connection, sets the field back to
//!   null ([`cc::forget_default_reference`]); the contract types it as nullable, so null is shown.
//! - `inbound.sip_subdomain`: a DNS label, unique on the platform across accounts and with IP
//!   connections' ([`cc::SIP_SUBDOMAIN_SCOPE`], case ignored; 422 at its pointer when taken).
//! - `outbound.ani_override`: a number in E.164 (the contract's `x-format`), `+` optional, or
//!   empty. `outbound.tech_prefix`: exactly 4 digits (the contract). `outbound.ip_authentication_token`:
//!   12 to 48 letters, digits and hyphens (the product documentation's token requirements; the
//!   contract's 8-character example is shorter). Both are unique on the platform
//!   ([`TECH_PREFIX_SCOPE`], [`IP_AUTHENTICATION_TOKEN_SCOPE`]), the tech prefix with IP
//!   connections' too (which the platform assigns): they tell apart connections that send
//!   from the same addresses.
//! - `user_name` and `password` (an extension: the contract's `FqdnConnection` has them, its
//!   request schemas do not) are the credentials of `outbound.ip_authentication_method`
//!   `credential-authentication`, kept exactly as credential connections keep theirs: the
//!   password only as its SIP digest, shown only by the response to the request that sets it;
//!   the user name unique on the platform with every other SIP user name. Both optional, but
//!   together ([`cc::set_optional_sip_digest`]).
//! - Response fields nothing sets yet (`adjust_dtmf_timestamp`, `call_cost_enabled`,
//!   `ignore_dtmf_duration`, `ignore_mark_bit`, `rtp_pass_codecs_on_stream_change`,
//!   `send_normalized_timestamps`, `third_party_control_enabled`, `txt_name`, `txt_ttl`,
//!   `txt_value`) are absent rather than invented.
//! - `encrypted_media`'s description says it "cannot be set if the transport_protocol is TLS";
//!   that is not enforced (SRTP keys are normally exchanged over TLS), so nothing that works
//!   against the contract is refused here.
//! - The list takes the contract's `filter`/`sort`/`page`; `filter[fqdn]` matches connections
//!   that have an FQDN record equal to the value.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;
use store::Repository;

use crate::connections_common::{
    self as cc, ConnectionType, ConnectionTypeWithStore, Init, Kind, Spec, Specs, StoreCheck,
};
use crate::fields::Fields;
use crate::{ApiError, ApiState, Caller, ErrorObject};

/// The unique scope of `outbound.tech_prefix`: one per platform, shared with IP connections.
pub const TECH_PREFIX_SCOPE: &str = cc::TECH_PREFIX_SCOPE;
/// The unique scope of `outbound.ip_authentication_token`: one per platform ("globally unique
/// across all connections", the product documentation).
pub const IP_AUTHENTICATION_TOKEN_SCOPE: &str = "ip_authentication_token";
/// `OutboundFqdn.ip_authentication_method`.
pub const IP_AUTHENTICATION_METHODS: &[&str] = &["credential-authentication", "ip-authentication"];
/// The `inbound` fields that name an FQDN record of the connection.
pub const DEFAULT_FQDN_FIELDS: &[&str] =
    &["default_primary_fqdn_id", "default_secondary_fqdn_id", "default_tertiary_fqdn_id"];

/// A number in E.164 (`+` optional: 2 to 15 digits, the first not 0), or empty.
pub fn is_e164_or_blank(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    s.is_empty()
        || ((2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'))
}

/// Letters, digits and hyphens (an `X-Telnyx-Token` value).
pub fn is_ip_authentication_token(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Digits only.
pub fn is_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

const fn fqdn_id(name: &'static str) -> Spec {
    Spec::nullable_text(name, 1, 64, cc::any_text, "", None)
}

/// `InboundFqdn.default_routing_method`: one of the methods or null, `sequential` by default.
const DEFAULT_ROUTING_METHOD: Spec = Spec {
    name: "default_routing_method",
    kind: Kind::NullableEnum(cc::ROUTING_METHODS),
    init: Init::Str("sequential"),
    required: false,
};

const INBOUND: Specs = &[
    cc::INBOUND,
    &[
        fqdn_id("default_primary_fqdn_id"),
        DEFAULT_ROUTING_METHOD,
        fqdn_id("default_secondary_fqdn_id"),
        fqdn_id("default_tertiary_fqdn_id"),
        cc::SIP_REGION,
        Spec::nullable_text(
            "sip_subdomain",
            1,
            63,
            cc::is_dns_label,
            "Must be letters, digits and inner hyphens (a DNS label), or null.",
            None,
        ),
        Spec::one_of("sip_subdomain_receive_settings", cc::SIP_SUBDOMAIN_RECEIVE_VALUES, Some("from_anyone")),
    ],
];

const OUTBOUND: Specs = &[
    cc::OUTBOUND,
    &[
        Spec::text(
            "ani_override",
            0,
            16,
            is_e164_or_blank,
            "Must be a phone number in E.164 format, such as \"+12125551234\", or empty.",
            None,
        ),
        Spec::int("channel_limit", 0, 1_000_000, None),
        Spec::nullable_one_of("encrypted_media", cc::ENCRYPTED_MEDIA_VALUES),
        Spec::bool("instant_ringback_enabled", false),
        Spec::one_of("ip_authentication_method", IP_AUTHENTICATION_METHODS, Some("ip-authentication")),
        Spec::text(
            "ip_authentication_token",
            12,
            48,
            is_ip_authentication_token,
            "Must be 12 to 48 letters, digits and hyphens.",
            None,
        ),
        Spec::one_of("t38_reinvite_source", cc::T38_REINVITE_SOURCES, Some("customer")),
        Spec::text("tech_prefix", 4, 4, is_digits, "Must be exactly 4 digits.", None),
        Spec::int("timeout_1xx_secs", 1, 120, Some(3)),
        Spec::int("timeout_2xx_secs", 1, 600, Some(90)),
    ],
];

const OWN: &[Spec] = &[
    Spec::bool("default_on_hold_comfort_noise_enabled", true),
    Spec::object("inbound", INBOUND),
    Spec::object("outbound", OUTBOUND),
    cc::TRANSPORT_PROTOCOL,
    cc::USER_NAME,
    cc::PASSWORD,
];

const CREATE_ONLY: &[Spec] = &[Spec::bool("microsoft_teams_sbc", false)];

/// The FQDN connection type for the generic handlers.
pub static FQDN_CONNECTION: ConnectionType = ConnectionType {
    kind: "fqdn_connection",
    create_fields: &[cc::CONNECTION, OWN, CREATE_ONLY],
    update_fields: &[cc::CONNECTION, OWN],
    rules: cc::set_optional_sip_digest,
    unique,
    unique_pointers: &[
        (cc::SIP_USER_NAME_SCOPE, "/user_name"),
        (cc::SIP_SUBDOMAIN_SCOPE, "/inbound/sip_subdomain"),
        (TECH_PREFIX_SCOPE, "/outbound/tech_prefix"),
        (IP_AUTHENTICATION_TOKEN_SCOPE, "/outbound/ip_authentication_token"),
    ],
};

/// With the FQDN record checks, and the records deleted with the connection.
pub static FQDN_CONNECTION_WITH_STORE: ConnectionTypeWithStore = ConnectionTypeWithStore {
    connection: &FQDN_CONNECTION,
    store_rules,
    children: &[(cc::FQDN_RECORD_KIND, "connection_id")],
    reassign: None,
};

/// The unique values an FQDN connection claims.
fn unique(doc: &Value) -> Vec<(&'static str, String)> {
    let mut claims = cc::sip_user_name_claims(doc);
    claims.extend(cc::sip_subdomain_claims(doc));
    claims.extend(cc::tech_prefix_claims(doc));
    if let Some(t) = doc["outbound"]["ip_authentication_token"].as_str() {
        claims.push((IP_AUTHENTICATION_TOKEN_SCOPE, t.to_owned()));
    }
    claims
}

/// `inbound.default_*_fqdn_id`, when set or changed, must name an FQDN record of this
/// connection.
fn store_rules<'a>(
    store: &'a dyn Repository,
    f: &'a mut Fields,
    _account_id: &'a str,
    base: Option<&'a Value>,
    doc: &'a mut Value,
) -> StoreCheck<'a> {
    Box::pin(async move {
        let connection_id = base.and_then(|b| b["id"].as_str());
        for field in DEFAULT_FQDN_FIELDS {
            let Some(id) = doc["inbound"][field].as_str() else { continue };
            if base.is_some_and(|b| b["inbound"][field].as_str() == Some(id)) {
                continue;
            }
            let ours = match connection_id {
                Some(c) => crate::fqdns::connection_of(store, id).await?.as_deref() == Some(c),
                None => false,
            };
            if !ours {
                f.errors.push(ErrorObject::invalid_value(
                    &format!("/inbound/{field}"),
                    "No FQDN of this connection has this id.",
                ));
            }
        }
        Ok(())
    })
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/fqdn_connections", get(list).post(create))
        .route("/fqdn_connections/{id}", get(show).patch(update).delete(remove))
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    cc::list_connections_with_fqdn_records(&*s.store, &caller, &[FQDN_CONNECTION.kind], q.as_deref()).await.map(Json)
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    FQDN_CONNECTION_WITH_STORE.create(&s, &caller, &body).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    cc::show(&FQDN_CONNECTION, &s, &caller, &id).await
}

async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    FQDN_CONNECTION_WITH_STORE.update(&s, &caller, &id, &body).await
}

async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    FQDN_CONNECTION_WITH_STORE.remove(&s, &caller, &id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for ok in ["", "+12125551234", "12125551234", "+44"] {
            assert!(is_e164_or_blank(ok), "{ok}");
        }
        for bad in ["+0123", "+1 212", "+1234567890123456", "abc", "+"] {
            assert!(!is_e164_or_blank(bad), "{bad}");
        }
        assert!(is_ip_authentication_token("aBcD-1234-efgh") && !is_ip_authentication_token("a_b"));
        assert!(is_digits("0123") && !is_digits("01a3"));
    }

    #[test]
    fn defaults_differ_where_the_contract_says() {
        let d = cc::defaults(FQDN_CONNECTION.create_fields);
        assert_eq!(d["default_on_hold_comfort_noise_enabled"], true);
        assert_eq!(d["microsoft_teams_sbc"], false);
        assert_eq!(d["inbound"]["default_routing_method"], "sequential");
        assert_eq!(d["inbound"]["sip_subdomain_receive_settings"], "from_anyone");
        assert_eq!(d["outbound"]["t38_reinvite_source"], "customer");
        assert!(d["outbound"].get("channel_limit").is_none() && d["outbound"].get("ani_override").is_none());
        assert!(cc::defaults(FQDN_CONNECTION.update_fields).get("microsoft_teams_sbc").is_none());
    }
}
