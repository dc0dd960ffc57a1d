//! Hostile callers, one test per way the service was once broken: durations past what a timestamp holds,
//! bodies sent before a token is checked, unlimited streams, connections that never speak or never leave,
//! text that forges or floods log lines, bytes that are not a message, and files that are not a result's own.
//! What is hostile in storage itself is in `stored.rs`.

#[path = "../common/mod.rs"]
mod common;
mod stored;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anonymous_results::{Config, clock::ManualClock, proto};
use common::{
    Fixture, TestServer, TestStore, assert_status,
    auth::{SCHEDULER_TOKEN, WORKER_TOKEN, token_files},
    process::Process,
    state,
    wire::{self, call_raw, call_without_end, closed_within},
};
use prost::Message;
use tonic::Code;

fn duration(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

const CENTURY: i64 = 100 * 31_557_600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_past_what_a_timestamp_holds_is_invalid_argument_and_harms_nothing() {
    let clock = Arc::new(ManualClock::new());
    let store = TestStore::local();
    let fx = Fixture { server: TestServer::start_with_clock(&store.config(), clock.clone()).await, store };
    let client = fx.client();
    for ttl in [i64::MAX, CENTURY + 1] {
        let request =
            proto::AllocateRequest { query_id: format!("long-{ttl}"), ttl: duration(ttl), ..Default::default() };
        assert_status(client.allocate(request).await, Code::InvalidArgument, &["ttl", "100 years"]);
    }
    // The longest TTL there is: committed, resolved, renewed and pruned like any other.
    let request = proto::AllocateRequest { query_id: "a-century".into(), ttl: duration(CENTURY), ..Default::default() };
    let allocated = client.allocate(request).await.expect("a TTL of 100 years");
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let status = fx.commit(&allocated, vec![]).await.expect("commit");
    let expires = status.expires_at.expect("an expiry").seconds - status.committed_at.unwrap().seconds;
    assert_eq!(expires, CENTURY);
    let renew = |ttl| proto::RenewRequest { result_id: allocated.result_id.clone(), ttl: duration(ttl) };
    assert_status(client.renew(renew(i64::MAX)).await, Code::InvalidArgument, &["ttl", "100 years"]);
    assert!(client.renew(renew(CENTURY)).await.is_ok(), "a century from now is within range");
    let resolve = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        url_ttl: duration(i64::MAX),
        ..Default::default()
    };
    assert_eq!(state(client.resolve(resolve).await.unwrap().status.as_ref().unwrap()), proto::ResultState::Committed);
    // The clock far ahead: the pruner deletes it and stops at nothing.
    clock.advance(Duration::from_secs(2 * CENTURY as u64 + 1));
    let report = fx.server.service.prune(false).await.expect("a pass");
    assert_eq!(report.expired.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![allocated.result_id.clone()]);
    fx.stop().await;
}

