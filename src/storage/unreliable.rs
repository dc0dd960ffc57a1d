//! A backend that fails as it is told: [`Unreliable`] wraps any [`Backend`] and makes the operations that
//! [`Faults`] names fail (unavailable, timed out) or stall, a given number of times, before they pass again.
//! Tests use it to show how the service answers a failing store, and that it recovers with nothing left
//! half-done.

use std::{
    collections::HashMap,
    io,
    ops::Range,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Backend, Cause, Download, FileRead, Listing, Sink, SinkEntry, StorageError, StorageLocation, StoredKey};
use crate::model::{ManifestFile, ResultId};

/// A [`Backend`] operation, as faults name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    PrepareSink,
    PutCreate,
    Get,
    ListSink,
    ListKeys,
    DeleteKeys,
    DeleteSink,
    Downloads,
    ReadRange,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 9] = [
        Self::PrepareSink,
        Self::PutCreate,
        Self::Get,
        Self::ListSink,
        Self::ListKeys,
        Self::DeleteKeys,
        Self::DeleteSink,
        Self::Downloads,
        Self::ReadRange,
    ];
}

/// How an operation fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// At once, as a store that cannot be reached.
    Unavailable,
    /// At once, as a store that did not answer in time.
    Timeout,
    /// After this long, then as the backend answers (with a storage timeout shorter than this, the call
    /// times out meanwhile).
    Stall(Duration),
}

/// The faults planned, by operation: each operation fails as planned for its next calls, then passes.
#[derive(Debug, Default)]
pub struct Faults {
    planned: Mutex<HashMap<Operation, Planned>>,
    injected: Mutex<usize>,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes the next `times` calls of `operation` fail with `fault`.
    pub fn fail(&self, operation: Operation, fault: Fault, times: usize) {
        self.fail_after(operation, 0, fault, times);
    }

    /// Lets the next `passes` calls of `operation` pass, then makes `times` fail with `fault`.
    pub fn fail_after(&self, operation: Operation, passes: usize, fault: Fault, times: usize) {
        match times {
            0 => self.lock().remove(&operation),
            _ => self.lock().insert(operation, Planned { fault, passes, times }),
        };
    }

    /// Lets every operation pass again.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many calls have failed as planned so far.
    pub fn injected(&self) -> usize {
        *self.injected.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fault for this call of `operation`, if one is planned (using it up).
    fn take(&self, operation: Operation) -> Option<Fault> {
        let mut planned = self.lock();
        let plan = planned.get_mut(&operation)?;
        if plan.passes > 0 {
            plan.passes -= 1;
            return None;
        }
        let fault = plan.fault;
        plan.times -= 1;
        if plan.times == 0 {
            planned.remove(&operation);
        }
        *self.injected.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
        Some(fault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Operation, Planned>> {
        self.planned.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The faults planned for one operation: after `passes` calls that pass, `times` that fail with `fault`.
#[derive(Debug)]
struct Planned {
    fault: Fault,
    passes: usize,
    times: usize,
}

/// `inner`, failing as `faults` says.
#[derive(Debug)]
pub struct Unreliable<B> {
    inner: B,
    faults: Arc<Faults>,
}

impl<B> Unreliable<B> {
    pub fn new(inner: B, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The backend, reliable again.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Before `operation`: fails (or stalls) as planned.
    async fn before(&self, operation: Operation) -> Result<(), StorageError> {
        let location = || StorageLocation::Remote("an unreliable test store".into());
        match self.faults.take(operation) {
            None => Ok(()),
            Some(Fault::Unavailable) => Err(StorageError::Unavailable {
                location: location(),
                operation: "an operation made to fail",
                cause: Cause::new(format!("{operation:?} failed as planned"), Arc::new([])),
            }),
            Some(Fault::Timeout) => Err(StorageError::Timeout { location: location(), timeout: Duration::ZERO }),
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
        }
    }
}

impl<B: Backend> Backend for Unreliable<B> {
    fn sink(&self, id: &ResultId) -> Sink {
        self.inner.sink(id)
    }

    async fn worker_sink(&self, id: &ResultId, valid_for: Duration) -> Result<Sink, StorageError> {
        self.inner.worker_sink(id, valid_for).await
    }

    async fn prepare_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.before(Operation::PrepareSink).await?;
        self.inner.prepare_sink(id).await
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.before(Operation::PutCreate).await?;
        self.inner.put_create(key, bytes).await
    }

    async fn read_record<T: Send + 'static>(
        &self,
        key: &str,
        max_bytes: u64,
        decode: impl FnOnce(&mut dyn io::Read) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        self.before(Operation::Get).await?;
        self.inner.read_record(key, max_bytes, decode).await
    }

    async fn list_sink(&self, id: &ResultId, limit: usize) -> Result<Vec<SinkEntry>, StorageError> {
        self.before(Operation::ListSink).await?;
        self.inner.list_sink(id, limit).await
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        self.before(Operation::ListKeys).await?;
        self.inner.list_keys(prefix, range).await
    }

    async fn list_stored(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<StoredKey>, StorageError> {
        self.before(Operation::ListKeys).await?;
        self.inner.list_stored(prefix, range).await
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        self.before(Operation::DeleteKeys).await?;
        self.inner.delete_keys(keys).await
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        self.before(Operation::DeleteSink).await?;
        self.inner.delete_sink(id).await
    }

    async fn complete_pins(&self, id: &ResultId, entries: Vec<SinkEntry>) -> Result<Vec<SinkEntry>, StorageError> {
        self.inner.complete_pins(id, entries).await
    }

    /// Fails as a read of the file does.
    async fn check_file(&self, id: &ResultId, file: &ManifestFile) -> Result<(), StorageError> {
        self.before(Operation::ReadRange).await?;
        self.inner.check_file(id, file).await
    }

    async fn downloads(
        &self,
        id: &ResultId,
        files: &[&ManifestFile],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        self.before(Operation::Downloads).await?;
        self.inner.downloads(id, files, url_ttl).await
    }

    fn url_downloads(&self) -> super::UrlDownloads {
        self.inner.url_downloads()
    }

    fn names_version(&self, file: &ManifestFile) -> bool {
        self.inner.names_version(file)
    }

    async fn read_range(
        &self,
        id: &ResultId,
        file: &ManifestFile,
        range: Range<u64>,
    ) -> Result<FileRead, StorageError> {
        self.before(Operation::ReadRange).await?;
        self.inner.read_range(id, file, range).await
    }
}
