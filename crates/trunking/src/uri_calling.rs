//! SIP URI calling: `INVITE sip:username@<the platform's SIP domain>` reaches the registered
//! contacts of the credential connection with that user name, as far as the connection's
//! `sip_uri_calling_preference` allows. The checks run in this order, each with its response
//! ([`URI_CALL_CHECKS`]):
//!
//! 1. `uri_call.request_uri`: a `sip:`/`sips:` Request-URI whose host is the platform's SIP
//!    domain or one of its equivalent hosts ([`UriCallingSettings`]), and whose user part is a
//!    name: not empty, not starting with a digit (nor `+` and a digit), not `user=phone`. The
//!    product documentation: usernames "must begin with a non-numeric character", which
//!    "prevents number spoofing". Anything else is no URI call ([`UriCallDecision::NotUriCall`]):
//!    a number is decided by the outbound or inbound paths, whatever the host.
//! 2. `uri_call.user`: a credential connection has that user name (compared exactly, as digest
//!    user names are).
//! 3. `uri_call.preference`: `disabled` refuses everyone; `internal` admits only a caller
//!    identified as a connection of the callee's account; `unrestricted` admits anyone.
//! 4. `uri_call.connection_active`: an inactive connection answers `404 SIP connection inactive
//!    D18`, as it does for its numbers.
//! 5. `uri_call.routes`: the contacts registered now ([`Registrations`]) in the connection's
//!    `default_routing_method`; none: `480 User not registered RG1`.
//!
//! Steps 2 and 3 refuse with `403 Invalid SIP URI D30`: the only catalog row about SIP URIs
//! ("D30-D31: Invalid SIP URI or subdomain"), and the product's own troubleshooting for failed
//! SIP URI calls starts with the preference and the user name. An unknown user, a `disabled`
//! preference and an `internal` one refusing an outsider get the same answer on purpose: a
//! scanner must not learn which user names exist (the trace tells the operator which it was).
//!
//! Billing (the product documentation's "Billing" of SIP URI calling): a call within the
//! account is on-net and not rated; an `unrestricted` call from a source no connection is
//! identified as is billed to the called connection's account at the operator's
//! unidentified-source rate. A call from another account's connection is "priced on the
//! originating connection's plan": the platform's rate decks price destination numbers, and a
//! user name is none, so no per-minute rate comes from here; the caller is named for the record.

use std::time::Duration;

use rust_decimal::Decimal;
use sip::Message;
use sip::uri::Host;

use crate::catalog::Reason;
use crate::config::{Config, ConnectionKind, ConnectionRef, Id, SipUriCalling, UriCallingSettings};
use crate::inbound::{InboundRoute, Registrations};
use crate::outbound::ChannelLimits;
use crate::routing::{self, CallForwarding, InboundEndpoints, InboundStep, InboundTargets};
use crate::trace::{Trace, Value};

/// Every check in order, with the reasons it may answer (see the module documentation).
pub const URI_CALL_CHECKS: &[(&str, &[Reason])] = &[
    ("uri_call.request_uri", &[]),
    ("uri_call.user", &[Reason::D30]),
    ("uri_call.preference", &[Reason::D30]),
    ("uri_call.connection_active", &[Reason::D18]),
    ("uri_call.routes", &[Reason::RG1]),
];

/// Everything a SIP URI calling decision reads besides the configuration.
pub struct UriCallRequest<'a> {
    /// The INVITE.
    pub message: &'a Message,
    /// The caller's connection when `identify` recognised it; `None` for a caller from outside
    /// the platform (nothing identified it).
    pub caller: Option<ConnectionRef>,
    pub registered: &'a dyn Registrations,
    /// A counter the engine advances per call, for round-robin order.
    pub rotation: u64,
}

/// Who placed a SIP URI call, as billing and the record see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UriCaller {
    /// A connection of the called connection's account: on-net, not rated.
    SameAccount { connection_id: Id },
    /// Another account's connection (only `unrestricted` admits it).
    OtherAccount { account_id: Id, connection_id: Id },
    /// A source no connection is identified as (only `unrestricted` admits it).
    Unidentified,
}

