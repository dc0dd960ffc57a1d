//! The connection keys of `[anonymous_results_service]`: how many connections the gRPC listener holds, how
//! many streams each may carry, and how long one may take to start, sit idle or leave a ping unanswered.

use std::time::Duration;

use super::{ConfigError, table::Table};

pub(super) const KEYS: &[&str] = &[
    "max_connections",
    "max_concurrent_streams",
    "max_header_bytes",
    "handshake_timeout",
    "idle_timeout",
    "keepalive_interval",
    "keepalive_timeout",
];

/// How the gRPC listener treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// `max_connections` (default 4,096): the most connections held at once, fewer if the process may not
    /// open that many descriptors (a share is kept for storage). At the cap, the oldest connection still in
    /// its handshake makes room for a new one; when none is, a new connection is closed at once.
    pub max_connections: usize,
    /// `max_concurrent_streams` (default 256): the most calls in progress on one connection; HTTP/2 clients
    /// wait for a free stream beyond it.
    pub max_concurrent_streams: u32,
    /// `max_header_bytes` (default 16 KiB): the largest header block of one call.
    pub max_header_bytes: u32,
    /// `handshake_timeout` (default 10s): a connection that has not finished its TLS handshake and sent the
    /// HTTP/2 preface this long after it was accepted is closed.
    pub handshake_timeout: Duration,
    /// `idle_timeout` (default 5m): a connection without a call in progress for this long is sent a GOAWAY and
    /// closed (its client connects again for its next call); at the latest `keepalive_timeout` later.
    pub idle_timeout: Duration,
    /// `keepalive_interval` (default 60s): how often an HTTP/2 ping checks that a connection's peer is there.
    pub keepalive_interval: Duration,
    /// `keepalive_timeout` (default 20s): a ping unanswered this long closes the connection.
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_concurrent_streams: 256,
            max_header_bytes: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<ConnectionConfig, ConfigError> {
    let defaults = ConnectionConfig::default();
    let positive = |table: &mut Table, key: &str, default: Duration| -> Result<Duration, ConfigError> {
        match table.take_duration(key)? {
            Some(d) if d.is_zero() => Err(ConfigError::invalid(&table.key(key), "must be longer than zero")),
            other => Ok(other.unwrap_or(default)),
        }
    };
    let count = |table: &mut Table, key: &str, range: std::ops::RangeInclusive<usize>, default: usize| {
        table.take_count(key, range).map(|n| n.unwrap_or(default))
    };
    let max_concurrent_streams = count(table, "max_concurrent_streams", 1..=1 << 20, 256)?;
    let max_header_bytes = count(table, "max_header_bytes", 1024..=1 << 20, 16 * 1024)?;
    Ok(ConnectionConfig {
        max_connections: count(table, "max_connections", 1..=1 << 20, defaults.max_connections)?,
        // Both fit: the ranges end at 2^20.
        max_concurrent_streams: u32::try_from(max_concurrent_streams).unwrap_or(u32::MAX),
        max_header_bytes: u32::try_from(max_header_bytes).unwrap_or(u32::MAX),
        handshake_timeout: positive(table, "handshake_timeout", defaults.handshake_timeout)?,
        idle_timeout: positive(table, "idle_timeout", defaults.idle_timeout)?,
        keepalive_interval: positive(table, "keepalive_interval", defaults.keepalive_interval)?,
        keepalive_timeout: positive(table, "keepalive_timeout", defaults.keepalive_timeout)?,
    })
}

impl ConnectionConfig {
    /// The keys as TOML, as `check-config` prints them.
    pub(super) fn to_toml(self, table: &mut toml::Table) {
        let duration = |d: Duration| toml::Value::from(humantime::format_duration(d).to_string());
        table.insert("max_connections".into(), (self.max_connections as i64).into());
        table.insert("max_concurrent_streams".into(), i64::from(self.max_concurrent_streams).into());
        table.insert("max_header_bytes".into(), i64::from(self.max_header_bytes).into());
        table.insert("handshake_timeout".into(), duration(self.handshake_timeout));
        table.insert("idle_timeout".into(), duration(self.idle_timeout));
        table.insert("keepalive_interval".into(), duration(self.keepalive_interval));
        table.insert("keepalive_timeout".into(), duration(self.keepalive_timeout));
    }
}
