//! Lab scenarios: the Proxmox hosts and VMs, the cluster that already runs
//! on them, the workloads, the guest timings and the faults a lab starts
//! with. One YAML document; [`Scenario::default_home_lab`] is shipped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tidepool_core::duration::parse_duration;
use tidepool_lab_pve::PveConfig;
use tidepool_lab_sim::FaultRule;

/// The shipped default scenario.
pub const HOME_LAB: &str = include_str!("../scenarios/home-lab.yaml");

/// A lab scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// A name for logs and the lab's `tidepool.yaml`.
    #[serde(default = "default_name")]
    pub name: String,
    /// The Proxmox cluster: hosts, storages, PCI mappings, pools, VMs
    /// (templates included) and task durations.
    pub proxmox: PveConfig,
    /// Guest timings.
    #[serde(default)]
    pub guest: GuestTimings,
    /// Which running VMs are already Kubernetes nodes.
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// Kubernetes objects created at start, in order.
    #[serde(default)]
    pub workloads: Vec<serde_json::Value>,
    /// Faults injected from the start.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// What the Kubernetes cluster has installed for Tidepool.
    #[serde(default)]
    pub kubernetes: KubernetesSetup,
}

/// The Kubernetes side of Tidepool's installation: its CRD and what RBAC
/// lets the lab's user (`tidepool-lab`) do.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSetup {
    /// Whether the WorkerClaim CRD is installed.
    #[serde(default = "yes")]
    pub worker_claim_crd: bool,
    /// The rules of the ClusterRole bound to the lab's user; everything
    /// (`*` on `*`) when absent.
    #[serde(default)]
    pub rbac_rules: Option<Vec<serde_json::Value>>,
}

fn yes() -> bool {
    true
}

impl Default for KubernetesSetup {
    fn default() -> Self {
        Self {
            worker_claim_crd: true,
            rbac_rules: None,
        }
    }
}

impl KubernetesSetup {
    /// The ClusterRole and ClusterRoleBinding that give the lab's user
    /// its rights.
    pub fn rbac_objects(&self) -> [serde_json::Value; 2] {
        let rules = self.rbac_rules.clone().unwrap_or_else(|| {
            vec![serde_json::json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})]
        });
        [
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "tidepool-lab"}, "rules": rules,
            }),
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "tidepool-lab"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tidepool-lab"},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "tidepool-lab"}],
            }),
        ]
    }
}

fn default_name() -> String {
    "lab".into()
}

/// How long simulated guests take (before `--time-scale`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestTimings {
    /// From VM start until the guest agent reports an address.
    #[serde(default = "boot_default", deserialize_with = "de_duration")]
    pub boot_delay: Duration,
    /// From a machine booting configured until its node is Ready.
    #[serde(default = "join_default", deserialize_with = "de_duration")]
    pub join_delay: Duration,
}

fn boot_default() -> Duration {
    Duration::from_secs(45)
}

fn join_default() -> Duration {
    Duration::from_secs(75)
}

impl Default for GuestTimings {
    fn default() -> Self {
        Self {
            boot_delay: boot_default(),
            join_delay: join_default(),
        }
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// The cluster already running in the scenario.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// VMID of the control-plane VM (a node with the control-plane role and taint).
    pub control_plane: Option<u32>,
    /// Running VMs that are worker nodes.
    #[serde(default)]
    pub workers: Vec<ExistingNode>,
}

/// A VM that is already a node when the lab starts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExistingNode {
    /// The VM.
    pub vmid: u32,
    /// Node labels besides the kubelet's own.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints as `key=value:Effect`.
    #[serde(default)]
    pub taints: Vec<String>,
}

/// A scenario that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The YAML does not match the schema (the message names the line).
    #[error("scenario {origin}: {message}")]
    Parse {
        /// File name or `default`.
        origin: String,
        /// The parser's message, with its location.
        message: String,
    },
    /// The YAML is well-formed but inconsistent.
    #[error("scenario {origin}: {message}")]
    Invalid {
        /// File name or `default`.
        origin: String,
        /// What is inconsistent.
        message: String,
    },
}

impl Scenario {
    /// Parses and checks a scenario; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ScenarioError::Parse`] with the parser's location, or
    /// [`ScenarioError::Invalid`] when the cluster refers to VMs that do not
    /// exist or are not running.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario =
            serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        scenario.check(origin)?;
        Ok(scenario)
    }

    /// The shipped default scenario.
    ///
    /// # Errors
    /// Only if the shipped file is broken (a test guards against that).
    pub fn default_home_lab() -> Result<Self, ScenarioError> {
        Self::parse(HOME_LAB, "default")
    }

    fn check(&self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let vmids = self
            .cluster
            .control_plane
            .iter()
            .copied()
            .chain(self.cluster.workers.iter().map(|w| w.vmid));
        for vmid in vmids {
            let vm = self
                .proxmox
                .vms
                .iter()
                .find(|v| v.vmid == vmid)
                .ok_or_else(|| {
                    invalid(format!("cluster node VMID {vmid} is not among proxmox.vms"))
                })?;
            if !vm.running || vm.template {
                return Err(invalid(format!(
                    "cluster node VMID {vmid} ({}) must be a running VM, not a template or stopped VM",
                    vm.name
                )));
            }
        }
        for w in &self.cluster.workers {
            for t in &w.taints {
                parse_taint(t).ok_or_else(|| {
                    invalid(format!(
                        "taint `{t}` of VMID {} is not key=value:Effect",
                        w.vmid
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Parses `key=value:Effect` (or `key:Effect`).
pub fn parse_taint(text: &str) -> Option<(String, String, String)> {
    let (kv, effect) = text.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    (!k.is_empty()).then(|| (k.to_owned(), v.to_owned(), effect.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_parses() {
        let s = Scenario::default_home_lab().unwrap();
        assert_eq!(s.proxmox.hosts.len(), 2);
        assert_eq!(s.cluster.workers.len(), 3);
        assert_eq!(s.guest.join_delay, Duration::from_secs(75));
        assert!(s.proxmox.vms.iter().filter(|v| v.template).count() >= 4);
    }

    #[test]
    fn unknown_fields_are_refused_with_a_location() {
        let text = HOME_LAB.replace("guest:\n", "gust: {}\nguest:\n");
        let err = Scenario::parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("gust"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn a_cluster_node_must_be_a_running_vm() {
        let text = HOME_LAB.replace("controlPlane: 200", "controlPlane: 9001");
        let err = Scenario::parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("VMID 9001"), "{err}");
    }

    #[test]
    fn taints_parse_in_kubectl_form() {
        assert_eq!(
            parse_taint("workload-type=burst:NoSchedule"),
            Some(("workload-type".into(), "burst".into(), "NoSchedule".into()))
        );
        assert_eq!(
            parse_taint("dedicated:NoExecute"),
            Some(("dedicated".into(), String::new(), "NoExecute".into()))
        );
        assert_eq!(parse_taint("x=y:Sometimes"), None);
    }
}
