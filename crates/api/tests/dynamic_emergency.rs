//! `/v2/dynamic_emergency_addresses` and `/v2/dynamic_emergency_endpoints` through the router,
//! on both store backends: create, list, get and delete with every field echoed, structural
//! validation with pointers (nothing stored), the endpoint's address in the same account,
//! delete-in-use refused, filters, pagination and tenancy.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{OPERATOR, account, apps, call, ids, pointers, post};

const ADDRS: &str = "/v2/dynamic_emergency_addresses";
const EPS: &str = "/v2/dynamic_emergency_endpoints";

async fn raw(app: &axum::Router, uri: &str, key: &str, body: &'static str) -> (StatusCode, Value) {
    common::send(app, "POST", uri, Some(key), Some("application/json"), body).await
}

/// The product docs' example address.
fn chicago() -> Value {
    json!({
        "house_number": "1901",
        "street_pre_directional": "W",
        "street_name": "MADISON",
        "street_suffix": "ST",
        "locality": "CHICAGO",
        "administrative_area": "IL",
        "postal_code": "60612",
        "country_code": "US"
    })
}

fn toronto() -> Value {
    json!({
        "house_number": "100",
        "street_name": "Queen",
        "street_suffix": "St",
        "street_post_directional": "W",
        "locality": "Toronto",
        "administrative_area": "ON",
        "postal_code": "M5H 2N2",
        "country_code": "CA"
    })
}

fn san_juan() -> Value {
    json!({
        "house_number": "151",
        "street_name": "Fortaleza",
        "locality": "San Juan",
        "administrative_area": "PR",
        "postal_code": "00901",
        "country_code": "PR"
    })
}

async fn endpoint(app: &axum::Router, key: &str, address: &Value, name: &str) -> Value {
    let body = json!({
        "dynamic_emergency_address_id": address["id"],
        "callback_number": "+13125550000",
        "caller_name": name
    });
    post(app, EPS, key, body).await
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_token(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[tokio::test]
async fn addresses_create_get_list_delete_with_everything_echoed() {
    for app in apps().await {
        let (st, body) = call(&app, "GET", ADDRS, None, None).await;
        assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("10009")));
        let (_, key) = account(&app, "Acme").await;

        // The docs' example: 201, validated and so activated at once, optional fields absent.
        let a = post(&app, ADDRS, &key, chicago()).await;
        let id = a["id"].as_str().unwrap();
        assert!(is_uuid(id), "{id}");
        assert!(is_token(a["sip_geolocation_id"].as_str().unwrap()), "{a}");
        let created = a["created_at"].as_str().unwrap();
        assert_eq!(created.len(), "2018-02-02T22:25:27.521Z".len());
        assert!(created.ends_with('Z') && a["updated_at"] == a["created_at"]);
        let mut expected = chicago();
        expected["record_type"] = json!("dynamic_emergency_address");
        expected["status"] = json!("activated");
        for k in ["id", "sip_geolocation_id", "created_at", "updated_at"] {
            expected[k] = a[k].clone();
        }
        assert_eq!(a, expected, "no other fields (house_suffix, extended_address, ... unset)");
        let (st, got) = call(&app, "GET", &format!("{ADDRS}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));

        // Every field, echoed; extended_address with the docs' abbreviations.
        let mut full = chicago();
        full["house_suffix"] = json!("1/2");
        full["street_post_directional"] = json!("NW");
        full["postal_code"] = json!("60612-1234");
        full["extended_address"] = json!("Building C, Floor 3, Suite 300");
        let b = post(&app, ADDRS, &key, full.clone()).await;
        for (k, v) in full.as_object().unwrap() {
            if k != "extended_address" {
                assert_eq!(&b[k], v, "{k}");
            }
        }
        assert_eq!(b["extended_address"], "BLDG C, FL 3, STE 300");
        assert_ne!(b["sip_geolocation_id"], a["sip_geolocation_id"]);
        // 74 characters as written, 53 once abbreviated: accepted.
        let mut long = chicago();
        long["extended_address"] = json!("Apartment 1234, Building Twelve, Floor Seventeen, Room Forty-Two");
        let l = post(&app, ADDRS, &key, long).await;
        assert_eq!(l["extended_address"], "APT 1234, BLDG Twelve, FL Seventeen, RM Forty-Two");

        // Canada and Puerto Rico; read-only and unknown fields are ignored.
        let mut ca = toronto();
        ca["status"] = json!("rejected");
        ca["id"] = json!("0ccc7b54-4df3-4bca-a65a-3da1ecc777f1");
        ca["sip_geolocation_id"] = json!("XYZ123");
        ca["whatever"] = json!(1);
        let c = post(&app, ADDRS, &key, ca).await;
        assert_eq!((c["status"].as_str(), c["country_code"].as_str()), (Some("activated"), Some("CA")));
        assert_ne!(c["id"], "0ccc7b54-4df3-4bca-a65a-3da1ecc777f1");
        assert_ne!(c["sip_geolocation_id"], "XYZ123");
        assert!(c.get("whatever").is_none());
        let mut compact = toronto();
        compact["postal_code"] = json!("M5H2N2");
        post(&app, ADDRS, &key, compact).await;
        let p = post(&app, ADDRS, &key, san_juan()).await;
        assert_eq!(p["administrative_area"], "PR");

        // Listed oldest first; deleted answers the address, then 404.
        let (st, list) = call(&app, "GET", ADDRS, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 6}));
        assert_eq!(list["data"][0], expected);
        assert!(list["data"].as_array().unwrap().iter().all(|a| a.get("account_id").is_none()));
        let uri = format!("{ADDRS}/{id}");
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &expected));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        let (_, list) = call(&app, "GET", ADDRS, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 5);
        assert!(!ids(&list).contains(&id));
        let (st, _) = call(&app, "PATCH", &uri, Some(&key), Some(json!({}))).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "the contract has no PATCH");
    }
}

