//! `/v2/detail_records` through the router, on both store backends, with two accounts: each
//! sees only its own records (another's id is 404, exactly like a missing one), the operator
//! sees all and the route attempts and trace; every filter, pages and their `meta`; bad filter
//! values answer 422 with a pointer per fault.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{
    AttemptOutcome, CallDetailRecord, Direction, HangupSource, RawJson, Repository, RouteAttempt, Store, cdr_timestamp,
};
use trunking::trace::{Trace, Value as Fact};

mod common;

use common::{OPERATOR, account, apps_and_stores, call, codes, ids, pointers};

const DR: &str = "/v2/detail_records";
const DAY: i64 = 86_400_000;
/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A decision trace as the rules make it.
fn decision_trace() -> RawJson {
    let mut t = Trace::new();
    t.note("identify.source", [("ip", Fact::from("192.0.2.10")), ("connections", 2u64.into())]);
    t.pass("identify.tech_prefix", [("prefix", Fact::from("7788")), ("connection", Fact::from("conn-1"))]);
    t.pass("outbound.connection_active", []);
    t.note("outbound.rate", [("prefix", Fact::from("1212")), ("rate", Fact::from("0.0100"))]);
    t.fail("outbound.account_channels", [("live", 10u64.into()), ("limit", 10u64.into())]);
    RawJson::of(&t).unwrap()
}

/// A record of `account` on `connection`, started at `started` (Unix ms), every field set.
fn record(id: &str, account: &str, connection: &str, status: u16, started: i64) -> CallDetailRecord {
    CallDetailRecord {
        id: id.into(),
        account_id: account.into(),
        connection_id: connection.into(),
        outbound_voice_profile_id: Some("ovp-1".into()),
        direction: Direction::Outbound,
        a_leg_call_id: format!("a-{id}@192.0.2.10"),
        b_leg_call_id: Some(format!("b-{id}@opentrunk")),
        from_received: "+12125551234".into(),
        to_received: "2125556789".into(),
        from_sent: Some("+12125551234".into()),
        to_sent: Some("+12125556789".into()),
        started_at: cdr_timestamp(started),
        answered_at: Some(cdr_timestamp(started + 2_500)),
        ended_at: cdr_timestamp(started + 63_500),
        call_sec: 61,
        billed_sec: 120,
        rate: Some("0.0100".into()),
        cost: Some("0.0200".into()),
        sip_response_code: status,
        reason_code: None,
        hangup_source: HangupSource::Callee,
        route_attempts: vec![
            RouteAttempt {
                carrier_id: "carrier-a".into(),
                gateway: "sip.carrier-a.example".into(),
                port: 5060,
                transport: "UDP".into(),
                target: Some("203.0.113.7:5060".into()),
                outcome: AttemptOutcome::Timeout,
                started_at: cdr_timestamp(started + 10),
                ended_at: cdr_timestamp(started + 2_000),
            },
            RouteAttempt {
                carrier_id: "carrier-b".into(),
                gateway: "gw.carrier-b.example".into(),
                port: 5061,
                transport: "TLS".into(),
                target: Some("198.51.100.9:5061".into()),
                outcome: AttemptOutcome::Response { sip_response_code: 200 },
                started_at: cdr_timestamp(started + 2_000),
                ended_at: cdr_timestamp(started + 2_500),
            },
        ],
        trace: decision_trace(),
    }
}

/// A call refused by the rules: nothing sent, nothing rated.
fn refused(id: &str, account: &str, started: i64) -> CallDetailRecord {
    CallDetailRecord {
        outbound_voice_profile_id: None,
        direction: Direction::Inbound,
        b_leg_call_id: None,
        from_sent: None,
        to_sent: None,
        answered_at: None,
        ended_at: cdr_timestamp(started + 5),
        call_sec: 0,
        billed_sec: 0,
        rate: None,
        cost: None,
        reason_code: Some("D1".into()),
        hangup_source: HangupSource::System,
        route_attempts: Vec::new(),
        ..record(id, account, "conn-9", 403, started)
    }
}

/// Two accounts on `app`: (id, key) each.
async fn tenants(app: &axum::Router) -> ((String, String), (String, String)) {
    (account(app, "Acme").await, account(app, "Globex").await)
}

