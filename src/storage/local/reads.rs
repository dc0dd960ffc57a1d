//! Reads of committed files: the bytes of a range streamed a chunk ahead of the consumer, and the checks that
//! the open file is still the one committed (its pin: device, inode and change time, which any write, truncate,
//! `chmod` or rename moves forward).

use std::{fs, io, ops::Range, path::PathBuf};

use bytes::BytesMut;

use super::{failed, tree};
use crate::{
    model::{ManifestFile, Pin},
    storage::{READ_CHUNK, StorageError},
};

/// Whether the open `file` (at `key`) is the version `pin` names: [`StorageError::Changed`] if not.
pub(super) fn check_pin(file: &fs::File, pin: &Pin, key: &str, path: &std::path::Path) -> Result<(), StorageError> {
    let stat = rustix::fs::fstat(file).map_err(|e| failed("checking", path, io::Error::from(e)))?;
    match tree::pin(&stat) == *pin {
        true => Ok(()),
        false => Err(StorageError::Changed { key: key.to_owned() }),
    }
}

/// Whether the open `file` (at `key`, `size` bytes when opened) is still `committed`: its size, and its pin if
/// it has one.
pub(super) fn check_committed(
    file: &fs::File,
    size: u64,
    committed: &ManifestFile,
    key: &str,
    path: &std::path::Path,
) -> Result<(), StorageError> {
    if size != committed.size_bytes {
        return Err(StorageError::Changed { key: key.to_owned() });
    }
    committed.pin.as_ref().map_or(Ok(()), |pin| check_pin(file, pin, key, path))
}

/// Sends the bytes `range` of the open `file` (at `path`, stored at `key`), [`READ_CHUNK`] at a time, to
/// `sender`, a chunk ahead of the consumer: run by one blocking thread for the whole read (not a hand-off per
/// chunk). A file that ends before the range does (cut short since it was opened) fails the read; so does a
/// pinned one that changes during it, checked after each chunk is read and before it is sent (a write shows
/// in the change time before its bytes can be read). Returns when the range is read or the consumer is gone.
pub(super) fn read_chunks(
    file: fs::File,
    (path, key): (PathBuf, String),
    range: Range<u64>,
    pin: Option<Pin>,
    sender: tokio::sync::mpsc::Sender<Result<bytes::Bytes, StorageError>>,
) {
    use std::os::unix::fs::FileExt;
    let mut offset = range.start;
    while offset < range.end {
        let want = usize::try_from(range.end - offset).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
        let mut chunk = BytesMut::zeroed(want);
        let read = match file.read_at(&mut chunk, offset) {
            Ok(0) => {
                let cut = io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than when it was opened");
                Err(failed("reading", &path, cut))
            }
            Ok(read) => Ok(read),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => Err(failed("reading", &path, error)),
        };
        let read = read
            .and_then(|read| pin.as_ref().map_or(Ok(read), |pin| check_pin(&file, pin, &key, &path).map(|()| read)));
        let chunk = read.map(|read| {
            chunk.truncate(read);
            offset += read as u64;
            chunk.freeze()
        });
        let failed = chunk.is_err();
        // The consumer is gone (a client that disconnected): stop reading.
        if sender.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}
