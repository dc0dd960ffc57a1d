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
//!   after that, for each name it made, in order (an Allocate's query record, then its sink, then its pending
//!   record: a crash leaves a prefix, as it did with a sync per call);
//! - a failed sync fails every call that waited for it and every write after it (see `syncs.rs`).
//!
//! An Allocate is one blocking task that writes its record once and names it twice (the query record and the
//! pending record are the same bytes: two hard links of one file).
//!
//! The service's own records (every create-only write) are private to the user it runs as: files `0600`,
//! the folders made for them `0700`. Workers and clients read and write only the sinks, which are made with
//! the usual permissions (the process's umask applies).

mod files;
mod listing;
mod syncs;

use std::{
    collections::BTreeMap,
    fs, io,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;

use self::{
    files::{Access, ensure_dir, open_in_sink, put_create, put_create_all},
    listing::{list_keys, list_tree},
    syncs::FolderSyncs,
};
use super::{
    Backend, Cause, Decide, Download, FileRead, Listing, READ_CHUNK, Sink, SinkEntry, StorageError, StorageLocation,
    Written, check_range,
};
use crate::model::{RelPath, ResultId};

/// The local backend rooted at one absolute folder.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    operations: AtomicU64,
    /// The longest one operation is waited for (`storage_timeout`).
    timeout: Duration,
    /// The folder syncs shared by concurrent writes (group commit).
    syncs: Arc<FolderSyncs>,
}

