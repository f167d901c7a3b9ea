//! The lab's clock: a virtual wall clock that runs `scale` times faster than
//! real time, so minutes of clone, boot and join (and hours of TTL) pass in
//! seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A shared, cheaply cloneable clock whose simulated time advances `scale`
/// times faster than real time from the moment it was created.
///
/// # Guarantees
/// Simulated time is monotonic and starts at the real wall-clock time of
/// creation, so timestamps the lab writes look like ordinary ones.
#[derive(Clone, Debug)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    scale: f64,
    origin_real: Instant,
    origin_wall: SystemTime,
}

impl SimClock {
    /// A clock running `scale` times faster than real time. Values below 1
    /// or not finite are taken as 1 (real time).
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale >= 1.0 {
            scale
        } else {
            1.0
        };
        Self {
            inner: Arc::new(Inner {
                scale,
                origin_real: Instant::now(),
                origin_wall: SystemTime::now(),
            }),
        }
    }

    /// A clock that runs at real time.
    pub fn real_time() -> Self {
        Self::new(1.0)
    }

    /// How many times faster than real time this clock runs.
    pub fn scale(&self) -> f64 {
        self.inner.scale
    }

    /// The current simulated wall-clock time.
    pub fn now(&self) -> SystemTime {
        let elapsed = self.inner.origin_real.elapsed();
        self.inner.origin_wall + elapsed.mul_f64(self.inner.scale)
    }

    /// The real wall-clock time the clock started at, in milliseconds since
    /// the Unix epoch. Simulated time is this origin plus `scale` times the
    /// real time elapsed since, so another process given the origin and the
    /// scale computes the same simulated time.
    pub fn origin_unix_ms(&self) -> i64 {
        self.inner
            .origin_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// [`SimClock::origin_unix_ms`] in nanoseconds, for maps between real
    /// and simulated time that must agree with [`SimClock::now`] closely.
    pub fn origin_unix_nanos(&self) -> i128 {
        self.inner
            .origin_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
            .unwrap_or(0)
    }

    /// The current simulated time in whole seconds since the Unix epoch.
    pub fn now_unix(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// The real duration that `simulated` takes on this clock.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.inner.scale)
    }

    /// Sleeps for `simulated` time on this clock.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await;
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::real_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_converts_simulated_durations_to_shorter_real_ones() {
        let clock = SimClock::new(60.0);
        assert_eq!(clock.real(Duration::from_secs(60)), Duration::from_secs(1));
    }

    #[test]
    fn scales_below_one_are_taken_as_real_time() {
        assert_eq!(SimClock::new(0.5).scale(), 1.0);
        assert_eq!(SimClock::new(f64::NAN).scale(), 1.0);
    }

    #[tokio::test]
    async fn simulated_time_runs_faster_than_real_time() {
        let clock = SimClock::new(1000.0);
        let start = clock.now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let advanced = clock.now().duration_since(start).unwrap_or_default();
        assert!(advanced >= Duration::from_secs(20), "advanced {advanced:?}");
    }
}
