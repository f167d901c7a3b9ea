//! Cold spares through the executor (tests): a spare is made, installed
//! and parked with its node deleted and its VM stopped; activated, it
//! starts, rejoins and is labelled with its TTL counted from then; a
//! spare asked to go is removed from its parked state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tidepool_core::Phase;

use super::fixtures::{claim, clock, executor, set_intent, settle};
use crate::claim::{Condition, Intent};
use crate::testing::Fake;

fn spare(name: &str) -> crate::claim::Claim {
    let mut c = claim(name, "burst", "small");
    c.spec.intent = Intent::Spare;
    c.spec.ttl = Some(Duration::from_secs(4 * 3600));
    c
}

#[tokio::test]
async fn a_spare_is_installed_then_parked_without_node_or_running_vm() {
    let fake = Fake::new();
    let clock = clock();
    let exec = executor(&fake, &clock);
    fake.put_claim(spare("burst-sp4r1"));
    assert_eq!(settle(&exec, "burst-sp4r1").await, Phase::Spare);
    let w = fake.world();
    let c = &w.claims["burst-sp4r1"];
    assert!(c.status.has(Condition::NodeReady), "joined once");
    assert!(!c.status.has(Condition::Labelled));
    assert!(c.status.has(Condition::VmStopped));
    assert_eq!(c.status.expires_at, None, "no TTL before activation");
    assert!(!w.nodes.contains_key("burst-sp4r1"), "its node is deleted");
    let vms: Vec<_> = w
        .vms
        .values()
        .filter(|v| v.tags.contains(&"burst-sp4r1".into()))
        .collect();
    assert_eq!(vms.len(), 1);
    assert!(!vms[0].running, "its VM is stopped");
}

#[tokio::test]
async fn an_activated_spare_rejoins_without_a_new_clone_and_its_ttl_starts_then() {
    let fake = Fake::new();
    let clock = clock();
    let exec = executor(&fake, &clock);
    fake.put_claim(spare("burst-sp4r2"));
    assert_eq!(settle(&exec, "burst-sp4r2").await, Phase::Spare);
    let clones = fake.world().clones.len();
    let delivered = fake.calls("deliver");
    clock.advance(Duration::from_secs(3600));
    set_intent(&fake, "burst-sp4r2", Intent::Keep);
    assert_eq!(settle(&exec, "burst-sp4r2").await, Phase::Ready);
    assert_eq!(fake.calls("deliver"), delivered, "installed: no new config");
    let w = fake.world();
    assert_eq!(w.clones.len(), clones, "no second clone");
    let c = &w.claims["burst-sp4r2"];
    assert!(c.status.has(Condition::Labelled));
    let activated = exec.now();
    assert_eq!(c.status.provisioned_at, Some(activated));
    assert_eq!(
        c.status.expires_at,
        activated
            .checked_add(tidepool_core::jiff::SignedDuration::from_hours(4))
            .ok()
    );
    assert!(w.nodes["burst-sp4r2"].ready);
}

#[tokio::test]
async fn a_parked_spare_asked_to_go_is_removed_with_its_vm() {
    let fake = Fake::new();
    let clock = clock();
    let exec = executor(&fake, &clock);
    fake.put_claim(spare("burst-sp4r3"));
    assert_eq!(settle(&exec, "burst-sp4r3").await, Phase::Spare);
    set_intent(&fake, "burst-sp4r3", Intent::Remove { force: false });
    assert_eq!(settle(&exec, "burst-sp4r3").await, Phase::Terminated);
    assert!(fake.owned("burst-sp4r3").is_empty());
}

#[tokio::test]
async fn a_spare_that_cannot_start_on_activation_fails_at_its_start() {
    let fake = Fake::new();
    let clock = clock();
    let exec = executor(&fake, &clock);
    fake.put_claim(spare("burst-sp4r4"));
    assert_eq!(settle(&exec, "burst-sp4r4").await, Phase::Spare);
    fake.inject(
        "start",
        crate::ports::ProviderError::new(
            crate::ports::ProviderErrorKind::InsufficientCapacity,
            "not enough memory",
        ),
    );
    set_intent(&fake, "burst-sp4r4", Intent::Keep);
    assert_eq!(settle(&exec, "burst-sp4r4").await, Phase::Failed);
    let c = &fake.world().claims["burst-sp4r4"];
    assert!(
        matches!(&c.status.lifecycle, tidepool_core::Lifecycle::Failed { step, .. } if *step == tidepool_core::Step::Start),
        "{:?}",
        c.status.lifecycle
    );
}
