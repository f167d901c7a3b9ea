//! Planner benchmark (a plain binary, no harness). Run it in release mode
//! with `cargo bench -p tidepool-core --bench planner`.
//!
//! The matrix is (1k, 10k, 50k) pending pods × (10, 100, 1,000) existing
//! nodes × three pools (`permanent`: medium; `burst`: small, medium and
//! large; `gpu`: gpu). Every cell prints the planner's wall time (median
//! of several runs), pods per second, the workers it asks for, the lower
//! bound and, beside them, the naive rule of seed 000 with the pods its
//! workers would leave unplaced. A detail table per cell splits the figures
//! by pool.
//!
//! The workload is generated from a fixed seed: several request shapes
//! (small web pods, memory-heavy caches, CPU-heavy batch pods, a few big
//! ones and about 1 % GPU pods), each jittered by up to ±20 %; 40 % of the
//! pods carry no selector (the permanent pool takes them), the others
//! select and tolerate the burst pool or the GPU pool. The existing nodes
//! are busy permanent workers with 50m CPU left, so no pending pod fits
//! them and every pod is checked against every node before it is packed.
//!
//! Lower bound, per pool, over the pods the pool takes: for each resource
//! r in cpu, memory, pod slots and GPUs, ceil(total requests of r / the
//! largest allocatable of r over the pool's sizes); the pool's bound is the
//! largest of these and the cell's bound is their sum. No plan, whatever
//! its mix of sizes, hosts the pods on fewer workers (each worker offers at
//! most the largest allocatable of each resource). The example's sizes are
//! nested (small < medium < large in every resource), so this equals the
//! best over the pool's sizes of the same figure for one size.
//!
//! The naive rule (seed 000), applied per pool so it gets the pool grouping
//! for free: sum the requests of the pool's pods, choose `large` when they
//! exceed 8 CPU or 16 GiB, `medium` above 4 CPU or 8 GiB, `small` below
//! (the pool's largest size when it lacks the one chosen), and ask for
//! max over cpu and memory of ceil(total / allocatable) workers of it. Its
//! workers are then filled with the same scheduling check as the planner
//! (`sched::fits`), first fit in the pods' arrival order; the pods that fit
//! none are counted as left over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tidepool_core::config::{self, Config, EXAMPLE, Pool};
use tidepool_core::conventions::TaintEffect;
use tidepool_core::planner::{Action, HostSnapshot, PendingPod, Plan, PlanInput, PoolState, plan};
use tidepool_core::sched::{
    GPU_RESOURCE, NodeSnapshot, PodSpec, Requests, Toleration, TolerationOperator, fits,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const POOLS: [&str; 3] = ["permanent", "burst", "gpu"];

/// SplitMix64: a small deterministic generator, so every run sees the
/// same pods.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `value` scaled by a factor in [0.8, 1.2], rounded to `step`.
    fn jitter(&mut self, value: u64, step: u64) -> u64 {
        let scaled = value * (80 + self.below(41)) / 100;
        (scaled / step).max(1) * step
    }
}

/// A request shape and how often it occurs (weights sum to 100).
struct Shape {
    cpu_milli: u64,
    memory_mib: u64,
    weight: u64,
}

/// Shapes of ordinary pods; GPU pods are drawn separately.
const SHAPES: [Shape; 8] = [
    // Sidecar-sized helpers.
    Shape {
        cpu_milli: 100,
        memory_mib: 128,
        weight: 14,
    },
    // Web front ends.
    Shape {
        cpu_milli: 250,
        memory_mib: 512,
        weight: 24,
    },
    // API services.
    Shape {
        cpu_milli: 500,
        memory_mib: 1024,
        weight: 20,
    },
    // JVM services: memory first.
    Shape {
        cpu_milli: 1000,
        memory_mib: 3 * 1024,
        weight: 12,
    },
    // Caches: memory-heavy.
    Shape {
        cpu_milli: 500,
        memory_mib: 4 * 1024,
        weight: 8,
    },
    // Batch workers: CPU-heavy.
    Shape {
        cpu_milli: 2000,
        memory_mib: 2 * 1024,
        weight: 12,
    },
    // Analytics: big in both.
    Shape {
        cpu_milli: 3000,
        memory_mib: 6 * 1024,
        weight: 6,
    },
    // Builds: more than a small worker holds.
    Shape {
        cpu_milli: 4500,
        memory_mib: 8 * 1024,
        weight: 4,
    },
];

