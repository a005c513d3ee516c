//! Helpers the API's integration tests share: the router on each store backend, requests
//! through it with the JSON body decoded, accounts made with the operator key, and the parts
//! of an answer the tests compare.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::{Repository, Store};
use tower::ServiceExt;

#[path = "../../../store/tests/support/mod.rs"]
pub mod support;

/// The operator's key, installed on every backend by [`apps`].
pub const OPERATOR: &str = "KEYoperator-test-key";

/// One request with `body` as is, sent with `content_type` when one is given; the status and
/// the body decoded (`null` when empty).
pub async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    let resp = app.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, v)
}

/// One request, with a JSON body when one is given; the status and the body decoded.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    match body {
        Some(b) => send(app, method, uri, key, Some("application/json"), b.to_string()).await,
        None => send(app, method, uri, key, None, Body::empty()).await,
    }
}

/// The router on each backend, the operator's key installed.
pub async fn apps() -> Vec<axum::Router> {
    apps_and_stores().await.into_iter().map(|(app, _)| app).collect()
}

/// The router and its store, on each backend, the operator's key installed.
pub async fn apps_and_stores() -> Vec<(axum::Router, Store)> {
    let mut out = Vec::new();
    for store in support::backends().await {
        store.ensure_admin_key(Some(OPERATOR)).await.unwrap();
        out.push((api::router(api::ApiState::new(std::sync::Arc::new(store.clone()))), store));
    }
    out
}

/// A new account of `body`, made with the operator's key: (id, key).
pub async fn account_with(app: &axum::Router, body: Value) -> (String, String) {
    let (st, a) = call(app, "POST", "/v2/accounts", Some(OPERATOR), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    (a["data"]["id"].as_str().unwrap().to_owned(), a["data"]["api_key"].as_str().unwrap().to_owned())
}

/// A new account named `name`: (id, key).
pub async fn account(app: &axum::Router, name: &str) -> (String, String) {
    account_with(app, json!({"name": name})).await
}

/// POSTs `body` to `uri` with `key`, checks the answer is `status`; its `data`.
pub async fn post_as(app: &axum::Router, uri: &str, key: &str, body: Value, status: StatusCode) -> Value {
    let (st, v) = call(app, "POST", uri, Some(key), Some(body)).await;
    assert_eq!(st, status, "{uri}: {v}");
    v["data"].clone()
}

/// POSTs `body` to `uri` with `key`, checks it was created; its `data`.
pub async fn post(app: &axum::Router, uri: &str, key: &str, body: Value) -> Value {
    post_as(app, uri, key, body, StatusCode::CREATED).await
}

/// A new outbound voice profile of the account of `key`: its id.
pub async fn profile(app: &axum::Router, key: &str, name: &str) -> String {
    let p = post_as(app, "/v2/outbound_voice_profiles", key, json!({"name": name}), StatusCode::OK).await;
    p["id"].as_str().unwrap().to_owned()
}

/// `meta.total_results` of the list at `uri`, read with `key`.
pub async fn total(app: &axum::Router, uri: &str, key: &str) -> Value {
    let (st, list) = call(app, "GET", uri, Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    list["meta"]["total_results"].clone()
}

/// The stored document `id` of `kind` as the store holds it, as text.
pub async fn stored_body(store: &Store, kind: &str, id: &str) -> String {
    store.get_resource(kind, id).await.unwrap().expect("stored").body
}

/// The stored document `id` of `kind`, private fields included.
pub async fn stored(store: &Store, kind: &str, id: &str) -> Value {
    serde_json::from_str(&stored_body(store, kind, id).await).unwrap()
}

/// Creation times are milliseconds: a pause keeps orders by `created_at` unambiguous.
pub async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

/// Each error's `source.pointer` (`""` where it has none).
pub fn pointers(body: &Value) -> Vec<&str> {
    body["errors"].as_array().unwrap().iter().map(|e| e["source"]["pointer"].as_str().unwrap_or("")).collect()
}

/// Each error's code.
pub fn codes(body: &Value) -> Vec<&str> {
    body["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect()
}

/// Field `field` of each item of a list's `data`.
pub fn column<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list["data"].as_array().unwrap().iter().map(|item| item[field].as_str().unwrap()).collect()
}

/// The id of each item of a list's `data`.
pub fn ids(list: &Value) -> Vec<&str> {
    column(list, "id")
}
