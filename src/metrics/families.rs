//! Every metric family the service exports: its name, type, help and labels. The rendering writes each
//! family's header from here, and the alert rules and the dashboard under `deploy/` are held against this
//! list (`tests/operations.rs`): a metric renamed here fails the test that reads them.

use std::fmt::Write;

/// A family's type, as its `# TYPE` line says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric family: its series share the name, and differ by the values of its labels.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Type,
    pub help: &'static str,
    /// Its labels (a histogram's `le` not included).
    pub labels: &'static [&'static str],
}

impl Family {
    /// Writes its `# HELP` and `# TYPE` lines.
    pub fn header(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", self.name, self.help, self.name, self.kind.as_str());
    }

    /// Writes one of its series: `labels` are `(name, value)` pairs, values written as they are (label values
    /// are the service's own words, never text from outside).
    pub fn sample(&self, out: &mut String, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.sample_of(self.name, out, labels, value);
    }

    /// Writes a series named `name` (a histogram's `_bucket`, `_sum` or `_count`).
    pub fn sample_of(&self, name: &str, out: &mut String, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        out.push_str(name);
        if let Some(((first, first_value), rest)) = labels.split_first() {
            let _ = write!(out, "{{{first}=\"{first_value}\"");
            for (label, label_value) in rest {
                let _ = write!(out, ",{label}=\"{label_value}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    /// Writes its header and its one series, without labels.
    pub fn single(&self, out: &mut String, value: impl std::fmt::Display) {
        self.header(out);
        self.sample(out, &[], value);
    }

    /// Writes its header and a series per value of its one label `label`: `(value, sample)` pairs.
    pub fn by<'a, V: std::fmt::Display>(
        &self,
        out: &mut String,
        label: &str,
        series: impl IntoIterator<Item = (&'a str, V)>,
    ) {
        self.header(out);
        for (value, sample) in series {
            self.sample(out, &[(label, value)], sample);
        }
    }

    /// The names a query may use for its series: its own, and a histogram's `_bucket`, `_sum` and `_count`.
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            Type::Histogram => ["_bucket", "_sum", "_count"].iter().map(|end| format!("{}{end}", self.name)).collect(),
            Type::Counter | Type::Gauge => vec![self.name.to_owned()],
        }
    }
}

const fn family(name: &'static str, kind: Type, labels: &'static [&'static str], help: &'static str) -> Family {
    Family { name, kind, help, labels }
}

use Type::{Counter, Gauge, Histogram};

pub const RPC_REQUESTS: Family = family(
    "anonymous_results_rpc_requests_total",
    Counter,
    &["method", "code"],
    "Calls answered, by method and gRPC code.",
);
pub const RPC_DURATION: Family = family(
    "anonymous_results_rpc_duration_seconds",
    Histogram,
    &["method", "code"],
    "Time to answer a call (Watch: to open its stream), by method and gRPC code.",
);
pub const RPC_STORAGE_REQUESTS: Family = family(
    "anonymous_results_rpc_storage_requests_total",
    Counter,
    &["method"],
    "Storage requests made by calls, by method (background work after an answer not included).",
);
pub const RPC_STORAGE_ROUND_TRIPS: Family = family(
    "anonymous_results_rpc_storage_round_trips_total",
    Counter,
    &["method"],
    "Storage round trips calls waited on one after another, by method: the longest chain of requests each sent after the previous one's answer (divide by calls for the average depth).",
);
pub const ALLOCATED: Family =
    family("anonymous_results_allocated_total", Counter, &[], "Results allocated (repeated Allocates not counted).");
pub const COMMITTED: Family =
    family("anonymous_results_committed_total", Counter, &[], "Results committed (repeated Commits not counted).");
pub const ABORTED: Family = family("anonymous_results_aborted_total", Counter, &[], "Results aborted.");
pub const RELEASED: Family =
    family("anonymous_results_released_total", Counter, &[], "Results released by the scheduler.");
pub const COMMITTED_BYTES: Family =
    family("anonymous_results_committed_bytes_total", Counter, &[], "Bytes of the results committed.");
pub const CORRUPT_RECORDS: Family = family(
    "anonymous_results_corrupt_records_total",
    Counter,
    &[],
    "Stored records the pruner could not interpret, and skipped (each is logged).",
);
pub const REQUEST_TIMEOUTS: Family = family(
    "anonymous_results_request_timeouts_total",
    Counter,
    &[],
    "Calls whose request did not arrive whole within request_timeout (each connection then closed).",
);
pub const PRUNED: Family = family(
    "anonymous_results_pruned_total",
    Counter,
    &["reason"],
    "Results deleted by the pruner: expired (past their TTL; aborted ones commit_timeout after the abort) or abandoned (not committed by their deadline); and budget: expired to make room in a full byte budget.",
);
pub const PRUNE_LAST_PASS: Family = family(
    "anonymous_results_prune_last_pass_seconds",
    Gauge,
    &[],
    "When this replica's last pruning pass ended (seconds since 1970; 0: none yet). Passes that failed are not counted.",
);
pub const PRUNE_PASS_DURATION: Family = family(
    "anonymous_results_prune_pass_duration_seconds",
    Gauge,
    &[],
    "How long this replica's last pruning pass took.",
);
pub const PRUNE_BACKLOG: Family = family(
    "anonymous_results_prune_backlog",
    Gauge,
    &[],
    "Results past their expiry (due entries of the expiry index) that this replica's last pass found, at most 5000 a pass (one that found that many is followed at once by another).",
);
pub const PRUNE_FAILURES: Family = family(
    "anonymous_results_prune_failures_total",
    Counter,
    &[],
    "Pruning passes that failed (storage could not be listed); each is logged and tried again a prune_interval later.",
);
pub const SWEPT: Family = family(
    "anonymous_results_swept_total",
    Counter,
    &["kind"],
    "What the sweep removed: temporary files of writes a crash cut short, claims whose allocation is gone, deletions cut short that it finished.",
);
pub const STORAGE_ERRORS: Family =
    family("anonymous_results_storage_errors_total", Counter, &["kind"], "Failed storage requests, by kind.");
pub const TRACE_SPANS_DROPPED: Family = family(
    "anonymous_results_trace_spans_dropped_total",
    Counter,
    &[],
    "Spans not exported: the export queue was full, or the collector did not take their batch.",
);
pub const DOWNLOADS_IN_FLIGHT: Family =
    family("anonymous_results_downloads_in_flight", Gauge, &["mode"], "Downloads the service is streaming, by mode.");
pub const DOWNLOAD_BYTES: Family = family(
    "anonymous_results_download_bytes_total",
    Counter,
    &["mode"],
    "Bytes of result files streamed to clients, by mode.",
);
pub const DOWNLOAD_REDIRECTS: Family = family(
    "anonymous_results_download_redirects_total",
    Counter,
    &[],
    "Downloads redirected to a freshly signed store URL.",
);
pub const DOWNLOAD_REFUSALS: Family =
    family("anonymous_results_download_refusals_total", Counter, &["reason"], "Download requests refused, by reason.");
pub const STORED_RESULTS: Family = family(
    "anonymous_results_stored_results",
    Gauge,
    &["state"],
    "Results stored, by state (expired: being deleted), as of this replica's last usage refresh.",
);
pub const STORED_BYTES: Family = family(
    "anonymous_results_stored_bytes",
    Gauge,
    &["state"],
    "Committed bytes stored, by state (expired: being deleted), as of this replica's last usage refresh.",
);
pub const BUDGET: Family =
    family("anonymous_results_budget_bytes", Gauge, &["budget"], "Each byte budget's limit, by the key that sets it.");
pub const BUDGET_USED: Family = family(
    "anonymous_results_budget_used_bytes",
    Gauge,
    &["budget"],
    "The committed bytes each byte budget holds (the per-label budget: its fullest value's).",
);
pub const USAGE_AS_OF: Family = family(
    "anonymous_results_usage_as_of_seconds",
    Gauge,
    &[],
    "When this replica last read what is stored (seconds since 1970): GetUsage and the budgets are as of then.",
);

/// Every family, in the order rendered.
pub const ALL: &[&Family] = &[
    &RPC_REQUESTS,
    &RPC_DURATION,
    &ALLOCATED,
    &COMMITTED,
    &ABORTED,
    &RELEASED,
    &COMMITTED_BYTES,
    &CORRUPT_RECORDS,
    &REQUEST_TIMEOUTS,
    &PRUNED,
    &PRUNE_LAST_PASS,
    &PRUNE_PASS_DURATION,
    &PRUNE_BACKLOG,
    &PRUNE_FAILURES,
    &TRACE_SPANS_DROPPED,
    &SWEPT,
    &STORAGE_ERRORS,
    &RPC_STORAGE_REQUESTS,
    &RPC_STORAGE_ROUND_TRIPS,
    &DOWNLOADS_IN_FLIGHT,
    &DOWNLOAD_BYTES,
    &DOWNLOAD_REDIRECTS,
    &DOWNLOAD_REFUSALS,
    &STORED_RESULTS,
    &STORED_BYTES,
    &BUDGET,
    &BUDGET_USED,
    &USAGE_AS_OF,
];
