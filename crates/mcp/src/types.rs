//! The arguments and results of the MCP tools, as JSON-schema'd types.
//!
//! Argument types derive `Deserialize` and `JsonSchema`; their doc comments
//! become the parameter descriptions an agent reads. Result types derive
//! `Serialize` and `JsonSchema` and become each tool's output schema. Every
//! timestamp is an RFC 3339 string; nothing here ever carries a secret.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidepool_controller::service::WorkerView;
use tidepool_core::pool::WorkerType;

/// Which kind of worker `list_workers` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum TypeFilter {
    /// Baseline workers of permanent pools (never removed by Tidepool).
    Permanent,
    /// Burst and GPU workers, removed when their TTL expires or they sit idle.
    Temporary,
    /// Spot workers, removed at any time to make room.
    Preemptible,
    /// Every worker, managed or not.
    #[default]
    All,
}

impl TypeFilter {
    /// The worker type this filter keeps, or `None` for all of them.
    pub fn worker_type(self) -> Option<WorkerType> {
        match self {
            Self::Permanent => Some(WorkerType::Permanent),
            Self::Temporary => Some(WorkerType::Temporary),
            Self::Preemptible => Some(WorkerType::Preemptible),
            Self::All => None,
        }
    }
}

/// Arguments of `list_workers`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListWorkersArgs {
    /// Only workers of this type: `permanent`, `temporary`, `preemptible`
    /// or `all` (the default).
    #[serde(default)]
    pub type_filter: TypeFilter,
    /// Only workers of this pool (e.g. `burst`).
    #[serde(default)]
    pub pool: Option<String>,
}

/// Arguments naming one worker.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerIdArgs {
    /// The worker's name, which is also its Kubernetes node name
    /// (e.g. `burst-x7k2q`), as shown by `list_workers`.
    pub worker_id: String,
}

/// Arguments of `provision_workers`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionArgs {
    /// How many workers to add: 1 to 10 per request.
    #[schemars(range(min = 1, max = 10))]
    pub count: u32,
    /// The pool to add them to (e.g. `burst`, `spot`, `gpu`).
    pub pool: String,
    /// Size name (e.g. `small`, `medium`, `large`); the pool's first size
    /// when omitted.
    #[serde(default)]
    pub size: Option<String>,
    /// Time to live in hours, 1 to 168; the pool's default when omitted.
    /// Not allowed for permanent pools.
    #[serde(default)]
    #[schemars(range(min = 1, max = 168))]
    pub ttl_hours: Option<u32>,
    /// Why the workers are needed; recorded in the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Arguments of `destroy_worker`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyArgs {
    /// The worker's name, as shown by `list_workers`.
    pub worker_id: String,
    /// Destroy even if the worker has not been drained (its pods are
    /// evicted without waiting for a drain first). Never overrides the
    /// permanent, unmanaged and protected-name rules.
    #[serde(default)]
    pub force: bool,
}

/// Arguments of `extend_ttl`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendTtlArgs {
    /// The worker's name, as shown by `list_workers`.
    pub worker_id: String,
    /// Hours to add to the current expiry, 1 to 168; the worker may not end
    /// up with more than 168 hours left to live.
    #[schemars(range(min = 1, max = 168))]
    pub hours: u32,
}

/// One worker: a Tidepool-managed VM and its node, or a node Tidepool did
/// not create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerInfo {
    /// Worker name, which is also the Kubernetes node name.
    pub name: String,
    /// Whether Tidepool created and manages this worker. Unmanaged nodes
    /// are listed for context but can never be drained or destroyed here.
    pub managed: bool,
    /// Pool name, from the worker's record or its node's pool label.
    pub pool: Option<String>,
    /// Pool kind for managed workers: `permanent`, `burst`, `spot` or `gpu`.
    pub kind: Option<String>,
    /// `permanent`, `temporary`, `preemptible`, or `unknown`.
    pub worker_type: String,
    /// Size name (e.g. `medium`).
    pub size: Option<String>,
    /// Lifecycle phase: `Requested`, `Provisioning`, `Joining`, `Ready`,
    /// `Draining`, `Terminating`, `Terminated`, `Failed`, or `Unmanaged`.
    pub phase: String,
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
    pub expires_at: Option<String>,
    /// The time left until expiry in words (e.g. `3h 59m`, or
    /// `expired 5m ago`).
    pub expires_in: Option<String>,
    /// Who asked for the worker (e.g. `mcp:claude-desktop`, `autoscaler`).
    pub requested_by: Option<String>,
    /// The last error Tidepool recorded for this worker.
    pub last_error: Option<String>,
}

