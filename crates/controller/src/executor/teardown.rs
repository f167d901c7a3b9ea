//! The teardown steps: from a worker on its way out to its deleted VM
//! (Cordon, Drain, DeleteNode, ShutdownOs, DeleteVm). ShutdownOs powers
//! the VM off gracefully: the OS is asked first (Talos `Shutdown`), then
//! the guest through the hypervisor (ACPI), and only when both let their
//! deadline pass is the VM hard-stopped; each attempt is a condition on
//! the claim and an entry on its audit trail. Only the
//! claim's own node and VMs are touched (see `identity`): a node of
//! another machine named like the claim is skipped, not cordoned, drained
//! or deleted. A target already gone counts as done, except that a VM is
//! gone only when no VM carrying the claim's marker remains.

use std::time::Duration;

use tidepool_core::{Phase, Step, VmIdentity, duration::Human};
use tracing::warn;

use super::identity::NodeCheck;
use super::{Executor, Outcome, Work, permanent};
use crate::claim::{Condition, Intent};
use crate::ports::{
    AuditEntry, AuditResult, ClaimStore, Hypervisor, Joiner, Nodes, ProviderError,
    ProviderErrorKind,
};
use crate::service::ErrorCategory;

/// How long the OS gets to power off after it was asked to shut down,
/// before the hypervisor is asked.
const OS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(120);

/// How long the guest gets after an ACPI shutdown before the hard stop.
const ACPI_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);

