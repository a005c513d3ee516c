//! `/v2/phone_numbers` and its voice settings through the router, on both store backends: the
//! operator adds and deletes numbers, accounts point them at their own connections, E.164
//! uniqueness across accounts, validation with pointers (nothing stored when refused),
//! tenancy, the contract's voice settings with their defaults and PATCH merge, and the
//! `/phone_numbers/voice` filters and sort.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{Repository, Resource, Store};

mod common;

use common::{OPERATOR, account, apps_and_stores, call, column, pointers};

const NUMBERS: &str = "/v2/phone_numbers";
const VOICE: &str = "/v2/phone_numbers/voice";

/// A connection document of `kind` stored directly (the connection modules are tested on
/// their own).
async fn connection(store: &Store, kind: &str, id: &str, account_id: &str, name: &str) {
    let now = "2024-01-01T00:00:00.000Z";
    let r = Resource {
        kind: kind.into(),
        id: id.into(),
        account_id: account_id.into(),
        name: name.into(),
        body: json!({"id": id, "record_type": kind, "connection_name": name}).to_string(),
        created_at: now.into(),
        updated_at: now.into(),
    };
    store.insert_resource(&r, &[]).await.unwrap();
}

async fn add(app: &axum::Router, body: Value) -> Value {
    common::post(app, NUMBERS, OPERATOR, body).await
}

fn numbers(list: &Value) -> Vec<&str> {
    column(list, "phone_number")
}

fn default_voice() -> Value {
    json!({
        "call_forwarding": {"call_forwarding_enabled": true},
        "call_recording": {
            "inbound_call_recording_channels": "single",
            "inbound_call_recording_enabled": false,
            "inbound_call_recording_format": "wav"
        },
        "caller_id_name_enabled": false,
        "cnam_listing": {"cnam_listing_enabled": false},
        "emergency": {"emergency_enabled": false, "emergency_status": "disabled"},
        "inbound_call_screening": "disabled",
        "media_features": {
            "accept_any_rtp_packets_enabled": false,
            "rtp_auto_adjust_enabled": true,
            "t38_fax_gateway_enabled": false
        },
        "tech_prefix_enabled": false,
        "translated_number": "",
        "usage_payment_method": "pay-per-minute"
    })
}

