//! The ports through which the executor acts: the hypervisor, the
//! machine-join method, the workers' operating system, the cluster's
//! nodes, the durable claim store (with its per-pool records), and the
//! clock every loop reads and sleeps on.
//!
//! # Contracts every implementation keeps
//! - Calls are idempotent where stated, and report "already done" as
//!   success, never as an error.
//! - Errors are classified by [`ProviderErrorKind`]; the executor retries
//!   `Transient` ones and fails the step on the others.
//! - Nothing secret (tokens, keys, machine configs) appears in an error
//!   message.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use tidepool_core::NodeMetadata;
use tidepool_core::jiff::Timestamp;

use crate::claim::{Claim, ClaimStatus, VmIdentity};
use crate::service::ErrorCategory;

/// How a provider call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// The object does not exist.
    NotFound,
    /// It exists but in a conflicting state (locked, VMID taken, stale version).
    Conflict,
    /// No room: host memory, GPU device, storage.
    InsufficientCapacity,
    /// Worth retrying: timeouts, 5xx, a machine not up yet.
    Transient,
    /// Not worth retrying: refused, invalid, unauthorized.
    Permanent,
    /// Blocked by policy for now (a PodDisruptionBudget, do-not-disrupt).
    Blocked,
}

impl ProviderErrorKind {
    /// A stable name for metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::Conflict => "conflict",
            Self::InsufficientCapacity => "insufficient-capacity",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Blocked => "blocked",
        }
    }
}

/// A failed provider call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// Classification.
    pub kind: ProviderErrorKind,
    /// What failed, naming the operation.
    pub message: String,
}

impl ProviderError {
    /// An error of `kind`.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Result of a provider call.
pub type ProviderResult<T> = Result<T, ProviderError>;

/// What the hypervisor knows about one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmFacts {
    /// VMID, node and SMBIOS UUID.
    pub identity: VmIdentity,
    /// The claim named by its ownership marker, if the marker is valid for
    /// this VM (its VMID line names this VMID; see
    /// [`crate::executor::owner_from_description`]). Names and tags prove
    /// nothing: Proxmox copies them to a clone.
    pub owner: Option<String>,
    /// The claim named by a marker without a VMID line (written by an older
    /// Tidepool): proof of ownership only for a claim's recorded VM whose
    /// VMID and SMBIOS UUID match the record.
    pub unbound_owner: Option<String>,
    /// Whether it runs.
    pub running: bool,
    /// Whether an operation holds its lock (e.g. a clone still copying).
    pub locked: bool,
}

/// What to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSpec {
    /// The claim the VM will belong to (its name, and the ownership marker
    /// written into the description at clone time).
    pub claim: String,
    /// Pool name (a tag).
    pub pool: String,
    /// Template name or VMID.
    pub template: String,
    /// Host to create the VM on.
    pub host: String,
    /// The reserved VMID.
    pub vmid: u32,
}

/// The VM's shape and markers, set after cloning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmShape {
    /// vCPUs.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Tags: `tidepool`, the pool, the claim.
    pub tags: Vec<String>,
    /// Description naming the claim.
    pub description: String,
    /// SMBIOS serial (nocloud `ds=nocloud;s=URL/`), if the join method needs one.
    pub smbios_serial: Option<String>,
    /// PCI resource mapping for a GPU, if the size has one.
    pub gpu_mapping: Option<String>,
}

