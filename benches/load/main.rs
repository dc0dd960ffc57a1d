//! The load generator: starts the service (the binary, as its own process) and drives it over loopback with N
//! concurrent callers (N = 1, 16, 128) over a few HTTP/2 connections, measuring in the same run the baseline
//! of a call that does nothing (grpc.health.v1 Check). Prints throughput and p50/p99/p999 latency of each call
//! on the local backend (authentication off and on) and on an S3 test server (s3s-fs), Resolve of a large
//! result on Azurite and on the GCS test server, then each target of BENCHMARKS.md as PASS or FAIL.
//!
//! `cargo bench --bench load` is the full run (about half an hour; exits non-zero on a FAIL);
//! `cargo test --bench load` (run by the test command) or `cargo bench --bench load -- --smoke` the smoke size,
//! about a second a case, whose targets are printed but not judged. `--dir PATH` puts the local stores under
//! PATH (default: the system's temporary folder); `--only calls,bound,large,watch,s3,azure,gcs,latency,memory,scale,h2load`
//! runs those parts (`bound`: Allocate against the disk's own bound for its work, bound.rs; `latency`: each call behind a store `--delay MS` away, 25 by default; latency.rs); `--only soak` the ten-minute soak run and the pruner's rate (soak.rs; not part of the full run,
//! the smoke run has a 20 s one); `--only pruner` the pruner's rate alone, on the local backend and on moto
//! (not part of the full run; the smoke run has a small one on moto).
//! `--profile allocate|resolve|baseline[-s3] [SECONDS]` drives one call alone at N = 128 (20 s by default), after
//! printing the service's process id, for a profiler to attach to (`perf record -g -p PID`).

#[path = "../shared/args.rs"]
mod bench_args;
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../shared/rss.rs"]
mod rss;

mod bound;
mod cases;
mod drive;
mod h2load;
mod latency;
mod presign;
mod service;
mod soak;
mod traces;

use std::{sync::Arc, time::Duration};

use bench_args::BenchArgs;
use common::TestStore;
use drive::{Budget, Stats};
use service::Running;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The concurrencies every call is measured at.
const CONCURRENCY: [usize; 3] = [1, 16, 128];

/// How much each measurement does.
struct Sizes {
    /// How long each (call, concurrency) is driven.
    duration: Duration,
    /// Commits measured at each concurrency (each uses up one prepared result), on the local backend and on
    /// S3 (where the test server lists a bucket in time that grows with the objects in it).
    commits: (usize, usize),
    /// Results resolved in turn by the Resolve measurement.
    resolve_pool: usize,
    /// Files of the large result (Resolve and Commit of it).
    large_files: usize,
    /// Large commits measured.
    large_commits: usize,
    watchers: usize,
    /// Allocate + Commit + Resolve cycles of the memory measurement.
    cycles: u64,
    /// Results stored at the two points of the scale measurement.
    scale: (usize, usize),
}

const FULL: Sizes = Sizes {
    duration: Duration::from_secs(3),
    commits: (3_000, 500),
    resolve_pool: 64,
    large_files: 10_000,
    large_commits: 5,
    watchers: 1_000,
    cycles: 1_000_000,
    scale: (1_000, 100_000),
};

const SMOKE: Sizes = Sizes {
    duration: Duration::from_millis(200),
    commits: (100, 50),
    resolve_pool: 8,
    large_files: 300,
    large_commits: 2,
    watchers: 50,
    cycles: 1_000,
    scale: (100, 300),
};

/// One measured line of the table.
struct Row {
    backend: &'static str,
    auth: bool,
    call: String,
    concurrency: usize,
    stats: Stats,
    /// Throughput over the baseline's at the same concurrency, same service.
    ratio: Option<f64>,
}

