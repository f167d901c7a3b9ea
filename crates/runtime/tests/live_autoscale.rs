//! The autoscaler against the lab: a burst of pending pods gets workers,
//! the pods run, the pods go away and the idle workers are removed again;
//! a pod no pool can host is told why.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, start};
use serde_json::json;

fn running(live: &Live, selector: &str) -> usize {
    live.running("default", selector).len()
}

fn autoscaled(live: &Live) -> usize {
    live.claims()
        .iter()
        .filter(|c| c["spec"]["requestedBy"] == "autoscaler")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_handled_and_scaled_back_down() {
    let live = start(Setup::new("autoscale")).await;
    let scale = live.lab.clock.scale();
    let lab = &live.lab;

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
        if running(&live, "app=ci") == 6 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "all six runners Running\n{}", live.dump_claims());
    eprintln!(
        "burst of 6 pods Running after {:?} real ({scale}x)",
        started.elapsed()
    );
    // Six 3-CPU pods need 2 to 6 workers: two large ones (16 CPU each)
    // when the planner sees all six waiting at once, as it does on the real
    // control plane, more of smaller sizes when they arrive in waves; the
    // burst pool's CPU pressure (its nodes over 80 % requested) may add one
    // or two more, one per 5 minutes of simulated pressure, as spec §4 asks.
    let workers = autoscaled(&live);
    assert!(
        (2..=8).contains(&workers),
        "{workers} workers for 6 pods of 3 CPU"
    );
    // The operators' view counts the six pods on the burst workers (from
    // the watch-fed caches: DaemonSet, mirror and finished pods do not
    // count).
    let filter = tidepool_controller::service::WorkerFilter {
        worker_type: None,
        pool: Some("burst".into()),
    };
    let mut views = Vec::new();
    for _ in 0..100 {
        // The caches may trail the lab by a moment.
        views = live.service().list_workers(&filter).await.unwrap();
        if views.iter().map(|w| w.workload_pods).sum::<u64>() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_burst: u64 = views.iter().map(|w| w.workload_pods).sum();
    assert_eq!(on_burst, 6, "{views:?}");

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

    let metrics = live.metrics().await;
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
        if autoscaled(&live) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "{} autoscaled workers left", autoscaled(&live));
    assert!(
        lab.pve
            .vms()
            .iter()
            .all(|v| !(1250..=1300).contains(&v.vmid)),
        "their VMs are deleted"
    );
    let node_events = |reason: &str| {
        live.lab
            .kube
            .list("v1", "Event", "", "")
            .unwrap()
            .into_iter()
            .filter(|e| e["involvedObject"]["kind"] == "Node" && e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    let scale_downs = node_events("ScaleDown");
    assert!(
        !scale_downs.is_empty() && scale_downs.iter().all(|m| m.contains("idle")),
        "each removed node is told why: {scale_downs:?}"
    );
    let joined = node_events("WorkerReady");
    assert!(
        joined.len() >= scale_downs.len()
            && joined
                .iter()
                .all(|m| m.contains("pool ") && m.contains(" after it was requested")),
        "each added node says it joined: {joined:?}"
    );
    // The scale-down interval counts from a moment kept in the cluster, in
    // the pool's record, so a restarted controller keeps it.
    let record = live
        .lab
        .kube
        .get("v1", "ConfigMap", "tidepool-system", "tidepool-pool-burst")
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_str(record["data"]["record"].as_str().unwrap()).unwrap();
    assert!(
        record["timers"]["lastScaleDown"].is_string(),
        "the last scale-down is recorded: {record}"
    );
    eprintln!("scaled back down after {:?} real", started.elapsed());
    live.stop().await;
}
