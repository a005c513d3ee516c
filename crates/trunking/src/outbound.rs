//! The outbound decision: an identified customer call either gets a route plan and the limits
//! its channels are taken under, or the product's response. The checks run in the product's
//! order, each with its exact response ([`OUTBOUND_CHECKS`]):
//!
//! connection inactive (`404 D18`); account disabled (`D10`); no outbound voice profile
//! (`D38`) or a disabled one (`D11`); destination not a number (`404 Invalid Destination`);
//! caller ID per the Caller ID Policy (`D35`, another account's number `D36`, a spoofed caller
//! ID toward an international destination `503`); destination not whitelisted or a forbidden
//! prefix (`D41`); no rate (`TM1`); rate above `max_destination_rate` (`D24`); daily spend limit
//! reached (`D19`, resets 00:00:00 UTC); concurrent calls of the account (`D1`), profile (`D2`),
//! connection (`D3`); the calling window (`D17`) and its `calls_per_cld` (`D22`); no carrier
//! for the destination (`PE1`).
//!
//! Emergency calls (911, 933 and the national equivalents) are never blocked by a profile,
//! caller-ID format, destination, rate, spend, window or channel rule: they are still counted
//! (a channel is a channel) but every limit is lifted, and they are routed even without a rate.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use sip::Message;

use crate::caller_id::{self, CallerIdSettings, CallerIdVerdict};
use crate::catalog::Reason;
use crate::config::{AniOverrideType, CallingWindow, Config, Id};
use crate::identify::{CallFacts, Identified};
use crate::numbering::{Destination, Dialed, E164};
use crate::rating::{self, BillingIncrement, Rate};
use crate::routing::{self, RoutePlan};
use crate::time::Timestamp;
use crate::trace::{Trace, Value};

/// The checks in the order they run, and the response each gives: the product's table.
pub const OUTBOUND_CHECKS: &[(&str, &[Reason])] = &[
    ("outbound.connection_active", &[Reason::D18]),
    ("outbound.account_enabled", &[Reason::D10]),
    ("outbound.profile", &[Reason::D38, Reason::D11]),
    ("outbound.destination", &[Reason::InvalidDestination, Reason::D59]),
    ("outbound.caller_id", &[Reason::D35, Reason::D36, Reason::SpoofedInternational]),
    ("outbound.destination_allowed", &[Reason::D41]),
    ("outbound.rate", &[Reason::TM1]),
    ("outbound.max_destination_rate", &[Reason::D24]),
    ("outbound.daily_spend", &[Reason::D19]),
    ("outbound.account_channels", &[Reason::D1]),
    ("outbound.profile_channels", &[Reason::D2]),
    ("outbound.connection_channels", &[Reason::D3]),
    ("outbound.calling_window", &[Reason::D17, Reason::D22]),
    ("outbound.routes", &[Reason::PE1]),
];

/// Counters' current values, as the engine's `Counters` see them at decision time. Reads only:
/// the engine takes the channels atomically afterwards, under [`ChannelLimits`].
pub trait Usage {
    /// Live calls of an account, an outbound voice profile or a connection.
    fn channels(&self, scope: Scope, id: &str) -> u32;
    /// A profile's spend on the UTC day `utc_day` ([`Timestamp::utc_day`]).
    fn spend_today(&self, profile_id: &str, utc_day: u64) -> Decimal;
    /// Calls the profile placed to `destination` (E.164) since `since` (the calling window's
    /// start today).
    fn calls_to(&self, profile_id: &str, destination: &str, since: Timestamp) -> u32;
}

/// What a channel counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Account,
    Profile,
    Connection,
}

/// The limits the engine must take a call's channels under, atomically, all or none; `None` is
/// no limit. A failed take maps back to its reason with [`Scope::limit_reason`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelLimits {
    pub account: (Id, Option<u32>),
    pub profile: Option<(Id, Option<u32>)>,
    pub connection: (Id, Option<u32>),
}

impl Scope {
    /// The response when this scope's channel limit is reached.
    pub fn limit_reason(self) -> Reason {
        match self {
            Scope::Account => Reason::D1,
            Scope::Profile => Reason::D2,
            Scope::Connection => Reason::D3,
        }
    }
}

/// The caller number to present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    /// Normalised to E.164 (or the connection's override).
    Number(E164),
    /// An emergency call whose caller number was unusable: passed on as sent.
    AsSent(String),
}

