//! The worker claim: Tidepool's one vocabulary for a worker's lifecycle.
//!
//! A claim is what was asked for ([`ClaimSpec`], with the user's
//! [`Intent`]) and everything done so far ([`ClaimStatus`]: the checked
//! [`Lifecycle`], the VM's identity, one timestamp per completed
//! [`Condition`]). The executor decides what to do next with the pure
//! [`next_step`] and [`phase_change`]; the planner and the service layer
//! see a claim through [`Claim::planner_state`].
//!
//! These types are also the wire form of the `WorkerClaim` custom
//! resource: their serde attributes give the JSON Kubernetes stores, and
//! with the `schemars` feature they give the CRD's schema, so the resource
//! cannot drift from the model.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::lifecycle::{Lifecycle, Phase, Step};
use crate::planner::ClaimState;

/// What should become of the worker: the user's typed request, written in
/// the claim's `spec.intent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Intent {
    /// Provision it and keep it running.
    #[default]
    Keep,
    /// Cordon and drain it, then keep it (drained) until told more.
    Drain,
    /// Remove it: cordon and drain, then delete node and VM.
    Remove {
        /// The operator forced the removal: a worker that was not drained
        /// beforehand may go (and one whose drain failed is taken down).
        force: bool,
    },
    /// Hold it as a cold spare: clone and configure its VM, then keep it
    /// stopped until it is activated (the intent becomes [`Intent::Keep`]).
    /// Only a worker that has not started yet becomes a spare.
    Spare,
}

impl Intent {
    /// Whether the worker is asked to leave (drain or removal).
    pub fn is_leaving(self) -> bool {
        matches!(self, Self::Drain | Self::Remove { .. })
    }

    /// Whether the worker is to be held as a cold spare.
    pub fn is_spare(self) -> bool {
        self == Self::Spare
    }

    /// Whether the worker is asked to be removed.
    pub fn is_removal(self) -> bool {
        matches!(self, Self::Remove { .. })
    }

    /// Whether the removal was forced.
    pub fn is_forced(self) -> bool {
        self == Self::Remove { force: true }
    }
}

/// The wire form of [`Intent`]: `{action: Drain|Remove|Spare, force}`;
/// absent means keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schemars",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": "!has(self.force) || !self.force || self.action == 'Remove'",
        "message": "force applies only to the Remove action"
    }]))
)]
#[serde(rename_all = "camelCase")]
struct IntentRecord {
    /// `Keep` (the default), `Drain` (cordon and evict the pods, keep the
    /// worker), `Remove` (drain, then delete node and VM), or `Spare` (a
    /// cold spare: cloned and configured, kept stopped; setting `Keep`
    /// activates it, and its TTL counts from then).
    action: IntentAction,
    /// With `Remove`: a worker that was not drained beforehand may go (it is
    /// still cordoned and drained on its way out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

/// What the operator asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
enum IntentAction {
    /// Keep the worker.
    Keep,
    /// Cordon and drain it, then keep it.
    Drain,
    /// Remove it.
    Remove,
    /// Keep it stopped as a cold spare until it is activated.
    Spare,
}

impl From<Intent> for IntentRecord {
    fn from(intent: Intent) -> Self {
        let (action, force) = match intent {
            Intent::Keep => (IntentAction::Keep, false),
            Intent::Drain => (IntentAction::Drain, false),
            Intent::Remove { force } => (IntentAction::Remove, force),
            Intent::Spare => (IntentAction::Spare, false),
        };
        Self { action, force }
    }
}

impl From<IntentRecord> for Intent {
    fn from(r: IntentRecord) -> Self {
        match r.action {
            IntentAction::Keep => Self::Keep,
            IntentAction::Drain => Self::Drain,
            IntentAction::Remove => Self::Remove { force: r.force },
            IntentAction::Spare => Self::Spare,
        }
    }
}

impl Serialize for Intent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        IntentRecord::from(*self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Intent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IntentRecord::deserialize(d).map(Into::into)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Intent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Intent".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        IntentRecord::json_schema(generator)
    }
}

