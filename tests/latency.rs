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
    let a = TestServer::start(&store.config()).await;
    let service = a.service.clone();
    let client: &Client = &a.client;
    let mut seen = Vec::new();
    // A second replica, for the cold calls.
    let b = TestServer::start(&store.config()).await;

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
    let renew = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl: None };
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
    let (_, depth) = measure(&service, Rpc::Release, client.release(release(&allocated.result_id))).await;
    seen.push(("Release (warm)", depth));
    let (_, depth) = measure(&b.service, Rpc::Release, b.client.release(release(&other.result_id))).await;
    seen.push(("Release (cold)", depth));
    a.stop().await;
    b.stop().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local() {
    let seen = depths(&TestStore::local()).await;
    for (call, depth) in &seen {
        eprintln!("local {call:24} requests {:2} depth {:2}", depth.requests, depth.depth);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto() {
    let store = store_or_skip!(TestStore::moto());
    let seen = depths(&store).await;
    for (call, depth) in &seen {
        eprintln!("moto {call:24} requests {:2} depth {:2}", depth.requests, depth.depth);
    }
}
