//! `/v2/outbound_voice_profiles`: what an account's outbound calls may do. A profile names the
//! destinations (ISO 3166-1 alpha-2 countries) its calls may reach, its channel limit
//! (`concurrent_call_limit`, null for none), the highest per-minute rate a destination may cost
//! (`max_destination_rate`), the daily spend cap (`daily_spend_limit`, enforced only when
//! `daily_spend_limit_enabled`), which calls are recorded (`call_recording`) and when calls may
//! start (`calling_window`, UTC). Follows the contract's `OutboundVoiceProfile` field for field:
//!
//! - Create answers 200 (the contract's code for this operation, not 201); delete answers 200
//!   with the deleted profile. A profile any connection uses (`outbound.outbound_voice_profile_id`
//!   of a connection of any type) is not deleted: 422, naming how many connections use it
//!   (counted and deleted in one transaction, see [`cc::delete_profile_unless_used`]).
//! - `name` (3 to 255 characters) is required on create and on PATCH alike.
//! - Fields without a contract default and not nullable (`daily_spend_limit`,
//!   `max_destination_rate`, `calling_window`) are absent until set; null clears them on PATCH.
//!   `call_recording` starts as `{"call_recording_type": "none", "call_recording_channels":
//!   "single", "call_recording_format": "wav", "call_recording_caller_phone_numbers": []}`;
//!   nested objects are merged key by key on PATCH.
//! - `concurrent_call_limit` must be no more than the account's own limit (the contract: "Must
//!   be no more than your global concurrent call limit"), checked when it is set.
//! - `connections_count` is counted when a profile is shown: the connections of every type that
//!   use it ([`cc::connections_per_profile`]).
//! - List errors (`page[...]`, `sort`) answer 422, the contract's only error code for this
//!   list besides 401.

use std::cmp::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Value, json};
use store::Resource;

use crate::connections_common as cc;
use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

const KIND: &str = cc::PROFILE_KIND;
pub const TRAFFIC_TYPES: &[&str] = &["conversational"];
pub const SERVICE_PLANS: &[&str] = &["global"];
pub const USAGE_PAYMENT_METHODS: &[&str] = &["rate-deck"];
pub const CALL_RECORDING_TYPES: &[&str] = &["all", "none", "by_caller_phone_number"];
pub const CALL_RECORDING_CHANNELS: &[&str] = &["single", "dual"];
pub const CALL_RECORDING_FORMATS: &[&str] = &["wav", "mp3"];
/// The contract's `SortOutboundVoiceProfile` enumeration; `-` sorts descending.
pub const SORTS: &[&str] = &[
    "enabled",
    "-enabled",
    "created_at",
    "-created_at",
    "name",
    "-name",
    "service_plan",
    "-service_plan",
    "traffic_type",
    "-traffic_type",
    "usage_payment_method",
    "-usage_payment_method",
];
const DEFAULT_SORT: &str = "-created_at";

/// The officially assigned ISO 3166-1 alpha-2 codes, plus `XK` (Kosovo, in common use).
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "XK", "YE", "YT",
    "ZA", "ZM", "ZW",
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/outbound_voice_profiles", get(list).post(create))
        .route("/outbound_voice_profiles/{id}", get(show).patch(update).delete(remove))
}

/// A destination: an ISO 3166-1 alpha-2 code, two uppercase letters.
pub fn is_country(s: &str) -> bool {
    COUNTRIES.binary_search(&s).is_ok()
}

/// An E.164 number: `+`, then 2 to 15 digits, the first not 0.
fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A UUID in its hyphenated form (`6a09cdc3-8948-47f0-aa62-74ac943d6c58`).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A UTC time of day: `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fff`, optionally ending in `Z`
/// (the contract's example is `08:00:00.00Z`).
fn is_utc_time(s: &str) -> bool {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (s, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let two = |p: &str, max: u32| {
        p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|v| v <= max)
    };
    match hms.split(':').collect::<Vec<_>>().as_slice() {
        [h, m] => frac.is_none() && two(h, 23) && two(m, 59),
        [h, m, sec] => two(h, 23) && two(m, 59) && two(sec, 59),
        _ => false,
    }
}

fn default_call_recording() -> Value {
    json!({
        "call_recording_type": "none",
        "call_recording_caller_phone_numbers": [],
        "call_recording_channels": "single",
        "call_recording_format": "wav",
    })
}

/// A new profile's document before the request's fields: the contract's defaults.
fn defaults() -> Value {
    json!({
        "record_type": "outbound_voice_profile",
        "enabled": true,
        "traffic_type": "conversational",
        "service_plan": "global",
        "usage_payment_method": "rate-deck",
        "whitelisted_destinations": ["US", "CA"],
        "concurrent_call_limit": null,
        "daily_spend_limit_enabled": false,
        "call_recording": default_call_recording(),
        "billing_group_id": null,
        "tags": [],
    })
}

