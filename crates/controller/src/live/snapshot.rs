//! Observing the world for the planner: Kubernetes nodes and pods become
//! [`NodeSnapshot`]s and [`PendingPod`]s, Proxmox hosts become
//! [`HostSnapshot`]s, claims become [`ClaimState`]s. The planner itself is
//! pure; everything it knows comes through here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_core::planner::hosts::HostSnapshot;
use tidepool_core::planner::{ClaimState, PendingPod, PlanInput};
use tidepool_core::pool::Resources;
use tidepool_core::quantity::Quantity;
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests};

use crate::live::connect::LiveExecutor;
use crate::live::pve::classify as classify_pve;
use crate::ports::{ClaimStore, ProviderError, ProviderErrorKind};

/// The scheduler's view of a node: allocatable, labels, taints, cordon and
/// Ready state, with `pods` (the views of the pods bound to it) summed into its
/// requests, pod count and block volumes.
pub fn node_snapshot(node: &Node, pods: Vec<Arc<PodSpec>>) -> NodeSnapshot {
    let status = node.status.as_ref();
    let no_alloc = BTreeMap::new();
    let alloc = status
        .and_then(|s| s.allocatable.as_ref())
        .unwrap_or(&no_alloc);
    let get = |k: &str| alloc.get(k);
    let mut extended = BTreeMap::new();
    for (k, q) in alloc {
        if !matches!(
            k.as_str(),
            "cpu" | "memory" | "pods" | "ephemeral-storage" | "hugepages-2Mi" | "hugepages-1Gi"
        ) {
            extended.insert(k.clone(), Quantity::units_lenient(&q.0));
        }
    }
    let mut requested = Requests::default();
    let mut block_volumes = 0;
    for p in &pods {
        requested.add(&p.requests);
        block_volumes += p.block_volumes;
    }
    let spec = node.spec.as_ref();
    NodeSnapshot {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                TaintEffect::parse(&t.effect)
                    .map(|e| Taint::new(&t.key, t.value.as_deref().unwrap_or(""), e))
            })
            .collect(),
        allocatable: Resources {
            cpu_milli: get("cpu").map_or(0, |q| Quantity::milli_lenient(&q.0)),
            memory_bytes: get("memory").map_or(0, |q| Quantity::units_lenient(&q.0)),
            ephemeral_storage_bytes: get("ephemeral-storage")
                .map_or(0, |q| Quantity::units_lenient(&q.0)),
            pods: u32::try_from(get("pods").map_or(110, |q| Quantity::units_lenient(&q.0)))
                .unwrap_or(110),
            extended,
        },
        requested,
        pod_count: u32::try_from(pods.len()).unwrap_or(u32::MAX),
        block_volumes,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        pods,
    }
}

fn transient(message: String) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Transient, message)
}

/// Everything the planner needs, observed now.
///
/// # Errors
/// Kubernetes, Proxmox or claim-store failures.
pub async fn plan_input(exec: &LiveExecutor) -> Result<PlanInput, ProviderError> {
    let config = exec.config().as_ref().clone();
    // From the watch-fed caches: no polling of the API server, and never a
    // plan from caches that have not completed their first list.
    let cluster = exec.nodes().cluster();
    if !cluster.is_synced() {
        cluster
            .wait_until_synced(std::time::Duration::from_secs(30))
            .await
            .map_err(|e| transient(format!("the node and pod caches are not synced: {e}")))?;
    }
    // The caches' own objects, shared, not copied.
    let nodes = cluster.nodes().state();
    let pods = cluster.pods().state();
    let now = exec.now();
    let mut by_node: BTreeMap<&str, Vec<Arc<PodSpec>>> = BTreeMap::new();
    let mut pending = Vec::new();
    for pod in &pods {
        if pod.phase.is_terminal() {
            continue;
        }
        match &pod.node {
            Some(node) => by_node.entry(node).or_default().push(pod.spec.clone()),
            None if pod.unschedulable => pending.push(PendingPod {
                pod: (*pod.spec).clone(),
                unschedulable_since: pod.unschedulable_since.unwrap_or(now),
            }),
            None => {}
        }
    }
    let node_snaps: Vec<NodeSnapshot> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            node_snapshot(n, by_node.remove(name).unwrap_or_default())
        })
        .collect();
    let claims: Vec<ClaimState> = exec
        .store()
        .observed()
        .await?
        .into_iter()
        .map(|c| {
            let node = node_snaps.iter().find(|n| n.name == c.name);
            let idle = node.is_some_and(|n| !n.has_workload());
            ClaimState {
                name: c.name.clone(),
                pool: c.spec.pool.clone(),
                size: c.spec.size.clone(),
                phase: c.status.lifecycle.phase(),
                host: c
                    .status
                    .vm
                    .as_ref()
                    .map(|v| v.node.clone())
                    .or_else(|| c.status.host.clone()),
                expires_at: c.status.expires_at,
                // Without a record of the last workload pod, an idle worker
                // counts as idle since it became Ready.
                idle_since: idle
                    .then(|| {
                        c.status
                            .conditions
                            .get(&crate::claim::Condition::NodeReady)
                            .copied()
                    })
                    .flatten(),
            }
        })
        .collect();
    let (hosts, vmids) = hosts(exec, &config).await?;
    Ok(PlanInput {
        config,
        nodes: node_snaps,
        pending,
        claims,
        hosts,
        vmids_in_use: vmids,
        pool_state: BTreeMap::new(),
        now,
    })
}

