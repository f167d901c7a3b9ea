//! The report's what-ifs: one worker of a size added to a pool (where the
//! planner would put it, or why it would refuse it) and one existing worker
//! removed (what it gives back and what would stop or hold its removal).

use crate::config::{Pool, SizeEntry};
use crate::lifecycle::Phase;
use crate::planner::hosts::{Headroom, VmCost};
use crate::planner::usage::{Refused, admit, limit_code, no_vmid};
use crate::planner::{ClaimState, PlanInput};
use crate::pool::{PoolKind, PoolUsage};
use crate::sched::NodeSnapshot;

use super::fit::size_fit;
use super::types::{AddOne, ClusterCapacity, HostRoom, Refusal, RemoveOne};
use super::{Figures, MIB, PoolCtx, limits_left};

/// What adding one worker of `entry` to the pool would change, checked as
/// the planner checks it: the pool's limits, the VMID range, the hosts.
pub(super) fn add_one(ctx: &PoolCtx<'_>, f: &Figures<'_>, entry: &SizeEntry) -> AddOne {
    let (pool, provider) = (ctx.pool, ctx.provider);
    let (ledger, vmids, usage) = (f.ledger, f.vmids, f.usage);
    let size = &entry.size;
    let left = vmids.get(&provider.name).copied().unwrap_or(0);
    let mut after = ledger.to_vec();
    let host = match admit(&mut after, pool, provider, size, usage, left) {
        Ok(host) => host,
        Err(refused) => {
            let (code, message) = match refused {
                Refused::Limit(e) => (limit_code(&e), format!("{e} (pool {})", pool.name)),
                Refused::Vmids => {
                    let reason = no_vmid(provider);
                    (reason.code, reason.message)
                }
                Refused::Host(short) => (short.code, short.message),
            };
            return AddOne {
                pool: pool.name.clone(),
                size: size.name.clone(),
                host: None,
                refused: Some(Refusal { code, message }),
                host_before: None,
                host_after: None,
                limits_after: None,
                cluster_after: None,
                fits_after: 0,
            };
        }
    };
    let room_of = |rooms: &[Headroom]| {
        rooms
            .iter()
            .find(|r| r.name == host && r.provider == provider.name)
            .map(|r| HostRoom::of(r, &provider.storage))
    };
    let usage_after = usage.with_worker(size);
    let mut vmids_after = vmids.clone();
    vmids_after.insert(provider.name.clone(), left - 1);
    let mut cluster_after = f.cluster.clone();
    cluster_after.nodes += 1;
    cluster_after.cpu_milli += size.allocatable.cpu_milli;
    cluster_after.memory_mib += size.allocatable.memory_bytes / MIB;
    cluster_after.pods += u64::from(size.allocatable.pods);
    AddOne {
        pool: pool.name.clone(),
        size: size.name.clone(),
        host_before: room_of(ledger),
        host_after: room_of(&after),
        host: Some(host),
        refused: None,
        limits_after: Some(limits_left(pool, usage_after, ctx.in_flight)),
        cluster_after: Some(cluster_after),
        fits_after: size_fit(ctx, &after, &vmids_after, usage_after, entry).fits,
    }
}

/// Pods other than DaemonSet pods on `node`.
fn workload(node: Option<&NodeSnapshot>) -> usize {
    node.map_or(0, |n| n.pods.iter().filter(|p| !p.daemon_set).count())
}

