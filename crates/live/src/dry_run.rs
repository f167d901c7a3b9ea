//! `tidepool run --dry-run`: adapters of every mutating port over the live
//! ones. Reads go to Proxmox and Kubernetes as in a real run; each write is
//! recorded, logged and announced (an Event on the claim it concerns, the
//! one write a dry run makes) instead of being made. Claims the autoscaler
//! would create, and pool records it would write, live in memory so the
//! next pass sees them as on their way and the decision is not repeated.
//!
//! One [`DryRun`] value stands for all four ports of the controller's
//! [`Executor`]; [`DryRunObserver`] adds the in-memory claims to what the
//! planner observes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tidepool_controller::executor::Executor;
use tidepool_controller::observe::{Observation, Observe};
use tidepool_controller::ports::{
    AuditEntry, AuditResult, CloneSpec, NodeIdentity, NodeView, PoolRecords, ProviderResult,
    VersionedRecord, VmFacts, VmShape,
};
use tidepool_controller::{
    Claim, ClaimStatus, ClaimStore, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind,
    VmIdentity,
};
use tidepool_core::NodeMetadata;
use tidepool_core::config::Pool;
use tidepool_core::planner::hosts::VmCost;
use tidepool_core::planner::{ClaimState, PlanInput};
use tidepool_core::pool_record::PoolRecord;

use crate::connect::LiveExecutor;
use crate::snapshot::LiveObserver;

/// The executor of a dry run.
pub type DryRunExecutor = Executor<DryRun, DryRun, DryRun, DryRun>;

/// Errors of this module: the answer a mutation the dry run did not make
/// gives when the caller needs a result (a clone's VM, say).
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// The mutation was only recorded.
    #[error("dry run: would {0} (not done)")]
    NotDone(String),
}

impl From<DryRunError> for ProviderError {
    fn from(e: DryRunError) -> Self {
        ProviderError::new(ProviderErrorKind::Permanent, e.to_string())
    }
}

#[derive(Debug, Default)]
struct Memory {
    /// Claims created or changed in this dry run, by name.
    claims: BTreeMap<String, Claim>,
    /// Pool records written in this dry run, with a version of our own.
    pools: BTreeMap<String, (PoolRecord, u64)>,
    /// Everything the run would have done, in order.
    would: Vec<String>,
}

struct Inner {
    live: Arc<LiveExecutor>,
    memory: Mutex<Memory>,
}

/// The dry-run adapters: cheap to clone, all sharing one memory.
#[derive(Clone)]
pub struct DryRun(Arc<Inner>);

impl std::fmt::Debug for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DryRun").finish_non_exhaustive()
    }
}

impl DryRun {
    /// Dry-run adapters over `live`.
    pub fn new(live: Arc<LiveExecutor>) -> Self {
        Self(Arc::new(Inner {
            live,
            memory: Mutex::new(Memory::default()),
        }))
    }

    /// The executor whose every port is this dry run.
    pub fn executor(&self) -> DryRunExecutor {
        let live = &self.0.live;
        Executor::new(
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            live.config().clone(),
            live.clock().clone(),
        )
    }

    /// What the run would have done so far, in order.
    pub fn would(&self) -> Vec<String> {
        self.memory().would.clone()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> &LiveExecutor {
        &self.0.live
    }

    /// Records and logs one thing the run would do.
    fn record(&self, what: String) {
        tracing::info!(dry_run = true, "would {what}");
        self.memory().would.push(what);
    }

    /// Records a mutation that has no result to fake: done, as far as
    /// the caller can tell.
    fn skipped(&self, what: String) -> ProviderResult<()> {
        self.record(what);
        Ok(())
    }

    /// Applies `change` to the remembered copy of claim `name` (taken from
    /// the cluster the first time).
    async fn change_claim(
        &self,
        name: &str,
        what: String,
        change: impl FnOnce(&mut Claim),
    ) -> ProviderResult<()> {
        let remembered = self.memory().claims.get(name).cloned();
        let claim = match remembered {
            Some(c) => Some(c),
            None => self.live().store().get(name).await?,
        };
        let Some(mut claim) = claim else {
            return Err(ProviderError::new(
                ProviderErrorKind::NotFound,
                format!("claim {name} not found"),
            ));
        };
        change(&mut claim);
        self.memory().claims.insert(name.to_owned(), claim);
        self.skipped(what)
    }

    /// The cluster's claims with this run's changes over them.
    fn merged(&self, real: Vec<Claim>) -> Vec<Claim> {
        let memory = self.memory();
        let mut out: BTreeMap<String, Claim> =
            real.into_iter().map(|c| (c.name.clone(), c)).collect();
        for (name, c) in &memory.claims {
            out.insert(name.clone(), c.clone());
        }
        out.into_values().collect()
    }
}

impl Hypervisor for DryRun {
    async fn vm(&self, vmid: u32) -> ProviderResult<Option<VmFacts>> {
        self.live().hypervisor().vm(vmid).await
    }