/// The hypervisor (Proxmox VE).
pub trait Hypervisor: Send + Sync {
    /// The VM with this VMID, whoever owns it; `None` if there is none.
    fn vm(&self, vmid: u32) -> impl Future<Output = ProviderResult<Option<VmFacts>>> + Send;
    /// Every VM whose valid ownership marker names `claim`.
    fn owned_by(&self, claim: &str) -> impl Future<Output = ProviderResult<Vec<VmFacts>>> + Send;
    /// Every VM (templates aside) in the provider's VMID range, whoever
    /// owns it, with its facts: what reconciling VMs against claims looks
    /// at. A VM that disappears while being listed is left out.
    fn vms_in_range(&self) -> impl Future<Output = ProviderResult<Vec<VmFacts>>> + Send;
    /// The host for a new VM costing `cost` in `pool`, chosen by the
    /// planner's rule ([`tidepool_core::planner::hosts::place`]: the VM's
    /// template clonable there, room in memory above the reserve, vCPUs
    /// under the overcommit ratio, storage and GPU devices; hosts with no
    /// spare GPU first for a VM without one; then the most memory) among
    /// the pool's online hosts. `pending` are the other claims on their
    /// way, with their cost: their VMs are taken off each host's room
    /// unless the host already counts them. `InsufficientCapacity` names
    /// each host's shortfall when none fits.
    fn choose_host(
        &self,
        pool: &tidepool_core::config::Pool,
        cost: &tidepool_core::planner::hosts::VmCost,
        pending: &[(
            tidepool_core::planner::ClaimState,
            tidepool_core::planner::hosts::VmCost,
        )],
    ) -> impl Future<Output = ProviderResult<String>> + Send;
    /// A VMID in the provider's range that no VM uses and that is not in
    /// `reserved` (VMIDs other claims have recorded but not cloned yet).
    fn free_vmid(
        &self,
        reserved: &std::collections::BTreeSet<u32>,
    ) -> impl Future<Output = ProviderResult<u32>> + Send;
    /// Clones and waits for the clone to finish, writing the claim's
    /// ownership marker (bound to the VMID) into the description at clone
    /// time. `Conflict` if the VMID is taken, also when the request's answer
    /// was lost and the VM found at the VMID does not carry the marker (a
    /// foreign VM is never reported as the clone).
    fn clone_vm(&self, spec: &CloneSpec)
    -> impl Future<Output = ProviderResult<VmIdentity>> + Send;
    /// Sets the VM's shape and markers (idempotent).
    fn configure(
        &self,
        vm: &VmIdentity,
        shape: &VmShape,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Starts the VM and waits for the start task (idempotent: running is success).
    fn start(&self, vm: &VmIdentity) -> impl Future<Output = ProviderResult<()>> + Send;
    /// The guest's address, or `None` while the guest agent is not up.
    fn address(
        &self,
        vm: &VmIdentity,
    ) -> impl Future<Output = ProviderResult<Option<IpAddr>>> + Send;
    /// Stops the VM and waits until it is stopped (idempotent).
    fn stop(&self, vm: &VmIdentity) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Asks the guest to power off (an ACPI shutdown), without waiting for
    /// it to (idempotent: a VM already off is success).
    fn shutdown(&self, vm: &VmIdentity) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Deletes the VM with purge and waits (`NotFound` once gone).
    fn delete(&self, vm: &VmIdentity) -> impl Future<Output = ProviderResult<()>> + Send;
}

/// How a machine receives its configuration.
pub trait Joiner: Send + Sync {
    /// Before the first start: prepares what the guest will fetch and
    /// returns the SMBIOS serial pointing at it, if the method needs one.
    fn prepare(
        &self,
        claim: &Claim,
        meta: &NodeMetadata,
    ) -> impl Future<Output = ProviderResult<Option<String>>> + Send;
    /// Once the guest has an address: delivers the configuration (a no-op
    /// for methods where the guest fetches it). Delivering to a machine
    /// that already has it is success.
    fn deliver(
        &self,
        claim: &Claim,
        ip: IpAddr,
        meta: &NodeMetadata,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Asks the machine's OS at `ip` to shut down (Talos `Shutdown`),
    /// without waiting for it to power off. Join methods that cannot reach
    /// the OS answer `Permanent` (the default).
    fn shutdown_os(
        &self,
        claim: &Claim,
        ip: IpAddr,
    ) -> impl Future<Output = ProviderResult<()>> + Send {
        let _ = (claim, ip);
        async {
            Err(ProviderError::new(
                ProviderErrorKind::Permanent,
                "this join method cannot shut the OS down",
            ))
        }
    }
}

/// What the service layer shows about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Whether the Ready condition is True.
    pub ready: bool,
    /// Whether it is cordoned.
    pub unschedulable: bool,
    /// Pods on it other than DaemonSet and mirror pods.
    pub workload_pods: usize,
    /// Its bad conditions (Ready not True; MemoryPressure, DiskPressure,
    /// PIDPressure, NetworkUnavailable True), each with its last
    /// transition time: what the health monitor reads.
    pub problems: std::collections::BTreeMap<tidepool_core::health::Problem, Timestamp>,
}

/// How a registered node names the machine it runs on, for the check
/// that a node called like a claim is the claim's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `status.nodeInfo.systemUUID`: the machine's SMBIOS UUID as the
    /// kubelet read it, if reported.
    pub system_uuid: Option<String>,
    /// `spec.providerID`, if set.
    pub provider_id: Option<String>,
}

