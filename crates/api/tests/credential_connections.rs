//! `/v2/credential_connections` through the router, on both store backends: the contract's
//! defaults, the contract's example echoed, the password never stored (only its SIP digest,
//! kept private) and shown only by the request that sets it, a new user name needing the
//! password again, user names unique across accounts, validation with pointers, outbound voice
//! profiles of the same account only, tenancy, pages/filters/sort, PATCH merging, delete,
//! registration status.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store::Store;
use tower::ServiceExt;

mod common;

use common::{OPERATOR, account, apps_and_stores, call, column, pointers, profile};

const CC: &str = "/v2/credential_connections";

async fn create(app: &axum::Router, key: &str, body: Value) -> Value {
    common::post(app, CC, key, body).await
}

/// A minimal valid body.
fn minimal(name: &str, user: &str) -> Value {
    json!({"connection_name": name, "user_name": user, "password": "my123secure456password789"})
}

fn names(list: &Value) -> Vec<&str> {
    column(list, "connection_name")
}

async fn total(app: &axum::Router, key: &str) -> i64 {
    common::total(app, CC, key).await.as_i64().unwrap()
}

/// The stored document, private fields included.
async fn stored(store: &Store, id: &str) -> Value {
    common::stored(store, "credential_connection", id).await
}

/// The stored document as the store holds it, as text.
async fn stored_body(store: &Store, id: &str) -> String {
    common::stored_body(store, "credential_connection", id).await
}

/// A connection as every later request shows it: only the response to the request that sets
/// the password (create, or a PATCH with one) shows it.
fn without_password(c: &Value) -> Value {
    let mut c = c.clone();
    assert!(c.as_object_mut().unwrap().remove("password").is_some(), "the response that set it shows it: {c}");
    c
}

/// The `_digest` expected for `user` in the realm: HA1 in MD5 and SHA-256 of
/// `user:sip.opentrunk.local:password`, computed independently (`printf %s ... | md5sum`).
fn digest(user: &str, ha1_md5: &str, ha1_sha256: &str) -> Value {
    json!({"user_name": user, "realm": "sip.opentrunk.local", "ha1_md5": ha1_md5, "ha1_sha256": ha1_sha256})
}

fn expected_defaults() -> Value {
    json!({
        "active": true,
        "anchorsite_override": "Latency",
        "android_push_credential_id": null,
        "call_cost_in_webhooks": false,
        "connection_name": "office",
        "default_on_hold_comfort_noise_enabled": false,
        "dtmf_type": "RFC 2833",
        "encode_contact_header_enabled": false,
        "encrypted_media": null,
        "inbound": {
            "ani_number_format": "E.164-national",
            "codecs": ["G722", "G711U", "G711A", "G729", "OPUS", "H.264"],
            "dnis_number_format": "e164",
            "generate_ringback_tone": false,
            "isup_headers_enabled": false,
            "prack_enabled": false,
            "shaken_stir_enabled": false,
            "simultaneous_ringing": "disabled",
            "sip_compact_headers_enabled": true,
            "timeout_1xx_secs": 3,
            "timeout_2xx_secs": 90
        },
        "ios_push_credential_id": null,
        "jitter_buffer": {"enable_jitter_buffer": false, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60},
        "noise_suppression_details": {"engine": "denoiser", "attenuation_limit": 0},
        "onnet_t38_passthrough_enabled": false,
        "outbound": {
            "ani_override": "",
            "ani_override_type": "always",
            "call_parking_enabled": false,
            "generate_ringback_tone": false,
            "instant_ringback_enabled": true,
            "localization": "US",
            "t38_reinvite_source": "telnyx"
        },
        "password": "my123secure456password789",
        "record_type": "credential_connection",
        "rtcp_settings": {"capture_enabled": false, "port": "rtp+1", "report_frequency_secs": 5},
        "sip_uri_calling_preference": "disabled",
        "tags": [],
        "user_name": "myusername123",
        "webhook_api_version": "1",
        "webhook_timeout_secs": null,
    })
}

