//! The safety rules of spec §8 as the executor applies them to a claim on
//! its way out, whoever asked: a claim deleted or edited with `kubectl`
//! never reaches the service layer, so the executor checks the same rules
//! ([`check_destroy`]) before any step that leaves (cordon included).
//!
//! A refused claim keeps its VM, its node and its finalizer; its status
//! gets the [`Condition::Refused`] condition with the rule in `lastError`,
//! and its Events say so, both once.

use tidepool_core::safety::{DestroyTarget, Refusal, check_destroy};
use tidepool_core::{Phase, Step};
use tracing::warn;

use super::{Executor, ExecutorError, Progress, store_error};
use crate::claim::{Claim, Condition};
use crate::ports::{AuditEntry, AuditResult, ClaimStore, Hypervisor, Joiner, Nodes};
use crate::service::ErrorCategory;

/// Whether `step` is part of a worker's way out (drain or removal).
fn leaves(step: Step) -> bool {
    matches!(step.phase(), Phase::Draining | Phase::Terminating)
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// Why `step` of `claim` may not be taken, if a safety rule refuses it.
    ///
    /// The protected-name and managed rules hold for every way out. The
    /// permanent rule holds for a permanent worker that joined, when its
    /// removal was not the planner's (the record deleted, or the removal
    /// forced): the pool's own gradual scale-down still goes through. The
    /// drain requirement is the lifecycle's own (it cordons and evicts).
    pub(super) fn refusal(&self, claim: &Claim, step: Step) -> Option<Refusal> {
        if !leaves(step) || !claim.intent().is_leaving() {
            return None;
        }
        let pool = self.config.pool(&claim.spec.pool);
        let target = DestroyTarget {
            name: &claim.name,
            managed: pool.is_some(),
            kind: pool.map(|p| p.kind),
            cordoned: true,
            remaining_pods: 0,
        };
        let by_hand = claim.deleting || claim.intent().is_forced();
        let joined = claim.status.has(Condition::NodeReady);
        match check_destroy(&target, &self.config.protected, claim.intent().is_forced()) {
            Err(Refusal::Permanent { .. }) if !(by_hand && joined) => None,
            Err(refusal) => Some(refusal),
            Ok(()) => None,
        }
    }

    /// Records `refusal` on the claim (once) and leaves it as it is.
    pub(super) async fn refuse(
        &self,
        claim: &Claim,
        refusal: Refusal,
    ) -> Result<Progress, ExecutorError> {
        let name = claim.name.as_str();
        let message = refusal.to_string();
        let phase = claim.phase();
        if claim.status.has(Condition::Refused)
            && claim.status.last_error.as_ref() == Some(&message)
        {
            return Ok(Progress::Idle(phase));
        }
        warn!(claim = name, rule = refusal.rule(), %message, "removal refused");
        let mut status = claim.status.clone();
        self.mark(&mut status, Condition::Refused);
        status.last_error = Some(message.clone());
        self.store
            .save_status(name, &status)
            .await
            .map_err(store_error(name))?;
        let operation = if claim.intent().is_removal() {
            "remove"
        } else {
            "drain"
        };
        let entry = AuditEntry {
            actor: if claim.deleting {
                "kubectl delete".into()
            } else {
                "claim spec".into()
            },
            operation: operation.into(),
            result: AuditResult::Error(ErrorCategory::Refused),
            message: format!("{message} (rule {}; the worker is kept)", refusal.rule()),
        };
        self.store.audit(name, &entry).await;
        Ok(Progress::Idle(phase))
    }

    /// Drops a refusal recorded earlier once the claim no longer asks to
    /// leave (its intent was set back), so it reads as a kept worker again.
    pub(super) async fn clear_refusal(&self, claim: &mut Claim) -> Result<(), ExecutorError> {
        if claim.intent().is_leaving() || !claim.status.has(Condition::Refused) {
            return Ok(());
        }
        let name = claim.name.as_str();
        claim.status.conditions.remove(&Condition::Refused);
        claim.status.last_error = None;
        self.store
            .save_status(name, &claim.status)
            .await
            .map_err(store_error(name))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::claim::Intent;
    use crate::executor::fixtures::{claim, clock, executor, set_intent, settle};
    use crate::testing::Fake;

    /// A Ready worker `name` of `pool`, then deleted with `kubectl delete`
    /// (the store reads a deleted record as a removal).
    async fn deleted_by_hand(fake: &Fake, name: &str, pool: &str, size: &str) {
        let clock = clock();
        let exec = executor(fake, &clock);
        fake.put_claim(claim(name, pool, size));
        assert_eq!(settle(&exec, name).await, Phase::Ready);
        let mut w = fake.world();
        let c = w.claims.get_mut(name).unwrap();
        c.deleting = true;
        c.spec.intent = Intent::Remove { force: false };
    }

    fn refusals(fake: &Fake, name: &str) -> Vec<AuditEntry> {
        fake.world()
            .audit
            .iter()
            .filter(|(c, e)| c == name && e.result == AuditResult::Error(ErrorCategory::Refused))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Steps `name` a few times, each ending idle in `phase`.
    async fn stays(fake: &Fake, name: &str, phase: Phase) {
        let clock = clock();
        let exec = executor(fake, &clock);
        for _ in 0..3 {
            assert_eq!(exec.step(name).await.unwrap(), Progress::Idle(phase));
        }
    }

    fn kept(fake: &Fake, name: &str) {
        let w = fake.world();
        let c = &w.claims[name];
        assert!(c.finalizer, "the finalizer stays");
        assert!(c.status.has(Condition::Refused), "{:?}", c.status);
        assert!(!c.status.has(Condition::Cordoned));
        let node = &w.nodes[name];
        assert!(!node.cordoned, "the node is not even cordoned");
        drop(w);
        assert_eq!(fake.owned(name).len(), 1, "the VM is kept");
        assert!(fake.world().deletions.is_empty());
    }

    #[tokio::test]
    async fn deleting_the_claim_of_a_permanent_worker_is_refused_and_keeps_everything() {
        let fake = Fake::new();
        deleted_by_hand(&fake, "k8s-perm1", "permanent", "medium").await;
        let writes = fake.claim_writes();
        stays(&fake, "k8s-perm1", Phase::Ready).await;
        kept(&fake, "k8s-perm1");
        assert_eq!(
            fake.claim_writes(),
            writes + 1,
            "the refusal is written once"
        );
        let events = refusals(&fake, "k8s-perm1");
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].message.contains("permanent worker"), "{events:?}");
        assert_eq!(events[0].actor, "kubectl delete");
        let last_error = fake.world().claims["k8s-perm1"].status.last_error.clone();
        assert!(last_error.unwrap().contains("permanent worker"));
        // Nor does it count as on its way out: the pool does not replace it.
        assert!(!fake.world().claims["k8s-perm1"].planner_state().removing);
    }

    #[tokio::test]
    async fn a_forced_removal_of_a_permanent_worker_is_refused_too() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("k8s-perm2", "permanent", "medium"));
        assert_eq!(settle(&exec, "k8s-perm2").await, Phase::Ready);
        set_intent(&fake, "k8s-perm2", Intent::Remove { force: true });
        stays(&fake, "k8s-perm2", Phase::Ready).await;
        kept(&fake, "k8s-perm2");
    }

    #[tokio::test]
    async fn a_worker_with_a_protected_name_is_not_even_drained() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("control-plane-9", "burst", "small"));
        assert_eq!(settle(&exec, "control-plane-9").await, Phase::Ready);
        set_intent(&fake, "control-plane-9", Intent::Drain);
        stays(&fake, "control-plane-9", Phase::Ready).await;
        kept(&fake, "control-plane-9");
        let events = refusals(&fake, "control-plane-9");
        assert_eq!(events.len(), 1);
        assert!(
            events[0].message.contains("protected pattern"),
            "{events:?}"
        );
        assert_eq!(events[0].operation, "drain");

        // Kept after all: the refusal is dropped.
        set_intent(&fake, "control-plane-9", Intent::Keep);
        assert_eq!(settle(&exec, "control-plane-9").await, Phase::Ready);
        let status = fake.world().claims["control-plane-9"].status.clone();
        assert!(!status.has(Condition::Refused));
        assert_eq!(status.last_error, None);
    }

    #[tokio::test]
    async fn a_claim_of_a_pool_no_longer_configured_is_refused_as_unmanaged() {
        let fake = Fake::new();
        deleted_by_hand(&fake, "burst-0ld", "burst", "small").await;
        fake.world().claims.get_mut("burst-0ld").unwrap().spec.pool = "retired".into();
        stays(&fake, "burst-0ld", Phase::Ready).await;
        kept(&fake, "burst-0ld");
        assert!(
            refusals(&fake, "burst-0ld")[0]
                .message
                .contains("not managed")
        );
    }

    #[tokio::test]
    async fn the_pools_own_scale_down_of_a_permanent_worker_still_goes() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("k8s-perm3", "permanent", "medium"));
        assert_eq!(settle(&exec, "k8s-perm3").await, Phase::Ready);
        // The autoscaler's retire: an unforced removal through the spec.
        set_intent(&fake, "k8s-perm3", Intent::Remove { force: false });
        assert_eq!(settle(&exec, "k8s-perm3").await, Phase::Terminated);
        assert!(fake.owned("k8s-perm3").is_empty());
        assert!(refusals(&fake, "k8s-perm3").is_empty());
    }

    #[tokio::test]
    async fn a_deleted_permanent_claim_that_never_joined_is_cleaned_up() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.inject(
            "start",
            crate::ports::ProviderError::new(
                crate::ports::ProviderErrorKind::InsufficientCapacity,
                "no memory",
            ),
        );
        fake.put_claim(claim("k8s-perm4", "permanent", "medium"));
        assert_eq!(settle(&exec, "k8s-perm4").await, Phase::Failed);
        {
            let mut w = fake.world();
            let c = w.claims.get_mut("k8s-perm4").unwrap();
            c.deleting = true;
            c.spec.intent = Intent::Remove { force: false };
        }
        assert_eq!(settle(&exec, "k8s-perm4").await, Phase::Terminated);
        assert!(fake.owned("k8s-perm4").is_empty());
    }
}
