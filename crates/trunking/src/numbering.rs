//! Numbering plans: reading a dialed string or a caller number as an E.164 number, the country
//! and the kind (toll-free, mobile, ...) of a number, national formats for delivery, and the
//! emergency numbers of each country.
//!
//! The data is libphonenumber's metadata as shipped by the `phonenumber` crate, but not its
//! code path: `phonenumber::parse` costs 1.3 to 11 µs per number (every regex goes through a
//! global `Mutex` around a 100-entry LRU cache that the ~1,400 patterns thrash), while the whole
//! outbound decision has a 2 µs budget. So [`NumberingPlan::new`] compiles the metadata once, at
//! configuration load, into lock-free tables:
//!
//! - per region, one multi-pattern DFA over the ten digits that runs every number-type pattern
//!   (and the region's leading-digits pattern) in a single pass over the national number;
//! - per country calling code, the regions that share it in libphonenumber's order (NANP `+1`
//!   is US, then the Caribbean countries and Canada, told apart by their patterns);
//! - per main region, its national formats, to write a number the way it is dialed nationally.
//!
//! Matching mirrors the `phonenumber` crate: a pattern matches a national number when it
//! matches a prefix of it and the number's length is one of the type's possible lengths; a
//! number is valid when the region its calling code and leading digits select gives it a known
//! type. The property tests in `tests/numbering.rs` check this fast path against the crate.
//!
//! Two places deliberately do not follow the crate, where it disagrees with libphonenumber:
//! `PhoneNumber::number_type` drops the national number's leading zeros (an Italian `+39 02 ...`
//! is `Unknown` there; here it is fixed line), and `parse` strips a national prefix from numbers
//! written with `+` (`+7 800 ...`, a Russian toll-free number, becomes `+7 00...` there).

use std::fmt;
use std::str::FromStr;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Country
// ---------------------------------------------------------------------------------------------

/// An ISO 3166-1 alpha-2 country code: two ASCII uppercase letters (`US`, `IE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub const US: Country = Country(*b"US");
    pub const CA: Country = Country(*b"CA");
    pub const GB: Country = Country(*b"GB");
    pub const IE: Country = Country(*b"IE");
    pub const AU: Country = Country(*b"AU");

    /// Two ASCII letters in any case; anything else is `None`.
    pub fn parse(s: &str) -> Option<Country> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Always two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The code as a `'static` string, for trace values that must not allocate.
    pub fn as_static_str(self) -> &'static str {
        std::str::from_utf8(&LETTER_PAIRS[self.index()]).unwrap_or("??")
    }

    /// Index into a 26 x 26 table.
    fn index(self) -> usize {
        usize::from(self.0[0] - b'A') * 26 + usize::from(self.0[1] - b'A')
    }
}

/// Every pair of uppercase letters, `AA` to `ZZ`.
static LETTER_PAIRS: [[u8; 2]; 676] = {
    let mut all = [[0u8; 2]; 676];
    let mut i = 0;
    while i < 676 {
        all[i] = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8];
        i += 1;
    }
    all
};

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Country {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Country, &'static str> {
        Country::parse(s).ok_or("a country is two ASCII letters (ISO 3166-1 alpha-2)")
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Country, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Country::parse(&s).ok_or_else(|| serde::de::Error::custom("a country is two ASCII letters"))
    }
}

// ---------------------------------------------------------------------------------------------
// Small inline strings: numbers never touch the heap on the call path
// ---------------------------------------------------------------------------------------------

/// Digits a national significant number may have (libphonenumber's limit, longer than E.164's
/// 15 digits in total: a few German numbers have 15-digit national numbers).
pub const MAX_NSN_DIGITS: usize = 17;
/// Shortest national significant number libphonenumber reads.
const MIN_NSN_DIGITS: usize = 2;
/// Digits a cleaned input may have: an international prefix (up to 4) + code (3) + number.
const MAX_INPUT_DIGITS: usize = 24;

/// A short number as text (a formatted ANI or DNIS), held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NumberText {
    buf: [u8; 24],
    len: u8,
}

impl NumberText {
    const fn empty() -> NumberText {
        NumberText { buf: [0; 24], len: 0 }
    }

    /// Appends ASCII bytes, cut at capacity (never reached by valid numbers).
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if usize::from(self.len) < self.buf.len() && b.is_ascii() {
                self.buf[usize::from(self.len)] = b;
                self.len += 1;
            }
        }
    }

    /// The text of `s`, cut at 24 bytes; non-ASCII bytes are dropped.
    pub fn from_ascii(s: &str) -> NumberText {
        let mut t = NumberText::empty();
        t.push(s.as_bytes());
        t
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever pushed.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for NumberText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for NumberText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NumberText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A valid number in E.164 form, `+` then country code then national significant number.
/// Only a [`NumberingPlan`] makes one, so holding an `E164` means the number was valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164 {
    buf: [u8; 1 + 3 + MAX_NSN_DIGITS],
    len: u8,
    cc_len: u8,
}

impl E164 {
    fn new(cc: u16, nsn: &[u8]) -> E164 {
        // Locals, not fields, in the loops: the length must not round-trip through memory.
        let mut buf = [0u8; 1 + 3 + MAX_NSN_DIGITS];
        buf[0] = b'+';
        let cc_len = match cc {
            0..=9 => 1,
            10..=99 => 2,
            _ => 3,
        };
        let mut n = cc;
        for i in (1..=cc_len).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let nsn = &nsn[..nsn.len().min(MAX_NSN_DIGITS)];
        let len = 1 + cc_len + nsn.len();
        buf[1 + cc_len..len].copy_from_slice(nsn);
        E164 { buf, len: len as u8, cc_len: cc_len as u8 }
    }

    /// `+13129457420`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// `13129457420`: the E.164 digits without the `+`.
    pub fn digits(&self) -> &str {
        &self.as_str()[1..]
    }

    /// The country calling code (`1`, `44`, `353`).
    pub fn country_code(&self) -> u16 {
        self.buf[1..=usize::from(self.cc_len)].iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
    }

    /// The country calling code as written (`1`, `44`).
    pub fn country_code_str(&self) -> &str {
        &self.as_str()[1..=usize::from(self.cc_len)]
    }

