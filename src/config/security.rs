//! The security keys of `[anonymous_results_service]`: who may call (`auth.*`, `allow_unauthenticated`), over
//! what (`tls.*`), what is exposed (`reflection`), and how large a request may be (`max_*`).
//!
//! Only file paths are configured here: the tokens, keys and secrets stay in their files, which the service
//! reads when it starts (see `auth.rs`, `commit_token.rs`, `tls.rs`).

use std::path::PathBuf;

use super::{ConfigError, table::Table};

pub(super) const KEYS: &[&str] =
    &["auth", "tls", "allow_unauthenticated", "reflection", "max_files_per_commit", "max_message_bytes"];
const AUTH_KEYS: &[&str] = &["scheduler_token_file", "worker_token_file", "commit_secret_file"];
const TLS_KEYS: &[&str] = &["cert_file", "key_file", "client_ca_file"];

/// The most files one Commit may list, unless configured otherwise.
pub const DEFAULT_MAX_FILES_PER_COMMIT: usize = 100_000;
/// The largest request the service decodes, unless configured otherwise: a Commit listing 100,000 files of
/// long paths fits.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Who may call, over what, and with how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityConfig {
    pub auth: AuthConfig,
    /// `allow_unauthenticated`: serve without tokens on an address other than loopback (default false: the
    /// service refuses to start there without `auth.*`).
    pub allow_unauthenticated: bool,
    /// `reflection`: serve gRPC reflection, for grpcurl (default true).
    pub reflection: bool,
    /// `tls.*`: serve over TLS (and, with a client CA, mutual TLS).
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            allow_unauthenticated: false,
            reflection: true,
            tls: None,
            limits: Limits::default(),
        }
    }
}

/// `auth.*`: the bearer tokens of each role, and the secret commit tokens are made with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `auth.scheduler_token_file` and `auth.worker_token_file`: files of bearer tokens, one per line, of the
    /// scheduler and the workers. Both or neither: without them, every caller may call everything.
    pub token_files: Option<TokenFiles>,
    /// `auth.commit_secret_file`: the secret commit tokens are MACs with, shared by replicas. Absent: one is
    /// generated and kept in the result storage, where every replica finds it.
    pub commit_secret_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFiles {
    pub scheduler: PathBuf,
    pub worker: PathBuf,
}

/// `tls.*`: the server's certificate chain and key (PEM), and the CA that client certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// With it, every client must present a certificate this CA signed (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

/// How large a request may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `max_files_per_commit` (default 100,000): the most files one Commit may list or take from its sink.
    pub max_files_per_commit: usize,
    /// `max_message_bytes` (default 64 MiB): the largest request decoded; a larger one is RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_files_per_commit: DEFAULT_MAX_FILES_PER_COMMIT, max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<SecurityConfig, ConfigError> {
    let auth = match table.take_table("auth")? {
        Some(auth) => parse_auth(auth)?,
        None => AuthConfig::default(),
    };
    let tls = table.take_table("tls")?.map(parse_tls).transpose()?;
    let allow_unauthenticated = table.take_bool("allow_unauthenticated")?.unwrap_or(false);
    let reflection = table.take_bool("reflection")?.unwrap_or(true);
    let defaults = Limits::default();
    let limits = Limits {
        max_files_per_commit: table
            .take_count("max_files_per_commit", 1..=10_000_000)?
            .unwrap_or(defaults.max_files_per_commit),
        max_message_bytes: table
            .take_count("max_message_bytes", 1024..=1024 * 1024 * 1024)?
            .unwrap_or(defaults.max_message_bytes),
    };
    Ok(SecurityConfig { auth, allow_unauthenticated, reflection, tls, limits })
}

fn parse_auth(mut table: Table) -> Result<AuthConfig, ConfigError> {
    let scheduler = take_path(&mut table, "scheduler_token_file")?;
    let worker = take_path(&mut table, "worker_token_file")?;
    let token_files = match (scheduler, worker) {
        (Some(scheduler), Some(worker)) => Some(TokenFiles { scheduler, worker }),
        (None, None) => None,
        (Some(_), None) => return Err(both_or_neither(&table, "worker_token_file", "scheduler_token_file")),
        (None, Some(_)) => return Err(both_or_neither(&table, "scheduler_token_file", "worker_token_file")),
    };
    let commit_secret_file = take_path(&mut table, "commit_secret_file")?;
    table.finish(AUTH_KEYS)?;
    Ok(AuthConfig { token_files, commit_secret_file })
}

fn both_or_neither(table: &Table, missing: &str, given: &str) -> ConfigError {
    ConfigError::invalid(
        &table.key(missing),
        format!(
            "is required with `{}`: every role needs tokens once any has (or set neither, to serve without \
             authentication)",
            table.key(given)
        ),
    )
}

fn parse_tls(mut table: Table) -> Result<TlsConfig, ConfigError> {
    let cert_file = take_path(&mut table, "cert_file")?;
    let key_file = take_path(&mut table, "key_file")?;
    let client_ca_file = take_path(&mut table, "client_ca_file")?;
    let missing = |key: &str| ConfigError::invalid(&table.key(key), "is required to serve over TLS");
    let tls = TlsConfig {
        cert_file: cert_file.ok_or_else(|| missing("cert_file"))?,
        key_file: key_file.ok_or_else(|| missing("key_file"))?,
        client_ca_file,
    };
    table.finish(TLS_KEYS)?;
    Ok(tls)
}

fn take_path(table: &mut Table, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    match table.take_string(key)? {
        Some(text) if text.is_empty() => Err(ConfigError::invalid(&table.key(key), "is empty; give a file path")),
        other => Ok(other.map(PathBuf::from)),
    }
}

impl SecurityConfig {
    /// The keys as TOML, as `check-config` prints them (paths only: no file is read).
    pub(super) fn to_toml(&self, table: &mut toml::Table) {
        let path = |path: &PathBuf| toml::Value::from(path.display().to_string());
        let mut auth = toml::Table::new();
        if let Some(files) = &self.auth.token_files {
            auth.insert("scheduler_token_file".into(), path(&files.scheduler));
            auth.insert("worker_token_file".into(), path(&files.worker));
        }
        if let Some(file) = &self.auth.commit_secret_file {
            auth.insert("commit_secret_file".into(), path(file));
        }
        if !auth.is_empty() {
            table.insert("auth".into(), auth.into());
        }
        if let Some(tls) = &self.tls {
            let mut section = toml::Table::new();
            section.insert("cert_file".into(), path(&tls.cert_file));
            section.insert("key_file".into(), path(&tls.key_file));
            if let Some(ca) = &tls.client_ca_file {
                section.insert("client_ca_file".into(), path(ca));
            }
            table.insert("tls".into(), section.into());
        }
        table.insert("allow_unauthenticated".into(), self.allow_unauthenticated.into());
        table.insert("reflection".into(), self.reflection.into());
        table.insert("max_files_per_commit".into(), (self.limits.max_files_per_commit as i64).into());
        table.insert("max_message_bytes".into(), (self.limits.max_message_bytes as i64).into());
    }
}
