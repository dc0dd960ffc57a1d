//! One port for every client: gRPC requests (`content-type: application/grpc...`) go to the gRPC routes,
//! everything else to the download routes. gRPC is HTTP/2 only: a gRPC request over HTTP/1.1 is refused at
//! once (505) and its connection closed, never handed to the gRPC routes, which would wait for its body.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response, header};
use tonic::body::Body;

use super::DownloadService;

/// The gRPC routes `grpc` and the download routes, on one port.
#[derive(Clone, Debug)]
pub struct WithDownloads<S> {
    grpc: S,
    downloads: DownloadService,
}

impl<S> WithDownloads<S> {
    pub fn new(grpc: S, downloads: DownloadService) -> Self {
        Self { grpc, downloads }
    }
}

/// Whether `request` is a gRPC call.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The answer to a gRPC request over HTTP/1.x: 505, the connection closed after it.
fn not_http2() -> Response<Body> {
    let text = "gRPC needs HTTP/2: call with a gRPC client (over h2c or TLS with ALPN h2)\n";
    let mut response = Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = http::StatusCode::HTTP_VERSION_NOT_SUPPORTED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

impl<S> tower::Service<Request<Body>> for WithDownloads<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call readies the service it goes to (both are always ready).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match is_grpc(&request) {
            true if request.version() != http::Version::HTTP_2 => async move { Ok(not_http2()) }.boxed(),
            true => {
                let mut grpc = self.grpc.clone();
                async move { tower::ServiceExt::ready(&mut grpc).await?.call(request).await }.boxed()
            }
            false => {
                let downloads = self.downloads.clone();
                async move { Ok(downloads.handle(request).await) }.boxed()
            }
        }
    }
}
