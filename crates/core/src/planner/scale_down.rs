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
use crate::config::{Pool, Scheduled};

/// A worker that qualifies for removal, and by which rule.
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
    let nodes: BTreeMap<&str, &NodeSnapshot> =
        input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for pool in &input.config.pools {
        let members: Vec<&ClaimState> = input
            .claims
            .iter()
            .filter(|c| c.pool == pool.name)
            .collect();
        let mut candidates = if pool.kind == PoolKind::Permanent {
            utilization_candidate(input, pool, &members, &nodes, out)
                .into_iter()
                .collect()
        } else {
            lifetime_candidates(input, pool, &members, &nodes)
        };
        if candidates.is_empty() {
            continue;
        }
        candidates.sort_by(|a, b| {
            a.order
                .cmp(&b.order)
                .then_with(|| a.claim.name.cmp(&b.claim.name))
        });

        let mut batch = Batch::new(input, pool, &members);
        for cand in candidates {
            let name = &cand.claim.name;
            let already = out
                .actions
                .iter()
                .any(|a| matches!(a, Action::Remove { worker, .. } if worker == name));
            if already {
                continue;
            }
            let node = nodes.get(name.as_str()).copied();
            if let Some(reason) = batch.hold(input, &cand, node, absorbing) {
                out.held.push(Held {
                    worker: name.clone(),
                    wanted: cand.code,
                    reason,
                });
                continue;
            }
            batch.count(&cand);
            out.actions.push(Action::Remove {
                worker: name.clone(),
                pool: pool.name.clone(),
                drain: cand.drain,
                reason: Reason::new(cand.code, cand.message),
            });
        }
    }
}

/// The Ready workers of a non-permanent pool whose TTL has expired or
/// that sat idle beyond the pool's idle timeout.
fn lifetime_candidates<'a>(
    input: &PlanInput,
    pool: &Pool,
    members: &[&'a ClaimState],
    nodes: &BTreeMap<&str, &NodeSnapshot>,
) -> Vec<Candidate<'a>> {
    let now = input.now;
    let mut candidates = Vec::new();
    for &claim in members.iter().filter(|c| c.phase == Phase::Ready) {
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
        if let (Some(timeout), Some(since), false) = (pool.idle_timeout, claim.idle_since, busy) {
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
    candidates
}

/// A pool's gradual scale-down limits, and what this plan has removed so
/// far.
struct Batch<'p> {
    pool: &'p Pool,
    /// The pool's `interval`, seconds.
    interval: i64,
    /// Seconds since the last batch started, while within the interval.
    waiting_interval: Option<i64>,
    /// Workers that count toward the pool.
    total: usize,
    /// Most workers removed per batch (`maxFraction`, rounded up, at
    /// least one).
    per_batch: usize,
    /// Drains running, this plan's included.
    drains: usize,
    /// Workers this plan removes.
    removed: usize,
    /// An open schedule window's minimum.
    floor: Option<(u32, &'p Scheduled)>,
}

impl<'p> Batch<'p> {
    fn new(input: &PlanInput, pool: &'p Pool, members: &[&ClaimState]) -> Self {
        let now = input.now;
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
        Self {
            pool,
            interval,
            waiting_interval,
            total,
            per_batch: ((total as f64 * sd.max_fraction).ceil() as usize).max(1),
            drains: members
                .iter()
                .filter(|c| c.phase == Phase::Draining)
                .count(),
            removed: 0,
            floor: super::triggers::scheduled_floor(pool, now),
        }
    }

    /// What holds `cand` (on `node`) back, in the order of spec §4's rules;
    /// none when it may go.
    fn hold(
        &self,
        input: &PlanInput,
        cand: &Candidate<'_>,
        node: Option<&NodeSnapshot>,
        absorbing: &BTreeSet<String>,
    ) -> Option<Reason> {
        let (pool, sd) = (self.pool, &self.pool.scale_down);
        let (total, removed) = (self.total, self.removed);
        let name = &cand.claim.name;
        if let Some(pattern) = input.config.protected.matching(name) {
            return Some(Reason::new(
                ReasonCode::Protected,
                format!("the name matches the protected pattern `{pattern}`"),
            ));
        }
        if let Some(pod) = node.and_then(|n| n.pods.iter().find(|p| p.blocks_disruption())) {
            return Some(Reason::new(
                ReasonCode::DoNotDisrupt,
                format!("pod {} forbids disruption", pod.key()),
            ));
        }
        if (!cand.drain || cand.code == ReasonCode::Utilization) && absorbing.contains(name) {
            return Some(Reason::new(
                ReasonCode::AbsorbsPendingPods,
                "pending pods fit on it",
            ));
        }
        if let Some(since) = self.waiting_interval {
            return Some(Reason::new(
                ReasonCode::ScaleDownInterval,
                format!(
                    "the pool's last scale-down batch started {since}s ago; the interval is {}s",
                    self.interval
                ),
            ));
        }
        if let Some((min, sched)) = self.floor
            && total - removed <= min as usize
        {
            return Some(Reason::new(
                ReasonCode::Scheduled,
                format!(
                    "schedule `{}` keeps at least {min} worker(s) for {}s after it fires; the pool has {}",
                    sched.cron.as_str(),
                    sched.duration.as_secs(),
                    total - removed
                ),
            ));
        }
        if total - removed <= pool.limits.min_nodes as usize {
            return Some(Reason::new(
                ReasonCode::MinNodes,
                format!(
                    "the pool has {} worker(s) and keeps at least {}",
                    total - removed,
                    pool.limits.min_nodes
                ),
            ));
        }
        if removed >= self.per_batch {
            return Some(Reason::new(
                ReasonCode::MaxFraction,
                format!(
                    "{removed} of the pool's {total} worker(s) are already removed in this batch (maxFraction {})",
                    sd.max_fraction
                ),
            ));
        }
        if cand.drain && self.drains >= sd.max_concurrent as usize {
            return Some(Reason::new(
                ReasonCode::MaxConcurrent,
                format!(
                    "{} drain(s) already run in the pool (maxConcurrent {})",
                    self.drains, sd.max_concurrent
                ),
            ));
        }
        None
    }

    /// Counts `cand`'s removal against the batch.
    fn count(&mut self, cand: &Candidate<'_>) {
        if cand.drain {
            self.drains += 1;
        }
        self.removed += 1;
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