#[tokio::test]
async fn address_validation_reports_every_fault_and_stores_nothing() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        let refused = |body: Value| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "POST", ADDRS, Some(&key), Some(body)).await;
                assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
                v
            }
        };
        let with = |changes: Value| {
            let mut b = chicago();
            for (k, v) in changes.as_object().unwrap() {
                b[k] = v.clone();
            }
            b
        };

        // Every required field, at once.
        let v = refused(json!({})).await;
        assert_eq!(
            pointers(&v),
            ["/house_number", "/street_name", "/locality", "/administrative_area", "/postal_code", "/country_code"]
        );
        assert!(v["errors"].as_array().unwrap().iter().all(|e| e["code"] == "10015"));
        let v = refused(json!({"house_number": null, "street_name": 5, "locality": "   ", "country_code": null})).await;
        assert_eq!(
            pointers(&v),
            ["/house_number", "/street_name", "/locality", "/administrative_area", "/postal_code", "/country_code"]
        );

        // country_code is the contract's enumeration.
        for bad in ["MX", "us", "USA", ""] {
            let v = refused(with(json!({"country_code": bad}))).await;
            assert_eq!(pointers(&v), ["/country_code"], "{bad}");
            assert_eq!(v["errors"][0]["code"], "10032");
            assert_eq!(v["errors"][0]["detail"], "The value must be one of: US, CA, PR.");
        }
        let v = refused(with(json!({"country_code": 1}))).await;
        assert_eq!((pointers(&v), v["errors"][0]["code"].as_str()), (vec!["/country_code"], Some("10032")));

        // administrative_area by country.
        for (country, area, postal) in
            [("US", "ON", "60612"), ("US", "il", "60612"), ("US", "PR", "00901"), ("US", "TEX", "60612")]
        {
            let v = refused(with(json!({"country_code": country, "administrative_area": area, "postal_code": postal})))
                .await;
            assert_eq!(pointers(&v), ["/administrative_area"], "{country} {area}");
        }
        let mut ca = toronto();
        ca["administrative_area"] = json!("TX");
        assert_eq!(pointers(&refused(ca).await), ["/administrative_area"]);
        let mut pr = san_juan();
        pr["administrative_area"] = json!("NY");
        assert_eq!(pointers(&refused(pr).await), ["/administrative_area"]);

        // postal_code by country.
        for bad in ["6061", "606123", "60612-12", "60612 1234", "6061A", "K1A 0B1", "60612-12345"] {
            let v = refused(with(json!({"postal_code": bad}))).await;
            assert_eq!(pointers(&v), ["/postal_code"], "{bad}");
        }
        for bad in ["60612", "k1a 0b1", "D1A 0B1", "M5H-2N2", "M5H  2N2"] {
            let mut ca = toronto();
            ca["postal_code"] = json!(bad);
            assert_eq!(pointers(&refused(ca).await), ["/postal_code"], "{bad}");
        }
        for bad in ["10001", "0090", "K1A 0B1"] {
            let mut pr = san_juan();
            pr["postal_code"] = json!(bad);
            assert_eq!(pointers(&refused(pr).await), ["/postal_code"], "{bad}");
        }

        // Lengths (the docs' limits), directionals, blanks, types.
        let v = refused(with(json!({
            "house_number": "1234567",
            "house_suffix": "x".repeat(46),
            "street_pre_directional": "NNW",
            "street_name": "x".repeat(201),
            "street_suffix": "",
            "street_post_directional": "1",
            "extended_address": "x".repeat(61),
            "locality": "x".repeat(101)
        })))
        .await;
        assert_eq!(
            pointers(&v),
            [
                "/house_number",
                "/house_suffix",
                "/street_pre_directional",
                "/street_name",
                "/street_suffix",
                "/street_post_directional",
                "/extended_address",
                "/locality"
            ]
        );
        let v = refused(with(json!({"extended_address": format!("Suite {}", "9".repeat(60))}))).await;
        assert_eq!(pointers(&v), ["/extended_address"], "the limit applies after abbreviating");
        let v = refused(with(json!({"house_suffix": " ", "street_suffix": ["St"], "house_number": 600}))).await;
        assert_eq!(pointers(&v), ["/house_number", "/house_suffix", "/street_suffix"]);

        // Faults in several fields at once; bodies that are not objects.
        let v =
            refused(json!({"house_number": "1", "street_name": "Main", "locality": "X", "administrative_area": "ZZ",
            "postal_code": "1", "country_code": "US"}))
            .await;
        assert_eq!(pointers(&v), ["/administrative_area", "/postal_code"]);
        let (st, v) = raw(&app, ADDRS, &key, "[1]").await;
        assert_eq!((st, v["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")));
        let (st, _) = raw(&app, ADDRS, &key, "{\"house_number\":").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);

        let (_, list) = call(&app, "GET", ADDRS, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 0, "nothing refused was stored");
    }
}

