//! The sweep: what crashes left in the control folders that nothing else comes back to.
//!
//! - Temporary files of create-only writes (the local backend's `.anonymous-results-tmp-*`, an object store's
//!   start-up probes `_control/probe-*`) that a crash cut short, older than twice `storage_timeout` (no write
//!   in progress is that old: its call timed out). Removing one may empty a released result's records
//!   folder, which then goes too.
//! - Claims (query records) older than `commit_timeout` whose result has no pending record and no records
//!   folder: what an Allocate of an older release, which wrote the claim first, left when it crashed before
//!   its pending record. Its sink goes with it. This release writes the pending record first, so its crashes
//!   leave pending records, which the pruner abandons.
//! - Result-index folders older than `commit_timeout` whose result has no pending record and no records
//!   folder: what an Allocate whose allocation failed (or a crash) left beside it.
//! - Tombstones older than [`DELETION_TIMEOUT`]: a deletion begun and cut short whose expiry-index entry,
//!   written at the same time as the tombstone, was lost with a crash; the sweep finishes it.
//!
//! Each pass reads one page of [`SWEEP_PAGE`] keys of the control folders, in key order, from where the last
//! one stopped (the cursor is kept between passes, and starts over at the end), so that a pass costs the same
//! whatever the store holds, and the pruner's promise (its cost grows with the work due) stays its own. A key
//! that cannot be handled is logged and left for the next round.

use futures::{StreamExt, stream};
use tracing::{info, warn};

use super::{
    Error, Results,
    lifecycle::{DELETION_TIMEOUT, Deletion},
};
use crate::{
    layout,
    model::{Allocation, ResultId, Timestamp, Tombstone},
    storage::{Backend, Listing, StoredKey},
    telemetry::Escaped,
};

/// How many keys one sweep pass reads.
pub const SWEEP_PAGE: usize = 10_000;
/// How many keys a pass handles at once.
const SWEEP_CONCURRENCY: usize = 32;

/// What one sweep pass did, or (dry run) would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Temporary files removed, by key.
    pub temporaries: Vec<String>,
    /// Claims without an allocation removed (with their sinks), by key and the result they named.
    pub orphan_claims: Vec<(String, ResultId)>,
    /// Deletions cut short that this pass finished (or, dry run, would), by result.
    pub deletions: Vec<ResultId>,
    /// Result-index folders of no result that this pass removed (or, dry run, would), by result.
    pub stray_index: Vec<ResultId>,
    /// Keys read.
    pub keys_read: usize,
    /// Keys this pass could not handle (each logged); the next round tries them again.
    pub failed: usize,
    /// Claims whose record cannot be interpreted (each logged once, and counted in the metrics): left alone.
    pub corrupt: usize,
    /// Where the next pass starts reading; `None` once this one reached the end.
    pub next: Option<String>,
}

/// What handling one key did.
enum Swept {
    Nothing,
    Temporary(String),
    OrphanClaim(String, ResultId),
    Deletion(ResultId),
    StrayIndex(ResultId),
}

impl<B: Backend> Results<B> {
    /// One sweep pass at the clock's current time, from where the last one stopped. With `dry_run`, nothing
    /// is removed (and the cursor stays): the report says what would be. Fails only if storage cannot be
    /// listed.
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepReport, Error> {
        let after = self.sweep_cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let report = self.sweep_page(after.as_deref(), dry_run).await?;
        if !dry_run {
            *self.sweep_cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = report.next.clone();
        }
        Ok(report)
    }

    /// One sweep pass over the page of keys after `after` (from the start: `None`).
    pub async fn sweep_page(&self, after: Option<&str>, dry_run: bool) -> Result<SweepReport, Error> {
        let now = self.now();
        let prefix = format!("{}/", layout::CONTROL);
        let range = Listing { after, limit: Some(SWEEP_PAGE), ..Listing::ALL };
        let keys = self.storage.list_stored(&prefix, range).await?;
        let mut report = SweepReport {
            keys_read: keys.len(),
            next: keys.last().filter(|_| keys.len() >= SWEEP_PAGE).map(|key| key.key.clone()),
            ..SweepReport::default()
        };
        let handled = stream::iter(keys)
            .map(|key| async move {
                let outcome = self.sweep_key(&key, now, dry_run).await;
                (key.key, outcome)
            })
            .buffer_unordered(SWEEP_CONCURRENCY);
        let mut handled = std::pin::pin!(handled);
        while let Some((key, outcome)) = handled.next().await {
            match outcome {
                Ok(Swept::Nothing) => {}
                Ok(Swept::Temporary(key)) => report.temporaries.push(key),
                Ok(Swept::OrphanClaim(key, id)) => report.orphan_claims.push((key, id)),
                Ok(Swept::Deletion(id)) => report.deletions.push(id),
                Ok(Swept::StrayIndex(id)) => report.stray_index.push(id),
                Err(e @ Error::CorruptRecord { .. }) => {
                    if self.corrupt.note_key(&key) {
                        self.metrics.corrupt_record();
                        let error = e.detail();
                        warn!("sweep: leaving alone a record that cannot be interpreted: {}", Escaped(&error));
                    }
                    report.corrupt += 1;
                }
                Err(e) => {
                    let error = e.detail();
                    warn!(key = %Escaped(&key), "sweep: cannot handle this key now; the next round tries again: {}", Escaped(&error));
                    report.failed += 1;
                }
            }
        }
        report.temporaries.sort();
        report.orphan_claims.sort();
        report.deletions.sort();
        report.stray_index.sort();
        let swept = report.temporaries.len() + report.orphan_claims.len() + report.deletions.len();
        if !dry_run && swept > 0 {
            self.metrics.swept(report.temporaries.len(), report.orphan_claims.len(), report.deletions.len());
            info!(
                temporaries = report.temporaries.len(),
                orphan_claims = report.orphan_claims.len(),
                deletions = report.deletions.len(),
                failed = report.failed,
                "swept what crashes left"
            );
        }
        Ok(report)
    }

