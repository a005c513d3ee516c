//! Call detail records on both backends: every field survives the round trip, a batch is stored
//! whole or not at all, 10,000 records insert in one call (timed, printed), and lists filter by
//! account, connection, SIP status and start time, newest first, in pages.

mod support;

use std::time::Instant;

use serde_json::json;
use store::{
    AttemptOutcome, CallDetailRecord, CdrFilter, Direction, HangupSource, RawJson, Repository, RouteAttempt,
    StoreError, cdr_timestamp, new_cdr_id,
};

/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;

/// A decision trace of the shape `trunking::trace::Trace` serializes to.
fn trace(n: usize) -> RawJson {
    let mut steps = vec![
        json!({"rule": "identify.source", "verdict": "note", "facts": {"ip": "192.0.2.10", "matches": 1}}),
        json!({"rule": "identify.digest", "verdict": "pass", "facts": {"user": "acme-pbx", "algorithm": "SHA-256"}}),
        json!({"rule": "outbound.rate", "verdict": "note", "facts": {"prefix": "1212", "rate": "0.0100"}}),
        json!({"rule": "outbound.channels", "verdict": "pass", "facts": {"account": 3, "limit": null}}),
    ];
    steps.extend((0..n).map(|i| json!({"rule": "outbound.check", "verdict": "pass", "facts": {"step": i}})));
    RawJson::of(&steps).unwrap()
}

/// A record with every field set, started `ms` after [`T0`].
fn full(id: &str, ms: i64) -> CallDetailRecord {
    let at = |d: i64| cdr_timestamp(T0 + ms + d);
    CallDetailRecord {
        id: id.into(),
        account_id: "acct-a".into(),
        connection_id: "conn-1".into(),
        outbound_voice_profile_id: Some("ovp-1".into()),
        direction: Direction::Outbound,
        a_leg_call_id: format!("a-{id}@192.0.2.10"),
        b_leg_call_id: Some(format!("b-{id}@opentrunk")),
        from_received: "+12125551234".into(),
        to_received: "2125556789".into(),
        from_sent: Some("+12125551234".into()),
        to_sent: Some("+12125556789".into()),
        started_at: at(0),
        answered_at: Some(at(4_250)),
        ended_at: at(65_250),
        call_sec: 61,
        billed_sec: 120,
        rate: Some("0.0100".into()),
        cost: Some("0.0200".into()),
        sip_response_code: 200,
        reason_code: None,
        hangup_source: HangupSource::Caller,
        route_attempts: vec![
            RouteAttempt {
                carrier_id: "carrier-a".into(),
                gateway: "sip.carrier-a.example".into(),
                port: 5060,
                transport: "UDP".into(),
                target: Some("203.0.113.7:5060".into()),
                outcome: AttemptOutcome::Response { sip_response_code: 503 },
                started_at: at(10),
                ended_at: at(900),
            },
            RouteAttempt {
                carrier_id: "carrier-a".into(),
                gateway: "2001:db8::7".into(),
                port: 5061,
                transport: "TLS".into(),
                target: None,
                outcome: AttemptOutcome::TransportError,
                started_at: at(900),
                ended_at: at(950),
            },
            RouteAttempt {
                carrier_id: "carrier-b".into(),
                gateway: "gw.carrier-b.example".into(),
                port: 5060,
                transport: "TCP".into(),
                target: Some("198.51.100.9:5060".into()),
                outcome: AttemptOutcome::Timeout,
                started_at: at(950),
                ended_at: at(3_950),
            },
            RouteAttempt {
                carrier_id: "carrier-c".into(),
                gateway: "gw.carrier-c.example".into(),
                port: 5080,
                transport: "UDP".into(),
                target: Some("198.51.100.20:5080".into()),
                outcome: AttemptOutcome::Response { sip_response_code: 200 },
                started_at: at(3_950),
                ended_at: at(4_250),
            },
        ],
        trace: trace(8),
    }
}

/// A call refused before routing: every optional field empty.
fn refused(id: &str, ms: i64) -> CallDetailRecord {
    CallDetailRecord {
        id: id.into(),
        account_id: "acct-b".into(),
        connection_id: "conn-9".into(),
        outbound_voice_profile_id: None,
        direction: Direction::Inbound,
        a_leg_call_id: format!("{id}@carrier"),
        b_leg_call_id: None,
        from_received: "anonymous".into(),
        to_received: "+442071234567".into(),
        from_sent: None,
        to_sent: None,
        started_at: cdr_timestamp(T0 + ms),
        answered_at: None,
        ended_at: cdr_timestamp(T0 + ms + 3),
        call_sec: 0,
        billed_sec: 0,
        rate: None,
        cost: None,
        sip_response_code: 403,
        reason_code: Some("D1".into()),
        hangup_source: HangupSource::System,
        route_attempts: Vec::new(),
        trace: RawJson::of(&json!([])).unwrap(),
    }
}