async fn get(app: &axum::Router, key: &str, uri: &str) -> Value {
    let (st, v) = call(app, "GET", uri, Some(key), None).await;
    assert_eq!(st, StatusCode::OK, "{uri}: {v}");
    v
}

async fn insert(store: &Store, records: &[CallDetailRecord]) {
    store.insert_cdrs(records).await.unwrap();
}

#[tokio::test]
async fn each_account_sees_its_own_the_operator_all() {
    for (app, store) in apps_and_stores().await {
        let ((a, key_a), (b, key_b)) = tenants(&app).await;
        insert(
            &store,
            &[
                record("a-1", &a, "conn-1", 200, T0),
                refused("a-2", &a, T0 + 1_000),
                record("b-1", &b, "conn-2", 200, T0 + 2_000),
            ],
        )
        .await;

        let list = get(&app, &key_a, DR).await;
        assert_eq!(ids(&list), ["a-2", "a-1"]);
        assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 2}));
        assert_eq!(ids(&get(&app, &key_b, DR).await), ["b-1"]);
        assert_eq!(ids(&get(&app, OPERATOR, DR).await), ["b-1", "a-2", "a-1"]);

        // The record as the operator sees it: every field, named as in the contract's style.
        let expected = json!({
            "record_type": "sip-trunking",
            "id": "a-1",
            "account_id": a,
            "connection_id": "conn-1",
            "outbound_voice_profile_id": "ovp-1",
            "direction": "outbound",
            "a_leg_call_id": "a-a-1@192.0.2.10",
            "b_leg_call_id": "b-a-1@opentrunk",
            "from_received": "+12125551234",
            "to_received": "2125556789",
            "from_sent": "+12125551234",
            "to_sent": "+12125556789",
            "started_at": "2026-01-02T00:00:00.000Z",
            "answered_at": "2026-01-02T00:00:02.500Z",
            "ended_at": "2026-01-02T00:01:03.500Z",
            "call_sec": 61,
            "billed_sec": 120,
            "rate": "0.0100",
            "cost": "0.0200",
            "currency": "USD",
            "sip_response_code": 200,
            "reason_code": null,
            "hangup_source": "callee",
            "route_attempts": [
                {
                    "carrier_id": "carrier-a",
                    "gateway": "sip.carrier-a.example",
                    "port": 5060,
                    "transport": "UDP",
                    "target": "203.0.113.7:5060",
                    "outcome": "timeout",
                    "started_at": "2026-01-02T00:00:00.010Z",
                    "ended_at": "2026-01-02T00:00:02.000Z",
                },
                {
                    "carrier_id": "carrier-b",
                    "gateway": "gw.carrier-b.example",
                    "port": 5061,
                    "transport": "TLS",
                    "target": "198.51.100.9:5061",
                    "outcome": "response",
                    "sip_response_code": 200,
                    "started_at": "2026-01-02T00:00:02.000Z",
                    "ended_at": "2026-01-02T00:00:02.500Z",
                },
            ],
            "trace": [
                {"rule": "identify.source", "verdict": "note", "facts": {"ip": "192.0.2.10", "connections": 2}},
                {
                    "rule": "identify.tech_prefix",
                    "verdict": "pass",
                    "facts": {"prefix": "7788", "connection": "conn-1"},
                },
                {"rule": "outbound.connection_active", "verdict": "pass", "facts": {}},
                {"rule": "outbound.rate", "verdict": "note", "facts": {"prefix": "1212", "rate": "0.0100"}},
                {"rule": "outbound.account_channels", "verdict": "fail", "facts": {"live": 10, "limit": 10}},
            ],
        });
        let by_operator = get(&app, OPERATOR, &format!("{DR}/a-1")).await;
        assert_eq!(by_operator["data"], expected);
        assert_eq!(get(&app, OPERATOR, DR).await["data"][2], expected, "the list shows the same");

        // The account's own view leaves the carriers and the rules' internals out.
        let mut own = expected.clone();
        own.as_object_mut().unwrap().retain(|k, _| k != "route_attempts" && k != "trace");
        assert_eq!(get(&app, &key_a, &format!("{DR}/a-1")).await["data"], own);
        assert_eq!(get(&app, &key_a, DR).await["data"][1], own);
        let r = get(&app, &key_a, &format!("{DR}/a-2")).await["data"].clone();
        for k in ["outbound_voice_profile_id", "b_leg_call_id", "from_sent", "to_sent", "answered_at", "rate", "cost"] {
            assert_eq!(r[k], Value::Null, "{k}");
        }
        assert_eq!(
            (&r["reason_code"], &r["hangup_source"], &r["direction"]),
            (&json!("D1"), &json!("system"), &json!("inbound"))
        );
        assert_eq!((&r["sip_response_code"], &r["call_sec"], &r["currency"]), (&json!(403), &json!(0), &json!("USD")));

        // Another account's record is exactly a missing one.
        let (st_other, other) = call(&app, "GET", &format!("{DR}/b-1"), Some(&key_a), None).await;
        let (st_none, none) = call(&app, "GET", &format!("{DR}/no-such-record"), Some(&key_a), None).await;
        assert_eq!((st_other, &other), (StatusCode::NOT_FOUND, &none));
        assert_eq!((st_none, codes(&none)), (StatusCode::NOT_FOUND, vec!["10005"]));
        assert_eq!(get(&app, &key_b, &format!("{DR}/b-1")).await["data"]["id"], "b-1");

        // The operator narrows to one account; an account naming another gets nothing of it.
        assert_eq!(ids(&get(&app, OPERATOR, &format!("{DR}?filter[account_id]={b}")).await), ["b-1"]);
        let theirs = get(&app, &key_a, &format!("{DR}?filter[account_id]={b}")).await;
        assert_eq!((ids(&theirs), &theirs["meta"]["total_results"]), (vec![], &json!(0)));
        assert_eq!(ids(&get(&app, &key_a, &format!("{DR}?filter[account_id]={a}")).await), ["a-2", "a-1"]);
        // Filtering by the other account's connection finds nothing either.
        assert_eq!(ids(&get(&app, &key_a, &format!("{DR}?filter[connection_id]=conn-2")).await), Vec::<&str>::new());

        for uri in [DR.to_owned(), format!("{DR}/a-1")] {
            let (st, body) = call(&app, "GET", &uri, None, None).await;
            assert_eq!((st, codes(&body)), (StatusCode::UNAUTHORIZED, vec!["10009"]), "{uri}");
            let (st, _) = call(&app, "GET", &uri, Some("KEYwrong"), None).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
        }
    }
}

