//! The keys of a control folder of the local backend, in order: read a folder at a time through descriptors
//! (`folders.rs`), stopping early, never following a link. A folder holds keys only below it, so an empty one
//! (which no key of the service's is) is listed as a key itself: a reader then finds it is not a record,
//! instead of seeing nothing at all where a record should be.

use std::{ffi::OsStr, io, time::SystemTime};

use super::{
    failed,
    folders::{Folder, Unreachable},
};
use crate::{
    model::RESERVED_PREFIX,
    storage::{Listing, StorageError, StoredKey},
};

/// How many folders below the listed one keys may lie (the expiry index's are two down); a folder deeper is
/// listed as a key itself, unread.
const MAX_KEY_DEPTH: usize = 4;

/// What a listing reports of each key.
#[derive(Clone, Copy)]
pub(super) struct Detail {
    /// Temporary files of create-only writes (whose names are reserved) are listed too, and said to be.
    pub temporaries: bool,
    /// Each key's last modification is read (one `lstat` more per key).
    pub modified: bool,
}

/// The keys under the folder `prefix` of `root`, as `/`-separated keys in lexicographic order, as far as
/// `range` says; folders are read in order, those wholly before `range.after` are not entered, and the walk
/// stops at the first key past `range.until` or at the limit.
pub(super) fn list_keys(
    root: &Folder,
    prefix: &str,
    range: Listing<'_>,
    detail: Detail,
) -> Result<Vec<StoredKey>, StorageError> {
    let mut keys = Vec::new();
    let folder = match root.descend(prefix) {
        Ok(folder) => folder,
        Err(Unreachable::Missing) => return Ok(keys),
        Err(Unreachable::Other(what)) => {
            let error = io::Error::other(format!("{what} is where a folder of records should be"));
            return Err(failed("listing", root.path().join(prefix), error));
        }
        Err(Unreachable::Failed(error)) => return Err(failed("listing", root.path().join(prefix), error)),
    };
    let walk = Walk { range, detail, limit: range.limit.unwrap_or(usize::MAX) };
    walk.folder(&folder, prefix.trim_end_matches('/'), 0, &mut keys)?;
    Ok(keys)
}

/// Whether nothing under the entry `child` (a folder when `is_dir`) lies after `after`.
fn wholly_before(child: &str, is_dir: bool, after: &str) -> bool {
    match is_dir {
        // Its keys all start with `child/`: all before `after`, unless `after` is one of them or before them.
        true => {
            let folder = format!("{child}/");
            after > folder.as_str() && !after.starts_with(&folder)
        }
        false => child <= after,
    }
}

struct Walk<'a> {
    range: Listing<'a>,
    detail: Detail,
    limit: usize,
}

/// Whether a walk goes on after a folder.
enum Next {
    More,
    Stop,
}

impl Walk<'_> {
    /// Appends the keys under `folder` (whose key is `key`, `depth` folders below the listed one) in order.
    /// Answers whether the walk goes on, and how many entries the folder holds (reserved ones aside).
    fn folder(
        &self,
        folder: &Folder,
        key: &str,
        depth: usize,
        keys: &mut Vec<StoredKey>,
    ) -> Result<(Next, usize), StorageError> {
        let listing = folder.entries().map_err(|e| failed("listing", folder.path(), e))?;
        // Only the first `limit - keys.len()` names can be listed: keep those (a bounded max-heap), whatever the
        // folder holds.
        let room = self.limit.saturating_sub(keys.len());
        let mut names: std::collections::BinaryHeap<(String, bool, bool)> = std::collections::BinaryHeap::new();
        let mut held = 0usize;
        for entry in listing {
            let entry = entry.map_err(|e| failed("listing", folder.path(), e))?;
            let Some(name) = entry.name.to_str().map(str::to_owned) else { continue };
            let temporary = name.starts_with(RESERVED_PREFIX);
            if !temporary {
                held += 1;
            }
            if temporary && !self.detail.temporaries {
                continue; // a create-only write in progress
            }
            if names.len() >= room && names.peek().is_some_and(|(largest, _, _)| &name >= largest) {
                continue;
            }
            let is_dir = folder.holds_folder(&entry);
            if self.range.after.is_some_and(|after| wholly_before(&format!("{key}/{name}"), is_dir, after)) {
                continue;
            }
            names.push((name, is_dir, temporary));
            if names.len() > room {
                names.pop();
            }
        }
        for (name, is_dir, temporary) in names.into_sorted_vec() {
            let child = format!("{key}/{name}");
            if self.range.until.is_some_and(|until| child.as_str() >= until && !until.starts_with(&format!("{child}/")))
            {
                return Ok((Next::Stop, held));
            }
            if keys.len() >= self.limit {
                return Ok((Next::Stop, held));
            }
            if is_dir && depth < MAX_KEY_DEPTH {
                let inner = match folder.folder(&name) {
                    Ok(inner) => inner,
                    Err(Unreachable::Missing) => continue,
                    // Replaced since it was read: listed as what it is now, a key that is not a folder.
                    Err(Unreachable::Other(_)) => {
                        self.push(folder, &name, child, temporary, keys);
                        continue;
                    }
                    Err(Unreachable::Failed(error)) => return Err(failed("listing", folder.path().join(&name), error)),
                };
                let before = keys.len();
                let (next, inner_held) = self.folder(&inner, &child, depth + 1, keys)?;
                if inner_held == 0 && keys.len() == before && self.range.contains(&child) {
                    self.push(folder, &name, child, temporary, keys);
                }
                if let Next::Stop = next {
                    return Ok((Next::Stop, held));
                }
            } else {
                self.push(folder, &name, child, temporary, keys);
            }
        }
        Ok((Next::More, held))
    }

    fn push(&self, folder: &Folder, name: &str, key: String, temporary: bool, keys: &mut Vec<StoredKey>) {
        let modified = match self.detail.modified {
            true => folder.stat(OsStr::new(name)).ok().and_then(|stat| modified(&stat)),
            false => None,
        };
        keys.push(StoredKey { key, modified, temporary });
    }
}

/// When a file was last modified, from its `lstat`.
fn modified(stat: &rustix::fs::Stat) -> Option<SystemTime> {
    let seconds = u64::try_from(stat.st_mtime).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(seconds, u32::try_from(stat.st_mtime_nsec).ok()?))
}
