//! The gauges of what is stored, as this replica's last usage refresh found it (`results/usage.rs`): results
//! and bytes by state, each budget and its use, and when the figures were read.

use std::sync::Mutex;

/// The figures of one refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFigures {
    /// By state (`allocated`, `committed`, `aborted`, `expired`): results and bytes.
    pub by_state: Vec<(&'static str, u64, u64)>,
    /// By budget (the key that sets it): its limit, and the bytes it holds (for the per-label budget, those of
    /// the fullest value).
    pub budgets: Vec<(&'static str, u64, u64)>,
    /// When they were read, in seconds since 1970.
    pub as_of_seconds: u64,
}

/// The gauges, as last set.
#[derive(Debug, Default)]
pub struct UsageGauges {
    figures: Mutex<Option<UsageFigures>>,
}

impl UsageGauges {
    pub fn set(&self, figures: UsageFigures) {
        *self.figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(figures);
    }

    /// The gauges, once set, in the text exposition format.
    pub fn render(&self, out: &mut String) {
        use super::families::{BUDGET, BUDGET_USED, STORED_BYTES, STORED_RESULTS, USAGE_AS_OF};
        let figures = self.figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(figures) = figures else { return };
        STORED_RESULTS.header(out);
        for (state, results, _) in &figures.by_state {
            STORED_RESULTS.sample(out, &[("state", state)], results);
        }
        STORED_BYTES.header(out);
        for (state, _, bytes) in &figures.by_state {
            STORED_BYTES.sample(out, &[("state", state)], bytes);
        }
        if !figures.budgets.is_empty() {
            BUDGET.header(out);
            for (budget, max, _) in &figures.budgets {
                BUDGET.sample(out, &[("budget", budget)], max);
            }
            BUDGET_USED.header(out);
            for (budget, _, bytes) in &figures.budgets {
                BUDGET_USED.sample(out, &[("budget", budget)], bytes);
            }
        }
        USAGE_AS_OF.header(out);
        USAGE_AS_OF.sample(out, &[], figures.as_of_seconds);
    }
}
