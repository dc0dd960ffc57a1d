//! Configuration: the cluster's own config file, read with figment in three layers (the service's defaults,
//! then the TOML file, then `PC_CUBLET__section__key` environment variables), validated into typed values.
//!
//! The service reads two sections and ignores every other one: `[scheduler]` (the cluster's; of it only
//! `allow_local_sinks` and the `anonymous_results` table, alias `anonymous_result_location`) and
//! `[anonymous_results_service]` (this service's own keys). Tables the service owns refuse unknown keys.

mod backend;
mod budget;
mod bytes;
mod connections;
mod downloads;
mod key;
mod retention;
mod security;
mod service;
mod sinks;
mod table;
mod traces;
mod workers;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
    value::{Dict, Value},
};

pub use backend::{AzureConfig, AzureUrl, BackendConfig, GcsConfig, GcsUrl, LocalConfig, S3Config, S3Url};
pub use budget::{BudgetConfig, LabelBudget, WhenFull};
pub use connections::ConnectionConfig;
pub use downloads::DownloadConfig;
pub use retention::RetentionConfig;
pub use security::{
    AuthConfig, DEFAULT_MAX_FILES_PER_COMMIT, DEFAULT_MAX_MESSAGE_BYTES, Limits, SecurityConfig, TlsConfig, TokenFiles,
};
use service::SERVICE_SECTION;
pub use service::{
    BLOCKING_RESERVE, DEFAULT_LISTEN, DEFAULT_SHUTDOWN_GRACE, LogFormat, ServiceConfig, StorageClientConfig,
    URL_TTL_LIMIT, UrlConfig,
};
pub use sinks::{DEFAULT_SINK_MODE, SinkConfig};
use table::Table;
pub use traces::{OtlpProtocol, TraceConfig};
pub use workers::{MAX_SESSION, MIN_SESSION, ScopedCredentials, WorkerCredentials};

/// The prefix of environment variables that override the file: `PC_CUBLET__<section>__<key>[__<key>...]`.
pub const ENV_PREFIX: &str = "PC_CUBLET__";

/// The configuration used when `serve` is given no file: the local backend under `./data`.
pub const EMBEDDED_DEFAULT: &str = r#"
[scheduler]
allow_local_sinks = true
anonymous_results.local.path = "./data/anonymous-results"
"#;

/// A configuration error. Every variant names what to fix; none shows a configured value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    FileMissing { path: PathBuf },
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The position and the parser's message only: the line itself may hold a secret.
    #[error("{file}: TOML syntax error at line {line}, column {column}: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    #[error("cannot read the configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid { key: key.to_owned(), message: message.into() }
    }
}

/// The validated configuration of one service process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[anonymous_results_service]`: how the service itself runs.
    pub service: ServiceConfig,
    /// `[scheduler] anonymous_results.*`: where results are stored.
    pub backend: BackendConfig,
    /// `[scheduler] anonymous_results.*`: how long results are kept.
    pub retention: RetentionConfig,
    /// `[scheduler] anonymous_results.*`: how many bytes may be kept.
    pub budget: BudgetConfig,
    /// What was read, as `check-config` prints it: secrets redacted, defaults filled in.
    shown: toml::Table,
}

impl Config {
    /// Loads `file` (or, when `None`, the embedded default) and the process's `PC_CUBLET__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Loads `file` (or the embedded default) with the given environment instead of the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let figment = match file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::FileMissing { path: path.to_owned() });
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml_figment(&path.display().to_string(), &text)?
            }
            None => toml_figment("the embedded default", EMBEDDED_DEFAULT)?,
        };
        Self::from_figment(with_env(figment, env))
    }

    /// Parses a configuration from TOML text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(toml_figment("the configuration", text)?)
    }

    /// Reads the configuration of `figment` (the file and the environment) over the declared defaults.
    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let figment = with_defaults(figment)?;
        let root: Dict = figment.extract().map_err(Box::new)?;
        let mut root = Table::new("", Value::from(root))?;
        let scheduler = root.take_table("scheduler")?.unwrap_or_else(|| Table::empty("scheduler"));
        let mut service = root.take_table(SERVICE_SECTION)?.unwrap_or_else(|| Table::empty(SERVICE_SECTION));
        let workers = service.take_table(backend::WORKER_STORAGE_OPTIONS)?;
        // Every other section belongs to the rest of the cluster.
        let (backend, retention, budget, shown_scheduler) = backend::parse_scheduler(scheduler)?;
        let (mut service, mut shown_service) = service::parse(service)?;
        if let Some(workers) = workers {
            let (options, shown) = backend::read_worker_options(workers, &backend)?;
            service.worker_storage_options = Some(options);
            shown_service.insert(backend::WORKER_STORAGE_OPTIONS.into(), shown.into());
        }
        if matches!(service.worker_credentials, WorkerCredentials::Scoped(_))
            && !matches!(backend, BackendConfig::S3(_))
        {
            let message = "= \"scoped\" is built for S3 alone (an assumed role's session, reaching one sink): on \
                           this store, keep it \"shared\" and scope worker_storage_options instead (README, \"Keeping \
                           workers out of the service's records\")";
            return Err(ConfigError::invalid(&format!("{SERVICE_SECTION}.worker_credentials"), message));
        }
        let mut shown = toml::Table::new();
        shown.insert(SERVICE_SECTION.into(), shown_service.into());
        shown.insert("scheduler".into(), shown_scheduler.into());
        Ok(Self { service, backend, retention, budget, shown })
    }
}

