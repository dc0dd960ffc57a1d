//! Writing the result index and the change journal (see `layout.rs`) beside the records each call writes.
//!
//! Each entry is written create-only (one already there is fine: every writer of an entry writes the same
//! thing), and with it a journal entry saying that the result's index changed, so that every replica's usage
//! picks the change up (`usage.rs`). What is written:
//! - Allocate: the allocation, at the same time as its pending record;
//! - Commit and Abort: the outcome's summary, just after the outcome is written (only the outcome written
//!   says which of racing seals won), in the background: the call answers without waiting for it. The pruner,
//!   which visits every pending allocation once it is sealed, writes what a crash left out;
//! - Renew: the renewal, at the same time as its record;
//! - Release: `deleting`, at the same time as the tombstone;
//! - a deletion: the index folder goes with the result's records, and the journal says so after.

use tracing::warn;

use super::{Error, Results, state::encode};
use crate::{
    layout::{self, IndexEntry},
    model::{Outcome, ResultId, ResultInfo, Summary, Timestamp},
    storage::{Backend, StorageError},
    telemetry::Escaped,
};

impl<B: Backend> Results<B> {
    /// Writes `entry` of `info`'s result (holding `record`) and the journal entry saying so, at once.
    pub(super) async fn index(&self, info: &ResultInfo, entry: IndexEntry, record: Vec<u8>) -> Result<(), Error> {
        let key = layout::index_entry(info.created_at, &info.result_id, entry);
        let (written, journaled) =
            futures::join!(self.storage.put_create(&key, record), self.journal(info.created_at, &info.result_id));
        match written {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => journaled,
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the journal entry saying that the index of result `id`, created at `created`, changed now.
    pub(super) async fn journal(&self, created: Timestamp, id: &ResultId) -> Result<(), Error> {
        let key = layout::change(self.now(), created, id);
        match self.storage.put_create(&key, Vec::new()).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the index entry of `outcome`, the seal just written: the summary of what it says.
    pub(super) async fn index_sealed(&self, outcome: &Outcome) -> Result<(), Error> {
        let (info, entry, record) = sealed_entry(outcome)?;
        self.index(info, entry, record).await
    }

    /// The pruner's [`Self::index_sealed`], for a seal it sees once: the entry, and only if this wrote it (a
    /// crash left it out), the journal entry after it. One request when the entry is there.
    pub(super) async fn index_sealed_if_missing(&self, outcome: &Outcome) -> Result<(), Error> {
        let (info, entry, record) = sealed_entry(outcome)?;
        match self.storage.put_create(&layout::index_entry(info.created_at, &info.result_id, entry), record).await {
            Ok(()) => self.journal(info.created_at, &info.result_id).await,
            Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::index_sealed`] after the call's answer; one that fails is left to the pruner.
    pub(super) fn index_sealed_in_background(&self, outcome: std::sync::Arc<Outcome>) {
        let Some(results) = self.me.upgrade() else { return };
        self.indexing.spawn(async move {
            if let Err(e) = results.index_sealed(&outcome).await {
                let id = &outcome.info().result_id;
                warn!(result_id = %id, "the result index lacks this seal until the pruner writes it: {}", Escaped(&e.detail()));
            }
        });
    }

    /// The keys of the index folder of result `id`, created at `created`, to be deleted with its records.
    pub(super) async fn index_keys(&self, created: Timestamp, id: &ResultId) -> Result<Vec<String>, Error> {
        let folder = layout::index_folder(created, id);
        Ok(self.storage.list_keys(&folder, crate::storage::Listing::ALL).await?)
    }

    /// Writes one journal entry saying that the index folders of `results` (each created when it says) are
    /// gone, or changed.
    pub(super) async fn journal_batch(&self, results: &[(Timestamp, ResultId)]) -> Result<(), Error> {
        if results.is_empty() {
            return Ok(());
        }
        let tag = crate::hex::encode(&rand_tag());
        let key = layout::change_batch(self.now(), &tag);
        let lines: String = results.iter().map(|(created, id)| format!("{:016}-{id}\n", created.millis())).collect();
        match self.storage.put_create(&key, lines.into_bytes()).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The keys of the index entries a result sealed with `outcome` may have, given `records`, the keys of its
/// records folder (a renewal record and its index entry name the same expiry).
pub(super) fn entries_of(outcome: &Outcome, records: &[String]) -> Vec<String> {
    let info = outcome.info();
    let renewals = records
        .iter()
        .filter_map(|key| layout::renewal_millis(key.rsplit('/').next()?))
        .map(|until_ms| IndexEntry::Renewed { until_ms });
    [IndexEntry::Allocated, IndexEntry::Deleting, seal_of(outcome)]
        .into_iter()
        .chain(renewals)
        .map(|entry| layout::index_entry(info.created_at, &info.result_id, entry))
        .collect()
}

/// The index entry of a seal: the result's description, the entry's name, and its summary record.
fn sealed_entry(outcome: &Outcome) -> Result<(&ResultInfo, IndexEntry, Vec<u8>), Error> {
    let entry = seal_of(outcome);
    let info = outcome.info();
    let key = layout::index_entry(info.created_at, &info.result_id, entry);
    Ok((info, entry, encode(&key, &Summary::of(outcome))?))
}

/// The index entry `outcome` is.
fn seal_of(outcome: &Outcome) -> IndexEntry {
    match outcome {
        Outcome::Committed(manifest) => IndexEntry::Committed { bytes: manifest.total_bytes() },
        Outcome::Aborted(_) => IndexEntry::Aborted,
    }
}

/// Eight random bytes (zeros if the system's source fails: the journal entry's time still tells it apart
/// from most others, and a clash only makes the second write find the first).
fn rand_tag() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// How many seals' index entries are written at once after their calls' answers.
pub const BACKGROUND_INDEXING: usize = 64;
