//! Settings and the operator's API key, on both backends.

mod support;

use store::{AdminKey, Backend, Repository};

#[tokio::test]
async fn settings_round_trip_and_update() {
    for store in support::backends().await {
        let b = store.backend();
        assert_eq!(store.setting("k").await.unwrap(), None, "{b:?}");
        store.put_setting("k", "one").await.unwrap();
        store.put_setting("k", "two").await.unwrap();
        assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("two"), "{b:?}");
    }
}

#[tokio::test]
async fn admin_key_generated_once_and_stored_hashed() {
    for store in support::backends().await {
        let b = store.backend();
        let AdminKey::Generated(key) = store.ensure_admin_key(None).await.unwrap() else {
            panic!("{b:?}: first start generates a key")
        };
        assert!(key.starts_with("KEY") && key.len() == 67, "{key}");
        assert_eq!(store.ensure_admin_key(None).await.unwrap(), AdminKey::Existing, "{b:?}: only once");
        assert!(store.is_admin_key(&key).await.unwrap());
        assert!(!store.is_admin_key("KEYwrong").await.unwrap());
        // Only the hash is stored.
        let stored = store.setting("admin_api_key_sha256").await.unwrap().unwrap();
        assert_ne!(stored, key);
        assert_eq!(stored, store::hash_api_key(&key));
        // A configured key replaces it.
        assert_eq!(store.ensure_admin_key(Some("KEYconfigured")).await.unwrap(), AdminKey::Configured);
        assert!(store.is_admin_key("KEYconfigured").await.unwrap());
        assert!(!store.is_admin_key(&key).await.unwrap(), "{b:?}");
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let path = std::env::temp_dir().join(format!("ot_reopen_{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    let s = store::Store::open(&url).await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    s.put_setting("kept", "yes").await.unwrap();
    drop(s);
    let s = store::Store::open(&url).await.unwrap();
    assert_eq!(s.setting("kept").await.unwrap().as_deref(), Some("yes"));
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn bad_urls_are_refused() {
    assert!(store::Store::open("mysql://x").await.is_err());
    assert!(store::Store::open("sqlite:///nonexistent-dir/x/y.db").await.is_err());
}