/// How often a shutdown in progress is looked at.
const SHUTDOWN_POLL: Duration = Duration::from_secs(5);

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// Whether the node named like the claim is there and the claim's to
    /// act on with `step`. A node of another machine is left untouched: the
    /// skip is logged and recorded on the claim's audit trail, and the
    /// teardown goes on without it.
    async fn our_node(&self, work: &Work<'_>, step: Step) -> Result<bool, ProviderError> {
        match self.check_node(work.claim).await? {
            NodeCheck::Ours => Ok(true),
            NodeCheck::Absent => Ok(false),
            NodeCheck::NotOurs(why) | NodeCheck::Unreported(why) => {
                warn!(claim = work.name(), %step, %why, "node left untouched");
                let entry = AuditEntry {
                    actor: "executor".into(),
                    operation: step.to_string(),
                    result: AuditResult::Error(ErrorCategory::Refused),
                    message: format!("skipped, node left untouched: {why}"),
                };
                self.store.audit(work.name(), &entry).await;
                Ok(false)
            }
        }
    }

    /// Cordon: marks the claim's node unschedulable.
    pub(super) async fn cordon(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        if self.our_node(work, Step::Cordon).await? {
            gone_is_done(self.nodes.cordon(work.name()).await)?;
        }
        Ok(self.reached(work.status(), Condition::Cordoned))
    }

    /// Drain: evicts the node's pods (forced when the removal is); a drain
    /// blocked for longer than the pool's drain timeout fails the claim,
    /// which keeps the worker until its removal is forced.
    pub(super) async fn drain(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let s = work.status();
        let scale_down = &work.pool.scale_down;
        let timeout = scale_down.drain_timeout;
        let force = matches!(work.claim.spec.intent, Intent::Remove { force: true });
        let grace = Some(scale_down.grace_period);
        if !self.our_node(work, Step::Drain).await? {
            return Ok(self.reached(s, Condition::Drained));
        }
        match gone_is_done(self.nodes.drain(work.name(), timeout, force, grace).await) {
            Ok(()) => {}
            Err(e) if e.kind == ProviderErrorKind::Blocked => {
                if self.since(&s, Condition::Cordoned) <= timeout {
                    return Ok(Outcome::Wait(Duration::from_secs(10), e.message));
                }
                if !force {
                    return Ok(Outcome::Fail(format!(
                        "drain blocked for longer than {}: {}",
                        Human(timeout),
                        e.message
                    )));
                }
                // A forced removal honoured the budgets for the pool's whole
                // drain timeout; now it goes on, and says so on the node.
                let message = format!(
                    "forced removal goes on after the drain was blocked for {}: {}",
                    Human(timeout),
                    e.message
                );
                warn!(claim = work.name(), %message);
                self.nodes
                    .announce(work.name(), "ForcedRemoval", &message)
                    .await;
            }
            Err(e) => return Err(e),
        }
        Ok(self.reached(s, Condition::Drained))
    }

    /// DeleteNode: deletes the Kubernetes node.
    pub(super) async fn delete_node(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        if self.our_node(work, Step::DeleteNode).await? {
            gone_is_done(self.nodes.delete_node(work.name()).await)?;
        }
        Ok(self.reached(work.status(), Condition::NodeDeleted))
    }

    /// ShutdownOs: the OS, then ACPI, then a hard stop (see the module
    /// doc), each after the previous one's deadline.
    pub(super) async fn shutdown_os(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let running = self.running_vms(work).await?;
        if running.is_empty() {
            return Ok(self.reached(s, Condition::VmStopped));
        }
        if !s.has(Condition::OsShutdownRequested) {
            let asked = self.ask_os_to_shut_down(work).await;
            self.mark(&mut s, Condition::OsShutdownRequested);
            if !asked {
                self.acpi_shutdown(work, &running, "the OS could not be asked")
                    .await?;
                self.mark(&mut s, Condition::AcpiShutdownRequested);
            }
            return Ok(Outcome::done(s));
        }
        if !s.has(Condition::AcpiShutdownRequested) {
            if self.since(&s, Condition::OsShutdownRequested) < OS_SHUTDOWN_DEADLINE {
                return Ok(Outcome::Wait(SHUTDOWN_POLL, "the OS to power off".into()));
            }
            let why = format!(
                "the OS did not power off within {}",
                Human(OS_SHUTDOWN_DEADLINE)
            );
            self.acpi_shutdown(work, &running, &why).await?;
            self.mark(&mut s, Condition::AcpiShutdownRequested);
            return Ok(Outcome::done(s));
        }
        if self.since(&s, Condition::AcpiShutdownRequested) < ACPI_SHUTDOWN_DEADLINE {
            return Ok(Outcome::Wait(
                SHUTDOWN_POLL,
                "the guest to power off after the ACPI shutdown".into(),
            ));
        }
        for vm in &running {
            self.hv.stop(vm).await?;
        }
        let why = format!(
            "hard stop: the guest did not power off within {} of the ACPI shutdown",
            Human(ACPI_SHUTDOWN_DEADLINE)
        );
        warn!(claim = work.name(), %why);
        self.record_attempt(work, AuditResult::Ok, why).await;
        Ok(self.reached(s, Condition::VmStopped))
    }

    /// The claim's VMs that still run.
    async fn running_vms(&self, work: &Work<'_>) -> Result<Vec<VmIdentity>, ProviderError> {
        let mut running = Vec::new();
        for vm in self.ours(work.claim).await? {
            if self.hv.vm(vm.vmid).await?.is_some_and(|f| f.running) {
                running.push(vm);
            }
        }
        Ok(running)
    }

    /// Asks the OS to shut down; whether it could be asked (the attempt
    /// is on the audit trail either way).
    async fn ask_os_to_shut_down(&self, work: &Work<'_>) -> bool {
        let result = match work.claim.status.ip {
            Some(ip) => self.joiner.shutdown_os(work.claim, ip).await,
            None => Err(ProviderError::new(
                ProviderErrorKind::Permanent,
                "the machine never reported an address",
            )),
        };
        match result {
            Ok(()) => {
                let message = "OS shutdown requested".to_owned();
                self.record_attempt(work, AuditResult::Ok, message).await;
                true
            }
            Err(e) => {
                let message = format!("OS shutdown not possible: {e}");
                warn!(claim = work.name(), %message);
                let result = AuditResult::Error(ErrorCategory::Failed);
                self.record_attempt(work, result, message).await;
                false
            }
        }
    }

    /// Asks the hypervisor to shut the guests down (ACPI), saying why.
    async fn acpi_shutdown(
        &self,
        work: &Work<'_>,
        running: &[VmIdentity],
        why: &str,
    ) -> Result<(), ProviderError> {
        for vm in running {
            gone_is_done(self.hv.shutdown(vm).await)?;
        }
        let message = format!("ACPI shutdown requested: {why}");
        self.record_attempt(work, AuditResult::Ok, message).await;
        Ok(())
    }

    /// Puts one power-off attempt on the claim's audit trail.
    async fn record_attempt(&self, work: &Work<'_>, result: AuditResult, message: String) {
        let entry = AuditEntry {
            actor: "executor".into(),
            operation: Step::ShutdownOs.to_string(),
            result,
            message,
        };
        self.store.audit(work.name(), &entry).await;
    }

    /// StopVm: hard-stops every VM that is provably the claim's.
    pub(super) async fn stop_vm(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        for vm in self.ours(work.claim).await? {
            self.hv.stop(&vm).await?;
        }
        Ok(self.reached(work.status(), Condition::VmStopped))
    }

    /// DeleteVm: deletes every VM that is provably the claim's, waits until
    /// none remains, and moves the claim on to Terminated.
    pub(super) async fn delete_vm(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        for vm in self.ours(work.claim).await? {
            gone_is_done(self.hv.delete(&vm).await)?;
        }
        if !self.ours(work.claim).await?.is_empty() {
            return Ok(Outcome::Wait(
                Duration::from_secs(2),
                "VM deletion to finish".into(),
            ));
        }
        self.mark(&mut s, Condition::VmDeleted);
        s.lifecycle = s.lifecycle.advance(Phase::Terminated).map_err(permanent)?;
        Ok(Outcome::done(s))
    }
}

