//! The retention keys of the location table (`[scheduler] anonymous_results.retention`, ...): how long results
//! are kept, and how often the pruner looks for the ones to delete.

use std::time::Duration;

use super::{ConfigError, table::Table};

pub(super) const KEYS: &[&str] = &["retention", "max_retention", "commit_timeout", "prune_interval"];

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
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention: None,
            max_retention: None,
            commit_timeout: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(60),
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

    pub(super) fn to_toml(&self) -> toml::Table {
        let duration = |d: Duration| toml::Value::from(humantime::format_duration(d).to_string());
        let mut table = toml::Table::new();
        if let Some(retention) = self.retention {
            table.insert("retention".into(), duration(retention));
        }
        if let Some(max) = self.max_retention {
            table.insert("max_retention".into(), duration(max));
        }
        table.insert("commit_timeout".into(), duration(self.commit_timeout));
        table.insert("prune_interval".into(), duration(self.prune_interval));
        table
    }
}

pub(super) fn parse(location: &mut Table) -> Result<RetentionConfig, ConfigError> {
    let defaults = RetentionConfig::default();
    let positive = |table: &mut Table, key: &str| -> Result<Option<Duration>, ConfigError> {
        match table.take_duration(key)? {
            Some(d) if d.is_zero() => Err(ConfigError::invalid(&table.key(key), "must be longer than zero")),
            other => Ok(other),
        }
    };
    let retention = positive(location, "retention")?;
    let max_retention = positive(location, "max_retention")?;
    let commit_timeout = positive(location, "commit_timeout")?.unwrap_or(defaults.commit_timeout);
    let prune_interval = positive(location, "prune_interval")?.unwrap_or(defaults.prune_interval);
    if let (Some(retention), Some(max)) = (retention, max_retention)
        && retention > max
    {
        return Err(ConfigError::invalid(
            &location.key("retention"),
            format!("is longer than `{}` ({})", location.key("max_retention"), humantime::format_duration(max)),
        ));
    }
    Ok(RetentionConfig { retention, max_retention, commit_timeout, prune_interval })
}
