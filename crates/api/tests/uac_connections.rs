//! `/v2/uac_connections` through the router, on both store backends: the contract's defaults
//! and derived fields, the contract's example echoed, the external password kept privately and
//! shown only by the request that sets it, the optional SIP credentials (digest only),
//! validation with pointers, tenancy, and the registration status.

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::Store;

mod common;

use common::{OPERATOR, account, apps_and_stores, call, codes, pointers};

const UC: &str = "/v2/uac_connections";

async fn create(app: &axum::Router, key: &str, body: Value) -> Value {
    common::post(app, UC, key, body).await
}

async fn stored_body(store: &Store, id: &str) -> String {
    common::stored_body(store, "uac_connection", id).await
}

async fn stored(store: &Store, id: &str) -> Value {
    common::stored(store, "uac_connection", id).await
}

fn expected_defaults() -> Value {
    json!({
        "active": true,
        "anchorsite_override": "Latency",
        "android_push_credential_id": null,
        "authentication": "uac-authentication",
        "call_cost_in_webhooks": false,
        "connection_name": "pbx",
        "default_on_hold_comfort_noise_enabled": false,
        "dtmf_type": "RFC 2833",
        "encode_contact_header_enabled": false,
        "encrypted_media": null,
        "external_uac_settings": {
            "auth_username": null,
            "expiration_sec": null,
            "from_user": null,
            "outbound_proxy": null,
            "transport": null
        },
        "fqdn_outbound_authentication": "credential-authentication",
        "fqdns": [],
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
            "sip_region": "US",
            "timeout_1xx_secs": 3,
            "timeout_2xx_secs": 90
        },
        "internal_uac_settings": {},
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
        "record_type": "uac_connection",
        "registration_status": null,
        "registration_status_updated_at": null,
        "rtcp_settings": {"capture_enabled": false, "port": "rtp+1", "report_frequency_secs": 5},
        "sip_uri_calling_preference": "disabled",
        "tags": [],
        "webhook_api_version": "1",
        "webhook_timeout_secs": null,
    })
}

/// Unset fields whose contract default the contract's response type cannot hold (`channel_limit:
/// null` is no integer, `webhook_event_failover_url: ""` no URI): left out of responses, still in
/// the stored document.
fn assert_unset_left_out(shown: &Value, stored: &Value) {
    for path in ["/inbound/channel_limit", "/outbound/channel_limit", "/webhook_event_failover_url"] {
        assert_eq!(shown.pointer(path), None, "left out: {path}");
        let unset = stored.pointer(path).is_some_and(|v| v.is_null() || v == "");
        assert!(unset, "stored unset: {path}: {stored}");
    }
}

