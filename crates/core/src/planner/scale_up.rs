//! Scale-up: which pending pods need new workers, of which pool and size,
//! on which host.
//!
//! 1. Pending pods are taken largest first (by their dominant resource).
//!    A pod that fits the free room of an existing node or of a worker on
//!    its way (an in-flight claim) is absorbed: it needs no new capacity.
//! 2. The rest are offered to the pools in configuration order. A pool
//!    takes the pods that fit one of its sizes, if its trigger fires
//!    (enough pods waited long enough, or an emergency).
//! 3. The pool's pods are bin-packed onto each of its sizes, twice:
//!    first-fit-decreasing, then an improvement pass that fills one worker
//!    at a time with pods that complement what it holds (CPU-heavy with
//!    memory-heavy); the packing with fewer workers is kept. The size that
//!    places the most pods for the least host capacity (vCPUs, and memory
//!    with the per-VM overhead) wins, pods it cannot hold are packed again
//!    on the other sizes, and then each new worker is shrunk to the
//!    cheapest size that still holds its pods.
//! 4. Workers are accepted one by one while the pool's limits, its
//!    `batchSize`, the VMID range and some host's headroom allow; pods of a
//!    refused worker are reported with the limit or dimension that refused it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Pool, SizeEntry};
use crate::pool::{PoolUsage, Resources, Size};
use crate::sched::{NodeSnapshot, PodSpec, fits, fits_identity, fits_room};

use super::hosts::{Headroom, VmCost, may_use, place};
use super::triggers::{self, PressureKind};
use super::{
    Action, ClaimState, Deferred, Plan, PlanInput, PoolState, Reason, ReasonCode, Unhelpable,
    Waiting,
};
use crate::config::ProxmoxProvider;
use crate::pool::PoolKind;

/// What scale-down needs to know from scale-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleUpOutcome {
    /// Nodes (and in-flight workers) that pending pods were simulated onto.
    pub absorbing_nodes: BTreeSet<String>,
}

/// A new worker being filled by the simulation.
#[derive(Clone, Debug)]
struct Bin {
    /// Index into the pool's templates.
    size: usize,
    node: NodeSnapshot,
    /// Indices into `input.pending`.
    pods: Vec<usize>,
}

/// A pool's sizes with the empty node each would become.
struct Template<'a> {
    entry: &'a SizeEntry,
    node: NodeSnapshot,
    /// The same empty node with only what the room checks read (no name,
    /// labels or taints): cheap to clone for every new worker. Who may run
    /// on it is decided once per pod against `node`.
    room: NodeSnapshot,
    cost: f64,
}

/// Reference figures that make cpu and memory comparable: the largest
/// allocatable and the largest VM of any configured size.
#[derive(Clone, Copy)]
struct Scale {
    cpu: f64,
    mem: f64,
    vcpu: f64,
    vm_mem: f64,
}

impl Scale {
    fn of(config: &Config) -> Self {
        let sizes = || config.sizes.values().map(|s| &s.size);
        let cpu = sizes().map(|s| s.allocatable.cpu_milli).max().unwrap_or(1);
        let mem = sizes()
            .map(|s| s.allocatable.memory_bytes)
            .max()
            .unwrap_or(1);
        let vcpu = sizes().map(|s| s.vcpu).max().unwrap_or(1);
        let vm_mem = sizes().map(|s| s.memory_mib).max().unwrap_or(1);
        Scale {
            cpu: cpu.max(1) as f64,
            mem: mem.max(1) as f64,
            vcpu: f64::from(vcpu.max(1)),
            vm_mem: vm_mem.max(1) as f64,
        }
    }

    fn dominant(self, pod: &PodSpec) -> f64 {
        (pod.requests.cpu_milli as f64 / self.cpu).max(pod.requests.memory_bytes as f64 / self.mem)
    }

    /// Allocatable cpu and memory, as one figure.
    fn capacity(self, alloc: &Resources) -> f64 {
        alloc.cpu_milli as f64 / self.cpu + alloc.memory_bytes as f64 / self.mem
    }

    /// What a worker of `size` takes from its host (vCPUs, and memory with
    /// the per-VM overhead), as one figure. Comparing sizes by this rather
    /// than by allocatable counts the kubelet reserve and the VM overhead
    /// each extra worker costs: at equal fragmentation, fewer larger
    /// workers win.
    fn cost(self, size: &Size, overhead_mib: u64) -> f64 {
        f64::from(size.vcpu) / self.vcpu
            + (size.memory_mib + overhead_mib) as f64 / (self.vm_mem + overhead_mib as f64)
    }
}

/// A cheap necessary condition for [`fits_room`]: pod slots, cpu, memory.
fn quick_room(pod: &PodSpec, node: &NodeSnapshot) -> bool {
    node.pod_count < node.allocatable.pods
        && node.requested.cpu_milli + pod.requests.cpu_milli <= node.allocatable.cpu_milli
        && node.requested.memory_bytes + pod.requests.memory_bytes <= node.allocatable.memory_bytes
}

/// Memory-to-CPU ratios (bytes per millicore: 1, 4 and 16 GiB per core)
/// at which [`RoomTree`] also checks CPU and memory together.
const BOTH_AT: [u64; 3] = [1 << 20, 4 << 20, 16 << 20];

/// What [`RoomTree`] keeps per node: free CPU, free memory, free pod slots
/// and, for each ratio `w` of [`BOTH_AT`], min(free CPU × w, free memory).
type Figures = [u64; 3 + BOTH_AT.len()];

fn figures(cpu: u64, memory: u64, slots: u64) -> Figures {
    let mut f = [0; 3 + BOTH_AT.len()];
    f[..3].copy_from_slice(&[cpu, memory, slots]);
    for (k, w) in BOTH_AT.iter().enumerate() {
        f[3 + k] = cpu.saturating_mul(*w).min(memory);
    }
    f
}

/// The free room of a list of nodes kept as a max-tree of [`Figures`], so
/// the first node with room for a pod is found without visiting every
/// node: a subtree is skipped when none of its nodes can have room.
///
/// A node with room for a pod has at least the pod's CPU, memory and one
/// slot, and so at least the pod's min(CPU × w, memory) for every `w`. The
/// last figures are what make the pruning work with two resources: a
/// subtree where one node has the CPU and another the memory, but none
/// both, fails them. The tree only rules nodes out; the caller's test
/// decides.
struct RoomTree {
    /// Leaves (a power of two); node `k` has children `2k` and `2k + 1`,
    /// leaf `i` is node `leaves + i`. Unused leaves stay zero.
    leaves: usize,
    max: Vec<Figures>,
}

impl RoomTree {
    fn new() -> Self {
        RoomTree {
            leaves: 1,
            max: vec![Figures::default(); 2],
        }
    }

