//! The local (shared-filesystem) backend: the conformance suite over a temporary folder, and what only a
//! filesystem has (symbolic links, absolute paths, files left by a crash).

mod common;
mod conformance;

use std::{fs, os::unix::fs::symlink, path::Path, time::Duration};

use anonymous_results::proto::{self, ResultState};
use anonymous_results::storage::{Fault, Faults, Operation};
use common::{Fixture, TestServer, TestStore, assert_released, assert_status, file, state};
use tonic::Code;

all_conformance_tests!(TestStore::local());

#[tokio::test]
async fn the_sink_is_an_absolute_folder_with_no_storage_options() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("query-1").await;
    let sink = allocated.sink.as_ref().unwrap();
    let root = fs::canonicalize(fx.store.local_root().unwrap()).unwrap();
    assert_eq!(sink.uri, format!("{}/{}/", root.display(), allocated.result_id));
    assert!(sink.storage_options.is_empty());
    assert!(std::path::Path::new(&sink.uri).is_dir(), "Allocate creates the sink folder");
    fx.stop().await;
}

#[tokio::test]
async fn resolve_answers_absolute_paths_holding_the_committed_bytes() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "year=2024/part-0.parquet", b"PAR1...PAR1").await;
    fx.commit(&allocated, vec![file("year=2024/part-0.parquet", 11, Some(3))]).await.unwrap();
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let location = &resolved.locations[0];
    assert!(location.url.starts_with('/'), "{}", location.url);
    assert!(location.expires_at.is_none(), "a path does not expire");
    assert_eq!(fs::read(&location.url).unwrap(), b"PAR1...PAR1");
    fx.stop().await;
}

#[tokio::test]
async fn commit_refuses_a_symbolic_link_in_the_sink() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("query-1").await;
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    fx.write(&allocated, "part-0.parquet", b"data").await;
    symlink("/etc/passwd", format!("{sink}passwd.parquet")).unwrap();
    let listed = fx.commit(&allocated, vec![file("passwd.parquet", 4, None)]).await;
    assert_status(listed, Code::FailedPrecondition, &["passwd.parquet", "not a regular file"]);
    let discovered = fx.commit(&allocated, vec![]).await;
    assert_status(discovered, Code::FailedPrecondition, &["passwd.parquet", "not a regular file"]);
    // A linked folder is refused too, whatever it holds.
    fs::remove_file(format!("{sink}passwd.parquet")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("x.parquet"), b"data").unwrap();
    symlink(outside.path(), format!("{sink}linked")).unwrap();
    let through_link = fx.commit(&allocated, vec![file("linked/x.parquet", 4, None)]).await;
    assert_status(through_link, Code::FailedPrecondition, &["linked/x.parquet", "not in the sink"]);
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["linked", "not a regular file"]);
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    fx.stop().await;
}

#[tokio::test]
async fn a_sink_replaced_by_a_symbolic_link_is_refused() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("query-1").await;
    let sink = allocated.sink.as_ref().unwrap().uri.trim_end_matches('/').to_owned();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("part-0.parquet"), b"data").unwrap();
    fs::remove_dir(&sink).unwrap();
    symlink(outside.path(), &sink).unwrap();
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["not a regular file"]);
    let listed = fx.commit(&allocated, vec![file("part-0.parquet", 4, None)]).await;
    assert_status(listed, Code::FailedPrecondition, &["part-0.parquet"]);
    fx.stop().await;
}

#[tokio::test]
async fn health_is_serving_for_the_service_and_the_server() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let fx = Fixture::start(TestStore::local()).await;
    let mut health = HealthClient::new(fx.server.channel().await);
    for service in ["", "anonymous_results.v1.AnonymousResults"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_status(unknown, Code::NotFound, &[]);
    fx.stop().await;
}

