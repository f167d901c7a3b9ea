//! The health monitor over the fakes, pass by pass on a clock the test
//! moves: each row of spec §7 carried out in order of escalation and
//! recorded on the claim, dry run, a permanent worker escalated and never
//! destroyed, the 20 % brake, and a failover in the middle of a window
//! that keeps it and does not repeat the repair in flight.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::Executor;
use tidepool_controller::claim::Intent;
use tidepool_controller::health::Monitor;
use tidepool_controller::ports::GuestService;
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_core::config::{self, Config, EXAMPLE};
use tidepool_core::health::{Action, Outcome, Problem};
use tidepool_core::jiff::Timestamp;

type FakeExec = Executor<Fake, Fake, Fake, Fake>;

struct World {
    fake: Fake,
    clock: ManualClock,
    exec: Arc<FakeExec>,
    monitor: Monitor<Fake, Fake, Fake, Fake>,
}

fn example_with(edit: impl FnOnce(&mut Config)) -> Arc<Config> {
    let mut c = config::load(EXAMPLE).unwrap();
    edit(&mut c);
    Arc::new(c)
}

fn world(config: Arc<Config>) -> World {
    let fake = Fake::new();
    let clock = ManualClock::at(Timestamp::from_second(1_767_225_600).unwrap());
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        Arc::new(clock.clone()),
    ));
    let monitor = Monitor::new(exec.clone(), Arc::new(())).with_services_floor(Duration::ZERO);
    World {
        fake,
        clock,
        exec,
        monitor,
    }
}

impl World {
    /// Provisions `count` Ready workers of `pool`.
    async fn workers(&self, pool: &str, count: u32) -> Vec<String> {
        tidepool_controller::testing::ready_workers(&self.exec, pool, count, "health test").await
    }

    fn minutes(&self, m: u64) {
        self.clock.advance(Duration::from_secs(m * 60));
    }

    fn now(&self) -> Timestamp {
        self.exec.now()
    }

    /// The node of `name` reports `problem` from now on.
    fn falls_ill(&self, name: &str, problem: Problem) {
        let now = self.now();
        let mut w = self.fake.world();
        let node = w.nodes.get_mut(name).unwrap();
        if problem == Problem::NotReady {
            node.ready = false;
        }
        node.problems.insert(problem, now);
    }

    /// The guest operation that heals `name`'s machine.
    fn healed_by(&self, name: &str, op: &str) {
        let mut w = self.fake.world();
        let ip = w.claims[name].status.ip.unwrap();
        w.guest.heals.insert(ip, op.to_owned());
    }

    async fn pass(&self) {
        self.monitor.pass().await.unwrap();
    }

    /// Passes once a minute for `m` minutes.
    async fn pass_minutes(&self, m: u64) {
        for _ in 0..m {
            self.minutes(1);
            self.pass().await;
        }
    }

    fn health(&self, name: &str) -> tidepool_core::health::HealthRecord {
        self.fake.world().claims[name].status.health.clone()
    }

    fn events(&self, name: &str, reason: &str) -> Vec<String> {
        self.fake
            .world()
            .node_events
            .iter()
            .filter(|(n, r, _)| n == name && r == reason)
            .map(|(_, _, m)| m.clone())
            .collect()
    }
}

#[tokio::test]
async fn a_not_ready_worker_climbs_the_ladder_restart_reboot_replace() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.falls_ill(sick, Problem::NotReady);
    w.pass().await;
    assert_eq!(w.health(sick).problems.len(), 1, "the window is recorded");
    w.pass_minutes(4).await;
    assert!(w.fake.guest_ops_of(sick).is_empty(), "watched for 5 min");
    w.pass_minutes(1).await;
    assert_eq!(w.fake.guest_ops_of(sick), ["restart kubelet"]);
    w.pass_minutes(5).await;
    assert_eq!(w.fake.guest_ops_of(sick), ["restart kubelet", "reboot"]);
    w.pass_minutes(9).await;
    assert_eq!(w.fake.guest_ops_of(sick), ["restart kubelet", "reboot"]);
    w.pass_minutes(1).await;
    // The example's burst pool allows replacing: a new worker, and the sick one goes.
    let claims = w.fake.world().claims.clone();
    assert_eq!(claims.len(), 2, "a replacement was provisioned");
    assert_eq!(claims[sick].spec.intent, Intent::Remove { force: true });
    let last = w.health(sick).last_repair.unwrap();
    assert_eq!(
        (last.action, last.outcome),
        (Action::Replace, Some(Outcome::Done))
    );
    assert_eq!(w.health(sick).repairs, 3);
    assert_eq!(w.events(sick, "RepairDone").len(), 3);
}

