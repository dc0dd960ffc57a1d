//! The hostile-load suite: the service binary as its own process, with tokens configured, attacked the ways
//! that once exhausted it, while a health check on a fresh connection runs every quarter second. Prints the
//! figures (resident memory, health latency, when silent sockets were closed) and judges each bound of
//! SECURITY.md; exits non-zero if one fails.
//!
//! 1. two unauthenticated Commits of 63 MiB of empty file entries at once (`0x1a 0x00` repeated);
//! 2. two maximal Commits from an authenticated worker at once (as many files as `max_files_per_commit`
//!    allows, paths filling the Commit message limit), then two of 63 MiB of empty entries;
//! 3. 100,000 header-only streams opened on one connection;
//! 4. 15,000 sockets that connect and never speak;
//! 5. `max_connections` (256) calls whose bodies never end, their attacker opening a new one after each reset;
//! 6. 512 GETs of a download link whose file was replaced by a FIFO (`stored.rs`);
//! 7. records larger than any release writes: a 1 GiB sparse allocation, an outcome at its bound (`stored.rs`).
//!
//! `cargo bench --bench hostile` is the full run (about nine minutes, on the release binary; `-- --only NAME`
//! runs one attack: floods, commits, streams, silent, slow, fifo, records); `cargo test --bench hostile` (run
//! by the test command) or `-- --smoke` the smoke size, judged by the same bounds.

#[path = "../shared/args.rs"]
mod bench_args;
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/rss.rs"]
mod rss;
mod stored;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anonymous_results::{model::MAX_OUTCOME_BYTES, proto};
use bench_args::BenchArgs;
use common::{
    auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as, token_files},
    process::Process,
    wire,
};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tonic::Code;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How large each attack is.
struct Sizes {
    /// The bytes of each empty-entry Commit.
    flood_bytes: usize,
    /// `max_files_per_commit` of the service under attack (the maximal Commit lists this many files).
    max_files: usize,
    streams: usize,
    silent: usize,
    handshake_timeout: Duration,
    /// GETs of a download link whose file was replaced by a FIFO.
    fifo_gets: usize,
    /// `max_connections` of the service under the slow-body attack, each taken by a call whose body never ends.
    slow_connections: usize,
    /// `request_timeout` of that service, and how long the attack lasts.
    request_timeout: Duration,
    slow_attack: Duration,
    /// The bytes of the outcome record resolved (at most its bound, [`MAX_OUTCOME_BYTES`]).
    outcome_bytes: u64,
}

const FULL: Sizes = Sizes {
    flood_bytes: 63 << 20,
    max_files: 100_000,
    streams: 100_000,
    silent: 15_000,
    handshake_timeout: Duration::from_secs(10),
    fifo_gets: 512,
    slow_connections: 256,
    request_timeout: Duration::from_secs(5),
    slow_attack: Duration::from_secs(20),
    outcome_bytes: MAX_OUTCOME_BYTES,
};

const SMOKE: Sizes = Sizes {
    flood_bytes: 4 << 20,
    max_files: 2_000,
    streams: 3_000,
    silent: 300,
    handshake_timeout: Duration::from_secs(2),
    fifo_gets: 512,
    slow_connections: 64,
    request_timeout: Duration::from_secs(2),
    slow_attack: Duration::from_secs(5),
    outcome_bytes: 64 << 20,
};

