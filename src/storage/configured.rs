//! The storage the configuration names, as the service uses it: one backend, each of its failures counted in
//! the service's metrics.

use std::{io, ops::Range, sync::Arc, time::Duration};

use super::{
    Backend, BlockingClasses, Decide, Download, Faults, FileRead, Listing, LocalStorage, ObjectStorage, SealBounds,
    Sink, SinkEntry, StorageError, StoredKey, Unreliable, UrlDownloads, Written, objects,
};
use crate::{
    config::{BackendConfig, Config},
    metrics::Metrics,
    model::{ManifestFile, ResultId},
};

/// The configured backend, with the metrics its failures are counted in.
#[derive(Debug)]
pub struct Storage {
    backend: Backends,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
enum Backends {
    Configured(Configured),
    /// The configured one, failing as told (see [`Storage::unreliable`]).
    Unreliable(Unreliable<Configured>),
}

/// The backend the configuration names.
#[derive(Debug)]
enum Configured {
    Local(LocalStorage),
    Objects(Box<ObjectStorage>),
}

/// Calls `$call` on whichever backend `$backends` is.
macro_rules! dispatch {
    ($backends:expr, $backend:ident => $call:expr) => {
        match $backends {
            Backends::Configured(Configured::Local($backend)) => $call,
            Backends::Configured(Configured::Objects($backend)) => $call,
            Backends::Unreliable($backend) => $call,
        }
    };
}

/// Calls `$call` on whichever configured backend `$configured` is.
macro_rules! configured {
    ($configured:expr, $backend:ident => $call:expr) => {
        match $configured {
            Configured::Local($backend) => $call,
            Configured::Objects($backend) => $call,
        }
    };
}

impl Storage {
    /// Opens the backend the configuration names: a local root is created if missing; an object store is
    /// checked for create-only writes. Its failures are counted in `metrics`.
    pub async fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Self, StorageError> {
        let timeout = config.service.storage.timeout;
        let backend = match &config.backend {
            BackendConfig::Local(local) => Configured::Local(
                LocalStorage::open(&local.path)
                    .await?
                    .with_timeout(timeout)
                    .with_blocking_limit(config.service.blocking_limit)
                    .with_sinks(config.service.sinks)?,
            ),
            BackendConfig::S3(s3) => Configured::Objects(Box::new(objects::s3::open(s3, &config.service).await?)),
            BackendConfig::Gcs(gcs) => Configured::Objects(Box::new(objects::gcs::open(gcs, &config.service).await?)),
            BackendConfig::Azure(azure) => {
                Configured::Objects(Box::new(objects::azure::open(azure, &config.service).await?))
            }
        };
        Ok(Self { backend: Backends::Configured(backend), metrics })
    }

    /// This storage, with the operations `faults` names failing as it says (for tests of failure handling).
    pub fn unreliable(self, faults: Arc<Faults>) -> Self {
        let configured = match self.backend {
            Backends::Configured(configured) => configured,
            Backends::Unreliable(unreliable) => unreliable.into_inner(),
        };
        Self { backend: Backends::Unreliable(Unreliable::new(configured, faults)), metrics: self.metrics }
    }

    /// The classes of blocking work of a local backend and their permits (`None` for an object store, which
    /// does no blocking work): for tests that make one class hang.
    pub fn blocking_classes(&self) -> Option<Arc<BlockingClasses>> {
        match self.backend.configured() {
            Configured::Local(local) => Some(local.blocking_classes().clone()),
            Configured::Objects(_) => None,
        }
    }

    /// The metrics its failures are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A short description of where the results are, for the start-up log line (no credential).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// How many storage requests the backend has made: HTTP requests (retries included) for an object
    /// store, filesystem operations for a local path.
    pub fn requests(&self) -> u64 {
        self.backend.requests()
    }

    /// `result`, its failure counted.
    fn counted<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Some(kind) = result.as_ref().err().and_then(StorageError::failure_kind) {
            self.metrics.storage_error(kind);
        }
        result
    }
}

impl Backends {
    fn configured(&self) -> &Configured {
        match self {
            Self::Configured(configured) => configured,
            Self::Unreliable(unreliable) => unreliable.inner(),
        }
    }

    fn describe(&self) -> String {
        match self.configured() {
            Configured::Local(local) => format!("local path {}", local.root().display()),
            Configured::Objects(objects) => objects.location().to_string(),
        }
    }

    fn requests(&self) -> u64 {
        configured!(self.configured(), backend => backend.requests())
    }
}

impl Backend for Configured {
    fn sink(&self, id: &ResultId) -> Sink {
        configured!(self, backend => backend.sink(id))
    }

