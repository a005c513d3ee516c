//! `/v2/rate_decks`: the operator's rate decks (an operator resource, not in the contract). A deck
//! is a name, a billing increment and per-minute rates by destination prefix; a call is rated by
//! the longest prefix of its number that the deck has ([`store::Store::rate_for`]). An account
//! names the deck that prices its calls with its `rate_deck_id`.
//!
//! - `POST /v2/rate_decks` takes JSON `{"name", "billing_increment", "rates": [{"prefix",
//!   "rate"}]}`, or a CSV upload (`Content-Type: text/csv`, a `prefix,rate` header line, `name`
//!   and `billing_increment` in the query string). It answers 201 with the deck. `rates` may be
//!   left out (an empty deck, filled later with PUT).
//! - `GET /v2/rate_decks` (paged; `filter[name][contains]`; `sort` by `name` or `created_at`,
//!   default `-created_at`), `GET /v2/rate_decks/{id}`, `PATCH /v2/rate_decks/{id}` (`name`,
//!   `billing_increment`; rates are not patched), `DELETE /v2/rate_decks/{id}` (200 with the
//!   deck; 422 while an account's `rate_deck_id` names it).
//! - `GET /v2/rate_decks/{id}/rates` pages the rates by prefix (`filter[prefix]`: prefixes
//!   starting with these digits; `filter[number]`: the one rate a call to this number gets).
//!   `PUT /v2/rate_decks/{id}/rates` replaces every rate at once (JSON `{"rates": [...]}` or CSV).
//! - Every endpoint is the operator's: an account's key gets 403.
//!
//! Values: a prefix is 1 to 15 digits (as a string: leading zeros count), unique within a deck;
//! a rate is a decimal string of 1 to 6 digits, optionally a point and 1 to 6 more (`"0.0100"`),
//! kept exactly as written. `billing_increment` is `"initial/subsequent"` seconds, each 1 to 3600
//! (`60/60` by default, `6/6`, `1/1`, `30/6`), stored as canonical numbers (`06/6` is `6/6`).
//! Names are 1 to 255 characters and unique among decks regardless of case (422 at `/name`).
//!
//! Uploads: up to [`MAX_UPLOAD_BYTES`]. JSON rates are read row by row (each row validated and
//! packed as it is read, never kept as a JSON tree); CSV is split line by line in place. A fault
//! names its row: `/rates/12/prefix` in JSON, `/rates/12` in CSV with the line number in
//! `detail` (12 counts data rows from 0, like the JSON index; blank lines are skipped). At most
//! [`MAX_FAULTS`] faults are listed, then one saying how many more there are. An upload with any
//! fault stores nothing; a good one is written in one transaction with the deck's document.

use std::cmp::Ordering;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use store::{MAX_PREFIX_DIGITS, RATE_DECK as KIND, Resource, StoreError};

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

/// Decks belong to the operator; their documents carry this owner.
pub const OWNER: &str = "operator";
/// The unique scope of deck names (lowercased).
const NAME_SCOPE: &str = "rate_deck_name";
/// The largest upload, JSON or CSV: room for several million rows.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;
/// How many faults an upload lists before summing up the rest.
pub const MAX_FAULTS: usize = 100;
pub const DEFAULT_INCREMENT: &str = "60/60";
/// The longest billing increment, initial or subsequent, in seconds.
const MAX_INCREMENT: u32 = 3600;
const RATE_DIGITS: usize = 6;
const RATE_DECIMALS: usize = 6;
pub const SORTS: &[&str] = &["name", "-name", "created_at", "-created_at"];
const DEFAULT_SORT: &str = "-created_at";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/rate_decks", get(list).post(create))
        .route("/rate_decks/{id}", get(show).patch(update).delete(remove))
        .route("/rate_decks/{id}/rates", get(list_rates).put(replace_rates))
}

