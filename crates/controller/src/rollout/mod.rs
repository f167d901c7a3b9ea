//! Rolling upgrades of pools: the loop that carries each pool's rollout
//! (kept on its durable record, [`tidepool_core::rollout`]) batch by batch,
//! and the operations that start, show, resume and abort one ([`ops`]).
//!
//! One pass looks at every pool whose rollout is running: it observes the
//! pool's workers (claims in the Ready phase that are asked to stay, their
//! nodes, the Talos version each one reports through [`GuestOs::version`]),
//! asks the pure planner ([`tidepool_core::rollout::next`]) what to do,
//! and carries the batch in progress on ([`batch`]): cordon → drain (the
//! pool's drain timeout and grace period, PodDisruptionBudgets honoured) →
//! Talos upgrade in place → checked healthy (node Ready, kubelet and
//! containerd running, the target version reported) → uncordon. Every
//! worker's step is written to the pool's record before its action is
//! taken, so a process that takes over carries the batch on without
//! asking any worker for its upgrade twice.
//!
//! Workers are upgraded in place only, whatever the pool's kind: a
//! permanent pool's workers are never destroyed by a rollout. Control-plane
//! nodes are never in a batch. Replacing workers cloned from an older
//! template is not done by this loop.
//!
//! The loop runs under leadership, like the health monitor; it wakes when
//! a claim changes (a rollout is started through the pool records, which
//! the claim watch does not see) and otherwise once per polling interval
//! while a rollout runs.

pub mod batch;
pub mod ops;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_core::Phase;
use tidepool_core::jiff::Timestamp;
use tidepool_core::rollout::{self, Next, Rollout, RolloutState, WorkerStep, WorkerView};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::claim::{Claim, Intent};
use crate::executor::Executor;
use crate::ports::{
    ClaimStore, GuestOs, Hypervisor, Joiner, NodeView, Nodes, ProviderError, ProviderErrorKind,
};

/// The label a control-plane node carries.
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// How many times a change to a pool's record is tried again after
/// another writer (the autoscaler's timers, the CLI) got there first.
const WRITE_TRIES: usize = 8;

/// Why a rollout pass or operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The claims, the nodes or a pool's record could not be read.
    #[error("reading the {what} for the rolling upgrade")]
    Observe {
        /// `claims`, `nodes` or `pool record`.
        what: &'static str,
        /// The cause.
        source: ProviderError,
    },
    /// The pool's record could not be written.
    #[error("recording the rolling upgrade of pool {pool}")]
    Record {
        /// The pool.
        pool: String,
        /// The cause.
        source: ProviderError,
    },
    /// The pool is not configured.
    #[error("no pool {0:?} in the configuration")]
    UnknownPool(String),
    /// The request is not valid (bad image, a rollout already running, ...).
    #[error("{0}")]
    Refused(String),
    /// The rollout's own rules refused the request.
    #[error(transparent)]
    Rule(#[from] tidepool_core::rollout::RolloutError),
}

impl RolloutError {
    /// A stable category for metrics and exit codes.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe { source, .. } | Self::Record { source, .. } => source.kind.as_str(),
            Self::UnknownPool(_) => "not-found",
            Self::Refused(_) | Self::Rule(_) => "invalid",
        }
    }
}

/// The error of a failed read of `what`.
fn observing(what: &'static str) -> impl Fn(ProviderError) -> RolloutError {
    move |source| RolloutError::Observe { what, source }
}

/// Where the rollouts report, for metrics. Label values are bounded: pool
/// names and the states of [`WorkerCounts`].
pub trait RolloutMetrics: Send + Sync {
    /// The workers of `pool` by state, after a pass over its rollout.
    fn workers(&self, pool: &str, counts: &WorkerCounts);
}

/// No metrics.
impl RolloutMetrics for () {
    fn workers(&self, _: &str, _: &WorkerCounts) {}
}

/// A pool's workers by where the rollout has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// On another version, not yet in a batch.
    pub pending: i64,
    /// In the batch in progress.
    pub upgrading: i64,
    /// On the target version.
    pub done: i64,
    /// Failed in a batch (and not yet done since).
    pub failed: i64,
}

