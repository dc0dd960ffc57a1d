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

use super::failed;
use crate::{model::RESERVED_PREFIX, storage::StorageError};

/// Who may use a folder the backend makes.
#[derive(Clone, Copy)]
pub(super) enum Access {
    /// A sink: workers write it and clients read it (the umask decides).
    Shared,
    /// The service's records: its own user only (`0700`).
    Private,
}

/// Creates `dir` and any missing folders between `root` and it, fsyncing each new folder's parent so the new
/// names are durable.
pub(super) fn ensure_dir(root: &Path, dir: &Path, access: Access) -> Result<(), StorageError> {
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
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed("creating folder", new_dir, e)),
        }
        if let Some(parent) = new_dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed("syncing folder", dir, e))
}

pub(super) fn put_create(root: &Path, target: &Path, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = target.parent().unwrap_or(root);
    ensure_dir(root, dir, Access::Private)?;
    let temp = dir.join(format!("{RESERVED_PREFIX}-tmp-{}", temp_suffix()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(failed("writing", &temp, e));
    }
    let linked = fs::hard_link(&temp, target);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StorageError::AlreadyExists { key: key.to_owned() }),
        Err(e) => Err(failed("linking", target, e)),
    }
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