    fn of(nodes: &[NodeSnapshot]) -> Self {
        let mut tree = RoomTree::new();
        for (i, node) in nodes.iter().enumerate() {
            tree.set(i, node);
        }
        tree
    }

    fn want(pod: &PodSpec) -> Figures {
        figures(pod.requests.cpu_milli, pod.requests.memory_bytes, 1)
    }

    /// Records node `i`'s room, growing the tree when `i` is new.
    fn set(&mut self, i: usize, node: &NodeSnapshot) {
        if i >= self.leaves {
            let leaves = (i + 1).next_power_of_two();
            let mut max = vec![Figures::default(); 2 * leaves];
            max[leaves..leaves + self.leaves].copy_from_slice(&self.max[self.leaves..]);
            self.leaves = leaves;
            self.max = max;
            for k in (1..leaves).rev() {
                self.max[k] = Self::join(&self.max[2 * k], &self.max[2 * k + 1]);
            }
        }
        let (alloc, used) = (&node.allocatable, &node.requested);
        let mut k = self.leaves + i;
        self.max[k] = figures(
            alloc.cpu_milli.saturating_sub(used.cpu_milli),
            alloc.memory_bytes.saturating_sub(used.memory_bytes),
            u64::from(alloc.pods.saturating_sub(node.pod_count)),
        );
        while k > 1 {
            k /= 2;
            self.max[k] = Self::join(&self.max[2 * k], &self.max[2 * k + 1]);
        }
    }

    fn join(a: &Figures, b: &Figures) -> Figures {
        std::array::from_fn(|r| a[r].max(b[r]))
    }

    /// The first node, in list order, whose room may cover `want` and that
    /// `accept` takes.
    fn first(&self, want: &Figures, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        let covers = |k: usize| self.max[k].iter().zip(want).all(|(have, w)| have >= w);
        let mut stack = vec![1];
        while let Some(k) = stack.pop() {
            if !covers(k) {
                continue;
            }
            if k >= self.leaves {
                if accept(k - self.leaves) {
                    return Some(k - self.leaves);
                }
            } else {
                stack.push(2 * k + 1);
                stack.push(2 * k);
            }
        }
        None
    }
}

fn waited_secs(input: &PlanInput, i: usize) -> i64 {
    input.now.as_second() - input.pending[i].unschedulable_since.as_second()
}

/// Plans the scale-up part of `input` into `out`.
pub fn plan_scale_up(input: &PlanInput, out: &mut Plan) -> ScaleUpOutcome {
    let cfg = &input.config;
    let scale = Scale::of(cfg);
    let keep_pods = input
        .pending
        .iter()
        .any(|p| !p.pod.anti_affinity.is_empty());
    let mut outcome = ScaleUpOutcome::default();

    let mut order: Vec<usize> = (0..input.pending.len())
        .filter(|&i| !input.pending[i].pod.daemon_set)
        .collect();
    let dominant: Vec<f64> = input
        .pending
        .iter()
        .map(|p| scale.dominant(&p.pod))
        .collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (&input.pending[a].pod, &input.pending[b].pod);
        dominant[b]
            .total_cmp(&dominant[a])
            .then_with(|| (&pa.namespace, &pa.name).cmp(&(&pb.namespace, &pb.name)))
    });

    // 1. Absorb into existing nodes and workers on their way.
    let mut room = capacity_on_hand(input);
    let mut room_tree = RoomTree::of(&room);
    let mut remaining = Vec::new();
    for &i in &order {
        let pod = &input.pending[i].pod;
        match room_tree.first(&RoomTree::want(pod), |j| {
            quick_room(pod, &room[j]) && fits(pod, &room[j]).is_ok()
        }) {
            Some(j) => {
                room[j].bind(pod, keep_pods);
                room_tree.set(j, &room[j]);
                outcome.absorbing_nodes.insert(room[j].name.clone());
            }
            None => remaining.push(i),
        }
    }

    // 2–4. Offer the rest to the pools.
    let n = input.pending.len();
    let mut placed = vec![false; n];
    let mut blocked: Vec<Option<Reason>> = vec![None; n];
    let mut waiting: Vec<Option<(String, Reason)>> = vec![None; n];
    let mut ledger = ledger(input);
    let mut vmids = vmids_free(input);
    let mut wants: Vec<Want<'_>> = Vec::new();
    // Spot pools come last, after preemption has reserved the room it frees
    // for permanent capacity: spot work must not take that room back.
    let (spot, others): (Vec<&Pool>, Vec<&Pool>) =
        cfg.pools.iter().partition(|p| p.kind == PoolKind::Spot);
    // `None` marks the preemption stage between the two.
    let stages = others
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
        .chain(spot.into_iter().map(Some));
    for stage in stages {
        let Some(pool) = stage else {
            // 5. Permanent capacity the hosts have no room for: preempt
            //    spot workers.
            preempt_spot(input, &wants, &placed, &mut ledger, &mut waiting, out);
            continue;
        };
        let Some(provider) = cfg.providers.get(&pool.provider) else {
            continue;
        };
        let templates = templates(input, pool, scale);
        let candidates: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                !placed[i]
                    && templates
                        .iter()
                        .any(|t| fits(&input.pending[i].pod, &t.node).is_ok())
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let state = input
            .pool_state
            .get(&pool.name)
            .cloned()
            .unwrap_or_default();
        let Some(trigger) = trigger(input, pool, &state, &candidates) else {
            let waited = count_waited(input, pool, &candidates);
            let reason = Reason::new(
                ReasonCode::TriggerWindow,
                format!(
                    "pool {} could host {} pending pod(s) but only {waited} waited {}s or more; it scales up at {}",
                    pool.name,
                    candidates.len(),
                    pool.scale_up.pending_for.as_secs(),
                    pool.scale_up.pending_pods
                ),
            );
            for &i in &candidates {
                waiting[i].get_or_insert_with(|| (pool.name.clone(), reason.clone()));
            }
            continue;
        };

        let bins = pack(input, &candidates, &templates, keep_pods);
        let mut usage = pool_usage(cfg, &input.claims, &pool.name);
        let mut accepted: Vec<&Bin> = Vec::new();
        let mut groups: Vec<(usize, String, u32, usize)> = Vec::new();
        for bin in &bins {
            let entry = templates[bin.size].entry;
            let size = &entry.size;
            let refusal = if accepted.len() as u64 >= u64::from(pool.scale_up.batch_size) {
                let reason = Reason::new(
                    ReasonCode::BatchSize,
                    format!(
                        "pool {} provisions at most {} worker(s) per batch; the next batch will host it",
                        pool.name, pool.scale_up.batch_size
                    ),
                );
                for &i in &bin.pods {
                    waiting[i].get_or_insert_with(|| (pool.name.clone(), reason.clone()));
                }
                continue;
            } else if let Err(e) = pool.limits.check_add(usage, size, 1) {
                let code = match e.limit() {
                    "maxNodes" => ReasonCode::MaxNodes,
                    "cpuCores" => ReasonCode::CpuCores,
                    _ => ReasonCode::MemoryMib,
                };
                Some(Reason::new(
                    code,
                    format!("a new {} worker: {e} (pool {})", size.name, pool.name),
                ))
            } else if vmids.get(&provider.name).copied().unwrap_or(0) == 0 {
                Some(Reason::new(
                    ReasonCode::VmidRange,
                    format!(
                        "provider {} has no free VMID in {}–{}",
                        provider.name, provider.vmid_lower, provider.vmid_upper
                    ),
                ))
            } else {
                match place(
                    &mut ledger,
                    pool,
                    provider,
                    &VmCost::new_worker(pool, size, provider),
                ) {
                    Err(short) => {
                        if pool.kind == PoolKind::Permanent
                            && matches!(
                                short.code,
                                ReasonCode::HostMemory
                                    | ReasonCode::HostCpu
                                    | ReasonCode::HostStorage
                            )
                        {
                            wants.push(Want {
                                pool,
                                provider,
                                entry,
                                pods: bin.pods.clone(),
                            });
                        }
                        Some(Reason::new(
                            short.code,
                            format!(
                                "a new {} worker for pool {}: {}",
                                size.name, pool.name, short.message
                            ),
                        ))
                    }
                    Ok(host) => {
                        usage.nodes += 1;
                        usage.cpu_cores += u64::from(size.vcpu);
                        usage.memory_mib += size.memory_mib;
                        if let Some(v) = vmids.get_mut(&provider.name) {
                            *v -= 1;
                        }
                        for &i in &bin.pods {
                            placed[i] = true;
                        }
                        accepted.push(bin);
                        match groups.iter_mut().find(|g| g.0 == bin.size && g.1 == host) {
                            Some(g) => {
                                g.2 += 1;
                                g.3 += bin.pods.len();
                            }
                            None => groups.push((bin.size, host, 1, bin.pods.len())),
                        }
                        None
                    }
                }
            };
            if let Some(reason) = refusal {
                for &i in &bin.pods {
                    blocked[i].get_or_insert_with(|| reason.clone());
                }
            }
        }
        let waste = waste_percent(&accepted, scale);
        for (size, host, count, pods) in groups {
            let size = &templates[size].entry.size.name;
            out.actions.push(Action::Provision {
                pool: pool.name.clone(),
                size: size.clone(),
                host,
                count,
                reason: Reason::new(
                    trigger.code,
                    format!(
                        "{}; {pods} pod(s) packed onto {count} new {size} worker(s) (least waste over sizes [{}]: {waste:.0}% of the new capacity unused)",
                        trigger.message,
                        pool.sizes.join(", ")
                    ),
                ),
            });
        }
    }

    // 6. Pool-level triggers: scheduled minimums, request pressure and
    //    the utilization target of permanent pools.
    for pool in &cfg.pools {
        pool_triggers(input, pool, &mut ledger, &mut vmids, out);
    }

    for &i in &remaining {
        if placed[i] {
            continue;
        }
        let key = input.pending[i].pod.key();
        if let Some((pool, reason)) = waiting[i].take() {
            out.waiting.push(Waiting {
                pod: key,
                pool,
                reason,
            });
        } else if let Some(reason) = blocked[i].take() {
            out.unhelpable.push(Unhelpable { pod: key, reason });
        } else {
            out.unhelpable.push(Unhelpable {
                pod: key,
                reason: no_pool_fits(input, scale, &input.pending[i].pod),
            });
        }
    }
    outcome
}

