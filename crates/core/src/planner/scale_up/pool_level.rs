//! Pool-level triggers (step 6 of scale-up): scheduled pre-scaling, CPU
//! and memory request pressure, and the utilization target of permanent
//! pools. Each asks for workers of the pool's first size, granted within
//! the pool's limits, its `batchSize`, the VMID range and the hosts'
//! headroom; what cannot be granted now is deferred with its reason.

use std::collections::BTreeMap;

use crate::config::{Config, Pool, ProxmoxProvider, SizeEntry};
use crate::planner::hosts::Headroom;
use crate::planner::triggers::{self, PressureKind};
use crate::planner::usage::{admit, pool_usage};
use crate::planner::{Action, Deferred, Plan, PlanInput, PoolState, Reason, ReasonCode};
use crate::pool::{PoolKind, PoolUsage};

/// What this plan already provisions for `pool`.
pub(super) fn planned(cfg: &Config, out: &Plan, pool: &str) -> PoolUsage {
    let mut usage = PoolUsage::default();
    for action in &out.actions {
        if let Action::Provision {
            pool: p,
            size,
            count,
            ..
        } = action
            && p == pool
        {
            usage.nodes += count;
            if let Some(entry) = cfg.size(size) {
                usage.cpu_cores += u64::from(entry.size.vcpu) * u64::from(*count);
                usage.memory_mib += entry.size.memory_mib * u64::from(*count);
            }
        }
    }
    usage
}

/// Workers of `pool` on their way (claimed, node not Ready yet).
pub(super) fn in_flight(input: &PlanInput, pool: &str) -> usize {
    input
        .claims
        .iter()
        .filter(|c| c.pool == pool && c.in_flight())
        .count()
}

/// A pool-level trigger's wish: `count` workers of the pool's first size.
struct Wish {
    count: u32,
    reason: Reason,
}

/// Scheduled pre-scaling, CPU and memory pressure and (permanent pools)
/// the utilization target, for one pool.
pub(super) fn pool_triggers(
    input: &PlanInput,
    pool: &Pool,
    ledger: &mut [Headroom],
    vmids: &mut BTreeMap<String, u64>,
    out: &mut Plan,
) {
    let cfg = &input.config;
    let Some(provider) = cfg.providers.get(&pool.provider) else {
        return;
    };
    let Some(entry) = pool.sizes.first().and_then(|s| cfg.size(s)) else {
        return;
    };
    let state = input.state_of(&pool.name);

    if let Some(wish) = scheduled_wish(input, pool, out) {
        grant(input, pool, provider, entry, &wish, ledger, vmids, out);
    }

    // Pressure and utilization add one worker at a time, and only once the
    // previous one has joined: the figures count Ready nodes only.
    let wish = pressure_wish(input, pool, &state).or_else(|| utilization_wish(input, pool));
    let Some(wish) = wish else {
        return;
    };
    if planned(cfg, out, &pool.name).nodes > 0 {
        // This plan already adds capacity to the pool.
        return;
    }
    let flying = in_flight(input, &pool.name);
    if flying > 0 {
        out.deferred.push(Deferred {
            pool: pool.name.clone(),
            wanted: wish.reason.code,
            reason: Reason::new(
                ReasonCode::InFlight,
                format!(
                    "{flying} worker(s) of pool {} are on their way; {}",
                    pool.name, wish.reason.message
                ),
            ),
        });
        return;
    }
    grant(input, pool, provider, entry, &wish, ledger, vmids, out);
}

/// The workers an open schedule window still asks for, counting those
/// that exist, are on their way or this plan already adds.
fn scheduled_wish(input: &PlanInput, pool: &Pool, out: &Plan) -> Option<Wish> {
    let cfg = &input.config;
    let (min, sched) = triggers::scheduled_floor(pool, input.now)?;
    let have =
        pool_usage(cfg, &input.claims, &pool.name).nodes + planned(cfg, out, &pool.name).nodes;
    (have < min).then(|| Wish {
        count: min - have,
        reason: Reason::new(
            ReasonCode::Scheduled,
            format!(
                "schedule `{}` of pool {} keeps at least {min} worker(s) for {}s after it fires; the pool has {have} (existing and on their way)",
                sched.cron.as_str(),
                pool.name,
                sched.duration.as_secs()
            ),
        ),
    })
}

