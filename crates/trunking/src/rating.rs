//! Rating: what a call costs. An account's calls are priced by its rate deck (the operator's
//! `/v2/rate_decks`): per-minute rates by destination prefix, the longest prefix of the dialed
//! number wins. The deck's billing increment (`60/60`, `6/6`, `1/1`, `30/6`) turns a call's
//! duration into billed seconds; billed seconds times the rate is the cost. An outbound voice
//! profile caps the per-minute rate (`max_destination_rate`, `D24`) and the spend of a UTC day
//! (`daily_spend_limit`, `D19`).
//!
//! Money is [`Decimal`], never a float: rates are kept exactly as written, and a cost is computed
//! exactly, then rounded once ([`cost`]).
//!
//! # The deck in memory
//!
//! A deck may hold a million prefixes and is read on every call, so [`RateDeck`] is built once
//! (when the configuration changes) into a structure that answers a longest-prefix match with two
//! or three memory reads and no allocation:
//!
//! - Every prefix becomes a key `padded << 4 | length`, where `padded` is the prefix's digits
//!   followed by zeros to 15 digits. Keys sort exactly as the prefixes do lexicographically
//!   (`1` < `10` < `100` < `11`), so the deck is one sorted array in which a prefix comes
//!   before all its extensions, each entry linked to its longest proper prefix in the deck (its
//!   parent).
//! - A direct table over the first `D` digits gives, for each block of numbers sharing those
//!   digits, where the block's entries start in the array and the longest prefix of at most `D`
//!   digits covering the block (its rate, ready to use). `D` keeps about one prefix per block:
//!   the number of digits of the deck's size minus one, 1 to 6 (10^6 blocks for a million).
//! - A number of at least `D` digits looks up its block, finds the last entry at or before it
//!   within the block (a binary search over a handful of entries), and walks parents while the
//!   entry is longer than `D` digits and not a prefix of the number; otherwise the block's own
//!   short prefix answers. The longest prefix of a number is always an ancestor of the entry
//!   just before it in lexicographic order, which is why the walk is enough.
//! - A shorter number (a short code) takes the same walk over the whole array.
//!
//! Other structures were measured against it on a million prefixes (a third uniform in length
//! and digits, two thirds under busy country codes) and E.164 numbers: a hash table per prefix
//! length (up to 15 probes) was 2 to 4 times slower and took 31 to 36 MiB; a digit trie with
//! compact 12-byte nodes (a digit bitmap and the first child's index; one read per digit) was
//! within 20% either way (slightly faster when every lookup misses the caches, slower when
//! they are warm) but took 37 to 55 MiB and 5 times the build time. This deck takes about 23
//! MiB for a million prefixes. Figures: the bench `rating`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest prefix a rate may have (E.164 numbers have at most 15 digits).
pub const MAX_PREFIX_DIGITS: usize = 15;

/// The longest billing increment, initial or subsequent, in seconds (as the API validates).
pub const MAX_INCREMENT_SECONDS: u32 = 3600;

/// Decimal places a cost is rounded to ([`cost`]).
pub const COST_DECIMAL_PLACES: u32 = 6;

/// How many rows a deck may have (row indexes and rate indexes fit in 28 bits; an upload of the
/// API's largest size holds about 20 million).
pub const MAX_DECK_ROWS: usize = (1 << 28) - 1;

// ---------------------------------------------------------------------------------------------
// Decimal text

/// A decimal's text exactly as its `Display` writes it (`0.0100`: every digit of its scale,
/// `-` for a negative, including a negative zero), without the formatting machinery: every call
/// writes its rate and cost into its record and its decision trace, and `Display` assembled
/// the digits one division at a time, then padded them through a `Formatter`.
pub fn push_decimal(out: &mut String, d: &Decimal) {
    if d.is_sign_negative() {
        out.push('-');
    }
    let scale = d.scale() as usize;
    let mut buf = itoa::Buffer::new();
    let m = d.mantissa().unsigned_abs();
    let digits = if m == 0 { "" } else { buf.format(m) };
    // A fraction shorter than the scale is padded with leading zeros.
    let zeros = scale.saturating_sub(digits.len());
    let whole = digits.len() + zeros - scale;
    if whole == 0 {
        out.push('0');
    } else {
        out.push_str(&digits[..whole]);
    }
    if scale > 0 {
        out.push('.');
        out.extend(std::iter::repeat_n('0', zeros));
        out.push_str(&digits[whole..]);
    }
}

