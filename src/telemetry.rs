//! Logging: `tracing` to standard error, filtered by `RUST_LOG` (default `info`), as text or JSON lines; how
//! an error is told in full; and how text from outside is written into a log line.

use std::{fmt, io::IsTerminal};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Does nothing if one is installed already (tests, an embedding program).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
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
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                // Quotes and backslashes cannot break a line: kept as they are, for readability.
                '"' | '\'' | '\\' => f.write_char(c)?,
                c => write!(f, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
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
