//! Where results live. [`Backend`] is the small set of operations the domain core needs from a store; each
//! backend implements it in a file of its own ([`LocalStorage`] for a shared filesystem, [`ObjectStorage`]
//! for every object store, with a builder per cloud), and [`Storage`] is the one the configuration names.
//! [`Unreliable`] wraps any backend to make chosen operations fail, for tests of failure handling.
//!
//! Keys are `/`-separated paths relative to the configured root (see `layout.rs`); a sink is the folder
//! `<root>/<result_id>/` that a worker writes into.

mod configured;
mod error;
mod local;
mod objects;
mod presign;
pub mod trace;
mod unreliable;

use std::{collections::BTreeMap, future::Future, io, ops::Range, pin::Pin, time::Duration};

use bytes::Bytes;
pub use configured::Storage;
pub use error::{Cause, StorageError, StorageLocation};
use futures::Stream;
pub use local::{BlockingClass, BlockingClasses, DEFAULT_BLOCKING_LIMIT, Held, LocalStorage, permissions};
pub use objects::{ObjectStorage, install_tls_provider};
pub use unreliable::{Fault, Faults, Operation, Unreliable};

use crate::{
    model::{ManifestFile, ResultId, Timestamp},
    secret::Secret,
};

/// Where a worker writes a result, as Allocate answers it.
#[derive(Clone, Debug)]
pub struct Sink {
    /// The folder, ending in `/`: an absolute local path or an object-store url.
    pub uri: String,
    /// The Polars `storage_options` a worker writes with (credentials: expose only to the worker).
    pub storage_options: BTreeMap<String, Secret>,
    /// When the credentials in `storage_options` end, if they do (scoped credentials: a role's session).
    pub credentials_expire_at: Option<std::time::SystemTime>,
}

/// What is under a sink at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: the only kind a result may contain.
    File,
    /// A symbolic link, which a result may not contain: it could point anywhere.
    Symlink,
    /// Anything else (a device, a socket, a file with more than one link, a name that is not UTF-8).
    Other,
    /// A folder nested deeper than a result's files may lie: not entered.
    TooDeep,
}

/// One entry found under a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkEntry {
    /// Relative to the sink, `/`-separated (lossy if the name is not UTF-8; then `kind` is `Other`).
    pub path: String,
    pub size_bytes: u64,
    pub kind: EntryKind,
    /// What identifies this version of the file, where the listing tells (an object's entity tag and
    /// version id as the store gives them, unchecked; a local file's device, inode and change time).
    pub pin: Option<crate::model::Pin>,
}

/// Which keys of a folder [`Backend::list_keys`] answers: those after `after` and before `until`, at most
/// `limit` of them (the first ones). The default is every key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listing<'a> {
    pub after: Option<&'a str>,
    pub until: Option<&'a str>,
    pub limit: Option<usize>,
}

impl Listing<'_> {
    /// Every key.
    pub const ALL: Listing<'static> = Listing { after: None, until: None, limit: None };

    /// Whether `key` lies after `after` and before `until`.
    pub fn contains(&self, key: &str) -> bool {
        self.after.is_none_or(|after| key > after) && self.until.is_none_or(|until| key < until)
    }
}

/// A key found under a control folder by [`Backend::list_stored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub key: String,
    /// When it was last written, where the store says.
    pub modified: Option<std::time::SystemTime>,
    /// A temporary file of a create-only write (a write in progress, or one a crash cut short), not a record.
    pub temporary: bool,
}

/// Where a client downloads one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// An absolute local path or a presigned URL.
    pub url: String,
    /// When a presigned URL stops working; `None` for a path.
    pub expires_at: Option<Timestamp>,
}

/// What a location of [`Backend::downloads`] lets a client do on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlDownloads {
    /// A presigned URL: any HTTP client downloads with it alone.
    Presigned,
    /// A path on the shared filesystem: only a client that mounts it reads it.
    LocalPaths,
    /// A presigned URL that downloads only with a customer-provided encryption key sent along (named by this
    /// storage option): no client has it, so files are served through the service instead.
    NeedsKey(&'static str),
}

/// How many HEADs [`Backend::complete_pins`] has in flight at once.
pub const PIN_HEADS: usize = 256;

/// How many results' deletions (or sink listings) [`Backend::delete_results`] runs at once.
pub const DELETE_LISTINGS: usize = 256;

