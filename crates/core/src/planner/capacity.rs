//! The capacity report of spec §5: how much room every host, provider and
//! pool has left, how many more workers of each size fit and which
//! dimension runs out first, and what adding or removing one worker of each
//! size would change.
//!
//! The report is computed from the same [`PlanInput`] the planner sees and
//! with the planner's own arithmetic: the host ledger of [`super::hosts`]
//! (memory above the reserve with the per-VM overhead, vCPUs under the
//! overcommit ratio, storage, GPU mapping devices, VMs of claims not on
//! their host yet taken off), the VMIDs left per provider, and the pool
//! usage that counts every claim on its way. So a figure here is exactly
//! what the next plan would be allowed to do. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::config::{Pool, ProxmoxProvider, SizeEntry};
use crate::lifecycle::Phase;
use crate::pool::{PoolKind, PoolUsage};
use crate::sched::NodeSnapshot;

use super::hosts::{Headroom, VmCost, may_use, place};
use super::scale_up::{ledger, pool_usage, vmids_free};
use super::{PlanInput, ReasonCode};

const MIB: u64 = 1 << 20;

fn code_str<S: Serializer>(code: &ReasonCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

/// Everything the capacity report says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityReport {
    /// When the observation was made (RFC 3339).
    pub at: String,
    /// Every configured host, online or not, by name.
    pub hosts: Vec<HostCapacity>,
    /// Every provider, with its VMID range.
    pub providers: Vec<ProviderCapacity>,
    /// The cluster's Ready, schedulable nodes.
    pub cluster: ClusterCapacity,
    /// Every pool, in configuration order.
    pub pools: Vec<PoolCapacity>,
    /// What one worker more or less would change.
    pub what_if: WhatIf,
}

/// One hypervisor host and the room it has left.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostCapacity {
    /// Host (Proxmox node) name.
    pub name: String,
    /// Provider it belongs to.
    pub provider: String,
    /// Online and not in maintenance; an offline host has no room.
    pub online: bool,
    /// Physical memory, MiB.
    pub memory_total_mib: u64,
    /// Memory committed to the VMs on it, MiB.
    pub memory_used_mib: u64,
    /// Memory kept for the host itself, MiB.
    pub memory_reserve_mib: u64,
    /// Memory left for new VMs: total less used, the reserve and the VMs of
    /// claims on their way to this host, MiB (negative when overcommitted).
    pub memory_free_mib: i64,
    /// CPUs as the host reports them; the overcommit ratio multiplies these.
    pub cores: u32,
    /// vCPUs allowed per CPU.
    pub cpu_overcommit: f64,
    /// vCPUs of the VMs on it.
    pub vcpus_allocated: u64,
    /// vCPUs left under the overcommit ratio, less the VMs on their way.
    pub vcpus_left: f64,
    /// Free space per storage, GiB, less the disks of VMs on their way.
    pub storage_free_gib: BTreeMap<String, u64>,
    /// Free devices per PCI resource mapping.
    pub gpu_free: BTreeMap<String, u32>,
    /// VMs of claims placed on it that it does not report yet.
    pub vms_on_the_way: u32,
}

/// One provider's settings that bound every host, and its VMID range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderCapacity {
    /// Provider name.
    pub name: String,
    /// First VMID Tidepool may use.
    pub vmid_lower: u32,
    /// Last VMID Tidepool may use.
    pub vmid_upper: u32,
    /// VMIDs of the range neither in use nor promised to a requested claim.
    pub vmids_left: u64,
    /// Storage new disks go to.
    pub storage: String,
    /// What each VM costs a host beyond its own memory, MiB.
    pub vm_memory_overhead_mib: u64,
}

/// Allocatable and requested resources of a set of nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterCapacity {
    /// Ready, schedulable nodes.
    pub nodes: u32,
    /// Their allocatable CPU, millicores.
    pub cpu_milli: u64,
    /// Their allocatable memory, MiB.
    pub memory_mib: u64,
    /// Their pod slots.
    pub pods: u64,
    /// CPU requested by the pods on them, millicores.
    pub requested_cpu_milli: u64,
    /// Memory requested by the pods on them, MiB.
    pub requested_memory_mib: u64,
    /// Block volumes (PVCs) attached to them.
    pub block_volumes: u64,
    /// Block volumes they can still attach: per node, the proxmox-csi cap
    /// of 28 less what is attached.
    pub block_volumes_left: u64,
    /// Tidepool workers on their way (claimed, node not Ready yet), not
    /// counted above.
    pub workers_on_the_way: u32,
}