    async fn sweep_key(&self, key: &StoredKey, now: Timestamp, dry_run: bool) -> Result<Swept, Error> {
        let age = |grace| key.modified.is_some_and(|at| Timestamp::clamped(at).saturating_add(grace) < now);
        if key.temporary {
            if !age(self.storage_timeout.saturating_mul(2)) {
                return Ok(Swept::Nothing);
            }
            if !dry_run {
                self.storage.delete_keys(vec![key.key.clone()]).await?;
            }
            return Ok(Swept::Temporary(key.key.clone()));
        }
        if key.key.ends_with(layout::TOMBSTONE) && key.key.starts_with(layout::RESULTS) {
            return self.sweep_tombstone(&key.key, age(DELETION_TIMEOUT), dry_run).await;
        }
        if let Some((created, id, layout::IndexEntry::Allocated)) = layout::parse_index_key(&key.key) {
            return match created.saturating_add(self.retention.commit_timeout) < now {
                true => self.sweep_index(created, id, dry_run).await,
                false => Ok(Swept::Nothing),
            };
        }
        if !key.key.starts_with(layout::QUERIES) || !age(self.retention.commit_timeout) {
            return Ok(Swept::Nothing);
        }
        let Some(claim) = self.read::<Allocation>(&key.key).await? else { return Ok(Swept::Nothing) };
        let id = claim.info.result_id;
        if self.exists(&id).await? {
            return Ok(Swept::Nothing);
        }
        if !dry_run {
            // The sink first: a crash between the two leaves the claim, and the next round finishes.
            self.storage.delete_sink(&id).await?;
            self.storage.delete_keys(vec![key.key.clone()]).await?;
        }
        Ok(Swept::OrphanClaim(key.key.clone(), id))
    }

    /// The index folder of result `id`, created at `created` (longer ago than `commit_timeout`): removed if
    /// its result has neither a pending record nor a records folder (it was never allocated, or is gone).
    async fn sweep_index(&self, created: Timestamp, id: ResultId, dry_run: bool) -> Result<Swept, Error> {
        if self.exists(&id).await? {
            return Ok(Swept::Nothing);
        }
        if !dry_run {
            self.storage.delete_keys(self.index_keys(created, &id).await?).await?;
            self.journal(created, &id).await?;
        }
        Ok(Swept::StrayIndex(id))
    }

    /// Whether result `id` has a records folder or a pending record.
    async fn exists(&self, id: &ResultId) -> Result<bool, Error> {
        let records = self.storage.list_keys(&layout::records(id), Listing { limit: Some(1), ..Listing::ALL }).await?;
        Ok(!records.is_empty() || self.read::<Allocation>(&layout::pending(id)).await?.is_some())
    }

    /// A tombstone at `key`: once `old` (past [`DELETION_TIMEOUT`]), its deletion was cut short, and is
    /// finished here.
    async fn sweep_tombstone(&self, key: &str, old: bool, dry_run: bool) -> Result<Swept, Error> {
        if !old {
            return Ok(Swept::Nothing);
        }
        let Some(tombstone) = self.read::<Tombstone>(key).await? else { return Ok(Swept::Nothing) };
        let id = tombstone.info.result_id.clone();
        if dry_run {
            return Ok(Swept::Deletion(id));
        }
        match self.delete_result(&tombstone.info, &tombstone.reason, false).await? {
            Deletion::Held => Ok(Swept::Nothing),
            Deletion::Done | Deletion::Gone => Ok(Swept::Deletion(id)),
        }
    }
}