    /// The national significant number (`3129457420`; `18401234` for `+353 1 840 1234`).
    pub fn national_number(&self) -> &str {
        &self.as_str()[1 + usize::from(self.cc_len)..]
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for E164 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// What a number is
// ---------------------------------------------------------------------------------------------

/// The kind of a number, as far as the metadata tells. The first ten follow libphonenumber's
/// number types; `ShortCode` and `Emergency` come from this module's tables (libphonenumber keeps
/// short numbers in separate metadata that the `phonenumber` crate does not ship).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    FixedLine,
    Mobile,
    /// The numbering plan does not tell fixed from mobile (the NANP).
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Voicemail,
    /// A service short code (NANP N11 such as 411).
    ShortCode,
    /// An emergency number (911, 112, 999, ...), including the test number 933.
    Emergency,
    Unknown,
}

impl NumberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberKind::FixedLine => "fixed_line",
            NumberKind::Mobile => "mobile",
            NumberKind::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberKind::TollFree => "toll_free",
            NumberKind::PremiumRate => "premium_rate",
            NumberKind::SharedCost => "shared_cost",
            NumberKind::PersonalNumber => "personal_number",
            NumberKind::Voip => "voip",
            NumberKind::Pager => "pager",
            NumberKind::Uan => "uan",
            NumberKind::Voicemail => "voicemail",
            NumberKind::ShortCode => "short_code",
            NumberKind::Emergency => "emergency",
            NumberKind::Unknown => "unknown",
        }
    }
}

/// A valid number and what the plan knows about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct NumberInfo {
    pub e164: E164,
    /// `None` for non-geographic numbers (`+800` international freephone, `+882`/`+883`
    /// international networks, `+979` premium rate).
    pub country: Option<Country>,
    pub kind: NumberKind,
}

/// How a number was written, which the caller-ID rules judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Written {
    /// `+13129457420`: E.164.
    Plus,
    /// `011 44 20 7946 0000` from the US, `00 1 312 ...` from Ireland.
    InternationalPrefix,
    /// E.164 digits without the `+` (`35318401234` with Ireland localization).
    CountryCode,
    /// National format, with or without the national prefix (`3129457420`, `13129457420`,
    /// `01 840 1234`).
    National,
}

impl Written {
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Plus => "e164",
            Written::InternationalPrefix => "international_prefix",
            Written::CountryCode => "country_code",
            Written::National => "national",
        }
    }
}

/// A string read as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Parsed {
    pub number: NumberInfo,
    pub written: Written,
}

/// Why a string is not a valid number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberError {
    /// No digits.
    Empty,
    /// A character other than digits, a leading `+` and the visual separators `-` `.` `(` `)`
    /// and space.
    BadCharacter,
    TooLong,
    /// `+` or an international prefix followed by no known country calling code.
    UnknownCountryCode,
    /// The localization country is not in the metadata.
    UnknownCountry,
    /// Digits that are no valid number of the numbering plan.
    Invalid,
}

impl NumberError {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberError::Empty => "empty",
            NumberError::BadCharacter => "bad_character",
            NumberError::TooLong => "too_long",
            NumberError::UnknownCountryCode => "unknown_country_code",
            NumberError::UnknownCountry => "unknown_country",
            NumberError::Invalid => "invalid",
        }
    }
}

/// An emergency number as dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EmergencyCall {
    /// The number from the table (`911`).
    pub number: &'static str,
    /// The country whose table it was found in.
    pub country: Country,
    /// The test number (`933`): the call simulates an emergency call and dispatches no one.
    pub test: bool,
}

/// A dialed string, read with a connection's localization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialed {
    Emergency(EmergencyCall),
    /// A service short code of the localization country (`411`).
    ShortCode {
        number: &'static str,
        country: Country,
    },
    Number(Parsed),
    Invalid(NumberError),
}

/// Where a call goes, as the rules need it: the number (none for emergency numbers and short
/// codes, which are no E.164 numbers), its country and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Destination {
    pub e164: Option<E164>,
    /// The destination's country; for emergency numbers and short codes, the country whose
    /// table they were found in; `None` for non-geographic numbers.
    pub country: Option<Country>,
    pub kind: NumberKind,
    /// Set for emergency numbers (with whether it is the test number 933).
    pub emergency: Option<EmergencyCall>,
}

impl Destination {
    /// A destination that is a number.
    pub fn number(info: &NumberInfo) -> Destination {
        Destination { e164: Some(info.e164), country: info.country, kind: info.kind, emergency: None }
    }

    pub fn is_emergency(&self) -> bool {
        self.emergency.is_some()
    }
}

