//! `/v2/connections` through the router, on both store backends: every kind of connection of
//! the account in the contract's `Connection` shape, filters, sort and pages, show by id with
//! 404 for another account's, and the (empty) active calls of a connection.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{OPERATOR, account, apps, call, ids, post, tick};

const CONN: &str = "/v2/connections";

/// One connection of each kind, oldest first: (kind, its own endpoint, the created document).
async fn one_of_each(app: &axum::Router, key: &str, prefix: &str, user: &str) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (kind, body) in [
        (
            "credential_connection",
            json!({"connection_name": format!("{prefix} credential"), "user_name": user, "password": "a-long-secret"}),
        ),
        ("ip_connection", json!({"connection_name": format!("{prefix} ip")})),
        ("fqdn_connection", json!({"connection_name": format!("{prefix} fqdn")})),
        ("uac_connection", json!({"connection_name": format!("{prefix} uac")})),
    ] {
        let uri = format!("/v2/{kind}s");
        let c = post(app, &uri, key, body).await;
        assert_eq!(c["record_type"], kind);
        out.push((kind.to_owned(), uri, c));
        tick().await;
    }
    out
}

/// The contract's `Connection` fields, plus `outbound_voice_profile_id` when one is set.
const SHAPE: &[&str] = &[
    "active",
    "anchorsite_override",
    "connection_name",
    "created_at",
    "id",
    "record_type",
    "tags",
    "updated_at",
    "webhook_api_version",
    "webhook_event_failover_url",
    "webhook_event_url",
];

/// What `/v2/connections` should show for a connection as its own endpoint shows it.
fn expected(full: &Value) -> Value {
    let mut out = json!({});
    for f in SHAPE {
        match full.get(*f) {
            Some(v) => out[*f] = v.clone(),
            // Unset, the failover URL is left out everywhere (its contract type is a URI).
            None if *f == "webhook_event_failover_url" => {}
            None => out[*f] = Value::Null,
        }
    }
    if let Some(p) = full["outbound"]["outbound_voice_profile_id"].as_str() {
        out["outbound_voice_profile_id"] = json!(p);
    }
    if let Some(a) = full.get("account_id") {
        out["account_id"] = a.clone();
    }
    out
}

