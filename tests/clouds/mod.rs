//! What every object store does that a shared filesystem does not, tested the same way on each cloud's
//! test server (see the `cloud_tests!` invocations in `s3.rs`, `azure.rs` and `gcs.rs`): signed URLs that
//! the server checks, their lifetime, the host clients reach, outages and faults, and secrets kept out of
//! every log line and answer.

#![allow(dead_code)]

mod versions;

// Used by the stores whose URLs name versions (S3, GCS), not by Azure's tests.
#[allow(unused_imports)]
pub use versions::*;

use std::time::{Duration, SystemTime};

use anonymous_results::{Config, proto};
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, assert_status, fault::Fault, fault::FaultyLink, file};

/// Starts a service over `store` with `service` as its `[anonymous_results_service]` section.
pub async fn start_with(store: TestStore, service: &str) -> Fixture {
    let config = Config::from_toml(&store.config_toml(service)).expect("a valid configuration");
    let server = TestServer::start(&config).await;
    Fixture { store, server }
}

/// A result committed with one file, `part-0.parquet`, holding `bytes`.
pub async fn committed(fx: &Fixture, query_id: &str, bytes: &[u8]) -> proto::AllocateResponse {
    let allocated = fx.allocate(query_id).await;
    fx.write(&allocated, "part-0.parquet", bytes).await;
    fx.commit(&allocated, vec![]).await.unwrap();
    allocated
}

pub async fn resolve_with_ttl(fx: &Fixture, id: &str, seconds: i64) -> proto::ResolveResponse {
    let url_ttl = Some(prost_types::Duration { seconds, nanos: 0 });
    fx.client().resolve(proto::ResolveRequest { result_id: id.into(), url_ttl, ..Default::default() }).await.unwrap()
}

/// How long from now a location stays valid, as Resolve says.
fn valid_for(location: &proto::Location) -> f64 {
    let at: SystemTime = location.expires_at.unwrap().try_into().unwrap();
    at.duration_since(SystemTime::now()).unwrap_or_default().as_secs_f64()
}

pub async fn signed_urls_are_checked_by_the_server_tampered_and_expired_ones_refused(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = committed(&fx, "q", b"signed bytes").await;
    let resolved = resolve_with_ttl(&fx, &allocated.result_id, 1).await;
    let url = &resolved.locations[0].url;
    assert_eq!(fx.store.fetch(url).await, b"signed bytes");

    let other = url.replace("part-0.parquet", "part-1.parquet");
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 403, "a URL for another object: {other}");
    let mut forged = url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 403, "a changed signature: {forged}");

    let expires_at: SystemTime = resolved.locations[0].expires_at.unwrap().try_into().unwrap();
    tokio::time::sleep(expires_at.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(1100))
        .await;
    assert_eq!(reqwest::get(url).await.unwrap().status(), 403, "an expired URL");
    fx.stop().await;
}

/// Resolve's `url_ttl` within the configured default and maximum, the maximum capped at the store's limit
/// (7 days): a URL signed for it is accepted.
pub async fn url_ttl_is_honoured_within_the_default_and_the_stores_limit(store: TestStore) {
    let fx = start_with(store, "url_ttl = \"10m\"").await;
    let allocated = committed(&fx, "q", b"x").await;
    // A URL is signed for one second more than asked (its start is rounded down to the second), so it is
    // valid at least as long as asked; `expires_at` says when it ends.
    let seconds = valid_for(&fx.resolve(&allocated.result_id).await.unwrap().locations[0]);
    assert!((598.0..=601.0).contains(&seconds), "default: {seconds}");
    let seconds = valid_for(&resolve_with_ttl(&fx, &allocated.result_id, 30).await.locations[0]);
    assert!((28.0..=31.0).contains(&seconds), "asked 30s: {seconds}");
    let longest = resolve_with_ttl(&fx, &allocated.result_id, 30 * 24 * 3600).await;
    let seconds = valid_for(&longest.locations[0]);
    let week = 7.0 * 24.0 * 3600.0;
    assert!((week - 3.0..=week).contains(&seconds), "capped at the store's limit of 7 days: {seconds}");
    assert_eq!(fx.store.fetch(&longest.locations[0].url).await, b"x", "the store takes a URL of its limit");
    let zero = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        url_ttl: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        ..Default::default()
    };
    assert_status(fx.client().resolve(zero).await, Code::InvalidArgument, &["url_ttl"]);
    fx.stop().await;
}

