//! The byte budget, checked against this replica's ledger (`usage.rs`), in memory: no storage request.
//!
//! - Allocate is refused (`when_full = "refuse"`) while the committed bytes stored reach `max_stored_bytes`,
//!   or those of its value of the budget label reach `max_stored_bytes_per_label`. What is allocated and not
//!   committed yet is not counted: its size is unknown until its Commit.
//! - With `when_full = "expire-oldest"`, nothing is refused: after each refresh and each Commit here that
//!   fills a budget past its limit, the oldest committed results of that budget are expired (released) until
//!   it is back within its limit, each logged and counted (`anonymous_results_pruned_total{reason="budget"}`).
//! - Commit refuses a result larger than `max_result_bytes` (`sealing.rs`).
//!
//! A replica learns of other replicas' commits at its next refresh, so the bytes stored may pass a limit by
//! what all replicas commit during one `usage_interval` (and one refresh), plus what results allocated before
//! the budget filled up commit after.

use tracing::{info, warn};

use super::{
    Error, Results,
    state::State,
    usage::{Key, MAX_LABELS_REPORTED, Tally},
};
use crate::{
    config::{LabelBudget, WhenFull},
    metrics::usage::UsageFigures,
    model::{ResultState, Timestamp, printable},
    storage::Backend,
    telemetry::Escaped,
};

/// What GetUsage answers: what this replica's ledger says is stored, and the budgets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    /// Results and bytes in each state: ALLOCATED, COMMITTED, ABORTED, and EXPIRED (being deleted).
    pub by_state: Vec<(ResultState, Tally)>,
    /// Each budget configured, and how much of it is used.
    pub budgets: Vec<BudgetUse>,
    /// `max_result_bytes`, if set.
    pub max_result_bytes: Option<u64>,
    /// How many values of the budget label committed results carry (the fullest are in `budgets`).
    pub label_values: u64,
    /// When the ledger was last brought up to date with storage.
    pub as_of: Timestamp,
}

/// One budget and its use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetUse {
    /// The key that sets it: `max_stored_bytes` or `max_stored_bytes_per_label`.
    pub key: &'static str,
    /// For a per-label budget, the label's key and value.
    pub label: Option<(String, String)>,
    pub max_bytes: u64,
    /// The committed bytes it holds.
    pub used: Tally,
}

impl BudgetUse {
    /// `max_stored_bytes` of `max` bytes, holding `used`.
    fn stored(max: u64, used: Tally) -> Self {
        Self { key: "max_stored_bytes", label: None, max_bytes: max, used }
    }

    /// The per-label budget of `budget` for the label's `value`, holding `used`.
    fn of_label(budget: &LabelBudget, value: String, used: Tally) -> Self {
        Self {
            key: "max_stored_bytes_per_label",
            label: Some((budget.label.clone(), value)),
            max_bytes: budget.max_bytes,
            used,
        }
    }

    /// How it is named in messages and logs.
    fn name(&self) -> String {
        match &self.label {
            Some((key, value)) => label_budget(key, value),
            None => self.key.to_owned(),
        }
    }
}

/// How the budget of `value` of label `key` is named: `max_stored_bytes_per_label of user="alice"`.
fn label_budget(key: &str, value: &str) -> String {
    format!("max_stored_bytes_per_label of {}=\"{}\"", printable(key), printable(value))
}

impl<B: Backend> Results<B> {
    /// Refuses an Allocate of a result carrying `labels` while a budget it falls under is used up (and full
    /// budgets refuse); before the ledger is read once, nothing is refused.
    pub(super) fn admit(&self, labels: &std::collections::BTreeMap<String, String>) -> Result<(), Error> {
        let budget = &self.usage.budget;
        if budget.when_full != WhenFull::Refuse {
            return Ok(());
        }
        let ledger = self.usage.ledger();
        if !ledger.loaded() {
            return Ok(());
        }
        let mut uses = Vec::new();
        if let Some(max) = budget.max_stored_bytes {
            uses.push(BudgetUse::stored(max, ledger.in_state(ResultState::Committed)));
        }
        if let Some(per_label) = &budget.per_label
            && let Some(value) = labels.get(&per_label.label)
        {
            uses.push(BudgetUse::of_label(per_label, value.clone(), ledger.of_label(value)));
        }
        match uses.into_iter().find(|full| full.used.bytes >= full.max_bytes) {
            Some(full) => Err(Error::BudgetFull {
                budget: full.name(),
                used: full.used.bytes,
                results: full.used.results,
                max: full.max_bytes,
                key: full.key,
            }),
            None => Ok(()),
        }
    }

