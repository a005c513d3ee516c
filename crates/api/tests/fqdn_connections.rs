//! `/v2/fqdn_connections` and `/v2/fqdns` through the router, on both store backends: the
//! contract's FQDN connection defaults, the optional credentials (digest only), unique values,
//! FQDN records with validation (names, ports, the record type enumeration with 10032, the
//! a/srv port rule), tenancy, the default FQDN ids of a connection, `filter[fqdn]`, pages and
//! filters of the records, and the records deleted with their connection.

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{Repository, Store};

mod common;

use common::{OPERATOR, account, apps_and_stores, call, codes, ids, pointers, post, tick};

const FC: &str = "/v2/fqdn_connections";
const FQ: &str = "/v2/fqdns";

async fn connection(app: &axum::Router, key: &str, name: &str) -> String {
    post(app, FC, key, json!({"connection_name": name})).await["id"].as_str().unwrap().to_owned()
}

async fn fqdn(app: &axum::Router, key: &str, connection_id: &str, name: &str) -> Value {
    post(app, FQ, key, json!({"connection_id": connection_id, "fqdn": name, "dns_record_type": "a"})).await
}

async fn stored(store: &Store, kind: &str, id: &str) -> Option<String> {
    store.get_resource(kind, id).await.unwrap().map(|r| r.body)
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
            "default_primary_fqdn_id": null,
            "default_routing_method": "sequential",
            "default_secondary_fqdn_id": null,
            "default_tertiary_fqdn_id": null,
            "dnis_number_format": "e164",
            "generate_ringback_tone": false,
            "isup_headers_enabled": false,
            "prack_enabled": false,
            "shaken_stir_enabled": false,
            "sip_compact_headers_enabled": true,
            "sip_region": "US",
            "sip_subdomain": null,
            "sip_subdomain_receive_settings": "from_anyone",
            "timeout_1xx_secs": 3,
            "timeout_2xx_secs": 90
        },
        "ios_push_credential_id": null,
        "jitter_buffer": {"enable_jitter_buffer": false, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60},
        "microsoft_teams_sbc": false,
        "noise_suppression_details": {"engine": "denoiser", "attenuation_limit": 0},
        "onnet_t38_passthrough_enabled": false,
        "outbound": {
            "ani_override_type": "always",
            "call_parking_enabled": false,
            "encrypted_media": null,
            "generate_ringback_tone": false,
            "instant_ringback_enabled": false,
            "ip_authentication_method": "ip-authentication",
            "localization": "US",
            "t38_reinvite_source": "customer",
            "timeout_1xx_secs": 3,
            "timeout_2xx_secs": 90
        },
        "record_type": "fqdn_connection",
        "rtcp_settings": {"capture_enabled": false, "port": "rtp+1", "report_frequency_secs": 5},
        "tags": [],
        "transport_protocol": "UDP",
        "webhook_api_version": "1",
        "webhook_timeout_secs": null,
    })
}

/// Unset fields whose contract default its response type cannot hold (`channel_limit: null` is
/// no integer, `webhook_event_failover_url: ""` no URI): left out of every response, kept in
/// the stored document.
fn assert_unset_left_out(shown: &Value, stored: &str) {
    let stored: Value = serde_json::from_str(stored).unwrap();
    for path in [
        "/inbound/channel_limit",
        "/outbound/channel_limit",
        "/outbound/ip_authentication_token",
        "/webhook_event_failover_url",
    ] {
        assert_eq!(shown.pointer(path), None, "left out: {path}");
        let unset = stored.pointer(path).is_none_or(|v| v.is_null() || v == "");
        assert!(unset, "stored unset: {path}: {stored}");
    }
}

