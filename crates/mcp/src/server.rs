//! The MCP server: its tools over the controller's service layer — those
//! that list and change workers (cordon and uncordon among them, and the
//! read-only `get_worker_health`), `scale_up`, the emergency request, and
//! two read-only ones (`capacity_report`, `plan_scaling`); the last three
//! need an observer of the live cluster. A new tool is one more method in the `#[tool_router]`
//! block below and its name in `tidepool_core::config::MCP_TOOLS`.
//!
//! Every tool call runs the service operation in its own task under a
//! deadline. Whatever goes wrong — bad arguments, a safety refusal, an
//! unknown worker, a failing provider, the deadline — comes back as a tool
//! error (`isError: true`, a readable text and `{"error": {...}}` as
//! structured content), never as a protocol error, a crash or a hung call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use tidepool_controller::autoscaler::emergency;
use tidepool_controller::observe::Observe;
use tidepool_controller::ports::GuestOs;
use tidepool_controller::service::{ProvisionRequest, Service, ServiceError, WorkerFilter};
use tidepool_controller::{ClaimStore, Hypervisor, Joiner, Nodes};
use tidepool_core::Phase;
use tidepool_core::planner::{capacity, plan};
use tidepool_core::view::{
    ActionResult, CapacityResult, HealthReport, NewWorker, PlanResult, ProvisionResult, TtlResult,
    WorkerDetails, WorkerList, WorkerPhase,
};
use tracing::warn;

use crate::access::Actor;
use crate::doctor::{DoctorArgs, DoctorPort, DoctorResult};
use crate::failure::{ToolFailure, tool_name};
use crate::types::{
    CapacityArgs, DestroyArgs, ExtendTtlArgs, HealthArgs, ListWorkersArgs, PlanArgs, ProvisionArgs,
    ScaleUpArgs, ScaleUpResult, WorkerIdArgs,
};

/// How long a tool call may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server tells an agent when it connects.
pub const INSTRUCTIONS: &str = "\
Tidepool manages elastic Kubernetes worker pools on Proxmox VE. Use \
list_workers to see the workers and their state, get_worker_details for one \
worker, get_worker_health for the workers' problems, repairs and next \
repairs, provision_workers to add temporary capacity (it returns at once; the \
controller clones, boots and joins the VMs over the next minutes, so poll \
get_worker_details until the phase is Ready), extend_ttl to keep a worker \
longer, cordon_worker and uncordon_worker to stop or allow new pods on a \
node, drain_worker to move its pods away, and destroy_worker to remove a \
drained worker; scale_up is the emergency request that acts on waiting pods \
now, within the pools' limits. For planning, capacity_report shows the room left on every \
Proxmox host (memory, vCPU, storage, GPU devices, VMIDs) and in every pool's \
limits, how many more workers of each size fit and which dimension runs out \
first, and what adding or removing one worker would change; plan_scaling \
shows what the autoscaler would do now and why (a dry run that changes \
nothing). Both observe the live cluster. Safety rules are enforced \
server-side and never relaxed: permanent workers, nodes Tidepool did not \
create and names matching a protected pattern (e.g. control-plane nodes) \
can never be drained or destroyed; destroying needs a drained worker unless \
force is set; a request adds 1 to 10 workers with a TTL of 1 to 168 hours \
within the pool's limits. A refused or failed operation comes back as a \
tool error whose structured content is {\"error\": {\"category\", \"message\"}}.";

/// Workers per `list_workers` page unless the agent asks otherwise.
pub const DEFAULT_PAGE: u32 = 100;

/// The most workers one `list_workers` page holds.
pub const MAX_PAGE: u32 = 500;

/// The requester recorded when the client did not say who it is.
const ANONYMOUS: &str = "mcp";

/// Tidepool's MCP server over a [`Service`] with ports `H`, `J`, `N`, `S`,
/// and optionally an [`Observe`] for the capacity report and the plan.
pub struct TidepoolMcp<H, J, N, S> {
    service: Arc<Service<H, J, N, S>>,
    observer: Option<Arc<dyn Observe>>,
    doctor: Option<Arc<dyn DoctorPort>>,
    timeout: Duration,
    tool_router: ToolRouter<Self>,
}

