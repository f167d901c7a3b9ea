//! Lab end-to-end benchmark: a burst of 50 pods against the default home
//! lab with realistic durations (clone 45 s, boot 45 s, Talos install 45 s,
//! join 75 s), the controller autoscaling over real sockets. Prints the
//! simulated time from the burst to all pods Running, the reaction time
//! (first pod unschedulable → first claim created), and the overhead over
//! one VM's boot chain plus the trigger window.
//!
//! `cargo run --release -p tidepool-controller --example burst [-- SCALE]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use common::{Setup, start};

fn ts(v: &serde_json::Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0);
    let live = start(Setup {
        time_scale: scale,
        seed: 2,
        ..Setup::new("burst")
    })
    .await;
    let lab = &live.lab;
    let config = live.config.clone();
    let start = lab.clock.now();
    let real = std::time::Instant::now();
    lab.kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "burst", "namespace": "default"},
            "spec": {"replicas": 50, "selector": {"matchLabels": {"app": "burst"}},
                "template": {"metadata": {"labels": {"app": "burst"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                    "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}}
        }))
        .unwrap();
    let mut next_report = Duration::from_secs(10);
    loop {
        let pods = lab.kube.list("v1", "Pod", "default", "app=burst").unwrap();
        if pods.len() == 50 && pods.iter().all(|p| p["status"]["phase"] == "Running") {
            break;
        }
        if real.elapsed() > Duration::from_secs(600) {
            panic!("the burst did not complete");
        }
        if real.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            let claims = lab
                .kube
                .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
                .unwrap();
            let phases: Vec<String> = claims
                .iter()
                .map(|c| c["status"]["phase"].as_str().unwrap_or("-").to_owned())
                .collect();
            eprintln!(
                "  … {:.0} s real: {} of {} pods Running; workers {phases:?}",
                real.elapsed().as_secs_f64(),
                pods.iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count(),
                pods.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = lab.clock.now().duration_since(start).unwrap();
    let pods = lab.kube.list("v1", "Pod", "default", "app=burst").unwrap();
    let first_unschedulable = pods
        .iter()
        .filter_map(|p| {
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .filter(|c| c["type"] == "PodScheduled")
                .filter_map(|c| ts(&c["lastTransitionTime"]))
                .min()
        })
        .min();
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    let first_claim = claims
        .iter()
        .filter_map(|c| ts(&c["metadata"]["creationTimestamp"]))
        .min();
    let sizes: Vec<String> = claims
        .iter()
        .map(|c| c["spec"]["size"].as_str().unwrap_or("?").to_owned())
        .collect();
    let chain = 45 + 3 + 45 + 45 + 75;
    let window = config.pool("burst").unwrap().scale_up.pending_for.as_secs();
    println!("burst of 50 pods (1 CPU, 1Gi) at {scale}x");
    println!(
        "  workers created          {} ({})",
        claims.len(),
        sizes.join(", ")
    );
    println!(
        "  all Running after        {} s simulated ({:.2} s real)",
        total.as_secs(),
        real.elapsed().as_secs_f64()
    );
    if let (Some(u), Some(c)) = (first_unschedulable, first_claim) {
        let reaction = c.duration_since(u).as_secs_f64() - window as f64;
        println!(
            "  reaction                 {:.1} s simulated after the {window} s trigger window (unschedulable → first claim)",
            reaction.max(0.0)
        );
    }
    println!(
        "  one boot chain           {chain} s (clone 45 + start 3 + boot 45 + install 45 + join 75)"
    );
    println!(
        "  overhead                 {} s over window + one boot chain",
        total.as_secs() as i64 - window as i64 - chain
    );
    // Where the time went, for the first worker: each step's moment after
    // the burst was applied (simulated seconds).
    let start_ts = Timestamp::try_from(start).unwrap();
    let since = |t: Timestamp| t.duration_since(start_ts).as_secs_f64();
    if let Some(first) = claims.iter().min_by_key(|c| {
        c["metadata"]["creationTimestamp"]
            .as_str()
            .map(str::to_owned)
    }) {
        println!(
            "  timeline of {} (s after the burst):",
            first["metadata"]["name"].as_str().unwrap_or("?")
        );
        if let Some(t) = ts(&first["metadata"]["creationTimestamp"]) {
            println!("    {:>7.1}  claim created", since(t));
        }
        let mut conds: Vec<(Timestamp, String)> = first["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    ts(&c["lastTransitionTime"])?,
                    c["type"].as_str()?.to_owned(),
                ))
            })
            .collect();
        conds.sort();
        for (t, kind) in conds {
            println!("    {:>7.1}  {kind}", since(t));
        }
        let node = first["metadata"]["name"].as_str().unwrap_or("");
        let on_node: Vec<&serde_json::Value> = pods
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .collect();
        let bound = on_node
            .iter()
            .filter_map(|p| {
                p["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "PodScheduled" && c["status"] == "True")
                    .and_then(|c| ts(&c["lastTransitionTime"]))
            })
            .min();
        let running = on_node
            .iter()
            .filter_map(|p| ts(&p["status"]["startTime"]))
            .max();
        if let Some(t) = bound {
            println!("    {:>7.1}  first pod bound to it", since(t));
        }
        if let Some(t) = running {
            println!(
                "    {:>7.1}  last of its {} pods started",
                since(t),
                on_node.len()
            );
        }
    }
    live.stop().await;
}
