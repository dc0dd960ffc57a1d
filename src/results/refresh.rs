//! Filling each replica's ledger of what is stored (`usage.rs`) from storage.
//!
//! - Whole: the index listed from its start, a page of [`WHOLE_PAGE`] keys at a time, at start-up, every
//!   [`FULL_READ_EVERY`], and whenever the journal may have lost entries the ledger has not read (its last
//!   refresh is nearly [`JOURNAL_KEPT`] old, or more than [`MAX_CHANGES`] entries are waiting).
//! - Changes: in between, the journal entries written since the last refresh (less [`Usage::look_back`], for
//!   writes still on their way and clocks that disagree), each result they name (or a batch entry lists) read
//!   again by one listing of its index folder. Entries already read are not read twice.
//!
//! Either way a seal's summary is read only for the budget label of a committed result whose label the
//! ledger does not know yet (when a per-label budget is configured): never every manifest.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, stream};
use tracing::warn;

use super::{
    Error, Results,
    listing::{Entries, group},
    prune::JOURNAL_KEPT,
    usage::{FULL_READ_EVERY, Key, Label, Ledger, Tracked},
};
use crate::{
    config::BudgetConfig,
    layout::{self, Change},
    model::{ResultState, Summary, Timestamp},
    storage::{Backend, Listing, StorageError},
    telemetry::Escaped,
};

/// How many index keys a whole read lists a request.
pub const WHOLE_PAGE: usize = 10_000;
/// The most journal entries a refresh reads; past it, the index is read whole instead.
pub const MAX_CHANGES: usize = 100_000;
/// How many folders (or records) a refresh reads at once.
const READS_AT_ONCE: usize = 64;
/// The most bytes of a batch entry of the journal read (the pruner's list at most [`super::prune::DELETE_BATCH`]
/// results, some 12 KiB).
const MAX_BATCH_BYTES: u64 = 64 * 1024;
/// How far clocks of replicas may disagree, for the journal's look-back.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What a replica knows of what is stored, and how it keeps it up to date.
#[derive(Debug)]
pub(super) struct Usage {
    pub(super) ledger: Mutex<Ledger>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Whether the ledger was read once.
    loaded: tokio::sync::watch::Sender<bool>,
    pub(super) budget: BudgetConfig,
    /// How long a journal entry may take to be listed after the time it names.
    look_back: Duration,
}

impl Usage {
    pub(super) fn new(budget: BudgetConfig, storage_timeout: Duration) -> Self {
        Self {
            ledger: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
            loaded: tokio::sync::watch::Sender::new(false),
            budget,
            look_back: storage_timeout.saturating_mul(2).saturating_add(CLOCK_SKEW),
        }
    }

    /// The ledger, for a moment.
    pub(super) fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How far back of its last refresh a refresh reads the journal.
    pub(super) fn look_back(&self) -> Duration {
        self.look_back
    }
}

/// Which way a refresh read storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// The whole index.
    Whole,
    /// The journal, and this many results it named.
    Changes(usize),
}

impl<B: Backend> Results<B> {
    /// Brings this replica's ledger up to date with storage (see the module's docs), then, when budgets expire
    /// the oldest results, makes room. A failed refresh changes nothing; the next one tries again.
    pub async fn refresh_usage(&self) -> Result<Refreshed, Error> {
        let _one = self.usage.refreshing.lock().await;
        let now = self.now();
        let (cursor, read_whole_at) = {
            let mut ledger = self.usage.ledger();
            ledger.begin_refresh();
            (ledger.cursor, ledger.read_whole_at)
        };
        let kept = JOURNAL_KEPT.saturating_sub(self.usage.look_back().saturating_mul(2));
        let changes_from = match (cursor, read_whole_at) {
            (Some(cursor), Some(whole))
                if now.saturating_sub(FULL_READ_EVERY) < whole && now.saturating_sub(kept) < cursor =>
            {
                Some(cursor.saturating_sub(self.usage.look_back()))
            }
            _ => None,
        };
        let read = match changes_from {
            Some(from) => match self.read_changes(from, now).await {
                Ok(Some(count)) => Ok(Refreshed::Changes(count)),
                Ok(None) => self.read_whole(now).await.map(|()| Refreshed::Whole),
                Err(e) => Err(e),
            },
            None => self.read_whole(now).await.map(|()| Refreshed::Whole),
        };
        match read {
            Ok(refreshed) => {
                self.usage.loaded.send_replace(true);
                self.publish_usage();
                self.make_room();
                Ok(refreshed)
            }
            Err(e) => {
                self.usage.ledger().abandon_refresh();
                Err(e)
            }
        }
    }

