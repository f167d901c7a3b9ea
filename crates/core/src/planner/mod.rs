//! The autoscaler's planner: a pure function from an observed state (the
//! cluster, the hypervisor, Tidepool's claims, the configuration and the
//! time) to a [`Plan`] of actions, each with its reason.
//!
//! [`plan`] never performs I/O and never reads a clock: `now` is part of
//! the input, so the same input always gives the same plan. Scale-up is in
//! [`scale_up`], the hypervisor headroom model in [`hosts`], scale-down in
//! [`scale_down`], the schedule, pressure and utilization figures in
//! [`triggers`], what the pools, hosts and VMID ranges already hold in
//! [`usage`], and the capacity report in [`capacity`].

pub mod capacity;
pub mod hosts;
pub mod scale_down;
pub mod scale_up;
pub mod triggers;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;

use crate::config::Config;
use crate::lifecycle::Phase;
use crate::sched::{NodeSnapshot, PodSpec};

pub use hosts::HostSnapshot;

/// A pod the scheduler could not place, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPod {
    /// The pod.
    pub pod: PodSpec,
    /// When its `PodScheduled=False/Unschedulable` condition was first seen.
    pub unschedulable_since: Timestamp,
}

/// One of Tidepool's worker claims as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimState {
    /// Claim name; also the worker's VM and node name.
    pub name: String,
    /// Pool.
    pub pool: String,
    /// Size.
    pub size: String,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Whether the worker is asked to be removed: it no longer counts
    /// toward its pool, though its phase may still say Ready.
    pub removing: bool,
    /// Host the VM is (or will be) on, once chosen.
    pub host: Option<String>,
    /// When the worker's TTL expires, if it has one.
    pub expires_at: Option<Timestamp>,
    /// Since when the worker's node has run no pod but DaemonSet pods, as
    /// tracked by the controller (the planner has no memory).
    pub idle_since: Option<Timestamp>,
}

impl ClaimState {
    /// Whether the worker is on its way: claimed, but its node is not Ready
    /// yet (`Requested`, `Provisioning`, `Joining`). Such a worker counts as
    /// an empty node of its size.
    pub fn in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Requested | Phase::Provisioning | Phase::Joining
        )
    }
}

/// The controller's memory of a pool between plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolState {
    /// An emergency request is open: trigger windows are skipped (never limits).
    pub emergency: bool,
    /// When the last scale-down batch of the pool started.
    pub last_scale_down: Option<Timestamp>,
    /// Since when the pool's CPU request pressure has stayed above its
    /// threshold without a break (the caller keeps it with
    /// [`triggers::pressure_above`]); `None` when it is not above.
    pub cpu_pressure_since: Option<Timestamp>,
    /// Same as `cpu_pressure_since`, for memory requests.
    pub memory_pressure_since: Option<Timestamp>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The configuration.
    pub config: Config,
    /// Every node of the cluster, with its bound pods.
    pub nodes: Vec<NodeSnapshot>,
    /// Unschedulable pods.
    pub pending: Vec<PendingPod>,
    /// Tidepool's claims, in every phase.
    pub claims: Vec<ClaimState>,
    /// The hypervisor hosts of every provider.
    pub hosts: Vec<HostSnapshot>,
    /// VMIDs in use, by provider name.
    pub vmids_in_use: BTreeMap<String, BTreeSet<u32>>,
    /// Per-pool state, by pool name (absent means default).
    pub pool_state: BTreeMap<String, PoolState>,
    /// The time of the plan.
    pub now: Timestamp,
}

impl PlanInput {
    /// The controller's memory of pool `name` (the default when it has
    /// none).
    pub fn state_of(&self, name: &str) -> PoolState {
        self.pool_state.get(name).cloned().unwrap_or_default()
    }
}

/// A stable code for every decision and every refusal, for metrics,
/// Events and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// Enough pods have waited long enough.
    PendingPods,
    /// An emergency request skips the trigger window.
    Emergency,
    /// The worker's TTL expired and it runs no workload: removed at once.
    TtlExpiredIdle,
    /// The worker's TTL expired and it runs pods: drained first.
    TtlExpiredBusy,
    /// The worker sat idle longer than the pool's idle timeout.
    IdleTimeout,
    /// No size of any pool can host the pod.
    NoPoolFits,
    /// The pool's `maxNodes` is reached.
    MaxNodes,
    /// The pool's `cpuCores` ceiling is reached.
    CpuCores,
    /// The pool's `memoryMiB` ceiling is reached.
    MemoryMib,
    /// No host has the memory for the VM.
    HostMemory,
    /// No host has the vCPUs for the VM (overcommit ratio included).
    HostCpu,
    /// No host has the storage for the VM's disk.
    HostStorage,
    /// No host has a free device in the GPU mapping.
    HostGpu,
    /// No host can clone the VM's template (it is on none of them and not
    /// on shared storage).
    HostTemplate,
    /// The pool may use no host at all.
    NoHost,
    /// The provider's VMID range is exhausted.
    VmidRange,
    /// The pool's trigger has not fired yet.
    TriggerWindow,
    /// The plan already holds the pool's `batchSize` workers.
    BatchSize,
    /// A pod on the worker forbids disruption.
    DoNotDisrupt,
    /// The node's name matches a protected pattern.
    Protected,
    /// The pool's scale-down interval has not passed.
    ScaleDownInterval,
    /// The pool's `maxFraction` per batch is used up.
    MaxFraction,
    /// The pool's `maxConcurrent` drains are running.
    MaxConcurrent,
    /// Removing it would take the pool below `minNodes`.
    MinNodes,
    /// Pending pods would land on this worker.
    AbsorbsPendingPods,
    /// An active schedule entry (cron pre-scaling) asks for a minimum.
    Scheduled,
    /// CPU requests stayed above the pool's threshold long enough.
    CpuPressure,
    /// Memory requests stayed above the pool's threshold long enough.
    MemoryPressure,
    /// Spot workers make room on a host for permanent capacity.
    SpotPreemption,
    /// A permanent pool's utilization left its target band.
    Utilization,
    /// A worker of the pool is already on its way.
    InFlight,
}