/// [`push_decimal`] into a new string.
pub fn decimal_text(d: &Decimal) -> String {
    let mut out = String::with_capacity(16);
    push_decimal(&mut out, d);
    out
}

// ---------------------------------------------------------------------------------------------
// Billing increments

/// How a call's duration is billed: at least `first` seconds, then in steps of `next` seconds
/// (`"60/60"`: by the minute; `"6/6"`: by 6 seconds; `"1/1"`: by the second; `"30/6"`: a 30 s
/// minimum, then 6 s steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BillingIncrement {
    /// The initial increment in seconds: an answered call is billed at least this.
    pub first: u32,
    /// The subsequent increment in seconds: time beyond `first` is rounded up to multiples of it.
    pub next: u32,
}

/// Why a billing increment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillingIncrementError {
    /// Not `initial/subsequent` in decimal digits.
    Format,
    /// A part is 0 or more than [`MAX_INCREMENT_SECONDS`].
    OutOfRange,
}

impl fmt::Display for BillingIncrementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BillingIncrementError::Format => {
                "a billing increment is \"initial/subsequent\" in seconds, such as \"60/60\""
            }
            BillingIncrementError::OutOfRange => "each part of a billing increment is 1 to 3600 seconds",
        })
    }
}

impl std::error::Error for BillingIncrementError {}

impl BillingIncrement {
    /// `60/60`, the API's default.
    pub const PER_MINUTE: BillingIncrement = BillingIncrement { first: 60, next: 60 };

    /// An increment with both parts 1 to [`MAX_INCREMENT_SECONDS`] seconds.
    pub const fn new(first: u32, next: u32) -> Result<BillingIncrement, BillingIncrementError> {
        if first == 0 || next == 0 || first > MAX_INCREMENT_SECONDS || next > MAX_INCREMENT_SECONDS {
            return Err(BillingIncrementError::OutOfRange);
        }
        Ok(BillingIncrement { first, next })
    }
}

impl Default for BillingIncrement {
    fn default() -> Self {
        BillingIncrement::PER_MINUTE
    }
}

impl FromStr for BillingIncrement {
    type Err = BillingIncrementError;

    /// `"initial/subsequent"`: 1 to 4 decimal digits each (`"06/6"` is `6/6`), no spaces or signs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn seconds(part: &str) -> Result<u32, BillingIncrementError> {
            if !(1..=4).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BillingIncrementError::Format);
            }
            part.parse().map_err(|_| BillingIncrementError::Format)
        }
        let (first, next) = s.split_once('/').ok_or(BillingIncrementError::Format)?;
        BillingIncrement::new(seconds(first)?, seconds(next)?)
    }
}

impl fmt::Display for BillingIncrement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl BillingIncrement {
    /// `first/next`, as `Display` writes it (each started call journals it).
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(12);
        out.push_str(itoa::Buffer::new().format(self.first));
        out.push('/');
        out.push_str(itoa::Buffer::new().format(self.next));
        out
    }
}

impl Serialize for BillingIncrement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BillingIncrement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The seconds a call is billed for.
///
/// `duration_ms` is the answered duration (answer to hangup); an unanswered call has 0 and is
/// billed 0. Milliseconds round up to whole seconds (a started second counts: 1 ms is 1 s,
/// 1001 ms is 2 s). An answered call is billed at least `first` seconds; beyond that, the time
/// is rounded up to a multiple of `next`. Total for every input: a part of 0 (which
/// [`BillingIncrement::new`] refuses) counts as 1, and the arithmetic saturates.
pub const fn billed_seconds(duration_ms: u64, inc: BillingIncrement) -> u64 {
    let seconds = duration_ms.div_ceil(1000);
    if seconds == 0 {
        return 0;
    }
    let first = if inc.first == 0 { 1 } else { inc.first as u64 };
    let next = if inc.next == 0 { 1 } else { inc.next as u64 };
    if seconds <= first {
        return first;
    }
    first.saturating_add((seconds - first).div_ceil(next).saturating_mul(next))
}

