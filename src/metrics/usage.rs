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
        STORED_RESULTS.by(out, "state", figures.by_state.iter().map(|(state, results, _)| (*state, results)));
        STORED_BYTES.by(out, "state", figures.by_state.iter().map(|(state, _, bytes)| (*state, bytes)));
        if !figures.budgets.is_empty() {
            BUDGET.by(out, "budget", figures.budgets.iter().map(|(budget, max, _)| (*budget, max)));
            BUDGET_USED.by(out, "budget", figures.budgets.iter().map(|(budget, _, used)| (*budget, used)));
        }
        USAGE_AS_OF.single(out, figures.as_of_seconds);
    }
}
