use std::time::Duration;

/// How a source derives watermarks from the timestamps of each split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// Records may arrive this much later than the newest timestamp seen.
    pub max_out_of_orderness: Duration,
    /// A split with no record for this long (processing time) stops holding back the
    /// watermark until it produces again.
    pub idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Timestamps never decrease.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(Duration::ZERO)
    }

    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy {
            max_out_of_orderness: bound,
            idle_timeout: None,
        }
    }

    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}
