//! The operator's one error type.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// A child could not be built from the spec (a bad pod template override …).
    #[error("{0}")]
    Build(String),
    /// The coordinator's control API refused or could not be reached.
    #[error("control API {url}: {message}")]
    Control {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub fn control(base: &str, path: &str, status: u16, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Control {
            url: format!("{base}{path}"),
            status,
            message: if status == 0 {
                message
            } else {
                format!("{status}: {message}")
            },
        }
    }

    /// How soon to try again after this error.
    pub fn retry_after(&self) -> Duration {
        match self {
            Error::Build(_) | Error::Config(_) => Duration::from_secs(60),
            _ => Duration::from_secs(5),
        }
    }
}
