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

//!
//! Step 1 is here, the pools' pass in [`offer`] (with the packing of
//! [`packing`] and [`room`], the trigger of [`trigger`] and the spot
//! preemption of [`preempt`]), and the pool-level triggers (schedule,
//! pressure, utilization) in [`pool_level`]. What the pools and hosts
//! already use is in [`super::usage`].

mod offer;
mod packing;
mod pool_level;
mod preempt;
mod room;
mod trigger;

use std::collections::BTreeSet;

use crate::config::Pool;
use crate::lifecycle::Phase;
use crate::pool::PoolKind;
use crate::sched::{NodeSnapshot, fits};

use super::{ClaimState, Plan, PlanInput};
use offer::Offer;
use packing::Scale;
use room::{RoomTree, quick_room};

pub use super::usage::pool_usage;
pub use trigger::STARVATION_WINDOWS;

/// What scale-down needs to know from scale-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleUpOutcome {
    /// Nodes (and in-flight workers) that pending pods were simulated onto.
    pub absorbing_nodes: BTreeSet<String>,
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

    // 1. Absorb into existing nodes and workers on their way.
    let order = largest_first(input, scale);
    let remaining = absorb(input, &order, keep_pods, &mut outcome);

    // 2–4. Offer the rest to the pools.
    let mut offer = Offer::new(input, scale, keep_pods);
    // Spot pools come last, after preemption has reserved the room it frees
    // for permanent capacity: spot work must not take that room back.
    let (spot, others): (Vec<&Pool>, Vec<&Pool>) =
        cfg.pools.iter().partition(|p| p.kind == PoolKind::Spot);
    for pool in others {
        offer.pool(pool, &remaining, out);
    }
    // 5. Permanent capacity the hosts have no room for: preempt spot
    //    workers.
    offer.preempt(out);
    for pool in spot {
        offer.pool(pool, &remaining, out);
    }

    // 6. Pool-level triggers: scheduled minimums, request pressure and
    //    the utilization target of permanent pools.
    offer.pool_triggers(out);

    offer.report(&remaining, out);
    outcome
}

/// The pending pods other than DaemonSet pods, largest first by their
/// dominant resource (then by namespace and name).
fn largest_first(input: &PlanInput, scale: Scale) -> Vec<usize> {
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
    order
}

/// Binds the pods of `order` that fit onto existing nodes and workers on
/// their way, recording those nodes in `outcome`; returns the pods that
/// need new capacity, in order.
fn absorb(
    input: &PlanInput,
    order: &[usize],
    keep_pods: bool,
    outcome: &mut ScaleUpOutcome,
) -> Vec<usize> {
    let mut room = capacity_on_hand(input);
    let mut room_tree = RoomTree::of(&room);
    let mut remaining = Vec::new();
    for &i in order {
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
    remaining
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
        c.in_flight() || (c.phase == Phase::Ready && unlabelled.contains(c.name.as_str()))
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

/// What the tests of scale-up's parts share.
#[cfg(test)]
mod fixtures {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::packing::{Scale, Template, templates};
    use crate::config::{self, EXAMPLE};
    use crate::planner::{PendingPod, PlanInput};
    use crate::sched::{PodSpec, Requests, fits};

    pub(super) const GIB: u64 = 1 << 30;

    /// The example configuration with `pending` pods and nothing else.
    pub(super) fn input(pending: &[(u64, u64)]) -> PlanInput {
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
    pub(super) fn medium(input: &PlanInput) -> (Vec<Template<'_>>, Vec<usize>, Vec<bool>) {
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
}