#[tokio::test]
async fn operator_adds_with_defaults_account_reads() {
    for (app, _) in apps_and_stores().await {
        let (st, _) = call(&app, "GET", NUMBERS, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (acct, key) = account(&app, "Acme").await;

        let n = add(&app, json!({"phone_number": "+13035551234", "account_id": acct})).await;
        let id = n["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        let mut expected = json!({
            "record_type": "phone_number",
            "phone_number": "+13035551234",
            "status": "active",
            "connection_id": null,
            "connection_name": null,
            "customer_reference": null,
            "tags": [],
            "call_forwarding_enabled": true,
            "call_recording_enabled": false,
            "cnam_listing_enabled": false,
            "caller_id_name_enabled": false,
            "t38_fax_gateway_enabled": false,
            "emergency_enabled": false,
            // What the number is (libphonenumber's metadata): a +1 geographic number.
            "country_iso_alpha2": "US",
            "phone_number_type": "local",
            "deletion_lock_enabled": false,
            "account_id": acct,
        });
        for k in ["id", "purchased_at", "created_at", "updated_at"] {
            assert!(n[k].is_string(), "{k}");
            expected[k] = n[k].clone();
        }
        assert_eq!(n, expected);

        // The account sees it, without the owner.
        let mut own = expected.clone();
        own.as_object_mut().unwrap().remove("account_id");
        let uri = format!("{NUMBERS}/{id}");
        let (st, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &own));
        let (_, list) = call(&app, "GET", NUMBERS, Some(&key), None).await;
        assert_eq!(list["data"], json!([own]));

        // The voice settings with the contract's defaults. No connection and no customer
        // reference: left out, as the contract types both as strings, not nullable.
        let mut voice = default_voice();
        for (k, v) in
            [("id", json!(id)), ("record_type", json!("voice_settings")), ("phone_number", json!("+13035551234"))]
        {
            voice[k] = v;
        }
        let (st, got) = call(&app, "GET", &format!("{uri}/voice"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &voice));
        let (_, list) = call(&app, "GET", VOICE, Some(&key), None).await;
        assert_eq!(list["data"], json!([voice]));
        assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 1}));
        let (_, got) = call(&app, "GET", &format!("{uri}/voice"), Some(OPERATOR), None).await;
        assert_eq!(got["data"]["account_id"], json!(acct));

        // Only the operator adds and deletes.
        let (st, body) =
            call(&app, "POST", NUMBERS, Some(&key), Some(json!({"phone_number": "+13035550000", "account_id": acct})))
                .await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("10010")));
        let (st, _) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (_, list) = call(&app, "GET", NUMBERS, Some(OPERATOR), None).await;
        assert_eq!(list["meta"]["total_results"], 1);

        // Every field at create.
        let n = add(
            &app,
            json!({"phone_number": "+442079460000", "account_id": acct, "tags": ["main"], "customer_reference": "REF 1"}),
        )
        .await;
        assert_eq!((&n["tags"], &n["customer_reference"]), (&json!(["main"]), &json!("REF 1")));
        assert_eq!(
            (&n["country_iso_alpha2"], &n["phone_number_type"], &n["deletion_lock_enabled"]),
            (&json!("GB"), &json!("local"), &json!(false))
        );

        // Delete answers the number; it is gone and its E.164 free again.
        let (st, gone) = call(&app, "DELETE", &uri, Some(OPERATOR), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &expected));
        for (method, u) in [("GET", uri.clone()), ("GET", format!("{uri}/voice")), ("DELETE", uri.clone())] {
            let (st, body) = call(&app, method, &u, Some(OPERATOR), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{u}");
        }
        let again = add(&app, json!({"phone_number": "+13035551234", "account_id": acct})).await;
        assert_ne!(again["id"], n["id"]);
    }
}

