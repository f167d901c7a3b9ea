//! The executor against in-memory fakes: the happy path, a kill at every
//! step (before and after its record is written) followed by a restart,
//! VMID reuse by a foreign VM, and failures that must not leak a VM.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidepool_controller::Intent;
use tidepool_controller::executor::{KillHook, Moment};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{
    Claim, ClaimSpec, ClaimStatus, Executor, ExecutorError, ProviderError, ProviderErrorKind,
};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;
use tidepool_core::{Phase, Step};

type Exec = Executor<Fake, Fake, Fake, Fake>;

fn executor(fake: &Fake) -> Exec {
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let now = Arc::new(ManualClock::at(
        Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        now,
    )
}

fn claim(name: &str) -> Claim {
    Claim {
        name: name.into(),
        spec: ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: Some(Duration::from_secs(4 * 3600)),
            requested_by: "test".into(),
            reason: "crash safety".into(),
            intent: Intent::Keep,
            host: None,
        },
        status: ClaimStatus::default(),
        finalizer: true,
        generation: None,
        deleting: false,
    }
}

async fn run(exec: &Exec, name: &str) -> Result<Phase, ExecutorError> {
    exec.run_until_idle(name, Duration::from_secs(5), Duration::from_millis(1))
        .await
}

fn request_removal(fake: &Fake, name: &str, force: bool) {
    let mut w = fake.world();
    w.claims.get_mut(name).unwrap().spec.intent = Intent::Remove { force };
}

const PROVISION_STEPS: [Step; 8] = [
    Step::AllocateVmid,
    Step::Clone,
    Step::Configure,
    Step::Start,
    Step::WaitForAddress,
    Step::DeliverConfig,
    Step::WaitForNode,
    Step::Label,
];

const REMOVAL_STEPS: [Step; 5] = [
    Step::Cordon,
    Step::Drain,
    Step::DeleteNode,
    Step::ShutdownOs,
    Step::DeleteVm,
];

fn kill_at(step: Step, moment: Moment) -> (KillHook, Arc<AtomicBool>) {
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let hook: KillHook = Arc::new(move |s, m| {
        if s == step && m == moment && !f.swap(true, Ordering::SeqCst) {
            return false;
        }
        true
    });
    (hook, fired)
}

#[tokio::test]
async fn a_claim_is_provisioned_to_ready_and_removed_to_nothing() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-aaaaa"));
    let exec = executor(&fake);
    assert_eq!(run(&exec, "burst-aaaaa").await.unwrap(), Phase::Ready);
    let owned = fake.owned("burst-aaaaa");
    assert_eq!(owned.len(), 1);
    assert!(owned[0].running);
    assert_eq!(owned[0].tags, ["tidepool", "burst", "burst-aaaaa"]);
    let node = fake.world().nodes["burst-aaaaa"].clone();
    assert_eq!(node.labels["node-pool"], "burst");
    assert_eq!(node.labels["ttl"], "1767240000");
    let status = fake.world().claims["burst-aaaaa"].status.clone();
    assert_eq!(
        status.expires_at,
        Some(Timestamp::from_second(1_767_240_000).unwrap())
    );

    request_removal(&fake, "burst-aaaaa", false);
    assert_eq!(run(&exec, "burst-aaaaa").await.unwrap(), Phase::Terminated);
    assert!(fake.owned("burst-aaaaa").is_empty());
    assert!(fake.world().nodes.is_empty());
    assert!(
        fake.world().claims.is_empty(),
        "finalizer removed, record gone"
    );
}

