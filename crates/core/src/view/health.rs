//! The health views: each worker's health as the monitor keeps it on its
//! claim (current problems and since when, the latest repair, the next
//! action of the repair matrix with the brakes applied), what `tidepool
//! health -o json` prints and the MCP `get_worker_health` tool answers; and
//! one service of a worker's OS as `get_worker_details` shows it.
//!
//! Written in camelCase like the claim's health record it is made from.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::duration::Human;
use crate::health::{self, HealthRecord, Repair, WorkerInput};
use crate::lifecycle::Phase;

/// One current problem of a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProblemView {
    /// `NotReady`, `MemoryPressure`, `DiskPressure`, `PIDPressure`,
    /// `NetworkUnavailable`, `KubeletCrashLoop` or `ContainerdCrashLoop`.
    pub problem: String,
    /// When it started (RFC 3339).
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub since: Timestamp,
    /// How long it has lasted, in words (`7m`).
    pub lasted: String,
}

/// The next action the repair matrix plans for a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NextView {
    /// `restart-kubelet`, `reboot`, `drain-reboot`, `free-disk`, `replace`
    /// or `escalate`.
    pub action: String,
    /// The problem it is for.
    pub problem: String,
    /// When it falls due (RFC 3339).
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub at: Timestamp,
    /// Why this action: `matrix`, `retry`, `replace-not-allowed`,
    /// `repairs-disabled`, `too-many-unhealthy` or `waiting-for-slot`.
    pub why: String,
}

/// One managed worker's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkerHealth {
    /// The worker (its node's name).
    pub worker: String,
    /// Its pool.
    pub pool: String,
    /// Its lifecycle phase.
    pub phase: String,
    /// Its current problems; empty when healthy.
    pub problems: Vec<ProblemView>,
    /// The latest repair, kept after its problem cleared.
    pub last_repair: Option<Repair>,
    /// Repairs started over the worker's life.
    pub repairs: u32,
    /// When the current trouble was escalated to a person (RFC 3339).
    #[cfg_attr(feature = "schemars", schemars(with = "Option<String>"))]
    pub escalated_at: Option<Timestamp>,
    /// The next action and when; null when there is nothing to do.
    pub next: Option<NextView>,
}

/// The answer of `get_worker_health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct HealthReport {
    /// Each managed worker asked about, by name.
    pub workers: Vec<WorkerHealth>,
}

/// One service of a worker's operating system (Talos' ServiceList).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct ServiceState {
    /// The service (`kubelet`, `containerd`, ...).
    pub id: String,
    /// Its state (`Running`, `Failed`, `Finished`, ...).
    pub state: String,
    /// Whether its health check passes; null when unknown.
    pub healthy: Option<bool>,
    /// How many times it failed since boot.
    pub failures: u32,
}

/// One worker in detail (`get_worker_details`): the worker with its node's
/// conditions, its health as the monitor records it, and its OS services.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct WorkerDetails {
    /// The worker, with its node in detail (conditions among them).
    #[serde(flatten)]
    pub worker: super::WorkerInfo,
    /// Its health: current problems and since when, the latest repair,
    /// the next action; null for a worker Tidepool does not manage.
    pub health: Option<WorkerHealth>,
    /// Its OS services (Talos' kubelet, containerd, ...) with state,
    /// health and failures since boot; null when unmanaged, without an
    /// address yet, or when the machine does not answer.
    pub services: Option<Vec<ServiceState>>,
}

/// One worker as the health view takes it from its claim.
#[derive(Clone, Copy, Debug)]
pub struct HealthSubject<'a> {
    /// The worker.
    pub name: &'a str,
    /// Its pool.
    pub pool: &'a str,
    /// Its phase.
    pub phase: Phase,
    /// Its health record.
    pub record: &'a HealthRecord,
}

/// The health of `workers` at `now`, the next actions planned as the
/// controller plans them; `cluster` is the (unhealthy, total) node count
/// the cluster-wide brake looks at.
pub fn worker_health(
    config: &Config,
    workers: &[HealthSubject<'_>],
    cluster: (usize, usize),
    now: Timestamp,
) -> Vec<WorkerHealth> {
    let inputs: Vec<WorkerInput<'_>> = workers
        .iter()
        .filter_map(|w| {
            let pool = config.pool(w.pool)?;
            Some(WorkerInput {
                name: w.name,
                pool: &pool.name,
                kind: pool.kind,
                control_plane: false,
                record: w.record,
                policy: &pool.repair,
            })
        })
        .collect();
    let decisions = health::plan(&inputs, cluster, now);
    workers
        .iter()
        .map(|w| {
            let h = w.record;
            let next = decisions
                .iter()
                .find(|d| d.worker == w.name)
                .map(|d| NextView {
                    action: d.next.action.to_string(),
                    problem: d.next.problem.to_string(),
                    at: d.next.at,
                    why: d.next.why.as_str().to_owned(),
                });
            WorkerHealth {
                worker: w.name.to_owned(),
                pool: w.pool.to_owned(),
                phase: w.phase.to_string(),
                problems: h
                    .problems
                    .iter()
                    .map(|(p, since)| ProblemView {
                        problem: p.to_string(),
                        since: *since,
                        lasted: Human(now.duration_since(*since).unsigned_abs()).to_string(),
                    })
                    .collect(),
                last_repair: h.last_repair.clone(),
                repairs: h.repairs,
                escalated_at: h.escalated_at,
                next,
            }
        })
        .collect()
}
