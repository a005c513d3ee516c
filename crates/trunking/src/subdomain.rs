//! Calls to a connection's SIP subdomain: `sip:<anything>@<subdomain>.<the platform's domain>`
//! reaches the IP or FQDN connection whose `inbound.sip_subdomain` it names, "in the same way a
//! phone number is used" (the contract), from the same account's connections only
//! (`sip_subdomain_receive_settings` `only_my_connections`, the default) or from anyone
//! (`from_anyone`). The checks, in order, each in the trace:
//!
//! 1. `subdomain.host`: the Request-URI's host is one label under the platform's SIP domain
//!    (otherwise it is no subdomain call and the other paths decide it); a subdomain no
//!    connection has is `403 Invalid subdomain D31`;
//! 2. `subdomain.transport`: not over TLS (the contract: "TLS encrypted calls are not allowed for
//!    subdomain calls"), else `D31` too;
//! 3. `subdomain.caller`: `only_my_connections` admits the same account's connections only
//!    (`D31` for the rest: the subdomain's owner is not told apart from a missing one);
//! 4. `subdomain.connection_active` (`D18`), then the connection's endpoints and plan as for its
//!    numbers (`RG1`/`D40` when there is nowhere to go). The user part is delivered as written.

use std::time::Duration;

use sip::{Host, Message};

use crate::catalog::Reason;
use crate::config::{Config, ConnectionRef, Id};
use crate::inbound::{InboundRoute, Registrations, plan_delivery};
use crate::outbound::ChannelLimits;
use crate::routing::CallForwarding;
use crate::trace::{Trace, Value};

/// Everything a subdomain decision reads besides the configuration.
pub struct SubdomainRequest<'a> {
    pub message: &'a Message,
    /// The caller's connection when `identify` recognised it.
    pub caller: Option<ConnectionRef>,
    /// The request came over TLS.
    pub over_tls: bool,
    pub registered: &'a dyn Registrations,
    pub rotation: u64,
}

/// A subdomain call to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubdomainCall {
    pub account_id: Id,
    pub connection_id: Id,
    /// The Request-URI's user part, delivered as written.
    pub user: String,
    pub channels: ChannelLimits,
    pub timeout_1xx: Duration,
    pub timeout_2xx: Duration,
    pub simultaneous_ringing: bool,
    pub routes: Vec<InboundRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubdomainDecision {
    /// The host is no subdomain of ours: the other paths decide.
    NotSubdomain,
    Route(Box<SubdomainCall>),
    Reject(Reason),
}

/// The subdomain label a Request-URI names, if its host is `<label>.<the platform's domain>`.
pub fn subdomain_of(config: &Config, message: &Message) -> Option<String> {
    let Some(Ok(uri)) = message.request_uri() else { return None };
    let sip = uri.as_sip()?;
    let Host::Domain(name) = sip.host else { return None };
    let name = name.strip_suffix('.').unwrap_or(name);
    let domain = config.uri_calling().domain.as_ref();
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let cut = name.len().checked_sub(domain.len() + 1)?;
    let (label, rest) = name.split_at(cut);
    if !rest.starts_with('.') || !rest[1..].eq_ignore_ascii_case(domain) || label.is_empty() || label.contains('.') {
        return None;
    }
    Some(label.to_owned())
}

/// Decides an INVITE that may be a call to a SIP subdomain.
pub fn decide(config: &Config, req: &SubdomainRequest<'_>, trace: &mut Trace) -> SubdomainDecision {
    let Some(label) = subdomain_of(config, req.message) else { return SubdomainDecision::NotSubdomain };
    match run(config, req, &label, trace) {
        Ok(call) => SubdomainDecision::Route(Box::new(call)),
        Err(reason) => SubdomainDecision::Reject(reason),
    }
}

fn run(config: &Config, req: &SubdomainRequest<'_>, label: &str, trace: &mut Trace) -> Result<SubdomainCall, Reason> {
    let Some(conn_ref) = config.connection_of_subdomain(label) else {
        trace.fail("subdomain.host", [("subdomain", label.into()), ("connection", Value::Absent)]);
        return Err(Reason::D31);
    };
    let conn = config.connection(conn_ref);
    trace.pass("subdomain.host", [("subdomain", label.into()), ("connection", (&conn.id).into())]);
    if req.over_tls {
        trace.fail("subdomain.transport", [("tls", true.into())]);
        return Err(Reason::D31);
    }
    let caller_account = req.caller.map(|c| &config.connection(c).account_id);
    let same_account = caller_account.is_some_and(|a| *a == conn.account_id);
    if !conn.inbound.subdomain_from_anyone && !same_account {
        trace.fail("subdomain.caller", [("from_anyone", false.into()), ("same_account", false.into())]);
        return Err(Reason::D31);
    }
    trace.pass(
        "subdomain.caller",
        [("from_anyone", conn.inbound.subdomain_from_anyone.into()), ("same_account", same_account.into())],
    );
    if !conn.active {
        trace.fail("subdomain.connection_active", [("connection", (&conn.id).into())]);
        return Err(Reason::D18);
    }
    let delivery = plan_delivery(config, conn_ref, req.registered, CallForwarding::default(), req.rotation, trace)?;
    let user = match req.message.request_uri() {
        Some(Ok(uri)) => uri.user().unwrap_or_default().split(';').next().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    let settings = &conn.inbound;
    Ok(SubdomainCall {
        account_id: conn.account_id.clone(),
        connection_id: conn.id.clone(),
        user,
        channels: config.inbound_channels(conn_ref),
        timeout_1xx: settings.timeout_1xx(),
        timeout_2xx: settings.timeout_2xx(),
        simultaneous_ringing: delivery.ringing_together,
        routes: delivery.routes,
    })
}
