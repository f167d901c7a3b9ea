//! Leader election with a `coordination.k8s.io/v1` Lease, so that of
//! several controller replicas (and `tidepool provision --wait` beside
//! them) exactly one drives claims at a time.
//!
//! # Guarantees
//! - **Expiry on the candidate's own clock.** A candidate considers the
//!   Lease expired only once it has itself seen the same record (holder and
//!   resourceVersion) unchanged for the Lease's duration, measured on its
//!   own monotonic clock, as client-go does. The holder's `renewTime` is
//!   written for people and never compared with anyone's wall clock, so two
//!   machines whose clocks disagree cannot both lead.
//! - **Fencing by deadline.** The holder renews every sixth of the
//!   duration; every attempt is bounded by a request timeout, and a holder
//!   whose last successful renewal *started* more than the renew deadline
//!   (two thirds of the duration) ago stops leading, even while a request
//!   still hangs. Others can take over no earlier than a full duration
//!   after that renewal started, so the old leader has stopped by then.
//! - **Races are settled by the API server.** Every write carries the
//!   resourceVersion it read: two candidates racing for an expired Lease
//!   cannot both win; the loser gets a conflict and stays a follower.
//! - **Graceful hand-over.** A holder told to stop releases the Lease
//!   (clears the holder), so a standby takes over at its next attempt.
//!
//! All of it is real time, never the controller's clock: leadership is
//! about processes and networks, which a scaled lab clock does not speed
//! up.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tidepool_controller::ports::Clock;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Who competes for which Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name, or host and process).
    pub identity: String,
    /// How long a holder's claim lasts without renewal (real time).
    pub duration: Duration,
}

impl LeaseConfig {
    /// How long a holder keeps leading without a successful renewal: two
    /// thirds of the duration.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the Lease is renewed or tried for: a sixth of the duration.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 6).max(Duration::from_millis(10))
    }

    /// How long one attempt (a read and a write) may take.
    pub fn request_timeout(&self) -> Duration {
        self.retry_period()
    }
}

/// Why an attempt on the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or failed the request.
    #[error("{operation} Lease {lease}")]
    Api {
        /// What was attempted (`reading`, `creating`, `renewing`, ...).
        operation: &'static str,
        /// The Lease's name.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
    /// The attempt did not finish in time.
    #[error("trying for Lease {lease}: no answer within {after:?}")]
    Timeout {
        /// The Lease's name.
        lease: String,
        /// How long was waited.
        after: Duration,
    },
}

impl LeaderError {
    /// A stable category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::Timeout { .. } => "timeout",
        }
    }
}

/// What a candidate last saw of someone else's Lease, and when it first
/// saw it on its own monotonic clock.
#[derive(Clone, Debug)]
struct Seen {
    holder: String,
    resource_version: Option<String>,
    since: Instant,
}

/// One replica's view of the Lease: tries to take or renew it, remembering
/// when it first saw each version of another holder's record.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    seen: Option<Seen>,
}

