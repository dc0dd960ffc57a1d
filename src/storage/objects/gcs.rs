//! Google Cloud Storage: the store, its signer and its description, from `[scheduler] anonymous_results.gcs`,
//! whose keys are the Google keys of Polars' `storage_options`.

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use object_store::{
    ObjectStore,
    gcp::{GoogleCloudStorageBuilder, GoogleConfigKey},
    path::Path,
    signer::{SignedUrlOptions, Signer},
};

use super::{
    ObjectStorage, StoreDescription,
    client::{CountingConnector, client_options, install_tls_provider, retry_config},
};
use crate::{
    config::{GcsConfig, ServiceConfig},
    secret::{Secret, redact_urls},
    storage::{
        Cause, StorageError, StorageLocation,
        presign::{
            Target,
            gcs::{DEFAULT_HOST, GcsSigner},
        },
    },
};

/// The keys naming a service account key file; the service reads it and workers get the key itself.
const KEY_FILES: &[&str] = &["google_service_account_path", "google_service_account"];
const KEY: &str = "google_service_account_key";
const BASE_URL: &str = "google_base_url";
const DEFAULT_BASE_URL: &str = "https://storage.googleapis.com";
/// The generation the signer's calibration signs a URL of.
const PROBE_GENERATION: &str = "1765076400123456";

/// Connects to the bucket of `config` and checks that it honours create-only writes.
pub(crate) async fn open(config: &GcsConfig, service: &ServiceConfig) -> Result<ObjectStorage, StorageError> {
    install_tls_provider();
    let (options, account) = with_key_read(&config.options, "anonymous_results.gcs")?;
    // `worker_storage_options`, where configured, instead of the service's own (a key file read here too).
    let workers_options = match &service.worker_storage_options {
        Some(workers) => Some(with_key_read(workers, "anonymous_results_service.worker_storage_options")?.0),
        None => None,
    };
    let base_url = options.get(BASE_URL).map_or(DEFAULT_BASE_URL, Secret::expose).to_owned();
    let location = match options.contains_key(BASE_URL) {
        true => format!("{} at {}", config.url, redact_urls(&base_url)),
        false => config.url.to_string(),
    };
    let mut secrets: Vec<Secret> =
        ["google_bearer_token", KEY].iter().filter_map(|key| options.get(*key)).cloned().collect();
    secrets.extend(account.as_ref().map(|account| account.private_key.clone()));
    let secrets: Arc<[Secret]> = secrets.into();
    let requests = Arc::new(AtomicU64::new(0));
    let build = |options: &BTreeMap<String, Secret>, base_url: &str| {
        let mut builder = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&config.url.bucket)
            .with_client_options(client_options(&service.storage).with_allow_http(base_url.starts_with("http://")))
            .with_retry(retry_config(&service.storage))
            .with_http_connector(CountingConnector { requests: requests.clone() });
        for (key, value) in options {
            let key = GoogleConfigKey::from_str(key)
                .map_err(|e| StorageError::Config { message: format!("storage option `{key}`: {e}") })?;
            builder = builder.with_config(key, value.expose());
        }
        builder
            .with_base_url(base_url)
            .build()
            .map_err(|e| StorageError::Config { message: Cause::new(e, secrets.clone()).to_string() })
    };
    let store = build(&options, &base_url)?;
    let client_base = service.urls.client_endpoint_url.as_ref().map_or(base_url.as_str(), Secret::expose);
    let signer = match &service.urls.client_endpoint_url {
        Some(client_base) => build(&options, client_base.expose())?,
        None => store.clone(),
    };
    // The workers' own credentials, probed where the service reaches the store.
    let workers = match &workers_options {
        Some(workers) => Some(Arc::new(build(workers, &base_url)?) as Arc<dyn ObjectStore>),
        None => None,
    };
    let bulk_signer = match &account {
        Some(account) => calibrate(config, client_base, account).await,
        None => None,
    };
    let description = StoreDescription {
        root_uri: format!("{}://{}", config.url.scheme, config.url.bucket),
        bucket: config.url.bucket.clone(),
        prefix: config.url.prefix.clone(),
        worker_options: workers_options.unwrap_or_else(|| options.clone()),
        location: StorageLocation::Remote(location.into()),
        secrets,
        url_key: "anonymous_results.gcs.url",
        signing_credentials: "a service account key (google_service_account_path or google_service_account_key); a bearer token cannot sign URLs",
        customer_key: None,
        version_param: Some("generation"),
    };
    let bulk_signer = bulk_signer.map(|signer| Arc::new(signer) as Arc<_>);
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

