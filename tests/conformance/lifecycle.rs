//! The conformance suite, part two: abort, release, renew, watch, retention and the pruner, on every backend.
//! Time is a clock the tests move by hand: no test waits for an expiry.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use anonymous_results::{
    Config,
    clock::{Clock, ManualClock},
    proto::{self, ResultState},
};
use futures::StreamExt;
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, assert_status, file, state};

const HOUR: Duration = Duration::from_secs(3600);

/// A service over `store` with `location` keys (retention, ...) and `service` settings, on `clock`.
async fn start(store: TestStore, location: &str, service: &str, clock: &Arc<ManualClock>) -> Fixture {
    let config = Config::from_toml(&store.config_toml_with(location, service)).expect("a valid configuration");
    let server = TestServer::start_with_clock(&config, clock.clone()).await;
    Fixture { store, server }
}

/// A replica of `fx`'s service: another server over the same storage and clock.
async fn replica(fx: &Fixture, location: &str, service: &str, clock: &Arc<ManualClock>) -> TestServer {
    let config = Config::from_toml(&fx.store.config_toml_with(location, service)).expect("a valid configuration");
    TestServer::start_with_clock(&config, clock.clone()).await
}

async fn committed(fx: &Fixture, query_id: &str) -> proto::AllocateResponse {
    let allocated = fx.allocate(query_id).await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.expect("commit");
    allocated
}

fn abort_request(allocated: &proto::AllocateResponse, token: &str, reason: &str) -> proto::AbortRequest {
    proto::AbortRequest { result_id: allocated.result_id.clone(), commit_token: token.into(), reason: reason.into() }
}

fn renew_request(id: &str, ttl: Option<Duration>) -> proto::RenewRequest {
    proto::RenewRequest { result_id: id.into(), ttl: ttl.map(|ttl| ttl.try_into().expect("a duration")) }
}

fn time(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    timestamp.expect("a timestamp").try_into().expect("a time")
}

/// Asserts `at` is `expected` to the second.
#[track_caller]
fn assert_about(at: SystemTime, expected: SystemTime) {
    let gap = at.duration_since(expected).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    assert!(gap < Duration::from_secs(2), "{at:?} is not {expected:?}");
}

pub async fn abort_by_the_worker_seals_it_and_deletes_its_files(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let status = fx
        .client()
        .abort(abort_request(&allocated, &allocated.commit_token, "the query failed: out of memory"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(state(&status), ResultState::Aborted);
    assert_eq!(status.abort_reason, "the query failed: out of memory");
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Aborted);
    assert_eq!(resolved.status.unwrap().abort_reason, "the query failed: out of memory");
    assert!(resolved.locations.is_empty());
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["aborted", "out of memory"]);
    // The files go after the answer.
    fx.server.service.deletions_done().await;
    assert!(fx.store.sink_files(allocated.sink.as_ref().unwrap()).await.is_empty(), "the files are deleted");
    // Aborting again answers the same status.
    let again = fx.client().abort(abort_request(&allocated, "", "another reason")).await.unwrap();
    assert_eq!(again.status.unwrap().abort_reason, "the query failed: out of memory");
    fx.stop().await;
}

pub async fn abort_by_the_scheduler_needs_no_token_but_a_wrong_one_is_refused(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    let other = fx.allocate("query-2").await;
    let wrong = fx.client().abort(abort_request(&allocated, &other.commit_token, "x")).await;
    assert_status(wrong, Code::PermissionDenied, &["commit_token"]);
    let status = fx.client().abort(abort_request(&allocated, "", "cancelled by the user")).await.unwrap();
    assert_eq!(state(status.status.as_ref().unwrap()), ResultState::Aborted);
    let unknown = proto::AbortRequest { result_id: "cccccccccccccccccccccccccc".into(), ..Default::default() };
    assert_status(fx.client().abort(unknown).await, Code::NotFound, &[]);
    fx.stop().await;
}

pub async fn abort_of_a_committed_result_is_failed_precondition(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = committed(&fx, "query-1").await;
    let result = fx.client().abort(abort_request(&allocated, &allocated.commit_token, "too late")).await;
    assert_status(result, Code::FailedPrecondition, &["already committed"]);
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Committed);
    assert_eq!(fx.store.fetch(&resolved.locations[0].url).await, b"data");
    fx.stop().await;
}

