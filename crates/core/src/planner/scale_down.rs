//! Scale-down: which workers to remove, in the order of spec §4's rules.
//!
//! A Ready worker of a non-permanent pool qualifies when
//! - its TTL has expired: removed at once when idle (no pods but DaemonSet
//!   pods), drained first when busy;
//! - it sat idle longer than the pool's idle timeout.
//!
//! Qualifying workers are then held back, each with its reason, when a pod
//! on them forbids disruption (`karpenter.sh/do-not-disrupt`,
//! `safe-to-evict: "false"`), their name is protected, pending pods would
//! land on them, or the pool's gradual limits say so: the scale-down
//! `interval` since the last batch, at most `maxFraction` of the pool per
//! batch (rounded up, at least one), at most `maxConcurrent` drains at
//! once, never below `minNodes` nor an active schedule's minimum. Expired workers go first, oldest expiry
//! first; idle workers after them, longest idle first. Workers of a
//! permanent pool are never considered.

use std::collections::{BTreeMap, BTreeSet};

use crate::lifecycle::Phase;
use crate::pool::PoolKind;
use crate::sched::NodeSnapshot;

use super::{Action, ClaimState, Held, Plan, PlanInput, Reason, ReasonCode};

struct Candidate<'a> {
    claim: &'a ClaimState,
    code: ReasonCode,
    drain: bool,
    message: String,
    /// Expired first, then by how long ago the rule started to hold.
    order: (u8, i64),
}

/// Plans the scale-down part of `input` into `out`; `absorbing` names the
/// nodes scale-up simulated pending pods onto.
pub fn plan_scale_down(input: &PlanInput, absorbing: &BTreeSet<String>, out: &mut Plan) {
    let cfg = &input.config;
    let now = input.now;
    let nodes: BTreeMap<&str, &NodeSnapshot> =
        input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for pool in &cfg.pools {
        if pool.kind == PoolKind::Permanent {
            continue;
        }
        let members: Vec<&ClaimState> = input
            .claims
            .iter()
            .filter(|c| c.pool == pool.name)
            .collect();
        let mut candidates = Vec::new();
        for claim in members.iter().filter(|c| c.phase == Phase::Ready) {
            let Some(node) = nodes.get(claim.name.as_str()) else {
                continue;
            };
            let busy = node.has_workload();
            if let Some(expiry) = claim.expires_at.filter(|e| *e <= now) {
                let overdue = now.as_second() - expiry.as_second();
                candidates.push(if busy {
                    Candidate {
                        claim,
                        code: ReasonCode::TtlExpiredBusy,
                        drain: true,
                        message: format!(
                            "TTL expired {overdue}s ago at {expiry}; {} pod(s) run on it, drain first",
                            node.pods.iter().filter(|p| !p.daemon_set).count()
                        ),
                        order: (0, expiry.as_second()),
                    }
                } else {
                    Candidate {
                        claim,
                        code: ReasonCode::TtlExpiredIdle,
                        drain: false,
                        message: format!(
                            "TTL expired {overdue}s ago at {expiry}; it runs only DaemonSet pods, remove now"
                        ),
                        order: (0, expiry.as_second()),
                    }
                });
                continue;
            }
            if let (Some(timeout), Some(since), false) = (pool.idle_timeout, claim.idle_since, busy)
            {
                let idle = now.as_second() - since.as_second();
                let limit = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
                if idle >= limit {
                    candidates.push(Candidate {
                        claim,
                        code: ReasonCode::IdleTimeout,
                        drain: false,
                        message: format!(
                            "idle for {idle}s, beyond the pool's idle timeout of {limit}s"
                        ),
                        order: (1, since.as_second()),
                    });
                }
            }
        }
        if candidates.is_empty() {
            continue;
        }
        candidates.sort_by(|a, b| {
            a.order
                .cmp(&b.order)
                .then_with(|| a.claim.name.cmp(&b.claim.name))
        });

        let sd = &pool.scale_down;
        let state = input
            .pool_state
            .get(&pool.name)
            .cloned()
            .unwrap_or_default();
        let interval = i64::try_from(sd.interval.as_secs()).unwrap_or(i64::MAX);
        let waiting_interval = state
            .last_scale_down
            .map(|t| now.as_second() - t.as_second())
            .filter(|since| *since < interval);
        let total = members
            .iter()
            .filter(|c| c.phase.counts_toward_pool())
            .count();
        let per_batch = ((total as f64 * sd.max_fraction).ceil() as usize).max(1);
        let mut drains = members
            .iter()
            .filter(|c| c.phase == Phase::Draining)
            .count();
        let mut removed = 0usize;
        let floor = super::triggers::scheduled_floor(pool, now);

        for cand in candidates {
            let name = &cand.claim.name;
            let already = out
                .actions
                .iter()
                .any(|a| matches!(a, Action::Remove { worker, .. } if worker == name));
            if already {
                continue;
            }
            let hold = |code: ReasonCode, message: String| Held {
                worker: name.clone(),
                wanted: cand.code,
                reason: Reason::new(code, message),
            };
            let node = nodes.get(name.as_str());
            if let Some(pattern) = cfg.protected.matching(name) {
                out.held.push(hold(
                    ReasonCode::Protected,
                    format!("the name matches the protected pattern `{pattern}`"),
                ));
                continue;
            }
            if let Some(pod) = node.and_then(|n| n.pods.iter().find(|p| p.blocks_disruption())) {
                out.held.push(hold(
                    ReasonCode::DoNotDisrupt,
                    format!("pod {} forbids disruption", pod.key()),
                ));
                continue;
            }
            if !cand.drain && absorbing.contains(name) {
                out.held.push(hold(
                    ReasonCode::AbsorbsPendingPods,
                    "pending pods fit on it".to_owned(),
                ));
                continue;
            }
            if let Some(since) = waiting_interval {
                out.held.push(hold(
                    ReasonCode::ScaleDownInterval,
                    format!(
                        "the pool's last scale-down batch started {since}s ago; the interval is {interval}s"
                    ),
                ));
                continue;
            }
            if let Some((min, sched)) = floor
                && total - removed <= min as usize
            {
                out.held.push(hold(
                    ReasonCode::Scheduled,
                    format!(
                        "schedule `{}` keeps at least {min} worker(s) for {}s after it fires; the pool has {}",
                        sched.cron.as_str(),
                        sched.duration.as_secs(),
                        total - removed
                    ),
                ));
                continue;
            }
            if total - removed <= pool.limits.min_nodes as usize {
                out.held.push(hold(
                    ReasonCode::MinNodes,
                    format!(
                        "the pool has {} worker(s) and keeps at least {}",
                        total - removed,
                        pool.limits.min_nodes
                    ),
                ));
                continue;
            }
            if removed >= per_batch {
                out.held.push(hold(
                    ReasonCode::MaxFraction,
                    format!(
                        "{removed} of the pool's {total} worker(s) are already removed in this batch (maxFraction {})",
                        sd.max_fraction
                    ),
                ));
                continue;
            }
            if cand.drain && drains >= sd.max_concurrent as usize {
                out.held.push(hold(
                    ReasonCode::MaxConcurrent,
                    format!(
                        "{drains} drain(s) already run in the pool (maxConcurrent {})",
                        sd.max_concurrent
                    ),
                ));
                continue;
            }
            if cand.drain {
                drains += 1;
            }
            removed += 1;
            out.actions.push(Action::Remove {
                worker: name.clone(),
                pool: pool.name.clone(),
                drain: cand.drain,
                reason: Reason::new(cand.code, cand.message),
            });
        }
    }
}
