//! `/v2/carriers`: the upstream carriers the platform terminates calls to and receives calls
//! from (an operator resource, not in the contract, designed in its style). Only the operator
//! key may use it (an account's key gets 403); carriers are stored with the owner `operator`.
//!
//! A carrier (`record_type` `carrier`) has:
//!
//! - `name` (1 to 255 characters), required on create; it cannot be cleared.
//! - `gateways`: at least one (at most 64), each `{host, port, transport, priority, weight}`.
//!   `host` is a hostname (letters, digits and hyphens in dot-separated labels, the last not all
//!   digits) or an IPv4 or IPv6 literal (an IPv6 literal may be sent in brackets; it is kept
//!   bare). `transport` is `UDP` (default), `TCP` or `TLS`; `port` 1 to 65535 defaults to 5060,
//!   or 5061 for TLS; `priority` 0 to 65535 (lowest tried first) and `weight` 1 to 65535 both
//!   default to 1. Two gateways with the same host (regardless of case), port and transport are
//!   refused at the second one's `/gateways/N/host`. A PATCH that sends `gateways` replaces the
//!   whole list.
//! - `routing`: `sequential` (default: gateways in priority order, weight breaking ties) or
//!   `round-robin` (calls spread over the gateways).
//! - `priority` 0 to 65535, default 1: carriers are tried lowest first.
//! - `prefixes`: destination prefixes it terminates, strings of 1 to 15 digits; empty (the
//!   default) means every destination.
//! - `inbound_ips`: where its origination traffic comes from, IPv4/IPv6 addresses or CIDR
//!   blocks (`203.0.113.0/24`, `2001:db8::/32`), kept as written. Origination traffic is
//!   matched to one carrier by its source address, so a block overlapping another carrier's
//!   is refused at `/inbound_ips/N`.
//! - `username` / `password`: optional digest credentials toward the carrier, a pair: one
//!   without the other is refused (at the missing one). The password is never returned:
//!   responses omit the `password` key altogether (rather than showing `null`, which would read
//!   as "no password"); it is kept in the private `_password` of the document because the
//!   platform answers the carrier's challenges with it. Setting `username` to null clears the
//!   password too.
//! - `tech_prefix`: optional digits (1 to 10) put before the destination toward the carrier.
//! - `enabled`, default true.
//!
//! On PATCH the fields given change and the others stay; null resets a field to its default
//! (`username`, `password`, `tech_prefix`: cleared). Create answers 201, delete 200 with the
//! deleted carrier. The list takes `page[number]`, `page[size]` (1 to 250, default 20),
//! `filter[name][contains]` (case-insensitive), `filter[enabled]` (`true`/`false`) and `sort`
//! (`name`, `priority`, `enabled`, `created_at`, each also descending with `-`; default
//! `-created_at`); a bad query answers 400.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::Resource;

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

const KIND: &str = "carrier";
/// The owner recorded for every carrier.
pub const OWNER: &str = "operator";
pub const TRANSPORTS: &[&str] = &["UDP", "TCP", "TLS"];
pub const ROUTINGS: &[&str] = &["sequential", "round-robin"];
pub const SORTS: &[&str] =
    &["created_at", "-created_at", "name", "-name", "priority", "-priority", "enabled", "-enabled"];
const DEFAULT_SORT: &str = "-created_at";
const MAX_GATEWAYS: usize = 64;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/carriers", get(list).post(create))
        .route("/carriers/{id}", get(show).patch(update).delete(remove))
}

/// A gateway host as kept: a hostname or IP literal as written, an IPv6 literal without its
/// brackets. `None` when it is neither.
pub fn gateway_host(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner.parse::<Ipv6Addr>().is_ok().then(|| inner.to_owned());
    }
    (s.parse::<IpAddr>().is_ok() || is_hostname(s)).then(|| s.to_owned())
}

/// A DNS hostname: dot-separated labels of 1 to 63 letters, digits and hyphens (not at either
/// end), 253 characters at most, the last label not all digits (so `999.1.1.1` is no host).
pub fn is_hostname(s: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253
        && s.split('.').all(label)
        && s.rsplit('.').next().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// An IPv4 or IPv6 address or CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    bits: u128,
    len: u32,
    v6: bool,
}

