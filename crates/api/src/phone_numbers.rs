//! `/v2/phone_numbers`: the numbers (DIDs) the operator assigns to accounts, and what each
//! account does with them. `/v2/phone_numbers` itself is an operator extension in the
//! contract's style; `/v2/phone_numbers/voice` and `/v2/phone_numbers/{id}/voice` follow the
//! contract's `PhoneNumberWithVoiceSettings` and `UpdatePhoneNumberVoiceSettingsRequest`
//! field for field.
//!
//! - The operator adds a number with `POST /v2/phone_numbers` (201): `phone_number` (E.164,
//!   `+` and 7 to 15 digits, the first not 0), required and unique on the platform (422 at
//!   `/phone_number` when another account or this one already has it), `account_id`
//!   (required, an existing account), and optionally `connection_id`, `tags`,
//!   `customer_reference`. Only the operator adds and deletes numbers (403 for an account's
//!   key; another account's number answers 404 first, as everywhere). Delete answers 200 with
//!   the deleted number and frees it.
//! - An account's key lists and reads its numbers and PATCHes `connection_id`, `tags` and
//!   `customer_reference` (the operator may too). `connection_id` must name a connection of
//!   the number's account, of any connection type (credential, IP, FQDN, UAC); another
//!   account's connection is refused at `/connection_id` exactly like a missing one. `null`
//!   (or `""`) detaches the number. `phone_number` and `account_id` cannot change (the operator
//!   deletes and adds the number again to move it).
//! - Deleting a connection detaches its numbers: their stored `connection_id` becomes null
//!   ([`detach_connection`]). A number is written only while the connection it names exists
//!   (locked in the same transaction), so one attached while its connection is deleted is
//!   either detached by that delete or refused at `/connection_id` (or, when the request did
//!   not name it, stored detached). A number still naming a missing connection shows as
//!   detached all the same.
//! - A number shows `id`, `record_type` `phone_number`, `phone_number`, `status` (`active`),
//!   `connection_id`, `connection_name` (of its connection, read when shown), `tags`,
//!   `customer_reference` (null until set), `purchased_at` (when the operator added it),
//!   `created_at`, `updated_at`, and read-only summaries of its voice settings named as in
//!   the provider's phone number object: `call_forwarding_enabled`, `call_recording_enabled`,
//!   `cnam_listing_enabled`, `caller_id_name_enabled`, `t38_fax_gateway_enabled`,
//!   `emergency_enabled`. The operator also sees `account_id`.
//! - Voice settings live in the number's document (`voice`). `GET /v2/phone_numbers/{id}/voice`
//!   shows them as `record_type` `voice_settings` with the contract's defaults; its PATCH
//!   changes the fields given, nested objects key by key; null resets a field (or a whole
//!   object) to its default, and fields without a default (`forwarding_type`, `forwards_to`,
//!   `cnam_listing_details`) are absent until set and cleared by null or `""`.
//!   `caller_id_name_enabled` (in the update schema only) is stored and shown too.
//!   `emergency` is shown with its defaults: the update schema has no emergency field, and no
//!   emergency addresses exist here. `connection_id` and `customer_reference` are left out
//!   when unset (the contract types them as strings, not nullable; `/phone_numbers` shows
//!   them as null). Rules from the contract's descriptions: `forwards_to` is E.164;
//!   `cnam_listing_details` is 1 to 15 letters, digits or spaces, needed when
//!   `cnam_listing_enabled` is true, and sending it needs `cnam_listing_enabled` true;
//!   `translated_number` is letters and digits (a leading `+` allowed), at most 32.
//!   Fields outside the contract's schema (such as the product docs' number-level
//!   `noise_suppression`) are ignored.
//! - Lists: `page[number]`, `page[size]` (1 to 250, default 20), `sort` (the contract's
//!   `purchased_at`, `phone_number`, `connection_name`, `usage_payment_method`, ascending;
//!   numbers without a connection last by `connection_name`; default newest first).
//!   `/phone_numbers/voice` filters: `filter[phone_number]` (at least three digits, matched
//!   anywhere in the number; a leading `+` is ignored, other non-digits match nothing),
//!   `filter[connection_name][contains]` (at least three characters, case-insensitive),
//!   `filter[customer_reference]` (exact) and `filter[voice.usage_payment_method]`.
//!   `/phone_numbers` takes `filter[phone_number]`, `filter[voice.connection_name][contains]`,
//!   `filter[voice.usage_payment_method]`, `filter[customer_reference]`, `filter[tag]` and
//!   `filter[connection_id]`. The operator may narrow either with `filter[account_id]`. A bad
//!   query answers 400 (the contract lists 400 for this operation).

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::{Repository, Resource};

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

