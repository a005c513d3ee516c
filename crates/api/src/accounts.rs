//! `/v2/accounts`: the tenants (an operator resource, not in the contract). An account has a
//! name, the account-wide concurrent call limit (the one behind `403 User channel limit
//! exceeded D1`, default 10), the rate deck that prices its calls, its verification level and
//! whether it is enabled. Creating one returns its first API key, shown that once.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::Resource;

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, new_id, now_timestamp};

const KIND: &str = "account";
pub const VERIFICATION_LEVELS: &[&str] = &["initial", "level_2", "custom"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/accounts", get(list).post(create))
        .route("/accounts/{id}", get(show).patch(update).delete(remove))
}

/// The account document from validated fields over `base` (the stored one on PATCH).
fn build(f: &mut Fields, base: Option<&Value>) -> Option<Value> {
    let creating = base.is_none();
    let name = f.string("name", creating, 1, 255);
    let limit = f.integer("concurrent_call_limit", 0, 1_000_000, Some(10), true);
    let level = f.one_of("verification_level", VERIFICATION_LEVELS, creating.then_some("level_2"));
    let deck = f.nullable_string("rate_deck_id");
    let enabled = f.boolean("enabled", creating.then_some(true));
    if !f.errors.is_empty() {
        return None;
    }
    let mut doc = base.cloned().unwrap_or_else(|| json!({"record_type": "account", "rate_deck_id": null}));
    if let Some(n) = name {
        doc["name"] = json!(n);
    }
    if f.has("concurrent_call_limit") || creating {
        doc["concurrent_call_limit"] = json!(limit.flatten());
    }
    if let Some(l) = level {
        doc["verification_level"] = json!(l);
    }
    if f.has("rate_deck_id") {
        doc["rate_deck_id"] = json!(deck.flatten());
    }
    if let Some(e) = enabled {
        doc["enabled"] = json!(e);
    }
    Some(doc)
}

/// The rate deck an account names must exist: it prices every call the account makes.
async fn check_rate_deck(s: &ApiState, f: &mut Fields, doc: Option<&Value>) -> Result<(), ApiError> {
    if let Some(id) = doc.and_then(|d| d["rate_deck_id"].as_str())
        && s.store.get_resource("rate_deck", id).await?.is_none()
    {
        f.errors.push(crate::ErrorObject::invalid_value("/rate_deck_id", "No rate deck has this id."));
    }
    Ok(())
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.operator_only()?;
    let mut f = Fields::parse(&body)?;
    let doc = build(&mut f, None);
    check_rate_deck(&s, &mut f, doc.as_ref()).await?;
    f.finish()?;
    let mut doc = doc.ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let name = doc["name"].as_str().unwrap_or_default().to_owned();
    let r = Resource {
        kind: KIND.into(),
        id: id.clone(),
        account_id: id.clone(),
        name,
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    s.store.insert_resource(&r, &[]).await?;
    let key = store::generate_api_key()?;
    s.store.add_api_key(&id, &store::hash_api_key(&key), &now).await?;
    doc["api_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(json!({ "data": doc }))))
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let page = q.page(20, 250)?;
    let name_filter = q.get("filter[name][contains]").map(str::to_lowercase);
    let items: Vec<Value> = s
        .store
        .list_resources(KIND, None)
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.account_id))
        .filter(|r| name_filter.as_ref().is_none_or(|n| r.name.to_lowercase().contains(n)))
        .filter_map(|r| serde_json::from_str(&r.body).ok())
        .collect();
    Ok(Json(page.envelope(items)))
}

async fn fetch(s: &ApiState, caller: &Caller, id: &str) -> Result<(Resource, Value), ApiError> {
    crate::fetch(&*s.store, caller, KIND, id).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, doc) = fetch(&s, &caller, &id).await?;
    Ok(Json(json!({ "data": doc })))
}

async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, base) = fetch(&s, &caller, &id).await?;
    caller.operator_only()?;
    let mut f = Fields::parse(&body)?;
    let doc = build(&mut f, Some(&base));
    if f.has("rate_deck_id") {
        check_rate_deck(&s, &mut f, doc.as_ref()).await?;
    }
    f.finish()?;
    let mut doc = doc.ok_or_else(ApiError::internal)?;
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.name = doc["name"].as_str().unwrap_or_default().to_owned();
    r.body = doc.to_string();
    r.updated_at = now;
    if !s.store.update_resource(&r, &[]).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": doc })))
}

async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, doc) = fetch(&s, &caller, &id).await?;
    caller.operator_only()?;
    // The tenant goes with everything it owns: profiles, connections, numbers, keys.
    s.store.delete_account(&id).await?;
    Ok(Json(json!({ "data": doc })))
}