/// What was asked for: one worker of a size in a pool. Written when the
/// claim is created; only the intent and the TTL change afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schemars",
    schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.pool == oldSelf.pool", "message": "pool cannot be changed"},
        {"rule": "self.size == oldSelf.size", "message": "size cannot be changed"}
    ]))
)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// Name of the pool (from Tidepool's configuration) the worker belongs to.
    #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = 63)))]
    pub pool: String,
    /// Name of the size (cores, memory, disk) the VM is cloned with.
    #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = 63)))]
    pub size: String,
    /// Lifetime of the worker in seconds, counted from its request. When it
    /// runs out the worker is drained and removed. Absent: the worker never
    /// expires.
    #[serde(
        default,
        rename = "ttlSeconds",
        with = "ttl_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<i64>", range(min = 1)))]
    pub ttl: Option<Duration>,
    /// Who asked for the worker: a user, `autoscaler`, or `mcp:<client>`.
    pub requested_by: String,
    /// Why the worker was requested, in words (for example "3 pending pods
    /// in namespace ml"). Shown in Events and `kubectl describe`.
    pub reason: String,
    /// What should become of the worker. Absent: keep it. Deleting the
    /// claim also removes the worker (drained first, unless `force`).
    #[serde(default, skip_serializing_if = "is_keep")]
    pub intent: Intent,
    /// The Proxmox host chosen for the VM when the claim was made (the
    /// autoscaler's placement). Absent: Tidepool chooses when it clones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn is_keep(intent: &Intent) -> bool {
    *intent == Intent::Keep
}

mod ttl_seconds {
    //! `Option<Duration>` as whole seconds.
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ttl: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match ttl {
            Some(t) => s.serialize_u64(t.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// The identity of a VM: all three must match before Tidepool touches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VmIdentity {
    /// Proxmox VM ID.
    #[cfg_attr(
        feature = "schemars",
        schemars(range(min = 100, max = 999_999_999), extend("format" = "int64"))
    )]
    pub vmid: u32,
    /// Proxmox node (hypervisor host) the VM is on.
    pub node: String,
    /// SMBIOS UUID of the VM, regenerated by every clone.
    pub uuid: String,
}

/// A lifecycle step that has been completed, recorded with its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Condition {
    /// A VMID was reserved for the worker (recorded before cloning).
    VmidAllocated,
    /// The clone of the VM into the reserved VMID was asked of the
    /// hypervisor (recorded before the request, so a process restarted
    /// while the clone copies recognises the locked VM there as its own).
    CloneRequested,
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
    /// The node registered and turned Ready.
    NodeReady,
    /// The node carries its pool's labels and taints.
    Labelled,
    /// The node was cordoned.
    Cordoned,
    /// The node's pods were evicted.
    Drained,
    /// The Kubernetes Node object was deleted.
    NodeDeleted,
    /// The OS was asked to shut down (Talos `Shutdown`), or could not be
    /// asked (the attempt is on the audit trail).
    OsShutdownRequested,
    /// The guest was asked to power off through the hypervisor (ACPI).
    AcpiShutdownRequested,
    /// The VM was stopped.
    VmStopped,
    /// The VM was deleted.
    VmDeleted,
    /// A safety rule (spec §8) refused the removal asked for: the worker,
    /// its VM and its node are kept; `lastError` says which rule.
    Refused,
}

/// One completed step as the resource records it, in the shape of every
/// Kubernetes condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
struct ConditionRecord {
    /// The lifecycle step this condition reports on.
    #[serde(rename = "type")]
    kind: Condition,
    /// `True`: the step is done.
    status: String,
    /// When the step was done.
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "String", extend("format" = "date-time"))
    )]
    last_transition_time: Timestamp,
}

mod condition_list {
    //! The map of completed steps as a Kubernetes condition list.
    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Condition, ConditionRecord};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Condition, Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(kind, at)| ConditionRecord {
                kind: *kind,
                status: "True".into(),
                last_transition_time: *at,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Condition, Timestamp>, D::Error> {
        Ok(Vec::<ConditionRecord>::deserialize(d)?
            .into_iter()
            .filter(|r| r.status == "True")
            .map(|r| (r.kind, r.last_transition_time))
            .collect())
    }
}

/// The wire form of a [`Lifecycle`] inside the status: the phase, and for
/// a failure the step and the reason side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
struct LifecycleRecord {
    /// Lifecycle phase: Requested, Provisioning, Joining, Ready, Draining,
    /// Terminating, Terminated, Failed, or Spare (a cold spare, stopped).
    #[serde(default)]
    phase: Phase,
    /// When `phase` is Failed: the lifecycle step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed_step: Option<Step>,
    /// When `phase` is Failed: why, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
}

mod lifecycle_record {
    //! [`Lifecycle`] as the status's `phase`, `failedStep` and `failureReason`.
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::LifecycleRecord;
    use crate::lifecycle::{Lifecycle, Phase, Step};

