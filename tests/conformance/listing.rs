//! ListResults over every backend: what the result index says of each result, its filters, its pages, and
//! the same answer from two replicas.

use std::collections::HashMap;

use anonymous_results::proto::{self, ResultState};
use tonic::Code;

use crate::common::{Fixture, TestServer, TestStore, assert_status, state};

/// Every page of `request`, from a replica's client, with how many pages it took.
async fn all_pages(
    client: &crate::common::Client,
    request: proto::ListResultsRequest,
) -> (Vec<proto::ResultStatus>, usize) {
    let (mut results, mut pages, mut request) = (Vec::new(), 0, request);
    loop {
        let page = client.list_results(request.clone()).await.expect("a page");
        pages += 1;
        assert!(page.results.len() <= request.page_size.max(1) as usize || request.page_size == 0, "a page too long");
        results.extend(page.results);
        if page.next_page_token.is_empty() {
            return (results, pages);
        }
        request.page_token = page.next_page_token;
        assert!(pages < 100, "pages that never end");
    }
}

fn labelled(query_id: &str, user: &str) -> proto::AllocateRequest {
    proto::AllocateRequest {
        query_id: query_id.into(),
        labels: HashMap::from([("user".to_owned(), user.to_owned()), ("team".to_owned(), "data".to_owned())]),
        ..Default::default()
    }
}

pub async fn list_results_shows_each_result_as_it_stands_filtered_and_page_by_page(store: TestStore) {
    let fx = Fixture::start(store).await;
    let client = fx.client();
    // Six results, a little apart in time: two committed by alice, one allocated by bob, one aborted, one
    // released, and one committed by bob.
    let mut made = Vec::new();
    for (query, user) in
        [("q0", "alice"), ("q1", "alice"), ("q2", "bob"), ("q3", "carol"), ("q4", "dave"), ("q5", "bob")]
    {
        made.push(client.allocate(labelled(query, user)).await.expect("allocated"));
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    for index in [0, 1, 4, 5] {
        fx.write(&made[index], "part-0.csv", b"a\n1\n").await;
        fx.commit(&made[index], vec![]).await.expect("committed");
    }
    let abort =
        proto::AbortRequest { result_id: made[3].result_id.clone(), reason: "cancelled".into(), ..Default::default() };
    client.abort(abort).await.expect("aborted");
    client.release(proto::ReleaseRequest { result_id: made[4].result_id.clone() }).await.expect("released");
    // The seals' index entries are written just after their answers; the release's deletion after its own.
    fx.server.service.deletions_done().await;

    let everything = proto::ListResultsRequest::default();
    let (listed, _) = all_pages(&client, everything.clone()).await;
    let ids: Vec<&str> = listed.iter().map(|status| status.result_id.as_str()).collect();
    let expected: Vec<&str> = [0, 1, 2, 3, 5].iter().map(|index| made[*index].result_id.as_str()).collect();
    assert_eq!(ids, expected, "every result still stored, oldest first; the released one is gone");
    let states: Vec<ResultState> = listed.iter().map(state).collect();
    use ResultState::*;
    assert_eq!(states, [Committed, Committed, Allocated, Aborted, Committed]);
    assert_eq!(listed[0].total_bytes, 4);
    assert_eq!(listed[0].file_count, 1);
    assert_eq!(listed[0].query_id, "q0");
    assert_eq!(listed[0].labels.get("user").map(String::as_str), Some("alice"));
    assert_eq!(listed[3].abort_reason, "cancelled");
    // What Resolve says of each, ListResults says too.
    for status in &listed {
        let resolved = fx.resolve(&status.result_id).await.expect("resolved").status.expect("a status");
        assert_eq!(
            (resolved.state, resolved.expires_at, resolved.total_bytes),
            (status.state, status.expires_at, status.total_bytes)
        );
    }

    // Filters: a state, labels (all must match), creation times.
    let committed = proto::ListResultsRequest { state: Committed as i32, ..Default::default() };
    let (found, _) = all_pages(&client, committed).await;
    assert_eq!(found.iter().map(|s| s.query_id.as_str()).collect::<Vec<_>>(), ["q0", "q1", "q5"]);
    let bobs =
        proto::ListResultsRequest { labels: HashMap::from([("user".into(), "bob".into())]), ..Default::default() };
    let (found, _) = all_pages(&client, bobs).await;
    assert_eq!(found.iter().map(|s| s.query_id.as_str()).collect::<Vec<_>>(), ["q2", "q5"]);
    let no_one = HashMap::from([("user".into(), "bob".into()), ("team".into(), "ops".into())]);
    let (found, _) = all_pages(&client, proto::ListResultsRequest { labels: no_one, ..Default::default() }).await;
    assert!(found.is_empty(), "every label must match: {found:?}");
    let (after, before) = (listed[1].created_at, listed[3].created_at);
    let window = proto::ListResultsRequest { created_after: after, created_before: before, ..Default::default() };
    let (found, _) = all_pages(&client, window).await;
    assert_eq!(found.iter().map(|s| s.query_id.as_str()).collect::<Vec<_>>(), ["q1", "q2"], "at or after, and before");

    // Pages of two: the same results, each once, in three pages.
    let (paged, pages) = all_pages(&client, proto::ListResultsRequest { page_size: 2, ..Default::default() }).await;
    assert_eq!(paged, listed);
    assert!(pages >= 3, "{pages} pages");

    // Another replica over the same store answers the same.
    let other = TestServer::start(&fx.store.config()).await;
    let (elsewhere, _) = all_pages(&other.client, everything).await;
    assert_eq!(elsewhere, listed);
    other.stop().await;
    fx.stop().await;
}

pub async fn list_results_refuses_requests_past_its_bounds(store: TestStore) {
    let fx = Fixture::start(store).await;
    let client = fx.client();
    let list = |request: proto::ListResultsRequest| client.list_results(request);
    let too_long = proto::ListResultsRequest { page_size: 1001, ..Default::default() };
    assert_status(list(too_long).await, Code::InvalidArgument, &["page_size", "1000"]);
    let most = proto::ListResultsRequest { page_size: 1000, ..Default::default() };
    assert!(list(most).await.is_ok(), "a page of 1000");
    let labels: HashMap<String, String> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    assert_status(
        list(proto::ListResultsRequest { labels, ..Default::default() }).await,
        Code::InvalidArgument,
        &["labels", "16"],
    );
    let labels: HashMap<String, String> = (0..16).map(|i| (format!("k{i}"), "v".into())).collect();
    assert!(list(proto::ListResultsRequest { labels, ..Default::default() }).await.is_ok(), "16 labels");
    for token in ["nope", "0000000000000001-NOTANID", "1-abc", &"9".repeat(10_000)] {
        let request = proto::ListResultsRequest { page_token: token.into(), ..Default::default() };
        assert_status(list(request).await, Code::InvalidArgument, &["page_token"]);
    }
    assert_status(
        list(proto::ListResultsRequest { state: 99, ..Default::default() }).await,
        Code::InvalidArgument,
        &["state"],
    );
    let bad_time = Some(prost_types::Timestamp { seconds: -1, nanos: 0 });
    assert_status(
        list(proto::ListResultsRequest { created_after: bad_time, ..Default::default() }).await,
        Code::InvalidArgument,
        &["created_after"],
    );
    let far = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 });
    assert_status(
        list(proto::ListResultsRequest { created_before: far, ..Default::default() }).await,
        Code::InvalidArgument,
        &["created_before"],
    );
    fx.stop().await;
}
