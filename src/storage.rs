//! Where results live. [`Backend`] is the small set of operations the domain core needs from a store; each
//! backend implements it in a file of its own, and [`Storage`] picks one from the configuration.
//!
//! Keys are `/`-separated paths relative to the configured root (see `layout.rs`); a sink is the folder
//! `<root>/<result_id>/` that a worker writes into.

mod local;
mod objects;
mod presign;

use std::{collections::BTreeMap, future::Future, path::PathBuf, time::Duration};

pub use local::LocalStorage;
pub use objects::{ObjectStorage, install_tls_provider};

use crate::{
    config::{BackendConfig, Config},
    model::{RelPath, ResultId, Timestamp},
    secret::Secret,
};

/// A storage failure. None carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{key}` does not exist")]
    NotFound { key: String },
    #[error("`{key}` already exists")]
    AlreadyExists { key: String },
    #[error("{operation} {path} failed: {source}")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("storage {location} is unavailable: {message}")]
    Unavailable { location: String, message: String },
    #[error("storage {location} did not answer within {timeout:?}")]
    Timeout { location: String, timeout: Duration },
    #[error(
        "storage {location} ignores create-only writes (If-None-Match: *), so commits could not be made exactly \
         once; use a store that supports conditional writes (AWS S3, MinIO, Ceph RGW, R2, ...)"
    )]
    NoCreateOnlyWrites { location: String },
    #[error("the storage configuration is not usable: {message}")]
    Config { message: String },
}

impl StorageError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { operation, path: path.into(), source }
    }
}

/// Where a worker writes a result, as Allocate answers it.
#[derive(Clone, Debug)]
pub struct Sink {
    /// The folder, ending in `/`: an absolute local path or an object-store url.
    pub uri: String,
    /// The Polars `storage_options` a worker writes with (credentials: expose only to the worker).
    pub storage_options: BTreeMap<String, Secret>,
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
}

/// One entry found under a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkEntry {
    /// Relative to the sink, `/`-separated (lossy if the name is not UTF-8; then `kind` is `Other`).
    pub path: String,
    pub size_bytes: u64,
    pub kind: EntryKind,
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

/// Where a client downloads one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// An absolute local path or a presigned URL.
    pub url: String,
    /// When a presigned URL stops working; `None` for a path.
    pub expires_at: Option<Timestamp>,
}

/// The operations the domain core needs from a store. Every method may be called concurrently, from several
/// processes over the same storage too.
pub trait Backend: Send + Sync + 'static {
    /// The sink of result `id`: the folder `<root>/<id>/` and the options a worker writes with.
    fn sink(&self, id: &ResultId) -> Sink;

    /// Makes the sink of `id` ready for writing: creates the folder on a filesystem; nothing on an object
    /// store. Succeeds if it is ready already.
    fn prepare_sink(&self, id: &ResultId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Writes `bytes` at `key` unless something is there already, in which case it fails with
    /// [`StorageError::AlreadyExists`] and changes nothing. Of several racing writers of one key exactly one
    /// succeeds. Readers never see a partial object, and the object is durable when this returns.
    fn put_create(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The whole object at `key`, or [`StorageError::NotFound`].
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, StorageError>> + Send;

    /// Every entry under the sink of `id`, in any order; empty if the sink does not exist. One listing pass,
    /// no request per entry.
    fn list_sink(&self, id: &ResultId) -> impl Future<Output = Result<Vec<SinkEntry>, StorageError>> + Send;

    /// The keys under the control folder `prefix` (ending in `/`), relative to the root, in lexicographic
    /// order, as far as `range` says. The cost grows with the keys returned, not with those outside the range.
    fn list_keys(
        &self,
        prefix: &str,
        range: Listing<'_>,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// Deletes the objects at `keys`; a missing one is not an error.
    fn delete_keys(&self, keys: Vec<String>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Deletes everything in the sink of `id`; a missing sink is not an error.
    fn delete_sink(&self, id: &ResultId) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Where a client downloads each of the files `paths` of `id`'s sink, in order; a URL stays valid for
    /// `url_ttl`. Makes no storage request: presigning is local work.
    fn downloads(
        &self,
        id: &ResultId,
        paths: &[&RelPath],
        url_ttl: Duration,
    ) -> impl Future<Output = Result<Vec<Download>, StorageError>> + Send;
}

/// The configured backend.
#[derive(Debug)]
pub enum Storage {
    Local(LocalStorage),
    Objects(ObjectStorage),
}

/// Calls `$method` on whichever backend `$storage` is.
macro_rules! dispatch {
    ($storage:expr, $backend:ident => $call:expr) => {
        match $storage {
            Storage::Local($backend) => $call,
            Storage::Objects($backend) => $call,
        }
    };
}

impl Storage {
    /// Opens the backend the configuration names: a local root is created if missing; an object store is
    /// checked for create-only writes.
    pub async fn from_config(config: &Config) -> Result<Self, StorageError> {
        match &config.backend {
            BackendConfig::Local(local) => {
                let local = LocalStorage::open(&local.path).await?;
                Ok(Self::Local(local.with_timeout(config.service.storage.timeout)))
            }
            BackendConfig::S3(s3) => Ok(Self::Objects(ObjectStorage::open(s3, &config.service).await?)),
        }
    }

    /// A short description of where the results are, for the start-up log line (no credential).
    pub fn describe(&self) -> String {
        match self {
            Self::Local(local) => format!("local path {}", local.root().display()),
            Self::Objects(objects) => objects.location().to_owned(),
        }
    }

    /// How many storage requests the backend has made: HTTP requests (retries included) for an object
    /// store, filesystem operations for a local path.
    pub fn requests(&self) -> u64 {
        dispatch!(self, backend => backend.requests())
    }
}

impl Backend for Storage {
    fn sink(&self, id: &ResultId) -> Sink {
        dispatch!(self, backend => backend.sink(id))
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        counted(dispatch!(self, backend => backend.prepare_sink(id).await))
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        counted(dispatch!(self, backend => backend.put_create(key, bytes).await))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        counted(dispatch!(self, backend => backend.get(key).await))
    }

    async fn list_sink(&self, id: &ResultId) -> Result<Vec<SinkEntry>, StorageError> {
        counted(dispatch!(self, backend => backend.list_sink(id).await))
    }

    async fn downloads(
        &self,
        id: &ResultId,
        paths: &[&RelPath],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        counted(dispatch!(self, backend => backend.downloads(id, paths, url_ttl).await))
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        counted(dispatch!(self, backend => backend.list_keys(prefix, range).await))
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        counted(dispatch!(self, backend => backend.delete_keys(keys).await))
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        counted(dispatch!(self, backend => backend.delete_sink(id).await))
    }
}

/// `result`, its failure counted in the metrics.
fn counted<T>(result: Result<T, StorageError>) -> Result<T, StorageError> {
    if let Err(error) = &result {
        crate::metrics::metrics().storage_error(error);
    }
    result
}
