//! Azure Blob Storage: the store, its signer and its description, from `[scheduler] anonymous_results.abs`,
//! whose keys are the Azure keys of Polars' `storage_options`.

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use object_store::{
    ObjectStore,
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    path::Path,
    signer::Signer,
};

use super::{
    ObjectStorage, StoreDescription,
    client::{CountingConnector, client_options, install_tls_provider, retry_config},
};
use crate::{
    config::{AzureConfig, ServiceConfig},
    secret::{Secret, redact_urls},
    storage::{Cause, StorageError, StorageLocation, presign::azure::SasSigner},
};

/// The option keys whose values are credentials, redacted from any error text.
const SECRET_OPTIONS: &[&str] = &[
    "azure_storage_account_key",
    "azure_storage_access_key",
    "azure_storage_master_key",
    "azure_storage_sas_key",
    "azure_storage_sas_token",
    "azure_storage_token",
    "azure_storage_client_secret",
    "azure_storage_encryption_key",
];
/// The account key, under each of its names.
const ACCOUNT_KEYS: &[&str] = &["azure_storage_account_key", "azure_storage_access_key", "azure_storage_master_key"];
const ENDPOINTS: &[&str] = &["azure_endpoint", "azure_storage_endpoint"];
/// Where the emulator listens when no endpoint is configured (as `object_store` and Polars assume).
const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000";

/// Connects to the container of `config` and checks that it honours create-only writes.
pub(crate) async fn open(config: &AzureConfig, service: &ServiceConfig) -> Result<ObjectStorage, StorageError> {
    install_tls_provider();
    let option = |key: &str| config.options.get(key).map(Secret::expose);
    let emulator = option("azure_storage_use_emulator") == Some("true");
    let endpoint = match ENDPOINTS.iter().find_map(|key| option(key)) {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None if emulator => format!("{EMULATOR_ENDPOINT}/{}", config.account),
        None => format!("https://{}.blob.core.windows.net", config.account),
    };
    let location = match ENDPOINTS.iter().any(|key| option(key).is_some()) {
        true => format!("{} at {}", config.url, redact_urls(&endpoint)),
        false => config.url.to_string(),
    };
    let secrets: Arc<[Secret]> = SECRET_OPTIONS.iter().filter_map(|key| config.options.get(*key)).cloned().collect();
    let requests = Arc::new(AtomicU64::new(0));
    let build = |options: &BTreeMap<String, Secret>, endpoint: &str| {
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(&config.account)
            .with_container_name(&config.url.container)
            .with_client_options(client_options(&service.storage).with_allow_http(endpoint.starts_with("http://")))
            .with_retry(retry_config(&service.storage))
            .with_http_connector(CountingConnector { requests: requests.clone() });
        for (key, value) in options {
            let key = AzureConfigKey::from_str(key)
                .map_err(|e| StorageError::Config { message: format!("storage option `{key}`: {e}") })?;
            builder = builder.with_config(key, value.expose());
        }
        builder
            .with_endpoint(endpoint.to_owned())
            .build()
            .map_err(|e| StorageError::Config { message: Cause::new(e, secrets.clone()).to_string() })
    };
    let store = build(&config.options, &endpoint)?;
    let client_endpoint = service.urls.client_endpoint_url.as_ref().map_or(endpoint.as_str(), Secret::expose);
    let signer = match &service.urls.client_endpoint_url {
        Some(client_endpoint) => build(&config.options, client_endpoint.expose())?,
        None => store.clone(),
    };
    // The workers' own credentials, probed where the service reaches the store.
    let workers = match &service.worker_storage_options {
        Some(options) => Some(Arc::new(build(options, &endpoint)?) as Arc<dyn ObjectStore>),
        None => None,
    };
    let bulk_signer =
        calibrate(&store, config, &endpoint, client_endpoint).await.map(|signer| Arc::new(signer) as Arc<_>);
    let description = StoreDescription {
        root_uri: config.url.root(),
        bucket: config.url.container.clone(),
        prefix: config.url.prefix.clone(),
        worker_options: worker_options(config, service, &endpoint),
        location: StorageLocation::Remote(location.into()),
        secrets,
        url_key: "anonymous_results.abs.url",
        signing_credentials: "azure_storage_account_key, or Azure AD credentials (azure_storage_client_id with azure_storage_client_secret and azure_storage_tenant_id, or a managed identity); a SAS token cannot sign new URLs",
        customer_key: config
            .options
            .contains_key("azure_storage_encryption_key")
            .then_some("azure_storage_encryption_key"),
        // The service names no Azure blob version in a URL (its SAS for a version is signed otherwise).
        version_param: None,
    };
    ObjectStorage::open(
        Arc::new(store),
        Arc::new(signer),
        bulk_signer,
        workers,
        description,
        &service.storage,
        requests,
    )
    .await
}

/// The storage options handed to workers: the configured keys, plus `azure_allow_http = "true"` when the
/// endpoint is `http://` and the key is not set (a worker on object_store refuses plain HTTP without it).
fn worker_options(config: &AzureConfig, service: &ServiceConfig, endpoint: &str) -> BTreeMap<String, Secret> {
    // `worker_storage_options`, where configured, instead of the service's own.
    let mut options = service.worker_storage_options.clone().unwrap_or_else(|| config.options.clone());
    if endpoint.starts_with("http://") && !options.contains_key("azure_allow_http") {
        options.insert("azure_allow_http".to_owned(), Secret::new("true"));
    }
    options
}

/// The SAS signer for `client_endpoint`, when the service holds the account key, no customer-provided key
/// is configured (its blobs are read with the key's headers), and the signer makes the signature
/// `object_store` makes for a probe blob at `endpoint`. With Azure AD credentials, `object_store` signs
/// (a user delegation SAS).
async fn calibrate(
    store: &object_store::azure::MicrosoftAzure,
    config: &AzureConfig,
    endpoint: &str,
    client_endpoint: &str,
) -> Option<SasSigner> {
    let key = ACCOUNT_KEYS.iter().find_map(|key| config.options.get(*key))?;
    if config.options.contains_key("azure_storage_encryption_key") {
        return None;
    }
    let probe = Path::from_iter(
        config.url.prefix.split('/').chain(["_control", "probe", "a-b_c.parquet"]).filter(|p| !p.is_empty()),
    );
    let url = store.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(3600)).await.ok()?;
    let (account, container) = (&config.account, &config.url.container);
    let ours = SasSigner::new(endpoint, account, container, key.expose())?;
    if !ours.reproduces(url.as_str(), probe.as_ref()) {
        tracing::warn!("Azure URLs are signed by object_store: the service's signer did not match it");
        return None;
    }
    SasSigner::new(client_endpoint, account, container, key.expose())
}