/// The spec this replica writes when it takes or renews the Lease.
fn held_by(
    cfg: &LeaseConfig,
    now: MicroTime,
    transitions: i32,
    acquired: Option<MicroTime>,
) -> LeaseSpec {
    let secs = i32::try_from(cfg.duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

impl Elector {
    /// An elector for `cfg` through `client`.
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        Self {
            api,
            cfg,
            seen: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn api_error(&self, operation: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Api {
            operation,
            lease: self.cfg.name.clone(),
            source,
        }
    }

    /// Whether another holder's record, as read now, has stood unchanged
    /// for its duration on this replica's clock.
    fn expired(&mut self, holder: &str, lease: &Lease, spec: &LeaseSpec) -> bool {
        let rv = lease.metadata.resource_version.clone();
        let same = self
            .seen
            .as_ref()
            .is_some_and(|s| s.holder == holder && s.resource_version == rv);
        if !same {
            self.seen = Some(Seen {
                holder: holder.to_owned(),
                resource_version: rv,
                since: Instant::now(),
            });
            return false;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.duration, Duration::from_secs);
        self.seen
            .as_ref()
            .is_some_and(|s| s.since.elapsed() >= duration)
    }

    /// One attempt to take or renew the Lease; `Ok(true)` when this
    /// replica holds it afterwards. `now` is only written (`renewTime`,
    /// `acquireTime`), never compared.
    ///
    /// # Errors
    /// API failures other than a lost race (a conflict means "not leader").
    pub async fn try_acquire_or_renew(
        &mut self,
        now: jiff::Timestamp,
    ) -> Result<bool, LeaderError> {
        let now = MicroTime(now);
        let Some(mut lease) = self.read().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_by(&self.cfg, now, 0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(self.api_error("creating")(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.cfg.identity {
            held_by(&self.cfg, now, transitions, spec.acquire_time.clone())
        } else if holder.is_empty() || self.expired(&holder, &lease, &spec) {
            held_by(&self.cfg, now, transitions + 1, None)
        } else {
            return Ok(false);
        };
        lease.spec = Some(new_spec);
        let won = self.write(&lease, "renewing").await?;
        if won {
            self.seen = None;
        }
        Ok(won)
    }

    /// The Lease as stored, if there is one.
    async fn read(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.api_error("reading"))
    }

    /// Replaces the Lease, guarded by the resourceVersion it was read at;
    /// `Ok(false)` when someone wrote it in between.
    async fn write(&self, lease: &Lease, operation: &'static str) -> Result<bool, LeaderError> {
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(operation)(e)),
        }
    }

    /// Gives the Lease up if this replica holds it (clears the holder, so
    /// a standby takes over at once). Holding it no longer is success.
    ///
    /// # Errors
    /// API failures other than a lost race.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.read().await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        // Lost to a race: someone else wrote it, so it is not ours anyway.
        self.write(&lease, "releasing").await.map(|_| ())
    }

    /// Who holds the Lease now, as recorded (`None` when nobody does or
    /// there is no Lease); for people, not for deciding who leads.
    ///
    /// # Errors
    /// API failures.
    pub async fn holder(&self) -> Result<Option<String>, LeaderError> {
        Ok(self
            .read()
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// One bounded attempt: `Ok(true)` when this replica holds the Lease.
    async fn attempt(
        &mut self,
        now: jiff::Timestamp,
        within: Duration,
    ) -> Result<bool, LeaderError> {
        match tokio::time::timeout(within, self.try_acquire_or_renew(now)).await {
            Ok(result) => result,
            Err(_) => Err(LeaderError::Timeout {
                lease: self.cfg.name.clone(),
                after: within,
            }),
        }
    }
}

/// Competes for the Lease until `stop` turns true, publishing leadership
/// on the returned channel; on stop it publishes `false` and releases the
/// Lease if it holds it. Leadership drops as soon as the renew deadline
/// passes without a successful renewal, whether requests fail or hang.
/// `clock` only dates what is written into the Lease.
pub fn spawn(
    client: kube::Client,
    cfg: LeaseConfig,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut elector = Elector::new(client, cfg.clone());
        let deadline_after = cfg.renew_deadline();
        // When the last successful renewal started, while leading.
        let mut renewed: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let started = Instant::now();
            // A leader's attempt may not outlast its deadline.
            let within = match renewed {
                Some(at) => cfg
                    .request_timeout()
                    .min((at + deadline_after).saturating_duration_since(started)),
                None => cfg.request_timeout(),
            };
            let outcome = tokio::select! {
                r = elector.attempt(clock.now(), within) => r,
                () = tidepool_controller::wake::changed(&mut stop) => break,
            };
            match outcome {
                Ok(true) => renewed = Some(started),
                Ok(false) => renewed = None,
                Err(e) => {
                    warn!(error = %e, category = e.category(), lease = %cfg.name, "lease attempt failed");
                }
            }
            if renewed.is_some_and(|at| at.elapsed() >= deadline_after) {
                warn!(identity = %cfg.identity, "lease not renewed before its deadline: stopping");
                renewed = None;
            }
            publish(&tx, renewed.is_some(), &cfg.identity);
            // Sleep a retry period, but wake for the deadline while leading.
            let mut pause = cfg.retry_period();
            if let Some(at) = renewed {
                pause = pause.min((at + deadline_after).saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = tidepool_controller::wake::changed(&mut stop) => {}
            }
        }
        publish(&tx, false, &cfg.identity);
        if renewed.is_some() {
            match tokio::time::timeout(cfg.request_timeout(), elector.release()).await {
                Ok(Ok(())) => info!(identity = %cfg.identity, "lease released"),
                Ok(Err(e)) => warn!(error = %e, "releasing the lease failed"),
                Err(_) => warn!(lease = %cfg.name, "releasing the lease timed out"),
            }
        }
    });
    (rx, task)
}

fn publish(tx: &watch::Sender<bool>, leading: bool, identity: &str) {
    if leading != *tx.borrow() {
        info!(identity, leading, "leadership changed");
        let _ = tx.send(leading);
    }
}
