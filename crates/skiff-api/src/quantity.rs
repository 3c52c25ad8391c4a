//! Kubernetes resource quantities: a decimal number with an optional suffix, either binary
//! (`Ki Mi Gi Ti Pi Ei`), decimal (`n u m k M G T P E`) or an exponent (`e3`, `E-2`). CPU is read in
//! millicores and memory in bytes, as the scheduler and the agent need them.

use std::fmt;

/// A parsed quantity, kept as the text the user wrote (so it serializes back unchanged) and its
/// value in thousandths (milli-units), exact for every suffix down to `m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    millis: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a quantity: expected a number with an optional suffix such as 250m, 128Mi or 1G")]
    Malformed(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} has more precision than a thousandth (the smallest unit Skiff keeps is 1m)")]
    TooPrecise(String),
}

impl Quantity {
    /// Parses `text` the way Kubernetes does.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let malformed = || QuantityError::Malformed(text.to_string());
        let t = text.trim();
        if t.is_empty() || t != text {
            return Err(malformed());
        }
        let (sign, rest) = match t.as_bytes()[0] {
            b'-' => (-1i128, &t[1..]),
            b'+' => (1, &t[1..]),
            _ => (1, t),
        };
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(split);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(malformed());
        }
        // (numerator multiplier, denominator) of the suffix, applied to thousandths.
        let (mul, div): (i128, i128) = match suffix {
            "" => (1000, 1),
            "n" => (1, 1_000_000),
            "u" => (1, 1000),
            "m" => (1, 1),
            "k" => (1_000_000, 1),
            "M" => (1_000_000_000, 1),
            "G" => (1_000_000_000_000, 1),
            "T" => (1_000_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000_000, 1),
            "Ki" => (1000 << 10, 1),
            "Mi" => (1000 << 20, 1),
            "Gi" => (1000 << 30, 1),
            "Ti" => (1000 << 40, 1),
            "Pi" => (1000 << 50, 1),
            "Ei" => (1000 << 60, 1),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| malformed())?;
                if !(-3..=18).contains(&e) {
                    return Err(QuantityError::TooLarge(text.to_string()));
                }
                if e >= 0 {
                    (1000 * 10i128.pow(e as u32), 1)
                } else {
                    (1000, 10i128.pow((-e) as u32))
                }
            }
            _ => return Err(malformed()),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.len() > 18 {
            return Err(QuantityError::TooPrecise(text.to_string()));
        }
        let digits = format!("{int}{frac}");
        let value: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| malformed())? };
        let scale = 10i128.pow(frac.len() as u32);
        let numerator = value.checked_mul(mul).ok_or_else(|| QuantityError::TooLarge(text.to_string()))?;
        let denominator = scale * div;
        if numerator % denominator != 0 {
            return Err(QuantityError::TooPrecise(text.to_string()));
        }
        Ok(Quantity { text: text.to_string(), millis: sign * numerator / denominator })
    }

    /// The value in thousandths: millicores for CPU.
    pub fn millis(&self) -> i128 {
        self.millis
    }

    /// The value in whole units, rounded up: bytes for memory.
    pub fn units_ceil(&self) -> i128 {
        (self.millis + 999).div_euclid(1000)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Written as its text (`"250m"`), as Kubernetes does. Read from a string or, as YAML allows
/// (`cpu: 1`), a number.
impl serde::Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 250m, 128Mi or 1")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(s: &str) -> i128 {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).millis()
    }

    #[test]
    fn cpu_quantities_are_read_in_millicores() {
        assert_eq!(millis("250m"), 250);
        assert_eq!(millis("1"), 1000);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis("1.5"), 1500);
        assert_eq!(millis("2k"), 2_000_000);
        assert_eq!(millis("100000u"), 100);
    }

    #[test]
    fn memory_quantities_are_read_in_bytes() {
        assert_eq!(Quantity::parse("128Mi").map(|q| q.units_ceil()), Ok(128 << 20));
        assert_eq!(Quantity::parse("64Mi").map(|q| q.units_ceil()), Ok(64 << 20));
        assert_eq!(Quantity::parse("1G").map(|q| q.units_ceil()), Ok(1_000_000_000));
        assert_eq!(Quantity::parse("1.5Gi").map(|q| q.units_ceil()), Ok(3 << 29));
        assert_eq!(Quantity::parse("129e6").map(|q| q.units_ceil()), Ok(129_000_000));
        assert_eq!(Quantity::parse("1E-3").map(|q| q.millis()), Ok(1));
    }

    #[test]
    fn the_text_is_kept_as_written() {
        assert_eq!(Quantity::parse("250m").map(|q| q.to_string()), Ok("250m".to_string()));
    }

    #[test]
    fn malformed_and_too_precise_quantities_are_refused_with_the_text() {
        for bad in ["", " 1", "1 ", "abc", "1.2.3", "12Mb", ".", "1e", "m"] {
            assert!(matches!(Quantity::parse(bad), Err(QuantityError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(Quantity::parse("0.1m"), Err(QuantityError::TooPrecise(_))));
        assert!(matches!(Quantity::parse("1e40"), Err(QuantityError::TooLarge(_))));
        let msg = Quantity::parse("12Mb").expect_err("bad").to_string();
        assert!(msg.contains("\"12Mb\"") && msg.contains("128Mi"), "{msg}");
    }
}
