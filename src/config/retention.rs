//! The retention keys of the location table (`[scheduler] anonymous_results.retention`, ...): how long results
//! are kept, and how often the pruner looks for the ones to delete.

use std::time::Duration;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};

pub(super) const RETENTION: Key = Key {
    name: "retention",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::None,
    meaning: "how long a committed result is kept when Allocate asks no ttl; unset: until released",
};
pub(super) const MAX_RETENTION: Key = Key {
    name: "max_retention",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::None,
    meaning: "the longest ttl Allocate may ask for or Renew may extend to; unset: no limit",
};
pub(super) const COMMIT_TIMEOUT: Key = Key {
    name: "commit_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(24 * 3600)),
    meaning: "how long a worker has to commit after Allocate; also how long an aborted result's record is kept",
};
pub(super) const PRUNE_INTERVAL: Key = Key {
    name: "prune_interval",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(60)),
    meaning: "how often the pruner looks for expired results and abandoned allocations",
};

pub(super) const SWEEP_INTERVAL: Key = Key {
    name: "sweep_interval",
    kind: Kind::Duration { min: Duration::from_secs(1), max: crate::model::MAX_DURATION, out_of_range: None },
    default: KeyDefault::Duration(Duration::from_secs(3600)),
    meaning: "how often a page of the control folders is swept for what crashes left (temporary files, orphan claims)",
};

pub(super) const KEYS: &[&Key] = &[&RETENTION, &MAX_RETENTION, &COMMIT_TIMEOUT, &PRUNE_INTERVAL, &SWEEP_INTERVAL];

/// How long results are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `retention`: how long a committed result is kept when Allocate asks no TTL. `None` (the default): until
    /// released, as the cluster's documentation says of anonymous results.
    pub retention: Option<Duration>,
    /// `max_retention`: the longest TTL Allocate may ask for or Renew may extend to. `None`: no limit.
    pub max_retention: Option<Duration>,
    /// `commit_timeout`: how long a worker has to commit after Allocate (default 24h); an allocation not
    /// committed by then is abandoned and deleted, and an aborted result's record is kept this long.
    pub commit_timeout: Duration,
    /// `prune_interval`: how often the pruner runs (default 1m).
    pub prune_interval: Duration,
    /// `sweep_interval`: how often the sweep reads its next page of the control folders (default 1h).
    pub sweep_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention: None,
            max_retention: None,
            commit_timeout: COMMIT_TIMEOUT.default_duration(),
            prune_interval: PRUNE_INTERVAL.default_duration(),
            sweep_interval: SWEEP_INTERVAL.default_duration(),
        }
    }
}

impl RetentionConfig {
    /// The TTL of a committed result: the one asked for, else `retention`; `None` means until released.
    pub fn ttl(&self, asked: Option<Duration>) -> Option<Duration> {
        asked.or(self.retention).map(|ttl| self.cap(ttl))
    }

    /// `ttl`, at most `max_retention`.
    pub fn cap(&self, ttl: Duration) -> Duration {
        self.max_retention.map_or(ttl, |max| ttl.min(max))
    }
}

pub(super) fn parse(location: &mut Table) -> Result<RetentionConfig, ConfigError> {
    let defaults = RetentionConfig::default();
    let retention = location.duration(&RETENTION)?;
    let max_retention = location.duration(&MAX_RETENTION)?;
    if let (Some(retention), Some(max)) = (retention, max_retention)
        && retention > max
    {
        return Err(ConfigError::invalid(
            &location.key(RETENTION.name),
            format!("is longer than `{}` ({})", location.key(MAX_RETENTION.name), humantime::format_duration(max)),
        ));
    }
    Ok(RetentionConfig {
        retention,
        max_retention,
        commit_timeout: location.duration(&COMMIT_TIMEOUT)?.unwrap_or(defaults.commit_timeout),
        prune_interval: location.duration(&PRUNE_INTERVAL)?.unwrap_or(defaults.prune_interval),
        sweep_interval: location.duration(&SWEEP_INTERVAL)?.unwrap_or(defaults.sweep_interval),
    })
}
