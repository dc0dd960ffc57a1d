//! How many storage round trips each call waits on one after another (its depth), counted by the service's
//! storage layer: an HTTP request to an object store, a blocking task on the local backend. A store far away
//! makes a call wait its depth times the round trip, so each call is held at its floor here: a change that
//! adds a sequential request fails. (The latencies behind a store far away: `cargo bench --bench load --
//! --only latency`, BENCHMARKS.md.)

mod common;

use std::time::Duration;

use anonymous_results::Config;
use common::{TestServer, TestStore, delay::DelayProxy, round_trips};

/// Each call's depth over `store`, through two replicas of it, against `floors`; the table is printed first.
async fn check(name: &str, store: &TestStore, floors: &[(&str, u64)]) {
    check_with(name, store, "", floors).await;
}

/// [`check`] with `service` as the `[anonymous_results_service]` section.
async fn check_with(name: &str, store: &TestStore, service: &str, floors: &[(&str, u64)]) {
    // A retention, so that a Renew has an expiry to move.
    let config = Config::from_toml(&store.config_toml_with("retention = \"1h\"", service)).unwrap();
    let (a, b) = (TestServer::start(&config).await, TestServer::start(&config).await);
    let seen = round_trips::each_call(&a, &b, store, "depth").await;
    for m in &seen {
        eprintln!("{name} {:24} requests {:2} depth {:2}", m.call, m.requests, m.depth);
    }
    let depths: Vec<(&str, u64)> = seen.iter().map(|m| (m.call, m.depth)).collect();
    assert_eq!(depths, floors, "a call's depth on {name} changed: if it went down, update BENCHMARKS.md too");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_waits_on_its_floor_of_round_trips_on_the_local_backend() {
    // A filesystem does a call's storage work in one blocking task per step: Allocate and Commit are one each.
    let floors = [
        ("Allocate", 1),
        ("Allocate again (warm)", 4),
        ("Commit (warm)", 1),
        ("Resolve (warm)", 0),
        ("Resolve (cold)", 1),
        ("Renew (warm)", 1),
        ("Commit (cold)", 1),
        ("Abort (warm)", 1),
        ("Abort (cold)", 2),
        ("Release (warm)", 1),
        ("Release (cold)", 2),
    ];
    check("local", &TestStore::local(), &floors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_waits_on_its_floor_of_round_trips_on_s3_far_away() {
    let Some(store) = TestStore::moto().await else { return };
    let proxy = DelayProxy::start(&store.server_endpoint().expect("moto's endpoint"), Duration::from_millis(5)).await;
    let store = store.reached_at(&proxy.endpoint);
    // The floors of BENCHMARKS.md.
    check("moto", &store, &round_trips::CALLS).await;
}

/// Where a sink's listing does not pin its files, Commit takes a HEAD of each, all at once: one round trip
/// more, and no other call changes. s3s-fs lists no entity tag; a bucket that keeps versions lists no version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_heads_its_files_in_one_round_where_the_listing_does_not_pin_them() {
    let floors: Vec<(&str, u64)> = round_trips::CALLS
        .iter()
        .map(|&(call, depth)| (call, if call.starts_with("Commit") { depth + 1 } else { depth }))
        .collect();
    if let Some(store) = TestStore::s3s_fs().await {
        let proxy = DelayProxy::start(&store.server_endpoint().expect("an endpoint"), Duration::from_millis(5)).await;
        check("s3s-fs", &store.reached_at(&proxy.endpoint), &floors).await;
    }
    if let Some(store) = TestStore::moto().await {
        let TestStore::S3 { server, bucket, .. } = &store else { unreachable!("an S3 store") };
        server.keep_versions(bucket).await;
        let proxy = DelayProxy::start(&store.server_endpoint().expect("an endpoint"), Duration::from_millis(5)).await;
        check("moto, versioned", &store.reached_at(&proxy.endpoint), &floors).await;
    }
}

/// With credentials scoped to each sink, Allocate asks STS for a session before it claims the query: one round
/// trip more (3). A repeated Allocate asks twice (for the sink it tried, then for the one it answers): 6. No
/// other call changes. STS is reached at the store's endpoint, behind the same delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_asks_sts_first_where_credentials_are_scoped_to_the_sink() {
    let floors: Vec<(&str, u64)> = round_trips::CALLS
        .iter()
        .map(|&(call, depth)| match call {
            "Allocate" => (call, depth + 1),
            "Allocate again (warm)" => (call, depth + 2),
            _ => (call, depth),
        })
        .collect();
    let Some((store, scoped, _iam)) = common::iam::scoped_store().await else { return };
    let proxy = DelayProxy::start(&store.server_endpoint().expect("moto's endpoint"), Duration::from_millis(5)).await;
    check_with("moto, scoped", &store.reached_at(&proxy.endpoint), &scoped, &floors).await;
}
