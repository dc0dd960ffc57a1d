//! Whole requests through the service: each input is a sequence of calls (Allocate, a worker's writes into
//! the sink, Commit, Resolve, Watch, Abort, Release, Renew, the clock moving, a pruning pass, and raw bytes as
//! any request), sent as gRPC over HTTP to the tower service that the server mounts (admission, decoding,
//! validation, the domain core, the status mapping), over a fresh local root on tmpfs with a manual clock.
//!
//! Asserted: no call is answered INTERNAL or UNKNOWN, or panics; every timestamp answered fits a protobuf
//! `Timestamp`; the pruner fails on nothing; nothing is written outside the root.

#![no_main]

#[path = "shared/grpc.rs"]
mod grpc;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use anonymous_results::{Config, Service, clock::ManualClock, proto};
use grpc::call;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The clock's time at the start of every input: 2026-11-30T00:00:00Z.
const START: u64 = 1_795_996_800;
const LATEST_SECONDS: i64 = 253_402_300_799;

struct Shared {
    runtime: tokio::runtime::Runtime,
    /// Where the roots go (tmpfs when there is one).
    scratch: PathBuf,
    secret: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let scratch = base.join(format!("anonymous-results-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let secret = scratch.join("commit-secret");
        std::fs::write(&secret, "fuzz-commit-secret-0123456789abcdef0123456789").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Shared { runtime, scratch, secret }
    })
}

/// Reads the input a byte, a number, a string at a time; zeros once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        first
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| n << 8 | u64::from(self.byte()))
    }

    fn bytes(&mut self, most: usize) -> Vec<u8> {
        let n = usize::from(self.byte()).min(most).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes(64)).into_owned()
    }

    fn duration(&mut self) -> Option<prost_types::Duration> {
        match self.byte() % 4 {
            0 => None,
            1 => Some(prost_types::Duration { seconds: i64::from(self.byte()) * 60, nanos: 0 }),
            2 => Some(prost_types::Duration { seconds: 3_155_760_000 + i64::from(self.byte()) - 128, nanos: 0 }),
            _ => Some(prost_types::Duration { seconds: self.u64() as i64, nanos: self.u64() as i32 }),
        }
    }
}

fn check_code(method: &str, code: i32) {
    // 2 UNKNOWN, 13 INTERNAL: never the caller's doing, never expected here.
    assert!(code != 2 && code != 13, "{method} answered code {code}");
}

fn check_time(name: &str, timestamp: &Option<prost_types::Timestamp>) {
    if let Some(t) = timestamp {
        assert!((0..=LATEST_SECONDS).contains(&t.seconds) && (0..1_000_000_000).contains(&t.nanos), "{name}: {t:?}");
    }
}

fn check_status(status: &Option<proto::ResultStatus>) {
    if let Some(status) = status {
        check_time("created_at", &status.created_at);
        check_time("committed_at", &status.committed_at);
        check_time("expires_at", &status.expires_at);
    }
}

