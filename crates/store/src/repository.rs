//! The one interface the control plane writes and reads configuration through. [`Store`]
//! implements it for both backends (SQLite and PostgreSQL speak the same SQL through sqlx's
//! `Any` driver; only migrations differ), so the API holds a `dyn Repository` and never names a
//! database. A second implementation (a caching or sharded one for cluster mode) plugs in here.
//!
//! Methods are async through `async_trait` so the trait stays object safe: the API keeps one
//! `Arc<dyn Repository>` in its state, and a boxed future per call costs nothing next to a query.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::cdr::{CallDetailRecord, CdrFilter};
use crate::rates::{MAX_PREFIX_DIGITS, RATE_DECK, RatePage, insert_rates, insert_resource_row};
use crate::registrations::Registration;
use crate::{
    ADMIN_KEY_HASH, RESOURCE_COLUMNS, Resource, ResourceRow, Store, StoreError, announce, claim_unique, conflict_or,
    constant_time_eq, hash_api_key, release_unique, resource, unix_now,
};

/// Configuration persistence: settings, resources (JSON documents with unique values and
/// references kept whole), API keys, and rate decks.
#[async_trait]
pub trait Repository: Send + Sync + std::fmt::Debug {
    /// A platform setting.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a platform setting.
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// The setting `key`, stored as `value` first if it has none: the first writer wins, so
    /// nodes of a cluster starting at once all read the same value (shared secrets).
    async fn setting_or_put(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Whether `presented` is the operator's key (compared by hash, in constant time).
    async fn is_admin_key(&self, presented: &str) -> Result<bool, StoreError>;

    /// Stores a new resource and claims its unique values (`(scope, value)`), all or nothing.
    async fn insert_resource(&self, r: &Resource, unique: &[(&str, &str)]) -> Result<(), StoreError>;

    /// Replaces a resource's document and name, and its unique values with `unique`.
    /// `Ok(false)` when it does not exist.
    async fn update_resource(&self, r: &Resource, unique: &[(&str, &str)]) -> Result<bool, StoreError>;

    async fn get_resource(&self, kind: &str, id: &str) -> Result<Option<Resource>, StoreError>;

    /// Every resource of a kind, of one account or of all, oldest first.
    async fn list_resources(&self, kind: &str, account_id: Option<&str>) -> Result<Vec<Resource>, StoreError>;

    /// Deletes a resource and frees its unique values. `Ok(false)` when it did not exist.
    async fn delete_resource(&self, kind: &str, id: &str) -> Result<bool, StoreError>;

    /// Deletes everything an account owns (its resources, their unique values, its keys) and
    /// the account itself, in one transaction: deleting a tenant leaves nothing behind.
    async fn delete_account(&self, account_id: &str) -> Result<bool, StoreError>;

    /// Records an account's API key by its hash.
    async fn add_api_key(&self, account_id: &str, key_hash: &str, created_at: &str) -> Result<(), StoreError>;

    /// The account an API key (by hash) belongs to.
    async fn account_for_key(&self, key_hash: &str) -> Result<Option<String>, StoreError>;

    /// Removes every API key of an account (when the account is deleted).
    async fn delete_api_keys(&self, account_id: &str) -> Result<(), StoreError>;

    /// [`Repository::insert_resource`], only while every resource of `refs` (`(kind, id)`) exists in
    /// the new resource's account: `Ok(false)`, nothing stored, when one does not.
    async fn insert_resource_referencing(
        &self,
        r: &Resource,
        unique: &[(&str, &str)],
        refs: &[(&str, &str)],
    ) -> Result<bool, StoreError>;

    /// [`Repository::update_resource`], only while every resource of `refs` (`(kind, id)`) exists in
    /// the resource's account: `Ok(false)`, nothing changed, when one does not or the resource
    /// itself does not.
    async fn update_resource_referencing(
        &self,
        r: &Resource,
        unique: &[(&str, &str)],
        refs: &[(&str, &str)],
    ) -> Result<bool, StoreError>;

    /// Deletes a resource and frees its unique values, unless resources of the kinds
    /// `referrers` name it: the string at `path` in their document (such as `["outbound",
    /// "outbound_voice_profile_id"]`) is its id. `Ok(Ok(true))`: deleted; `Ok(Ok(false))`: it
    /// did not exist; `Ok(Err(n))`: `n` resources name it, and nothing was deleted.
    async fn delete_resource_unreferenced(
        &self,
        kind: &str,
        id: &str,
        referrers: &[&str],
        path: &[&str],
    ) -> Result<Result<bool, u64>, StoreError>;

    /// How many resources of the kinds `referrers` (of `account_id`, or of every account) name
    /// each value by the string at `path` in their document: value to count, values no
    /// resource names left out.
    async fn reference_counts(
        &self,
        referrers: &[&str],
        path: &[&str],
        account_id: Option<&str>,
    ) -> Result<HashMap<String, u64>, StoreError>;

    /// Every value claimed in a unique scope.
    async fn claimed_values(&self, scope: &str) -> Result<Vec<String>, StoreError>;

    /// Stores a new rate deck: its document `deck` (claiming `unique`, as
    /// [`Repository::insert_resource`] does) and its `(prefix, rate)` rows, all or nothing.
    async fn insert_rate_deck(
        &self,
        deck: &Resource,
        unique: &[(&str, &str)],
        rates: &[(&str, &str)],
    ) -> Result<(), StoreError>;

    /// Replaces every rate of the deck `deck.id` with `rates`, and its document with `deck`'s
    /// (body and `updated_at`), all or nothing. `Ok(false)` when the deck does not exist.
    ///
    /// The document is written first: it locks the deck's row, so two replacements of one deck
    /// run one after the other instead of mixing their rows.
    async fn replace_rates(&self, deck: &Resource, rates: &[(&str, &str)]) -> Result<bool, StoreError>;

    /// Deletes a rate deck: its document, unique values and rates. `Ok(false)` when it did not
    /// exist.
    async fn delete_rate_deck(&self, id: &str) -> Result<bool, StoreError>;

    /// One page of a deck's rates ordered by prefix: `limit` rows after skipping `offset`, only
    /// prefixes starting with `starts_with` (digits) when given, and the number that match.
    async fn rates(
        &self,
        deck_id: &str,
        starts_with: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<RatePage, StoreError>;

    /// How many rates a deck has.
    async fn count_rates(&self, deck_id: &str) -> Result<u64, StoreError>;

    /// The rate of a call to `number` (digits, optionally after `+`): the `(prefix, rate)` of the
    /// deck's longest prefix that starts the number, or `None` when no prefix does (or the number
    /// is not digits). One indexed query over the number's prefixes (at most 15).
    async fn rate_for(&self, deck_id: &str, number: &str) -> Result<Option<(String, String)>, StoreError>;

    /// Stores call detail records, all or nothing, in one transaction of multi-row INSERTs (the
    /// engine writes them in batches from a queue). A time not in the `cdr_timestamp` shape, or
    /// an id taken (a conflict in scope `id`), stores none of them.
    async fn insert_cdrs(&self, records: &[CallDetailRecord]) -> Result<(), StoreError>;

    /// One page of the call detail records matching `filter`, newest first (by `started_at`, ties
    /// by id): `limit` records after skipping `offset`, and how many match in all.
    async fn list_cdrs(
        &self,
        filter: &CdrFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<CallDetailRecord>, u64), StoreError>;

    /// The call detail record `id`, of whichever account.
    async fn get_cdr(&self, id: &str) -> Result<Option<CallDetailRecord>, StoreError>;

    /// Every registrar binding of a connection, expired ones not yet swept included, oldest
    /// registration first.
    async fn list_registrations(&self, connection_id: &str) -> Result<Vec<Registration>, StoreError>;
}

#[async_trait]
impl Repository for Store {
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|(v,)| v))
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn setting_or_put(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .bind(unix_now())
            .execute(&self.pool)
            .await?;
        self.setting(key)
            .await?
            .ok_or_else(|| StoreError::Failed(format!("setting {key}: gone right after it was written")))
    }

