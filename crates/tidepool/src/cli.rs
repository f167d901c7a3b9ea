//! The command-line grammar and the dispatch to command modules.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tidepool_controller::ports::Clock;
use tidepool_controller::{ScaledClock, SystemClock};

use crate::commands;
use crate::commands::workers::{self, Mutation};
use crate::context::Context;
use crate::exit::{Exit, HELP};
use crate::output::Format;

/// Elastic worker pools for Kubernetes on Proxmox VE.
#[derive(Debug, Parser)]
#[command(name = "tidepool", version, about, after_help = HELP)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "TIDEPOOL_CONFIG",
        default_value = "./tidepool.yaml"
    )]
    pub config: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Kubeconfig (else ~/.kube/config, else in-cluster configuration).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run the controller's clock this many times faster than real time,
    /// to match a lab started with the same `--time-scale`.
    #[arg(long, global = true, env = "TIDEPOOL_TIME_SCALE", default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
    /// Origin of a scaled clock (Unix milliseconds), to share a lab's
    /// simulated time; `lab.env` sets it.
    #[arg(long, global = true, env = "TIDEPOOL_TIME_ORIGIN", hide = true)]
    pub time_origin: Option<i64>,
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check or print configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the lab: emulated Proxmox VE, Kubernetes and Talos APIs on
    /// loopback, until interrupted.
    #[cfg(feature = "lab")]
    Lab(commands::lab::LabArgs),
    /// List or show workers.
    #[command(subcommand)]
    Workers(commands::workers::WorkersCommand),
    /// Request new workers in a pool.
    Provision(commands::workers::ProvisionArgs),
    /// Cordon a worker and evict its pods (it stays until destroyed).
    Drain {
        /// Worker name.
        id: String,
        /// Carry it out now and wait until drained.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a drained worker (its node and its VM).
    Destroy {
        /// Worker name.
        id: String,
        /// Skip the drain requirement (never the other safety rules).
        #[arg(long)]
        force: bool,
        /// Carry it out now and wait until it is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Extend a worker's time to live by whole hours (e.g. 2h).
    ExtendTtl {
        /// Worker name.
        id: String,
        /// How much longer, e.g. 2h.
        #[arg(value_parser = parse_hours)]
        by: std::time::Duration,
    },
    /// Mark a worker's node unschedulable.
    Cordon {
        /// Worker name.
        id: String,
    },
    /// Mark a worker's node schedulable again.
    Uncordon {
        /// Worker name.
        id: String,
    },
    /// Serve the MCP tools for an AI agent: on stdin/stdout, or over
    /// streamable HTTP with bearer tokens (`--listen`, `server.mcp`).
    Mcp(commands::mcp::McpArgs),
    /// Show what the autoscaler would do now (a dry run), with reasons.
    Plan,
    /// An emergency scale-up: act now on the pods waiting for these pools,
    /// skipping the autoscaler's trigger windows but never the pools'
    /// limits or the hosts' room, and request the workers the plan asks
    /// for (exit 3 when pods wait and none can be helped).
    ScaleUp {
        /// A pool to scale (repeatable; every pool when omitted).
        #[arg(long = "pool")]
        pools: Vec<String>,
    },
    /// Show the room left for workers: every host's memory, vCPUs, storage
    /// and GPUs, the VMIDs and pool limits left, how many more workers of
    /// each size fit and which dimension binds first, and what one worker
    /// more or fewer would change.
    Capacity {
        /// Only this pool's figures and what-ifs.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Check every precondition of the configured setup, read-only: the
    /// configuration and its secrets, the Proxmox token's privileges, the
    /// templates, PCI mappings and VMID range, the Kubernetes CRD and RBAC,
    /// and the join. Prints pass, warn or fail with the fix for each; exit 0
    /// only when nothing fails.
    Doctor,
    /// List the VMs that carry Tidepool's marker but whose WorkerClaim no
    /// longer exists (the controller removes them after
    /// `server.orphanGracePeriod`).
    Orphans,
    /// Show each worker's health (spec §7): its problems and since when,
    /// the latest repair, and the next action of the repair matrix with
    /// when it falls due.
    Health {
        /// Only this worker.
        worker: Option<String>,
    },
    /// Rolling Talos upgrades of a pool, in place, a batch at a time:
    /// start one (`--pool P --talos-image IMAGE`), or show, resume or
    /// abort one.
    Upgrade(commands::upgrade::UpgradeArgs),
    /// Talos operations on one worker through `join.talosconfigFrom`:
    /// version, services, health, reboot, restart-service. Workers only.
    #[command(subcommand)]
    Talos(commands::talos::TalosCommand),
    /// The whole product in one command, no hardware: a lab, the
    /// controller, a burst of work scaled up and back down, and a summary.
    #[cfg(feature = "lab")]
    Demo {
        /// Give up after this many seconds of real time.
        #[arg(long, default_value_t = 300)]
        budget: u64,
    },
    /// Run the controller: leader election, the worker lifecycle for every
    /// WorkerClaim, and /healthz, /readyz, /metrics.
    Run {
        /// Observe, plan and explain (logs, metrics, Events) exactly as a
        /// real run, but change nothing in Proxmox or Kubernetes except
        /// Events: no Lease, no claims, no VMs.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the version, the commit it was built from, the target and
    /// whether the lab is built in.
    Version,
    /// Print a shell completion script (e.g. `tidepool completions bash >
    /// /etc/bash_completion.d/tidepool`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, tidepool(1), in roff (`tidepool man | man -l -`).
    Man,
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a time scale; use a number of at least 1"
        )),
    }
}

