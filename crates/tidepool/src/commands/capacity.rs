//! `tidepool capacity`: the room left for workers (spec §5) — every
//! host's dimensions, the VMIDs left, each pool's limits, how many more
//! workers of each size fit and which dimension binds first, and what one
//! worker more or fewer would change. The JSON and YAML forms are the MCP
//! tool `capacity_report`'s result.

use std::collections::BTreeMap;

use tidepool_core::planner::capacity::{self, CapacityReport, HostRoom};
use tidepool_core::view::CapacityResult;

use crate::context::Context;
use crate::exit::Exit;
use crate::live;
use crate::output::{self, Format};

/// Observes the cluster and the hypervisor and prints the capacity report,
/// only `pool`'s figures when given.
///
/// # Errors
/// Output failures; connection problems and an unknown pool are exit codes.
pub fn run(ctx: &Context, pool: Option<&str>) -> anyhow::Result<Exit> {
    ctx.connected(|live| async move {
        let input = match live::observe(&live.exec).await {
            Ok(input) => input,
            Err(unavailable) => return Ok(unavailable.report()),
        };
        if let Some(name) = pool
            && input.config.pool(name).is_none()
        {
            eprintln!("error: no pool named `{name}` in the configuration");
            return Ok(Exit::Invalid);
        }
        let doc = CapacityResult::new(capacity::report(&input), pool);
        if let Some(text) = output::structured(ctx.output, &doc)? {
            print!("{text}");
            return Ok(Exit::Ok);
        }
        debug_assert_eq!(ctx.output, Format::Table);
        print!("{}", table(&doc.0));
        Ok(Exit::Ok)
    })
}

fn pairs<V: ToString>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={}", v.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

fn gib(mib: i64) -> String {
    format!("{:.1}", mib as f64 / 1024.0)
}

fn room(r: Option<&HostRoom>) -> String {
    r.map_or_else(
        || "-".to_owned(),
        |r| {
            format!(
                "{} GiB, {} vCPU, {} GiB disk",
                gib(r.memory_free_mib),
                r.vcpus_left.floor(),
                r.storage_free_gib
            )
        },
    )
}

/// The report for people: hosts, providers and the cluster, then what fits
/// per pool and size, each pool's limits, and the what-ifs.
fn table(r: &CapacityReport) -> String {
    [
        hosts_table(r),
        fits_table(r),
        limits_table(r) + &spares_line(r),
        what_if_table(r),
    ]
    .join("\n")
}

/// Each host's room, then one line per provider and one for the cluster.
fn hosts_table(r: &CapacityReport) -> String {
    let mut out = String::new();
    let mut t = output::table([
        "HOST",
        "ONLINE",
        "MEMORY FREE (GiB)",
        "VCPU LEFT",
        "STORAGE FREE (GiB)",
        "GPU FREE",
        "ON THE WAY",
    ]);
    for h in &r.hosts {
        t.add_row(vec![
            h.name.clone(),
            if h.online { "yes" } else { "no" }.to_owned(),
            format!(
                "{} of {}",
                gib(h.memory_free_mib),
                gib(i64::try_from(h.memory_total_mib).unwrap_or(i64::MAX))
            ),
            format!(
                "{} of {}",
                h.vcpus_left.floor(),
                (f64::from(h.cores) * h.cpu_overcommit).floor()
            ),
            pairs(&h.storage_free_gib),
            pairs(&h.gpu_free),
            h.vms_on_the_way.to_string(),
        ]);
    }
    out.push_str(&output::render(&t));
    for p in &r.providers {
        out.push_str(&format!(
            "Provider {}: {} VMIDs left in {}–{}; disks on {}; {} MiB overhead per VM; memory free is after each host's reserve.\n",
            p.name, p.vmids_left, p.vmid_lower, p.vmid_upper, p.storage, p.vm_memory_overhead_mib
        ));
    }
    let c = &r.cluster;
    out.push_str(&format!(
        "Cluster: {} Ready node(s), {:.1} CPUs and {} GiB allocatable, {:.1} CPUs and {} GiB requested; {} block volume(s) attached, room for {} more; {} worker(s) on their way.\n",
        c.nodes,
        c.cpu_milli as f64 / 1000.0,
        gib(i64::try_from(c.memory_mib).unwrap_or(i64::MAX)),
        c.requested_cpu_milli as f64 / 1000.0,
        gib(i64::try_from(c.requested_memory_mib).unwrap_or(i64::MAX)),
        c.block_volumes,
        c.block_volumes_left,
        c.workers_on_the_way
    ));
    out
}

