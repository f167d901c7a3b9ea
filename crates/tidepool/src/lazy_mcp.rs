//! `tidepool mcp` before the clusters answer: an MCP handler that starts
//! without Kubernetes or Proxmox, answers `initialize` and `tools/list` at
//! once, and connects on the first tool call that finds them reachable.
//!
//! MCP clients often start their servers with a minimal environment (no
//! `KUBECONFIG`, no `HOME`), or before the cluster is up. Until a
//! connection succeeds, every tool call is answered with an `unavailable`
//! tool error saying what is missing (no kubeconfig and where we looked,
//! or the connection error's chain, which names operations, settings and
//! references but never a secret's value; or the API, Kubernetes or
//! Proxmox, that does not answer a first read); each call tries again, so the
//! server recovers without a restart once the kubeconfig appears or the
//! APIs answer. The clients are built once, on the first call that finds a
//! kubeconfig, and kept for the session; until both APIs have answered a
//! first read, each call asks them again. `run_doctor` needs no connection:
//! it runs `tidepool doctor`'s checks, which report what does not answer.

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ListToolsResult, PaginatedRequestParams, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tidepool_controller::observe::Observe;
use tidepool_controller::ports::Clock;
use tidepool_controller::{ClaimStore, Hypervisor};
use tidepool_core::config::Config;
use tidepool_live::doctor::{self, DoctorOptions};
use tidepool_live::join::LiveJoiner;
use tidepool_live::kube::KubeCluster;
use tidepool_live::pve::PveHypervisor;
use tidepool_live::{LiveExecutor, LiveObserver};
use tidepool_mcp::doctor::{DoctorCheck, DoctorPort, DoctorResult, DoctorRun};
use tidepool_mcp::{DEFAULT_TIMEOUT, TidepoolMcp, ToolFailure};
use tokio::sync::Mutex;

use crate::live;

/// The MCP server over the live adapters.
type LiveMcp = TidepoolMcp<PveHypervisor, LiveJoiner, KubeCluster, KubeCluster>;

/// The MCP handler of `tidepool mcp`: connects on demand, then hands every
/// tool call to the [`TidepoolMcp`] over the live service.
pub struct LazyMcp {
    config: Arc<Config>,
    config_path: PathBuf,
    kubeconfig: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    /// The tools `tools/list` shows, known before connecting.
    tools: Vec<Tool>,
    /// The clients once built; `None` until they are. Held across a
    /// connection attempt so concurrent calls do not connect twice.
    connected: Mutex<Option<Connection>>,
}

impl LazyMcp {
    /// A handler for the already validated `config` (read from
    /// `config_path`), connecting through `kubeconfig` (the flag or
    /// `KUBECONFIG`, else the usual places) when a tool is first called.
    pub fn new(
        config: Arc<Config>,
        config_path: PathBuf,
        kubeconfig: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            config_path,
            kubeconfig,
            clock,
            tools: LiveMcp::tools(),
            connected: Mutex::new(None),
        }
    }

    /// The tools this handler offers, known before connecting.
    pub fn tools() -> Vec<Tool> {
        LiveMcp::tools()
    }

    /// The connected server, connecting first if need be.
    ///
    /// # Errors
    /// Why it cannot connect yet, as a message for the client: it names what
    /// is missing or unreachable and holds no secret.
    async fn server(&self) -> Result<LiveMcp, String> {
        let mut slot = self.connected.lock().await;
        if let Some(Connection {
            server,
            answered: true,
            ..
        }) = slot.as_ref()
        {
            return Ok(server.clone());
        }
        let timed_out = |_| {
            format!(
                "not connected: Kubernetes and Proxmox did not answer within {}s; \
                 the next call tries again",
                DEFAULT_TIMEOUT.as_secs()
            )
        };
        let connection = match slot.take() {
            Some(built) => built,
            None => tokio::time::timeout(DEFAULT_TIMEOUT, self.build())
                .await
                .map_err(timed_out)??,
        };
        // Kept whether or not the APIs answer: the clients are built once
        // (the nocloud join server, say, holds its address from then on).
        let connection = slot.insert(connection);
        tokio::time::timeout(DEFAULT_TIMEOUT, probe(&connection.exec))
            .await
            .map_err(timed_out)??;
        connection.answered = true;
        Ok(connection.server.clone())
    }

    /// The doctor over this handler's configuration and kubeconfig.
    fn doctor(&self) -> LiveDoctor {
        let config_dir = self
            .config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
        LiveDoctor {
            config: self.config.clone(),
            options: DoctorOptions {
                config_dir,
                kubeconfig: live::kubeconfig(self.kubeconfig.as_ref()),
            },
        }
    }

    /// `run_doctor`, connected or not: the checks say what does not answer.
    async fn run_doctor(&self) -> rmcp::model::CallToolResult {
        let failed = |why: String| ToolFailure::unavailable("run_doctor", why).into_result();
        match tokio::time::timeout(DEFAULT_TIMEOUT, self.doctor().run()).await {
            Ok(Ok(result)) => serde_json::to_value(&result).map_or_else(
                |e| failed(e.to_string()),
                rmcp::model::CallToolResult::structured,
            ),
            Ok(Err(why)) => failed(why),
            Err(_) => failed(format!(
                "the checks did not finish within {}s",
                DEFAULT_TIMEOUT.as_secs()
            )),
        }
    }

    /// Builds the live clients and the server over them; asks neither API.
    async fn build(&self) -> Result<Connection, String> {
        missing_kubeconfig(self.kubeconfig.as_ref())?;
        let (exec, service) = live::connect_loaded(
            self.config.clone(),
            &self.config_path,
            self.kubeconfig.as_ref(),
            self.clock.clone(),
        )
        .await
        .map_err(|e| {
            format!(
                "not connected: {:#}; the next call tries again",
                anyhow::Error::from(e)
            )
        })?;
        // The live executor observes the cluster for capacity_report and
        // plan_scaling.
        let observer: Arc<dyn Observe> = Arc::new(LiveObserver(exec.clone()));
        Ok(Connection {
            exec,
            server: TidepoolMcp::new(Arc::new(service))
                .with_observer(observer)
                .with_doctor(Arc::new(self.doctor())),
            answered: false,
        })
    }
}

