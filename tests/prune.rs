//! `anonymous-results prune` on a prepared store, and the pruner's cost as results pile up.

mod common;

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anonymous_results::{Config, clock::ManualClock, proto};
use common::{Fixture, TestServer, TestStore, state};

const BIN: &str = env!("CARGO_BIN_EXE_anonymous-results");
const HOUR: Duration = Duration::from_secs(3600);

fn prune(config: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .args(["prune", "--config", config.to_str().unwrap()])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the binary");
    (output.status.success(), String::from_utf8(output.stdout).expect("UTF-8"))
}

/// The ids a `prune` output lists as `kind`, sorted.
fn listed(stdout: &str, kind: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        stdout.lines().filter_map(|line| line.strip_prefix(&format!("{kind}\t"))).map(str::to_owned).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&proto::AllocateResponse]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|a| a.result_id.clone()).collect();
    ids.sort();
    ids
}

fn sink_exists(allocated: &proto::AllocateResponse) -> bool {
    Path::new(&allocated.sink.as_ref().unwrap().uri).join("part-0.parquet").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_dry_run_lists_what_would_go_and_changes_nothing_then_prune_deletes_it() {
    let store = TestStore::local();
    let config_dir = tempfile::tempdir().unwrap();
    let file = config_dir.path().join("cluster.toml");
    std::fs::write(&file, store.config_toml_with("retention = \"1h\"\ncommit_timeout = \"1h\"", "")).unwrap();
    let config = Config::load(Some(&file)).expect("a valid configuration");

    // The store as a service left it: what it did two hours ago has expired by now.
    let clock = Arc::new(ManualClock::at(SystemTime::now() - 2 * HOUR));
    let fx = Fixture { store, server: TestServer::start_with_clock(&config, clock.clone()).await };
    let committed = |query_id: &'static str, ttl: Option<Duration>| {
        let fx = &fx;
        async move {
            let request = proto::AllocateRequest {
                query_id: query_id.into(),
                ttl: ttl.map(|ttl| ttl.try_into().unwrap()),
                ..Default::default()
            };
            let allocated = fx.client().allocate(request).await.unwrap();
            fx.write(&allocated, "part-0.parquet", b"data").await;
            fx.commit(&allocated, vec![]).await.unwrap();
            allocated
        }
    };
    let expired = [committed("expired-1", None).await, committed("expired-2", None).await];
    let long = committed("kept: a 4h ttl", Some(4 * HOUR)).await;
    let forgotten = fx.allocate("forgotten").await;
    fx.write(&forgotten, "part-0.parquet", b"half-written").await;
    clock.advance(2 * HOUR);
    let recent = committed("kept: committed now", None).await;
    let pending = fx.allocate("kept: allocated now").await;
    fx.write(&pending, "part-0.parquet", b"being written").await;
    let Fixture { store, server } = fx;
    server.stop().await;

    let (ok, stdout) = prune(&file, &["--dry-run"]);
    assert!(ok, "{stdout}");
    assert_eq!(listed(&stdout, "expired"), sorted(&[&expired[0], &expired[1]]), "{stdout}");
    assert_eq!(listed(&stdout, "abandoned"), sorted(&[&forgotten]), "{stdout}");
    assert!(stdout.contains("would delete 2 expired result(s) and abandon 1 allocation(s)"), "{stdout}");
    for allocated in expired.iter().chain([&long, &forgotten, &recent, &pending]) {
        assert!(sink_exists(allocated), "a dry run deleted {}", allocated.result_id);
    }
    assert_eq!(prune(&file, &["--dry-run"]).1, stdout, "a dry run changes nothing");

    let (ok, stdout) = prune(&file, &[]);
    assert!(ok, "{stdout}");
    assert_eq!(listed(&stdout, "expired"), sorted(&[&expired[0], &expired[1]]), "{stdout}");
    assert_eq!(listed(&stdout, "abandoned"), sorted(&[&forgotten]), "{stdout}");
    for gone in [&expired[0], &expired[1], &forgotten] {
        assert!(!sink_exists(gone), "{} is still there", gone.result_id);
    }
    for kept in [&long, &recent, &pending] {
        assert!(sink_exists(kept), "{} was deleted", kept.result_id);
    }
    let (ok, stdout) = prune(&file, &["--dry-run"]);
    assert!(ok && stdout.contains("would delete 0 expired result(s) and abandon 0 allocation(s)"), "{stdout}");

    // What is left is as it was: the kept results resolve; the abandoned one is ABORTED until it expires.
    let server = TestServer::start(&config).await;
    let fx = Fixture { store, server };
    for kept in [&long, &recent] {
        let resolved = fx.resolve(&kept.result_id).await.unwrap();
        assert_eq!(state(resolved.status.as_ref().unwrap()), proto::ResultState::Committed);
    }
    let abandoned = fx.resolve(&forgotten.result_id).await.unwrap();
    assert_eq!(state(abandoned.status.as_ref().unwrap()), proto::ResultState::Aborted);
    fx.stop().await;
}

