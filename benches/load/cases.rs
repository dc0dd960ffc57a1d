//! What is measured: each call of the contract under load, against the baseline of a call that does nothing.

use std::{sync::Arc, time::Instant};

use anonymous_results::proto;
use futures::StreamExt;
use tonic::transport::Channel;

use super::{
    Error,
    common::{
        TestStore,
        auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as},
    },
    drive::{self, Budget, Stats},
    service::Running,
};

/// How many results are prepared at once.
const PREPARE_CONCURRENCY: usize = 64;

/// The baseline: grpc.health.v1 Check, a handler that does nothing (no token needed), through the same client
/// as the calls measured against it.
pub async fn baseline(service: &Running, concurrency: usize, budget: Budget) -> Result<Stats, Error> {
    drive::run(&service.channels, concurrency, budget, |channel, _| async move {
        client_as(channel, None).health().await.map(drop)
    })
    .await
}

/// Allocate of a new query each call.
pub async fn allocate(service: &Running, prefix: &str, concurrency: usize, budget: Budget) -> Result<Stats, Error> {
    let (auth, prefix) = (service.auth, Arc::new(prefix.to_owned()));
    drive::run(&service.channels, concurrency, budget, move |channel, n| {
        let prefix = prefix.clone();
        async move {
            let request = proto::AllocateRequest { query_id: format!("{prefix}-{n}"), ..Default::default() };
            client_as(channel, auth.then_some(SCHEDULER_TOKEN)).allocate(request).await.map(drop)
        }
    })
    .await
}

/// Commit of `count` prepared one-file results, one each call.
pub async fn commit(
    service: &Running,
    store: &TestStore,
    prefix: &str,
    concurrency: usize,
    count: usize,
) -> Result<Stats, Error> {
    let prepared = Arc::new(prepare(service, store, prefix, count, 1).await?);
    let auth = service.auth;
    drive::run(&service.channels, concurrency, Budget::Calls(count as u64), move |channel, n| {
        let allocated = prepared[n as usize].clone();
        async move { client_as(channel, auth.then_some(WORKER_TOKEN)).commit(commit_request(&allocated)).await.map(drop) }
    })
    .await
}

/// Resolve of committed results (`results` of them, in turn), each holding `files` files.
pub async fn resolve(
    service: &Running,
    results: &Arc<Vec<proto::AllocateResponse>>,
    concurrency: usize,
    budget: Budget,
    files: usize,
) -> Result<Stats, Error> {
    let (auth, results) = (service.auth, results.clone());
    drive::run(&service.channels, concurrency, budget, move |channel, n| {
        let result_id = results[n as usize % results.len()].result_id.clone();
        async move {
            let request = proto::ResolveRequest { result_id, url_ttl: None, ..Default::default() };
            let client = client_as(channel, auth.then_some(SCHEDULER_TOKEN));
            let answer = client.resolve(request).await?;
            match answer.locations.len() == files {
                true => Ok(()),
                false => Err(tonic::Status::internal(format!("{} locations, not {files}", answer.locations.len()))),
            }
        }
    })
    .await
}

/// `count` committed results of `files` files each.
pub async fn committed(
    service: &Running,
    store: &TestStore,
    prefix: &str,
    count: usize,
    files: usize,
) -> Result<Arc<Vec<proto::AllocateResponse>>, Error> {
    let prepared = prepare(service, store, prefix, count, files).await?;
    let commits = futures::stream::iter(&prepared)
        .enumerate()
        .map(|(n, allocated)| {
            let worker = service.worker(service.channels[n % service.channels.len()].clone());
            async move { worker.commit(commit_request(allocated)).await.map(drop) }
        })
        .buffer_unordered(PREPARE_CONCURRENCY);
    commits.collect::<Vec<_>>().await.into_iter().collect::<Result<(), _>>()?;
    Ok(Arc::new(prepared))
}

/// Commit of prepared results of `files` files each, one at a time: each call's latency.
pub async fn commit_large(
    service: &Running,
    store: &TestStore,
    prefix: &str,
    count: usize,
    files: usize,
) -> Result<Stats, Error> {
    let prepared = Arc::new(prepare(service, store, prefix, count, files).await?);
    let auth = service.auth;
    drive::run(&service.channels, 1, Budget::Calls(count as u64), move |channel, n| {
        let allocated = prepared[n as usize].clone();
        async move { client_as(channel, auth.then_some(WORKER_TOKEN)).commit(commit_request(&allocated)).await.map(drop) }
    })
    .await
}

