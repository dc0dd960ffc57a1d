//! The shared-filesystem backend: a folder reachable at the same absolute path from the service, every worker
//! and the clients (NFS, CephFS, ...).
//!
//! Create-only writes go to a temporary file in the target's folder, are fsynced, then hard-linked to the
//! target name (the link fails if the name exists, so racing writers have one winner and nobody sees a partial
//! file), and the folder is fsynced so the new name survives a crash.
//!
//! Group commit: the folder syncs are shared (`syncs.rs`). A call that made an entry waits for a sync of the
//! folder that began after it made the entry, run by itself or by a concurrent call, so one `fsync` of
//! `_control/queries/` serves every Allocate that linked its record meanwhile. Why a crash still loses no
//! acknowledged call and shows no half-written record:
//! - a record's bytes are synced (its own `fdatasync`) before any name points at them, so a name that survives
//!   a crash names the whole record;
//! - a name is durable once a sync of its folder that began after the link has ended, and a call answers only
//!   after that, for each name it made, in order (an Allocate's pending record, then its sink, then its query
//!   record: a crash leaves a prefix, as it did with a sync per call);
//! - a failed sync fails every call that waited for it and every write after it (see `syncs.rs`).
//!
//! An Allocate writes its record once and names it twice (the pending record and the query record are the
//! same bytes: two hard links of one file). Allocates are written in batches (`batches.rs`): a few writer
//! threads each take the calls queued meanwhile and do each step for the whole batch before the next, so one
//! thread wakes for many calls and each step's folder syncs are shared by the batch.
//!
//! Nothing is opened by a path of more than one component (`folders.rs`): every file and folder is reached
//! from the root, held open, one `openat` at a time, never following a link and never waiting on a FIFO, and
//! what was opened is checked on its descriptor before it is used. Every piece of work runs on a blocking
//! thread holding a permit of its class (`blocking.rs`), so that work stuck in the kernel starves no other
//! class.
//!
//! The service's own records (every create-only write) are private to the user it runs as: files `0600`,
//! the folders made for them `0700`. Workers and clients reach only the sinks, made with the group and mode
//! the configuration says (`local.sink_group`, `local.sink_mode`: default the service's group and `2770`), and,
//! with `local.client_group`, handed at Commit to the service's user and the clients' group (`handover.rs`).

mod batches;
mod blocking;
mod files;
mod folders;
mod handover;
mod listing;
pub mod permissions;
mod reads;
mod syncs;
mod tree;

