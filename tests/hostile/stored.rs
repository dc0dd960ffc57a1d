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

use crate::common::{Fixture, TestServer, TestStore, assert_status, state, strace};

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

async fn resolve(server: &TestServer, id: &str) -> Result<proto::ResolveResponse, anonymous_results_client::Error> {
    let request = proto::ResolveRequest { result_id: id.into(), ..Default::default() };
    server.client.clone().resolve(request).await
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
    let url = fx.client().resolve(request).await.unwrap().locations.remove(0).url;
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
    let client = fx.client();
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

/// The files of `folder` (recursively), relative to it, sorted.
fn files_under(folder: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for entry in listing.map(Result::unwrap) {
            match entry.file_type().unwrap().is_dir() {
                true => pending.push(entry.path()),
                false => files.push(entry.path().strip_prefix(folder).unwrap().display().to_string()),
            }
        }
    }
    files.sort();
    files
}

/// What an older release's crash left (a claim and its sink with no pending record: it wrote the claim
/// first) and what any crash leaves (temporary files, one keeping a released result's records folder alive)
/// is listed by a dry sweep, then removed by a sweep once old enough; nothing in use is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_crashes_left_is_swept_once_old_and_nothing_in_use_is() {
    let clock = std::sync::Arc::new(anonymous_results::clock::ManualClock::new());
    let store = TestStore::local();
    let config = anonymous_results::Config::from_toml(&store.config_toml_with("commit_timeout = \"1h\"", "")).unwrap();
    let fx = Fixture { server: TestServer::start_with_clock(&config, clock.clone()).await, store };
    let orphan = fx.allocate("left by an older release").await;
    fx.write(&orphan, "part-0.parquet", b"half written").await;
    std::fs::remove_file(pending(&fx, &orphan.result_id)).unwrap();
    let released = committed(&fx, "released").await;
    fx.client().release(proto::ReleaseRequest { result_id: released.result_id.clone() }).await.unwrap();
    std::fs::create_dir_all(records(&fx, &released.result_id)).unwrap();
    let temporaries = [
        format!("_control/queries/.anonymous-results-tmp-1-0-{:016x}", 1),
        format!("_control/results/{}/.anonymous-results-tmp-1-1-{:016x}", released.result_id, 2),
    ];
    for temp in &temporaries {
        std::fs::write(root(&fx).join(temp), b"a write a crash cut short").unwrap();
    }
    let kept = committed(&fx, "kept").await;
    let in_flight = fx.allocate("in flight").await;
    let service = &fx.server.service;

    // Young, they are left alone.
    let report = service.sweep(true).await.unwrap();
    assert!(report.temporaries.is_empty() && report.orphan_claims.is_empty(), "{report:?}");
    clock.advance(Duration::from_secs(2 * 3600));
    let dry = service.sweep(true).await.unwrap();
    assert_eq!(dry.temporaries, temporaries.to_vec(), "{dry:?}");
    let orphans: Vec<String> = dry.orphan_claims.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(orphans, std::slice::from_ref(&orphan.result_id), "{dry:?}");
    assert!(root(&fx).join(&temporaries[0]).exists(), "a dry sweep removed something");
    let swept = service.sweep(false).await.unwrap();
    assert_eq!((swept.temporaries.len(), swept.orphan_claims.len(), swept.failed), (2, 1, 0), "{swept:?}");
    assert!(!root(&fx).join(&orphan.result_id).exists(), "the orphan's sink is still there");
    assert!(!records(&fx, &released.result_id).exists(), "the released result's records folder is still there");
    let queries = files_under(&root(&fx).join("_control/queries"));
    assert_eq!(queries.len(), 2, "the claims of the results in use, and only those: {queries:?}");
    let served = resolve(&fx.server, &kept.result_id).await.unwrap();
    assert_eq!(state(served.status.as_ref().unwrap()), proto::ResultState::Committed);
    let pending_one = resolve(&fx.server, &in_flight.result_id).await.unwrap();
    assert_eq!(state(pending_one.status.as_ref().unwrap()), proto::ResultState::Allocated);
    let text = service.metrics().render();
    assert!(text.contains("anonymous_results_swept_total{kind=\"orphan_claim\"} 1\n"), "{text}");
    assert!(text.contains("anonymous_results_swept_total{kind=\"temporary\"} 2\n"), "{text}");
    fx.stop().await;
}