/// A destination prefix: 1 to 15 digits.
pub fn is_prefix(s: &str) -> bool {
    (1..=MAX_PREFIX_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A per-minute rate: 1 to 6 digits, optionally a point and 1 to 6 digits.
pub fn is_rate(s: &str) -> bool {
    let digits = |p: &str, max: usize| (1..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        Some((int, frac)) => digits(int, RATE_DIGITS) && digits(frac, RATE_DECIMALS),
        None => digits(s, RATE_DIGITS),
    }
}

/// A billing increment `initial/subsequent` in seconds, each 1 to 3600, canonically written.
pub fn billing_increment(s: &str) -> Option<String> {
    let (a, b) = s.split_once('/')?;
    let seconds = |p: &str| {
        ((1..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
            .filter(|n| (1..=MAX_INCREMENT).contains(n))
    };
    Some(format!("{}/{}", seconds(a)?, seconds(b)?))
}

/// One accepted rate row: where its prefix and rate are in [`RateSet::text`] (back to back),
/// and where it came from.
#[derive(Clone, Copy, Debug)]
struct Row {
    start: usize,
    prefix_len: u8,
    rate_len: u8,
    /// The row's index in the upload (data rows from 0).
    index: u32,
    /// The CSV line (from 1); 0 for JSON.
    line: u32,
}

impl Row {
    fn prefix<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.start + usize::from(self.prefix_len)]
    }
    fn rate<'a>(&self, text: &'a str) -> &'a str {
        let at = self.start + usize::from(self.prefix_len);
        &text[at..at + usize::from(self.rate_len)]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// An upload's rates, packed as they are read (one string for all of them, a small row each),
/// and the faults found.
struct RateSet {
    format: Format,
    text: String,
    rows: Vec<Row>,
    /// The first [`MAX_FAULTS`] faults by row index (rows are read in order).
    faults: Vec<(u32, ErrorObject)>,
    fault_total: usize,
}

/// A value as shown in a fault's detail: at most 32 characters.
fn shown(s: &str) -> String {
    if s.chars().count() <= 32 { s.to_owned() } else { format!("{}...", s.chars().take(32).collect::<String>()) }
}

const PREFIX_DETAIL: &str = "Must be 1 to 15 digits as a string, such as \"1212\".";
const RATE_DETAIL: &str =
    "Must be a decimal amount as a string, such as \"0.0100\" (up to 6 digits, then up to 6 decimals).";

impl RateSet {
    fn new(format: Format) -> RateSet {
        RateSet { format, text: String::new(), rows: Vec::new(), faults: Vec::new(), fault_total: 0 }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn fault(&mut self, index: u32, e: ErrorObject) {
        self.fault_total += 1;
        if self.faults.len() < MAX_FAULTS {
            self.faults.push((index, e));
        }
    }

    /// Keeps a valid row (`prefix` and `rate` already checked).
    fn push(&mut self, index: u32, line: u32, prefix: &str, rate: &str) {
        let start = self.text.len();
        self.text.push_str(prefix);
        self.text.push_str(rate);
        // Both are checked short (15 and 13 characters at most).
        self.rows.push(Row { start, prefix_len: prefix.len() as u8, rate_len: rate.len() as u8, index, line });
    }

    /// One element of a JSON `rates` array.
    fn json_row(&mut self, index: u32, v: &Value) {
        let Some(o) = v.as_object() else {
            self.fault(
                index,
                ErrorObject::invalid_value(&format!("/rates/{index}"), "Must be an object with a prefix and a rate."),
            );
            return;
        };
        let mut field = |name: &str, valid: fn(&str) -> bool, detail: &str| -> Option<&str> {
            let pointer = format!("/rates/{index}/{name}");
            match o.get(name) {
                None | Some(Value::Null) => {
                    self.fault(index, ErrorObject::required(&pointer));
                    None
                }
                Some(Value::String(s)) if valid(s) => Some(s.as_str()),
                Some(_) => {
                    self.fault(index, ErrorObject::invalid_value(&pointer, detail));
                    None
                }
            }
        };
        let prefix = field("prefix", is_prefix, PREFIX_DETAIL);
        let rate = field("rate", is_rate, RATE_DETAIL);
        if let (Some(p), Some(r)) = (prefix, rate) {
            self.push(index, 0, p, r);
        }
    }

    /// Reads a CSV upload: a header line naming the columns `prefix` and `rate` (in any order,
    /// other columns ignored, fields optionally in double quotes), then one rate a line.
    fn csv(body: &[u8]) -> RateSet {
        let mut set = RateSet::new(Format::Csv);
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let mut columns: Option<(usize, usize)> = None;
        let mut index: u32 = 0;
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.trim_ascii().is_empty() {
                continue;
            }
            let Some((pi, ri)) = columns else {
                let names: Vec<String> =
                    line.split(|b| *b == b',').map(|f| String::from_utf8_lossy(unquote(f)).to_lowercase()).collect();
                let find = |name: &str| names.iter().position(|c| c == name);
                match (find("prefix"), find("rate")) {
                    (Some(p), Some(r)) => columns = Some((p, r)),
                    _ => {
                        set.fault(
                            0,
                            ErrorObject::invalid_value(
                                "/rates",
                                format!(
                                    "Line {line_no}: the first line must be a header naming the columns prefix and \
                                     rate, such as \"prefix,rate\" (found \"{}\").",
                                    shown(&String::from_utf8_lossy(line))
                                ),
                            ),
                        );
                        return set;
                    }
                }
                continue;
            };
            let (mut prefix, mut rate, mut count) = (None, None, 0);
            for (i, f) in line.split(|b| *b == b',').enumerate() {
                count += 1;
                if i == pi {
                    prefix = Some(unquote(f));
                } else if i == ri {
                    rate = Some(unquote(f));
                }
            }
            let pointer = format!("/rates/{index}");
            match (prefix, rate) {
                (Some(p), Some(r)) => {
                    let p = std::str::from_utf8(p).ok().filter(|p| is_prefix(p));
                    let r = std::str::from_utf8(r).ok().filter(|r| is_rate(r));
                    if p.is_none() {
                        set.fault(
                            index,
                            ErrorObject::invalid_value(
                                &pointer,
                                format!(
                                    "Line {line_no}: the prefix \"{}\" must be 1 to 15 digits.",
                                    shown(&String::from_utf8_lossy(prefix.unwrap_or_default()))
                                ),
                            ),
                        );
                    }
                    if r.is_none() {
                        set.fault(
                            index,
                            ErrorObject::invalid_value(
                                &pointer,
                                format!(
                                    "Line {line_no}: the rate \"{}\" must be a decimal amount such as 0.0100 (up to \
                                     6 digits, then up to 6 decimals).",
                                    shown(&String::from_utf8_lossy(rate.unwrap_or_default()))
                                ),
                            ),
                        );
                    }
                    if let (Some(p), Some(r)) = (p, r) {
                        set.push(index, line_no, p, r);
                    }
                }
                _ => set.fault(
                    index,
                    ErrorObject::invalid_value(
                        &pointer,
                        format!("Line {line_no}: expected the columns prefix and rate, found {count} column(s)."),
                    ),
                ),
            }
            index = index.saturating_add(1);
        }
        if columns.is_none() {
            set.fault(
                0,
                ErrorObject::invalid_value("/rates", "The upload must start with a header line: prefix,rate."),
            );
        }
        set
    }

    /// Orders the rows by prefix (the order they are stored in) and finds prefixes given twice.
    /// Every fault of the upload, or none.
    fn finish(&mut self) -> Vec<ErrorObject> {
        let text = &self.text;
        self.rows.sort_unstable_by(|a, b| a.prefix(text).cmp(b.prefix(text)).then(a.index.cmp(&b.index)));
        // (row, first row with the same prefix), the first ones by index.
        let mut dups: Vec<(Row, Row)> = Vec::new();
        let mut first = 0;
        for k in 1..self.rows.len() {
            if self.rows[k].prefix(text) == self.rows[first].prefix(text) {
                dups.push((self.rows[k], self.rows[first]));
            } else {
                first = k;
            }
        }
        let dup_total = dups.len();
        dups.sort_unstable_by_key(|(row, _)| row.index);
        dups.truncate(MAX_FAULTS);
        let mut faults = std::mem::take(&mut self.faults);
        for (row, first) in dups {
            let prefix = row.prefix(text);
            let e = match self.format {
                Format::Json => ErrorObject::invalid_value(
                    &format!("/rates/{}/prefix", row.index),
                    format!("The prefix {prefix} is already given at /rates/{}.", first.index),
                ),
                Format::Csv => ErrorObject::invalid_value(
                    &format!("/rates/{}", row.index),
                    format!("Line {}: the prefix {prefix} is already given on line {}.", row.line, first.line),
                ),
            };
            faults.push((row.index, e));
        }
        faults.sort_by_key(|(index, _)| *index);
        faults.truncate(MAX_FAULTS);
        let total = self.fault_total + dup_total;
        let mut out: Vec<ErrorObject> = faults.into_iter().map(|(_, e)| e).collect();
        if total > out.len() {
            out.push(ErrorObject {
                code: "10015",
                title: "Too many faults".into(),
                detail: format!("{} more faults in the rates are not listed.", total - out.len()),
                pointer: Some("/rates".into()),
            });
        }
        out
    }

    /// The rates as `(prefix, rate)`, by prefix.
    fn pairs(&self) -> Vec<(&str, &str)> {
        self.rows.iter().map(|r| (r.prefix(&self.text), r.rate(&self.text))).collect()
    }
}

/// A CSV field without surrounding spaces and double quotes.
fn unquote(f: &[u8]) -> &[u8] {
    let f = f.trim_ascii();
    f.strip_prefix(b"\"").and_then(|f| f.strip_suffix(b"\"")).map_or(f, <[u8]>::trim_ascii)
}

/// The `rates` member of a JSON body.
enum RatesField {
    /// Absent or null.
    Absent,
    /// Not an array.
    Invalid,
    Given(RateSet),
}

/// Reads a JSON body's `rates` array element by element.
struct RatesSeed;

impl<'de> DeserializeSeed<'de> for RatesSeed {
    type Value = RatesField;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RatesField, D::Error> {
        d.deserialize_any(RatesSeed)
    }
}

impl<'de> Visitor<'de> for RatesSeed {
    type Value = RatesField;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rates")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RatesField, A::Error> {
        let mut set = RateSet::new(Format::Json);
        let mut index: u32 = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            set.json_row(index, &v);
            index = index.saturating_add(1);
        }
        Ok(RatesField::Given(set))
    }
    fn visit_unit<E>(self) -> Result<RatesField, E> {
        Ok(RatesField::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RatesField, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RatesField::Invalid)
    }
    fn visit_bool<E>(self, _: bool) -> Result<RatesField, E> {
        Ok(RatesField::Invalid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<RatesField, E> {
        Ok(RatesField::Invalid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<RatesField, E> {
        Ok(RatesField::Invalid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<RatesField, E> {
        Ok(RatesField::Invalid)
    }
    fn visit_str<E>(self, _: &str) -> Result<RatesField, E> {
        Ok(RatesField::Invalid)
    }
}

/// Reads a JSON object body: `rates` through [`RatesSeed`], the other members whole.
struct BodySeed;

impl<'de> Visitor<'de> for BodySeed {
    type Value = (Map<String, Value>, RatesField);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rest = Map::new();
        let mut rates = RatesField::Absent;
        while let Some(key) = map.next_key::<String>()? {
            if key == "rates" {
                rates = map.next_value_seed(RatesSeed)?;
            } else {
                rest.insert(key, map.next_value()?);
            }
        }
        Ok((rest, rates))
    }
}

/// A JSON body: its fields other than `rates`, and its rates read row by row.
fn parse_json(body: &[u8]) -> Result<(Fields, RatesField), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Fields::parse(b"{}")?, RatesField::Absent));
    }
    let mut d = serde_json::Deserializer::from_slice(body);
    let parsed = d.deserialize_map(BodySeed).and_then(|v| d.end().map(|()| v));
    match parsed {
        Ok((rest, rates)) => {
            let rest = serde_json::to_vec(&Value::Object(rest)).map_err(|_| ApiError::internal())?;
            Ok((Fields::parse(&rest)?, rates))
        }
        Err(_) if serde_json::from_slice::<IgnoredAny>(body).is_ok() => {
            Err(ApiError::bad_request("The request body must be a JSON object."))
        }
        Err(_) => Err(ApiError::bad_request("The request failed because it was not well-formed.")),
    }
}

/// Whether the request is a CSV upload.
fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "text/csv" || m == "application/csv")
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_UPLOAD_BYTES).await.map_err(|_| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        errors: vec![ErrorObject {
            code: "10015",
            title: "Upload too large".into(),
            detail: format!("The request body could not be read, or is larger than {MAX_UPLOAD_BYTES} bytes."),
            pointer: None,
        }],
    })
}

