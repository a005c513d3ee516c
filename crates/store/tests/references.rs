//! References between resources, on both backends: writes that need the resource they name,
//! deletes refused while something names the resource, counts by value, claimed values.

mod support;

use store::{Repository, Resource, Store, StoreError};

const PATH: &[&str] = &["outbound", "outbound_voice_profile_id"];
const REFERRERS: &[&str] = &["conn_a", "conn_b"];

fn res(kind: &str, id: &str, account: &str, body: &str) -> Resource {
    Resource {
        kind: kind.into(),
        id: id.into(),
        account_id: account.into(),
        name: id.into(),
        body: body.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
    }
}

fn naming(kind: &str, id: &str, account: &str, profile: &str) -> Resource {
    res(kind, id, account, &format!(r#"{{"outbound": {{"outbound_voice_profile_id": "{profile}"}}}}"#))
}

async fn profiles(s: &Store) {
    for (id, account) in [("p1", "a"), ("p2", "a"), ("p3", "b")] {
        s.insert_resource(&res("profile", id, account, "{}"), &[]).await.unwrap();
    }
}

#[tokio::test]
async fn writes_need_the_resource_they_name_in_their_account() {
    for s in support::backends().await {
        let b = s.backend();
        profiles(&s).await;
        let refs = [("profile", "p1")];
        assert!(s.insert_resource_referencing(&naming("conn_a", "c1", "a", "p1"), &[("u", "x")], &refs).await.unwrap());
        // Missing, or of another account: nothing stored, no value claimed.
        for (kind, id) in [("profile", "p9"), ("profile", "p3"), ("other", "p1")] {
            let r = naming("conn_a", "c2", "a", id);
            assert!(!s.insert_resource_referencing(&r, &[("u", "y")], &[(kind, id)]).await.unwrap(), "{b:?} {id}");
            assert_eq!(s.get_resource("conn_a", "c2").await.unwrap(), None);
        }
        s.insert_resource(&res("conn_a", "c3", "a", "{}"), &[("u", "y")]).await.unwrap();
        // A unique value still conflicts as with insert_resource.
        let dup = s.insert_resource_referencing(&naming("conn_a", "c4", "a", "p1"), &[("u", "x")], &refs).await;
        assert_eq!(dup, Err(StoreError::Conflict { scope: "u".into() }), "{b:?}");

        // Updates: refused (nothing changed) when the named one is missing or the resource is.
        let mut up = naming("conn_a", "c1", "a", "p2");
        up.updated_at = "2026-02-01T00:00:00Z".into();
        assert!(!s.update_resource_referencing(&up, &[], &[("profile", "p3")]).await.unwrap());
        let kept = s.get_resource("conn_a", "c1").await.unwrap().unwrap();
        assert!(kept.body.contains("p1") && kept.updated_at.starts_with("2026-01"), "{b:?}");
        assert!(s.insert_resource(&res("conn_a", "c5", "a", "{}"), &[("u", "x")]).await.is_err(), "still claimed");
        assert!(
            !s.update_resource_referencing(&naming("conn_a", "c9", "a", "p2"), &[], &[("profile", "p2")])
                .await
                .unwrap()
        );
        assert!(s.update_resource_referencing(&up, &[("u", "z")], &[("profile", "p2")]).await.unwrap());
        assert!(s.get_resource("conn_a", "c1").await.unwrap().unwrap().body.contains("p2"));
        // Its old value is free, its new one taken.
        s.insert_resource(&res("conn_a", "c6", "a", "{}"), &[("u", "x")]).await.unwrap();
        assert!(s.insert_resource(&res("conn_a", "c7", "a", "{}"), &[("u", "z")]).await.is_err());
        // No references: as update_resource.
        assert!(s.update_resource_referencing(&up, &[("u", "z")], &[]).await.unwrap());
    }
}

#[tokio::test]
async fn deletes_are_refused_while_anything_names_the_resource() {
    for s in support::backends().await {
        let b = s.backend();
        profiles(&s).await;
        s.insert_resource(&naming("conn_a", "c1", "a", "p1"), &[]).await.unwrap();
        s.insert_resource(&naming("conn_b", "c2", "a", "p1"), &[]).await.unwrap();
        s.insert_resource(&naming("conn_b", "c3", "a", "p2"), &[]).await.unwrap();
        // Not counted: another kind, a number in the field, the id elsewhere in the document.
        s.insert_resource(&naming("other", "c4", "a", "p2"), &[]).await.unwrap();
        s.insert_resource(&res("conn_a", "c5", "a", r#"{"outbound": {"outbound_voice_profile_id": 7}}"#), &[])
            .await
            .unwrap();
        s.insert_resource(&res("conn_a", "c6", "a", r#"{"outbound_voice_profile_id": "p2", "x": "p2"}"#), &[])
            .await
            .unwrap();
        s.insert_resource(&res("profile", "7", "a", "{}"), &[("profile_name", "seven")]).await.unwrap();

        assert_eq!(s.delete_resource_unreferenced("profile", "p1", REFERRERS, PATH).await.unwrap(), Err(2), "{b:?}");
        assert_eq!(s.delete_resource_unreferenced("profile", "p2", REFERRERS, PATH).await.unwrap(), Err(1));
        assert!(s.get_resource("profile", "p1").await.unwrap().is_some(), "{b:?}: nothing deleted");
        assert_eq!(s.delete_resource_unreferenced("profile", "p3", REFERRERS, PATH).await.unwrap(), Ok(true));
        assert_eq!(s.delete_resource_unreferenced("profile", "p3", REFERRERS, PATH).await.unwrap(), Ok(false));
        assert_eq!(s.get_resource("profile", "p3").await.unwrap(), None);
        // Its unique values are freed with it.
        assert_eq!(s.delete_resource_unreferenced("profile", "7", REFERRERS, PATH).await.unwrap(), Ok(true));
        s.insert_resource(&res("profile", "8", "a", "{}"), &[("profile_name", "seven")]).await.unwrap();

        assert!(s.delete_resource("conn_a", "c1").await.unwrap());
        assert!(s.delete_resource("conn_b", "c2").await.unwrap());
        assert_eq!(s.delete_resource_unreferenced("profile", "p1", REFERRERS, PATH).await.unwrap(), Ok(true));
        assert!(s.delete_resource_unreferenced("profile", "p1", &[], PATH).await.unwrap() == Ok(false));

        // Paths are field names only.
        assert!(matches!(
            s.delete_resource_unreferenced("profile", "p2", REFERRERS, &["outbound'"]).await,
            Err(StoreError::Failed(_))
        ));
        assert!(matches!(s.reference_counts(REFERRERS, &[], None).await, Err(StoreError::Failed(_))));
    }
}

#[tokio::test]
async fn reference_counts_by_value_and_account() {
    for s in support::backends().await {
        let b = s.backend();
        for (kind, id, account, profile) in [
            ("conn_a", "1", "a", "p1"),
            ("conn_b", "2", "a", "p1"),
            ("conn_a", "3", "a", "p2"),
            ("conn_a", "4", "b", "p1"),
            ("other", "5", "a", "p1"),
        ] {
            s.insert_resource(&naming(kind, id, account, profile), &[]).await.unwrap();
        }
        s.insert_resource(&res("conn_a", "6", "a", r#"{"outbound": {}}"#), &[]).await.unwrap();
        let a = s.reference_counts(REFERRERS, PATH, Some("a")).await.unwrap();
        assert_eq!(a, [("p1".to_owned(), 2), ("p2".to_owned(), 1)].into(), "{b:?}");
        let all = s.reference_counts(REFERRERS, PATH, None).await.unwrap();
        assert_eq!(all, [("p1".to_owned(), 3), ("p2".to_owned(), 1)].into());
        assert!(s.reference_counts(REFERRERS, PATH, Some("c")).await.unwrap().is_empty());
        assert!(s.reference_counts(&[], PATH, None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn claimed_values_of_a_scope() {
    for s in support::backends().await {
        s.insert_resource(&res("k", "1", "a", "{}"), &[("tech_prefix", "0001"), ("other", "x")]).await.unwrap();
        s.insert_resource(&res("k", "2", "b", "{}"), &[("tech_prefix", "0002")]).await.unwrap();
        let mut v = s.claimed_values("tech_prefix").await.unwrap();
        v.sort();
        assert_eq!(v, ["0001", "0002"]);
        assert!(s.claimed_values("none").await.unwrap().is_empty());
    }
}

/// A reference written while the resource it names is deleted: never both.
#[tokio::test]
async fn a_reference_and_a_delete_at_once_never_both_succeed() {
    for s in support::backends().await {
        let b = s.backend();
        for round in 0..30 {
            let p = format!("p{round}");
            s.insert_resource(&res("profile", &p, "a", "{}"), &[]).await.unwrap();
            let writer = {
                let (s, p) = (s.clone(), p.clone());
                tokio::spawn(async move {
                    let r = naming("conn_a", &format!("c{p}"), "a", &p);
                    s.insert_resource_referencing(&r, &[], &[("profile", &p)]).await.unwrap()
                })
            };
            let deleter = {
                let (s, p) = (s.clone(), p.clone());
                tokio::spawn(
                    async move { s.delete_resource_unreferenced("profile", &p, REFERRERS, PATH).await.unwrap() },
                )
            };
            let (written, deleted) = (writer.await.unwrap(), deleter.await.unwrap());
            assert!(written != (deleted == Ok(true)), "{b:?} round {round}: written {written}, deleted {deleted:?}");
            let profile = s.get_resource("profile", &p).await.unwrap();
            let conn = s.get_resource("conn_a", &format!("c{p}")).await.unwrap();
            assert_eq!(profile.is_some(), conn.is_some(), "{b:?} round {round}");
        }
    }
}
