//! Which connection a request belongs to, and whether it proved it (product documentation,
//! "Authentication"): digest credentials, IP + `X-Telnyx-Token`, IP + tech prefix, IP +
//! `P-Charge-Info`, or the source address alone (an IP connection alone on its address, an FQDN
//! connection by its resolved addresses).
//!
//! The order, one rule each:
//! 1. Credentials offered (`Proxy-Authorization`), or a user name that names a credential
//!    connection (`X-Telnyx-Username`, or the Contact user part): the digest path, even when the
//!    source address also matches an IP connection, so a shared cloud address is never billed
//!    to the wrong customer. No credentials yet: `407` with a challenge.
//! 2. `X-Telnyx-Token`: [`IP_TOKEN_BEHAVIOUR`].
//! 3. The connections at the source address (those that want a token aside), told apart by tech
//!    prefix, then `P-Charge-Info`, then by being the only one; several left: `D28` when a
//!    `P-Charge-Info` number was of none of them, [`TECH_PREFIX_BEHAVIOUR`] when one of them has
//!    a tech prefix, otherwise rejected as ambiguous (`D29`), never guessed. A connection alone
//!    on its address is identified by it even when its `P-Charge-Info` names another number.
//! 4. No connection at the address: `407` (the caller may be a credential connection).

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Serialize;
use sip::Message;
use sip::headers::{Auth, HeaderName, NameAddr};

use crate::catalog::Reason;
use crate::config::{Config, ConnectionRef, IpAuthentication};
use crate::digest::{self, DigestRealm, DigestVerdict, ReplayGuard};
use crate::time::Timestamp;
use crate::trace::{Trace, Value};

/// The facts of one request that identification reads, borrowed from the message.
#[derive(Clone, Debug)]
pub struct CallFacts<'a> {
    pub source: IpAddr,
    pub method: &'a str,
    /// The Request-URI's user part (up to its first `;`), or the `tel:` number: the dial string.
    pub dial_string: &'a str,
    pub x_username: Option<&'a str>,
    pub x_token: Option<&'a str>,
    pub contact_user: Option<&'a str>,
    /// The user part of `P-Charge-Info`'s URI.
    pub charge_info: Option<&'a str>,
    /// The first `Digest` `Proxy-Authorization`.
    pub credentials: Option<Auth<'a>>,
    /// `Privacy: id` was asked.
    pub privacy_id: bool,
}

fn user_part(user: &str) -> &str {
    user.split(';').next().unwrap_or_default()
}

impl<'a> CallFacts<'a> {
    /// Reads the facts of a request. A malformed optional header counts as absent (the message
    /// core already rejected requests whose mandatory headers are malformed).
    pub fn of(msg: &'a Message, source: IpAddr) -> CallFacts<'a> {
        let dial_string = match msg.request_uri() {
            Some(Ok(uri)) => uri.user().map(user_part).unwrap_or_default(),
            _ => "",
        };
        let mut facts = CallFacts {
            source,
            method: msg.method().map(|m| m.as_str()).unwrap_or_default(),
            dial_string,
            x_username: None,
            x_token: None,
            contact_user: None,
            charge_info: None,
            credentials: None,
            privacy_id: false,
        };
        // One pass over the header fields; the first of each counts.
        let value = |v: &'a str| Some(v.trim()).filter(|v| !v.is_empty());
        for (name, v) in msg.headers() {
            match sip::HeaderName::from_bytes(name.as_bytes()) {
                HeaderName::Other if facts.x_username.is_none() && name.eq_ignore_ascii_case("X-Telnyx-Username") => {
                    facts.x_username = value(v)
                }
                HeaderName::Other if facts.x_token.is_none() && name.eq_ignore_ascii_case("X-Telnyx-Token") => {
                    facts.x_token = value(v)
                }
                HeaderName::Contact if facts.contact_user.is_none() => {
                    let first = sip::scan::split_list(v).next().unwrap_or_default();
                    facts.contact_user = NameAddr::parse(first).ok().and_then(|n| n.user()).map(user_part);
                }
                HeaderName::PChargeInfo if facts.charge_info.is_none() => {
                    facts.charge_info = NameAddr::parse(v).ok().and_then(|n| n.user()).map(user_part);
                }
                HeaderName::ProxyAuthorization if facts.credentials.is_none() => {
                    facts.credentials = Auth::parse(v).ok().filter(|a| a.scheme.eq_ignore_ascii_case("Digest"));
                }
                HeaderName::Privacy => {
                    facts.privacy_id |= crate::caller_id::asks_privacy_id(v);
                }
                _ => {}
            }
        }
        facts
    }
}

/// How a connection was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Digest,
    IpToken,
    TechPrefix,
    ChargeInfo,
    /// The source address alone.
    Address,
}

/// A recognised connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identified {
    pub connection: ConnectionRef,
    pub method: AuthMethod,
    /// Bytes of the dial string that were the tech prefix (0 or 4): the destination starts after.
    pub prefix_len: usize,
}

