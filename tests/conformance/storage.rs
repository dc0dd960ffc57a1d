//! The conformance suite, part three: the backend itself (listings in order within a range, ranged reads of
//! a sink's files), and the service over a backend that fails as it is told: every failure of every
//! operation is answered UNAVAILABLE or DEADLINE_EXCEEDED, a retry then succeeds, and nothing is left
//! half-done.

use std::{sync::Arc, time::Duration};

use anonymous_results::{
    Config,
    auth::Rpc,
    clock::ManualClock,
    metrics::Metrics,
    model::{ManifestFile, RelPath, ResultId},
    proto::{self, ResultState},
    storage::{Backend, Fault, Faults, Listing, Operation, READ_CHUNK, Storage, StorageError},
};
use futures::TryStreamExt;
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, state};

const HOUR: Duration = Duration::from_secs(3600);

/// The sink of `id` as Allocate hands it to a worker.
pub(super) fn worker_sink(storage: &Storage, id: &ResultId) -> proto::Sink {
    let sink = storage.sink(id);
    proto::Sink {
        uri: sink.uri,
        storage_options: sink.storage_options.into_iter().map(|(k, v)| (k, v.expose().to_owned())).collect(),
        credentials_expire_at: None,
    }
}

pub(super) async fn storage(store: &TestStore) -> Storage {
    Storage::from_config(&store.config(), Arc::new(Metrics::new())).await.expect("the storage opens")
}

pub async fn keys_are_listed_in_order_within_a_range(store: TestStore) {
    let storage = storage(&store).await;
    let folder = "_control/listing-test/";
    let names = ["0001/a", "0001/b", "0002/a", "0003/c", "0003/d", "0010/a"];
    // Written out of order: the listing sorts.
    for name in names.iter().rev() {
        storage.put_create(&format!("{folder}{name}"), b"x".to_vec()).await.expect("a record");
    }
    let keys = |names: &[&str]| names.iter().map(|name| format!("{folder}{name}")).collect::<Vec<_>>();
    let list = |range: Listing<'static>| {
        let storage = &storage;
        async move { storage.list_keys(folder, range).await.expect("a listing") }
    };
    assert_eq!(list(Listing::ALL).await, keys(&names), "every key, in order");
    let until = format!("{folder}0003/");
    assert_eq!(
        storage.list_keys(folder, Listing { until: Some(&until), ..Listing::ALL }).await.unwrap(),
        keys(&names[..3])
    );
    assert_eq!(list(Listing { limit: Some(4), ..Listing::ALL }).await, keys(&names[..4]), "the first four");
    let after = format!("{folder}0002/a");
    let range = Listing { after: Some(&after), limit: Some(2), ..Listing::ALL };
    assert_eq!(storage.list_keys(folder, range).await.unwrap(), keys(&names[3..5]), "two after 0002/a");
    let after = format!("{folder}0001/");
    assert_eq!(storage.list_keys(folder, Listing { after: Some(&after), ..Listing::ALL }).await.unwrap(), keys(&names));
    assert!(list(Listing { limit: Some(0), ..Listing::ALL }).await.is_empty());
    assert!(storage.list_keys("_control/no-such-folder/", Listing::ALL).await.unwrap().is_empty());
}

