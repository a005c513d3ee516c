//! The inbound decision: a carrier's INVITE for one of the platform's numbers either gets the
//! ordered places to deliver it to the customer, or the product's response. The checks run in
//! this order, each with its response ([`INBOUND_CHECKS`]):
//!
//! 1. `inbound.source`: the source address is one of an enabled carrier's `inbound_ips` (an
//!    address or a CIDR block). The product documentation gives no response for origination
//!    from elsewhere; such a request is refused `403 Unknown source D27` (the D25-D29 range,
//!    "Authentication or connection validation failed"; the catalog's row for a source nothing
//!    in the configuration matches). No challenge is offered: carriers are recognised by
//!    address only.
//! 2. `inbound.number`: the called number (the Request-URI's user part, or the `tel:` number)
//!    read as E.164, with or without its `+`, else as a national number (the carriers carry no
//!    numbering country, so as the contract reads a blank localization: US rules, then GB);
//!    the first reading that is a platform number is the one. None: `404 Invalid Destination`
//!    (the catalog's 404 without a code: nothing on the platform answers that number).
//! 3. `inbound.connection`: the number points at a connection that exists; otherwise `480 No
//!    destination number D21`.
//! 4. `inbound.connection_active`: an inactive connection answers `404 SIP connection inactive
//!    D18`, as it does on outbound calls.
//! 5. `inbound.endpoints`: an IP connection's IPs, an FQDN connection's FQDNs, or the contacts
//!    registered for a credential (or UAC) connection at call time ([`Registrations`]).
//! 6. `inbound.routes`: [`routing::plan_inbound`] in the connection's `default_routing_method`,
//!    with the number's call forwarding (`always`: the forwarding number only; `on-failure`: it
//!    comes last). Nowhere to go: `480 User not registered RG1` for a connection reached
//!    through registrations, `404 No route available D40` ("destination exists but no route
//!    available") for an IP or FQDN connection without an IP or FQDN.
//!
//! The number formats of the delivered INVITE follow the connection's `ani_number_format` and
//! `dnis_number_format`; `P-Asserted-Identity` is passed on as received. Inbound calls are
//! counted apart from outbound ones ([`Config::inbound_counters`]): the connection's inbound
//! `channel_limit` bounds them, and the account's concurrent call limit, which the product
//! documentation states for outbound calls (`D1`), does not.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use sip::{HeaderName, Message};

use crate::caller_id::{self, format_ani, format_dnis};
use crate::catalog::Reason;
use crate::config::{Config, Id, InboundDelivery};
use crate::numbering::{Country, Dialed, E164, NumberInfo};
use crate::outbound::ChannelLimits;
use crate::routing::{
    self, ForwardingType, InboundEndpoints, InboundStep, InboundTargets, RegisteredContact, Transport,
};
use crate::time::Timestamp;
use crate::trace::{Trace, Value};

/// Every inbound check in order, with the reasons it may answer (the product's order, see the
/// module documentation).
pub const INBOUND_CHECKS: &[(&str, &[Reason])] = &[
    ("inbound.source", &[Reason::D27]),
    ("inbound.number", &[Reason::InvalidDestination]),
    ("inbound.connection", &[Reason::D21]),
    ("inbound.connection_active", &[Reason::D18]),
    ("inbound.endpoints", &[]),
    ("inbound.routes", &[Reason::RG1, Reason::D40]),
];

/// The contacts registered for a connection now. The engine's registrar implements it; expired
/// registrations are not contacts.
pub trait Registrations {
    /// The live contacts of connection `connection_id` (none: an empty list).
    fn contacts(&self, connection_id: &str) -> Vec<RegisteredContact>;
}

/// Nothing is registered anywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRegistrations;

impl Registrations for NoRegistrations {
    fn contacts(&self, _: &str) -> Vec<RegisteredContact> {
        Vec::new()
    }
}

impl<S> Registrations for HashMap<S, Vec<RegisteredContact>>
where
    S: std::borrow::Borrow<str> + Eq + std::hash::Hash,
{
    fn contacts(&self, connection_id: &str) -> Vec<RegisteredContact> {
        self.get(connection_id).cloned().unwrap_or_default()
    }
}

impl<S> Registrations for BTreeMap<S, Vec<RegisteredContact>>
where
    S: std::borrow::Borrow<str> + Ord,
{
    fn contacts(&self, connection_id: &str) -> Vec<RegisteredContact> {
        self.get(connection_id).cloned().unwrap_or_default()
    }
}

/// Everything an inbound decision reads besides the configuration.
pub struct InboundRequest<'a> {
    /// The carrier's INVITE.
    pub message: &'a Message,
    pub source: IpAddr,
    pub registered: &'a dyn Registrations,
    /// A counter the engine advances per call, for round-robin order.
    pub rotation: u64,
    pub now: Timestamp,
}

