//! The planner on the workload of Karpenter's provisioning-scheduler
//! benchmark (a plain binary, no harness), so the two can be compared on
//! one machine in one run: `scripts/bench-scheduler.sh` runs this and then
//! Karpenter's benchmark, and prints both side by side.
//!
//! Karpenter's `makeGenericPods`: every pod requests a CPU drawn uniformly
//! from {100m, 250m, 500m, 1, 1.5} and a memory from {100Mi, 256Mi, 512Mi,
//! 1Gi, 2Gi, 4Gi}, and carries one label drawn from seven values; nothing
//! else (no selector, affinity or spread). Here they all go to one pool
//! with the example configuration's three sizes (small, medium, large;
//! the large size's taint off), limits and batch size lifted, no existing
//! node. Karpenter's side gets three instance types with the same
//! allocatable: this binary prints them on a `SIZES` line that the script
//! hands to the Go benchmark.
//!
//! `cargo bench -p tidepool-core --bench karpenter_workload [-- COUNT...]`
//! (default 1,000, 5,000, 10,000 and 20,000 pods).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tidepool_core::TaintEffect;
use tidepool_core::config::{self, Config, EXAMPLE};
use tidepool_core::planner::{Action, HostSnapshot, PendingPod, PlanInput, PoolState, plan};
use tidepool_core::sched::{PodSpec, Requests, Toleration, TolerationOperator};

const MIB: u64 = 1 << 20;
const POOL: &str = "burst";
const SIZES: [&str; 3] = ["small", "medium", "large"];

/// SplitMix64, so every run sees the same pods.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// The example configuration with only the burst pool, untainted sizes,
/// and nothing that refuses.
fn config() -> Config {
    let mut cfg = config::load(EXAMPLE).unwrap();
    cfg.providers.get_mut("pve").unwrap().vmid_upper = 10_000_000;
    cfg.pools.retain(|p| p.name == POOL);
    for pool in &mut cfg.pools {
        pool.limits.max_nodes = 1_000_000;
        pool.limits.cpu_cores = None;
        pool.limits.memory_mib = None;
        pool.scale_up.batch_size = 1_000_000;
        pool.schedule.clear();
        pool.taints.clear();
    }
    for size in SIZES {
        cfg.sizes.get_mut(size).unwrap().taint = false;
    }
    cfg
}

/// Karpenter's generic pods (see the module doc).
fn workload(count: usize) -> Vec<PendingPod> {
    let mut rng = Rng(42);
    let cpus = [100, 250, 500, 1000, 1500];
    let memories = [100, 256, 512, 1024, 2048, 4096];
    let values = ["a", "b", "c", "d", "e", "f", "g"];
    (0..count)
        .map(|i| {
            let mut pod = PodSpec {
                namespace: "default".into(),
                name: format!("p{i:06}").into(),
                requests: Requests {
                    cpu_milli: cpus[rng.below(cpus.len())],
                    memory_bytes: memories[rng.below(memories.len())] * MIB,
                    ..Requests::default()
                },
                ..PodSpec::default()
            };
            let value = values[rng.below(values.len())];
            Arc::make_mut(&mut pod.labels).insert("my-label".into(), value.into());
            // A burst pool's workers carry its kind's taint (spec §3);
            // Karpenter's node pool in its benchmark has none, so the pods
            // tolerate ours to be placed alike.
            Arc::make_mut(&mut pod.tolerations).push(Toleration {
                key: "workload-type".into(),
                operator: TolerationOperator::Equal,
                value: POOL.into(),
                effect: Some(TaintEffect::NoSchedule),
            });
            PendingPod {
                pod,
                unschedulable_since: now(),
            }
        })
        .collect()
}

fn input(count: usize) -> PlanInput {
    let cfg = config();
    let host = HostSnapshot {
        name: "pve-01".into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: 1 << 40,
        memory_used_mib: 0,
        cores: 1 << 24,
        vcpus_allocated: 0,
        storage_free_gib: BTreeMap::from([("local-lvm".to_owned(), 1 << 40)]),
        gpu_free: BTreeMap::new(),
        vms: BTreeMap::new(),
        templates: cfg.templates(),
    };
    let pool_state = BTreeMap::from([(
        POOL.to_owned(),
        PoolState {
            emergency: true,
            ..PoolState::default()
        },
    )]);
    PlanInput {
        nodes: Vec::new(),
        pending: workload(count),
        claims: Vec::new(),
        hosts: vec![host],
        vmids_in_use: BTreeMap::new(),
        pool_state,
        now: now(),
        config: cfg,
    }
}

/// The median and fastest of at least five plans (more within a second).
fn time(input: &PlanInput) -> (Duration, Duration, BTreeMap<String, u32>) {
    let first = plan(input);
    assert!(
        first.unhelpable.is_empty() && first.waiting.is_empty(),
        "every pod gets capacity: unhelpable {:?}, waiting {:?}",
        first.unhelpable.first(),
        first.waiting.first()
    );
    let mut walls = Vec::new();
    let budget = Instant::now();
    while walls.len() < 5 || (walls.len() < 50 && budget.elapsed() < Duration::from_secs(1)) {
        let start = Instant::now();
        let out = plan(input);
        walls.push(start.elapsed());
        assert_eq!(out, first, "the planner is deterministic");
    }
    walls.sort();
    let mut asked = BTreeMap::new();
    for action in &first.actions {
        if let Action::Provision { size, count, .. } = action {
            *asked.entry(size.clone()).or_default() += count;
        }
    }
    (walls[walls.len() / 2], walls[0], asked)
}

fn main() {
    let mut counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if counts.is_empty() {
        counts = vec![1_000, 5_000, 10_000, 20_000];
    }
    let cfg = config();
    let sizes: Vec<String> = SIZES
        .iter()
        .map(|name| {
            let a = &cfg.size(name).unwrap().size.allocatable;
            format!(
                "{name}:{}m:{}Mi:{}",
                a.cpu_milli,
                a.memory_bytes / MIB,
                a.pods
            )
        })
        .collect();
    // name:cpu:memory:pods of each size's allocatable, for the Go side.
    println!("SIZES {}", sizes.join(","));
    println!("| pods | wall time (fastest) | pods/s | workers asked |");
    println!("|---:|---:|---:|---|");
    for count in counts {
        let input = input(count);
        let (median, fastest, asked) = time(&input);
        let mix: Vec<String> = asked.iter().map(|(s, c)| format!("{c} {s}")).collect();
        println!(
            "| {count} | {:.2} ms ({:.2}) | {:.0} | {} |",
            median.as_secs_f64() * 1e3,
            fastest.as_secs_f64() * 1e3,
            count as f64 / median.as_secs_f64(),
            mix.join(", ")
        );
    }
}
