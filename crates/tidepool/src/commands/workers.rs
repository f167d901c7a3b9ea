//! The worker commands: `workers list|show`, `provision`, `drain`,
//! `destroy`, `extend-ttl`, `cordon`, `uncordon`.
//!
//! Mutations change the durable WorkerClaim; with `--wait` the command also
//! sees them carried out, with a progress bar each ([`super::wait`]): by
//! the running controller, or by the command itself (which is how an
//! operator works without one).

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tidepool_controller::service::{ErrorCategory, ProvisionRequest, ServiceError, WorkerFilter};
use tidepool_core::Phase;
use tidepool_core::duration::parse_duration;
use tidepool_core::pool::WorkerType;
use tidepool_core::view::WorkerInfo;

use super::wait::wait_for;
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{self, Format};

/// `tidepool workers …`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List workers: Tidepool's and the cluster's other nodes.
    List {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
        /// Only this worker type.
        #[arg(long = "type", value_enum)]
        worker_type: Option<TypeArg>,
    },
    /// Show one worker.
    Show {
        /// Worker name.
        id: String,
    },
}

/// Worker types for `--type`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    /// Baseline workers.
    Permanent,
    /// Burst and GPU workers.
    Temporary,
    /// Spot workers.
    Preemptible,
}

/// `tidepool provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Pool to add workers to.
    #[arg(long)]
    pub pool: String,
    /// Size (the pool's first size when omitted).
    #[arg(long)]
    pub size: Option<String>,
    /// How many workers (1–10).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Time to live, e.g. 4h (1h–168h; the pool's default when omitted).
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Why, for the audit trail.
    #[arg(long, default_value = "manual")]
    pub reason: String,
    /// Carry the request out now and wait until the workers are Ready.
    #[arg(long)]
    pub wait: bool,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// What a mutating command does.
#[derive(Debug)]
pub enum Mutation {
    /// Cordon and drain.
    Drain {
        /// Worker.
        id: String,
        /// Wait until drained.
        wait: bool,
    },
    /// Remove.
    Destroy {
        /// Worker.
        id: String,
        /// Skip the drain requirement.
        force: bool,
        /// Wait until gone.
        wait: bool,
    },
    /// Extend the TTL.
    ExtendTtl {
        /// Worker.
        id: String,
        /// By how much (whole hours).
        by: Duration,
    },
    /// Cordon or uncordon.
    Cordon {
        /// Worker.
        id: String,
        /// Cordon (`true`) or uncordon.
        on: bool,
    },
}

pub(crate) fn actor() -> String {
    std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli:{u}"))
}

fn exit_for(e: &ServiceError) -> Exit {
    match e.category() {
        ErrorCategory::Invalid => Exit::Invalid,
        ErrorCategory::Refused => Exit::Refused,
        ErrorCategory::NotFound => Exit::NotFound,
        ErrorCategory::Failed => Exit::Failure,
    }
}

fn report(e: &ServiceError) -> Exit {
    match e {
        ServiceError::Invalid(problems) => {
            eprintln!("error: the request is invalid:");
            for p in problems {
                eprintln!("  - {p}");
            }
        }
        other => eprintln!("error: {other}"),
    }
    exit_for(e)
}

