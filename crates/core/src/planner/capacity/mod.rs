//! The capacity report of spec §5: how much room every host, provider and
//! pool has left, how many more workers of each size fit and which
//! dimension runs out first, and what adding or removing one worker of each
//! size would change.
//!
//! The report is computed from the same [`PlanInput`] the planner sees and
//! with the planner's own arithmetic: the host ledger of [`super::hosts`]
//! (memory above the reserve with the per-VM overhead, vCPUs under the
//! overcommit ratio, storage, GPU mapping devices, VMs of claims not on
//! their host yet taken off), the VMIDs left per provider, and the pool
//! usage that counts every claim on its way. So a figure here is exactly
//! what the next plan would be allowed to do. Pure: no I/O, no clock.

//!
//! The report's types are in [`types`] (re-exported here), how many VMs
//! fit a host and a pool in [`fit`], and the what-ifs in [`what_if`].

mod fit;
mod types;
mod what_if;

use std::collections::BTreeMap;

use crate::config::{Pool, ProxmoxProvider, SizeEntry};
use crate::lifecycle::Phase;
use crate::pool::PoolUsage;
use crate::sched::NodeSnapshot;

use super::PlanInput;
use super::hosts::{Headroom, HostSnapshot};
use super::usage::{ledger, pool_usage, vmids_free};
use fit::size_fit;
use what_if::{add_one, remove_one};

pub use types::{
    AddOne, CapacityReport, ClusterCapacity, HostCapacity, HostFit, HostRoom, LimitsLeft,
    NodeVolumes, PoolCapacity, ProviderCapacity, Refusal, RemoveOne, SizeFit, SparesHeld, VmNeeds,
    VolumeRoom, WhatIf,
};

const MIB: u64 = 1 << 20;

/// The capacity report for `input`.
pub fn report(input: &PlanInput) -> CapacityReport {
    let cfg = &input.config;
    let ledger = ledger(input);
    let vmids = vmids_free(input);
    let cluster = cluster(input);

    let hosts = hosts_with(input, &ledger);

    let providers = cfg
        .providers
        .values()
        .map(|p| ProviderCapacity {
            name: p.name.clone(),
            vmid_lower: p.vmid_lower,
            vmid_upper: p.vmid_upper,
            vmids_left: vmids.get(&p.name).copied().unwrap_or(0),
            storage: p.storage.clone(),
            vm_memory_overhead_mib: p.vm_memory_overhead_mib,
        })
        .collect();

    let mut pools = Vec::new();
    let mut what_if = WhatIf::default();
    for pool in &cfg.pools {
        let Some(provider) = cfg.providers.get(&pool.provider) else {
            continue;
        };
        let in_flight = input
            .claims
            .iter()
            .filter(|c| c.pool == pool.name && c.in_flight())
            .count();
        let ctx = PoolCtx {
            pool,
            provider,
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        };
        let figures = Figures {
            ledger: &ledger,
            vmids: &vmids,
            usage: pool_usage(cfg, &input.claims, &pool.name),
            cluster: &cluster,
        };
        pools.push(pool_capacity(input, &ctx, &figures, &mut what_if));
    }

    let volumes = node_volumes(input);
    for pool in &mut pools {
        for n in volumes
            .iter()
            .filter(|n| n.pool.as_ref() == Some(&pool.name))
        {
            pool.volumes.attached += n.room.attached;
            pool.volumes.left += n.room.left;
        }
    }
    CapacityReport {
        at: input.now.to_string(),
        hosts,
        providers,
        cluster,
        pools,
        volumes,
        what_if,
    }
}

/// Every host's figures, by name: the host part of [`report`] alone, for
/// callers that need only the room per host (the headroom metrics).
pub fn hosts(input: &PlanInput) -> Vec<HostCapacity> {
    hosts_with(input, &ledger(input))
}

fn hosts_with(input: &PlanInput, ledger: &[Headroom]) -> Vec<HostCapacity> {
    let mut hosts: Vec<HostCapacity> = input
        .hosts
        .iter()
        .map(|h| host_capacity(input, ledger, h))
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    hosts
}

/// What a pool's figures start from: the hosts' headroom, the VMIDs left,
/// the pool's usage and the cluster.
struct Figures<'f> {
    ledger: &'f [Headroom],
    vmids: &'f BTreeMap<String, u64>,
    usage: PoolUsage,
    cluster: &'f ClusterCapacity,
}

