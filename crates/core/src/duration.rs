//! Human durations as written in configuration: `30s`, `4h`, `7d`, `1h30m`.

use std::fmt;
use std::time::Duration;

/// Why a string is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid duration: {reason} (use e.g. 30s, 10m, 4h, 7d or 1h30m)")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration: one or more `<integer><unit>` groups with units `ms`,
/// `s`, `m`, `h`, `d` (24 h) and `w` (7 d). A bare `0` is zero.
///
/// # Errors
/// Returns a [`DurationError`] for empty input, a missing or unknown unit,
/// a missing number, or a value that overflows.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let part = number.checked_mul(ms_per).ok_or_else(|| err("too large"))?;
        total_ms = total_ms.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A duration formatted compactly with its two largest units (`4h`, `1h30m`,
/// `2d3h`, `45s`, `250ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms < 1000 {
            return write!(f, "{ms}ms");
        }
        let secs = self.0.as_secs();
        let units = [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)];
        let mut remaining = secs;
        let mut written = 0;
        for (name, size) in units {
            let n = remaining / size;
            if n > 0 {
                write!(f, "{n}{name}")?;
                remaining -= n * size;
                written += 1;
                if written == 2 {
                    break;
                }
            } else if written > 0 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_durations_parse() {
        for (text, secs) in [
            ("30s", 30),
            ("4h", 14_400),
            ("7d", 604_800),
            ("1h30m", 5_400),
            ("2w", 1_209_600),
            ("0", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn bad_durations_name_the_problem() {
        for (text, reason) in [
            ("", "empty"),
            ("4", "missing unit"),
            ("4x", "unknown unit"),
            ("h", "expected a number"),
            ("4 h", "unknown unit"),
            ("99999999999999999999s", "number too large"),
        ] {
            assert_eq!(parse_duration(text).unwrap_err().reason, reason, "{text}");
        }
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(Human(Duration::from_secs(5_400)).to_string(), "1h30m");
        assert_eq!(Human(Duration::from_secs(14_400)).to_string(), "4h");
        assert_eq!(Human(Duration::from_secs(93_784)).to_string(), "1d2h");
        assert_eq!(Human(Duration::from_millis(250)).to_string(), "250ms");
        assert_eq!(Human(Duration::ZERO).to_string(), "0s");
    }

    proptest::proptest! {
        #[test]
        fn formatting_then_parsing_whole_minutes_round_trips(mins in 1u64..100_000) {
            let d = Duration::from_secs(mins * 60);
            let text = Human(d).to_string();
            let parsed = parse_duration(&text).unwrap();
            // Two units only, so the round trip may drop the smallest part.
            proptest::prop_assert!(parsed <= d);
            proptest::prop_assert!(d - parsed < Duration::from_secs(3_600));
        }
    }
}
