//! In-memory fakes of every port, sharing one [`World`] so that a new
//! executor (a "restarted process") sees exactly what the old one left
//! behind. They record calls and accept injected errors; tests of the
//! executor and of the front-ends use them. [`ManualClock`] is the clock
//! such tests move by hand. The guest OS fake lives in [`guest`]; the
//! file is long because every other port's fake lives in it, over the one
//! world they share.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tidepool_core::NodeMetadata;
use tidepool_core::jiff::{SignedDuration, Timestamp};

use crate::claim::{Claim, ClaimStatus, VmIdentity};
use crate::executor::{owner_from_description, unbound_owner};
use crate::observe::{Observation, Observe};
use crate::ports::{
    ClaimStore, Clock, CloneSpec, Events, Hypervisor, Joiner, NodeIdentity, Nodes, PoolRecords,
    ProviderError, ProviderErrorKind, ProviderResult, Sleep, VersionedRecord, VmFacts, VmShape,
};
use tidepool_core::pool_record::PoolRecord;

mod guest;
pub use guest::{FAKE_OS_VERSION, FakeGuests};

/// One fake VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeVm {
    /// Identity.
    pub identity: VmIdentity,
    /// Description (carries the ownership marker).
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Running.
    pub running: bool,
    /// Shape as configured.
    pub cores: u32,
    /// Whether a clone still holds its lock.
    pub locked: bool,
}

/// One fake node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeNode {
    /// Ready condition.
    pub ready: bool,
    /// Cordoned.
    pub cordoned: bool,
    /// Pods still on it (drain evicts them unless blocked).
    pub pods: usize,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The system UUID its kubelet reports (the SMBIOS UUID of its machine).
    pub system_uuid: Option<String>,
    /// Its bad conditions with their transition times.
    pub problems: BTreeMap<tidepool_core::health::Problem, Timestamp>,
}

/// The shared fake world.
#[derive(Debug, Default)]
pub struct World {
    /// VMs by VMID.
    pub vms: BTreeMap<u32, FakeVm>,
    /// How VMs were powered off, in order: `os-shutdown`, `acpi-shutdown`
    /// or `stop`, with the VMID.
    pub power_log: Vec<(&'static str, u32)>,
    /// The OS accepts a shutdown but never powers off.
    pub os_ignores_shutdown: bool,
    /// The guest ignores ACPI shutdowns.
    pub guest_ignores_acpi: bool,
    /// Nodes by name.
    pub nodes: BTreeMap<String, FakeNode>,
    /// Claims by name.
    pub claims: BTreeMap<String, Claim>,
    /// Every clone performed, in order.
    pub clones: Vec<u32>,
    /// Every VM deleted, in order.
    pub deletions: Vec<u32>,
    /// Errors to return, by operation name, consumed one per call.
    pub inject: BTreeMap<&'static str, Vec<ProviderError>>,
    /// While set, the next clone finds a stranger's VM at its VMID (the
    /// request's answer was lost while someone else cloned there) and is
    /// refused with `Conflict`, as the hypervisor port promises.
    pub stranger_on_next_clone: bool,
    /// A drain blocker message (e.g. a PDB), while set.
    pub drain_blocker: Option<String>,
    /// Lowest VMID handed out.
    pub vmid_lower: u32,
    /// Audit entries recorded, by claim.
    pub audit: Vec<(String, crate::ports::AuditEntry)>,
    /// Events recorded on nodes: node, reason, message.
    pub node_events: Vec<(String, String, String)>,
    /// The reasons of the node Events that were Warnings (each also in
    /// `node_events`).
    pub node_warnings: Vec<String>,
    /// Events recorded on pods: `namespace/name`, reason, message.
    pub pod_events: Vec<(String, String, String)>,
    /// What [`Observe`] answers; an observation error while unset.
    pub observed: Option<tidepool_core::planner::PlanInput>,
    /// Bumped on every claim write made through the [`ClaimStore`] port.
    pub claim_changes: tokio::sync::watch::Sender<u64>,
    /// Each pool's record, with its version ([`PoolRecords`]).
    pub pool_records: BTreeMap<String, (u64, PoolRecord)>,
    /// Every successful write of a pool record, by pool, in order.
    pub pool_writes: Vec<String>,
    /// While set, claim and pool-record calls let other tasks run first,
    /// as a call over the network would, so concurrent requests interleave.
    pub interleave: bool,
    /// Calls made, by operation name (as injected errors name them).
    pub calls: BTreeMap<&'static str, usize>,
    /// Each claim's version (its resourceVersion), bumped on every write
    /// through the [`ClaimStore`] port and by [`Fake::put_claim`].
    pub claim_versions: BTreeMap<String, u64>,
    /// The guest OS side ([`crate::ports::GuestOs`]): services, operations
    /// asked for, and which operation heals which machine.
    pub guest: guest::FakeGuests,
    /// The claims whose machine has its configuration on disk (delivered
    /// once): started again, it registers its node at once.
    pub installed: std::collections::BTreeSet<String>,
    uuid_counter: u64,
}

/// A handle on the shared world; clones share it, and share the claim
/// versions the handle saw (one process). [`Fake::another_process`] is a
/// second process's handle: the same world, its own versions seen.
#[derive(Clone, Debug, Default)]
pub struct Fake(pub Arc<Mutex<World>>, SeenVersions);

/// The claim versions one [`Fake`] store last read or wrote, by claim.
#[derive(Clone, Debug, Default)]
pub struct SeenVersions(Arc<Mutex<BTreeMap<String, u64>>>);

impl Fake {
    /// A new empty world whose VMIDs start at 1250.
    pub fn new() -> Self {
        let fake = Self::default();
        fake.world().vmid_lower = 1250;
        fake
    }