#[tokio::test]
async fn a_kubelet_restart_that_heals_closes_the_window() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.healed_by(sick, "restart kubelet");
    w.falls_ill(sick, Problem::NotReady);
    w.pass_minutes(5).await;
    w.pass().await;
    assert_eq!(w.fake.guest_ops_of(sick), ["restart kubelet"]);
    assert!(!w.health(sick).unhealthy(), "recovered");
    assert_eq!(w.events(sick, "HealthRecovered").len(), 1);
    w.pass_minutes(30).await;
    assert_eq!(
        w.fake.guest_ops_of(sick),
        ["restart kubelet"],
        "nothing more"
    );
}

#[tokio::test]
async fn memory_pressure_drains_then_reboots_and_uncordons_once_healthy() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.healed_by(sick, "reboot");
    w.falls_ill(sick, Problem::MemoryPressure);
    w.pass_minutes(9).await;
    assert!(w.fake.guest_ops_of(sick).is_empty());
    w.pass_minutes(1).await;
    assert_eq!(w.fake.guest_ops_of(sick), ["reboot"]);
    assert!(w.fake.calls("drain") >= 1, "drained before the reboot");
    w.pass().await;
    assert!(
        !w.fake.world().nodes[sick].cordoned,
        "uncordoned once healthy"
    );
    assert!(!w.health(sick).cordoned);
}

#[tokio::test]
async fn disk_pressure_frees_disk_at_once_by_wiping_the_ephemeral_partition() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.healed_by(sick, "wipe-ephemeral");
    w.falls_ill(sick, Problem::DiskPressure);
    w.pass().await;
    assert_eq!(w.fake.guest_ops_of(sick), ["wipe-ephemeral"]);
    w.pass().await;
    assert!(!w.health(sick).unhealthy());
}

#[tokio::test]
async fn a_kubelet_crash_loop_reboots_and_a_containerd_crash_loop_escalates_a_permanent_worker() {
    let w = world(example_with(|_| {}));
    let names = w.workers("permanent", 1).await;
    let sick = &names[0];
    let ip = w.fake.world().claims[sick].status.ip.unwrap();
    let looping = |id: &str, failures| GuestService {
        id: id.into(),
        state: "Running".into(),
        healthy: Some(true),
        failures,
    };
    w.fake
        .world()
        .guest
        .services
        .insert(ip, vec![looping("kubelet", 3), looping("containerd", 0)]);
    w.pass().await;
    assert_eq!(w.fake.guest_ops_of(sick), ["reboot"]);
    w.fake
        .world()
        .guest
        .services
        .insert(ip, vec![looping("kubelet", 0), looping("containerd", 4)]);
    // Escalated once the reboot's recovery time is over.
    w.pass_minutes(4).await;
    assert!(w.events(sick, "RepairEscalated").is_empty());
    w.pass_minutes(1).await;
    assert_eq!(w.fake.guest_ops_of(sick), ["reboot"], "no second repair");
    let escalations = w.events(sick, "RepairEscalated");
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert!(escalations[0].contains("ContainerdCrashLoop"));
    w.pass_minutes(40).await;
    assert_eq!(w.events(sick, "RepairEscalated").len(), 1, "escalated once");
    assert_eq!(
        w.fake.world().claims[sick].spec.intent,
        Intent::Keep,
        "never destroyed"
    );
}

#[tokio::test]
async fn a_dry_run_announces_each_level_and_touches_nothing() {
    let w = world(example_with(|c| {
        for p in &mut c.pools {
            p.repair.dry_run = true;
        }
    }));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.falls_ill(sick, Problem::NotReady);
    w.pass_minutes(21).await;
    assert!(w.fake.guest_ops_of(sick).is_empty());
    assert_eq!(w.fake.world().claims.len(), 1, "nothing replaced");
    let would = w.events(sick, "RepairDryRun");
    assert_eq!(would.len(), 3, "{would:?}");
    assert!(would[0].starts_with("would restart-kubelet"));
    assert!(would[2].starts_with("would replace"));
}

