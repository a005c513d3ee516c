//! `/v2/connections`: every connection of the caller irrespective of type, read only, in the
//! contract's reduced common shape `Connection`: `id`, `record_type` (which type it is:
//! `credential_connection`, `ip_connection`, `fqdn_connection` or `uac_connection`),
//! `connection_name`, `active`, `anchorsite_override`, `outbound_voice_profile_id` (the
//! connection's `outbound.outbound_voice_profile_id`, left out when it has none), `tags`,
//! `webhook_api_version`, `webhook_event_url` (null when unset, the contract's default),
//! `webhook_event_failover_url`, `created_at`, `updated_at`; the operator also sees
//! `account_id`. Settings and credentials are read through each type's own endpoint.
//!
//! - `GET /v2/connections` takes the contract's `filter`/`sort`/`page` exactly as the lists of
//!   the types do ([`cc::list_connections_with_fqdn_records`]: `filter[fqdn]` matches FQDN
//!   connections by their FQDN records); errors answer 400.
//! - `GET /v2/connections/{id}` finds the id among every type; another account's answers 404
//!   like a missing one.
//! - `GET /v2/connections/{connection_id}/active_calls` is in [`crate::live_calls`].

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::connections_common as cc;
use crate::{ApiError, ApiState, Caller};

/// The stored kinds of every connection type, in the order an id is looked up.
pub const KINDS: &[&str] = &["credential_connection", "ip_connection", "fqdn_connection", "uac_connection"];

/// The `Connection` fields copied from a connection's document as they are.
const FIELDS: &[&str] = &[
    "id",
    "record_type",
    "connection_name",
    "active",
    "anchorsite_override",
    "tags",
    "webhook_api_version",
    "webhook_event_url",
    "webhook_event_failover_url",
    "created_at",
    "updated_at",
    "account_id",
];

pub fn routes() -> Router<ApiState> {
    Router::new().route("/connections", get(list)).route("/connections/{id}", get(show))
}

/// A connection (as [`cc::present`] shows it) in the contract's `Connection` shape.
pub fn summary(doc: &Value) -> Value {
    let mut out = Map::new();
    for field in FIELDS {
        if let Some(v) = doc.get(*field) {
            out.insert((*field).to_owned(), v.clone());
        }
    }
    out.entry("webhook_event_url").or_insert(Value::Null);
    if let Some(p) = doc["outbound"]["outbound_voice_profile_id"].as_str() {
        out.insert("outbound_voice_profile_id".into(), json!(p));
    }
    let mut out = Value::Object(out);
    cc::omit_unset(&mut out, &["/webhook_event_failover_url"]);
    out
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let mut v = cc::list_connections_with_fqdn_records(&*s.store, &caller, KINDS, q.as_deref()).await?;
    if let Some(items) = v["data"].as_array_mut() {
        for item in items {
            *item = summary(item);
        }
    }
    Ok(Json(v))
}

/// The connection `id` of any type, as the caller may see it; 404 otherwise.
async fn find(s: &ApiState, caller: &Caller, id: &str) -> Result<Value, ApiError> {
    for kind in KINDS {
        if let Some(r) = s.store.get_resource(kind, id).await?.filter(|r| caller.sees(&r.account_id)) {
            let doc = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
            return Ok(cc::present(doc, &r.account_id, caller));
        }
    }
    Err(ApiError::not_found())
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let doc = find(&s, &caller, &id).await?;
    Ok(Json(json!({ "data": summary(&doc) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_types() {
        assert_eq!(KINDS[0], crate::credential_connections::CREDENTIAL_CONNECTION.kind);
        assert_eq!(KINDS[2], crate::fqdn_connections::FQDN_CONNECTION.kind);
        assert_eq!(KINDS[3], crate::uac_connections::UAC_CONNECTION.kind);
    }

    #[test]
    fn summary_shape() {
        let doc = json!({
            "id": "1", "record_type": "fqdn_connection", "connection_name": "x", "active": true,
            "anchorsite_override": "Latency", "tags": [], "webhook_api_version": "1",
            "webhook_event_failover_url": "", "created_at": "t", "updated_at": "t",
            "outbound": {"outbound_voice_profile_id": "9", "localization": "US"}, "inbound": {}, "dtmf_type": "RFC 2833"
        });
        let s = summary(&doc);
        assert_eq!(s["webhook_event_url"], Value::Null);
        assert_eq!(s["outbound_voice_profile_id"], "9");
        assert!(s.get("inbound").is_none() && s.get("dtmf_type").is_none() && s.get("account_id").is_none());
        // An unset failover URL ("" by the contract's default) cannot be a `format: uri`.
        assert!(s.get("webhook_event_failover_url").is_none());
        assert_eq!(s.as_object().unwrap().len(), 11);
    }
}