impl<H, J, N, S> Clone for TidepoolMcp<H, J, N, S> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            observer: self.observer.clone(),
            doctor: self.doctor.clone(),
            timeout: self.timeout,
            tool_router: self.tool_router.clone(),
        }
    }
}

impl<H, J, N, S> std::fmt::Debug for TidepoolMcp<H, J, N, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TidepoolMcp")
            .field("timeout", &self.timeout)
            .field("observes", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Who a request comes from: the [`Actor`] the access layer set (the
/// bearer token's name over HTTP), else `mcp:<client name>` when the client
/// named itself, else `mcp`.
pub(crate) fn requester(ctx: &RequestContext<RoleServer>) -> String {
    if let Some(Actor(actor)) = ctx.extensions.get::<Actor>() {
        return actor.clone();
    }
    ctx.client_info()
        .map(|info| info.name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .map_or_else(
            || ANONYMOUS.to_owned(),
            |name| format!("{ANONYMOUS}:{name}"),
        )
}

impl<H, J, N, S> TidepoolMcp<H, J, N, S>
where
    H: Hypervisor + 'static,
    J: Joiner + GuestOs + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    /// A server over `service`, with the default deadline of 30 s per call.
    pub fn new(service: Arc<Service<H, J, N, S>>) -> Self {
        Self {
            service,
            observer: None,
            doctor: None,
            timeout: DEFAULT_TIMEOUT,
            tool_router: Self::tool_router(),
        }
    }

    /// The tools this server offers, as `tools/list` shows them; known
    /// without a service, so a front-end can list them before it connects.
    pub fn tools() -> Vec<Tool> {
        Self::tool_router().list_all()
    }

    /// Lets `capacity_report` and `plan_scaling` observe the world through
    /// `observer`; without one they answer with an `unavailable` tool error.
    pub fn with_observer(mut self, observer: Arc<dyn Observe>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Lets `run_doctor` run the setup's checks through `doctor`; without
    /// one it answers with an `unavailable` tool error.
    pub fn with_doctor(mut self, doctor: Arc<dyn DoctorPort>) -> Self {
        self.doctor = Some(doctor);
        self
    }

    /// Sets how long one tool call may take before it is answered with a
    /// `timeout` tool error.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of one tool call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `op` in its own task under the deadline.
    ///
    /// # Guarantees
    /// An operation that outlives the deadline is not cancelled half-way:
    /// it runs on to completion (and is audited by the service) while the
    /// caller gets a `timeout` error telling it to check before retrying.
    async fn run<T, F>(&self, tool: &'static str, op: F) -> Result<T, ToolFailure>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
    {
        let task = tokio::spawn(op);
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(ToolFailure::from_service(tool, &e)),
            Ok(Err(join)) => {
                warn!(tool, error = %join, "tool task ended abnormally");
                Err(ToolFailure::new(
                    tool,
                    "internal",
                    "the operation ended abnormally; check the server's log".to_owned(),
                    Vec::new(),
                ))
            }
            Err(_) => {
                warn!(tool, timeout = ?self.timeout, "tool call timed out");
                Err(ToolFailure::new(
                    tool,
                    "timeout",
                    format!(
                        "no answer within {}s; the operation continues in the background and \
                         may still take effect, so check with list_workers or \
                         get_worker_details before retrying",
                        self.timeout.as_secs_f64()
                    ),
                    Vec::new(),
                ))
            }
        }
    }

    /// Runs `op` on the service as `tool` does: in its own task under the
    /// deadline (see [`Self::run`]), a failure as the tool's error result.
    async fn call<T, F, Fut>(&self, tool: &'static str, op: F) -> Result<T, CallToolResult>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Service<H, J, N, S>>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>> + Send + 'static,
    {
        self.run(tool, op(Arc::clone(&self.service)))
            .await
            .map_err(ToolFailure::into_result)
    }

    /// The answer to a change of one worker requested by `action`, with the
    /// phase the worker is in now.
    async fn acted(&self, worker_id: String, action: &str, message: String) -> Json<ActionResult> {
        Json(ActionResult {
            phase: self.phase_of(&worker_id).await,
            message,
            worker_id,
            action: action.to_owned(),
        })
    }

    /// The observer, or the `unavailable` tool error for `tool`.
    fn observer(&self, tool: &'static str) -> Result<Arc<dyn Observe>, ToolFailure> {
        self.observer.clone().ok_or_else(|| {
            ToolFailure::new(
                tool,
                "unavailable",
                "this server has no connection to observe the cluster and the \
                 hypervisor; run it as `tidepool mcp` against a live cluster"
                    .to_owned(),
                Vec::new(),
            )
        })
    }

    /// The current phase of a worker, read back after a change.
    async fn phase_of(&self, id: &str) -> Option<WorkerPhase> {
        let service = Arc::clone(&self.service);
        let id = id.to_owned();
        self.run("phase", async move { service.get_worker(&id).await })
            .await
            .ok()
            .map(|w| w.phase)
    }

    /// Cordons or uncordons a worker for `cordon_worker` and
    /// `uncordon_worker`.
    async fn set_cordon(
        &self,
        ctx: &RequestContext<RoleServer>,
        worker_id: String,
        cordon: bool,
    ) -> Result<Json<ActionResult>, CallToolResult> {
        let (tool, action) = if cordon {
            ("cordon_worker", "cordon")
        } else {
            ("uncordon_worker", "uncordon")
        };
        let actor = requester(ctx);
        let id = worker_id.clone();
        self.call(tool, |service| async move {
            service.set_cordon(&actor, &id, cordon).await
        })
        .await?;
        let message = if cordon {
            format!("`{worker_id}` is cordoned: no new pods are scheduled on it")
        } else {
            format!("`{worker_id}` is schedulable again")
        };
        Ok(self.acted(worker_id, action, message).await)
    }

    fn now(&self) -> jiff::Timestamp {
        self.service.executor().now()
    }
}

#[tool_router]
impl<H, J, N, S> TidepoolMcp<H, J, N, S>
where
    H: Hypervisor + 'static,
    J: Joiner + GuestOs + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    #[tool(
        description = "List the cluster's workers: Tidepool-managed VMs (with \
        their lifecycle phase, VM id, host, IP, TTL expiry and last error) and \
        the other nodes of the cluster (shown as unmanaged). Filter by worker \
        type (permanent, temporary, preemptible, all) and by pool. Long \
        lists come in pages of `limit` workers (default 100): pass the \
        answer's next_cursor as `cursor` for the next page. Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_workers(
        &self,
        Parameters(args): Parameters<ListWorkersArgs>,
    ) -> Result<Json<WorkerList>, CallToolResult> {
        let start = match args.cursor.as_deref().map(str::parse::<usize>) {
            None => 0,
            Some(Ok(start)) => start,
            Some(Err(_)) => {
                return Err(ToolFailure::new(
                    "list_workers",
                    "invalid",
                    "unknown cursor: pass the next_cursor of an earlier answer".to_owned(),
                    Vec::new(),
                )
                .into_result());
            }
        };
        let limit = args.limit.map_or(DEFAULT_PAGE, |l| l.clamp(1, MAX_PAGE)) as usize;
        let filter = WorkerFilter {
            worker_type: args.type_filter.worker_type(),
            pool: args.pool,
        };
        let workers = self
            .call("list_workers", |service| async move {
                service.list_workers(&filter).await
            })
            .await?;
        Ok(Json(WorkerList::page(workers, start, limit)))
    }

    #[tool(
        description = "Show one worker by name (its Kubernetes node name): \
        managed or not, pool, kind, size, lifecycle phase and failure, node \
        readiness and conditions, cordon state, workload pods, VM id, host, \
        IP, TTL expiry, who requested it and its last error; its health \
        (current problems since when, the latest repair, the next action) \
        and its Talos services (kubelet, containerd: state, health, \
        failures since boot). Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_worker_details(
        &self,
        Parameters(args): Parameters<WorkerIdArgs>,
    ) -> Result<Json<WorkerDetails>, CallToolResult> {
        let details = self
            .call("get_worker_details", |service| async move {
                let id = args.worker_id;
                let worker = service.get_worker(&id).await?;
                if !worker.managed {
                    return Ok(WorkerDetails {
                        worker,
                        health: None,
                        services: None,
                    });
                }
                let health = service.worker_health(Some(&id)).await?.pop();
                let services = service.worker_services(&id).await?;
                Ok(WorkerDetails {
                    worker,
                    health,
                    services,
                })
            })
            .await?;
        Ok(Json(details))
    }

    #[tool(
        description = "Show the health of every managed worker, or of one \
        (worker_id): its current problems (NotReady, MemoryPressure, \
        DiskPressure, PIDPressure, NetworkUnavailable, kubelet or \
        containerd crash loops) and since when, the latest repair with its \
        attempt and outcome, whether it was escalated, and the next action \
        of the repair matrix (restart-kubelet, reboot, drain-reboot, \
        free-disk, replace, escalate) with when it falls due and why, the \
        brakes applied as the controller applies them. Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_worker_health(
        &self,
        Parameters(args): Parameters<HealthArgs>,
    ) -> Result<Json<HealthReport>, CallToolResult> {
        let workers = self
            .call("get_worker_health", |service| async move {
                service.worker_health(args.worker_id.as_deref()).await
            })
            .await?;
        Ok(Json(HealthReport { workers }))
    }

    #[tool(
        description = "Request new workers in a pool. Returns at once with \
        the new worker names in phase Requested; the controller then clones, \
        boots and joins each VM (about 2-3 minutes), so poll \
        get_worker_details until the phase is Ready. Rules: count 1-10 per \
        request, ttl_hours 1-168 (not for permanent pools), size offered by \
        the pool, and the pool's node/CPU/memory limits must hold counting \
        workers already on their way; an invalid request lists every problem \
        and creates nothing.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn provision_workers(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ProvisionArgs>,
    ) -> Result<Json<ProvisionResult>, CallToolResult> {
        let requested_by = requester(&ctx);
        let request = ProvisionRequest {
            pool: args.pool.clone(),
            size: args.size,
            count: args.count,
            ttl: args
                .ttl_hours
                .map(|h| Duration::from_secs(u64::from(h) * 3600)),
            requested_by: requested_by.clone(),
            reason: args
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "requested through MCP".to_owned()),
        };
        let names = self
            .call("provision_workers", |service| async move {
                service.provision(&request).await
            })
            .await?;
        let mut workers = Vec::with_capacity(names.len());
        for name in names {
            let phase = self
                .phase_of(&name)
                .await
                .unwrap_or(WorkerPhase::Managed(Phase::Requested));
            workers.push(NewWorker { name, phase });
        }
        Ok(Json(ProvisionResult {
            pool: args.pool,
            requested_by,
            message: format!(
                "{} worker(s) requested; the controller provisions them in the \
                 background (about 2-3 minutes each). Poll get_worker_details \
                 until the phase is Ready.",
                workers.len()
            ),
            workers,
        }))
    }

    #[tool(
        description = "Cordon a worker and evict its pods (respecting \
        PodDisruptionBudgets; DaemonSet pods stay). The worker stays, drained, \
        until destroyed. Refused for permanent workers, for nodes Tidepool \
        did not create and for names matching a protected pattern (e.g. \
        control-plane nodes). Returns once the drain is requested; poll \
        get_worker_details to see it cordoned with no workload pods left.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn drain_worker(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<WorkerIdArgs>,
    ) -> Result<Json<ActionResult>, CallToolResult> {
        let actor = requester(&ctx);
        let id = args.worker_id.clone();
        self.call("drain_worker", |service| async move {
            service.drain(&actor, &id).await
        })
        .await?;
        let message = format!(
            "drain of `{}` requested; the controller cordons the node and \
             evicts its pods. Destroy it once get_worker_details shows it \
             cordoned with 0 workload pods.",
            args.worker_id
        );
        Ok(self.acted(args.worker_id, "drain", message).await)
    }

    #[tool(
        description = "Remove a worker: its node is deleted and its VM stopped \
        and deleted. Only managed, non-permanent workers can be destroyed: \
        permanent workers, nodes Tidepool did not create and names matching a \
        protected pattern (e.g. control-plane nodes) are always refused, even \
        with force. The worker must be drained first (cordoned, no workload \
        pods) unless force is true, which evicts its pods without waiting for \
        a drain. Returns once removal is requested; it completes in the \
        background.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn destroy_worker(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<DestroyArgs>,
    ) -> Result<Json<ActionResult>, CallToolResult> {
        let actor = requester(&ctx);
        let (id, force) = (args.worker_id.clone(), args.force);
        self.call("destroy_worker", |service| async move {
            service.destroy(&actor, &id, force).await
        })
        .await?;
        let message = format!(
            "removal of `{}` requested; the controller deletes the node, \
             then stops and deletes the VM. The worker disappears from \
             list_workers when done.",
            args.worker_id
        );
        let action = if force { "destroy --force" } else { "destroy" };
        Ok(self.acted(args.worker_id, action, message).await)
    }

    #[tool(
        description = "Extend a temporary worker's time to live by a number \
        of hours (1-168), counted from its current expiry; the worker may not \
        end up with more than 168 hours left. Refused for workers without a \
        TTL (permanent or unmanaged ones) and for protected names.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn extend_ttl(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ExtendTtlArgs>,
    ) -> Result<Json<TtlResult>, CallToolResult> {
        let actor = requester(&ctx);
        let (id, hours) = (args.worker_id.clone(), args.hours);
        let expiry = self
            .call("extend_ttl", |service| async move {
                service.extend_ttl(&actor, &id, hours).await
            })
            .await?;
        Ok(Json(TtlResult::new(args.worker_id, expiry, self.now())))
    }

    #[tool(
        description = "Mark a worker's node unschedulable: running pods stay, \
        new pods go elsewhere. Works on nodes Tidepool did not create too, \
        but never on names matching a protected pattern (e.g. control-plane \
        nodes). Undo with uncordon_worker.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cordon_worker(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<WorkerIdArgs>,
    ) -> Result<Json<ActionResult>, CallToolResult> {
        self.set_cordon(&ctx, args.worker_id, true).await
    }

    #[tool(
        description = "Mark a worker's node schedulable again (undoes \
        cordon_worker). Never on names matching a protected pattern.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn uncordon_worker(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<WorkerIdArgs>,
    ) -> Result<Json<ActionResult>, CallToolResult> {
        self.set_cordon(&ctx, args.worker_id, false).await
    }

    #[tool(
        description = "An emergency scale-up: plan now for the pods waiting \
        on the given pools (every pool when none is given), skipping the \
        autoscaler's trigger windows but never the pools' limits or the \
        hosts' room, and request the workers the plan asks for. Returns the \
        workers requested and the plan with its reasons, including the \
        pending pods no worker can help and why.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn scale_up(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ScaleUpArgs>,
    ) -> Result<Json<ScaleUpResult>, CallToolResult> {
        let observer = self
            .observer("scale_up")
            .map_err(ToolFailure::into_result)?;
        let config = self.service.executor().config();
        let unknown: Vec<String> = args
            .pools
            .iter()
            .filter(|p| config.pool(p).is_none())
            .map(|p| format!("unknown pool `{p}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(
                ToolFailure::new("scale_up", "invalid", unknown.join("; "), unknown).into_result(),
            );
        }
        let pools = if args.pools.is_empty() {
            config.pools.iter().map(|p| p.name.clone()).collect()
        } else {
            args.pools
        };
        let requested_by = requester(&ctx);
        let actor = requested_by.clone();
        let service = Arc::clone(&self.service);
        let (plan, created) = self
            .run("scale_up", async move {
                let (input, plan, created) =
                    emergency(&service, observer.as_ref(), &pools, &actor).await?;
                Ok::<_, ServiceError>((PlanResult::new(&input, &plan), created))
            })
            .await
            .map_err(ToolFailure::into_result)?;
        Ok(Json(ScaleUpResult {
            created,
            requested_by,
            plan,
        }))
    }

    #[tool(
        description = "Report the capacity left for workers (spec section 5): \
        per Proxmox host the memory free above its reserve, vCPUs left under \
        the overcommit ratio, free GiB per storage and free GPU devices per \
        mapping; VMIDs left per provider; per pool the limits left (maxNodes, \
        cpuCores, memoryMiB, counting workers on their way) and, per size, \
        how many more workers fit on each host and in total and which \
        dimension runs out first; and what-ifs: the host the planner would \
        pick for one more worker of each size and the room left after, and \
        what removing one existing worker would free. Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn capacity_report(
        &self,
        Parameters(args): Parameters<CapacityArgs>,
    ) -> Result<Json<CapacityResult>, CallToolResult> {
        let observer = self
            .observer("capacity_report")
            .map_err(ToolFailure::into_result)?;
        if let Some(pool) = &args.pool {
            let known = self.service.executor().config().pool(pool).is_some();
            if !known {
                return Err(ToolFailure::new(
                    "capacity_report",
                    "invalid",
                    format!("unknown pool `{pool}`"),
                    Vec::new(),
                )
                .into_result());
            }
        }
        let report = self
            .run("capacity_report", async move {
                let input = observer.plan_input().await?;
                Ok::<_, ServiceError>(capacity::report(&input))
            })
            .await
            .map_err(ToolFailure::into_result)?;
        Ok(Json(CapacityResult::new(report, args.pool.as_deref())))
    }

    #[tool(
        description = "Show what the autoscaler would do now, as a dry run \
        that changes nothing: the workers it would provision (pool, size, \
        host, count) or remove, each with a reason code and the figures that \
        decided; pending pods it cannot help and why (a pool limit or a host \
        dimension); pods waiting for a trigger window or the next batch; \
        workers kept despite qualifying for removal; and pool triggers that \
        wait or are blocked. Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn plan_scaling(
        &self,
        Parameters(PlanArgs {}): Parameters<PlanArgs>,
    ) -> Result<Json<PlanResult>, CallToolResult> {
        let observer = self
            .observer("plan_scaling")
            .map_err(ToolFailure::into_result)?;
        let service = Arc::clone(&self.service);
        let result = self
            .run("plan_scaling", async move {
                let mut input = observer.plan_input().await?;
                // The windows and idle times the controller keeps.
                tidepool_controller::autoscaler::with_stored_timers(
                    service.executor().store(),
                    &mut input,
                )
                .await?;
                Ok::<_, ServiceError>(PlanResult::new(&input, &plan(&input)))
            })
            .await
            .map_err(ToolFailure::into_result)?;
        Ok(Json(result))
    }

    #[tool(
        description = "Check every precondition of the configured setup, \
        read-only (tidepool doctor): the configuration and its secrets (never \
        shown), the Proxmox API and TLS, the token's privileges on each ACL \
        path, each pool's templates (a template, guest agent on, disk, storage \
        room), GPU pools' PCI mappings, the VMID range, the Kubernetes API, \
        the WorkerClaim CRD version, RBAC for every verb Tidepool uses, and \
        the join. Each check passes, warns or fails with the fix. Read-only.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn run_doctor(
        &self,
        Parameters(DoctorArgs {}): Parameters<DoctorArgs>,
    ) -> Result<Json<DoctorResult>, CallToolResult> {
        let unavailable = |message: String| ToolFailure::unavailable("run_doctor", message);
        let doctor = self.doctor.clone().ok_or_else(|| {
            unavailable("this server cannot run the doctor; run `tidepool doctor`".to_owned())
                .into_result()
        })?;
        match tokio::time::timeout(self.timeout, doctor.run()).await {
            Ok(Ok(result)) => Ok(Json(result)),
            Ok(Err(why)) => Err(unavailable(why).into_result()),
            Err(_) => Err(unavailable(format!(
                "the checks did not finish within {}s",
                self.timeout.as_secs()
            ))
            .into_result()),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl<H, J, N, S> ServerHandler for TidepoolMcp<H, J, N, S>
where
    H: Hypervisor + 'static,
    J: Joiner + GuestOs + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    fn get_info(&self) -> ServerConfig {
        server_info()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        let response = self
            .tool_router
            .call(ToolCallContext::new(self, request, context))
            .await?;
        Ok(match response {
            // Arguments that do not match the schema: rmcp answers with a
            // text-only tool error; give it the same structure as ours.
            CallToolResponse::Complete(result)
                if result.is_error == Some(true) && result.structured_content.is_none() =>
            {
                let message = result
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" ");
                let tool = tool_name(&name);
                ToolFailure::new(tool, "invalid", message, Vec::new())
                    .into_result()
                    .into()
            }
            other => other,
        })
    }
}

/// What the server says about itself at `initialize`: its name, version,
/// capabilities (tools) and [`INSTRUCTIONS`]; the same whether or not a
/// service is connected yet.
pub fn server_info() -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(
            Implementation::new("tidepool", env!("CARGO_PKG_VERSION"))
                .with_title("Tidepool")
                .with_description(
                    "Elastic Kubernetes worker pools on Proxmox VE: list, \
                     provision, drain, destroy and extend workers; report \
                     capacity and plan scaling.",
                ),
        )
        .with_instructions(INSTRUCTIONS)
}
