//! Rate decks' rates, on both backends: batched inserts with the deck's document, longest-prefix
//! lookup, paging by prefix, atomic replacement and deletion.

mod support;

use store::{RATE_DECK, Repository, Resource, StoreError};

fn deck(id: &str, name: &str, body: &str) -> Resource {
    Resource {
        kind: RATE_DECK.into(),
        id: id.into(),
        account_id: "operator".into(),
        name: name.into(),
        body: body.into(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

fn pairs(rows: &[(String, String)]) -> Vec<(&str, &str)> {
    rows.iter().map(|(p, r)| (p.as_str(), r.as_str())).collect()
}

#[tokio::test]
async fn longest_prefix_wins() {
    for s in support::backends().await {
        let b = s.backend();
        let rates = [("1", "0.0100"), ("1212", "0.0200"), ("12125", "0.0300"), ("44", "0.0500"), ("0", "9")];
        s.insert_rate_deck(&deck("d1", "retail", "{}"), &[], &rates).await.unwrap();
        s.insert_rate_deck(&deck("d2", "other", "{}"), &[], &[("1", "0.5")]).await.unwrap();
        let rate = |n: &'static str| {
            let s = s.clone();
            async move { s.rate_for("d1", n).await.unwrap() }
        };
        let some = |p: &str, r: &str| Some((p.to_owned(), r.to_owned()));
        assert_eq!(rate("+12125551234").await, some("12125", "0.0300"), "{b:?}");
        assert_eq!(rate("12124551234").await, some("1212", "0.0200"));
        assert_eq!(rate("13105551234").await, some("1", "0.0100"));
        assert_eq!(rate("1").await, some("1", "0.0100"));
        assert_eq!(rate("1212").await, some("1212", "0.0200"));
        assert_eq!(rate("442071234567").await, some("44", "0.0500"));
        assert_eq!(rate("0800").await, some("0", "9"));
        assert_eq!(rate("33123456789").await, None);
        assert_eq!(rate("").await, None);
        assert_eq!(rate("+").await, None);
        assert_eq!(rate("+1 212").await, None, "not digits");
        // Longer than 15 digits: only its first 15 can match.
        assert_eq!(rate("1212512345678901234").await, some("12125", "0.0300"));
        assert_eq!(s.rate_for("d2", "12125551234").await.unwrap(), some("1", "0.5"), "decks are separate");
        assert_eq!(s.rate_for("nope", "12125551234").await.unwrap(), None);
    }
}

#[tokio::test]
async fn batches_page_and_filter() {
    for s in support::backends().await {
        let b = s.backend();
        // More than two batches, the last one partial.
        let rows: Vec<(String, String)> =
            (0..2345).map(|i| (format!("{}", 10_000 + i), format!("0.{:04}", i % 10_000))).collect();
        s.insert_rate_deck(&deck("d1", "big", "{}"), &[("rate_deck_name", "big")], &pairs(&rows)).await.unwrap();
        assert_eq!(s.count_rates("d1").await.unwrap(), 2345, "{b:?}");
        assert_eq!(s.get_resource(RATE_DECK, "d1").await.unwrap().unwrap().name, "big");

        let page = s.rates("d1", None, 0, 3).await.unwrap();
        assert_eq!(page.total, 2345);
        assert_eq!(page.rates, [rows[0].clone(), rows[1].clone(), rows[2].clone()]);
        let last = s.rates("d1", None, 2344, 10).await.unwrap();
        assert_eq!(last.rates, [rows[2344].clone()]);
        assert!(s.rates("d1", None, 5000, 10).await.unwrap().rates.is_empty());

        // Prefixes starting with 1123: 11230..=11239 and 1123 itself is absent.
        let f = s.rates("d1", Some("1123"), 0, 100).await.unwrap();
        assert_eq!(f.total, 10);
        assert_eq!(f.rates.first().map(|r| r.0.as_str()), Some("11230"));
        let f = s.rates("d1", Some("1123"), 8, 100).await.unwrap();
        assert_eq!((f.total, f.rates.len()), (10, 2));
        assert_eq!(s.rates("d1", Some("9"), 0, 10).await.unwrap().total, 0);
        assert_eq!(s.rates("d1", Some("1%"), 0, 10).await.unwrap().total, 0, "digits only");

        // Ordered by prefix as bytes: shorter before longer, on both backends.
        s.insert_rate_deck(&deck("d2", "order", "{}"), &[], &[("2", "1"), ("10", "1"), ("1", "1"), ("100", "1")])
            .await
            .unwrap();
        let order: Vec<String> = s.rates("d2", None, 0, 10).await.unwrap().rates.into_iter().map(|r| r.0).collect();
        assert_eq!(order, ["1", "10", "100", "2"]);
    }
}

#[tokio::test]
async fn a_refused_write_stores_nothing() {
    for s in support::backends().await {
        let b = s.backend();
        // A prefix twice: the deck is not created at all.
        let refused =
            s.insert_rate_deck(&deck("d1", "dup", "{}"), &[], &[("1", "0.1"), ("2", "0.2"), ("1", "0.3")]).await;
        assert_eq!(refused, Err(StoreError::Conflict { scope: "prefix".into() }), "{b:?}");
        assert_eq!(s.get_resource(RATE_DECK, "d1").await.unwrap(), None);
        assert_eq!(s.count_rates("d1").await.unwrap(), 0);

        // A taken unique value: nothing either.
        s.insert_rate_deck(&deck("d2", "retail", "{}"), &[("rate_deck_name", "retail")], &[("1", "0.1")])
            .await
            .unwrap();
        let refused =
            s.insert_rate_deck(&deck("d3", "retail", "{}"), &[("rate_deck_name", "retail")], &[("1", "0.1")]).await;
        assert_eq!(refused, Err(StoreError::Conflict { scope: "rate_deck_name".into() }));
        assert_eq!(s.count_rates("d3").await.unwrap(), 0);

        // A replacement that fails keeps the old rates and document.
        let mut up = deck("d2", "retail", r#"{"rates_count":2}"#);
        up.updated_at = "2026-02-01T00:00:00.000Z".into();
        let refused = s.replace_rates(&up, &[("7", "0.7"), ("7", "0.8")]).await;
        assert_eq!(refused, Err(StoreError::Conflict { scope: "prefix".into() }));
        assert_eq!(s.rate_for("d2", "15551234").await.unwrap(), Some(("1".into(), "0.1".into())));
        assert_eq!(s.get_resource(RATE_DECK, "d2").await.unwrap().unwrap().body, "{}");

        // A replacement that succeeds replaces every rate and the document.
        assert!(s.replace_rates(&up, &[("7", "0.7"), ("8", "0.8")]).await.unwrap());
        assert_eq!(s.count_rates("d2").await.unwrap(), 2);
        assert_eq!(s.rate_for("d2", "15551234").await.unwrap(), None);
        assert_eq!(s.rate_for("d2", "75551234").await.unwrap(), Some(("7".into(), "0.7".into())));
        let got = s.get_resource(RATE_DECK, "d2").await.unwrap().unwrap();
        assert_eq!((got.body.as_str(), got.updated_at.as_str()), (r#"{"rates_count":2}"#, "2026-02-01T00:00:00.000Z"));
        assert!(!s.replace_rates(&deck("nope", "x", "{}"), &[("1", "1")]).await.unwrap());
        assert_eq!(s.count_rates("nope").await.unwrap(), 0, "no rates for a missing deck");

        // Deleting takes the rates and frees the name.
        assert!(s.delete_rate_deck("d2").await.unwrap());
        assert!(!s.delete_rate_deck("d2").await.unwrap());
        assert_eq!(s.count_rates("d2").await.unwrap(), 0);
        s.insert_rate_deck(&deck("d4", "retail", "{}"), &[("rate_deck_name", "retail")], &[]).await.unwrap();
        assert_eq!(s.count_rates("d4").await.unwrap(), 0);
    }
}
