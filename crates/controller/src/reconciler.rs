//! The claim reconciler: drives every claim's lifecycle concurrently until
//! told to stop. Each claim gets its own task that steps the executor,
//! sleeping when the executor waits and backing off on retryable errors.
//! A claim that becomes idle is looked at again on the next pass (its
//! intent may change). The loop holds no state the claims do not record,
//! so restarting it anywhere is safe.
//!
//! Waits the executor suggests, and the resync, are the clock's time (the
//! executor's clock); the floors and the error backoff are real time, so
//! a fast clock never turns them into a busy loop against the APIs.
//!
//! A step that keeps failing backs off exponentially per claim, up to
//! `max_backoff`; every failed try is counted by step and category, and
//! the number of claims backing off is reported, through [`StepMetrics`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, warn};

use crate::claim::Claim;
use crate::executor::{Executor, ExecutorError, Progress};
use crate::ports::{ClaimStore, Clock, Hypervisor, Joiner, Nodes};
use tidepool_core::Step;

/// Where the reconciler reports failing steps, for metrics. Label values
/// are bounded: step names and error categories.
pub trait StepMetrics: Send + Sync {
    /// One failed try of `step`, by error category.
    fn step_failed(&self, step: Step, category: &str);
    /// How many claims are backing off after a failed step right now.
    fn backing_off(&self, claims: usize);
}

/// No metrics.
impl StepMetrics for () {
    fn step_failed(&self, _: Step, _: &str) {}
    fn backing_off(&self, _: usize) {}
}

/// The claims backing off right now, with where their count goes.
#[derive(Clone)]
struct Backoffs {
    claims: Arc<Mutex<BTreeSet<String>>>,
    metrics: Arc<dyn StepMetrics>,
}

impl Backoffs {
    /// Marks `claim` as backing off (`on`) or not, and reports the count.
    fn set(&self, claim: &str, on: bool) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if on {
            claims.insert(claim.to_owned())
        } else {
            claims.remove(claim)
        };
        if changed {
            self.metrics.backing_off(claims.len());
        }
    }
}

/// Timing of the reconciler.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerOptions {
    /// How often every claim is looked at again without a change
    /// notification, in the clock's time: a safety net when the store
    /// reports changes, the only trigger when it cannot.
    pub resync: Duration,
    /// Shortest sleep between steps of one claim, and between resyncs, in
    /// real time.
    pub min_wait: Duration,
    /// Longest backoff after errors, in real time.
    pub max_backoff: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(30),
            min_wait: Duration::from_millis(50),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Runs claims to completion in the background.
pub struct Reconciler<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    options: ReconcilerOptions,
    backoffs: Backoffs,
}

impl<H, J, N, S> Reconciler<H, J, N, S>
where
    H: Hypervisor + 'static,
    J: Joiner + 'static,
    N: Nodes + 'static,
    S: ClaimStore + 'static,
{
    /// A reconciler over `exec`.
    pub fn new(exec: Arc<Executor<H, J, N, S>>, options: ReconcilerOptions) -> Self {
        Self {
            exec,
            options,
            backoffs: Backoffs {
                claims: Arc::default(),
                metrics: Arc::new(()),
            },
        }
    }

    /// Reports failing steps and the claims backing off to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn StepMetrics>) -> Self {
        self.backoffs.metrics = metrics;
        self
    }

    /// Drives one claim until it is idle; returns the number of steps taken.
    ///
    /// # Errors
    /// Non-retryable executor errors (store failures, unknown pools).
    pub async fn drive(
        &self,
        name: &str,
        stop: &watch::Receiver<bool>,
    ) -> Result<usize, ExecutorError> {
        drive(&self.exec, name, self.options, &self.backoffs, stop).await
    }

    /// Reconciles every claim until `stop` turns true. Aborting the
    /// returned task aborts every claim's drive with it (fencing: a replica
    /// that stops leading drops the work in flight at once).
    ///
    /// Watch-driven: the loop sleeps until the store reports a claim change
    /// (or a drive finishes), then looks at the claims as last observed and
    /// starts a drive for each claim that has none running and has changed
    /// since its last drive went idle. `resync` is only the safety net (and
    /// the only trigger for a store that cannot report changes).
    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut running: BTreeMap<String, AbortOnDrop> = BTreeMap::new();
            // Each claim as it was when its last drive started: an idle
            // claim is driven again only once it differs.
            let mut started: BTreeMap<String, Claim> = BTreeMap::new();
            let mut changes = self.exec.store().changes();
            let clock = self.exec.clock().clone();
            let finished = Arc::new(Notify::new());
            loop {
                if *stop.borrow() {
                    break;
                }
                running.retain(|_, task| !task.0.is_finished());
                match self.exec.store().observed().await {
                    Ok(claims) => {
                        started.retain(|name, _| claims.iter().any(|c| &c.name == name));
                        for claim in claims {
                            if running.contains_key(&claim.name)
                                || started.get(&claim.name) == Some(&claim)
                            {
                                continue;
                            }
                            let exec = self.exec.clone();
                            let options = self.options;
                            let stop = stop.clone();
                            let name = claim.name.clone();
                            let finished = finished.clone();
                            let backoffs = self.backoffs.clone();
                            started.insert(claim.name.clone(), claim);
                            running.insert(
                                name.clone(),
                                AbortOnDrop(tokio::spawn(async move {
                                    if let Err(e) = drive(&exec, &name, options, &backoffs, &stop).await {
                                        warn!(claim = %name, error = %e, category = e.category(), "claim not reconciled");
                                    }
                                    finished.notify_one();
                                })),
                            );
                        }
                    }
                    Err(e) => warn!(error = %e, "listing claims failed"),
                }
                let mut stop_wait = stop.clone();
                let changed = async {
                    match changes.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ok = changed => {
                        if !ok {
                            changes = None;
                        }
                    }
                    () = finished.notified() => {}
                    () = pause(clock.as_ref(), self.options.resync, self.options.min_wait) => {
                        // The safety net: every claim is looked at afresh.
                        started.clear();
                    }
                    () = crate::wake::changed(&mut stop_wait) => {}
                }
            }
            drop(running);
        })
    }
}