    /// What this replica's ledger says is stored; `None` before it was read once.
    pub fn usage_report(&self) -> Option<UsageReport> {
        let budget = &self.usage.budget;
        let ledger = self.usage.ledger();
        let as_of = ledger.cursor?;
        let by_state = [ResultState::Allocated, ResultState::Committed, ResultState::Aborted, ResultState::Expired]
            .into_iter()
            .map(|state| (state, ledger.in_state(state)))
            .collect();
        let mut budgets = Vec::new();
        if let Some(max) = budget.max_stored_bytes {
            budgets.push(BudgetUse::stored(max, ledger.in_state(ResultState::Committed)));
        }
        let mut label_values = 0;
        if let Some(per_label) = &budget.per_label {
            let (fullest, count) = ledger.fullest_labels(MAX_LABELS_REPORTED);
            label_values = count as u64;
            budgets.extend(fullest.into_iter().map(|(value, used)| BudgetUse::of_label(per_label, value, used)));
        }
        Some(UsageReport { by_state, budgets, max_result_bytes: budget.max_result_bytes, label_values, as_of })
    }

    /// Hands the ledger's figures to the gauges.
    pub(super) fn publish_usage(&self) {
        let Some(report) = self.usage_report() else { return };
        let state_name = |state: ResultState| match state {
            ResultState::Allocated => "allocated",
            ResultState::Committed => "committed",
            ResultState::Aborted => "aborted",
            ResultState::Expired => "expired",
        };
        let by_state = report.by_state.iter().map(|(state, tally)| (state_name(*state), tally.results, tally.bytes));
        let mut budgets: Vec<(&'static str, u64, u64)> = Vec::new();
        for budget in &report.budgets {
            // The fullest value of the label comes first.
            if !budgets.iter().any(|(key, ..)| *key == budget.key) {
                budgets.push((budget.key, budget.max_bytes, budget.used.bytes));
            }
        }
        if let (Some(per_label), true) = (&self.usage.budget.per_label, report.label_values == 0) {
            budgets.push(("max_stored_bytes_per_label", per_label.max_bytes, 0));
        }
        budgets.extend(report.max_result_bytes.map(|max| ("max_result_bytes", max, 0)));
        let as_of_seconds = report.as_of.millis() / 1000;
        self.metrics.usage.set(UsageFigures { by_state: by_state.collect(), budgets, as_of_seconds });
    }

    /// With `when_full = "expire-oldest"`, expires (in the background) the oldest committed results of each
    /// budget past its limit until it is back within it.
    pub(super) fn make_room(&self) {
        let budget = &self.usage.budget;
        if budget.when_full != WhenFull::ExpireOldest {
            return;
        }
        let taken: Vec<(Key, String)> = {
            let mut ledger = self.usage.ledger();
            if !ledger.loaded() {
                return;
            }
            let mut taken = Vec::new();
            if let Some(max) = budget.max_stored_bytes {
                let used = ledger.in_state(ResultState::Committed).bytes;
                if used > max {
                    let name = "max_stored_bytes".to_owned();
                    taken.extend(ledger.take_oldest(None, used - max).into_iter().map(|key| (key, name.clone())));
                }
            }
            if let Some(per_label) = &budget.per_label {
                for (value, over) in ledger.labels_over(per_label.max_bytes) {
                    let name = label_budget(&per_label.label, &value);
                    taken.extend(ledger.take_oldest(Some(&value), over).into_iter().map(|key| (key, name.clone())));
                }
            }
            taken
        };
        if taken.is_empty() {
            return;
        }
        self.publish_usage();
        let Some(results) = self.me.upgrade() else { return };
        // Those taken are marked as being deleted in the ledger: a run that starts meanwhile takes others.
        tokio::spawn(async move {
            for ((_, id), budget) in taken {
                if let Err(e) = results.expire_for_room(&id, &budget).await {
                    warn!(result_id = %id, "a result to expire for room in {budget} stays: {}", Escaped(&e.detail()));
                }
            }
        });
    }

    /// Expires committed result `id` to make room in `budget`: its deletion begins now and finishes in the
    /// background, as a Release's does.
    async fn expire_for_room(&self, id: &crate::model::ResultId, budget: &str) -> Result<(), Error> {
        let State::Sealed(sealed) = self.state(id, false).await? else { return Ok(()) };
        let info = sealed.outcome.info().clone();
        self.expire(&info, "budget").await?;
        self.metrics.pruned_for_budget();
        info!(result_id = %id, query_id = %Escaped(&info.query_id), budget, "expired to make room in its budget");
        Ok(())
    }
}
