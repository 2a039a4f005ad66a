//! Time domains. Event time and processing time are distinct types so that a timestamp of
//! one can never be compared with, or stored as, the other by accident. Both are UTC epoch
//! milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

macro_rules! time_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub const MIN: $name = $name(i64::MIN);
            pub const MAX: $name = $name(i64::MAX);

            pub const fn millis(self) -> i64 {
                self.0
            }

            /// `self + d`, saturating at the ends of the range.
            pub fn plus(self, d: Duration) -> $name {
                $name(self.0.saturating_add(duration_millis(d)))
            }

            /// `self - d`, saturating at the ends of the range.
            pub fn minus(self, d: Duration) -> $name {
                $name(self.0.saturating_sub(duration_millis(d)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match *self {
                    $name::MIN => f.write_str("-inf"),
                    $name::MAX => f.write_str("+inf"),
                    $name(ms) => write!(f, "{ms}"),
                }
            }
        }
    };
}

time_type!(
    /// When an event happened, as carried by the event itself.
    EventTime
);
time_type!(
    /// When the engine observes something, from the job's clock.
    ProcTime
);

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
