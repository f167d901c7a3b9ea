//! `--wait`: seeing a request carried out, with a progress bar per worker,
//! while exactly one executor drives claims.
//!
//! The command competes for the controller's Lease under its own identity
//! (`cli-…`). While it holds the Lease (no controller did), it drives the
//! workers itself; while a controller holds it, it only watches the
//! claims' phases as the controller carries the request out. Its drives
//! are aborted the moment it stops holding the Lease, and it releases the
//! Lease when done, so a controller waiting behind it takes over at once.
//! With leader election off in the configuration it drives the workers
//! itself, as a lone operator without a controller would.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tidepool_controller::executor::ExecutorError;
use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions};
use tidepool_controller::service::ServiceError;
use tidepool_core::Phase;
use tidepool_core::view::WorkerPhase;
use tidepool_live::connect::LiveExecutor;
use tidepool_runtime::leader;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::run::{identity, lease_config};
use crate::live::LiveService;

/// Where a worker being waited for stands.
enum Standing {
    /// The service reports it in this phase, with its failure if it failed.
    At(WorkerPhase, Option<String>),
    /// It is gone.
    Gone,
    /// It could not be read.
    Unknown(ServiceError),
}

impl Standing {
    async fn of(svc: &LiveService, name: &str) -> Self {
        match svc.get_worker(name).await {
            Ok(w) => Self::At(w.phase, w.failure),
            Err(ServiceError::NotFound(_)) => Self::Gone,
            Err(e) => Self::Unknown(e),
        }
    }

    /// Whether the worker has stopped moving: at `goal`, failed or gone.
    fn resting(&self, goal: Phase) -> bool {
        match self {
            Self::At(phase, failure) => {
                failure.is_some()
                    || *phase == goal
                    || matches!(phase.lifecycle(), Some(Phase::Failed | Phase::Terminated))
            }
            Self::Gone => true,
            Self::Unknown(_) => false,
        }
    }

    /// The progress bar's message.
    fn describe(&self) -> String {
        match self {
            Self::At(_, Some(failure)) => format!("Failed: {failure}"),
            Self::At(phase, None) => phase.to_string(),
            Self::Gone => Phase::Terminated.to_string(),
            Self::Unknown(e) => format!("(unknown: {e})"),
        }
    }
}

/// This command's own drives of the workers, while it holds the Lease.
struct Drivers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<usize, ExecutorError>>>,
}

impl Drivers {
    fn start(exec: &std::sync::Arc<LiveExecutor>, names: &[String]) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let tasks = names
            .iter()
            .map(|name| {
                let reconciler = Reconciler::new(exec.clone(), ReconcilerOptions::default());
                let stop = stop_rx.clone();
                let name = name.clone();
                tokio::spawn(async move { reconciler.drive(&name, &stop).await })
            })
            .collect();
        Self { stop, tasks }
    }

    fn finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Stops every drive: at once (`abort`, the Lease is lost) or at the
    /// end of its current step.
    async fn end(self, abort: bool) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if abort {
                task.abort();
            }
            let _ = task.await;
        }
    }
}

fn bars(names: &[String]) -> Vec<ProgressBar> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<14} {wide_msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    names
        .iter()
        .map(|n| {
            let b = bars.add(ProgressBar::new_spinner());
            b.set_style(style.clone());
            b.set_prefix(n.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        })
        .collect()
}

/// Says on stderr who is carrying the request out when a controller holds
/// the Lease.
async fn tell_holder(exec: &LiveExecutor, cfg: &leader::LeaseConfig) {
    let client = exec.nodes().cluster().client().clone();
    let elector = leader::Elector::new(client, cfg.clone());
    if let Ok(Ok(Some(holder))) =
        tokio::time::timeout(cfg.request_timeout(), elector.holder()).await
    {
        eprintln!("{holder} holds the controller's Lease: waiting for it to carry the request out");
    }
}

/// Sees `names` carried out (by this command while it holds the Lease, by
/// the controller while that holds it) with a progress bar each until every
/// one reaches a resting phase; true when all reached `goal`.
pub(crate) async fn wait_for(svc: &LiveService, names: &[String], goal: Phase) -> bool {
    let exec = svc.executor().clone();
    let (elector_stop, elector_stop_rx) = watch::channel(false);
    let lease = lease_config(&exec.config().server, identity(Some("cli")));
    let (mut leading, election) = match lease {
        Some(cfg) => {
            let client = exec.nodes().cluster().client().clone();
            tell_holder(&exec, &cfg).await;
            let (rx, task) = leader::spawn(client, cfg, exec.clock().clone(), elector_stop_rx);
            (rx, Some(task))
        }
        None => (watch::channel(true).1, None),
    };
    let progress = bars(names);
    let mut drivers: Option<Drivers> = None;
    loop {
        match (*leading.borrow_and_update(), drivers.is_some()) {
            (true, false) => drivers = Some(Drivers::start(&exec, names)),
            (false, true) => {
                if let Some(d) = drivers.take() {
                    d.end(true).await;
                }
            }
            _ => {}
        }
        let mut all_done = true;
        for (name, bar) in names.iter().zip(&progress) {
            let standing = Standing::of(svc, name).await;
            if standing.resting(goal) {
                bar.finish_with_message(standing.describe());
            } else {
                all_done = false;
                bar.set_message(standing.describe());
            }
        }
        if all_done || drivers.as_ref().is_some_and(Drivers::finished) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = tidepool_controller::wake::changed(&mut leading) => {}
        }
    }
    if let Some(d) = drivers.take() {
        d.end(false).await;
    }
    let _ = elector_stop.send(true);
    if let Some(task) = election {
        let _ = task.await;
    }
    let mut ok = true;
    for name in names {
        ok &= match svc.get_worker(name).await {
            Ok(w) => w.phase == goal,
            Err(_) => goal == Phase::Terminated,
        };
    }
    ok
}