/// How long an operation is waited for unless [`LocalStorage::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalStorage {
    /// Opens (creating it if missing) the folder `root`; a relative path is taken from the working directory
    /// and kept absolute, since workers and clients are handed absolute paths.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        let root = root.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| failed("creating the results folder", &root, e))?;
            let root = std::fs::canonicalize(&root).map_err(|e| failed("resolving", &root, e))?;
            Ok(Self { root, operations: AtomicU64::new(0), timeout: DEFAULT_TIMEOUT, syncs: Arc::default() })
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

    /// Runs filesystem work on the blocking pool, waiting for it at most the timeout.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.timeout, tokio::task::spawn_blocking(work)).await {
            Ok(done) => done.unwrap_or_else(|join| Err(join_error(join))),
            Err(_) => Err(StorageError::Timeout { location: StorageLocation::Local, timeout: self.timeout }),
        }
    }

    /// The absolute root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many storage operations (put, get, list, folder creation) this backend has run.
    pub fn requests(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn sink_dir(&self, id: &ResultId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// The file at `key`, a `/`-separated path made by the service itself (see `layout.rs`).
    fn file(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl Backend for LocalStorage {
    fn sink(&self, id: &ResultId) -> Sink {
        let mut uri = self.sink_dir(id).display().to_string();
        uri.push('/');
        Sink { uri, storage_options: BTreeMap::new() }
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.count();
        let (root, dir, syncs) = (self.root.clone(), self.sink_dir(id), self.syncs.clone());
        self.blocking(move || ensure_dir(&root, &dir, Access::Shared, &syncs)).await
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.count();
        let (root, target, key, syncs) = (self.root.clone(), self.file(key), key.to_owned(), self.syncs.clone());
        self.blocking(move || put_create(&root, &target, &key, &bytes, &syncs)).await
    }

    /// One blocking task: one record file, named by both keys (hard links), the folder syncs shared with the
    /// concurrent calls.
    async fn create_allocation(
        &self,
        id: &ResultId,
        claim: &str,
        pending: &str,
        record: Vec<u8>,
    ) -> Result<(), StorageError> {
        for _ in 0..3 {
            self.count();
        }
        let (root, syncs, sink) = (self.root.clone(), self.syncs.clone(), self.sink_dir(id));
        let (claim_path, pending_path) = (self.file(claim), self.file(pending));
        let (claim, pending) = (claim.to_owned(), pending.to_owned());
        self.blocking(move || {
            let targets = [(claim_path.as_path(), claim.as_str()), (pending_path.as_path(), pending.as_str())];
            put_create_all(&root, &targets, &record, |syncs| ensure_dir(&root, &sink, Access::Shared, syncs), &syncs)
        })
        .await
    }

    /// One blocking task: the record read, the sink listed, the outcome written.
    async fn seal_with<T: Send + 'static, R: Send + 'static>(
        &self,
        id: &ResultId,
        pending: &str,
        outcome: &str,
        decide: impl Decide<T, R>,
    ) -> Result<Result<Written<T>, R>, StorageError> {
        self.count();
        let (root, syncs, sink) = (self.root.clone(), self.syncs.clone(), self.sink_dir(id));
        let (record, target, outcome) = (self.file(pending), self.file(outcome), outcome.to_owned());
        let (sealed, more_operations) = self
            .blocking(move || {
                let found = match fs::read(&record) {
                    Ok(bytes) => Some((bytes, list_tree(&sink)?)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(failed("reading", &record, e)),
                };
                let listed = u64::from(found.is_some());
                Ok(match decide(found) {
                    Ok((value, bytes)) => {
                        let result = put_create(&root, &target, &outcome, &bytes, &syncs);
                        (Ok(Written { value, result }), listed + 1)
                    }
                    Err(refusal) => (Err(refusal), listed),
                })
            })
            .await?;
        self.operations.fetch_add(more_operations, Ordering::Relaxed);
        Ok(sealed)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.count();
        let (path, key) = (self.file(key), key.to_owned());
        self.blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound { key }),
            Err(e) => Err(failed("reading", &path, e)),
        })
        .await
    }

    async fn list_sink(&self, id: &ResultId) -> Result<Vec<SinkEntry>, StorageError> {
        self.count();
        let dir = self.sink_dir(id);
        self.blocking(move || list_tree(&dir)).await
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        self.count();
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        let (after, until, limit) = (range.after.map(str::to_owned), range.until.map(str::to_owned), range.limit);
        self.blocking(move || {
            let range = Listing { after: after.as_deref(), until: until.as_deref(), limit };
            list_keys(&root, &prefix, range)
        })
        .await
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        self.count();
        let root = self.root.clone();
        self.blocking(move || {
            for key in keys {
                let file = root.join(&key);
                match fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(failed("deleting", &file, e)),
                }
                // Drop the folder if that emptied it (records of one result, an hour of the expiry index).
                if let Some(parent) =
                    file.parent().filter(|parent| parent.strip_prefix(&root).is_ok_and(|p| p.components().count() > 2))
                {
                    let _ = fs::remove_dir(parent);
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.count();
        let dir = self.sink_dir(id);
        self.blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed("deleting", &dir, e)),
        })
        .await
    }

    async fn downloads(
        &self,
        id: &ResultId,
        paths: &[&RelPath],
        _url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        let sink = self.sink_dir(id);
        Ok(paths
            .iter()
            .map(|path| Download { url: sink.join(path.as_str()).display().to_string(), expires_at: None })
            .collect())
    }

    fn url_downloads(&self) -> super::UrlDownloads {
        super::UrlDownloads::LocalPaths
    }

    async fn read_range(&self, id: &ResultId, path: &RelPath, range: Range<u64>) -> Result<FileRead, StorageError> {
        self.count();
        let (sink, file, key) = (self.sink_dir(id), self.sink_dir(id).join(path.as_str()), format!("{id}/{path}"));
        let (opened, size) = {
            let (file, key) = (file.clone(), key.clone());
            self.blocking(move || open_in_sink(&sink, &file, &key)).await?
        };
        check_range(&key, &range, size)?;
        Ok(FileRead { size, chunks: Box::pin(read_chunks(opened, file, range)) })
    }
}

/// The bytes `range` of the open `file` (at `path`), [`READ_CHUNK`] at a time, read by one blocking task
/// (not a hand-off per chunk) a chunk ahead of the consumer. A file that ends before the range does (cut short
/// since it was opened) fails the read. The task ends when the range is read or the stream is dropped.
fn read_chunks(
    file: fs::File,
    path: PathBuf,
    range: Range<u64>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, StorageError>> + Send {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut offset = range.start;
        while offset < range.end {
            let want = usize::try_from(range.end - offset).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            let mut chunk = BytesMut::zeroed(want);
            let read = match file.read_at(&mut chunk, offset) {
                Ok(0) => {
                    let cut =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than when it was opened");
                    Err(failed("reading", &path, cut))
                }
                Ok(read) => Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(failed("reading", &path, error)),
            };
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
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
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
    use super::*;
    use crate::storage::EntryKind;

    #[tokio::test]
    async fn put_create_has_one_winner_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        store.put_create("a/b/record.json", b"first".to_vec()).await.unwrap();
        let second = store.put_create("a/b/record.json", b"second".to_vec()).await;
        assert!(matches!(second, Err(StorageError::AlreadyExists { .. })), "{second:?}");
        assert_eq!(store.get("a/b/record.json").await.unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["record.json"]);
    }

    #[tokio::test]
    async fn records_are_private_and_sinks_are_not() {
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
        fs::create_dir(dir.path().join("plain")).unwrap();
        assert_eq!(mode(&dir.path().join(id.as_str())), mode(&dir.path().join("plain")), "a sink follows the umask");
    }

    #[tokio::test]
    async fn get_of_a_missing_key_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).await.unwrap();
        assert!(matches!(store.get("nope").await, Err(StorageError::NotFound { .. })));
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
        let mut entries = store.list_sink(&id).await.unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, "link");
        assert_eq!(entries[0].kind, EntryKind::Symlink);
        assert_eq!(
            entries[1],
            SinkEntry { path: "year=2024/part-0.parquet".into(), size_bytes: 5, kind: EntryKind::File }
        );
    }
}
