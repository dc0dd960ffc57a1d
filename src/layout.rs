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
//! <root>/_control/index/<hour>/<created>-<result_id>/allocated.json  the result index: the allocation
//! <root>/_control/index/<hour>/<created>-<result_id>/committed-<bytes>.json   the outcome, without its files
//! <root>/_control/index/<hour>/<created>-<result_id>/aborted.json              (one of the two)
//! <root>/_control/index/<hour>/<created>-<result_id>/renewed-<ms>.json         one per Renew
//! <root>/_control/index/<hour>/<created>-<result_id>/deleting.json             from Release on
//! <root>/_control/changes/<hour>/<ms>-<created>-<result_id>   the change journal: this result's index changed
//! <root>/_control/changes/<hour>/<ms>-batch-<random>           ... these results' (listed in it) did
//! <root>/_control/index-complete                              the index names what earlier releases stored
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
//! The result index lists results by when they were created, each entry's name saying what the listing needs
//! to filter and count without reading it (its state, its bytes, a renewal's expiry); ListResults reads a
//! page of it. The change journal names, in time order, the results whose index entries changed, so that each
//! replica refreshes what is stored by reading what changed since its last look (`results/usage.rs`).
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
/// The folder of the result index.
pub const INDEX: &str = "_control/index/";
/// The folder of the change journal.
pub const CHANGES: &str = "_control/changes/";
/// Says that the result index names what earlier releases stored (`results/rebuild.rs`).
pub const INDEX_COMPLETE: &str = "_control/index-complete";
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

/// The index folder of result `id`, created at `created` (ending in `/`): sorted by creation, then id, in a
/// folder per hour of creation (so that a listing from a point reads the folders of the hours it covers, not
/// every result's: the local backend reads a folder whole).
pub fn index_folder(created: Timestamp, id: &ResultId) -> String {
    format!("{}{id}/", index_bound(created))
}

/// The key before which every index entry is of a result created before `at`.
pub fn index_bound(at: Timestamp) -> String {
    let ms = at.millis();
    format!("{INDEX}{:010}/{ms:016}-", ms / 3_600_000)
}

/// The key after which every index entry is of a result created after result `id` (created at `created`),
/// or later in its millisecond.
pub fn index_after(created: Timestamp, id: &ResultId) -> String {
    // Past every key of its folder: `0` sorts after its `/`.
    format!("{}{id}0", index_bound(created))
}

/// One entry of a result's index folder, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    /// `allocated.json`: the allocation.
    Allocated,
    /// `committed-<bytes>.json`: committed, with this many bytes.
    Committed { bytes: u64 },
    /// `aborted.json`.
    Aborted,
    /// `renewed-<ms>.json`: renewed until this instant (milliseconds since 1970).
    Renewed { until_ms: u64 },
    /// `deleting.json`: released, or otherwise being deleted.
    Deleting,
}

impl IndexEntry {
    /// The entry's name in its folder.
    pub fn name(self) -> String {
        match self {
            Self::Allocated => "allocated.json".into(),
            Self::Committed { bytes } => format!("committed-{bytes:020}.json"),
            Self::Aborted => "aborted.json".into(),
            Self::Renewed { until_ms } => format!("renewed-{until_ms:016}.json"),
            Self::Deleting => "deleting.json".into(),
        }
    }

    /// The entry a name stands for, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        let number = |prefix: &str| name.strip_prefix(prefix)?.strip_suffix(".json")?.parse::<u64>().ok();
        match name {
            "allocated.json" => Some(Self::Allocated),
            "aborted.json" => Some(Self::Aborted),
            "deleting.json" => Some(Self::Deleting),
            _ => match (number("committed-"), number("renewed-")) {
                (Some(bytes), _) => Some(Self::Committed { bytes }),
                (_, Some(until_ms)) => Some(Self::Renewed { until_ms }),
                _ => None,
            },
        }
    }
}

/// The key of `entry` in the index folder of result `id`, created at `created`.
pub fn index_entry(created: Timestamp, id: &ResultId, entry: IndexEntry) -> String {
    format!("{}{}", index_folder(created, id), entry.name())
}

/// The result an index key belongs to (its creation and id), and which entry it is; `None` for a key that is
/// not one the service writes.
pub fn parse_index_key(key: &str) -> Option<(Timestamp, ResultId, IndexEntry)> {
    let (hour, rest) = key.strip_prefix(INDEX)?.split_once('/')?;
    let (folder, name) = rest.split_once('/')?;
    let (created, id) = parse_result_name(folder)?;
    // The hour must be the creation's: a folder elsewhere is not the service's.
    (hour.len() == 10 && hour.parse::<u64>().ok() == Some(created.millis() / 3_600_000)).then_some(())?;
    Some((created, id, IndexEntry::parse(name)?))
}

/// `<created ms, 16 digits>-<result id>`, as index folders, journal entries and the lines of a batch entry
/// name a result: its creation and id.
pub fn parse_result_name(text: &str) -> Option<(Timestamp, ResultId)> {
    let (ms, id) = text.split_once('-')?;
    if ms.len() != 16 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Timestamp::from_millis(ms.parse().ok()?)?, ResultId::parse(id).ok()?))
}