/// The upload's rates when they are all valid; their faults join `f`'s otherwise. `required`:
/// an absent `rates` is a fault (PUT) rather than an empty deck (create).
fn take_rates(f: &mut Fields, rates: RatesField, required: bool) -> Option<RateSet> {
    match rates {
        RatesField::Absent if required => {
            f.errors.push(ErrorObject::required("/rates"));
            None
        }
        RatesField::Absent => Some(RateSet::new(Format::Json)),
        RatesField::Invalid => {
            f.errors
                .push(ErrorObject::invalid_value("/rates", "Must be an array of objects with a prefix and a rate."));
            None
        }
        RatesField::Given(mut set) => {
            let faults = set.finish();
            if faults.is_empty() {
                Some(set)
            } else {
                f.errors.extend(faults);
                None
            }
        }
    }
}

/// `billing_increment`, canonical; `default` when absent.
fn increment_field(f: &mut Fields, default: Option<&str>) -> Option<String> {
    let detail = "Must be \"initial/subsequent\" seconds, each from 1 to 3600, such as \"60/60\" or \"6/6\".";
    match f.string_matching("billing_increment", |s| billing_increment(s).is_some(), detail) {
        Some(Some(s)) => billing_increment(&s),
        Some(None) => default.map(str::to_owned),
        None => None,
    }
}