/// Existing schedulable nodes, then the empty nodes in-flight claims will become.
fn capacity_on_hand(input: &PlanInput) -> Vec<NodeSnapshot> {
    let cfg = &input.config;
    let mut room: Vec<NodeSnapshot> = input
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable)
        .cloned()
        .collect();
    // A worker's node is itself only once it is Ready and carries the
    // worker's labels (and so its pool's labels and taints); until the
    // cache shows both, the worker counts as the node it is about to be.
    // This covers the moment between the node turning Ready and its labels
    // arriving, even after the claim itself says Ready.
    let claim_key = cfg.labels.claim();
    let labelled = |n: &NodeSnapshot| n.labels.get(&claim_key) == Some(&n.name);
    let counted: BTreeSet<&str> = input
        .nodes
        .iter()
        .filter(|n| n.ready && labelled(n))
        .map(|n| n.name.as_str())
        .collect();
    let unlabelled: BTreeSet<&str> = input
        .nodes
        .iter()
        .filter(|n| !labelled(n))
        .map(|n| n.name.as_str())
        .collect();
    let on_its_way = |c: &&ClaimState| {
        c.in_flight()
            || (c.phase == crate::lifecycle::Phase::Ready && unlabelled.contains(c.name.as_str()))
    };
    for claim in input.claims.iter().filter(on_its_way) {
        if counted.contains(claim.name.as_str()) {
            continue;
        }
        let (Some(pool), Some(size)) = (cfg.pool(&claim.pool), cfg.size(&claim.size)) else {
            continue;
        };
        room.push(NodeSnapshot::hypothetical(
            cfg,
            pool,
            size,
            &claim.name,
            input.now,
        ));
    }
    room
}

fn templates<'a>(input: &'a PlanInput, pool: &Pool, scale: Scale) -> Vec<Template<'a>> {
    let cfg = &input.config;
    let overhead = cfg
        .providers
        .get(&pool.provider)
        .map_or(0, |p| p.vm_memory_overhead_mib);
    pool.sizes
        .iter()
        .filter_map(|name| cfg.size(name))
        .map(|entry| {
            let node = NodeSnapshot::hypothetical(
                cfg,
                pool,
                entry,
                &format!("{}-new", pool.name),
                input.now,
            );
            let room = NodeSnapshot {
                allocatable: node.allocatable.clone(),
                ready: node.ready,
                ..NodeSnapshot::default()
            };
            Template {
                entry,
                node,
                room,
                cost: scale.cost(&entry.size, overhead),
            }
        })
        .collect()
}

/// How many trigger windows a remainder below the pending-pods threshold
/// waits before it triggers a scale-up anyway.
pub const STARVATION_WINDOWS: i64 = 5;

fn count_waited(input: &PlanInput, pool: &Pool, candidates: &[usize]) -> usize {
    let window = i64::try_from(pool.scale_up.pending_for.as_secs()).unwrap_or(i64::MAX);
    candidates
        .iter()
        .filter(|&&i| waited_secs(input, i) >= window)
        .count()
}