/// One pool: its limits and how many workers of each size still fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolCapacity {
    /// Pool name.
    pub name: String,
    /// `permanent`, `burst`, `spot` or `gpu`.
    pub kind: String,
    /// Provider its workers are created on.
    pub provider: String,
    /// Its limits and what is left of them.
    pub limits: LimitsLeft,
    /// Per size the pool offers, in configuration order.
    pub sizes: Vec<SizeFit>,
}

/// A pool's limits, what it uses (counting workers on their way) and what
/// is left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsLeft {
    /// `minNodes`.
    pub min_nodes: u32,
    /// `maxNodes`.
    pub max_nodes: u32,
    /// Workers that exist or are on their way.
    pub nodes: u32,
    /// Of those, workers on their way.
    pub in_flight: u32,
    /// Workers the pool may still add.
    pub nodes_left: u32,
    /// `cpuCores` ceiling, if any.
    pub cpu_cores_max: Option<u64>,
    /// vCPUs of the pool's workers.
    pub cpu_cores: u64,
    /// vCPUs left under the ceiling (none without one).
    pub cpu_cores_left: Option<u64>,
    /// `memoryMiB` ceiling, if any.
    pub memory_mib_max: Option<u64>,
    /// Memory of the pool's workers, MiB.
    pub memory_mib: u64,
    /// MiB left under the ceiling (none without one).
    pub memory_mib_left: Option<u64>,
}

/// What one VM of a size costs a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmNeeds {
    /// Memory with the per-VM overhead, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u64,
    /// Disk on the provider's storage, GiB.
    pub disk_gib: u64,
    /// GPU mapping, if the size has a GPU.
    pub gpu_mapping: Option<String>,
    /// GPU devices per VM.
    pub gpu_count: u32,
}

/// How many more workers of one size a pool can add, and what stops it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeFit {
    /// Size name.
    pub size: String,
    /// What one VM costs a host.
    pub vm: VmNeeds,
    /// Per host the pool may use (online hosts only), by name.
    pub hosts: Vec<HostFit>,
    /// VMs of this size the pool's hosts can take in total.
    pub on_hosts: u64,
    /// VMIDs left in the provider's range.
    pub vmids_left: u64,
    /// Workers of this size the pool's limits still allow.
    pub within_limits: u32,
    /// Workers of this size that can still be added: the least of the above.
    pub fits: u64,
    /// The dimension that runs out first, as the planner would name it when
    /// refusing the next worker: `limit-max-nodes`, `limit-cpu-cores`,
    /// `limit-memory`, `vmid-range`, `host-memory`, `host-cpu`,
    /// `host-storage`, `host-gpu`, `host-template` or `no-host`.
    #[serde(serialize_with = "code_str")]
    pub binding: ReasonCode,
    /// The figures in a sentence.
    pub why: String,
}

/// How many VMs of one size fit on one host, per dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFit {
    /// Host name.
    pub host: String,
    /// VMs that fit: the least of the dimensions.
    pub fits: u64,
    /// VMs the memory holds.
    pub by_memory: u64,
    /// VMs the vCPUs hold.
    pub by_vcpu: u64,
    /// VMs the storage holds (none when the VM has no disk).
    pub by_storage: Option<u64>,
    /// VMs the GPU mapping holds (none when the VM has no GPU).
    pub by_gpu: Option<u64>,
    /// The host dimension that runs out first (memory, then vCPU, storage
    /// and GPU on a tie, the order the planner checks them in).
    #[serde(serialize_with = "code_str")]
    pub binding: ReasonCode,
}

/// Room left on one host for the provider's storage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostRoom {
    /// Host name.
    pub host: String,
    /// Memory left for new VMs, MiB.
    pub memory_free_mib: i64,
    /// vCPUs left under the overcommit ratio.
    pub vcpus_left: f64,
    /// Free GiB on the provider's storage.
    pub storage_free_gib: u64,
    /// Free devices per GPU mapping.
    pub gpu_free: BTreeMap<String, u32>,
}

impl HostRoom {
    fn of(room: &Headroom, storage: &str) -> Self {
        Self {
            host: room.name.clone(),
            memory_free_mib: room.memory_mib,
            vcpus_left: room.vcpus,
            storage_free_gib: room.storage_gib.get(storage).copied().unwrap_or(0),
            gpu_free: room.gpu_free.clone(),
        }
    }
}

/// Why a what-if worker could not be added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The limit or dimension, as a reason code.
    #[serde(serialize_with = "code_str")]
    pub code: ReasonCode,
    /// With the figures.
    pub message: String,
}

/// The what-ifs: one worker of each size of each pool added, and one
/// existing worker of each removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WhatIf {
    /// One more worker, per pool and size.
    pub add: Vec<AddOne>,
    /// One worker fewer, per pool and size that has a Ready worker.
    pub remove: Vec<RemoveOne>,
}

