//! The command-line grammar and the dispatch to command modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;
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
    Lab(commands::lab::LabArgs),
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

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line, runs the command, and turns the outcome into
/// an exit code. Usage errors exit 2 (clap's convention, and ours).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let outcome = match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => {
            commands::config::check(file.as_ref().unwrap_or(&cli.config), cli.output)
        }
        Command::Config(ConfigCommand::Example) => commands::config::example(),
        Command::Lab(args) => commands::lab::run(args),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failure.into()
        }
    }
}