fn trigger(
    input: &PlanInput,
    pool: &Pool,
    state: &PoolState,
    candidates: &[usize],
) -> Option<Reason> {
    if state.emergency {
        return Some(Reason::new(
            ReasonCode::Emergency,
            format!(
                "emergency request for pool {}: {} pending pod(s), trigger window skipped",
                pool.name,
                candidates.len()
            ),
        ));
    }
    let waited = count_waited(input, pool, candidates);
    let oldest = candidates
        .iter()
        .map(|&i| waited_secs(input, i))
        .max()
        .unwrap_or(0);
    let window = i64::try_from(pool.scale_up.pending_for.as_secs()).unwrap_or(i64::MAX);
    // Fewer pods than the threshold must not wait forever: once the oldest
    // has waited STARVATION_WINDOWS windows, the remainder gets capacity too.
    if waited > 0
        && waited < pool.scale_up.pending_pods as usize
        && oldest >= window.saturating_mul(STARVATION_WINDOWS)
    {
        return Some(Reason::new(
            ReasonCode::PendingPods,
            format!(
                "{waited} pending pod(s), fewer than pool {}'s threshold of {}, but the oldest has waited {oldest}s (over {} windows of {}s)",
                pool.name,
                pool.scale_up.pending_pods,
                STARVATION_WINDOWS,
                pool.scale_up.pending_for.as_secs()
            ),
        ));
    }
    if waited >= pool.scale_up.pending_pods as usize && waited > 0 {
        let oldest = candidates
            .iter()
            .map(|&i| waited_secs(input, i))
            .max()
            .unwrap_or(0);
        return Some(Reason::new(
            ReasonCode::PendingPods,
            format!(
                "{waited} pending pod(s) waited {}s or more (oldest {oldest}s; pool {} scales up at {})",
                pool.scale_up.pending_for.as_secs(),
                pool.name,
                pool.scale_up.pending_pods
            ),
        ));
    }
    None
}

/// First-fit-decreasing of `pods` (already sorted) onto new nodes of one
/// template; returns the bins and the pods the template cannot hold.
fn first_fit(
    input: &PlanInput,
    pods: &[usize],
    template: &Template<'_>,
    holds: &[bool],
    size: usize,
    keep_pods: bool,
) -> (Vec<Bin>, Vec<usize>) {
    let mut bins: Vec<Bin> = Vec::new();
    let mut tree = RoomTree::new();
    let mut leftover = Vec::new();
    for &i in pods {
        let pod = &input.pending[i].pod;
        if !holds[i] {
            leftover.push(i);
            continue;
        }
        let slot = tree.first(&RoomTree::want(pod), |j| {
            quick_room(pod, &bins[j].node) && fits_room(pod, &bins[j].node).is_ok()
        });
        let j = match slot {
            Some(j) => j,
            None => {
                bins.push(Bin {
                    size,
                    node: template.room.clone(),
                    pods: Vec::new(),
                });
                bins.len() - 1
            }
        };
        bins[j].node.bind(pod, keep_pods);
        bins[j].pods.push(i);
        tree.set(j, &bins[j].node);
    }
    (bins, leftover)
}

/// How many pods [`balanced`] tries, largest first, among those that may not
/// fit a worker's other resource, before it takes the largest that surely
/// does: this bounds the work per pod placed.
const BAND_LOOKS: usize = 16;