#[tokio::test]
async fn fqdn_connection_defaults_and_the_contract_example() {
    for (app, store) in apps_and_stores().await {
        let (st, body) = call(&app, "POST", FC, None, Some(json!({"connection_name": "office"}))).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (account_id, key) = account(&app, "Acme").await;

        let c = post(&app, FC, &key, json!({"connection_name": "office"})).await;
        let id = c["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(c["created_at"].as_str().unwrap().ends_with('Z') && c["updated_at"] == c["created_at"]);
        let mut expected = expected_defaults();
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = c[k].clone();
        }
        assert_eq!(c, expected, "every contract default, nothing invented");
        let doc = stored(&store, "fqdn_connection", id).await.unwrap();
        assert_unset_left_out(&c, &doc);
        let doc: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!((&doc["inbound"]["channel_limit"], &doc["webhook_event_failover_url"]), (&Value::Null, &json!("")));
        let (st, got) = call(&app, "GET", &format!("{FC}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));
        let (_, list) = call(&app, "GET", FC, Some(&key), None).await;
        assert_eq!(list["data"], json!([expected]));
        assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 1}));

        // The contract's example request (placeholders made real) is echoed field for field.
        let (_, p) = call(&app, "POST", "/v2/outbound_voice_profiles", Some(&key), Some(json!({"name": "ovp"}))).await;
        let ovp = p["data"]["id"].as_str().unwrap();
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
                "dnis_number_format": "+e164",
                "generate_ringback_tone": true,
                "isup_headers_enabled": true,
                "prack_enabled": true,
                "shaken_stir_enabled": true,
                "sip_compact_headers_enabled": true,
                "sip_region": "US",
                "sip_subdomain": "string",
                "sip_subdomain_receive_settings": "only_my_connections",
                "timeout_1xx_secs": 10,
                "timeout_2xx_secs": 10
            },
            "ios_push_credential_id": "ec0c8e5d-439e-4620-a0c1-9d9c8d02a836",
            "jitter_buffer": {"enable_jitter_buffer": true, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60},
            "microsoft_teams_sbc": true,
            "noise_suppression": "both",
            "noise_suppression_details": {"attenuation_limit": 80, "engine": "deep_filter_net"},
            "onnet_t38_passthrough_enabled": true,
            "outbound": {
                "ani_override": "+1234567890",
                "ani_override_type": "always",
                "call_parking_enabled": true,
                "channel_limit": 10,
                "encrypted_media": "SRTP",
                "generate_ringback_tone": true,
                "instant_ringback_enabled": true,
                "ip_authentication_method": "credential-authentication",
                "ip_authentication_token": "aBcD1234-wxyz",
                "localization": "GB",
                "outbound_voice_profile_id": ovp,
                "t38_reinvite_source": "customer",
                "tech_prefix": "0123",
                "timeout_1xx_secs": 10,
                "timeout_2xx_secs": 10
            },
            "rtcp_settings": {"capture_enabled": true, "port": "rtcp-mux", "report_frequency_secs": 10},
            "tags": ["tag1", "tag2"],
            "transport_protocol": "UDP",
            "webhook_api_version": "1",
            "webhook_event_failover_url": "https://failover.example.com",
            "webhook_event_url": "https://example.com",
            "webhook_timeout_secs": 25
        });
        let c = post(&app, FC, &key, example.clone()).await;
        for (k, v) in example.as_object().unwrap() {
            if let Some(o) = v.as_object() {
                for (nk, nv) in o {
                    assert_eq!(&c[k][nk], nv, "{k}.{nk}");
                }
            } else {
                assert_eq!(&c[k], v, "{k}");
            }
        }
        assert_eq!(c["inbound"]["default_routing_method"], "sequential", "unsent nested fields keep their defaults");

        // microsoft_teams_sbc is for create only: a PATCH leaves it.
        let uri = format!("{FC}/{}", c["id"].as_str().unwrap());
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"microsoft_teams_sbc": false}))).await;
        assert_eq!((st, &up["data"]["microsoft_teams_sbc"]), (StatusCode::OK, &json!(true)));

        // Set back to null, the limits, the token and the failover URL are left out again.
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({
                "inbound": {"channel_limit": null},
                "outbound": {"channel_limit": null, "ip_authentication_token": null},
                "webhook_event_failover_url": null
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let stored_doc = stored(&store, "fqdn_connection", c["id"].as_str().unwrap()).await.unwrap();
        assert_unset_left_out(&up["data"], &stored_doc);
        assert_eq!(up["data"]["outbound"]["localization"], "GB", "set values stay");
        assert_eq!(up["data"]["webhook_event_url"], "https://example.com");

        // The operator names the owning account and sees it; accounts do not see it.
        let (st, resp) = call(&app, "POST", FC, Some(OPERATOR), Some(json!({"connection_name": "ops"}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let c = post(&app, FC, OPERATOR, json!({"connection_name": "ops", "account_id": account_id})).await;
        assert_eq!(c["account_id"], json!(account_id));
        let (_, got) = call(&app, "GET", &format!("{FC}/{}", c["id"].as_str().unwrap()), Some(&key), None).await;
        assert!(got["data"].get("account_id").is_none());
    }
}

#[tokio::test]
async fn fqdn_connection_validation_and_unique_values() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let bad = json!({
            "connection_name": "",
            "transport_protocol": "SCTP",
            "microsoft_teams_sbc": "yes",
            "inbound": {
                "default_routing_method": "random",
                "default_primary_fqdn_id": "1234567890123456789",
                "sip_subdomain": "-bad-",
                "sip_subdomain_receive_settings": "nobody"
            },
            "outbound": {
                "ani_override": "+0123",
                "channel_limit": null,
                "encrypted_media": "ZRTP",
                "ip_authentication_method": "token",
                "ip_authentication_token": "short",
                "tech_prefix": "12345",
                "timeout_1xx_secs": 121,
                "timeout_2xx_secs": 0
            }
        });
        let (st, body) = call(&app, "POST", FC, Some(&key_a), Some(bad)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            pointers(&body),
            [
                "/connection_name",
                "/inbound/default_routing_method",
                "/inbound/sip_subdomain",
                "/inbound/sip_subdomain_receive_settings",
                "/outbound/ani_override",
                "/outbound/encrypted_media",
                "/outbound/ip_authentication_method",
                "/outbound/ip_authentication_token",
                "/outbound/tech_prefix",
                "/outbound/timeout_1xx_secs",
                "/outbound/timeout_2xx_secs",
                "/transport_protocol",
                "/microsoft_teams_sbc",
                // Checked against the store after the fields: a new connection has no FQDNs.
                "/inbound/default_primary_fqdn_id",
            ]
        );
        assert_eq!(
            codes(&body),
            [
                "10015", "10032", "10015", "10032", "10015", "10032", "10032", "10015", "10015", "10015", "10015",
                "10032", "10015", "10015"
            ]
        );
        let (_, list) = call(&app, "GET", FC, Some(&key_a), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");

        // Null: nullable fields take null, default_routing_method included.
        let c = post(
            &app,
            FC,
            &key_a,
            json!({"connection_name": "a", "inbound": {"default_routing_method": null, "sip_subdomain": "Alpha-1"},
                   "outbound": {"tech_prefix": "0042", "ip_authentication_token": "alpha-token-0001"}}),
        )
        .await;
        assert_eq!(c["inbound"]["default_routing_method"], Value::Null);
        assert_eq!(c["inbound"]["sip_subdomain"], "Alpha-1");

        // Subdomain (case ignored), tech prefix and token are the platform's to give once.
        for (body, pointer) in [
            (json!({"inbound": {"sip_subdomain": "alpha-1"}}), "/inbound/sip_subdomain"),
            (json!({"outbound": {"tech_prefix": "0042"}}), "/outbound/tech_prefix"),
            (json!({"outbound": {"ip_authentication_token": "alpha-token-0001"}}), "/outbound/ip_authentication_token"),
        ] {
            let mut body = body;
            body["connection_name"] = json!("b");
            let (st, resp) = call(&app, "POST", FC, Some(&key_b), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{body}");
            assert_eq!(codes(&resp), ["10007"]);
        }
        // Freed by a change.
        let uri = format!("{FC}/{}", c["id"].as_str().unwrap());
        let (st, _) = call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"inbound": {"sip_subdomain": null}}))).await;
        assert_eq!(st, StatusCode::OK);
        post(&app, FC, &key_b, json!({"connection_name": "b", "inbound": {"sip_subdomain": "ALPHA-1"}})).await;
    }
}

