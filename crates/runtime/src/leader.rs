//! Leader election with a `coordination.k8s.io/v1` Lease, so that of
//! several controller replicas exactly one acts at a time.
//!
//! The holder renews the Lease every third of its duration; a candidate
//! takes it over only once the holder's last renewal is older than the
//! duration. Every write carries the Lease's resourceVersion, so two
//! candidates racing for an expired Lease cannot both win: the loser gets
//! a conflict and stays a follower.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tidepool_controller::ports::Clock;
use tokio::sync::watch;
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
    /// How long a holder's claim lasts without renewal.
    pub duration: Duration,
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

/// One attempt to acquire or renew; true when this replica holds the Lease.
///
/// # Errors
/// API failures other than a lost race (a conflict means "not leader").
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let mine = |transitions: i32, acquire: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(acquire.unwrap_or_else(|| micro(now))),
        renew_time: Some(micro(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(mine(0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let transitions = spec.lease_transitions.unwrap_or(0);
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let held = Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0),
                );
                now.duration_since(t.0).unsigned_abs() > held
            });
            let new_spec = if holder == cfg.identity {
                mine(transitions, spec.acquire_time.clone())
            } else if holder.is_empty() || expired {
                mine(transitions + 1, None)
            } else {
                return Ok(false);
            };
            lease.spec = Some(new_spec);
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Competes for the Lease until `stop` turns true, publishing leadership
/// on the returned channel. Losing contact with the API for longer than
/// the Lease duration drops leadership (another replica may have it).
/// Lease times and the renewal period (a third of the duration) are on
/// `clock`.
pub fn spawn(
    client: kube::Client,
    cfg: LeaseConfig,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let task = tokio::spawn(async move {
        let period = cfg.duration / 3;
        // Contact is measured in real time (immune to wall-clock jumps):
        // the Lease duration is converted once.
        let contact = clock.real(cfg.duration);
        let mut last_success = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let leading = match try_acquire(&api, &cfg, clock.now()).await {
                Ok(held) => {
                    last_success = tokio::time::Instant::now();
                    held
                }
                Err(e) => {
                    warn!(error = %e, lease = %cfg.name, "lease renewal failed");
                    *tx.borrow() && last_success.elapsed() < contact
                }
            };
            if leading != *tx.borrow() {
                info!(identity = %cfg.identity, leading, "leadership changed");
                let _ = tx.send(leading);
            }
            tokio::select! {
                () = clock.sleep(period) => {}
                () = tidepool_controller::wake::changed(&mut stop) => {}
            }
        }
        let _ = tx.send(false);
    });
    (rx, task)
}