use std::{
    collections::BTreeMap,
    io,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use blocking::{BlockingClass, BlockingClasses, Held};

use self::{
    batches::{Allocation, Batches},
    files::{make_sink, open_in_sink, put_create, read_record, split, sync},
    folders::{Folder, Unreachable},
    listing::{Detail, list_keys},
    syncs::FolderSyncs,
};
use super::{
    Backend, Cause, Decide, Download, FileRead, Listing, SealBounds, Sink, SinkEntry, StorageError, StorageLocation,
    StoredKey, Written, check_range, read_all,
};
use crate::{
    config::SinkConfig,
    model::{ManifestFile, ResultId},
    telemetry::traces,
};

/// The local backend rooted at one absolute folder.
#[derive(Debug)]
pub struct LocalStorage {
    /// The root, open: every file is reached from it one component at a time.
    root: Arc<Folder>,
    operations: AtomicU64,
    /// The longest one operation is waited for (`storage_timeout`).
    timeout: Duration,
    /// The folder syncs shared by concurrent writes (group commit).
    syncs: Arc<FolderSyncs>,
    /// The permits of each class of blocking work (`blocking_limit` each).
    classes: Arc<BlockingClasses>,
    /// The writers of allocations, in batches.
    batches: Arc<Batches>,
    /// How sinks are made: their group and mode; and the group committed ones are handed to.
    sinks: SinkConfig,
    /// The user this service runs as: the owner of handed-over sinks.
    owner: Option<u32>,
}

/// How long an operation is waited for unless [`LocalStorage::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most keys one blocking task of [`LocalStorage::delete_keys`] removes.
const DELETE_CHUNK: usize = 64;
/// How many blocking threads each class may hold unless [`LocalStorage::with_blocking_limit`] says otherwise.
pub const DEFAULT_BLOCKING_LIMIT: usize = 256;

impl LocalStorage {
    /// Opens (creating it if missing) the folder `root`; a relative path is taken from the working directory
    /// and kept absolute, since workers and clients are handed absolute paths.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        let root = root.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| failed("creating the results folder", &root, e))?;
            let root = std::fs::canonicalize(&root).map_err(|e| failed("resolving", &root, e))?;
            let folder = Folder::open_root(&root).map_err(|e| failed("opening the results folder", &root, e))?;
            let (root, syncs) = (Arc::new(folder), Arc::<FolderSyncs>::default());
            let classes = BlockingClasses::new(DEFAULT_BLOCKING_LIMIT);
            let sinks = SinkConfig::default();
            let batches = Batches::new(root.clone(), syncs.clone(), classes.clone(), sinks);
            let operations = AtomicU64::new(0);
            let owner = permissions::effective_uid();
            Ok(Self { root, operations, timeout: DEFAULT_TIMEOUT, syncs, classes, batches, sinks, owner })
        });
        opened.await.unwrap_or_else(|join| Err(join_error(join)))
    }

    /// Waits at most `timeout` for each operation: past it, the call fails with [`StorageError::Timeout`]
    /// (the operation itself, on a blocking thread, may still complete: a filesystem call cannot be
    /// interrupted).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Holds at most `limit` blocking threads of each class of work at once (`blocking_limit`).
    pub fn with_blocking_limit(mut self, limit: usize) -> Self {
        self.classes = BlockingClasses::new(limit);
        self.batches = Batches::new(self.root.clone(), self.syncs.clone(), self.classes.clone(), self.sinks);
        self
    }

    /// Makes sinks with the group and mode `sinks` says (`local.sink_group`, `local.sink_mode`), and hands
    /// committed ones to `local.client_group`: refused ([`StorageError::Config`]) if this process cannot give
    /// files away (it needs `CAP_CHOWN`).
    pub fn with_sinks(mut self, sinks: SinkConfig) -> Result<Self, StorageError> {
        if sinks.client_group.is_some() && (self.owner.is_none() || !permissions::can_chown()) {
            return Err(StorageError::Config {
                message: "local.client_group needs the service to give committed files to that group, which takes \
                          the CAP_CHOWN capability: run it as root (in a container), grant it (`setcap \
                          cap_chown+ep` on the binary, or Kubernetes' securityContext.capabilities.add: [CHOWN]), \
                          or remove local.client_group"
                    .into(),
            });
        }
        self.sinks = sinks;
        self.batches = Batches::new(self.root.clone(), self.syncs.clone(), self.classes.clone(), sinks);
        Ok(self)
    }

    /// The classes of blocking work and their permits.
    pub fn blocking_classes(&self) -> &Arc<BlockingClasses> {
        &self.classes
    }

    /// Runs filesystem work of `class` on the blocking pool, waiting for a permit and the work at most the
    /// timeout.
    async fn blocking<T: Send + 'static>(
        &self,
        class: BlockingClass,
        work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        // A blocking task is this backend's round trip: the call waits for it, whatever it does inside. Work
        // issued together (joined futures) is marked before any of it is handed off: a hand-off can start a
        // thread, and finish the work, within the poll that makes it.
        let _request = super::trace::request();
        let span = traces::span!(
            traces::in_exported(),
            debug_span,
            "storage request",
            otel.kind = "client",
            storage.system = "filesystem",
            storage.class = ?class,
            otel.status_code = tracing::field::Empty,
        );
        let done = tracing::Instrument::instrument(
            async {
                tokio::task::yield_now().await;
                self.classes.run(class, self.timeout, work).await
            },
            span.clone(),
        )
        .await;
        if done.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        done
    }

    /// The absolute root folder.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// How many storage operations (put, get, list, folder creation) this backend has run.
    pub fn requests(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn sink_dir(&self, id: &ResultId) -> PathBuf {
        self.root.path().join(id.as_str())
    }

    /// What the blocking work of one call needs: the root and the shared syncs.
    fn handles(&self) -> (Arc<Folder>, Arc<FolderSyncs>) {
        (self.root.clone(), self.syncs.clone())
    }
}

