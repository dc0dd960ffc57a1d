//! The download routes as a tower service: `GET` and `HEAD` of the file a verified link names, answered
//! from the manifest (size, entity tag, media type) and storage (the bytes, or a fresh store URL to redirect
//! to). A link that is changed, foreign or expired is refused before any storage request.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::{
    body::{self, Progress},
    headers,
    range::{self, Part},
};
use crate::{
    config::DownloadConfig,
    connections::{ConnectionInfo, ConnectionState},
    link::{LinkError, LinkMode, Verified},
    metrics::{Metrics, downloads::Served},
    model::{ManifestFile, RelPath, ResultId},
    results::{CommittedFile, Results},
    storage::{Backend, Storage, StorageError, UrlDownloads},
    telemetry::{Escaped, traces},
};

/// How long the store URL a redirect sends a client to stays valid (at most `max_url_ttl`): long enough for a
/// client to follow it from a clock a few minutes off, short enough that a leaked one soon stops working.
/// Each GET of a redirect link gets a fresh one.
pub const REDIRECT_URL_TTL: Duration = Duration::from_secs(300);
/// How long a client told the service is busy should wait.
const RETRY_AFTER_SECONDS: &str = "1";

/// Serves the download routes (`/v1/results/<id>/files/<path>?...`); any other path is 404.
#[derive(Clone)]
pub struct DownloadService {
    results: Arc<Results<Storage>>,
    stall_timeout: Duration,
    /// One permit per download streamed at once (`max_downloads`).
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for DownloadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadService").field("free_slots", &self.slots.available_permits()).finish_non_exhaustive()
    }
}

impl DownloadService {
    pub fn new(results: Arc<Results<Storage>>, config: &DownloadConfig) -> Self {
        Self { results, stall_timeout: config.stall_timeout, slots: Arc::new(Semaphore::new(config.max_downloads)) }
    }

    fn metrics(&self) -> &Metrics {
        self.results.metrics()
    }

