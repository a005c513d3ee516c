//! The Caller ID Policy (product docs, "Caller ID Policy"): which header carries the caller's
//! number, whether that number may originate this call, whether it is presented anonymously;
//! and how numbers are written on delivery (`ani_number_format`, `dnis_number_format`).
//!
//! The rules, in the order [`check`] applies them:
//!
//! 1. `caller_id.header`: the caller number is the user part of the first header present of
//!    `P-Preferred-Identity`, `P-Asserted-Identity`, `Remote-Party-ID`, `From`; only that one
//!    is judged, even when a lower one would pass.
//! 2. `caller_id.override`: a connection's caller-ID override replaces the number and bypasses
//!    the format, owner and spoofing rules.
//! 3. `caller_id.format`: the number must be valid in the connection's localization (default and
//!    blank: US): national formats, the 11-digit NANP form, `+E.164`. Toward a destination
//!    outside the localization's numbering plan (another country calling code), only `+E.164`.
//!    Invalid: `403 Caller Origination Number is Invalid D35`.
//! 4. `caller_id.owner`: a number of another account on the platform: `D36`.
//! 5. `caller_id.spoofing`: toward an international destination, a number that is not one of
//!    the calling account's own: `503`, so the customer's equipment can fail over.
//! 6. `caller_id.privacy`: `Privacy: id` presents the call anonymously, except toward toll-free
//!    and emergency numbers, which always see the real number.
//!
//! Emergency calls are never refused over caller ID: a rule that would refuse one is recorded as
//! skipped and the call proceeds ([`CallerIdVerdict::EmergencyAsSent`] when the number is
//! unusable).
//!
//! "International" and "outside the localization country" compare country calling codes: the
//! NANP is one numbering plan, so a US connection calling Canada may still send `3129457420`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sip::{HeaderName, Message, NameAddr};

use crate::numbering::{Country, Destination, E164, NumberKind, NumberText, NumberingPlan, Written};
use crate::trace::{Trace, Value};

// ---------------------------------------------------------------------------------------------
// Which header
// ---------------------------------------------------------------------------------------------

/// A header that may carry the caller's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CallerHeader {
    PPreferredIdentity,
    PAssertedIdentity,
    RemotePartyId,
    From,
}

impl CallerHeader {
    /// Highest priority first.
    pub const PRIORITY: [CallerHeader; 4] = [
        CallerHeader::PPreferredIdentity,
        CallerHeader::PAssertedIdentity,
        CallerHeader::RemotePartyId,
        CallerHeader::From,
    ];

    pub fn as_str(self) -> &'static str {
        self.name().as_str()
    }

    pub fn name(self) -> HeaderName {
        match self {
            CallerHeader::PPreferredIdentity => HeaderName::PPreferredIdentity,
            CallerHeader::PAssertedIdentity => HeaderName::PAssertedIdentity,
            CallerHeader::RemotePartyId => HeaderName::RemotePartyId,
            CallerHeader::From => HeaderName::From,
        }
    }
}

/// The caller number a request carries, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity<'a> {
    pub header: CallerHeader,
    /// The user part, `%` escapes decoded and user parameters (`;npdi`) cut off. Empty when the
    /// winning header has no parsable address or no user part: judged, and invalid.
    pub user: Cow<'a, str>,
}

/// The caller number of a request by header priority; `None` when none of the four headers is
/// present.
pub fn caller_number(msg: &Message) -> Option<CallerIdentity<'_>> {
    CallerHeader::PRIORITY
        .into_iter()
        .find_map(|header| msg.header(header.name()).map(|value| CallerIdentity { header, user: user_part(value) }))
}