impl Dialed {
    /// The destination, unless the dialed string is no number.
    pub fn destination(&self) -> Option<Destination> {
        match *self {
            Dialed::Emergency(call) => Some(Destination {
                e164: None,
                country: Some(call.country),
                kind: NumberKind::Emergency,
                emergency: Some(call),
            }),
            Dialed::ShortCode { country, .. } => {
                Some(Destination { e164: None, country: Some(country), kind: NumberKind::ShortCode, emergency: None })
            }
            Dialed::Number(p) => Some(Destination::number(&p.number)),
            Dialed::Invalid(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Emergency numbers and short codes
// ---------------------------------------------------------------------------------------------

/// Emergency numbers per country. Recognised before any other reading of a dialed string, so
/// `112` is never taken for the start of a national number.
const EMERGENCY: &[(Country, &[&str])] = &[
    (Country::US, &["911", "933"]),
    (Country::CA, &["911", "933"]),
    // NANP territories and countries that use 911.
    (Country(*b"PR"), &["911"]),
    (Country(*b"VI"), &["911"]),
    (Country(*b"GU"), &["911"]),
    (Country(*b"AS"), &["911"]),
    (Country(*b"MP"), &["911"]),
    (Country(*b"DO"), &["911"]),
    (Country(*b"BS"), &["911", "919"]),
    (Country(*b"BM"), &["911"]),
    (Country(*b"KY"), &["911"]),
    (Country(*b"JM"), &["119", "110"]),
    (Country(*b"TT"), &["999", "990"]),
    (Country(*b"BB"), &["211", "311", "511"]),
    (Country(*b"MX"), &["911"]),
    (Country::GB, &["999", "112"]),
    (Country::IE, &["999", "112"]),
    (Country::AU, &["000", "112", "106"]),
    (Country(*b"NZ"), &["111"]),
    (Country(*b"DE"), &["112", "110"]),
    (Country(*b"FR"), &["112", "15", "17", "18", "114"]),
    (Country(*b"ES"), &["112", "091", "092", "061", "062", "080", "085"]),
    (Country(*b"IT"), &["112", "113", "115", "118"]),
    (Country(*b"PT"), &["112"]),
    (Country(*b"NL"), &["112"]),
    (Country(*b"BE"), &["112", "100", "101"]),
    (Country(*b"LU"), &["112", "113"]),
    (Country(*b"AT"), &["112", "122", "133", "144"]),
    (Country(*b"CH"), &["112", "117", "118", "144"]),
    (Country(*b"SE"), &["112"]),
    (Country(*b"NO"), &["112", "110", "113"]),
    (Country(*b"DK"), &["112"]),
    (Country(*b"FI"), &["112"]),
    (Country(*b"IS"), &["112"]),
    (Country(*b"PL"), &["112", "997", "998", "999"]),
    (Country(*b"CZ"), &["112", "150", "155", "158"]),
    (Country(*b"SK"), &["112", "150", "155", "158"]),
    (Country(*b"HU"), &["112", "104", "105", "107"]),
    (Country(*b"GR"), &["112", "100", "166", "199"]),
    (Country(*b"RU"), &["112", "101", "102", "103", "104"]),
    (Country(*b"UA"), &["112", "101", "102", "103", "104"]),
    (Country(*b"IL"), &["100", "101", "102"]),
    (Country(*b"ZA"), &["10111", "10177", "112"]),
    (Country(*b"IN"), &["112", "100", "101", "102", "108"]),
    (Country(*b"CN"), &["110", "119", "120", "122"]),
    (Country(*b"HK"), &["999", "112"]),
    (Country(*b"SG"), &["995", "999"]),
    (Country(*b"JP"), &["110", "119", "118"]),
    (Country(*b"KR"), &["112", "119"]),
    (Country(*b"PH"), &["911"]),
    (Country(*b"MY"), &["999", "112"]),
    (Country(*b"BR"), &["190", "192", "193"]),
    (Country(*b"AR"), &["911", "107", "100", "101"]),
    (Country(*b"CL"), &["131", "132", "133"]),
    (Country(*b"CO"), &["123"]),
];

/// Countries without a row: GSM (3GPP TS 22.101) makes 112 and 911 emergency numbers on every
/// network, so they are the safe guess.
const EMERGENCY_DEFAULT: &[&str] = &["112", "911"];

/// The test number of an emergency service: the call reaches a test answering point and
/// dispatches no one (product docs, Emergency Calling, "Testing").
const EMERGENCY_TEST: &[(Country, &str)] = &[(Country::US, "933"), (Country::CA, "933")];

/// Service short codes that are not emergency numbers.
const SHORT_CODES: &[(Country, &[&str])] = &[
    (Country::US, &["211", "311", "411", "511", "611", "711", "811"]),
    (Country::CA, &["211", "311", "411", "511", "611", "711", "811"]),
    (Country::GB, &["101", "111"]),
];

/// No emergency number or short code is longer.
const SHORT_NUMBER_DIGITS: usize = 6;

/// The emergency numbers of a country.
pub fn emergency_numbers(country: Country) -> &'static [&'static str] {
    EMERGENCY.iter().find(|(c, _)| *c == country).map_or(EMERGENCY_DEFAULT, |(_, list)| list)
}

/// Whether `dialed` (visual separators allowed) is an emergency number in `country`.
pub fn is_emergency(dialed: &str, country: Country) -> bool {
    emergency_call(dialed, country).is_some()
}

/// The emergency call `dialed` is in `country`, if it is one.
pub fn emergency_call(dialed: &str, country: Country) -> Option<EmergencyCall> {
    let digits = Digits::clean(dialed).ok()?;
    if digits.plus {
        return None;
    }
    emergency_digits(digits.as_bytes(), country)
}

fn emergency_digits(d: &[u8], country: Country) -> Option<EmergencyCall> {
    let number = emergency_numbers(country).iter().find(|n| n.as_bytes() == d)?;
    let test = EMERGENCY_TEST.iter().any(|(c, t)| *c == country && t.as_bytes() == d);
    Some(EmergencyCall { number, country, test })
}

fn short_code_digits(d: &[u8], country: Country) -> Option<&'static str> {
    SHORT_CODES.iter().find(|(c, _)| *c == country)?.1.iter().find(|n| n.as_bytes() == d).copied()
}

// ---------------------------------------------------------------------------------------------
// Input cleaning
// ---------------------------------------------------------------------------------------------

/// The digits of an input, with whether it began with `+`.
struct Digits {
    buf: [u8; MAX_INPUT_DIGITS],
    len: usize,
    plus: bool,
}

impl Digits {
    /// Keeps digits and one leading `+`; drops the visual separators `-` `.` `(` `)` and space;
    /// refuses anything else.
    fn clean(s: &str) -> Result<Digits, NumberError> {
        let mut buf = [0u8; MAX_INPUT_DIGITS];
        let mut len = 0;
        let mut plus = false;
        for b in s.bytes() {
            match b {
                b'0'..=b'9' => {
                    let Some(slot) = buf.get_mut(len) else { return Err(NumberError::TooLong) };
                    *slot = b;
                    len += 1;
                }
                b'+' if len == 0 && !plus => plus = true,
                b'-' | b'.' | b'(' | b')' | b' ' => {}
                _ => return Err(NumberError::BadCharacter),
            }
        }
        if len == 0 {
            return Err(NumberError::Empty);
        }
        Ok(Digits { buf, len, plus })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn as_str(d: &[u8]) -> &str {
    // Callers only pass ASCII digits.
    std::str::from_utf8(d).unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Digit automata
// ---------------------------------------------------------------------------------------------

const DEAD: u32 = u32::MAX;

/// A DFA over the ten digits, flattened out of a `regex-automata` dense DFA: a walk is one table
/// load per digit, with no locks, no caches and no allocation.
struct DigitDfa {
    /// `next[state * 10 + digit]`, or `DEAD`.
    next: Box<[u32]>,
    /// Per state, the patterns (bit per pattern) that match exactly the digits read so far.
    accept: Box<[u32]>,
}

/// What a [`DigitDfa`] answers.
#[derive(Clone, Copy)]
enum Semantics {
    /// Which patterns match a prefix of the input (the `phonenumber` crate's "a match starting
    /// at 0"): each pattern is compiled as `(?:p)[0-9]*`, so the answer is in the last state
    /// and the walk loads nothing else.
    Prefix,
    /// The regex crate's leftmost-first match of pattern 0 (where `find` ends).
    LeftmostFirst,
}

impl DigitDfa {
    /// Compiles patterns written in libphonenumber's syntax (free-spacing); pattern `i` sets bit
    /// `i` of `accept`.
    fn build(patterns: &[&str], semantics: Semantics) -> Result<DigitDfa, String> {
        if patterns.len() > 32 {
            return Err("more than 32 patterns".into());
        }
        let (kind, patterns): (MatchKind, Vec<String>) = match semantics {
            // A newline ends any free-spacing comment before the suffix.
            Semantics::Prefix => (MatchKind::All, patterns.iter().map(|p| format!("(?:{p}\n)[0-9]*")).collect()),
            Semantics::LeftmostFirst => (MatchKind::LeftmostFirst, patterns.iter().map(|p| p.to_string()).collect()),
        };
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().ignore_whitespace(true).unicode(false).utf8(false))
            .configure(dense::Config::new().start_kind(StartKind::Anchored).match_kind(kind).minimize(false))
            .build_many(&patterns)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(&start::Config::new().anchored(Anchored::Yes)).map_err(|e| e.to_string())?;
        let mut ids = std::collections::HashMap::new();
        let mut order = vec![start];
        ids.insert(start, 0u32);
        let mut next = Vec::new();
        let mut accept = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let s = order[i];
            let eoi = dfa.next_eoi_state(s);
            let mut mask = 0u32;
            if dfa.is_match_state(eoi) {
                for k in 0..dfa.match_len(eoi) {
                    mask |= 1 << dfa.match_pattern(eoi, k).as_usize();
                }
            }
            accept.push(mask);
            for b in b'0'..=b'9' {
                let n = dfa.next_state(s, b);
                if dfa.is_dead_state(n) || dfa.is_quit_state(n) {
                    next.push(DEAD);
                    continue;
                }
                let id = match ids.get(&n) {
                    Some(&id) => id,
                    None => {
                        let id = u32::try_from(order.len()).map_err(|_| "too many states")?;
                        ids.insert(n, id);
                        order.push(n);
                        id
                    }
                };
                next.push(id);
            }
            i += 1;
        }
        Ok(DigitDfa { next: next.into(), accept: accept.into() })
    }

    /// The state after `d` from `state`, or `DEAD` (also for a byte that is no digit).
    #[inline]
    fn step(&self, state: u32, d: u8) -> u32 {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return DEAD;
        }
        self.next.get(state as usize * 10 + usize::from(digit)).copied().unwrap_or(DEAD)
    }

    /// The state after all of `digits`, or `DEAD`.
    #[inline]
    fn walk(&self, digits: &[u8]) -> u32 {
        let mut state = 0;
        for &d in digits {
            state = self.step(state, d);
            if state == DEAD {
                break;
            }
        }
        state
    }

    /// For a `Prefix` DFA: the patterns that match some prefix of `digits`, the empty prefix
    /// included.
    #[inline]
    fn prefix_matches(&self, digits: &[u8]) -> u32 {
        match self.walk(digits) {
            DEAD => 0,
            s => self.accept.get(s as usize).copied().unwrap_or(0),
        }
    }

    /// For a `LeftmostFirst` DFA: whether the match the regex crate's `find` reports spans all
    /// of `digits`.
    #[inline]
    fn full_match(&self, digits: &[u8]) -> bool {
        match self.walk(digits) {
            DEAD => false,
            s => self.accept.get(s as usize).is_some_and(|a| a & 1 != 0),
        }
    }

    /// For a `LeftmostFirst` DFA: where the match the regex crate's `find` reports ends: the
    /// last match seen before the automaton dies.
    #[inline]
    fn match_end(&self, digits: &[u8]) -> Option<usize> {
        let accepts = |s: u32| self.accept.get(s as usize).is_some_and(|a| a & 1 != 0);
        let mut state = 0;
        let mut end = accepts(0).then_some(0);
        for (i, &d) in digits.iter().enumerate() {
            state = self.step(state, d);
            if state == DEAD {
                break;
            }
            if accepts(state) {
                end = Some(i + 1);
            }
        }
        end
    }

    fn never() -> DigitDfa {
        DigitDfa { next: vec![DEAD; 10].into(), accept: vec![0].into() }
    }

    fn states(&self) -> usize {
        self.accept.len()
    }
}

// ---------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------

/// Pattern slots of a region's DFA, in the order libphonenumber decides a number's type.
const GENERAL: usize = 0;
const PREMIUM_RATE: usize = 1;
const TOLL_FREE: usize = 2;
const SHARED_COST: usize = 3;
const VOIP: usize = 4;
const PERSONAL_NUMBER: usize = 5;
const PAGER: usize = 6;
const UAN: usize = 7;
const VOICEMAIL: usize = 8;
const FIXED_LINE: usize = 9;
const MOBILE: usize = 10;
const SLOTS: usize = 11;

/// Types checked in order after the general pattern, before fixed line and mobile.
const TYPE_ORDER: [(usize, NumberKind); 8] = [
    (PREMIUM_RATE, NumberKind::PremiumRate),
    (TOLL_FREE, NumberKind::TollFree),
    (SHARED_COST, NumberKind::SharedCost),
    (VOIP, NumberKind::Voip),
    (PERSONAL_NUMBER, NumberKind::PersonalNumber),
    (PAGER, NumberKind::Pager),
    (UAN, NumberKind::Uan),
    (VOICEMAIL, NumberKind::Voicemail),
];

/// One region of the metadata (a country, or a non-geographic entity `001`).
struct Region {
    country: Option<Country>,
    cc: u16,
    /// Index of the region's calling-code group.
    group: usize,
    dfa: DigitDfa,
    /// Per slot, a bit per possible length of the national number; 0: any length.
    lengths: [u32; SLOTS],
    fixed_is_mobile: bool,
    has_leading_digits: bool,
    national_prefix: Option<Box<str>>,
    national_prefix_for_parsing: Option<PrefixForParsing>,
    /// `internationalPrefix`: 011 in the NANP, 00 in most other countries.
    international_prefix: Option<DigitDfa>,
}

/// How a region's national prefix is recognised (`nationalPrefixForParsing`).
enum PrefixForParsing {
    /// Removed: the match is cut off.
    Strip(DigitDfa),
    /// Rewritten by the transform rule (in the regex crate's replacement syntax, `9${1}`) when
    /// the pattern's last group took part: captures are needed, so the regex crate does it.
    Transform(regex::Regex, Box<str>),
}

/// A national format of a main region: how its numbers are written for national dialing.
struct NationalFormat {
    /// The last (most specific) leading-digits pattern; `None`: any number.
    leading: Option<DigitDfa>,
    pattern: DigitDfa,
    write: FormatWrite,
}

enum FormatWrite {
    /// The format writes every digit in order after `prefix` (the national prefix the
    /// formatting rule adds): the common case, done without allocation.
    Prefixed(Box<str>),
    /// Groups reordered or literal digits inserted (Argentine mobiles: `$2 15-$3-$4`): a regex
    /// replacement.
    Replace { pattern: regex::Regex, format: Box<str> },
}

/// The regions that share a country calling code, in libphonenumber's order (main country
/// first), and the national formats of the main one.
struct CodeGroup {
    regions: Vec<usize>,
    /// With several regions: one pattern per region, its leading digits (bit `i`: the `i`-th
    /// region), so one walk tells which regions' leading digits match (the NANP has 25).
    leading_digits: Option<DigitDfa>,
    formats: Vec<NationalFormat>,
}

/// The numbering plans of the world, compiled from libphonenumber's metadata. Build one at
/// configuration load ([`NumberingPlan::new`], about 0.1 s in release builds) and share it;
/// every method is a cheap read.
pub struct NumberingPlan {
    regions: Vec<Region>,
    groups: Vec<CodeGroup>,
    /// Calling code -> group index + 1 (0: no such code).
    by_code: Box<[u16; 1000]>,
    /// Country -> region index + 1.
    by_country: Box<[u16; 676]>,
    warnings: Vec<String>,
}

impl fmt::Debug for NumberingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NumberingPlan")
            .field("regions", &self.regions.len())
            .field("codes", &self.groups.len())
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

impl Default for NumberingPlan {
    fn default() -> Self {
        NumberingPlan::new()
    }
}

/// Free-spacing metadata pattern, anchored at the start, for the regex crate.
fn anchored_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})")).ignore_whitespace(true).build().map_err(|e| e.to_string())
}