const KIND: &str = "phone_number";
/// The unique scope of numbers: one number, one account, platform-wide.
const UNIQUE_SCOPE: &str = "phone_number";
/// Every kind a number may point at.
pub const CONNECTION_KINDS: &[&str] = &["credential_connection", "ip_connection", "fqdn_connection", "uac_connection"];
pub const USAGE_PAYMENT_METHODS: &[&str] = &["pay-per-minute", "channel"];
pub const INBOUND_CALL_SCREENINGS: &[&str] = &["disabled", "reject_calls", "flag_calls"];
pub const FORWARDING_TYPES: &[&str] = &["always", "on-failure"];
pub const RECORDING_CHANNELS: &[&str] = &["single", "dual"];
pub const RECORDING_FORMATS: &[&str] = &["wav", "mp3"];
/// The contract's `sort` enumeration for `/phone_numbers/voice` (ascending only).
pub const SORTS: &[&str] = &["purchased_at", "phone_number", "connection_name", "usage_payment_method"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/phone_numbers", get(list).post(create))
        .route("/phone_numbers/voice", get(list_voice))
        .route("/phone_numbers/{id}", get(show).patch(update).delete(remove))
        .route("/phone_numbers/{id}/voice", get(show_voice).patch(update_voice))
}

/// `^\+[1-9][0-9]{6,14}$`.
pub fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

fn is_tag(s: &str) -> bool {
    (1..=255).contains(&s.chars().count())
}

/// `forwards_to`: E.164, or blank to clear.
fn is_forwards_to(s: &str) -> bool {
    s.is_empty() || is_e164(s)
}

/// `cnam_listing_details`: "alphanumeric characters or spaces with a maximum length of 15"
/// (blank clears).
fn is_cnam_details(s: &str) -> bool {
    s.len() <= 15 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
}

/// `translated_number`: "any alphanumeric value" (the example is `+13035559999`), blank for
/// none.
fn is_translated_number(s: &str) -> bool {
    let rest = s.strip_prefix('+').unwrap_or(s);
    s.len() <= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric()) && (s.is_empty() || !rest.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Voice settings.

/// How one voice setting is read and defaulted.
#[derive(Clone, Copy)]
enum Setting {
    Bool(bool),
    /// An enumeration and its default (`None`: absent until set, cleared by null).
    Enum(&'static [&'static str], Option<&'static str>),
    /// A string accepted by the check (with the fault's detail) and its default (`None`:
    /// absent until set, cleared by null or `""`).
    Text(fn(&str) -> bool, &'static str, Option<&'static str>),
}

type Settings = &'static [(&'static str, Setting)];

const TOP: Settings = &[
    ("inbound_call_screening", Setting::Enum(INBOUND_CALL_SCREENINGS, Some("disabled"))),
    ("usage_payment_method", Setting::Enum(USAGE_PAYMENT_METHODS, Some("pay-per-minute"))),
    ("tech_prefix_enabled", Setting::Bool(false)),
    ("caller_id_name_enabled", Setting::Bool(false)),
    (
        "translated_number",
        Setting::Text(
            is_translated_number,
            "Must be letters and digits (a leading + allowed), at most 32 characters.",
            Some(""),
        ),
    ),
];
const CALL_FORWARDING: Settings = &[
    ("call_forwarding_enabled", Setting::Bool(true)),
    ("forwarding_type", Setting::Enum(FORWARDING_TYPES, None)),
    (
        "forwards_to",
        Setting::Text(is_forwards_to, "Must be a phone number in +E.164 format, such as \"+13035559123\".", None),
    ),
];
const CALL_RECORDING: Settings = &[
    ("inbound_call_recording_enabled", Setting::Bool(false)),
    ("inbound_call_recording_channels", Setting::Enum(RECORDING_CHANNELS, Some("single"))),
    ("inbound_call_recording_format", Setting::Enum(RECORDING_FORMATS, Some("wav"))),
];
const CNAM_LISTING: Settings = &[
    ("cnam_listing_enabled", Setting::Bool(false)),
    ("cnam_listing_details", Setting::Text(is_cnam_details, "Must be at most 15 letters, digits or spaces.", None)),
];
const MEDIA_FEATURES: Settings = &[
    ("accept_any_rtp_packets_enabled", Setting::Bool(false)),
    ("rtp_auto_adjust_enabled", Setting::Bool(true)),
    ("t38_fax_gateway_enabled", Setting::Bool(false)),
];
/// The nested objects the update schema takes.
const NESTED: &[(&str, Settings)] = &[
    ("call_forwarding", CALL_FORWARDING),
    ("call_recording", CALL_RECORDING),
    ("cnam_listing", CNAM_LISTING),
    ("media_features", MEDIA_FEATURES),
];