#[test]
fn prune_fails_with_the_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = \"/x\"\nanonymous_results.retention = \"forever\"\n").unwrap();
    let output = Command::new(BIN).args(["prune", "--dry-run", "--config", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scheduler.anonymous_results.retention"), "{stderr}");
}

/// Commits `count` one-file results kept for `ttl`.
async fn commit_many(fx: &Fixture, prefix: &str, count: usize, ttl: Duration) {
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |i| async move {
            let request = proto::AllocateRequest {
                query_id: format!("{prefix}-{i}"),
                ttl: Some(ttl.try_into().unwrap()),
                ..Default::default()
            };
            let allocated = fx.client().allocate(request).await.unwrap();
            fx.write(&allocated, "part-0.parquet", b"x").await;
            fx.commit(&allocated, vec![]).await.unwrap();
        })
        .await;
}

/// The replica that prepares the store of `fx` for the measured pass (commits the results kept, runs the
/// passes before), on `clock`: `fx` itself, or on s3s-fs a second replica over the local backend in the
/// folder s3s-fs keeps the bucket in. s3s-fs serves a bucket's files as they lie on disk, under the keys
/// both backends use, but walks the whole bucket for each listing: a thousand results committed and
/// scheduled through it (a listing or two each) take minutes on two cores, and time out on a loaded one.
async fn preparer(fx: &Fixture, clock: &Arc<ManualClock>) -> Option<Fixture> {
    let TestStore::S3 { server, bucket, prefix, .. } = &fx.store else { return None };
    let folder = server.root()?.join(bucket).join(prefix);
    std::fs::create_dir_all(&folder).unwrap();
    let toml = format!(
        "[scheduler]\nallow_local_sinks = true\nanonymous_results.local.path = {:?}\n\
         anonymous_results.max_retention = \"30d\"\nanonymous_results.prune_interval = \"1000d\"\n",
        folder.display().to_string()
    );
    let config = Config::from_toml(&toml).unwrap();
    // Its sinks are folders: a worker's writes go to the sink's path, whatever this store.
    Some(Fixture { store: TestStore::local(), server: TestServer::start_with_clock(&config, clock.clone()).await })
}