/// `$1` (Java replacement syntax) -> `${1}`.
fn java_replacement(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len() + 4);
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push_str("${");
            while let Some(n) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(n);
                chars.next();
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

fn length_mask(lengths: &[u16]) -> u32 {
    lengths.iter().filter(|&&l| l < 32).fold(0, |m, &l| m | (1 << l))
}

impl NumberingPlan {
    /// Compiles the metadata the `phonenumber` crate ships. Patterns that fail to compile (none
    /// do today) never match and are listed in [`NumberingPlan::warnings`].
    pub fn new() -> NumberingPlan {
        let db = &*phonenumber::metadata::DATABASE;
        let mut plan = NumberingPlan {
            regions: Vec::new(),
            groups: Vec::new(),
            by_code: Box::new([0; 1000]),
            by_country: Box::new([0; 676]),
            warnings: Vec::new(),
        };
        for code in 1..1000u16 {
            let Some(metas) = db.by_code(&code) else { continue };
            if metas.is_empty() {
                continue;
            }
            let group = plan.groups.len();
            let mut regions = Vec::with_capacity(metas.len());
            for meta in &metas {
                let region = plan.region(meta, group);
                if let Some(c) = region.country {
                    plan.by_country[c.index()] = (plan.regions.len() + 1) as u16;
                }
                regions.push(plan.regions.len());
                plan.regions.push(region);
            }
            let formats = plan.formats(metas[0]);
            let leading_digits = (metas.len() > 1).then(|| {
                const NEVER: &str = "[^0-9][0-9]";
                let patterns: Vec<&str> =
                    metas.iter().map(|m| m.leading_digits().map_or(NEVER, |r| r.as_str())).collect();
                DigitDfa::build(&patterns, Semantics::Prefix).unwrap_or_else(|e| {
                    plan.warnings.push(format!("+{code} leading digits: {e}"));
                    DigitDfa::never()
                })
            });
            plan.groups.push(CodeGroup { regions, leading_digits, formats });
            plan.by_code[usize::from(code)] = (group + 1) as u16;
        }
        plan
    }

