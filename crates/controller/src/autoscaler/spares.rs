//! Cold spares in the autoscaler's pass: a scale-up activates the pool's
//! matching spares before it clones ([`activate_first`]), and each pool's
//! spares are refilled in the background ([`refill`]), one at a time,
//! within host headroom, never while the pool scales up (the choices are
//! `tidepool_core::spares`').

use std::collections::BTreeSet;

use tidepool_core::planner::{Action, Plan, PlanInput};
use tidepool_core::spares::{ready_to_activate, refills};
use tracing::{info, warn};

use crate::claim::Claim;
use crate::ports::{ClaimStore, Hypervisor, Joiner, Nodes};
use crate::service::Service;

/// Activates up to the `Provision` action's count of its pool's spares of
/// its size (parked ones first, on its host first), skipping those in
/// `used` and adding the ones activated to it. Returns the spares
/// activated and the action for what is left to clone (`None` when the
/// spares cover it).
pub(super) async fn activate_first<H, J, N, S>(
    service: &Service<H, J, N, S>,
    actor: &str,
    action: &Action,
    claims: &[Claim],
    used: &mut BTreeSet<String>,
) -> (Vec<String>, Option<Action>)
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
    let Action::Provision {
        pool,
        size,
        host,
        count,
        reason,
    } = action
    else {
        return (Vec::new(), Some(action.clone()));
    };
    let mut activated = Vec::new();
    for spare in ready_to_activate(claims, pool, size, host) {
        if activated.len() >= *count as usize {
            break;
        }
        if used.contains(&spare.name) {
            continue;
        }
        match service.activate_spare(actor, &spare.name).await {
            Ok(true) => {
                info!(spare = %spare.name, %pool, %size, reason = %reason, "spare activated");
                used.insert(spare.name.clone());
                activated.push(spare.name.clone());
            }
            Ok(false) => {}
            Err(e) => warn!(spare = %spare.name, error = %e, "a spare was not activated"),
        }
    }
    let left = count.saturating_sub(u32::try_from(activated.len()).unwrap_or(u32::MAX));
    let rest = (left > 0).then(|| Action::Provision {
        pool: pool.clone(),
        size: size.clone(),
        host: host.clone(),
        count: left,
        reason: reason.clone(),
    });
    (activated, rest)
}

/// Makes the spares the pools lack (at most one per pool per pass, see
/// `tidepool_core::spares::refills`); returns the claims created.
pub(super) async fn refill<H, J, N, S>(
    service: &Service<H, J, N, S>,
    actor: &str,
    input: &PlanInput,
    claims: &[Claim],
    planned: &Plan,
) -> Vec<String>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
    let mut made = Vec::new();
    for r in refills(input, claims, planned) {
        match service
            .provision_spare(actor, &r.pool, &r.size, &r.host, &r.reason)
            .await
        {
            Ok(names) => {
                info!(claims = ?names, pool = %r.pool, size = %r.size, host = %r.host, "spare refilled");
                made.extend(names);
            }
            Err(e) => warn!(pool = %r.pool, error = %e, "spare not refilled"),
        }
    }
    made
}