/// A bound judged, with the figure it was judged on.
struct Verdict {
    bound: String,
    pass: bool,
    figure: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(args) = BenchArgs::parse()? else { return Ok(()) };
    let sizes = if args.smoke { &SMOKE } else { &FULL };
    println!("hostile: {} run, {} cores", if args.smoke { "smoke" } else { "full" }, cores());
    let mut verdicts = Vec::new();
    // `--only NAME` runs one attack: floods, commits, streams, silent, slow, fifo or records.
    let only = args.after("--only", 1).flatten().map(str::to_owned);
    let runs = |name: &str| only.as_deref().is_none_or(|only| only == name);
    if runs("floods") {
        unauthenticated_floods(sizes, &mut verdicts).await?;
    }
    if runs("commits") {
        authenticated_commits(sizes, &mut verdicts).await?;
    }
    if runs("streams") {
        stream_flood(sizes, &mut verdicts).await?;
    }
    if runs("silent") {
        silent_sockets(sizes, &mut verdicts).await?;
    }
    if runs("slow") {
        slow_bodies(sizes, &mut verdicts).await?;
    }
    if runs("fifo") {
        stored::fifo_downloads(sizes, &mut verdicts).await?;
    }
    if runs("records") {
        stored::oversized_records(sizes, &mut verdicts).await?;
    }
    println!();
    for verdict in &verdicts {
        println!("{} {}: {}", if verdict.pass { "PASS" } else { "FAIL" }, verdict.bound, verdict.figure);
    }
    if verdicts.iter().any(|verdict| !verdict.pass) {
        std::process::exit(1);
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The service under attack, with what watches it: its memory, sampled every 10 ms, and a health check on
/// a fresh connection every 250 ms.
struct Target {
    process: Process,
    dir: tempfile::TempDir,
    /// How long a health check may take, retrying a connection refused at the cap meanwhile.
    probe_bound: Duration,
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    baseline_kib: u64,
    probes: tokio::task::JoinHandle<Vec<Result<Duration, String>>>,
}

impl Target {
    async fn start(sizes: &Sizes) -> Result<Self, Error> {
        Self::start_with(sizes, "", Duration::from_secs(2)).await
    }

    /// The service with `extra` in its configuration (lines of `anonymous_results.` keys go in `[scheduler]`,
    /// the others in `[anonymous_results_service]`), whose health checks must each answer within `probe_bound`.
    async fn start_with(sizes: &Sizes, extra: &str, probe_bound: Duration) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("results");
        let (location, service): (Vec<&str>, Vec<&str>) =
            extra.lines().partition(|line| line.starts_with("anonymous_results."));
        let (location, service) = (location.join("\n"), service.join("\n"));
        let section = format!(
            "{}max_files_per_commit = {}\nhandshake_timeout = \"{}s\"\n{service}\n",
            token_files(dir.path()),
            sizes.max_files,
            sizes.handshake_timeout.as_secs()
        );
        let text = format!(
            "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n{location}\n\
             [anonymous_results_service]\n{section}",
            root.display().to_string()
        );
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text)?;
        let config = file.to_str().ok_or("a non-UTF-8 temporary path")?.to_owned();
        let process = Process::start(dir.path(), &["--config", &config], &[("RUST_LOG", "info")]);
        // A first call of each kind, so that the baseline holds what serving itself takes.
        health(process.addr, probe_bound).await?;
        let baseline_kib = rss::rss_kib(process.child.id())?;
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
        tokio::spawn({
            let (stop, peak, pid) = (stop.clone(), peak_kib.clone(), process.child.id());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(kib) = rss::rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        let probes = tokio::spawn({
            let (stop, addr) = (stop.clone(), process.addr);
            async move {
                let mut probes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    probes.push(health(addr, probe_bound).await);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                probes
            }
        });
        Ok(Self { process, dir, probe_bound, stop, peak_kib, baseline_kib, probes })
    }

    /// The resident memory now, in MiB, which the peak starts again from.
    fn reset_peak(&self) -> u64 {
        let now = rss::rss_kib(self.process.child.id()).unwrap_or(0);
        self.peak_kib.store(now, Ordering::Relaxed);
        now / 1024
    }

    /// The peak resident memory since the last [`Target::reset_peak`], in MiB, a sample later.
    async fn peak_mib(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.peak_kib.load(Ordering::Relaxed) / 1024
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    async fn channel(&self) -> Result<tonic::transport::Channel, Error> {
        Ok(tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr()))?.connect().await?)
    }

    /// Stops watching; judges the health checks; answers the baseline and peak memory, in MiB.
    async fn finish(mut self, name: &str, verdicts: &mut Vec<Verdict>) -> Result<(u64, u64), Error> {
        self.stop.store(true, Ordering::Relaxed);
        let probes = (&mut self.probes).await?;
        let answered: Vec<Duration> = probes.iter().filter_map(|probe| probe.as_ref().ok().copied()).collect();
        let failed: Vec<&String> = probes.iter().filter_map(|probe| probe.as_ref().err()).collect();
        let slowest = answered.iter().max().copied().unwrap_or_default();
        let figure = format!(
            "{} checks, slowest {:.0} ms, {} failed{}",
            probes.len(),
            slowest.as_secs_f64() * 1e3,
            failed.len(),
            failed.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("  health during {name}: {figure}");
        verdicts.push(Verdict {
            bound: format!(
                "{name}: health answers within {:.0} s, each check on a fresh connection",
                self.probe_bound.as_secs_f64()
            ),
            pass: failed.is_empty() && slowest < self.probe_bound && !probes.is_empty(),
            figure,
        });
        let (baseline, peak) = (self.baseline_kib / 1024, self.peak_kib.load(Ordering::Relaxed) / 1024);
        self.process.signal("-TERM");
        self.process.wait().await;
        Ok((baseline, peak))
    }
}

/// One health check on a fresh connection, within `bound` (a connection closed at once, at the cap, is tried
/// again meanwhile, as a client does): its time to answer.
async fn health(addr: SocketAddr, bound: Duration) -> Result<Duration, String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let started = Instant::now();
    let check = || async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.map_err(|e| e.to_string())
    };
    let retried = async {
        loop {
            match check().await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    match tokio::time::timeout(bound, retried).await {
        Ok(()) => Ok(started.elapsed()),
        Err(_) => Err(format!("no answer within {:.0} s", bound.as_secs_f64())),
    }
}

/// A Commit message of `bytes` bytes of empty file entries.
fn empty_entries(bytes: usize) -> Vec<u8> {
    [0x1a, 0x00].repeat(bytes / 2)
}

fn judge_growth(verdicts: &mut Vec<Verdict>, name: &str, (baseline, peak): (u64, u64), bound_mib: u64) {
    let growth = peak.saturating_sub(baseline);
    let figure = format!("RSS {baseline} MiB before, {peak} MiB at the peak: +{growth} MiB");
    println!("  {name}: {figure}");
    verdicts.push(Verdict {
        bound: format!("{name}: RSS grows by less than {bound_mib} MiB"),
        pass: growth < bound_mib,
        figure,
    });
}

/// Attack 1: two unauthenticated Commits of empty entries at once: refused before a byte of them is read.
async fn unauthenticated_floods(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    println!("1. two unauthenticated Commits of {} MiB of empty entries:", sizes.flood_bytes >> 20);
    let target = Target::start(sizes).await?;
    let started = Instant::now();
    let (a, b) = tokio::join!(
        wire::call_raw(target.channel().await?, "Commit", empty_entries(sizes.flood_bytes), None),
        wire::call_raw(target.channel().await?, "Commit", empty_entries(sizes.flood_bytes), None),
    );
    let codes = [a.err().map(|s| s.code()), b.err().map(|s| s.code())];
    println!("  answered {codes:?} in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let refused = codes.iter().all(|code| *code == Some(Code::Unauthenticated));
    verdicts.push(Verdict {
        bound: "unauthenticated Commits are UNAUTHENTICATED".into(),
        pass: refused,
        figure: format!("{codes:?}"),
    });
    let memory = target.finish("unauthenticated Commits", verdicts).await?;
    judge_growth(verdicts, "two unauthenticated floods", memory, 256);
    Ok(())
}

/// Attack 2: two maximal Commits from an authenticated worker at once, then two floods of empty entries.
async fn authenticated_commits(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    let target = Target::start(sizes).await?;
    let scheduler = client_as(target.channel().await?, Some(SCHEDULER_TOKEN));
    let mut commits = Vec::new();
    for query in ["maximal-a", "maximal-b"] {
        let request = proto::AllocateRequest { query_id: query.into(), ..Default::default() };
        let allocated = scheduler.allocate(request).await?;
        commits.push(maximal_commit(&allocated, sizes.max_files));
    }
    println!("2. two maximal Commits from a worker ({} files, {} MiB each):", sizes.max_files, commits[0].len() >> 20);
    let started = Instant::now();
    let [a, b] = [commits.pop(), commits.pop()].map(Option::unwrap_or_default);
    let (a, b) = tokio::join!(
        wire::call_raw(target.channel().await?, "Commit", a, Some(WORKER_TOKEN)),
        wire::call_raw(target.channel().await?, "Commit", b, Some(WORKER_TOKEN)),
    );
    let codes = [&a, &b].map(|answer| answer.as_ref().err().map(|s| s.code()));
    println!(
        "  answered {codes:?} in {:.0} ms (their files were never written)",
        started.elapsed().as_secs_f64() * 1e3
    );
    if let Some(Err(status)) =
        [a, b].into_iter().find(|answer| !matches!(answer, Err(s) if s.code() == Code::FailedPrecondition))
    {
        println!("  unexpected: {}", status.message().chars().take(300).collect::<String>());
    }
    verdicts.push(Verdict {
        bound: "maximal Commits are decoded and checked (FAILED_PRECONDITION: no such files)".into(),
        pass: codes.iter().all(|code| *code == Some(Code::FailedPrecondition)),
        figure: format!("{codes:?}"),
    });
    let (a, b) = tokio::join!(
        wire::call_raw(target.channel().await?, "Commit", empty_entries(sizes.flood_bytes), Some(WORKER_TOKEN)),
        wire::call_raw(target.channel().await?, "Commit", empty_entries(sizes.flood_bytes), Some(WORKER_TOKEN)),
    );
    let codes = [a.err().map(|s| s.code()), b.err().map(|s| s.code())];
    println!("  then two floods of {} MiB of empty entries: {codes:?}", sizes.flood_bytes >> 20);
    verdicts.push(Verdict {
        bound: "a worker's flood of empty entries is refused (too many files, or too large)".into(),
        pass: codes.iter().all(|code| matches!(code, Some(Code::InvalidArgument | Code::OutOfRange))),
        figure: format!("{codes:?}"),
    });
    let memory = target.finish("authenticated Commits", verdicts).await?;
    judge_growth(verdicts, "two maximal Commits from a worker", memory, 512);
    Ok(())
}

/// A Commit of `files` files whose paths fill the Commit message limit of a service with that
/// `max_files_per_commit` (at most 64 MiB): three folders deep, each name under 255 bytes.
fn maximal_commit(allocated: &proto::AllocateResponse, files: usize) -> Vec<u8> {
    let limit = anonymous_results::grpc::admission::commit_message_bytes(&anonymous_results::config::Limits {
        max_files_per_commit: files,
        ..Default::default()
    });
    // Each entry: the path, its tag and length (3 bytes), the entry's tag and length (4 bytes), a size (6).
    let path_bytes = ((limit - 1024) / files).saturating_sub(16).min(1000);
    let name = |c: char, n: usize| c.to_string().repeat(n.min(240));
    let third = path_bytes / 3;
    let request = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: (0..files)
            .map(|i| {
                let tail = format!("{}-{i:07}", name('c', third.saturating_sub(10)));
                proto::ResultFile {
                    path: format!("{}/{}/{tail}", name('a', third), name('b', third)),
                    size_bytes: Some(1 << 30),
                    row_count: None,
                }
            })
            .collect(),
    };
    request.encode_to_vec()
}

/// Attack 3: header-only streams opened on one connection, never finished: the server admits
/// `max_concurrent_streams` of them and refuses the rest.
async fn stream_flood(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    println!("3. {} header-only streams on one connection:", sizes.streams);
    let target = Target::start(sizes).await?;
    let mut stream = wire::h2_connect(target.addr()).await;
    wire::server_settings(&mut stream).await;
    let (mut reader, mut writer) = stream.into_split();
    let frames_read = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        bytes
    });
    writer.write_all(&wire::frame(wire::SETTINGS, wire::ACK, 0, &[])).await?;
    let block = wire::request_headers("/grpc.health.v1.Health/Check", &target.addr().to_string());
    let started = Instant::now();
    let mut sent = 0;
    for chunk in (0..sizes.streams).collect::<Vec<_>>().chunks(1000) {
        let mut frames = Vec::with_capacity(chunk.len() * (block.len() + 9));
        for i in chunk {
            frames.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, 2 * *i as u32 + 1, &block));
        }
        if writer.write_all(&frames).await.is_err() {
            break; // the server closed the connection: it would take no more
        }
        sent += chunk.len();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("  sent {sent} streams in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    drop(writer);
    let read = tokio::time::timeout(Duration::from_secs(5), frames_read).await.ok().and_then(Result::ok).unwrap_or(0);
    println!("  the server answered {read} bytes (refusals, resets)");
    let (baseline, peak) = target.finish("the stream flood", verdicts).await?;
    let figure = format!("RSS {baseline} MiB before, {peak} MiB at the peak");
    println!("  {figure}");
    verdicts.push(Verdict {
        bound: format!("{} streams on one connection: RSS under 512 MiB", sizes.streams),
        pass: peak < 512,
        figure,
    });
    Ok(())
}

