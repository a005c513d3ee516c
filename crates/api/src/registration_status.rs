//! Registration status, read from the registrar's stored bindings (`store::Registration`):
//!
//! - `POST /v2/credential_connections/{id}/actions/check_registration_status`: the contract's
//!   `Registration Status` of a credential connection. `Registered` while a binding is live
//!   (the most recently refreshed one gives `ip_address`, `port`, `transport`, `user_agent` and
//!   `last_registration`), `Expired` when only bindings past their expiry remain (the sweep has
//!   not taken them yet), otherwise `Not Registered` with no contact details. A binding removed
//!   by its device (`Expires: 0`) leaves no row, so `Unregistered` is never claimed.
//! - `GET /v2/sip_registration_status?credential_type=...`: the contract's
//!   `SipRegistrationStatus`, unwrapped as the contract shows it. `telephony_credential` is
//!   keyed by `username` (a credential connection's `user_name`) and reports its live binding;
//!   `uac_external_credential` is keyed by `connection_id` (a UAC connection) and reports the
//!   switch's own registration at the PBX, which the switch stores as that connection's one
//!   binding. A missing or unknown parameter is `400`, as the contract says.
//!
//! Tenancy as everywhere: another account's connection answers `404` exactly like a missing
//! one (the contract's `403` for "exists but not owned" would tell one account what another
//! has).

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use store::Registration;

use crate::connections_common as cc;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller};

const CREDENTIAL: &str = "credential_connection";
const UAC: &str = "uac_connection";
const CREDENTIAL_TYPES: &[&str] = &["uac_external_credential", "telephony_credential"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/credential_connections/{id}/actions/check_registration_status", post(check_registration_status))
        .route("/sip_registration_status", get(sip_registration_status))
}

fn now_ms() -> i64 {
    let t = time::OffsetDateTime::now_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Unix milliseconds as the contract writes times: `2018-02-02T22:25:27.521Z`.
fn timestamp(ms: i64) -> String {
    store::cdr_timestamp(ms)
}

/// The binding that speaks for the connection: the most recently refreshed live one, else the
/// most recently refreshed of those past expiry; and whether it is live.
fn current(bindings: &[Registration], now: i64) -> Option<(&Registration, bool)> {
    let latest = |live: bool| {
        bindings.iter().filter(|b| (b.expires_at > now) == live).max_by_key(|b| (b.updated_at, b.registered_at))
    };
    latest(true).map(|b| (b, true)).or_else(|| latest(false).map(|b| (b, false)))
}

async fn check_registration_status(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, doc) = cc::fetch(&*s.store, &caller, CREDENTIAL, &id).await?;
    let username = doc["user_name"].as_str().unwrap_or_default();
    Ok(Json(json!({ "data": status_of(&s, &id, username).await? })))
}

/// The contract's `Registration Status` of a connection, from its stored bindings: the
/// credential connection's devices, or the UAC connection's own registration at its PBX.
pub(crate) async fn status_of(s: &ApiState, connection_id: &str, username: &str) -> Result<Value, ApiError> {
    let bindings = s.store.list_registrations(connection_id).await?;
    let Some((b, live)) = current(&bindings, now_ms()) else {
        return Ok(cc::not_registered(username));
    };
    let mut data = json!({
        "record_type": "registration_status",
        "sip_username": username,
        "status": if live { "Registered" } else { "Expired" },
        "ip_address": b.source_ip,
        "port": b.source_port,
        "transport": b.transport,
        "last_registration": timestamp(b.updated_at),
    });
    if let Some(ua) = &b.user_agent {
        data["user_agent"] = json!(ua);
    }
    Ok(data)
}

async fn sip_registration_status(
    State(s): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let required = |name: &str| {
        q.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("The query parameter `{name}` is required.")))
    };
    match required("credential_type")? {
        "telephony_credential" => telephony_credential(&s, &caller, required("username")?).await,
        "uac_external_credential" => uac_external_credential(&s, &caller, required("connection_id")?).await,
        _ => Err(ApiError::bad_request(format!("`credential_type` must be one of: {}.", CREDENTIAL_TYPES.join(", ")))),
    }
}

