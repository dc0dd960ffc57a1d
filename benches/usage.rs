//! What is stored, as results pile up, on the local backend: a ListResults page (the first, and one from the
//! middle of the index) among 1,000 results against the same among 100,000; GetUsage's cost (a call, answered
//! from memory; a replica's whole read at start-up; a refresh after 100 changes); and Allocate + Commit's rate
//! with the byte budget on against the same service without one.
//! Storage requests and wall time, with the ratio many/few, measured in one run.
//!
//! `cargo bench --bench usage` (a few minutes: it commits 101,000 results through the gRPC API first, on a
//! clock that moves a few seconds a result, so that they span a week of creation); `cargo test --bench usage`
//! (which the test command runs) does 100 and 1,000; `--dir PATH` puts the stores under PATH.

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

/// Calls per figure; the median is reported.
const CALLS: usize = 9;
/// How long the results' creation spans, whatever their number.
const SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

struct Measured {
    stored: usize,
    setup: Duration,
    first_page: Cost,
    middle_page: Cost,
    get_usage: Duration,
    whole_read: Cost,
    refresh: Cost,
}

/// A service over a local root, served on loopback, and a client of it.
struct Running {
    service: Service,
    client: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), anonymous_results::StartError>>,
}

impl Running {
    async fn start(config: &Config, clock: Arc<ManualClock>) -> Result<Self, Error> {
        let service = Service::with_clock(config, clock).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(anonymous_results::serve(service.clone(), listener, async {
            let _ = stopped.await;
        }));
        let client = Client::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
        service.usage_loaded().await;
        Ok(Self { service, client, stop, server })
    }

    async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Some(args) = BenchArgs::parse()? else { return Ok(()) };
    let (smoke, dir) = (args.smoke, args.dir.clone());
    let (few, many) = if smoke { (100, 1_000) } else { (1_000, 100_000) };
    println!("what is stored, local backend under {}, {} cores", dir.display(), cores());
    let (rate_off, rate_on) = commit_rates(&dir, if smoke { 200 } else { 2_000 }).await?;
    let few = measure(&dir, few).await?;
    let many = measure(&dir, many).await?;
    println!();
    println!(
        "| stored | setup | first page: requests | first page: time | middle page: requests | middle page: time | GetUsage | start-up with the whole read: requests | time | refresh after 100 changes: requests | refresh: time |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in [&few, &many] {
        println!(
            "| {} | {:.1} s | {} | {:.2} ms | {} | {:.2} ms | {:.1} µs | {} | {:.1} ms | {} | {:.1} ms |",
            m.stored,
            m.setup.as_secs_f64(),
            m.first_page.requests,
            ms(m.first_page.time),
            m.middle_page.requests,
            ms(m.middle_page.time),
            m.get_usage.as_secs_f64() * 1e6,
            m.whole_read.requests,
            ms(m.whole_read.time),
            m.refresh.requests,
            ms(m.refresh.time),
        );
    }
    let ratio = |f: fn(&Measured) -> Cost| f(&many).ratios_to(f(&few));
    let (first_requests, first_time) = ratio(|m| m.first_page);
    let (middle_requests, middle_time) = ratio(|m| m.middle_page);
    let (refresh_requests, refresh_time) = ratio(|m| m.refresh);
    println!(
        "| ratio {}/{} | | {first_requests:.2} | {first_time:.2} | {middle_requests:.2} | {middle_time:.2} | | | | {refresh_requests:.2} | {refresh_time:.2} |",
        many.stored, few.stored
    );
    println!();
    println!(
        "Allocate + Commit, 32 at a time: {rate_off:.0}/s without a budget, {rate_on:.0}/s with one (ratio {:.2})",
        rate_on / rate_off
    );
    println!();
    let mut verdicts = Verdicts::default();
    verdicts.judge(
        "a page's requests and a refresh's do not grow with the results stored",
        first_requests <= 1.0 && middle_requests <= 1.0 && refresh_requests <= 1.0,
        format!(
            "ratios {first_requests:.2} (first page), {middle_requests:.2} (middle), {refresh_requests:.2} (refresh)"
        ),
    );
    let bound = 2.0;
    match smoke {
        true => println!("(smoke: time ratios {first_time:.2}, {middle_time:.2} and the rate not judged)"),
        false => {
            verdicts.judge("first-page time ratio", first_time <= bound, format!("{first_time:.2} (at most {bound})"));
            verdicts.judge(
                "middle-page time ratio",
                middle_time <= bound,
                format!("{middle_time:.2} (at most {bound})"),
            );
            let rate = rate_on / rate_off;
            verdicts.judge(
                "Allocate + Commit rate with a budget",
                rate >= 0.9,
                format!("{rate:.2} of without (at least 0.9)"),
            );
        }
    }
    verdicts.finish();
    Ok(())
}

/// The configuration of a local store under `root`, with `budget` keys added to its location table.
fn config(root: &std::path::Path, budget: &str) -> Result<Config, Error> {
    let text = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
         anonymous_results.prune_interval = \"1000d\"\nanonymous_results.usage_interval = \"1000d\"\n{budget}",
        root.join("results").display().to_string()
    );
    Ok(Config::from_toml(&text)?)
}