/// A name a worker could give a file: any bytes but `/` and NUL, not `.` or `..`.
fn file_name(input: &mut Input) -> Option<String> {
    let name: String = input.text().chars().filter(|c| *c != '/' && *c != '\0').take(200).collect();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

async fn run(data: &[u8], shared: &Shared) {
    static ROOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = shared.scratch.join(ROOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
    let root = dir.join("results");
    let text = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
         anonymous_results.retention = \"1h\"\nanonymous_results.commit_timeout = \"10m\"\n\
         [anonymous_results_service]\nauth.commit_secret_file = {:?}\nmax_files_per_commit = 20\n",
        root.display().to_string(),
        shared.secret.display().to_string()
    );
    let config = Config::from_toml(&text).unwrap();
    let clock = Arc::new(ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(START)));
    let service = Service::with_clock(&config, clock.clone()).await.unwrap();
    let mut grpc = service.grpc();
    let mut input = Input(data);
    let mut allocated: Vec<proto::AllocateResponse> = Vec::new();
    for _ in 0..24 {
        if input.0.is_empty() {
            break;
        }
        let op = input.byte();
        let pick = |input: &mut Input, allocated: &[proto::AllocateResponse]| match allocated.len() {
            0 => None,
            n => Some(allocated[usize::from(input.byte()) % n].clone()),
        };
        let id = |input: &mut Input, allocated: &[proto::AllocateResponse]| match pick(input, allocated) {
            Some(result) if input.byte() % 8 != 0 => result.result_id,
            _ => input.text(),
        };
        match op % 11 {
            0 => {
                let labels = (0..input.byte() % 3).map(|_| (input.text(), input.text())).collect();
                let query_id = if input.byte() % 2 == 0 { format!("q{}", input.byte() % 4) } else { input.text() };
                let request = proto::AllocateRequest {
                    query_id,
                    file_type: i32::from(input.byte() % 6),
                    ttl: input.duration(),
                    labels,
                };
                let (code, answer) = call(&mut grpc, "Allocate", request.encode_to_vec()).await;
                check_code("Allocate", code);
                if let Some(answer) = answer {
                    let answer = proto::AllocateResponse::decode(answer).unwrap();
                    check_time("commit_deadline", &answer.commit_deadline);
                    check_status(&answer.status);
                    let sink = answer.sink.as_ref().unwrap().uri.clone();
                    assert!(Path::new(&sink).starts_with(&root), "a sink outside the root: {sink}");
                    allocated.push(answer);
                }
            }
            1 => {
                // A worker writes a file (maybe in a folder, maybe a symbolic link) into a sink.
                let Some(result) = pick(&mut input, &allocated) else { continue };
                let sink = PathBuf::from(&result.sink.unwrap().uri);
                let Some(name) = file_name(&mut input) else { continue };
                let path = match file_name(&mut input).filter(|_| input.byte() % 3 == 0) {
                    Some(folder) => sink.join(folder).join(name),
                    None => sink.join(name),
                };
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = match input.byte() % 8 {
                    0 => std::os::unix::fs::symlink("/etc/passwd", &path),
                    _ => std::fs::write(&path, input.bytes(32)),
                };
            }
            2 => {
                let Some(result) = pick(&mut input, &allocated) else { continue };
                let files = (0..input.byte() % 4)
                    .map(|_| proto::ResultFile {
                        path: input.text(),
                        size_bytes: (input.byte() % 2 == 0).then(|| u64::from(input.byte())),
                        row_count: (input.byte() % 2 == 0).then(|| input.u64()),
                    })
                    .collect();
                let token = if input.byte() % 8 == 0 { input.text() } else { result.commit_token.clone() };
                let request = proto::CommitRequest { result_id: result.result_id.clone(), commit_token: token, files };
                let (code, answer) = call(&mut grpc, "Commit", request.encode_to_vec()).await;
                check_code("Commit", code);
                if let Some(answer) = answer {
                    check_status(&proto::CommitResponse::decode(answer).unwrap().status);
                }
            }
            3 => {
                let request = proto::ResolveRequest {
                    result_id: id(&mut input, &allocated),
                    url_ttl: input.duration(),
                    page_size: u32::from(input.byte()) % 3,
                    page_token: if input.byte() % 4 == 0 { input.text() } else { String::new() },
                    ..Default::default()
                };
                let (code, answer) = call(&mut grpc, "Resolve", request.encode_to_vec()).await;
                check_code("Resolve", code);
                if let Some(answer) = answer {
                    let answer = proto::ResolveResponse::decode(answer).unwrap();
                    check_status(&answer.status);
                    for location in &answer.locations {
                        check_time("location.expires_at", &location.expires_at);
                        assert!(
                            Path::new(&location.url).starts_with(&root),
                            "a location outside the root: {}",
                            location.url
                        );
                    }
                }
            }
            4 => {
                let result_id = id(&mut input, &allocated);
                let token = match (input.byte() % 3, allocated.iter().find(|a| a.result_id == result_id)) {
                    (0, Some(result)) => result.commit_token.clone(),
                    (1, _) => input.text(),
                    _ => String::new(),
                };
                let request = proto::AbortRequest {
                    result_id,
                    commit_token: token,
                    reason: input.text().repeat(usize::from(input.byte())),
                };
                let (code, answer) = call(&mut grpc, "Abort", request.encode_to_vec()).await;
                check_code("Abort", code);
                if let Some(answer) = answer {
                    let status = proto::AbortResponse::decode(answer).unwrap().status;
                    assert!(status.as_ref().is_none_or(|s| s.abort_reason.len() <= 1024));
                    check_status(&status);
                }
            }
            5 => {
                let request = proto::ReleaseRequest { result_id: id(&mut input, &allocated) };
                let (code, _) = call(&mut grpc, "Release", request.encode_to_vec()).await;
                check_code("Release", code);
            }
            6 => {
                let request = proto::RenewRequest { result_id: id(&mut input, &allocated), ttl: input.duration() };
                let (code, answer) = call(&mut grpc, "Renew", request.encode_to_vec()).await;
                check_code("Renew", code);
                if let Some(answer) = answer {
                    check_status(&proto::RenewResponse::decode(answer).unwrap().status);
                }
            }
            7 => {
                let request = proto::WatchRequest { result_id: id(&mut input, &allocated) };
                let (code, answer) = call(&mut grpc, "Watch", request.encode_to_vec()).await;
                check_code("Watch", code);
                if let Some(answer) = answer {
                    check_status(&Some(proto::ResultStatus::decode(answer).unwrap()));
                }
            }
            8 => {
                let seconds = match input.byte() % 3 {
                    0 => u64::from(input.byte()) * 60,
                    1 => u64::from(input.byte()) * 3_600 * 24,
                    _ => input.u64() % (10_000 * 31_557_600),
                };
                clock.advance(Duration::from_secs(seconds));
            }
            9 => {
                let report = service.prune(input.byte() % 4 == 0).await.expect("a pruning pass");
                assert_eq!(report.failed, 0, "{report:?}");
            }
            _ => {
                // Raw bytes as any request.
                let method = ["Allocate", "Commit", "Resolve", "Abort", "Release", "Renew", "Watch"]
                    [usize::from(input.byte()) % 7];
                let (code, _) = call(&mut grpc, method, input.bytes(255)).await;
                check_code(method, code);
            }
        }
    }
    drop(grpc);
    drop(service);
    // Nothing outside the root.
    for entry in std::fs::read_dir(&dir).unwrap() {
        assert_eq!(entry.unwrap().file_name(), "results", "written outside the root");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    shared.runtime.block_on(run(data, shared));
});
