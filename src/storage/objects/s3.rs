//! Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, R2, ...): the store, its signer and its description,
//! from `[scheduler] anonymous_results.s3`, whose keys are the AWS keys of Polars' `storage_options`.

use std::{
    str::FromStr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use object_store::{
    ObjectStore,
    aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey},
    path::Path,
    signer::{SignedUrlOptions, Signer},
};

use super::{
    ObjectStorage, StoreDescription,
    client::{CountingConnector, client_options, install_tls_provider, retry_config},
};
use crate::{
    config::{S3Config, ServiceConfig},
    secret::{Secret, redact_urls},
    storage::{
        Cause, StorageError, StorageLocation,
        presign::{Target, sigv4::FastSigner},
    },
};

/// The option keys whose values are credentials, redacted from any error text.
const SECRET_OPTIONS: &[&str] =
    &["aws_secret_access_key", "aws_session_token", "aws_token", "aws_sse_customer_key_base64"];

/// Connects to the bucket of `config` and checks that it honours create-only writes.
pub(crate) async fn open(config: &S3Config, service: &ServiceConfig) -> Result<ObjectStorage, StorageError> {
    install_tls_provider();
    let endpoint = config.options.get("aws_endpoint_url").or_else(|| config.options.get("aws_endpoint"));
    let location = match endpoint {
        Some(endpoint) => format!("{} at {}", config.url, redact_urls(endpoint.expose())),
        None => config.url.to_string(),
    };
    let secrets: Arc<[Secret]> = SECRET_OPTIONS.iter().filter_map(|key| config.options.get(*key)).cloned().collect();
    let requests = Arc::new(AtomicU64::new(0));
    let build = |options: &std::collections::BTreeMap<String, Secret>, endpoint_override: Option<&str>| {
        // Client options first: `with_client_options` replaces any set before (`aws_allow_http` among them).
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.url.bucket)
            .with_client_options(client_options(&service.storage))
            .with_retry(retry_config(&service.storage))
            .with_http_connector(CountingConnector { requests: requests.clone() });
        for (key, value) in options {
            let key = AmazonS3ConfigKey::from_str(key)
                .map_err(|e| StorageError::Config { message: format!("storage option `{key}`: {e}") })?;
            builder = builder.with_config(key, value.expose());
        }
        if let Some(endpoint) = endpoint_override {
            builder = builder.with_endpoint(endpoint);
        }
        // An http:// endpoint works as configured, with no extra key.
        if endpoint_override.or(endpoint.map(Secret::expose)).is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        builder.build().map_err(|e| StorageError::Config { message: Cause::new(e, secrets.clone()).to_string() })
    };
    let store = build(&config.options, None)?;
    let signer = match &service.urls.client_endpoint_url {
        Some(client_endpoint) => build(&config.options, Some(client_endpoint.expose()))?,
        None => store.clone(),
    };
    // The workers' own credentials, probed where the service reaches the store.
    let workers = match &service.worker_storage_options {
        Some(options) => Some(Arc::new(build(options, endpoint.map(Secret::expose))?) as Arc<dyn ObjectStore>),
        None => None,
    };
    let bulk_signer = calibrate_bulk_signer(&signer, config).await.map(|signer| Arc::new(signer) as Arc<_>);
    let description = StoreDescription {
        root_uri: format!("s3://{}", config.url.bucket),
        bucket: config.url.bucket.clone(),
        prefix: config.url.prefix.clone(),
        worker_options: worker_options(config, service),
        location: StorageLocation::Remote(location.into()),
        secrets,
        url_key: "anonymous_results.s3.url",
        signing_credentials: "aws_access_key_id and aws_secret_access_key (or credentials the environment provides)",
        customer_key: sse_c(config).then_some("aws_sse_customer_key_base64"),
        version_param: Some("versionId"),
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

/// The storage options handed to workers: the configured keys (`worker_storage_options`, or the service's
/// own), plus `aws_allow_http = "true"` when the endpoint
/// is `http://` and the key is not set: a worker on object_store refuses plain HTTP without it (Polars takes
/// either), while the service itself uses such an endpoint as configured.
fn worker_options(config: &S3Config, service: &ServiceConfig) -> std::collections::BTreeMap<String, Secret> {
    // `worker_storage_options`, where configured, instead of the service's own.
    let mut options = service.worker_storage_options.clone().unwrap_or_else(|| config.options.clone());
    let endpoint = options.get("aws_endpoint_url").or_else(|| options.get("aws_endpoint"));
    if endpoint.is_some_and(|e| e.expose().starts_with("http://")) && !options.contains_key("aws_allow_http") {
        options.insert("aws_allow_http".to_owned(), Secret::new("true"));
    }
    options
}

/// The bulk SigV4 signer for `signer`'s URLs, if the credentials are static and it reproduces exactly the URL
/// `object_store` signs for a probe object.
async fn calibrate_bulk_signer(signer: &AmazonS3, config: &S3Config) -> Option<FastSigner> {
    let option = |key: &str| config.options.get(key);
    let (key_id, secret) = (option("aws_access_key_id")?, option("aws_secret_access_key")?);
    let token = option("aws_session_token").or_else(|| option("aws_token"));
    let probe = Path::from_iter(
        config.url.prefix.split('/').chain(["_control", "probe dir", "a b+c=d~é.parquet"]).filter(|p| !p.is_empty()),
    );
    let url = signer.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(3600)).await.ok()?;
    let fast = FastSigner::calibrate(url.as_str(), probe.as_ref(), key_id.expose(), secret, token)?;
    // And of one version, as URLs of a bucket that keeps versions name each file's.
    let version = SignedUrlOptions::default().with_query([("versionId", PROBE_VERSION)]);
    let versioned = signer.signed_url_opts(reqwest::Method::GET, &probe, Duration::from_secs(3600), &version);
    let of_version = Target { path: probe.as_ref(), version: Some(PROBE_VERSION) };
    fast.reproduces(versioned.await.ok()?.as_str(), of_version).then_some(fast)
}

/// The version id the signer's calibration signs a URL of (as AWS makes them).
const PROBE_VERSION: &str = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY";

/// Whether objects are written and read with a customer-provided key (SSE-C): `object_store` (and so Polars)
/// sends the key only with `aws_server_side_encryption = "sse-c"`.
fn sse_c(config: &S3Config) -> bool {
    ["aws_server_side_encryption", "server_side_encryption"]
        .iter()
        .any(|key| config.options.get(*key).is_some_and(|value| value.expose().eq_ignore_ascii_case("sse-c")))
}
