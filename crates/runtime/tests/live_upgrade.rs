//! Rolling Talos upgrades end to end: the lab's controller with its
//! rollout loop against the emulators. A pool of five workers is upgraded
//! in 20 % batches while a Deployment's PodDisruptionBudget never drops
//! below its budget (sampled throughout); an upgrade whose new image does
//! not boot (the Talos lab's `UpgradeBoot` fault) pauses the rollout and
//! leaves the node on its old version; a controller killed mid-rollout is
//! followed by one that carries it on without asking any machine for its
//! upgrade twice (the Talos emulator's Upgrade calls counted per machine).
//! Each test prints the lab time per batch and in total.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Live, Setup, eventually, start};
use serde_json::json;
use tidepool_controller::ports::PoolRecords;
use tidepool_controller::rollout::Rollouts;
use tidepool_controller::service::ProvisionRequest;
use tidepool_core::rollout::{MaxUnavailable, Rollout, RolloutState};
use tidepool_lab_sim::{FaultRule, Service as Emulator};
use tidepool_lab_talos::{TalosEvent, UPGRADE_BOOT_FAULT};

/// Real time a scenario may take (hours of lab time at 1000x).
const PATIENCE: Duration = Duration::from_secs(180);

const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.11.0";
const TARGET: &str = "v1.11.0";
const OLD: &str = tidepool_lab_talos::DEFAULT_TALOS_VERSION;

/// The lab at 1000x; burst workers stay (no TTL, never idle).
async fn lab(name: &'static str) -> Live {
    start(Setup {
        config: |c| {
            for p in &mut c.pools {
                p.ttl = None;
                p.idle_timeout = None;
            }
        },
        ..Setup::new(name)
    })
    .await
}

/// `count` Ready burst workers, by name with their addresses.
async fn workers(live: &Live, count: u32) -> BTreeMap<String, IpAddr> {
    let names = live
        .service()
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: Some("small".into()),
            count,
            ttl: None,
            requested_by: "upgrade-test".into(),
            reason: "a rolling upgrade".into(),
        })
        .await
        .unwrap();
    let ready = eventually(PATIENCE, || {
        names.iter().all(|n| {
            live.claim(n)
                .is_some_and(|c| c["status"]["phase"] == "Ready")
        })
    })
    .await;
    assert!(ready, "the workers turned Ready\n{}", live.dump_claims());
    names
        .into_iter()
        .map(|n| {
            let ip = live.claim(&n).unwrap()["status"]["ip"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (n, ip)
        })
        .collect()
}

/// Upgrade calls the Talos emulator accepted, by machine, from now on.
fn count_upgrades(live: &Live) -> Arc<Mutex<BTreeMap<IpAddr, usize>>> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut events = live.lab.talos.subscribe();
    let into = counts.clone();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let TalosEvent::UpgradeRequested { ip, .. } = e {
                *into.lock().unwrap().entry(ip).or_insert(0) += 1;
            }
        }
    });
    counts
}

fn rollouts(
    live: &Live,
) -> Rollouts<
    tidepool_live::pve::PveHypervisor,
    tidepool_live::join::LiveJoiner,
    tidepool_live::kube::KubeCluster,
    tidepool_live::kube::KubeCluster,
> {
    Rollouts::new(live.exec.clone(), Arc::new(()))
}

/// The pool's rollout as recorded (read from its record alone, without
/// asking the machines, so that watching does not slow the lab down).
async fn rollout(live: &Live) -> Rollout {
    live.exec
        .store()
        .read_pool("burst")
        .await
        .unwrap()
        .record
        .rollout
        .unwrap()
}

