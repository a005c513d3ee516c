//! Live calls: the calls the switch has up right now, as the contract reports them.
//!
//! - `GET /v2/connections/{connection_id}/active_calls`: the connection's live calls in the
//!   contract's `ActiveCall` shape, oldest first (by start time, ties by `call_control_id`),
//!   cursor paginated. 404 for a connection the caller does not see.
//! - `GET /v2/calls/{call_control_id}`: one live call in the contract's `Call` shape. A call
//!   unknown, ended, or of another account answers 404, exactly like a missing one.
//!
//! The switch publishes its calls into a [`LiveCalls`] implementation: [`LiveCallTable`] in
//! memory on a single node. The API only reads it.
//!
//! Derived fields: `record_type` is `call`; `call_duration` is whole seconds since the call
//! was answered, 0 while it still rings (the talk time, as a CDR's `call_sec` counts it; the
//! contract's own example, 110 s from start to end with a duration of 50, is not time since
//! start either); `start_time` is when the switch took the call (UTC, milliseconds); every
//! call in the table is live, so `is_alive` is true and `end_time` (only for calls not alive)
//! is never shown. `client_state` is left out of a `Call` when unset; `ActiveCall` requires it
//! as a string, so there it is `""`. The operator also sees `account_id`, as on connections.
//!
//! Paging takes the contract's `page[...]` parameters (all optional, checked together, every
//! fault a 422 with a pointer such as `/page/after`):
//!
//! - `page[size]` (or its alias `page[limit]` when `page[size]` is absent): 1 to 250, default 20.
//! - `page[after]` / `page[before]`: a cursor from `meta.cursors` of an earlier page: the calls
//!   after (before) it. A cursor names a position, not a call, so it stays valid when calls
//!   end. Not both at once. The contract's written default, the string `null`, means absent.
//! - `page[number]` (from 1, default 1) pages by number when no cursor is given; the official
//!   SDK pages this list that way.
//!
//! `meta` is the contract's `CursorPaginationMeta`: `cursors.after` and `next` only when calls
//! follow the page, `cursors.before` and `previous` only when calls precede it, `total_items`;
//! plus `page_size` and `total_pages`, and `page_number` when paging by number (what the SDK
//! reads to find the next page).

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject};

/// Every live call's `record_type`.
pub const RECORD_TYPE: &str = "call";
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 250;
/// The version tag of the cursors this API issues: a later encoding can tell its own apart.
const CURSOR_PREFIX: &str = "v1:";

/// Which way a call goes, seen from the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallDirection {
    /// Toward the network: a customer's call out to the carriers.
    Outgoing,
    /// From the network to a customer.
    Incoming,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Outgoing => "outgoing",
            CallDirection::Incoming => "incoming",
        }
    }
}

/// A call the switch has up, as it publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveCall {
    /// The opaque id the API knows the call by.
    pub call_control_id: String,
    pub call_leg_id: String,
    /// Shared by the legs of one phone call.
    pub call_session_id: String,
    pub connection_id: String,
    /// The account the call belongs to: only it (and the operator) sees the call.
    pub account_id: String,
    /// The parties, E.164 or as received.
    pub from: String,
    pub to: String,
    pub direction: CallDirection,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds; `None` while it rings.
    pub answered_at_ms: Option<i64>,
    pub client_state: Option<String>,
}

impl LiveCall {
    /// Whole seconds since the call was answered at `now_ms`; 0 while it rings (or if the
    /// clock reads earlier than the answer).
    pub fn call_duration(&self, now_ms: i64) -> i64 {
        self.answered_at_ms.map_or(0, |at| now_ms.saturating_sub(at).max(0) / 1000)
    }

    /// The contract's `ActiveCall` at `now_ms`, as `caller` sees it.
    pub fn active_call(&self, now_ms: i64, caller: &Caller) -> Value {
        let mut v = json!({
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "call_duration": self.call_duration(now_ms),
            "client_state": self.client_state.as_deref().unwrap_or(""),
            "record_type": RECORD_TYPE,
        });
        self.operator_fields(&mut v, caller);
        v
    }

