//! `/v2/detail_records`: call detail records (CDRs), one per call the switch handled, read-only,
//! in the style of Telnyx's Detail Record Search (`GET /v2/detail_records?filter[record_type]=...`).
//! Not in the SIP trunking contract; documented as an extension in `openapi.rs`.
//!
//! Who sees what: an account sees its own records only (another account's id answers 404,
//! exactly like a missing one); the operator sees every account's, optionally narrowed with
//! `filter[account_id]`. Route attempts (upstream carriers, their gateways and addresses) and
//! the decision trace (the rules' internals, such as how many connections share a source
//! address) are the operator's: an account's view leaves `route_attempts` and `trace` out.
//!
//! A record (`record_type` `sip-trunking`) has `id`, `account_id`, `connection_id`,
//! `outbound_voice_profile_id` (null when none applied), `direction` (`outbound`/`inbound`),
//! `a_leg_call_id` and `b_leg_call_id` (the SIP Call-IDs of the caller's leg and of the leg
//! toward the callee, null when none was created), `from_received`/`to_received` (the parties
//! as the caller's leg carried them) and `from_sent`/`to_sent` (as sent on, null when nothing
//! was), `started_at`/`answered_at` (null when unanswered)/`ended_at` (UTC with milliseconds,
//! `2026-01-02T03:04:05.678Z`), `call_sec` and `billed_sec`, `rate` (per minute) and `cost`
//! (decimal strings, null when the call was not rated) in `currency` `USD`,
//! `sip_response_code` (the final status the caller got), `reason_code` (the product's code
//! such as `D1`, null when none) and `hangup_source` (`caller`, `callee` or `system`).
//!
//! The list is newest first (by `started_at`, ties by id) and takes, all optional:
//!
//! - `filter[record_type]`: `sip-trunking`, the only type there is and the default. Any other
//!   value is refused (422, code 10032) rather than answered with an empty list, so a client
//!   asking for a type this platform does not make learns it at once.
//! - `filter[date_range]`: `today` (since 00:00 UTC today), `yesterday` (the whole previous UTC
//!   day), `last_7_days` or `last_30_days` (the last 7 x 24 or 30 x 24 hours up to now), on the
//!   start time.
//! - `filter[started_at][gte]` and `filter[started_at][lte]`: RFC 3339 date-times (any
//!   offset; `2026-01-02T03:04:05Z`, `2026-01-02T04:04:05.5+01:00`), inclusive, to the
//!   millisecond. With `filter[date_range]` too, a record must meet all of them.
//! - `filter[connection_id]`, `filter[sip_response_code]` (100 to 699), and for the operator
//!   `filter[account_id]` (an account naming another account gets an empty list).
//! - `page[number]` (from 1) and `page[size]` (1 to 250, default 20); `meta` as everywhere.
//!
//! Every bad value is reported at once, 422, each with the parameter as a JSON pointer into
//! the deepObject (`filter[started_at][gte]` is `/filter/started_at/gte`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::ser::{Impossible, SerializeMap, SerializeStruct, Serializer};
use serde_json::{Value, json};
use store::{CallDetailRecord, CdrFilter, cdr_timestamp};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::query::{Page, Query};
use crate::{ApiError, ApiState, Caller, ErrorObject};

/// The one record type: calls through SIP trunks.
pub const RECORD_TYPE: &str = "sip-trunking";
/// The currency of every rate and cost.
pub const CURRENCY: &str = "USD";
pub const DATE_RANGES: &[&str] = &["today", "yesterday", "last_7_days", "last_30_days"];
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 250;
const DAY_MS: i64 = 86_400_000;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/detail_records", get(list)).route("/detail_records/{id}", get(show))
}

/// A record as `caller` sees it: the stored record's fields, without those only the operator
/// sees, and the two every record has, written straight into the response. Built as a
/// `serde_json::Value` first, each record cost about 40 us (its decision trace parsed back into
/// a tree of maps, then written out again): a page of 250 took 10 ms of CPU, and its trees'
/// memory, taken and given back each time, faulted in anew at every page.
pub struct Presented<'a> {
    record: &'a CallDetailRecord,
    operator: bool,
}

/// The fields of a record only the operator sees.
const OPERATOR_ONLY: &[&str] = &["route_attempts", "trace"];

