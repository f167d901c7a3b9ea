//! Tidepool's MCP server: the tools an AI agent uses to operate worker
//! pools — `list_workers`, `get_worker_details`, `provision_workers`,
//! `drain_worker`, `destroy_worker`, `extend_ttl`, `cordon_worker`,
//! `uncordon_worker`, `scale_up`, `capacity_report` and `plan_scaling` —
//! as a thin front-end
//! over the controller's one service layer, so the agent meets exactly the
//! validation and safety rules of spec §8 that the CLI does.
//!
//! [`TidepoolMcp`] is the handler; [`Guarded`] puts it behind the access
//! rules ([`access`]: read-only mode, the tool allowlist, token scopes,
//! confirmation of destructive calls, paging and size caps). [`serve_stdio`]
//! runs a handler on stdin/stdout (for `tidepool mcp`), [`serve`] on any
//! rmcp transport (tests use an in-process duplex pipe), and [`serve_http`]
//! over streamable HTTP with bearer tokens ([`http`]). On stdio nothing
//! else may write to stdout: log to stderr.

pub mod access;
mod confirm;
pub mod doctor;
mod failure;
pub mod http;
mod server;
pub mod types;

use rmcp::service::{RoleServer, ServerInitializeError};
use rmcp::transport::IntoTransport;
use rmcp::{ServerHandler, ServiceExt};
use tracing::info;

pub use access::{Guarded, Identity, Policy};
pub use failure::ToolFailure;
pub use http::{HttpError, HttpOptions, HttpServer, Keyring, TokenSource, serve_http};
pub use server::{DEFAULT_TIMEOUT, INSTRUCTIONS, TidepoolMcp, server_info};

/// Why the MCP server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The MCP handshake with the client did not complete.
    #[error("MCP handshake with the client failed")]
    Handshake(#[source] Box<ServerInitializeError>),
    /// The server's session task ended abnormally.
    #[error("MCP session ended abnormally")]
    Session(#[source] tokio::task::JoinError),
}

/// Serves `server` on stdin/stdout until the client disconnects.
///
/// # Errors
/// A failed handshake or an abnormal end of the session.
pub async fn serve_stdio<H>(server: H) -> Result<(), McpError>
where
    H: ServerHandler,
{
    serve(server, rmcp::transport::stdio()).await
}

/// Serves `server` on `transport` until the client disconnects or the
/// transport closes.
///
/// # Errors
/// A failed handshake or an abnormal end of the session.
pub async fn serve<H, T, E, A>(server: H, transport: T) -> Result<(), McpError>
where
    H: ServerHandler,
    T: IntoTransport<RoleServer, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let running = server
        .serve(transport)
        .await
        .map_err(|e| McpError::Handshake(Box::new(e)))?;
    let reason = running.waiting().await.map_err(McpError::Session)?;
    info!(?reason, "MCP session ended");
    Ok(())
}