/// The sink of `id` below `root`: `Ok(None)` if there is none; something else where it should be is
/// [`StorageError::NotFound`] for `key`.
fn open_sink(root: &Folder, id: &ResultId, key: &str) -> Result<Option<Folder>, StorageError> {
    match root.folder(id.as_str()) {
        Ok(sink) => Ok(Some(sink)),
        Err(Unreachable::Missing) => Ok(None),
        Err(Unreachable::Other(_)) => Err(StorageError::NotFound { key: key.to_owned() }),
        Err(Unreachable::Failed(error)) => Err(failed("opening", root.path().join(id.as_str()), error)),
    }
}

/// The entries of the sink of `id` below `root`, at most `limit`: none if there is no sink; one entry at the
/// empty path if the sink's name holds something that is not a folder.
fn walk_sink(root: &Folder, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
    let sink = match root.folder(id.as_str()) {
        Ok(sink) => sink,
        Err(Unreachable::Missing) => return Ok(Vec::new()),
        Err(Unreachable::Other(what)) => {
            let kind = if what == "a symbolic link" { super::EntryKind::Symlink } else { super::EntryKind::Other };
            return Ok(vec![SinkEntry { path: String::new(), size_bytes: 0, kind, pin: None }]);
        }
        Err(Unreachable::Failed(error)) => return Err(failed("listing", root.path().join(id.as_str()), error)),
    };
    tree::walk(&sink, limit).map_err(|e| failed("listing", sink.path(), e))
}

/// Hands the sink of `id` below `root` over to `user` and `group` (see `handover.rs`): the sink and what was
/// changed, or `None` if there is no sink.
fn hand_over_sink(
    root: &Folder,
    id: &ResultId,
    user: u32,
    group: u32,
    limit: usize,
) -> Result<Option<(Folder, Vec<handover::Owned>)>, StorageError> {
    let path = root.path().join(id.as_str());
    let sink = match root.folder(id.as_str()) {
        Ok(sink) => sink,
        Err(Unreachable::Missing | Unreachable::Other(_)) => return Ok(None),
        Err(Unreachable::Failed(error)) => return Err(failed("handing over", &path, error)),
    };
    let owned = handover::hand_over(&sink, user, group, limit).map_err(|e| failed("handing over", &path, e))?;
    Ok(Some((sink, owned)))
}

/// Removes the sink of `id` below `root`, and all in it; a missing one is not an error.
fn remove_sink(root: &Folder, id: &ResultId) -> Result<(), StorageError> {
    tree::remove(root, id.as_str()).map_err(|e| failed("deleting", root.path().join(id.as_str()), e))
}

/// Removes the records at `keys` below `root` (a folder planted where a key was, with all in it), and the
/// folder each was in if that emptied it; missing ones are not an error.
fn remove_keys(root: &Folder, keys: Vec<String>) -> Result<(), StorageError> {
    for key in keys {
        let (dir, name) = split(&key);
        let folder = match root.descend(dir) {
            Ok(folder) => folder,
            Err(Unreachable::Missing | Unreachable::Other(_)) => continue,
            Err(Unreachable::Failed(e)) => return Err(failed("deleting", root.path().join(&key), e)),
        };
        match folder.remove_file(name) {
            Ok(true) => {}
            Ok(false) => continue,
            // A folder where a key was (planted, or left by another release): all of it goes.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ISDIR.raw_os_error()) => {
                tree::remove(&folder, name).map_err(|e| failed("deleting", root.path().join(&key), e))?;
            }
            Err(e) => return Err(failed("deleting", root.path().join(&key), e)),
        }
        // Drop the folder if that emptied it (records of one result, an hour of the expiry index).
        if let Some((above, folder_name)) = dir.rsplit_once('/').filter(|_| dir.split('/').count() > 2)
            && let Ok(above) = root.descend(above)
        {
            let _ = above.remove_empty_folder(folder_name);
        }
    }
    Ok(())
}

impl Backend for LocalStorage {
    fn sink(&self, id: &ResultId) -> Sink {
        let mut uri = self.sink_dir(id).display().to_string();
        uri.push('/');
        Sink { uri, storage_options: BTreeMap::new(), credentials_expire_at: None }
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.count();
        let ((root, syncs), id) = (self.handles(), id.clone());
        let sinks = self.sinks;
        self.blocking(BlockingClass::Writes, move || {
            let path = root.path().join(id.as_str());
            // Something there already must be a folder (maybe another call's, not durable yet: the root's sync
            // covers it too).
            if !make_sink(&root, id.as_str(), sinks).map_err(|e| failed("creating folder", &path, e))? {
                root.folder(id.as_str()).map_err(|e| files::unreachable("creating folder", &path, e))?;
            }
            sync(&root, &syncs)
        })
        .await
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.count();
        let ((root, syncs), key) = (self.handles(), key.to_owned());
        self.blocking(BlockingClass::Writes, move || put_create(&root, &key, &bytes, &syncs)).await
    }