/// One host's figures, with the room the ledger leaves it.
fn host_capacity(input: &PlanInput, ledger: &[Headroom], h: &HostSnapshot) -> HostCapacity {
    let provider = input.config.providers.get(&h.provider);
    let room = ledger
        .iter()
        .find(|r| r.name == h.name && r.provider == h.provider);
    let on_the_way = input
        .claims
        .iter()
        .filter(|c| {
            c.host.as_deref() == Some(h.name.as_str())
                && matches!(c.phase, Phase::Requested | Phase::Provisioning)
        })
        .count();
    HostCapacity {
        name: h.name.clone(),
        provider: h.provider.clone(),
        online: h.online && room.is_some(),
        memory_total_mib: h.memory_total_mib,
        memory_used_mib: h.memory_used_mib,
        memory_reserve_mib: provider.map_or(0, |p| p.host_memory_reserve_mib),
        memory_free_mib: room.map_or(0, |r| r.memory_mib),
        cores: h.cores,
        cpu_overcommit: provider.map_or(0.0, |p| p.cpu_overcommit),
        vcpus_allocated: h.vcpus_allocated,
        vcpus_left: room.map_or(0.0, |r| r.vcpus),
        storage_free_gib: room.map_or_else(BTreeMap::new, |r| r.storage_gib.clone()),
        gpu_free: room.map_or_else(BTreeMap::new, |r| r.gpu_free.clone()),
        vms_on_the_way: u32::try_from(on_the_way).unwrap_or(u32::MAX),
    }
}

/// One pool's figures per size; its what-ifs go to `what_if`.
fn pool_capacity(
    input: &PlanInput,
    ctx: &PoolCtx<'_>,
    f: &Figures<'_>,
    what_if: &mut WhatIf,
) -> PoolCapacity {
    let (cfg, pool) = (&input.config, ctx.pool);
    let entries: Vec<&SizeEntry> = pool.sizes.iter().filter_map(|s| cfg.size(s)).collect();
    let sizes = entries
        .iter()
        .map(|entry| size_fit(ctx, f.ledger, f.vmids, f.usage, entry))
        .collect();
    for entry in &entries {
        what_if.add.push(add_one(ctx, f, entry));
        if let Some(remove) = remove_one(input, ctx, f, entry) {
            what_if.remove.push(remove);
        }
    }
    PoolCapacity {
        name: pool.name.clone(),
        kind: pool.kind.as_str().to_owned(),
        provider: pool.provider.clone(),
        limits: limits_left(pool, f.usage, ctx.in_flight),
        sizes,
        volumes: VolumeRoom::default(),
        spares: pool.spares.as_ref().map(|s| SparesHeld {
            size: s.size.clone(),
            wanted: s.count,
            held: u32::try_from(
                input
                    .claims
                    .iter()
                    .filter(|c| c.pool == pool.name && c.phase == Phase::Spare && !c.removing)
                    .count(),
            )
            .unwrap_or(u32::MAX),
        }),
    }
}

/// The volume-attach room of every Ready, schedulable node, with the pool
/// of the worker it is.
fn node_volumes(input: &PlanInput) -> Vec<NodeVolumes> {
    input
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable)
        .map(|n| NodeVolumes {
            node: n.name.clone(),
            pool: input
                .claims
                .iter()
                .find(|c| c.name == n.name)
                .map(|c| c.pool.clone()),
            limit: n.attach_limit(),
            room: VolumeRoom {
                attached: u64::from(n.block_volumes),
                left: u64::from(n.volumes_left()),
            },
        })
        .collect()
}

/// A pool with what every figure of it needs.
struct PoolCtx<'a> {
    /// The pool.
    pool: &'a Pool,
    /// Its provider.
    provider: &'a ProxmoxProvider,
    /// Its workers on their way.
    in_flight: u32,
}

/// The cluster's Ready, schedulable nodes, and the workers on their way.
fn cluster(input: &PlanInput) -> ClusterCapacity {
    let ready: Vec<&NodeSnapshot> = input.nodes.iter().filter(|n| n.ready).collect();
    let mut out = ClusterCapacity::default();
    for n in ready.iter().filter(|n| !n.unschedulable) {
        out.nodes += 1;
        out.cpu_milli += n.allocatable.cpu_milli;
        out.memory_mib += n.allocatable.memory_bytes / MIB;
        out.pods += u64::from(n.allocatable.pods);
        out.requested_cpu_milli += n.requested.cpu_milli;
        out.requested_memory_mib += n.requested.memory_bytes / MIB;
        out.block_volumes += u64::from(n.block_volumes);
        out.block_volumes_left += u64::from(n.volumes_left());
    }
    let on_the_way = input
        .claims
        .iter()
        .filter(|c| c.in_flight() && !ready.iter().any(|n| n.name == c.name))
        .count();
    out.workers_on_the_way = u32::try_from(on_the_way).unwrap_or(u32::MAX);
    out
}

