//! What storage says of a result, read and kept: its state from one listing of its records (and the reads of
//! what is not cached), the cache of sealed outcomes with their expiry, and the records' encoding.

use std::{sync::Arc, time::Instant};

use serde::Serialize;
use tracing::warn;

use super::{Error, Results};
use crate::{
    cache::Sealed,
    layout::{self, Owner},
    model::{Allocation, Outcome, Record, ResultId, ResultInfo, ResultStatus, Stored, Timestamp, Tombstone},
    storage::{Backend, Listing, StorageError},
};

/// What storage says of a result.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// No record: never allocated here, or deleted.
    Unknown,
    Allocated(Allocation),
    Sealed(Sealed),
    /// Being deleted.
    Deleting(Tombstone),
}

/// Results (or records) already logged about, so that each is logged once; at most [`NOTED_LIMIT`] are remembered (then
/// the memory starts over).
#[derive(Debug, Default)]
pub(super) struct Noted(std::sync::Mutex<std::collections::HashSet<String>>);

const NOTED_LIMIT: usize = 10_000;

impl Noted {
    /// Whether `id` is noted for the first time.
    pub(super) fn note(&self, id: &ResultId) -> bool {
        self.note_key(id.as_str())
    }

    /// Whether `key` (a result id, or a record's key) is noted for the first time.
    pub(super) fn note_key(&self, key: &str) -> bool {
        let mut noted = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if noted.len() >= NOTED_LIMIT {
            noted.clear();
        }
        noted.insert(key.to_owned())
    }
}

/// The reads of a state sent beside its listing: the outcome unless `cached`, and the pending record if
/// `pending_read` (else it is read after the listing, if that names no outcome).
struct Reads {
    cached: Option<Arc<Outcome>>,
    outcome: Result<Option<Outcome>, Error>,
    pending: Result<Option<Allocation>, Error>,
    pending_read: bool,
}

impl<B: Backend> Results<B> {
    /// The status of a result; NOT_FOUND if there is none. `fresh` asks storage even if the cache is recent.
    pub async fn status(&self, id: &ResultId, fresh: bool) -> Result<ResultStatus, Error> {
        let state = self.state(id, fresh).await?;
        self.status_from(&state).ok_or_else(|| Error::NotFound { result_id: id.clone() })
    }

    /// What storage says of `id`: from the cache when checked within the refresh interval (and not past its
    /// expiry), else from one listing of its records and, at the same time, the reads of the records it may
    /// name (the pending record, and the outcome unless cached): one round trip. Only a tombstone is read after
    /// the listing names it (a result being deleted), and a record the listing names that its read, sent
    /// before the record was written, did not find. A cached entry checked within twice the interval is
    /// answered at once while a background task checks it again, so a result in use never waits on storage;
    /// an older one is checked first. A read that overlaps the end of a deletion (its listing after the
    /// tombstone went, its read of the pending record before that record went) says ALLOCATED of a result
    /// just deleted: a caller that acts on ALLOCATED after a create-only write found otherwise reads again.
    pub(super) async fn state(&self, id: &ResultId, fresh: bool) -> Result<State, Error> {
        if !fresh
            && let Some(sealed) = self.outcomes.get(id)
            && sealed.expires_at.is_none_or(|at| at > self.now())
        {
            let age = sealed.checked_at.elapsed();
            if age < self.refresh {
                return Ok(State::Sealed(sealed));
            }
            if age < 2 * self.refresh {
                self.refresh_in_background(id, &sealed);
                return Ok(State::Sealed(sealed));
            }
        }
        Ok(self.read_state(id, fresh, true).await?.0)
    }

    /// What storage says of `id`, as [`Self::state`] reads it when the cache does not answer, and the keys of
    /// its records as listed. Without `read_pending`, the pending record is read only if the listing names
    /// no outcome (after it: a second round trip), for a caller that expects a sealed result.
    pub(super) async fn read_state(
        &self,
        id: &ResultId,
        fresh: bool,
        read_pending: bool,
    ) -> Result<(State, Vec<String>), Error> {
        let cached = self.outcomes.get(id).map(|sealed| sealed.outcome);
        let (folder, pending_key) = (layout::records(id), layout::pending(id));
        let (records, pending, outcome) = futures::join!(
            self.storage.list_keys(&folder, Listing::ALL),
            async {
                match read_pending {
                    true => self.read::<Allocation>(&pending_key).await,
                    false => Ok(None),
                }
            },
            async {
                match &cached {
                    Some(_) => Ok(None),
                    None => self.read::<Outcome>(&layout::outcome(id)).await,
                }
            },
        );
        let records = match records {
            Ok(records) => records,
            // Storage is down: what was known of a sealed result still holds, unless it has expired since.
            Err(e) => match self.outcomes.get(id).filter(|sealed| sealed.expires_at.is_none_or(|at| at > self.now())) {
                Some(sealed) if !fresh => return Ok((State::Sealed(sealed), Vec::new())),
                _ => return Err(e.into()),
            },
        };
        let reads = Reads { cached, outcome, pending, pending_read: read_pending };
        let state = self.state_from(id, &folder, &records, reads).await?;
        Ok((state, records))
    }

