//! What the service counts, for Prometheus: calls by method and code with their latency, results through
//! their life, bytes committed, and storage failures by kind. Each [`crate::Service`] owns its registry and
//! hands it to the parts that count (so that two services in one process count apart); it is kept in
//! atomics (no lock on the hot path), rendered in the Prometheus text format by [`Metrics::render`] and
//! served on `metrics_listen` by [`exporter`].
//!
//! The rendering is written here rather than taken from the `prometheus-client` crate: it is a few dozen
//! lines for a fixed set of series, tested below, and keeps the hot path to one atomic add per counter.

pub mod downloads;
pub mod exporter;
pub mod families;
pub mod usage;

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use anonymous_results_client::code_name;
use tonic::Code;

use crate::auth::Rpc;

/// The gRPC codes, 0 (OK) to 16 (UNAUTHENTICATED).
const CODES: usize = 17;

/// The latency histogram's upper bounds, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One (method, code) series: its count, latency sum and histogram.
struct RpcSeries {
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Calls at or under each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
}

impl RpcSeries {
    const fn new() -> Self {
        Self { count: AtomicU64::new(0), sum_micros: AtomicU64::new(0), buckets: [const { AtomicU64::new(0) }; 14] }
    }
}

/// How a storage request failed, as the `kind` label says it.
const STORAGE_ERROR_KINDS: [&str; 3] = ["io", "unavailable", "timeout"];

/// What the sweep removes, as the `kind` label says it.
const SWEPT_KINDS: [&str; 3] = ["temporary", "orphan_claim", "deletion"];

/// The storage requests of one method's calls, and the round trips the calls waited on.
struct StorageSeries {
    requests: AtomicU64,
    round_trips: AtomicU64,
}

/// The counters of one process.
pub struct Metrics {
    rpcs: [[RpcSeries; CODES]; Rpc::ALL.len()],
    rpc_storage: [StorageSeries; Rpc::ALL.len()],
    allocated: AtomicU64,
    committed: AtomicU64,
    aborted: AtomicU64,
    released: AtomicU64,
    expired: AtomicU64,
    abandoned: AtomicU64,
    /// Results expired to make room in a full budget.
    budget_expired: AtomicU64,
    committed_bytes: AtomicU64,
    corrupt_records: AtomicU64,
    request_timeouts: AtomicU64,
    /// The last pruning pass that finished: when (seconds since 1970), how long it took (microseconds), and
    /// the due entries it found.
    prune_last_pass: AtomicU64,
    prune_pass_micros: AtomicU64,
    prune_backlog: AtomicU64,
    prune_failures: AtomicU64,
    swept: [AtomicU64; SWEPT_KINDS.len()],
    storage_errors: [AtomicU64; STORAGE_ERROR_KINDS.len()],
    /// What the download routes count.
    pub downloads: downloads::DownloadMetrics,
    /// What is stored, as the last usage refresh read it.
    pub usage: usage::UsageGauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every count at zero.
    pub fn new() -> Self {
        Self {
            rpcs: [const { [const { RpcSeries::new() }; CODES] }; Rpc::ALL.len()],
            rpc_storage: [const { StorageSeries { requests: AtomicU64::new(0), round_trips: AtomicU64::new(0) } };
                Rpc::ALL.len()],
            allocated: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            released: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            budget_expired: AtomicU64::new(0),
            committed_bytes: AtomicU64::new(0),
            corrupt_records: AtomicU64::new(0),
            request_timeouts: AtomicU64::new(0),
            prune_last_pass: AtomicU64::new(0),
            prune_pass_micros: AtomicU64::new(0),
            prune_backlog: AtomicU64::new(0),
            prune_failures: AtomicU64::new(0),
            swept: [const { AtomicU64::new(0) }; SWEPT_KINDS.len()],
            storage_errors: [const { AtomicU64::new(0) }; STORAGE_ERROR_KINDS.len()],
            downloads: downloads::DownloadMetrics::default(),
            usage: usage::UsageGauges::default(),
        }
    }

