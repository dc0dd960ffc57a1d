//! Allocations written in batches: group commit by a few writers instead of a thread per call.
//!
//! Each Allocate queues its work (one record named by two keys, and its sink made between them) and waits for
//! its answer. A writer, a thread of the blocking pool, takes what is queued, up to [`BATCH`] jobs, and does
//! each step for the whole batch before the next: every record's bytes written to a temporary file and
//! synced; every first name linked, then each folder that got one synced once; every sink made, then the root
//! synced once; every second name linked, then its folder synced once; the temporary names removed; every
//! job answered. Each job's names are durable, in its order, before it is answered (the argument of
//! `local.rs`), and the folder syncs are still shared with every other writer and call (`syncs.rs`). What a
//! batch saves is the hand-offs: one thread wakes for many calls, and no call waits on a lock or a condition
//! variable of its own.
//!
//! A writer is started when jobs are queued that no starting writer will take, up to [`WRITERS`] at once
//! (on a slow disk each batch's record syncs take their time: several writers sync at once, as the calls
//! did); a writer that finds the queue empty ends. Each job holds a permit of the writes' class until it is
//! answered, so the class's limit bounds the queue; a job whose caller stopped waiting (past its timeout)
//! before a writer took it is dropped unwritten.

use std::{
    collections::{HashMap, VecDeque},
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{
    BlockingClass, BlockingClasses, failed,
    files::{Access, make_folders, make_sink, split, sync_failed, write_temporary},
    folders::{Folder, Unreachable},
    syncs::{Failure, FolderSyncs},
};
use crate::{
    config::SinkConfig,
    model::ResultId,
    storage::{StorageError, StorageLocation},
};

/// The most jobs one writer takes at once.
pub(super) const BATCH: usize = 32;
/// The most writers at once.
pub(super) const WRITERS: usize = 16;

/// One Allocate's work: `record` named by `first`, then the sink of `sink` made, then `record` named by
/// `second`.
pub(super) struct Allocation {
    pub sink: ResultId,
    pub first: String,
    pub second: String,
    pub record: Vec<u8>,
}

/// The queue of allocations and the writers that drain it.
#[derive(Debug)]
pub(super) struct Batches {
    queue: Mutex<Queue>,
    root: Arc<Folder>,
    syncs: Arc<FolderSyncs>,
    classes: Arc<BlockingClasses>,
    /// How sinks are made.
    sinks: SinkConfig,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Writers running.
    writers: usize,
    /// Writers started that have not taken their first batch yet.
    starting: usize,
}

struct Job {
    work: Allocation,
    answer: oneshot::Sender<Result<(), StorageError>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("sink", &self.work.sink).finish_non_exhaustive()
    }
}

impl Batches {
    pub(super) fn new(
        root: Arc<Folder>,
        syncs: Arc<FolderSyncs>,
        classes: Arc<BlockingClasses>,
        sinks: SinkConfig,
    ) -> Arc<Self> {
        Arc::new(Self { queue: Mutex::default(), root, syncs, classes, sinks })
    }

    /// Writes `work` in a batch and answers once it is durable; waits for a permit and the work together at
    /// most `timeout`.
    pub(super) async fn write(self: &Arc<Self>, work: Allocation, timeout: Duration) -> Result<(), StorageError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = self.classes.permit(BlockingClass::Writes, timeout).await?;
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.jobs.push_back(Job { work, answer, _permit: permit });
            let start = queue.writers < WRITERS && queue.jobs.len() > queue.starting * BATCH;
            if start {
                queue.writers += 1;
                queue.starting += 1;
            }
            start
        };
        if start {
            let batches = self.clone();
            tokio::task::spawn_blocking(move || batches.drain());
        }
        let timed_out = || StorageError::Timeout { location: StorageLocation::Local, timeout };
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(done)) => done,
            // The writer is gone without answering: only a panic does that.
            Ok(Err(_)) => Err(StorageError::Unavailable {
                location: StorageLocation::Local,
                operation: "writing an allocation",
                cause: super::Cause::new("the writer stopped".to_owned(), Arc::new([])),
            }),
            Err(_) => Err(timed_out()),
        }
    }

    /// A writer: takes batches until the queue is empty.
    fn drain(&self) {
        let mut first = true;
        loop {
            let batch: Vec<Job> = {
                let mut queue = lock(&self.queue);
                if std::mem::take(&mut first) {
                    queue.starting -= 1;
                }
                let take = queue.jobs.len().min(BATCH);
                if take == 0 {
                    queue.writers -= 1;
                    return;
                }
                queue.jobs.drain(..take).collect()
            };
            self.classes.wait_while_held(BlockingClass::Writes);
            // A caller past its timeout has been answered already: its allocation is not made.
            let batch: Vec<Job> = batch.into_iter().filter(|job| !job.answer.is_closed()).collect();
            write_batch(&self.root, &self.syncs, self.sinks, batch);
        }
    }
}

/// One job through the steps of a batch: its temporary file, once written.
struct InFlight {
    job: Job,
    temp: String,
}

