//! The autoscaler against the lab: a burst of pending pods gets workers,
//! the pods run, the pods go away and the idle workers are removed again;
//! a pod no pool can host is told why.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tidepool_controller::live::connect::{LiveOptions, connect};
use tidepool_controller::run::{RunOptions, run};
use tidepool_lab::{LabOptions, Scenario};

const SCALE: f64 = 1000.0;

fn running(lab: &tidepool_lab::RunningLab, selector: &str) -> usize {
    lab.kube
        .list("v1", "Pod", "default", selector)
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}

fn autoscaled(lab: &tidepool_lab::RunningLab) -> usize {
    lab.kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap()
        .iter()
        .filter(|c| c["spec"]["requestedBy"] == "autoscaler")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_handled_and_scaled_back_down() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-autoscale-{}", std::process::id())),
        time_scale: SCALE,
        seed: 4,
    })
    .await
    .unwrap();
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    let clock = lab.clock.clone();
    let exec = Arc::new(
        connect(
            config,
            &LiveOptions {
                config_dir: lab.files.dir.clone(),
                kubeconfig: Some(lab.files.kubeconfig.clone()),
                now: Arc::new(move || Timestamp::try_from(clock.now()).unwrap()),
            },
        )
        .await
        .unwrap(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let controller = tokio::spawn(run(
        exec,
        RunOptions {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            lease: None,
            time_scale: SCALE,
            autoscale: true,
        },
        stop_rx,
        Some(bound_tx),
    ));
    let metrics_addr = bound_rx.await.unwrap();

    let runners = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ci-runners", "namespace": "default"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "ci"}},
            "template": {"metadata": {"labels": {"app": "ci"}}, "spec": {
                "nodeSelector": {"node-pool": "burst"},
                "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                "containers": [{"name": "runner", "image": "runner:1", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
    });
    lab.kube.apply(runners).unwrap();
    lab.kube
        .apply(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "too-big", "namespace": "default"},
            "spec": {"nodeSelector": {"node-pool": "burst"},
                "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                "containers": [{"name": "x", "image": "x:1", "resources": {"requests": {"cpu": "100"}}}]}
        }))
        .unwrap();

    let started = std::time::Instant::now();
    let mut ok = false;
    for _ in 0..600 {
        if running(&lab, "app=ci") == 6 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "all six runners Running; claims: {:?}",
        lab.kube
            .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
            .unwrap()
            .iter()
            .map(|c| (
                c["metadata"]["name"].clone(),
                c["spec"]["size"].clone(),
                c["status"]["phase"].clone(),
                c["status"]["lastError"].clone()
            ))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "burst of 6 pods Running after {:?} real ({SCALE}x)",
        started.elapsed()
    );
    // Six 3-CPU pods need 3 to 6 workers; the burst pool's CPU pressure
    // (its nodes are over 80 % requested) may add one or two more, one per
    // 5 minutes of simulated pressure, as spec §4 asks.
    let workers = autoscaled(&lab);
    assert!(
        (3..=8).contains(&workers),
        "{workers} workers for 6 pods of 3 CPU"
    );

    let events = lab.kube.list("v1", "Event", "default", "").unwrap();
    let reasons: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["involvedObject"]["name"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(n, r)| n.starts_with("ci-runners") && *r == "TriggeredScaleUp"),
        "{reasons:?}"
    );
    let not = events
        .iter()
        .find(|e| e["involvedObject"]["name"] == "too-big" && e["reason"] == "NotTriggerScaleUp")
        .expect("the oversized pod is told why");
    assert!(
        not["message"]
            .as_str()
            .unwrap()
            .contains("didn't trigger scale-up"),
        "{not}"
    );

    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for wanted in [
        "tidepool_scaling_decisions_total{reason=\"pending-pods\"}",
        "tidepool_provisioning_duration_seconds_count{pool=\"burst\"}",
        "tidepool_pending_pods",
        "tidepool_workers{pool=\"burst\",phase=\"Ready\"}",
    ] {
        assert!(metrics.contains(wanted), "missing {wanted} in\n{metrics}");
    }

    // The burst is over: the idle workers go, gradually.
    lab.kube
        .delete("apps/v1", "Deployment", "default", "ci-runners")
        .unwrap();
    lab.kube.delete("v1", "Pod", "default", "too-big").unwrap();
    let mut gone = false;
    for _ in 0..1200 {
        if autoscaled(&lab) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "{} autoscaled workers left", autoscaled(&lab));
    assert!(
        lab.pve
            .vms()
            .iter()
            .all(|v| !(1250..=1300).contains(&v.vmid)),
        "their VMs are deleted"
    );
    eprintln!("scaled back down after {:?} real", started.elapsed());
    stop_tx.send(true).unwrap();
    let _ = controller.await;
    lab.shutdown().await;
}
