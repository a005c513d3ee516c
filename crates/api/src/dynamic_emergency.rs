//! `/v2/dynamic_emergency_addresses` and `/v2/dynamic_emergency_endpoints`: Dynamic E911. An
//! address is a physical location an emergency call may come from; an endpoint binds a caller
//! (`caller_name`, `callback_number`) to an address. A call names them in its SIP INVITE
//! (`Geolocation: {sip_geolocation_id}`, `sip_from_id` in `From` or `P-Asserted-Identity`).
//! Both follow the contract's `DynamicEmergencyAddress` / `DynamicEmergencyEndpoint` field for
//! field; neither can be changed once created (the contract has no PATCH): delete and create.
//!
//! - Ids are UUIDs (the contract's examples and its `format: uuid` path parameter), not the
//!   19-digit ids of other resources. An id that is not a UUID answers 404 like a missing one.
//! - Create answers 201, delete 200 with the deleted resource, as the contract gives.
//! - Address validation is structural; there is no external address-validation service here.
//!   The contract's required fields are required (`house_number` too, though the product docs'
//!   table marks it optional); lengths follow the docs' "Address field limits" (house_number 6,
//!   house_suffix 45, directionals 2 letters, street_name 200, street_suffix 45,
//!   extended_address 60, locality 100); no value may be empty or blank. `country_code` is the
//!   contract's enumeration (US, CA, PR; 10032 otherwise). `administrative_area` is a state
//!   (the 50 and DC) for US, a province or territory for CA, and `PR` for PR. `postal_code` is a
//!   ZIP code (`^\d{5}(-\d{4})?$`) for US, one in Puerto Rico's ranges (006, 007, 009) for PR,
//!   and `A1A 1A1` (or `A1A1A1`, letters as Canada Post assigns them) for CA. Codes are
//!   upper case as the contract's examples, not folded.
//! - `extended_address`: the docs' common terms are abbreviated as whole words, whatever their
//!   case (APARTMENT→APT, FLOOR→FL, SUITE→STE, BUILDING→BLDG, ROOM→RM), and the 60-character
//!   limit applies to the result, which is what is stored and shown.
//! - Status: the docs give `pending` "during validation", `activated` "when ready". Validation
//!   happens before anything is stored, and an address that fails it is refused with 422 (so
//!   nothing is ever `rejected`), so a stored address is ready: it is `activated` at once. An
//!   endpoint takes its address's status, so it is `activated` too. `pending` and `rejected`
//!   remain valid filter values.
//! - `sip_geolocation_id` / `sip_from_id`: 10 random upper-case letters and digits, unique
//!   across the platform (claimed in the store), since a call's SIP headers name them.
//! - An endpoint's `dynamic_emergency_address_id` must name an `activated` address of the
//!   endpoint's own account; another account's address is refused exactly like a missing one.
//!   `callback_number` is E.164; `caller_name` 1 to 50 characters (the docs' limit).
//! - An address an endpoint uses cannot be deleted (422, code 10007, naming the endpoints).
//!   Creating an endpoint and deleting its address race safely: each writes, then checks for
//!   the other (an endpoint whose address vanished is removed again; an address deleted while
//!   an endpoint appeared is put back), so no endpoint is ever left without its address.
//! - Lists: `page[number]`, `page[size]` (1 to 250, default 20), `filter[status]` (the
//!   contract's enumeration, 10032 otherwise), `filter[country_code]` (not case-sensitive; for
//!   endpoints, their address's country); oldest first (the contract names no order or sort).
//!   Query errors answer 400, the contract's code for a bad request.
//! - Tenancy: an account's key sees and uses only its own; the operator sees all, with
//!   `account_id` shown, may narrow lists with `filter[account_id]`, and names `account_id` when
//!   creating (operator extensions, not in the contract).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::{Resource, StoreError};

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, now_timestamp};

const ADDRESS: &str = "dynamic_emergency_address";
const ENDPOINT: &str = "dynamic_emergency_endpoint";
pub const COUNTRY_CODES: &[&str] = &["US", "CA", "PR"];
pub const STATUSES: &[&str] = &["pending", "activated", "rejected"];