/// The results of the run, and the targets judged against them.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    verdicts: Vec<(String, bool, String)>,
    notes: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        backend: &'static str,
        auth: bool,
        call: &str,
        concurrency: usize,
        stats: Stats,
        base: Option<&Stats>,
    ) {
        let ratio = base.map(|base| stats.per_second / base.per_second.max(1e-9));
        println!(
            "  {backend:5} auth={:<5} {call:28} N={concurrency:<3} {:>9.0}/s p50 {:>8} p99 {:>8} p999 {:>8}{}",
            auth,
            stats.per_second,
            ms(stats.p50),
            ms(stats.p99),
            ms(stats.p999),
            ratio.map(|r| format!("  x{r:.2} of baseline")).unwrap_or_default()
        );
        self.rows.push(Row { backend, auth, call: call.to_owned(), concurrency, stats, ratio });
    }

    fn verdict(&mut self, target: String, pass: bool, figures: String) {
        self.verdicts.push((target, pass, figures));
    }

    fn find(&self, backend: &str, auth: bool, call: &str, concurrency: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.backend == backend && r.auth == auth && r.call == call && r.concurrency == concurrency)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(args) = BenchArgs::parse()? else { return Ok(()) };
    let (smoke, dir) = (args.smoke, args.dir.clone());
    let sizes = if smoke { &SMOKE } else { &FULL };
    let only: Option<Vec<&str>> =
        args.after("--only", 1).map(|list| list.map(|list| list.split(',').collect()).unwrap_or_default());
    let part = |name: &str| only.as_ref().is_none_or(|only| only.contains(&name));
    println!(
        "load: {} run, {} cores, local stores under {}",
        if smoke { "smoke" } else { "full" },
        std::thread::available_parallelism().map_or(1, usize::from),
        dir.display()
    );
    let mut report = Report::default();
    let local = || -> Result<TestStore, Error> { Ok(TestStore::Local { dir: tempfile::tempdir_in(&dir)? }) };
    if let Some(call) = args.after("--profile", 1) {
        let call = call.ok_or("--profile needs a call")?;
        let seconds = args.after("--profile", 2).flatten().and_then(|s| s.parse().ok()).unwrap_or(20);
        let store = match call.ends_with("-s3") {
            true => TestStore::s3s_fs().await.ok_or("s3s-fs is not installed")?,
            false => local()?,
        };
        return profile(&store, call.trim_end_matches("-s3"), Duration::from_secs(seconds)).await;
    }
    let local_store = || async { local() };
    if part("calls") {
        for auth in [false, true] {
            calls(&mut report, "local", local_store, auth, sizes).await?;
        }
    }
    if part("bound") {
        bound::bound(&mut report, &local()?, sizes.duration).await?;
    }
    if part("large") {
        large(&mut report, "local", &local()?, sizes).await?;
    }
    if part("watch") {
        watch(&mut report, "local", &local()?, sizes).await?;
    }
    if part("s3") {
        match TestStore::s3s_fs().await {
            Some(store) => {
                let s3_store = || async { TestStore::s3s_fs().await.ok_or_else(|| Error::from("s3s-fs vanished")) };
                calls(&mut report, "s3", s3_store, true, sizes).await?;
                let presigned = large(&mut report, "s3", &store, sizes).await?;
                presign_vs_boto3(&mut report, &store, presigned, sizes).await?;
                watch(&mut report, "s3", &store, sizes).await?;
            }
            None => report.notes.push("s3s-fs is not installed: the S3 measurements were skipped".into()),
        }
    }
    for cloud in ["azure", "gcs"].into_iter().filter(|cloud| part(cloud)) {
        let made = match cloud {
            "azure" => TestStore::azurite().await,
            _ => TestStore::gcs().await,
        };
        match made {
            Some(store) => _ = large(&mut report, cloud, &store, sizes).await?,
            None => report.notes.push(format!("the {cloud} test server is not installed: it was skipped")),
        }
    }
    if part("latency") {
        let delay = match args.after("--delay", 1) {
            Some(ms) => Duration::from_millis(ms.ok_or("--delay needs MS")?.parse()?),
            None => latency::DEFAULT_DELAY,
        };
        let latency_sizes = if smoke { &latency::SMOKE } else { &latency::FULL };
        // moto is the reference (its figures are judged); the others are measured beside it. The smoke run
        // takes moto only.
        match TestStore::moto().await {
            Some(store) => {
                let setup = latency::Setup { judged: true, ..Default::default() };
                latency::latency(&mut report, "moto", store, delay, latency_sizes, setup).await?
            }
            None => report.notes.push("moto is not running: the latency measurements were skipped".into()),
        }
        if !smoke {
            // moto with versioning on: Commit pins each file's version by a HEAD (one round more).
            let versioned = match TestStore::moto().await {
                Some(store) => {
                    if let TestStore::S3 { server, bucket, .. } = &store {
                        server.keep_versions(bucket).await;
                    }
                    Some(store)
                }
                None => None,
            };
            // Which stores' listings pin no file, so that Commit takes a HEAD of each.
            for (name, store, heads) in [
                ("moto, versioned", versioned, true),
                ("s3s-fs", TestStore::s3s_fs().await, true),
                ("azurite", TestStore::azurite().await, false),
                ("gcs", TestStore::gcs().await, false),
            ] {
                match store {
                    Some(store) => {
                        let setup = latency::Setup { commit_heads: heads, ..Default::default() };
                        latency::latency(&mut report, name, store, delay, latency_sizes, setup).await?
                    }
                    None => report.notes.push(format!("{name} is not installed: its latencies were skipped")),
                }
            }
            // moto with IAM enforced and workers' credentials scoped to each sink: Allocate asks STS first.
            match common::iam::scoped_store().await {
                Some((store, service, _iam)) => {
                    let setup = latency::Setup { service, scoped: true, ..Default::default() };
                    latency::latency(&mut report, "moto, scoped", store, delay, latency_sizes, setup).await?
                }
                None => report.notes.push("moto is not installed: the scoped latencies were skipped".into()),
            }
        }
    }
    if part("memory") {
        memory(&mut report, Arc::new(local()?), sizes).await?;
    }
    if part("scale") {
        scale(&mut report, Arc::new(local()?), sizes).await?;
    }
    if part("h2load") {
        println!("h2load, local:");
        match h2load::installed() {
            true => {
                let seconds = if smoke { 1 } else { 5 };
                for auth in [false, true] {
                    h2load::h2load(&mut report, &local()?, auth, seconds).await?;
                }
            }
            false => report.notes.push("h2load is not installed (nghttp2-client): it was skipped".into()),
        }
    }
    if part("traces") {
        println!("traces, local:");
        match h2load::installed() {
            true => {
                let (seconds, mut soak) =
                    if smoke { (1, Duration::from_secs(2)) } else { (5, Duration::from_secs(600)) };
                // `--soak SECONDS`: how long the memory is watched with the collector down.
                if let Some(Some(given)) = args.after("--soak", 1) {
                    soak = Duration::from_secs(given.parse()?);
                }
                traces::traces(&mut report, local, seconds, soak).await?;
            }
            false => report.notes.push("h2load is not installed (nghttp2-client): traces were skipped".into()),
        }
    }
    // The pruner's rate alone, on the local backend and on moto (the smoke run: moto only, small; the soak
    // below measures it locally). moto lists a prefix by scanning its whole bucket, and its one process
    // serves every request in turn: a pile of 1,000 takes minutes already (making it lists each sink once,
    // deleting it each sink and each records folder once, so the pile's size moves both alike).
    if smoke || only.as_ref().is_some_and(|only| only.contains(&"pruner")) {
        let (local_pile, moto_pile) = if smoke { (0, 200) } else { (soak::FULL.pile, 1_000) };
        if local_pile > 0 {
            soak::pruner_rate(&mut report, "local", Arc::new(local()?), local_pile, Duration::from_millis(4)).await?;
        }
        match TestStore::moto().await {
            Some(store) => {
                let per_result = Duration::from_millis(120);
                soak::pruner_rate(&mut report, "moto", Arc::new(store), moto_pile, per_result).await?;
            }
            None => report.notes.push("moto is not running: the pruner's rate on it was skipped".into()),
        }
    }
    // Ten minutes at full size: only when named (the smoke run always has it, at 20 s).
    if smoke || only.as_ref().is_some_and(|only| only.contains(&"soak")) {
        let soak_sizes = if smoke { &soak::SMOKE } else { &soak::FULL };
        soak::soak(&mut report, Arc::new(local()?), soak_sizes).await?;
    }
    judge(&mut report, sizes);
    print_report(&report, smoke);
    let failed = report.verdicts.iter().any(|(_, pass, _)| !pass);
    if failed && !smoke {
        std::process::exit(1);
    }
    Ok(())
}

