//! `tidepool run --dry-run`: the autoscaler observes, plans and explains
//! exactly as in a real run (Events, metrics, logs), over the dry-run
//! adapters of `tidepool_live::dry_run`, so nothing is changed in Proxmox
//! or Kubernetes but Events. What acts on a decision (the claim
//! lifecycle, the sweep of VMs against claims) does not run, and no Lease
//! is taken: a dry run never competes with the real controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::autoscaler::{Autoscaler, Timing};
use tidepool_controller::reconciler::ReconcilerOptions;
use tidepool_controller::service::Service;
use tidepool_live::dry_run::{DryRun, DryRunObserver};
use tidepool_live::{LiveExecutor, LiveObserver};
use tokio::sync::watch;
use tracing::info;

use crate::health::{Readiness, probe_proxmox};
use crate::run::{BATCH_WINDOW, Metrics, RunError, bind_health, serve_health};

/// Runs the dry run until `stop` turns true; reports the health address
/// through `bound` once serving, and returns the dry run's record.
///
/// # Errors
/// [`RunError::Bind`] when the health endpoint cannot listen.
pub async fn run_dry(
    exec: Arc<LiveExecutor>,
    metrics_addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<DryRun, RunError> {
    let metrics = Metrics::new();
    let clock = exec.clock().clone();
    let (listener, addr) = bind_health(metrics_addr).await?;
    let resync = clock
        .real(ReconcilerOptions::default().resync)
        .max(Duration::from_secs(1));
    let ready = Arc::new(Readiness::new(exec.clone(), resync * 3));
    let prober = tokio::spawn(probe_proxmox(exec.clone(), resync, stop.clone()));
    // Never a leader: the readiness reports it as one only so that the
    // endpoints answer as the real controller's do.
    let (_leading_tx, leading) = watch::channel(true);
    let health = serve_health(listener, exec.clone(), metrics.clone(), leading, ready);
    info!(%addr, "dry run: serving /healthz, /readyz and /metrics; nothing will be changed");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let dry = DryRun::new(exec.clone());
    let window = clock.real(BATCH_WINDOW).max(Duration::from_millis(20));
    let autoscaler = Autoscaler::new(
        Arc::new(Service::new(Arc::new(dry.executor()))),
        Arc::new(DryRunObserver {
            live: LiveObserver(exec.clone()),
            dry: dry.clone(),
        }),
        dry.clone(),
    );
    let (work_stop_tx, work_stop) = watch::channel(false);
    let work = tokio::spawn(tidepool_controller::autoscaler::run(
        autoscaler,
        Timing::new(window),
        work_stop,
        metrics.clone(),
    ));
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    let _ = work_stop_tx.send(true);
    work.abort();
    let _ = work.await;
    prober.abort();
    health.abort();
    info!(actions = dry.would().len(), "dry run ended");
    Ok(dry)
}
