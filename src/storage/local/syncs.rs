//! Shared syncs of folders (group commit): calls that made entries in one folder at about the same time wait
//! for one `fsync` of it instead of making one each.
//!
//! The contract of [`FolderSyncs::sync`]: it returns `Ok` only after a sync of the folder that *began after*
//! the call did has succeeded. Every entry the caller made in the folder before calling is then durable,
//! whoever ran the sync. A sync running when a call arrives may have passed the caller's entry already, so the
//! call waits for the next one; the next one starts as soon as the running one ends and serves every call that
//! arrived meanwhile.
//!
//! A failed sync fails every call waiting for it and poisons the backend: after a failed `fsync` the kernel may
//! have dropped the dirty pages and a later sync of the same folder can succeed without writing them, so no
//! entry made before the failure can be trusted to be durable. Every later write fails too, saying so, until
//! the service is restarted (and reads what the disk really holds).

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
};

/// The shared syncs of every folder of one backend, and whether one of them failed.
#[derive(Debug, Default)]
pub(super) struct FolderSyncs {
    folders: Mutex<HashMap<PathBuf, Arc<Folder>>>,
    failure: OnceLock<Failure>,
}

/// The first sync that failed: which folder, and how.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub folder: PathBuf,
    pub error: Arc<io::Error>,
}

#[derive(Debug, Default)]
struct Folder {
    state: Mutex<Syncs>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct Syncs {
    /// How many syncs of the folder have begun.
    begun: u64,
    /// The number of the last one that ended.
    ended: u64,
    running: bool,
}

impl FolderSyncs {
    /// Makes every entry made in `folder` before this call durable, running `sync` (an `fsync` of the folder)
    /// or waiting for a call that runs it. Blocks the calling thread: call it on a blocking thread.
    pub(super) fn sync(&self, folder: &Path, sync: impl Fn(&Path) -> io::Result<()>) -> Result<(), Failure> {
        self.check()?;
        let shared = self.folder(folder);
        let outcome = self.sync_shared(&shared, folder, sync);
        self.forget(folder, shared);
        outcome
    }

    /// `Err` once any sync has failed: a write must not be acknowledged after that.
    pub(super) fn check(&self) -> Result<(), Failure> {
        self.failure.get().map_or(Ok(()), |failure| Err(failure.clone()))
    }

    fn sync_shared(
        &self,
        shared: &Folder,
        folder: &Path,
        sync: impl Fn(&Path) -> io::Result<()>,
    ) -> Result<(), Failure> {
        let mut state = lock(&shared.state);
        // The first sync to begin after this point serves this call.
        let needed = state.begun + 1;
        loop {
            // A failed sync ends every wait: nothing is synced, or acknowledged, after it.
            self.check()?;
            if state.ended >= needed {
                return Ok(());
            }
            if state.running {
                state = shared.finished.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            state.running = true;
            state.begun += 1;
            let number = state.begun;
            drop(state);
            let synced = sync(folder);
            if let Err(error) = synced {
                // Set before waking anyone, so every waiter of this sync sees it.
                let _ = self.failure.set(Failure { folder: folder.to_owned(), error: Arc::new(error) });
            }
            state = lock(&shared.state);
            state.running = false;
            state.ended = number;
            shared.finished.notify_all();
        }
    }

    /// The shared state of `folder`, made if no call is using it.
    fn folder(&self, folder: &Path) -> Arc<Folder> {
        lock(&self.folders).entry(folder.to_owned()).or_default().clone()
    }

    /// Drops the shared state of `folder` if no other call holds it (there is one per folder with entries being
    /// made, so the map stays as small as the calls in flight).
    fn forget(&self, folder: &Path, shared: Arc<Folder>) {
        let mut folders = lock(&self.folders);
        // Clones are made only under this lock: the map's and ours mean nobody else holds it.
        if Arc::strong_count(&shared) == 2 {
            folders.remove(folder);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves counters that are still consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Barrier,
            atomic::{AtomicUsize, Ordering},
        },
        thread,
        time::Duration,
    };

    use super::*;

    #[test]
    fn concurrent_calls_share_syncs_and_each_waits_for_one_that_began_after_it() {
        let syncs = Arc::new(FolderSyncs::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let callers = 32;
        let barrier = Arc::new(Barrier::new(callers));
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let (syncs, runs, barrier) = (syncs.clone(), runs.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    // The number of syncs that had begun (at least) when the call arrived.
                    let before = runs.load(Ordering::SeqCst);
                    syncs
                        .sync(Path::new("/folder"), |_| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(20));
                            Ok(())
                        })
                        .unwrap();
                    // Some sync began after the call arrived.
                    assert!(runs.load(Ordering::SeqCst) > before);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let runs = runs.load(Ordering::SeqCst);
        assert!((1..8).contains(&runs), "32 calls at once shared their syncs: {runs} syncs");
        assert!(lock(&syncs.folders).is_empty(), "no state is kept for a folder nobody syncs");
    }

    #[test]
    fn a_failed_sync_fails_every_call_waiting_for_it_and_every_later_one_without_syncing_again() {
        let syncs = Arc::new(FolderSyncs::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (syncs, runs, barrier) = (syncs.clone(), runs.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    syncs.sync(Path::new("/folder"), |_| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(20));
                        Err(io::Error::other("EIO"))
                    })
                })
            })
            .collect();
        for handle in handles {
            let failed = handle.join().unwrap().unwrap_err();
            assert_eq!(failed.folder, Path::new("/folder"));
        }
        let failed_runs = runs.load(Ordering::SeqCst);
        assert_eq!(failed_runs, 1, "the waiters of a failed sync did not retry it");
        let later = syncs.sync(Path::new("/other"), |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(later.is_err(), "nothing is acknowledged after a failed sync");
        assert_eq!(runs.load(Ordering::SeqCst), failed_runs, "and no folder is synced again");
        assert!(syncs.check().is_err());
    }

    #[test]
    fn folders_are_synced_independently() {
        let syncs = FolderSyncs::default();
        let seen = Mutex::new(Vec::new());
        for folder in ["/a", "/b", "/a"] {
            syncs
                .sync(Path::new(folder), |path| {
                    seen.lock().unwrap().push(path.to_owned());
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), [Path::new("/a"), Path::new("/b"), Path::new("/a")]);
    }
}
