//! `/v2/ip_connections` through the router, on both store backends: the contract's IP
//! defaults, the contract's example echoed, IP authentication tokens (format, unique across
//! accounts, needed by method `token`), SIP subdomains unique regardless of case, the tech
//! prefix assigned by the platform and never chosen (unique with FQDN connections' too,
//! another one picked when the one drawn is taken), default IPs that must be the connection's
//! own, validation with pointers, tenancy, pages/filters/sort, PATCH merging, and delete taking
//! the connection's IPs with it.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{Repository, Store};

mod common;

use common::{OPERATOR, account, apps_and_stores, call, codes, column, pointers, profile};

const IC: &str = "/v2/ip_connections";
const IPS: &str = "/v2/ips";

async fn create(app: &axum::Router, key: &str, body: Value) -> Value {
    common::post(app, IC, key, body).await
}

/// A new IP of a connection; its id.
async fn add_ip(app: &axum::Router, key: &str, connection: &Value, address: &str) -> String {
    let body = json!({"connection_id": connection["id"], "ip_address": address});
    let (st, v) = call(app, "POST", IPS, Some(key), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["data"]["id"].as_str().unwrap().to_owned()
}

fn minimal(name: &str) -> Value {
    json!({"connection_name": name})
}

fn uri(c: &Value) -> String {
    format!("{IC}/{}", c["id"].as_str().unwrap())
}

fn names(list: &Value) -> Vec<&str> {
    column(list, "connection_name")
}

async fn total(app: &axum::Router, key: &str) -> i64 {
    common::total(app, IC, key).await.as_i64().unwrap()
}

fn prefix(c: &Value) -> String {
    c["outbound"]["tech_prefix"].as_str().unwrap().to_owned()
}

fn expected_defaults() -> Value {
    json!({
        "active": true,
        "anchorsite_override": "Latency",
        "android_push_credential_id": null,
        "call_cost_in_webhooks": false,
        "connection_name": "office",
        "default_on_hold_comfort_noise_enabled": true,
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
            "sip_compact_headers_enabled": true,
            "sip_region": "US",
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
            "ip_authentication_method": "tech-prefixp-charge-info",
            "t38_reinvite_source": "customer",
            "tech_prefix": "0000"
        },
        "record_type": "ip_connection",
        "rtcp_settings": {"capture_enabled": false, "port": "rtp+1", "report_frequency_secs": 5},
        "tags": [],
        "transport_protocol": "UDP",
        "webhook_api_version": "1",
        "webhook_timeout_secs": null,
    })
}

/// Contract defaults the contract's response type cannot hold (`channel_limit: null` is no
/// integer, `webhook_event_failover_url: ""` no URI, ...): left out of responses, stored as is.
const UNSET_DEFAULTS: [&str; 5] = [
    "/inbound/channel_limit",
    "/outbound/channel_limit",
    "/outbound/ip_authentication_token",
    "/outbound/localization",
    "/webhook_event_failover_url",
];

async fn stored(store: &Store, id: &str) -> Value {
    common::stored(store, "ip_connection", id).await
}

