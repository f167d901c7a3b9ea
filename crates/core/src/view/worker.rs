//! The worker views: one worker with its phase, the list of them, and the
//! results of the operations on workers (provision, drain or destroy,
//! TTL extension).

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lifecycle::Phase;
use crate::pool::PoolKind;

/// Where a worker stands: one of the eight lifecycle phases of a worker
/// Tidepool manages, or `Unmanaged` for a node it did not create.
///
/// It is written as the phase's name (`Ready`, `Unmanaged`, ...), exactly
/// as the lifecycle names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerPhase {
    /// A managed worker in this lifecycle phase.
    Managed(Phase),
    /// A node of the cluster Tidepool did not create.
    Unmanaged,
}

impl WorkerPhase {
    const UNMANAGED: &'static str = "Unmanaged";

    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed(phase) => phase.as_str(),
            Self::Unmanaged => Self::UNMANAGED,
        }
    }

    /// The phase named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        if name == Self::UNMANAGED {
            return Some(Self::Unmanaged);
        }
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .map(Self::Managed)
    }

    /// The lifecycle phase of a managed worker; `None` when unmanaged.
    pub fn lifecycle(self) -> Option<Phase> {
        match self {
            Self::Managed(phase) => Some(phase),
            Self::Unmanaged => None,
        }
    }
}

impl From<Phase> for WorkerPhase {
    fn from(phase: Phase) -> Self {
        Self::Managed(phase)
    }
}

impl PartialEq<Phase> for WorkerPhase {
    fn eq(&self, other: &Phase) -> bool {
        self.lifecycle() == Some(*other)
    }
}

impl fmt::Display for WorkerPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WorkerPhase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkerPhase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown worker phase `{name}`")))
    }
}

/// One worker: a Tidepool-managed VM and its node, or a node Tidepool did
/// not create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct WorkerInfo {
    /// Worker name, which is also the Kubernetes node name.
    pub name: String,
    /// Whether Tidepool created and manages this worker. Unmanaged nodes
    /// are listed for context but can never be drained or destroyed here.
    pub managed: bool,
    /// Pool name, from the worker's record or its node's pool label.
    pub pool: Option<String>,
    /// Pool kind for managed workers: `permanent`, `burst`, `spot` or `gpu`.
    #[cfg_attr(feature = "schemars", schemars(with = "Option<String>"))]
    pub kind: Option<PoolKind>,
    /// `permanent`, `temporary`, `preemptible`, or `unknown`.
    pub worker_type: String,
    /// Size name (e.g. `medium`).
    pub size: Option<String>,
    /// Lifecycle phase: `Requested`, `Provisioning`, `Joining`, `Ready`,
    /// `Draining`, `Terminating`, `Terminated`, `Failed`, or `Unmanaged`.
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub phase: WorkerPhase,
    /// For failed workers, the step that failed and why.
    pub failure: Option<String>,
    /// Whether the node reports Ready; null while there is no node yet.
    pub node_ready: Option<bool>,
    /// Whether the node is cordoned (no new pods are scheduled on it).
    pub cordoned: bool,
    /// Pods on the node other than DaemonSet pods.
    pub workload_pods: u64,
    /// Proxmox VM id.
    pub vmid: Option<u32>,
    /// Proxmox host the VM runs on.
    pub host: Option<String>,
    /// The VM's IP address.
    pub ip: Option<String>,
    /// When the worker's TTL expires (RFC 3339); null for workers without
    /// a TTL.
    #[serde(serialize_with = "super::seconds::serialize_opt")]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<String>"))]
    pub expires_at: Option<Timestamp>,
    /// The time left until expiry in words (e.g. `3h 59m`, or
    /// `expired 5m ago`).
    pub expires_in: Option<String>,
    /// Who asked for the worker (e.g. `mcp:claude-desktop`, `autoscaler`).
    pub requested_by: Option<String>,
    /// The last error Tidepool recorded for this worker.
    pub last_error: Option<String>,
    /// The worker's node in detail (capacity, metadata, conditions, pods,
    /// Events, Talos version): shown for one worker, absent from lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<super::NodeDetail>,
}

/// The result of `list_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct WorkerList {
    /// How many workers matched.
    pub count: u64,
    /// The workers, ordered by pool and name.
    pub workers: Vec<WorkerInfo>,
    /// When the list is cut into pages: the cursor that fetches the next
    /// page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl WorkerList {
    /// The list of `workers`, counted.
    pub fn new(workers: Vec<WorkerInfo>) -> Self {
        Self {
            count: workers.len() as u64,
            workers,
            next_cursor: None,
        }
    }

    /// One page of `workers`: at most `limit` from the position `start`;
    /// `count` still counts every worker that matched.
    pub fn page(workers: Vec<WorkerInfo>, start: usize, limit: usize) -> Self {
        let count = workers.len() as u64;
        let end = start.saturating_add(limit);
        let next_cursor = (end < workers.len()).then(|| end.to_string());
        Self {
            count,
            workers: workers.into_iter().skip(start).take(limit).collect(),
            next_cursor,
        }
    }
}

/// A worker just requested by `provision_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct NewWorker {
    /// The new worker's name (also its future node name).
    pub name: String,
    /// Its lifecycle phase right now, normally `Requested`.
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub phase: WorkerPhase,
}

/// The result of `provision_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct ProvisionResult {
    /// The pool the workers were added to.
    pub pool: String,
    /// Who the request is recorded as coming from.
    pub requested_by: String,
    /// The workers requested, one per count.
    pub workers: Vec<NewWorker>,
    /// What happens next.
    pub message: String,
}

/// The result of `drain_worker` and `destroy_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct ActionResult {
    /// The worker acted on.
    pub worker_id: String,
    /// `drain`, `destroy` or `destroy --force`.
    pub action: String,
    /// The worker's lifecycle phase right after the request was accepted,
    /// if it could be read back.
    #[cfg_attr(feature = "schemars", schemars(with = "Option<String>"))]
    pub phase: Option<WorkerPhase>,
    /// What happens next.
    pub message: String,
}

/// The result of `extend_ttl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct TtlResult {
    /// The worker whose TTL was extended.
    pub worker_id: String,
    /// The new expiry (RFC 3339).
    #[serde(serialize_with = "super::seconds::serialize")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub expires_at: Timestamp,
    /// The time left until the new expiry, in words.
    pub expires_in: String,
}

impl TtlResult {
    /// The new expiry `at` of `worker_id`, with the time left at `now`.
    pub fn new(worker_id: String, at: Timestamp, now: Timestamp) -> Self {
        Self {
            worker_id,
            expires_at: at,
            expires_in: super::expires_in(at, now),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn phases_are_written_and_read_by_their_names() {
        let every = Phase::ALL
            .into_iter()
            .map(WorkerPhase::from)
            .chain([WorkerPhase::Unmanaged]);
        for phase in every {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{phase}\""));
            assert_eq!(serde_json::from_str::<WorkerPhase>(&json).unwrap(), phase);
        }
        assert_eq!(WorkerPhase::Managed(Phase::Ready).as_str(), "Ready");
        assert!(serde_json::from_str::<WorkerPhase>("\"Ready \"").is_err());
    }

    #[test]
    fn expiries_are_written_to_the_second_and_read_back() {
        let at = Timestamp::new(1_767_232_800, 250_000_000).unwrap();
        let result = TtlResult::new("burst-x7k2q".into(), at, at);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["expires_at"], "2026-01-01T02:00:00Z");
        assert_eq!(json["expires_in"], "less than a minute");
        let back: TtlResult = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.expires_at,
            Timestamp::from_second(1_767_232_800).unwrap()
        );
    }
}