fn settings_defaults(specs: Settings) -> Value {
    let mut o = serde_json::Map::new();
    for (name, setting) in specs {
        let v = match *setting {
            Setting::Bool(d) => Some(json!(d)),
            Setting::Enum(_, d) | Setting::Text(_, _, d) => d.map(Value::from),
        };
        if let Some(v) = v {
            o.insert((*name).to_owned(), v);
        }
    }
    Value::Object(o)
}

/// A new number's voice settings: the contract's defaults.
fn default_voice() -> Value {
    let mut v = settings_defaults(TOP);
    for (name, specs) in NESTED {
        v[*name] = settings_defaults(specs);
    }
    v["emergency"] = json!({"emergency_enabled": false, "emergency_status": "disabled"});
    v
}

fn set_or_remove(doc: &mut Value, key: &str, value: Option<Value>) {
    if let Some(o) = doc.as_object_mut() {
        match value {
            Some(v) => o.insert(key.to_owned(), v),
            None => o.remove(key),
        };
    }
}

/// The settings of `specs` that the request names, onto `doc`.
fn apply(f: &mut Fields, specs: Settings, doc: &mut Value) {
    for (name, setting) in specs {
        if !f.has(name) {
            continue;
        }
        let value = match *setting {
            Setting::Bool(d) => f.boolean(name, Some(d)).map(|b| Some(json!(b))),
            Setting::Enum(_, d) if f.is_null(name) => Some(d.map(Value::from)),
            Setting::Enum(allowed, _) => f.one_of(name, allowed, None).map(|v| Some(json!(v))),
            Setting::Text(ok, detail, d) => f.string_matching(name, ok, detail).map(|v| match v {
                None => d.map(Value::from),
                Some(s) if s.is_empty() && d.is_none() => None,
                Some(s) => Some(json!(s)),
            }),
        };
        if let Some(v) = value {
            set_or_remove(doc, name, v);
        }
    }
}

/// The voice settings from the request over `base` (the stored ones).
fn build_voice(f: &mut Fields, base: &Value) -> Option<Value> {
    let mut v = if base.is_object() { base.clone() } else { default_voice() };
    apply(f, TOP, &mut v);
    let mut cnam_details_sent = false;
    for (name, specs) in NESTED {
        match f.object(name) {
            // Null resets the whole object; absent leaves it; a fault is recorded already.
            Some(None) if f.has(name) => v[*name] = settings_defaults(specs),
            None | Some(None) => {}
            Some(Some(mut inner)) => {
                if !v[*name].is_object() {
                    v[*name] = settings_defaults(specs);
                }
                if *name == "cnam_listing" {
                    cnam_details_sent =
                        inner.value("cnam_listing_details").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                }
                apply(&mut inner, specs, &mut v[*name]);
                f.absorb(name, inner);
            }
        }
    }
    if !f.errors.is_empty() {
        return None;
    }
    let cnam = &v["cnam_listing"];
    if f.has("cnam_listing") {
        if cnam["cnam_listing_enabled"] == json!(true) && !cnam["cnam_listing_details"].is_string() {
            f.errors.push(ErrorObject::invalid_value(
                "/cnam_listing/cnam_listing_details",
                "Required when cnam_listing_enabled is true.",
            ));
        } else if cnam_details_sent && cnam["cnam_listing_enabled"] != json!(true) {
            f.errors.push(ErrorObject::invalid_value(
                "/cnam_listing/cnam_listing_enabled",
                "Must be true for cnam_listing_details to be listed.",
            ));
        }
    }
    f.errors.is_empty().then_some(v)
}

