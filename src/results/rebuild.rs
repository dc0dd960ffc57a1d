//! The result index of a store that releases before it wrote (0.1.0 and its kind): written once, by a pass
//! at start-up, before the replica's first read of what is stored (`refresh.rs`).
//!
//! The pass reads every pending record and every result's records folder and writes the index entries they
//! call for, create-only (replicas starting at once write the same entries), each with its journal entry;
//! then the marker [`layout::INDEX_COMPLETE`] says the store is indexed, and later start-ups cost one read. A
//! pass cut short is done again whole at the next start. A record that cannot be read is logged and passed
//! over (its result is not listed); the pruner still serves it as before.
//!
//! A replica of an earlier release still running beside this one after the pass (a rolling upgrade) writes
//! results the index does not name: delete the marker once the last of them has stopped, and the next
//! start-up indexes them.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt, stream};
use tracing::{info, warn};

use super::{Error, Results, state::decode};
use crate::{
    layout::{self, IndexEntry},
    model::{Allocation, Outcome, Record, ResultId, Tombstone},
    storage::{Backend, Listing, StorageError},
    telemetry::Escaped,
};

/// How many results the pass indexes at once.
const AT_ONCE: usize = 32;

/// What one pass found to index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Pending allocations indexed.
    pub allocations: usize,
    /// Records folders (sealed or being deleted) indexed.
    pub results: usize,
    /// Records passed over, unreadable.
    pub unreadable: usize,
}

/// What a result's records folder holds.
#[derive(Default)]
struct Folder {
    outcome: bool,
    tombstone: bool,
    renewals: Vec<u64>,
}

impl<B: Backend> Results<B> {
    /// Writes the index of what earlier releases stored, unless the store says it is indexed (see the
    /// module's docs); `None` when there was nothing to do.
    pub async fn rebuild_index(&self) -> Result<Option<Rebuilt>, Error> {
        match self.storage.read_record(layout::INDEX_COMPLETE, 1024, |_| ()).await {
            Ok(()) => return Ok(None),
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let (pending, records) = futures::join!(
            self.storage.list_keys(layout::PENDING, Listing::ALL),
            self.storage.list_keys(layout::RESULTS, Listing::ALL)
        );
        let mut folders: BTreeMap<ResultId, Folder> = BTreeMap::new();
        for key in records? {
            let Some((id, name)) = key.strip_prefix(layout::RESULTS).and_then(|rest| rest.split_once('/')) else {
                continue;
            };
            let Ok(id) = ResultId::parse(id) else { continue };
            let folder = folders.entry(id).or_default();
            match name {
                layout::OUTCOME => folder.outcome = true,
                layout::TOMBSTONE => folder.tombstone = true,
                other => folder.renewals.extend(layout::renewal_millis(other)),
            }
        }
        let pending: Vec<ResultId> = pending?.iter().filter_map(|key| layout::pending_id(key)).collect();
        let indexed: Vec<bool> = stream::iter(pending)
            .map(|id| async move { self.index_pending(&id).await })
            .buffer_unordered(AT_ONCE)
            .try_collect()
            .await?;
        let sealed: Vec<bool> = stream::iter(folders)
            .map(|(id, folder)| async move { self.index_folder(&id, &folder).await })
            .buffer_unordered(AT_ONCE)
            .try_collect()
            .await?;
        let report = Rebuilt {
            allocations: indexed.iter().filter(|done| **done).count(),
            results: sealed.iter().filter(|done| **done).count(),
            unreadable: indexed.iter().chain(&sealed).filter(|done| !**done).count(),
        };
        match self.storage.put_create(layout::INDEX_COMPLETE, b"{\"format\":1}\n".to_vec()).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if report != Rebuilt::default() {
            info!(?report, "indexed the results an earlier release stored");
        }
        Ok(Some(report))
    }

    /// Indexes the pending allocation of `id`, its bytes as they are (of the format its release wrote);
    /// false if it is unreadable (true if it is gone meanwhile).
    async fn index_pending(&self, id: &ResultId) -> Result<bool, Error> {
        let key = layout::pending(id);
        let read = self.storage.read_record(&key, Allocation::MAX_BYTES, |reader| {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map(|_| bytes)
        });
        let decoded = match read.await {
            Ok(Ok(bytes)) => decode::<Allocation>(&key, &bytes).map(|allocation| (allocation, bytes)),
            Ok(Err(e)) => Err(Error::CorruptRecord { key: key.clone(), message: e.to_string() }),
            Err(StorageError::NotFound { .. }) => return Ok(true),
            Err(StorageError::Unreadable { key, reason }) => Err(Error::CorruptRecord { key, message: reason }),
            Err(e) => return Err(e.into()),
        };
        let (allocation, bytes) = match decoded {
            Ok(decoded) => decoded,
            Err(Error::CorruptRecord { key, message }) => {
                warn!(key = %Escaped(&key), "a record is unreadable; the result index leaves its result out: {}", Escaped(&message));
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        self.index(&allocation.info, IndexEntry::Allocated, bytes).await?;
        Ok(true)
    }

    /// Indexes the records folder of `id`: its seal, renewals and deletion; false if a record is unreadable.
    async fn index_folder(&self, id: &ResultId, folder: &Folder) -> Result<bool, Error> {
        let info = if folder.outcome {
            let outcome = match self.readable::<Outcome>(&layout::outcome(id)).await? {
                Readable::Found(outcome) => outcome,
                Readable::Gone => return Ok(true),
                Readable::Unreadable => return Ok(false),
            };
            self.index_sealed_if_missing(&outcome).await?;
            outcome.info().clone()
        } else if folder.tombstone {
            match self.readable::<Tombstone>(&layout::tombstone(id)).await? {
                Readable::Found(tombstone) => tombstone.info,
                Readable::Gone => return Ok(true),
                Readable::Unreadable => return Ok(false),
            }
        } else {
            return Ok(true);
        };
        let renewals = folder.renewals.iter().map(|until_ms| IndexEntry::Renewed { until_ms: *until_ms });
        let deleting = folder.tombstone.then_some(IndexEntry::Deleting);
        for entry in renewals.chain(deleting) {
            self.index(&info, entry, Vec::new()).await?;
        }
        Ok(true)
    }

    /// The record at `key`, if it is there and readable (an unreadable one is logged).
    async fn readable<T: Record>(&self, key: &str) -> Result<Readable<T>, Error> {
        match self.read::<T>(key).await {
            Ok(Some(record)) => Ok(Readable::Found(record)),
            Ok(None) => Ok(Readable::Gone),
            Err(Error::CorruptRecord { key, message }) => {
                warn!(key = %Escaped(&key), "a record is unreadable; the result index leaves its result out: {}", Escaped(&message));
                Ok(Readable::Unreadable)
            }
            Err(e) => Err(e),
        }
    }
}

/// A record, as the pass found it.
enum Readable<T> {
    Found(T),
    Gone,
    Unreadable,
}
