//! Traces exported over OTLP, to a test collector (`tests/common/otlp.rs`): the real OTLP trace protocol,
//! over gRPC and over HTTP, built on the `opentelemetry-proto` package's generated service and messages. The service runs as
//! its own process (the binary), configured with the collector's address and a header the collector checks.

mod common;

use std::{collections::HashMap, time::Duration};

use anonymous_results::proto::{self, anonymous_results_client::AnonymousResultsClient};
use common::otlp::Collector;
use common::process::Process;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use tonic::{Request, transport::Channel};

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn traced<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    request
}

/// Allocate, Commit and Resolve with a caller's `traceparent`: each call's server span continues the caller's
/// trace (its trace id, the caller's span its parent), names its result and its gRPC code, and has a child
/// span per storage request; the configured header reaches the collector; no secret is in any attribute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_continue_the_callers_trace_with_a_span_per_storage_request() {
    let collector = Collector::default();
    let endpoint = collector.serve_grpc().await;
    calls_are_traced(collector, &endpoint, "grpc").await;
}

/// The same over OTLP/HTTP with protobuf bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_traced_over_http_protobuf_too() {
    let collector = Collector::default();
    let endpoint = collector.serve_http().await;
    calls_are_traced(collector, &endpoint, "http/protobuf").await;
}

async fn calls_are_traced(collector: Collector, endpoint: &str, protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    let secret_file = dir.path().join("commit.secret");
    std::fs::write(&secret_file, "commit-secret-that-stays-in-its-file-0123456789").unwrap();
    let header_secret = "collector-token-that-must-not-leak-42";
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
             [anonymous_results_service]\notlp_endpoint = {endpoint:?}\notlp_protocol = {protocol:?}\n\
             otlp_headers = \"authorization=Bearer {header_secret}\"\n\
             auth.commit_secret_file = {:?}\n",
            root.display().to_string(),
            secret_file.display().to_string()
        ),
    )
    .unwrap();
    let mut service = Process::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let channel = Channel::from_shared(format!("http://{}", service.addr)).unwrap().connect().await.unwrap();
    let mut client = AnonymousResultsClient::new(channel);

    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_hex}-{caller_span}-01");
    let allocate = proto::AllocateRequest { query_id: "traced".into(), ..Default::default() };
    let allocated = client.allocate(traced(allocate, &traceparent)).await.unwrap().into_inner();
    let sink = allocated.sink.as_ref().unwrap().uri.clone();
    std::fs::write(format!("{sink}part-0.csv"), b"a\n1\n").unwrap();
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    client.commit(traced(commit, &traceparent)).await.unwrap();
    let resolve = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let resolved = client.resolve(traced(resolve, &traceparent)).await.unwrap().into_inner();
    // A download through the service continues the trace its HTTP request carries.
    anonymous_results::storage::install_tls_provider();
    let download = reqwest::Client::new().get(&resolved.locations[0].url).header("traceparent", &traceparent);
    let downloaded = download.send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), b"a\n1\n");

    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let parent: Vec<u8> = (0..8).map(|i| u8::from_str_radix(&caller_span[2 * i..2 * i + 2], 16).unwrap()).collect();
    let spans = collector.trace(&trace_id, &["Allocate", "Commit", "Resolve", "download"]).await;
    let download = spans.iter().find(|span| span.name == "download").unwrap();
    assert_eq!((download.parent_span_id.clone(), download.kind), (parent.clone(), SpanKind::Server as i32));
    assert_eq!(attributes(download).get("http.response.status_code").map(String::as_str), Some("200"));
    for name in ["Allocate", "Commit", "Resolve"] {
        let server = spans.iter().find(|span| span.name == name).unwrap();
        assert_eq!(server.parent_span_id, parent, "{name}: the caller's span is its parent");
        assert_eq!(server.kind, SpanKind::Server as i32, "{name}");
        let attributes = attributes(server);
        assert_eq!(attributes.get("result_id"), Some(&allocated.result_id), "{name}: {attributes:?}");
        assert_eq!(attributes.get("rpc.grpc.status_code").map(String::as_str), Some("0"), "{name}: {attributes:?}");
        let storage: Vec<&Span> = spans
            .iter()
            .filter(|span| span.parent_span_id == server.span_id && span.name == "storage request")
            .collect();
        match name {
            // A Resolve just after the Commit on the same replica is answered from memory.
            "Resolve" => {}
            _ => assert!(!storage.is_empty(), "{name}: no storage request span among {spans:?}"),
        }
        assert!(storage.iter().all(|span| span.kind == SpanKind::Client as i32));
    }
    assert_eq!(
        attributes(spans.iter().find(|span| span.name == "Allocate").unwrap()).get("query_id").map(String::as_str),
        Some("traced")
    );
    // The collector's token went with every export; no secret is in a span.
    assert!(collector.authorizations.lock().unwrap().iter().all(|value| value == &format!("Bearer {header_secret}")));
    let everything = format!("{:?}", collector.spans.lock().unwrap());
    // Nor is the link's capability (its path and query).
    let link = url::Url::parse(&resolved.locations[0].url).unwrap();
    let capability = link.query().unwrap_or(link.path()).to_owned();
    for secret in [header_secret, "commit-secret-that-stays-in-its-file", allocated.commit_token.as_str(), &capability]
    {
        assert!(!everything.contains(secret), "`{secret}` is in a span");
    }
    let metrics = service.log().join("\n");
    assert!(!metrics.contains(header_secret), "the header's value is in a log line");
    service.signal("-TERM");
    assert!(service.wait().await.success());
}

