//! `tidepool run`: the controller process. It competes for leadership with
//! a Lease, drives every WorkerClaim through its lifecycle while it leads,
//! and serves `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::leader::{self, LeaseConfig};
use crate::live::connect::LiveExecutor;
use crate::ports::ClaimStore;
use crate::reconciler::{Reconciler, ReconcilerOptions};

/// Labels of the workers gauge: bounded by the configured pools and the
/// eight lifecycle phases.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    pool: String,
    phase: String,
}

/// A pool label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

/// The controller's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    leader: Gauge<i64, AtomicI64>,
    workers: Family<WorkerLabels, Gauge<i64, AtomicI64>>,
    oldest_provisioning: Family<PoolLabel, Gauge<i64, AtomicI64>>,
    registry: std::sync::Mutex<Registry>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let m = Self::default();
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "tidepool_leader",
                "1 while this replica leads",
                m.leader.clone(),
            );
            r.register(
                "tidepool_workers",
                "Workers by pool and lifecycle phase",
                m.workers.clone(),
            );
        }
        Arc::new(m)
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

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Lease settings; `None` when leader election is off.
    pub lease: Option<LeaseConfig>,
    /// Simulated time scale (the lab's).
    pub time_scale: f64,
    /// Whether the autoscaler runs (else only the claim lifecycle).
    pub autoscale: bool,
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
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
    (StatusCode::OK, format!("ready ({role})"))
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

/// Serves the health and metrics endpoints; returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve_health(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { metrics, leading });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health endpoint stopped");
        }
    });
    Ok((bound, task))
}

/// Runs the controller until `stop` turns true; returns the health address
/// once serving (through `bound`) and finishes when stopped.
///
/// # Errors
/// When the health endpoint cannot listen.
pub async fn run(
    exec: Arc<LiveExecutor>,
    options: RunOptions,
    stop: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let metrics = Metrics::new();
    let (leading, election) = match &options.lease {
        Some(cfg) => {
            let client = exec.nodes().cluster().client().clone();
            let now = {
                let e = exec.clone();
                Arc::new(move || e.now()) as Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>
            };
            let (rx, task) =
                leader::spawn(client, cfg.clone(), now, options.time_scale, stop.clone());
            (rx, Some(task))
        }
        None => (watch::channel(true).1, None),
    };
    let (addr, health) =
        serve_health(options.metrics_addr, metrics.clone(), leading.clone()).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let mut leading_rx = leading.clone();
    let mut stop_rx = stop.clone();
    let mut active: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    loop {
        let lead = *leading_rx.borrow();
        metrics.leader.set(i64::from(lead));
        match (lead, active.is_some()) {
            (true, false) => {
                info!(
                    autoscale = options.autoscale,
                    "leading: reconciling worker claims"
                );
                let (tx, rx) = watch::channel(false);
                let defaults = ReconcilerOptions::default();
                let opts = ReconcilerOptions {
                    time_scale: options.time_scale,
                    // New claims are picked up within two simulated seconds.
                    resync: defaults
                        .resync
                        .div_f64(options.time_scale.max(1.0))
                        .max(Duration::from_millis(20)),
                    min_wait: defaults.min_wait.min(Duration::from_millis(20)),
                    ..defaults
                };
                let reconciler = Reconciler::new(exec.clone(), opts).spawn(rx.clone());
                let autoscaler = options.autoscale.then(|| {
                    // The batching window: about a second of real time.
                    let window = Duration::from_secs(1)
                        .div_f64(options.time_scale.max(1.0))
                        .max(Duration::from_millis(50));
                    tokio::spawn(crate::autoscaler::run(exec.clone(), window, rx))
                });
                let task = tokio::spawn(async move {
                    let _ = reconciler.await;
                    if let Some(a) = autoscaler {
                        let _ = a.await;
                    }
                });
                active = Some((tx, task));
            }
            (false, true) => {
                info!("no longer leading: stopping the reconciler");
                if let Some((tx, task)) = active.take() {
                    let _ = tx.send(true);
                    let _ = task.await;
                }
            }
            _ => {}
        }
        if let Ok(claims) = exec.store().list().await {
            metrics.workers.clear();
            metrics.oldest_provisioning.clear();
            let now = exec.now();
            for c in &claims {
                let phase = c.status.lifecycle.phase();
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
                    let gauge = metrics.oldest_provisioning.get_or_create(&PoolLabel {
                        pool: c.spec.pool.clone(),
                    });
                    if age > gauge.get() {
                        gauge.set(age);
                    }
                }
            }
            for c in claims {
                metrics
                    .workers
                    .get_or_create(&WorkerLabels {
                        pool: c.spec.pool.clone(),
                        phase: c.status.lifecycle.phase().to_string(),
                    })
                    .inc();
            }
        }
        if *stop_rx.borrow() {
            break;
        }
        tokio::select! {
            _ = leading_rx.changed() => {}
            _ = stop_rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    if let Some((tx, task)) = active.take() {
        let _ = tx.send(true);
        let _ = task.await;
    }
    if let Some(task) = election {
        let _ = task.await;
    }
    health.abort();
    Ok(())
}
