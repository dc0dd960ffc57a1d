//! A bucket that keeps versions: found at start-up, and then every URL (direct and redirect) names the
//! committed version of each file, so that even a direct download gets exactly the committed bytes after the
//! file was written over; a proxy download reads that version too.

use anonymous_results::proto::DownloadMode;
use reqwest::{StatusCode, header};

use crate::{
    common::{Fixture, TestStore, captured_logs},
    conformance::{get, link, pattern},
};

/// `store` is a fresh bucket with versioning on; `param` the query parameter its URLs name a version with.
pub async fn with_versions_every_url_names_the_committed_version(store: TestStore, param: &str) {
    let _ = captured_logs();
    anonymous_results::storage::install_tls_provider();
    let fx = Fixture::start(store).await;
    let logs = captured_logs();
    assert!(logs.contains("keeps object versions"), "the start-up says it uses versions: {logs}");
    let bytes = pattern(30_000);
    let allocated = fx.allocate("versioned").await;
    fx.write(&allocated, "part-0.parquet", &bytes).await;
    fx.commit(&allocated, vec![]).await.expect("a commit");
    let id = allocated.result_id.clone();
    let direct = link(&fx, &id, DownloadMode::Direct, None).await.url;
    let redirect = link(&fx, &id, DownloadMode::Redirect, None).await.url;
    let proxy = link(&fx, &id, DownloadMode::Proxy, None).await.url;
    assert!(direct.contains(&format!("?{param}=")), "a direct URL names the version: {direct}");

    let forged: Vec<u8> = bytes.iter().map(|b| b.wrapping_add(1)).collect();
    fx.write(&allocated, "part-0.parquet", &forged).await;
    assert_eq!(fx.store.fetch(&direct).await, bytes, "a direct URL still gives the committed bytes");
    let before = fx.server.storage_requests();
    let answer = get(&redirect, &[]).await;
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT, "no HEAD needed: the URL names the version");
    assert_eq!(fx.server.storage_requests(), before, "a redirect naming the version makes no storage request");
    let target = answer.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(target.contains(&format!("?{param}=")), "{target}");
    assert_eq!(fx.store.fetch(&target).await, bytes, "a redirect gives the committed bytes");
    let proxied = get(&proxy, &[]).await;
    assert_eq!(proxied.status(), StatusCode::OK);
    assert_eq!(proxied.bytes().await.unwrap(), bytes, "a proxy download reads the committed version");
    // What is at the name now is the other version: a URL without the version gets it.
    let latest = direct.replacen(&format!("?{param}="), "?ignored=", 1);
    assert_ne!(reqwest::get(&latest).await.unwrap().bytes().await.unwrap(), bytes);
    fx.stop().await;
}