#[tokio::test]
async fn create_with_the_ip_defaults_echoed() {
    for (app, store) in apps_and_stores().await {
        let (st, body) = call(&app, "POST", IC, None, Some(minimal("office"))).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (account_id, key) = account(&app, "Acme").await;

        // 201 with every contract default, and a tech prefix of 4 digits.
        let c = create(&app, &key, minimal("office")).await;
        let id = c["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(c["created_at"].as_str().unwrap().ends_with('Z') && c["updated_at"] == c["created_at"]);
        let p = prefix(&c);
        assert!(p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()), "{p}");
        let mut expected = expected_defaults();
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = c[k].clone();
        }
        expected["outbound"]["tech_prefix"] = json!(p);
        assert_eq!(c, expected, "no extra fields: no sip_subdomain, default_routing_method, webhook_event_url");
        let doc = stored(&store, id).await;
        for path in UNSET_DEFAULTS {
            let default = if path == "/webhook_event_failover_url" { json!("") } else { Value::Null };
            assert_eq!(doc.pointer(path), Some(&default), "stored with its default: {path}");
        }
        let (st, got) = call(&app, "GET", &uri(&c), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));
        let (_, list) = call(&app, "GET", IC, Some(&key), None).await;
        assert_eq!(list["data"], json!([expected]));

        // The contract's example request, with a real profile id, echoed field for field (the
        // tech prefix is the platform's, so the example's "string" is left out).
        let ovp = profile(&app, &key, "office-profile").await;
        let example = json!({
            "active": true,
            "anchorsite_override": "Latency",
            "android_push_credential_id": "06b09dfd-7154-4980-8b75-cebf7a9d4f8e",
            "call_cost_in_webhooks": false,
            "connection_name": "string",
            "default_on_hold_comfort_noise_enabled": true,
            "dtmf_type": "RFC 2833",
            "encode_contact_header_enabled": true,
            "encrypted_media": "SRTP",
            "inbound": {
                "ani_number_format": "+E.164",
                "channel_limit": 10,
                "codecs": ["G722"],
                "default_routing_method": "sequential",
                "dnis_number_format": "+e164",
                "generate_ringback_tone": true,
                "isup_headers_enabled": true,
                "prack_enabled": true,
                "shaken_stir_enabled": true,
                "sip_compact_headers_enabled": true,
                "sip_region": "US",
                "sip_subdomain": "test",
                "sip_subdomain_receive_settings": "only_my_connections",
                "timeout_1xx_secs": 10,
                "timeout_2xx_secs": 20
            },
            "ios_push_credential_id": "ec0c8e5d-439e-4620-a0c1-9d9c8d02a836",
            "jitter_buffer": {"enable_jitter_buffer": true, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60},
            "noise_suppression": "both",
            "noise_suppression_details": {"attenuation_limit": 80, "engine": "deep_filter_net"},
            "onnet_t38_passthrough_enabled": false,
            "outbound": {
                "ani_override": "string",
                "ani_override_type": "always",
                "call_parking_enabled": true,
                "channel_limit": 10,
                "generate_ringback_tone": true,
                "instant_ringback_enabled": true,
                "ip_authentication_method": "token",
                "ip_authentication_token": "example-token-0001",
                "localization": "US",
                "outbound_voice_profile_id": ovp,
                "t38_reinvite_source": "customer"
            },
            "rtcp_settings": {"capture_enabled": true, "port": "rtcp-mux", "report_frequency_secs": 10},
            "tags": ["tag1", "tag2"],
            "transport_protocol": "UDP",
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
        assert_ne!(prefix(&c), p, "each connection gets a prefix no other uses");
        let (_, got) = call(&app, "GET", &uri(&c), Some(&key), None).await;
        assert_eq!(got["data"], c, "the contract's IpConnection shows the token");

        // The operator names the owning account, and sees it.
        let (st, resp) = call(&app, "POST", IC, Some(OPERATOR), Some(minimal("ops"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let c = create(&app, OPERATOR, json!({"connection_name": "ops", "account_id": account_id})).await;
        assert_eq!(c["account_id"], json!(account_id));
        let (_, got) = call(&app, "GET", &uri(&c), Some(&key), None).await;
        assert!(got["data"].get("account_id").is_none(), "the owner is shown to the operator only");
        assert_eq!(total(&app, &key).await, 3);
    }
}

#[tokio::test]
async fn tokens_are_unique_across_accounts() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let with = |name: &str, token: &str| json!({"connection_name": name, "outbound": {"ip_authentication_method": "token", "ip_authentication_token": token}});
        let a = create(&app, &key_a, with("alpha", "Shared-Token-2024")).await;
        assert_eq!(a["outbound"]["ip_authentication_token"], "Shared-Token-2024");

        let (st, resp) = call(&app, "POST", IC, Some(&key_b), Some(with("bravo", "Shared-Token-2024"))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!((pointers(&resp), codes(&resp)), (vec!["/outbound/ip_authentication_token"], vec!["10007"]));
        assert_eq!(total(&app, &key_b).await, 0, "nothing stored");
        // The same account cannot reuse it either; a token differing in case is another token.
        let (st, _) = call(&app, "POST", IC, Some(&key_a), Some(with("alpha-2", "Shared-Token-2024"))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let b = create(&app, &key_b, with("bravo", "shared-token-2024")).await;

        // PATCH onto a taken token is refused and changes nothing.
        let patch = |token: Value| json!({"outbound": {"ip_authentication_token": token}});
        let (st, resp) = call(&app, "PATCH", &uri(&b), Some(&key_b), Some(patch(json!("Shared-Token-2024")))).await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/ip_authentication_token"])
        );
        let (_, got) = call(&app, "GET", &uri(&b), Some(&key_b), None).await;
        assert_eq!(got["data"], b);

        // A new token frees the old one; deleting the connection frees its token.
        let (st, up) = call(&app, "PATCH", &uri(&a), Some(&key_a), Some(patch(json!("Alpha-Token-2025")))).await;
        assert_eq!(
            (st, up["data"]["outbound"]["ip_authentication_token"].as_str()),
            (StatusCode::OK, Some("Alpha-Token-2025"))
        );
        let (st, _) = call(&app, "PATCH", &uri(&b), Some(&key_b), Some(patch(json!("Shared-Token-2024")))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(&app, "DELETE", &uri(&a), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        create(&app, &key_b, with("bravo-2", "Alpha-Token-2025")).await;
    }
}

#[tokio::test]
async fn token_format_and_the_token_method() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        for bad in [
            json!("short-token"),
            json!("x".repeat(49)),
            json!("under_score_token"),
            json!("with space token"),
            json!(123456789012_i64),
        ] {
            let body = json!({"connection_name": "t", "outbound": {"ip_authentication_token": bad}});
            let (st, resp) = call(&app, "POST", IC, Some(&key), Some(body)).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(
                (pointers(&resp), codes(&resp)),
                (vec!["/outbound/ip_authentication_token"], vec!["10015"]),
                "{bad}"
            );
        }
        let body = json!({"connection_name": "t", "outbound": {"ip_authentication_method": "ip-authentication"}});
        let (_, resp) = call(&app, "POST", IC, Some(&key), Some(body)).await;
        assert_eq!((pointers(&resp), codes(&resp)), (vec!["/outbound/ip_authentication_method"], vec!["10032"]));
        let body = json!({"connection_name": "t", "outbound": {"ip_authentication_method": "token"}});
        let (_, resp) = call(&app, "POST", IC, Some(&key), Some(body)).await;
        assert_eq!(pointers(&resp), ["/outbound/ip_authentication_token"], "method token needs a token");
        assert_eq!(total(&app, &key).await, 0, "nothing stored");

        // Edge lengths are fine; a token without method token is kept.
        let c = create(
            &app,
            &key,
            json!({"connection_name": "t", "outbound": {"ip_authentication_token": "a-b-c-d-e-f-"}}),
        )
        .await;
        assert_eq!(c["outbound"]["ip_authentication_method"], "tech-prefixp-charge-info");
        let long = "A1-".repeat(16);
        let (st, up) = call(
            &app,
            "PATCH",
            &uri(&c),
            Some(&key),
            Some(json!({"outbound": {"ip_authentication_method": "token", "ip_authentication_token": long}})),
        )
        .await;
        assert_eq!(
            (st, up["data"]["outbound"]["ip_authentication_token"].as_str()),
            (StatusCode::OK, Some(long.as_str()))
        );
        // Clearing the token while the method is token is refused; with the method back, null clears it.
        let (st, resp) =
            call(&app, "PATCH", &uri(&c), Some(&key), Some(json!({"outbound": {"ip_authentication_token": null}})))
                .await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/ip_authentication_token"])
        );
        let (st, up) = call(
            &app,
            "PATCH",
            &uri(&c),
            Some(&key),
            Some(json!({"outbound": {"ip_authentication_method": "tech-prefixp-charge-info", "ip_authentication_token": null}})),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert!(up["data"]["outbound"].get("ip_authentication_token").is_none(), "null clears it: left out");
        // The token is free again.
        create(&app, &key, json!({"connection_name": "u", "outbound": {"ip_authentication_token": long}})).await;
    }
}

#[tokio::test]
async fn the_tech_prefix_is_assigned_and_never_chosen() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let mut seen = std::collections::HashSet::new();
        let mut conns = Vec::new();
        for i in 0..6 {
            let key = if i % 2 == 0 { &key_a } else { &key_b };
            let c = create(&app, key, minimal(&format!("c{i}"))).await;
            assert!(seen.insert(prefix(&c)), "unused prefixes first, across accounts: {seen:?}");
            conns.push((key.clone(), c));
        }
        let (key, c) = &conns[0];
        let p = prefix(c);

        // A client cannot choose one, on create or PATCH.
        for chosen in [json!("1234"), json!("12"), json!(1234)] {
            let body = json!({"connection_name": "x", "outbound": {"tech_prefix": chosen}});
            let (st, resp) = call(&app, "POST", IC, Some(key), Some(body)).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{chosen}: {resp}");
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/tech_prefix"]),
                "{chosen}"
            );
        }
        let other = if p == "1234" { "4321" } else { "1234" };
        let (st, resp) =
            call(&app, "PATCH", &uri(c), Some(key), Some(json!({"outbound": {"tech_prefix": other}}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/tech_prefix"]));
        assert_eq!(total(&app, key).await, 3, "nothing stored");

        // Repeating it, the contract's default (empty), null, or resetting the whole outbound
        // object keep it.
        for patch in [
            json!({"outbound": {"tech_prefix": p}}),
            json!({"outbound": {"tech_prefix": ""}}),
            json!({"outbound": {"tech_prefix": null, "localization": "GB"}}),
            json!({"outbound": null}),
        ] {
            let (st, up) = call(&app, "PATCH", &uri(c), Some(key), Some(patch.clone())).await;
            assert_eq!(st, StatusCode::OK, "{patch}: {up}");
            assert_eq!(prefix(&up["data"]), p, "{patch}");
        }
        let (_, got) = call(&app, "GET", &uri(c), Some(key), None).await;
        assert!(got["data"]["outbound"].get("localization").is_none(), "outbound null reset the object");
        let body = json!({"connection_name": "y", "outbound": {"tech_prefix": ""}});
        let (st, _) = call(&app, "POST", IC, Some(key), Some(body)).await;
        assert_eq!(st, StatusCode::CREATED);

        // Stored as shown.
        let r = store.get_resource("ip_connection", c["id"].as_str().unwrap()).await.unwrap().unwrap();
        let doc: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(doc["outbound"]["tech_prefix"], json!(p));
    }
}

#[tokio::test]
async fn tech_prefixes_are_unique_with_fqdn_connections_and_reassigned_when_taken() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        const FC: &str = "/v2/fqdn_connections";

        // An IP connection's prefix is not an FQDN connection's to take, in any account.
        let c = create(&app, &key_a, minimal("ip")).await;
        let p = prefix(&c);
        let fqdn = json!({"connection_name": "fqdn", "outbound": {"tech_prefix": p}});
        let (st, resp) = call(&app, "POST", FC, Some(&key_b), Some(fqdn.clone())).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/tech_prefix"]));
        assert_eq!(codes(&resp), ["10007"]);
        // Deleting the IP connection frees it.
        let (st, _) = call(&app, "DELETE", &uri(&c), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, f) = call(&app, "POST", FC, Some(&key_b), Some(fqdn)).await;
        assert_eq!(st, StatusCode::CREATED, "{f}");

        // Every prefix but one taken (here claimed directly in the store, as 9,998 other
        // connections would): a new IP connection gets the free one, whichever it drew first.
        let free = if p == "4242" { "4243" } else { "4242" };
        let taken: Vec<String> = (0..10_000).map(|n| format!("{n:04}")).filter(|v| *v != p && v != free).collect();
        let claims: Vec<(&str, &str)> = taken.iter().map(|v| ("tech_prefix", v.as_str())).collect();
        let holder = store::Resource {
            kind: "test_holder".into(),
            id: "1".into(),
            account_id: "none".into(),
            name: "holder".into(),
            body: "{}".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        };
        store.insert_resource(&holder, &claims).await.unwrap();
        let last = create(&app, &key_a, minimal("last")).await;
        assert_eq!(prefix(&last), free);
        // None left: refused, nothing stored.
        let (st, resp) = call(&app, "POST", IC, Some(&key_b), Some(minimal("none"))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/tech_prefix"]), "{resp}");
        assert_eq!(total(&app, &key_b).await, 0);
        // The connection keeps its claim across updates; deleting it frees the prefix again.
        let (st, _) = call(&app, "PATCH", &uri(&last), Some(&key_a), Some(json!({"connection_name": "renamed"}))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(&app, "POST", IC, Some(&key_b), Some(minimal("none"))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let (st, _) = call(&app, "DELETE", &uri(&last), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(prefix(&create(&app, &key_b, minimal("again")).await), free);
    }
}

#[tokio::test]
async fn sip_subdomains_are_unique_regardless_of_case() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let with = |name: &str, sub: &str| json!({"connection_name": name, "inbound": {"sip_subdomain": sub}});
        let a = create(&app, &key_a, with("alpha", "Acme-PBX")).await;
        assert_eq!(a["inbound"]["sip_subdomain"], "Acme-PBX", "kept as written");
        for taken in ["Acme-PBX", "acme-pbx"] {
            let (st, resp) = call(&app, "POST", IC, Some(&key_b), Some(with("bravo", taken))).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!((pointers(&resp), codes(&resp)), (vec!["/inbound/sip_subdomain"], vec!["10007"]));
        }
        for bad in ["-acme", "acme.pbx", "acme pbx", ""] {
            let (st, resp) = call(&app, "POST", IC, Some(&key_b), Some(with("bravo", bad))).await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/inbound/sip_subdomain"]),
                "{bad}"
            );
        }
        assert_eq!(total(&app, &key_b).await, 0);
        let (st, _) =
            call(&app, "PATCH", &uri(&a), Some(&key_a), Some(json!({"inbound": {"sip_subdomain": null}}))).await;
        assert_eq!(st, StatusCode::OK);
        create(&app, &key_b, with("bravo", "ACME-pbx")).await;
    }
}

#[tokio::test]
async fn validation_reports_every_fault_with_pointers_and_stores_nothing() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let bad = json!({
            "connection_name": "",
            "default_on_hold_comfort_noise_enabled": "yes",
            "transport_protocol": "SCTP",
            "webhook_api_version": "texml",
            "inbound": {
                "channel_limit": -1,
                "default_routing_method": "random",
                "dnis_number_format": "E164",
                "sip_region": "Asia",
                "sip_subdomain_receive_settings": "everyone",
                "timeout_2xx_secs": 601
            },
            "outbound": {
                "ip_authentication_method": "ip",
                "localization": "USA",
                "t38_reinvite_source": "me",
                "tech_prefix": "0001"
            }
        });
        let (st, body) = call(&app, "POST", IC, Some(&key), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            pointers(&body),
            [
                "/connection_name",
                "/default_on_hold_comfort_noise_enabled",
                "/webhook_api_version",
                "/transport_protocol",
                "/outbound/localization",
                "/outbound/t38_reinvite_source",
                "/outbound/ip_authentication_method",
                "/inbound/channel_limit",
                "/inbound/default_routing_method",
                "/inbound/dnis_number_format",
                "/inbound/timeout_2xx_secs",
                "/inbound/sip_region",
                "/inbound/sip_subdomain_receive_settings",
                "/outbound/tech_prefix",
            ]
        );
        let enums: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["code"] == "10032")
            .map(|e| e["source"]["pointer"].as_str().unwrap())
            .collect();
        assert_eq!(
            enums,
            [
                "/webhook_api_version",
                "/transport_protocol",
                "/outbound/t38_reinvite_source",
                "/outbound/ip_authentication_method",
                "/inbound/default_routing_method",
                "/inbound/dnis_number_format",
                "/inbound/sip_region",
                "/inbound/sip_subdomain_receive_settings",
            ]
        );
        let (_, resp) = call(&app, "POST", IC, Some(&key), Some(json!({}))).await;
        assert_eq!(pointers(&resp), ["/connection_name"]);
        assert_eq!(total(&app, &key).await, 0, "nothing stored");
        let (_, all) = call(&app, "GET", IC, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 0, "nothing stored");

        // The round-robin method, another region, TLS.
        let c = create(
            &app,
            &key,
            json!({
                "connection_name": "rr",
                "transport_protocol": "TLS",
                "inbound": {"default_routing_method": "round-robin", "sip_region": "Europe", "channel_limit": 0},
                "outbound": {"localization": ""}
            }),
        )
        .await;
        assert_eq!(c["inbound"]["default_routing_method"], "round-robin");
        assert_eq!(
            (c["inbound"]["sip_region"].as_str(), c["transport_protocol"].as_str()),
            (Some("Europe"), Some("TLS"))
        );
        assert_eq!(c["inbound"]["channel_limit"], 0, "a limit of 0 is set, not unset");
        // An empty localization is a value the user set, and is shown.
        assert_eq!(c["outbound"]["localization"], "", "{c}");
    }
}

