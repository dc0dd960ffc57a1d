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

/// A bucket with Object Versioning on: every URL names the committed generation of each file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_object_versioning_every_url_names_the_committed_generation() {
    let server = store_or_skip!(async { common::gcs::GcsServer::own() });
    let store = TestStore::on_gcs_with(server, true).await;
    clouds::with_versions_every_url_names_the_committed_version(store, "generation").await;
}

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

/// Object Versioning and generations on the GCS test server, reached as the service reaches Google (with
/// `object_store`'s GCS client, and with V4 signed URLs): a write answers its generation; in a bucket with
/// versioning on, a generation named by its number is served as committed after an overwrite, a delete and a
/// restart of the server, and in a bucket without it an overwritten generation is gone; an entity tag and a
/// generation precondition hold for the one generation they name.
mod generations {
    use object_store::{
        GetOptions, ObjectStore, ObjectStoreExt, PutPayload, gcp::GoogleCloudStorageBuilder, path::Path,
    };

    use crate::{
        common::{
            self,
            gcs::{GcsServer, signed_url},
        },
        store_or_skip,
    };

    const FIRST: &[u8] = b"the bytes committed first";
    const SECOND: &[u8] = b"an overwrite, longer than the first";

    /// A GCS client of `bucket` on `server`, as the service builds one.
    fn client(server: &GcsServer, bucket: &str) -> impl ObjectStore {
        GoogleCloudStorageBuilder::new()
            .with_bucket_name(bucket)
            .with_service_account_path(common::gcs::SERVICE_ACCOUNT)
            .with_base_url(&server.endpoint)
            .build()
            .expect("a GCS client")
    }

    /// The bytes of `path` as `options` get them.
    async fn get(store: &impl ObjectStore, path: &Path, options: GetOptions) -> object_store::Result<Vec<u8>> {
        Ok(store.get_opts(path, options).await?.bytes().await?.to_vec())
    }

    fn version(generation: &str) -> GetOptions {
        GetOptions { version: Some(generation.to_owned()), ..Default::default() }
    }

    /// Writes FIRST then SECOND at `path`: the generation and entity tag of each.
    async fn write_twice(store: &impl ObjectStore, path: &Path) -> [(String, String); 2] {
        let mut written = Vec::new();
        for bytes in [FIRST, SECOND] {
            let put = store.put(path, PutPayload::from_static(bytes)).await.expect("a put");
            let generation = put.version.expect("x-goog-generation on a put");
            let head = store.head(path).await.expect("a head");
            assert_eq!(head.version.as_deref(), Some(generation.as_str()), "a head names the live generation");
            assert_eq!(head.e_tag, put.e_tag);
            assert_eq!(head.size, bytes.len() as u64);
            written.push((generation, put.e_tag.expect("an entity tag")));
        }
        assert_ne!(written[0].0, written[1].0, "each write makes a generation");
        written.try_into().unwrap()
    }