    /// The state that the listing `records` of `folder` says, with the reads sent beside it.
    async fn state_from(&self, id: &ResultId, folder: &str, records: &[String], reads: Reads) -> Result<State, Error> {
        let Reads { cached, outcome, pending, pending_read } = reads;
        // Each record's name, the first component below the result's folder: a record replaced by a folder of
        // others is there under its name all the same, and reading it says what it is.
        let names: Vec<&str> = records.iter().filter_map(|key| key.strip_prefix(folder)?.split('/').next()).collect();
        if names.contains(&layout::TOMBSTONE) {
            self.outcomes.remove(id);
            return Ok(match self.read::<Tombstone>(&layout::tombstone(id)).await? {
                Some(tombstone) => State::Deleting(tombstone),
                None => State::Unknown,
            });
        }
        let listed = names.contains(&layout::OUTCOME);
        let pending = match pending_read || listed {
            true => pending?,
            false => self.read::<Allocation>(&layout::pending(id)).await?,
        };
        let outcome = match (cached, outcome?) {
            (Some(cached), _) if listed => Some(cached),
            // Read, not listed: written between the two. The pending record stays until a pruning pass after the
            // commit, so with it gone too the result was deleted meanwhile.
            (None, Some(outcome)) if listed || pending.is_some() => Some(Arc::new(outcome)),
            // Listed, but written after its read was sent.
            (None, None) if listed => self.read::<Outcome>(&layout::outcome(id)).await?.map(Arc::new),
            _ => None,
        };
        if let Some(outcome) = outcome {
            let renewals = names.iter().filter_map(|name| layout::renewal_millis(name)).map(Timestamp::from_millis);
            let renewals = renewals.collect();
            return Ok(State::Sealed(self.seal_shared(id, outcome, renewals)));
        }
        self.outcomes.remove(id);
        if listed {
            return Ok(State::Unknown); // deleted meanwhile
        }
        Ok(match pending {
            Some(allocation) => State::Allocated(allocation),
            None => State::Unknown,
        })
    }

    /// Checks `id` against storage in a background task, once: the entry is marked checked now, so that the
    /// calls meanwhile use it without starting another check. A failed check leaves the entry as it was.
    fn refresh_in_background(&self, id: &ResultId, sealed: &Sealed) {
        self.outcomes.insert(id, Sealed { checked_at: Instant::now(), ..sealed.clone() });
        let Some(results) = self.me.upgrade() else { return };
        let id = id.clone();
        tokio::spawn(async move {
            if let Err(e) = results.state(&id, true).await {
                tracing::debug!(result_id = %id, "a background check of a cached result failed: {e}");
            }
        });
    }

    /// Caches a sealed outcome with its expiry, as checked now.
    pub(super) fn seal(&self, id: &ResultId, outcome: Outcome, renewals: Vec<Option<Timestamp>>) -> Sealed {
        self.seal_shared(id, Arc::new(outcome), renewals)
    }

    /// Caches `outcome` with the expiry its records give: the base one (see [`Self::base_expiry`]), or the
    /// latest `renewals`, whichever is later (a `None` renewal: one past the year 9999).
    pub(super) fn seal_shared(&self, id: &ResultId, outcome: Arc<Outcome>, renewals: Vec<Option<Timestamp>>) -> Sealed {
        let mut expires_at = self.base_expiry(id, &outcome);
        for renewal in renewals {
            match (expires_at, renewal) {
                // Kept until released stays so.
                (None, _) => break,
                (Some(kept), Some(renewal)) => expires_at = Some(kept.max(renewal)),
                (Some(_), None) => {
                    self.past_the_range(id);
                    expires_at = None;
                }
            }
        }
        let sealed = Sealed { outcome, expires_at, checked_at: Instant::now() };
        self.outcomes.insert(id, sealed.clone());
        sealed
    }

