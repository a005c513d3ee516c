//! The Caller ID Policy, row by row: every example and table of the product documentation's
//! "Caller ID Policy" section, the header priority, the override, Privacy, the `503` spoofing
//! and `D36` rows, the delivery formats, and property tests that nothing panics.

use std::collections::HashMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use sip::{Framing, HeaderName, Message};
use trunking::Trace;
use trunking::caller_id::{
    self, AniFormat, CallerHeader, CallerIdSettings, CallerIdVerdict, CallerIdentity, Dnis, DnisFormat, NoOwners,
    NumberOwners, caller_number, format_ani, format_dnis, privacy_id,
};
use trunking::numbering::{Country, Destination, E164, NumberingPlan};
use trunking::trace::Verdict;

static PLAN: LazyLock<NumberingPlan> = LazyLock::new(NumberingPlan::new);

const ACCOUNT: &str = "acct-caller";
const OTHER: &str = "acct-other";

/// Numbers on the platform: the calling account owns the first Chicago number and an Irish one;
/// another account owns the second.
static OWNERS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    HashMap::from([
        ("+13129457420".to_string(), ACCOUNT.to_string()),
        ("+35318401234".to_string(), ACCOUNT.to_string()),
        ("+13129457421".to_string(), OTHER.to_string()),
    ])
});

fn e164(s: &str) -> E164 {
    PLAN.e164(s).unwrap_or_else(|| panic!("{s} is valid")).e164
}

/// A destination as outbound dialing reads it.
fn dest(dialed: &str, loc: Option<&str>) -> Destination {
    PLAN.classify_dialed(dialed, loc.map(|l| Country::parse(l).unwrap()))
        .unwrap_or_else(|| panic!("{dialed} is a destination"))
}

fn settings(loc: Option<&str>) -> CallerIdSettings {
    CallerIdSettings { localization: loc.map(|l| Country::parse(l).unwrap()), ani_override: None }
}

fn from_user(user: &str) -> CallerIdentity<'_> {
    CallerIdentity { header: CallerHeader::From, user: user.into() }
}

fn run(
    caller: &str,
    privacy: bool,
    destination: &Destination,
    settings: &CallerIdSettings,
) -> (CallerIdVerdict, Trace) {
    let mut trace = Trace::new();
    let identity = from_user(caller);
    let v = caller_id::check(Some(&identity), privacy, destination, settings, &*OWNERS, ACCOUNT, &PLAN, &mut trace);
    (v, trace)
}

fn accepted(e: &str, anonymous: bool) -> CallerIdVerdict {
    CallerIdVerdict::Accepted { e164: e164(e), anonymous }
}

use CallerIdVerdict::{AnotherAccountsNumber as D36, InvalidFormat as D35, SpoofedInternational as S503};

/// One row: caller number sent, Privacy: id, dialed destination, localization, expected verdict.
struct Row {
    what: &'static str,
    caller: &'static str,
    privacy: bool,
    dialed: &'static str,
    localization: Option<&'static str>,
    want: fn() -> CallerIdVerdict,
}