    /// The contract's `Call` (the call status) at `now_ms`, as `caller` sees it.
    pub fn status(&self, now_ms: i64, caller: &Caller) -> Value {
        let mut v = json!({
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "call_duration": self.call_duration(now_ms),
            "is_alive": true,
            "record_type": RECORD_TYPE,
            "start_time": store::cdr_timestamp(self.started_at_ms),
        });
        if let Some(s) = &self.client_state {
            v["client_state"] = json!(s);
        }
        self.operator_fields(&mut v, caller);
        v
    }

    fn operator_fields(&self, v: &mut Value, caller: &Caller) {
        if *caller == Caller::Operator {
            v["account_id"] = json!(self.account_id);
        }
    }

    /// Where the call sorts in a connection's list: start time, then `call_control_id`.
    pub fn sort_key(&self) -> (i64, &str) {
        (self.started_at_ms, &self.call_control_id)
    }

    fn position(&self) -> Position {
        (self.started_at_ms, self.call_control_id.clone())
    }
}

/// A place in a connection's list: start time, then `call_control_id`.
type Position = (i64, String);

/// Where the API reads live calls from.
pub trait LiveCalls: Send + Sync {
    /// The live calls on `connection_id`, in any order.
    fn of_connection(&self, connection_id: &str) -> Vec<LiveCall>;
    /// The live call `call_control_id`, if it is up.
    fn get(&self, call_control_id: &str) -> Option<LiveCall>;
}

/// The live calls of a single node, in memory: the switch writes, the API reads.
#[derive(Debug, Default)]
pub struct LiveCallTable {
    inner: RwLock<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    calls: HashMap<String, LiveCall, foldhash::fast::RandomState>,
    /// Each connection's calls by position, so a list reads out in order.
    by_connection: HashMap<String, BTreeSet<Position>, foldhash::fast::RandomState>,
}

impl Tables {
    fn unindex(&mut self, call: &LiveCall) {
        if let Some(set) = self.by_connection.get_mut(&call.connection_id) {
            set.remove(&call.position());
            if set.is_empty() {
                self.by_connection.remove(&call.connection_id);
            }
        }
    }
}

impl LiveCallTable {
    pub fn new() -> Self {
        Self::default()
    }

    // A poisoned lock still reads: no update here can panic between its changes to the two
    // maps, so they agree whatever the panicking thread was doing.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `call`, replacing (and returning) one with the same `call_control_id`.
    pub fn insert(&self, call: LiveCall) -> Option<LiveCall> {
        let mut t = self.write();
        let old = t.calls.remove(&call.call_control_id);
        if let Some(old) = &old {
            t.unindex(old);
        }
        // The connection's name is copied only for its first live call.
        match t.by_connection.get_mut(&call.connection_id) {
            Some(set) => {
                set.insert(call.position());
            }
            None => {
                t.by_connection.insert(call.connection_id.clone(), BTreeSet::from([call.position()]));
            }
        }
        t.calls.insert(call.call_control_id.clone(), call);
        old
    }

    /// Marks the call answered at `at_ms` (Unix ms); false when no such call is up. The first
    /// answer stands: a call is answered once.
    pub fn answered(&self, call_control_id: &str, at_ms: i64) -> bool {
        match self.write().calls.get_mut(call_control_id) {
            Some(call) => {
                call.answered_at_ms.get_or_insert(at_ms);
                true
            }
            None => false,
        }
    }

    /// Takes the call out (it ended); the call as it was, if it was up.
    pub fn remove(&self, call_control_id: &str) -> Option<LiveCall> {
        let mut t = self.write();
        let call = t.calls.remove(call_control_id)?;
        t.unindex(&call);
        Some(call)
    }

