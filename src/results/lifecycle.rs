//! Abort, Release, Renew, and the deletion of a result that they and the pruner share.

use std::time::Duration;

use tracing::{info, warn};

use super::{Error, Results, State, encode};
use crate::{
    layout::{self, IndexEntry},
    model::{
        Aborted, Allocation, InvalidArgument, Outcome, ResultId, ResultInfo, ResultState, ResultStatus, Tombstone,
    },
    storage::{Backend, Listing, StorageError},
    telemetry::Escaped,
};

/// A renewal record: its name says everything (the new expiry); the record holds only its format.
#[derive(serde::Serialize)]
struct Renewal {}

/// How long a deletion may take. A tombstone older than this belongs to a deletion cut short (a crash), which
/// the next caller finishes; a younger one to a deletion in progress, which others leave alone.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(600);

/// How many deletions run in the background at once (each one request at a time): a flood of Releases queues
/// its deletions behind these, costing memory for each queued one's record (a few hundred bytes) and no
/// storage request until its turn.
pub const BACKGROUND_DELETIONS: usize = 64;

/// How a deletion began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Begun {
    /// This caller wrote the tombstone: the deletion is its to finish.
    Deleting,
    /// A deletion cut short (its tombstone older than [`DELETION_TIMEOUT`]): this caller finishes it.
    TakenOver,
    /// Another caller is deleting it.
    Held,
    /// Nothing is left.
    Gone,
}

/// Whether a deletion ends with its tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tombstones {
    /// It does: nothing may be written into the result any more (the pruner's deletions: of results sealed
    /// long ago, or whose tombstone is older than [`DELETION_TIMEOUT`]).
    Delete,
    /// The tombstone stays until the pruner comes back to it, [`DELETION_TIMEOUT`] after it was written (its
    /// revisit entry). A Release's deletion runs right after the answer, while a worker's Commit (or Abort)
    /// may still be in flight: a Commit reads the pending record and the tombstone at once, and one that read
    /// the pending record before the deletion removed it must find the tombstone, however late its other read
    /// is served. So a released result reads EXPIRED until then, NOT_FOUND after.
    Keep,
}

/// What [`Results::delete_result`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deletion {
    /// This call deleted the result.
    Done,
    /// Nothing is left: another caller deleted it (or finished a deletion cut short).
    Gone,
    /// Another caller is deleting it (its tombstone is younger than [`DELETION_TIMEOUT`]).
    Held,
}

impl<B: Backend> Results<B> {
    /// Seals an allocated result as aborted with `reason` and deletes its files. A worker presents its
    /// `commit_token`; the scheduler may give none. Aborting an aborted result answers its status again;
    /// aborting a committed one fails with [`Error::AlreadyCommitted`].
    pub async fn abort(&self, id: &ResultId, commit_token: &str, reason: &str) -> Result<ResultStatus, Error> {
        if !commit_token.is_empty() && !self.tokens.verify(id, commit_token) {
            return Err(Error::CommitTokenMismatch { result_id: id.clone() });
        }
        // On the replica that allocated it, the allocation is known: the outcome's create-only write finds
        // whatever happened since.
        let allocation = match self.allocations.get(id) {
            Some(allocation) => allocation,
            None => match self.state(id, true).await? {
                State::Allocated(allocation) => allocation,
                State::Sealed(sealed) => return self.abort_sealed(id, &sealed.outcome),
                State::Unknown | State::Deleting(_) => return Err(Error::NotFound { result_id: id.clone() }),
            },
        };
        let reason = if reason.is_empty() { "aborted without a reason" } else { reason };
        let (status, sealed_now) = self.seal_aborted(allocation.info, reason).await?;
        if sealed_now {
            self.metrics.aborted();
            self.delete_sink_in_background(id.clone());
        }
        Ok(status)
    }