/// What `billed_seconds` cost at `per_minute` USD a minute: `per_minute x seconds / 60`, computed
/// exactly, then rounded once to [`COST_DECIMAL_PLACES`] (6) decimal places, a midpoint away
/// from zero (`0.0000005` is `0.000001`). Exact whenever `per_minute x seconds` fits Decimal's
/// 28 significant digits and the cost is below 10^20 USD, which covers every deck rate (at
/// most 6 decimals) over any real call; beyond, Decimal rounds before the final rounding. Never
/// panics: a product beyond Decimal's range (about 7.9 x 10^28) saturates at `Decimal::MAX`
/// (`Decimal::MIN` for a negative rate, which decks refuse).
pub fn cost(per_minute: Decimal, billed_seconds: u64) -> Decimal {
    let saturated = if per_minute.is_sign_negative() { Decimal::MIN } else { Decimal::MAX };
    let Some(amount) = per_minute.checked_mul(Decimal::from(billed_seconds)) else {
        return saturated;
    };
    // Division by 60 cannot overflow; it rounds only beyond 28 significant digits.
    let per_second = amount.checked_div(Decimal::from(60u32)).unwrap_or(saturated);
    per_second.round_dp_with_strategy(COST_DECIMAL_PLACES, RoundingStrategy::MidpointAwayFromZero)
}

/// Whether a destination's rate is above the profile's `max_destination_rate` (then the call is
/// refused, `D24`): a rate equal to the maximum is allowed; no maximum allows every rate.
pub fn exceeds_max_rate(rate: Decimal, max: Option<Decimal>) -> bool {
    max.is_some_and(|max| rate > max)
}

/// Whether the profile's daily spend limit still allows a call: the limit is reached when
/// `spent_today >= limit` (then the call is refused, `D19`); no limit allows every call. The
/// day is the UTC day ([`crate::Timestamp::utc_day`]): spend counts reset at 00:00:00 UTC.
pub fn spend_allows(limit: Option<Decimal>, spent_today: Decimal) -> bool {
    limit.is_none_or(|limit| spent_today < limit)
}

/// A money amount or rate as stored: decimal digits, optionally a point and more digits
/// (`"0.0100"`, `"12"`, `"100.00"`), non-negative, kept exactly as written (scale included).
/// No sign, exponent, spaces or separators; `None` when it is not such a number or does not
/// fit a [`Decimal`] exactly.
pub fn parse_amount(s: &str) -> Option<Decimal> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !frac.is_none_or(digits) {
        return None;
    }
    Decimal::from_str_exact(s).ok()
}

/// A number (USD, USD/min) given as a JSON number, such as a profile's `max_destination_rate`,
/// as the decimal it is written as (`0.1` is `0.1`, not the float's binary expansion). `None`
/// for a negative, infinite or NaN value or one beyond Decimal's range.
pub fn amount_from_f64(v: f64) -> Option<Decimal> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    // Display gives the shortest text that reads back as the same float, never an exponent.
    Decimal::from_str_exact(&v.to_string()).ok()
}

// ---------------------------------------------------------------------------------------------
// Prefixes and rates

/// A matched destination prefix: 1 to 15 digits, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    digits: [u8; MAX_PREFIX_DIGITS],
    len: u8,
}

impl Prefix {
    /// The first `len` digits of `digits` (which are ASCII digits, `len` 1 to 15).
    fn of(digits: &[u8], len: usize) -> Prefix {
        let mut p = Prefix { digits: [b'0'; MAX_PREFIX_DIGITS], len: len as u8 };
        p.digits[..len].copy_from_slice(&digits[..len]);
        p
    }

    /// The digits, such as `"1212"`.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored; the fallback is unreachable.
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or_default()
    }

    /// How many digits (1 to 15).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a prefix has at least one digit (here for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The rate a number gets: the deck's longest prefix of it and that prefix's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub prefix: Prefix,
    /// USD per minute, exactly as the deck has it.
    pub per_minute: Decimal,
}

// ---------------------------------------------------------------------------------------------
// The deck

