//! Scale-out benchmark in the manner of Karpenter's performance suite:
//! 1,000 pending pods across three pools at once, the controller
//! autoscaling over real sockets against the lab with the home lab's
//! realistic durations (clone 45 s, start 3 s, boot 45 s, Talos install
//! 45 s, join 75 s) on two hosts made big enough for every worker.
//!
//! The pools: `burst` and `spot` of the lab's configuration and a third,
//! `batch` (a burst pool), each with the sizes small, medium and large and
//! no limit but the VMID range. The pods, by pool: `burst` 200 web pods
//! (250m, 512Mi), 100 API pods (500m, 1Gi) and 50 JVM pods (1, 3Gi);
//! `spot` 150 batch pods (1500m, 1Gi) and 200 queue workers (250m, 256Mi);
//! `batch` 100 builds (2, 4Gi) and 200 test runners (500m, 2Gi).
//!
//! Prints: workers asked against the lower bound (per pool, for each of
//! CPU, memory and pod slots, the total requests over the largest
//! allocatable of the pool's sizes, rounded up; the largest of the three),
//! the simulated time until every pod runs against one trigger window
//! plus one boot chain, the Proxmox API calls made (the lab counts them by
//! path), the most clones in flight per host, and the clone tasks that
//! failed.
//!
//! `cargo run --release -p tidepool-runtime --example scale_out [-- SCALE [MAX_PARALLEL_CLONES]]`
//! (time scale 10 and the configuration's default cap when left out).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tidepool_core::config::Config;

use common::{Setup, start};

/// (pool, deployment, replicas, cpu, memory).
const WORKLOAD: [(&str, &str, u32, &str, &str); 7] = [
    ("burst", "web", 200, "250m", "512Mi"),
    ("burst", "api", 100, "500m", "1Gi"),
    ("burst", "jvm", 50, "1", "3Gi"),
    ("spot", "batch", 150, "1500m", "1Gi"),
    ("spot", "queue", 200, "250m", "256Mi"),
    ("batch", "build", 100, "2", "4Gi"),
    ("batch", "tests", 200, "500m", "2Gi"),
];

/// One boot chain of the home lab, simulated seconds.
const CHAIN: u64 = 45 + 3 + 45 + 45 + 75;

/// The lab's configuration with three unlimited pools of three sizes and
/// room for a thousand VMIDs.
fn yaml(text: String) -> String {
    let text = text
        .replace(
            "vmidRange: {lower: 1250, upper: 1300}",
            "vmidRange: {lower: 1250, upper: 2250}",
        )
        .replace(
            "limits: {minNodes: 0, maxNodes: 10, cpuCores: 96, memoryMiB: 196608}",
            "limits: {minNodes: 0, maxNodes: 1000}",
        )
        .replace(
            "    sizes: [small]\n    template: talos-worker-{size}-v1.8.0\n    limits: {maxNodes: 4}",
            "    sizes: [small, medium, large]\n    template: talos-worker-{size}-v1.8.0\n    limits: {maxNodes: 1000}",
        );
    let batch = "  - name: batch
    kind: burst
    sizes: [small, medium, large]
    template: talos-worker-{size}-v1.8.0
    limits: {minNodes: 0, maxNodes: 1000}
    idleTimeout: 30m
";
    let cap = std::env::args()
        .nth(2)
        .map_or(String::new(), |n| format!("    maxParallelClones: {n}\n"));
    text.replacen("pools:\n", &format!("pools:\n{batch}"), 1)
        .replacen(
            "    fullClone: true\n",
            &format!("    fullClone: true\n{cap}"),
            1,
        )
}

/// The lower bound of the module doc, per pool.
fn lower_bounds(config: &Config) -> BTreeMap<&'static str, u64> {
    let mut totals: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for (pool, _, replicas, cpu, memory) in WORKLOAD {
        let t = totals.entry(pool).or_default();
        t[0] += u64::from(replicas) * tidepool_core::quantity::Quantity::milli_lenient(cpu);
        t[1] += u64::from(replicas) * tidepool_core::quantity::Quantity::units_lenient(memory);
        t[2] += u64::from(replicas);
    }
    totals
        .into_iter()
        .map(|(pool, t)| {
            let sizes = &config.pool(pool).unwrap().sizes;
            let best = |f: fn(&tidepool_core::config::SizeEntry) -> u64| {
                sizes
                    .iter()
                    .map(|s| f(config.size(s).unwrap()))
                    .max()
                    .unwrap()
            };
            let offer = [
                best(|s| s.size.allocatable.cpu_milli),
                best(|s| s.size.allocatable.memory_bytes),
                best(|s| u64::from(s.size.allocatable.pods)),
            ];
            let bound = (0..3).map(|r| t[r].div_ceil(offer[r])).max().unwrap();
            (pool, bound)
        })
        .collect()
}

