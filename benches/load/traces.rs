//! Tracing's cost, measured from outside by h2load (as `h2load.rs`): Resolve of a cached result against the
//! service's own health Check, in one run, with traces off; on, exporting to a reachable collector (the test
//! collector, OTLP/gRPC, counting what it receives) at `trace_sample_ratio` 1 and 0.01; and on with the
//! collector down. Then, with the collector down, the service's memory under Resolves for `soak`: held by
//! the export queue, it must not grow.

use std::time::{Duration, Instant};

use prost::Message;

use super::{
    Error, Report,
    common::{TestStore, otlp::Collector},
    h2load::{grpc_frame, run},
    service::Running,
};
use anonymous_results::proto;

/// Check and Resolve are measured this many times each per mode, in turn; the mean is reported.
const ROUNDS: usize = 2;

/// One mode's Resolve rate as a share of the health Check's, measured in the same service.
async fn measure(store: &TestStore, section: &str, seconds: u64) -> Result<(f64, f64, f64), Error> {
    let service = Running::start(store, false, "", section).await?;
    let resolved = super::cases::committed(&service, store, "traced", 1, 1).await?;
    let dir = tempfile::tempdir()?;
    let (check_body, resolve_body) = (dir.path().join("check"), dir.path().join("resolve"));
    std::fs::write(&check_body, grpc_frame(&[]))?;
    let request = proto::ResolveRequest { result_id: resolved[0].result_id.clone(), ..Default::default() };
    std::fs::write(&resolve_body, grpc_frame(&request.encode_to_vec()))?;
    let base = format!("http://{}", service.process.addr);
    let (mut check, mut resolve) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        check += run(&format!("{base}/grpc.health.v1.Health/Check"), &check_body, false, seconds)?.0 / ROUNDS as f64;
        let url = format!("{base}/anonymous_results.v1.AnonymousResults/Resolve");
        resolve += run(&url, &resolve_body, false, seconds)?.0 / ROUNDS as f64;
    }
    service.stop().await;
    Ok((check, resolve, resolve / check.max(1e-9)))
}

pub async fn traces(
    report: &mut Report,
    store: impl Fn() -> Result<TestStore, Error>,
    seconds: u64,
    soak: Duration,
) -> Result<(), Error> {
    let collector = Collector { discard: true, ..Default::default() };
    let reachable = collector.serve_grpc().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let down = format!("http://{}", closed.local_addr()?);
    drop(closed);
    let modes = [
        ("off", String::new()),
        ("on, ratio 1", format!("otlp_endpoint = {reachable:?}\ntrace_sample_ratio = 1\n")),
        ("on, ratio 0.01", format!("otlp_endpoint = {reachable:?}\ntrace_sample_ratio = 0.01\n")),
        ("on, collector down", format!("otlp_endpoint = {down:?}\ntrace_sample_ratio = 1\n")),
    ];
    let mut ratios = Vec::new();
    for (name, section) in &modes {
        let (check, resolve, ratio) = measure(&store()?, section, seconds).await?;
        println!("  traces {name}: Check {check:.0}/s, Resolve {resolve:.0}/s: x{ratio:.3}");
        ratios.push(ratio);
    }
    println!("  the collector received {} spans", collector.received.load(std::sync::atomic::Ordering::Relaxed));
    let (off, all, sampled, down_ratio) = (ratios[0], ratios[1], ratios[2], ratios[3]);
    report.verdict(
        "Resolve with traces on at ratio 0.01 within 3% of traces off (h2load, share of the health Check)".into(),
        sampled >= 0.97 * off,
        format!("x{:.3} of off (ratio 1: x{:.3})", sampled / off, all / off),
    );
    report.verdict(
        "Resolve with the collector down within 5% of a reachable one (ratio 1)".into(),
        down_ratio >= 0.95 * all,
        format!("x{:.3}", down_ratio / all),
    );

    // Memory with the collector down, under Resolves for `soak`.
    let store = store()?;
    let service = Running::start(&store, false, "", &modes[3].1).await?;
    let resolved = super::cases::committed(&service, &store, "soaked", 1, 1).await?;
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("resolve");
    let request = proto::ResolveRequest { result_id: resolved[0].result_id.clone(), ..Default::default() };
    std::fs::write(&body, grpc_frame(&request.encode_to_vec()))?;
    let url = format!("http://{}/anonymous_results.v1.AnonymousResults/Resolve", service.process.addr);
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < soak {
        let step = (soak / 10).max(Duration::from_secs(1)).as_secs();
        run(&url, &body, false, step)?;
        samples.push(service.rss_kib()?);
    }
    service.stop().await;
    let half = samples.len() / 2;
    let (first, second) =
        (samples[..half.max(1)].iter().max().copied().unwrap_or(0), samples[half..].iter().max().copied().unwrap_or(0));
    println!("  memory with the collector down for {soak:?} under Resolves: {samples:?} KiB");
    report.verdict(
        "memory bounded with the collector down (the second half's peak within 32 MiB of the first's)".into(),
        second <= first + 32 * 1024,
        format!("{} KiB then {} KiB", first, second),
    );
    Ok(())
}