/// The contract defaults a response leaves out (their contract type cannot hold them: `channel_limit:
/// null` is no integer, `webhook_event_failover_url: ""` no URI); stored documents keep them.
fn unset_defaults() -> [(&'static str, Value); 3] {
    [
        ("/inbound/channel_limit", Value::Null),
        ("/outbound/channel_limit", Value::Null),
        ("/webhook_event_failover_url", json!("")),
    ]
}

#[tokio::test]
async fn create_with_defaults_echoed_and_the_digest_kept_private() {
    for (app, store) in apps_and_stores().await {
        let (st, body) = call(&app, "POST", CC, None, Some(minimal("office", "myusername123"))).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (account_id, key) = account(&app, "Acme").await;

        // 201 with every contract default; the password is in the contract's response schema.
        let c = create(&app, &key, minimal("office", "myusername123")).await;
        let id = c["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(c["created_at"].as_str().unwrap().ends_with('Z') && c["updated_at"] == c["created_at"]);
        let mut expected = expected_defaults();
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = c[k].clone();
        }
        assert_eq!(c, expected, "no extra fields: no _digest, no unset noise_suppression or webhook_event_url");

        // Later reads show everything but the password, which is not stored.
        let shown = without_password(&expected);
        let (st, got) = call(&app, "GET", &format!("{CC}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &shown));
        let (_, list) = call(&app, "GET", CC, Some(&key), None).await;
        assert_eq!(list["data"], json!([shown]));

        // Stored: the SIP digest HA1 (MD5 and SHA-256 of user:realm:password), not the password.
        let doc = stored(&store, id).await;
        assert_eq!(
            doc["_digest"],
            digest(
                "myusername123",
                "b046f88fafa33d8bbbb99323db59792b",
                "b453a5d8c98b27a3e6d81c0f7980421062006ff6d194d302a1c85b2dcc9d48bf"
            )
        );
        assert!(doc.get("password").is_none());
        assert!(!stored_body(&store, id).await.contains("my123secure456password789"));
        for (path, default) in unset_defaults() {
            assert_eq!(doc.pointer(path), Some(&default), "stored with its default: {path}");
        }

        // The contract's own example request, with a real profile id, is echoed field for field.
        let ovp = profile(&app, &key, "office-profile").await;
        let example = json!({
            "active": true,
            "anchorsite_override": "Latency",
            "android_push_credential_id": "06b09dfd-7154-4980-8b75-cebf7a9d4f8e",
            "call_cost_in_webhooks": false,
            "connection_name": "my name",
            "default_on_hold_comfort_noise_enabled": false,
            "dtmf_type": "RFC 2833",
            "encode_contact_header_enabled": true,
            "encrypted_media": "SRTP",
            "inbound": {
                "ani_number_format": "+E.164",
                "channel_limit": 10,
                "codecs": ["G722"],
                "dnis_number_format": "+e164",
                "generate_ringback_tone": true,
                "isup_headers_enabled": true,
                "prack_enabled": true,
                "shaken_stir_enabled": true,
                "simultaneous_ringing": "disabled",
                "sip_compact_headers_enabled": true,
                "timeout_1xx_secs": 10,
                "timeout_2xx_secs": 20
            },
            "ios_push_credential_id": "ec0c8e5d-439e-4620-a0c1-9d9c8d02a836",
            "jitter_buffer": {"enable_jitter_buffer": true, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60},
            "noise_suppression": "both",
            "noise_suppression_details": {"attenuation_limit": 80, "engine": "deep_filter_net"},
            "onnet_t38_passthrough_enabled": true,
            "outbound": {
                "ani_override": "always",
                "call_parking_enabled": true,
                "channel_limit": 10,
                "generate_ringback_tone": true,
                "instant_ringback_enabled": true,
                "localization": "US",
                "outbound_voice_profile_id": ovp,
                "t38_reinvite_source": "customer"
            },
            "password": "my123secure456password789",
            "rtcp_settings": {"capture_enabled": true, "port": "rtcp-mux", "report_frequency_secs": 10},
            "sip_uri_calling_preference": "disabled",
            "tags": ["tag1", "tag2"],
            "user_name": "exampleuser123",
            "webhook_api_version": "1",
            "webhook_event_failover_url": "https://failover.example.com",
            "webhook_event_url": "https://example.com",
            "webhook_timeout_secs": 25
        });
        let c = create(&app, &key, example.clone()).await;
        for (k, v) in example.as_object().unwrap() {
            if let Some(o) = v.as_object() {
                for (nk, nv) in o {
                    assert_eq!(&c[k][nk], nv, "{k}.{nk}");
                }
            } else {
                assert_eq!(&c[k], v, "{k}");
            }
        }
        assert_eq!(c["outbound"]["ani_override_type"], "always", "unsent nested fields keep their defaults");

        // texml is for call parking only.
        let mut body = minimal("texml", "texmluser1");
        body["webhook_api_version"] = json!("texml");
        let (st, resp) = call(&app, "POST", CC, Some(&key), Some(body.clone())).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/webhook_api_version"]));
        body["outbound"] = json!({"call_parking_enabled": true});
        assert_eq!(create(&app, &key, body).await["webhook_api_version"], "texml");

        // The operator names the owning account, and sees it.
        let (st, resp) = call(&app, "POST", CC, Some(OPERATOR), Some(minimal("ops", "opsuser1"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let mut body = minimal("ops", "opsuser1");
        body["account_id"] = json!("1234567890123456789");
        let (st, resp) = call(&app, "POST", CC, Some(OPERATOR), Some(body.clone())).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        body["account_id"] = json!(account_id);
        let c = create(&app, OPERATOR, body).await;
        assert_eq!(c["account_id"], json!(account_id));
        assert_eq!(c["password"], "my123secure456password789");
        assert!(c.get("_digest").is_none());
        let (_, got) = call(&app, "GET", &format!("{CC}/{}", c["id"].as_str().unwrap()), Some(&key), None).await;
        assert!(got["data"].get("account_id").is_none(), "the owner is shown to the operator only");
        assert!(got["data"].get("password").is_none());
        let (_, got) = call(&app, "GET", &format!("{CC}/{}", c["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!(got["data"], without_password(&c));
        let (_, all) = call(&app, "GET", CC, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 4);
        assert!(
            all["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.get("_digest").is_none() && c.get("password").is_none() && c["account_id"].is_string())
        );
    }
}

#[tokio::test]
async fn user_names_are_unique_across_accounts_regardless_of_case() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let a = create(&app, &key_a, minimal("alpha", "Alice2024")).await;
        assert_eq!(a["user_name"], "Alice2024", "kept as written");

        for taken in ["Alice2024", "alice2024", "ALICE2024"] {
            let (st, resp) = call(&app, "POST", CC, Some(&key_b), Some(minimal("bravo", taken))).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{taken}");
            assert_eq!(pointers(&resp), ["/user_name"]);
            assert_eq!(resp["errors"][0]["code"], "10007");
        }
        assert_eq!(total(&app, &key_b).await, 0, "nothing stored");

        // Renaming (with the password a new user name needs) onto a taken name is refused and
        // changes nothing; the own name in another case is fine.
        let b = create(&app, &key_b, minimal("bravo", "bob12345")).await;
        let a_id = a["id"].as_str().unwrap();
        let uri_a = format!("{CC}/{a_id}");
        let rename = |user: &str| json!({"user_name": user, "password": "an0ther-secret"});
        let before = stored_body(&store, a_id).await;
        let (st, resp) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(rename("BOB12345"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"]));
        assert_eq!(resp["errors"][0]["code"], "10007");
        let (_, got) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(got["data"], without_password(&a));
        assert_eq!(stored_body(&store, a_id).await, before, "neither the name nor the digest changed");
        let (st, up) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(rename("ALICE2024"))).await;
        assert_eq!(
            (st, up["data"]["user_name"].as_str(), up["data"]["password"].as_str()),
            (StatusCode::OK, Some("ALICE2024"), Some("an0ther-secret"))
        );
        assert_eq!(
            stored(&store, a_id).await["_digest"],
            digest(
                "ALICE2024",
                "a05d6adb50bfba4f39a2005533aeed3a",
                "23d758f84721ada53235f513837722533d99bca6b508518ab8def29c58b051d2"
            ),
            "the digest is made of the user name as written"
        );

        // A rename frees the old name.
        let (st, _) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(rename("carol2024"))).await;
        assert_eq!(st, StatusCode::OK);
        create(&app, &key_b, minimal("bravo-2", "alice2024")).await;
        assert_eq!(b["user_name"], "bob12345");
    }
}

#[tokio::test]
async fn validation_reports_every_fault_with_pointers_and_stores_nothing() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let bad = json!({
            "active": "yes",
            "anchorsite_override": "latency",
            "android_push_credential_id": "push-1",
            "connection_name": "",
            "dtmf_type": "rfc2833",
            "encrypted_media": "ZRTP",
            "jitter_buffer": {"jitterbuffer_msec_max": 401, "jitterbuffer_msec_min": 39},
            "noise_suppression": "loud",
            "noise_suppression_details": {"engine": "rnnoise", "attenuation_limit": 85},
            "rtcp_settings": {"port": "rtp+2", "report_frequency_secs": 4},
            "tags": ["ok", ""],
            "webhook_api_version": "3",
            "webhook_event_failover_url": "ftp://example.com",
            "webhook_event_url": "example.com",
            "webhook_timeout_secs": 31,
            "inbound": {
                "ani_number_format": "+e164",
                "codecs": ["G722", "PCMU"],
                "dnis_number_format": "test",
                "timeout_1xx_secs": 0,
                "timeout_2xx_secs": 601,
                "simultaneous_ringing": "on"
            },
            "outbound": {
                "ani_override_type": "sometimes",
                "channel_limit": -1,
                "localization": "USA",
                "t38_reinvite_source": "me"
            },
            "sip_uri_calling_preference": "everyone",
            "user_name": "ab",
            "password": "short"
        });
        let (st, body) = call(&app, "POST", CC, Some(&key), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            pointers(&body),
            [
                "/active",
                "/anchorsite_override",
                "/android_push_credential_id",
                "/connection_name",
                "/dtmf_type",
                "/encrypted_media",
                "/jitter_buffer/jitterbuffer_msec_max",
                "/jitter_buffer/jitterbuffer_msec_min",
                "/noise_suppression",
                "/noise_suppression_details/engine",
                "/noise_suppression_details/attenuation_limit",
                "/rtcp_settings/port",
                "/rtcp_settings/report_frequency_secs",
                "/tags/1",
                "/webhook_api_version",
                "/webhook_event_failover_url",
                "/webhook_event_url",
                "/webhook_timeout_secs",
                "/inbound/ani_number_format",
                "/inbound/codecs/1",
                "/inbound/dnis_number_format",
                "/inbound/timeout_1xx_secs",
                "/inbound/timeout_2xx_secs",
                "/inbound/simultaneous_ringing",
                "/outbound/ani_override_type",
                "/outbound/channel_limit",
                "/outbound/localization",
                "/outbound/t38_reinvite_source",
                "/sip_uri_calling_preference",
                "/user_name",
                "/password",
            ]
        );
        let errors = body["errors"].as_array().unwrap();
        let enums: Vec<&str> =
            errors.iter().filter(|e| e["code"] == "10032").map(|e| e["source"]["pointer"].as_str().unwrap()).collect();
        assert_eq!(
            enums,
            [
                "/anchorsite_override",
                "/dtmf_type",
                "/encrypted_media",
                "/noise_suppression",
                "/noise_suppression_details/engine",
                "/rtcp_settings/port",
                "/webhook_api_version",
                "/inbound/ani_number_format",
                "/inbound/dnis_number_format",
                "/inbound/simultaneous_ringing",
                "/outbound/ani_override_type",
                "/outbound/t38_reinvite_source",
                "/sip_uri_calling_preference",
            ]
        );
        assert!(errors.iter().all(|e| e["title"].is_string() && e["detail"].is_string()));

        // Required fields.
        let (_, resp) = call(&app, "POST", CC, Some(&key), Some(json!({}))).await;
        assert_eq!(pointers(&resp), ["/connection_name", "/user_name", "/password"]);
        let (_, resp) = call(&app, "POST", CC, Some(&key), None).await;
        assert_eq!(pointers(&resp), ["/connection_name", "/user_name", "/password"]);
        let (_, resp) = call(
            &app,
            "POST",
            CC,
            Some(&key),
            Some(json!({"connection_name": null, "user_name": null, "password": null})),
        )
        .await;
        assert_eq!(pointers(&resp), ["/connection_name", "/user_name", "/password"]);

        // One fault at a time.
        for (field, value, pointer) in [
            ("user_name", json!("12345abc"), "/user_name"),
            ("user_name", json!("user_name"), "/user_name"),
            ("user_name", json!("x".repeat(33)), "/user_name"),
            ("user_name", json!(12345678), "/user_name"),
            (
                "jitter_buffer",
                json!({"jitterbuffer_msec_min": 300, "jitterbuffer_msec_max": 100}),
                "/jitter_buffer/jitterbuffer_msec_min",
            ),
            ("jitter_buffer", json!({"jitterbuffer_msec_min": 201}), "/jitter_buffer/jitterbuffer_msec_min"),
            ("jitter_buffer", json!("on"), "/jitter_buffer"),
            ("inbound", json!({"codecs": []}), "/inbound/codecs"),
            ("inbound", json!({"channel_limit": 1.5}), "/inbound/channel_limit"),
            ("inbound", json!(["G722"]), "/inbound"),
            ("outbound", json!({"call_parking_enabled": "yes"}), "/outbound/call_parking_enabled"),
            ("outbound", json!({"ani_override": "+1 970"}), "/outbound/ani_override"),
            (
                "noise_suppression_details",
                json!({"attenuation_limit": 110}),
                "/noise_suppression_details/attenuation_limit",
            ),
            ("webhook_timeout_secs", json!(-1), "/webhook_timeout_secs"),
            ("tags", json!("tag1"), "/tags"),
            ("account_id", json!("1234567890123456789"), "/account_id"),
        ] {
            let mut body = minimal("office", "myusername123");
            body[field] = value;
            let (st, resp) = call(&app, "POST", CC, Some(&key), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{body}");
        }
        let (_, resp) = call(
            &app,
            "POST",
            CC,
            Some(&key),
            Some(json!({"connection_name": "x", "user_name": "myusername123", "password": "secret-pw", "inbound": {"dnis_number_format": "test"}})),
        )
        .await;
        assert_eq!(
            (resp["errors"][0]["code"].as_str(), pointers(&resp)),
            (Some("10032"), vec!["/inbound/dnis_number_format"])
        );

        let req = Request::builder()
            .method("POST")
            .uri(CC)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from("{not json"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
        assert_eq!(total(&app, &key).await, 0, "nothing stored");
        let (_, all) = call(&app, "GET", CC, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 0, "nothing stored");

        // Edge values that are fine, and the user name is still free.
        let mut edge = minimal("e", "abcd");
        edge["password"] = json!("p".repeat(128));
        edge["jitter_buffer"] = json!({"jitterbuffer_msec_min": 400, "jitterbuffer_msec_max": 400});
        edge["inbound"] = json!({"timeout_1xx_secs": 120, "timeout_2xx_secs": 1, "channel_limit": 0});
        edge["noise_suppression_details"] = json!({"engine": "quail_voice_focus"});
        edge["webhook_timeout_secs"] = json!(0);
        edge["outbound"] = json!({"localization": ""});
        let c = create(&app, &key, edge).await;
        assert_eq!(c["password"], json!("p".repeat(128)));
        assert_eq!(c["jitter_buffer"]["jitterbuffer_msec_min"], 400);
        assert_eq!(c["noise_suppression_details"], json!({"engine": "quail_voice_focus", "attenuation_limit": 100}));
        create(&app, &key, minimal("office", "myusername123")).await;
    }
}

#[tokio::test]
async fn outbound_voice_profile_must_be_the_accounts_own() {
    for (app, _) in apps_and_stores().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let own = profile(&app, &key_a, "alpha-profile").await;
        let foreign = profile(&app, &key_b, "bravo-profile").await;

        let with = |p: &str| {
            let mut body = minimal("office", "alphauser1");
            body["outbound"] = json!({"outbound_voice_profile_id": p});
            body
        };
        for (key, p) in [(&key_a, &foreign), (&key_a, &"1234567890123456789".to_owned())] {
            let (st, resp) = call(&app, "POST", CC, Some(key), Some(with(p))).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(pointers(&resp), ["/outbound/outbound_voice_profile_id"]);
        }
        let mut body = with(&foreign);
        body["account_id"] = json!(id_a);
        let (st, resp) = call(&app, "POST", CC, Some(OPERATOR), Some(body)).await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/outbound_voice_profile_id"])
        );
        assert_eq!(total(&app, &key_a).await, 0, "nothing stored");

        let c = create(&app, &key_a, with(&own)).await;
        assert_eq!(c["outbound"]["outbound_voice_profile_id"], json!(own));
        let other = create(&app, &key_a, minimal("no-profile", "alphauser2")).await;
        assert!(other["outbound"].get("outbound_voice_profile_id").is_none(), "absent until set");
        let (_, f) =
            call(&app, "GET", &format!("{CC}?filter[outbound_voice_profile_id]={own}"), Some(&key_a), None).await;
        assert_eq!(names(&f), ["office"]);
        let (_, f) =
            call(&app, "GET", &format!("{CC}?filter[outbound.outbound_voice_profile_id]={own}"), Some(&key_a), None)
                .await;
        assert_eq!(names(&f), ["office"]);

        let uri = format!("{CC}/{}", c["id"].as_str().unwrap());
        let (st, resp) =
            call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"outbound": {"outbound_voice_profile_id": foreign}})))
                .await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/outbound_voice_profile_id"])
        );
        let (st, up) =
            call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"outbound": {"outbound_voice_profile_id": null}})))
                .await;
        assert_eq!(st, StatusCode::OK);
        assert!(up["data"]["outbound"].get("outbound_voice_profile_id").is_none(), "null clears it");
        assert_eq!(up["data"]["outbound"]["localization"], "US");
    }
}

