//! The allocations this replica made or answered, by result. An allocation never changes once written, so a
//! call that needs only it (an Abort on the replica that allocated) skips reading it again; what may have
//! changed since (a commit, an abort, a deletion) is found by the call's own create-only write.

use std::{collections::HashMap, sync::Mutex};

use crate::model::{Allocation, ResultId};

/// The most allocations kept; past it the memory starts over (a replica serves its recent queries from it).
const MAX_ALLOCATIONS: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct Allocations(Mutex<HashMap<ResultId, Allocation>>);

impl Allocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResultId, Allocation>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn insert(&self, allocation: &Allocation) {
        let mut kept = self.lock();
        if kept.len() >= MAX_ALLOCATIONS {
            kept.clear();
        }
        kept.insert(allocation.info.result_id.clone(), allocation.clone());
    }

    pub(super) fn get(&self, id: &ResultId) -> Option<Allocation> {
        self.lock().get(id).cloned()
    }

    /// Forgets `id`: it is sealed or being deleted, and no call needs its allocation alone any more.
    pub(super) fn remove(&self, id: &ResultId) {
        self.lock().remove(id);
    }
}