/// A taken name answers at `/name`.
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { scope } if scope == NAME_SCOPE => {
            ApiError::conflict("A rate deck with this name already exists.", "/name")
        }
        e => e.into(),
    }
}

async fn create(
    State(s): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.operator_only()?;
    let body = read_body(body).await?;
    let (mut f, rates) = if is_csv(&headers) {
        let q = Query::parse(q.as_deref());
        let meta = json!({"name": q.get("name"), "billing_increment": q.get("billing_increment")});
        (Fields::parse(meta.to_string().as_bytes())?, RatesField::Given(RateSet::csv(&body)))
    } else {
        parse_json(&body)?
    };
    let name = f.string("name", true, 1, 255);
    let increment = increment_field(&mut f, Some(DEFAULT_INCREMENT));
    let rates = take_rates(&mut f, rates, false);
    f.finish()?;
    let (name, increment, rates) = match (name, increment, rates) {
        (Some(n), Some(i), Some(r)) => (n, i, r),
        _ => return Err(ApiError::internal()),
    };
    let id = new_id()?;
    let now = now_timestamp();
    let doc = json!({
        "record_type": KIND,
        "id": id,
        "name": name,
        "billing_increment": increment,
        "rates_count": rates.len(),
        "created_at": now,
        "updated_at": now,
    });
    let r = Resource {
        kind: KIND.into(),
        id,
        account_id: OWNER.into(),
        name: name.clone(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    s.store.insert_rate_deck(&r, &[(NAME_SCOPE, &name.to_lowercase())], &rates.pairs()).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "data": doc }))))
}