/// An Allocate cut short after its pending record (here: its claim fails) leaves a pending record and a sink
/// that nobody was told of, and nothing else: the pruner abandons it after its commit deadline and then
/// deletes it, leaving nothing. (An older release wrote the claim first, and left what only the sweep finds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocate_cut_short_leaves_a_pending_record_that_the_pruner_reaps() {
    use anonymous_results::storage::{Fault, Faults, Operation};
    let clock = std::sync::Arc::new(anonymous_results::clock::ManualClock::new());
    let store = TestStore::local();
    let config = anonymous_results::Config::from_toml(&store.config_toml_with("commit_timeout = \"1h\"", "")).unwrap();
    let faults = Faults::new();
    let server = TestServer::start_unreliable(&config, clock.clone(), faults.clone()).await;
    let fx = Fixture { server, store };
    // The pending record's write passes (and the index entry's and its journal entry's beside it), the
    // claim's, after them, fails.
    faults.fail_after(Operation::PutCreate, 3, Fault::Unavailable, 1);
    let request = proto::AllocateRequest { query_id: "cut short".into(), ..Default::default() };
    assert_status(fx.client().allocate(request.clone()).await, Code::Unavailable, &[]);
    assert_eq!(files_under(&root(&fx).join("_control/pending")).len(), 1, "the pending record first");
    assert!(files_under(&root(&fx).join("_control/queries")).is_empty(), "no claim");
    let service = &fx.server.service;
    clock.advance(Duration::from_secs(3601));
    assert_eq!(service.prune(false).await.unwrap().abandoned.len(), 1);
    clock.advance(Duration::from_secs(3601));
    service.prune(false).await.unwrap();
    // The change journal's entries go an hour after they were written.
    clock.advance(Duration::from_secs(3601));
    service.prune(false).await.unwrap();
    let left = files_under(&root(&fx));
    let kept = ["_control/commit-secret", "_control/index-complete"];
    assert!(left.iter().all(|file| kept.contains(&file.as_str())), "left behind: {left:?}");
    // The query is allocated anew as if nothing had happened.
    fx.client().allocate(request).await.expect("a new allocation");
    fx.stop().await;
}

/// Of racing Allocates of one query, the losers remove the pending records and sinks they made first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_losers_of_a_race_for_a_claim_remove_what_they_made() {
    let fx = Fixture::start(TestStore::local()).await;
    let request = proto::AllocateRequest { query_id: "raced".into(), ..Default::default() };
    let calls = (0..16).map(|_| {
        let (client, request) = (fx.client(), request.clone());
        async move { client.allocate(request).await.unwrap().result_id }
    });
    let ids: std::collections::BTreeSet<String> = futures::future::join_all(calls).await.into_iter().collect();
    assert_eq!(ids.len(), 1, "one result for the query");
    let winner = ids.into_iter().next().unwrap();
    let only_winners = || {
        let pending = files_under(&root(&fx).join("_control/pending"));
        let sinks: Vec<String> = std::fs::read_dir(root(&fx))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "_control")
            .collect();
        pending == [format!("{winner}.json")] && sinks == [winner.clone()]
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !only_winners() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(only_winners(), "the losers' records or sinks are left");
    fx.stop().await;
}

