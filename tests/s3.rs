//! The S3 backend against real S3-compatible servers on loopback: the conformance suite on moto and on
//! s3s-fs, and what only an object store has (presigned URLs, request counts, outages).

mod common;
mod conformance;

use common::TestStore;

mod moto {
    use super::*;
    all_conformance_tests!(store_or_skip!(TestStore::moto()));
}

mod s3s_fs {
    use super::*;
    all_conformance_tests!(store_or_skip!(TestStore::s3s_fs()));
}

mod clouds;
#[path = "s3/workers.rs"]
mod workers;

/// What every object store does, on s3s-fs (which checks signatures and expiry).
mod cloud {
    use super::*;
    cloud_tests!(
        store_or_skip!(TestStore::s3s_fs()),
        store_or_skip!(TestStore::s3s_fs()),
        secrets: &[s3::SECRET_KEY],
        credential: ("aws_secret_access_key", s3::SECRET_KEY)
    );
}

use std::time::{Duration, SystemTime};

use anonymous_results::{Config, proto};
use clouds::{committed, resolve_with_ttl, start_with};
use common::{Fixture, TestServer, assert_status, fault::Fault, file, s3};
use tonic::Code;

/// A service over `store` reached through a link that can be made faulty, with `service` settings.
async fn behind_a_link(store: TestStore, service: &str) -> (common::fault::FaultyLink, Fixture) {
    let TestStore::S3 { server, .. } = &store else { unreachable!("an S3 store") };
    let link = common::fault::FaultyLink::start(&server.endpoint).await;
    let store = store.reached_at(&link.endpoint);
    (link, start_with(store, service).await)
}

