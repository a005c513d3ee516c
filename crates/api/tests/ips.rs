//! `/v2/ips` through the router, on both store backends: an IP connection with two IPs,
//! the list with the contract's filters and pages, validation with pointers, tenancy (an
//! account attaches IPs to its own connections only, and others' IPs are 404), tech prefixes
//! unique per source address (claimed atomically), PATCH and delete.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use store::{Repository, Store};
use tower::ServiceExt;

mod common;

use common::{OPERATOR, account, apps_and_stores, call, ids, pointers, post};

const IC: &str = "/v2/ip_connections";
const IPS: &str = "/v2/ips";

/// A new IP connection; its id.
async fn connection(app: &axum::Router, key: &str, name: &str) -> String {
    post(app, IC, key, json!({"connection_name": name})).await["id"].as_str().unwrap().to_owned()
}

async fn post_ip(app: &axum::Router, key: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", IPS, Some(key), Some(body)).await
}

async fn add_ip(app: &axum::Router, key: &str, connection_id: &str, address: &str) -> Value {
    let (st, v) = post_ip(app, key, json!({"connection_id": connection_id, "ip_address": address})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["data"].clone()
}

async fn list(app: &axum::Router, key: &str, query: &str) -> Value {
    let (st, v) = call(app, "GET", &format!("{IPS}{query}"), Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{query}: {v}");
    v
}

/// Gives connection `id` the tech prefix `prefix`, directly in the store: the platform assigns
/// distinct ones, so only this makes two connections share one.
async fn force_tech_prefix(store: &Store, id: &str, prefix: &str) {
    let mut r = store.get_resource("ip_connection", id).await.unwrap().unwrap();
    let mut doc: Value = serde_json::from_str(&r.body).unwrap();
    doc["outbound"]["tech_prefix"] = json!(prefix);
    r.body = doc.to_string();
    assert!(store.update_resource(&r, &[]).await.unwrap());
}

#[tokio::test]
async fn a_connection_with_two_ips_listed_by_the_contracts_filters() {
    for (app, _) in apps_and_stores().await {
        let (account_id, key) = account(&app, "Acme").await;
        let c = connection(&app, &key, "office").await;
        let other = connection(&app, &key, "lab").await;

        let a = add_ip(&app, &key, &c, "192.0.2.10").await;
        let id = a["id"].as_str().unwrap();
        assert!(id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(a["created_at"].as_str().unwrap().ends_with('Z') && a["updated_at"] == a["created_at"]);
        let mut expected = json!({"record_type": "ip", "connection_id": c, "ip_address": "192.0.2.10", "port": 5060});
        for k in ["id", "created_at", "updated_at"] {
            expected[k] = a[k].clone();
        }
        assert_eq!(a, expected, "the contract's Ip, port 5060 by default");
        let (st, b) =
            post_ip(&app, &key, json!({"connection_id": c, "ip_address": "2001:DB8:0::20", "port": 5080})).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        let b = b["data"].clone();
        assert_eq!((b["ip_address"].as_str(), b["port"].as_i64()), (Some("2001:db8::20"), Some(5080)), "canonical");
        let l = add_ip(&app, &key, &other, "192.0.2.10").await;

        let (st, got) = call(&app, "GET", &format!("{IPS}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &a));
        let (a_id, b_id, l_id) = (id, b["id"].as_str().unwrap(), l["id"].as_str().unwrap());

        let all = list(&app, &key, "").await;
        assert_eq!(all["meta"], json!({"page_number": 1, "page_size": 250, "total_pages": 1, "total_results": 3}));
        assert_eq!(ids(&all), [a_id, b_id, l_id], "oldest first");
        assert_eq!(all["data"][0], a);
        assert_eq!(ids(&list(&app, &key, &format!("?filter[connection_id]={c}")).await), [a_id, b_id]);
        assert_eq!(ids(&list(&app, &key, &format!("?filter%5Bconnection_id%5D={other}")).await), [l_id]);
        assert_eq!(ids(&list(&app, &key, "?filter[ip_address]=192.0.2.10").await), [a_id, l_id]);
        assert_eq!(ids(&list(&app, &key, "?filter[ip_address]=2001:db8:0:0::20").await), [b_id]);
        assert_eq!(
            ids(&list(&app, &key, &format!("?filter[ip_address]=192.0.2.10&filter[connection_id]={c}")).await),
            [a_id]
        );
        assert_eq!(ids(&list(&app, &key, "?filter[port]=5080").await), [b_id]);
        assert_eq!(list(&app, &key, "?filter[ip_address]=example.com").await["data"], json!([]));
        assert_eq!(list(&app, &key, "?filter[connection_id]=1234567890123456789").await["data"], json!([]));

        let p2 = list(&app, &key, "?page[size]=2&page[number]=2").await;
        assert_eq!(p2["meta"], json!({"page_number": 2, "page_size": 2, "total_pages": 2, "total_results": 3}));
        assert_eq!(ids(&p2), [l_id]);
        for bad in ["page[size]=251", "page[size]=0", "page[number]=0", "filter[port]=sip"] {
            let (st, body) = call(&app, "GET", &format!("{IPS}?{bad}"), Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")), "{bad}");
        }

        // The operator sees the owner and may narrow by it.
        let ops = list(&app, OPERATOR, &format!("?filter[account_id]={account_id}")).await;
        assert_eq!(ops["meta"]["total_results"], 3);
        assert!(ops["data"].as_array().unwrap().iter().all(|ip| ip["account_id"] == json!(account_id)));
        let (st, _) = call(&app, "GET", IPS, None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn validation_with_pointers_stores_nothing() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let c = connection(&app, &key, "office").await;
        let (st, resp) = post_ip(&app, &key, json!({"ip_address": "192.0.2.300", "port": 0, "connection_id": 7})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(pointers(&resp), ["/ip_address", "/port", "/connection_id"]);
        let (_, resp) = post_ip(&app, &key, json!({})).await;
        assert_eq!(pointers(&resp), ["/ip_address", "/connection_id"]);
        for (field, value) in [
            ("ip_address", json!("192.0.2.0/24")),
            ("ip_address", json!("0.0.0.0")),
            ("ip_address", json!("ff02::1")),
            ("ip_address", json!("sip.example.com")),
            ("ip_address", json!("192.0.2.1:5060")),
            ("ip_address", json!(3221225985_i64)),
            ("port", json!(65536)),
            ("port", json!("5060")),
            ("connection_id", json!("1234567890123456789")),
            ("connection_id", json!(null)),
        ] {
            let mut body = json!({"connection_id": c, "ip_address": "192.0.2.1"});
            body[field] = value;
            let (st, resp) = post_ip(&app, &key, body.clone()).await;
            assert_eq!(
                (st, pointers(&resp)),
                (StatusCode::UNPROCESSABLE_ENTITY, vec![format!("/{field}").as_str()]),
                "{body}"
            );
        }
        // Another connection type is not an IP connection.
        let body = json!({"connection_name": "cred", "user_name": "creduser1", "password": "secret-password"});
        let (_, cred) = call(&app, "POST", "/v2/credential_connections", Some(&key), Some(body)).await;
        let (_, resp) =
            post_ip(&app, &key, json!({"connection_id": cred["data"]["id"], "ip_address": "192.0.2.1"})).await;
        assert_eq!(pointers(&resp), ["/connection_id"]);
        let req = Request::builder()
            .method("POST")
            .uri(IPS)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from("{not json"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::BAD_REQUEST);
        assert_eq!(list(&app, &key, "").await["meta"]["total_results"], 0, "nothing stored");

        // Edge values.
        let (st, ip) =
            post_ip(&app, &key, json!({"connection_id": c, "ip_address": "::ffff:192.0.2.7", "port": 65535})).await;
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!((ip["data"]["ip_address"].as_str(), ip["data"]["port"].as_i64()), (Some("192.0.2.7"), Some(65535)));
        let (st, ip) = post_ip(&app, &key, json!({"connection_id": c, "ip_address": "10.0.0.1", "port": null})).await;
        assert_eq!((st, ip["data"]["port"].as_i64()), (StatusCode::CREATED, Some(5060)));
    }
}

#[tokio::test]
async fn tenancy_an_account_attaches_ips_to_its_own_connections_only() {
    for (app, _) in apps_and_stores().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (id_b, key_b) = account(&app, "Bravo").await;
        let ca = connection(&app, &key_a, "alpha").await;
        let cb = connection(&app, &key_b, "bravo").await;

        // B cannot attach an IP to A's connection: refused exactly like a missing one.
        let (st, foreign) = post_ip(&app, &key_b, json!({"connection_id": ca, "ip_address": "192.0.2.1"})).await;
        let (_, missing) =
            post_ip(&app, &key_b, json!({"connection_id": "1234567890123456789", "ip_address": "192.0.2.1"})).await;
        assert_eq!((st, pointers(&foreign)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
        assert_eq!(foreign, missing);
        let (st, resp) =
            post_ip(&app, &key_a, json!({"connection_id": ca, "ip_address": "192.0.2.1", "account_id": id_b})).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));

        let a = add_ip(&app, &key_a, &ca, "192.0.2.1").await;
        let b = add_ip(&app, &key_b, &cb, "192.0.2.1").await;
        let uri_a = format!("{IPS}/{}", a["id"].as_str().unwrap());

        // B sees only its own; A's IP is 404 to B, exactly like a missing one.
        assert_eq!(ids(&list(&app, &key_b, "").await), [b["id"].as_str().unwrap()]);
        assert_eq!(list(&app, &key_b, &format!("?filter[connection_id]={ca}")).await["data"], json!([]));
        assert_eq!(list(&app, &key_b, &format!("?filter[account_id]={id_a}")).await["meta"]["total_results"], 0);
        let (_, nf) = call(&app, "GET", &format!("{IPS}/1234567890123456789"), Some(&key_b), None).await;
        assert_eq!(nf["errors"][0]["code"], "10005");
        for (method, body) in [("GET", None), ("PATCH", Some(json!({"ip_address": "192.0.2.99"}))), ("DELETE", None)] {
            let (st, resp) = call(&app, method, &uri_a, Some(&key_b), body).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &nf), "{method}");
        }
        let (_, still) = call(&app, "GET", &uri_a, Some(&key_a), None).await;
        assert_eq!(still["data"], a);

        // A cannot move its IP to B's connection, nor change the owner.
        let (st, resp) =
            call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"ip_address": "192.0.2.1", "connection_id": cb})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));
        let (st, resp) =
            call(&app, "PATCH", &uri_a, Some(&key_a), Some(json!({"ip_address": "192.0.2.1", "account_id": id_b})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        // Nor can the operator move it across accounts.
        let (st, resp) =
            call(&app, "PATCH", &uri_a, Some(OPERATOR), Some(json!({"ip_address": "192.0.2.1", "connection_id": cb})))
                .await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/connection_id"]));

        // The operator sees all, and creates IPs in the connection's account.
        assert_eq!(list(&app, OPERATOR, "").await["meta"]["total_results"], 2);
        let (st, ip) = post_ip(&app, OPERATOR, json!({"connection_id": cb, "ip_address": "192.0.2.2"})).await;
        assert_eq!((st, ip["data"]["account_id"].as_str()), (StatusCode::CREATED, Some(id_b.as_str())));
        let (st, resp) =
            post_ip(&app, OPERATOR, json!({"connection_id": cb, "ip_address": "192.0.2.3", "account_id": id_a})).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let (_, got) =
            call(&app, "GET", &format!("{IPS}/{}", ip["data"]["id"].as_str().unwrap()), Some(&key_b), None).await;
        assert!(got["data"].get("account_id").is_none(), "the owner is shown to the operator only");
    }
}

#[tokio::test]
async fn tech_prefixes_are_unique_per_source_address() {
    for (app, store) in apps_and_stores().await {
        let (_, key_a) = account(&app, "Alpha").await;
        let (_, key_b) = account(&app, "Bravo").await;
        let c1 = connection(&app, &key_a, "one").await;
        let c2 = connection(&app, &key_a, "two").await;
        let c3 = connection(&app, &key_b, "three").await;

        // Distinct prefixes: one address serves all three, across accounts.
        add_ip(&app, &key_a, &c1, "192.0.2.10").await;
        add_ip(&app, &key_a, &c2, "192.0.2.10").await;
        let on_c3 = add_ip(&app, &key_b, &c3, "192.0.2.11").await;

        // Once c3 has c1's prefix, c3 may not share c1's address, in either account.
        let (_, one) = call(&app, "GET", &format!("{IC}/{c1}"), Some(&key_a), None).await;
        let p1 = one["data"]["outbound"]["tech_prefix"].as_str().unwrap().to_owned();
        force_tech_prefix(&store, &c3, &p1).await;
        let (st, resp) = post_ip(&app, &key_b, json!({"connection_id": c3, "ip_address": "192.0.2.10"})).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/ip_address"]));
        assert_eq!(resp["errors"][0]["code"], "10007");
        assert!(resp["errors"][0]["detail"].as_str().unwrap().contains(&p1), "{resp}");
        // Written differently, the same address.
        let (st, _) = post_ip(&app, &key_b, json!({"connection_id": c3, "ip_address": "::ffff:192.0.2.10"})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        // Nor by moving an IP there.
        let uri3 = format!("{IPS}/{}", on_c3["id"].as_str().unwrap());
        let (st, resp) = call(&app, "PATCH", &uri3, Some(&key_b), Some(json!({"ip_address": "192.0.2.10"}))).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/ip_address"]));
        let (_, got) = call(&app, "GET", &uri3, Some(&key_b), None).await;
        assert_eq!(got["data"], on_c3, "unchanged");
        assert_eq!(list(&app, &key_b, "").await["meta"]["total_results"], 1, "nothing stored");

        // An address once per connection.
        let (st, resp) =
            post_ip(&app, &key_a, json!({"connection_id": c1, "ip_address": "192.0.2.10", "port": 5080})).await;
        assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/ip_address"]));
        assert!(resp["errors"][0]["detail"].as_str().unwrap().contains("already on this connection"), "{resp}");

        // Once c1 leaves the address, c3 may have it.
        let c1_ips = list(&app, &key_a, &format!("?filter[connection_id]={c1}")).await;
        let (st, _) = call(&app, "DELETE", &format!("{IPS}/{}", ids(&c1_ips)[0]), Some(&key_a), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, up) = call(&app, "PATCH", &uri3, Some(&key_b), Some(json!({"ip_address": "192.0.2.10"}))).await;
        assert_eq!((st, up["data"]["ip_address"].as_str()), (StatusCode::OK, Some("192.0.2.10")));
        // And now c1 may not come back.
        let (st, _) = post_ip(&app, &key_a, json!({"connection_id": c1, "ip_address": "192.0.2.10"})).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn patch_needs_the_address_and_changes_what_it_names() {
    for (app, _) in apps_and_stores().await {
        let (_, key) = account(&app, "Acme").await;
        let c = connection(&app, &key, "office").await;
        let other = connection(&app, &key, "lab").await;
        let ip = add_ip(&app, &key, &c, "192.0.2.1").await;
        let uri = format!("{IPS}/{}", ip["id"].as_str().unwrap());

        for (bad, expected) in [
            (json!({"port": 5080}), vec!["/ip_address"]),
            (json!({"ip_address": "nope", "port": -1}), vec!["/ip_address", "/port"]),
            (json!({"ip_address": "192.0.2.1", "connection_id": null}), vec!["/connection_id"]),
        ] {
            let (st, resp) = call(&app, "PATCH", &uri, Some(&key), Some(bad.clone())).await;
            assert_eq!((st, pointers(&resp)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{bad}");
        }
        let (_, got) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!(got["data"], ip);

        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (st, up) =
            call(&app, "PATCH", &uri, Some(&key), Some(json!({"ip_address": "192.0.2.2", "port": 5080}))).await;
        assert_eq!(st, StatusCode::OK, "{up}");
        let up = up["data"].clone();
        assert_eq!((up["ip_address"].as_str(), up["port"].as_i64()), (Some("192.0.2.2"), Some(5080)));
        assert_eq!(
            (&up["id"], &up["created_at"], &up["connection_id"]),
            (&ip["id"], &ip["created_at"], &ip["connection_id"])
        );
        assert!(up["updated_at"].as_str() > ip["updated_at"].as_str());
        let (st, up) = call(&app, "PATCH", &uri, Some(&key), Some(json!({"ip_address": "192.0.2.2"}))).await;
        assert_eq!((st, up["data"]["port"].as_i64()), (StatusCode::OK, Some(5080)), "an absent port stays");
        let (st, up) = call(
            &app,
            "PATCH",
            &uri,
            Some(&key),
            Some(json!({"ip_address": "192.0.2.2", "port": null, "connection_id": other})),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            (up["data"]["port"].as_i64(), up["data"]["connection_id"].as_str()),
            (Some(5060), Some(other.as_str()))
        );
        assert_eq!(
            ids(&list(&app, &key, &format!("?filter[connection_id]={other}")).await),
            [ip["id"].as_str().unwrap()]
        );
        // The old address is free on the old connection.
        add_ip(&app, &key, &c, "192.0.2.2").await;

        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &up["data"]));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        // Its address is free on that connection again.
        add_ip(&app, &key, &other, "192.0.2.2").await;
    }
}
