//! Tidepool's MCP server on stdin/stdout over the controller's in-memory
//! fake world, for trying the tools with any MCP client without a lab:
//! `cargo run -p tidepool-mcp --example fake_stdio`. A background task plays
//! the controller, so provisioned workers reach Ready within milliseconds.
//! Logs go to stderr; stdout carries only the protocol.

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::Executor;
use tidepool_controller::service::Service;
use tidepool_controller::testing::Fake;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_mcp::{TidepoolMcp, serve_stdio};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let fake = Fake::new();
    fake.add_foreign_node(
        "k8s-node1",
        &[("node-pool", "permanent"), ("worker-type", "permanent")],
    );
    fake.add_foreign_node("control-plane-1", &[]);
    let config = Arc::new(config::load(EXAMPLE).map_err(|e| format!("{e:?}"))?);
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        Arc::new(tidepool_controller::SystemClock),
    ));
    let controller = Arc::clone(&exec);
    tokio::spawn(async move {
        loop {
            let names: Vec<String> = fake.world().claims.keys().cloned().collect();
            for name in names {
                let _ = controller
                    .run_until_idle(&name, Duration::from_millis(20), Duration::from_millis(1))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    serve_stdio(TidepoolMcp::new(Arc::new(Service::new(exec)))).await?;
    Ok(())
}
