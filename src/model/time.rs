//! Time as the service computes it: instants that always fit a protobuf `Timestamp` (the years 1970 to
//! 9999), durations of at most [`MAX_DURATION`], and arithmetic that says when a result would fall outside
//! that range instead of panicking.
//!
//! Every instant the service computes or answers is a [`Timestamp`]. A request or a configuration value
//! longer than [`MAX_DURATION`] is refused where it is read; a record stored by an older release may still
//! carry a longer one, so sums that leave the range are `None` ([`Timestamp::checked_add`]), and the callers
//! say what that means (for an expiry: kept until released).

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration the service takes from a request or a configuration file: 100 years (humantime's
/// `100y`, of 365.25 days each). With it, every instant the service computes stays before the year 9999.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// What an error says of [`MAX_DURATION`].
pub const MAX_DURATION_TEXT: &str = "100 years (\"100y\")";

/// The seconds from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, the last second a protobuf `Timestamp`
/// holds.
const LATEST_SECONDS: u64 = 253_402_300_799;

/// An instant from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z: what a protobuf `Timestamp`
/// holds and JSON (RFC 3339) can write. Stored exactly as `SystemTime` is (`secs_since_epoch`,
/// `nanos_since_epoch`), so records written before this type existed read unchanged.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(SystemTime::UNIX_EPOCH);

    /// The last instant of the year 9999.
    pub fn latest() -> Self {
        Self(SystemTime::UNIX_EPOCH + Duration::new(LATEST_SECONDS, 999_999_999))
    }

    /// `time`, if it lies in the range.
    pub fn new(time: SystemTime) -> Option<Self> {
        let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        (since_epoch.as_secs() <= LATEST_SECONDS).then_some(Self(time))
    }

    /// `time`, moved into the range: a clock before 1970 reads as 1970, one past 9999 as its last instant.
    pub fn clamped(time: SystemTime) -> Self {
        match time.duration_since(SystemTime::UNIX_EPOCH) {
            Err(_) => Self::UNIX_EPOCH,
            Ok(_) => Self::new(time).unwrap_or_else(Self::latest),
        }
    }

    /// The instant `ms` milliseconds after 1970, if it lies in the range.
    pub fn from_millis(ms: u64) -> Option<Self> {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)).and_then(Self::new)
    }

    /// The milliseconds since 1970 (they fit: the range ends in 9999).
    pub fn millis(self) -> u64 {
        u64::try_from(self.since_epoch().as_millis()).unwrap_or(u64::MAX)
    }

    /// This instant plus `duration`, if the sum lies in the range.
    pub fn checked_add(self, duration: Duration) -> Option<Self> {
        self.0.checked_add(duration).and_then(Self::new)
    }

    /// This instant plus `duration`, at most the last instant of the range.
    pub fn saturating_add(self, duration: Duration) -> Self {
        self.checked_add(duration).unwrap_or_else(Self::latest)
    }

    /// This instant minus `duration`, at least the first instant of the range (1970).
    pub fn saturating_sub(self, duration: Duration) -> Self {
        self.0.checked_sub(duration).and_then(Self::new).unwrap_or(Self(SystemTime::UNIX_EPOCH))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.duration_since(earlier.0).unwrap_or_default()
    }

    /// Without its fraction of a second.
    pub fn whole_seconds(self) -> Self {
        Self(SystemTime::UNIX_EPOCH + Duration::from_secs(self.since_epoch().as_secs()))
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }

    fn since_epoch(self) -> Duration {
        self.0.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Timestamp> for prost_types::Timestamp {
    fn from(time: Timestamp) -> Self {
        let since_epoch = time.since_epoch();
        // Both fit: at most 253,402,300,799 seconds and 999,999,999 nanoseconds.
        Self {
            seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let time = SystemTime::deserialize(deserializer)?;
        Self::new(time).ok_or_else(|| serde::de::Error::custom("an instant outside the years 1970 to 9999"))
    }
}

/// `duration`, if it is at most [`MAX_DURATION`]; else the message to show with its name.
pub fn bounded(duration: Duration) -> Result<Duration, String> {
    match duration <= MAX_DURATION {
        true => Ok(duration),
        false => Err(format!("is longer than {MAX_DURATION_TEXT}, the longest duration this service takes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_that_of_a_protobuf_timestamp() {
        let latest = Timestamp::latest();
        assert_eq!(latest.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::new(latest.system_time() + Duration::from_nanos(1)), None);
        assert_eq!(Timestamp::new(SystemTime::UNIX_EPOCH - Duration::from_nanos(1)), None);
        assert_eq!(latest.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(Timestamp::UNIX_EPOCH.checked_add(Duration::MAX), None);
        assert_eq!(Timestamp::UNIX_EPOCH.saturating_add(Duration::MAX), latest);
        assert_eq!(Timestamp::from_millis(u64::MAX), None);
        let proto = prost_types::Timestamp::from(latest);
        assert_eq!((proto.seconds, proto.nanos), (253_402_300_799, 999_999_999));
    }

    #[test]
    fn a_century_from_any_time_this_millennium_stays_in_range() {
        let year_3000 = Timestamp::UNIX_EPOCH.checked_add(Duration::from_secs(32_503_680_000)).unwrap();
        assert!(year_3000.checked_add(MAX_DURATION).and_then(|t| t.checked_add(MAX_DURATION)).is_some());
        assert!(bounded(MAX_DURATION).is_ok());
        assert!(bounded(MAX_DURATION + Duration::from_nanos(1)).unwrap_err().contains("100 years"));
    }

    #[test]
    fn stored_as_system_time_is_and_refused_out_of_range() {
        let time = Timestamp::from_millis(1_796_079_276_734).unwrap();
        let json = serde_json::to_string(&time).unwrap();
        assert_eq!(json, serde_json::to_string(&time.system_time()).unwrap());
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), time);
        let far = r#"{"secs_since_epoch":253402300800,"nanos_since_epoch":0}"#;
        assert!(serde_json::from_str::<Timestamp>(far).is_err());
    }
}