    async fn is_admin_key(&self, presented: &str) -> Result<bool, StoreError> {
        let Some(stored) = self.setting(ADMIN_KEY_HASH).await? else { return Ok(false) };
        Ok(constant_time_eq(stored.as_bytes(), hash_api_key(presented).as_bytes()))
    }

    async fn insert_resource(&self, r: &Resource, unique: &[(&str, &str)]) -> Result<(), StoreError> {
        self.insert_resource_referencing(r, unique, &[]).await.map(|_| ())
    }

    async fn update_resource(&self, r: &Resource, unique: &[(&str, &str)]) -> Result<bool, StoreError> {
        self.update_resource_referencing(r, unique, &[]).await
    }

    async fn get_resource(&self, kind: &str, id: &str) -> Result<Option<Resource>, StoreError> {
        let row: Option<ResourceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 AND id = $2"
        )))
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(resource))
    }

    async fn list_resources(&self, kind: &str, account_id: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        let rows: Vec<ResourceRow> = match account_id {
            Some(a) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 AND account_id = $2 ORDER BY created_at, id"
            )))
            .bind(kind)
            .bind(a)
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 ORDER BY created_at, id"
                )))
                .bind(kind)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(resource).collect())
    }

    async fn delete_resource(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        release_unique(&mut tx, kind, id).await?;
        let done = sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, self.backend, kind).await?;
        tx.commit().await?;
        self.changed();
        Ok(done.rows_affected() > 0)
    }

    async fn delete_account(&self, account_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM unique_values WHERE EXISTS (SELECT 1 FROM resources r WHERE r.kind = unique_values.kind \
             AND r.id = unique_values.id AND r.account_id = $1)",
        )
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        let done =
            sqlx::query("DELETE FROM resources WHERE account_id = $1").bind(account_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1").bind(account_id).execute(&mut *tx).await?;
        announce(&mut tx, self.backend, "account").await?;
        tx.commit().await?;
        self.changed();
        Ok(done.rows_affected() > 0)
    }

    async fn add_api_key(&self, account_id: &str, key_hash: &str, created_at: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (key_hash, account_id, created_at) VALUES ($1, $2, $3)")
            .bind(key_hash)
            .bind(account_id)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, "api key"))?;
        Ok(())
    }

    async fn account_for_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT account_id FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(a,)| a))
    }

    async fn delete_api_keys(&self, account_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1").bind(account_id).execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_resource_referencing(
        &self,
        r: &Resource,
        unique: &[(&str, &str)],
        refs: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !Self::lock_references(&mut tx, self.backend, &r.account_id, refs).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        claim_unique(&mut tx, &r.kind, &r.id, unique).await?;
        insert_resource_row(&mut tx, r).await?;
        announce(&mut tx, self.backend, &r.kind).await?;
        tx.commit().await?;
        self.changed();
        Ok(true)
    }

    async fn update_resource_referencing(
        &self,
        r: &Resource,
        unique: &[(&str, &str)],
        refs: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !Self::lock_references(&mut tx, self.backend, &r.account_id, refs).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        release_unique(&mut tx, &r.kind, &r.id).await?;
        claim_unique(&mut tx, &r.kind, &r.id, unique).await?;
        let done =
            sqlx::query("UPDATE resources SET name = $1, body = $2, updated_at = $3 WHERE kind = $4 AND id = $5")
                .bind(&r.name)
                .bind(&r.body)
                .bind(&r.updated_at)
                .bind(&r.kind)
                .bind(&r.id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        announce(&mut tx, self.backend, &r.kind).await?;
        tx.commit().await?;
        self.changed();
        Ok(true)
    }

    async fn delete_resource_unreferenced(
        &self,
        kind: &str,
        id: &str,
        referrers: &[&str],
        path: &[&str],
    ) -> Result<Result<bool, u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row goes first, which locks it until the end: a reference written meanwhile
        // either committed before (and is counted below) or waits and then finds it gone.
        let done = sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Ok(false));
        }
        let counts = Self::count_references(&mut tx, self.backend, referrers, path, Some(id), None).await?;
        let n = counts.get(id).copied().unwrap_or(0);
        if n > 0 {
            tx.rollback().await?;
            return Ok(Err(n));
        }
        release_unique(&mut tx, kind, id).await?;
        announce(&mut tx, self.backend, kind).await?;
        tx.commit().await?;
        self.changed();
        Ok(Ok(true))
    }

    async fn reference_counts(
        &self,
        referrers: &[&str],
        path: &[&str],
        account_id: Option<&str>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::count_references(&mut conn, self.backend, referrers, path, None, account_id).await
    }

    async fn claimed_values(&self, scope: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT value FROM unique_values WHERE scope = $1")
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    async fn insert_rate_deck(
        &self,
        deck: &Resource,
        unique: &[(&str, &str)],
        rates: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        claim_unique(&mut tx, &deck.kind, &deck.id, unique).await?;
        insert_resource_row(&mut tx, deck).await?;
        insert_rates(&mut tx, self.backend, &deck.id, rates).await?;
        announce(&mut tx, self.backend, RATE_DECK).await?;
        tx.commit().await?;
        self.changed();
        Ok(())
    }

    async fn replace_rates(&self, deck: &Resource, rates: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE resources SET body = $1, updated_at = $2 WHERE kind = $3 AND id = $4")
            .bind(&deck.body)
            .bind(&deck.updated_at)
            .bind(&deck.kind)
            .bind(&deck.id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM rate_deck_rates WHERE deck_id = $1").bind(&deck.id).execute(&mut *tx).await?;
        insert_rates(&mut tx, self.backend, &deck.id, rates).await?;
        announce(&mut tx, self.backend, RATE_DECK).await?;
        tx.commit().await?;
        self.changed();
        Ok(true)
    }

    async fn delete_rate_deck(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        release_unique(&mut tx, RATE_DECK, id).await?;
        let done = sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(RATE_DECK)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rate_deck_rates WHERE deck_id = $1").bind(id).execute(&mut *tx).await?;
        announce(&mut tx, self.backend, RATE_DECK).await?;
        tx.commit().await?;
        self.changed();
        Ok(done.rows_affected() > 0)
    }

    async fn rates(
        &self,
        deck_id: &str,
        starts_with: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<RatePage, StoreError> {
        if starts_with.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return Ok(RatePage { rates: Vec::new(), total: 0 });
        }
        // A pattern of digits only: nothing in it needs escaping.
        let pattern = starts_with.map(|p| format!("{p}%"));
        let (filter, limit_at) = if pattern.is_some() { (" AND prefix LIKE $2", 3) } else { ("", 2) };
        let count_sql = format!("SELECT COUNT(*) FROM rate_deck_rates WHERE deck_id = $1{filter}");
        let page_sql = format!(
            "SELECT prefix, rate FROM rate_deck_rates WHERE deck_id = $1{filter} ORDER BY prefix \
             LIMIT ${limit_at} OFFSET ${}",
            limit_at + 1
        );
        let mut count = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(count_sql)).bind(deck_id);
        let mut page = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(page_sql)).bind(deck_id);
        if let Some(p) = &pattern {
            count = count.bind(p.clone());
            page = page.bind(p.clone());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let (total,) = count.fetch_one(&self.pool).await?;
        let rates = page.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok(RatePage { rates, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn count_rates(&self, deck_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rate_deck_rates WHERE deck_id = $1")
            .bind(deck_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn rate_for(&self, deck_id: &str, number: &str) -> Result<Option<(String, String)>, StoreError> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let n = digits.len().min(MAX_PREFIX_DIGITS);
        let placeholders: Vec<String> = (0..n).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT prefix, rate FROM rate_deck_rates WHERE deck_id = $1 AND prefix IN ({}) \
             ORDER BY LENGTH(prefix) DESC LIMIT 1",
            placeholders.join(",")
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql)).bind(deck_id);
        for len in 1..=n {
            q = q.bind(&digits[..len]);
        }
        Ok(q.fetch_optional(&self.pool).await?)
    }

    async fn insert_cdrs(&self, records: &[CallDetailRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        crate::cdr::insert(&mut tx, self.backend, records).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_cdrs(
        &self,
        filter: &CdrFilter,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<CallDetailRecord>, u64), StoreError> {
        crate::cdr::list(&self.pool, filter, offset, limit).await
    }

    async fn get_cdr(&self, id: &str) -> Result<Option<CallDetailRecord>, StoreError> {
        crate::cdr::get(&self.pool, id).await
    }

    async fn list_registrations(&self, connection_id: &str) -> Result<Vec<Registration>, StoreError> {
        crate::registrations::list(&self.pool, connection_id).await
    }
}
