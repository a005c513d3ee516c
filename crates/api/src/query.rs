//! Query strings in the contract's deepObject style (`page[number]=2`,
//! `filter[name][contains]=office`), and the list envelope with its pagination meta.

use serde_json::{Value, json};

use crate::error::ApiError;

/// The decoded query parameters, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `page[number]` (from 1) and `page[size]` (1 to `max_size`), with the contract's
    /// defaults.
    pub fn page(&self, default_size: usize, max_size: usize) -> Result<Page, ApiError> {
        let read = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
            match self.get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer from 1 to {max}."))),
            }
        };
        Ok(Page {
            number: read("page[number]", 1, usize::MAX >> 1)?,
            size: read("page[size]", default_size, max_size)?,
        })
    }
}

impl Query {
    /// `sort`: one of `allowed` (the contract's enumerations list each field and its `-`
    /// descending form), `default` when absent. Returns the field and whether it descends. An
    /// unknown value is a 400 with code 10032; lists whose contract answers 422 map the status.
    pub fn sort<'a>(&'a self, allowed: &[&str], default: &'a str) -> Result<(&'a str, bool), ApiError> {
        let sort = self.get("sort").unwrap_or(default);
        if !allowed.contains(&sort) {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                errors: vec![crate::ErrorObject {
                    code: "10032",
                    title: "Invalid enumerated value".into(),
                    detail: format!("sort must be one of: {}.", allowed.join(", ")),
                    pointer: None,
                }],
            });
        }
        Ok(sort.strip_prefix('-').map_or((sort, false), |f| (f, true)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub number: usize,
    pub size: usize,
}

impl Page {
    /// The envelope for one page of `items`: `{"data": [...], "meta": {...}}`.
    pub fn envelope(&self, items: Vec<Value>) -> Value {
        let total = items.len();
        let total_pages = total.div_ceil(self.size);
        let data: Vec<Value> =
            items.into_iter().skip((self.number - 1).saturating_mul(self.size)).take(self.size).collect();
        json!({
            "data": data,
            "meta": {
                "page_number": self.number,
                "page_size": self.size,
                "total_pages": total_pages,
                "total_results": total,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_object_keys_decode() {
        let q = Query::parse(Some("page%5Bnumber%5D=2&page[size]=1&filter[name][contains]=off%20ice"));
        assert_eq!(q.page(20, 250).unwrap(), Page { number: 2, size: 1 });
        assert_eq!(q.get("filter[name][contains]"), Some("off ice"));
    }

    #[test]
    fn page_bounds() {
        assert!(Query::parse(Some("page[size]=0")).page(20, 250).is_err());
        assert!(Query::parse(Some("page[size]=251")).page(20, 250).is_err());
        assert!(Query::parse(Some("page[number]=x")).page(20, 250).is_err());
        assert_eq!(Query::parse(None).page(20, 250).unwrap(), Page { number: 1, size: 20 });
    }

    #[test]
    fn envelope_meta() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let v = Page { number: 2, size: 2 }.envelope(items.clone());
        assert_eq!(v["data"], json!([2, 3]));
        assert_eq!(v["meta"], json!({"page_number": 2, "page_size": 2, "total_pages": 3, "total_results": 5}));
        let v = Page { number: 9, size: 2 }.envelope(items);
        assert_eq!(v["data"], json!([]));
    }
}