/// Sets `key` to `value`, or removes it for `None`.
fn set_or_remove(doc: &mut Value, key: &str, value: Option<Value>) {
    if let Some(o) = doc.as_object_mut() {
        match value {
            Some(v) => o.insert(key.to_owned(), v),
            None => o.remove(key),
        };
    }
}

/// The profile document from validated fields over `base` (the stored one on PATCH).
/// `account_limit` is the owning account's concurrent call limit (None: no limit).
fn build(f: &mut Fields, base: Option<&Value>, account_limit: Option<i64>) -> Option<Value> {
    let creating = base.is_none();
    let name = f.string("name", true, 3, 255);
    let enabled = f.boolean("enabled", creating.then_some(true));
    let traffic = f.one_of("traffic_type", TRAFFIC_TYPES, creating.then_some("conversational"));
    let plan = f.one_of("service_plan", SERVICE_PLANS, creating.then_some("global"));
    let payment = f.one_of("usage_payment_method", USAGE_PAYMENT_METHODS, creating.then_some("rate-deck"));
    let destinations = f.string_list(
        "whitelisted_destinations",
        creating.then_some(&["US", "CA"][..]),
        is_country,
        "Must be an ISO 3166-1 alpha-2 country code, such as \"US\".",
    );
    let tags = f.string_list(
        "tags",
        creating.then_some(&[][..]),
        |s| (1..=255).contains(&s.chars().count()),
        "Must be a string of 1 to 255 characters.",
    );
    let limit = f.integer("concurrent_call_limit", 0, 1_000_000, None, true);
    let spend = f.decimal_string("daily_spend_limit", 2);
    let spend_enabled = f.boolean("daily_spend_limit_enabled", creating.then_some(false));
    let max_rate = f.number("max_destination_rate", 0.0);
    let billing_group = f.string_matching("billing_group_id", is_uuid, "Must be a UUID or null.");

    let mut recording = None;
    if let Some(Some(mut r)) = f.object("call_recording") {
        let rtype = r.one_of("call_recording_type", CALL_RECORDING_TYPES, None);
        let channels = r.one_of("call_recording_channels", CALL_RECORDING_CHANNELS, None);
        let format = r.one_of("call_recording_format", CALL_RECORDING_FORMATS, None);
        let numbers = r.string_list(
            "call_recording_caller_phone_numbers",
            None,
            is_e164,
            "Must be a phone number in E.164 format, such as \"+19705555098\".",
        );
        let mut given = serde_json::Map::new();
        for (key, value) in [
            ("call_recording_type", rtype.map(Value::from)),
            ("call_recording_channels", channels.map(Value::from)),
            ("call_recording_format", format.map(Value::from)),
            ("call_recording_caller_phone_numbers", numbers.map(Value::from)),
        ] {
            if let Some(v) = value {
                given.insert(key.to_owned(), v);
            }
        }
        recording = Some(given);
        f.absorb("call_recording", r);
    }

    let mut window = None;
    if let Some(Some(mut w)) = f.object("calling_window") {
        let detail = "Must be a UTC time of day, such as \"08:00\" or \"08:00:00.00Z\".";
        let start = w.string_matching("start_time", is_utc_time, detail);
        let end = w.string_matching("end_time", is_utc_time, detail);
        let per_cld = w.integer("calls_per_cld", 0, 1_000_000, None, true);
        let given: Vec<(&str, bool, Option<Value>)> = vec![
            ("start_time", w.has("start_time"), start.flatten().map(Value::from)),
            ("end_time", w.has("end_time"), end.flatten().map(Value::from)),
            ("calls_per_cld", w.has("calls_per_cld"), per_cld.map(|v| json!(v))),
        ];
        window = Some(given);
        f.absorb("calling_window", w);
    }

    if !f.errors.is_empty() {
        return None;
    }

    let mut doc = base.cloned().unwrap_or_else(defaults);
    if let Some(n) = name {
        doc["name"] = json!(n);
    }
    if let Some(e) = enabled {
        doc["enabled"] = json!(e);
    }
    if let Some(t) = traffic {
        doc["traffic_type"] = json!(t);
    }
    if let Some(p) = plan {
        doc["service_plan"] = json!(p);
    }
    if let Some(p) = payment {
        doc["usage_payment_method"] = json!(p);
    }
    if let Some(d) = destinations {
        doc["whitelisted_destinations"] = json!(d);
    }
    if let Some(t) = tags {
        doc["tags"] = json!(t);
    }
    if f.has("concurrent_call_limit") {
        doc["concurrent_call_limit"] = json!(limit.flatten());
    }
    if f.has("daily_spend_limit") {
        set_or_remove(&mut doc, "daily_spend_limit", spend.flatten().map(Value::from));
    }
    if let Some(e) = spend_enabled {
        doc["daily_spend_limit_enabled"] = json!(e);
    }
    if f.has("max_destination_rate") {
        set_or_remove(&mut doc, "max_destination_rate", max_rate.flatten().map(Value::Number));
    }
    if f.has("billing_group_id") {
        doc["billing_group_id"] = json!(billing_group.flatten());
    }
    if f.has("call_recording") {
        match recording {
            Some(given) => {
                if !doc["call_recording"].is_object() {
                    doc["call_recording"] = default_call_recording();
                }
                for (k, v) in given {
                    doc["call_recording"][k] = v;
                }
            }
            None => doc["call_recording"] = default_call_recording(),
        }
    }
    if f.has("calling_window") {
        match window {
            Some(given) => {
                let mut w = doc.get("calling_window").filter(|w| w.is_object()).cloned().unwrap_or_else(|| json!({}));
                for (key, present, value) in given {
                    if present {
                        set_or_remove(&mut w, key, value);
                    }
                }
                doc["calling_window"] = w;
            }
            None => set_or_remove(&mut doc, "calling_window", None),
        }
    }

    // Rules across fields, on the profile as it would be stored.
    if (f.has("daily_spend_limit") || f.has("daily_spend_limit_enabled"))
        && doc["daily_spend_limit_enabled"] == json!(true)
        && doc.get("daily_spend_limit").is_none_or(Value::is_null)
    {
        f.errors.push(ErrorObject::invalid_value(
            "/daily_spend_limit",
            "A daily spend limit is required when daily_spend_limit_enabled is true.",
        ));
    }
    let rec = &doc["call_recording"];
    if f.has("call_recording")
        && rec["call_recording_type"] == "by_caller_phone_number"
        && rec["call_recording_caller_phone_numbers"].as_array().is_none_or(Vec::is_empty)
    {
        f.errors.push(ErrorObject::invalid_value(
            "/call_recording/call_recording_caller_phone_numbers",
            "At least one number is required when call_recording_type is by_caller_phone_number.",
        ));
    }
    if let (true, Some(max), Some(n)) =
        (f.has("concurrent_call_limit"), account_limit, doc["concurrent_call_limit"].as_i64())
        && n > max
    {
        f.errors.push(ErrorObject::invalid_value(
            "/concurrent_call_limit",
            format!("Must be no more than the account's concurrent call limit ({max})."),
        ));
    }
    f.errors.is_empty().then_some(doc)
}

