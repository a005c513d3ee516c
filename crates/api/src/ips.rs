//! `/v2/ips`: the IP addresses of IP connections, where their calls come from and where inbound
//! calls go (`ip_address`, `port`). Follows the contract's `Ip` field for field:
//!
//! - Create answers 201, delete 200 with the deleted IP. `ip_address` is required on create and
//!   on PATCH alike (the contract's `CreateIpRequest` and `UpdateIpRequest`); `port` is 1 to
//!   65535, 5060 by default (null returns it to 5060).
//! - `ip_address`: an IPv4 or IPv6 address (not a network, not unspecified, multicast or
//!   broadcast), kept in its canonical form (`2001:db8::1`; an IPv4-mapped IPv6 address as the
//!   IPv4 one) so the same address is always written the same way.
//! - `connection_id` is required (an IP without a connection authenticates and receives
//!   nothing) and must name an IP connection of the same account; another account's is refused
//!   at `/connection_id` exactly like a missing one. The IP belongs to the connection's account
//!   (the operator may send `account_id`, which must be that one). A PATCH may move it to another
//!   connection of the same account. Deleting the connection deletes its IPs.
//! - Several connections may share a source IP address only when their calls can be told
//!   apart: their tech prefixes (assigned by the platform, see [`crate::ip_connections`]) must
//!   differ on each address. Attaching an address to a connection whose tech prefix another
//!   connection already uses on it, or an address the connection already has, is refused with
//!   422 (code 10007) at `/ip_address`. This is claimed atomically in the store (scope
//!   [`SCOPE`]), so concurrent requests cannot both succeed.
//! - Deleting an IP, or moving it to another connection, clears the old connection's
//!   `inbound.default_*_ip_id` fields that named it.
//! - The list: `page[number]`, `page[size]` (1 to 250, default 250), `filter[connection_id]`,
//!   `filter[ip_address]` (compared in canonical form), `filter[port]`, and for the operator
//!   `filter[account_id]`; oldest first (the contract names no sort). Errors answer 400.

use std::net::IpAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use store::{Repository, Resource, StoreError};

use crate::connections_common as cc;
use crate::fields::Fields;
use crate::ip_connections::{self, DEFAULT_IP_FIELDS, IP_CONNECTION_TYPE};
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

/// The stored kind and `record_type`.
pub const KIND: &str = "ip";
/// The unique scope of `(source address, tech prefix)` pairs: `ADDRESS#PREFIX`.
pub const SCOPE: &str = "source_ip_tech_prefix";
/// The contract's default port.
pub const DEFAULT_PORT: i64 = 5060;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/ips", get(list).post(create)).route("/ips/{id}", get(show).patch(update).delete(remove))
}

/// An IP address in its canonical form (`2001:db8::1`; IPv4-mapped IPv6 as IPv4).
pub fn normalize_ip(s: &str) -> Option<String> {
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical().to_string())
}

/// An address calls can come from and go to, canonical: not unspecified, multicast or broadcast.
pub fn canonical_ip(s: &str) -> Option<String> {
    let ip = s.parse::<IpAddr>().ok()?.to_canonical();
    let usable = match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_multicast(),
    };
    usable.then(|| ip.to_string())
}

/// `ip_address`, required.
fn read_ip_address(f: &mut Fields) -> Option<String> {
    let raw = f.string("ip_address", true, 1, 64)?;
    let ip = canonical_ip(&raw);
    if ip.is_none() {
        f.errors.push(ErrorObject::invalid_value(
            "/ip_address",
            "Must be an IPv4 or IPv6 address, such as \"192.0.2.1\" (not unspecified, multicast or broadcast).",
        ));
    }
    ip
}

/// `port`: absent keeps `current`, null is the default.
fn read_port(f: &mut Fields, current: i64) -> Option<i64> {
    match f.integer("port", 1, 65_535, Some(current), true)? {
        Some(p) => Some(p),
        None => Some(DEFAULT_PORT),
    }
}