#[tokio::test]
async fn fqdn_connection_credentials_are_optional_and_kept_as_digest() {
    for (app, store) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        // Together or not at all.
        for (body, pointer) in [
            (json!({"connection_name": "x", "user_name": "fqdnuser1"}), "/password"),
            (json!({"connection_name": "x", "password": "a-long-secret"}), "/user_name"),
        ] {
            let (st, resp) = call(&app, "POST", FC, Some(&key), Some(body.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]), "{body}");
        }
        let c = post(
            &app,
            FC,
            &key,
            json!({"connection_name": "x", "user_name": "fqdnuser1", "password": "a-long-secret",
                   "outbound": {"ip_authentication_method": "credential-authentication"}}),
        )
        .await;
        assert_eq!((c["user_name"].as_str(), c["password"].as_str()), (Some("fqdnuser1"), Some("a-long-secret")));
        let id = c["id"].as_str().unwrap();
        let raw = stored(&store, "fqdn_connection", id).await.unwrap();
        assert!(!raw.contains("a-long-secret"), "{raw}");
        let doc: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(doc["_digest"]["user_name"], "fqdnuser1");
        assert_eq!(doc["_digest"]["ha1_md5"].as_str().unwrap().len(), 32);
        let (_, got) = call(&app, "GET", &format!("{FC}/{id}"), Some(&key), None).await;
        assert!(got["data"].get("password").is_none() && got["data"].get("_digest").is_none());

        // The user name is unique with credential connections' too.
        let (st, resp) = call(
            &app,
            "POST",
            "/v2/credential_connections",
            Some(&key),
            Some(json!({"connection_name": "c", "user_name": "FQDNUSER1", "password": "another-secret"})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/user_name"]));

        // Removing the user name removes the digest and frees the name.
        let (st, up) = call(&app, "PATCH", &format!("{FC}/{id}"), Some(&key), Some(json!({"user_name": null}))).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert!(up["data"].get("user_name").is_none());
        let doc: Value = serde_json::from_str(&stored(&store, "fqdn_connection", id).await.unwrap()).unwrap();
        assert!(doc.get("_digest").is_none());
        let (st, _) = call(
            &app,
            "POST",
            "/v2/credential_connections",
            Some(&key),
            Some(json!({"connection_name": "c", "user_name": "FQDNUSER1", "password": "another-secret"})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn fqdns_defaults_and_the_record_type_port_rule() {
    for (app, _) in apps_and_stores().await {
        let (account_id, key) = account(&app, "Acme").await;
        let conn = connection(&app, &key, "office").await;

        // The contract's example.
        let f = post(
            &app,
            FQ,
            &key,
            json!({"connection_id": conn, "dns_record_type": "a", "fqdn": "example.com", "port": 8080}),
        )
        .await;
        let id = f["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(
            f,
            json!({"id": id, "record_type": "fqdn", "connection_id": conn, "fqdn": "example.com",
                   "dns_record_type": "a", "port": 8080, "created_at": f["created_at"], "updated_at": f["created_at"]})
        );
        let (st, got) = call(&app, "GET", &format!("{FQ}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &f));

        // An a record without a port (or with null) gets 5060; an srv record has none.
        let a =
            post(&app, FQ, &key, json!({"connection_id": conn, "dns_record_type": "a", "fqdn": "a.example.com"})).await;
        assert_eq!(a["port"], 5060);
        let a2 = post(
            &app,
            FQ,
            &key,
            json!({"connection_id": conn, "dns_record_type": "a", "fqdn": "a2.example.com", "port": null}),
        )
        .await;
        assert_eq!(a2["port"], 5060);
        let srv =
            post(&app, FQ, &key, json!({"connection_id": conn, "dns_record_type": "srv", "fqdn": "example.org"})).await;
        assert_eq!(srv["port"], Value::Null);
        let (st, resp) = call(
            &app,
            "POST",
            FQ,
            Some(&key),
            Some(json!({"connection_id": conn, "dns_record_type": "srv", "fqdn": "example.net", "port": 5060})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/port"]));

        // PATCH: a new type without a port takes its own; a port on srv is refused.
        let uri = format!("{FQ}/{}", a["id"].as_str().unwrap());
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"dns_record_type": "srv"}))).await;
        assert_eq!(
            (st, &up["data"]["port"], &up["data"]["dns_record_type"]),
            (StatusCode::OK, &Value::Null, &json!("srv"))
        );
        let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"port": 5070}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/port"]));
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"dns_record_type": "a", "port": 5070}))).await;
        assert_eq!((st, &up["data"]["port"]), (StatusCode::OK, &json!(5070)));
        let (_, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"fqdn": "b.example.com"}))).await;
        assert_eq!((up["data"]["fqdn"].as_str(), up["data"]["port"].as_i64()), (Some("b.example.com"), Some(5070)));
        let (_, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"port": null}))).await;
        assert_eq!(up["data"]["port"], 5060, "null is the default port of an a record");

        // The same name, type and port once per connection (case and final dot aside).
        for name in ["EXAMPLE.com", "example.com."] {
            let (st, resp) = call(
                &app,
                "POST",
                FQ,
                Some(&key),
                Some(json!({"connection_id": conn, "dns_record_type": "a", "fqdn": name, "port": 8080})),
            )
            .await;
            assert_eq!(
                (st, pointers(&resp), codes(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/fqdn"], vec!["10007"])
            );
        }
        post(
            &app,
            FQ,
            &key,
            json!({"connection_id": conn, "dns_record_type": "a", "fqdn": "example.com", "port": 8081}),
        )
        .await;
        let other = connection(&app, &key, "other").await;
        post(
            &app,
            FQ,
            &key,
            json!({"connection_id": other, "dns_record_type": "a", "fqdn": "example.com", "port": 8080}),
        )
        .await;

        // The operator sees the owner, and needs no account_id.
        let o = post(
            &app,
            FQ,
            OPERATOR,
            json!({"connection_id": conn, "dns_record_type": "srv", "fqdn": "ops.example.com"}),
        )
        .await;
        assert_eq!(o["account_id"], json!(account_id));
        let (_, got) = call(&app, "GET", &format!("{FQ}/{}", o["id"].as_str().unwrap()), Some(&key), None).await;
        assert!(got["data"].get("account_id").is_none());
    }
}