impl ReasonCode {
    /// The code's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPods => "pending-pods",
            Self::Emergency => "emergency",
            Self::TtlExpiredIdle => "ttl-expired-idle",
            Self::TtlExpiredBusy => "ttl-expired-busy",
            Self::IdleTimeout => "idle-timeout",
            Self::NoPoolFits => "no-pool-fits",
            Self::MaxNodes => "limit-max-nodes",
            Self::CpuCores => "limit-cpu-cores",
            Self::MemoryMib => "limit-memory",
            Self::HostMemory => "host-memory",
            Self::HostCpu => "host-cpu",
            Self::HostStorage => "host-storage",
            Self::HostGpu => "host-gpu",
            Self::HostTemplate => "host-template",
            Self::NoHost => "no-host",
            Self::VmidRange => "vmid-range",
            Self::TriggerWindow => "trigger-window",
            Self::BatchSize => "batch-size",
            Self::DoNotDisrupt => "do-not-disrupt",
            Self::Protected => "protected-name",
            Self::ScaleDownInterval => "scale-down-interval",
            Self::MaxFraction => "max-fraction",
            Self::MaxConcurrent => "max-concurrent",
            Self::MinNodes => "min-nodes",
            Self::AbsorbsPendingPods => "absorbs-pending-pods",
            Self::Scheduled => "scheduled",
            Self::CpuPressure => "cpu-pressure",
            Self::MemoryPressure => "memory-pressure",
            Self::SpotPreemption => "spot-preemption",
            Self::Utilization => "utilization",
            Self::InFlight => "in-flight",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why: a stable code and a sentence for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// The stable code.
    pub code: ReasonCode,
    /// The explanation, with the figures that decided.
    pub message: String,
}

impl Reason {
    /// A reason from its parts.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Something the executor should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create `count` workers of `size` in `pool` on `host`.
    Provision {
        /// Pool.
        pool: String,
        /// Size.
        size: String,
        /// Proxmox host.
        host: String,
        /// How many.
        count: u32,
        /// Why.
        reason: Reason,
    },
    /// Remove a worker, draining it first when `drain`.
    Remove {
        /// Worker (claim and node) name.
        worker: String,
        /// Pool.
        pool: String,
        /// Cordon and drain before deleting.
        drain: bool,
        /// Why.
        reason: Reason,
    },
}

impl Action {
    /// The action's reason.
    pub fn reason(&self) -> &Reason {
        match self {
            Self::Provision { reason, .. } | Self::Remove { reason, .. } => reason,
        }
    }
}

/// A pending pod no action of this plan helps, and why (for a
/// `NotTriggerScaleUp` Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unhelpable {
    /// `namespace/name`.
    pub pod: String,
    /// The blocking limit or capacity dimension.
    pub reason: Reason,
}

/// A pending pod that a pool will host once its trigger fires or the next
/// batch starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// `namespace/name`.
    pub pod: String,
    /// Pool that will host it.
    pub pool: String,
    /// What it waits for.
    pub reason: Reason,
}

/// A worker that qualifies for removal but is kept for now, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Worker name.
    pub worker: String,
    /// What it qualified for.
    pub wanted: ReasonCode,
    /// What holds it.
    pub reason: Reason,
}

/// A pool-level trigger (schedule, pressure, utilization) that fired but
/// could not be acted on now, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// Pool.
    pub pool: String,
    /// The trigger that fired.
    pub wanted: ReasonCode,
    /// The limit, dimension or wait that stopped it.
    pub reason: Reason,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Actions, scale-up first, in a stable order.
    pub actions: Vec<Action>,
    /// Pending pods that cannot be helped now.
    pub unhelpable: Vec<Unhelpable>,
    /// Pending pods that will be helped later.
    pub waiting: Vec<Waiting>,
    /// Workers kept despite qualifying for removal.
    pub held: Vec<Held>,
    /// Pool-level triggers that fired but wait or are blocked.
    pub deferred: Vec<Deferred>,
}

impl Plan {
    /// Workers asked for, over every pool.
    pub fn nodes_requested(&self) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Provision { count, .. } => *count,
                Action::Remove { .. } => 0,
            })
            .sum()
    }
}

/// Plans scale-up and scale-down for `input`.
///
/// # Guarantees
/// Deterministic; never exceeds a pool's limits (counting every claim that
/// counts toward the pool) or a host's headroom (counting the VMs this plan
/// adds); never removes a protected name or a worker running a pod that
/// forbids disruption; removes a worker of a permanent pool only by the
/// pool's utilization target, never below `minNodes`.
pub fn plan(input: &PlanInput) -> Plan {
    let mut out = Plan::default();
    let up = scale_up::plan_scale_up(input, &mut out);
    scale_down::plan_scale_down(input, &up.absorbing_nodes, &mut out);
    out
}
