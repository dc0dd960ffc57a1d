//! ListResults: a page of the result index, in the order results were created, filtered by state, labels and
//! creation time. A page costs one listing of the index (from where the last one ended, so its cost does not
//! grow with the results stored) and one read of a small record per result on it, all at once.
//!
//! What the index says lags behind the records by a moment: a seal's entry is written just after its call's
//! answer (see `index.rs`). A result whose entry cannot be read is left off its page (and logged once).

use futures::{StreamExt, stream};
use tracing::warn;

use super::{Error, Results};
use crate::{
    layout::{self, IndexEntry},
    model::{Allocation, ListSpec, PageToken, ResultId, ResultState, ResultStatus, Sealing, Summary, Timestamp},
    storage::{Backend, Listing},
    telemetry::Escaped,
};

/// The index keys one page lists per result it may hold: its allocation, its seal, its deletion and a renewal
/// or more.
const KEYS_PER_RESULT: usize = 4;
/// How many records of a page are read at once.
const READS_AT_ONCE: usize = 64;

/// One page of results, and where the next starts (`None` after the last).
#[derive(Debug)]
pub struct Listed {
    pub results: Vec<ResultStatus>,
    pub next: Option<PageToken>,
}

/// What the index names of one result.
#[derive(Debug)]
pub(super) struct Entries {
    pub(super) created: Timestamp,
    pub(super) id: ResultId,
    pub(super) sealed: Option<IndexEntry>,
    allocated: bool,
    deleting: bool,
    renewed_until: Option<u64>,
}

impl Entries {
    /// A result whose index folder names nothing yet.
    pub(super) fn new(created: Timestamp, id: ResultId) -> Self {
        Self { created, id, sealed: None, allocated: false, deleting: false, renewed_until: None }
    }

    /// Takes in one more entry of its folder.
    pub(super) fn add(&mut self, entry: IndexEntry) {
        match entry {
            IndexEntry::Allocated => self.allocated = true,
            IndexEntry::Committed { .. } | IndexEntry::Aborted => self.sealed = Some(entry),
            IndexEntry::Deleting => self.deleting = true,
            IndexEntry::Renewed { until_ms } => {
                self.renewed_until = Some(self.renewed_until.map_or(until_ms, |ms| ms.max(until_ms)))
            }
        }
    }

    /// Its state as far as the names tell: committed results may turn out expired once read; a result
    /// being deleted is EXPIRED.
    pub(super) fn named_state(&self) -> ResultState {
        match (self.deleting, self.sealed) {
            (true, _) => ResultState::Expired,
            (false, Some(IndexEntry::Aborted)) => ResultState::Aborted,
            (false, Some(_)) => ResultState::Committed,
            (false, None) => ResultState::Allocated,
        }
    }

    /// The bytes its seal's entry names (none before a commit).
    pub(super) fn bytes(&self) -> u64 {
        match self.sealed {
            Some(IndexEntry::Committed { bytes }) => bytes,
            _ => 0,
        }
    }

    /// Whether a result named so may be in `state` once read.
    fn may_be(&self, state: Option<ResultState>) -> bool {
        match (state, self.named_state()) {
            (None, _) => true,
            (Some(ResultState::Expired), ResultState::Committed | ResultState::Expired) => true,
            (Some(wanted), named) => wanted == named,
        }
    }
}