/// What adding one worker of a size to a pool would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddOne {
    /// Pool.
    pub pool: String,
    /// Size.
    pub size: String,
    /// The host the planner would place it on; none when refused.
    pub host: Option<String>,
    /// Why it would be refused.
    pub refused: Option<Refusal>,
    /// That host's room now.
    pub host_before: Option<HostRoom>,
    /// That host's room with the worker.
    pub host_after: Option<HostRoom>,
    /// The pool's limits with the worker.
    pub limits_after: Option<LimitsLeft>,
    /// The cluster once the worker is Ready.
    pub cluster_after: Option<ClusterCapacity>,
    /// Workers of this size that could still be added after it.
    pub fits_after: u64,
}

/// What removing one existing worker would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RemoveOne {
    /// Pool.
    pub pool: String,
    /// Size.
    pub size: String,
    /// The worker taken: the pool's Ready worker of this size with the
    /// fewest workload pods (then by name).
    pub worker: String,
    /// Its host, when known.
    pub host: Option<String>,
    /// Pods other than DaemonSet pods that would have to move.
    pub workload_pods: u32,
    /// Its host's room now.
    pub host_before: Option<HostRoom>,
    /// Its host's room without it.
    pub host_after: Option<HostRoom>,
    /// The pool's limits without it.
    pub limits_after: LimitsLeft,
    /// The cluster without its node (its workload pods still count as
    /// requested: they must land elsewhere).
    pub cluster_after: ClusterCapacity,
    /// Workers of this size that could be added after it is gone.
    pub fits_after: u64,
    /// Rules that would stop or hold such a removal.
    pub notes: Vec<String>,
}

/// The capacity report for `input`.
pub fn report(input: &PlanInput) -> CapacityReport {
    let cfg = &input.config;
    let ledger = ledger(input);
    let vmids = vmids_free(input);
    let cluster = cluster(input);

    let mut hosts: Vec<HostCapacity> = input
        .hosts
        .iter()
        .map(|h| {
            let provider = cfg.providers.get(&h.provider);
            let room = ledger
                .iter()
                .find(|r| r.name == h.name && r.provider == h.provider);
            let on_the_way = input
                .claims
                .iter()
                .filter(|c| {
                    c.host.as_deref() == Some(h.name.as_str())
                        && matches!(c.phase, Phase::Requested | Phase::Provisioning)
                })
                .count();
            HostCapacity {
                name: h.name.clone(),
                provider: h.provider.clone(),
                online: h.online && room.is_some(),
                memory_total_mib: h.memory_total_mib,
                memory_used_mib: h.memory_used_mib,
                memory_reserve_mib: provider.map_or(0, |p| p.host_memory_reserve_mib),
                memory_free_mib: room.map_or(0, |r| r.memory_mib),
                cores: h.cores,
                cpu_overcommit: provider.map_or(0.0, |p| p.cpu_overcommit),
                vcpus_allocated: h.vcpus_allocated,
                vcpus_left: room.map_or(0.0, |r| r.vcpus),
                storage_free_gib: room.map_or_else(BTreeMap::new, |r| r.storage_gib.clone()),
                gpu_free: room.map_or_else(BTreeMap::new, |r| r.gpu_free.clone()),
                vms_on_the_way: u32::try_from(on_the_way).unwrap_or(u32::MAX),
            }
        })
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));

    let providers = cfg
        .providers
        .values()
        .map(|p| ProviderCapacity {
            name: p.name.clone(),
            vmid_lower: p.vmid_lower,
            vmid_upper: p.vmid_upper,
            vmids_left: vmids.get(&p.name).copied().unwrap_or(0),
            storage: p.storage.clone(),
            vm_memory_overhead_mib: p.vm_memory_overhead_mib,
        })
        .collect();

    let mut pools = Vec::new();
    let mut what_if = WhatIf::default();
    for pool in &cfg.pools {
        let Some(provider) = cfg.providers.get(&pool.provider) else {
            continue;
        };
        let usage = pool_usage(cfg, &input.claims, &pool.name);
        let in_flight = input
            .claims
            .iter()
            .filter(|c| c.pool == pool.name && c.in_flight())
            .count();
        let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
        let entries: Vec<&SizeEntry> = pool.sizes.iter().filter_map(|s| cfg.size(s)).collect();
        let ctx = PoolCtx {
            pool,
            provider,
            in_flight,
        };
        let sizes = entries
            .iter()
            .map(|entry| size_fit(&ctx, &ledger, &vmids, usage, entry))
            .collect();
        for entry in &entries {
            what_if
                .add
                .push(add_one(&ctx, &ledger, &vmids, usage, &cluster, entry));
            if let Some(remove) = remove_one(input, &ctx, &ledger, &vmids, usage, &cluster, entry) {
                what_if.remove.push(remove);
            }
        }
        pools.push(PoolCapacity {
            name: pool.name.clone(),
            kind: pool.kind.as_str().to_owned(),
            provider: pool.provider.clone(),
            limits: limits_left(pool, usage, in_flight),
            sizes,
        });
    }

    CapacityReport {
        at: input.now.to_string(),
        hosts,
        providers,
        cluster,
        pools,
        what_if,
    }
}

