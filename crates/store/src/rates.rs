//! Rate decks: a deck's metadata is a resource document (kind [`RATE_DECK`]); its rates live in
//! their own table, `rate_deck_rates(deck_id, prefix, rate)`, one row per destination prefix, the
//! rate an exact decimal string. Rates are written in multi-row INSERTs of [`BATCH`] rows inside
//! the transaction that also writes the deck's document, so an upload of a million rows is
//! stored whole or not at all, in seconds. The longest prefix of a number wins ([`Store::rate_for`]).

use std::sync::Arc;

use crate::{Backend, Resource, Store, StoreError, announce, claim_unique, conflict_or, release_unique};

/// The resource kind of a rate deck's document.
pub const RATE_DECK: &str = "rate_deck";

/// Rows per INSERT statement: at most 3 x 1000 parameters, well within both backends' limits
/// (SQLite 32766, PostgreSQL 65535).
const BATCH: usize = 1000;

/// The longest prefix a rate may have (E.164 numbers have at most 15 digits).
pub const MAX_PREFIX_DIGITS: usize = 15;

/// One page of a deck's rates, by prefix: the `(prefix, rate)` rows and how many match in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatePage {
    pub rates: Vec<(String, String)>,
    pub total: u64,
}

/// `INSERT ... VALUES` for `rows` rows of (deck id, prefix, rate). PostgreSQL numbers its
/// parameters, the deck id once as `$1`: `($1,$2,$3),($1,$4,$5),...`. SQLite gets anonymous
/// `?` (the deck id bound on every row): it looks a numbered parameter up by name in a list, once
/// per parameter, which makes binding thousands of them quadratic.
fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * 16);
    sql.push_str("INSERT INTO rate_deck_rates (deck_id, prefix, rate) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        match backend {
            Backend::Sqlite => sql.push_str("(?,?,?)"),
            Backend::Postgres => sql.push_str(&format!("($1,${},${})", 2 * i + 2, 2 * i + 3)),
        }
    }
    sql
}

/// Writes `rates` of deck `deck_id` in batches. A prefix given twice is a conflict on `prefix`.
async fn insert_rates(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    deck_id: &str,
    rates: &[(&str, &str)],
) -> Result<(), StoreError> {
    let full: Arc<str> = insert_sql(backend, BATCH).into();
    for chunk in rates.chunks(BATCH) {
        let sql = if chunk.len() == BATCH { Arc::clone(&full) } else { insert_sql(backend, chunk.len()).into() };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        match backend {
            Backend::Sqlite => {
                for (prefix, rate) in chunk {
                    q = q.bind(deck_id).bind(*prefix).bind(*rate);
                }
            }
            Backend::Postgres => {
                q = q.bind(deck_id);
                for (prefix, rate) in chunk {
                    q = q.bind(*prefix).bind(*rate);
                }
            }
        }
        q.execute(&mut **tx).await.map_err(|e| conflict_or(e, "prefix"))?;
    }
    Ok(())
}

/// The resource row of a rate deck, stored or replaced with its rates.
async fn insert_resource_row(tx: &mut sqlx::Transaction<'_, sqlx::Any>, r: &Resource) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resources (kind, id, account_id, name, body, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&r.kind)
    .bind(&r.id)
    .bind(&r.account_id)
    .bind(&r.name)
    .bind(&r.body)
    .bind(&r.created_at)
    .bind(&r.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| conflict_or(e, "id"))?;
    Ok(())
}

impl Store {
    /// Stores a new rate deck: its document `deck` (claiming `unique`, as
    /// [`Store::insert_resource`] does) and its `(prefix, rate)` rows, all or nothing.
    pub async fn insert_rate_deck(
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

    /// Replaces every rate of the deck `deck.id` with `rates`, and its document with `deck`'s
    /// (body and `updated_at`), all or nothing. `Ok(false)` when the deck does not exist.
    ///
    /// The document is written first: it locks the deck's row, so two replacements of one deck
    /// run one after the other instead of mixing their rows.
    pub async fn replace_rates(&self, deck: &Resource, rates: &[(&str, &str)]) -> Result<bool, StoreError> {
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

    /// Deletes a rate deck: its document, unique values and rates. `Ok(false)` when it did not
    /// exist.
    pub async fn delete_rate_deck(&self, id: &str) -> Result<bool, StoreError> {
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

    /// One page of a deck's rates ordered by prefix: `limit` rows after skipping `offset`, only
    /// prefixes starting with `starts_with` (digits) when given, and the number that match.
    pub async fn rates(
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

    /// How many rates a deck has.
    pub async fn count_rates(&self, deck_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rate_deck_rates WHERE deck_id = $1")
            .bind(deck_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The rate of a call to `number` (digits, optionally after `+`): the `(prefix, rate)` of the
    /// deck's longest prefix that starts the number, or `None` when no prefix does (or the number
    /// is not digits). One indexed query over the number's prefixes (at most 15).
    pub async fn rate_for(&self, deck_id: &str, number: &str) -> Result<Option<(String, String)>, StoreError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_per_backend() {
        assert_eq!(
            insert_sql(Backend::Postgres, 2),
            "INSERT INTO rate_deck_rates (deck_id, prefix, rate) VALUES ($1,$2,$3),($1,$4,$5)"
        );
        assert!(insert_sql(Backend::Postgres, BATCH).ends_with(&format!("($1,${},${})", 2 * BATCH, 2 * BATCH + 1)));
        assert_eq!(
            insert_sql(Backend::Sqlite, 2),
            "INSERT INTO rate_deck_rates (deck_id, prefix, rate) VALUES (?,?,?),(?,?,?)"
        );
    }
}
