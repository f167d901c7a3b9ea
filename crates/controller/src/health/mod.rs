//! The health monitor and repair loop (spec §7): keeps the workers it
//! created healthy.
//!
//! One pass looks at every worker in the Ready phase that is asked to stay:
//! its node's bad conditions (from the watch-fed node cache, through
//! [`Nodes::list`]) and its kubelet and containerd failures since boot
//! (from the machine's OS, through [`GuestOs::services`], asked at most
//! once per polling interval per worker since Talos has no watch for
//! them). Each worker's windows are brought up to date on its claim
//! ([`HealthRecord::observe`]); the pure plan of `tidepool-core`
//! ([`tidepool_core::health::plan`]) gives each one's next action with the
//! brakes applied; the due ones are carried out ([`act`]), each recorded on
//! the claim before it is taken, so a crash or a failover neither repeats
//! nor loses it: a repair found running when the monitor starts was cut
//! short by the process before, and is taken as done.
//!
//! The loop is watch-driven: it wakes when a node or a claim changes, when
//! the next action falls due, and once per polling interval for the
//! services; never on a tighter timer. Control-plane nodes are never
//! touched, and nodes without a claim are not Tidepool's.
//!
//! How each action is carried out, and why freeing disk on Talos means
//! wiping the ephemeral partition, is in [`act`].

pub mod act;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tidepool_core::Phase;
use tidepool_core::health::{self, Decision, HealthRecord, Observed, Problem, WorkerInput};
use tidepool_core::jiff::Timestamp;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::claim::{Claim, Intent};
use crate::executor::Executor;
use crate::ports::{ClaimStore, GuestOs, Hypervisor, Joiner, NodeView, Nodes, ProviderError};
use crate::service::Service;

/// The least real time between two readings of one machine's services,
/// unless told otherwise ([`Monitor::with_services_floor`]).
const SERVICES_FLOOR: Duration = Duration::from_secs(1);

/// The label a control-plane node carries.
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Where the monitor reports, for metrics. Label values are bounded: pool
/// names, the problems and the actions of the matrix, and results.
pub trait HealthMetrics: Send + Sync {
    /// The unhealthy workers now, by pool and problem (every pair that was
    /// reported before and is missing now is zero).
    fn unhealthy(&self, counts: &BTreeMap<(String, Problem), i64>);
    /// One repair or escalation, by action and result (`ok`, `failed`,
    /// `dry-run`).
    fn repair(&self, action: health::Action, result: &str);
}

/// No metrics.
impl HealthMetrics for () {
    fn unhealthy(&self, _: &BTreeMap<(String, Problem), i64>) {}
    fn repair(&self, _: health::Action, _: &str) {}
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The claims or the nodes could not be read.
    #[error("reading the {what} for the health monitor")]
    Observe {
        /// `claims` or `nodes`.
        what: &'static str,
        /// The cause.
        source: ProviderError,
    },
}

impl MonitorError {
    /// A stable category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe { source, .. } => source.kind.as_str(),
        }
    }
}

/// The error of a failed read of `what`.
fn observing(what: &'static str) -> impl Fn(ProviderError) -> MonitorError {
    move |source| MonitorError::Observe { what, source }
}

/// The kubelet and containerd failures last read from a machine, and when.
#[derive(Clone, Copy, Debug)]
struct ServiceReading {
    at: Timestamp,
    real: std::time::Instant,
    kubelet: Option<u32>,
    containerd: Option<u32>,
}

/// The health monitor over the executor's ports; the join method is also
/// the way to the machines' OS.
pub struct Monitor<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    service: Service<H, J, N, S>,
    metrics: Arc<dyn HealthMetrics>,
    readings: tokio::sync::Mutex<BTreeMap<String, ServiceReading>>,
    services_floor: Duration,
}