/// Attack 4: sockets that connect and never speak, each closed within the handshake timeout (the oldest sooner, at
/// the connection cap) while callers are still served.
async fn silent_sockets(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    println!("4. {} silent sockets (handshake_timeout {:?}):", sizes.silent, sizes.handshake_timeout);
    let target = Target::start(sizes).await?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(sizes.silent);
    for _ in 0..sizes.silent {
        match tokio::net::TcpStream::connect(target.addr()).await {
            Ok(socket) => sockets.push((Instant::now(), socket)),
            Err(e) => {
                println!("  connecting stopped at {} sockets: {e}", sockets.len());
                break;
            }
        }
    }
    println!("  {} connected in {:.0} ms", sockets.len(), started.elapsed().as_secs_f64() * 1e3);
    let within = sizes.handshake_timeout + Duration::from_secs(2);
    let waits = sockets.into_iter().map(|(opened, mut socket)| async move {
        wire::closed_within(&mut socket, within).await.map(|_| opened.elapsed())
    });
    let closed: Vec<Option<Duration>> = futures::future::join_all(waits).await;
    let open = closed.iter().filter(|c| c.is_none()).count();
    let latest = closed.iter().flatten().max().copied().unwrap_or_default();
    let figure = format!(
        "{} closed, the last {:.1} s after it connected, {open} still open",
        closed.len() - open,
        latest.as_secs_f64()
    );
    println!("  {figure}");
    verdicts.push(Verdict {
        bound: format!("silent sockets are closed within the handshake timeout ({:?})", sizes.handshake_timeout),
        pass: open == 0 && latest <= within,
        figure,
    });
    target.finish("the silent sockets", verdicts).await?;
    Ok(())
}