impl WorkerCounts {
    /// The counts as `(state, value)` pairs, for a labelled gauge.
    pub fn pairs(&self) -> [(&'static str, i64); 4] {
        [
            ("pending", self.pending),
            ("upgrading", self.upgrading),
            ("done", self.done),
            ("failed", self.failed),
        ]
    }

    /// Counts `workers` against `rollout`.
    pub fn of(rollout: &Rollout, workers: &[Worker]) -> Self {
        let mut counts = Self::default();
        for w in workers.iter().filter(|w| !w.view.control_plane) {
            let step = rollout.current().and_then(|b| b.workers.get(&w.view.name));
            let failed = rollout
                .batches
                .iter()
                .skip(rollout.resumed_at_batch)
                .any(|b| matches!(b.workers.get(&w.view.name), Some(WorkerStep::Failed { .. })));
            if w.view.version.as_deref() == Some(rollout.version.as_str()) && step.is_none() {
                counts.done += 1;
            } else if step.is_some() {
                counts.upgrading += 1;
            } else if failed {
                counts.failed += 1;
            } else {
                counts.pending += 1;
            }
        }
        counts
    }
}

/// One worker of a pool as a pass sees it.
#[derive(Clone, Debug)]
pub struct Worker {
    /// What the planner takes.
    pub view: WorkerView,
    /// Its address.
    pub ip: IpAddr,
    /// Its node, if registered.
    pub node: Option<NodeView>,
}

/// The claims of `pool` that a rollout concerns: Ready, asked to stay,
/// with an address.
fn pool_workers<'a>(claims: &'a [Claim], pool: &'a str) -> impl Iterator<Item = &'a Claim> {
    claims.iter().filter(move |c| {
        c.spec.pool == pool
            && c.phase() == Phase::Ready
            && c.intent() == Intent::Keep
            && !c.deleting
            && c.status.ip.is_some()
    })
}

/// The rollout loop over the executor's ports; the join method is also
/// the way to the machines' OS.
pub struct Rollouts<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    metrics: Arc<dyn RolloutMetrics>,
    /// Workers seen not answering since their upgrade was asked, by name:
    /// they rebooted, so the version they report next is the one they
    /// booted into.
    rebooted: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl<H, J, N, S> Rollouts<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    /// The loop over `exec`, reporting to `metrics`.
    pub fn new(exec: Arc<Executor<H, J, N, S>>, metrics: Arc<dyn RolloutMetrics>) -> Self {
        Self {
            exec,
            metrics,
            rebooted: tokio::sync::Mutex::default(),
        }
    }

    /// The executor the loop acts through.
    pub fn executor(&self) -> &Arc<Executor<H, J, N, S>> {
        &self.exec
    }

    /// The workers of `pool` now, with the version each one reports
    /// (`None` for one that does not answer).
    ///
    /// # Errors
    /// The claims or the nodes could not be read.
    pub async fn observe(&self, pool: &str) -> Result<Vec<Worker>, RolloutError> {
        let claims = self
            .exec
            .store()
            .list()
            .await
            .map_err(observing("claims"))?;
        let nodes = self.exec.nodes().list().await.map_err(observing("nodes"))?;
        let by_name: BTreeMap<&str, &NodeView> =
            nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut workers = Vec::new();
        for claim in pool_workers(&claims, pool) {
            let Some(ip) = claim.status.ip else { continue };
            let node = by_name.get(claim.name.as_str()).map(|n| (*n).clone());
            let version = match self.exec.joiner().version(ip).await {
                Ok(v) => Some(v),
                Err(e) => {
                    debug!(worker = %claim.name, error = %e, "no Talos version");
                    None
                }
            };
            workers.push(Worker {
                view: WorkerView {
                    name: claim.name.clone(),
                    control_plane: node
                        .as_ref()
                        .is_some_and(|n| n.labels.contains_key(CONTROL_PLANE_LABEL)),
                    ready: node.as_ref().is_some_and(|n| n.ready),
                    version,
                },
                ip,
                node,
            });
        }
        Ok(workers)
    }