#[tokio::test]
async fn validation_with_pointers_and_unique_numbers() {
    for (app, store) in apps_and_stores().await {
        let (a, _) = account(&app, "Alpha").await;
        let (b, _) = account(&app, "Bravo").await;
        connection(&store, "credential_connection", "1000000000000000001", &a, "alpha-trunk").await;
        let cases = [
            (json!({"account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+13035551234"}), vec!["/account_id"]),
            (json!({}), vec!["/account_id", "/phone_number"]),
            (json!({"phone_number": "+13035551234", "account_id": "1234567890123456789"}), vec!["/account_id"]),
            (json!({"phone_number": "13035551234", "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+03035551234", "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+123456", "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+1234567890123456", "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+1 303 555 1234", "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": 13035551234u64, "account_id": a}), vec!["/phone_number"]),
            (json!({"phone_number": "+13035551234", "account_id": a, "tags": [""]}), vec!["/tags/0"]),
            (
                json!({"phone_number": "+13035551234", "account_id": a, "customer_reference": 5}),
                vec!["/customer_reference"],
            ),
            (json!({"phone_number": "+13035551234", "account_id": a, "connection_id": "404"}), vec!["/connection_id"]),
            (json!({"phone_number": "+13035551234", "account_id": a, "connection_id": 7}), vec!["/connection_id"]),
            // Another account's connection, exactly like a missing one.
            (
                json!({"phone_number": "+13035551234", "account_id": b, "connection_id": "1000000000000000001"}),
                vec!["/connection_id"],
            ),
        ];
        for (body, expected) in cases {
            let (st, resp) = call(&app, "POST", NUMBERS, Some(OPERATOR), Some(body.clone())).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {resp}");
            assert_eq!(pointers(&resp), expected, "{body} -> {resp}");
        }
        let (_, list) = call(&app, "GET", NUMBERS, Some(OPERATOR), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing stored");

        // Boundaries that are fine; a connection at create.
        add(&app, json!({"phone_number": "+1234567", "account_id": a})).await;
        add(&app, json!({"phone_number": "+123456789012345", "account_id": a})).await;
        let n =
            add(&app, json!({"phone_number": "+13035551234", "account_id": a, "connection_id": "1000000000000000001"}))
                .await;
        assert_eq!(
            (&n["connection_id"], &n["connection_name"]),
            (&json!("1000000000000000001"), &json!("alpha-trunk"))
        );

        // One number, one account, platform-wide.
        for owner in [&a, &b] {
            let (st, resp) = call(
                &app,
                "POST",
                NUMBERS,
                Some(OPERATOR),
                Some(json!({"phone_number": "+13035551234", "account_id": owner})),
            )
            .await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/phone_number"]), "{resp}");
            assert_eq!(resp["errors"][0]["code"], "10007");
        }
        let (_, list) = call(&app, "GET", NUMBERS, Some(OPERATOR), None).await;
        assert_eq!(list["meta"]["total_results"], 3);

        // The number and its owner cannot change; PATCHes keep the number claimed.
        let uri = format!("{NUMBERS}/{}", n["id"].as_str().unwrap());
        for (body, pointer) in [
            (json!({"phone_number": "+13035559999"}), "/phone_number"),
            (json!({"account_id": b}), "/account_id"),
            (json!({"tags": "x"}), "/tags"),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(OPERATOR), Some(body)).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec![pointer]));
        }
        let (st, _) =
            call(&app, "PATCH", &uri, Some(OPERATOR), Some(json!({"phone_number": "+13035551234", "tags": ["a"]})))
                .await;
        assert_eq!(st, StatusCode::OK);
        let (st, resp) =
            call(&app, "POST", NUMBERS, Some(OPERATOR), Some(json!({"phone_number": "+13035551234", "account_id": b})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/phone_number"]), "still claimed");

        // Deleting the account frees its numbers.
        let (st, _) = call(&app, "DELETE", &format!("/v2/accounts/{a}"), Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
        add(&app, json!({"phone_number": "+13035551234", "account_id": b})).await;
    }
}

#[tokio::test]
async fn tenancy_and_connections() {
    for (app, store) in apps_and_stores().await {
        let (a, key_a) = account(&app, "Alpha").await;
        let (b, key_b) = account(&app, "Bravo").await;
        let kinds = ["credential_connection", "ip_connection", "fqdn_connection", "uac_connection"];
        for (i, kind) in kinds.iter().enumerate() {
            connection(&store, kind, &format!("100000000000000000{i}"), &a, &format!("alpha-{kind}")).await;
        }
        connection(&store, "credential_connection", "2000000000000000000", &b, "bravo-trunk").await;
        let na = add(&app, json!({"phone_number": "+13035551111", "account_id": a})).await;
        let nb = add(&app, json!({"phone_number": "+13035552222", "account_id": b})).await;
        let uri_a = format!("{NUMBERS}/{}", na["id"].as_str().unwrap());
        let uri_b = format!("{NUMBERS}/{}", nb["id"].as_str().unwrap());

        // Lists show only one's own; filter[account_id] does not widen them.
        for (key, own, other) in [(&key_a, "+13035551111", &b), (&key_b, "+13035552222", &a)] {
            for path in [NUMBERS, VOICE] {
                let (_, list) = call(&app, "GET", path, Some(key), None).await;
                assert_eq!(numbers(&list), [own], "{path}");
                let (_, list) = call(&app, "GET", &format!("{path}?filter[account_id]={other}"), Some(key), None).await;
                assert_eq!(list["meta"]["total_results"], 0);
            }
        }
        let (_, all) = call(&app, "GET", NUMBERS, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 2);
        let (_, only_b) = call(&app, "GET", &format!("{VOICE}?filter[account_id]={b}"), Some(OPERATOR), None).await;
        assert_eq!(numbers(&only_b), ["+13035552222"]);

        // A's number is 404 to B, like a missing one, whatever the method.
        let (_, missing) = call(&app, "GET", &format!("{NUMBERS}/1234567890123456789"), Some(&key_b), None).await;
        assert_eq!(missing["errors"][0]["code"], "10005");
        for (method, uri, body) in [
            ("GET", uri_a.clone(), None),
            ("PATCH", uri_a.clone(), Some(json!({"connection_id": "2000000000000000000"}))),
            ("DELETE", uri_a.clone(), None),
            ("GET", format!("{uri_a}/voice"), None),
            ("PATCH", format!("{uri_a}/voice"), Some(json!({"tech_prefix_enabled": true}))),
        ] {
            let (st, resp) = call(&app, method, &uri, Some(&key_b), body).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing), "{method} {uri}");
        }
        let (_, still) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(still["data"]["connection_id"], Value::Null);
        let (_, voice) = call(&app, "GET", &format!("{uri_a}/voice"), Some(&key_a), None).await;
        assert_eq!(voice["data"]["tech_prefix_enabled"], false);

        // B cannot use A's connection, not even through the operator.
        for key in [&key_b, &OPERATOR.to_owned()] {
            let (st, resp) =
                call(&app, "PATCH", &uri_b, Some(key), Some(json!({"connection_id": "1000000000000000000"}))).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
        }
        let (_, got) = call(&app, "GET", &uri_b, Some(&key_b), None).await;
        assert_eq!(got["data"]["connection_id"], Value::Null, "nothing stored");

        // A points its number at each kind of its connections.
        for (i, kind) in kinds.iter().enumerate() {
            let cid = format!("100000000000000000{i}");
            let (st, up) =
                call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"connection_id": cid, "tags": ["t"]}))).await;
            assert_eq!(st, StatusCode::OK, "{kind}: {up}");
            assert_eq!(
                (&up["data"]["connection_id"], &up["data"]["connection_name"]),
                (&json!(cid), &json!(format!("alpha-{kind}")))
            );
            assert!(up["data"].get("account_id").is_none());
            let (_, voice) = call(&app, "GET", &format!("{uri_a}/voice"), Some(&key_a), None).await;
            assert_eq!(voice["data"]["connection_id"], json!(cid));
        }
        let (st, up) = call(
            &app,
            "PATCH",
            &uri_a,
            Some(&key_a),
            Some(json!({"customer_reference": "REF-A", "account_id": a, "tags": ["x", "y"]})),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_eq!(
            (&up["data"]["connection_id"], &up["data"]["customer_reference"], &up["data"]["tags"]),
            (&json!("1000000000000000003"), &json!("REF-A"), &json!(["x", "y"])),
            "untouched fields stay"
        );
        // null detaches; a deleted connection shows as detached.
        let (_, up) = call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"connection_id": null}))).await;
        assert_eq!((&up["data"]["connection_id"], &up["data"]["connection_name"]), (&Value::Null, &Value::Null));
        let (st, _) =
            call(&app, "PATCH", &uri_b, Some(&key_b), Some(json!({"connection_id": "2000000000000000000"}))).await;
        assert_eq!(st, StatusCode::OK);
        let (_, list) =
            call(&app, "GET", &format!("{NUMBERS}?filter[connection_id]=2000000000000000000"), Some(OPERATOR), None)
                .await;
        assert_eq!(numbers(&list), ["+13035552222"]);
        assert!(store.delete_resource("credential_connection", "2000000000000000000").await.unwrap());
        let (_, got) = call(&app, "GET", &uri_b, Some(&key_b), None).await;
        assert_eq!((&got["data"]["connection_id"], &got["data"]["connection_name"]), (&Value::Null, &Value::Null));
    }
}

