//! The object-store backend (S3 and S3-compatible stores), on the `object_store` crate.
//!
//! Create-only writes are `PUT` with `If-None-Match: *`, so racing writers have one winner. Whether the store
//! honours that is checked once at start-up (a store that silently ignores it would let two commits both win):
//! [`ObjectStorage::open`] refuses such a store with an error that says so.
//!
//! Every HTTP request (retries included) is counted, for tests and metrics: [`ObjectStorage::requests`].

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use futures::{StreamExt, TryStreamExt};
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey},
    client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector},
    path::Path,
    signer::Signer,
};

use super::{Backend, Download, EntryKind, Listing, Sink, SinkEntry, StorageError, presign::FastSigner};
use crate::{
    config::{S3Config, ServiceConfig, URL_TTL_LIMIT},
    model::{RelPath, ResultId, Timestamp},
    secret::{Secret, redact_userinfo},
};

/// The option keys whose values are credentials, scrubbed from any error text.
const SECRET_OPTIONS: &[&str] =
    &["aws_secret_access_key", "aws_session_token", "aws_token", "aws_sse_customer_key_base64"];

/// The S3 backend: a bucket and a key prefix.
#[derive(Debug)]
pub struct ObjectStorage {
    store: AmazonS3,
    /// Signs the download URLs: the same store, or one for the endpoint as clients reach it.
    signer: AmazonS3,
    /// Signs them in bulk, when the credentials are static and it makes exactly the URLs `signer` makes.
    fast_signer: Option<Arc<FastSigner>>,
    bucket: String,
    /// The key prefix, without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    /// Where the store is, for error messages: the endpoint URL or the bucket's url.
    location: String,
    /// The storage options handed to workers: the configured AWS keys, verbatim.
    worker_options: BTreeMap<String, Secret>,
    timeout: Duration,
    requests: Arc<AtomicU64>,
    /// Create-only writes of one key are serialized within this process (striped by key): some
    /// S3-compatible stores check `If-None-Match` and then write, not atomically, so writers racing in one
    /// process could otherwise both win. Across processes, exactly-once rests on the store's atomicity.
    write_locks: Vec<tokio::sync::Mutex<()>>,
}

/// How many stripes the per-key write locks have.
const WRITE_LOCK_STRIPES: usize = 64;