/// The user part of a header value's first address.
fn user_part(value: &str) -> Cow<'_, str> {
    // P-Asserted-Identity may carry a sip and a tel URI: the first is the identity.
    let Some(first) = sip::scan::split_list(value).next() else { return Cow::Borrowed("") };
    let Ok(address) = NameAddr::parse(first) else { return Cow::Borrowed("") };
    let Some(user) = address.user() else { return Cow::Borrowed("") };
    // `+13129457420;npdi;rn=...`: user parameters are not the number.
    let user = user.split(';').next().unwrap_or_default();
    match sip::uri::unescape(user) {
        Cow::Borrowed(_) => Cow::Borrowed(user),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// Whether the request asks for `Privacy: id` (RFC 3323), in any of its Privacy headers.
pub fn privacy_id(msg: &Message) -> bool {
    msg.header_values(HeaderName::Privacy).any(asks_privacy_id)
}

/// Whether one `Privacy` header value asks for `id`.
pub fn asks_privacy_id(value: &str) -> bool {
    value.split([';', ',']).any(|t| t.trim().eq_ignore_ascii_case("id"))
}

// ---------------------------------------------------------------------------------------------
// Who owns a number
// ---------------------------------------------------------------------------------------------

/// Who owns a number on the platform.
pub trait NumberOwners {
    /// The account that owns `e164` (with `+`), if the number is on the platform.
    fn owner(&self, e164: &str) -> Option<&str>;
}

/// No number is on the platform.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOwners;

impl NumberOwners for NoOwners {
    fn owner(&self, _: &str) -> Option<&str> {
        None
    }
}

impl<S: AsRef<str>, A: AsRef<str>> NumberOwners for HashMap<S, A>
where
    S: std::borrow::Borrow<str> + Eq + std::hash::Hash,
{
    fn owner(&self, e164: &str) -> Option<&str> {
        self.get(e164).map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>, A: AsRef<str>> NumberOwners for BTreeMap<S, A>
where
    S: std::borrow::Borrow<str> + Ord,
{
    fn owner(&self, e164: &str) -> Option<&str> {
        self.get(e164).map(AsRef::as_ref)
    }
}

impl<T: NumberOwners + ?Sized> NumberOwners for &T {
    fn owner(&self, e164: &str) -> Option<&str> {
        (**self).owner(e164)
    }
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

/// The connection's caller-ID settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerIdSettings {
    /// `outbound.localization`; `None` (blank) means US rules.
    pub localization: Option<Country>,
    /// The number that replaces the caller's on this call: the connection's `ani_override`
    /// when its `ani_override_type` applies to the call (`always`; `normal` for non-emergency
    /// calls; `emergency` for emergency calls), read at configuration load. Bypasses validation.
    pub ani_override: Option<E164>,
}

/// The outcome of the Caller ID Policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerIdVerdict {
    /// The caller number to present (normalised to E.164), and whether to present it
    /// anonymously (`Privacy: id`, except toward toll-free and emergency numbers).
    Accepted { e164: E164, anonymous: bool },
    /// An emergency call whose caller number failed the format rule: it proceeds with the
    /// caller's identity as sent (never refused over caller ID).
    EmergencyAsSent,
    /// `403 Caller Origination Number is Invalid D35`.
    InvalidFormat,
    /// A number of another account on the platform (`D36`).
    AnotherAccountsNumber,
    /// Toward an international destination, a number that is not the account's own: `503`.
    SpoofedInternational,
}

/// Applies the Caller ID Policy to one outbound call.
///
/// `caller`: [`caller_number`] of the request; `privacy_id`: [`privacy_id`]; `owners` and
/// `account_id`: who owns numbers, and who calls. The arguments are the rule's inputs, one each.
#[allow(clippy::too_many_arguments)]
pub fn check<O: NumberOwners + ?Sized>(
    caller: Option<&CallerIdentity<'_>>,
    privacy_id: bool,
    destination: &Destination,
    settings: &CallerIdSettings,
    owners: &O,
    account_id: &str,
    plan: &NumberingPlan,
    trace: &mut Trace,
) -> CallerIdVerdict {
    let emergency = destination.is_emergency();
    let user = caller.map_or("", |c| c.user.as_ref());
    trace.note(
        "caller_id.header",
        vec![("header", caller.map(|c| c.header.as_str()).map_or(Value::Absent, Value::Static)), ("user", user.into())],
    );

    // `Privacy: id`, whichever number is presented; toll-free and emergency numbers always see
    // the real one.
    let anonymous = |trace: &mut Trace| {
        let real_number_for = if emergency || destination.kind == NumberKind::Emergency {
            Some("emergency")
        } else if destination.kind == NumberKind::TollFree {
            Some("toll_free")
        } else {
            None
        };
        let anonymous = privacy_id && real_number_for.is_none();
        trace.note(
            "caller_id.privacy",
            vec![
                ("privacy_id", privacy_id.into()),
                ("anonymous", anonymous.into()),
                ("real_number_for", real_number_for.map_or(Value::Absent, Value::Static)),
            ],
        );
        anonymous
    };

    if let Some(number) = settings.ani_override {
        trace.pass("caller_id.override", vec![("number", number.as_str().into())]);
        return CallerIdVerdict::Accepted { e164: number, anonymous: anonymous(trace) };
    }

    // Format, in the localization (blank: US rules).
    let localization = settings.localization.unwrap_or(Country::US);
    let local_code = plan.country_code(localization);
    let cross_border = destination.e164.is_some_and(|d| Some(d.country_code()) != local_code);
    let parsed = plan.parse(user, localization);
    let format_facts = |reason: Option<&'static str>| {
        let mut facts = vec![
            ("localization", settings.localization.map_or(Value::Absent, |c| Value::Static(c.as_static_str()))),
            ("cross_border", cross_border.into()),
        ];
        match (&parsed, reason) {
            (_, Some(reason)) => facts.push(("reason", Value::Static(reason))),
            (Ok(p), None) => {
                facts.push(("e164", p.number.e164.as_str().into()));
                facts.push(("written", Value::Static(p.written.as_str())));
            }
            (Err(_), None) => {}
        }
        facts
    };
    let number = match parsed {
        Err(e) => Err(e.as_str()),
        Ok(p) if cross_border && p.written != Written::Plus => Err("cross_border_needs_e164"),
        Ok(p) => Ok(p.number.e164),
    };
    let number = match number {
        Ok(n) => {
            trace.pass("caller_id.format", format_facts(None));
            n
        }
        Err(reason) if emergency => {
            let mut facts = format_facts(Some(reason));
            facts.push(("exempt", Value::Static("emergency")));
            trace.skip("caller_id.format", facts);
            anonymous(trace);
            return CallerIdVerdict::EmergencyAsSent;
        }
        Err(reason) => {
            trace.fail("caller_id.format", format_facts(Some(reason)));
            return CallerIdVerdict::InvalidFormat;
        }
    };

    // Whose number it is.
    let owner = owners.owner(number.as_str());
    let own = owner == Some(account_id);
    let owner_fact = (
        "owner",
        Value::Static(if own {
            "calling_account"
        } else if owner.is_some() {
            "another_account"
        } else {
            "none"
        }),
    );
    match owner {
        Some(_) if !own && emergency => {
            trace.skip("caller_id.owner", vec![owner_fact, ("exempt", Value::Static("emergency"))]);
        }
        Some(_) if !own => {
            trace.fail("caller_id.owner", vec![owner_fact]);
            return CallerIdVerdict::AnotherAccountsNumber;
        }
        _ => trace.pass("caller_id.owner", vec![owner_fact]),
    }

    // International destinations: only the account's own numbers.
    if cross_border {
        let facts = vec![("own_number", own.into())];
        if !own {
            trace.fail("caller_id.spoofing", facts);
            return CallerIdVerdict::SpoofedInternational;
        }
        trace.pass("caller_id.spoofing", facts);
    }

    CallerIdVerdict::Accepted { e164: number, anonymous: anonymous(trace) }
}

// ---------------------------------------------------------------------------------------------
// Delivery formats
// ---------------------------------------------------------------------------------------------

/// `inbound.ani_number_format`: how the caller's number (ANI) is written on calls delivered to
/// the customer. The `-national` forms write a caller from the called number's own numbering
/// plan (same country calling code) in national format, and others in (`+`)E.164.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AniFormat {
    /// `+E.164`: `+13129457420`.
    PlusE164,
    /// `E.164`: `13129457420`.
    E164,
    /// `+E.164-national`: `3129457420` from the same plan, `+442079460000` from abroad.
    PlusE164National,
    /// `E.164-national` (the API default): `3129457420` from the same plan, `442079460000`
    /// from abroad.
    #[default]
    E164National,
}

