//! The `[anonymous_results_service]` section: how the service itself runs.

use std::{net::SocketAddr, time::Duration};

use super::{
    ConfigError,
    connections::ConnectionConfig,
    key::{Key, KeyDefault, Kind},
    security::SecurityConfig,
    table::Table,
};
use crate::model;

pub(super) const SERVICE_SECTION: &str = "anonymous_results_service";

/// The address `serve` listens on unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// How long a stopping service waits for calls in flight unless configured otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The memory the cache of sealed outcomes may hold unless configured otherwise.
pub const DEFAULT_MANIFEST_CACHE_BYTES: usize = 32 << 20;
/// The longest a presigned URL may live: the SigV4 limit of 7 days.
pub const URL_TTL_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

const SECOND: Duration = Duration::from_secs(1);

pub(super) const LISTEN: Key = Key {
    name: "listen",
    kind: Kind::Address,
    default: KeyDefault::Text(DEFAULT_LISTEN),
    meaning: "the gRPC address; `serve --listen` overrides it",
};
pub(super) const LOG_FORMAT: Key = Key {
    name: "log_format",
    kind: Kind::Choice(&["text", "json"]),
    default: KeyDefault::Text("text"),
    meaning: "log lines to standard error: text, or one JSON object per line",
};
pub(super) const SHUTDOWN_GRACE: Key = Key {
    name: "shutdown_grace",
    kind: Kind::Duration { min: Duration::ZERO, max: model::MAX_DURATION, out_of_range: None },
    default: KeyDefault::Duration(DEFAULT_SHUTDOWN_GRACE),
    meaning: "on SIGINT or SIGTERM, how long calls in flight may take before the process exits anyway",
};
pub(super) const URL_TTL: Key = Key {
    name: "url_ttl",
    kind: Kind::Duration { min: SECOND, max: model::MAX_DURATION, out_of_range: Some("must be at least 1s") },
    default: KeyDefault::Duration(Duration::from_secs(3600)),
    meaning: "how long download URLs stay valid when Resolve does not say (at most max_url_ttl)",
};
pub(super) const MAX_URL_TTL: Key = Key {
    name: "max_url_ttl",
    kind: Kind::Duration {
        min: SECOND,
        max: URL_TTL_LIMIT,
        out_of_range: Some("must be between 1s and 7d (presigned URLs live at most 7 days)"),
    },
    default: KeyDefault::Duration(URL_TTL_LIMIT),
    meaning: "the longest a download URL may live, whatever Resolve asks",
};
pub(super) const CLIENT_ENDPOINT_URL: Key = Key {
    name: "client_endpoint_url",
    kind: Kind::Url,
    default: KeyDefault::None,
    meaning: "the store's endpoint as clients reach it, when it differs from the one the service uses",
};
pub(super) const STORAGE_TIMEOUT: Key = Key {
    name: "storage_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(30)),
    meaning: "the longest one storage operation may take, retries included",
};
pub(super) const STORAGE_RETRIES: Key = Key {
    name: "storage_retries",
    kind: Kind::Count(0..=10),
    default: KeyDefault::Count(3),
    meaning: "retries of a failed storage request, with exponential backoff",
};
pub(super) const MANIFEST_CACHE_BYTES: Key = Key {
    name: "manifest_cache_bytes",
    kind: Kind::Count(0..=64 << 30),
    default: KeyDefault::Count(DEFAULT_MANIFEST_CACHE_BYTES),
    meaning: "about how much memory the sealed outcomes kept in memory may hold",
};
pub(super) const REFRESH_INTERVAL: Key = Key {
    name: "refresh_interval",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(SECOND),
    meaning: "how long what is known of a result is trusted before storage is asked again; how often Watch polls",
};
pub(super) const BLOCKING_LIMIT: Key = Key {
    name: "blocking_limit",
    kind: Kind::Count(8..=4096),
    default: KeyDefault::Count(crate::storage::DEFAULT_BLOCKING_LIMIT),
    meaning: "the most blocking threads each class of filesystem work holds at once (sink files, record reads, record writes)",
};
pub(super) const REQUEST_TIMEOUT: Key = Key {
    name: "request_timeout",
    kind: Kind::POSITIVE_DURATION,
    default: KeyDefault::Duration(Duration::from_secs(30)),
    meaning: "how long a call's request may take to arrive whole; its answer (a Watch's stream) is not bounded",
};
pub(super) const METRICS_LISTEN: Key = Key {
    name: "metrics_listen",
    kind: Kind::Address,
    default: KeyDefault::None,
    meaning: "where Prometheus text is served over HTTP at /metrics",
};

