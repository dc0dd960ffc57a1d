//! Reading one configuration table key by key, so that every error names the full key to fix and an unknown
//! key lists the allowed ones.

use figment::value::{Dict, Value};

use super::ConfigError;

/// A configuration table being read: each `take_*` removes a key; [`Table::finish`] refuses what is left.
pub(super) struct Table {
    /// The dotted key of the table itself, e.g. `scheduler.anonymous_results.s3`.
    path: String,
    entries: Dict,
}

impl Table {
    /// The table at `path`. A value that is not a table is an error naming `path`.
    pub(super) fn new(path: impl Into<String>, value: Value) -> Result<Self, ConfigError> {
        let path = path.into();
        match value {
            Value::Dict(_, entries) => Ok(Self { path, entries }),
            other => Err(ConfigError::invalid(&path, format!("must be a table, found {}", kind(&other)))),
        }
    }

    /// An empty table at `path`, for a section the file leaves out.
    pub(super) fn empty(path: impl Into<String>) -> Self {
        Self { path: path.into(), entries: Dict::new() }
    }

    /// The full dotted name of `key` in this table.
    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    /// The dotted key of the table itself.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// Removes `key` as a sub-table.
    pub(super) fn take_table(&mut self, key: &str) -> Result<Option<Table>, ConfigError> {
        let path = self.key(key);
        self.entries.remove(key).map(|value| Table::new(path, value)).transpose()
    }

    /// Removes `key` as a string. Numbers and booleans are taken in their text form, as environment
    /// variables give them (`PC_CUBLET__...=1234` arrives as a number).
    pub(super) fn take_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.entries.remove(key) else {
            return Ok(None);
        };
        match value {
            Value::String(_, s) => Ok(Some(s)),
            Value::Char(_, c) => Ok(Some(c.to_string())),
            Value::Bool(_, b) => Ok(Some(b.to_string())),
            Value::Num(_, n) => Ok(Some(num_text(n))),
            other => Err(ConfigError::invalid(&self.key(key), format!("must be a string, found {}", kind(&other)))),
        }
    }

    /// Removes `key` as a boolean (`true`/`false`).
    pub(super) fn take_bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.entries.remove(key) else {
            return Ok(None);
        };
        match value {
            Value::Bool(_, b) => Ok(Some(b)),
            Value::String(_, s) if s == "true" => Ok(Some(true)),
            Value::String(_, s) if s == "false" => Ok(Some(false)),
            other => {
                Err(ConfigError::invalid(&self.key(key), format!("must be true or false, found {}", kind(&other))))
            }
        }
    }

    /// Removes `key` as a whole number within `range` (text is accepted, as environment variables give it).
    pub(super) fn take_count(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<Option<usize>, ConfigError> {
        let Some(text) = self.take_string(key)? else { return Ok(None) };
        match text.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ConfigError::invalid(
                &self.key(key),
                format!("is not a whole number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// Removes `key` as a duration in humantime form (`"30s"`, `"24h"`, `"1h 30m"`), at most
    /// [`MAX_DURATION`](crate::model::MAX_DURATION).
    pub(super) fn take_duration(&mut self, key: &str) -> Result<Option<std::time::Duration>, ConfigError> {
        let Some(text) = self.take_string(key)? else {
            return Ok(None);
        };
        let duration = humantime::parse_duration(&text)
            .map_err(|_| ConfigError::invalid(&self.key(key), "is not a duration like \"30s\", \"24h\" or \"7d\""))?;
        crate::model::bounded(duration).map(Some).map_err(|message| ConfigError::invalid(&self.key(key), message))
    }

    /// Refuses any key not taken yet, naming it and listing `allowed`.
    pub(super) fn finish(self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.entries.keys().next() {
            None => Ok(()),
            Some(unknown) => Err(ConfigError::invalid(
                &self.key(unknown),
                format!("unknown key; the keys allowed in `{}` are: {}", self.path, allowed.join(", ")),
            )),
        }
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
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}
