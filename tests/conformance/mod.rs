//! The backend conformance suite: the same tests, run against every backend (see the `conformance_tests!`
//! invocations in the backends' test files). Each takes a fresh store and runs a real server over it.

#![allow(dead_code)]

mod downloads;
mod lifecycle;
mod listing;
mod pins;
mod resolve;
mod storage;
mod usage;

pub use downloads::*;
pub use lifecycle::*;
pub use listing::*;
pub use pins::*;
pub use resolve::*;
pub use storage::*;
pub use usage::*;

use std::{collections::HashSet, time::Duration};

use anonymous_results::proto::{self, FileType, ResultState};
use tonic::Code;

use crate::common::{Fixture, TestStore, assert_status, file, state};

/// Declares one `#[tokio::test]` per listed conformance test, each over a store made by `$store` (an
/// expression that may `.await`).
#[macro_export]
macro_rules! conformance_tests {
    ($store:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                conformance::$name($store).await;
            }
        )*
    };
}

/// Declares the whole conformance suite over stores made by `$store`.
#[macro_export]
macro_rules! all_conformance_tests {
    ($store:expr) => {
        conformance_tests! { $store;
            allocate_answers_a_sink_a_token_and_a_deadline,
            allocate_is_idempotent_on_query_id,
            concurrent_allocates_of_one_query_answer_one_result,
            allocate_of_a_committed_query_answers_it_committed,
            allocate_with_another_request_for_a_query_is_already_exists,
            allocate_refuses_a_malformed_request,
            result_ids_are_distinct,
            commit_then_resolve_answers_every_file,
            commit_without_sizes_or_rows_takes_the_stored_sizes,
            commit_with_no_files_listed_takes_every_file,
            an_identical_commit_repeated_answers_the_same_status,
            a_different_second_commit_is_already_exists,
            commit_of_an_unknown_result_is_not_found,
            ids_that_are_not_ours_are_invalid_argument,
            commit_with_a_wrong_token_is_permission_denied,
            commit_of_a_missing_file_is_failed_precondition_naming_it,
            commit_with_a_wrong_size_is_failed_precondition_naming_it,
            commit_of_an_empty_sink_is_failed_precondition,
            commit_refuses_paths_outside_the_sink,
            resolve_of_a_pending_result_is_allocated,
            resolve_of_an_unknown_result_is_not_found,
            concurrent_different_commits_have_exactly_one_winner,
            resolve_serves_the_committed_bytes,
            proxy_links_serve_http_as_a_client_expects,
            changed_foreign_and_expired_links_are_refused_before_storage,
            a_link_made_by_one_replica_works_on_another_until_the_result_is_released,
            redirect_links_send_each_get_to_a_fresh_store_url,
            a_redirect_link_outlives_the_store_urls_it_sends_clients_to,
            awkward_file_names_are_served_and_deleted_under_their_own_names,
            a_folder_listed_as_a_file_is_named_a_folder,
            resolve_answers_a_large_result_page_by_page,
            a_cold_replica_reads_a_manifest_once_and_then_serves_it_from_memory,
            two_replicas_over_one_storage_act_as_one,
            abort_by_the_worker_seals_it_and_deletes_its_files,
            abort_by_the_scheduler_needs_no_token_but_a_wrong_one_is_refused,
            abort_of_a_committed_result_is_failed_precondition,
            release_deletes_the_files_and_records_now,
            release_of_a_pending_result_deletes_it_too,
            renew_extends_within_the_maximum_and_never_shortens,
            without_retention_a_result_is_kept_until_released,
            watch_sends_the_current_state_then_each_change_until_a_final_one,
            a_commit_on_one_replica_reaches_a_watcher_on_another_within_the_refresh_interval,
            the_pruner_deletes_expired_results_and_keeps_the_rest,
            the_pruner_abandons_allocations_past_their_commit_timeout,
            a_commit_after_the_deadline_is_failed_precondition,
            two_pruners_racing_delete_each_result_and_fail_on_nothing,
            the_pruner_skips_records_it_cannot_interpret_and_serves_the_rest,
            keys_are_listed_in_order_within_a_range,
            a_file_is_read_in_ranges_as_a_stream_of_chunks,
            a_failing_store_is_answered_a_retry_succeeds_and_nothing_is_left_half_done,
            a_pinned_file_reads_only_while_it_is_the_committed_version,
            a_file_rewritten_after_its_commit_is_never_served,
            a_file_changed_during_a_proxy_download_never_completes,
            list_results_shows_each_result_as_it_stands_filtered_and_page_by_page,
            list_results_refuses_requests_past_its_bounds,
            get_usage_counts_each_state_and_two_replicas_agree,
            a_full_budget_refuses_allocate_until_a_release_makes_room,
            expire_oldest_makes_room_from_the_oldest_and_keeps_the_newest,
            two_replicas_racing_a_budget_overshoot_it_by_at_most_one_interval_of_commits,
        }
    };
}