#[tokio::test]
async fn tenancy_each_account_sees_its_own() {
    for (app, _) in apps_and_stores().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (id_b, key_b) = account(&app, "Bravo").await;
        let a = create(&app, &key_a, minimal("alpha-office", "alphauser")).await;
        create(&app, &key_b, minimal("bravo-office", "bravouser")).await;
        let uri_a = format!("{CC}/{}", a["id"].as_str().unwrap());

        let (_, la) = call(&app, "GET", CC, Some(&key_a), None).await;
        assert_eq!(names(&la), ["alpha-office"]);
        let (_, lb) = call(&app, "GET", &format!("{CC}?filter[account_id]={id_a}"), Some(&key_b), None).await;
        assert_eq!(lb["meta"]["total_results"], 0, "an account cannot widen its view");

        // Another account's connection is 404, exactly like a missing one.
        let (_, missing) = call(&app, "GET", &format!("{CC}/1234567890123456789"), Some(&key_b), None).await;
        assert_eq!(missing["errors"][0]["code"], "10005");
        for (method, uri, body) in [
            ("GET", uri_a.clone(), None),
            ("PATCH", uri_a.clone(), Some(json!({"connection_name": "stolen"}))),
            ("DELETE", uri_a.clone(), None),
            ("POST", format!("{uri_a}/actions/check_registration_status"), None),
        ] {
            let (st, resp) = call(&app, method, &uri, Some(&key_b), body).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing), "{method} {uri}");
        }
        let (_, still) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(still["data"], without_password(&a));

        // The owner cannot change; the operator sees everyone's and may narrow by account.
        let (st, resp) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"account_id": id_b}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (_, all) = call(&app, "GET", CC, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 2);
        let (_, only_b) = call(&app, "GET", &format!("{CC}?filter[account_id]={id_b}"), Some(OPERATOR), None).await;
        assert_eq!(names(&only_b), ["bravo-office"]);
        assert_eq!(only_b["data"][0]["account_id"], json!(id_b));
        let (st, up) = call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"connection_name": "alpha-hq"}))).await;
        assert_eq!((st, up["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_a.as_str())));
        assert!(up["data"].get("password").is_none(), "a PATCH without a password does not show one");
    }
}

#[tokio::test]
async fn list_pages_filter_and_sort() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        for (i, (name, active)) in
            [("Office-East", true), ("lab", false), ("office-west", true), ("Warehouse", false)].into_iter().enumerate()
        {
            let mut body = minimal(name, &format!("listuser{i}"));
            body["active"] = json!(active);
            create(&app, &key, body).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }

        // Default: newest first, 250 a page.
        let (st, all) = call(&app, "GET", CC, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(all["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 4}));
        assert_eq!(names(&all), ["Warehouse", "office-west", "lab", "Office-East"]);

        let mut seen = Vec::new();
        for n in 1..=4 {
            let (_, p) = call(&app, "GET", &format!("{CC}?page[size]=1&page[number]={n}"), Some(&key), None).await;
            assert_eq!(p["meta"], json!({"page_number": n, "page_size": 1, "total_pages": 4, "total_results": 4}));
            seen.extend(names(&p).into_iter().map(str::to_owned));
        }
        assert_eq!(seen, ["Warehouse", "office-west", "lab", "Office-East"]);
        let (_, p5) = call(&app, "GET", &format!("{CC}?page[size]=1&page[number]=5"), Some(&key), None).await;
        assert_eq!(p5["data"], json!([]));
        for bad in ["page[size]=251", "page[size]=0", "page[number]=0", "page[number]=x"] {
            let (st, body) = call(&app, "GET", &format!("{CC}?{bad}"), Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")), "{bad}");
        }

        let (_, f) = call(&app, "GET", &format!("{CC}?filter[connection_name][contains]=OFF"), Some(&key), None).await;
        assert_eq!(names(&f), ["office-west", "Office-East"]);
        let (_, f) =
            call(&app, "GET", &format!("{CC}?filter%5Bconnection_name%5D%5Bcontains%5D=house"), Some(&key), None).await;
        assert_eq!(names(&f), ["Warehouse"]);
        let (st, body) =
            call(&app, "GET", &format!("{CC}?filter[connection_name][contains]=of"), Some(&key), None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")));
        let (_, f) = call(&app, "GET", &format!("{CC}?filter[fqdn]=example.com"), Some(&key), None).await;
        assert_eq!(f["meta"]["total_results"], 0, "credential connections have no fqdn");

        let sorted = |q: &'static str| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "GET", &format!("{CC}?{q}"), Some(&key), None).await;
                assert_eq!(st, StatusCode::OK, "{q}: {v}");
                names(&v).into_iter().map(str::to_owned).collect::<Vec<_>>()
            }
        };
        assert_eq!(sorted("sort=connection_name").await, ["lab", "Office-East", "office-west", "Warehouse"]);
        assert_eq!(sorted("sort=-connection_name").await, ["Warehouse", "office-west", "Office-East", "lab"]);
        assert_eq!(sorted("sort=created_at").await, ["Office-East", "lab", "office-west", "Warehouse"]);
        assert_eq!(sorted("sort=-created_at").await, ["Warehouse", "office-west", "lab", "Office-East"]);
        assert_eq!(sorted("sort=active").await, ["lab", "Warehouse", "Office-East", "office-west"]);
        assert_eq!(sorted("sort=-active").await, ["Office-East", "office-west", "lab", "Warehouse"]);
        assert_eq!(
            sorted("sort=connection_name&filter[connection_name][contains]=office&page[size]=1&page[number]=2").await,
            ["office-west"]
        );
        for bad in ["sort=name", "sort=%2Bactive", "sort=", "sort=-"] {
            let (st, body) = call(&app, "GET", &format!("{CC}?{bad}"), Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10032")), "{bad}");
        }
    }
}

#[tokio::test]
async fn patch_merges_what_it_names_and_recomputes_the_digest() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let mut body = minimal("office", "myusername123");
        body["tags"] = json!(["a"]);
        body["webhook_timeout_secs"] = json!(10);
        body["dtmf_type"] = json!("Inband");
        body["webhook_event_url"] = json!("https://example.com/hooks");
        let c = create(&app, &key, body).await;
        let id = c["id"].as_str().unwrap();
        let uri = format!("{CC}/{id}");
        let digest_before = stored(&store, id).await["_digest"].clone();

        // Refused PATCHes change nothing.
        for (bad, pointer) in [
            (json!({"connection_name": null}), "/connection_name"),
            (json!({"user_name": null}), "/user_name"),
            (json!({"password": "short"}), "/password"),
            (json!({"webhook_api_version": "texml"}), "/webhook_api_version"),
            (json!({"jitter_buffer": {"jitterbuffer_msec_min": 250}}), "/jitter_buffer/jitterbuffer_msec_min"),
            (json!({"inbound": {"timeout_2xx_secs": 0}}), "/inbound/timeout_2xx_secs"),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(bad.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{bad}");
        }
        let (_, again) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(again["data"], without_password(&c));
        assert_eq!(stored(&store, id).await["_digest"], digest_before);

        tokio::time::sleep(Duration::from_millis(5)).await;
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({
                "connection_name": "office-2",
                "active": false,
                "dtmf_type": null,
                "webhook_timeout_secs": null,
                "webhook_event_url": null,
                "inbound": {"codecs": ["OPUS", "G711U"], "channel_limit": 4},
                "outbound": {"localization": "GB"},
                "jitter_buffer": {"enable_jitter_buffer": true, "jitterbuffer_msec_max": 300},
                "noise_suppression": "inbound",
                "noise_suppression_details": {"engine": "krisp_viva_tel"},
                "password": "n3w-secret-pass",
                "user_name": "Alice2024"
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = &up["data"];
        assert_eq!((up["connection_name"].as_str(), up["active"].as_bool()), (Some("office-2"), Some(false)));
        assert_eq!(up["dtmf_type"], "RFC 2833", "null returns a field to its default");
        assert_eq!(up["webhook_timeout_secs"], Value::Null);
        assert!(up.get("webhook_event_url").is_none(), "null removes a field without a default");
        assert_eq!(up["tags"], json!(["a"]), "untouched fields stay");
        assert_eq!(up["inbound"]["codecs"], json!(["OPUS", "G711U"]));
        assert_eq!(up["inbound"]["channel_limit"], 4);
        assert_eq!(up["inbound"]["dnis_number_format"], "e164", "objects merge key by key");
        assert_eq!(up["outbound"]["localization"], "GB");
        assert_eq!(up["outbound"]["instant_ringback_enabled"], true);
        assert_eq!(
            up["jitter_buffer"],
            json!({"enable_jitter_buffer": true, "jitterbuffer_msec_max": 300, "jitterbuffer_msec_min": 60})
        );
        assert_eq!(up["noise_suppression"], "inbound");
        assert_eq!(up["noise_suppression_details"], json!({"engine": "krisp_viva_tel", "attenuation_limit": 80}));
        assert_eq!((up["user_name"].as_str(), up["password"].as_str()), (Some("Alice2024"), Some("n3w-secret-pass")));
        assert!(up.get("_digest").is_none());
        assert_eq!((&up["id"], &up["created_at"]), (&c["id"], &c["created_at"]));
        assert!(up["updated_at"].as_str() > c["updated_at"].as_str());
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"], without_password(up));

        let new_digest = stored(&store, id).await["_digest"].clone();
        assert_ne!(new_digest, digest_before);
        assert_eq!(
            new_digest,
            digest(
                "Alice2024",
                "9519b86e9bfd830b6fc341bc1140f231",
                "e06535b42ae66d23dd729d79be907a0267e1e78097ac1fe7412fb4254700e921"
            )
        );

        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({
                "noise_suppression_details": {"attenuation_limit": 50},
                "jitter_buffer": null,
                "inbound": {"channel_limit": null}
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert!(up["data"]["inbound"].get("channel_limit").is_none(), "null unsets it: left out again");
        assert_eq!(up["data"]["inbound"]["codecs"], json!(["OPUS", "G711U"]));
        assert_eq!(stored(&store, id).await["inbound"]["channel_limit"], Value::Null, "stored as the default");
        assert_eq!(
            up["data"]["noise_suppression_details"],
            json!({"engine": "krisp_viva_tel", "attenuation_limit": 50})
        );
        assert_eq!(up["data"]["jitter_buffer"], expected_defaults()["jitter_buffer"], "null resets an object");
        assert!(up["data"].get("password").is_none());
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK, "an empty PATCH changes nothing but updated_at");
        assert_eq!(up["data"]["connection_name"], "office-2");
        assert!(up["data"].get("password").is_none());
        assert_eq!(stored(&store, id).await["_digest"], new_digest);
    }
}

#[tokio::test]
async fn delete_answers_the_connection_then_404_and_frees_the_user_name() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let c = create(&app, &key_a, minimal("office", "myusername123")).await;
        let keep = create(&app, &key_a, minimal("keep", "keepuser1")).await;
        let uri = format!("{CC}/{}", c["id"].as_str().unwrap());
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key_a), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &without_password(&c)));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(&key_a), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        let (st, _) = call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"connection_name": "x"}))).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = call(&app, "POST", &format!("{uri}/actions/check_registration_status"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, list) = call(&app, "GET", CC, Some(&key_a), None).await;
        assert_eq!(list["data"], json!([without_password(&keep)]));

        // The user name is free again, for any account.
        create(&app, &key_b, minimal("reborn", "MyUserName123")).await;
    }
}