/// What is wrong with one row of a deck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFaultKind {
    /// The prefix is not 1 to 15 decimal digits.
    Prefix,
    /// The rate is not a non-negative decimal such as `"0.0100"` ([`parse_amount`]).
    Rate,
    /// The prefix is also on an earlier row (`first_row`).
    Duplicate { first_row: usize },
    /// The deck has more than [`MAX_DECK_ROWS`] rows; rows from this one on were not read.
    TooManyRows,
}

/// One bad row: its index among the rows given (from 0) and what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowFault {
    pub row: usize,
    pub kind: RowFaultKind,
}

/// Why a deck could not be built: the first [`DeckError::MAX_LISTED`] faults by row, and how
/// many there are in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeckError {
    pub faults: Vec<RowFault>,
    pub total: usize,
}

impl DeckError {
    /// How many faults are listed at most.
    pub const MAX_LISTED: usize = 100;
}

impl fmt::Display for DeckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bad rate deck row(s)", self.total)?;
        for fault in &self.faults {
            write!(f, "; row {}: ", fault.row)?;
            match fault.kind {
                RowFaultKind::Prefix => f.write_str("prefix is not 1 to 15 digits")?,
                RowFaultKind::Rate => f.write_str("rate is not a decimal amount")?,
                RowFaultKind::Duplicate { first_row } => write!(f, "prefix repeats row {first_row}")?,
                RowFaultKind::TooManyRows => write!(f, "more than {MAX_DECK_ROWS} rows")?,
            }
        }
        if self.total > self.faults.len() {
            write!(f, "; and {} more", self.total - self.faults.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for DeckError {}

/// No entry (a parent link or a block's short prefix).
const NONE: u32 = u32::MAX;
/// The rate index in a block's packed short prefix; its length is in the top 4 bits.
const RATE_MASK: u32 = (1 << 28) - 1;

const POW10: [u64; 16] = {
    let mut t = [1u64; 16];
    let mut i = 1;
    while i < 16 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// One prefix of the deck, in lexicographic order.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// `padded << 4 | length`: the digits followed by zeros to 15 digits, then the length.
    key: u64,
    /// The entry of the longest proper prefix of this one in the deck, or [`NONE`].
    parent: u32,
    /// Index into [`RateDeck::rates`].
    rate: u32,
}

/// A block of numbers sharing their first `D` digits.
#[derive(Clone, Copy, Debug)]
struct Block {
    /// The first entry whose padded digits are in this block (or after it).
    start: u32,
    /// The longest prefix of at most `D` digits covering the whole block: `length << 28 | rate`,
    /// or [`NONE`].
    short: u32,
}

const fn key_len(key: u64) -> usize {
    (key & 15) as usize
}

/// Whether the entry `key` is a prefix of the number whose first `len` (at most 15) digits,
/// padded with zeros to 15, are `padded`.
const fn is_prefix_of(key: u64, padded: u64, len: usize) -> bool {
    let start = key >> 4;
    let key_len = key_len(key);
    key_len <= len && padded >= start && padded - start < POW10[MAX_PREFIX_DIGITS - key_len]
}

/// An account's rate deck in memory: per-minute rates by destination prefix, longest prefix
/// wins ([`RateDeck::rate_for`]). Built once from the stored `(prefix, rate)` rows.
#[derive(Clone)]
pub struct RateDeck {
    entries: Vec<Entry>,
    /// `10^block_digits + 1` blocks (the last one only ends the one before it).
    blocks: Vec<Block>,
    block_digits: usize,
    /// The distinct rates (by value and scale), indexed by [`Entry::rate`].
    rates: Vec<Decimal>,
}

impl fmt::Debug for RateDeck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateDeck")
            .field("prefixes", &self.entries.len())
            .field("distinct_rates", &self.rates.len())
            .field("block_digits", &self.block_digits)
            .finish()
    }
}

impl Default for RateDeck {
    fn default() -> Self {
        RateDeck::empty()
    }
}

/// A prefix (1 to 15 ASCII digits) as a key.
fn prefix_key(prefix: &str) -> Option<u64> {
    let b = prefix.as_bytes();
    if !(1..=MAX_PREFIX_DIGITS).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = b.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
    Some((value * POW10[MAX_PREFIX_DIGITS - b.len()]) << 4 | b.len() as u64)
}