impl WorkerInfo {
    /// The view of `w` at time `now` (which sets `expires_in`).
    pub fn from_view(w: WorkerView, now: Timestamp) -> Self {
        Self {
            expires_in: w.expires_at.map(|at| expires_in(at, now)),
            expires_at: w.expires_at.map(rfc3339),
            name: w.name,
            managed: w.managed,
            pool: w.pool,
            kind: w.kind.map(|k| k.as_str().to_owned()),
            worker_type: w.worker_type,
            size: w.size,
            phase: w.phase,
            failure: w.failure,
            node_ready: w.node_ready,
            cordoned: w.cordoned,
            workload_pods: u64::try_from(w.workload_pods).unwrap_or(u64::MAX),
            vmid: w.vmid,
            host: w.host,
            ip: w.ip,
            requested_by: w.requested_by,
            last_error: w.last_error,
        }
    }
}

/// The result of `list_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerList {
    /// How many workers matched.
    pub count: u64,
    /// The workers, ordered by pool and name.
    pub workers: Vec<WorkerInfo>,
}

/// A worker just requested by `provision_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NewWorker {
    /// The new worker's name (also its future node name).
    pub name: String,
    /// Its lifecycle phase right now, normally `Requested`.
    pub phase: String,
}

/// The result of `provision_workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ActionResult {
    /// The worker acted on.
    pub worker_id: String,
    /// `drain`, `destroy` or `destroy --force`.
    pub action: String,
    /// The worker's lifecycle phase right after the request was accepted,
    /// if it could be read back.
    pub phase: Option<String>,
    /// What happens next.
    pub message: String,
}

/// The result of `extend_ttl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TtlResult {
    /// The worker whose TTL was extended.
    pub worker_id: String,
    /// The new expiry (RFC 3339).
    pub expires_at: String,
    /// The time left until the new expiry, in words.
    pub expires_in: String,
}

/// Why a tool call did not do what was asked: the structured content of
/// every tool error, under the key `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolErrorBody {
    /// A stable category: `invalid` (bad arguments or a request breaking
    /// the limits), `refused` (a safety rule), `not-found`, `failed` (a
    /// provider failed), `timeout`, or `internal`.
    pub category: String,
    /// What went wrong, in one sentence or a `; `-separated list.
    pub message: String,
    /// Every problem found, for `invalid` requests; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The structured content of a tool error: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolErrorContent {
    /// The error.
    pub error: ToolErrorBody,
}

/// `at` as RFC 3339 in UTC, to the second (e.g. `2026-01-01T02:00:00Z`).
pub fn rfc3339(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

/// The time from `now` to `at` in words: `2d 3h`, `3h 59m`, `45m`,
/// `less than a minute`, or `expired 5m ago` once past.
pub fn expires_in(at: Timestamp, now: Timestamp) -> String {
    let secs = at.as_second() - now.as_second();
    if secs < 0 {
        format!("expired {} ago", words(secs.unsigned_abs()))
    } else {
        words(secs.unsigned_abs())
    }
}

fn words(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "less than a minute".to_owned(),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn time_left_reads_as_words_at_every_scale() {
        let now = at(1_000_000);
        assert_eq!(expires_in(at(1_000_030), now), "less than a minute");
        assert_eq!(expires_in(at(1_000_000 + 45 * 60), now), "45m");
        assert_eq!(
            expires_in(at(1_000_000 + 3 * 3600 + 59 * 60), now),
            "3h 59m"
        );
        assert_eq!(
            expires_in(at(1_000_000 + 2 * 86_400 + 3 * 3600), now),
            "2d 3h"
        );
        assert_eq!(expires_in(at(1_000_000 - 300), now), "expired 5m ago");
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_second() {
        let t = Timestamp::new(1_767_225_600, 267_750_639).unwrap();
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
    }
}