    pub fn serialize<S: Serializer>(l: &Lifecycle, s: S) -> Result<S::Ok, S::Error> {
        let record = match l {
            Lifecycle::Failed { step, reason } => LifecycleRecord {
                phase: Phase::Failed,
                failed_step: Some(*step),
                failure_reason: Some(reason.clone()),
            },
            other => LifecycleRecord {
                phase: other.phase(),
                ..LifecycleRecord::default()
            },
        };
        record.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lifecycle, D::Error> {
        let r = LifecycleRecord::deserialize(d)?;
        Ok(match r.phase {
            Phase::Failed => Lifecycle::Failed {
                // A failure recorded without its step (by hand) is taken
                // as one of the first step: nothing more is assumed done.
                step: r.failed_step.unwrap_or(Step::AllocateVmid),
                reason: r.failure_reason.unwrap_or_default(),
            },
            phase => Lifecycle::of_phase(phase),
        })
    }
}

/// Everything done so far. Written only by Tidepool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    /// Lifecycle phase, and for a failure the step that failed and why.
    #[serde(flatten, with = "lifecycle_record")]
    #[cfg_attr(feature = "schemars", schemars(with = "LifecycleRecord"))]
    pub lifecycle: Lifecycle,
    /// The VMID reserved before cloning (recorded first, so a crash during
    /// the clone finds the VM again instead of cloning a second one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schemars",
        schemars(range(min = 100, max = 999_999_999), extend("format" = "int64"))
    )]
    pub vmid: Option<u32>,
    /// The Proxmox host chosen for the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The VM's full identity once cloned: VMID, node and SMBIOS UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmIdentity>,
    /// Address the guest reported once it booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<String>"))]
    pub ip: Option<IpAddr>,
    /// Name of the Kubernetes node the VM registered as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// When the worker was requested (its TTL counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "Option<String>", extend("format" = "date-time"))
    )]
    pub provisioned_at: Option<Timestamp>,
    /// When the worker's lifetime runs out; absent for workers that never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "Option<String>", extend("format" = "date-time"))
    )]
    pub expires_at: Option<Timestamp>,
    /// One condition per completed lifecycle step, with when it was done.
    #[serde(default, with = "condition_list")]
    #[cfg_attr(feature = "schemars", schemars(with = "Vec<ConditionRecord>"))]
    pub conditions: BTreeMap<Condition, Timestamp>,
    /// The most recent transient error, kept until a step succeeds. Never
    /// contains credentials or tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The claim's `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The worker's health (spec §7): since when each current problem has
    /// lasted, and the latest repair with its try and outcome. Kept here so
    /// the repair windows survive a restart and a failover.
    #[serde(default, skip_serializing_if = "crate::health::HealthRecord::is_empty")]
    pub health: crate::health::HealthRecord,
}

impl Default for ClaimStatus {
    fn default() -> Self {
        Self {
            lifecycle: Lifecycle::Requested,
            vmid: None,
            host: None,
            vm: None,
            ip: None,
            node_name: None,
            provisioned_at: None,
            expires_at: None,
            conditions: BTreeMap::new(),
            last_error: None,
            observed_generation: None,
            health: crate::health::HealthRecord::default(),
        }
    }
}

impl ClaimStatus {
    /// Whether `c` has been recorded.
    pub fn has(&self, c: Condition) -> bool {
        self.conditions.contains_key(&c)
    }

    /// How long ago `c` was recorded, or zero when it was not.
    pub fn since(&self, c: Condition, now: Timestamp) -> Duration {
        self.conditions
            .get(&c)
            .map(|t| now.duration_since(*t).unsigned_abs())
            .unwrap_or_default()
    }
}

/// A worker claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Name: also the VM name and the node's hostname.
    pub name: String,
    /// What was asked for, with the user's intent. A claim being deleted
    /// reads as [`Intent::Remove`].
    pub spec: ClaimSpec,
    /// What has been done.
    pub status: ClaimStatus,
    /// Whether the cleanup finalizer is still on the record.
    pub finalizer: bool,
    /// The record's generation (bumped by every spec change), if the store
    /// keeps one.
    pub generation: Option<i64>,
    /// Whether the record itself is being deleted (`kubectl delete`): a
    /// removal nobody asked for through Tidepool's front-ends.
    pub deleting: bool,
}