impl ObjectStorage {
    /// Connects to the bucket of `config` and checks that it honours create-only writes.
    pub async fn open(config: &S3Config, service: &ServiceConfig) -> Result<Self, StorageError> {
        install_tls_provider();
        let endpoint = config.options.get("aws_endpoint_url").or_else(|| config.options.get("aws_endpoint"));
        let location = match endpoint {
            Some(endpoint) => format!("{} at {}", config.url, redact_userinfo(endpoint.expose())),
            None => config.url.to_string(),
        };
        let requests = Arc::new(AtomicU64::new(0));
        let build = |endpoint_override: Option<&str>| {
            // Client options first: `with_client_options` replaces any set before (`aws_allow_http` among them).
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&config.url.bucket)
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(service.storage.timeout)
                        .with_connect_timeout(service.storage.timeout.min(Duration::from_secs(5))),
                )
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(50),
                        max_backoff: Duration::from_secs(2),
                        base: 2.,
                    },
                    max_retries: service.storage.retries,
                    retry_timeout: service.storage.timeout,
                })
                .with_http_connector(CountingConnector { requests: requests.clone() });
            for (key, value) in &config.options {
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
            builder.build().map_err(|e| StorageError::Config { message: scrub(&e.to_string(), &config.options) })
        };
        let store = build(None)?;
        let signer = match &service.urls.client_endpoint_url {
            Some(client_endpoint) => build(Some(client_endpoint.expose()))?,
            None => store.clone(),
        };
        let fast_signer = calibrate_fast_signer(&signer, config).await.map(Arc::new);
        tracing::debug!(bulk = fast_signer.is_some(), "presigning");
        let storage = Self {
            store,
            signer,
            fast_signer,
            bucket: config.url.bucket.clone(),
            prefix: config.url.prefix.clone(),
            location,
            worker_options: worker_options(config),
            timeout: service.storage.timeout,
            requests,
            write_locks: (0..WRITE_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        };
        storage.check_create_only_writes().await?;
        Ok(storage)
    }

    /// How many HTTP requests this backend has sent, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where the results are, for logs and errors (no credential).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes a probe object twice, create-only: the second write must be refused. Then deletes it.
    async fn check_create_only_writes(&self) -> Result<(), StorageError> {
        let key = format!("{}/probe-{}", crate::layout::CONTROL, random_hex());
        if let Err(error) = self.put_create(&key, b"create-only probe".to_vec()).await {
            return Err(match error {
                StorageError::NotFound { .. } => StorageError::Config {
                    message: format!(
                        "the bucket `{}` does not exist at {}, or these credentials cannot see it: create it, or fix \
                         anonymous_results.s3.url",
                        self.bucket, self.location
                    ),
                },
                other => other,
            });
        }
        let second = self.put_create(&key, b"create-only probe".to_vec()).await;
        let _ = self.timed(self.store.delete(&self.path(&key))).await;
        match second {
            Err(StorageError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err(StorageError::NoCreateOnlyWrites { location: self.location.clone() }),
        }
    }

    fn key_prefix(&self) -> String {
        match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        }
    }

    /// The object path of `key`, a `/`-separated path made by the service (see `layout.rs`), validated (a
    /// [`RelPath`] in a sink) or listed. Taken as it is, not percent-encoded: the object's key is exactly
    /// `key`, whatever `%`, `#`, `?` or non-ASCII letters it holds, as a worker wrote it (a presigned URL then
    /// encodes it once).
    fn path(&self, key: &str) -> Path {
        let full = format!("{}{key}", self.key_prefix());
        // Only a key with a control character or an empty, `.` or `..` segment fails to parse, and validation
        // keeps those out; should one come from a listing, it is encoded rather than refused.
        Path::parse(&full).unwrap_or_else(|_| Path::from_iter(full.split('/').filter(|part| !part.is_empty())))
    }

    /// Runs one storage operation within the configured timeout.
    async fn timed<T>(&self, operation: impl Future<Output = object_store::Result<T>>) -> Result<T, StorageError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(result) => result.map_err(|e| self.error(e)),
            Err(_) => Err(StorageError::Timeout { location: self.location.clone(), timeout: self.timeout }),
        }
    }

    fn error(&self, error: object_store::Error) -> StorageError {
        match error {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound { key: path },
            object_store::Error::AlreadyExists { path, .. } => StorageError::AlreadyExists { key: path },
            object_store::Error::Precondition { path, .. } => StorageError::AlreadyExists { key: path },
            // `aws_conditional_put = "disabled"`: the store is told not to use conditional writes.
            object_store::Error::NotImplemented { .. } => {
                StorageError::NoCreateOnlyWrites { location: self.location.clone() }
            }
            other => StorageError::Unavailable {
                location: self.location.clone(),
                message: scrub(&crate::telemetry::error_chain(&other), &self.worker_options),
            },
        }
    }
}

/// The storage options handed to workers: the configured keys, plus `aws_allow_http = "true"` when the endpoint
/// is `http://` and the key is not set: a worker on object_store refuses plain HTTP without it (Polars takes
/// either), while the service itself uses such an endpoint as configured.
fn worker_options(config: &S3Config) -> BTreeMap<String, Secret> {
    let mut options = config.options.clone();
    let endpoint = options.get("aws_endpoint_url").or_else(|| options.get("aws_endpoint"));
    if endpoint.is_some_and(|e| e.expose().starts_with("http://")) && !options.contains_key("aws_allow_http") {
        options.insert("aws_allow_http".to_owned(), Secret::new("true"));
    }
    options
}

impl Backend for ObjectStorage {
    fn sink(&self, id: &ResultId) -> Sink {
        Sink {
            uri: format!("s3://{}/{}{id}/", self.bucket, self.key_prefix()),
            storage_options: self.worker_options.clone(),
        }
    }

