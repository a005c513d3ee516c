//! Registration status from the registrar's stored bindings, on both backends: a credential
//! connection is `Not Registered`, then `Registered` with its device's address once a binding
//! is stored, `Expired` when only a binding past its expiry remains, and back to `Not
//! Registered` after the sweep; `GET /v2/sip_registration_status` reports the same per the
//! contract's `SipRegistrationStatus`, checks its query (400), and keeps accounts apart (404).

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use store::Registration;

const CC: &str = "/v2/credential_connections";

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn binding(connection: &str, account: &str, updated_at: i64, expires_at: i64, port: u16) -> Registration {
    let contact = format!("sip:office1@198.51.100.7:{port};transport=tcp");
    Registration {
        connection_id: connection.into(),
        binding_key: Registration::key_of(&contact, None, None),
        account_id: account.into(),
        username: "office1".into(),
        contact,
        instance: None,
        reg_id: None,
        q: None,
        path: Vec::new(),
        call_id: format!("reg-{port}@198.51.100.7"),
        cseq: 3,
        source_ip: "203.0.113.9".into(),
        source_port: port,
        transport: "TCP".into(),
        nat: true,
        user_agent: Some("Z 5.4.12 v2.10.13.2-mod".into()),
        node: Some("node-a".into()),
        registered_at: updated_at - 60_000,
        updated_at,
        expires_at,
    }
}

#[tokio::test]
async fn check_registration_status_follows_the_bindings() {
    for (app, store) in apps_and_stores().await {
        let (account_id, key) = account(&app, "Acme").await;
        let c = post(
            &app,
            CC,
            &key,
            json!({"connection_name": "office", "user_name": "office1", "password": "secret-pass-1"}),
        )
        .await;
        let id = c["id"].as_str().unwrap().to_owned();
        let uri = format!("{CC}/{id}/actions/check_registration_status");
        let (st, body) = call(&app, "POST", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            json!({"data": {"record_type": "registration_status", "sip_username": "office1", "status": "Not Registered"}})
        );

        // Two live bindings: the most recently refreshed speaks.
        let now = now_ms();
        store
            .upsert_registrations(&[
                binding(&id, &account_id, 1_767_312_000_000, now + 600_000, 40_001),
                binding(&id, &account_id, 1_767_312_005_250, now + 600_000, 40_002),
            ])
            .await
            .unwrap();
        let (st, body) = call(&app, "POST", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            json!({"data": {
                "record_type": "registration_status",
                "sip_username": "office1",
                "status": "Registered",
                "ip_address": "203.0.113.9",
                "port": 40002,
                "transport": "TCP",
                "user_agent": "Z 5.4.12 v2.10.13.2-mod",
                "last_registration": "2026-01-02T00:00:05.250Z",
            }})
        );

        // Only an expired one left: Expired; after the sweep: Not Registered.
        store.remove_registrations(&id, &["sip:office1@198.51.100.7:40002;transport=tcp"], None).await.unwrap();
        store.upsert_registrations(&[binding(&id, &account_id, 1_767_312_000_000, now - 1, 40_001)]).await.unwrap();
        let (_, body) = call(&app, "POST", &uri, Some(&key), None).await;
        assert_eq!((body["data"]["status"].as_str(), body["data"]["port"].as_u64()), (Some("Expired"), Some(40001)));
        store.expire_registrations(now).await.unwrap();
        let (_, body) = call(&app, "POST", &uri, Some(&key), None).await;
        assert_eq!(body["data"]["status"], "Not Registered");

        // Another account sees nothing.
        let (_, other) = account(&app, "Other").await;
        let (st, body) = call(&app, "POST", &uri, Some(&other), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(body["errors"][0]["code"], "10005");
    }
}

#[tokio::test]
async fn sip_registration_status_per_the_contract() {
    for (app, store) in apps_and_stores().await {
        let (account_id, key) = account(&app, "Acme").await;
        let c = post(
            &app,
            CC,
            &key,
            json!({"connection_name": "office", "user_name": "office1", "password": "secret-pass-1"}),
        )
        .await;
        let id = c["id"].as_str().unwrap().to_owned();
        let uri = "/v2/sip_registration_status?credential_type=telephony_credential&username=office1";
        let (st, body) = call(&app, "GET", uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            json!({
                "connection_id": id,
                "connection_name": "office",
                "credential_type": "telephony_credential",
                "credential_username": "office1",
                "registered": false,
            })
        );

        let now = now_ms();
        let b = binding(&id, &account_id, now - 1_000, now + 3_599_000, 40_001);
        store.upsert_registrations(std::slice::from_ref(&b)).await.unwrap();
        let (st, body) = call(&app, "GET", uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body["registered"], true);
        assert_eq!(body["sip_registration_status"], "registered");
        assert_eq!(body["last_registration_response"], "200 OK");
        let d = &body["sip_registration_details"];
        assert_eq!(d["expires"], b.expires_at / 1000);
        assert_eq!(d["sip_uri_user_host"], "office1@198.51.100.7:40001");
        assert_eq!(
            (d["transport"].as_str(), d["ua_ip"].as_str(), d["ua_port"].as_u64()),
            (Some("TCP"), Some("203.0.113.9"), Some(40001))
        );
        assert_eq!(d["node"], "node-a");
        assert!((60..=62).contains(&d["uptime"].as_i64().unwrap()), "{d}");
        // The operator sees it too; another account does not.
        let (st, _) = call(&app, "GET", uri, Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
        let (_, other) = account(&app, "Other").await;
        let (st, _) = call(&app, "GET", uri, Some(&other), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = call(&app, "GET", uri, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);

        // A UAC connection by its id: nothing registers it yet.
        let u = post(&app, "/v2/uac_connections", &key, json!({"connection_name": "pbx"})).await;
        let uac = u["id"].as_str().unwrap();
        let (st, body) = call(
            &app,
            "GET",
            &format!("/v2/sip_registration_status?credential_type=uac_external_credential&connection_id={uac}"),
            Some(&key),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            json!({"connection_id": uac, "connection_name": "pbx", "credential_type": "uac_external_credential", "registered": false})
        );

        // Query faults: 400 with the contract's error body; unknown names: 404.
        for bad in [
            "/v2/sip_registration_status",
            "/v2/sip_registration_status?credential_type=password",
            "/v2/sip_registration_status?credential_type=telephony_credential",
            "/v2/sip_registration_status?credential_type=uac_external_credential&username=office1",
        ] {
            let (st, body) = call(&app, "GET", bad, Some(&key), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(body["errors"][0]["code"], "10015", "{bad}");
        }
        let (st, _) = call(
            &app,
            "GET",
            "/v2/sip_registration_status?credential_type=telephony_credential&username=nobody1",
            Some(&key),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
}