impl Claim {
    /// A new claim for `spec`, with the finalizer and an empty status.
    pub fn new(name: impl Into<String>, spec: ClaimSpec) -> Self {
        Self {
            name: name.into(),
            spec,
            status: ClaimStatus::default(),
            finalizer: true,
            generation: None,
            deleting: false,
        }
    }

    /// What should become of the worker.
    pub fn intent(&self) -> Intent {
        self.spec.intent
    }

    /// The claim's lifecycle phase.
    pub fn phase(&self) -> Phase {
        self.status.lifecycle.phase()
    }

    /// The VMID of the claim's VM, or the one reserved for it.
    pub fn vmid(&self) -> Option<u32> {
        self.status.vm.as_ref().map(|v| v.vmid).or(self.status.vmid)
    }

    /// The host the claim's VM is on, or the one chosen for it (in the
    /// status, else the spec's placement).
    pub fn host(&self) -> Option<String> {
        self.status
            .vm
            .as_ref()
            .map(|v| v.node.clone())
            .or_else(|| self.status.host.clone())
            .or_else(|| self.spec.host.clone())
    }

    /// What the planner knows of this claim: pool, size, phase, whether it
    /// is being removed, the host its VM is (or will be) on, and its
    /// expiry. Idleness is the observer's to add. A spare still being made
    /// reads as [`Phase::Spare`] already: it is no capacity on its way; an
    /// activated one not started yet reads as `Provisioning`: it is.
    pub fn planner_state(&self) -> ClaimState {
        ClaimState {
            name: self.name.clone(),
            pool: self.spec.pool.clone(),
            size: self.spec.size.clone(),
            phase: self.planner_phase(),
            // A refused removal will not happen: the worker still counts.
            removing: self.intent().is_removal() && !self.status.has(Condition::Refused),
            host: self.host(),
            expires_at: self.status.expires_at,
            idle_since: None,
        }
    }
}

impl Claim {
    /// The phase the planner sees: see [`Claim::planner_state`].
    fn planner_phase(&self) -> Phase {
        match self.phase() {
            Phase::Spare if self.intent() == Intent::Keep => Phase::Provisioning,
            _ if self.is_unactivated_spare() => Phase::Spare,
            phase => phase,
        }
    }

    /// Whether the claim is a cold spare not yet activated, parked or still
    /// being made.
    pub fn is_unactivated_spare(&self) -> bool {
        self.intent().is_spare()
            && matches!(
                self.phase(),
                Phase::Requested | Phase::Provisioning | Phase::Joining | Phase::Spare
            )
    }
}

/// The steps that park a cold spare once its machine is installed and its
/// node has joined (see [`Intent::Spare`]): the node is cordoned, emptied
/// of anything that landed on it meanwhile, and deleted; the OS is shut
/// down and the VM stopped. Activation starts the VM again, and the
/// installed machine's kubelet registers the node anew.
pub const PARK_SPARE: [(Step, Condition); 4] = [
    (Step::Cordon, Condition::Cordoned),
    (Step::Drain, Condition::Drained),
    (Step::DeleteNode, Condition::NodeDeleted),
    (Step::ShutdownOs, Condition::VmStopped),
];

/// Whether the claim is being parked as a spare (or finishes parking
/// after an early activation): not removed, and either a spare or in the
/// Spare phase.
fn parking(claim: &Claim) -> bool {
    let intent = claim.intent();
    !intent.is_removal() && (intent.is_spare() || claim.phase() == Phase::Spare)
}

/// Whether the claim failed while being cordoned or drained: its node may
/// still run pods that must not be disrupted.
pub fn drain_failed(lifecycle: &Lifecycle) -> bool {
    matches!(
        lifecycle,
        Lifecycle::Failed {
            step: Step::Cordon | Step::Drain,
            ..
        }
    )
}