#[tokio::test]
async fn registration_status_is_not_registered_until_a_registrar_exists() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let c = create(&app, &key, minimal("office", "myusername123")).await;
        let uri = format!("{CC}/{}/actions/check_registration_status", c["id"].as_str().unwrap());
        let (st, body) = call(&app, "POST", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            json!({"data": {"record_type": "registration_status", "sip_username": "myusername123", "status": "Not Registered"}})
        );
        let (st, body) = call(&app, "POST", &uri, Some(OPERATOR), None).await;
        assert_eq!((st, body["data"]["status"].as_str()), (StatusCode::OK, Some("Not Registered")));
        let (st, _) = call(&app, "POST", &uri, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = call(
            &app,
            "POST",
            &format!("{CC}/1234567890123456789/actions/check_registration_status"),
            Some(&key),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_stored_document_holds_no_password_only_its_digest() {
    for (app, store) in apps_and_stores().await {
        let (account_id, key) = account(&app, "Acme").await;
        let secret = "Plain-Text-Never-Stored-42";
        let expected = digest(
            "storeduser1",
            "6e89076379b6a6364bef66cdbd2eef02",
            "a02d266199e1ff5a08917f72101f87a682809a1a160bbd6e6ab7e8524e66aa3b",
        );
        let mut body = minimal("stored", "storeduser1");
        body["password"] = json!(secret);
        let c = create(&app, &key, body.clone()).await;
        assert_eq!(c["password"], secret, "the create response shows it");
        let id = c["id"].as_str().unwrap();

        let raw = stored_body(&store, id).await;
        assert!(!raw.contains(secret), "no plain password anywhere in the stored body: {raw}");
        let doc: Value = serde_json::from_str(&raw).unwrap();
        assert!(doc.get("password").is_none());
        assert_eq!(doc["_digest"], expected);
        assert_eq!(doc["_digest"]["user_name"], doc["user_name"]);

        // The operator creating one for an account: the same.
        body["user_name"] = json!("storeduser2");
        body["account_id"] = json!(account_id);
        let c2 = create(&app, OPERATOR, body).await;
        assert_eq!(c2["password"], secret);
        let raw = stored_body(&store, c2["id"].as_str().unwrap()).await;
        assert!(!raw.contains(secret), "{raw}");
        assert_eq!(serde_json::from_str::<Value>(&raw).unwrap()["_digest"]["user_name"], "storeduser2");

        // PATCHes without a password keep the digest and store no password either.
        let uri = format!("{CC}/{id}");
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"connection_name": "stored-2"}))).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert!(up["data"].get("password").is_none());
        let raw = stored_body(&store, id).await;
        assert!(!raw.contains(secret), "{raw}");
        assert_eq!(serde_json::from_str::<Value>(&raw).unwrap()["_digest"], expected);

        // Nothing shows the digest or the password after creation.
        let (_, got) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        let (_, list) = call(&app, "GET", CC, Some(OPERATOR), None).await;
        let (_, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        for shown in [&got["data"], &list["data"][0], &list["data"][1], &gone["data"]] {
            assert!(shown["id"].is_string(), "{shown}");
            assert!(shown.get("password").is_none() && shown.get("_digest").is_none(), "{shown}");
            assert!(!shown.to_string().contains(secret), "{shown}");
        }
    }
}

