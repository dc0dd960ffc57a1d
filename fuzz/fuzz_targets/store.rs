//! What is in storage, hostile: each input makes a small store through the service (results committed,
//! renewed, allocated, aborted and released, and the pruner's expiry index), then replaces files of it (any
//! record, a sink's file, the index's entries) with what the input says (arbitrary bytes, a byte of the
//! record changed, an empty file, a sparse file of 1 GiB, a folder, empty or not, a FIFO, a symbolic link to
//! another record or out of the root), and runs every call on every result, a pruning pass and a sweep
//! against it, from a service that has seen nothing yet.
//!
//! Asserted: no call panics or is answered INTERNAL or UNKNOWN, and none takes longer than its storage
//! timeout and a margin (a hang); every result none of whose files was replaced is served as it was; the
//! pruner and the sweep fail on nothing (a record they cannot read is counted, and skipped); nothing is
//! written outside the root. The memory bound is libFuzzer's `-rss_limit_mb`. Every 1,000 inputs the count of
//! replacements of each kind is printed.

#![no_main]

#[path = "shared/grpc.rs"]
mod grpc;

use std::{
    collections::BTreeMap,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use anonymous_results::{Config, Service, clock::ManualClock, proto};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The clock's time at the start of every input: 2026-11-30T00:00:00Z.
const START: u64 = 1_795_996_800;
/// The storage timeout of the service under test, and how much longer a call may take before it is a hang.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(2);
const HANG: Duration = Duration::from_secs(6);

/// What a file is replaced by.
const KINDS: [&str; 10] = [
    "arbitrary bytes",
    "a changed byte",
    "empty",
    "huge sparse",
    "an empty folder",
    "a folder",
    "a FIFO",
    "a link inside the root",
    "a link outside the root",
    "a link to itself",
];

struct Shared {
    runtime: tokio::runtime::Runtime,
    scratch: PathBuf,
    secret: PathBuf,
    replaced: [AtomicU64; KINDS.len()],
    inputs: AtomicU64,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let scratch = base.join(format!("anonymous-results-store-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let secret = scratch.join("commit-secret");
        std::fs::write(&secret, "fuzz-commit-secret-0123456789abcdef0123456789").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Shared { runtime, scratch, secret, replaced: Default::default(), inputs: AtomicU64::new(0) }
    })
}

/// Reads the input a byte at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        first
    }

    fn bytes(&mut self, most: usize) -> Vec<u8> {
        let n = usize::from(self.byte()).min(most).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
}

/// One gRPC call to the tower service: the answer's code and, if OK, its first message. Fails on a hang.
async fn call(
    service: &mut anonymous_results::grpc::admission::Admission,
    method: &str,
    message: Vec<u8>,
) -> (i32, Option<Bytes>) {
    let answer = tokio::time::timeout(HANG, grpc::call(service, method, message)).await;
    let (code, message) = answer.unwrap_or_else(|_| panic!("{method} hung"));
    assert!(code != 2 && code != 13, "{method} answered code {code}");
    (code, message)
}

fn config(root: &Path, secret: &Path) -> Config {
    let text = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
         anonymous_results.retention = \"1h\"\nanonymous_results.commit_timeout = \"10m\"\n\
         [anonymous_results_service]\nauth.commit_secret_file = {:?}\nstorage_timeout = \"{}s\"\n\
         blocking_limit = 8\n",
        root.display().to_string(),
        secret.display().to_string(),
        STORAGE_TIMEOUT.as_secs()
    );
    Config::from_toml(&text).unwrap()
}

/// A result of the store and how it was left.
#[derive(Clone)]
struct Made {
    allocated: proto::AllocateResponse,
    query_id: String,
    /// The state and file count a Resolve answered before any file was replaced.
    state: i32,
    files: u64,
}

