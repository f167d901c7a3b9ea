//! What is particular to the MCP tools: their arguments and the body of a
//! tool error, as JSON-schema'd types.
//!
//! Argument types derive `Deserialize` and `JsonSchema`; their doc comments
//! become the parameter descriptions an agent reads. The tools' results are
//! the views both front-ends print, [`tidepool_core::view`]; their schemas
//! come from there (core's `schemars` feature).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidepool_core::pool::WorkerType;
use tidepool_core::view::PlanResult;

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
    /// At most this many workers per answer, 1 to 500 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// Where to go on: the `next_cursor` of the previous answer.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Arguments naming one worker.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerIdArgs {
    /// The worker's name, which is also its Kubernetes node name
    /// (e.g. `burst-x7k2q`), as shown by `list_workers`.
    pub worker_id: String,
}

/// Arguments of `get_worker_health`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthArgs {
    /// Only this worker (e.g. `burst-x7k2q`); every managed worker when
    /// omitted.
    #[serde(default)]
    pub worker_id: Option<String>,
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

/// Arguments of `capacity_report`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityArgs {
    /// Only this pool's figures and what-ifs (e.g. `burst`); hosts,
    /// providers and the cluster are always reported.
    #[serde(default)]
    pub pool: Option<String>,
}

/// Arguments of `scale_up`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleUpArgs {
    /// The pools to scale (e.g. `["burst"]`); every pool when omitted or
    /// empty.
    #[serde(default)]
    pub pools: Vec<String>,
}

/// What `scale_up` did: the workers requested, and the plan behind them.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ScaleUpResult {
    /// The workers requested (their names), empty when none were needed or
    /// none could be helped.
    pub created: Vec<String>,
    /// Who the request is recorded as.
    pub requested_by: String,
    /// The plan, restricted to the chosen pools' scale-up: what it asked
    /// for and why, and the pending pods it cannot help.
    pub plan: PlanResult,
}

/// Arguments of `plan_scaling`: none.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("properties" = {}))]
pub struct PlanArgs {}

/// Why a tool call did not do what was asked: the structured content of
/// every tool error, under the key `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolErrorBody {
    /// A stable category: `invalid` (bad arguments or a request breaking
    /// the limits), `refused` (a safety rule, a token's scope, read-only
    /// mode, the tool allowlist or a declined confirmation), `not-found`,
    /// `failed` (a provider failed), `unavailable` (the server cannot
    /// observe the cluster), `timeout`, `too-large` (the answer is over the
    /// size cap), or `internal`.
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
