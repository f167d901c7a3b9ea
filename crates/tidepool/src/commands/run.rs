//! `tidepool run`: the controller, in the foreground until interrupted.

use std::sync::Arc;

use tidepool_runtime::leader::LeaseConfig;
use tidepool_runtime::run::{RunOptions, run as run_controller};

use crate::context::Context;
use crate::exit::Exit;

/// This process's identity for the Lease: the pod or host name (else
/// `tidepool`) and the process id, after `prefix` when given.
pub(crate) fn identity(prefix: Option<&str>) -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map_or_else(
            |_| format!("tidepool-{}", std::process::id()),
            |h| format!("{h}-{}", std::process::id()),
        );
    match prefix {
        Some(p) => format!("{p}-{base}"),
        None => base,
    }
}

/// The configuration's Lease for `identity`; `None` when leader election
/// is off.
pub(crate) fn lease_config(
    server: &tidepool_core::config::Server,
    identity: String,
) -> Option<LeaseConfig> {
    server.leader_election.then(|| LeaseConfig {
        namespace: server.namespace.clone(),
        name: server.lease_name.clone(),
        identity,
        duration: server.lease_duration,
    })
}

/// Runs the controller until Ctrl-C or SIGTERM.
///
/// # Errors
/// Runtime failures; configuration and connection problems are exit codes.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let exec = live.exec;
        let server = exec.config().server.clone();
        let metrics_addr = match server.metrics_addr.parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("server.metricsAddr `{}`: {e}", server.metrics_addr);
                return Ok(Exit::Invalid);
            }
        };
        let options = RunOptions {
            metrics_addr,
            lease: lease_config(&server, identity(None)),
            autoscale: true,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut controller =
            tokio::spawn(run_controller(Arc::clone(&exec), options, stop_rx, None));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let early = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            // It ends on its own only when it cannot run (the health port
            // taken): it never competed for the Lease.
            ended = &mut controller => Some(ended),
        };
        let ended = match early {
            Some(ended) => ended,
            None => {
                let _ = stop_tx.send(true);
                controller.await
            }
        };
        match ended? {
            Ok(()) => Ok(Exit::Ok),
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                Ok(Exit::Failure)
            }
        }
    })
}
