//! Rolling upgrades over the fakes, pass by pass on a clock the test
//! moves: a pool upgraded one worker at a time in 20 % batches, each
//! worker asked once; a rollback that pauses the rollout with its reason,
//! then resume and abort; a drain blocked past the pool's timeout; a new
//! leader that carries a batch on without asking for an upgrade again;
//! control-plane nodes left alone; a dry run that writes nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::Executor;
use tidepool_controller::rollout::{RolloutError, Rollouts};
use tidepool_controller::testing::{FAKE_OS_VERSION, Fake, ManualClock};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;
use tidepool_core::rollout::{MaxUnavailable, Rollout, RolloutState, WorkerStep};

const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.11.0";
const TARGET: &str = "v1.11.0";

type FakeExec = Executor<Fake, Fake, Fake, Fake>;

struct World {
    fake: Fake,
    clock: ManualClock,
    exec: Arc<FakeExec>,
    rollouts: Rollouts<Fake, Fake, Fake, Fake>,
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
    let rollouts = Rollouts::new(exec.clone(), Arc::new(()));
    World {
        fake,
        clock,
        exec,
        rollouts,
    }
}

impl World {
    /// Provisions `count` Ready workers of `pool`.
    async fn workers(&self, pool: &str, count: u32) -> Vec<String> {
        tidepool_controller::testing::ready_workers(&self.exec, pool, count, "rollout test").await
    }

    /// One pass a minute later.
    async fn pass(&self) {
        self.clock.advance(Duration::from_secs(60));
        self.rollouts.pass().await.unwrap();
    }

    /// Passes until the pool's rollout stops running (at most `max`).
    async fn until_stopped(&self, pool: &str, max: usize) -> Rollout {
        for _ in 0..max {
            self.pass().await;
            let r = self.rollout(pool);
            if r.state != RolloutState::Running {
                return r;
            }
        }
        panic!("the rollout of {pool} still runs: {:?}", self.rollout(pool));
    }

    fn rollout(&self, pool: &str) -> Rollout {
        self.fake.world().pool_records[pool]
            .1
            .rollout
            .clone()
            .unwrap()
    }

    fn upgrades_of(&self, name: &str) -> usize {
        self.fake
            .guest_ops_of(name)
            .iter()
            .filter(|op| op.starts_with("upgrade "))
            .count()
    }

