//! Packing pending pods onto new workers of a pool's sizes: each size's
//! empty node ([`Template`]), the figures that make cpu and memory
//! comparable ([`Scale`]), first-fit-decreasing, the balanced improvement
//! pass, and [`pack`], which keeps the packing with the least waste and
//! shrinks each worker to the cheapest size that holds its pods.

use std::collections::BTreeSet;

use crate::config::{Config, Pool, SizeEntry};
use crate::planner::PlanInput;
use crate::pool::{Resources, Size};
use crate::sched::{NodeSnapshot, PodSpec, fits, fits_room};

use super::room::{RoomTree, quick_room};

/// A new worker being filled by the simulation.
#[derive(Clone, Debug)]
pub(super) struct Bin {
    /// Index into the pool's templates.
    pub(super) size: usize,
    /// The worker's node with the pods bound so far.
    pub(super) node: NodeSnapshot,
    /// Indices into `input.pending`.
    pub(super) pods: Vec<usize>,
}

/// A pool's sizes with the empty node each would become.
pub(super) struct Template<'a> {
    /// The size.
    pub(super) entry: &'a SizeEntry,
    /// The empty node a new worker of the size becomes.
    pub(super) node: NodeSnapshot,
    /// The same empty node with only what the room checks read (no name,
    /// labels or taints): cheap to clone for every new worker. Who may run
    /// on it is decided once per pod against `node`.
    pub(super) room: NodeSnapshot,
    /// What a worker of the size takes from its host, as [`Scale::cost`].
    pub(super) cost: f64,
}

/// Reference figures that make cpu and memory comparable: the largest
/// allocatable and the largest VM of any configured size.
#[derive(Clone, Copy)]
pub(super) struct Scale {
    cpu: f64,
    mem: f64,
    vcpu: f64,
    vm_mem: f64,
}

impl Scale {
    pub(super) fn of(config: &Config) -> Self {
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

    /// A pod's larger request, cpu or memory, as a share of the scale.
    pub(super) fn dominant(self, pod: &PodSpec) -> f64 {
        (pod.requests.cpu_milli as f64 / self.cpu).max(pod.requests.memory_bytes as f64 / self.mem)
    }

    /// Allocatable cpu and memory, as one figure.
    pub(super) fn capacity(self, alloc: &Resources) -> f64 {
        alloc.cpu_milli as f64 / self.cpu + alloc.memory_bytes as f64 / self.mem
    }

    /// What a worker of `size` takes from its host (vCPUs, and memory with
    /// the per-VM overhead), as one figure. Comparing sizes by this rather
    /// than by allocatable counts the kubelet reserve and the VM overhead
    /// each extra worker costs: at equal fragmentation, fewer larger
    /// workers win.
    pub(super) fn cost(self, size: &Size, overhead_mib: u64) -> f64 {
        f64::from(size.vcpu) / self.vcpu
            + (size.memory_mib + overhead_mib) as f64 / (self.vm_mem + overhead_mib as f64)
    }
}

/// The pool's sizes, in configuration order, with the empty node each
/// would become and its cost.
pub(super) fn templates<'a>(input: &'a PlanInput, pool: &Pool, scale: Scale) -> Vec<Template<'a>> {
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

/// One packing pass's work: `pods` (already sorted) onto new nodes of one
/// template, the pods that fit its empty node marked in `holds`.
struct Pass<'p> {
    input: &'p PlanInput,
    pods: &'p [usize],
    template: &'p Template<'p>,
    holds: &'p [bool],
    /// The template's index, for the bins.
    size: usize,
    keep_pods: bool,
}

impl Pass<'_> {
    /// A new worker of the template with nothing on it yet.
    fn empty_bin(&self) -> Bin {
        Bin {
            size: self.size,
            node: self.template.room.clone(),
            pods: Vec::new(),
        }
    }

    /// Whether pending pod `i` fits the room `bin` has left.
    fn fits(&self, i: usize, bin: &Bin) -> bool {
        let pod = &self.input.pending[i].pod;
        quick_room(pod, &bin.node) && fits_room(pod, &bin.node).is_ok()
    }

    /// Binds pending pod `i` to `bin`.
    fn bind(&self, i: usize, bin: &mut Bin) {
        bin.node.bind(&self.input.pending[i].pod, self.keep_pods);
        bin.pods.push(i);
    }
}

/// First-fit-decreasing of the pass's pods onto new nodes of its template;
/// returns the bins and the pods the template cannot hold.
fn first_fit(pass: &Pass<'_>) -> (Vec<Bin>, Vec<usize>) {
    let mut bins: Vec<Bin> = Vec::new();
    let mut tree = RoomTree::new();
    let mut leftover = Vec::new();
    for &i in pass.pods {
        if !pass.holds[i] {
            leftover.push(i);
            continue;
        }
        let slot = tree.first(&RoomTree::want(&pass.input.pending[i].pod), |j| {
            pass.fits(i, &bins[j])
        });
        let j = match slot {
            Some(j) => j,
            None => {
                bins.push(pass.empty_bin());
                bins.len() - 1
            }
        };
        pass.bind(i, &mut bins[j]);
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
fn balanced(pass: &Pass<'_>) -> (Vec<Bin>, Vec<usize>) {
    let (input, pods) = (pass.input, pass.pods);
    let alloc = &pass.template.node.allocatable;
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
        if !pass.holds[i] {
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
        let mut bin = pass.empty_bin();
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
            let fits_bin = |&(_, at): &(u64, usize)| pass.fits(pods[!at], &bin);
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
            pass.bind(pods[!key.1], &mut bin);
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
pub(super) fn pack(
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
            let pass = Pass {
                input,
                pods: &left,
                template,
                holds: &holds[s],
                size: s,
                keep_pods,
            };
            let (mut bins, mut leftover) = first_fit(&pass);
            // Both leave out the same pods (those `holds` refuses).
            let (alt, alt_leftover) = balanced(&pass);
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

/// How much of the new workers' allocatable cpu and memory the pods leave
/// unused, in percent.
pub(super) fn waste_percent(bins: &[&Bin], scale: Scale) -> f64 {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;
    use crate::planner::scale_up::fixtures::{GIB, input, medium};

    /// A pass of `order` onto the first template, without keeping pods.
    fn pass<'p>(
        input: &'p PlanInput,
        order: &'p [usize],
        templates: &'p [Template<'p>],
        holds: &'p [bool],
    ) -> Pass<'p> {
        Pass {
            input,
            pods: order,
            template: &templates[0],
            holds,
            size: 0,
            keep_pods: false,
        }
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
        let (ffd, left) = first_fit(&pass(&input, &order, &templates, &holds));
        assert!(left.is_empty());
        assert_eq!(ffd.len(), 6);
        let (bal, left) = balanced(&pass(&input, &order, &templates, &holds));
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
        let (ffd, _) = first_fit(&pass(&input, &order, &templates, &holds));
        let packed = pack(&input, &order, &templates, false);
        let pods = |bins: &[Bin]| bins.iter().map(|b| b.pods.clone()).collect::<Vec<_>>();
        assert_eq!(pods(&packed), pods(&ffd));
        assert_eq!(packed.len(), 3);
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
            let (ffd, _) = first_fit(&pass(&input, &order, &templates, &holds));
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
