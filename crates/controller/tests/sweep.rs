//! Reconciling both ways (spec §6, issue 11 hole 9): orphan VMs carrying
//! our marker are reported and, after the grace period, removed through
//! the identity check; VMs without our marker are never touched; a Ready
//! worker whose VM vanished fails with `VmGone` and is replaced (or kept
//! and escalated when permanent); a VM whose UUID drifted is kept, and so
//! is its claim.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::ports::{ProviderError, ProviderErrorKind};
use tidepool_controller::sweep::{ORPHAN_GRACE, Sweeper};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{Claim, ClaimSpec, Executor, Intent, Progress};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;
use tidepool_core::{Lifecycle, Phase, Step};

type FakeExecutor = Executor<Fake, Fake, Fake, Fake>;

struct World {
    fake: Fake,
    clock: ManualClock,
    exec: Arc<FakeExecutor>,
    sweeper: Sweeper<Fake, Fake, Fake, Fake>,
}

fn world() -> World {
    let fake = Fake::new();
    let clock = ManualClock::at(Timestamp::from_second(1_767_225_600).unwrap());
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        Arc::new(config::load(EXAMPLE).unwrap()),
        Arc::new(clock.clone()),
    ));
    let sweeper = Sweeper::new(exec.clone(), ORPHAN_GRACE);
    World {
        fake,
        clock,
        exec,
        sweeper,
    }
}

fn claim(name: &str, pool: &str, size: &str) -> Claim {
    Claim::new(
        name,
        ClaimSpec {
            pool: pool.into(),
            size: size.into(),
            ttl: None,
            requested_by: "test".into(),
            reason: "sweep test".into(),
            intent: Intent::Keep,
            host: None,
        },
    )
}

async fn settle(w: &World, name: &str) -> Phase {
    w.exec
        .run_until_idle(name, Duration::from_secs(5), Duration::from_millis(1))
        .await
        .unwrap()
}

/// A Ready worker; its VMID.
async fn ready(w: &World, name: &str, pool: &str, size: &str) -> u32 {
    w.fake.put_claim(claim(name, pool, size));
    assert_eq!(settle(w, name).await, Phase::Ready);
    w.fake.world().claims[name].status.vm.clone().unwrap().vmid
}

fn events(w: &World, claim: &str, operation: &str) -> usize {
    w.fake
        .world()
        .audit
        .iter()
        .filter(|(c, e)| c == claim && e.operation == operation)
        .count()
}

#[tokio::test]
async fn an_orphan_is_reported_then_removed_once_its_grace_period_is_over() {
    let w = world();
    let vmid = ready(&w, "burst-0rph", "burst", "small").await;
    // The record went without its finalizer (a claim deleted by hand).
    w.fake.world().claims.remove("burst-0rph");

    let report = w.sweeper.pass().await.unwrap();
    assert_eq!(report.orphans.len(), 1);
    assert_eq!(report.orphans[0].claim, "burst-0rph");
    assert!(report.removed.is_empty(), "a clone in flight is protected");
    assert_eq!(events(&w, "burst-0rph", "orphan-vm"), 1);

    w.clock.advance(Duration::from_secs(300));
    let report = w.sweeper.pass().await.unwrap();
    assert!(report.removed.is_empty());
    assert!(w.fake.world().vms.contains_key(&vmid));
    assert_eq!(events(&w, "burst-0rph", "orphan-vm"), 1, "reported once");

    w.clock.advance(Duration::from_secs(301));
    let report = w.sweeper.pass().await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert!(!w.fake.world().vms.contains_key(&vmid));
    assert_eq!(w.fake.calls("stop"), 1, "stopped, then deleted");
    assert_eq!(events(&w, "burst-0rph", "remove-orphan-vm"), 1);
    assert!(w.sweeper.pass().await.unwrap().orphans.is_empty());
}

#[tokio::test]
async fn a_vm_without_our_marker_is_never_touched() {
    let w = world();
    w.fake.add_foreign_vm(1260, "pve-01");
    for _ in 0..3 {
        let report = w.sweeper.pass().await.unwrap();
        assert!(report.orphans.is_empty());
        w.clock.advance(ORPHAN_GRACE * 2);
    }
    assert!(w.fake.world().vms.contains_key(&1260));
    assert_eq!(w.fake.calls("stop") + w.fake.calls("delete"), 0);
}

#[tokio::test]
async fn an_orphan_whose_claim_returns_or_whose_uuid_changes_is_not_removed_on_time() {
    let w = world();
    let vmid = ready(&w, "burst-b4ck", "burst", "small").await;
    let record = w.fake.world().claims.remove("burst-b4ck").unwrap();
    w.sweeper.pass().await.unwrap();
    w.clock.advance(ORPHAN_GRACE);
    // The record is back (restored) before the next pass: no orphan.
    w.fake.put_claim(record);
    let report = w.sweeper.pass().await.unwrap();
    assert!(report.orphans.is_empty() && report.removed.is_empty());
    assert!(w.fake.world().vms.contains_key(&vmid));

    // Gone again; seen; then another VM (another UUID) holds the VMID with
    // the same marker: it is a new orphan, with a grace period of its own.
    w.fake.world().claims.remove("burst-b4ck");
    w.sweeper.pass().await.unwrap();
    w.clock.advance(ORPHAN_GRACE - Duration::from_secs(1));
    w.fake.world().vms.get_mut(&vmid).unwrap().identity.uuid = "another-0001".into();
    w.clock.advance(Duration::from_secs(2));
    let report = w.sweeper.pass().await.unwrap();
    assert_eq!(report.orphans.len(), 1);
    assert!(report.removed.is_empty());
    assert!(w.fake.world().vms.contains_key(&vmid));
    assert_eq!(events(&w, "burst-b4ck", "orphan-vm"), 3);
}

