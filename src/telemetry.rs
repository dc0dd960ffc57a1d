//! Logging: `tracing` to standard error, filtered by `RUST_LOG` (default `info`), as text or JSON lines,
//! written by a thread of their own (`lines.rs`); how an error is told in full; and how text from outside is
//! written into a log line.

mod lines;
pub mod traces;

use std::{fmt, io::IsTerminal};

pub use lines::{FLUSH_TIMEOUT, Flush, Lines, MAX_BUFFERED};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber, its lines written to standard error by a thread of their own, and with
/// an `otlp_endpoint` the layer that makes spans OpenTelemetry spans (`traces.rs`; their export starts with
/// [`traces::start_export`] on the runtime). Does nothing if a subscriber is installed already (tests, an
/// embedding program). Keep the answer until the end of `main`: dropped, it writes the lines still buffered.
pub fn init(format: LogFormat, traces: &crate::config::TraceConfig) -> Flush {
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = Lines::start();
    let flush = lines.flush_on_drop();
    let ansi = std::io::stderr().is_terminal();
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(lines).with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(lines)
            .with_ansi(ansi)
            .boxed(),
    };
    // Spans are exported whatever RUST_LOG says of log lines (the filter applies to the lines only): the
    // service's own spans and log lines to debug (a storage request's span is at debug), any crate's warnings.
    // Not the libraries' spans: h2's and hyper's, per frame and per connection, would cost every call (and
    // the health Check) far more than they tell. Nor the spans of traces not sampled ([`traces::LOGS_ONLY`]).
    // A filter by target, decided once per callsite.
    let exported = tracing_subscriber::filter::Targets::new()
        .with_target("anonymous_results", tracing::Level::DEBUG)
        .with_target(traces::LOGS_ONLY, tracing_subscriber::filter::LevelFilter::OFF)
        .with_default(tracing::Level::WARN);
    // What each span costs is kept to its fields: no code location, thread, busy and idle time, or context
    // made current on every poll (nothing here reads it: a span's parent is its tracing parent).
    let spans = traces::provider(traces).map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_target(false)
            .with_filter(exported)
    });
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init();
    flush
}

/// An error and its sources, `: `-separated: many libraries' top-level messages alone ("builder error",
/// "transport error") do not say what to fix.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Text from outside the service (a request, a stored record, a storage error) as a log line shows it: control
/// and other invisible characters escaped (`\n`, `\u{1b}`, `\u{202e}`), so that it can neither start a line of
/// its own nor drive a terminal.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of characters that need no escaping are written as they are, in one piece.
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| needs_escaping(*c)) {
            f.write_str(&rest[..at])?;
            write!(f, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether `c` is written escaped: it would if `escape_debug` changes it, but for quotes and backslashes,
/// which cannot break a line and are kept as they are, for readability.
fn needs_escaping(c: char) -> bool {
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_stays_on_its_line() {
        let text = "q\nINFO forged \u{1b}[31mred\u{1b}[0m \u{202e}evil \"quoted\" é";
        let shown = Escaped(text).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}') && !shown.contains('\u{202e}'), "{shown}");
        assert_eq!(shown, r#"q\nINFO forged \u{1b}[31mred\u{1b}[0m \u{202e}evil "quoted" é"#);
    }
}
