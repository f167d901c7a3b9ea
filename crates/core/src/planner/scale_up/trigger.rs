//! The pending-pods trigger of a pool: enough pods waited long enough, an
//! emergency, or a remainder that has starved for long.

use crate::config::Pool;
use crate::planner::{PlanInput, PoolState, Reason, ReasonCode};

/// How long pending pod `i` has waited, in seconds.
fn waited_secs(input: &PlanInput, i: usize) -> i64 {
    input.now.as_second() - input.pending[i].unschedulable_since.as_second()
}

/// How many trigger windows a remainder below the pending-pods threshold
/// waits before it triggers a scale-up anyway.
pub const STARVATION_WINDOWS: i64 = 5;

/// How many of `candidates` have waited the pool's `pendingFor` or longer.
pub(super) fn count_waited(input: &PlanInput, pool: &Pool, candidates: &[usize]) -> usize {
    let window = i64::try_from(pool.scale_up.pending_for.as_secs()).unwrap_or(i64::MAX);
    candidates
        .iter()
        .filter(|&&i| waited_secs(input, i) >= window)
        .count()
}

/// Whether the pool's trigger fires for `candidates`, and why: an
/// emergency, enough pods that waited long enough, or a remainder whose
/// oldest pod has waited [`STARVATION_WINDOWS`] windows.
pub(super) fn trigger(
    input: &PlanInput,
    pool: &Pool,
    state: &PoolState,
    candidates: &[usize],
) -> Option<Reason> {
    if state.emergency {
        return Some(Reason::new(
            ReasonCode::Emergency,
            format!(
                "emergency request for pool {}: {} pending pod(s), trigger window skipped",
                pool.name,
                candidates.len()
            ),
        ));
    }
    let waited = count_waited(input, pool, candidates);
    let oldest = candidates
        .iter()
        .map(|&i| waited_secs(input, i))
        .max()
        .unwrap_or(0);
    let window = i64::try_from(pool.scale_up.pending_for.as_secs()).unwrap_or(i64::MAX);
    // Fewer pods than the threshold must not wait forever: once the oldest
    // has waited STARVATION_WINDOWS windows, the remainder gets capacity too.
    if waited > 0
        && waited < pool.scale_up.pending_pods as usize
        && oldest >= window.saturating_mul(STARVATION_WINDOWS)
    {
        return Some(Reason::new(
            ReasonCode::PendingPods,
            format!(
                "{waited} pending pod(s), fewer than pool {}'s threshold of {}, but the oldest has waited {oldest}s (over {} windows of {}s)",
                pool.name,
                pool.scale_up.pending_pods,
                STARVATION_WINDOWS,
                pool.scale_up.pending_for.as_secs()
            ),
        ));
    }
    if waited >= pool.scale_up.pending_pods as usize && waited > 0 {
        let oldest = candidates
            .iter()
            .map(|&i| waited_secs(input, i))
            .max()
            .unwrap_or(0);
        return Some(Reason::new(
            ReasonCode::PendingPods,
            format!(
                "{waited} pending pod(s) waited {}s or more (oldest {oldest}s; pool {} scales up at {})",
                pool.scale_up.pending_for.as_secs(),
                pool.name,
                pool.scale_up.pending_pods
            ),
        ));
    }
    None
}