#[tokio::test]
async fn uac_connection_defaults_and_the_contract_example() {
    for (app, store) in apps_and_stores().await {
        let (st, body) = call(&app, "GET", UC, None, None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (account_id, key) = account(&app, "Acme").await;

        let c = create(&app, &key, json!({"connection_name": "pbx"})).await;
        let id = c["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        let mut expected = expected_defaults();
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = c[k].clone();
        }
        assert_eq!(c, expected, "every contract default and derived field, nothing invented");
        let (st, got) = call(&app, "GET", &format!("{UC}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));
        let (_, list) = call(&app, "GET", UC, Some(&key), None).await;
        assert_eq!(list["data"], json!([expected]));
        assert!(stored(&store, id).await.get("_external_uac_password").is_none());
        let doc = stored(&store, id).await;
        assert_unset_left_out(&c, &doc);
        assert_eq!(doc["webhook_event_failover_url"], "", "stored with the contract's default");

        // The contract's example request, with a real profile id.
        let (_, p) = call(&app, "POST", "/v2/outbound_voice_profiles", Some(&key), Some(json!({"name": "ovp"}))).await;
        let ovp = p["data"]["id"].as_str().unwrap();
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
            "external_uac_settings": {
                "auth_username": "auth8492",
                "expiration_sec": 600,
                "from_user": "8492",
                "outbound_proxy": "outbound.sip-pbx.acme.example:5061",
                "password": "testtesttest",
                "proxy": "sip-pbx.acme.example",
                "transport": "TLS",
                "username": "ext8492"
            },
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
            "internal_uac_settings": {"destination_uri": "14155550123@acme.sip.telnyx.com"},
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
            "user_name": "myusername123",
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

        // Set back to null, the limits and the failover URL are left out again.
        let example_id = c["id"].as_str().unwrap();
        let (st, up) = call(
            &app,
            "PATCH",
            &format!("{UC}/{example_id}"),
            Some(&key),
            Some(json!({
                "inbound": {"channel_limit": null},
                "outbound": {"channel_limit": null},
                "webhook_event_failover_url": null
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_unset_left_out(&up["data"], &stored(&store, example_id).await);
        assert_eq!(up["data"]["inbound"]["codecs"], json!(["G722"]), "set values stay");

        // texml on create only, and only with call parking.
        let (st, resp) =
            call(&app, "POST", UC, Some(&key), Some(json!({"connection_name": "t", "webhook_api_version": "texml"})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/webhook_api_version"]));
        let t = create(
            &app,
            &key,
            json!({"connection_name": "t", "webhook_api_version": "texml", "outbound": {"call_parking_enabled": true}}),
        )
        .await;
        assert_eq!(t["webhook_api_version"], "texml");
        let uri = format!("{UC}/{}", c["id"].as_str().unwrap());
        let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"webhook_api_version": "texml"}))).await;
        assert_eq!(
            (st, codes(&resp), pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["10032"], vec!["/webhook_api_version"])
        );

        // The operator names the owner and sees it.
        let (st, resp) = call(&app, "POST", UC, Some(OPERATOR), Some(json!({"connection_name": "ops"}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let o = create(&app, OPERATOR, json!({"connection_name": "ops", "account_id": account_id})).await;
        assert_eq!(o["account_id"], json!(account_id));
        let (_, got) = call(&app, "GET", &format!("{UC}/{}", o["id"].as_str().unwrap()), Some(&key), None).await;
        assert!(got["data"].get("account_id").is_none());
    }
}

#[tokio::test]
async fn the_external_password_is_private_and_shown_only_when_set() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let external = json!({"proxy": "pbx.example.com", "username": "ext8492", "password": "pbx-secret-1"});
        let c = create(&app, &key, json!({"connection_name": "pbx", "external_uac_settings": external})).await;
        let id = c["id"].as_str().unwrap();
        let uri = format!("{UC}/{id}");
        assert_eq!(c["external_uac_settings"]["password"], "pbx-secret-1", "the response that sets it shows it");
        assert_eq!(c["external_uac_settings"]["username"], "ext8492");

        // Kept as written, but only in the private field; never shown again.
        let doc = stored(&store, id).await;
        assert_eq!(doc["_external_uac_password"], "pbx-secret-1");
        assert!(doc["external_uac_settings"].get("password").is_none());
        let mut shown = c.clone();
        shown["external_uac_settings"].as_object_mut().unwrap().remove("password");
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"], shown);
        let (_, list) = call(&app, "GET", UC, Some(OPERATOR), None).await;
        assert!(!list.to_string().contains("pbx-secret-1") && !list.to_string().contains("_external"));

        // A PATCH without it keeps it; one with it shows and replaces it; the rest is merged.
        let (st, up) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": {"expiration_sec": 300}})))
                .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert!(up["data"]["external_uac_settings"].get("password").is_none());
        assert_eq!(up["data"]["external_uac_settings"]["username"], "ext8492");
        assert_eq!(up["data"]["external_uac_settings"]["expiration_sec"], 300);
        assert_eq!(stored(&store, id).await["_external_uac_password"], "pbx-secret-1");
        let (st, up) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": {"password": "pbx-secret-2"}})))
                .await;
        assert_eq!((st, &up["data"]["external_uac_settings"]["password"]), (StatusCode::OK, &json!("pbx-secret-2")));
        assert_eq!(stored(&store, id).await["_external_uac_password"], "pbx-secret-2");

        // A refused request changes nothing.
        let before = stored_body(&store, id).await;
        let (st, resp) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"external_uac_settings": {"password": "pbx-secret-3", "proxy": "sip:pbx"}})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/external_uac_settings/proxy"]));
        assert_eq!(stored_body(&store, id).await, before);
        for bad in [json!(""), json!(42), json!("p".repeat(129))] {
            let (st, resp) =
                call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": {"password": bad}}))).await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/external_uac_settings/password"])
            );
        }

        // Null clears it: on the password, or on the whole object (back to its defaults).
        let (st, _) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": {"password": null}}))).await;
        assert_eq!(st, StatusCode::OK);
        assert!(stored(&store, id).await.get("_external_uac_password").is_none());
        let (_, _) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": {"password": "pbx-secret-4"}})))
                .await;
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"external_uac_settings": null}))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(up["data"]["external_uac_settings"], expected_defaults()["external_uac_settings"]);
        assert!(stored(&store, id).await.get("_external_uac_password").is_none());

        // Deleting shows the connection without it.
        let (_, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert!(gone["data"]["external_uac_settings"].get("password").is_none());
    }
}

