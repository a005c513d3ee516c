//! `/v2/ip_connections`: SIP connections whose traffic is recognised by its source IP address
//! (the connection's IPs are `/v2/ips` resources). Follows the contract's `IpConnection` field
//! for field; the shared fields, rules and handlers are in [`crate::connections_common`]:
//!
//! - Create answers 201, delete 200 with the deleted connection, and deletes its IPs too (and
//!   detaches its phone numbers).
//!   `connection_name` is required on create.
//! - IP defaults from the contract: `default_on_hold_comfort_noise_enabled` true,
//!   `transport_protocol` `UDP`, `inbound.sip_region` `US`, `outbound.t38_reinvite_source`
//!   `customer`, `outbound.localization` null, `outbound.ip_authentication_method`
//!   `tech-prefixp-charge-info`, `outbound.ip_authentication_token` null. No default (absent
//!   until set): `inbound.sip_subdomain`, `inbound.sip_subdomain_receive_settings`,
//!   `inbound.default_routing_method` (`sequential` or `round-robin`).
//! - `inbound.sip_subdomain` (a DNS label) is unique on the platform regardless of case (422 at
//!   `/inbound/sip_subdomain`).
//! - `outbound.ip_authentication_token`: 12 to 48 letters, digits and hyphens, unique on the
//!   platform across accounts (422 at `/outbound/ip_authentication_token`); null clears it.
//!   Method `token` needs one. The contract's `IpConnection` has the field, so it is shown.
//! - `outbound.tech_prefix`: 4 digits assigned by the platform on create, at random, never
//!   changed; a request may only repeat it (anything else is refused at `/outbound/tech_prefix`).
//!   It is unique on the platform, across accounts and with FQDN connections' (claimed in
//!   [`cc::TECH_PREFIX_SCOPE`] with the connection, so two creates never get the same one): a
//!   prefix found taken is replaced by another free one and the create tried again. When all
//!   10,000 are taken a create is refused (422 at `/outbound/tech_prefix`). `/v2/ips` also
//!   claims it per source IP address.
//! - `inbound.default_primary_ip_id`, `default_secondary_ip_id`, `default_tertiary_ip_id`
//!   (update only, as in the contract): the id of an IP of this connection (422 otherwise); null
//!   clears. Deleting that IP, or moving it to another connection, sets them back to null
//!   ([`cc::forget_default_reference`], as for FQDN connections' default FQDNs). The contract
//!   types them as plain strings, so responses leave a null one out
//!   ([`cc::UNSET_IN_RESPONSES`]).

use serde_json::{Value, json};
use store::Repository;

use crate::connections_common::{
    self as cc, ConnectionType, ConnectionTypeWithStore, Reassign, Spec, Specs, StoreCheck,
};
use crate::fields::Fields;
use crate::{ApiError, ApiState, ErrorObject};
use axum::Router;

/// The stored kind and `record_type`.
pub const KIND: &str = "ip_connection";
/// `OutboundIp.ip_authentication_method`.
pub const IP_AUTHENTICATION_METHODS: &[&str] = &["tech-prefixp-charge-info", "token"];
/// The unique scope of IP authentication tokens: one per platform, across accounts.
pub const TOKEN_SCOPE: &str = "ip_authentication_token";
/// The inbound fields naming default IPs (update only).
pub const DEFAULT_IP_FIELDS: &[&str] = &["default_primary_ip_id", "default_secondary_ip_id", "default_tertiary_ip_id"];