#[tokio::test]
async fn default_ips_must_be_the_connections_own() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let c = create(&app, &key_a, minimal("office")).await;
        let other = create(&app, &key_a, minimal("other")).await;
        let foreign = create(&app, &key_b, minimal("foreign")).await;
        let ip1 = add_ip(&app, &key_a, &c, "192.0.2.1").await;
        let ip2 = add_ip(&app, &key_a, &c, "192.0.2.2").await;
        let ip3 = add_ip(&app, &key_a, &c, "2001:db8::3").await;
        let other_ip = add_ip(&app, &key_a, &other, "192.0.2.9").await;
        let foreign_ip = add_ip(&app, &key_b, &foreign, "192.0.2.1").await;

        // Not in the create schema: ignored there.
        let body = json!({"connection_name": "x", "inbound": {"default_primary_ip_id": ip1}});
        let created = create(&app, &key_a, body).await;
        assert!(created["inbound"].get("default_primary_ip_id").is_none());

        for bad in [&other_ip, &foreign_ip, &"1234567890123456789".to_owned(), &"192.0.2.1".to_owned()] {
            let (st, resp) = call(
                &app,
                "PATCH",
                &uri(&c),
                Some(&key_a),
                Some(json!({"inbound": {"default_primary_ip_id": ip1, "default_tertiary_ip_id": bad}})),
            )
            .await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/inbound/default_tertiary_ip_id"])
            );
        }
        let (_, got) = call(&app, "GET", &uri(&c), Some(&key_a), None).await;
        assert!(got["data"]["inbound"].get("default_primary_ip_id").is_none(), "nothing stored");

        let (st, up) = call(
            &app,
            "PATCH",
            &uri(&c),
            Some(&key_a),
            Some(json!({"inbound": {
                "default_primary_ip_id": ip1,
                "default_secondary_ip_id": ip2,
                "default_tertiary_ip_id": ip3,
                "default_routing_method": "round-robin"
            }})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let inbound = &up["data"]["inbound"];
        assert_eq!(
            (
                &inbound["default_primary_ip_id"],
                &inbound["default_secondary_ip_id"],
                &inbound["default_tertiary_ip_id"]
            ),
            (&json!(ip1), &json!(ip2), &json!(ip3))
        );
        assert_eq!(inbound["sip_region"], "US", "objects merge key by key");

        // Deleting an IP sets the field naming it back to null; so does moving one to another
        // connection. The contract types these fields as strings, not nullable: responses
        // leave a null one out.
        let c_id = c["id"].as_str().unwrap();
        let (st, _) = call(&app, "DELETE", &format!("{IPS}/{ip2}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        let doc = stored(&store, c_id).await;
        assert_eq!(doc["inbound"]["default_secondary_ip_id"], Value::Null, "{doc}");
        assert!(doc["inbound"].get("default_secondary_ip_id").is_some(), "null, not removed: {doc}");
        assert_eq!(doc["inbound"]["default_tertiary_ip_id"], json!(ip3), "the others stay");
        let body = json!({"ip_address": "2001:db8::3", "connection_id": other["id"]});
        let (st, moved) = call(&app, "PATCH", &format!("{IPS}/{ip3}"), Some(&key_a), Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{moved}");
        let doc = stored(&store, c_id).await;
        assert_eq!(
            (&doc["inbound"]["default_primary_ip_id"], doc["inbound"].get("default_tertiary_ip_id")),
            (&json!(ip1), Some(&Value::Null))
        );
        let (_, got) = call(&app, "GET", &uri(&c), Some(&key_a), None).await;
        let inbound = &got["data"]["inbound"];
        assert_eq!(inbound["default_primary_ip_id"], json!(ip1));
        assert!(inbound.get("default_secondary_ip_id").is_none() && inbound.get("default_tertiary_ip_id").is_none());
        assert!(got["data"]["updated_at"].as_str() >= up["data"]["updated_at"].as_str());

        // Null clears the same way.
        let (st, up) =
            call(&app, "PATCH", &uri(&c), Some(&key_a), Some(json!({"inbound": {"default_primary_ip_id": null}})))
                .await;
        assert_eq!(st, StatusCode::OK);
        assert!(up["data"]["inbound"].get("default_primary_ip_id").is_none());
        assert_eq!(stored(&store, c_id).await["inbound"].get("default_primary_ip_id"), Some(&Value::Null));
    }
}

#[tokio::test]
async fn tenancy_each_account_sees_its_own() {
    for (app, _) in apps_and_stores().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (id_b, key_b) = account(&app, "Bravo").await;
        let a = create(&app, &key_a, minimal("alpha-office")).await;
        create(&app, &key_b, minimal("bravo-office")).await;
        let uri_a = uri(&a);

        let (_, la) = call(&app, "GET", IC, Some(&key_a), None).await;
        assert_eq!(names(&la), ["alpha-office"]);
        let (_, lb) = call(&app, "GET", &format!("{IC}?filter[account_id]={id_a}"), Some(&key_b), None).await;
        assert_eq!(lb["meta"]["total_results"], 0, "an account cannot widen its view");

        let (_, missing) = call(&app, "GET", &format!("{IC}/1234567890123456789"), Some(&key_b), None).await;
        assert_eq!(missing["errors"][0]["code"], "10005");
        for (method, body) in [("GET", None), ("PATCH", Some(json!({"connection_name": "stolen"}))), ("DELETE", None)] {
            let (st, resp) = call(&app, method, &uri_a, Some(&key_b), body).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing), "{method}");
        }
        let (_, still) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(still["data"], a);

        let (st, resp) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"account_id": id_b}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (_, all) = call(&app, "GET", IC, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 2);
        let (_, only_b) = call(&app, "GET", &format!("{IC}?filter[account_id]={id_b}"), Some(OPERATOR), None).await;
        assert_eq!(names(&only_b), ["bravo-office"]);
        let (st, up) = call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"connection_name": "alpha-hq"}))).await;
        assert_eq!((st, up["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_a.as_str())));

        // Other connection types are not listed here.
        let body = json!({"connection_name": "cred", "user_name": "creduser1", "password": "secret-password"});
        let (st, _) = call(&app, "POST", "/v2/credential_connections", Some(&key_a), Some(body)).await;
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!(total(&app, &key_a).await, 1);
    }
}

#[tokio::test]
async fn list_pages_filter_and_sort() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let ovp = profile(&app, &key, "office-profile").await;
        for (name, active) in [("Office-East", true), ("lab", false), ("office-west", true), ("Warehouse", false)] {
            let mut body = json!({"connection_name": name, "active": active});
            if name == "lab" {
                body["outbound"] = json!({"outbound_voice_profile_id": ovp});
            }
            create(&app, &key, body).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }

        let (st, all) = call(&app, "GET", IC, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(all["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 4}));
        assert_eq!(names(&all), ["Warehouse", "office-west", "lab", "Office-East"], "newest first");
        let mut seen = Vec::new();
        for n in 1..=2 {
            let (_, p) = call(&app, "GET", &format!("{IC}?page[size]=3&page[number]={n}"), Some(&key), None).await;
            assert_eq!(p["meta"], json!({"page_number": n, "page_size": 3, "total_pages": 2, "total_results": 4}));
            seen.extend(names(&p).into_iter().map(str::to_owned));
        }
        assert_eq!(seen, ["Warehouse", "office-west", "lab", "Office-East"]);
        for bad in ["page[size]=251", "page[size]=0", "page[number]=0", "filter[connection_name][contains]=of"] {
            let (st, body) = call(&app, "GET", &format!("{IC}?{bad}"), Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")), "{bad}");
        }
        let (_, f) = call(&app, "GET", &format!("{IC}?filter[connection_name][contains]=OFF"), Some(&key), None).await;
        assert_eq!(names(&f), ["office-west", "Office-East"]);
        let (_, f) =
            call(&app, "GET", &format!("{IC}?filter[outbound_voice_profile_id]={ovp}"), Some(&key), None).await;
        assert_eq!(names(&f), ["lab"]);

        for (q, expected) in [
            ("sort=connection_name", ["lab", "Office-East", "office-west", "Warehouse"]),
            ("sort=-connection_name", ["Warehouse", "office-west", "Office-East", "lab"]),
            ("sort=created_at", ["Office-East", "lab", "office-west", "Warehouse"]),
            ("sort=active", ["lab", "Warehouse", "Office-East", "office-west"]),
            ("sort=-active", ["Office-East", "office-west", "lab", "Warehouse"]),
        ] {
            let (st, v) = call(&app, "GET", &format!("{IC}?{q}"), Some(&key), None).await;
            assert_eq!((st, names(&v)), (StatusCode::OK, expected.to_vec()), "{q}");
        }
        let (st, body) = call(&app, "GET", &format!("{IC}?sort=name"), Some(&key), None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10032")));
    }
}

#[tokio::test]
async fn patch_merges_what_it_names() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let body = json!({"connection_name": "office", "tags": ["a"], "webhook_event_url": "https://example.com/h"});
        let c = create(&app, &key, body).await;
        for (bad, pointer) in [
            (json!({"connection_name": null}), "/connection_name"),
            (json!({"transport_protocol": "SCTP"}), "/transport_protocol"),
            (json!({"webhook_api_version": "texml"}), "/webhook_api_version"),
            (json!({"inbound": {"sip_region": "Mars"}}), "/inbound/sip_region"),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri(&c), Some(&key), Some(bad.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{bad}");
        }
        let (_, again) = call(&app, "GET", &uri(&c), Some(&key), None).await;
        assert_eq!(again["data"], c);

        tokio::time::sleep(Duration::from_millis(5)).await;
        let (st, up) = call(
            &app,
            "PATCH",
            &uri(&c),
            Some(&key),
            Some(json!({
                "connection_name": "office-2",
                "transport_protocol": "TCP",
                "default_on_hold_comfort_noise_enabled": null,
                "webhook_event_url": null,
                "inbound": {"sip_region": "Australia", "dnis_number_format": "national", "channel_limit": 5},
                "outbound": {"t38_reinvite_source": "telnyx", "localization": "GB", "channel_limit": 7}
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = &up["data"];
        assert_eq!(
            (up["connection_name"].as_str(), up["transport_protocol"].as_str()),
            (Some("office-2"), Some("TCP"))
        );
        assert_eq!(up["default_on_hold_comfort_noise_enabled"], true, "null returns to the IP default");
        assert!(up.get("webhook_event_url").is_none());
        assert_eq!(up["tags"], json!(["a"]));
        assert_eq!(
            (&up["inbound"]["sip_region"], &up["inbound"]["dnis_number_format"], &up["inbound"]["channel_limit"]),
            (&json!("Australia"), &json!("national"), &json!(5))
        );
        assert_eq!(up["inbound"]["timeout_1xx_secs"], 3);
        assert_eq!(
            (&up["outbound"]["t38_reinvite_source"], &up["outbound"]["localization"], &up["outbound"]["channel_limit"]),
            (&json!("telnyx"), &json!("GB"), &json!(7))
        );
        assert_eq!(up["outbound"]["tech_prefix"], c["outbound"]["tech_prefix"]);
        assert_eq!((&up["id"], &up["created_at"]), (&c["id"], &c["created_at"]));
        assert!(up["updated_at"].as_str() > c["updated_at"].as_str());
        let (_, got) = call(&app, "GET", &uri(&c), Some(&key), None).await;
        assert_eq!(&got["data"], up);

        // Set back to null, the limits, the localization and the failover URL are left out again.
        let (st, up) = call(
            &app,
            "PATCH",
            &uri(&c),
            Some(&key),
            Some(json!({
                "webhook_event_failover_url": null,
                "inbound": {"channel_limit": null},
                "outbound": {"localization": null, "channel_limit": null}
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        for path in UNSET_DEFAULTS {
            assert_eq!(up["data"].pointer(path), None, "left out: {path}");
        }
        assert_eq!(up["data"]["inbound"]["sip_region"], "Australia", "set values stay");
        assert_eq!(up["data"]["outbound"]["t38_reinvite_source"], "telnyx");
    }
}

#[tokio::test]
async fn delete_takes_the_connections_ips_with_it() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let body = json!({
            "connection_name": "office",
            "inbound": {"sip_subdomain": "office"},
            "outbound": {"ip_authentication_token": "office-token-0001"}
        });
        let c = create(&app, &key_a, body.clone()).await;
        let keep = create(&app, &key_a, minimal("keep")).await;
        let ip1 = add_ip(&app, &key_a, &c, "192.0.2.1").await;
        let ip2 = add_ip(&app, &key_a, &c, "192.0.2.2").await;
        let kept_ip = add_ip(&app, &key_a, &keep, "192.0.2.1").await;

        let (st, gone) = call(&app, "DELETE", &uri(&c), Some(&key_a), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &c));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri(&c), Some(&key_a), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        for ip in [&ip1, &ip2] {
            let (st, _) = call(&app, "GET", &format!("{IPS}/{ip}"), Some(&key_a), None).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "the connection's IPs went with it");
        }
        let (_, ips) = call(&app, "GET", IPS, Some(&key_a), None).await;
        assert_eq!(ips["data"].as_array().unwrap().len(), 1);
        assert_eq!(ips["data"][0]["id"], json!(kept_ip));
        let (_, list) = call(&app, "GET", IC, Some(&key_a), None).await;
        assert_eq!(list["data"], json!([keep]));

        // Its subdomain and token are free again, for any account; attaching to it is refused.
        create(&app, &key_b, body).await;
        let (st, resp) =
            call(&app, "POST", IPS, Some(&key_a), Some(json!({"connection_id": c["id"], "ip_address": "192.0.2.3"})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
    }
}
