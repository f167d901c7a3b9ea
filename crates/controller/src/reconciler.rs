//! The claim reconciler: drives every claim's lifecycle concurrently until
//! told to stop. Each claim gets its own task that steps the executor,
//! sleeping when the executor waits and backing off on retryable errors.
//! A claim that becomes idle is looked at again on the next pass (its
//! intent may change). The loop holds no state the claims do not record,
//! so restarting it anywhere is safe.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::executor::{Executor, ExecutorError, Progress};
use crate::ports::{ClaimStore, Hypervisor, Joiner, Nodes};

/// Timing of the reconciler.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerOptions {
    /// How often the claim list is read for new or changed claims.
    pub resync: Duration,
    /// Shortest sleep between steps of one claim.
    pub min_wait: Duration,
    /// Longest backoff after errors.
    pub max_backoff: Duration,
    /// Scale applied to the executor's suggested waits (the lab's time scale).
    pub time_scale: f64,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(2),
            min_wait: Duration::from_millis(50),
            max_backoff: Duration::from_secs(30),
            time_scale: 1.0,
        }
    }
}

/// Runs claims to completion in the background.
pub struct Reconciler<H, J, N, S> {
    exec: Arc<Executor<H, J, N, S>>,
    options: ReconcilerOptions,
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
        Self { exec, options }
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
        drive(&self.exec, name, self.options, stop).await
    }

    /// Reconciles every claim until `stop` turns true.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut running: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
            loop {
                if *stop.borrow() {
                    break;
                }
                running.retain(|_, task| !task.is_finished());
                match self.exec.store().list().await {
                    Ok(claims) => {
                        for claim in claims {
                            if running.contains_key(&claim.name) {
                                continue;
                            }
                            let exec = self.exec.clone();
                            let options = self.options;
                            let stop = stop.clone();
                            let name = claim.name.clone();
                            running.insert(
                                claim.name,
                                tokio::spawn(async move {
                                    if let Err(e) = drive(&exec, &name, options, &stop).await {
                                        warn!(claim = %name, error = %e, category = e.category(), "claim not reconciled");
                                    }
                                }),
                            );
                        }
                    }
                    Err(e) => warn!(error = %e, "listing claims failed"),
                }
                let mut stop_wait = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(self.options.resync) => {}
                    _ = stop_wait.changed() => {}
                }
            }
            for (_, task) in running {
                task.abort();
            }
        })
    }
}

async fn drive<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore>(
    exec: &Executor<H, J, N, S>,
    name: &str,
    options: ReconcilerOptions,
    stop: &watch::Receiver<bool>,
) -> Result<usize, ExecutorError> {
    let mut steps = 0;
    let mut backoff = options.min_wait;
    loop {
        if *stop.borrow() {
            return Ok(steps);
        }
        let wait = match exec.step(name).await {
            Ok(Progress::Advanced(step)) => {
                steps += 1;
                backoff = options.min_wait;
                debug!(claim = name, %step, "advanced");
                continue;
            }
            Ok(Progress::Idle(_)) => return Ok(steps),
            Ok(Progress::Waiting { retry_after, .. }) => {
                retry_after.div_f64(options.time_scale.max(1.0))
            }
            Err(ExecutorError::Retry { step, source }) => {
                debug!(claim = name, %step, error = %source, "retrying");
                backoff = (backoff * 2).min(options.max_backoff);
                backoff
            }
            Err(e) => return Err(e),
        };
        let mut stop_wait = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait.max(options.min_wait)) => {}
            _ = stop_wait.changed() => {}
        }
    }
}
