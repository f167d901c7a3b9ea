//! `tidepool run --dry-run` against a lab with a burst pending: it plans
//! and explains the scale-up (Events saying what it would do) and changes
//! nothing in either API: the Proxmox VMs and task list, and every
//! WorkerClaim, Node, ConfigMap and Lease, are as they were.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";

/// What a dry run must leave alone: every WorkerClaim, ConfigMap and
/// Lease with its resourceVersion, and every Node's metadata and spec
/// (what Tidepool writes: labels, taints, cordons, deletion; the lab's
/// kubelets refresh the Ready heartbeat in the status on their own).
fn kube_state(lab: &RunningLab) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (api, kind) in [
        ("tidepool.dev/v1alpha1", "WorkerClaim"),
        ("v1", "ConfigMap"),
        ("coordination.k8s.io/v1", "Lease"),
        ("v1", "Node"),
    ] {
        for obj in lab.kube.list(api, kind, "", "").unwrap() {
            let meta = &obj["metadata"];
            let seen = if kind == "Node" {
                let mut m = meta.clone();
                m["resourceVersion"] = Value::Null;
                format!("{m} {}", obj["spec"])
            } else {
                meta["resourceVersion"].as_str().unwrap_or("").to_owned()
            };
            out.push((
                kind.to_owned(),
                format!(
                    "{}/{}",
                    meta["namespace"].as_str().unwrap_or(""),
                    meta["name"].as_str().unwrap()
                ),
                seen,
            ));
        }
    }
    out
}

fn dry_run_events(lab: &RunningLab) -> Vec<String> {
    lab.kube
        .list("v1", "Event", "", "")
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains("[dry run]"))
        .collect()
}

fn start_dry_run(lab: &RunningLab) -> Child {
    let base = std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = base.replace(
        "metricsAddr: 127.0.0.1:9464",
        &format!("metricsAddr: 127.0.0.1:{port}"),
    );
    assert_ne!(text, base);
    let config = lab
        .files
        .tidepool_yaml
        .with_file_name("tidepool-dry-run.yaml");
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(&lab.files.kubeconfig)
        .args(["--time-scale", SCALE])
        .args(["--time-origin", &lab.clock.origin_unix_ms().to_string()])
        .args(["run", "--dry-run"])
        .env("TIDEPOOL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidepool run --dry-run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_explains_the_scale_up_and_changes_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-dry-run-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 11,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    lab.kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ci", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "ci"}},
                "template": {"metadata": {"labels": {"app": "ci"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "runner", "image": "runner:1",
                        "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
        }))
        .unwrap();
    // The burst is pending before the dry run starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab
        .kube
        .list("v1", "Pod", "default", "app=ci")
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "Unschedulable"))
        })
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "the burst never became pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vms_before = lab.pve.vms();
    let tasks_before = lab.pve.task_upids();
    let kube_before = kube_state(&lab);

    let mut child = start_dry_run(&lab);
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = dry_run_events(&lab);
        if events
            .iter()
            .any(|m| m.contains("would create WorkerClaim"))
        {
            break events;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the dry run ended ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no dry-run Event within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let the next passes see the claims it would have made.
    let settle = lab.clock.now() + Duration::from_secs(120);
    while lab.clock.now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("would create WorkerClaim"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");

    assert_eq!(lab.pve.vms(), vms_before, "Proxmox VMs changed");
    assert_eq!(
        lab.pve.task_upids(),
        tasks_before,
        "Proxmox tasks were started"
    );
    assert_eq!(kube_state(&lab), kube_before, "Kubernetes objects changed");
    // Each would-be claim is announced once, however many passes ran.
    let created: Vec<String> = dry_run_events(&lab)
        .into_iter()
        .filter(|m| m.contains("would create WorkerClaim"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = created.iter().collect();
    assert_eq!(distinct.len(), created.len(), "{events:#?}");
    lab.shutdown().await;
}