#[tokio::test]
async fn endpoints_create_get_list_delete_and_validation() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        let (_, other_key) = account(&app, "Other").await;
        let a = post(&app, ADDRS, &key, chicago()).await;
        let theirs = post(&app, ADDRS, &other_key, chicago()).await;

        let body = json!({
            "dynamic_emergency_address_id": a["id"],
            "callback_number": "+13125550000",
            "caller_name": "Jane Doe Desk Phone"
        });
        let e = post(&app, EPS, &key, body.clone()).await;
        let id = e["id"].as_str().unwrap();
        assert!(is_uuid(id) && is_token(e["sip_from_id"].as_str().unwrap()), "{e}");
        let mut expected = body.clone();
        expected["record_type"] = json!("dynamic_emergency_endpoint");
        expected["status"] = json!("activated");
        for k in ["id", "sip_from_id", "created_at", "updated_at"] {
            expected[k] = e[k].clone();
        }
        assert_eq!(e, expected);
        assert_eq!(e["created_at"], e["updated_at"]);
        let (st, got) = call(&app, "GET", &format!("{EPS}/{id}"), Some(&key), None).await;
        assert_eq!((st, &got["data"]), (StatusCode::OK, &expected));
        let e2 = endpoint(&app, &key, &a, "Lobby").await;
        assert_ne!(e2["sip_from_id"], e["sip_from_id"]);

        // Validation: every fault, nothing stored.
        let refused = |body: Value| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "POST", EPS, Some(&key), Some(body)).await;
                assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
                v
            }
        };
        let v = refused(json!({})).await;
        assert_eq!(pointers(&v), ["/dynamic_emergency_address_id", "/callback_number", "/caller_name"]);
        for bad in ["13125550000", "+1 312 555 0000", "+0312555", "+1234567890123456", "tel:+13125550000"] {
            let mut b = body.clone();
            b["callback_number"] = json!(bad);
            assert_eq!(pointers(&refused(b).await), ["/callback_number"], "{bad}");
        }
        for bad in [json!(""), json!("  "), json!("x".repeat(51)), json!(7)] {
            let mut b = body.clone();
            b["caller_name"] = bad.clone();
            assert_eq!(pointers(&refused(b).await), ["/caller_name"], "{bad}");
        }
        let mut b = body.clone();
        b["caller_name"] = json!("x".repeat(50));
        let fifty = post(&app, EPS, &key, b).await;

        // The address must exist and be the account's own: another's reads as missing.
        let (_, missing) = call(
            &app,
            "POST",
            EPS,
            Some(&key),
            Some(json!({"dynamic_emergency_address_id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
                "callback_number": "+13125550000", "caller_name": "Jane"})),
        )
        .await;
        assert_eq!(pointers(&missing), ["/dynamic_emergency_address_id"]);
        let (st, foreign) = call(
            &app,
            "POST",
            EPS,
            Some(&key),
            Some(json!({"dynamic_emergency_address_id": theirs["id"], "callback_number": "+13125550000",
                "caller_name": "Jane"})),
        )
        .await;
        assert_eq!((st, &foreign), (StatusCode::UNPROCESSABLE_ENTITY, &missing));
        let v =
            refused(json!({"dynamic_emergency_address_id": "not-a-uuid", "callback_number": "5", "caller_name": "J"}))
                .await;
        assert_eq!(pointers(&v), ["/callback_number", "/dynamic_emergency_address_id"]);

        let (_, list) = call(&app, "GET", EPS, Some(&key), None).await;
        assert_eq!(ids(&list), [id, e2["id"].as_str().unwrap(), fifty["id"].as_str().unwrap()]);
        let (_, list) = call(&app, "GET", EPS, Some(&other_key), None).await;
        assert_eq!(list["meta"]["total_results"], 0);

        // Delete answers the endpoint, then 404.
        let uri = format!("{EPS}/{id}");
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &expected));
        for method in ["GET", "DELETE"] {
            let (st, body) = call(&app, method, &uri, Some(&key), None).await;
            assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::NOT_FOUND, Some("10005")), "{method}");
        }
        let (_, list) = call(&app, "GET", EPS, Some(&key), None).await;
        assert_eq!(list["meta"]["total_results"], 2);
    }
}