/// What identification decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identification {
    Identified(Identified),
    /// Answer `407 Proxy Authentication Required` with [`DigestRealm::challenges`]
    /// (`stale=true` when a correct response used an expired nonce).
    Challenge {
        stale: bool,
    },
    Rejected(Reason),
}

/// Whether the source address matched the token's connection, and whether the token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMatch {
    Matches,
    MissingOrWrong,
}

/// The product documentation's "IP Authentication Token" behaviour table: (source IP matches
/// a connection, token, result) where `None` is "Authenticated".
pub const IP_TOKEN_BEHAVIOUR: &[(bool, TokenMatch, Option<Reason>)] = &[
    (true, TokenMatch::Matches, None),
    (true, TokenMatch::MissingOrWrong, Some(Reason::D26)),
    (false, TokenMatch::Matches, Some(Reason::D26)),
];

/// Whether the dial string starts with a connection's tech prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixMatch {
    Correct,
    MissingOrIncorrect,
}

/// The product documentation's "Tech Prefix" behaviour table: `None` is "Call authenticated";
/// a missing or incorrect prefix is answered `407 Proxy Authentication Required`.
pub const TECH_PREFIX_BEHAVIOUR: &[(PrefixMatch, Option<Reason>)] =
    &[(PrefixMatch::Correct, None), (PrefixMatch::MissingOrIncorrect, Some(Reason::ProxyAuthenticationRequired))];

fn token_rule(ip_matches: bool, token: TokenMatch) -> Option<Reason> {
    IP_TOKEN_BEHAVIOUR.iter().find(|(ip, t, _)| *ip == ip_matches && *t == token).map_or(Some(Reason::D26), |r| r.2)
}

fn prefix_rule(m: PrefixMatch) -> Option<Reason> {
    TECH_PREFIX_BEHAVIOUR.iter().find(|(p, _)| *p == m).and_then(|r| r.1)
}

/// Identifies and authenticates the connection of a request.
pub fn identify(
    config: &Config,
    facts: &CallFacts<'_>,
    realm: &DigestRealm,
    replay: &mut ReplayGuard,
    now: Timestamp,
    trace: &mut Trace,
) -> Identification {
    let named_user = [facts.x_username, facts.contact_user]
        .into_iter()
        .flatten()
        .find_map(|u| config.connection_of_user(u).map(|c| (u, c)));
    if facts.credentials.is_some() || named_user.is_some() || facts.x_username.is_some() {
        return by_digest(config, facts, named_user.map(|n| n.0), realm, replay, now, trace);
    }
    if let Some(token) = facts.x_token {
        return by_token(config, facts, token, trace);
    }
    by_address(config, facts, trace)
}

fn by_digest(
    config: &Config,
    facts: &CallFacts<'_>,
    named_user: Option<&str>,
    realm: &DigestRealm,
    replay: &mut ReplayGuard,
    now: Timestamp,
    trace: &mut Trace,
) -> Identification {
    const RULE: &str = "identify.digest";
    let Some(credentials) = &facts.credentials else {
        trace.fail(RULE, [("credentials", Value::Absent), ("user", facts.x_username.or(named_user).into())]);
        return Identification::Challenge { stale: false };
    };
    let user: Cow<'_, str> = digest::username(credentials).unwrap_or_default();
    if user.is_empty() {
        trace.fail(RULE, [("user", Value::Static("")), ("fault", Value::Static("empty user name"))]);
        return Identification::Rejected(Reason::R14);
    }
    if let Some(x) = facts.x_username.filter(|x| *x != user) {
        trace.fail(RULE, [("user", user.as_ref().into()), ("x_telnyx_username", x.into())]);
        return Identification::Rejected(Reason::R18);
    }
    let Some(conn) = config.connection_of_user(&user) else {
        // Told apart from a wrong password only in the trace: the caller learns nothing.
        trace.fail(RULE, [("user", user.as_ref().into()), ("fault", Value::Static("unknown user"))]);
        return Identification::Rejected(Reason::D25);
    };
    let Some((_, stored)) = &config.connection(conn).credentials else {
        return Identification::Rejected(Reason::D25);
    };
    let id = config.connection(conn).id.clone();
    match realm.verify(credentials, facts.method, stored, now, replay) {
        DigestVerdict::Valid => {
            trace.pass(RULE, [("user", user.as_ref().into()), ("connection", (&id).into())]);
            Identification::Identified(Identified { connection: conn, method: AuthMethod::Digest, prefix_len: 0 })
        }
        DigestVerdict::Stale => {
            trace.fail(RULE, [("user", user.as_ref().into()), ("fault", Value::Static("stale nonce"))]);
            Identification::Challenge { stale: true }
        }
        DigestVerdict::Invalid(fault) => {
            trace.fail(RULE, [("user", user.as_ref().into()), ("fault", format!("{fault:?}").into())]);
            Identification::Rejected(Reason::D25)
        }
    }
}

