//! Pruning cost as results pile up, on the local backend: a pass that deletes 100 expired results among
//! 1,000 stored, against the same among 100,000 stored (the median of three such passes, an hour apart); and
//! an idle pass (nothing due) over each store.
//! Storage requests and wall time, with the ratio many/few, measured in one run.
//!
//! `cargo bench --bench prune` (a few minutes: it commits 101,000 results through the gRPC API first);
//! `cargo bench --bench prune -- --smoke`, or `cargo test --bench prune` (which the test command runs), does 10
//! among 100 and 10 among 1,000; `--dir PATH` puts the stores under PATH (default: the system's temporary
//! folder). Storage requests must not grow with the results stored; nor may time, beyond noise (2x).

#[path = "shared/args.rs"]
mod bench_args;
#[path = "shared/commits.rs"]
mod commits;
#[path = "shared/figures.rs"]
mod figures;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anonymous_results::{Config, Service, clock::ManualClock, proto};
use anonymous_results_client::Client;
use bench_args::BenchArgs;
use commits::{Error, commit_many, cores, ms};
use figures::{Cost, Verdicts};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const HOUR: Duration = Duration::from_secs(3600);
/// Idle passes per store; the median is reported.
const IDLE_PASSES: usize = 5;
/// Deleting passes per store, an hour apart; the median is reported.
const ROUNDS: usize = 3;

struct Measured {
    stored: usize,
    setup: Duration,
    idle: Cost,
    deleting: Cost,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(args) = BenchArgs::parse()? else { return Ok(()) };
    let (smoke, dir) = (args.smoke, args.dir.clone());
    let (expiring, few, many) = if smoke { (10, 100, 1_000) } else { (100, 1_000, 100_000) };
    println!("pruning cost, local backend under {}, {} cores", dir.display(), cores());
    let few = measure(&dir, expiring, few).await?;
    let many = measure(&dir, expiring, many).await?;
    println!();
    println!(
        "| stored | setup | idle pass: requests | idle pass: time | deleting {expiring}: requests | deleting {expiring}: time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for m in [&few, &many] {
        println!(
            "| {} | {:.1} s | {} | {:.2} ms | {} | {:.1} ms |",
            m.stored,
            m.setup.as_secs_f64(),
            m.idle.requests,
            ms(m.idle.time),
            m.deleting.requests,
            ms(m.deleting.time)
        );
    }
    let ratio = |f: fn(&Measured) -> Cost| f(&many).ratios_to(f(&few));
    let (idle_requests, idle_time) = ratio(|m| m.idle);
    let (deleting_requests, deleting_time) = ratio(|m| m.deleting);
    println!(
        "| ratio {}/{} | | {idle_requests:.2} | {idle_time:.2} | {deleting_requests:.2} | {deleting_time:.2} |",
        many.stored, few.stored
    );
    println!();
    let mut verdicts = Verdicts::default();
    verdicts.judge(
        "requests do not grow with results stored",
        idle_requests == 1.0 && deleting_requests == 1.0,
        format!("ratios {idle_requests:.2} (idle), {deleting_requests:.2} (deleting)"),
    );
    // Time is noisy on a shared machine, and a filesystem's lookups in a folder of 100,000 entries cost
    // somewhat more than in one of 1,000; a pass that read every stored result would be ~100x slower.
    let bound = 2.0;
    let time_ok = deleting_time <= bound;
    match smoke {
        true => println!("(smoke: time ratio {deleting_time:.2} not judged)"),
        false => verdicts.judge("deleting-pass time ratio", time_ok, format!("{deleting_time:.2} (at most {bound})")),
    }
    verdicts.finish();
    Ok(())
}

/// Commits `stored` results: `expiring` with a 1h TTL, as many with 2h and with 3h, the rest with 24h, running
/// a pruning pass after each 1,000 as the service would every `prune_interval`. Then measures idle passes
/// (nothing due), and the three passes an hour apart that each delete `expiring` results, on a replica that
/// has cached nothing; the medians.
async fn measure(dir: &std::path::Path, expiring: usize, stored: usize) -> Result<Measured, Error> {
    let root = tempfile::tempdir_in(dir)?;
    let text = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
         anonymous_results.prune_interval = \"1000d\"\n",
        root.path().join("results").display().to_string()
    );
    let config = Config::from_toml(&text)?;
    let clock = Arc::new(ManualClock::new());
    let service = Service::with_clock(&config, clock.clone()).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(anonymous_results::serve(service.clone(), listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let client = Client::new(channel);

    let started = Instant::now();
    let ttl = |i: usize| match i / expiring {
        round @ 0..ROUNDS => HOUR * (round as u32 + 1),
        _ => 24 * HOUR,
    };
    let mut scheduled = 0;
    for chunk in (0..stored).collect::<Vec<_>>().chunks(1_000) {
        let request = |i: usize| -> Result<proto::AllocateRequest, Error> {
            Ok(proto::AllocateRequest {
                query_id: format!("query-{i}"),
                ttl: Some(ttl(i).try_into()?),
                ..Default::default()
            })
        };
        commit_many(&client, chunk.iter().copied(), request, 64).await?;
        scheduled += service.prune(false).await?.scheduled;
    }
    if scheduled != stored {
        return Err(format!("the pruner scheduled {scheduled} of {stored} results").into());
    }
    let setup = started.elapsed();

    // The passes measured run on a second replica over the same store, which has cached nothing: the one
    // that committed the results holds as many of their outcomes as its cache keeps, all of 1,000 and a
    // part of 100,000, and would read fewer of them the fewer results are stored.
    let pruner = Service::with_clock(&config, clock.clone()).await?;
    let mut idle = Vec::new();
    for _ in 0..IDLE_PASSES {
        idle.push(pass(&pruner, 0).await?);
    }
    clock.advance(Duration::from_secs(60));
    let mut deleting = Vec::new();
    for _ in 0..ROUNDS {
        clock.advance(HOUR);
        deleting.push(pass(&pruner, expiring).await?);
    }
    let (idle, deleting) = (median(idle), median(deleting));
    println!(
        "{stored} stored: setup {:.1} s; idle pass {} requests, {:.2} ms; deleting {expiring}: {} requests, {:.1} ms",
        setup.as_secs_f64(),
        idle.requests,
        ms(idle.time),
        deleting.requests,
        ms(deleting.time)
    );
    let _ = stop.send(());
    server.await??;
    Ok(Measured { stored, setup, idle, deleting })
}

/// The median of each figure on its own: passes of the same work may differ by a few requests (whether a
/// result's cached state had to be read again), and the pass with the median time need not have the median
/// count.
fn median(passes: Vec<Cost>) -> Cost {
    let mut times: Vec<_> = passes.iter().map(|pass| pass.time).collect();
    let mut requests: Vec<_> = passes.iter().map(|pass| pass.requests).collect();
    times.sort_unstable();
    requests.sort_unstable();
    Cost { time: times[times.len() / 2], requests: requests[requests.len() / 2] }
}

/// One pruning pass, which must delete `expected` results.
async fn pass(service: &Service, expected: usize) -> Result<Cost, Error> {
    let before = service.storage_requests();
    let started = Instant::now();
    let report = service.prune(false).await?;
    let time = started.elapsed();
    if report.expired.len() != expected || report.failed > 0 {
        return Err(format!("a pass deleted {} results (expected {expected}): {report:?}", report.expired.len()).into());
    }
    Ok(Cost { requests: service.storage_requests() - before, time })
}