/// The 50 states and the District of Columbia, sorted.
const US_STATES: &[&str] = &[
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL", "IN", "KS", "KY", "LA",
    "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR",
    "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA", "WI", "WV", "WY",
];
/// Canada's provinces and territories, sorted.
const CA_PROVINCES: &[&str] = &["AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT"];

/// The docs' abbreviations for `extended_address`.
const ABBREVIATIONS: &[(&str, &str)] =
    &[("APARTMENT", "APT"), ("FLOOR", "FL"), ("SUITE", "STE"), ("BUILDING", "BLDG"), ("ROOM", "RM")];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/dynamic_emergency_addresses", get(list_addresses).post(create_address))
        .route("/dynamic_emergency_addresses/{id}", get(show_address).delete(remove_address))
        .route("/dynamic_emergency_endpoints", get(list_endpoints).post(create_endpoint))
        .route("/dynamic_emergency_endpoints/{id}", get(show_endpoint).delete(remove_endpoint))
}

/// A random version-4 UUID, hyphenated.
fn new_uuid() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| ApiError::internal())?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A SIP reference token: 10 upper-case letters and digits.
fn new_token() -> Result<String, ApiError> {
    const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(10);
    while out.len() < 10 {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|_| ApiError::internal())?;
        // 252 = 7 * 36: no bias.
        for x in b.into_iter().filter(|x| *x < 252) {
            if out.len() < 10 {
                out.push(char::from(ALPHABET[usize::from(x % 36)]));
            }
        }
    }
    Ok(out)
}

/// A UUID in its hyphenated form, any case.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An E.164 number: `+`, then 2 to 15 digits, the first not 0.
fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A US ZIP code: `^\d{5}(-\d{4})?$`.
fn is_zip(s: &str) -> bool {
    let (five, four) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    digits(five, 5) && four.is_none_or(|f| digits(f, 4))
}

/// A Canadian postal code, `A1A 1A1` or `A1A1A1`: letters as Canada Post assigns them (never
/// D, F, I, O, Q or U; W and Z never first).
fn is_canadian_postal_code(s: &str) -> bool {
    let compact: Vec<u8> = match s.len() {
        6 => s.bytes().collect(),
        7 if s.as_bytes()[3] == b' ' => s.bytes().filter(|b| *b != b' ').collect(),
        _ => return false,
    };
    let letter = |b: u8| b.is_ascii_uppercase() && !b"DFIOQU".contains(&b);
    compact.len() == 6
        && letter(compact[0])
        && !b"WZ".contains(&compact[0])
        && compact[1].is_ascii_digit()
        && letter(compact[2])
        && compact[3].is_ascii_digit()
        && letter(compact[4])
        && compact[5].is_ascii_digit()
}

/// `extended_address` with the docs' common terms abbreviated (whole words, any case).
fn abbreviate(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let upper = word.to_uppercase();
        match ABBREVIATIONS.iter().find(|(long, _)| *long == upper) {
            Some((_, short)) => out.push_str(short),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A string field of `1..=max` characters, not blank.
fn text(f: &mut Fields, name: &str, required: bool, max: usize) -> Option<String> {
    let v = f.string(name, required, 1, max)?;
    if v.trim().is_empty() {
        f.errors.push(ErrorObject::invalid_value(&format!("/{name}"), "Must not be blank."));
        return None;
    }
    Some(v)
}

/// The owning account of a new resource: the caller's own, or the one the operator names with
/// `account_id` (which must exist).
async fn owner(s: &ApiState, caller: &Caller, f: &mut Fields) -> Result<Option<String>, ApiError> {
    let owner = match caller {
        Caller::Operator => f.string("account_id", true, 1, 64),
        Caller::Account(own) => {
            if let Some(Some(given)) = f.nullable_string("account_id")
                && given != *own
            {
                f.errors.push(ErrorObject::invalid_value("/account_id", "Only the operator may name another account."));
            }
            return Ok(Some(own.clone()));
        }
    };
    if let Some(a) = &owner
        && s.store.get_resource("account", a).await?.is_none()
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "No account has this id."));
        return Ok(None);
    }
    Ok(owner)
}

