//! `anonymous_results.gcs`: a Google Cloud Storage bucket, with the Google keys of Polars' `storage_options`.

use std::{collections::BTreeMap, fmt};

use super::{
    super::{
        ConfigError,
        key::{Key, KeyDefault, Kind},
        table::Table,
    },
    location::{read_options, read_url, split_url, valid_name},
};
use crate::secret::Secret;

pub(in crate::config) const GCS_URL: Key = Key {
    name: "url",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the bucket and key prefix of the results: gs://bucket[/prefix] (or gcs://)",
};

/// The service account key file, under either name. The service reads it and hands workers the key itself
/// (`google_service_account_key`): the file may not exist on a worker's host.
pub(in crate::config) const SERVICE_ACCOUNT_PATHS: &[&str] = &["google_service_account_path", "google_service_account"];
/// The service account key itself (its JSON).
pub(in crate::config) const SERVICE_ACCOUNT_KEY: &str = "google_service_account_key";

/// The Google keys of Polars' `storage_options` that `anonymous_results.gcs` accepts besides `url`. Those
/// holding credentials are never shown.
pub(in crate::config) const GCS_OPTIONS: &[Key] = &[
    gcs_option("google_service_account_path", Kind::Text, "a service account key file (JSON), read at start-up"),
    gcs_option("google_service_account", Kind::Text, "the same as google_service_account_path"),
    gcs_option("google_service_account_key", Kind::Secret, "a service account key itself (its JSON)"),
    gcs_option("google_application_credentials", Kind::Text, "an application default credentials file"),
    gcs_option("google_bearer_token", Kind::Secret, "a static OAuth bearer token"),
    gcs_option("google_base_url", Kind::Url, "the store's URL when not https://storage.googleapis.com"),
    gcs_option("google_skip_signature", Kind::Text, "send requests unsigned (a public bucket)"),
];

const fn gcs_option(name: &'static str, kind: Kind, meaning: &'static str) -> Key {
    Key { name, kind, default: KeyDefault::None, meaning }
}

/// `anonymous_results.gcs`.
#[derive(Clone, Debug, PartialEq)]
pub struct GcsConfig {
    /// `url`: `gs://bucket[/prefix]`.
    pub url: GcsUrl,
    /// The Google storage options, keyed by their Polars names; every value is held as a [`Secret`].
    pub options: BTreeMap<String, Secret>,
}

/// A parsed `gs://bucket[/prefix]` (or `gcs://`) url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsUrl {
    /// `gs` or `gcs`, as configured: sinks are named with it.
    pub scheme: &'static str,
    pub bucket: String,
    /// The key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl fmt::Display for GcsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.bucket)?;
        match self.prefix.is_empty() {
            true => Ok(()),
            false => write!(f, "/{}", self.prefix),
        }
    }
}

impl GcsUrl {
    /// Parses `gs://bucket[/prefix][/]` or `gcs://...`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = split_url(text, &["gs", "gcs"], "a GCS", "gs://bucket/path/to/key")?;
        let limit = if url.authority.contains('.') { 222 } else { 63 };
        if !valid_name(url.authority, 3..=limit, b".-_") {
            return Err("does not name a bucket: a bucket name is 3 to 63 lowercase letters, digits, dots, hyphens \
                        and underscores, from a letter or digit to a letter or digit"
                .to_owned());
        }
        let scheme = if url.scheme == "gs" { "gs" } else { "gcs" };
        Ok(Self { scheme, bucket: url.authority.to_owned(), prefix: url.prefix })
    }
}

pub(super) fn parse(mut table: Table) -> Result<(GcsConfig, toml::Table), ConfigError> {
    let url = read_url(&mut table, &GCS_URL, GcsUrl::parse)?;
    let path = table.path().to_owned();
    let (options, shown) = read_options(table, &GCS_URL, GCS_OPTIONS)?;
    let credentials: Vec<&str> = SERVICE_ACCOUNT_PATHS
        .iter()
        .chain([&SERVICE_ACCOUNT_KEY])
        .copied()
        .filter(|key| options.contains_key(*key))
        .collect();
    if credentials.len() > 1 {
        return Err(ConfigError::invalid(
            &format!("{path}.{}", credentials[1]),
            format!("`{}` is set too: give the service account key once", credentials[0]),
        ));
    }
    Ok((GcsConfig { url, options }, shown))
}
