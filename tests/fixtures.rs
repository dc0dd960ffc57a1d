//! Stores written by released layouts (`tests/fixtures/`), served by today's code as their release served
//! them: every state, the files and their sizes, the expiries, a commit of what was left allocated, the
//! idempotence of the queries, and the pruning of each result when its time comes. Run over a local root (as
//! written) and over moto (the same keys, uploaded), since a cluster upgrades over either.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anonymous_results::{clock::ManualClock, proto};
use common::{TestServer, TestStore, assert_status, state};
use serde_json::Value;
use tonic::Code;

/// One released layout's store and what it must serve.
struct Written {
    store: PathBuf,
    expected: Value,
}

impl Written {
    fn load(release: &str) -> Self {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(release);
        let expected = std::fs::read_to_string(folder.join("expected.json")).expect("the fixture's expected.json");
        Self { store: folder.join("store"), expected: serde_json::from_str(&expected).expect("JSON") }
    }

    /// When the fixture was written.
    fn written_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(self.expected["written_at"].as_f64().expect("written_at"))
    }

    fn result(&self, name: &str) -> &Value {
        &self.expected["results"][name]
    }

    fn id(&self, name: &str) -> String {
        self.result(name)["result_id"].as_str().expect("a result id").to_owned()
    }

    /// Every file of the store, as `(key, bytes)`.
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        let mut pending = vec![self.store.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("a fixture folder").map(|e| e.expect("an entry")) {
                match entry.file_type().expect("a type").is_dir() {
                    true => pending.push(entry.path()),
                    false => {
                        let key = entry.path().strip_prefix(&self.store).unwrap().to_str().unwrap().to_owned();
                        files.push((key, std::fs::read(entry.path()).expect("a fixture file")));
                    }
                }
            }
        }
        files
    }
}

async fn resolve(server: &TestServer, id: &str) -> Result<proto::ResolveResponse, anonymous_results_client::Error> {
    let request = proto::ResolveRequest { result_id: id.into(), ..Default::default() };
    server.client.clone().resolve(request).await
}

fn seconds(timestamp: &Option<prost_types::Timestamp>) -> Option<i64> {
    timestamp.as_ref().map(|t| t.seconds)
}