pub async fn allocate_answers_a_sink_a_token_and_a_deadline(store: TestStore) {
    let fx = Fixture::start(store).await;
    let before = std::time::SystemTime::now();
    let allocated = fx.allocate("query-1").await;
    assert_eq!(allocated.result_id.len(), 26, "{}", allocated.result_id);
    let sink = allocated.sink.as_ref().unwrap();
    assert!(sink.uri.ends_with(&format!("{}/", allocated.result_id)), "{}", sink.uri);
    assert!(allocated.commit_token.len() >= 32, "a short commit token");
    let deadline: std::time::SystemTime = allocated.commit_deadline.unwrap().try_into().unwrap();
    assert!(deadline > before + Duration::from_secs(3600), "{deadline:?}");
    let status = allocated.status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    assert_eq!(status.query_id, "query-1");
    assert_eq!(status.result_id, allocated.result_id);
    assert_eq!(status.file_type, FileType::Parquet as i32, "unspecified is parquet");
    fx.stop().await;
}

pub async fn allocate_is_idempotent_on_query_id(store: TestStore) {
    let fx = Fixture::start(store).await;
    let first = fx.allocate("query-1").await;
    let again = fx.allocate("query-1").await;
    let other = fx.allocate("query-2").await;
    assert_eq!(first.result_id, again.result_id);
    assert_eq!(first.commit_token, again.commit_token);
    assert_eq!(first.sink.as_ref().unwrap().uri, again.sink.as_ref().unwrap().uri);
    assert_eq!(first.commit_deadline, again.commit_deadline);
    assert_ne!(first.result_id, other.result_id);
    assert_ne!(first.commit_token, other.commit_token);
    fx.stop().await;
}