/// The keys of this section itself; `security.rs` and `connections.rs` declare the rest of it.
pub(super) const KEYS: &[&Key] = &[
    &LISTEN,
    &LOG_FORMAT,
    &SHUTDOWN_GRACE,
    &URL_TTL,
    &MAX_URL_TTL,
    &CLIENT_ENDPOINT_URL,
    &STORAGE_TIMEOUT,
    &STORAGE_RETRIES,
    &MANIFEST_CACHE_BYTES,
    &REFRESH_INTERVAL,
    &BLOCKING_LIMIT,
    &REQUEST_TIMEOUT,
    &METRICS_LISTEN,
];

/// The keys of `[anonymous_results_service]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// `listen`: the gRPC address (default 127.0.0.1:50051; `serve --listen` overrides it).
    pub listen: SocketAddr,
    /// `log_format`: `text` (default) or `json`, one object per line.
    pub log_format: LogFormat,
    /// `shutdown_grace`: how long a stopping service waits for calls in flight before it exits anyway
    /// (default 30s).
    pub shutdown_grace: Duration,
    /// Presigned download URLs.
    pub urls: UrlConfig,
    /// Requests to an object store.
    pub storage: StorageClientConfig,
    /// `manifest_cache_bytes`: about how much memory the sealed outcomes kept in memory may hold (default
    /// 32 MiB: some 30,000 one-file results); a Resolve of a cached result makes no storage request.
    pub manifest_cache_bytes: usize,
    /// `refresh_interval`: how long a cached status is trusted before storage is asked again, and how often
    /// a Watch polls storage (default 1s). It bounds how soon a change made by another replica is seen.
    pub refresh_interval: Duration,
    /// `metrics_listen`: where Prometheus text is served over HTTP at `/metrics` (default: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// `blocking_limit`: the most blocking threads each class of the local backend's work holds at once
    /// (default 256); the runtime's blocking pool must allow [`ServiceConfig::blocking_threads`].
    pub blocking_limit: usize,
    /// `request_timeout`: how long a call's request may take to arrive whole (default 30s); then the call fails
    /// DEADLINE_EXCEEDED and its connection is closed. The answer is not bounded (a Watch streams on).
    pub request_timeout: Duration,
    /// Authentication, TLS, reflection and request limits.
    pub security: SecurityConfig,
    /// How many connections, streams per connection, and how long each may take to start or sit idle.
    pub connections: ConnectionConfig,
    /// How clients download, and the downloads served through the service.
    pub downloads: super::downloads::DownloadConfig,
    /// Where spans are exported (`otlp_endpoint`, ...).
    pub traces: super::traces::TraceConfig,
    /// The local backend's sinks: their group and mode.
    pub sinks: super::sinks::SinkConfig,
    /// `worker_storage_options`: the storage options handed to workers instead of the service's own (the keys
    /// of the configured object store's table, checked once it is known); `None`: workers get the service's.
    pub worker_storage_options: Option<std::collections::BTreeMap<String, crate::secret::Secret>>,
    /// `worker_credentials` and its keys: whether workers share the configured credentials or get ones scoped
    /// to their sink (S3 only, checked once the backend is known).
    pub worker_credentials: super::workers::WorkerCredentials,
}

/// How presigned URLs are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlConfig {
    /// `url_ttl`: how long a URL stays valid when Resolve does not say (default 1h).
    pub default_ttl: Duration,
    /// `max_url_ttl`: the longest a URL may stay valid, whatever Resolve asks (default and limit 7d).
    pub max_ttl: Duration,
    /// `client_endpoint_url`: the storage endpoint as the clients reach it, when it differs from the one the
    /// service and workers use (`aws_endpoint_url`). The signature covers the host, so URLs are signed for it.
    /// Held as a [`Secret`](crate::secret::Secret): a URL may carry a password (`http://user:pw@host`).
    pub client_endpoint_url: Option<crate::secret::Secret>,
}

