//! Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, R2, ...): the store, its signer and its description,
//! from `[scheduler] anonymous_results.s3`, whose keys are the AWS keys of Polars' `storage_options`.

use std::{
    collections::BTreeMap,
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
    sts::{Session, Sts, StsSettings},
};
use crate::{
    config::{MIN_SESSION, S3Config, ScopedCredentials, ServiceConfig, StorageClientConfig, WorkerCredentials},
    model::ResultId,
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
    let build = |options: &BTreeMap<String, Secret>, endpoint_override: Option<&str>| {
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
    let sts = match &service.worker_credentials {
        WorkerCredentials::Scoped(scoped) => {
            let settings = sts_settings(config, scoped, &service.storage, &location, &secrets);
            Some(Sts::new(settings, store.credentials().clone(), requests.clone()))
        }
        WorkerCredentials::Shared => None,
    };
    // The workers' own credentials (a session of their role, for a sink no result has, when they are
    // scoped), probed where the service reaches the store.
    let workers_options = match &sts {
        Some(sts) => Some(probe_session(sts, worker_options(config, service)).await?),
        None => service.worker_storage_options.clone(),
    };
    let workers = match &workers_options {
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
    let mut storage = ObjectStorage::open(
        Arc::new(store),
        Arc::new(signer),
        bulk_signer,
        workers,
        description,
        &service.storage,
        requests,
    )
    .await?;
    storage.sts = sts;
    Ok(storage)
}

/// The option keys that are credentials, which a session's replace.
const CREDENTIAL_OPTIONS: &[&str] = &["aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_token"];

/// `options` with the credentials of `session` in place of any configured.
pub(super) fn with_session(mut options: BTreeMap<String, Secret>, session: Session) -> BTreeMap<String, Secret> {
    options.retain(|key, _| !CREDENTIAL_OPTIONS.contains(&key.as_str()));
    options.insert("aws_access_key_id".to_owned(), session.access_key_id);
    options.insert("aws_secret_access_key".to_owned(), session.secret_access_key);
    options.insert("aws_session_token".to_owned(), session.session_token);
    options
}

/// The storage options of a session of the workers' role, for a sink no result has: what the start-up probe
/// checks. A role that cannot be assumed stops the start.
async fn probe_session(sts: &Sts, options: BTreeMap<String, Secret>) -> Result<BTreeMap<String, Secret>, StorageError> {
    let probe = ResultId::generate()
        .map_err(|e| StorageError::Config { message: format!("the operating system's random source failed: {e}") })?;
    match sts.assume(&probe, MIN_SESSION).await {
        Ok(session) => Ok(with_session(options, session)),
        Err(error) => Err(StorageError::Config {
            message: format!(
                "the workers' scoped credentials cannot be made ({error}): check worker_role_arn (that the \
                 service's credentials may assume it) and worker_sts_endpoint in [anonymous_results_service]"
            ),
        }),
    }
}

/// Where and how STS is asked for the workers' sessions: `worker_sts_endpoint`, else the configured endpoint
/// (MinIO and Ceph RGW serve STS there), else AWS's regional STS.
fn sts_settings(
    config: &S3Config,
    scoped: &ScopedCredentials,
    client: &StorageClientConfig,
    location: &str,
    secrets: &Arc<[Secret]>,
) -> StsSettings {
    let option = |key: &str| config.options.get(key).map(Secret::expose);
    let region = ["aws_region", "region", "aws_default_region", "default_region"]
        .iter()
        .find_map(|key| option(key))
        .unwrap_or(DEFAULT_REGION)
        .to_owned();
    let endpoint = match (&scoped.sts_endpoint, option("aws_endpoint_url").or_else(|| option("aws_endpoint"))) {
        (Some(sts), _) => sts.clone(),
        (None, Some(endpoint)) => endpoint.to_owned(),
        (None, None) => format!("https://sts.{region}.amazonaws.com"),
    };
    let location = StorageLocation::Remote(format!("STS at {} (for {location})", redact_urls(&endpoint)).into());
    StsSettings {
        endpoint,
        region,
        role_arn: scoped.role_arn.clone(),
        session_max: scoped.session_max,
        bucket: config.url.bucket.clone(),
        prefix: config.url.prefix.clone(),
        timeout: client.timeout,
        location,
        secrets: secrets.clone(),
    }
}

/// The region requests are signed for when none is configured, as `object_store` assumes.
const DEFAULT_REGION: &str = "us-east-1";

/// The storage options handed to workers: the configured keys (`worker_storage_options`, or the service's
/// own), plus `aws_allow_http = "true"` when the endpoint
/// is `http://` and the key is not set: a worker on object_store refuses plain HTTP without it (Polars takes
/// either), while the service itself uses such an endpoint as configured. With scoped credentials, none of
/// the configured credentials: each sink's session adds its own.
fn worker_options(config: &S3Config, service: &ServiceConfig) -> BTreeMap<String, Secret> {
    // `worker_storage_options`, where configured, instead of the service's own.
    let mut options = service.worker_storage_options.clone().unwrap_or_else(|| config.options.clone());
    if matches!(service.worker_credentials, WorkerCredentials::Scoped(_)) {
        options.retain(|key, _| !CREDENTIAL_OPTIONS.contains(&key.as_str()));
    }
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
