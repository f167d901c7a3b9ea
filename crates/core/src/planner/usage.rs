//! What is already used or promised before a plan adds anything: each
//! pool's usage against its limits, the hosts' headroom (the ledger), the
//! VMIDs left per provider, and the checks one more worker must pass, in
//! the order the planner makes them (the pool's limits, a free VMID, a
//! host with room). Scale-up and the capacity report share them, so a
//! figure of the report is what the next plan would be allowed to do.

use std::collections::BTreeMap;

use crate::config::{Config, Pool, ProxmoxProvider};
use crate::pool::{LimitError, PoolUsage, Size};

use super::hosts::{Headroom, Shortfall, VmCost, place};
use super::{ClaimState, PlanInput, Reason, ReasonCode};

/// What a pool uses against its limits: every claim of the pool that is not
/// on its way out, failed ones included (they keep their VMs).
pub fn pool_usage(cfg: &Config, claims: &[ClaimState], pool: &str) -> PoolUsage {
    let mut usage = PoolUsage::default();
    for claim in claims
        .iter()
        .filter(|c| c.pool == pool && c.phase.holds_pool_room() && !c.removing)
    {
        usage.nodes += 1;
        if let Some(size) = cfg.size(&claim.size) {
            usage.cpu_cores += u64::from(size.size.vcpu);
            usage.memory_mib += size.size.memory_mib;
        }
    }
    usage
}

/// The claims whose VM is still to come (`Requested`, `Provisioning`, a
/// spare being made),
/// each with what its VM costs a host: placement takes them off their
/// host's room unless the host already counts them.
pub fn vms_on_their_way<'a>(
    cfg: &Config,
    claims: impl IntoIterator<Item = &'a ClaimState>,
) -> Vec<(&'a ClaimState, VmCost)> {
    claims
        .into_iter()
        .filter(|c| {
            matches!(
                c.phase,
                crate::lifecycle::Phase::Requested
                    | crate::lifecycle::Phase::Provisioning
                    // A spare being made; a parked one is on its host already.
                    | crate::lifecycle::Phase::Spare
            )
        })
        .filter_map(|c| {
            let provider = cfg.providers.get(&cfg.pool(&c.pool)?.provider)?;
            Some((c, VmCost::of(&cfg.size(&c.size)?.size, provider)))
        })
        .collect()
}

/// The headroom of every online host, with the VMs of claims not yet on
/// the host taken off, sorted by host name.
pub(crate) fn ledger(input: &PlanInput) -> Vec<Headroom> {
    let cfg = &input.config;
    let on_their_way = vms_on_their_way(cfg, &input.claims);
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

/// The reason code of a pool limit.
pub(crate) fn limit_code(e: &LimitError) -> ReasonCode {
    match e.limit() {
        "maxNodes" => ReasonCode::MaxNodes,
        "cpuCores" => ReasonCode::CpuCores,
        _ => ReasonCode::MemoryMib,
    }
}

/// The refusal when `provider` has no VMID left.
pub(crate) fn no_vmid(provider: &ProxmoxProvider) -> Reason {
    Reason::new(
        ReasonCode::VmidRange,
        format!(
            "provider {} has no free VMID in {}–{}",
            provider.name, provider.vmid_lower, provider.vmid_upper
        ),
    )
}

/// Why one more worker is refused.
pub(crate) enum Refused {
    /// A limit of the pool.
    Limit(LimitError),
    /// The provider's VMID range is used up.
    Vmids,
    /// No host the pool may use has room.
    Host(Shortfall),
}

impl Refused {
    /// The refusal as scale-up words it for a new worker of `size`.
    pub(crate) fn reason(&self, pool: &Pool, provider: &ProxmoxProvider, size: &Size) -> Reason {
        match self {
            Self::Limit(e) => Reason::new(
                limit_code(e),
                format!("a new {} worker: {e} (pool {})", size.name, pool.name),
            ),
            Self::Vmids => no_vmid(provider),
            Self::Host(short) => Reason::new(
                short.code,
                format!(
                    "a new {} worker for pool {}: {}",
                    size.name, pool.name, short.message
                ),
            ),
        }
    }
}

/// Checks one more worker of `size` for `pool`, using `usage`, with
/// `vmids_left` VMIDs left: first the pool's limits, then the VMID range,
/// then the hosts. On success the worker's cost is taken off the host
/// [`place`] picks in `ledger`, and that host is named; the caller counts
/// the worker in its usage and VMIDs.
///
/// # Errors
/// The first check that fails.
pub(crate) fn admit(
    ledger: &mut [Headroom],
    pool: &Pool,
    provider: &ProxmoxProvider,
    size: &Size,
    usage: PoolUsage,
    vmids_left: u64,
) -> Result<String, Refused> {
    pool.limits
        .check_add(usage, size, 1)
        .map_err(Refused::Limit)?;
    if vmids_left == 0 {
        return Err(Refused::Vmids);
    }
    place(
        ledger,
        pool,
        provider,
        &VmCost::new_worker(pool, size, provider),
    )
    .map_err(Refused::Host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{self, EXAMPLE};
    use crate::lifecycle::Phase;

    #[test]
    fn the_vms_on_their_way_are_those_still_to_come_with_their_cost_and_host() {
        let config = config::load(EXAMPLE).unwrap();
        let overhead = config.providers["pve"].vm_memory_overhead_mib;
        let with = |name: &str, host: &str, phase: Phase| ClaimState {
            name: name.into(),
            pool: "burst".into(),
            size: "small".into(),
            phase,
            removing: false,
            host: Some(host.into()),
            expires_at: None,
            idle_since: None,
        };
        let claims = [
            with("burst-a", "pve-01", Phase::Requested),
            with("burst-b", "pve-01", Phase::Provisioning),
            with("burst-d", "pve-02", Phase::Requested),
            // Its node is joining: its VM exists and the host counts it.
            with("burst-j", "pve-02", Phase::Joining),
            // It will never get a VM.
            with("burst-e", "pve-02", Phase::Failed),
        ];
        let on_the_way = vms_on_their_way(&config, &claims);
        let listed: Vec<(&str, &str, u64)> = on_the_way
            .iter()
            .map(|(c, cost)| (c.name.as_str(), c.host.as_deref().unwrap(), cost.memory_mib))
            .collect();
        let small = 8192 + overhead;
        assert_eq!(
            listed,
            [
                ("burst-a", "pve-01", small),
                ("burst-b", "pve-01", small),
                ("burst-d", "pve-02", small),
            ]
        );
    }

    #[test]
    fn a_failed_worker_keeps_its_room_in_the_pool_until_it_is_removed() {
        let config = config::load(EXAMPLE).unwrap();
        let claim = |name: &str, phase: Phase, removing: bool| ClaimState {
            name: name.into(),
            pool: "burst".into(),
            size: "small".into(),
            phase,
            removing,
            host: None,
            expires_at: None,
            idle_since: None,
        };
        let claims = [
            claim("burst-ready", Phase::Ready, false),
            // Failed, and still holding its VM.
            claim("burst-failed", Phase::Failed, false),
            claim("burst-kept-drained", Phase::Draining, false),
            // On their way out: their room is being given back.
            claim("burst-failed-going", Phase::Failed, true),
            claim("burst-going", Phase::Terminating, true),
            claim("burst-gone", Phase::Terminated, false),
        ];
        let usage = pool_usage(&config, &claims, "burst");
        assert_eq!(usage.nodes, 3, "{usage:?}");
        let small = config.size("small").unwrap().size.vcpu;
        assert_eq!(usage.cpu_cores, 3 * u64::from(small));
    }
}