/// A claim's drive, aborted when dropped: with the reconciler's own task.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drives one claim until it is idle, inside a `reconcile` span naming the
/// claim, so every log line of its steps (and of the provider calls they
/// make) says which claim it was for.
async fn drive<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore>(
    exec: &Executor<H, J, N, S>,
    name: &str,
    options: ReconcilerOptions,
    backoffs: &Backoffs,
    stop: &watch::Receiver<bool>,
) -> Result<usize, ExecutorError> {
    let span = tracing::info_span!("reconcile", claim = name);
    let result = drive_steps(exec, name, options, backoffs, stop)
        .instrument(span)
        .await;
    backoffs.set(name, false);
    result
}

async fn drive_steps<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore>(
    exec: &Executor<H, J, N, S>,
    name: &str,
    options: ReconcilerOptions,
    backoffs: &Backoffs,
    stop: &watch::Receiver<bool>,
) -> Result<usize, ExecutorError> {
    let mut steps = 0;
    let mut backoff = options.min_wait;
    loop {
        if *stop.borrow() {
            return Ok(steps);
        }
        // How long to wait: on the clock, then at least this long in real time.
        let result = exec.step(name).await;
        backoffs.set(name, matches!(result, Err(ExecutorError::Retry { .. })));
        let (clock_wait, real_wait) = match result {
            Ok(Progress::Advanced(step)) => {
                steps += 1;
                backoff = options.min_wait;
                debug!(claim = name, %step, "advanced");
                continue;
            }
            Ok(Progress::Idle(_)) => return Ok(steps),
            Ok(Progress::Waiting { retry_after, .. }) => (retry_after, options.min_wait),
            Err(ExecutorError::Retry { step, source }) => {
                backoffs.metrics.step_failed(step, source.kind.as_str());
                debug!(claim = name, %step, error = %source, "retrying");
                backoff = (backoff * 2).min(options.max_backoff);
                (Duration::ZERO, backoff.max(options.min_wait))
            }
            // Someone wrote the claim since the step read it (its status
            // write was conditional): the next step reads it again.
            Err(ExecutorError::Store { source, .. })
                if source.kind == crate::ports::ProviderErrorKind::Conflict =>
            {
                debug!(claim = name, error = %source, "claim changed meanwhile: reading it again");
                backoff = (backoff * 2).min(options.max_backoff);
                (Duration::ZERO, backoff.max(options.min_wait))
            }
            Err(e) => return Err(e),
        };
        let mut stop_wait = stop.clone();
        tokio::select! {
            () = pause(exec.clock().as_ref(), clock_wait, real_wait) => {}
            () = crate::wake::changed(&mut stop_wait) => {}
        }
    }
}

/// Waits `on_clock` of the clock's time and at least `at_least` of real
/// time, whichever ends later.
async fn pause(clock: &dyn Clock, on_clock: Duration, at_least: Duration) {
    tokio::join!(clock.sleep(on_clock), tokio::time::sleep(at_least));
}
