//! The settings every cluster command shares, and the one way such a
//! command runs: build a runtime, connect to the configured clusters, and
//! hand the live service to the command. A failure to connect is printed
//! and becomes the command's exit code, the same for every command.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Simulated time runs this many times faster (for a scaled lab).
    pub time_scale: f64,
    /// Origin of the scaled clock in Unix milliseconds (a lab's).
    pub time_origin: Option<i64>,
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
            match live::service(
                &self.config,
                self.kubeconfig.as_ref(),
                self.time_scale,
                self.time_origin,
            )
            .await
            {
                Ok((exec, service)) => command(Connected { exec, service }).await,
                Err(unavailable) => Ok(unavailable.report()),
            }
        })
    }
}
