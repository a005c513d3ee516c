//! The open-call journal on both backends: calls journaled at start and answer leave no row once
//! their record is stored; a lost node's open calls become records ended at its last heartbeat,
//! exactly once even with two reapers at once; a live node's calls are never reaped.

mod support;

use store::{
    Billing, CallDetailRecord, CdrFilter, Direction, HangupSource, JournalWrite, OpenCall, RawJson, Repository, Store,
    cdr_timestamp, new_cdr_id,
};

/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;
/// The node-loss age the tests use: 30 s, the default.
const LOST_AFTER: i64 = 30_000;

fn record(id: &str, started_ms: i64) -> CallDetailRecord {
    CallDetailRecord {
        id: id.into(),
        account_id: "acct-a".into(),
        connection_id: "conn-1".into(),
        outbound_voice_profile_id: Some("ovp-1".into()),
        direction: Direction::Outbound,
        a_leg_call_id: format!("a-{id}@192.0.2.10"),
        b_leg_call_id: None,
        from_received: "+12125551234".into(),
        to_received: "2125556789".into(),
        from_sent: None,
        to_sent: None,
        started_at: cdr_timestamp(started_ms),
        answered_at: None,
        ended_at: cdr_timestamp(started_ms),
        call_sec: 0,
        billed_sec: 0,
        rate: Some("0.0100".into()),
        cost: None,
        sip_response_code: 100,
        reason_code: None,
        hangup_source: HangupSource::System,
        route_attempts: Vec::new(),
        trace: RawJson::from_text(r#"[{"rule":"outbound.rate","verdict":"note","facts":{}}]"#.into()).unwrap(),
    }
}

fn open(node: &str, id: &str, started_ms: i64) -> JournalWrite {
    JournalWrite::Open(Box::new(OpenCall {
        node_id: node.into(),
        record: record(id, started_ms),
        billing_increment: Some("6/6".into()),
        answered_at_ms: None,
        updated_at_ms: started_ms,
    }))
}

fn answered(id: &str, at_ms: i64) -> JournalWrite {
    JournalWrite::Answered { call_id: id.into(), answered_at_ms: at_ms, updated_at_ms: at_ms }
}

/// Whole seconds, a cent each: enough to see the reaper bill the answered time it was given
/// (the product's increments are the caller's rule, tested where it lives).
fn per_second(call: &OpenCall, call_ms: u64) -> Billing {
    assert_eq!(call.billing_increment.as_deref(), Some("6/6"));
    let s = call_ms.div_ceil(1000);
    Billing { billed_sec: s as u32, cost: Some(format!("{}.{:02}", s / 100, s % 100)) }
}

async fn all_records(s: &Store) -> Vec<CallDetailRecord> {
    let (mut all, total) = s.list_cdrs(&CdrFilter::default(), 0, 100_000).await.unwrap();
    assert_eq!(all.len() as u64, total);
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all
}

fn open_ids(calls: &[OpenCall]) -> Vec<&str> {
    calls.iter().map(|c| c.record.id.as_str()).collect()
}

#[tokio::test]
async fn a_closed_call_leaves_no_journal_row() {
    for s in support::backends().await {
        let b = s.backend();
        s.node_heartbeat("node-a", T0, T0).await.unwrap();
        s.write_journal(&[open("node-a", "c1", T0), open("node-a", "c2", T0 + 10), open("node-a", "c3", T0 + 20)])
            .await
            .unwrap();
        // The answer of a call journaled in an earlier batch, and one of a call opened in the
        // same batch: both land.
        s.write_journal(&[answered("c1", T0 + 2_000), open("node-a", "c4", T0 + 30), answered("c4", T0 + 2_500)])
            .await
            .unwrap();
        // A later answer does not move the first.
        s.write_journal(&[answered("c1", T0 + 9_000)]).await.unwrap();
        let calls = s.open_calls().await.unwrap();
        assert_eq!(open_ids(&calls), ["c1", "c2", "c3", "c4"], "{b:?}");
        assert_eq!(calls[0].answered_at_ms, Some(T0 + 2_000), "{b:?}");
        assert_eq!(calls[3].answered_at_ms, Some(T0 + 2_500), "{b:?}");
        assert_eq!(calls[1].answered_at_ms, None, "{b:?}");
        assert_eq!(calls[1].record, record("c2", T0 + 10), "{b:?}: the record as journaled");
        assert_eq!(calls[1].billing_increment.as_deref(), Some("6/6"), "{b:?}");

        // Opening a journaled call again keeps the first.
        let mut again = open("node-b", "c2", T0 + 99);
        if let JournalWrite::Open(c) = &mut again {
            c.record.to_received = "other".into();
        }
        s.write_journal(&[again]).await.unwrap();
        let calls = s.open_calls().await.unwrap();
        assert_eq!((calls[1].node_id.as_str(), calls[1].record.to_received.as_str()), ("node-a", "2125556789"));

        // The node stores two calls' records: their rows go in that transaction.
        let mut ended = record("c1", T0);
        ended.ended_at = cdr_timestamp(T0 + 60_000);
        assert_eq!(s.insert_new_cdrs(&[ended, record("c3", T0 + 20)]).await, Ok(2), "{b:?}");
        assert_eq!(open_ids(&s.open_calls().await.unwrap()), ["c2", "c4"], "{b:?}");
        // An answer for a closed call changes nothing.
        s.write_journal(&[answered("c3", T0 + 70_000)]).await.unwrap();
        assert_eq!(open_ids(&s.open_calls().await.unwrap()), ["c2", "c4"], "{b:?}");

        // A node stopping with calls open stays (its calls will be reaped); without, it goes.
        assert_eq!(s.node_stopped("node-a").await, Ok(false), "{b:?}");
        assert_eq!(s.insert_new_cdrs(&[record("c2", T0), record("c4", T0)]).await, Ok(2), "{b:?}");
        assert!(s.open_calls().await.unwrap().is_empty(), "{b:?}");
        assert_eq!(s.node_stopped("node-a").await, Ok(true), "{b:?}");
        assert!(s.nodes().await.unwrap().is_empty(), "{b:?}");

        // A record the store would refuse is refused in the journal too, and nothing lands.
        let mut bad = open("node-a", "c9", T0);
        if let JournalWrite::Open(c) = &mut bad {
            c.record.started_at = "2026-01-02 00:00:00".into();
        }
        assert!(s.write_journal(&[open("node-a", "c8", T0), bad]).await.is_err(), "{b:?}");
        assert!(s.open_calls().await.unwrap().is_empty(), "{b:?}");
    }
}

#[tokio::test]
async fn heartbeats_never_go_back() {
    for s in support::backends().await {
        let b = s.backend();
        s.node_heartbeat("node-a", T0, T0 + 5_000).await.unwrap();
        s.node_heartbeat("node-a", T0, T0 + 3_000).await.unwrap();
        s.node_heartbeat("node-b", T0 + 1, T0 + 4_000).await.unwrap();
        let nodes = s.nodes().await.unwrap();
        assert_eq!(nodes, [("node-a".into(), T0, T0 + 5_000), ("node-b".into(), T0 + 1, T0 + 4_000)], "{b:?}");
    }
}

#[tokio::test]
async fn a_lost_nodes_calls_become_records_a_live_nodes_never() {
    for s in support::backends().await {
        let b = s.backend();
        let now = T0 + 100_000;
        // Live: beat 29.999 s ago. Lost: beat 30.001 s ago. The reaper itself beat long ago
        // (its own calls are never its to reap).
        s.node_heartbeat("live", T0, now - LOST_AFTER + 1).await.unwrap();
        s.node_heartbeat("lost", T0, now - LOST_AFTER - 1).await.unwrap();
        s.node_heartbeat("reaper", T0, T0).await.unwrap();
        s.write_journal(&[
            open("live", "l1", T0),
            answered("l1", T0 + 1_000),
            open("lost", "x1", T0),
            answered("x1", T0 + 10_000),
            open("lost", "x2", T0 + 50_000),
            open("lost", "x3", T0 + 60_000),
            open("reaper", "r1", T0),
        ])
        .await
        .unwrap();
        // The lost node had stored x3's record before it died (its row written back after:
        // the record it wrote wins).
        let mut x3 = record("x3", T0 + 60_000);
        x3.ended_at = cdr_timestamp(T0 + 61_000);
        x3.sip_response_code = 486;
        s.insert_new_cdrs(std::slice::from_ref(&x3)).await.unwrap();
        s.write_journal(&[open("lost", "x3", T0 + 60_000)]).await.unwrap();

        let reaped = s.reap_lost_nodes("reaper", now, LOST_AFTER, &per_second).await.unwrap();
        assert_eq!((reaped.nodes, reaped.records, reaped.already_stored), (vec!["lost".into()], 2, 1), "{b:?}");
        assert_eq!(open_ids(&s.open_calls().await.unwrap()), ["l1", "r1"], "{b:?}");
        let nodes: Vec<String> = s.nodes().await.unwrap().into_iter().map(|n| n.0).collect();
        assert_eq!(nodes, ["live", "reaper"], "{b:?}");

        let heartbeat = cdr_timestamp(now - LOST_AFTER - 1);
        let x1 = s.get_cdr("x1").await.unwrap().expect("x1's record");
        assert_eq!(x1.ended_at, heartbeat, "{b:?}");
        assert_eq!(x1.answered_at, Some(cdr_timestamp(T0 + 10_000)), "{b:?}");
        // Answered at 10 s, lost at 69.999 s.
        assert_eq!((x1.call_sec, x1.billed_sec, x1.cost.as_deref()), (59, 60, Some("0.60")), "{b:?}");
        assert_eq!((x1.sip_response_code, x1.hangup_source), (200, HangupSource::System), "{b:?}");
        let trace: serde_json::Value = serde_json::from_str(x1.trace.get()).unwrap();
        assert_eq!(trace[0]["rule"], "outbound.rate", "{b:?}: the call's own trace first");
        assert_eq!(trace[1]["rule"], store::NODE_LOST_RULE, "{b:?}");
        assert_eq!(trace[1]["facts"]["node_id"], "lost", "{b:?}");
        let x2 = s.get_cdr("x2").await.unwrap().expect("x2's record");
        assert_eq!((x2.answered_at, x2.call_sec, x2.billed_sec, x2.cost), (None, 0, 0, None), "{b:?}");
        assert_eq!(x2.sip_response_code, store::LOST_UNANSWERED_STATUS, "{b:?}");
        assert_eq!(s.get_cdr("x3").await.unwrap(), Some(x3), "{b:?}: the node's own record stays");
        assert_eq!(s.get_cdr("l1").await.unwrap(), None, "{b:?}");

        // Again: nothing more is lost, nothing is made twice.
        let again = s.reap_lost_nodes("reaper", now, LOST_AFTER, &per_second).await.unwrap();
        assert_eq!(again, store::Reaped::default(), "{b:?}");
        assert_eq!(all_records(&s).await.len(), 3, "{b:?}");
    }
}

#[tokio::test]
async fn calls_of_a_node_without_a_row_are_reaped_on_their_own_age() {
    for s in support::backends().await {
        let b = s.backend();
        let now = T0 + 100_000;
        // A node that stopped with calls open, or whose row was reaped while it still wrote.
        s.write_journal(&[open("gone", "old", T0), open("gone", "new", now - 1_000), answered("old", T0 + 5_000)])
            .await
            .unwrap();
        let reaped = s.reap_lost_nodes("reaper", now, LOST_AFTER, &per_second).await.unwrap();
        assert_eq!((reaped.nodes.len(), reaped.records), (0, 1), "{b:?}");
        let old = s.get_cdr("old").await.unwrap().expect("old's record");
        // Ended at its row's last write: the answer.
        assert_eq!((old.ended_at, old.call_sec), (cdr_timestamp(T0 + 5_000), 0), "{b:?}");
        assert_eq!(open_ids(&s.open_calls().await.unwrap()), ["new"], "{b:?}");
    }
}

/// Two stores on one database: two nodes.
async fn two_nodes() -> Vec<(Store, Store)> {
    let path = std::env::temp_dir().join(format!(
        "ot_store_journal_{}_{}.db",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let url = format!("sqlite://{}", path.display());
    let mut v = vec![(Store::open(&url).await.unwrap(), Store::open(&url).await.unwrap())];
    v.extend(support::postgres_nodes().await);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_reapers_at_once_make_each_record_once() {
    const WAVES: usize = 12;
    const CALLS: usize = 150;
    for (a, b) in two_nodes().await {
        let backend = a.backend();
        let now = T0 + 1_000_000;
        a.node_heartbeat("node-a", T0, now).await.unwrap();
        b.node_heartbeat("node-b", T0, now).await.unwrap();
        let (mut made, mut reaped) = ([0u64; 2], [0usize; 2]);
        // In waves: a node dies with its calls open, and both reapers go for it at once.
        for wave in 0..WAVES {
            let node = format!("dead-{wave}");
            a.node_heartbeat(&node, T0, now - LOST_AFTER - 1).await.unwrap();
            let mut writes = Vec::new();
            for c in 0..CALLS {
                let id = new_cdr_id(T0 + (wave * CALLS + c) as i64);
                writes.push(open(&node, &id, T0 + c as i64));
                if c % 2 == 0 {
                    writes.push(answered(&id, T0 + 1_000 + c as i64));
                }
            }
            a.write_journal(&writes).await.unwrap();
            let (ra, rb) = tokio::join!(
                a.reap_lost_nodes("node-a", now, LOST_AFTER, &per_second),
                b.reap_lost_nodes("node-b", now, LOST_AFTER, &per_second)
            );
            for (i, r) in [ra.unwrap(), rb.unwrap()].into_iter().enumerate() {
                made[i] += r.records;
                reaped[i] += r.nodes.len();
                assert_eq!(r.already_stored, 0, "{backend:?}: no call is made twice");
            }
            assert_eq!(reaped[0] + reaped[1], wave + 1, "{backend:?}: each lost node reaped by one reaper");
        }
        println!(
            "{backend:?}: reaper a made {} records of {} nodes, b {} of {}",
            made[0], reaped[0], made[1], reaped[1]
        );
        assert_eq!(made[0] + made[1], (WAVES * CALLS) as u64, "{backend:?}");
        assert_eq!(all_records(&a).await.len(), WAVES * CALLS, "{backend:?}: each call once");
        assert!(a.open_calls().await.unwrap().is_empty(), "{backend:?}");
        let left: Vec<String> = a.nodes().await.unwrap().into_iter().map(|n| n.0).collect();
        assert_eq!(left, ["node-a", "node-b"], "{backend:?}");
    }
}
