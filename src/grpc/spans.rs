//! The server span of each call: named by its method, the child of the caller's trace when its request
//! carries a W3C `traceparent`, with the result and query ids (recorded by the call) and the gRPC code (by
//! [`record_code`]). Exported as an OpenTelemetry server span when traces are on and its trace is sampled
//! (`telemetry/traces.rs`); the context of every log line of the call either way.

use tonic::Code;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{auth::Rpc, telemetry::traces};

/// The span of a call of `rpc` whose request has `headers`: exported if its trace is sampled
/// ([`traces::exported_parent`]).
pub fn server_span(rpc: Rpc, headers: &http::HeaderMap) -> Span {
    let parent = traces::exported_parent(headers);
    let exported = parent.is_some();
    macro_rules! span {
        ($level:ident, $name:literal) => {
            // The method is the span's name; constant attributes (`rpc.system`, `rpc.service`) would cost an
            // allocation each in every span, and say nothing a collector does not know.
            traces::span!(
                exported,
                $level,
                $name,
                otel.kind = "server",
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
                result_id = Empty,
                query_id = Empty,
            )
        };
    }
    let span = match rpc {
        Rpc::Allocate => span!(info_span, "Allocate"),
        Rpc::Commit => span!(info_span, "Commit"),
        // The most frequent call: its span is shown in log lines only at debug.
        Rpc::Resolve => span!(debug_span, "Resolve"),
        Rpc::Abort => span!(info_span, "Abort"),
        Rpc::Release => span!(info_span, "Release"),
        Rpc::Renew => span!(info_span, "Renew"),
        Rpc::Watch => span!(info_span, "Watch"),
        Rpc::RefreshSink => span!(info_span, "RefreshSink"),
        Rpc::ListResults => span!(info_span, "ListResults"),
        Rpc::GetUsage => span!(info_span, "GetUsage"),
    };
    if let Some(parent) = parent {
        // Without the trace layer (a program of its own) there is nothing to set.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the call's answer in its span.
pub fn record_code(code: Code) {
    let span = Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    if !matches!(code, Code::Ok | Code::NotFound | Code::AlreadyExists | Code::Cancelled) {
        span.record("otel.status_code", "ERROR");
    }
}
