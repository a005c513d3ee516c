//! Time as a value: the engine reads the clock and passes a [`Timestamp`] in, so every rule
//! that depends on time (nonce expiry, the UTC day of a spend limit, a calling window) is
//! deterministic and testable.

use serde::Serialize;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp(pub u64);

const MS_PER_DAY: u64 = 86_400_000;

impl Timestamp {
    pub const fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// Days since the epoch: the UTC day a daily spend limit counts in (resets 00:00:00 UTC).
    pub const fn utc_day(self) -> u64 {
        self.0 / MS_PER_DAY
    }

    /// Seconds since 00:00:00 UTC of this day.
    pub const fn second_of_day(self) -> u32 {
        ((self.0 % MS_PER_DAY) / 1000) as u32
    }

    /// This time plus `ms` milliseconds (saturating).
    pub const fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_boundaries() {
        // 2026-11-27T00:00:00Z = 1795737600
        let midnight = Timestamp::from_secs(1_795_737_600);
        assert_eq!(midnight.second_of_day(), 0);
        assert_eq!(Timestamp(midnight.0 - 1).utc_day() + 1, midnight.utc_day());
        assert_eq!(Timestamp(midnight.0 - 1).second_of_day(), 86_399);
        assert_eq!(midnight.plus_millis(90_000).second_of_day(), 90);
    }
}
