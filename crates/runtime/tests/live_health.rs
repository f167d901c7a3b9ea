//! The health monitor end to end (spec §7): the lab's controller with its
//! health loop against the emulators, a worker made sick through the lab
//! (a stopped kubelet and the node NotReady, memory or disk pressure, a
//! kubelet crash loop visible in Talos' ServiceList), and each row's
//! repairs asserted in order of escalation with the outcome: recovered or
//! replaced; the brakes as the lab shows them: more than a fifth of a
//! pool sick is escalated and nothing repaired, a dry run announces each
//! level and carries none out, a permanent worker is escalated and never
//! destroyed, and a failover (a second controller takes the Lease) in the
//! middle of a window keeps it.
//! Problems, failed repairs and escalations are Warning Events. Each test
//! prints the lab time from the problem's start to each repair.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, eventually, provision_one, start};
use serde_json::Value;
use tidepool_lab::sickness::Cure;

/// Real time a scenario may take (tens of lab minutes at 500x).
const PATIENCE: Duration = Duration::from_secs(30);

/// The lab at 500x (the monitor's least wait between passes is a few lab
/// minutes at higher scales, enough to pass over a level on a busy
/// machine); burst workers are never idle long enough to go and
/// may be replaced.
async fn lab(name: &'static str) -> Live {
    lab_at(name, 500.0).await
}

/// The same lab at `time_scale` (a lower one where a failover must take
/// little lab time), its controller elected through the Lease.
async fn lab_at(name: &'static str, time_scale: f64) -> Live {
    start(Setup {
        time_scale,
        lease: true,
        config: |c| {
            for p in &mut c.pools {
                p.idle_timeout = p.idle_timeout.map(|_| Duration::from_secs(24 * 3600));
                p.repair.replace = p.kind != tidepool_core::PoolKind::Permanent;
            }
        },
        ..Setup::new(name)
    })
    .await
}

/// A Ready burst worker.
async fn worker(live: &Live) -> String {
    let name = provision_one(&live.service(), "health-test").await;
    let ready = eventually(PATIENCE, || {
        live.claim(&name)
            .is_some_and(|c| c["status"]["phase"] == "Ready")
    })
    .await;
    assert!(ready, "the worker turned Ready\n{}", live.dump_claims());
    name
}