fn tolerate(p: &mut PodSpec, key: &str, value: &str) {
    Arc::make_mut(&mut p.tolerations).push(Toleration {
        key: key.into(),
        operator: TolerationOperator::Equal,
        value: value.into(),
        effect: Some(TaintEffect::NoSchedule),
    });
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// The example configuration without the spot pool, with limits, batch
/// size and VMID range out of the way (the bench measures packing, not
/// refusals) and the large size untainted, so every burst pod may use every
/// burst size and the lower bound stays exact.
fn config() -> Config {
    let mut cfg = config::load(EXAMPLE).unwrap();
    cfg.providers.get_mut("pve").unwrap().vmid_upper = 10_000_000;
    cfg.pools.retain(|p| POOLS.contains(&p.name.as_str()));
    for pool in &mut cfg.pools {
        pool.limits.max_nodes = 1_000_000;
        pool.limits.cpu_cores = None;
        pool.limits.memory_mib = None;
        pool.scale_up.batch_size = 1_000_000;
        pool.schedule.clear();
    }
    cfg.sizes.get_mut("large").unwrap().taint = false;
    cfg
}

fn workload(count: usize, seed: u64) -> Vec<PendingPod> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|i| {
            let mut p = PodSpec {
                namespace: "bench".into(),
                name: format!("p{i:06}").into(),
                ..PodSpec::default()
            };
            if rng.below(100) == 0 {
                // A training or inference pod: one GPU, on the GPU pool only.
                p.requests = Requests {
                    cpu_milli: rng.jitter(2000, 100),
                    memory_bytes: rng.jitter(8 * 1024, 256) * MIB,
                    ..Requests::default()
                };
                p.requests.extended.insert(GPU_RESOURCE.into(), 1);
                tolerate(&mut p, "nvidia.com/gpu", "true");
                Arc::make_mut(&mut p.node_selector)
                    .insert("gpu.nvidia.com/class".into(), "tesla-t4".into());
            } else {
                let mut pick = rng.below(100);
                let shape = SHAPES
                    .iter()
                    .find(|s| {
                        let hit = pick < s.weight;
                        pick = pick.saturating_sub(s.weight);
                        hit
                    })
                    .unwrap();
                p.requests = Requests {
                    cpu_milli: rng.jitter(shape.cpu_milli, 10),
                    memory_bytes: rng.jitter(shape.memory_mib, 16) * MIB,
                    ..Requests::default()
                };
                if rng.below(100) >= 40 {
                    tolerate(&mut p, "workload-type", "burst");
                    Arc::make_mut(&mut p.node_selector).insert("node-pool".into(), "burst".into());
                }
            }
            PendingPod {
                pod: p,
                unschedulable_since: now(),
            }
        })
        .collect()
}

/// Busy permanent workers: 50m CPU and 256 MiB left, 30 pods bound.
fn cluster(cfg: &Config, count: usize) -> Vec<NodeSnapshot> {
    let pool = cfg.pool("permanent").unwrap();
    let medium = cfg.size("medium").unwrap();
    (0..count)
        .map(|i| {
            let mut n =
                NodeSnapshot::hypothetical(cfg, pool, medium, &format!("perm-{i:05}"), now());
            n.requested.cpu_milli = n.allocatable.cpu_milli - 50;
            n.requested.memory_bytes = n.allocatable.memory_bytes - 256 * MIB;
            n.pod_count = 30;
            n
        })
        .collect()
}

fn input(pods: usize, nodes: usize) -> PlanInput {
    let cfg = config();
    let templates = cfg.templates();
    let host = |name: &str, gpus: u32| HostSnapshot {
        name: name.into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: 1 << 40,
        memory_used_mib: 0,
        cores: 1 << 24,
        vcpus_allocated: 0,
        storage_free_gib: BTreeMap::from([("local-lvm".to_owned(), 1 << 40)]),
        gpu_free: BTreeMap::from([("tesla-t4".to_owned(), gpus)]),
        vms: BTreeMap::new(),
        templates: templates.clone(),
    };
    let pool_state = POOLS
        .into_iter()
        .map(|p| {
            (
                p.to_owned(),
                PoolState {
                    emergency: true,
                    ..PoolState::default()
                },
            )
        })
        .collect();
    PlanInput {
        nodes: cluster(&cfg, nodes),
        config: cfg,
        pending: workload(pods, 0x7469_6465_706f_6f6c),
        claims: Vec::new(),
        hosts: vec![host("pve-01", 1_000_000), host("pve-02", 0)],
        vmids_in_use: BTreeMap::new(),
        pool_state,
        now: now(),
    }
}

