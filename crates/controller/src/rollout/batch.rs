//! Carrying one batch of a rolling upgrade on, a step per worker per pass:
//! chosen → draining (cordon, drain) → upgrading (the Talos upgrade asked
//! once) → done (back on the target version, healthy, uncordoned), or
//! failed, which ends the batch and pauses the rollout.
//!
//! Each move is a compare-and-set on the pool's record: it is written only
//! if the worker is still at the step this pass read, and the action
//! follows only once the write succeeded. Of two processes racing (a
//! deposed leader and its successor), one moves the worker and acts; the
//! other finds the step changed and does nothing. An upgrade recorded but
//! cut short before it was asked is not asked again: the worker is waited
//! for and fails the batch when it does not come back on the target.

use std::time::Duration;

use tidepool_core::jiff::Timestamp;
use tidepool_core::rollout::{Rollout, RolloutState, WorkerStep};
use tracing::{info, warn};

use super::{RolloutError, Rollouts, Worker};
use crate::ports::{ClaimStore, GuestOs, Hypervisor, Joiner, Nodes, ProviderErrorKind};

/// How long a worker has, from its upgrade being asked, to come back
/// healthy on the target version (clock time): the install, the reboot,
/// a boot back into the old image, and the node's registration.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One worker's move from the step read to the next.
#[derive(Clone, Debug)]
struct Move {
    worker: String,
    from: WorkerStep,
    to: WorkerStep,
}

/// What a look at a worker found.
enum Outcome {
    /// Move to this step.
    To(WorkerStep),
    /// Not yet; look again next pass.
    Wait,
}

/// The failed step with `reason`.
fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::To(WorkerStep::Failed {
        reason: reason.into(),
    })
}

/// Applies `moves` whose worker is still at its `from` step in the batch
/// in progress; ends the batch once every worker is done or failed, and
/// pauses the rollout on a failure. True when anything changed.
fn apply(r: &mut Option<Rollout>, moves: &[Move], now: Timestamp) -> bool {
    let Some(r) = r.as_mut().filter(|r| r.state == RolloutState::Running) else {
        return false;
    };
    let Some(batch) = r.current_mut() else {
        return false;
    };
    let mut changed = false;
    for m in moves {
        if let Some(step) = batch.workers.get_mut(&m.worker)
            && *step == m.from
        {
            *step = m.to.clone();
            changed = true;
        }
    }
    let ended = batch
        .workers
        .values()
        .all(|s| matches!(s, WorkerStep::Done | WorkerStep::Failed { .. }));
    if changed && ended {
        batch.finished = Some(now);
        let failure = batch
            .failure()
            .map(|(worker, reason)| format!("{worker}: {reason}"));
        if let Some(why) = failure {
            r.pause(&why);
        }
    }
    changed
}

