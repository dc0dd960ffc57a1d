//! Reading one configuration table key by key, as the declarations say (`key.rs`), so that every error names
//! the full key to fix, an unknown key is answered with the closest allowed one and the list of them all, and
//! what was read is kept as `check-config` prints it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::value::{Dict, Value};

use super::{
    ConfigError,
    key::{Key, Read, closest, describe, read},
};
use crate::secret::Secret;

/// A configuration table being read: each `take` removes a key; [`Table::finish`] refuses what is left.
pub(super) struct Table {
    /// The dotted key of the table itself, e.g. `scheduler.anonymous_results.s3`.
    path: String,
    entries: Dict,
    /// What was read, as `check-config` prints it.
    shown: toml::Table,
}

impl Table {
    /// The table at `path`. A value that is not a table is an error naming `path`.
    pub(super) fn new(path: impl Into<String>, value: Value) -> Result<Self, ConfigError> {
        let path = path.into();
        match value {
            Value::Dict(_, entries) => Ok(Self { path, entries, shown: toml::Table::new() }),
            other => Err(ConfigError::invalid(&path, format!("must be a table, found {}", describe(&other)))),
        }
    }

    /// An empty table at `path`, for a section the file leaves out.
    pub(super) fn empty(path: impl Into<String>) -> Self {
        Self { path: path.into(), entries: Dict::new(), shown: toml::Table::new() }
    }

    /// The full dotted name of `name` in this table.
    pub(super) fn key(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) }
    }

    /// The dotted key of the table itself.
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// Removes `name` as a sub-table.
    pub(super) fn take_table(&mut self, name: &str) -> Result<Option<Table>, ConfigError> {
        let path = self.key(name);
        self.entries.remove(name).map(|value| Table::new(path, value)).transpose()
    }

    /// Removes the key `key` declares and checks its value; keeps it to be shown.
    pub(super) fn take(&mut self, key: &Key) -> Result<Option<Read>, ConfigError> {
        let (folder, name) = match key.name.rsplit_once('.') {
            Some((folder, name)) => (Some(folder), name),
            None => (None, key.name),
        };
        let entries = match folder {
            None => &mut self.entries,
            Some(folder) => match self.entries.get_mut(folder) {
                None => return Ok(None),
                Some(Value::Dict(_, entries)) => entries,
                Some(other) => {
                    let message = format!("must be a table, found {}", describe(other));
                    return Err(ConfigError::invalid(&self.key(folder), message));
                }
            },
        };
        let Some(value) = entries.remove(name) else { return Ok(None) };
        let value = read(&key.kind, value).map_err(|message| ConfigError::invalid(&self.key(key.name), message))?;
        let shown = match folder {
            None => &mut self.shown,
            Some(folder) => match self.shown.entry(folder).or_insert_with(|| toml::Table::new().into()) {
                toml::Value::Table(table) => table,
                _ => &mut self.shown,
            },
        };
        shown.insert(name.to_owned(), value.shown(&key.kind));
        Ok(Some(value))
    }

    /// The value of `key` as `pick` finds it in what was read (`None` also for a value of another kind,
    /// which the declarations rule out).
    fn typed<T>(&mut self, key: &Key, pick: fn(Read) -> Option<T>) -> Result<Option<T>, ConfigError> {
        Ok(self.take(key)?.and_then(pick))
    }

    pub(super) fn duration(&mut self, key: &Key) -> Result<Option<Duration>, ConfigError> {
        self.typed(key, |read| if let Read::Duration(duration) = read { Some(duration) } else { None })
    }

    pub(super) fn bytes(&mut self, key: &Key) -> Result<Option<u64>, ConfigError> {
        self.typed(key, |read| if let Read::Bytes(bytes) = read { Some(bytes) } else { None })
    }

    pub(super) fn ratio(&mut self, key: &Key) -> Result<Option<f64>, ConfigError> {
        self.typed(key, |read| if let Read::Ratio(ratio) = read { Some(ratio) } else { None })
    }

    pub(super) fn count(&mut self, key: &Key) -> Result<Option<usize>, ConfigError> {
        self.typed(key, |read| if let Read::Count(count) = read { Some(count) } else { None })
    }

    pub(super) fn bool(&mut self, key: &Key) -> Result<Option<bool>, ConfigError> {
        self.typed(key, |read| if let Read::Bool(value) = read { Some(value) } else { None })
    }

    /// A text, a choice or a URL.
    pub(super) fn text(&mut self, key: &Key) -> Result<Option<String>, ConfigError> {
        self.typed(key, |read| if let Read::Text(text) = read { Some(text) } else { None })
    }

    /// A text of any kind, held as a secret (its `Debug` and `Display` redacted).
    pub(super) fn secret(&mut self, key: &Key) -> Result<Option<Secret>, ConfigError> {
        self.typed(key, |read| match read {
            Read::Secret(secret) => Some(secret),
            Read::Text(text) => Some(Secret::new(text)),
            _ => None,
        })
    }

    pub(super) fn path_value(&mut self, key: &Key) -> Result<Option<PathBuf>, ConfigError> {
        self.typed(key, |read| if let Read::Path(path) = read { Some(path) } else { None })
    }

    pub(super) fn address(&mut self, key: &Key) -> Result<Option<SocketAddr>, ConfigError> {
        self.typed(key, |read| if let Read::Address(address) = read { Some(address) } else { None })
    }

    /// What was read, as `check-config` prints it; the keys left belong to someone else (the cluster's own
    /// keys of `[scheduler]`).
    pub(super) fn finish_ignoring_the_rest(self) -> toml::Table {
        self.shown
    }

    /// Refuses any key not taken yet (in this table or a sub-table of `keys`), naming it, the closest allowed
    /// key, and every allowed one (`keys`, then the sub-tables `others`). Answers what was read, to be shown.
    pub(super) fn finish(mut self, keys: &[&Key], others: &[&str]) -> Result<toml::Table, ConfigError> {
        let mut top: Vec<&str> = Vec::new();
        for key in keys {
            let first = key.name.split('.').next().unwrap_or(key.name);
            if !top.contains(&first) {
                top.push(first);
            }
        }
        top.extend_from_slice(others);
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            let sub: Vec<&str> = keys.iter().filter_map(|key| key.name.strip_prefix(&format!("{name}."))).collect();
            match self.entries.remove(&name) {
                Some(Value::Dict(_, entries)) if !sub.is_empty() => {
                    if let Some(unknown) = entries.keys().next() {
                        return Err(unknown_key(&format!("{}.{name}", self.path), unknown, &sub));
                    }
                }
                _ => return Err(unknown_key(&self.path, &name, &top)),
            }
        }
        Ok(self.shown)
    }
}

/// An unknown key `name` in the table `path`, where `allowed` are.
fn unknown_key(path: &str, name: &str, allowed: &[&str]) -> ConfigError {
    let key = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
    let suggestion =
        closest(name, allowed.iter().copied()).map(|close| format!("did you mean `{close}`? ")).unwrap_or_default();
    ConfigError::invalid(
        &key,
        format!("unknown key; {suggestion}the keys allowed in `{path}` are: {}", allowed.join(", ")),
    )
}
