//! The `[scheduler] anonymous_results` table (aliases `anonymous_result_location`, the newer clusters' name,
//! and `anonymous_result_dst`, the older ones'): which storage backend holds the results, with the seed's keys
//! verbatim.

mod azure;
mod gcs;
mod location;
mod s3;

use std::path::PathBuf;

pub(super) use azure::{ABS_URL, AZURE_OPTIONS};
pub use azure::{AzureConfig, AzureUrl};
pub(super) use gcs::{GCS_OPTIONS, GCS_URL};
pub use gcs::{GcsConfig, GcsUrl};
pub(super) use s3::{S3_OPTIONS, S3_URL};
pub use s3::{S3Config, S3Url};

use super::{
    BudgetConfig, ConfigError, RetentionConfig,
    key::{Key, KeyDefault, Kind},
    table::Table,
};

/// The names the location table may carry, old and new cluster versions alike; one of them at a time.
pub(super) const LOCATION_TABLES: &[&str] = &["anonymous_results", "anonymous_result_location", "anonymous_result_dst"];
/// The backends a location table may configure; exactly one of them.
const BACKENDS: &[&str] = &["local", "s3", "gcs", "abs"];
pub(super) const ALLOW_LOCAL_SINKS: Key = Key {
    name: "allow_local_sinks",
    kind: Kind::Bool,
    default: KeyDefault::Bool(false),
    meaning: "must be true for the local backend",
};
pub(super) const LOCAL_PATH: Key = Key {
    name: "path",
    kind: Kind::Path,
    default: KeyDefault::None,
    meaning: "the results' root folder, on a filesystem every worker and client mounts at this same path",
};
/// Where results are stored: exactly one backend.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendConfig {
    /// `anonymous_results.local`: a path on a filesystem shared by workers and clients.
    Local(LocalConfig),
    /// `anonymous_results.s3`: an S3-compatible bucket.
    S3(S3Config),
    /// `anonymous_results.gcs`: a Google Cloud Storage bucket.
    Gcs(GcsConfig),
    /// `anonymous_results.abs`: an Azure Blob Storage container.
    Azure(AzureConfig),
}

/// `anonymous_results.local`.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalConfig {
    /// `path`: the root folder of the results; a relative path is taken from the working directory.
    pub path: PathBuf,
}

/// Reads the `[scheduler]` section: `allow_local_sinks` and the location table (its backend and its
/// retention keys). Other keys are the cluster's. Answers also what was read, as `check-config` prints it
/// (the location table under its first name).
pub(super) fn parse_scheduler(
    mut scheduler: Table,
) -> Result<(BackendConfig, RetentionConfig, BudgetConfig, toml::Table), ConfigError> {
    let allow_local_sinks = scheduler.bool(&ALLOW_LOCAL_SINKS)?.unwrap_or(ALLOW_LOCAL_SINKS.default_bool());
    let mut found = Vec::new();
    for name in LOCATION_TABLES {
        if let Some(table) = scheduler.take_table(name)? {
            found.push((*name, table));
        }
    }
    let mut location = match found.len() {
        0 => return Err(no_backend()),
        1 => found.remove(0).1,
        _ => {
            let names: Vec<String> = found.iter().map(|(name, _)| format!("`scheduler.{name}`")).collect();
            return Err(ConfigError::invalid(
                &format!("scheduler.{}", found[1].0),
                format!("{} are set: they are one table under several names; keep one", names.join(" and ")),
            ));
        }
    };
    let mut backends = Vec::new();
    for name in BACKENDS {
        if let Some(table) = location.take_table(name)? {
            backends.push((*name, table));
        }
    }
    let location_path = location.path().to_owned();
    let retention = super::retention::parse(&mut location)?;
    let budget = super::budget::parse(&mut location)?;
    let keys: Vec<&Key> = location_keys().collect();
    let mut shown_location = location.finish(&keys, BACKENDS)?;
    let (backend, shown_backend) = match backends.len() {
        0 => Err(no_backend()),
        1 => {
            let (name, table) = backends.remove(0);
            parse_backend(name, table, allow_local_sinks)
        }
        _ => {
            let keys: Vec<String> = backends.iter().map(|(name, _)| format!("{location_path}.{name}")).collect();
            Err(ConfigError::invalid(
                &keys[1],
                format!("only one backend may be configured, but {} are; keep one", keys.join(" and ")),
            ))
        }
    }?;
    shown_location.insert(backend.name().into(), shown_backend.into());
    let mut shown = scheduler.finish_ignoring_the_rest();
    shown.insert(LOCATION_TABLES[0].into(), shown_location.into());
    Ok((backend, retention, budget, shown))
}

