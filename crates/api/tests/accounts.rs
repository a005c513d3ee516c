//! `/v2/accounts` through the router, on both store backends: keys, tenancy, validation,
//! pagination and the error body.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

mod common;

use common::{OPERATOR, apps, call};

#[tokio::test]
async fn keys_and_tenancy() {
    for app in apps().await {
        let (st, body) = call(&app, "GET", "/v2/accounts", None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errors"][0]["code"], "10009");
        let (st, _) = call(&app, "GET", "/v2/accounts", Some("KEYnope"), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);

        let (st, a) = call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(json!({"name": "Acme"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{a}");
        let a = &a["data"];
        assert_eq!(
            (a["concurrent_call_limit"].as_i64(), a["verification_level"].as_str()),
            (Some(10), Some("level_2"))
        );
        assert_eq!((a["enabled"].as_bool(), a["record_type"].as_str()), (Some(true), Some("account")));
        let key_a = a["api_key"].as_str().unwrap().to_owned();
        let id_a = a["id"].as_str().unwrap().to_owned();
        assert_eq!(id_a.len(), 19);
        let (_, b) = call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(json!({"name": "Bravo"}))).await;
        let id_b = b["data"]["id"].as_str().unwrap().to_owned();

        // The key is shown once: never again.
        let (st, got) = call(&app, "GET", &format!("/v2/accounts/{id_a}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        assert!(got["data"].get("api_key").is_none());
        // An account sees itself only; another's id is 404 as if it did not exist.
        let (_, list) = call(&app, "GET", "/v2/accounts", Some(&key_a), None).await;
        assert_eq!(list["meta"]["total_results"], 1);
        let (st, body) = call(&app, "GET", &format!("/v2/accounts/{id_b}"), Some(&key_a), None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")));
        let (st, _) = call(&app, "DELETE", &format!("/v2/accounts/{id_b}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // Operator endpoints refuse an account's key.
        let (st, _) = call(&app, "POST", "/v2/accounts", Some(&key_a), Some(json!({"name": "x"}))).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _) = call(
            &app,
            "PATCH",
            &format!("/v2/accounts/{id_a}"),
            Some(&key_a),
            Some(json!({"concurrent_call_limit": 999})),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);

        // Deleting an account revokes its keys.
        let (st, _) = call(&app, "DELETE", &format!("/v2/accounts/{id_a}"), Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(&app, "GET", &format!("/v2/accounts/{id_a}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn validation_reports_every_fault_and_stores_nothing() {
    for app in apps().await {
        let bad = json!({"verification_level": "gold", "concurrent_call_limit": -1, "enabled": "yes"});
        let (st, body) = call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let pointers: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["source"]["pointer"].as_str().unwrap()).collect();
        assert_eq!(pointers, ["/name", "/concurrent_call_limit", "/verification_level", "/enabled"]);
        let enum_err = body["errors"].as_array().unwrap().iter().find(|e| e["code"] == "10032").unwrap();
        assert_eq!(enum_err["detail"], "The value must be one of: initial, level_2, custom.");
        let (_, list) = call(&app, "GET", "/v2/accounts", Some(OPERATOR), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");
        let (st, body) = call(&app, "POST", "/v2/accounts", Some(OPERATOR), None).await;
        assert_eq!(
            (st, body["errors"][0]["source"]["pointer"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("/name"))
        );
        let req = Request::builder()
            .method("POST")
            .uri("/v2/accounts")
            .header("authorization", format!("Bearer {OPERATOR}"))
            .body(Body::from("{not json"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn patch_and_pages() {
    for app in apps().await {
        for name in ["Alpha", "Beta", "Gamma"] {
            call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(json!({"name": name}))).await;
        }
        let (_, p2) = call(&app, "GET", "/v2/accounts?page[number]=2&page[size]=1", Some(OPERATOR), None).await;
        assert_eq!(p2["meta"], json!({"page_number": 2, "page_size": 1, "total_pages": 3, "total_results": 3}));
        // Every page holds one account and together they hold all three (accounts created in the
        // same millisecond have no defined order between them).
        let mut names = Vec::new();
        for n in 1..=3 {
            let (_, p) =
                call(&app, "GET", &format!("/v2/accounts?page[number]={n}&page[size]=1"), Some(OPERATOR), None).await;
            assert_eq!(p["data"].as_array().unwrap().len(), 1);
            names.push(p["data"][0]["name"].as_str().unwrap().to_owned());
        }
        names.sort();
        assert_eq!(names, ["Alpha", "Beta", "Gamma"]);
        let (st, _) = call(&app, "GET", "/v2/accounts?page[size]=251", Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (_, f) = call(&app, "GET", "/v2/accounts?filter[name][contains]=amm", Some(OPERATOR), None).await;
        assert_eq!(f["meta"]["total_results"], 1);
        let id = f["data"][0]["id"].as_str().unwrap().to_owned();
        let (st, up) = call(
            &app,
            "PATCH",
            &format!("/v2/accounts/{id}"),
            Some(OPERATOR),
            Some(json!({"concurrent_call_limit": 25, "enabled": false})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_eq!(
            (up["data"]["name"].as_str(), up["data"]["concurrent_call_limit"].as_i64()),
            (Some("Gamma"), Some(25))
        );
        assert_eq!(up["data"]["enabled"], false);
        let (st, _) =
            call(&app, "PATCH", &format!("/v2/accounts/{id}"), Some(OPERATOR), Some(json!({"name": ""}))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let (_, again) = call(&app, "GET", &format!("/v2/accounts/{id}"), Some(OPERATOR), None).await;
        assert_eq!(again["data"]["name"], "Gamma", "a refused PATCH changes nothing");
    }
}

#[tokio::test]
async fn the_rate_deck_must_exist() {
    for app in apps().await {
        let body = json!({"name": "Acme", "rate_deck_id": "1234567890123456789"});
        let (st, err) = call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(body)).await;
        assert_eq!(
            (st, err["errors"][0]["source"]["pointer"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("/rate_deck_id"))
        );
        let deck = json!({"name": "retail", "rates": [{"prefix": "1", "rate": "0.0100"}]});
        let (st, d) = call(&app, "POST", "/v2/rate_decks", Some(OPERATOR), Some(deck)).await;
        assert_eq!(st, StatusCode::CREATED, "{d}");
        let deck_id = d["data"]["id"].as_str().unwrap();
        let (st, a) =
            call(&app, "POST", "/v2/accounts", Some(OPERATOR), Some(json!({"name": "Acme", "rate_deck_id": deck_id})))
                .await;
        assert_eq!((st, a["data"]["rate_deck_id"].as_str()), (StatusCode::CREATED, Some(deck_id)));
        let id = a["data"]["id"].as_str().unwrap();
        let (st, _) =
            call(&app, "PATCH", &format!("/v2/accounts/{id}"), Some(OPERATOR), Some(json!({"rate_deck_id": "999"})))
                .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let (st, _) =
            call(&app, "PATCH", &format!("/v2/accounts/{id}"), Some(OPERATOR), Some(json!({"rate_deck_id": null})))
                .await;
        assert_eq!(st, StatusCode::OK);
    }
}
