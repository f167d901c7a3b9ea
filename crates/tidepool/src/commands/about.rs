//! `tidepool version`, `tidepool completions SHELL` and `tidepool man`:
//! what this binary is, and the shell completions and man page generated
//! from the same clap definitions that parse the command line.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Exit;

/// The build, one fact per line: version, the commit it was built from,
/// the target, the profile, and whether the lab is built in.
pub fn version_text() -> String {
    let lab = if cfg!(feature = "lab") {
        "built in (tidepool lab, tidepool demo)"
    } else {
        "left out"
    };
    format!(
        "tidepool {}\ncommit:  {}\ntarget:  {}\nprofile: {}\nlab:     {lab}\n",
        env!("CARGO_PKG_VERSION"),
        env!("TIDEPOOL_GIT_COMMIT"),
        env!("TIDEPOOL_TARGET"),
        env!("TIDEPOOL_PROFILE"),
    )
}

/// Prints [`version_text`].
///
/// # Errors
/// Writing to stdout failing.
pub fn version() -> anyhow::Result<Exit> {
    std::io::stdout().write_all(version_text().as_bytes())?;
    Ok(Exit::Ok)
}

/// Prints the completion script for `shell` (bash, zsh, fish, elvish,
/// powershell).
///
/// # Errors
/// Writing to stdout failing.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "tidepool", &mut out);
    out.flush()?;
    Ok(Exit::Ok)
}

/// Prints the man page `tidepool(1)` in roff, every subcommand included.
///
/// # Errors
/// Rendering or writing to stdout failing.
pub fn man() -> anyhow::Result<Exit> {
    let cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    // Each command's own section: what it does, then its options.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(out, ".SH \"TIDEPOOL {}\"", sub.get_name().to_uppercase())?;
        let page = clap_mangen::Man::new(sub.clone());
        page.render_description_section(&mut out)?;
        page.render_options_section(&mut out)?;
    }
    out.flush()?;
    Ok(Exit::Ok)
}