/// The keys of the location table besides its backend: retention and budget.
pub(super) fn location_keys() -> impl Iterator<Item = &'static Key> {
    super::retention::KEYS.iter().chain(super::budget::KEYS).copied()
}

fn no_backend() -> ConfigError {
    ConfigError::invalid(
        "scheduler.anonymous_results",
        "no backend is configured: set `anonymous_results.local.path` (with `allow_local_sinks = true`), \
         `anonymous_results.s3.url`, `anonymous_results.gcs.url` or `anonymous_results.abs.url` under [scheduler]",
    )
}

fn parse_backend(
    name: &str,
    mut table: Table,
    allow_local_sinks: bool,
) -> Result<(BackendConfig, toml::Table), ConfigError> {
    match name {
        "local" => {
            let path = table.path_value(&LOCAL_PATH)?;
            let path_key = table.key(LOCAL_PATH.name);
            let shown = table.finish(&[&LOCAL_PATH], &[])?;
            let path = path.ok_or_else(|| ConfigError::invalid(&path_key, "is required: the results' root folder"))?;
            if !allow_local_sinks {
                return Err(ConfigError::invalid(
                    "scheduler.allow_local_sinks",
                    format!("must be true to write results to a local path (`{path_key}` is set)"),
                ));
            }
            Ok((BackendConfig::Local(LocalConfig { path }), shown))
        }
        "s3" => s3::parse(table).map(|(s3, shown)| (BackendConfig::S3(s3), shown)),
        "gcs" => gcs::parse(table).map(|(gcs, shown)| (BackendConfig::Gcs(gcs), shown)),
        _ => azure::parse(table).map(|(azure, shown)| (BackendConfig::Azure(azure), shown)),
    }
}

impl BackendConfig {
    /// The backend's table name: `local`, `s3`, `gcs`, `abs`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::S3(_) => "s3",
            Self::Gcs(_) => "gcs",
            Self::Azure(_) => "abs",
        }
    }
}

/// The key of `[anonymous_results_service]` whose table holds the storage options handed to workers instead
/// of the service's own.
pub(super) const WORKER_STORAGE_OPTIONS: &str = "worker_storage_options";

/// The storage options of the table `worker_storage_options`, which takes the keys of the configured
/// backend's table but its URL, checked here because it is only now that the backend is known; and what was
/// read, to be shown (secrets redacted). The local backend hands workers no credentials: it takes none.
pub(super) fn read_worker_options(
    mut table: Table,
    backend: &BackendConfig,
) -> Result<(std::collections::BTreeMap<String, crate::secret::Secret>, toml::Table), ConfigError> {
    let options = match backend {
        BackendConfig::S3(_) => S3_OPTIONS,
        BackendConfig::Gcs(_) => GCS_OPTIONS,
        BackendConfig::Azure(_) => AZURE_OPTIONS,
        BackendConfig::Local(_) => {
            let message = "applies to object stores: the local backend hands workers no storage options (its \
                           sinks' group and mode are local.sink_group and local.sink_mode)";
            return Err(ConfigError::invalid(table.path(), message));
        }
    };
    let mut read = std::collections::BTreeMap::new();
    for option in options {
        if let Some(value) = table.secret(option)? {
            read.insert(option.name.to_owned(), value);
        }
    }
    let keys: Vec<&Key> = options.iter().collect();
    let shown = table.finish(&keys, &[])?;
    Ok((read, shown))
}