#[tokio::test]
async fn an_address_in_use_cannot_be_deleted() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        let a = post(&app, ADDRS, &key, chicago()).await;
        let unused = post(&app, ADDRS, &key, toronto()).await;
        let e1 = endpoint(&app, &key, &a, "Desk 1").await;
        let e2 = endpoint(&app, &key, &a, "Desk 2").await;
        let uri = format!("{ADDRS}/{}", a["id"].as_str().unwrap());

        let (st, v) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["errors"][0]["code"], "10007");
        assert_eq!(v["errors"][0]["title"], "Address in use");
        let detail = v["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(e1["id"].as_str().unwrap()) && detail.contains(e2["id"].as_str().unwrap()), "{detail}");
        let (st, v) = call(&app, "DELETE", &uri, Some(OPERATOR), None).await;
        assert_eq!((st, v["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("10007")));
        let (st, still) = call(&app, "GET", &uri, Some(&key), None).await;
        assert_eq!((st, &still["data"]), (StatusCode::OK, &a));

        // An address no endpoint uses goes; once its endpoints are gone, so does the other.
        let (st, _) =
            call(&app, "DELETE", &format!("{ADDRS}/{}", unused["id"].as_str().unwrap()), Some(&key), None).await;
        assert_eq!(st, StatusCode::OK);
        call(&app, "DELETE", &format!("{EPS}/{}", e1["id"].as_str().unwrap()), Some(&key), None).await;
        let (st, v) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "one endpoint still uses it: {v}");
        call(&app, "DELETE", &format!("{EPS}/{}", e2["id"].as_str().unwrap()), Some(&key), None).await;
        let (st, gone) = call(&app, "DELETE", &uri, Some(&key), None).await;
        assert_eq!((st, &gone["data"]), (StatusCode::OK, &a));

        // A deleted address cannot be used.
        let (st, v) = call(
            &app,
            "POST",
            EPS,
            Some(&key),
            Some(json!({"dynamic_emergency_address_id": a["id"], "callback_number": "+13125550000",
                "caller_name": "Jane"})),
        )
        .await;
        assert_eq!((st, pointers(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/dynamic_emergency_address_id"]));
    }
}

#[tokio::test]
async fn racing_endpoint_creates_and_address_deletes_leave_no_orphan() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        for _ in 0..8 {
            let a = post(&app, ADDRS, &key, chicago()).await;
            let uri = format!("{ADDRS}/{}", a["id"].as_str().unwrap());
            let body = json!({"dynamic_emergency_address_id": a["id"], "callback_number": "+13125550000",
                "caller_name": "Jane"});
            let (made, deleted) = tokio::join!(
                call(&app, "POST", EPS, Some(&key), Some(body)),
                call(&app, "DELETE", &uri, Some(&key), None)
            );
            let (st, _) = call(&app, "GET", &uri, Some(&key), None).await;
            let address_exists = st == StatusCode::OK;
            assert!(!(made.0 == StatusCode::CREATED && deleted.0 == StatusCode::OK), "both cannot succeed");
            if made.0 == StatusCode::CREATED {
                assert!(address_exists, "an endpoint's address stays");
            }
            if deleted.0 == StatusCode::OK {
                assert!(!address_exists);
            }
        }
        // Every endpoint left has its address.
        let (_, eps) = call(&app, "GET", &format!("{EPS}?page[size]=250"), Some(&key), None).await;
        for e in eps["data"].as_array().unwrap() {
            let addr = format!("{ADDRS}/{}", e["dynamic_emergency_address_id"].as_str().unwrap());
            let (st, _) = call(&app, "GET", &addr, Some(&key), None).await;
            assert_eq!(st, StatusCode::OK, "{e}");
        }
    }
}

#[tokio::test]
async fn lists_filter_and_page() {
    for app in apps().await {
        let (_, key) = account(&app, "Acme").await;
        let mut addresses = Vec::new();
        for body in [chicago(), toronto(), san_juan(), chicago(), toronto()] {
            addresses.push(post(&app, ADDRS, &key, body).await);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let aid = |i: usize| addresses[i]["id"].as_str().unwrap();
        let mut endpoints = Vec::new();
        for i in [0, 1, 2, 1] {
            endpoints.push(endpoint(&app, &key, &addresses[i], &format!("desk {i}")).await);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let eid = |i: usize| endpoints[i]["id"].as_str().unwrap();

        let get = |uri: String| {
            let app = app.clone();
            let key = key.clone();
            async move {
                let (st, v) = call(&app, "GET", &uri, Some(&key), None).await;
                assert_eq!(st, StatusCode::OK, "{uri}: {v}");
                v
            }
        };

        // Filters.
        let v = get(format!("{ADDRS}?filter[country_code]=CA")).await;
        assert_eq!(ids(&v), [aid(1), aid(4)]);
        let v = get(format!("{ADDRS}?filter%5Bcountry_code%5D=pr")).await;
        assert_eq!(ids(&v), [aid(2)]);
        let v = get(format!("{ADDRS}?filter[country_code]=MX")).await;
        assert_eq!(v["meta"]["total_results"], 0);
        let v = get(format!("{ADDRS}?filter[status]=activated&filter[country_code]=US")).await;
        assert_eq!(ids(&v), [aid(0), aid(3)]);
        for status in ["pending", "rejected"] {
            let v = get(format!("{ADDRS}?filter[status]={status}")).await;
            assert_eq!(v["meta"]["total_results"], 0, "{status}");
            let v = get(format!("{EPS}?filter[status]={status}")).await;
            assert_eq!(v["meta"]["total_results"], 0, "{status}");
        }
        let v = get(format!("{EPS}?filter[country_code]=CA")).await;
        assert_eq!(ids(&v), [eid(1), eid(3)], "an endpoint's country is its address's");
        let v = get(format!("{EPS}?filter[country_code]=US&filter[status]=activated")).await;
        assert_eq!(ids(&v), [eid(0)]);
        let v = get(format!("{EPS}?filter[status]=activated")).await;
        assert_eq!(v["meta"]["total_results"], 4);

        // Pages.
        let v = get(format!("{ADDRS}?page[number]=2&page[size]=2")).await;
        assert_eq!(v["meta"], json!({"page_number": 2, "page_size": 2, "total_pages": 3, "total_results": 5}));
        assert_eq!(ids(&v), [aid(2), aid(3)]);
        let v = get(format!("{ADDRS}?page[number]=3&page[size]=2")).await;
        assert_eq!(ids(&v), [aid(4)]);
        let v = get(format!("{ADDRS}?page[number]=9")).await;
        assert_eq!((v["data"].as_array().unwrap().len(), &v["meta"]["total_results"]), (0, &json!(5)));
        let v = get(format!("{EPS}?page[size]=3&page[number]=2")).await;
        assert_eq!(v["meta"], json!({"page_number": 2, "page_size": 3, "total_pages": 2, "total_results": 4}));
        assert_eq!(ids(&v), [eid(3)]);
        let v = get(format!("{EPS}?filter[country_code]=CA&page[size]=1")).await;
        assert_eq!((ids(&v), &v["meta"]["total_pages"]), (vec![eid(1)], &json!(2)));
        let v = get(format!("{ADDRS}?page[size]=250")).await;
        assert_eq!(v["meta"]["page_size"], 250);

        // Bad queries: 400.
        for uri in [ADDRS, EPS] {
            for bad in ["page[size]=251", "page[size]=0", "page[number]=0", "page[number]=x"] {
                let (st, body) = call(&app, "GET", &format!("{uri}?{bad}"), Some(&key), None).await;
                assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10015")), "{bad}");
            }
            for bad in ["filter[status]=active", "filter[status]=", "filter[status]=ACTIVATED"] {
                let (st, body) = call(&app, "GET", &format!("{uri}?{bad}"), Some(&key), None).await;
                assert_eq!((st, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("10032")), "{bad}");
                assert!(body["errors"][0]["detail"].as_str().unwrap().contains("pending, activated, rejected"));
            }
        }
    }
}

#[tokio::test]
async fn tenancy_each_account_sees_its_own() {
    for app in apps().await {
        let (id_a, key_a) = account(&app, "Alpha").await;
        let (id_b, key_b) = account(&app, "Bravo").await;
        let addr_a = post(&app, ADDRS, &key_a, chicago()).await;
        let addr_b = post(&app, ADDRS, &key_b, toronto()).await;
        let ep_a = endpoint(&app, &key_a, &addr_a, "alpha desk").await;
        let ep_b = endpoint(&app, &key_b, &addr_b, "bravo desk").await;

        // Another account's resources are 404, exactly like missing ones; a non-UUID id too.
        for (base, theirs) in [(ADDRS, &addr_a), (EPS, &ep_a)] {
            let (_, missing) =
                call(&app, "GET", &format!("{base}/0ccc7b54-4df3-4bca-a65a-3da1ecc777f1"), Some(&key_b), None).await;
            assert_eq!(missing["errors"][0]["code"], "10005");
            let uri = format!("{base}/{}", theirs["id"].as_str().unwrap());
            for method in ["GET", "DELETE"] {
                let (st, resp) = call(&app, method, &uri, Some(&key_b), None).await;
                assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing), "{method} {uri}");
            }
            let (st, resp) = call(&app, "GET", &format!("{base}/1293384261075731499"), Some(&key_b), None).await;
            assert_eq!((st, &resp), (StatusCode::NOT_FOUND, &missing));
            let (st, still) = call(&app, "GET", &uri, Some(&key_a), None).await;
            assert_eq!((st, &still["data"]), (StatusCode::OK, theirs));
        }

        // Lists are the account's own; filter[account_id] cannot widen them.
        for (uri, own) in [(ADDRS, &addr_b), (EPS, &ep_b)] {
            let (_, l) = call(&app, "GET", uri, Some(&key_b), None).await;
            assert_eq!(ids(&l), [own["id"].as_str().unwrap()]);
            let (_, l) = call(&app, "GET", &format!("{uri}?filter[account_id]={id_a}"), Some(&key_b), None).await;
            assert_eq!(l["meta"]["total_results"], 0, "an account cannot widen its view");
        }
        let (_, l) = call(&app, "GET", &format!("{EPS}?filter[country_code]=US"), Some(&key_b), None).await;
        assert_eq!(l["meta"]["total_results"], 0);

        // An account may name only itself.
        let mut body = chicago();
        body["account_id"] = json!(id_a);
        let (st, v) = call(&app, "POST", ADDRS, Some(&key_b), Some(body)).await;
        assert_eq!((st, pointers(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let mut body = chicago();
        body["account_id"] = json!(id_b);
        let own = post(&app, ADDRS, &key_b, body).await;
        assert!(own.get("account_id").is_none());

        // The operator sees everyone's, with the owner, narrows by account, and names the
        // owner when creating; the endpoint's address must be that owner's.
        for (uri, n) in [(ADDRS, 3), (EPS, 2)] {
            let (_, all) = call(&app, "GET", uri, Some(OPERATOR), None).await;
            assert_eq!(all["meta"]["total_results"], n, "{uri}");
            let (_, only_a) =
                call(&app, "GET", &format!("{uri}?filter[account_id]={id_a}"), Some(OPERATOR), None).await;
            assert_eq!(only_a["meta"]["total_results"], 1);
            assert!(only_a["data"].as_array().unwrap().iter().all(|x| x["account_id"] == json!(id_a)));
        }
        let (st, got) =
            call(&app, "GET", &format!("{EPS}/{}", ep_b["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!((st, got["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_b.as_str())));

        let (st, v) = call(&app, "POST", ADDRS, Some(OPERATOR), Some(chicago())).await;
        assert_eq!((st, pointers(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let mut body = chicago();
        body["account_id"] = json!("1234567890123456789");
        let (st, v) = call(&app, "POST", ADDRS, Some(OPERATOR), Some(body)).await;
        assert_eq!((st, pointers(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/account_id"]));
        let mut body = san_juan();
        body["account_id"] = json!(id_a);
        let op_addr = post(&app, ADDRS, OPERATOR, body).await;
        assert_eq!(op_addr["account_id"], json!(id_a));
        let (_, seen) =
            call(&app, "GET", &format!("{ADDRS}/{}", op_addr["id"].as_str().unwrap()), Some(&key_a), None).await;
        assert!(seen["data"].get("account_id").is_none());

        let ep_body = |account: &str, address: &Value| {
            json!({"account_id": account, "dynamic_emergency_address_id": address["id"],
                "callback_number": "+13125550000", "caller_name": "ops"})
        };
        let (st, v) = call(&app, "POST", EPS, Some(OPERATOR), Some(ep_body(&id_a, &addr_b))).await;
        assert_eq!((st, pointers(&v)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["/dynamic_emergency_address_id"]));
        let op_ep = post(&app, EPS, OPERATOR, ep_body(&id_a, &op_addr)).await;
        assert_eq!(op_ep["account_id"], json!(id_a));
        let (_, l) = call(&app, "GET", &format!("{EPS}?filter[country_code]=PR"), Some(&key_a), None).await;
        assert_eq!(ids(&l), [op_ep["id"].as_str().unwrap()]);
        let (_, l) = call(&app, "GET", &format!("{EPS}?filter[country_code]=CA"), Some(OPERATOR), None).await;
        assert_eq!(ids(&l), [ep_b["id"].as_str().unwrap()]);

        // The operator deletes anyone's, with the same in-use rule.
        let uri = format!("{ADDRS}/{}", addr_b["id"].as_str().unwrap());
        let (st, _) = call(&app, "DELETE", &uri, Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        let (st, gone) =
            call(&app, "DELETE", &format!("{EPS}/{}", ep_b["id"].as_str().unwrap()), Some(OPERATOR), None).await;
        assert_eq!((st, gone["data"]["account_id"].as_str()), (StatusCode::OK, Some(id_b.as_str())));
        let (st, _) = call(&app, "DELETE", &uri, Some(OPERATOR), None).await;
        assert_eq!(st, StatusCode::OK);
    }
}
