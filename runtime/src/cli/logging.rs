//! The `sluice` binary's logs: `tracing` events on standard error, as text or, with
//! `SLUICE_LOG_FORMAT=json`, as one JSON object per line (for log collectors in a cluster).
//! `RUST_LOG` filters them (default `info`). What a command prints as its result (a run's
//! summary, a savepoint check's report) is not logged but printed, and stays as it is.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the process's subscriber; a second call changes nothing.
pub(super) fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Fails only when a subscriber is installed already, which is then kept.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
