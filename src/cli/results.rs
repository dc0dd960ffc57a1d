//! `anonymous-results results list | show | release`: what a running service stores, through the client
//! crate (the scheduler's calls: ListResults, Resolve, Release), a table for people and `--json` (a JSON
//! object a line) for scripts. Text that came from a request (query ids, labels, abort reasons) is printed
//! escaped: a control character in it cannot reach the terminal.

use std::{collections::HashMap, process::ExitCode};

use anonymous_results::telemetry::Escaped;
use anonymous_results_client::{
    Client, Error,
    proto::{self, ResultState},
};
use clap::Subcommand;

use super::connection::Connection;

#[derive(Subcommand)]
pub enum Action {
    /// Lists the results stored, oldest first, every page.
    List {
        /// Only results in this state: allocated, committed, aborted or expired.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only results with this label (`key=value`); repeat it for several, all of which must match.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Only results created at or after this instant (RFC 3339, e.g. 2026-12-07T08:00:00Z).
        #[arg(long, value_name = "INSTANT")]
        created_after: Option<String>,
        /// Only results created before this instant (RFC 3339).
        #[arg(long, value_name = "INSTANT")]
        created_before: Option<String>,
        /// Prints a JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Shows one result's status.
    Show {
        #[arg(value_name = "RESULT_ID")]
        result_id: String,
        /// Prints it as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Deletes a result now (the client is done with it).
    Release {
        #[arg(value_name = "RESULT_ID")]
        result_id: String,
    },
}

/// Runs `action` against the service `connection` names.
pub fn run(connection: Connection, action: Action) -> ExitCode {
    super::connection::run(async move {
        let client = connection.connect().await?;
        act(&client, &connection.addr, action).await
    })
}

async fn act(client: &Client, addr: &str, action: Action) -> Result<(), String> {
    let told = |e: Error| format!("{addr}: {e}");
    match action {
        Action::List { state, labels, created_after, created_before, json } => {
            let request = proto::ListResultsRequest {
                state: state.as_deref().map(parse_state).transpose()?.map_or(0, |state| state as i32),
                labels: labels.iter().map(|label| parse_label(label)).collect::<Result<HashMap<_, _>, _>>()?,
                created_after: created_after.as_deref().map(|at| parse_instant("--created-after", at)).transpose()?,
                created_before: created_before
                    .as_deref()
                    .map(|at| parse_instant("--created-before", at))
                    .transpose()?,
                page_size: 1000,
                page_token: String::new(),
            };
            let results = client.list_all_results(request).await.map_err(told)?;
            match json {
                true => results.iter().for_each(|status| println!("{}", as_json(status))),
                false => print_table(&results),
            }
        }
        Action::Show { result_id, json } => {
            let request = proto::ResolveRequest { result_id, page_size: 1, ..Default::default() };
            let status = client.resolve(request).await.map_err(told)?.status.ok_or("the service answered no status")?;
            match json {
                true => println!("{}", as_json(&status)),
                false => print_status(&status),
            }
        }
        Action::Release { result_id } => {
            let released =
                client.release(proto::ReleaseRequest { result_id: result_id.clone() }).await.map_err(told)?;
            let state = released.status.map_or(ResultState::Unspecified, |status| state_of(&status));
            println!("{}\t{}", Escaped(&result_id), state_name(state));
        }
    }
    Ok(())
}

fn parse_state(text: &str) -> Result<ResultState, String> {
    match text.to_ascii_lowercase().as_str() {
        "allocated" => Ok(ResultState::Allocated),
        "committed" => Ok(ResultState::Committed),
        "aborted" => Ok(ResultState::Aborted),
        "expired" => Ok(ResultState::Expired),
        _ => Err(format!("--state {}: is not allocated, committed, aborted or expired", Escaped(text))),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("--label {}: is not KEY=VALUE", Escaped(text))),
    }
}

fn parse_instant(flag: &str, text: &str) -> Result<prost_types::Timestamp, String> {
    humantime::parse_rfc3339_weak(text)
        .map(prost_types::Timestamp::from)
        .map_err(|_| format!("{flag} {}: is not an instant like 2026-12-07T08:00:00Z", Escaped(text)))
}

fn state_of(status: &proto::ResultStatus) -> ResultState {
    ResultState::try_from(status.state).unwrap_or(ResultState::Unspecified)
}

pub fn state_name(state: ResultState) -> &'static str {
    state.as_str_name().trim_start_matches("RESULT_STATE_")
}

/// An instant as RFC 3339, to the second; `-` for none.
pub fn instant(at: Option<prost_types::Timestamp>) -> String {
    at.and_then(|at| std::time::SystemTime::try_from(at).ok())
        .map_or("-".to_owned(), |at| humantime::format_rfc3339_seconds(at).to_string())
}

/// Labels as `k=v,k=v`, sorted, escaped.
fn labels(status: &proto::ResultStatus) -> String {
    let mut labels: Vec<String> =
        status.labels.iter().map(|(key, value)| format!("{}={}", Escaped(key), Escaped(value))).collect();
    labels.sort();
    labels.join(",")
}

fn print_table(results: &[proto::ResultStatus]) {
    println!("RESULT_ID\tSTATE\tCREATED\tEXPIRES\tFILES\tBYTES\tQUERY_ID\tLABELS");
    for status in results {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            status.result_id,
            state_name(state_of(status)),
            instant(status.created_at),
            instant(status.expires_at),
            status.file_count,
            status.total_bytes,
            Escaped(&status.query_id),
            labels(status),
        );
    }
    let bytes: u64 = results.iter().map(|status| status.total_bytes).sum();
    println!("{} result(s), {bytes} byte(s)", results.len());
}

fn print_status(status: &proto::ResultStatus) {
    let rows = [
        ("result_id", status.result_id.clone()),
        ("state", state_name(state_of(status)).to_owned()),
        ("query_id", Escaped(&status.query_id).to_string()),
        ("created_at", instant(status.created_at)),
        ("committed_at", instant(status.committed_at)),
        ("expires_at", instant(status.expires_at)),
        ("file_count", status.file_count.to_string()),
        ("total_bytes", status.total_bytes.to_string()),
        ("total_rows", status.total_rows.map_or("-".to_owned(), |rows| rows.to_string())),
        ("abort_reason", Escaped(&status.abort_reason).to_string()),
        ("labels", labels(status)),
    ];
    for (name, value) in rows {
        println!("{name}\t{value}");
    }
}

/// A status as one JSON object (serde escapes what needs it).
fn as_json(status: &proto::ResultStatus) -> serde_json::Value {
    let at = |at: Option<prost_types::Timestamp>| match instant(at).as_str() {
        "-" => serde_json::Value::Null,
        text => serde_json::Value::String(text.to_owned()),
    };
    serde_json::json!({
        "result_id": status.result_id,
        "state": state_name(state_of(status)),
        "query_id": status.query_id,
        "created_at": at(status.created_at),
        "committed_at": at(status.committed_at),
        "expires_at": at(status.expires_at),
        "file_count": status.file_count,
        "total_bytes": status.total_bytes,
        "total_rows": status.total_rows,
        "abort_reason": status.abort_reason,
        "labels": status.labels,
    })
}
