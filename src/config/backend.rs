//! The `[scheduler] anonymous_results` table (alias `anonymous_result_location`): which storage backend holds
//! the results, with the seed's keys verbatim.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use super::{
    ConfigError, RetentionConfig,
    key::{Key, KeyDefault, Kind},
    table::Table,
};
use crate::secret::Secret;

/// The names the location table may carry, old and new cluster versions alike.
pub(super) const LOCATION_TABLES: &[&str] = &["anonymous_results", "anonymous_result_location"];
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
pub(super) const S3_URL: Key = Key {
    name: "url",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the bucket and key prefix of the results: s3://bucket[/prefix]",
};

/// The AWS keys of Polars' `storage_options` that `anonymous_results.s3` accepts besides `url`: workers get
/// them as they are. Those holding credentials are never shown.
pub(super) const S3_OPTIONS: &[Key] = &[
    s3_option("aws_access_key_id", Kind::Text),
    s3_option("aws_secret_access_key", Kind::Secret),
    s3_option("aws_session_token", Kind::Secret),
    s3_option("aws_token", Kind::Secret),
    s3_option("aws_region", Kind::Text),
    s3_option("aws_default_region", Kind::Text),
    s3_option("aws_endpoint_url", Kind::Url),
    s3_option("aws_endpoint", Kind::Url),
    s3_option("aws_endpoint_url_s3", Kind::Url),
    s3_option("aws_allow_http", Kind::Text),
    s3_option("aws_virtual_hosted_style_request", Kind::Text),
    s3_option("aws_s3_express", Kind::Text),
    s3_option("aws_imdsv1_fallback", Kind::Text),
    s3_option("aws_metadata_endpoint", Kind::Text),
    s3_option("aws_container_credentials_relative_uri", Kind::Text),
    s3_option("aws_container_credentials_full_uri", Kind::Text),
    s3_option("aws_container_authorization_token_file", Kind::Text),
    s3_option("aws_web_identity_token_file", Kind::Text),
    s3_option("aws_role_arn", Kind::Text),
    s3_option("aws_role_session_name", Kind::Text),
    s3_option("aws_endpoint_url_sts", Kind::Url),
    s3_option("aws_skip_signature", Kind::Text),
    s3_option("aws_checksum_algorithm", Kind::Text),
    s3_option("aws_conditional_put", Kind::Text),
    s3_option("aws_copy_if_not_exists", Kind::Text),
    s3_option("aws_unsigned_payload", Kind::Text),
    s3_option("aws_disable_tagging", Kind::Text),
    s3_option("aws_disable_bulk_delete", Kind::Text),
    s3_option("aws_request_payer", Kind::Text),
    s3_option("aws_server_side_encryption", Kind::Text),
    s3_option("aws_sse_kms_key_id", Kind::Text),
    s3_option("aws_sse_bucket_key_enabled", Kind::Text),
    s3_option("aws_sse_customer_key_base64", Kind::Secret),
];

const fn s3_option(name: &'static str, kind: Kind) -> Key {
    Key { name, kind, default: KeyDefault::None, meaning: "an AWS key of Polars' storage_options, handed to workers" }
}

/// Where results are stored: exactly one backend.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendConfig {
    /// `anonymous_results.local`: a path on a filesystem shared by workers and clients.
    Local(LocalConfig),
    /// `anonymous_results.s3`: an S3-compatible bucket.
    S3(S3Config),
}

/// `anonymous_results.local`.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalConfig {
    /// `path`: the root folder of the results; a relative path is taken from the working directory.
    pub path: PathBuf,
}

/// `anonymous_results.s3`.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Config {
    /// `url`: `s3://bucket[/prefix]`.
    pub url: S3Url,
    /// The AWS storage options, keyed by their Polars names; every value is held as a [`Secret`].
    pub options: BTreeMap<String, Secret>,
}

/// A parsed `s3://bucket[/prefix]` url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// The key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix.is_empty() {
            true => write!(f, "s3://{}", self.bucket),
            false => write!(f, "s3://{}/{}", self.bucket, self.prefix),
        }
    }
}

impl S3Url {
    /// Parses `s3://bucket[/prefix][/]`; the error says what is wrong, for the key named by the caller.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| "is not an S3 url: it must look like s3://bucket/path/to/key".to_owned())?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err("does not name a bucket: a bucket name is 3 to 63 lowercase letters, digits, dots and \
                        hyphens, from a letter or digit to a letter or digit"
                .to_owned());
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..")
            && !prefix.is_empty()
        {
            return Err("has a key prefix with an empty, `.` or `..` segment".to_owned());
        }
        Ok(Self { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }
}

/// Reads the `[scheduler]` section: `allow_local_sinks` and the location table (its backend and its
/// retention keys). Other keys are the cluster's. Answers also what was read, as `check-config` prints it
/// (the location table under its first name).
pub(super) fn parse_scheduler(
    mut scheduler: Table,
) -> Result<(BackendConfig, RetentionConfig, toml::Table), ConfigError> {
    let allow_local_sinks = scheduler.bool(&ALLOW_LOCAL_SINKS)?.unwrap_or(ALLOW_LOCAL_SINKS.default_bool());
    let mut found = Vec::new();
    for name in LOCATION_TABLES {
        if let Some(table) = scheduler.take_table(name)? {
            found.push(table);
        }
    }
    let mut location = match found.len() {
        0 => return Err(no_backend()),
        1 => found.remove(0),
        _ => {
            return Err(ConfigError::invalid(
                "scheduler.anonymous_result_location",
                "`scheduler.anonymous_results` is set too: they are one table under two names; keep one",
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
    let mut shown_location = location.finish(super::retention::KEYS, BACKENDS)?;
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
    Ok((backend, retention, shown))
}

fn no_backend() -> ConfigError {
    ConfigError::invalid(
        "scheduler.anonymous_results",
        "no backend is configured: set `anonymous_results.local.path` (with `allow_local_sinks = true`) \
         or `anonymous_results.s3.url` under [scheduler]",
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
        "s3" => parse_s3(table).map(|(s3, shown)| (BackendConfig::S3(s3), shown)),
        other => Err(ConfigError::invalid(
            table.path(),
            format!("the `{other}` backend is not supported by this version; use `local` or `s3`"),
        )),
    }
}

fn parse_s3(mut table: Table) -> Result<(S3Config, toml::Table), ConfigError> {
    let url_key = table.key(S3_URL.name);
    let url = table.text(&S3_URL)?.ok_or_else(|| {
        ConfigError::invalid(&url_key, "is required: the bucket and key prefix, like s3://bucket/path/to/key")
    })?;
    let url = S3Url::parse(&url).map_err(|message| ConfigError::invalid(&url_key, message))?;
    let mut options = BTreeMap::new();
    for option in S3_OPTIONS {
        if let Some(value) = table.secret(option)? {
            options.insert(option.name.to_owned(), value);
        }
    }
    let mut keys: Vec<&Key> = vec![&S3_URL];
    keys.extend(S3_OPTIONS);
    let shown = table.finish(&keys, &[])?;
    Ok((S3Config { url, options }, shown))
}

impl BackendConfig {
    /// The backend's table name: `local`, `s3`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::S3(_) => "s3",
        }
    }
}