/// The journal entry saying that the index entries of result `id` (created at `created`) changed at `at`.
pub fn change(at: Timestamp, created: Timestamp, id: &ResultId) -> String {
    format!("{}{:016}-{id}", changes_bound(at), created.millis())
}

/// The journal entry saying that the results its record lists changed at `at`; `tag` makes it unique.
pub fn change_batch(at: Timestamp, tag: &str) -> String {
    format!("{}{BATCH}{tag}", changes_bound(at))
}

const BATCH: &str = "batch-";

/// The key before which every journal entry is older than `at`. Entries lie in a folder per hour, so that a
/// listing from a point reads the hours it covers, not the whole journal.
pub fn changes_bound(at: Timestamp) -> String {
    let ms = at.millis();
    format!("{CHANGES}{:010}/{ms:016}-", ms / 3_600_000)
}

/// What a journal entry says.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// This result's index changed.
    One { at: Timestamp, created: Timestamp, id: ResultId },
    /// Those its record lists did.
    Batch { at: Timestamp },
}

/// What the journal entry `key` says; `None` for a key that is not one the service writes.
pub fn parse_change(key: &str) -> Option<Change> {
    let (hour, name) = key.strip_prefix(CHANGES)?.split_once('/')?;
    let (at, rest) = name.split_once('-')?;
    if at.len() != 16 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = Timestamp::from_millis(at.parse().ok()?)?;
    // The hour must be the entry's: an entry elsewhere is not the service's.
    (hour.len() == 10 && hour.parse::<u64>().ok() == Some(at.millis() / 3_600_000)).then_some(())?;
    if let Some(tag) = rest.strip_prefix(BATCH) {
        return (!tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(Change::Batch { at });
    }
    let (created, id) = parse_result_name(rest)?;
    Some(Change::One { at, created, id })
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
    fn index_keys_sort_by_creation_and_say_their_entry() {
        let (a, b) = (ResultId::generate().unwrap(), ResultId::generate().unwrap());
        let early = Timestamp::from_millis(1_800_000_000_000).unwrap();
        let late = early.checked_add(Duration::from_millis(1)).unwrap();
        assert!(index_folder(early, &a) < index_folder(late, &b) && index_folder(early, &b) < index_folder(late, &a));
        for entry in [
            IndexEntry::Allocated,
            IndexEntry::Committed { bytes: 0 },
            IndexEntry::Committed { bytes: u64::MAX },
            IndexEntry::Aborted,
            IndexEntry::Renewed { until_ms: Timestamp::latest().millis() },
            IndexEntry::Deleting,
        ] {
            let key = index_entry(early, &a, entry);
            assert!(key.starts_with(&index_folder(early, &a)));
            assert_eq!(parse_index_key(&key), Some((early, a.clone(), entry)), "{key}");
        }
        let folder = index_folder(early, &a);
        for stranger in ["x.json", "committed-.json", "committed-12.jsonx", "renewed-1e3.json", "allocated.json/x"] {
            assert_eq!(parse_index_key(&format!("{folder}{stranger}")), None, "{stranger}");
        }
        assert_eq!(parse_index_key(&format!("{INDEX}0000000000/12-{a}/allocated.json")), None, "a short time");
        assert_eq!(parse_index_key(&format!("{INDEX}0000000000/{:016}-NOTANID/allocated.json", 5)), None);
        assert_eq!(parse_index_key(&format!("{INDEX}0000000001/{:016}-{a}/allocated.json", 5)), None, "another hour");
        assert_eq!(parse_index_key(&format!("{INDEX}{:016}-{a}/allocated.json", 5)), None, "no hour");
        // A listing from a point passes over earlier hours' folders whole, and ends before later ones.
        let next_hour = early.checked_add(Duration::from_secs(3600)).unwrap();
        assert!(index_after(early, &a) < index_bound(next_hour) && index_bound(early) < index_folder(early, &a));
        assert!(index_entry(early, &a, IndexEntry::Deleting) < index_after(early, &a));
        assert!(index_after(early, &a) < index_folder(late, &b));
    }

    #[test]
    fn journal_entries_sort_by_time_and_parse_back() {
        let id = ResultId::generate().unwrap();
        let created = Timestamp::from_millis(1_800_000_000_000).unwrap();
        let at = created.checked_add(Duration::from_secs(60)).unwrap();
        let later = at.checked_add(Duration::from_millis(1)).unwrap();
        let one = change(at, created, &id);
        assert_eq!(parse_change(&one), Some(Change::One { at, created, id: id.clone() }));
        let batch = change_batch(at, "0123abcd");
        assert_eq!(parse_change(&batch), Some(Change::Batch { at }));
        assert!(one < change(later, created, &id) && batch < change_batch(later, "0"));
        assert!(changes_bound(at) < one && one < changes_bound(later) && batch < changes_bound(later));
        let empty_tag = format!("{}batch-", changes_bound(at));
        let another_hour = format!("_control/changes/0000000001/{:016}-batch-ab", at.millis());
        let no_hour = format!("_control/changes/{:016}-batch-ab", at.millis());
        for stranger in ["_control/changes/x", "_control/changes/12-batch-1", &empty_tag, &another_hour, &no_hour] {
            assert_eq!(parse_change(stranger), None, "{stranger}");
        }
        assert_eq!(parse_change(&change_batch(at, "a/b")), None);
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