/// How the service talks to an object store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageClientConfig {
    /// `storage_timeout`: the longest one storage operation may take, retries included (default 30s);
    /// past it the call fails with DEADLINE_EXCEEDED.
    pub timeout: Duration,
    /// `storage_retries`: how often a failed request is retried, with exponential backoff (default 3).
    pub retries: usize,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServiceConfig {
    /// How many blocking threads the runtime must allow (`max_blocking_threads`): [`BLOCKING_RESERVE`] above
    /// a `blocking_limit` for each of the three classes of the local backend's work, so that no class ever
    /// waits for a thread another holds.
    pub fn blocking_threads(&self) -> usize {
        self.blocking_limit.saturating_mul(3).saturating_add(BLOCKING_RESERVE)
    }
}

/// The blocking threads kept for work outside the classes (name lookups, reading configuration files).
pub const BLOCKING_RESERVE: usize = 64;

/// Reads the section: its own keys, then the security and connection keys of `security.rs` and
/// `connections.rs`. Answers it, and what was read as `check-config` prints it.
pub(super) fn parse(mut table: Table) -> Result<(ServiceConfig, toml::Table), ConfigError> {
    let required = |key: &Key| ConfigError::invalid(&format!("{SERVICE_SECTION}.{}", key.name), "is required");
    let listen = table.address(&LISTEN)?.ok_or_else(|| required(&LISTEN))?;
    let log_format = match table.text(&LOG_FORMAT)?.as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let max_ttl = table.duration(&MAX_URL_TTL)?.unwrap_or(URL_TTL_LIMIT);
    let urls = UrlConfig {
        default_ttl: table.duration(&URL_TTL)?.unwrap_or(URL_TTL.default_duration()).min(max_ttl),
        max_ttl,
        client_endpoint_url: table.secret(&CLIENT_ENDPOINT_URL)?,
    };
    let storage = StorageClientConfig {
        timeout: table.duration(&STORAGE_TIMEOUT)?.unwrap_or(STORAGE_TIMEOUT.default_duration()),
        retries: table.count(&STORAGE_RETRIES)?.unwrap_or(STORAGE_RETRIES.default_count()),
    };
    let config = ServiceConfig {
        listen,
        log_format,
        shutdown_grace: table.duration(&SHUTDOWN_GRACE)?.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        urls,
        storage,
        manifest_cache_bytes: table.count(&MANIFEST_CACHE_BYTES)?.unwrap_or(DEFAULT_MANIFEST_CACHE_BYTES),
        refresh_interval: table.duration(&REFRESH_INTERVAL)?.unwrap_or(REFRESH_INTERVAL.default_duration()),
        metrics_listen: table.address(&METRICS_LISTEN)?,
        blocking_limit: table.count(&BLOCKING_LIMIT)?.unwrap_or(BLOCKING_LIMIT.default_count()),
        request_timeout: table.duration(&REQUEST_TIMEOUT)?.unwrap_or(REQUEST_TIMEOUT.default_duration()),
        security: super::security::parse(&mut table)?,
        connections: super::connections::parse(&mut table)?,
        downloads: super::downloads::parse(&mut table)?,
        traces: super::traces::parse(&mut table)?,
        sinks: super::sinks::parse(&mut table)?,
        worker_storage_options: None,
        worker_credentials: super::workers::parse(&mut table)?,
    };
    let keys: Vec<&Key> = all_keys().collect();
    Ok((config, table.finish(&keys, &[])?))
}

/// Every key of the section, in the order the allowed keys are listed.
pub(super) fn all_keys() -> impl Iterator<Item = &'static Key> {
    [
        KEYS,
        super::downloads::KEYS,
        super::traces::KEYS,
        super::sinks::KEYS,
        super::workers::KEYS,
        super::security::KEYS,
        super::connections::KEYS,
    ]
    .into_iter()
    .flatten()
    .copied()
}
