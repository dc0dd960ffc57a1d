//! Committed manifests kept in memory, so that Resolve of a recent result makes no storage request.
//!
//! A committed manifest never changes, so an entry is never stale while the result exists. The cache is
//! bounded by the number of files its manifests list together (a 10,000-file result weighs 10,000 times a
//! one-file result); the oldest entries go first.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::model::{Manifest, ResultId};

/// A bounded map from result id to its committed manifest.
#[derive(Debug)]
pub struct ManifestCache {
    budget: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    manifests: HashMap<ResultId, Arc<Manifest>>,
    /// Insertion order, oldest first; may name ids already removed.
    order: VecDeque<ResultId>,
    weight: usize,
}

impl ManifestCache {
    /// A cache whose manifests list at most `budget_files` files together (0 disables it).
    pub fn new(budget_files: usize) -> Self {
        Self { budget: budget_files, inner: Mutex::new(Entries::default()) }
    }

    pub fn get(&self, id: &ResultId) -> Option<Arc<Manifest>> {
        self.lock().manifests.get(id).cloned()
    }

    /// Keeps `manifest`, evicting the oldest entries to make room; one larger than the whole budget is not
    /// kept.
    pub fn insert(&self, manifest: Arc<Manifest>) {
        let weight = weight(&manifest);
        if weight > self.budget {
            return;
        }
        let mut entries = self.lock();
        let id = manifest.info.result_id.clone();
        if entries.manifests.contains_key(&id) {
            return;
        }
        while entries.weight + weight > self.budget {
            let Some(oldest) = entries.order.pop_front() else { break };
            if let Some(evicted) = entries.manifests.remove(&oldest) {
                entries.weight -= self::weight(&evicted);
            }
        }
        entries.weight += weight;
        entries.order.push_back(id.clone());
        entries.manifests.insert(id, manifest);
    }

    /// Forgets the manifest of `id`, if cached.
    pub fn remove(&self, id: &ResultId) {
        let mut entries = self.lock();
        if let Some(removed) = entries.manifests.remove(id) {
            entries.weight -= weight(&removed);
            entries.order.retain(|kept| kept != id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // The entries stay consistent even if a holder panicked: every update completes before unlocking.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn weight(manifest: &Manifest) -> usize {
    manifest.files.len() + 1
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::SystemTime};

    use super::*;
    use crate::model::{FileType, ManifestFile, RelPath, ResultInfo};

    fn manifest(files: usize) -> Arc<Manifest> {
        let info = ResultInfo {
            result_id: ResultId::generate().unwrap(),
            query_id: "q".into(),
            file_type: FileType::Parquet,
            created_at: SystemTime::UNIX_EPOCH,
            ttl: None,
            labels: BTreeMap::new(),
        };
        let files = (0..files)
            .map(|i| ManifestFile {
                path: RelPath::parse("p", &format!("{i}")).unwrap(),
                size_bytes: 1,
                row_count: None,
            })
            .collect();
        Arc::new(Manifest { info, committed_at: SystemTime::UNIX_EPOCH, files })
    }

    #[test]
    fn the_oldest_entries_go_first_within_the_budget() {
        let cache = ManifestCache::new(10);
        let (a, b, c) = (manifest(3), manifest(3), manifest(3));
        for m in [&a, &b] {
            cache.insert(m.clone());
        }
        assert!(cache.get(&a.info.result_id).is_some() && cache.get(&b.info.result_id).is_some());
        cache.insert(c.clone());
        assert!(cache.get(&a.info.result_id).is_none(), "the oldest was evicted");
        assert!(cache.get(&b.info.result_id).is_some() && cache.get(&c.info.result_id).is_some());
    }

    #[test]
    fn a_manifest_larger_than_the_budget_is_not_kept() {
        let cache = ManifestCache::new(10);
        let small = manifest(1);
        cache.insert(small.clone());
        let big = manifest(10);
        cache.insert(big.clone());
        assert!(cache.get(&big.info.result_id).is_none());
        assert!(cache.get(&small.info.result_id).is_some(), "nothing was evicted for it");
    }

    #[test]
    fn remove_frees_its_weight() {
        let cache = ManifestCache::new(4);
        let a = manifest(3);
        cache.insert(a.clone());
        cache.remove(&a.info.result_id);
        assert!(cache.get(&a.info.result_id).is_none());
        let b = manifest(3);
        cache.insert(b.clone());
        assert!(cache.get(&b.info.result_id).is_some());
    }
}
