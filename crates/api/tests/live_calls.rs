//! The live call endpoints through the router, on both store backends, with a live call table
//! the tests fill as the switch would: `GET /v2/connections/{id}/active_calls` and
//! `GET /v2/calls/{call_control_id}` in the contract's shapes (checked against the served
//! document's `ActiveCall` and `Call` schemas), cursor and number paging, answers and hangups
//! seen at once, and tenancy: another account's connection or call answers 404 like a missing one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::live_calls::{CallDirection, decode_cursor};
use api::{LiveCall, LiveCallTable};
use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{OPERATOR, account, call, codes, pointers, post};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The router on each backend with its own live call table, the operator's key installed.
async fn apps() -> Vec<(axum::Router, Arc<LiveCallTable>)> {
    let mut out = Vec::new();
    for store in common::support::backends().await {
        store.ensure_admin_key(Some(OPERATOR)).await.unwrap();
        let table = Arc::new(LiveCallTable::new());
        let state = api::ApiState::with_live_calls(Arc::new(store), table.clone());
        out.push((api::router(state), table));
    }
    out
}

/// An account with one IP connection: (account id, key, connection id).
async fn tenant(app: &axum::Router, name: &str) -> (String, String, String) {
    let (id, key) = account(app, name).await;
    let c = post(app, "/v2/ip_connections", &key, json!({"connection_name": format!("{name} trunk")})).await;
    (id, key, c["id"].as_str().unwrap().to_owned())
}

/// A ringing outgoing call of `account` on `connection`, started `ago` ms before now.
fn live(id: &str, account: &str, connection: &str, ago: i64) -> LiveCall {
    LiveCall {
        call_control_id: id.into(),
        call_leg_id: format!("leg-{id}"),
        call_session_id: format!("session-{id}"),
        connection_id: connection.into(),
        account_id: account.into(),
        from: "+12125551234".into(),
        to: "+13125556789".into(),
        direction: CallDirection::Outgoing,
        started_at_ms: now_ms() - ago,
        answered_at_ms: None,
        client_state: None,
    }
}