/// An IP authentication token: 12 to 48 ASCII letters, digits and hyphens.
pub fn is_ip_authentication_token(s: &str) -> bool {
    (12..=48).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A tech prefix: exactly 4 digits.
pub fn is_tech_prefix(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

const DEFAULT_IP_ID_DETAIL: &str = "";
const INBOUND_OWN: &[Spec] = &[cc::SIP_REGION, cc::SIP_SUBDOMAIN, cc::SIP_SUBDOMAIN_RECEIVE_SETTINGS];
const INBOUND_DEFAULT_IPS: &[Spec] = &[
    Spec::nullable_text("default_primary_ip_id", 1, 64, cc::any_text, DEFAULT_IP_ID_DETAIL, None),
    Spec::nullable_text("default_secondary_ip_id", 1, 64, cc::any_text, DEFAULT_IP_ID_DETAIL, None),
    Spec::nullable_text("default_tertiary_ip_id", 1, 64, cc::any_text, DEFAULT_IP_ID_DETAIL, None),
];
/// `CreateInboundIpRequest`.
const INBOUND_CREATE: Specs = &[cc::INBOUND, INBOUND_OWN];
/// `InboundIp`.
const INBOUND_UPDATE: Specs = &[cc::INBOUND, INBOUND_OWN, INBOUND_DEFAULT_IPS];
/// `OutboundIp` (`tech_prefix` is the platform's, see [`store_rules`]).
const OUTBOUND: Specs = &[
    cc::OUTBOUND,
    &[
        Spec::nullable_text(
            "localization",
            0,
            2,
            cc::is_country_or_blank,
            "Must be an ISO 3166-1 alpha-2 country code, such as \"US\", empty or null.",
            None,
        ),
        Spec::one_of("t38_reinvite_source", cc::T38_REINVITE_SOURCES, Some("customer")),
        Spec::one_of("ip_authentication_method", IP_AUTHENTICATION_METHODS, Some("tech-prefixp-charge-info")),
        Spec::nullable_text(
            "ip_authentication_token",
            12,
            48,
            is_ip_authentication_token,
            "Must be 12 to 48 letters, digits and hyphens.",
            None,
        ),
    ],
];
const OWN: &[Spec] = &[
    cc::TRANSPORT_PROTOCOL,
    // The IP request schemas' default.
    Spec::bool("default_on_hold_comfort_noise_enabled", true),
    Spec::object("outbound", OUTBOUND),
];

/// The IP connection type for the generic handlers.
pub static IP_CONNECTION_TYPE: ConnectionType = ConnectionType {
    kind: KIND,
    create_fields: &[cc::CONNECTION, OWN, &[Spec::object("inbound", INBOUND_CREATE)]],
    update_fields: &[cc::CONNECTION, OWN, &[Spec::object("inbound", INBOUND_UPDATE)]],
    rules,
    unique: claims,
    unique_pointers: &[
        (TOKEN_SCOPE, "/outbound/ip_authentication_token"),
        (cc::SIP_SUBDOMAIN_SCOPE, "/inbound/sip_subdomain"),
        (cc::TECH_PREFIX_SCOPE, "/outbound/tech_prefix"),
    ],
};

/// With the store rules (tech prefix, default IPs), its IPs deleted with it, and another tech
/// prefix picked when the one given is taken.
pub static IP_CONNECTION: ConnectionTypeWithStore = ConnectionTypeWithStore {
    connection: &IP_CONNECTION_TYPE,
    store_rules,
    children: &[(crate::ips::KIND, "connection_id")],
    reassign: Some(Reassign { scope: cc::TECH_PREFIX_SCOPE, pick: pick_free_tech_prefix }),
};

pub fn routes() -> Router<ApiState> {
    IP_CONNECTION.routes("/ip_connections")
}

/// The unique values an IP connection claims: its token, its SIP subdomain and its tech prefix.
pub fn claims(doc: &Value) -> Vec<(&'static str, String)> {
    let mut out = cc::sip_subdomain_claims(doc);
    out.extend(cc::tech_prefix_claims(doc));
    if let Some(t) = doc["outbound"]["ip_authentication_token"].as_str() {
        out.push((TOKEN_SCOPE, t.to_owned()));
    }
    out
}

/// Method `token` needs a token.
fn rules(f: &mut Fields, doc: &mut Value) {
    let pointer = "/outbound/ip_authentication_token";
    if doc["outbound"]["ip_authentication_method"] == "token"
        && !doc["outbound"]["ip_authentication_token"].is_string()
        && !f.errors.iter().any(|e| e.pointer.as_deref() == Some(pointer))
    {
        f.errors.push(ErrorObject::invalid_value(
            pointer,
            "An ip_authentication_token is required when ip_authentication_method is token.",
        ));
    }
}

fn store_rules<'a>(
    store: &'a dyn Repository,
    f: &'a mut Fields,
    account_id: &'a str,
    base: Option<&'a Value>,
    doc: &'a mut Value,
) -> StoreCheck<'a> {
    Box::pin(async move {
        keep_tech_prefix(f, base, doc)?;
        check_default_ips(store, f, account_id, base, doc).await
    })
}