/// Each class of blocking work (the files of sinks, reads of records, writes of records) holds permits of its
/// own: while one class's work hangs on its threads (as work stuck in the kernel does, made to here by the
/// test hook), calls of the others answer within a second, and the stuck calls fail within storage_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_of_blocking_work_that_hangs_holds_up_no_other() {
    use anonymous_results::storage::BlockingClass;
    let fx = crate::started("storage_timeout = \"2s\"\nblocking_limit = 8\nrefresh_interval = \"1h\"\n").await;
    let done = committed(&fx, "done").await;
    let request = proto::ResolveRequest {
        result_id: done.result_id.clone(),
        download_mode: proto::DownloadMode::Proxy as i32,
        ..Default::default()
    };
    let url = fx.client().resolve(request).await.unwrap().locations.remove(0).url;
    anonymous_results::storage::install_tls_provider();
    let http = reqwest::Client::new();
    let classes = fx.server.service.blocking_classes().expect("a local backend");
    let within_a_second = |what: &str, took: Duration| assert!(took < Duration::from_secs(1), "{what} took {took:?}");

    // Sinks stuck: 16 downloads hang (and are answered 503 within storage_timeout); records are read and written.
    let held = classes.hold(BlockingClass::Sinks);
    let downloads: Vec<_> = (0..16).map(|_| tokio::spawn(http.get(&url).send())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(classes.available(BlockingClass::Sinks), 0, "the stuck downloads hold every permit of their class");
    let started = Instant::now();
    let allocated = fx.allocate("while sinks hang").await;
    let status = resolve(&fx.server, &allocated.result_id).await.expect("a Resolve read from storage");
    assert_eq!(state(status.status.as_ref().unwrap()), proto::ResultState::Allocated);
    within_a_second("Allocate and Resolve with the sinks stuck", started.elapsed());
    for download in downloads {
        assert_eq!(download.await.unwrap().expect("an answer").status(), 503);
    }
    drop(held);

    // Records' reads stuck: a download of a cached result and an Allocate are served.
    let held = classes.hold(BlockingClass::Records);
    let started = Instant::now();
    let answer = http.get(&url).send().await.unwrap();
    assert_eq!(answer.bytes().await.unwrap().as_ref(), b"PAR1 the committed bytes");
    fx.allocate("while record reads hang").await;
    within_a_second("a download and an Allocate with record reads stuck", started.elapsed());
    drop(held);

    // Records' writes stuck: a Resolve read from storage and a download are served; an Allocate fails in time.
    let held = classes.hold(BlockingClass::Writes);
    let started = Instant::now();
    let status = resolve(&fx.server, &allocated.result_id).await.expect("a Resolve");
    assert_eq!(state(status.status.as_ref().unwrap()), proto::ResultState::Allocated);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    within_a_second("a Resolve and a download with record writes stuck", started.elapsed());
    let request = proto::AllocateRequest { query_id: "while writes hang".into(), ..Default::default() };
    let started = Instant::now();
    assert_status(fx.client().allocate(request).await, Code::DeadlineExceeded, &[]);
    assert!(started.elapsed() < Duration::from_secs(4), "failed after {:?}", started.elapsed());
    drop(held);
    fx.stop().await;
}

/// A Commit's walk of a sink and the sink's deletion open nothing but folders (each open of a name in the sink
/// carries O_DIRECTORY and O_NOFOLLOW, so a FIFO or a link there is never opened), whatever the sink holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commits_walk_and_a_deletion_open_nothing_but_folders() {
    if !strace::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("results");
    std::fs::create_dir(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let config = crate::common::process::write_local_config(dir.path(), &root);
    let (service, trace) = strace::start(dir.path(), &config, "open,openat");
    let client = service.client().await;
    let request = proto::AllocateRequest { query_id: "traced".into(), ..Default::default() };
    let allocated = client.allocate(request).await.unwrap();
    let sink = root.join(&allocated.result_id);
    std::fs::create_dir_all(sink.join("year=2024/month=12")).unwrap();
    std::fs::write(sink.join("year=2024/month=12/part-0.parquet"), b"data").unwrap();
    std::fs::write(sink.join("part-1.parquet"), b"data").unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o666);
    rustix::fs::mknodat(rustix::fs::CWD, sink.join("year=2024/fifo"), rustix::fs::FileType::Fifo, mode, 0).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sink.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", sink.join("etc")).unwrap();
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    assert_status(client.commit(commit).await, Code::FailedPrecondition, &["regular file"]);
    client.release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    // The deletion runs after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sink.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!sink.exists(), "the sink was not deleted");
    let calls = strace::stop(service, &trace).await;
    let sink = sink.display().to_string();
    let opens: Vec<_> = calls
        .iter()
        .filter(|call| call.name.starts_with("open") && call.paths().iter().any(|path| path.starts_with(&sink)))
        .collect();
    assert!(opens.len() >= 6, "the walk and the deletion were not traced: {opens:#?}");
    for open in opens {
        assert!(open.args.contains("O_DIRECTORY") && open.args.contains("O_NOFOLLOW"), "{open:?}");
    }
    assert!(std::fs::metadata("/etc/passwd").is_ok(), "a link was followed");
}

