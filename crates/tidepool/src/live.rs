//! Connecting the CLI to the configured Proxmox cluster and Kubernetes
//! cluster through the controller's live adapters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidepool_controller::observe::Observe;
use tidepool_controller::ports::Clock;
use tidepool_core::config::{self, Config};
use tidepool_core::planner::PlanInput;
pub use tidepool_live::connect::LiveService;
use tidepool_live::connect::{ConnectError, LiveExecutor, LiveOptions, connect};

use crate::exit::Exit;

/// Why the CLI could not connect; carries the exit code.
#[derive(Debug)]
pub struct Unavailable {
    /// Exit code to end with.
    pub exit: Exit,
    /// What to print.
    pub message: String,
}

impl Unavailable {
    /// Prints the message on stderr and returns the exit code to end with.
    pub fn report(self) -> Exit {
        eprintln!("{}", self.message);
        self.exit
    }
}

/// Loads the configuration (exit 2 when invalid or unreadable).
///
/// # Errors
/// [`Unavailable`] with every configuration error listed.
pub fn load_config(path: &Path) -> Result<Config, Unavailable> {
    let text = std::fs::read_to_string(path).map_err(|e| Unavailable {
        exit: Exit::Invalid,
        message: format!("{}: cannot read the configuration: {e}", path.display()),
    })?;
    config::load(&text).map_err(|errs| Unavailable {
        exit: Exit::Invalid,
        message: errs
            .0
            .iter()
            .map(|e| format!("{}:{e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// The kubeconfig to use: `--kubeconfig`/`KUBECONFIG`, else
/// `~/.kube/config` when it exists, else in-cluster configuration.
pub fn kubeconfig(flag: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.clone());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let default = home.join(".kube").join("config");
    default.exists().then_some(default)
}

/// Connects to everything the configuration names, with the controller
/// on `clock`.
///
/// # Errors
/// [`Unavailable`]: exit 2 for configuration problems, 1 for connection failures.
pub async fn service(
    config_path: &Path,
    kubeconfig_flag: Option<&PathBuf>,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<LiveExecutor>, LiveService), Unavailable> {
    let config = Arc::new(load_config(config_path)?);
    connect_loaded(config, config_path, kubeconfig_flag, clock)
        .await
        .map_err(|e| Unavailable {
            exit: Exit::Failure,
            // The whole chain: the cause is in the error's sources.
            message: format!("error: {:#}", anyhow::Error::from(e)),
        })
}

/// Connects to everything the already loaded `config` (read from
/// `config_path`, whose directory relative paths start from) names, with
/// the controller on `clock`.
///
/// # Errors
/// [`ConnectError`] naming what could not be reached or resolved.
pub async fn connect_loaded(
    config: Arc<Config>,
    config_path: &Path,
    kubeconfig_flag: Option<&PathBuf>,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<LiveExecutor>, LiveService), ConnectError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config_dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let options = LiveOptions {
        config_dir,
        kubeconfig: kubeconfig(kubeconfig_flag),
        clock,
    };
    let exec = Arc::new(connect(config, &options).await?);
    Ok((exec.clone(), LiveService::new(exec)))
}

/// Observes the cluster, the hypervisor and the claims into what the
/// planner looks at (for `tidepool plan` and `tidepool capacity`).
///
/// # Errors
/// [`Unavailable`]: exit 1 for observation failures, and for a Proxmox host
/// whose status answer cannot be used (naming the host and the problem).
pub async fn observe(exec: &Arc<LiveExecutor>) -> Result<PlanInput, Unavailable> {
    let failed = |e: tidepool_controller::ports::ProviderError| Unavailable {
        exit: Exit::Failure,
        message: format!("error: observing the cluster: {e}"),
    };
    let mut input = tidepool_live::LiveObserver(exec.clone())
        .plan_input()
        .await
        .map_err(failed)?;
    // The windows and idle times the controller keeps, not fresh ones.
    tidepool_controller::autoscaler::with_stored_timers(exec.store(), &mut input)
        .await
        .map_err(failed)?;
    // A host whose status cannot be used would look merely offline: a
    // report or a plan built on that would mislead.
    let problems = exec.hypervisor().host_problems();
    if !problems.is_empty() {
        return Err(Unavailable {
            exit: Exit::Failure,
            message: problems
                .iter()
                .map(|(host, problem)| format!("error: Proxmox host {host}: {problem}"))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    Ok(input)
}