#[tokio::test]
async fn allocations_and_commits_survive_a_restart() {
    let store = TestStore::local();
    let config = store.config();
    let fx = Fixture::start(store).await;
    let pending = fx.allocate("pending").await;
    let done = fx.allocate("done").await;
    fx.write(&done, "part-0.parquet", b"data").await;
    fx.commit(&done, vec![]).await.unwrap();
    let Fixture { store, server } = fx;
    server.stop().await;

    let server = TestServer::start(&config).await;
    let fx = Fixture { store, server };
    let again = fx.allocate("pending").await;
    assert_eq!(again.result_id, pending.result_id);
    assert_eq!(again.commit_token, pending.commit_token);
    assert_eq!(state(&fx.resolve(&pending.result_id).await.unwrap().status.unwrap()), ResultState::Allocated);
    let resolved = fx.resolve(&done.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Committed);
    assert_eq!(resolved.locations.len(), 1);
    // The pending result can still be committed after the restart.
    fx.write(&pending, "part-0.parquet", b"late").await;
    assert_eq!(state(&fx.commit(&pending, vec![]).await.unwrap()), ResultState::Committed);
    fx.stop().await;
}

#[tokio::test]
async fn a_manifest_write_torn_by_a_crash_leaves_the_result_allocated() {
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    // What a crash in the middle of writing the manifest leaves: a partial temporary file beside where the
    // manifest goes, and no manifest.
    let control = root.join("_control/results").join(&allocated.result_id);
    fs::create_dir_all(&control).unwrap();
    fs::write(control.join(".anonymous-results-tmp-999-0-0"), b"{\"result_id\": \"trunc").unwrap();
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    let committed = fx.commit(&allocated, vec![]).await.unwrap();
    assert_eq!(state(&committed), ResultState::Committed);
    assert_eq!(committed.file_count, 1, "the control folder's leftovers are not result files");
    fx.stop().await;
}

#[tokio::test]
async fn a_corrupt_record_is_data_loss_not_a_panic() {
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    let record = root.join("_control/pending").join(format!("{}.json", allocated.result_id));
    fs::write(&record, b"not json").unwrap();
    assert_status(fx.resolve(&allocated.result_id).await, Code::DataLoss, &["_control/pending"]);
    fx.stop().await;
}

#[tokio::test]
async fn hostile_commits_touch_nothing_outside_the_root() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("results");
    let victim = outer.path().join("victim.txt");
    fs::write(&victim, b"keep me").unwrap();
    let server = TestServer::start(&common::local_config(&root)).await;
    let client = server.client.clone();
    let allocated =
        client.allocate(proto::AllocateRequest { query_id: "q".into(), ..Default::default() }).await.unwrap();
    for path in ["../../victim.txt", "/etc/passwd", "..", "a/../../../victim.txt"] {
        let request = proto::CommitRequest {
            result_id: allocated.result_id.clone(),
            commit_token: allocated.commit_token.clone(),
            files: vec![file(path, 7, None)],
        };
        assert_status(client.commit(request).await, Code::InvalidArgument, &["files[0].path"]);
    }
    let mut outside: Vec<_> = fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    outside.sort();
    assert_eq!(outside, vec!["results", "victim.txt"]);
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    server.stop().await;
}

#[tokio::test]
async fn the_service_mounts_in_a_tonic_server_of_ones_own() {
    let dir = tempfile::tempdir().unwrap();
    let service = anonymous_results::Service::from_config(&common::local_config(dir.path())).await.unwrap();
    let (_health, other_service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.grpc())
            .add_service(other_service)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            }),
    );
    let client = common::Client::connect(format!("http://{addr}")).await.unwrap();
    let allocated =
        client.allocate(proto::AllocateRequest { query_id: "mounted".into(), ..Default::default() }).await.unwrap();
    assert_eq!(state(allocated.status.as_ref().unwrap()), ResultState::Allocated);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The service names that reflection package `$version` lists over `channel`.
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        match answers.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
            }
            other => panic!("not a service list: {other:?}"),
        }
    }};
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let fx = Fixture::start(TestStore::local()).await;
    let v1 = reflected_services!(v1, fx.server.channel().await);
    let v1alpha = reflected_services!(v1alpha, fx.server.channel().await);
    for name in ["anonymous_results.v1.AnonymousResults", "grpc.health.v1.Health"] {
        assert!(v1.iter().any(|n| n == name), "v1 misses {name}: {v1:?}");
        assert!(v1alpha.iter().any(|n| n == name), "v1alpha misses {name}: {v1alpha:?}");
    }
    fx.stop().await;
}