pub async fn release_deletes_the_files_and_records_now(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = committed(&fx, "query-1").await;
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let released = fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    assert_eq!(state(released.status.as_ref().unwrap()), ResultState::Expired);
    // From the answer on, the result is EXPIRED (its deletion runs after the answer).
    crate::common::assert_released(fx.resolve(&allocated.result_id).await);
    fx.server.service.deletions_done().await;
    // Its tombstone stays (for commits still in flight) until the pruner's revisit, DELETION_TIMEOUT later.
    crate::common::assert_released(fx.resolve(&allocated.result_id).await);
    assert!(fx.store.sink_files(allocated.sink.as_ref().unwrap()).await.is_empty());
    if let TestStore::Local { .. } = fx.store {
        assert!(!std::path::Path::new(&resolved.locations[0].url).exists());
    } else {
        assert!(reqwest::get(&resolved.locations[0].url).await.unwrap().status().is_client_error());
    }
    // A repeat answers EXPIRED while the tombstone stays (NOT_FOUND after).
    let again = fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    assert_eq!(state(again.status.as_ref().unwrap()), ResultState::Expired);
    // The query can be allocated again: a new result.
    let fresh = fx.allocate("query-1").await;
    assert_ne!(fresh.result_id, allocated.result_id);
    fx.stop().await;
}

pub async fn release_of_a_pending_result_deletes_it_too(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    // Before its deletion has run (its tombstone refuses the commit) and after.
    assert_status(fx.commit(&allocated, vec![]).await, Code::NotFound, &[]);
    fx.server.service.deletions_done().await;
    assert_status(fx.commit(&allocated, vec![]).await, Code::NotFound, &[]);
    assert!(fx.store.sink_files(allocated.sink.as_ref().unwrap()).await.is_empty());
    fx.stop().await;
}

pub async fn renew_extends_within_the_maximum_and_never_shortens(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "retention = \"1h\"\nmax_retention = \"3h\"", "", &clock).await;
    let allocated = committed(&fx, "query-1").await;
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    let committed_at = time(status.committed_at);
    assert_about(time(status.expires_at), committed_at + HOUR);

    let client = fx.client();
    let renewed = client.renew(renew_request(&allocated.result_id, Some(2 * HOUR))).await.unwrap();
    assert_about(time(renewed.status.unwrap().expires_at), clock.now() + 2 * HOUR);
    let capped = client.renew(renew_request(&allocated.result_id, Some(10 * HOUR))).await.unwrap();
    assert_about(time(capped.status.unwrap().expires_at), clock.now() + 3 * HOUR);
    let shorter = client.renew(renew_request(&allocated.result_id, Some(Duration::from_secs(60)))).await.unwrap();
    assert_about(time(shorter.status.unwrap().expires_at), clock.now() + 3 * HOUR);
    let resolved = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert_about(time(resolved.expires_at), clock.now() + 3 * HOUR);

    assert_status(client.renew(renew_request(&allocated.result_id, None)).await, Code::InvalidArgument, &["ttl"]);
    let pending = fx.allocate("query-2").await;
    let early = client.renew(renew_request(&pending.result_id, Some(HOUR))).await;
    assert_status(early, Code::FailedPrecondition, &["not committed"]);
    let unknown = client.renew(renew_request("dddddddddddddddddddddddddd", Some(HOUR))).await;
    assert_status(unknown, Code::NotFound, &[]);
    let too_long = proto::AllocateRequest {
        query_id: "query-3".into(),
        ttl: Some((4 * HOUR).try_into().unwrap()),
        ..Default::default()
    };
    assert_status(client.allocate(too_long).await, Code::InvalidArgument, &["ttl", "max_retention"]);
    fx.stop().await;
}

