//! `/v2/fqdns`: the host names of FQDN connections, where the platform sends their inbound
//! calls (and whose addresses identify calls from them). Follows the contract's `Fqdn` field for
//! field:
//!
//! - Create answers 201, delete 200 with the deleted record. `connection_id`, `fqdn` and
//!   `dns_record_type` are required on create (the contract's `CreateFqdnRequest`); on PATCH
//!   they may change but never be null.
//! - `connection_id` names an FQDN connection the caller sees: an account's key only its own
//!   (another account's is refused like a missing one, at `/connection_id`); the record belongs
//!   to that connection's account, so the operator needs no `account_id` (if given, it must be
//!   that account). A PATCH may move a record only to another FQDN connection of the same
//!   account.
//! - `fqdn`: a fully qualified DNS name: at least two dot-separated labels of letters, digits
//!   and inner hyphens (63 characters each, 253 in all, a final dot allowed), the last not all
//!   digits (an IPv4 address is not an FQDN). Kept as written.
//! - `dns_record_type`: `a` or `srv` (10032 otherwise). As the contract describes: an `a`
//!   record has a port, 5060 unless given (null means 5060 too); an `srv` record has none, the
//!   SRV records give it, so its `port` is null and giving one is a fault at `/port`. A PATCH
//!   that changes the type without a port takes the new type's (5060 or null).
//! - `port`: 1 to 65535.
//! - The same name (case and a final dot aside), type and port once per connection (422 at
//!   `/fqdn`).
//! - Deleting a record, or moving it to another connection, sets the `inbound.default_*_fqdn_id`
//!   fields of the connection it left that named it back to null; deleting the connection
//!   deletes its records.
//! - The list: `page[number]`, `page[size]` (1 to 250, default 250), `filter[connection_id]`,
//!   `filter[fqdn]` (exact), `filter[port]`, `filter[dns_record_type]`, oldest first (the
//!   contract has no sort here); the operator may narrow with `filter[account_id]`. Errors
//!   answer 400, the contract's code for this list.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::{Repository, Resource, StoreError};

use crate::connections_common as cc;
use crate::fields::Fields;
use crate::fqdn_connections::{DEFAULT_FQDN_FIELDS, FQDN_CONNECTION};
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

/// The stored kind, also the `record_type` shown.
pub const KIND: &str = cc::FQDN_RECORD_KIND;
/// `Fqdn.dns_record_type`.
pub const DNS_RECORD_TYPES: &[&str] = &["a", "srv"];
/// The port of an `a` record when none is given.
pub const DEFAULT_PORT: i64 = 5060;
/// The unique scope of a record: connection, name, type and port.
const UNIQUE_SCOPE: &str = "fqdn";

pub fn routes() -> Router<ApiState> {
    Router::new().route("/fqdns", get(list).post(create)).route("/fqdns/{id}", get(show).patch(update).delete(remove))
}

/// A fully qualified domain name (see the module documentation).
pub fn is_fqdn(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = name.split('.').collect();
    (1..=253).contains(&name.len())
        && labels.len() >= 2
        && labels.iter().all(|l| cc::is_dns_label(l))
        && labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// The connection an FQDN record belongs to, `None` when there is no such record.
pub async fn connection_of(store: &dyn Repository, fqdn_id: &str) -> Result<Option<String>, ApiError> {
    let Some(r) = store.get_resource(KIND, fqdn_id).await? else { return Ok(None) };
    let doc: Value = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
    Ok(doc["connection_id"].as_str().map(str::to_owned))
}

/// The unique claim of a record: the same name, type and port once per connection.
fn claim(doc: &Value) -> String {
    let name = doc["fqdn"].as_str().unwrap_or_default();
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let port = doc["port"].as_i64().map_or_else(|| "-".to_owned(), |p| p.to_string());
    format!(
        "{} {name} {} {port}",
        doc["connection_id"].as_str().unwrap_or_default(),
        doc["dns_record_type"].as_str().unwrap_or_default()
    )
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { .. } => {
            ApiError::conflict("This connection already has this FQDN with this record type and port.", "/fqdn")
        }
        e => e.into(),
    }
}

/// A required string field: absent on create, or null at any time, is a fault.
fn required_string(f: &mut Fields, name: &str, creating: bool, max: usize) -> Option<String> {
    if f.is_null(name) {
        f.errors.push(ErrorObject::required(&format!("/{name}")));
        return None;
    }
    f.string(name, creating, 1, max)
}

