//! Resolve of a cached result against the service's own health Check, measured from outside by h2load
//! (Debian's nghttp2-client): 8 connections x 32 streams, one client thread, the raw gRPC bodies, with
//! authentication on and off. Every Resolve is checked to have succeeded (h2load counts HTTP statuses; gRPC
//! puts its status in the trailers): the service's own count of Resolves answered OK must cover them.

use std::{process::Command, time::Duration};

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    Error, Report,
    common::{TestStore, auth::SCHEDULER_TOKEN},
    service::Running,
};
use anonymous_results::proto;

/// The h2load options of every measurement: connections, streams per connection, client threads.
const SHAPE: [&str; 6] = ["-c", "8", "-m", "32", "-t", "1"];
/// Check and Resolve are measured this many times each, in turn; the mean is reported.
const ROUNDS: usize = 2;

/// Whether h2load is installed.
pub fn installed() -> bool {
    Command::new("h2load").arg("--version").output().is_ok_and(|out| out.status.success())
}

pub async fn h2load(report: &mut Report, store: &TestStore, auth: bool, seconds: u64) -> Result<(), Error> {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let section = format!("metrics_listen = \"{metrics}\"\n");
    let service = Running::start(store, auth, "", &section).await?;
    let resolved = super::cases::committed(&service, store, "h2load", 1, 1).await?;
    let dir = tempfile::tempdir()?;
    let check_body = dir.path().join("check");
    std::fs::write(&check_body, grpc_frame(&[]))?;
    let resolve_body = dir.path().join("resolve");
    let request = proto::ResolveRequest { result_id: resolved[0].result_id.clone(), ..Default::default() };
    std::fs::write(&resolve_body, grpc_frame(&request.encode_to_vec()))?;
    let base = format!("http://{}", service.process.addr);
    let (mut check, mut resolve, mut resolves) = (0.0, 0.0, 0);
    for _ in 0..ROUNDS {
        let (rate, _) = run(&format!("{base}/grpc.health.v1.Health/Check"), &check_body, auth, seconds)?;
        check += rate / ROUNDS as f64;
        let (rate, succeeded) =
            run(&format!("{base}/anonymous_results.v1.AnonymousResults/Resolve"), &resolve_body, auth, seconds)?;
        resolve += rate / ROUNDS as f64;
        resolves += succeeded;
    }
    let answered = resolves_answered_ok(metrics).await?;
    if answered < resolves {
        return Err(format!("h2load counted {resolves} Resolves, the service answered {answered} with OK").into());
    }
    let ratio = resolve / check.max(1e-9);
    println!(
        "  h2load (8 connections x 32 streams), auth {}: Check {check:.0}/s, Resolve {resolve:.0}/s: x{ratio:.2}",
        if auth { "on" } else { "off" }
    );
    report.verdict(
        format!("Resolve (cached) >= 0.8 x baseline by h2load, local, auth {}", if auth { "on" } else { "off" }),
        ratio >= 0.8,
        format!("x{ratio:.2} (Resolve {resolve:.0}/s, health Check {check:.0}/s)"),
    );
    service.stop().await;
    Ok(())
}

/// A gRPC message frame: not compressed, its length, the message.
pub(super) fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Runs h2load on `url` with the body in `body` for `seconds` (after a second's warm-up); answers the
/// requests per second and how many succeeded.
pub(super) fn run(url: &str, body: &std::path::Path, auth: bool, seconds: u64) -> Result<(f64, u64), Error> {
    let mut command = Command::new("h2load");
    command.args(SHAPE).args(["-D", &seconds.to_string(), "--warm-up-time", "1"]);
    command.args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    if auth {
        command.args(["-H", &format!("authorization: Bearer {SCHEDULER_TOKEN}")]);
    }
    let output = command.arg("-d").arg(body).arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|line| line.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .ok_or_else(|| format!("no rate in h2load's output: {text}"))?;
    let succeeded = text
        .lines()
        .find_map(|line| line.strip_prefix("requests: ")?.split(", ").find_map(|part| part.strip_suffix(" succeeded")))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no count in h2load's output: {text}"))?;
    Ok((rate, succeeded))
}

/// How many Resolves the service answered with OK, from its Prometheus text.
async fn resolves_answered_ok(metrics: std::net::SocketAddr) -> Result<u64, Error> {
    let mut stream = tokio::net::TcpStream::connect(metrics).await?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await??;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("anonymous_results_rpc_requests_total{method=\"Resolve\",code=\"OK\"} ")?.parse().ok()
        })
        .ok_or_else(|| "no count of Resolves answered OK in the metrics".into())
}