/// Baseline, Resolve (committed, 1 file), Commit (1 file) and Allocate at each concurrency, each concurrency
/// on a fresh store and service (`store` makes them).
async fn calls<F, Fut>(
    report: &mut Report,
    backend: &'static str,
    store: F,
    auth: bool,
    sizes: &Sizes,
) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<TestStore, Error>>,
{
    println!("{backend}, authentication {}:", if auth { "on" } else { "off" });
    let commits = if backend == "local" { sizes.commits.0 } else { sizes.commits.1 };
    for n in CONCURRENCY {
        let store = store().await?;
        let service = Running::start(&store, auth, "", "").await?;
        let resolved = cases::committed(&service, &store, "resolved", sizes.resolve_pool, 1).await?;
        let budget = Budget::For(sizes.duration);
        let base = cases::baseline(&service, n, budget).await?;
        report.row(backend, auth, "baseline (health Check)", n, base, None);
        let stats = cases::resolve(&service, &resolved, n, budget, 1).await?;
        report.row(backend, auth, "Resolve (1 file)", n, stats, Some(&base));
        let stats = cases::commit(&service, &store, "committed", n, commits).await?;
        report.row(backend, auth, "Commit (1 file)", n, stats, Some(&base));
        let stats = cases::allocate(&service, "allocated", n, budget).await?;
        report.row(backend, auth, "Allocate", n, stats, Some(&base));
        service.stop().await;
    }
    Ok(())
}

