//! Cold spares: a pool's `spares` setting and the pure decisions about
//! them — which spares a scale-up activates, when a spare is refilled and
//! on which host, and the clock an activated spare starts.
//!
//! A spare is a worker claim with the intent `Spare`: cloned, configured,
//! started and installed like any worker until its node joins, then parked
//! ([`Phase::Spare`], see [`crate::claim::PARK_SPARE`]) with its node
//! deleted and its VM stopped. Activation ([`activate`]) starts it again:
//! the installed machine only boots and rejoins. A stopped VM uses no host memory; Tidepool's
//! headroom model still counts the memory of every VM placed on a host,
//! running or not, so a spare's room stays reserved and its activation
//! never finds its host filled by another worker. Spares are not capacity
//! for pods and do not hold pool room themselves: the refill keeps active
//! workers and spares together within the pool's limits, and a scale-up
//! turns a spare into a worker without adding to the pool.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::claim::{Claim, ClaimStatus, Condition};
use crate::lifecycle::Phase;
use crate::planner::hosts::VmCost;
use crate::planner::usage::{Refused, admit, ledger, pool_usage, vmids_free};
use crate::planner::{Action, Plan, PlanInput};

/// A pool's cold spares: how many, of which of its sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spares {
    /// How many spares the pool keeps ready.
    pub count: u32,
    /// The size they are made in (one of the pool's sizes).
    pub size: String,
}

/// One spare to make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refill {
    /// Pool.
    pub pool: String,
    /// Size.
    pub size: String,
    /// The host chosen for it, within its headroom.
    pub host: String,
    /// Why, in words.
    pub reason: String,
}

/// The unactivated spares of `pool` in `size`, parked ones first (those on
/// `host` first among them), then those still being made; none being
/// removed.
pub fn ready_to_activate<'a>(
    claims: &'a [Claim],
    pool: &str,
    size: &str,
    host: &str,
) -> Vec<&'a Claim> {
    let mut spares: Vec<&Claim> = claims
        .iter()
        .filter(|c| c.spec.pool == pool && c.spec.size == size && c.is_unactivated_spare())
        .collect();
    spares.sort_by_key(|c| {
        (
            c.phase() != Phase::Spare,
            c.host().as_deref() != Some(host),
            c.name.clone(),
        )
    });
    spares
}

/// What activation undoes: the run that installed the spare and its
/// parking. The machine configuration stays delivered.
const UNDONE_BY_ACTIVATION: [Condition; 9] = [
    Condition::VmStarted,
    Condition::AddressReported,
    Condition::NodeReady,
    Condition::Cordoned,
    Condition::Drained,
    Condition::NodeDeleted,
    Condition::OsShutdownRequested,
    Condition::AcpiShutdownRequested,
    Condition::VmStopped,
];

/// The status of a spare activated at `now`: the steps from its start on
/// are to be done again (its configuration is installed, so it counts as
/// delivered now, and the node's registration is awaited from now), and
/// its TTL counts from now.
pub fn activate(status: &mut ClaimStatus, ttl: Option<Duration>, now: Timestamp) {
    for c in UNDONE_BY_ACTIVATION {
        status.conditions.remove(&c);
    }
    status.conditions.insert(Condition::ConfigDelivered, now);
    status.ip = None;
    status.node_name = None;
    status.last_error = None;
    start_clock(status, ttl, now);
}

/// Starts an activated spare's clock: its TTL counts from `now`, not from
/// when it was made.
pub fn start_clock(status: &mut ClaimStatus, ttl: Option<Duration>, now: Timestamp) {
    status.provisioned_at = Some(now);
    status.expires_at = ttl
        .and_then(|t| SignedDuration::try_from(t).ok())
        .and_then(|t| now.checked_add(t).ok());
}

/// The spares to make now, at most one per pool: for each pool that keeps
/// spares, has fewer than it should, has none still being made and gets no
/// worker from `plan`, one spare on a host with headroom (after what the
/// plan adds), within the pool's limits counted with its spares, and with
/// a free VMID. Nothing is preempted for a spare.
pub fn refills(input: &PlanInput, claims: &[Claim], plan: &Plan) -> Vec<Refill> {
    let cfg = &input.config;
    let mut hosts = ledger(input);
    for action in &plan.actions {
        let Action::Provision {
            pool,
            size,
            host,
            count,
            ..
        } = action
        else {
            continue;
        };
        let (Some(p), Some(s)) = (cfg.pool(pool), cfg.size(size)) else {
            continue;
        };
        let Some(provider) = cfg.providers.get(&p.provider) else {
            continue;
        };
        let cost = VmCost::new_worker(p, &s.size, provider);
        if let Some(room) = hosts.iter_mut().find(|h| &h.name == host) {
            for _ in 0..*count {
                room.take(&cost, &provider.storage);
            }
        }
    }
    let vmids = vmids_free(input);
    let mut out = Vec::new();
    for pool in &cfg.pools {
        let Some(want) = &pool.spares else { continue };
        let scaling_up = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Provision { pool: p, .. } if *p == pool.name));
        let spares: Vec<&Claim> = claims
            .iter()
            .filter(|c| c.spec.pool == pool.name && c.is_unactivated_spare())
            .collect();
        let making = spares.iter().any(|c| c.phase() != Phase::Spare);
        let have = u32::try_from(spares.len()).unwrap_or(u32::MAX);
        if scaling_up || making || have >= want.count {
            continue;
        }
        let (Some(size), Some(provider)) =
            (cfg.size(&want.size), cfg.providers.get(&pool.provider))
        else {
            continue;
        };
        let mut usage = pool_usage(cfg, &input.claims, &pool.name);
        for spare in &spares {
            if let Some(s) = cfg.size(&spare.spec.size) {
                usage.nodes += 1;
                usage.cpu_cores += u64::from(s.size.vcpu);
                usage.memory_mib += s.size.memory_mib;
            }
        }
        let left = vmids.get(&provider.name).copied().unwrap_or(0);
        match admit(&mut hosts, pool, provider, &size.size, usage, left) {
            Ok(host) => out.push(Refill {
                pool: pool.name.clone(),
                size: want.size.clone(),
                reason: format!(
                    "pool {} keeps {} cold spares and has {have}",
                    pool.name, want.count
                ),
                host,
            }),
            Err(Refused::Limit(_) | Refused::Vmids | Refused::Host(_)) => {}
        }
    }
    out
}
