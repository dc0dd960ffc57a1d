//! One declaration per configuration key: its name, the kind of value it takes, its default and what it
//! means. Reading (`table.rs`), the keys allowed in each table, the defaults (a layer under the file and the
//! environment) and what `check-config` prints all come from these declarations; the README's table is
//! checked against them by a test.

use std::{net::SocketAddr, ops::RangeInclusive, path::PathBuf, time::Duration};

use figment::value::Value;

use crate::{model, secret::Secret};

/// A configuration key.
#[derive(Debug)]
pub struct Key {
    /// Its name in its table; dotted for a key of a sub-table (`auth.worker_token_file`).
    pub name: &'static str,
    pub kind: Kind,
    /// The value when neither the file nor the environment sets one.
    pub default: KeyDefault,
    /// What it means, in a line.
    pub meaning: &'static str,
}

/// A key's default.
#[derive(Debug)]
pub enum KeyDefault {
    /// Unset unless configured.
    None,
    Text(&'static str),
    Bool(bool),
    Count(usize),
    Duration(Duration),
    Ratio(f64),
}

impl Key {
    /// The default, as the defaults layer holds it (as a file would).
    pub fn default_value(&self) -> Option<Value> {
        match self.default {
            KeyDefault::None => None,
            KeyDefault::Text(text) => Some(Value::from(text)),
            KeyDefault::Bool(value) => Some(Value::from(value)),
            KeyDefault::Count(count) => Some(Value::from(count as u64)),
            KeyDefault::Duration(duration) => Some(Value::from(humantime::format_duration(duration).to_string())),
            KeyDefault::Ratio(ratio) => Some(Value::from(ratio)),
        }
    }

    /// The default of a duration key (zero if it has none).
    pub const fn default_duration(&self) -> Duration {
        match self.default {
            KeyDefault::Duration(duration) => duration,
            _ => Duration::ZERO,
        }
    }

    /// The default of a count key (zero if it has none).
    pub const fn default_count(&self) -> usize {
        match self.default {
            KeyDefault::Count(count) => count,
            _ => 0,
        }
    }

