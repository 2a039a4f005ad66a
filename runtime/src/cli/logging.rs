//! The process's log subscriber: the library logs through `tracing`, the binary decides
//! where and how the events are written.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log events are written to standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the subscriber once, at the start of the binary. The filter comes from
/// `RUST_LOG` (`info` when unset); the format from `--log-format`, else
/// `SLUICE_LOG_FORMAT`, else text.
pub(crate) fn init(format: Option<LogFormat>) {
    let format = format.unwrap_or_else(|| match std::env::var("SLUICE_LOG_FORMAT") {
        Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (a binary calling `main_with` twice) keeps the first.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
