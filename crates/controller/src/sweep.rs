//! Reconciling both ways (spec §6): the VMs in the provider's VMID range
//! against the claims, in one pass the leader runs on a timer (never per
//! claim).
//!
//! - **Orphans.** A VM carrying Tidepool's ownership marker
//!   ([`VmFacts::owner`]) whose claim no longer exists is reported (a
//!   Warning Event naming the claim, the count for a metric) and, once it
//!   has been an orphan for the grace period (which protects clones in
//!   flight), removed through the identity check: re-read right before,
//!   marker and SMBIOS UUID unchanged, unlocked, claim still absent; stopped,
//!   then deleted. A VM without our marker is never touched.
//! - **Vanished VMs.** A Ready claim whose VM is gone (nothing at its VMID
//!   carries its marker, and no VM elsewhere does) becomes Failed with
//!   reason [`VM_GONE`]. A burst, spot or GPU worker is then asked to go
//!   (its dead node and record are cleaned up; the autoscaler provisions
//!   anew if pods need it); a permanent one is kept and escalated (Event).
//! - **Drifted VMs.** A VM at a claim's VMID carrying its marker with
//!   another SMBIOS UUID (restored from a backup, edited by hand) is
//!   reported once and kept; the executor will not finish the claim's
//!   removal while it is there ([`drift`]), so the claim keeps its finalizer
//!   and nothing leaks.
//!
//! The pass keeps only what it needs to pace itself (when each orphan was
//! first seen, which drifts were reported): a new leader starts the grace
//! period afresh, which errs on the side of keeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_core::jiff::Timestamp;
use tidepool_core::{Intent, Phase, PoolKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::claim::{Claim, VmIdentity};
use crate::executor::Executor;
use crate::ports::{
    AuditEntry, AuditResult, ClaimStore, Hypervisor, Joiner, Nodes, ProviderError,
    ProviderErrorKind, VmFacts,
};
use crate::service::ErrorCategory;

/// How long a VM must have been an orphan before it is removed, unless
/// configured otherwise.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// The failure reason of a claim whose VM vanished.
pub const VM_GONE: &str = "VmGone";

/// Who the pass's Events say acted.
const ACTOR: &str = "controller";

/// Why a pass could not look at the world.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Listing the VMs failed.
    #[error("listing the VMs in the provider's range: {0}")]
    Vms(#[source] ProviderError),
    /// Listing or writing the claims failed.
    #[error("reading or writing claims: {0}")]
    Claims(#[source] ProviderError),
}

impl SweepError {
    /// A stable category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Vms(_) => "hypervisor",
            Self::Claims(_) => "store",
        }
    }
}

/// A VM carrying the marker of a claim that does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// VMID, host and SMBIOS UUID.
    pub vm: VmIdentity,
    /// The claim its marker names.
    pub claim: String,
    /// Whether it runs.
    pub running: bool,
    /// Whether an operation holds its lock (a clone still copying).
    pub locked: bool,
}

/// The orphans among `vms`: those whose marker names a claim not in
/// `claims`. VMs without a marker are not Tidepool's and never listed.
pub fn orphans(vms: &[VmFacts], claims: &[Claim]) -> Vec<Orphan> {
    let names: BTreeSet<&str> = claims.iter().map(|c| c.name.as_str()).collect();
    vms.iter()
        .filter_map(|vm| {
            let owner = vm.owner.as_deref()?;
            (!names.contains(owner)).then(|| Orphan {
                vm: vm.identity.clone(),
                claim: owner.to_owned(),
                running: vm.running,
                locked: vm.locked,
            })
        })
        .collect()
}

/// Why the VM at `claim`'s recorded VMID is not to be deleted although it
/// carries the claim's marker: its SMBIOS UUID is not the recorded one.
///
/// # Errors
/// The hypervisor's, when the VM cannot be read.
pub async fn drift<H: Hypervisor>(hv: &H, claim: &Claim) -> Result<Option<String>, ProviderError> {
    let Some(recorded) = &claim.status.vm else {
        return Ok(None);
    };
    Ok(hv.vm(recorded.vmid).await?.and_then(|vm| {
        (vm.owner.as_deref() == Some(claim.name.as_str()) && vm.identity.uuid != recorded.uuid)
            .then(|| drift_message(recorded, &vm.identity))
    }))
}

fn drift_message(recorded: &VmIdentity, found: &VmIdentity) -> String {
    format!(
        "VM {} on {} carries this claim's marker but its SMBIOS UUID is {}, not the recorded {} \
         (restored or edited by hand): it is kept, and so is this claim",
        found.vmid, found.node, found.uuid, recorded.uuid
    )
}

/// What one pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Every orphan seen, removed ones included.
    pub orphans: Vec<Orphan>,
    /// The orphans removed by this pass.
    pub removed: Vec<VmIdentity>,
    /// The claims this pass found without their VM (now Failed).
    pub vm_gone: Vec<String>,
    /// The claims whose VM's UUID drifted.
    pub drifted: Vec<String>,
}