/// The service and workers reach storage at 127.0.0.1; the clients at `localhost` (another host name): URLs
/// point there and the server accepts their signatures (which cover the host where the cloud signs it).
pub async fn urls_are_signed_for_the_client_endpoint_when_one_is_configured(store: TestStore) {
    let endpoint = store.endpoint().expect("an object store").to_owned();
    let client_endpoint = endpoint.replace("127.0.0.1", "localhost");
    let fx = start_with(store, &format!("client_endpoint_url = \"{client_endpoint}\"")).await;
    let allocated = committed(&fx, "q", b"for the client").await;
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let url = &resolved.locations[0].url;
    assert!(url.starts_with(&format!("{client_endpoint}/")), "{url}");
    assert_eq!(fx.store.fetch(url).await, b"for the client", "the signature is valid for the client's host");
    let options = allocated.sink.unwrap().storage_options;
    assert!(options.values().any(|value| *value == endpoint), "workers keep the service's endpoint: {options:?}");
    assert!(!options.values().any(|value| value.contains("localhost")), "{options:?}");
    fx.stop().await;
}

/// The store's server stops (as in a crash): a call needing it fails UNAVAILABLE or DEADLINE_EXCEEDED within
/// the storage timeout, naming the store without a credential; what needs no storage is still served; once
/// the server is back, the next call succeeds. `store` must run a server of its own.
pub async fn a_storage_outage_is_unavailable_within_the_timeout_and_recovers_by_itself(store: TestStore, secret: &str) {
    let fx = start_with(store, "storage_timeout = \"3s\"\nstorage_retries = 2").await;
    let done = committed(&fx, "before the outage", b"kept").await;
    let Fixture { mut store, server } = fx;
    store.stop_server();

    let started = std::time::Instant::now();
    let client = server.client.clone();
    let request = proto::AllocateRequest { query_id: "during the outage".into(), ..Default::default() };
    let failed = client.allocate(request.clone()).await;
    let took = started.elapsed();
    match &failed {
        Err(status) => {
            assert!(matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded), "{status:?}");
            assert!(status.message().contains("127.0.0.1:"), "names the endpoint: {}", status.message());
            assert!(!status.message().contains(secret), "{}", status.message());
        }
        Ok(answer) => panic!("Allocate succeeded with storage down: {answer:?}"),
    }
    assert!(took < Duration::from_secs(4), "failed after {took:?}, beyond the 3s storage timeout");
    // The process keeps serving what needs no storage: a cached result.
    let cached = proto::ResolveRequest { result_id: done.result_id.clone(), url_ttl: None, ..Default::default() };
    assert!(client.resolve(cached.clone()).await.is_ok());

    store.restart_server();
    let recovered = client.allocate(request).await.expect("the next call after the outage succeeds");
    assert!(!recovered.result_id.is_empty());
    server.stop().await;
}