/// One place to deliver an inbound call, owned (the decision outlives the configuration it was
/// made from). Tried in order, failing over by [`routing::after_attempt`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum InboundRoute {
    /// An IP of an IP connection.
    Ip { host: String, port: u16, transport: Transport },
    /// An FQDN of an FQDN connection, located by the engine: by SRV when it has no port, by
    /// A/AAAA on its port otherwise.
    Fqdn { name: String, port: Option<u16>, transport: Transport },
    /// A registered contact.
    Contact { uri: String },
    /// Call forwarding: an outbound call to this +E.164 number through the outbound path (its
    /// limits and rating apply).
    Forward { number: String },
}

impl InboundRoute {
    fn of(step: &InboundStep<'_>) -> InboundRoute {
        match *step {
            InboundStep::Ip(t) => InboundRoute::Ip { host: t.address.clone(), port: t.port, transport: t.transport },
            InboundStep::Fqdn(t) => InboundRoute::Fqdn { name: t.fqdn.clone(), port: t.port, transport: t.transport },
            InboundStep::Contact(c) => InboundRoute::Contact { uri: c.uri.clone() },
            InboundStep::ForwardToPstn(n) => InboundRoute::Forward { number: n.to_owned() },
        }
    }
}

/// A call to deliver, and everything the engine needs to place, count and record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundCall {
    pub account_id: Id,
    pub connection_id: Id,
    /// The carrier the call came from.
    pub carrier_id: String,
    /// The called platform number.
    pub number: E164,
    /// The caller's number when it reads as one (E.164).
    pub caller: Option<E164>,
    /// The caller as the connection wants it (`ani_number_format`); the caller's user part as
    /// received when it is no number (`anonymous`, a name), empty when the request has none.
    pub ani: String,
    /// The Request-URI user toward the customer (`dnis_number_format`).
    pub dnis: String,
    /// Every `P-Asserted-Identity` value, as received, to pass on.
    pub p_asserted_identity: Vec<String>,
    /// The inbound counters and the connection's inbound `channel_limit`; the engine takes
    /// them atomically ([`Config::inbound_counters`]).
    pub channels: ChannelLimits,
    /// `timeout_1xx_secs`: how long each target may take to send a provisional response.
    pub timeout_1xx: Duration,
    /// `timeout_2xx_secs`: how long the call may ring unanswered.
    pub timeout_2xx: Duration,
    /// `simultaneous_ringing`: the [`InboundRoute::Contact`] routes are rung at once (first
    /// answer wins, the others get CANCEL); forwarding on failure still comes after them.
    pub simultaneous_ringing: bool,
    /// The number's active call forwarding, if any (its number is the last route).
    pub forwarding: Option<ForwardingType>,
    /// Never empty.
    pub routes: Vec<InboundRoute>,
}

/// What the inbound rules decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundDecision {
    Route(Box<InboundCall>),
    Reject(Reason),
}

/// Decides a carrier's INVITE.
pub fn decide(config: &Config, req: &InboundRequest<'_>, trace: &mut Trace) -> InboundDecision {
    match run(config, req, trace) {
        Ok(call) => InboundDecision::Route(Box::new(call)),
        Err(reason) => InboundDecision::Reject(reason),
    }
}