async fn get(app: &axum::Router, key: &str, uri: &str) -> Value {
    let (st, v) = call(app, "GET", uri, Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{uri}: {v}");
    v
}

async fn status(app: &axum::Router, key: Option<&str>, uri: &str) -> (StatusCode, Value) {
    call(app, "GET", uri, key, None).await
}

/// A 404 in the contract's error body.
fn assert_not_found((st, body): (StatusCode, Value), what: &str) {
    assert_eq!(st, StatusCode::NOT_FOUND, "{what}: {body}");
    assert_eq!(codes(&body), ["10005"], "{what}");
    assert_eq!(body["errors"][0]["title"], "Resource not found", "{what}");
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"].as_array().unwrap().iter().map(|c| c["call_control_id"].as_str().unwrap()).collect()
}

/// `v` against the served document's schema `name`: every required field present, no field
/// the schema lacks (but `extra`), each of the schema's type.
fn conforms(v: &Value, name: &str, extra: &[&str]) {
    let doc = api::openapi::document_json();
    let schema = &doc["components"]["schemas"][name];
    let props = schema["properties"].as_object().unwrap_or_else(|| panic!("no schema {name}"));
    for r in schema["required"].as_array().unwrap() {
        assert!(v.get(r.as_str().unwrap()).is_some(), "{name}: {r} missing in {v}");
    }
    for (k, field) in v.as_object().unwrap() {
        if extra.contains(&k.as_str()) {
            continue;
        }
        let p = props.get(k).unwrap_or_else(|| panic!("{name} has no field {k}"));
        let ok = match p["type"].as_str().unwrap() {
            "string" => field.is_string(),
            "integer" => field.is_i64(),
            "boolean" => field.is_boolean(),
            t => panic!("{name}.{k}: type {t}"),
        };
        assert!(ok, "{name}.{k} = {field} is not a {}", p["type"]);
        if let Some(allowed) = p["enum"].as_array() {
            assert!(allowed.contains(field), "{name}.{k} = {field}");
        }
    }
}

#[tokio::test]
async fn lists_and_reports_live_calls_in_the_contract_shape() {
    for (app, table) in apps().await {
        let (a, key_a, conn_a) = tenant(&app, "Alpha").await;
        let (_, _, conn_a2) = tenant(&app, "Alpha two").await;
        let mut answered = live("c-answered", &a, &conn_a, 65_000);
        answered.answered_at_ms = Some(now_ms() - 60_000);
        answered.client_state = Some("aGF2ZSBhIG5pY2UgZGF5ID1d".into());
        table.insert(answered.clone());
        table.insert(live("c-ringing", &a, &conn_a, 3_000));
        table.insert(live("c-elsewhere", &a, &conn_a2, 1_000));

        let uri = format!("/v2/connections/{conn_a}/active_calls");
        let list = get(&app, &key_a, &uri).await;
        // Oldest first; the other connection's call is not listed.
        assert_eq!(ids(&list), ["c-answered", "c-ringing"]);
        assert_eq!(
            list["meta"],
            json!({"cursors": {}, "total_items": 2, "page_number": 1, "page_size": 20, "total_pages": 1})
        );
        for item in list["data"].as_array().unwrap() {
            conforms(item, "ActiveCall", &[]);
        }
        let first = &list["data"][0];
        assert_eq!(first["call_leg_id"], "leg-c-answered");
        assert_eq!(first["call_session_id"], "session-c-answered");
        assert_eq!(first["client_state"], "aGF2ZSBhIG5pY2UgZGF5ID1d");
        assert_eq!(first["record_type"], "call");
        // Talk time, from the answer: 60 s (a slow run may add a few).
        let talk = first["call_duration"].as_i64().unwrap();
        assert!((60..70).contains(&talk), "{talk}");
        // Ringing: no talk yet, and no client state is still the required string.
        assert_eq!((&list["data"][1]["call_duration"], &list["data"][1]["client_state"]), (&json!(0), &json!("")));

        let (st, one) = status(&app, Some(&key_a), "/v2/calls/c-answered").await;
        assert_eq!(st, StatusCode::OK, "{one}");
        let data = &one["data"];
        conforms(data, "Call", &[]);
        assert_eq!(data["is_alive"], true);
        assert_eq!(data["start_time"], store::cdr_timestamp(answered.started_at_ms));
        assert!(data.get("end_time").is_none(), "{data}");
        assert_eq!(data["client_state"], "aGF2ZSBhIG5pY2UgZGF5ID1d");
        assert!((60..70).contains(&data["call_duration"].as_i64().unwrap()), "{data}");
        let ringing = get(&app, &key_a, "/v2/calls/c-ringing").await;
        assert!(ringing["data"].get("client_state").is_none(), "{ringing}");
        assert_eq!(ringing["data"]["call_duration"], 0);
        // The account does not see whose call it is; the operator does.
        assert!(data.get("account_id").is_none());
        let op = get(&app, OPERATOR, "/v2/calls/c-answered").await;
        conforms(&op["data"], "Call", &["account_id"]);
        assert_eq!(op["data"]["account_id"], json!(a));
        let op_list = get(&app, OPERATOR, &uri).await;
        assert_eq!(ids(&op_list), ["c-answered", "c-ringing"]);
        assert_eq!(op_list["data"][1]["account_id"], json!(a));
    }
}

#[tokio::test]
async fn answers_and_hangups_show_at_once() {
    for (app, table) in apps().await {
        let (a, key, conn) = tenant(&app, "Alpha").await;
        let uri = format!("/v2/connections/{conn}/active_calls");
        assert_eq!(get(&app, &key, &uri).await["data"], json!([]));

        table.insert(live("c1", &a, &conn, 10_000));
        table.insert(live("c2", &a, &conn, 5_000));
        assert_eq!(get(&app, &key, "/v2/calls/c1").await["data"]["call_duration"], 0);
        assert!(table.answered("c1", now_ms() - 4_000));
        let d = get(&app, &key, "/v2/calls/c1").await["data"]["call_duration"].as_i64().unwrap();
        assert!((4..10).contains(&d), "{d}");
        let list = get(&app, &key, &uri).await;
        assert!((4..10).contains(&list["data"][0]["call_duration"].as_i64().unwrap()), "{list}");

        // Hung up: gone from the list and from the status.
        assert!(table.remove("c1").is_some());
        let list = get(&app, &key, &uri).await;
        assert_eq!((ids(&list), &list["meta"]["total_items"]), (vec!["c2"], &json!(1)));
        assert_not_found(status(&app, Some(&key), "/v2/calls/c1").await, "ended call");
        table.remove("c2");
        assert_eq!(get(&app, &key, &uri).await["meta"]["total_items"], 0);
        assert!(table.is_empty());
    }
}

#[tokio::test]
async fn pages_by_cursor_and_by_number() {
    for (app, table) in apps().await {
        let (a, key, conn) = tenant(&app, "Alpha").await;
        for i in 0..5 {
            table.insert(live(&format!("c{i}"), &a, &conn, 50_000 - i * 1_000));
        }
        let uri = format!("/v2/connections/{conn}/active_calls");

        // Forward by cursor, following `next` as given.
        let p1 = get(&app, &key, &format!("{uri}?page[size]=2")).await;
        assert_eq!(ids(&p1), ["c0", "c1"]);
        assert_eq!((&p1["meta"]["total_items"], &p1["meta"]["total_pages"]), (&json!(5), &json!(3)));
        assert!(p1["meta"]["cursors"].get("before").is_none() && p1["meta"].get("previous").is_none());
        let after = p1["meta"]["cursors"]["after"].as_str().unwrap();
        assert_eq!(decode_cursor(after).unwrap().1, "c1");
        let next = p1["meta"]["next"].as_str().unwrap();
        assert_eq!(next, format!("{uri}?page[after]={after}&page[size]=2"));
        let p2 = get(&app, &key, next).await;
        assert_eq!(ids(&p2), ["c2", "c3"]);
        assert!(p2["meta"].get("page_number").is_none());
        let p3 = get(&app, &key, p2["meta"]["next"].as_str().unwrap()).await;
        assert_eq!(ids(&p3), ["c4"]);
        assert!(p3["meta"].get("next").is_none() && p3["meta"]["cursors"].get("after").is_none());
        // And back.
        let back = get(&app, &key, p3["meta"]["previous"].as_str().unwrap()).await;
        assert_eq!(ids(&back), ["c2", "c3"]);
        let back = get(&app, &key, back["meta"]["previous"].as_str().unwrap()).await;
        assert_eq!(ids(&back), ["c0", "c1"]);
        assert!(back["meta"].get("previous").is_none());

        // A cursor outlives its call: hang up c1 and page 1's cursor still leads to c2.
        table.remove("c1");
        assert_eq!(ids(&get(&app, &key, next).await), ["c2", "c3"]);

        // By number, as the SDK pages; page[limit] is the size when page[size] is absent.
        let by_number = get(&app, &key, &format!("{uri}?page[number]=2&page[limit]=3")).await;
        assert_eq!(ids(&by_number), ["c4"]);
        assert_eq!(
            (&by_number["meta"]["page_number"], &by_number["meta"]["page_size"], &by_number["meta"]["total_pages"]),
            (&json!(2), &json!(3), &json!(2))
        );
        let cursors = by_number["meta"]["cursors"].as_object().unwrap();
        assert_eq!(cursors.keys().collect::<Vec<_>>(), ["before"]);
        assert_eq!(decode_cursor(cursors["before"].as_str().unwrap()).unwrap().1, "c4");
        // The contract's written default of a cursor, the string "null", is no cursor.
        assert_eq!(ids(&get(&app, &key, &format!("{uri}?page[after]=null&page[size]=1")).await), ["c0"]);

        // Bad paging: 422, every fault with its pointer.
        for (query, expected) in [
            ("page[size]=0", vec!["/page/size"]),
            ("page[size]=251", vec!["/page/size"]),
            ("page[limit]=x", vec!["/page/limit"]),
            ("page[number]=0", vec!["/page/number"]),
            ("page[after]=v1:x", vec!["/page/after"]),
            ("page[before]=123", vec!["/page/before"]),
            (&format!("page[after]={after}&page[before]={after}") as &str, vec!["/page/before"]),
            (&format!("page[after]={after}&page[number]=2") as &str, vec!["/page/number"]),
            ("page[size]=0&page[after]=nope", vec!["/page/size", "/page/after"]),
        ] {
            let (st, body) = status(&app, Some(&key), &format!("{uri}?{query}")).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
            assert_eq!(pointers(&body), expected, "{query}");
            assert!(codes(&body).iter().all(|c| *c == "10015"), "{query}");
        }
    }
}

#[tokio::test]
async fn each_account_sees_only_its_own() {
    for (app, table) in apps().await {
        let (a, key_a, conn_a) = tenant(&app, "Alpha").await;
        let (b, key_b, conn_b) = tenant(&app, "Bravo").await;
        table.insert(live("call-a", &a, &conn_a, 2_000));
        table.insert(live("call-b", &b, &conn_b, 1_000));

        let list_a = format!("/v2/connections/{conn_a}/active_calls");
        let list_b = format!("/v2/connections/{conn_b}/active_calls");
        assert_eq!(ids(&get(&app, &key_a, &list_a).await), ["call-a"]);
        assert_eq!(ids(&get(&app, &key_b, &list_b).await), ["call-b"]);
        // Another account's connection and call: 404, exactly like missing ones.
        assert_not_found(status(&app, Some(&key_b), &list_a).await, "A's connection read by B");
        assert_not_found(status(&app, Some(&key_b), "/v2/calls/call-a").await, "A's call read by B");
        assert_not_found(status(&app, Some(&key_a), "/v2/calls/call-b").await, "B's call read by A");
        // The connection is checked before the query.
        assert_not_found(status(&app, Some(&key_b), &format!("{list_a}?page[size]=0")).await, "bad query");
        // Unknown ids.
        assert_not_found(
            status(&app, Some(&key_a), "/v2/connections/1234567890123456789/active_calls").await,
            "unknown connection",
        );
        assert_not_found(status(&app, Some(&key_a), "/v2/calls/no-such-call").await, "unknown call");
        assert_not_found(status(&app, Some(OPERATOR), "/v2/calls/no-such-call").await, "unknown call, operator");
        // A call filed under another account than its connection's stays that account's.
        table.insert(live("call-misfiled", &b, &conn_a, 500));
        assert_eq!(ids(&get(&app, &key_a, &list_a).await), ["call-a"]);
        // The operator sees every account's.
        assert_eq!(ids(&get(&app, OPERATOR, &list_a).await), ["call-a", "call-misfiled"]);
        assert_eq!(get(&app, OPERATOR, "/v2/calls/call-b").await["data"]["account_id"], json!(b));
        // No key, no answer.
        let (st, body) = status(&app, None, "/v2/calls/call-a").await;
        assert_eq!((st, codes(&body)), (StatusCode::UNAUTHORIZED, vec!["10009"]));
        let (st, _) = status(&app, None, &list_a).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
}