/// The cluster's nodes.
pub trait Nodes: Send + Sync {
    /// How the node `name` identifies its machine; `None` when no node of
    /// that name is registered.
    fn node_identity(
        &self,
        name: &str,
    ) -> impl Future<Output = ProviderResult<Option<NodeIdentity>>> + Send;
    /// Every node.
    fn list(&self) -> impl Future<Output = ProviderResult<Vec<NodeView>>> + Send;
    /// The node `name` in detail (capacity, metadata, conditions, pods,
    /// recent Events, OS); `None` when not registered or when the adapter
    /// cannot tell more than [`Nodes::list`] does.
    fn node_detail(
        &self,
        name: &str,
    ) -> impl Future<Output = ProviderResult<Option<tidepool_core::view::NodeDetail>>> + Send {
        let _ = name;
        std::future::ready(Ok(None))
    }
    /// Marks the node schedulable again (idempotent).
    fn uncordon(&self, name: &str) -> impl Future<Output = ProviderResult<()>> + Send;
    /// `None` when no node of that name is registered, else whether it is Ready.
    fn node_ready(&self, name: &str) -> impl Future<Output = ProviderResult<Option<bool>>> + Send;
    /// Makes the node carry at least these labels, annotations and taints.
    fn ensure_metadata(
        &self,
        name: &str,
        meta: &NodeMetadata,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Marks the node unschedulable (idempotent).
    fn cordon(&self, name: &str) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Evicts the node's pods, waiting up to `timeout`; `Blocked` names the
    /// pod or budget in the way. `force` ignores do-not-disrupt markers (never
    /// PodDisruptionBudgets).
    ///
    /// `grace` overrides each evicted pod's termination grace period (the
    /// pool's `gracePeriod`, e.g. a spot pool's short one).
    fn drain(
        &self,
        name: &str,
        timeout: Duration,
        force: bool,
        grace: Option<Duration>,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Deletes the Node object (gone is success).
    fn delete_node(&self, name: &str) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Records a Normal Event on the node, for `kubectl describe node`
    /// (`reason` is one CamelCase word). Best effort: a failure is logged,
    /// never returned, since the work it reports is already done.
    fn announce(&self, name: &str, reason: &str, message: &str) -> impl Future<Output = ()> + Send;
    /// Records a Warning Event on the node: something is wrong, or a
    /// repair failed or needs a person. Best effort like
    /// [`Nodes::announce`], which it falls back to where an adapter knows
    /// only one type.
    fn warn(&self, name: &str, reason: &str, message: &str) -> impl Future<Output = ()> + Send {
        self.announce(name, reason, message)
    }
}

/// One service of a worker's operating system, as its API reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestService {
    /// The service id (`kubelet`, `containerd`).
    pub id: String,
    /// Its state (`Running`, `Failed`, `Finished`, ...).
    pub state: String,
    /// Whether its health check passes; `None` when unknown.
    pub healthy: Option<bool>,
    /// How many times it failed since boot (among the events kept).
    pub failures: u32,
}

/// The operating system of a worker (Talos), reached at the worker's
/// address: the day-2 operations the health monitor repairs with, and
/// the upgrades of a rolling upgrade.
///
/// # Contract
/// - Every call addresses one machine by `ip` and fails `Transient` while
///   it does not answer (rebooting, down), `Permanent` when the operation
///   is refused or cannot be configured (no credentials).
/// - [`GuestOs::restart_service`], [`GuestOs::reboot`],
///   [`GuestOs::wipe_ephemeral`] and [`GuestOs::upgrade`] return once the machine accepted the
///   operation, not once it is done; the node's conditions tell the rest.
///   None is idempotent: the caller records the operation before asking.
pub trait GuestOs: Send + Sync {
    /// The machine's services.
    fn services(
        &self,
        ip: IpAddr,
    ) -> impl Future<Output = ProviderResult<Vec<GuestService>>> + Send;
    /// Restarts one service (Talos allows it for kubelet).
    fn restart_service(
        &self,
        ip: IpAddr,
        id: &str,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Reboots the machine gracefully. Drain through Kubernetes first when
    /// the pods should move.
    fn reboot(&self, ip: IpAddr) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Frees disk: wipes the ephemeral partition (images, pod volumes,
    /// logs) and reboots, keeping the machine's configuration.
    fn wipe_ephemeral(&self, ip: IpAddr) -> impl Future<Output = ProviderResult<()>> + Send;
    /// The OS version the machine runs now (Talos: the version tag, e.g.
    /// `v1.10.6`). `Transient` while it reboots.
    fn version(&self, ip: IpAddr) -> impl Future<Output = ProviderResult<String>> + Send;
    /// Asks the machine to install the OS `image` and reboot into it
    /// (`stage`: install early in the next boot instead). Returns once
    /// accepted; the machine comes back on the new version, or on its old
    /// one when the new one fails to boot. Not idempotent: the caller
    /// records the upgrade before asking. Drain through Kubernetes first.
    fn upgrade(
        &self,
        ip: IpAddr,
        image: &str,
        stage: bool,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
}

/// One mutating operation, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who asked (`cli:<user>`, `mcp:<client>`, `autoscaler`).
    pub actor: String,
    /// What (`provision`, `drain`, `destroy`, `destroy --force`, `extend-ttl`, ...).
    pub operation: String,
    /// How it ended.
    pub result: AuditResult,
    /// A sentence for people.
    pub message: String,
}

/// How an audited operation ended: accepted, or refused or failed with the
/// category of its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditResult {
    /// The operation was accepted.
    Ok,
    /// The operation ended with an error of this category.
    Error(ErrorCategory),
}

impl AuditResult {
    /// A stable label: `ok`, or the error category's.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error(category) => category.as_str(),
        }
    }
}