fn ids(records: &[CallDetailRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn round_trip_every_field() {
    for s in support::backends().await {
        let b = s.backend();
        let (a, r) = (full("r-full", 0), refused("r-refused", 1));
        s.insert_cdrs(&[a.clone(), r.clone()]).await.unwrap();
        assert_eq!(s.get_cdr("r-full").await.unwrap().as_ref(), Some(&a), "{b:?}");
        assert_eq!(s.get_cdr("r-refused").await.unwrap().as_ref(), Some(&r), "{b:?}");
        assert_eq!(s.get_cdr("nope").await.unwrap(), None);
        let (all, total) = s.list_cdrs(&CdrFilter::default(), 0, 10).await.unwrap();
        assert_eq!((all, total), (vec![r, a], 2), "{b:?}: newest first");

        // The trace comes back as the same JSON text, whatever it holds.
        let odd = r#"{"steps": [{"rule": "x", "facts": {"n": 1.5e3, "s": "é\"\\\u00e9", "nested": [null, true]}}]}"#;
        let mut c = full(&new_cdr_id(T0), 5);
        c.trace = RawJson::from_text(odd.to_owned()).unwrap();
        s.insert_cdrs(std::slice::from_ref(&c)).await.unwrap();
        assert_eq!(s.get_cdr(&c.id).await.unwrap().unwrap().trace.get(), odd);
        assert!(s.insert_cdrs(&[]).await.is_ok());
    }
}

#[tokio::test]
async fn a_batch_is_stored_whole_or_not_at_all() {
    for s in support::backends().await {
        let b = s.backend();
        s.insert_cdrs(&[full("taken", 0)]).await.unwrap();
        // 1,200 records (three statements); the last one's id is taken.
        let mut batch: Vec<_> = (0..1200).map(|i| full(&format!("n{i}"), i)).collect();
        batch[1199].id = "taken".into();
        assert_eq!(s.insert_cdrs(&batch).await, Err(StoreError::Conflict { scope: "id".into() }), "{b:?}");
        assert_eq!(s.list_cdrs(&CdrFilter::default(), 0, 1).await.unwrap().1, 1, "{b:?}: nothing of the batch");

        // A time in another shape would sort wrongly: refused before anything is written.
        for bad in ["2026-01-02T00:00:00Z", "2026-01-02T01:00:00.000+01:00", ""] {
            let mut r = full("x", 0);
            r.answered_at = Some(bad.into());
            let e = s.insert_cdrs(&[full("y", 0), r]).await.unwrap_err();
            assert!(matches!(&e, StoreError::Failed(m) if m.contains("answered_at")), "{e:?}");
        }
        assert_eq!(s.list_cdrs(&CdrFilter::default(), 0, 1).await.unwrap().1, 1, "{b:?}");
    }
}

/// CPU time this process has used, user and system, in milliseconds (Linux, whose clock tick
/// is 10 ms): wall time alone says little on a busy machine. With SQLite the whole insert runs
/// in this process; PostgreSQL's share runs in the server.
fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}

#[tokio::test]
async fn ten_thousand_in_one_call() {
    const N: usize = 10_000;
    for s in support::backends().await {
        let b = s.backend();
        let records: Vec<CallDetailRecord> = (0..N)
            .map(|i| {
                let ms = i64::try_from(i).unwrap() * 1000;
                let mut r = full(&new_cdr_id(T0 + ms), ms);
                r.account_id = format!("acct-{}", i % 50);
                r.connection_id = format!("conn-{}", i % 500);
                r.sip_response_code = [200, 200, 200, 486, 503][i % 5];
                r
            })
            .collect();
        let bytes: usize = records.iter().map(|r| serde_json::to_string(r).unwrap().len()).sum();
        let (started, cpu) = (Instant::now(), cpu_ms());
        s.insert_cdrs(&records).await.unwrap();
        let (took, cpu) = (started.elapsed(), cpu_ms().zip(cpu).map(|(after, before)| after - before));
        println!(
            "{b:?}: {N} call detail records ({} KiB of JSON) inserted in {:.0} ms ({:.1} us each); CPU of this \
             process meanwhile: {} ms",
            bytes / 1024,
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / N as f64,
            cpu.map_or("?".into(), |c| c.to_string())
        );

        let started = Instant::now();
        let (page, total) = s.list_cdrs(&CdrFilter::default(), 0, 20).await.unwrap();
        let all_first = started.elapsed();
        assert_eq!(total, N as u64);
        assert_eq!(page[0], records[N - 1]);
        let filter = CdrFilter { account_id: Some("acct-7".into()), ..CdrFilter::default() };
        let started = Instant::now();
        let (page, total) = s.list_cdrs(&filter, 0, 20).await.unwrap();
        let account_first = started.elapsed();
        assert_eq!((total, page.len()), (200, 20));
        assert_eq!(page[0], records[N - 50 + 7]);
        println!(
            "{b:?}: first page of {N}: every account {:.1} ms, one account {:.1} ms",
            all_first.as_secs_f64() * 1e3,
            account_first.as_secs_f64() * 1e3
        );
    }
}

#[tokio::test]
async fn filters_order_and_pages() {
    for s in support::backends().await {
        let b = s.backend();
        // (id, account, connection, status, seconds after T0)
        let rows = [
            ("r1", "acct-a", "conn-1", 200, 0),
            ("r2", "acct-a", "conn-1", 486, 60),
            ("r3", "acct-a", "conn-2", 200, 120),
            ("r4", "acct-b", "conn-9", 200, 120),
            ("r5", "acct-a", "conn-2", 503, 180),
            ("r6", "acct-b", "conn-9", 403, 86_400),
            // Same start as r3 and r4: ties go by id, descending.
            ("r0", "acct-a", "conn-1", 200, 120),
        ];
        let records: Vec<CallDetailRecord> = rows
            .iter()
            .map(|(id, account, connection, status, secs)| {
                let mut r = full(id, secs * 1000);
                r.account_id = (*account).into();
                r.connection_id = (*connection).into();
                r.sip_response_code = *status;
                r
            })
            .collect();
        s.insert_cdrs(&records).await.unwrap();

        let list = |f: CdrFilter, offset: u64, limit: u64| {
            let s = s.clone();
            async move {
                let (records, total) = s.list_cdrs(&f, offset, limit).await.unwrap();
                (records.into_iter().map(|r| r.id).collect::<Vec<_>>(), total)
            }
        };
        let f = CdrFilter::default;
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(list(f(), 0, 100).await, (owned(&["r6", "r5", "r4", "r3", "r0", "r2", "r1"]), 7), "{b:?}");
        assert_eq!(list(f(), 2, 3).await, (owned(&["r4", "r3", "r0"]), 7), "{b:?}: a page");
        assert_eq!(list(f(), 7, 3).await, (vec![], 7), "past the end");
        assert_eq!(list(f(), u64::MAX, u64::MAX).await, (vec![], 7), "huge values");

        let acct_a = || CdrFilter { account_id: Some("acct-a".into()), ..f() };
        assert_eq!(list(acct_a(), 0, 100).await, (owned(&["r5", "r3", "r0", "r2", "r1"]), 5), "{b:?}");
        assert_eq!(list(CdrFilter { account_id: Some("nobody".into()), ..f() }, 0, 100).await, (vec![], 0));
        assert_eq!(
            list(CdrFilter { connection_id: Some("conn-1".into()), ..f() }, 0, 100).await,
            (owned(&["r0", "r2", "r1"]), 3)
        );
        assert_eq!(
            list(CdrFilter { connection_id: Some("conn-9".into()), ..acct_a() }, 0, 100).await,
            (vec![], 0),
            "another account's connection"
        );
        assert_eq!(
            list(CdrFilter { sip_response_code: Some(200), ..f() }, 0, 100).await,
            (owned(&["r4", "r3", "r0", "r1"]), 4)
        );
        assert_eq!(
            list(CdrFilter { sip_response_code: Some(200), ..acct_a() }, 1, 1).await,
            (owned(&["r0"]), 3),
            "{b:?}"
        );
        // Start-time bounds are inclusive, to the millisecond.
        let at = |secs: i64| Some(cdr_timestamp(T0 + secs * 1000));
        assert_eq!(
            list(CdrFilter { started_at_gte: at(60), started_at_lte: at(120), ..acct_a() }, 0, 100).await,
            (owned(&["r3", "r0", "r2"]), 3)
        );
        assert_eq!(
            list(CdrFilter { started_at_gte: Some(cdr_timestamp(T0 + 60_001)), ..acct_a() }, 0, 100).await,
            (owned(&["r5", "r3", "r0"]), 3)
        );
        assert_eq!(
            list(CdrFilter { started_at_lte: Some(cdr_timestamp(T0 + 119_999)), ..f() }, 0, 100).await,
            (owned(&["r2", "r1"]), 2)
        );
        assert_eq!(list(CdrFilter { started_at_gte: at(86_400), ..f() }, 0, 100).await, (owned(&["r6"]), 1));
        assert_eq!(list(CdrFilter { started_at_gte: at(200), started_at_lte: at(100), ..f() }, 0, 100).await.1, 0);
        let all = CdrFilter {
            account_id: Some("acct-a".into()),
            connection_id: Some("conn-2".into()),
            sip_response_code: Some(503),
            started_at_gte: at(180),
            started_at_lte: at(180),
        };
        assert_eq!(list(all, 0, 100).await, (owned(&["r5"]), 1), "{b:?}: every filter at once");
        // A bound in another shape matches nothing (it is never compared as text).
        assert_eq!(list(CdrFilter { started_at_gte: Some("2026".into()), ..f() }, 0, 100).await, (vec![], 0));
        let (got, _) = s.list_cdrs(&CdrFilter { connection_id: Some("conn-2".into()), ..f() }, 0, 1).await.unwrap();
        assert_eq!(ids(&got), ["r5"]);
        assert_eq!(got[0], records[4], "{b:?}: listed records are whole");
    }
}