/// Resolve of a committed result of `large_files` files at each concurrency and, on the local backend, its
/// Commit. Answers the result, for the boto3 comparison.
async fn large(report: &mut Report, backend: &'static str, store: &TestStore, sizes: &Sizes) -> Result<String, Error> {
    let smoke = sizes.large_files < FULL.large_files;
    println!("{backend}, a result of {} files:", sizes.large_files);
    let service = Running::start(store, true, "", "").await?;
    let large = cases::committed(&service, store, "large", 1, sizes.large_files).await?;
    let call = format!("Resolve ({} files)", sizes.large_files);
    // A GCS URL is an RSA signature (most of a millisecond of a core): a large Resolve takes seconds there, so
    // a few calls are timed at N = 1 and 16 instead of calls for a while (at N = 128 each would wait minutes).
    let runs: Vec<(usize, Budget)> = match backend {
        "gcs" if smoke => vec![(1, Budget::Calls(2)), (16, Budget::Calls(16))],
        "gcs" => vec![(1, Budget::Calls(4)), (16, Budget::Calls(16))],
        _ => CONCURRENCY.iter().map(|&n| (n, Budget::For(sizes.duration))).collect(),
    };
    for (n, budget) in runs {
        let stats = cases::resolve(&service, &large, n, budget, sizes.large_files).await?;
        report.row(backend, true, &call, n, stats, None);
    }
    if backend == "local" {
        let stats =
            cases::commit_large(&service, store, "large-commit", sizes.large_commits, sizes.large_files).await?;
        report.row(backend, true, &format!("Commit ({} files)", sizes.large_files), 1, stats, None);
    }
    service.stop().await;
    Ok(large[0].result_id.clone())
}

/// 1,000 watchers (smoke: fewer) of one result, told of its commit.
async fn watch(report: &mut Report, backend: &'static str, store: &TestStore, sizes: &Sizes) -> Result<(), Error> {
    let service = Running::start(store, true, "", "").await?;
    let stats = cases::watch_fan_out(&service, store, sizes.watchers).await?;
    report.row(backend, true, &format!("Watch fan-out ({} watchers)", sizes.watchers), sizes.watchers, stats, None);
    service.stop().await;
    Ok(())
}

