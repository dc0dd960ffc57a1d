//! Traces: the `tracing` spans exported as OpenTelemetry spans over OTLP, when `otlp_endpoint` is set.
//!
//! A span that ends is put on a bounded queue ([`QUEUE`] spans) without waiting; a task of the service's
//! runtime takes them off in batches of at most [`BATCH`] (or what a second gathered) and exports each within
//! [`EXPORT_TIMEOUT`]. A full queue drops the span, and a batch the collector did not take is dropped: both
//! are counted ([`dropped`], `anonymous_results_trace_spans_dropped_total`), and an export that fails is
//! logged once until one succeeds again. So a collector that is slow or gone costs a bounded queue and a
//! counter, never a call's latency.
//!
//! Each call continues its caller's trace: the W3C `traceparent` (and `tracestate`) of the request's headers
//! (gRPC metadata, or a download's HTTP headers) is the parent of its server span ([`server_span`]).
//!
//! Whether a span is exported is decided before it is made ([`exported_parent`], [`starts`], [`in_exported`]): a
//! call, pass or storage request that is not is a span of the target [`LOGS_ONLY`], which the trace layer
//! never sees, so that it costs what it costs with traces off (nothing, below the log level).
//!
//! [`server_span`]: crate::grpc::spans::server_span

use std::{
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor},
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::{OtlpProtocol, TraceConfig};

/// The most spans waiting to be exported.
pub const QUEUE: usize = 8192;
/// The most spans one export sends.
pub const BATCH: usize = 512;
/// How long one export may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch gathers before it is sent short.
const GATHER: Duration = Duration::from_secs(1);

/// The target of spans that are only the context of log lines, never exported: those of calls, passes and
/// storage requests whose trace is not sampled, and those that only say where a log line comes from.
pub const LOGS_ONLY: &str = "anonymous_results::logs_only";

/// `tracing::$level!(...)`, a span of the target [`LOGS_ONLY`] unless `$exported`.
macro_rules! span {
    ($exported:expr, $level:ident, $($span:tt)+) => {
        if $exported {
            tracing::$level!($($span)+)
        } else {
            tracing::$level!(target: $crate::telemetry::traces::LOGS_ONLY, $($span)+)
        }
    };
}
pub(crate) use span;

/// `trace_sample_ratio` once traces are on; unset, nothing is exported.
static SAMPLE_RATIO: OnceLock<f64> = OnceLock::new();

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Spans queued and not yet exported (or dropped).
static PENDING: AtomicU64 = AtomicU64::new(0);
/// The queue's far end, for the export task to take ([`start_export`]).
static RECEIVER: Mutex<Option<mpsc::Receiver<SpanData>>> = Mutex::new(None);
/// The provider, kept for the life of the process (dropped, it would stop making spans).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Spans dropped so far: the queue was full, or the collector did not take their batch.
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// The tracer provider for `config` (`None` without an endpoint): spans sampled parent-based at
/// `trace_sample_ratio`, queued for [`start_export`]. Also makes W3C trace context the propagator.
pub(super) fn provider(config: &TraceConfig) -> Option<opentelemetry_sdk::trace::Tracer> {
    config.endpoint.as_ref()?;
    let (sender, receiver) = mpsc::channel(QUEUE);
    *RECEIVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(receiver);
    // The sampling is decided before a span is made (`exported_parent`, `starts`): what reaches the provider is
    // exported, but for a child of a caller's span that is not sampled.
    let _ = SAMPLE_RATIO.set(config.sample_ratio);
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource())
        .with_span_processor(Queue { sender })
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("anonymous-results");
    let _ = PROVIDER.set(provider);
    Some(tracer)
}

fn resource() -> Resource {
    Resource::builder().with_service_name("anonymous-results").build()
}

/// Starts, on the current runtime, the task that exports what the queue holds to the configured collector;
/// nothing without an endpoint (or if started already). An exporter that cannot be built is an error that
/// says which key to fix.
pub fn start_export(config: &TraceConfig) -> Result<(), String> {
    let Some(endpoint) = &config.endpoint else { return Ok(()) };
    let Some(mut receiver) = RECEIVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
        return Ok(());
    };
    // The http/protobuf exporter's client is built now, on the process's TLS provider.
    crate::storage::install_tls_provider();
    let mut exporter = exporter(config, endpoint)?;
    exporter.set_resource(&resource());
    tokio::spawn(async move {
        let failing = AtomicBool::new(false);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let Some(first) = receiver.recv().await else { return };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + GATHER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let sent = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(std::mem::take(&mut batch))).await;
            PENDING.fetch_sub(count, Relaxed);
            match sent {
                Ok(Ok(())) => {
                    if failing.swap(false, Relaxed) {
                        tracing::info!("traces reach the collector again");
                    }
                }
                failed => {
                    DROPPED.fetch_add(count, Relaxed);
                    if !failing.swap(true, Relaxed) {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {EXPORT_TIMEOUT:?}"),
                        };
                        warn!(
                            "spans cannot be exported to the collector (otlp_endpoint); they are dropped and counted until it takes them again: {}",
                            super::Escaped(&crate::secret::redact_urls(&why))
                        );
                    }
                }
            }
        }
    });
    Ok(())
}