/// A SIP URI call to deliver, and everything the engine needs to place, count and bill it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriCall {
    /// The called connection's account: the account billed for [`UriCall::rate`].
    pub account_id: Id,
    pub connection_id: Id,
    /// The called user name (the Request-URI's user part, escapes decoded).
    pub user: String,
    pub preference: SipUriCalling,
    pub caller: UriCaller,
    /// USD per minute billed to `account_id`: the unidentified-source rate for a caller from
    /// outside, `None` otherwise (see the module documentation).
    pub rate: Option<Decimal>,
    /// The called connection's inbound counters and its inbound `channel_limit`, as for a call
    /// to one of its numbers ([`Config::inbound_counters`]).
    pub channels: ChannelLimits,
    /// `timeout_1xx_secs`: how long each contact may take to send a provisional response.
    pub timeout_1xx: Duration,
    /// `timeout_2xx_secs`: how long the call may ring unanswered.
    pub timeout_2xx: Duration,
    /// `simultaneous_ringing`: every contact is rung at once (first answer wins, the others
    /// get CANCEL).
    pub simultaneous_ringing: bool,
    /// [`InboundRoute::Contact`] routes only, never empty.
    pub routes: Vec<InboundRoute>,
}

/// What the SIP URI calling rules decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UriCallDecision {
    /// Not a SIP URI call (a number, another host, a `tel:` URI): the other paths decide it.
    NotUriCall,
    Route(Box<UriCall>),
    Reject(Reason),
}

/// What a Request-URI names before the caller matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callee {
    /// Not a SIP URI call.
    NotUriCall,
    /// A name at the platform's domain that no credential connection has.
    Unknown { user: String },
    /// The credential connection with that user name, and its preference.
    Connection { user: String, connection: ConnectionRef, preference: SipUriCalling },
}

/// Whom a request's Request-URI calls. The engine may ask this before identifying the caller:
/// only an `internal` callee needs the caller's connection, and an `unrestricted` one takes a
/// caller who cannot be identified (no credentials, an unknown address) as one from outside
/// rather than challenging it.
pub fn callee(config: &Config, message: &Message) -> Callee {
    let Some(user) = uri_user(config.uri_calling(), message) else { return Callee::NotUriCall };
    let conn = config.connection_of_user(&user).filter(|c| config.connection(*c).kind == ConnectionKind::Credential);
    match conn {
        Some(connection) => {
            let preference = config.connection(connection).inbound.sip_uri_calling;
            Callee::Connection { user, connection, preference }
        }
        None => Callee::Unknown { user },
    }
}

