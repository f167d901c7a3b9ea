//! The operations on a pool's rolling upgrade that the CLI and the MCP
//! server offer: plan (read-only), start, status, resume and abort. Each
//! one reads or changes the rollout on the pool's durable record; the
//! loop of the leading controller ([`super::run`]) carries it out.

use tidepool_core::rollout::{self, MaxUnavailable, Rollout, WorkerStep};
use tracing::{info, warn};

use super::{RolloutError, Rollouts, WorkerCounts};
use crate::ports::{ClaimStore, GuestOs, Hypervisor, Joiner, Nodes};

/// What a rolling upgrade of a pool would do, or does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradePlan {
    /// The pool.
    pub pool: String,
    /// The installer image.
    pub image: String,
    /// The version it installs.
    pub version: String,
    /// How many workers may be unavailable at once.
    pub max_unavailable: MaxUnavailable,
    /// Each worker (control-plane nodes left out) with the version it
    /// reports (`None` when it does not answer).
    pub workers: Vec<(String, Option<String>)>,
    /// The drifted workers in the batches they would go in, in order.
    pub batches: Vec<Vec<String>>,
}

/// A pool's rollout as it stands, with its workers counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeStatus {
    /// The pool.
    pub pool: String,
    /// The rollout.
    pub rollout: Rollout,
    /// Its workers by state.
    pub counts: WorkerCounts,
}

impl<H, J, N, S> Rollouts<H, J, N, S>
where
    H: Hypervisor,
    J: Joiner + GuestOs,
    N: Nodes,
    S: ClaimStore,
{
    /// What upgrading `pool` to `image` would do: read-only.
    ///
    /// # Errors
    /// The pool is not configured, the image names no version, or the
    /// workers could not be observed.
    pub async fn plan(
        &self,
        pool: &str,
        image: &str,
        max_unavailable: MaxUnavailable,
    ) -> Result<UpgradePlan, RolloutError> {
        if self.exec.config().pool(pool).is_none() {
            return Err(RolloutError::UnknownPool(pool.to_owned()));
        }
        let version = rollout::image_version(image)?;
        let workers = self.observe(pool).await?;
        let views: Vec<_> = workers.iter().map(|w| w.view.clone()).collect();
        Ok(UpgradePlan {
            pool: pool.to_owned(),
            image: image.to_owned(),
            batches: rollout::plan(&version, max_unavailable, &views),
            version,
            max_unavailable,
            workers: views
                .into_iter()
                .filter(|v| !v.control_plane)
                .map(|v| (v.name, v.version))
                .collect(),
        })
    }

    /// Starts upgrading `pool` to `image`, `requested_by` asking; returns
    /// the plan as it stands at the start.
    ///
    /// # Errors
    /// As [`Rollouts::plan`]; [`RolloutError::Refused`] when the pool has a
    /// rollout running or paused (resume or abort it first).
    pub async fn start(
        &self,
        pool: &str,
        image: &str,
        max_unavailable: MaxUnavailable,
        requested_by: &str,
    ) -> Result<UpgradePlan, RolloutError> {
        let plan = self.plan(pool, image, max_unavailable).await?;
        let now = self.exec.now();
        let fresh = Rollout::new(image, max_unavailable, requested_by, now)?;
        let mut active = None;
        self.update(pool, |r| match r {
            Some(r) if r.is_active() => {
                active = Some(r.version.clone());
                false
            }
            _ => {
                active = None;
                *r = Some(fresh.clone());
                true
            }
        })
        .await?;
        if let Some(version) = active {
            return Err(RolloutError::Refused(format!(
                "pool {pool} has a rolling upgrade to {version} already; resume or abort it first"
            )));
        }
        info!(%pool, %image, %requested_by, "rolling upgrade started");
        Ok(plan)
    }

    /// Where `pool`'s latest rollout stands; `None` when it never had one.
    ///
    /// # Errors
    /// The pool is not configured, or its record or workers could not be
    /// read.
    pub async fn status(&self, pool: &str) -> Result<Option<UpgradeStatus>, RolloutError> {
        if self.exec.config().pool(pool).is_none() {
            return Err(RolloutError::UnknownPool(pool.to_owned()));
        }
        let read = self
            .exec
            .store()
            .read_pool(pool)
            .await
            .map_err(super::observing("pool record"))?;
        let Some(rollout) = read.record.rollout else {
            return Ok(None);
        };
        let workers = self.observe(pool).await?;
        Ok(Some(UpgradeStatus {
            pool: pool.to_owned(),
            counts: WorkerCounts::of(&rollout, &workers),
            rollout,
        }))
    }

    /// Every configured pool's latest rollout.
    ///
    /// # Errors
    /// As [`Rollouts::status`].
    pub async fn statuses(&self) -> Result<Vec<UpgradeStatus>, RolloutError> {
        let pools = self.pool_names();
        let mut out = Vec::new();
        for pool in pools {
            if let Some(s) = self.status(&pool).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Resumes `pool`'s paused rollout: the drifted workers are chosen
    /// again, those of the failed batch included.
    ///
    /// # Errors
    /// [`RolloutError::Refused`] when it has no paused rollout.
    pub async fn resume(&self, pool: &str) -> Result<Rollout, RolloutError> {
        let mut resumed = false;
        let after = self
            .update(pool, |r| {
                resumed = r.as_mut().is_some_and(Rollout::resume);
                resumed
            })
            .await?;
        match after {
            Some(r) if resumed => {
                info!(%pool, "rolling upgrade resumed");
                Ok(r)
            }
            _ => Err(RolloutError::Refused(format!(
                "pool {pool} has no paused rolling upgrade"
            ))),
        }
    }

    /// Aborts `pool`'s rollout: no further batch starts; the workers of the
    /// batch in progress are uncordoned (one asked to upgrade comes back
    /// on whichever version it boots).
    ///
    /// # Errors
    /// [`RolloutError::Refused`] when it has no running or paused rollout.
    pub async fn abort(&self, pool: &str) -> Result<Rollout, RolloutError> {
        let now = self.exec.now();
        let mut open = Vec::new();
        let mut aborted = false;
        let after = self
            .update(pool, |r| {
                open = r
                    .as_ref()
                    .and_then(Rollout::current)
                    .map(|b| {
                        b.workers
                            .iter()
                            .filter(|(_, s)| !matches!(s, WorkerStep::Done))
                            .map(|(w, _)| w.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                aborted = r.as_mut().is_some_and(|r| r.abort(now));
                aborted
            })
            .await?;
        match after {
            Some(r) if aborted => {
                for w in &open {
                    if let Err(e) = self.exec.nodes().uncordon(w).await {
                        warn!(worker = %w, error = %e, "could not uncordon after the abort");
                    }
                }
                info!(%pool, "rolling upgrade aborted");
                Ok(r)
            }
            _ => Err(RolloutError::Refused(format!(
                "pool {pool} has no rolling upgrade to abort"
            ))),
        }
    }
}