    /// Locks the world.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle on the same world for another process: it remembers its
    /// own claim versions, so its conditional status writes fail once this
    /// one (or anyone) wrote the claim after it read it.
    pub fn another_process(&self) -> Self {
        Self(self.0.clone(), SeenVersions::default())
    }

    fn seen(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.1.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the version of `name` this handle read or wrote.
    fn saw(&self, name: &str, version: Option<u64>) {
        if let Some(v) = version {
            self.seen().insert(name.to_owned(), v);
        }
    }

    /// Queues an error for the next call of `op`.
    pub fn inject(&self, op: &'static str, err: ProviderError) {
        self.world().inject.entry(op).or_default().push(err);
    }

    fn take(&self, op: &'static str) -> ProviderResult<()> {
        let mut w = self.world();
        *w.calls.entry(op).or_default() += 1;
        match w
            .inject
            .get_mut(op)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Adds a VM that Tidepool does not own.
    pub fn add_foreign_vm(&self, vmid: u32, node: &str) {
        let mut w = self.world();
        w.uuid_counter += 1;
        let uuid = format!("foreign-{:04}", w.uuid_counter);
        w.vms.insert(
            vmid,
            FakeVm {
                identity: VmIdentity {
                    vmid,
                    node: node.to_owned(),
                    uuid,
                },
                description: "someone else's".into(),
                tags: vec![],
                running: true,
                cores: 2,
                locked: false,
            },
        );
    }

    /// Adds a node that Tidepool did not create.
    pub fn add_foreign_node(&self, name: &str, labels: &[(&str, &str)]) {
        self.world().nodes.insert(
            name.to_owned(),
            FakeNode {
                ready: true,
                cordoned: false,
                pods: 3,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                system_uuid: Some(format!("machine-of-{name}")),
                problems: BTreeMap::new(),
            },
        );
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: &str) -> usize {
        self.world().calls.get(op).copied().unwrap_or_default()
    }

    /// How many claim writes were made through the [`ClaimStore`] port.
    pub fn claim_writes(&self) -> u64 {
        *self.world().claim_changes.borrow()
    }

    /// Stores a claim.
    pub fn put_claim(&self, claim: Claim) {
        let mut w = self.world();
        bump(&mut w, &claim.name);
        w.claims.insert(claim.name.clone(), claim);
    }

    /// VMs whose valid marker names `claim`.
    pub fn owned(&self, claim: &str) -> Vec<FakeVm> {
        self.world()
            .vms
            .values()
            .filter(|v| owner_from_description(&v.description, v.identity.vmid) == Some(claim))
            .cloned()
            .collect()
    }

    /// An operator's full clone of VM `source` at `vmid`: description and
    /// tags copied, a new SMBIOS UUID, stopped.
    pub fn copy_vm(&self, source: u32, vmid: u32) {
        let mut w = self.world();
        w.uuid_counter += 1;
        let uuid = format!("copy-{:04}", w.uuid_counter);
        if let Some(mut vm) = w.vms.get(&source).cloned() {
            vm.identity.vmid = vmid;
            vm.identity.uuid = uuid;
            vm.running = false;
            w.vms.insert(vmid, vm);
        }
    }
}

fn facts(vm: &FakeVm) -> VmFacts {
    VmFacts {
        identity: vm.identity.clone(),
        owner: owner_from_description(&vm.description, vm.identity.vmid).map(str::to_owned),
        unbound_owner: unbound_owner(&vm.description).map(str::to_owned),
        running: vm.running,
        locked: vm.locked,
    }
}

/// A new version of claim `name`, recorded in the world.
fn bump(w: &mut World, name: &str) -> u64 {
    let v = w.claim_versions.get(name).copied().unwrap_or(0) + 1;
    w.claim_versions.insert(name.to_owned(), v);
    v
}

fn not_found(what: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::NotFound, what)
}

impl Hypervisor for Fake {
    async fn vm(&self, vmid: u32) -> ProviderResult<Option<VmFacts>> {
        self.take("vm")?;
        Ok(self.world().vms.get(&vmid).map(facts))
    }

