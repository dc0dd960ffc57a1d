//! The gauges of what is stored, as this replica's last usage refresh found it (`results/usage.rs`): results
//! and bytes by state, each budget and its use, and when the figures were read.

use std::{fmt::Write, sync::Mutex};

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

/// A gauge's name, its help, and its value by state.
type Series<'a> = (&'a str, &'a str, Vec<(&'a str, u64)>);

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
        let figures = self.figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(figures) = figures else { return };
        let series: [Series; 2] = [
            (
                "anonymous_results_stored_results",
                "Results stored, by state (expired: being deleted), as of this replica's last usage refresh.",
                figures.by_state.iter().map(|(state, results, _)| (*state, *results)).collect(),
            ),
            (
                "anonymous_results_stored_bytes",
                "Committed bytes stored, by state (expired: being deleted), as of this replica's last usage refresh.",
                figures.by_state.iter().map(|(state, _, bytes)| (*state, *bytes)).collect(),
            ),
        ];
        for (name, help, values) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (state, value) in values {
                let _ = writeln!(out, "{name}{{state=\"{state}\"}} {value}");
            }
        }
        if !figures.budgets.is_empty() {
            let (limit, used) = ("anonymous_results_budget_bytes", "anonymous_results_budget_used_bytes");
            let _ = writeln!(
                out,
                "# HELP {limit} Each byte budget's limit, by the key that sets it.\n# TYPE {limit} gauge"
            );
            for (budget, max, _) in &figures.budgets {
                let _ = writeln!(out, "{limit}{{budget=\"{budget}\"}} {max}");
            }
            let _ = writeln!(
                out,
                "# HELP {used} The committed bytes each byte budget holds (the per-label budget: its fullest value's).\n# TYPE {used} gauge"
            );
            for (budget, _, bytes) in &figures.budgets {
                let _ = writeln!(out, "{used}{{budget=\"{budget}\"}} {bytes}");
            }
        }
        let name = "anonymous_results_usage_as_of_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When this replica last read what is stored (seconds since 1970): GetUsage and the budgets are as of then.\n# TYPE {name} gauge\n{name} {}",
            figures.as_of_seconds
        );
    }
}