    /// Written in a batch (`batches.rs`): one record file, named by both keys (hard links), the sink made
    /// between them, each step's folder syncs shared by the batch and with the concurrent calls.
    async fn create_allocation(
        &self,
        id: &ResultId,
        pending: &str,
        claim: &str,
        record: Vec<u8>,
    ) -> Result<(), StorageError> {
        for _ in 0..3 {
            self.count();
        }
        let work = Allocation { sink: id.clone(), first: pending.to_owned(), second: claim.to_owned(), record };
        // One round trip, as `blocking` counts it.
        let _request = super::trace::request();
        tokio::task::yield_now().await;
        self.batches.write(work, self.timeout).await
    }

    /// One blocking task: the tombstone looked for, the record read, the sink listed, the outcome written.
    async fn seal_with<T: Send + 'static, R: Send + 'static>(
        &self,
        id: &ResultId,
        pending: &str,
        outcome: &str,
        tombstone: &str,
        bounds: SealBounds,
        decide: impl Decide<T, R>,
    ) -> Result<Result<Written<T>, R>, StorageError> {
        self.count();
        let ((root, syncs), id) = (self.handles(), id.clone());
        let (pending, outcome, tombstone) = (pending.to_owned(), outcome.to_owned(), tombstone.to_owned());
        let handing = self.sinks.client_group.zip(self.owner);
        let (sealed, more_operations) = self
            .blocking(BlockingClass::Writes, move || {
                let mut handed = None;
                let deleting = match read_record(&root, &tombstone, 0, |_| ()) {
                    // A tombstone too large to read is one all the same.
                    Ok(()) | Err(StorageError::Unreadable { .. }) => true,
                    Err(StorageError::NotFound { .. }) => false,
                    Err(e) => return Err(e),
                };
                let record = match deleting {
                    true => Err(StorageError::NotFound { key: pending.clone() }),
                    false => read_record(&root, &pending, bounds.record_bytes, read_all),
                };
                let found = match record {
                    Ok(bytes) => {
                        let bytes = bytes.map_err(|e| StorageError::unreadable(&pending, e.to_string()))?;
                        // Handed over before the walk takes the pins: a change of owner moves the change time.
                        if let Some((group, user)) = handing {
                            handed = hand_over_sink(&root, &id, user, group, bounds.max_entries)?;
                        }
                        Some((bytes, walk_sink(&root, &id, bounds.max_entries)?))
                    }
                    Err(StorageError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                let listed = u64::from(found.is_some());
                Ok(match decide(found) {
                    Ok((value, bytes)) => {
                        let result = put_create(&root, &outcome, &bytes, &syncs);
                        (Ok(Written { value, result }), listed + 1)
                    }
                    Err(refusal) => {
                        // Refused: the worker gets its files back, to mend them and commit again.
                        if let Some((sink, owned)) = handed
                            && let Err(error) = handover::give_back(&sink, owned)
                        {
                            let error = failed("giving a sink back", sink.path(), error);
                            tracing::warn!("{}", crate::telemetry::Escaped(&error.detail()));
                        }
                        (Err(refusal), listed)
                    }
                })
            })
            .await?;
        self.operations.fetch_add(more_operations, Ordering::Relaxed);
        Ok(sealed)
    }

    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        self.count();
        let (root, key) = (self.root.clone(), key.to_owned());
        self.blocking(BlockingClass::Records, move || read_record(&root, &key, max_bytes, decode)).await
    }

    async fn list_sink(&self, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
        self.count();
        let (root, id) = (self.root.clone(), id.clone());
        self.blocking(BlockingClass::Sinks, move || walk_sink(&root, &id, limit)).await
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        let detail = Detail { temporaries: false, modified: false };
        let keys = self.list_detailed(prefix, range, detail).await?;
        Ok(keys.into_iter().map(|key| key.key).collect())
    }

    async fn list_stored(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<StoredKey>, StorageError> {
        self.list_detailed(prefix, range, Detail { temporaries: true, modified: true }).await
    }

    /// Many keys (a pruning pass's) go [`DELETE_CHUNK`] to a blocking task, the tasks at once: a removal
    /// waits on the disk (a filesystem mounted with `discard` trims each freed block before the unlink
    /// returns), so one thread removing thousands in turn would hold the pass for seconds.
    async fn delete_keys(&self, mut keys: Vec<String>) -> Result<(), StorageError> {
        self.count();
        let mut chunks = Vec::new();
        while keys.len() > DELETE_CHUNK {
            chunks.push(keys.split_off(keys.len() - DELETE_CHUNK));
        }
        chunks.push(keys);
        let removals = chunks.into_iter().map(|chunk| {
            let root = self.root.clone();
            self.blocking(BlockingClass::Records, move || remove_keys(&root, chunk))
        });
        futures::future::try_join_all(removals).await.map(drop)
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.count();
        let (root, id) = (self.root.clone(), id.clone());
        self.blocking(BlockingClass::Sinks, move || remove_sink(&root, &id)).await
    }

    /// One blocking task: the sink's tree removed, then the keys.
    async fn delete_result(&self, id: &ResultId, keys: Vec<String>) -> Result<(), StorageError> {
        self.count();
        self.count();
        let (root, id) = (self.root.clone(), id.clone());
        self.blocking(BlockingClass::Sinks, move || remove_sink(&root, &id).and_then(|()| remove_keys(&root, keys)))
            .await
    }

    /// One blocking task: the file opened as a read would open it, then its size and pin checked.
    async fn check_file(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        self.count();
        let key = format!("{id}/{}", file.path);
        let (root, id, committed, at) = (self.root.clone(), id.clone(), file.clone(), self.sink_dir(id));
        self.blocking(BlockingClass::Sinks, move || {
            let (opened, size) = match open_sink(&root, &id, &key)? {
                Some(sink) => open_in_sink(&sink, committed.path.as_str(), &key)?,
                None => return Err(StorageError::NotFound { key }),
            };
            reads::check_committed(&opened, size, &committed, &key, &at.join(committed.path.as_str()))
        })
        .await
    }

    async fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        _url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        let sink = self.sink_dir(id);
        Ok(files
            .iter()
            .map(|file| Download { url: sink.join(file.path.as_str()).display().to_string(), expires_at: None })
            .collect())
    }

    fn url_downloads(&self) -> super::UrlDownloads {
        super::UrlDownloads::LocalPaths
    }

    async fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        self.count();
        let key = format!("{id}/{}", file.path);
        let at = self.sink_dir(id).join(file.path.as_str());
        let (opened, size) = {
            let (root, id, path, key, pin, at) =
                (self.root.clone(), id.clone(), file.path.clone(), key.clone(), file.pin.clone(), at.clone());
            self.blocking(BlockingClass::Sinks, move || {
                let (opened, size) = match open_sink(&root, &id, &key)? {
                    Some(sink) => open_in_sink(&sink, path.as_str(), &key)?,
                    None => return Err(StorageError::NotFound { key }),
                };
                pin.as_ref().map_or(Ok(()), |pin| reads::check_pin(&opened, pin, &key, &at))?;
                Ok((opened, size))
            })
            .await?
        };
        check_range(&key, &range, size)?;
        // The reader is a thread of its own, for as long as the download lasts: it holds a permit of the
        // sinks' class as long.
        let permit = self.classes.permit(BlockingClass::Sinks, self.timeout).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let pin = file.pin.clone();
        let read = move || reads::read_chunks(opened, (at, key), range, pin, sender);
        self.classes.spawn(BlockingClass::Sinks, permit, read);
        Ok(FileRead { size, chunks: Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver)) })
    }
}