#[tokio::test]
async fn fqdns_validation_reports_every_fault() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let conn = connection(&app, &key, "office").await;

        let (st, resp) = call(&app, "POST", FQ, Some(&key), Some(json!({}))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(pointers(&resp), ["/connection_id", "/fqdn", "/dns_record_type"]);
        let (_, resp) = call(
            &app,
            "POST",
            FQ,
            Some(&key),
            Some(json!({"connection_id": null, "fqdn": null, "dns_record_type": null})),
        )
        .await;
        assert_eq!(pointers(&resp), ["/connection_id", "/fqdn", "/dns_record_type"]);

        // The record type enumeration: 10032 at its pointer, with every other fault.
        let (st, resp) = call(
            &app,
            "POST",
            FQ,
            Some(&key),
            Some(json!({"connection_id": conn, "fqdn": "not a name", "dns_record_type": "AAAA", "port": 0})),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(pointers(&resp), ["/fqdn", "/dns_record_type", "/port"]);
        assert_eq!(codes(&resp), ["10015", "10032", "10015"]);
        assert!(resp["errors"][1]["detail"].as_str().unwrap().contains("a, srv"));

        for name in [
            json!("localhost"),
            json!("192.168.1.10"),
            json!("-x.example.com"),
            json!("x_y.example.com"),
            json!("example..com"),
            json!("sip:example.com"),
            json!("example.com:5060"),
            json!(format!("{}.com", "a".repeat(64))),
            json!(""),
            json!(42),
        ] {
            let (st, resp) = call(
                &app,
                "POST",
                FQ,
                Some(&key),
                Some(json!({"connection_id": conn, "fqdn": name, "dns_record_type": "a"})),
            )
            .await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/fqdn"]), "{name}");
        }
        for port in [json!(0), json!(65536), json!(-1), json!("5060"), json!(50.5)] {
            let (st, resp) = call(
                &app,
                "POST",
                FQ,
                Some(&key),
                Some(json!({"connection_id": conn, "fqdn": "example.com", "dns_record_type": "a", "port": port})),
            )
            .await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/port"]), "{port}");
        }
        for rtype in [json!("A"), json!("cname"), json!(1)] {
            let (_, resp) = call(
                &app,
                "POST",
                FQ,
                Some(&key),
                Some(json!({"connection_id": conn, "fqdn": "example.com", "dns_record_type": rtype})),
            )
            .await;
            assert_eq!((pointers(&resp), codes(&resp)), (vec!["/dns_record_type"], vec!["10032"]), "{rtype}");
        }
        // Only an FQDN connection.
        let (_, cred) = call(
            &app,
            "POST",
            "/v2/credential_connections",
            Some(&key),
            Some(json!({"connection_name": "c", "user_name": "creduser1", "password": "a-long-secret"})),
        )
        .await;
        for c in [cred["data"]["id"].as_str().unwrap(), "1234567890123456789"] {
            let (_, resp) = call(
                &app,
                "POST",
                FQ,
                Some(&key),
                Some(json!({"connection_id": c, "fqdn": "example.com", "dns_record_type": "a"})),
            )
            .await;
            assert_eq!(pointers(&resp), ["/connection_id"], "{c}");
        }
        let (_, list) = call(&app, "GET", FQ, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");

        // Edge values that are fine.
        let long = format!("{}.{}.{}.{}.com", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(57));
        assert_eq!(long.len(), 253);
        for (name, port) in [(long.as_str(), 1), ("x.io", 65535), ("sip.example.com.", 5060)] {
            let f = post(
                &app,
                FQ,
                &key,
                json!({"connection_id": conn, "fqdn": name, "dns_record_type": "a", "port": port}),
            )
            .await;
            assert_eq!((f["fqdn"].as_str(), f["port"].as_i64()), (Some(name), Some(port)), "kept as written");
        }

        // PATCH: required fields may not become null; faults change nothing.
        let f = fqdn(&app, &key, &conn, "patch.example.com").await;
        let uri = format!("{FQ}/{}", f["id"].as_str().unwrap());
        let (st, resp) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"fqdn": null, "dns_record_type": null, "connection_id": null, "port": 70000})),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(pointers(&resp), ["/connection_id", "/fqdn", "/dns_record_type", "/port"]);
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"], f);
    }
}