/// Where a pass reports its findings, for metrics.
pub trait SweepMetrics: Send + Sync {
    /// The orphan VMs the last pass saw.
    fn orphans(&self, vms: usize);
    /// A pass that failed, by error category.
    fn sweep_failed(&self, category: &str);
}

/// No metrics.
impl SweepMetrics for () {
    fn orphans(&self, _: usize) {}
    fn sweep_failed(&self, _: &str) {}
}

/// What a sweeper remembers between passes.
#[derive(Debug, Default)]
struct Seen {
    /// Orphans by VMID, with their UUID and when first seen.
    orphans: BTreeMap<u32, (String, Timestamp)>,
    /// Drifts already reported: claim and the UUID found.
    drifts: BTreeSet<(String, String)>,
}

/// Reconciles VMs and claims both ways, one pass at a time.
pub struct Sweeper<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    grace: Duration,
    seen: Mutex<Seen>,
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Sweeper<H, J, N, S> {
    /// A sweeper over `exec`'s ports removing orphans after `grace` (of
    /// the executor's clock).
    pub fn new(exec: Arc<Executor<H, J, N, S>>, grace: Duration) -> Self {
        Self {
            exec,
            grace,
            seen: Mutex::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass: lists the VMs, then the claims (in that order: a claim
    /// always exists before its VM, so no VM of a live claim reads as an
    /// orphan), and acts on what it finds.
    ///
    /// # Errors
    /// When the VMs or the claims cannot be listed, or a claim cannot be
    /// written; removing one orphan failing is logged and retried next pass.
    pub async fn pass(&self) -> Result<SweepReport, SweepError> {
        let hv = self.exec.hypervisor();
        let vms = hv.vms_in_range().await.map_err(SweepError::Vms)?;
        let claims = self.exec.store().list().await.map_err(SweepError::Claims)?;
        let mut report = SweepReport {
            orphans: orphans(&vms, &claims),
            ..SweepReport::default()
        };
        for orphan in report.orphans.clone() {
            if self.orphan_due(&orphan).await {
                match self.remove_orphan(&orphan).await {
                    Ok(true) => report.removed.push(orphan.vm.clone()),
                    Ok(false) => {}
                    Err(e) => warn!(vmid = orphan.vm.vmid, error = %e, "orphan VM not removed"),
                }
            }
        }
        let live: BTreeSet<u32> = report.orphans.iter().map(|o| o.vm.vmid).collect();
        self.seen().orphans.retain(|vmid, _| live.contains(vmid));
        for claim in &claims {
            let Some(recorded) = &claim.status.vm else {
                continue;
            };
            let at_vmid = vms.iter().find(|v| v.identity.vmid == recorded.vmid);
            let marked = vms
                .iter()
                .any(|v| v.owner.as_deref() == Some(claim.name.as_str()));
            if let Some(vm) = at_vmid.filter(|v| {
                v.owner.as_deref() == Some(claim.name.as_str()) && v.identity.uuid != recorded.uuid
            }) {
                self.report_drift(claim, recorded, &vm.identity).await;
                report.drifted.push(claim.name.clone());
            } else if claim.phase() == Phase::Ready
                && !marked
                && self.vm_gone(claim).await.map_err(SweepError::Claims)?
            {
                report.vm_gone.push(claim.name.clone());
            }
        }
        Ok(report)
    }

    /// Notes `orphan` (an Event the first time) and says whether its grace
    /// period is over.
    async fn orphan_due(&self, orphan: &Orphan) -> bool {
        let now = self.exec.now();
        let (first, new) = {
            let mut seen = self.seen();
            match seen.orphans.get(&orphan.vm.vmid) {
                Some((uuid, at)) if *uuid == orphan.vm.uuid => (*at, false),
                _ => {
                    seen.orphans
                        .insert(orphan.vm.vmid, (orphan.vm.uuid.clone(), now));
                    (now, true)
                }
            }
        };
        if new {
            let message = format!(
                "VM {} on {} carries the marker of claim {}, which does not exist: an orphan, \
                 removed after {}s unless its claim appears",
                orphan.vm.vmid,
                orphan.vm.node,
                orphan.claim,
                self.grace.as_secs()
            );
            warn!(vmid = orphan.vm.vmid, claim = %orphan.claim, "orphan VM");
            self.tell(&orphan.claim, "orphan-vm", ErrorCategory::NotFound, message)
                .await;
        }
        now.duration_since(first).unsigned_abs() >= self.grace
    }

    /// Removes an orphan whose identity still holds when re-read: the same
    /// UUID, still carrying the marker of a claim that still does not
    /// exist, not locked. Stops it, then deletes it. `false` when it was
    /// left alone (or already gone).
    async fn remove_orphan(&self, orphan: &Orphan) -> Result<bool, ProviderError> {
        let hv = self.exec.hypervisor();
        let Some(vm) = hv.vm(orphan.vm.vmid).await? else {
            return Ok(false);
        };
        if vm.identity.uuid != orphan.vm.uuid
            || vm.owner.as_deref() != Some(orphan.claim.as_str())
            || vm.locked
            || self.exec.store().get(&orphan.claim).await?.is_some()
        {
            return Ok(false);
        }
        if vm.running {
            hv.stop(&vm.identity).await?;
        }
        match hv.delete(&vm.identity).await {
            Err(e) if e.kind != ProviderErrorKind::NotFound => return Err(e),
            _ => {}
        }
        info!(vmid = vm.identity.vmid, claim = %orphan.claim, "orphan VM removed");
        let message = format!(
            "orphan VM {} on {} (marker of claim {}, which does not exist) stopped and deleted",
            vm.identity.vmid, vm.identity.node, orphan.claim
        );
        self.exec
            .store()
            .audit(
                &orphan.claim,
                &AuditEntry {
                    actor: ACTOR.into(),
                    operation: "remove-orphan-vm".into(),
                    result: AuditResult::Ok,
                    message,
                },
            )
            .await;
        Ok(true)
    }

    /// Marks a Ready claim whose VM vanished as Failed (`VmGone`), after
    /// re-reading both; asks a non-permanent worker to go. `false` when a
    /// second look finds the VM or the claim changed.
    async fn vm_gone(&self, listed: &Claim) -> Result<bool, ProviderError> {
        let hv = self.exec.hypervisor();
        let store = self.exec.store();
        let Some(mut claim) = store.get(&listed.name).await? else {
            return Ok(false);
        };
        let Some(recorded) = claim.status.vm.clone() else {
            return Ok(false);
        };
        let at_vmid = hv.vm(recorded.vmid).await?;
        if claim.phase() != Phase::Ready
            || claim.status.vm != listed.status.vm
            || at_vmid.is_some_and(|v| v.owner.as_deref() == Some(claim.name.as_str()))
            || !hv.owned_by(&claim.name).await?.is_empty()
        {
            return Ok(false);
        }
        let reason = format!(
            "{VM_GONE}: VM {} on {} (SMBIOS UUID {}) no longer exists",
            recorded.vmid, recorded.node, recorded.uuid
        );
        let mut status = claim.status.clone();
        status.lifecycle = status
            .lifecycle
            .lost_vm(reason.clone())
            .map_err(|e| ProviderError::new(ProviderErrorKind::Conflict, e.to_string()))?;
        status.last_error = Some(reason.clone());
        store.save_status(&claim.name, &status).await?;
        let permanent = self
            .exec
            .config()
            .pool(&claim.spec.pool)
            .is_none_or(|p| p.kind == PoolKind::Permanent);
        warn!(claim = %claim.name, permanent, "{reason}");
        if permanent {
            let message = format!("{reason}; a permanent worker is kept for an operator to act on");
            self.tell(&claim.name, "vm-gone", ErrorCategory::Failed, message)
                .await;
        } else {
            claim.spec.intent = Intent::Remove { force: true };
            store.update(&claim).await?;
            let message =
                format!("{reason}; the worker is removed and the pool provisions anew as needed");
            self.tell(&claim.name, "vm-gone", ErrorCategory::Failed, message)
                .await;
        }
        Ok(true)
    }

    /// Reports a drifted VM once per claim and UUID.
    async fn report_drift(&self, claim: &Claim, recorded: &VmIdentity, found: &VmIdentity) {
        let key = (claim.name.clone(), found.uuid.clone());
        if !self.seen().drifts.insert(key) {
            return;
        }
        let message = drift_message(recorded, found);
        warn!(claim = %claim.name, "{message}");
        self.tell(&claim.name, "vm-drifted", ErrorCategory::Refused, message)
            .await;
    }

    /// A Warning Event on claim `name` (which may no longer exist).
    async fn tell(&self, name: &str, operation: &str, category: ErrorCategory, message: String) {
        let entry = AuditEntry {
            actor: ACTOR.into(),
            operation: operation.into(),
            result: AuditResult::Error(category),
            message,
        };
        self.exec.store().audit(name, &entry).await;
    }
}

/// Runs a pass every `every` of the executor's clock (and at least
/// `at_least` of real time apart, so a fast clock never turns it into a
/// busy loop) until `stop` turns true, reporting to `metrics`.
pub async fn run<H, J, N, S>(
    sweeper: Sweeper<H, J, N, S>,
    every: Duration,
    at_least: Duration,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<dyn SweepMetrics>,
) where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
    let clock = sweeper.exec.clock().clone();
    while !*stop.borrow() {
        match sweeper.pass().await {
            Ok(report) => {
                metrics.orphans(report.orphans.len().saturating_sub(report.removed.len()))
            }
            Err(e) => {
                warn!(error = %e, "reconciling VMs against claims failed");
                metrics.sweep_failed(e.category());
            }
        }
        tokio::select! {
            ((), ()) = async { tokio::join!(clock.sleep(every), tokio::time::sleep(at_least)) } => {}
            () = crate::wake::changed(&mut stop) => {}
        }
    }
}