    async fn owned_by(&self, claim: &str) -> ProviderResult<Vec<VmFacts>> {
        self.take("owned_by")?;
        Ok(self.owned(claim).iter().map(facts).collect())
    }

    async fn vms_in_range(&self) -> ProviderResult<Vec<VmFacts>> {
        self.take("vms_in_range")?;
        let w = self.world();
        Ok(w.vms
            .range(w.vmid_lower..)
            .map(|(_, vm)| facts(vm))
            .collect())
    }

    async fn choose_host(
        &self,
        pool: &tidepool_core::config::Pool,
        _cost: &tidepool_core::planner::hosts::VmCost,
        _pending: &[(
            tidepool_core::planner::ClaimState,
            tidepool_core::planner::hosts::VmCost,
        )],
    ) -> ProviderResult<String> {
        self.take("choose_host")?;
        pool.hosts.first().cloned().ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::InsufficientCapacity,
                "no candidate hosts",
            )
        })
    }

    async fn free_vmid(&self, reserved: &std::collections::BTreeSet<u32>) -> ProviderResult<u32> {
        self.take("free_vmid")?;
        let w = self.world();
        let mut id = w.vmid_lower;
        while w.vms.contains_key(&id) || reserved.contains(&id) {
            id += 1;
        }
        Ok(id)
    }

    async fn clone_vm(&self, spec: &CloneSpec) -> ProviderResult<VmIdentity> {
        self.take("clone")?;
        if std::mem::take(&mut self.world().stranger_on_next_clone) {
            self.add_foreign_vm(spec.vmid, &spec.host);
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!("VM {} does not carry the claim's marker", spec.vmid),
            ));
        }
        let mut w = self.world();
        if w.vms.contains_key(&spec.vmid) {
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!("VM {} already exists", spec.vmid),
            ));
        }
        w.uuid_counter += 1;
        let identity = VmIdentity {
            vmid: spec.vmid,
            node: spec.host.clone(),
            uuid: format!("uuid-{:04}", w.uuid_counter),
        };
        w.vms.insert(
            spec.vmid,
            FakeVm {
                identity: identity.clone(),
                description: crate::executor::ownership_description(&spec.claim, spec.vmid),
                tags: vec![],
                running: false,
                cores: 0,
                locked: false,
            },
        );
        w.clones.push(spec.vmid);
        Ok(identity)
    }

    async fn configure(&self, vm: &VmIdentity, shape: &VmShape) -> ProviderResult<()> {
        self.take("configure")?;
        let mut w = self.world();
        let v = w
            .vms
            .get_mut(&vm.vmid)
            .ok_or_else(|| not_found(format!("VM {}", vm.vmid)))?;
        v.tags.clone_from(&shape.tags);
        v.cores = shape.cores;
        v.description.clone_from(&shape.description);
        Ok(())
    }

    async fn start(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.take("start")?;
        let mut w = self.world();
        let v = w
            .vms
            .get_mut(&vm.vmid)
            .ok_or_else(|| not_found(format!("VM {}", vm.vmid)))?;
        v.running = true;
        // An installed machine's kubelet registers its node again at boot.
        let owner = owner_from_description(&v.description, v.identity.vmid).map(str::to_owned);
        let uuid = v.identity.uuid.clone();
        if let Some(claim) = owner.filter(|c| w.installed.contains(c)) {
            let node = w.nodes.entry(claim).or_default();
            node.system_uuid = Some(uuid);
            node.ready = true;
        }
        Ok(())
    }

    async fn address(&self, vm: &VmIdentity) -> ProviderResult<Option<IpAddr>> {
        self.take("address")?;
        let w = self.world();
        Ok(w.vms.get(&vm.vmid).filter(|v| v.running).map(|v| {
            let n = v.identity.vmid;
            IpAddr::V4(Ipv4Addr::new(10, 0, (n / 256) as u8, (n % 256) as u8))
        }))
    }

    async fn stop(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.take("stop")?;
        let mut w = self.world();
        w.power_log.push(("stop", vm.vmid));
        if let Some(v) = w.vms.get_mut(&vm.vmid) {
            v.running = false;
        }
        Ok(())
    }

    async fn shutdown(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.take("shutdown")?;
        let mut w = self.world();
        w.power_log.push(("acpi-shutdown", vm.vmid));
        let ignored = w.guest_ignores_acpi;
        if let Some(v) = w.vms.get_mut(&vm.vmid).filter(|_| !ignored) {
            v.running = false;
        }
        Ok(())
    }

    async fn delete(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.take("delete")?;
        let mut w = self.world();
        match w.vms.remove(&vm.vmid) {
            Some(_) => {
                w.deletions.push(vm.vmid);
                Ok(())
            }
            None => Err(not_found(format!("VM {}", vm.vmid))),
        }
    }
}

