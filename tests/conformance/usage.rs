//! GetUsage and the byte budget over every backend: what each replica counts, by state and by label, the
//! same on two replicas once they refreshed; Allocate refused while a budget is used up and accepted after a
//! Release; max_result_bytes at Commit; expire-oldest; and the overshoot of two replicas racing a budget.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anonymous_results::{
    Config,
    proto::{self, ResultState},
};
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, assert_status, state};

/// The results and bytes GetUsage says are in `state`.
fn in_state(usage: &proto::GetUsageResponse, state: ResultState) -> (u64, u64) {
    let found = usage.states.iter().find(|usage| usage.state == state as i32).expect("every state is reported");
    (found.results, found.bytes)
}

/// The budget GetUsage reports under `key` (and label value, for a per-label one): (used results, used bytes,
/// max bytes).
fn budget(usage: &proto::GetUsageResponse, key: &str, label_value: &str) -> Option<(u64, u64, u64)> {
    usage
        .budgets
        .iter()
        .find(|budget| budget.key == key && budget.label_value == label_value)
        .map(|budget| (budget.used_results, budget.used_bytes, budget.max_bytes))
}

fn labelled(query_id: &str, user: &str) -> proto::AllocateRequest {
    proto::AllocateRequest {
        query_id: query_id.into(),
        labels: HashMap::from([("user".to_owned(), user.to_owned())]),
        ..Default::default()
    }
}

/// A fixture whose location table adds `location` (budget keys), and its configuration.
async fn with_budget(store: TestStore, location: &str) -> (Fixture, Config) {
    let config = Config::from_toml(&store.config_toml_with(location, "")).expect("config");
    (Fixture { server: TestServer::start(&config).await, store }, config)
}

/// Allocates `query` for `user` (none: no label), writes `bytes` bytes and commits it.
async fn committed(fx: &Fixture, query: &str, user: &str, bytes: usize) -> proto::AllocateResponse {
    let mut request = labelled(query, user);
    if user.is_empty() {
        request.labels.clear();
    }
    let allocated = fx.client().allocate(request).await.expect("allocated");
    fx.write(&allocated, "part-0.csv", &vec![b'x'; bytes]).await;
    fx.commit(&allocated, vec![]).await.expect("committed");
    allocated
}

pub async fn get_usage_counts_each_state_and_two_replicas_agree(store: TestStore) {
    let (fx, config) = with_budget(store, "budget_label = \"user\"\nmax_stored_bytes_per_label = \"1MiB\"").await;
    let client = fx.client();
    let a = committed(&fx, "u0", "alice", 10).await;
    committed(&fx, "u1", "alice", 20).await;
    committed(&fx, "u2", "bob", 5).await;
    let aborted = client.allocate(labelled("u3", "carol")).await.expect("allocated");
    let abort = proto::AbortRequest { result_id: aborted.result_id.clone(), reason: "no".into(), ..Default::default() };
    client.abort(abort).await.expect("aborted");
    client.allocate(labelled("u4", "dave")).await.expect("allocated");
    fx.server.service.deletions_done().await;

    // This replica knows what it did at once.
    let here = client.get_usage().await.expect("usage");
    assert_eq!(in_state(&here, ResultState::Committed), (3, 35));
    assert_eq!(in_state(&here, ResultState::Allocated), (1, 0));
    assert_eq!(in_state(&here, ResultState::Aborted), (1, 0));
    assert_eq!(budget(&here, "max_stored_bytes_per_label", "alice"), Some((2, 30, 1 << 20)));
    assert_eq!(budget(&here, "max_stored_bytes_per_label", "bob"), Some((1, 5, 1 << 20)));
    assert_eq!((here.label_values, here.budgets[0].label_value.as_str()), (2, "alice"), "the fullest first");

    // A second replica reads it all at start-up (the labels from the seals' summaries), and the same.
    let other = TestServer::start(&config).await;
    let there = other.client.get_usage().await.expect("usage");
    assert_eq!((there.states.clone(), there.budgets.clone()), (here.states.clone(), here.budgets.clone()));

    // Its refreshes read the journal, not the whole index: the results changed within its look-back, then
    // none, then the one released on the first replica.
    use anonymous_results::results::Refreshed;
    assert!(matches!(other.service.refresh_usage().await.expect("a refresh"), Refreshed::Changes(n) if n <= 5));
    assert_eq!(other.service.refresh_usage().await.expect("a refresh"), Refreshed::Changes(0));
    client.release(proto::ReleaseRequest { result_id: a.result_id.clone() }).await.expect("released");
    fx.server.service.deletions_done().await;
    let refreshed = other.service.refresh_usage().await.expect("a refresh");
    assert_eq!(refreshed, Refreshed::Changes(1), "only the released result is read");
    let (here, there) = (client.get_usage().await.unwrap(), other.client.get_usage().await.unwrap());
    assert_eq!(in_state(&there, ResultState::Committed), (2, 25));
    assert_eq!(budget(&there, "max_stored_bytes_per_label", "alice"), Some((1, 20, 1 << 20)));
    assert_eq!((there.states.clone(), there.budgets.clone()), (here.states.clone(), here.budgets.clone()));
    assert!(there.as_of.is_some() && here.as_of.is_some());

    // What a refresh cannot read is passed over: a journal entry not the service's, a batch entry too large.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    fx.store.plant("_control/changes/not-an-entry", b"x").await;
    let batch = format!("_control/changes/{:010}/{now_ms:016}-batch-ff00", now_ms / 3_600_000);
    fx.store.plant(&batch, &vec![b'\n'; 1 << 20]).await;
    other.service.refresh_usage().await.expect("a refresh past what it cannot read");
    assert_eq!(in_state(&other.client.get_usage().await.unwrap(), ResultState::Committed), (2, 25));
    other.stop().await;
    fx.stop().await;
}