    fn region(&mut self, meta: &phonenumber::Metadata, group: usize) -> Region {
        let d = meta.descriptors();
        let mut slots: [Option<&phonenumber::metadata::Descriptor>; SLOTS] = [None; SLOTS];
        slots[GENERAL] = Some(d.general());
        slots[PREMIUM_RATE] = d.premium_rate();
        slots[TOLL_FREE] = d.toll_free();
        slots[SHARED_COST] = d.shared_cost();
        slots[VOIP] = d.voip();
        slots[PERSONAL_NUMBER] = d.personal_number();
        slots[PAGER] = d.pager();
        slots[UAN] = d.uan();
        slots[VOICEMAIL] = d.voicemail();
        slots[FIXED_LINE] = d.fixed_line();
        slots[MOBILE] = d.mobile();

        // Absent slots get a pattern that never matches, so pattern index == slot.
        const NEVER: &str = "[^0-9][0-9]";
        let patterns: Vec<&str> = slots.iter().map(|s| s.map_or(NEVER, |d| d.national_number().as_str())).collect();
        let mut lengths = [0u32; SLOTS];
        for (i, s) in slots.iter().enumerate() {
            lengths[i] = s.map_or(0, |d| length_mask(d.possible_length()));
        }
        let dfa = match DigitDfa::build(&patterns, Semantics::Prefix) {
            Ok(dfa) => dfa,
            Err(e) => {
                self.warnings.push(format!("{}: {e}", meta.id()));
                DigitDfa::never()
            }
        };
        let mut prefix_dfa = |what: &str, p: Option<&str>| -> Option<DigitDfa> {
            match DigitDfa::build(&[p?], Semantics::LeftmostFirst) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.warnings.push(format!("{} {what}: {e}", meta.id()));
                    None
                }
            }
        };
        let npfp = meta.national_prefix_for_parsing().map(|r| r.as_str());
        let transform = meta.national_prefix_transform_rule().filter(|r| !r.is_empty());
        let international_prefix = prefix_dfa("international prefix", meta.international_prefix().map(|r| r.as_str()));
        let national_prefix_for_parsing = match (npfp, transform) {
            (None, _) => None,
            (Some(p), None) => prefix_dfa("national prefix for parsing", Some(p)).map(PrefixForParsing::Strip),
            (Some(p), Some(rule)) => match anchored_regex(p) {
                Ok(re) => Some(PrefixForParsing::Transform(re, java_replacement(rule).into())),
                Err(e) => {
                    self.warnings.push(format!("{} national prefix for parsing: {e}", meta.id()));
                    None
                }
            },
        };
        Region {
            country: Country::parse(meta.id()),
            cc: meta.country_code(),
            group,
            dfa,
            lengths,
            fixed_is_mobile: d.fixed_line().map(|f| f.national_number().as_str())
                == d.mobile().map(|m| m.national_number().as_str())
                && d.fixed_line().is_some(),
            has_leading_digits: meta.leading_digits().is_some(),
            national_prefix: meta.national_prefix().filter(|p| !p.is_empty()).map(Into::into),
            national_prefix_for_parsing,
            international_prefix,
        }
    }

    fn formats(&mut self, meta: &phonenumber::Metadata) -> Vec<NationalFormat> {
        let np = meta.national_prefix().unwrap_or("");
        let mut out = Vec::new();
        for f in meta.formats() {
            let leading = match f.leading_digits().last() {
                None => None,
                Some(r) => match DigitDfa::build(&[r.as_str()], Semantics::Prefix) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.warnings.push(format!("{} format leading digits: {e}", meta.id()));
                        continue;
                    }
                },
            };
            let pattern = match DigitDfa::build(&[f.pattern().as_str()], Semantics::LeftmostFirst) {
                Ok(d) => d,
                Err(e) => {
                    self.warnings.push(format!("{} format pattern: {e}", meta.id()));
                    continue;
                }
            };
            // libphonenumber: the national prefix formatting rule replaces the first group of
            // the format, with $NP the national prefix and $FG that group.
            let format = f.format();
            let first = format
                .find('$')
                .and_then(|i| format.get(i..i + 2))
                .filter(|t| t.as_bytes().get(1).is_some_and(u8::is_ascii_digit));
            let written = match (f.national_prefix(), first) {
                (Some(rule), Some(first)) => {
                    let rule = rule.replace("$NP", np).replace("$FG", first);
                    format.replacen(first, &rule, 1)
                }
                _ => format.to_string(),
            };
            let write = match simple_prefix(&written, capture_groups(f.pattern().as_str())) {
                Some(prefix) => FormatWrite::Prefixed(prefix.into()),
                None => match anchored_regex(f.pattern().as_str()) {
                    Ok(pattern) => FormatWrite::Replace { pattern, format: java_replacement(&written).into() },
                    Err(e) => {
                        self.warnings.push(format!("{} format: {e}", meta.id()));
                        continue;
                    }
                },
            };
            out.push(NationalFormat { leading, pattern, write });
        }
        out
    }

    /// Metadata that did not compile (empty in a healthy build; a test asserts it).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Total states of the compiled automata (a size figure for the operator).
    pub fn automaton_states(&self) -> usize {
        self.regions.iter().map(|r| r.dfa.states()).sum::<usize>()
            + self
                .groups
                .iter()
                .flat_map(|g| &g.formats)
                .map(|f| f.pattern.states() + f.leading.as_ref().map_or(0, DigitDfa::states))
                .sum::<usize>()
    }

    /// Whether the metadata knows this country (a localization must be one).
    pub fn knows(&self, country: Country) -> bool {
        self.by_country[country.index()] != 0
    }

    /// The country calling code of a country (`US` -> 1, `IE` -> 353).
    pub fn country_code(&self, country: Country) -> Option<u16> {
        self.region_of(country).map(|r| r.cc)
    }

    fn region_of(&self, country: Country) -> Option<&Region> {
        match self.by_country[country.index()] {
            0 => None,
            i => self.regions.get(usize::from(i) - 1),
        }
    }

    fn group_of(&self, cc: u16) -> Option<&CodeGroup> {
        match self.by_code.get(usize::from(cc)).copied().unwrap_or(0) {
            0 => None,
            i => self.groups.get(usize::from(i) - 1),
        }
    }

    // ---- classification ----

    fn kind_in(&self, region: &Region, mask: u32, len: usize) -> NumberKind {
        let matches = |slot: usize| {
            mask & (1 << slot) != 0 && (region.lengths[slot] == 0 || region.lengths[slot] & (1 << len) != 0)
        };
        if !matches(GENERAL) {
            return NumberKind::Unknown;
        }
        for (slot, kind) in TYPE_ORDER {
            if matches(slot) {
                return kind;
            }
        }
        if matches(FIXED_LINE) {
            return if region.fixed_is_mobile || matches(MOBILE) {
                NumberKind::FixedLineOrMobile
            } else {
                NumberKind::FixedLine
            };
        }
        if matches(MOBILE) {
            return NumberKind::Mobile;
        }
        NumberKind::Unknown
    }

    /// The region and kind of a national number under a calling code; `None` when invalid.
    /// libphonenumber's region choice: a sole region takes every number; among several, the
    /// first whose leading digits match, or, for regions without leading digits, the first
    /// that gives the number a known type.
    fn classify(&self, group: &CodeGroup, nsn: &[u8]) -> Option<(&Region, NumberKind)> {
        if !(MIN_NSN_DIGITS..=MAX_NSN_DIGITS).contains(&nsn.len()) {
            return None;
        }
        if let [only] = group.regions[..] {
            let region = &self.regions[only];
            let kind = self.kind_in(region, region.dfa.prefix_matches(nsn), nsn.len());
            return (kind != NumberKind::Unknown).then_some((region, kind));
        }
        // The leading-digits walk only when a region that has them comes up (not for US numbers).
        let mut leading = None;
        for (bit, &i) in group.regions.iter().enumerate() {
            let region = &self.regions[i];
            if region.has_leading_digits {
                let leading =
                    *leading.get_or_insert_with(|| group.leading_digits.as_ref().map_or(0, |d| d.prefix_matches(nsn)));
                if leading & (1 << bit) != 0 {
                    let kind = self.kind_in(region, region.dfa.prefix_matches(nsn), nsn.len());
                    return (kind != NumberKind::Unknown).then_some((region, kind));
                }
            } else {
                let kind = self.kind_in(region, region.dfa.prefix_matches(nsn), nsn.len());
                if kind != NumberKind::Unknown {
                    return Some((region, kind));
                }
            }
        }
        None
    }

    fn info(&self, group: &CodeGroup, nsn: &[u8]) -> Option<NumberInfo> {
        let (region, kind) = self.classify(group, nsn)?;
        Some(NumberInfo { e164: E164::new(region.cc, nsn), country: region.country, kind })
    }

    /// What the plan knows of a valid number.
    pub fn number_info(&self, number: &E164) -> NumberInfo {
        self.group_of(number.country_code())
            .and_then(|g| self.info(g, number.national_number().as_bytes()))
            .unwrap_or(NumberInfo { e164: *number, country: None, kind: NumberKind::Unknown })
    }

    /// The country of a number: for `+1`, US, CA or the Caribbean country its area code
    /// belongs to. `None` for non-geographic numbers.
    pub fn country_of(&self, number: &E164) -> Option<Country> {
        self.number_info(number).country
    }

    /// The kind of a number.
    pub fn kind_of(&self, number: &E164) -> NumberKind {
        self.number_info(number).kind
    }

    // ---- reading strings ----

    /// Reads `+` then a country code then a national number: E.164 and nothing else (visual
    /// separators allowed).
    pub fn e164(&self, input: &str) -> Option<NumberInfo> {
        let d = Digits::clean(input).ok()?;
        if !d.plus {
            return None;
        }
        self.international(d.as_bytes()).ok()
    }

    /// Reads a caller number or a dialed number as a connection with `localization` would:
    /// `+E.164`; the localization's international prefix (`011` in the NANP, `00` in most
    /// other countries) then a country code; a national number with or without the national
    /// prefix (`3129457420`, `13129457420`; `01 840 1234` in Ireland); or E.164 digits without
    /// the `+`. Visual separators are ignored. Only valid numbers are returned.
    pub fn parse(&self, input: &str, localization: Country) -> Result<Parsed, NumberError> {
        let d = Digits::clean(input)?;
        self.parse_digits(&d, localization)
    }

    fn parse_digits(&self, d: &Digits, localization: Country) -> Result<Parsed, NumberError> {
        let digits = d.as_bytes();
        if d.plus {
            return self.international(digits).map(|number| Parsed { number, written: Written::Plus });
        }
        let region = self.region_of(localization).ok_or(NumberError::UnknownCountry)?;
        if let Some(idd) = &region.international_prefix
            && let Some(end) = idd.match_end(digits)
            && digits.get(end).is_some_and(|&b| b != b'0')
        {
            // libphonenumber: no country code starts with 0, so `00 0...` is no international
            // prefix.
            return self
                .international(&digits[end..])
                .map(|number| Parsed { number, written: Written::InternationalPrefix });
        }
        if digits.len() > MAX_NSN_DIGITS + 3 {
            return Err(NumberError::TooLong);
        }
        let group = &self.groups[region.group];
        if let Some(number) = self.without_national_prefix(region, digits, |nsn| self.info(group, nsn)) {
            return Ok(Parsed { number, written: Written::National });
        }
        if let Some(number) = self.info(group, digits) {
            return Ok(Parsed { number, written: Written::National });
        }
        let mut cc = [0u8; 5];
        let cc = region_code_digits(region.cc, &mut cc);
        if let Some(rest) = digits.strip_prefix(cc)
            && let Some(number) = self.info(group, rest)
        {
            return Ok(Parsed { number, written: Written::CountryCode });
        }
        Err(NumberError::Invalid)
    }

    /// The number with the region's national prefix removed (or transformed, for the regions
    /// whose rule rewrites it), if the region has one, it is present and the rest is valid.
    fn without_national_prefix(
        &self,
        region: &Region,
        digits: &[u8],
        valid: impl Fn(&[u8]) -> Option<NumberInfo>,
    ) -> Option<NumberInfo> {
        match &region.national_prefix_for_parsing {
            None => {
                let np = region.national_prefix.as_deref()?;
                valid(digits.strip_prefix(np.as_bytes())?)
            }
            Some(PrefixForParsing::Strip(dfa)) => match dfa.match_end(digits)? {
                0 => None,
                end => valid(&digits[end..]),
            },
            Some(PrefixForParsing::Transform(re, rule)) => {
                let text = as_str(digits);
                let caps = re.captures(text)?;
                let whole = caps.get(0)?;
                // libphonenumber's `group(groupCount())`: the last group, or the whole match.
                if caps.get(caps.len() - 1).is_none() {
                    return if whole.end() == 0 { None } else { valid(&digits[whole.end()..]) };
                }
                // Rare (Caribbean 7-digit local numbers, Argentina, Brazil, ...): the rewrite
                // allocates.
                let mut out = String::with_capacity(24);
                caps.expand(rule, &mut out);
                out.push_str(&text[whole.end()..]);
                if !out.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                valid(out.as_bytes())
            }
        }
    }

    /// Country code then national number (after `+` or an international prefix).
    fn international(&self, digits: &[u8]) -> Result<NumberInfo, NumberError> {
        if digits.first() == Some(&b'0') {
            return Err(NumberError::UnknownCountryCode);
        }
        let mut cc = 0u16;
        for (len, &d) in digits.iter().enumerate().take(3) {
            cc = cc * 10 + u16::from(d - b'0');
            if let Some(group) = self.group_of(cc) {
                let nsn = &digits[len + 1..];
                if nsn.len() > MAX_NSN_DIGITS {
                    return Err(NumberError::TooLong);
                }
                // Strictly the national number: `+44 (0)20 ...` is no E.164 number.
                return self.info(group, nsn).ok_or(NumberError::Invalid);
            }
        }
        Err(NumberError::UnknownCountryCode)
    }

    /// Reads a dialed string with a connection's localization. Emergency numbers and short
    /// codes of the localization country come first, before any other reading, so `112` or
    /// `999` is never taken for part of a national number. Without a localization the US
    /// rules apply, then the GB rules (the API contract: "Telnyx will try US and GB dialing
    /// rules, in that order").
    pub fn dial(&self, dialed: &str, localization: impl Into<Option<Country>>) -> Dialed {
        let localization = localization.into();
        let d = match Digits::clean(dialed) {
            Ok(d) => d,
            Err(e) => return Dialed::Invalid(e),
        };
        let countries: &[Country] = match &localization {
            Some(c) => std::slice::from_ref(c),
            None => &[Country::US, Country::GB],
        };
        if !d.plus && d.len <= SHORT_NUMBER_DIGITS {
            for &c in countries {
                if let Some(call) = emergency_digits(d.as_bytes(), c) {
                    return Dialed::Emergency(call);
                }
            }
            for &c in countries {
                if let Some(number) = short_code_digits(d.as_bytes(), c) {
                    return Dialed::ShortCode { number, country: c };
                }
            }
        }
        let mut error = NumberError::Invalid;
        for &c in countries {
            match self.parse_digits(&d, c) {
                Ok(p) => return Dialed::Number(p),
                Err(e) => error = e,
            }
        }
        Dialed::Invalid(error)
    }

    /// The destination of a dialed string ([`NumberingPlan::dial`]); `None` when it is no
    /// number (`404 Invalid Destination`).
    pub fn classify_dialed(&self, dialed: &str, localization: impl Into<Option<Country>>) -> Option<Destination> {
        self.dial(dialed, localization).destination()
    }

    /// Whether `dialed` is an emergency number in `country` (see [`is_emergency`]).
    pub fn is_emergency(&self, dialed: &str, country: Country) -> bool {
        is_emergency(dialed, country)
    }

    // ---- writing numbers ----

    /// The number as dialed nationally, digits only: the national prefix where the country's
    /// national format writes one (`02079460000` for `+44 20 7946 0000`, `018401234` for
    /// `+353 1 840 1234`), none in the NANP (`3129457420`).
    pub fn national_format(&self, number: &E164) -> NumberText {
        let nsn = number.national_number().as_bytes();
        let mut out = NumberText::empty();
        let Some(group) = self.group_of(number.country_code()) else {
            out.push(nsn);
            return out;
        };
        for f in &group.formats {
            // The crate's quirk, kept: a format without leading digits is taken for any number.
            let chosen = match &f.leading {
                None => true,
                Some(l) => l.prefix_matches(nsn) & 1 != 0 && f.pattern.full_match(nsn),
            };
            if !chosen {
                continue;
            }
            if !f.pattern.full_match(nsn) {
                break;
            }
            match &f.write {
                FormatWrite::Prefixed(prefix) => {
                    out.push(prefix.as_bytes());
                    out.push(nsn);
                }
                FormatWrite::Replace { pattern, format } => {
                    let text = pattern.replace(as_str(nsn), &**format);
                    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
                    out.push(&digits);
                }
            }
            return out;
        }
        out.push(nsn);
        out
    }
}

