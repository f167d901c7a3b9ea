//! The `WorkerClaim` custom resource: the durable, cluster-scoped record of
//! one worker VM, created before the VM exists and finalised only after it
//! is gone.
//!
//! The field docs here are what `kubectl explain workerclaim` shows; they
//! are written for operators. The lifecycle enums mirror
//! [`tidepool_core::lifecycle`] so the CRD schema can list their values
//! without the pure core crate knowing about JSON schemas.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidepool_core::lifecycle::{Phase, Step};

/// The finalizer Tidepool puts on every claim; it is removed only once the
/// claim's node and VM are proven gone.
pub const FINALIZER: &str = "tidepool.dev/worker-cleanup";

/// The API group of Tidepool's custom resources.
pub const GROUP: &str = "tidepool.dev";

/// The CRD's metadata name (`<plural>.<group>`).
pub const CRD_NAME: &str = "workerclaims.tidepool.dev";

/// What was asked for: one worker of a given size in a given pool.
///
/// The spec is written once, when the claim is created, and describes the
/// request; everything Tidepool learns while acting on it goes to `status`.
// clippy reads the repeated `type_ = ...` of the printer columns as
// duplicated attributes; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "WorkerClaim",
    plural = "workerclaims",
    singular = "workerclaim",
    shortname = "wc",
    category = "tidepool",
    status = "WorkerClaimStatus",
    derive = "PartialEq",
    doc = "A WorkerClaim is Tidepool's durable record of one worker VM: what was requested, which VM and node fulfil it, and how far its lifecycle has progressed. Tidepool creates the claim before cloning the VM and removes its finalizer only after the node and the VM are gone, so no VM is ever left without a record.",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "VMID", type_ = "integer", json_path = ".status.vmid"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerClaimSpec {
    /// Name of the pool (from Tidepool's configuration) the worker belongs to.
    pub pool: String,
    /// Name of the size template (cores, memory, disk) the VM is cloned with.
    pub size: String,
    /// Lifetime of the worker in seconds, counted from the moment its node
    /// is Ready. When it runs out the worker is drained and destroyed.
    /// Absent means the pool's default applies (permanent pools never expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<i64>,
    /// Who asked for the worker: a user, `tidepool-controller` for
    /// automatic scale-ups, or an MCP client's name.
    pub requested_by: String,
    /// Why the worker was requested, in words (for example "3 pending pods
    /// in namespace ml"). Shown in Events and `kubectl describe`.
    pub reason: String,
}

/// What Tidepool has done for the claim so far. Written only by Tidepool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerClaimStatus {
    /// Lifecycle phase: Requested, Provisioning, Joining, Ready, Draining,
    /// Terminating, Terminated, or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClaimPhase>,
    /// When `phase` is Failed: the lifecycle step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<ClaimStep>,
    /// Proxmox VM ID of the worker's VM, once allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "vmid_schema")]
    pub vmid: Option<u32>,
    /// Proxmox node (hypervisor host) the VM runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox_node: Option<String>,
    /// SMBIOS UUID of the VM. Together with the VMID and the VM's tags it
    /// proves a VM is this claim's before Tidepool deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_uuid: Option<String>,
    /// Address the guest reported once it booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Name of the Kubernetes node the VM registered as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// When the node became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_at: Option<Time>,
    /// When the worker's lifetime runs out; absent for workers that never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The most recent error, in words an operator can act on. Never
    /// contains credentials or tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// One condition per lifecycle step, recording when it last changed and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClaimCondition>,
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl WorkerClaimStatus {
    /// The JSON names of every status field, so a merge patch can clear the
    /// ones that are unset (a test keeps this list complete).
    pub const FIELDS: [&'static str; 12] = [
        "phase",
        "failedStep",
        "vmid",
        "proxmoxNode",
        "vmUuid",
        "ip",
        "nodeName",
        "provisionedAt",
        "expiresAt",
        "lastError",
        "conditions",
        "observedGeneration",
    ];

    /// The condition of the given type, if recorded.
    pub fn condition(&self, kind: ConditionType) -> Option<&ClaimCondition> {
        self.conditions.iter().find(|c| c.type_ == kind)
    }

    /// Records a condition. Its `lastTransitionTime` moves to `now` only when
    /// the status actually changes (or the condition is new), as Kubernetes
    /// conventions ask; reason and message are always updated.
    pub fn set_condition(
        &mut self,
        kind: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) {
        if let Some(existing) = self.conditions.iter_mut().find(|c| c.type_ == kind) {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = reason.to_owned();
            existing.message = message.to_owned();
        } else {
            self.conditions.push(ClaimCondition {
                type_: kind,
                status,
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time: Time(now),
            });
        }
    }
}