impl Joiner for Fake {
    async fn prepare(
        &self,
        _claim: &Claim,
        _meta: &NodeMetadata,
    ) -> ProviderResult<Option<String>> {
        self.take("prepare")?;
        Ok(None)
    }

    async fn deliver(&self, claim: &Claim, _ip: IpAddr, meta: &NodeMetadata) -> ProviderResult<()> {
        self.take("deliver")?;
        // The machine joins at once in this fake, reporting its VM's SMBIOS
        // UUID; a name another machine's node holds is not taken over.
        let uuid = claim.status.vm.as_ref().map(|v| v.uuid.clone());
        let mut w = self.world();
        let node = w.nodes.entry(claim.name.clone()).or_default();
        if node.system_uuid.is_some() && node.system_uuid != uuid {
            return Ok(());
        }
        node.system_uuid = uuid;
        node.ready = true;
        node.labels.extend(meta.labels.clone());
        w.installed.insert(claim.name.clone());
        Ok(())
    }

    async fn shutdown_os(&self, claim: &Claim, _ip: IpAddr) -> ProviderResult<()> {
        self.take("shutdown_os")?;
        let mut w = self.world();
        let ignored = w.os_ignores_shutdown;
        let vmids: Vec<u32> = w
            .vms
            .values()
            .filter(|v| {
                owner_from_description(&v.description, v.identity.vmid) == Some(claim.name.as_str())
            })
            .map(|v| v.identity.vmid)
            .collect();
        for vmid in vmids {
            w.power_log.push(("os-shutdown", vmid));
            if let Some(v) = w.vms.get_mut(&vmid).filter(|_| !ignored) {
                v.running = false;
            }
        }
        Ok(())
    }
}

impl Nodes for Fake {
    async fn list(&self) -> ProviderResult<Vec<crate::ports::NodeView>> {
        self.take("list_nodes")?;
        Ok(self
            .world()
            .nodes
            .iter()
            .map(|(name, n)| crate::ports::NodeView {
                name: name.clone(),
                labels: n.labels.clone(),
                ready: n.ready,
                unschedulable: n.cordoned,
                workload_pods: n.pods,
                problems: n.problems.clone(),
            })
            .collect())
    }

    async fn node_identity(&self, name: &str) -> ProviderResult<Option<NodeIdentity>> {
        self.take("node_identity")?;
        Ok(self.world().nodes.get(name).map(|n| NodeIdentity {
            system_uuid: n.system_uuid.clone(),
            provider_id: None,
        }))
    }

    async fn uncordon(&self, name: &str) -> ProviderResult<()> {
        self.take("uncordon")?;
        let mut w = self.world();
        let node = w
            .nodes
            .get_mut(name)
            .ok_or_else(|| not_found(format!("node {name}")))?;
        node.cordoned = false;
        Ok(())
    }

    async fn node_ready(&self, name: &str) -> ProviderResult<Option<bool>> {
        self.take("node_ready")?;
        Ok(self.world().nodes.get(name).map(|n| n.ready))
    }

    async fn ensure_metadata(&self, name: &str, meta: &NodeMetadata) -> ProviderResult<()> {
        self.take("ensure_metadata")?;
        let mut w = self.world();
        let node = w
            .nodes
            .get_mut(name)
            .ok_or_else(|| not_found(format!("node {name}")))?;
        node.labels.extend(meta.labels.clone());
        Ok(())
    }

