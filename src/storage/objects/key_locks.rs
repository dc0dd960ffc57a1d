//! Locks by key: writers of one key wait for each other, writers of different keys never do. (Locks striped
//! by a hash of the key would make two writes of unrelated keys that share a stripe wait one after the other:
//! a round trip more on a store far away.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The keys being written, each with the lock its writers queue on; a key leaves the map with its last writer.
#[derive(Debug, Default)]
pub(super) struct KeyLocks(Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>);

/// A key held: dropping it lets the next writer of the key in.
pub(super) struct Held {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl KeyLocks {
    /// Waits until no other writer holds `key`, and holds it.
    pub(super) async fn lock(&self, key: &str) -> Held {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        Held { key: key.to_owned(), guard: Some(lock.lock_owned().await), locks: self.0.clone() }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many keys are held or waited for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only under the map's lock is a key's lock handed out: if the map and this guard are all that hold
        // it, no writer waits for it, and none can start to before the entry is gone.
        if let Some(lock) = map.get(&self.key)
            && Arc::strong_count(lock) == 2
        {
            map.remove(&self.key);
        }
        drop(self.guard.take());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn writers_of_one_key_wait_and_of_others_do_not_and_keys_are_forgotten() {
        let locks = Arc::new(KeyLocks::default());
        let held = locks.lock("a").await;
        // Another key at once, whatever it hashes to.
        for other in 0..1000 {
            drop(locks.lock(&format!("b{other}")).await);
        }
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { drop(locks.lock("a").await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a second writer of the key waits");
        assert_eq!(locks.len(), 1, "only the held key is kept");
        drop(held);
        waiting.await.unwrap();
        assert_eq!(locks.len(), 0, "forgotten with its last writer");
    }
}