/// A pool's durable record as read, with the version a write must name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionedRecord {
    /// The record; the empty record when the pool has none yet.
    pub record: tidepool_core::pool_record::PoolRecord,
    /// Its version (a resourceVersion); `None` when none is stored yet.
    pub version: Option<String>,
}

impl From<Option<(tidepool_core::pool_record::PoolRecord, String)>> for VersionedRecord {
    /// A record found with its version, or the empty one for a pool without.
    fn from(found: Option<(tidepool_core::pool_record::PoolRecord, String)>) -> Self {
        match found {
            Some((record, version)) => Self {
                record,
                version: Some(version),
            },
            None => Self::default(),
        }
    }
}

/// The durable per-pool records
/// ([`PoolRecord`](tidepool_core::pool_record::PoolRecord)): admissions in
/// flight and the autoscaler's timers, kept beside the claims so every
/// process and every replica sees the same ones.
///
/// # Contract
/// - Writes are optimistic: [`PoolRecords::write_pool`] succeeds only if
///   the stored record is still at the version read (or, for `None`, no
///   record exists yet); otherwise it answers `Conflict` and changes
///   nothing. Of two writers racing from the same version exactly one
///   wins; the other reads again and starts over. Neither call retries a
///   conflict by itself.
/// - A read is never older than a write this process saw succeed (it asks
///   the store, not a cache).
pub trait PoolRecords: Send + Sync {
    /// The pool's record and its version; a pool without one reads as the
    /// empty record with no version.
    fn read_pool(&self, pool: &str)
    -> impl Future<Output = ProviderResult<VersionedRecord>> + Send;
    /// Replaces the pool's record if it is still at `version`; `Conflict`
    /// when another writer got there first.
    fn write_pool(
        &self,
        pool: &str,
        record: &tidepool_core::pool_record::PoolRecord,
        version: Option<&str>,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
}

/// The durable claim records, and beside them each pool's record.
pub trait ClaimStore: PoolRecords + Send + Sync {
    /// Every claim.
    fn list(&self) -> impl Future<Output = ProviderResult<Vec<Claim>>> + Send;
    /// Creates a claim (with its finalizer) with its spec, the chosen host
    /// included if there is one; the status starts empty.
    /// `Conflict` if the name exists.
    fn create(&self, claim: &Claim) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Replaces the claim's spec and intent (not its status).
    fn update(&self, claim: &Claim) -> impl Future<Output = ProviderResult<()>> + Send;
    /// The claim, if it exists.
    fn get(&self, name: &str) -> impl Future<Output = ProviderResult<Option<Claim>>> + Send;
    /// Replaces the claim's status, conditionally: it succeeds only if
    /// nobody else wrote the claim since this store last read it (through
    /// [`ClaimStore::get`], [`ClaimStore::list`], or
    /// [`ClaimStore::observed`] for a claim it had not read otherwise) or
    /// wrote it itself. The store remembers the version it last saw per
    /// claim; a claim it never saw is written unconditionally.
    ///
    /// # Errors
    /// `Conflict` when someone else wrote the claim in between (a deposed
    /// leader's write fails this way; read the claim again and retry);
    /// `NotFound` when it is gone.
    fn save_status(
        &self,
        name: &str,
        status: &ClaimStatus,
    ) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Removes the cleanup finalizer (the record may then disappear).
    fn remove_finalizer(&self, name: &str) -> impl Future<Output = ProviderResult<()>> + Send;
    /// Puts the cleanup finalizer on the claim (idempotent: a claim that has
    /// it is left as it is). `NotFound` when the claim is gone.
    fn add_finalizer(&self, name: &str) -> impl Future<Output = ProviderResult<()>> + Send;
    /// The claims as a watch last saw them: cheap, for loops that look
    /// often, but possibly a moment behind this process's own writes. A
    /// store without a watch answers with [`ClaimStore::list`].
    fn observed(&self) -> impl Future<Output = ProviderResult<Vec<Claim>>> + Send {
        self.list()
    }
    /// A receiver whose value changes whenever a claim may have changed,
    /// so loops can sleep until something happens; `None` when the store
    /// cannot tell (callers then look again on a timer).
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Records one entry of the audit trail on the claim (an Event for
    /// Kubernetes). Best effort: a failure to record never fails the
    /// operation. The message never holds a secret.
    fn audit(&self, claim: &str, entry: &AuditEntry) -> impl Future<Output = ()> + Send;
}

/// Events about pods, for `kubectl describe pod`: why a scale-up happened
/// or did not.
pub trait Events: Send + Sync {
    /// Records a Normal Event on the pod `namespace/name` (`reason` is one
    /// CamelCase word). Best effort: a failure is logged, never returned.
    /// The message never holds a secret.
    fn tell_pod(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// Where the autoscaler reports what it decided, for metrics. Label values
/// are bounded: reason codes and error categories.
pub trait ScalingMetrics: Send + Sync {
    /// The unschedulable pods the last plan saw.
    fn pending(&self, pods: usize);
    /// One scaling decision, by reason code.
    fn decision(&self, reason: &str);
    /// One failed pass, by error category.
    fn error(&self, category: &str);
    /// Each host's room as the last plan saw it. Hosts are bounded by the
    /// configured providers; the default ignores it.
    fn host_room(&self, hosts: &[tidepool_core::planner::capacity::HostCapacity]) {
        let _ = hosts;
    }
    /// One of the plan's actions was carried out: `workers` were created
    /// or asked to go. The default ignores it.
    fn acted(&self, action: &tidepool_core::planner::Action, workers: &[String]) {
        let _ = (action, workers);
    }
}

/// No metrics.
impl ScalingMetrics for () {
    fn pending(&self, _: usize) {}
    fn decision(&self, _: &str) {}
    fn error(&self, _: &str) {}
}

/// A wait on a [`Clock`]: resolves once the time asked for has passed.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Time, both reading it and waiting for it. Everything that reads the
/// time or sleeps goes through one injected clock, so tests and the lab
/// can run hours of TTL in seconds; nothing else knows how fast it runs.
/// Object safe: it travels as `Arc<dyn Clock>`.
///
/// # Contract
/// - [`Clock::now`] is the clock's time: what timestamps are recorded
///   with and deadlines (TTL, idle timeout, drain timeout) measured
///   against. A clock that runs faster than real time keeps its own time
///   consistent: `sleep(d)` followed by `now()` reads at least `d` later.
/// - [`Clock::sleep`] waits `d` of the clock's time (at least; a busy
///   runtime may wake it later). Dropping the future ends the wait, so it
///   can race other events in a `select!`.
/// - [`Clock::real`] is the real time that `d` of the clock's time lasts,
///   for the few parameters that client libraries take in real time and
///   cannot take a clock for (task polling intervals, drain timeouts). It
///   never exceeds `d` for a clock at least as fast as real time.
pub trait Clock: std::fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Resolves once `d` of this clock's time has passed.
    fn sleep(&self, d: Duration) -> Sleep;
    /// The real-time duration that `d` of this clock's time lasts.
    fn real(&self, d: Duration) -> Duration;
}
