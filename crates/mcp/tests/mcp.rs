//! The MCP server seen by a real MCP client: the rmcp client talks to it
//! over an in-process duplex pipe (initialize → tools/list → tools/call),
//! against the controller's service over the fake world, with a background
//! executor carrying the requested changes out. The capacity report and
//! the plan read a hand-built observation of a two-host home lab.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tidepool_controller::observe::{Observation, Observe};
use tidepool_controller::service::Service;
use tidepool_controller::testing::Fake;
use tidepool_controller::{
    Claim, ClaimStatus, ClaimStore, Executor, Hypervisor, Joiner, Nodes, ProviderError,
    ProviderErrorKind,
};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::conventions::TaintEffect;
use tidepool_core::lifecycle::Phase;
use tidepool_core::planner::hosts::HostSnapshot;
use tidepool_core::planner::{ClaimState, PendingPod, PlanInput};
use tidepool_core::pool::PoolKind;
use tidepool_core::sched::{NodeSnapshot, PodSpec, Requests, Toleration, TolerationOperator};
use tidepool_core::view::{
    ActionResult, PlanResult, ProvisionResult, TtlResult, WorkerInfo, WorkerList, WorkerPhase,
    rfc3339,
};
use tidepool_mcp::TidepoolMcp;

/// 2026-01-01T00:00:00Z, the fixed time of the fake world.
const NOW: i64 = 1_767_225_600;

type Client = RunningService<RoleClient, ClientConfig>;

fn executor<S: ClaimStore>(fake: &Fake, store: S) -> Arc<Executor<Fake, Fake, Fake, S>> {
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let now = Arc::new(tidepool_controller::testing::ManualClock::at(now()));
    Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        store,
        config,
        now,
    ))
}

/// Runs the executor on every claim, over and over, like the controller.
fn spawn_controller<H, J, N, S>(fake: &Fake, exec: Arc<Executor<H, J, N, S>>)
where
    H: Hypervisor + 'static,
    J: Joiner + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    let fake = fake.clone();
    tokio::spawn(async move {
        loop {
            let names: Vec<String> = fake.world().claims.keys().cloned().collect();
            for name in names {
                let _ = exec
                    .run_until_idle(&name, Duration::from_millis(20), Duration::from_millis(1))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Starts `server` on one end of a duplex pipe and connects a client
/// calling itself `test-agent` to the other.
async fn connect<H, J, N, S>(server: TidepoolMcp<H, J, N, S>) -> Client
where
    H: Hypervisor + 'static,
    J: Joiner + tidepool_controller::ports::GuestOs + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    let (server_end, client_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { tidepool_mcp::serve(server, server_end).await });
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("test-agent", "1.0.0"),
    )
    .serve(client_end)
    .await
    .unwrap()
}

/// A client for a server over the fake world with a running controller.
async fn agent(fake: &Fake) -> Client {
    let exec = executor(fake, fake.clone());
    spawn_controller(fake, Arc::clone(&exec));
    connect(TidepoolMcp::new(Arc::new(Service::new(exec)))).await
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool} answered with a protocol error: {e}"))
}

/// The structured result of a successful call.
async fn ok<T: serde::de::DeserializeOwned>(client: &Client, tool: &str, args: Value) -> T {
    let result = call(client, tool, args).await;
    assert_ne!(result.is_error, Some(true), "{tool} failed: {result:?}");
    serde_json::from_value(result.structured_content.expect("structured content")).unwrap()
}

/// The text and the `error` object of a failed call.
async fn tool_error(client: &Client, tool: &str, args: Value) -> (String, Value) {
    let result = call(client, tool, args).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should fail: {result:?}"
    );
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    let mut structured = result.structured_content.expect("structured error");
    (text, structured["error"].take())
}