impl RateDeck {
    /// A deck with no rates (every number is unrated).
    pub fn empty() -> RateDeck {
        RateDeck {
            entries: Vec::new(),
            blocks: vec![Block { start: 0, short: NONE }; 11],
            block_digits: 1,
            rates: Vec::new(),
        }
    }

    /// Builds a deck from `(prefix, rate)` rows, such as the store's `rate_deck_rates`: a prefix
    /// is 1 to 15 digits (leading zeros count), unique in the deck; a rate is a non-negative
    /// decimal string ([`parse_amount`]). Any bad row fails the whole deck, listing the faults
    /// by row; nothing panics.
    pub fn build<I, P, R>(rows: I) -> Result<RateDeck, DeckError>
    where
        I: IntoIterator<Item = (P, R)>,
        P: AsRef<str>,
        R: AsRef<str>,
    {
        RateDeck::build_with(rows, None)
    }

    /// [`RateDeck::build`] with the direct table over `block_digits` (1 to 6) digits instead of
    /// the size's choice (for tests of every table size).
    fn build_with<I, P, R>(rows: I, block_digits: Option<usize>) -> Result<RateDeck, DeckError>
    where
        I: IntoIterator<Item = (P, R)>,
        P: AsRef<str>,
        R: AsRef<str>,
    {
        let rows = rows.into_iter();
        // The first faults of each pass (rows as read, then duplicates), merged by row below.
        let mut faults: Vec<RowFault> = Vec::new();
        let mut total_faults = 0usize;
        let mut fault = |faults: &mut Vec<RowFault>, row: usize, kind: RowFaultKind| {
            total_faults += 1;
            if faults.len() < DeckError::MAX_LISTED {
                faults.push(RowFault { row, kind });
            }
        };

        // (key, row, rate index), sorted below.
        let mut keyed: Vec<(u64, u32, u32)> = Vec::with_capacity(rows.size_hint().0.min(MAX_DECK_ROWS));
        let mut rates: Vec<Decimal> = Vec::new();
        // Distinct by value and scale, so each rate keeps the way it was written.
        let mut rate_index: HashMap<[u8; 16], u32> = HashMap::new();
        for (row, (prefix, rate)) in rows.enumerate() {
            if row >= MAX_DECK_ROWS {
                fault(&mut faults, row, RowFaultKind::TooManyRows);
                break;
            }
            let key = prefix_key(prefix.as_ref());
            let rate = parse_amount(rate.as_ref());
            if key.is_none() {
                fault(&mut faults, row, RowFaultKind::Prefix);
            }
            if rate.is_none() {
                fault(&mut faults, row, RowFaultKind::Rate);
            }
            if let (Some(key), Some(rate)) = (key, rate) {
                let next = rates.len() as u32;
                let index = *rate_index.entry(rate.serialize()).or_insert(next);
                if index == next {
                    rates.push(rate);
                }
                keyed.push((key, row as u32, index));
            }
        }
        drop(rate_index);

        // By key, then row: a repeated prefix follows its first row.
        keyed.sort_unstable();
        let mut duplicates: Vec<RowFault> = Vec::new();
        for pair in keyed.windows(2) {
            if pair[0].0 == pair[1].0 {
                let kind = RowFaultKind::Duplicate { first_row: pair[0].1 as usize };
                fault(&mut duplicates, pair[1].1 as usize, kind);
            }
        }
        if total_faults > 0 {
            faults.append(&mut duplicates);
            faults.sort_by_key(|f| f.row);
            faults.truncate(DeckError::MAX_LISTED);
            return Err(DeckError { faults, total: total_faults });
        }

        // Each entry's parent: the deepest entry on the stack of open ancestors (keys are in
        // lexicographic order, so a prefix's extensions follow it directly).
        let mut entries: Vec<Entry> = Vec::with_capacity(keyed.len());
        let mut open: Vec<u32> = Vec::with_capacity(MAX_PREFIX_DIGITS);
        for (i, &(key, _, rate)) in keyed.iter().enumerate() {
            while let Some(&top) = open.last() {
                if is_prefix_of(entries[top as usize].key, key >> 4, key_len(key)) {
                    break;
                }
                open.pop();
            }
            entries.push(Entry { key, parent: open.last().copied().unwrap_or(NONE), rate });
            open.push(i as u32);
        }
        drop(keyed);

        // About one entry per block: 10 blocks for up to 99 prefixes, 10^6 from a million on.
        let block_digits = block_digits.unwrap_or(entries.len().max(1).ilog10() as usize).clamp(1, 6);
        let block_count = POW10[block_digits] as usize;
        let block_shift = POW10[MAX_PREFIX_DIGITS - block_digits];
        let mut blocks = vec![Block { start: 0, short: NONE }; block_count + 1];
        let mut at = 0usize;
        for (b, block) in blocks.iter_mut().enumerate() {
            while at < entries.len() && (entries[at].key >> 4) / block_shift < b as u64 {
                at += 1;
            }
            block.start = at as u32;
        }
        // A short prefix covers the blocks that start with it; in lexicographic order its
        // extensions come later and overwrite their own part.
        for e in entries.iter().filter(|e| key_len(e.key) <= block_digits) {
            let first = ((e.key >> 4) / block_shift) as usize;
            let span = POW10[block_digits - key_len(e.key)] as usize;
            let short = (key_len(e.key) as u32) << 28 | e.rate;
            for block in &mut blocks[first..first + span] {
                block.short = short;
            }
        }

        Ok(RateDeck { entries, blocks, block_digits, rates })
    }