/// How many workers of each pool and size fit, and what binds first.
fn fits_table(r: &CapacityReport) -> String {
    let mut t = output::table([
        "POOL",
        "SIZE",
        "FITS",
        "BINDS FIRST",
        "LIMITS ALLOW",
        "VMIDS",
        "PER HOST",
    ]);
    for p in &r.pools {
        for s in &p.sizes {
            let hosts = s
                .hosts
                .iter()
                .map(|h| format!("{}={} ({})", h.host, h.fits, h.binding))
                .collect::<Vec<_>>()
                .join(", ");
            t.add_row(vec![
                p.name.clone(),
                s.size.clone(),
                s.fits.to_string(),
                s.binding.to_string(),
                s.within_limits.to_string(),
                s.vmids_left.to_string(),
                if hosts.is_empty() {
                    "no online host".to_owned()
                } else {
                    hosts
                },
            ]);
        }
    }
    output::render(&t)
}

/// Each pool's limits: nodes, CPU and memory left.
fn limits_table(r: &CapacityReport) -> String {
    let mut t = output::table([
        "POOL",
        "KIND",
        "NODES",
        "ON THE WAY",
        "NODES LEFT",
        "CPU LEFT",
        "MEMORY LEFT (GiB)",
    ]);
    let left = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or_else(|| "-".to_owned(), f);
    for p in &r.pools {
        let l = &p.limits;
        t.add_row(vec![
            p.name.clone(),
            p.kind.clone(),
            format!("{} of {}", l.nodes, l.max_nodes),
            l.in_flight.to_string(),
            l.nodes_left.to_string(),
            left(l.cpu_cores_left, &|v| v.to_string()),
            left(l.memory_mib_left, &|v| {
                gib(i64::try_from(v).unwrap_or(i64::MAX))
            }),
        ]);
    }
    output::render(&t)
}

/// The pools' cold spares, one line, when any pool keeps some.
fn spares_line(r: &CapacityReport) -> String {
    let held: Vec<String> = r
        .pools
        .iter()
        .filter_map(|p| {
            let s = p.spares.as_ref()?;
            Some(format!(
                "{} has {} of {} {} spare(s)",
                p.name, s.held, s.wanted, s.size
            ))
        })
        .collect();
    if held.is_empty() {
        return String::new();
    }
    format!(
        "Cold spares (stopped, not counted above): {}.\n",
        held.join("; ")
    )
}

/// What adding or removing one worker would change.
fn what_if_table(r: &CapacityReport) -> String {
    let mut t = output::table([
        "WHAT IF",
        "POOL",
        "SIZE",
        "HOST",
        "HOST ROOM AFTER",
        "FITS AFTER",
        "NOTE",
    ]);
    for a in &r.what_if.add {
        t.add_row(vec![
            "add one".to_owned(),
            a.pool.clone(),
            a.size.clone(),
            a.host.clone().unwrap_or_else(|| "-".into()),
            room(a.host_after.as_ref()),
            a.fits_after.to_string(),
            a.refused.as_ref().map_or_else(String::new, |f| {
                format!("refused ({}): {}", f.code, f.message)
            }),
        ]);
    }
    for d in &r.what_if.remove {
        let mut note = format!("{} workload pod(s) move", d.workload_pods);
        for n in &d.notes {
            note.push_str("; ");
            note.push_str(n);
        }
        t.add_row(vec![
            format!("remove {}", d.worker),
            d.pool.clone(),
            d.size.clone(),
            d.host.clone().unwrap_or_else(|| "-".into()),
            room(d.host_after.as_ref()),
            d.fits_after.to_string(),
            note,
        ]);
    }
    output::render(&t)
}