/// `figment` over the layer of the declared defaults: every key of `[anonymous_results_service]`,
/// `[scheduler] allow_local_sinks`, and the retention keys of the location table under the name the
/// configuration uses (none is made where there is no location table).
fn with_defaults(figment: Figment) -> Result<Figment, ConfigError> {
    let root: Dict = figment.extract().map_err(Box::new)?;
    let location = root.get("scheduler").and_then(|scheduler| match scheduler {
        Value::Dict(_, tables) => backend::LOCATION_TABLES.iter().find(|name| tables.contains_key(**name)),
        _ => None,
    });
    let mut defaults: Vec<(String, &'static key::Key)> = service::all_keys()
        .map(|key| (format!("{SERVICE_SECTION}.{}", key.name), key))
        .chain([(format!("scheduler.{}", backend::ALLOW_LOCAL_SINKS.name), &backend::ALLOW_LOCAL_SINKS)])
        .collect();
    if let Some(location) = location {
        defaults.extend(backend::location_keys().map(|key| (format!("scheduler.{location}.{}", key.name), key)));
    }
    Ok(defaults.into_iter().fold(figment, |figment, (path, key)| match key.default_value() {
        Some(value) => figment.join(Serialized::default(&path, value)),
        None => figment,
    }))
}

/// The TOML `text` of `file` as figment's first layer, once it is known to parse. A syntax error is reported
/// by position and the parser's short message, never with the line it is on (which may hold a secret).
fn toml_figment(file: &str, text: &str) -> Result<Figment, ConfigError> {
    if let Err(error) = text.parse::<toml::Table>() {
        let at = error.span().map_or(0, |span| span.start).min(text.len());
        let before = text.get(..at).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
        let message = error.message().lines().next().unwrap_or("invalid TOML").to_owned();
        return Err(ConfigError::Syntax { file: file.to_owned(), line, column, message });
    }
    Ok(Figment::from(Toml::string(text)))
}

/// Merges the `PC_CUBLET__section__key=value` variables of `env` over `figment`, one nested key each. Values
/// stay text (a secret `0123` keeps its zero); the readers of booleans and addresses parse text.
fn with_env(figment: Figment, env: impl IntoIterator<Item = (String, String)>) -> Figment {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            (!parts.iter().any(String::is_empty)).then(|| (parts.join("."), value))
        })
        .collect();
    overrides.sort();
    overrides.into_iter().fold(figment, |figment, (key, value)| figment.merge(Serialized::global(&key, value)))
}

/// Every declared key: its section, its dotted name in it (the location table under its first name) and its
/// declaration.
pub(crate) fn declared_keys() -> Vec<(&'static str, String, &'static key::Key)> {
    let location = backend::LOCATION_TABLES[0];
    let mut keys: Vec<(&'static str, String, &'static key::Key)> =
        service::all_keys().map(|key| (SERVICE_SECTION, key.name.to_owned(), key)).collect();
    keys.push(("scheduler", backend::ALLOW_LOCAL_SINKS.name.to_owned(), &backend::ALLOW_LOCAL_SINKS));
    keys.extend(backend::location_keys().map(|key| ("scheduler", format!("{location}.{}", key.name), key)));
    keys.push(("scheduler", format!("{location}.local.{}", backend::LOCAL_PATH.name), &backend::LOCAL_PATH));
    for (table, url, options) in [
        ("s3", &backend::S3_URL, backend::S3_OPTIONS),
        ("gcs", &backend::GCS_URL, backend::GCS_OPTIONS),
        ("abs", &backend::ABS_URL, backend::AZURE_OPTIONS),
    ] {
        keys.push(("scheduler", format!("{location}.{table}.{}", url.name), url));
        keys.extend(options.iter().map(|key| ("scheduler", format!("{location}.{table}.{}", key.name), key)));
        let workers = backend::WORKER_STORAGE_OPTIONS;
        keys.extend(options.iter().map(|key| (SERVICE_SECTION, format!("{workers}.{}", key.name), key)));
    }
    keys
}

/// The effective configuration as TOML, secrets redacted, each key under a comment saying what it means:
/// what `check-config` prints.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let declared = declared_keys();
        for (section, table) in &self.shown {
            writeln!(f, "[{section}]")?;
            if let toml::Value::Table(table) = table {
                let meaning = |name: &str| {
                    declared.iter().find(|(s, n, _)| s == section && n == name).map(|(_, _, key)| key.meaning)
                };
                write_keys(f, "", table, &meaning)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Writes `table`'s keys as dotted keys under `prefix`, each under its meaning.
fn write_keys(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    table: &toml::Table,
    meaning: &dyn Fn(&str) -> Option<&'static str>,
) -> fmt::Result {
    for (name, value) in table {
        let name = format!("{prefix}{name}");
        match value {
            toml::Value::Table(inner) => write_keys(f, &format!("{name}."), inner, meaning)?,
            value => {
                if let Some(meaning) = meaning(&name) {
                    writeln!(f, "# {meaning}")?;
                }
                writeln!(f, "{name} = {value}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