fn deployment(pool: &str, name: &str, replicas: u32, cpu: &str, memory: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("{pool}-{name}"), "namespace": "default"},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": format!("{pool}-{name}")}},
            "template": {"metadata": {"labels": {"app": format!("{pool}-{name}"), "scale-out": "yes"}},
                "spec": {
                    "nodeSelector": {"node-pool": pool},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "w", "image": "w:1",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}}
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let mut scenario = tidepool_lab::Scenario::default_home_lab().unwrap();
    for host in &mut scenario.proxmox.hosts {
        host.memory_mib = 8 << 20; // 8 TiB
        host.cores = 2048;
        for storage in &mut host.storages {
            storage.total_gib = 1 << 20;
            storage.free_gib = 1 << 20;
        }
    }
    let live = start(Setup {
        time_scale: scale,
        seed: 2,
        scenario,
        yaml,
        ..Setup::new("scale-out")
    })
    .await;
    let lab = &live.lab;
    let config = live.config.clone();
    let calls_before: u64 = lab.pve.requests().values().sum();
    let start = lab.clock.now();
    let real = Instant::now();
    for (pool, name, replicas, cpu, memory) in WORKLOAD {
        lab.kube
            .apply(deployment(pool, name, replicas, cpu, memory))
            .unwrap();
    }
    let total: u32 = WORKLOAD.iter().map(|w| w.2).sum();
    let mut peak: BTreeMap<String, usize> = BTreeMap::new();
    let mut next_report = Duration::from_secs(10);
    loop {
        let pods = lab
            .kube
            .list("v1", "Pod", "default", "scale-out=yes")
            .unwrap();
        let running = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if pods.len() == total as usize && running == pods.len() {
            break;
        }
        let mut cloning: BTreeMap<String, usize> = BTreeMap::new();
        for vm in lab.pve.vms() {
            if vm.lock.as_deref() == Some("clone") {
                *cloning.entry(vm.node.clone()).or_default() += 1;
            }
        }
        for (host, n) in cloning {
            let p = peak.entry(host).or_default();
            *p = (*p).max(n);
        }
        assert!(
            real.elapsed() < Duration::from_secs(1800),
            "the scale-out did not complete"
        );
        if real.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            eprintln!(
                "  … {:.0} s real, {} s simulated: {running} of {} pods Running",
                real.elapsed().as_secs_f64(),
                lab.clock.now().duration_since(start).unwrap().as_secs(),
                pods.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = lab.clock.now().duration_since(start).unwrap().as_secs();
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    let bounds = lower_bounds(&config);
    let window = bounds
        .keys()
        .map(|p| config.pool(p).unwrap().scale_up.pending_for.as_secs())
        .max()
        .unwrap_or(0);
    println!(
        "scale-out of {total} pods across three pools at {scale}x, maxParallelClones {}",
        config.providers["pve"].max_parallel_clones
    );
    println!("| pool | pods | workers asked | lower bound | ratio |");
    println!("|---|---:|---|---:|---:|");
    let (mut asked_all, mut bound_all) = (0, 0);
    for (pool, bound) in &bounds {
        let mut by_size: BTreeMap<String, u32> = BTreeMap::new();
        for c in claims.iter().filter(|c| c["spec"]["pool"] == *pool) {
            *by_size
                .entry(c["spec"]["size"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let asked: u32 = by_size.values().sum();
        let mix: Vec<String> = by_size.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let pods: u32 = WORKLOAD.iter().filter(|w| w.0 == *pool).map(|w| w.2).sum();
        println!(
            "| {pool} | {pods} | {asked} ({}) | {bound} | {:.3} |",
            mix.join(", "),
            f64::from(asked) / *bound as f64
        );
        asked_all += asked;
        bound_all += bound;
    }
    println!(
        "| all | {total} | {asked_all} | {bound_all} | {:.3} |",
        f64::from(asked_all) / bound_all as f64
    );
    let failed = claims
        .iter()
        .filter(|c| c["status"]["phase"] == "Failed")
        .count();
    println!(
        "all Running after          {took} s simulated ({:.1} s real)",
        real.elapsed().as_secs_f64()
    );
    println!(
        "trigger window + one chain {window} + {CHAIN} = {} s; overhead {} s",
        window + CHAIN,
        took as i64 - (window + CHAIN) as i64
    );
    println!("most clones in flight      {peak:?}");
    println!("claims failed              {failed}");
    let requests = lab.pve.requests();
    let calls: u64 = requests.values().sum::<u64>() - calls_before;
    println!(
        "Proxmox API calls          {calls} during the scale-out; by path over the whole run:"
    );
    let mut by_count: Vec<(&String, &u64)> = requests.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    for (path, n) in by_count.iter().take(12) {
        println!("  {n:>7}  {path}");
    }
    let tasks = lab.pve.task_upids();
    let clone_tasks = tasks.iter().filter(|u| u.contains(":qmclone:")).count();
    println!("clone tasks                {clone_tasks}");
    live.stop().await;
}