/// The OTLP exporter `config` asks for.
fn exporter(config: &TraceConfig, endpoint: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &config.headers {
                let name = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| format!("otlp_headers: `{name}` is not a gRPC metadata name"))?;
                let value =
                    value.expose().parse().map_err(|_| format!("otlp_headers: the value of `{name}` is not valid"))?;
                metadata.insert(name, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            let headers =
                config.headers.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())).collect();
            let url = match endpoint.trim_end_matches('/') {
                url if url.ends_with("/v1/traces") => url.to_owned(),
                url => format!("{url}/v1/traces"),
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(EXPORT_TIMEOUT)
                .with_headers(headers)
                .build()
        }
    };
    built.map_err(|e| {
        format!("otlp_endpoint: cannot build the exporter: {}", crate::secret::redact_urls(&e.to_string()))
    })
}

/// Waits, at most `timeout`, until every span queued has been exported (or dropped): at the end of `serve`.
pub async fn drain(timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while PENDING.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts each span that ends on the queue, or drops (and counts) it when the queue is full.
#[derive(Debug)]
struct Queue {
    sender: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        PENDING.fetch_add(1, Relaxed);
        if self.sender.try_send(span).is_err() {
            PENDING.fetch_sub(1, Relaxed);
            DROPPED.fetch_add(1, Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The trace a call whose request has `headers` continues, if its span is exported: the caller's (the W3C
/// `traceparent` and `tracestate` of the headers) when the caller sampled it, or, without one, a trace that
/// starts here, kept at `trace_sample_ratio`. `None` with traces off (no header is read then), when the
/// caller did not sample its trace, or when the ratio leaves a new one out.
pub fn exported_parent(headers: &http::HeaderMap) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt;
    let ratio = *SAMPLE_RATIO.get()?;
    let parent = parent_of(headers);
    decision(ratio, parent.span().span_context(), next_random).then_some(parent)
}

/// Whether a span is exported at `ratio` whose caller's span is `caller` (invalid: none), a trace that starts
/// here sampled by `draw`.
fn decision(ratio: f64, caller: &opentelemetry::trace::SpanContext, draw: impl FnOnce() -> u64) -> bool {
    if caller.is_valid() { caller.is_sampled() } else { sampled(ratio, draw()) }
}

/// Whether a trace that starts here (a pass, the work after an answer) is exported: at
/// `trace_sample_ratio`. Never with traces off.
pub fn starts() -> bool {
    SAMPLE_RATIO.get().is_some_and(|&ratio| sampled(ratio, next_random()))
}

/// Whether the current span is exported, so that a span made in it (a storage request's) is its child.
pub fn in_exported() -> bool {
    SAMPLE_RATIO.get().is_some()
        && tracing::Span::current()
            .metadata()
            .is_some_and(|span| span.target() != LOGS_ONLY && span.target().starts_with("anonymous_results"))
}

/// Whether `draw`, uniform over the `u64`s, falls within `ratio` (0 never, 1 always).
fn sampled(ratio: f64, draw: u64) -> bool {
    // The draw's top 53 bits, as a fraction in [0, 1).
    ((draw >> 11) as f64) / ((1_u64 << 53) as f64) < ratio
}

/// A random `u64` per call: xorshift64* from a seed drawn once per thread (a sampling decision, not a secret).
fn next_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The trace context a request's headers carry (W3C `traceparent`, `tracestate`); empty without them, or when
/// they are not well-formed.
fn parent_of(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn caller(flags: TraceFlags) -> SpanContext {
        SpanContext::new(TraceId::from(7), SpanId::from(9), flags, true, TraceState::default())
    }

    #[test]
    fn a_callers_decision_is_followed_whatever_the_ratio() {
        for ratio in [0.0, 0.01, 1.0] {
            assert!(decision(ratio, &caller(TraceFlags::SAMPLED), || 0), "sampled caller, ratio {ratio}");
            assert!(!decision(ratio, &caller(TraceFlags::default()), || 0), "unsampled caller, ratio {ratio}");
        }
    }

    #[test]
    fn a_trace_that_starts_here_is_sampled_at_the_ratio() {
        let root = SpanContext::empty_context();
        assert!(!decision(0.0, &root, || 0) && !decision(0.0, &root, || u64::MAX));
        assert!(decision(1.0, &root, || 0) && decision(1.0, &root, || u64::MAX));
        let draws = 100_000;
        for ratio in [0.01, 0.5] {
            let taken = (0..draws).filter(|_| decision(ratio, &root, next_random)).count();
            let expected = ratio * draws as f64;
            // Five standard deviations either way.
            let margin = 5.0 * (expected * (1.0 - ratio)).sqrt();
            assert!((taken as f64 - expected).abs() < margin, "ratio {ratio}: {taken} of {draws}");
        }
    }

    /// A caller's headers are hostile too: a traceparent that is not well-formed, control characters, a
    /// tracestate as long as a header block may be; none is a parent, and none panics.
    #[test]
    fn headers_that_are_not_a_trace_context_are_no_parent() {
        use opentelemetry::trace::TraceContextExt;
        let long_state = format!("a={}", "b".repeat(16 * 1024));
        let cases: [(&str, &str); 6] = [
            ("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736", ""),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01 \t", ""),
            ("", long_state.as_str()),
        ];
        for (traceparent, tracestate) in cases {
            let mut headers = http::HeaderMap::new();
            for (name, value) in [("traceparent", traceparent), ("tracestate", tracestate)] {
                if let Ok(value) = http::HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            let parent = parent_of(&headers);
            assert!(!parent.span().span_context().is_valid(), "{traceparent:?} is a parent");
        }
        // With traces off no header is read: nothing is exported.
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(parent_of(&headers).span().span_context().is_valid(), "a well-formed one is");
        assert!(exported_parent(&headers).is_none(), "traces are off in this process");
    }
}