/// Prints each batch's lab time and the total.
fn print_times(test: &str, r: &Rollout) {
    for (i, b) in r.batches.iter().enumerate() {
        let took = b
            .finished
            .map(|f| f.duration_since(b.started).as_secs_f64())
            .unwrap_or(f64::NAN);
        println!(
            "{test}: batch {} ({}) took {took:.0} s of lab time",
            i + 1,
            b.workers.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(end) = r.finished {
        println!(
            "{test}: total {:.0} s of lab time for {} batches",
            end.duration_since(r.started).as_secs_f64(),
            r.batches.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_are_upgraded_in_20_percent_batches_while_the_budget_holds() {
    let live = lab("upgrade-five").await;
    let workers = workers(&live, 5).await;
    let upgrades = count_upgrades(&live);
    live.lab
        .kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "web", "image": "nginx:1.27", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}}}
        }))
        .unwrap();
    live.lab
        .kube
        .apply(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}
        }))
        .unwrap();
    let running = eventually(PATIENCE, || live.running("default", "app=web").len() == 4).await;
    assert!(running, "web runs\n{}", live.dump_pods("default"));

    let plan = rollouts(&live)
        .start("burst", IMAGE, MaxUnavailable::default(), "cli:test")
        .await
        .unwrap();
    assert_eq!(plan.batches.len(), 5, "20 % of five: one at a time");
    let mut fewest = usize::MAX;
    let deadline = std::time::Instant::now() + PATIENCE;
    let done = loop {
        fewest = fewest.min(live.running("default", "app=web").len());
        let r = rollout(&live).await;
        if r.state != RolloutState::Running || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    print_times("five workers", &done);
    assert_eq!(done.state, RolloutState::Done, "{done:?}");
    assert!(
        fewest >= 3,
        "the budget held: at least 3 of 4 ran, fewest {fewest}"
    );
    assert_eq!(done.batches.len(), 5);
    assert!(done.batches.iter().all(|b| b.workers.len() == 1));
    let upgrades = upgrades.lock().unwrap().clone();
    for (name, ip) in &workers {
        assert_eq!(upgrades.get(ip), Some(&1), "{name} upgraded once");
        let state = live.lab.talos.machine_state(*ip).unwrap();
        assert_eq!(state.version, TARGET, "{name}");
    }
    let nodes = live.lab.kube.list("v1", "Node", "", "").unwrap();
    for n in nodes
        .iter()
        .filter(|n| workers.contains_key(n["metadata"]["name"].as_str().unwrap_or("")))
    {
        assert!(
            n["spec"]["unschedulable"].as_bool() != Some(true),
            "uncordoned: {n}"
        );
    }
    let metrics = live.metrics().await;
    assert!(
        metrics.contains(r#"tidepool_upgrade_workers{pool="burst",state="done"} 5"#),
        "{metrics}"
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_does_not_boot_pauses_the_rollout_on_the_old_version() {
    let live = lab("upgrade-rollback").await;
    let workers = workers(&live, 2).await;
    let (first, ip) = workers
        .iter()
        .next()
        .map(|(n, ip)| (n.clone(), *ip))
        .unwrap();
    live.lab.faults.set_rules(vec![FaultRule {
        service: Emulator::Talos,
        op: format!("{UPGRADE_BOOT_FAULT}:{ip}"),
        error_rate: 1.0,
        status: None,
        message: Some("kernel panic".into()),
        latency_ms: 0,
        times: None,
    }]);
    rollouts(&live)
        .start("burst", IMAGE, MaxUnavailable::Count(1), "cli:test")
        .await
        .unwrap();
    let mut r = rollout(&live).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while r.state == RolloutState::Running && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = rollout(&live).await;
    }
    print_times("rollback", &r);
    let RolloutState::Paused { reason } = &r.state else {
        panic!("paused: {r:?}")
    };
    assert!(reason.contains(&first), "{reason}");
    assert_eq!(live.lab.talos.machine_state(ip).unwrap().version, OLD);
    let back = eventually(PATIENCE, || {
        live.lab
            .kube
            .get("v1", "Node", "", &first)
            .is_ok_and(|n| n["spec"]["unschedulable"].as_bool() != Some(true))
    })
    .await;
    assert!(back, "{first} takes pods again on its old version");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_rollout_carries_on_without_upgrading_a_machine_twice() {
    let mut live = lab("upgrade-kill").await;
    let workers = workers(&live, 3).await;
    let upgrades = count_upgrades(&live);
    rollouts(&live)
        .start("burst", IMAGE, MaxUnavailable::Count(1), "cli:test")
        .await
        .unwrap();
    // Killed once the first machine was asked for its upgrade.
    let asked = eventually(PATIENCE, || !upgrades.lock().unwrap().is_empty()).await;
    assert!(asked, "the first batch's upgrade was asked");
    live.restart_controller().await;
    let mut r = rollout(&live).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while r.state == RolloutState::Running && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = rollout(&live).await;
    }
    print_times("killed mid-rollout", &r);
    assert_eq!(r.state, RolloutState::Done, "{r:?}");
    assert_eq!(r.batches.len(), 3, "no batch repeated: {r:?}");
    let upgrades = upgrades.lock().unwrap().clone();
    for (name, ip) in &workers {
        assert_eq!(
            upgrades.get(ip),
            Some(&1),
            "{name} asked once across both controllers"
        );
    }
    live.stop().await;
}