/// Answers of 503 are UNAVAILABLE and a silent store DEADLINE_EXCEEDED (or UNAVAILABLE), each within the
/// storage timeout and naming the store; once the faults end, the next call succeeds.
pub async fn answers_of_503_and_silence_are_unavailable_and_deadline_exceeded_then_recovered(store: TestStore) {
    let link = FaultyLink::start(&store.server_endpoint().expect("an object store")).await;
    let fx = start_with(store.reached_at(&link.endpoint), "storage_timeout = \"2s\"\nstorage_retries = 2").await;
    let done = committed(&fx, "before", b"kept").await;
    let allocate = |query_id: &str| proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    let client = fx.client();

    link.set(Fault::ServiceUnavailable);
    let started = std::time::Instant::now();
    let failed = client.allocate(allocate("during 503s")).await;
    assert_status(failed, Code::Unavailable, &[&link.endpoint, "503"]);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    link.set(Fault::BlackHole);
    let started = std::time::Instant::now();
    let failed = client.allocate(allocate("during silence")).await;
    let took = started.elapsed();
    match failed {
        Err(status) => {
            assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable), "{status:?}");
            assert!(status.message().contains(&link.endpoint), "{}", status.message());
        }
        Ok(answer) => panic!("Allocate succeeded with storage silent: {answer:?}"),
    }
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "took {took:?}, storage_timeout is 2s");

    // Meanwhile a cached result still resolves.
    let cached = proto::ResolveRequest { result_id: done.result_id.clone(), url_ttl: None, ..Default::default() };
    assert!(client.resolve(cached).await.is_ok());

    link.set(Fault::None);
    let recovered = client.allocate(allocate("after")).await.expect("the next call after the faults succeeds");
    assert_eq!(recovered.status.as_ref().map(|s| s.query_id.as_str()), Some("after"));
    fx.stop().await;
}

/// Allocate ≤ 4 requests (the pending record then the claim, and beside them the index entry and its journal
/// entry), Commit of N files ≤ ceil(N/1000) + 3 (one listing page per 1,000 files, while the
/// allocation and the tombstone are read; then the manifest's write; and a HEAD of each file where the
/// listing carries no entity tag; after the answer, the seal's index entry and its journal entry), Resolve
/// of a cached result 0. The cache is trusted for `refresh_interval` (1s by default, longer than a Resolve
/// of 1,500 URLs may take on a loaded machine), so the test sets it long: what it counts is the requests of
/// a cache hit.
pub async fn storage_requests_per_call_are_bounded(store: TestStore) {
    use futures::StreamExt;
    let fx = start_with(store, "refresh_interval = \"1h\"").await;
    let before = fx.server.storage_requests();
    let allocated = fx.allocate("counted").await;
    let allocate = fx.server.storage_requests() - before;
    assert!(allocate <= 4, "Allocate made {allocate} storage requests");

    let files = 1500;
    futures::stream::iter(0..files)
        .for_each_concurrent(32, |i| {
            let (fx, allocated) = (&fx, &allocated);
            async move { fx.write(allocated, &format!("part-{i:05}.parquet"), b"x").await }
        })
        .await;
    let before = fx.server.storage_requests();
    let (_, depth_before) = fx.server.service.metrics().storage_of(anonymous_results::auth::Rpc::Commit);
    let status = fx.commit(&allocated, vec![]).await.unwrap();
    // After its answer, the seal's index entry and its journal entry (2 more, counted here).
    fx.server.service.deletions_done().await;
    let commit = fx.server.storage_requests() - before;
    let (_, depth_after) = fx.server.service.metrics().storage_of(anonymous_results::auth::Rpc::Commit);
    assert_eq!(status.file_count, files);
    // A store whose listings carry no entity tag (s3s-fs) gets a HEAD of each file, all at once: 256 in flight,
    // so the HEADs of 1,500 files are a few round trips, not 1,500 (a sliding window: a HEAD starts as soon as
    // any other ends, so a chain counts up to twice the 6 waves of a batch at a time; 9 measured).
    let heads = if fx.store.lists_entity_tags() { 0 } else { files };
    let most = files.div_ceil(1000) + 3 + 2 + heads;
    assert!(commit <= most, "Commit of {files} files made {commit} storage requests");
    let head_rounds = heads.div_ceil(anonymous_results::storage::PIN_HEADS as u64);
    let deepest = files.div_ceil(1000) + 1 + 2 * head_rounds;
    let depth = depth_after - depth_before;
    assert!(depth <= deepest, "Commit of {files} files waited on {depth} round trips, at most {deepest}");

    let before = fx.server.storage_requests();
    for _ in 0..10 {
        let resolved = fx.resolve(&allocated.result_id).await.unwrap();
        assert_eq!(resolved.locations.len(), files as usize);
    }
    assert_eq!(fx.server.storage_requests() - before, 0, "Resolve of a cached result touched storage");
    fx.stop().await;
}

