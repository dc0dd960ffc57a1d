//! The Google Cloud Storage backend against the GCS test server on loopback (`tests/servers/gcs.py`, which
//! implements the requests `object_store` makes, enforces generation preconditions and verifies V4 signed
//! URLs with the service account's public key): the conformance suite, and what only this cloud has (its
//! sink URIs and storage options, the key handed to workers, signed URLs, outages).

mod common;
mod conformance;

use common::TestStore;

mod gcs_server {
    use super::*;
    all_conformance_tests!(store_or_skip!(TestStore::gcs()));
}

mod clouds;

use std::sync::LazyLock;

/// The test service account's key file, as a worker gets it.
static KEY_JSON: LazyLock<String> = LazyLock::new(|| std::fs::read_to_string(common::gcs::SERVICE_ACCOUNT).unwrap());

/// A line of the test service account's private key: it must never appear where the key should not.
static KEY_LINE: LazyLock<String> = LazyLock::new(|| {
    let account: serde_json::Value = serde_json::from_str(&KEY_JSON).unwrap();
    account["private_key"].as_str().unwrap().lines().nth(5).expect("a key of several lines").to_owned()
});

mod cloud {
    use super::*;
    use crate::common::gcs::GcsServer;
    cloud_tests!(
        store_or_skip!(TestStore::gcs()),
        TestStore::on_gcs(store_or_skip!(async { GcsServer::own() })).await,
        secrets: &[KEY_LINE.as_str()],
        credential: ("google_service_account_key", KEY_JSON.as_str())
    );
}

use anonymous_results::Config;
use common::{Fixture, TestServer};

/// The sink keeps the URL's scheme as configured (`gs://`, `gcs://`) and its storage options are exactly what
/// a worker needs to write there: the key itself (read from the configured file, whose path may not exist on
/// a worker's host) and the store's URL. A worker given nothing else writes, and the client reads the files
/// back through the signed URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_the_configured_url_and_its_options_are_all_a_worker_needs() {
    let store = store_or_skip!(TestStore::gcs());
    let TestStore::Gcs { bucket, endpoint, .. } = &store else { unreachable!() };
    for scheme in ["gs", "gcs"] {
        let text = store
            .config_toml("")
            .replace(&format!("gs://{bucket}/polars/anonymous-results"), &format!("{scheme}://{bucket}/p"));
        let fx =
            Fixture { server: TestServer::start(&Config::from_toml(&text).unwrap()).await, store: TestStore::local() };
        let allocated = fx.allocate("q").await;
        let sink = allocated.sink.clone().unwrap();
        assert_eq!(sink.uri, format!("{scheme}://{bucket}/p/{}/", allocated.result_id));
        let options: std::collections::BTreeMap<&str, &str> =
            sink.storage_options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expected: std::collections::BTreeMap<&str, &str> =
            [("google_base_url", endpoint.as_str()), ("google_service_account_key", KEY_JSON.as_str())].into();
        assert_eq!(options, expected, "{scheme}: no path to a file the worker may not have");
        store.write(&sink, "year=2024/part-0.parquet", b"from a worker").await;
        let status = fx.commit(&allocated, vec![]).await.expect("a commit");
        assert_eq!(status.file_count, 1);
        let resolved = fx.resolve(&allocated.result_id).await.unwrap();
        assert_eq!(store.fetch(&resolved.locations[0].url).await, b"from a worker", "{scheme}");
        fx.server.stop().await;
    }
}

/// A key file that cannot be read, or that is not a service account key, stops the start-up with an error
/// naming the key and what to do, and showing none of the file's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_invalid_key_file_is_named_without_its_content() {
    let store = store_or_skip!(TestStore::gcs());
    let folder = tempfile::tempdir().unwrap();
    let not_a_key = folder.path().join("not-a-key.json");
    std::fs::write(&not_a_key, "{\"private_key\": \"s3cr3t-line\"}").unwrap();
    let not_json = folder.path().join("not-json.json");
    std::fs::write(&not_json, "s3cr3t-line").unwrap();
    let missing = folder.path().join("missing.json");
    for (path, expected) in [
        (&missing, "cannot read the service account key file"),
        (&not_a_key, "is not a service account key (it has no client_email and private_key)"),
        (&not_json, "is not a service account key (not JSON)"),
    ] {
        let text = store
            .config_toml("")
            .replace(&format!("{:?}", common::gcs::SERVICE_ACCOUNT), &format!("{:?}", path.to_str().unwrap()));
        let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
        let error = error.to_string();
        assert!(error.contains("anonymous_results.gcs.google_service_account_path"), "{error}");
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("s3cr3t-line"), "{error}");
    }
}

/// A bucket that does not exist is named at start-up, without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_at_start_up() {
    let store = store_or_skip!(TestStore::gcs());
    let TestStore::Gcs { bucket, .. } = &store else { unreachable!() };
    let text = store.config_toml("").replace(bucket.as_str(), "no-such-bucket");
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("`no-such-bucket` does not exist"), "{error}");
    assert!(!error.contains(KEY_LINE.as_str()), "{error}");
}

/// A bearer token lets the service (and workers) reach the bucket, but cannot sign the URLs Resolve
/// answers: the service refuses to start, saying what to configure, without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_alone_is_refused_at_start_up_as_it_cannot_sign_urls() {
    let store = store_or_skip!(TestStore::gcs());
    let token = common::gcs::token();
    let text = store.config_toml("").replace(
        &format!("anonymous_results.gcs.google_service_account_path = {:?}", common::gcs::SERVICE_ACCOUNT),
        &format!("anonymous_results.gcs.google_bearer_token = \"{token}\""),
    );
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("download URLs cannot be signed"), "{error}");
    assert!(error.contains("configure a service account key"), "{error}");
    assert!(!error.contains(&token), "{error}");
}
