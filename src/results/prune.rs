//! The pruner: deletes expired results and abandons allocations past their commit deadline.
//!
//! Its cost grows with the work due, not with the results stored: it reads the pending allocations (the
//! results whose outcome it has not seen yet: those in flight) and the due part of the expiry index, whose
//! keys sort by time, and nothing else. A pass takes at most [`PASS_LIMIT`] of each, so that its time and
//! memory stay bounded when it has fallen behind (the next pass follows at once, where this one stopped: see
//! [`PruneReport::more`] and [`PruneCursor`]); a result whose records cannot be interpreted is logged, counted
//! and skipped; it handles up to [`PRUNE_CONCURRENCY`] results at once and removes the index
//! entries it is done with in batched deletes. Several pruners over one storage may run at once: every step
//! is create-only or idempotent, so each result is deleted and none of them fails (two at an expired result
//! at the same moment may both delete it, and both count it).
//!
//! An expired result goes in few requests, at the store's speed: its state (one listing of its records, the
//! outcome read unless cached), its query record's read and one listing of its sink; then, [`DELETE_BATCH`]
//! expired results at a time as the pass finds them, the files and every record but the outcome of the batch
//! go in batch deletes (1,000 keys a request on S3), their outcomes in others after that, and their index
//! entries last. It needs no tombstone (see `Results::expired_records`): a pass cut short leaves outcomes and
//! their entries, and the next one finishes them.

use std::collections::HashSet;

use futures::{StreamExt, stream};
use tracing::{info, warn};

use super::{Error, Results, State, lifecycle::Deletion};
use crate::{
    layout,
    model::{Outcome, ResultId, Timestamp},
    storage::{Backend, Listing, StorageError},
    telemetry::Escaped,
};

/// How many results one pass handles at once: a deletion mostly waits (on a store far away, or on a disk
/// that trims each freed block), so many go at once.
pub const PRUNE_CONCURRENCY: usize = 256;
/// How many expired results a pass deletes together (their files and records, then their outcomes, then
/// their index entries: a few batch deletes on an object store), as soon as its steps have found that many.
pub const DELETE_BATCH: usize = 256;
/// How many batches of [`DELETE_BATCH`] a pass deletes at once; its steps wait while that many are going.
pub const DELETING: usize = 4;
/// The most pending allocations, and the most due index entries, one pass reads.
pub const PASS_LIMIT: usize = 5_000;

/// What one pruning pass did, or (dry run) would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Results deleted (by this pass: a result another pruner deleted first is not counted, but two pruners
    /// deleting one at the same moment both count it), or that a dry run would delete.
    pub expired: Vec<ResultId>,
    /// Allocations abandoned: not committed by their commit deadline. Their files go at once; their record
    /// (state ABORTED) stays `commit_timeout` longer.
    pub abandoned: Vec<ResultId>,
    /// Sealed results whose expiry was written to the index.
    pub scheduled: usize,
    /// Expiry-index entries read.
    pub entries_read: usize,
    /// Results this pass could not handle (each logged); the next pass tries them again.
    pub failed: usize,
    /// Results whose records this pass could not interpret (each logged once, and counted in the metrics):
    /// skipped, so that they hold up no other.
    pub corrupt: usize,
    /// Change-journal entries deleted (older than [`JOURNAL_KEPT`]), or that a dry run would delete.
    pub journal: usize,
    /// Whether this pass stopped at [`PASS_LIMIT`] with more work left: the next should follow at once.
    pub more: bool,
}

/// How long the change journal keeps an entry: every replica reads it within its usage interval, and one
/// that has not read the journal for this long reads the whole result index again.
pub const JOURNAL_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where the next pass starts reading each folder: after the last key of a pass that stopped at
/// [`PASS_LIMIT`], so that entries which stay (allocations not due, results that cannot be handled now)
/// never keep a pass from the ones after them. A pass that reads a folder to its end starts over.
#[derive(Debug, Default)]
pub(super) struct PruneCursor {
    pending: Option<String>,
    due: Option<String>,
}

impl PruneReport {
    fn add(&mut self, other: PruneReport) {
        self.expired.extend(other.expired);
        self.abandoned.extend(other.abandoned);
        self.scheduled += other.scheduled;
        self.entries_read += other.entries_read;
        self.failed += other.failed;
        self.corrupt += other.corrupt;
        self.more |= other.more;
    }
}