    /// Writes the aborted outcome of `info`'s result, create-only; its files are the caller's to delete (Abort
    /// after its answer, the pruner in its pass). Also the pruner's way to abandon an allocation past its
    /// deadline. Says whether this call sealed it (of racing aborts, one does). The result's tombstone is read
    /// at the same time: an outcome written into a result being deleted is taken back, and the result is
    /// NOT_FOUND. One round trip.
    pub(super) async fn seal_aborted(&self, info: ResultInfo, reason: &str) -> Result<(ResultStatus, bool), Error> {
        let id = info.result_id.clone();
        let outcome = Outcome::Aborted(Aborted { info, aborted_at: self.now(), reason: reason.to_owned() });
        let (key, tombstone) = (layout::outcome(&id), layout::tombstone(&id));
        let record = encode(&key, &outcome)?;
        let (written, deleting) =
            futures::join!(self.storage.put_create(&key, record), self.read::<Tombstone>(&tombstone));
        if deleting?.is_some() {
            self.allocations.remove(&id);
            if written.is_ok() {
                self.storage.delete_keys(vec![key]).await?;
            }
            return Err(Error::NotFound { result_id: id });
        }
        self.allocations.remove(&id);
        match written {
            Ok(()) => {}
            Err(StorageError::AlreadyExists { .. }) => {
                let existing: Outcome = self.read_existing(&key).await?;
                return self.abort_sealed(&id, &existing).map(|status| (status, false));
            }
            Err(e) => return Err(e.into()),
        }
        info!(result_id = %id, reason = %Escaped(reason), "aborted");
        self.note_usage(outcome.info(), Some(ResultState::Aborted), 0);
        let sealed = self.seal(&id, outcome, Vec::new());
        self.index_sealed_in_background(sealed.outcome.clone());
        let status = self.sealed_status(&sealed);
        self.watchers.publish(&id, &status);
        Ok((status, true))
    }

    fn abort_sealed(&self, id: &ResultId, outcome: &Outcome) -> Result<ResultStatus, Error> {
        match outcome {
            Outcome::Committed(_) => Err(Error::AlreadyCommitted { result_id: id.clone() }),
            Outcome::Aborted(_) => Ok(self.sealed_status(&self.seal_shared(id, outcome.clone().into(), Vec::new()))),
        }
    }

    /// Deletes a result now, whatever its state: the client is done with it. Answers EXPIRED; the result reads
    /// EXPIRED until its tombstone goes ([`Tombstones::Keep`]), NOT_FOUND after.
    ///
    /// It answers once the tombstone (and the expiry-index entry that brings the pruner back to a deletion
    /// cut short) is durable: from then on the result reads EXPIRED on every replica. The files and the other
    /// records are deleted after the answer, in the background ([`BACKGROUND_DELETIONS`] at once); if the
    /// process stops first, the pruner (or the sweep) finishes the deletion after [`DELETION_TIMEOUT`].
    pub async fn release(&self, id: &ResultId) -> Result<ResultStatus, Error> {
        // What the tombstone says of the result never changes: the allocation this replica made, a cached
        // outcome, or what storage says.
        let known = self.allocations.get(id).map(|allocation| allocation.info);
        let info = match known {
            Some(info) => info,
            None => match self.state(id, false).await? {
                State::Unknown => return Err(Error::NotFound { result_id: id.clone() }),
                State::Allocated(allocation) => allocation.info,
                State::Sealed(sealed) => sealed.outcome.info().clone(),
                State::Deleting(tombstone) => tombstone.info,
            },
        };
        self.expire(&info, "released").await?;
        self.metrics.released();
        let status = ResultStatus::expired(&info, self.now());
        self.watchers.publish(id, &status);
        Ok(status)
    }

    /// Begins the deletion of `info`'s result (from then on it is EXPIRED everywhere) and finishes it in the
    /// background (see [`Self::release`]).
    pub(super) async fn expire(&self, info: &ResultInfo, reason: &'static str) -> Result<(), Error> {
        match self.begin_deletion(info, reason, true).await? {
            Begun::Deleting | Begun::TakenOver => self.finish_in_background(info.clone(), reason),
            Begun::Held | Begun::Gone => {}
        }
        Ok(())
    }

