//! Registrar bindings on both backends: every field survives the round trip, an upsert replaces
//! the binding of the same key, removal is by key and connection, the expiry sweep takes only
//! what expired, and two nodes on one PostgreSQL database see each other's bindings.

mod support;

use store::{Registration, RegistrationWrite, Repository};
use support::binding;

const T0: i64 = 1_767_312_000_000;

fn full() -> Registration {
    let instance = "\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    Registration {
        binding_key: Registration::key_of("sip:alice@10.0.0.7:5060;ob", Some(instance), Some(2)),
        instance: Some(instance.into()),
        reg_id: Some(2),
        q: Some(700),
        path: vec!["<sip:edge1.example.net;lr>".into(), "<sip:edge2.example.net;lr>".into()],
        cseq: u32::MAX,
        source_ip: "2001:db8::7".into(),
        source_port: 65_535,
        transport: "TLS".into(),
        nat: true,
        user_agent: Some("Z 5.4.12 v2.10.13.2-mod".into()),
        node: Some("node-1".into()),
        updated_at: T0 + 5_000,
        ..binding("conn-1", "sip:alice@10.0.0.7:5060;ob", T0 + 3_600_000)
    }
}

#[tokio::test]
async fn round_trip_every_field() {
    for s in support::backends().await {
        let b = full();
        s.upsert_registrations(std::slice::from_ref(&b)).await.unwrap();
        let minimal = binding("conn-1", "sip:alice@192.0.2.10", T0 + 60_000);
        s.upsert_registrations(std::slice::from_ref(&minimal)).await.unwrap();
        assert_eq!(s.list_registrations("conn-1").await.unwrap(), vec![b.clone(), minimal], "{:?}", s.backend());
        assert_eq!(s.registrations_of_user("userconn-1").await.unwrap().len(), 2);
        assert!(s.list_registrations("conn-2").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn upsert_replaces_by_key_and_removal_is_by_key() {
    for s in support::backends().await {
        let first = binding("conn-1", "sip:alice@192.0.2.10", T0 + 60_000);
        let other = binding("conn-2", "sip:alice@192.0.2.10", T0 + 60_000);
        s.upsert_registrations(&[first.clone(), other.clone()]).await.unwrap();
        // A refresh: same key, new expiry, CSeq and source.
        let refreshed = Registration {
            cseq: 2,
            expires_at: T0 + 120_000,
            updated_at: T0 + 60_000,
            source_port: 40_000,
            ..first.clone()
        };
        s.upsert_registrations(std::slice::from_ref(&refreshed)).await.unwrap();
        assert_eq!(s.list_registrations("conn-1").await.unwrap(), vec![refreshed.clone()]);
        // Removal names the connection: the other connection's binding of the same key stays.
        assert_eq!(s.remove_registrations("conn-1", &[first.binding_key.as_str(), "nothing"], None).await.unwrap(), 1);
        assert!(s.list_registrations("conn-1").await.unwrap().is_empty());
        assert_eq!(s.list_registrations("conn-2").await.unwrap(), vec![other]);
        assert_eq!(s.remove_registrations("conn-1", &[first.binding_key.as_str()], None).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_batch_of_changes_applies_in_order() {
    for s in support::backends().await {
        let a = binding("conn-1", "sip:a@192.0.2.1", T0 + 60_000);
        let b = binding("conn-1", "sip:b@192.0.2.2", T0 + 60_000);
        let c = binding("conn-2", "sip:c@192.0.2.3", T0 + 60_000);
        s.upsert_registrations(std::slice::from_ref(&b)).await.unwrap();
        let remove = |r: &Registration| RegistrationWrite::Remove {
            connection_id: r.connection_id.clone(),
            binding_key: r.binding_key.clone(),
        };
        let writes = [
            RegistrationWrite::Upsert(Box::new(a.clone())),
            remove(&b),
            remove(&c),
            RegistrationWrite::Upsert(Box::new(c.clone())),
        ];
        // b was there; c's removal came before c was written.
        assert_eq!(s.write_registrations(&writes, Some("node-1")).await.unwrap(), 1, "{:?}", s.backend());
        assert_eq!(s.list_registrations("conn-1").await.unwrap(), vec![a.clone()]);
        assert_eq!(s.list_registrations("conn-2").await.unwrap(), vec![c.clone()]);
        assert_eq!(s.write_registrations(&[], None).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn the_sweep_takes_only_what_expired() {
    for s in support::backends().await {
        let soon = binding("conn-1", "sip:a@192.0.2.1", T0 + 10_000);
        let at = binding("conn-1", "sip:b@192.0.2.2", T0 + 20_000);
        let later = binding("conn-1", "sip:c@192.0.2.3", T0 + 20_001);
        s.upsert_registrations(&[soon, at, later.clone()]).await.unwrap();
        assert_eq!(s.expire_registrations(T0 + 20_000).await.unwrap(), 2);
        assert_eq!(s.list_registrations("conn-1").await.unwrap(), vec![later]);
        assert_eq!(s.expire_registrations(T0 + 20_000).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn nodes_share_bindings() {
    let Some((a, b)) = support::postgres_nodes().await else { return };
    let mut notices = b.registration_notices();
    // Notices are database-wide: tests running beside this one (other schemas) send theirs too,
    // so wait for the one expected.
    async fn until(
        notices: &mut tokio::sync::mpsc::Receiver<store::RegistrationNotice>,
        want: store::RegistrationNotice,
    ) {
        let wait = async {
            while let Some(n) = notices.recv().await {
                if n == want {
                    return;
                }
            }
            panic!("notices ended");
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait).await.expect("the notice within 5 s");
    }
    until(&mut notices, store::RegistrationNotice::Resync).await;
    let written = Registration { node: Some("node-a".into()), ..full() };
    a.upsert_registrations(std::slice::from_ref(&written)).await.unwrap();
    assert_eq!(b.list_registrations("conn-1").await.unwrap(), vec![written.clone()]);
    until(
        &mut notices,
        store::RegistrationNotice::Changed { connection_id: "conn-1".into(), node: Some("node-a".into()) },
    )
    .await;
    b.remove_registrations("conn-1", &[full().binding_key.as_str()], Some("node-b")).await.unwrap();
    assert!(a.list_registrations("conn-1").await.unwrap().is_empty());
    until(
        &mut notices,
        store::RegistrationNotice::Changed { connection_id: "conn-1".into(), node: Some("node-b".into()) },
    )
    .await;
}

/// A storm's batch: many bindings in multi-row statements of every shape, a binding changed
/// twice in one batch (the later change wins), a removal between upserts.
#[tokio::test]
async fn a_large_batch_keeps_every_change_in_order() {
    for s in support::backends().await {
        let bindings: Vec<Registration> = (0..85)
            .map(|i| Registration {
                cseq: i,
                user_agent: (i % 2 == 0).then(|| format!("phone {i}")),
                ..binding("conn-1", &format!("sip:u{i}@192.0.2.{}", i % 250), T0 + 60_000 + i64::from(i))
            })
            .collect();
        let refreshed = Registration { cseq: 1_000, expires_at: T0 + 120_000, ..bindings[3].clone() };
        let mut writes: Vec<RegistrationWrite> =
            bindings.iter().map(|b| RegistrationWrite::Upsert(Box::new(b.clone()))).collect();
        writes.insert(10, RegistrationWrite::Upsert(Box::new(refreshed.clone())));
        writes.insert(
            20,
            RegistrationWrite::Remove { connection_id: "conn-1".into(), binding_key: bindings[5].binding_key.clone() },
        );
        // bindings[5] was written before its removal in this batch.
        assert_eq!(s.write_registrations(&writes, Some("node-1")).await.unwrap(), 1, "{:?}", s.backend());
        let mut stored = s.list_registrations("conn-1").await.unwrap();
        stored.sort_by_key(|b| b.cseq);
        let mut want: Vec<Registration> =
            bindings.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 5).map(|(_, b)| b.clone()).collect();
        want.push(refreshed.clone());
        want.sort_by_key(|b| b.cseq);
        assert_eq!(stored, want, "{:?}", s.backend());
    }
}
