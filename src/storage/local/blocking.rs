//! The blocking threads of the local backend, in classes. Every filesystem call runs on the runtime's
//! blocking pool holding a permit of its class until its thread returns (not until its caller stops waiting),
//! so work stuck in the kernel (an NFS server gone, a disk that no longer answers) costs permits of its own
//! class only: downloads stuck on sinks cannot starve Allocate's records, nor a sync that never ends the
//! reads of Resolve. A class with no permit left fails its calls within their timeout, as storage that does
//! not answer does.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::join_error;
use crate::storage::{StorageError, StorageLocation};

/// A class of the local backend's blocking work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockingClass {
    /// The files of sinks: a download's opens and reads, a Commit's walk of its sink, a sink's removal.
    Sinks,
    /// Reads, listings and deletions of the service's records.
    Records,
    /// Create-only writes of records and the folder syncs that make them durable (Allocate, Commit's seal,
    /// Abort, Renew, tombstones, the expiry index), and the sinks' folders made.
    Writes,
}

impl BlockingClass {
    /// Every class.
    pub const ALL: [BlockingClass; 3] = [Self::Sinks, Self::Records, Self::Writes];

    fn index(self) -> usize {
        match self {
            Self::Sinks => 0,
            Self::Records => 1,
            Self::Writes => 2,
        }
    }
}

/// The permits of each class, `limit` each.
#[derive(Debug)]
pub struct BlockingClasses {
    permits: [Arc<Semaphore>; 3],
    limit: usize,
    /// For tests: the classes whose work hangs on its thread (see [`BlockingClasses::hold`]).
    held: Mutex<[bool; 3]>,
    released: Condvar,
}

/// Work of the classes [`BlockingClasses::hold`] names hangs until this is dropped.
#[derive(Debug)]
pub struct Held {
    classes: Arc<BlockingClasses>,
    class: BlockingClass,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.classes.lock()[self.class.index()] = false;
        self.classes.released.notify_all();
    }
}

impl BlockingClasses {
    /// At most `limit` blocking threads of each class at once.
    pub fn new(limit: usize) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            permits: std::array::from_fn(|_| Arc::new(Semaphore::new(limit))),
            limit,
            held: Mutex::new([false; 3]),
            released: Condvar::new(),
        })
    }

    /// How many threads each class may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many permits of `class` are free now.
    pub fn available(&self, class: BlockingClass) -> usize {
        self.permits[class.index()].available_permits()
    }

    /// For tests of what a stuck class costs: from now until the answer is dropped, every piece of `class`'s
    /// work, once its thread has started, waits there, holding its permit, as work stuck in the kernel does.
    pub fn hold(self: &Arc<Self>, class: BlockingClass) -> Held {
        self.lock()[class.index()] = true;
        Held { classes: self.clone(), class }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [bool; 3]> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while `class` is held (tests only; a free pass otherwise).
    pub(super) fn wait_while_held(&self, class: BlockingClass) {
        let mut held = self.lock();
        while held[class.index()] {
            held = self.released.wait(held).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// A permit of `class`, waited for at most `timeout`.
    pub(super) async fn permit(
        &self,
        class: BlockingClass,
        timeout: Duration,
    ) -> Result<OwnedSemaphorePermit, StorageError> {
        let acquire = self.permits[class.index()].clone().acquire_owned();
        match tokio::time::timeout(timeout, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(StorageError::Timeout { location: StorageLocation::Local, timeout }),
        }
    }

    /// Runs `work` on the blocking pool with a permit of `class` held until its thread returns; waits for a
    /// permit and the work together at most `timeout`.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        class: BlockingClass,
        timeout: Duration,
        work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = self.permit(class, timeout).await?;
        let classes = self.clone();
        let thread = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            classes.wait_while_held(class);
            work()
        });
        match tokio::time::timeout_at(deadline, thread).await {
            Ok(done) => done.unwrap_or_else(|join| Err(join_error(join))),
            Err(_) => Err(StorageError::Timeout { location: StorageLocation::Local, timeout }),
        }
    }

    /// Starts `work` on the blocking pool with `permit` (of `class`) held until it returns: for a thread that
    /// outlives the call that started it (a download's reader).
    pub(super) fn spawn(
        self: &Arc<Self>,
        class: BlockingClass,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce() + Send + 'static,
    ) {
        let classes = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            classes.wait_while_held(class);
            work();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_class_costs_its_own_permits_only() {
        let classes = BlockingClasses::new(2);
        let held = classes.hold(BlockingClass::Sinks);
        let short = Duration::from_millis(200);
        for _ in 0..3 {
            let stuck = classes.run(BlockingClass::Sinks, short, || Ok(())).await;
            assert!(matches!(stuck, Err(StorageError::Timeout { .. })), "{stuck:?}");
        }
        assert_eq!(classes.available(BlockingClass::Sinks), 0, "the stuck threads keep their permits");
        let records = classes.run(BlockingClass::Records, short, || Ok(7)).await;
        assert_eq!(records.unwrap(), 7, "another class is served");
        drop(held);
        let freed = classes.run(BlockingClass::Sinks, Duration::from_secs(5), || Ok(1)).await;
        assert_eq!(freed.unwrap(), 1, "released, the class is served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(classes.available(BlockingClass::Sinks), 2);
    }
}
