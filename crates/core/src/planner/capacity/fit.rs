//! How many VMs of a size fit: on one host, per dimension ([`host_fit`]),
//! and for a pool, over its limits, the VMID range and its hosts
//! ([`size_fit`]), each with the dimension that runs out first.

use std::collections::BTreeMap;

use crate::config::SizeEntry;
use crate::planner::ReasonCode;
use crate::planner::hosts::{Headroom, VmCost, may_use};
use crate::pool::PoolUsage;

use super::PoolCtx;
use super::types::{HostFit, SizeFit, VmNeeds};

/// How many VMs costing `cost` one host holds, per dimension, with the
/// binding one first in the order [`Headroom::shortfall`] checks.
fn host_fit(room: &Headroom, cost: &VmCost, storage: &str) -> HostFit {
    let per = |free: u64, need: u64| free.checked_div(need).unwrap_or(u64::MAX);
    let by_memory = per(u64::try_from(room.memory_mib).unwrap_or(0), cost.memory_mib);
    let by_vcpu = if cost.vcpus == 0 {
        u64::MAX
    } else {
        (room.vcpus.max(0.0) / cost.vcpus as f64).floor() as u64
    };
    let by_storage = (cost.disk_gib > 0).then(|| {
        per(
            room.storage_gib.get(storage).copied().unwrap_or(0),
            cost.disk_gib,
        )
    });
    let by_gpu = cost.gpu.as_ref().map(|(mapping, count)| {
        per(
            u64::from(room.gpu_free.get(mapping).copied().unwrap_or(0)),
            u64::from(*count),
        )
    });
    let mut fits = by_memory;
    let mut binding = ReasonCode::HostMemory;
    for (code, n) in [
        (ReasonCode::HostCpu, Some(by_vcpu)),
        (ReasonCode::HostStorage, by_storage),
        (ReasonCode::HostGpu, by_gpu),
    ] {
        if let Some(n) = n.filter(|&n| n < fits) {
            fits = n;
            binding = code;
        }
    }
    if cost
        .template
        .as_ref()
        .is_some_and(|t| !room.templates.contains(t))
    {
        fits = 0;
        binding = ReasonCode::HostTemplate;
    }
    HostFit {
        host: room.name.clone(),
        fits,
        by_memory,
        by_vcpu,
        by_storage,
        by_gpu,
        binding,
    }
}

/// How many more workers of `entry` the pool can add, and the first limit
/// or dimension to run out, in the order the planner checks them: the
/// pool's limits (maxNodes, cpuCores, memoryMiB), the VMID range, the hosts.
pub(super) fn size_fit(
    ctx: &PoolCtx<'_>,
    ledger: &[Headroom],
    vmids: &BTreeMap<String, u64>,
    usage: PoolUsage,
    entry: &SizeEntry,
) -> SizeFit {
    let (pool, provider) = (ctx.pool, ctx.provider);
    let size = &entry.size;
    let cost = VmCost::new_worker(pool, size, provider);
    let hosts: Vec<HostFit> = ledger
        .iter()
        .filter(|r| r.provider == provider.name && may_use(pool, provider, &r.name))
        .map(|r| host_fit(r, &cost, &provider.storage))
        .collect();
    let on_hosts = hosts.iter().fold(0u64, |sum, h| sum.saturating_add(h.fits));
    let vmids_left = vmids.get(&provider.name).copied().unwrap_or(0);
    let limits = &pool.limits;
    let mut steps = vec![(
        ReasonCode::MaxNodes,
        u64::from(limits.max_nodes.saturating_sub(usage.nodes)),
    )];
    if let Some(max) = limits.cpu_cores {
        let left = max.saturating_sub(usage.cpu_cores);
        steps.push((
            ReasonCode::CpuCores,
            left.checked_div(u64::from(size.vcpu)).unwrap_or(u64::MAX),
        ));
    }
    if let Some(max) = limits.memory_mib {
        let left = max.saturating_sub(usage.memory_mib);
        steps.push((
            ReasonCode::MemoryMib,
            left.checked_div(size.memory_mib).unwrap_or(u64::MAX),
        ));
    }
    steps.push((ReasonCode::VmidRange, vmids_left));
    // Once every host is full, the planner names the first eligible host's
    // shortfall (hosts are in name order).
    steps.push((
        hosts.first().map_or(ReasonCode::NoHost, |h| h.binding),
        on_hosts,
    ));
    let (mut binding, mut fits) = steps[0];
    for &(code, n) in &steps[1..] {
        if n < fits {
            (binding, fits) = (code, n);
        }
    }
    let within_limits = limits.headroom(usage, size);
    let per_host = if hosts.is_empty() {
        "no online host".to_owned()
    } else {
        hosts
            .iter()
            .map(|h| format!("{} {} by {}", h.host, h.fits, h.binding.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let why = format!(
        "{fits} more {} worker(s) for pool {}: {} runs out first (limits allow {within_limits}, VMIDs {vmids_left}, hosts {on_hosts}: {per_host})",
        size.name,
        pool.name,
        binding.as_str()
    );
    SizeFit {
        size: size.name.clone(),
        vm: VmNeeds {
            memory_mib: cost.memory_mib,
            vcpus: cost.vcpus,
            disk_gib: cost.disk_gib,
            gpu_mapping: cost.gpu.as_ref().map(|g| g.0.clone()),
            gpu_count: cost.gpu.as_ref().map_or(0, |g| g.1),
        },
        hosts,
        on_hosts,
        vmids_left,
        within_limits,
        fits,
        binding,
        why,
    }
}
