//! How a tool call that did not do what was asked is answered: a tool
//! error (`isError: true`) with a readable text and `{"error": {category,
//! message, problems}}` as structured content, never a protocol error.

use rmcp::model::{CallToolResult, ContentBlock};
use tidepool_controller::service::ServiceError;
use tidepool_core::config::MCP_TOOLS;

use crate::types::{ToolErrorBody, ToolErrorContent};

/// A tool call that did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolFailure {
    /// The tool that failed.
    pub tool: &'static str,
    /// The error reported to the client.
    pub body: ToolErrorBody,
}

impl ToolFailure {
    /// A failure of `tool` in `category` (see [`ToolErrorBody::category`]).
    pub fn new(tool: &'static str, category: &str, message: String, problems: Vec<String>) -> Self {
        Self {
            tool,
            body: ToolErrorBody {
                category: category.to_owned(),
                message,
                problems,
            },
        }
    }

    /// The `unavailable` error of a call to `tool` that cannot run yet, for
    /// a front-end that has no service to call (say, no cluster reached):
    /// `message` says what is missing and must hold no secret.
    pub fn unavailable(tool: &str, message: String) -> Self {
        Self::new(tool_name(tool), "unavailable", message, Vec::new())
    }

    pub(crate) fn from_service(tool: &'static str, e: &ServiceError) -> Self {
        let problems = match e {
            ServiceError::Invalid(errs) => errs.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        };
        Self::new(tool, e.category().as_str(), e.to_string(), problems)
    }

    /// The MCP tool error: a readable text, `isError: true`, and
    /// `{"error": {...}}` as structured content.
    pub fn into_result(self) -> CallToolResult {
        let mut text = format!("{} failed ({}): ", self.tool, self.body.category);
        if self.body.problems.len() > 1 {
            text.push_str("the request has these problems:");
            for p in &self.body.problems {
                text.push_str("\n- ");
                text.push_str(p);
            }
        } else {
            text.push_str(&self.body.message);
        }
        let value = serde_json::to_value(ToolErrorContent { error: self.body })
            .unwrap_or_else(|_| serde_json::json!({"error": {"category": "internal"}}));
        let mut result = CallToolResult::structured_error(value);
        result.content = vec![ContentBlock::text(text)];
        result
    }
}

/// The static name of one of our tools (error texts use it).
pub(crate) fn tool_name(name: &str) -> &'static str {
    MCP_TOOLS
        .into_iter()
        .find(|t| *t == name)
        .unwrap_or("tool call")
}
