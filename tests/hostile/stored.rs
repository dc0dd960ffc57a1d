//! What is in storage is hostile too: a worker holds the store's credentials and runs users' code, so any file
//! of a sink, and on a store its credentials reach any record, may be replaced by something else (a FIFO, a
//! folder, a 1 GiB sparse file, a record of another result, numbers no release writes); and a crash of an
//! older release left things behind. One test per way that once broke the service.

use std::{
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anonymous_results::proto;
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, assert_status, state};

/// A result of one file `part-0.parquet`, committed.
async fn committed(fx: &Fixture, query_id: &str) -> proto::AllocateResponse {
    let allocated = fx.allocate(query_id).await;
    fx.write(&allocated, "part-0.parquet", b"PAR1 the committed bytes").await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    allocated
}

fn root(fx: &Fixture) -> PathBuf {
    fx.store.local_root().expect("a local store")
}

fn records(fx: &Fixture, id: &str) -> PathBuf {
    root(fx).join("_control/results").join(id)
}

fn outcome(fx: &Fixture, id: &str) -> PathBuf {
    records(fx, id).join("outcome.json")
}

fn pending(fx: &Fixture, id: &str) -> PathBuf {
    root(fx).join("_control/pending").join(format!("{id}.json"))
}

/// A service over the same store that has seen nothing yet: it reads every record from storage.
async fn cold(fx: &Fixture) -> TestServer {
    TestServer::start(&fx.store.config()).await
}

async fn resolve(server: &TestServer, id: &str) -> Result<proto::ResolveResponse, tonic::Status> {
    let request = proto::ResolveRequest { result_id: id.into(), ..Default::default() };
    server.client.clone().resolve(request).await.map(tonic::Response::into_inner)
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number")
}

/// Replaces the file at `path` by a sparse one of `bytes` bytes (a new file: a record's other names, its hard
/// links, keep the old bytes).
fn sparse(path: &Path, bytes: u64) {
    std::fs::remove_file(path).expect("remove the record");
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("create it");
    file.set_len(bytes).expect("make it sparse");
}

/// A committed file replaced by a FIFO: every GET of its link is refused at once (an open that waited for a
/// writer would hold a blocking thread each, until the pool ran out), and no thread of the service is left
/// waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_where_a_committed_file_was_is_refused_at_once_and_holds_no_thread() {
    let fx = crate::started("storage_timeout = \"2s\"\n").await;
    let allocated = committed(&fx, "fifo").await;
    let request = proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let url = fx.client().resolve(request).await.unwrap().into_inner().locations.remove(0).url;
    let file = PathBuf::from(format!("{}part-0.parquet", allocated.sink.as_ref().unwrap().uri));
    std::fs::remove_file(&file).unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    rustix::fs::mknodat(rustix::fs::CWD, &file, rustix::fs::FileType::Fifo, mode, 0).expect("mkfifo");
    anonymous_results::storage::install_tls_provider();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let answers = futures::future::join_all((0..32).map(|_| client.get(&url).send())).await;
    for answer in answers {
        assert_eq!(answer.expect("an answer").status(), 502, "a FIFO is not the committed file");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "32 GETs of a FIFO took {took:?}: each waited for a writer");
    // Nothing holds the FIFO open for reading: a writer that does not wait finds no reader.
    let writer =
        std::fs::OpenOptions::new().write(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&file);
    assert_eq!(
        writer.err().and_then(|e| e.raw_os_error()),
        Some(rustix::io::Errno::NXIO.raw_os_error()),
        "a thread of the service holds the FIFO open"
    );
    let started = Instant::now();
    fx.allocate("after the fifo").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    fx.stop().await;
}

/// A record replaced by a sparse file larger than any release writes of its kind (1 GiB for an allocation, a
/// byte over its bound for an outcome) is refused by its size, unread; one of 1 GiB of zeros within the bound
/// is refused at its first byte. Each result answers DATA_LOSS at once and the memory of the process does not
/// grow; every other result is served as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_any_release_writes_is_data_loss_unread() {
    let fx = Fixture::start(TestStore::local()).await;
    let big_outcome = committed(&fx, "big outcome").await;
    let zeros_outcome = committed(&fx, "an outcome of zeros").await;
    let big_allocation = fx.allocate("big allocation").await;
    let fine = committed(&fx, "fine").await;
    // The pruner has not run: the allocation is still pending. Its pending record replaced (not its query
    // record, another name of the same bytes until then).
    sparse(&outcome(&fx, &big_outcome.result_id), anonymous_results::model::MAX_OUTCOME_BYTES + 1);
    sparse(&outcome(&fx, &zeros_outcome.result_id), 1 << 30);
    sparse(&pending(&fx, &big_allocation.result_id), 1 << 30);
    let server = cold(&fx).await;
    let before = rss_kib();
    let started = Instant::now();
    assert_status(resolve(&server, &big_outcome.result_id).await, Code::DataLoss, &["outcome.json", "larger than"]);
    assert_status(resolve(&server, &zeros_outcome.result_id).await, Code::DataLoss, &["outcome.json"]);
    assert_status(resolve(&server, &big_allocation.result_id).await, Code::DataLoss, &["larger than"]);
    let took = started.elapsed();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(took < Duration::from_secs(1), "refused after {took:?}: the records were read");
    assert!(grown_mib < 64, "the process grew by {grown_mib} MiB");
    let served = resolve(&server, &fine.result_id).await.expect("another result");
    assert_eq!(state(served.status.as_ref().unwrap()), proto::ResultState::Committed);
    assert_eq!(served.locations.len(), 1);
    server.stop().await;
    fx.stop().await;
}