#[tokio::test]
async fn fqdns_tenancy() {
    for (app, _) in apps_and_stores().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let conn_a = connection(&app, &key_a, "alpha").await;
        let conn_a2 = connection(&app, &key_a, "alpha-2").await;
        let conn_b = connection(&app, &key_b, "bravo").await;
        let f = fqdn(&app, &key_a, &conn_a, "alpha.example.com").await;
        let uri = format!("{FQ}/{}", f["id"].as_str().unwrap());

        // Another account's connection is refused like a missing one.
        let (st, resp) = call(
            &app,
            "POST",
            FQ,
            Some(&key_b),
            Some(json!({"connection_id": conn_a, "fqdn": "b.example.com", "dns_record_type": "a"})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
        // Another account's record answers 404 like a missing one, for every method.
        for (method, body) in [("GET", None), ("PATCH", Some(json!({"port": 5070}))), ("DELETE", None)] {
            let (st, resp) = call(&app, method, &uri, Some(&key_b), body).await;
            assert_eq!((st, resp["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        let (_, list) = call(&app, "GET", FQ, Some(&key_b), None).await;
        assert_eq!(list["meta"]["total_results"], 0);

        // A record moves only to a connection of its own account.
        let (st, resp) = call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"connection_id": conn_b}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
        let (st, resp) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"connection_id": conn_b}))).await;
        assert_eq!(
            (st, pointers(&resp)),
            (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]),
            "not even by the operator"
        );
        let (st, up) = call(&app, "PATCH", &uri, Some(&key_a), Some(json!({"connection_id": conn_a2}))).await;
        assert_eq!((st, up["data"]["connection_id"].as_str()), (StatusCode::OK, Some(conn_a2.as_str())));

        // The operator: any connection, the owner is the connection's; a different one is a fault.
        let (st, resp) = call(
            &app,
            "POST",
            FQ,
            Some(OPERATOR),
            Some(json!({"connection_id": conn_b, "fqdn": "o.example.com", "dns_record_type": "a", "account_id": id_a})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (st, resp) =
            call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"account_id": "1234567890123456789"}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (_, all) = call(&app, "GET", FQ, Some(OPERATOR), None).await;
        assert_eq!(all["data"][0]["account_id"], json!(id_a));
        let (_, only) = call(&app, "GET", &format!("{FQ}?filter[account_id]={id_a}"), Some(OPERATOR), None).await;
        assert_eq!(only["meta"]["total_results"], 1);
    }
}

