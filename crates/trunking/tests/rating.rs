//! Rating: billing increments, billed seconds, exact costs, the max-rate and daily-spend checks
//! and the rate deck's longest-prefix match, as tables; properties prove the deck agrees with a
//! scan of its rows and that nothing panics on any input.

use std::str::FromStr;

use proptest::prelude::*;
use rust_decimal::Decimal;
use trunking::rating::{
    BillingIncrement, BillingIncrementError, DeckError, RateDeck, RowFault, RowFaultKind, amount_from_f64,
    billed_seconds, cost, exceeds_max_rate, parse_amount, spend_allows,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

fn inc(s: &str) -> BillingIncrement {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Billing increments

/// The parts of a parsed increment, or why it was refused.
type Parsed = Result<(u32, u32), BillingIncrementError>;

/// (text, parsed).
const INCREMENTS: &[(&str, Parsed)] = &[
    ("60/60", Ok((60, 60))),
    ("6/6", Ok((6, 6))),
    ("1/1", Ok((1, 1))),
    ("30/6", Ok((30, 6))),
    ("06/6", Ok((6, 6))),
    ("3600/3600", Ok((3600, 3600))),
    ("0/60", Err(BillingIncrementError::OutOfRange)),
    ("60/0", Err(BillingIncrementError::OutOfRange)),
    ("3601/60", Err(BillingIncrementError::OutOfRange)),
    ("10000/1", Err(BillingIncrementError::Format)),
    ("60", Err(BillingIncrementError::Format)),
    ("60/", Err(BillingIncrementError::Format)),
    ("/60", Err(BillingIncrementError::Format)),
    ("", Err(BillingIncrementError::Format)),
    ("a/b", Err(BillingIncrementError::Format)),
    ("60/60/60", Err(BillingIncrementError::Format)),
    (" 60/60", Err(BillingIncrementError::Format)),
    ("+6/6", Err(BillingIncrementError::Format)),
    ("-6/6", Err(BillingIncrementError::Format)),
    ("6.0/6", Err(BillingIncrementError::Format)),
];

#[test]
fn billing_increments_parse() {
    for &(text, want) in INCREMENTS {
        let got = text.parse::<BillingIncrement>().map(|i| (i.first, i.next));
        assert_eq!(got, want, "{text:?}");
        if let Ok(i) = text.parse::<BillingIncrement>() {
            // Display is canonical and reads back.
            assert_eq!(BillingIncrement::from_str(&i.to_string()), Ok(i));
        }
    }
    assert_eq!(inc("06/6").to_string(), "6/6");
    assert_eq!(BillingIncrement::default(), inc("60/60"));
    assert_eq!(BillingIncrement::new(0, 1), Err(BillingIncrementError::OutOfRange));
    assert_eq!(serde_json::to_string(&inc("30/6")).unwrap(), r#""30/6""#);
    assert_eq!(serde_json::from_str::<BillingIncrement>(r#""6/6""#).unwrap(), inc("6/6"));
    assert!(serde_json::from_str::<BillingIncrement>(r#""6/0""#).is_err());
}

// ---------------------------------------------------------------------------------------------
// Billed seconds

const S: u64 = 1000;

/// (duration in ms, billed seconds under 60/60, 6/6, 1/1, 30/6).
const BILLING: &[(u64, [u64; 4])] = &[
    (0, [0, 0, 0, 0]),
    (1, [60, 6, 1, 30]),
    (999, [60, 6, 1, 30]),
    (S, [60, 6, 1, 30]),
    (S + 1, [60, 6, 2, 30]),
    (5 * S, [60, 6, 5, 30]),
    (6 * S + 1, [60, 12, 7, 30]),
    (29 * S, [60, 30, 29, 30]),
    (30 * S, [60, 30, 30, 30]),
    (30 * S + 1, [60, 36, 31, 36]),
    (59 * S, [60, 60, 59, 60]),
    (59 * S + 999, [60, 60, 60, 60]),
    (60 * S, [60, 60, 60, 60]),
    (60 * S + 1, [120, 66, 61, 66]),
    (61 * S, [120, 66, 61, 66]),
    (119 * S, [120, 120, 119, 120]),
    (121 * S, [180, 126, 121, 126]),
    (3600 * S, [3600, 3600, 3600, 3600]),
    (3601 * S, [3660, 3606, 3601, 3606]),
    (86_400 * S, [86_400, 86_400, 86_400, 86_400]),
];

#[test]
fn billed_seconds_by_increment() {
    let increments = ["60/60", "6/6", "1/1", "30/6"].map(inc);
    for &(ms, want) in BILLING {
        for (i, increment) in increments.iter().enumerate() {
            assert_eq!(billed_seconds(ms, *increment), want[i], "{ms} ms at {increment}");
        }
    }
}

#[test]
fn billed_seconds_is_total() {
    // A zero part (refused by `new`, but the fields are public) counts as 1.
    assert_eq!(billed_seconds(1500, BillingIncrement { first: 0, next: 0 }), 2);
    assert_eq!(billed_seconds(0, BillingIncrement { first: 0, next: 0 }), 0);
    let huge = BillingIncrement { first: u32::MAX, next: u32::MAX };
    assert_eq!(billed_seconds(1, huge), u64::from(u32::MAX));
    let max = billed_seconds(u64::MAX, inc("60/60"));
    assert!(max >= u64::MAX / 1000 && max.is_multiple_of(60));
}

// ---------------------------------------------------------------------------------------------
// Cost

/// (USD per minute, billed seconds, cost).
const COSTS: &[(&str, u64, &str)] = &[
    ("0.0100", 60, "0.01"),
    ("0.0100", 0, "0"),
    ("0", 3600, "0"),
    ("0.0100", 1, "0.000167"),
    ("0.0100", 6, "0.001"),
    ("0.0100", 30, "0.005"),
    ("0.0100", 66, "0.011"),
    ("0.0123", 61, "0.012505"),
    ("0.0007", 1, "0.000012"),
    // Exactly half of the sixth decimal place rounds away from zero.
    ("0.000001", 30, "0.000001"),
    ("0.00003", 1, "0.000001"),
    ("0.000001", 29, "0"),
    ("0.000001", 1, "0"),
    ("1.5", 3600, "90"),
    ("0.15", 120, "0.3"),
    ("0.333333", 7, "0.038889"),
    ("999999.999999", 86_400, "1439999999.99856"),
    ("12", 1, "0.2"),
];

#[test]
fn costs_are_exact() {
    for &(rate, seconds, want) in COSTS {
        let got = cost(dec(rate), seconds);
        assert_eq!(got, dec(want), "{rate} x {seconds} s");
        assert!(got.scale() <= 6, "{got}");
    }
    // Rated and billed the way a deck and an increment do it.
    assert_eq!(cost(dec("0.0100"), billed_seconds(61_500, inc("6/6"))), dec("0.011"));
    assert_eq!(cost(dec("0.0100"), billed_seconds(61_500, inc("60/60"))), dec("0.02"));
}

#[test]
fn cost_saturates() {
    assert_eq!(cost(Decimal::MAX, u64::MAX), Decimal::MAX);
    assert_eq!(cost(Decimal::MIN, u64::MAX), Decimal::MIN);
    assert_eq!(cost(Decimal::MAX, 0), Decimal::ZERO);
}

// ---------------------------------------------------------------------------------------------
// Max rate and daily spend

/// (rate, max_destination_rate, refused).
const MAX_RATE: &[(&str, Option<&str>, bool)] = &[
    ("0.15", Some("0.10"), true),
    ("0.10", Some("0.10"), false),
    ("0.1000", Some("0.1"), false),
    ("0.100001", Some("0.1"), true),
    ("0.05", Some("0.10"), false),
    ("0", Some("0"), false),
    ("0.0001", Some("0"), true),
    ("1000", None, false),
];

#[test]
fn max_destination_rate() {
    for &(rate, max, refused) in MAX_RATE {
        assert_eq!(exceeds_max_rate(dec(rate), max.map(dec)), refused, "{rate} vs {max:?}");
    }
}

/// (daily_spend_limit, spent today, allowed).
const SPEND: &[(Option<&str>, &str, bool)] = &[
    (None, "0", true),
    (None, "1000000", true),
    (Some("100.00"), "0", true),
    (Some("100.00"), "99.999999", true),
    (Some("100.00"), "100", false),
    (Some("100"), "100.000001", false),
    (Some("0"), "0", false),
];

#[test]
fn daily_spend_limit() {
    for &(limit, spent, allowed) in SPEND {
        assert_eq!(spend_allows(limit.map(dec), dec(spent)), allowed, "{spent} of {limit:?}");
    }
}

/// (text, amount).
const AMOUNTS: &[(&str, Option<&str>)] = &[
    ("0.0100", Some("0.0100")),
    ("12", Some("12")),
    ("100.00", Some("100.00")),
    ("0", Some("0")),
    ("999999.999999", Some("999999.999999")),
    ("", None),
    (".5", None),
    ("5.", None),
    ("-0.01", None),
    ("+0.01", None),
    ("1e3", None),
    (" 1", None),
    ("1,5", None),
    ("0x10", None),
    ("1.2.3", None),
    ("١", None),
    ("99999999999999999999999999999999", None),
];

#[test]
fn amounts_parse_exactly() {
    for &(text, want) in AMOUNTS {
        let got = parse_amount(text);
        assert_eq!(got, want.map(dec), "{text:?}");
        // The scale is kept as written.
        assert_eq!(got.map(|d| d.to_string()), want.map(str::to_owned), "{text:?}");
    }
    assert_eq!(amount_from_f64(0.1).map(|d| d.to_string()), Some("0.1".to_owned()));
    assert_eq!(amount_from_f64(0.15), Some(dec("0.15")));
    assert_eq!(amount_from_f64(1e-7), Some(dec("0.0000001")));
    assert_eq!(amount_from_f64(25.0), Some(dec("25")));
    assert_eq!(amount_from_f64(-1.0), None);
    assert_eq!(amount_from_f64(f64::NAN), None);
    assert_eq!(amount_from_f64(f64::INFINITY), None);
    assert_eq!(amount_from_f64(1e30), None);
}

// ---------------------------------------------------------------------------------------------
// Rate decks

const DECK: &[(&str, &str)] =
    &[("1", "0.0100"), ("1212", "0.0200"), ("12125", "0.0300"), ("44", "0.0500"), ("447", "0.1500"), ("0044", "9")];

/// (number, matched prefix and rate, or none).
const LONGEST_PREFIX: &[(&str, Option<(&str, &str)>)] = &[
    ("+12125551234", Some(("12125", "0.0300"))),
    ("12125551234", Some(("12125", "0.0300"))),
    ("+12124551234", Some(("1212", "0.0200"))),
    ("+13105551234", Some(("1", "0.0100"))),
    ("+447911123456", Some(("447", "0.1500"))),
    ("+442071234567", Some(("44", "0.0500"))),
    ("00447911123456", Some(("0044", "9"))),
    ("1", Some(("1", "0.0100"))),
    ("121", Some(("1", "0.0100"))),
    ("1212", Some(("1212", "0.0200"))),
    ("12125", Some(("12125", "0.0300"))),
    ("+1", Some(("1", "0.0100"))),
    // Only the first 15 digits can match; a longer string is still rated by its prefix.
    ("1212555123456789", Some(("12125", "0.0300"))),
    ("+4", None),
    ("4", None),
    ("+33123456789", None),
    ("0", None),
    ("004", None),
    ("", None),
    ("+", None),
    ("++12125551234", None),
    ("12125551234+", None),
    ("1212a", None),
    ("1212 555", None),
    ("-1", None),
    ("sip:+12125551234@example.com", None),
    ("１２１２", None),
];

#[test]
fn longest_prefix_wins() {
    let deck = RateDeck::build(DECK.iter().copied()).unwrap();
    assert_eq!(deck.len(), DECK.len());
    assert_eq!(deck.distinct_rates(), DECK.len());
    for &(number, want) in LONGEST_PREFIX {
        let got = deck.rate_for(number);
        assert_eq!(
            got.map(|r| (r.prefix.to_string(), r.per_minute.to_string())),
            want.map(|(p, r)| (p.to_owned(), r.to_owned())),
            "{number:?}"
        );
        if let Some(r) = got {
            assert_eq!(r.prefix.len(), r.prefix.as_str().len());
        }
    }
    // The rate is kept exactly as written (scale included).
    assert_eq!(deck.rate_for("+447").unwrap().per_minute.to_string(), "0.1500");
}

#[test]
fn empty_deck_rates_nothing() {
    let deck = RateDeck::build(std::iter::empty::<(&str, &str)>()).unwrap();
    assert!(deck.is_empty());
    assert_eq!(deck.rate_for("+12125551234"), None);
    assert_eq!(RateDeck::empty().rate_for("1"), None);
    assert_eq!(RateDeck::default().rate_for("1"), None);
}

#[test]
fn one_digit_to_fifteen_digit_prefixes() {
    let full = "123456789012345";
    let rows: Vec<(String, String)> = (1..=15).map(|n| (full[..n].to_owned(), format!("0.{n:02}"))).collect();
    let deck = RateDeck::build(rows.iter().map(|(p, r)| (p, r))).unwrap();
    for n in 1..=15 {
        let r = deck.rate_for(&full[..n]).unwrap();
        assert_eq!((r.prefix.as_str(), r.per_minute), (&full[..n], dec(&format!("0.{n:02}"))));
    }
    assert_eq!(deck.rate_for("1234567890123456789").unwrap().prefix.as_str(), full);
    assert_eq!(deck.rate_for("+1234567890123449").unwrap().prefix.as_str(), "12345678901234");
    assert_eq!(deck.rate_for("+12345678901299").unwrap().prefix.as_str(), "123456789012");
    // Trailing zeros are digits like any other: "10" is not a prefix of "1".
    let deck = RateDeck::build([("1", "1"), ("10", "2"), ("100", "3"), ("1000000", "4")]).unwrap();
    for (number, prefix) in
        [("1", "1"), ("10", "10"), ("100", "100"), ("1000", "100"), ("1000000", "1000000"), ("101", "10")]
    {
        assert_eq!(deck.rate_for(number).unwrap().prefix.as_str(), prefix, "{number}");
    }
}

#[test]
fn bad_rows_are_listed_by_row() {
    let rows = [
        ("12a", "0.01"),
        ("", "0.01"),
        ("1234567890123456", "0.01"),
        ("1", "abc"),
        ("2", "-0.01"),
        ("3", "1e3"),
        ("4", "0.01"),
        ("x", "y"),
        ("4", "0.02"),
        ("+5", " 0.1"),
    ];
    let err = RateDeck::build(rows).unwrap_err();
    use RowFaultKind::*;
    let want = [
        (0, Prefix),
        (1, Prefix),
        (2, Prefix),
        (3, Rate),
        (4, Rate),
        (5, Rate),
        (7, Prefix),
        (7, Rate),
        (8, Duplicate { first_row: 6 }),
        (9, Prefix),
        (9, Rate),
    ];
    assert_eq!(err, DeckError { faults: want.map(|(row, kind)| RowFault { row, kind }).to_vec(), total: want.len() });
    assert!(err.to_string().starts_with("11 bad rate deck row(s); row 0: prefix is not 1 to 15 digits"), "{err}");
}

#[test]
fn many_faults_list_the_first_hundred() {
    // 150 bad prefixes, then 150 repeats of one prefix: the list is the first 100 by row.
    let rows: Vec<(String, &str)> =
        (0..150).map(|_| ("x".to_owned(), "1")).chain((0..150).map(|_| ("7".to_owned(), "1"))).collect();
    let err = RateDeck::build(rows.iter().map(|(p, r)| (p, r))).unwrap_err();
    assert_eq!(err.total, 150 + 149);
    assert_eq!(err.faults.len(), DeckError::MAX_LISTED);
    assert!(err.faults.iter().enumerate().all(|(i, f)| f.row == i && f.kind == RowFaultKind::Prefix));
    assert!(err.to_string().ends_with("; and 199 more"));
}

// ---------------------------------------------------------------------------------------------
// Properties

/// The longest prefix of `number` among `rows`, by a scan.
fn scan<'a>(rows: &'a [(String, String)], number: &str) -> Option<&'a (String, String)> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rows.iter().filter(|(p, _)| digits.starts_with(p.as_str())).max_by_key(|(p, _)| p.len())
}

fn digits(alphabet: &'static [char], len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), len).prop_map(|d| d.into_iter().collect())
}

/// A deck (unique prefixes of 1 to 15 digits, rates as written) and numbers to rate: random
/// digits, or a deck prefix extended, with or without `+`.
fn deck_and_numbers(
    alphabet: &'static [char],
    rows: usize,
) -> impl Strategy<Value = (Vec<(String, String)>, Vec<String>)> {
    let deck =
        prop::collection::btree_map(digits(alphabet, 1..=15), (0u32..1_000_000, 0u32..7), 0..rows).prop_map(|m| {
            m.into_iter()
                .map(|(p, (rate, scale))| {
                    let rate = Decimal::new(i64::from(rate), scale);
                    (p, rate.to_string())
                })
                .collect::<Vec<_>>()
        });
    deck.prop_flat_map(move |rows| {
        let n = rows.len().max(1);
        let number = (digits(alphabet, 0..=17), 0..n, any::<bool>(), any::<bool>());
        (Just(rows), prop::collection::vec(number, 1..60))
    })
    .prop_map(|(rows, numbers)| {
        let numbers = numbers
            .into_iter()
            .map(|(tail, at, extend, plus)| {
                let base = if extend { rows.get(at).map_or("", |r| r.0.as_str()) } else { "" };
                format!("{}{base}{tail}", if plus { "+" } else { "" })
            })
            .collect();
        (rows, numbers)
    })
}

const ALL_DIGITS: [char; 10] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

fn same_as_scan(rows: &[(String, String)], numbers: &[String]) -> Result<(), TestCaseError> {
    let deck = RateDeck::build(rows.iter().map(|(p, r)| (p, r))).unwrap();
    prop_assert_eq!(deck.len(), rows.len());
    for number in numbers {
        let got = deck.rate_for(number).map(|r| (r.prefix.to_string(), r.per_minute.to_string()));
        let want = scan(rows, number).cloned();
        prop_assert_eq!(got, want, "{}", number);
    }
    Ok(())
}

proptest! {
    /// Few distinct digits: prefixes nest deeply and numbers end in zeros often.
    #[test]
    fn rate_for_is_the_longest_prefix_nested((rows, numbers) in deck_and_numbers(&['0', '1', '9'], 300)) {
        same_as_scan(&rows, &numbers)?;
    }

    /// All digits, larger decks (wider direct tables).
    #[test]
    fn rate_for_is_the_longest_prefix((rows, numbers) in deck_and_numbers(&ALL_DIGITS, 3000)) {
        same_as_scan(&rows, &numbers)?;
    }

    /// Whatever the rows, building answers a deck or the faults; whatever the number, rating
    /// answers.
    #[test]
    fn building_and_rating_never_panic(
        rows in prop::collection::vec((".{0,18}", ".{0,10}"), 0..50),
        numbers in prop::collection::vec(".{0,20}", 0..20),
    ) {
        match RateDeck::build(rows.iter().map(|(p, r)| (p, r))) {
            Ok(deck) => {
                for number in &numbers {
                    let _ = deck.rate_for(number);
                }
            }
            Err(e) => prop_assert!(e.total > 0 && !e.faults.is_empty() && e.faults.len() <= e.total),
        }
    }

    #[test]
    fn cost_never_panics_and_grows_with_seconds(
        lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(), scale in 0u32..=28,
        a in any::<u64>(), b in any::<u64>(), small in 0u64..1_000_000,
    ) {
        let rate = Decimal::from_parts(lo, mid, hi, false, scale);
        let (a, b) = (a.min(b), a.max(b));
        prop_assert!(cost(rate, a) <= cost(rate, b), "{} at {} and {}", rate, a, b);
        prop_assert!(cost(rate, small) <= cost(rate, small + 1));
        prop_assert!(cost(rate, 0).is_zero());
        let _ = cost(-rate, a);
        // A deck's rate (at most 6 decimals): the cost is rate x seconds / 60 within half of the
        // sixth decimal place (the one rounding).
        let deck_rate = Decimal::new(i64::from(lo % 1_000_000_000), scale % 7);
        let error = deck_rate * Decimal::from(small) - cost(deck_rate, small) * Decimal::from(60);
        prop_assert!(error.abs() <= Decimal::new(30, 6), "{} x {}", deck_rate, small);
    }

    #[test]
    fn billed_seconds_never_panics_and_rounds_up(
        ms in any::<u64>(), more in any::<u64>(), first in any::<u32>(), next in any::<u32>(),
    ) {
        let increment = BillingIncrement { first, next };
        let billed = billed_seconds(ms, increment);
        let later = billed_seconds(ms.saturating_add(more), increment);
        prop_assert!(billed <= later);
        prop_assert_eq!(billed == 0, ms == 0);
        if ms > 0 {
            let (first, next) = (u64::from(first.max(1)), u64::from(next.max(1)));
            prop_assert!(billed >= ms.div_ceil(1000) && billed >= first);
            prop_assert!(billed == first || (billed - first).is_multiple_of(next) || billed == u64::MAX);
        }
    }

    #[test]
    fn valid_increments_bill_within_one_step(ms in 1u64..100_000_000, first in 1u32..=3600, next in 1u32..=3600) {
        let increment = BillingIncrement::new(first, next).unwrap();
        let seconds = ms.div_ceil(1000);
        let billed = billed_seconds(ms, increment);
        prop_assert!(billed >= seconds && (billed == u64::from(first) || billed - seconds < u64::from(next)));
        prop_assert_eq!(increment.to_string().parse::<BillingIncrement>(), Ok(increment));
    }
}
