//! Resource documents, unique values and API keys, on both backends.

mod support;

use store::{Repository, Resource, StoreError};

fn doc(kind: &str, id: &str, account: &str, name: &str, created: &str) -> Resource {
    Resource {
        kind: kind.into(),
        id: id.into(),
        account_id: account.into(),
        name: name.into(),
        body: format!(r#"{{"name":"{name}"}}"#),
        created_at: created.into(),
        updated_at: created.into(),
    }
}

#[tokio::test]
async fn crud_by_kind_and_account() {
    for s in support::backends().await {
        let b = s.backend();
        s.insert_resource(&doc("profile", "1", "a", "one", "2026-01-01T00:00:00Z"), &[]).await.unwrap();
        s.insert_resource(&doc("profile", "2", "a", "two", "2026-01-02T00:00:00Z"), &[]).await.unwrap();
        s.insert_resource(&doc("profile", "3", "b", "three", "2026-01-03T00:00:00Z"), &[]).await.unwrap();
        s.insert_resource(&doc("other", "1", "a", "x", "2026-01-01T00:00:00Z"), &[]).await.unwrap();
        let a: Vec<String> = s.list_resources("profile", Some("a")).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(a, ["1", "2"], "{b:?}");
        assert_eq!(s.list_resources("profile", None).await.unwrap().len(), 3);
        assert_eq!(s.get_resource("profile", "3").await.unwrap().unwrap().account_id, "b");
        assert_eq!(s.get_resource("profile", "9").await.unwrap(), None);
        assert!(matches!(
            s.insert_resource(&doc("profile", "1", "a", "dup", "2026-01-01T00:00:00Z"), &[]).await,
            Err(StoreError::Conflict { .. })
        ));
        let mut up = doc("profile", "2", "a", "renamed", "2026-01-02T00:00:00Z");
        up.updated_at = "2026-02-01T00:00:00Z".into();
        assert!(s.update_resource(&up, &[]).await.unwrap());
        let got = s.get_resource("profile", "2").await.unwrap().unwrap();
        assert_eq!(
            (got.name.as_str(), got.updated_at.as_str(), got.created_at.as_str()),
            ("renamed", "2026-02-01T00:00:00Z", "2026-01-02T00:00:00Z")
        );
        assert!(!s.update_resource(&doc("profile", "9", "a", "x", "t"), &[]).await.unwrap());
        assert!(s.delete_resource("profile", "1").await.unwrap());
        assert!(!s.delete_resource("profile", "1").await.unwrap(), "{b:?}");
    }
}

#[tokio::test]
async fn unique_values_are_claimed_all_or_nothing() {
    for s in support::backends().await {
        let b = s.backend();
        s.insert_resource(&doc("cred", "1", "a", "one", "t"), &[("user_name", "alice")]).await.unwrap();
        // Another account cannot take the same user name; nothing of the refused insert stays.
        let refused =
            s.insert_resource(&doc("cred", "2", "b", "two", "t"), &[("token", "tok"), ("user_name", "alice")]).await;
        assert_eq!(refused, Err(StoreError::Conflict { scope: "user_name".into() }), "{b:?}");
        assert_eq!(s.get_resource("cred", "2").await.unwrap(), None);
        s.insert_resource(&doc("cred", "3", "b", "three", "t"), &[("token", "tok")]).await.unwrap();
        // An update that would steal a value is refused and changes nothing.
        let steal = s.update_resource(&doc("cred", "3", "b", "three", "t"), &[("user_name", "alice")]).await;
        assert_eq!(steal, Err(StoreError::Conflict { scope: "user_name".into() }));
        assert!(
            matches!(
                s.insert_resource(&doc("cred", "4", "c", "four", "t"), &[("token", "tok")]).await,
                Err(StoreError::Conflict { .. })
            ),
            "{b:?}: the failed update kept its old values"
        );
        // Deleting frees the values.
        assert!(s.delete_resource("cred", "1").await.unwrap());
        s.insert_resource(&doc("cred", "5", "c", "five", "t"), &[("user_name", "alice")]).await.unwrap();
    }
}

#[tokio::test]
async fn api_keys_find_their_account() {
    for s in support::backends().await {
        s.add_api_key("acct-1", "hash-1", "t").await.unwrap();
        assert_eq!(s.account_for_key("hash-1").await.unwrap().as_deref(), Some("acct-1"));
        assert_eq!(s.account_for_key("hash-2").await.unwrap(), None);
        assert!(matches!(s.add_api_key("acct-2", "hash-1", "t").await, Err(StoreError::Conflict { .. })));
        s.delete_api_keys("acct-1").await.unwrap();
        assert_eq!(s.account_for_key("hash-1").await.unwrap(), None);
    }
}

#[tokio::test]
async fn deleting_an_account_takes_everything_it_owns() {
    for s in support::backends().await {
        s.insert_resource(&doc("account", "a", "a", "A", "t"), &[]).await.unwrap();
        s.insert_resource(&doc("profile", "p1", "a", "one", "t"), &[]).await.unwrap();
        s.insert_resource(&doc("cred", "c1", "a", "c", "t"), &[("user_name", "alice")]).await.unwrap();
        s.insert_resource(&doc("profile", "p2", "b", "other", "t"), &[]).await.unwrap();
        s.add_api_key("a", "hash-a", "t").await.unwrap();
        assert!(s.delete_account("a").await.unwrap());
        assert_eq!(s.get_resource("profile", "p1").await.unwrap(), None);
        assert_eq!(s.get_resource("account", "a").await.unwrap(), None);
        assert_eq!(s.account_for_key("hash-a").await.unwrap(), None);
        assert!(s.get_resource("profile", "p2").await.unwrap().is_some(), "other tenants untouched");
        // The unique value is free again.
        s.insert_resource(&doc("cred", "c2", "b", "c", "t"), &[("user_name", "alice")]).await.unwrap();
    }
}
