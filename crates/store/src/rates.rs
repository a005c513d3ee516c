//! Rate decks: a deck's metadata is a resource document (kind [`RATE_DECK`]); its rates live in
//! their own table, `rate_deck_rates(deck_id, prefix, rate)`, one row per destination prefix, the
//! rate an exact decimal string. Rates are written in multi-row INSERTs of [`BATCH`] rows inside
//! the transaction that also writes the deck's document, so an upload of a million rows is
//! stored whole or not at all, in seconds. The longest prefix of a number wins ([`crate::Repository::rate_for`]).

use std::sync::Arc;

use crate::{Backend, Resource, StoreError, conflict_or};

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
pub(crate) async fn insert_rates(
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

/// A resource's row (a rate deck's with its rates, any other through the repository); a
/// taken id is a conflict in scope `id`.
pub(crate) async fn insert_resource_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &Resource,
) -> Result<(), StoreError> {
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
