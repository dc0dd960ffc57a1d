//! What the object-store tables share: reading a `scheme://bucket[/prefix]` URL and the storage options a
//! table accepts.

use std::collections::BTreeMap;

use super::super::{ConfigError, key::Key, table::Table};
use crate::secret::Secret;

/// A URL split into its scheme, its authority (the bucket, or `container@host` on Azure) and its key prefix
/// (without leading or trailing `/`; empty for the root).
pub(super) struct SplitUrl<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    pub prefix: String,
}

/// Splits `text`, which must begin with one of `schemes` followed by `://`; the error names `store` ("an S3")
/// and shows the shape with `example`. A prefix may not have an empty, `.` or `..` segment (a trailing `/` is dropped).
pub(super) fn split_url<'a>(
    text: &'a str,
    schemes: &[&'static str],
    store: &str,
    example: &str,
) -> Result<SplitUrl<'a>, String> {
    let (scheme, rest) = schemes
        .iter()
        .find_map(|scheme| Some((*scheme, text.strip_prefix(scheme)?.strip_prefix("://")?)))
        .ok_or_else(|| format!("is not {store} url: it must look like {example}"))?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() && prefix.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err("has a key prefix with an empty, `.` or `..` segment".to_owned());
    }
    if prefix.chars().any(char::is_control) {
        return Err("has a control character in its key prefix".to_owned());
    }
    Ok(SplitUrl { scheme, authority, prefix: prefix.to_owned() })
}

/// Whether `name` is `lengths` long, of lowercase letters, digits and `others`, from a letter or digit to a
/// letter or digit.
pub(super) fn valid_name(name: &str, lengths: std::ops::RangeInclusive<usize>, others: &[u8]) -> bool {
    lengths.contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || others.contains(&b))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Reads the table's `url` key (`url` declared by `key`, required) with `parse`.
pub(super) fn read_url<T>(
    table: &mut Table,
    key: &Key,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let url_key = table.key(key.name);
    let url =
        table.text(key)?.ok_or_else(|| ConfigError::invalid(&url_key, format!("is required: {}", key.meaning)))?;
    parse(&url).map_err(|message| ConfigError::invalid(&url_key, message))
}

/// Reads every storage option of `options` the table sets, each held as a secret; then refuses any other key.
/// Answers the options and what was read, to be shown.
pub(super) fn read_options(
    mut table: Table,
    url: &'static Key,
    options: &'static [Key],
) -> Result<(BTreeMap<String, Secret>, toml::Table), ConfigError> {
    let mut read = BTreeMap::new();
    for option in options {
        if let Some(value) = table.secret(option)? {
            read.insert(option.name.to_owned(), value);
        }
    }
    let mut keys: Vec<&Key> = vec![url];
    keys.extend(options);
    let shown = table.finish(&keys, &[])?;
    Ok((read, shown))
}