#[tokio::test]
async fn filters() {
    for (app, store) in apps_and_stores().await {
        let ((a, key_a), (b, _)) = tenants(&app).await;
        insert(
            &store,
            &[
                record("r1", &a, "conn-1", 200, T0),
                record("r2", &a, "conn-1", 486, T0 + 60_000),
                record("r3", &a, "conn-2", 200, T0 + 120_000),
                refused("r4", &a, T0 + 180_000),
                record("r5", &a, "conn-2", 503, T0 + DAY),
                // The other account's records match the same filters and never show.
                record("x1", &b, "conn-1", 200, T0),
                record("x2", &b, "conn-2", 486, T0 + 60_000),
            ],
        )
        .await;
        let list = |q: &str| {
            let (app, key) = (app.clone(), key_a.clone());
            let uri = format!("{DR}?{q}");
            async move {
                let v = get(&app, &key, &uri).await;
                let got: Vec<String> = ids(&v).into_iter().map(str::to_owned).collect();
                assert_eq!(v["meta"]["total_results"], json!(got.len()), "{uri}");
                got
            }
        };
        assert_eq!(list("filter[record_type]=sip-trunking").await, ["r5", "r4", "r3", "r2", "r1"]);
        assert_eq!(list("filter[connection_id]=conn-1").await, ["r2", "r1"]);
        assert_eq!(list("filter[connection_id]=conn-9").await, ["r4"]);
        assert_eq!(list("filter[connection_id]=nope").await, Vec::<String>::new());
        assert_eq!(list("filter[sip_response_code]=200").await, ["r3", "r1"]);
        assert_eq!(list("filter[sip_response_code]=403").await, ["r4"]);
        assert_eq!(list("filter[sip_response_code]=404").await, Vec::<String>::new());
        assert_eq!(list("filter[sip_response_code]=200&filter[connection_id]=conn-2").await, ["r3"]);
        // Inclusive bounds, any offset, to the millisecond.
        assert_eq!(list("filter[started_at][gte]=2026-01-02T00:01:00Z").await, ["r5", "r4", "r3", "r2"]);
        assert_eq!(list("filter[started_at][gte]=2026-01-02T00:01:00.001Z").await, ["r5", "r4", "r3"]);
        assert_eq!(list("filter[started_at][lte]=2026-01-02T00:02:00Z").await, ["r3", "r2", "r1"]);
        assert_eq!(list("filter[started_at][lte]=2026-01-02T00:01:59.999Z").await, ["r2", "r1"]);
        assert_eq!(
            list(
                "filter[started_at][gte]=2026-01-02T01:01:00%2B01:00&filter[started_at][lte]=2026-01-01T19:02:00-05:00"
            )
            .await,
            ["r3", "r2"]
        );
        assert_eq!(
            list(concat!(
                "filter[started_at][gte]=2026-01-03T00:00:00Z",
                "&filter[sip_response_code]=503&filter[connection_id]=conn-2"
            ))
            .await,
            ["r5"]
        );
        assert_eq!(list("filter[started_at][gte]=2026-01-04T00:00:00Z").await, Vec::<String>::new());
        // Unknown filters are not ours to judge: ignored.
        assert_eq!(list("filter[status]=delivered&sort=-created_at").await.len(), 5);
    }
}

