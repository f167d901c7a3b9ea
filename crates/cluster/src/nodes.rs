//! What the node cache keeps of each node, read straight off the wire.
//!
//! The node cache holds every node of the cluster for the life of the
//! process, and most of a node is never looked at by Tidepool: managed
//! fields, the `kubectl apply` annotation, the image list (often dozens of
//! images with several names each), system info, heartbeat times and
//! condition messages. The cache deserializes [`WireNode`], which names
//! only the fields below, so serde skips the rest without allocating it,
//! and stores the result as an ordinary k8s-openapi `Node` with only those
//! fields set. (The pod cache goes further and keeps no `Pod` at all: see
//! [`crate::pods`].)
//!
//! # Guarantees
//! Kept: the metadata's name, uid, resourceVersion, creation and deletion
//! timestamps, labels, owner references, and the annotations except
//! `kubectl.kubernetes.io/last-applied-configuration`; spec `taints`,
//! `unschedulable` and `providerID`; status `capacity`, `allocatable`,
//! `addresses`, `nodeInfo.systemUUID` (the identity check of a claim's
//! node), and each condition's `type`, `status`, `reason` and
//! `lastTransitionTime`.
//!
//! Everything else is absent from cached nodes. Code that starts reading
//! another field from the cache must add it here first; code that needs
//! whole nodes reads them from the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

use std::sync::Arc;

use tidepool_core::conventions::{Taint as CoreTaint, TaintEffect};
use tidepool_core::pool::Resources;
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests};

use crate::cache::{Annotations, WireCondition, core_v1_resource};

/// The annotation `kubectl apply` stores the whole applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A node as the cache reads it from the API server: the kept fields
/// only, in the API's JSON shape (see the [module docs](self)).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "Wire")]
pub struct WireNode(Node);

impl WireNode {
    /// The node, with only the kept fields set.
    pub fn into_node(self) -> Node {
        self.0
    }
}

core_v1_resource!(
    WireNode,
    kind = "Node",
    plural = "nodes",
    scope = k8s_openapi::ClusterResourceScope,
    meta = 0.metadata
);

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<Annotations>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    taints: Option<Vec<Taint>>,
    unschedulable: Option<bool>,
    #[serde(rename = "providerID")]
    provider_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    capacity: Option<BTreeMap<String, Quantity>>,
    allocatable: Option<BTreeMap<String, Quantity>>,
    addresses: Option<Vec<NodeAddress>>,
    conditions: Option<Vec<WireCondition>>,
    node_info: Option<WireNodeInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNodeInfo {
    #[serde(rename = "systemUUID")]
    system_uuid: Option<String>,
}

/// `Some` non-empty vector, or `None`.
fn non_empty<T>(v: Option<Vec<T>>) -> Option<Vec<T>> {
    v.filter(|v| !v.is_empty())
}

impl From<Wire> for WireNode {
    fn from(wire: Wire) -> Self {
        let m = wire.metadata;
        Self(Node {
            metadata: ObjectMeta {
                name: m.name,
                uid: m.uid,
                resource_version: m.resource_version,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                labels: m.labels,
                annotations: m.annotations.map(|a| a.0).filter(|a| !a.is_empty()),
                owner_references: non_empty(m.owner_references),
                ..ObjectMeta::default()
            },
            spec: wire.spec.map(|s| NodeSpec {
                taints: non_empty(s.taints),
                unschedulable: s.unschedulable,
                provider_id: s.provider_id,
                ..NodeSpec::default()
            }),
            status: wire.status.map(|s| NodeStatus {
                capacity: s.capacity,
                allocatable: s.allocatable,
                addresses: non_empty(s.addresses),
                node_info: s.node_info.and_then(|i| i.system_uuid).map(|system_uuid| {
                    NodeSystemInfo {
                        system_uuid,
                        ..NodeSystemInfo::default()
                    }
                }),
                conditions: non_empty(s.conditions.map(|cs| {
                    cs.into_iter()
                        .map(|c| NodeCondition {
                            type_: c.type_,
                            status: c.status,
                            reason: c.reason,
                            last_transition_time: c.last_transition_time,
                            ..NodeCondition::default()
                        })
                        .collect()
                })),
                ..NodeStatus::default()
            }),
        })
    }
}