/// Polls a worker until `done` holds (the controller works in the background).
async fn wait_for(client: &Client, id: &str, done: impl Fn(&WorkerInfo) -> bool) -> WorkerInfo {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let w: WorkerInfo = ok(client, "get_worker_details", json!({"worker_id": id})).await;
            if done(&w) {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("worker {id} never reached the expected state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_introduces_itself_and_lists_its_annotated_tools() {
    let client = agent(&Fake::new()).await;
    let info = client.peer_info().unwrap();
    let server = info.server_info.as_ref().unwrap();
    assert_eq!(server.name, "tidepool");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    let instructions = info.instructions.as_deref().unwrap();
    for tool in ["destroy_worker", "capacity_report", "plan_scaling"] {
        assert!(instructions.contains(tool), "{tool}");
    }

    let mut tools = client.list_tools(None).await.unwrap().tools;
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "capacity_report",
            "cordon_worker",
            "destroy_worker",
            "drain_worker",
            "extend_ttl",
            "get_worker_details",
            "get_worker_health",
            "list_workers",
            "plan_scaling",
            "provision_workers",
            "run_doctor",
            "scale_up",
            "uncordon_worker",
        ]
    );
    let mut known: Vec<&str> = tidepool_core::config::MCP_TOOLS.to_vec();
    known.sort_unstable();
    assert_eq!(names, known, "the configuration's tool names");
    for t in &tools {
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
        assert!(t.input_schema.contains_key("properties"), "{}", t.name);
        let output = t.output_schema.as_ref().expect("output schema");
        assert_eq!(output.get("type"), Some(&json!("object")), "{}", t.name);
        assert!(t.description.as_ref().is_some_and(|d| d.len() > 80));
    }
    let destroy = &tools[2];
    assert!(destroy.description.as_ref().unwrap().contains("force"));
    for t in &tools {
        let hints = t.annotations.as_ref().unwrap();
        let read_only = hints.read_only_hint.expect("readOnlyHint");
        let destructive = hints.destructive_hint.expect("destructiveHint");
        assert!(hints.idempotent_hint.is_some(), "{} idempotentHint", t.name);
        let reads = [
            "capacity_report",
            "get_worker_details",
            "get_worker_health",
            "list_workers",
            "plan_scaling",
            "run_doctor",
        ];
        assert_eq!(read_only, reads.contains(&t.name.as_ref()), "{}", t.name);
        let destroys = ["destroy_worker", "drain_worker"];
        assert_eq!(
            destructive,
            destroys.contains(&t.name.as_ref()),
            "{}",
            t.name
        );
    }
    insta::assert_json_snapshot!("tools", tools);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_provisions_inspects_extends_drains_and_destroys_burst_workers() {
    let fake = Fake::new();
    fake.add_foreign_node(
        "k8s-node1",
        &[("node-pool", "permanent"), ("worker-type", "permanent")],
    );
    let client = agent(&fake).await;

    // Provision: answered at once, the names in phase Requested.
    let provisioned: ProvisionResult = ok(
        &client,
        "provision_workers",
        json!({"count": 2, "pool": "burst", "size": "medium", "ttl_hours": 2, "reason": "CI backlog"}),
    )
    .await;
    assert_eq!(provisioned.pool, "burst");
    assert_eq!(provisioned.requested_by, "mcp:test-agent");
    assert_eq!(provisioned.workers.len(), 2);
    let names: Vec<String> = provisioned.workers.iter().map(|w| w.name.clone()).collect();
    for w in &provisioned.workers {
        assert!(w.name.starts_with("burst-"), "{}", w.name);
        assert!(
            ["Requested", "Provisioning", "Joining", "Ready"].contains(&w.phase.as_str()),
            "{}",
            w.phase
        );
    }
    assert_eq!(
        fake.world().claims[&names[0]].spec.requested_by,
        "mcp:test-agent"
    );
    assert_eq!(fake.world().claims[&names[0]].spec.reason, "CI backlog");

    // The controller brings them to Ready; details show the whole record.
    for name in &names {
        let w = wait_for(&client, name, |w| w.phase == Phase::Ready).await;
        assert!(w.managed);
        assert_eq!(w.kind.map(PoolKind::as_str), Some("burst"));
        assert_eq!(w.worker_type, "temporary");
        assert_eq!(w.size.as_deref(), Some("medium"));
        assert_eq!(w.node_ready, Some(true));
        assert!(w.vmid.is_some() && w.host.is_some() && w.ip.is_some());
        assert_eq!(
            w.expires_at.map(rfc3339).as_deref(),
            Some("2026-01-01T02:00:00Z")
        );
        assert_eq!(w.expires_in.as_deref(), Some("2h 0m"));
        assert_eq!(w.requested_by.as_deref(), Some("mcp:test-agent"));
        assert_eq!(w.last_error, None);
    }

    // List: filtered by type and by pool, and everything.
    let temporary: WorkerList =
        ok(&client, "list_workers", json!({"type_filter": "temporary"})).await;
    assert_eq!(temporary.count, 2);
    let listed: Vec<&str> = temporary.workers.iter().map(|w| w.name.as_str()).collect();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    let burst: WorkerList = ok(&client, "list_workers", json!({"pool": "burst"})).await;
    assert_eq!(burst.count, 2);
    let all: WorkerList = ok(&client, "list_workers", json!({})).await;
    assert_eq!(all.count, 3);
    let node1 = all.workers.iter().find(|w| w.name == "k8s-node1").unwrap();
    assert!(!node1.managed);
    assert_eq!(node1.phase, WorkerPhase::Unmanaged);
    let permanent: WorkerList =
        ok(&client, "list_workers", json!({"type_filter": "permanent"})).await;
    assert_eq!(permanent.count, 1);

    // Extend the TTL of the first by two hours.
    let extended: TtlResult = ok(
        &client,
        "extend_ttl",
        json!({"worker_id": names[0], "hours": 2}),
    )
    .await;
    assert_eq!(rfc3339(extended.expires_at), "2026-01-01T04:00:00Z");
    assert_eq!(extended.expires_in, "4h 0m");
    let w = wait_for(&client, &names[0], |_| true).await;
    assert_eq!(
        w.expires_at.map(rfc3339).as_deref(),
        Some("2026-01-01T04:00:00Z")
    );

    // Pods land on both; destroying one that is not drained is refused.
    for name in &names {
        fake.world().nodes.get_mut(name).unwrap().pods = 4;
    }
    let (text, error) = tool_error(&client, "destroy_worker", json!({"worker_id": names[0]})).await;
    assert_eq!(error["category"], "refused");
    assert!(text.contains("drain it first or pass force"), "{text}");

    // Drain, then destroy once drained.
    let drained: ActionResult = ok(&client, "drain_worker", json!({"worker_id": names[0]})).await;
    assert_eq!(drained.action, "drain");
    assert_eq!(drained.worker_id, names[0]);
    wait_for(&client, &names[0], |w| w.cordoned && w.workload_pods == 0).await;
    let destroyed: ActionResult =
        ok(&client, "destroy_worker", json!({"worker_id": names[0]})).await;
    assert_eq!(destroyed.action, "destroy");

    // The other one, forced without a drain.
    let forced: ActionResult = ok(
        &client,
        "destroy_worker",
        json!({"worker_id": names[1], "force": true}),
    )
    .await;
    assert_eq!(forced.action, "destroy --force");

    // Both disappear; only the unmanaged node is left, and no VM.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let all: WorkerList = ok(&client, "list_workers", json!({"type_filter": "all"})).await;
            if all.count == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("destroyed workers disappear from the list");
    assert!(fake.world().vms.is_empty());
    let (_, error) = tool_error(
        &client,
        "get_worker_details",
        json!({"worker_id": names[0]}),
    )
    .await;
    assert_eq!(error["category"], "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_a_sick_workers_health_conditions_and_talos_services() {
    use tidepool_controller::ports::GuestService;
    use tidepool_core::health::Problem;

    let fake = Fake::new();
    let client = agent(&fake).await;
    let provisioned: ProvisionResult = ok(
        &client,
        "provision_workers",
        json!({"count": 1, "pool": "burst", "size": "small", "ttl_hours": 2, "reason": "health"}),
    )
    .await;
    let name = provisioned.workers[0].name.clone();
    wait_for(&client, &name, |w| w.phase == Phase::Ready).await;

    // The node went NotReady ten minutes ago and kubelet keeps failing; the
    // monitor recorded the window and a kubelet restart on the claim.
    let since = now() - jiff::SignedDuration::from_mins(10);
    {
        let mut w = fake.world();
        let ip = w.claims[&name].status.ip.unwrap();
        w.guest.services.insert(
            ip,
            vec![GuestService {
                id: "kubelet".into(),
                state: "Failed".into(),
                healthy: Some(false),
                failures: 2,
            }],
        );
        let health = &mut w.claims.get_mut(&name).unwrap().status.health;
        health.problems.insert(Problem::NotReady, since);
        health.start(
            tidepool_core::health::Action::RestartKubelet,
            Problem::NotReady,
            since,
        );
        health.finish(tidepool_core::health::Outcome::Done, None, since);
    }

    let report: Value = ok(&client, "get_worker_health", json!({})).await;
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{report}");
    let one: Value = ok(&client, "get_worker_health", json!({"worker_id": name})).await;
    let h = &one["workers"][0];
    assert_eq!(h["worker"], name.as_str());
    assert_eq!(h["problems"][0]["problem"], "NotReady");
    assert_eq!(h["lastRepair"]["action"], "RestartKubelet");
    assert!(h["next"]["action"].is_string(), "the next repair: {h}");
    let (_, error) = tool_error(&client, "get_worker_health", json!({"worker_id": "nobody"})).await;
    assert_eq!(error["category"], "not-found");

    let details: Value = ok(&client, "get_worker_details", json!({"worker_id": name})).await;
    assert_eq!(
        details["name"],
        name.as_str(),
        "the worker's fields stay at the top"
    );
    assert_eq!(details["health"]["problems"][0]["problem"], "NotReady");
    let kubelet = &details["services"][0];
    assert_eq!(
        (
            kubelet["id"].as_str(),
            kubelet["state"].as_str(),
            kubelet["failures"].as_u64()
        ),
        (Some("kubelet"), Some("Failed"), Some(2)),
        "{details}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_unmanaged_or_protected_nodes_returns_tool_errors_naming_the_rule() {
    let fake = Fake::new();
    fake.add_foreign_node("k8s-node2", &[("worker-type", "permanent")]);
    fake.add_foreign_node("control-plane-1", &[]);
    let client = agent(&fake).await;

    let (text, error) = tool_error(
        &client,
        "destroy_worker",
        json!({"worker_id": "k8s-node2", "force": true}),
    )
    .await;
    assert_eq!(
        text,
        "destroy_worker failed (refused): refusing to destroy `k8s-node2`: it is not managed by Tidepool"
    );
    assert_eq!(error["category"], "refused");
    assert_eq!(
        error["message"],
        "refusing to destroy `k8s-node2`: it is not managed by Tidepool"
    );

    let (text, error) = tool_error(
        &client,
        "destroy_worker",
        json!({"worker_id": "control-plane-1", "force": true}),
    )
    .await;
    assert!(
        text.contains("protected pattern `^control-plane-.*`"),
        "{text}"
    );
    assert_eq!(error["category"], "refused");

    let (text, _) = tool_error(
        &client,
        "drain_worker",
        json!({"worker_id": "control-plane-1"}),
    )
    .await;
    assert!(text.contains("protected pattern"), "{text}");
    let (_, error) = tool_error(
        &client,
        "extend_ttl",
        json!({"worker_id": "k8s-node2", "hours": 1}),
    )
    .await;
    assert_eq!(error["category"], "refused");
    let (_, error) = tool_error(&client, "destroy_worker", json!({"worker_id": "nope"})).await;
    assert_eq!(error["category"], "not-found");

    // Nothing was touched.
    assert_eq!(fake.world().nodes.len(), 2);
    assert!(fake.world().claims.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_provision_lists_every_problem_and_creates_nothing() {
    let fake = Fake::new();
    let client = agent(&fake).await;
    let result = call(
        &client,
        "provision_workers",
        json!({"count": 11, "pool": "brust", "ttl_hours": 200}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    insta::assert_json_snapshot!("invalid_provision", result);
    let (text, error) = tool_error(
        &client,
        "provision_workers",
        json!({"count": 11, "pool": "brust", "ttl_hours": 200}),
    )
    .await;
    assert_eq!(error["category"], "invalid");
    assert_eq!(
        error["problems"],
        json!([
            "count must be between 1 and 10, got 11",
            "ttl must be between 1h and 168h, got 8d8h",
            "unknown pool `brust`, did you mean `burst`?",
        ])
    );
    for problem in error["problems"].as_array().unwrap() {
        assert!(text.contains(problem.as_str().unwrap()), "{text}");
    }
    assert!(fake.world().claims.is_empty());

    let (_, error) = tool_error(
        &client,
        "extend_ttl",
        json!({"worker_id": "x", "hours": 500}),
    )
    .await;
    assert_eq!(error["category"], "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_that_break_the_schema_are_tool_errors_not_protocol_errors() {
    let client = agent(&Fake::new()).await;
    for (tool, args) in [
        (
            "provision_workers",
            json!({"count": "two", "pool": "burst"}),
        ),
        ("provision_workers", json!({"count": -1, "pool": "burst"})),
        ("provision_workers", json!({"pool": "burst"})),
        ("list_workers", json!({"type_filter": "everything"})),
        ("destroy_worker", json!({"worker_id": "x", "forse": true})),
        ("extend_ttl", json!({"worker_id": "x"})),
    ] {
        let (text, error) = tool_error(&client, tool, args).await;
        assert_eq!(error["category"], "invalid", "{tool}: {text}");
        assert!(
            text.starts_with(&format!("{tool} failed (invalid)")),
            "{text}"
        );
    }
}

/// A claim store that answers only after a delay, while one is set.
#[derive(Clone)]
struct SlowStore {
    inner: Fake,
    delay: Arc<Mutex<Option<Duration>>>,
}

impl SlowStore {
    async fn pause(&self) {
        let delay = *self.delay.lock().unwrap();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
}

impl tidepool_controller::ports::PoolRecords for SlowStore {
    async fn read_pool(
        &self,
        pool: &str,
    ) -> tidepool_controller::ports::ProviderResult<tidepool_controller::ports::VersionedRecord>
    {
        self.inner.read_pool(pool).await
    }

    async fn write_pool(
        &self,
        pool: &str,
        record: &tidepool_core::pool_record::PoolRecord,
        version: Option<&str>,
    ) -> tidepool_controller::ports::ProviderResult<()> {
        self.inner.write_pool(pool, record, version).await
    }
}

impl ClaimStore for SlowStore {
    async fn list(&self) -> tidepool_controller::ports::ProviderResult<Vec<Claim>> {
        self.pause().await;
        ClaimStore::list(&self.inner).await
    }

    async fn create(&self, claim: &Claim) -> tidepool_controller::ports::ProviderResult<()> {
        self.pause().await;
        self.inner.create(claim).await
    }

    async fn update(&self, claim: &Claim) -> tidepool_controller::ports::ProviderResult<()> {
        self.pause().await;
        self.inner.update(claim).await
    }

    async fn get(&self, name: &str) -> tidepool_controller::ports::ProviderResult<Option<Claim>> {
        self.pause().await;
        self.inner.get(name).await
    }

    async fn save_status(
        &self,
        name: &str,
        status: &ClaimStatus,
    ) -> tidepool_controller::ports::ProviderResult<()> {
        self.inner.save_status(name, status).await
    }

    async fn remove_finalizer(&self, name: &str) -> tidepool_controller::ports::ProviderResult<()> {
        self.inner.remove_finalizer(name).await
    }

    async fn add_finalizer(&self, name: &str) -> tidepool_controller::ports::ProviderResult<()> {
        self.inner.add_finalizer(name).await
    }

    async fn audit(&self, claim: &str, entry: &tidepool_controller::ports::AuditEntry) {
        self.inner.audit(claim, entry).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_operation_answers_with_a_timeout_error_and_the_server_keeps_answering() {
    let fake = Fake::new();
    let delay = Arc::new(Mutex::new(Some(Duration::from_secs(3600))));
    let store = SlowStore {
        inner: fake.clone(),
        delay: Arc::clone(&delay),
    };
    let server = TidepoolMcp::new(Arc::new(Service::new(executor(&fake, store))))
        .with_timeout(Duration::from_millis(200));
    assert_eq!(server.timeout(), Duration::from_millis(200));
    let client = connect(server).await;

    let (text, error) = tool_error(&client, "list_workers", json!({})).await;
    assert_eq!(error["category"], "timeout");
    assert!(text.contains("no answer within 0.2s"), "{text}");
    let (_, error) = tool_error(
        &client,
        "provision_workers",
        json!({"count": 1, "pool": "burst"}),
    )
    .await;
    assert_eq!(error["category"], "timeout");

    *delay.lock().unwrap() = None;
    let all: WorkerList = ok(&client, "list_workers", json!({})).await;
    assert_eq!(all.count, 0);
}

/// 2026-01-01T00:00:00Z as a timestamp.
fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

/// An observer that always sees the same world.
struct Fixed(PlanInput);

impl Observe for Fixed {
    fn plan_input(&self) -> Observation<'_> {
        let input = self.0.clone();
        Box::pin(async move { Ok(input) })
    }
}

/// An observer whose cluster never answers.
struct Unreachable;

impl Observe for Unreachable {
    fn plan_input(&self) -> Observation<'_> {
        Box::pin(async {
            Err(ProviderError::new(
                ProviderErrorKind::Transient,
                "the node and pod caches are not synced: timed out",
            ))
        })
    }
}

fn host(
    name: &str,
    memory_mib: u64,
    used_mib: u64,
    cores: u32,
    vcpus: u64,
    disk_gib: u64,
) -> HostSnapshot {
    HostSnapshot {
        name: name.into(),
        provider: "pve".into(),
        online: true,
        memory_total_mib: memory_mib,
        memory_used_mib: used_mib,
        cores,
        vcpus_allocated: vcpus,
        storage_free_gib: BTreeMap::from([("local-lvm".into(), disk_gib)]),
        gpu_free: BTreeMap::new(),
        vms: BTreeMap::new(),
        templates: tidepool_core::config::load(tidepool_core::config::EXAMPLE)
            .unwrap()
            .templates(),
    }
}

fn ready(name: &str, pool: &str, size: &str, host: &str) -> ClaimState {
    ClaimState {
        name: name.into(),
        pool: pool.into(),
        size: size.into(),
        phase: Phase::Ready,
        removing: false,
        host: Some(host.into()),
        expires_at: None,
        idle_since: None,
    }
}

/// The example configuration over a home lab: pve-01 (192 GiB, 32 cores,
/// 96 GiB and 24 vCPUs taken, 2600 GiB of local-lvm, its T4 in use by
/// another VM) and pve-02 (128 GiB, 24 cores, 68 GiB and 18 vCPUs taken,
/// 1200 GiB); three permanent medium workers and one small burst worker
/// running one pod.
fn home_lab() -> PlanInput {
    let config = config::load(EXAMPLE).unwrap();
    let mut pve01 = host("pve-01", 196_608, 98_304, 32, 24, 2600);
    pve01.gpu_free.insert("tesla-t4".into(), 0);
    let pve02 = host("pve-02", 131_072, 69_632, 24, 18, 1200);
    let mut nodes = Vec::new();
    let mut claims = Vec::new();
    for (name, on) in [
        ("permanent-1", "pve-01"),
        ("permanent-2", "pve-02"),
        ("permanent-3", "pve-02"),
    ] {
        nodes.push(NodeSnapshot::hypothetical(
            &config,
            config.pool("permanent").unwrap(),
            config.size("medium").unwrap(),
            name,
            now(),
        ));
        claims.push(ready(name, "permanent", "medium", on));
    }
    let mut burst = NodeSnapshot::hypothetical(
        &config,
        config.pool("burst").unwrap(),
        config.size("small").unwrap(),
        "burst-q7x2k",
        now(),
    );
    burst.bind(&ci_pod("ci-0"), true);
    nodes.push(burst);
    claims.push(ready("burst-q7x2k", "burst", "small", "pve-02"));
    PlanInput {
        config,
        nodes,
        pending: Vec::new(),
        claims,
        hosts: vec![pve01, pve02],
        vmids_in_use: BTreeMap::from([("pve".into(), BTreeSet::from([100, 101, 200, 1250]))]),
        pool_state: BTreeMap::new(),
        now: now(),
    }
}

/// A CI job for the burst pool: 3 CPUs, 6 GiB.
fn ci_pod(name: &str) -> PodSpec {
    PodSpec {
        namespace: "ci".into(),
        name: name.into(),
        requests: Requests {
            cpu_milli: 3000,
            memory_bytes: 6 << 30,
            ..Requests::default()
        },
        node_selector: Arc::new(BTreeMap::from([("node-pool".into(), "burst".into())])),
        tolerations: Arc::new(vec![Toleration {
            key: "workload-type".into(),
            operator: TolerationOperator::Equal,
            value: "burst".into(),
            effect: Some(TaintEffect::NoSchedule),
        }]),
        ..PodSpec::default()
    }
}

/// A client for a server over the fake world that observes `observer`.
async fn observing(observer: Arc<dyn Observe>) -> Client {
    let fake = Fake::new();
    let exec = executor(&fake, fake.clone());
    connect(TidepoolMcp::new(Arc::new(Service::new(exec))).with_observer(observer)).await
}

/// Every key of `value` is a property of `schema` and every property is
/// present, every scalar has one of the schema's types, all the way down.
fn assert_described(value: &Value, schema: &Value, path: &str) {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        other => panic!("{path}: the schema names no type: {other}"),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.contains(&kind) || (kind == "integer" && types.contains(&"number")),
        "{path}: {kind} is not one of {types:?}"
    );
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let keys: BTreeSet<&String> = map.keys().collect();
                let described: BTreeSet<&String> = props.keys().collect();
                assert_eq!(keys, described, "{path}: keys and schema properties differ");
                for (k, v) in map {
                    assert!(
                        props[k]["description"].is_string(),
                        "{path}.{k} has no description"
                    );
                    assert_described(v, &props[k], &format!("{path}.{k}"));
                }
            } else {
                let inner = &schema["additionalProperties"];
                for (k, v) in map {
                    assert_described(v, inner, &format!("{path}.{k}"));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                assert_described(v, &schema["items"], &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_how_much_room_the_hosts_and_pools_have_left() {
    let client = observing(Arc::new(Fixed(home_lab()))).await;
    let result = call(&client, "capacity_report", json!({})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let report = result.structured_content.unwrap();

    // Hosts: memory above the 4 GiB reserve, vCPUs under the 4× overcommit.
    let pve01 = &report["hosts"][0];
    assert_eq!(pve01["name"], "pve-01");
    assert_eq!(pve01["memory_free_mib"], 196_608 - 98_304 - 4096);
    assert_eq!(pve01["vcpus_left"], 32.0 * 4.0 - 24.0);
    assert_eq!(pve01["storage_free_gib"]["local-lvm"], 2600);
    assert_eq!(pve01["gpu_free"]["tesla-t4"], 0);
    let pve02 = &report["hosts"][1];
    assert_eq!(pve02["memory_free_mib"], 131_072 - 69_632 - 4096);
    assert_eq!(pve02["vcpus_left"], 24.0 * 4.0 - 18.0);
    // 1250 is taken: 50 VMIDs of 1250–1300 left.
    assert_eq!(report["providers"][0]["vmids_left"], 50);
    // Three medium nodes and one small one.
    assert_eq!(report["cluster"]["nodes"], 4);
    assert_eq!(report["cluster"]["cpu_milli"], 3 * 7800 + 3800);
    assert_eq!(report["cluster"]["requested_cpu_milli"], 3000);

    let pool = |name: &str| {
        report["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let size = |pool: &Value, name: &str| {
        pool["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["size"] == name)
            .unwrap()
            .clone()
    };
    // permanent: 3 of 6 workers, so 3 more medium ones, though the hosts
    // hold 5 + 3 (16896 MiB each).
    let permanent = pool("permanent");
    assert_eq!(permanent["limits"]["nodes"], 3);
    assert_eq!(permanent["limits"]["nodes_left"], 3);
    let medium = size(&permanent, "medium");
    assert_eq!(medium["on_hosts"], 8);
    assert_eq!(
        (medium["fits"].clone(), medium["binding"].clone()),
        (json!(3), json!("limit-max-nodes"))
    );
    // burst: one small worker uses 4 of 64 cores; large VMs (33280 MiB)
    // run out of host memory first: 2 on pve-01, 1 on pve-02.
    let burst = pool("burst");
    assert_eq!(burst["limits"]["cpu_cores_left"], 60);
    assert_eq!(burst["limits"]["memory_mib_left"], 131_072 - 8192);
    let large = size(&burst, "large");
    assert_eq!(large["hosts"][0]["by_memory"], 2);
    assert_eq!(large["hosts"][1]["by_memory"], 1);
    assert_eq!(large["within_limits"], 3);
    assert_eq!(
        (large["fits"].clone(), large["binding"].clone()),
        (json!(3), json!("limit-cpu-cores"))
    );
    let small = size(&burst, "small");
    assert_eq!(
        (small["fits"].clone(), small["binding"].clone()),
        (json!(9), json!("limit-max-nodes"))
    );
    // gpu: the T4 is in use.
    let gpu = size(&pool("gpu"), "gpu");
    assert_eq!(
        (gpu["fits"].clone(), gpu["binding"].clone()),
        (json!(0), json!("host-gpu"))
    );

    // What-ifs: a small burst worker goes to the host with the most memory.
    let add = report["what_if"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pool"] == "burst" && a["size"] == "small")
        .unwrap();
    assert_eq!(add["host"], "pve-01");
    assert_eq!(add["host_after"]["memory_free_mib"], 94_208 - 8704);
    assert_eq!(add["limits_after"]["nodes_left"], 8);
    assert_eq!(add["cluster_after"]["cpu_milli"], 3 * 7800 + 2 * 3800);
    let refused = report["what_if"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pool"] == "gpu")
        .unwrap();
    assert_eq!(refused["refused"]["code"], "host-gpu");
    let remove = report["what_if"]["remove"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pool"] == "burst")
        .unwrap();
    assert_eq!(remove["worker"], "burst-q7x2k");
    assert_eq!(remove["workload_pods"], 1);
    assert_eq!(remove["host_after"]["memory_free_mib"], 57_344 + 8704);

    // The output schema describes every field the report has.
    let tools = client.list_tools(None).await.unwrap().tools;
    let tool = tools.iter().find(|t| t.name == "capacity_report").unwrap();
    let schema = Value::Object((*tool.output_schema.clone().unwrap()).clone());
    assert_described(&report, &schema, "report");

    // One pool only.
    let only: Value = ok(&client, "capacity_report", json!({"pool": "gpu"})).await;
    assert_eq!(only["pools"].as_array().unwrap().len(), 1);
    assert_eq!(only["hosts"].as_array().unwrap().len(), 2);
    assert!(
        only["what_if"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["pool"] == "gpu")
    );
    let (_, error) = tool_error(&client, "capacity_report", json!({"pool": "brust"})).await;
    assert_eq!(error["category"], "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sees_the_scale_up_waiting_pods_would_get_with_reasons() {
    let mut world = home_lab();
    world.pending = (1..=6)
        .map(|i| PendingPod {
            pod: ci_pod(&format!("ci-{i}")),
            unschedulable_since: Timestamp::from_second(NOW - 300).unwrap(),
        })
        .collect();
    let client = observing(Arc::new(Fixed(world.clone()))).await;
    let plan: PlanResult = ok(&client, "plan_scaling", json!({})).await;
    assert_eq!(plan.pending_pods, 6);
    assert_eq!(plan.at, "2026-01-01T00:00:00Z");
    assert!(plan.nodes_requested > 0, "{plan:?}");
    let first = &plan.actions[0];
    assert_eq!(first.action, "provision");
    assert_eq!(first.pool, "burst");
    assert_eq!(first.reason, "pending-pods");
    assert!(
        first.message.contains("waited 120s or more"),
        "{}",
        first.message
    );
    // Exactly the planner's answer, as `tidepool plan -o json` prints it.
    let direct = PlanResult::new(&world, &tidepool_core::planner::plan(&world));
    assert_eq!(plan, direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_plan_without_an_observer_or_a_reachable_cluster_are_tool_errors() {
    let client = agent(&Fake::new()).await;
    for tool in ["capacity_report", "plan_scaling"] {
        let (text, error) = tool_error(&client, tool, json!({})).await;
        assert_eq!(error["category"], "unavailable", "{tool}");
        assert!(
            text.starts_with(&format!("{tool} failed (unavailable)")),
            "{text}"
        );
        assert!(text.contains("tidepool mcp"), "{text}");
    }

    let client = observing(Arc::new(Unreachable)).await;
    for tool in ["capacity_report", "plan_scaling"] {
        let (text, error) = tool_error(&client, tool, json!({})).await;
        assert_eq!(error["category"], "failed", "{tool}");
        assert!(text.contains("caches are not synced"), "{text}");
    }
    let (_, error) = tool_error(&client, "plan_scaling", json!({"dry_run": false})).await;
    assert_eq!(error["category"], "invalid");
}
