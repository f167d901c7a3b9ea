//! The plan and capacity views: what the autoscaler would do now and why
//! (`plan_scaling`, `tidepool plan`), and the room left for workers
//! (`capacity_report`, `tidepool capacity`), so an agent and a script read
//! the same document.

use serde::{Deserialize, Serialize};

use crate::planner::capacity::CapacityReport;
use crate::planner::{Action, Plan, PlanInput};

use super::rfc3339;

/// One action of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
/// the planner's [`CapacityReport`], and its JSON schema is the one
/// derived from the report's doc comments (feature `schemars`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