/// The record from validated fields over `base` (the stored one on PATCH); the connection is
/// checked by the caller. `None` when a field is at fault.
fn build(f: &mut Fields, base: Option<&Value>) -> Option<Value> {
    let creating = base.is_none();
    let connection_id = required_string(f, "connection_id", creating, 64);
    let fqdn = required_string(f, "fqdn", creating, 254).filter(|s| {
        let ok = is_fqdn(s);
        if !ok {
            f.errors.push(ErrorObject::invalid_value(
                "/fqdn",
                "Must be a fully qualified domain name, such as \"example.com\".",
            ));
        }
        ok
    });
    let record_type = if f.is_null("dns_record_type") || (creating && !f.has("dns_record_type")) {
        f.errors.push(ErrorObject::required("/dns_record_type"));
        None
    } else {
        f.one_of("dns_record_type", DNS_RECORD_TYPES, None)
    };
    let port = f.integer("port", 1, 65535, None, true);
    if !f.errors.is_empty() {
        return None;
    }

    let mut doc = base.cloned().unwrap_or_else(|| json!({ "record_type": KIND }));
    let type_changed = record_type.as_deref().is_some_and(|t| doc["dns_record_type"].as_str() != Some(t));
    if let Some(c) = connection_id {
        doc["connection_id"] = json!(c);
    }
    if let Some(n) = fqdn {
        doc["fqdn"] = json!(n);
    }
    if let Some(t) = record_type {
        doc["dns_record_type"] = json!(t);
    }
    let port: Option<i64> = if f.has("port") {
        port.flatten()
    } else if type_changed {
        None
    } else {
        doc["port"].as_i64()
    };
    match (doc["dns_record_type"].as_str(), port) {
        (Some("srv"), Some(_)) => {
            f.errors.push(ErrorObject::invalid_value(
                "/port",
                "An srv record has no port (its SRV records give it): leave port out or null, or use an a record.",
            ));
            return None;
        }
        (Some("srv"), None) => doc["port"] = Value::Null,
        (_, p) => doc["port"] = json!(p.unwrap_or(DEFAULT_PORT)),
    }
    Some(doc)
}

/// The FQDN connection `id`, if this caller may attach records to it: (its account).
async fn usable_connection(store: &dyn Repository, caller: &Caller, id: &str) -> Result<Option<String>, ApiError> {
    Ok(store.get_resource(FQDN_CONNECTION.kind, id).await?.filter(|r| caller.sees(&r.account_id)).map(|r| r.account_id))
}

fn no_connection() -> ErrorObject {
    ErrorObject::invalid_value("/connection_id", "No FQDN connection of this account has this id.")
}