    /// One answered call: its method, code and latency (for Watch, until the stream opened).
    pub fn rpc(&self, method: Rpc, code: Code, latency: Duration) {
        let series = &self.rpcs[method as usize][(code as usize).min(CODES - 1)];
        series.count.fetch_add(1, Relaxed);
        series.sum_micros.fetch_add(latency.as_micros().try_into().unwrap_or(u64::MAX), Relaxed);
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            series.buckets[bucket].fetch_add(1, Relaxed);
        }
    }

    /// What one call of `method` made of storage: its requests, and the round trips it waited on one after
    /// another (the depth of its critical path).
    pub fn rpc_storage(&self, method: Rpc, traced: crate::storage::trace::Traced) {
        let series = &self.rpc_storage[method as usize];
        series.requests.fetch_add(traced.requests as u64, Relaxed);
        series.round_trips.fetch_add(traced.depth as u64, Relaxed);
    }

    /// The storage requests and round trips counted for `method` so far (for tests and benchmarks that hold a
    /// call's depth).
    pub fn storage_of(&self, method: Rpc) -> (u64, u64) {
        let series = &self.rpc_storage[method as usize];
        (series.requests.load(Relaxed), series.round_trips.load(Relaxed))
    }

    /// A new allocation (not an answered repeat).
    pub fn allocated(&self) {
        self.allocated.fetch_add(1, Relaxed);
    }

    /// A result sealed by this process (not an answered repeat), with its bytes.
    pub fn committed(&self, bytes: u64) {
        self.committed.fetch_add(1, Relaxed);
        self.committed_bytes.fetch_add(bytes, Relaxed);
    }

    /// A result aborted by this process.
    pub fn aborted(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }

    /// A result released by this process.
    pub fn released(&self) {
        self.released.fetch_add(1, Relaxed);
    }

    /// Results the pruner deleted: `expired` past their TTL (an aborted one: `commit_timeout` after the abort),
    /// `abandoned` past their commit deadline.
    pub fn pruned(&self, expired: usize, abandoned: usize) {
        self.expired.fetch_add(expired as u64, Relaxed);
        self.abandoned.fetch_add(abandoned as u64, Relaxed);
    }

    /// A pruning pass that ended at `ended` (seconds since 1970) after `took`, having found `backlog` due
    /// entries of the expiry index.
    pub fn prune_pass(&self, ended: u64, took: Duration, backlog: usize) {
        self.prune_last_pass.store(ended, Relaxed);
        self.prune_pass_micros.store(took.as_micros().try_into().unwrap_or(u64::MAX), Relaxed);
        self.prune_backlog.store(backlog as u64, Relaxed);
    }

    /// A pruning pass that failed.
    pub fn prune_failed(&self) {
        self.prune_failures.fetch_add(1, Relaxed);
    }

    /// A result expired to make room in a full budget (`when_full = "expire-oldest"`).
    pub fn pruned_for_budget(&self) {
        self.budget_expired.fetch_add(1, Relaxed);
    }

    /// A stored record that could not be interpreted (the pruner skips its result).
    pub fn corrupt_record(&self) {
        self.corrupt_records.fetch_add(1, Relaxed);
    }

    /// A call whose request did not arrive whole within `request_timeout`.
    pub fn request_timeout(&self) {
        self.request_timeouts.fetch_add(1, Relaxed);
    }

    /// Leftovers the sweep removed: temporary files, and claims without an allocation.
    pub fn swept(&self, temporaries: usize, orphan_claims: usize, deletions: usize) {
        self.swept[0].fetch_add(temporaries as u64, Relaxed);
        self.swept[1].fetch_add(orphan_claims as u64, Relaxed);
        self.swept[2].fetch_add(deletions as u64, Relaxed);
    }

    /// A failed storage request, of `kind` (`io`, `unavailable` or `timeout`: see
    /// [`crate::storage::StorageError::failure_kind`]); another kind is not counted.
    pub fn storage_error(&self, kind: &str) {
        if let Some(at) = STORAGE_ERROR_KINDS.iter().position(|known| *known == kind) {
            self.storage_errors[at].fetch_add(1, Relaxed);
        }
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        use families::*;
        let mut out = String::new();
        self.render_rpcs(&mut out);
        let counters = [
            (&ALLOCATED, &self.allocated),
            (&COMMITTED, &self.committed),
            (&ABORTED, &self.aborted),
            (&RELEASED, &self.released),
            (&COMMITTED_BYTES, &self.committed_bytes),
            (&CORRUPT_RECORDS, &self.corrupt_records),
            (&REQUEST_TIMEOUTS, &self.request_timeouts),
        ];
        for (family, value) in counters {
            family.single(&mut out, value.load(Relaxed));
        }
        let pruned = [("expired", &self.expired), ("abandoned", &self.abandoned), ("budget", &self.budget_expired)];
        PRUNED.by(&mut out, "reason", loaded(pruned));
        PRUNE_LAST_PASS.single(&mut out, self.prune_last_pass.load(Relaxed));
        PRUNE_PASS_DURATION.single(&mut out, self.prune_pass_micros.load(Relaxed) as f64 / 1e6);
        PRUNE_BACKLOG.single(&mut out, self.prune_backlog.load(Relaxed));
        PRUNE_FAILURES.single(&mut out, self.prune_failures.load(Relaxed));
        TRACE_SPANS_DROPPED.single(&mut out, crate::telemetry::traces::dropped());
        SWEPT.by(&mut out, "kind", loaded(SWEPT_KINDS.into_iter().zip(&self.swept)));
        STORAGE_ERRORS.by(&mut out, "kind", loaded(STORAGE_ERROR_KINDS.into_iter().zip(&self.storage_errors)));
        self.render_rpc_storage(&mut out);
        self.downloads.render(&mut out);
        self.usage.render(&mut out);
        out
    }

    /// Per method: the storage requests its calls made, and the round trips they waited on one after another.
    fn render_rpc_storage(&self, out: &mut String) {
        let by_method = |value: fn(&StorageSeries) -> &AtomicU64| {
            Rpc::ALL
                .into_iter()
                .map(move |method| (method.name(), value(&self.rpc_storage[method as usize]).load(Relaxed)))
        };
        families::RPC_STORAGE_REQUESTS.by(out, "method", by_method(|series| &series.requests));
        families::RPC_STORAGE_ROUND_TRIPS.by(out, "method", by_method(|series| &series.round_trips));
    }

    /// The call counter and the latency histogram, a series per (method, code) that has seen a call.
    fn render_rpcs(&self, out: &mut String) {
        let (count, latency) = (&families::RPC_REQUESTS, &families::RPC_DURATION);
        let series = || {
            Rpc::ALL.iter().flat_map(|method| {
                self.rpcs[*method as usize].iter().enumerate().filter_map(move |(code, series)| {
                    let calls = series.count.load(Relaxed);
                    (calls > 0).then(|| (method.name(), code_name(Code::from(code as i32)), calls, series))
                })
            })
        };
        count.header(out);
        for (method, code, calls, _) in series() {
            count.sample(out, &[("method", method), ("code", code)], calls);
        }
        latency.header(out);
        let (bucket, sum, total) =
            (format!("{}_bucket", latency.name), format!("{}_sum", latency.name), format!("{}_count", latency.name));
        for (method, code, calls, series) in series() {
            let labels = [("method", method), ("code", code)];
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(&series.buckets) {
                cumulative += count.load(Relaxed);
                let le = bound.to_string();
                latency.sample_of(&bucket, out, &[labels[0], labels[1], ("le", &le)], cumulative);
            }
            latency.sample_of(&bucket, out, &[labels[0], labels[1], ("le", "+Inf")], calls);
            latency.sample_of(&sum, out, &labels, series.sum_micros.load(Relaxed) as f64 / 1e6);
            latency.sample_of(&total, out, &labels, calls);
        }
    }
}