impl<H, J, N, S> Monitor<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    /// A monitor over `exec`, reporting to `metrics`.
    pub fn new(exec: Arc<Executor<H, J, N, S>>, metrics: Arc<dyn HealthMetrics>) -> Self {
        Self {
            service: Service::new(exec.clone()),
            exec,
            metrics,
            readings: tokio::sync::Mutex::default(),
            services_floor: SERVICES_FLOOR,
        }
    }

    /// Reads a machine's services again after `floor` of real time at the
    /// least (besides a polling interval of the clock's): tests on a clock
    /// they move by hand set zero.
    pub fn with_services_floor(mut self, floor: Duration) -> Self {
        self.services_floor = floor;
        self
    }

    /// Takes every repair left running by a previous process as done
    /// (interrupted), so none is repeated. Call once when starting to lead.
    ///
    /// # Errors
    /// The claims could not be read; a claim that cannot be written is
    /// skipped (logged).
    pub async fn take_over(&self) -> Result<usize, MonitorError> {
        let claims = self.claims().await?;
        let now = self.exec.now();
        let mut interrupted = 0;
        for mut claim in claims {
            if claim.status.health.interrupt(now) {
                match self
                    .exec
                    .store()
                    .save_status(&claim.name, &claim.status)
                    .await
                {
                    Ok(()) => interrupted += 1,
                    Err(e) => {
                        warn!(claim = %claim.name, error = %e, "could not record an interrupted repair")
                    }
                }
            }
        }
        Ok(interrupted)
    }

    async fn claims(&self) -> Result<Vec<Claim>, MonitorError> {
        self.exec.store().list().await.map_err(observing("claims"))
    }

    /// One pass: observe, record the windows, act on what is due. Returns
    /// when the next action falls due, if any is planned.
    ///
    /// # Errors
    /// The claims or the nodes could not be read.
    pub async fn pass(&self) -> Result<Option<Timestamp>, MonitorError> {
        let claims = self.claims().await?;
        let nodes = self.exec.nodes().list().await.map_err(observing("nodes"))?;
        let now = self.exec.now();
        let by_name: BTreeMap<&str, &NodeView> =
            nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut watched = Vec::new();
        for claim in claims.into_iter().filter(watched_worker) {
            let node = by_name.get(claim.name.as_str()).copied();
            match self.update(claim, node, now).await {
                Some(w) => watched.push(w),
                None => continue,
            }
        }
        self.report(&watched);
        let cluster = (
            nodes.iter().filter(|n| !n.problems.is_empty()).count(),
            nodes.len(),
        );
        let decisions = self.decide(&watched, cluster, now);
        let mut next: Option<Timestamp> = None;
        for d in decisions {
            if d.next.due(now) {
                if let Some(w) = watched.iter().find(|w| w.claim.name == d.worker) {
                    self.act(w, &d).await;
                }
            } else if d.next.why != health::Why::WaitingForSlot {
                next = Some(next.map_or(d.next.at, |n| n.min(d.next.at)));
            }
        }
        Ok(next)
    }

    /// The plan over the watched workers.
    fn decide(
        &self,
        watched: &[Watched],
        cluster: (usize, usize),
        now: Timestamp,
    ) -> Vec<Decision> {
        let config = self.exec.config();
        let inputs: Vec<WorkerInput<'_>> = watched
            .iter()
            .filter_map(|w| {
                let pool = config.pool(&w.claim.spec.pool)?;
                Some(WorkerInput {
                    name: &w.claim.name,
                    pool: &pool.name,
                    kind: pool.kind,
                    control_plane: w.control_plane,
                    record: &w.claim.status.health,
                    policy: &pool.repair,
                })
            })
            .collect();
        health::plan(&inputs, cluster, now)
    }

    /// Brings one worker's record up to date and writes it when it
    /// changed; uncordons a node a repair cordoned once it is healthy.
    async fn update(
        &self,
        mut claim: Claim,
        node: Option<&NodeView>,
        now: Timestamp,
    ) -> Option<Watched> {
        let policy = self
            .exec
            .config()
            .pool(&claim.spec.pool)
            .map(|p| p.repair.clone())
            .unwrap_or_default();
        let mut seen = Observed::default();
        match node {
            Some(n) => seen.conditions = n.problems.clone(),
            // A Ready worker whose node is gone is not ready.
            None => {
                seen.conditions.insert(Problem::NotReady, now);
            }
        }
        let reading = self.services(&claim, now).await;
        seen.kubelet_failures = reading.kubelet;
        seen.containerd_failures = reading.containerd;
        let before = claim.status.health.clone();
        let t = claim.status.health.observe(&seen, &policy, now);
        let record = &mut claim.status.health;
        let uncordon = record.cordoned
            && !record.unhealthy()
            && !record
                .last_repair
                .as_ref()
                .is_some_and(health::Repair::running);
        if uncordon {
            match self.exec.nodes().uncordon(&claim.name).await {
                Ok(()) => record.cordoned = false,
                Err(e) => {
                    warn!(worker = %claim.name, error = %e, "could not uncordon the repaired node")
                }
            }
        }
        if claim.status.health != before
            && let Err(e) = self
                .exec
                .store()
                .save_status(&claim.name, &claim.status)
                .await
        {
            debug!(worker = %claim.name, error = %e, "health not recorded; next pass");
            return None;
        }
        self.announce_windows(&claim, &before, &t).await;
        let control_plane = node.is_some_and(|n| n.labels.contains_key(CONTROL_PLANE_LABEL));
        Some(Watched {
            claim,
            control_plane,
        })
    }

    /// An Event for each window that opened (a Warning), came back within
    /// the recovery time (a Warning; the window goes on) or closed.
    async fn announce_windows(
        &self,
        claim: &Claim,
        before: &HealthRecord,
        t: &health::Transitions,
    ) {
        let nodes = self.exec.nodes();
        let since = |p: &Problem| claim.status.health.problems.get(p).copied();
        for p in &t.opened {
            let message = match since(p) {
                Some(s) => format!("{p} since {s}"),
                None => p.to_string(),
            };
            info!(worker = %claim.name, problem = %p, "health problem started");
            nodes.warn(&claim.name, "HealthProblem", &message).await;
        }
        for p in &t.resumed {
            let message = match since(p) {
                Some(s) => {
                    format!("{p} is back within the recovery time; its window since {s} goes on")
                }
                None => format!("{p} is back within the recovery time"),
            };
            info!(worker = %claim.name, problem = %p, "health problem back");
            nodes.warn(&claim.name, "HealthProblemBack", &message).await;
        }
        for p in &t.closed {
            let since = before.problems.get(p).copied();
            let message = match since {
                Some(s) => format!("{p} ended (since {s})"),
                None => format!("{p} ended"),
            };
            info!(worker = %claim.name, problem = %p, "health problem ended");
            nodes
                .announce(&claim.name, "HealthRecovered", &message)
                .await;
        }
    }

    /// The machine's service failures: read again once per polling
    /// interval, else the last reading.
    async fn services(&self, claim: &Claim, now: Timestamp) -> ServiceReading {
        let every = self.exec.config().polling_interval;
        let mut readings = self.readings.lock().await;
        // A fast clock never makes this a tight loop against the machines.
        if let Some(r) = readings.get(&claim.name)
            && (now.duration_since(r.at).unsigned_abs() < every
                || r.real.elapsed() < self.services_floor)
        {
            return *r;
        }
        let mut reading = ServiceReading {
            at: now,
            real: std::time::Instant::now(),
            kubelet: None,
            containerd: None,
        };
        if let Some(ip) = claim.status.ip {
            match self.exec.joiner().services(ip).await {
                Ok(services) => {
                    let failures = |id: &str| {
                        Some(
                            services
                                .iter()
                                .find(|s| s.id == id)
                                .map_or(0, |s| s.failures),
                        )
                    };
                    reading.kubelet = failures("kubelet");
                    reading.containerd = failures("containerd");
                }
                Err(e) => debug!(worker = %claim.name, error = %e, "services not read"),
            }
        }
        readings.insert(claim.name.clone(), reading);
        readings.retain(|_, r| now.duration_since(r.at).unsigned_abs() < every * 4);
        reading
    }

    /// Reports the unhealthy workers by pool and problem.
    fn report(&self, watched: &[Watched]) {
        let mut counts: BTreeMap<(String, Problem), i64> = BTreeMap::new();
        for w in watched {
            for p in w.claim.status.health.problems.keys() {
                *counts.entry((w.claim.spec.pool.clone(), *p)).or_default() += 1;
            }
        }
        self.metrics.unhealthy(&counts);
    }
}