async fn telephony_credential(s: &ApiState, caller: &Caller, username: &str) -> Result<Json<Value>, ApiError> {
    let scope = match caller {
        Caller::Operator => None,
        Caller::Account(a) => Some(a.as_str()),
    };
    let mut found = None;
    for r in s.store.list_resources(CREDENTIAL, scope).await? {
        let doc: Value = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
        if doc["user_name"].as_str() == Some(username) {
            found = Some((r, doc));
            break;
        }
    }
    let (r, doc) = found.ok_or_else(ApiError::not_found)?;
    let mut out = Map::new();
    out.insert("connection_id".into(), json!(r.id));
    out.insert("connection_name".into(), doc["connection_name"].clone());
    out.insert("credential_type".into(), json!("telephony_credential"));
    out.insert("credential_username".into(), json!(username));
    registration_details(s, &r.id, &doc, &mut out).await?;
    Ok(Json(Value::Object(out)))
}

/// `registered`, `last_registration_response`, `sip_registration_details` and
/// `sip_registration_status` of a connection from its stored bindings.
async fn registration_details(
    s: &ApiState,
    connection_id: &str,
    doc: &Value,
    out: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let bindings = s.store.list_registrations(connection_id).await?;
    let now = now_ms();
    let live = current(&bindings, now);
    out.insert("registered".into(), json!(live.is_some_and(|(_, live)| live)));
    if let Some((b, live)) = live {
        // Only accepted REGISTERs are stored: the last one was answered 200.
        out.insert("last_registration_response".into(), json!("200 OK"));
        let host = b.contact.split_once(':').map_or(b.contact.as_str(), |(_, rest)| rest);
        let user_host = host.split([';', '?']).next().unwrap_or_default();
        let mut details = json!({
            "expires": b.expires_at.div_euclid(1000),
            "last_modified": timestamp(b.updated_at),
            "sip_uri_user_host": user_host,
            "transport": b.transport,
            "ua_ip": b.source_ip,
            "ua_port": b.source_port,
            "uptime": if live { (now - b.registered_at).max(0) / 1000 } else { 0 },
        });
        if let Some(node) = &b.node {
            details["node"] = json!(node);
        }
        out.insert("sip_registration_details".into(), details);
    }
    let status = match live {
        Some((_, true)) => Some("registered"),
        _ if doc["active"] == json!(false) => Some("connection_disabled"),
        Some((_, false)) => Some("failed"),
        None => None,
    };
    if let Some(status) = status {
        out.insert("sip_registration_status".into(), json!(status));
    }
    Ok(())
}

async fn uac_external_credential(s: &ApiState, caller: &Caller, id: &str) -> Result<Json<Value>, ApiError> {
    let (r, doc) = cc::fetch(&*s.store, caller, UAC, id).await?;
    let mut out = Map::new();
    out.insert("connection_id".into(), json!(r.id));
    out.insert("connection_name".into(), doc["connection_name"].clone());
    out.insert("credential_type".into(), json!("uac_external_credential"));
    if let Some(user) = doc["external_uac_settings"]["username"].as_str() {
        out.insert("credential_username".into(), json!(user));
    }
    registration_details(s, &r.id, &doc, &mut out).await?;
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_the_current_binding() {
        assert_eq!(timestamp(1_767_312_000_123), "2026-01-02T00:00:00.123Z");
        let b = |updated_at: i64, expires_at: i64| Registration {
            connection_id: "c".into(),
            binding_key: format!("k{updated_at}"),
            account_id: "a".into(),
            username: "u".into(),
            contact: "sip:u@h".into(),
            instance: None,
            reg_id: None,
            q: None,
            path: Vec::new(),
            call_id: "x".into(),
            cseq: 1,
            source_ip: "192.0.2.1".into(),
            source_port: 5060,
            transport: "UDP".into(),
            nat: false,
            user_agent: None,
            node: None,
            registered_at: 0,
            updated_at,
            expires_at,
        };
        let all = [b(10, 100), b(20, 50), b(5, 200)];
        assert_eq!(current(&all, 60).map(|(b, live)| (b.updated_at, live)), Some((10, true)));
        assert_eq!(current(&all, 300).map(|(b, live)| (b.updated_at, live)), Some((20, false)));
        assert!(current(&[], 0).is_none());
    }
}