    /// Completes once the work running after calls' answers is done (those started meanwhile included): the
    /// deletions, and the index entries of seals.
    pub async fn deletions_done(&self) {
        self.indexing.settled().await;
        self.background.settled().await;
    }

    /// The deletions after their calls' answers: how many are started and not done (waiting for their turn
    /// included), and how many of them run now (at most [`BACKGROUND_DELETIONS`]).
    pub fn deletions_running(&self) -> (usize, usize) {
        (self.background.running(), self.background.active())
    }

    /// Keeps a committed result at least `ttl` from now (at most `max_retention`); never shortens its life.
    /// A result kept until released stays so.
    ///
    /// A result checked within the refresh interval is renewed without reading it again (one round trip: the
    /// renewal's write): a renewal by another replica meanwhile only makes the later one count.
    pub async fn renew(&self, id: &ResultId, ttl: Duration) -> Result<ResultStatus, Error> {
        let sealed = match self.state(id, false).await? {
            State::Sealed(sealed) => sealed,
            State::Unknown | State::Deleting(_) => return Err(Error::NotFound { result_id: id.clone() }),
            State::Allocated(_) => {
                return Err(Error::NotRenewable { result_id: id.clone(), state: "not committed yet" });
            }
        };
        let status = self.sealed_status(&sealed);
        match status.state {
            ResultState::Committed => {}
            ResultState::Expired => return Err(Error::NotFound { result_id: id.clone() }),
            ResultState::Aborted | ResultState::Allocated => {
                return Err(Error::NotRenewable { result_id: id.clone(), state: "aborted" });
            }
        }
        let Some(current) = sealed.expires_at else { return Ok(status) };
        let Some(wanted) = self.now().checked_add(self.retention.cap(ttl)) else {
            return Err(InvalidArgument::new("ttl", "would keep the result past the year 9999").into());
        };
        if wanted <= current {
            return Ok(status);
        }
        let key = layout::renewal(id, wanted);
        let renewed = IndexEntry::Renewed { until_ms: wanted.millis() };
        let (written, indexed) = futures::join!(
            self.storage.put_create(&key, encode(&key, &Renewal {})?),
            self.index(sealed.outcome.info(), renewed, Vec::new())
        );
        match written {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => indexed?,
            Err(e) => return Err(e.into()),
        }
        let sealed = self.seal_shared(id, sealed.outcome, vec![Some(wanted)]);
        Ok(self.sealed_status(&sealed))
    }

    /// Deletes a result's files and records: [`Self::begin_deletion`], then (unless another caller holds the
    /// deletion) [`Self::finish_deletion`], in this call. Of racing deleters exactly one does the deletion,
    /// and the others are told [`Deletion::Held`]; a deletion cut short (its tombstone older than
    /// [`DELETION_TIMEOUT`]) is finished by whoever calls this next.
    pub(super) async fn delete_result(
        &self,
        info: &ResultInfo,
        reason: &str,
        revisit: bool,
    ) -> Result<Deletion, Error> {
        match self.begin_deletion(info, reason, revisit).await? {
            Begun::Deleting => self.finish_deletion(info, reason, Tombstones::Delete).await,
            // The deletion counts as the one cut short.
            Begun::TakenOver => self.finish_deletion(info, reason, Tombstones::Delete).await.map(|_| Deletion::Gone),
            Begun::Held => Ok(Deletion::Held),
            Begun::Gone => Ok(Deletion::Gone),
        }
    }

