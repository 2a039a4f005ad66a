//! Resource quantities (`500m`, `2`, `4Gi`) in Kubernetes' notation, without depending on
//! k8s-openapi, so that the spec type is the same with and without the `kube` feature.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::fmt;

/// The syntax of a non-negative [`Quantity`], as the CRD states it (Kubernetes' own pattern
/// without the sign).
pub const QUANTITY_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Longest accepted text of a quantity.
pub const QUANTITY_MAX_LENGTH: usize = 64;

/// An amount of a resource: `500m` or `0.5` CPU, `4Gi` of memory, `2` GPUs.
///
/// YAML lets users write `cpu: 2` as a number; it is kept as the text `"2"`. The text is not
/// checked when deserializing (see [`validate`](crate::validate)), so that one malformed value
/// does not hide the others.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(String);

impl Quantity {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The amount in thousandths, rounded up as Kubernetes does: `500m` → 500, `2` → 2000,
    /// `1Ki` → 1 024 000. `None` when the text is not a quantity or the value is too large.
    /// Quota admission adds these up.
    pub fn milli_value(&self) -> Option<u128> {
        parse_milli(&self.0)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.0.len() > QUANTITY_MAX_LENGTH {
            return Err(format!("is longer than {QUANTITY_MAX_LENGTH} characters"));
        }
        match self.milli_value() {
            Some(_) => Ok(()),
            None if self.0.starts_with('-') && parse_milli(&self.0[1..]).is_some() => {
                Err("must not be negative".into())
            }
            None => Err(format!(
                "{:?} is not a quantity such as 500m, 2 or 4Gi",
                self.0
            )),
        }
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Self(text.into())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quantity such as 500m, 2 or 4Gi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.into()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            // The API server takes integers and strings only (x-kubernetes-int-or-string), so
            // `cpu: 0.5` must fail here too; the message says what to write instead.
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Err(E::invalid_type(
                    serde::de::Unexpected::Float(v),
                    &"an integer or a string: write fractions as text (\"0.5\") or in thousandths (500m)",
                ))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // No `anyOf: [integer, string]`: kube's structural rewrite would empty its branches,
        // and `x-kubernetes-int-or-string` alone says the same to the API server.
        json_schema!({
            "description": "A quantity such as 500m, 2 or 4Gi.",
            "pattern": QUANTITY_PATTERN,
            // Bounds the cost the API server estimates for the rule below.
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                // The pattern checks strings only; integers need their own rule.
                "rule": "type(self) == string || self >= 0",
                "message": "must not be negative",
            }],
        })
    }
}

/// Thousandths of a quantity, rounded up; follows Kubernetes' grammar for non-negative values.
fn parse_milli(text: &str) -> Option<u128> {
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = text.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    // The number as an integer mantissa times 10^exp10, times 2^exp2 from a binary suffix.
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
    }
    let mut exp10: i32 = -i32::try_from(fraction.len()).ok()?;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exp10 += exponent.parse::<i32>().ok()?;
        }
    }
    // Thousandths: shift the decimal exponent by three.
    let value = mantissa.checked_mul(1u128.checked_shl(exp2)?)?;
    let exp10 = exp10 + 3;
    if exp10 >= 0 {
        value.checked_mul(10u128.checked_pow(u32::try_from(exp10).ok()?)?)
    } else {
        match 10u128.checked_pow(exp10.unsigned_abs()) {
            Some(divisor) => Some(value.div_ceil(divisor)),
            // Smaller than any thousandth: rounds up to one, or is zero.
            None => Some(u128::from(value > 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_notation_in_thousandths() {
        let m = |s: &str| Quantity::from(s).milli_value();
        assert_eq!(m("500m"), Some(500));
        assert_eq!(m("2"), Some(2_000));
        assert_eq!(m("0.5"), Some(500));
        assert_eq!(m(".5"), Some(500));
        assert_eq!(m("1."), Some(1_000));
        assert_eq!(m("1k"), Some(1_000_000));
        assert_eq!(m("1Ki"), Some(1_024_000));
        assert_eq!(m("4Gi"), Some(4 * (1 << 30) * 1_000));
        assert_eq!(m("1.5Gi"), Some(1_610_612_736_000));
        assert_eq!(m("1e3"), Some(1_000_000));
        assert_eq!(m("1E-3"), Some(1));
        assert_eq!(m("1E"), Some(1_000_000_000_000_000_000_000));
        assert_eq!(m("1n"), Some(1), "rounded up to a thousandth");
        assert_eq!(m("0"), Some(0));
        for bad in [
            "", "abc", "1.2.3", "-1", "1Gb", "1 Gi", "1e", "1e+", "Gi", ".",
        ] {
            assert_eq!(m(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn integers_in_yaml_become_text_and_fractions_must_be_text() {
        let q: Vec<Quantity> = serde_yaml::from_str("[2, '0.5', 4Gi]").unwrap();
        assert_eq!(q, ["2", "0.5", "4Gi"].map(Quantity::from));
        let err = serde_yaml::from_str::<Quantity>("0.5")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid type: floating point `0.5`, expected an integer or a string"),
            "{err}"
        );
    }

    #[test]
    fn negative_numbers_are_reported_as_such() {
        assert_eq!(
            Quantity::from("-1").check(),
            Err("must not be negative".into())
        );
        assert!(Quantity::from("-x")
            .check()
            .unwrap_err()
            .contains("is not a quantity"));
    }
}