#[tokio::test]
async fn uac_credentials_are_optional_and_kept_as_digest() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        for (body, pointer) in [
            (json!({"connection_name": "x", "user_name": "uacuser1"}), "/password"),
            (json!({"connection_name": "x", "password": "a-long-secret"}), "/user_name"),
            (json!({"connection_name": "x", "user_name": "uacuser1", "password": "short"}), "/password"),
            (json!({"connection_name": "x", "user_name": "12345uac", "password": "a-long-secret"}), "/user_name"),
        ] {
            let (st, resp) = call(&app, "POST", UC, Some(&key), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{body}");
        }
        let c =
            create(&app, &key, json!({"connection_name": "x", "user_name": "uacuser1", "password": "a-long-secret"}))
                .await;
        assert_eq!(c["password"], "a-long-secret");
        let id = c["id"].as_str().unwrap();
        let raw = stored_body(&store, id).await;
        assert!(!raw.contains("a-long-secret"), "{raw}");
        assert_eq!(serde_json::from_str::<Value>(&raw).unwrap()["_digest"]["user_name"], "uacuser1");
        let (_, got) = call(&app, "GET", &format!("{UC}/{id}"), Some(&key), None).await;
        assert!(got["data"].get("password").is_none() && got["data"].get("_digest").is_none());

        // One user name on the platform, with credential connections'.
        let (st, resp) = call(
            &app,
            "POST",
            "/v2/credential_connections",
            Some(&key),
            Some(json!({"connection_name": "c", "user_name": "UACUSER1", "password": "another-secret"})),
        )
        .await;
        assert_eq!(
            (st, pointers(&resp), codes(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"], vec!["10007"])
        );
        let (_, other) = account(&app, "Other").await;
        let (st, resp) = call(
            &app,
            "POST",
            UC,
            Some(&other),
            Some(json!({"connection_name": "y", "user_name": "uacUser1", "password": "another-secret"})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"]));

        // A new user name needs the password again.
        let uri = format!("{UC}/{id}");
        let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"user_name": "uacuser2"}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/password"]));
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"user_name": "uacuser2", "password": "new-long-secret"})),
        )
        .await;
        assert_eq!((st, up["data"]["password"].as_str()), (StatusCode::OK, Some("new-long-secret")));
        assert_eq!(stored(&store, id).await["_digest"]["user_name"], "uacuser2");
    }
}