/// The operations the domain core needs from a store. Every method may be called concurrently, from several
/// processes over the same storage too.
pub trait Backend: Send + Sync + 'static {
    /// The sink of result `id`: the folder `<root>/<id>/` and the options a worker writes with.
    fn sink(&self, id: &ResultId) -> Sink;

    /// The sink of `id` as a worker is handed it, by Allocate and RefreshSink: [`Backend::sink`], unless
    /// workers get credentials scoped to their sink, which are made now (one request, to STS) and last
    /// `valid_for` (within the bounds the store sets).
    fn worker_sink(
        &self,
        id: &ResultId,
        valid_for: Duration,
    ) -> impl Future<Output = Result<Sink, StorageError>> + Send {
        let _ = valid_for;
        std::future::ready(Ok(self.sink(id)))
    }

    /// Makes the sink of `id` ready for writing: creates the folder on a filesystem; nothing on an object
    /// store. Succeeds if it is ready already.
    fn prepare_sink(&self, id: &ResultId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Writes `bytes` at `key` unless something is there already, in which case it fails with
    /// [`StorageError::AlreadyExists`] and changes nothing. Of several racing writers of one key exactly one
    /// succeeds. Readers never see a partial object, and the object is durable when this returns.
    fn put_create(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Allocates result `id`: writes `record` create-only at `pending`, then makes the sink of `id` ready, then
    /// writes `record` create-only at `claim`, the name that decides which of racing Allocates of one query
    /// wins. Something at either name fails with [`StorageError::AlreadyExists`] naming it; after a lost claim
    /// the pending record and the sink stay, for the caller to remove. Each step is durable before the next
    /// begins, so a crash leaves a prefix of them: at worst a pending record and a sink, which the pruner
    /// abandons after the commit deadline the record holds. A backend may do it all at once (one record named
    /// twice, shared syncs); the default takes the three steps above.
    fn create_allocation(
        &self,
        id: &ResultId,
        pending: &str,
        claim: &str,
        record: Vec<u8>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        async move {
            self.put_create(pending, record.clone()).await?;
            self.prepare_sink(id).await?;
            self.put_create(claim, record).await
        }
    }

    /// A Commit's storage work, in one pass where the backend can (a filesystem: one blocking task): reads the
    /// record at `pending` (at most `record_bytes` of it, as [`Backend::read_record`] does) and lists the sink
    /// of `id` (at most `max_entries` entries); hands both to `decide` (`None` if there is no record, or if
    /// there is one at `tombstone`: the result is being deleted), and
    /// writes the bytes it answers create-only at `outcome`, as [`Backend::put_create`] does. Fails only if a
    /// read fails: a refusal by `decide` and the write's own result are in the answer. The default reads and
    /// lists at once (one round trip, two requests), then completes the listing's pins
    /// ([`Backend::complete_pins`]: one more round trip where a store's listing lacks them), then writes: two
    /// round trips.
    fn seal_with<T: Send + 'static, R: Send + 'static>(
        &self,
        id: &ResultId,
        pending: &str,
        outcome: &str,
        tombstone: &str,
        bounds: SealBounds,
        decide: impl Decide<T, R>,
    ) -> impl Future<Output = Result<Result<Written<T>, R>, StorageError>> + Send {
        async move {
            let reading = self.read_record(pending, bounds.record_bytes, read_all);
            let deleting = self.read_record(tombstone, 0, |_| ());
            let (record, listing, deleting) = futures::join!(reading, self.list_sink(id, bounds.max_entries), deleting);
            let found = match (record, deleting) {
                // Being deleted: a tombstone too large to read is one all the same.
                (_, Ok(()) | Err(StorageError::Unreadable { .. })) => None,
                (_, Err(e)) if !matches!(e, StorageError::NotFound { .. }) => return Err(e),
                (Ok(record), _) => {
                    let record = record.map_err(|e| StorageError::unreadable(pending, e.to_string()))?;
                    Some((record, self.complete_pins(id, listing?).await?))
                }
                (Err(StorageError::NotFound { .. }), _) => None,
                (Err(e), _) => return Err(e),
            };
            Ok(match decide(found) {
                Ok((value, bytes)) => Ok(Written { value, result: self.put_create(outcome, bytes).await }),
                Err(refusal) => Err(refusal),
            })
        }
    }

    /// The record at `key`, handed to `decode` as a reader while it is read (never whole in memory twice), or
    /// [`StorageError::NotFound`]. At most `max_bytes` of it are read: a longer one is
    /// [`StorageError::Unreadable`], refused by its size before a byte of it is read where the store says
    /// the size first, and so is anything but a stored object of the service's own (a folder, a FIFO, a
    /// link, a device), which is never opened in a way that could wait.
    fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, StorageError>> + Send;

    /// The entries under the sink of `id`, in any order, at most `limit` of them; empty if the sink does not
    /// exist. One listing pass, no request per entry.
    fn list_sink(
        &self,
        id: &ResultId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SinkEntry>, StorageError>> + Send;

    /// `entries` of the sink of `id` (as [`Backend::list_sink`] answered them), each file pinned as a Commit
    /// records it: where the listing gave no entity tag (some S3-compatible stores list none) or no version
    /// (where the bucket keeps versions: listings carry none), a HEAD of each such file, all at once (at most
    /// [`PIN_HEADS`] in flight), which gives its size and pin as they are now; a file gone meanwhile is left
    /// out. The default answers `entries` as they are (a filesystem's listing pins every file).
    fn complete_pins(
        &self,
        _id: &ResultId,
        entries: Vec<SinkEntry>,
    ) -> impl Future<Output = Result<Vec<SinkEntry>, StorageError>> + Send {
        std::future::ready(Ok(entries))
    }

    /// Whether the file committed as `file` of `id`'s sink is still the one committed: [`StorageError::Changed`]
    /// if it is another (its pin no longer matches, or its size differs), [`StorageError::NotFound`] if it is
    /// gone. One request: a HEAD (naming the pinned version where the bucket keeps versions), or a `stat`.
    fn check_file(&self, id: &ResultId, file: &ManifestFile) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The keys under the control folder `prefix` (ending in `/`), relative to the root, in lexicographic
    /// order, as far as `range` says. The cost grows with the keys returned, not with those outside the range.
    fn list_keys(
        &self,
        prefix: &str,
        range: Listing<'_>,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// As [`Backend::list_keys`], with when each key was last modified (where the store says) and the
    /// temporary files of create-only writes too (the local backend's; an object store has none): what the
    /// sweep of leftovers reads.
    fn list_stored(
        &self,
        prefix: &str,
        range: Listing<'_>,
    ) -> impl Future<Output = Result<Vec<StoredKey>, StorageError>> + Send;

    /// Deletes the objects at `keys`; a missing one is not an error.
    fn delete_keys(&self, keys: Vec<String>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Deletes everything in the sink of `id`; a missing sink is not an error.
    fn delete_sink(&self, id: &ResultId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Deletes a result's files (everything in the sink of `id`) and the objects at `keys` (its records), at
    /// once where the backend can: an object store lists the sink and deletes its files and the keys in one
    /// batch delete (1,000 keys a request); a filesystem does it in one blocking task. Missing ones are not an
    /// error. Nothing is promised of the order within: a record that must outlive the rest is deleted after.
    /// The default deletes the sink and the keys at the same time.
    fn delete_result(&self, id: &ResultId, keys: Vec<String>) -> impl Future<Output = Result<(), StorageError>> + Send {
        async move {
            let (files, records) = futures::join!(self.delete_sink(id), self.delete_keys(keys));
            files.and(records)
        }
    }

    /// [`Backend::delete_result`] of many results (a pruning pass's), in as few requests as the store allows:
    /// an object store lists each sink ([`DELETE_LISTINGS`] at once), then deletes every file and key of them
    /// all in batch deletes (1,000 keys a request). Fails if any deletion failed; the others are done. The
    /// default deletes each result on its own, [`DELETE_LISTINGS`] at once.
    fn delete_results(
        &self,
        results: Vec<(ResultId, Vec<String>)>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        use futures::StreamExt;
        async move {
            let deletions = futures::stream::iter(results)
                .map(|(id, keys)| async move { self.delete_result(&id, keys).await })
                .buffer_unordered(DELETE_LISTINGS);
            let outcomes: Vec<Result<(), StorageError>> = deletions.collect().await;
            outcomes.into_iter().collect()
        }
    }

    /// Where a client downloads each of the committed `files` of `id`'s sink, in order; a URL stays valid for
    /// `url_ttl`, and names the file's pinned version where [`Backend::names_version`] says so. Makes no
    /// storage request: presigning is local work.
    fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
    ) -> impl Future<Output = Result<Vec<Download>, StorageError>> + Send;

    /// What the locations of [`Backend::downloads`] let a client do on its own.
    fn url_downloads(&self) -> UrlDownloads;

    /// Whether a URL of [`Backend::downloads`] for `file` downloads exactly its committed version, whatever
    /// has been written at its name since: a bucket that keeps versions, and a pin that names one.
    fn names_version(&self, _file: &ManifestFile) -> bool {
        false
    }

    /// Bytes `range` of the committed `file` of `id`'s sink, as a stream of chunks (of at most [`READ_CHUNK`]
    /// bytes: never the whole file in memory), with the file's whole size. [`StorageError::NotFound`] if there
    /// is no such file (or it is not a regular file of the sink's own: a link is not followed);
    /// [`StorageError::RangeNotSatisfiable`] if the range does not lie within it (`start <= end <= size`);
    /// [`StorageError::Changed`] if the file is pinned and is no longer that version (an object store reads
    /// with `If-Match` and checks the entity tag answered, as some stores ignore `If-Match`; a filesystem
    /// checks the open file). A pinned file on a filesystem is checked again after every chunk read: a change
    /// during the read ends the stream with [`StorageError::Changed`] before the changed chunk.
    fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> impl Future<Output = Result<FileRead, StorageError>> + Send;
}

/// The check of a Commit's storage pass ([`Backend::seal_with`]): given the allocation record and the sink's
/// entries (`None` if there is no record), the value and bytes to write, or why nothing is written.
pub trait Decide<T, R>: FnOnce(Option<(Vec<u8>, Vec<SinkEntry>)>) -> Result<(T, Vec<u8>), R> + Send + 'static {}

impl<T, R, F> Decide<T, R> for F where
    F: FnOnce(Option<(Vec<u8>, Vec<SinkEntry>)>) -> Result<(T, Vec<u8>), R> + Send + 'static
{
}

/// How much of storage a Commit's pass ([`Backend::seal_with`]) reads at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealBounds {
    /// The most bytes of the allocation record read.
    pub record_bytes: u64,
    /// The most entries of the sink listed.
    pub max_entries: usize,
}

/// Reads all of `reader` (which a record read bounds).
pub fn read_all(reader: &mut dyn io::Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A reader that fails once more than its bound has been read from it: what every record read hands its
/// decoder, so that a record that grows while it is read is refused too.
pub(crate) struct Bounded<R> {
    inner: R,
    left: u64,
    bound: u64,
}

impl<R> Bounded<R> {
    pub(crate) fn new(inner: R, bound: u64) -> Self {
        Self { inner, left: bound, bound }
    }
}

impl<R: io::Read> io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than is left: a record that ends at its bound reads to its end, a longer one fails.
        let most = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX).min(buf.len());
        let read = self.inner.read(&mut buf[..most])?;
        match self.left.checked_sub(read as u64) {
            Some(left) => {
                self.left = left;
                Ok(read)
            }
            None => Err(io::Error::other(format!("it is larger than {} bytes", self.bound))),
        }
    }
}

/// What [`Backend::seal_with`] wrote: the value its decision answered, and how the create-only write went.
#[derive(Debug)]
pub struct Written<T> {
    pub value: T,
    pub result: Result<(), StorageError>,
}

/// The most folders one below another that a walk of a sink enters: deeper, no result file may lie (a
/// listing reports such a folder as [`EntryKind::TooDeep`]).
pub const MAX_SINK_DEPTH: usize = 64;

/// The most bytes one chunk of [`Backend::read_range`] holds.
pub const READ_CHUNK: usize = 128 * 1024;

/// A byte range of a file being read.
pub struct FileRead {
    /// The whole file's size, as the store has it now.
    pub size: u64,
    /// The bytes asked for, in order; a chunk can fail (a store that stopped answering).
    pub chunks: Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>,
}

impl std::fmt::Debug for FileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRead").field("size", &self.size).finish_non_exhaustive()
    }
}

/// `range` if it lies within a file of `size` bytes (`start <= end <= size`).
pub(crate) fn check_range(key: &str, range: &Range<u64>, size: u64) -> Result<(), StorageError> {
    match range.start <= range.end && range.end <= size {
        true => Ok(()),
        false => {
            Err(StorageError::RangeNotSatisfiable { key: key.to_owned(), start: range.start, end: range.end, size })
        }
    }
}
