//! Nodes: the objects the simulated kubelets register, their conditions,
//! and the node lifecycle controller's NoSchedule taints
//! (`not-ready`, `unreachable`, `unschedulable`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResKey;
use crate::scheduler::set_condition;
use crate::store::{Part, Store};

/// Errors of this module are API errors.
pub type NodeError = ApiError;

fn nodes() -> ResKey {
    ResKey::new("", "nodes")
}

/// A taint on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// What a simulated kubelet registers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRegistration {
    /// Node name.
    pub name: String,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// Maximum number of pods.
    pub pods: u64,
    /// Extended resources (`nvidia.com/gpu` → 1).
    pub extended: BTreeMap<String, u64>,
    /// Labels (in addition to the kubelet's own `kubernetes.io/*` labels).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Taints registered with the node.
    pub taints: Vec<Taint>,
    /// `spec.providerID`, if any.
    pub provider_id: Option<String>,
    /// The node's InternalIP, if known.
    pub address: Option<String>,
    /// `status.nodeInfo.systemUUID`: the SMBIOS UUID of the machine, as a
    /// kubelet reads it (lower case); a random one when `None`.
    pub system_uuid: Option<String>,
}

fn standard_conditions(now: &str) -> Value {
    json!([
        {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now,
         "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
        {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now,
         "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure"},
        {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now,
         "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available"},
        {"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
         "reason": "KubeletReady", "message": "kubelet is posting ready status"},
    ])
}

/// The Node object a kubelet with this registration creates.
pub fn node_object(reg: &NodeRegistration, now: &str) -> Value {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".into(), reg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("beta.kubernetes.io/os".into(), "linux".into());
    labels.insert("beta.kubernetes.io/arch".into(), "amd64".into());
    labels.extend(reg.labels.clone());
    let mut capacity = json!({
        "cpu": format!("{}m", reg.cpu_millis),
        "memory": format!("{}Ki", reg.memory_bytes / 1024),
        "pods": reg.pods.to_string(),
        "ephemeral-storage": "104857600Ki",
        "hugepages-2Mi": "0",
    });
    for (k, v) in &reg.extended {
        capacity[k] = json!(v.to_string());
    }
    let taints: Vec<Value> = reg
        .taints
        .iter()
        .map(|t| {
            let mut v = json!({"key": t.key, "effect": t.effect});
            if !t.value.is_empty() {
                v["value"] = json!(t.value);
            }
            v
        })
        .collect();
    let mut spec = json!({});
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    if let Some(p) = &reg.provider_id {
        spec["providerID"] = json!(p);
    }
    let mut addresses = vec![json!({"type": "Hostname", "address": reg.name})];
    if let Some(ip) = &reg.address {
        addresses.insert(0, json!({"type": "InternalIP", "address": ip}));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": reg.name, "labels": labels, "annotations": reg.annotations},
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": standard_conditions(now),
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": meta::new_uid().replace('-', ""),
                "systemUUID": reg.system_uuid.clone().unwrap_or_else(meta::new_uid),
                "bootID": meta::new_uid(),
                "kernelVersion": "6.12.25-talos",
                "osImage": "Talos (v1.10.0)",
                "containerRuntimeVersion": "containerd://2.0.5",
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

/// The reason and message a kubelet gives a node condition of `kind` in
/// `status`.
pub fn condition_wording(kind: &str, status: &str) -> (&'static str, &'static str) {
    match (kind, status) {
        ("Ready", "True") => ("KubeletReady", "kubelet is posting ready status"),
        ("Ready", "False") => (
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false",
        ),
        ("Ready", _) => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
        ("MemoryPressure", "True") => (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        ("MemoryPressure", _) => (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "True") => ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("DiskPressure", _) => ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "True") => (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        ("PIDPressure", _) => (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        _ => ("", ""),
    }
}

/// Sets one node condition (`Ready`, `MemoryPressure`, ...) to `True`,
/// `False` or `Unknown`, with the kubelet's reason and message.
///
/// # Errors
/// `NotFound` when the node does not exist.
pub fn set_node_condition(
    store: &Store,
    name: &str,
    kind: &str,
    status: &str,
) -> Result<(), ApiError> {
    let now = meta::format_time(store.clock().now());
    let (reason, message) = condition_wording(kind, status);
    store.modify(&nodes(), "", name, Part::Internal, |node| {
        set_condition(node, kind, status, Some(reason), Some(message), &now);
        if let Some(conds) = node["status"]["conditions"].as_array_mut() {
            for c in conds.iter_mut().filter(|c| c["type"] == kind) {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastProbeTime");
                    m.insert("lastHeartbeatTime".into(), json!(now));
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

const LIFECYCLE_TAINTS: [&str; 3] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/unschedulable",
];

fn is_lifecycle(taint: &Value) -> bool {
    taint["key"]
        .as_str()
        .is_some_and(|k| LIFECYCLE_TAINTS.contains(&k))
}

/// The node lifecycle controller: keeps the taints that mirror readiness
/// (`not-ready` / `unreachable`, NoSchedule and NoExecute) and cordoning
/// (`unschedulable`, NoSchedule) in step with the node.
pub fn reconcile(store: &Store) {
    let (all, _) = store.list(&nodes(), "");
    for node in all {
        let ready = meta::condition(&node, "Ready")
            .and_then(|c| c["status"].as_str())
            .unwrap_or("Unknown");
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        match ready {
            "True" => {}
            "False" => {
                wanted.push((LIFECYCLE_TAINTS[0], "NoSchedule"));
                wanted.push((LIFECYCLE_TAINTS[0], "NoExecute"));
            }
            _ => {
                wanted.push((LIFECYCLE_TAINTS[1], "NoSchedule"));
                wanted.push((LIFECYCLE_TAINTS[1], "NoExecute"));
            }
        }
        if node["spec"]["unschedulable"].as_bool() == Some(true) {
            wanted.push((LIFECYCLE_TAINTS[2], "NoSchedule"));
        }
        let mut current: Vec<(&str, &str)> = node["spec"]["taints"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter(|t| is_lifecycle(t))
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or_default(),
                            t["effect"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        current.sort_unstable();
        if sorted == current {
            continue;
        }
        let now = meta::format_time(store.clock().now());
        let _ = store.modify(&nodes(), "", meta::name(&node), Part::Internal, |n| {
            let existing: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            let mut taints: Vec<Value> = existing
                .iter()
                .filter(|t| !is_lifecycle(t))
                .cloned()
                .collect();
            for (key, effect) in &wanted {
                let kept = existing
                    .iter()
                    .find(|t| t["key"] == *key && t["effect"] == *effect)
                    .cloned();
                taints.push(
                    kept.unwrap_or_else(|| json!({"key": key, "effect": effect, "timeAdded": now})),
                );
            }
            if taints.is_empty() {
                if let Some(spec) = n["spec"].as_object_mut() {
                    spec.remove("taints");
                }
            } else {
                n["spec"]["taints"] = json!(taints);
            }
            Ok(())
        });
    }
}
