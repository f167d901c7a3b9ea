//! Shared by the end-to-end tests: a lab started in-process with a
//! controller (reconciler and autoscaler) running against it, the lab's
//! clock as the controller's, and small helpers to read what the lab's
//! Kubernetes API holds and to wait for it.
//!
//! Each test file uses the part it needs, so unused helpers are expected.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tidepool_controller::ports::{Clock, Sleep};
use tidepool_controller::service::Service;
use tidepool_core::config::Config;
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_lab_sim::SimClock;
use tidepool_live::connect::{LiveExecutor, LiveOptions, connect};
use tidepool_runtime::run::{RunOptions, run};

/// The claims' API version.
pub const CLAIMS: &str = "tidepool.dev/v1alpha1";

/// The lab's simulated clock as the controller's, so both read the same
/// time and the controller's waits shrink with the lab's scale.
#[derive(Debug)]
pub struct LabClock(pub SimClock);

impl Clock for LabClock {
    fn now(&self) -> Timestamp {
        Timestamp::try_from(self.0.now()).unwrap()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let clock = self.0.clone();
        Box::pin(async move { clock.sleep(d).await })
    }

    fn real(&self, d: Duration) -> Duration {
        self.0.real(d)
    }
}

/// How a controller connects to `lab`: its state directory, its
/// kubeconfig, and its clock.
pub fn live_options(lab: &RunningLab) -> LiveOptions {
    LiveOptions {
        config_dir: lab.files.dir.clone(),
        kubeconfig: Some(lab.files.kubeconfig.clone()),
        clock: Arc::new(LabClock(lab.clock.clone())),
    }
}

/// How a test's lab and controller are set up.
pub struct Setup {
    /// Names the lab's state directory.
    pub name: &'static str,
    /// What the lab simulates.
    pub scenario: Scenario,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// The lab's seed.
    pub seed: u64,
    /// Rewrites the lab's `tidepool.yaml` before it is loaded (pools to add).
    pub yaml: fn(String) -> String,
    /// Adjusts the loaded configuration (TTLs, timeouts the test shortens).
    pub config: fn(&mut Config),
    /// Whether the controller elects itself leader through the Lease (for
    /// tests that fail over to a second controller).
    pub lease: bool,
}

impl Setup {
    /// The default home lab at 1000x with the lab's configuration unchanged.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            scenario: Scenario::default_home_lab().unwrap(),
            time_scale: 1000.0,
            seed: 4,
            yaml: |y| y,
            config: |_| {},
            lease: false,
        }
    }
}

/// The default home lab at `time_scale` with `seed`, and no controller:
/// for tests that drive executors themselves.
pub async fn bare_lab(name: &str, time_scale: f64, seed: u64) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-{name}-{}", std::process::id())),
        time_scale,
        seed,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

/// An executor over `lab` with the lab's configuration, as a freshly
/// started process builds one.
pub async fn lab_executor(lab: &RunningLab) -> LiveExecutor {
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    connect(config, &live_options(lab)).await.unwrap()
}

/// Asks `svc` for one small burst worker on behalf of `who`; its claim's
/// name.
pub async fn provision_one(
    svc: &Service<
        impl tidepool_controller::Hypervisor,
        impl tidepool_controller::Joiner,
        impl tidepool_controller::Nodes,
        impl tidepool_controller::ClaimStore,
    >,
    who: &str,
) -> String {
    svc.provision(&tidepool_controller::service::ProvisionRequest {
        pool: "burst".into(),
        size: Some("small".into()),
        count: 1,
        ttl: None,
        requested_by: who.into(),
        reason: "a lab test".into(),
    })
    .await
    .unwrap()
    .remove(0)
}

/// A running lab with a leading controller that autoscales.
pub struct Live {
    /// The lab.
    pub lab: RunningLab,
    /// The controller's executor (for the service layer and the claim store).
    pub exec: Arc<LiveExecutor>,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// The configuration the controller runs with.
    pub config: Arc<Config>,
    stop: tokio::sync::watch::Sender<bool>,
    controller: tokio::task::JoinHandle<Result<(), tidepool_runtime::RunError>>,
    started: std::time::Instant,
    /// Controllers that led through the Lease so far (0: no election).
    leaders: u32,
}

/// The Lease the controllers of a test elect their leader with; the
/// `n`th controller's identity.
fn lease(n: u32) -> tidepool_runtime::leader::LeaseConfig {
    tidepool_runtime::leader::LeaseConfig {
        namespace: "tidepool-system".into(),
        name: "tidepool-controller".into(),
        identity: format!("controller-{n}"),
        duration: Duration::from_secs(2),
    }
}