/// Makes the store: a result in each state, the index of the ones kept for a while.
async fn make_store(service: &Service, root: &Path) -> Vec<Made> {
    let mut grpc = service.grpc();
    let mut made = Vec::new();
    for (i, query_id) in ["committed", "renewed", "allocated", "aborted", "released", "two files"].iter().enumerate() {
        let request = proto::AllocateRequest { query_id: (*query_id).into(), ..Default::default() };
        let (_, answer) = call(&mut grpc, "Allocate", request.encode_to_vec()).await;
        let allocated = proto::AllocateResponse::decode(answer.expect("an allocation")).unwrap();
        let sink = PathBuf::from(&allocated.sink.as_ref().unwrap().uri);
        let commit = proto::CommitRequest {
            result_id: allocated.result_id.clone(),
            commit_token: allocated.commit_token.clone(),
            files: vec![],
        };
        match *query_id {
            "allocated" => {}
            "aborted" => {
                let request = proto::AbortRequest {
                    result_id: allocated.result_id.clone(),
                    reason: "failed".into(),
                    ..Default::default()
                };
                call(&mut grpc, "Abort", request.encode_to_vec()).await;
            }
            _ => {
                std::fs::write(sink.join("part-0.parquet"), format!("PAR1 result {i}")).unwrap();
                if *query_id == "two files" {
                    std::fs::create_dir_all(sink.join("year=2024")).unwrap();
                    std::fs::write(sink.join("year=2024/part-1.parquet"), b"PAR1 the second").unwrap();
                }
                let (code, _) = call(&mut grpc, "Commit", commit.encode_to_vec()).await;
                assert_eq!(code, 0, "the store's commit");
            }
        }
        match *query_id {
            "renewed" => {
                let ttl = Some(prost_types::Duration { seconds: 7200, nanos: 0 });
                let request = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl };
                call(&mut grpc, "Renew", request.encode_to_vec()).await;
            }
            "released" => {
                let request = proto::ReleaseRequest { result_id: allocated.result_id.clone() };
                call(&mut grpc, "Release", request.encode_to_vec()).await;
            }
            _ => {}
        }
        made.push(Made { allocated, query_id: (*query_id).into(), state: 0, files: 0 });
    }
    // The pruner's index of the results kept for a while.
    service.prune(false).await.expect("the store's pruning pass");
    for result in &mut made {
        let request = proto::ResolveRequest { result_id: result.allocated.result_id.clone(), ..Default::default() };
        let (code, answer) = call(&mut grpc, "Resolve", request.encode_to_vec()).await;
        (result.state, result.files) = seen(code, answer);
    }
    let _ = root;
    made
}

/// What a Resolve answered: the state and file count, or the code negated.
fn seen(code: i32, answer: Option<Bytes>) -> (i32, u64) {
    let status = answer.map(|a| proto::ResolveResponse::decode(a).unwrap().status.unwrap());
    status.map_or((-code, 0), |s| (s.state, s.file_count))
}

/// Every file under `root`, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(listing) = std::fs::read_dir(&folder) else { continue };
        for entry in listing.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => folders.push(entry.path()),
                Ok(_) => files.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    files.sort();
    files
}

/// Replaces the file at `path` as `kind` says, with bytes from `input`; `others` are the store's other files.
fn replace(path: &Path, kind: usize, input: &mut Input, others: &[PathBuf]) {
    // What was there, if it is a small file (a path replaced twice may hold a sparse GiB by now).
    let small = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() <= 1 << 20);
    let original = if small { std::fs::read(path).unwrap_or_default() } else { Vec::new() };
    let _ = std::fs::remove_file(path);
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    let _ = match kind {
        0 => std::fs::write(path, input.bytes(255)),
        1 => {
            let mut bytes = original;
            if !bytes.is_empty() {
                let at = usize::from(input.byte()) * 257 % bytes.len();
                bytes[at] = input.byte();
            }
            std::fs::write(path, bytes)
        }
        2 => std::fs::write(path, b""),
        3 => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|f| f.set_len(1 << 30)),
        4 => std::fs::create_dir(path),
        5 => std::fs::create_dir(path).and_then(|()| std::fs::write(path.join("inside"), original)),
        6 => rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, mode, 0).map_err(Into::into),
        7 => match others.get(usize::from(input.byte()) % others.len().max(1)) {
            Some(other) => std::os::unix::fs::symlink(other, path),
            None => Ok(()),
        },
        8 => std::os::unix::fs::symlink("/etc/passwd", path),
        _ => std::os::unix::fs::symlink(path, path),
    };
}