async fn secured(dir: &Path, extra: &str) -> Fixture {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml(&format!("{}{extra}", token_files(dir)))).unwrap();
    let server = TestServer::start(&config).await;
    Fixture { store, server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_token_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let fx = secured(dir.path(), "").await;
    // The body never ends: only an answer given before reading it can come back.
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("not-a-token-of-this-service"), Code::Unauthenticated),
        (Some(SCHEDULER_TOKEN), Code::PermissionDenied),
    ] {
        let call = call_without_end(fx.server.channel().await, "Commit", token);
        let answer = tokio::time::timeout(Duration::from_secs(5), call).await.expect("answered without the body");
        assert_status(answer, code, &[]);
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_more_entries_than_files_allowed_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let fx = secured(dir.path(), "max_files_per_commit = 1000\n").await;
    // 1,001 empty entries: 2 bytes each on the wire, a struct each once decoded.
    let mut message =
        proto::CommitRequest { result_id: "a".repeat(26), commit_token: "0".repeat(64), files: vec![] }.encode_to_vec();
    message.extend([0x1a, 0x00].repeat(1001));
    let answer = call_raw(fx.server.channel().await, "Commit", message, Some(WORKER_TOKEN)).await;
    assert_status(answer, Code::InvalidArgument, &["more than 1000 files", "max_files_per_commit"]);
    // A message larger than the most the limits allow is refused by its length alone.
    let answer = call_raw(fx.server.channel().await, "Commit", vec![0; 2 << 20], Some(WORKER_TOKEN)).await;
    assert_status(answer, Code::OutOfRange, &["max_files_per_commit"]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_a_message_is_invalid_argument() {
    let fx = Fixture::start(TestStore::local()).await;
    // Field 1 (query_id), length 2, bytes that are not UTF-8.
    let answer = call_raw(fx.server.channel().await, "Allocate", vec![0x0a, 0x02, 0xff, 0xfe], None).await;
    assert_status(answer, Code::InvalidArgument, &["not a valid message"]);
    let answer = call_raw(fx.server.channel().await, "Resolve", vec![0x0a, 0x7f], None).await;
    assert_status(answer, Code::InvalidArgument, &["not a valid message"]);
    fx.stop().await;
}

/// A server on a local store with `section` in `[anonymous_results_service]`.
async fn started(section: &str) -> Fixture {
    let store = TestStore::local();
    let config = Config::from_toml(&store.config_toml(section)).unwrap();
    Fixture { server: TestServer::start(&config).await, store }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_announces_its_stream_and_header_limits() {
    let fx = started("max_concurrent_streams = 17\nmax_header_bytes = 4096\n").await;
    let mut stream = wire::h2_connect(fx.server.addr).await;
    let settings = wire::server_settings(&mut stream).await;
    assert!(settings.contains(&(0x3, 17)), "SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}");
    assert!(settings.contains(&(0x6, 4096)), "SETTINGS_MAX_HEADER_LIST_SIZE: {settings:?}");
    drop(stream);
    let defaults = Fixture::start(TestStore::local()).await;
    let mut stream = wire::h2_connect(defaults.server.addr).await;
    assert!(wire::server_settings(&mut stream).await.contains(&(0x3, 256)), "the default is 256");
    drop(stream);
    defaults.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_speaks_is_closed_after_the_handshake_timeout() {
    let fx = started("handshake_timeout = \"1s\"\n").await;
    let mut silent = tokio::net::TcpStream::connect(fx.server.addr).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(5)).await.expect("closed by the server");
    assert!(closed >= Duration::from_millis(900) && closed < Duration::from_secs(3), "closed after {closed:?}");
    // Half a preface is not a preface.
    let mut slow = tokio::net::TcpStream::connect(fx.server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, &wire::PREFACE[..10]).await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await.is_some(), "closed by the server");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_calls_is_closed_after_the_idle_timeout_and_one_with_a_call_is_not() {
    let fx = started("idle_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\n").await;
    let mut idle = wire::h2_connect(fx.server.addr).await;
    wire::server_settings(&mut idle).await;
    // Closed with a GOAWAY first, so that its client calls on a new connection rather than lose a call.
    assert!(wire::goaway_within(&mut idle, Duration::from_secs(5)).await, "no GOAWAY within the idle timeout");
    // This client does not acknowledge the GOAWAY's ping: the connection goes keepalive_timeout later.
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await.expect("closed by the server");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    // A Watch that outlasts the idle timeout keeps its connection; once it ends, the connection goes idle.
    let client = common::Client::new(fx.server.channel().await);
    let request = proto::AllocateRequest { query_id: "watched".into(), ..Default::default() };
    let allocated = client.allocate(request).await.unwrap();
    let mut updates = client.subscribe(allocated.result_id.clone()).await.unwrap();
    updates.message().await.unwrap().expect("the current status");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    common::Client::new(fx.server.channel().await).commit(commit).await.expect("a commit on a fresh connection");
    let last = updates.message().await.expect("the watch survived the idle timeout").expect("an update");
    assert_eq!(state(&last), proto::ResultState::Committed);
    fx.stop().await;
}

/// A health check on a fresh connection: its time to answer.
async fn health_check(addr: SocketAddr) -> Result<Duration, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let started = std::time::Instant::now();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_at_max_connections_give_way_to_callers() {
    let fx = started("max_connections = 20\n").await;
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(tokio::net::TcpStream::connect(fx.server.addr).await.unwrap());
    }
    for _ in 0..5 {
        let took = health_check(fx.server.addr).await.expect("a health check through the flood");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
        silent.push(tokio::net::TcpStream::connect(fx.server.addr).await.unwrap());
    }
    // The oldest silent sockets were closed to make room.
    let closed = closed_within(&mut silent[0], Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the oldest silent socket is still open");
    drop(silent);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_link_to_a_file_elsewhere_is_not_committed() {
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("linked").await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"not the worker's").unwrap();
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    std::fs::hard_link(outside.path().join("secret"), format!("{sink}part-0.parquet")).unwrap();
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["part-0.parquet", "regular file"]);
    assert_status(
        fx.commit(&allocated, vec![common::file("part-0.parquet", 16, None)]).await,
        Code::FailedPrecondition,
        &["second name"],
    );
    fx.stop().await;
}

/// Text from callers and workers, as the log shows it: no forged line, no line longer than a few KiB, no
/// terminal escape; an abort reason kept to 1 KiB and answered so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_text_neither_forges_nor_floods_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let file = dir.path().join("cluster.toml");
    let config = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n",
        root.display().to_string()
    );
    std::fs::write(&file, config).unwrap();
    let service = Process::start(dir.path(), &["--config", file.to_str().unwrap()], &[("RUST_LOG", "debug")]);
    let client = service.client().await;
    let forged = "q\nINFO forged: the admin password is hunter2\u{1b}[2J";
    let request = proto::AllocateRequest { query_id: forged.into(), ..Default::default() };
    assert_status(client.allocate(request).await, Code::InvalidArgument, &["query_id"]);
    let long = proto::ResolveRequest { result_id: "x".repeat(10_000), ..Default::default() };
    assert_status(client.resolve(long).await, Code::InvalidArgument, &["result_id"]);
    let huge = proto::ResolveRequest { result_id: "x".repeat(1 << 20), ..Default::default() };
    assert_status(client.resolve(huge).await, Code::OutOfRange, &[]);
    let escape = proto::ReleaseRequest { result_id: "\u{1b}[31mred\nINFO forged".into() };
    assert_status(client.release(escape).await, Code::InvalidArgument, &["result_id"]);
    // A sink file whose name starts a line of its own.
    let allocated =
        client.allocate(proto::AllocateRequest { query_id: "odd name".into(), ..Default::default() }).await.unwrap();
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    std::fs::write(format!("{sink}a\nINFO forged.parquet"), b"data").unwrap();
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    assert_status(client.commit(commit).await, Code::FailedPrecondition, &["a\\nINFO forged.parquet"]);
    // A long reason is cut to 1 KiB, and the Abort succeeds; one past the Abort's message limit is refused.
    let reason = format!("worker failed:\n{}\nINFO forged", "x".repeat(10_000));
    let abort = proto::AbortRequest { result_id: allocated.result_id.clone(), commit_token: String::new(), reason };
    let aborted = client.abort(abort).await.expect("an abort with a long reason").status.unwrap();
    assert!(
        aborted.abort_reason.len() <= 1024 && aborted.abort_reason.starts_with("worker failed:\n"),
        "{}",
        aborted.abort_reason.len()
    );
    assert!(aborted.abort_reason.ends_with('…'));
    let resolved = client
        .resolve(proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(resolved.status.unwrap().abort_reason, aborted.abort_reason);
    let flood = proto::AbortRequest {
        result_id: allocated.result_id.clone(),
        commit_token: String::new(),
        reason: "y".repeat(2 << 20),
    };
    assert_status(client.abort(flood).await, Code::OutOfRange, &[]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = service.log();
    for line in &log {
        assert!(!line.starts_with("INFO forged") && !line.contains("INFO forged.parquet\""), "a forged line: {line}");
        assert!(!line.contains('\u{1b}') || line.contains("\u{1b}[2m"), "a raw escape from a caller: {line:?}");
        assert!(line.len() < 8 * 1024, "a line of {} bytes", line.len());
    }
    assert!(log.iter().any(|line| line.contains("a\\nINFO forged.parquet")), "the odd name, escaped: {log:#?}");
}

/// A request that never finishes arriving (a call begun, its body never ended, over HTTP/2) fails with
/// DEADLINE_EXCEEDED after `request_timeout`, is counted, and its connection is sent a GOAWAY and closed, so
/// that its caller cannot go on there with another slow call. gRPC over HTTP/1.1 is refused at once. An
/// answer is not bounded: a Watch outlives the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_finishes_arriving_is_cut_off_and_its_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = started("request_timeout = \"1s\"\n").await;
    let started_at = std::time::Instant::now();
    let call = call_without_end(fx.server.channel().await, "Allocate", None);
    let answer = tokio::time::timeout(Duration::from_secs(5), call).await.expect("an answer after request_timeout");
    assert_status(answer, Code::DeadlineExceeded, &["request_timeout"]);
    let took = started_at.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "answered after {took:?}");

    // On a connection of its own: one byte of a body, then nothing. The server sends a GOAWAY, and takes no
    // new call on that connection; it closes it even though its caller starts another slow call there.
    let mut stream = wire::h2_connect(fx.server.addr).await;
    wire::server_settings(&mut stream).await;
    let authority = fx.server.addr.to_string();
    let path = "/anonymous_results.v1.AnonymousResults/Allocate";
    let mut frames = wire::frame(wire::SETTINGS, wire::ACK, 0, &[]);
    frames.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, 1, &wire::request_headers(path, &authority)));
    frames.extend(wire::frame(wire::DATA, 0, 1, &[0]));
    stream.write_all(&frames).await.unwrap();
    assert!(wire::goaway_within(&mut stream, Duration::from_secs(5)).await, "no GOAWAY after request_timeout");
    let again = wire::frame(wire::HEADERS, wire::END_HEADERS, 3, &wire::request_headers(path, &authority));
    let _ = stream.write_all(&again).await;
    let closed = closed_within(&mut stream, Duration::from_secs(5)).await.expect("the connection closed");
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");
    let text = fx.server.service.metrics().render();
    let timeouts: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("anonymous_results_request_timeouts_total "))
        .and_then(|count| count.parse().ok())
        .expect("the counter");
    assert!(timeouts >= 2, "{text}");

    // gRPC over HTTP/1.1 is not gRPC: refused at once, the connection closed after the answer.
    let mut http1 = tokio::net::TcpStream::connect(fx.server.addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\ncontent-type: application/grpc\r\ncontent-length: 100\r\n\r\nx"
    );
    http1.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), http1.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the HTTP/1.1 gRPC call was held");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    assert!(answer.contains("gRPC needs HTTP/2"), "{answer}");

    // A Watch's request arrives whole at once; its answer streams on past request_timeout.
    let client = common::Client::new(fx.server.channel().await);
    let allocated = fx.allocate("watched").await;
    let mut updates = client.subscribe(allocated.result_id.clone()).await.unwrap();
    updates.message().await.unwrap().expect("the current status");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    let last = updates.message().await.expect("the watch outlived request_timeout").expect("an update");
    assert_eq!(state(&last), proto::ResultState::Committed);
    fx.stop().await;
}

/// At `max_connections`, every one holding a call whose body never ends, a new caller is let in: the
/// connection whose request has been arriving the longest is closed to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_at_max_connections_give_way_to_callers() {
    use tokio::io::AsyncWriteExt;
    // Its own client's connection, and 8 slow ones.
    let fx = started("max_connections = 9\n").await;
    let authority = fx.server.addr.to_string();
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = wire::h2_connect(fx.server.addr).await;
        wire::server_settings(&mut stream).await;
        let path = "/anonymous_results.v1.AnonymousResults/Allocate";
        let mut frames = wire::frame(wire::SETTINGS, wire::ACK, 0, &[]);
        frames.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, 1, &wire::request_headers(path, &authority)));
        frames.extend(wire::frame(wire::DATA, 0, 1, &[0]));
        stream.write_all(&frames).await.unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        let took = health_check(fx.server.addr).await.expect("a health check through the slow bodies");
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
    }
    let mut closed = 0;
    for stream in &mut slow {
        closed += usize::from(closed_within(stream, Duration::from_millis(200)).await.is_some());
    }
    assert!((1..=3).contains(&closed), "{closed} slow connections closed for 3 callers");
    drop(slow);
    fx.stop().await;
}