    /// The answer to `request`, in a server span: the child of the client's trace (the W3C `traceparent` of
    /// its headers), with the method and the answer's status; the link's path and query (a capability) are
    /// not in it.
    pub async fn handle<B>(&self, request: http::Request<B>) -> Response<Body> {
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent = traces::exported_parent(request.headers());
        let exported = parent.is_some();
        let span = traces::span!(
            exported,
            info_span,
            "download",
            otel.kind = "server",
            http.request.method = %request.method(),
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        let response = self.answer(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    }

    async fn answer<B>(&self, request: http::Request<B>) -> Response<Body> {
        let head = match *request.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
        let link = match self.results.tokens().links().verify(target, self.results.now()) {
            Ok(link) => link,
            Err(error) => {
                let (status, reason) = match error {
                    LinkError::NotARoute => (StatusCode::NOT_FOUND, "not_found"),
                    LinkError::Forged => (StatusCode::FORBIDDEN, "forged"),
                    LinkError::Expired => (StatusCode::FORBIDDEN, "expired"),
                };
                return self.refuse(status, reason, &error.to_string());
            }
        };
        let file = match self.results.committed_file(&link.result_id, &link.path).await {
            Ok(CommittedFile::Served(file)) => file,
            Ok(CommittedFile::NotInResult) => {
                return self.refuse(StatusCode::NOT_FOUND, "not_found", "the result holds no such file");
            }
            Ok(CommittedFile::Gone) => {
                return self.refuse(StatusCode::GONE, "gone", "the result was released or expired");
            }
            Err(error) => return self.unavailable(&error.detail()),
        };
        let storage = self.results.storage();
        if link.mode == LinkMode::Redirect && !head && storage.url_downloads() == UrlDownloads::Presigned {
            return self.redirect(&link, &file).await;
        }
        // An HTTP/1.1 connection carries one download at a time: a stalled one is cut off by closing it.
        let connection = match request.version() {
            http::Version::HTTP_10 | http::Version::HTTP_11 => {
                request.extensions().get::<ConnectionInfo>().map(|info| info.state.clone())
            }
            _ => None,
        };
        self.serve(request.headers(), head, &link, &file, connection).await
    }

    /// A 307 to a freshly signed store URL of the file: one that names the committed version, or, where the
    /// store's URLs cannot, after a HEAD has shown the file is still the one committed.
    async fn redirect(&self, link: &Verified, file: &ManifestFile) -> Response<Body> {
        let storage = self.results.storage();
        if file.pin.is_some() && !storage.names_version(file) {
            match storage.check_file(&link.result_id, file).await {
                Ok(()) => {}
                Err(StorageError::Changed { .. } | StorageError::NotFound { .. }) => return self.changed(link, file),
                Err(error) => return self.unavailable(&error.detail()),
            }
        }
        let ttl = REDIRECT_URL_TTL.min(self.results.url_config().max_ttl);
        match storage.downloads(&link.result_id, &[file], ttl).await {
            Ok(mut downloads) if !downloads.is_empty() => {
                let url = downloads.swap_remove(0).url;
                let Ok(location) = HeaderValue::from_str(&url) else {
                    return self.unavailable("a store URL is not a valid header value");
                };
                self.metrics().downloads.redirected();
                let mut response = empty(StatusCode::TEMPORARY_REDIRECT);
                response.headers_mut().insert(header::LOCATION, location);
                response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Ok(_) => self.unavailable("the store signed no URL"),
            Err(error) => self.unavailable(&error.detail()),
        }
    }

    /// The file, or the part of it the request asks, streamed from storage (or only its headers, for HEAD).
    async fn serve(
        &self,
        request: &HeaderMap,
        head: bool,
        link: &Verified,
        file: &ManifestFile,
        connection: Option<Arc<ConnectionState>>,
    ) -> Response<Body> {
        let etag = headers::etag(&link.result_id, file);
        let header = |name: header::HeaderName| request.get(name).and_then(|value| value.to_str().ok());
        let mut response = empty(StatusCode::OK);
        let described = response.headers_mut();
        described.insert(header::ETAG, value(&etag));
        described.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        described.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
        if range::not_modified(header(header::IF_NONE_MATCH), &etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        described.insert(header::CONTENT_TYPE, HeaderValue::from_static(headers::content_type(file.path.as_str())));
        described.insert(header::CONTENT_DISPOSITION, value(&headers::content_disposition(file.path.as_str())));
        let size = file.size_bytes;
        let wanted = match range::requested(header(header::RANGE), header(header::IF_RANGE), size, &etag) {
            Part::Whole => 0..size,
            Part::Bytes(range) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
                response.headers_mut().insert(header::CONTENT_RANGE, value(&content_range));
                range
            }
            Part::Unsatisfiable => {
                let mut refused = self.refuse(StatusCode::RANGE_NOT_SATISFIABLE, "", "the range lies outside the file");
                refused.headers_mut().insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
                return refused;
            }
        };
        let length = wanted.end - wanted.start;
        response.headers_mut().insert(header::CONTENT_LENGTH, value(&length.to_string()));
        if head {
            return response;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            let mut busy = self.refuse(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many downloads at once");
            busy.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            return busy;
        };
        let read = match self.results.storage().read_range(&link.result_id, file, wanted).await {
            Ok(read) if read.size == size => read,
            Err(StorageError::Changed { .. }) => return self.changed(link, file),
            Ok(_) | Err(StorageError::NotFound { .. } | StorageError::RangeNotSatisfiable { .. }) => {
                tracing::warn!(
                    result_id = %link.result_id,
                    path = %Escaped(file.path.as_str()),
                    "a committed file is no longer as its manifest says (missing, or of another size): not served"
                );
                return self.refuse(
                    StatusCode::BAD_GATEWAY,
                    "size_mismatch",
                    "the stored file is not the committed one",
                );
            }
            Err(error) => return self.unavailable(&error.detail()),
        };
        let mode = match link.mode {
            LinkMode::Proxy { .. } => Served::Proxy,
            LinkMode::Redirect => Served::Redirect,
        };
        let guard = InFlight {
            results: self.results.clone(),
            mode,
            connection,
            file: (link.result_id.clone(), file.path.clone()),
            _permit: permit,
        };
        self.metrics().downloads.started(mode);
        *response.body_mut() = Body::new(body::streamed(read.chunks, length, self.stall_timeout, guard));
        response
    }

    /// An answer of `status` saying `message`, counted as refused for `reason` (if one).
    fn refuse(&self, status: StatusCode, reason: &str, message: &str) -> Response<Body> {
        self.metrics().downloads.refused(reason);
        text(status, message)
    }

    /// A 502 for a committed file that is no longer the one committed (changed or replaced after its commit,
    /// or gone): never served, logged, and counted as refused for `changed`.
    fn changed(&self, link: &Verified, file: &ManifestFile) -> Response<Body> {
        log_changed(&link.result_id, &file.path);
        self.refuse(
            StatusCode::BAD_GATEWAY,
            "changed",
            "the stored file changed after its commit: it is not the committed result, and is not served",
        )
    }

    /// A 503 for a storage failure (logged with its detail; the client is told only to come back).
    fn unavailable(&self, detail: &str) -> Response<Body> {
        tracing::warn!("a download could not be served: {}", Escaped(detail));
        let mut response = self.refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        response
    }
}

impl<B: Send + 'static> tower::Service<http::Request<B>> for DownloadService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

/// A streamed download: counted in flight until its body is done or dropped, holding its `max_downloads`
/// permit as long.
struct InFlight {
    results: Arc<Results<Storage>>,
    mode: Served,
    /// The HTTP/1.1 connection it is served on, closed if its client stops reading.
    connection: Option<Arc<ConnectionState>>,
    /// The result and the path of the file.
    file: (ResultId, RelPath),
    _permit: OwnedSemaphorePermit,
}

impl Progress for InFlight {
    fn sent(&self, bytes: u64) {
        self.results.metrics().downloads.sent(self.mode, bytes);
    }

    fn stalled(&self) {
        if let Some(connection) = &self.connection {
            connection.abort();
        }
    }

    fn changed(&self) {
        log_changed(&self.file.0, &self.file.1);
        self.results.metrics().downloads.refused("changed");
    }
}

/// The log line of a committed file found changed: which result and which file.
fn log_changed(result_id: &ResultId, path: &RelPath) {
    tracing::warn!(
        %result_id,
        path = %Escaped(path.as_str()),
        "a committed file changed after its commit (rewritten or replaced): it is not served"
    );
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.results.metrics().downloads.finished(self.mode);
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from(format!("{message}\n")))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A header value of text the service made (an entity tag, a range, a percent-encoded name): always valid.
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