/// A configuration whose S3 endpoint is `http://{userinfo}127.0.0.1:{port}`, where nothing listens.
fn unreachable_store(userinfo: &str) -> (String, u16) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let text = format!(
        "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/prefix\"\n\
         anonymous_results.s3.aws_access_key_id = \"{}\"\nanonymous_results.s3.aws_secret_access_key = \"{}\"\n\
         anonymous_results.s3.aws_endpoint_url = \"http://{userinfo}127.0.0.1:{port}\"\n\
         [anonymous_results_service]\nstorage_timeout = \"2s\"\nstorage_retries = 0\n",
        s3::ACCESS_KEY,
        s3::SECRET_KEY
    );
    (text, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_is_an_s3_url_with_the_configured_storage_options() {
    let fx = Fixture::start(store_or_skip!(TestStore::s3s_fs())).await;
    let allocated = fx.allocate("q").await;
    let TestStore::S3 { bucket, server, .. } = &fx.store else { unreachable!() };
    let sink = allocated.sink.unwrap();
    assert_eq!(sink.uri, format!("s3://{bucket}/polars/anonymous-results/{}/", allocated.result_id));
    let options: Vec<(&str, &str)> = sink
        .storage_options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        options,
        vec![
            ("aws_access_key_id", s3::ACCESS_KEY),
            // The endpoint is plain HTTP: without this, a worker on object_store would refuse it.
            ("aws_allow_http", "true"),
            ("aws_endpoint_url", server.endpoint.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_secret_access_key", s3::SECRET_KEY),
        ]
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_ttl_is_honoured_within_the_configured_default_and_maximum() {
    let fx = start_with(store_or_skip!(TestStore::s3s_fs()), "url_ttl = \"10m\"\nmax_url_ttl = \"2h\"").await;
    let allocated = committed(&fx, "q", b"x").await;
    let expires_in = |resolved: &proto::ResolveResponse| {
        let location = &resolved.locations[0];
        let at: SystemTime = location.expires_at.unwrap().try_into().unwrap();
        let seconds = at.duration_since(SystemTime::now()).unwrap_or_default().as_secs_f64();
        (seconds, location.url.clone())
    };
    // A URL is signed for one second more than asked (its start is rounded down to the second), so it is
    // valid at least as long as asked; `expires_at` says when it ends.
    let (seconds, url) = expires_in(&fx.resolve(&allocated.result_id).await.unwrap());
    assert!((598.0..=601.0).contains(&seconds), "default: {seconds}");
    assert!(url.contains("X-Amz-Expires=601&"), "{url}");
    let (seconds, url) = expires_in(&resolve_with_ttl(&fx, &allocated.result_id, 30).await);
    assert!((28.0..=31.0).contains(&seconds), "asked 30s: {seconds}");
    assert!(url.contains("X-Amz-Expires=31&"), "{url}");
    let (seconds, url) = expires_in(&resolve_with_ttl(&fx, &allocated.result_id, 30 * 24 * 3600).await);
    assert!((7198.0..=7201.0).contains(&seconds), "capped at the maximum: {seconds}");
    assert!(url.contains("X-Amz-Expires=7201&"), "{url}");
    let zero = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        url_ttl: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        ..Default::default()
    };
    assert_status(fx.client().resolve(zero).await, Code::InvalidArgument, &["url_ttl"]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_requests_per_call_are_bounded_on_moto() {
    clouds::storage_requests_per_call_are_bounded(store_or_skip!(TestStore::moto())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_create_only_writes_is_refused_at_start_up() {
    let store = store_or_skip!(TestStore::moto());
    let mut text = store.config_toml("");
    text = text.replace("[anonymous_results_service]", "");
    text.push_str("[scheduler]\n");
    let text = store.config_toml("").replacen(
        "anonymous_results.s3.aws_region",
        "anonymous_results.s3.aws_conditional_put = \"disabled\"\nanonymous_results.s3.aws_region",
        1,
    );
    let config = Config::from_toml(&text).unwrap();
    let error = anonymous_results::Service::from_config(&config).await.expect_err("start-up is refused").to_string();
    assert!(error.contains("create-only writes"), "{error}");
    assert!(error.contains("127.0.0.1:"), "names the store: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_refused_at_start_up_naming_it() {
    let (text, port) = unreachable_store("");
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(!error.contains(s3::SECRET_KEY), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_a_file_with_the_wrong_size_names_it_on_s3() {
    let fx = Fixture::start(store_or_skip!(TestStore::moto())).await;
    let allocated = fx.allocate("q").await;
    fx.write(&allocated, "part-0.parquet", b"12345").await;
    let result = fx.commit(&allocated, vec![file("part-0.parquet", 4, None)]).await;
    assert_status(result, Code::FailedPrecondition, &["part-0.parquet", "5 bytes"]);
    fx.stop().await;
}

/// Writers of one key queue behind each other in the service; behind a silent store, the queue counts
/// against each call's `storage_timeout`, so no call takes much longer than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_silent_store_still_end_within_the_storage_timeout() {
    let (link, fx) =
        behind_a_link(store_or_skip!(TestStore::moto()), "storage_timeout = \"1s\"\nstorage_retries = 0").await;
    link.set(Fault::BlackHole);
    // Sixteen Allocates of one query write one key: serialized in the service, one at a time.
    let calls = (0..16).map(|_| {
        let client = fx.client();
        async move {
            let started = std::time::Instant::now();
            let request = proto::AllocateRequest { query_id: "one query".into(), ..Default::default() };
            (client.allocate(request).await, started.elapsed())
        }
    });
    for (answer, took) in futures::future::join_all(calls).await {
        let status = answer.expect_err("nothing can be allocated with storage silent");
        assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable), "{status:?}");
        assert!(took < Duration::from_millis(2500), "took {took:?}, storage_timeout is 1s");
    }
    link.set(Fault::None);
    fx.stop().await;
}

/// A password in the endpoint URL (`http://user:password@host`) appears in no error and no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_endpoint_url_is_never_shown() {
    let (text, port) = unreachable_store("minio:pw-in-the-url@");
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains(&format!("<redacted>@127.0.0.1:{port}")), "names the store: {error}");
    assert!(!error.contains("pw-in-the-url") && !error.contains("minio:"), "{error}");
}

/// moto with versioning on: every URL names the committed version of each file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bucket_versioning_every_url_names_the_committed_version() {
    let store = store_or_skip!(TestStore::moto());
    let TestStore::S3 { server, bucket, .. } = &store else { unreachable!("an S3 store") };
    server.keep_versions(bucket).await;
    clouds::with_versions_every_url_names_the_committed_version(store, "versionId").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_at_start_up() {
    let store = store_or_skip!(TestStore::moto());
    let TestStore::S3 { bucket, .. } = &store else { unreachable!() };
    let text = store.config_toml("").replace(bucket.as_str(), "no-such-bucket-here");
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("the bucket `no-such-bucket-here` does not exist"), "{error}");
    assert!(!error.contains("probe"), "{error}");
}

/// Without `worker_storage_options`, workers are handed the service's own credentials: the service says so
/// at every start, and that they reach the commit secret unless `auth.commit_secret_file` is set; with both
/// set, it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_handed_the_services_credentials_are_warned_of_at_start_up() {
    let store = store_or_skip!(TestStore::moto());
    let warned =
        |service: &str| anonymous_results::server::warnings(&Config::from_toml(&store.config_toml(service)).unwrap());
    let warnings = warned("");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("service's own storage credentials") && w.contains("worker_storage_options")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("commit_secret_file") && w.contains("forge")), "{warnings:?}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("commit-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let section = format!("auth.commit_secret_file = {:?}\n", secret.display().to_string());
    let warnings = warned(&section);
    assert!(warnings.iter().all(|w| !w.contains("forge")), "the secret is out of the store: {warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("service's own storage credentials")), "{warnings:?}");
    let workers = format!("{section}worker_storage_options.aws_access_key_id = \"WORKER\"\n");
    assert_eq!(warned(&workers), Vec::<String>::new());
    let scoped = format!("{section}worker_credentials = \"scoped\"\nworker_role_arn = \"arn:aws:iam::1:role/w\"\n");
    assert_eq!(warned(&scoped), Vec::<String>::new(), "sessions scoped to a sink");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let warnings = warned(&workers);
    assert!(warnings.iter().any(|w| w.contains("auth.commit_secret_file") && w.contains("chmod 600")), "{warnings:?}");
}

/// With a setting the bulk signer does not reproduce (requester pays), object_store signs the download URLs
/// itself: they too carry every awkward name encoded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_are_served_through_object_stores_own_signer() {
    let store = store_or_skip!(TestStore::moto());
    let text = store.config_toml("").replacen(
        "anonymous_results.s3.aws_region",
        "anonymous_results.s3.aws_request_payer = \"true\"\nanonymous_results.s3.aws_region",
        1,
    );
    let fx = Fixture { server: TestServer::start(&Config::from_toml(&text).unwrap()).await, store };
    let urls = conformance::awkward_names_round_trip(&fx).await;
    assert!(urls.iter().all(|url| url.contains("x-amz-request-payer=requester")), "not object_store's: {urls:?}");
    fx.stop().await;
}

/// SSE-C (`aws_server_side_encryption = "sse-c"` with the key): only proxy downloads, with the key (seen on the
/// wire: moto stores the key but does not require it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_customer_key_only_proxy_downloads_and_it_reads_with_the_key() {
    use base64::Engine;
    let store = store_or_skip!(TestStore::moto());
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let TestStore::S3 { server, .. } = &store else { unreachable!("an S3 store") };
    let link = common::fault::FaultyLink::start(&server.endpoint).await;
    let store = store.reached_at(&link.endpoint);
    let text = store.config_toml("").replace(
        "anonymous_results.s3.aws_region",
        &format!(
            "anonymous_results.s3.aws_server_side_encryption = \"sse-c\"\n\
             anonymous_results.s3.aws_sse_customer_key_base64 = \"{key}\"\nanonymous_results.s3.aws_region"
        ),
    );
    let config = Config::from_toml(&text).unwrap();
    let warnings = anonymous_results::server::warnings(&config);
    assert!(warnings.iter().any(|w| w.contains("download_mode = \"proxy\"")), "{warnings:?}");
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let header = "x-amz-server-side-encryption-customer-key";
    clouds::only_proxy_downloads_with_a_customer_key(fx, &link, "aws_sse_customer_key_base64", header).await;
}