/// The storage requests of a pass that deletes `expiring` results among `expiring + kept` stored ones.
async fn requests_to_prune(store: TestStore, expiring: usize, kept: usize) -> u64 {
    let clock = Arc::new(ManualClock::new());
    // Only the passes this test runs: the service's own pruner would add its requests to the count.
    let location = "max_retention = \"30d\"\nprune_interval = \"1000d\"";
    let config = Config::from_toml(&store.config_toml_with(location, "")).unwrap();
    let fx = Fixture { store, server: TestServer::start_with_clock(&config, clock.clone()).await };
    let helper = preparer(&fx, &clock).await;
    let prepared = helper.as_ref().unwrap_or(&fx);
    // The measured replica committed the results it deletes: it has their outcomes cached, as in service.
    commit_many(&fx, "expiring", expiring, 2 * HOUR).await;
    commit_many(prepared, "kept", kept, 24 * HOUR).await;
    // The seals' index entries (and their journal entries) are written just after the answers.
    fx.server.service.deletions_done().await;
    prepared.server.service.deletions_done().await;
    // A first pass moves every new result into the expiry index, as the pruner does once per result.
    // A result the pass could not handle (a store server on cores shared with the whole suite can fail a
    // request) is the next pass's, as in the service.
    let mut scheduled = 0;
    for _ in 0..5 {
        let report = prepared.server.service.prune(false).await.unwrap();
        scheduled += report.scheduled;
        if report.failed == 0 {
            break;
        }
        eprintln!("the first pass could not handle {} results; another pass takes them", report.failed);
    }
    assert_eq!(scheduled, expiring + kept);
    // A pass an hour later deletes the change journal's entries of all those calls (what the pass measured
    // below deletes of it grows with what happened an hour before it, not with what is stored).
    clock.advance(HOUR + Duration::from_secs(60));
    let cleaned = prepared.server.service.prune(false).await.unwrap();
    assert!(cleaned.journal >= expiring + kept && cleaned.expired.is_empty(), "{cleaned:?}");
    if let Some(helper) = helper {
        helper.stop().await;
    }
    clock.advance(2 * HOUR);
    let before = fx.server.storage_requests();
    let report = fx.server.service.prune(false).await.unwrap();
    let requests = fx.server.storage_requests() - before;
    assert_eq!((report.expired.len(), report.failed), (expiring, 0), "{report:?}");
    fx.stop().await;
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_costs_as_much_with_ten_times_the_results_stored() {
    let few = requests_to_prune(TestStore::local(), 20, 200).await;
    let many = requests_to_prune(TestStore::local(), 20, 2_000).await;
    assert_eq!(many, few, "deleting 20 results cost {few} requests among 220 stored, {many} among 2,020");
}

/// On S3 a listing costs a request per 1,000 keys, so a pass that listed every stored result would cost
/// more with 1,000 more results stored. And a pass deletes at the store's speed: per result, the listing of
/// its records, the read of its query record and the listing of its sink (its outcome is cached by the
/// replica that committed it; its result-index entries are named by its records, unlisted); for the whole
/// pass, its two listings of the expiry index, then three batch deletes (the files and records, the
/// outcomes, the expiry-index entries), the change journal's entry for the batch, and the listing of the
/// journal's entries old enough to go (none here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_on_s3_costs_as_much_with_a_thousand_more_results_stored() {
    let Some(store) = TestStore::s3s_fs().await else { return };
    let few = requests_to_prune(store, 20, 0).await;
    assert_eq!(few, 2 + 20 * 3 + 3 + 1 + 1, "the requests of a pass that deletes 20 results");
    let Some(store) = TestStore::s3s_fs().await else { return };
    let many = requests_to_prune(store, 20, 1_100).await;
    assert_eq!(many, few, "deleting 20 results cost {few} requests among 20 stored, {many} among 1,120");
}