/// What handling one index or pending entry did; `done` says whether its key can be removed (once `expired`,
/// if any, is deleted).
#[derive(Default)]
struct Step {
    report: PruneReport,
    done: bool,
    expired: Option<Expired>,
}

/// An expired result that a pass deletes with the others: its files and `records` in batch deletes, then its
/// outcome with the other outcomes, then its index entry with the others.
struct Expired {
    id: ResultId,
    /// When it was created: where its index folder is.
    created: Timestamp,
    query_id: String,
    reason: &'static str,
    records: Vec<String>,
}

impl<B: Backend> Results<B> {
    /// One pruning pass at the clock's current time. With `dry_run`, nothing is written or deleted: the report
    /// says what would be. Fails only if storage cannot be listed; a result that cannot be handled is logged,
    /// counted in [`PruneReport::failed`] and left for the next pass.
    ///
    /// A real pass is counted in the metrics: when it ended, how long it took and the due entries it found,
    /// or that it failed.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, Error> {
        let started = std::time::Instant::now();
        let pass = self.prune_pass(dry_run).await;
        if !dry_run {
            match &pass {
                Ok(report) => {
                    self.metrics.prune_pass(self.now().millis() / 1000, started.elapsed(), report.entries_read)
                }
                Err(_) => self.metrics.prune_failed(),
            }
        }
        pass
    }

    async fn prune_pass(&self, dry_run: bool) -> Result<PruneReport, Error> {
        let now = self.now();
        let mut report = PruneReport::default();
        let (after_pending, after_due) = {
            let cursor = self.prune_cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (cursor.pending.clone(), cursor.due.clone())
        };
        let range = Listing { after: after_pending.as_deref(), limit: Some(PASS_LIMIT), ..Listing::ALL };
        let pending = self.storage.list_keys(layout::PENDING, range).await?;
        let next_pending = pending.last().filter(|_| pending.len() >= PASS_LIMIT).cloned();
        let pending = pending.into_iter().filter_map(|key| Some((layout::pending_id(&key)?, key)));
        self.handle_all(pending, dry_run, &mut report, |id| self.prune_pending(id, now, dry_run)).await?;

        let bound = layout::expiry_bound(now);
        let range = Listing { after: after_due.as_deref(), until: Some(&bound), limit: Some(PASS_LIMIT) };
        let due = self.storage.list_keys(layout::EXPIRY, range).await?;
        report.entries_read = due.len();
        let next_due = due.last().filter(|_| due.len() >= PASS_LIMIT).cloned();
        let due = due.into_iter().filter_map(|key| Some((layout::parse_expiry_entry(&key)?.1, key)));
        self.handle_all(due, dry_run, &mut report, |id| self.prune_due(id, now, dry_run)).await?;

        // The change journal's entries older than it keeps them: the oldest first, a bounded batch a pass.
        let bound = layout::changes_bound(now.saturating_sub(JOURNAL_KEPT));
        let old = self
            .storage
            .list_keys(layout::CHANGES, Listing { until: Some(&bound), limit: Some(PASS_LIMIT), ..Listing::ALL })
            .await?;
        report.journal = old.len();
        let more_journal = old.len() >= PASS_LIMIT;
        if !dry_run && !old.is_empty() {
            self.storage.delete_keys(old).await?;
        }

        report.more = next_pending.is_some() || next_due.is_some() || more_journal;
        if !dry_run {
            *self.prune_cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                PruneCursor { pending: next_pending, due: next_due };
        }

        if dry_run {
            // A result seen both pending and in the index (a pass cut short between the two) is listed once.
            report.expired.sort();
            report.expired.dedup();
        } else if !report.expired.is_empty() || !report.abandoned.is_empty() || report.failed + report.corrupt > 0 {
            self.metrics.pruned(report.expired.len(), report.abandoned.len());
            info!(
                expired = report.expired.len(),
                abandoned = report.abandoned.len(),
                failed = report.failed,
                corrupt = report.corrupt,
                "pruned"
            );
        }
        Ok(report)
    }

    /// Runs `step` on each `(id, key)`, [`PRUNE_CONCURRENCY`] at once, adding what it did to `report`. The
    /// expired results go as the steps find them, [`DELETE_BATCH`] at a time (at most [`DELETING`] batches at
    /// once, the steps waiting meanwhile), each batch with its index entries; the keys of the other entries
    /// that are done go last, in one batch.
    async fn handle_all<'a, F, Fut>(
        &'a self,
        entries: impl Iterator<Item = (ResultId, String)>,
        dry_run: bool,
        report: &mut PruneReport,
        step: F,
    ) -> Result<(), Error>
    where
        F: Fn(ResultId) -> Fut,
        Fut: Future<Output = Result<Step, Error>> + 'a,
    {
        let steps = stream::iter(entries)
            .map(|(id, key)| {
                let run = step(id.clone());
                async move { (id, key, run.await) }
            })
            .buffer_unordered(PRUNE_CONCURRENCY);
        let mut steps = std::pin::pin!(steps);
        let (mut finished, mut expired) = (Vec::new(), Vec::new());
        let mut deleting = stream::FuturesUnordered::new();
        let mut stepped = false;
        loop {
            if expired.len() >= DELETE_BATCH || (stepped && !expired.is_empty()) {
                deleting.push(self.delete_batch(std::mem::take(&mut expired)));
            }
            if stepped && deleting.is_empty() {
                break;
            }
            tokio::select! {
                next = steps.next(), if !stepped && deleting.len() < DELETING => match next {
                    Some((_, key, Ok(step))) => {
                        report.add(step.report);
                        match step.expired {
                            Some(result) if step.done && !dry_run => expired.push((result, key)),
                            _ if step.done => finished.push(key),
                            _ => {}
                        }
                    }
                    Some((id, _, Err(e))) => self.step_failed(&id, e, report),
                    None => stepped = true,
                },
                Some(batch) = deleting.next() => {
                    if let Err((ids, e)) = batch {
                        // Their entries stay, for the next pass to delete them again; the pass's others go on.
                        let error = e.detail();
                        warn!(results = ids.len(), "pruning: cannot delete expired results now; the next pass tries again: {}", Escaped(&error));
                        report.expired.retain(|id| !ids.contains(id));
                        report.failed += ids.len();
                    }
                }
            }
        }
        if !dry_run && !finished.is_empty() {
            self.storage.delete_keys(finished).await?;
        }
        Ok(())
    }

    /// Logs and counts a result a step could not handle: the pass goes on without it.
    fn step_failed(&self, id: &ResultId, e: Error, report: &mut PruneReport) {
        match e {
            e @ Error::CorruptRecord { .. } => {
                if self.corrupt.note(id) {
                    self.metrics.corrupt_record();
                    let error = e.detail();
                    warn!(result_id = %id, "pruning: skipping this result, whose record cannot be interpreted: {}", Escaped(&error));
                }
                report.corrupt += 1;
            }
            e => {
                let error = e.detail();
                warn!(result_id = %id, "pruning: cannot handle this result now; the next pass tries again: {}", Escaped(&error));
                report.failed += 1;
            }
        }
    }

    /// Deletes a batch of expired results: their files and every record but the outcomes in batch deletes,
    /// then the outcomes in others, then their index entries (each entry outlives what it brings the pruner
    /// back to). On failure, answers the results, whose entries are left for the next pass.
    async fn delete_batch(&self, batch: Vec<(Expired, String)>) -> Result<(), (HashSet<ResultId>, Error)> {
        let (mut deletions, mut outcomes, mut entries, mut logged) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut gone = Vec::new();
        for (Expired { id, created, query_id, reason, records }, entry) in batch {
            gone.push((created, id.clone()));
            outcomes.push(layout::outcome(&id));
            entries.push(entry);
            deletions.push((id.clone(), records));
            logged.push((id, query_id, reason));
        }
        let deleted = async {
            self.storage.delete_results(deletions).await?;
            self.storage.delete_keys(outcomes).await?;
            self.storage.delete_keys(entries).await?;
            // Their index folders went with their records: one journal entry says so of the batch.
            self.journal_batch(&gone).await
        };
        if let Err(e) = deleted.await {
            return Err((logged.into_iter().map(|(id, ..)| id).collect(), e));
        }
        self.usage.ledger().forget(gone);
        for (id, query_id, reason) in logged {
            info!(result_id = %id, query_id = %Escaped(&query_id), reason, "deleted");
        }
        Ok(())
    }

    /// A pending allocation: abandoned past its deadline; once sealed, moved to the expiry index.
    async fn prune_pending(&self, id: ResultId, now: Timestamp, dry_run: bool) -> Result<Step, Error> {
        let id = &id;
        let mut report = PruneReport::default();
        let mut state = self.state(id, true).await?;
        if let State::Allocated(allocation) = &state {
            if now <= allocation.commit_deadline {
                return Ok(Step { report, ..Step::default() });
            }
            if dry_run {
                report.abandoned.push(id.clone());
                return Ok(Step { report, ..Step::default() });
            }
            let reason = "abandoned: not committed before its commit_deadline";
            match self.seal_aborted(allocation.info.clone(), reason).await {
                Ok((_, true)) => {
                    report.abandoned.push(id.clone());
                    if let Err(e) = self.storage.delete_sink(id).await {
                        let error = e.detail();
                        warn!(result_id = %id, "the files of an abandoned result stay until its record goes: {}", Escaped(&error));
                    }
                }
                // Abandoned by another pruner, or committed at the last moment: the next state says so.
                Ok((_, false)) | Err(Error::AlreadyCommitted { .. }) => {}
                Err(e) => return Err(e),
            }
            state = self.state(id, true).await?;
        }
        match state {
            // Its seal's entry in the result index, written after the seal's answer, is written here if a crash
            // left it out (an entry already there is fine), with its expiry-index entry.
            State::Sealed(sealed) if !dry_run => {
                let scheduled = async {
                    match sealed.expires_at {
                        Some(at) => self.schedule(id, at).await.map(|()| 1),
                        None => Ok(0),
                    }
                };
                let (indexed, scheduled) = futures::join!(self.index_sealed_if_missing(&sealed.outcome), scheduled);
                indexed?;
                report.scheduled += scheduled?;
            }
            // Not in the expiry index yet: a real pass schedules it now and deletes it below, with the due entries.
            // A dry pass only reports it, and only if it is due.
            State::Sealed(sealed) => {
                report.expired.extend(sealed.expires_at.filter(|at| *at <= now).map(|_| id.clone()))
            }
            State::Deleting(tombstone) if !dry_run => {
                self.delete_result(&tombstone.info, &tombstone.reason, true).await?;
            }
            State::Allocated(_) | State::Deleting(_) | State::Unknown => {}
        }
        Ok(Step { report, done: true, expired: None })
    }

    /// A due expiry-index entry: the result goes, unless renewed meanwhile (then it is scheduled again).
    async fn prune_due(&self, id: ResultId, now: Timestamp, dry_run: bool) -> Result<Step, Error> {
        let id = &id;
        let mut report = PruneReport::default();
        // A due result is sealed: its pending record is read only if the listing says otherwise.
        let (state, records) = self.read_state(id, true, false).await?;
        match state {
            State::Sealed(sealed) => match sealed.expires_at {
                Some(at) if at <= now => {
                    if dry_run {
                        report.expired.push(id.clone());
                        return Ok(Step { report, ..Step::default() });
                    }
                    // This entry stays until the deletion is over (its outcome, the last of it, is deleted
                    // before the entry): it is how the pruner comes back to one cut short.
                    let reason = match sealed.outcome.as_ref() {
                        Outcome::Committed(_) => "expired",
                        Outcome::Aborted(_) => "aborted result expired",
                    };
                    let info = sealed.outcome.info();
                    let records = self.expired_records(&sealed.outcome, records).await?;
                    let query_id = info.query_id.clone();
                    report.expired.push(id.clone());
                    let created = info.created_at;
                    let expired = Expired { id: id.clone(), created, query_id, reason, records };
                    return Ok(Step { report, done: true, expired: Some(expired) });
                }
                Some(at) if !dry_run => self.schedule(id, at).await?,
                _ => {}
            },
            State::Deleting(tombstone) if !dry_run => {
                if self.delete_result(&tombstone.info, &tombstone.reason, false).await? == Deletion::Held {
                    return Ok(Step { report, ..Step::default() });
                }
            }
            State::Allocated(_) => warn!(result_id = %id, "an allocated result in the expiry index; left alone"),
            State::Deleting(_) | State::Unknown => {}
        }
        Ok(Step { report, done: true, expired: None })
    }

    /// Writes the expiry-index entry of `id` at `at` (create-only; one already there is fine).
    pub(super) async fn schedule(&self, id: &ResultId, at: Timestamp) -> Result<(), Error> {
        match self.storage.put_create(&layout::expiry_entry(at, id), Vec::new()).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
