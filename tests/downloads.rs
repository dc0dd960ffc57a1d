//! Downloads through the service on the local backend: what every store's conformance tests cannot show
//! (slow and stalled clients, the download limit, a stored file changed after its commit, errors that name the
//! key to set). Every store's own download tests are in `conformance/downloads.rs`.

mod common;

use std::time::Duration;

use anonymous_results::{Config, proto};
use common::{Fixture, TestServer, TestStore, assert_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service over a fresh local store with `section` as its `[anonymous_results_service]`.
async fn start(section: &str) -> Fixture {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml(section)).expect("a valid configuration");
    Fixture { server: TestServer::start(&config).await, store }
}

/// A committed result of one file `big.parquet` of `size` bytes, and its proxy link.
async fn committed(fx: &Fixture, size: usize) -> (proto::AllocateResponse, String) {
    let allocated = fx.allocate(&format!("q-{size}")).await;
    fx.write(&allocated, "big.parquet", &vec![7u8; size]).await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let url = fx.client().resolve(request).await.unwrap().locations.remove(0).url;
    (allocated, url)
}

/// An HTTP/1.1 GET of `url` on a raw connection that reads the answer's head and `body_bytes` of its body,
/// then reads no more (the connection stays open).
async fn stalled_get(url: &str, body_bytes: usize) -> (tokio::net::TcpStream, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, target) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection closed early");
        received.extend_from_slice(&buffer[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n")
            && received.len() >= end + 4 + body_bytes
        {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            return (stream, head);
        }
    }
}

/// Polls until `condition` holds, for at most `within`.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// A client that reads a byte of a 64 MiB file and stops reading is cut off after the stall timeout: the
/// service frees what the download held (downloads in flight back to 0) and closes its HTTP/1.1 connection;
/// other downloads are served as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_stall_timeout() {
    let fx = start("download_stall_timeout = \"1s\"").await;
    let (_, url) = committed(&fx, 64 << 20).await;
    let downloads = || fx.server.service.metrics().downloads.in_flight();
    let (mut stream, head) = stalled_get(&url, 1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 67108864"), "{head}");
    assert_eq!(downloads(), 1, "the download is in flight");
    assert!(eventually(Duration::from_secs(5), || downloads() == 0).await, "the stalled download was not cut off");
    // Its connection (HTTP/1.1: the download is its only stream) was closed: what is left of the answer
    // ends well short of the file.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stalled connection was left open");
    assert!(rest.len() < 64 << 20, "the whole file came after all");
    let text = fx.server.service.metrics().render();
    assert!(text.contains("anonymous_results_downloads_in_flight{mode=\"proxy\"} 0"), "{text}");
    // A download on another connection is served as ever.
    assert_eq!(common_get(&url).await.len(), 64 << 20);
    let text = fx.server.service.metrics().render();
    let sent: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("anonymous_results_download_bytes_total{mode=\"proxy\"} "))
        .and_then(|value| value.parse().ok())
        .expect("the bytes counter");
    assert!(sent >= 64 << 20, "{sent} bytes counted for a whole download and a cut-off one");
    fx.stop().await;
}

async fn common_get(url: &str) -> Vec<u8> {
    anonymous_results::storage::install_tls_provider();
    reqwest::get(url).await.unwrap().bytes().await.unwrap().to_vec()
}

/// `max_downloads` caps the downloads streamed at once: one more is answered 503 with Retry-After; a HEAD
/// still is answered, and once a download ends another may start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_download_over_max_downloads_is_told_to_retry() {
    let fx = start("max_downloads = 2\ndownload_stall_timeout = \"2s\"").await;
    let (_, url) = committed(&fx, 64 << 20).await;
    let first = stalled_get(&url, 1).await;
    let second = stalled_get(&url, 1).await;
    anonymous_results::storage::install_tls_provider();
    let third = reqwest::get(&url).await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let head = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200, "a HEAD does not count");
    drop((first, second));
    let downloads = || fx.server.service.metrics().downloads.in_flight();
    assert!(eventually(Duration::from_secs(5), || downloads() == 0).await);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let text = fx.server.service.metrics().render();
    assert!(text.contains("anonymous_results_download_refusals_total{reason=\"busy\"} 1"), "{text}");
    fx.stop().await;
}