async fn run(data: &[u8], shared: &Shared) {
    static ROOTS: AtomicU64 = AtomicU64::new(0);
    let dir = shared.scratch.join(ROOTS.fetch_add(1, Ordering::Relaxed).to_string());
    let root = dir.join("results");
    let config = config(&root, &shared.secret);
    let clock = Arc::new(ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(START)));
    let made = {
        let service = Service::with_clock(&config, clock.clone()).await.unwrap();
        make_store(&service, &root).await
    };

    // The input replaces files of the store (records, sink files, index entries).
    let mut input = Input(data);
    let all = files(&root);
    let mut touched: Vec<PathBuf> = Vec::new();
    for _ in 0..usize::from(input.byte() % 4) + 1 {
        if all.is_empty() {
            break;
        }
        let path = all[usize::from(input.byte()) % all.len()].clone();
        let kind = usize::from(input.byte()) % KINDS.len();
        replace(&path, kind, &mut input, &all);
        shared.replaced[kind].fetch_add(1, Ordering::Relaxed);
        touched.push(path);
    }
    // A result is untouched if no file of its own was replaced: its records, its query's, its sink's, its
    // index entries.
    let untouched = |result: &Made| {
        let id = &result.allocated.result_id;
        let query = anonymous_results::layout::query(&result.query_id);
        touched.iter().all(|path| {
            let key = path.strip_prefix(&root).unwrap().display().to_string();
            !key.contains(id.as_str()) && key != query
        })
    };

    // A service that has seen nothing: every call on every result, a pruning pass and a sweep.
    let service = Service::with_clock(&config, clock.clone()).await.unwrap();
    let mut grpc = service.grpc();
    let mut answered: BTreeMap<String, (i32, u64)> = BTreeMap::new();
    for result in &made {
        let id = result.allocated.result_id.clone();
        let request = proto::ResolveRequest { result_id: id.clone(), ..Default::default() };
        let (code, answer) = call(&mut grpc, "Resolve", request.encode_to_vec()).await;
        let seen = seen(code, answer);
        if untouched(result) {
            assert_eq!(
                seen,
                (result.state, result.files),
                "{}: served otherwise, though none of its files was replaced",
                result.query_id
            );
        }
        answered.insert(id.clone(), seen);
        call(&mut grpc, "Watch", proto::WatchRequest { result_id: id.clone() }.encode_to_vec()).await;
        let commit = proto::CommitRequest {
            result_id: id.clone(),
            commit_token: result.allocated.commit_token.clone(),
            files: vec![],
        };
        call(&mut grpc, "Commit", commit.encode_to_vec()).await;
        let ttl = Some(prost_types::Duration { seconds: 60, nanos: 0 });
        call(&mut grpc, "Renew", proto::RenewRequest { result_id: id.clone(), ttl }.encode_to_vec()).await;
        let request = proto::AllocateRequest { query_id: result.query_id.clone(), ..Default::default() };
        call(&mut grpc, "Allocate", request.encode_to_vec()).await;
        if input.byte() % 4 == 0 {
            call(&mut grpc, "Release", proto::ReleaseRequest { result_id: id.clone() }.encode_to_vec()).await;
        } else if input.byte() % 4 == 0 {
            let abort = proto::AbortRequest { result_id: id, ..Default::default() };
            call(&mut grpc, "Abort", abort.encode_to_vec()).await;
        }
    }
    clock.advance(Duration::from_secs(u64::from(input.byte()) * 600));
    let pruned = tokio::time::timeout(HANG, service.prune(false)).await.expect("the pruner hung").expect("a pass");
    assert_eq!(pruned.failed, 0, "{pruned:?}");
    clock.advance(Duration::from_secs(24 * 3600));
    let swept = tokio::time::timeout(HANG, service.sweep(false)).await.expect("the sweep hung").expect("a pass");
    assert_eq!(swept.failed, 0, "{swept:?}");
    drop(grpc);
    drop(service);
    for entry in std::fs::read_dir(&dir).unwrap() {
        assert_eq!(entry.unwrap().file_name(), "results", "written outside the root");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let inputs = shared.inputs.fetch_add(1, Ordering::Relaxed) + 1;
    if inputs % 1000 == 0 {
        let counts: Vec<String> = KINDS
            .iter()
            .zip(&shared.replaced)
            .map(|(kind, n)| format!("{kind}: {}", n.load(Ordering::Relaxed)))
            .collect();
        eprintln!("store fuzz: {inputs} inputs; replaced: {}", counts.join(", "));
    }
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    shared.runtime.block_on(run(data, shared));
});
