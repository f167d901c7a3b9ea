//! The health monitor end to end (spec §7): the lab's controller with its
//! health loop against the emulators, a worker made sick through the lab
//! (a stopped kubelet and the node NotReady, memory or disk pressure, a
//! kubelet crash loop visible in Talos' ServiceList), and each row's
//! repairs asserted in order of escalation with the outcome: recovered or
//! replaced. Each test prints the lab time from the problem's start to
//! each repair.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, eventually, provision_one, start};
use serde_json::Value;
use tidepool_lab::sickness::Cure;

/// Real time a scenario may take (tens of lab minutes at 1000x).
const PATIENCE: Duration = Duration::from_secs(30);

/// The lab at 1000x; burst workers are never idle long enough to go and
/// may be replaced.
async fn lab(name: &'static str) -> Live {
    start(Setup {
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
