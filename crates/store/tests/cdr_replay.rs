//! `Store::insert_new_cdrs` on both backends: records already stored (a spool replayed after a
//! crash that came between a batch's commit and the spool's removal) are skipped, not stored twice
//! and not a conflict; the new ones of the same call are stored, and the count says how many.

mod support;

use store::{CallDetailRecord, CdrFilter, Direction, HangupSource, RawJson, Repository, cdr_timestamp};

/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;

fn record(id: &str, ms: i64, to: &str) -> CallDetailRecord {
    CallDetailRecord {
        id: id.into(),
        account_id: "acct-a".into(),
        connection_id: "conn-1".into(),
        outbound_voice_profile_id: None,
        direction: Direction::Outbound,
        a_leg_call_id: format!("a-{id}@192.0.2.10"),
        b_leg_call_id: None,
        from_received: "+12125551234".into(),
        to_received: to.into(),
        from_sent: None,
        to_sent: None,
        started_at: cdr_timestamp(T0 + ms),
        answered_at: None,
        ended_at: cdr_timestamp(T0 + ms + 20),
        call_sec: 0,
        billed_sec: 0,
        rate: None,
        cost: None,
        sip_response_code: 486,
        reason_code: None,
        hangup_source: HangupSource::Callee,
        route_attempts: Vec::new(),
        trace: RawJson::from_text("[]".into()).unwrap(),
    }
}

#[tokio::test]
async fn stored_records_are_skipped_not_doubled() {
    for s in support::backends().await {
        let b = s.backend();
        let first: Vec<_> = (0..3).map(|i| record(&format!("r{i}"), i, "+12125550000")).collect();
        assert_eq!(s.insert_new_cdrs(&first).await, Ok(3), "{b:?}");

        // The same three again (one of them altered: the stored one stays), two new, and one of
        // the new ones twice in the same call: 700 records, two statements.
        let mut again = first.clone();
        again[1].to_received = "+19999999999".into();
        again.push(record("r3", 3, "+12125550000"));
        again.push(record("r3", 3, "+12125550000"));
        again.extend((4..699).map(|i| record(&format!("r{i}"), i, "+12125550000")));
        assert_eq!(again.len(), 700);
        assert_eq!(s.insert_new_cdrs(&again).await, Ok(696), "{b:?}");

        let (_, total) = s.list_cdrs(&CdrFilter::default(), 0, 1).await.unwrap();
        assert_eq!(total, 699, "{b:?}: every id once");
        assert_eq!(s.get_cdr("r1").await.unwrap().unwrap().to_received, "+12125550000", "{b:?}");

        // Everything stored already: nothing added, no error.
        assert_eq!(s.insert_new_cdrs(&again).await, Ok(0), "{b:?}");
        assert_eq!(s.insert_new_cdrs(&[]).await, Ok(0), "{b:?}");

        // The plain insert still refuses a taken id.
        assert!(s.insert_cdrs(&first[..1]).await.is_err(), "{b:?}");

        // A malformed time is still refused, and nothing of its call is stored.
        let mut bad = vec![record("r900", 900, "+1"), record("r901", 901, "+1")];
        bad[1].ended_at = "2026-01-02T00:00:00Z".into();
        assert!(s.insert_new_cdrs(&bad).await.is_err(), "{b:?}");
        assert_eq!(s.get_cdr("r900").await.unwrap(), None, "{b:?}");
    }
}

/// The records writer's inserts (`insert_new_cdrs`) go through the backend's own driver, the
/// API's (`insert_cdrs`) through sqlx's `Any`: what is stored reads back the same.
#[tokio::test]
async fn the_same_records_through_either_driver() {
    for s in support::backends().await {
        let b = s.backend();
        for set in [true, false] {
            let (any, own) = (support::record(&format!("any-{set}"), set), support::record(&format!("own-{set}"), set));
            s.insert_cdrs(std::slice::from_ref(&any)).await.unwrap();
            assert_eq!(s.insert_new_cdrs(std::slice::from_ref(&own)).await, Ok(1), "{b:?}");
            let any_back = s.get_cdr(&any.id).await.unwrap().expect("stored through Any");
            let own_back = s.get_cdr(&own.id).await.unwrap().expect("stored through the backend's driver");
            assert_eq!(own_back, own, "{b:?}");
            assert_eq!(CallDetailRecord { id: own.id.clone(), ..any_back }, own_back, "{b:?}");
        }
    }
}

/// On SQLite a skipping insert is `INSERT OR IGNORE` (no statement journal): a record the table
/// drops silently for another reason than being stored already must fail its batch, never go
/// missing. A trigger drops one here, as a constraint would under `OR IGNORE`.
#[tokio::test]
async fn a_record_dropped_for_another_reason_fails_its_batch_on_sqlite() {
    let url = support::sqlite_url();
    let store = store::Store::open(&url).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER drop_one BEFORE INSERT ON call_detail_records \
         WHEN NEW.to_received = 'dropped' BEGIN SELECT RAISE(IGNORE); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let kept = record("kept", 0, "2125556789");
    let err = store.insert_new_cdrs(&[kept.clone(), record("dropped", 1, "dropped")]).await.unwrap_err();
    assert!(err.to_string().contains("1 of 2 call detail records neither stored nor held"), "{err}");
    // The batch's transaction rolled back: the kept one was not stored with it.
    assert_eq!(store.insert_new_cdrs(std::slice::from_ref(&kept)).await.unwrap(), 1);
    // Held already, skipped, counted, and no error.
    assert_eq!(store.insert_new_cdrs(&[kept]).await.unwrap(), 0);
}