fn parse_hours(s: &str) -> Result<std::time::Duration, String> {
    let d = tidepool_core::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_secs() == 0 || d.as_secs() % 3600 != 0 {
        return Err(format!("`{s}` is not a whole number of hours (e.g. 2h)"));
    }
    Ok(d)
}

/// `tidepool config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and summarise it (exit 0 valid, 2 invalid).
    Check {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Print a complete, commented example configuration.
    Example,
}

/// Sets up logging: to stderr at the level `-v` asks for (or
/// `TIDEPOOL_LOG`), with colours only on a terminal; or, when `file` is
/// given (the demo without `-v`), at info level into that file, so the
/// narrative on the terminal stays clean.
fn init_logging(verbose: u8, file: Option<&std::path::Path>) {
    use std::io::IsTerminal;
    let level = match (verbose, file) {
        (0, Some(_)) => "info",
        (0, None) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let to_file = file.and_then(|path| {
        std::fs::create_dir_all(path.parent()?).ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let _ = match to_file {
        Some(f) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Arc::new(f))
            .try_init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// The controller's clock, the one place the time flags are read for it:
/// real time, or a clock `--time-scale` times faster from the lab's origin
/// (now when none is given), reading the same simulated time as the lab.
fn clock(cli: &Cli) -> Arc<dyn Clock> {
    if cli.time_scale > 1.0 {
        let origin = cli
            .time_origin
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
        Arc::new(ScaledClock::new(cli.time_scale, origin))
    } else {
        Arc::new(SystemClock)
    }
}

/// Parses the command line, runs the command, and turns the outcome into
/// an exit code. Usage errors exit 2 (clap's convention, and ours).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells a story on the terminal: its logs go to a file in its
    // state directory unless `-v` asks for them.
    #[cfg(feature = "lab")]
    let log_file = (matches!(cli.command, Command::Demo { .. }) && cli.verbose == 0)
        .then(commands::demo::log_path);
    #[cfg(not(feature = "lab"))]
    let log_file: Option<PathBuf> = None;
    init_logging(cli.verbose, log_file.as_deref());
    let ctx = Context {
        config: cli.config.clone(),
        kubeconfig: cli.kubeconfig.clone(),
        output: cli.output,
        clock: clock(&cli),
    };
    let outcome = match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => {
            commands::config::check(file.as_ref().unwrap_or(&cli.config), cli.output)
        }
        Command::Config(ConfigCommand::Example) => commands::config::example(),
        #[cfg(feature = "lab")]
        Command::Lab(args) => commands::lab::run(args, cli.time_scale),
        #[cfg(feature = "lab")]
        Command::Demo { budget } => commands::demo::run(
            if cli.time_scale > 1.0 {
                cli.time_scale
            } else {
                600.0
            },
            std::time::Duration::from_secs(*budget),
        ),
        Command::Workers(w) => workers::workers(&ctx, w),
        Command::Provision(p) => workers::provision(&ctx, p),
        Command::Drain { id, wait } => workers::mutate(
            &ctx,
            &Mutation::Drain {
                id: id.clone(),
                wait: *wait,
            },
        ),
        Command::Destroy { id, force, wait } => workers::mutate(
            &ctx,
            &Mutation::Destroy {
                id: id.clone(),
                force: *force,
                wait: *wait,
            },
        ),
        Command::ExtendTtl { id, by } => workers::mutate(
            &ctx,
            &Mutation::ExtendTtl {
                id: id.clone(),
                by: *by,
            },
        ),
        Command::Cordon { id } => workers::mutate(
            &ctx,
            &Mutation::Cordon {
                id: id.clone(),
                on: true,
            },
        ),
        Command::Uncordon { id } => workers::mutate(
            &ctx,
            &Mutation::Cordon {
                id: id.clone(),
                on: false,
            },
        ),
        Command::Mcp(args) => commands::mcp::run(&ctx, args),
        Command::Run { dry_run: false } => commands::run::run(&ctx),
        Command::Run { dry_run: true } => commands::run::dry_run(&ctx),
        Command::Version => commands::about::version(),
        Command::Completions { shell } => commands::about::completions(*shell),
        Command::Man => commands::about::man(),
        Command::Plan => commands::plan::run(&ctx),
        Command::Orphans => commands::orphans::run(&ctx),
        Command::Doctor => commands::doctor::run(&ctx),
        Command::Health { worker } => commands::health::run(&ctx, worker.as_deref()),
        Command::Upgrade(args) => commands::upgrade::run(&ctx, args),
        Command::Talos(command) => commands::talos::run(&ctx, command),
        Command::Capacity { pool } => commands::capacity::run(&ctx, pool.as_deref()),
        Command::ScaleUp { pools } => commands::scale_up::run(&ctx, pools),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failure.into()
        }
    }
}
