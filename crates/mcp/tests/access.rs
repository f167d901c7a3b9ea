//! The access layer seen by a real MCP client (rmcp, over an in-process
//! duplex pipe): `tools/list` comes in pages, a tool allowlist hides and
//! refuses the other tools, an answer over the size cap becomes a
//! `too-large` tool error, and a forced destroy that cannot be confirmed is
//! refused by default.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    PaginatedRequestParams,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tidepool_controller::Executor;
use tidepool_controller::service::Service;
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_mcp::{Guarded, Policy, TidepoolMcp};

type Client = RunningService<RoleClient, ClientConfig>;

/// A client of the server over the fake world, behind `policy`.
async fn behind(policy: Policy) -> Client {
    let fake = Fake::new();
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let clock = Arc::new(ManualClock::at(
        jiff::Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        clock,
    ));
    let server = TidepoolMcp::new(Arc::new(Service::new(exec)));
    let tools = TidepoolMcp::<Fake, Fake, Fake, Fake>::tools();
    let guarded = Guarded::new(Arc::new(server), tools, policy);
    let (server_end, client_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { tidepool_mcp::serve(guarded, server_end).await });
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("access-test", "1.0.0"),
    )
    .serve(client_end)
    .await
    .unwrap()
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap()
}

fn error_of(result: &CallToolResult) -> &Value {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    &result.structured_content.as_ref().unwrap()["error"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_comes_in_pages_that_add_up_to_every_tool() {
    let client = behind(Policy {
        page_size: 4,
        ..Policy::default()
    })
    .await;
    let mut names = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_tools(Some(PaginatedRequestParams::default().with_cursor(cursor)))
            .await
            .unwrap();
        assert!(page.tools.len() <= 4);
        names.extend(page.tools.iter().map(|t| t.name.to_string()));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, config::MCP_TOOLS.len().div_ceil(4));
    names.sort_unstable();
    let mut all: Vec<&str> = config::MCP_TOOLS.to_vec();
    all.sort_unstable();
    assert_eq!(names, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_hides_and_refuses_the_other_tools() {
    let client = behind(Policy {
        tools: Some(["list_workers".to_owned()].into_iter().collect()),
        ..Policy::default()
    })
    .await;
    let listed = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["list_workers"]);
    let refused = call(
        &client,
        "provision_workers",
        json!({"count": 1, "pool": "burst"}),
    )
    .await;
    let error = error_of(&refused);
    assert_eq!(error["category"], "refused");
    assert!(error["message"].as_str().unwrap().contains("allowlist"));
    let listed = call(&client, "list_workers", json!({})).await;
    assert_ne!(listed.is_error, Some(true), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_size_cap_is_a_too_large_error() {
    let client = behind(Policy {
        max_answer_bytes: 64,
        ..Policy::default()
    })
    .await;
    let answer = call(&client, "list_workers", json!({})).await;
    let error = error_of(&answer);
    assert_eq!(error["category"], "too-large");
    assert!(error["message"].as_str().unwrap().contains("cap of 64"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_destroy_that_cannot_be_confirmed_is_refused_by_default() {
    let client = behind(Policy::default()).await;
    let answer = call(
        &client,
        "destroy_worker",
        json!({"worker_id": "burst-abcde", "force": true}),
    )
    .await;
    let error = error_of(&answer);
    assert_eq!(error["category"], "refused");
    assert!(error["message"].as_str().unwrap().contains("confirmation"));
    // Without force the service's own rules answer (no such worker here).
    let answer = call(
        &client,
        "destroy_worker",
        json!({"worker_id": "burst-abcde"}),
    )
    .await;
    assert_eq!(error_of(&answer)["category"], "not-found");
}
