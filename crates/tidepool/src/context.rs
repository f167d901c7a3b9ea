//! The settings every cluster command shares, and the one way such a
//! command runs: build a runtime, connect to the configured clusters, and
//! hand the live service to the command. A failure to connect is printed
//! and becomes the command's exit code, the same for every command.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tidepool_controller::ports::Clock;
use tidepool_live::connect::LiveExecutor;

use crate::exit::Exit;
use crate::live::{self, LiveService};
use crate::output::Format;

/// Global settings the cluster commands need.
#[derive(Clone, Debug)]
pub struct Context {
    /// Configuration file.
    pub config: PathBuf,
    /// Kubeconfig flag.
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    pub output: Format,
    /// The controller's clock (real time, or a scaled lab's), built once
    /// from the flags.
    pub clock: Arc<dyn Clock>,
}

/// What a connected command works with.
pub struct Connected {
    /// The live executor: the configuration, the adapters, observation.
    pub exec: Arc<LiveExecutor>,
    /// The service layer over it.
    pub service: LiveService,
}

impl Context {
    /// Builds a multi-threaded runtime, connects to everything the
    /// configuration names, and runs `command` with the connection.
    ///
    /// # Errors
    /// Runtime start-up failures and the command's own errors. A failure to
    /// connect is not an error: it is printed and ends the command with exit
    /// 2 (an invalid or unreadable configuration) or 1 (a connection failure).
    pub fn connected<F, Fut>(&self, command: F) -> anyhow::Result<Exit>
    where
        F: FnOnce(Connected) -> Fut,
        Fut: Future<Output = anyhow::Result<Exit>>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match live::service(&self.config, self.kubeconfig.as_ref(), self.clock.clone()).await {
                Ok((exec, service)) => command(Connected { exec, service }).await,
                Err(unavailable) => Ok(unavailable.report()),
            }
        })
    }
}