impl Net {
    /// `203.0.113.7`, `203.0.113.0/24`, `2001:db8::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Option<Net> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let (bits, max, v6) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, false),
            IpAddr::V6(a) => (u128::from(a), 128, true),
        };
        let len = match len {
            None => max,
            Some(l) if (1..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse().ok().filter(|n| *n <= max)?
            }
            Some(_) => return None,
        };
        Some(Net { bits, len, v6 })
    }

    fn prefix(&self, len: u32) -> u128 {
        let width = if self.v6 { 128 } else { 32 };
        self.bits.checked_shr(width - len).unwrap_or(0)
    }

    /// Whether some address is in both.
    pub fn overlaps(&self, other: &Net) -> bool {
        let len = self.len.min(other.len);
        self.v6 == other.v6 && self.prefix(len) == other.prefix(len)
    }
}

fn is_digits(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A digest user name toward a carrier: 1 to 64 printable characters without spaces, quotes
/// or backslashes (it goes into a quoted header parameter as is).
fn is_username(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// A digest password: 1 to 128 characters, no control characters.
fn is_password(s: &str) -> bool {
    (1..=128).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

/// A new carrier's document before the request's fields.
fn defaults() -> Value {
    json!({
        "record_type": KIND,
        "routing": "sequential",
        "priority": 1,
        "prefixes": [],
        "inbound_ips": [],
        "username": null,
        "tech_prefix": null,
        "enabled": true,
    })
}

/// The `gateways` list, every item checked (faults at `/gateways/N/...`).
fn gateways(f: &mut Fields) -> Option<Vec<Value>> {
    let items = match f.object_list("gateways") {
        None => return None,
        Some(None) => {
            f.errors.push(ErrorObject::required("/gateways"));
            return None;
        }
        Some(Some(items)) => items,
    };
    if items.is_empty() || items.len() > MAX_GATEWAYS {
        f.errors
            .push(ErrorObject::invalid_value("/gateways", format!("Must list between 1 and {MAX_GATEWAYS} gateways.")));
        return None;
    }
    let count = items.len();
    let mut out = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let mut faulty = false;
    for (i, mut g) in items.into_iter().enumerate() {
        let host = g.string("host", true, 1, 255).and_then(|h| {
            let kept = gateway_host(&h);
            if kept.is_none() {
                g.errors.push(ErrorObject::invalid_value("/host", "Must be a hostname or an IPv4 or IPv6 address."));
            }
            kept
        });
        let transport = g.one_of("transport", TRANSPORTS, Some("UDP"));
        let port = g.integer("port", 1, 65535, None, true);
        let priority = g.integer("priority", 0, 65535, Some(1), true);
        let weight = g.integer("weight", 1, 65535, Some(1), true);
        if let (Some(host), Some(transport), Some(port), Some(priority), Some(weight)) =
            (host, transport, port, priority, weight)
        {
            let port = port.unwrap_or(if transport == "TLS" { 5061 } else { 5060 });
            if !seen.insert((host.to_ascii_lowercase(), port, transport.clone())) {
                g.errors.push(ErrorObject::invalid_value(
                    "/host",
                    "Another gateway of this carrier has the same host, port and transport.",
                ));
            }
            out.push(json!({
                "host": host,
                "port": port,
                "transport": transport,
                "priority": priority.unwrap_or(1),
                "weight": weight.unwrap_or(1),
            }));
        }
        faulty |= !g.errors.is_empty();
        f.absorb(&format!("gateways/{i}"), g);
    }
    (!faulty && out.len() == count).then_some(out)
}

/// The carrier document from validated fields over `base` (the stored one on PATCH).
fn build(f: &mut Fields, base: Option<&Value>) -> Option<Value> {
    let creating = base.is_none();
    let mut doc = base.cloned().unwrap_or_else(defaults);
    if (creating || f.has("name"))
        && let Some(n) = f.string("name", true, 1, 255)
    {
        doc["name"] = json!(n);
    }
    if (creating || f.has("gateways"))
        && let Some(g) = gateways(f)
    {
        doc["gateways"] = Value::Array(g);
    }
    if f.has("routing")
        && let Some(r) = f.one_of("routing", ROUTINGS, Some("sequential"))
    {
        doc["routing"] = json!(r);
    }
    if f.has("priority")
        && let Some(p) = f.integer("priority", 0, 65535, Some(1), true)
    {
        doc["priority"] = json!(p.unwrap_or(1));
    }
    if f.has("prefixes")
        && let Some(p) =
            f.string_list("prefixes", Some(&[]), |s| is_digits(s, 15), "Must be a string of 1 to 15 digits.")
    {
        doc["prefixes"] = json!(p);
    }
    if f.has("inbound_ips")
        && let Some(ips) = f.string_list(
            "inbound_ips",
            Some(&[]),
            |s| Net::parse(s).is_some(),
            "Must be an IPv4 or IPv6 address, or a CIDR block such as \"203.0.113.0/24\".",
        )
    {
        doc["inbound_ips"] = json!(ips);
    }
    if f.has("username")
        && let Some(u) = f.string_matching(
            "username",
            is_username,
            "Must be 1 to 64 printable characters without spaces, quotes or backslashes, or null.",
        )
    {
        if u.is_none() && !f.has("password") {
            drop_key(&mut doc, "_password");
        }
        doc["username"] = json!(u);
    }
    if f.has("password")
        && let Some(p) =
            f.string_matching("password", is_password, "Must be 1 to 128 characters without control characters.")
    {
        match p {
            Some(p) => doc["_password"] = json!(p),
            None => drop_key(&mut doc, "_password"),
        }
    }
    if f.has("tech_prefix")
        && let Some(t) = f.string_matching("tech_prefix", |s| is_digits(s, 10), "Must be 1 to 10 digits, or null.")
    {
        doc["tech_prefix"] = json!(t);
    }
    if f.has("enabled")
        && let Some(e) = f.boolean("enabled", Some(true))
    {
        doc["enabled"] = json!(e);
    }
    if !f.errors.is_empty() {
        return None;
    }
    // Credentials are a pair.
    let has_user = doc["username"].is_string();
    let has_password = doc.get("_password").is_some_and(Value::is_string);
    if has_password && !has_user {
        f.errors.push(ErrorObject::invalid_value("/username", "A username is required with a password."));
    } else if has_user && !has_password {
        f.errors.push(ErrorObject::invalid_value("/password", "A password is required with a username."));
    }
    f.errors.is_empty().then_some(doc)
}

fn drop_key(doc: &mut Value, key: &str) {
    if let Some(o) = doc.as_object_mut() {
        o.remove(key);
    }
}

/// `inbound_ips`, when sent, may not overlap another carrier's (faults at `/inbound_ips/N`).
async fn check_inbound_ips(s: &ApiState, f: &mut Fields, doc: &Value, own_id: Option<&str>) -> Result<(), ApiError> {
    if !f.has("inbound_ips") {
        return Ok(());
    }
    let ours: Vec<(usize, Net)> = doc["inbound_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, v)| v.as_str().and_then(Net::parse).map(|n| (i, n)))
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    let mut faulty = HashSet::new();
    for r in s.store.list_resources(KIND, None).await? {
        if Some(r.id.as_str()) == own_id {
            continue;
        }
        let Ok(other) = serde_json::from_str::<Value>(&r.body) else { continue };
        for theirs in other["inbound_ips"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let Some(net) = Net::parse(theirs) else { continue };
            for (i, mine) in &ours {
                if mine.overlaps(&net) && faulty.insert(*i) {
                    f.errors.push(ErrorObject::invalid_value(
                        &format!("/inbound_ips/{i}"),
                        format!(
                            "Overlaps {theirs} of carrier {} ({}): origination traffic must identify one carrier.",
                            r.name, r.id
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The carrier as the API shows it: without private `_` fields (the password).
fn present(mut doc: Value) -> Value {
    if let Some(o) = doc.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_'));
    }
    doc
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.operator_only()?;
    let mut f = Fields::parse(&body)?;
    let doc = build(&mut f, None);
    if let Some(d) = &doc {
        check_inbound_ips(&s, &mut f, d, None).await?;
    }
    f.finish()?;
    let mut doc = doc.ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let r = Resource {
        kind: KIND.into(),
        id,
        account_id: OWNER.into(),
        name: doc["name"].as_str().unwrap_or_default().to_owned(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    s.store.insert_resource(&r, &[]).await?;
    Ok((StatusCode::CREATED, Json(json!({ "data": present(doc) }))))
}

fn compare(a: &Value, b: &Value, field: &str) -> Ordering {
    match field {
        "name" => {
            let (x, y) = (a[field].as_str().unwrap_or_default(), b[field].as_str().unwrap_or_default());
            x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y))
        }
        "priority" => a[field].as_i64().cmp(&b[field].as_i64()),
        "enabled" => a[field].as_bool().cmp(&b[field].as_bool()),
        _ => a[field].as_str().cmp(&b[field].as_str()),
    }
}

async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    caller.operator_only()?;
    let q = Query::parse(q.as_deref());
    let page = q.page(20, 250)?;
    let (field, descending) = q.sort(SORTS, DEFAULT_SORT)?;
    let enabled = match q.get("filter[enabled]") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_request("filter[enabled] must be true or false.")),
    };
    let name_filter = q.get("filter[name][contains]").map(str::to_lowercase);
    let mut items: Vec<Value> = s
        .store
        .list_resources(KIND, None)
        .await?
        .into_iter()
        .filter(|r| name_filter.as_ref().is_none_or(|n| r.name.to_lowercase().contains(n)))
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter(|d| enabled.is_none_or(|e| d["enabled"].as_bool() == Some(e)))
        .collect();
    items.sort_by(|a, b| {
        let o = compare(a, b, field);
        if descending { o.reverse() } else { o }
    });
    Ok(Json(page.envelope(items.into_iter().map(present).collect())))
}

async fn fetch(s: &ApiState, caller: &Caller, id: &str) -> Result<(Resource, Value), ApiError> {
    caller.operator_only()?;
    // Operator resources: the operator sees every one.
    crate::fetch(&*s.store, caller, KIND, id).await
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, doc) = fetch(&s, &caller, &id).await?;
    Ok(Json(json!({ "data": present(doc) })))
}

async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, base) = fetch(&s, &caller, &id).await?;
    let mut f = Fields::parse(&body)?;
    let doc = build(&mut f, Some(&base));
    if let Some(d) = &doc {
        check_inbound_ips(&s, &mut f, d, Some(&id)).await?;
    }
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
    Ok(Json(json!({ "data": present(doc) })))
}

async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, doc) = fetch(&s, &caller, &id).await?;
    if !s.store.delete_resource(KIND, &id).await? {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": present(doc) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["sip.carrier.example", "gw1", "a-b.example.com", "203.0.113.7", "2001:db8::1", "::1"] {
            assert_eq!(gateway_host(ok).as_deref(), Some(ok), "{ok}");
        }
        assert_eq!(gateway_host("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        for bad in [
            "",
            "-gw.example",
            "gw-.example",
            "gw..example",
            "gw.example.",
            "999.1.1.1",
            "1.2.3",
            "[1.2.3.4]",
            "a b",
            "gw:5060",
        ] {
            assert_eq!(gateway_host(bad), None, "{bad}");
        }
        assert!(gateway_host(&"a".repeat(64)).is_none());
    }

    #[test]
    fn nets() {
        let n = |s: &str| Net::parse(s).unwrap_or_else(|| panic!("{s}"));
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "2001:db8::/129", "10.0.0", "host", "10.0.0.0/8/8"] {
            assert_eq!(Net::parse(bad), None, "{bad}");
        }
        assert!(n("10.0.0.0/8").overlaps(&n("10.1.2.3")));
        assert!(n("10.1.2.3").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.0.0.0/8").overlaps(&n("11.0.0.0/8")));
        assert!(n("0.0.0.0/0").overlaps(&n("192.0.2.1")));
        assert!(!n("0.0.0.0/0").overlaps(&n("::/0")), "families never overlap");
        assert!(n("2001:db8::/32").overlaps(&n("2001:db8:1::5")));
        assert!(!n("2001:db8::/32").overlaps(&n("2001:db9::/32")));
        assert!(n("::/0").overlaps(&n("2001:db8::1")));
        assert!(!n("192.0.2.1").overlaps(&n("192.0.2.2")));
    }
}
