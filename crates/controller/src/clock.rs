//! The two production [`Clock`]s: [`SystemClock`], real time, and
//! [`ScaledClock`], which runs a fixed number of times faster than real
//! time from an origin (the lab's, so a controller and a lab started with
//! the same scale and origin read the same simulated time). The only place
//! that knows about time scales; every other module asks its clock.

use std::time::Duration;

use tidepool_core::jiff::{SignedDuration, Timestamp};

use crate::ports::{Clock, Sleep};

/// Real time: the wall clock and tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }

    fn real(&self, d: Duration) -> Duration {
        d
    }
}

/// A clock running `scale` times faster than real time from `origin`:
/// its time is the origin plus `scale` times the real time elapsed since.
#[derive(Clone, Copy, Debug)]
pub struct ScaledClock {
    scale: f64,
    origin: Timestamp,
}

impl ScaledClock {
    /// A clock `scale` times faster than real time from `origin` (now when
    /// absent). A scale below 1 or not finite is taken as 1: real time.
    pub fn new(scale: f64, origin: Option<Timestamp>) -> Self {
        let scale = if scale.is_finite() && scale >= 1.0 {
            scale
        } else {
            1.0
        };
        Self {
            scale,
            origin: origin.unwrap_or_else(Timestamp::now),
        }
    }

    /// How many times faster than real time it runs (at least 1).
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let real = Timestamp::now().duration_since(self.origin);
        let scaled =
            SignedDuration::try_from_secs_f64(real.as_secs_f64() * self.scale).unwrap_or(real);
        self.origin.checked_add(scaled).unwrap_or(self.origin)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(self.real(d)))
    }

    fn real(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_system_clock_reads_real_time_and_converts_nothing() {
        let before = Timestamp::now();
        let read = SystemClock.now();
        assert!(read >= before);
        assert!(read.duration_since(before) < SignedDuration::from_secs(5));
        assert_eq!(
            SystemClock.real(Duration::from_secs(90)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn a_scaled_clock_shortens_real_time_waits_by_its_scale() {
        let clock = ScaledClock::new(60.0, None);
        assert_eq!(clock.real(Duration::from_secs(60)), Duration::from_secs(1));
    }

    #[test]
    fn scales_below_one_or_not_finite_are_taken_as_real_time() {
        for scale in [0.5, 0.0, -3.0, f64::NAN, f64::INFINITY] {
            let clock = ScaledClock::new(scale, None);
            assert_eq!(clock.scale(), 1.0, "scale {scale}");
            assert_eq!(clock.real(Duration::from_secs(7)), Duration::from_secs(7));
        }
    }

    #[test]
    fn a_scaled_clock_reads_its_origin_plus_scaled_elapsed_time() {
        // An origin ten real seconds ago, at 100x: about 1000 s later.
        let origin = Timestamp::now() - SignedDuration::from_secs(10);
        let read = ScaledClock::new(100.0, Some(origin)).now();
        let ahead = read.duration_since(origin);
        assert!(ahead >= SignedDuration::from_secs(1000), "{ahead}");
        assert!(ahead < SignedDuration::from_secs(1100), "{ahead}");
    }

    #[tokio::test]
    async fn sleeping_on_a_scaled_clock_passes_that_much_of_its_time() {
        let clock = ScaledClock::new(1000.0, None);
        let start = clock.now();
        let real = std::time::Instant::now();
        clock.sleep(Duration::from_secs(20)).await;
        assert!(clock.now().duration_since(start) >= SignedDuration::from_secs(20));
        assert!(
            real.elapsed() < Duration::from_secs(5),
            "{:?}",
            real.elapsed()
        );
    }
}