pub async fn a_file_is_read_in_ranges_as_a_stream_of_chunks(store: TestStore) {
    let storage = storage(&store).await;
    let id = ResultId::generate().unwrap();
    storage.prepare_sink(&id).await.unwrap();
    let sink = worker_sink(&storage, &id);
    let bytes: Vec<u8> = (0..(3 * READ_CHUNK + 123) as u32).map(|i| (i % 251) as u8).collect();
    store.write(&sink, "year=2024/part-0.parquet", &bytes).await;
    let size = bytes.len() as u64;
    let path = RelPath::parse("path", "year=2024/part-0.parquet").unwrap();
    // As a manifest of a release before pins has it.
    let committed = ManifestFile { path, size_bytes: size, row_count: None, pin: None };
    let read = |start: u64, end: u64| {
        let (storage, id, committed) = (&storage, &id, &committed);
        async move {
            let file = storage.read_range(id, committed, start..end).await?;
            assert_eq!(file.size, size);
            let chunks: Vec<bytes::Bytes> = file.chunks.try_collect().await?;
            assert!(chunks.iter().all(|chunk| chunk.len() <= READ_CHUNK), "a chunk over {READ_CHUNK} bytes");
            Ok::<_, StorageError>(chunks.concat())
        }
    };
    assert_eq!(read(0, size).await.unwrap(), bytes, "the whole file");
    assert_eq!(read(1000, 70_000).await.unwrap(), &bytes[1000..70_000], "a middle range");
    assert_eq!(read(size - 10, size).await.unwrap(), &bytes[bytes.len() - 10..], "the last bytes");
    assert_eq!(read(5, 5).await.unwrap(), b"", "an empty range");
    for (start, end) in [(size - 10, size + 1), (size + 1, size + 2), (10, 5)] {
        match read(start, end).await {
            Err(StorageError::RangeNotSatisfiable { size: told, .. }) => assert_eq!(told, size),
            other => panic!("{start}..{end} of {size} bytes: {other:?}"),
        }
    }
    let missing = RelPath::parse("path", "missing.parquet").unwrap();
    let missing = ManifestFile { path: missing, ..committed.clone() };
    assert!(matches!(storage.read_range(&id, &missing, 0..1).await, Err(StorageError::NotFound { .. })));
}

/// A result in the state `call` needs: allocated with a file written (Commit, Abort), or committed; none for
/// Allocate, which makes its own.
async fn prepare(fx: &Fixture, call: Rpc, name: &str) -> Option<proto::AllocateResponse> {
    if matches!(call, Rpc::Allocate) {
        return None;
    }
    let allocated = fx.allocate(name).await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    if matches!(call, Rpc::Resolve | Rpc::Release | Rpc::Renew | Rpc::ListResults) {
        fx.commit(&allocated, vec![]).await.expect("commit");
    }
    // The commit's index entry, written after its answer, is written before any failure is injected.
    fx.server.service.deletions_done().await;
    Some(allocated)
}

/// Makes `call` (on `result`, or for the query `name`): the state it answers.
async fn make(
    fx: &Fixture,
    call: Rpc,
    result: Option<&proto::AllocateResponse>,
    name: &str,
) -> Result<i32, anonymous_results_client::Error> {
    let client = fx.client();
    let Some(result) = result else {
        let request = proto::AllocateRequest { query_id: name.into(), ..Default::default() };
        return Ok(client.allocate(request).await?.status.expect("a status").state);
    };
    let id = result.result_id.clone();
    let status = match call {
        Rpc::Allocate | Rpc::Watch | Rpc::GetUsage => unreachable!("{call:?} is not made on a prepared result"),
        Rpc::Commit => return fx.commit(result, vec![]).await.map(|status| status.state),
        Rpc::Resolve => client.resolve(proto::ResolveRequest { result_id: id, ..Default::default() }).await?.status,
        Rpc::Abort => {
            let request = proto::AbortRequest {
                result_id: id,
                commit_token: result.commit_token.clone(),
                reason: "failed".into(),
            };
            client.abort(request).await?.status
        }
        Rpc::Release => client.release(proto::ReleaseRequest { result_id: id }).await?.status,
        Rpc::Renew => {
            let ttl = Some(prost_types::Duration { seconds: 7200, nanos: 0 });
            client.renew(proto::RenewRequest { result_id: id, ttl }).await?.status
        }
        // It changes nothing: the result is in it, as it stands.
        Rpc::ListResults => {
            let created_after = result.status.as_ref().and_then(|status| status.created_at);
            let request = proto::ListResultsRequest { created_after, page_size: 1000, ..Default::default() };
            let page = client.list_results(request).await?;
            page.results.into_iter().find(|status| status.result_id == id)
        }
        // It changes no state: what it answers is the sink, of a result still ALLOCATED.
        Rpc::RefreshSink => {
            let request = proto::RefreshSinkRequest { result_id: id, commit_token: result.commit_token.clone() };
            let refreshed = client.refresh_sink(request).await?;
            assert_eq!(refreshed.sink.expect("a sink").uri, result.sink.as_ref().expect("a sink").uri);
            return Ok(ResultState::Allocated as i32);
        }
    };
    Ok(status.expect("a status").state)
}