// ---------------------------------------------------------------------------------------------
// Connections the numbers point at.

/// The fault of a `connection_id` that names no connection of the number's account.
fn no_such_connection() -> ErrorObject {
    ErrorObject::invalid_value("/connection_id", "No connection of this number's account has this id.")
}

/// The connection a number's document names, when it exists in the number's account.
async fn connection_of(store: &dyn Repository, account_id: &str, doc: &Value) -> Result<Option<Resource>, ApiError> {
    let Some(id) = doc["connection_id"].as_str() else { return Ok(None) };
    Ok(connection(store, id).await?.filter(|r| r.account_id == account_id))
}

/// The connection with this id, of any kind.
async fn connection(store: &dyn Repository, id: &str) -> Result<Option<Resource>, ApiError> {
    for kind in CONNECTION_KINDS {
        if let Some(r) = store.get_resource(kind, id).await? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Every connection (of one account, or of all): id to (account, name).
async fn connections(
    store: &dyn Repository,
    scope: Option<&str>,
) -> Result<HashMap<String, (String, String)>, ApiError> {
    let mut out = HashMap::new();
    for kind in CONNECTION_KINDS {
        for r in store.list_resources(kind, scope).await? {
            out.insert(r.id, (r.account_id, r.name));
        }
    }
    Ok(out)
}

/// The name of the connection a number points at, when it exists and is of the number's
/// account.
fn connection_name(doc: &Value, account_id: &str, conns: &HashMap<String, (String, String)>) -> Option<String> {
    let id = doc["connection_id"].as_str()?;
    conns.get(id).filter(|(a, _)| a == account_id).map(|(_, name)| name.clone())
}

/// The connections relevant to one number (its own, if any).
async fn connections_of(store: &dyn Repository, doc: &Value) -> Result<HashMap<String, (String, String)>, ApiError> {
    let mut out = HashMap::new();
    if let Some(id) = doc["connection_id"].as_str()
        && let Some(r) = connection(store, id).await?
    {
        out.insert(r.id, (r.account_id, r.name));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Presentation.

fn voice_of(doc: &Value) -> Value {
    doc.get("voice").filter(|v| v.is_object()).cloned().unwrap_or_else(default_voice)
}

/// The number as `/phone_numbers` shows it.
fn present(mut doc: Value, account_id: &str, caller: &Caller, conn_name: Option<String>) -> Value {
    let voice = voice_of(&doc);
    if let Some(o) = doc.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_') && k != "voice");
        if conn_name.is_none() {
            o.insert("connection_id".into(), Value::Null);
        }
        o.insert("connection_name".into(), json!(conn_name));
        for (key, value) in [
            ("call_forwarding_enabled", &voice["call_forwarding"]["call_forwarding_enabled"]),
            ("call_recording_enabled", &voice["call_recording"]["inbound_call_recording_enabled"]),
            ("cnam_listing_enabled", &voice["cnam_listing"]["cnam_listing_enabled"]),
            ("caller_id_name_enabled", &voice["caller_id_name_enabled"]),
            ("t38_fax_gateway_enabled", &voice["media_features"]["t38_fax_gateway_enabled"]),
            ("emergency_enabled", &voice["emergency"]["emergency_enabled"]),
        ] {
            o.insert(key.into(), value.clone());
        }
        // What the number is, from libphonenumber's metadata (the SDK's `phone_number` model
        // requires these); no deletion lock exists on the platform.
        let (country, kind) = number_facts(o.get("phone_number").and_then(Value::as_str).unwrap_or_default());
        o.insert("country_iso_alpha2".into(), json!(country));
        o.insert("phone_number_type".into(), json!(kind));
        o.entry("deletion_lock_enabled").or_insert(json!(false));
        if *caller == Caller::Operator {
            o.insert("account_id".into(), json!(account_id));
        }
    }
    doc
}

/// The ISO 3166-1 alpha-2 country and the contract's `phone_number_type` of an E.164 number.
fn number_facts(e164: &str) -> (String, &'static str) {
    use phonenumber::Type;
    let Ok(n) = phonenumber::parse(None, e164) else { return (String::new(), "national") };
    let country = n.country().id().map(|id| format!("{id:?}")).unwrap_or_default();
    let kind = match n.number_type(&phonenumber::metadata::DATABASE) {
        Type::FixedLine | Type::FixedLineOrMobile => "local",
        Type::Mobile => "mobile",
        Type::TollFree => "toll_free",
        Type::SharedCost => "shared_cost",
        Type::ShortCode => "shortcode",
        _ => "national",
    };
    (country, kind)
}

/// The number as `/phone_numbers/.../voice` shows it: the contract's
/// `PhoneNumberWithVoiceSettings`. Its `connection_id` and `customer_reference` are plain
/// strings there (not nullable): a number without a connection or a reference leaves them out.
fn present_voice(doc: &Value, account_id: &str, caller: &Caller, conn_name: Option<String>) -> Value {
    let mut v = voice_of(doc);
    v["id"] = doc["id"].clone();
    v["record_type"] = json!("voice_settings");
    v["phone_number"] = doc["phone_number"].clone();
    let connection_id = doc["connection_id"].as_str().filter(|_| conn_name.is_some());
    set_or_remove(&mut v, "connection_id", connection_id.map(Value::from));
    set_or_remove(&mut v, "customer_reference", doc["customer_reference"].as_str().map(Value::from));
    if *caller == Caller::Operator {
        v["account_id"] = json!(account_id);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// `connection_id`, `tags` and `customer_reference` from the request onto `doc`;
/// `connection_id` must name a connection of `account_id` (no check without an owner: its
/// fault is reported already).
async fn apply_common(
    store: &dyn Repository,
    f: &mut Fields,
    account_id: Option<&str>,
    doc: &mut Value,
) -> Result<(), ApiError> {
    if f.has("connection_id") {
        match f.nullable_string("connection_id") {
            Some(Some(id)) if !id.is_empty() => {
                if let Some(a) = account_id {
                    if connection(store, &id).await?.is_some_and(|r| r.account_id == a) {
                        doc["connection_id"] = json!(id);
                    } else {
                        f.errors.push(no_such_connection());
                    }
                }
            }
            Some(_) => doc["connection_id"] = Value::Null,
            None => {}
        }
    }
    if f.has("tags")
        && let Some(t) = f.string_list("tags", Some(&[]), is_tag, "Must be a string of 1 to 255 characters.")
    {
        doc["tags"] = json!(t);
    }
    if f.has("customer_reference")
        && let Some(c) =
            f.string_matching("customer_reference", is_tag, "Must be a string of 1 to 255 characters, or null.")
    {
        doc["customer_reference"] = json!(c);
    }
    Ok(())
}

/// Create (the operator only): 201 with the new number.
async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.operator_only()?;
    let mut f = Fields::parse(&body)?;
    let mut owner = f.string("account_id", true, 1, 64);
    if let Some(a) = &owner
        && s.store.get_resource("account", a).await?.is_none()
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "No account has this id."));
        owner = None;
    }
    let number = f.string_matching(
        "phone_number",
        is_e164,
        "Must be a phone number in +E.164 format, such as \"+13035551234\".",
    );
    if matches!(number, Some(None)) {
        f.errors.push(ErrorObject::required("/phone_number"));
    }
    let mut doc = json!({
        "record_type": KIND,
        "status": "active",
        "connection_id": null,
        "customer_reference": null,
        "tags": [],
        "voice": default_voice(),
    });
    apply_common(&*s.store, &mut f, owner.as_deref(), &mut doc).await?;
    f.finish()?;
    let (number, owner) = number.flatten().zip(owner).ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["phone_number"] = json!(number);
    doc["purchased_at"] = json!(now);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let r = Resource {
        kind: KIND.into(),
        id,
        account_id: owner,
        name: number.clone(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    // Stored only while its connection exists (deleted since it was checked: refused).
    let conn = connection_of(&*s.store, &r.account_id, &doc).await?;
    let gone = doc["connection_id"].is_string() && conn.is_none();
    let refs: Vec<(&str, &str)> = conn.iter().map(|c| (c.kind.as_str(), c.id.as_str())).collect();
    if gone || !s.store.insert_resource_referencing(&r, &[(UNIQUE_SCOPE, &number)], &refs).await? {
        return Err(ApiError::invalid(vec![no_such_connection()]));
    }
    let conns = connections_of(&*s.store, &doc).await?;
    let name = connection_name(&doc, &r.account_id, &conns);
    Ok((StatusCode::CREATED, Json(json!({ "data": present(doc, &r.account_id, &caller, name) }))))
}

/// The number if this caller may see it; another account's answers 404 like a missing one.
async fn fetch(s: &ApiState, caller: &Caller, id: &str) -> Result<(Resource, Value), ApiError> {
    crate::fetch(&*s.store, caller, KIND, id).await
}

/// Stores `doc` as the new state of `r`, keeping its number claimed, and the connection it
/// names locked while it is written (so a connection deleted meanwhile is never left named).
/// A connection found gone is refused at `/connection_id` when `connection_named` (this
/// request names it); otherwise the number is stored detached.
async fn save(
    store: &dyn Repository,
    r: &mut Resource,
    mut doc: Value,
    connection_named: bool,
) -> Result<Value, ApiError> {
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.updated_at = now;
    let number = doc["phone_number"].as_str().unwrap_or_default().to_owned();
    // Twice at most: a connection deleted between the look-up and the write is found gone the
    // second time.
    for _ in 0..2 {
        let conn = connection_of(store, &r.account_id, &doc).await?;
        if conn.is_none() && doc["connection_id"].is_string() {
            if connection_named {
                return Err(ApiError::invalid(vec![no_such_connection()]));
            }
            doc["connection_id"] = Value::Null;
        }
        r.body = doc.to_string();
        let refs: Vec<(&str, &str)> = conn.iter().map(|c| (c.kind.as_str(), c.id.as_str())).collect();
        if store.update_resource_referencing(r, &[(UNIQUE_SCOPE, &number)], &refs).await? {
            return Ok(doc);
        }
        if store.get_resource(KIND, &r.id).await?.is_none() {
            return Err(ApiError::not_found());
        }
    }
    Err(ApiError::internal())
}

/// Detaches the numbers of `account_id` attached to connection `connection_id`, which was
/// deleted: their stored `connection_id` becomes null.
pub async fn detach_connection(store: &dyn Repository, account_id: &str, connection_id: &str) -> Result<(), ApiError> {
    let attached = |r: &Resource| {
        serde_json::from_str::<Value>(&r.body).ok().filter(|d| d["connection_id"].as_str() == Some(connection_id))
    };
    for listed in store.list_resources(KIND, Some(account_id)).await? {
        if attached(&listed).is_none() {
            continue;
        }
        // Read again just before the write, to keep a change made since the list.
        let Some(mut r) = store.get_resource(KIND, &listed.id).await? else { continue };
        let Some(mut doc) = attached(&r) else { continue };
        doc["connection_id"] = Value::Null;
        // A number deleted meanwhile needs nothing.
        if let Err(e) = save(store, &mut r, doc, false).await
            && e.status != StatusCode::NOT_FOUND
        {
            return Err(e);
        }
    }
    Ok(())
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, &id).await?;
    let name = connection_name(&doc, &r.account_id, &connections_of(&*s.store, &doc).await?);
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, name) })))
}

