//! A committed sink handed from its worker to the service (`local.client_group`): the sink, its folders and
//! its files given to the service's user and the clients' group (folders `2750`, files `0640`), so that
//! clients in the group read the result and the worker can no longer change it. Done at Commit before the
//! files are pinned (a change of owner moves each file's change time), and undone if the Commit is refused, so
//! that the worker can mend its files and commit again.
//!
//! Every change is made through a descriptor opened without following a link (a worker may swap a name for a
//! link to anything at any moment, and the service may be root); a file with another name elsewhere is left
//! alone (the Commit refuses it anyway). The sink first, then its folders from the top down, then its files:
//! once a folder is handed over, nothing in it can be renamed or replaced by the worker.

use std::{collections::BTreeSet, io, os::unix::fs::MetadataExt};

use super::{
    folders::{Folder, Unreachable, has_other_names, set_owner_and_mode},
    tree,
};
use crate::storage::EntryKind;

/// The mode of a handed-over folder: setgid, the service writes, the clients' group reads.
const FOLDER_MODE: u32 = 0o2750;
/// The mode of a handed-over file: the service writes, the clients' group reads.
const FILE_MODE: u32 = 0o640;

/// Who owned one handed-over entry before, and its mode: what [`give_back`] restores.
#[derive(Debug)]
pub(super) struct Owned {
    /// Relative to the sink; empty for the sink itself.
    path: String,
    folder: bool,
    user: u32,
    group: u32,
    mode: u32,
}

/// Hands `sink` over to `user` and `group` (at most `limit` entries looked at); answers what it changed, in
/// order, for [`give_back`].
pub(super) fn hand_over(sink: &Folder, user: u32, group: u32, limit: usize) -> io::Result<Vec<Owned>> {
    let entries = tree::walk(sink, limit)?;
    let files: Vec<&str> = entries.iter().filter(|e| e.kind == EntryKind::File).map(|e| e.path.as_str()).collect();
    // Every folder that holds a file, from the top down (a parent's path sorts before its children's).
    let folders: BTreeSet<String> = files
        .iter()
        .flat_map(|path| {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .collect();
    let mut changed = Vec::new();
    let stat = sink.own_stat()?;
    changed.push(Owned {
        path: String::new(),
        folder: true,
        user: stat.st_uid,
        group: stat.st_gid,
        mode: stat.st_mode,
    });
    sink.set_owner(user, group, FOLDER_MODE)?;
    let mut by_depth: Vec<&String> = folders.iter().collect();
    by_depth.sort_by_key(|path| path.matches('/').count());
    for path in by_depth {
        let Ok(folder) = sink.descend(path) else { continue };
        let stat = folder.own_stat()?;
        changed.push(Owned {
            path: path.clone(),
            folder: true,
            user: stat.st_uid,
            group: stat.st_gid,
            mode: stat.st_mode,
        });
        folder.set_owner(user, group, FOLDER_MODE)?;
    }
    for path in files {
        let (dir, name) = super::files::split(path);
        let Ok(folder) = sink.descend(dir) else { continue };
        let (file, meta) = match folder.file(name) {
            Ok(opened) => opened,
            // Gone, or swapped for something else: the Commit's walk says what is there.
            Err(Unreachable::Missing | Unreachable::Other(_)) => continue,
            Err(Unreachable::Failed(error)) => return Err(error),
        };
        if has_other_names(&meta) {
            continue;
        }
        changed.push(Owned {
            path: path.to_owned(),
            folder: false,
            user: meta.uid(),
            group: meta.gid(),
            mode: meta.mode(),
        });
        set_owner_and_mode(&file, Some(user), Some(group), FILE_MODE)?;
    }
    Ok(changed)
}

/// Gives back what [`hand_over`] changed, files first and the sink last; best effort (an entry gone meanwhile
/// is passed over), answering the first failure.
pub(super) fn give_back(sink: &Folder, changed: Vec<Owned>) -> io::Result<()> {
    let mut first = Ok(());
    for owned in changed.into_iter().rev() {
        let restored = if owned.folder {
            sink.descend(&owned.path)
                .map_err(io::Error::from)
                .and_then(|folder| folder.set_owner(owned.user, owned.group, owned.mode & 0o7777))
        } else {
            let (dir, name) = super::files::split(&owned.path);
            sink.descend(dir).and_then(|folder| folder.file(name)).map_err(io::Error::from).and_then(|(file, _)| {
                set_owner_and_mode(&file, Some(owned.user), Some(owned.group), owned.mode & 0o7777)
            })
        };
        if first.is_ok() {
            first = restored;
        }
    }
    first
}
