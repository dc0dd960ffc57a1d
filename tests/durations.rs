//! Properties of time, end to end: whatever durations a configuration and the callers give (any TTL, URL
//! lifetime and renewal a protobuf `Duration` can carry, any retention a config file can) and however far
//! the clock moves, every call answers a code the contract names for it (never INTERNAL, never a panic that
//! cancels it), every timestamp answered fits a protobuf `Timestamp` (years 1970 to 9999), and the pruner
//! fails on nothing.

mod common;

use std::{sync::Arc, time::Duration};

use anonymous_results::{
    Config,
    clock::ManualClock,
    proto::{self, ResultState},
};
use common::{TestServer, TestStore};
use proptest::prelude::*;
use tonic::Code;

/// The last second a protobuf `Timestamp` holds: 9999-12-31T23:59:59Z.
const LATEST_SECONDS: i64 = 253_402_300_799;
const YEAR: u64 = 31_557_600;

/// Durations as a caller may send them: small, around the 100-year bound, huge, negative, odd nanos.
fn wire_duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    let seconds = prop_oneof![
        3 => 0..100_000i64,
        2 => (99 * YEAR as i64)..(101 * YEAR as i64),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
        1 => i64::MIN..0,
    ];
    let nanos = prop_oneof![4 => Just(0i32), 1 => any::<i32>()];
    prop_oneof![1 => Just(None), 6 => (seconds, nanos).prop_map(|(seconds, nanos)| Some(prost_types::Duration { seconds, nanos }))]
}

/// A configuration duration, in seconds: anything a config file may hold (at most 100 years).
fn config_seconds() -> impl Strategy<Value = u64> {
    prop_oneof![1..100_000u64, (YEAR..100 * YEAR)]
}

fn check_timestamp(name: &str, timestamp: &Option<prost_types::Timestamp>) -> Result<(), TestCaseError> {
    if let Some(t) = timestamp {
        prop_assert!((0..=LATEST_SECONDS).contains(&t.seconds), "{name}: {t:?}");
        prop_assert!((0..1_000_000_000).contains(&t.nanos), "{name}: {t:?}");
    }
    Ok(())
}

fn check_status(status: &proto::ResultStatus) -> Result<(), TestCaseError> {
    check_timestamp("created_at", &status.created_at)?;
    check_timestamp("committed_at", &status.committed_at)?;
    check_timestamp("expires_at", &status.expires_at)
}

/// A failed call must have failed for a reason the contract names.
fn check_code(call: &str, status: &anonymous_results_client::Error) -> Result<(), TestCaseError> {
    let expected = [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition];
    prop_assert!(expected.contains(&status.code()), "{call}: {status:?}");
    Ok(())
}

#[derive(Debug, Clone)]
struct Case {
    retention: Option<u64>,
    max_retention: Option<u64>,
    commit_timeout: u64,
    ttl: Option<prost_types::Duration>,
    url_ttl: Option<prost_types::Duration>,
    renew: Option<prost_types::Duration>,
    /// How far the clock moves, in seconds, before the last calls and the pruner.
    advance: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(config_seconds()),
        prop::option::of(config_seconds()),
        config_seconds(),
        wire_duration(),
        wire_duration(),
        wire_duration(),
        prop_oneof![0..100_000u64, (YEAR..8_000 * YEAR)],
    )
        .prop_map(|(retention, max_retention, commit_timeout, ttl, url_ttl, renew, advance)| Case {
            retention,
            max_retention: max_retention.map(|max| max.max(retention.unwrap_or(0))),
            commit_timeout,
            ttl,
            url_ttl,
            renew,
            advance,
        })
}

async fn run(case: Case) -> Result<(), TestCaseError> {
    let store = TestStore::local();
    let mut location = format!("commit_timeout = \"{}s\"", case.commit_timeout);
    if let Some(retention) = case.retention {
        location.push_str(&format!("\nretention = \"{retention}s\""));
    }
    if let Some(max) = case.max_retention {
        location.push_str(&format!("\nmax_retention = \"{max}s\""));
    }
    let config = Config::from_toml(&store.config_toml_with(&location, "")).expect("a configuration within bounds");
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_with_clock(&config, clock.clone()).await;
    let client = server.client.clone();
    let request = proto::AllocateRequest { query_id: "q".into(), ttl: case.ttl, ..Default::default() };
    let allocated = match client.allocate(request).await {
        Ok(answer) => answer,
        Err(status) => {
            check_code("Allocate", &status)?;
            prop_assert_eq!(status.code(), Code::InvalidArgument);
            server.stop().await;
            return Ok(());
        }
    };
    check_timestamp("commit_deadline", &allocated.commit_deadline)?;
    check_status(allocated.status.as_ref().unwrap())?;
    store.write(allocated.sink.as_ref().unwrap(), "part-0.parquet", b"data").await;
    let commit = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![],
    };
    match client.commit(commit).await {
        Ok(answer) => check_status(answer.status.as_ref().unwrap())?,
        Err(status) => check_code("Commit", &status)?,
    }
    let renew = proto::RenewRequest { result_id: allocated.result_id.clone(), ttl: case.renew };
    match client.renew(renew).await {
        Ok(answer) => check_status(answer.status.as_ref().unwrap())?,
        Err(status) => check_code("Renew", &status)?,
    }
    clock.advance(Duration::from_secs(case.advance));
    let resolve =
        proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: case.url_ttl, ..Default::default() };
    match client.resolve(resolve).await {
        Ok(answer) => {
            check_status(answer.status.as_ref().unwrap())?;
            for location in &answer.locations {
                check_timestamp("location.expires_at", &location.expires_at)?;
            }
        }
        Err(status) => check_code("Resolve", &status)?,
    }
    match client.subscribe(allocated.result_id.clone()).await {
        Ok(mut answer) => {
            let first = answer.message().await;
            let first = first.map_err(|status| TestCaseError::fail(format!("Watch: {status:?}")))?;
            check_status(&first.expect("the current status"))?;
        }
        Err(status) => check_code("Watch", &status)?,
    }
    let report = server.service.prune(false).await.map_err(|e| TestCaseError::fail(format!("prune: {e}")))?;
    prop_assert_eq!((report.failed, report.corrupt), (0, 0), "{:?}", report);
    // Pruned or not, the result answers a state, or is gone.
    let resolve = proto::ResolveRequest { result_id: allocated.result_id.clone(), ..Default::default() };
    match client.resolve(resolve).await {
        Ok(answer) => {
            let status = answer.status.unwrap();
            check_status(&status)?;
            prop_assert_ne!(
                proto::ResultState::try_from(status.state),
                Ok(ResultState::Allocated),
                "committed, yet {:?}",
                status
            );
        }
        Err(status) => prop_assert_eq!(status.code(), Code::NotFound, "{:?}", status),
    }
    server.stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_duration_and_every_clock_give_contract_codes_and_timestamps_in_range(case in case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(case))?;
    }
}
