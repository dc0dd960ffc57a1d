//! The download keys of `[anonymous_results_service]`: how Resolve's locations let clients download (from
//! the store directly, or through the service), where clients reach the service, and the limits of the
//! downloads it serves.

use std::time::Duration;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};
use crate::{
    model::{self, DownloadMode},
    secret::Secret,
};

pub(super) const DOWNLOAD_MODE: Key = Key {
    name: "download_mode",
    kind: Kind::Choice(&["direct", "proxy", "redirect"]),
    default: KeyDefault::Text("direct"),
    meaning: "how clients download when Resolve does not say: direct (store URLs or paths), proxy (through the service) or redirect (through the service to a fresh store URL)",
};
pub(super) const DOWNLOAD_BASE_URL: Key = Key {
    name: "download_base_url",
    kind: Kind::Url,
    default: KeyDefault::None,
    meaning: "the service's URL as clients reach it, for proxy and redirect links (default: from the listen address)",
};
pub(super) const MAX_DOWNLOADS: Key = Key {
    name: "max_downloads",
    kind: Kind::Count(1..=1 << 20),
    default: KeyDefault::Count(256),
    meaning: "the most proxied downloads served at once; beyond it a download is answered 503",
};
pub(super) const DOWNLOAD_STALL_TIMEOUT: Key = Key {
    name: "download_stall_timeout",
    kind: Kind::Duration {
        min: Duration::from_secs(1),
        max: model::MAX_DURATION,
        out_of_range: Some("must be at least 1s"),
    },
    default: KeyDefault::Duration(Duration::from_secs(60)),
    meaning: "a proxied download that makes no progress for this long is cut off",
};

pub(super) const KEYS: &[&Key] = &[&DOWNLOAD_MODE, &DOWNLOAD_BASE_URL, &MAX_DOWNLOADS, &DOWNLOAD_STALL_TIMEOUT];

/// The downloads the service serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadConfig {
    /// `download_mode` (default `direct`): the mode of a Resolve that does not ask one.
    pub mode: DownloadMode,
    /// `download_base_url`: the URL clients reach the service at (scheme, host, port, perhaps a path), for
    /// the links of proxy and redirect modes. Absent: derived from the listen address when it is one clients
    /// can reach (not `0.0.0.0`).
    pub base_url: Option<Secret>,
    /// `max_downloads` (default 256): proxied downloads in flight at once; beyond it, 503 with Retry-After.
    pub max_downloads: usize,
    /// `download_stall_timeout` (default 60s): a proxied download whose client takes nothing (or whose
    /// storage gives nothing) for this long is cut off, and what it held is freed.
    pub stall_timeout: Duration,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            mode: DownloadMode::Direct,
            base_url: None,
            max_downloads: MAX_DOWNLOADS.default_count(),
            stall_timeout: DOWNLOAD_STALL_TIMEOUT.default_duration(),
        }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<DownloadConfig, ConfigError> {
    let defaults = DownloadConfig::default();
    let mode = match table.text(&DOWNLOAD_MODE)?.as_deref() {
        Some("proxy") => DownloadMode::Proxy,
        Some("redirect") => DownloadMode::Redirect,
        _ => DownloadMode::Direct,
    };
    Ok(DownloadConfig {
        mode,
        base_url: table.secret(&DOWNLOAD_BASE_URL)?,
        max_downloads: table.count(&MAX_DOWNLOADS)?.unwrap_or(defaults.max_downloads),
        stall_timeout: table.duration(&DOWNLOAD_STALL_TIMEOUT)?.unwrap_or(defaults.stall_timeout),
    })
}