impl LocalStorage {
    async fn list_detailed(
        &self,
        prefix: &str,
        range: Listing<'_>,
        detail: Detail,
    ) -> Result<Vec<StoredKey>, StorageError> {
        self.count();
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        let (after, until, limit) = (range.after.map(str::to_owned), range.until.map(str::to_owned), range.limit);
        self.blocking(BlockingClass::Records, move || {
            let range = Listing { after: after.as_deref(), until: until.as_deref(), limit };
            list_keys(&root, &prefix, range, detail)
        })
        .await
    }
}

/// A blocking task that did not finish (it panicked, or the runtime is shutting down).
fn join_error(join: tokio::task::JoinError) -> StorageError {
    StorageError::Unavailable {
        location: StorageLocation::Local,
        operation: "running filesystem work",
        cause: Cause::new(join.to_string(), Arc::new([])),
    }
}

/// A filesystem operation on `path` that failed with `error`.
fn failed(operation: &'static str, path: impl AsRef<Path>, error: io::Error) -> StorageError {
    StorageError::Unavailable { location: StorageLocation::Local, operation, cause: Cause::at(error, path.as_ref()) }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{model::Pin, storage::EntryKind};

    #[tokio::test]
    async fn put_create_has_one_winner_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        store.put_create("a/b/record.json", b"first".to_vec()).await.unwrap();
        let second = store.put_create("a/b/record.json", b"second".to_vec()).await;
        assert!(matches!(second, Err(StorageError::AlreadyExists { .. })), "{second:?}");
        let read = store.read_record("a/b/record.json", 1024, read_all).await.unwrap().unwrap();
        assert_eq!(read, b"first");
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["record.json"]);
    }

    #[tokio::test]
    async fn records_are_private_and_sinks_have_the_configured_group_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        store.put_create("_control/results/x/outcome.json", b"{}".to_vec()).await.unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("_control")), 0o700);
        assert_eq!(mode(&dir.path().join("_control/results/x")), 0o700);
        assert_eq!(mode(&dir.path().join("_control/results/x/outcome.json")), 0o600);
        let id = ResultId::generate().unwrap();
        store.prepare_sink(&id).await.unwrap();
        let full_mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(full_mode(&dir.path().join(id.as_str())), 0o2770, "the default, whatever the umask");
        let store = store.with_sinks(SinkConfig { mode: 0o750, ..SinkConfig::default() }).unwrap();
        let other = ResultId::generate().unwrap();
        store.prepare_sink(&other).await.unwrap();
        assert_eq!(full_mode(&dir.path().join(other.as_str())), 0o750);
        store.prepare_sink(&other).await.expect("a sink there already is ready");
        let planted = ResultId::generate().unwrap();
        fs::write(dir.path().join(planted.as_str()), b"x").unwrap();
        assert!(store.prepare_sink(&planted).await.is_err(), "a file where the sink should be is not a sink");
    }

    #[tokio::test]
    async fn get_of_a_missing_key_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        assert!(matches!(store.read_record("nope", 1024, read_all).await, Err(StorageError::NotFound { .. })));
    }

    #[tokio::test]
    async fn list_reports_nested_files_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        let id = ResultId::generate().unwrap();
        store.prepare_sink(&id).await.unwrap();
        let sink = dir.path().join(id.as_str());
        fs::create_dir(sink.join("year=2024")).unwrap();
        fs::write(sink.join("year=2024/part-0.parquet"), b"12345").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sink.join("link")).unwrap();
        let mut entries = store.list_sink(&id, usize::MAX).await.unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, "link");
        assert_eq!(entries[0].kind, EntryKind::Symlink);
        let file = sink.join("year=2024/part-0.parquet");
        let pin_of = |path: &Path| {
            use std::os::unix::fs::MetadataExt;
            let meta = fs::symlink_metadata(path).unwrap();
            let ctime_nanos = u32::try_from(meta.ctime_nsec()).unwrap();
            Pin::File { device: meta.dev(), inode: meta.ino(), ctime_seconds: meta.ctime(), ctime_nanos }
        };
        let listed = SinkEntry {
            path: "year=2024/part-0.parquet".into(),
            size_bytes: 5,
            kind: EntryKind::File,
            pin: Some(pin_of(&file)),
        };
        assert_eq!(entries[1], listed);
        // The same number of other bytes, written in place (once the clock has moved on) or as a new file put
        // in its place, is another pin.
        let listed_pin = |entries: Vec<SinkEntry>| entries.into_iter().find(|e| e.kind == EntryKind::File).unwrap().pin;
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::write(&file, b"54321").unwrap();
        let rewritten = listed_pin(store.list_sink(&id, usize::MAX).await.unwrap());
        assert_ne!(rewritten, listed.pin, "a write in place");
        assert_eq!(rewritten, Some(pin_of(&file)));
        let other = sink.join("other");
        fs::write(&other, b"abcde").unwrap();
        fs::rename(&other, &file).unwrap();
        let replaced = listed_pin(store.list_sink(&id, usize::MAX).await.unwrap());
        assert_ne!(replaced, rewritten, "a file put in its place");
    }
}