/// The next step for the claim, or `None` when there is nothing to do: the
/// first step of its phase whose condition is missing, or the way out when
/// its intent asks for one.
pub fn next_step(claim: &Claim) -> Option<Step> {
    let s = &claim.status;
    let intent = claim.intent();
    let removing = intent.is_removal();
    let forced = intent.is_forced();
    let first_missing =
        |steps: &[(Step, Condition)]| steps.iter().find(|(_, c)| !s.has(*c)).map(|(st, _)| *st);
    match s.lifecycle.phase() {
        Phase::Requested | Phase::Provisioning | Phase::Joining | Phase::Spare if removing => {
            Some(Step::DeleteNode)
        }
        Phase::Requested => Some(Step::AllocateVmid),
        // A spare whose node joined is parked (in Spare, see
        // `phase_change`); once activated, its start comes next.
        Phase::Joining if intent.is_spare() && s.has(Condition::NodeReady) => {
            first_missing(&PARK_SPARE)
        }
        Phase::Spare if intent.is_leaving() => None,
        Phase::Spare => first_missing(&PARK_SPARE).or((!intent.is_spare()).then_some(Step::Start)),
        Phase::Provisioning => first_missing(&[
            (Step::Clone, Condition::VmCloned),
            (Step::Configure, Condition::VmConfigured),
            (Step::Start, Condition::VmStarted),
            (Step::WaitForAddress, Condition::AddressReported),
        ]),
        Phase::Joining => first_missing(&[
            (Step::DeliverConfig, Condition::ConfigDelivered),
            (Step::WaitForNode, Condition::NodeReady),
            (Step::Label, Condition::Labelled),
        ]),
        // Every way out of Ready cordons and evicts first, a forced one
        // too: force only skips the requirement that the worker was
        // drained beforehand (spec §8).
        Phase::Ready if intent.is_leaving() => Some(Step::Cordon),
        Phase::Ready | Phase::Terminated => None,
        Phase::Draining => first_missing(&[
            (Step::Cordon, Condition::Cordoned),
            (Step::Drain, Condition::Drained),
        ])
        .or(removing.then_some(Step::DeleteNode)),
        // A worker whose drain failed still runs the pods that blocked it:
        // only a forced removal may take it down (spec §8).
        Phase::Failed if drain_failed(&s.lifecycle) && !forced => None,
        Phase::Failed if removing => Some(Step::DeleteNode),
        Phase::Failed => None,
        Phase::Terminating => first_missing(&[
            (Step::DeleteNode, Condition::NodeDeleted),
            (Step::ShutdownOs, Condition::VmStopped),
            (Step::DeleteVm, Condition::VmDeleted),
        ]),
    }
}