    async fn owned_by(&self, claim: &str) -> ProviderResult<Vec<VmFacts>> {
        self.live().hypervisor().owned_by(claim).await
    }

    async fn vms_in_range(&self) -> ProviderResult<Vec<VmFacts>> {
        self.live().hypervisor().vms_in_range().await
    }

    async fn choose_host(
        &self,
        pool: &Pool,
        cost: &VmCost,
        pending: &[(ClaimState, VmCost)],
    ) -> ProviderResult<String> {
        self.live()
            .hypervisor()
            .choose_host(pool, cost, pending)
            .await
    }

    async fn free_vmid(&self, reserved: &BTreeSet<u32>) -> ProviderResult<u32> {
        self.live().hypervisor().free_vmid(reserved).await
    }

    async fn clone_vm(&self, spec: &CloneSpec) -> ProviderResult<VmIdentity> {
        let what = format!(
            "clone template {} to VM {} on {} for {}",
            spec.template, spec.vmid, spec.host, spec.claim
        );
        self.record(what.clone());
        Err(DryRunError::NotDone(what).into())
    }

    async fn configure(&self, vm: &VmIdentity, shape: &VmShape) -> ProviderResult<()> {
        self.skipped(format!(
            "configure VM {} ({} cores, {} MiB)",
            vm.vmid, shape.cores, shape.memory_mib
        ))
    }

    async fn start(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.skipped(format!("start VM {}", vm.vmid))
    }

    async fn address(&self, vm: &VmIdentity) -> ProviderResult<Option<IpAddr>> {
        self.live().hypervisor().address(vm).await
    }

    async fn stop(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.skipped(format!("stop VM {}", vm.vmid))
    }

    async fn shutdown(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.skipped(format!("shut down VM {} (ACPI)", vm.vmid))
    }

    async fn delete(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.skipped(format!("delete VM {}", vm.vmid))
    }
}

impl Joiner for DryRun {
    async fn prepare(&self, claim: &Claim, _meta: &NodeMetadata) -> ProviderResult<Option<String>> {
        self.record(format!("prepare the join of {}", claim.name));
        Ok(None)
    }

    async fn deliver(&self, claim: &Claim, ip: IpAddr, _meta: &NodeMetadata) -> ProviderResult<()> {
        self.skipped(format!(
            "deliver the machine config of {} to {ip}",
            claim.name
        ))
    }
}

impl Nodes for DryRun {
    async fn node_identity(&self, name: &str) -> ProviderResult<Option<NodeIdentity>> {
        self.live().nodes().node_identity(name).await
    }

    async fn list(&self) -> ProviderResult<Vec<NodeView>> {
        Nodes::list(self.live().nodes()).await
    }

    async fn uncordon(&self, name: &str) -> ProviderResult<()> {
        self.skipped(format!("uncordon node {name}"))
    }

    async fn node_ready(&self, name: &str) -> ProviderResult<Option<bool>> {
        self.live().nodes().node_ready(name).await
    }

    async fn ensure_metadata(&self, name: &str, _meta: &NodeMetadata) -> ProviderResult<()> {
        self.skipped(format!("label and taint node {name}"))
    }

    async fn cordon(&self, name: &str) -> ProviderResult<()> {
        self.skipped(format!("cordon node {name}"))
    }

    async fn drain(
        &self,
        name: &str,
        timeout: Duration,
        force: bool,
        _grace: Option<Duration>,
    ) -> ProviderResult<()> {
        let force = if force { " (forced)" } else { "" };
        self.skipped(format!("drain node {name} within {timeout:?}{force}"))
    }

    async fn delete_node(&self, name: &str) -> ProviderResult<()> {
        self.skipped(format!("delete node {name}"))
    }

    async fn announce(&self, name: &str, reason: &str, message: &str) {
        self.live()
            .nodes()
            .announce(name, reason, &format!("[dry run] {message}"))
            .await;
    }