    /// Applies `change` to the pool's rollout and writes the record,
    /// reading it again and starting over when another writer got there
    /// first. `change` answers whether it changed anything; the rollout as
    /// written (or as read, when unchanged) is returned.
    ///
    /// # Errors
    /// The record could not be read or written, or kept conflicting.
    pub async fn update(
        &self,
        pool: &str,
        mut change: impl FnMut(&mut Option<Rollout>) -> bool,
    ) -> Result<Option<Rollout>, RolloutError> {
        let store = self.exec.store();
        let mut last = None;
        for _ in 0..WRITE_TRIES {
            let mut read = store
                .read_pool(pool)
                .await
                .map_err(observing("pool record"))?;
            if !change(&mut read.record.rollout) {
                return Ok(read.record.rollout);
            }
            match store
                .write_pool(pool, &read.record, read.version.as_deref())
                .await
            {
                Ok(()) => return Ok(read.record.rollout),
                Err(e) if e.kind == ProviderErrorKind::Conflict => last = Some(e),
                Err(source) => {
                    return Err(RolloutError::Record {
                        pool: pool.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(RolloutError::Record {
            pool: pool.to_owned(),
            source: last.unwrap_or_else(|| {
                ProviderError::new(ProviderErrorKind::Conflict, "the record kept changing")
            }),
        })
    }

    /// The configured pools' names.
    fn pool_names(&self) -> Vec<String> {
        let config = self.exec.config();
        config.pools.iter().map(|p| p.name.clone()).collect()
    }

    /// One pass over every configured pool: carries each running rollout
    /// one step on. Returns whether any rollout is still running.
    ///
    /// # Errors
    /// The first pool whose pass failed (the others are still carried).
    pub async fn pass(&self) -> Result<bool, RolloutError> {
        let pools = self.pool_names();
        let mut running = false;
        let mut first_error = None;
        for pool in pools {
            match self.pass_pool(&pool).await {
                Ok(r) => running |= r,
                Err(e) => {
                    warn!(%pool, error = %e, "rolling upgrade pass failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(running),
        }
    }

    /// One step of `pool`'s rollout; true while it is still running.
    async fn pass_pool(&self, pool: &str) -> Result<bool, RolloutError> {
        let read = self
            .exec
            .store()
            .read_pool(pool)
            .await
            .map_err(observing("pool record"))?;
        let Some(rollout) = read.record.rollout else {
            return Ok(false);
        };
        if rollout.state != RolloutState::Running {
            return Ok(false);
        }
        let workers = self.observe(pool).await?;
        let views: Vec<WorkerView> = workers.iter().map(|w| w.view.clone()).collect();
        let now = self.exec.now();
        let after = match rollout::next(&rollout, &views) {
            Next::Idle => return Ok(false),
            Next::Wait(why) => {
                debug!(%pool, %why, "rolling upgrade waits");
                Some(rollout)
            }
            Next::Done => {
                info!(%pool, version = %rollout.version, "rolling upgrade done");
                self.update(pool, |r| finish(r, now)).await?
            }
            Next::Stuck(why) => {
                warn!(%pool, %why, "rolling upgrade paused");
                self.update(pool, |r| pause(r, &why)).await?
            }
            Next::Start(chosen) => {
                info!(%pool, workers = ?chosen, "rolling upgrade batch starts");
                let started = self.update(pool, |r| start_batch(r, &chosen, now)).await?;
                self.carry(pool, started, &workers).await?
            }
            Next::Continue => self.carry(pool, Some(rollout), &workers).await?,
        };
        if let Some(r) = &after {
            self.metrics.workers(pool, &WorkerCounts::of(r, &workers));
        }
        Ok(after.is_some_and(|r| r.state == RolloutState::Running))
    }
}

/// Marks a running rollout done.
fn finish(r: &mut Option<Rollout>, now: Timestamp) -> bool {
    match r {
        Some(r) if r.state == RolloutState::Running && r.current().is_none() => {
            r.state = RolloutState::Done;
            r.finished = Some(now);
            true
        }
        _ => false,
    }
}

/// Pauses a running rollout with `why`.
fn pause(r: &mut Option<Rollout>, why: &str) -> bool {
    match r {
        Some(r) if r.state == RolloutState::Running => {
            r.pause(why);
            true
        }
        _ => false,
    }
}

/// Starts a batch of `chosen`, unless the rollout stopped running or
/// another batch started meanwhile (never two at once).
fn start_batch(r: &mut Option<Rollout>, chosen: &[String], now: Timestamp) -> bool {
    match r {
        Some(r) if r.state == RolloutState::Running && r.current().is_none() => {
            r.batches.push(tidepool_core::rollout::Batch {
                started: now,
                finished: None,
                workers: chosen
                    .iter()
                    .map(|w| (w.clone(), WorkerStep::Chosen))
                    .collect(),
            });
            true
        }
        _ => false,
    }
}

/// Timing of the loop.
#[derive(Clone, Copy, Debug)]
pub struct RolloutTiming {
    /// Least real time between two passes.
    pub min_wait: Duration,
    /// Clock time between two passes while a batch runs (waiting for a
    /// worker to come back).
    pub busy_every: Duration,
}

impl Default for RolloutTiming {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_millis(250),
            busy_every: Duration::from_secs(5),
        }
    }
}

/// Runs the loop until `stop` turns true: a pass every `busy_every` while
/// a rollout runs, else once per polling interval or when a claim changes.
pub async fn run<H, J, N, S>(
    rollouts: Rollouts<H, J, N, S>,
    timing: RolloutTiming,
    stop: watch::Receiver<bool>,
) where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    let clock = rollouts.exec.clock().clone();
    let every = rollouts.exec.config().polling_interval;
    let (_never_tx, never) = watch::channel(0_u64);
    let mut claim_changes = rollouts.exec.store().changes().unwrap_or(never);
    loop {
        if *stop.borrow() {
            return;
        }
        let busy = match rollouts.pass().await {
            Ok(busy) => busy,
            Err(e) => {
                warn!(error = %e, category = e.category(), "rolling upgrade pass failed");
                false
            }
        };
        let wait = if busy {
            timing.busy_every.min(every)
        } else {
            every
        };
        let mut stop_wait = stop.clone();
        tokio::select! {
            () = clock.sleep(wait) => {}
            () = crate::wake::changed(&mut claim_changes) => {}
            () = crate::wake::changed(&mut stop_wait) => {}
        }
        tokio::time::sleep(timing.min_wait).await;
    }
}
