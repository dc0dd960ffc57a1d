//! The storage layout: where each durable record lives, relative to the configured root.
//!
//! ```text
//! <root>/<result_id>/...                                      the sink: the worker's files, nothing else
//! <root>/_control/queries/<sha256(query_id)>.json             the allocation, keyed by query: idempotence
//! <root>/_control/pending/<result_id>.json                    the allocation, until the pruner has seen its outcome
//! <root>/_control/results/<result_id>/outcome.json            committed or aborted: create-only, the seal
//! <root>/_control/results/<result_id>/renewal-<ms>.json       one per Renew, named by the new expiry
//! <root>/_control/results/<result_id>/tombstone.json          while the result is being deleted
//! <root>/_control/expiry/<hour>/<ms>-<result_id>              the expiry index, in time order
//! <root>/_control/commit-secret                               the commit tokens' secret, unless configured
//! ```
//!
//! The query record and the pending record of an allocation hold the same bytes; the local backend writes
//! them as two names of one file (hard links), which a reader cannot tell from two files.
//!
//! Every JSON record carries the version of its format (see `model/records.rs`); names hold what the pruner
//! must read without opening a record (the expiry of a renewal or an index entry, in milliseconds since 1970,
//! which end before the year 10000, so the widths below never grow).
//!
//! Result ids are lowercase base32, so no sink can be named `_control`. Keeping the records out of the sinks
//! means a worker's credentials can be denied the `_control/` prefix.
//!
//! The expiry index is what keeps pruning cheap: its keys sort by expiry (fixed-width numbers), so a pruner
//! lists only the entries that are due and never touches the results that are not.

use sha2::{Digest, Sha256};

use crate::model::{ResultId, Timestamp};

/// The folder of the service's own records.
pub const CONTROL: &str = "_control";
/// The folder of allocations whose outcome the pruner has not seen yet.
pub const PENDING: &str = "_control/pending/";
/// The folder of the query records (the claims).
pub const QUERIES: &str = "_control/queries/";
/// The folder of the results' records folders.
pub const RESULTS: &str = "_control/results/";
/// The folder of the expiry index.
pub const EXPIRY: &str = "_control/expiry/";
/// The secret commit tokens are made with, when no `auth.commit_secret_file` is configured.
pub const COMMIT_SECRET: &str = "_control/commit-secret";

pub const OUTCOME: &str = "outcome.json";
pub const TOMBSTONE: &str = "tombstone.json";
const RENEWAL_PREFIX: &str = "renewal-";

/// The record of the allocation made for `query_id`, named by the query id's SHA-256 so that any query id
/// gives a short, safe name.
pub fn query(query_id: &str) -> String {
    let digest = Sha256::digest(query_id.as_bytes());
    format!("{QUERIES}{}.json", crate::hex::encode(&digest))
}

/// The allocation of `id` while its outcome is unknown to the pruner.
pub fn pending(id: &ResultId) -> String {
    format!("{PENDING}{id}.json")
}

/// The id of a pending allocation's key.
pub fn pending_id(key: &str) -> Option<ResultId> {
    let name = key.strip_prefix(PENDING)?.strip_suffix(".json")?;
    ResultId::parse(name).ok()
}

/// The folder of `id`'s records (ending in `/`).
pub fn records(id: &ResultId) -> String {
    format!("{RESULTS}{id}/")
}

/// The outcome record of `id`.
pub fn outcome(id: &ResultId) -> String {
    format!("{}{OUTCOME}", records(id))
}

/// The tombstone of `id`.
pub fn tombstone(id: &ResultId) -> String {
    format!("{}{TOMBSTONE}", records(id))
}

/// The renewal of `id` to `expires_at`.
pub fn renewal(id: &ResultId, expires_at: Timestamp) -> String {
    format!("{}{RENEWAL_PREFIX}{:016}.json", records(id), expires_at.millis())
}

/// The expiry a renewal record's file name (not its whole key) stands for, in milliseconds since 1970 (which
/// a record of an older release may have put past the year 9999).
pub fn renewal_millis(name: &str) -> Option<u64> {
    name.strip_prefix(RENEWAL_PREFIX)?.strip_suffix(".json")?.parse().ok()
}

/// Whose a record is, by its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// A record of this result: its pending record, or one in its records folder.
    Result(ResultId),
    /// A query record: named for the query id it holds.
    Query,
    /// Anything else: the service's own.
    Service,
}

/// Whose record `key` is.
pub fn owner(key: &str) -> Owner {
    if let Some(id) = pending_id(key) {
        return Owner::Result(id);
    }
    if key.starts_with(QUERIES) {
        return Owner::Query;
    }
    let id =
        key.strip_prefix(RESULTS).and_then(|rest| rest.split_once('/')).and_then(|(id, _)| ResultId::parse(id).ok());
    id.map_or(Owner::Service, Owner::Result)
}

/// The expiry-index entry of `id`, due at `at`.
pub fn expiry_entry(at: Timestamp, id: &ResultId) -> String {
    format!("{}{id}", expiry_bound(at))
}

/// The key before which every expiry-index entry is due at `now`.
pub fn expiry_bound(now: Timestamp) -> String {
    let ms = now.millis();
    format!("{EXPIRY}{:010}/{ms:016}-", ms / 3_600_000)
}

/// When an expiry-index entry is due, and for which result.
pub fn parse_expiry_entry(key: &str) -> Option<(Timestamp, ResultId)> {
    let (_hour, name) = key.strip_prefix(EXPIRY)?.split_once('/')?;
    let (ms, id) = name.split_once('-')?;
    Some((Timestamp::from_millis(ms.parse().ok()?)?, ResultId::parse(id).ok()?))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn query_keys_are_stable_and_distinct() {
        assert_eq!(query("q-1"), query("q-1"));
        assert_ne!(query("q-1"), query("q-2"));
        assert_eq!(query(""), "_control/queries/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.json");
    }

    #[test]
    fn expiry_entries_sort_by_time_and_parse_back() {
        let id = ResultId::generate().unwrap();
        let base = Timestamp::from_millis(1_800_000_000_000).unwrap();
        let ms = Duration::from_millis(1);
        let earlier = expiry_entry(base, &id);
        let later = expiry_entry(base.checked_add(ms).unwrap(), &id);
        let much_later = expiry_entry(base.checked_add(Duration::from_secs(10 * 3600)).unwrap(), &id);
        assert!(earlier < later && later < much_later);
        assert_eq!(parse_expiry_entry(&earlier), Some((base, id.clone())));
        assert!(earlier < expiry_bound(base.checked_add(ms).unwrap()), "due just after");
        // The index ends with the year 9999: its entries keep their width, so they still sort by time.
        assert_eq!(expiry_entry(Timestamp::latest(), &id).len(), earlier.len());
        assert!(earlier >= expiry_bound(base), "not due at its own instant");
    }

    #[test]
    fn renewal_names_carry_their_expiry() {
        let id = ResultId::generate().unwrap();
        let at = Timestamp::from_millis(1_800_000_000_123).unwrap();
        let key = renewal(&id, at);
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(renewal_millis(name), Some(at.millis()));
        assert_eq!(pending_id(&pending(&id)), Some(id));
    }
}