/// Lifecycle phase: Requested, Provisioning, Joining, Ready, Draining,
/// Terminating, Terminated, or Failed.
// Mirrors `tidepool_core::lifecycle::Phase`, which has no JSON schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ClaimPhase {
    /// The claim exists; no VM has been created yet.
    Requested,
    /// The VM is being cloned, configured and started.
    Provisioning,
    /// The machine has its configuration and is joining the cluster.
    Joining,
    /// The node is Ready and labelled; the worker takes pods.
    Ready,
    /// The node is cordoned and its pods are being evicted.
    Draining,
    /// The node and VM are being removed.
    Terminating,
    /// The node and VM are gone.
    Terminated,
    /// A step failed; see `failedStep` and `lastError`.
    Failed,
}

impl From<Phase> for ClaimPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Requested => Self::Requested,
            Phase::Provisioning => Self::Provisioning,
            Phase::Joining => Self::Joining,
            Phase::Ready => Self::Ready,
            Phase::Draining => Self::Draining,
            Phase::Terminating => Self::Terminating,
            Phase::Terminated => Self::Terminated,
            Phase::Failed => Self::Failed,
        }
    }
}

impl From<ClaimPhase> for Phase {
    fn from(phase: ClaimPhase) -> Self {
        match phase {
            ClaimPhase::Requested => Self::Requested,
            ClaimPhase::Provisioning => Self::Provisioning,
            ClaimPhase::Joining => Self::Joining,
            ClaimPhase::Ready => Self::Ready,
            ClaimPhase::Draining => Self::Draining,
            ClaimPhase::Terminating => Self::Terminating,
            ClaimPhase::Terminated => Self::Terminated,
            ClaimPhase::Failed => Self::Failed,
        }
    }
}

/// When `phase` is Failed: the lifecycle step that failed.
// Mirrors `tidepool_core::lifecycle::Step`, which has no JSON schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClaimStep {
    /// Choosing a VMID.
    AllocateVmid,
    /// Cloning the template.
    Clone,
    /// Setting cores, memory, tags, description and SMBIOS.
    Configure,
    /// Starting the VM.
    Start,
    /// Waiting for the guest to boot and report an address.
    WaitForAddress,
    /// Delivering the machine configuration.
    DeliverConfig,
    /// Waiting for the node to register and turn Ready.
    WaitForNode,
    /// Applying labels and taints.
    Label,
    /// Marking the node unschedulable.
    Cordon,
    /// Evicting the node's pods.
    Drain,
    /// Deleting the Kubernetes node.
    DeleteNode,
    /// Shutting the operating system down.
    ShutdownOs,
    /// Stopping the VM.
    StopVm,
    /// Deleting the VM.
    DeleteVm,
}

impl From<Step> for ClaimStep {
    fn from(step: Step) -> Self {
        match step {
            Step::AllocateVmid => Self::AllocateVmid,
            Step::Clone => Self::Clone,
            Step::Configure => Self::Configure,
            Step::Start => Self::Start,
            Step::WaitForAddress => Self::WaitForAddress,
            Step::DeliverConfig => Self::DeliverConfig,
            Step::WaitForNode => Self::WaitForNode,
            Step::Label => Self::Label,
            Step::Cordon => Self::Cordon,
            Step::Drain => Self::Drain,
            Step::DeleteNode => Self::DeleteNode,
            Step::ShutdownOs => Self::ShutdownOs,
            Step::StopVm => Self::StopVm,
            Step::DeleteVm => Self::DeleteVm,
        }
    }
}

impl From<ClaimStep> for Step {
    fn from(step: ClaimStep) -> Self {
        match step {
            ClaimStep::AllocateVmid => Self::AllocateVmid,
            ClaimStep::Clone => Self::Clone,
            ClaimStep::Configure => Self::Configure,
            ClaimStep::Start => Self::Start,
            ClaimStep::WaitForAddress => Self::WaitForAddress,
            ClaimStep::DeliverConfig => Self::DeliverConfig,
            ClaimStep::WaitForNode => Self::WaitForNode,
            ClaimStep::Label => Self::Label,
            ClaimStep::Cordon => Self::Cordon,
            ClaimStep::Drain => Self::Drain,
            ClaimStep::DeleteNode => Self::DeleteNode,
            ClaimStep::ShutdownOs => Self::ShutdownOs,
            ClaimStep::StopVm => Self::StopVm,
            ClaimStep::DeleteVm => Self::DeleteVm,
        }
    }
}

/// One observation about a lifecycle step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimCondition {
    /// Which step this condition reports on.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// True when the step is done, False when it failed or was undone,
    /// Unknown while it is in progress.
    pub status: ConditionStatus,
    /// A short CamelCase reason (for example `Cloned`, `EvictionBlocked`).
    pub reason: String,
    /// A human-readable explanation. Never contains credentials or tokens.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
}