fn table(workers: &[WorkerInfo]) -> String {
    let mut t = output::table([
        "NAME", "POOL", "TYPE", "SIZE", "PHASE", "NODE", "VMID", "HOST", "IP", "EXPIRES",
    ]);
    for w in workers {
        let node = match (w.node_ready, w.cordoned) {
            (None, _) => "-".to_owned(),
            (Some(true), false) => "Ready".to_owned(),
            (Some(true), true) => "Ready,Cordoned".to_owned(),
            (Some(false), false) => "NotReady".to_owned(),
            (Some(false), true) => "NotReady,Cordoned".to_owned(),
        };
        t.add_row(vec![
            w.name.clone(),
            w.pool.clone().unwrap_or_else(|| "-".into()),
            w.worker_type.clone(),
            w.size.clone().unwrap_or_else(|| "-".into()),
            w.phase.to_string(),
            node,
            w.vmid.map_or_else(|| "-".into(), |v| v.to_string()),
            w.host.clone().unwrap_or_else(|| "-".into()),
            w.ip.clone().unwrap_or_else(|| "-".into()),
            w.expires_in.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    output::render(&t)
}

fn print_workers(format: Format, workers: &[WorkerInfo]) -> anyhow::Result<()> {
    match output::structured(format, &workers)? {
        Some(doc) => print!("{doc}"),
        None => print!("{}", table(workers)),
    }
    Ok(())
}

/// `tidepool workers list|show`.
///
/// # Errors
/// Output failures.
pub fn workers(ctx: &Context, cmd: &WorkersCommand) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let svc = live.service;
        match cmd {
            WorkersCommand::List { pool, worker_type } => {
                let filter = WorkerFilter {
                    worker_type: worker_type.map(|t| match t {
                        TypeArg::Permanent => WorkerType::Permanent,
                        TypeArg::Temporary => WorkerType::Temporary,
                        TypeArg::Preemptible => WorkerType::Preemptible,
                    }),
                    pool: pool.clone(),
                };
                match svc.list_workers(&filter).await {
                    Ok(ws) => print_workers(ctx.output, &ws).map(|()| Exit::Ok),
                    Err(e) => Ok(report(&e)),
                }
            }
            WorkersCommand::Show { id } => match svc.get_worker(id).await {
                Ok(w) => print_workers(ctx.output, &[w]).map(|()| Exit::Ok),
                Err(e) => Ok(report(&e)),
            },
        }
    })
}

/// `tidepool provision`.
///
/// # Errors
/// Output failures.
pub fn provision(ctx: &Context, args: &ProvisionArgs) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let svc = live.service;
        let req = ProvisionRequest {
            pool: args.pool.clone(),
            size: args.size.clone(),
            count: args.count,
            ttl: args.ttl,
            requested_by: actor(),
            reason: args.reason.clone(),
        };
        let names = match svc.provision(&req).await {
            Ok(n) => n,
            Err(e) => return Ok(report(&e)),
        };
        if !args.wait {
            for n in &names {
                println!("{n} requested");
            }
            return Ok(Exit::Ok);
        }
        let ok = wait_for(&svc, &names, Phase::Ready).await;
        let workers: Vec<WorkerInfo> = svc
            .list_workers(&WorkerFilter::default())
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|w| names.contains(&w.name))
            .collect();
        print_workers(ctx.output, &workers)?;
        Ok(if ok { Exit::Ok } else { Exit::Failure })
    })
}

/// `tidepool drain|destroy|extend-ttl|cordon|uncordon`.
///
/// # Errors
/// Output failures.
pub fn mutate(ctx: &Context, m: &Mutation) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let svc = live.service;
        let who = actor();
        let (result, wait) = match m {
            Mutation::Drain { id, wait } => (
                svc.drain(&who, id).await.map(|()| format!("{id} draining")),
                wait.then(|| (id, Phase::Draining)),
            ),
            Mutation::Destroy { id, force, wait } => (
                svc.destroy(&who, id, *force)
                    .await
                    .map(|()| format!("{id} being destroyed")),
                wait.then(|| (id, Phase::Terminated)),
            ),
            Mutation::ExtendTtl { id, by } => {
                let hours = u32::try_from(by.as_secs().div_ceil(3600)).unwrap_or(u32::MAX);
                (
                    svc.extend_ttl(&who, id, hours)
                        .await
                        .map(|at| format!("{id} now expires at {at}")),
                    None,
                )
            }
            Mutation::Cordon { id, on } => (
                svc.set_cordon(&who, id, *on)
                    .await
                    .map(|()| format!("{id} {}", if *on { "cordoned" } else { "uncordoned" })),
                None,
            ),
        };
        match result {
            Err(e) => Ok(report(&e)),
            Ok(message) => {
                println!("{message}");
                match wait {
                    Some((id, goal)) => {
                        Ok(if wait_for(&svc, std::slice::from_ref(id), goal).await {
                            Exit::Ok
                        } else {
                            Exit::Failure
                        })
                    }
                    None => Ok(Exit::Ok),
                }
            }
        }
    })
}
