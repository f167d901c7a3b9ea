//! The triggers that do not come from pending pods (spec §4): scheduled
//! pre-scaling (cron), CPU and memory request pressure, and the
//! utilization target of permanent pools.
//!
//! The planner has no memory, so a pressure that must hold "for a
//! duration" is tracked by the caller: it asks [`pressure`] after every
//! plan and keeps, in [`PoolState`](super::PoolState), since when the
//! figure has stayed above the pool's threshold.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::config::{Pool, Scheduled};

use super::PlanInput;

/// The longest look-back of a schedule entry, in minutes (31 days), so a
/// huge `duration` cannot make a plan slow.
const MAX_LOOKBACK_MINUTES: i64 = 31 * 24 * 60;

/// Which requested resource a pressure figure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressureKind {
    /// CPU requests over allocatable CPU.
    Cpu,
    /// Memory requests over allocatable memory.
    Memory,
}

impl PressureKind {
    /// The resource's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "CPU",
            Self::Memory => "memory",
        }
    }
}

/// Whether `entry` fired within its `duration` before `now` (UTC, minute by
/// minute, `now`'s own minute included).
pub fn schedule_active(entry: &Scheduled, now: Timestamp) -> bool {
    let minutes = i64::try_from(entry.duration.as_secs() / 60)
        .unwrap_or(i64::MAX)
        .min(MAX_LOOKBACK_MINUTES);
    (0..=minutes).any(|m| {
        now.checked_sub(SignedDuration::from_mins(m))
            .map(|t| entry.cron.matches(t.to_zoned(TimeZone::UTC).datetime()))
            .unwrap_or(false)
    })
}

/// The largest `minNodes` among the pool's active schedule entries, with
/// the entry that asks for it.
pub fn scheduled_floor(pool: &Pool, now: Timestamp) -> Option<(u32, &Scheduled)> {
    pool.schedule
        .iter()
        .filter(|s| schedule_active(s, now))
        .max_by_key(|s| s.min_nodes)
        .map(|s| (s.min_nodes, s))
}

/// The pool's request pressure for `kind`: the requests of the pods on its
/// Ready, schedulable nodes over those nodes' allocatable, in `0.0..`.
/// `None` when the pool has no such node (nothing to measure).
///
/// A node belongs to the pool when its pool label (`labels.pool` of the
/// configuration) names it.
pub fn pressure(input: &PlanInput, pool: &Pool, kind: PressureKind) -> Option<f64> {
    let key = &input.config.labels.pool;
    let (requested, allocatable) = input
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable && n.labels.get(key) == Some(&pool.name))
        .fold((0u128, 0u128), |(r, a), n| match kind {
            PressureKind::Cpu => (
                r + u128::from(n.requested.cpu_milli),
                a + u128::from(n.allocatable.cpu_milli),
            ),
            PressureKind::Memory => (
                r + u128::from(n.requested.memory_bytes),
                a + u128::from(n.allocatable.memory_bytes),
            ),
        });
    (allocatable > 0).then(|| requested as f64 / allocatable as f64)
}

/// Whether the pool's `kind` pressure is above its configured threshold
/// now; what the caller needs to maintain the pressure's start time.
/// `false` when the pool has no such trigger or nothing to measure.
pub fn pressure_above(input: &PlanInput, pool: &Pool, kind: PressureKind) -> bool {
    let threshold = match kind {
        PressureKind::Cpu => pool.scale_up.cpu_pressure,
        PressureKind::Memory => pool.scale_up.memory_pressure,
    };
    match (threshold, pressure(input, pool, kind)) {
        (Some(t), Some(p)) => p > t.threshold,
        _ => false,
    }
}

/// The pool's utilization: the larger of its CPU and memory pressure.
pub fn utilization(input: &PlanInput, pool: &Pool) -> Option<f64> {
    match (
        pressure(input, pool, PressureKind::Cpu),
        pressure(input, pool, PressureKind::Memory),
    ) {
        (Some(c), Some(m)) => Some(c.max(m)),
        (c, m) => c.or(m),
    }
}
