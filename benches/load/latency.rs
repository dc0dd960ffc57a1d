//! Each call against a store far away: the store server behind a proxy of ours that delays every request by
//! D ms (client to store), two replicas of the service in this process (warm: the one that allocated; cold:
//! one that has not seen the result), each call's p50 and p99 at N = 1 and N = 16 (16 queries' lives at once),
//! with its storage requests and depth (the round trips it waited on one after another, counted by the
//! service's storage layer at N = 1). A call meets its floor when p50 / D <= floor + 0.3 x requests + 0.2 (a
//! test server's own work costs about 0.3 of a round trip per request at D = 25 ms).

use std::{collections::BTreeMap, time::Duration};

use anonymous_results::Config;
use futures::future::join_all;

use super::{
    Error, Report,
    common::{TestServer, TestStore, delay::DelayProxy, round_trips},
    drive::Stats,
};

/// The delay of every request, unless `--delay MS` says otherwise.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(25);

/// How many queries' lives each measurement makes.
pub struct Sizes {
    /// Lives one after another (N = 1).
    pub sequential: usize,
    /// Rounds of 16 lives at once (N = 16).
    pub rounds: usize,
}

pub const FULL: Sizes = Sizes { sequential: 30, rounds: 4 };
pub const SMOKE: Sizes = Sizes { sequential: 3, rounds: 1 };

/// One call's figures over one store.
struct Figures {
    n1: Vec<Duration>,
    n16: Vec<Duration>,
    requests: u64,
    depth: u64,
}

/// How one store is measured.
#[derive(Default)]
pub struct Setup {
    /// Its figures are judged against the floors (the reference store, moto).
    pub judged: bool,
    /// Its listings pin no file (s3s-fs lists no entity tag, a bucket that keeps versions lists no version):
    /// Commit's floor is one round trip more, the HEADs of its files, all at once.
    pub commit_heads: bool,
    /// The `[anonymous_results_service]` lines of its service. Where they scope workers' credentials to each
    /// sink (`scoped`), Allocate's floor is one round trip more (STS first), a repeated Allocate's two.
    pub service: String,
    pub scoped: bool,
}

impl Setup {
    /// The floor of `call`, whose floor on the reference store is `floor`.
    fn floor(&self, call: &str, floor: u64) -> u64 {
        let sts = match call {
            "Allocate" => 1,
            "Allocate again (warm)" => 2,
            _ => 0,
        };
        floor + u64::from(self.commit_heads && call.starts_with("Commit")) + if self.scoped { sts } else { 0 }
    }
}

/// Measures every call on `store` (named `name`) behind a delay of `delay`, as `setup` says.
pub async fn latency(
    report: &mut Report,
    name: &'static str,
    store: TestStore,
    delay: Duration,
    sizes: &Sizes,
    setup: Setup,
) -> Result<(), Error> {
    let endpoint = store.server_endpoint().ok_or("not an object store")?;
    let proxy = DelayProxy::start(&endpoint, delay).await;
    let store = store.reached_at(&proxy.endpoint);
    let config = Config::from_toml(&store.config_toml_with("retention = \"1h\"", &setup.service))?;
    let (a, b) = (TestServer::start(&config).await, TestServer::start(&config).await);
    // Warm connection pools (and the first credentials) on both replicas.
    round_trips::each_call(&a, &b, &store, "warm-up").await;
    let mut figures: BTreeMap<&str, Figures> = BTreeMap::new();
    for life in 0..sizes.sequential {
        for m in round_trips::each_call(&a, &b, &store, &format!("n1-{life}")).await {
            let entry = figures.entry(m.call).or_insert(Figures { n1: vec![], n16: vec![], requests: 0, depth: 0 });
            entry.n1.push(m.latency);
            (entry.requests, entry.depth) = (m.requests, m.depth);
        }
    }
    for round in 0..sizes.rounds {
        let tags: Vec<String> = (0..16).map(|i| format!("n16-{round}-{i}")).collect();
        let lives = tags.iter().map(|tag| round_trips::each_call(&a, &b, &store, tag));
        for life in join_all(lives).await {
            for m in life {
                if let Some(entry) = figures.get_mut(m.call) {
                    entry.n16.push(m.latency);
                }
            }
        }
    }
    println!("{name} behind a delay of {} ms:", delay.as_millis());
    let d = delay.as_secs_f64();
    for (call, floor) in round_trips::CALLS {
        let Some(f) = figures.get(call) else { continue };
        let floor = setup.floor(call, floor);
        let (n1, n16) =
            (Stats::of(f.n1.clone(), Duration::from_secs(1)), Stats::of(f.n16.clone(), Duration::from_secs(1)));
        let trips = n1.p50.as_secs_f64() / d;
        let bound = floor as f64 + 0.3 * f.requests as f64 + 0.2;
        let met = trips <= bound;
        println!(
            "  {name:15} {call:24} requests {:2} depth {:2} floor {floor} | N=1 p50 {:>7.1} ms p99 {:>7.1} ms ({trips:.1} round trips, bound {bound:.1}: {}) | N=16 p50 {:>7.1} ms p99 {:>7.1} ms",
            f.requests,
            f.depth,
            ms(n1.p50),
            ms(n1.p99),
            if met { "met" } else { "NOT met" },
            ms(n16.p50),
            ms(n16.p99),
        );
        if setup.judged {
            let target = format!("{call} on {name} at D = {} ms: p50 / D <= {bound:.1}", delay.as_millis());
            report.verdict(target, met, format!("{trips:.2} round trips, {} requests, depth {}", f.requests, f.depth));
        }
    }
    a.stop().await;
    b.stop().await;
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