/// The owning account's concurrent call limit, or `None` when it has none or does not exist.
async fn account_limit(s: &ApiState, account_id: &str) -> Result<Option<Option<i64>>, ApiError> {
    let Some(r) = s.store.get_resource("account", account_id).await? else { return Ok(None) };
    let doc: Value = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
    Ok(Some(doc["concurrent_call_limit"].as_i64()))
}

/// The profile as the API shows it: the stored document plus what is derived at read time,
/// `connections` being how many connections use it. The operator also sees the owning
/// `account_id` (an operator extension).
fn present(mut doc: Value, account_id: &str, caller: &Caller, connections: u64) -> Value {
    doc["connections_count"] = json!(connections);
    // `calls_per_cld` null means "no limit" in the contract's words, but its type is a plain
    // integer: unset, it is left out (see `connections_common::UNSET_IN_RESPONSES`).
    crate::connections_common::omit_unset(&mut doc, &["/calling_window/calls_per_cld"]);
    if *caller == Caller::Operator {
        doc["account_id"] = json!(account_id);
    }
    doc
}

/// Create. The operator must name the owning account with the body field `account_id` (an
/// operator extension, not in the contract); an account's key creates in its own account, and
/// may send `account_id` only as its own id.
async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::parse(&body)?;
    let owner = match &caller {
        Caller::Operator => f.string("account_id", true, 1, 64),
        Caller::Account(own) => {
            if let Some(Some(given)) = f.nullable_string("account_id")
                && given != *own
            {
                f.errors.push(ErrorObject::invalid_value("/account_id", "Only the operator may name another account."));
            }
            Some(own.clone())
        }
    };
    let mut limit = None;
    if let Some(a) = &owner {
        match account_limit(&s, a).await? {
            Some(l) => limit = l,
            None => f.errors.push(ErrorObject::invalid_value("/account_id", "No account has this id.")),
        }
    }
    let doc = build(&mut f, None, limit);
    f.finish()?;
    let (mut doc, owner) = doc.zip(owner).ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let r = Resource {
        kind: KIND.into(),
        id,
        account_id: owner,
        name: doc["name"].as_str().unwrap_or_default().to_owned(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    s.store.insert_resource(&r, &[]).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, 0) })))
}

