//! The security keys of `[anonymous_results_service]`: who may call (`auth.*`, `allow_unauthenticated`), over
//! what (`tls.*`), what is exposed (`reflection`), and how large a request may be (`max_*`).
//!
//! Only file paths are configured here: the tokens, keys and secrets stay in their files, which the service
//! reads when it starts (see `auth.rs`, `commit_token.rs`, `tls.rs`).

use std::path::PathBuf;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};

pub(super) const SCHEDULER_TOKEN_FILE: Key = path(
    "auth.scheduler_token_file",
    "a file of the scheduler's bearer tokens, one per line; read again when it changes",
);
pub(super) const WORKER_TOKEN_FILE: Key =
    path("auth.worker_token_file", "a file of the workers' bearer tokens; set both token files or neither");
pub(super) const COMMIT_SECRET_FILE: Key =
    path("auth.commit_secret_file", "the secret commit tokens are made with, the same file on every replica");
pub(super) const PREVIOUS_COMMIT_SECRET_FILE: Key = path(
    "auth.previous_commit_secret_file",
    "the commit secret before the last rotation: download links made with it still work until they expire",
);
pub(super) const CERT_FILE: Key = path("tls.cert_file", "the PEM certificate chain to serve TLS with");
pub(super) const KEY_FILE: Key = path("tls.key_file", "the PEM private key of that certificate");
pub(super) const CLIENT_CA_FILE: Key =
    path("tls.client_ca_file", "with TLS: the PEM CA every client certificate must chain to (mutual TLS)");
pub(super) const ALLOW_UNAUTHENTICATED: Key = Key {
    name: "allow_unauthenticated",
    kind: Kind::Bool,
    default: KeyDefault::Bool(false),
    meaning: "serve without tokens on an address that is not loopback",
};
pub(super) const REFLECTION: Key = Key {
    name: "reflection",
    kind: Kind::Bool,
    default: KeyDefault::Bool(true),
    meaning: "serve gRPC reflection (what grpcurl list and describe use)",
};
pub(super) const MAX_FILES_PER_COMMIT: Key = Key {
    name: "max_files_per_commit",
    kind: Kind::Count(1..=crate::model::MAX_FILES_PER_RESULT),
    default: KeyDefault::Count(DEFAULT_MAX_FILES_PER_COMMIT),
    meaning: "the most files one Commit may list, or take from its sink",
};
pub(super) const MAX_MESSAGE_BYTES: Key = Key {
    name: "max_message_bytes",
    kind: Kind::Count(1024..=1024 * 1024 * 1024),
    default: KeyDefault::Count(DEFAULT_MAX_MESSAGE_BYTES),
    meaning: "the largest request decoded; each call has a smaller limit of its own too",
};

pub(super) const KEYS: &[&Key] = &[
    &SCHEDULER_TOKEN_FILE,
    &WORKER_TOKEN_FILE,
    &COMMIT_SECRET_FILE,
    &PREVIOUS_COMMIT_SECRET_FILE,
    &CERT_FILE,
    &KEY_FILE,
    &CLIENT_CA_FILE,
    &ALLOW_UNAUTHENTICATED,
    &REFLECTION,
    &MAX_FILES_PER_COMMIT,
    &MAX_MESSAGE_BYTES,
];

/// The most files one Commit may list, unless configured otherwise.
pub const DEFAULT_MAX_FILES_PER_COMMIT: usize = 100_000;
/// The largest request the service decodes, unless configured otherwise: a Commit listing 100,000 files of
/// long paths fits.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A path key of the section, unset unless configured.
const fn path(name: &'static str, meaning: &'static str) -> Key {
    Key { name, kind: Kind::Path, default: KeyDefault::None, meaning }
}

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
            allow_unauthenticated: ALLOW_UNAUTHENTICATED.default_bool(),
            reflection: REFLECTION.default_bool(),
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
    /// `auth.previous_commit_secret_file`: the commit secret this one replaced. Download links made with it
    /// are still verified (until they expire); nothing new is made with it.
    pub previous_commit_secret_file: Option<PathBuf>,
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
        Self {
            max_files_per_commit: MAX_FILES_PER_COMMIT.default_count(),
            max_message_bytes: MAX_MESSAGE_BYTES.default_count(),
        }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<SecurityConfig, ConfigError> {
    let scheduler = table.path_value(&SCHEDULER_TOKEN_FILE)?;
    let worker = table.path_value(&WORKER_TOKEN_FILE)?;
    let token_files = match (scheduler, worker) {
        (Some(scheduler), Some(worker)) => Some(TokenFiles { scheduler, worker }),
        (None, None) => None,
        (Some(_), None) => return Err(both_or_neither(table, &WORKER_TOKEN_FILE, &SCHEDULER_TOKEN_FILE)),
        (None, Some(_)) => return Err(both_or_neither(table, &SCHEDULER_TOKEN_FILE, &WORKER_TOKEN_FILE)),
    };
    let auth = AuthConfig {
        token_files,
        commit_secret_file: table.path_value(&COMMIT_SECRET_FILE)?,
        previous_commit_secret_file: table.path_value(&PREVIOUS_COMMIT_SECRET_FILE)?,
    };
    let (cert_file, key_file) = (table.path_value(&CERT_FILE)?, table.path_value(&KEY_FILE)?);
    let client_ca_file = table.path_value(&CLIENT_CA_FILE)?;
    let tls = match (cert_file, key_file, client_ca_file) {
        (None, None, None) => None,
        (Some(cert_file), Some(key_file), client_ca_file) => Some(TlsConfig { cert_file, key_file, client_ca_file }),
        (None, _, _) => return Err(ConfigError::invalid(&table.key(CERT_FILE.name), "is required to serve over TLS")),
        (_, None, _) => return Err(ConfigError::invalid(&table.key(KEY_FILE.name), "is required to serve over TLS")),
    };
    let defaults = Limits::default();
    Ok(SecurityConfig {
        auth,
        allow_unauthenticated: table.bool(&ALLOW_UNAUTHENTICATED)?.unwrap_or(ALLOW_UNAUTHENTICATED.default_bool()),
        reflection: table.bool(&REFLECTION)?.unwrap_or(REFLECTION.default_bool()),
        tls,
        limits: Limits {
            max_files_per_commit: table.count(&MAX_FILES_PER_COMMIT)?.unwrap_or(defaults.max_files_per_commit),
            max_message_bytes: table.count(&MAX_MESSAGE_BYTES)?.unwrap_or(defaults.max_message_bytes),
        },
    })
}

fn both_or_neither(table: &Table, missing: &Key, given: &Key) -> ConfigError {
    ConfigError::invalid(
        &table.key(missing.name),
        format!(
            "is required with `{}`: every role needs tokens once any has (or set neither, to serve without \
             authentication)",
            table.key(given.name)
        ),
    )
}