/// The repairs seen on the claim (action, lab minutes after the problem
/// started), polled until `done` holds for the claim (or it is gone).
async fn repairs(
    live: &Live,
    name: &str,
    problem: &str,
    done: impl Fn(&Value) -> bool,
) -> Vec<(String, f64)> {
    let mut seen: Vec<(String, f64)> = Vec::new();
    let mut since: Option<jiff::Timestamp> = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while let Some(claim) = live.claim(name) {
        let health = &claim["status"]["health"];
        let listed = health["problems"].as_array().into_iter().flatten();
        for p in listed.filter(|p| p["problem"] == problem) {
            since.get_or_insert(p["since"].as_str().unwrap().parse().unwrap());
        }
        if let (Some(action), Some(at), Some(since)) = (
            health["lastRepair"]["action"].as_str(),
            health["lastRepair"]["startedAt"].as_str(),
            since,
        ) {
            let at: jiff::Timestamp = at.parse().unwrap();
            let minutes = at.duration_since(since).as_secs_f64() / 60.0;
            if seen
                .last()
                .is_none_or(|(a, m)| a != action || (*m - minutes).abs() > 1e-9)
            {
                seen.push((action.to_owned(), minutes));
            }
        }
        if done(&claim) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

fn healed(claim: &Value) -> bool {
    let h = &claim["status"]["health"];
    h["lastRepair"]["outcome"].is_string() && h["problems"].as_array().is_none_or(|p| p.is_empty())
}

fn actions(seen: &[(String, f64)]) -> Vec<&str> {
    seen.iter().map(|(a, _)| a.as_str()).collect()
}

fn report(row: &str, seen: &[(String, f64)]) {
    let figures: Vec<String> = seen
        .iter()
        .map(|(a, m)| format!("{a} at {m:.1} min"))
        .collect();
    eprintln!("figures: {row}: {}", figures.join(", "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kubelet_is_restarted_after_five_minutes_and_the_node_recovers() {
    let live = lab("health-restart").await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::RestartKubelet)
        .unwrap();
    let seen = repairs(&live, &name, "NotReady", healed).await;
    report("NotReady cured by a kubelet restart", &seen);
    assert_eq!(actions(&seen), ["RestartKubelet"], "{}", live.dump_claims());
    assert!(seen[0].1 >= 5.0, "not before 5 min: {seen:?}");
    assert!(!live.lab.sickness.is_ill(&name));
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_only_a_reboot_cures_is_rebooted_after_ten_minutes() {
    let live = lab("health-reboot").await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::Reboot)
        .unwrap();
    let seen = repairs(&live, &name, "NotReady", healed).await;
    report("NotReady cured by a reboot", &seen);
    assert_eq!(
        actions(&seen),
        ["RestartKubelet", "Reboot"],
        "{}",
        live.dump_claims()
    );
    assert!(seen[1].1 >= 10.0, "not before 10 min: {seen:?}");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nothing_cures_is_replaced_after_twenty_minutes_a_new_worker_first() {
    let live = lab("health-replace").await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::Never)
        .unwrap();
    let seen = repairs(&live, &name, "NotReady", |c| {
        c["spec"]["intent"]["action"] == "Remove"
    })
    .await;
    report("NotReady never cured", &seen);
    assert_eq!(
        actions(&seen),
        ["RestartKubelet", "Reboot", "Replace"],
        "{}",
        live.dump_claims()
    );
    assert!(seen[2].1 >= 20.0, "not before 20 min: {seen:?}");
    let replacement = live
        .claims_of("burst")
        .into_iter()
        .find(|c| c["metadata"]["name"] != name.as_str())
        .expect("a replacement was provisioned");
    assert_eq!(replacement["spec"]["requestedBy"], "health");
    let gone = eventually(PATIENCE, || live.claim(&name).is_none()).await;
    assert!(gone, "the sick worker is removed\n{}", live.dump_claims());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_pressure_is_freed_at_once_by_wiping_the_ephemeral_partition() {
    let live = lab("health-disk").await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "DiskPressure", Cure::WipeEphemeral)
        .unwrap();
    let seen = repairs(&live, &name, "DiskPressure", healed).await;
    report("DiskPressure", &seen);
    assert_eq!(actions(&seen), ["FreeDisk"], "{}", live.dump_claims());
    let uncordoned = eventually(PATIENCE, || {
        live.lab
            .kube
            .get("v1", "Node", "", &name)
            .is_ok_and(|n| n["spec"]["unschedulable"] != true)
    })
    .await;
    assert!(
        uncordoned,
        "the node is uncordoned once healthy\n{}\n{:?}",
        live.dump_claims(),
        live.lab
            .kube
            .get("v1", "Node", "", &name)
            .map(|n| n["status"]["conditions"].clone())
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_for_ten_minutes_drains_and_reboots() {
    let live = lab("health-memory").await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "MemoryPressure", Cure::Reboot)
        .unwrap();
    let seen = repairs(&live, &name, "MemoryPressure", healed).await;
    report("MemoryPressure", &seen);
    assert_eq!(actions(&seen), ["DrainReboot"], "{}", live.dump_claims());
    assert!(seen[0].1 >= 10.0, "not before 10 min: {seen:?}");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_crash_loop_seen_in_the_service_list_reboots_the_node() {
    let live = lab("health-crashloop").await;
    let name = worker(&live).await;
    live.lab.sickness.crash(&name, "kubelet", 3).unwrap();
    let seen = repairs(&live, &name, "KubeletCrashLoop", healed).await;
    report("kubelet crash loop", &seen);
    assert_eq!(actions(&seen), ["Reboot"], "{}", live.dump_claims());
    live.stop().await;
}

/// The Events on node `name` as (type, reason, message).
fn node_events(live: &Live, name: &str) -> Vec<(String, String, String)> {
    let events = live.lab.kube.list("v1", "Event", "", "").unwrap();
    events
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "Node" && e["involvedObject"]["name"] == name)
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (s(&e["type"]), s(&e["reason"]), s(&e["message"]))
        })
        .collect()
}

/// Waits until node `name` has an Event with `reason`; its type.
async fn event_type(live: &Live, name: &str, reason: &str) -> String {
    let seen = eventually(PATIENCE, || {
        node_events(live, name).iter().any(|(_, r, _)| r == reason)
    })
    .await;
    assert!(seen, "{reason} on {name}: {:?}", node_events(live, name));
    node_events(live, name)
        .into_iter()
        .find(|(_, r, _)| r == reason)
        .map(|(t, _, _)| t)
        .unwrap()
}

fn escalated(claim: &Value) -> bool {
    claim["status"]["health"]["escalatedAt"].is_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_worker_nothing_cures_is_escalated_and_never_destroyed() {
    let live = start(Setup {
        yaml: |y| {
            y.replace(
                "  - name: spot\n",
                "  - name: steady\n    kind: permanent\n    sizes: [small]\n    template: talos-worker-{size}-v1.8.0\n    limits: {maxNodes: 2}\n  - name: spot\n",
            )
        },
        time_scale: 300.0,
        ..Setup::new("health-permanent")
    })
    .await;
    let name = live
        .service()
        .provision(&tidepool_controller::service::ProvisionRequest {
            pool: "steady".into(),
            size: None,
            count: 1,
            ttl: None,
            requested_by: "health-test".into(),
            reason: "a permanent worker".into(),
        })
        .await
        .unwrap()
        .remove(0);
    let ready = eventually(PATIENCE, || {
        live.claim(&name)
            .is_some_and(|c| c["status"]["phase"] == "Ready")
    })
    .await;
    assert!(ready, "the worker turned Ready\n{}", live.dump_claims());
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::Never)
        .unwrap();
    let seen = repairs(&live, &name, "NotReady", escalated).await;
    report("NotReady never cured, permanent pool", &seen);
    // The levels below replace (one may be passed over when the lab runs
    // slow), never a replacement.
    let done = actions(&seen);
    assert!(
        !done.is_empty()
            && done
                .iter()
                .all(|a| ["RestartKubelet", "Reboot"].contains(a)),
        "{seen:?}\n{}",
        live.dump_claims()
    );
    assert_eq!(event_type(&live, &name, "HealthProblem").await, "Warning");
    assert_eq!(event_type(&live, &name, "RepairEscalated").await, "Warning");
    assert_eq!(event_type(&live, &name, "RepairDone").await, "Normal");
    // Another twenty minutes of lab time: still there, still kept.
    live.lab.clock.sleep(Duration::from_secs(20 * 60)).await;
    let claim = live.claim(&name).expect("never destroyed");
    assert_ne!(claim["spec"]["intent"]["action"], "Remove", "{claim}");
    assert_eq!(live.claims_of("steady").len(), 1, "never replaced");
    let escalations = node_events(&live, &name)
        .into_iter()
        .filter(|(_, r, _)| r == "RepairEscalated")
        .count();
    assert_eq!(escalations, 1, "escalated once");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_announces_each_level_and_carries_none_out() {
    let live = start(Setup {
        config: |c| {
            for p in &mut c.pools {
                p.idle_timeout = p.idle_timeout.map(|_| Duration::from_secs(24 * 3600));
                p.repair.replace = p.kind != tidepool_core::PoolKind::Permanent;
                p.repair.dry_run = true;
            }
        },
        time_scale: 300.0,
        ..Setup::new("health-dry-run")
    })
    .await;
    let name = worker(&live).await;
    // A kubelet restart would cure it, if one were carried out.
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::RestartKubelet)
        .unwrap();
    let seen = repairs(&live, &name, "NotReady", |c| {
        let last = &c["status"]["health"]["lastRepair"];
        last["action"] == "Replace" && last["outcome"].is_string()
    })
    .await;
    report("NotReady, dry run", &seen);
    assert_eq!(actions(&seen).last(), Some(&"Replace"), "{seen:?}");
    let claim = live.claim(&name).unwrap();
    assert_eq!(claim["status"]["health"]["lastRepair"]["outcome"], "DryRun");
    assert!(live.lab.sickness.is_ill(&name), "nothing was restarted");
    assert_eq!(live.claims_of("burst").len(), 1, "nothing was replaced");
    assert_ne!(claim["spec"]["intent"]["action"], "Remove", "{claim}");
    let would = || -> Vec<String> {
        node_events(&live, &name)
            .into_iter()
            .filter(|(_, r, _)| r == "RepairDryRun")
            .map(|(_, _, m)| m)
            .collect()
    };
    eventually(PATIENCE, || would().len() >= seen.len()).await;
    let would = would();
    assert!(
        would.len() >= seen.len() && would.iter().all(|m| m.starts_with("would ")),
        "each level announced as what would be done: {would:?}"
    );
    assert!(
        !node_events(&live, &name)
            .iter()
            .any(|(_, r, _)| r == "RepairStarted" || r == "RepairDone"),
        "nothing carried out"
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_fifth_of_the_pool_sick_is_escalated_and_nothing_repaired() {
    let live = lab("health-brake").await;
    let (a, b) = (worker(&live).await, worker(&live).await);
    for name in [&a, &b] {
        live.lab
            .sickness
            .fall_ill(name, "Ready", Cure::RestartKubelet)
            .unwrap();
    }
    let both = eventually(PATIENCE, || {
        [&a, &b]
            .iter()
            .all(|n| live.claim(n).as_ref().is_some_and(escalated))
    })
    .await;
    assert!(both, "both escalated\n{}", live.dump_claims());
    for name in [&a, &b] {
        let claim = live.claim(name).unwrap();
        assert!(
            claim["status"]["health"]["lastRepair"].is_null(),
            "no repair: {claim}"
        );
        assert!(live.lab.sickness.is_ill(name), "nothing was restarted");
        assert_eq!(event_type(&live, name, "RepairEscalated").await, "Warning");
        let (_, _, message) = node_events(&live, name)
            .into_iter()
            .find(|(_, r, _)| r == "RepairEscalated")
            .unwrap();
        assert!(message.contains("too-many-unhealthy"), "{message}");
    }
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_in_the_middle_of_a_window_keeps_it() {
    let mut live = lab_at("health-failover-mid-window", 200.0).await;
    let name = worker(&live).await;
    live.lab
        .sickness
        .fall_ill(&name, "Ready", Cure::Reboot)
        .unwrap();
    let first = repairs(&live, &name, "NotReady", |c| {
        c["status"]["health"]["lastRepair"]["outcome"].is_string()
    })
    .await;
    assert_eq!(
        actions(&first),
        ["RestartKubelet"],
        "{}",
        live.dump_claims()
    );
    let since = |live: &Live| {
        live.claim(&name).unwrap()["status"]["health"]["problems"][0]["since"].clone()
    };
    let before = since(&live);
    // A second controller takes the Lease as the first one stops.
    live.fail_over().await;
    let rest = repairs(&live, &name, "NotReady", |c| {
        c["status"]["health"]["lastRepair"]["action"] != "RestartKubelet"
    })
    .await;
    report("NotReady across a failover", &rest);
    assert_eq!(since(&live), before, "the window's start is kept");
    // The new leader goes on from the recorded window: the restart is
    // not repeated, the next level comes ten minutes or more after the
    // window's start (not after the new leader's).
    let next = rest.last().unwrap();
    assert!(
        ["Reboot", "Replace"].contains(&next.0.as_str()) && next.1 >= 10.0,
        "{rest:?}\n{}",
        live.dump_claims()
    );
    let restarts = node_events(&live, &name)
        .into_iter()
        .filter(|(_, r, m)| r == "RepairStarted" && m.starts_with("restart-kubelet"))
        .count();
    assert_eq!(restarts, 1, "the kubelet restart is not repeated");
    live.stop().await;
}
