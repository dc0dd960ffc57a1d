//! The soak run and the pruner's rate: the soak on the local backend, the pruner's rate there and on moto.
//!
//! Soak: N = 128 callers each Allocate, write a file, Commit, Resolve and (one cycle in four) Release, at
//! saturation, with 10 s of retention and the pruner running every second. Every sample period it prints the
//! service's RSS and the backlog: results expired (committed more than the retention ago) and not yet deleted,
//! counted from a listing of the store (each sink folder's modification time is its file's write, just before
//! its Commit), not from the service's own counters. Both must stay flat: the last third of the samples no more
//! than 10% above the middle third.
//!
//! Pruner rate: then a pile of results is made (Allocate + Commit at N = 128, the pruner still running: it
//! deletes what the soak left and indexes the pile as it is made), each with a TTL that makes all of them
//! expire at one instant; the pruner's rate is the pile over the time from its first deletion to its last,
//! counted from listings of the store. It must be at least twice the highest
//! Allocate + Commit rate of the run (the soak's cycles, or the pile's). [`pruner_rate`] measures the same
//! without the soak before it, on any store (moto: a pile made at N = 128 through the service, each result
//! three requests of Allocate and Commit and one of the worker's write).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tonic::transport::Channel;

use super::{
    Error, Report,
    common::{
        TestStore,
        auth::{SCHEDULER_TOKEN, WORKER_TOKEN, client_as},
    },
    drive::{self, Budget},
    service::Running,
};
use anonymous_results::proto;

/// How long the soak and the pile run, and how often the soak samples.
pub struct SoakSizes {
    pub duration: Duration,
    pub sample: Duration,
    /// Results in the pile the pruner's rate is measured on.
    pub pile: u64,
}

pub const FULL: SoakSizes =
    SoakSizes { duration: Duration::from_secs(600), sample: Duration::from_secs(10), pile: 20_000 };
pub const SMOKE: SoakSizes =
    SoakSizes { duration: Duration::from_secs(20), sample: Duration::from_secs(5), pile: 1_000 };

const RETENTION: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 128;

/// One sample of the soak.
struct Sample {
    rss_kib: u64,
    stored: usize,
    backlog: usize,
}

pub async fn soak(report: &mut Report, store: Arc<TestStore>, sizes: &SoakSizes) -> Result<(), Error> {
    let root = store.local_root().ok_or("the soak runs on the local backend")?;
    println!(
        "soak: {} s at N = {CONCURRENCY}, {} s of retention, the pruner every second:",
        sizes.duration.as_secs(),
        RETENTION.as_secs()
    );
    let location = format!("retention = \"{}s\"\nprune_interval = \"1s\"", RETENTION.as_secs());
    let service = Running::start(&store, true, &location, "").await?;
    let (auth, writer) = (service.auth, store.clone());
    let load = drive::run(&service.channels, CONCURRENCY, Budget::For(sizes.duration), move |channel, n| {
        let store = writer.clone();
        async move { mixed_cycle(channel, auth, &store, n).await }
    });
    let sampler = async {
        let started = Instant::now();
        let mut samples = Vec::new();
        // The load counts from a tenth of its duration on (its warm-up); samples follow it to its end.
        while started.elapsed() + sizes.sample <= sizes.duration + sizes.duration / 10 {
            tokio::time::sleep(sizes.sample).await;
            let (stored, backlog) = count_results(&root, RETENTION)?;
            let sample = Sample { rss_kib: service.rss_kib()?, stored, backlog };
            println!(
                "  {:>4} s  RSS {:>6.1} MiB  stored {:>7}  expired, not deleted {:>6}",
                started.elapsed().as_secs(),
                sample.rss_kib as f64 / 1024.0,
                sample.stored,
                sample.backlog
            );
            samples.push(sample);
        }
        Ok::<_, Error>(samples)
    };
    let (cycles, samples) = tokio::join!(load, sampler);
    let (cycles, samples) = (cycles?, samples?);
    report.row("local", true, "soak cycle (A+C+Resolve, 1/4 Release)", CONCURRENCY, cycles, None);
    judge_flat(report, &samples, "RSS", |s| s.rss_kib as f64);
    judge_flat(report, &samples, "backlog of expired results", |s| s.backlog as f64);

    let (pile_rate, pruner_rate) = pile(&service, &store, sizes.pile, Duration::from_millis(4)).await?;
    println!(
        "  pile of {} results made at {pile_rate:.0}/s (Allocate + Commit); the pruner deleted them at {pruner_rate:.0}/s",
        sizes.pile
    );
    let fastest = pile_rate.max(cycles.per_second);
    report.verdict(
        "the pruner deletes >= 2 x the highest Allocate+Commit rate, local".into(),
        pruner_rate >= 2.0 * fastest,
        format!(
            "pruner {pruner_rate:.0}/s vs Allocate+Commit {fastest:.0}/s (soak {:.0}/s, pile {pile_rate:.0}/s): x{:.2}",
            cycles.per_second,
            pruner_rate / fastest.max(1e-9)
        ),
    );
    service.stop().await;
    Ok(())
}