pub fn present<'a>(record: &'a CallDetailRecord, caller: &Caller) -> Presented<'a> {
    Presented { record, operator: *caller == Caller::Operator }
}

impl Serialize for Presented<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let omit = if self.operator { &[][..] } else { OPERATOR_ONLY };
        self.record.serialize(Entries { map: &mut map, omit })?;
        map.serialize_entry("record_type", RECORD_TYPE)?;
        map.serialize_entry("currency", CURRENCY)?;
        map.end()
    }
}

/// Writes a struct's fields as entries of a map being written, leaving out `omit`: serde has
/// no public way to write one struct's fields into another's map but `flatten`, which cannot
/// leave fields out.
struct Entries<'m, M> {
    map: &'m mut M,
    omit: &'static [&'static str],
}

impl<M: SerializeMap> SerializeStruct for Entries<'_, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), M::Error> {
        if self.omit.contains(&key) { Ok(()) } else { self.map.serialize_entry(key, value) }
    }

    fn end(self) -> Result<(), M::Error> {
        Ok(())
    }
}

fn not_a_struct_error<E: serde::ser::Error>() -> E {
    E::custom("only a struct's fields can be written as entries")
}

/// Every form but a struct is refused: only a record's fields are written this way.
macro_rules! not_a_struct {
    ($($name:ident $(<$t:ident>)? ($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $name $(<$t: Serialize + ?Sized>)? (self, $(_: $arg),*) -> Result<$ok, M::Error> {
            Err(not_a_struct_error())
        })*
    };
}

impl<'m, M: SerializeMap> Serializer for Entries<'m, M> {
    type Ok = ();
    type Error = M::Error;
    type SerializeStruct = Self;
    type SerializeSeq = Impossible<(), M::Error>;
    type SerializeTuple = Impossible<(), M::Error>;
    type SerializeTupleStruct = Impossible<(), M::Error>;
    type SerializeTupleVariant = Impossible<(), M::Error>;
    type SerializeMap = Impossible<(), M::Error>;
    type SerializeStructVariant = Impossible<(), M::Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, M::Error> {
        Ok(self)
    }

    not_a_struct! {
        serialize_some<T>(&T) -> ();
        serialize_newtype_struct<T>(&'static str, &T) -> ();
        serialize_newtype_variant<T>(&'static str, u32, &'static str, &T) -> ();
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

/// The start-time bounds of a named range, at `now_ms` (Unix milliseconds): (from, to), both
/// inclusive, in the stored shape. `None` for a name not in [`DATE_RANGES`].
pub fn date_range(name: &str, now_ms: i64) -> Option<(Option<String>, Option<String>)> {
    let midnight = now_ms - now_ms.rem_euclid(DAY_MS);
    let (from, to) = match name {
        "today" => (midnight, None),
        "yesterday" => (midnight - DAY_MS, Some(midnight - 1)),
        "last_7_days" => (now_ms - 7 * DAY_MS, None),
        "last_30_days" => (now_ms - 30 * DAY_MS, None),
        _ => return None,
    };
    Some((Some(cdr_timestamp(from)), to.map(cdr_timestamp)))
}

/// An RFC 3339 date-time as a bound in the stored shape (UTC, milliseconds). A lower bound
/// finer than a millisecond rounds up and an upper one down, so neither lets in a record
/// outside it.
pub fn time_bound(s: &str, lower: bool) -> Option<String> {
    let nanos = OffsetDateTime::parse(s, &Rfc3339).ok()?.unix_timestamp_nanos();
    let mut ms = nanos.div_euclid(1_000_000);
    if lower && nanos.rem_euclid(1_000_000) != 0 {
        ms += 1;
    }
    // RFC 3339 years are 0000 to 9999: well within i64 milliseconds.
    Some(cdr_timestamp(i64::try_from(ms).ok()?))
}

/// `page[number]` or `page[size]`: an integer from 1 to `max`, `default` when absent.
fn page_param(
    q: &Query,
    name: &str,
    pointer: &str,
    default: usize,
    max: usize,
    errors: &mut Vec<ErrorObject>,
) -> usize {
    match q.get(name) {
        None => default,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).unwrap_or_else(|| {
            errors.push(ErrorObject::invalid_value(pointer, format!("Must be an integer from 1 to {max}.")));
            default
        }),
    }
}

/// The later of two lower bounds, or the earlier of two upper ones (the stored shape orders as
/// text in time order).
fn narrower(a: Option<String>, b: Option<String>, later: bool) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if (a > b) == later { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The page and the store filter of a list request by `caller` at `now_ms`; `None` for the
/// filter when nothing can match (an account naming another account). Every bad parameter is
/// one error of the 422.
pub fn list_query(q: &Query, caller: &Caller, now_ms: i64) -> Result<(Page, Option<CdrFilter>), ApiError> {
    let mut errors = Vec::new();
    if q.get("filter[record_type]").is_some_and(|t| t != RECORD_TYPE) {
        errors.push(ErrorObject::invalid_enum("/filter/record_type", &[RECORD_TYPE]));
    }
    let (mut gte, mut lte) = (None, None);
    if let Some(name) = q.get("filter[date_range]") {
        match date_range(name, now_ms) {
            Some((from, to)) => (gte, lte) = (from, to),
            None => errors.push(ErrorObject::invalid_enum("/filter/date_range", DATE_RANGES)),
        }
    }
    for (param, pointer, lower) in [
        ("filter[started_at][gte]", "/filter/started_at/gte", true),
        ("filter[started_at][lte]", "/filter/started_at/lte", false),
    ] {
        let Some(v) = q.get(param) else { continue };
        match time_bound(v, lower) {
            Some(t) if lower => gte = narrower(gte, Some(t), true),
            Some(t) => lte = narrower(lte, Some(t), false),
            None => errors.push(ErrorObject::invalid_value(
                pointer,
                "Must be an RFC 3339 date-time, such as 2026-01-02T03:04:05Z or 2026-01-02T04:04:05.500+01:00.",
            )),
        }
    }
    let sip_response_code = q.get("filter[sip_response_code]").and_then(|v| {
        let code = v.parse::<u16>().ok().filter(|c| (100..=699).contains(c));
        if code.is_none() {
            errors.push(ErrorObject::invalid_value(
                "/filter/sip_response_code",
                "Must be a SIP status code, an integer from 100 to 699.",
            ));
        }
        code
    });
    let page = Page {
        number: page_param(q, "page[number]", "/page/number", 1, usize::MAX >> 1, &mut errors),
        size: page_param(q, "page[size]", "/page/size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let named = q.get("filter[account_id]");
    let account_id = match caller {
        Caller::Operator => named.map(str::to_owned),
        Caller::Account(own) if named.is_none_or(|a| a == own) => Some(own.clone()),
        Caller::Account(_) => return Ok((page, None)),
    };
    let filter = CdrFilter {
        account_id,
        connection_id: q.get("filter[connection_id]").map(str::to_owned),
        sip_response_code,
        started_at_gte: gte,
        started_at_lte: lte,
    };
    Ok((page, Some(filter)))
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref());
    let (page, filter) = list_query(&q, &caller, now_ms())?;
    let (records, total) = match filter {
        Some(f) => {
            let offset = (page.number - 1).saturating_mul(page.size);
            s.store.list_cdrs(&f, offset as u64, page.size as u64).await?
        }
        None => (Vec::new(), 0),
    };
    let page = RecordPage {
        data: records.iter().map(|r| present(r, &caller)).collect(),
        meta: json!({
            "page_number": page.number,
            "page_size": page.size,
            "total_pages": total.div_ceil(page.size as u64),
            "total_results": total,
        }),
    };
    Ok(Json(page).into_response())
}

#[derive(Serialize)]
struct RecordShown<'a> {
    data: Presented<'a>,
}

#[derive(Serialize)]
struct RecordPage<'a> {
    data: Vec<Presented<'a>>,
    meta: Value,
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = s.store.get_cdr(&id).await?.filter(|r| caller.sees(&r.account_id)).ok_or_else(ApiError::not_found)?;
    Ok(Json(RecordShown { data: present(&r, &caller) }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-02T03:04:05.678Z.
    const NOW: i64 = 1_767_323_045_678;

    fn range(name: &str) -> (Option<String>, Option<String>) {
        date_range(name, NOW).unwrap()
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn named_ranges() {
        assert_eq!(range("today"), (some("2026-01-02T00:00:00.000Z"), None));
        assert_eq!(range("yesterday"), (some("2026-01-01T00:00:00.000Z"), some("2026-01-01T23:59:59.999Z")));
        assert_eq!(range("last_7_days"), (some("2025-12-26T03:04:05.678Z"), None));
        assert_eq!(range("last_30_days"), (some("2025-12-03T03:04:05.678Z"), None));
        assert_eq!(date_range("last_week", NOW), None);
        // At midnight exactly, today starts now.
        let midnight = NOW - NOW % DAY_MS;
        assert_eq!(date_range("today", midnight).unwrap().0, some("2026-01-02T00:00:00.000Z"));
    }

    #[test]
    fn bounds() {
        assert_eq!(time_bound("2026-01-02T03:04:05Z", true), some("2026-01-02T03:04:05.000Z"));
        assert_eq!(time_bound("2026-01-02T04:04:05.5+01:00", false), some("2026-01-02T03:04:05.500Z"));
        assert_eq!(time_bound("2026-01-01T22:04:05.678-05:00", true), some("2026-01-02T03:04:05.678Z"));
        // Finer than a millisecond: a lower bound rounds up, an upper one down.
        assert_eq!(time_bound("2026-01-02T03:04:05.0001Z", true), some("2026-01-02T03:04:05.001Z"));
        assert_eq!(time_bound("2026-01-02T03:04:05.0009Z", false), some("2026-01-02T03:04:05.000Z"));
        // The ends of RFC 3339's years stay within the stored shape.
        assert_eq!(time_bound("0000-01-01T00:00:00+01:00", true), some("0000-01-01T00:00:00.000Z"));
        assert_eq!(time_bound("9999-12-31T23:59:59.999-01:00", false), some("9999-12-31T23:59:59.999Z"));
        for bad in ["", "2026-01-02", "2026-01-02T03:04:05", "yesterday", "2026-13-02T03:04:05Z", "1767323045678"] {
            assert_eq!(time_bound(bad, true), None, "{bad}");
        }
    }

    #[test]
    fn query_to_filter() {
        let q = |s: &str| Query::parse(Some(s));
        let account = Caller::Account("a1".into());
        let (page, f) = list_query(&q(""), &account, NOW).unwrap();
        assert_eq!(page, Page { number: 1, size: 20 });
        assert_eq!(f, Some(CdrFilter { account_id: some("a1"), ..CdrFilter::default() }));
        assert_eq!(list_query(&q(""), &Caller::Operator, NOW).unwrap().1, Some(CdrFilter::default()));
        assert_eq!(list_query(&q("filter[account_id]=a2"), &account, NOW).unwrap().1, None);
        assert_eq!(list_query(&q("filter[account_id]=a1"), &account, NOW).unwrap().1.unwrap().account_id, some("a1"));
        // A date range and explicit bounds: the narrowest of each side.
        let (_, f) = list_query(
            &q("filter[date_range]=yesterday&filter[started_at][gte]=2026-01-01T12:00:00Z\
                &filter[started_at][lte]=2026-01-03T00:00:00Z&filter[sip_response_code]=486\
                &filter[connection_id]=c1&filter[record_type]=sip-trunking&page[number]=3&page[size]=250"),
            &Caller::Operator,
            NOW,
        )
        .unwrap();
        assert_eq!(
            f,
            Some(CdrFilter {
                account_id: None,
                connection_id: some("c1"),
                sip_response_code: Some(486),
                started_at_gte: some("2026-01-01T12:00:00.000Z"),
                started_at_lte: some("2026-01-01T23:59:59.999Z"),
            })
        );
        let e = list_query(
            &q("filter[record_type]=messaging&filter[date_range]=last_week&filter[started_at][gte]=soon\
                &filter[started_at][lte]=2026-01-02&filter[sip_response_code]=99&page[size]=251&page[number]=0"),
            &Caller::Operator,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_deref().unwrap()).collect();
        assert_eq!(
            pointers,
            [
                "/filter/record_type",
                "/filter/date_range",
                "/filter/started_at/gte",
                "/filter/started_at/lte",
                "/filter/sip_response_code",
                "/page/number",
                "/page/size"
            ]
        );
        assert_eq!(e.errors[0].code, "10032");
        assert_eq!(e.errors[2].code, "10015");
    }
}
