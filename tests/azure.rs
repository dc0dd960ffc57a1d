//! The Azure Blob Storage backend against Azurite on loopback: the conformance suite, and what only this
//! cloud has (its sink URIs and storage options, SAS URLs, outages).

mod common;
mod conformance;

use common::TestStore;

/// Runs the conformance suite over a container made by `$store`; skipped (loudly) only outside CI when
/// Azurite is not installed.
macro_rules! azure_store {
    ($store:expr) => {
        match $store.await {
            Some(store) => store,
            None => return,
        }
    };
}

mod azurite {
    use super::*;
    all_conformance_tests!(azure_store!(TestStore::azurite()));
}