pub async fn concurrent_allocates_of_one_query_answer_one_result(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocates = (0..16).map(|_| {
        let client = fx.client();
        tokio::spawn(async move {
            let request = proto::AllocateRequest { query_id: "raced".into(), ..Default::default() };
            client.allocate(request).await.map(|r| (r.result_id.clone(), r.commit_token.clone()))
        })
    });
    let mut answers = HashSet::new();
    for allocate in allocates.collect::<Vec<_>>() {
        answers.insert(allocate.await.unwrap().expect("every racing Allocate succeeds"));
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    fx.stop().await;
}

pub async fn allocate_of_a_committed_query_answers_it_committed(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    let again = fx.allocate("query-1").await;
    assert_eq!(again.result_id, allocated.result_id);
    assert_eq!(state(again.status.as_ref().unwrap()), ResultState::Committed);
    fx.stop().await;
}

pub async fn allocate_with_another_request_for_a_query_is_already_exists(store: TestStore) {
    let fx = Fixture::start(store).await;
    fx.allocate("query-1").await;
    let csv =
        proto::AllocateRequest { query_id: "query-1".into(), file_type: FileType::Csv as i32, ..Default::default() };
    assert_status(fx.client().allocate(csv).await, Code::AlreadyExists, &["query-1", "file_type"]);
    fx.stop().await;
}

pub async fn allocate_refuses_a_malformed_request(store: TestStore) {
    let fx = Fixture::start(store).await;
    let request = |query_id: &str| proto::AllocateRequest { query_id: query_id.into(), ..Default::default() };
    assert_status(fx.client().allocate(request("")).await, Code::InvalidArgument, &["query_id"]);
    assert_status(fx.client().allocate(request("a\0b")).await, Code::InvalidArgument, &["query_id"]);
    let mut bad_type = request("q");
    bad_type.file_type = 99;
    assert_status(fx.client().allocate(bad_type).await, Code::InvalidArgument, &["file_type"]);
    let mut negative_ttl = request("q");
    negative_ttl.ttl = Some(prost_types::Duration { seconds: -5, nanos: 0 });
    assert_status(fx.client().allocate(negative_ttl).await, Code::InvalidArgument, &["ttl"]);
    let mut many_labels = request("q");
    many_labels.labels = (0..100).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    assert_status(fx.client().allocate(many_labels).await, Code::InvalidArgument, &["labels"]);
    for (key, value) in [(String::new(), "v".to_owned()), ("k".repeat(129), "v".into()), ("k".into(), "v".repeat(1025))]
    {
        let mut bad_label = request("q");
        bad_label.labels = [(key, value)].into();
        assert_status(fx.client().allocate(bad_label).await, Code::InvalidArgument, &["labels"]);
    }
    assert_status(fx.client().allocate(request(&"q".repeat(513))).await, Code::InvalidArgument, &["query_id", "512"]);
    fx.stop().await;
}

pub async fn result_ids_are_distinct(store: TestStore) {
    let fx = Fixture::start(store).await;
    let mut ids = HashSet::new();
    for i in 0..50 {
        ids.insert(fx.allocate(&format!("query-{i}")).await.result_id);
    }
    assert_eq!(ids.len(), 50);
    fx.stop().await;
}

pub async fn commit_then_resolve_answers_every_file(store: TestStore) {
    let fx = Fixture::start(store).await;
    let request = proto::AllocateRequest {
        query_id: "query-1".into(),
        file_type: FileType::Ipc as i32,
        labels: [("team".to_owned(), "risk".to_owned())].into(),
        ..Default::default()
    };
    let allocated = fx.client().allocate(request).await.unwrap();
    fx.write(&allocated, "part-0.arrow", b"0123456789").await;
    fx.write(&allocated, "part-1.arrow", b"abc").await;
    let status = fx
        .commit(&allocated, vec![file("part-0.arrow", 10, Some(100)), file("part-1.arrow", 3, Some(5))])
        .await
        .unwrap();
    assert_eq!(state(&status), ResultState::Committed);
    assert_eq!((status.file_count, status.total_bytes, status.total_rows), (2, 13, Some(105)));
    assert!(status.committed_at.is_some());

    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let status = resolved.status.unwrap();
    assert_eq!(state(&status), ResultState::Committed);
    assert_eq!(resolved.file_type, FileType::Ipc as i32);
    assert_eq!(status.labels.get("team").map(String::as_str), Some("risk"));
    assert_eq!((status.file_count, status.total_bytes, status.total_rows), (2, 13, Some(105)));
    let files: Vec<_> = resolved.locations.iter().map(|l| (l.path.as_str(), l.size_bytes, l.row_count)).collect();
    assert_eq!(files, vec![("part-0.arrow", 10, Some(100)), ("part-1.arrow", 3, Some(5))]);
    for location in &resolved.locations {
        assert!(location.url.contains(&allocated.result_id), "{}", location.url);
        let without_query = location.url.split('?').next().unwrap_or_default();
        assert!(without_query.ends_with(&format!("{}/{}", allocated.result_id, location.path)), "{}", location.url);
    }
    fx.stop().await;
}

pub async fn commit_without_sizes_or_rows_takes_the_stored_sizes(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.csv", b"a,b\n1,2\n").await;
    let undeclared = proto::ResultFile { path: "part-0.csv".into(), size_bytes: None, row_count: None };
    let status = fx.commit(&allocated, vec![undeclared]).await.unwrap();
    assert_eq!((status.file_count, status.total_bytes, status.total_rows), (1, 8, None));
    fx.stop().await;
}

pub async fn commit_with_no_files_listed_takes_every_file(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "year=2024/part-1.parquet", b"bb").await;
    fx.write(&allocated, "year=2024/part-0.parquet", b"a").await;
    fx.write(&allocated, "part-9.parquet", b"ccc").await;
    let status = fx.commit(&allocated, vec![]).await.unwrap();
    assert_eq!((status.file_count, status.total_bytes), (3, 6));
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let paths: Vec<_> = resolved.locations.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(paths, vec!["part-9.parquet", "year=2024/part-0.parquet", "year=2024/part-1.parquet"]);
    fx.stop().await;
}

pub async fn an_identical_commit_repeated_answers_the_same_status(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let first = fx.commit(&allocated, vec![file("part-0.parquet", 4, Some(1))]).await.unwrap();
    let again = fx.commit(&allocated, vec![file("part-0.parquet", 4, Some(1))]).await.unwrap();
    assert_eq!(first, again);
    fx.stop().await;
}

