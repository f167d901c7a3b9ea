//! The `tidepool` command: parses the command line and hands over to the
//! command modules; the exit status is one of the documented codes in
//! [`exit`].

mod cli;
mod commands;
mod context;
mod exit;
mod lazy_mcp;
mod live;
mod output;

fn main() -> std::process::ExitCode {
    cli::run()
}