type HostsAndVmids = (Vec<HostSnapshot>, BTreeMap<String, BTreeSet<u32>>);

async fn hosts(
    exec: &LiveExecutor,
    config: &tidepool_core::Config,
) -> Result<HostsAndVmids, ProviderError> {
    let pve = exec.hypervisor().client();
    let vms = pve.cluster_vms().await.map_err(classify_pve)?;
    let storages = pve.cluster_storage().await.map_err(classify_pve)?;
    let mappings = pve.pci_mappings(None).await.map_err(classify_pve)?;
    let mut out = Vec::new();
    let mut vmids = BTreeMap::new();
    for provider in config.providers.values() {
        vmids.insert(
            provider.name.clone(),
            vms.iter().map(|v| v.vmid).collect::<BTreeSet<u32>>(),
        );
        for host in &provider.hosts {
            let status = match pve.node_status(host).await {
                Ok(s) => s,
                Err(_) => {
                    out.push(HostSnapshot {
                        name: host.clone(),
                        provider: provider.name.clone(),
                        online: false,
                        ..HostSnapshot::default()
                    });
                    continue;
                }
            };
            let on_host: Vec<_> = vms
                .iter()
                .filter(|v| &v.node == host && !v.template)
                .collect();
            // Committed memory: every VM placed here, running or not.
            let used_mib: u64 = on_host.iter().map(|v| v.maxmem.unwrap_or(0) >> 20).sum();
            let mut gpu_free = BTreeMap::new();
            for m in &mappings {
                let devices = m
                    .map
                    .iter()
                    .filter(|e| e.node.as_deref() == Some(host.as_str()))
                    .count();
                if devices == 0 {
                    continue;
                }
                let mut used = 0usize;
                for v in on_host.iter().filter(|v| v.status == "running") {
                    if let Ok(cfg) = pve.vm_config(host, v.vmid).await
                        && cfg
                            .hostpci
                            .values()
                            .any(|h| h.mapping.as_deref() == Some(m.id.as_str()))
                    {
                        used += 1;
                    }
                }
                gpu_free.insert(
                    m.id.clone(),
                    u32::try_from(devices.saturating_sub(used)).unwrap_or(0),
                );
            }
            out.push(HostSnapshot {
                name: host.clone(),
                provider: provider.name.clone(),
                online: true,
                memory_total_mib: status.memory.total >> 20,
                memory_used_mib: used_mib,
                cores: u32::try_from(status.cpuinfo.cpus).unwrap_or(u32::MAX),
                vcpus_allocated: on_host.iter().map(|v| v.maxcpu.unwrap_or(0)).sum(),
                storage_free_gib: storages
                    .iter()
                    .filter(|s| &s.node == host)
                    .map(|s| (s.storage.clone(), s.free() >> 30))
                    .collect(),
                gpu_free,
                vms: on_host
                    .iter()
                    .filter_map(|v| Some((v.name.clone()?, v.status == "running")))
                    .collect(),
            });
        }
    }
    Ok((out, vmids))
}
