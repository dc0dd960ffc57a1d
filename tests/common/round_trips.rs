//! Each call of the contract made once, in the order a query's life makes them, on the replica that allocated
//! (warm) and on one that has not seen the result (cold): what each made of storage (its requests, and the
//! round trips it waited on one after another, as the service's storage layer counted them) and how long it
//! took. tests/latency.rs holds the depths; the load benchmark's `latency` part times them behind a store
//! far away.

use std::time::{Duration, Instant};

use anonymous_results::{auth::Rpc, proto};

use super::{TestServer, TestStore};

/// One call, measured.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub call: &'static str,
    pub requests: u64,
    pub depth: u64,
    pub latency: Duration,
}

/// Every call made by [`each_call`], in its order, with the floor of its depth on an object store (the
/// latency benchmark's targets; see BENCHMARKS.md).
pub const CALLS: [(&str, u64); 11] = [
    ("Allocate", 2),
    ("Allocate again (warm)", 4),
    ("Commit (warm)", 2),
    ("Resolve (warm)", 0),
    ("Resolve (cold)", 1),
    ("Renew (warm)", 1),
    ("Commit (cold)", 2),
    ("Abort (warm)", 1),
    ("Abort (cold)", 2),
    ("Release (warm)", 1),
    ("Release (cold)", 2),
];

/// Times `call`, a call of `rpc` through `server`, with what it made of storage.
async fn measure<T, F: std::future::Future<Output = T>>(
    server: &TestServer,
    name: &'static str,
    rpc: Rpc,
    call: F,
) -> (T, Measured) {
    let (requests, depth) = server.service.metrics().storage_of(rpc);
    let started = Instant::now();
    let output = call.await;
    let latency = started.elapsed();
    let (after_requests, after_depth) = server.service.metrics().storage_of(rpc);
    (output, Measured { call: name, requests: after_requests - requests, depth: after_depth - depth, latency })
}

fn allocate(query_id: String) -> proto::AllocateRequest {
    proto::AllocateRequest { query_id, ..Default::default() }
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

fn abort(id: &str) -> proto::AbortRequest {
    proto::AbortRequest { result_id: id.into(), commit_token: String::new(), reason: "r".into() }
}

fn release(id: &str) -> proto::ReleaseRequest {
    proto::ReleaseRequest { result_id: id.into() }
}

/// Makes each call of [`CALLS`] once, through `a` (the warm replica) and `b` (the cold one), both over
/// `store` (which the worker's files are written to directly); `tag` keeps the queries of several runs apart.
/// The services need a retention (so that Renew has an expiry to move). Panics if a call fails.
pub async fn each_call(a: &TestServer, b: &TestServer, store: &TestStore, tag: &str) -> Vec<Measured> {
    let query = |name: &str| format!("{tag}-{name}");
    let mut seen = Vec::new();
    let file = |allocated: &proto::AllocateResponse| {
        let sink = allocated.sink.clone().expect("a sink");
        async move { store.write(&sink, "part-0.csv", b"a\n1\n").await }
    };

    let (allocated, m) = measure(a, "Allocate", Rpc::Allocate, a.client.allocate(allocate(query("q")))).await;
    let allocated = allocated.expect("Allocate");
    seen.push(m);
    let (again, m) = measure(a, "Allocate again (warm)", Rpc::Allocate, a.client.allocate(allocate(query("q")))).await;
    again.expect("Allocate again");
    seen.push(m);
    file(&allocated).await;
    let (committed, m) = measure(a, "Commit (warm)", Rpc::Commit, a.client.commit(commit(&allocated))).await;
    committed.expect("Commit");
    seen.push(m);
    let (resolved, m) =
        measure(a, "Resolve (warm)", Rpc::Resolve, a.client.resolve(resolve(&allocated.result_id))).await;
    resolved.expect("Resolve");
    seen.push(m);
    let (resolved, m) =
        measure(b, "Resolve (cold)", Rpc::Resolve, b.client.resolve(resolve(&allocated.result_id))).await;
    resolved.expect("Resolve cold");
    seen.push(m);
    let ttl = Some(prost_types::Duration { seconds: 100 * 24 * 3600, nanos: 0 });
    let renew = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl };
    let (renewed, m) = measure(a, "Renew (warm)", Rpc::Renew, a.client.renew(renew)).await;
    renewed.expect("Renew");
    seen.push(m);

    let other = a.client.allocate(allocate(query("other"))).await.expect("Allocate");
    file(&other).await;
    let (committed, m) = measure(b, "Commit (cold)", Rpc::Commit, b.client.commit(commit(&other))).await;
    committed.expect("Commit cold");
    seen.push(m);

    let aborted = a.client.allocate(allocate(query("aborted"))).await.expect("Allocate");
    let (answer, m) = measure(a, "Abort (warm)", Rpc::Abort, a.client.abort(abort(&aborted.result_id))).await;
    answer.expect("Abort");
    seen.push(m);
    let cold_abort = a.client.allocate(allocate(query("aborted-cold"))).await.expect("Allocate");
    let (answer, m) = measure(b, "Abort (cold)", Rpc::Abort, b.client.abort(abort(&cold_abort.result_id))).await;
    answer.expect("Abort cold");
    seen.push(m);

    // Committed through A, never seen by B.
    let unseen = a.client.allocate(allocate(query("unseen"))).await.expect("Allocate");
    file(&unseen).await;
    a.client.commit(commit(&unseen)).await.expect("Commit");
    let (answer, m) = measure(a, "Release (warm)", Rpc::Release, a.client.release(release(&allocated.result_id))).await;
    answer.expect("Release");
    seen.push(m);
    let (answer, m) = measure(b, "Release (cold)", Rpc::Release, b.client.release(release(&unseen.result_id))).await;
    answer.expect("Release cold");
    seen.push(m);
    seen
}