    async fn worker_sink(&self, id: &ResultId, valid_for: Duration) -> Result<Sink, StorageError> {
        configured!(self, backend => backend.worker_sink(id, valid_for).await)
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        configured!(self, backend => backend.prepare_sink(id).await)
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        configured!(self, backend => backend.put_create(key, bytes).await)
    }

    async fn create_allocation(
        &self,
        id: &ResultId,
        pending: &str,
        claim: &str,
        record: Vec<u8>,
    ) -> Result<(), StorageError> {
        configured!(self, backend => backend.create_allocation(id, pending, claim, record).await)
    }

    async fn seal_with<T: Send + 'static, R: Send + 'static>(
        &self,
        id: &ResultId,
        pending: &str,
        outcome: &str,
        tombstone: &str,
        bounds: SealBounds,
        decide: impl Decide<T, R>,
    ) -> Result<Result<Written<T>, R>, StorageError> {
        configured!(self, backend => backend.seal_with(id, pending, outcome, tombstone, bounds, decide).await)
    }

    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        configured!(self, backend => backend.read_record(key, max_bytes, decode).await)
    }

    async fn list_sink(&self, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
        configured!(self, backend => backend.list_sink(id, limit).await)
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        configured!(self, backend => backend.list_keys(prefix, range).await)
    }

    async fn list_stored(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<StoredKey>, StorageError> {
        configured!(self, backend => backend.list_stored(prefix, range).await)
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        configured!(self, backend => backend.delete_keys(keys).await)
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        configured!(self, backend => backend.delete_sink(id).await)
    }

    async fn delete_result(&self, id: &ResultId, keys: Vec<String>) -> Result<(), StorageError> {
        configured!(self, backend => backend.delete_result(id, keys).await)
    }

    async fn delete_results(&self, results: Vec<(ResultId, Vec<String>)>) -> Result<(), StorageError> {
        configured!(self, backend => backend.delete_results(results).await)
    }

    async fn complete_pins(&self, id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<SinkEntry>, StorageError> {
        configured!(self, backend => backend.complete_pins(id, entries).await)
    }

    async fn check_file(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        configured!(self, backend => backend.check_file(id, file).await)
    }

    async fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        configured!(self, backend => backend.downloads(id, files, url_ttl).await)
    }

    fn url_downloads(&self) -> UrlDownloads {
        configured!(self, backend => backend.url_downloads())
    }

    fn names_version(&self, file: &ManifestFile) -> bool {
        configured!(self, backend => backend.names_version(file))
    }

    async fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        configured!(self, backend => backend.read_range(id, file, range).await)
    }
}

impl Backend for Storage {
    fn sink(&self, id: &ResultId) -> Sink {
        dispatch!(&self.backend, backend => backend.sink(id))
    }

    async fn worker_sink(&self, id: &ResultId, valid_for: Duration) -> Result<Sink, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.worker_sink(id, valid_for).await))
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.prepare_sink(id).await))
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.put_create(key, bytes).await))
    }

    async fn create_allocation(
        &self,
        id: &ResultId,
        pending: &str,
        claim: &str,
        record: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.create_allocation(id, pending, claim, record).await))
    }

    async fn seal_with<T: Send + 'static, R: Send + 'static>(
        &self,
        id: &ResultId,
        pending: &str,
        outcome: &str,
        tombstone: &str,
        bounds: SealBounds,
        decide: impl Decide<T, R>,
    ) -> Result<Result<Written<T>, R>, StorageError> {
        let sealed = dispatch!(&self.backend, backend => backend.seal_with(id, pending, outcome, tombstone, bounds, decide).await);
        let sealed = self.counted(sealed)?;
        Ok(sealed.map(|written| Written { result: self.counted(written.result), ..written }))
    }

    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.read_record(key, max_bytes, decode).await))
    }

    async fn list_sink(&self, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.list_sink(id, limit).await))
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.list_keys(prefix, range).await))
    }

    async fn list_stored(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<StoredKey>, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.list_stored(prefix, range).await))
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.delete_keys(keys).await))
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.delete_sink(id).await))
    }

    async fn delete_result(&self, id: &ResultId, keys: Vec<String>) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.delete_result(id, keys).await))
    }

    async fn delete_results(&self, results: Vec<(ResultId, Vec<String>)>) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.delete_results(results).await))
    }

    async fn complete_pins(&self, id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<SinkEntry>, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.complete_pins(id, entries).await))
    }

    async fn check_file(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.check_file(id, file).await))
    }

    async fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.downloads(id, files, url_ttl).await))
    }

    fn url_downloads(&self) -> UrlDownloads {
        dispatch!(&self.backend, backend => backend.url_downloads())
    }

    fn names_version(&self, file: &ManifestFile) -> bool {
        dispatch!(&self.backend, backend => backend.names_version(file))
    }

    async fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        self.counted(dispatch!(&self.backend, backend => backend.read_range(id, file, range).await))
    }
}