/// A call allowed out, and everything the engine needs to place, count and bill it. It borrows
/// the configuration (the route plan names its carriers and gateways).
#[derive(Clone, Debug)]
pub struct OutboundCall<'c> {
    pub account_id: Id,
    pub connection_id: Id,
    pub profile_id: Option<Id>,
    /// Where the call goes: number, country, kind, and whether it is an emergency call.
    pub destination: Destination,
    pub caller: Caller,
    /// `Privacy: id` asked and allowed: present the caller as anonymous.
    pub anonymous: bool,
    /// The matched rate and the deck's billing increment (absent only for an unrated emergency
    /// call).
    pub rate: Option<(Rate, BillingIncrement)>,
    pub channels: ChannelLimits,
    pub routes: RoutePlan<'c>,
}

impl OutboundCall<'_> {
    pub fn is_emergency(&self) -> bool {
        self.destination.is_emergency()
    }

    /// The digits sent toward carriers (E.164 without `+`, or the emergency number as dialed).
    pub fn dial_digits(&self) -> &str {
        &self.routes.number
    }
}

/// What the outbound rules decided.
#[derive(Clone, Debug)]
pub enum OutboundDecision<'c> {
    Route(Box<OutboundCall<'c>>),
    Reject(Reason),
}

/// Everything an outbound decision reads besides the configuration.
pub struct OutboundRequest<'a> {
    pub message: &'a Message,
    pub facts: &'a CallFacts<'a>,
    pub identified: Identified,
    pub usage: &'a dyn Usage,
    /// A counter the engine advances per call, for round-robin gateway order.
    pub rotation: u64,
    pub now: Timestamp,
}

/// The counters an outbound decision of this call will read that a shared counters backend
/// should fetch first (it answers [`Usage`] from a view that may lag): the profile's spend on
/// the UTC day when it has a daily spend limit, and its calls to the destination when its
/// calling window counts `calls_per_cld`. Limits the decision would not read (an emergency
/// call's, a missing or disabled profile's) need nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReads {
    pub profile_id: Id,
    /// [`Timestamp::utc_day`] of the decision; `Some`: the spend is read.
    pub spend_day: Option<u64>,
    /// The destination whose calls are counted, when they are.
    pub calls_to: Option<E164>,
}

/// What [`decide`] will read from [`Usage`] for this call, besides channels (the take, not the
/// read, enforces those), or `None` when nothing.
pub fn usage_reads(
    config: &Config,
    facts: &CallFacts<'_>,
    identified: Identified,
    now: Timestamp,
) -> Option<UsageReads> {
    let conn = config.connection(identified.connection);
    let profile = conn.outbound_voice_profile_id.as_deref().and_then(|p| config.profile(p)).filter(|p| p.enabled)?;
    let spend_day = profile.daily_spend_limit.map(|_| now.utc_day());
    let counts_calls = profile.calling_window.is_some_and(|w| w.calls_per_cld.is_some());
    if spend_day.is_none() && !counts_calls {
        return None;
    }
    let dial = facts.dial_string.get(identified.prefix_len..).unwrap_or_default();
    let dialed = config.numbering().dial(dial, conn.localization);
    if matches!(dialed, Dialed::Emergency(_)) {
        return None;
    }
    let calls_to = if counts_calls { dialed.destination().and_then(|d| d.e164) } else { None };
    Some(UsageReads { profile_id: profile.id.clone(), spend_day, calls_to })
}

/// Decides an identified customer call.
pub fn decide<'c>(config: &'c Config, req: &OutboundRequest<'_>, trace: &mut Trace) -> OutboundDecision<'c> {
    match run(config, req, trace) {
        Ok(call) => OutboundDecision::Route(Box::new(call)),
        Err(reason) => OutboundDecision::Reject(reason),
    }
}