/// Writes `jobs`, each step for all of them before the next, and answers each.
fn write_batch(root: &Folder, syncs: &FolderSyncs, sinks: SinkConfig, jobs: Vec<Job>) {
    if let Err(failure) = syncs.check() {
        for job in jobs {
            let _ = job.answer.send(Err(sync_failed(failure.clone())));
        }
        return;
    }
    let mut folders = Folders::default();
    let mut flying = Vec::with_capacity(jobs.len());
    for job in jobs {
        match folders
            .open(root, split(&job.work.first).0, syncs)
            .and_then(|folder| write_temporary(folder, &job.work.record))
        {
            Ok(temp) => flying.push(InFlight { job, temp }),
            Err(error) => {
                let _ = job.answer.send(Err(error));
            }
        }
    }
    let flying = link_all(root, syncs, &mut folders, flying, |work| &work.first);
    let flying = make_sinks(root, syncs, sinks, &folders, flying);
    let flying = link_all(root, syncs, &mut folders, flying, |work| &work.second);
    for InFlight { job, temp } in flying {
        remove_temp(&folders, &job, &temp);
        let _ = job.answer.send(Ok(()));
    }
}

/// The folders a batch writes in, each opened (made where missing) once.
#[derive(Default)]
struct Folders {
    open: HashMap<String, Folder>,
}

impl Folders {
    fn open(&mut self, root: &Folder, dir: &str, syncs: &FolderSyncs) -> Result<&Folder, StorageError> {
        if !self.open.contains_key(dir) {
            let folder = make_folders(root, dir, Access::Private, syncs)?;
            self.open.insert(dir.to_owned(), folder);
        }
        self.open
            .get(dir)
            .ok_or_else(|| failed("opening folder", root.path().join(dir), io::ErrorKind::NotFound.into()))
    }

    fn get(&self, dir: &str) -> Option<&Folder> {
        self.open.get(dir)
    }
}

fn remove_temp(folders: &Folders, job: &Job, temp: &str) {
    if let Some(folder) = folders.get(split(&job.work.first).0) {
        let _ = folder.remove_file(temp);
    }
}

/// Answers `error` to a job that fails at a step, its temporary file removed.
fn fail(folders: &Folders, InFlight { job, temp }: InFlight, error: StorageError) {
    remove_temp(folders, &job, &temp);
    let _ = job.answer.send(Err(error));
}

/// A failed sync fails every write from now on (`syncs.rs`): every job of the batch still in flight.
fn fail_all(folders: &Folders, flying: Vec<InFlight>, failure: &Failure) -> Vec<InFlight> {
    for one in flying {
        fail(folders, one, sync_failed(failure.clone()));
    }
    Vec::new()
}

/// Links each job's temporary file to the key `key` picks, then syncs each folder that got a name: answers
/// the jobs that got theirs durably (a taken name is [`StorageError::AlreadyExists`] for its job alone).
fn link_all(
    root: &Folder,
    syncs: &FolderSyncs,
    folders: &mut Folders,
    flying: Vec<InFlight>,
    key: impl Fn(&Allocation) -> &String,
) -> Vec<InFlight> {
    let mut linked = Vec::with_capacity(flying.len());
    let mut touched: Vec<String> = Vec::new();
    for one in flying {
        let key = key(&one.job.work).clone();
        let (dir, name) = split(&key);
        if let Err(error) = folders.open(root, dir, syncs) {
            fail(folders, one, error);
            continue;
        }
        let (Some(from), Some(to)) = (folders.get(split(&one.job.work.first).0), folders.get(dir)) else {
            // Both were opened above (the first by the temporary file's write).
            let missing = failed("linking", root.path().join(&key), io::ErrorKind::NotFound.into());
            fail(folders, one, missing);
            continue;
        };
        match from.link(&one.temp, to, name) {
            Ok(()) => {
                if !touched.iter().any(|folder| folder == dir) {
                    touched.push(dir.to_owned());
                }
                linked.push(one);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fail(folders, one, StorageError::AlreadyExists { key: key.clone() });
            }
            Err(e) => {
                let error = failed("linking", to.path().join(name), e);
                fail(folders, one, error);
            }
        }
    }
    for dir in touched {
        let Some(folder) = folders.get(&dir) else { continue };
        if let Err(failure) = syncs.sync(folder.path(), |_| folder.sync()) {
            return fail_all(folders, linked, &failure);
        }
    }
    linked
}

/// Makes each job's sink (a folder below the root, left as it is if there already), then syncs the root:
/// answers the jobs whose sink is durable.
fn make_sinks(
    root: &Folder,
    syncs: &FolderSyncs,
    sinks: SinkConfig,
    folders: &Folders,
    flying: Vec<InFlight>,
) -> Vec<InFlight> {
    let mut made = Vec::with_capacity(flying.len());
    for one in flying {
        let name = one.job.work.sink.as_str();
        let path = root.path().join(name);
        let outcome = match make_sink(root, name, sinks) {
            Ok(true) => Ok(()),
            // There already: a folder will do, made by an earlier try or a concurrent call (maybe not durable
            // yet: the root's sync below covers it too).
            Ok(false) => match root.folder(name) {
                Ok(_) => Ok(()),
                Err(Unreachable::Missing) => Err(failed("creating folder", &path, io::ErrorKind::NotFound.into())),
                Err(Unreachable::Other(what)) => Err(failed(
                    "creating folder",
                    &path,
                    io::Error::other(format!("{what} is where a folder should be")),
                )),
                Err(Unreachable::Failed(e)) => Err(failed("creating folder", &path, e)),
            },
            Err(e) => Err(failed("creating folder", &path, e)),
        };
        match outcome {
            Ok(()) => made.push(one),
            Err(error) => fail(folders, one, error),
        }
    }
    if made.is_empty() {
        return made;
    }
    if let Err(failure) = syncs.sync(root.path(), |_| root.sync()) {
        return fail_all(folders, made, &failure);
    }
    made
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue is consistent between statements: a panic elsewhere leaves it usable.
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