/// The digits a format writes before the number, when it writes all its pattern's `groups` in
/// order and no other digit (every format pattern is a sequence of groups): `(0$1) $2` gives
/// `0`; `$1 $2` gives ``.
fn simple_prefix(written: &str, groups: usize) -> Option<String> {
    let first = written.find('$')?;
    let prefix: String = written[..first].chars().filter(char::is_ascii_digit).collect();
    let mut expect = b'1';
    let bytes = written.as_bytes();
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'$' => {
                if bytes.get(i + 1) != Some(&expect) {
                    return None;
                }
                expect += 1;
                i += 2;
            }
            b if b.is_ascii_digit() => return None,
            _ => i += 1,
        }
    }
    (usize::from(expect - b'1') == groups).then_some(prefix)
}

/// Capture groups of a pattern: `(` not escaped and not followed by `?`.
fn capture_groups(pattern: &str) -> usize {
    let b = pattern.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'(' if b.get(i + 1) != Some(&b'?') => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

fn region_code_digits(cc: u16, buf: &mut [u8; 5]) -> &[u8] {
    let e = E164::new(cc, &[]);
    let s = e.country_code_str().as_bytes();
    buf[..s.len()].copy_from_slice(s);
    &buf[..s.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_parses_two_letters_in_any_case() {
        assert_eq!(Country::parse("us"), Some(Country::US));
        assert_eq!(Country::parse("IE").unwrap().as_str(), "IE");
        assert_eq!(Country::parse("USA"), None);
        assert_eq!(Country::parse("1A"), None);
        assert_eq!(Country::parse("ÄB"), None);
        assert_eq!(Country::parse("ie").unwrap().as_static_str(), "IE");
        assert_eq!(Country::parse("ZZ").unwrap().as_static_str(), "ZZ");
    }

    #[test]
    fn e164_parts() {
        let e = E164::new(353, b"18401234");
        assert_eq!(e.as_str(), "+35318401234");
        assert_eq!(e.digits(), "35318401234");
        assert_eq!(e.country_code(), 353);
        assert_eq!(e.national_number(), "18401234");
        assert_eq!(E164::new(1, b"3129457420").country_code_str(), "1");
    }

    #[test]
    fn java_replacements_become_braced() {
        assert_eq!(java_replacement("9$1"), "9${1}");
        assert_eq!(java_replacement("$2"), "${2}");
        assert_eq!(java_replacement("$2 15-$3-$4"), "${2} 15-${3}-${4}");
    }

    #[test]
    fn capture_groups_are_counted() {
        assert_eq!(capture_groups(r"(\d{3})(\d{3})(\d{4})"), 3);
        assert_eq!(capture_groups(r"(?:1|2)(\d)\(x\)"), 1);
    }

    #[test]
    fn simple_formats_reduce_to_a_prefix() {
        assert_eq!(simple_prefix("($1) $2-$3", 3).as_deref(), Some(""));
        assert_eq!(simple_prefix("(0$1) $2", 2).as_deref(), Some("0"));
        assert_eq!(simple_prefix("8 ($1) $2", 2), Some("8".to_string()));
        assert_eq!(simple_prefix("$1 $2", 3), None);
        assert_eq!(simple_prefix("$2 15-$3-$4", 4), None);
        assert_eq!(simple_prefix("$1 15 $2", 2), None);
    }
}