#[tokio::test]
async fn a_ready_burst_worker_whose_vm_vanished_fails_with_vm_gone_and_goes() {
    let w = world();
    let vmid = ready(&w, "burst-g0ne", "burst", "small").await;
    w.fake.world().vms.remove(&vmid);
    w.fake.world().nodes.get_mut("burst-g0ne").unwrap().ready = false;

    let report = w.sweeper.pass().await.unwrap();
    assert_eq!(report.vm_gone, ["burst-g0ne"]);
    let c = w.fake.world().claims["burst-g0ne"].clone();
    match &c.status.lifecycle {
        Lifecycle::Failed { step, reason } => {
            assert_eq!(*step, Step::Start);
            assert!(reason.starts_with("VmGone: VM 1250"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.spec.intent, Intent::Remove { force: true });
    assert_eq!(events(&w, "burst-g0ne", "vm-gone"), 1);
    assert!(w.sweeper.pass().await.unwrap().vm_gone.is_empty(), "once");

    // The executor cleans the dead worker up: node and record go, so the
    // pool no longer counts it and provisions anew as needed.
    assert_eq!(settle(&w, "burst-g0ne").await, Phase::Terminated);
    assert!(!w.fake.world().claims.contains_key("burst-g0ne"));
    assert!(!w.fake.world().nodes.contains_key("burst-g0ne"));
}

#[tokio::test]
async fn a_permanent_worker_whose_vm_vanished_is_kept_failed_and_escalated() {
    let w = world();
    let vmid = ready(&w, "k8s-perm5", "permanent", "medium").await;
    w.fake.world().vms.remove(&vmid);
    let report = w.sweeper.pass().await.unwrap();
    assert_eq!(report.vm_gone, ["k8s-perm5"]);
    let c = w.fake.world().claims["k8s-perm5"].clone();
    assert_eq!(c.phase(), Phase::Failed);
    assert_eq!(c.spec.intent, Intent::Keep);
    assert_eq!(settle(&w, "k8s-perm5").await, Phase::Failed);
    assert!(w.fake.world().claims["k8s-perm5"].finalizer);
    let audit = w.fake.world().audit.clone();
    assert!(
        audit
            .iter()
            .any(|(c, e)| c == "k8s-perm5" && e.message.contains("permanent worker is kept")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_vm_whose_uuid_drifted_is_reported_once_and_kept_with_its_claim() {
    let w = world();
    let vmid = ready(&w, "burst-dr1ft", "burst", "small").await;
    w.fake.world().vms.get_mut(&vmid).unwrap().identity.uuid = "restored-0001".into();
    for _ in 0..3 {
        let report = w.sweeper.pass().await.unwrap();
        assert_eq!(report.drifted, ["burst-dr1ft"]);
        assert!(report.vm_gone.is_empty() && report.orphans.is_empty());
    }
    assert_eq!(events(&w, "burst-dr1ft", "vm-drifted"), 1);

    // Asked to go, the worker's node goes but the drifted VM stays, and
    // the claim keeps its finalizer.
    w.fake
        .world()
        .claims
        .get_mut("burst-dr1ft")
        .unwrap()
        .spec
        .intent = Intent::Remove { force: true };
    for _ in 0..20 {
        let _ = w.exec.step("burst-dr1ft").await;
    }
    let c = w.fake.world().claims["burst-dr1ft"].clone();
    assert!(c.finalizer);
    assert!(
        matches!(&c.status.lifecycle, Lifecycle::Failed { step: Step::DeleteVm, reason } if reason.contains("restored-0001")),
        "{:?}",
        c.status.lifecycle
    );
    assert!(w.fake.world().vms.contains_key(&vmid));
    assert!(w.fake.world().deletions.is_empty());
}

#[tokio::test]
async fn a_claim_deleted_before_it_had_its_finalizer_makes_no_vm() {
    let w = world();
    let mut c = claim("burst-n0fin", "burst", "small");
    c.finalizer = false;
    w.fake.put_claim(c);
    // Deleted (gone from the store) between the read and the finalizer.
    w.fake.inject(
        "add_finalizer",
        ProviderError::new(ProviderErrorKind::NotFound, "claim burst-n0fin"),
    );
    assert_eq!(
        w.exec.step("burst-n0fin").await.unwrap(),
        Progress::Idle(Phase::Terminated)
    );
    assert!(w.fake.world().clones.is_empty());
}