/// A whole session of the binary at TRACE over `store` (its own server, stopped midway): the credentials
/// `secrets` appear in no log line, no error and no answer but the worker's storage options, which hold
/// `credential` (an option name and its value) as configured. `store` must run a server of its own.
pub async fn no_secret_reaches_a_log_line_an_error_or_an_answer_even_at_trace(
    mut store: TestStore,
    secrets: &[&str],
    credential: (&str, &str),
) {
    use crate::common::{
        auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as, token_files},
        process::Process,
    };
    let dir = tempfile::tempdir().unwrap();
    let commit_secret = "commit-secret-that-must-stay-in-its-file-0123456789";
    let secret_file = dir.path().join("commit.secret");
    std::fs::write(&secret_file, commit_secret).unwrap();
    let section = format!(
        "storage_timeout = \"2s\"\nstorage_retries = 1\n{}auth.commit_secret_file = {:?}\n",
        token_files(dir.path()),
        secret_file.display().to_string()
    );
    let config_file = dir.path().join("cluster.toml");
    std::fs::write(&config_file, store.config_toml(&section)).unwrap();
    let config_path = config_file.to_str().unwrap();
    let mut service = Process::start(dir.path(), &["--config", config_path], &[("RUST_LOG", "trace")]);
    let channel = || async {
        tonic::transport::Channel::from_shared(format!("http://{}", service.addr)).unwrap().connect().await.unwrap()
    };
    let scheduler = client_as(channel().await, Some(SCHEDULER_TOKEN));
    let worker = client_as(channel().await, Some(WORKER_TOKEN));
    let mut seen = Vec::new();

    let allocated = scheduler
        .allocate(proto::AllocateRequest { query_id: "secret session".into(), ..Default::default() })
        .await
        .unwrap();
    let sink = allocated.sink.clone().unwrap();
    assert_eq!(sink.storage_options[credential.0], credential.1, "the worker gets its credentials");
    let shown = format!("{allocated:?}");
    for secret in secrets.iter().chain([&allocated.commit_token.as_str()]) {
        assert!(!shown.contains(secret), "Debug redacts: {shown}");
    }
    store.write(&sink, "part-0.parquet", b"data").await;
    let commit = |files| proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files,
    };
    seen.push(format!("{:?}", worker.commit(commit(vec![file("part-0.parquet", 9, None)])).await));
    seen.push(format!("{:?}", worker.commit(commit(vec![])).await.unwrap()));
    // Refused callers: a worker calling for the scheduler, a wrong token, a forged commit token.
    let resolve = proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: None, ..Default::default() };
    seen.push(format!("{:?}", worker.resolve(resolve.clone()).await));
    let stranger = client_as(channel().await, Some(&format!("{SCHEDULER_TOKEN}x")));
    seen.push(format!("{:?}", stranger.resolve(resolve.clone()).await));
    let forged = proto::CommitRequest { commit_token: "f".repeat(64), ..commit(vec![]) };
    seen.push(format!("{:?}", worker.commit(forged).await));
    seen.push(format!("{:?}", scheduler.resolve(resolve.clone()).await.unwrap()));
    let mut updates = scheduler.subscribe(allocated.result_id.clone()).await.unwrap();
    seen.push(format!("{:?}", updates.message().await.unwrap()));
    store.stop_server();
    let failed =
        scheduler.allocate(proto::AllocateRequest { query_id: "in the outage".into(), ..Default::default() }).await;
    assert!(failed.is_err());
    seen.push(format!("{failed:?}"));
    // A listing in the outage: its URL carries a query, which no log line may show.
    let unknown = proto::ResolveRequest { result_id: "a".repeat(26), ..Default::default() };
    seen.push(format!("{:?}", scheduler.resolve(unknown).await));
    service.signal("-TERM");
    service.wait().await;

    let check = std::process::Command::new(crate::common::process::BIN)
        .args(["check-config", "--config", config_path])
        .output()
        .unwrap();
    seen.push(String::from_utf8_lossy(&check.stdout).into_owned());
    seen.push(String::from_utf8_lossy(&check.stderr).into_owned());
    let log = service.log();
    assert!(log.len() > 20, "a TRACE session logs plenty: {log:#?}");
    assert!(log.iter().any(|line| line.contains("TRACE")), "TRACE lines are there");
    assert!(log.iter().any(|line| line.contains("refused")), "the refusals are logged");
    for line in &log {
        for (at, _) in line.match_indices("://") {
            let url = line[at..].split(|c: char| c.is_whitespace() || matches!(c, '"' | ')')).next().unwrap_or("");
            assert!(!url.contains('?') || url.ends_with("?<redacted>"), "a URL logged with its query: {line}");
        }
    }
    let tokens = [SCHEDULER_TOKEN, WORKER_TOKEN, commit_secret, &allocated.commit_token];
    for line in log.iter().chain(&seen) {
        for secret in secrets.iter().chain(&tokens) {
            assert!(!line.contains(secret), "a secret leaked: {line}");
        }
    }
}