    async fn warn(&self, name: &str, reason: &str, message: &str) {
        self.live()
            .nodes()
            .warn(name, reason, &format!("[dry run] {message}"))
            .await;
    }
}

impl PoolRecords for DryRun {
    async fn read_pool(&self, pool: &str) -> ProviderResult<VersionedRecord> {
        if let Some((record, version)) = self.memory().pools.get(pool).cloned() {
            return Ok(VersionedRecord {
                record,
                version: Some(format!("dry-run-{version}")),
            });
        }
        self.live().store().read_pool(pool).await
    }

    async fn write_pool(
        &self,
        pool: &str,
        record: &PoolRecord,
        _version: Option<&str>,
    ) -> ProviderResult<()> {
        {
            let mut memory = self.memory();
            let next = memory.pools.get(pool).map_or(1, |(_, v)| v + 1);
            memory.pools.insert(pool.to_owned(), (record.clone(), next));
        }
        self.skipped(format!("write pool {pool}'s record"))
    }
}

impl ClaimStore for DryRun {
    async fn list(&self) -> ProviderResult<Vec<Claim>> {
        Ok(self.merged(ClaimStore::list(self.live().store()).await?))
    }

    async fn create(&self, claim: &Claim) -> ProviderResult<()> {
        let what = format!(
            "create WorkerClaim {} (pool {}, size {})",
            claim.name, claim.spec.pool, claim.spec.size
        );
        self.memory()
            .claims
            .insert(claim.name.clone(), claim.clone());
        self.live()
            .store()
            .audit(
                &claim.name,
                &AuditEntry {
                    actor: "dry-run".into(),
                    operation: "provision".into(),
                    result: AuditResult::Ok,
                    message: format!("[dry run] would {what}; nothing was created"),
                },
            )
            .await;
        self.skipped(what)
    }

    async fn update(&self, claim: &Claim) -> ProviderResult<()> {
        let spec = claim.spec.clone();
        let what = format!(
            "update WorkerClaim {} (intent {:?})",
            claim.name, spec.intent
        );
        self.change_claim(&claim.name, what, |c| c.spec = spec)
            .await
    }

    async fn get(&self, name: &str) -> ProviderResult<Option<Claim>> {
        if let Some(c) = self.memory().claims.get(name).cloned() {
            return Ok(Some(c));
        }
        self.live().store().get(name).await
    }

    async fn save_status(&self, name: &str, status: &ClaimStatus) -> ProviderResult<()> {
        let status = status.clone();
        let what = format!("write WorkerClaim {name}'s status");
        self.change_claim(name, what, |c| c.status = status).await
    }

    async fn remove_finalizer(&self, name: &str) -> ProviderResult<()> {
        let what = format!("remove WorkerClaim {name}'s finalizer");
        self.change_claim(name, what, |c| c.finalizer = false).await
    }

    async fn add_finalizer(&self, name: &str) -> ProviderResult<()> {
        let what = format!("add WorkerClaim {name}'s finalizer");
        self.change_claim(name, what, |c| c.finalizer = true).await
    }

    async fn observed(&self) -> ProviderResult<Vec<Claim>> {
        Ok(self.merged(self.live().store().observed().await?))
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.live().store().changes()
    }

    async fn audit(&self, claim: &str, entry: &AuditEntry) {
        let entry = AuditEntry {
            message: format!("[dry run] {}", entry.message),
            ..entry.clone()
        };
        self.live().store().audit(claim, &entry).await;
    }
}

impl tidepool_controller::ports::Events for DryRun {
    async fn tell_pod(&self, namespace: &str, name: &str, reason: &str, message: &str) {
        let message = format!("[dry run] {message}");
        self.live()
            .nodes()
            .tell_pod(namespace, name, reason, &message)
            .await;
    }
}

/// What the planner observes in a dry run: the live observation with the
/// claims this run would have created counted as on their way.
#[derive(Clone, Debug)]
pub struct DryRunObserver {
    /// The live observer.
    pub live: LiveObserver,
    /// The dry run whose claims to add.
    pub dry: DryRun,
}

async fn dry_plan_input(obs: &DryRunObserver) -> ProviderResult<PlanInput> {
    let mut input = obs.live.plan_input().await?;
    let known: BTreeSet<String> = input.claims.iter().map(|c| c.name.clone()).collect();
    let extra: Vec<ClaimState> = obs
        .dry
        .memory()
        .claims
        .values()
        .filter(|c| !known.contains(&c.name))
        .map(Claim::planner_state)
        .collect();
    input.claims.extend(extra);
    Ok(input)
}

impl Observe for DryRunObserver {
    fn plan_input(&self) -> Observation<'_> {
        Box::pin(dry_plan_input(self))
    }

    fn changes(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        self.live.changes()
    }
}