/// Presigning `large_files` URLs: one Resolve (its p50, measured above) against boto3 in a loop.
async fn presign_vs_boto3(
    report: &mut Report,
    store: &TestStore,
    result_id: String,
    sizes: &Sizes,
) -> Result<(), Error> {
    let Some(python) = presign::python() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err("the test virtualenv's Python (with boto3) is missing; run scripts/test.sh".into());
        }
        report.notes.push("no test virtualenv: the boto3 comparison was skipped".into());
        return Ok(());
    };
    let boto3 = presign::boto3(&python, store, &result_id, sizes.large_files)?;
    let call = format!("Resolve ({} files)", sizes.large_files);
    let resolve = report.find("s3", true, &call, 1).ok_or("no S3 Resolve of the large result")?.stats.p50;
    let ratio = boto3.as_secs_f64() / resolve.as_secs_f64().max(1e-9);
    println!(
        "  boto3 generate_presigned_url x{}: {} (Resolve: {}), x{ratio:.1}",
        sizes.large_files,
        ms(boto3),
        ms(resolve)
    );
    report.verdict(
        format!("presigning {} URLs: Resolve at least 20x faster than boto3", sizes.large_files),
        ratio >= 20.0,
        format!("boto3 {}, Resolve p50 {}: x{ratio:.1}", ms(boto3), ms(resolve)),
    );
    Ok(())
}

/// The service's memory before and after `cycles` Allocate + Commit + Resolve cycles, with retention on so
/// that the store stays the size of 20 seconds of results (as the pruner keeps it).
async fn memory(report: &mut Report, store: Arc<TestStore>, sizes: &Sizes) -> Result<(), Error> {
    println!("memory over {} cycles:", sizes.cycles);
    let location = "retention = \"20s\"\nprune_interval = \"2s\"";
    let service = Running::start(&store, true, location, "").await?;
    cases::cycles(&service, &store, "warm-up", 128, 1_000).await?;
    let before = service.rss_kib()?;
    let stats = cases::cycles(&service, &store, "cycle", 128, sizes.cycles).await?;
    let after = service.rss_kib()?;
    report.row("local", true, "Allocate+Commit+Resolve cycle", 128, stats, None);
    println!("  RSS before {} MiB, after {} MiB", before / 1024, after / 1024);
    // What the pruner left: with 20 s of retention, about 20 s of cycles would be stored if it kept up.
    let root = store.local_root().ok_or("the memory measurement runs on the local backend")?;
    let stored = std::fs::read_dir(&root)?.filter_map(Result::ok).filter(|e| e.file_name() != "_control").count();
    report.notes.push(format!(
        "after {} cycles at {:.0}/s with 20 s of retention, {stored} results were stored (20 s of cycles: {:.0})",
        sizes.cycles,
        stats.per_second,
        stats.per_second * 20.0
    ));
    report.verdict(
        format!("RSS after {} cycles under 100 MiB", sizes.cycles),
        after < 100 * 1024,
        format!("before {:.1} MiB, after {:.1} MiB", before as f64 / 1024.0, after as f64 / 1024.0),
    );
    service.stop().await;
    Ok(())
}

/// Allocate and Resolve throughput (N = 128) with few and with many results stored. Each point is measured
/// once the pruner has caught up (no pending allocation left), so that both see the same background work:
/// pruning every second, and the measured allocations themselves abandoned 5 s after their Allocate.
async fn scale(report: &mut Report, store: Arc<TestStore>, sizes: &Sizes) -> Result<(), Error> {
    let (few, many) = sizes.scale;
    println!("scale, {few} then {many} results stored:");
    let service = Running::start(&store, true, "commit_timeout = \"5s\"\nprune_interval = \"1s\"", "").await?;
    let resolved = cases::committed(&service, &store, "stored", few, 1).await?;
    let pool = Arc::new(resolved[..sizes.resolve_pool.min(few)].to_vec());
    let budget = Budget::For(sizes.duration);
    let mut measured = Vec::new();
    for (stored, prefix) in [(few, "few"), (many, "many")] {
        if stored > few {
            cases::cycles(&service, &store, "more", 128, (stored - few) as u64).await?;
        }
        let waited = settle(&store).await?;
        println!("  {stored} stored: the pruner caught up in {:.1} s", waited.as_secs_f64());
        let allocate = cases::allocate(&service, &format!("scale-{prefix}"), 128, budget).await?;
        let resolve = cases::resolve(&service, &pool, 128, budget, 1).await?;
        report.row("local", true, &format!("Allocate, {stored} stored"), 128, allocate, None);
        report.row("local", true, &format!("Resolve, {stored} stored"), 128, resolve, None);
        measured.push((allocate.per_second, resolve.per_second));
    }
    let (allocate, resolve) = (measured[1].0 / measured[0].0, measured[1].1 / measured[0].1);
    report.verdict(
        format!("throughput with {many} results stored vs {few}: at least 0.9"),
        allocate >= 0.9 && resolve >= 0.9,
        format!("Allocate x{allocate:.2}, Resolve x{resolve:.2}"),
    );
    service.stop().await;
    Ok(())
}