/// Serves the store of `release`, planted in `store`, and checks everything it must serve.
async fn serve_fixture(release: &str, store: TestStore) {
    let written = Written::load(release);
    for (key, bytes) in written.files() {
        store.plant(&key, &bytes).await;
    }
    let clock = Arc::new(ManualClock::at(written.written_at() + Duration::from_secs(300)));
    let server = TestServer::start_with_clock(&store.config(), clock.clone()).await;
    let client = server.client.clone();

    // The release wrote no result index: the start-up pass wrote it, so ListResults and GetUsage name every
    // result it stored, in its state (the released one is gone; the one the pruner had not seen is committed).
    let listed = client.list_all_results(proto::ListResultsRequest::default()).await.expect("every result listed");
    let mut listed: Vec<(String, i32)> = listed.into_iter().map(|status| (status.result_id, status.state)).collect();
    listed.sort();
    let committed = proto::ResultState::Committed as i32;
    let mut expected: Vec<(String, i32)> = [
        ("committed", committed),
        ("ttl", committed),
        ("renewed", committed),
        ("pending", committed),
        ("poisoned", committed),
        ("aborted", proto::ResultState::Aborted as i32),
        ("allocated", proto::ResultState::Allocated as i32),
    ]
    .into_iter()
    .map(|(name, state)| (written.id(name), state))
    .collect();
    expected.sort();
    assert_eq!(listed, expected);
    let usage = client.get_usage().await.expect("usage");
    let in_state = |state: proto::ResultState| usage.states.iter().find(|s| s.state == state as i32).map(|s| s.results);
    assert_eq!((in_state(proto::ResultState::Committed), in_state(proto::ResultState::Allocated)), (Some(5), Some(1)));
    // Once: a second replica's start-up finds the marker, and writes nothing.
    assert_eq!(server.service.rebuild_index().await.expect("a second pass"), None);

    // Committed, kept until released, with the files and rows the commit listed, in its order.
    let committed = resolve(&server, &written.id("committed")).await.expect("resolve the committed result");
    let status = committed.status.as_ref().unwrap();
    assert_eq!(state(status), proto::ResultState::Committed);
    assert_eq!(status.expires_at, None, "kept until released");
    assert_eq!(status.labels.get("team").map(String::as_str), Some("data"));
    let files = written.result("committed")["files"].as_array().unwrap();
    assert_eq!(committed.locations.len(), files.len());
    for (location, file) in committed.locations.iter().zip(files) {
        assert_eq!(location.path, file["path"].as_str().unwrap());
        assert_eq!(location.size_bytes, file["size_bytes"].as_u64().unwrap());
        assert_eq!(location.row_count, file["row_count"].as_u64());
        assert_eq!(store.fetch(&location.url).await, file["bytes"].as_str().unwrap().as_bytes(), "{}", location.path);
    }
    // Through the service too: a manifest from before pins is checked by its files' sizes, as it was.
    let request = proto::ResolveRequest {
        result_id: written.id("committed"),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let proxied = client.clone().resolve(request).await.expect("proxy links");
    anonymous_results::storage::install_tls_provider();
    for (location, file) in proxied.locations.iter().zip(files) {
        let answer = reqwest::get(&location.url).await.expect("a proxy download");
        assert_eq!(answer.status(), 200, "{}", location.path);
        assert_eq!(answer.bytes().await.unwrap(), file["bytes"].as_str().unwrap().as_bytes(), "{}", location.path);
    }
    // Allocate of its query answers the same result.
    let again = proto::AllocateRequest {
        query_id: "fixture-committed".into(),
        labels: [("team".to_owned(), "data".to_owned())].into(),
        ..Default::default()
    };
    assert_eq!(client.allocate(again).await.unwrap().result_id, written.id("committed"));

    // Committed with a TTL, discovered (CSV), renewed, and one the pruner had not seen yet.
    for (name, ttl) in [("ttl", 3600), ("pending", 3600)] {
        let status = resolve(&server, &written.id(name)).await.unwrap().status.unwrap();
        assert_eq!(state(&status), proto::ResultState::Committed, "{name}");
        assert_eq!(seconds(&status.expires_at).unwrap() - seconds(&status.committed_at).unwrap(), ttl, "{name}");
    }
    let ttl = resolve(&server, &written.id("ttl")).await.unwrap();
    assert_eq!(ttl.file_type, proto::FileType::Csv as i32);
    assert_eq!(store.fetch(&ttl.locations[0].url).await, b"a,b\n1,2\n");
    let renewed = resolve(&server, &written.id("renewed")).await.unwrap().status.unwrap();
    let kept = seconds(&renewed.expires_at).unwrap() - seconds(&renewed.committed_at).unwrap();
    assert!((7200..7260).contains(&kept), "renewed to 2h after the commit, give or take: {kept} s");

    // Aborted, with its reason.
    let aborted = resolve(&server, &written.id("aborted")).await.unwrap().status.unwrap();
    assert_eq!(state(&aborted), proto::ResultState::Aborted);
    assert_eq!(aborted.abort_reason, "worker lost");

    // Released: gone, and its query can be allocated again.
    assert_status(resolve(&server, &written.id("released")).await, Code::NotFound, &[]);
    let request = proto::AllocateRequest { query_id: "fixture-released".into(), ..Default::default() };
    assert_ne!(client.allocate(request).await.unwrap().result_id, written.id("released"));

    // The TTL the release accepted and could not commit with: committed, kept until released.
    let poisoned = resolve(&server, &written.id("poisoned")).await.unwrap().status.unwrap();
    assert_eq!(state(&poisoned), proto::ResultState::Committed);
    assert_eq!(poisoned.expires_at, None, "an expiry past the year 9999 is kept until released");
    let renew = proto::RenewRequest {
        result_id: written.id("poisoned"),
        ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
    };
    assert_eq!(client.renew(renew).await.unwrap().status.unwrap().expires_at, None);

    // Allocated: committed now, with the token the release handed out.
    let allocated = written.result("allocated");
    let id = written.id("allocated");
    let pending = resolve(&server, &id).await.unwrap().status.unwrap();
    assert_eq!(state(&pending), proto::ResultState::Allocated);
    assert_eq!(pending.file_type, proto::FileType::Ipc as i32);
    // Allocate of its query answers it again, with the sink the worker writes into.
    let request = proto::AllocateRequest {
        query_id: "fixture-allocated".into(),
        file_type: proto::FileType::Ipc as i32,
        ..Default::default()
    };
    let again = client.allocate(request).await.expect("allocate the pending query again");
    assert_eq!(again.result_id, id);
    assert_eq!(again.commit_token, allocated["commit_token"].as_str().unwrap(), "the same secret, the same token");
    store.write(again.sink.as_ref().unwrap(), "late.arrow", b"ARROW1 late").await;
    let commit = proto::CommitRequest {
        result_id: id.clone(),
        commit_token: allocated["commit_token"].as_str().unwrap().into(),
        files: Vec::new(),
    };
    let status = client.commit(commit).await.expect("commit with the release's token").status.unwrap();
    assert_eq!((state(&status), status.total_bytes), (proto::ResultState::Committed, 11));
    // Records written now carry their format (a manifest with pins: format 2); those of the release carry none.
    if let Some(root) = store.local_root() {
        let record =
            |path: String| -> Value { serde_json::from_slice(&std::fs::read(root.join(path)).unwrap()).unwrap() };
        let manifest = record(format!("_control/results/{id}/outcome.json"));
        assert_eq!(manifest["format"], 2);
        assert_eq!(manifest["files"][0]["pin"]["kind"], "file", "{manifest}");
        assert_eq!(record(format!("_control/results/{}/outcome.json", written.id("committed")))["format"], Value::Null);
    }

    // Pruning, as each result's time comes, with nothing it cannot handle.
    let service = &server.service;
    let report = service.prune(false).await.expect("a pass over the old store");
    assert_eq!((report.expired.len(), report.failed), (0, 0), "{report:?}");
    let mut gone = Vec::new();
    for (after, names) in [(5_400, vec!["ttl", "pending"]), (7_500, vec!["renewed"]), (90_000, vec!["aborted"])] {
        clock.advance(Duration::from_secs(after) - written_since(&clock, &written));
        let report = service.prune(false).await.expect("a pruning pass");
        assert_eq!(report.failed, 0, "{report:?}");
        let mut expired: Vec<String> = report.expired.iter().map(ToString::to_string).collect();
        expired.sort();
        let mut expected: Vec<String> = names.iter().map(|name| written.id(name)).collect();
        expected.sort();
        assert_eq!(expired, expected, "after {after} s");
        gone.extend(names);
    }
    for name in gone {
        assert_status(resolve(&server, &written.id(name)).await, Code::NotFound, &[]);
    }
    for name in ["committed", "poisoned", "allocated"] {
        let status = resolve(&server, &written.id(name)).await.unwrap().status.unwrap();
        assert_eq!(state(&status), proto::ResultState::Committed, "{name} is kept until released");
    }
    server.stop().await;
}

/// How long after the fixture was written the clock stands.
fn written_since(clock: &ManualClock, written: &Written) -> Duration {
    use anonymous_results::clock::Clock;
    clock.now().duration_since(written.written_at()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_0_1_0_is_served_from_a_local_root() {
    serve_fixture("v0.1.0", TestStore::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_0_1_0_is_served_from_an_s3_bucket() {
    let Some(store) = TestStore::moto().await else { return };
    serve_fixture("v0.1.0", store).await;
}
