//! The pruner: deletes expired results and abandons allocations past their commit deadline.
//!
//! Its cost grows with the work due, not with the results stored: it reads the pending allocations (the
//! results whose outcome it has not seen yet: those in flight) and the due part of the expiry index, whose
//! keys sort by time, and nothing else. Several pruners over one storage may run at once: every step is
//! create-only or idempotent, so each result is deleted once and none of them fails.

use std::time::SystemTime;

use tracing::{info, warn};

use super::{Error, Results, State};
use crate::{
    layout,
    model::{Outcome, ResultId},
    storage::{Backend, StorageError},
};

/// What one pruning pass did, or (dry run) would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Results deleted (by this pass: a result another pruner deleted first is not counted).
    pub expired: Vec<ResultId>,
    /// Allocations abandoned: not committed by their commit deadline.
    pub abandoned: Vec<ResultId>,
    /// Sealed results whose expiry was written to the index.
    pub scheduled: usize,
    /// Expiry-index entries read.
    pub entries_read: usize,
}

impl<B: Backend> Results<B> {
    /// One pruning pass at the clock's current time. With `dry_run`, nothing is written or deleted: the report
    /// says what would be.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport, Error> {
        let now = self.now();
        let mut report = PruneReport::default();
        for key in self.storage.list_keys(layout::PENDING, None).await? {
            let Some(id) = layout::pending_id(&key) else { continue };
            self.prune_pending(&id, &key, now, dry_run, &mut report).await?;
        }
        let due = self.storage.list_keys(layout::EXPIRY, Some(&layout::expiry_bound(now))).await?;
        report.entries_read = due.len();
        for key in due {
            let Some((_, id)) = layout::parse_expiry_entry(&key) else { continue };
            self.prune_due(&id, &key, now, dry_run, &mut report).await?;
        }
        if !dry_run && (!report.expired.is_empty() || !report.abandoned.is_empty()) {
            info!(expired = report.expired.len(), abandoned = report.abandoned.len(), "pruned");
        }
        Ok(report)
    }

    /// A pending allocation: abandoned past its deadline; once sealed, moved to the expiry index.
    async fn prune_pending(
        &self,
        id: &ResultId,
        key: &str,
        now: SystemTime,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        let mut state = self.state(id, true).await?;
        if let State::Allocated(allocation) = &state {
            if now <= allocation.commit_deadline {
                return Ok(());
            }
            report.abandoned.push(id.clone());
            if dry_run {
                return Ok(());
            }
            let reason = "abandoned: not committed before its commit_deadline";
            match self.seal_aborted(allocation.info.clone(), reason).await {
                // Committed at the last moment, by another process: the next state says so.
                Ok(_) | Err(Error::AlreadyCommitted { .. }) => {}
                Err(e) => return Err(e),
            }
            state = self.state(id, true).await?;
        }
        if dry_run {
            return Ok(());
        }
        match state {
            State::Sealed(sealed) => {
                if let Some(at) = sealed.expires_at {
                    self.schedule(id, at).await?;
                    report.scheduled += 1;
                }
            }
            State::Deleting(tombstone) => {
                self.delete_result(&tombstone.info, &tombstone.reason).await?;
            }
            State::Allocated(_) | State::Unknown => {}
        }
        self.storage.delete_keys(vec![key.to_owned()]).await?;
        Ok(())
    }

    /// A due expiry-index entry: the result goes, unless renewed meanwhile (then it is scheduled again).
    async fn prune_due(
        &self,
        id: &ResultId,
        key: &str,
        now: SystemTime,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        match self.state(id, true).await? {
            State::Sealed(sealed) => match sealed.expires_at {
                Some(at) if at <= now => {
                    if dry_run {
                        report.expired.push(id.clone());
                        return Ok(());
                    }
                    let reason = match sealed.outcome.as_ref() {
                        Outcome::Committed(_) => "expired",
                        Outcome::Aborted(_) => "aborted result expired",
                    };
                    if self.delete_result(sealed.outcome.info(), reason).await? {
                        report.expired.push(id.clone());
                    }
                }
                Some(at) if !dry_run => self.schedule(id, at).await?,
                _ => {}
            },
            State::Deleting(tombstone) if !dry_run => {
                self.delete_result(&tombstone.info, &tombstone.reason).await?;
            }
            State::Allocated(_) => warn!(result_id = %id, "an allocated result in the expiry index; left alone"),
            _ => {}
        }
        if !dry_run {
            self.storage.delete_keys(vec![key.to_owned()]).await?;
        }
        Ok(())
    }

    /// Writes the expiry-index entry of `id` at `at` (create-only; one already there is fine).
    async fn schedule(&self, id: &ResultId, at: SystemTime) -> Result<(), Error> {
        match self.storage.put_create(&layout::expiry_entry(at, id), Vec::new()).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