    /// How many calls are up.
    pub fn len(&self) -> usize {
        self.read().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LiveCalls for LiveCallTable {
    fn of_connection(&self, connection_id: &str) -> Vec<LiveCall> {
        let t = self.read();
        t.by_connection
            .get(connection_id)
            .map(|set| set.iter().filter_map(|(_, id)| t.calls.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    fn get(&self, call_control_id: &str) -> Option<LiveCall> {
        self.read().calls.get(call_control_id).cloned()
    }
}

/// A list position as an opaque cursor.
pub fn encode_cursor(started_at_ms: i64, call_control_id: &str) -> String {
    format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(format!("{started_at_ms}:{call_control_id}")))
}

/// The position a cursor of [`encode_cursor`] names; `None` for anything else.
pub fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.strip_prefix(CURSOR_PREFIX)?).ok()?;
    let (ms, id) = std::str::from_utf8(&bytes).ok()?.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

/// Where a requested page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart {
    /// Page `n`, from 1.
    Number(usize),
    /// Just after this position.
    After((i64, String)),
    /// Just before this position (the page ends there).
    Before((i64, String)),
}

/// A requested page of a cursor-paginated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorPage {
    pub start: PageStart,
    pub size: usize,
}

impl CursorPage {
    /// The `page[...]` parameters of `q`; every fault is one error of the 422.
    pub fn parse(q: &Query) -> Result<CursorPage, ApiError> {
        let mut errors = Vec::new();
        let mut int = |name: &str, max: usize| -> Option<usize> {
            let v = q.get(&format!("page[{name}]"))?;
            let n = v.parse::<usize>().ok().filter(|n| (1..=max).contains(n));
            if n.is_none() {
                errors.push(ErrorObject::invalid_value(
                    &format!("/page/{name}"),
                    format!("Must be an integer from 1 to {max}."),
                ));
            }
            n
        };
        let size = int("size", MAX_PAGE_SIZE);
        let limit = int("limit", MAX_PAGE_SIZE);
        let number = int("number", usize::MAX >> 1);
        let mut cursor = |name: &str| -> Option<(i64, String)> {
            // The contract writes the default of both cursors as the string `null`.
            let v = q.get(&format!("page[{name}]")).filter(|v| !v.is_empty() && *v != "null")?;
            let position = decode_cursor(v);
            if position.is_none() {
                errors.push(ErrorObject::invalid_value(
                    &format!("/page/{name}"),
                    "Must be a cursor from meta.cursors of an earlier page.",
                ));
            }
            position
        };
        let after = cursor("after");
        let before = cursor("before");
        if after.is_some() && before.is_some() {
            errors.push(ErrorObject::invalid_value("/page/before", "Give page[after] or page[before], not both."));
        }
        if number.is_some() && (after.is_some() || before.is_some()) {
            errors.push(ErrorObject::invalid_value(
                "/page/number",
                "page[number] pages by number; give it or a cursor (page[after], page[before]), not both.",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
        let start = match (after, before) {
            (Some(p), _) => PageStart::After(p),
            (_, Some(p)) => PageStart::Before(p),
            _ => PageStart::Number(number.unwrap_or(1)),
        };
        Ok(CursorPage { start, size: size.or(limit).unwrap_or(DEFAULT_PAGE_SIZE) })
    }

    /// The envelope of this page of `calls` (sorted by position) at `now_ms`: `data` and
    /// `meta`, the `next`/`previous` links under `path`.
    pub fn envelope(&self, calls: &[LiveCall], path: &str, now_ms: i64, caller: &Caller) -> Value {
        let total = calls.len();
        let after = |p: &Position| calls.partition_point(|c| c.sort_key() <= (p.0, p.1.as_str()));
        let before = |p: &Position| calls.partition_point(|c| c.sort_key() < (p.0, p.1.as_str()));
        let (start, end) = match &self.start {
            PageStart::Number(n) => {
                let start = n.saturating_sub(1).saturating_mul(self.size).min(total);
                (start, start.saturating_add(self.size).min(total))
            }
            PageStart::After(p) => {
                let start = after(p);
                (start, start.saturating_add(self.size).min(total))
            }
            PageStart::Before(p) => {
                let end = before(p);
                (end.saturating_sub(self.size), end)
            }
        };
        let page = &calls[start..end];
        let mut cursors = Map::new();
        let mut meta = Map::new();
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            if end < total {
                let c = encode_cursor(last.started_at_ms, &last.call_control_id);
                meta.insert("next".into(), json!(format!("{path}?page[after]={c}&page[size]={}", self.size)));
                cursors.insert("after".into(), json!(c));
            }
            if start > 0 {
                let c = encode_cursor(first.started_at_ms, &first.call_control_id);
                meta.insert("previous".into(), json!(format!("{path}?page[before]={c}&page[size]={}", self.size)));
                cursors.insert("before".into(), json!(c));
            }
        }
        meta.insert("cursors".into(), Value::Object(cursors));
        meta.insert("total_items".into(), json!(total));
        meta.insert("page_size".into(), json!(self.size));
        meta.insert("total_pages".into(), json!(total.div_ceil(self.size)));
        if let PageStart::Number(n) = self.start {
            meta.insert("page_number".into(), json!(n));
        }
        json!({
            "data": page.iter().map(|c| c.active_call(now_ms, caller)).collect::<Vec<_>>(),
            "meta": meta,
        })
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/connections/{id}/active_calls", get(active_calls))
        .route("/calls/{call_control_id}", get(show))
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Whether `caller` sees connection `id` of any type.
async fn sees_connection(s: &ApiState, caller: &Caller, id: &str) -> Result<bool, ApiError> {
    for kind in crate::connections::KINDS {
        if s.store.get_resource(kind, id).await?.is_some_and(|r| caller.sees(&r.account_id)) {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn active_calls(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if !sees_connection(&s, &caller, &id).await? {
        return Err(ApiError::not_found());
    }
    let page = CursorPage::parse(&Query::parse(q.as_deref()))?;
    // The connection is the caller's, so its calls are too; the filter keeps a call the
    // switch filed under the wrong account from showing anyway.
    let mut calls: Vec<LiveCall> =
        s.live_calls.of_connection(&id).into_iter().filter(|c| caller.sees(&c.account_id)).collect();
    calls.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(Json(page.envelope(&calls, &format!("/v2/connections/{id}/active_calls"), now_ms(), &caller)))
}

async fn show(State(s): State<ApiState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let call = s.live_calls.get(&id).filter(|c| caller.sees(&c.account_id)).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "data": call.status(now_ms(), &caller) })))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// 2026-01-02T03:04:05.678Z.
    const NOW: i64 = 1_767_323_045_678;

    fn call(id: &str, connection: &str, started: i64) -> LiveCall {
        LiveCall {
            call_control_id: id.into(),
            call_leg_id: format!("leg-{id}"),
            call_session_id: format!("session-{id}"),
            connection_id: connection.into(),
            account_id: "a1".into(),
            from: "+12125551234".into(),
            to: "+12125556789".into(),
            direction: CallDirection::Outgoing,
            started_at_ms: started,
            answered_at_ms: None,
            client_state: None,
        }
    }

    fn ids(v: &Value) -> Vec<&str> {
        v["data"].as_array().unwrap().iter().map(|c| c["call_control_id"].as_str().unwrap()).collect()
    }

    #[test]
    fn shapes() {
        let mut c = call("c1", "conn", NOW - 60_000);
        let account = Caller::Account("a1".into());
        assert_eq!(
            c.active_call(NOW, &account),
            json!({"call_control_id": "c1", "call_leg_id": "leg-c1", "call_session_id": "session-c1",
                   "call_duration": 0, "client_state": "", "record_type": "call"})
        );
        assert_eq!(
            c.status(NOW, &account),
            json!({"call_control_id": "c1", "call_leg_id": "leg-c1", "call_session_id": "session-c1",
                   "call_duration": 0, "is_alive": true, "record_type": "call",
                   "start_time": "2026-01-02T03:03:05.678Z"})
        );
        // Answered 50.9 s ago: 50 whole seconds of talk.
        c.answered_at_ms = Some(NOW - 50_900);
        c.client_state = Some("aGV5".into());
        assert_eq!(c.active_call(NOW, &account)["call_duration"], 50);
        assert_eq!(c.status(NOW, &account)["client_state"], "aGV5");
        assert_eq!(c.active_call(NOW, &Caller::Operator)["account_id"], "a1");
        assert_eq!(c.status(NOW, &Caller::Operator)["account_id"], "a1");
        // A clock behind the answer is not a negative duration.
        assert_eq!(c.call_duration(NOW - 60_000), 0);
    }

    #[test]
    fn cursors_round_trip() {
        for (ms, id) in [(NOW, "c1"), (0, "v3:a:b:c"), (-5, ""), (i64::MAX, "é")] {
            let c = encode_cursor(ms, id);
            assert!(c.starts_with("v1:"));
            assert_eq!(decode_cursor(&c), Some((ms, id.to_owned())), "{c}");
        }
        for bad in ["", "v1:", "v1:!!", "v2:MTox", "MToxMg", &format!("v1:{}", URL_SAFE_NO_PAD.encode("x:1"))] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn table_indexes_follow_every_change() {
        let t = LiveCallTable::new();
        assert!(t.is_empty());
        assert_eq!(t.insert(call("c2", "k1", 20)), None);
        t.insert(call("c1", "k1", 10));
        t.insert(call("c3", "k2", 5));
        let order = |conn: &str| t.of_connection(conn).into_iter().map(|c| c.call_control_id).collect::<Vec<_>>();
        assert_eq!(order("k1"), ["c1", "c2"]);
        assert_eq!(t.len(), 3);
        // Re-inserting moves the call between connections and positions.
        let old = t.insert(call("c1", "k2", 30)).unwrap();
        assert_eq!(old.connection_id, "k1");
        assert_eq!((order("k1"), order("k2")), (vec!["c2".to_owned()], vec!["c3".to_owned(), "c1".to_owned()]));
        assert_eq!(t.len(), 3);
        assert!(t.answered("c3", 100));
        assert!(t.answered("c3", 200));
        assert_eq!(t.get("c3").unwrap().answered_at_ms, Some(100));
        assert!(!t.answered("nope", 1));
        assert_eq!(t.remove("c2").unwrap().call_control_id, "c2");
        assert_eq!(t.remove("c2"), None);
        assert!(order("k1").is_empty());
        assert!(!t.read().by_connection.contains_key("k1"));
        assert_eq!(t.get("c2"), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn table_takes_concurrent_writers() {
        let t = Arc::new(LiveCallTable::new());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let id = format!("w{w}-{i}");
                        t.insert(call(&id, &format!("k{}", i % 3), i));
                        t.answered(&id, i + 1);
                        if i % 2 == 0 {
                            assert!(t.remove(&id).is_some());
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for k in ["k0", "k1", "k2"] {
                        assert!(t.of_connection(k).iter().all(|c| c.connection_id == k));
                    }
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(t.len(), 8 * 250);
        let listed: usize = ["k0", "k1", "k2"].iter().map(|k| t.of_connection(k).len()).sum();
        assert_eq!(listed, t.len());
        assert!(t.of_connection("k1").iter().all(|c| c.answered_at_ms == Some(c.started_at_ms + 1)));
    }

    #[test]
    fn page_parameters() {
        let parse = |s: &str| CursorPage::parse(&Query::parse(Some(s)));
        assert_eq!(parse("").unwrap(), CursorPage { start: PageStart::Number(1), size: 20 });
        assert_eq!(parse("page[limit]=7").unwrap().size, 7);
        assert_eq!(parse("page[limit]=7&page[size]=9").unwrap().size, 9);
        let c = encode_cursor(5, "c1");
        assert_eq!(
            parse(&format!("page[after]={c}&page[size]=2")).unwrap(),
            CursorPage { start: PageStart::After((5, "c1".into())), size: 2 }
        );
        assert_eq!(parse(&format!("page[before]={c}")).unwrap().start, PageStart::Before((5, "c1".into())));
        assert_eq!(parse("page[after]=null&page[before]=&page[number]=3").unwrap().start, PageStart::Number(3));
        let e = parse(&format!(
            "page[size]=0&page[limit]=251&page[number]=x&page[after]=v1:zz*&page[before]={c}&page[after]={c}"
        ))
        .unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_deref().unwrap()).collect();
        // The first page[after] is the one read.
        assert_eq!(pointers, ["/page/size", "/page/limit", "/page/number", "/page/after"]);
        let e = parse(&format!("page[after]={c}&page[before]={c}&page[number]=1")).unwrap_err();
        let pointers: Vec<_> = e.errors.iter().map(|e| e.pointer.as_deref().unwrap()).collect();
        assert_eq!(pointers, ["/page/before", "/page/number"]);
    }

    #[test]
    fn pages_by_cursor_and_number() {
        // Five calls; two share a start time and order by id.
        let calls: Vec<_> = [("c1", 10), ("c2", 20), ("c3", 20), ("c4", 30), ("c5", 40)]
            .iter()
            .map(|(id, ms)| call(id, "k", *ms))
            .collect();
        let me = Caller::Account("a1".into());
        let page = |start: PageStart| CursorPage { start, size: 2 }.envelope(&calls, "/p", NOW, &me);
        let first = page(PageStart::Number(1));
        assert_eq!(ids(&first), ["c1", "c2"]);
        let after = encode_cursor(20, "c2");
        assert_eq!(
            first["meta"],
            json!({"cursors": {"after": after}, "next": format!("/p?page[after]={after}&page[size]=2"),
                   "total_items": 5, "page_size": 2, "total_pages": 3, "page_number": 1})
        );
        let second = page(PageStart::After((20, "c2".into())));
        assert_eq!(ids(&second), ["c3", "c4"]);
        assert!(second["meta"].get("page_number").is_none());
        let (a, b) = (encode_cursor(30, "c4"), encode_cursor(20, "c3"));
        assert_eq!(second["meta"]["cursors"], json!({"after": a, "before": b}));
        assert_eq!(second["meta"]["previous"], format!("/p?page[before]={b}&page[size]=2"));
        let last = page(PageStart::After((30, "c4".into())));
        assert_eq!(ids(&last), ["c5"]);
        assert_eq!(last["meta"]["cursors"], json!({"before": encode_cursor(40, "c5")}));
        assert!(last["meta"].get("next").is_none());
        assert_eq!(ids(&page(PageStart::Before((40, "c5".into())))), ["c3", "c4"]);
        assert_eq!(ids(&page(PageStart::Before((20, "c3".into())))), ["c1", "c2"]);
        let before_first = page(PageStart::Before((10, "c1".into())));
        assert_eq!((ids(&before_first), &before_first["meta"]["cursors"]), (vec![], &json!({})));
        // A cursor whose call has ended still marks its place.
        assert_eq!(ids(&page(PageStart::After((25, "gone".into())))), ["c4", "c5"]);
        assert_eq!(ids(&page(PageStart::Number(3))), ["c5"]);
        let beyond = page(PageStart::Number(9));
        assert_eq!((ids(&beyond), &beyond["meta"]["cursors"]), (vec![], &json!({})));
        let empty = CursorPage { start: PageStart::Number(1), size: 20 }.envelope(&[], "/p", NOW, &me);
        assert_eq!(
            empty,
            json!({"data": [], "meta": {"cursors": {}, "total_items": 0, "page_size": 20, "total_pages": 0,
                   "page_number": 1}})
        );
    }
}
