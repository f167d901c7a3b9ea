//! What `get_worker_details` (and `tidepool workers show -o json`) shows of
//! a worker's Kubernetes node: capacity and allocatable, labels,
//! annotations and taints, conditions, the pods on it, its recent Events,
//! and the OS it runs with the Talos version read from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker's node, as Kubernetes reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct NodeDetail {
    /// `status.capacity`: resource name to quantity (e.g. `cpu: "4"`).
    pub capacity: BTreeMap<String, String>,
    /// `status.allocatable`: what pods may request.
    pub allocatable: BTreeMap<String, String>,
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// The node's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Taints, as `key[=value]:Effect`.
    pub taints: Vec<String>,
    /// `status.conditions`.
    pub conditions: Vec<NodeCondition>,
    /// The pods bound to the node, DaemonSet pods included.
    pub pods: Vec<NodePod>,
    /// The node's most recent Events, newest last (at most 20).
    pub events: Vec<NodeEvent>,
    /// `status.nodeInfo.osImage` (e.g. `Talos (v1.8.0)`).
    pub os_image: Option<String>,
    /// The Talos version, read from the OS image; null on other systems.
    pub talos_version: Option<String>,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: Option<String>,
}

/// One node condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct NodeCondition {
    /// `Ready`, `MemoryPressure`, `DiskPressure`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: Option<String>,
    /// Human-readable message.
    pub message: Option<String>,
}

/// One pod on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct NodePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
    /// Whether a DaemonSet owns it (it stays through a drain).
    pub daemon_set: bool,
}

/// One Event about a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct NodeEvent {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    /// One CamelCase word.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How many times it happened.
    pub count: u32,
    /// When it last happened (RFC 3339), if known.
    pub last_seen: Option<String>,
}

/// The Talos version in an OS image string such as `Talos (v1.8.0)`.
pub fn talos_version(os_image: &str) -> Option<String> {
    let rest = os_image.trim().strip_prefix("Talos")?;
    let version = rest.trim().trim_start_matches('(').trim_end_matches(')');
    (!version.is_empty()).then(|| version.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_talos_version_comes_from_the_os_image() {
        assert_eq!(talos_version("Talos (v1.8.0)").as_deref(), Some("v1.8.0"));
        assert_eq!(talos_version("Ubuntu 24.04 LTS"), None);
        assert_eq!(talos_version("Talos"), None);
    }
}
