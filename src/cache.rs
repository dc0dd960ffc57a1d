//! Sealed outcomes (committed or aborted) kept in memory, so that Resolve of a recent result makes no
//! storage request.
//!
//! An outcome never changes, so it can be kept while the result exists; what can change is whether the result
//! still exists (released or expired on another replica) and how long it is kept (renewed). Each entry
//! therefore remembers when it was last checked against storage: callers trust it for a short refresh
//! interval and check again after. The cache is bounded by the memory its entries hold, estimated (a one-file
//! result about 1 KiB, a 10,000-file one about 1 MiB); the oldest entries go first.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use crate::model::{ManifestFile, Outcome, Pin, ResultId, Timestamp};

/// What is known of a sealed result.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub outcome: Arc<Outcome>,
    /// When the result will be deleted (renewals included), as of `checked_at`; `None`: until released.
    pub expires_at: Option<Timestamp>,
    /// When this was last read from storage.
    pub checked_at: Instant,
}

/// A bounded map from result id to its sealed outcome.
#[derive(Debug)]
pub struct OutcomeCache {
    budget: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each entry with the number it was inserted under.
    sealed: HashMap<ResultId, (Sealed, u64)>,
    /// Insertion order, oldest first. An item whose number is not its entry's is stale (removed, or inserted
    /// again since): skipped on eviction, dropped when stale items outnumber live ones.
    order: VecDeque<(ResultId, u64)>,
    weight: usize,
    inserted: u64,
}