/// The machine the node says it runs on: its `status.nodeInfo.systemUUID`
/// (absent when empty or not reported) and its `spec.providerID`.
pub fn machine_of(node: &Node) -> (Option<String>, Option<String>) {
    let system_uuid = node
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.system_uuid.clone())
        .filter(|u| !u.is_empty());
    let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.clone());
    (system_uuid, provider_id)
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node's bad conditions for the health monitor, each with its last
/// transition time: Ready not True (False or Unknown), and MemoryPressure,
/// DiskPressure, PIDPressure or NetworkUnavailable True. A condition
/// without a transition time counts from `now`.
pub fn problems_of(
    node: &Node,
    now: jiff::Timestamp,
) -> BTreeMap<tidepool_core::health::Problem, jiff::Timestamp> {
    use tidepool_core::health::Problem;
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let mut out = BTreeMap::new();
    let mut saw_ready = false;
    for c in conditions.into_iter().flatten() {
        let Some(problem) = Problem::of_condition(&c.type_) else {
            continue;
        };
        let bad = match problem {
            Problem::NotReady => {
                saw_ready = true;
                c.status != "True"
            }
            _ => c.status == "True",
        };
        if bad {
            let since = c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now);
            out.insert(problem, since);
        }
    }
    if !saw_ready {
        out.insert(Problem::NotReady, now);
    }
    out
}

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
            extended.insert(
                k.clone(),
                tidepool_core::quantity::Quantity::units_lenient(&q.0),
            );
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
                    .map(|e| CoreTaint::new(&t.key, t.value.as_deref().unwrap_or(""), e))
            })
            .collect(),
        allocatable: Resources {
            cpu_milli: get("cpu").map_or(0, |q| {
                tidepool_core::quantity::Quantity::milli_lenient(&q.0)
            }),
            memory_bytes: get("memory").map_or(0, |q| {
                tidepool_core::quantity::Quantity::units_lenient(&q.0)
            }),
            ephemeral_storage_bytes: get("ephemeral-storage").map_or(0, |q| {
                tidepool_core::quantity::Quantity::units_lenient(&q.0)
            }),
            pods: u32::try_from(get("pods").map_or(110, |q| {
                tidepool_core::quantity::Quantity::units_lenient(&q.0)
            }))
            .unwrap_or(110),
            extended,
        },
        requested,
        pod_count: u32::try_from(pods.len()).unwrap_or(u32::MAX),
        block_volumes,
        // From the node's CSINode, which the observer reads beside it.
        volume_limit: None,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready: is_ready(node),
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A node as the API server returns it.
    fn full_node_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker-1", "uid": "n-1", "resourceVersion": "7",
                "labels": {"kubernetes.io/hostname": "worker-1", "node-pool": "burst"},
                "annotations": {"tidepool.dev/claim": "burst-abcde", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"providerID": "proxmox://pve/1201", "podCIDR": "10.244.3.0/24",
                "podCIDRs": ["10.244.3.0/24"], "unschedulable": true,
                "taints": [{"key": "tidepool.dev/burst", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "7800m", "memory": "15Gi", "pods": "110",
                                "nvidia.com/gpu": "1"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.21"}],
                "conditions": [
                    {"type": "MemoryPressure", "status": "False",
                     "reason": "KubeletHasSufficientMemory",
                     "message": "kubelet has sufficient memory available",
                     "lastHeartbeatTime": "2026-03-01T10:05:00Z",
                     "lastTransitionTime": "2026-03-01T10:00:00Z"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "kubelet is posting ready status",
                     "lastHeartbeatTime": "2026-03-01T10:05:00Z",
                     "lastTransitionTime": "2026-03-01T10:00:00Z"},
                ],
                "images": [{"names": ["registry.example/shop/web@sha256:00",
                                      "registry.example/shop/web:1.2.3"],
                            "sizeBytes": 52_000_000}],
                "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                    "kernelVersion": "6.12", "osImage": "Talos", "containerRuntimeVersion": "containerd://2",
                    "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                    "architecture": "amd64"},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "volumesInUse": ["kubernetes.io/csi/csi.proxmox.sinextra.dev^pve/vm-1201-disk-1"],
            },
        })
    }

    fn full_node() -> Node {
        serde_json::from_value(full_node_json()).unwrap()
    }

    /// What the node cache stores for the full node.
    fn cached() -> Node {
        serde_json::from_value::<WireNode>(full_node_json())
            .unwrap()
            .into_node()
    }

    #[test]
    fn a_cached_node_keeps_allocatable_taints_and_conditions() {
        let full = full_node();
        let t = cached();
        assert_eq!(t.metadata.name, full.metadata.name);
        assert_eq!(t.metadata.labels, full.metadata.labels);
        assert_eq!(
            t.metadata.annotations.unwrap()["tidepool.dev/claim"],
            "burst-abcde"
        );
        let (spec, full_spec) = (t.spec.unwrap(), full.spec.unwrap());
        assert_eq!(spec.taints, full_spec.taints);
        assert_eq!(spec.unschedulable, Some(true));
        assert_eq!(spec.provider_id, full_spec.provider_id);
        let (status, full_status) = (t.status.unwrap(), full.status.unwrap());
        assert_eq!(status.allocatable, full_status.allocatable);
        assert_eq!(status.capacity, full_status.capacity);
        assert_eq!(status.addresses, full_status.addresses);
        let conditions = status.conditions.unwrap();
        let kinds: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(kinds, [("MemoryPressure", "False"), ("Ready", "True")]);
        assert!(conditions.iter().all(|c| c.last_transition_time.is_some()));
    }

    #[test]
    fn a_cached_node_loses_images_and_system_info_but_its_system_uuid() {
        let t = cached();
        assert!(t.metadata.managed_fields.is_none());
        assert!(
            !t.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(LAST_APPLIED)
        );
        let spec = t.spec.unwrap();
        assert!(spec.pod_cidr.is_none() && spec.pod_cidrs.is_none());
        let status = t.status.unwrap();
        assert!(status.images.is_none());
        let info = status.node_info.unwrap();
        assert_eq!(info.system_uuid, "s");
        assert!(info.machine_id.is_empty() && info.boot_id.is_empty());
        assert!(status.daemon_endpoints.is_none());
        assert!(status.volumes_in_use.is_none());
        for c in status.conditions.unwrap() {
            assert!(c.message.is_none() && c.last_heartbeat_time.is_none());
        }
    }
}