/// Attack 5: every connection the service holds taken by a call whose body never ends, a new one opened after
/// each reset; no such connection lives past `request_timeout` + 2 s, and a fresh client's health check answers
/// within that all along.
async fn slow_bodies(sizes: &Sizes, verdicts: &mut Vec<Verdict>) -> Result<(), Error> {
    let timeout = sizes.request_timeout;
    println!(
        "5. {} calls whose bodies never end (max_connections {0}, request_timeout {:?}), for {:?}:",
        sizes.slow_connections, timeout, sizes.slow_attack
    );
    let extra = format!("max_connections = {}\nrequest_timeout = \"{}s\"\n", sizes.slow_connections, timeout.as_secs());
    let bound = timeout + Duration::from_secs(2);
    let target = Target::start_with(sizes, &extra, bound).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..sizes.slow_connections)
        .map(|_| {
            let attacker = Arc::new(SlowCaller::default());
            tokio::spawn(attacker.clone().run(target.addr(), stop.clone()));
            attacker
        })
        .collect();
    tokio::time::sleep(sizes.slow_attack).await;
    stop.store(true, Ordering::Relaxed);
    let resets: u64 = attackers.iter().map(|a| a.resets.load(Ordering::Relaxed)).sum();
    let longest = attackers.iter().map(|a| a.longest()).max().unwrap_or_default();
    println!("  {resets} slow connections closed by the service; the longest lived {:.1} s", longest.as_secs_f64());
    verdicts.push(Verdict {
        bound: format!("no slow-body connection lives past request_timeout + 2 s ({:.0} s)", bound.as_secs_f64()),
        pass: longest <= bound && resets >= sizes.slow_connections as u64 / 2,
        figure: format!("{resets} closed, the longest after {:.1} s", longest.as_secs_f64()),
    });
    target.finish("the slow bodies", verdicts).await?;
    Ok(())
}