#[tokio::test]
async fn more_than_a_fifth_of_the_pool_unhealthy_is_escalated_not_repaired() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 5).await;
    w.falls_ill(&names[0], Problem::NotReady);
    w.falls_ill(&names[1], Problem::NotReady);
    w.pass_minutes(12).await;
    assert!(w.fake.world().guest.ops.is_empty(), "no repair");
    assert_eq!(w.events(&names[0], "RepairEscalated").len(), 1);
    assert_eq!(w.events(&names[1], "RepairEscalated").len(), 1);
}

#[tokio::test]
async fn a_failover_in_the_middle_of_a_window_keeps_it_and_does_not_repeat_the_repair_in_flight() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    w.falls_ill(sick, Problem::NotReady);
    w.pass().await;
    let since = w.health(sick).problems[&Problem::NotReady];
    // The old leader recorded a kubelet restart and died before it ended.
    {
        let mut world = w.fake.world();
        let c = world.claims.get_mut(sick).unwrap();
        c.status
            .health
            .start(Action::RestartKubelet, Problem::NotReady, since);
    }
    w.minutes(6);
    let successor = Monitor::new(w.exec.clone(), Arc::new(())).with_services_floor(Duration::ZERO);
    assert_eq!(successor.take_over().await.unwrap(), 1);
    successor.pass().await.unwrap();
    assert!(
        w.fake.guest_ops_of(sick).is_empty(),
        "the restart is not repeated"
    );
    assert_eq!(
        w.health(sick).problems[&Problem::NotReady],
        since,
        "the window is kept"
    );
    for _ in 0..5 {
        w.minutes(1);
        successor.pass().await.unwrap();
    }
    assert_eq!(
        w.fake.guest_ops_of(sick),
        ["reboot"],
        "the next level, on time"
    );
}

#[tokio::test]
async fn problems_failed_repairs_and_escalations_are_warnings_the_rest_normal() {
    let w = world(example_with(|_| {}));
    let names = w.workers("permanent", 1).await;
    let sick = &names[0];
    w.falls_ill(sick, Problem::NotReady);
    w.fake.inject(
        "restart_service",
        tidepool_controller::ports::ProviderError::new(
            tidepool_controller::ports::ProviderErrorKind::Transient,
            "the machine does not answer",
        ),
    );
    // Restart fails at 5, is tried again after the backoff and works;
    // reboot at 10 does nothing; replace is not allowed: escalated.
    w.pass_minutes(25).await;
    let reasons: Vec<String> = w
        .fake
        .world()
        .node_events
        .iter()
        .filter(|(n, r, _)| n == sick && r != "WorkerReady")
        .map(|(_, r, _)| r.clone())
        .collect();
    assert_eq!(
        reasons,
        [
            "HealthProblem",
            "RepairStarted",
            "RepairFailed",
            "RepairStarted",
            "RepairDone",
            "RepairStarted",
            "RepairDone",
            "RepairEscalated"
        ],
        "every window opened and every action with its result"
    );
    assert_eq!(
        w.fake.world().node_warnings,
        ["HealthProblem", "RepairFailed", "RepairEscalated"]
    );
}

#[tokio::test]
async fn a_node_flapping_ready_between_repairs_still_climbs_to_replace() {
    let w = world(example_with(|_| {}));
    let names = w.workers("burst", 1).await;
    let sick = &names[0];
    // Each repair cures the node for a moment, then it is NotReady again.
    w.falls_ill(sick, Problem::NotReady);
    let mut seen = 0;
    for _ in 0..25 {
        w.pass_minutes(1).await;
        let ops = w.fake.guest_ops_of(sick);
        if ops.len() > seen {
            seen = ops.len();
            w.pass().await;
            assert!(!w.health(sick).unhealthy(), "cured for a moment");
            w.falls_ill(sick, Problem::NotReady);
        }
        let heal = match seen {
            0 => "restart kubelet",
            _ => "reboot",
        };
        w.healed_by(sick, heal);
    }
    assert_eq!(w.fake.guest_ops_of(sick), ["restart kubelet", "reboot"]);
    assert_eq!(
        w.fake.world().claims[sick].spec.intent,
        Intent::Remove { force: true },
        "replaced after 20 min of one flapping window\n{:?}",
        w.health(sick)
    );
    assert_eq!(w.events(sick, "HealthProblemBack").len(), 2);
}
