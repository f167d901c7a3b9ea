//! `tidepool doctor`: checks every precondition of the configured setup
//! (configuration, secrets, Proxmox API and privileges, templates, PCI
//! mappings, the VMID range, Kubernetes API, CRD and RBAC, the join) and
//! prints pass / warn / fail with the fix for each. Read-only; exit 0 only
//! when nothing fails. The checks are in `tidepool_live::doctor`.

use std::path::{Path, PathBuf};

use tidepool_live::doctor::{self, DoctorOptions, Report, Status};

use crate::context::Context;
use crate::exit::Exit;
use crate::live::{kubeconfig, load_config};
use crate::output::{self, Format};

/// The report as a table: one row per check, its fix under it.
fn render(report: &Report) -> String {
    let mut t = output::table(["STATUS", "CHECK", "RESULT"]);
    for c in &report.checks {
        t.add_row(vec![
            c.status.as_str().to_uppercase(),
            c.id.clone(),
            c.message.clone(),
        ]);
        if let Some(fix) = &c.fix {
            t.add_row(vec![String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
    format!(
        "{}\n{} passed, {} warning(s), {} failed\n",
        output::render(&t),
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    )
}

/// Runs the checks and prints them.
///
/// # Errors
/// Runtime start-up and output failures.
pub fn run(ctx: &Context) -> anyhow::Result<Exit> {
    let config = match load_config(&ctx.config) {
        Ok(c) => c,
        Err(unavailable) => return Ok(unavailable.report()),
    };
    let options = DoctorOptions {
        config_dir: config_dir(&ctx.config),
        kubeconfig: kubeconfig(ctx.kubeconfig.as_ref()),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = match runtime.block_on(doctor::run(&config, &options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return Ok(Exit::Failure);
        }
    };
    match output::structured(ctx.output, &report)? {
        Some(text) => print!("{text}"),
        None => {
            debug_assert_eq!(ctx.output, Format::Table);
            print!("{}", render(&report));
        }
    }
    Ok(if report.ok() { Exit::Ok } else { Exit::Failure })
}

/// The directory relative references in the configuration start from.
fn config_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
