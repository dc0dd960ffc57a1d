//! The `[scheduler] anonymous_results` table (alias `anonymous_result_location`): which storage backend holds
//! the results, with the seed's keys verbatim.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use super::{ConfigError, RetentionConfig, table::Table};
use crate::secret::Secret;

/// The names the location table may carry, old and new cluster versions alike.
const LOCATION_TABLES: &[&str] = &["anonymous_results", "anonymous_result_location"];
/// The backends a location table may configure; exactly one of them.
const BACKENDS: &[&str] = &["local", "s3", "gcs", "abs"];
const LOCAL_KEYS: &[&str] = &["path"];

/// The AWS keys of Polars' `storage_options` that `anonymous_results.s3` accepts besides `url`.
pub const S3_OPTION_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_token",
    "aws_region",
    "aws_default_region",
    "aws_endpoint_url",
    "aws_endpoint",
    "aws_endpoint_url_s3",
    "aws_allow_http",
    "aws_virtual_hosted_style_request",
    "aws_s3_express",
    "aws_imdsv1_fallback",
    "aws_metadata_endpoint",
    "aws_container_credentials_relative_uri",
    "aws_container_credentials_full_uri",
    "aws_container_authorization_token_file",
    "aws_web_identity_token_file",
    "aws_role_arn",
    "aws_role_session_name",
    "aws_endpoint_url_sts",
    "aws_skip_signature",
    "aws_checksum_algorithm",
    "aws_conditional_put",
    "aws_copy_if_not_exists",
    "aws_unsigned_payload",
    "aws_disable_tagging",
    "aws_disable_bulk_delete",
    "aws_request_payer",
    "aws_server_side_encryption",
    "aws_sse_kms_key_id",
    "aws_sse_bucket_key_enabled",
    "aws_sse_customer_key_base64",
];

/// The S3 options whose values are credentials: redacted wherever the configuration is shown.
const S3_SECRET_KEYS: &[&str] =
    &["aws_secret_access_key", "aws_session_token", "aws_token", "aws_sse_customer_key_base64"];

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
/// retention keys). Other keys are the cluster's.
pub(super) fn parse_scheduler(mut scheduler: Table) -> Result<(BackendConfig, RetentionConfig), ConfigError> {
    let allow_local_sinks = scheduler.take_bool("allow_local_sinks")?.unwrap_or(false);
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
    let mut allowed = BACKENDS.to_vec();
    allowed.extend_from_slice(super::retention::KEYS);
    location.finish(&allowed)?;
    let backend = match backends.len() {
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
    Ok((backend, retention))
}

fn no_backend() -> ConfigError {
    ConfigError::invalid(
        "scheduler.anonymous_results",
        "no backend is configured: set `anonymous_results.local.path` (with `allow_local_sinks = true`) \
         or `anonymous_results.s3.url` under [scheduler]",
    )
}

fn parse_backend(name: &str, mut table: Table, allow_local_sinks: bool) -> Result<BackendConfig, ConfigError> {
    match name {
        "local" => {
            let path = table.take_string("path")?.filter(|p| !p.is_empty());
            let path_key = table.key("path");
            table.finish(LOCAL_KEYS)?;
            let path = path.ok_or_else(|| ConfigError::invalid(&path_key, "is required: the results' root folder"))?;
            if !allow_local_sinks {
                return Err(ConfigError::invalid(
                    "scheduler.allow_local_sinks",
                    format!("must be true to write results to a local path (`{path_key}` is set)"),
                ));
            }
            Ok(BackendConfig::Local(LocalConfig { path: PathBuf::from(path) }))
        }
        "s3" => parse_s3(table).map(BackendConfig::S3),
        other => Err(ConfigError::invalid(
            table.path(),
            format!("the `{other}` backend is not supported by this version; use `local` or `s3`"),
        )),
    }
}

fn parse_s3(mut table: Table) -> Result<S3Config, ConfigError> {
    let url_key = table.key("url");
    let url = table.take_string("url")?.ok_or_else(|| {
        ConfigError::invalid(&url_key, "is required: the bucket and key prefix, like s3://bucket/path/to/key")
    })?;
    let url = S3Url::parse(&url).map_err(|message| ConfigError::invalid(&url_key, message))?;
    let mut options = BTreeMap::new();
    let mut allowed = vec!["url"];
    allowed.extend_from_slice(S3_OPTION_KEYS);
    for key in S3_OPTION_KEYS {
        if let Some(value) = table.take_string(key)? {
            options.insert((*key).to_owned(), Secret::new(value));
        }
    }
    table.finish(&allowed)?;
    Ok(S3Config { url, options })
}

impl BackendConfig {
    /// The `[scheduler]` section as TOML with every credential replaced by `<redacted>`.
    pub(super) fn to_redacted_toml(&self) -> toml::Table {
        let mut backend = toml::Table::new();
        let name = match self {
            Self::Local(local) => {
                backend.insert("path".into(), local.path.display().to_string().into());
                "local"
            }
            Self::S3(s3) => {
                backend.insert("url".into(), s3.url.to_string().into());
                for (key, value) in &s3.options {
                    let shown = match S3_SECRET_KEYS.contains(&key.as_str()) {
                        true => "<redacted>".to_owned(),
                        false => crate::secret::redact_urls(value.expose()),
                    };
                    backend.insert(key.clone(), shown.into());
                }
                "s3"
            }
        };
        let mut location = toml::Table::new();
        location.insert(name.into(), backend.into());
        let mut scheduler = toml::Table::new();
        if matches!(self, Self::Local(_)) {
            scheduler.insert("allow_local_sinks".into(), true.into());
        }
        scheduler.insert("anonymous_results".into(), location.into());
        scheduler
    }
}