fn run(config: &Config, req: &InboundRequest<'_>, trace: &mut Trace) -> Result<InboundCall, Reason> {
    let plan = config.numbering();

    let Some(carrier) = config.carrier_at(req.source) else {
        trace.fail("inbound.source", [("source", req.source.into()), ("carrier", Value::Absent)]);
        return Err(Reason::D27);
    };
    trace.pass("inbound.source", [("source", req.source.into()), ("carrier", carrier.id.as_str().into())]);

    let user = called_user(req.message);
    let Some((called, number)) = called_number(config, &user) else {
        trace.fail("inbound.number", [("called", user.as_str().into()), ("known", false.into())]);
        return Err(Reason::InvalidDestination);
    };
    trace.pass("inbound.number", [("called", user.as_str().into()), ("number", called.as_str().into())]);

    let conn_ref = number.connection_id.as_deref().and_then(|c| config.connection_by_id(c));
    let Some(conn_ref) = conn_ref else {
        trace.fail(
            "inbound.connection",
            [("number", called.as_str().into()), ("connection", number.connection_id.as_deref().into())],
        );
        return Err(Reason::D21);
    };
    let conn = config.connection(conn_ref);
    trace.pass("inbound.connection", [("connection", (&conn.id).into())]);

    if !conn.active {
        trace.fail("inbound.connection_active", [("connection", (&conn.id).into())]);
        return Err(Reason::D18);
    }
    trace.pass("inbound.connection_active", [("connection", (&conn.id).into())]);

    let settings = &conn.inbound;
    let delivery =
        plan_delivery(config, conn_ref, req.registered, number.call_forwarding.clone(), req.rotation, trace)?;
    let Delivery { routes, forwarding, ringing_together } = delivery;

    // Number formats toward the customer.
    let caller_id = caller_id::caller_number(req.message);
    let caller_user = caller_id.as_ref().map_or("", |c| c.user.as_ref());
    let caller = caller_number(config, caller_user, &called);
    let ani = match &caller {
        Some(c) => format_ani(plan, c, &called, conn.ani_number_format).as_str().to_owned(),
        None => caller_user.to_owned(),
    };
    let sip_username = conn.credentials.as_ref().map(|(u, _)| u.as_ref());
    let dnis = format_dnis(plan, &called, conn.dnis_number_format, sip_username).as_str().to_owned();
    trace.note(
        "inbound.formats",
        [
            ("ani", ani.as_str().into()),
            ("ani_number_format", Value::Static(conn.ani_number_format.as_str())),
            ("dnis", dnis.as_str().into()),
            ("dnis_number_format", Value::Static(conn.dnis_number_format.as_str())),
        ],
    );

    Ok(InboundCall {
        account_id: conn.account_id.clone(),
        connection_id: conn.id.clone(),
        carrier_id: carrier.id.clone(),
        number: called,
        caller,
        ani,
        dnis,
        p_asserted_identity: req.message.header_values(HeaderName::PAssertedIdentity).map(str::to_owned).collect(),
        channels: config.inbound_channels(conn_ref),
        timeout_1xx: settings.timeout_1xx(),
        timeout_2xx: settings.timeout_2xx(),
        simultaneous_ringing: ringing_together,
        forwarding,
        routes,
    })
}

/// Where a connection takes a call: its routes in order, the forwarding type when forwarding is
/// among them, and whether its contacts ring together.
pub(crate) struct Delivery {
    pub routes: Vec<InboundRoute>,
    pub forwarding: Option<ForwardingType>,
    pub ringing_together: bool,
}

/// The endpoints of `conn_ref` (its IPs, FQDNs, or the contacts registered now) planned in its
/// routing order with `call_forwarding`; nowhere to go is `RG1` for registrations, `D40` for IPs
/// and FQDNs. Shared by calls to numbers and to SIP subdomains.
pub(crate) fn plan_delivery(
    config: &Config,
    conn_ref: crate::config::ConnectionRef,
    registered: &dyn Registrations,
    call_forwarding: routing::CallForwarding,
    rotation: u64,
    trace: &mut Trace,
) -> Result<Delivery, Reason> {
    let conn = config.connection(conn_ref);
    let settings = &conn.inbound;
    let endpoints = match &settings.delivery {
        InboundDelivery::Ips(hosts) => InboundEndpoints::Ips(hosts.clone()),
        InboundDelivery::Fqdns(hosts) => InboundEndpoints::Fqdns(hosts.clone()),
        InboundDelivery::Registrations => InboundEndpoints::Contacts(registered.contacts(&conn.id)),
    };
    let (kind, count) = match &endpoints {
        InboundEndpoints::Ips(h) => ("ips", h.listed.len()),
        InboundEndpoints::Fqdns(h) => ("fqdns", h.listed.len()),
        InboundEndpoints::Contacts(c) => ("contacts", c.len()),
    };
    trace.note("inbound.endpoints", [("kind", Value::Static(kind)), ("count", (count as u64).into())]);

    let targets = InboundTargets { endpoints, routing: settings.routing, call_forwarding };
    let steps = routing::plan_inbound(&targets, rotation);
    if steps.is_empty() {
        let reason = match settings.delivery {
            InboundDelivery::Registrations => Reason::RG1,
            InboundDelivery::Ips(_) | InboundDelivery::Fqdns(_) => Reason::D40,
        };
        // The refusal is this rule's: the plan's own record (`routing.inbound`) would fail first.
        trace.fail(
            "inbound.routes",
            [
                ("endpoints", Value::Static(kind)),
                ("routing", Value::Static(settings.routing.as_str())),
                ("forwarding", false.into()),
            ],
        );
        return Err(reason);
    }
    steps.record(trace);
    let routes: Vec<InboundRoute> = steps.steps.iter().map(InboundRoute::of).collect();
    let forwarding = targets.call_forwarding.active().map(|(t, _)| t);
    trace.note("inbound.routes", [("routes", (routes.len() as u64).into())]);

    Ok(Delivery {
        routes,
        forwarding,
        ringing_together: settings.simultaneous_ringing && matches!(targets.endpoints, InboundEndpoints::Contacts(_)),
    })
}