/// A stored file that no longer has its committed size (truncated after the commit) is never served as if it
/// were complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_after_its_commit_is_not_served_as_complete() {
    let fx = start("").await;
    let (allocated, url) = committed(&fx, 100_000).await;
    let sink = allocated.sink.unwrap().uri;
    let file = std::fs::OpenOptions::new().write(true).open(format!("{sink}big.parquet")).unwrap();
    file.set_len(50_000).unwrap();
    anonymous_results::storage::install_tls_provider();
    let answer = reqwest::get(&url).await.unwrap();
    assert_eq!(answer.status(), 502);
    let ranged = reqwest::Client::new().get(&url).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(ranged.status(), 502, "a range within what is left is refused too: the file is not the committed one");
    fx.stop().await;
}

/// A file cut short while it is being downloaded ends the response with an error, never as a complete file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_short_during_its_download_aborts_the_response() {
    let fx = start("").await;
    let (allocated, url) = committed(&fx, 64 << 20).await;
    anonymous_results::storage::install_tls_provider();
    let mut response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut received = response.chunk().await.unwrap().unwrap().len();
    let sink = allocated.sink.unwrap().uri;
    std::fs::OpenOptions::new().write(true).open(format!("{sink}big.parquet")).unwrap().set_len(0).unwrap();
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err(), "the response ended as if complete after {received} bytes");
    assert!(received < 64 << 20, "{received} bytes");
    fx.stop().await;
}

/// Without a URL clients can reach the service at, proxy and redirect are refused: at start-up when they are
/// the default, at Resolve when asked; either names `download_base_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_redirect_without_a_reachable_address_name_download_base_url() {
    let store = TestStore::local();
    let config =
        Config::from_toml(&store.config_toml("download_mode = \"proxy\"\nallow_unauthenticated = true")).unwrap();
    let service = anonymous_results::Service::from_config(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = anonymous_results::serve(service, listener, std::future::pending()).await.unwrap_err();
    assert!(error.to_string().contains("set download_base_url in [anonymous_results_service]"), "{error}");

    // Mounted in a program's own router, with no base configured: Resolve says what to set.
    let fx = start("").await;
    let allocated = fx.allocate("q").await;
    fx.write(&allocated, "a.csv", b"x").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    let service = anonymous_results::Service::from_config(&fx.store.config()).await.unwrap();
    let router = tonic::service::Routes::new(service.grpc());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(tonic::transport::Server::builder().add_routes(router).serve_with_incoming(incoming));
    let client = common::Client::connect(format!("http://{address}")).await.unwrap();
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Redirect as i32,
        ..Default::default()
    };
    assert_status(client.resolve(request).await, tonic::Code::FailedPrecondition, &["download_base_url"]);
    fx.stop().await;
}

/// A download mode the contract does not have is INVALID_ARGUMENT naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_download_mode_is_invalid_argument() {
    let fx = start("").await;
    let (allocated, _) = committed(&fx, 10).await;
    let request = proto::ResolveRequest { result_id: allocated.result_id, download_mode: 7, ..Default::default() };
    assert_status(fx.client().resolve(request).await, tonic::Code::InvalidArgument, &["download_mode"]);
    fx.stop().await;
}

/// Over HTTP/2 a stalled download is cut off alone: what it held is freed, and its client's connection goes
/// on serving its other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_download_is_cut_off_alone() {
    let fx = start("download_stall_timeout = \"1s\"").await;
    let (_, url) = committed(&fx, 64 << 20).await;
    anonymous_results::storage::install_tls_provider();
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut stalled = client.get(&url).send().await.unwrap();
    assert_eq!(stalled.version(), reqwest::Version::HTTP_2);
    assert!(!stalled.chunk().await.unwrap().unwrap().is_empty());
    let downloads = || fx.server.service.metrics().downloads.in_flight();
    assert_eq!(downloads(), 1);
    assert!(eventually(Duration::from_secs(10), || downloads() == 0).await, "the stalled stream was not cut off");
    let ranged = client.get(&url).header("range", "bytes=0-99").send().await.unwrap();
    assert_eq!(ranged.version(), reqwest::Version::HTTP_2);
    assert_eq!(ranged.bytes().await.unwrap().len(), 100, "the connection serves on");
    // The stalled stream ends in an error, not as a complete file.
    let mut received = 0usize;
    let outcome = loop {
        match stalled.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    assert!(outcome.is_err() && received < 64 << 20, "{received} bytes, then {outcome:?}");
    fx.stop().await;
}

