//! Finding room for a pod among many nodes fast: [`quick_room`], a cheap
//! necessary condition, and [`RoomTree`], a max-tree over the nodes' free
//! room that skips every subtree where no node can hold the pod.

use crate::sched::{NodeSnapshot, PodSpec};

/// A cheap necessary condition for [`fits_room`](crate::sched::fits_room): pod slots, cpu, memory.
pub(super) fn quick_room(pod: &PodSpec, node: &NodeSnapshot) -> bool {
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
pub(super) struct RoomTree {
    /// Leaves (a power of two); node `k` has children `2k` and `2k + 1`,
    /// leaf `i` is node `leaves + i`. Unused leaves stay zero.
    leaves: usize,
    max: Vec<Figures>,
}

impl RoomTree {
    pub(super) fn new() -> Self {
        RoomTree {
            leaves: 1,
            max: vec![Figures::default(); 2],
        }
    }

    pub(super) fn of(nodes: &[NodeSnapshot]) -> Self {
        let mut tree = RoomTree::new();
        for (i, node) in nodes.iter().enumerate() {
            tree.set(i, node);
        }
        tree
    }

    pub(super) fn want(pod: &PodSpec) -> Figures {
        figures(pod.requests.cpu_milli, pod.requests.memory_bytes, 1)
    }

    /// Records node `i`'s room, growing the tree when `i` is new.
    pub(super) fn set(&mut self, i: usize, node: &NodeSnapshot) {
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
    pub(super) fn first(
        &self,
        want: &Figures,
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::planner::scale_up::fixtures::{GIB, input, medium};

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
}