pub async fn a_full_budget_refuses_allocate_until_a_release_makes_room(store: TestStore) {
    let location =
        "max_stored_bytes = 25\nmax_result_bytes = 16\nbudget_label = \"user\"\nmax_stored_bytes_per_label = 12";
    let (fx, _) = with_budget(store, location).await;
    let client = fx.client();
    // alice fills her label's budget (12 bytes): her next Allocate is refused, naming the budget and its key;
    // bob's is not.
    let first = committed(&fx, "b0", "alice", 6).await;
    committed(&fx, "b1", "alice", 6).await;
    assert_status(
        client.allocate(labelled("b2", "alice")).await,
        Code::ResourceExhausted,
        &[
            "max_stored_bytes_per_label of user=\"alice\"",
            "12 bytes",
            "of at most 12",
            "anonymous_results.max_stored_bytes_per_label",
        ],
    );
    committed(&fx, "b3", "bob", 10).await;
    // 22 of 25 bytes: a result without the label is still accepted, and past 25 none is.
    let unlabelled = proto::AllocateRequest { query_id: "b4".into(), ..Default::default() };
    let last = client.allocate(unlabelled).await.expect("room left");
    fx.write(&last, "part-0.csv", b"xxxx").await;
    fx.commit(&last, vec![]).await.expect("committed");
    assert_status(
        client.allocate(labelled("b5", "carol")).await,
        Code::ResourceExhausted,
        &["the byte budget max_stored_bytes is full", "26 bytes", "anonymous_results.max_stored_bytes"],
    );
    // A Release makes room, at once on this replica.
    client.release(proto::ReleaseRequest { result_id: first.result_id.clone() }).await.expect("released");
    client.allocate(labelled("b5", "carol")).await.expect("room again");
    client.allocate(labelled("b2", "alice")).await.expect("alice has room again");

    // A result over max_result_bytes is not committed: it stays allocated, and the worker can abort it.
    let big = client.allocate(labelled("b6", "dave")).await.expect("allocated");
    fx.write(&big, "part-0.csv", &[b'x'; 17]).await;
    assert_status(
        fx.commit(&big, vec![]).await,
        Code::ResourceExhausted,
        &["17 bytes", "max_result_bytes (16)", "stays allocated"],
    );
    assert_eq!(state(&fx.resolve(&big.result_id).await.unwrap().status.unwrap()), ResultState::Allocated);
    let abort = proto::AbortRequest {
        result_id: big.result_id.clone(),
        commit_token: big.commit_token.clone(),
        reason: "too large".into(),
    };
    assert_eq!(state(&client.abort(abort).await.unwrap().status.unwrap()), ResultState::Aborted);
    let usage = client.get_usage().await.unwrap();
    assert_eq!(usage.max_result_bytes, 16);
    assert_eq!(budget(&usage, "max_stored_bytes", ""), Some((3, 20, 25)));
    fx.stop().await;
}

pub async fn expire_oldest_makes_room_from_the_oldest_and_keeps_the_newest(store: TestStore) {
    let location =
        "max_stored_bytes = 20\nbudget_label = \"user\"\nmax_stored_bytes_per_label = 8\nwhen_full = \"expire-oldest\"";
    let (fx, _) = with_budget(store, location).await;
    // alice's label holds 8 bytes: her third 4-byte result expires her first.
    let alice = [committed(&fx, "e0", "alice", 4).await, committed(&fx, "e1", "alice", 4).await];
    let newest_alice = committed(&fx, "e2", "alice", 4).await;
    // Results without the label fill the store's 20 bytes and pass them: the oldest results of any label go
    // first (alice's second).
    let mut others = Vec::new();
    for n in 0..4 {
        others.push(committed(&fx, &format!("e{}", 3 + n), "", 4).await);
    }
    fx.server.service.deletions_done().await;
    // Give the expirations (after the commits' answers) a moment, then wait for their deletions.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fixture = &fx;
    let gone = |result: &proto::AllocateResponse| {
        let id = result.result_id.clone();
        async move {
            let answer = fixture.resolve(&id).await;
            answer.map(|answer| state(&answer.status.unwrap()) != ResultState::Committed).unwrap_or(true)
        }
    };
    while !(gone(&alice[0]).await && gone(&alice[1]).await) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone(&alice[0]).await, "the oldest result of the full label expired");
    assert!(gone(&alice[1]).await, "the oldest result of the full store expired");
    assert!(!gone(&newest_alice).await, "the newest survive");
    for other in &others {
        assert!(!gone(other).await, "the newest survive");
    }
    fx.server.service.deletions_done().await;
    let usage = fx.client().get_usage().await.unwrap();
    assert_eq!(in_state(&usage, ResultState::Committed), (5, 20));
    let metrics = fx.server.service.metrics().render();
    assert!(metrics.contains("anonymous_results_pruned_total{reason=\"budget\"} 2"), "{metrics}");
    assert!(metrics.contains("anonymous_results_stored_bytes{state=\"committed\"} 20"), "{metrics}");
    assert!(metrics.contains("anonymous_results_budget_bytes{budget=\"max_stored_bytes\"} 20"), "{metrics}");
    fx.stop().await;
}