/// The improvement pass over [`first_fit`]: packs `pods` onto new nodes of
/// one template a worker at a time, each time taking the largest pod that
/// leans on the resource the worker has the most of left.
///
/// First-fit-decreasing on the dominant resource puts pods of one kind
/// together (the CPU-heavy batch pods on some workers, the memory-heavy
/// caches on others) and leaves workers full in one resource with room to
/// spare in the other. Here the pods are split by the resource they lean on,
/// relative to the template's allocatable, each side largest first; a
/// worker with more of its CPU free than of its memory takes from the
/// CPU-leaning side, and the other way round, falling back to the other
/// side when nothing fits, so both resources of a worker fill together.
/// Deterministic: ties go to the earlier pod of `pods`.
fn balanced(
    input: &PlanInput,
    pods: &[usize],
    template: &Template<'_>,
    holds: &[bool],
    size: usize,
    keep_pods: bool,
) -> (Vec<Bin>, Vec<usize>) {
    let alloc = &template.node.allocatable;
    let (cap_cpu, cap_mem) = (
        u128::from(alloc.cpu_milli.max(1)),
        u128::from(alloc.memory_bytes.max(1)),
    );
    // `x` of one resource, as the same share of the other.
    let share =
        |x: u64, to: u128, from: u128| u64::try_from(u128::from(x) * to / from).unwrap_or(u64::MAX);
    // Whether `cpu` is at least `mem` as a share of the template.
    let cpu_leans = |cpu: u64, mem: u64| u128::from(cpu) * cap_mem >= u128::from(mem) * cap_cpu;
    let mut leftover = Vec::new();
    // [CPU-leaning, memory-leaning], each keyed by (request of that
    // resource, !position in `pods`): read from the top, the largest pod
    // comes first and, among equal ones, the earliest.
    let mut sides: [BTreeSet<(u64, usize)>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for (at, &i) in pods.iter().enumerate() {
        if !holds[i] {
            leftover.push(i);
            continue;
        }
        let r = &input.pending[i].pod.requests;
        if cpu_leans(r.cpu_milli, r.memory_bytes) {
            sides[0].insert((r.cpu_milli, !at));
        } else {
            sides[1].insert((r.memory_bytes, !at));
        }
    }
    let mut bins: Vec<Bin> = Vec::new();
    while sides.iter().any(|s| !s.is_empty()) {
        let mut bin = Bin {
            size,
            node: template.room.clone(),
            pods: Vec::new(),
        };
        while bin.node.pod_count < alloc.pods {
            let free_cpu = alloc.cpu_milli.saturating_sub(bin.node.requested.cpu_milli);
            let free_mem = alloc
                .memory_bytes
                .saturating_sub(bin.node.requested.memory_bytes);
            let order = if cpu_leans(free_cpu, free_mem) {
                [0, 1]
            } else {
                [1, 0]
            };
            let fits_bin = |&(_, at): &(u64, usize)| {
                let pod = &input.pending[pods[!at]].pod;
                quick_room(pod, &bin.node) && fits_room(pod, &bin.node).is_ok()
            };
            let pick = order.into_iter().find_map(|side| {
                // On the CPU-leaning side every pod with at most `sure`
                // millicores also fits the free memory (its memory share is
                // at most its CPU share); of the pods between `sure` and the
                // free CPU, which may not, only BAND_LOOKS are tried. The
                // memory-leaning side mirrors this.
                let (limit, sure) = if side == 0 {
                    (free_cpu, free_cpu.min(share(free_mem, cap_cpu, cap_mem)))
                } else {
                    (free_mem, free_mem.min(share(free_cpu, cap_mem, cap_cpu)))
                };
                let band = if sure < limit {
                    sides[side]
                        .range((sure + 1, 0)..=(limit, usize::MAX))
                        .rev()
                        .take(BAND_LOOKS)
                        .find(|k| fits_bin(k))
                } else {
                    None
                };
                band.or_else(|| {
                    sides[side]
                        .range(..=(sure, usize::MAX))
                        .rev()
                        .find(|k| fits_bin(k))
                })
                .map(|&key| (side, key))
            });
            let Some((side, key)) = pick else {
                break;
            };
            sides[side].remove(&key);
            let i = pods[!key.1];
            bin.node.bind(&input.pending[i].pod, keep_pods);
            bin.pods.push(i);
        }
        if bin.pods.is_empty() {
            // Every queued pod fits an empty node, so this cannot happen;
            // should it, the pods are reported rather than looped over.
            for side in &mut sides {
                leftover.extend(side.iter().map(|&(_, at)| pods[!at]));
                side.clear();
            }
            break;
        }
        bins.push(bin);
    }
    (bins, leftover)
}

/// Packs `pods` onto new workers of the pool's sizes with the least waste.
///
/// # Guarantees
/// Deterministic; every pod that fits an empty worker of some size lands
/// on exactly one worker, no worker holds more than [`fits_room`] allows,
/// and for each size no more workers are used than first-fit-decreasing
/// alone would use.
fn pack(
    input: &PlanInput,
    pods: &[usize],
    templates: &[Template<'_>],
    keep_pods: bool,
) -> Vec<Bin> {
    // Whether each pod fits an empty worker of each size, decided once.
    let holds: Vec<Vec<bool>> = templates
        .iter()
        .map(|t| {
            let mut holds = vec![false; input.pending.len()];
            for &i in pods {
                holds[i] = fits(&input.pending[i].pod, &t.node).is_ok();
            }
            holds
        })
        .collect();
    let mut left = pods.to_vec();
    let mut out: Vec<Bin> = Vec::new();
    while !left.is_empty() {
        let mut best: Option<(usize, f64, Vec<Bin>, Vec<usize>)> = None;
        for (s, template) in templates.iter().enumerate() {
            let (mut bins, mut leftover) =
                first_fit(input, &left, template, &holds[s], s, keep_pods);
            // Both leave out the same pods (those `holds` refuses).
            let (alt, alt_leftover) = balanced(input, &left, template, &holds[s], s, keep_pods);
            if alt_leftover.len() <= leftover.len() && alt.len() < bins.len() {
                (bins, leftover) = (alt, alt_leftover);
            }
            let packed = left.len() - leftover.len();
            if packed == 0 {
                continue;
            }
            let cost = bins.len() as f64 * template.cost;
            let better = match &best {
                None => true,
                Some((bp, bc, _, _)) => packed > *bp || (packed == *bp && cost < *bc),
            };
            if better {
                best = Some((packed, cost, bins, leftover));
            }
        }
        let Some((_, _, bins, leftover)) = best else {
            break;
        };
        out.extend(bins);
        left = leftover;
    }
    // Improve: shrink each worker to the cheapest size that holds its pods.
    let mut by_cost: Vec<usize> = (0..templates.len()).collect();
    by_cost.sort_by(|&a, &b| templates[a].cost.total_cmp(&templates[b].cost));
    for bin in &mut out {
        for &s in &by_cost {
            if templates[s].cost >= templates[bin.size].cost {
                break;
            }
            let mut node = templates[s].room.clone();
            let mut ok = true;
            for &i in &bin.pods {
                let pod = &input.pending[i].pod;
                if !holds[s][i] || fits_room(pod, &node).is_err() {
                    ok = false;
                    break;
                }
                node.bind(pod, keep_pods);
            }
            if ok {
                bin.size = s;
                bin.node = node;
                break;
            }
        }
    }
    out
}

fn waste_percent(bins: &[&Bin], scale: Scale) -> f64 {
    let mut total = 0.0;
    let mut used = 0.0;
    for bin in bins {
        total += scale.capacity(&bin.node.allocatable);
        used += bin.node.requested.cpu_milli as f64 / scale.cpu
            + bin.node.requested.memory_bytes as f64 / scale.mem;
    }
    if total > 0.0 {
        100.0 * (total - used).max(0.0) / total
    } else {
        0.0
    }
}

/// What a pool uses, counting every claim that counts toward it.
pub fn pool_usage(cfg: &Config, claims: &[ClaimState], pool: &str) -> PoolUsage {
    let mut usage = PoolUsage::default();
    for claim in claims
        .iter()
        .filter(|c| c.pool == pool && c.phase.counts_toward_pool())
    {
        usage.nodes += 1;
        if let Some(size) = cfg.size(&claim.size) {
            usage.cpu_cores += u64::from(size.size.vcpu);
            usage.memory_mib += size.size.memory_mib;
        }
    }
    usage
}

/// The headroom of every online host, with the VMs of claims not yet on
/// the host taken off, sorted by host name.
pub(crate) fn ledger(input: &PlanInput) -> Vec<Headroom> {
    let cfg = &input.config;
    let on_their_way: Vec<(&ClaimState, VmCost)> = input
        .claims
        .iter()
        .filter(|c| {
            matches!(
                c.phase,
                crate::lifecycle::Phase::Requested | crate::lifecycle::Phase::Provisioning
            )
        })
        .filter_map(|c| {
            let provider = cfg.providers.get(&cfg.pool(&c.pool)?.provider)?;
            Some((c, VmCost::of(&cfg.size(&c.size)?.size, provider)))
        })
        .collect();
    let mut hosts: Vec<_> = input.hosts.iter().filter(|h| h.online).collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    hosts
        .into_iter()
        .filter_map(|host| {
            let provider = cfg.providers.get(&host.provider)?;
            let pending = on_their_way.iter().map(|(c, cost)| (*c, cost));
            Some(Headroom::new(host, provider, pending))
        })
        .collect()
}

/// VMIDs left per provider: the range less those in use and those
/// `Requested` claims will take.
pub(crate) fn vmids_free(input: &PlanInput) -> BTreeMap<String, u64> {
    let cfg = &input.config;
    cfg.providers
        .values()
        .map(|p| {
            let range = u64::from(p.vmid_upper.saturating_sub(p.vmid_lower)) + 1;
            let used = input.vmids_in_use.get(&p.name).map_or(0, |ids| {
                ids.range(p.vmid_lower..=p.vmid_upper).count() as u64
            });
            let unallocated = input
                .claims
                .iter()
                .filter(|c| {
                    c.phase == crate::lifecycle::Phase::Requested
                        && cfg
                            .pool(&c.pool)
                            .is_some_and(|pool| pool.provider == p.name)
                })
                .count() as u64;
            (p.name.clone(), range.saturating_sub(used + unallocated))
        })
        .collect()
}

fn no_pool_fits(input: &PlanInput, scale: Scale, pod: &PodSpec) -> Reason {
    let cfg = &input.config;
    let mut parts = Vec::new();
    for pool in &cfg.pools {
        let templates = templates(input, pool, scale);
        // The largest size says the most: identity misfits are the same for
        // every size, room misfits are least likely on it.
        if let Some(t) = templates.iter().max_by(|a, b| a.cost.total_cmp(&b.cost)) {
            let misfit = fits_identity(pod, &t.node)
                .and_then(|()| fits_room(pod, &t.node))
                .err();
            if let Some(m) = misfit {
                parts.push(format!("{} ({}): {m}", pool.name, t.entry.size.name));
            }
        }
    }
    let message = if parts.is_empty() {
        "no pool is configured".to_owned()
    } else {
        format!("no pool can host it: {}", parts.join("; "))
    };
    Reason::new(ReasonCode::NoPoolFits, message)
}

/// What this plan already provisions for `pool`.
fn planned(cfg: &Config, out: &Plan, pool: &str) -> PoolUsage {
    let mut usage = PoolUsage::default();
    for action in &out.actions {
        if let Action::Provision {
            pool: p,
            size,
            count,
            ..
        } = action
            && p == pool
        {
            usage.nodes += count;
            if let Some(entry) = cfg.size(size) {
                usage.cpu_cores += u64::from(entry.size.vcpu) * u64::from(*count);
                usage.memory_mib += entry.size.memory_mib * u64::from(*count);
            }
        }
    }
    usage
}

/// Workers of `pool` on their way (claimed, node not Ready yet).
fn in_flight(input: &PlanInput, pool: &str) -> usize {
    input
        .claims
        .iter()
        .filter(|c| c.pool == pool && c.in_flight())
        .count()
}

/// A pool-level trigger's wish: `count` workers of the pool's first size.
struct Wish {
    count: u32,
    reason: Reason,
}

/// Scheduled pre-scaling, CPU and memory pressure and (permanent pools)
/// the utilization target, for one pool.
fn pool_triggers(
    input: &PlanInput,
    pool: &Pool,
    ledger: &mut [Headroom],
    vmids: &mut BTreeMap<String, u64>,
    out: &mut Plan,
) {
    let cfg = &input.config;
    let Some(provider) = cfg.providers.get(&pool.provider) else {
        return;
    };
    let Some(entry) = pool.sizes.first().and_then(|s| cfg.size(s)) else {
        return;
    };
    let state = input
        .pool_state
        .get(&pool.name)
        .cloned()
        .unwrap_or_default();

    if let Some((min, sched)) = triggers::scheduled_floor(pool, input.now) {
        let have =
            pool_usage(cfg, &input.claims, &pool.name).nodes + planned(cfg, out, &pool.name).nodes;
        if have < min {
            let wish = Wish {
                count: min - have,
                reason: Reason::new(
                    ReasonCode::Scheduled,
                    format!(
                        "schedule `{}` of pool {} keeps at least {min} worker(s) for {}s after it fires; the pool has {have} (existing and on their way)",
                        sched.cron.as_str(),
                        pool.name,
                        sched.duration.as_secs()
                    ),
                ),
            };
            grant(input, pool, provider, entry, &wish, ledger, vmids, out);
        }
    }

    // Pressure and utilization add one worker at a time, and only once the
    // previous one has joined: the figures count Ready nodes only.
    let mut wish = None;
    for (kind, code, setting, since) in [
        (
            PressureKind::Cpu,
            ReasonCode::CpuPressure,
            pool.scale_up.cpu_pressure,
            state.cpu_pressure_since,
        ),
        (
            PressureKind::Memory,
            ReasonCode::MemoryPressure,
            pool.scale_up.memory_pressure,
            state.memory_pressure_since,
        ),
    ] {
        let (Some(setting), Some(since)) = (setting, since) else {
            continue;
        };
        let Some(level) = triggers::pressure(input, pool, kind) else {
            continue;
        };
        let held = input.now.as_second() - since.as_second();
        let window = i64::try_from(setting.for_duration.as_secs()).unwrap_or(i64::MAX);
        if level > setting.threshold && held >= window {
            wish = Some(Wish {
                count: 1,
                reason: Reason::new(
                    code,
                    format!(
                        "{} requests of pool {} at {:.0}% of allocatable, above {:.0}% for {held}s (window {window}s)",
                        kind.as_str(),
                        pool.name,
                        level * 100.0,
                        setting.threshold * 100.0
                    ),
                ),
            });
            break;
        }
    }
    if wish.is_none()
        && pool.kind == PoolKind::Permanent
        && let (Some(target), Some(level)) = (pool.utilization, triggers::utilization(input, pool))
        && level > target.scale_up_above
    {
        wish = Some(Wish {
            count: 1,
            reason: Reason::new(
                ReasonCode::Utilization,
                format!(
                    "pool {} is {:.0}% utilized (requests over allocatable), above {:.0}% (target {:.0}%)",
                    pool.name,
                    level * 100.0,
                    target.scale_up_above * 100.0,
                    target.target * 100.0
                ),
            ),
        });
    }
    let Some(wish) = wish else {
        return;
    };
    if planned(cfg, out, &pool.name).nodes > 0 {
        // This plan already adds capacity to the pool.
        return;
    }
    let flying = in_flight(input, &pool.name);
    if flying > 0 {
        out.deferred.push(Deferred {
            pool: pool.name.clone(),
            wanted: wish.reason.code,
            reason: Reason::new(
                ReasonCode::InFlight,
                format!(
                    "{flying} worker(s) of pool {} are on their way; {}",
                    pool.name, wish.reason.message
                ),
            ),
        });
        return;
    }
    grant(input, pool, provider, entry, &wish, ledger, vmids, out);
}

/// Provisions up to `wish.count` workers of `entry` for `pool` within its
/// limits, its `batchSize` (counting this plan's workers), the VMID range
/// and the hosts' headroom; what is refused goes to `out.deferred`.
#[allow(clippy::too_many_arguments)]
fn grant(
    input: &PlanInput,
    pool: &Pool,
    provider: &ProxmoxProvider,
    entry: &SizeEntry,
    wish: &Wish,
    ledger: &mut [Headroom],
    vmids: &mut BTreeMap<String, u64>,
    out: &mut Plan,
) {
    let cfg = &input.config;
    let size = &entry.size;
    let already = planned(cfg, out, &pool.name);
    let mut usage = pool_usage(cfg, &input.claims, &pool.name);
    usage.nodes += already.nodes;
    usage.cpu_cores += already.cpu_cores;
    usage.memory_mib += already.memory_mib;
    let mut batch_left = pool.scale_up.batch_size.saturating_sub(already.nodes);
    let mut hosts: Vec<(String, u32)> = Vec::new();
    let mut refusal = None;
    for _ in 0..wish.count {
        if batch_left == 0 {
            refusal = Some(Reason::new(
                ReasonCode::BatchSize,
                format!(
                    "pool {} provisions at most {} worker(s) per batch",
                    pool.name, pool.scale_up.batch_size
                ),
            ));
            break;
        }
        if let Err(e) = pool.limits.check_add(usage, size, 1) {
            let code = match e.limit() {
                "maxNodes" => ReasonCode::MaxNodes,
                "cpuCores" => ReasonCode::CpuCores,
                _ => ReasonCode::MemoryMib,
            };
            refusal = Some(Reason::new(
                code,
                format!("a new {} worker: {e} (pool {})", size.name, pool.name),
            ));
            break;
        }
        if vmids.get(&provider.name).copied().unwrap_or(0) == 0 {
            refusal = Some(Reason::new(
                ReasonCode::VmidRange,
                format!(
                    "provider {} has no free VMID in {}–{}",
                    provider.name, provider.vmid_lower, provider.vmid_upper
                ),
            ));
            break;
        }
        match place(
            ledger,
            pool,
            provider,
            &VmCost::new_worker(pool, size, provider),
        ) {
            Err(short) => {
                refusal = Some(Reason::new(
                    short.code,
                    format!(
                        "a new {} worker for pool {}: {}",
                        size.name, pool.name, short.message
                    ),
                ));
                break;
            }
            Ok(host) => {
                usage.nodes += 1;
                usage.cpu_cores += u64::from(size.vcpu);
                usage.memory_mib += size.memory_mib;
                batch_left -= 1;
                if let Some(v) = vmids.get_mut(&provider.name) {
                    *v -= 1;
                }
                match hosts.iter_mut().find(|h| h.0 == host) {
                    Some(h) => h.1 += 1,
                    None => hosts.push((host, 1)),
                }
            }
        }
    }
    for (host, count) in hosts {
        out.actions.push(Action::Provision {
            pool: pool.name.clone(),
            size: size.name.clone(),
            host,
            count,
            reason: Reason::new(
                wish.reason.code,
                format!(
                    "{}; {count} new {} worker(s)",
                    wish.reason.message, size.name
                ),
            ),
        });
    }
    if let Some(reason) = refusal {
        out.deferred.push(Deferred {
            pool: pool.name.clone(),
            wanted: wish.reason.code,
            reason,
        });
    }
}

/// A permanent worker refused for lack of host room.
struct Want<'a> {
    pool: &'a Pool,
    provider: &'a ProxmoxProvider,
    entry: &'a SizeEntry,
    /// Indices into `input.pending`.
    pods: Vec<usize>,
}

/// Spot preemption (spec §4): for each permanent worker no host has room
/// for, finds the host where draining the fewest spot workers makes room
/// and plans their removal (drained). The permanent worker itself is
/// provisioned by a later plan, once they are gone; until then its room is
/// reserved in `ledger` and its pods wait. Spot workers already leaving
/// (draining, terminating) count as room on its way.
fn preempt_spot(
    input: &PlanInput,
    wants: &[Want<'_>],
    placed: &[bool],
    ledger: &mut [Headroom],
    waiting: &mut [Option<(String, Reason)>],
    out: &mut Plan,
) {
    let cfg = &input.config;
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let blocks = |name: &str| {
        input
            .nodes
            .iter()
            .find(|n| n.name == name)
            .is_some_and(|n| n.pods.iter().any(|p| p.blocks_disruption()))
    };
    let spot_cost = |c: &ClaimState| {
        let pool = cfg.pool(&c.pool)?;
        let provider = cfg.providers.get(&pool.provider)?;
        Some(VmCost::of(&cfg.size(&c.size)?.size, provider))
    };
    for want in wants {
        let pods: Vec<usize> = want.pods.iter().copied().filter(|&i| !placed[i]).collect();
        let Some(&first) = pods.first() else {
            continue;
        };
        let cost = VmCost::new_worker(want.pool, &want.entry.size, want.provider);
        let storage = &want.provider.storage;
        // (spot workers to drain, ledger index, headroom after they leave)
        let mut best: Option<(Vec<&ClaimState>, usize, Headroom)> = None;
        for (h, room) in ledger.iter().enumerate() {
            if room.provider != want.provider.name || !may_use(want.pool, want.provider, &room.name)
            {
                continue;
            }
            let on_host = |c: &&ClaimState| {
                c.host.as_deref() == Some(room.name.as_str())
                    && cfg.pool(&c.pool).is_some_and(|p| p.kind == PoolKind::Spot)
            };
            let mut after = room.clone();
            for c in input.claims.iter().filter(on_host).filter(|c| {
                matches!(
                    c.phase,
                    crate::lifecycle::Phase::Draining | crate::lifecycle::Phase::Terminating
                )
            }) {
                if let Some(vm) = spot_cost(c) {
                    after.give(&vm, storage);
                }
            }
            let mut chosen = Vec::new();
            let mut spots: Vec<&ClaimState> = input
                .claims
                .iter()
                .filter(on_host)
                .filter(|c| {
                    c.phase == crate::lifecycle::Phase::Ready
                        && !taken.contains(c.name.as_str())
                        && cfg.protected.matching(&c.name).is_none()
                        && !blocks(&c.name)
                })
                .collect();
            spots.sort_by(|a, b| a.name.cmp(&b.name));
            for c in spots {
                if after.shortfall(&cost, storage).is_none() {
                    break;
                }
                if let Some(vm) = spot_cost(c) {
                    after.give(&vm, storage);
                    chosen.push(c);
                }
            }
            if after.shortfall(&cost, storage).is_some() {
                continue;
            }
            if best.as_ref().is_none_or(|b| chosen.len() < b.0.len()) {
                best = Some((chosen, h, after));
            }
        }
        let Some((chosen, h, mut after)) = best else {
            continue;
        };
        after.take(&cost, storage);
        let host = after.name.clone();
        // The host is promised to the permanent worker: nothing else lands
        // on it in this plan (what the spot workers free is not there yet).
        after.memory_mib = after.memory_mib.min(0);
        ledger[h] = after;
        let pod = input.pending[first].pod.key();
        for c in &chosen {
            taken.insert(c.name.as_str());
            out.actions.push(Action::Remove {
                worker: c.name.clone(),
                pool: c.pool.clone(),
                drain: true,
                reason: Reason::new(
                    ReasonCode::SpotPreemption,
                    format!(
                        "spot worker preempted on host {host} to make room for a permanent {} worker of pool {} for pod {pod}",
                        want.entry.size.name, want.pool.name
                    ),
                ),
            });
        }
        let names: Vec<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
        let reason = Reason::new(
            ReasonCode::SpotPreemption,
            if names.is_empty() {
                format!(
                    "spot workers leaving host {host} make room for a permanent {} worker of pool {}; it is provisioned once they are gone",
                    want.entry.size.name, want.pool.name
                )
            } else {
                format!(
                    "spot worker(s) {} on host {host} are drained to make room for a permanent {} worker of pool {}; it is provisioned once they are gone",
                    names.join(", "),
                    want.entry.size.name,
                    want.pool.name
                )
            },
        );
        for &i in &pods {
            waiting[i] = Some((want.pool.name.clone(), reason.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::*;
    use crate::config::{self, EXAMPLE};
    use crate::planner::PendingPod;
    use crate::sched::Requests;

    const GIB: u64 = 1 << 30;

    /// The example configuration with `pending` pods and nothing else.
    fn input(pending: &[(u64, u64)]) -> PlanInput {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        PlanInput {
            config: config::load(EXAMPLE).unwrap(),
            nodes: Vec::new(),
            pending: pending
                .iter()
                .enumerate()
                .map(|(i, &(cpu_milli, memory_bytes))| PendingPod {
                    pod: PodSpec {
                        namespace: "default".into(),
                        name: format!("p{i:03}").into(),
                        requests: Requests {
                            cpu_milli,
                            memory_bytes,
                            ..Requests::default()
                        },
                        ..PodSpec::default()
                    },
                    unschedulable_since: now,
                })
                .collect(),
            claims: Vec::new(),
            hosts: Vec::new(),
            vmids_in_use: BTreeMap::new(),
            pool_state: BTreeMap::new(),
            now,
        }
    }

    /// The permanent pool's one template (medium), every pod in the
    /// planner's order, and whether each fits an empty worker.
    fn medium(input: &PlanInput) -> (Vec<Template<'_>>, Vec<usize>, Vec<bool>) {
        let scale = Scale::of(&input.config);
        let pool = input.config.pool("permanent").unwrap();
        let templates = templates(input, pool, scale);
        let mut order: Vec<usize> = (0..input.pending.len()).collect();
        order.sort_by(|&a, &b| {
            scale
                .dominant(&input.pending[b].pod)
                .total_cmp(&scale.dominant(&input.pending[a].pod))
                .then(a.cmp(&b))
        });
        let holds = input
            .pending
            .iter()
            .map(|p| fits(&p.pod, &templates[0].node).is_ok())
            .collect();
        (templates, order, holds)
    }

    #[test]
    fn the_balanced_pass_pairs_cpu_heavy_and_memory_heavy_pods_that_first_fit_keeps_apart() {
        // Four 3.8-core pods and eight 7-GiB pods. Taken largest first, the
        // 3.8-core pods fill two mediums' CPU two by two and the 7-GiB pods
        // four more mediums' memory: six. One 3.8-core pod with two 7-GiB
        // pods (4.8 cores, 15 GiB) fills a medium exactly: four.
        let mut pods = vec![(3800, GIB); 4];
        pods.extend(vec![(500, 7 * GIB); 8]);
        let input = input(&pods);
        let (templates, order, holds) = medium(&input);
        let (ffd, left) = first_fit(&input, &order, &templates[0], &holds, 0, false);
        assert!(left.is_empty());
        assert_eq!(ffd.len(), 6);
        let (bal, left) = balanced(&input, &order, &templates[0], &holds, 0, false);
        assert!(left.is_empty());
        assert_eq!(bal.len(), 4);
        for bin in &bal {
            assert_eq!(bin.pods.len(), 3);
            assert_eq!(bin.node.requested.cpu_milli, 4800);
        }
        assert_eq!(pack(&input, &order, &templates, false).len(), 4);
    }

    #[test]
    fn first_fit_keeps_its_result_when_the_balanced_pass_is_no_better() {
        // Identical pods: both passes put two on each medium; the tie keeps
        // the first-fit packing.
        let input = input(&[(3000, GIB); 5]);
        let (templates, order, holds) = medium(&input);
        let (ffd, _) = first_fit(&input, &order, &templates[0], &holds, 0, false);
        let packed = pack(&input, &order, &templates, false);
        let pods = |bins: &[Bin]| bins.iter().map(|b| b.pods.clone()).collect::<Vec<_>>();
        assert_eq!(pods(&packed), pods(&ffd));
        assert_eq!(packed.len(), 3);
    }

    #[test]
    fn the_room_tree_finds_the_first_node_that_has_both_resources() {
        let input = input(&[(1000, 2 * GIB)]);
        let (templates, _, _) = medium(&input);
        let node = |cpu_used: u64, mem_used: u64| {
            let mut n = templates[0].room.clone();
            n.requested.cpu_milli = cpu_used;
            n.requested.memory_bytes = mem_used;
            n
        };
        // CPU but no memory, memory but no CPU, then both.
        let nodes = vec![
            node(0, 14 * GIB),
            node(7500, 0),
            node(7500, 14 * GIB),
            node(6000, 12 * GIB),
        ];
        let tree = RoomTree::of(&nodes);
        let pod = &input.pending[0].pod;
        let mut tried = Vec::new();
        let found = tree.first(&RoomTree::want(pod), |j| {
            tried.push(j);
            quick_room(pod, &nodes[j])
        });
        assert_eq!(found, Some(3));
        // Only the last two share a subtree where one node has both; the
        // first subtree (CPU on one node, memory on the other) is skipped.
        assert_eq!(tried, vec![3]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Whatever the pods, the packing places each pod that fits a
        /// medium exactly once, fills no worker beyond its allocatable and
        /// never needs more workers than first-fit-decreasing alone.
        #[test]
        fn packing_is_sound_and_never_worse_than_first_fit(
            pods in prop::collection::vec((0u64..8_000, 0u64..16_384), 0..120),
        ) {
            let pods: Vec<(u64, u64)> = pods.into_iter().map(|(c, m)| (c, m << 20)).collect();
            let input = input(&pods);
            let (templates, order, holds) = medium(&input);
            let (ffd, _) = first_fit(&input, &order, &templates[0], &holds, 0, false);
            let packed = pack(&input, &order, &templates, false);
            prop_assert!(packed.len() <= ffd.len());
            let mut seen = vec![0u32; pods.len()];
            for bin in &packed {
                let alloc = &templates[bin.size].node.allocatable;
                let (cpu, mem) = bin.pods.iter().fold((0, 0), |(c, m), &i| {
                    let r = &input.pending[i].pod.requests;
                    (c + r.cpu_milli, m + r.memory_bytes)
                });
                prop_assert!(cpu <= alloc.cpu_milli && mem <= alloc.memory_bytes);
                prop_assert!(bin.pods.len() <= alloc.pods as usize);
                prop_assert_eq!((cpu, mem), (bin.node.requested.cpu_milli, bin.node.requested.memory_bytes));
                for &i in &bin.pods {
                    seen[i] += 1;
                }
            }
            for (i, n) in seen.iter().enumerate() {
                prop_assert_eq!(*n, u32::from(holds[i]), "pod {}", i);
            }
        }
    }
}