    /// The rate of a number: the deck's longest prefix of it. `number` is digits, with or
    /// without a leading `+` (E.164); `None` when it has anything else, is empty or no prefix
    /// matches. Only the first 15 digits can match (prefixes are at most 15 digits long).
    /// Does not allocate.
    pub fn rate_for(&self, number: &str) -> Option<Rate> {
        let digits = number.strip_prefix('+').unwrap_or(number).as_bytes();
        let len = digits.len().min(MAX_PREFIX_DIGITS);
        // The first 15 digits, and the first D (the block) on the way.
        let (mut value, mut block) = (0u64, 0u64);
        for (i, &c) in digits.iter().enumerate() {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            if i < MAX_PREFIX_DIGITS {
                value = value * 10 + u64::from(d);
            }
            if i < self.block_digits {
                block = block * 10 + u64::from(d);
            }
        }
        if len == 0 {
            return None;
        }
        let padded = value * POW10[MAX_PREFIX_DIGITS - len];
        let query = padded << 4 | len as u64;
        let b = (block * POW10[self.block_digits.saturating_sub(len)]) as usize;
        let (Some(block), Some(end)) = (self.blocks.get(b), self.blocks.get(b + 1)) else {
            return None;
        };
        let (start, end) = (block.start as usize, end.start as usize);
        // The last entry at or before the number: within its block, or the one before the block.
        let within = self.entries.get(start..end).unwrap_or_default();
        let mut at = (start + within.partition_point(|e| e.key <= query)).checked_sub(1).map_or(NONE, |i| i as u32);

        if len >= self.block_digits {
            // Entries longer than D digits that are prefixes of the number lie in its block;
            // the longest shorter one is the block's.
            while let Some(e) = self.entries.get(at as usize) {
                if key_len(e.key) <= self.block_digits || (at as usize) < start {
                    break;
                }
                if is_prefix_of(e.key, padded, len) {
                    return self.rate(digits, key_len(e.key), e.rate);
                }
                at = e.parent;
            }
            if block.short == NONE {
                return None;
            }
            return self.rate(digits, (block.short >> 28) as usize, block.short & RATE_MASK);
        }
        while let Some(e) = self.entries.get(at as usize) {
            if is_prefix_of(e.key, padded, len) {
                return self.rate(digits, key_len(e.key), e.rate);
            }
            at = e.parent;
        }
        None
    }

    fn rate(&self, digits: &[u8], len: usize, rate: u32) -> Option<Rate> {
        let per_minute = *self.rates.get(rate as usize)?;
        Some(Rate { prefix: Prefix::of(digits, len), per_minute })
    }

    /// How many prefixes the deck has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many distinct rates (by value and scale) the deck has.
    pub fn distinct_rates(&self) -> usize {
        self.rates.len()
    }