/// Two replicas over one bucket: Allocate on A, Commit on B, Resolve on both agree; then eight different
/// Commits of one result, four through each replica, have exactly one winner (the store's create-only
/// write decides across processes).
pub async fn replicas_agree_and_racing_commits_across_them_have_one_winner(store: TestStore) {
    let a = Fixture::start(store).await;
    let b = TestServer::start(&a.store.config()).await;
    let allocated = a.allocate("across replicas").await;
    a.write(&allocated, "part-0.parquet", b"zero").await;
    let request = |files: Vec<proto::ResultFile>, allocated: &proto::AllocateResponse| proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files,
    };
    let committed = b.client.clone().commit(request(vec![], &allocated)).await.expect("a commit on B");
    for server in [&a.server, &b] {
        let resolve = proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() };
        let resolved = server.client.clone().resolve(resolve).await.expect("a resolve");
        assert_eq!(resolved.locations.len(), 1);
        assert_eq!(a.store.fetch(&resolved.locations[0].url).await, b"zero");
        assert_eq!(resolved.status.unwrap().committed_at, committed.status.as_ref().unwrap().committed_at);
    }

    if !a.store.create_only_is_atomic_across_processes() {
        // Two services are two writers to the store, whatever process they are in (see the method).
        b.stop().await;
        a.stop().await;
        return;
    }
    let raced = a.allocate("raced").await;
    for i in 0..8 {
        a.write(&raced, &format!("part-{i}.parquet"), format!("file {i}").as_bytes()).await;
    }
    let commits = (0..8).map(|i| {
        let client = if i % 2 == 0 { a.client() } else { b.client.clone() };
        let request = request(vec![file(&format!("part-{i}.parquet"), 6, None)], &raced);
        tokio::spawn(async move { (i, client.commit(request).await) })
    });
    let mut winners = Vec::new();
    for commit in commits.collect::<Vec<_>>() {
        match commit.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(status)) => assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message()),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    for server in [&a.server, &b] {
        let resolve = proto::ResolveRequest { result_id: raced.result_id.clone(), ..Default::default() };
        let resolved = server.client.clone().resolve(resolve).await.expect("a resolve");
        assert_eq!(resolved.locations[0].path, format!("part-{}.parquet", winners[0]), "both answer the winner");
    }
    b.stop().await;
    a.stop().await;
}

/// `worker_storage_options` holding the service's own credentials (as an operator might paste them) reach the
/// control folder: the start is refused, naming the key, and the probes are gone. The store's workers'
/// store is built from that table on each cloud.
pub async fn worker_storage_options_that_reach_the_control_folder_are_refused(store: TestStore) {
    let own = store.config_toml("");
    let workers: String = own
        .lines()
        .filter_map(|line| line.strip_prefix("anonymous_results."))
        .filter_map(|line| line.split_once('.').map(|(_, option)| option))
        .filter(|option| !option.starts_with("url "))
        .map(|option| format!("worker_storage_options.{option}\n"))
        .collect();
    assert!(workers.lines().count() >= 2, "the service's credentials: {workers}");
    let config = Config::from_toml(&store.config_toml(&workers)).expect("a valid configuration");
    let refused = anonymous_results::Service::from_config(&config).await.expect_err("refused").to_string();
    for said in ["worker_storage_options", "can write and read", "_control/`"] {
        assert!(refused.contains(said), "{said:?} in: {refused}");
    }
    assert_eq!(store.keys_under("_control/").await, Vec::<String>::new(), "probes left");
}