/// A removal whose target is already gone (`NotFound`) has done its work.
fn gone_is_done(result: Result<(), ProviderError>) -> Result<(), ProviderError> {
    match result {
        Err(e) if e.kind != ProviderErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use tidepool_core::Step;

    use super::*;
    use crate::executor::Progress;
    use crate::executor::fixtures::{claim, clock, executor, set_intent, settle};
    use crate::testing::Fake;

    #[tokio::test]
    async fn a_worker_whose_drain_timed_out_is_kept_until_its_removal_is_forced() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-pdb03", "burst", "small"));
        assert_eq!(settle(&exec, "burst-pdb03").await, Phase::Ready);
        fake.world().drain_blocker =
            Some("pod apps/ledger-0 is protected by PodDisruptionBudget apps/ledger".into());
        set_intent(&fake, "burst-pdb03", Intent::Remove { force: false });
        let mut waited = false;
        for _ in 0..5 {
            if let Progress::Waiting { step, .. } = exec.step("burst-pdb03").await.unwrap() {
                assert_eq!(step, Step::Drain);
                waited = true;
                break;
            }
        }
        assert!(waited, "the drain waits for the budget");

        // The pool's drain timeout (10 minutes) passes with the budget still blocking.
        clock.advance(Duration::from_secs(11 * 60));
        assert_eq!(
            exec.step("burst-pdb03").await.unwrap(),
            Progress::Advanced(Step::Drain)
        );
        let status = fake.world().claims["burst-pdb03"].status.clone();
        assert!(
            matches!(&status.lifecycle, tidepool_core::Lifecycle::Failed { step: Step::Drain, reason } if reason.contains("PodDisruptionBudget apps/ledger")),
            "{:?}",
            status.lifecycle
        );
        for _ in 0..3 {
            assert_eq!(
                exec.step("burst-pdb03").await.unwrap(),
                Progress::Idle(Phase::Failed)
            );
        }
        assert_eq!(fake.owned("burst-pdb03").len(), 1, "the VM is kept");
        assert!(
            fake.world().nodes.contains_key("burst-pdb03"),
            "the node with its protected pods is kept"
        );

        set_intent(&fake, "burst-pdb03", Intent::Remove { force: true });
        assert_eq!(settle(&exec, "burst-pdb03").await, Phase::Terminated);
        assert!(fake.owned("burst-pdb03").is_empty());
    }

    fn shutdown_audit(fake: &Fake, claim: &str) -> Vec<String> {
        fake.world()
            .audit
            .iter()
            .filter(|(c, e)| c == claim && e.operation == "shutdownOs")
            .map(|(_, e)| e.message.clone())
            .collect()
    }

    #[tokio::test]
    async fn removal_asks_the_os_to_shut_down_before_any_hypervisor_stop() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-gr8ce", "burst", "small"));
        assert_eq!(settle(&exec, "burst-gr8ce").await, Phase::Ready);
        let vmid = fake.owned("burst-gr8ce")[0].identity.vmid;
        set_intent(&fake, "burst-gr8ce", Intent::Remove { force: false });
        assert_eq!(settle(&exec, "burst-gr8ce").await, Phase::Terminated);
        assert_eq!(fake.world().power_log, [("os-shutdown", vmid)]);
        assert_eq!(fake.calls("stop"), 0, "no hard stop");
        assert_eq!(fake.calls("shutdown"), 0, "no ACPI shutdown");
        assert_eq!(
            shutdown_audit(&fake, "burst-gr8ce"),
            ["OS shutdown requested"]
        );
    }

    #[tokio::test]
    async fn an_os_that_stays_up_gets_an_acpi_shutdown_then_a_hard_stop() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-stuck", "burst", "small"));
        assert_eq!(settle(&exec, "burst-stuck").await, Phase::Ready);
        let vmid = fake.owned("burst-stuck")[0].identity.vmid;
        {
            let mut w = fake.world();
            w.os_ignores_shutdown = true;
            w.guest_ignores_acpi = true;
        }
        set_intent(&fake, "burst-stuck", Intent::Remove { force: false });
        let waiting = |p: Progress| {
            matches!(
                p,
                Progress::Waiting {
                    step: Step::ShutdownOs,
                    ..
                }
            )
        };
        let mut progress = exec.step("burst-stuck").await.unwrap();
        for _ in 0..10 {
            if waiting(progress.clone()) {
                break;
            }
            progress = exec.step("burst-stuck").await.unwrap();
        }
        assert!(waiting(progress), "waits for the OS");
        assert_eq!(fake.world().power_log, [("os-shutdown", vmid)]);

        clock.advance(OS_SHUTDOWN_DEADLINE + Duration::from_secs(1));
        exec.step("burst-stuck").await.unwrap();
        assert!(
            waiting(exec.step("burst-stuck").await.unwrap()),
            "waits for ACPI"
        );
        assert_eq!(
            fake.world().power_log,
            [("os-shutdown", vmid), ("acpi-shutdown", vmid)]
        );
        let status = fake.world().claims["burst-stuck"].status.clone();
        assert!(status.has(Condition::OsShutdownRequested));
        assert!(status.has(Condition::AcpiShutdownRequested));

        clock.advance(ACPI_SHUTDOWN_DEADLINE + Duration::from_secs(1));
        assert_eq!(settle(&exec, "burst-stuck").await, Phase::Terminated);
        assert_eq!(
            fake.world().power_log,
            [
                ("os-shutdown", vmid),
                ("acpi-shutdown", vmid),
                ("stop", vmid)
            ]
        );
        let audit = shutdown_audit(&fake, "burst-stuck");
        assert_eq!(audit.len(), 3, "{audit:?}");
        assert!(audit[1].starts_with("ACPI shutdown requested: the OS did not power off"));
        assert!(audit[2].starts_with("hard stop"));
    }

    #[tokio::test]
    async fn an_os_that_cannot_be_asked_goes_straight_to_acpi() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-noos1", "burst", "small"));
        assert_eq!(settle(&exec, "burst-noos1").await, Phase::Ready);
        let vmid = fake.owned("burst-noos1")[0].identity.vmid;
        fake.inject(
            "shutdown_os",
            ProviderError::new(ProviderErrorKind::Transient, "connection refused"),
        );
        set_intent(&fake, "burst-noos1", Intent::Remove { force: false });
        assert_eq!(settle(&exec, "burst-noos1").await, Phase::Terminated);
        assert_eq!(fake.world().power_log, [("acpi-shutdown", vmid)]);
        let audit = shutdown_audit(&fake, "burst-noos1");
        assert!(audit[0].contains("connection refused"), "{audit:?}");
    }

    #[tokio::test]
    async fn an_operators_full_clone_of_a_worker_survives_the_workers_removal() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-c0py1", "burst", "small"));
        assert_eq!(settle(&exec, "burst-c0py1").await, Phase::Ready);
        let vmid = fake.owned("burst-c0py1")[0].identity.vmid;
        // Proxmox copies description and tags to a clone.
        fake.copy_vm(vmid, 4000);
        set_intent(&fake, "burst-c0py1", Intent::Remove { force: true });
        assert_eq!(settle(&exec, "burst-c0py1").await, Phase::Terminated);
        let w = fake.world();
        assert!(!w.vms.contains_key(&vmid), "the worker's VM is gone");
        assert!(w.vms.contains_key(&4000), "the operator's copy stays");
        assert_eq!(w.deletions, [vmid]);
    }

    #[tokio::test]
    async fn a_claim_named_like_a_permanent_node_never_labels_cordons_or_deletes_it() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.add_foreign_node("k8s-node3", &[("role", "storage")]);
        let before = fake.world().nodes["k8s-node3"].clone();
        fake.put_claim(claim("k8s-node3", "burst", "small"));
        assert_eq!(settle(&exec, "k8s-node3").await, Phase::Failed);
        let status = fake.world().claims["k8s-node3"].status.clone();
        assert!(
            matches!(&status.lifecycle, tidepool_core::Lifecycle::Failed { step: Step::WaitForNode, reason } if reason.contains("node k8s-node3 is not this worker's")),
            "{:?}",
            status.lifecycle
        );
        assert_eq!(fake.world().nodes["k8s-node3"], before, "untouched");

        set_intent(&fake, "k8s-node3", Intent::Remove { force: true });
        assert_eq!(settle(&exec, "k8s-node3").await, Phase::Terminated);
        let w = fake.world();
        assert_eq!(
            w.nodes.get("k8s-node3"),
            Some(&before),
            "never cordoned or deleted"
        );
        assert!(w.vms.is_empty(), "the claim's own VM is gone");
        assert!(
            w.audit
                .iter()
                .any(|(c, e)| c == "k8s-node3" && e.message.contains("node left untouched")),
            "{:?}",
            w.audit
        );
    }

    #[tokio::test]
    async fn a_worker_that_failed_before_it_joined_is_cleaned_up_on_removal() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.inject(
            "start",
            ProviderError::new(ProviderErrorKind::InsufficientCapacity, "no memory"),
        );
        fake.put_claim(claim("burst-nomem", "burst", "small"));
        assert_eq!(settle(&exec, "burst-nomem").await, Phase::Failed);
        assert_eq!(fake.owned("burst-nomem").len(), 1);
        set_intent(&fake, "burst-nomem", Intent::Remove { force: false });
        assert_eq!(settle(&exec, "burst-nomem").await, Phase::Terminated);
        assert!(fake.owned("burst-nomem").is_empty());
    }

    #[tokio::test]
    async fn a_forced_removal_still_cordons_and_evicts_before_the_node_goes() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-f0rce", "burst", "small"));
        assert_eq!(settle(&exec, "burst-f0rce").await, Phase::Ready);
        fake.world().nodes.get_mut("burst-f0rce").unwrap().pods = 3;
        set_intent(&fake, "burst-f0rce", Intent::Remove { force: true });
        // Step until the node is gone; by then the claim recorded both.
        for _ in 0..10 {
            exec.step("burst-f0rce").await.unwrap();
            let w = fake.world();
            if !w.nodes.contains_key("burst-f0rce") {
                let status = &w.claims["burst-f0rce"].status;
                assert!(status.has(Condition::Cordoned) && status.has(Condition::Drained));
                break;
            }
            assert_eq!(
                w.nodes["burst-f0rce"].pods > 0,
                !w.claims["burst-f0rce"].status.has(Condition::Drained)
            );
        }
        assert_eq!(settle(&exec, "burst-f0rce").await, Phase::Terminated);
        assert!(fake.owned("burst-f0rce").is_empty());
    }

    #[tokio::test]
    async fn a_forced_removal_honours_a_budget_for_the_drain_timeout_then_goes_on() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-pdb04", "burst", "small"));
        assert_eq!(settle(&exec, "burst-pdb04").await, Phase::Ready);
        fake.world().drain_blocker =
            Some("pod apps/ledger-0 is protected by PodDisruptionBudget apps/ledger".into());
        set_intent(&fake, "burst-pdb04", Intent::Remove { force: true });
        let mut waited = false;
        for _ in 0..5 {
            if let Progress::Waiting { step, .. } = exec.step("burst-pdb04").await.unwrap() {
                assert_eq!(step, Step::Drain);
                waited = true;
                break;
            }
        }
        assert!(waited, "the forced drain waits for the budget too");
        assert!(fake.world().nodes.contains_key("burst-pdb04"));

        clock.advance(Duration::from_secs(11 * 60));
        assert_eq!(settle(&exec, "burst-pdb04").await, Phase::Terminated);
        assert!(fake.owned("burst-pdb04").is_empty());
        assert!(
            fake.world()
                .node_events
                .iter()
                .any(|(node, reason, message)| node == "burst-pdb04"
                    && reason == "ForcedRemoval"
                    && message.contains("PodDisruptionBudget apps/ledger")),
            "{:?}",
            fake.world().node_events
        );
    }
}
