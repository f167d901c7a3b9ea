//! Cold spares benchmark: the same burst, two jobs of 6 CPU (one medium
//! worker each), against the default home lab with its realistic
//! durations (clone 45 s, start 3 s, boot 45 s, Talos install 45 s, join
//! 75 s) and the burst pool's 120 s trigger window, once without spares
//! and once with two medium spares parked beforehand, side by side in one
//! run. Prints, for each, the simulated time from the end of the trigger
//! window to both jobs Running.
//!
//! `cargo run --release -p tidepool-runtime --example spares [-- SCALE]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use serde_json::json;
use tidepool_core::config::Config;
use tidepool_core::spares::Spares;

use common::{Setup, eventually, start};

/// The burst pool offers mediums and scales up for two pods waiting its
/// default window.
fn mediums(c: &mut Config) {
    let burst = c.pools.iter_mut().find(|p| p.name == "burst").unwrap();
    burst.sizes = vec!["medium".into()];
    burst.scale_up.pending_pods = 2;
}

fn with_spares(c: &mut Config) {
    mediums(c);
    let burst = c.pools.iter_mut().find(|p| p.name == "burst").unwrap();
    burst.spares = Some(Spares {
        count: 2,
        size: "medium".into(),
    });
}

/// One run: the burst, and the simulated seconds from the end of the
/// trigger window to both jobs Running, with the workers that ran them.
async fn run(scale: f64, spares: bool) -> (f64, f64, Vec<String>) {
    let live = start(Setup {
        time_scale: scale,
        seed: 7,
        config: if spares { with_spares } else { mediums },
        ..Setup::new(if spares {
            "bench-spares"
        } else {
            "bench-clones"
        })
    })
    .await;
    let window = live.config.pool("burst").unwrap().scale_up.pending_for;
    if spares {
        let parked = || {
            live.claims_of("burst")
                .iter()
                .filter(|c| {
                    c["status"]["phase"] == "Spare"
                        && c["status"]["conditions"]
                            .as_array()
                            .is_some_and(|cs| cs.iter().any(|k| k["type"] == "VmStopped"))
                })
                .count()
        };
        let limit = Duration::from_secs_f64(2000.0 / scale + 60.0);
        assert!(eventually(limit, || parked() == 2).await, "spares parked");
    }
    let start = live.lab.clock.now();
    for name in ["job-a", "job-b"] {
        live.lab
            .kube
            .apply(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "job"}},
                "spec": {"nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                    "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": "6", "memory": "4Gi"}}}]}
            }))
            .unwrap();
    }
    let limit = Duration::from_secs_f64(2000.0 / scale + 60.0);
    assert!(
        eventually(limit, || live.running("default", "app=job").len() == 2).await,
        "the burst did not complete\n{}",
        live.dump_claims()
    );
    let total = live.lab.clock.now().duration_since(start).unwrap();
    let after_window = total.as_secs_f64() - window.as_secs_f64();
    let nodes = live
        .running("default", "app=job")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    live.stop().await;
    (total.as_secs_f64(), after_window, nodes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let (clone_total, clone_after, clone_nodes) = run(scale, false).await;
    let (spare_total, spare_after, spare_nodes) = run(scale, true).await;
    println!("burst of 2 jobs (6 CPU, 4Gi; one medium each), 120 s trigger window, at {scale}x");
    println!("| | without spares (clone) | with 2 spares |");
    println!("|---|---:|---:|");
    println!("| burst → both Running | {clone_total:.0} s | {spare_total:.0} s |");
    println!("| after the trigger window | **{clone_after:.0} s** | **{spare_after:.0} s** |");
    println!(
        "| workers | {} | {} |",
        clone_nodes.join(", "),
        spare_nodes.join(", ")
    );
    println!(
        "spares are {:.1}x faster after the trigger window",
        clone_after / spare_after.max(0.001)
    );
}