/// An on-net call: a customer's call to one of the platform's own numbers, delivered straight
/// to the number's connection instead of out to carriers and back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnNetCall {
    pub account_id: Id,
    pub connection_id: Id,
    /// The called number toward the connection (its `dnis_number_format`).
    pub dnis: String,
    /// The called connection's inbound counters and `channel_limit`.
    pub channels: ChannelLimits,
    pub timeout_1xx: Duration,
    pub timeout_2xx: Duration,
    pub simultaneous_ringing: bool,
    pub routes: Vec<InboundRoute>,
}

/// Whether `e164` (a decided outbound destination) is one of the platform's numbers, and if so
/// how it is delivered on-net (`None`: off-net, carriers carry it). A number without a connection
/// is `D21`; an inactive connection `D18`; nowhere to go `RG1`/`D40`, as from a carrier.
pub fn on_net(
    config: &Config,
    e164: &str,
    registered: &dyn Registrations,
    rotation: u64,
    trace: &mut Trace,
) -> Option<Result<OnNetCall, Reason>> {
    let number = config.number(e164)?;
    Some(on_net_delivery(config, e164, number, registered, rotation, trace))
}

fn on_net_delivery(
    config: &Config,
    e164: &str,
    number: &crate::config::PhoneNumber,
    registered: &dyn Registrations,
    rotation: u64,
    trace: &mut Trace,
) -> Result<OnNetCall, Reason> {
    let Some(conn_ref) = number.connection_id.as_deref().and_then(|c| config.connection_by_id(c)) else {
        trace.fail("on_net.connection", [("number", e164.into()), ("connection", Value::Absent)]);
        return Err(Reason::D21);
    };
    let conn = config.connection(conn_ref);
    if !conn.active {
        trace.fail("on_net.connection_active", [("connection", (&conn.id).into())]);
        return Err(Reason::D18);
    }
    trace.pass("on_net.connection", [("number", e164.into()), ("connection", (&conn.id).into())]);
    let delivery = plan_delivery(config, conn_ref, registered, number.call_forwarding.clone(), rotation, trace)?;
    let sip_username = conn.credentials.as_ref().map(|(u, _)| u.as_ref());
    let dnis = match config.numbering().e164(e164) {
        Some(called) => {
            format_dnis(config.numbering(), &called.e164, conn.dnis_number_format, sip_username).as_str().to_owned()
        }
        None => e164.trim_start_matches('+').to_owned(),
    };
    let settings = &conn.inbound;
    Ok(OnNetCall {
        account_id: conn.account_id.clone(),
        connection_id: conn.id.clone(),
        dnis,
        channels: config.inbound_channels(conn_ref),
        timeout_1xx: settings.timeout_1xx(),
        timeout_2xx: settings.timeout_2xx(),
        simultaneous_ringing: delivery.ringing_together,
        routes: delivery.routes,
    })
}

/// The Request-URI's user part (up to its first `;`, `%` escapes decoded), or the `tel:` number.
fn called_user(msg: &Message) -> String {
    let user = match msg.request_uri() {
        Some(Ok(uri)) => uri.user().unwrap_or_default().split(';').next().unwrap_or_default(),
        _ => "",
    };
    String::from_utf8_lossy(&sip::uri::unescape(user)).into_owned()
}

/// The readings of a called user part, most likely first: E.164 (`+` given or not), then a
/// national number by US, then GB rules.
fn readings(config: &Config, user: &str) -> [Option<NumberInfo>; 2] {
    let plan = config.numbering();
    let e164 = if user.starts_with('+') { plan.e164(user) } else { plan.e164(&format!("+{user}")) };
    let national = match (user.starts_with('+'), plan.dial(user, None)) {
        (false, Dialed::Number(p)) => Some(p.number),
        _ => None,
    };
    [e164, national]
}

/// The platform number a called user part names: the first reading that is one.
fn called_number<'c>(config: &'c Config, user: &str) -> Option<(E164, &'c crate::config::PhoneNumber)> {
    readings(config, user).into_iter().flatten().find_map(|n| config.number(n.e164.as_str()).map(|p| (n.e164, p)))
}

/// The caller's number, read in the called number's country (national, international prefix,
/// E.164 with or without `+`).
fn caller_number(config: &Config, user: &str, called: &E164) -> Option<E164> {
    if user.is_empty() {
        return None;
    }
    let plan = config.numbering();
    let country = plan.country_of(called).unwrap_or(Country::US);
    plan.parse(user, country)
        .ok()
        .map(|p| p.number.e164)
        .or_else(|| (!user.starts_with('+')).then(|| plan.e164(&format!("+{user}"))).flatten().map(|n| n.e164))
}