/// Allocate, write, Commit, Resolve and, one cycle in four, Release.
async fn mixed_cycle(channel: Channel, auth: bool, store: &TestStore, n: u64) -> Result<(), tonic::Status> {
    let scheduler = client_as(channel.clone(), auth.then_some(SCHEDULER_TOKEN));
    let request = proto::AllocateRequest { query_id: format!("soak-{n}"), ..Default::default() };
    let allocated = scheduler.allocate(request).await?;
    store.write(allocated.sink.as_ref().expect("a sink"), "part-0.parquet", b"0123456789").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: Vec::new(),
    };
    client_as(channel, auth.then_some(WORKER_TOKEN)).commit(commit).await?;
    let resolve = proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() };
    scheduler.resolve(resolve).await?;
    if n.is_multiple_of(4) {
        scheduler.release(proto::ReleaseRequest { result_id: allocated.result_id }).await?;
    }
    Ok(())
}

/// The results stored under `root` (its sink folders), and of those the ones whose sink was last written more
/// than `expired_after` ago.
fn count_results(root: &Path, expired_after: Duration) -> Result<(usize, usize), Error> {
    let now = SystemTime::now();
    let (mut stored, mut expired) = (0, 0);
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_name() == "_control" {
            continue;
        }
        stored += 1;
        // A sink deleted between the listing and this look is not stored any more.
        let Ok(modified) = entry.metadata().and_then(|meta| meta.modified()) else { continue };
        if now.duration_since(modified).is_ok_and(|age| age > expired_after) {
            expired += 1;
        }
    }
    Ok((stored, expired))
}

/// Whether `figure` of the last third of `samples` stays within 10% of the middle third's.
fn judge_flat(report: &mut Report, samples: &[Sample], name: &str, figure: impl Fn(&Sample) -> f64) {
    let third = samples.len() / 3;
    if third == 0 {
        report.notes.push(format!("soak: too few samples to judge the {name}"));
        return;
    }
    let mean = |part: &[Sample]| part.iter().map(&figure).sum::<f64>() / part.len() as f64;
    let (middle, last) = (mean(&samples[third..2 * third]), mean(&samples[2 * third..]));
    report.verdict(
        format!("soak: {name} flat (last third <= 1.1 x the middle third)"),
        last <= 1.1 * middle,
        format!("middle third {middle:.0}, last third {last:.0}"),
    );
}