/// `outbound.tech_prefix` stays the assigned one (a new connection gets a random one, which its
/// insert claims; see [`pick_free_tech_prefix`]); a request may only repeat it (or send the
/// contract's default, empty, or null).
fn keep_tech_prefix(f: &mut Fields, base: Option<&Value>, doc: &mut Value) -> Result<(), ApiError> {
    let current = base.and_then(|b| b["outbound"]["tech_prefix"].as_str()).filter(|p| is_tech_prefix(p));
    let sent = f.value("outbound").and_then(|o| o.get("tech_prefix"));
    if let Some(sent) = sent
        && !sent.is_null()
        && sent != ""
        && *sent != json!(current)
    {
        f.errors.push(ErrorObject::invalid_value(
            "/outbound/tech_prefix",
            "The tech prefix is assigned by the platform and cannot be chosen.",
        ));
    }
    let prefix = match current {
        Some(p) => p.to_owned(),
        // A create with faults stores nothing: no prefix to look for.
        None if base.is_none() && !f.errors.is_empty() => return Ok(()),
        None => format!("{:04}", random_below(TECH_PREFIXES)?),
    };
    if doc["outbound"].is_object() {
        doc["outbound"]["tech_prefix"] = json!(prefix);
    }
    Ok(())
}

/// How many tech prefixes there are: `0000` to `9999`.
const TECH_PREFIXES: usize = 10_000;

/// A random number below `n` (which is at most [`TECH_PREFIXES`]).
fn random_below(n: usize) -> Result<usize, ApiError> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|_| ApiError::internal())?;
    Ok(u32::from_le_bytes(b) as usize % n.max(1))
}

/// After the tech prefix of a new connection was found taken: another one, at random among
/// those nobody claims (read from the claims themselves), into the document; 422 when every
/// prefix is taken.
fn pick_free_tech_prefix<'a>(store: &'a dyn Repository, doc: &'a mut Value) -> StoreCheck<'a> {
    Box::pin(async move {
        let mut taken = vec![false; TECH_PREFIXES];
        for p in store.claimed_values(cc::TECH_PREFIX_SCOPE).await? {
            if let Some(n) = Some(p.as_str()).filter(|p| is_tech_prefix(p)).and_then(|p| p.parse::<usize>().ok()) {
                taken[n] = true;
            }
        }
        let free: Vec<usize> = (0..TECH_PREFIXES).filter(|n| !taken[*n]).collect();
        if free.is_empty() {
            return Err(ApiError::invalid(vec![ErrorObject::invalid_value(
                "/outbound/tech_prefix",
                "Every tech prefix (0000 to 9999) is in use on this platform; none is left to assign.",
            )]));
        }
        doc["outbound"]["tech_prefix"] = json!(format!("{:04}", free[random_below(free.len())?]));
        Ok(())
    })
}

/// `inbound.default_*_ip_id`, when set or changed, must name an IP of this connection.
async fn check_default_ips(
    store: &dyn Repository,
    f: &mut Fields,
    account_id: &str,
    base: Option<&Value>,
    doc: &Value,
) -> Result<(), ApiError> {
    let Some(base) = base else { return Ok(()) };
    let connection_id = base["id"].as_str().unwrap_or_default();
    for field in DEFAULT_IP_FIELDS {
        let Some(ip_id) = doc["inbound"][field].as_str() else { continue };
        if base["inbound"][field].as_str() == Some(ip_id) {
            continue;
        }
        let ours = store.get_resource(crate::ips::KIND, ip_id).await?.is_some_and(|r| {
            r.account_id == account_id
                && serde_json::from_str::<Value>(&r.body).is_ok_and(|d| d["connection_id"] == connection_id)
        });
        if !ours {
            f.errors.push(ErrorObject::invalid_value(
                &format!("/inbound/{field}"),
                "Must be the id of an IP of this connection.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        for ok in ["abcdefghijkl", "Token-2024-abc", &"A".repeat(48)] {
            assert!(is_ip_authentication_token(ok), "{ok}");
        }
        for bad in ["short-token", "has space here", "under_score_x", "ünïcode-token", &"A".repeat(49)] {
            assert!(!is_ip_authentication_token(bad), "{bad}");
        }
        assert!(is_tech_prefix("0042") && !is_tech_prefix("042") && !is_tech_prefix("12a4"));
    }

    #[test]
    fn defaults_are_the_contracts() {
        let d = cc::defaults(IP_CONNECTION_TYPE.create_fields);
        assert_eq!(d["default_on_hold_comfort_noise_enabled"], true);
        assert_eq!(d["transport_protocol"], "UDP");
        assert_eq!(d["inbound"]["sip_region"], "US");
        assert!(d["inbound"].get("simultaneous_ringing").is_none() && d.get("sip_uri_calling_preference").is_none());
        assert_eq!(d["outbound"]["t38_reinvite_source"], "customer");
        assert_eq!(d["outbound"]["localization"], Value::Null);
        assert_eq!(d["outbound"]["ip_authentication_method"], "tech-prefixp-charge-info");
        assert_eq!(d["outbound"]["ip_authentication_token"], Value::Null);
    }
}
