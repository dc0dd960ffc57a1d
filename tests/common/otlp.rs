//! A test OTLP collector: the real OTLP trace protocol, over gRPC (the `opentelemetry-proto` package's
//! generated `TraceService`) and over HTTP (protobuf bodies POSTed to `/v1/traces`), keeping every span it
//! receives and the `authorization` header of each export. Not a mock: the service's exporter speaks to it as
//! to any collector.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tonic::{Request, Response, Status};

/// The spans a collector received, and the `authorization` metadata of each export.
#[derive(Clone, Default)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Span>>>,
    pub authorizations: Arc<Mutex<Vec<String>>>,
    /// Spans received, kept or not.
    pub received: Arc<std::sync::atomic::AtomicU64>,
    /// Counts the spans without keeping them (a benchmark's load).
    pub discard: bool,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !self.discard {
            self.authorizations.lock().unwrap().push(authorization.to_owned());
        }
        let spans: Vec<Span> =
            request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans).collect();
        self.received.fetch_add(spans.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !self.discard {
            self.spans.lock().unwrap().extend(spans);
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port; answers its URL.
    pub async fn serve_grpc(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// Serves OTLP over HTTP (protobuf bodies POSTed to `/v1/traces`) on a free loopback port; answers its
    /// URL (without the path, as `otlp_endpoint` takes it).
    pub async fn serve_http(&self) -> String {
        use http_body_util::BodyExt;
        use prost::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let collector = collector.clone();
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let collector = collector.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        assert_eq!((parts.method.as_str(), parts.uri.path()), ("POST", "/v1/traces"));
                        let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok());
                        assert_eq!(content_type, Some("application/x-protobuf"));
                        let bytes = body.collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(bytes).expect("an OTLP protobuf body");
                        let mut request = Request::new(export);
                        if let Some(value) = parts.headers.get("authorization") {
                            request.metadata_mut().insert("authorization", value.to_str().unwrap().parse().unwrap());
                        }
                        collector.export(request).await.unwrap();
                        let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        format!("http://{addr}")
    }

    /// The spans of trace `trace_id` once `names` have all arrived (within 15 s).
    pub async fn trace(&self, trace_id: &[u8], names: &[&str]) -> Vec<Span> {
        for _ in 0..300 {
            let spans: Vec<Span> =
                self.spans.lock().unwrap().iter().filter(|span| span.trace_id == trace_id).cloned().collect();
            if names.iter().all(|name| spans.iter().any(|span| span.name == *name)) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen: Vec<String> = self.spans.lock().unwrap().iter().map(|span| span.name.clone()).collect();
        panic!("the spans {names:?} of the trace did not arrive; the collector has {seen:?}");
    }
}
