//! The trace keys of `[anonymous_results_service]`: where spans are exported over OTLP (absent: no export,
//! the logs as before), in which protocol, how many traces are kept, and the headers a collector asks for.

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    table::Table,
};
use crate::secret::Secret;

pub(super) const OTLP_ENDPOINT: Key = Key {
    name: "otlp_endpoint",
    kind: Kind::Url,
    default: KeyDefault::None,
    meaning: "the OTLP collector spans are exported to (\"http://otel-collector:4317\" for grpc, \"...:4318\" for http/protobuf); unset: no trace export",
};
pub(super) const OTLP_PROTOCOL: Key = Key {
    name: "otlp_protocol",
    kind: Kind::Choice(&["grpc", "http/protobuf"]),
    default: KeyDefault::Text("grpc"),
    meaning: "how spans reach the collector: grpc or http/protobuf (to <otlp_endpoint>/v1/traces)",
};
pub(super) const TRACE_SAMPLE_RATIO: Key = Key {
    name: "trace_sample_ratio",
    kind: Kind::Ratio,
    default: KeyDefault::Ratio(1.0),
    meaning: "the share of traces started here that are kept, from 0 to 1; a call whose caller's trace is sampled (traceparent) follows the caller",
};
pub(super) const OTLP_HEADERS: Key = Key {
    name: "otlp_headers",
    kind: Kind::Secret,
    default: KeyDefault::None,
    meaning: "headers sent with every export, as \"name=value,name=value\" (a collector's token, say); never shown",
};

pub(super) const KEYS: &[&Key] = &[&OTLP_ENDPOINT, &OTLP_PROTOCOL, &TRACE_SAMPLE_RATIO, &OTLP_HEADERS];

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    #[default]
    Grpc,
    /// OTLP over HTTP, protobuf bodies, to `<endpoint>/v1/traces`.
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// `otlp_endpoint`: `None`, no export.
    pub endpoint: Option<String>,
    /// `otlp_protocol` (default grpc).
    pub protocol: OtlpProtocol,
    /// `trace_sample_ratio` (default 1): of the traces that start here, parent-based.
    pub sample_ratio: f64,
    /// `otlp_headers`: names and values (a secret each), checked as HTTP headers.
    pub headers: Vec<(String, Secret)>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self { endpoint: None, protocol: OtlpProtocol::Grpc, sample_ratio: 1.0, headers: Vec::new() }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<TraceConfig, ConfigError> {
    let endpoint = table.text(&OTLP_ENDPOINT)?;
    let protocol = match table.text(&OTLP_PROTOCOL)?.as_deref() {
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        _ => OtlpProtocol::Grpc,
    };
    let sample_ratio = table.ratio(&TRACE_SAMPLE_RATIO)?.unwrap_or(1.0);
    let headers = match table.secret(&OTLP_HEADERS)? {
        Some(text) => parse_headers(text.expose())
            .map_err(|message| ConfigError::invalid(&table.key(OTLP_HEADERS.name), message))?,
        None => Vec::new(),
    };
    Ok(TraceConfig { endpoint, protocol, sample_ratio, headers })
}

/// `name=value,name=value`, each name a valid HTTP header name and each value a valid header value; the
/// error names the header (never its value: it is a secret).
fn parse_headers(text: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err("must be name=value pairs separated by commas".into());
        };
        let name = name.trim().to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{}` is not an HTTP header name", name.escape_debug()));
        }
        if http::HeaderValue::from_str(value.trim()).is_err() {
            return Err(format!("the value of `{name}` is not a valid header value (control characters?)"));
        }
        headers.push((name, Secret::new(value.trim().to_owned())));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value_pairs_and_their_values_never_appear_in_an_error() {
        let parsed = parse_headers("Authorization=Bearer s3cr3t, x-tenant = blue ,").unwrap();
        let names: Vec<&str> = parsed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["authorization", "x-tenant"]);
        assert_eq!(parsed[0].1.expose(), "Bearer s3cr3t");
        for bad in ["no-equals-s3cr3t", "bad name=s3cr3t", "x=s3cr3t\u{7}"] {
            let error = parse_headers(bad).unwrap_err();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
        assert_eq!(parse_headers("").unwrap(), Vec::new());
    }
}