/// The caller learns that the storage failed and doing what; the operator's log also says where on the
/// server's filesystem, which the caller does not see.
#[tokio::test]
async fn a_storage_failure_is_unavailable_and_the_log_names_the_path() {
    common::captured_logs();
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    let fx = Fixture::start(store).await;
    fx.allocate("before").await;
    // The folder of the query records replaced by a file: every new Allocate fails to write there.
    let queries = root.join("_control/queries");
    fs::remove_dir_all(&queries).unwrap();
    fs::write(&queries, b"not a folder").unwrap();
    let request = proto::AllocateRequest { query_id: "after".into(), ..Default::default() };
    let failed = fx.client().allocate(request).await;
    let message = failed.as_ref().err().map(|status| status.message().to_owned()).unwrap_or_default();
    assert_status(
        failed,
        Code::Unavailable,
        &["the local result storage failed", "a file is where a folder should be"],
    );
    assert!(!message.contains(root.to_str().unwrap()) && !message.contains("_control"), "{message}");
    let logs = common::captured_logs();
    assert!(logs.lines().any(|line| line.contains("WARN") && line.contains("_control/queries")), "{logs}");
    // The service keeps serving what does not need that folder.
    let resolved = fx.resolve("aaaaaaaaaaaaaaaaaaaaaaaaaa").await;
    assert_status(resolved, Code::NotFound, &[]);
    fs::remove_file(&queries).unwrap();
    fx.allocate("after").await;
    fx.stop().await;
}