    /// The start of a deletion: the tombstone, create-only (from then on the result is EXPIRED everywhere),
    /// and with `revisit`, at the same time, an expiry-index entry [`DELETION_TIMEOUT`] later, so that the
    /// pruner comes back to a deletion cut short (the pruner, deleting for an index entry that it keeps until
    /// the deletion is done, needs none; a crash between the two writes leaves a tombstone that the sweep
    /// finishes once it is that old). One round trip.
    pub(super) async fn begin_deletion(&self, info: &ResultInfo, reason: &str, revisit: bool) -> Result<Begun, Error> {
        let id = &info.result_id;
        let tombstone = Tombstone { info: info.clone(), at: self.now(), reason: reason.to_owned() };
        let key = layout::tombstone(id);
        self.outcomes.remove(id);
        self.allocations.remove(id);
        let revisiting = async {
            match revisit {
                true => self.schedule(id, tombstone.at.saturating_add(DELETION_TIMEOUT)).await,
                false => Ok(()),
            }
        };
        let record = encode(&key, &tombstone)?;
        // The index says so at once; whoever finishes the deletion removes the entry with the others.
        let indexed = self.index(info, IndexEntry::Deleting, Vec::new());
        let (written, scheduled, indexed) = futures::join!(self.storage.put_create(&key, record), revisiting, indexed);
        scheduled?;
        if let Err(e) = indexed {
            warn!(result_id = %id, "the result index does not say this result is being deleted: {}", Escaped(&e.detail()));
        }
        if written.is_ok() || matches!(written, Err(StorageError::AlreadyExists { .. })) {
            // Its bytes, where the ledger knows them, stay counted as EXPIRED until it is gone.
            self.note_usage(info, Some(ResultState::Expired), 0);
        }
        match written {
            Ok(()) => Ok(Begun::Deleting),
            Err(StorageError::AlreadyExists { .. }) => Ok(match self.read::<Tombstone>(&key).await? {
                Some(held) if held.at.saturating_add(DELETION_TIMEOUT) <= self.now() => Begun::TakenOver,
                // Being deleted by another caller.
                Some(_) => Begun::Held,
                None => Begun::Gone,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The rest of a deletion this caller began: the files and records under its tombstone, then (as
    /// `tombstones` says) the tombstone.
    pub(super) async fn finish_deletion(
        &self,
        info: &ResultInfo,
        reason: &str,
        tombstones: Tombstones,
    ) -> Result<Deletion, Error> {
        let id = &info.result_id;
        let key = layout::tombstone(id);
        let (folder, pending_key) = (layout::records(id), layout::pending(id));
        let (records, pending) =
            futures::join!(self.storage.list_keys(&folder, Listing::ALL), self.read::<Allocation>(&pending_key));
        let records = records?;
        if records.iter().all(|record| record == &key) && pending?.is_none() {
            // Deleted by another caller who read the state before this one did (that deletion counts), or cut
            // short after the records went: the files go with the records, not before them, so they may be
            // left (with none, a listing).
            self.storage.delete_sink(id).await?;
            // What this deletion's start wrote in the index (its `deleting` entry) goes too.
            let mut keys = self.index_keys(info.created_at, &info.result_id).await?;
            let journaled = !keys.is_empty();
            if tombstones == Tombstones::Delete {
                keys.push(key);
            }
            self.storage.delete_keys(keys).await?;
            if journaled {
                self.journal(info.created_at, &info.result_id).await?;
            }
            self.note_usage(info, None, 0);
            return Ok(Deletion::Gone);
        }
        self.delete_files_and_records(info, &key, records, tombstones).await?;
        // Its index folder went with the records: the journal says so once it is gone.
        self.journal(info.created_at, &info.result_id).await?;
        self.note_usage(info, None, 0);
        info!(result_id = %id, query_id = %Escaped(&info.query_id), reason, "deleted");
        Ok(Deletion::Done)
    }

    /// Finishes, after the answer, a deletion this call began; [`BACKGROUND_DELETIONS`] run at once. One that
    /// fails (or is cut short) is left to the pruner, which its expiry-index entry brings back.
    fn finish_in_background(&self, info: ResultInfo, reason: &'static str) {
        let Some(results) = self.me.upgrade() else { return };
        self.background.spawn(async move {
            if let Err(e) = results.finish_deletion(&info, reason, Tombstones::Keep).await {
                let id = &info.result_id;
                warn!(result_id = %id, "a deletion stays for the pruner to finish: {}", Escaped(&e.detail()));
            }
        });
    }

    /// Deletes the files of an aborted result after the answer; ones that stay are deleted with its record.
    fn delete_sink_in_background(&self, id: ResultId) {
        let Some(results) = self.me.upgrade() else { return };
        self.background.spawn(async move {
            if let Err(e) = results.storage.delete_sink(&id).await {
                warn!(result_id = %id, "the files of an aborted result stay until the pruner deletes them: {}", Escaped(&e.detail()));
            }
        });
    }

    /// The deletion under the tombstone at `tombstone`: files, `records` (the result's record folder, listed
    /// under the tombstone) and the other records, all at once, then (as `tombstones` says) the tombstone.
    async fn delete_files_and_records(
        &self,
        info: &ResultInfo,
        tombstone: &str,
        mut records: Vec<String>,
        tombstones: Tombstones,
    ) -> Result<(), Error> {
        records.retain(|record| record != tombstone);
        // The files and the records go at once: under the tombstone, any part of them gone is a prefix that
        // the next deleter finishes.
        self.delete_with_records(info, records).await?;
        if tombstones == Tombstones::Delete {
            self.storage.delete_keys(vec![tombstone.to_owned()]).await?;
        }
        Ok(())
    }

    /// What the pruner deletes of an expired result, with its files, in a batch with the other results of a
    /// pass: every record but its outcome (`records` are the keys its folder was listed with), its pending
    /// record and its query record (see [`Self::records_to_delete`]). The outcome goes after them, and the
    /// index entry that brings the pruner back after that: a deletion cut short leaves the outcome and its
    /// entry, and the next pass deletes it again. No tombstone is needed: an expired result reads EXPIRED
    /// from its outcome whatever else of it is left, and takes no commit (it is sealed) and no renewal (it
    /// has expired).
    pub(super) async fn expired_records(&self, outcome: &Outcome, records: Vec<String>) -> Result<Vec<String>, Error> {
        let info = outcome.info();
        let id = &info.result_id;
        self.outcomes.remove(id);
        self.allocations.remove(id);
        let outcome_key = layout::outcome(id);
        // Its index entries are named by what its records say: no listing needed (a name not there is fine).
        let index = super::index::entries_of(outcome, &records);
        let records = records.into_iter().filter(|record| record != &outcome_key).collect();
        self.records_to_delete(info, records, Some(index)).await
    }

    /// Deletes the files of `info`'s result and [`Self::records_to_delete`], in one batch where the store can.
    async fn delete_with_records(&self, info: &ResultInfo, records: Vec<String>) -> Result<(), Error> {
        let records = self.records_to_delete(info, records, None).await?;
        Ok(self.storage.delete_result(&info.result_id, records).await?)
    }

    /// `records`, the pending record of `info`'s result and its query record, unless the query has been
    /// allocated again since (the record then names another result).
    /// and its index entries: `index`, or those a listing of its index folder finds.
    async fn records_to_delete(
        &self,
        info: &ResultInfo,
        mut records: Vec<String>,
        index: Option<Vec<String>>,
    ) -> Result<Vec<String>, Error> {
        let id = &info.result_id;
        records.push(layout::pending(id));
        let query = layout::query(&info.query_id);
        let index = async {
            match index {
                Some(index) => Ok(index),
                None => self.index_keys(info.created_at, &info.result_id).await,
            }
        };
        let (claim, index) = futures::join!(self.read::<Allocation>(&query), index);
        if claim?.is_some_and(|a| &a.info.result_id == id) {
            records.push(query);
        }
        records.extend(index?);
        Ok(records)
    }
}
