//! The filesystem operations of the local backend on records and the files of sinks, all reached through
//! descriptors one component at a time (`folders.rs`): folders made durable, create-only writes, records read
//! within a bound, and files of a sink opened only where they really are.

use std::{
    io::{self, BufReader, Write},
    path::Path,
};

use super::{
    failed,
    folders::{Folder, Unreachable, has_other_names},
    syncs::{Failure, FolderSyncs},
};
use crate::{
    config::SinkConfig,
    model::RESERVED_PREFIX,
    storage::{Bounded, StorageError},
};

/// Who may use a folder the backend makes (a sink is made by [`make_sink`]).
#[derive(Clone, Copy)]
pub(super) enum Access {
    /// The service's records: its own user only (`0700`).
    Private,
}

impl Access {
    /// The mode a folder of this access is made with (the umask applies).
    pub(super) fn mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
        }
    }
}

/// Makes the sink folder `name` in `root` as `sinks` says: made private (`0700`), then given the sinks' group
/// (if one is configured) and mode, so that it is never open wider than configured, and the umask does not
/// narrow it. `false` if something is there already (left as it is).
pub(super) fn make_sink(root: &Folder, name: &str, sinks: SinkConfig) -> io::Result<bool> {
    if !root.make_folder(name, Access::Private.mode())? {
        return Ok(false);
    }
    let sink = root.folder(name).map_err(|error| match error {
        Unreachable::Failed(error) => error,
        Unreachable::Missing => io::ErrorKind::NotFound.into(),
        Unreachable::Other(what) => io::Error::other(format!("{what} is where the sink was just made")),
    })?;
    sink.set_group_and_mode(sinks.group, sinks.mode)?;
    Ok(true)
}

/// The folder and the name of `key` (`/`-separated, relative to the root).
pub(super) fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// The folder at `relative` below `root`, each folder on the way made where missing, its name made durable
/// (a shared sync of its parent) before the next one is made. Something else where a folder should be fails.
pub(super) fn make_folders(
    root: &Folder,
    relative: &str,
    access: Access,
    syncs: &FolderSyncs,
) -> Result<Folder, StorageError> {
    let mode = access.mode();
    let mut current = root.try_clone().map_err(|e| failed("opening folder", root.path(), e))?;
    for name in relative.split('/').filter(|name| !name.is_empty()) {
        current = match current.folder(name) {
            Ok(next) => next,
            Err(Unreachable::Missing) => {
                let path = current.path().join(name);
                // Made now, or by a concurrent call just now and maybe not durable yet: its parent is synced
                // all the same (a sync that call may be sharing).
                current.make_folder(name, mode).map_err(|e| failed("creating folder", &path, e))?;
                sync(&current, syncs)?;
                current.folder(name).map_err(|e| unreachable("creating folder", &path, e))?
            }
            Err(error) => return Err(unreachable("opening folder", &current.path().join(name), error)),
        };
    }
    Ok(current)
}

/// Makes the entries made in `folder` so far durable: a sync shared with the other calls doing the same.
pub(super) fn sync(folder: &Folder, syncs: &FolderSyncs) -> Result<(), StorageError> {
    syncs.sync(folder.path(), |_| folder.sync()).map_err(sync_failed)
}

/// The error of every write once a sync has failed.
pub(super) fn sync_failed(failure: Failure) -> StorageError {
    let error = io::Error::new(
        failure.error.kind(),
        format!("{} (a sync failed: nothing is written until the service is restarted)", failure.error),
    );
    failed("syncing folder", &failure.folder, error)
}

/// A folder or file that could not be reached, as a storage failure of `operation` on `path`.
pub(super) fn unreachable(operation: &'static str, path: &Path, error: Unreachable) -> StorageError {
    let error = match error {
        Unreachable::Missing => io::Error::from(io::ErrorKind::NotFound),
        Unreachable::Other(what) => io::Error::other(format!("{what} is where a folder should be")),
        Unreachable::Failed(error) => error,
    };
    failed(operation, path, error)
}