    /// The heap memory the deck holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.blocks.capacity() * size_of::<Block>()
            + self.rates.capacity() * size_of::<Decimal>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every sign, mantissa (up to 96 bits) and scale, negative zero included.
        #[test]
        fn decimal_text_is_what_display_writes(
            lo in any::<u32>(),
            mid in any::<u32>(),
            hi in any::<u32>(),
            width in 0u32..4,
            negative in any::<bool>(),
            scale in 0u32..=28,
        ) {
            // Small mantissas too, where the scale outruns the digits.
            let (mid, hi, lo) = match width { 0 => (0, 0, lo % 1000), 1 => (0, 0, lo), 2 => (mid, 0, lo), _ => (mid, hi, lo) };
            let d = rust_decimal::Decimal::from_parts(lo, mid, hi, negative, scale);
            prop_assert_eq!(decimal_text(&d), d.to_string());
        }

        #[test]
        fn billing_increment_text_is_what_display_wrote(first in any::<u32>(), next in any::<u32>()) {
            let b = BillingIncrement { first, next };
            prop_assert_eq!(b.text(), format!("{first}/{next}"));
        }
    }

    #[test]
    fn decimal_text_of_rates_and_zeros() {
        for (text, want) in
            [("0.0100", "0.0100"), ("0", "0"), ("0.00", "0.00"), ("12.5", "12.5"), ("-0.001", "-0.001"), ("100", "100")]
        {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert_eq!(decimal_text(&d), want);
            assert_eq!(d.to_string(), want);
        }
    }

    /// The longest prefix of `number` in `rows`, by a scan.
    fn naive<'a>(rows: &'a [(String, String)], number: &str) -> Option<&'a (String, String)> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rows.iter().filter(|(p, _)| digits.starts_with(p.as_str())).max_by_key(|(p, _)| p.len())
    }

    fn deck_and_numbers() -> impl Strategy<Value = (Vec<(String, String)>, Vec<String>)> {
        // Few distinct digits, so prefixes overlap and numbers end in zeros often.
        let prefix = prop::collection::vec(prop::sample::select(vec!['0', '1', '2', '9']), 1..=15)
            .prop_map(|d| d.into_iter().collect::<String>());
        let rows = prop::collection::btree_map(prefix, 0u32..50, 0..400)
            .prop_map(|m| m.into_iter().map(|(p, r)| (p, format!("0.{r:04}"))).collect::<Vec<_>>());
        rows.prop_flat_map(|rows| {
            let n = rows.len();
            let number = (
                prop::collection::vec(prop::sample::select(vec!['0', '1', '2', '9']), 0..=18),
                0..n.max(1),
                any::<bool>(),
                any::<bool>(),
            );
            (Just(rows), prop::collection::vec(number, 1..40))
        })
        .prop_map(|(rows, numbers)| {
            let numbers = numbers
                .into_iter()
                .map(|(tail, at, extend, plus)| {
                    let tail: String = tail.into_iter().collect();
                    let base = if extend { rows.get(at).map_or("", |r| r.0.as_str()) } else { "" };
                    format!("{}{base}{tail}", if plus { "+" } else { "" })
                })
                .collect();
            (rows, numbers)
        })
    }

    proptest! {
        /// Every table size answers like a scan of the rows.
        #[test]
        fn every_block_size_matches_a_scan((rows, numbers) in deck_and_numbers(), digits in 1usize..=6) {
            let deck = RateDeck::build_with(rows.iter().map(|(p, r)| (p, r)), Some(digits)).unwrap();
            for number in &numbers {
                let got = deck.rate_for(number);
                let want = naive(&rows, number);
                prop_assert_eq!(got.map(|r| r.prefix.as_str().to_owned()), want.map(|w| w.0.clone()), "{}", number);
                prop_assert_eq!(got.map(|r| r.per_minute), want.map(|w| parse_amount(&w.1).unwrap()));
            }
        }
    }

    #[test]
    fn block_digits_follow_the_size() {
        let rows = |n: usize| (0..n).map(|i| (format!("{i:07}"), "0.01".to_owned())).collect::<Vec<_>>();
        assert_eq!(RateDeck::build(rows(0)).unwrap().block_digits, 1);
        assert_eq!(RateDeck::build(rows(99)).unwrap().block_digits, 1);
        assert_eq!(RateDeck::build(rows(100)).unwrap().block_digits, 2);
        assert_eq!(RateDeck::build(rows(12_345)).unwrap().block_digits, 4);
    }
}