pub async fn a_different_second_commit_is_already_exists(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.write(&allocated, "part-1.parquet", b"more").await;
    fx.commit(&allocated, vec![file("part-0.parquet", 4, None)]).await.unwrap();
    let second = fx.commit(&allocated, vec![file("part-1.parquet", 4, None)]).await;
    assert_status(second, Code::AlreadyExists, &[&allocated.result_id, "already committed"]);
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(resolved.locations.len(), 1);
    assert_eq!(resolved.locations[0].path, "part-0.parquet");
    fx.stop().await;
}

pub async fn commit_of_an_unknown_result_is_not_found(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    assert_status(fx.commit(&allocated, vec![]).await, Code::NotFound, &[&allocated.result_id]);
    // Without its token, an id says nothing of whether the result exists.
    let mut unknown = fx.allocate("query-2").await;
    unknown.result_id = "aaaaaaaaaaaaaaaaaaaaaaaaaa".into();
    assert_status(fx.commit(&unknown, vec![]).await, Code::PermissionDenied, &["commit_token"]);
    fx.stop().await;
}

pub async fn ids_that_are_not_ours_are_invalid_argument(store: TestStore) {
    let fx = Fixture::start(store).await;
    let mut allocated = fx.allocate("query-1").await;
    for foreign in ["", "../../etc", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "_control"] {
        allocated.result_id = foreign.into();
        assert_status(fx.commit(&allocated, vec![]).await, Code::InvalidArgument, &["result_id"]);
        assert_status(fx.resolve(foreign).await, Code::InvalidArgument, &["result_id"]);
    }
    fx.stop().await;
}

pub async fn commit_with_a_wrong_token_is_permission_denied(store: TestStore) {
    let fx = Fixture::start(store).await;
    let mut allocated = fx.allocate("query-1").await;
    let other = fx.allocate("query-2").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    allocated.commit_token = other.commit_token.clone();
    assert_status(fx.commit(&allocated, vec![]).await, Code::PermissionDenied, &["commit_token"]);
    allocated.commit_token = String::new();
    assert_status(fx.commit(&allocated, vec![]).await, Code::InvalidArgument, &["commit_token"]);
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    fx.stop().await;
}

pub async fn commit_of_a_missing_file_is_failed_precondition_naming_it(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let result = fx.commit(&allocated, vec![file("part-0.parquet", 4, None), file("part-1.parquet", 4, None)]).await;
    assert_status(result, Code::FailedPrecondition, &["part-1.parquet", "not in the sink"]);
    let status = fx.resolve(&allocated.result_id).await.unwrap().status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    fx.stop().await;
}

pub async fn commit_with_a_wrong_size_is_failed_precondition_naming_it(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let result = fx.commit(&allocated, vec![file("part-0.parquet", 5, None)]).await;
    assert_status(result, Code::FailedPrecondition, &["part-0.parquet", "4 bytes", "declares 5"]);
    fx.stop().await;
}

pub async fn commit_of_an_empty_sink_is_failed_precondition(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    assert_status(fx.commit(&allocated, vec![]).await, Code::FailedPrecondition, &["empty"]);
    fx.stop().await;
}

pub async fn commit_refuses_paths_outside_the_sink(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let other = fx.allocate("query-2").await;
    fx.write(&other, "secret.parquet", b"theirs").await;
    let escape = format!("../{}/secret.parquet", other.result_id);
    let (too_long, long_name) = ("a/".repeat(513), "n".repeat(256));
    for bad in [
        escape.as_str(),
        "..",
        "a/./b",
        "a/",
        "part-\u{1}.parquet",
        "sub/.anonymous-results",
        too_long.as_str(),
        long_name.as_str(),
        "/etc/passwd",
        "a/../../x",
        "part-0.parquet\0",
        "dir\\part-0.parquet",
        "./part-0.parquet",
        "a//b",
        ".anonymous-results-tmp-1",
        "",
    ] {
        let result = fx.commit(&allocated, vec![file(bad, 4, None)]).await;
        assert_status(result, Code::InvalidArgument, &["files[0].path"]);
    }
    let twice = fx.commit(&allocated, vec![file("part-0.parquet", 4, None), file("part-0.parquet", 4, None)]).await;
    assert_status(twice, Code::InvalidArgument, &["files[1].path", "twice"]);
    fx.stop().await;
}
