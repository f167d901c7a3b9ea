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
//! first; idle workers after them, longest idle first.
//!
//! Workers of a permanent pool never qualify by TTL or idleness; the only
//! rule that may pick one is the pool's utilization target: when requests
//! over allocatable of its Ready nodes fall below `scaleDownBelow`, the
//! pool has more than `minNodes` workers, none is on its way and the rest
//! would stay at or below the target, its least-loaded worker is drained,
//! under the same holds (a protected name keeps it, whatever the rule).

use std::collections::{BTreeMap, BTreeSet};

use crate::lifecycle::Phase;
use crate::pool::PoolKind;
use crate::sched::NodeSnapshot;

use super::{Action, ClaimState, Held, Plan, PlanInput, Reason, ReasonCode};
use crate::config::Pool;

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
        let members: Vec<&ClaimState> = input
            .claims
            .iter()
            .filter(|c| c.pool == pool.name)
            .collect();
        let mut candidates = Vec::new();
        if pool.kind == PoolKind::Permanent {
            candidates.extend(utilization_candidate(input, pool, &members, &nodes, out));
        } else {
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
                if let (Some(timeout), Some(since), false) =
                    (pool.idle_timeout, claim.idle_since, busy)
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
        let state = input.state_of(&pool.name);
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
            if (!cand.drain || cand.code == ReasonCode::Utilization) && absorbing.contains(name) {
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

/// How full a node is: the larger of its CPU and memory request fractions.
fn load(node: &NodeSnapshot) -> f64 {
    let frac = |r: u64, a: u64| if a == 0 { 1.0 } else { r as f64 / a as f64 };
    frac(node.requested.cpu_milli, node.allocatable.cpu_milli).max(frac(
        node.requested.memory_bytes,
        node.allocatable.memory_bytes,
    ))
}

/// The permanent pool's utilization rule: its least-loaded Ready worker,
/// when the pool sits below `scaleDownBelow` and may shrink.
fn utilization_candidate<'a>(
    input: &PlanInput,
    pool: &Pool,
    members: &[&'a ClaimState],
    nodes: &BTreeMap<&str, &NodeSnapshot>,
    out: &Plan,
) -> Option<Candidate<'a>> {
    let target = pool.utilization?;
    let level = super::triggers::utilization(input, pool)?;
    if level >= target.scale_down_below {
        return None;
    }
    let total = members
        .iter()
        .filter(|c| c.phase.counts_toward_pool())
        .count();
    let growing = members.iter().any(|c| c.in_flight())
        || out
            .actions
            .iter()
            .any(|a| matches!(a, Action::Provision { pool: p, .. } if *p == pool.name));
    if total <= pool.limits.min_nodes as usize || growing {
        return None;
    }
    let (claim, node) = members
        .iter()
        .filter(|c| c.phase == Phase::Ready)
        .filter_map(|c| nodes.get(c.name.as_str()).map(|n| (*c, *n)))
        .filter(|(_, n)| n.ready && !n.unschedulable)
        .min_by(|a, b| {
            load(a.1)
                .total_cmp(&load(b.1))
                .then_with(|| a.0.name.cmp(&b.0.name))
        })?;
    // What the rest of the pool would carry without it.
    let key = &input.config.labels.pool;
    let (mut rc, mut ac, mut rm, mut am) = (0u128, 0u128, 0u128, 0u128);
    for n in input
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable && n.labels.get(key) == Some(&pool.name))
    {
        rc += u128::from(n.requested.cpu_milli);
        ac += u128::from(n.allocatable.cpu_milli);
        rm += u128::from(n.requested.memory_bytes);
        am += u128::from(n.allocatable.memory_bytes);
    }
    ac = ac.saturating_sub(u128::from(node.allocatable.cpu_milli));
    am = am.saturating_sub(u128::from(node.allocatable.memory_bytes));
    if ac == 0 || am == 0 {
        return None;
    }
    let after = (rc as f64 / ac as f64).max(rm as f64 / am as f64);
    if after > target.target {
        return None;
    }
    Some(Candidate {
        claim,
        code: ReasonCode::Utilization,
        drain: true,
        message: format!(
            "pool {} is {:.0}% utilized, below {:.0}%; its least-loaded worker goes (the rest would be {:.0}%, target {:.0}%)",
            pool.name,
            level * 100.0,
            target.scale_down_below * 100.0,
            after * 100.0,
            target.target * 100.0
        ),
        order: (2, 0),
    })
}
