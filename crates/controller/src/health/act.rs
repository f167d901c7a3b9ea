//! Carrying out one decision of the repair matrix, recorded on the claim
//! before it is taken and again when it ended.
//!
//! - **restart kubelet**: Talos `ServiceRestart` of `kubelet`.
//! - **reboot**: Talos `Reboot` (graceful, the default mode).
//! - **drain + reboot**: cordon and drain through Kubernetes (the pool's
//!   drain timeout), then Talos `Reboot`; the node is uncordoned once it is
//!   healthy again.
//! - **free disk**: cordon and drain, then Talos `Reset` wiping only the
//!   EPHEMERAL partition, with reboot (`talosctl reset
//!   --system-labels-to-wipe EPHEMERAL --reboot`). Talos' machine API has
//!   no call that prunes images or containers, and by the time a node
//!   reports DiskPressure kubelet's own image and container garbage
//!   collection has already run (it is the first thing the eviction
//!   manager does under disk pressure). What is left on a Talos worker's
//!   disk is the ephemeral partition (`/var`: the container store, pod
//!   volumes, logs); wiping it, and only it, keeps the machine's
//!   configuration (STATE), so the node comes back as itself, with its
//!   images pulled again on demand.
//! - **replace**: a replacement claim is created first (through the
//!   service layer, within the pool's limits), then the sick worker is
//!   asked to go with a forced removal: it is still cordoned and drained
//!   on its way out, and a drain that cannot finish on a dead node does
//!   not keep it. Only burst, spot and gpu pools that allow it get here.
//! - **escalate**: an Event on the node and the repairs metric (the
//!   PrometheusRule in `deploy/` alerts on it); the escalation is
//!   recorded so it is not repeated while the trouble lasts.
//!
//! With `dryRun` the repair is recorded and announced as what would be
//! done, and nothing else happens.

use tidepool_core::config::Pool;
use tidepool_core::health::{Action, Decision, Outcome};

use super::{Monitor, Watched};
use crate::claim::Claim;
use crate::ports::{
    ClaimStore, GuestOs, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind,
};
use crate::service::{ProvisionRequest, ServiceError};

/// Who the health monitor's requests are from, in the audit trail.
pub const ACTOR: &str = "health";

impl<H: Hypervisor, J: Joiner + GuestOs, N: Nodes, S: ClaimStore> Monitor<H, J, N, S> {
    /// Carries out `d` for the worker `w`.
    pub(super) async fn act(&self, w: &Watched, d: &Decision) {
        let Some(pool) = self.exec.config().pool(&w.claim.spec.pool).cloned() else {
            return;
        };
        let mut claim = w.claim.clone();
        let name = claim.name.clone();
        let next = d.next;
        let since = claim.status.health.problems.get(&next.problem).copied();
        let since = since.map_or_else(String::new, |s| format!(" since {s}"));
        if next.action == Action::Escalate {
            claim.status.health.escalated_at = Some(self.exec.now());
            if self.save(&claim).await.is_err() {
                return;
            }
            let message = format!(
                "{} for {}{since} ({}): needs a person",
                next.action,
                next.problem,
                next.why.as_str()
            );
            self.exec
                .nodes()
                .warn(&name, "RepairEscalated", &message)
                .await;
            self.metrics.repair(next.action, "ok");
            return;
        }
        let record = &mut claim.status.health;
        let attempt = record
            .start(next.action, next.problem, self.exec.now())
            .attempt;
        if matches!(next.action, Action::DrainReboot | Action::FreeDisk) && !pool.repair.dry_run {
            record.cordoned = true;
        }
        if self.save(&claim).await.is_err() {
            return;
        }
        let what = format!(
            "{} for {}{since}, attempt {attempt}",
            next.action, next.problem
        );
        let (outcome, message) = if pool.repair.dry_run {
            (Outcome::DryRun, None)
        } else {
            self.exec
                .nodes()
                .announce(&name, "RepairStarted", &what)
                .await;
            match self.carry_out(&claim, &pool, next.action).await {
                Ok(()) => (Outcome::Done, None),
                Err(e) => (Outcome::Failed, Some(e.message)),
            }
        };
        claim
            .status
            .health
            .finish(outcome, message.clone(), self.exec.now());
        self.record_end(&mut claim).await;
        let (reason, result, text) = match outcome {
            Outcome::Failed => (
                "RepairFailed",
                "failed",
                format!("{what}: {}", message.unwrap_or_default()),
            ),
            Outcome::DryRun => ("RepairDryRun", "dry-run", format!("would {what}")),
            _ => ("RepairDone", "ok", what),
        };
        if outcome == Outcome::Failed {
            self.exec.nodes().warn(&name, reason, &text).await;
        } else {
            self.exec.nodes().announce(&name, reason, &text).await;
        }
        self.metrics.repair(next.action, result);
    }

