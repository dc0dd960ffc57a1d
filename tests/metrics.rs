//! The Prometheus endpoint of a running service (the binary, as operators run it): each counter moves with the
//! calls that should move it, and nothing else answers on its port.

mod common;

use std::{collections::BTreeMap, time::Duration};

use anonymous_results::proto;
use common::{TestStore, assert_status, file, process::Process};

/// The service with `metrics_listen` on a free loopback port, a commit deadline and pruning short enough for
/// the pruner to act within the test.
fn start(store: &TestStore, dir: &std::path::Path) -> (Process, String) {
    let config = dir.join("cluster.toml");
    let text =
        store.config_toml_with("commit_timeout = \"2s\"\nprune_interval = \"1s\"", "metrics_listen = \"127.0.0.1:0\"");
    std::fs::write(&config, text).unwrap();
    let service = Process::start(dir, &["--config", config.to_str().unwrap()], &[]);
    let line = wait_for_line(&service, "metrics_address=");
    let rest = &line[line.find("metrics_address=").unwrap() + "metrics_address=".len()..];
    let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    (service, format!("http://{address}/metrics"))
}

fn wait_for_line(service: &Process, needle: &str) -> String {
    for _ in 0..100 {
        if let Some(line) = service.log().into_iter().find(|line| line.contains(needle)) {
            return line;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no log line with {needle}: {:#?}", service.log())
}

/// Every sample of the scrape, by its name with labels.
async fn scrape(url: &str) -> BTreeMap<String, f64> {
    let response = reqwest::get(url).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples.get(name).unwrap_or_else(|| panic!("no sample {name} in {samples:#?}"))
}

#[tokio::test]
async fn the_metrics_endpoint_counts_calls_results_bytes_and_pruning() {
    anonymous_results::storage::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::local();
    let (service, url) = start(&store, dir.path());
    let client = service.client().await;

    let before = scrape(&url).await;
    assert_eq!(sample(&before, "anonymous_results_allocated_total"), 0.0);
    assert!(!before.keys().any(|k| k.starts_with("anonymous_results_rpc_requests_total")), "{before:#?}");

    // Two results: one committed (11 bytes), one aborted; an Allocate repeated; a Resolve of an unknown id.
    let mut allocated = Vec::new();
    for query in ["q-commit", "q-abort", "q-commit"] {
        let request = proto::AllocateRequest { query_id: query.into(), ..Default::default() };
        allocated.push(client.allocate(request).await.unwrap());
    }
    let committed = &allocated[0];
    store.write(committed.sink.as_ref().unwrap(), "part-0.csv", b"a,b\n1,2\n3,4").await;
    let commit = proto::CommitRequest {
        result_id: committed.result_id.clone(),
        commit_token: committed.commit_token.clone(),
        files: vec![file("part-0.csv", 11, Some(2))],
    };
    client.commit(commit.clone()).await.unwrap();
    client.commit(commit).await.unwrap(); // a repeat: answered, not counted again
    let aborted = &allocated[1];
    let abort = proto::AbortRequest {
        result_id: aborted.result_id.clone(),
        commit_token: aborted.commit_token.clone(),
        reason: "cancelled".into(),
    };
    client.abort(abort).await.unwrap();
    let resolve = proto::ResolveRequest { result_id: committed.result_id.clone(), ..Default::default() };
    client.resolve(resolve).await.unwrap();
    let unknown = proto::ResolveRequest { result_id: "r-unknown".into(), ..Default::default() };
    assert_status(client.resolve(unknown).await, tonic::Code::InvalidArgument, &[]);

    let after = scrape(&url).await;
    assert_eq!(sample(&after, "anonymous_results_allocated_total"), 2.0);
    assert_eq!(sample(&after, "anonymous_results_committed_total"), 1.0);
    assert_eq!(sample(&after, "anonymous_results_committed_bytes_total"), 11.0);
    assert_eq!(sample(&after, "anonymous_results_aborted_total"), 1.0);
    let calls = |method: &str, code: &str| {
        sample(&after, &format!("anonymous_results_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"))
    };
    assert_eq!(calls("Allocate", "OK"), 3.0);
    assert_eq!(calls("Commit", "OK"), 2.0);
    assert_eq!(calls("Abort", "OK"), 1.0);
    assert_eq!(calls("Resolve", "OK"), 1.0);
    assert_eq!(calls("Resolve", "INVALID_ARGUMENT"), 1.0);
    let histogram = "anonymous_results_rpc_duration_seconds";
    assert_eq!(sample(&after, &format!("{histogram}_count{{method=\"Allocate\",code=\"OK\"}}")), 3.0);
    assert_eq!(sample(&after, &format!("{histogram}_bucket{{method=\"Allocate\",code=\"OK\",le=\"+Inf\"}}")), 3.0);
    assert!(sample(&after, &format!("{histogram}_sum{{method=\"Allocate\",code=\"OK\"}}")) > 0.0);
    assert_eq!(sample(&after, "anonymous_results_storage_errors_total{kind=\"io\"}"), 0.0);

    // Released; then pruned: a result committed with a 1 s TTL expires, and an allocation left uncommitted past
    // its 2 s deadline is abandoned (the only one: the others were committed or aborted).
    let release = proto::ReleaseRequest { result_id: committed.result_id.clone() };
    client.release(release).await.unwrap();
    let request = proto::AllocateRequest { query_id: "q-abandoned".into(), ..Default::default() };
    client.allocate(request).await.unwrap();
    let ttl = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    let request = proto::AllocateRequest { query_id: "q-expiring".into(), ttl, ..Default::default() };
    let expiring = client.allocate(request).await.unwrap();
    store.write(expiring.sink.as_ref().unwrap(), "part-0.csv", b"x").await;
    let commit = proto::CommitRequest {
        result_id: expiring.result_id.clone(),
        commit_token: expiring.commit_token.clone(),
        files: vec![],
    };
    client.commit(commit).await.unwrap();
    let pruned = |samples: &BTreeMap<String, f64>, reason: &str| {
        sample(samples, &format!("anonymous_results_pruned_total{{reason=\"{reason}\"}}"))
    };
    let mut last = scrape(&url).await;
    for _ in 0..150 {
        if pruned(&last, "expired") >= 1.0 && pruned(&last, "abandoned") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = scrape(&url).await;
    }
    // At least the result past its TTL; the records of aborted results go as expired too, commit_timeout
    // after their abort, which may fall within this wait.
    assert!(pruned(&last, "expired") >= 1.0, "the expired result is pruned within 15 s: {last:#?}");
    assert_eq!(pruned(&last, "abandoned"), 1.0, "the abandoned allocation is pruned within 15 s");
    assert_eq!(sample(&last, "anonymous_results_released_total"), 1.0);
    assert_eq!(sample(&last, "anonymous_results_committed_total"), 2.0);
    assert_eq!(sample(&last, "anonymous_results_committed_bytes_total"), 12.0);

    // Nothing else answers there, and nothing in it names a result.
    let base = url.trim_end_matches("/metrics");
    assert_eq!(reqwest::get(format!("{base}/")).await.unwrap().status(), 404);
    let post = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(!text.contains(&committed.result_id) && !text.contains("q-commit"), "{text}");
}

#[tokio::test]
async fn metrics_are_off_unless_configured_and_a_bad_address_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::local();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, store.config_toml("")).unwrap();
    let service = Process::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    assert!(!service.log().iter().any(|line| line.contains("metrics_address")), "{:#?}", service.log());

    std::fs::write(&config, store.config_toml("metrics_listen = \"localhost:9090\"")).unwrap();
    let output = std::process::Command::new(common::process::BIN)
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("anonymous_results_service.metrics_listen"), "{stderr}");
    assert!(stderr.contains("is not an address like 127.0.0.1:50051"), "{stderr}");
}
