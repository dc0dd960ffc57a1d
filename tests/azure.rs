//! The Azure Blob Storage backend against Azurite on loopback: the conformance suite, and what only this
//! cloud has (its sink URIs and storage options, SAS URLs, outages).

mod common;
mod conformance;

use common::TestStore;

mod azurite {
    use super::*;
    all_conformance_tests!(store_or_skip!(TestStore::azurite()));
}

mod clouds;

mod cloud {
    use super::*;
    use crate::common::azurite::{Azurite, KEY};
    cloud_tests!(
        store_or_skip!(TestStore::azurite()),
        TestStore::on_azurite(store_or_skip!(async { Azurite::own() })).await,
        secrets: &[KEY],
        credential: ("azure_storage_account_key", KEY)
    );
}

use anonymous_results::Config;
use common::{Fixture, TestServer, azurite as emulator};

/// The sink keeps the URL's scheme and form as configured (`az://`, `abfs://`, `abfss://container@host`), and
/// its storage options are exactly what a worker needs to write there: a worker given nothing else writes,
/// and the client reads the files back through the SAS URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_the_configured_url_and_its_options_are_all_a_worker_needs() {
    let store = store_or_skip!(TestStore::azurite());
    let TestStore::Azure { container, endpoint, .. } = &store else { unreachable!() };
    let host = format!("{}.dfs.core.windows.net", emulator::ACCOUNT);
    for (url, root) in [
        (format!("az://{container}/p"), format!("az://{container}/p/")),
        (format!("abfs://{container}/p"), format!("abfs://{container}/p/")),
        (format!("abfss://{container}@{host}/p"), format!("abfss://{container}@{host}/p/")),
    ] {
        let mut text = store.config_toml("").replace(&format!("az://{container}/polars/anonymous-results"), &url);
        if url.contains('@') {
            // The account is in the URL: the option would only repeat it.
            text = text.replace(
                &format!("anonymous_results.abs.azure_storage_account_name = \"{}\"\n", emulator::ACCOUNT),
                "",
            );
        }
        let fx =
            Fixture { server: TestServer::start(&Config::from_toml(&text).unwrap()).await, store: TestStore::local() };
        let allocated = fx.allocate("q").await;
        let sink = allocated.sink.clone().unwrap();
        assert_eq!(sink.uri, format!("{root}{}/", allocated.result_id));
        let mut expected = vec![
            ("azure_allow_http", "true"),
            ("azure_endpoint", endpoint.as_str()),
            ("azure_storage_account_key", emulator::KEY),
        ];
        if !url.contains('@') {
            expected.push(("azure_storage_account_name", emulator::ACCOUNT));
        }
        let options: Vec<(&str, &str)> = sink
            .storage_options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        assert_eq!(options, expected, "{url}");
        store.write(&sink, "year=2024/part-0.parquet", b"from a worker").await;
        let status = fx.commit(&allocated, vec![]).await.expect("a commit");
        assert_eq!(status.file_count, 1);
        let resolved = fx.resolve(&allocated.result_id).await.unwrap();
        assert_eq!(store.fetch(&resolved.locations[0].url).await, b"from a worker", "{url}");
        fx.server.stop().await;
    }
}

/// A store that refuses create-only writes' condition would let two commits win: there is none such on
/// Azure, but the start-up probe's outcome for a missing container names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_named_at_start_up() {
    let store = store_or_skip!(TestStore::azurite());
    let TestStore::Azure { container, .. } = &store else { unreachable!() };
    let text = store.config_toml("").replace(container.as_str(), "no-such-container");
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("`no-such-container` does not exist"), "{error}");
    assert!(!error.contains(emulator::KEY), "{error}");
}

/// A SAS token lets the service (and workers) write, but cannot sign the URLs Resolve answers: the service
/// refuses to start, saying what to configure, without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_token_alone_is_refused_at_start_up_as_it_cannot_sign_urls() {
    use base64::Engine;
    let store = store_or_skip!(TestStore::azurite());
    let TestStore::Azure { container, .. } = &store else { unreachable!() };
    // A service SAS for the whole container: read, add, create, write, delete and list, for an hour.
    let expiry = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    let to_sign =
        format!("racwdl\n\n{expiry}\n/blob/{}/{container}\n\n\n\n2023-11-03\nc\n\n\n\n\n\n\n", emulator::ACCOUNT);
    let key = base64::engine::general_purpose::STANDARD.decode(emulator::KEY).unwrap();
    let signature = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(signature);
    let encoded = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let sas = format!("sv=2023-11-03&sp=racwdl&sr=c&se={}&sig={}", encoded(&expiry.to_string()), encoded(&signature));
    let text = store.config_toml("").replace(
        &format!("anonymous_results.abs.azure_storage_account_key = \"{}\"", emulator::KEY),
        &format!("anonymous_results.abs.azure_storage_sas_key = \"{sas}\""),
    );
    let error = anonymous_results::Service::from_config(&Config::from_toml(&text).unwrap()).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("download URLs cannot be signed"), "{error}");
    assert!(error.contains("configure azure_storage_account_key, or Azure AD credentials"), "{error}");
    for secret in [signature.as_str(), &encoded(&signature), emulator::KEY] {
        assert!(!error.contains(secret), "{error}");
    }
}

/// A customer-provided key: only proxy downloads, with the key (seen on the wire: Azurite implements no such
/// key, and in loose mode ignores it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_customer_provided_key_only_proxy_downloads() {
    use base64::Engine;
    let store = TestStore::on_azurite(store_or_skip!(async { emulator::Azurite::own_loose() })).await;
    let TestStore::Azure { server, .. } = &store else { unreachable!() };
    let link = common::fault::FaultyLink::start(&server.endpoint).await;
    let store = store.reached_at(&link.endpoint);
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let text = store.config_toml("").replace(
        "anonymous_results.abs.azure_endpoint",
        &format!(
            "anonymous_results.abs.azure_storage_encryption_key = \"{key}\"\nanonymous_results.abs.azure_endpoint"
        ),
    );
    let fx = Fixture { server: TestServer::start(&Config::from_toml(&text).unwrap()).await, store };
    clouds::only_proxy_downloads_with_a_customer_key(fx, &link, "azure_storage_encryption_key", "x-ms-encryption-key")
        .await;
}