impl AniFormat {
    pub const ALL: [AniFormat; 4] =
        [AniFormat::PlusE164, AniFormat::E164, AniFormat::PlusE164National, AniFormat::E164National];

    pub fn as_str(self) -> &'static str {
        match self {
            AniFormat::PlusE164 => "+E.164",
            AniFormat::E164 => "E.164",
            AniFormat::PlusE164National => "+E.164-national",
            AniFormat::E164National => "E.164-national",
        }
    }
}

/// `inbound.dnis_number_format`: how the called number (DNIS) is written in the Request-URI of
/// calls delivered to the customer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DnisFormat {
    /// `+e164`: `+13129457420`.
    PlusE164,
    /// `e164` (the API default): `13129457420`.
    #[default]
    E164,
    /// `national`: as dialed nationally, `3129457420`, `02079460000`.
    National,
    /// `sip_username`: the connection's SIP user name instead of the number (credential
    /// connections).
    SipUsername,
}

impl DnisFormat {
    pub const ALL: [DnisFormat; 4] =
        [DnisFormat::PlusE164, DnisFormat::E164, DnisFormat::National, DnisFormat::SipUsername];

    pub fn as_str(self) -> &'static str {
        match self {
            DnisFormat::PlusE164 => "+e164",
            DnisFormat::E164 => "e164",
            DnisFormat::National => "national",
            DnisFormat::SipUsername => "sip_username",
        }
    }
}

