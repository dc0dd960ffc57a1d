//! `anonymous-results usage`: what a running service stores and how full its byte budgets are (GetUsage,
//! through the client crate), a table for people and `--json` (one JSON object) for scripts.

use std::process::ExitCode;

use anonymous_results::telemetry::Escaped;
use anonymous_results_client::proto::{self, ResultState};

use super::{
    connection::{Connection, run as run_to_end},
    results::{instant, state_name},
};

/// Asks the service `connection` names what it stores.
pub fn run(connection: Connection, json: bool) -> ExitCode {
    run_to_end(async move {
        let client = connection.connect().await?;
        let usage = client.get_usage().await.map_err(|e| format!("{}: {e}", connection.addr))?;
        match json {
            true => println!("{}", as_json(&usage)),
            false => print_table(&usage),
        }
        Ok(())
    })
}

fn state_of(usage: &proto::StateUsage) -> ResultState {
    ResultState::try_from(usage.state).unwrap_or(ResultState::Unspecified)
}

/// How full a budget is, in percent, to a tenth.
fn fullness(budget: &proto::BudgetUsage) -> String {
    match budget.max_bytes {
        0 => "-".to_owned(),
        max => format!("{:.1}%", budget.used_bytes as f64 * 100.0 / max as f64),
    }
}

/// The budget's name: its key, and for a per-label one the label's value.
fn budget_name(budget: &proto::BudgetUsage) -> String {
    match budget.label_key.is_empty() {
        true => budget.key.clone(),
        false => format!("{} {}={}", budget.key, Escaped(&budget.label_key), Escaped(&budget.label_value)),
    }
}

fn print_table(usage: &proto::GetUsageResponse) {
    println!("STATE\tRESULTS\tBYTES");
    for state in &usage.states {
        println!("{}\t{}\t{}", state_name(state_of(state)), state.results, state.bytes);
    }
    if !usage.budgets.is_empty() {
        println!("BUDGET\tRESULTS\tBYTES\tMAX_BYTES\tFULL");
        for budget in &usage.budgets {
            let name = budget_name(budget);
            println!(
                "{name}\t{}\t{}\t{}\t{}",
                budget.used_results,
                budget.used_bytes,
                budget.max_bytes,
                fullness(budget)
            );
        }
    }
    if usage.label_values > 0 {
        println!("label values holding committed results: {}", usage.label_values);
    }
    if usage.max_result_bytes > 0 {
        println!("max_result_bytes: {}", usage.max_result_bytes);
    }
    println!("as of {}", instant(usage.as_of));
}

fn as_json(usage: &proto::GetUsageResponse) -> serde_json::Value {
    let states: serde_json::Map<String, serde_json::Value> = usage
        .states
        .iter()
        .map(|state| {
            let figures = serde_json::json!({ "results": state.results, "bytes": state.bytes });
            (state_name(state_of(state)).to_owned(), figures)
        })
        .collect();
    let budgets: Vec<serde_json::Value> = usage
        .budgets
        .iter()
        .map(|budget| {
            serde_json::json!({
                "key": budget.key,
                "label_key": budget.label_key,
                "label_value": budget.label_value,
                "max_bytes": budget.max_bytes,
                "used_results": budget.used_results,
                "used_bytes": budget.used_bytes,
            })
        })
        .collect();
    serde_json::json!({
        "states": states,
        "budgets": budgets,
        "label_values": usage.label_values,
        "max_result_bytes": usage.max_result_bytes,
        "as_of": instant(usage.as_of),
    })
}
