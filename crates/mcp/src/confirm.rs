//! Confirmation of a destructive tool call through MCP elicitation: the
//! client is asked `confirm: true|false` with a message naming the tool, the
//! worker and whether `force` is set. On a 2026-07-28 connection the ask is
//! an `input_required` answer the client retries with its response; on an
//! older, session-based connection it is an `elicitation/create` request to
//! the client. A client that declared no elicitation support cannot be
//! asked: the configured [`ConfirmFallback`] decides.

use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationSchema, InputRequest, InputRequests, InputRequiredResult, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, model::Request};
use tidepool_core::config::ConfirmFallback;

/// How long a client has to answer a confirmation on a session.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// The key of the confirmation among the input requests.
const KEY: &str = "confirm";

/// What to do with a destructive call.
#[derive(Debug)]
pub(crate) enum Confirmation {
    /// Carry it out.
    Go,
    /// Ask the client first (a 2026-07-28 connection): answer with this.
    Ask(InputRequiredResult),
    /// Refuse it, for this reason.
    Refuse(String),
}

/// Whether `tool` called with `request` may go ahead, asking the client when
/// it can be asked and applying `fallback` when it cannot.
pub(crate) async fn confirm(
    tool: &str,
    request: &CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
    fallback: ConfirmFallback,
) -> Confirmation {
    let force = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("force"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let can_ask = ctx
        .client_capabilities()
        .is_some_and(|c| c.elicitation.is_some());
    if !can_ask {
        return match (fallback, force) {
            (ConfirmFallback::Allow, _) | (ConfirmFallback::RefuseForce, false) => Confirmation::Go,
            (ConfirmFallback::RefuseForce, true) => Confirmation::Refuse(format!(
                "`{tool}` with force needs a confirmation, and this client cannot be asked \
                 (it declared no elicitation support); call it without force after draining \
                 the worker"
            )),
            (ConfirmFallback::Refuse, _) => Confirmation::Refuse(format!(
                "`{tool}` needs a confirmation, and this client cannot be asked (it declared \
                 no elicitation support)"
            )),
        };
    }
    let worker = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("worker_id"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    let message = format!(
        "Tidepool: confirm {tool} of worker `{worker}`{}?",
        if force {
            " with force (its pods are evicted without waiting for a drain)"
        } else {
            ""
        }
    );
    let modern = ctx
        .protocol_version()
        .is_some_and(|v| v == ProtocolVersion::V_2026_07_28);
    if modern {
        return match request.input_responses.as_ref().and_then(|r| r.get(KEY)) {
            Some(answer) => judge(tool, serde_json::from_value(answer.clone()).ok()),
            None => {
                let mut asks = InputRequests::new();
                asks.insert(
                    KEY.to_owned(),
                    InputRequest::Elicitation(Request::new(params(message))),
                );
                Confirmation::Ask(InputRequiredResult::from_input_requests(asks))
            }
        };
    }
    let asked: ElicitRequest = Request::new(params(message));
    let answer = ctx
        .peer
        .create_elicitation_with_timeout(asked.params, Some(CONFIRM_TIMEOUT))
        .await
        .ok();
    judge(tool, answer)
}

/// The elicitation: a message and one required boolean, `confirm`.
fn params(message: String) -> ElicitRequestParams {
    let schema = ElicitationSchema::builder()
        .required_bool_with(KEY, |b| b.description("true to go ahead, false to cancel"))
        .build_unchecked();
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: schema,
    }
}

/// Go ahead only on an accepted answer with `confirm: true`.
fn judge(tool: &str, answer: Option<ElicitResult>) -> Confirmation {
    let confirmed = answer.is_some_and(|a| {
        a.action == ElicitationAction::Accept
            && a.content
                .as_ref()
                .and_then(|c| c.get(KEY))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
    });
    if confirmed {
        Confirmation::Go
    } else {
        Confirmation::Refuse(format!("`{tool}` was not confirmed by the user"))
    }
}