/// PATCH: `connection_id`, `tags`, `customer_reference`.
async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, mut doc) = fetch(&s, &caller, &id).await?;
    let mut f = Fields::parse(&body)?;
    if let Some(Some(given)) = f.nullable_string("account_id")
        && given != r.account_id
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "The owning account cannot be changed."));
    }
    if let Some(Some(given)) = f.nullable_string("phone_number")
        && doc["phone_number"].as_str() != Some(given.as_str())
    {
        f.errors.push(ErrorObject::invalid_value("/phone_number", "The number cannot be changed."));
    }
    let account = r.account_id.clone();
    let connection_named = f.value("connection_id").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    apply_common(&*s.store, &mut f, Some(&account), &mut doc).await?;
    f.finish()?;
    let doc = save(&*s.store, &mut r, doc, connection_named).await?;
    let name = connection_name(&doc, &r.account_id, &connections_of(&*s.store, &doc).await?);
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, name) })))
}

/// DELETE (the operator only): 200 with the deleted number, which is free again.
async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, &id).await?;
    caller.operator_only()?;
    let name = connection_name(&doc, &r.account_id, &connections_of(&*s.store, &doc).await?);
    if !s.store.delete_resource(KIND, &id).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": present(doc, &r.account_id, &caller, name) })))
}