/// A worker the monitor looks after, with its record brought up to date.
struct Watched {
    claim: Claim,
    control_plane: bool,
}

/// Whether the monitor looks after the claim's worker: Ready, asked to
/// stay, not being deleted.
fn watched_worker(claim: &Claim) -> bool {
    claim.phase() == Phase::Ready && claim.intent() == Intent::Keep && !claim.deleting
}

/// Timing of the loop.
#[derive(Clone, Copy, Debug)]
pub struct MonitorTiming {
    /// Least real time between two passes (node changes come often).
    pub min_wait: Duration,
}

impl Default for MonitorTiming {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_millis(250),
        }
    }
}

/// Runs the monitor until `stop` turns true: a pass whenever a node
/// (`node_changes`) or a claim changes, the next action falls due, or a
/// polling interval of the executor's clock has passed.
pub async fn run<H, J, N, S>(
    monitor: Monitor<H, J, N, S>,
    timing: MonitorTiming,
    mut node_changes: Vec<watch::Receiver<u64>>,
    stop: watch::Receiver<bool>,
) where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    let clock = monitor.exec.clock().clone();
    let every = monitor.exec.config().polling_interval;
    let (_never_tx, never) = watch::channel(0_u64);
    let mut claim_changes = monitor.exec.store().changes().unwrap_or(never);
    match monitor.take_over().await {
        Ok(0) => {}
        Ok(n) => info!(
            repairs = n,
            "repairs cut short by the previous leader taken as done"
        ),
        Err(e) => warn!(error = %e, "could not look for repairs cut short"),
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let next = match monitor.pass().await {
            Ok(next) => next,
            Err(e) => {
                warn!(error = %e, category = e.category(), "health pass failed");
                None
            }
        };
        let now = clock.now();
        let wait = next
            .map(|at| at.duration_since(now).unsigned_abs().min(every))
            .unwrap_or(every);
        let mut stop_wait = stop.clone();
        let nodes = async {
            if node_changes.is_empty() {
                std::future::pending::<()>().await;
            }
            let waits = node_changes
                .iter_mut()
                .map(|rx| Box::pin(crate::wake::changed(rx)));
            futures_select_all(waits).await;
        };
        tokio::select! {
            () = clock.sleep(wait) => {}
            () = nodes => {}
            () = crate::wake::changed(&mut claim_changes) => {}
            () = crate::wake::changed(&mut stop_wait) => {}
        }
        tokio::time::sleep(timing.min_wait).await;
    }
}

/// Resolves when the first of `futures` does.
async fn futures_select_all<F>(futures: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = ()> + Unpin,
{
    let mut all: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for f in &mut all {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}