    async fn prepare_sink(&self, _id: &ResultId) -> Result<(), StorageError> {
        Ok(())
    }

    async fn put_create(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        let stripe = {
            use std::hash::{BuildHasher, RandomState};
            static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
            HASHER.get_or_init(RandomState::new).hash_one(key) as usize % WRITE_LOCK_STRIPES
        };
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        // The wait for the lock counts against the timeout: behind a stalled store, writers queue here.
        let put = async {
            let _serialized = self.write_locks[stripe].lock().await;
            self.store.put_opts(&self.path(key), PutPayload::from(bytes), options).await
        };
        self.timed(put).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key);
        self.timed(async { self.store.get(&path).await?.bytes().await }).await.map(|bytes| bytes.to_vec())
    }

    async fn list_sink(&self, id: &ResultId) -> Result<Vec<SinkEntry>, StorageError> {
        let sink = self.path(id.as_str());
        let strip = format!("{sink}/");
        let objects: Vec<_> = self.timed(self.store.list(Some(&sink)).try_collect()).await?;
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let path = object.location.as_ref().strip_prefix(&strip)?.to_owned();
                Some(SinkEntry { path, size_bytes: object.size, kind: EntryKind::File })
            })
            .collect())
    }

    async fn list_keys(&self, prefix: &str, range: Listing<'_>) -> Result<Vec<String>, StorageError> {
        let folder = self.path(prefix);
        let strip = self.key_prefix();
        // S3 lists in key order, a page at a time, from just after an offset: starting after `after` and
        // stopping at `until` fetches no page outside the range.
        let listing = match range.after {
            Some(after) => self.store.list_with_offset(Some(&folder), &self.path(after)),
            None => self.store.list(Some(&folder)),
        };
        let keys = listing
            .map_ok(move |object| {
                object.location.as_ref().strip_prefix(strip.as_str()).unwrap_or(object.location.as_ref()).to_owned()
            })
            .try_take_while(|key| futures::future::ready(Ok(range.until.is_none_or(|until| key.as_str() < until))))
            .take(range.limit.unwrap_or(usize::MAX));
        self.timed(keys.try_collect()).await
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), StorageError> {
        if keys.is_empty() {
            return Ok(());
        }
        let paths: Vec<object_store::Result<Path>> = keys.iter().map(|key| Ok(self.path(key))).collect();
        let paths = futures::stream::iter(paths).boxed();
        // One result per key, 1,000 keys a request: every one is looked at (stopping at the first error would
        // leave the later batches undeleted); a key already gone is fine, any other failure is reported.
        let deleted = self.store.delete_stream(paths).fold(Ok(()), |first, deleted| {
            futures::future::ready(match (first, deleted) {
                (Err(e), _) => Err(e),
                (Ok(()), Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
                (Ok(()), Err(e)) => Err(e),
            })
        });
        self.timed(deleted).await
    }

    async fn delete_sink(&self, id: &ResultId) -> Result<(), StorageError> {
        let entries = self.list_sink(id).await?;
        let keys = entries.into_iter().map(|entry| format!("{id}/{}", entry.path)).collect();
        self.delete_keys(keys).await
    }

    async fn downloads(
        &self,
        id: &ResultId,
        paths: &[&RelPath],
        url_ttl: Duration,
    ) -> Result<Vec<Download>, StorageError> {
        // A SigV4 URL is valid from its X-Amz-Date, in whole seconds, for X-Amz-Expires seconds: signing for
        // one second more makes it valid at least `url_ttl` from now. `expires_at` is a lower bound.
        let signed_from = Timestamp::clamped(SystemTime::now()).whole_seconds();
        let signed_ttl = url_ttl.saturating_add(Duration::from_secs(1)).min(URL_TTL_LIMIT);
        let expires_at = signed_from.saturating_add(signed_ttl);
        let objects: Vec<Path> = paths.iter().map(|path| self.path(&format!("{id}/{path}"))).collect();
        let urls: Vec<String> = match &self.fast_signer {
            Some(fast) => sign_in_bulk(fast, objects, signed_from.system_time(), signed_ttl).await,
            None => {
                let urls = self.timed(self.signer.signed_urls(reqwest::Method::GET, &objects, signed_ttl)).await?;
                urls.into_iter().map(String::from).collect()
            }
        };
        Ok(urls.into_iter().map(|url| Download { url, expires_at: Some(expires_at) }).collect())
    }
}

