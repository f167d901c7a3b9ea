//! The arguments and results of the MCP tools, as JSON-schema'd types.
//!
//! Argument types derive `Deserialize` and `JsonSchema`; their doc comments
//! become the parameter descriptions an agent reads. Result types derive
//! `Serialize` and `JsonSchema` and become each tool's output schema. Every
//! timestamp is an RFC 3339 string; nothing here ever carries a secret.
//!
//! The plan ([`PlanResult`]) and the capacity report ([`CapacityResult`])
//! are also what `tidepool plan` and `tidepool capacity` print with
//! `-o json|yaml`, so an agent and a script read the same document.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidepool_controller::service::WorkerView;
use tidepool_core::planner::capacity::CapacityReport;
use tidepool_core::planner::{Action, Plan, PlanInput};
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

/// Arguments of `capacity_report`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityArgs {
    /// Only this pool's figures and what-ifs (e.g. `burst`); hosts,
    /// providers and the cluster are always reported.
    #[serde(default)]
    pub pool: Option<String>,
}

/// Arguments of `plan_scaling`: none.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("properties" = {}))]
pub struct PlanArgs {}

/// One action of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedAction {
    /// `provision`, `remove` (an idle worker, at once) or
    /// `drain-and-remove`.
    pub action: String,
    /// Pool.
    pub pool: String,
    /// Size of the new workers (provision only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Proxmox host of the new workers (provision only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How many new workers (provision only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The worker to remove (remove only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// A stable reason code, e.g. `pending-pods`, `ttl-expired-idle`.
    pub reason: String,
    /// Why, with the figures that decided.
    pub message: String,
}

/// A pod and why it waits or cannot be helped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodReason {
    /// `namespace/name`.
    pub pod: String,
    /// The pool that will host it (waiting pods only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A stable reason code: the limit or dimension that blocks it, or what
    /// it waits for.
    pub reason: String,
    /// Why, with the figures.
    pub message: String,
}

/// A worker that qualifies for removal but is kept, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldWorker {
    /// Worker name.
    pub worker: String,
    /// The rule it qualified under, e.g. `idle-timeout`.
    pub wanted: String,
    /// What holds it, as a reason code.
    pub reason: String,
    /// Why, with the figures.
    pub message: String,
}

/// A pool-level trigger that fired but waits or is blocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeferredTrigger {
    /// Pool.
    pub pool: String,
    /// The trigger, e.g. `scheduled`, `cpu-pressure`.
    pub wanted: String,
    /// What stops it, as a reason code.
    pub reason: String,
    /// Why, with the figures.
    pub message: String,
}

/// What the autoscaler would do now (a dry run; nothing is changed): the
/// result of `plan_scaling` and the document `tidepool plan -o json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanResult {
    /// When the plan was made (RFC 3339).
    pub at: String,
    /// Unschedulable pods seen.
    pub pending_pods: u64,
    /// New workers the plan asks for, over every pool.
    pub nodes_requested: u32,
    /// Actions, scale-up first.
    pub actions: Vec<PlannedAction>,
    /// Pending pods no action helps now, and why.
    pub unhelpable: Vec<PodReason>,
    /// Pending pods a pool will host once its trigger fires or the next
    /// batch starts.
    pub waiting: Vec<PodReason>,
    /// Workers kept despite qualifying for removal.
    pub held: Vec<HeldWorker>,
    /// Pool-level triggers (schedule, pressure, utilization) that wait or
    /// are blocked.
    pub deferred: Vec<DeferredTrigger>,
}

impl PlanResult {
    /// The document of `plan`, made from `input`.
    pub fn new(input: &PlanInput, plan: &Plan) -> Self {
        let actions = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Provision {
                    pool,
                    size,
                    host,
                    count,
                    reason,
                } => PlannedAction {
                    action: "provision".to_owned(),
                    pool: pool.clone(),
                    size: Some(size.clone()),
                    host: Some(host.clone()),
                    count: Some(*count),
                    worker: None,
                    reason: reason.code.as_str().to_owned(),
                    message: reason.message.clone(),
                },
                Action::Remove {
                    worker,
                    pool,
                    drain,
                    reason,
                } => PlannedAction {
                    action: if *drain { "drain-and-remove" } else { "remove" }.to_owned(),
                    pool: pool.clone(),
                    size: None,
                    host: None,
                    count: None,
                    worker: Some(worker.clone()),
                    reason: reason.code.as_str().to_owned(),
                    message: reason.message.clone(),
                },
            })
            .collect();
        Self {
            at: rfc3339(input.now),
            pending_pods: input.pending.len() as u64,
            nodes_requested: plan.nodes_requested(),
            actions,
            unhelpable: plan
                .unhelpable
                .iter()
                .map(|u| PodReason {
                    pod: u.pod.clone(),
                    pool: None,
                    reason: u.reason.code.as_str().to_owned(),
                    message: u.reason.message.clone(),
                })
                .collect(),
            waiting: plan
                .waiting
                .iter()
                .map(|w| PodReason {
                    pod: w.pod.clone(),
                    pool: Some(w.pool.clone()),
                    reason: w.reason.code.as_str().to_owned(),
                    message: w.reason.message.clone(),
                })
                .collect(),
            held: plan
                .held
                .iter()
                .map(|h| HeldWorker {
                    worker: h.worker.clone(),
                    wanted: h.wanted.as_str().to_owned(),
                    reason: h.reason.code.as_str().to_owned(),
                    message: h.reason.message.clone(),
                })
                .collect(),
            deferred: plan
                .deferred
                .iter()
                .map(|d| DeferredTrigger {
                    pool: d.pool.clone(),
                    wanted: d.wanted.as_str().to_owned(),
                    reason: d.reason.code.as_str().to_owned(),
                    message: d.reason.message.clone(),
                })
                .collect(),
        }
    }
}

/// The capacity report (spec §5): the result of `capacity_report` and the
/// document `tidepool capacity -o json` prints. It serializes exactly as
/// the planner's [`CapacityReport`], and its JSON schema is the one core
/// derives from the report's doc comments (feature `schemars`).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct CapacityResult(pub CapacityReport);

impl CapacityResult {
    /// The report, keeping only `pool`'s figures and what-ifs when given.
    pub fn new(mut report: CapacityReport, pool: Option<&str>) -> Self {
        if let Some(pool) = pool {
            report.pools.retain(|p| p.name == pool);
            report.what_if.add.retain(|a| a.pool == pool);
            report.what_if.remove.retain(|r| r.pool == pool);
        }
        Self(report)
    }
}

/// Why a tool call did not do what was asked: the structured content of
/// every tool error, under the key `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolErrorBody {
    /// A stable category: `invalid` (bad arguments or a request breaking
    /// the limits), `refused` (a safety rule), `not-found`, `failed` (a
    /// provider failed), `unavailable` (the server cannot observe the
    /// cluster), `timeout`, or `internal`.
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