pub async fn without_retention_a_result_is_kept_until_released(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "", "", &clock).await;
    let allocated = committed(&fx, "query-1").await;
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert!(status.expires_at.is_none(), "kept forever: {status:?}");
    clock.advance(1000 * HOUR);
    let report = fx.server.service.prune(false).await.unwrap();
    assert!(report.expired.is_empty(), "{report:?}");
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Committed);
    fx.stop().await;
}

pub async fn watch_sends_the_current_state_then_each_change_until_a_final_one(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    let request = proto::WatchRequest { result_id: allocated.result_id.clone() };
    let mut updates = fx.client().subscribe(request.result_id.clone()).await.unwrap();
    let first = updates.next().await.unwrap().unwrap();
    assert_eq!(state(&first), ResultState::Allocated);
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), updates.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(state(&second), ResultState::Committed);
    assert_eq!(second.file_count, 1);
    assert!(updates.next().await.is_none(), "the stream ends after a final state");

    // A result already final: its state, then the end.
    let mut updates = fx.client().subscribe(request.result_id).await.unwrap();
    assert_eq!(state(&updates.next().await.unwrap().unwrap()), ResultState::Committed);
    assert!(updates.next().await.is_none());

    let aborted = fx.allocate("query-2").await;
    let mut updates = fx.client().subscribe(aborted.result_id.clone()).await.unwrap();
    assert_eq!(state(&updates.next().await.unwrap().unwrap()), ResultState::Allocated);
    fx.client().abort(abort_request(&aborted, "", "cancelled")).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), updates.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((state(&last), last.abort_reason.as_str()), (ResultState::Aborted, "cancelled"));
    assert!(updates.next().await.is_none());

    let unknown = "eeeeeeeeeeeeeeeeeeeeeeeeee";
    assert_status(fx.client().subscribe(unknown).await.map(|_| ()), Code::NotFound, &[]);
    fx.stop().await;
}

pub async fn a_commit_on_one_replica_reaches_a_watcher_on_another_within_the_refresh_interval(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let service = "refresh_interval = \"200ms\"";
    let a = start(store, "", service, &clock).await;
    let b = replica(&a, "", service, &clock).await;
    let allocated = a.allocate("query-1").await;
    a.write(&allocated, "part-0.parquet", b"data").await;
    let mut updates = a.client().subscribe(allocated.result_id.clone()).await.unwrap();
    assert_eq!(state(&updates.next().await.unwrap().unwrap()), ResultState::Allocated);
    let request = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![file("part-0.parquet", 4, None)],
    };
    let committed_at = std::time::Instant::now();
    b.client.clone().commit(request).await.unwrap();
    let update = tokio::time::timeout(Duration::from_secs(5), updates.next()).await.unwrap().unwrap().unwrap();
    let delay = committed_at.elapsed();
    assert_eq!(state(&update), ResultState::Committed);
    assert!(delay < Duration::from_millis(1500), "seen after {delay:?}; the refresh interval is 200ms");
    assert!(updates.next().await.is_none());
    b.stop().await;
    a.stop().await;
}