/// A caller that, until told to stop, opens a connection, starts an authorized Allocate with one byte of its
/// body, sends no more, and opens another once the service has closed it.
#[derive(Default)]
struct SlowCaller {
    resets: AtomicU64,
    /// The longest a closed connection lived, in milliseconds.
    longest_ms: AtomicU64,
    /// When its open connection was opened, in milliseconds after `EPOCH` (0: none open).
    open_since_ms: AtomicU64,
}

/// What [`SlowCaller`] times its connections from.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn since_epoch_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl SlowCaller {
    /// The longest any of its connections lived, the one open now included.
    fn longest(&self) -> Duration {
        let open = match self.open_since_ms.load(Ordering::Relaxed) {
            0 => 0,
            since => since_epoch_ms().saturating_sub(since),
        };
        Duration::from_millis(self.longest_ms.load(Ordering::Relaxed).max(open))
    }

    async fn run(self: Arc<Self>, addr: SocketAddr, stop: Arc<AtomicBool>) {
        let authority = addr.to_string();
        let bearer = format!("Bearer {SCHEDULER_TOKEN}");
        let block = wire::request_headers_with(
            "/anonymous_results.v1.AnonymousResults/Allocate",
            &authority,
            &[("authorization", bearer.as_str())],
        );
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let opened = since_epoch_ms().max(1);
            self.open_since_ms.store(opened, Ordering::Relaxed);
            let mut frames = wire::PREFACE.to_vec();
            frames.extend(wire::frame(wire::SETTINGS, 0, 0, &[]));
            frames.extend(wire::frame(wire::SETTINGS, wire::ACK, 0, &[]));
            frames.extend(wire::frame(wire::HEADERS, wire::END_HEADERS, 1, &block));
            frames.extend(wire::frame(wire::DATA, 0, 1, &[0]));
            if stream.write_all(&frames).await.is_ok() {
                let stopped = async {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::select! {
                    closed = wire::closed_within(&mut stream, Duration::from_secs(3600)) => {
                        if closed.is_some() {
                            self.resets.fetch_add(1, Ordering::Relaxed);
                            self.longest_ms.fetch_max(since_epoch_ms() - opened, Ordering::Relaxed);
                        }
                    }
                    () = stopped => return,
                }
            }
            self.open_since_ms.store(0, Ordering::Relaxed);
        }
    }
}