/// Two replicas commit as fast as they can for three `usage_interval`s (and until the budget refused once)
/// against one budget: each refuses once
/// it knows the budget is used up, and the bytes stored pass it by no more than the documented bound: what
/// both commit in one interval plus one refresh, and the results each had allocated when the budget filled.
pub async fn two_replicas_racing_a_budget_overshoot_it_by_at_most_one_interval_of_commits(store: TestStore) {
    const SIZE: usize = 100;
    const MAX: u64 = 5 * SIZE as u64;
    let interval = Duration::from_secs(1);
    let config =
        Config::from_toml(&store.config_toml_with(&format!("max_stored_bytes = {MAX}\nusage_interval = \"1s\""), ""))
            .expect("config");
    let fx = Arc::new(Fixture { server: TestServer::start(&config).await, store });
    let other = Arc::new(TestServer::start(&config).await);
    let start = Instant::now();
    // Both race for three intervals at least, and on a slow store until the budget has refused once (at most
    // 30 s).
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for (replica, client) in [fx.client(), other.client.clone()].into_iter().enumerate() {
        let (fx, refusals) = (fx.clone(), refusals.clone());
        writers.push(tokio::spawn(async move {
            let (mut commits, mut refused) = (Vec::new(), 0);
            let mut n = 0;
            let racing = || {
                let elapsed = start.elapsed();
                elapsed < 3 * interval
                    || (refusals.load(std::sync::atomic::Ordering::Relaxed) == 0 && elapsed < Duration::from_secs(30))
            };
            while racing() {
                n += 1;
                let request = proto::AllocateRequest { query_id: format!("race-{replica}-{n}"), ..Default::default() };
                match client.allocate(request).await {
                    Ok(allocated) => {
                        fx.write(&allocated, "part-0.csv", &[b'x'; SIZE]).await;
                        let commit = proto::CommitRequest {
                            result_id: allocated.result_id.clone(),
                            commit_token: allocated.commit_token.clone(),
                            files: vec![],
                        };
                        client.commit(commit).await.expect("committed");
                        commits.push(start.elapsed());
                    }
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        refused += 1;
                        refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(status) => panic!("{status:?}"),
                }
            }
            (commits, refused)
        }));
    }
    let mut commits = Vec::new();
    let mut refused = 0;
    for writer in writers {
        let (times, refusals) = writer.await.expect("a writer");
        commits.extend(times);
        refused += refusals;
    }
    commits.sort();
    let stored = commits.len() as u64 * SIZE as u64;
    // The bound: the most commits of both replicas in any window of one interval plus a refresh (taken as a
    // second interval, generously), and one result in flight per replica.
    let window = 2 * interval;
    let most_in_a_window = commits
        .iter()
        .enumerate()
        .map(|(i, at)| commits[i..].iter().take_while(|later| **later - *at < window).count())
        .max()
        .unwrap_or(0);
    let bound = (most_in_a_window as u64 + 2) * SIZE as u64;
    assert!(refused > 0, "the budget never refused: {} commits", commits.len());
    assert!(stored > MAX, "the racers did not fill the budget: {stored} bytes");
    assert!(stored - MAX <= bound, "overshoot {} bytes past {MAX}, bound {bound}", stored - MAX);
    // Both replicas, refreshed, agree on what is stored.
    fx.server.service.refresh_usage().await.unwrap();
    other.service.refresh_usage().await.unwrap();
    let (here, there) = (fx.client().get_usage().await.unwrap(), other.client.get_usage().await.unwrap());
    assert_eq!(in_state(&here, ResultState::Committed), (commits.len() as u64, stored));
    assert_eq!(here.states, there.states);
    eprintln!(
        "racing a budget of {MAX} bytes: {} commits, {} refusals, overshoot {} bytes, bound {bound}",
        commits.len(),
        refused,
        stored - MAX
    );
}