fn query_fault(detail: String) -> ApiError {
    ApiError::invalid(vec![ErrorObject {
        code: "10015",
        title: "Invalid query parameter".into(),
        detail,
        pointer: None,
    }])
}

fn compare(a: &Value, b: &Value, field: &str) -> Ordering {
    let (x, y) = (a[field].as_str().unwrap_or_default(), b[field].as_str().unwrap_or_default());
    match field {
        "name" => x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y)),
        _ => x.cmp(y),
    }
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let q = Query::parse(q.as_deref());
    let page = q.page(20, 250).map_err(ApiError::unprocessable)?;
    let (field, descending) = q.sort(SORTS, DEFAULT_SORT).map_err(ApiError::unprocessable)?;
    let name_filter = q.get("filter[name][contains]").map(str::to_lowercase);
    let mut items: Vec<Value> = s
        .store
        .list_resources(KIND, None)
        .await?
        .into_iter()
        .filter(|r| name_filter.as_ref().is_none_or(|n| r.name.to_lowercase().contains(n)))
        .filter_map(|r| serde_json::from_str(&r.body).ok())
        .collect();
    items.sort_by(|a, b| {
        let o = compare(a, b, field);
        if descending { o.reverse() } else { o }
    });
    Ok(Json(page.envelope(items)))
}