/// Declares one `#[tokio::test]` per generic cloud test over stores made by `$shared` (on the kind's
/// shared server) and `$own` (on a server of the test's own, which it may stop), where `$secret` is the
/// store's credential and `$credential` the storage option a worker gets it in.
#[macro_export]
macro_rules! cloud_tests {
    ($shared:expr, $own:expr, secrets: $secrets:expr, credential: $credential:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn signed_urls_are_checked_by_the_server_tampered_and_expired_ones_refused() {
            clouds::signed_urls_are_checked_by_the_server_tampered_and_expired_ones_refused($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn url_ttl_is_honoured_within_the_default_and_the_stores_limit() {
            clouds::url_ttl_is_honoured_within_the_default_and_the_stores_limit($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn urls_are_signed_for_the_client_endpoint_when_one_is_configured() {
            clouds::urls_are_signed_for_the_client_endpoint_when_one_is_configured($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_storage_outage_is_unavailable_within_the_timeout_and_recovers_by_itself() {
            let secrets: &[&str] = $secrets;
            clouds::a_storage_outage_is_unavailable_within_the_timeout_and_recovers_by_itself($own, secrets[0]).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn answers_of_503_and_silence_are_unavailable_and_deadline_exceeded_then_recovered() {
            clouds::answers_of_503_and_silence_are_unavailable_and_deadline_exceeded_then_recovered($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn replicas_agree_and_racing_commits_across_them_have_one_winner() {
            clouds::replicas_agree_and_racing_commits_across_them_have_one_winner($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn storage_requests_per_call_are_bounded() {
            clouds::storage_requests_per_call_are_bounded($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn worker_storage_options_that_reach_the_control_folder_are_refused() {
            clouds::worker_storage_options_that_reach_the_control_folder_are_refused($shared).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn no_secret_reaches_a_log_line_an_error_or_an_answer_even_at_trace() {
            let store = $own;
            clouds::no_secret_reaches_a_log_line_an_error_or_an_answer_even_at_trace(store, $secrets, $credential)
                .await;
        }
    };
}

/// With a customer-provided encryption key (the storage option `option`) a presigned URL cannot download (the
/// client would have to send the key): direct and redirect are refused pointing to proxy, and proxy reads the
/// file with the key, seen on the wire as `header` in what `link` (between the service and the store) passed.
pub async fn only_proxy_downloads_with_a_customer_key(fx: Fixture, link: &FaultyLink, option: &str, header: &str) {
    let allocated = committed(&fx, "q", b"encrypted bytes").await;
    assert!(allocated.sink.as_ref().unwrap().storage_options.contains_key(option), "workers write with the key");
    let resolve = |mode: proto::DownloadMode| {
        let request = proto::ResolveRequest {
            result_id: allocated.result_id.clone(),
            download_mode: mode as i32,
            ..Default::default()
        };
        let client = fx.client();
        async move { client.resolve(request).await }
    };
    for mode in [proto::DownloadMode::Direct, proto::DownloadMode::Redirect] {
        assert_status(resolve(mode).await, Code::FailedPrecondition, &[option, "DOWNLOAD_MODE_PROXY"]);
    }
    let url = resolve(proto::DownloadMode::Proxy).await.unwrap().locations.remove(0).url;
    let before = link.sent().len();
    assert_eq!(reqwest::get(&url).await.unwrap().bytes().await.unwrap().as_ref(), b"encrypted bytes");
    let sent = link.sent()[before..].to_ascii_lowercase();
    let read = sent.find("get /").map(|at| &sent[at..]).expect("the service read the file");
    let head = &read[..read.find("\r\n\r\n").unwrap_or(read.len())];
    assert!(head.contains(&format!("{header}:")), "{head}");
    fx.stop().await;
}