#[tokio::test]
async fn a_kill_at_any_provisioning_step_converges_on_exactly_one_vm() {
    let mut points = 0;
    for step in PROVISION_STEPS.iter() {
        for moment in [Moment::AfterEffect, Moment::AfterRecord] {
            let fake = Fake::new();
            fake.add_foreign_vm(1251, "pve-01");
            fake.put_claim(claim("burst-kill1"));
            let (hook, fired) = kill_at(*step, moment);
            let first = executor(&fake).with_kill_hook(hook);
            let died = run(&first, "burst-kill1").await;
            assert!(
                matches!(died, Err(ExecutorError::Killed { .. })),
                "{step} {moment:?}: expected a kill, got {died:?}"
            );
            assert!(fired.load(Ordering::SeqCst));
            points += 1;
            // A new process with no memory of the old one.
            let second = executor(&fake);
            assert_eq!(
                run(&second, "burst-kill1").await.unwrap(),
                Phase::Ready,
                "{step} {moment:?}"
            );
            let owned = fake.owned("burst-kill1");
            assert_eq!(owned.len(), 1, "{step} {moment:?}: {owned:?}");
            assert_eq!(
                fake.world().clones.len(),
                1,
                "{step} {moment:?}: cloned twice"
            );
            assert!(fake.world().vms.contains_key(&1251), "foreign VM untouched");
        }
    }
    assert_eq!(points, 16);
}

#[tokio::test]
async fn a_kill_at_any_removal_step_converges_on_no_vm() {
    let mut points = 0;
    for step in REMOVAL_STEPS {
        for moment in [Moment::AfterEffect, Moment::AfterRecord] {
            let fake = Fake::new();
            fake.add_foreign_vm(1251, "pve-01");
            fake.put_claim(claim("burst-kill2"));
            assert_eq!(
                run(&executor(&fake), "burst-kill2").await.unwrap(),
                Phase::Ready
            );
            request_removal(&fake, "burst-kill2", false);
            let (hook, _) = kill_at(step, moment);
            let died = run(&executor(&fake).with_kill_hook(hook), "burst-kill2").await;
            assert!(
                matches!(died, Err(ExecutorError::Killed { .. })),
                "{step} {moment:?}: {died:?}"
            );
            points += 1;
            assert_eq!(
                run(&executor(&fake), "burst-kill2").await.unwrap(),
                Phase::Terminated,
                "{step} {moment:?}"
            );
            assert!(fake.owned("burst-kill2").is_empty(), "{step} {moment:?}");
            assert!(
                fake.world().nodes.is_empty(),
                "{step} {moment:?}: node left behind"
            );
            assert!(
                fake.world().vms.contains_key(&1251),
                "{step} {moment:?}: foreign VM touched"
            );
            assert_eq!(fake.world().deletions, [1250], "{step} {moment:?}");
        }
    }
    assert_eq!(points, 10);
}

#[tokio::test]
async fn a_stale_destroy_never_touches_a_foreign_vm_that_reused_the_vmid() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-reuse"));
    let exec = executor(&fake);
    assert_eq!(run(&exec, "burst-reuse").await.unwrap(), Phase::Ready);
    // Our VM disappears behind Tidepool's back and a foreign VM takes its VMID.
    fake.world().vms.remove(&1250);
    fake.add_foreign_vm(1250, "pve-01");
    request_removal(&fake, "burst-reuse", true);
    assert_eq!(run(&exec, "burst-reuse").await.unwrap(), Phase::Terminated);
    let w = fake.world();
    assert!(w.vms.contains_key(&1250), "the foreign VM must survive");
    assert!(w.vms[&1250].running, "and keep running");
    assert!(w.deletions.is_empty());
}

#[tokio::test]
async fn a_reserved_vmid_taken_before_the_clone_is_replaced() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-race1"));
    let (hook, _) = kill_at(Step::AllocateVmid, Moment::AfterRecord);
    let _ = run(&executor(&fake).with_kill_hook(hook), "burst-race1").await;
    fake.add_foreign_vm(1250, "pve-02");
    assert_eq!(
        run(&executor(&fake), "burst-race1").await.unwrap(),
        Phase::Ready
    );
    let owned = fake.owned("burst-race1");
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].identity.vmid, 1251);
    assert_eq!(fake.world().vms[&1250].description, "someone else's");
}