fn run<'c>(config: &'c Config, req: &OutboundRequest<'_>, trace: &mut Trace) -> Result<OutboundCall<'c>, Reason> {
    let conn = config.connection(req.identified.connection);
    let conn_id = || Value::from(&conn.id);
    let dial = req.facts.dial_string.get(req.identified.prefix_len..).unwrap_or_default();
    let plan = config.numbering();
    let dialed = plan.dial(dial, conn.localization);
    let emergency = matches!(dialed, Dialed::Emergency(_));

    if !conn.active {
        trace.fail("outbound.connection_active", [("connection", conn_id())]);
        return Err(Reason::D18);
    }
    trace.pass("outbound.connection_active", [("connection", conn_id())]);
    let account = config.account(&conn.account_id);
    if !account.is_some_and(|a| a.enabled) {
        if emergency {
            trace.skip("outbound.account_enabled", [("emergency", true.into())]);
        } else {
            trace.fail("outbound.account_enabled", [("account", (&conn.account_id).into())]);
            return Err(Reason::D10);
        }
    }

    let profile = conn.outbound_voice_profile_id.as_deref().and_then(|p| config.profile(p));
    match profile {
        Some(p) if p.enabled => trace.pass("outbound.profile", [("profile", (&p.id).into())]),
        _ if emergency => trace.skip("outbound.profile", [("emergency", true.into())]),
        None => {
            trace.fail("outbound.profile", [("connection", conn_id()), ("profile", Value::Absent)]);
            return Err(Reason::D38);
        }
        Some(p) => {
            trace.fail("outbound.profile", [("profile", (&p.id).into()), ("enabled", false.into())]);
            return Err(Reason::D11);
        }
    }

    // The destination as a number (an emergency number is one by itself).
    let destination = match (dialed, dialed.destination()) {
        (Dialed::ShortCode { .. }, _) => {
            trace.fail("outbound.destination", [("dial_string", dial.into()), ("kind", Value::Static("short_code"))]);
            return Err(Reason::D59);
        }
        (_, Some(d)) => d,
        (d, None) => {
            let why = match d {
                Dialed::Invalid(e) => e.as_str(),
                _ => "not a number",
            };
            trace.fail("outbound.destination", [("dial_string", dial.into()), ("fault", Value::Static(why))]);
            return Err(Reason::InvalidDestination);
        }
    };
    // What carriers are sent and rates are looked up by: E.164 digits, or the emergency digits.
    let digits: &str = match &destination.e164 {
        Some(n) => n.digits(),
        None => dial,
    };
    trace.note(
        "outbound.destination",
        [
            ("number", destination.e164.as_ref().map_or(dial, |n| n.as_str()).into()),
            ("country", destination.country.map_or(Value::Absent, |c| c.as_str().into())),
            ("kind", Value::Static(destination.kind.as_str())),
            ("emergency", emergency.into()),
        ],
    );

    // Caller ID.
    let ani_override = conn.ani_override.filter(|_| match conn.ani_override_type {
        AniOverrideType::Always => true,
        AniOverrideType::Normal => !emergency,
        AniOverrideType::Emergency => emergency,
    });
    let settings = CallerIdSettings { localization: conn.localization, ani_override };
    let identity = caller_id::caller_number(req.message);
    let verdict = caller_id::check(
        identity.as_ref(),
        req.facts.privacy_id,
        &destination,
        &settings,
        config,
        &conn.account_id,
        plan,
        trace,
    );
    let (caller, anonymous) = match verdict {
        CallerIdVerdict::Accepted { e164, anonymous } => (Caller::Number(e164), anonymous),
        CallerIdVerdict::EmergencyAsSent => {
            (Caller::AsSent(identity.map(|i| i.user.into_owned()).unwrap_or_default()), false)
        }
        CallerIdVerdict::InvalidFormat => return Err(Reason::D35),
        CallerIdVerdict::AnotherAccountsNumber => return Err(Reason::D36),
        CallerIdVerdict::SpoofedInternational => return Err(Reason::SpoofedInternational),
    };

    if emergency {
        trace.skip("outbound.destination_allowed", [("emergency", true.into())]);
    } else if let Some(p) = profile {
        let whitelisted = destination.country.is_some_and(|c| p.whitelisted_destinations.contains(&c));
        let forbidden = config.platform().forbidden_prefixes.iter().find(|f| digits.starts_with(f.as_ref()));
        let country = || ("country", destination.country.map_or(Value::Absent, |c| c.as_str().into()));
        if !whitelisted || forbidden.is_some() {
            trace.fail(
                "outbound.destination_allowed",
                [
                    country(),
                    ("whitelisted", whitelisted.into()),
                    ("forbidden_prefix", forbidden.map_or(Value::Absent, |f| f.as_ref().into())),
                ],
            );
            return Err(Reason::D41);
        }
        trace.pass("outbound.destination_allowed", [country()]);
    }

    // Rating: the account's deck, longest prefix.
    let deck = account.and_then(|a| a.rate_deck_id.as_deref()).and_then(|d| config.rate_deck(d));
    let rate = deck.and_then(|(deck, inc)| deck.rate_for(digits).map(|r| (r, *inc)));
    match &rate {
        Some((r, _)) => {
            trace.note("outbound.rate", [("prefix", r.prefix.as_str().into()), ("per_minute", r.per_minute.into())])
        }
        None if emergency => trace.skip("outbound.rate", [("emergency", true.into())]),
        None => {
            trace.fail("outbound.rate", [("number", digits.into()), ("deck", deck.is_some().into())]);
            return Err(Reason::TM1);
        }
    }

    if !emergency && let Some(p) = profile {
        if let Some((r, _)) = &rate {
            let facts = || [("rate", Value::from(r.per_minute)), ("max", p.max_destination_rate.into())];
            if rating::exceeds_max_rate(r.per_minute, p.max_destination_rate) {
                trace.fail("outbound.max_destination_rate", facts());
                return Err(Reason::D24);
            }
            trace.pass("outbound.max_destination_rate", facts());
        }
        let spent = req.usage.spend_today(&p.id, req.now.utc_day());
        let facts = [("spent", spent.into()), ("limit", p.daily_spend_limit.into())];
        if !rating::spend_allows(p.daily_spend_limit, spent) {
            trace.fail("outbound.daily_spend", facts);
            return Err(Reason::D19);
        }
        trace.pass("outbound.daily_spend", facts);
    }

    // Channels: account, profile, connection, in that order.
    let account_limit = account.and_then(|a| a.concurrent_call_limit);
    let profile_limit = profile.and_then(|p| p.concurrent_call_limit);
    let checks: [(Scope, &str, Option<u32>, &'static str); 3] = [
        (Scope::Account, &conn.account_id, account_limit, "outbound.account_channels"),
        (Scope::Profile, profile.map_or("", |p| &p.id), profile_limit, "outbound.profile_channels"),
        (Scope::Connection, &conn.id, conn.channel_limit, "outbound.connection_channels"),
    ];
    for (scope, id, limit, rule) in checks {
        let Some(limit) = limit.filter(|_| !emergency && !id.is_empty()) else { continue };
        let live = req.usage.channels(scope, id);
        let facts = [("live", live.into()), ("limit", limit.into())];
        if live >= limit {
            trace.fail(rule, facts);
            return Err(scope.limit_reason());
        }
        trace.pass(rule, facts);
    }

    if !emergency
        && let Some(p) = profile
        && let Some(w) = p.calling_window
        && let Some(number) = &destination.e164
    {
        check_window(&w, &p.id, number.as_str(), req, trace)?;
    }

    let routes = routing::plan_outbound(config.carriers(), digits, req.rotation);
    if routes.is_empty() {
        trace.fail(
            "outbound.routes",
            [("number", digits.into()), ("carriers", (config.carriers().len() as u64).into())],
        );
        return Err(Reason::PE1);
    }
    trace.note("outbound.routes", [("attempts", (routes.len() as u64).into())]);

    let lift = |l: Option<u32>| if emergency { None } else { l };
    Ok(OutboundCall {
        account_id: conn.account_id.clone(),
        connection_id: conn.id.clone(),
        profile_id: profile.map(|p| p.id.clone()),
        destination,
        caller,
        anonymous,
        rate,
        channels: ChannelLimits {
            account: (conn.account_id.clone(), lift(account_limit)),
            profile: profile.map(|p| (p.id.clone(), lift(profile_limit))),
            connection: (conn.id.clone(), lift(conn.channel_limit)),
        },
        routes,
    })
}

/// The calling window: calls start only inside it, and at most `calls_per_cld` per called
/// number within it.
fn check_window(
    w: &CallingWindow,
    profile: &Arc<str>,
    destination: &str,
    req: &OutboundRequest<'_>,
    trace: &mut Trace,
) -> Result<(), Reason> {
    let now = req.now.second_of_day();
    let (start, end) = (w.start.unwrap_or(0), w.end.unwrap_or(86_400));
    // A window that starts where it ends is the whole day; one that wraps midnight ends the next day.
    let inside = if start == end {
        true
    } else if start < end {
        (start..end).contains(&now)
    } else {
        now >= start || now < end
    };
    let facts = || [("now", now.into()), ("start", start.into()), ("end", end.into())];
    if !inside {
        trace.fail("outbound.calling_window", facts());
        return Err(Reason::D17);
    }
    if let Some(limit) = w.calls_per_cld {
        // The window opened today at `start`, or yesterday when it wraps midnight and we are
        // past it.
        let day_start = req.now.as_millis() - u64::from(now) * 1000;
        let opened = if start <= now {
            day_start + u64::from(start) * 1000
        } else {
            day_start.saturating_sub(86_400_000) + u64::from(start) * 1000
        };
        let calls = req.usage.calls_to(profile, destination, Timestamp(opened));
        if calls >= limit {
            trace.fail("outbound.calling_window", [("calls_to_number", calls.into()), ("calls_per_cld", limit.into())]);
            return Err(Reason::D22);
        }
        trace.pass("outbound.calling_window", [("calls_to_number", calls.into()), ("calls_per_cld", limit.into())]);
    } else {
        trace.pass("outbound.calling_window", facts());
    }
    Ok(())
}
