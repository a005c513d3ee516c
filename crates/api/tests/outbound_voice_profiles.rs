//! `/v2/outbound_voice_profiles` through the router, on both store backends: the contract's
//! defaults, every field echoed, validation with pointers, name required on PATCH, tenancy,
//! pagination, filter, sort and delete.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::{OPERATOR, apps, call, column, pointers};

const OVP: &str = "/v2/outbound_voice_profiles";

/// A new account: (id, key).
async fn account(app: &axum::Router, name: &str, limit: Value) -> (String, String) {
    common::account_with(app, json!({"name": name, "concurrent_call_limit": limit})).await
}

async fn create(app: &axum::Router, key: &str, body: Value) -> Value {
    common::post_as(app, OVP, key, body, StatusCode::OK).await
}

fn names(list: &Value) -> Vec<&str> {
    column(list, "name")
}

#[tokio::test]
async fn create_with_defaults_and_every_field_echoed() {
    for app in apps().await {
        let (st, body) = call(&app, "GET", OVP, None, None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (account_id, key) = account(&app, "Acme", json!(50)).await;

        // The contract answers 200 to a create, with every default filled in.
        let p = create(&app, &key, json!({"name": "office"})).await;
        let id = p["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        let created = p["created_at"].as_str().unwrap();
        assert_eq!(created.len(), "2018-02-02T22:25:27.521Z".len());
        assert!(created.ends_with('Z') && p["updated_at"] == p["created_at"]);
        let mut expected = json!({
            "name": "office",
            "record_type": "outbound_voice_profile",
            "enabled": true,
            "traffic_type": "conversational",
            "service_plan": "global",
            "usage_payment_method": "rate-deck",
            "whitelisted_destinations": ["US", "CA"],
            "concurrent_call_limit": null,
            "daily_spend_limit_enabled": false,
            "call_recording": {
                "call_recording_type": "none",
                "call_recording_caller_phone_numbers": [],
                "call_recording_channels": "single",
                "call_recording_format": "wav"
            },
            "billing_group_id": null,
            "tags": [],
            "connections_count": 0,
        });
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = p[k].clone();
        }
        assert_eq!(p, expected, "no extra fields: max_destination_rate, daily_spend_limit, calling_window unset");
        let (st, got) = call(&app, "GET", &format!("{OVP}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));

        // Every field of the contract's example, echoed.
        let full = json!({
            "name": "office-full",
            "billing_group_id": "6a09cdc3-8948-47f0-aa62-74ac943d6c58",
            "call_recording": {
                "call_recording_caller_phone_numbers": ["+19705555098"],
                "call_recording_channels": "dual",
                "call_recording_format": "mp3",
                "call_recording_type": "by_caller_phone_number"
            },
            "calling_window": {"calls_per_cld": 5, "end_time": "20:00:00.00Z", "start_time": "08:00:00.00Z"},
            "concurrent_call_limit": 10,
            "daily_spend_limit": "100.00",
            "daily_spend_limit_enabled": true,
            "enabled": false,
            "max_destination_rate": 10,
            "service_plan": "global",
            "tags": ["office-profile"],
            "traffic_type": "conversational",
            "usage_payment_method": "rate-deck",
            "whitelisted_destinations": ["US", "BR", "AU"]
        });
        let p = create(&app, &key, full.clone()).await;
        for (k, v) in full.as_object().unwrap() {
            assert_eq!(&p[k], v, "{k}");
        }
        assert_eq!(p["max_destination_rate"], json!(10), "kept as written");
        let p = create(&app, &key, json!({"name": "cheap", "max_destination_rate": 0.015})).await;
        assert_eq!(p["max_destination_rate"], json!(0.015));

        // The operator names the owning account, and sees it on the profile.
        let (st, body) = call(&app, "POST", OVP, Some(OPERATOR), Some(json!({"name": "ops"}))).await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (st, body) =
            call(&app, "POST", OVP, Some(OPERATOR), Some(json!({"name": "ops", "account_id": "1234567890123456789"})))
                .await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let p = create(&app, OPERATOR, json!({"name": "ops", "account_id": account_id})).await;
        assert_eq!(p["account_id"], json!(account_id));
        let (st, got) = call(&app, "GET", &format!("{OVP}/{}", p["id"].as_str().unwrap()), Some(&key), None).await;
        assert_eq!((st, got["data"]["name"].as_str()), (StatusCode::OK, Some("ops")));
        assert!(got["data"].get("account_id").is_none(), "the owner is shown to the operator only");
        let (_, list) = call(&app, "GET", OVP, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 4);
    }
}

#[tokio::test]
async fn validation_reports_every_fault_with_pointers_and_stores_nothing() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme", json!(20)).await;
        let bad = json!({
            "name": "ab",
            "enabled": "yes",
            "traffic_type": "bulk",
            "service_plan": "local",
            "usage_payment_method": "tariff",
            "whitelisted_destinations": ["US", "us", "USA", "ZZ"],
            "tags": "office",
            "concurrent_call_limit": -1,
            "daily_spend_limit": "100.001",
            "max_destination_rate": -0.5,
            "billing_group_id": "group-1",
            "call_recording": {
                "call_recording_type": "some",
                "call_recording_channels": "stereo",
                "call_recording_format": "ogg",
                "call_recording_caller_phone_numbers": ["+19705555098", "9705555098"]
            },
            "calling_window": {"start_time": "25:00", "end_time": "8pm", "calls_per_cld": -1}
        });
        let (st, body) = call(&app, "POST", OVP, Some(&key), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            pointers(&body),
            [
                "/name",
                "/enabled",
                "/traffic_type",
                "/service_plan",
                "/usage_payment_method",
                "/whitelisted_destinations/1",
                "/whitelisted_destinations/2",
                "/whitelisted_destinations/3",
                "/tags",
                "/concurrent_call_limit",
                "/daily_spend_limit",
                "/max_destination_rate",
                "/billing_group_id",
                "/call_recording/call_recording_type",
                "/call_recording/call_recording_channels",
                "/call_recording/call_recording_format",
                "/call_recording/call_recording_caller_phone_numbers/1",
                "/calling_window/start_time",
                "/calling_window/end_time",
                "/calling_window/calls_per_cld",
            ]
        );
        let errors = body["errors"].as_array().unwrap();
        let enums: Vec<&str> =
            errors.iter().filter(|e| e["code"] == "10032").map(|e| e["source"]["pointer"].as_str().unwrap()).collect();
        assert_eq!(
            enums,
            [
                "/traffic_type",
                "/service_plan",
                "/usage_payment_method",
                "/call_recording/call_recording_type",
                "/call_recording/call_recording_channels",
                "/call_recording/call_recording_format"
            ]
        );
        assert_eq!(errors[2]["detail"], "The value must be one of: conversational.");
        assert!(errors.iter().all(|e| e["title"].is_string() && e["detail"].is_string()));

        // Wrong types, one at a time.
        for (field, value) in [
            ("daily_spend_limit", json!(100)),
            ("daily_spend_limit", json!("1e3")),
            ("daily_spend_limit", json!("-5.00")),
            ("max_destination_rate", json!("10")),
            ("concurrent_call_limit", json!(1.5)),
            ("whitelisted_destinations", json!("US")),
            ("whitelisted_destinations", json!([1])),
            ("calling_window", json!("08:00-20:00")),
            ("call_recording", json!(["all"])),
        ] {
            let mut body = json!({"name": "office"});
            body[field] = value;
            let (st, resp) = call(&app, "POST", OVP, Some(&key), Some(body.clone())).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(pointers(&resp)[0].starts_with(&format!("/{field}")), "{body} -> {resp}");
        }

        // Rules across fields and against the account.
        let (_, resp) =
            call(&app, "POST", OVP, Some(&key), Some(json!({"name": "office", "daily_spend_limit_enabled": true})))
                .await;
        assert_eq!(pointers(&resp), ["/daily_spend_limit"]);
        let (_, resp) = call(
            &app,
            "POST",
            OVP,
            Some(&key),
            Some(json!({"name": "office", "call_recording": {"call_recording_type": "by_caller_phone_number"}})),
        )
        .await;
        assert_eq!(pointers(&resp), ["/call_recording/call_recording_caller_phone_numbers"]);
        let (_, resp) =
            call(&app, "POST", OVP, Some(&key), Some(json!({"name": "office", "concurrent_call_limit": 21}))).await;
        assert_eq!(pointers(&resp), ["/concurrent_call_limit"]);
        let (_, resp) = call(&app, "POST", OVP, Some(&key), Some(json!({"enabled": true}))).await;
        assert_eq!(pointers(&resp), ["/name"]);
        let (_, resp) = call(&app, "POST", OVP, Some(&key), None).await;
        assert_eq!(pointers(&resp), ["/name"]);
        let (_, resp) =
            call(&app, "POST", OVP, Some(&key), Some(json!({"name": "office", "account_id": "1234567890123456789"})))
                .await;
        assert_eq!(pointers(&resp), ["/account_id"]);

        let (_, list) = call(&app, "GET", OVP, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");
        let (_, list) = call(&app, "GET", OVP, Some(OPERATOR), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");

        let req = Request::builder()
            .method("POST")
            .uri(OVP)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from("{not json"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);

        // Edge values that are fine.
        let p = create(
            &app,
            &key,
            json!({
                "name": "edge",
                "whitelisted_destinations": [],
                "concurrent_call_limit": 20,
                "daily_spend_limit": "0",
                "max_destination_rate": 0,
                "calling_window": {"start_time": "22:00", "end_time": "06:00", "calls_per_cld": 0}
            }),
        )
        .await;
        assert_eq!(p["whitelisted_destinations"], json!([]));
        assert_eq!(p["calling_window"], json!({"start_time": "22:00", "end_time": "06:00", "calls_per_cld": 0}));
    }
}

#[tokio::test]
async fn patch_requires_name_and_changes_only_what_it_names() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme", json!(null)).await;
        let p = create(
            &app,
            &key,
            json!({
                "name": "office",
                "concurrent_call_limit": 5,
                "max_destination_rate": 0.1,
                "daily_spend_limit": "25.50",
                "tags": ["a"],
                "calling_window": {"start_time": "08:00", "end_time": "20:00"}
            }),
        )
        .await;
        let uri = format!("{OVP}/{}", p["id"].as_str().unwrap());

        // name is required on PATCH too; a refused PATCH changes nothing.
        let (st, body) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"enabled": false}))).await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/name"]));
        assert_eq!(body["errors"][0]["code"], "10015");
        let (st, body) = call(&app, "PATCH", &uri, Some(&key), None).await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/name"]));
        let (st, body) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"name": "xy", "enabled": false}))).await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/name"]));
        let (_, again) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(again["data"], p, "refused PATCHes change nothing");

        tokio::time::sleep(Duration::from_millis(5)).await;
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({
                "name": "office-2",
                "enabled": false,
                "concurrent_call_limit": null,
                "max_destination_rate": null,
                "whitelisted_destinations": ["GB"],
                "call_recording": {"call_recording_type": "all"},
                "calling_window": {"calls_per_cld": 3, "end_time": null}
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = &up["data"];
        assert_eq!((up["name"].as_str(), up["enabled"].as_bool()), (Some("office-2"), Some(false)));
        assert_eq!(up["concurrent_call_limit"], Value::Null);
        assert!(up.get("max_destination_rate").is_none(), "null clears it");
        assert_eq!(up["daily_spend_limit"], "25.50", "untouched fields stay");
        assert_eq!(up["tags"], json!(["a"]));
        assert_eq!(up["whitelisted_destinations"], json!(["GB"]));
        assert_eq!(
            up["call_recording"],
            json!({
                "call_recording_type": "all",
                "call_recording_caller_phone_numbers": [],
                "call_recording_channels": "single",
                "call_recording_format": "wav"
            })
        );
        assert_eq!(up["calling_window"], json!({"start_time": "08:00", "calls_per_cld": 3}));
        assert_eq!((&up["id"], &up["created_at"]), (&p["id"], &p["created_at"]));
        assert!(up["updated_at"].as_str() > p["updated_at"].as_str());
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(&got["data"], up);

        // `calls_per_cld` back to null ("no limit"; its contract type is a plain integer) is left out.
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"name": "office-2", "calling_window": {"calls_per_cld": null}})),
        )
        .await;
        assert_eq!((st, &up["data"]["calling_window"]), (StatusCode::OK, &json!({"start_time": "08:00"})));
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"name": "office-2", "calling_window": {"calls_per_cld": 3}})),
        )
        .await;
        assert_eq!((st, &up["data"]["calling_window"]["calls_per_cld"]), (StatusCode::OK, &json!(3)));
        let unlimited = json!({"name": "no-limit", "calling_window": {"start_time": "08:00", "calls_per_cld": null}});
        let n = create(&app, &key, unlimited).await;
        assert_eq!(n["calling_window"], json!({"start_time": "08:00"}), "null is left out");
        let (_, got) = call(&app, "GET", &format!("{OVP}/{}", n["id"].as_str().unwrap()), Some(&key), None).await;
        assert_eq!(got["data"]["calling_window"], json!({"start_time": "08:00"}));

        // Enabling the spend limit needs one; the stored one counts.
        let (st, _) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"name": "office-2", "daily_spend_limit_enabled": true})))
                .await;
        assert_eq!(st, StatusCode::OK);
        let (st, body) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"name": "office-2", "daily_spend_limit": null}))).await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/daily_spend_limit"]));
        let (st, body) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"name": "office-2", "account_id": "1234567890123456789"})),
        )
        .await;
        assert_eq!((st, pointers(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
    }
}

#[tokio::test]
async fn tenancy_each_account_sees_its_own() {
    for app in apps().await {
        let (id_a, key_a) = account(&app, "Alpha", json!(10)).await;
        let (id_b, key_b) = account(&app, "Bravo", json!(10)).await;
        let pa = create(&app, &key_a, json!({"name": "alpha-office"})).await;
        let pb = create(&app, &key_b, json!({"name": "bravo-office"})).await;
        create(&app, &key_b, json!({"name": "bravo-lab"})).await;
        let uri_a = format!("{OVP}/{}", pa["id"].as_str().unwrap());

        let (_, la) = call(&app, "GET", OVP, Some(&key_a), None).await;
        assert_eq!(names(&la), ["alpha-office"]);
        let (_, lb) = call(&app, "GET", OVP, Some(&key_b), None).await;
        assert_eq!(lb["meta"]["total_results"], 2);
        assert!(lb["data"].as_array().unwrap().iter().all(|p| p.get("account_id").is_none()));
        let (_, lb) = call(&app, "GET", &format!("{OVP}?filter[account_id]={id_a}"), Some(&key_b), None).await;
        assert_eq!(lb["meta"]["total_results"], 0, "an account cannot widen its view");

        // Another account's profile is 404, exactly like a missing one.
        let (_, missing) = call(&app, "GET", &format!("{OVP}/1234567890123456789"), Some(&key_b), None).await;
        for (method, body) in [("GET", None), ("PATCH", Some(json!({"name": "stolen"}))), ("DELETE", None)] {
            let (st, resp) = call(&app, method, &uri_a, Some(&key_b), body).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing), "{method}");
        }
        assert_eq!(missing["errors"][0]["code"], "10005");
        let (_, still) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(still["data"], pa);

        // The operator sees everyone's, with the owner, and may narrow by account.
        let (_, all) = call(&app, "GET", OVP, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 3);
        let (_, only_b) = call(&app, "GET", &format!("{OVP}?filter[account_id]={id_b}"), Some(OPERATOR), None).await;
        assert_eq!(only_b["meta"]["total_results"], 2);
        assert!(only_b["data"].as_array().unwrap().iter().all(|p| p["account_id"] == json!(id_b)));
        let (st, got) = call(&app, "GET", &format!("{OVP}/{}", pb["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!((st, got["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_b.as_str())));
        let (st, up) = call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"name": "alpha-hq"}))).await;
        assert_eq!((st, up["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_a.as_str())));
    }
}

#[tokio::test]
async fn list_pages_filter_and_sort() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme", json!(null)).await;
        for (name, enabled) in [("Office-East", true), ("lab", false), ("office-west", true), ("Warehouse", false)] {
            create(&app, &key, json!({"name": name, "enabled": enabled})).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }

        // Default: newest first, 20 a page.
        let (st, all) = call(&app, "GET", OVP, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(all["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 4}));
        assert_eq!(names(&all), ["Warehouse", "office-west", "lab", "Office-East"]);

        let (_, p2) = call(&app, "GET", &format!("{OVP}?page[number]=2&page[size]=3"), Some(&key), None).await;
        assert_eq!(p2["meta"], json!({"page_number": 2, "page_size": 3, "total_pages": 2, "total_results": 4}));
        assert_eq!(names(&p2), ["Office-East"]);
        let (_, p9) = call(&app, "GET", &format!("{OVP}?page[number]=9"), Some(&key), None).await;
        assert_eq!((p9["data"].as_array().unwrap().len(), &p9["meta"]["total_results"]), (0, &json!(4)));
        let (_, max) = call(&app, "GET", &format!("{OVP}?page[size]=250"), Some(&key), None).await;
        assert_eq!(max["meta"]["page_size"], 250);
        for bad in ["page[size]=251", "page[size]=0", "page[number]=0", "page[number]=x"] {
            let (st, body) = call(&app, "GET", &format!("{OVP}?{bad}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(body["errors"][0]["code"], "10015");
        }

        let (_, f) = call(&app, "GET", &format!("{OVP}?filter[name][contains]=OFFICE"), Some(&key), None).await;
        assert_eq!(names(&f), ["office-west", "Office-East"]);
        let (_, f) = call(&app, "GET", &format!("{OVP}?filter%5Bname%5D%5Bcontains%5D=ware"), Some(&key), None).await;
        assert_eq!(names(&f), ["Warehouse"]);
        let (_, f) = call(&app, "GET", &format!("{OVP}?filter[name][contains]=nothing"), Some(&key), None).await;
        assert_eq!(f["meta"]["total_results"], 0);

        let sorted = |q: &'static str| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "GET", &format!("{OVP}?{q}"), Some(&key), None).await;
                assert_eq!(st, StatusCode::OK, "{q}: {v}");
                names(&v).into_iter().map(str::to_owned).collect::<Vec<_>>()
            }
        };
        assert_eq!(sorted("sort=name").await, ["lab", "Office-East", "office-west", "Warehouse"]);
        assert_eq!(sorted("sort=-name").await, ["Warehouse", "office-west", "Office-East", "lab"]);
        assert_eq!(sorted("sort=created_at").await, ["Office-East", "lab", "office-west", "Warehouse"]);
        assert_eq!(sorted("sort=-created_at").await, ["Warehouse", "office-west", "lab", "Office-East"]);
        assert_eq!(sorted("sort=enabled").await, ["lab", "Warehouse", "Office-East", "office-west"]);
        assert_eq!(sorted("sort=-enabled").await, ["Office-East", "office-west", "lab", "Warehouse"]);
        assert_eq!(sorted("sort=service_plan").await.len(), 4);
        assert_eq!(sorted("sort=-name&filter[name][contains]=office&page[size]=1").await, ["office-west"]);

        for bad in ["sort=id", "sort=%2Bname", "sort=", "sort=-"] {
            let (st, body) = call(&app, "GET", &format!("{OVP}?{bad}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(body["errors"][0]["code"], "10032", "{bad}");
            assert!(body["errors"][0]["detail"].as_str().unwrap().contains("-usage_payment_method"));
        }
    }
}

#[tokio::test]
async fn delete_answers_the_profile_then_404() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme", json!(null)).await;
        let p = create(&app, &key, json!({"name": "office"})).await;
        let keep = create(&app, &key, json!({"name": "keep"})).await;
        let uri = format!("{OVP}/{}", p["id"].as_str().unwrap());
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &p));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        let (st, _) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"name": "office"}))).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, list) = call(&app, "GET", OVP, Some(&key), None).await;
        assert_eq!(list["data"], json!([keep]));
    }
}

