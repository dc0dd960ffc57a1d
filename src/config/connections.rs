//! The connection keys of `[anonymous_results_service]`: how many connections the gRPC listener holds, how
//! many streams each may carry, and how long one may take to start, sit idle or leave a ping unanswered.

use std::time::Duration;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};

pub(super) const MAX_CONNECTIONS: Key = Key {
    name: "max_connections",
    kind: Kind::Count(1..=1 << 20),
    default: KeyDefault::Count(4096),
    meaning: "the most connections held at once (fewer if the process may not open that many descriptors)",
};
pub(super) const MAX_CONCURRENT_STREAMS: Key = Key {
    name: "max_concurrent_streams",
    kind: Kind::Count(1..=1 << 20),
    default: KeyDefault::Count(256),
    meaning: "the most calls in progress on one connection",
};
pub(super) const MAX_HEADER_BYTES: Key = Key {
    name: "max_header_bytes",
    kind: Kind::Count(1024..=1 << 20),
    default: KeyDefault::Count(16 * 1024),
    meaning: "the largest header block of one call",
};
pub(super) const HANDSHAKE_TIMEOUT: Key = Key {
    name: "handshake_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(10)),
    meaning: "how long a connection may take to finish its TLS handshake and send the HTTP/2 preface",
};
pub(super) const IDLE_TIMEOUT: Key = Key {
    name: "idle_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(300)),
    meaning: "how long a connection may go without a call before it is closed with a GOAWAY",
};
pub(super) const KEEPALIVE_INTERVAL: Key = Key {
    name: "keepalive_interval",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(60)),
    meaning: "how often an HTTP/2 ping checks that a connection's peer is there",
};
pub(super) const KEEPALIVE_TIMEOUT: Key = Key {
    name: "keepalive_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(20)),
    meaning: "how long an unanswered ping keeps a connection open",
};

pub(super) const KEYS: &[&Key] = &[
    &MAX_CONNECTIONS,
    &MAX_CONCURRENT_STREAMS,
    &MAX_HEADER_BYTES,
    &HANDSHAKE_TIMEOUT,
    &IDLE_TIMEOUT,
    &KEEPALIVE_INTERVAL,
    &KEEPALIVE_TIMEOUT,
];

/// How the gRPC listener treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// `max_connections` (default 4,096): the most connections held at once, fewer if the process may not
    /// open that many descriptors (a share is kept for storage). At the cap, the oldest connection still in
    /// its handshake makes room for a new one, else the one whose request has been arriving the longest (over
    /// a second); when none is, a new connection is closed at once.
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
            max_connections: MAX_CONNECTIONS.default_count(),
            max_concurrent_streams: count_u32(MAX_CONCURRENT_STREAMS.default_count()),
            max_header_bytes: count_u32(MAX_HEADER_BYTES.default_count()),
            handshake_timeout: HANDSHAKE_TIMEOUT.default_duration(),
            idle_timeout: IDLE_TIMEOUT.default_duration(),
            keepalive_interval: KEEPALIVE_INTERVAL.default_duration(),
            keepalive_timeout: KEEPALIVE_TIMEOUT.default_duration(),
        }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<ConnectionConfig, ConfigError> {
    let defaults = ConnectionConfig::default();
    Ok(ConnectionConfig {
        max_connections: table.count(&MAX_CONNECTIONS)?.unwrap_or(defaults.max_connections),
        max_concurrent_streams: table
            .count(&MAX_CONCURRENT_STREAMS)?
            .map_or(defaults.max_concurrent_streams, count_u32),
        max_header_bytes: table.count(&MAX_HEADER_BYTES)?.map_or(defaults.max_header_bytes, count_u32),
        handshake_timeout: table.duration(&HANDSHAKE_TIMEOUT)?.unwrap_or(defaults.handshake_timeout),
        idle_timeout: table.duration(&IDLE_TIMEOUT)?.unwrap_or(defaults.idle_timeout),
        keepalive_interval: table.duration(&KEEPALIVE_INTERVAL)?.unwrap_or(defaults.keepalive_interval),
        keepalive_timeout: table.duration(&KEEPALIVE_TIMEOUT)?.unwrap_or(defaults.keepalive_timeout),
    })
}

/// A count of these keys as HTTP/2 takes it (their ranges end at 2^20).
fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}