#[tokio::test]
async fn a_new_password_is_shown_by_its_patch_only_and_changes_the_digest() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let mut body = minimal("office", "patchuser1");
        body["password"] = json!("first-secret-pw1");
        let c = create(&app, &key, body).await;
        let id = c["id"].as_str().unwrap();
        let uri = format!("{CC}/{id}");
        let first = digest(
            "patchuser1",
            "278573c92e619023fb58bf5fd9ea89d3",
            "f890bc124c4259d19499d92bf54940f752f44a075d9097b7447f024f33f055b5",
        );
        let second = digest(
            "patchuser1",
            "e9f4c201b55dfc506381f25c33dcf1dc",
            "75b54368aace42f6c1eccc24eb1c3ab67e9956942fa9fb65969cf626acb3f832",
        );
        assert_eq!(stored(&store, id).await["_digest"], first);

        // A refused new password changes nothing; null is no way to remove it.
        for bad in [json!({"password": "short"}), json!({"password": null}), json!({"password": 12345678})] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(bad.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]), "{bad}");
            assert_eq!(stored(&store, id).await["_digest"], first, "{bad}");
        }

        // The PATCH that sets it shows it, with the rest of the connection.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"password": "s3cond-secret-pw"}))).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = &up["data"];
        assert_eq!((up["password"].as_str(), up["user_name"].as_str()), (Some("s3cond-secret-pw"), Some("patchuser1")));
        assert!(up.get("_digest").is_none());
        let mut same = without_password(up);
        same["updated_at"] = c["updated_at"].clone();
        assert_eq!(same, without_password(&c), "only the password (and updated_at) changed");
        assert!(up["updated_at"].as_str() > c["updated_at"].as_str());

        // The digest is the new password's; neither password is stored.
        let raw = stored_body(&store, id).await;
        assert!(!raw.contains("s3cond-secret-pw") && !raw.contains("first-secret-pw1"), "{raw}");
        let doc: Value = serde_json::from_str(&raw).unwrap();
        assert_ne!(doc["_digest"], first);
        assert_eq!(doc["_digest"], second);

        // Later requests do not show it.
        let shown = without_password(up);
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"], shown);
        let (_, list) = call(&app, "GET", CC, Some(&key), None).await;
        assert_eq!(list["data"], json!([shown]));
        let (st, up2) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"tags": ["x"]}))).await;
        assert_eq!(st, StatusCode::OK);
        assert!(up2["data"].get("password").is_none());
        assert_eq!(stored(&store, id).await["_digest"], second, "a PATCH without a password keeps the digest");

        // Setting the same password again is fine, and shown again by that PATCH.
        let (st, up3) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"password": "s3cond-secret-pw"}))).await;
        assert_eq!((st, up3["data"]["password"].as_str()), (StatusCode::OK, Some("s3cond-secret-pw")));
        assert_eq!(stored(&store, id).await["_digest"], second);
        let (_, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!(gone["data"], without_password(&up3["data"]));
    }
}

