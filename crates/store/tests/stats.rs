//! The store times the node's own database work where it does it, on both backends: each call
//! of a timed function is one observation under its operation, shared by every clone of the
//! store (the `/metrics` handler holds one, the writers others).

mod support;

use store::{Billing, Operation, Store};

/// 2026-01-02T00:00:00.000Z.
const T0: i64 = 1_767_312_000_000;

fn counts(s: &Store) -> Vec<(&'static str, u64)> {
    Operation::ALL.iter().map(|op| (op.as_str(), s.stats().latency(*op).count())).collect()
}

#[tokio::test]
async fn each_timed_operation_is_observed_once_per_call_whatever_the_clone() {
    for s in support::backends().await {
        let other = s.clone();
        assert!(counts(&s).iter().all(|(_, n)| *n == 0), "{:?}", counts(&s));
        s.load_snapshot(1).await.unwrap();
        s.upsert_registrations(&[support::binding("conn-stats", "sip:stats@192.0.2.10:5060", T0 + 3_600_000)])
            .await
            .unwrap();
        s.remove_registrations("conn-stats", &["sip:stats@192.0.2.10:5060"], None).await.unwrap();
        s.expire_registrations(T0).await.unwrap();
        s.node_heartbeat("node-stats", T0, T0).await.unwrap();
        s.write_journal(&[]).await.unwrap();
        s.reap_lost_nodes("node-stats", T0, 30_000, &|_, _| Billing { billed_sec: 0, cost: None }).await.unwrap();
        // Nothing to insert: no round trip, nothing observed.
        s.insert_new_cdrs(&[]).await.unwrap();
        assert_eq!(
            counts(&other),
            vec![
                ("snapshot_load", 1),
                ("cdr_insert", 0),
                ("registration_write", 2),
                ("registration_expire", 1),
                ("journal_write", 1),
                ("node_heartbeat", 1),
                ("journal_reap", 1),
            ],
            "{:?}",
            s.backend()
        );
        let l = other.stats().latency(Operation::RegistrationWrite);
        assert!(l.sum_seconds > 0.0, "two writes took some time: {l:?}");
    }
}