impl<H, J, N, S> Rollouts<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    /// Records `moves` and returns the rollout as written (`None` when
    /// there was nothing to write) with the moves that were applied (each
    /// worker still at its `from` step when written).
    async fn record(
        &self,
        pool: &str,
        moves: Vec<Move>,
    ) -> Result<(Option<Rollout>, Vec<Move>), RolloutError> {
        if moves.is_empty() {
            return Ok((None, moves));
        }
        let now = self.exec.now();
        let written = self.update(pool, |r| apply(r, &moves, now)).await?;
        // Applied: the worker stands at the move's step in the batch as
        // written (the last one, which the move may have ended).
        let last = written.as_ref().and_then(|r| r.batches.last());
        let applied = moves
            .into_iter()
            .filter(|m| last.and_then(|b| b.workers.get(&m.worker)) == Some(&m.to))
            .collect();
        Ok((written, applied))
    }

    /// Carries the batch in progress of `rollout` one step on for each of
    /// its workers; returns the rollout as last written.
    pub(super) async fn carry(
        &self,
        pool: &str,
        rollout: Option<Rollout>,
        workers: &[Worker],
    ) -> Result<Option<Rollout>, RolloutError> {
        let Some(batch) = rollout.as_ref().and_then(Rollout::current) else {
            return Ok(rollout);
        };
        let Some(rollout_ref) = rollout.as_ref() else {
            return Ok(rollout);
        };
        let (image, target) = (rollout_ref.image.clone(), rollout_ref.version.clone());
        let steps = batch.workers.clone();
        let now = self.exec.now();
        let find = |name: &str| workers.iter().find(|w| w.view.name == name);

        // Chosen: the drain starts (recorded first, with its start).
        let starting: Vec<Move> = steps
            .iter()
            .filter(|(_, s)| **s == WorkerStep::Chosen)
            .map(|(w, s)| Move {
                worker: w.clone(),
                from: s.clone(),
                to: WorkerStep::Draining { since: now },
            })
            .collect();
        let mut latest = rollout.clone();
        let (written, started) = self.record(pool, starting).await?;
        latest = written.or(latest);
        for m in &started {
            let message = format!("rolling upgrade to {target}: cordoning and draining");
            self.exec
                .nodes()
                .announce(&m.worker, "UpgradeStarted", &message)
                .await;
        }

        // Draining: cordon and drain, all of the batch at once.
        let draining: Vec<(String, WorkerStep)> = steps
            .iter()
            .map(|(w, s)| {
                let moved = started
                    .iter()
                    .find(|m| m.worker == *w)
                    .map(|m| m.to.clone());
                (w.clone(), moved.unwrap_or_else(|| s.clone()))
            })
            .filter(|(_, s)| matches!(s, WorkerStep::Draining { .. }))
            .collect();
        // Every worker of the batch is cordoned before any is drained, so
        // evicted pods do not land on a node drained next.
        for (w, _) in &draining {
            if let Err(e) = self.exec.nodes().cordon(w).await {
                warn!(worker = %w, error = %e, "could not cordon for the upgrade");
            }
        }
        let mut moves = Vec::new();
        for (w, s) in &draining {
            let WorkerStep::Draining { since } = s else {
                continue;
            };
            let to = match self.drain(pool, w, *since).await {
                Outcome::Wait => continue,
                Outcome::To(WorkerStep::Upgrading { at, .. }) => WorkerStep::Upgrading {
                    at,
                    from: find(w).and_then(|x| x.view.version.clone()),
                },
                Outcome::To(other) => other,
            };
            moves.push(Move {
                worker: w.clone(),
                from: s.clone(),
                to,
            });
        }
        let (written, drained) = self.record(pool, moves).await?;
        latest = written.or(latest);

        // Upgrading, just recorded: ask each one, once.
        let mut moves = Vec::new();
        for m in drained
            .iter()
            .filter(|m| matches!(m.to, WorkerStep::Upgrading { .. }))
        {
            let Some(w) = find(&m.worker) else { continue };
            self.rebooted.lock().await.remove(&m.worker);
            info!(worker = %m.worker, %image, "asking for the Talos upgrade");
            if let Err(e) = self.exec.joiner().upgrade(w.ip, &image, false).await {
                moves.push(Move {
                    worker: m.worker.clone(),
                    from: m.to.clone(),
                    to: WorkerStep::Failed {
                        reason: format!("the upgrade was refused: {e}"),
                    },
                });
            }
        }
        for m in drained
            .iter()
            .filter(|m| matches!(m.to, WorkerStep::Failed { .. }))
        {
            self.give_back(&m.worker, &m.to).await;
        }

        // Upgrading since an earlier pass: checked against what was observed.
        for (w, s) in &steps {
            let WorkerStep::Upgrading { at, from } = s else {
                continue;
            };
            let outcome = match find(w) {
                Some(worker) => self.check(worker, &target, *at, from.as_deref(), now).await,
                None => failed("the worker left the pool during its upgrade"),
            };
            if let Outcome::To(to) = outcome {
                moves.push(Move {
                    worker: w.clone(),
                    from: s.clone(),
                    to,
                });
            }
        }
        let (written, checked) = self.record(pool, moves).await?;
        for m in &checked {
            self.give_back(&m.worker, &m.to).await;
        }
        Ok(written.or(latest))
    }

    /// Drains `worker` (cordoned already): `Upgrading` once drained, `Failed`
    /// when blocked past the pool's drain timeout or refused.
    async fn drain(&self, pool: &str, worker: &str, since: Timestamp) -> Outcome {
        let Some(cfg) = self.exec.config().pool(pool) else {
            return failed("the pool is no longer configured");
        };
        let (timeout, grace) = (cfg.scale_down.drain_timeout, cfg.scale_down.grace_period);
        let nodes = self.exec.nodes();
        let now = self.exec.now();
        match nodes.drain(worker, timeout, false, Some(grace)).await {
            Ok(()) => Outcome::To(WorkerStep::Upgrading {
                at: self.exec.now(),
                from: None,
            }),
            Err(e)
                if e.kind == ProviderErrorKind::Blocked
                    || e.kind == ProviderErrorKind::Transient =>
            {
                if now.duration_since(since).unsigned_abs() <= timeout {
                    info!(%worker, error = %e, "drain for the upgrade waits");
                    Outcome::Wait
                } else {
                    failed(format!(
                        "drain blocked for longer than {}s: {e}",
                        timeout.as_secs()
                    ))
                }
            }
            Err(e) => failed(format!("drain failed: {e}")),
        }
    }

    /// Whether `worker`, asked to upgrade at `at` from `from`, is back
    /// healthy on `target`; failed when it booted back into `from` after a
    /// reboot (rolled back) or did not come back within [`UPGRADE_TIMEOUT`].
    async fn check(
        &self,
        worker: &Worker,
        target: &str,
        at: Timestamp,
        from: Option<&str>,
        now: Timestamp,
    ) -> Outcome {
        let name = &worker.view.name;
        let Some(version) = worker.view.version.as_deref() else {
            self.rebooted.lock().await.insert(name.clone());
            return Outcome::Wait;
        };
        let ready = worker.node.as_ref().is_some_and(|n| n.ready);
        if version == target && ready && self.services_running(worker).await {
            return Outcome::To(WorkerStep::Done);
        }
        let rebooted = self.rebooted.lock().await.contains(name);
        if rebooted && ready && from == Some(version) && version != target {
            return failed(format!(
                "booted back into {version} after the upgrade to {target} (rolled back)"
            ));
        }
        if now.duration_since(at).unsigned_abs() > UPGRADE_TIMEOUT {
            return failed(format!(
                "not back healthy on {target} within {} minutes (reports {version}, Ready: {ready})",
                UPGRADE_TIMEOUT.as_secs() / 60
            ));
        }
        Outcome::Wait
    }

    /// Whether kubelet and containerd run on the worker.
    async fn services_running(&self, worker: &Worker) -> bool {
        match self.exec.joiner().services(worker.ip).await {
            Ok(services) => ["kubelet", "containerd"].iter().all(|id| {
                services
                    .iter()
                    .any(|s| s.id == *id && s.state == "Running" && s.healthy != Some(false))
            }),
            Err(_) => false,
        }
    }

    /// Uncordons a worker whose upgrade ended (done, or failed and back on
    /// its old version) and says so on its node.
    async fn give_back(&self, worker: &str, step: &WorkerStep) {
        let nodes = self.exec.nodes();
        if let Err(e) = nodes.uncordon(worker).await {
            warn!(%worker, error = %e, "could not uncordon after the upgrade");
        }
        self.rebooted.lock().await.remove(worker);
        match step {
            WorkerStep::Done => {
                nodes
                    .announce(
                        worker,
                        "Upgraded",
                        "rolling upgrade: back healthy on the target version",
                    )
                    .await
            }
            WorkerStep::Failed { reason } => {
                nodes
                    .announce(
                        worker,
                        "UpgradeFailed",
                        &format!("rolling upgrade paused: {reason}"),
                    )
                    .await
            }
            _ => {}
        }
    }
}
