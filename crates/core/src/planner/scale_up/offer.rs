//! Steps 2 to 5 of scale-up: the pending pods no existing node absorbs are
//! offered to the pools in configuration order (spot pools last, after
//! preemption), packed onto new workers, and the workers accepted one by
//! one while the pool's limits, its `batchSize`, the VMID range and some
//! host's headroom allow. What is left is reported: waiting for a trigger
//! or batch, or unhelpable with the limit or dimension that refused it.

use std::collections::BTreeMap;

use crate::config::{Pool, ProxmoxProvider, SizeEntry};
use crate::planner::hosts::Headroom;
use crate::planner::usage::{Refused, admit, ledger, pool_usage, vmids_free};
use crate::planner::{Action, Plan, PlanInput, Reason, ReasonCode, Unhelpable, Waiting};
use crate::pool::{PoolKind, PoolUsage};
use crate::sched::{PodSpec, fits, fits_identity, fits_room};

use super::packing::{Bin, Scale, Template, pack, templates, waste_percent};
use super::pool_level::pool_triggers;
use super::preempt::{Want, preempt_spot};
use super::trigger::{count_waited, trigger};

/// New workers of one size on one host: one Provision action.
struct Group {
    /// Index into the pool's templates.
    size: usize,
    /// The host.
    host: String,
    /// Workers.
    count: u32,
    /// Pods packed onto them.
    pods: usize,
}

/// The pools' pass over the pending pods, with what it has decided so far.
pub(super) struct Offer<'a> {
    input: &'a PlanInput,
    scale: Scale,
    keep_pods: bool,
    /// Per pending pod: a new worker of this plan hosts it.
    placed: Vec<bool>,
    /// Per pending pod: the limit or dimension that refused its worker.
    blocked: Vec<Option<Reason>>,
    /// Per pending pod: the pool that will host it later, and what it
    /// waits for.
    waiting: Vec<Option<(String, Reason)>>,
    /// The hosts' headroom, less what this plan places.
    ledger: Vec<Headroom>,
    /// VMIDs left per provider, less what this plan takes.
    vmids: BTreeMap<String, u64>,
    /// Permanent workers refused for lack of host room.
    wants: Vec<Want<'a>>,
}

impl<'a> Offer<'a> {
    /// Nothing decided yet.
    pub(super) fn new(input: &'a PlanInput, scale: Scale, keep_pods: bool) -> Self {
        let n = input.pending.len();
        Self {
            input,
            scale,
            keep_pods,
            placed: vec![false; n],
            blocked: vec![None; n],
            waiting: vec![None; n],
            ledger: ledger(input),
            vmids: vmids_free(input),
            wants: Vec::new(),
        }
    }

