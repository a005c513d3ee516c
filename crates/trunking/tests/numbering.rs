//! The numbering plan: table rows for reading numbers, countries, kinds, national formats and
//! emergency numbers, and property tests that the fast path agrees with the `phonenumber` crate
//! (whose metadata it is compiled from) and never panics.

use std::sync::LazyLock;

use phonenumber::metadata::DATABASE;
use phonenumber::{Metadata, Mode, Type};
use proptest::prelude::*;
use trunking::numbering::{
    Country, Dialed, E164, NumberError, NumberKind, NumberingPlan, Written, emergency_call, emergency_numbers,
    is_emergency,
};

static PLAN: LazyLock<NumberingPlan> = LazyLock::new(NumberingPlan::new);

fn c(s: &str) -> Country {
    Country::parse(s).unwrap()
}

fn e164(s: &str) -> E164 {
    PLAN.e164(s).unwrap_or_else(|| panic!("{s} is a valid E.164 number")).e164
}

#[test]
fn the_metadata_compiles_completely() {
    assert!(PLAN.warnings().is_empty(), "{:?}", PLAN.warnings());
    assert!(PLAN.knows(Country::US) && PLAN.knows(c("IE")) && PLAN.knows(c("JM")));
    assert!(!PLAN.knows(c("XX")));
    assert_eq!(PLAN.country_code(Country::US), Some(1));
    assert_eq!(PLAN.country_code(c("IE")), Some(353));
}

// ---- reading numbers ------------------------------------------------------------------------