/// The state a successful `call` leaves.
fn expected(call: Rpc) -> ResultState {
    match call {
        Rpc::Allocate | Rpc::RefreshSink => ResultState::Allocated,
        Rpc::Commit | Rpc::Resolve | Rpc::Renew | Rpc::ListResults => ResultState::Committed,
        Rpc::Abort => ResultState::Aborted,
        Rpc::Release => ResultState::Expired,
        Rpc::Watch | Rpc::GetUsage => unreachable!("{call:?} is not made here"),
    }
}

pub async fn a_failing_store_is_answered_a_retry_succeeds_and_nothing_is_left_half_done(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let faults = Faults::new();
    // Kept until released: only what the service itself records brings the pruner back to a result. One
    // retry of a failed HTTP request (a test server that closes an idle connection as it is reused, as
    // Azurite does after 5 s, under load); the faults injected here are the backend's own, never retried.
    let config = Config::from_toml(&store.config_toml_with("commit_timeout = \"10m\"", "storage_retries = 1")).unwrap();
    let fx = Fixture { server: TestServer::start_unreliable(&config, clock.clone(), faults.clone()).await, store };
    let mut results = Vec::new();
    // GetUsage answers from memory: no storage request of its own to fail.
    for call in Rpc::ALL.into_iter().filter(|rpc| !matches!(rpc, Rpc::Watch | Rpc::GetUsage)) {
        for operation in Operation::ALL.into_iter().filter(|op| *op != Operation::ReadRange) {
            for fault in [Fault::Unavailable, Fault::Timeout] {
                if fault == Fault::Timeout
                    && !matches!(operation, Operation::PutCreate | Operation::Get | Operation::ListKeys)
                {
                    continue;
                }
                let name = format!("{call:?}-{operation:?}-{fault:?}");
                let result = prepare(&fx, call, &name).await;
                // The pruner has seen the committed results: they are no longer among those in flight.
                fx.server.service.prune(false).await.expect("a pruning pass");
                let before = faults.injected();
                faults.fail(operation, fault, 1);
                let first = make(&fx, call, result.as_ref(), &name).await;
                let injected = faults.injected() > before;
                faults.clear();
                if let Err(status) = &first {
                    assert!(injected, "{name}: failed with nothing injected: {status:?}");
                    let code = status.code();
                    assert!(matches!(code, Code::Unavailable | Code::DeadlineExceeded), "{name}: {status:?}");
                }
                // The retry succeeds (a Release that had gone through answers NOT_FOUND) and leaves the state
                // the call makes.
                match make(&fx, call, result.as_ref(), &name).await {
                    Ok(answered) => assert_eq!(answered, expected(call) as i32, "{name}: the retry's state"),
                    Err(status) if matches!(call, Rpc::Release) && status.code() == Code::NotFound => {}
                    Err(status) => panic!("{name}: the retry failed: {status:?}"),
                }
                // An Allocate repeated answers the result the first one made, if it made one.
                let result = match result {
                    Some(result) => result,
                    None => fx.allocate(&name).await,
                };
                results.push((name, result));
            }
        }
    }
    // Whatever the failures left is finished by the pruner in its time (deletions cut short and abandoned
    // allocations ten minutes later); then the rest is released. Every result is gone, files and records.
    let prune = || async {
        clock.advance(HOUR);
        let report = fx.server.service.prune(false).await.expect("a pruning pass");
        assert_eq!((report.failed, report.corrupt), (0, 0), "{report:?}");
    };
    prune().await;
    prune().await;
    for (name, result) in results.iter().filter(|(name, _)| !name.starts_with("Release")) {
        let release = proto::ReleaseRequest { result_id: result.result_id.clone() };
        match fx.client().release(release).await {
            Ok(_) => {}
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}"),
        }
    }
    prune().await;
    assert_eq!(fx.store.keys_under("_control/index/").await, Vec::<String>::new(), "the result index is empty");
    for (name, result) in &results {
        let left = fx.store.sink_files(result.sink.as_ref().unwrap()).await;
        assert!(left.is_empty(), "{name}: files left: {left:?}");
        match fx.resolve(&result.result_id).await {
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}"),
            Ok(answer) => panic!("{name}: still there: {:?}", answer.status.map(|s| state(&s))),
        }
    }
    fx.stop().await;
}
