//! `tidepool mcp`: the MCP server for AI agents, on stdin/stdout by default
//! or over streamable HTTP with `--listen` (or `server.mcp.listen`), behind
//! the access rules of `server.mcp` and the flags (`--read-only`,
//! `--tools`). It answers at once, with or without a reachable cluster:
//! tool calls connect on demand (see [`crate::lazy_mcp`]). Also the pieces
//! `tidepool run` shares to serve MCP over HTTP beside the controller: the
//! token source and the HTTP options built from the configuration.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tidepool_core::config::{Config, SecretRef};
use tidepool_live::connect::SecretResolver;
use tidepool_mcp::{Guarded, HttpOptions, Keyring, Policy, TokenSource};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::exit::Exit;
use crate::lazy_mcp::LazyMcp;

/// The flags of `tidepool mcp`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct McpArgs {
    /// Serve streamable HTTP at /mcp on this address (e.g. 127.0.0.1:8090)
    /// instead of stdin/stdout; overrides `server.mcp.listen`. Needs the
    /// bearer tokens of `server.mcp.tokens`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Offer only the read-only tools (the others are hidden and refused).
    #[arg(long)]
    pub read_only: bool,
    /// Offer only these tools (comma-separated), e.g.
    /// `list_workers,get_worker_details`.
    #[arg(long, value_delimiter = ',', value_name = "TOOL,...")]
    pub tools: Vec<String>,
}

/// The token values of the configuration, read through the live secret
/// resolver (env, file, Kubernetes Secret).
struct Tokens(SecretResolver);

impl TokenSource for Tokens {
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .resolve(reference)
                .await
                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        })
    }
}

/// The directory relative paths of the configuration start from.
pub(crate) fn config_dir(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The HTTP options for `addr` from the configuration's `server.mcp`,
/// reading tokens through `resolver`.
pub(crate) fn http_options(
    config: &Config,
    config_path: &Path,
    addr: SocketAddr,
    resolver: SecretResolver,
) -> HttpOptions {
    let settings = &config.server.mcp;
    let dir = config_dir(config_path);
    HttpOptions {
        addr,
        keyring: Arc::new(Keyring::new(&settings.tokens, Tokens(resolver))),
        allowed_origins: settings.allowed_origins.clone(),
        allowed_hosts: settings.allowed_hosts.clone(),
        tls: settings
            .tls
            .as_ref()
            .map(|t| (dir.join(&t.cert_file), dir.join(&t.key_file))),
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn signalled() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `tidepool mcp`.
///
/// # Errors
/// Runtime failures; an invalid configuration is exit 2, an address that
/// cannot be served exit 1.
pub fn run(ctx: &Context, args: &McpArgs) -> anyhow::Result<Exit> {
    let config = match crate::live::load_config(&ctx.config) {
        Ok(config) => Arc::new(config),
        Err(unavailable) => return Ok(unavailable.report()),
    };
    let mut policy = Policy::from_settings(&config.server.mcp);
    policy.read_only |= args.read_only;
    if !args.tools.is_empty() {
        let unknown: Vec<&String> = args
            .tools
            .iter()
            .filter(|t| !tidepool_core::config::MCP_TOOLS.contains(&t.as_str()))
            .collect();
        if !unknown.is_empty() {
            for t in unknown {
                eprintln!(
                    "error: --tools: no tool named `{t}`; the tools are {}",
                    tidepool_core::config::MCP_TOOLS.join(", ")
                );
            }
            return Ok(Exit::Invalid);
        }
        policy.tools = Some(args.tools.iter().cloned().collect());
    }
    let listen = match (args.listen, &config.server.mcp.listen) {
        (Some(addr), _) => Some(addr),
        (None, Some(text)) => text.parse().ok(),
        (None, None) => None,
    };
    if listen.is_some() && config.server.mcp.tokens.is_empty() {
        eprintln!(
            "error: MCP over HTTP needs at least one bearer token: add server.mcp.tokens \
             ({{name, scope: read|write, tokenFrom: {{env: VAR}}}}) to {}",
            ctx.config.display()
        );
        return Ok(Exit::Invalid);
    }
    let lazy = Arc::new(LazyMcp::new(
        config.clone(),
        ctx.config.clone(),
        ctx.kubeconfig.clone(),
        ctx.clock.clone(),
    ));
    let server = Guarded::new(lazy, LazyMcp::tools(), policy);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Some(addr) = listen else {
        runtime.block_on(tidepool_mcp::serve_stdio(server))?;
        return Ok(Exit::Ok);
    };
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = SecretResolver::new(
            config_dir(&ctx.config),
            config.server.namespace.clone(),
            crate::live::kubeconfig(ctx.kubeconfig.as_ref()),
        );
        let options = http_options(&config, &ctx.config, addr, resolver);
        let stop = CancellationToken::new();
        let served = tidepool_mcp::serve_http(move || server.clone(), options, stop.clone()).await;
        let served = match served {
            Ok(served) => served,
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return Ok(Exit::Failure);
            }
        };
        let scheme = if served.tls { "https" } else { "http" };
        eprintln!("serving MCP at {scheme}://{}/mcp", served.addr);
        signalled().await;
        stop.cancel();
        let _ = served.task.await;
        Ok(Exit::Ok)
    })
}
