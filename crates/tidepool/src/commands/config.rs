//! `tidepool config check` and `tidepool config example`.

use std::path::Path;

use tidepool_core::config::{self, Config, EXAMPLE};
use tidepool_core::duration::Human;
use tidepool_core::quantity::{format_bytes, format_millicores};

use crate::exit::Exit;
use crate::output::{self, Format};

/// Validates `path`; prints a summary on stdout when valid, or every error
/// (`FILE:LINE:COL: path: message`) on stderr when not.
///
/// # Errors
/// Only for output failures; an invalid or unreadable file is `Exit::Invalid`.
pub fn check(path: &Path, format: Format) -> anyhow::Result<Exit> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read the configuration: {e}", path.display());
            return Ok(Exit::Invalid);
        }
    };
    match config::load(&text) {
        Ok(cfg) => {
            match output::structured(format, &cfg)? {
                Some(doc) => print!("{doc}"),
                None => print!("{}", summary(path, &cfg)),
            }
            Ok(Exit::Ok)
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{}:{e}", path.display());
            }
            let n = errs.0.len();
            eprintln!(
                "{}: {n} error{} found",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(Exit::Invalid)
        }
    }
}

/// Prints the shipped example configuration.
///
/// # Errors
/// Never; the signature matches the other commands.
pub fn example() -> anyhow::Result<Exit> {
    print!("{EXAMPLE}");
    Ok(Exit::Ok)
}

fn summary(path: &Path, cfg: &Config) -> String {
    let mut out = format!("{}: valid\n\n", path.display());
    let mut providers = output::table(["PROVIDER", "ENDPOINT", "HOSTS", "VMIDS", "TOKEN"]);
    for p in cfg.providers.values() {
        providers.add_row(vec![
            p.name.clone(),
            p.endpoint.clone(),
            p.hosts.join(","),
            format!("{}-{}", p.vmid_lower, p.vmid_upper),
            p.token.to_string(),
        ]);
    }
    out += &output::render(&providers);
    out.push('\n');
    let mut pools = output::table([
        "POOL", "KIND", "SIZES", "MIN", "MAX", "CPU", "MEMORY", "TTL", "IDLE",
    ]);
    for p in &cfg.pools {
        pools.add_row(vec![
            p.name.clone(),
            p.kind.to_string(),
            p.sizes.join(","),
            p.limits.min_nodes.to_string(),
            p.limits.max_nodes.to_string(),
            p.limits
                .cpu_cores
                .map_or_else(|| "-".into(), |c| c.to_string()),
            p.limits
                .memory_mib
                .map_or_else(|| "-".into(), |m| format_bytes(m << 20)),
            p.ttl.map_or_else(|| "-".into(), |t| Human(t).to_string()),
            p.idle_timeout
                .map_or_else(|| "-".into(), |t| Human(t).to_string()),
        ]);
    }
    out += &output::render(&pools);
    out.push('\n');
    let mut sizes = output::table([
        "SIZE",
        "VCPU",
        "MEMORY",
        "DISK",
        "GPU",
        "ALLOCATABLE",
        "USED BY",
    ]);
    for (name, entry) in &cfg.sizes {
        let s = &entry.size;
        let used: Vec<&str> = cfg
            .pools
            .iter()
            .filter(|p| p.sizes.contains(name))
            .map(|p| p.name.as_str())
            .collect();
        sizes.add_row(vec![
            name.clone(),
            s.vcpu.to_string(),
            format_bytes(s.memory_bytes()),
            format!("{}G", s.disk_gb),
            s.gpu
                .as_ref()
                .map_or_else(|| "-".into(), |g| format!("{}x {}", g.count, g.class)),
            format!(
                "{} / {}",
                format_millicores(s.allocatable.cpu_milli),
                format_bytes(s.allocatable.memory_bytes)
            ),
            if used.is_empty() {
                "-".into()
            } else {
                used.join(",")
            },
        ]);
    }
    out += &output::render(&sizes);
    out
}