/// The lifecycle steps a claim reports conditions for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionType {
    /// A VMID was reserved for the worker (recorded before cloning).
    VmidAllocated,
    /// The VM was cloned from its template.
    VmCloned,
    /// The VM's cores, memory, tags and description were set.
    VmConfigured,
    /// The VM was started.
    VmStarted,
    /// The guest booted and reported an address.
    AddressReported,
    /// The machine configuration was delivered.
    ConfigDelivered,
    /// The node registered with the cluster.
    NodeRegistered,
    /// The node is Ready.
    NodeReady,
    /// The node carries its pool's labels and taints.
    Labelled,
    /// The node is unschedulable.
    Cordoned,
    /// The node's pods were evicted.
    Drained,
    /// The Kubernetes node object was deleted.
    NodeDeleted,
    /// The VM was stopped.
    VmStopped,
    /// The VM was deleted.
    VmDeleted,
}

/// The status of a condition, as in every Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The step is done.
    True,
    /// The step failed or was undone.
    False,
    /// The step is in progress or its outcome is not known.
    Unknown,
}

/// The schema of `status.vmid`: a Proxmox VMID as a plain integer in the
/// range Proxmox allows (Kubernetes knows no unsigned formats).
fn vmid_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "format": "int64",
        "minimum": 100,
        "maximum": 999_999_999,
    })
}

/// The CRD as YAML, exactly as committed in
/// `deploy/crds/workerclaims.tidepool.dev.yaml`.
///
/// # Errors
/// [`serde_saphyr::ser::Error`] if serialisation fails (it does not for this type).
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let body = serde_saphyr::to_string(&WorkerClaim::crd())?;
    Ok(format!(
        "# Generated from crates/cluster/src/claim.rs; do not edit by hand.\n\
         # Regenerate with: cargo run -p tidepool-cluster --example gen-crd\n\
         {body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn full_status() -> WorkerClaimStatus {
        let now = Timestamp::UNIX_EPOCH;
        let mut status = WorkerClaimStatus {
            phase: Some(ClaimPhase::Failed),
            failed_step: Some(ClaimStep::Clone),
            vmid: Some(9001),
            proxmox_node: Some("pve1".into()),
            vm_uuid: Some("uuid".into()),
            ip: Some("10.0.0.9".into()),
            node_name: Some("burst-abcde".into()),
            provisioned_at: Some(Time(now)),
            expires_at: Some(Time(now)),
            last_error: Some("boom".into()),
            conditions: vec![],
            observed_generation: Some(1),
        };
        status.set_condition(
            ConditionType::VmCloned,
            ConditionStatus::False,
            "CloneFailed",
            "boom",
            now,
        );
        status
    }

    #[test]
    fn the_status_field_list_names_every_field() {
        let value = serde_json::to_value(full_status()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut listed = WorkerClaimStatus::FIELDS.to_vec();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_is_unchanged() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = Timestamp::from_second(60).unwrap();
        let t2 = Timestamp::from_second(120).unwrap();
        let mut status = WorkerClaimStatus::default();
        status.set_condition(
            ConditionType::NodeReady,
            ConditionStatus::Unknown,
            "Waiting",
            "",
            t0,
        );
        status.set_condition(
            ConditionType::NodeReady,
            ConditionStatus::Unknown,
            "StillWaiting",
            "",
            t1,
        );
        let c = status.condition(ConditionType::NodeReady).unwrap();
        assert_eq!(c.last_transition_time, Time(t0));
        assert_eq!(c.reason, "StillWaiting");
        status.set_condition(
            ConditionType::NodeReady,
            ConditionStatus::True,
            "KubeletReady",
            "",
            t2,
        );
        let c = status.condition(ConditionType::NodeReady).unwrap();
        assert_eq!(c.last_transition_time, Time(t2));
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn phases_and_steps_round_trip_through_the_core_enums() {
        for phase in Phase::ALL {
            let claim: ClaimPhase = phase.into();
            assert_eq!(Phase::from(claim), phase);
            let json = serde_json::to_value(claim).unwrap();
            assert_eq!(json, Value::String(phase.as_str().to_owned()));
        }
        let steps = [
            Step::AllocateVmid,
            Step::Clone,
            Step::Configure,
            Step::Start,
            Step::WaitForAddress,
            Step::DeliverConfig,
            Step::WaitForNode,
            Step::Label,
            Step::Cordon,
            Step::Drain,
            Step::DeleteNode,
            Step::ShutdownOs,
            Step::StopVm,
            Step::DeleteVm,
        ];
        for step in steps {
            let claim: ClaimStep = step.into();
            assert_eq!(Step::from(claim), step);
            let json = serde_json::to_value(claim).unwrap();
            assert_eq!(json, Value::String(step.as_str().to_owned()));
        }
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status_subresource_and_short_name() {
        use kube::CustomResourceExt;
        let crd = WorkerClaim::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["wc".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Pool", "Size", "Phase", "Node", "VMID", "Expires", "Age"]
        );
    }
}