/// Waits until the local store has no pending allocation left (the pruner moved every committed one to the
/// expiry index and abandoned the rest); answers how long that took.
async fn settle(store: &TestStore) -> Result<Duration, Error> {
    let pending = store.local_root().ok_or("the scale measurement runs on the local backend")?.join("_control/pending");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(900) {
        let left = match std::fs::read_dir(&pending) {
            Ok(entries) => entries.count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        if left == 0 {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the pruner did not catch up within 15 minutes".into())
}

/// One call alone at N = 128 for `duration`, for a profiler.
async fn profile(store: &TestStore, call: &str, duration: Duration) -> Result<(), Error> {
    let service = Running::start(store, true, "", "").await?;
    let resolved = cases::committed(&service, store, "resolved", FULL.resolve_pool, 1).await?;
    println!("service pid {}", service.process.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let budget = Budget::For(duration);
    let stats = match call {
        "allocate" => cases::allocate(&service, "profiled", 128, budget).await?,
        "resolve" => cases::resolve(&service, &resolved, 128, budget, 1).await?,
        "baseline" => cases::baseline(&service, 128, budget).await?,
        other => return Err(format!("--profile {other}: not allocate, resolve or baseline").into()),
    };
    println!("{call}: {:.0}/s, p50 {}, p99 {}", stats.per_second, ms(stats.p50), ms(stats.p99));
    service.stop().await;
    Ok(())
}

/// The targets that compare measurements of the table.
fn judge(report: &mut Report, sizes: &Sizes) {
    for auth in [false, true] {
        if let Some(resolve) = report.find("local", auth, "Resolve (1 file)", 128).and_then(|r| r.ratio) {
            report.verdict(
                format!("Resolve (cached) >= 0.8 x baseline at N=128, local, auth {}", on(auth)),
                resolve >= 0.8,
                format!("x{resolve:.2}"),
            );
        }
        if let Some(allocate) = report.find("local", auth, "Allocate", 128).and_then(|r| r.ratio) {
            report.verdict(
                format!("Allocate >= 0.3 x baseline at N=128, local, auth {}", on(auth)),
                allocate >= 0.3,
                format!("x{allocate:.2}"),
            );
        }
    }
    let resolve = format!("Resolve ({} files)", sizes.large_files);
    if let Some(row) = report.find("s3", true, &resolve, 1) {
        let p50 = row.stats.p50;
        report.verdict(format!("{resolve}, presigned: p50 <= 50 ms"), p50 <= Duration::from_millis(50), ms(p50));
    }
    let commit = format!("Commit ({} files)", sizes.large_files);
    if let Some(row) = report.find("local", true, &commit, 1) {
        let p50 = row.stats.p50;
        report.verdict(format!("{commit}, local: p50 <= 500 ms"), p50 <= Duration::from_millis(500), ms(p50));
    }
}

fn print_report(report: &Report, smoke: bool) {
    println!();
    println!("| backend | auth | call | N | calls | calls/s | p50 | p99 | p999 | x baseline |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &report.rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            row.backend,
            on(row.auth),
            row.call,
            row.concurrency,
            row.stats.calls,
            row.stats.per_second,
            ms(row.stats.p50),
            ms(row.stats.p99),
            ms(row.stats.p999),
            row.ratio.map(|r| format!("{r:.2}")).unwrap_or_default()
        );
    }
    println!();
    for (target, pass, figures) in &report.verdicts {
        let verdict = match (smoke, pass) {
            (true, _) => "(smoke, not judged)",
            (false, true) => "PASS",
            (false, false) => "FAIL",
        };
        println!("{verdict} {target}: {figures}");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
}

fn on(auth: bool) -> &'static str {
    if auth { "on" } else { "off" }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