async fn fetch(s: &ApiState, id: &str) -> Result<(Resource, Value), ApiError> {
    // Operator resources: the operator sees every one.
    crate::fetch(&*s.store, &Caller::Operator, KIND, id).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let (_, doc) = fetch(&s, &id).await?;
    Ok(Json(json!({ "data": doc })))
}

/// PATCH: `name` and `billing_increment`; the others stay.
async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let (mut r, mut doc) = fetch(&s, &id).await?;
    let mut f = Fields::parse(&body)?;
    let name = f.string("name", false, 1, 255);
    let increment = increment_field(&mut f, None);
    if f.has("rates") {
        f.errors.push(ErrorObject::invalid_value(
            "/rates",
            format!("Rates are replaced as a whole with PUT /v2/rate_decks/{id}/rates."),
        ));
    }
    f.finish()?;
    if let Some(n) = name {
        doc["name"] = json!(n);
    }
    if let Some(i) = increment {
        doc["billing_increment"] = json!(i);
    }
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.name = doc["name"].as_str().unwrap_or_default().to_owned();
    r.body = doc.to_string();
    r.updated_at = now;
    if !s.store.update_resource(&r, &[(NAME_SCOPE, &r.name.to_lowercase())]).await.map_err(store_error)? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": doc })))
}

/// PUT rates: every rate replaced by the upload's, at once; 200 with the deck.
async fn replace_rates(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let (mut r, mut doc) = fetch(&s, &id).await?;
    let body = read_body(body).await?;
    let (mut f, rates) = if is_csv(&headers) {
        (Fields::parse(b"{}")?, RatesField::Given(RateSet::csv(&body)))
    } else {
        parse_json(&body)?
    };
    let rates = take_rates(&mut f, rates, true);
    f.finish()?;
    let rates = rates.ok_or_else(ApiError::internal)?;
    let now = now_timestamp();
    doc["rates_count"] = json!(rates.len());
    doc["updated_at"] = json!(now);
    r.body = doc.to_string();
    r.updated_at = now;
    if !s.store.replace_rates(&r, &rates.pairs()).await.map_err(store_error)? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": doc })))
}

/// A page of the deck's rates by prefix.
async fn list_rates(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    fetch(&s, &id).await?;
    let q = Query::parse(q.as_deref());
    let page = q.page(20, 250).map_err(ApiError::unprocessable)?;
    let prefix = q.get("filter[prefix]");
    if let Some(p) = prefix.filter(|p| !is_prefix(p)) {
        return Err(query_fault(format!("filter[prefix] must be 1 to 15 digits (found \"{}\").", shown(p))));
    }
    let item =
        |(prefix, rate): (String, String)| json!({"record_type": "rate_deck_rate", "prefix": prefix, "rate": rate});
    if let Some(number) = q.get("filter[number]") {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if !(1..=32).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(query_fault(format!(
                "filter[number] must be a phone number of digits (found \"{}\").",
                shown(number)
            )));
        }
        let found = s.store.rate_for(&id, digits).await?;
        let items = found.into_iter().filter(|(p, _)| prefix.is_none_or(|f| p.starts_with(f))).map(item).collect();
        return Ok(Json(page.envelope(items)));
    }
    let offset = (page.number as u64 - 1).saturating_mul(page.size as u64);
    let found = s.store.rates(&id, prefix, offset, page.size as u64).await?;
    let data: Vec<Value> = found.rates.into_iter().map(item).collect();
    Ok(Json(json!({
        "data": data,
        "meta": {
            "page_number": page.number,
            "page_size": page.size,
            "total_pages": found.total.div_ceil(page.size as u64),
            "total_results": found.total,
        }
    })))
}

