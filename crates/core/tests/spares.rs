//! Cold spares as the planner's side sees them: when a pool's spares are
//! refilled, where, and how far (gradually, within the pool's limits and
//! the hosts' headroom, never while the pool scales up), which spares a
//! scale-up activates first, and that a spare is no capacity for pods.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::planner::{Action, HostSnapshot, Plan, PlanInput, ReasonCode, plan};
use tidepool_core::spares::{Spares, activate, ready_to_activate, refills};
use tidepool_core::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, Lifecycle};

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn roomy(name: &str, memory_gib: u64) -> HostSnapshot {
    let templates = config::load(EXAMPLE).unwrap().templates();
    HostSnapshot {
        name: name.into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: memory_gib * 1024,
        cores: 64,
        storage_free_gib: BTreeMap::from([("local-lvm".to_owned(), 10_000)]),
        templates,
        ..HostSnapshot::default()
    }
}

/// The example configuration with the burst pool keeping two small
/// spares, two roomy hosts, nothing running, no schedule.
fn lab(claims: &[Claim]) -> PlanInput {
    let mut config = config::load(EXAMPLE).unwrap();
    for pool in &mut config.pools {
        pool.schedule.clear();
        if pool.name == "burst" {
            pool.spares = Some(Spares {
                count: 2,
                size: "small".into(),
            });
        }
    }
    PlanInput {
        config,
        nodes: Vec::new(),
        pending: Vec::new(),
        claims: claims.iter().map(Claim::planner_state).collect(),
        hosts: vec![roomy("pve-01", 512), roomy("pve-02", 256)],
        vmids_in_use: BTreeMap::new(),
        pool_state: BTreeMap::new(),
        now: t0(),
    }
}

fn claim(name: &str, intent: Intent, lifecycle: Lifecycle, host: &str) -> Claim {
    let mut c = Claim::new(
        name,
        ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: Some(std::time::Duration::from_secs(4 * 3600)),
            requested_by: "autoscaler".into(),
            reason: "a test".into(),
            intent,
            host: Some(host.into()),
        },
    );
    c.status = ClaimStatus {
        lifecycle,
        ..ClaimStatus::default()
    };
    c
}

fn parked(name: &str, host: &str) -> Claim {
    claim(name, Intent::Spare, Lifecycle::Spare, host)
}

fn ready(name: &str) -> Claim {
    claim(name, Intent::Keep, Lifecycle::Ready, "pve-01")
}

#[test]
fn a_pool_short_of_spares_gets_one_on_the_roomiest_host() {
    let input = lab(&[]);
    let made = refills(&input, &[], &Plan::default());
    assert_eq!(made.len(), 1, "one at a time: {made:?}");
    assert_eq!(
        (made[0].pool.as_str(), made[0].size.as_str()),
        ("burst", "small")
    );
    assert_eq!(made[0].host, "pve-01");
    assert_eq!(made[0].reason, "pool burst keeps 2 cold spares and has 0");
}

#[test]
fn a_spare_still_being_made_holds_the_next_one_back_and_a_full_set_asks_for_none() {
    let making = claim(
        "burst-m4k1n",
        Intent::Spare,
        Lifecycle::Provisioning,
        "pve-01",
    );
    let claims = [making];
    assert!(refills(&lab(&claims), &claims, &Plan::default()).is_empty());
    let claims = [parked("burst-sp4r1", "pve-01")];
    assert_eq!(refills(&lab(&claims), &claims, &Plan::default()).len(), 1);
    let claims = [
        parked("burst-sp4r1", "pve-01"),
        parked("burst-sp4r2", "pve-02"),
    ];
    assert!(refills(&lab(&claims), &claims, &Plan::default()).is_empty());
}

#[test]
fn no_spare_is_made_while_the_pool_scales_up() {
    let plan = Plan {
        actions: vec![Action::Provision {
            pool: "burst".into(),
            size: "medium".into(),
            host: "pve-01".into(),
            count: 1,
            reason: tidepool_core::planner::Reason::new(ReasonCode::PendingPods, "pods wait"),
        }],
        ..Plan::default()
    };
    assert!(refills(&lab(&[]), &[], &plan).is_empty());
}

#[test]
fn spares_and_workers_together_stay_within_max_nodes() {
    // burst allows 10: 8 workers and a spare leave room for one spare more,
    // 9 workers and a spare for none.
    let mut claims: Vec<Claim> = (0..8).map(|i| ready(&format!("burst-w{i}"))).collect();
    claims.push(parked("burst-sp4r1", "pve-01"));
    assert_eq!(refills(&lab(&claims), &claims, &Plan::default()).len(), 1);
    claims.push(ready("burst-w8"));
    assert!(refills(&lab(&claims), &claims, &Plan::default()).is_empty());
}