impl OutcomeCache {
    /// A cache whose entries hold about `budget_bytes` of memory at most (0 disables it).
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget: budget_bytes, inner: Mutex::new(Entries::default()) }
    }

    pub fn get(&self, id: &ResultId) -> Option<Sealed> {
        self.lock().sealed.get(id).map(|(sealed, _)| sealed.clone())
    }

    /// Keeps (or refreshes) `sealed`, evicting the oldest entries to make room; one larger than the whole
    /// budget is not kept. Constant time, amortized.
    pub fn insert(&self, id: &ResultId, sealed: Sealed) {
        let weight = weight(&sealed.outcome);
        if weight > self.budget {
            return;
        }
        let mut entries = self.lock();
        if let Some((kept, _)) = entries.sealed.get_mut(id) {
            *kept = sealed;
            return;
        }
        while entries.weight + weight > self.budget {
            let Some((oldest, number)) = entries.order.pop_front() else { break };
            if entries.sealed.get(&oldest).is_some_and(|(_, live)| *live == number)
                && let Some((evicted, _)) = entries.sealed.remove(&oldest)
            {
                entries.weight -= self::weight(&evicted.outcome);
            }
        }
        let number = entries.inserted;
        entries.inserted += 1;
        entries.weight += weight;
        entries.order.push_back((id.clone(), number));
        entries.sealed.insert(id.clone(), (sealed, number));
    }

    /// Forgets `id`, if cached. Constant time, amortized.
    pub fn remove(&self, id: &ResultId) {
        let mut entries = self.lock();
        if let Some((removed, _)) = entries.sealed.remove(id) {
            entries.weight -= weight(&removed.outcome);
        }
        if entries.order.len() > 2 * entries.sealed.len() + 64 {
            let Entries { sealed, order, .. } = &mut *entries;
            order.retain(|(id, number)| sealed.get(id).is_some_and(|(_, live)| live == number));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // The entries stay consistent even if a holder panicked: every update completes before unlocking.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The memory an entry holds, estimated: its map and order entries with the outcome's fixed part, its text,
/// and each file's entry, path and pin. (Measured: a cached one-file result adds about 1 KiB to the process.)
pub fn weight(outcome: &Outcome) -> usize {
    const ENTRY: usize = 1024;
    const FILE: usize = std::mem::size_of::<ManifestFile>() + 32;
    let info = outcome.info();
    let labels: usize = info.labels.iter().map(|(key, value)| key.len() + value.len() + 64).sum();
    let text = info.query_id.len() + labels;
    match outcome {
        Outcome::Committed(manifest) => {
            ENTRY
                + text
                + manifest
                    .files
                    .iter()
                    .map(|file| FILE + file.path.as_str().len() + file.pin.as_ref().map_or(0, Pin::text_bytes))
                    .sum::<usize>()
        }
        Outcome::Aborted(aborted) => ENTRY + text + aborted.reason.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{FileType, Manifest, RelPath, ResultInfo};

    fn sealed(files: usize) -> (ResultId, Sealed) {
        let info = ResultInfo {
            result_id: ResultId::generate().unwrap(),
            query_id: "q".into(),
            file_type: FileType::Parquet,
            created_at: Timestamp::UNIX_EPOCH,
            ttl: None,
            labels: BTreeMap::new(),
        };
        let files = (0..files)
            .map(|i| ManifestFile {
                path: RelPath::parse("p", &format!("{i}")).unwrap(),
                size_bytes: 1,
                row_count: None,
                pin: None,
            })
            .collect();
        let id = info.result_id.clone();
        let outcome = Outcome::Committed(Manifest { info, committed_at: Timestamp::UNIX_EPOCH, files });
        (id, Sealed { outcome: Arc::new(outcome), expires_at: None, checked_at: Instant::now() })
    }

    #[test]
    fn the_oldest_entries_go_first_within_the_budget() {
        let cache = OutcomeCache::new(3 * weight(&sealed(3).1.outcome));
        let (a, b, c) = (sealed(3), sealed(3), sealed(3));
        for (id, entry) in [&a, &b] {
            cache.insert(id, entry.clone());
        }
        assert!(cache.get(&a.0).is_some() && cache.get(&b.0).is_some());
        cache.insert(&c.0, c.1.clone());
        cache.insert(&sealed(3).0, sealed(3).1);
        assert!(cache.get(&a.0).is_none(), "the oldest was evicted");
        assert!(cache.get(&c.0).is_some());
    }

    #[test]
    fn an_outcome_larger_than_the_budget_is_not_kept() {
        let cache = OutcomeCache::new(weight(&sealed(1).1.outcome) + weight(&sealed(5).1.outcome));
        let small = sealed(1);
        cache.insert(&small.0, small.1.clone());
        let big = sealed(100);
        cache.insert(&big.0, big.1.clone());
        assert!(cache.get(&big.0).is_none());
        assert!(cache.get(&small.0).is_some(), "nothing was evicted for it");
    }

    #[test]
    fn removed_entries_do_not_pile_up_and_do_not_evict_a_later_insert() {
        let cache = OutcomeCache::new(500 * weight(&sealed(1).1.outcome));
        for _ in 0..10_000 {
            let (id, entry) = sealed(1);
            cache.insert(&id, entry);
            cache.remove(&id);
        }
        assert!(cache.lock().order.len() <= 64 + 1, "{} stale items kept", cache.lock().order.len());
        // An id removed and inserted again lives as long as its new insertion says: room for 5 one-file
        // results; `again` was first inserted before `first`, and again after it.
        let cache = OutcomeCache::new(5 * weight(&sealed(1).1.outcome));
        let (again, entry) = sealed(1);
        let first = sealed(1);
        cache.insert(&again, entry.clone());
        cache.insert(&first.0, first.1);
        cache.remove(&again);
        cache.insert(&again, entry);
        for _ in 0..4 {
            let (id, entry) = sealed(1);
            cache.insert(&id, entry);
        }
        assert!(cache.get(&first.0).is_none(), "the oldest went");
        assert!(cache.get(&again).is_some(), "evicted by the item of its first insertion");
    }

    #[test]
    fn remove_frees_its_weight_and_insert_refreshes() {
        let cache = OutcomeCache::new(weight(&sealed(3).1.outcome) + 10);
        let a = sealed(3);
        cache.insert(&a.0, a.1.clone());
        let later = Timestamp::from_millis(5_000).unwrap();
        cache.insert(&a.0, Sealed { expires_at: Some(later), ..a.1.clone() });
        assert_eq!(cache.get(&a.0).unwrap().expires_at, Some(later));
        cache.remove(&a.0);
        assert!(cache.get(&a.0).is_none());
        let b = sealed(3);
        cache.insert(&b.0, b.1.clone());
        assert!(cache.get(&b.0).is_some());
    }
}