    /// Completes once the ledger has been read from storage once.
    pub async fn usage_loaded(&self) {
        let mut loaded = self.usage.loaded.subscribe();
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Reads the whole index into the ledger, as of `now`.
    async fn read_whole(&self, now: Timestamp) -> Result<(), Error> {
        let mut read: BTreeMap<Key, Tracked> = BTreeMap::new();
        let mut labels: Vec<(Key, IndexKey)> = Vec::new();
        let mut current: Option<Entries> = None;
        let mut after: Option<String> = None;
        loop {
            let range = Listing { after: after.as_deref(), until: None, limit: Some(WHOLE_PAGE) };
            let keys = self.storage.list_keys(layout::INDEX, range).await?;
            for key in &keys {
                let Some((created, id, entry)) = layout::parse_index_key(key) else { continue };
                match &mut current {
                    Some(entries) if entries.created == created && entries.id == id => entries.add(entry),
                    _ => {
                        if let Some(done) = current.take() {
                            self.take_in(done, &mut read, &mut labels);
                        }
                        let mut entries = Entries::new(created, id);
                        entries.add(entry);
                        current = Some(entries);
                    }
                }
            }
            if keys.len() < WHOLE_PAGE {
                break;
            }
            after = keys.last().cloned();
        }
        if let Some(done) = current {
            self.take_in(done, &mut read, &mut labels);
        }
        self.read_labels(labels, &mut read).await?;
        self.usage.ledger().end_whole_read(read, now);
        Ok(())
    }

    /// Reads the journal from `from` into the ledger, as of `now`: how many results it named, or `None` if it
    /// holds more than [`MAX_CHANGES`] entries (the index is then read whole).
    async fn read_changes(&self, from: Timestamp, now: Timestamp) -> Result<Option<usize>, Error> {
        let bound = layout::changes_bound(from);
        let range = Listing { after: Some(&bound), until: None, limit: Some(MAX_CHANGES.saturating_add(1)) };
        let keys = self.storage.list_keys(layout::CHANGES, range).await?;
        if keys.len() > MAX_CHANGES {
            return Ok(None);
        }
        let fresh: Vec<String> = {
            let ledger = self.usage.ledger();
            keys.into_iter().filter(|key| !ledger.seen.contains(key)).collect()
        };
        let mut changed: BTreeSet<Key> = BTreeSet::new();
        let mut batches = Vec::new();
        for key in &fresh {
            match layout::parse_change(key) {
                Some(Change::One { created, id, .. }) => {
                    changed.insert((created, id));
                }
                Some(Change::Batch { .. }) => batches.push(key.clone()),
                None => {}
            }
        }
        let listed: Vec<Vec<Key>> =
            stream::iter(batches).map(|key| self.read_batch(key)).buffer_unordered(READS_AT_ONCE).try_collect().await?;
        changed.extend(listed.into_iter().flatten());
        let folders: Vec<Option<Entries>> = stream::iter(changed.iter().cloned())
            .map(|(created, id)| async move {
                let keys = self.storage.list_keys(&layout::index_folder(created, &id), Listing::ALL).await?;
                Ok::<_, Error>(group(&keys).into_iter().find(|entries| entries.created == created && entries.id == id))
            })
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await?;
        let (mut read, mut labels) = (BTreeMap::new(), Vec::new());
        for entries in folders.into_iter().flatten() {
            self.take_in(entries, &mut read, &mut labels);
        }
        self.read_labels(labels, &mut read).await?;
        let count = changed.len();
        let mut ledger = self.usage.ledger();
        ledger.end_refresh(read, changed, now);
        let oldest_kept = layout::changes_bound(now.saturating_sub(self.usage.look_back()));
        ledger.seen.extend(fresh);
        ledger.seen.retain(|key| *key >= oldest_kept);
        Ok(Some(count))
    }

    /// The results a batch entry of the journal lists; none if it is gone (the pruner deleted it) or is not
    /// one the service wrote (logged).
    async fn read_batch(&self, key: String) -> Result<Vec<Key>, Error> {
        let read = self.storage.read_record(&key, MAX_BATCH_BYTES, |reader| {
            let mut text = String::new();
            reader.read_to_string(&mut text).map(|_| text)
        });
        let unreadable = |reason: &str| {
            warn!(key = %Escaped(&key), "a change-journal entry is unreadable, and passed over: {}", Escaped(reason));
            Ok(Vec::new())
        };
        match read.await {
            Ok(Ok(text)) => Ok(text.lines().filter_map(layout::parse_result_name).collect()),
            Ok(Err(e)) => unreadable(&e.to_string()),
            Err(StorageError::NotFound { .. }) => Ok(Vec::new()),
            Err(StorageError::Unreadable { reason, .. }) => unreadable(&reason),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes in what `entries` name of one result; a committed one whose label is to be read goes to `labels`.
    fn take_in(&self, entries: Entries, read: &mut BTreeMap<Key, Tracked>, labels: &mut Vec<(Key, IndexKey)>) {
        let tracked = Tracked { state: entries.named_state(), bytes: entries.bytes(), label: Label::Unread };
        let key = (entries.created, entries.id.clone());
        if self.usage.budget.per_label.is_some()
            && let Some(sealed) = entries.sealed
            && self.usage.ledger().needs_label(&key, &tracked)
        {
            labels.push((key.clone(), layout::index_entry(entries.created, &entries.id, sealed)));
        }
        read.insert(key, tracked);
    }

    /// Reads the budget label of each result in `labels` from its seal's summary.
    async fn read_labels(&self, labels: Vec<(Key, IndexKey)>, read: &mut BTreeMap<Key, Tracked>) -> Result<(), Error> {
        let Some(budget) = &self.usage.budget.per_label else { return Ok(()) };
        let summaries: Vec<(Key, Option<Summary>)> = stream::iter(labels)
            .map(|(key, summary)| async move {
                match self.read::<Summary>(&summary).await {
                    Ok(found) => Ok((key, found)),
                    Err(Error::CorruptRecord { key: record, message }) => {
                        if self.corrupt.note_key(&record) {
                            warn!(key = %Escaped(&record), "an index entry is unreadable; its result counts under no label: {}", Escaped(&message));
                        }
                        Ok((key, None))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(READS_AT_ONCE)
            .try_collect()
            .await?;
        for (key, summary) in summaries {
            let label = match summary.and_then(|summary| summary.info.labels.get(&budget.label).cloned()) {
                Some(value) => Label::Value(value.into()),
                None => Label::Absent,
            };
            if let Some(tracked) = read.get_mut(&key) {
                tracked.label = label;
            }
        }
        Ok(())
    }

    /// Notes in the ledger what this replica just did to a result.
    pub(super) fn note_usage(&self, info: &crate::model::ResultInfo, state: Option<ResultState>, bytes: u64) {
        let label = match &self.usage.budget.per_label {
            Some(budget) => {
                info.labels.get(&budget.label).map_or(Label::Absent, |value| Label::Value(value.as_str().into()))
            }
            None => Label::Unread,
        };
        let tracked = state.map(|state| Tracked { state, bytes, label });
        // The index names a result's creation to the millisecond: so does the ledger.
        let created = Timestamp::from_millis(info.created_at.millis()).unwrap_or(info.created_at);
        self.usage.ledger().note((created, info.result_id.clone()), tracked);
    }
}

/// An index key.
type IndexKey = String;