/// A pool with what every figure of it needs.
struct PoolCtx<'a> {
    pool: &'a Pool,
    provider: &'a ProxmoxProvider,
    in_flight: u32,
}

fn cluster(input: &PlanInput) -> ClusterCapacity {
    let ready: Vec<&NodeSnapshot> = input.nodes.iter().filter(|n| n.ready).collect();
    let mut out = ClusterCapacity::default();
    for n in ready.iter().filter(|n| !n.unschedulable) {
        out.nodes += 1;
        out.cpu_milli += n.allocatable.cpu_milli;
        out.memory_mib += n.allocatable.memory_bytes / MIB;
        out.pods += u64::from(n.allocatable.pods);
        out.requested_cpu_milli += n.requested.cpu_milli;
        out.requested_memory_mib += n.requested.memory_bytes / MIB;
        out.block_volumes += u64::from(n.block_volumes);
        out.block_volumes_left +=
            u64::from(crate::sched::MAX_BLOCK_VOLUMES.saturating_sub(n.block_volumes));
    }
    let on_the_way = input
        .claims
        .iter()
        .filter(|c| c.in_flight() && !ready.iter().any(|n| n.name == c.name))
        .count();
    out.workers_on_the_way = u32::try_from(on_the_way).unwrap_or(u32::MAX);
    out
}

