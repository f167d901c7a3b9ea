//! The join checks of `tidepool doctor`: the worker config parses as a
//! Talos worker machine config and its control-plane endpoint answers; for
//! nocloud, the user-data listener's address can be bound here and its
//! advertised URL is the one hosts will fetch from.

use std::time::Duration;

use tidepool_core::config::{Config, JoinMethod, NocloudFlavor};

use super::{Check, Report};

/// Runs the join checks; `worker_config` is the resolved secret (`None`
/// when it did not resolve, reported already).
pub async fn check(config: &Config, worker_config: Option<&str>, report: &mut Report) {
    let talos = match &config.join.method {
        JoinMethod::TalosApi { .. } => true,
        JoinMethod::Nocloud { flavor, .. } => matches!(flavor, NocloudFlavor::Talos),
    };
    if let Some(text) = worker_config
        && talos
    {
        match endpoint(text) {
            Ok(url) => {
                report.checks.push(Check::pass(
                    "join worker-config",
                    format!("a Talos worker config for control plane {url}"),
                ));
                report.checks.push(control_plane(&url).await);
            }
            Err(problem) => report.checks.push(Check::fail(
                "join worker-config",
                problem,
                "generate it with talosctl gen config <cluster> https://<control-plane>:6443 and use worker.yaml",
            )),
        }
    }
    if let JoinMethod::Nocloud {
        listen,
        advertise_url,
        ..
    } = &config.join.method
    {
        report.checks.push(nocloud(listen, advertise_url).await);
    }
}

/// The `cluster.controlPlane.endpoint` of a worker machine config.
fn endpoint(text: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("the worker config is not YAML: {e}"))?;
    let kind = doc["machine"]["type"].as_str().unwrap_or_default();
    if kind != "worker" {
        return Err(format!(
            "machine.type is `{kind}`, not `worker`: this is not a worker config"
        ));
    }
    doc["cluster"]["controlPlane"]["endpoint"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "cluster.controlPlane.endpoint is missing".to_owned())
}

/// Whether the control-plane endpoint accepts a TCP connection.
async fn control_plane(url: &str) -> Check {
    let id = "join control-plane";
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Check::pass(id, format!("{addr} answers")),
        Ok(Err(e)) => Check::fail(
            id,
            format!("{addr}: {e}"),
            "new workers join through this endpoint: check the address in worker.yaml and that the control plane is up",
        ),
        Err(_) => Check::fail(
            id,
            format!("{addr}: no answer within 5 s"),
            "new workers join through this endpoint: check routing and firewalls from here and from the workers' network",
        ),
    }
}

/// The nocloud listener: its address can be bound, and the URL advertised
/// to hosts points at it.
async fn nocloud(listen: &str, advertise: &str) -> Check {
    let id = "join nocloud-listener";
    match tokio::net::TcpListener::bind(listen).await {
        Ok(_) => Check::warn(
            id,
            format!("{listen} can be bound here; hosts fetch user-data from {advertise}"),
            format!(
                "from a Proxmox host, check that curl -sf {advertise} answers while tidepool runs"
            ),
        ),
        Err(e) => Check::fail(
            id,
            format!("{listen} cannot be bound: {e}"),
            "choose a free join.listen address on an interface the hosts can reach",
        ),
    }
}