impl<B: Backend> Results<B> {
    /// One page of the results stored, oldest first (see the module's docs). A page may hold fewer than
    /// `page_size` results while more follow: the ones its filters skipped count against it.
    pub async fn list_results(&self, spec: &ListSpec) -> Result<Listed, Error> {
        let after = match (&spec.page_token, spec.created_after) {
            (Some(token), _) => {
                let (created, id) = token.result();
                Some(layout::index_after(created, id))
            }
            (None, Some(at)) => Some(layout::index_bound(at)),
            (None, None) => None,
        };
        let until = spec.created_before.map(layout::index_bound);
        let limit = spec.page_size.saturating_mul(KEYS_PER_RESULT);
        let range = Listing { after: after.as_deref(), until: until.as_deref(), limit: Some(limit) };
        let keys = self.storage.list_keys(layout::INDEX, range).await?;
        let truncated = keys.len() >= limit;
        let mut folders = group(&keys);
        // A listing cut short may have cut its last folder: it is left for the next page, unless it is the
        // only one (a result with more entries than a page lists: it is shown with those listed).
        if truncated && folders.len() > 1 {
            folders.pop();
        }
        folders.truncate(spec.page_size);
        let more = truncated || folders.len() == spec.page_size;
        let next = match folders.last() {
            Some(last) if more => Some(PageToken::of(last.created, &last.id)),
            _ => None,
        };
        let wanted = folders.into_iter().filter(|entries| entries.may_be(spec.state));
        let read = stream::iter(wanted).map(|entries| self.listed_status(entries)).buffered(READS_AT_ONCE);
        let statuses: Vec<Result<Option<ResultStatus>, Error>> = read.collect().await;
        let mut results = Vec::new();
        for status in statuses {
            let status = match status {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                // One record it cannot read does not keep a page from the others: logged once, passed over.
                Err(Error::CorruptRecord { key, message }) => {
                    if self.corrupt.note_key(&key) {
                        warn!(key = %Escaped(&key), "ListResults passes over a result whose index entry is unreadable: {}", Escaped(&message));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let state_matches = spec.state.is_none_or(|state| state == status.state);
            let labels_match = spec.labels.iter().all(|(key, value)| status.info.labels.get(key) == Some(value));
            if state_matches && labels_match {
                results.push(status);
            }
        }
        Ok(Listed { results, next })
    }

    /// The status of the result `entries` names, read from its seal's summary or its allocation; `None` if
    /// its folder lost them meanwhile (a deletion).
    async fn listed_status(&self, entries: Entries) -> Result<Option<ResultStatus>, Error> {
        let (created, id) = (entries.created, &entries.id);
        if let Some(sealed) = entries.sealed {
            let Some(summary) = self.read::<Summary>(&layout::index_entry(created, id, sealed)).await? else {
                return Ok(None);
            };
            if entries.deleting {
                return Ok(Some(ResultStatus::expired(&summary.info, self.now())));
            }
            let expires_at = self.listed_expiry(&summary, entries.renewed_until);
            let status = summary.status(expires_at);
            return Ok(Some(match expires_at {
                Some(at) if at <= self.now() && status.state == ResultState::Committed => {
                    ResultStatus::expired(&summary.info, at)
                }
                _ => status,
            }));
        }
        if !entries.allocated {
            return Ok(None);
        }
        let allocation = self.read::<Allocation>(&layout::index_entry(created, id, IndexEntry::Allocated)).await?;
        Ok(allocation.map(|allocation| match entries.deleting {
            true => ResultStatus::expired(&allocation.info, self.now()),
            false => ResultStatus::allocated(&allocation),
        }))
    }

    /// When a sealed result goes, as its summary and its latest renewal say (as [`Self::seal_shared`] does of
    /// its records).
    fn listed_expiry(&self, summary: &Summary, renewed_until: Option<u64>) -> Option<Timestamp> {
        let base = match &summary.sealed {
            Sealing::Committed { committed_at, .. } => {
                self.retention.ttl(summary.info.ttl).and_then(|ttl| committed_at.checked_add(ttl))
            }
            Sealing::Aborted { aborted_at, .. } => Some(aborted_at.saturating_add(self.retention.commit_timeout)),
        }?;
        match renewed_until {
            Some(ms) => Timestamp::from_millis(ms).map(|renewed| base.max(renewed)),
            None => Some(base),
        }
    }
}

/// The results `keys` (index keys in order) name, each with what its entries say, in the keys' order; keys
/// that are not index entries are passed over.
pub(super) fn group(keys: &[String]) -> Vec<Entries> {
    let mut folders: Vec<Entries> = Vec::new();
    for key in keys {
        let Some((created, id, entry)) = layout::parse_index_key(key) else { continue };
        match folders.last_mut() {
            Some(last) if last.created == created && last.id == id => last.add(entry),
            _ => {
                let mut entries = Entries::new(created, id);
                entries.add(entry);
                folders.push(entries);
            }
        }
    }
    folders
}