    fn version_of(&self, name: &str) -> String {
        let w = self.fake.world();
        let ip = w.claims[name].status.ip.unwrap();
        w.guest
            .versions
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| FAKE_OS_VERSION.to_owned())
    }

    fn cordoned(&self, name: &str) -> bool {
        self.fake.world().nodes[name].cordoned
    }

    async fn start(&self, pool: &str) {
        self.rollouts
            .start(pool, IMAGE, MaxUnavailable::default(), "cli:test")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_pool_of_five_is_upgraded_one_worker_at_a_time_each_asked_once() {
    let w = world();
    let names = w.workers("permanent", 5).await;
    w.start("permanent").await;
    let mut in_flight_max = 0;
    for _ in 0..40 {
        w.pass().await;
        let r = w.rollout("permanent");
        let cordoned = names.iter().filter(|n| w.cordoned(n)).count();
        in_flight_max = in_flight_max.max(cordoned);
        assert!(
            r.batches.iter().filter(|b| !b.is_finished()).count() <= 1,
            "never two batches at once"
        );
        if r.state != RolloutState::Running {
            break;
        }
    }
    let r = w.rollout("permanent");
    assert_eq!(r.state, RolloutState::Done, "{r:?}");
    assert_eq!(r.batches.len(), 5, "20 % of five: five batches of one");
    assert_eq!(in_flight_max, 1, "one worker unavailable at a time");
    for n in &names {
        assert_eq!(w.upgrades_of(n), 1, "{n} asked once");
        assert_eq!(w.version_of(n), TARGET);
        assert!(!w.cordoned(n), "{n} uncordoned");
        assert_eq!(
            w.fake.world().claims[n].status.lifecycle.phase(),
            tidepool_core::Phase::Ready,
            "a permanent worker is upgraded in place, never replaced"
        );
    }
    assert!(w.fake.world().deletions.is_empty());
    let events = w.fake.world().node_events.clone();
    assert_eq!(
        events.iter().filter(|(_, r, _)| r == "Upgraded").count(),
        5,
        "an Event per node: {events:?}"
    );
}

#[tokio::test]
async fn a_rolled_back_upgrade_pauses_the_rollout_with_its_reason_until_resumed_or_aborted() {
    let w = world();
    let names = w.workers("burst", 3).await;
    let first = names[0].clone();
    let ip = w.fake.world().claims[&first].status.ip.unwrap();
    w.fake.world().guest.upgrade_rolls_back.insert(ip);
    w.start("burst").await;
    let r = w.until_stopped("burst", 10).await;
    let RolloutState::Paused { reason } = &r.state else {
        panic!("paused: {r:?}")
    };
    assert!(reason.contains(&first), "{reason}");
    assert!(reason.contains("rolled back"), "{reason}");
    assert_eq!(
        w.version_of(&first),
        FAKE_OS_VERSION,
        "back on the old version"
    );
    assert!(!w.cordoned(&first), "the rolled-back node takes pods again");
    let last = r.batches.last().unwrap();
    assert!(
        matches!(last.workers[&first], WorkerStep::Failed { .. }),
        "no batch after the failed one: {r:?}"
    );
    // Paused: further passes do nothing.
    w.pass().await;
    assert_eq!(w.upgrades_of(&first), 1);

    // Resumed once the image is fixed: the failed worker is chosen again.
    w.fake.world().guest.upgrade_rolls_back.clear();
    w.rollouts.resume("burst").await.unwrap();
    assert!(w.rollouts.resume("burst").await.is_err(), "not paused");
    let r = w.until_stopped("burst", 30).await;
    assert_eq!(r.state, RolloutState::Done, "{r:?}");
    assert_eq!(w.upgrades_of(&first), 2);
    for n in &names {
        assert_eq!(w.version_of(n), TARGET);
    }

    // A new rollout aborted mid-batch: its nodes uncordoned, nothing more.
    w.rollouts
        .start(
            "burst",
            "ghcr.io/siderolabs/installer:v1.12.0",
            MaxUnavailable::Count(1),
            "t",
        )
        .await
        .unwrap();
    let refused = w
        .rollouts
        .start("burst", IMAGE, MaxUnavailable::Count(1), "t")
        .await;
    assert!(
        matches!(refused, Err(RolloutError::Refused(_))),
        "{refused:?}"
    );
    w.fake.world().drain_blocker = Some("budget web-pdb".into());
    w.pass().await;
    assert_eq!(names.iter().filter(|n| w.cordoned(n)).count(), 1);
    let r = w.rollouts.abort("burst").await.unwrap();
    assert_eq!(r.state, RolloutState::Aborted);
    assert!(names.iter().all(|n| !w.cordoned(n)));
    w.pass().await;
    assert!(w.rollouts.abort("burst").await.is_err());
}

#[tokio::test]
async fn a_drain_blocked_past_the_pools_timeout_fails_the_batch() {
    let w = world();
    let names = w.workers("burst", 2).await;
    w.fake.world().drain_blocker = Some("budget web-pdb allows no disruption".into());
    w.start("burst").await;
    // The burst pool's drain timeout is minutes; a pass a minute.
    let r = w.until_stopped("burst", 30).await;
    let RolloutState::Paused { reason } = &r.state else {
        panic!("paused: {r:?}")
    };
    assert!(reason.contains("web-pdb"), "{reason}");
    for n in &names {
        assert_eq!(w.upgrades_of(n), 0, "never upgraded undrained");
        assert!(!w.cordoned(n));
    }
}

#[tokio::test]
async fn a_new_leader_carries_the_batch_on_without_asking_for_the_upgrade_again() {
    let w = world();
    let names = w.workers("permanent", 5).await;
    w.start("permanent").await;
    // Two passes: the batch starts and drains, then its upgrade is asked.
    w.pass().await;
    let r = w.rollout("permanent");
    let first = r.batches[0].workers.keys().next().unwrap().clone();
    assert!(matches!(
        r.batches[0].workers[&first],
        WorkerStep::Upgrading { .. }
    ));
    assert_eq!(w.upgrades_of(&first), 1);

    // The leader is gone; another process takes over the same world.
    let other = w.fake.another_process();
    let exec = Arc::new(Executor::new(
        other.clone(),
        other.clone(),
        other.clone(),
        other.clone(),
        w.exec.config().clone(),
        Arc::new(w.clock.clone()),
    ));
    let successor = Rollouts::new(exec, Arc::new(()));
    for _ in 0..40 {
        w.clock.advance(Duration::from_secs(60));
        successor.pass().await.unwrap();
        if w.rollout("permanent").state != RolloutState::Running {
            break;
        }
    }
    assert_eq!(w.rollout("permanent").state, RolloutState::Done);
    for n in &names {
        assert_eq!(w.upgrades_of(n), 1, "{n} asked once, across both leaders");
        assert_eq!(w.version_of(n), TARGET);
    }
}

#[tokio::test]
async fn control_plane_nodes_are_never_in_a_batch_and_a_dry_run_writes_nothing() {
    let w = world();
    let names = w.workers("permanent", 3).await;
    w.fake
        .world()
        .nodes
        .get_mut(&names[0])
        .unwrap()
        .labels
        .insert(
            "node-role.kubernetes.io/control-plane".into(),
            String::new(),
        );
    let plan = w
        .rollouts
        .plan("permanent", IMAGE, MaxUnavailable::Count(5))
        .await
        .unwrap();
    assert_eq!(plan.version, TARGET);
    let mut others = vec![names[1].clone(), names[2].clone()];
    others.sort();
    assert_eq!(plan.batches, [others]);
    assert_eq!(plan.workers.len(), 2);
    assert!(
        !w.fake.world().pool_records.contains_key("permanent")
            || w.fake.world().pool_records["permanent"].1.rollout.is_none(),
        "a plan writes nothing"
    );
    assert!(matches!(
        w.rollouts
            .plan("nope", IMAGE, MaxUnavailable::Count(1))
            .await,
        Err(RolloutError::UnknownPool(_))
    ));
    assert!(
        w.rollouts
            .plan("permanent", "installer", MaxUnavailable::Count(1))
            .await
            .is_err()
    );

    w.start("permanent").await;
    let r = w.until_stopped("permanent", 20).await;
    assert_eq!(r.state, RolloutState::Done);
    assert_eq!(
        w.upgrades_of(&names[0]),
        0,
        "the control plane is not touched"
    );
    assert!(!w.cordoned(&names[0]));
    let status = w.rollouts.status("permanent").await.unwrap().unwrap();
    assert_eq!(status.counts.done, 2);
    assert_eq!(status.counts.pending, 0);
}
