//! The `[anonymous_results_service]` section: how the service itself runs.

use std::{net::SocketAddr, time::Duration};

use super::{ConfigError, connections::ConnectionConfig, security::SecurityConfig, table::Table};

pub(super) const SERVICE_SECTION: &str = "anonymous_results_service";
const KEYS: &[&str] = &[
    "listen",
    "log_format",
    "shutdown_grace",
    "url_ttl",
    "max_url_ttl",
    "client_endpoint_url",
    "storage_timeout",
    "storage_retries",
    "manifest_cache_bytes",
    "refresh_interval",
    "metrics_listen",
];

/// The address `serve` listens on unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// How long a stopping service waits for calls in flight unless configured otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The memory the cache of sealed outcomes may hold unless configured otherwise.
pub const DEFAULT_MANIFEST_CACHE_BYTES: usize = 32 << 20;
/// The longest a presigned URL may live: the SigV4 limit of 7 days.
pub const URL_TTL_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// Authentication, TLS, reflection and request limits.
    pub security: SecurityConfig,
    /// How many connections, streams per connection, and how long each may take to start or sit idle.
    pub connections: ConnectionConfig,
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

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

pub(super) fn parse(mut table: Table) -> Result<ServiceConfig, ConfigError> {
    let listen_text = table.take_string("listen")?.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = parse_address(&table, "listen", &listen_text)?;
    let metrics_listen =
        table.take_string("metrics_listen")?.map(|text| parse_address(&table, "metrics_listen", &text)).transpose()?;
    let log_format = match table.take_string("log_format")?.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(_) => {
            return Err(ConfigError::invalid(&table.key("log_format"), "must be `text` or `json`"));
        }
    };
    let shutdown_grace = table.take_duration("shutdown_grace")?.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let urls = parse_urls(&mut table)?;
    let timeout = table.take_duration("storage_timeout")?.unwrap_or(Duration::from_secs(30));
    if timeout.is_zero() {
        return Err(ConfigError::invalid(&table.key("storage_timeout"), "must be longer than zero"));
    }
    let retries = table.take_count("storage_retries", 0..=10)?.unwrap_or(3);
    let manifest_cache_bytes =
        table.take_count("manifest_cache_bytes", 0..=64 << 30)?.unwrap_or(DEFAULT_MANIFEST_CACHE_BYTES);
    let refresh_interval = table.take_duration("refresh_interval")?.unwrap_or(Duration::from_secs(1));
    if refresh_interval.is_zero() {
        return Err(ConfigError::invalid(&table.key("refresh_interval"), "must be longer than zero"));
    }
    let security = super::security::parse(&mut table)?;
    let connections = super::connections::parse(&mut table)?;
    table.finish(&[KEYS, super::security::KEYS, super::connections::KEYS].concat())?;
    Ok(ServiceConfig {
        security,
        connections,
        refresh_interval,
        listen,
        metrics_listen,
        log_format,
        shutdown_grace,
        urls,
        storage: StorageClientConfig { timeout, retries },
        manifest_cache_bytes,
    })
}

/// `text`, the value of `key`, as a socket address.
fn parse_address(table: &Table, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::invalid(&table.key(key), "is not an address like 127.0.0.1:50051"))
}

fn parse_urls(table: &mut Table) -> Result<UrlConfig, ConfigError> {
    let max_ttl = table.take_duration("max_url_ttl")?.unwrap_or(URL_TTL_LIMIT);
    if max_ttl > URL_TTL_LIMIT || max_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            &table.key("max_url_ttl"),
            "must be between 1s and 7d (presigned URLs live at most 7 days)",
        ));
    }
    let default_ttl = table.take_duration("url_ttl")?.unwrap_or(Duration::from_secs(3600)).min(max_ttl);
    if default_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(&table.key("url_ttl"), "must be at least 1s"));
    }
    let client_endpoint_url = table.take_string("client_endpoint_url")?;
    if let Some(url) = &client_endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ConfigError::invalid(&table.key("client_endpoint_url"), "is not an http:// or https:// URL"));
    }
    Ok(UrlConfig { default_ttl, max_ttl, client_endpoint_url: client_endpoint_url.map(crate::secret::Secret::new) })
}

impl ServiceConfig {
    /// The section as TOML, as `check-config` prints it.
    pub(super) fn to_toml(&self) -> toml::Table {
        let duration = |d: Duration| toml::Value::from(humantime::format_duration(d).to_string());
        let mut table = toml::Table::new();
        table.insert("listen".into(), self.listen.to_string().into());
        table.insert("log_format".into(), self.log_format.name().into());
        table.insert("shutdown_grace".into(), duration(self.shutdown_grace));
        table.insert("url_ttl".into(), duration(self.urls.default_ttl));
        table.insert("max_url_ttl".into(), duration(self.urls.max_ttl));
        if let Some(url) = &self.urls.client_endpoint_url {
            table.insert("client_endpoint_url".into(), crate::secret::redact_urls(url.expose()).into());
        }
        table.insert("storage_timeout".into(), duration(self.storage.timeout));
        table.insert("storage_retries".into(), (self.storage.retries as i64).into());
        table.insert("manifest_cache_bytes".into(), (self.manifest_cache_bytes as i64).into());
        table.insert("refresh_interval".into(), duration(self.refresh_interval));
        if let Some(address) = self.metrics_listen {
            table.insert("metrics_listen".into(), address.to_string().into());
        }
        self.security.to_toml(&mut table);
        self.connections.to_toml(&mut table);
        table
    }
}