macro_rules! api_enum {
    ($ty:ident, $what:literal) => {
        impl FromStr for $ty {
            type Err = &'static str;
            fn from_str(s: &str) -> Result<$ty, &'static str> {
                $ty::ALL.into_iter().find(|f| f.as_str() == s).ok_or(concat!("unknown ", $what))
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = <Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
api_enum!(AniFormat, "ani_number_format");
api_enum!(DnisFormat, "dnis_number_format");

/// The caller's number as the called connection wants it.
pub fn format_ani(plan: &NumberingPlan, caller: &E164, called: &E164, format: AniFormat) -> NumberText {
    let domestic = caller.country_code() == called.country_code();
    match format {
        AniFormat::PlusE164National | AniFormat::E164National if domestic => plan.national_format(caller),
        AniFormat::PlusE164 | AniFormat::PlusE164National => text(caller.as_str()),
        AniFormat::E164 | AniFormat::E164National => text(caller.digits()),
    }
}

/// The called number as written in the Request-URI toward the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dnis<'a> {
    Number(NumberText),
    /// `sip_username`: the connection's user name.
    Username(&'a str),
}

impl Dnis<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Dnis::Number(n) => n.as_str(),
            Dnis::Username(u) => u,
        }
    }
}

/// The called number as the called connection wants it. `sip_username` without a user name
/// (an IP or FQDN connection) falls back to the default, `e164`.
pub fn format_dnis<'a>(
    plan: &NumberingPlan,
    called: &E164,
    format: DnisFormat,
    sip_username: Option<&'a str>,
) -> Dnis<'a> {
    match format {
        DnisFormat::PlusE164 => Dnis::Number(text(called.as_str())),
        DnisFormat::E164 => Dnis::Number(text(called.digits())),
        DnisFormat::National => Dnis::Number(plan.national_format(called)),
        DnisFormat::SipUsername => match sip_username {
            Some(u) => Dnis::Username(u),
            None => Dnis::Number(text(called.digits())),
        },
    }
}

fn text(s: &str) -> NumberText {
    NumberText::from_ascii(s)
}