/// Orders two profiles by one of the sortable fields (ascending).
fn compare(a: &Value, b: &Value, field: &str) -> Ordering {
    match field {
        "enabled" => a[field].as_bool().cmp(&b[field].as_bool()),
        "name" => {
            let (x, y) = (a[field].as_str().unwrap_or_default(), b[field].as_str().unwrap_or_default());
            x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y))
        }
        _ => a[field].as_str().cmp(&b[field].as_str()),
    }
}

/// List, with `page[number]`, `page[size]` (1 to 250, default 20), `filter[name][contains]`
/// (case-insensitive) and `sort` (default `-created_at`). The operator sees every account's
/// profiles and may narrow them with `filter[account_id]` (an operator extension).
async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let page = q.page(20, 250).map_err(ApiError::unprocessable)?;
    let (field, descending) = q.sort(SORTS, DEFAULT_SORT).map_err(ApiError::unprocessable)?;
    let name_filter = q.get("filter[name][contains]").map(str::to_lowercase);
    let account_filter = q.get("filter[account_id]");
    let scope = match &caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account_filter,
    };
    let mut items: Vec<(Value, String)> = s
        .store
        .list_resources(KIND, scope)
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.account_id))
        .filter(|r| account_filter.is_none_or(|a| r.account_id == a))
        .filter(|r| name_filter.as_ref().is_none_or(|n| r.name.to_lowercase().contains(n)))
        .filter_map(|r| serde_json::from_str(&r.body).ok().map(|doc| (doc, r.account_id)))
        .collect();
    items.sort_by(|(a, _), (b, _)| {
        let o = compare(a, b, field);
        if descending { o.reverse() } else { o }
    });
    let counts = cc::connections_per_profile(&*s.store, scope).await?;
    let items = items
        .into_iter()
        .map(|(doc, account): (Value, String)| {
            let n = doc["id"].as_str().and_then(|id| counts.get(id)).copied().unwrap_or(0);
            present(doc, &account, &caller, n)
        })
        .collect();
    Ok(Json(page.envelope(items)))
}

/// The profile if this caller may see it; another account's answers 404 like a missing one.
async fn fetch(s: &ApiState, caller: &Caller, id: &str) -> Result<(Resource, Value), ApiError> {
    crate::fetch(&*s.store, caller, KIND, id).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, &id).await?;
    let n = cc::connections_using_profile(&*s.store, &r.account_id, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, n) })))
}

/// PATCH: the fields given change, the others stay; `name` is required all the same.
async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, base) = fetch(&s, &caller, &id).await?;
    let mut f = Fields::parse(&body)?;
    if let Some(Some(given)) = f.nullable_string("account_id")
        && given != r.account_id
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "The owning account cannot be changed."));
    }
    let limit = account_limit(&s, &r.account_id).await?.flatten();
    let doc = build(&mut f, Some(&base), limit);
    f.finish()?;
    let mut doc = doc.ok_or_else(ApiError::internal)?;
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.name = doc["name"].as_str().unwrap_or_default().to_owned();
    r.body = doc.to_string();
    r.updated_at = now;
    if !s.store.update_resource(&r, &[]).await? {
        return Err(ApiError::not_found());
    }
    let n = cc::connections_using_profile(&*s.store, &r.account_id, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, n) })))
}

/// DELETE answers 200 with the deleted profile, as the contract gives; 422 while connections
/// use it.
async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, &id).await?;
    if !cc::delete_profile_unless_used(&*s.store, &id).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, 0) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_sorted_for_binary_search() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_country("US") && is_country("XK") && !is_country("us") && !is_country("ZZ") && !is_country("USA"));
    }

    #[test]
    fn formats() {
        assert!(is_e164("+19705555098") && !is_e164("19705555098") && !is_e164("+0123") && !is_e164("+1 970"));
        assert!(is_uuid("6a09cdc3-8948-47f0-aa62-74ac943d6c58") && !is_uuid("6a09cdc3894847f0aa6274ac943d6c58"));
        for ok in ["08:00", "20:00:00", "08:00:00.00Z", "23:59:59.999", "00:00Z"] {
            assert!(is_utc_time(ok), "{ok}");
        }
        for bad in ["24:00", "8:00", "08:60", "08:00:00.", "08:00.5", "noon", "08:00:00+01:00", ""] {
            assert!(!is_utc_time(bad), "{bad}");
        }
    }
}