/// Links carry the id of the key they were made with: after the commit secret is rotated (the old one kept as
/// `auth.previous_commit_secret_file`), links made before still work; with the old secret dropped, they are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_made_before_a_secret_rotation_work_while_the_previous_secret_is_kept() {
    let store = TestStore::local();
    let secrets = tempfile::tempdir().unwrap();
    let (old, new) = (secrets.path().join("old"), secrets.path().join("new"));
    std::fs::write(&old, "the old commit secret, at least thirty-two bytes").unwrap();
    std::fs::write(&new, "the new commit secret, at least thirty-two bytes").unwrap();
    let with = |section: String| Config::from_toml(&store.config_toml(&section)).unwrap();
    let before = TestServer::start(&with(format!("auth.commit_secret_file = {old:?}"))).await;
    let fx = Fixture { server: before, store: TestStore::local() };
    let allocated = fx.allocate("q").await;
    std::fs::write(format!("{}part-0.csv", allocated.sink.as_ref().unwrap().uri), b"rotated").unwrap();
    fx.commit(&allocated, vec![]).await.unwrap();
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Redirect as i32,
        ..Default::default()
    };
    let url = fx.client().resolve(request).await.unwrap().locations.remove(0).url;
    let path_and_query = &url[url.find("/v1/").unwrap()..];
    fx.server.stop().await;

    anonymous_results::storage::install_tls_provider();
    let rotated = TestServer::start(&with(format!(
        "auth.commit_secret_file = {new:?}\nauth.previous_commit_secret_file = {old:?}"
    )))
    .await;
    let answer = reqwest::get(format!("http://{}{path_and_query}", rotated.addr)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap().as_ref(), b"rotated");
    rotated.stop().await;

    let only_new = TestServer::start(&with(format!("auth.commit_secret_file = {new:?}"))).await;
    let answer = reqwest::get(format!("http://{}{path_and_query}", only_new.addr)).await.unwrap();
    assert_eq!(answer.status(), 403, "the old secret is no longer kept");
    only_new.stop().await;
}

/// On shutdown a download in flight is given the grace period to finish: a slow client still gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_at_shutdown_finishes_within_the_grace_period() {
    let fx = start("shutdown_grace = \"20s\"").await;
    let (_, url) = committed(&fx, 64 << 20).await;
    anonymous_results::storage::install_tls_provider();
    let mut response = reqwest::get(&url).await.unwrap();
    let mut received = response.chunk().await.unwrap().unwrap().len();
    let Fixture { server, store } = fx;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "the service stopped with a download in flight");
    while let Some(chunk) = response.chunk().await.expect("the download goes on") {
        received += chunk.len();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(received, 64 << 20);
    stopping.await.unwrap();
    drop(store);
}

/// A program that mounts the service in its own servers serves the download routes as a tower service of
/// its own, on its own listener, and links point there (`download_base_url`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_routes_mount_in_a_program_of_ones_own() {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto::Builder,
        service::TowerToHyperService,
    };
    let store = TestStore::local();
    let downloads_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", downloads_listener.local_addr().unwrap());
    let config = Config::from_toml(&store.config_toml(&format!("download_base_url = \"{base}/\""))).unwrap();
    let service = anonymous_results::Service::from_config(&config).await.unwrap();
    let downloads = service.downloads();
    tokio::spawn(async move {
        while let Ok((stream, _)) = downloads_listener.accept().await {
            let service = TowerToHyperService::new(downloads.clone());
            tokio::spawn(async move {
                Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await
            });
        }
    });
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
    let routes = tonic::service::Routes::new(service.grpc());
    tokio::spawn(tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming));
    let client = common::Client::connect(format!("http://{grpc}")).await.unwrap();
    let allocated =
        client.allocate(proto::AllocateRequest { query_id: "q".into(), ..Default::default() }).await.unwrap();
    std::fs::write(format!("{}part-0.csv", allocated.sink.as_ref().unwrap().uri), b"mounted").unwrap();
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    client.commit(commit).await.unwrap();
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let url = client.resolve(request).await.unwrap().locations.remove(0).url;
    assert!(url.starts_with(&format!("{base}/v1/results/")), "{url}");
    anonymous_results::storage::install_tls_provider();
    assert_eq!(reqwest::get(&url).await.unwrap().bytes().await.unwrap().as_ref(), b"mounted");
}