#[tokio::test]
async fn voice_settings_patch_merges() {
    for (app, _) in apps_and_stores().await {
        let (acct, key) = account(&app, "Acme").await;
        let n = add(&app, json!({"phone_number": "+13035551234", "account_id": acct})).await;
        let uri = format!("{NUMBERS}/{}/voice", n["id"].as_str().unwrap());
        let (_, before) = call(&app, "GET", &uri, Some(&key), None).await;

        // Refused PATCHes, every fault with its pointer, change nothing.
        let cases = [
            (json!({"usage_payment_method": "per-call"}), vec!["/usage_payment_method"]),
            (json!({"inbound_call_screening": "block"}), vec!["/inbound_call_screening"]),
            (json!({"tech_prefix_enabled": "yes"}), vec!["/tech_prefix_enabled"]),
            (json!({"translated_number": "+1 303"}), vec!["/translated_number"]),
            (json!({"call_forwarding": {"forwarding_type": "busy"}}), vec!["/call_forwarding/forwarding_type"]),
            (json!({"call_forwarding": {"forwards_to": "3035559123"}}), vec!["/call_forwarding/forwards_to"]),
            (json!({"call_forwarding": "always"}), vec!["/call_forwarding"]),
            (
                json!({"call_recording": {"inbound_call_recording_format": "ogg"}}),
                vec!["/call_recording/inbound_call_recording_format"],
            ),
            (
                json!({"media_features": {"rtp_auto_adjust_enabled": 1}}),
                vec!["/media_features/rtp_auto_adjust_enabled"],
            ),
            (json!({"cnam_listing": {"cnam_listing_enabled": true}}), vec!["/cnam_listing/cnam_listing_details"]),
            (json!({"cnam_listing": {"cnam_listing_details": "ACME"}}), vec!["/cnam_listing/cnam_listing_enabled"]),
            (
                json!({"cnam_listing": {"cnam_listing_enabled": true, "cnam_listing_details": "ACME-CORP"}}),
                vec!["/cnam_listing/cnam_listing_details"],
            ),
            (
                json!({"usage_payment_method": "x", "call_forwarding": {"forwarding_type": "x", "forwards_to": "x"}}),
                vec!["/usage_payment_method", "/call_forwarding/forwarding_type", "/call_forwarding/forwards_to"],
            ),
        ];
        for (body, expected) in cases {
            let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(body.clone())).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {resp}");
            assert_eq!(pointers(&resp), expected, "{body} -> {resp}");
        }
        let (_, resp) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"usage_payment_method": "x"}))).await;
        assert_eq!(resp["errors"][0]["code"], "10032");
        let (_, again) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(again, before, "refused PATCHes change nothing");

        // The contract's example, echoed.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let example = json!({
            "call_forwarding": {"call_forwarding_enabled": true, "forwarding_type": "always", "forwards_to": "+13035559123"},
            "call_recording": {
                "inbound_call_recording_channels": "single",
                "inbound_call_recording_enabled": true,
                "inbound_call_recording_format": "wav"
            },
            "caller_id_name_enabled": true,
            "cnam_listing": {"cnam_listing_details": "example", "cnam_listing_enabled": true},
            "inbound_call_screening": "disabled",
            "media_features": {
                "accept_any_rtp_packets_enabled": true,
                "rtp_auto_adjust_enabled": true,
                "t38_fax_gateway_enabled": true
            },
            "tech_prefix_enabled": true,
            "translated_number": "+13035559999",
            "usage_payment_method": "pay-per-minute"
        });
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(example.clone())).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        for (k, v) in example.as_object().unwrap() {
            assert_eq!(&up["data"][k], v, "{k}");
        }
        assert_eq!(up["data"]["emergency"], json!({"emergency_enabled": false, "emergency_status": "disabled"}));
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got, up);
        // The number shows the summaries; its updated_at moved.
        let (_, number) =
            call(&app, "GET", &format!("{NUMBERS}/{}", n["id"].as_str().unwrap()), Some(&key), None).await;
        for k in ["call_recording_enabled", "cnam_listing_enabled", "caller_id_name_enabled", "t38_fax_gateway_enabled"]
        {
            assert_eq!(number["data"][k], true, "{k}");
        }
        assert!(number["data"]["updated_at"].as_str() > n["updated_at"].as_str());

        // Key by key; null resets to the default (or clears); "" clears a field without one.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(OPERATOR),
            Some(json!({
                "usage_payment_method": "channel",
                "translated_number": null,
                "tech_prefix_enabled": null,
                "call_forwarding": {"forwarding_type": "on-failure", "forwards_to": ""},
                "call_recording": {"inbound_call_recording_channels": "dual"},
                "cnam_listing": {"cnam_listing_enabled": false},
                "media_features": null
            })),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let v = &up["data"];
        assert_eq!((&v["usage_payment_method"], &v["translated_number"]), (&json!("channel"), &json!("")));
        assert_eq!(v["tech_prefix_enabled"], false);
        assert_eq!(v["caller_id_name_enabled"], true, "untouched");
        assert_eq!(v["call_forwarding"], json!({"call_forwarding_enabled": true, "forwarding_type": "on-failure"}));
        assert_eq!(
            v["call_recording"],
            json!({
                "inbound_call_recording_channels": "dual",
                "inbound_call_recording_enabled": true,
                "inbound_call_recording_format": "wav"
            })
        );
        assert_eq!(v["cnam_listing"], json!({"cnam_listing_enabled": false, "cnam_listing_details": "example"}));
        assert_eq!(v["media_features"], default_voice()["media_features"]);
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"call_forwarding": {"forwarding_type": null}, "cnam_listing": null, "call_recording": null})),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(up["data"]["call_forwarding"], json!({"call_forwarding_enabled": true}));
        assert_eq!(up["data"]["cnam_listing"], default_voice()["cnam_listing"]);
        assert_eq!(up["data"]["call_recording"], default_voice()["call_recording"]);
        // An empty body changes nothing.
        let (st, same) = call(&app, "PATCH", &uri, Some(&key), None).await;
        assert_eq!((st, &same["data"]), (StatusCode::OK, &up["data"]));
    }
}