pub async fn the_pruner_deletes_expired_results_and_keeps_the_rest(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "retention = \"1h\"\nmax_retention = \"5h\"", "", &clock).await;
    let expiring = [committed(&fx, "a").await, committed(&fx, "b").await];
    let renewed = committed(&fx, "c").await;
    let long = {
        let request = proto::AllocateRequest {
            query_id: "d".into(),
            ttl: Some((4 * HOUR).try_into().unwrap()),
            ..Default::default()
        };
        let allocated = fx.client().allocate(request).await.unwrap();
        fx.write(&allocated, "part-0.parquet", b"data").await;
        fx.commit(&allocated, vec![]).await.unwrap();
        allocated
    };
    let service = &fx.server.service;
    clock.advance(HOUR / 2);
    let report = service.prune(false).await.unwrap();
    assert!(report.expired.is_empty() && report.abandoned.is_empty(), "{report:?}");
    assert_eq!(report.scheduled, 4, "the committed results are scheduled: {report:?}");
    fx.client().renew(renew_request(&renewed.result_id, Some(2 * HOUR))).await.unwrap();

    clock.advance(HOUR / 2 + Duration::from_secs(60));
    let report = service.prune(false).await.unwrap();
    let mut expired: Vec<String> = report.expired.iter().map(ToString::to_string).collect();
    expired.sort();
    let mut expected: Vec<String> = expiring.iter().map(|a| a.result_id.clone()).collect();
    expected.sort();
    assert_eq!(expired, expected, "{report:?}");
    for gone in &expiring {
        assert_status(fx.resolve(&gone.result_id).await, Code::NotFound, &[]);
        assert!(fx.store.sink_files(gone.sink.as_ref().unwrap()).await.is_empty());
    }
    for kept in [&renewed, &long] {
        let resolved = fx.resolve(&kept.result_id).await.unwrap();
        assert_eq!(state(resolved.status.as_ref().unwrap()), ResultState::Committed);
        assert_eq!(fx.store.fetch(&resolved.locations[0].url).await, b"data");
    }

    clock.advance(2 * HOUR);
    let report = service.prune(false).await.unwrap();
    assert_eq!(report.expired.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![renewed.result_id.clone()]);
    clock.advance(2 * HOUR);
    let report = service.prune(false).await.unwrap();
    assert_eq!(report.expired.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![long.result_id.clone()]);
    let report = service.prune(false).await.unwrap();
    assert_eq!(report, Default::default(), "nothing is left to do");
    fx.stop().await;
}

pub async fn the_pruner_abandons_allocations_past_their_commit_timeout(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "commit_timeout = \"10m\"", "", &clock).await;
    let forgotten = fx.allocate("forgotten").await;
    fx.write(&forgotten, "part-0.parquet", b"half-written").await;
    let done = committed(&fx, "done").await;
    let service = &fx.server.service;
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(service.prune(false).await.unwrap().abandoned, vec![]);
    let late = fx.allocate("late").await;

    clock.advance(Duration::from_secs(2 * 60));
    let report = service.prune(false).await.unwrap();
    assert_eq!(report.abandoned.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![forgotten.result_id.clone()]);
    let status = fx.resolve(&forgotten.result_id).await.unwrap().status.unwrap();
    assert_eq!(state(&status), ResultState::Aborted);
    assert!(status.abort_reason.contains("abandoned"), "{status:?}");
    assert!(fx.store.sink_files(forgotten.sink.as_ref().unwrap()).await.is_empty());
    assert_status(fx.commit(&forgotten, vec![]).await, Code::FailedPrecondition, &["aborted"]);
    assert_eq!(state(fx.resolve(&done.result_id).await.unwrap().status.as_ref().unwrap()), ResultState::Committed);
    assert_eq!(state(fx.resolve(&late.result_id).await.unwrap().status.as_ref().unwrap()), ResultState::Allocated);

    // An aborted result's record stays for commit_timeout, then goes.
    clock.advance(Duration::from_secs(11 * 60));
    let report = service.prune(false).await.unwrap();
    assert!(report.expired.iter().any(|id| id.to_string() == forgotten.result_id), "{report:?}");
    assert_status(fx.resolve(&forgotten.result_id).await, Code::NotFound, &[]);
    fx.stop().await;
}

pub async fn a_commit_after_the_deadline_is_failed_precondition(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "commit_timeout = \"10m\"", "", &clock).await;
    let allocated = fx.allocate("slow").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    clock.advance(Duration::from_secs(11 * 60));
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["commit_deadline"]);
    fx.stop().await;
}

