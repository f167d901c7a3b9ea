//! The executor over the production adapters against the lab, over real
//! sockets: three burst workers are provisioned to Ready with the spec §3
//! labels and taints, listed with their expiry, and destroyed to nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::live_options;
use serde_json::Value;
use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions};
use tidepool_controller::service::{ProvisionRequest, Service, WorkerFilter};
use tidepool_lab::{LabOptions, Scenario};
use tidepool_live::connect::connect;

const SCALE: f64 = 200.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_burst_workers_are_provisioned_in_the_lab_and_destroyed_again() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("tidepool-live-{}", std::process::id()));
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: dir,
        time_scale: SCALE,
        seed: 7,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    let exec = Arc::new(connect(config, &live_options(&lab)).await.unwrap());
    let svc = Service::new(exec.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = ReconcilerOptions {
        // 50 ms of real time on the lab's clock.
        resync: Duration::from_millis(50).mul_f64(SCALE),
        min_wait: Duration::from_millis(10),
        max_backoff: Duration::from_millis(500),
    };
    let reconciler = Reconciler::new(exec.clone(), options).spawn(stop_rx);
    let started = std::time::Instant::now();
    let names = svc
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: Some("small".into()),
            count: 3,
            ttl: Some(Duration::from_secs(4 * 3600)),
            requested_by: "live-test".into(),
            reason: "lab end to end".into(),
        })
        .await
        .unwrap();
    let mut ready = Vec::new();
    for _ in 0..600 {
        let workers = svc.list_workers(&WorkerFilter::default()).await.unwrap();
        ready = workers
            .iter()
            .filter(|w| names.contains(&w.name) && w.phase == tidepool_core::Phase::Ready)
            .map(|w| w.name.clone())
            .collect();
        if let Some(failed) = workers
            .iter()
            .find(|w| w.phase == tidepool_core::Phase::Failed)
        {
            panic!("worker failed: {failed:?}");
        }
        if ready.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready.len(), 3, "all three Ready");
    eprintln!(
        "3 workers Ready in {:?} real time at {SCALE}x",
        started.elapsed()
    );
    for name in &names {
        let node: Value = lab.kube.get("v1", "Node", "", name).unwrap();
        let labels = &node["metadata"]["labels"];
        assert_eq!(labels["node-pool"], "burst");
        assert_eq!(labels["worker-type"], "temporary");
        assert_eq!(labels["workload-size"], "small");
        assert_eq!(labels["tidepool.dev/claim"], name.as_str());
        assert!(labels["ttl"].as_str().unwrap().parse::<i64>().is_ok());
        let taints = node["spec"]["taints"].as_array().unwrap();
        assert!(taints.iter().any(|t| t["key"] == "workload-type"
            && t["value"] == "burst"
            && t["effect"] == "NoSchedule"));
        let w = svc.get_worker(name).await.unwrap();
        assert!(w.expires_at.is_some());
        let vm = lab.pve.vm(w.vmid.unwrap()).unwrap();
        assert!(vm.tags.contains(&"tidepool".to_owned()) && vm.tags.contains(name));
        assert!(vm.running);
    }
    // Destroy: one drained properly, two forced.
    let refused = svc
        .destroy("live-test", &names[0], false)
        .await
        .unwrap_err();
    assert_eq!(
        refused.category(),
        tidepool_controller::service::ErrorCategory::Refused
    );
    svc.drain("live-test", &names[0]).await.unwrap();
    for _ in 0..400 {
        if svc.get_worker(&names[0]).await.unwrap().phase == tidepool_core::Phase::Draining
            && svc.get_worker(&names[0]).await.unwrap().cordoned
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.destroy("live-test", &names[0], false).await.unwrap();
    svc.destroy("live-test", &names[1], true).await.unwrap();
    svc.destroy("live-test", &names[2], true).await.unwrap();
    for _ in 0..600 {
        let left = svc.list_workers(&WorkerFilter::default()).await.unwrap();
        if !left.iter().any(|w| names.contains(&w.name)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = svc.list_workers(&WorkerFilter::default()).await.unwrap();
    assert!(!left.iter().any(|w| names.contains(&w.name)), "{left:?}");
    assert!(
        lab.pve.vms().iter().all(|v| v.vmid < 1250 || v.vmid > 1300),
        "no VM left in the range"
    );
    assert!(
        lab.pve.vm(100).unwrap().running,
        "the TrueNAS VM is untouched"
    );
    // The audit trail is on the claims as Events.
    let events = lab.kube.list("v1", "Event", "default", "").unwrap();
    let audit: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == "WorkerClaim"
                && e["involvedObject"]["name"] == names[0].as_str()
        })
        .collect();
    let messages: Vec<&str> = audit.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("provision by live-test")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("destroy by live-test") && m.ends_with("(refused)")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("drain by live-test")),
        "{messages:?}"
    );
    stop_tx.send(true).unwrap();
    let _ = reconciler.await;
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_placed_by_the_planners_rule_and_one_that_fits_nowhere_fails() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-place-{}", std::process::id())),
        time_scale: SCALE,
        seed: 8,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    let exec = Arc::new(connect(config, &live_options(&lab)).await.unwrap());
    let svc = Service::new(exec.clone());
    // pve-01 has about 90 GiB of headroom and a spare GPU, pve-02 about
    // 54 GiB and none: the first 32 GiB worker goes to pve-02 (a VM
    // without a GPU keeps off the GPU host while another has room), the
    // next two to pve-01.
    let names = svc
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: Some("large".into()),
            count: 3,
            ttl: None,
            requested_by: "placement".into(),
            reason: "placement".into(),
        })
        .await
        .unwrap();
    let mut hosts = Vec::new();
    for n in &names {
        exec.step(n).await.unwrap();
        hosts.push(svc.get_worker(n).await.unwrap().host.unwrap());
    }
    hosts.sort();
    assert_eq!(hosts, ["pve-01", "pve-01", "pve-02"]);
    for n in &names {
        let phase = exec
            .run_until_idle(n, Duration::from_secs(30), Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(
            phase,
            tidepool_core::Phase::Ready,
            "{:?}",
            svc.get_worker(n).await
        );
    }
    let on_pve02 = lab
        .pve
        .vms()
        .into_iter()
        .filter(|v| v.node == "pve-02" && (1250..=1300).contains(&v.vmid))
        .count();
    assert_eq!(on_pve02, 1, "cloned from the template on pve-02");
    // A fourth does not fit anywhere: it fails at allocation with the reason.
    let fourth = svc
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: Some("large".into()),
            count: 1,
            ttl: None,
            requested_by: "placement".into(),
            reason: "placement".into(),
        })
        .await
        .unwrap()
        .remove(0);
    let phase = exec
        .run_until_idle(&fourth, Duration::from_secs(10), Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(phase, tidepool_core::Phase::Failed);
    let failure = svc.get_worker(&fourth).await.unwrap().failure.unwrap();
    assert!(
        failure.starts_with("allocateVmid: no host has room: pve-0")
            && failure.contains(": memory (VM needs"),
        "{failure}"
    );
    lab.shutdown().await;
}