#[tokio::test]
async fn named_date_ranges_are_relative_to_now() {
    for (app, store) in apps_and_stores().await {
        let ((a, key_a), (b, _)) = tenants(&app).await;
        let now = now_ms();
        let midnight = now - now % DAY;
        let minute = 60_000;
        insert(
            &store,
            &[
                record("today", &a, "c", 200, midnight),
                record("yesterday_end", &a, "c", 200, midnight - 1),
                record("yesterday_start", &a, "c", 200, midnight - DAY),
                record("six_days", &a, "c", 200, now - 7 * DAY + minute),
                record("eight_days", &a, "c", 200, now - 7 * DAY - minute),
                record("29_days", &a, "c", 200, now - 30 * DAY + minute),
                record("31_days", &a, "c", 200, now - 30 * DAY - minute),
                record("theirs", &b, "c", 200, midnight),
            ],
        )
        .await;
        let range = |name: &str| {
            let (app, key) = (app.clone(), key_a.clone());
            let uri = format!("{DR}?filter[date_range]={name}");
            async move {
                get(&app, &key, &uri).await["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(range("today").await, ["today"]);
        assert_eq!(range("yesterday").await, ["yesterday_end", "yesterday_start"]);
        assert_eq!(range("last_7_days").await, ["today", "yesterday_end", "yesterday_start", "six_days"]);
        assert_eq!(
            range("last_30_days").await,
            ["today", "yesterday_end", "yesterday_start", "six_days", "eight_days", "29_days"]
        );
        // With explicit bounds too, a record meets all of them.
        let uri =
            format!("{DR}?filter[date_range]=yesterday&filter[started_at][lte]={}", cdr_timestamp(midnight - DAY));
        assert_eq!(ids(&get(&app, &key_a, &uri).await), ["yesterday_start"]);
    }
}

#[tokio::test]
async fn pages() {
    for (app, store) in apps_and_stores().await {
        let ((a, key_a), (b, _)) = tenants(&app).await;
        let mut records: Vec<CallDetailRecord> =
            (0..45).map(|i| record(&format!("r{i:02}"), &a, "c", 200, T0 + i * 1000)).collect();
        records.extend((0..5).map(|i| record(&format!("x{i}"), &b, "c", 200, T0 + i * 1000)));
        insert(&store, &records).await;
        let newest_first: Vec<String> = (0..45).rev().map(|i| format!("r{i:02}")).collect();

        let mut seen = Vec::new();
        for number in 1..=3 {
            let page = get(&app, &key_a, &format!("{DR}?page[number]={number}&page[size]=20")).await;
            assert_eq!(
                page["meta"],
                json!({"page_number": number, "page_size": 20, "total_pages": 3, "total_results": 45})
            );
            seen.extend(ids(&page).into_iter().map(str::to_owned));
        }
        assert_eq!(seen, newest_first, "pages walk the list once, newest first");
        let first = get(&app, &key_a, DR).await;
        assert_eq!((ids(&first).len(), &first["meta"]["page_size"]), (20, &json!(20)), "default size");
        let big = get(&app, &key_a, &format!("{DR}?page[size]=250")).await;
        assert_eq!((ids(&big).len(), &big["meta"]["total_pages"]), (45, &json!(1)));
        let past = get(&app, &key_a, &format!("{DR}?page[number]=9&page[size]=10")).await;
        assert_eq!(ids(&past), Vec::<&str>::new());
        assert_eq!(past["meta"], json!({"page_number": 9, "page_size": 10, "total_pages": 5, "total_results": 45}));
        let one = get(&app, &key_a, &format!("{DR}?page[number]=2&page[size]=1")).await;
        assert_eq!(ids(&one), ["r43"]);
        let huge = get(&app, &key_a, &format!("{DR}?page[number]=4611686018427387903&page[size]=250")).await;
        assert_eq!(ids(&huge), Vec::<&str>::new());
        let everyone = get(&app, OPERATOR, &format!("{DR}?page[size]=1")).await;
        assert_eq!(everyone["meta"]["total_results"], 50);
        let none = get(&app, OPERATOR, &format!("{DR}?filter[connection_id]=nope")).await;
        assert_eq!(none["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 0, "total_results": 0}));
    }
}

#[tokio::test]
async fn bad_filter_values_are_422_with_pointers() {
    for (app, store) in apps_and_stores().await {
        let ((a, key_a), _) = tenants(&app).await;
        insert(&store, &[record("r1", &a, "c", 200, T0)]).await;
        for (query, pointer, code) in [
            ("filter[record_type]=messaging", "/filter/record_type", "10032"),
            ("filter[record_type]=", "/filter/record_type", "10032"),
            ("filter[date_range]=last_week", "/filter/date_range", "10032"),
            ("filter[date_range]=", "/filter/date_range", "10032"),
            ("filter[started_at][gte]=yesterday", "/filter/started_at/gte", "10015"),
            ("filter[started_at][gte]=2026-01-02", "/filter/started_at/gte", "10015"),
            // An unencoded `+` is a space in a query string.
            ("filter[started_at][lte]=2026-01-02T03:04:05+01:00", "/filter/started_at/lte", "10015"),
            ("filter[started_at][lte]=2026-02-30T00:00:00Z", "/filter/started_at/lte", "10015"),
            ("filter[sip_response_code]=abc", "/filter/sip_response_code", "10015"),
            ("filter[sip_response_code]=99", "/filter/sip_response_code", "10015"),
            ("filter[sip_response_code]=700", "/filter/sip_response_code", "10015"),
            ("filter[sip_response_code]=-200", "/filter/sip_response_code", "10015"),
            ("page[number]=0", "/page/number", "10015"),
            ("page[number]=x", "/page/number", "10015"),
            ("page[size]=0", "/page/size", "10015"),
            ("page[size]=251", "/page/size", "10015"),
        ] {
            let (st, body) = call(&app, "GET", &format!("{DR}?{query}"), Some(&key_a), None).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
            assert_eq!((pointers(&body), codes(&body)), (vec![pointer], vec![code]), "{query}");
            let e = &body["errors"][0];
            assert!(e["title"].is_string() && e["detail"].is_string() && e["meta"]["url"].is_string(), "{e}");
        }
        // Every fault at once, the same for the operator.
        let query = "filter[record_type]=cdr&filter[started_at][gte]=x&filter[started_at][lte]=y\
                     &filter[sip_response_code]=1&page[size]=0";
        for key in [key_a.as_str(), OPERATOR] {
            let (st, body) = call(&app, "GET", &format!("{DR}?{query}"), Some(key), None).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                pointers(&body),
                [
                    "/filter/record_type",
                    "/filter/started_at/gte",
                    "/filter/started_at/lte",
                    "/filter/sip_response_code",
                    "/page/size"
                ]
            );
        }
    }
}
