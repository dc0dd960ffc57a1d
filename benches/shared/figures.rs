//! What the storage-cost benchmarks measure and how they judge it: a call's (or a pass's) storage requests
//! and wall time, the ratios of two, and verdicts that fail the run.

use std::time::Duration;

/// A call or a pass, measured: the storage requests it made and the time it took.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub requests: u64,
    pub time: Duration,
}

impl Cost {
    /// This cost against `baseline`'s: the ratio of the requests, and that of the times.
    pub fn ratios_to(self, baseline: Cost) -> (f64, f64) {
        let requests = self.requests as f64 / baseline.requests.max(1) as f64;
        (requests, self.time.as_secs_f64() / baseline.time.as_secs_f64().max(1e-9))
    }
}

/// A run's verdicts, each printed PASS or FAIL as it is made.
#[derive(Default)]
pub struct Verdicts {
    failed: bool,
}

impl Verdicts {
    pub fn judge(&mut self, name: &str, pass: bool, detail: String) {
        println!("{} {name}: {detail}", if pass { "PASS" } else { "FAIL" });
        self.failed |= !pass;
    }

    /// Ends the run: with exit status 1 if a verdict failed.
    pub fn finish(self) {
        if self.failed {
            std::process::exit(1);
        }
    }
}
