//! How many storage round trips each call waits on one after another (its depth), counted by the service's
//! storage layer: an HTTP request to an object store, a blocking task on the local backend. A store far away
//! makes a call wait its depth times the round trip, so each call is held at its floor here: a change that
//! adds a sequential request fails. (The latencies through a proxy that delays the store: `cargo bench --bench
//! load -- --only latency`, BENCHMARKS.md.)

mod common;

use anonymous_results::{Service, auth::Rpc, proto};
use common::{Client, TestServer, TestStore};

/// One call's storage requests and depth, as the service counted them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Depth {
    requests: u64,
    depth: u64,
}

/// What one call of `rpc` through `service` made of storage: `call` runs it.
async fn measure<F: std::future::Future>(service: &Service, rpc: Rpc, call: F) -> (F::Output, Depth) {
    let (requests, depth) = service.metrics().storage_of(rpc);
    let output = call.await;
    let (after_requests, after_depth) = service.metrics().storage_of(rpc);
    (output, Depth { requests: after_requests - requests, depth: after_depth - depth })
}

fn allocate(query_id: &str) -> proto::AllocateRequest {
    proto::AllocateRequest { query_id: query_id.into(), ..Default::default() }
}

fn commit(allocated: &proto::AllocateResponse) -> proto::CommitRequest {
    proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    }
}

fn resolve(id: &str) -> proto::ResolveRequest {
    proto::ResolveRequest { result_id: id.into(), ..Default::default() }
}

/// Each call's depth on `store`, on the replica that allocated (`warm`) and on one that has not seen the
/// result (`cold`).
async fn depths(store: &TestStore) -> Vec<(&'static str, Depth)> {
    // A retention, so that a Renew has an expiry to move.
    let config = anonymous_results::Config::from_toml(&store.config_toml_with("retention = \"1h\"", "")).unwrap();
    let a = TestServer::start(&config).await;
    let service = a.service.clone();
    let client: &Client = &a.client;
    let mut seen = Vec::new();
    // A second replica, for the cold calls.
    let b = TestServer::start(&config).await;

    let (allocated, depth) = measure(&service, Rpc::Allocate, client.allocate(allocate("q"))).await;
    let allocated = allocated.unwrap();
    seen.push(("Allocate", depth));
    let (_, depth) = measure(&service, Rpc::Allocate, client.allocate(allocate("q"))).await;
    seen.push(("Allocate again (warm)", depth));
    store.write(allocated.sink.as_ref().unwrap(), "part-0.csv", b"a\n1\n").await;
    let (committed, depth) = measure(&service, Rpc::Commit, client.commit(commit(&allocated))).await;
    committed.unwrap();
    seen.push(("Commit (warm)", depth));
    let (_, depth) = measure(&service, Rpc::Resolve, client.resolve(resolve(&allocated.result_id))).await;
    seen.push(("Resolve (warm)", depth));
    let (_, depth) = measure(&b.service, Rpc::Resolve, b.client.resolve(resolve(&allocated.result_id))).await;
    seen.push(("Resolve (cold)", depth));
    let ttl = Some(prost_types::Duration { seconds: 100 * 24 * 3600, nanos: 0 });
    let renew = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl };
    let (_, depth) = measure(&service, Rpc::Renew, client.renew(renew)).await;
    seen.push(("Renew (warm)", depth));

    // A second result, committed through A, for the cold Commit and Release through B.
    let other = client.allocate(allocate("other")).await.unwrap();
    store.write(other.sink.as_ref().unwrap(), "part-0.csv", b"a\n1\n").await;
    let (_, depth) = measure(&b.service, Rpc::Commit, b.client.commit(commit(&other))).await;
    seen.push(("Commit (cold)", depth));

    let aborted = client.allocate(allocate("aborted")).await.unwrap();
    let abort =
        |id: &str| proto::AbortRequest { result_id: id.into(), commit_token: String::new(), reason: "r".into() };
    let (_, depth) = measure(&service, Rpc::Abort, client.abort(abort(&aborted.result_id))).await;
    seen.push(("Abort (warm)", depth));
    let cold_abort = client.allocate(allocate("aborted-cold")).await.unwrap();
    let (_, depth) = measure(&b.service, Rpc::Abort, b.client.abort(abort(&cold_abort.result_id))).await;
    seen.push(("Abort (cold)", depth));

    let release = |id: &str| proto::ReleaseRequest { result_id: id.into() };
    // Committed through A, never seen by B.
    let unseen = client.allocate(allocate("unseen")).await.unwrap();
    store.write(unseen.sink.as_ref().unwrap(), "part-0.csv", b"a\n1\n").await;
    client.commit(commit(&unseen)).await.unwrap();
    let (_, depth) = measure(&service, Rpc::Release, client.release(release(&allocated.result_id))).await;
    seen.push(("Release (warm)", depth));
    let (_, depth) = measure(&b.service, Rpc::Release, b.client.release(release(&unseen.result_id))).await;
    seen.push(("Release (cold)", depth));
    a.stop().await;
    b.stop().await;
    seen
}

/// Checks each call's depth against `floors`, printing the whole table first.
fn check(store: &str, seen: &[(&'static str, Depth)], floors: &[(&str, u64)]) {
    for (call, depth) in seen {
        eprintln!("{store} {call:24} requests {:2} depth {:2}", depth.requests, depth.depth);
    }
    let depths: Vec<(&str, u64)> = seen.iter().map(|(call, depth)| (*call, depth.depth)).collect();
    assert_eq!(depths, floors, "a call's depth on {store} changed: update BENCHMARKS.md's floors if it went down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_waits_on_its_floor_of_round_trips_on_the_local_backend() {
    let seen = depths(&TestStore::local()).await;
    // A call's storage work on a filesystem is one blocking task per step: Allocate and Commit are one each.
    let floors = [
        ("Allocate", 1),
        ("Allocate again (warm)", 4),
        ("Commit (warm)", 1),
        ("Resolve (warm)", 0),
        ("Resolve (cold)", 1),
        ("Renew (warm)", 1),
        ("Commit (cold)", 1),
        ("Abort (warm)", 2),
        ("Abort (cold)", 2),
        ("Release (warm)", 1),
        ("Release (cold)", 2),
    ];
    check("local", &seen, &floors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_waits_on_its_floor_of_round_trips_on_s3() {
    let Some(store) = TestStore::moto().await else { return };
    let seen = depths(&store).await;
    let floors = [
        ("Allocate", 2),
        ("Allocate again (warm)", 4),
        ("Commit (warm)", 2),
        ("Resolve (warm)", 0),
        ("Resolve (cold)", 1),
        ("Renew (warm)", 1),
        ("Commit (cold)", 2),
        ("Abort (warm)", 2),
        ("Abort (cold)", 2),
        ("Release (warm)", 1),
        ("Release (cold)", 2),
    ];
    check("moto", &seen, &floors);
}