/// A resource as the API shows it: the stored document, plus the owning `account_id` for the
/// operator (an operator extension).
fn present(mut doc: Value, account_id: &str, caller: &Caller) -> Value {
    if *caller == Caller::Operator {
        doc["account_id"] = json!(account_id);
    }
    doc
}

/// Stores a new resource whose document gets a fresh `token_field` token, claimed as unique;
/// a (vanishingly unlikely) clash draws another.
async fn insert_with_token(s: &ApiState, r: &mut Resource, doc: &mut Value, token_field: &str) -> Result<(), ApiError> {
    for _ in 0..5 {
        let token = new_token()?;
        doc[token_field] = json!(token);
        r.body = doc.to_string();
        match s.store.insert_resource(r, &[(token_field, &token)]).await {
            Err(StoreError::Conflict { .. }) => {
                r.id = new_uuid()?;
                doc["id"] = json!(r.id);
            }
            other => return Ok(other?),
        }
    }
    Err(ApiError::internal())
}

/// A new resource's row and document: id, record type, status and timestamps set.
fn new_resource(kind: &str, owner: String, name: String, mut doc: Value) -> Result<(Resource, Value), ApiError> {
    let id = new_uuid()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["record_type"] = json!(kind);
    doc["status"] = json!("activated");
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let r = Resource {
        kind: kind.into(),
        id,
        account_id: owner,
        name,
        body: String::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    Ok((r, doc))
}

/// The resource of `kind` if this caller may see it; another account's (or a malformed id)
/// answers 404 like a missing one.
async fn fetch(s: &ApiState, caller: &Caller, kind: &str, id: &str) -> Result<(Resource, Value), ApiError> {
    if !is_uuid(id) {
        return Err(ApiError::not_found());
    }
    crate::fetch(&*s.store, caller, kind, id).await
}

/// The validated address document (without id, status, timestamps), or `None` with the faults
/// in `f`.
fn build_address(f: &mut Fields) -> Option<Value> {
    let house_number = text(f, "house_number", true, 6);
    let house_suffix = text(f, "house_suffix", false, 45);
    let directional = |f: &mut Fields, name: &str| {
        let v = f.string(name, false, 1, 2)?;
        if v.chars().all(|c| c.is_ascii_alphabetic()) {
            Some(v)
        } else {
            f.errors.push(ErrorObject::invalid_value(&format!("/{name}"), "Must be 1 or 2 letters, such as \"N\"."));
            None
        }
    };
    let pre = directional(f, "street_pre_directional");
    let street_name = text(f, "street_name", true, 200);
    let street_suffix = text(f, "street_suffix", false, 45);
    let post = directional(f, "street_post_directional");
    let extended = text(f, "extended_address", false, usize::MAX >> 1).map(|v| abbreviate(&v));
    if extended.as_ref().is_some_and(|v| v.chars().count() > 60) {
        f.errors.push(ErrorObject::invalid_value(
            "/extended_address",
            "Must be at most 60 characters long (after APARTMENT, FLOOR, SUITE, BUILDING and ROOM are abbreviated).",
        ));
    }
    let locality = text(f, "locality", true, 100);
    let area = f.string("administrative_area", true, 1, 2);
    let postal = f.string("postal_code", true, 1, 10);
    let country = if f.has("country_code") && !f.is_null("country_code") {
        f.one_of("country_code", COUNTRY_CODES, None)
    } else {
        f.errors.push(ErrorObject::required("/country_code"));
        None
    };

    if let (Some(c), Some(a)) = (country.as_deref(), area.as_deref()) {
        let (ok, detail) = match c {
            "US" => (US_STATES.binary_search(&a).is_ok(), "Must be a US state code (or DC), such as \"TX\"."),
            "CA" => (
                CA_PROVINCES.binary_search(&a).is_ok(),
                "Must be a Canadian province or territory code, such as \"ON\".",
            ),
            _ => (a == "PR", "Must be \"PR\" for an address in Puerto Rico."),
        };
        if !ok {
            f.errors.push(ErrorObject::invalid_value("/administrative_area", detail));
        }
    }
    if let (Some(c), Some(p)) = (country.as_deref(), postal.as_deref()) {
        let (ok, detail) = match c {
            "US" => {
                (is_zip(p), "Must be a ZIP code: 5 digits, optionally a hyphen and 4 more (\"78701\", \"78701-1234\").")
            }
            "CA" => (is_canadian_postal_code(p), "Must be a Canadian postal code, such as \"K1A 0B1\"."),
            _ => (
                is_zip(p) && ["006", "007", "009"].iter().any(|z| p.starts_with(z)),
                "Must be a Puerto Rico ZIP code (006xx, 007xx or 009xx), optionally a hyphen and 4 more digits.",
            ),
        };
        if !ok {
            f.errors.push(ErrorObject::invalid_value("/postal_code", detail));
        }
    }
    if !f.errors.is_empty() {
        return None;
    }

    let mut doc = json!({});
    for (key, value) in [
        ("house_number", house_number),
        ("house_suffix", house_suffix),
        ("street_pre_directional", pre),
        ("street_name", street_name),
        ("street_suffix", street_suffix),
        ("street_post_directional", post),
        ("extended_address", extended),
        ("locality", locality),
        ("administrative_area", area),
        ("postal_code", postal),
        ("country_code", country),
    ] {
        if let Some(v) = value {
            doc[key] = json!(v);
        }
    }
    Some(doc)
}

async fn create_address(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let owner = owner(&s, &caller, &mut f).await?;
    let doc = build_address(&mut f);
    f.finish()?;
    let (doc, owner) = doc.zip(owner).ok_or_else(ApiError::internal)?;
    let name = [&doc["house_number"], &doc["street_name"], &doc["locality"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let (mut r, mut doc) = new_resource(ADDRESS, owner, name, doc)?;
    insert_with_token(&s, &mut r, &mut doc, "sip_geolocation_id").await?;
    Ok((StatusCode::CREATED, Json(json!({ "data": present(doc, &r.account_id, &caller) }))))
}

/// The endpoints of `account_id` that use the address `address_id`.
async fn endpoints_using(s: &ApiState, account_id: &str, address_id: &str) -> Result<Vec<String>, ApiError> {
    Ok(s.store
        .list_resources(ENDPOINT, Some(account_id))
        .await?
        .into_iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok().map(|doc| (r.id, doc)))
        .filter(|(_, doc)| doc["dynamic_emergency_address_id"].as_str() == Some(address_id))
        .map(|(id, _)| id)
        .collect())
}

fn in_use(endpoints: &[String]) -> ApiError {
    let shown: Vec<&str> = endpoints.iter().take(5).map(String::as_str).collect();
    let more = if endpoints.len() > shown.len() {
        format!(" and {} more", endpoints.len() - shown.len())
    } else {
        String::new()
    };
    ApiError::invalid(vec![ErrorObject {
        code: "10007",
        title: "Address in use".into(),
        detail: format!(
            "This address is used by {} dynamic emergency endpoint(s) ({}{more}); delete them first.",
            endpoints.len(),
            shown.join(", ")
        ),
        pointer: None,
    }])
}

/// DELETE answers 200 with the deleted address; one that an endpoint uses is refused (422).
async fn remove_address(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, ADDRESS, &id).await?;
    let users = endpoints_using(&s, &r.account_id, &id).await?;
    if !users.is_empty() {
        return Err(in_use(&users));
    }
    if !s.store.delete_resource(ADDRESS, &id).await? {
        return Err(ApiError::not_found());
    }
    // An endpoint created meanwhile (it checked the address before this delete) keeps it.
    let users = endpoints_using(&s, &r.account_id, &id).await?;
    if !users.is_empty() {
        let token = doc["sip_geolocation_id"].as_str().unwrap_or_default().to_owned();
        s.store.insert_resource(&r, &[("sip_geolocation_id", &token)]).await?;
        return Err(in_use(&users));
    }
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

async fn show_address(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, ADDRESS, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

/// The list query shared by both lists: page, `filter[status]`, `filter[country_code]` and the
/// operator's `filter[account_id]`.
struct ListQuery<'a> {
    page: crate::query::Page,
    status: Option<&'a str>,
    country: Option<String>,
    account: Option<&'a str>,
}

fn list_query<'a>(q: &'a Query) -> Result<ListQuery<'a>, ApiError> {
    let page = q.page(20, 250)?;
    let status = q.get("filter[status]");
    if status.is_some_and(|v| !STATUSES.contains(&v)) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: vec![ErrorObject {
                code: "10032",
                title: "Invalid enumerated value".into(),
                detail: format!("filter[status] must be one of: {}.", STATUSES.join(", ")),
                pointer: None,
            }],
        });
    }
    Ok(ListQuery {
        page,
        status,
        country: q.get("filter[country_code]").map(str::to_uppercase),
        account: q.get("filter[account_id]"),
    })
}