    async fn cordon(&self, name: &str) -> ProviderResult<()> {
        self.take("cordon")?;
        let mut w = self.world();
        let node = w
            .nodes
            .get_mut(name)
            .ok_or_else(|| not_found(format!("node {name}")))?;
        node.cordoned = true;
        Ok(())
    }

    async fn drain(
        &self,
        name: &str,
        _timeout: Duration,
        _force: bool,
        _grace: Option<Duration>,
    ) -> ProviderResult<()> {
        self.take("drain")?;
        let mut w = self.world();
        if let Some(blocker) = w.drain_blocker.clone() {
            return Err(ProviderError::new(ProviderErrorKind::Blocked, blocker));
        }
        let node = w
            .nodes
            .get_mut(name)
            .ok_or_else(|| not_found(format!("node {name}")))?;
        node.pods = 0;
        Ok(())
    }

    async fn delete_node(&self, name: &str) -> ProviderResult<()> {
        self.take("delete_node")?;
        match self.world().nodes.remove(name) {
            Some(_) => Ok(()),
            None => Err(not_found(format!("node {name}"))),
        }
    }

    async fn announce(&self, name: &str, reason: &str, message: &str) {
        self.world()
            .node_events
            .push((name.to_owned(), reason.to_owned(), message.to_owned()));
    }

    async fn warn(&self, name: &str, reason: &str, message: &str) {
        self.announce(name, reason, message).await;
        self.world().node_warnings.push(reason.to_owned());
    }
}

impl Events for Fake {
    async fn tell_pod(&self, namespace: &str, name: &str, reason: &str, message: &str) {
        self.world().pod_events.push((
            format!("{namespace}/{name}"),
            reason.to_owned(),
            message.to_owned(),
        ));
    }
}

impl Observe for Fake {
    fn plan_input(&self) -> Observation<'_> {
        let observed = self.world().observed.clone();
        Box::pin(async move {
            observed.ok_or_else(|| {
                ProviderError::new(ProviderErrorKind::Transient, "nothing observed yet")
            })
        })
    }
}

impl Fake {
    fn claims_changed(&self) {
        self.world().claim_changes.send_modify(|n| *n += 1);
    }

    /// Lets other tasks run first while [`World::interleave`] is set.
    async fn pause(&self) {
        let interleave = self.world().interleave;
        if interleave {
            tokio::task::yield_now().await;
        }
    }
}

impl PoolRecords for Fake {
    async fn read_pool(&self, pool: &str) -> ProviderResult<VersionedRecord> {
        self.pause().await;
        self.take("read_pool")?;
        let found = self.world().pool_records.get(pool).cloned();
        Ok(VersionedRecord::from(
            found.map(|(version, record)| (record, version.to_string())),
        ))
    }

    async fn write_pool(
        &self,
        pool: &str,
        record: &PoolRecord,
        version: Option<&str>,
    ) -> ProviderResult<()> {
        self.pause().await;
        self.take("write_pool")?;
        let mut w = self.world();
        let stored = w.pool_records.get(pool).map(|(v, _)| v.to_string());
        if stored.as_deref() != version {
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!("writing the record of pool {pool}: it changed since it was read"),
            ));
        }
        let next = w.pool_records.get(pool).map_or(1, |(v, _)| v + 1);
        w.pool_records
            .insert(pool.to_owned(), (next, record.clone()));
        w.pool_writes.push(pool.to_owned());
        Ok(())
    }
}