/// The record as the API shows it; the operator also sees the owning `account_id`.
fn present(mut doc: Value, account_id: &str, caller: &Caller) -> Value {
    if *caller == Caller::Operator {
        doc["account_id"] = json!(account_id);
    }
    doc
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let doc = build(&mut f, None);
    let mut owner = None;
    if let Some(d) = &doc {
        let connection_id = d["connection_id"].as_str().unwrap_or_default();
        match usable_connection(&*s.store, &caller, connection_id).await? {
            Some(account) => owner = Some(account),
            None => f.errors.push(no_connection()),
        }
    }
    if let (Some(Some(given)), Some(account)) = (f.nullable_string("account_id"), &owner)
        && given != *account
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "An FQDN belongs to its connection's account."));
    }
    f.finish()?;
    let (mut doc, owner) = doc.zip(owner).ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let r = Resource {
        kind: KIND.into(),
        id: id.clone(),
        account_id: owner,
        name: doc["fqdn"].as_str().unwrap_or_default().to_owned(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    let unique = claim(&doc);
    s.store.insert_resource(&r, &[(UNIQUE_SCOPE, unique.as_str())]).await.map_err(store_error)?;
    // The connection may have been deleted meanwhile (its records with it): check it after
    // the record is stored, so either its deletion saw this record or this sees it gone.
    let connection_id = doc["connection_id"].as_str().unwrap_or_default();
    if s.store.get_resource(FQDN_CONNECTION.kind, connection_id).await?.is_none() {
        s.store.delete_resource(KIND, &id).await?;
        return Err(ApiError::invalid(vec![no_connection()]));
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": present(doc, &r.account_id, &caller) }))))
}

/// The record if this caller may see it; another account's answers 404 like a missing one.
async fn fetch(store: &dyn Repository, caller: &Caller, id: &str) -> Result<(Resource, Value), ApiError> {
    crate::fetch(store, caller, KIND, id).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&*s.store, &caller, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

/// PATCH: the fields given change, the others stay.
async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, base) = fetch(&*s.store, &caller, &id).await?;
    let mut f = Fields::parse(&body)?;
    cc::check_owner_unchanged(&mut f, &r.account_id);
    let doc = build(&mut f, Some(&base));
    let old_connection = base["connection_id"].as_str().unwrap_or_default();
    let moved = doc.as_ref().and_then(|d| d["connection_id"].as_str()).filter(|c| *c != old_connection);
    if let Some(c) = moved {
        let same_account =
            s.store.get_resource(FQDN_CONNECTION.kind, c).await?.is_some_and(|c| c.account_id == r.account_id);
        if !same_account {
            f.errors.push(no_connection());
        }
    }
    let moved = moved.map(str::to_owned);
    f.finish()?;
    let mut doc = doc.ok_or_else(ApiError::internal)?;
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.name = doc["fqdn"].as_str().unwrap_or_default().to_owned();
    r.body = doc.to_string();
    r.updated_at = now;
    let unique = claim(&doc);
    if !s.store.update_resource(&r, &[(UNIQUE_SCOPE, unique.as_str())]).await.map_err(store_error)? {
        return Err(ApiError::not_found());
    }
    if let Some(c) = moved {
        cc::forget_default_reference(&*s.store, &FQDN_CONNECTION, old_connection, DEFAULT_FQDN_FIELDS, &id).await?;
        if s.store.get_resource(FQDN_CONNECTION.kind, &c).await?.is_none() {
            s.store.delete_resource(KIND, &id).await?;
            return Err(ApiError::invalid(vec![no_connection()]));
        }
    }
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

/// DELETE answers 200 with the deleted record.
async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&*s.store, &caller, &id).await?;
    if !s.store.delete_resource(KIND, &id).await? {
        return Err(ApiError::not_found());
    }
    let connection_id = doc["connection_id"].as_str().unwrap_or_default();
    cc::forget_default_reference(&*s.store, &FQDN_CONNECTION, connection_id, DEFAULT_FQDN_FIELDS, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

fn bad_enum(detail: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        errors: vec![ErrorObject { code: "10032", title: "Invalid enumerated value".into(), detail, pointer: None }],
    }
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let page = q.page(250, 250)?;
    let connection = q.get("filter[connection_id]");
    let fqdn = q.get("filter[fqdn]");
    let port = match q.get("filter[port]") {
        None => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| ApiError::bad_request("filter[port] must be an integer."))?),
    };
    let record_type = q.get("filter[dns_record_type]");
    if record_type.is_some_and(|t| !DNS_RECORD_TYPES.contains(&t)) {
        return Err(bad_enum(format!("filter[dns_record_type] must be one of: {}.", DNS_RECORD_TYPES.join(", "))));
    }
    let account_filter = q.get("filter[account_id]");
    let scope = match &caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account_filter,
    };
    let items = s
        .store
        .list_resources(KIND, scope)
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.account_id) && account_filter.is_none_or(|a| r.account_id == a))
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok().map(|doc| (doc, r.account_id)))
        .filter(|(doc, _)| {
            connection.is_none_or(|c| doc["connection_id"].as_str() == Some(c))
                && fqdn.is_none_or(|n| doc["fqdn"].as_str() == Some(n))
                && port.is_none_or(|p| doc["port"].as_i64() == Some(p))
                && record_type.is_none_or(|t| doc["dns_record_type"].as_str() == Some(t))
        })
        .map(|(doc, account): (Value, String)| present(doc, &account, &caller))
        .collect();
    Ok(Json(page.envelope(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_names() {
        for ok in ["example.com", "sip.example.com.", "a-1.b2.co", "EXAMPLE.COM", "x.io"] {
            assert!(is_fqdn(ok), "{ok}");
        }
        let long = format!("{}.com", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(58)].join("."));
        assert_eq!(long.len(), 254);
        for bad in [
            "localhost",
            "example..com",
            ".example.com",
            "-a.example.com",
            "a-.example.com",
            "exa mple.com",
            "ex_ample.com",
            "192.168.0.1",
            "example.com..",
            "",
            ".",
            "https://example.com",
            "example.com:5060",
            long.as_str(),
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
        assert!(is_fqdn(&format!("{}.{}.com", "a".repeat(63), "b".repeat(63))));
        assert!(!is_fqdn(&format!("{}.com", "a".repeat(64))));
    }

    #[test]
    fn claims_ignore_case_and_final_dot() {
        let a = json!({"connection_id": "1", "fqdn": "Example.COM.", "dns_record_type": "a", "port": 5060});
        let b = json!({"connection_id": "1", "fqdn": "example.com", "dns_record_type": "a", "port": 5060});
        assert_eq!(claim(&a), claim(&b));
        let srv = json!({"connection_id": "1", "fqdn": "example.com", "dns_record_type": "srv", "port": null});
        assert_ne!(claim(&srv), claim(&b));
    }
}
