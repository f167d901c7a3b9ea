//! `tidepool talos version|services|health|reboot|restart-service WORKER`:
//! Talos operations on one of Tidepool's workers, through the talosconfig
//! of `join.talosconfigFrom` (the [`GuestOs`] port), as `talosctl -n <ip>`
//! would. Workers only: a node without a WorkerClaim is not Tidepool's,
//! and a control-plane node is never touched; both are refused (exit 3).

use clap::Subcommand;
use serde::Serialize;
use tidepool_controller::ports::{ClaimStore, GuestOs, GuestService, Nodes};

use crate::context::{Connected, Context};
use crate::exit::Exit;
use crate::output::{self, Format};

/// The label a control-plane node carries.
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// `tidepool talos …`.
#[derive(Debug, Subcommand)]
pub enum TalosCommand {
    /// The Talos version the worker runs.
    Version {
        /// The worker (its claim and node name).
        worker: String,
    },
    /// The worker's Talos services, their state and health.
    Services {
        /// The worker.
        worker: String,
    },
    /// Whether the worker is healthy: node Ready, every service running and
    /// passing its health check (exit 1 when not).
    Health {
        /// The worker.
        worker: String,
    },
    /// Reboots the worker through Talos (drain it first for its pods to move).
    Reboot {
        /// The worker.
        worker: String,
    },
    /// Restarts one Talos service (Talos allows kubelet).
    RestartService {
        /// The worker.
        worker: String,
        /// The service id.
        service: String,
    },
}

/// A worker's Talos health, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthRow {
    worker: String,
    version: String,
    node_ready: bool,
    services: Vec<ServiceRow>,
    healthy: bool,
}

/// One service, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceRow {
    id: String,
    state: String,
    healthy: Option<bool>,
    failures: u32,
}

impl From<GuestService> for ServiceRow {
    fn from(s: GuestService) -> Self {
        Self {
            id: s.id,
            state: s.state,
            healthy: s.healthy,
            failures: s.failures,
        }
    }
}

/// Runs `tidepool talos …`.
///
/// # Errors
/// Output failures; refusals and API failures are exit codes.
pub fn run(ctx: &Context, command: &TalosCommand) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let worker = match command {
            TalosCommand::Version { worker }
            | TalosCommand::Services { worker }
            | TalosCommand::Health { worker }
            | TalosCommand::Reboot { worker }
            | TalosCommand::RestartService { worker, .. } => worker,
        };
        let ip = match address(&live, worker).await {
            Ok(ip) => ip,
            Err(exit) => return Ok(exit),
        };
        let guest = live.exec.joiner();
        let outcome = match command {
            TalosCommand::Version { .. } => {
                guest.version(ip).await.map(|v| print_one(ctx.output, &v))
            }
            TalosCommand::Services { .. } => guest
                .services(ip)
                .await
                .map(|s| print_services(ctx.output, s.into_iter().map(ServiceRow::from).collect())),
            TalosCommand::Health { .. } => return health(ctx.output, &live, worker, ip).await,
            TalosCommand::Reboot { .. } => guest.reboot(ip).await.map(|()| {
                println!("{worker}: reboot requested");
                Ok(Exit::Ok)
            }),
            TalosCommand::RestartService { service, .. } => {
                guest.restart_service(ip, service).await.map(|()| {
                    println!("{worker}: {service} restart requested");
                    Ok(Exit::Ok)
                })
            }
        };
        match outcome {
            Ok(printed) => printed,
            Err(e) => {
                eprintln!("error: {worker}: {e}");
                Ok(Exit::Failure)
            }
        }
    })
}

/// The worker's address, once it is known to be one of Tidepool's workers
/// and not a control-plane node; else the exit code, with the reason
/// printed.
async fn address(live: &Connected, worker: &str) -> Result<std::net::IpAddr, Exit> {
    let claim = match live.exec.store().get(worker).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "error: {worker} is not a Tidepool worker (no WorkerClaim of that name); \
                 Tidepool operates only on the workers it manages"
            );
            return Err(Exit::Refused);
        }
        Err(e) => {
            eprintln!("error: reading the WorkerClaim {worker}: {e}");
            return Err(Exit::Failure);
        }
    };
    let nodes = Nodes::list(live.exec.nodes()).await.unwrap_or_default();
    if nodes
        .iter()
        .any(|n| n.name == worker && n.labels.contains_key(CONTROL_PLANE_LABEL))
    {
        eprintln!("error: {worker} is a control-plane node; Tidepool never touches one");
        return Err(Exit::Refused);
    }
    claim.status.ip.ok_or_else(|| {
        eprintln!(
            "error: {worker} has no address yet (phase {})",
            claim.phase()
        );
        Exit::Failure
    })
}

/// Prints one value.
fn print_one(format: Format, version: &str) -> anyhow::Result<Exit> {
    match output::structured(format, &serde_json::json!({ "version": version }))? {
        Some(text) => print!("{text}"),
        None => println!("{version}"),
    }
    Ok(Exit::Ok)
}

/// Prints the services.
fn print_services(format: Format, rows: Vec<ServiceRow>) -> anyhow::Result<Exit> {
    if let Some(text) = output::structured(format, &rows)? {
        print!("{text}");
        return Ok(Exit::Ok);
    }
    let mut t = output::table(["SERVICE", "STATE", "HEALTH", "FAILURES"]);
    for s in rows {
        let health = match s.healthy {
            Some(true) => "OK",
            Some(false) => "FAIL",
            None => "?",
        };
        t.add_row(vec![
            s.id,
            s.state,
            health.to_owned(),
            s.failures.to_string(),
        ]);
    }
    print!("{}", output::render(&t));
    Ok(Exit::Ok)
}

/// Prints the worker's health; exit 1 when unhealthy.
async fn health(
    format: Format,
    live: &Connected,
    worker: &str,
    ip: std::net::IpAddr,
) -> anyhow::Result<Exit> {
    let guest = live.exec.joiner();
    let (version, services) = match (guest.version(ip).await, guest.services(ip).await) {
        (Ok(v), Ok(s)) => (v, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {worker}: {e}");
            return Ok(Exit::Failure);
        }
    };
    let node_ready = live.exec.nodes().node_ready(worker).await.ok().flatten() == Some(true);
    let healthy = node_ready
        && services
            .iter()
            .all(|s| s.state == "Running" && s.healthy != Some(false));
    let row = HealthRow {
        worker: worker.to_owned(),
        version,
        node_ready,
        services: services.into_iter().map(ServiceRow::from).collect(),
        healthy,
    };
    match output::structured(format, &row)? {
        Some(text) => print!("{text}"),
        None => {
            let failing: Vec<&str> = row
                .services
                .iter()
                .filter(|s| s.state != "Running" || s.healthy == Some(false))
                .map(|s| s.id.as_str())
                .collect();
            println!(
                "{}: {} (Talos {}, node {}, {} services{})",
                row.worker,
                if healthy { "healthy" } else { "unhealthy" },
                row.version,
                if node_ready { "Ready" } else { "not Ready" },
                row.services.len(),
                if failing.is_empty() {
                    String::new()
                } else {
                    format!(", failing: {}", failing.join(", "))
                }
            );
        }
    }
    Ok(if healthy { Exit::Ok } else { Exit::Failure })
}