const ROWS: &[Row] = &[
    // "USA localization": the three accepted formats.
    Row {
        what: "US national",
        caller: "3129457420",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "US 11-digit",
        caller: "13129457420",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "US E.164",
        caller: "+13129457420",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    // A US caller number need not be on the platform for a domestic call (bring your own number).
    Row {
        what: "US number not on the platform, domestic",
        caller: "3125550111",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13125550111", false),
    },
    Row {
        what: "US with separators",
        caller: "(312) 945-7420",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "US too short",
        caller: "312945742",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D35,
    },
    Row {
        what: "US not a number",
        caller: "anonymous",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D35,
    },
    Row { what: "US empty", caller: "", privacy: false, dialed: "2125550123", localization: Some("US"), want: || D35 },
    Row {
        what: "US invalid area code",
        caller: "1234567890",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D35,
    },
    // "International localization" (Ireland): country-specific and E.164 formats.
    Row {
        what: "IE country-specific",
        caller: "01-840-1234",
        privacy: false,
        dialed: "01 840 5678",
        localization: Some("IE"),
        want: || accepted("+35318401234", false),
    },
    Row {
        what: "IE E.164",
        caller: "+353-1-840-1234",
        privacy: false,
        dialed: "01 840 5678",
        localization: Some("IE"),
        want: || accepted("+35318401234", false),
    },
    // The documentation's "840-1234 (national format)" is a Dublin subscriber number without its
    // area code: no E.164 number can be made of it, so it cannot be signed or presented.
    Row {
        what: "IE subscriber number without area code",
        caller: "840-1234",
        privacy: false,
        dialed: "01 840 5678",
        localization: Some("IE"),
        want: || D35,
    },
    Row {
        what: "IE US-style number",
        caller: "3129457420",
        privacy: false,
        dialed: "01 840 5678",
        localization: Some("IE"),
        want: || D35,
    },
    // "Cross-border calls": calling outside the localization country, only E.164.
    Row {
        what: "IE calling the USA with E.164",
        caller: "+13129457420",
        privacy: false,
        dialed: "+1 212 555 0123",
        localization: Some("IE"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "IE calling the USA with the 11-digit form",
        caller: "13129457420",
        privacy: false,
        dialed: "+1 212 555 0123",
        localization: Some("IE"),
        want: || D35,
    },
    Row {
        what: "IE calling the USA with an Irish national number",
        caller: "01 840 1234",
        privacy: false,
        dialed: "00 1 212 555 0123",
        localization: Some("IE"),
        want: || D35,
    },
    Row {
        what: "IE calling the USA with an Irish E.164 number",
        caller: "+353 1 840 1234",
        privacy: false,
        dialed: "00 1 212 555 0123",
        localization: Some("IE"),
        want: || accepted("+35318401234", false),
    },
    Row {
        what: "US calling GB with the national form",
        caller: "3129457420",
        privacy: false,
        dialed: "011 44 20 7946 0000",
        localization: Some("US"),
        want: || D35,
    },
    Row {
        what: "US calling GB with E.164",
        caller: "+13129457420",
        privacy: false,
        dialed: "011 44 20 7946 0000",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    // The NANP is one numbering plan: a US connection calling Canada is no cross-border call.
    Row {
        what: "US calling Canada, national form",
        caller: "3125550111",
        privacy: false,
        dialed: "416 555 0123",
        localization: Some("US"),
        want: || accepted("+13125550111", false),
    },
    // "Validation behavior": no localization, US rules.
    Row {
        what: "blank localization, US national",
        caller: "3129457420",
        privacy: false,
        dialed: "2125550123",
        localization: None,
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "blank localization, 11-digit",
        caller: "13129457420",
        privacy: false,
        dialed: "2125550123",
        localization: None,
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "blank localization, a GB national number",
        caller: "020 7946 0000",
        privacy: false,
        dialed: "2125550123",
        localization: None,
        want: || D35,
    },
    // "Caller ID anonymization".
    Row {
        what: "Privacy: id with a valid number",
        caller: "3129457420",
        privacy: true,
        dialed: "2125550123",
        localization: Some("US"),
        want: || accepted("+13129457420", true),
    },
    Row {
        what: "Privacy: id with an invalid number",
        caller: "anonymous",
        privacy: true,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D35,
    },
    Row {
        what: "Privacy: id toward toll-free",
        caller: "3129457420",
        privacy: true,
        dialed: "8002345678",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "Privacy: id toward toll-free 888",
        caller: "3129457420",
        privacy: true,
        dialed: "+1 888 234 5678",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "Privacy: id toward 911",
        caller: "3129457420",
        privacy: true,
        dialed: "911",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "Privacy: id toward the test number 933",
        caller: "3129457420",
        privacy: true,
        dialed: "933",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "Privacy: id toward 999 in GB",
        caller: "020 7946 0000",
        privacy: true,
        dialed: "999",
        localization: Some("GB"),
        want: || accepted("+442079460000", false),
    },
    // "International spoofing restrictions": 503 so the client can fail over.
    Row {
        what: "spoofed caller toward GB",
        caller: "+13125550111",
        privacy: false,
        dialed: "011 44 20 7946 0000",
        localization: Some("US"),
        want: || S503,
    },
    Row {
        what: "spoofed foreign caller toward GB",
        caller: "+442079460001",
        privacy: false,
        dialed: "+44 20 7946 0000",
        localization: Some("US"),
        want: || S503,
    },
    Row {
        what: "own number toward GB",
        caller: "+13129457420",
        privacy: false,
        dialed: "+44 20 7946 0000",
        localization: Some("US"),
        want: || accepted("+13129457420", false),
    },
    Row {
        what: "own Irish number toward GB from IE",
        caller: "+35318401234",
        privacy: false,
        dialed: "00 44 20 7946 0000",
        localization: Some("IE"),
        want: || accepted("+35318401234", false),
    },
    Row {
        what: "spoofed caller, invalid format first",
        caller: "13125550111",
        privacy: false,
        dialed: "+44 20 7946 0000",
        localization: Some("US"),
        want: || D35,
    },
    // Another account's number: D36, domestic or international.
    Row {
        what: "another account's number, domestic",
        caller: "3129457421",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D36,
    },
    Row {
        what: "another account's number, E.164",
        caller: "+13129457421",
        privacy: false,
        dialed: "2125550123",
        localization: Some("US"),
        want: || D36,
    },
    Row {
        what: "another account's number, international",
        caller: "+13129457421",
        privacy: false,
        dialed: "+44 20 7946 0000",
        localization: Some("US"),
        want: || D36,
    },
    // Emergency calls are never refused over caller ID.
    Row {
        what: "911 with an invalid caller",
        caller: "anonymous",
        privacy: false,
        dialed: "911",
        localization: Some("US"),
        want: || CallerIdVerdict::EmergencyAsSent,
    },
    Row {
        what: "911 with another account's number",
        caller: "3129457421",
        privacy: false,
        dialed: "911",
        localization: Some("US"),
        want: || accepted("+13129457421", false),
    },
    Row {
        what: "112 in IE with an invalid caller",
        caller: "840-1234",
        privacy: true,
        dialed: "112",
        localization: Some("IE"),
        want: || CallerIdVerdict::EmergencyAsSent,
    },
];

#[test]
fn caller_id_policy_rows() {
    for row in ROWS {
        let d = dest(row.dialed, row.localization);
        let (got, trace) = run(row.caller, row.privacy, &d, &settings(row.localization));
        assert_eq!(got, (row.want)(), "{}: {:#?}", row.what, trace);
        // The trace names the rule that decided.
        let failed = trace.failed().map(|s| s.rule);
        let want_rule = match got {
            CallerIdVerdict::InvalidFormat => Some("caller_id.format"),
            CallerIdVerdict::AnotherAccountsNumber => Some("caller_id.owner"),
            CallerIdVerdict::SpoofedInternational => Some("caller_id.spoofing"),
            _ => None,
        };
        assert_eq!(failed, want_rule, "{}", row.what);
        assert!(trace.has("caller_id.header") && trace.has("caller_id.format"), "{}", row.what);
    }
}

#[test]
fn trace_records_the_rules() {
    let (_, trace) = run("13129457420", true, &dest("2125550123", Some("US")), &settings(Some("US")));
    let rules: Vec<_> = trace.steps().map(|s| s.rule).collect();
    assert_eq!(rules, ["caller_id.header", "caller_id.format", "caller_id.owner", "caller_id.privacy"]);
    let format = trace.get("caller_id.format").unwrap();
    assert_eq!(format.verdict, Verdict::Pass);
    assert_eq!(format.fact("e164").unwrap(), &"+13129457420".into());
    assert_eq!(format.fact("written").unwrap(), &trunking::trace::Value::Static("national"));
    assert_eq!(trace.get("caller_id.privacy").unwrap().fact("anonymous").unwrap(), &true.into());

    let (_, trace) = run("+13125550111", false, &dest("+44 20 7946 0000", Some("US")), &settings(Some("US")));
    assert_eq!(trace.failed().unwrap().rule, "caller_id.spoofing");

    let (_, trace) = run("anonymous", false, &dest("911", Some("US")), &settings(Some("US")));
    let format = trace.get("caller_id.format").unwrap();
    assert_eq!(format.verdict, Verdict::Skip);
    assert!(trace.failed().is_none());
}

// ---- override -----------------------------------------------------------------------------

#[test]
fn override_bypasses_validation() {
    let over = CallerIdSettings { localization: Some(Country::US), ani_override: Some(e164("+13125550199")) };
    for caller in ["anything", "", "+13129457421", "13125550111", "020 7946 0000"] {
        for dialed in ["2125550123", "+44 20 7946 0000"] {
            let mut trace = Trace::new();
            let identity = from_user(caller);
            let v = caller_id::check(
                Some(&identity),
                false,
                &dest(dialed, Some("US")),
                &over,
                &*OWNERS,
                ACCOUNT,
                &PLAN,
                &mut trace,
            );
            assert_eq!(v, accepted("+13125550199", false), "{caller} -> {dialed}");
            assert_eq!(trace.get("caller_id.override").unwrap().verdict, Verdict::Pass);
            assert!(!trace.has("caller_id.format") && trace.failed().is_none());
        }
    }
    // Privacy still applies to the override, except toward toll-free numbers.
    let mut trace = Trace::new();
    let identity = from_user("x");
    let v = caller_id::check(
        Some(&identity),
        true,
        &dest("2125550123", Some("US")),
        &over,
        &NoOwners,
        ACCOUNT,
        &PLAN,
        &mut trace,
    );
    assert_eq!(v, accepted("+13125550199", true));
    let v = caller_id::check(
        Some(&identity),
        true,
        &dest("8002345678", Some("US")),
        &over,
        &NoOwners,
        ACCOUNT,
        &PLAN,
        &mut trace,
    );
    assert_eq!(v, accepted("+13125550199", false));
}

// ---- header priority ------------------------------------------------------------------------

fn invite(headers: &[(HeaderName, &str)]) -> Message {
    let mut m = Message::new_request("INVITE", "sip:+12125550123@sip.example.net");
    for (name, value) in headers {
        m.push_header(*name, value);
    }
    m
}

const PPI: HeaderName = HeaderName::PPreferredIdentity;
const PAI: HeaderName = HeaderName::PAssertedIdentity;
const RPID: HeaderName = HeaderName::RemotePartyId;
const FROM: HeaderName = HeaderName::From;

/// (headers, winning header, user part, verdict on a US domestic call)
type HeaderRow = (&'static [(HeaderName, &'static str)], Option<CallerHeader>, &'static str, fn() -> CallerIdVerdict);

const HEADER_ROWS: &[HeaderRow] = &[
    (
        &[
            (FROM, "<sip:3125550111@pbx.example>;tag=1"),
            (RPID, "<sip:3125550112@pbx.example>;party=calling"),
            (PAI, "<sip:3125550113@pbx.example>"),
            (PPI, "<sip:3125550114@pbx.example>"),
        ],
        Some(CallerHeader::PPreferredIdentity),
        "3125550114",
        || accepted("+13125550114", false),
    ),
    (
        &[
            (FROM, "<sip:3125550111@pbx.example>;tag=1"),
            (RPID, "<sip:3125550112@pbx.example>"),
            (PAI, "<sip:3125550113@pbx.example>"),
        ],
        Some(CallerHeader::PAssertedIdentity),
        "3125550113",
        || accepted("+13125550113", false),
    ),
    (
        &[
            (FROM, "<sip:3125550111@pbx.example>;tag=1"),
            (RPID, "\"Front desk\" <sip:3125550112@pbx.example>;party=calling;screen=no"),
        ],
        Some(CallerHeader::RemotePartyId),
        "3125550112",
        || accepted("+13125550112", false),
    ),
    (&[(FROM, "\"Alice\" <sip:+13125550111@pbx.example>;tag=1")], Some(CallerHeader::From), "+13125550111", || {
        accepted("+13125550111", false)
    }),
    // Only the winner is judged, even when a lower header carries a valid number.
    (
        &[(FROM, "<sip:3125550111@pbx.example>;tag=1"), (PPI, "<sip:anonymous@anonymous.invalid>")],
        Some(CallerHeader::PPreferredIdentity),
        "anonymous",
        || D35,
    ),
    (
        &[(FROM, "<sip:3125550111@pbx.example>;tag=1"), (PAI, "<sip:12@pbx.example>")],
        Some(CallerHeader::PAssertedIdentity),
        "12",
        || D35,
    ),
    (
        &[(FROM, "<sip:3125550111@pbx.example>;tag=1"), (RPID, "<sip:pbx.example>;party=calling")],
        Some(CallerHeader::RemotePartyId),
        "",
        || D35,
    ),
    // An unparsable winner is judged (and fails), not skipped.
    (
        &[(FROM, "<sip:3125550111@pbx.example>;tag=1"), (PAI, "<<garbage")],
        Some(CallerHeader::PAssertedIdentity),
        "",
        || D35,
    ),
    // A winner with another account's number is D36 even when From is the caller's own.
    (
        &[(FROM, "<sip:3129457420@pbx.example>;tag=1"), (PAI, "<sip:3129457421@pbx.example>")],
        Some(CallerHeader::PAssertedIdentity),
        "3129457421",
        || D36,
    ),
    // Forms of the user part.
    (&[(PAI, "<tel:+1-312-555-0113>")], Some(CallerHeader::PAssertedIdentity), "+1-312-555-0113", || {
        accepted("+13125550113", false)
    }),
    (
        &[(PAI, "<sip:+13125550113@pbx.example;user=phone>, <tel:+13125550999>")],
        Some(CallerHeader::PAssertedIdentity),
        "+13125550113",
        || accepted("+13125550113", false),
    ),
    (
        &[(FROM, "<sip:+13125550111;npdi;rn=+13125550000@carrier.example;user=phone>;tag=9")],
        Some(CallerHeader::From),
        "+13125550111",
        || accepted("+13125550111", false),
    ),
    (&[(FROM, "<sip:%2B13125550111@pbx.example>;tag=1")], Some(CallerHeader::From), "+13125550111", || {
        accepted("+13125550111", false)
    }),
    (&[(FROM, "sip:3125550111@pbx.example;tag=1")], Some(CallerHeader::From), "3125550111", || {
        accepted("+13125550111", false)
    }),
    // No caller header at all.
    (&[], None, "", || D35),
];

#[test]
fn header_priority_rows() {
    let d = dest("2125550123", Some("US"));
    for (headers, header, user, want) in HEADER_ROWS {
        let msg = invite(headers);
        let identity = caller_number(&msg);
        assert_eq!(identity.as_ref().map(|i| i.header), *header, "{headers:?}");
        assert_eq!(identity.as_ref().map_or("", |i| i.user.as_ref()), *user, "{headers:?}");
        let mut trace = Trace::new();
        let v =
            caller_id::check(identity.as_ref(), false, &d, &settings(Some("US")), &*OWNERS, ACCOUNT, &PLAN, &mut trace);
        assert_eq!(v, want(), "{headers:?}");
        let step = trace.get("caller_id.header").unwrap();
        assert_eq!(
            step.fact("header").and_then(|v| match v {
                trunking::trace::Value::Static(s) => Some(*s),
                _ => None,
            }),
            header.map(|h| h.as_str())
        );
    }
}

#[test]
fn headers_in_a_parsed_request() {
    let raw = "INVITE sip:+12125550123@sip.example.net SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        f: \"PBX\" <sip:3125550111@192.0.2.10>;tag=1928301774\r\n\
        t: <sip:+12125550123@sip.example.net>\r\n\
        i: a84b4c76e66710@192.0.2.10\r\n\
        CSeq: 314159 INVITE\r\n\
        P-Asserted-Identity: <sip:+13129457420@192.0.2.10>\r\n\
        Privacy: id\r\n\
        Content-Length: 0\r\n\r\n";
    let msg = Message::parse(raw.as_bytes().to_vec().into(), Framing::Datagram).unwrap();
    let identity = caller_number(&msg).unwrap();
    assert_eq!((identity.header, identity.user.as_ref()), (CallerHeader::PAssertedIdentity, "+13129457420"));
    assert!(privacy_id(&msg));
    let mut trace = Trace::new();
    let v = caller_id::check(
        Some(&identity),
        privacy_id(&msg),
        &dest("+12125550123", Some("US")),
        &settings(Some("US")),
        &*OWNERS,
        ACCOUNT,
        &PLAN,
        &mut trace,
    );
    assert_eq!(v, accepted("+13129457420", true));
}

#[test]
fn privacy_header_forms() {
    for (value, want) in [
        ("id", true),
        ("ID", true),
        ("header;id", true),
        ("user; id", true),
        ("none", false),
        ("header", false),
        ("idx", false),
    ] {
        assert_eq!(privacy_id(&invite(&[(HeaderName::Privacy, value)])), want, "{value}");
    }
    assert!(!privacy_id(&invite(&[])));
}

#[test]
fn owner_lookups() {
    let mut map: HashMap<&str, &str> = HashMap::new();
    map.insert("+13129457420", "a");
    assert_eq!(map.owner("+13129457420"), Some("a"));
    assert_eq!(NoOwners.owner("+13129457420"), None);
    let tree: std::collections::BTreeMap<String, String> = [("+1".to_string(), "b".to_string())].into();
    assert_eq!(tree.owner("+1"), Some("b"));
    // Through a reference, as a generic argument.
    fn through<O: NumberOwners + ?Sized>(o: &O) -> Option<&str> {
        o.owner("+1")
    }
    assert_eq!(through(&&tree), Some("b"));
}

// ---- delivery formats -------------------------------------------------------------------------

/// (caller, called, format, expected ANI)
const ANI: &[(&str, &str, AniFormat, &str)] = &[
    ("+13129457420", "+12125550123", AniFormat::PlusE164, "+13129457420"),
    ("+13129457420", "+12125550123", AniFormat::E164, "13129457420"),
    ("+13129457420", "+12125550123", AniFormat::PlusE164National, "3129457420"),
    ("+13129457420", "+12125550123", AniFormat::E164National, "3129457420"),
    ("+442079460000", "+12125550123", AniFormat::PlusE164, "+442079460000"),
    ("+442079460000", "+12125550123", AniFormat::E164, "442079460000"),
    ("+442079460000", "+12125550123", AniFormat::PlusE164National, "+442079460000"),
    ("+442079460000", "+12125550123", AniFormat::E164National, "442079460000"),
    ("+442079460000", "+447400123456", AniFormat::PlusE164National, "02079460000"),
    ("+442079460000", "+447400123456", AniFormat::E164National, "02079460000"),
    ("+14165550123", "+12125550123", AniFormat::E164National, "4165550123"),
    ("+35318401234", "+35318405678", AniFormat::E164National, "018401234"),
];

#[test]
fn ani_format_rows() {
    for &(caller, called, format, want) in ANI {
        assert_eq!(
            format_ani(&PLAN, &e164(caller), &e164(called), format).as_str(),
            want,
            "{caller} -> {called} {format}"
        );
    }
}

/// (called, format, SIP user name of the connection, expected DNIS)
const DNIS: &[(&str, DnisFormat, Option<&str>, &str)] = &[
    ("+13129457420", DnisFormat::PlusE164, None, "+13129457420"),
    ("+13129457420", DnisFormat::E164, None, "13129457420"),
    ("+13129457420", DnisFormat::National, None, "3129457420"),
    ("+442079460000", DnisFormat::National, None, "02079460000"),
    ("+35318401234", DnisFormat::National, None, "018401234"),
    ("+13129457420", DnisFormat::SipUsername, Some("myusername123"), "myusername123"),
    ("+13129457420", DnisFormat::SipUsername, None, "13129457420"),
];

#[test]
fn dnis_format_rows() {
    for &(called, format, user, want) in DNIS {
        let got = format_dnis(&PLAN, &e164(called), format, user);
        assert_eq!(got.as_str(), want, "{called} {format}");
        assert_eq!(matches!(got, Dnis::Username(_)), format == DnisFormat::SipUsername && user.is_some());
    }
}

#[test]
fn format_names_follow_the_contract() {
    let names: Vec<_> = AniFormat::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(names, ["+E.164", "E.164", "+E.164-national", "E.164-national"]);
    let names: Vec<_> = DnisFormat::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(names, ["+e164", "e164", "national", "sip_username"]);
    for f in AniFormat::ALL {
        assert_eq!(f.as_str().parse::<AniFormat>(), Ok(f));
        assert_eq!(serde_json::from_str::<AniFormat>(&serde_json::to_string(&f).unwrap()).unwrap(), f);
    }
    for f in DnisFormat::ALL {
        assert_eq!(f.as_str().parse::<DnisFormat>(), Ok(f));
        assert_eq!(serde_json::from_str::<DnisFormat>(&serde_json::to_string(&f).unwrap()).unwrap(), f);
    }
    // The API defaults.
    assert_eq!(AniFormat::default(), AniFormat::E164National);
    assert_eq!(DnisFormat::default(), DnisFormat::E164);
    assert!("+e164".parse::<AniFormat>().is_err() && "E.164".parse::<DnisFormat>().is_err());
}

// ---- totality -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn check_never_panics(
        caller in "\\PC{0,30}",
        number_like in "[+0-9 ().-]{0,20}",
        privacy in any::<bool>(),
        dialed in "(911|933|112|999|2125550123|\\+44 20 7946 0000|8002345678|011 353 1 840 5678)",
        loc in proptest::option::of("(US|IE|GB|CA|AU|DE|XX|ZZ)"),
    ) {
        let loc_c = loc.as_deref().map(|l| Country::parse(l).unwrap());
        let Some(d) = PLAN.classify_dialed(&dialed, loc_c) else { return Ok(()) };
        for user in [caller.as_str(), number_like.as_str()] {
            let mut trace = Trace::new();
            let identity = from_user(user);
            let s = CallerIdSettings { localization: loc_c, ani_override: None };
            let v = caller_id::check(Some(&identity), privacy, &d, &s, &*OWNERS, ACCOUNT, &PLAN, &mut trace);
            // Emergency calls are never refused.
            if d.is_emergency() {
                let never_refused = matches!(v, CallerIdVerdict::Accepted { anonymous: false, .. } | CallerIdVerdict::EmergencyAsSent);
                prop_assert!(never_refused, "{:?}", v);
            }
            // A refusal names its rule.
            prop_assert_eq!(trace.failed().is_some(), !matches!(v, CallerIdVerdict::Accepted { .. } | CallerIdVerdict::EmergencyAsSent));
        }
    }

    #[test]
    fn caller_number_never_panics(value in "[ -~]{0,60}", which in 0usize..4) {
        let name = [PPI, PAI, RPID, FROM][which];
        let msg = invite(&[(name, &value)]);
        let identity = caller_number(&msg).unwrap();
        prop_assert_eq!(identity.header.name(), name);
        let _ = privacy_id(&invite(&[(HeaderName::Privacy, &value)]));
    }
}