#[tokio::test]
async fn a_new_user_name_needs_the_password_again() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let c = create(&app, &key_a, minimal("office", "origuser1")).await;
        let id = c["id"].as_str().unwrap();
        let uri = format!("{CC}/{id}");
        let before = stored_body(&store, id).await;

        // Without the password: 422 at /password, and nothing stored, not even the name's claim.
        for (body, why) in [
            (json!({"user_name": "tempname1"}), "a new name"),
            (json!({"user_name": "ORIGUSER1"}), "the same name in another case: the digest uses it as written"),
            (json!({"user_name": "tempname1", "connection_name": "renamed"}), "with other fields"),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(&key_a), Some(body)).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]), "{why}");
            assert_eq!(resp["errors"][0]["code"], "10015", "{why}");
            assert_eq!(stored_body(&store, id).await, before, "{why}: nothing changed");
        }
        let (_, got) = call(&app, "GET", &uri, Some(&key_a), None).await;
        assert_eq!(got["data"], without_password(&c));
        let (st, resp) = call(&app, "POST", CC, Some(&key_b), Some(minimal("bravo", "origuser1"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"]), "still taken");
        let other = create(&app, &key_b, minimal("bravo", "tempname1")).await;
        assert_eq!(other["user_name"], "tempname1", "the refused name was never claimed");

        // Giving the current name again needs no password.
        let (st, up) = call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"user_name": "origuser1"}))).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert!(up["data"].get("password").is_none());
        assert_eq!(stored(&store, id).await["_digest"], serde_json::from_str::<Value>(&before).unwrap()["_digest"]);

        // With the password: renamed, the digest is the new name's, the old name is free again.
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key_a),
            Some(json!({"user_name": "newuser1", "password": "an0ther-secret"})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_eq!(
            (up["data"]["user_name"].as_str(), up["data"]["password"].as_str()),
            (Some("newuser1"), Some("an0ther-secret"))
        );
        let raw = stored_body(&store, id).await;
        assert!(!raw.contains("an0ther-secret"), "{raw}");
        let doc: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(doc["user_name"], "newuser1");
        assert_eq!(
            doc["_digest"],
            digest(
                "newuser1",
                "3f14f54b2b2194dcef734904082b731f",
                "fb70e5b1c5c1f95845e542b471e686540bca144bf21a0c643a82e30b36871440"
            )
        );
        let (_, got) = call(&app, "GET", &uri, Some(&key_a), None).await;
        assert_eq!(got["data"], without_password(&up["data"]));
        let (_, reg) =
            call(&app, "POST", &format!("{uri}/actions/check_registration_status"), Some(&key_a), None).await;
        assert_eq!(reg["data"]["sip_username"], "newuser1");
        let freed = create(&app, &key_b, minimal("bravo-2", "OrigUser1")).await;
        assert_eq!(freed["user_name"], "OrigUser1");
        let (st, resp) = call(&app, "POST", CC, Some(&key_b), Some(minimal("bravo-3", "NEWUSER1"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"]), "now taken");
    }
}

#[tokio::test]
async fn a_missing_or_bad_password_is_one_fault() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;

        // On create, with a valid user name: one fault at /password each, nothing stored.
        for password in [None, Some(Value::Null), Some(json!("short")), Some(json!("p".repeat(129)))] {
            let mut body = minimal("office", "myusername123");
            match &password {
                None => drop(body.as_object_mut().unwrap().remove("password")),
                Some(p) => body["password"] = p.clone(),
            }
            let (st, resp) = call(&app, "POST", CC, Some(&key), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]), "{body}");
        }
        assert_eq!(total(&app, &key).await, 0, "nothing stored");

        // On a rename with a bad password: one fault at /password, nothing changed.
        let c = create(&app, &key, minimal("office", "myusername123")).await;
        let id = c["id"].as_str().unwrap();
        let before = stored_body(&store, id).await;
        for password in [Value::Null, json!("short"), json!("p".repeat(129))] {
            let body = json!({"user_name": "renamed1", "password": password});
            let (st, resp) = call(&app, "PATCH", &format!("{CC}/{id}"), Some(&key), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]), "{body}");
            assert_eq!(stored_body(&store, id).await, before);
        }
    }
}
