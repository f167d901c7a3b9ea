//! The one place where the lab's clock meets the real control plane's:
//! every timestamp in a JSON body crossing between Tidepool (or a test, or
//! kubectl) and the real kube-apiserver is moved between real time and the
//! lab's simulated time.
//!
//! The lab's clock starts at the real wall-clock time `origin` and runs
//! `scale` times faster, so simulated `sim = origin + (real - origin) ×
//! scale`. Responses are mapped real → simulated, request bodies simulated
//! → real; at scale 1 both are the identity.
//!
//! A timestamp is any JSON string in RFC 3339 form with a `Z` or numeric
//! offset (`2026-12-07T17:30:00Z`, `...00.123456Z`). The output keeps the
//! input's number of fractional digits (the API server parses `MicroTime`
//! with exactly six).

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;
use serde_json::Value;

/// Errors of this module (mapping cannot fail; kept for the module convention).
#[derive(Debug, thiserror::Error)]
pub enum ClockMapError {}

/// Which way a body crosses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the API server to a client: real → simulated.
    ToSim,
    /// From a client to the API server: simulated → real.
    ToReal,
}

/// The affine map between real and simulated time of one lab clock.
#[derive(Clone, Copy, Debug)]
pub struct ClockMap {
    origin_ns: i128,
    scale: f64,
}

impl ClockMap {
    /// The map of a clock that started at `origin_unix_ms` and runs `scale`
    /// times faster than real time.
    pub fn new(origin_unix_ms: i64, scale: f64) -> Self {
        Self::from_nanos(i128::from(origin_unix_ms) * 1_000_000, scale)
    }

    /// The map of the lab's clock.
    pub fn of(clock: &tidepool_lab_sim::SimClock) -> Self {
        Self::from_nanos(clock.origin_unix_nanos(), clock.scale())
    }

    fn from_nanos(origin_ns: i128, scale: f64) -> Self {
        Self {
            origin_ns,
            scale: if scale.is_finite() && scale >= 1.0 {
                scale
            } else {
                1.0
            },
        }
    }

    /// Whether the map changes anything (scale above 1).
    pub fn is_identity(&self) -> bool {
        self.scale <= 1.0
    }

    /// One instant moved across.
    pub fn map_instant(&self, t: Timestamp, dir: Direction) -> Timestamp {
        let since = t.as_nanosecond() - self.origin_ns;
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let moved = match dir {
            Direction::ToSim => (since as f64 * self.scale) as i128,
            Direction::ToReal => (since as f64 / self.scale) as i128,
        };
        Timestamp::from_nanosecond(self.origin_ns + moved).unwrap_or(t)
    }

    /// Rewrites every timestamp string inside `value`.
    pub fn map_value(&self, value: &mut Value, dir: Direction) {
        if self.is_identity() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Some(mapped) = self.map_text(s, dir) {
                    *s = mapped;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.map_value(v, dir)),
            Value::Object(map) => map.values_mut().for_each(|v| self.map_value(v, dir)),
            _ => {}
        }
    }

    /// Rewrites the timestamps of a JSON document given as bytes; anything
    /// that is not JSON comes back unchanged.
    pub fn map_bytes(&self, body: &[u8], dir: Direction) -> Vec<u8> {
        if self.is_identity() || body.is_empty() {
            return body.to_vec();
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(mut v) => {
                self.map_value(&mut v, dir);
                serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
            }
            Err(_) => body.to_vec(),
        }
    }

    fn map_text(&self, s: &str, dir: Direction) -> Option<String> {
        let digits = fraction_digits(s)?;
        let t: Timestamp = s.parse().ok()?;
        let moved = self.map_instant(t, dir);
        // The same precision as the input: the API server parses MicroTime
        // with exactly six digits, and keeps Time in whole seconds anyway.
        Some(
            DateTimePrinter::new()
                .precision(Some(digits))
                .timestamp_to_string(&moved),
        )
    }
}

/// The number of fractional-second digits of an RFC 3339 timestamp, or
/// `None` when `s` is not one (a cheap shape check before parsing).
fn fraction_digits(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 35 {
        return None;
    }
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let shape = (0..4).all(digit)
        && b[4] == b'-'
        && digit(5)
        && digit(6)
        && b[7] == b'-'
        && digit(8)
        && digit(9)
        && b[10] == b'T'
        && digit(11)
        && digit(12)
        && b[13] == b':'
        && digit(14)
        && digit(15)
        && b[16] == b':'
        && digit(17)
        && digit(18);
    if !shape {
        return None;
    }
    let rest = &s[19..];
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (n, &r[n..])
        }
        None => (0, rest),
    };
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':');
    (zone_ok && fraction <= 9).then(|| u8::try_from(fraction).unwrap_or(9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map() -> ClockMap {
        // Origin 2026-01-01T00:00:00Z, 100× faster.
        ClockMap::new(1_767_225_600_000, 100.0)
    }

    #[test]
    fn a_real_stamp_ten_seconds_after_the_origin_is_a_simulated_one_thousand_seconds_after() {
        let mut v = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:10Z"},
            "status": {"conditions": [{"lastTransitionTime": "2026-01-01T00:00:01.500000Z"}]}});
        map().map_value(&mut v, Direction::ToSim);
        assert_eq!(v["metadata"]["creationTimestamp"], "2026-01-01T00:16:40Z");
        assert_eq!(
            v["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:02:30.000000Z"
        );
    }

    #[test]
    fn simulated_stamps_written_by_clients_go_back_to_real_time_and_round_trip() {
        let m = map();
        let mut v = json!({"spec": {"renewTime": "2026-01-01T00:16:40.000000Z"}, "name": "2026"});
        m.map_value(&mut v, Direction::ToReal);
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T00:00:10.000000Z");
        assert_eq!(v["name"], "2026");
        m.map_value(&mut v, Direction::ToSim);
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T00:16:40.000000Z");
    }

    #[test]
    fn only_rfc3339_strings_are_timestamps() {
        assert_eq!(fraction_digits("2026-01-01T00:00:10Z"), Some(0));
        assert_eq!(fraction_digits("2026-01-01T00:00:10.123+02:00"), Some(3));
        assert_eq!(fraction_digits("2026-01-01 00:00:10Z"), None);
        assert_eq!(fraction_digits("burst-2026-01-01T00:00:10Z"), None);
        assert_eq!(fraction_digits("12345"), None);
    }

    #[test]
    fn at_scale_one_nothing_changes() {
        let m = ClockMap::new(1_767_225_600_000, 1.0);
        let body = br#"{"t":"2026-01-01T00:00:10Z"}"#;
        assert_eq!(m.map_bytes(body, Direction::ToSim), body.to_vec());
    }
}