/// Starts the lab and a controller with `autoscale: true` and no leader
/// election.
pub async fn start(setup: Setup) -> Live {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = std::time::Instant::now();
    let lab = tidepool_lab::start(LabOptions {
        scenario: setup.scenario,
        state_dir: std::env::temp_dir().join(format!(
            "tidepool-{}-{}",
            setup.name,
            std::process::id()
        )),
        time_scale: setup.time_scale,
        seed: setup.seed,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let text = (setup.yaml)(std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap());
    let mut config = tidepool_core::config::load(&text)
        .unwrap_or_else(|e| panic!("the test's tidepool.yaml is invalid: {e}\n{text}"));
    (setup.config)(&mut config);
    let config = Arc::new(config);
    let exec = Arc::new(connect(config.clone(), &live_options(&lab)).await.unwrap());
    let leaders = u32::from(setup.lease);
    let (stop, controller, metrics_addr) =
        spawn_controller(exec.clone(), setup.lease.then(|| lease(1))).await;
    Live {
        lab,
        exec,
        metrics_addr,
        config,
        stop,
        controller,
        started,
        leaders,
    }
}

/// A controller process over `exec`: its stop switch, its task and
/// where it serves `/metrics`.
async fn spawn_controller(
    exec: Arc<LiveExecutor>,
    lease: Option<tidepool_runtime::leader::LeaseConfig>,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), tidepool_runtime::RunError>>,
    SocketAddr,
) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let controller = tokio::spawn(run(
        exec,
        RunOptions {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            lease,
            autoscale: true,
        },
        stop_rx,
        Some(bound_tx),
    ));
    (stop, controller, bound_rx.await.unwrap())
}