#[tokio::test]
async fn transient_errors_are_retried_and_recorded_until_they_pass() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-flaky"));
    for _ in 0..3 {
        fake.inject(
            "clone",
            ProviderError::new(ProviderErrorKind::Transient, "HTTP 503 from pve-01"),
        );
    }
    let exec = executor(&fake);
    assert_eq!(
        exec.step("burst-flaky").await.unwrap(),
        tidepool_controller::Progress::Advanced(Step::AllocateVmid)
    );
    // The clone request is recorded before it is made.
    assert_eq!(
        exec.step("burst-flaky").await.unwrap(),
        tidepool_controller::Progress::Advanced(Step::Clone)
    );
    let err = exec.step("burst-flaky").await.unwrap_err();
    assert_eq!(err.category(), "transient");
    assert_eq!(
        fake.world().claims["burst-flaky"]
            .status
            .last_error
            .as_deref(),
        Some("clone: HTTP 503 from pve-01")
    );
    assert_eq!(run(&exec, "burst-flaky").await.unwrap(), Phase::Ready);
    assert_eq!(fake.world().claims["burst-flaky"].status.last_error, None);
    assert_eq!(fake.world().clones.len(), 1);
}

#[tokio::test]
async fn a_start_without_capacity_fails_with_the_reason_and_cleanup_removes_the_vm() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-full1"));
    fake.inject(
        "start",
        ProviderError::new(
            ProviderErrorKind::InsufficientCapacity,
            "host pve-01 lacks 8192 MiB of memory",
        ),
    );
    let exec = executor(&fake);
    assert_eq!(run(&exec, "burst-full1").await.unwrap(), Phase::Failed);
    let status = fake.world().claims["burst-full1"].status.clone();
    assert_eq!(
        status.lifecycle.to_string(),
        "Failed at start: cannot start VM 1250: host pve-01 lacks 8192 MiB of memory"
    );
    assert_eq!(
        fake.owned("burst-full1").len(),
        1,
        "a failed claim still owns its VM"
    );
    request_removal(&fake, "burst-full1", false);
    assert_eq!(run(&exec, "burst-full1").await.unwrap(), Phase::Terminated);
    assert!(fake.owned("burst-full1").is_empty());
}

#[tokio::test]
async fn a_drain_request_cordons_and_drains_but_keeps_the_vm_until_removal() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-drain"));
    let exec = executor(&fake);
    assert_eq!(run(&exec, "burst-drain").await.unwrap(), Phase::Ready);
    fake.world()
        .claims
        .get_mut("burst-drain")
        .unwrap()
        .spec
        .intent = Intent::Drain;
    assert_eq!(run(&exec, "burst-drain").await.unwrap(), Phase::Draining);
    assert!(fake.world().nodes["burst-drain"].cordoned);
    assert_eq!(fake.owned("burst-drain").len(), 1);
    request_removal(&fake, "burst-drain", false);
    assert_eq!(run(&exec, "burst-drain").await.unwrap(), Phase::Terminated);
    assert!(fake.owned("burst-drain").is_empty());
}

#[tokio::test]
async fn a_drain_blocked_by_a_budget_waits_and_then_proceeds() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-pdb01"));
    let exec = executor(&fake);
    assert_eq!(run(&exec, "burst-pdb01").await.unwrap(), Phase::Ready);
    fake.world().drain_blocker =
        Some("pod apps/immich-0 is protected by PodDisruptionBudget apps/immich".into());
    request_removal(&fake, "burst-pdb01", false);
    let mut waited = None;
    for _ in 0..5 {
        if let tidepool_controller::Progress::Waiting { step, why, .. } =
            exec.step("burst-pdb01").await.unwrap()
        {
            waited = Some((step, why));
            break;
        }
    }
    let (step, why) = waited.expect("the drain waits");
    assert_eq!(step, Step::Drain);
    assert!(why.contains("PodDisruptionBudget apps/immich"));
    assert_eq!(
        fake.owned("burst-pdb01").len(),
        1,
        "nothing removed while blocked"
    );
    fake.world().drain_blocker = None;
    assert_eq!(run(&exec, "burst-pdb01").await.unwrap(), Phase::Terminated);
}
