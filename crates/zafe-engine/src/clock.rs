//! Time: one clock, typed instants.
//!
//! Everything in the request path reads the time from one [`Clock`]: the server's is the system
//! clock; tests hold a [`ManualClock`] and move it, instead of sleeping (as rustls injects its
//! `TimeProvider`). An instant is a [`Timestamp`] (Unix time in microseconds); durations are
//! [`std::time::Duration`]. Stored records keep the unit they have always had (seconds for
//! tokens and sessions, microseconds for audit entries, nanoseconds for KV versions): the
//! conversions are the accessors of `Timestamp`, and nowhere else.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// An instant: Unix time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Whole Unix seconds (rounded down).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Unix microseconds.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Unix nanoseconds (at microsecond precision).
    pub const fn nanos(self) -> i64 {
        self.0.saturating_mul(1_000)
    }

    /// This instant moved forward by `by` (saturating).
    pub fn after(self, by: Duration) -> Timestamp {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp::from_micros(i64::try_from(nanos / 1_000).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests that would otherwise sleep until a token,
/// a session or a secret id expires.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            micros: AtomicI64::new(start.micros()),
        }
    }

    /// A clock standing at the system's current time.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(SystemClock.now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instant_in_every_unit() {
        let t = Timestamp::from_secs(1_700_000_000).after(Duration::from_micros(1_500_000));
        assert_eq!(t.secs(), 1_700_000_001);
        assert_eq!(t.micros(), 1_700_000_001_500_000);
        assert_eq!(t.nanos(), 1_700_000_001_500_000_000);
        // Before the epoch, seconds round down, not towards zero.
        assert_eq!(Timestamp::from_micros(-1).secs(), -1);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        assert_eq!(clock.now().secs(), 100);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now().secs(), 3700);
        let system = SystemClock.now().secs();
        assert!(system > 1_600_000_000, "{system}");
    }
}
