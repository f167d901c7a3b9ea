//! `tidepool run`: the controller process. It competes for leadership with
//! a Lease, drives every WorkerClaim through its lifecycle while it leads
//! (and reconciles VMs against claims both ways), and serves `/healthz`, `/readyz` and `/metrics`.
//!
//! Fencing: the moment leadership drops, the reconciler (with every claim
//! drive in flight) and the autoscaler are aborted, not merely told to
//! start nothing new. The health address is bound before the Lease is
//! competed for, and on the way out the work stops before the Lease is
//! released.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::health::{Readiness, probe_proxmox};
use crate::leader::{self, LeaseConfig};
use tidepool_controller::autoscaler::{Autoscaler, Timing};
use tidepool_controller::health::{HealthMetrics, Monitor, MonitorTiming};
use tidepool_controller::ports::ClaimStore;
use tidepool_controller::ports::ScalingMetrics;
use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions, StepMetrics};
use tidepool_controller::sweep::{self, SweepMetrics, Sweeper};
use tidepool_live::{LiveExecutor, LiveObserver, LiveService};

/// Labels of the workers gauge: bounded by the configured pools and the
/// eight lifecycle phases.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct WorkerLabels {
    pool: String,
    phase: String,
}

/// A reason-code label (a fixed set of codes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// An error-category label (a fixed set of categories).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: String,
}

/// A failed step with its error category (both fixed sets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
    category: String,
}

/// A pool label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

/// A pool and a health problem (the configured pools, seven problems).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct UnhealthyLabels {
    pool: String,
    condition: String,
}

/// A repair action and its result (fixed sets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    action: String,
    result: String,
}

/// Sets every gauge of `family` named in `values`, then removes the label
/// sets it set last time that are gone now.
fn replace_gauges<L, N, A>(
    family: &Family<L, Gauge<N, A>>,
    last: &std::sync::Mutex<BTreeSet<L>>,
    values: BTreeMap<L, N>,
) where
    L: Clone + std::hash::Hash + Eq + Ord + EncodeLabelSet + std::fmt::Debug,
    N: Copy,
    A: prometheus_client::metrics::gauge::Atomic<N> + Default,
{
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    for (labels, value) in &values {
        family.get_or_create(labels).set(*value);
    }
    for stale in last.iter().filter(|l| !values.contains_key(*l)) {
        family.remove(stale);
    }
    *last = values.into_keys().collect();
}

