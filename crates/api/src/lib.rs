//! `api`: the REST API under `/v2`. It follows the public contract
//! (`reference/telnyx-sip-trunking-openapi.yaml`) field for field, so existing SDKs work
//! against it, plus the operator's own resources (accounts, carriers, rate decks, numbers) in
//! the same style. Handlers validate, then store whole documents through `store`; every failure
//! is the contract's error body.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use store::Repository;

pub mod accounts;
pub mod carriers;
pub mod connections;
pub mod connections_common;
pub mod credential_connections;
pub mod detail_records;
pub mod dynamic_emergency;
pub mod error;
pub mod fields;
pub mod fqdn_connections;
pub mod fqdns;
pub mod ip_connections;
pub mod ips;
pub mod live_calls;
pub mod openapi;
pub mod outbound_voice_profiles;
pub mod phone_numbers;
pub mod policy;
pub mod public_key;
pub mod query;
pub mod rate_decks;
pub mod registration_status;
pub mod uac_connections;

pub use error::{ApiError, ErrorObject};
pub use live_calls::{LiveCall, LiveCallTable, LiveCalls};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Repository>,
    /// The calls the switch has up, read by the live call endpoints.
    pub live_calls: Arc<dyn LiveCalls>,
}

impl ApiState {
    /// The API over `store` with no switch publishing calls: every live call list is empty.
    pub fn new(store: Arc<dyn Repository>) -> Self {
        Self::with_live_calls(store, Arc::new(LiveCallTable::new()))
    }

    /// The API over `store`, reporting the calls the switch publishes into `live_calls`.
    pub fn with_live_calls(store: Arc<dyn Repository>, live_calls: Arc<dyn LiveCalls>) -> Self {
        ApiState { store, live_calls }
    }
}

/// The `/v2` routes: one `routes()` per resource module, merged here.
pub fn router(state: ApiState) -> Router {
    let v2 = Router::new()
        // resource routes (one line each)
        .merge(fqdn_connections::routes())
        .merge(detail_records::routes())
        .merge(live_calls::routes())
        .merge(registration_status::routes())
        .merge(fqdns::routes())
        .merge(uac_connections::routes())
        .merge(connections::routes())
        .merge(ip_connections::routes())
        .merge(ips::routes())
        .merge(carriers::routes())
        .merge(phone_numbers::routes())
        .merge(rate_decks::routes())
        .merge(dynamic_emergency::routes())
        .merge(credential_connections::routes())
        .merge(outbound_voice_profiles::routes())
        .merge(openapi::routes())
        .merge(public_key::routes())
        .merge(accounts::routes());
    Router::new().nest("/v2", v2).with_state(state)
}

/// Who is calling, from the Bearer key: the operator, or one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Account(String),
}

impl Caller {
    /// The operator only; an account's key gets 403.
    pub fn operator_only(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Account(_) => Err(ApiError::forbidden("This endpoint is for the platform operator.")),
        }
    }

    /// Whether this caller may see a resource owned by `account_id`. Others' resources are
    /// answered with 404, exactly as if they did not exist.
    pub fn sees(&self, account_id: &str) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Account(a) => a == account_id,
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Caller, ApiError> {
        let header =
            parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(ApiError::unauthorized)?;
        let (scheme, key) = header.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        let key = key.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
            return Err(ApiError::unauthorized());
        }
        if state.store.is_admin_key(key).await? {
            return Ok(Caller::Operator);
        }
        match state.store.account_for_key(&store::hash_api_key(key)).await? {
            Some(account) => Ok(Caller::Account(account)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// A resource of `kind` if this caller may see it, with its document; another account's
/// answers 404 exactly like a missing one.
pub async fn fetch(
    store: &dyn store::Repository,
    caller: &Caller,
    kind: &str,
    id: &str,
) -> Result<(store::Resource, serde_json::Value), ApiError> {
    let r =
        store.get_resource(kind, id).await?.filter(|r| caller.sees(&r.account_id)).ok_or_else(ApiError::not_found)?;
    let doc = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
    Ok((r, doc))
}

/// The current time as the contract writes it: `2018-02-02T22:25:27.521Z`.
pub fn now_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    store::cdr_timestamp(i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}

/// A new resource id: 19 decimal digits, as the contract's examples (`1293384261075731499`).
pub fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|_| ApiError::internal())?;
    let n = u64::from_le_bytes(b) % 9_000_000_000_000_000_000 + 1_000_000_000_000_000_000;
    Ok(n.to_string())
}
