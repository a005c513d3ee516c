//! The in-memory configuration snapshot follows changes: at once on the node that made them,
//! and within a second on every other node sharing PostgreSQL.

use std::time::{Duration, Instant};

use store::{Repository, Resource, Store};

mod support;

fn doc(id: &str) -> Resource {
    Resource {
        kind: "ip_connection".into(),
        id: id.into(),
        account_id: "a".into(),
        name: format!("conn {id}"),
        body: "{}".into(),
        created_at: "t".into(),
        updated_at: "t".into(),
    }
}

/// Waits until `pred` holds for the current snapshot; returns how long it took.
async fn until(h: &store::SnapshotHandle, limit: Duration, pred: impl Fn(&store::Snapshot) -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pred(&h.current()) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("snapshot did not follow within {limit:?}");
}

async fn follows_its_own_changes(s: Store) {
    s.insert_resource(&doc("1"), &[]).await.unwrap();
    let h = s.keep_snapshot().await.unwrap();
    assert!(h.current().get("ip_connection", "1").is_some(), "loaded at start");
    s.insert_resource(&doc("2"), &[]).await.unwrap();
    until(&h, Duration::from_secs(1), |snap| snap.get("ip_connection", "2").is_some()).await;
    s.delete_resource("ip_connection", "1").await.unwrap();
    until(&h, Duration::from_secs(1), |snap| snap.get("ip_connection", "1").is_none()).await;
    assert_eq!(h.current().of_kind("ip_connection").len(), 1);
    assert!(h.current().generation > 1);
}

#[tokio::test]
async fn a_node_sees_its_own_changes_at_once() {
    for s in support::backends().await {
        follows_its_own_changes(s).await;
    }
}

#[tokio::test]
async fn every_node_sees_a_change_within_a_second() {
    let Some((a, b)) = support::postgres_nodes().await else { return };
    let hb = b.keep_snapshot().await.unwrap();
    // Give node b's LISTEN a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.insert_resource(&doc("from-a"), &[]).await.unwrap();
    let took = until(&hb, Duration::from_secs(1), |snap| snap.get("ip_connection", "from-a").is_some()).await;
    println!("node b saw node a's change after {took:?}");
    a.delete_resource("ip_connection", "from-a").await.unwrap();
    until(&hb, Duration::from_secs(1), |snap| snap.get("ip_connection", "from-a").is_none()).await;
}

/// A reload that finds the configuration as it was (the periodic one, or a write that changed
/// nothing) is not published: whatever is derived from the snapshot (the call policy, its rate
/// decks) is not rebuilt for nothing. A real change after it still is.
async fn an_unchanged_reload_is_not_published(s: Store) {
    let h = s.keep_snapshot().await.unwrap();
    s.insert_resource(&doc("1"), &[]).await.unwrap();
    until(&h, Duration::from_secs(1), |snap| snap.get("ip_connection", "1").is_some()).await;
    let generation = h.current().generation;
    // A committed write that changes nothing: the snapshot is reloaded, and found the same.
    assert!(!s.delete_account("no-such-account").await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.current().generation, generation, "a reload that changed nothing was published");
    s.insert_resource(&doc("2"), &[]).await.unwrap();
    until(&h, Duration::from_secs(1), |snap| snap.get("ip_connection", "2").is_some()).await;
    assert_eq!(h.current().generation, generation + 1);
}

#[tokio::test]
async fn a_reload_that_changes_nothing_is_not_published() {
    for s in support::backends().await {
        an_unchanged_reload_is_not_published(s).await;
    }
}