    /// Writes the claim's status.
    async fn save(&self, claim: &Claim) -> Result<(), ProviderError> {
        let r = self
            .exec
            .store()
            .save_status(&claim.name, &claim.status)
            .await;
        if let Err(e) = &r {
            tracing::debug!(worker = %claim.name, error = %e, "repair not recorded; not taken");
        }
        r
    }

    /// Records how the repair ended; when someone wrote the claim
    /// meanwhile, reads it again and records the end on what it holds.
    async fn record_end(&self, claim: &mut Claim) {
        if self.save(claim).await.is_ok() {
            return;
        }
        let health = claim.status.health.clone();
        match self.exec.store().get(&claim.name).await {
            Ok(Some(mut fresh)) => {
                fresh.status.health.last_repair = health.last_repair;
                fresh.status.health.cordoned = health.cordoned;
                fresh.status.health.repairs = health.repairs;
                if let Err(e) = self.save(&fresh).await {
                    tracing::warn!(worker = %claim.name, error = %e, "the end of a repair was not recorded; it counts as interrupted");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(worker = %claim.name, error = %e, "the end of a repair was not recorded")
            }
        }
    }

    /// Does what `action` says to the worker.
    async fn carry_out(
        &self,
        claim: &Claim,
        pool: &Pool,
        action: Action,
    ) -> Result<(), ProviderError> {
        let ip = claim.status.ip.ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Permanent,
                format!("{}: no address recorded to reach its OS", claim.name),
            )
        })?;
        let guest = self.exec.joiner();
        match action {
            Action::RestartKubelet => guest.restart_service(ip, "kubelet").await,
            Action::Reboot => guest.reboot(ip).await,
            Action::DrainReboot => {
                self.drain(claim, pool).await?;
                guest.reboot(ip).await
            }
            Action::FreeDisk => {
                self.drain(claim, pool).await?;
                guest.wipe_ephemeral(ip).await
            }
            Action::Replace => self.replace(claim).await,
            Action::Watch | Action::Escalate => Ok(()),
        }
    }

    /// Cordons and drains the worker's node within the pool's drain timeout.
    async fn drain(&self, claim: &Claim, pool: &Pool) -> Result<(), ProviderError> {
        let nodes = self.exec.nodes();
        nodes.cordon(&claim.name).await?;
        nodes
            .drain(&claim.name, pool.scale_down.drain_timeout, false, None)
            .await
    }

    /// Provisions a replacement of the same size, then asks for the sick
    /// worker to be removed.
    async fn replace(&self, claim: &Claim) -> Result<(), ProviderError> {
        let request = ProvisionRequest {
            pool: claim.spec.pool.clone(),
            size: Some(claim.spec.size.clone()),
            count: 1,
            ttl: claim.spec.ttl,
            requested_by: ACTOR.to_owned(),
            reason: format!("replacing {}, which is unhealthy", claim.name),
        };
        let as_provider = |e: ServiceError| match e {
            ServiceError::Provider(p) => p,
            other => ProviderError::new(ProviderErrorKind::Permanent, other.to_string()),
        };
        let made = self
            .service
            .provision(&request)
            .await
            .map_err(as_provider)?;
        tracing::info!(worker = %claim.name, replacement = ?made, "replacement requested");
        self.service
            .destroy(ACTOR, &claim.name, true)
            .await
            .map_err(as_provider)
    }
}
