//! The capacity report's types: what it says about every host, provider,
//! pool and size, and what one worker more or less would change. They
//! serialize as the JSON of `tidepool capacity --json` and of the MCP
//! `capacity` tool, reason codes as their stable names.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::planner::ReasonCode;
use crate::planner::hosts::Headroom;

fn code_str<S: Serializer>(code: &ReasonCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

/// The capacity report (spec §5): the room left on every host, provider
/// and pool, how many more workers of each size fit and what runs out
/// first, and what one worker more or fewer would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    /// Every Ready, schedulable node's volume-attach room.
    pub volumes: Vec<NodeVolumes>,
    /// What one worker more or less would change.
    pub what_if: WhatIf,
}

/// One hypervisor host and the room it has left.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    /// Volumes of the attach-limited driver (proxmox-csi) attached to them.
    pub block_volumes: u64,
    /// Volumes of that driver they can still attach: per node, its attach
    /// limit (CSINode count or the provider's fallback) less what is
    /// attached.
    pub block_volumes_left: u64,
    /// Tidepool workers on their way (claimed, node not Ready yet), not
    /// counted above.
    pub workers_on_the_way: u32,
}

/// One pool: its limits and how many workers of each size still fit.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    /// Volumes of the attach-limited driver on its Ready workers.
    pub volumes: VolumeRoom,
    /// The cold spares the pool keeps, if it keeps any.
    pub spares: Option<SparesHeld>,
}

/// Volumes of the attach-limited CSI driver (proxmox-csi) on one node or
/// summed over a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct VolumeRoom {
    /// Attached (or in use by its pods, whichever is more).
    pub attached: u64,
    /// How many more it can attach.
    pub left: u64,
}

/// One Ready node's attach limit and what is left of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct NodeVolumes {
    /// Node name.
    pub node: String,
    /// The pool of the Tidepool worker it is, if it is one.
    pub pool: Option<String>,
    /// Its attach limit: the CSINode's count, else the provider's fallback.
    pub limit: u32,
    /// Attached and left.
    #[serde(flatten)]
    pub room: VolumeRoom,
}

/// A pool's cold spares: how many it keeps and how many it has (parked or
/// being made). They are no capacity for pods and not in the figures above.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct SparesHeld {
    /// Their size.
    pub size: String,
    /// How many the pool keeps (`spares.count`).
    pub wanted: u32,
    /// How many it has, parked or being made.
    pub held: u32,
}

/// A pool's limits, what it uses (counting workers on their way) and what
/// is left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct LimitsLeft {
    /// The pool's `minNodes`.
    pub min_nodes: u32,
    /// The pool's `maxNodes`.
    pub max_nodes: u32,
    /// Workers that exist or are on their way.
    pub nodes: u32,
    /// Of those, workers on their way.
    pub in_flight: u32,
    /// Workers the pool may still add.
    pub nodes_left: u32,
    /// The pool's `cpuCores` ceiling, if any.
    pub cpu_cores_max: Option<u64>,
    /// vCPUs of the pool's workers.
    pub cpu_cores: u64,
    /// vCPUs left under the ceiling (none without one).
    pub cpu_cores_left: Option<u64>,
    /// The pool's `memoryMiB` ceiling, if any.
    pub memory_mib_max: Option<u64>,
    /// Memory of the pool's workers, MiB.
    pub memory_mib: u64,
    /// MiB left under the ceiling (none without one).
    pub memory_mib_left: Option<u64>,
}

/// What one VM of a size costs a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub binding: ReasonCode,
    /// The figures in a sentence.
    pub why: String,
}

/// How many VMs of one size fit on one host, per dimension.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub binding: ReasonCode,
}

/// Room left on one host for the provider's storage.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
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
    /// The room `room` has, with the free space of `storage`.
    pub(super) fn of(room: &Headroom, storage: &str) -> Self {
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct Refusal {
    /// The limit or dimension that refuses it, as a reason code:
    /// `limit-max-nodes`, `limit-cpu-cores`, `limit-memory`, `vmid-range`,
    /// `host-memory`, `host-cpu`, `host-storage`, `host-gpu`,
    /// `host-template` or `no-host`.
    #[serde(serialize_with = "code_str")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub code: ReasonCode,
    /// Why, with the figures.
    pub message: String,
}

/// The what-ifs: one worker of each size of each pool added, and one
/// existing worker of each removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct WhatIf {
    /// One more worker, per pool and size.
    pub add: Vec<AddOne>,
    /// One worker fewer, per pool and size that has a Ready worker.
    pub remove: Vec<RemoveOne>,
}

/// What adding one worker of a size to a pool would change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct AddOne {
    /// The pool.
    pub pool: String,
    /// The size.
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(inline))]
pub struct RemoveOne {
    /// The pool.
    pub pool: String,
    /// The size.
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
