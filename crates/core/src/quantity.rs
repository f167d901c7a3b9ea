//! Kubernetes resource quantities (`500m`, `7.5Gi`, `1e3`), parsed exactly.
//!
//! Values are kept as an integer count of thousandths ("milli-units"), which
//! is exact for every CPU and memory value Tidepool deals with; finer
//! fractions (`n`, `u`) round up, as the API server does.

use std::fmt;

/// A parsed quantity, in thousandths of a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    milli: i128,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid quantity: {reason}")]
pub struct QuantityError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const LIMIT: i128 = 1 << 100;

impl Quantity {
    /// A quantity of `milli` thousandths.
    pub const fn from_milli(milli: i128) -> Self {
        Self { milli }
    }

    /// A quantity of whole units.
    pub const fn from_units(units: i128) -> Self {
        Self {
            milli: units * 1000,
        }
    }

    /// The value in thousandths (millicores for CPU).
    pub const fn milli(self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up (bytes for memory).
    pub fn units_ceil(self) -> i128 {
        self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0)
    }

    /// Thousandths of a quantity read from an API object, as a count:
    /// `0` when it does not parse or is negative (the API server rejects
    /// both, so only a broken server sends them).
    pub fn milli_lenient(input: &str) -> u64 {
        Self::parse(input).map_or(0, |q| u64::try_from(q.milli()).unwrap_or(0))
    }

    /// Whole units (rounded up) of a quantity read from an API object, as
    /// a count; `0` when it does not parse or is negative.
    pub fn units_lenient(input: &str) -> u64 {
        Self::parse(input).map_or(0, |q| u64::try_from(q.units_ceil()).unwrap_or(0))
    }

    /// Parses Kubernetes quantity syntax: an optionally signed decimal
    /// number followed by a binary suffix (`Ki`…`Ei`), a decimal suffix
    /// (`n`, `u`, `m`, `k`, `M`…`E`) or an exponent (`e3`, `E-2`).
    ///
    /// # Errors
    /// Returns a [`QuantityError`] naming the input and the problem.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("no digits"));
        }
        if frac_part.contains('.') {
            return Err(err("more than one decimal point"));
        }
        if int_part.len() + frac_part.len() > 30 {
            return Err(err("too many digits"));
        }
        // mantissa = digits as integer, scaled by 10^-frac_len
        let mut mantissa: i128 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            mantissa = mantissa * 10 + i128::from(c as u8 - b'0');
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| err("too many digits"))?;
        // value = mantissa * 10^(dec_exp - frac_len) * 2^bin_exp
        let (dec_exp, bin_exp): (i32, u32) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            s if s.starts_with(['e', 'E']) => {
                let exp: i32 = s[1..].parse().map_err(|_| err("bad exponent"))?;
                if !(-30..=30).contains(&exp) {
                    return Err(err("exponent out of range"));
                }
                (exp, 0)
            }
            _ => return Err(err("unknown suffix")),
        };
        // milli = mantissa * 2^bin * 10^(dec_exp - frac_len + 3), rounded up.
        let mut value = mantissa
            .checked_mul(1i128 << bin_exp)
            .ok_or_else(|| err("too large"))?;
        let exp10 = dec_exp - frac_len + 3;
        if exp10 >= 0 {
            for _ in 0..exp10 {
                value = value.checked_mul(10).ok_or_else(|| err("too large"))?;
            }
        } else {
            let divisor = 10i128
                .checked_pow(exp10.unsigned_abs())
                .ok_or_else(|| err("too small"))?;
            value = value / divisor + i128::from(value % divisor != 0);
        }
        if value > LIMIT {
            return Err(err("too large"));
        }
        Ok(Self {
            milli: if negative { -value } else { value },
        })
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    /// Canonical-ish form: whole units when exact, else milli-units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

/// Formats a byte count with the largest binary suffix that keeps it exact
/// to one decimal (`7.5Gi`, `512Mi`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size && (bytes * 10).is_multiple_of(size) {
            let tenths = bytes * 10 / size;
            return if tenths.is_multiple_of(10) {
                format!("{}{suffix}", tenths / 10)
            } else {
                format!("{}.{}{suffix}", tenths / 10, tenths % 10)
            };
        }
    }
    bytes.to_string()
}

/// Formats millicores as Kubernetes does (`3800m`, `4`).
pub fn format_millicores(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_cpu_and_memory_forms_parse_exactly() {
        let cases = [
            ("500m", 500),
            ("4", 4000),
            ("0.5", 500),
            ("1Ki", 1_024_000),
            ("7.5Gi", 7_5 * (1 << 30) * 100),
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
            ("100n", 1),
            ("+2", 2000),
            ("-1", -1000),
        ];
        for (text, milli) in cases {
            assert_eq!(Quantity::parse(text).unwrap().milli(), milli, "{text}");
        }
    }

    #[test]
    fn bad_quantities_name_the_problem() {
        for (text, reason) in [
            ("", "empty"),
            ("abc", "no digits"),
            ("1.2.3", "more than one decimal point"),
            ("5Xi", "unknown suffix"),
            ("1e999", "exponent out of range"),
            ("1e", "bad exponent"),
        ] {
            let e = Quantity::parse(text).unwrap_err();
            assert_eq!(e.reason, reason, "{text}");
        }
    }

    #[test]
    fn units_round_up() {
        assert_eq!(Quantity::parse("1500m").unwrap().units_ceil(), 2);
        assert_eq!(Quantity::parse("2").unwrap().units_ceil(), 2);
    }

    #[test]
    fn byte_counts_format_with_binary_suffixes() {
        assert_eq!(format_bytes(8 << 30), "8Gi");
        assert_eq!(format_bytes((15 << 30) / 2), "7.5Gi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_millicores(3800), "3800m");
        assert_eq!(format_millicores(4000), "4");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Quantity::parse(&s);
        }
    }
}