async fn show_voice(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&s, &caller, &id).await?;
    let name = connection_name(&doc, &r.account_id, &connections_of(&*s.store, &doc).await?);
    Ok(Json(json!({ "data": present_voice(&doc, &r.account_id, &caller, name) })))
}

async fn update_voice(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, mut doc) = fetch(&s, &caller, &id).await?;
    let mut f = Fields::parse(&body)?;
    let voice = build_voice(&mut f, &voice_of(&doc));
    f.finish()?;
    doc["voice"] = voice.ok_or_else(ApiError::internal)?;
    let doc = save(&*s.store, &mut r, doc, false).await?;
    let name = connection_name(&doc, &r.account_id, &connections_of(&*s.store, &doc).await?);
    Ok(Json(json!({ "data": present_voice(&doc, &r.account_id, &caller, name) })))
}

// ---------------------------------------------------------------------------------------------
// Lists.

fn query_enum_error(param: &str, allowed: &[&str]) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        errors: vec![ErrorObject {
            code: "10032",
            title: "Invalid enumerated value".into(),
            detail: format!("{param} must be one of: {}.", allowed.join(", ")),
            pointer: None,
        }],
    }
}

/// One number in a list: its document, owner and connection name.
struct Item {
    doc: Value,
    account_id: String,
    conn_name: Option<String>,
}