fn limits_left(pool: &Pool, usage: PoolUsage, in_flight: u32) -> LimitsLeft {
    let limits = &pool.limits;
    LimitsLeft {
        min_nodes: limits.min_nodes,
        max_nodes: limits.max_nodes,
        nodes: usage.nodes,
        in_flight,
        nodes_left: limits.max_nodes.saturating_sub(usage.nodes),
        cpu_cores_max: limits.cpu_cores,
        cpu_cores: usage.cpu_cores,
        cpu_cores_left: limits
            .cpu_cores
            .map(|max| max.saturating_sub(usage.cpu_cores)),
        memory_mib_max: limits.memory_mib,
        memory_mib: usage.memory_mib,
        memory_mib_left: limits
            .memory_mib
            .map(|max| max.saturating_sub(usage.memory_mib)),
    }
}

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
fn size_fit(
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

fn add_one(
    ctx: &PoolCtx<'_>,
    ledger: &[Headroom],
    vmids: &BTreeMap<String, u64>,
    usage: PoolUsage,
    cluster: &ClusterCapacity,
    entry: &SizeEntry,
) -> AddOne {
    let (pool, provider) = (ctx.pool, ctx.provider);
    let size = &entry.size;
    let refused = |code: ReasonCode, message: String| AddOne {
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
    if let Err(e) = pool.limits.check_add(usage, size, 1) {
        let code = match e.limit() {
            "maxNodes" => ReasonCode::MaxNodes,
            "cpuCores" => ReasonCode::CpuCores,
            _ => ReasonCode::MemoryMib,
        };
        return refused(code, format!("{e} (pool {})", pool.name));
    }
    let left = vmids.get(&provider.name).copied().unwrap_or(0);
    if left == 0 {
        return refused(
            ReasonCode::VmidRange,
            format!(
                "provider {} has no free VMID in {}–{}",
                provider.name, provider.vmid_lower, provider.vmid_upper
            ),
        );
    }
    let mut after = ledger.to_vec();
    let host = match place(
        &mut after,
        pool,
        provider,
        &VmCost::new_worker(pool, size, provider),
    ) {
        Ok(host) => host,
        Err(short) => return refused(short.code, short.message),
    };
    let room_of = |rooms: &[Headroom]| {
        rooms
            .iter()
            .find(|r| r.name == host && r.provider == provider.name)
            .map(|r| HostRoom::of(r, &provider.storage))
    };
    let usage_after = PoolUsage {
        nodes: usage.nodes + 1,
        cpu_cores: usage.cpu_cores + u64::from(size.vcpu),
        memory_mib: usage.memory_mib + size.memory_mib,
    };
    let mut vmids_after = vmids.clone();
    vmids_after.insert(provider.name.clone(), left - 1);
    let mut cluster_after = cluster.clone();
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

fn remove_one(
    input: &PlanInput,
    ctx: &PoolCtx<'_>,
    ledger: &[Headroom],
    vmids: &BTreeMap<String, u64>,
    usage: PoolUsage,
    cluster: &ClusterCapacity,
    entry: &SizeEntry,
) -> Option<RemoveOne> {
    let (pool, provider) = (ctx.pool, ctx.provider);
    let size = &entry.size;
    let node_of = |name: &str| input.nodes.iter().find(|n| n.name == name);
    let workload =
        |n: Option<&NodeSnapshot>| n.map_or(0, |n| n.pods.iter().filter(|p| !p.daemon_set).count());
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

    let usage_after = PoolUsage {
        nodes: usage.nodes.saturating_sub(1),
        cpu_cores: usage.cpu_cores.saturating_sub(u64::from(size.vcpu)),
        memory_mib: usage.memory_mib.saturating_sub(size.memory_mib),
    };
    // A Tidepool worker's VMID comes from the range and goes back to it.
    let mut vmids_after = vmids.clone();
    if let Some(left) = vmids_after.get_mut(&provider.name) {
        *left += 1;
    }

    let mut cluster_after = cluster.clone();
    if let Some(n) = node.filter(|n| n.ready && !n.unschedulable) {
        cluster_after.nodes = cluster_after.nodes.saturating_sub(1);
        cluster_after.cpu_milli = cluster_after
            .cpu_milli
            .saturating_sub(n.allocatable.cpu_milli);
        cluster_after.memory_mib = cluster_after
            .memory_mib
            .saturating_sub(n.allocatable.memory_bytes / MIB);
        cluster_after.pods = cluster_after
            .pods
            .saturating_sub(u64::from(n.allocatable.pods));
        // Its slots go with it; its workload pods' volumes attach
        // elsewhere, its DaemonSet pods' volumes go too.
        cluster_after.block_volumes_left = cluster_after
            .block_volumes_left
            .saturating_sub(u64::from(crate::sched::MAX_BLOCK_VOLUMES));
        for p in n.pods.iter().filter(|p| p.daemon_set) {
            cluster_after.block_volumes = cluster_after
                .block_volumes
                .saturating_sub(u64::from(p.block_volumes));
            cluster_after.block_volumes_left += u64::from(p.block_volumes);
            cluster_after.requested_cpu_milli = cluster_after
                .requested_cpu_milli
                .saturating_sub(p.requests.cpu_milli);
            cluster_after.requested_memory_mib = cluster_after
                .requested_memory_mib
                .saturating_sub(p.requests.memory_bytes / MIB);
        }
    }

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

    Some(RemoveOne {
        pool: pool.name.clone(),
        size: size.name.clone(),
        worker: claim.name.clone(),
        host: claim.host.clone(),
        workload_pods: u32::try_from(workload(node)).unwrap_or(u32::MAX),
        host_before,
        host_after,
        limits_after: limits_left(pool, usage_after, ctx.in_flight),
        cluster_after,
        fits_after: size_fit(ctx, &after, &vmids_after, usage_after, entry).fits,
        notes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::{BTreeMap, BTreeSet};

    use jiff::Timestamp;

    use super::*;
    use crate::config::{self, EXAMPLE};
    use crate::planner::hosts::HostSnapshot;
    use crate::planner::{ClaimState, PoolState};

    /// One host with plenty of everything, unless a test says otherwise:
    /// 1 TiB of memory, 256 cores, 100 TiB of local-lvm, one T4.
    fn roomy(name: &str) -> HostSnapshot {
        HostSnapshot {
            name: name.into(),
            provider: "pve".into(),
            online: true,
            memory_total_mib: 1 << 20,
            memory_used_mib: 0,
            cores: 256,
            vcpus_allocated: 0,
            storage_free_gib: BTreeMap::from([("local-lvm".into(), 100 << 10)]),
            gpu_free: BTreeMap::from([("tesla-t4".into(), 1)]),
            vms: BTreeMap::new(),
            templates: config::load(EXAMPLE).unwrap().templates(),
        }
    }

    /// The example configuration (reserve 4096 MiB, overhead 512 MiB,
    /// overcommit 4, VMIDs 1250–1300, local-lvm) with `hosts`.
    fn input(hosts: Vec<HostSnapshot>) -> PlanInput {
        PlanInput {
            config: config::load(EXAMPLE).unwrap(),
            nodes: Vec::new(),
            pending: Vec::new(),
            claims: Vec::new(),
            hosts,
            vmids_in_use: BTreeMap::new(),
            pool_state: BTreeMap::<String, PoolState>::new(),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    fn fit<'a>(r: &'a CapacityReport, pool: &str, size: &str) -> &'a SizeFit {
        r.pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.sizes.iter().find(|s| s.size == size))
            .unwrap()
    }

    fn claim(name: &str, pool: &str, size: &str, phase: Phase, host: &str) -> ClaimState {
        ClaimState {
            name: name.into(),
            pool: pool.into(),
            size: size.into(),
            phase,
            host: Some(host.into()),
            expires_at: None,
            idle_since: None,
        }
    }

    /// Adds workers the way the planner accepts them (limits, VMIDs, then
    /// a host) until it refuses; returns how many it took and the refusal.
    fn planner_accepts(input: &PlanInput, pool: &str, size: &str) -> (u64, ReasonCode) {
        let cfg = &input.config;
        let pool = cfg.pool(pool).unwrap();
        let provider = &cfg.providers[&pool.provider];
        let size = &cfg.size(size).unwrap().size;
        let mut ledger = ledger(input);
        let mut vmids = vmids_free(input)[&provider.name];
        let mut usage = pool_usage(cfg, &input.claims, &pool.name);
        let mut n = 0;
        loop {
            if let Err(e) = pool.limits.check_add(usage, size, 1) {
                let code = match e.limit() {
                    "maxNodes" => ReasonCode::MaxNodes,
                    "cpuCores" => ReasonCode::CpuCores,
                    _ => ReasonCode::MemoryMib,
                };
                return (n, code);
            }
            if vmids == 0 {
                return (n, ReasonCode::VmidRange);
            }
            if let Err(short) = place(
                &mut ledger,
                pool,
                provider,
                &VmCost::new_worker(pool, size, provider),
            ) {
                return (n, short.code);
            }
            usage.nodes += 1;
            usage.cpu_cores += u64::from(size.vcpu);
            usage.memory_mib += size.memory_mib;
            vmids -= 1;
            n += 1;
        }
    }

    /// Asserts the report's figure and binding dimension, and that the
    /// planner, adding workers one by one, stops at the same count for the
    /// same reason.
    #[track_caller]
    fn assert_binds(input: &PlanInput, pool: &str, size: &str, fits: u64, code: ReasonCode) {
        let r = report(input);
        let f = fit(&r, pool, size);
        assert_eq!((f.fits, f.binding), (fits, code), "{}", f.why);
        assert_eq!(planner_accepts(input, pool, size), (fits, code));
    }

    #[test]
    fn host_memory_binds_when_the_host_is_short_of_memory() {
        // 65536 − 4096 reserve = 61440 MiB; a small VM takes 8192 + 512.
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        let input = input(vec![host]);
        let r = report(&input);
        assert_eq!(r.hosts[0].memory_free_mib, 61_440);
        let f = fit(&r, "burst", "small");
        assert_eq!(f.vm.memory_mib, 8704);
        assert_eq!(f.hosts[0].by_memory, 7);
        assert_eq!(f.on_hosts, 7);
        assert!(f.why.contains("host-memory runs out first"), "{}", f.why);
        assert_binds(&input, "burst", "small", 7, ReasonCode::HostMemory);
    }

    #[test]
    fn host_vcpus_bind_under_the_overcommit_ratio() {
        // 5 cores × 4 = 20 vCPUs, 8 already allocated: 12 left, 3 small VMs.
        let mut host = roomy("pve-01");
        host.cores = 5;
        host.vcpus_allocated = 8;
        let input = input(vec![host]);
        let r = report(&input);
        assert!((r.hosts[0].vcpus_left - 12.0).abs() < f64::EPSILON);
        assert_eq!(fit(&r, "burst", "small").hosts[0].by_vcpu, 3);
        assert_binds(&input, "burst", "small", 3, ReasonCode::HostCpu);
    }

    #[test]
    fn host_storage_binds_when_the_disks_do_not_fit() {
        // A small disk is 100 GB = 94 GiB rounded up: 200 GiB holds two.
        let mut host = roomy("pve-01");
        host.storage_free_gib = BTreeMap::from([("local-lvm".into(), 200)]);
        let input = input(vec![host]);
        let f = fit(&report(&input), "burst", "small").clone();
        assert_eq!(f.vm.disk_gib, 94);
        assert_eq!(f.hosts[0].by_storage, Some(2));
        assert_binds(&input, "burst", "small", 2, ReasonCode::HostStorage);
    }

    #[test]
    fn the_gpu_mapping_binds_when_its_device_is_taken() {
        let mut host = roomy("pve-01");
        host.gpu_free = BTreeMap::from([("tesla-t4".into(), 0)]);
        let input = input(vec![host, roomy("pve-02")]);
        // The gpu pool may use pve-01 only.
        let r = report(&input);
        let f = fit(&r, "gpu", "gpu");
        assert_eq!(f.hosts.len(), 1);
        assert_eq!(f.hosts[0].by_gpu, Some(0));
        assert_eq!(f.vm.gpu_mapping.as_deref(), Some("tesla-t4"));
        assert_binds(&input, "gpu", "gpu", 0, ReasonCode::HostGpu);
    }

    #[test]
    fn the_vmid_range_binds_when_few_ids_are_left() {
        let mut input = input(vec![roomy("pve-01")]);
        // 1250–1297 in use (and 100, outside the range): 3 left.
        let used: BTreeSet<u32> = (1250..=1297).chain([100]).collect();
        input.vmids_in_use.insert("pve".into(), used);
        let r = report(&input);
        assert_eq!(r.providers[0].vmids_left, 3);
        assert_binds(&input, "burst", "small", 3, ReasonCode::VmidRange);
    }

    #[test]
    fn the_pools_max_nodes_binds_on_roomy_hosts() {
        let input = input(vec![roomy("pve-01"), roomy("pve-02")]);
        assert_binds(&input, "spot", "small", 4, ReasonCode::MaxNodes);
        assert_binds(&input, "burst", "small", 10, ReasonCode::MaxNodes);
    }

    #[test]
    fn the_cpu_ceiling_binds_before_an_equal_memory_ceiling() {
        // burst: cpuCores 64 / 16 = 4 large, memoryMiB 131072 / 32768 = 4.
        let input = input(vec![roomy("pve-01")]);
        assert_binds(&input, "burst", "large", 4, ReasonCode::CpuCores);
        let r = report(&input);
        assert_eq!(fit(&r, "burst", "large").within_limits, 4);
    }

    #[test]
    fn a_pool_without_an_online_host_has_no_room() {
        let mut host = roomy("pve-01");
        host.online = false;
        let input = input(vec![host, roomy("pve-02")]);
        let r = report(&input);
        assert!(!r.hosts[0].online);
        assert_binds(&input, "gpu", "gpu", 0, ReasonCode::NoHost);
        assert!(fit(&r, "gpu", "gpu").why.contains("no online host"));
    }

    #[test]
    fn claims_on_their_way_count_against_limits_vmids_and_host_room() {
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        let mut input = input(vec![host]);
        input.claims = vec![
            claim("spot-a", "spot", "small", Phase::Requested, "pve-01"),
            claim("spot-b", "spot", "small", Phase::Joining, "pve-01"),
        ];
        let r = report(&input);
        // The Requested VM is not on the host yet: its 8704 MiB are taken off.
        assert_eq!(r.hosts[0].memory_free_mib, 61_440 - 8704);
        assert_eq!(r.hosts[0].vms_on_the_way, 1);
        // It has no VMID yet either: one of the 51 is promised to it.
        assert_eq!(r.providers[0].vmids_left, 50);
        let spot = r.pools.iter().find(|p| p.name == "spot").unwrap();
        assert_eq!(
            (
                spot.limits.nodes,
                spot.limits.in_flight,
                spot.limits.nodes_left
            ),
            (2, 2, 2)
        );
        assert_eq!(r.cluster.workers_on_the_way, 2);
        assert_binds(&input, "spot", "small", 2, ReasonCode::MaxNodes);
        // Burst shares the host: 52736 MiB hold 6 more small VMs.
        assert_binds(&input, "burst", "small", 6, ReasonCode::HostMemory);
    }

    #[test]
    fn adding_one_worker_shows_the_host_the_planner_picks_and_what_is_left() {
        let mut a = roomy("pve-01");
        a.memory_total_mib = 65_536;
        let mut b = roomy("pve-02");
        b.memory_total_mib = 131_072;
        let mut input = input(vec![a, b]);
        input.nodes = vec![NodeSnapshot::hypothetical(
            &input.config,
            input.config.pool("permanent").unwrap(),
            input.config.size("medium").unwrap(),
            "k8s-node1",
            input.now,
        )];
        let r = report(&input);
        assert_eq!(r.cluster.nodes, 1);
        assert_eq!(r.cluster.cpu_milli, 7800);
        let add = r
            .what_if
            .add
            .iter()
            .find(|a| a.pool == "burst" && a.size == "medium")
            .unwrap();
        // The host with the most memory left.
        assert_eq!(add.host.as_deref(), Some("pve-02"));
        let (before, after) = (
            add.host_before.as_ref().unwrap(),
            add.host_after.as_ref().unwrap(),
        );
        assert_eq!(before.memory_free_mib, 126_976);
        assert_eq!(after.memory_free_mib, 126_976 - 16_896);
        assert!((before.vcpus_left - after.vcpus_left - 8.0).abs() < f64::EPSILON);
        assert_eq!(before.storage_free_gib - after.storage_free_gib, 187);
        let limits = add.limits_after.as_ref().unwrap();
        assert_eq!(
            (
                limits.nodes_left,
                limits.cpu_cores_left,
                limits.memory_mib_left
            ),
            (9, Some(56), Some(114_688))
        );
        let cluster = add.cluster_after.as_ref().unwrap();
        assert_eq!((cluster.nodes, cluster.cpu_milli), (2, 15_600));
        assert_eq!(cluster.memory_mib, 2 * 15 * 1024);
        // cpuCores 56 / 8 = 7 medium workers after this one.
        assert_eq!(add.fits_after, 7);

        // The gpu pool: its one T4 taken, nothing fits after.
        let gpu = r.what_if.add.iter().find(|a| a.pool == "gpu").unwrap();
        assert_eq!(gpu.host.as_deref(), Some("pve-01"));
        assert_eq!(gpu.host_after.as_ref().unwrap().gpu_free["tesla-t4"], 0);
        assert_eq!(gpu.fits_after, 0);
    }

    #[test]
    fn adding_one_worker_past_a_limit_is_refused_with_the_planners_reason() {
        let mut input = input(vec![roomy("pve-01")]);
        input.claims = (0..4)
            .map(|i| {
                claim(
                    &format!("spot-{i}"),
                    "spot",
                    "small",
                    Phase::Ready,
                    "pve-01",
                )
            })
            .collect();
        let r = report(&input);
        let add = r.what_if.add.iter().find(|a| a.pool == "spot").unwrap();
        let refused = add.refused.as_ref().unwrap();
        assert_eq!(refused.code, ReasonCode::MaxNodes);
        assert!(
            refused.message.contains("maxNodes of 4"),
            "{}",
            refused.message
        );
        assert_eq!(add.host, None);
    }

    #[test]
    fn removing_one_worker_gives_its_room_back_and_names_what_would_hold_it() {
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        host.memory_used_mib = 2 * 16_384;
        let mut input = input(vec![host]);
        let cfg = input.config.clone();
        let node = |name: &str, pods: usize| {
            let mut n = NodeSnapshot::hypothetical(
                &cfg,
                cfg.pool("permanent").unwrap(),
                cfg.size("medium").unwrap(),
                name,
                input.now,
            );
            for i in 0..pods {
                let pod = crate::sched::PodSpec {
                    name: format!("{name}-pod-{i}").into(),
                    block_volumes: 2,
                    requests: crate::sched::Requests {
                        cpu_milli: 500,
                        memory_bytes: 1 << 30,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                n.bind(&pod, true);
            }
            n
        };
        input.nodes = vec![node("permanent-a", 2), node("permanent-b", 1)];
        input.claims = vec![
            claim("permanent-a", "permanent", "medium", Phase::Ready, "pve-01"),
            claim("permanent-b", "permanent", "medium", Phase::Ready, "pve-01"),
        ];
        let r = report(&input);
        assert_eq!(r.hosts[0].memory_free_mib, 65_536 - 32_768 - 4096);
        assert_eq!(r.cluster.requested_cpu_milli, 1500);
        let remove = &r.what_if.remove[0];
        // The one with the fewest workload pods.
        assert_eq!(remove.worker, "permanent-b");
        assert_eq!(remove.workload_pods, 1);
        assert_eq!(
            remove.host_after.as_ref().unwrap().memory_free_mib
                - remove.host_before.as_ref().unwrap().memory_free_mib,
            16_896
        );
        assert_eq!(remove.cluster_after.nodes, 1);
        assert_eq!(remove.cluster_after.cpu_milli, 7800);
        // Its pod must land elsewhere: still requested.
        assert_eq!(remove.cluster_after.requested_cpu_milli, 1500);
        // Three pods with two volumes each on two nodes of 28 slots; after
        // the removal the pod's two volumes attach to the other node.
        assert_eq!(
            (r.cluster.block_volumes, r.cluster.block_volumes_left),
            (6, 50)
        );
        assert_eq!(
            (
                remove.cluster_after.block_volumes,
                remove.cluster_after.block_volumes_left
            ),
            (6, 22)
        );
        assert_eq!(remove.limits_after.nodes, 1);
        // 28672 + 16896 = 45568 MiB: 2 medium VMs by memory, 5 by maxNodes.
        assert_eq!(remove.fits_after, 2);
        assert_eq!(remove.notes.len(), 3, "{:?}", remove.notes);
        assert!(remove.notes[0].contains("protected pattern `^permanent-.*`"));
        assert!(remove.notes[2].contains("minNodes of 3"));
        // No burst worker exists: nothing to remove there.
        assert!(r.what_if.remove.iter().all(|w| w.pool == "permanent"));
    }

    #[test]
    fn the_report_serializes_with_reason_codes_as_strings() {
        let r = report(&input(vec![roomy("pve-01")]));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["pools"][0]["sizes"][0]["binding"], "limit-max-nodes");
        assert_eq!(
            v["pools"][0]["sizes"][0]["hosts"][0]["binding"],
            "host-memory"
        );
        assert_eq!(v["hosts"][0]["memory_free_mib"], (1 << 20) - 4096);
        assert_eq!(v["at"], "2027-01-15T08:00:00Z");
    }
}