#[tokio::test]
async fn uac_validation_reports_every_fault() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let bad = json!({
            "connection_name": "x",
            "external_uac_settings": {
                "auth_username": "a b",
                "expiration_sec": 0,
                "from_user": "<8492>",
                "outbound_proxy": "sip:proxy.example.com",
                "password": "",
                "proxy": "pbx.example.com:99999",
                "transport": "SCTP",
                "username": "_ext"
            },
            "internal_uac_settings": {"destination_uri": "sip:1415@acme.example"},
            "inbound": {"simultaneous_ringing": "on", "sip_region": "Mars", "sip_subdomain": "ignored"},
            "sip_uri_calling_preference": "everyone"
        });
        let (st, body) = call(&app, "POST", UC, Some(&key), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            pointers(&body),
            [
                "/external_uac_settings/auth_username",
                "/external_uac_settings/expiration_sec",
                "/external_uac_settings/from_user",
                "/external_uac_settings/outbound_proxy",
                "/external_uac_settings/password",
                "/external_uac_settings/proxy",
                "/external_uac_settings/transport",
                "/external_uac_settings/username",
                "/inbound/simultaneous_ringing",
                "/inbound/sip_region",
                "/internal_uac_settings/destination_uri",
                "/sip_uri_calling_preference",
            ]
        );
        assert_eq!(
            codes(&body),
            [
                "10015", "10015", "10015", "10015", "10015", "10015", "10032", "10015", "10032", "10032", "10015",
                "10032"
            ]
        );
        for username in [json!("abc"), json!("x".repeat(33)), json!("ext.8492")] {
            let (_, resp) = call(
                &app,
                "POST",
                UC,
                Some(&key),
                Some(json!({"connection_name": "x", "external_uac_settings": {"username": username}})),
            )
            .await;
            assert_eq!(pointers(&resp), ["/external_uac_settings/username"], "{username}");
        }
        let (_, list) = call(&app, "GET", UC, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");

        // Edge values that are fine; the generated inbound.sip_subdomain is not a request field.
        let c = create(
            &app,
            &key,
            json!({
                "connection_name": "x",
                "external_uac_settings": {"proxy": "[2001:db8::1]:5061", "outbound_proxy": "10.0.0.1", "expiration_sec": 4294967295u64,
                                          "username": "9ext_8-4", "transport": null, "from_user": "+1-555;x=1"},
                "internal_uac_settings": {"destination_uri": "a_b-1@pbx.example.com"},
                "inbound": {"sip_subdomain": "mine", "sip_region": "Europe"}
            }),
        )
        .await;
        assert_eq!(c["external_uac_settings"]["proxy"], "[2001:db8::1]:5061");
        assert_eq!(c["external_uac_settings"]["expiration_sec"], 4294967295u64);
        assert!(c["inbound"].get("sip_subdomain").is_none());
        assert_eq!(c["inbound"]["sip_region"], "Europe");
    }
}

#[tokio::test]
async fn registration_status_and_tenancy() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let c = create(
            &app,
            &key_a,
            json!({"connection_name": "pbx", "external_uac_settings": {"proxy": "pbx.example.com", "username": "ext8492", "password": "pbx-secret"}}),
        )
        .await;
        let bare = create(&app, &key_a, json!({"connection_name": "bare"})).await;
        let uri = format!("{UC}/{}", c["id"].as_str().unwrap());
        let check = format!("{uri}/actions/check_registration_status");

        // No registration client runs yet: Not Registered, nothing invented.
        let (st, reg) = call(&app, "POST", &check, Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            reg["data"],
            json!({"record_type": "registration_status", "sip_username": "ext8492", "status": "Not Registered"})
        );
        let (_, reg) = call(
            &app,
            "POST",
            &format!("{UC}/{}/actions/check_registration_status", bare["id"].as_str().unwrap()),
            Some(&key_a),
            None,
        )
        .await;
        assert_eq!(reg["data"], json!({"record_type": "registration_status", "status": "Not Registered"}));
        let (st, _) = call(&app, "POST", &check, Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);

        // Another account's connection is 404 everywhere, like a missing one.
        for (method, u, body) in [
            ("GET", uri.clone(), None),
            ("PATCH", uri.clone(), Some(json!({"connection_name": "mine"}))),
            ("DELETE", uri.clone(), None),
            ("POST", check.clone(), None),
            ("POST", format!("{UC}/1234567890123456789/actions/check_registration_status"), None),
        ] {
            let key = if u.contains("1234567890123456789") { &key_a } else { &key_b };
            let (st, resp) = call(&app, method, &u, Some(key), body).await;
            assert_eq!(
                (st, resp["errors"][0]["code"].as_str()),
                (StatusCode::NOT_FOUND, Some("10005")),
                "{method} {u}"
            );
        }
        let (_, list) = call(&app, "GET", UC, Some(&key_b), None).await;
        assert_eq!(list["meta"]["total_results"], 0);
        let (st, _) = call(&app, "POST", &check, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);

        // Delete answers the connection, then it is gone.
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key_a), None).await;
        assert_eq!((st, gone["data"]["id"].as_str()), (StatusCode::OK, c["id"].as_str()));
        let (st, _) = call(&app, "POST", &check, Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}
