//! Observing the world for the planner: Kubernetes nodes and pods become
//! [`NodeSnapshot`]s and [`PendingPod`]s, claims become [`ClaimState`]s,
//! and the Proxmox hosts come from
//! [`PveHypervisor::host_snapshots`](crate::pve::PveHypervisor::host_snapshots).
//! The planner itself is pure; everything it knows comes through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidepool_cluster::nodes::node_snapshot;
use tidepool_core::planner::{ClaimState, PendingPod, PlanInput};
use tidepool_core::sched::{NodeSnapshot, PodSpec};

use crate::connect::LiveExecutor;
use tidepool_controller::observe::{Observation, Observe};
use tidepool_controller::ports::{ClaimStore, ProviderError, ProviderErrorKind};

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
    let attach = crate::volumes::AttachView::observe(cluster, &config).await?;
    let mut by_node: BTreeMap<&str, Vec<Arc<PodSpec>>> = BTreeMap::new();
    let mut pending = Vec::new();
    for pod in &pods {
        if pod.phase.is_terminal() {
            continue;
        }
        match &pod.node {
            Some(node) => by_node
                .entry(node)
                .or_default()
                .push(attach.resolve(&pod.spec)),
            None if pod.unschedulable => pending.push(PendingPod {
                pod: attach.resolve_owned((*pod.spec).clone()),
                unschedulable_since: pod.unschedulable_since.unwrap_or(now),
            }),
            None => {}
        }
    }
    let mut node_snaps: Vec<NodeSnapshot> = nodes
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
                // The observer alone knows no earlier moment than the node
                // becoming Ready; the autoscaler replaces this with when it
                // saw the worker's last workload pod go (its durable timers).
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
    attach.limit_nodes(&mut node_snaps, &claims, &config);
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
/// changes (and on claims bound, volumes attached and CSINodes registered).
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
        let mut changes = vec![cluster.pods().changes(), cluster.nodes().changes()];
        changes.extend(cluster.storage().changes());
        changes
    }
}
