//! The autoscaler's unit tests, over the in-memory fakes: a pass asks the
//! service for workers and tells pods why, failed launches are repaired,
//! and the loop's deadlines and sleeps.

use std::collections::BTreeSet;

use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::conventions::TaintEffect;
use tidepool_core::planner::hosts::HostSnapshot;
use tidepool_core::planner::{ClaimState, PendingPod};
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests, Toleration, TolerationOperator};
use tidepool_core::{Lifecycle, Step};

use super::*;
use crate::claim::{Claim, ClaimSpec};
use crate::clock::ScaledClock;
use crate::executor::Executor;
use crate::ports::Clock;
use crate::testing::{Fake, ManualClock};

/// Sunday 4 January 2026, noon UTC: outside the example's Monday-to-Friday
/// pre-scaling window.
fn now() -> Timestamp {
    Timestamp::from_second(1_767_528_000).unwrap()
}

fn ago(secs: i64) -> Timestamp {
    now() - SignedDuration::from_secs(secs)
}

type FakeScaler = Autoscaler<Fake, Fake, Fake, Fake, Fake, Fake>;

fn autoscaler(fake: &Fake) -> FakeScaler {
    let exec = Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        Arc::new(config::load(EXAMPLE).unwrap()),
        Arc::new(ManualClock::at(now())),
    );
    let service = Arc::new(Service::new(Arc::new(exec)));
    Autoscaler::new(service, Arc::new(fake.clone()), fake.clone())
}

fn host(name: &str) -> HostSnapshot {
    HostSnapshot {
        name: name.into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: 196_608,
        memory_used_mib: 65_536,
        cores: 32,
        vcpus_allocated: 24,
        storage_free_gib: BTreeMap::from([("local-lvm".into(), 2600)]),
        gpu_free: BTreeMap::new(),
        vms: BTreeMap::new(),
        templates: config::load(EXAMPLE).unwrap().templates(),
    }
}

/// A CI job for the burst pool asking for `cpu_milli`, waiting since
/// `since`.
fn ci_pod(name: &str, cpu_milli: u64, since: Timestamp) -> PendingPod {
    PendingPod {
        pod: PodSpec {
            namespace: "ci".into(),
            name: name.into(),
            requests: Requests {
                cpu_milli,
                memory_bytes: 6 << 30,
                ..Requests::default()
            },
            node_selector: Arc::new(BTreeMap::from([("node-pool".into(), "burst".into())])),
            tolerations: Arc::new(vec![Toleration {
                key: "workload-type".into(),
                operator: TolerationOperator::Equal,
                value: "burst".into(),
                effect: Some(TaintEffect::NoSchedule),
            }]),
            ..PodSpec::default()
        },
        unschedulable_since: since,
    }
}

/// The example configuration over two roomy hosts with the permanent
/// pool at its minimum of three Ready workers, and `pending` waiting.
fn home_lab(pending: Vec<PendingPod>) -> PlanInput {
    let config = config::load(EXAMPLE).unwrap();
    let mut nodes = Vec::new();
    let mut claims = Vec::new();
    for name in ["permanent-1", "permanent-2", "permanent-3"] {
        nodes.push(NodeSnapshot::hypothetical(
            &config,
            config.pool("permanent").unwrap(),
            config.size("medium").unwrap(),
            name,
            now(),
        ));
        claims.push(ClaimState {
            name: name.into(),
            pool: "permanent".into(),
            size: "medium".into(),
            phase: Phase::Ready,
            removing: false,
            host: Some("pve-01".into()),
            expires_at: None,
            idle_since: None,
        });
    }
    PlanInput {
        config,
        nodes,
        pending,
        claims,
        hosts: vec![host("pve-01"), host("pve-02")],
        vmids_in_use: BTreeMap::from([("pve".into(), BTreeSet::from([100, 101]))]),
        pool_state: BTreeMap::new(),
        now: now(),
    }
}

fn events_of(fake: &Fake, reason: &str) -> Vec<String> {
    fake.world()
        .pod_events
        .iter()
        .filter(|(_, r, _)| r == reason)
        .map(|(pod, _, _)| pod.clone())
        .collect()
}