/// `connection_id`, required: an IP connection this caller sees, of `owner` when the IP has
/// one already. Its resource and document.
async fn read_connection(
    store: &dyn Repository,
    caller: &Caller,
    f: &mut Fields,
    owner: Option<&str>,
) -> Result<Option<(Resource, Value)>, ApiError> {
    let Some(id) = f.string("connection_id", true, 1, 64) else { return Ok(None) };
    let found = store
        .get_resource(ip_connections::KIND, &id)
        .await?
        .filter(|r| caller.sees(&r.account_id) && owner.is_none_or(|o| o == r.account_id));
    let Some(r) = found else {
        f.errors.push(ErrorObject::invalid_value("/connection_id", "No IP connection of this account has this id."));
        return Ok(None);
    };
    let doc = serde_json::from_str(&r.body).map_err(|_| ApiError::internal())?;
    Ok(Some((r, doc)))
}

/// The claim of `address` on a connection: its tech prefix on that address.
fn claim(address: &str, connection: &Value) -> String {
    format!("{address}#{}", connection["outbound"]["tech_prefix"].as_str().unwrap_or_default())
}

/// A taken claim as the API answers it: the address is already on this connection, or another
/// connection on it has the same tech prefix.
async fn claim_error(
    e: StoreError,
    store: &dyn Repository,
    own_id: &str,
    address: &str,
    connection: &Value,
) -> ApiError {
    if !matches!(&e, StoreError::Conflict { scope } if scope == SCOPE) {
        return e.into();
    }
    let connection_id = connection["id"].as_str().unwrap_or_default();
    let mut same_connection = false;
    if let Ok(all) = store.list_resources(KIND, None).await {
        same_connection = all.iter().filter(|r| r.id != own_id).any(|r| {
            serde_json::from_str::<Value>(&r.body)
                .is_ok_and(|d| d["ip_address"] == address && d["connection_id"] == connection_id)
        });
    }
    let detail = if same_connection {
        "This IP address is already on this connection.".to_owned()
    } else {
        format!(
            "Another connection on this IP address uses the same tech prefix ({}); calls could not be told apart.",
            connection["outbound"]["tech_prefix"].as_str().unwrap_or_default()
        )
    };
    ApiError::conflict(detail, "/ip_address")
}

async fn create(State(s): State<ApiState>, caller: Caller, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let address = read_ip_address(&mut f);
    let port = read_port(&mut f, DEFAULT_PORT);
    let connection = read_connection(&*s.store, &caller, &mut f, None).await?;
    let owner = connection.as_ref().map(|(r, _)| r.account_id.clone());
    if let Some(Some(given)) = f.nullable_string("account_id") {
        let own = match &caller {
            Caller::Account(a) => Some(a),
            Caller::Operator => owner.as_ref(),
        };
        if own.is_some_and(|o| *o != given) {
            f.errors.push(ErrorObject::invalid_value("/account_id", "Must be the account of the connection."));
        }
    }
    f.finish()?;
    let (Some(address), Some(port), Some((conn_r, conn))) = (address, port, connection) else {
        return Err(ApiError::internal());
    };
    let id = new_id()?;
    let now = now_timestamp();
    let doc = json!({
        "id": id,
        "record_type": KIND,
        "connection_id": conn_r.id,
        "ip_address": address,
        "port": port,
        "created_at": now,
        "updated_at": now,
    });
    let r = Resource {
        kind: KIND.into(),
        id: id.clone(),
        account_id: conn_r.account_id.clone(),
        name: address.clone(),
        body: doc.to_string(),
        created_at: now.clone(),
        updated_at: now,
    };
    let value = claim(&address, &conn);
    if let Err(e) = s.store.insert_resource(&r, &[(SCOPE, &value)]).await {
        return Err(claim_error(e, &*s.store, &id, &address, &conn).await);
    }
    // The connection may have been deleted meanwhile, after it deleted its IPs.
    if s.store.get_resource(ip_connections::KIND, &conn_r.id).await?.is_none() {
        s.store.delete_resource(KIND, &id).await?;
        return Err(ApiError::invalid(vec![ErrorObject::invalid_value(
            "/connection_id",
            "No IP connection of this account has this id.",
        )]));
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": cc::present(doc, &r.account_id, &caller) }))))
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = cc::fetch(&*s.store, &caller, KIND, &id).await?;
    Ok(Json(json!({ "data": cc::present(doc, &r.account_id, &caller) })))
}

/// PATCH: `ip_address` is required (the contract's `UpdateIpRequest`); `port` and
/// `connection_id` change when given.
async fn update(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut r, mut doc) = cc::fetch(&*s.store, &caller, KIND, &id).await?;
    let mut f = Fields::parse(&body)?;
    cc::check_owner_unchanged(&mut f, &r.account_id);
    let address = read_ip_address(&mut f);
    let port = read_port(&mut f, doc["port"].as_i64().unwrap_or(DEFAULT_PORT));
    let old_connection = doc["connection_id"].as_str().unwrap_or_default().to_owned();
    let connection = if f.has("connection_id") {
        read_connection(&*s.store, &caller, &mut f, Some(&r.account_id)).await?
    } else {
        match s.store.get_resource(ip_connections::KIND, &old_connection).await? {
            Some(c) => {
                let d = serde_json::from_str(&c.body).map_err(|_| ApiError::internal())?;
                Some((c, d))
            }
            None => {
                f.errors.push(ErrorObject::required("/connection_id"));
                None
            }
        }
    };
    f.finish()?;
    let (Some(address), Some(port), Some((conn_r, conn))) = (address, port, connection) else {
        return Err(ApiError::internal());
    };
    let now = now_timestamp();
    doc["connection_id"] = json!(conn_r.id);
    doc["ip_address"] = json!(address);
    doc["port"] = json!(port);
    doc["updated_at"] = json!(now);
    r.name = address.clone();
    r.body = doc.to_string();
    r.updated_at = now;
    let value = claim(&address, &conn);
    match s.store.update_resource(&r, &[(SCOPE, &value)]).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found()),
        Err(e) => return Err(claim_error(e, &*s.store, &id, &address, &conn).await),
    }
    if conn_r.id != old_connection {
        cc::forget_default_reference(&*s.store, &IP_CONNECTION_TYPE, &old_connection, DEFAULT_IP_FIELDS, &id).await?;
    }
    Ok(Json(json!({ "data": cc::present(doc, &r.account_id, &caller) })))
}

