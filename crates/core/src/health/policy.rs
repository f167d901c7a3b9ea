//! A pool's repair policy (the `repair:` section of a pool): the
//! thresholds of spec §7's matrix, whether replacing is allowed, and the
//! brakes (concurrency, backoff, recovery time, the unhealthy fraction
//! above which nothing is repaired automatically). [`RepairPolicy::default`]
//! is spec §7's table.

use std::time::Duration;

use serde::Serialize;

use crate::pool::PoolKind;

/// How a pool's sick workers are repaired.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairPolicy {
    /// Whether repairs are carried out at all; when off, every repair the
    /// matrix asks for becomes an escalation.
    pub enabled: bool,
    /// Decide and record, announce what would be done, but change nothing.
    pub dry_run: bool,
    /// Whether a worker of a burst, spot or gpu pool may be replaced
    /// automatically (never for permanent pools: they are escalated).
    pub replace: bool,
    /// NotReady for this long: restart kubelet.
    #[serde(with = "crate::config::secs")]
    pub restart_kubelet_after: Duration,
    /// NotReady for this long: reboot.
    #[serde(with = "crate::config::secs")]
    pub reboot_after: Duration,
    /// NotReady for this long: replace (or escalate).
    #[serde(with = "crate::config::secs")]
    pub replace_after: Duration,
    /// MemoryPressure for this long: drain, then reboot.
    #[serde(with = "crate::config::secs")]
    pub memory_pressure_after: Duration,
    /// PIDPressure or NetworkUnavailable for this long: escalate (spec §7
    /// names no repair for them).
    #[serde(with = "crate::config::secs")]
    pub escalate_after: Duration,
    /// Failed runs of kubelet or containerd since boot that make a crash
    /// loop.
    pub crash_loop_restarts: u32,
    /// How many of the pool's workers may be under repair at once.
    pub max_concurrent: u32,
    /// Above this fraction of unhealthy workers in the pool (or the
    /// cluster) nothing is repaired automatically: something larger is
    /// wrong, so it is escalated.
    pub max_unhealthy_fraction: f64,
    /// After a repair, how long the worker gets to recover before the next
    /// level of the matrix.
    #[serde(with = "crate::config::secs")]
    pub recovery: Duration,
    /// After a failed repair, the wait before trying it again (doubled on
    /// each further failure).
    #[serde(with = "crate::config::secs")]
    pub backoff: Duration,
    /// Tries of one repair before the matrix moves on.
    pub max_attempts: u32,
}

impl Default for RepairPolicy {
    /// Spec §7's table with the brakes: one repair at a time in a pool,
    /// 5 min to recover, 2 min backoff, 3 attempts, 20 % unhealthy.
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Self {
            enabled: true,
            dry_run: false,
            replace: false,
            restart_kubelet_after: min(5),
            reboot_after: min(10),
            replace_after: min(20),
            memory_pressure_after: min(10),
            escalate_after: min(10),
            crash_loop_restarts: 3,
            max_concurrent: 1,
            max_unhealthy_fraction: 0.2,
            recovery: min(5),
            backoff: min(2),
            max_attempts: 3,
        }
    }
}

impl RepairPolicy {
    /// Whether a worker of a pool of `kind` may be replaced automatically.
    pub fn may_replace(&self, kind: PoolKind) -> bool {
        self.replace && kind != PoolKind::Permanent
    }
}