impl Live {
    /// Stops the controller and starts a new one, as a restarted process:
    /// a fresh executor (new caches, nothing remembered in memory) against
    /// the same lab.
    pub async fn restart_controller(&mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.controller).await;
        let exec = Arc::new(
            connect(self.config.clone(), &live_options(&self.lab))
                .await
                .unwrap(),
        );
        let (stop, controller, metrics_addr) = spawn_controller(exec.clone(), None).await;
        self.exec = exec;
        self.stop = stop;
        self.controller = controller;
        self.metrics_addr = metrics_addr;
    }

    /// Fails over to a standby, as a second replica takes over: a new
    /// controller (a fresh executor, nothing in memory) starts as a
    /// candidate for the Lease, the leader stops, and the standby takes
    /// the Lease and leads. Needs a [`Setup`] with `lease`.
    pub async fn fail_over(&mut self) {
        assert!(
            self.leaders > 0,
            "fail_over needs a Setup with `lease: true`"
        );
        let next = self.leaders + 1;
        let exec = Arc::new(
            connect(self.config.clone(), &live_options(&self.lab))
                .await
                .unwrap(),
        );
        let (stop, controller, metrics_addr) =
            spawn_controller(exec.clone(), Some(lease(next))).await;
        let _ = self.stop.send(true);
        let _ = (&mut self.controller).await;
        let identity = format!("controller-{next}");
        let took = eventually(Duration::from_secs(20), || {
            self.lab
                .kube
                .get(
                    "coordination.k8s.io/v1",
                    "Lease",
                    "tidepool-system",
                    "tidepool-controller",
                )
                .ok()
                .is_some_and(|l| l["spec"]["holderIdentity"] == identity.as_str())
        })
        .await;
        assert!(took, "the standby took the Lease");
        self.exec = exec;
        self.stop = stop;
        self.controller = controller;
        self.metrics_addr = metrics_addr;
        self.leaders = next;
    }

    /// The service layer over the controller's executor (what the CLI and
    /// MCP server use).
    pub fn service(
        &self,
    ) -> Service<
        tidepool_live::pve::PveHypervisor,
        tidepool_live::join::LiveJoiner,
        tidepool_live::kube::KubeCluster,
        tidepool_live::kube::KubeCluster,
    > {
        Service::new(self.exec.clone())
    }

    /// Real time since the lab was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every WorkerClaim.
    pub fn claims(&self) -> Vec<Value> {
        self.lab.kube.list(CLAIMS, "WorkerClaim", "", "").unwrap()
    }

    /// One claim, if it still exists.
    pub fn claim(&self, name: &str) -> Option<Value> {
        self.lab.kube.get(CLAIMS, "WorkerClaim", "", name).ok()
    }

    /// The claims of a pool.
    pub fn claims_of(&self, pool: &str) -> Vec<Value> {
        self.claims()
            .into_iter()
            .filter(|c| c["spec"]["pool"] == pool)
            .collect()
    }

    /// A line per claim, for failure messages.
    pub fn dump_claims(&self) -> String {
        let lines: Vec<String> = self
            .claims()
            .iter()
            .map(|c| {
                format!(
                    "  {} pool={} size={} phase={} host={} vmid={} by={} deleting={} error={} reason={}",
                    c["metadata"]["name"].as_str().unwrap_or("?"),
                    c["spec"]["pool"].as_str().unwrap_or("?"),
                    c["spec"]["size"].as_str().unwrap_or("?"),
                    c["status"]["phase"].as_str().unwrap_or("-"),
                    c["status"]["vm"]["node"].as_str().unwrap_or("-"),
                    c["status"]["vmid"],
                    c["spec"]["requestedBy"].as_str().unwrap_or("?"),
                    !c["metadata"]["deletionTimestamp"].is_null(),
                    c["status"]["lastError"].as_str().unwrap_or("-"),
                    c["spec"]["reason"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        if lines.is_empty() {
            "no claims".to_owned()
        } else {
            format!("claims:\n{}", lines.join("\n"))
        }
    }

    /// Pods in `namespace` matching `selector`.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        self.lab
            .kube
            .list("v1", "Pod", namespace, selector)
            .unwrap()
    }

    /// Running pods in `namespace` matching `selector`, with their nodes.
    pub fn running(&self, namespace: &str, selector: &str) -> Vec<(String, String)> {
        self.pods(namespace, selector)
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// A line per pod in `namespace`, for failure messages.
    pub fn dump_pods(&self, namespace: &str) -> String {
        self.pods(namespace, "")
            .iter()
            .map(|p| {
                format!(
                    "  {} phase={} node={} deleting={}",
                    p["metadata"]["name"].as_str().unwrap_or("?"),
                    p["status"]["phase"].as_str().unwrap_or("-"),
                    p["spec"]["nodeName"].as_str().unwrap_or("-"),
                    !p["metadata"]["deletionTimestamp"].is_null()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Names of the cluster's nodes.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.lab
            .kube
            .list("v1", "Node", "", "")
            .unwrap()
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Events in `namespace` as (object name, reason, message).
    pub fn events(&self, namespace: &str) -> Vec<(String, String, String)> {
        self.lab
            .kube
            .list("v1", "Event", namespace, "")
            .unwrap()
            .iter()
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
                (
                    s(&e["involvedObject"]["name"]),
                    s(&e["reason"]),
                    s(&e["message"]),
                )
            })
            .collect()
    }

    /// The messages of the `ScaleDown` Events recorded on `node`.
    pub fn scale_down_events(&self, node: &str) -> Vec<String> {
        self.lab
            .kube
            .list("v1", "Event", "", "")
            .unwrap()
            .iter()
            .filter(|e| {
                e["involvedObject"]["kind"] == "Node"
                    && e["involvedObject"]["name"] == node
                    && e["reason"] == "ScaleDown"
            })
            .map(|e| e["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The controller's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Whether the scaling decisions counter has seen `reason`.
    pub async fn decided(&self, reason: &str) -> bool {
        self.metrics().await.contains(&format!(
            "tidepool_scaling_decisions_total{{reason=\"{reason}\"}}"
        ))
    }

    /// What the planner would decide now, for failure messages.
    pub async fn dump_plan(&self) -> String {
        match tidepool_live::snapshot::plan_input(&self.exec).await {
            Ok(input) => {
                let plan = tidepool_core::planner::plan(&input);
                let hosts: Vec<String> = input
                    .hosts
                    .iter()
                    .map(|h| {
                        format!(
                            "{} memory {}/{} MiB, gpu {:?}",
                            h.name, h.memory_used_mib, h.memory_total_mib, h.gpu_free
                        )
                    })
                    .collect();
                format!(
                    "plan now:\n  hosts: {hosts:?}\n  actions: {:?}\n  unhelpable: {:?}\n  waiting: {:?}\n  held: {:?}\n  deferred: {:?}",
                    plan.actions, plan.unhelpable, plan.waiting, plan.held, plan.deferred
                )
            }
            Err(e) => format!("no plan: {e}"),
        }
    }

    /// Stops the controller and the lab.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.controller.await;
        self.lab.shutdown().await;
    }
}

/// Polls `check` every 20 ms, up to `limit` of real time; true once it holds.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What was seen of each claim while polling: every phase it passed
/// through, every condition it carried, and its latest intent.
#[derive(Debug, Default)]
pub struct Trace {
    /// Phases in the order first seen.
    pub phases: Vec<String>,
    /// Condition types ever seen true.
    pub conditions: BTreeSet<String>,
    /// The latest `spec.intent` (`null` while the worker is kept).
    pub intent: serde_json::Value,
    /// The host of its VM.
    pub host: Option<String>,
}

/// Claim traces by name.
#[derive(Debug, Default)]
pub struct Traces(pub BTreeMap<String, Trace>);

impl Traces {
    /// Records the claims as they are now.
    pub fn observe(&mut self, live: &Live) {
        for c in live.claims() {
            let Some(name) = c["metadata"]["name"].as_str() else {
                continue;
            };
            let t = self.0.entry(name.to_owned()).or_default();
            if let Some(phase) = c["status"]["phase"].as_str()
                && t.phases.last().map(String::as_str) != Some(phase)
            {
                t.phases.push(phase.to_owned());
            }
            for cond in c["status"]["conditions"].as_array().into_iter().flatten() {
                if cond["status"] == "True"
                    && let Some(kind) = cond["type"].as_str()
                {
                    t.conditions.insert(kind.to_owned());
                }
            }
            t.intent = c["spec"]["intent"].clone();
            if let Some(h) = c["status"]["vm"]["node"].as_str() {
                t.host = Some(h.to_owned());
            }
        }
    }

    /// The trace of one claim.
    pub fn of(&self, name: &str) -> &Trace {
        static EMPTY: std::sync::OnceLock<Trace> = std::sync::OnceLock::new();
        self.0
            .get(name)
            .unwrap_or_else(|| EMPTY.get_or_init(Trace::default))
    }
}