/// Allocate + Commit per second, 32 at a time, `count` results on a service without a budget and on one with
/// every budget on (none full), one after the other, three times each (the median of each).
async fn commit_rates(dir: &std::path::Path, count: usize) -> Result<(f64, f64), Error> {
    let budget = "anonymous_results.max_stored_bytes = \"1TiB\"\nanonymous_results.max_result_bytes = \"1GiB\"\n\
                  anonymous_results.budget_label = \"user\"\nanonymous_results.max_stored_bytes_per_label = \"1TiB\"\n";
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..6 {
        let root = tempfile::tempdir_in(dir)?;
        let on = round % 2 == 1;
        let config = config(root.path(), if on { budget } else { "" })?;
        let running = Running::start(&config, Arc::new(ManualClock::new())).await?;
        let started = Instant::now();
        commit_many(&running.client, 0..count, labelled, 32).await?;
        let rate = count as f64 / started.elapsed().as_secs_f64();
        rates[usize::from(on)].push(rate);
        running.service.deletions_done().await;
        running.stop().await?;
    }
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let [off, on] = rates;
    Ok((median(off), median(on)))
}

/// Commits `stored` results spread over [`SPAN`] of creation, then measures ListResults pages, GetUsage, a
/// replica's whole read and a refresh after 100 changes; the medians.
async fn measure(dir: &std::path::Path, stored: usize) -> Result<Measured, Error> {
    let root = tempfile::tempdir_in(dir)?;
    let config = config(root.path(), "")?;
    let clock = Arc::new(ManualClock::new());
    let running = Running::start(&config, clock.clone()).await?;
    let started = Instant::now();
    let step = SPAN / stored as u32;
    let chunk = 100;
    for first in (0..stored).step_by(chunk) {
        commit_many(&running.client, first..(first + chunk).min(stored), labelled, 64).await?;
        clock.advance(step * chunk as u32);
    }
    running.service.deletions_done().await;
    let setup = started.elapsed();

    // Pages and the whole read on a second replica, which has read nothing but the index at its start: its
    // start-up's requests and time, the whole read of the index the most of them.
    let started = Instant::now();
    let replica = Running::start(&config, clock.clone()).await?;
    let whole_read = Cost { requests: replica.service.storage_requests(), time: started.elapsed() };
    let page = |token: String| proto::ListResultsRequest { page_size: 100, page_token: token, ..Default::default() };
    let first_page = median_of(&replica.service, || async {
        let answer = replica.client.list_results(page(String::new())).await?;
        check(answer.results.len() == 100, "a first page of 100")
    })
    .await?;
    // The token of the result halfway through the index.
    let mut token = String::new();
    for _ in 0..stored / 200 {
        token = replica.client.list_results(page(token)).await?.next_page_token;
    }
    let middle_page = median_of(&replica.service, || async {
        let answer = replica.client.list_results(page(token.clone())).await?;
        check(answer.results.len() == 100, "a middle page of 100")
    })
    .await?;
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        let usage = replica.client.get_usage().await?;
        calls.push(started.elapsed());
        let committed = usage.states.iter().find(|s| s.state == proto::ResultState::Committed as i32);
        check(committed.is_some_and(|s| s.results == stored as u64), "GetUsage counts every result")?;
    }
    calls.sort();
    let get_usage = calls[CALLS / 2];

    // 100 changes on the first replica (50 releases, 50 new results), then the second's refresh.
    let listed = replica.client.list_results(page(String::new())).await?.results;
    for status in listed.iter().take(50) {
        running.client.release(proto::ReleaseRequest { result_id: status.result_id.clone() }).await?;
    }
    commit_many(&running.client, stored..stored + 50, labelled, 64).await?;
    running.service.deletions_done().await;
    let before = replica.service.storage_requests();
    let started = Instant::now();
    let refreshed = replica.service.refresh_usage().await?;
    let refresh = Cost { requests: replica.service.storage_requests() - before, time: started.elapsed() };
    check(matches!(refreshed, anonymous_results::results::Refreshed::Changes(_)), "a refresh from the journal")?;
    let usage = replica.client.get_usage().await?;
    let committed = usage.states.iter().find(|s| s.state == proto::ResultState::Committed as i32);
    check(committed.is_some_and(|s| s.results == stored as u64), "the refresh saw the changes")?;
    println!(
        "{stored} stored: setup {:.1} s; first page {} requests, {:.2} ms; middle page {} requests, {:.2} ms; \
         GetUsage {:.1} µs; whole read {} requests, {:.1} ms; refresh {} requests, {:.1} ms",
        setup.as_secs_f64(),
        first_page.requests,
        ms(first_page.time),
        middle_page.requests,
        ms(middle_page.time),
        get_usage.as_secs_f64() * 1e6,
        whole_read.requests,
        ms(whole_read.time),
        refresh.requests,
        ms(refresh.time)
    );
    replica.stop().await?;
    running.stop().await?;
    Ok(Measured { stored, setup, first_page, middle_page, get_usage, whole_read, refresh })
}

/// Result `i`'s Allocate: one of 50 users'.
fn labelled(i: usize) -> Result<proto::AllocateRequest, Error> {
    Ok(proto::AllocateRequest {
        query_id: format!("query-{i}"),
        labels: [("user".to_owned(), format!("user-{}", i % 50))].into(),
        ..Default::default()
    })
}

fn check(holds: bool, what: &str) -> Result<(), Error> {
    match holds {
        true => Ok(()),
        false => Err(format!("expected {what}").into()),
    }
}

/// [`CALLS`] calls of `call`, the median of each figure on its own.
async fn median_of<F, Fut>(service: &Service, call: F) -> Result<Cost, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let (mut times, mut requests) = (Vec::new(), Vec::new());
    for _ in 0..CALLS {
        let before = service.storage_requests();
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed());
        requests.push(service.storage_requests() - before);
    }
    times.sort_unstable();
    requests.sort_unstable();
    Ok(Cost { time: times[CALLS / 2], requests: requests[CALLS / 2] })
}
