//! The shared-filesystem backend: a folder reachable at the same absolute path from the service, every worker
//! and the clients (NFS, CephFS, ...).
//!
//! Create-only writes go to a temporary file in the target's folder, are fsynced, then hard-linked to the
//! target name (the link fails if the name exists, so racing writers have one winner and nobody sees a partial
//! file), and the folder is fsynced so the new name survives a crash.
//!
//! The service's own records (every create-only write) are private to the user it runs as: files `0600`,
//! the folders made for them `0700`. Workers and clients read and write only the sinks, which are made with
//! the usual permissions (the process's umask applies).

use std::{
    collections::BTreeMap,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{Backend, Download, EntryKind, Listing, Sink, SinkEntry, StorageError};
use crate::model::{RESERVED_PREFIX, RelPath, ResultId};

/// The local backend rooted at one absolute folder.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    operations: AtomicU64,
    /// The longest one operation is waited for (`storage_timeout`).
    timeout: Duration,
}

/// How long an operation is waited for unless [`LocalStorage::with_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalStorage {
    /// Opens (creating it if missing) the folder `root`; a relative path is taken from the working directory
    /// and kept absolute, since workers and clients are handed absolute paths.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        let root = root.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&root).map_err(|e| StorageError::io("creating the results folder", &root, e))?;
            let root = fs::canonicalize(&root).map_err(|e| StorageError::io("resolving", &root, e))?;
            Ok(Self { root, operations: AtomicU64::new(0), timeout: DEFAULT_TIMEOUT })
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
            Err(_) => Err(StorageError::Timeout { location: "the local result storage".into(), timeout: self.timeout }),
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
        let (root, dir) = (self.root.clone(), self.sink_dir(id));
        self.blocking(move || ensure_dir(&root, &dir, Access::Shared)).await
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.count();
        let (root, target, key) = (self.root.clone(), self.file(key), key.to_owned());
        self.blocking(move || put_create(&root, &target, &key, &bytes)).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.count();
        let (path, key) = (self.file(key), key.to_owned());
        self.blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound { key }),
            Err(e) => Err(StorageError::io("reading", &path, e)),
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
                    Err(e) => return Err(StorageError::io("deleting", &file, e)),
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
            Err(e) => Err(StorageError::io("deleting", &dir, e)),
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
}

/// A blocking task that did not finish (it panicked, or the runtime is shutting down).
fn join_error(join: tokio::task::JoinError) -> StorageError {
    StorageError::io("running filesystem work", PathBuf::new(), io::Error::other(join.to_string()))
}

/// Who may use a folder the backend makes.
#[derive(Clone, Copy)]
enum Access {
    /// A sink: workers write it and clients read it (the umask decides).
    Shared,
    /// The service's records: its own user only (`0700`).
    Private,
}

/// Creates `dir` and any missing folders between `root` and it, fsyncing each new folder's parent so the new
/// names are durable.
fn ensure_dir(root: &Path, dir: &Path, access: Access) -> Result<(), StorageError> {
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
            Err(e) => return Err(StorageError::io("creating folder", new_dir, e)),
        }
        if let Some(parent) = new_dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io("syncing folder", dir, e))
}

fn put_create(root: &Path, target: &Path, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
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
        return Err(StorageError::io("writing", &temp, e));
    }
    let linked = fs::hard_link(&temp, target);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StorageError::AlreadyExists { key: key.to_owned() }),
        Err(e) => Err(StorageError::io("linking", target, e)),
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

/// The files under the folder `prefix` of `root`, as `/`-separated keys in lexicographic order, as far as
/// `range` says; folders are read in order, those wholly before `range.after` are not entered, and the walk
/// stops at the first key past `range.until` or at the limit.
fn list_keys(root: &Path, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
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
        Err(e) => return Err(StorageError::io("listing", dir, e)),
    };
    let limit = range.limit.unwrap_or(usize::MAX);
    // Only the first `limit - keys.len()` names can be listed: keep those (a bounded max-heap), whatever the
    // folder holds.
    let room = limit.saturating_sub(keys.len());
    let mut names: std::collections::BinaryHeap<(String, bool)> = std::collections::BinaryHeap::new();
    for item in listing {
        let item = item.map_err(|e| StorageError::io("listing", dir, e))?;
        let Some(name) = item.file_name().to_str().map(str::to_owned) else { continue };
        if name.starts_with(RESERVED_PREFIX) {
            continue; // a create-only write in progress
        }
        if names.len() >= room && names.peek().is_some_and(|(largest, _)| &name >= largest) {
            continue;
        }
        let is_dir = item.file_type().map_err(|e| StorageError::io("reading", item.path(), e))?.is_dir();
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
fn list_tree(dir: &Path) -> Result<Vec<SinkEntry>, StorageError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("reading", dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return Ok(vec![SinkEntry { path: String::new(), size_bytes: 0, kind: EntryKind::Symlink }]);
        }
        Ok(_) => {}
    }
    let mut entries = Vec::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        let listing = fs::read_dir(&folder).map_err(|e| StorageError::io("listing", &folder, e))?;
        for item in listing {
            let item = item.map_err(|e| StorageError::io("listing", &folder, e))?;
            let name = item.file_name();
            let (name, utf8) = match name.to_str() {
                Some(name) => (name.to_owned(), true),
                None => (name.to_string_lossy().into_owned(), false),
            };
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let meta = fs::symlink_metadata(item.path()).map_err(|e| StorageError::io("reading", item.path(), e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
