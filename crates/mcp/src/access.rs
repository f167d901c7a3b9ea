//! Who may call what, in front of any handler: [`Guarded`] offers only the
//! tools the [`Policy`] allows (read-only mode, a tool allowlist), refuses
//! the others on call, refuses mutating tools to a bearer token of `read`
//! scope, asks for confirmation before a destructive tool runs
//! ([`crate::confirm`]), records who called as the [`Actor`] the service
//! audits (the token's name over HTTP), writes every refusal to the audit
//! trail, pages `tools/list`, and caps the size of every answer.
//!
//! The HTTP layer ([`crate::http`]) authenticates a request and leaves its
//! [`Identity`] in the request's extensions; rmcp hands the request's parts
//! to the handler, where [`Guarded`] finds it. Over stdio there is no
//! identity: the local user who started the server may call every tool the
//! policy offers.

use std::collections::BTreeSet;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ListToolsResult, PaginatedRequestParams, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tidepool_core::config::McpSettings;
pub use tidepool_core::config::{ConfirmFallback, McpScope};
use tracing::info;

use crate::confirm::{Confirmation, confirm};
use crate::failure::{ToolFailure, tool_name};
use crate::server::requester;

/// How many tools one `tools/list` page holds unless configured otherwise.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// The largest answer, in bytes of JSON, unless configured otherwise.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Who an HTTP request authenticated as: the bearer token's name and scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name from the configuration.
    pub name: String,
    /// What the token may do.
    pub scope: McpScope,
}

/// The actor the service records in the audit trail for a call, set by
/// [`Guarded`] in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

/// Which tools are offered, what destructive tools do without a way to
/// confirm, and the size bounds of answers.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Offer only the read-only tools.
    pub read_only: bool,
    /// Offer only these tools (every tool when `None`).
    pub tools: Option<BTreeSet<String>>,
    /// What a destructive tool does when the client cannot confirm.
    pub confirm_fallback: ConfirmFallback,
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// The largest answer, in bytes of JSON.
    pub max_answer_bytes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            read_only: false,
            tools: None,
            confirm_fallback: ConfirmFallback::default(),
            page_size: DEFAULT_PAGE_SIZE,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

impl Policy {
    /// The policy the configuration's `server.mcp` section asks for.
    pub fn from_settings(settings: &McpSettings) -> Self {
        Self {
            read_only: settings.read_only,
            tools: settings.tools.as_ref().map(|t| t.iter().cloned().collect()),
            confirm_fallback: settings.confirm_fallback,
            ..Self::default()
        }
    }

    /// Why `tool` is not offered, or `None` when it is.
    fn withheld(&self, tool: &Tool) -> Option<&'static str> {
        if self.read_only && !read_only(tool) {
            return Some("this server runs in read-only mode");
        }
        match &self.tools {
            Some(allowed) if !allowed.contains(tool.name.as_ref()) => {
                Some("it is not in this server's tool allowlist")
            }
            _ => None,
        }
    }
}

/// Whether `tool` only reads (its `readOnlyHint`).
pub fn read_only(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .and_then(|a| a.read_only_hint)
        .unwrap_or(false)
}

/// Whether `tool` may destroy something (its `destructiveHint`).
pub fn destructive(tool: &Tool) -> bool {
    !read_only(tool)
        && tool
            .annotations
            .as_ref()
            .and_then(|a| a.destructive_hint)
            .unwrap_or(true)
}

/// The identity the HTTP layer authenticated the request as, if any.
fn identity(ctx: &RequestContext<RoleServer>) -> Option<Identity> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Identity>())
        .cloned()
}

/// A handler behind the access rules of a [`Policy`].
pub struct Guarded<S> {
    inner: Arc<S>,
    tools: Arc<Vec<Tool>>,
    policy: Arc<Policy>,
}