/// One worker when CPU, else memory, requests have stayed above the
/// pool's threshold for its window.
fn pressure_wish(input: &PlanInput, pool: &Pool, state: &PoolState) -> Option<Wish> {
    for (kind, code, setting, since) in [
        (
            PressureKind::Cpu,
            ReasonCode::CpuPressure,
            pool.scale_up.cpu_pressure,
            state.cpu_pressure_since,
        ),
        (
            PressureKind::Memory,
            ReasonCode::MemoryPressure,
            pool.scale_up.memory_pressure,
            state.memory_pressure_since,
        ),
    ] {
        let (Some(setting), Some(since)) = (setting, since) else {
            continue;
        };
        let Some(level) = triggers::pressure(input, pool, kind) else {
            continue;
        };
        let held = input.now.as_second() - since.as_second();
        let window = i64::try_from(setting.for_duration.as_secs()).unwrap_or(i64::MAX);
        if level > setting.threshold && held >= window {
            return Some(Wish {
                count: 1,
                reason: Reason::new(
                    code,
                    format!(
                        "{} requests of pool {} at {:.0}% of allocatable, above {:.0}% for {held}s (window {window}s)",
                        kind.as_str(),
                        pool.name,
                        level * 100.0,
                        setting.threshold * 100.0
                    ),
                ),
            });
        }
    }
    None
}

/// One worker when a permanent pool's utilization is above its band.
fn utilization_wish(input: &PlanInput, pool: &Pool) -> Option<Wish> {
    if pool.kind != PoolKind::Permanent {
        return None;
    }
    let target = pool.utilization?;
    let level = triggers::utilization(input, pool)?;
    (level > target.scale_up_above).then(|| Wish {
        count: 1,
        reason: Reason::new(
            ReasonCode::Utilization,
            format!(
                "pool {} is {:.0}% utilized (requests over allocatable), above {:.0}% (target {:.0}%)",
                pool.name,
                level * 100.0,
                target.scale_up_above * 100.0,
                target.target * 100.0
            ),
        ),
    })
}

/// Provisions up to `wish.count` workers of `entry` for `pool` within its
/// limits, its `batchSize` (counting this plan's workers), the VMID range
/// and the hosts' headroom; what is refused goes to `out.deferred`.
#[allow(clippy::too_many_arguments)]
fn grant(
    input: &PlanInput,
    pool: &Pool,
    provider: &ProxmoxProvider,
    entry: &SizeEntry,
    wish: &Wish,
    ledger: &mut [Headroom],
    vmids: &mut BTreeMap<String, u64>,
    out: &mut Plan,
) {
    let cfg = &input.config;
    let size = &entry.size;
    let already = planned(cfg, out, &pool.name);
    let mut usage = pool_usage(cfg, &input.claims, &pool.name);
    usage.nodes += already.nodes;
    usage.cpu_cores += already.cpu_cores;
    usage.memory_mib += already.memory_mib;
    let mut batch_left = pool.scale_up.batch_size.saturating_sub(already.nodes);
    let mut hosts: Vec<(String, u32)> = Vec::new();
    let mut refusal = None;
    for _ in 0..wish.count {
        if batch_left == 0 {
            refusal = Some(Reason::new(
                ReasonCode::BatchSize,
                format!(
                    "pool {} provisions at most {} worker(s) per batch",
                    pool.name, pool.scale_up.batch_size
                ),
            ));
            break;
        }
        let vmids_left = vmids.get(&provider.name).copied().unwrap_or(0);
        match admit(ledger, pool, provider, size, usage, vmids_left) {
            Err(refused) => {
                refusal = Some(refused.reason(pool, provider, size));
                break;
            }
            Ok(host) => {
                usage = usage.with_worker(size);
                batch_left -= 1;
                if let Some(v) = vmids.get_mut(&provider.name) {
                    *v -= 1;
                }
                match hosts.iter_mut().find(|h| h.0 == host) {
                    Some(h) => h.1 += 1,
                    None => hosts.push((host, 1)),
                }
            }
        }
    }
    for (host, count) in hosts {
        out.actions.push(Action::Provision {
            pool: pool.name.clone(),
            size: size.name.clone(),
            host,
            count,
            reason: Reason::new(
                wish.reason.code,
                format!(
                    "{}; {count} new {} worker(s)",
                    wish.reason.message, size.name
                ),
            ),
        });
    }
    if let Some(reason) = refusal {
        out.deferred.push(Deferred {
            pool: pool.name.clone(),
            wanted: wish.reason.code,
            reason,
        });
    }
}
