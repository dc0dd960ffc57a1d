//! The HTTP client every object store talks through: reqwest on rustls, each request counted (for tests and
//! the metrics), and how long and how often requests are tried.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use object_store::{
    BackoffConfig, ClientOptions, RetryConfig,
    client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector},
};

use crate::{config::StorageClientConfig, secret::redact_urls, telemetry::traces};

/// Makes rustls on ring the process's TLS provider (HTTPS endpoints), unless a provider is installed already
/// (by a program that embeds the service, say).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client options of every store: one request waits at most the storage timeout (and a connection at
/// most 5 s of it).
pub(crate) fn client_options(storage: &StorageClientConfig) -> ClientOptions {
    ClientOptions::new().with_timeout(storage.timeout).with_connect_timeout(storage.timeout.min(Duration::from_secs(5)))
}

/// The retries of every store: `storage_retries` with exponential backoff, all within the storage timeout.
pub(crate) fn retry_config(storage: &StorageClientConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.,
        },
        max_retries: storage.retries,
        retry_timeout: storage.timeout,
    }
}

/// Builds the usual reqwest client, wrapped to count every request it sends in `requests`.
#[derive(Debug)]
pub(crate) struct CountingConnector {
    pub requests: Arc<AtomicU64>,
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
        use tracing::Instrument;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let _request = crate::storage::trace::request();
        // Never the query: a credential may ride in it (an Azure SAS); the path names only the object.
        tracing::trace!(method = %request.method(), path = request.uri().path(), "storage request");
        // A span per request, the child of the call's (its operation, the store's host, the answer's status
        // and the bytes sent or received): no URL, no query, no header.
        let span = traces::span!(
            traces::in_exported(),
            debug_span,
            "storage request",
            otel.kind = "client",
            otel.name = operation(&request),
            http.request.method = %request.method(),
            server.address = request.uri().host().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            storage.bytes = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let sent = request.body().content_length();
        // A transport error repeats the request's URL, and object_store logs it as it retries: from here on it
        // is told with the URL's credentials and query redacted.
        let answered = self.inner.execute(request).instrument(span.clone()).await.map_err(|error| {
            let told = redact_urls(&crate::telemetry::error_chain(&error));
            HttpError::new(error.kind(), TransportError(told))
        });
        match &answered {
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                let received = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if let Some(bytes) = Some(sent as u64).filter(|bytes| *bytes > 0).or(received) {
                    span.record("storage.bytes", bytes);
                }
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        answered
    }
}

/// What a request to a store does, by its method and whether it lists (S3 `list-type`, Azure `comp=list`,
/// GCS's objects collection): `get`, `list`, `head`, `put`, `post` or `delete`.
fn operation(request: &HttpRequest) -> &'static str {
    let query = request.uri().query().unwrap_or_default();
    let lists = query.contains("list-type=") || query.contains("comp=list") || request.uri().path().ends_with("/o");
    match request.method().as_str() {
        "GET" if lists => "list",
        "GET" => "get",
        "HEAD" => "head",
        "PUT" => "put",
        "POST" => "post",
        "DELETE" => "delete",
        _ => "other",
    }
}

/// A transport error, as it may be told.
#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}
