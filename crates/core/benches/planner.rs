//! Planner benchmark (a plain binary, no harness): pending pods × existing
//! nodes × three pools, printing wall time, pods per second and the
//! workers asked for against a lower bound. Run with
//! `cargo bench -p tidepool-core --bench planner`.
//!
//! The lower bound is per pool and size actually provisioned:
//! max over cpu and memory of ceil(total requests / allocatable) of the
//! pool's size the plan used most, summed over pools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::conventions::TaintEffect;
use tidepool_core::planner::{Action, HostSnapshot, PendingPod, PlanInput, PoolState, plan};
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests, Toleration, TolerationOperator};

/// A deterministic generator (64-bit LCG) so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn tolerate(p: &mut PodSpec, key: &str, value: &str) {
    p.tolerations.push(Toleration {
        key: key.into(),
        operator: TolerationOperator::Equal,
        value: value.into(),
        effect: Some(TaintEffect::NoSchedule),
    });
}

fn input(pods: usize, nodes: usize) -> PlanInput {
    let mut cfg = config::load(EXAMPLE).unwrap();
    cfg.providers.get_mut("pve").unwrap().vmid_upper = 1_000_000;
    for pool in &mut cfg.pools {
        pool.limits.max_nodes = 100_000;
        pool.limits.cpu_cores = None;
        pool.limits.memory_mib = None;
        pool.scale_up.batch_size = 100_000;
    }
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut rng = Lcg(42);
    let perm = cfg.pool("permanent").unwrap();
    let medium = cfg.size("medium").unwrap();
    let existing = (0..nodes)
        .map(|i| {
            let mut n =
                NodeSnapshot::hypothetical(&cfg, perm, medium, &format!("perm-{i:05}"), now);
            // Nearly full: 200m and 256 MiB left.
            n.requested.cpu_milli = n.allocatable.cpu_milli - 200;
            n.requested.memory_bytes = n.allocatable.memory_bytes - (256 << 20);
            n.pod_count = 20;
            n
        })
        .collect();
    let pending = (0..pods)
        .map(|i| {
            let mut p = PodSpec {
                namespace: "bench".into(),
                name: format!("p{i:06}"),
                requests: Requests {
                    cpu_milli: 250 * (1 + rng.next(8)),
                    memory_bytes: (256 << 20) * (1 + rng.next(12)),
                    ..Requests::default()
                },
                ..PodSpec::default()
            };
            match i % 3 {
                0 => {}
                1 => {
                    tolerate(&mut p, "workload-type", "burst");
                    p.node_selector.insert("node-pool".into(), "burst".into());
                }
                _ => {
                    tolerate(&mut p, "workload-type", "spot");
                    p.node_selector.insert("node-pool".into(), "spot".into());
                }
            }
            PendingPod {
                pod: p,
                unschedulable_since: now,
            }
        })
        .collect();
    let host = |name: &str| HostSnapshot {
        name: name.into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: 1 << 30,
        memory_used_mib: 0,
        cores: 1 << 20,
        vcpus_allocated: 0,
        storage_free_gib: BTreeMap::from([("local-lvm".to_owned(), 1 << 40)]),
        gpu_free: BTreeMap::new(),
    };
    let pool_state = ["permanent", "burst", "spot"]
        .into_iter()
        .map(|p| {
            (
                p.to_owned(),
                PoolState {
                    emergency: true,
                    last_scale_down: None,
                    ..PoolState::default()
                },
            )
        })
        .collect();
    PlanInput {
        config: cfg,
        nodes: existing,
        pending,
        claims: Vec::new(),
        hosts: vec![host("pve-01"), host("pve-02")],
        vmids_in_use: BTreeMap::new(),
        pool_state,
        now,
    }
}

fn lower_bound(input: &PlanInput, out: &tidepool_core::planner::Plan) -> u64 {
    let cfg = &input.config;
    let mut bound = 0;
    for pool in ["permanent", "burst", "spot"] {
        let mut by_size: BTreeMap<&str, u32> = BTreeMap::new();
        for a in &out.actions {
            if let Action::Provision {
                pool: p,
                size,
                count,
                ..
            } = a
                && p == pool
            {
                *by_size.entry(size.as_str()).or_default() += count;
            }
        }
        let Some((size, _)) = by_size.iter().max_by_key(|(_, c)| **c) else {
            continue;
        };
        let alloc = &cfg.size(size).unwrap().size.allocatable;
        let (mut cpu, mut mem) = (0u64, 0u64);
        for (i, pp) in input.pending.iter().enumerate() {
            let target = ["permanent", "burst", "spot"][i % 3];
            if target == pool {
                cpu += pp.pod.requests.cpu_milli;
                mem += pp.pod.requests.memory_bytes;
            }
        }
        bound += cpu
            .div_ceil(alloc.cpu_milli)
            .max(mem.div_ceil(alloc.memory_bytes));
    }
    bound
}

fn main() {
    println!(
        "| pending pods | nodes | pools | wall time | pods/s | workers asked | lower bound | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (pods, nodes) in [
        (1_000, 10),
        (1_000, 1_000),
        (10_000, 100),
        (10_000, 1_000),
        (50_000, 1_000),
    ] {
        let input = input(pods, nodes);
        let start = Instant::now();
        let out = plan(&input);
        let wall = start.elapsed();
        let asked = u64::from(out.nodes_requested());
        let bound = lower_bound(&input, &out);
        println!(
            "| {pods} | {nodes} | 3 | {:.1} ms | {:.0} | {asked} | {bound} | {:.3} |",
            wall.as_secs_f64() * 1e3,
            pods as f64 / wall.as_secs_f64(),
            asked as f64 / bound.max(1) as f64
        );
        assert!(out.unhelpable.is_empty(), "{:?}", out.unhelpable.first());
    }
}