/// `watchers` Watch streams on one allocated result, then its commit: how long after the Commit was sent each
/// watcher saw COMMITTED.
pub async fn watch_fan_out(service: &Running, store: &TestStore, watchers: usize) -> Result<Stats, Error> {
    let allocated = prepare(service, store, "watched", 1, 1).await?.remove(0);
    let (ready, mut all_ready) = tokio::sync::mpsc::channel::<()>(watchers);
    let (go, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let mut streams = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let channel = service.channels[w % service.channels.len()].clone();
        let scheduler = service.scheduler(channel);
        let (ready, mut sent) = (ready.clone(), go.subscribe());
        let result_id = allocated.result_id.clone();
        streams.push(tokio::spawn(async move {
            let mut updates = scheduler.subscribe(result_id).await?;
            let first = updates.message().await?.ok_or_else(|| tonic::Status::internal("no first status"))?;
            if first.state() != proto::ResultState::Allocated {
                return Err(tonic::Status::internal(format!("first status {:?}", first.state())));
            }
            let _ = ready.send(()).await;
            let next = updates.message().await?.ok_or_else(|| tonic::Status::internal("no second status"))?;
            let seen = Instant::now();
            let sent = sent.recv().await.map_err(|e| tonic::Status::internal(e.to_string()))?;
            match next.state() {
                proto::ResultState::Committed => Ok(seen.saturating_duration_since(sent)),
                other => Err(tonic::Status::internal(format!("second status {other:?}"))),
            }
        }));
    }
    drop(ready);
    for _ in 0..watchers {
        all_ready.recv().await.ok_or("a watcher ended before its first status")?;
    }
    let worker = service.worker(service.channels[0].clone());
    let sent = Instant::now();
    let _ = go.send(sent);
    worker.commit(commit_request(&allocated)).await?;
    let mut latencies = Vec::with_capacity(watchers);
    for stream in streams {
        latencies.push(stream.await??);
    }
    let spread = latencies.iter().max().copied().unwrap_or_default();
    Ok(Stats::of(latencies, spread))
}

/// `count` allocated results with `files` files written into each sink (not committed), `PREPARE_CONCURRENCY`
/// writes at a time.
pub async fn prepare(
    service: &Running,
    store: &TestStore,
    prefix: &str,
    count: usize,
    files: usize,
) -> Result<Vec<proto::AllocateResponse>, Error> {
    let allocations = futures::stream::iter(0..count)
        .map(|n| {
            let scheduler = service.scheduler(service.channels[n % service.channels.len()].clone());
            let request = proto::AllocateRequest { query_id: format!("{prefix}-{n}"), ..Default::default() };
            async move { scheduler.allocate(request).await }
        })
        .buffered(PREPARE_CONCURRENCY);
    let prepared: Vec<proto::AllocateResponse> =
        allocations.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
    let writes = prepared.iter().flat_map(|allocated| (0..files).map(move |f| (allocated, f)));
    futures::stream::iter(writes)
        .for_each_concurrent(PREPARE_CONCURRENCY, |(allocated, f)| async move {
            let sink = allocated.sink.as_ref().expect("a sink");
            store.write(sink, &format!("part-{f:05}.parquet"), b"0123456789").await;
        })
        .await;
    Ok(prepared)
}

/// The Commit of `allocated`, taking every file in its sink.
fn commit_request(allocated: &proto::AllocateResponse) -> proto::CommitRequest {
    proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: Vec::new(),
    }
}

/// Allocate, write, Commit and Resolve, `cycles` times, `concurrency` at a time.
pub async fn cycles(
    service: &Running,
    store: &Arc<TestStore>,
    prefix: &str,
    concurrency: usize,
    cycles: u64,
) -> Result<Stats, Error> {
    let (auth, store, prefix) = (service.auth, store.clone(), Arc::new(prefix.to_owned()));
    drive::run(&service.channels, concurrency, Budget::Calls(cycles), move |channel, n| {
        let (store, prefix) = (store.clone(), prefix.clone());
        async move { cycle(channel, auth, &store, &format!("{prefix}-{n}")).await }
    })
    .await
}

async fn cycle(channel: Channel, auth: bool, store: &TestStore, query_id: &str) -> Result<(), tonic::Status> {
    let scheduler = client_as(channel.clone(), auth.then_some(SCHEDULER_TOKEN));
    let request = proto::AllocateRequest { query_id: query_id.to_owned(), ..Default::default() };
    let allocated = scheduler.allocate(request).await?;
    store.write(allocated.sink.as_ref().expect("a sink"), "part-0.parquet", b"0123456789").await;
    client_as(channel, auth.then_some(WORKER_TOKEN)).commit(commit_request(&allocated)).await?;
    let request = proto::ResolveRequest { result_id: allocated.result_id, url_ttl: None, ..Default::default() };
    let answer = scheduler.resolve(request).await?;
    match answer.locations.len() {
        1 => Ok(()),
        n => Err(tonic::Status::internal(format!("{n} locations, not 1"))),
    }
}
