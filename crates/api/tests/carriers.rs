//! `/v2/carriers` through the router, on both store backends: operator only, defaults,
//! gateway validation with pointers (nothing stored when refused), credentials never shown,
//! inbound address overlap, PATCH merge, list filter/sort/pages and delete.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::{OPERATOR, apps, call, column, pointers};

const CARRIERS: &str = "/v2/carriers";

async fn account_key(app: &axum::Router) -> String {
    common::account(app, "Acme").await.1
}

async fn create(app: &axum::Router, body: Value) -> Value {
    common::post(app, CARRIERS, OPERATOR, body).await
}

fn names(list: &Value) -> Vec<&str> {
    column(list, "name")
}

async fn total(app: &axum::Router) -> Value {
    common::total(app, CARRIERS, OPERATOR).await
}

#[tokio::test]
async fn operator_only_with_defaults() {
    for app in apps().await {
        let (st, body) = call(&app, "GET", CARRIERS, None, None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));

        let c = create(&app, json!({"name": "Upstream A", "gateways": [{"host": "sip.upstream-a.example"}]})).await;
        let id = c["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(c["created_at"].as_str().unwrap().ends_with('Z') && c["updated_at"] == c["created_at"]);
        let mut expected = json!({
            "record_type": "carrier",
            "name": "Upstream A",
            "gateways": [{"host": "sip.upstream-a.example", "port": 5060, "transport": "UDP", "priority": 1, "weight": 1}],
            "routing": "sequential",
            "priority": 1,
            "prefixes": [],
            "inbound_ips": [],
            "username": null,
            "tech_prefix": null,
            "enabled": true,
        });
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = c[k].clone();
        }
        assert_eq!(c, expected);
        let uri = format!("{CARRIERS}/{id}");
        let (st, got) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));

        // An account's key gets 403 everywhere, its create stores nothing.
        let key = account_key(&app).await;
        for (method, uri, body) in [
            ("GET", CARRIERS.to_owned(), None),
            ("POST", CARRIERS.to_owned(), Some(json!({"name": "mine", "gateways": [{"host": "gw.example"}]}))),
            ("GET", uri.clone(), None),
            ("PATCH", uri.clone(), Some(json!({"enabled": false}))),
            ("DELETE", uri.clone(), None),
            ("GET", format!("{CARRIERS}/1234567890123456789"), None),
        ] {
            let (st, body) = call(&app, method, &uri, Some(&key), body).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("10010")), "{method}");
        }
        assert_eq!(total(&app).await, 1);
        let (_, got) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        assert_eq!(got["data"], expected, "untouched");

        // Every field, echoed; the password never.
        let full = json!({
            "name": "Upstream B",
            "gateways": [
                {"host": "[2001:db8::10]", "transport": "TLS"},
                {"host": "203.0.113.10", "port": 5080, "transport": "TCP", "priority": 2, "weight": 30},
                {"host": "203.0.113.10", "port": 5080, "transport": "UDP", "priority": 0, "weight": 65535}
            ],
            "routing": "round-robin",
            "priority": 5,
            "prefixes": ["1", "44207", "123456789012345"],
            "inbound_ips": ["198.51.100.0/24", "2001:db8:1::/48", "192.0.2.7"],
            "username": "trunk-user@x",
            "password": "s3cret pass",
            "tech_prefix": "1234",
            "enabled": false
        });
        let c = create(&app, full.clone()).await;
        assert!(c.get("password").is_none() && c.get("_password").is_none(), "{c}");
        assert_eq!(
            c["gateways"],
            json!([
                {"host": "2001:db8::10", "port": 5061, "transport": "TLS", "priority": 1, "weight": 1},
                {"host": "203.0.113.10", "port": 5080, "transport": "TCP", "priority": 2, "weight": 30},
                {"host": "203.0.113.10", "port": 5080, "transport": "UDP", "priority": 0, "weight": 65535}
            ])
        );
        for k in ["name", "routing", "priority", "prefixes", "inbound_ips", "username", "tech_prefix", "enabled"] {
            assert_eq!(c[k], full[k], "{k}");
        }
        let (_, got) =
            call(&app, "GET", &format!("{CARRIERS}/{}", c["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!(got["data"], c);
        let (_, list) = call(&app, "GET", CARRIERS, Some(OPERATOR), None).await;
        assert!(!list.to_string().contains("s3cret"), "{list}");
    }
}

#[tokio::test]
async fn validation_with_pointers_stores_nothing() {
    for app in apps().await {
        let gw = json!([{"host": "gw.example"}]);
        let cases = [
            (json!({"gateways": gw}), vec!["/name"]),
            (json!({"name": "x"}), vec!["/gateways"]),
            (json!({"name": "x", "gateways": null}), vec!["/gateways"]),
            (json!({"name": "x", "gateways": []}), vec!["/gateways"]),
            (json!({"name": "x", "gateways": {"host": "gw.example"}}), vec!["/gateways"]),
            (json!({"name": "x", "gateways": [{"host": "gw.example"}, "gw2.example"]}), vec!["/gateways/1"]),
            (json!({"name": "", "gateways": gw}), vec!["/name"]),
            (json!({"name": "x", "gateways": [{}]}), vec!["/gateways/0/host"]),
            (
                json!({"name": "x", "gateways": [{"host": "gw.example"}, {"host": "bad host"}]}),
                vec!["/gateways/1/host"],
            ),
            (json!({"name": "x", "gateways": [{"host": "999.1.1.1"}]}), vec!["/gateways/0/host"]),
            (json!({"name": "x", "gateways": [{"host": "[1.2.3.4]"}]}), vec!["/gateways/0/host"]),
            (
                json!({"name": "x", "gateways": [{"host": "gw.example"}, {"host": "gw2.example", "port": 0}]}),
                vec!["/gateways/1/port"],
            ),
            (json!({"name": "x", "gateways": [{"host": "gw.example", "port": 65536}]}), vec!["/gateways/0/port"]),
            (json!({"name": "x", "gateways": [{"host": "gw.example", "port": "5060"}]}), vec!["/gateways/0/port"]),
            (json!({"name": "x", "gateways": [{"host": "gw.example", "priority": -1}]}), vec!["/gateways/0/priority"]),
            (json!({"name": "x", "gateways": [{"host": "gw.example", "weight": 0}]}), vec!["/gateways/0/weight"]),
            (
                json!({"name": "x", "gateways": [{"host": "GW.example"}, {"host": "gw.example", "port": 5060}]}),
                vec!["/gateways/1/host"],
            ),
            (json!({"name": "x", "gateways": gw, "routing": "random"}), vec!["/routing"]),
            (json!({"name": "x", "gateways": gw, "priority": 1.5}), vec!["/priority"]),
            (json!({"name": "x", "gateways": gw, "prefixes": ["44", "+1"]}), vec!["/prefixes/1"]),
            (json!({"name": "x", "gateways": gw, "prefixes": "44"}), vec!["/prefixes"]),
            (json!({"name": "x", "gateways": gw, "inbound_ips": ["10.0.0.0/33"]}), vec!["/inbound_ips/0"]),
            (json!({"name": "x", "gateways": gw, "inbound_ips": ["10.0.0.1", "gw.example"]}), vec!["/inbound_ips/1"]),
            (json!({"name": "x", "gateways": gw, "username": "user"}), vec!["/password"]),
            (json!({"name": "x", "gateways": gw, "password": "secret"}), vec!["/username"]),
            (json!({"name": "x", "gateways": gw, "username": "a b", "password": "secret"}), vec!["/username"]),
            (json!({"name": "x", "gateways": gw, "tech_prefix": "12a"}), vec!["/tech_prefix"]),
            (json!({"name": "x", "gateways": gw, "enabled": "yes"}), vec!["/enabled"]),
        ];
        for (body, expected) in cases {
            let (st, resp) = call(&app, "POST", CARRIERS, Some(OPERATOR), Some(body.clone())).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {resp}");
            assert_eq!(pointers(&resp), expected, "{body} -> {resp}");
        }
        // Bad transport: the enumeration code; every fault reported at once.
        let (st, resp) = call(
            &app,
            "POST",
            CARRIERS,
            Some(OPERATOR),
            Some(json!({
                "gateways": [{"host": "gw.example", "transport": "udp"}, {"host": "-x", "port": 0, "weight": 0}],
                "routing": "random"
            })),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let mut got = pointers(&resp);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                "/gateways/0/transport",
                "/gateways/1/host",
                "/gateways/1/port",
                "/gateways/1/weight",
                "/name",
                "/routing"
            ]
        );
        let codes: Vec<&str> = resp["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
        assert_eq!(codes.iter().filter(|c| **c == "10032").count(), 2, "{resp}");
        assert_eq!(total(&app).await, 0, "nothing stored");

        let req = Request::builder()
            .method("POST")
            .uri(CARRIERS)
            .header("authorization", format!("Bearer {OPERATOR}"))
            .body(Body::from("[1]"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn patch_merges_and_credentials_pair() {
    for app in apps().await {
        let c = create(
            &app,
            json!({
                "name": "Upstream",
                "gateways": [{"host": "gw1.example"}, {"host": "gw2.example", "priority": 2}],
                "priority": 3,
                "prefixes": ["44"],
                "username": "user1",
                "password": "pass1",
                "tech_prefix": "99"
            }),
        )
        .await;
        let uri = format!("{CARRIERS}/{}", c["id"].as_str().unwrap());

        // Refused PATCHes change nothing.
        for (body, pointer) in [
            (json!({"name": null}), "/name"),
            (json!({"gateways": []}), "/gateways"),
            (json!({"gateways": null}), "/gateways"),
            (json!({"gateways": [{"host": "gw1.example", "transport": "SCTP"}]}), "/gateways/0/transport"),
            (json!({"password": null}), "/password"),
            (json!({"username": "user2", "password": null}), "/password"),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{body}");
        }
        let (_, got) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        assert_eq!(got["data"], c, "refused PATCHes change nothing");

        tokio::time::sleep(Duration::from_millis(5)).await;
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(OPERATOR),
            Some(json!({"gateways": [{"host": "gw3.example", "transport": "TCP"}], "priority": null, "routing": "round-robin", "tech_prefix": null})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = &up["data"];
        assert_eq!(
            up["gateways"],
            json!([{"host": "gw3.example", "port": 5060, "transport": "TCP", "priority": 1, "weight": 1}]),
            "the list is replaced"
        );
        assert_eq!(
            (&up["priority"], &up["routing"], &up["tech_prefix"]),
            (&json!(1), &json!("round-robin"), &Value::Null)
        );
        assert_eq!((&up["name"], &up["prefixes"], &up["username"]), (&c["name"], &c["prefixes"], &c["username"]));
        assert!(up["updated_at"].as_str() > c["updated_at"].as_str());
        assert_eq!(up["created_at"], c["created_at"]);
        assert!(up.get("password").is_none());

        // A new password alone keeps the username; clearing the username clears the password.
        let (st, _) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"password": "pass2"}))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, up) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"username": null}))).await;
        assert_eq!((st, &up["data"]["username"]), (StatusCode::OK, &Value::Null));
        let (st, resp) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"username": "user3"}))).await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]),
            "the password went too"
        );
        let (st, up) =
            call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"username": "user3", "password": "pass3"}))).await;
        assert_eq!((st, &up["data"]["username"]), (StatusCode::OK, &json!("user3")));

        let (st, _) =
            call(&app, "PATCH", &format!("{CARRIERS}/1234567890123456789"), Some(OPERATOR), Some(json!({}))).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn inbound_addresses_identify_one_carrier() {
    for app in apps().await {
        let gw = json!([{"host": "gw.example"}]);
        let a = create(&app, json!({"name": "A", "gateways": gw, "inbound_ips": ["198.51.100.0/24", "2001:db8::/32"]}))
            .await;
        for (ips, pointer) in [
            (json!(["198.51.100.77"]), "/inbound_ips/0"),
            (json!(["192.0.2.1", "198.51.0.0/16"]), "/inbound_ips/1"),
            (json!(["2001:db8:5::1"]), "/inbound_ips/0"),
            (json!(["0.0.0.0/0"]), "/inbound_ips/0"),
        ] {
            let (st, resp) = call(
                &app,
                "POST",
                CARRIERS,
                Some(OPERATOR),
                Some(json!({"name": "B", "gateways": gw, "inbound_ips": ips})),
            )
            .await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{resp}");
            assert!(resp["errors"][0]["detail"].as_str().unwrap().contains(a["id"].as_str().unwrap()));
        }
        assert_eq!(total(&app).await, 1);
        let b =
            create(&app, json!({"name": "B", "gateways": gw, "inbound_ips": ["198.51.101.0/24", "2001:db9::1"]})).await;
        // A carrier never conflicts with itself; it may not take another's either.
        let uri_a = format!("{CARRIERS}/{}", a["id"].as_str().unwrap());
        let (st, _) =
            call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"inbound_ips": ["198.51.100.0/25"]}))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, resp) =
            call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"inbound_ips": ["198.51.101.9"]}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/inbound_ips/0"]));
        // Once B is gone its addresses are free.
        let (st, _) =
            call(&app, "DELETE", &format!("{CARRIERS}/{}", b["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"inbound_ips": ["198.51.101.9"]}))).await;
        assert_eq!(st, StatusCode::OK);
    }
}

#[tokio::test]
async fn list_sort_filter_and_delete() {
    for app in apps().await {
        let gw = json!([{"host": "gw.example"}]);
        let mut ids = Vec::new();
        for (name, priority, enabled) in [("Bravo", 2, true), ("alpha", 3, false), ("Charlie", 1, true)] {
            let c = create(&app, json!({"name": name, "gateways": gw, "priority": priority, "enabled": enabled})).await;
            ids.push(c["id"].as_str().unwrap().to_owned());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let get = |q: &'static str| {
            let app = app.clone();
            async move {
                let (st, v) = call(&app, "GET", &format!("{CARRIERS}?{q}"), Some(OPERATOR), None).await;
                assert_eq!(st, StatusCode::OK, "{q}: {v}");
                names(&v).into_iter().map(str::to_owned).collect::<Vec<_>>()
            }
        };
        assert_eq!(get("").await, ["Charlie", "alpha", "Bravo"]);
        assert_eq!(get("sort=priority").await, ["Charlie", "Bravo", "alpha"]);
        assert_eq!(get("sort=-priority").await, ["alpha", "Bravo", "Charlie"]);
        assert_eq!(get("sort=name").await, ["alpha", "Bravo", "Charlie"]);
        assert_eq!(get("sort=created_at").await, ["Bravo", "alpha", "Charlie"]);
        assert_eq!(get("filter[enabled]=false").await, ["alpha"]);
        assert_eq!(get("filter[name][contains]=AR&sort=name").await, ["Charlie"]);
        assert_eq!(get("sort=name&page[size]=2&page[number]=2").await, ["Charlie"]);
        for bad in ["sort=host", "filter[enabled]=maybe", "page[size]=251"] {
            let (st, _) = call(&app, "GET", &format!("{CARRIERS}?{bad}"), Some(OPERATOR), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        }

        let uri = format!("{CARRIERS}/{}", ids[0]);
        let (_, before) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        let (st, gone) = call(&app, "DELETE", &uri, Some(OPERATOR), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &before["data"]));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(OPERATOR), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")));
        }
        assert_eq!(get("sort=name").await, ["alpha", "Charlie"]);
    }
}