#[tokio::test]
async fn waiting_pods_get_workers_through_the_service_and_every_pod_is_told_why() {
    let fake = Fake::new();
    let mut pending: Vec<PendingPod> = (0..6)
        .map(|i| ci_pod(&format!("ci-{i}"), 3000, ago(600)))
        .collect();
    // No size of the burst pool has 200 CPUs.
    pending.push(ci_pod("huge", 200_000, ago(600)));
    fake.world().observed = Some(home_lab(pending));
    let mut scaler = autoscaler(&fake);

    let (plan, report, _) = scaler.pass().await.unwrap();

    assert!(!report.created.is_empty(), "{plan:?}");
    assert_eq!(report.pending, 7);
    assert_eq!(report.unhelpable, 1);
    for name in &report.created {
        let claim = fake.world().claims[name].clone();
        assert_eq!(claim.spec.pool, "burst");
        assert_eq!(claim.spec.requested_by, "autoscaler");
        assert!(
            claim.spec.host.is_some(),
            "the planner's host goes with the claim"
        );
    }
    let mut told = events_of(&fake, "TriggeredScaleUp");
    told.sort();
    assert_eq!(
        told,
        (0..6).map(|i| format!("ci/ci-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(events_of(&fake, "NotTriggerScaleUp"), ["ci/huge"]);

    // Told once: the same answer is not repeated on the next pass.
    let before = fake.world().pod_events.len();
    let input = fake.world().observed.clone().unwrap();
    scaler.explain(&input, &plan, &report).await;
    assert_eq!(fake.world().pod_events.len(), before);
}

#[tokio::test]
async fn a_burst_worker_that_failed_to_launch_is_removed_but_a_permanent_one_is_kept() {
    let fake = Fake::new();
    for (name, pool, size, by) in [
        ("burst-f4il3", "burst", "small", "autoscaler"),
        ("permanent-f4il", "permanent", "medium", "autoscaler"),
        // An operator's request is never cleared silently.
        ("burst-asked1", "burst", "small", "cli:alice"),
    ] {
        let mut claim = Claim::new(
            name,
            ClaimSpec {
                pool: pool.into(),
                size: size.into(),
                ttl: None,
                requested_by: by.into(),
                reason: "a test".into(),
                intent: Intent::Keep,
                host: None,
            },
        );
        claim.status.lifecycle = Lifecycle::Failed {
            step: Step::Clone,
            reason: "clone task failed".into(),
        };
        fake.put_claim(claim);
    }
    fake.world().observed = Some(home_lab(Vec::new()));
    let mut scaler = autoscaler(&fake);

    let (_, report, _) = scaler.pass().await.unwrap();

    assert_eq!(report.removed, ["burst-f4il3"]);
    let w = fake.world();
    assert_eq!(
        w.claims["burst-f4il3"].spec.intent,
        Intent::Remove { force: true }
    );
    assert_eq!(w.claims["permanent-f4il"].spec.intent, Intent::Keep);
    assert_eq!(w.claims["burst-asked1"].spec.intent, Intent::Keep);
}

#[tokio::test]
async fn a_failed_observation_is_an_error_and_nothing_is_asked() {
    let fake = Fake::new();
    let mut scaler = autoscaler(&fake);
    assert!(scaler.pass().await.is_err());
    assert!(fake.world().claims.is_empty());
}

#[test]
fn the_next_deadline_is_the_soonest_window_or_expiry_still_to_come() {
    // A pod waiting 30 s: the burst pool's 120 s window ends in 90 s.
    let mut input = home_lab(vec![ci_pod("ci-0", 3000, ago(30))]);
    assert_eq!(
        next_deadline(&input),
        Some(ago(30) + SignedDuration::from_secs(120))
    );

    // A worker expiring in 10 s comes first.
    input.claims[0].expires_at = Some(now() + SignedDuration::from_secs(10));
    assert_eq!(
        next_deadline(&input),
        Some(now() + SignedDuration::from_secs(10))
    );

    // Moments already past are not deadlines; an idle worker's timeout is.
    let mut input = home_lab(vec![ci_pod("ci-0", 3000, ago(100_000))]);
    input.claims.push(ClaimState {
        name: "burst-idle1".into(),
        pool: "burst".into(),
        size: "small".into(),
        phase: Phase::Ready,
        removing: false,
        host: Some("pve-02".into()),
        expires_at: None,
        idle_since: Some(ago(60)),
    });
    assert_eq!(
        next_deadline(&input),
        Some(ago(60) + SignedDuration::from_secs(30 * 60))
    );
}

#[test]
fn the_loop_sleeps_until_just_after_the_deadline_or_its_idle_tick() {
    let timing = Timing::new(Duration::from_millis(500));
    let clock = ScaledClock::new(10.0, None);
    // Idle tick: a minute of controller time, 6 s real at 10x.
    assert_eq!(
        clock.real(timing.sleep_until(None, now())),
        Duration::from_secs(6)
    );
    let soon = now() + SignedDuration::from_secs(9);
    // (9 s + 1.1 s) / 10.
    assert_eq!(
        clock.real(timing.sleep_until(Some(soon), now())),
        Duration::from_millis(1010)
    );
}

/// A Ready burst worker of size small on `pve-02`, Ready since
/// `ready_since`; `cpu_milli` is what a workload pod on it requests (none
/// when 0). The observer's answer to "idle since" is as the live one's:
/// since the node became Ready, when it runs no workload pod now.
fn burst_worker(input: &mut PlanInput, name: &str, ready_since: Timestamp, cpu_milli: u64) {
    let cfg = input.config.clone();
    let mut node = NodeSnapshot::hypothetical(
        &cfg,
        cfg.pool("burst").unwrap(),
        cfg.size("small").unwrap(),
        name,
        ready_since,
    );
    if cpu_milli > 0 {
        node.requested.cpu_milli = cpu_milli;
        node.pod_count = 1;
        node.pods.push(Arc::new(PodSpec {
            namespace: "ci".into(),
            name: format!("{name}-job").into(),
            requests: Requests {
                cpu_milli,
                ..Requests::default()
            },
            ..PodSpec::default()
        }));
    }
    input.nodes.push(node);
    input.claims.push(ClaimState {
        name: name.into(),
        pool: "burst".into(),
        size: "small".into(),
        phase: Phase::Ready,
        removing: false,
        host: Some("pve-02".into()),
        expires_at: None,
        idle_since: (cpu_milli == 0).then_some(ready_since),
    });
}

/// Runs one pass at each of `minutes` (after [`now`]) over the world
/// `at(minute)` shows, once on one autoscaler and once on a new one for
/// every pass (as after a restart or a failover); asserts both runs do the
/// same and returns, for each pass, the workers it asked to go and how
/// many it created.
async fn replay_with_restarts(
    at: fn(i64) -> PlanInput,
    minutes: &[i64],
) -> Vec<(i64, Vec<String>, usize)> {
    let kept = replay(at, minutes, false).await;
    let restarted = replay(at, minutes, true).await;
    assert_eq!(
        restarted, kept,
        "a restart before every pass changes nothing"
    );
    kept
}

/// One run of [`replay_with_restarts`]. Workers asked to go are gone by the
/// next pass.
async fn replay(
    at: fn(i64) -> PlanInput,
    minutes: &[i64],
    restart: bool,
) -> Vec<(i64, Vec<String>, usize)> {
    let fake = Fake::new();
    for c in at(0).claims.iter().filter(|c| c.pool == "burst") {
        let mut claim = Claim::new(
            &c.name,
            ClaimSpec {
                pool: c.pool.clone(),
                size: c.size.clone(),
                ttl: None,
                requested_by: "autoscaler".into(),
                reason: "a test".into(),
                intent: Intent::Keep,
                host: c.host.clone(),
            },
        );
        claim.status.lifecycle = Lifecycle::Ready;
        fake.put_claim(claim);
    }
    let mut scaler = autoscaler(&fake);
    let mut out = Vec::new();
    for &m in minutes {
        let mut input = at(m);
        input.now = now() + SignedDuration::from_mins(m);
        let gone = |name: &str| {
            fake.world()
                .claims
                .get(name)
                .is_some_and(|s| s.spec.intent.is_removal())
        };
        input.claims.retain(|c| !gone(&c.name));
        input.nodes.retain(|n| !gone(&n.name));
        fake.world().observed = Some(input);
        if restart {
            scaler = autoscaler(&fake);
        }
        let (_, report, _) = scaler.pass().await.unwrap();
        out.push((m, report.removed, report.created.len()));
    }
    out
}

/// The world at minute `m` of a worker Ready an hour before [`now`] that
/// runs a job until minute 10.
fn busy_until_ten(m: i64) -> PlanInput {
    let mut input = home_lab(Vec::new());
    burst_worker(
        &mut input,
        "burst-b1zzy",
        ago(3600),
        if m < 10 { 1000 } else { 0 },
    );
    input
}

#[tokio::test]
async fn a_worker_busy_until_a_moment_ago_is_idle_from_then_across_restarts() {
    let minutes = [0, 10, 20, 39, 41];
    let kept = replay_with_restarts(busy_until_ten, &minutes).await;

    // Idle since minute 10, not since it became Ready: its 30 minutes of
    // idleness end at minute 40.
    let removed_at: Vec<i64> = kept
        .iter()
        .filter(|(_, removed, _)| !removed.is_empty())
        .map(|(m, _, _)| *m)
        .collect();
    assert_eq!(removed_at, [41], "{kept:?}");
}

#[tokio::test]
async fn the_gradual_scale_down_interval_survives_a_restart() {
    // Two workers idle for two hours: one goes per batch (maxFraction 0.2),
    // batches 30 minutes apart.
    fn at(_: i64) -> PlanInput {
        let mut input = home_lab(Vec::new());
        burst_worker(&mut input, "burst-1d1e1", ago(7200), 0);
        burst_worker(&mut input, "burst-1d1e2", ago(7200), 0);
        input
    }
    let minutes = [0, 10, 29, 31];
    let kept = replay_with_restarts(at, &minutes).await;

    let removals: Vec<(i64, usize)> = kept.iter().map(|(m, r, _)| (*m, r.len())).collect();
    assert_eq!(removals, [(0, 1), (10, 0), (29, 0), (31, 1)]);
}

#[tokio::test]
async fn a_pressure_window_survives_a_restart() {
    // The burst pool's one worker runs at 95 % of its CPU from minute 0;
    // the pool's window is 5 minutes.
    fn at(_: i64) -> PlanInput {
        let mut input = home_lab(Vec::new());
        let cfg = input.config.clone();
        let allocatable = NodeSnapshot::hypothetical(
            &cfg,
            cfg.pool("burst").unwrap(),
            cfg.size("small").unwrap(),
            "x",
            now(),
        )
        .allocatable
        .cpu_milli;
        burst_worker(&mut input, "burst-pr3ss", ago(3600), allocatable * 95 / 100);
        input
    }
    let minutes = [0, 3, 5];
    let kept = replay_with_restarts(at, &minutes).await;

    let created: Vec<(i64, usize)> = kept.iter().map(|(m, _, c)| (*m, *c)).collect();
    assert_eq!(created, [(0, 0), (3, 0), (5, 1)]);
}

#[tokio::test]
async fn timers_are_written_only_when_they_change() {
    fn at(_: i64) -> PlanInput {
        let mut input = home_lab(Vec::new());
        burst_worker(&mut input, "burst-b1zzy", ago(3600), 1000);
        input
    }
    let fake = Fake::new();
    fake.world().observed = Some(at(0));
    let mut scaler = autoscaler(&fake);
    scaler.pass().await.unwrap();
    let first = fake.world().pool_writes.len();
    assert!(first > 0, "the worker's first look is recorded");
    for _ in 0..5 {
        scaler.pass().await.unwrap();
    }
    assert_eq!(
        fake.world().pool_writes.len(),
        first,
        "nothing changed, nothing written"
    );
}

#[tokio::test]
async fn a_dry_run_plan_sees_the_idle_time_the_controller_recorded() {
    // The controller saw the worker busy until minute 10: at minute 35 it
    // has been idle 25 minutes, not the 95 since its node became Ready.
    fn at(m: i64) -> PlanInput {
        let mut input = busy_until_ten(m);
        input.now = now() + SignedDuration::from_mins(m);
        input
    }
    let fake = Fake::new();
    for m in [0, 10] {
        fake.world().observed = Some(at(m));
        autoscaler(&fake).pass().await.unwrap();
    }
    let writes = fake.world().pool_writes.len();

    let mut input = at(35);
    assert!(
        !plan(&input).actions.is_empty(),
        "afresh, it looks idle for long"
    );
    with_stored_timers(&fake, &mut input).await.unwrap();
    let worker = input.claims.iter().find(|c| c.name == "burst-b1zzy");
    let idle = worker.and_then(|c| c.idle_since);
    assert_eq!(idle, Some(now() + SignedDuration::from_mins(10)));
    assert!(
        plan(&input).actions.is_empty(),
        "{:?}",
        plan(&input).actions
    );
    assert_eq!(
        fake.world().pool_writes.len(),
        writes,
        "a dry run writes nothing"
    );
}