/// An outcome record of the wrong kind (a folder, empty or not), one with a size no release writes, or one of
/// another result copied in place, is DATA_LOSS for its result alone: never a state (a folder made a committed
/// result read ALLOCATED), never a file served with a size of 2^64 - 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_wrong_kind_or_out_of_range_is_data_loss() {
    let fx = Fixture::start(TestStore::local()).await;
    let fine = committed(&fx, "fine").await;
    let text = std::fs::read_to_string(outcome(&fx, &fine.result_id)).unwrap();

    let folder = committed(&fx, "a folder").await;
    std::fs::remove_file(outcome(&fx, &folder.result_id)).unwrap();
    std::fs::create_dir_all(outcome(&fx, &folder.result_id).join("inside")).unwrap();

    let empty_folder = committed(&fx, "an empty folder").await;
    std::fs::remove_file(outcome(&fx, &empty_folder.result_id)).unwrap();
    std::fs::create_dir(outcome(&fx, &empty_folder.result_id)).unwrap();

    let huge = committed(&fx, "a huge size").await;
    let record = std::fs::read_to_string(outcome(&fx, &huge.result_id)).unwrap();
    let forged = record.replace("\"size_bytes\": 24", "\"size_bytes\": 18446744073709551615");
    assert_ne!(forged, record, "{record}");
    std::fs::remove_file(outcome(&fx, &huge.result_id)).unwrap();
    std::fs::write(outcome(&fx, &huge.result_id), forged).unwrap();

    let copied = committed(&fx, "another's record").await;
    std::fs::remove_file(outcome(&fx, &copied.result_id)).unwrap();
    std::fs::write(outcome(&fx, &copied.result_id), &text).unwrap();

    let server = cold(&fx).await;
    for (what, allocated) in [("a folder", &folder), ("an empty folder", &empty_folder), ("2^64 - 1 bytes", &huge)] {
        let answer = resolve(&server, &allocated.result_id).await;
        assert!(matches!(&answer, Err(status) if status.code() == Code::DataLoss), "{what}: {answer:?}");
    }
    assert_status(resolve(&server, &copied.result_id).await, Code::DataLoss, &["result_id"]);
    let served = resolve(&server, &fine.result_id).await.expect("the result whose record was copied");
    assert_eq!(state(served.status.as_ref().unwrap()), proto::ResultState::Committed);
    // The pruner skips them, and deletes what is due among the others.
    let report = server.service.prune(false).await.expect("a pruning pass");
    assert_eq!(report.failed, 0, "{report:?}");
    server.stop().await;
    fx.stop().await;
}

/// A `Duration` whose seconds and nanoseconds have different signs is not a duration (protobuf says so): a
/// ttl or url_ttl of `{seconds: 1, nanos: -1}` is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_with_mixed_signs_is_invalid_argument() {
    let fx = Fixture::start(TestStore::local()).await;
    let mixed = Some(prost_types::Duration { seconds: 1, nanos: -1 });
    let out_of_range = Some(prost_types::Duration { seconds: 1, nanos: 1_000_000_000 });
    let mut client = fx.client();
    for ttl in [mixed, out_of_range] {
        let request = proto::AllocateRequest { query_id: "mixed".into(), ttl, ..Default::default() };
        assert_status(client.allocate(request).await, Code::InvalidArgument, &["ttl"]);
    }
    let allocated = committed(&fx, "resolved").await;
    let request =
        proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: mixed, ..Default::default() };
    assert_status(client.resolve(request).await, Code::InvalidArgument, &["url_ttl"]);
    let request = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl: mixed };
    assert_status(client.renew(request).await, Code::InvalidArgument, &["ttl"]);
    fx.stop().await;
}