/// input, localization, expected E.164 or error, how it was written
type ParseRow = (&'static str, &'static str, Result<&'static str, NumberError>, Option<Written>);

const PARSE: &[ParseRow] = &[
    // Caller ID Policy, USA localization: national, 11-digit and E.164 formats.
    ("3129457420", "US", Ok("+13129457420"), Some(Written::National)),
    ("13129457420", "US", Ok("+13129457420"), Some(Written::National)),
    ("+13129457420", "US", Ok("+13129457420"), Some(Written::Plus)),
    // Visual separators are ignored.
    ("(312) 945-7420", "US", Ok("+13129457420"), Some(Written::National)),
    ("1.312.945.7420", "US", Ok("+13129457420"), Some(Written::National)),
    ("+1 (312) 945-7420", "US", Ok("+13129457420"), Some(Written::Plus)),
    // International prefix of the NANP.
    ("011 44 20 7946 0000", "US", Ok("+442079460000"), Some(Written::InternationalPrefix)),
    ("011353 1 840 1234", "US", Ok("+35318401234"), Some(Written::InternationalPrefix)),
    // Ireland localization: country-specific (national prefix) and E.164 formats.
    ("01-840-1234", "IE", Ok("+35318401234"), Some(Written::National)),
    ("+353-1-840-1234", "IE", Ok("+35318401234"), Some(Written::Plus)),
    ("00 1 312 945 7420", "IE", Ok("+13129457420"), Some(Written::InternationalPrefix)),
    ("35318401234", "IE", Ok("+35318401234"), Some(Written::CountryCode)),
    // A subscriber number without its area code cannot be made E.164.
    ("840-1234", "IE", Err(NumberError::Invalid), None),
    // Other countries: national prefix 0, international prefix 00.
    ("020 7946 0000", "GB", Ok("+442079460000"), Some(Written::National)),
    ("07400 123456", "GB", Ok("+447400123456"), Some(Written::National)),
    // A national prefix after the country code is no E.164.
    ("+44 (0)20 7946 0000", "US", Err(NumberError::Invalid), None),
    ("(02) 9123 4567", "AU", Ok("+61291234567"), Some(Written::National)),
    ("0011 1 312 945 7420", "AU", Ok("+13129457420"), Some(Written::InternationalPrefix)),
    ("030 123456", "DE", Ok("+4930123456"), Some(Written::National)),
    ("02 3661 8300", "IT", Ok("+390236618300"), Some(Written::National)),
    ("8 800 555 3535", "RU", Ok("+78005553535"), Some(Written::National)),
    ("+7 800 555 3535", "US", Ok("+78005553535"), Some(Written::Plus)),
    // A Canadian number dialed nationally from a US connection: one numbering plan.
    ("416 555 1234", "US", Ok("+14165551234"), Some(Written::National)),
    // Errors.
    ("", "US", Err(NumberError::Empty), None),
    ("  -() ", "US", Err(NumberError::Empty), None),
    ("312945742O", "US", Err(NumberError::BadCharacter), None),
    ("sip:3129457420", "US", Err(NumberError::BadCharacter), None),
    ("3129457420;npdi", "US", Err(NumberError::BadCharacter), None),
    ("31+29457420", "US", Err(NumberError::BadCharacter), None),
    ("312945742", "US", Err(NumberError::Invalid), None),
    ("1312945742", "US", Err(NumberError::Invalid), None),
    ("1234567890", "US", Err(NumberError::Invalid), None),
    ("+0123456789", "US", Err(NumberError::UnknownCountryCode), None),
    ("+999 123456789", "US", Err(NumberError::UnknownCountryCode), None),
    ("+1 312 945 742", "US", Err(NumberError::Invalid), None),
    ("1234567890123456789012345", "US", Err(NumberError::TooLong), None),
    ("3129457420", "XX", Err(NumberError::UnknownCountry), None),
];

#[test]
fn parse_table() {
    for &(input, loc, want, written) in PARSE {
        let got = PLAN.parse(input, c(loc));
        match (got, want) {
            (Ok(p), Ok(w)) => {
                assert_eq!(p.number.e164.as_str(), w, "{input:?} in {loc}");
                assert_eq!(Some(p.written), written, "{input:?} in {loc}");
            }
            (Err(e), Err(w)) => assert_eq!(e, w, "{input:?} in {loc}"),
            (got, want) => panic!("{input:?} in {loc}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn e164_reads_only_plus_numbers() {
    assert_eq!(PLAN.e164("+13129457420").unwrap().e164.as_str(), "+13129457420");
    assert_eq!(PLAN.e164("+1-312-945-7420").unwrap().e164.digits(), "13129457420");
    assert!(PLAN.e164("13129457420").is_none());
    assert!(PLAN.e164("+1312945742").is_none());
    let e = e164("+35318401234");
    assert_eq!((e.country_code(), e.national_number()), (353, "18401234"));
}

// ---- countries and kinds --------------------------------------------------------------------

/// (E.164, country, kind)
const INFO: &[(&str, Option<&str>, NumberKind)] = &[
    ("+13129457420", Some("US"), NumberKind::FixedLineOrMobile),
    ("+14165551234", Some("CA"), NumberKind::FixedLineOrMobile),
    ("+16135550123", Some("CA"), NumberKind::FixedLineOrMobile),
    ("+18765551234", Some("JM"), NumberKind::Mobile),
    ("+17875551234", Some("PR"), NumberKind::FixedLineOrMobile),
    ("+12464123456", Some("BB"), NumberKind::FixedLine),
    ("+12462501234", Some("BB"), NumberKind::Mobile),
    ("+18002345678", Some("US"), NumberKind::TollFree),
    ("+18882345678", Some("US"), NumberKind::TollFree),
    ("+19002345678", Some("US"), NumberKind::PremiumRate),
    ("+442079460000", Some("GB"), NumberKind::FixedLine),
    ("+447400123456", Some("GB"), NumberKind::Mobile),
    ("+448001234567", Some("GB"), NumberKind::TollFree),
    ("+449012345678", Some("GB"), NumberKind::PremiumRate),
    ("+441534456789", Some("JE"), NumberKind::FixedLine),
    ("+35318401234", Some("IE"), NumberKind::FixedLine),
    ("+353871234567", Some("IE"), NumberKind::Mobile),
    ("+3531800123456", Some("IE"), NumberKind::TollFree),
    ("+61291234567", Some("AU"), NumberKind::FixedLine),
    ("+390236618300", Some("IT"), NumberKind::FixedLine),
    ("+390669812345", Some("VA"), NumberKind::FixedLine),
    ("+78005553535", Some("RU"), NumberKind::TollFree),
    ("+77012345678", Some("KZ"), NumberKind::Mobile),
    ("+80012345678", None, NumberKind::TollFree),
];

#[test]
fn country_and_kind_table() {
    for &(number, country, kind) in INFO {
        let info = PLAN.e164(number).unwrap_or_else(|| panic!("{number} valid"));
        assert_eq!(info.country, country.map(c), "{number}");
        assert_eq!(info.kind, kind, "{number}");
        assert_eq!(PLAN.country_of(&info.e164), info.country, "{number}");
        assert_eq!(PLAN.kind_of(&info.e164), kind, "{number}");
    }
}

// ---- national formats -----------------------------------------------------------------------

const NATIONAL: &[(&str, &str)] = &[
    ("+13129457420", "3129457420"),
    ("+14165551234", "4165551234"),
    ("+442079460000", "02079460000"),
    ("+35318401234", "018401234"),
    ("+61291234567", "0291234567"),
    ("+390236618300", "0236618300"),
    ("+4930123456", "030123456"),
    ("+78005553535", "88005553535"),
];

#[test]
fn national_format_table() {
    for &(number, national) in NATIONAL {
        assert_eq!(PLAN.national_format(&e164(number)).as_str(), national, "{number}");
    }
}

// ---- emergency numbers and dialing ------------------------------------------------------------

/// (dialed, country, emergency?, test number?)
const EMERGENCY: &[(&str, &str, bool, bool)] = &[
    ("911", "US", true, false),
    ("933", "US", true, true),
    ("9-1-1", "US", true, false),
    ("911", "CA", true, false),
    ("933", "CA", true, true),
    ("112", "US", false, false),
    ("999", "US", false, false),
    ("+1911", "US", false, false),
    ("9111", "US", false, false),
    ("999", "GB", true, false),
    ("112", "GB", true, false),
    ("911", "GB", false, false),
    ("933", "GB", false, false),
    ("999", "IE", true, false),
    ("112", "IE", true, false),
    ("000", "AU", true, false),
    ("112", "AU", true, false),
    ("111", "NZ", true, false),
    ("112", "DE", true, false),
    ("110", "DE", true, false),
    ("17", "FR", true, false),
    ("911", "MX", true, false),
    ("190", "BR", true, false),
    // No row: GSM's 112 and 911.
    ("112", "KE", true, false),
    ("911", "KE", true, false),
    ("999", "KE", false, false),
];

#[test]
fn emergency_table() {
    for &(dialed, country, emergency, test) in EMERGENCY {
        assert_eq!(is_emergency(dialed, c(country)), emergency, "{dialed} in {country}");
        assert_eq!(PLAN.is_emergency(dialed, c(country)), emergency, "{dialed} in {country}");
        assert_eq!(emergency_call(dialed, c(country)).is_some_and(|e| e.test), test, "{dialed} in {country}");
    }
    assert_eq!(emergency_numbers(Country::US), ["911", "933"]);
    assert_eq!(emergency_numbers(c("KE")), ["112", "911"]);
}

#[test]
fn dialing_recognises_emergency_numbers_first() {
    match PLAN.dial("911", Some(Country::US)) {
        Dialed::Emergency(call) => assert_eq!((call.number, call.country, call.test), ("911", Country::US, false)),
        other => panic!("{other:?}"),
    }
    match PLAN.dial("933", Some(Country::US)) {
        Dialed::Emergency(call) => assert!(call.test),
        other => panic!("{other:?}"),
    }
    // `112` is an emergency number in GB before it could be anything else.
    assert!(matches!(PLAN.dial("112", Some(Country::GB)), Dialed::Emergency(_)));
    // No localization: US rules, then GB rules (API contract).
    assert!(matches!(PLAN.dial("911", None), Dialed::Emergency(EmergencyCallIs { country: Country::US, .. })));
    match PLAN.dial("020 7946 0000", None) {
        Dialed::Number(p) => assert_eq!(p.number.e164.as_str(), "+442079460000"),
        other => panic!("{other:?}"),
    }
    match PLAN.dial("3129457420", None) {
        Dialed::Number(p) => assert_eq!(p.number.country, Some(Country::US)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(PLAN.dial("411", Some(Country::US)), Dialed::ShortCode { number: "411", .. }));
    assert_eq!(PLAN.dial("12", Some(Country::US)), Dialed::Invalid(NumberError::Invalid));
    assert_eq!(PLAN.dial("abc", Some(Country::US)), Dialed::Invalid(NumberError::BadCharacter));
}

use trunking::numbering::EmergencyCall as EmergencyCallIs;

// ---- agreement with the phonenumber crate -----------------------------------------------------

/// libphonenumber's number type, computed with the `phonenumber` crate's own matcher
/// (`Descriptor::is_match`) on the full national number.
fn oracle_type(meta: &Metadata, nsn: &str) -> Type {
    let d = meta.descriptors();
    let is = |desc: Option<&phonenumber::metadata::Descriptor>| desc.is_some_and(|x| x.is_match(nsn));
    if !d.general().is_match(nsn) {
        return Type::Unknown;
    }
    for (desc, ty) in [
        (d.premium_rate(), Type::PremiumRate),
        (d.toll_free(), Type::TollFree),
        (d.shared_cost(), Type::SharedCost),
        (d.voip(), Type::Voip),
        (d.personal_number(), Type::PersonalNumber),
        (d.pager(), Type::Pager),
        (d.uan(), Type::Uan),
        (d.voicemail(), Type::Voicemail),
    ] {
        if is(desc) {
            return ty;
        }
    }
    if is(d.fixed_line()) {
        let same =
            d.fixed_line().map(|f| f.national_number().as_str()) == d.mobile().map(|m| m.national_number().as_str());
        return if same || is(d.mobile()) { Type::FixedLineOrMobile } else { Type::FixedLine };
    }
    if is(d.mobile()) { Type::Mobile } else { Type::Unknown }
}

/// The crate's region choice (`validator::source_for`) on the full national number.
fn oracle_region(cc: u16, nsn: &str) -> Option<&'static Metadata> {
    let metas = DATABASE.by_code(&cc)?;
    if metas.len() == 1 {
        return Some(metas[0]);
    }
    for meta in metas {
        match meta.leading_digits() {
            Some(ld) => {
                if ld.find(nsn).is_some_and(|m| m.start() == 0) {
                    return Some(meta);
                }
            }
            None => {
                if oracle_type(meta, nsn) != Type::Unknown {
                    return Some(meta);
                }
            }
        }
    }
    None
}

/// Valid, region and type of `+digits` by the oracle.
fn oracle(digits: &str) -> Option<(Option<String>, Type)> {
    if digits.starts_with('0') {
        return None;
    }
    for len in 1..=3.min(digits.len()) {
        let cc: u16 = digits[..len].parse().ok()?;
        if DATABASE.by_code(&cc).is_some() {
            let nsn = &digits[len..];
            if !(2..=17).contains(&nsn.len()) {
                return None;
            }
            let meta = oracle_region(cc, nsn)?;
            let ty = oracle_type(meta, nsn);
            let id = (meta.id() != "001").then(|| meta.id().to_string());
            return (ty != Type::Unknown).then_some((id, ty));
        }
    }
    None
}

fn kind_of_type(t: Type) -> NumberKind {
    match t {
        Type::FixedLine => NumberKind::FixedLine,
        Type::Mobile => NumberKind::Mobile,
        Type::FixedLineOrMobile => NumberKind::FixedLineOrMobile,
        Type::TollFree => NumberKind::TollFree,
        Type::PremiumRate => NumberKind::PremiumRate,
        Type::SharedCost => NumberKind::SharedCost,
        Type::PersonalNumber => NumberKind::PersonalNumber,
        Type::Voip => NumberKind::Voip,
        Type::Pager => NumberKind::Pager,
        Type::Uan => NumberKind::Uan,
        Type::Voicemail => NumberKind::Voicemail,
        _ => NumberKind::Unknown,
    }
}

/// The fast path's verdict on `+digits` equals the oracle's; and equals `phonenumber::parse`,
/// `is_valid`, `number_type` and `country().id()` whenever the crate read the same national
/// number (it strips a national prefix from some `+` numbers) without leading zeros (its
/// `number_type` drops them). Returns whether that second comparison ran.
fn assert_agrees(digits: &str) -> bool {
    let input = format!("+{digits}");
    let mine = PLAN.e164(&input);
    let want = oracle(digits);
    match (&mine, &want) {
        (None, None) => {}
        (Some(m), Some((id, ty))) => {
            assert_eq!(m.e164.digits(), digits, "{input}");
            assert_eq!(m.country.map(|c| c.as_str().to_string()), *id, "{input}");
            assert_eq!(m.kind, kind_of_type(*ty), "{input}");
        }
        _ => panic!("{input}: fast path {mine:?}, phonenumber metadata {want:?}"),
    }
    let Ok(p) = phonenumber::parse(None, &input) else { return false };
    let national = p.national().to_string();
    if !(digits.ends_with(&national) && digits.len() == national.len() + p.code().value().to_string().len()) {
        return false;
    }
    assert_eq!(mine.is_some(), p.is_valid(), "{input}: phonenumber::is_valid");
    if let (Some(m), 0) = (mine, p.national().zeros()) {
        assert_eq!(m.kind, kind_of_type(p.number_type(&DATABASE)), "{input}: number_type");
        assert_eq!(m.country.map(|c| c.as_str().to_string()), p.country().id().map(|id| format!("{id:?}")));
    }
    true
}

/// Every example number of the metadata, every region and type.
fn examples() -> Vec<(String, u16, String)> {
    let mut out = Vec::new();
    for code in 1..1000u16 {
        for meta in DATABASE.by_code(&code).unwrap_or_default() {
            let d = meta.descriptors();
            for desc in [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(ex) = desc.example() {
                    out.push((meta.id().to_string(), code, ex.to_string()));
                }
            }
        }
    }
    out
}

static EXAMPLES: LazyLock<Vec<(String, u16, String)>> = LazyLock::new(examples);

#[test]
fn every_example_number_agrees_with_phonenumber() {
    assert!(EXAMPLES.len() > 1000, "{}", EXAMPLES.len());
    let crate_checked = EXAMPLES.iter().filter(|(_, code, nsn)| assert_agrees(&format!("{code}{nsn}"))).count();
    // The crate itself read (nearly) all of them the same way.
    assert!(crate_checked * 100 > EXAMPLES.len() * 95, "{crate_checked} of {}", EXAMPLES.len());
}

#[test]
fn national_formats_agree_with_phonenumber() {
    for (id, code, nsn) in EXAMPLES.iter() {
        let Some(info) = PLAN.e164(&format!("+{code}{nsn}")) else { continue };
        let Ok(p) = phonenumber::parse(None, info.e164.as_str()) else { continue };
        if p.national().to_string() != *nsn {
            continue;
        }
        let theirs: String = p.format().mode(Mode::National).to_string().chars().filter(char::is_ascii_digit).collect();
        assert_eq!(PLAN.national_format(&info.e164).as_str(), theirs, "{id} +{code}{nsn}");
    }
}

#[test]
fn example_numbers_read_back_from_their_national_format() {
    for (id, code, nsn) in EXAMPLES.iter() {
        let (Some(country), Some(info)) = (Country::parse(id), PLAN.e164(&format!("+{code}{nsn}"))) else { continue };
        if info.country != Some(country) {
            continue;
        }
        let national = PLAN.national_format(&info.e164);
        match PLAN.parse(national.as_str(), country) {
            Ok(p) => assert_eq!(p.number.e164, info.e164, "{id} {national}"),
            Err(e) => panic!("{id} {national}: {e:?}"),
        }
    }
}

fn digit_strings(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, min..=max).prop_map(|v| v.into_iter().map(|d| char::from(b'0' + d)).collect())
}

/// Example numbers with one digit changed, dropped or added: near-valid inputs where the
/// patterns' edges are.
fn near_examples() -> impl Strategy<Value = String> {
    (0..EXAMPLES.len(), 0usize..20, 0u8..10, 0u8..4).prop_map(|(i, pos, digit, op)| {
        let (_, code, nsn) = &EXAMPLES[i];
        let mut n: Vec<u8> = nsn.bytes().collect();
        let at = pos % (n.len() + 1);
        match op {
            0 if at < n.len() => n[at] = b'0' + digit,
            1 if at < n.len() => {
                n.remove(at);
            }
            2 => n.insert(at, b'0' + digit),
            _ => {}
        }
        format!("{code}{}", String::from_utf8(n).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_on_random_digits(digits in digit_strings(3, 20)) {
        assert_agrees(&digits);
    }

    #[test]
    fn fast_path_agrees_near_example_numbers(digits in near_examples()) {
        assert_agrees(&digits);
    }

    #[test]
    fn fast_path_agrees_on_nanp_numbers(nsn in digit_strings(10, 10)) {
        assert_agrees(&format!("1{nsn}"));
    }

    #[test]
    fn reading_never_panics(input in "\\PC{0,40}", loc in "[A-Z]{2}") {
        let loc = c(&loc);
        let _ = PLAN.parse(&input, loc);
        let _ = PLAN.dial(&input, Some(loc));
        let _ = PLAN.dial(&input, None);
        let _ = PLAN.e164(&input);
        let _ = is_emergency(&input, loc);
    }

    #[test]
    fn reading_number_like_strings_never_panics(input in "[+0-9 ().-]{0,30}", loc in "(US|GB|IE|AU|DE|AR|BR|MX|RU|IT|JP|AS)") {
        let loc = c(&loc);
        if let Ok(p) = PLAN.parse(&input, loc) {
            // What is read is valid, and reads back from its E.164 form.
            prop_assert_eq!(PLAN.e164(p.number.e164.as_str()).map(|i| i.e164), Some(p.number.e164));
            let _ = PLAN.national_format(&p.number.e164);
        }
        let _ = PLAN.dial(&input, Some(loc));
    }
}