/// Each counter's value, by its label's value.
fn loaded<'a>(counters: impl IntoIterator<Item = (&'a str, &'a AtomicU64)>) -> impl Iterator<Item = (&'a str, u64)> {
    counters.into_iter().map(|(value, counter)| (value, counter.load(Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lands_in_its_series_and_the_buckets_at_or_above_its_latency() {
        let metrics = Metrics::new();
        metrics.rpc(Rpc::Resolve, Code::Ok, Duration::from_millis(3));
        metrics.rpc(Rpc::Resolve, Code::Ok, Duration::from_millis(30));
        metrics.rpc(Rpc::Commit, Code::FailedPrecondition, Duration::from_secs(20));
        let text = metrics.render();
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        has("anonymous_results_rpc_requests_total{method=\"Resolve\",code=\"OK\"} 2");
        has("anonymous_results_rpc_requests_total{method=\"Commit\",code=\"FAILED_PRECONDITION\"} 1");
        has("anonymous_results_rpc_duration_seconds_bucket{method=\"Resolve\",code=\"OK\",le=\"0.0025\"} 0");
        has("anonymous_results_rpc_duration_seconds_bucket{method=\"Resolve\",code=\"OK\",le=\"0.005\"} 1");
        has("anonymous_results_rpc_duration_seconds_bucket{method=\"Resolve\",code=\"OK\",le=\"0.05\"} 2");
        has("anonymous_results_rpc_duration_seconds_sum{method=\"Resolve\",code=\"OK\"} 0.033");
        // Slower than every bound: only in +Inf.
        has(
            "anonymous_results_rpc_duration_seconds_bucket{method=\"Commit\",code=\"FAILED_PRECONDITION\",le=\"10\"} 0",
        );
        has(
            "anonymous_results_rpc_duration_seconds_bucket{method=\"Commit\",code=\"FAILED_PRECONDITION\",le=\"+Inf\"} 1",
        );
        let allocate = "anonymous_results_rpc_duration_seconds_count{method=\"Allocate\"";
        assert!(!text.contains(allocate), "a series with no call is not rendered:\n{text}");
    }

    /// The families rendered are the ones declared, in order and of their type; each series is named as its
    /// family says, with its labels.
    #[test]
    fn what_is_rendered_is_what_is_declared() {
        let metrics = Metrics::new();
        metrics.rpc(Rpc::Allocate, Code::Ok, Duration::from_millis(1));
        metrics.prune_pass(1_700_000_000, Duration::from_millis(1500), 12);
        metrics.usage.set(usage::UsageFigures {
            by_state: vec![("committed", 1, 2)],
            budgets: vec![("max_stored_bytes", 10, 2)],
            as_of_seconds: 1,
        });
        let text = metrics.render();
        let typed: Vec<(&str, &str)> =
            text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' ')).collect();
        let declared: Vec<(&str, &str)> =
            families::ALL.iter().map(|family| (family.name, family.kind.as_str())).collect();
        assert_eq!(typed, declared);
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let family = families::ALL
                .iter()
                .find(|family| family.series_names().iter().any(|declared| declared == name))
                .unwrap_or_else(|| panic!("`{name}` is not declared"));
            let labels: Vec<&str> = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|label| Some(label.split_once('=')?.0))
                .filter(|label| *label != "le")
                .collect();
            assert_eq!(labels, family.labels, "{line}");
        }
        assert!(text.contains("\nanonymous_results_prune_pass_duration_seconds 1.5\n"), "{text}");
        assert!(text.contains("\nanonymous_results_prune_backlog 12\n"), "{text}");
    }

    #[test]
    fn each_methods_storage_requests_and_round_trips_are_summed() {
        use crate::storage::trace::Traced;
        let metrics = Metrics::new();
        metrics.rpc_storage(Rpc::Release, Traced { requests: 5, depth: 2 });
        metrics.rpc_storage(Rpc::Release, Traced { requests: 2, depth: 1 });
        assert_eq!(metrics.storage_of(Rpc::Release), (7, 3));
        let text = metrics.render();
        assert!(text.contains("anonymous_results_rpc_storage_requests_total{method=\"Release\"} 7\n"), "{text}");
        assert!(text.contains("anonymous_results_rpc_storage_round_trips_total{method=\"Release\"} 3\n"), "{text}");
        assert!(text.contains("anonymous_results_rpc_storage_round_trips_total{method=\"Allocate\"} 0\n"), "{text}");
    }

    #[test]
    fn only_storage_failures_are_counted_as_errors() {
        use crate::storage::{StorageError, StorageLocation};
        let metrics = Metrics::new();
        let timeout = StorageError::Timeout { location: StorageLocation::Local, timeout: Duration::from_secs(1) };
        for error in
            [StorageError::NotFound { key: "k".into() }, StorageError::AlreadyExists { key: "k".into() }, timeout]
        {
            if let Some(kind) = error.failure_kind() {
                metrics.storage_error(kind);
            }
        }
        let text = metrics.render();
        assert!(text.contains("anonymous_results_storage_errors_total{kind=\"timeout\"} 1\n"), "{text}");
        assert!(text.contains("anonymous_results_storage_errors_total{kind=\"io\"} 0\n"), "{text}");
    }
}
