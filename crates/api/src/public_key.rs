//! `GET /v2/public_key`: the public half of the operator's webhook signing key, which webhook
//! receivers configure to verify `telnyx-signature-ed25519` (the official SDKs take it as the
//! client's `public_key`). Telnyx's API has no such path (its key is shown in the portal), so
//! this is an operator extension in the contract's style: `{"data": {"public_key": "<base64>"}}`,
//! readable with any valid API key, the operator's or an account's, because every account's
//! receivers need it and it is public by nature.
//!
//! The key pair is kept here rather than in the engine: the API owns the store and serves the
//! key, while the engine only signs and takes the signing key as a value (`opentrunk serve`
//! reads it once at startup with [`webhook_signing_key`] and hands it to `engine::webhooks`), so
//! neither crate needs the other. The private key is generated once, from the operating system's
//! random source, and kept in the setting [`SIGNING_KEY_SETTING`]; no route ever reads it back.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use store::{Repository, StoreError};
use tracing::info;

use crate::{ApiError, ApiState, Caller};

/// The setting holding the private key: `ed25519:` and the standard base64 of its 32-byte seed
/// (the prefix leaves room for another algorithm or a rotation scheme later).
pub const SIGNING_KEY_SETTING: &str = "webhook_signing_key";
const PREFIX: &str = "ed25519:";

pub fn routes() -> Router<ApiState> {
    Router::new().route("/public_key", get(show))
}

async fn show(State(s): State<ApiState>, _caller: Caller) -> Result<Json<Value>, ApiError> {
    let key = webhook_signing_key(s.store.as_ref()).await?;
    Ok(Json(json!({"data": {"public_key": public_key_base64(&key.verifying_key())}})))
}

/// The operator's webhook signing key, generated and stored on first use. Nodes of a cluster
/// starting together all read the first one stored.
pub async fn webhook_signing_key(store: &dyn Repository) -> Result<SigningKey, StoreError> {
    if let Some(stored) = store.setting(SIGNING_KEY_SETTING).await? {
        return parse(&stored);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| StoreError::Failed(format!("random source: {e}")))?;
    let stored = store.setting_or_put(SIGNING_KEY_SETTING, &format!("{PREFIX}{}", BASE64.encode(seed))).await?;
    info!("webhook signing key ready");
    parse(&stored)
}

/// A public key as receivers configure it: standard base64 of its 32 bytes.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    BASE64.encode(key.as_bytes())
}

/// A stored key; a damaged one is an error, never silently replaced (receivers trust the
/// public half).
fn parse(stored: &str) -> Result<SigningKey, StoreError> {
    let bad = || StoreError::Failed(format!("setting {SIGNING_KEY_SETTING}: not an Ed25519 key"));
    let b64 = stored.strip_prefix(PREFIX).ok_or_else(bad)?;
    let bytes = BASE64.decode(b64.trim()).map_err(|_| bad())?;
    let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad())?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use ed25519_dalek::{Signer, Verifier};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const OPERATOR: &str = "KEYpublic-key-test-operator";

    async fn get(app: &Router, uri: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(if body.is_some() { "POST" } else { "GET" }).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }

    #[tokio::test]
    async fn serves_one_public_key_to_any_valid_key() {
        let dir = std::env::temp_dir().join(format!("opentrunk-public-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = store::Store::open(&format!("sqlite://{}", dir.join("db.sqlite").display())).await.unwrap();
        store.ensure_admin_key(Some(OPERATOR)).await.unwrap();
        let app = crate::router(ApiState::new(std::sync::Arc::new(store.clone())));

        assert_eq!(get(&app, "/v2/public_key", None, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(&app, "/v2/public_key", Some("KEYnot-a-key"), None).await.0, StatusCode::UNAUTHORIZED);

        let (st, op) = get(&app, "/v2/public_key", Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK, "{op}");
        let (st, acct) = get(&app, "/v2/accounts", Some(OPERATOR), Some(json!({"name": "pk"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{acct}");
        let account_key = acct["data"]["api_key"].as_str().unwrap();
        let (st, seen) = get(&app, "/v2/public_key", Some(account_key), None).await;
        assert_eq!(st, StatusCode::OK, "{seen}");
        assert_eq!(op, seen, "one key for everybody");
        assert_eq!(op["data"].as_object().unwrap().len(), 1, "only the public key: {op}");

        // The served key verifies what the stored signing key signs; it is kept, not regenerated.
        let public = BASE64.decode(op["data"]["public_key"].as_str().unwrap()).unwrap();
        let public = VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        let key = webhook_signing_key(&store).await.unwrap();
        let signature = key.sign(b"1700000000|{}");
        assert!(public.verify(b"1700000000|{}", &signature).is_ok());
        assert!(public.verify(b"1700000001|{}", &signature).is_err());
        let stored = store.setting(SIGNING_KEY_SETTING).await.unwrap().unwrap();
        assert!(stored.starts_with(PREFIX));
        assert!(!op.to_string().contains(&stored[PREFIX.len()..]), "the private key is never served");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_key_is_an_error() {
        assert!(parse("ed25519:AAAA").is_err());
        assert!(parse("rsa:AAAA").is_err());
        assert!(parse("ed25519:not base64!").is_err());
        let seed = [7u8; 32];
        let key = parse(&format!("{PREFIX}{}", BASE64.encode(seed))).unwrap();
        assert_eq!(key.to_bytes(), seed);
    }
}
