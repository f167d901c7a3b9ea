//! The brakes across workers: the next action of every worker
//! ([`super::matrix::next`]), then
//! - no automatic repair in a pool, or anywhere in the cluster, where more
//!   workers are unhealthy than the policy's fraction allows (rounded up,
//!   so a pool of one may still repair its worker): something larger is
//!   wrong, and the repair is escalated instead;
//! - at most the pool's `maxConcurrent` repairs at once (running ones
//!   count); the workers unhealthy the longest go first, the others wait
//!   for a slot.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::matrix::{self, Next, Why};
use super::{Action, HealthRecord, Repair, RepairPolicy};
use crate::pool::PoolKind;

/// One worker as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub struct WorkerInput<'a> {
    /// The worker (its claim's name).
    pub name: &'a str,
    /// Its pool.
    pub pool: &'a str,
    /// The pool's kind.
    pub kind: PoolKind,
    /// Whether its node is a control-plane node (never repaired).
    pub control_plane: bool,
    /// Its health record, brought up to date.
    pub record: &'a HealthRecord,
    /// Its pool's repair policy.
    pub policy: &'a RepairPolicy,
}

/// The next action for one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The worker.
    pub worker: String,
    /// What, for which problem, when, and why.
    pub next: Next,
}

/// Whether `unhealthy` of `total` is more than `fraction` allows.
fn over(unhealthy: usize, total: usize, fraction: f64) -> bool {
    // Whole workers only: the bound rounds up.
    let allowed = (total as f64 * fraction).ceil();
    unhealthy as f64 > allowed
}

/// The next action of every worker that has one, with the brakes applied.
/// `cluster` is the whole cluster's (unhealthy, total) node count, nodes
/// Tidepool does not manage included.
pub fn plan(workers: &[WorkerInput<'_>], cluster: (usize, usize), now: Timestamp) -> Vec<Decision> {
    let mut pools: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for w in workers {
        let e = pools.entry(w.pool).or_default();
        e.0 += usize::from(w.record.unhealthy());
        e.1 += 1;
        e.2 += usize::from(w.record.last_repair.as_ref().is_some_and(Repair::running));
    }
    let mut out: Vec<(Timestamp, Decision)> = workers
        .iter()
        .filter_map(|w| {
            let mut next = matrix::next(w.record, w.policy, w.kind, w.control_plane, now)?;
            let (unhealthy, total, _) = pools.get(w.pool).copied().unwrap_or_default();
            let braked = over(unhealthy, total, w.policy.max_unhealthy_fraction)
                || over(cluster.0, cluster.1, w.policy.max_unhealthy_fraction);
            if braked && next.action.is_repair() {
                if w.record.escalated_at.is_some() {
                    return None;
                }
                next.action = Action::Escalate;
                next.why = Why::Braked;
            }
            let oldest = w.record.problems.values().min().copied().unwrap_or(now);
            Some((
                oldest,
                Decision {
                    worker: w.name.to_owned(),
                    next,
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.worker.cmp(&b.1.worker)));
    for (_, d) in &mut out {
        let Some(w) = workers.iter().find(|w| w.name == d.worker) else {
            continue;
        };
        if !d.next.action.is_repair() || !d.next.due(now) {
            continue;
        }
        let Some(slots) = pools.get_mut(w.pool) else {
            continue;
        };
        if u32::try_from(slots.2).unwrap_or(u32::MAX) < w.policy.max_concurrent {
            slots.2 += 1;
        } else {
            d.next.why = Why::WaitingForSlot;
        }
    }
    out.into_iter().map(|(_, d)| d).collect()
}