/// Writes `bytes` at `key` unless something is there (then [`StorageError::AlreadyExists`]), durably.
///
/// The bytes go to a temporary file, synced, that the key then names (a hard link: nobody sees a partial
/// record, and of racing writers one wins), and the name is made durable (a shared sync of its folder) before
/// this returns.
pub(super) fn put_create(root: &Folder, key: &str, bytes: &[u8], syncs: &FolderSyncs) -> Result<(), StorageError> {
    syncs.check().map_err(sync_failed)?;
    let (dir, name) = split(key);
    let folder = make_folders(root, dir, Access::Private, syncs)?;
    let temp = write_temporary(&folder, bytes)?;
    let linked = match folder.link(&temp, &folder, name) {
        Ok(()) => sync(&folder, syncs),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StorageError::AlreadyExists { key: key.to_owned() }),
        Err(e) => Err(failed("linking", folder.path().join(name), e)),
    };
    let _ = folder.remove_file(&temp);
    linked
}

/// `bytes` in a new temporary file of `folder` (private to the service), synced: answers its name. The
/// caller names it and then removes this name; a failed write leaves nothing.
pub(super) fn write_temporary(folder: &Folder, bytes: &[u8]) -> Result<String, StorageError> {
    let temp = temp_name();
    let written =
        folder.create_new(&temp, 0o600).and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_data()));
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = folder.remove_file(&temp);
            Err(failed("writing", folder.path().join(&temp), e))
        }
    }
}

/// The name of a temporary file of a create-only write: one no other writer uses at the same time.
fn temp_name() -> String {
    format!("{RESERVED_PREFIX}-tmp-{}", temp_suffix())
}

/// A part of a name no other writer uses at the same time: this process and a random part.
fn temp_suffix() -> String {
    let mut random = [0u8; 8];
    // A failing random source still leaves the process id and a counter: unique within this host.
    let _ = getrandom::fill(&mut random);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{count}-{:016x}", std::process::id(), u64::from_le_bytes(random))
}

/// The record at `key` below `root`, handed to `decode` as a reader that fails past `max_bytes`, if it is a
/// regular file of at most that size: anything else is [`StorageError::Unreadable`], unread.
pub(super) fn read_record<T>(
    root: &Folder,
    key: &str,
    max_bytes: u64,
    decode: impl FnOnce(&mut dyn io::Read) -> T,
) -> Result<T, StorageError> {
    let (dir, name) = split(key);
    let refused = |error: Unreachable, path: &Path, whose: &str| match error {
        Unreachable::Missing => StorageError::NotFound { key: key.to_owned() },
        Unreachable::Other(what) => StorageError::unreadable(key, format!("{whose} is {what}")),
        Unreachable::Failed(error) => failed("reading", path, error),
    };
    let folder = root.descend(dir).map_err(|e| refused(e, &root.path().join(dir), "a folder on its way"))?;
    let (file, meta) = folder.file(name).map_err(|e| refused(e, &folder.path().join(name), "it"))?;
    if meta.len() > max_bytes {
        let reason = format!("it is larger than {max_bytes} bytes, the most any release writes");
        return Err(StorageError::unreadable(key, reason));
    }
    Ok(decode(&mut Bounded::new(BufReader::new(file), max_bytes)))
}

/// The file `path` (a `/`-separated path relative to the sink `sink`, whose key is `key`) open for reading,
/// with its size, if it is a regular file of the sink's own: no component of its path a link (to anywhere),
/// nor the file a second name of one elsewhere. Anything else is [`StorageError::NotFound`].
pub(super) fn open_in_sink(sink: &Folder, path: &str, key: &str) -> Result<(std::fs::File, u64), StorageError> {
    let (dir, name) = split(path);
    let reached = sink.descend(dir).and_then(|folder| folder.file(name));
    match reached {
        Ok((file, meta)) if !has_other_names(&meta) => Ok((file, meta.len())),
        Ok(_) | Err(Unreachable::Missing | Unreachable::Other(_)) => {
            Err(StorageError::NotFound { key: key.to_owned() })
        }
        Err(Unreachable::Failed(error)) => Err(failed("opening", sink.path().join(path), error)),
    }
}