fn by_token(config: &Config, facts: &CallFacts<'_>, token: &str, trace: &mut Trace) -> Identification {
    const RULE: &str = "identify.ip_token";
    let owner = config.connection_of_token(token);
    let ip_matches = owner.is_some_and(|c| config.connection(c).addresses.contains(&facts.source));
    let any_at_address = config.connections_at(facts.source).next().is_some();
    let (ip, tok) = match (owner, ip_matches) {
        (Some(_), true) => (true, TokenMatch::Matches),
        (Some(_), false) => (false, TokenMatch::Matches),
        (None, _) => (any_at_address, TokenMatch::MissingOrWrong),
    };
    let facts_of = |c: Option<ConnectionRef>| {
        [
            ("source", facts.source.into()),
            ("ip_matches", ip.into()),
            ("token_matches", (tok == TokenMatch::Matches).into()),
            ("connection", c.map(|c| config.connection(c).id.clone()).map_or(Value::Absent, Value::Shared)),
        ]
    };
    match (token_rule(ip, tok), owner) {
        (None, Some(c)) => {
            trace.pass(RULE, facts_of(Some(c)));
            Identification::Identified(Identified { connection: c, method: AuthMethod::IpToken, prefix_len: 0 })
        }
        (reason, _) => {
            trace.fail(RULE, facts_of(None));
            Identification::Rejected(reason.unwrap_or(Reason::D26))
        }
    }
}

fn by_address(config: &Config, facts: &CallFacts<'_>, trace: &mut Trace) -> Identification {
    let at: Vec<ConnectionRef> = config.connections_at(facts.source).collect();
    let source = || ("source", Value::from(facts.source));
    if at.is_empty() {
        trace.fail("identify.source", [source(), ("connections", 0u64.into())]);
        return Identification::Challenge { stale: false };
    }
    trace.note("identify.source", [source(), ("connections", (at.len() as u64).into())]);
    let id = |c: ConnectionRef| Value::from(&config.connection(c).id);
    // Connections that want their token are singled out by nothing else.
    let open: Vec<ConnectionRef> =
        at.iter().copied().filter(|c| config.connection(*c).ip_authentication != IpAuthentication::Token).collect();

    // Tech prefix: the dial string starts with one of theirs.
    if let Some(head) = facts.dial_string.as_bytes().get(..4)
        && let Some(c) =
            open.iter().copied().find(|c| config.connection(*c).tech_prefix.as_ref().map(|p| &p[..]) == Some(head))
        && prefix_rule(PrefixMatch::Correct).is_none()
    {
        trace.pass("identify.tech_prefix", [("prefix", facts.dial_string[..4].into()), ("connection", id(c))]);
        return Identification::Identified(Identified { connection: c, method: AuthMethod::TechPrefix, prefix_len: 4 });
    }

    // P-Charge-Info: a number assigned to one of them. A number of none of them is only a
    // refusal where it was needed to tell connections apart (below).
    let mut charge_info_unmatched = false;
    if let Some(pci) = facts.charge_info {
        // P-Charge-Info requires E.164, read by the numbering plan as every number is.
        let owner = config
            .numbering()
            .e164(pci)
            .and_then(|n| config.number(n.e164.as_str()))
            .and_then(|n| n.connection_id.clone());
        match owner.and_then(|o| open.iter().copied().find(|c| config.connection(*c).id == o)) {
            Some(c) => {
                trace.pass("identify.p_charge_info", [("number", pci.into()), ("connection", id(c))]);
                return Identification::Identified(Identified {
                    connection: c,
                    method: AuthMethod::ChargeInfo,
                    prefix_len: 0,
                });
            }
            None => {
                trace.note("identify.p_charge_info", [("number", pci.into()), ("connection", Value::Absent)]);
                charge_info_unmatched = true;
            }
        }
    }

    // The address alone: only connections that need nothing more can be meant.
    match open.as_slice() {
        [c] => {
            trace.pass("identify.address", [source(), ("connection", id(*c))]);
            Identification::Identified(Identified { connection: *c, method: AuthMethod::Address, prefix_len: 0 })
        }
        [] => {
            // Every connection here wants its token, and none was sent.
            trace.fail("identify.ip_token", [source(), ("token", Value::Absent)]);
            Identification::Rejected(token_rule(true, TokenMatch::MissingOrWrong).unwrap_or(Reason::D26))
        }
        several if charge_info_unmatched => {
            let pci = facts.charge_info.unwrap_or_default();
            trace.fail(
                "identify.p_charge_info",
                [("number", pci.into()), ("connections", (several.len() as u64).into())],
            );
            Identification::Rejected(Reason::D28)
        }
        several if several.iter().any(|c| config.connection(*c).tech_prefix.is_some()) => {
            trace.fail(
                "identify.tech_prefix",
                [("dial_string", facts.dial_string.into()), ("connections", (several.len() as u64).into())],
            );
            match prefix_rule(PrefixMatch::MissingOrIncorrect) {
                Some(Reason::ProxyAuthenticationRequired) | None => Identification::Challenge { stale: false },
                Some(r) => Identification::Rejected(r),
            }
        }
        several => {
            trace.fail("identify.address", [source(), ("ambiguous", (several.len() as u64).into())]);
            Identification::Rejected(Reason::D29)
        }
    }
}