#[test]
fn no_spare_is_made_without_host_headroom() {
    let mut input = lab(&[]);
    for host in &mut input.hosts {
        host.memory_total_mib = 8 * 1024;
    }
    assert!(refills(&input, &[], &Plan::default()).is_empty());
}

#[test]
fn parked_spares_on_the_planned_host_are_activated_first() {
    let making = claim(
        "burst-a0000",
        Intent::Spare,
        Lifecycle::Provisioning,
        "pve-01",
    );
    let claims = [
        making,
        parked("burst-b0000", "pve-01"),
        parked("burst-c0000", "pve-02"),
        ready("burst-d0000"),
        claim(
            "burst-e0000",
            Intent::Remove { force: false },
            Lifecycle::Spare,
            "pve-02",
        ),
    ];
    let order: Vec<&str> = ready_to_activate(&claims, "burst", "small", "pve-02")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(order, ["burst-c0000", "burst-b0000", "burst-a0000"]);
}

#[test]
fn a_spare_is_no_capacity_for_pods_and_takes_no_pool_room() {
    let claims = [parked("burst-sp4r1", "pve-01")];
    let mut input = lab(&claims);
    assert_eq!(
        tidepool_core::planner::usage::pool_usage(&input.config, &input.claims, "burst").nodes,
        0
    );
    input.pool_state.insert(
        "burst".into(),
        tidepool_core::planner::PoolState {
            emergency: true,
            ..Default::default()
        },
    );
    let mut pod = tidepool_core::sched::PodSpec {
        namespace: "ci".into(),
        name: "job-0".into(),
        ..Default::default()
    };
    pod.requests.cpu_milli = 1000;
    std::sync::Arc::make_mut(&mut pod.tolerations).push(tidepool_core::sched::Toleration {
        key: "workload-type".into(),
        operator: tidepool_core::sched::TolerationOperator::Equal,
        value: "burst".into(),
        effect: Some(tidepool_core::TaintEffect::NoSchedule),
    });
    input.pending = vec![tidepool_core::planner::PendingPod {
        pod,
        unschedulable_since: t0(),
    }];
    let planned = plan(&input);
    assert_eq!(planned.nodes_requested(), 1, "{planned:?}");
}

#[test]
fn an_activated_spare_starts_again_with_its_ttl_counted_from_then() {
    let made = Timestamp::from_second(1_700_000_000).unwrap();
    let mut c = parked("burst-sp4r1", "pve-01");
    for cond in [
        Condition::VmCloned,
        Condition::VmConfigured,
        Condition::VmStarted,
        Condition::ConfigDelivered,
        Condition::NodeReady,
        Condition::NodeDeleted,
        Condition::VmStopped,
    ] {
        c.status.conditions.insert(cond, made);
    }
    activate(&mut c.status, c.spec.ttl, t0());
    c.spec.intent = Intent::Keep;
    c.status.lifecycle = Lifecycle::Provisioning;
    assert_eq!(
        tidepool_core::claim::next_step(&c),
        Some(tidepool_core::Step::Start)
    );
    assert_eq!(
        c.status.conditions.get(&Condition::ConfigDelivered),
        Some(&t0())
    );
    assert!(c.status.has(Condition::VmConfigured));
    assert!(!c.status.has(Condition::NodeReady));
    assert_eq!(c.status.provisioned_at, Some(t0()));
    assert_eq!(
        c.status.expires_at,
        Some(
            t0().checked_add(jiff::SignedDuration::from_hours(4))
                .unwrap()
        )
    );
}

#[test]
fn the_capacity_report_shows_a_pools_spares_apart_from_its_workers() {
    let claims = [
        parked("burst-sp4r1", "pve-01"),
        claim("burst-m4k1n", Intent::Spare, Lifecycle::Joining, "pve-02"),
        ready("burst-w0"),
    ];
    let report = tidepool_core::planner::capacity::report(&lab(&claims));
    let burst = report.pools.iter().find(|p| p.name == "burst").unwrap();
    let spares = burst.spares.as_ref().unwrap();
    assert_eq!(
        (spares.size.as_str(), spares.wanted, spares.held),
        ("small", 2, 2)
    );
    assert_eq!(burst.limits.nodes, 1, "only the worker counts as a node");
    assert_eq!(burst.limits.in_flight, 0, "a spare is not on its way");
    let spot = report.pools.iter().find(|p| p.name == "spot").unwrap();
    assert!(spot.spares.is_none());
}