fn compare(a: &Item, b: &Item, field: &str) -> Ordering {
    match field {
        "connection_name" => match (&a.conn_name, &b.conn_name) {
            (Some(x), Some(y)) => x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
        "usage_payment_method" => voice_of(&a.doc)[field]
            .as_str()
            .unwrap_or_default()
            .cmp(voice_of(&b.doc)[field].as_str().unwrap_or_default()),
        _ => a.doc[field].as_str().cmp(&b.doc[field].as_str()),
    }
}

/// One page of the numbers this caller sees, filtered and sorted, each shown by `show`.
/// `connection_filter` is the query key of the connection name filter for this list.
async fn list_numbers(
    s: &ApiState,
    caller: &Caller,
    raw: Option<&str>,
    connection_filter: &str,
    show: fn(Item, &Caller) -> Value,
) -> Result<Value, ApiError> {
    let q = Query::parse(raw);
    let page = q.page(20, 250)?;
    let sort = q.get("sort");
    if let Some(sort) = sort
        && !SORTS.contains(&sort)
    {
        return Err(query_enum_error("sort", SORTS));
    }
    // filter[phone_number]: digits anywhere in the number; other characters match nothing.
    let mut matches_nothing = false;
    let digits = match q.get("filter[phone_number]") {
        None => None,
        Some(v) => {
            let d = v.strip_prefix('+').unwrap_or(v);
            if !d.bytes().all(|b| b.is_ascii_digit()) {
                matches_nothing = true;
            } else if d.len() < 3 {
                return Err(ApiError::bad_request("filter[phone_number] requires at least three digits."));
            }
            Some(d.to_owned())
        }
    };
    let conn_filter = match q.get(connection_filter) {
        Some(v) if v.chars().count() < 3 => {
            return Err(ApiError::bad_request(format!("{connection_filter} requires at least three characters.")));
        }
        v => v.map(str::to_lowercase),
    };
    let payment = q.get("filter[voice.usage_payment_method]");
    if let Some(p) = payment
        && !USAGE_PAYMENT_METHODS.contains(&p)
    {
        return Err(query_enum_error("filter[voice.usage_payment_method]", USAGE_PAYMENT_METHODS));
    }
    let reference = q.get("filter[customer_reference]");
    let tag = q.get("filter[tag]");
    let connection_id = q.get("filter[connection_id]");
    let account_filter = q.get("filter[account_id]");
    let scope = match caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account_filter,
    };
    if matches_nothing {
        return Ok(page.envelope(Vec::new()));
    }
    let conns = connections(&*s.store, scope).await?;
    let mut items: Vec<Item> = s
        .store
        .list_resources(KIND, scope)
        .await?
        .into_iter()
        .filter(|r| caller.sees(&r.account_id))
        .filter(|r| account_filter.is_none_or(|a| r.account_id == a))
        .filter_map(|r| {
            let doc: Value = serde_json::from_str(&r.body).ok()?;
            let conn_name = connection_name(&doc, &r.account_id, &conns);
            Some(Item { doc, account_id: r.account_id, conn_name })
        })
        .filter(|i| {
            let number = i.doc["phone_number"].as_str().unwrap_or_default();
            digits.as_ref().is_none_or(|d| number.contains(d.as_str()))
                && conn_filter
                    .as_ref()
                    .is_none_or(|c| i.conn_name.as_ref().is_some_and(|n| n.to_lowercase().contains(c.as_str())))
                && payment.is_none_or(|p| voice_of(&i.doc)["usage_payment_method"] == p)
                && reference.is_none_or(|c| i.doc["customer_reference"] == c)
                && tag.is_none_or(|t| i.doc["tags"].as_array().is_some_and(|tags| tags.iter().any(|x| x == t)))
                && connection_id.is_none_or(|c| i.conn_name.is_some() && i.doc["connection_id"] == c)
        })
        .collect();
    match sort {
        Some(field) => items.sort_by(|a, b| compare(a, b, field)),
        None => items.reverse(),
    }
    Ok(page.envelope(items.into_iter().map(|i| show(i, caller)).collect()))
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let show = |i: Item, c: &Caller| present(i.doc, &i.account_id, c, i.conn_name);
    list_numbers(&s, &caller, q.as_deref(), "filter[voice.connection_name][contains]", show).await.map(Json)
}