impl ClaimStore for Fake {
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.world().claim_changes.subscribe())
    }

    async fn list(&self) -> ProviderResult<Vec<Claim>> {
        self.pause().await;
        self.take("list_claims")?;
        let w = self.world();
        for name in w.claims.keys() {
            self.saw(name, w.claim_versions.get(name).copied());
        }
        Ok(w.claims.values().cloned().collect())
    }

    async fn create(&self, claim: &Claim) -> ProviderResult<()> {
        self.pause().await;
        self.take("create_claim")?;
        let mut w = self.world();
        if w.claims.contains_key(&claim.name) {
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!("claim {} already exists", claim.name),
            ));
        }
        w.claims.insert(claim.name.clone(), claim.clone());
        let v = bump(&mut w, &claim.name);
        drop(w);
        self.saw(&claim.name, Some(v));
        self.claims_changed();
        Ok(())
    }

    async fn update(&self, claim: &Claim) -> ProviderResult<()> {
        self.take("update_claim")?;
        let mut w = self.world();
        let stored = w
            .claims
            .get_mut(&claim.name)
            .ok_or_else(|| not_found(format!("claim {}", claim.name)))?;
        stored.spec = claim.spec.clone();
        stored.spec.intent = claim.spec.intent;
        let v = bump(&mut w, &claim.name);
        drop(w);
        self.saw(&claim.name, Some(v));
        self.claims_changed();
        Ok(())
    }

    async fn get(&self, name: &str) -> ProviderResult<Option<Claim>> {
        self.take("get_claim")?;
        let w = self.world();
        let claim = w.claims.get(name).cloned();
        if claim.is_some() {
            self.saw(name, w.claim_versions.get(name).copied());
        }
        Ok(claim)
    }

    async fn save_status(&self, name: &str, status: &ClaimStatus) -> ProviderResult<()> {
        self.take("save_status")?;
        let mut w = self.world();
        let current = w.claim_versions.get(name).copied();
        let claim = w
            .claims
            .get_mut(name)
            .ok_or_else(|| not_found(format!("claim {name}")))?;
        let seen = self.seen().get(name).copied();
        if seen.is_some() && seen != current {
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!("claim {name} was written since this store read it"),
            ));
        }
        claim.status = status.clone();
        let v = bump(&mut w, name);
        drop(w);
        self.saw(name, Some(v));
        self.claims_changed();
        Ok(())
    }

    async fn audit(&self, claim: &str, entry: &crate::ports::AuditEntry) {
        self.world().audit.push((claim.to_owned(), entry.clone()));
    }

    async fn add_finalizer(&self, name: &str) -> ProviderResult<()> {
        self.take("add_finalizer")?;
        let mut w = self.world();
        let claim = w
            .claims
            .get_mut(name)
            .ok_or_else(|| not_found(format!("claim {name}")))?;
        if claim.finalizer {
            // Already there: nothing is written.
            return Ok(());
        }
        claim.finalizer = true;
        let v = bump(&mut w, name);
        drop(w);
        self.saw(name, Some(v));
        self.claims_changed();
        Ok(())
    }

    async fn remove_finalizer(&self, name: &str) -> ProviderResult<()> {
        self.take("remove_finalizer")?;
        let mut w = self.world();
        // With the finalizer gone and removal requested, the record disappears.
        w.claims.remove(name);
        w.claim_versions.remove(name);
        drop(w);
        self.seen().remove(name);
        self.claims_changed();
        Ok(())
    }
}

/// A clock that stands still until a test moves it. Sleeping on it moves
/// it by the time asked for and returns at once (after yielding to other
/// tasks), so a loop that sleeps an hour on it takes no real time. Clones
/// share one time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// A clock reading `start` until moved.
    pub fn at(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock `d` forward (saturating at the largest timestamp).
    pub fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now = SignedDuration::try_from(d)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            clock.advance(d);
            tokio::task::yield_now().await;
        })
    }

    /// Its time moves only by hand, so a client's real-time parameter
    /// keeps the value asked for.
    fn real(&self, d: Duration) -> Duration {
        d
    }
}

/// Provisions `count` workers of `pool` through the service and carries
/// each through the executor until it rests (Ready, with the fakes);
/// returns their names. Panics on failure: it is test setup.
///
/// # Panics
/// When the request is refused or a worker's steps fail.
#[allow(clippy::unwrap_used)]
pub async fn ready_workers(
    exec: &Arc<crate::executor::Executor<Fake, Fake, Fake, Fake>>,
    pool: &str,
    count: u32,
    reason: &str,
) -> Vec<String> {
    let names = crate::service::Service::new(exec.clone())
        .provision(&crate::service::ProvisionRequest {
            pool: pool.into(),
            size: None,
            count,
            ttl: None,
            requested_by: "t".into(),
            reason: reason.into(),
        })
        .await
        .unwrap();
    for n in &names {
        exec.run_until_idle(n, Duration::from_secs(5), Duration::from_millis(1))
            .await
            .unwrap();
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn a_manual_clock_stands_still_until_moved_or_slept_on() {
        let start = Timestamp::from_second(1_767_225_600).unwrap();
        let clock = ManualClock::at(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_secs(60));
        assert_eq!(clock.now(), start + SignedDuration::from_secs(60));
        let real = std::time::Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert!(real.elapsed() < Duration::from_secs(1));
        assert_eq!(shared.now(), start + SignedDuration::from_secs(3660));
        assert_eq!(clock.real(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