/// Makes a pile of `count` results that all expire at one instant, then times the pruner deleting them.
/// Answers the rate they were made at, and the pruner's. `per_result` is a generous guess of the time it
/// takes to make one (at N = 128), so that the pile is made before it comes due.
async fn pile(
    service: &Running,
    store: &Arc<TestStore>,
    count: u64,
    per_result: Duration,
) -> Result<(f64, f64), Error> {
    let before = store.stored_results().await;
    // Long enough for the pile to be made and for what the soak left to expire and go.
    let due = SystemTime::now() + RETENTION + per_result * u32::try_from(count)?;
    let (auth, writer) = (service.auth, store.clone());
    let made = drive::run(&service.channels, CONCURRENCY, Budget::Calls(count), move |channel, n| {
        let store = writer.clone();
        async move { piled(channel, auth, &store, n, due).await }
    })
    .await?;
    let count = usize::try_from(count)?;
    // What the soak left goes first: only the pile is stored when it comes due.
    loop {
        let stored = store.stored_results().await;
        if stored <= count {
            break;
        }
        if SystemTime::now() >= due {
            return Err(format!(
                "{} earlier results (of {before}) were still stored when the pile came due, or the pile was made \
                 more slowly than {per_result:?} a result",
                stored - count
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until_due = due.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(until_due).await;
    // Each count is a listing of the folder or bucket the pruner is deleting from: it holds the folder's lock
    // against the pruner's removals, or is work for the server the pruner waits on (moto's grows with the
    // bucket). So it is made rarely: a small share of the seconds (local) or tens of seconds (a bucket) the
    // pile takes to go.
    let poll = match store.local_root() {
        Some(_) => Duration::from_millis(100),
        None => Duration::from_secs(1),
    };
    let mut first_deletion = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = store.stored_results().await;
        if left < count && first_deletion.is_none() {
            first_deletion = Some(Instant::now());
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the pruner left {left} of {count} expired results for 10 minutes").into());
        }
        tokio::time::sleep(poll).await;
    }
    let took = first_deletion.map_or(Duration::ZERO, |first| first.elapsed()).max(poll);
    Ok((made.per_second, count as f64 / took.as_secs_f64()))
}

/// The pruner's rate alone on `store`: a pile of `count` results made at N = 128 with the pruner running
/// (every second, as in the soak), then deleted.
pub async fn pruner_rate(
    report: &mut Report,
    name: &'static str,
    store: Arc<TestStore>,
    count: u64,
    per_result: Duration,
) -> Result<(), Error> {
    println!("the pruner's rate, {name}: a pile of {count} results at N = {CONCURRENCY}, the pruner every second:");
    let location = format!("retention = \"{}s\"\nprune_interval = \"1s\"", RETENTION.as_secs());
    let service = Running::start(&store, true, &location, "").await?;
    let (made, pruned) = pile(&service, &store, count, per_result).await?;
    println!("  made at {made:.0}/s (Allocate + Commit); the pruner deleted them at {pruned:.0}/s");
    report.verdict(
        format!("the pruner deletes >= 2 x the Allocate+Commit rate, {name}"),
        pruned >= 2.0 * made,
        format!("pruner {pruned:.0}/s vs Allocate+Commit {made:.0}/s: x{:.2}", pruned / made.max(1e-9)),
    );
    service.stop().await;
    Ok(())
}

/// Allocate with a TTL that ends at `due`, write, Commit.
async fn piled(channel: Channel, auth: bool, store: &TestStore, n: u64, due: SystemTime) -> Result<(), tonic::Status> {
    let ttl = due.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_secs(1));
    let scheduler = client_as(channel.clone(), auth.then_some(SCHEDULER_TOKEN));
    let request = proto::AllocateRequest {
        query_id: format!("pile-{n}"),
        ttl: Some(ttl.try_into().map_err(|_| tonic::Status::internal("a TTL out of range"))?),
        ..Default::default()
    };
    let allocated = scheduler.allocate(request).await?;
    store.write(allocated.sink.as_ref().expect("a sink"), "part-0.parquet", b"0123456789").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id,
        commit_token: allocated.commit_token,
        files: Vec::new(),
    };
    client_as(channel, auth.then_some(WORKER_TOKEN)).commit(commit).await?;
    Ok(())
}
