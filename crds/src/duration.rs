//! Durations in manifests: strings such as `30s`, `5m` or `1h30m`.
//!
//! This is Kubernetes' convention (`metav1.Duration`, Go's duration syntax) narrowed to whole
//! numbers of `ms`, `s`, `m` and `h`, so that one regular expression checks it on the API
//! server and CEL's `duration()` can read every value the pattern admits.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// The syntax of a [`HumanDuration`], as the CRD states it.
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h))+$";
/// Longest accepted text; bounds the cost the API server estimates for the CEL rules.
pub const DURATION_MAX_LENGTH: usize = 32;

/// A duration as written in a manifest: `250ms`, `30s`, `5m`, `1h30m`.
///
/// It keeps the text as written so that an object with a malformed value still deserializes
/// and [`validate`](crate::validate) reports it along with every other problem; after
/// validation, [`HumanDuration::to_std`] always succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(String);

impl HumanDuration {
    /// Wraps text without checking it (see [`HumanDuration::to_std`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The duration, or `None` when the text is not a duration or is too long to represent.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        parse(&self.0).map(std::time::Duration::from_millis)
    }

    /// Whether the text is well formed and longer than zero: what every duration field needs.
    pub(crate) fn check(&self) -> Result<(), String> {
        match parse(&self.0) {
            None => Err(format!(
                "{:?} is not a duration such as 30s, 5m or 1h30m (whole numbers of ms, s, m or h)",
                self.0
            )),
            Some(0) => Err(format!("{:?} must be longer than zero", self.0)),
            Some(_) => Ok(()),
        }
    }
}

/// Writes the shortest text of whole hours, minutes, seconds and milliseconds, e.g. `1h30m`.
impl From<std::time::Duration> for HumanDuration {
    fn from(d: std::time::Duration) -> Self {
        let mut ms = d.as_millis();
        if ms == 0 {
            return Self("0s".into());
        }
        let mut text = String::new();
        for (unit, len) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= len {
                text.push_str(&format!("{}{unit}", ms / len));
                ms %= len;
            }
        }
        Self(text)
    }
}

impl From<&str> for HumanDuration {
    fn from(text: &str) -> Self {
        Self(text.into())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds of a duration text, following [`DURATION_PATTERN`] exactly.
fn parse(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > DURATION_MAX_LENGTH {
        return None;
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m": in "5ms" the unit is milliseconds, never minutes then seconds.
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first()? {
                b's' => (1_000, 1),
                b'm' => (60_000, 1),
                b'h' => (3_600_000, 1),
                _ => return None,
            }
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as 30s, 5m or 1h30m: whole numbers of ms, s, m or h.",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": [{
                // The pattern rejects malformed text; this rejects well-formed zero.
                "rule": "!self.matches('^(0+(ms|s|m|h))+$')",
                "messageExpression": "'\"' + self + '\" must be longer than zero'",
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_every_unit_and_combinations() {
        let ms = |s: &str| HumanDuration::from(s).to_std().map(|d| d.as_millis());
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("5m"), Some(300_000));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("1m5ms"), Some(60_005));
        assert_eq!(ms("0s"), Some(0));
        for bad in [
            "",
            "5",
            "m",
            "1.5h",
            "5 m",
            "5min",
            "1d",
            "-5s",
            "1234567890s",
            "5S",
        ] {
            assert_eq!(ms(bad), None, "{bad:?}");
        }
        assert_eq!(ms(&"1s".repeat(17)), None, "longer than the maximum length");
    }

    #[test]
    fn zero_is_reported_separately_from_bad_syntax() {
        assert_eq!(
            HumanDuration::from("0m0s").check(),
            Err("\"0m0s\" must be longer than zero".into())
        );
        assert!(HumanDuration::from("5 minutes")
            .check()
            .unwrap_err()
            .starts_with("\"5 minutes\" is not a duration"));
    }

    #[test]
    fn std_durations_format_as_the_shortest_text() {
        let text = |d: Duration| HumanDuration::from(d).to_string();
        assert_eq!(text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(text(Duration::from_millis(1_500)), "1s500ms");
        assert_eq!(text(Duration::ZERO), "0s");
        let d = Duration::from_millis(3_723_004);
        assert_eq!(HumanDuration::from(d).to_std(), Some(d));
    }
}