    /// When a sealed result goes, before any renewal: a committed one after its TTL (never, without one); an
    /// aborted one's record after `commit_timeout`. A TTL stored by an older release that ends past the year
    /// 9999 means until released.
    fn base_expiry(&self, id: &ResultId, outcome: &Outcome) -> Option<Timestamp> {
        match outcome {
            Outcome::Committed(manifest) => {
                let ttl = self.retention.ttl(manifest.info.ttl)?;
                let expiry = manifest.committed_at.checked_add(ttl);
                if expiry.is_none() {
                    self.past_the_range(id);
                }
                expiry
            }
            Outcome::Aborted(aborted) => Some(aborted.aborted_at.saturating_add(self.retention.commit_timeout)),
        }
    }

    /// Logs, once per result (in this process), that its stored expiry lies past the year 9999.
    fn past_the_range(&self, id: &ResultId) {
        if self.beyond_range.note(id) {
            warn!(
                result_id = %id,
                "its stored expiry lies past the year 9999 (written by an older release): kept until released"
            );
        }
    }

    pub(super) fn sealed_status(&self, sealed: &Sealed) -> ResultStatus {
        match sealed.outcome.as_ref() {
            Outcome::Committed(manifest) => match sealed.expires_at.filter(|at| *at <= self.now()) {
                // Past its expiry: gone for the callers, whether or not the pruner has come yet.
                Some(at) => ResultStatus::expired(&manifest.info, at),
                None => ResultStatus::committed(manifest, sealed.expires_at),
            },
            Outcome::Aborted(aborted) => ResultStatus::aborted(aborted, sealed.expires_at),
        }
    }

    pub(super) fn status_from(&self, state: &State) -> Option<ResultStatus> {
        match state {
            State::Unknown => None,
            State::Allocated(allocation) => Some(ResultStatus::allocated(allocation)),
            State::Sealed(sealed) => Some(self.sealed_status(sealed)),
            State::Deleting(tombstone) => Some(ResultStatus::expired(&tombstone.info, tombstone.at)),
        }
    }

    /// Reads and decodes the record at `key` (within its kind's bound, checked to be one the service could
    /// have written there), `None` if there is none.
    pub(super) async fn read<T: Record>(&self, key: &str) -> Result<Option<T>, Error> {
        let owned = key.to_owned();
        let decoded = self.storage.read_record(key, T::MAX_BYTES, move |reader| decode_from::<T>(&owned, reader));
        match decoded.await {
            Ok(record) => record.map(Some),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(StorageError::Unreadable { key, reason }) => Err(Error::CorruptRecord { key, message: reason }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a record that a create-only write just found in place. It can vanish only if deleted meanwhile.
    pub(super) async fn read_existing<T: Record>(&self, key: &str) -> Result<T, Error> {
        self.read(key).await?.ok_or_else(|| StorageError::NotFound { key: key.to_owned() }.into())
    }
}

/// The record stored at `key` as `bytes`, in any release's format, checked (see [`decode_from`]).
pub(super) fn decode<T: Record>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    decode_from(key, &mut &bytes[..])
}

/// The record stored at `key`, read from `reader`, in any release's format: checked to hold values the
/// service could have written (see [`Record::validate`]) and to belong where it is stored (the result its key
/// names, or the query its name is the hash of), so that neither a record copied from elsewhere nor one
/// forged is taken for what it claims.
pub(super) fn decode_from<T: Record>(key: &str, reader: &mut dyn std::io::Read) -> Result<T, Error> {
    let corrupt = |message: String| Error::CorruptRecord { key: key.to_owned(), message };
    let stored: Stored<T> = T::read_stored(std::io::BufReader::new(reader)).map_err(|e| corrupt(e.to_string()))?;
    let format = stored.format;
    let record = stored.into_record().map_err(corrupt)?;
    record.validate(format).map_err(corrupt)?;
    check_owner(key, record.info()).map_err(corrupt)?;
    Ok(record)
}

/// Whether a record of `info`'s result may be stored at `key`.
fn check_owner(key: &str, info: &ResultInfo) -> Result<(), String> {
    match layout::owner(key) {
        Owner::Result(id) if id != info.result_id => {
            Err(format!("result_id: it holds the record of result `{}`, not of `{id}`", info.result_id))
        }
        Owner::Query if layout::query(&info.query_id) != key => {
            Err("query_id: it holds the record of another query".into())
        }
        Owner::Result(_) | Owner::Query | Owner::Service => Ok(()),
    }
}

/// The bytes of the record to be stored at `key`, in the base format (see [`encode_in`]).
pub(super) fn encode<T: Serialize>(key: &str, record: &T) -> Result<Vec<u8>, Error> {
    encode_in(key, crate::model::BASE_FORMAT, record)
}

/// The bytes of the record to be stored at `key`, in `format`.
pub(super) fn encode_in<T: Serialize>(key: &str, format: u32, record: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(&Stored::in_format(format, record))
        .map_err(|e| Error::CorruptRecord { key: key.to_owned(), message: e.to_string() })
}