/// The collection path of every connection type.
const CONNECTION_TYPES: [&str; 4] =
    ["/v2/credential_connections", "/v2/ip_connections", "/v2/fqdn_connections", "/v2/uac_connections"];

/// The body of a new connection of the type at `path` using profile `profile` (null: none).
fn connection_body(path: &str, name: &str, profile: Value) -> Value {
    let mut body = json!({"connection_name": name, "outbound": {"outbound_voice_profile_id": profile}});
    if path.ends_with("/credential_connections") {
        body["user_name"] = json!(format!("{name}user"));
        body["password"] = json!("secret-password-1");
    }
    body
}

/// A new connection of the type at `path` using profile `profile`: its URI.
async fn connection(app: &axum::Router, key: &str, path: &str, name: &str, profile: Value) -> String {
    let (st, c) = call(app, "POST", path, Some(key), Some(connection_body(path, name, profile))).await;
    assert_eq!(st, StatusCode::CREATED, "{path}: {c}");
    format!("{path}/{}", c["data"]["id"].as_str().unwrap())
}

async fn connections_count(app: &axum::Router, key: &str, uri: &str) -> Value {
    let (st, p) = call(app, "GET", uri, Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    p["data"]["connections_count"].clone()
}

#[tokio::test]
async fn a_profile_connections_use_is_not_deleted() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme", json!(null)).await;
        let p = create(&app, &key, json!({"name": "office"})).await;
        let uri = format!("{OVP}/{}", p["id"].as_str().unwrap());
        let mut conns = Vec::new();
        for (i, path) in CONNECTION_TYPES.iter().enumerate() {
            conns.push(connection(&app, &key, path, &format!("conn{i}"), p["id"].clone()).await);
            // Each type alone already holds it, for the account and for the operator.
            for k in [key.as_str(), OPERATOR] {
                let (st, body) = call(&app, "DELETE", &uri, Some(k), None).await;
                assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
                let errors = body["errors"].as_array().unwrap();
                assert_eq!(errors.len(), 1, "{body}");
                assert_eq!(
                    (errors[0]["code"].as_str(), errors[0]["title"].as_str()),
                    (Some("10015"), Some("Outbound voice profile in use"))
                );
                let count = if i == 0 { "1 connection uses".to_owned() } else { format!("{} connections use", i + 1) };
                let detail = errors[0]["detail"].as_str().unwrap();
                assert!(detail.starts_with(&count), "{detail}");
                assert_eq!(errors[0]["meta"]["url"], "https://developers.telnyx.com/docs/overview/errors/10015");
            }
            assert_eq!(connections_count(&app, &key, &uri).await, json!(i + 1), "nothing deleted");
        }
        // Detached (null), moved to another profile, deleted: each frees it.
        let other = create(&app, &key, json!({"name": "other"})).await;
        let changes = [
            ("PATCH", Some(json!({"outbound": {"outbound_voice_profile_id": null}}))),
            ("PATCH", Some(json!({"outbound": {"outbound_voice_profile_id": other["id"]}}))),
            ("DELETE", None),
            ("DELETE", None),
        ];
        for (n, (c, (method, body))) in conns.iter().zip(changes).enumerate() {
            let (st, resp) = call(&app, method, c, Some(&key), body).await;
            assert_eq!(st, StatusCode::OK, "{c}: {resp}");
            assert_eq!(connections_count(&app, &key, &uri).await, json!(3 - n));
        }
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!(
            (st, gone["data"]["id"].clone(), gone["data"]["connections_count"].clone()),
            (StatusCode::OK, p["id"].clone(), json!(0))
        );
        let (st, _) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // The other one is still in use by the moved connection.
        let (st, _) = call(&app, "DELETE", &format!("{OVP}/{}", other["id"].as_str().unwrap()), Some(&key), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn connections_count_counts_the_connections_using_it() {
    for app in apps().await {
        let (_, key_a) = account(&app, "Alpha", json!(null)).await;
        let (_, key_b) = account(&app, "Bravo", json!(null)).await;
        let p1 = create(&app, &key_a, json!({"name": "one"})).await;
        assert_eq!(p1["connections_count"], 0);
        let p2 = create(&app, &key_a, json!({"name": "two"})).await;
        let p3 = create(&app, &key_b, json!({"name": "three"})).await;
        let uri = |p: &Value| format!("{OVP}/{}", p["id"].as_str().unwrap());
        let [cred, ip, fqdn, uac] = CONNECTION_TYPES;
        let c_cred = connection(&app, &key_a, cred, "cred", p1["id"].clone()).await;
        connection(&app, &key_a, ip, "ip", p1["id"].clone()).await;
        let c_fqdn = connection(&app, &key_a, fqdn, "fqdn", p2["id"].clone()).await;
        connection(&app, &key_a, uac, "uac", Value::Null).await;
        connection(&app, &key_b, uac, "uacb", p3["id"].clone()).await;

        let counts = |list: &Value| -> Vec<(String, Value)> {
            let mut v: Vec<(String, Value)> = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["name"].as_str().unwrap().to_owned(), p["connections_count"].clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let expect = |v: &[(&str, i64)]| -> Vec<(String, Value)> {
            v.iter().map(|(n, c)| ((*n).to_owned(), json!(c))).collect()
        };
        assert_eq!(connections_count(&app, &key_a, &uri(&p1)).await, 2);
        assert_eq!(connections_count(&app, &key_a, &uri(&p2)).await, 1);
        assert_eq!(connections_count(&app, OPERATOR, &uri(&p3)).await, 1);
        let (_, list) = call(&app, "GET", OVP, Some(&key_a), None).await;
        assert_eq!(counts(&list), expect(&[("one", 2), ("two", 1)]));
        let (_, list) = call(&app, "GET", OVP, Some(OPERATOR), None).await;
        assert_eq!(counts(&list), expect(&[("one", 2), ("three", 1), ("two", 1)]));

        // Moving and deleting connections changes the counts; a PATCH of the profile shows it.
        let moved = json!({"outbound": {"outbound_voice_profile_id": p1["id"]}});
        let (st, _) = call(&app, "PATCH", &c_fqdn, Some(&key_a), Some(moved)).await;
        assert_eq!(st, StatusCode::OK);
        let (st, up) = call(&app, "PATCH", &uri(&p1), Some(&key_a), Some(json!({"name": "one"}))).await;
        assert_eq!((st, &up["data"]["connections_count"]), (StatusCode::OK, &json!(3)));
        assert_eq!(connections_count(&app, &key_a, &uri(&p2)).await, 0);
        let (st, _) = call(&app, "DELETE", &c_cred, Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        let (_, list) = call(&app, "GET", &format!("{OVP}?filter[name][contains]=o"), Some(&key_a), None).await;
        assert_eq!(counts(&list), expect(&[("one", 2), ("two", 0)]));
    }
}

#[tokio::test]
async fn every_connection_type_refuses_another_accounts_profile() {
    for app in apps().await {
        let (id_a, key_a) = account(&app, "Alpha", json!(null)).await;
        let (_, key_b) = account(&app, "Bravo", json!(null)).await;
        let own = create(&app, &key_a, json!({"name": "alpha"})).await["id"].clone();
        let foreign = create(&app, &key_b, json!({"name": "bravo"})).await["id"].clone();
        for path in CONNECTION_TYPES {
            // Named by the account's key or by the operator creating in account A.
            let mut by_operator = connection_body(path, "opconn", foreign.clone());
            by_operator["account_id"] = json!(id_a);
            for (key, body) in
                [(key_a.as_str(), connection_body(path, "aconn", foreign.clone())), (OPERATOR, by_operator)]
            {
                let (st, resp) = call(&app, "POST", path, Some(key), Some(body)).await;
                assert_eq!(
                    (st, pointers(&resp)),
                    (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/outbound_voice_profile_id"]),
                    "{path}"
                );
            }
            let c = connection(&app, &key_a, path, "aconn", own.clone()).await;
            for key in [key_a.as_str(), OPERATOR] {
                let body = json!({"outbound": {"outbound_voice_profile_id": foreign}});
                let (st, resp) = call(&app, "PATCH", &c, Some(key), Some(body)).await;
                assert_eq!(
                    (st, pointers(&resp)),
                    (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/outbound_voice_profile_id"]),
                    "{path}"
                );
            }
            let (_, got) = call(&app, "GET", &c, Some(&key_a), None).await;
            assert_eq!(got["data"]["outbound"]["outbound_voice_profile_id"], own, "{path}: unchanged");
            let (st, _) = call(&app, "DELETE", &c, Some(&key_a), None).await;
            assert_eq!(st, StatusCode::OK);
        }
        for (key, p) in [(&key_a, &own), (&key_b, &foreign)] {
            assert_eq!(connections_count(&app, key, &format!("{OVP}/{}", p.as_str().unwrap())).await, 0);
        }
    }
}