impl<S> Clone for Guarded<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            tools: Arc::clone(&self.tools),
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S: ServerHandler> Guarded<S> {
    /// `inner`, whose tools are `tools`, behind `policy`.
    pub fn new(inner: Arc<S>, tools: Vec<Tool>, policy: Policy) -> Self {
        Self {
            inner,
            tools: Arc::new(tools),
            policy: Arc::new(policy),
        }
    }

    /// The tools offered, in order.
    pub fn offered(&self) -> impl Iterator<Item = &Tool> {
        self.tools
            .iter()
            .filter(|t| self.policy.withheld(t).is_none())
    }

    /// `None` when the call may go ahead, else the answer to give instead.
    async fn admit(
        &self,
        tool: &Tool,
        request: &CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
        actor: &str,
    ) -> Option<CallToolResponse> {
        let name = tool_name(&tool.name);
        let refuse = |why: String| {
            audit_refusal(actor, name, request, &why);
            Some(
                ToolFailure::new(name, "refused", why, Vec::new())
                    .into_result()
                    .into(),
            )
        };
        if let Some(why) = self.policy.withheld(tool) {
            return refuse(format!("`{name}` is not offered: {why}"));
        }
        if let Some(id) = identity(ctx)
            && id.scope == McpScope::Read
            && !read_only(tool)
        {
            return refuse(format!(
                "the token `{}` has read scope, and `{name}` changes workers: it needs a \
                 token of write scope",
                id.name
            ));
        }
        if destructive(tool) {
            match confirm(name, request, ctx, self.policy.confirm_fallback).await {
                Confirmation::Go => {}
                Confirmation::Ask(input) => return Some(input.into()),
                Confirmation::Refuse(why) => return refuse(why),
            }
        }
        None
    }
}

/// Writes a refusal to the audit trail (the `tidepool::audit` log target,
/// as the service does for its own operations).
fn audit_refusal(actor: &str, tool: &str, request: &CallToolRequestParams, why: &str) {
    let target = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("worker_id").or_else(|| a.get("pool")))
        .and_then(|v| v.as_str())
        .unwrap_or("-");
    info!(
        target: "tidepool::audit",
        actor,
        op = tool,
        target,
        result = "refused",
        error = why,
        "audit"
    );
}

/// `response` when its JSON fits in `max` bytes, else a tool error saying
/// how to ask for less.
fn capped(tool: &'static str, response: CallToolResponse, max: usize) -> CallToolResponse {
    let CallToolResponse::Complete(result) = &response else {
        return response;
    };
    let size = serde_json::to_vec(result).map_or(usize::MAX, |v| v.len());
    if size <= max {
        return response;
    }
    ToolFailure::new(
        tool,
        "too-large",
        format!(
            "the answer would be {size} bytes, more than this server's cap of {max}; ask for \
             less (list_workers takes a pool, a type_filter, a limit and a cursor)"
        ),
        Vec::new(),
    )
    .into_result()
    .into()
}

impl<S: ServerHandler> ServerHandler for Guarded<S> {
    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .map_err(|_| ErrorData::invalid_params("unknown cursor", None))?,
        };
        let size = self.policy.page_size.max(1);
        let offered: Vec<Tool> = self.offered().cloned().collect();
        let page: Vec<Tool> = offered.iter().skip(start).take(size).cloned().collect();
        let next = start.saturating_add(size);
        let mut result = ListToolsResult::with_all_items(page);
        result.next_cursor = (next < offered.len()).then(|| next.to_string());
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.offered().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = self.tools.iter().find(|t| t.name == request.name) else {
            return Err(ErrorData::invalid_params("tool not found", None));
        };
        let actor = match identity(&context) {
            Some(id) => format!("token:{}", id.name),
            None => requester(&context),
        };
        if let Some(answer) = self.admit(tool, &request, &context, &actor).await {
            return Ok(answer);
        }
        context.extensions.insert(Actor(actor));
        let response = self.inner.call_tool(request, context).await?;
        Ok(capped(
            tool_name(&tool.name),
            response,
            self.policy.max_answer_bytes,
        ))
    }
}