/// The pool's limits with `usage` counted against them.
fn limits_left(pool: &Pool, usage: PoolUsage, in_flight: u32) -> LimitsLeft {
    let limits = &pool.limits;
    LimitsLeft {
        min_nodes: limits.min_nodes,
        max_nodes: limits.max_nodes,
        nodes: usage.nodes,
        in_flight,
        nodes_left: limits.max_nodes.saturating_sub(usage.nodes),
        cpu_cores_max: limits.cpu_cores,
        cpu_cores: usage.cpu_cores,
        cpu_cores_left: limits
            .cpu_cores
            .map(|max| max.saturating_sub(usage.cpu_cores)),
        memory_mib_max: limits.memory_mib,
        memory_mib: usage.memory_mib,
        memory_mib_left: limits
            .memory_mib
            .map(|max| max.saturating_sub(usage.memory_mib)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::{BTreeMap, BTreeSet};

    use jiff::Timestamp;

    use super::*;
    use crate::config::{self, EXAMPLE};
    use crate::planner::hosts::HostSnapshot;
    use crate::planner::usage::{Refused, admit, limit_code};
    use crate::planner::{ClaimState, PoolState, ReasonCode};

    /// One host with plenty of everything, unless a test says otherwise:
    /// 1 TiB of memory, 256 cores, 100 TiB of local-lvm, one T4.
    fn roomy(name: &str) -> HostSnapshot {
        HostSnapshot {
            name: name.into(),
            provider: "pve".into(),
            online: true,
            memory_total_mib: 1 << 20,
            memory_used_mib: 0,
            cores: 256,
            vcpus_allocated: 0,
            storage_free_gib: BTreeMap::from([("local-lvm".into(), 100 << 10)]),
            gpu_free: BTreeMap::from([("tesla-t4".into(), 1)]),
            vms: BTreeMap::new(),
            templates: config::load(EXAMPLE).unwrap().templates(),
        }
    }

    /// The example configuration (reserve 4096 MiB, overhead 512 MiB,
    /// overcommit 4, VMIDs 1250–1300, local-lvm) with `hosts`.
    fn input(hosts: Vec<HostSnapshot>) -> PlanInput {
        PlanInput {
            config: config::load(EXAMPLE).unwrap(),
            nodes: Vec::new(),
            pending: Vec::new(),
            claims: Vec::new(),
            hosts,
            vmids_in_use: BTreeMap::new(),
            pool_state: BTreeMap::<String, PoolState>::new(),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    fn fit<'a>(r: &'a CapacityReport, pool: &str, size: &str) -> &'a SizeFit {
        r.pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.sizes.iter().find(|s| s.size == size))
            .unwrap()
    }

    fn claim(name: &str, pool: &str, size: &str, phase: Phase, host: &str) -> ClaimState {
        ClaimState {
            name: name.into(),
            pool: pool.into(),
            size: size.into(),
            phase,
            removing: false,
            host: Some(host.into()),
            expires_at: None,
            idle_since: None,
        }
    }

    /// Adds workers the way the planner accepts them (limits, VMIDs, then
    /// a host) until it refuses; returns how many it took and the refusal.
    fn planner_accepts(input: &PlanInput, pool: &str, size: &str) -> (u64, ReasonCode) {
        let cfg = &input.config;
        let pool = cfg.pool(pool).unwrap();
        let provider = &cfg.providers[&pool.provider];
        let size = &cfg.size(size).unwrap().size;
        let mut ledger = ledger(input);
        let mut vmids = vmids_free(input)[&provider.name];
        let mut usage = pool_usage(cfg, &input.claims, &pool.name);
        let mut n = 0;
        loop {
            match admit(&mut ledger, pool, provider, size, usage, vmids) {
                Err(Refused::Limit(e)) => return (n, limit_code(&e)),
                Err(Refused::Vmids) => return (n, ReasonCode::VmidRange),
                Err(Refused::Host(short)) => return (n, short.code),
                Ok(_) => {}
            }
            usage = usage.with_worker(size);
            vmids -= 1;
            n += 1;
        }
    }

    /// Asserts the report's figure and binding dimension, and that the
    /// planner, adding workers one by one, stops at the same count for the
    /// same reason.
    #[track_caller]
    fn assert_binds(input: &PlanInput, pool: &str, size: &str, fits: u64, code: ReasonCode) {
        let r = report(input);
        let f = fit(&r, pool, size);
        assert_eq!((f.fits, f.binding), (fits, code), "{}", f.why);
        assert_eq!(planner_accepts(input, pool, size), (fits, code));
    }

    #[test]
    fn host_memory_binds_when_the_host_is_short_of_memory() {
        // 65536 − 4096 reserve = 61440 MiB; a small VM takes 8192 + 512.
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        let input = input(vec![host]);
        let r = report(&input);
        assert_eq!(r.hosts[0].memory_free_mib, 61_440);
        let f = fit(&r, "burst", "small");
        assert_eq!(f.vm.memory_mib, 8704);
        assert_eq!(f.hosts[0].by_memory, 7);
        assert_eq!(f.on_hosts, 7);
        assert!(f.why.contains("host-memory runs out first"), "{}", f.why);
        assert_binds(&input, "burst", "small", 7, ReasonCode::HostMemory);
    }

    #[test]
    fn host_vcpus_bind_under_the_overcommit_ratio() {
        // 5 cores × 4 = 20 vCPUs, 8 already allocated: 12 left, 3 small VMs.
        let mut host = roomy("pve-01");
        host.cores = 5;
        host.vcpus_allocated = 8;
        let input = input(vec![host]);
        let r = report(&input);
        assert!((r.hosts[0].vcpus_left - 12.0).abs() < f64::EPSILON);
        assert_eq!(fit(&r, "burst", "small").hosts[0].by_vcpu, 3);
        assert_binds(&input, "burst", "small", 3, ReasonCode::HostCpu);
    }

    #[test]
    fn host_storage_binds_when_the_disks_do_not_fit() {
        // A small disk is 100 GB = 94 GiB rounded up: 200 GiB holds two.
        let mut host = roomy("pve-01");
        host.storage_free_gib = BTreeMap::from([("local-lvm".into(), 200)]);
        let input = input(vec![host]);
        let f = fit(&report(&input), "burst", "small").clone();
        assert_eq!(f.vm.disk_gib, 94);
        assert_eq!(f.hosts[0].by_storage, Some(2));
        assert_binds(&input, "burst", "small", 2, ReasonCode::HostStorage);
    }

    #[test]
    fn the_gpu_mapping_binds_when_its_device_is_taken() {
        let mut host = roomy("pve-01");
        host.gpu_free = BTreeMap::from([("tesla-t4".into(), 0)]);
        let input = input(vec![host, roomy("pve-02")]);
        // The gpu pool may use pve-01 only.
        let r = report(&input);
        let f = fit(&r, "gpu", "gpu");
        assert_eq!(f.hosts.len(), 1);
        assert_eq!(f.hosts[0].by_gpu, Some(0));
        assert_eq!(f.vm.gpu_mapping.as_deref(), Some("tesla-t4"));
        assert_binds(&input, "gpu", "gpu", 0, ReasonCode::HostGpu);
    }

    #[test]
    fn the_vmid_range_binds_when_few_ids_are_left() {
        let mut input = input(vec![roomy("pve-01")]);
        // 1250–1297 in use (and 100, outside the range): 3 left.
        let used: BTreeSet<u32> = (1250..=1297).chain([100]).collect();
        input.vmids_in_use.insert("pve".into(), used);
        let r = report(&input);
        assert_eq!(r.providers[0].vmids_left, 3);
        assert_binds(&input, "burst", "small", 3, ReasonCode::VmidRange);
    }

    #[test]
    fn the_pools_max_nodes_binds_on_roomy_hosts() {
        let input = input(vec![roomy("pve-01"), roomy("pve-02")]);
        assert_binds(&input, "spot", "small", 4, ReasonCode::MaxNodes);
        assert_binds(&input, "burst", "small", 10, ReasonCode::MaxNodes);
    }

    #[test]
    fn the_cpu_ceiling_binds_before_an_equal_memory_ceiling() {
        // burst: cpuCores 64 / 16 = 4 large, memoryMiB 131072 / 32768 = 4.
        let input = input(vec![roomy("pve-01")]);
        assert_binds(&input, "burst", "large", 4, ReasonCode::CpuCores);
        let r = report(&input);
        assert_eq!(fit(&r, "burst", "large").within_limits, 4);
    }

    #[test]
    fn a_pool_without_an_online_host_has_no_room() {
        let mut host = roomy("pve-01");
        host.online = false;
        let input = input(vec![host, roomy("pve-02")]);
        let r = report(&input);
        assert!(!r.hosts[0].online);
        assert_binds(&input, "gpu", "gpu", 0, ReasonCode::NoHost);
        assert!(fit(&r, "gpu", "gpu").why.contains("no online host"));
    }

    #[test]
    fn claims_on_their_way_count_against_limits_vmids_and_host_room() {
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        let mut input = input(vec![host]);
        input.claims = vec![
            claim("spot-a", "spot", "small", Phase::Requested, "pve-01"),
            claim("spot-b", "spot", "small", Phase::Joining, "pve-01"),
        ];
        let r = report(&input);
        // The Requested VM is not on the host yet: its 8704 MiB are taken off.
        assert_eq!(r.hosts[0].memory_free_mib, 61_440 - 8704);
        assert_eq!(r.hosts[0].vms_on_the_way, 1);
        // It has no VMID yet either: one of the 51 is promised to it.
        assert_eq!(r.providers[0].vmids_left, 50);
        let spot = r.pools.iter().find(|p| p.name == "spot").unwrap();
        assert_eq!(
            (
                spot.limits.nodes,
                spot.limits.in_flight,
                spot.limits.nodes_left
            ),
            (2, 2, 2)
        );
        assert_eq!(r.cluster.workers_on_the_way, 2);
        assert_binds(&input, "spot", "small", 2, ReasonCode::MaxNodes);
        // Burst shares the host: 52736 MiB hold 6 more small VMs.
        assert_binds(&input, "burst", "small", 6, ReasonCode::HostMemory);
    }

    #[test]
    fn adding_one_worker_shows_the_host_the_planner_picks_and_what_is_left() {
        let mut a = roomy("pve-01");
        a.memory_total_mib = 65_536;
        let mut b = roomy("pve-02");
        b.memory_total_mib = 131_072;
        let mut input = input(vec![a, b]);
        input.nodes = vec![NodeSnapshot::hypothetical(
            &input.config,
            input.config.pool("permanent").unwrap(),
            input.config.size("medium").unwrap(),
            "k8s-node1",
            input.now,
        )];
        let r = report(&input);
        assert_eq!(r.cluster.nodes, 1);
        assert_eq!(r.cluster.cpu_milli, 7800);
        let add = r
            .what_if
            .add
            .iter()
            .find(|a| a.pool == "burst" && a.size == "medium")
            .unwrap();
        // The host with the most memory left.
        assert_eq!(add.host.as_deref(), Some("pve-02"));
        let (before, after) = (
            add.host_before.as_ref().unwrap(),
            add.host_after.as_ref().unwrap(),
        );
        assert_eq!(before.memory_free_mib, 126_976);
        assert_eq!(after.memory_free_mib, 126_976 - 16_896);
        assert!((before.vcpus_left - after.vcpus_left - 8.0).abs() < f64::EPSILON);
        assert_eq!(before.storage_free_gib - after.storage_free_gib, 187);
        let limits = add.limits_after.as_ref().unwrap();
        assert_eq!(
            (
                limits.nodes_left,
                limits.cpu_cores_left,
                limits.memory_mib_left
            ),
            (9, Some(56), Some(114_688))
        );
        let cluster = add.cluster_after.as_ref().unwrap();
        assert_eq!((cluster.nodes, cluster.cpu_milli), (2, 15_600));
        assert_eq!(cluster.memory_mib, 2 * 15 * 1024);
        // cpuCores 56 / 8 = 7 medium workers after this one.
        assert_eq!(add.fits_after, 7);

        // The gpu pool: its one T4 taken, nothing fits after.
        let gpu = r.what_if.add.iter().find(|a| a.pool == "gpu").unwrap();
        assert_eq!(gpu.host.as_deref(), Some("pve-01"));
        assert_eq!(gpu.host_after.as_ref().unwrap().gpu_free["tesla-t4"], 0);
        assert_eq!(gpu.fits_after, 0);
    }

    #[test]
    fn adding_one_worker_past_a_limit_is_refused_with_the_planners_reason() {
        let mut input = input(vec![roomy("pve-01")]);
        input.claims = (0..4)
            .map(|i| {
                claim(
                    &format!("spot-{i}"),
                    "spot",
                    "small",
                    Phase::Ready,
                    "pve-01",
                )
            })
            .collect();
        let r = report(&input);
        let add = r.what_if.add.iter().find(|a| a.pool == "spot").unwrap();
        let refused = add.refused.as_ref().unwrap();
        assert_eq!(refused.code, ReasonCode::MaxNodes);
        assert!(
            refused.message.contains("maxNodes of 4"),
            "{}",
            refused.message
        );
        assert_eq!(add.host, None);
    }

    #[test]
    fn removing_one_worker_gives_its_room_back_and_names_what_would_hold_it() {
        let mut host = roomy("pve-01");
        host.memory_total_mib = 65_536;
        host.memory_used_mib = 2 * 16_384;
        let mut input = input(vec![host]);
        let cfg = input.config.clone();
        let node = |name: &str, pods: usize| {
            let mut n = NodeSnapshot::hypothetical(
                &cfg,
                cfg.pool("permanent").unwrap(),
                cfg.size("medium").unwrap(),
                name,
                input.now,
            );
            for i in 0..pods {
                let pod = crate::sched::PodSpec {
                    name: format!("{name}-pod-{i}").into(),
                    block_volumes: 2,
                    requests: crate::sched::Requests {
                        cpu_milli: 500,
                        memory_bytes: 1 << 30,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                n.bind(&pod, true);
            }
            n
        };
        input.nodes = vec![node("permanent-a", 2), node("permanent-b", 1)];
        input.claims = vec![
            claim("permanent-a", "permanent", "medium", Phase::Ready, "pve-01"),
            claim("permanent-b", "permanent", "medium", Phase::Ready, "pve-01"),
        ];
        let r = report(&input);
        assert_eq!(r.hosts[0].memory_free_mib, 65_536 - 32_768 - 4096);
        assert_eq!(r.cluster.requested_cpu_milli, 1500);
        let remove = &r.what_if.remove[0];
        // The one with the fewest workload pods.
        assert_eq!(remove.worker, "permanent-b");
        assert_eq!(remove.workload_pods, 1);
        assert_eq!(
            remove.host_after.as_ref().unwrap().memory_free_mib
                - remove.host_before.as_ref().unwrap().memory_free_mib,
            16_896
        );
        assert_eq!(remove.cluster_after.nodes, 1);
        assert_eq!(remove.cluster_after.cpu_milli, 7800);
        // Its pod must land elsewhere: still requested.
        assert_eq!(remove.cluster_after.requested_cpu_milli, 1500);
        // Three pods with two volumes each on two nodes of 24 slots (the
        // provider's fallback: no CSINode says otherwise); after the
        // removal the pod's two volumes attach to the other node.
        assert_eq!(
            (r.cluster.block_volumes, r.cluster.block_volumes_left),
            (6, 42)
        );
        let per_node: Vec<_> = r
            .volumes
            .iter()
            .map(|n| (n.node.as_str(), n.limit, n.room.attached, n.room.left))
            .collect();
        assert_eq!(
            per_node,
            [("permanent-a", 24, 4, 20), ("permanent-b", 24, 2, 22)]
        );
        let permanent = r.pools.iter().find(|p| p.name == "permanent").unwrap();
        assert_eq!(
            permanent.volumes,
            VolumeRoom {
                attached: 6,
                left: 42
            }
        );
        assert_eq!(
            (
                remove.cluster_after.block_volumes,
                remove.cluster_after.block_volumes_left
            ),
            (6, 18)
        );
        assert_eq!(remove.limits_after.nodes, 1);
        // 28672 + 16896 = 45568 MiB: 2 medium VMs by memory, 5 by maxNodes.
        assert_eq!(remove.fits_after, 2);
        assert_eq!(remove.notes.len(), 3, "{:?}", remove.notes);
        assert!(remove.notes[0].contains("protected pattern `^permanent-.*`"));
        assert!(remove.notes[2].contains("minNodes of 3"));
        // No burst worker exists: nothing to remove there.
        assert!(r.what_if.remove.iter().all(|w| w.pool == "permanent"));
    }

    #[test]
    fn the_report_serializes_with_reason_codes_as_strings() {
        let r = report(&input(vec![roomy("pve-01")]));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["pools"][0]["sizes"][0]["binding"], "limit-max-nodes");
        assert_eq!(
            v["pools"][0]["sizes"][0]["hosts"][0]["binding"],
            "host-memory"
        );
        assert_eq!(v["hosts"][0]["memory_free_mib"], (1 << 20) - 4096);
        assert_eq!(v["at"], "2027-01-15T08:00:00Z");
    }
}