#[tokio::test]
async fn voice_list_filters_and_sort() {
    for (app, store) in apps_and_stores().await {
        let (acct, key) = account(&app, "Acme").await;
        connection(&store, "ip_connection", "1000000000000000001", &acct, "Office-PBX").await;
        connection(&store, "credential_connection", "1000000000000000002", &acct, "alpha-phones").await;
        for (number, conn, reference, payment) in [
            ("+13035550001", Some("1000000000000000001"), Some("R1"), "channel"),
            ("+442079460002", None, None, "pay-per-minute"),
            ("+13035550003", Some("1000000000000000002"), Some("R2"), "pay-per-minute"),
            ("+4930123004", Some("1000000000000000001"), Some("R1"), "pay-per-minute"),
        ] {
            let n = add(
                &app,
                json!({"phone_number": number, "account_id": acct, "connection_id": conn, "customer_reference": reference}),
            )
            .await;
            let uri = format!("{NUMBERS}/{}/voice", n["id"].as_str().unwrap());
            let (st, _) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"usage_payment_method": payment}))).await;
            assert_eq!(st, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let get = |q: &'static str| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "GET", &format!("{VOICE}?{q}"), Some(&key), None).await;
                assert_eq!(st, StatusCode::OK, "{q}: {v}");
                assert!(v["data"].as_array().unwrap().iter().all(|d| d["record_type"] == "voice_settings"));
                numbers(&v).into_iter().map(str::to_owned).collect::<Vec<_>>()
            }
        };
        assert_eq!(get("").await, ["+4930123004", "+13035550003", "+442079460002", "+13035550001"]);
        assert_eq!(get("sort=purchased_at").await, ["+13035550001", "+442079460002", "+13035550003", "+4930123004"]);
        assert_eq!(get("sort=phone_number").await, ["+13035550001", "+13035550003", "+442079460002", "+4930123004"]);
        assert_eq!(
            get("sort=connection_name").await,
            ["+13035550003", "+13035550001", "+4930123004", "+442079460002"],
            "alpha-phones, Office-PBX (twice, oldest first), none last"
        );
        assert_eq!(
            get("sort=usage_payment_method").await,
            ["+13035550001", "+442079460002", "+13035550003", "+4930123004"]
        );
        assert_eq!(get("filter[phone_number]=303555").await, ["+13035550003", "+13035550001"]);
        assert_eq!(get("filter[phone_number]=%2B4420").await, ["+442079460002"]);
        assert_eq!(get("filter[phone_number]=303-555").await, Vec::<String>::new(), "non-digits match nothing");
        assert_eq!(get("filter[connection_name][contains]=pbx").await, ["+4930123004", "+13035550001"]);
        assert_eq!(get("filter[customer_reference]=R1&sort=phone_number").await, ["+13035550001", "+4930123004"]);
        assert_eq!(get("filter[voice.usage_payment_method]=channel").await, ["+13035550001"]);
        assert_eq!(
            get("filter[voice.usage_payment_method]=pay-per-minute&filter[customer_reference]=R1").await,
            ["+4930123004"]
        );
        assert_eq!(get("sort=phone_number&page[size]=3&page[number]=2").await, ["+4930123004"]);
        for bad in [
            "sort=-phone_number",
            "sort=created_at",
            "filter[voice.usage_payment_method]=free",
            "filter[phone_number]=30",
            "filter[connection_name][contains]=of",
            "page[size]=251",
            "page[number]=0",
        ] {
            let (st, body) = call(&app, "GET", &format!("{VOICE}?{bad}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }
        let (_, body) = call(&app, "GET", &format!("{VOICE}?sort=id"), Some(&key), None).await;
        assert_eq!(body["errors"][0]["code"], "10032");

        // /phone_numbers takes the same filters under its own names, and tags.
        let (_, list) =
            call(&app, "GET", &format!("{NUMBERS}?filter[voice.connection_name][contains]=phones"), Some(&key), None)
                .await;
        assert_eq!(numbers(&list), ["+13035550003"]);
        assert!(list["data"][0].get("voice").is_none() && list["data"][0]["record_type"] == "phone_number");
        let (_, list) =
            call(&app, "GET", &format!("{NUMBERS}?filter[voice.usage_payment_method]=channel"), Some(&key), None).await;
        assert_eq!(numbers(&list), ["+13035550001"]);
        let (_, list) = call(&app, "GET", &format!("{NUMBERS}?filter[tag]=none"), Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 0);
    }
}

/// The stored document of number `id`.
async fn stored(store: &Store, id: &Value) -> Value {
    common::stored(store, "phone_number", id.as_str().unwrap()).await
}

#[tokio::test]
async fn deleting_a_connection_detaches_its_numbers() {
    for (app, store) in apps_and_stores().await {
        let (a, key_a) = account(&app, "Alpha").await;
        let (b, key_b) = account(&app, "Bravo").await;
        // One connection of every type, made through the API (whose delete detaches).
        let mut conns = Vec::new();
        for (i, path) in
            ["/v2/credential_connections", "/v2/ip_connections", "/v2/fqdn_connections", "/v2/uac_connections"]
                .iter()
                .enumerate()
        {
            let mut body = json!({"connection_name": format!("conn{i}")});
            if i == 0 {
                body["user_name"] = json!("alphauser1");
                body["password"] = json!("secret-password-1");
            }
            let (st, c) = call(&app, "POST", path, Some(&key_a), Some(body)).await;
            assert_eq!(st, StatusCode::CREATED, "{c}");
            conns.push((path.to_string(), c["data"]["id"].clone()));
        }
        let (st, cb) =
            call(&app, "POST", "/v2/ip_connections", Some(&key_b), Some(json!({"connection_name": "b"}))).await;
        assert_eq!(st, StatusCode::CREATED);
        // Two numbers on each connection of A's, one on none, one of B's.
        let mut numbers_of = Vec::new();
        for (i, (_, cid)) in conns.iter().enumerate() {
            let mut pair = Vec::new();
            for j in 0..2 {
                let n = add(
                    &app,
                    json!({"phone_number": format!("+1303555{i}{j}00"), "account_id": a, "connection_id": cid}),
                )
                .await;
                assert_eq!(n["connection_id"], *cid);
                pair.push(n["id"].clone());
            }
            numbers_of.push(pair);
        }
        let free = add(&app, json!({"phone_number": "+13035559900", "account_id": a})).await["id"].clone();
        let nb = add(&app, json!({"phone_number": "+13035559911", "account_id": b, "connection_id": cb["data"]["id"]}))
            .await["id"]
            .clone();

        for (i, (path, cid)) in conns.iter().enumerate() {
            let (st, _) = call(&app, "DELETE", &format!("{path}/{}", cid.as_str().unwrap()), Some(&key_a), None).await;
            assert_eq!(st, StatusCode::OK, "{path}");
            for (k, pair) in numbers_of.iter().enumerate() {
                for n in pair {
                    let doc = stored(&store, n).await;
                    let expected = if k <= i { Value::Null } else { conns[k].1.clone() };
                    assert_eq!(doc["connection_id"], expected, "{path}: stored, not only shown");
                }
            }
            assert_eq!(stored(&store, &free).await["connection_id"], Value::Null);
            assert_eq!(stored(&store, &nb).await["connection_id"], cb["data"]["id"], "other accounts untouched");
        }
        let n0 = format!("{NUMBERS}/{}", numbers_of[0][0].as_str().unwrap());
        let (_, got) = call(&app, "GET", &n0, Some(&key_a), None).await;
        assert_eq!((&got["data"]["connection_id"], &got["data"]["connection_name"]), (&Value::Null, &Value::Null));
        // A deleted connection cannot be named again.
        let (st, resp) = call(&app, "PATCH", &n0, Some(&key_a), Some(json!({"connection_id": conns[0].1}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));

        // A connection removed behind the API's back: the number shows detached, and its next
        // write stores it so.
        let uri_b = format!("{NUMBERS}/{}", nb.as_str().unwrap());
        assert!(store.delete_resource("ip_connection", cb["data"]["id"].as_str().unwrap()).await.unwrap());
        let (st, up) = call(&app, "PATCH", &uri_b, Some(&key_b), Some(json!({"tags": ["x"]}))).await;
        assert_eq!(
            (st, &up["data"]["connection_id"], &up["data"]["tags"]),
            (StatusCode::OK, &Value::Null, &json!(["x"]))
        );
        assert_eq!(stored(&store, &nb).await["connection_id"], Value::Null);
    }
}

/// Regression (found by schemathesis once a number existed): the contract's
/// `PhoneNumberWithVoiceSettings` types `connection_id` and `customer_reference` as strings,
/// not nullable, so the voice settings of a number without them leave them out rather than
/// show null. `/phone_numbers` (an operator extension) still shows null.
#[tokio::test]
async fn voice_settings_leave_out_an_unset_connection_and_reference() {
    for (app, store) in apps_and_stores().await {
        let (acct, key) = account(&app, "Acme").await;
        let cid = "1000000000000000001";
        connection(&store, "credential_connection", cid, &acct, "office").await;
        let body = json!({"phone_number": "+13035551234", "account_id": acct, "connection_id": cid, "customer_reference": "R1"});
        let n = add(&app, body).await;
        let uri = format!("{NUMBERS}/{}", n["id"].as_str().unwrap());
        let shown = |v: &Value| (v.get("connection_id").cloned(), v.get("customer_reference").cloned());

        let (_, v) = call(&app, "GET", &format!("{uri}/voice"), Some(&key), None).await;
        assert_eq!(shown(&v["data"]), (Some(json!(cid)), Some(json!("R1"))));

        // Its connection gone: left out, the reference still shown.
        store.delete_resource("credential_connection", cid).await.unwrap();
        let (_, v) = call(&app, "GET", &format!("{uri}/voice"), Some(&key), None).await;
        assert_eq!(shown(&v["data"]), (None, Some(json!("R1"))));

        // Both cleared: null on the number, left out of its voice settings everywhere.
        let body = json!({"connection_id": null, "customer_reference": null});
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        assert_eq!(shown(&up["data"]), (Some(Value::Null), Some(Value::Null)));
        let (_, v) = call(&app, "GET", &format!("{uri}/voice"), Some(&key), None).await;
        assert_eq!(shown(&v["data"]), (None, None), "{v}");
        let (_, list) = call(&app, "GET", VOICE, Some(&key), None).await;
        assert_eq!(shown(&list["data"][0]), (None, None), "{list}");
        let (st, v) =
            call(&app, "PATCH", &format!("{uri}/voice"), Some(&key), Some(json!({"tech_prefix_enabled": true}))).await;
        assert_eq!((st, shown(&v["data"])), (StatusCode::OK, (None, None)), "{v}");
    }
}
