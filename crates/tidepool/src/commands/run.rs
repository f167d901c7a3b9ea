//! `tidepool run`: the controller, in the foreground until interrupted,
//! with MCP over streamable HTTP beside it when `server.mcp.listen` is set;
//! with `--dry-run`, the autoscaler only, changing nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use tidepool_runtime::dry_run::run_dry;
use tidepool_runtime::leader::LeaseConfig;
use tidepool_runtime::run::{RunOptions, run as run_controller};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tidepool_controller::observe::Observe;
use tidepool_live::connect::{LiveExecutor, SecretResolver};
use tidepool_live::join::LiveJoiner;
use tidepool_live::kube::KubeCluster;
use tidepool_live::pve::PveHypervisor;
use tidepool_live::{LiveObserver, LiveService};
use tidepool_mcp::{Guarded, Policy, TidepoolMcp};

use crate::commands::mcp;
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

/// The configured health and metrics address; an unparsable one is
/// printed and ends the command with exit 2.
fn metrics_addr(server: &tidepool_core::config::Server) -> Result<SocketAddr, Exit> {
    server.metrics_addr.parse().map_err(|e| {
        eprintln!("server.metricsAddr `{}`: {e}", server.metrics_addr);
        Exit::Invalid
    })
}

/// Waits for Ctrl-C or SIGTERM, then tells `task` to stop through `stop`
/// and waits for it; or for `task` to end on its own (it does only when
/// it cannot run, the health port taken). Returns its result.
async fn until_signalled<T: Send + 'static>(
    mut task: JoinHandle<T>,
    stop: watch::Sender<bool>,
) -> anyhow::Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let early = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        ended = &mut task => Some(ended),
    };
    let ended = match early {
        Some(ended) => ended,
        None => {
            let _ = stop.send(true);
            task.await
        }
    };
    Ok(ended?)
}

/// Starts MCP over streamable HTTP on `server.mcp.listen`, if set, over
/// the controller's own live executor; `Err` with the exit code when it
/// cannot listen.
async fn serve_mcp(
    ctx: &Context,
    exec: &Arc<LiveExecutor>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, Exit> {
    let config = exec.config();
    let Some(listen) = config.server.mcp.listen.as_deref() else {
        return Ok(None);
    };
    let addr = listen.parse().map_err(|e| {
        eprintln!("server.mcp.listen `{listen}`: {e}");
        Exit::Invalid
    })?;
    let resolver = SecretResolver::with_client(
        mcp::config_dir(&ctx.config),
        config.server.namespace.clone(),
        exec.nodes().cluster().client().clone(),
    );
    let options = mcp::http_options(config, &ctx.config, addr, resolver);
    let observer: Arc<dyn Observe> = Arc::new(LiveObserver(exec.clone()));
    let server = TidepoolMcp::new(Arc::new(LiveService::new(exec.clone()))).with_observer(observer);
    let tools = LiveMcp::tools();
    let guarded = Guarded::new(
        Arc::new(server),
        tools,
        Policy::from_settings(&config.server.mcp),
    );
    match tidepool_mcp::serve_http(move || guarded.clone(), options, stop).await {
        Ok(served) => Ok(Some(served.task)),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            Err(Exit::Failure)
        }
    }
}

/// The MCP server over the live adapters.
type LiveMcp = TidepoolMcp<PveHypervisor, LiveJoiner, KubeCluster, KubeCluster>;

/// Runs the controller until Ctrl-C or SIGTERM.
///
/// # Errors
/// Runtime failures; configuration and connection problems are exit codes.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let exec = live.exec;
        let server = exec.config().server.clone();
        let metrics_addr = match metrics_addr(&server) {
            Ok(a) => a,
            Err(exit) => return Ok(exit),
        };
        let options = RunOptions {
            metrics_addr,
            lease: lease_config(&server, identity(None)),
            autoscale: true,
        };
        let mcp_stop = tokio_util::sync::CancellationToken::new();
        // MCP over HTTP beside the controller when configured: the same
        // process, the same live clients and caches.
        let mcp = match serve_mcp(ctx, &exec, mcp_stop.clone()).await {
            Ok(mcp) => mcp,
            Err(exit) => return Ok(exit),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let controller = tokio::spawn(run_controller(Arc::clone(&exec), options, stop_rx, None));
        let ended = until_signalled(controller, stop_tx).await;
        mcp_stop.cancel();
        if let Some(task) = mcp {
            let _ = task.await;
        }
        match ended? {
            Ok(()) => Ok(Exit::Ok),
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                Ok(Exit::Failure)
            }
        }
    })
}

/// Runs the dry run until Ctrl-C or SIGTERM, then prints how many actions
/// it would have taken.
///
/// # Errors
/// Runtime failures; configuration and connection problems are exit codes.
pub fn dry_run(ctx: &Context) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let exec = live.exec;
        let metrics_addr = match metrics_addr(&exec.config().server) {
            Ok(a) => a,
            Err(exit) => return Ok(exit),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_dry(Arc::clone(&exec), metrics_addr, stop_rx, None));
        match until_signalled(task, stop_tx).await? {
            Ok(dry) => {
                eprintln!(
                    "dry run: {} action(s) would have been taken; nothing was changed",
                    dry.would().len()
                );
                Ok(Exit::Ok)
            }
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                Ok(Exit::Failure)
            }
        }
    })
}
