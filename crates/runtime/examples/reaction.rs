//! Reaction-time benchmark: how long after a pod turns unschedulable the
//! controller asks Proxmox for the first clone. Runs the default home lab
//! in real time (time scale 1) with the burst pool's trigger set to one pod
//! and no window, so what is measured is the controller's own latency:
//! the watch event, the batching window, observation, the plan, the claim,
//! the reconciler picking it up and the executor's first steps.
//!
//! `cargo run --release -p tidepool-controller --example reaction [-- ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tidepool_lab::RunningLab;
use tidepool_runtime::run::BATCH_WINDOW;

use common::{Setup, start};

fn unschedulable(lab: &RunningLab, name: &str) -> bool {
    lab.kube
        .list("v1", "Pod", "default", "")
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["name"] == name)
        .any(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            })
        })
}

fn claimed(lab: &RunningLab) -> bool {
    !lab.kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap()
        .is_empty()
}

fn cloned(lab: &RunningLab) -> bool {
    lab.pve
        .vms()
        .iter()
        .any(|v| (1250..=1300).contains(&v.vmid))
}

async fn round(seed: u64) -> (Duration, Duration) {
    let live = start(Setup {
        time_scale: 1.0,
        seed,
        config: |c| {
            for pool in c.pools.iter_mut().filter(|p| p.name == "burst") {
                pool.scale_up.pending_pods = 1;
                pool.scale_up.pending_for = Duration::ZERO;
            }
        },
        ..Setup::new("reaction")
    })
    .await;
    let lab = &live.lab;
    // Let the controller sync its caches and finish its first pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let name = format!("reaction-{seed}");
    lab.kube
        .apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeSelector": {"node-pool": "burst"},
                "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
        }))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_unschedulable = None;
    let mut seen_claim = None;
    let result = loop {
        let now = Instant::now();
        assert!(now < deadline, "no clone within 30 s");
        if seen_unschedulable.is_none() && unschedulable(lab, &name) {
            seen_unschedulable = Some(now);
        }
        if let Some(t0) = seen_unschedulable {
            if seen_claim.is_none() && claimed(lab) {
                seen_claim = Some(now - t0);
            }
            if cloned(lab) {
                break (seen_claim.unwrap_or(now - t0), now - t0);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    live.stop().await;
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!(
        "reaction at time scale 1, batching window {} ms, trigger: 1 pod, no window",
        BATCH_WINDOW.as_millis()
    );
    println!("  round  unschedulable → claim  unschedulable → clone request");
    let mut clones = Vec::new();
    for seed in 1..=rounds {
        let (claim, clone) = round(seed).await;
        println!(
            "  {seed:>5}  {:>20.0} ms  {:>28.0} ms",
            claim.as_secs_f64() * 1e3,
            clone.as_secs_f64() * 1e3
        );
        clones.push(clone);
    }
    clones.sort();
    let median = clones[clones.len() / 2];
    let worst = clones[clones.len() - 1];
    println!(
        "  first clone request: median {:.0} ms, worst {:.0} ms over {rounds} rounds",
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
}