/// The trace crates share tonic, hyper, prost and reqwest with the rest of the tree: `cargo tree -d` names no
/// second version of any of them.
#[test]
fn the_trace_crates_bring_no_second_tonic_hyper_prost_or_reqwest() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "anonymous-results",
            "-d",
            "--depth",
            "0",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let duplicated = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = duplicated.lines().filter_map(|line| line.split_whitespace().next()).collect();
    for name in ["tonic", "hyper", "prost", "reqwest", "http", "opentelemetry"] {
        assert!(!names.contains(&name), "two versions of {name}:\n{duplicated}");
    }
    // The trace crates are in the tree at all (a test of nothing otherwise).
    let tree = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "anonymous-results", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8(tree.stdout).unwrap();
    assert!(tree.lines().any(|line| line.starts_with("opentelemetry-otlp ")), "{tree}");
}

/// Writes the configuration of a local store under `dir` with `location` keys (`anonymous_results.` each) and
/// `service` keys, starts the binary on it, and answers it with the URL of its metrics.
fn start_with(dir: &std::path::Path, location: &str, service: &str) -> (Process, String) {
    let config = dir.join("cluster.toml");
    let root = dir.join("results");
    let location: String = location.lines().map(|line| format!("anonymous_results.{line}\n")).collect();
    let text = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n{location}\
         [anonymous_results_service]\nmetrics_listen = \"127.0.0.1:0\"\n{service}\n",
        root.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let process = Process::start(dir, &["--config", config.to_str().unwrap()], &[]);
    let mut address = None;
    for _ in 0..100 {
        if let Some(line) = process.log().into_iter().find(|line| line.contains("metrics_address=")) {
            let rest = &line[line.find("metrics_address=").unwrap() + "metrics_address=".len()..];
            address = Some(rest.chars().take_while(|c| !c.is_whitespace()).collect::<String>());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let address = address.expect("the metrics address is logged");
    (process, format!("http://{address}/metrics"))
}

/// The value of the sample `name` in the scrape at `url`.
async fn sample(url: &str, name: &str) -> f64 {
    anonymous_results::storage::install_tls_provider();
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
    line[name.len() + 1..].parse().unwrap()
}

/// With the collector unreachable, calls are answered as fast as with no export at all (the spans wait on a
/// queue, not the calls), the spans dropped are counted, and the failure is logged once, not per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_counted_drops_and_one_warning_not_latency() {
    // A port nothing listens on: every export fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (mut service, metrics) = start_with(dir.path(), "", &format!("otlp_endpoint = {endpoint:?}"));
    let client = service.client().await;
    let started = std::time::Instant::now();
    for n in 0..50 {
        let request = proto::AllocateRequest { query_id: format!("down-{n}"), ..Default::default() };
        client.allocate(request).await.expect("answered while the collector is down");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "50 Allocates took {took:?}");
    // Batches go every second at the latest; each fails, and its spans are counted.
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = sample(&metrics, "anonymous_results_trace_spans_dropped_total").await;
        if dropped >= 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 50.0, "{dropped} spans counted as dropped");
    for n in 0..20 {
        let request = proto::AllocateRequest { query_id: format!("later-{n}"), ..Default::default() };
        client.allocate(request).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let warnings = service.log().iter().filter(|line| line.contains("spans cannot be exported")).count();
    assert_eq!(warnings, 1, "{:#?}", service.log());
    service.signal("-TERM");
    assert!(service.wait().await.success(), "it stops although its spans cannot go");
}

/// Sampling is parent-based and decided before a span is made: at `trace_sample_ratio = 0` a call whose caller
/// sampled its trace is exported whole (its storage requests' spans too), and nothing else is, neither calls
/// without a caller's trace or with one the caller did not sample, nor their storage requests, nor the
/// service's own passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_sampled_trace_is_exported_whole_and_nothing_else_at_ratio_zero() {
    let collector = Collector::default();
    let endpoint = collector.serve_grpc().await;
    let dir = tempfile::tempdir().unwrap();
    let service_keys = format!("otlp_endpoint = {endpoint:?}\ntrace_sample_ratio = 0");
    let (mut service, _) = start_with(dir.path(), "usage_interval = \"1s\"", &service_keys);
    let channel = Channel::from_shared(format!("http://{}", service.addr)).unwrap().connect().await.unwrap();
    let mut client = AnonymousResultsClient::new(channel);
    let allocate = |query_id: &str| proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    client.allocate(allocate("no-caller-trace")).await.unwrap();
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    client.allocate(traced(allocate("unsampled-by-its-caller"), unsampled)).await.unwrap();
    // The service's own passes at ratio 0: a usage refresh a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sampled = "00-33333333333333333333333333333333-4444444444444444-01";
    client.allocate(traced(allocate("sampled-by-its-caller"), sampled)).await.unwrap();

    let spans = collector.trace(&[0x33; 16], &["Allocate", "storage request"]).await;
    let allocate_span = spans.iter().find(|span| span.name == "Allocate").unwrap();
    assert_eq!(allocate_span.parent_span_id, vec![0x44; 8]);
    assert_eq!(attributes(allocate_span).get("query_id").map(String::as_str), Some("sampled-by-its-caller"));
    let storage = spans.iter().filter(|span| span.name == "storage request");
    assert!(storage.clone().all(|span| span.parent_span_id == allocate_span.span_id), "{spans:?}");
    // Whatever else was exported came with or before the sampled call's spans (one queue, in order).
    let everything = collector.spans.lock().unwrap().clone();
    let others: Vec<(&str, &[u8])> = everything
        .iter()
        .filter(|span| span.trace_id != [0x33; 16])
        .map(|span| (span.name.as_str(), span.trace_id.as_slice()))
        .collect();
    assert!(others.is_empty(), "spans of traces not sampled were exported: {others:?}");
    service.signal("-TERM");
    assert!(service.wait().await.success());
}

/// A collector that accepts connections and never answers costs the calls nothing either: each export gives
/// up after its timeout, and its spans are counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_counted_drops_not_latency() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    // Accepted, held open, never read.
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut service, metrics) = start_with(dir.path(), "", &format!("otlp_endpoint = {endpoint:?}"));
    let client = service.client().await;
    let started = std::time::Instant::now();
    for n in 0..50 {
        let request = proto::AllocateRequest { query_id: format!("silent-{n}"), ..Default::default() };
        client.allocate(request).await.expect("answered while the collector is silent");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "50 Allocates took {took:?}");
    // The first export gives up after EXPORT_TIMEOUT (10 s); its batch is counted.
    let mut dropped = 0.0;
    for _ in 0..250 {
        dropped = sample(&metrics, "anonymous_results_trace_spans_dropped_total").await;
        if dropped >= 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 50.0, "{dropped} spans counted as dropped within 25 s");
    service.signal("-TERM");
    assert!(service.wait().await.success(), "it stops although its collector never answers");
    held.abort();
}