/// What the service needs of a service account key: who it is and its private key.
struct ServiceAccount {
    email: String,
    private_key: Secret,
}

/// `options` (of the table `table`, for messages) with a key file read into `google_service_account_key`
/// (workers may not have the file), and the service account that key is, if it is one with a private key.
fn with_key_read(
    options: &BTreeMap<String, Secret>,
    table: &str,
) -> Result<(BTreeMap<String, Secret>, Option<ServiceAccount>), StorageError> {
    let mut options = options.clone();
    let mut source = format!("{table}.{KEY}");
    for file_key in KEY_FILES {
        if let Some(path) = options.remove(*file_key) {
            source = format!("{table}.{file_key}");
            let text = std::fs::read_to_string(path.expose()).map_err(|e| StorageError::Config {
                message: format!("{source}: cannot read the service account key file: {}", e.kind()),
            })?;
            options.insert(KEY.to_owned(), Secret::new(text));
        }
    }
    let Some(key) = options.get(KEY) else { return Ok((options, None)) };
    let invalid = |what: &str| StorageError::Config {
        message: format!("{source}: is not a service account key ({what}): use the JSON key file Google made"),
    };
    let json: serde_json::Value = serde_json::from_str(key.expose()).map_err(|_| invalid("not JSON"))?;
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_str);
    let account = match (field("client_email"), field("private_key")) {
        (Some(email), Some(private_key)) => {
            Some(ServiceAccount { email: email.to_owned(), private_key: Secret::new(private_key) })
        }
        _ => return Err(invalid("it has no client_email and private_key")),
    };
    Ok((options, account))
}

/// A signer for `client_base` (the store as clients reach it), once it has made exactly the URL `object_store`
/// makes for a probe object at the default host with the same key. (The store itself may not sign at all: a
/// key with `disable_oauth` makes `object_store` ask a Google service to sign.)
async fn calibrate(config: &GcsConfig, client_base: &str, account: &ServiceAccount) -> Option<GcsSigner> {
    let key = serde_json::json!({
        "client_email": account.email,
        "private_key": account.private_key.expose(),
        "private_key_id": "probe",
    });
    let reference = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&config.url.bucket)
        .with_service_account_key(key.to_string())
        .build()
        .ok()?;
    // Parsed, not built from parts: a part's `~` would be escaped in the path itself, as a name never is.
    let probe = Path::parse(
        config
            .url
            .prefix
            .split('/')
            .chain(["_control", "probe dir", "a-b_c.d~é.parquet"])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/"),
    )
    .ok()?;
    let url = reference.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(3600)).await.ok()?;
    // And of one generation, as URLs of a bucket that keeps versions name each file's.
    let generation = SignedUrlOptions::default().with_query([("generation", PROBE_GENERATION)]);
    let versioned = reference.signed_url_opts(reqwest::Method::GET, &probe, Duration::from_secs(3600), &generation);
    let versioned = versioned.await.ok()?;
    let private_key = account.private_key.expose();
    let ours = GcsSigner::new(DEFAULT_BASE_URL, &config.url.bucket, &account.email, private_key).ok()?;
    let of_generation = Target { path: probe.as_ref(), version: Some(PROBE_GENERATION) };
    if !ours.reproduces(url.as_str(), Target::latest(probe.as_ref()))
        || !ours.reproduces(versioned.as_str(), of_generation)
    {
        tracing::warn!(
            "GCS URLs are signed by object_store, for {DEFAULT_HOST}: the service's signer did not match it"
        );
        return None;
    }
    GcsSigner::new(client_base, &config.url.bucket, &account.email, private_key).ok()
}
