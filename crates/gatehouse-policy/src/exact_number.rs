//! Numbers in constraints, compared exactly.
//!
//! Why not `f64`: an integer above 2^53 has no `f64` of its own, so
//! `1234567890123456700` and `1234567890123456789` are the same `f64`. A
//! `one_of` of account or channel ids (Snowflakes, 64-bit ids) compared as
//! `f64` admitted every id within a few hundred of an allowed one, and a
//! `max` let a larger integer through, while the tool received the integer
//! as sent. Integers are compared as integers here, and an integer with a
//! float by their exact values.

use std::cmp::Ordering;
use std::fmt;

/// A finite number as JSON or TOML wrote it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExactNumber {
    Integer(i128),
    Float(f64),
}

/// 2^127, exactly representable as an `f64`.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

impl ExactNumber {
    /// A JSON number: an integer when it is one (`u64` or `i64`), else the
    /// float serde_json read (finite: JSON has no NaN or infinity).
    pub(crate) fn of_json(number: &serde_json::Number) -> ExactNumber {
        if let Some(i) = number.as_i64() {
            ExactNumber::Integer(i128::from(i))
        } else if let Some(u) = number.as_u64() {
            ExactNumber::Integer(i128::from(u))
        } else {
            ExactNumber::Float(number.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// A TOML number; `None` for anything else, NaN and infinities.
    pub(crate) fn of_toml(value: &toml::Value) -> Option<ExactNumber> {
        match value {
            toml::Value::Integer(i) => Some(ExactNumber::Integer(i128::from(*i))),
            toml::Value::Float(f) if f.is_finite() => Some(ExactNumber::Float(*f)),
            _ => None,
        }
    }

    /// The exact order of two numbers. A NaN (which neither JSON nor the
    /// policy can hold) orders as equal to nothing: `None`.
    pub(crate) fn compare(self, other: ExactNumber) -> Option<Ordering> {
        match (self, other) {
            (ExactNumber::Integer(a), ExactNumber::Integer(b)) => Some(a.cmp(&b)),
            (ExactNumber::Float(a), ExactNumber::Float(b)) => a.partial_cmp(&b),
            (ExactNumber::Integer(a), ExactNumber::Float(b)) => integer_against_float(a, b),
            (ExactNumber::Float(a), ExactNumber::Integer(b)) => {
                integer_against_float(b, a).map(Ordering::reverse)
            }
        }
    }

    pub(crate) fn equals(self, other: ExactNumber) -> bool {
        self.compare(other) == Some(Ordering::Equal)
    }
}

/// Whether two JSON numbers are the same number, exactly.
pub fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    ExactNumber::of_json(a).equals(ExactNumber::of_json(b))
}

/// `integer` against `float`, exactly: the float's integral part is an
/// exact `i128` once it is known to lie within i128's range, and what is
/// left is its fraction.
fn integer_against_float(integer: i128, float: f64) -> Option<Ordering> {
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_127 {
        return Some(Ordering::Less);
    }
    if float < -TWO_POW_127 {
        return Some(Ordering::Greater);
    }
    let whole = float.trunc();
    // In range and integral: the conversion is exact.
    let whole_integer = whole as i128;
    match integer.cmp(&whole_integer) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(float - whole)),
        unequal => Some(unequal),
    }
}

impl fmt::Display for ExactNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExactNumber::Integer(i) => write!(f, "{i}"),
            ExactNumber::Float(x) => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_number(value: serde_json::Value) -> ExactNumber {
        ExactNumber::of_json(value.as_number().expect("a number"))
    }

    #[test]
    fn integers_beyond_the_exact_floats_stay_apart() {
        // The same f64, different integers.
        let allowed = json_number(json!(1_234_567_890_123_456_789_u64));
        let sent = json_number(json!(1_234_567_890_123_456_700_u64));
        assert_eq!(
            1_234_567_890_123_456_789_u64 as f64,
            1_234_567_890_123_456_700_u64 as f64
        );
        assert!(!allowed.equals(sent));
        assert_eq!(sent.compare(allowed), Some(Ordering::Less));
        let limit = json_number(json!(9_007_199_254_740_992_u64));
        let above = json_number(json!(9_007_199_254_740_993_u64));
        assert_eq!(above.compare(limit), Some(Ordering::Greater));
        let biggest = json_number(json!(u64::MAX));
        let smallest = json_number(json!(i64::MIN));
        assert_eq!(smallest.compare(biggest), Some(Ordering::Less));
    }

    #[test]
    fn integers_against_floats_by_their_exact_values() {
        let three = ExactNumber::Integer(3);
        assert!(three.equals(ExactNumber::Float(3.0)));
        assert_eq!(three.compare(ExactNumber::Float(3.5)), Some(Ordering::Less));
        assert_eq!(
            three.compare(ExactNumber::Float(2.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            ExactNumber::Integer(-3).compare(ExactNumber::Float(-3.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            ExactNumber::Integer(-3).compare(ExactNumber::Float(-2.5)),
            Some(Ordering::Less)
        );
        assert!(ExactNumber::Integer(0).equals(ExactNumber::Float(-0.0)));
        // 2^63 as a float is exactly 9223372036854775808: one more than i64::MAX.
        let two_pow_63 = ExactNumber::Float(9_223_372_036_854_775_808.0);
        assert_eq!(
            ExactNumber::Integer(i128::from(i64::MAX)).compare(two_pow_63),
            Some(Ordering::Less)
        );
        assert!(ExactNumber::Integer(1 << 63).equals(two_pow_63));
        assert_eq!(
            two_pow_63.compare(ExactNumber::Integer(i128::from(u64::MAX))),
            Some(Ordering::Less)
        );
        assert_eq!(
            ExactNumber::Integer(i128::MAX).compare(ExactNumber::Float(1e300)),
            Some(Ordering::Less)
        );
        assert_eq!(
            ExactNumber::Integer(i128::MIN).compare(ExactNumber::Float(-1e300)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            ExactNumber::Integer(1).compare(ExactNumber::Float(f64::NAN)),
            None
        );
    }

    #[test]
    fn toml_numbers_are_read_as_written() {
        let big = toml::Value::Integer(1_234_567_890_123_456_789);
        assert!(matches!(
            ExactNumber::of_toml(&big),
            Some(ExactNumber::Integer(1_234_567_890_123_456_789))
        ));
        assert!(ExactNumber::of_toml(&toml::Value::Float(f64::INFINITY)).is_none());
        assert!(ExactNumber::of_toml(&toml::Value::String("1".into())).is_none());
        assert_eq!(ExactNumber::Integer(5).to_string(), "5");
        assert_eq!(ExactNumber::Float(10.5).to_string(), "10.5");
    }
}