#[tokio::test]
async fn every_kind_of_the_account_in_the_contract_shape() {
    for app in apps().await {
        let (st, body) = call(&app, "GET", CONN, None, None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (id_b, key_b) = account(&app, "Bravo").await;
        let mine = one_of_each(&app, &key_a, "alpha", "alphauser1").await;
        let theirs = one_of_each(&app, &key_b, "bravo", "bravouser1").await;

        // Newest first by default; each one exactly the shape, with the values its own
        // endpoint shows.
        let (st, list) = call(&app, "GET", CONN, Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        let expected_list: Vec<Value> = mine.iter().rev().map(|(_, _, c)| expected(c)).collect();
        assert_eq!(list["data"], json!(expected_list));
        assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 4}));
        let kinds: BTreeSet<&str> =
            list["data"].as_array().unwrap().iter().map(|c| c["record_type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["credential_connection", "fqdn_connection", "ip_connection", "uac_connection"])
        );
        for c in list["data"].as_array().unwrap() {
            let keys: BTreeSet<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
            let shape: BTreeSet<&str> = SHAPE.iter().copied().filter(|f| *f != "webhook_event_failover_url").collect();
            assert_eq!(keys, shape, "{c}");
            assert_eq!(c["webhook_event_url"], Value::Null, "unset: the contract's default null");
        }

        // Show: every kind by id; another account's is 404 like a missing one.
        for (_, uri, c) in &mine {
            let id = c["id"].as_str().unwrap();
            let (st, got) = call(&app, "GET", &format!("{CONN}/{id}"), Some(&key_a), None).await;
            assert_eq!((st, &got["data"]), (StatusCode::OK, &expected(c)));
            let (_, own) = call(&app, "GET", &format!("{uri}/{id}"), Some(&key_a), None).await;
            assert_eq!(got["data"], expected(&own["data"]), "the same values as its own endpoint");
            let (st, resp) = call(&app, "GET", &format!("{CONN}/{id}"), Some(&key_b), None).await;
            assert_eq!((st, resp["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")));
        }
        let (st, _) = call(&app, "GET", &format!("{CONN}/1234567890123456789"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // Other resources are not connections.
        let (_, p) =
            call(&app, "POST", "/v2/outbound_voice_profiles", Some(&key_a), Some(json!({"name": "ovp"}))).await;
        let (st, _) =
            call(&app, "GET", &format!("{CONN}/{}", p["data"]["id"].as_str().unwrap()), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // The operator sees every account's, with the owner.
        let (_, all) = call(&app, "GET", CONN, Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 8);
        let owner = |c: &Value| c["account_id"].as_str().unwrap().to_owned();
        let owners: BTreeSet<String> = all["data"].as_array().unwrap().iter().map(owner).collect();
        assert_eq!(owners, BTreeSet::from([id_a.clone(), id_b.clone()]));
        let (_, only_b) = call(&app, "GET", &format!("{CONN}?filter[account_id]={id_b}"), Some(OPERATOR), None).await;
        let expected_b: Vec<&str> = theirs.iter().rev().map(|(_, _, c)| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids(&only_b), expected_b);
        let id = mine[0].2["id"].as_str().unwrap();
        let (_, got) = call(&app, "GET", &format!("{CONN}/{id}"), Some(OPERATOR), None).await;
        assert_eq!(got["data"]["account_id"], json!(id_a));

        // Deleted through its own endpoint: gone here too.
        let (uri, id) = (&mine[3].1, mine[3].2["id"].as_str().unwrap());
        let (st, _) = call(&app, "DELETE", &format!("{uri}/{id}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = call(&app, "GET", &format!("{CONN}/{id}"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, list) = call(&app, "GET", CONN, Some(&key_a), None).await;
        assert_eq!(list["meta"]["total_results"], 3);
    }
}

#[tokio::test]
async fn filters_sort_and_pages() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let (_, p) = call(&app, "POST", "/v2/outbound_voice_profiles", Some(&key), Some(json!({"name": "ovp"}))).await;
        let ovp = p["data"]["id"].as_str().unwrap().to_owned();
        let c = post(
            &app,
            "/v2/credential_connections",
            &key,
            json!({"connection_name": "Zulu office", "user_name": "zuluuser1", "password": "a-long-secret",
                   "outbound": {"outbound_voice_profile_id": ovp}}),
        )
        .await;
        tick().await;
        let i =
            post(&app, "/v2/ip_connections", &key, json!({"connection_name": "alpha trunk", "active": false})).await;
        tick().await;
        let f = post(&app, "/v2/fqdn_connections", &key, json!({"connection_name": "Mike office"})).await;
        tick().await;
        let u = post(
            &app,
            "/v2/uac_connections",
            &key,
            json!({"connection_name": "bravo pbx", "outbound": {"outbound_voice_profile_id": ovp}}),
        )
        .await;
        let other = post(&app, "/v2/fqdn_connections", &key_b, json!({"connection_name": "other office"})).await;
        post(
            &app,
            "/v2/fqdns",
            &key,
            json!({"connection_id": f["id"], "fqdn": "pbx.example.com", "dns_record_type": "a"}),
        )
        .await;
        post(
            &app,
            "/v2/fqdns",
            &key_b,
            json!({"connection_id": other["id"], "fqdn": "pbx.example.com", "dns_record_type": "a"}),
        )
        .await;
        let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
        let (c, i, f, u) = (id(&c), id(&i), id(&f), id(&u));

        // The profile is shown at the top level, as the contract's Connection has it.
        let (_, got) = call(&app, "GET", &format!("{CONN}/{u}"), Some(&key), None).await;
        assert_eq!(got["data"]["outbound_voice_profile_id"], json!(ovp));

        for (query, expected) in [
            ("", vec![&u, &f, &i, &c]),
            ("sort=created_at", vec![&c, &i, &f, &u]),
            ("sort=-created_at", vec![&u, &f, &i, &c]),
            ("sort=connection_name", vec![&i, &u, &f, &c]),
            ("sort=-connection_name", vec![&c, &f, &u, &i]),
            ("sort=active", vec![&i, &c, &f, &u]),
            ("filter[connection_name][contains]=OFFICE", vec![&f, &c]),
            ("filter[connection_name][contains]=office&sort=connection_name", vec![&f, &c]),
            ("filter[fqdn]=pbx.example.com", vec![&f]),
            ("filter[fqdn]=other.example.com", vec![]),
            (&format!("filter[outbound_voice_profile_id]={ovp}") as &str, vec![&u, &c]),
            (&format!("filter[outbound.outbound_voice_profile_id]={ovp}&sort=created_at"), vec![&c, &u]),
            ("page[size]=3", vec![&u, &f, &i]),
            ("page[size]=3&page[number]=2", vec![&c]),
            ("page[size]=3&page[number]=3", vec![]),
        ] {
            let (st, list) = call(&app, "GET", &format!("{CONN}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::OK, "{query}: {list}");
            let expected: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
            assert_eq!(ids(&list), expected, "{query}");
        }
        let (_, page) = call(&app, "GET", &format!("{CONN}?page[size]=3&page[number]=2"), Some(&key), None).await;
        assert_eq!(page["meta"], json!({"page_number": 2, "page_size": 3, "total_pages": 2, "total_results": 4}));
        let (_, all) = call(&app, "GET", &format!("{CONN}?filter[fqdn]=pbx.example.com"), Some(OPERATOR), None).await;
        assert_eq!(all["meta"]["total_results"], 2);

        for query in [
            "sort=name",
            "sort=-fqdn",
            "page[size]=0",
            "page[size]=251",
            "page[number]=0",
            "filter[connection_name][contains]=of",
            "filter[fqdn]=pbx.example.com&sort=name",
        ] {
            let (st, resp) = call(&app, "GET", &format!("{CONN}?{query}"), Some(&key), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{query}");
            let code = if query.contains("sort") { "10032" } else { "10015" };
            assert_eq!(resp["errors"][0]["code"], code, "{query}");
        }
    }
}

#[tokio::test]
async fn active_calls_are_an_empty_list() {
    for app in apps().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let mine = one_of_each(&app, &key_a, "alpha", "alphauser2").await;
        for (_, _, c) in &mine {
            let uri = format!("{CONN}/{}/active_calls", c["id"].as_str().unwrap());
            let (st, calls) = call(&app, "GET", &uri, Some(&key_a), None).await;
            assert_eq!(st, StatusCode::OK, "{calls}");
            assert_eq!(
                calls,
                json!({"data": [], "meta": {"cursors": {}, "total_items": 0, "page_number": 1, "page_size": 20, "total_pages": 0}})
            );
            let (st, resp) = call(&app, "GET", &uri, Some(&key_b), None).await;
            assert_eq!((st, resp["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")));
        }
        let uri = format!("{CONN}/{}/active_calls", mine[0].2["id"].as_str().unwrap());
        let (st, calls) = call(&app, "GET", &format!("{uri}?page[number]=2&page[size]=50"), Some(&key_a), None).await;
        assert_eq!(
            (st, &calls["meta"]["page_number"], &calls["meta"]["page_size"]),
            (StatusCode::OK, &json!(2), &json!(50))
        );
        let (st, _) = call(&app, "GET", &uri, Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
        for query in
            ["page[size]=0", "page[size]=251", "page[number]=0", "page[limit]=0", "page[limit]=251", "page[limit]=x"]
        {
            let (st, _) = call(&app, "GET", &format!("{uri}?{query}"), Some(&key_a), None).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        }
        let (st, _) = call(&app, "GET", &format!("{CONN}/1234567890123456789/active_calls"), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = call(&app, "GET", &uri, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
}