/// `tidepool doctor`'s checks for `run_doctor`, over the configuration.
struct LiveDoctor {
    config: Arc<Config>,
    options: DoctorOptions,
}

impl DoctorPort for LiveDoctor {
    fn run(&self) -> DoctorRun<'_> {
        Box::pin(async move {
            let report = doctor::run(&self.config, &self.options)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
            Ok(DoctorResult {
                ok: report.ok(),
                checks: report
                    .checks
                    .into_iter()
                    .map(|c| DoctorCheck {
                        id: c.id,
                        status: c.status.as_str().to_owned(),
                        message: c.message,
                        fix: c.fix,
                    })
                    .collect(),
            })
        })
    }
}

/// The live clients and the server over them, once built.
struct Connection {
    exec: Arc<LiveExecutor>,
    server: LiveMcp,
    /// Whether both APIs have answered a first read.
    answered: bool,
}

/// Asks each API once, naming the one that does not answer.
async fn probe(exec: &LiveExecutor) -> Result<(), String> {
    exec.store()
        .list()
        .await
        .map_err(|e| format!("not connected to Kubernetes: {e}; the next call tries again"))?;
    exec.hypervisor()
        .vms_in_range()
        .await
        .map_err(|e| format!("not connected to Proxmox: {e}; the next call tries again"))?;
    Ok(())
}

/// Why no kubeconfig can be used, naming every place looked at; `Ok` when
/// one exists or the process runs in a Kubernetes pod.
fn missing_kubeconfig(flag: Option<&PathBuf>) -> Result<(), String> {
    const RETRY: &str = "the next call looks again";
    if let Some(path) = flag {
        if path.exists() {
            return Ok(());
        }
        return Err(format!(
            "no kubeconfig found: {} (given by --kubeconfig or KUBECONFIG) does not exist; {RETRY}",
            path.display()
        ));
    }
    if live::kubeconfig(None).is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Ok(());
    }
    let home = std::env::var_os("HOME").map_or_else(
        || "~/.kube/config (HOME is not set)".to_owned(),
        |home| {
            PathBuf::from(home)
                .join(".kube")
                .join("config")
                .display()
                .to_string()
        },
    );
    Err(format!(
        "no kubeconfig found: --kubeconfig and KUBECONFIG are not set, {home} does not \
         exist, and this is not a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set); {RETRY}"
    ))
}

impl ServerHandler for LazyMcp {
    fn get_info(&self) -> ServerConfig {
        tidepool_mcp::server_info()
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.get_tool(&request.name).is_none() {
            return Err(ErrorData::invalid_params("tool not found", None));
        }
        if request.name == "run_doctor" {
            return Ok(self.run_doctor().await.into());
        }
        match self.server().await {
            Ok(server) => server.call_tool(request, context).await,
            Err(why) => Ok(ToolFailure::unavailable(&request.name, why)
                .into_result()
                .into()),
        }
    }
}