/// The phase to enter before `step` can run, if the claim is not in it yet
/// (a drain enters Draining, any removal step Terminating; a spare's
/// parking steps run in Spare, and an activated spare starts back in
/// Provisioning).
pub fn phase_change(claim: &Claim, step: Step) -> Option<Phase> {
    let wanted = match step {
        Step::Cordon | Step::Drain | Step::DeleteNode | Step::ShutdownOs if parking(claim) => {
            Phase::Spare
        }
        Step::Cordon | Step::Drain => Phase::Draining,
        Step::DeleteNode | Step::ShutdownOs | Step::StopVm | Step::DeleteVm => Phase::Terminating,
        other => other.phase(),
    };
    (wanted != claim.phase()).then_some(wanted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec() -> ClaimSpec {
        ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: Some(Duration::from_secs(4 * 3600)),
            requested_by: "alice".into(),
            reason: "a test".into(),
            intent: Intent::Keep,
            host: Some("pve-01".into()),
        }
    }

    #[test]
    fn a_spec_keeps_its_wire_names_and_omits_a_kept_intent() {
        let json = serde_json::to_value(spec()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "pool": "burst", "size": "small", "ttlSeconds": 14400,
                "requestedBy": "alice", "reason": "a test", "host": "pve-01"
            })
        );
        let mut removal = spec();
        removal.intent = Intent::Remove { force: true };
        let json = serde_json::to_value(&removal).unwrap();
        assert_eq!(
            json["intent"],
            serde_json::json!({"action": "Remove", "force": true})
        );
        assert_eq!(serde_json::from_value::<ClaimSpec>(json).unwrap(), removal);
    }

    #[test]
    fn a_failed_status_round_trips_with_its_step_reason_and_conditions() {
        let t = Timestamp::from_second(1_767_225_600).unwrap();
        let status = ClaimStatus {
            lifecycle: Lifecycle::Failed {
                step: Step::Start,
                reason: "cannot start VM 1250: no memory".into(),
            },
            vmid: Some(1250),
            vm: Some(VmIdentity {
                vmid: 1250,
                node: "pve-01".into(),
                uuid: "6c2e".into(),
            }),
            conditions: [(Condition::VmidAllocated, t), (Condition::VmCloned, t)].into(),
            observed_generation: Some(2),
            ..ClaimStatus::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Failed");
        assert_eq!(json["failedStep"], "start");
        assert_eq!(json["failureReason"], "cannot start VM 1250: no memory");
        assert_eq!(json["conditions"][1]["type"], "VmCloned");
        assert_eq!(json["conditions"][1]["status"], "True");
        assert_eq!(serde_json::from_value::<ClaimStatus>(json).unwrap(), status);
    }

    #[test]
    fn an_empty_status_reads_as_requested() {
        let status: ClaimStatus = serde_json::from_str("{}").unwrap();
        assert_eq!(status, ClaimStatus::default());
    }

    #[test]
    fn a_worker_being_removed_no_longer_counts_toward_its_pool_but_a_drained_one_does() {
        let config = crate::config::load(crate::config::EXAMPLE).unwrap();
        let mut kept = Claim::new("burst-a", spec());
        kept.status.lifecycle = Lifecycle::Ready;
        let mut drained = kept.clone();
        drained.name = "burst-b".into();
        drained.spec.intent = Intent::Drain;
        let mut going = kept.clone();
        going.name = "burst-c".into();
        going.spec.intent = Intent::Remove { force: false };
        let states: Vec<_> = [kept, drained, going]
            .iter()
            .map(Claim::planner_state)
            .collect();
        let usage = crate::planner::usage::pool_usage(&config, &states, "burst");
        assert_eq!(usage.nodes, 2);
    }

    #[test]
    fn a_forced_removal_of_a_ready_worker_still_cordons_and_drains_first() {
        let mut c = Claim::new("burst-f0rce", spec());
        c.status.lifecycle = Lifecycle::Ready;
        c.spec.intent = Intent::Remove { force: true };
        assert_eq!(next_step(&c), Some(Step::Cordon));
        c.status.lifecycle = Lifecycle::Draining;
        let t = Timestamp::from_second(1_767_225_600).unwrap();
        c.status.conditions.insert(Condition::Cordoned, t);
        assert_eq!(next_step(&c), Some(Step::Drain));
        c.status.conditions.insert(Condition::Drained, t);
        assert_eq!(next_step(&c), Some(Step::DeleteNode));
    }

    #[test]
    fn a_spare_is_parked_once_its_node_joined_and_starts_again_once_activated() {
        let t = Timestamp::from_second(1_767_225_600).unwrap();
        let mut c = Claim::new("burst-sp4re", spec());
        c.spec.intent = Intent::Spare;
        assert_eq!(next_step(&c), Some(Step::AllocateVmid));
        c.status.lifecycle = Lifecycle::Joining;
        c.status.conditions.insert(Condition::ConfigDelivered, t);
        assert_eq!(next_step(&c), Some(Step::WaitForNode));
        assert_eq!(
            c.planner_state().phase,
            Phase::Spare,
            "no capacity on its way"
        );
        c.status.conditions.insert(Condition::NodeReady, t);
        assert_eq!(next_step(&c), Some(Step::Cordon), "parked, never labelled");
        assert_eq!(phase_change(&c, Step::Cordon), Some(Phase::Spare));
        c.status.lifecycle = Lifecycle::Spare;
        for (step, cond) in PARK_SPARE {
            assert_eq!(next_step(&c), Some(step));
            assert_eq!(phase_change(&c, step), None, "{step} runs in Spare");
            c.status.conditions.insert(cond, t);
        }
        assert_eq!(next_step(&c), None, "parked");
        c.spec.intent = Intent::Keep;
        assert_eq!(next_step(&c), Some(Step::Start));
        assert_eq!(phase_change(&c, Step::Start), Some(Phase::Provisioning));
        assert_eq!(
            c.planner_state().phase,
            Phase::Provisioning,
            "on its way once activated"
        );
    }

    #[test]
    fn a_parked_spare_asked_to_go_is_taken_down() {
        let mut c = Claim::new("burst-sp4re", spec());
        c.spec.intent = Intent::Remove { force: false };
        c.status.lifecycle = Lifecycle::Spare;
        assert_eq!(next_step(&c), Some(Step::DeleteNode));
        assert_eq!(phase_change(&c, Step::DeleteNode), Some(Phase::Terminating));
        assert!(!c.is_unactivated_spare());
    }

    #[test]
    fn the_spare_intent_keeps_its_wire_name() {
        let mut s = spec();
        s.intent = Intent::Spare;
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["intent"], serde_json::json!({"action": "Spare"}));
        assert_eq!(serde_json::from_value::<ClaimSpec>(json).unwrap(), s);
        assert!(!Intent::Spare.is_leaving());
    }
}
