//! The client crate's `Client` against a real service: its retries (and what it does not retry), its deadline,
//! every page of a Resolve, a watch that outlives a restart of the service, and a token file rotated in use.
//! (TLS and mutual TLS through it: tests/tls.rs.)

mod common;

use std::{sync::Arc, time::Duration};

use anonymous_results::{
    Config, Service,
    clock::SystemClock,
    proto::{self, ResultState},
    storage::{Fault, Faults, Operation},
};
use anonymous_results_client::{Client, RetryPolicy, Token, is_final};
use common::{Fixture, TestServer, TestStore, assert_status, auth, file, state};
use futures::StreamExt;
use tokio::net::TcpListener;
use tonic::Code;

fn allocate(query_id: &str) -> proto::AllocateRequest {
    proto::AllocateRequest { query_id: query_id.into(), ..Default::default() }
}

/// A client of `server` with the default retries.
async fn retrying(server: &TestServer) -> Client {
    Client::connect(format!("http://{}", server.addr)).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_until_the_service_answers() {
    let store = TestStore::local();
    let faults = Faults::new();
    let server = TestServer::start_unreliable(&store.config(), Arc::new(SystemClock), faults.clone()).await;
    // Each Allocate's first storage write fails twice: the service answers UNAVAILABLE twice.
    faults.fail(Operation::PutCreate, Fault::Unavailable, 2);
    let allocated = retrying(&server).await.allocate(allocate("q")).await.expect("the third attempt is answered");
    assert_eq!(faults.injected(), 2, "the client gave up or went on retrying");
    assert_eq!(state(allocated.status.as_ref().unwrap()), ResultState::Allocated);
    // The same outage without retries: the first answer is the caller's.
    faults.fail(Operation::PutCreate, Fault::Unavailable, 1);
    let once = server.client.allocate(allocate("other")).await.unwrap_err();
    assert_eq!((once.code(), once.attempts(), once.is_retryable()), (Code::Unavailable, 1, true));
    // A longer outage than the policy waits for: the last answer, with the count of attempts.
    faults.fail(Operation::PutCreate, Fault::Unavailable, 10);
    let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
    let spent = retrying(&server).await.with_retry(policy).allocate(allocate("third")).await.unwrap_err();
    assert_eq!((spent.code(), spent.attempts()), (Code::Unavailable, 3));
    assert!(spent.message().contains("PutCreate"), "{spent}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_not_up_yet_is_waited_for() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let policy = RetryPolicy { max_attempts: 20, max_backoff: Duration::from_millis(200), ..RetryPolicy::default() };
    let client = Client::builder(format!("http://{addr}")).retry(policy).connect_lazy().unwrap();
    let refused = client.with_retry(RetryPolicy::NEVER).allocate(allocate("early")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let store = TestStore::local();
    let config = store.config();
    let starting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listener = TcpListener::bind(addr).await.expect("the port again");
        let service = Service::from_config(&config).await.unwrap();
        anonymous_results::serve(service, listener, std::future::pending()).await
    });
    let allocated = client.allocate(allocate("q")).await.expect("answered once the service is up");
    assert!(!allocated.result_id.is_empty());
    starting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_other_than_unavailable_are_not_retried() {
    let fx = Fixture::start(TestStore::local()).await;
    let client = retrying(&fx.server).await;
    let allocated = client.allocate(allocate("q")).await.unwrap();
    let before = fx.server.storage_requests();
    // Files missing: FAILED_PRECONDITION, sent once.
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![file("missing.parquet", 1, None)],
    };
    let refused = client.commit(commit.clone()).await.unwrap_err();
    assert_eq!((refused.code(), refused.attempts(), refused.is_retryable()), (Code::FailedPrecondition, 1, false));
    let one_commit = fx.server.storage_requests() - before;
    let again = fx.server.client.commit(commit).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(fx.server.storage_requests() - before, 2 * one_commit, "the retrying client sent it more than once");
    let unknown = client.resolve(proto::ResolveRequest { result_id: "e".repeat(26), ..Default::default() }).await;
    assert_status(unknown, Code::NotFound, &[]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_bounds_the_call_and_can_be_set_per_call() {
    let store = TestStore::local();
    let faults = Faults::new();
    let server = TestServer::start_unreliable(&store.config(), Arc::new(SystemClock), faults.clone()).await;
    let client =
        Client::builder(format!("http://{}", server.addr)).deadline(Duration::from_secs(30)).connect().await.unwrap();
    faults.fail(Operation::PutCreate, Fault::Stall(Duration::from_secs(3)), 1);
    let started = std::time::Instant::now();
    let late = client.with_deadline(Duration::from_millis(300)).allocate(allocate("q")).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late}");
    assert!(started.elapsed() < Duration::from_secs(2), "the deadline did not cut the call: {:?}", started.elapsed());
    // The client's own deadline is untouched by the override.
    client.allocate(allocate("r")).await.expect("within the default deadline");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_all_follows_the_pages_to_the_last() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("q").await;
    for i in 0..5 {
        fx.write(&allocated, &format!("part-{i}.csv"), format!("row {i}\n").as_bytes()).await;
    }
    fx.commit(&allocated, vec![]).await.unwrap();
    let client = retrying(&fx.server).await;
    let request = proto::ResolveRequest { result_id: allocated.result_id.clone(), page_size: 2, ..Default::default() };
    let pages: Vec<_> = client.resolve_pages(request.clone()).collect().await;
    let sizes: Vec<usize> = pages.iter().map(|page| page.as_ref().unwrap().locations.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let all = client.resolve_all(request).await.unwrap();
    let whole = client
        .resolve(proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() })
        .await
        .unwrap();
    let paths = |locations: &[proto::Location]| locations.iter().map(|l| l.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&all.locations), paths(&whole.locations));
    assert_eq!(all.locations.len(), 5);
    assert_eq!(state(all.status.as_ref().unwrap()), ResultState::Committed);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_until_final_sees_the_commit_across_a_restart_of_the_service() {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml("shutdown_grace = \"100ms\"\n")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = Service::from_config(&config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(anonymous_results::serve(first, listener, async {
        let _ = stopped.await;
    }));
    let policy = RetryPolicy { max_attempts: 30, max_backoff: Duration::from_millis(200), ..RetryPolicy::default() };
    let client = Client::builder(format!("http://{addr}")).retry(policy).connect().await.unwrap();
    let allocated = client.allocate(allocate("q")).await.unwrap();
    let mut updates = Box::pin(client.watch(allocated.result_id.clone()));
    let current = updates.next().await.unwrap().unwrap();
    assert_eq!(current.state(), ResultState::Allocated);
    // The service stops (its watch streams end) and another starts on the same port over the same store.
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    let second = Service::from_config(&config).await.unwrap();
    let listener = TcpListener::bind(addr).await.expect("the port again");
    let restarted = tokio::spawn(anonymous_results::serve(second, listener, std::future::pending()));
    let worker = Client::connect(format!("http://{addr}")).await.unwrap();
    store.write(allocated.sink.as_ref().unwrap(), "part-0.csv", b"a\n1\n").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    worker.commit(commit).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), updates.next()).await.expect("a status").unwrap();
    let committed = next.expect("the watch subscribed again");
    assert_eq!(committed.state(), ResultState::Committed);
    assert!(is_final(&committed));
    assert!(updates.next().await.is_none(), "the watch goes on after a final state");
    let done = client.watch_until_final(allocated.result_id.clone()).await.unwrap();
    assert_eq!(done.state(), ResultState::Committed);
    let unknown = client.watch_until_final("e".repeat(26)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    restarted.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_rotated_while_the_client_is_in_use_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml(&auth::token_files(dir.path()))).unwrap();
    let server = TestServer::start(&config).await;
    let token_file = dir.path().join("mine.token");
    std::fs::write(&token_file, format!("{}\n", auth::SCHEDULER_TOKEN)).unwrap();
    let client = Client::builder(format!("http://{}", server.addr))
        .token(Token::file(&token_file).unwrap())
        .connect()
        .await
        .unwrap();
    client.allocate(allocate("before")).await.expect("the first token");
    // The operator rotates: the service's token file and the client's both get the new token.
    let rotated = "scheduler-rotated-Q2w9Er7tY5uI3oP1";
    std::fs::write(dir.path().join("scheduler.tokens"), format!("{rotated}\n")).unwrap();
    std::fs::write(&token_file, format!("# rotated\n{rotated}\n")).unwrap();
    // Once the service refuses the old token, the client is answered only because it read its file again.
    let old = auth::client_as(server.channel().await, Some(auth::SCHEDULER_TOKEN));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old.allocate(allocate("old")).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the service never read its token file again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        match client.allocate(allocate("after")).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Unauthenticated && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the rotated token was never read or sent: {e}"),
        }
    }
    assert_status(old.allocate(allocate("old")).await, Code::Unauthenticated, &[]);
    server.stop().await;
}
