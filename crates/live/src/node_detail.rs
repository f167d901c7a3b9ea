//! A node in detail, for `get_worker_details`: the whole Node object read
//! from the API server (the watch-fed cache keeps only the fields the
//! controller uses), the pods on it from the pod cache, and the node's
//! Events, turned into the view both front-ends show.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Node};
use tidepool_cluster::{ClusterClient, ClusterError, EventTarget};
use tidepool_core::view::{NodeCondition, NodeDetail, NodeEvent, NodePod, talos_version};

/// How many of the node's Events are shown, the most recent ones.
pub const RECENT_EVENTS: usize = 20;

/// The node `name` in detail; `None` when it is not registered.
///
/// # Errors
/// API failures reading the node or its Events.
pub async fn read(cluster: &ClusterClient, name: &str) -> Result<Option<NodeDetail>, ClusterError> {
    let Some(node) = cluster.get_node(name).await? else {
        return Ok(None);
    };
    let events = cluster.events_for(&EventTarget::of(&node)).await?;
    let pods = cluster
        .pods()
        .state()
        .iter()
        .filter(|p| p.node.as_deref() == Some(name))
        .map(|p| NodePod {
            namespace: p.spec.namespace.to_string(),
            name: p.spec.name.to_string(),
            phase: format!("{:?}", p.phase),
            daemon_set: p.spec.daemon_set,
        })
        .collect();
    Ok(Some(detail(&node, pods, &events)))
}

/// Quantities as strings, by resource name.
fn quantities(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

/// The view of `node` with its `pods` and `events` (oldest first).
fn detail(node: &Node, mut pods: Vec<NodePod>, events: &[Event]) -> NodeDetail {
    let status = node.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let os_image = info.map(|i| i.os_image.clone());
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| match &t.value {
                    Some(v) if !v.is_empty() => format!("{}={v}:{}", t.key, t.effect),
                    _ => format!("{}:{}", t.key, t.effect),
                })
                .collect()
        })
        .unwrap_or_default();
    let conditions = status
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| NodeCondition {
                    kind: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let skip = events.len().saturating_sub(RECENT_EVENTS);
    let events = events
        .iter()
        .skip(skip)
        .map(|e| NodeEvent {
            kind: e.type_.clone().unwrap_or_else(|| "Normal".to_owned()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            last_seen: e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string())),
        })
        .collect();
    NodeDetail {
        capacity: quantities(status.and_then(|s| s.capacity.as_ref())),
        allocatable: quantities(status.and_then(|s| s.allocatable.as_ref())),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        annotations: node.metadata.annotations.clone().unwrap_or_default(),
        taints,
        conditions,
        pods,
        events,
        talos_version: os_image.as_deref().and_then(talos_version),
        os_image,
        kubelet_version: info.map(|i| i.kubelet_version.clone()),
    }
}
