//! The filesystem operations of the local backend: folders made durable, create-only writes, and files of a
//! sink opened only where they really are.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::Path,
};

use super::{
    failed,
    syncs::{Failure, FolderSyncs},
};
use crate::{model::RESERVED_PREFIX, storage::StorageError};

/// Who may use a folder the backend makes.
#[derive(Clone, Copy)]
pub(super) enum Access {
    /// A sink: workers write it and clients read it (the umask decides).
    Shared,
    /// The service's records: its own user only (`0700`).
    Private,
}

/// Creates `dir` and any missing folders between `root` and it, each new folder's name made durable (a shared
/// sync of its parent) before the next one is made.
pub(super) fn ensure_dir(root: &Path, dir: &Path, access: Access, syncs: &FolderSyncs) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut current = dir;
    while current != root && !current.is_dir() {
        missing.push(current);
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
    let mut builder = DirBuilder::new();
    if let Access::Private = access {
        builder.mode(0o700);
    }
    for new_dir in missing.into_iter().rev() {
        match builder.create(new_dir) {
            Ok(()) => {}
            // Made by a concurrent call just now, maybe not durable yet: its parent is synced all the same (a
            // sync that call may be sharing).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("creating folder", new_dir, e)),
        }
        if let Some(parent) = new_dir.parent() {
            sync_dir(parent, syncs)?;
        }
    }
    Ok(())
}

/// Makes the entries made in `dir` so far durable: a sync shared with the other calls doing the same.
fn sync_dir(dir: &Path, syncs: &FolderSyncs) -> Result<(), StorageError> {
    syncs.sync(dir, |dir| File::open(dir).and_then(|d| d.sync_all())).map_err(sync_failed)
}

/// The error of every write once a sync has failed.
pub(super) fn sync_failed(failure: Failure) -> StorageError {
    let error = io::Error::new(
        failure.error.kind(),
        format!("{} (a sync failed: nothing is written until the service is restarted)", failure.error),
    );
    failed("syncing folder", &failure.folder, error)
}

/// Writes `bytes` at `target` (whose key is `key`) unless something is there, durably: see [`put_create_all`].
pub(super) fn put_create(
    root: &Path,
    target: &Path,
    key: &str,
    bytes: &[u8],
    syncs: &FolderSyncs,
) -> Result<(), StorageError> {
    put_create_all(root, &[(target, key)], bytes, |_| Ok(()), syncs)
}

/// Writes `bytes` create-only at each of `targets` (paths with their keys), in order, running `between` after
/// the first: the first one decides (if something is there it fails with [`StorageError::AlreadyExists`] and
/// changes nothing), a later one that exists already is left as it is.
///
/// The bytes go to one temporary file, synced, that each target then names (a hard link: nobody sees a partial
/// record, and of racing writers one wins), each name made durable (a shared sync of its folder) before the
/// next step: a crash leaves a prefix of the steps.
pub(super) fn put_create_all(
    root: &Path,
    targets: &[(&Path, &str)],
    bytes: &[u8],
    between: impl FnOnce(&FolderSyncs) -> Result<(), StorageError>,
    syncs: &FolderSyncs,
) -> Result<(), StorageError> {
    syncs.check().map_err(sync_failed)?;
    let Some(((first, _), _)) = targets.split_first() else { return Ok(()) };
    let dir = first.parent().unwrap_or(root);
    ensure_dir(root, dir, Access::Private, syncs)?;
    let temp = dir.join(format!("{RESERVED_PREFIX}-tmp-{}", temp_suffix()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_data()));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(failed("writing", &temp, e));
    }
    let linked = link_all(root, &temp, targets, between, syncs);
    let _ = fs::remove_file(&temp);
    linked
}

fn link_all(
    root: &Path,
    temp: &Path,
    targets: &[(&Path, &str)],
    between: impl FnOnce(&FolderSyncs) -> Result<(), StorageError>,
    syncs: &FolderSyncs,
) -> Result<(), StorageError> {
    let mut between = Some(between);
    for (number, (target, key)) in targets.iter().enumerate() {
        let dir = target.parent().unwrap_or(root);
        if number > 0 {
            ensure_dir(root, dir, Access::Private, syncs)?;
        }
        match fs::hard_link(temp, target) {
            Ok(()) => sync_dir(dir, syncs)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && number == 0 => {
                return Err(StorageError::AlreadyExists { key: (*key).to_owned() });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("linking", target, e)),
        }
        if let Some(between) = between.take() {
            between(syncs)?;
        }
    }
    Ok(())
}

/// A name no other writer uses at the same time: this process and a random part.
fn temp_suffix() -> String {
    let mut random = [0u8; 8];
    // A failing random source still leaves the process id and a counter: unique within this host.
    let _ = getrandom::fill(&mut random);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{count}-{:016x}", std::process::id(), u64::from_le_bytes(random))
}

/// The file at `file` (a path under the sink `sink`, whose key is `key`) opened for reading, with its size,
/// if it is a regular file of the sink's own: not reached through a symbolic link (to anywhere), nor a second
/// name of a file elsewhere. Anything else is [`StorageError::NotFound`].
pub(super) fn open_in_sink(sink: &Path, file: &Path, key: &str) -> Result<(File, u64), StorageError> {
    let not_found = || StorageError::NotFound { key: key.to_owned() };
    let opened = match File::open(file) {
        Ok(opened) => opened,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Err(not_found()),
        Err(e) => return Err(failed("opening", file, e)),
    };
    let meta = opened.metadata().map_err(|e| failed("reading", file, e))?;
    if !meta.is_file() || meta.nlink() > 1 {
        return Err(not_found());
    }
    // Where the file opened really is: a link anywhere on the way would lead out of the sink.
    let real = fs::read_link(format!("/proc/self/fd/{}", opened.as_raw_fd()))
        .or_else(|_| fs::canonicalize(file))
        .map_err(|e| failed("resolving", file, e))?;
    let sink_is_a_folder = fs::symlink_metadata(sink).is_ok_and(|meta| meta.is_dir());
    match sink_is_a_folder && real.starts_with(sink) {
        true => Ok((opened, meta.len())),
        false => Err(not_found()),
    }
}