async fn remove(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (r, doc) = cc::fetch(&*s.store, &caller, KIND, &id).await?;
    if !s.store.delete_resource(KIND, &id).await? {
        return Err(ApiError::not_found());
    }
    if let Some(connection_id) = doc["connection_id"].as_str() {
        cc::forget_default_reference(&*s.store, &IP_CONNECTION_TYPE, connection_id, DEFAULT_IP_FIELDS, &id).await?;
    }
    Ok(Json(json!({ "data": cc::present(doc, &r.account_id, &caller) })))
}

/// One page of the IPs this caller sees, oldest first.
async fn list(State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, ApiError> {
    let q = Query::parse(q.as_deref());
    let page = q.page(250, 250)?;
    let connection = q.get("filter[connection_id]");
    let address = q.get("filter[ip_address]").map(|a| normalize_ip(a).unwrap_or_else(|| a.to_owned()));
    let port = match q.get("filter[port]") {
        None => None,
        Some(p) => Some(p.parse::<i64>().map_err(|_| ApiError::bad_request("filter[port] must be an integer."))?),
    };
    let account_filter = q.get("filter[account_id]");
    let scope = match &caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account_filter,
    };
    let mut items = Vec::new();
    for r in s.store.list_resources(KIND, scope).await? {
        if !caller.sees(&r.account_id) || account_filter.is_some_and(|a| r.account_id != a) {
            continue;
        }
        let Ok(doc) = serde_json::from_str::<Value>(&r.body) else { continue };
        let keep = connection.is_none_or(|c| doc["connection_id"] == c)
            && address.as_ref().is_none_or(|a| doc["ip_address"] == a.as_str())
            && port.is_none_or(|p| doc["port"] == p);
        if keep {
            items.push(cc::present(doc, &r.account_id, &caller));
        }
    }
    Ok(Json(page.envelope(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for (given, canonical) in [
            ("192.0.2.1", "192.0.2.1"),
            ("10.0.0.1", "10.0.0.1"),
            ("127.0.0.1", "127.0.0.1"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
        ] {
            assert_eq!(canonical_ip(given).as_deref(), Some(canonical), "{given}");
        }
        for bad in
            ["", "192.0.2", "192.0.2.256", "192.0.2.0/24", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"]
        {
            assert_eq!(canonical_ip(bad), None, "{bad}");
        }
        for bad in ["fe80::1%eth0", " 192.0.2.1", "example.com", "192.0.2.1:5060"] {
            assert_eq!(canonical_ip(bad), None, "{bad}");
        }
        assert_eq!(normalize_ip("0.0.0.0").as_deref(), Some("0.0.0.0"));
    }
}
