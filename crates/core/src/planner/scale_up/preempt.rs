//! Spot preemption (spec §4, step 5 of scale-up): room for permanent
//! workers that no host has, made by draining spot workers.

use std::collections::BTreeSet;

use crate::config::{Pool, ProxmoxProvider, SizeEntry};
use crate::lifecycle::Phase;
use crate::planner::hosts::{Headroom, VmCost, may_use};
use crate::planner::{Action, ClaimState, Plan, PlanInput, Reason, ReasonCode};
use crate::pool::PoolKind;

/// A permanent worker refused for lack of host room.
pub(super) struct Want<'a> {
    /// Its pool.
    pub(super) pool: &'a Pool,
    /// The pool's provider.
    pub(super) provider: &'a ProxmoxProvider,
    /// Its size.
    pub(super) entry: &'a SizeEntry,
    /// Indices into `input.pending`.
    pub(super) pods: Vec<usize>,
}

/// The cheapest way to make room on one host for a wanted worker.
struct Preemption<'c> {
    /// The spot workers to drain.
    chosen: Vec<&'c ClaimState>,
    /// The host's index in the ledger.
    host: usize,
    /// The host's headroom once they (and the spot workers already
    /// leaving) are gone.
    after: Headroom,
}

/// Spot preemption (spec §4): for each permanent worker no host has room
/// for, finds the host where draining the fewest spot workers makes room
/// and plans their removal (drained). The permanent worker itself is
/// provisioned by a later plan, once they are gone; until then its room is
/// reserved in `ledger` and its pods wait. Spot workers already leaving
/// (draining, terminating) count as room on its way.
pub(super) fn preempt_spot(
    input: &PlanInput,
    wants: &[Want<'_>],
    placed: &[bool],
    ledger: &mut [Headroom],
    waiting: &mut [Option<(String, Reason)>],
    out: &mut Plan,
) {
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    for want in wants {
        let pods: Vec<usize> = want.pods.iter().copied().filter(|&i| !placed[i]).collect();
        let Some(&first) = pods.first() else {
            continue;
        };
        let cost = VmCost::new_worker(want.pool, &want.entry.size, want.provider);
        let storage = &want.provider.storage;
        let Some(Preemption {
            chosen,
            host: h,
            mut after,
        }) = cheapest_preemption(input, want, &cost, ledger, &taken)
        else {
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
        let reason = waiting_reason(want, &chosen, &host);
        for &i in &pods {
            waiting[i] = Some((want.pool.name.clone(), reason.clone()));
        }
    }
}

/// Among the hosts `want`'s pool may use, the one where draining the
/// fewest spot workers (not `taken` by an earlier want, not protected, not
/// running a pod that forbids disruption; by name) makes room for `cost`.
fn cheapest_preemption<'c>(
    input: &'c PlanInput,
    want: &Want<'_>,
    cost: &VmCost,
    ledger: &[Headroom],
    taken: &BTreeSet<&str>,
) -> Option<Preemption<'c>> {
    let cfg = &input.config;
    let storage = &want.provider.storage;
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
    let mut best: Option<Preemption<'c>> = None;
    for (h, room) in ledger.iter().enumerate() {
        if room.provider != want.provider.name || !may_use(want.pool, want.provider, &room.name) {
            continue;
        }
        let on_host = |c: &&ClaimState| {
            c.host.as_deref() == Some(room.name.as_str())
                && cfg.pool(&c.pool).is_some_and(|p| p.kind == PoolKind::Spot)
        };
        let mut after = room.clone();
        for c in input
            .claims
            .iter()
            .filter(on_host)
            .filter(|c| matches!(c.phase, Phase::Draining | Phase::Terminating))
        {
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
                c.phase == Phase::Ready
                    && !taken.contains(c.name.as_str())
                    && cfg.protected.matching(&c.name).is_none()
                    && !blocks(&c.name)
            })
            .collect();
        spots.sort_by(|a, b| a.name.cmp(&b.name));
        for c in spots {
            if after.shortfall(cost, storage).is_none() {
                break;
            }
            if let Some(vm) = spot_cost(c) {
                after.give(&vm, storage);
                chosen.push(c);
            }
        }
        if after.shortfall(cost, storage).is_some() {
            continue;
        }
        if best.as_ref().is_none_or(|b| chosen.len() < b.chosen.len()) {
            best = Some(Preemption {
                chosen,
                host: h,
                after,
            });
        }
    }
    best
}

/// Why `want`'s pods wait: the spot workers `chosen` on `host` are drained
/// (or, when none is, those already leaving make the room).
fn waiting_reason(want: &Want<'_>, chosen: &[&ClaimState], host: &str) -> Reason {
    let names: Vec<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    Reason::new(
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
    )
}