/// Registers `metric` under `name` and notes its name and type.
fn reg<M>(
    r: &mut Registry,
    declared: &mut Vec<(String, &'static str)>,
    name: &str,
    help: &str,
    metric: M,
) where
    M: prometheus_client::registry::Metric + prometheus_client::metrics::TypedMetric,
{
    let kind = match M::TYPE {
        prometheus_client::metrics::MetricType::Counter => "counter",
        prometheus_client::metrics::MetricType::Gauge => "gauge",
        prometheus_client::metrics::MetricType::Histogram => "histogram",
        prometheus_client::metrics::MetricType::Info => "info",
        prometheus_client::metrics::MetricType::Unknown => "unknown",
    };
    declared.push((name.to_owned(), kind));
    r.register(name, help, metric);
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    leader: Gauge<i64, AtomicI64>,
    pending_pods: Gauge<i64, AtomicI64>,
    decisions: Family<ReasonLabel, Counter>,
    errors: Family<CategoryLabel, Counter>,
    provisioning: Family<PoolLabel, Histogram>,
    observed_ready: std::sync::Mutex<BTreeSet<String>>,
    workers: Family<WorkerLabels, Gauge<i64, AtomicI64>>,
    worker_labels: std::sync::Mutex<BTreeSet<WorkerLabels>>,
    oldest_provisioning: Family<PoolLabel, Gauge<i64, AtomicI64>>,
    oldest_labels: std::sync::Mutex<BTreeSet<PoolLabel>>,
    step_failures: Family<StepLabels, Counter>,
    in_backoff: Gauge<i64, AtomicI64>,
    orphan_vms: Gauge<i64, AtomicI64>,
    host_status_errors: Family<HostLabel, Gauge<i64, AtomicI64>>,
    host_labels: std::sync::Mutex<BTreeSet<HostLabel>>,
    room: HostRoomGauges,
    declared: Vec<(String, &'static str)>,
    timeline: crate::web::Timeline,
    last_hosts: crate::web::LastHosts,
    now: std::sync::Mutex<Option<jiff::Timestamp>>,
    unhealthy: Family<UnhealthyLabels, Gauge<i64, AtomicI64>>,
    unhealthy_labels: std::sync::Mutex<BTreeSet<UnhealthyLabels>>,
    repairs: Family<RepairLabels, Counter>,
    upgrades: crate::upgrades::UpgradeGauges,
    registry: std::sync::Mutex<Registry>,
}

impl Metrics {
    /// Brings the claim-derived metrics up to date: workers by pool and
    /// phase, the oldest worker still provisioning per pool, and one
    /// provisioning-duration sample per worker that turned Ready. Gauges
    /// are set in place and stale label sets removed afterwards, so a
    /// scrape never sees them half rebuilt.
    pub fn observe_claims(
        &self,
        claims: &[tidepool_controller::claim::Claim],
        now: jiff::Timestamp,
    ) {
        let mut workers: BTreeMap<WorkerLabels, i64> = BTreeMap::new();
        let mut oldest: BTreeMap<PoolLabel, i64> = BTreeMap::new();
        for c in claims {
            let pool = c.spec.pool.clone();
            let phase = c.status.lifecycle.phase();
            *workers
                .entry(WorkerLabels {
                    pool: pool.clone(),
                    phase: phase.to_string(),
                })
                .or_default() += 1;
            if matches!(
                phase,
                tidepool_core::Phase::Requested
                    | tidepool_core::Phase::Provisioning
                    | tidepool_core::Phase::Joining
            ) {
                let age = c
                    .status
                    .provisioned_at
                    .map_or(0, |t| now.duration_since(t).as_secs().max(0));
                let e = oldest.entry(PoolLabel { pool }).or_default();
                *e = (*e).max(age);
            }
        }
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.timeline.observe(claims, now);
        replace_gauges(&self.workers, &self.worker_labels, workers);
        replace_gauges(&self.oldest_provisioning, &self.oldest_labels, oldest);
        let mut seen = self
            .observed_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for c in claims {
            if let (Some(start), Some(ready)) = (
                c.status.provisioned_at,
                c.status
                    .conditions
                    .get(&tidepool_controller::claim::Condition::NodeReady),
            ) && seen.insert(c.name.clone())
            {
                let secs = ready.duration_since(start).as_secs_f64().max(0.0);
                self.provisioning
                    .get_or_create(&PoolLabel {
                        pool: c.spec.pool.clone(),
                    })
                    .observe(secs);
            }
        }
        seen.retain(|n| claims.iter().any(|c| &c.name == n));
    }

    /// Sets the unreadable-host-status gauge: 1 for each host whose status
    /// answer could not be used at the last look.
    pub fn observe_host_problems(&self, problems: &BTreeMap<String, String>) {
        let values = problems
            .keys()
            .map(|host| (HostLabel { host: host.clone() }, 1))
            .collect();
        replace_gauges(&self.host_status_errors, &self.host_labels, values);
    }

    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut declared = Vec::new();
        let mut m = Self {
            leader: Gauge::default(),
            pending_pods: Gauge::default(),
            decisions: Family::default(),
            errors: Family::default(),
            // Seconds of (simulated) time from request to Ready: 30 s .. ~17 min.
            provisioning: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    30.0, 1.5, 10,
                ))
            }),
            observed_ready: std::sync::Mutex::new(BTreeSet::new()),
            workers: Family::default(),
            worker_labels: std::sync::Mutex::new(BTreeSet::new()),
            oldest_provisioning: Family::default(),
            oldest_labels: std::sync::Mutex::new(BTreeSet::new()),
            step_failures: Family::default(),
            in_backoff: Gauge::default(),
            orphan_vms: Gauge::default(),
            host_status_errors: Family::default(),
            host_labels: std::sync::Mutex::new(BTreeSet::new()),
            room: HostRoomGauges::default(),
            declared: Vec::new(),
            timeline: crate::web::Timeline::default(),
            last_hosts: crate::web::LastHosts::default(),
            now: std::sync::Mutex::new(None),
            unhealthy: Family::default(),
            unhealthy_labels: std::sync::Mutex::new(BTreeSet::new()),
            repairs: Family::default(),
            upgrades: crate::upgrades::UpgradeGauges::default(),
            registry: std::sync::Mutex::new(Registry::default()),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            reg(
                &mut r,
                &mut declared,
                "tidepool_leader",
                "1 while this replica leads",
                m.leader.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_workers",
                "Workers by pool and lifecycle phase",
                m.workers.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_oldest_provisioning_seconds",
                "Age of the oldest worker of each pool still on its way (Requested, Provisioning, Joining)",
                m.oldest_provisioning.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_pending_pods",
                "Unschedulable pods seen by the last plan",
                m.pending_pods.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_scaling_decisions",
                "Scaling decisions by reason code",
                m.decisions.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_errors",
                "Errors by category",
                m.errors.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_step_failures",
                "Failed tries of a lifecycle step, by step and error category",
                m.step_failures.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_orphan_vms",
                "VMs carrying Tidepool's marker whose claim does not exist (removed after the grace period)",
                m.orphan_vms.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_claims_in_backoff",
                "Claims waiting to try a failed step again",
                m.in_backoff.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_provisioning_duration_seconds",
                "Time from a worker's request to its node being Ready",
                m.provisioning.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_host_status_unreadable",
                "1 for each Proxmox host whose status answer could not be used",
                m.host_status_errors.clone(),
            );
            m.room.register(&mut r, &mut declared);
            reg(
                &mut r,
                &mut declared,
                "tidepool_worker_unhealthy",
                "Workers with a health problem, by pool and condition (spec §7)",
                m.unhealthy.clone(),
            );
            reg(
                &mut r,
                &mut declared,
                "tidepool_repairs",
                "Repairs and escalations of the health monitor, by action and result",
                m.repairs.clone(),
            );
            declared.push(m.upgrades.register(&mut r));
        }
        m.declared = declared;
        Arc::new(m)
    }

    /// What the dashboard's timeline shows.
    pub fn timeline(&self) -> &crate::web::Timeline {
        &self.timeline
    }

    /// The hosts' room as the last plan saw it.
    pub fn last_hosts(&self) -> &crate::web::LastHosts {
        &self.last_hosts
    }

    /// Every metric family registered, with its type (`counter`, `gauge`,
    /// `histogram`): a family with no samples yet is left out of a scrape,
    /// so this is how dashboards and alerts are checked against all of them.
    pub fn declared(&self) -> &[(String, &'static str)] {
        &self.declared
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}

impl ScalingMetrics for Metrics {
    fn pending(&self, n: usize) {
        self.pending_pods.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn decision(&self, reason: &str) {
        self.decisions
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn error(&self, category: &str) {
        self.errors
            .get_or_create(&CategoryLabel {
                category: category.to_owned(),
            })
            .inc();
    }

    fn host_room(&self, hosts: &[tidepool_core::planner::capacity::HostCapacity]) {
        self.room.set(hosts);
        self.last_hosts.set(hosts);
    }

    fn acted(&self, action: &tidepool_core::planner::Action, workers: &[String]) {
        let now = *self.now.lock().unwrap_or_else(|e| e.into_inner());
        self.timeline
            .acted(action, workers, now.unwrap_or_else(jiff::Timestamp::now));
    }
}

/// A host and one of its storages or PCI mappings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct HostPartLabels {
    host: String,
    name: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Each host's room per dimension as the last plan saw it (the planner's
/// own figures: memory above the reserve, vCPUs under the overcommit
/// ratio, storage, free GPU devices, all less the VMs on their way).
#[derive(Debug, Default)]
struct HostRoomGauges {
    memory: Family<HostLabel, Gauge<i64, AtomicI64>>,
    vcpus: Family<HostLabel, F64Gauge>,
    storage: Family<HostPartLabels, Gauge<i64, AtomicI64>>,
    gpus: Family<HostPartLabels, Gauge<i64, AtomicI64>>,
    hosts: std::sync::Mutex<BTreeSet<HostLabel>>,
    vcpu_hosts: std::sync::Mutex<BTreeSet<HostLabel>>,
    storages: std::sync::Mutex<BTreeSet<HostPartLabels>>,
    mappings: std::sync::Mutex<BTreeSet<HostPartLabels>>,
}

impl HostRoomGauges {
    fn register(&self, r: &mut Registry, declared: &mut Vec<(String, &'static str)>) {
        reg(
            r,
            declared,
            "tidepool_host_memory_free_bytes",
            "Memory a host has left for new workers (above its reserve, less VMs on their way; negative when overcommitted)",
            self.memory.clone(),
        );
        reg(
            r,
            declared,
            "tidepool_host_vcpus_free",
            "vCPUs a host has left under its overcommit ratio, less VMs on their way",
            self.vcpus.clone(),
        );
        reg(
            r,
            declared,
            "tidepool_host_storage_free_bytes",
            "Free space of each storage on a host, less the disks of VMs on their way",
            self.storage.clone(),
        );
        reg(
            r,
            declared,
            "tidepool_host_gpus_free",
            "Free devices of each PCI resource mapping on a host",
            self.gpus.clone(),
        );
    }

    fn set(&self, hosts: &[tidepool_core::planner::capacity::HostCapacity]) {
        const MIB: i64 = 1 << 20;
        const GIB: i64 = 1 << 30;
        let label = |h: &tidepool_core::planner::capacity::HostCapacity| HostLabel {
            host: h.name.clone(),
        };
        let part = |host: &str, name: &str| HostPartLabels {
            host: host.to_owned(),
            name: name.to_owned(),
        };
        let memory = hosts
            .iter()
            .map(|h| (label(h), h.memory_free_mib.saturating_mul(MIB)))
            .collect();
        let vcpus = hosts.iter().map(|h| (label(h), h.vcpus_left)).collect();
        let storage = hosts
            .iter()
            .flat_map(|h| {
                h.storage_free_gib.iter().map(|(s, gib)| {
                    let bytes = i64::try_from(*gib).unwrap_or(i64::MAX / GIB);
                    (part(&h.name, s), bytes.saturating_mul(GIB))
                })
            })
            .collect();
        let gpus = hosts
            .iter()
            .flat_map(|h| {
                h.gpu_free
                    .iter()
                    .map(|(m, n)| (part(&h.name, m), i64::from(*n)))
            })
            .collect();
        replace_gauges(&self.memory, &self.hosts, memory);
        replace_gauges(&self.vcpus, &self.vcpu_hosts, vcpus);
        replace_gauges(&self.storage, &self.storages, storage);
        replace_gauges(&self.gpus, &self.mappings, gpus);
    }
}

impl StepMetrics for Metrics {
    fn step_failed(&self, step: tidepool_core::Step, category: &str) {
        self.step_failures
            .get_or_create(&StepLabels {
                step: step.to_string(),
                category: category.to_owned(),
            })
            .inc();
    }

    fn backing_off(&self, claims: usize) {
        self.in_backoff
            .set(i64::try_from(claims).unwrap_or(i64::MAX));
    }
}

impl SweepMetrics for Metrics {
    fn orphans(&self, vms: usize) {
        self.orphan_vms.set(i64::try_from(vms).unwrap_or(i64::MAX));
    }

    fn sweep_failed(&self, category: &str) {
        ScalingMetrics::error(self, &format!("sweep-{category}"));
    }
}

impl HealthMetrics for Metrics {
    fn unhealthy(&self, counts: &BTreeMap<(String, tidepool_core::health::Problem), i64>) {
        let values = counts
            .iter()
            .map(|((pool, problem), n)| {
                (
                    UnhealthyLabels {
                        pool: pool.clone(),
                        condition: problem.as_str().to_owned(),
                    },
                    *n,
                )
            })
            .collect();
        replace_gauges(&self.unhealthy, &self.unhealthy_labels, values);
    }

    fn repair(&self, action: tidepool_core::health::Action, result: &str) {
        self.repairs
            .get_or_create(&RepairLabels {
                action: action.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

impl tidepool_controller::rollout::RolloutMetrics for Metrics {
    fn workers(&self, pool: &str, counts: &tidepool_controller::rollout::WorkerCounts) {
        self.upgrades.set(pool, counts);
    }
}

/// A host label (the configured Proxmox hosts).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The health and metrics address could not be bound; the Lease was
    /// not competed for.
    #[error("listening for /healthz, /readyz and /metrics on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Lease settings; `None` when leader election is off.
    pub lease: Option<LeaseConfig>,
    /// Whether the autoscaler runs (else only the claim lifecycle).
    pub autoscale: bool,
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
    ready: Arc<Readiness>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    let role = if *h.leading.borrow() {
        "leader"
    } else {
        "standby"
    };
    let failures = h.ready.failures();
    if failures.is_empty() {
        (StatusCode::OK, format!("ready ({role})"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready ({role}): {}", failures.join("; ")),
        )
    }
}

async fn metrics_text(
    State(h): State<Health>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

/// Serves the health and metrics endpoints on `listener`.
pub(crate) fn serve_health(
    listener: tokio::net::TcpListener,
    exec: Arc<LiveExecutor>,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
    ready: Arc<Readiness>,
) -> tokio::task::JoinHandle<()> {
    let web = crate::web::routes(exec, metrics.clone(), leading.clone());
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health {
            metrics,
            leading,
            ready,
        })
        .merge(web);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health endpoint stopped");
        }
    })
}

/// Binds the health address.
pub(crate) async fn bind_health(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), RunError> {
    let bind_error = |source| RunError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// The work a leader does: the reconciler, the sweep, the health monitor,
/// the rolling upgrades and the autoscaler.
struct Work {
    stop: watch::Sender<bool>,
    reconciler: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    health: tokio::task::JoinHandle<()>,
    rollouts: tokio::task::JoinHandle<()>,
    autoscaler: Option<tokio::task::JoinHandle<()>>,
}

impl Work {
    /// Starts the reconciler, the sweep of VMs against claims, the health
    /// monitor, and the autoscaler if `autoscale`.
    fn start(exec: &Arc<LiveExecutor>, autoscale: bool, metrics: &Arc<Metrics>) -> Self {
        let clock = exec.clock().clone();
        let (tx, rx) = watch::channel(false);
        let defaults = ReconcilerOptions::default();
        // Claims are driven on change; the safety-net resync runs on
        // the controller's clock, never more often than `min_wait`.
        let opts = ReconcilerOptions {
            min_wait: defaults.min_wait.min(Duration::from_millis(20)),
            ..defaults
        };
        let reconciler = Reconciler::new(exec.clone(), opts)
            .with_metrics(metrics.clone())
            .spawn(rx.clone());
        // VMs against claims, both ways, once per polling interval.
        let config = exec.config();
        let sweeper = tokio::spawn(sweep::run(
            Sweeper::new(exec.clone(), config.server.orphan_grace_period),
            config.polling_interval,
            SWEEP_FLOOR,
            rx.clone(),
            metrics.clone(),
        ));
        // Sick workers repaired by spec §7's matrix, woken by node changes.
        // Its floors are real time, scaled down with a fast clock.
        let floor = |d| clock.real(d).max(HEALTH_FLOOR);
        let health = tokio::spawn(tidepool_controller::health::run(
            Monitor::new(exec.clone(), metrics.clone())
                .with_services_floor(floor(config.polling_interval)),
            MonitorTiming {
                min_wait: floor(Duration::from_secs(2)),
            },
            vec![exec.nodes().cluster().nodes().changes()],
            rx.clone(),
        ));
        // Rolling upgrades, batch by batch, from the pools' records.
        let rollouts = tokio::spawn(tidepool_controller::rollout::run(
            tidepool_controller::rollout::Rollouts::new(exec.clone(), metrics.clone()),
            tidepool_controller::rollout::RolloutTiming {
                min_wait: floor(Duration::from_secs(1)),
                busy_every: Duration::from_secs(5),
            },
            rx.clone(),
        ));
        let autoscaler = autoscale.then(|| {
            // The batching window: half a second of controller time,
            // so the first clone follows an unschedulable pod within
            // a second.
            let window = clock.real(BATCH_WINDOW).max(Duration::from_millis(20));
            let autoscaler = Autoscaler::new(
                Arc::new(LiveService::new(exec.clone())),
                Arc::new(LiveObserver(exec.clone())),
                exec.nodes().clone(),
            );
            tokio::spawn(tidepool_controller::autoscaler::run(
                autoscaler,
                Timing::new(window),
                rx,
                metrics.clone(),
            ))
        });
        Self {
            stop: tx,
            reconciler,
            sweeper,
            health,
            rollouts,
            autoscaler,
        }
    }

    /// Stops the work at once: every claim drive and the autoscaler pass in
    /// flight are aborted, then awaited.
    async fn abort(self) {
        let _ = self.stop.send(true);
        self.reconciler.abort();
        let _ = self.reconciler.await;
        self.sweeper.abort();
        let _ = self.sweeper.await;
        self.health.abort();
        let _ = self.health.await;
        self.rollouts.abort();
        let _ = self.rollouts.await;
        if let Some(a) = self.autoscaler {
            a.abort();
            let _ = a.await;
        }
    }
}

/// The least real time between two passes reconciling VMs against claims
/// (a fast clock shortens the polling interval, never below this).
pub const SWEEP_FLOOR: Duration = Duration::from_secs(1);

/// The least real time between two passes of the health monitor, and
/// between two readings of one machine's services.
pub const HEALTH_FLOOR: Duration = Duration::from_millis(20);

/// How long the autoscaler lets changes settle before it plans.
pub const BATCH_WINDOW: Duration = Duration::from_millis(500);

/// Runs the controller until `stop` turns true; returns the health address
/// once serving (through `bound`) and finishes when stopped. The reconciler
/// and the autoscaler run on the executor's clock; leader election on real
/// time ([`leader`]).
///
/// # Errors
/// [`RunError::Bind`] when the health endpoint cannot listen; the Lease is
/// then never competed for.
pub async fn run(
    exec: Arc<LiveExecutor>,
    options: RunOptions,
    stop: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let clock = exec.clock().clone();
    let (listener, addr) = bind_health(options.metrics_addr).await?;
    // The elector stops only once the work has: it then releases the Lease.
    let (elector_stop, elector_stop_rx) = watch::channel(false);
    let (leading, election) = match &options.lease {
        Some(cfg) => {
            let client = exec.nodes().cluster().client().clone();
            let (rx, task) = leader::spawn(client, cfg.clone(), clock.clone(), elector_stop_rx);
            (rx, Some(task))
        }
        None => (watch::channel(true).1, None),
    };
    // Proxmox counts as answering for a few resyncs; an idle replica asks
    // it once a resync (real time, at least a second).
    let resync = clock
        .real(ReconcilerOptions::default().resync)
        .max(Duration::from_secs(1));
    let ready = Arc::new(Readiness::new(exec.clone(), resync * 3));
    let prober = tokio::spawn(probe_proxmox(exec.clone(), resync, stop.clone()));
    let health = serve_health(
        listener,
        exec.clone(),
        metrics.clone(),
        leading.clone(),
        ready,
    );
    info!(%addr, "serving /healthz, /readyz and /metrics");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let mut leading_rx = leading.clone();
    // A store that cannot report changes gets a feed that never fires (its
    // sender lives as long as the loop).
    let (_no_changes, never) = watch::channel(0_u64);
    let mut claim_changes = exec.store().changes().unwrap_or(never);
    let mut stop_rx = stop.clone();
    let mut active: Option<Work> = None;
    loop {
        if *stop_rx.borrow() {
            break;
        }
        let lead = *leading_rx.borrow();
        metrics.leader.set(i64::from(lead));
        match (lead, active.is_some()) {
            (true, false) => {
                info!(
                    autoscale = options.autoscale,
                    "leading: reconciling worker claims"
                );
                active = Some(Work::start(&exec, options.autoscale, &metrics));
            }
            (false, true) => {
                info!("no longer leading: aborting the work in flight");
                if let Some(work) = active.take() {
                    work.abort().await;
                }
                metrics.backing_off(0);
                metrics.orphans(0);
            }
            _ => {}
        }
        // A hanging read never delays fencing: a change of leadership (or
        // a stop) goes straight back to the top.
        let observed = tokio::select! {
            r = exec.store().observed() => r,
            () = tidepool_controller::wake::changed(&mut leading_rx) => continue,
            () = tidepool_controller::wake::changed(&mut stop_rx) => continue,
        };
        if let Ok(claims) = observed {
            metrics.observe_claims(&claims, exec.now());
        }
        metrics.observe_host_problems(&exec.hypervisor().host_problems());
        // The gauges follow the claims as they change; the timer only ages
        // the oldest-provisioning gauge.
        tokio::select! {
            () = tidepool_controller::wake::changed(&mut leading_rx) => {}
            () = tidepool_controller::wake::changed(&mut stop_rx) => {}
            () = tidepool_controller::wake::changed(&mut claim_changes) => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    if let Some(work) = active.take() {
        work.abort().await;
    }
    let _ = elector_stop.send(true);
    if let Some(task) = election {
        let _ = task.await;
    }
    prober.abort();
    health.abort();
    Ok(())
}
