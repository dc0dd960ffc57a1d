//! The conformance suite, part four: Resolve (of pending, unknown, committed and large results, of files with
//! awkward names), racing commits, and replicas over one storage.

use anonymous_results::proto::{self, ResultState};
use tonic::Code;

use crate::common::{Fixture, TestStore, assert_status, file, state};

pub async fn resolve_of_a_pending_result_is_allocated(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    let status = resolved.status.unwrap();
    assert_eq!(state(&status), ResultState::Allocated);
    assert_eq!(status.query_id, "query-1");
    assert!(resolved.locations.is_empty());
    assert!(status.committed_at.is_none());
    fx.stop().await;
}

pub async fn resolve_of_an_unknown_result_is_not_found(store: TestStore) {
    let fx = Fixture::start(store).await;
    assert_status(fx.resolve("bbbbbbbbbbbbbbbbbbbbbbbbbb").await, Code::NotFound, &["bbbbbbbbbbbbbbbbbbbbbbbbbb"]);
    fx.stop().await;
}

pub async fn concurrent_different_commits_have_exactly_one_winner(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    for i in 0..32 {
        fx.write(&allocated, &format!("part-{i}.parquet"), format!("file {i}").as_bytes()).await;
    }
    let commits = (0..32).map(|i| {
        let (client, allocated) = (fx.client(), allocated.clone());
        tokio::spawn(async move {
            let files =
                vec![proto::ResultFile { path: format!("part-{i}.parquet"), size_bytes: None, row_count: None }];
            let request =
                proto::CommitRequest { result_id: allocated.result_id, commit_token: allocated.commit_token, files };
            (i, client.clone().commit(request).await)
        })
    });
    let mut winners = Vec::new();
    for commit in commits.collect::<Vec<_>>() {
        match commit.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(status)) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message())
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(resolved.locations.len(), 1);
    assert_eq!(resolved.locations[0].path, format!("part-{}.parquet", winners[0]));
    fx.stop().await;
}

pub async fn resolve_serves_the_committed_bytes(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fx.write(&allocated, "part-0.parquet", &big).await;
    fx.write(&allocated, "nested/part-1.parquet", b"small").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    assert_eq!(resolved.locations.len(), 2);
    let nested = fx.store.fetch(&resolved.locations[0].url).await;
    assert_eq!(nested, b"small");
    assert_eq!(fx.store.fetch(&resolved.locations[1].url).await, big);
    fx.stop().await;
}

/// File names a worker may write that need encoding in a URL: each is committed, downloaded from the
/// location Resolve answers (encoded exactly once: `é` as `%C3%A9`, `%` as `%25`), and deleted by Release.
pub async fn awkward_file_names_are_served_and_deleted_under_their_own_names(store: TestStore) {
    let fx = Fixture::start(store).await;
    awkward_names_round_trip(&fx).await;
    fx.stop().await;
}

/// Writes, commits, downloads and releases files of awkward names through `fx`; answers the download URLs.
pub async fn awkward_names_round_trip(fx: &Fixture) -> Vec<String> {
    let allocated = fx.allocate("awkward").await;
    let names = [
        "caf\u{e9}.csv",
        "key=a%2Fb/part-0.parquet",
        "100%.csv",
        "what?.csv",
        "hash#tag.csv",
        "space and+plus&amp=eq.csv",
        "tilde~'quote'.csv",
        "\u{65e5}\u{672c}/\u{30c7}\u{30fc}\u{30bf}.parquet",
        "%C3%A9.csv",
    ];
    for (i, name) in names.iter().enumerate() {
        fx.write(&allocated, name, format!("file {i}").as_bytes()).await;
    }
    let status = fx.commit(&allocated, vec![]).await.expect("commit the awkward names");
    assert_eq!(status.file_count, names.len() as u64);
    let resolved = fx.resolve(&allocated.result_id).await.unwrap();
    for location in &resolved.locations {
        let i = names.iter().position(|name| *name == location.path).expect("a written name");
        assert_eq!(fx.store.fetch(&location.url).await, format!("file {i}").as_bytes(), "{}", location.path);
    }
    fx.client().release(proto::ReleaseRequest { result_id: allocated.result_id.clone() }).await.unwrap();
    fx.server.service.deletions_done().await;
    let left = fx.store.sink_files(allocated.sink.as_ref().unwrap()).await;
    assert!(left.is_empty(), "files left after Release: {left:?}");
    resolved.locations.into_iter().map(|location| location.url).collect()
}

