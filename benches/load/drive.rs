//! The load driver: N concurrent callers over a few HTTP/2 connections, each timing every call it makes.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use super::Error;

/// How many HTTP/2 connections the callers share.
pub const CONNECTIONS: usize = 4;

/// How much work a measurement does.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// Calls until this much time has passed (after a warm-up of a tenth of it, not counted).
    For(Duration),
    /// Exactly this many calls, numbered 0 to n - 1 (for calls that use up prepared state).
    Calls(u64),
}

/// What one measurement found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub calls: u64,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl Stats {
    pub fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
        Self {
            calls: latencies.len() as u64,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: at(0.50).copied().unwrap_or_default(),
            p99: at(0.99).copied().unwrap_or_default(),
            p999: at(0.999).copied().unwrap_or_default(),
        }
    }
}

/// Opens `CONNECTIONS` connections to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> Result<Vec<Channel>, Error> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    Ok(channels)
}

/// Runs `call(channel, n)` from `concurrency` callers spread over `channels` until `budget` is spent, and
/// times each call. A failed call fails the measurement.
pub async fn run<F, Fut, E>(channels: &[Channel], concurrency: usize, budget: Budget, call: F) -> Result<Stats, Error>
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<tonic::Status>,
{
    let next = Arc::new(AtomicU64::new(0));
    let (warm_up, measured) = match budget {
        Budget::For(duration) => (duration / 10, Some(duration)),
        Budget::Calls(_) => (Duration::ZERO, None),
    };
    let started = Instant::now();
    let counted_from = started + warm_up;
    let mut callers = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let (channel, next, call) = (channels[caller % channels.len()].clone(), next.clone(), call.clone());
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let done = match (budget, measured) {
                    (Budget::Calls(count), _) => n >= count,
                    (_, Some(duration)) => started.elapsed() >= warm_up + duration,
                    _ => true,
                };
                if done {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let begun = Instant::now();
                call(channel.clone(), n).await.map_err(Into::into)?;
                if begun >= counted_from {
                    latencies.push(begun.elapsed());
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await??);
    }
    let elapsed = match measured {
        Some(duration) => duration.max(started.elapsed() - warm_up),
        None => started.elapsed(),
    };
    Ok(Stats::of(latencies, elapsed))
}
