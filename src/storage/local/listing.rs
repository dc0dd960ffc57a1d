//! Listings of the local backend: the keys of a control folder in order (read a folder at a time, stopping
//! early), and every entry of a sink.

use std::{fs, io, os::unix::fs::MetadataExt, path::Path};

use super::failed;
use crate::{
    model::RESERVED_PREFIX,
    storage::{EntryKind, Listing, SinkEntry, StorageError},
};

/// The files under the folder `prefix` of `root`, as `/`-separated keys in lexicographic order, as far as
/// `range` says; folders are read in order, those wholly before `range.after` are not entered, and the walk
/// stops at the first key past `range.until` or at the limit.
pub(super) fn list_keys(root: &Path, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
    let mut keys = Vec::new();
    walk_sorted(&root.join(prefix), prefix.trim_end_matches('/'), range, &mut keys)?;
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

/// Appends the files under `dir` (whose key is `key`) in order; false once a key reached `range.until` or
/// `range.limit` keys are there.
fn walk_sorted(dir: &Path, key: &str, range: Listing<'_>, keys: &mut Vec<String>) -> Result<bool, StorageError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(failed("listing", dir, e)),
    };
    let limit = range.limit.unwrap_or(usize::MAX);
    // Only the first `limit - keys.len()` names can be listed: keep those (a bounded max-heap), whatever the
    // folder holds.
    let room = limit.saturating_sub(keys.len());
    let mut names: std::collections::BinaryHeap<(String, bool)> = std::collections::BinaryHeap::new();
    for item in listing {
        let item = item.map_err(|e| failed("listing", dir, e))?;
        let Some(name) = item.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with(RESERVED_PREFIX) {
            continue; // a create-only write in progress
        }
        if names.len() >= room && names.peek().is_some_and(|(largest, _)| &name >= largest) {
            continue;
        }
        let is_dir = item.file_type().map_err(|e| failed("reading", item.path(), e))?.is_dir();
        if range.after.is_some_and(|after| wholly_before(&format!("{key}/{name}"), is_dir, after)) {
            continue;
        }
        names.push((name, is_dir));
        if names.len() > room {
            names.pop();
        }
    }
    let names = names.into_sorted_vec();
    for (name, is_dir) in names {
        let child = format!("{key}/{name}");
        if range.until.is_some_and(|until| child.as_str() >= until && !until.starts_with(&format!("{child}/"))) {
            return Ok(false);
        }
        if keys.len() >= limit {
            return Ok(false);
        }
        if is_dir {
            if !walk_sorted(&dir.join(&name), &child, range, keys)? {
                return Ok(false);
            }
        } else {
            keys.push(child);
        }
    }
    Ok(true)
}

/// Every entry under `dir`, without following symbolic links; empty if `dir` does not exist. A `dir` that is
/// itself a symbolic link is reported as one entry of kind `Symlink` at the empty path.
pub(super) fn list_tree(dir: &Path) -> Result<Vec<SinkEntry>, StorageError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed("reading", dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return Ok(vec![SinkEntry { path: String::new(), size_bytes: 0, kind: EntryKind::Symlink }]);
        }
        Ok(_) => {}
    }
    let mut entries = Vec::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let listing = fs::read_dir(&folder).map_err(|e| failed("listing", &folder, e))?;
        for item in listing {
            let item = item.map_err(|e| failed("listing", &folder, e))?;
            let name = item.file_name();
            let (name, utf8) = match name.to_str() {
                Some(name) => (name.to_owned(), true),
                None => (name.to_string_lossy().into_owned(), false),
            };
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let meta = fs::symlink_metadata(item.path()).map_err(|e| failed("reading", item.path(), e))?;
            let kind = match meta.file_type() {
                t if t.is_dir() && utf8 => {
                    pending.push((item.path(), path));
                    continue;
                }
                t if t.is_symlink() => EntryKind::Symlink,
                // A second name of a file elsewhere (outside the root, say) is not the result's own file.
                t if t.is_file() && utf8 && meta.nlink() > 1 => EntryKind::Other,
                t if t.is_file() && utf8 => EntryKind::File,
                _ => EntryKind::Other,
            };
            entries.push(SinkEntry { path, size_bytes: meta.len(), kind });
        }
    }
    Ok(entries)
}