pub async fn a_folder_listed_as_a_file_is_named_a_folder(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("folder").await;
    fx.write(&allocated, "year=2024/part-0.parquet", b"data").await;
    let listed = vec![file("year=2024", 4, None)];
    assert_status(
        fx.commit(&allocated, listed).await,
        Code::FailedPrecondition,
        &["`year=2024` is a folder", "files in it"],
    );
    fx.stop().await;
}

pub async fn a_cold_replica_reads_a_manifest_once_and_then_serves_it_from_memory(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    fx.write(&allocated, "part-0.parquet", b"data").await;
    fx.commit(&allocated, vec![]).await.unwrap();
    let cold = crate::common::TestServer::start(&fx.store.config()).await;
    let client = cold.client.clone();
    let resolve =
        || proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: None, ..Default::default() };
    let before = cold.storage_requests();
    let (_, depth_before) = cold.service.metrics().storage_of(anonymous_results::auth::Rpc::Resolve);
    let first = client.resolve(resolve()).await.unwrap();
    let after_first = cold.storage_requests();
    let (_, depth_after) = cold.service.metrics().storage_of(anonymous_results::auth::Rpc::Resolve);
    // The listing of the result's records, its pending record and its manifest, read at once: one round trip.
    assert_eq!(after_first - before, 3, "a cold Resolve lists the result's records once and reads the manifest once");
    assert_eq!(depth_after - depth_before, 1, "a cold Resolve waits on more than one round trip");
    for _ in 0..5 {
        let again = client.resolve(resolve()).await.unwrap();
        assert_eq!(again.status, first.status);
    }
    assert_eq!(cold.storage_requests(), after_first, "cached Resolves make no storage request");
    cold.stop().await;
    fx.stop().await;
}

pub async fn two_replicas_over_one_storage_act_as_one(store: TestStore) {
    let a = Fixture::start(store).await;
    let b = crate::common::TestServer::start(&a.store.config()).await;
    let allocated = a.allocate("query-1").await;
    a.write(&allocated, "part-0.parquet", b"data").await;
    let on_b = b.client.clone();
    let again_on_b =
        on_b.allocate(proto::AllocateRequest { query_id: "query-1".into(), ..Default::default() }).await.unwrap();
    assert_eq!(again_on_b.result_id, allocated.result_id, "Allocate is idempotent across replicas");
    let request = proto::CommitRequest {
        result_id: allocated.result_id.clone(),
        commit_token: allocated.commit_token.clone(),
        files: vec![file("part-0.parquet", 4, Some(1))],
    };
    on_b.commit(request).await.unwrap();
    let resolve =
        || proto::ResolveRequest { result_id: allocated.result_id.clone(), url_ttl: None, ..Default::default() };
    let from_a = a.client().resolve(resolve()).await.unwrap();
    let from_b = on_b.resolve(resolve()).await.unwrap();
    assert_eq!(state(from_a.status.as_ref().unwrap()), ResultState::Committed);
    assert_eq!(from_a.status, from_b.status);
    let strip = |r: &proto::ResolveResponse| -> Vec<(String, u64)> {
        r.locations.iter().map(|l| (l.path.clone(), l.size_bytes)).collect()
    };
    assert_eq!(strip(&from_a), strip(&from_b));
    b.stop().await;
    a.stop().await;
}

pub async fn resolve_answers_a_large_result_page_by_page(store: TestStore) {
    let fx = Fixture::start(store).await;
    let allocated = fx.allocate("query-1").await;
    for i in 0..5 {
        fx.write(&allocated, &format!("part-{i}.parquet"), b"data").await;
    }
    fx.commit(&allocated, vec![]).await.unwrap();
    let page = |size: u32, token: &str| proto::ResolveRequest {
        result_id: allocated.result_id.clone(),
        page_size: size,
        page_token: token.into(),
        ..Default::default()
    };
    let whole = fx.client().resolve(page(0, "")).await.unwrap();
    assert_eq!((whole.locations.len(), whole.next_page_token.as_str()), (5, ""), "page_size 0 answers all");
    let (mut paths, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let answer = fx.client().resolve(page(2, &token)).await.unwrap();
        assert!(answer.locations.len() <= 2);
        assert_eq!(state(answer.status.as_ref().unwrap()), ResultState::Committed);
        paths.extend(answer.locations.into_iter().map(|location| location.path));
        pages += 1;
        token = answer.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let all: Vec<String> = whole.locations.into_iter().map(|location| location.path).collect();
    assert_eq!((paths, pages), (all, 3), "three pages of 2, 2 and 1 files, in the committed order");
    for bad in ["x", "-1", "99"] {
        assert_status(fx.client().resolve(page(2, bad)).await, Code::InvalidArgument, &["page_token"]);
    }
    fx.stop().await;
}