fn empty_node(cfg: &Config, pool: &Pool, size: &str, name: &str) -> NodeSnapshot {
    NodeSnapshot::hypothetical(cfg, pool, cfg.size(size).unwrap(), name, now())
}

/// The pool the planner offers `pod` to: the first, in configuration
/// order, with a size that could host it.
fn pool_of<'a>(cfg: &'a Config, pod: &PodSpec) -> Option<&'a Pool> {
    cfg.pools.iter().find(|pool| {
        pool.sizes
            .iter()
            .any(|s| fits(pod, &empty_node(cfg, pool, s, "probe")).is_ok())
    })
}

/// Totals of cpu, memory, pod slots and GPUs.
fn totals(pods: &[&PodSpec]) -> [u64; 4] {
    let mut t = [0u64; 4];
    for p in pods {
        t[0] += p.requests.cpu_milli;
        t[1] += p.requests.memory_bytes;
        t[2] += 1;
        t[3] += p.requests.extended.get(GPU_RESOURCE).copied().unwrap_or(0);
    }
    t
}

/// What a size offers of cpu, memory, pod slots and GPUs.
fn offer(cfg: &Config, size: &str) -> [u64; 4] {
    let a = &cfg.size(size).unwrap().size.allocatable;
    [
        a.cpu_milli,
        a.memory_bytes,
        u64::from(a.pods),
        a.extended.get(GPU_RESOURCE).copied().unwrap_or(0),
    ]
}

/// The lower bound of the module doc for one pool.
fn lower_bound(cfg: &Config, pool: &Pool, pods: &[&PodSpec]) -> u64 {
    let total = totals(pods);
    (0..4)
        .map(|r| {
            let best = pool.sizes.iter().map(|s| offer(cfg, s)[r]).max().unwrap();
            match (total[r], best) {
                (0, _) => 0,
                (t, 0) => panic!("pool {} cannot host resource {r} ({t} asked)", pool.name),
                (t, b) => t.div_ceil(b),
            }
        })
        .max()
        .unwrap()
}

/// The naive rule: (size, workers asked, pods left over).
fn naive(cfg: &Config, pool: &Pool, pods: &[&PodSpec]) -> (String, u64, usize) {
    let total = totals(pods);
    let wanted = if total[0] > 8_000 || total[1] > 16 * GIB {
        "large"
    } else if total[0] > 4_000 || total[1] > 8 * GIB {
        "medium"
    } else {
        "small"
    };
    let size = if pool.sizes.iter().any(|s| s == wanted) {
        wanted.to_owned()
    } else {
        pool.sizes
            .iter()
            .max_by_key(|s| offer(cfg, s)[0])
            .unwrap()
            .clone()
    };
    let cap = offer(cfg, &size);
    let count = total[0].div_ceil(cap[0]).max(total[1].div_ceil(cap[1]));
    let mut nodes: Vec<NodeSnapshot> = (0..count)
        .map(|i| empty_node(cfg, pool, &size, &format!("naive-{i}")))
        .collect();
    // First fit in arrival order; `open` skips workers with no CPU left
    // for the smallest pod, which keeps 50k pods fast.
    let min_cpu = pods.iter().map(|p| p.requests.cpu_milli).min().unwrap_or(0);
    let mut open = 0;
    let mut left = 0;
    for pod in pods {
        let room = |n: &NodeSnapshot| {
            n.pod_count < n.allocatable.pods
                && n.requested.cpu_milli + pod.requests.cpu_milli <= n.allocatable.cpu_milli
                && n.requested.memory_bytes + pod.requests.memory_bytes
                    <= n.allocatable.memory_bytes
        };
        match nodes[open..]
            .iter()
            .position(|n| room(n) && fits(pod, n).is_ok())
        {
            Some(j) => nodes[open + j].bind(pod, false),
            None => left += 1,
        }
        while open < nodes.len()
            && nodes[open].allocatable.cpu_milli - nodes[open].requested.cpu_milli < min_cpu
        {
            open += 1;
        }
    }
    (size, count, left)
}

/// The planner's figures for one pool of one cell.
#[derive(Default)]
struct PoolRow {
    pods: usize,
    asked: BTreeMap<String, u32>,
    bound: u64,
    naive_size: String,
    naive_nodes: u64,
    naive_left: usize,
}