/// Decides an INVITE that may be a SIP URI call.
pub fn decide(config: &Config, req: &UriCallRequest<'_>, trace: &mut Trace) -> UriCallDecision {
    let (user, callee_ref, preference) = match callee(config, req.message) {
        Callee::NotUriCall => {
            let uri = req.message.request_uri_str().unwrap_or_default();
            trace.skip("uri_call.request_uri", [("request_uri", uri.into())]);
            return UriCallDecision::NotUriCall;
        }
        Callee::Unknown { user } => {
            trace.pass("uri_call.request_uri", [("user", user.as_str().into())]);
            trace.fail("uri_call.user", [("user", user.as_str().into()), ("connection", Value::Absent)]);
            return UriCallDecision::Reject(Reason::D30);
        }
        Callee::Connection { user, connection, preference } => (user, connection, preference),
    };
    trace.pass("uri_call.request_uri", [("user", user.as_str().into())]);
    let conn = config.connection(callee_ref);
    trace.pass("uri_call.user", [("user", user.as_str().into()), ("connection", (&conn.id).into())]);

    let caller = match req.caller.map(|c| config.connection(c)) {
        Some(c) if c.account_id == conn.account_id => UriCaller::SameAccount { connection_id: c.id.clone() },
        Some(c) => UriCaller::OtherAccount { account_id: c.account_id.clone(), connection_id: c.id.clone() },
        None => UriCaller::Unidentified,
    };
    let admitted = match preference {
        SipUriCalling::Disabled => false,
        SipUriCalling::Internal => matches!(caller, UriCaller::SameAccount { .. }),
        SipUriCalling::Unrestricted => true,
    };
    let caller_facts = [
        ("preference", Value::Static(preference.as_str())),
        (
            "caller",
            Value::Static(match caller {
                UriCaller::SameAccount { .. } => "same_account",
                UriCaller::OtherAccount { .. } => "other_account",
                UriCaller::Unidentified => "unidentified",
            }),
        ),
        ("caller_connection", req.caller.map_or(Value::Absent, |c| (&config.connection(c).id).into())),
    ];
    if !admitted {
        trace.fail("uri_call.preference", caller_facts);
        return UriCallDecision::Reject(Reason::D30);
    }
    trace.pass("uri_call.preference", caller_facts);

    if !conn.active {
        trace.fail("uri_call.connection_active", [("connection", (&conn.id).into())]);
        return UriCallDecision::Reject(Reason::D18);
    }
    trace.pass("uri_call.connection_active", [("connection", (&conn.id).into())]);

    let settings = &conn.inbound;
    // A user name has no number, so no call forwarding: the contacts alone.
    let targets = InboundTargets {
        endpoints: InboundEndpoints::Contacts(req.registered.contacts(&conn.id)),
        routing: settings.routing,
        call_forwarding: CallForwarding::default(),
    };
    let steps = routing::plan_inbound(&targets, req.rotation);
    let routes: Vec<InboundRoute> = steps
        .steps
        .iter()
        .filter_map(|s| match s {
            InboundStep::Contact(c) => Some(InboundRoute::Contact { uri: c.uri.clone() }),
            _ => None,
        })
        .collect();
    if routes.is_empty() {
        trace.fail(
            "uri_call.routes",
            [("contacts", 0u64.into()), ("routing", Value::Static(settings.routing.as_str()))],
        );
        return UriCallDecision::Reject(Reason::RG1);
    }
    steps.record(trace);
    trace.note("uri_call.routes", [("routes", (routes.len() as u64).into())]);

    let rate = match caller {
        UriCaller::Unidentified => Some(config.uri_calling().unidentified_source_rate),
        UriCaller::SameAccount { .. } | UriCaller::OtherAccount { .. } => None,
    };
    trace.note(
        "uri_call.rate",
        [("billed_account", (&conn.account_id).into()), ("per_minute", rate.map_or(Value::Absent, Value::from))],
    );

    UriCallDecision::Route(Box::new(UriCall {
        account_id: conn.account_id.clone(),
        connection_id: conn.id.clone(),
        user,
        preference,
        caller,
        rate,
        channels: config.inbound_channels(callee_ref),
        timeout_1xx: settings.timeout_1xx(),
        timeout_2xx: settings.timeout_2xx(),
        simultaneous_ringing: settings.simultaneous_ringing,
        routes,
    }))
}

/// The user name a Request-URI calls at one of the platform's hosts, or `None` when it is no
/// SIP URI call (see the module documentation, check 1).
fn uri_user(settings: &UriCallingSettings, message: &Message) -> Option<String> {
    let uri = match message.request_uri() {
        Some(Ok(uri)) => uri,
        _ => return None,
    };
    let sip = uri.as_sip()?;
    if !is_ours(settings, &sip.host) || sip.user_param().is_some_and(|u| u.eq_ignore_ascii_case("phone")) {
        return None;
    }
    let raw = sip.user?.split(';').next().unwrap_or_default();
    let user = String::from_utf8(sip::uri::unescape(raw).into_owned()).ok()?;
    // A digit or `+` first: a number, never a user name.
    match user.bytes().next() {
        None | Some(b'+' | b'0'..=b'9') => None,
        Some(_) => Some(user),
    }
}

/// Whether a Request-URI's host is the platform's SIP domain or one of its equivalent hosts:
/// names without regard to case or a final dot, addresses as addresses.
fn is_ours(settings: &UriCallingSettings, host: &Host<'_>) -> bool {
    let hosts = std::iter::once(&settings.domain).chain(&settings.equivalent_hosts);
    match host {
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            hosts.into_iter().any(|h| {
                let h = h.strip_suffix('.').unwrap_or(h);
                h.eq_ignore_ascii_case(name)
            })
        }
        Host::Ipv4(_) | Host::Ipv6(_) => {
            let ip = host.ip().map(|ip| ip.to_canonical());
            hosts.into_iter().any(|h| {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h.parse::<std::net::IpAddr>().ok().map(|a| a.to_canonical()) == ip
            })
        }
    }
}