/// The caller's resources of `kind` (narrowed by the operator's `filter[account_id]`), as
/// (document, owner), oldest first.
async fn visible(
    s: &ApiState,
    caller: &Caller,
    kind: &str,
    account: Option<&str>,
) -> Result<Vec<(Value, String)>, ApiError> {
    let scope = match caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account,
    };
    Ok(s.store
        .list_resources(kind, scope)
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.account_id) && account.is_none_or(|a| r.account_id == a))
        .filter_map(|r| serde_json::from_str(&r.body).ok().map(|doc| (doc, r.account_id)))
        .collect())
}

async fn list_addresses(
    State(s): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let lq = list_query(&q)?;
    let items = visible(&s, &caller, ADDRESS, lq.account)
        .await?
        .into_iter()
        .filter(|(doc, _)| lq.status.is_none_or(|st| doc["status"].as_str() == Some(st)))
        .filter(|(doc, _)| lq.country.as_deref().is_none_or(|c| doc["country_code"].as_str() == Some(c)))
        .map(|(doc, account)| present(doc, &account, &caller))
        .collect();
    Ok(Json(lq.page.envelope(items)))
}

/// The validated endpoint document (without id, status, timestamps), or `None` with the
/// faults in `f`.
fn build_endpoint(f: &mut Fields) -> Option<Value> {
    let address = f.string("dynamic_emergency_address_id", true, 1, 64);
    let callback = f.string("callback_number", true, 1, 16);
    if callback.as_deref().is_some_and(|c| !is_e164(c)) {
        f.errors.push(ErrorObject::invalid_value(
            "/callback_number",
            "Must be a phone number in E.164 format, such as \"+13125550000\".",
        ));
    }
    let caller_name = text(f, "caller_name", true, 50);
    if !f.errors.is_empty() {
        return None;
    }
    Some(json!({
        "dynamic_emergency_address_id": address,
        "callback_number": callback,
        "caller_name": caller_name,
    }))
}