fn pool_rows(input: &PlanInput, out: &Plan) -> BTreeMap<&'static str, PoolRow> {
    let cfg = &input.config;
    let mut by_pool: BTreeMap<&str, Vec<&PodSpec>> = BTreeMap::new();
    for pp in &input.pending {
        let pool = pool_of(cfg, &pp.pod).expect("every generated pod fits a pool");
        by_pool.entry(&pool.name).or_default().push(&pp.pod);
    }
    let mut rows = BTreeMap::new();
    for name in POOLS {
        let pool = cfg.pool(name).unwrap();
        let pods = by_pool.get(name).cloned().unwrap_or_default();
        let mut row = PoolRow {
            pods: pods.len(),
            bound: lower_bound(cfg, pool, &pods),
            ..PoolRow::default()
        };
        for a in &out.actions {
            if let Action::Provision {
                pool, size, count, ..
            } = a
                && pool == name
            {
                *row.asked.entry(size.clone()).or_default() += count;
            }
        }
        if !pods.is_empty() {
            (row.naive_size, row.naive_nodes, row.naive_left) = naive(cfg, pool, &pods);
        }
        rows.insert(name, row);
    }
    rows
}

/// Plans `input` repeatedly (at least 3 runs and about a second); returns
/// the median and the fastest wall time, and the plan.
fn time(input: &PlanInput) -> (Duration, Duration, Plan) {
    let first = plan(input);
    let mut walls = Vec::new();
    let budget = Instant::now();
    while walls.len() < 3 || (walls.len() < 25 && budget.elapsed() < Duration::from_secs(1)) {
        let start = Instant::now();
        let out = plan(input);
        walls.push(start.elapsed());
        assert_eq!(out, first, "the planner is deterministic");
    }
    walls.sort();
    (walls[walls.len() / 2], walls[0], first)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    // `-- 10000 1000` runs one cell; cargo's own `--bench` flag is skipped.
    let only: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut summary = Vec::new();
    for pods in [1_000, 10_000, 50_000] {
        for nodes in [10, 100, 1_000] {
            if let [p, n] = only[..]
                && (p, n) != (pods, nodes)
            {
                continue;
            }
            let input = input(pods, nodes);
            let (median, fastest, out) = time(&input);
            assert!(
                out.unhelpable.is_empty() && out.waiting.is_empty(),
                "every pod gets capacity: {:?}",
                out.unhelpable.first()
            );
            let rows = pool_rows(&input, &out);
            println!(
                "\n{} pending pods × {} nodes × 3 pools",
                thousands(pods as u64),
                thousands(nodes as u64)
            );
            println!(
                "| pool | pods | workers asked (by size) | lower bound | ratio | naive size | naive workers | naive pods left over |"
            );
            println!("|---|---:|---|---:|---:|---|---:|---:|");
            let (mut asked, mut bound, mut naive_nodes, mut naive_left) =
                (0u64, 0u64, 0u64, 0usize);
            for (name, row) in &rows {
                let n: u64 = row.asked.values().map(|&c| u64::from(c)).sum();
                let mix: Vec<String> = row.asked.iter().map(|(s, c)| format!("{c} {s}")).collect();
                println!(
                    "| {name} | {} | {} ({}) | {} | {:.3} | {} | {} | {} |",
                    thousands(row.pods as u64),
                    thousands(n),
                    mix.join(", "),
                    thousands(row.bound),
                    n as f64 / row.bound.max(1) as f64,
                    row.naive_size,
                    thousands(row.naive_nodes),
                    thousands(row.naive_left as u64),
                );
                asked += n;
                bound += row.bound;
                naive_nodes += row.naive_nodes;
                naive_left += row.naive_left;
            }
            summary.push(format!(
                "| {} | {} | {:.1} ms ({:.1}) | {}k | {} | {} | {:.3} | {} | {} |",
                thousands(pods as u64),
                thousands(nodes as u64),
                median.as_secs_f64() * 1e3,
                fastest.as_secs_f64() * 1e3,
                (pods as f64 / median.as_secs_f64() / 1e3).round(),
                thousands(asked),
                thousands(bound),
                asked as f64 / bound.max(1) as f64,
                thousands(naive_nodes),
                thousands(naive_left as u64),
            ));
        }
    }
    println!("\nSummary (wall time: median of the runs, fastest in parentheses)");
    println!(
        "| pending pods | nodes | wall time | pods/s | workers asked | lower bound | ratio | naive workers | naive pods left over |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for line in summary {
        println!("{line}");
    }
}
