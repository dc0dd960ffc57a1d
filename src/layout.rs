//! The storage layout: where each durable record lives, relative to the configured root.
//!
//! ```text
//! <root>/<result_id>/...                             the sink: the worker's files, nothing else
//! <root>/_control/results/<result_id>/allocation.json   written by Allocate
//! <root>/_control/results/<result_id>/manifest.json     written by Commit, create-only: the commit itself
//! <root>/_control/queries/<sha256(query_id)>.json       the allocation again, keyed by query: idempotence
//! ```
//!
//! Result ids are lowercase base32, so no sink can be named `_control`. Keeping the records out of the sinks
//! means a worker's credentials can be denied the `_control/` prefix.

use sha2::{Digest, Sha256};

use crate::model::ResultId;

/// The folder of the service's own records.
pub const CONTROL: &str = "_control";

/// The allocation record of `id`.
pub fn allocation(id: &ResultId) -> String {
    format!("{CONTROL}/results/{id}/allocation.json")
}

/// The manifest of `id`; present exactly when the result is committed.
pub fn manifest(id: &ResultId) -> String {
    format!("{CONTROL}/results/{id}/manifest.json")
}

/// The record of the allocation made for `query_id`, named by the query id's SHA-256 so that any query id
/// gives a short, safe name.
pub fn query(query_id: &str) -> String {
    let digest = Sha256::digest(query_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{CONTROL}/queries/{hex}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_stable_and_distinct() {
        assert_eq!(query("q-1"), query("q-1"));
        assert_ne!(query("q-1"), query("q-2"));
        assert_eq!(query(""), "_control/queries/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.json");
    }
}