    /// The default of a boolean key (false if it has none).
    pub const fn default_bool(&self) -> bool {
        match self.default {
            KeyDefault::Bool(value) => value,
            _ => false,
        }
    }
}

/// The kind of value a key takes, and how it is checked.
#[derive(Debug)]
pub enum Kind {
    /// Text shown as it is.
    Text,
    /// Text that is a credential: never shown.
    Secret,
    /// An `http://` or `https://` URL, shown without the credentials it may carry.
    Url,
    /// A file or folder path (not empty).
    Path,
    /// A socket address, like `127.0.0.1:50051`.
    Address,
    /// `true` or `false`.
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A whole number in this range.
    Count(RangeInclusive<usize>),
    /// A duration (`"30s"`, `"24h"`) in this range; what to say when it is out of it.
    Duration { min: Duration, max: Duration, out_of_range: Option<&'static str> },
    /// A size in bytes (`"500GiB"`, `"2TiB"`, or a whole number: `bytes.rs`), at least this many.
    Bytes { min: u64 },
    /// A number from 0 to 1 (`0.25`, `1`).
    Ratio,
}

impl Kind {
    /// A duration longer than zero, at most [`model::MAX_DURATION`].
    pub const POSITIVE_DURATION: Kind =
        Kind::Duration { min: Duration::from_nanos(1), max: model::MAX_DURATION, out_of_range: None };
}

/// A value read and checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Text(String),
    Secret(Secret),
    Path(PathBuf),
    Address(SocketAddr),
    Bool(bool),
    Count(usize),
    Duration(Duration),
    Bytes(u64),
    Ratio(f64),
}

impl Read {
    /// How `check-config` prints it: secrets redacted, URLs without their credentials.
    pub fn shown(&self, kind: &Kind) -> toml::Value {
        match (self, kind) {
            (Self::Secret(_), _) => "<redacted>".into(),
            (Self::Text(text), Kind::Url) => crate::secret::redact_urls(text).into(),
            (Self::Text(text), _) => text.clone().into(),
            (Self::Path(path), _) => path.display().to_string().into(),
            (Self::Address(address), _) => address.to_string().into(),
            (Self::Bool(value), _) => (*value).into(),
            (Self::Count(count), _) => i64::try_from(*count).unwrap_or(i64::MAX).into(),
            (Self::Duration(duration), _) => humantime::format_duration(*duration).to_string().into(),
            (Self::Bytes(bytes), _) => super::bytes::format(*bytes).into(),
            (Self::Ratio(ratio), _) => (*ratio).into(),
        }
    }
}

/// Checks `value` as `kind`; the error says what is wrong (never repeating the value: it may be a secret).
/// Numbers and booleans are taken in their text form too, as environment variables give them.
pub fn read(kind: &Kind, value: Value) -> Result<Read, String> {
    match kind {
        Kind::Bool => match value {
            Value::Bool(_, b) => Ok(Read::Bool(b)),
            Value::String(_, s) if s == "true" || s == "false" => Ok(Read::Bool(s == "true")),
            other => Err(format!("must be true or false, found {}", describe(&other))),
        },
        _ => {
            let text = text(value)?;
            match kind {
                Kind::Text => Ok(Read::Text(text)),
                Kind::Secret => Ok(Read::Secret(Secret::new(text))),
                Kind::Url if text.starts_with("http://") || text.starts_with("https://") => Ok(Read::Text(text)),
                Kind::Url => Err("is not an http:// or https:// URL".into()),
                Kind::Path if text.is_empty() => Err("is empty; give a file path".into()),
                Kind::Path => Ok(Read::Path(PathBuf::from(text))),
                Kind::Address => {
                    text.parse().map(Read::Address).map_err(|_| "is not an address like 127.0.0.1:50051".into())
                }
                Kind::Choice(words) if words.contains(&text.as_str()) => Ok(Read::Text(text)),
                Kind::Choice(words) => {
                    Err(format!("must be {}", words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(" or ")))
                }
                Kind::Count(range) => match text.parse::<usize>() {
                    Ok(n) if range.contains(&n) => Ok(Read::Count(n)),
                    _ => Err(format!("is not a whole number from {} to {}", range.start(), range.end())),
                },
                Kind::Duration { min, max, out_of_range } => {
                    let duration = humantime::parse_duration(&text)
                        .map_err(|_| "is not a duration like \"30s\", \"24h\" or \"7d\"".to_owned())?;
                    let duration = model::bounded(duration)?;
                    match (duration < *min, duration > *max, out_of_range) {
                        (false, false, _) => Ok(Read::Duration(duration)),
                        (_, _, Some(message)) => Err((*message).to_owned()),
                        (true, _, None) if min.is_zero() || *min <= Duration::from_nanos(1) => {
                            Err("must be longer than zero".into())
                        }
                        (true, _, None) => Err(format!("must be at least {}", humantime::format_duration(*min))),
                        (false, true, None) => Err(format!("must be at most {}", humantime::format_duration(*max))),
                    }
                }
                Kind::Bytes { min } => match super::bytes::parse(&text) {
                    Some(bytes) if bytes >= *min => Ok(Read::Bytes(bytes)),
                    Some(_) => Err(format!("must be at least {}", super::bytes::format(*min))),
                    None => Err(super::bytes::EXPECTED.to_owned()),
                },
                Kind::Ratio => match text.trim().parse::<f64>() {
                    Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(Read::Ratio(ratio)),
                    _ => Err("is not a number from 0 to 1 (\"0.25\", \"1\")".into()),
                },
                Kind::Bool => unreachable!("read above"),
            }
        }
    }
}

/// `value` as text: a string, or a number or boolean in its text form.
fn text(value: Value) -> Result<String, String> {
    match value {
        Value::String(_, s) => Ok(s),
        Value::Char(_, c) => Ok(c.to_string()),
        Value::Bool(_, b) => Ok(b.to_string()),
        Value::Num(_, n) => Ok(num_text(n)),
        other => Err(format!("must be a string, found {}", describe(&other))),
    }
}

/// A number as it was written: integers without a fraction.
fn num_text(n: figment::value::Num) -> String {
    use figment::value::Num;
    match n {
        Num::U8(v) => v.to_string(),
        Num::U16(v) => v.to_string(),
        Num::U32(v) => v.to_string(),
        Num::U64(v) => v.to_string(),
        Num::U128(v) => v.to_string(),
        Num::USize(v) => v.to_string(),
        Num::I8(v) => v.to_string(),
        Num::I16(v) => v.to_string(),
        Num::I32(v) => v.to_string(),
        Num::I64(v) => v.to_string(),
        Num::I128(v) => v.to_string(),
        Num::ISize(v) => v.to_string(),
        Num::F32(v) => v.to_string(),
        Num::F64(v) => v.to_string(),
    }
}

/// The kind of a value, for error messages (never the value: it may be a secret).
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

/// Of `allowed`, the name closest to the misspelt `name`, if it is close enough to be what was meant: one
/// that `name` begins (`cert` for `cert_file`), else one a few edits away.
pub fn closest<'a>(name: &str, allowed: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed: Vec<&str> = allowed.into_iter().collect();
    let extended =
        allowed.iter().filter(|candidate| candidate.starts_with(name) && name.len() >= 3).min_by_key(|c| c.len());
    if let Some(candidate) = extended {
        return Some(candidate);
    }
    let (best, distance) =
        allowed.iter().map(|candidate| (*candidate, edit_distance(name, candidate))).min_by_key(|(_, d)| *d)?;
    (distance > 0 && distance <= (name.chars().count() / 3).max(2)).then_some(best)
}

/// The Levenshtein distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_name_is_suggested_only_when_it_is_close() {
        let allowed = ["aws_access_key_id", "aws_secret_access_key", "aws_region", "url"];
        assert_eq!(closest("aws_secret_acess_key", allowed), Some("aws_secret_access_key"));
        assert_eq!(closest("aws_regoin", allowed), Some("aws_region"));
        assert_eq!(closest("urls", allowed), Some("url"));
        assert_eq!(closest("something_else_entirely", allowed), None);
        assert_eq!(closest("cert", ["cert_file", "key_file", "client_ca_file"]), Some("cert_file"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