/// The address an endpoint of `owner` may use: the owner's own, `activated`. A fault at
/// `/dynamic_emergency_address_id` otherwise (another account's reads as missing).
async fn check_address(s: &ApiState, owner: &str, id: &str) -> Result<Option<ErrorObject>, ApiError> {
    const POINTER: &str = "/dynamic_emergency_address_id";
    let found = if is_uuid(id) { s.store.get_resource(ADDRESS, id).await? } else { None };
    let Some(r) = found.filter(|r| r.account_id == owner) else {
        return Ok(Some(ErrorObject::invalid_value(POINTER, "No dynamic emergency address has this id.")));
    };
    let doc: Value = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
    let status = doc["status"].as_str().unwrap_or_default();
    Ok((status != "activated").then(|| {
        ErrorObject::invalid_value(POINTER, format!("The address is {status}; only an activated address can be used."))
    }))
}

async fn create_endpoint(
    State(s): State<ApiState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let owner = owner(&s, &caller, &mut f).await?;
    let doc = build_endpoint(&mut f);
    // The address is checked whatever else is wrong, so every fault is reported at once.
    let given = f.value("dynamic_emergency_address_id").and_then(Value::as_str).map(str::to_owned);
    if let (Some(o), Some(a)) = (&owner, given)
        && let Some(e) = check_address(&s, o, &a).await?
    {
        f.errors.push(e);
    }
    f.finish()?;
    let (doc, owner) = doc.zip(owner).ok_or_else(ApiError::internal)?;
    let name = doc["caller_name"].as_str().unwrap_or_default().to_owned();
    let address_id = doc["dynamic_emergency_address_id"].as_str().unwrap_or_default().to_owned();
    let (mut r, mut doc) = new_resource(ENDPOINT, owner, name, doc)?;
    insert_with_token(&s, &mut r, &mut doc, "sip_from_id").await?;
    // The address may have been deleted since it was checked: then this endpoint goes again.
    if let Some(e) = check_address(&s, &r.account_id, &address_id).await? {
        s.store.delete_resource(ENDPOINT, &r.id).await?;
        return Err(ApiError::invalid(vec![e]));
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": present(doc, &r.account_id, &caller) }))))
}

async fn list_endpoints(
    State(s): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let lq = list_query(&q)?;
    // An endpoint's country is its address's.
    let countries: Option<std::collections::HashMap<String, String>> = match &lq.country {
        None => None,
        Some(_) => Some(
            visible(&s, &caller, ADDRESS, lq.account)
                .await?
                .into_iter()
                .filter_map(|(doc, _)| Some((doc["id"].as_str()?.to_owned(), doc["country_code"].as_str()?.to_owned())))
                .collect(),
        ),
    };
    let items = visible(&s, &caller, ENDPOINT, lq.account)
        .await?
        .into_iter()
        .filter(|(doc, _)| lq.status.is_none_or(|st| doc["status"].as_str() == Some(st)))
        .filter(|(doc, _)| match (&lq.country, &countries) {
            (Some(c), Some(map)) => {
                doc["dynamic_emergency_address_id"].as_str().and_then(|a| map.get(a)).is_some_and(|x| x == c)
            }
            _ => true,
        })
        .map(|(doc, account)| present(doc, &account, &caller))
        .collect();
    Ok(Json(lq.page.envelope(items)))
}

async fn show_endpoint(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, ENDPOINT, &id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

/// DELETE answers 200 with the deleted endpoint.
async fn remove_endpoint(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, ENDPOINT, &id).await?;
    if !s.store.delete_resource(ENDPOINT, &id).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_lists_sorted_for_binary_search() {
        assert!(US_STATES.windows(2).all(|w| w[0] < w[1]) && US_STATES.len() == 51);
        assert!(CA_PROVINCES.windows(2).all(|w| w[0] < w[1]) && CA_PROVINCES.len() == 13);
    }

    #[test]
    fn formats() {
        for ok in ["78701", "78701-1234", "00601"] {
            assert!(is_zip(ok), "{ok}");
        }
        for bad in ["7870", "787011", "78701-123", "78701 1234", "7870a", "78701-", ""] {
            assert!(!is_zip(bad), "{bad}");
        }
        for ok in ["K1A 0B1", "K1A0B1", "H3Z 2Y7", "T2X 1V4"] {
            assert!(is_canadian_postal_code(ok), "{ok}");
        }
        for bad in ["k1a 0b1", "K1A  0B1", "D1A 0B1", "W1A 0B1", "K1O 0B1", "K1A-0B1", "K1A 0B", "12345"] {
            assert!(!is_canadian_postal_code(bad), "{bad}");
        }
        assert!(is_e164("+13125550000") && !is_e164("13125550000") && !is_e164("+0312") && !is_e164("+1 312"));
        let id = new_uuid().unwrap();
        assert!(is_uuid(&id) && id.as_bytes()[14] == b'4', "{id}");
        assert!(!is_uuid("1293384261075731499"));
        let t = new_token().unwrap();
        assert!(t.len() == 10 && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{t}");
    }

    #[test]
    fn abbreviations_are_whole_words() {
        assert_eq!(abbreviate("Suite 400, Floor 2"), "STE 400, FL 2");
        assert_eq!(abbreviate("APARTMENT 3B building C room 12"), "APT 3B BLDG C RM 12");
        assert_eq!(abbreviate("Suites 4 Floorplan Mushroom"), "Suites 4 Floorplan Mushroom");
        assert_eq!(abbreviate(""), "");
    }
}
