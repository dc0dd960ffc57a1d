//! The byte budget of the location table (`[scheduler] anonymous_results.max_stored_bytes`, ...): how many
//! bytes of committed results may be kept, in all, in one result and under one value of a label, what happens
//! when a budget is full, and how often each replica refreshes what is stored.

use std::time::Duration;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};

pub(super) const MAX_STORED_BYTES: Key = Key {
    name: "max_stored_bytes",
    kind: Kind::Bytes { min: 1 },
    default: KeyDefault::None,
    meaning: "the most bytes of committed results kept (\"500GiB\", \"2TiB\"); past it Allocate is refused, or the oldest results expire (when_full); unset: no limit",
};
pub(super) const MAX_RESULT_BYTES: Key = Key {
    name: "max_result_bytes",
    kind: Kind::Bytes { min: 1 },
    default: KeyDefault::None,
    meaning: "the most bytes one result may hold: a larger Commit is refused (the result stays allocated, for the worker to abort); unset: no limit",
};
pub(super) const BUDGET_LABEL: Key = Key {
    name: "budget_label",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "a label (\"user\", say) each of whose values has max_stored_bytes_per_label bytes of its own",
};
pub(super) const MAX_STORED_BYTES_PER_LABEL: Key = Key {
    name: "max_stored_bytes_per_label",
    kind: Kind::Bytes { min: 1 },
    default: KeyDefault::None,
    meaning: "the most bytes of committed results kept for one value of budget_label",
};
pub(super) const WHEN_FULL: Key = Key {
    name: "when_full",
    kind: Kind::Choice(&["refuse", "expire-oldest"]),
    default: KeyDefault::Text("refuse"),
    meaning: "what a full budget does: refuse (Allocate is RESOURCE_EXHAUSTED) or expire-oldest (the oldest committed results of that budget are expired to make room)",
};
pub(super) const USAGE_INTERVAL: Key = Key {
    name: "usage_interval",
    kind: Kind::Duration { min: Duration::from_secs(1), max: crate::model::MAX_DURATION, out_of_range: None },
    default: KeyDefault::Duration(Duration::from_secs(60)),
    meaning: "how often each replica refreshes what is stored (GetUsage, the budgets, the gauges) from what changed",
};

pub(super) const KEYS: &[&Key] =
    &[&MAX_STORED_BYTES, &MAX_RESULT_BYTES, &BUDGET_LABEL, &MAX_STORED_BYTES_PER_LABEL, &WHEN_FULL, &USAGE_INTERVAL];

/// What a full budget does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Allocate is refused (`RESOURCE_EXHAUSTED`) until there is room.
    #[default]
    Refuse,
    /// The oldest committed results of the full budget are expired to make room.
    ExpireOldest,
}

/// The byte budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// `max_stored_bytes`: the bytes of committed results not yet deleted, at most. `None`: no limit.
    pub max_stored_bytes: Option<u64>,
    /// `max_result_bytes`: one result's bytes, at most. `None`: no limit.
    pub max_result_bytes: Option<u64>,
    /// `budget_label` and `max_stored_bytes_per_label`: each value of that label has a budget of its own.
    pub per_label: Option<LabelBudget>,
    /// `when_full` (default refuse).
    pub when_full: WhenFull,
    /// `usage_interval` (default 1m): how often each replica refreshes the usage.
    pub usage_interval: Duration,
}

/// A budget for each value of one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelBudget {
    /// The label's key.
    pub label: String,
    /// The bytes each of its values may keep.
    pub max_bytes: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_stored_bytes: None,
            max_result_bytes: None,
            per_label: None,
            when_full: WhenFull::Refuse,
            usage_interval: USAGE_INTERVAL.default_duration(),
        }
    }
}

pub(super) fn parse(location: &mut Table) -> Result<BudgetConfig, ConfigError> {
    let max_stored_bytes = location.bytes(&MAX_STORED_BYTES)?;
    let max_result_bytes = location.bytes(&MAX_RESULT_BYTES)?;
    if let (Some(stored), Some(result)) = (max_stored_bytes, max_result_bytes)
        && result > stored
    {
        return Err(ConfigError::invalid(
            &location.key(MAX_RESULT_BYTES.name),
            format!(
                "is more than `{}` ({}): such a result could never be kept",
                location.key(MAX_STORED_BYTES.name),
                super::bytes::format(stored)
            ),
        ));
    }
    let label = location.text(&BUDGET_LABEL)?;
    let per_label_bytes = location.bytes(&MAX_STORED_BYTES_PER_LABEL)?;
    let per_label = match (label, per_label_bytes) {
        (Some(label), Some(max_bytes)) => {
            crate::model::validate_labels([(&label, &String::new())].into_iter())
                .map_err(|e| ConfigError::invalid(&location.key(BUDGET_LABEL.name), e.to_string()))?;
            Some(LabelBudget { label, max_bytes })
        }
        (None, None) => None,
        (Some(_), None) => {
            let message = format!("needs `{}`, the bytes each of its values may keep", MAX_STORED_BYTES_PER_LABEL.name);
            return Err(ConfigError::invalid(&location.key(BUDGET_LABEL.name), message));
        }
        (None, Some(_)) => {
            let message = format!("needs `{}`, the label whose values it budgets", BUDGET_LABEL.name);
            return Err(ConfigError::invalid(&location.key(MAX_STORED_BYTES_PER_LABEL.name), message));
        }
    };
    let when_full = match location.text(&WHEN_FULL)?.as_deref() {
        Some("expire-oldest") => WhenFull::ExpireOldest,
        _ => WhenFull::Refuse,
    };
    let usage_interval = location.duration(&USAGE_INTERVAL)?.unwrap_or(USAGE_INTERVAL.default_duration());
    Ok(BudgetConfig { max_stored_bytes, max_result_bytes, per_label, when_full, usage_interval })
}