/// What removing the pool's Ready worker of `entry` with the fewest
/// workload pods (then by name) would change; none when it has none.
pub(super) fn remove_one(
    input: &PlanInput,
    ctx: &PoolCtx<'_>,
    f: &Figures<'_>,
    entry: &SizeEntry,
) -> Option<RemoveOne> {
    let (pool, provider) = (ctx.pool, ctx.provider);
    let (ledger, vmids, usage) = (f.ledger, f.vmids, f.usage);
    let size = &entry.size;
    let node_of = |name: &str| input.nodes.iter().find(|n| n.name == name);
    let claim = input
        .claims
        .iter()
        .filter(|c| c.pool == pool.name && c.size == size.name && c.phase == Phase::Ready)
        .min_by(|a, b| {
            workload(node_of(&a.name))
                .cmp(&workload(node_of(&b.name)))
                .then_with(|| a.name.cmp(&b.name))
        })?;
    let node = node_of(&claim.name);
    let cost = VmCost::of(size, provider);
    let mut after = ledger.to_vec();
    let index = claim.host.as_deref().and_then(|h| {
        after
            .iter()
            .position(|r| r.name == h && r.provider == provider.name)
    });
    let host_before = index.map(|i| HostRoom::of(&after[i], &provider.storage));
    if let Some(i) = index {
        after[i].give(&cost, &provider.storage);
    }
    let host_after = index.map(|i| HostRoom::of(&after[i], &provider.storage));

    let usage_after = usage.without_worker(size);
    // A Tidepool worker's VMID comes from the range and goes back to it.
    let mut vmids_after = vmids.clone();
    if let Some(left) = vmids_after.get_mut(&provider.name) {
        *left += 1;
    }

    Some(RemoveOne {
        pool: pool.name.clone(),
        size: size.name.clone(),
        worker: claim.name.clone(),
        host: claim.host.clone(),
        workload_pods: u32::try_from(workload(node)).unwrap_or(u32::MAX),
        host_before,
        host_after,
        limits_after: limits_left(pool, usage_after, ctx.in_flight),
        cluster_after: cluster_without(f.cluster, node),
        fits_after: size_fit(ctx, &after, &vmids_after, usage_after, entry).fits,
        notes: removal_notes(input, pool, usage, claim, node),
    })
}

/// The cluster without `node`, when it is Ready and schedulable: its
/// allocatable and volume slots go; its workload pods still count as
/// requested (they must land elsewhere), its DaemonSet pods go with it.
fn cluster_without(cluster: &ClusterCapacity, node: Option<&NodeSnapshot>) -> ClusterCapacity {
    let mut after = cluster.clone();
    let Some(n) = node.filter(|n| n.ready && !n.unschedulable) else {
        return after;
    };
    after.nodes = after.nodes.saturating_sub(1);
    after.cpu_milli = after.cpu_milli.saturating_sub(n.allocatable.cpu_milli);
    after.memory_mib = after
        .memory_mib
        .saturating_sub(n.allocatable.memory_bytes / MIB);
    after.pods = after.pods.saturating_sub(u64::from(n.allocatable.pods));
    // Its slots go with it; its workload pods' volumes attach elsewhere,
    // its DaemonSet pods' volumes go too.
    after.block_volumes_left = after
        .block_volumes_left
        .saturating_sub(u64::from(n.attach_limit()));
    for p in n.pods.iter().filter(|p| p.daemon_set) {
        after.block_volumes = after
            .block_volumes
            .saturating_sub(u64::from(p.block_volumes));
        after.block_volumes_left += u64::from(p.block_volumes);
        after.requested_cpu_milli = after
            .requested_cpu_milli
            .saturating_sub(p.requests.cpu_milli);
        after.requested_memory_mib = after
            .requested_memory_mib
            .saturating_sub(p.requests.memory_bytes / MIB);
    }
    after
}

/// The rules that would stop or hold removing `claim`'s worker from a pool
/// using `usage`.
fn removal_notes(
    input: &PlanInput,
    pool: &Pool,
    usage: PoolUsage,
    claim: &ClaimState,
    node: Option<&NodeSnapshot>,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(pattern) = input.config.protected.matching(&claim.name) {
        notes.push(format!(
            "its name matches the protected pattern `{pattern}`: it is never removed"
        ));
    }
    if pool.kind == PoolKind::Permanent {
        notes.push("a permanent worker: only the pool's utilization target removes one".to_owned());
    }
    if usage.nodes <= pool.limits.min_nodes {
        notes.push(format!(
            "the pool would fall below its minNodes of {}",
            pool.limits.min_nodes
        ));
    }
    if node.is_some_and(|n| n.pods.iter().any(|p| p.blocks_disruption())) {
        notes.push("a pod on it forbids disruption".to_owned());
    }
    notes
}