/// Records another writer broke (an outcome and a pending allocation that are not JSON, one of a later
/// format): the pruner logs them, counts them and goes on; the results around them are pruned as usual.
pub async fn the_pruner_skips_records_it_cannot_interpret_and_serves_the_rest(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let fx = start(store, "retention = \"1h\"", "", &clock).await;
    let before = committed(&fx, "before").await;
    let broken_outcome = fx.allocate("broken-outcome").await;
    let broken_pending = fx.allocate("broken-pending").await;
    let later_format = fx.allocate("later-format").await;
    let after = committed(&fx, "after").await;
    let garbage = b"\x00{\"outcome\": not json\n\x1b[31m";
    fx.store.plant(&format!("_control/results/{}/outcome.json", broken_outcome.result_id), garbage).await;
    fx.store.plant(&format!("_control/pending/{}.json", broken_pending.result_id), garbage).await;
    let pending = format!("_control/pending/{}.json", later_format.result_id);
    let time = r#"{"secs_since_epoch": 1800000000, "nanos_since_epoch": 0}"#;
    let later = format!(
        r#"{{"format": 99, "result_id": "{}", "query_id": "later-format", "file_type": "parquet",
            "created_at": {time}, "ttl": null, "labels": {{}}, "commit_deadline": {time}}}"#,
        later_format.result_id
    );
    fx.store.plant(&pending, later.as_bytes()).await;
    clock.advance(2 * HOUR);
    let service = &fx.server.service;
    let report = service.prune(false).await.expect("a pass over broken records");
    let mut expired: Vec<String> = report.expired.iter().map(ToString::to_string).collect();
    expired.sort();
    let mut expected = vec![before.result_id.clone(), after.result_id.clone()];
    expected.sort();
    assert_eq!(expired, expected, "{report:?}");
    assert_eq!((report.corrupt, report.failed), (3, 0), "{report:?}");
    // The next pass skips them again, and fails on nothing.
    let report = service.prune(false).await.expect("another pass");
    assert_eq!((report.corrupt, report.failed, report.expired.len()), (3, 0, 0), "{report:?}");
    assert_status(fx.resolve(&broken_outcome.result_id).await, Code::DataLoss, &["outcome.json"]);
    fx.stop().await;
}

pub async fn two_pruners_racing_delete_each_result_and_fail_on_nothing(store: TestStore) {
    let clock = Arc::new(ManualClock::new());
    let location = "retention = \"1h\"\ncommit_timeout = \"10m\"";
    let a = start(store, location, "", &clock).await;
    let b = replica(&a, location, "", &clock).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(committed(&a, &format!("expiring-{i}")).await.result_id);
    }
    let mut abandoned = Vec::new();
    for i in 0..4 {
        abandoned.push(a.allocate(&format!("abandoned-{i}")).await.result_id);
    }
    clock.advance(2 * HOUR);
    let (from_a, from_b) = tokio::join!(a.server.service.prune(false), b.service.prune(false));
    let (from_a, from_b) = (from_a.expect("pruner A fails on nothing"), from_b.expect("pruner B fails on nothing"));
    // Where replicas racing on one key can both win (see `create_only_is_atomic_across_processes`), each
    // result is still handled, at least once, and nothing fails.
    let once = a.store.create_only_is_atomic_across_processes();
    let counted = |mut ids: Vec<String>| {
        ids.sort();
        if !once {
            ids.dedup();
        }
        ids
    };
    let abandoned_by_both =
        counted(from_a.abandoned.iter().chain(&from_b.abandoned).map(ToString::to_string).collect());
    abandoned.sort();
    assert_eq!(abandoned_by_both, abandoned, "each allocation abandoned once: {from_a:?} {from_b:?}");
    // A second round deletes the rest: the abandoned records expire commit_timeout after their abort.
    clock.advance(HOUR);
    let (again_a, again_b) = tokio::join!(a.server.service.prune(false), b.service.prune(false));
    let (again_a, again_b) = (again_a.expect("A"), again_b.expect("B"));
    // An expired result is deleted without a claim (no tombstone): two pruners at it at the same moment may
    // both delete it, and both count it; each is deleted, by one or both.
    let mut deleted: Vec<String> = [&from_a, &from_b, &again_a, &again_b]
        .iter()
        .flat_map(|report| report.expired.iter().map(ToString::to_string))
        .collect();
    deleted.sort();
    let most = deleted.chunk_by(|a, b| a == b).map(<[String]>::len).max().unwrap_or(0);
    assert!(most <= 2, "a result deleted more often than there are pruners: {deleted:?}");
    deleted.dedup();
    let mut expected: Vec<String> = ids.iter().chain(&abandoned).cloned().collect();
    expected.sort();
    assert_eq!(deleted, expected, "each result deleted");
    for id in &expected {
        assert_status(a.resolve(id).await, Code::NotFound, &[]);
    }
    b.stop().await;
    a.stop().await;
}