async fn list_voice(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let show = |i: Item, c: &Caller| present_voice(&i.doc, &i.account_id, c, i.conn_name);
    list_numbers(&s, &caller, q.as_deref(), "filter[connection_name][contains]", show).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for ok in ["+13035551234", "+4930123", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in ["13035551234", "+03035551234", "+123456", "+1234567890123456", "+1303555123x", "+", ""] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert!(is_translated_number("+13035559999") && is_translated_number("abc123") && is_translated_number(""));
        assert!(
            !is_translated_number("+") && !is_translated_number("+1 303") && !is_translated_number(&"1".repeat(33))
        );
        assert!(is_cnam_details("ACME Corp 1") && !is_cnam_details("ACME-Corp") && !is_cnam_details(&"a".repeat(16)));
    }

    #[test]
    fn voice_defaults_are_the_contracts() {
        assert_eq!(
            default_voice(),
            json!({
                "call_forwarding": {"call_forwarding_enabled": true},
                "call_recording": {
                    "inbound_call_recording_channels": "single",
                    "inbound_call_recording_enabled": false,
                    "inbound_call_recording_format": "wav"
                },
                "caller_id_name_enabled": false,
                "cnam_listing": {"cnam_listing_enabled": false},
                "emergency": {"emergency_enabled": false, "emergency_status": "disabled"},
                "inbound_call_screening": "disabled",
                "media_features": {
                    "accept_any_rtp_packets_enabled": false,
                    "rtp_auto_adjust_enabled": true,
                    "t38_fax_gateway_enabled": false
                },
                "tech_prefix_enabled": false,
                "translated_number": "",
                "usage_payment_method": "pay-per-minute"
            })
        );
    }
}

#[cfg(test)]
mod number_facts_tests {
    #[test]
    fn country_and_type_from_the_number() {
        assert_eq!(super::number_facts("+13125550100"), ("US".to_owned(), "local"));
        assert_eq!(super::number_facts("+18005550100"), ("US".to_owned(), "toll_free"));
        assert_eq!(super::number_facts("+447400123456"), ("GB".to_owned(), "mobile"));
        assert_eq!(super::number_facts("+35318401234").0, "IE");
    }
}