/// DELETE answers 200 with the deck; refused (422) while an account's `rate_deck_id` names it.
async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let (_, doc) = fetch(&s, &id).await?;
    let users: Vec<String> = s
        .store
        .list_resources("account", None)
        .await?
        .into_iter()
        .filter(|a| {
            serde_json::from_str::<Value>(&a.body).is_ok_and(|d| d["rate_deck_id"].as_str() == Some(id.as_str()))
        })
        .map(|a| a.id)
        .collect();
    if !users.is_empty() {
        let listed: Vec<&str> = users.iter().take(10).map(String::as_str).collect();
        let more = if users.len() > listed.len() {
            format!(" and {} more", users.len() - listed.len())
        } else {
            String::new()
        };
        return Err(ApiError::invalid(vec![ErrorObject {
            code: "10007",
            title: "Rate deck in use".into(),
            detail: format!(
                "The rate deck is the rate_deck_id of {} account(s) ({}{more}); give them another rate deck first.",
                users.len(),
                listed.join(", ")
            ),
            pointer: None,
        }]));
    }
    if !s.store.delete_rate_deck(&id).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": doc })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        for ok in ["1", "0", "123456789012345"] {
            assert!(is_prefix(ok), "{ok}");
        }
        for bad in ["", "1234567890123456", "+1", "1 2", "12a", "١"] {
            assert!(!is_prefix(bad), "{bad}");
        }
        for ok in ["0", "0.0100", "123456.123456", "1.5", "000001"] {
            assert!(is_rate(ok), "{ok}");
        }
        for bad in ["", ".5", "1.", "-1", "1e3", "1234567", "0.1234567", "0,01", " 1", "0.01.0"] {
            assert!(!is_rate(bad), "{bad}");
        }
        assert_eq!(billing_increment("60/60").as_deref(), Some("60/60"));
        assert_eq!(billing_increment("06/6").as_deref(), Some("6/6"));
        assert_eq!(billing_increment("30/6").as_deref(), Some("30/6"));
        assert_eq!(billing_increment("3600/1").as_deref(), Some("3600/1"));
        for bad in ["60", "0/60", "60/0", "3601/1", "60/60/60", "a/b", "+6/6", " 6/6", "60/", "/60", "00001/1"] {
            assert_eq!(billing_increment(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_lines_and_faults() {
        let mut set = RateSet::csv(b"\xEF\xBB\xBFPrefix, \"Rate\"\r\n1,0.01\r\n\r\n\"44\" , 0.05\n");
        assert!(set.finish().is_empty());
        assert_eq!(set.pairs(), [("1", "0.01"), ("44", "0.05")]);

        let mut set = RateSet::csv(b"rate,prefix,country\n0.01,1,US\n0.02,1x,US\n\n0.03\n0.04,1,US\n");
        let faults = set.finish();
        let got: Vec<(&str, &str)> =
            faults.iter().map(|e| (e.pointer.as_deref().unwrap(), e.detail.as_str())).collect();
        assert_eq!(
            got,
            [
                ("/rates/1", "Line 3: the prefix \"1x\" must be 1 to 15 digits."),
                ("/rates/2", "Line 5: expected the columns prefix and rate, found 1 column(s)."),
                ("/rates/3", "Line 6: the prefix 1 is already given on line 2."),
            ]
        );
        let mut set = RateSet::csv(b"number,cost\n1,0.01\n");
        assert_eq!(set.finish()[0].pointer.as_deref(), Some("/rates"));
        let mut set = RateSet::csv(b"");
        assert_eq!(set.finish()[0].pointer.as_deref(), Some("/rates"));
        let mut set = RateSet::csv(b"prefix,rate\n");
        assert!(set.finish().is_empty() && set.len() == 0);
    }

    #[test]
    fn faults_are_capped() {
        let mut csv = String::from("prefix,rate\n");
        for _ in 0..150 {
            csv.push_str("x,0.1\n");
        }
        for _ in 0..150 {
            csv.push_str("7,0.1\n");
        }
        let faults = RateSet::csv(csv.as_bytes()).finish();
        assert_eq!(faults.len(), MAX_FAULTS + 1);
        assert_eq!(faults[MAX_FAULTS].detail, "199 more faults in the rates are not listed.");
        assert_eq!(faults[0].pointer.as_deref(), Some("/rates/0"));
    }
}