/// A local store served on a clock of the test's own, with storage that fails as the faults say, and one
/// committed one-file result of query `query` (`retention`: the `[scheduler]` line, if any).
async fn committed_on_faulty_storage(
    retention: Option<&str>,
) -> (Fixture, std::sync::Arc<anonymous_results::clock::ManualClock>, std::sync::Arc<Faults>, proto::AllocateResponse) {
    let clock = std::sync::Arc::new(anonymous_results::clock::ManualClock::new());
    let store = TestStore::local();
    let config = match retention {
        Some(line) => anonymous_results::Config::from_toml(&store.config_toml_with(line, "")).unwrap(),
        None => store.config(),
    };
    let faults = Faults::new();
    let server = TestServer::start_unreliable(&config, clock.clone(), faults.clone()).await;
    let fx = Fixture { store, server };
    let allocated = fx.allocate("query").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    (fx, clock, faults, allocated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_is_finished_once_its_tombstone_is_old() {
    use anonymous_results::results::DELETION_TIMEOUT;
    let (fx, clock, faults, allocated) = committed_on_faulty_storage(None).await;
    // The sink's deletion, after the answer, fails: the deletion stops after its tombstone, as a crash would
    // leave it.
    let sink = allocated.sink.as_ref().unwrap().uri.trim_end_matches('/').to_owned();
    faults.fail(Operation::DeleteSink, Fault::Unavailable, 1);
    let release = || proto::ReleaseRequest { result_id: allocated.result_id.clone() };
    fx.client().release(release()).await.expect("answered once the tombstone is written");
    fx.server.service.deletions_done().await;
    assert_eq!(faults.injected(), 1, "the deletion after the answer did not run");
    assert!(Path::new(&sink).join("part-0.parquet").exists());
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Expired);
    // While the tombstone is fresh, another deleter leaves the deletion to its holder.
    fx.client().release(release()).await.unwrap();
    assert!(Path::new(&sink).join("part-0.parquet").exists(), "a fresh tombstone's deletion was taken over");
    // Once it is old, the next caller finishes it.
    clock.advance(DELETION_TIMEOUT + Duration::from_secs(1));
    fx.client().release(release()).await.unwrap();
    fx.server.service.deletions_done().await;
    assert!(!Path::new(&sink).exists(), "the files of the cut-short deletion are still there");
    // A Release's tombstone stays until its revisit entry comes due, for the commits still in flight.
    assert_released(fx.resolve(&allocated.result_id).await);
    let report = fx.server.service.prune(false).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_status(fx.resolve(&allocated.result_id).await, Code::NotFound, &[]);
    let records = fx.store.local_root().unwrap().join("_control/results").join(&allocated.result_id);
    assert!(!records.exists(), "the records of the cut-short deletion are still there");
    fx.stop().await;
}

/// The pruner deletes an expired result without a tombstone: a deletion cut short (its files' deletion
/// failed, as a crash would stop it) leaves the outcome, so the result reads EXPIRED, and the index entry; the
/// next pass finishes it, the outcome last but for the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruner_deletion_cut_short_keeps_its_index_entry_until_it_is_finished() {
    let (fx, clock, faults, allocated) = committed_on_faulty_storage(Some("retention = \"1h\"")).await;
    let service = &fx.server.service;
    assert_eq!(service.prune(false).await.unwrap().scheduled, 1);
    let root = fx.store.local_root().unwrap();
    let index = root.join("_control/expiry");
    let entries = || -> usize {
        fs::read_dir(&index).unwrap().map(|hour| fs::read_dir(hour.unwrap().path()).unwrap().count()).sum()
    };
    assert_eq!(entries(), 1);
    let sink = allocated.sink.as_ref().unwrap().uri.trim_end_matches('/').to_owned();
    let records = root.join("_control/results").join(&allocated.result_id);
    faults.fail(Operation::DeleteSink, Fault::Unavailable, 1);
    clock.advance(Duration::from_secs(3601));
    let report = service.prune(false).await.unwrap();
    assert_eq!((report.failed, report.expired.len()), (1, 0), "{report:?}");
    assert_eq!(entries(), 1, "the due entry stays: it is how the pruner comes back");
    assert!(Path::new(&sink).join("part-0.parquet").exists());
    assert!(records.join("outcome.json").exists(), "the outcome goes last");
    assert!(!records.join("tombstone.json").exists(), "an expired result needs no tombstone");
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Expired);
    // The next pass finishes it.
    let report = service.prune(false).await.unwrap();
    assert_eq!((report.failed, report.expired.len()), (0, 1), "{report:?}");
    assert!(!Path::new(&sink).exists(), "the files of the cut-short deletion are still there");
    assert!(!records.exists(), "the records of the cut-short deletion are still there");
    assert_status(fx.resolve(&allocated.result_id).await, Code::NotFound, &[]);
    assert_eq!(entries(), 0, "the entry outlived the deletion");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_in_use_is_rechecked_in_the_background_and_an_idle_one_before_answering() {
    let store = TestStore::local();
    let config = anonymous_results::Config::from_toml(&store.config_toml("refresh_interval = \"300ms\"")).unwrap();
    let a = Fixture { server: TestServer::start(&config).await, store };
    let b = TestServer::start(&config).await;
    let released_on_b = |allocated: &proto::AllocateResponse| {
        let (client, result_id) = (b.client.clone(), allocated.result_id.clone());
        async move { client.release(proto::ReleaseRequest { result_id }).await.unwrap() }
    };
    let committed = |query: &'static str| {
        let a = &a;
        async move {
            let allocated = a.allocate(query).await;
            a.write(&allocated, "part-0.parquet", b"data").await;
            a.commit(&allocated, vec![]).await.unwrap();
            allocated
        }
    };
    // In use: answered from memory at once, and checked again in the background.
    let busy = committed("busy").await;
    released_on_b(&busy).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = a.server.storage_requests();
    a.resolve(&busy.result_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.server.storage_requests() > before, "no background check");
    assert_released(a.resolve(&busy.result_id).await);
    // Idle for over twice the interval: checked before answering.
    let idle = committed("idle").await;
    released_on_b(&idle).await;
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_released(a.resolve(&idle.result_id).await);
    b.stop().await;
    a.stop().await;
}