#[tokio::test]
async fn fqdns_list_filters_and_pages() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let c1 = connection(&app, &key, "one").await;
        let c2 = connection(&app, &key, "two").await;
        let a = fqdn(&app, &key, &c1, "a.example.com").await;
        tick().await;
        let b = post(
            &app,
            FQ,
            &key,
            json!({"connection_id": c1, "fqdn": "b.example.com", "dns_record_type": "a", "port": 5080}),
        )
        .await;
        tick().await;
        let c =
            post(&app, FQ, &key, json!({"connection_id": c2, "fqdn": "a.example.com", "dns_record_type": "srv"})).await;
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();

        let (_, all) = call(&app, "GET", FQ, Some(&key), None).await;
        assert_eq!(ids(&all), [id(&a), id(&b), id(&c)], "oldest first");
        assert_eq!(all["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 3}));
        for (query, expected) in [
            (format!("filter[connection_id]={c1}"), vec![id(&a), id(&b)]),
            ("filter[fqdn]=a.example.com".to_owned(), vec![id(&a), id(&c)]),
            ("filter[fqdn]=A.example.com".to_owned(), vec![]),
            ("filter[port]=5080".to_owned(), vec![id(&b)]),
            ("filter[port]=5060".to_owned(), vec![id(&a)]),
            ("filter[dns_record_type]=srv".to_owned(), vec![id(&c)]),
            (format!("filter[connection_id]={c1}&filter[port]=5060"), vec![id(&a)]),
            ("page[size]=2&page[number]=2".to_owned(), vec![id(&c)]),
            ("page[size]=2&page[number]=3".to_owned(), vec![]),
        ] {
            let (st, list) = call(&app, "GET", &format!("{FQ}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::OK, "{query}");
            assert_eq!(ids(&list), expected, "{query}");
        }
        let (_, page) = call(&app, "GET", &format!("{FQ}?page[size]=2&page[number]=2"), Some(&key), None).await;
        assert_eq!(page["meta"], json!({"page_number": 2, "page_size": 2, "total_pages": 2, "total_results": 3}));
        for query in
            ["page[size]=0", "page[size]=251", "page[number]=0", "filter[port]=x", "filter[dns_record_type]=mx"]
        {
            let (st, resp) = call(&app, "GET", &format!("{FQ}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{query}");
            let code = if query.contains("dns_record_type") { "10032" } else { "10015" };
            assert_eq!(resp["errors"][0]["code"], code, "{query}");
        }
    }
}

#[tokio::test]
async fn default_fqdn_ids_name_records_of_the_connection() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let conn = connection(&app, &key, "office").await;
        let other = connection(&app, &key, "other").await;
        let uri = format!("{FC}/{conn}");
        let f1 = fqdn(&app, &key, &conn, "one.example.com").await;
        let f2 = fqdn(&app, &key, &conn, "two.example.com").await;
        let foreign = fqdn(&app, &key, &other, "other.example.com").await;
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();

        // Another connection's record, or none: refused at the field's pointer, nothing changed.
        for bad in [id(&foreign), "1234567890123456789".to_owned(), conn.clone()] {
            let (st, resp) =
                call(&app, "PATCH", &uri, Some(&key), Some(json!({"inbound": {"default_secondary_fqdn_id": bad}})))
                    .await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/inbound/default_secondary_fqdn_id"])
            );
        }
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"inbound": {"default_primary_fqdn_id": id(&f1), "default_secondary_fqdn_id": id(&f2)}})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_eq!(
            (&up["data"]["inbound"]["default_primary_fqdn_id"], &up["data"]["inbound"]["default_secondary_fqdn_id"]),
            (&json!(id(&f1)), &json!(id(&f2)))
        );

        // Deleting a record, or moving it away, sets the field back to null.
        let (st, _) = call(&app, "DELETE", &format!("{FQ}/{}", id(&f1)), Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"]["inbound"]["default_primary_fqdn_id"], Value::Null);
        assert!(got["data"]["updated_at"].as_str() >= up["data"]["updated_at"].as_str());
        let (st, _) =
            call(&app, "PATCH", &format!("{FQ}/{}", id(&f2)), Some(&key), Some(json!({"connection_id": other}))).await;
        assert_eq!(st, StatusCode::OK);
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"]["inbound"]["default_secondary_fqdn_id"], Value::Null);
    }
}