    #[tokio::test]
    async fn an_overwritten_generation_is_served_by_number_from_a_versioned_bucket_only() {
        let mut server = store_or_skip!(async { GcsServer::own() });
        let versioned = format!("versioned-{}", common::random_suffix());
        let unversioned = format!("unversioned-{}", common::random_suffix());
        server.create_versioned_bucket(&versioned).await;
        server.create_bucket(&unversioned).await;
        let path = Path::from("p/year 2024/part-1.csv");
        let mut generations = Vec::new();
        for (bucket, keeps) in [(&versioned, true), (&unversioned, false)] {
            let store = client(&server, bucket);
            let [(first, first_tag), (second, _)] = write_twice(&store, &path).await;
            assert_eq!(get(&store, &path, GetOptions::default()).await.unwrap(), SECOND, "{bucket}");
            assert_eq!(get(&store, &path, version(&second)).await.unwrap(), SECOND, "{bucket}");
            let old = get(&store, &path, version(&first)).await;
            if keeps {
                assert_eq!(old.unwrap(), FIRST, "{bucket}");
                // Conditions hold for the generation served.
                let options = GetOptions { if_match: Some(first_tag.clone()), ..version(&first) };
                assert_eq!(get(&store, &path, options).await.unwrap(), FIRST, "{bucket}");
                let head = store.get_opts(&path, GetOptions { head: true, ..version(&first) }).await.unwrap();
                assert_eq!(head.meta.version.as_deref(), Some(first.as_str()));
                assert_eq!(head.meta.e_tag.as_deref(), Some(first_tag.as_str()));
                assert_eq!(head.meta.size, FIRST.len() as u64);
            } else {
                assert!(matches!(old, Err(object_store::Error::NotFound { .. })), "{bucket}: {old:?}");
            }
            let options = GetOptions { if_match: Some(first_tag), ..Default::default() };
            let stale = get(&store, &path, options).await;
            assert!(matches!(stale, Err(object_store::Error::Precondition { .. })), "{bucket}: {stale:?}");
            let listed = store.list_with_delimiter(Some(&Path::from("p/year 2024"))).await.unwrap().objects;
            assert_eq!(listed.len(), 1, "{bucket}: live objects only: {listed:?}");
            assert_eq!(listed[0].size, SECOND.len() as u64);
            generations.push((first, second));
        }

        // A delete of the live object keeps its generation in the versioned bucket, and all survive a restart.
        let store = client(&server, &versioned);
        store.delete(&path).await.expect("a delete");
        assert!(matches!(store.head(&path).await, Err(object_store::Error::NotFound { .. })));
        server.stop();
        server.restart();
        let (first, second) = &generations[0];
        assert_eq!(get(&store, &path, version(first)).await.unwrap(), FIRST);
        assert_eq!(get(&store, &path, version(second)).await.unwrap(), SECOND);
        assert!(matches!(store.head(&path).await, Err(object_store::Error::NotFound { .. })));
        let store = client(&server, &unversioned);
        let (first, second) = &generations[1];
        assert!(matches!(get(&store, &path, version(first)).await, Err(object_store::Error::NotFound { .. })));
        assert_eq!(get(&store, &path, version(second)).await.unwrap(), SECOND);
    }

    #[tokio::test]
    async fn a_signed_url_naming_a_generation_serves_the_committed_bytes_after_an_overwrite() {
        let server = store_or_skip!(async { GcsServer::own() });
        let versioned = format!("versioned-{}", common::random_suffix());
        let unversioned = format!("unversioned-{}", common::random_suffix());
        server.create_versioned_bucket(&versioned).await;
        server.create_bucket(&unversioned).await;
        let name = "p/year 2024/part-1.csv";
        let fetch = |url: String| async move {
            let response = reqwest::get(&url).await.expect("a GET of a signed URL");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("a body").to_vec())
        };
        for (bucket, keeps) in [(&versioned, true), (&unversioned, false)] {
            let [(first, _), (second, _)] = write_twice(&client(&server, bucket), &Path::from(name)).await;
            let old = fetch(signed_url(&server.endpoint, bucket, name, &[("generation", &first)])).await;
            if keeps {
                assert_eq!(old, (200, FIRST.to_vec()), "{bucket}");
            } else {
                assert_eq!(old.0, 404, "{bucket}: {}", String::from_utf8_lossy(&old.1));
            }
            let live = fetch(signed_url(&server.endpoint, bucket, name, &[])).await;
            assert_eq!(live, (200, SECOND.to_vec()), "{bucket}");
            // The generation is signed: a URL made to name another is refused.
            let url = signed_url(&server.endpoint, bucket, name, &[("generation", &first)]);
            let changed = fetch(url.replace(&format!("generation={first}"), &format!("generation={second}"))).await;
            assert_eq!(changed.0, 403, "{bucket}: {}", String::from_utf8_lossy(&changed.1));
            let malformed = fetch(signed_url(&server.endpoint, bucket, name, &[("generation", "0")])).await;
            assert_eq!(malformed.0, 400, "{bucket}: {}", String::from_utf8_lossy(&malformed.1));
            assert!(String::from_utf8_lossy(&malformed.1).contains("<Code>InvalidArgument</Code>"), "{bucket}");
        }
    }
}
