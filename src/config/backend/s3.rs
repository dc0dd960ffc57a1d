//! `anonymous_results.s3`: an S3-compatible bucket, with the AWS keys of Polars' `storage_options`.

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

pub(in crate::config) const S3_URL: Key = Key {
    name: "url",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the bucket and key prefix of the results: s3://bucket[/prefix]",
};

/// The AWS keys of Polars' `storage_options` that `anonymous_results.s3` accepts besides `url`: workers get
/// them as they are. Those holding credentials are never shown.
pub(in crate::config) const S3_OPTIONS: &[Key] = &[
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
        let url = split_url(text, &["s3"], "an S3", "s3://bucket/path/to/key")?;
        if !valid_name(url.authority, 3..=63, b".-") {
            return Err("does not name a bucket: a bucket name is 3 to 63 lowercase letters, digits, dots and \
                        hyphens, from a letter or digit to a letter or digit"
                .to_owned());
        }
        Ok(Self { bucket: url.authority.to_owned(), prefix: url.prefix })
    }
}

pub(super) fn parse(mut table: Table) -> Result<(S3Config, toml::Table), ConfigError> {
    let url = read_url(&mut table, &S3_URL, S3Url::parse)?;
    let (options, shown) = read_options(table, &S3_URL, S3_OPTIONS)?;
    Ok((S3Config { url, options }, shown))
}