/// An index entry that cannot be read (here: a committed result's summary overwritten with junk) costs only
/// its own result: ListResults leaves it off the page and lists the others, and a refresh of what is stored
/// goes on, counting it by its entry's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_index_entry_leaves_its_result_off_a_page_and_nothing_else() {
    let fx = Fixture::start(TestStore::local()).await;
    let mut made = Vec::new();
    for query in ["spoiled", "sound"] {
        let allocated = fx.allocate(query).await;
        fx.write(&allocated, "part-0.csv", b"a\n1\n").await;
        fx.commit(&allocated, vec![]).await.expect("committed");
        made.push(allocated);
    }
    fx.server.service.deletions_done().await;
    let index = root(&fx).join("_control/index");
    let summary = files_under(&index)
        .into_iter()
        .find(|file| file.contains(&made[0].result_id) && file.contains("committed-"))
        .expect("the seal's index entry");
    std::fs::write(index.join(&summary), b"{\"format\": 1, \"junk\": true}").unwrap();
    let listed = fx.client().list_all_results(proto::ListResultsRequest::default()).await.expect("a page");
    let ids: Vec<&str> = listed.iter().map(|status| status.result_id.as_str()).collect();
    assert_eq!(ids, [made[1].result_id.as_str()]);
    fx.server.service.refresh_usage().await.expect("a refresh");
    let usage = fx.client().get_usage().await.expect("usage");
    let committed = usage.states.iter().find(|s| s.state == proto::ResultState::Committed as i32).unwrap();
    assert_eq!((committed.results, committed.bytes), (2, 8));
    fx.stop().await;
}

/// A flood of change-journal entries (a burst of calls, or a writer with the store's credentials) does not
/// make a refresh read each: past `MAX_CHANGES` waiting, it reads the index whole instead, and counts what
/// is stored all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_journal_entries_makes_a_refresh_read_the_index_whole() {
    use anonymous_results::{
        layout,
        model::{ResultId, Timestamp},
        results::{MAX_CHANGES, Refreshed},
    };
    let fx = Fixture::start(TestStore::local()).await;
    let allocated = fx.allocate("kept").await;
    fx.write(&allocated, "part-0.csv", b"a\n1\n").await;
    fx.commit(&allocated, vec![]).await.expect("committed");
    fx.server.service.deletions_done().await;
    assert!(matches!(fx.server.service.refresh_usage().await.expect("a refresh"), Refreshed::Changes(_)));
    // One more entry than a refresh reads, each naming one result (so that reading them would be quick).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let named = ResultId::generate().unwrap();
    let created = Timestamp::from_millis(now).unwrap();
    let started = Instant::now();
    for n in 0..=MAX_CHANGES as u64 {
        let key = layout::change(Timestamp::from_millis(now + n).unwrap(), created, &named);
        let path = root(&fx).join(key);
        if n == 0 || path.parent().is_some_and(|parent| !parent.exists()) {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        std::fs::File::create(path).unwrap();
    }
    eprintln!("planted {} journal entries in {:?}", MAX_CHANGES + 1, started.elapsed());
    assert_eq!(fx.server.service.refresh_usage().await.expect("a refresh"), Refreshed::Whole);
    let usage = fx.client().get_usage().await.expect("usage");
    let committed = usage.states.iter().find(|s| s.state == proto::ResultState::Committed as i32).unwrap();
    assert_eq!((committed.results, committed.bytes), (1, 4));
    fx.stop().await;
}
