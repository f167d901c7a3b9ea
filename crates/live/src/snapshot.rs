//! Observing the world for the planner: Kubernetes nodes and pods become
//! [`NodeSnapshot`]s and [`PendingPod`]s, claims become [`ClaimState`]s,
//! and the Proxmox hosts come from
//! [`PveHypervisor::host_snapshots`](crate::pve::PveHypervisor::host_snapshots).
//! The planner itself is pure; everything it knows comes through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_core::planner::{ClaimState, PendingPod, PlanInput};
use tidepool_core::pool::Resources;
use tidepool_core::quantity::Quantity;
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests};

use crate::connect::LiveExecutor;
use tidepool_controller::observe::{Observation, Observe};
use tidepool_controller::ports::{ClaimStore, ProviderError, ProviderErrorKind};

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
                // Without a record of the last workload pod, an idle worker
                // counts as idle since it became Ready.
                idle_since: idle
                    .then(|| {
                        c.status
                            .conditions
                            .get(&tidepool_controller::claim::Condition::NodeReady)
                            .copied()
                    })
                    .flatten(),
                ..c.planner_state()
            }
        })
        .collect();
    let (hosts, in_use) = exec.hypervisor().host_snapshots().await?;
    let vmids = config
        .providers
        .keys()
        .map(|name| (name.clone(), in_use.clone()))
        .collect();
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

/// The live stack as an [`Observe`]: plans from the watch-fed node and pod
/// caches, the claims and the Proxmox hosts, and wakes on pod and node
/// changes.
#[derive(Clone)]
pub struct LiveObserver(pub Arc<LiveExecutor>);

impl std::fmt::Debug for LiveObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveObserver").finish_non_exhaustive()
    }
}

impl Observe for LiveObserver {
    fn plan_input(&self) -> Observation<'_> {
        Box::pin(plan_input(&self.0))
    }

    fn changes(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        let cluster = self.0.nodes().cluster();
        vec![cluster.pods().changes(), cluster.nodes().changes()]
    }
}
