//! Bounded retries with exponential backoff and jitter, and the polling
//! cadence of task waits. Both are plain data so tests can make them fast.
//!
//! Which calls retry is decided in [`crate::client`]; see the table there.

use std::time::Duration;

/// How often and how patiently transient failures are retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of a single backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 500 ms doubling up to 8 s: about 4–5 s of retrying at
    /// worst, longer than a pvedaemon restart or a brief 595.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff after failed attempt number `attempt` (1-based): the
    /// exponential step capped at `max_delay`, of which a random half is
    /// jitter ("equal jitter"), so parallel clients spread out but never
    /// retry immediately.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let step = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = step / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=jitter_ns))
    }
}

/// How a task wait polls `tasks/{upid}/status`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPolling {
    /// The first pause between polls.
    pub initial: Duration,
    /// The longest pause; the pause grows by half each poll up to this.
    pub max: Duration,
}

impl Default for TaskPolling {
    /// 250 ms growing to 1 s: quick for short config tasks, and a long
    /// full clone's end is seen within a second (the pace Proxmox's own web
    /// interface polls at), since every moment of it delays the worker.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(1),
        }
    }
}

impl TaskPolling {
    /// The pause after `current`.
    pub fn next(&self, current: Duration) -> Duration {
        (current + current / 2).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_stays_within_bounds_and_keeps_at_least_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let first = p.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = p.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = p.backoff(30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn task_polling_grows_to_its_ceiling() {
        let t = TaskPolling::default();
        let mut d = t.initial;
        for _ in 0..20 {
            d = t.next(d);
        }
        assert_eq!(d, t.max);
    }
}