#[tokio::test]
async fn deleting_a_connection_deletes_its_fqdns() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let conn = connection(&app, &key_a, "office").await;
        let keep = connection(&app, &key_a, "keep").await;
        let conn_b = connection(&app, &key_b, "bravo").await;
        let gone: Vec<String> =
            [fqdn(&app, &key_a, &conn, "one.example.com").await, fqdn(&app, &key_a, &conn, "two.example.com").await]
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_owned())
                .collect();
        let kept = fqdn(&app, &key_a, &keep, "one.example.com").await;
        tick().await;
        let kept_b = fqdn(&app, &key_b, &conn_b, "one.example.com").await;

        // Another account cannot delete it.
        let (st, _) = call(&app, "DELETE", &format!("{FC}/{conn}"), Some(&key_b), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        let (st, deleted) = call(&app, "DELETE", &format!("{FC}/{conn}"), Some(&key_a), None).await;
        assert_eq!((st, deleted["data"]["id"].as_str()), (StatusCode::OK, Some(conn.as_str())));
        for id in &gone {
            assert!(stored(&store, "fqdn", id).await.is_none(), "{id}");
            let (st, _) = call(&app, "GET", &format!("{FQ}/{id}"), Some(&key_a), None).await;
            assert_eq!(st, StatusCode::NOT_FOUND);
        }
        let (_, list) = call(&app, "GET", FQ, Some(OPERATOR), None).await;
        assert_eq!(ids(&list), [kept["id"].as_str().unwrap(), kept_b["id"].as_str().unwrap()]);
        let (st, _) = call(&app, "GET", &format!("{FC}/{conn}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Their claims are free: the same record on a new connection.
        let again = connection(&app, &key_a, "again").await;
        fqdn(&app, &key_a, &again, "one.example.com").await;
        let (st, resp) = call(
            &app,
            "POST",
            FQ,
            Some(&key_a),
            Some(json!({"connection_id": conn, "fqdn": "x.example.com", "dns_record_type": "a"})),
        )
        .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
    }
}

#[tokio::test]
async fn fqdn_connection_list_filters_by_fqdn_records() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let one = connection(&app, &key, "office one").await;
        tick().await;
        let two = connection(&app, &key, "office two").await;
        tick().await;
        let three = connection(&app, &key, "warehouse").await;
        let b = connection(&app, &key_b, "bravo office").await;
        fqdn(&app, &key, &one, "pbx.example.com").await;
        fqdn(&app, &key, &two, "pbx.example.com").await;
        fqdn(&app, &key, &three, "other.example.com").await;
        fqdn(&app, &key_b, &b, "pbx.example.com").await;

        for (query, expected) in [
            ("filter[fqdn]=pbx.example.com", vec![two.as_str(), one.as_str()]),
            ("filter[fqdn]=pbx.example.com&sort=created_at", vec![one.as_str(), two.as_str()]),
            ("filter[fqdn]=PBX.example.com", vec![]),
            ("filter[fqdn]=pbx.example.com&filter[connection_name][contains]=TWO", vec![two.as_str()]),
            ("filter[fqdn]=pbx.example.com&page[size]=1&page[number]=2", vec![one.as_str()]),
            ("sort=connection_name", vec![one.as_str(), two.as_str(), three.as_str()]),
        ] {
            let (st, list) = call(&app, "GET", &format!("{FC}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::OK, "{query}");
            assert_eq!(ids(&list), expected, "{query}");
        }
        let (_, page) =
            call(&app, "GET", &format!("{FC}?filter[fqdn]=pbx.example.com&page[size]=1"), Some(&key), None).await;
        assert_eq!(page["meta"], json!({"page_number": 1, "page_size": 1, "total_pages": 2, "total_results": 2}));
        let (_, all) = call(&app, "GET", &format!("{FC}?filter[fqdn]=pbx.example.com"), Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 3);
        for query in [
            "sort=fqdn",
            "filter[fqdn]=x&sort=name",
            "filter[fqdn]=x&filter[connection_name][contains]=ab",
            "filter[fqdn]=x&page[size]=251",
        ] {
            let (st, _) = call(&app, "GET", &format!("{FC}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{query}");
        }
    }
}

#[tokio::test]
async fn tech_prefixes_are_shared_with_ip_connections() {
    for (app, _) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let ip = post(&app, "/v2/ip_connections", &key_a, json!({"connection_name": "ip"})).await;
        let taken = ip["outbound"]["tech_prefix"].as_str().unwrap().to_owned();
        let other = if taken == "0042" { "0043" } else { "0042" };
        let c = post(&app, FC, &key_b, json!({"connection_name": "f", "outbound": {"tech_prefix": other}})).await;
        let uri = format!("{FC}/{}", c["id"].as_str().unwrap());
        // The IP connection's prefix, on create or PATCH, in any account: taken.
        for (method, path, key) in [("POST", FC, &key_b), ("POST", FC, &key_a), ("PATCH", uri.as_str(), &key_b)] {
            let body = json!({"connection_name": "g", "outbound": {"tech_prefix": taken}});
            let (st, resp) = call(&app, method, path, Some(key), Some(body)).await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec!["/outbound/tech_prefix"]),
                "{method}"
            );
            assert_eq!(codes(&resp), ["10007"]);
        }
        let (_, got) = call(&app, "GET", &uri, Some(&key_b), None).await;
        assert_eq!(got["data"]["outbound"]["tech_prefix"], other, "unchanged");
        // Once the IP connection is gone it is free.
        let (st, _) =
            call(&app, "DELETE", &format!("/v2/ip_connections/{}", ip["id"].as_str().unwrap()), Some(&key_a), None)
                .await;
        assert_eq!(st, StatusCode::OK);
        let (st, up) = call(&app, "PATCH", &uri, Some(&key_b), Some(json!({"outbound": {"tech_prefix": taken}}))).await;
        assert_eq!((st, &up["data"]["outbound"]["tech_prefix"]), (StatusCode::OK, &json!(taken)));
    }
}