/// A service over a fresh local store keeping results an hour, on a clock moved by hand, whose own pruner
/// does not run (the test runs the passes).
async fn pruned_by_hand() -> (Arc<ManualClock>, Fixture) {
    let clock = Arc::new(ManualClock::new());
    let store = TestStore::local();
    let location = "retention = \"1h\"\nprune_interval = \"1000d\"";
    let config = Config::from_toml(&store.config_toml_with(location, "")).unwrap();
    let fx = Fixture { store, server: TestServer::start_with_clock(&config, clock.clone()).await };
    (clock, fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_falls_behind_takes_a_bounded_batch_and_says_more_is_left() {
    use anonymous_results::results::PASS_LIMIT;
    let (clock, fx) = pruned_by_hand().await;
    let total = PASS_LIMIT + 100;
    commit_many(&fx, "behind", total, HOUR).await;
    clock.advance(2 * HOUR);
    let first = fx.server.service.prune(false).await.unwrap();
    assert!(first.more, "{} pending and due were left for later", total - PASS_LIMIT);
    assert!(first.scheduled <= PASS_LIMIT && first.expired.len() <= PASS_LIMIT, "{first:?}");
    let mut expired = first.expired.len();
    for _ in 0..5 {
        let report = fx.server.service.prune(false).await.unwrap();
        expired += report.expired.len();
        if !report.more {
            break;
        }
    }
    assert_eq!(expired, total, "every result goes, over a few passes");
    let last = fx.server.service.prune(false).await.unwrap();
    assert!(!last.more && last.expired.is_empty(), "{last:?}");
    fx.stop().await;
}

/// More entries the pruner cannot handle than one pass reads (records another writer broke, sorted before
/// everything else) hold up no other result: the next pass starts where the last one stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_stay_do_not_hold_up_the_ones_after_them() {
    use anonymous_results::results::PASS_LIMIT;
    let (clock, fx) = pruned_by_hand().await;
    let allocated = fx.allocate("after-the-broken-ones").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    // Ids starting with a digit sort before every id the service issues (which start with a letter).
    let pending = fx.store.local_root().unwrap().join("_control/pending");
    for i in 0..PASS_LIMIT + 10 {
        std::fs::write(pending.join(format!("2{i:025}.json")), b"not a record").unwrap();
    }
    clock.advance(2 * HOUR);
    let mut expired = Vec::new();
    for _ in 0..3 {
        let report = fx.server.service.prune(false).await.expect("a pass");
        assert_eq!(report.failed, 0, "{report:?}");
        expired.extend(report.expired.iter().map(ToString::to_string));
    }
    assert_eq!(expired, vec![allocated.result_id.clone()], "the result after the broken records was pruned");
    fx.stop().await;
}

/// `prune --dry-run` lists what the sweep would remove (a temporary file a crash left, a claim whose
/// allocation is gone) once it is old enough, changing nothing; `prune` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_lists_and_removes_what_the_sweep_finds() {
    let store = TestStore::local();
    let root = store.local_root().unwrap();
    let service = "storage_timeout = \"1s\"\n";
    let text = store.config_toml_with("commit_timeout = \"1s\"", service);
    let config = Config::from_toml(&text).unwrap();
    let fx = Fixture { server: TestServer::start(&config).await, store };
    let orphan = fx.allocate("orphan").await;
    let alive = fx.allocate("alive").await;
    fx.write(&orphan, "part-0.parquet", b"x").await;
    std::fs::remove_file(root.join("_control/pending").join(format!("{}.json", orphan.result_id))).unwrap();
    let temp = "_control/queries/.anonymous-results-tmp-7-0-00000000000000aa";
    std::fs::write(root.join(temp), b"cut short").unwrap();
    let Fixture { server, store: _store } = fx;
    server.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, &text).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (ok, stdout) = prune(&file, &["--dry-run"]);
    assert!(ok, "{stdout}");
    assert_eq!(listed(&stdout, "temporary"), [temp], "{stdout}");
    let claims = listed(&stdout, "orphan-claim");
    assert!(claims.len() == 1 && claims[0].ends_with(&format!("\t{}", orphan.result_id)), "{stdout}");
    assert!(stdout.contains("would sweep 1 temporary file(s) and 1 claim(s)"), "{stdout}");
    // The orphan's result-index folder names no result either; the one of a result still stored stays.
    assert_eq!(listed(&stdout, "stray-index"), [orphan.result_id.as_str()], "{stdout}");
    // A folder per hour of creation, and in it a folder per result.
    let index_of = |id: &str| {
        let hours = std::fs::read_dir(root.join("_control/index")).unwrap();
        hours.filter_map(Result::ok).any(|hour| {
            let folders = std::fs::read_dir(hour.path()).unwrap();
            folders.filter_map(Result::ok).any(|folder| folder.file_name().to_string_lossy().ends_with(id))
        })
    };
    assert!(root.join(temp).exists() && root.join(&orphan.result_id).exists(), "a dry run removed something");
    assert!(index_of(&orphan.result_id), "a dry run removed something");
    let (ok, stdout) = prune(&file, &[]);
    assert!(ok && stdout.contains("swept 1 temporary file(s) and 1 claim(s)"), "{stdout}");
    assert!(!root.join(temp).exists() && !root.join(&orphan.result_id).exists(), "{stdout}");
    assert!(!index_of(&orphan.result_id) && index_of(&alive.result_id), "{stdout}");
}

/// The change journal keeps an entry an hour (`JOURNAL_KEPT`): a pass deletes the older ones, the oldest
/// first, and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_deletes_journal_entries_older_than_it_keeps_them() {
    let (clock, fx) = pruned_by_hand().await;
    commit_many(&fx, "early", 3, 10 * HOUR).await;
    fx.server.service.deletions_done().await;
    let early = fx.store.keys_under("_control/changes/").await;
    assert_eq!(early.len(), 3, "one a result: its allocation and commit, at one instant of the clock: {early:?}");
    clock.advance(HOUR / 2);
    commit_many(&fx, "late", 2, 10 * HOUR).await;
    fx.server.service.deletions_done().await;
    let all = fx.store.keys_under("_control/changes/").await;
    clock.advance(HOUR * 3 / 4);
    let dry = fx.server.service.prune(true).await.unwrap();
    assert_eq!(dry.journal, early.len(), "{dry:?}");
    assert_eq!(fx.store.keys_under("_control/changes/").await, all, "a dry run deleted nothing");
    let report = fx.server.service.prune(false).await.unwrap();
    assert_eq!(report.journal, early.len(), "{report:?}");
    let left = fx.store.keys_under("_control/changes/").await;
    let later: Vec<String> = all.into_iter().filter(|key| !early.contains(key)).collect();
    assert_eq!(left, later, "the entries younger than an hour stay");
}