/// 1,000 Releases at once: each answers at its tombstone, and their deletions run 64 at a time after the
/// answers (held here by a stall of each sink's deletion), so that the storage requests in flight stay
/// bounded and the process's memory with them; then every file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_releases_at_once_delete_64_at_a_time_after_their_answers() {
    use anonymous_results::{clock::SystemClock, results::BACKGROUND_DELETIONS};
    use futures::StreamExt;
    let store = TestStore::local();
    let faults = Faults::new();
    let server = TestServer::start_unreliable(&store.config(), std::sync::Arc::new(SystemClock), faults.clone()).await;
    let fx = Fixture { store, server };
    let results: Vec<proto::AllocateResponse> = futures::stream::iter(0..1000)
        .map(|i| {
            let fx = &fx;
            async move {
                let allocated = fx.allocate(&format!("q-{i}")).await;
                fx.write(&allocated, "part-0.csv", b"a\n1\n").await;
                fx.commit(&allocated, vec![]).await.unwrap();
                allocated
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let rss = || -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap().to_owned();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss();
    faults.fail(Operation::DeleteSink, Fault::Stall(Duration::from_millis(200)), 1000);
    let releases = results.iter().map(|allocated| {
        let client = fx.client();
        let id = allocated.result_id.clone();
        async move { client.release(proto::ReleaseRequest { result_id: id }).await.map(drop) }
    });
    for answer in futures::future::join_all(releases).await {
        answer.expect("answered at its tombstone");
    }
    let (mut most, mut queued) = (0, 0);
    for _ in 0..20 {
        let (running, active) = fx.server.service.deletions_running();
        (most, queued) = (most.max(active), queued.max(running));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most, BACKGROUND_DELETIONS, "not as many deletions at once as allowed, or more");
    assert!(queued > BACKGROUND_DELETIONS, "the deletions did not queue: at most {queued} at once");
    let grown_kib = rss().saturating_sub(before);
    assert!(grown_kib < 64 * 1024, "the queued deletions took {grown_kib} KiB");
    tokio::time::timeout(Duration::from_secs(60), fx.server.service.deletions_done()).await.expect("done in 60 s");
    assert_eq!(faults.injected(), 1000);
    for allocated in &results {
        assert!(!Path::new(&allocated.sink.as_ref().unwrap().uri).exists(), "a released sink is still there");
    }
    fx.stop().await;
}

/// A deletion whose revisit entry was lost (a crash between its tombstone and the entry, written at once):
/// the sweep finishes it once its tombstone is older than `DELETION_TIMEOUT`, and `prune --dry-run` would
/// have said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finishes_a_deletion_left_without_its_revisit_entry() {
    use anonymous_results::results::DELETION_TIMEOUT;
    let (fx, clock, faults, allocated) = committed_on_faulty_storage(None).await;
    faults.fail(Operation::DeleteSink, Fault::Unavailable, 1);
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    fx.server.service.deletions_done().await;
    let root = fx.store.local_root().unwrap();
    fs::remove_dir_all(root.join("_control/expiry")).unwrap();
    let service = &fx.server.service;
    assert!(service.sweep_all(false).await.unwrap().deletions.is_empty(), "a fresh tombstone's deletion was taken");
    clock.advance(DELETION_TIMEOUT + Duration::from_secs(1));
    let planned = service.sweep_all(true).await.unwrap();
    assert_eq!(planned.deletions.len(), 1, "{planned:?}");
    let id = allocated.result_id.clone();
    assert_eq!(
        service.sweep_all(false).await.unwrap().deletions.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        [id]
    );
    assert!(!Path::new(&allocated.sink.as_ref().unwrap().uri).exists(), "the files are still there");
    assert!(!root.join("_control/results").join(&allocated.result_id).exists(), "the records are still there");
    assert_status(fx.resolve(&allocated.result_id).await, Code::NotFound, &[]);
    fx.stop().await;
}