/// Up to this many URLs are signed on the calling task; more go to the blocking pool, split across cores.
const INLINE_SIGNING: usize = 256;

/// URLs for `objects`, from `at` for `ttl`: a few at once, many on the blocking pool, one slice per core.
async fn sign_in_bulk(fast: &Arc<FastSigner>, objects: Vec<Path>, at: SystemTime, ttl: Duration) -> Vec<String> {
    if objects.len() <= INLINE_SIGNING {
        let paths: Vec<&str> = objects.iter().map(AsRef::as_ref).collect();
        return fast.sign_all(&paths, at, ttl);
    }
    let fast = fast.clone();
    let work = move || {
        let paths: Vec<&str> = objects.iter().map(AsRef::as_ref).collect();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let slice = paths.len().div_ceil(cores);
        std::thread::scope(|scope| {
            let parts: Vec<_> = paths.chunks(slice).map(|part| scope.spawn(|| fast.sign_all(part, at, ttl))).collect();
            parts.into_iter().flat_map(|part| part.join().unwrap_or_default()).collect()
        })
    };
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

/// The bulk signer for `signer`'s URLs, if the credentials are static and it reproduces exactly the URL
/// `object_store` signs for a probe object.
async fn calibrate_fast_signer(signer: &AmazonS3, config: &S3Config) -> Option<FastSigner> {
    let option = |key: &str| config.options.get(key);
    let (key_id, secret) = (option("aws_access_key_id")?, option("aws_secret_access_key")?);
    let token = option("aws_session_token").or_else(|| option("aws_token"));
    let probe = Path::from_iter(
        config.url.prefix.split('/').chain(["_control", "probe dir", "a b+c=d~é.parquet"]).filter(|p| !p.is_empty()),
    );
    let url = signer.signed_url(reqwest::Method::GET, &probe, Duration::from_secs(3600)).await.ok()?;
    FastSigner::calibrate(url.as_str(), probe.as_ref(), key_id.expose(), secret, token)
}

/// Makes rustls on ring the process's TLS provider (HTTPS endpoints), unless a provider is installed already
/// (by a program that embeds the service, say).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Replaces every configured secret value in `text`, and the user information of every URL in it, with
/// `<redacted>`: error texts from the HTTP stack are not trusted to leave credentials out.
fn scrub(text: &str, options: &BTreeMap<String, Secret>) -> String {
    SECRET_OPTIONS
        .iter()
        .filter_map(|key| options.get(*key))
        .map(Secret::expose)
        .filter(|secret| !secret.is_empty())
        .fold(redact_userinfo(text), |text, secret| text.replace(secret, "<redacted>"))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the usual reqwest client, wrapped to count every request it sends.
#[derive(Debug)]
struct CountingConnector {
    requests: Arc<AtomicU64>,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CountingClient { inner, requests: self.requests.clone() }))
    }
}

#[derive(Debug)]
struct CountingClient {
    inner: HttpClient,
    requests: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl HttpService for CountingClient {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // The path and query name keys and a listing's position; the credentials are in headers, never here.
        tracing::trace!(method = %request.method(), uri = %request.uri(), "storage request");
        self.inner.execute(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_every_secret_value() {
        let options = BTreeMap::from([
            ("aws_access_key_id".to_owned(), Secret::new("AKID")),
            ("aws_secret_access_key".to_owned(), Secret::new("s3cr3t")),
            ("aws_session_token".to_owned(), Secret::new("t0ken")),
        ]);
        assert_eq!(scrub("failed s3cr3t and t0ken for AKID", &options), "failed <redacted> and <redacted> for AKID");
    }
}