    /// Offers the pods of `remaining` no worker hosts yet to `pool`: those
    /// that fit one of its sizes get new workers if its trigger fires.
    pub(super) fn pool(&mut self, pool: &'a Pool, remaining: &[usize], out: &mut Plan) {
        let input = self.input;
        let Some(provider) = input.config.providers.get(&pool.provider) else {
            return;
        };
        let templates = templates(input, pool, self.scale);
        let candidates: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                !self.placed[i]
                    && templates
                        .iter()
                        .any(|t| fits(&input.pending[i].pod, &t.node).is_ok())
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let state = input.state_of(&pool.name);
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
            self.wait(&candidates, pool, &reason);
            return;
        };
        let bins = pack(input, &candidates, &templates, self.keep_pods);
        self.accept(pool, provider, &templates, &bins, &trigger, out);
    }

    /// Marks `pods` as waiting for `pool`, unless they already wait.
    fn wait(&mut self, pods: &[usize], pool: &Pool, reason: &Reason) {
        for &i in pods {
            self.waiting[i].get_or_insert_with(|| (pool.name.clone(), reason.clone()));
        }
    }

    /// Accepts the packed `bins` one by one, up to the pool's `batchSize`,
    /// and plans a Provision action per size and host.
    fn accept(
        &mut self,
        pool: &'a Pool,
        provider: &'a ProxmoxProvider,
        templates: &[Template<'a>],
        bins: &[Bin],
        trigger: &Reason,
        out: &mut Plan,
    ) {
        let mut usage = pool_usage(&self.input.config, &self.input.claims, &pool.name);
        let mut accepted: Vec<&Bin> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for bin in bins {
            if accepted.len() as u64 >= u64::from(pool.scale_up.batch_size) {
                let reason = Reason::new(
                    ReasonCode::BatchSize,
                    format!(
                        "pool {} provisions at most {} worker(s) per batch; the next batch will host it",
                        pool.name, pool.scale_up.batch_size
                    ),
                );
                self.wait(&bin.pods, pool, &reason);
                continue;
            }
            let entry = templates[bin.size].entry;
            match self.admit_bin(pool, provider, entry, bin, &mut usage) {
                Err(reason) => {
                    for &i in &bin.pods {
                        self.blocked[i].get_or_insert_with(|| reason.clone());
                    }
                }
                Ok(host) => {
                    accepted.push(bin);
                    match groups
                        .iter_mut()
                        .find(|g| g.size == bin.size && g.host == host)
                    {
                        Some(g) => {
                            g.count += 1;
                            g.pods += bin.pods.len();
                        }
                        None => groups.push(Group {
                            size: bin.size,
                            host,
                            count: 1,
                            pods: bin.pods.len(),
                        }),
                    }
                }
            }
        }
        let waste = waste_percent(&accepted, self.scale);
        for Group {
            size,
            host,
            count,
            pods,
        } in groups
        {
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

    /// Admits the new worker `bin` of `entry`: on success its pods are
    /// placed, the pool's `usage` and the provider's VMIDs count it, and its
    /// host is named. A permanent worker refused for lack of host room is
    /// remembered for spot preemption.
    fn admit_bin(
        &mut self,
        pool: &'a Pool,
        provider: &'a ProxmoxProvider,
        entry: &'a SizeEntry,
        bin: &Bin,
        usage: &mut PoolUsage,
    ) -> Result<String, Reason> {
        let size = &entry.size;
        let vmids_left = self.vmids.get(&provider.name).copied().unwrap_or(0);
        match admit(&mut self.ledger, pool, provider, size, *usage, vmids_left) {
            Err(refused) => {
                if let Refused::Host(short) = &refused
                    && pool.kind == PoolKind::Permanent
                    && matches!(
                        short.code,
                        ReasonCode::HostMemory | ReasonCode::HostCpu | ReasonCode::HostStorage
                    )
                {
                    self.wants.push(Want {
                        pool,
                        provider,
                        entry,
                        pods: bin.pods.clone(),
                    });
                }
                Err(refused.reason(pool, provider, size))
            }
            Ok(host) => {
                *usage = usage.with_worker(size);
                if let Some(v) = self.vmids.get_mut(&provider.name) {
                    *v -= 1;
                }
                for &i in &bin.pods {
                    self.placed[i] = true;
                }
                Ok(host)
            }
        }
    }

    /// Step 5: permanent capacity the hosts have no room for preempts spot
    /// workers.
    pub(super) fn preempt(&mut self, out: &mut Plan) {
        preempt_spot(
            self.input,
            &self.wants,
            &self.placed,
            &mut self.ledger,
            &mut self.waiting,
            out,
        );
    }

    /// Step 6: the pool-level triggers, with what is left of the hosts and
    /// the VMIDs.
    pub(super) fn pool_triggers(&mut self, out: &mut Plan) {
        for pool in &self.input.config.pools {
            pool_triggers(self.input, pool, &mut self.ledger, &mut self.vmids, out);
        }
    }

    /// Reports every pod of `remaining` no new worker hosts: waiting, or
    /// unhelpable with the refusal of its worker or why no pool fits it.
    pub(super) fn report(mut self, remaining: &[usize], out: &mut Plan) {
        let input = self.input;
        for &i in remaining {
            if self.placed[i] {
                continue;
            }
            let key = input.pending[i].pod.key();
            if let Some((pool, reason)) = self.waiting[i].take() {
                out.waiting.push(Waiting {
                    pod: key,
                    pool,
                    reason,
                });
            } else if let Some(reason) = self.blocked[i].take() {
                out.unhelpable.push(Unhelpable { pod: key, reason });
            } else {
                out.unhelpable.push(Unhelpable {
                    pod: key,
                    reason: no_pool_fits(input, self.scale, &input.pending[i].pod),
                });
            }
        }
    }
}

/// Why no pool can host `pod`: per pool, what its largest size lacks.
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
