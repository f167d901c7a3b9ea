//! A VM's power: its current status, and the start, shutdown, stop and
//! reboot tasks with what a start reserves and a stop releases.

use std::sync::Arc;

use serde_json::json;

use super::{GIB, MIB, R, ctx_log, not_implemented, unlocked_vm, vm_task};
use crate::error::ApiError;
use crate::lab::{Shared, VmEvent};
use crate::options;
use crate::params::Params;
use crate::state::{State, Vm};

pub(super) fn status_current(shared: &Shared, node: &str, vmid: u32) -> R {
    let st = shared.state();
    let vm = st.vm_on(node, vmid)?;
    let now = shared.clock.now_unix();
    let mem = vm.memory_mib() * MIB;
    let mut v = json!({
        "status": if vm.running { "running" } else { "stopped" },
        "qmpstatus": if vm.running { "running" } else { "stopped" },
        "vmid": vm.vmid, "cpus": vm.cpus(), "cpu": if vm.running { 0.02 } else { 0.0 },
        "maxmem": mem, "mem": if vm.running { mem / 2 } else { 0 },
        "maxdisk": vm.disk_gib * GIB, "disk": 0, "netin": 0, "netout": 0,
        "diskread": 0, "diskwrite": 0,
        "uptime": vm.started_at.map(|s| now - s).unwrap_or(0),
        "ha": { "managed": 0 },
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(name) = vm.name() {
            obj.insert("name".into(), name.into());
        }
        if agent_enabled(vm) {
            obj.insert("agent".into(), 1.into());
        }
        if let Some(lock) = vm.lock() {
            obj.insert("lock".into(), lock.into());
        }
        if let Some(tags) = vm.config.get("tags") {
            obj.insert("tags".into(), tags.clone().into());
        }
        if vm.template() {
            obj.insert("template".into(), 1.into());
        }
        if let (true, Some(pid)) = (vm.running, vm.pid) {
            obj.insert("pid".into(), pid.into());
            obj.insert("running-machine".into(), "pc-i440fx-9.2+pve1".into());
            obj.insert("running-qemu".into(), "9.2.0".into());
            obj.insert("balloon".into(), mem.into());
            obj.insert("freemem".into(), (mem / 2).into());
        }
    }
    Ok(v.into())
}

pub(super) fn agent_enabled(vm: &Vm) -> bool {
    vm.config.get("agent").is_some_and(|a| {
        let first = a.split(',').next().unwrap_or("");
        matches!(
            first,
            "1" | "enabled=1" | "on" | "yes" | "true" | "enabled=on"
        )
    })
}

pub(super) fn power(shared: &Arc<Shared>, node: &str, vmid: u32, action: &str, p: &Params) -> R {
    let vm = shared.state().vm_on(node, vmid)?.clone();
    let d = shared.config.durations.clone();
    match action {
        "start" => {
            p.only(|k| matches!(k, "timeout" | "machine"))?;
            p.int("timeout", 0, 86_400)?;
            Ok(start_task(shared, node, vmid, d.start_ms).into())
        }
        "stop" => {
            p.only(|k| matches!(k, "timeout" | "overrule-shutdown"))?;
            p.int("timeout", 0, i64::MAX)?;
            p.bool("overrule-shutdown")?;
            Ok(stop_task(shared, node, vmid, "qmstop", d.stop_ms, None).into())
        }
        "shutdown" => {
            p.only(|k| matches!(k, "timeout" | "forceStop"))?;
            let timeout = p.int("timeout", 0, i64::MAX)?.unwrap_or(60);
            let force = p.bool("forceStop")?.unwrap_or(false);
            let limit = (timeout_ms(timeout), force);
            Ok(stop_task(shared, node, vmid, "qmshutdown", d.shutdown_ms, Some(limit)).into())
        }
        "reboot" => {
            p.only(|k| k == "timeout")?;
            p.int("timeout", 0, i64::MAX)?;
            if !vm.running {
                return Err(ApiError::die(format!("VM {vmid} not running")));
            }
            Ok(reboot_task(shared, node, vmid, d.reboot_ms).into())
        }
        _ => Err(not_implemented()),
    }
}

fn timeout_ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}

/// Checks and reserves what a start needs; called under the state lock.
fn admit_start(st: &mut State, node: &str, vmid: u32) -> Result<Vec<String>, String> {
    let vm = st.vm_on(node, vmid).map_err(|e| e.message)?.clone();
    if vm.template() {
        return Err("you can't start a vm if it's a template".into());
    }
    if vm.running {
        return Err(format!("VM {vmid} already running"));
    }
    if let Some(lock) = vm.lock() {
        return Err(format!("VM is locked ({lock})"));
    }
    let cfg = vm.effective_config();
    let held = st.mapped_pci(node, vmid, &cfg)?;
    let want = options::memory_mib(cfg.get("memory").map(String::as_str));
    let host = st.nodes.get(node).map(|n| n.spec.memory_mib).unwrap_or(0);
    let used = st.used_memory_mib(node);
    if used + want > host {
        return Err(format!(
            "start failed: QEMU exited with code 1\nkvm: cannot set up guest memory 'pc.ram': Cannot allocate memory (VM needs {want} MiB, {} MiB free on '{node}')",
            host.saturating_sub(used)
        ));
    }
    Ok(held)
}

pub(super) fn start_task(shared: &Arc<Shared>, node: &str, vmid: u32, ms: u64) -> String {
    vm_task(shared, node, vmid, "qmstart", move |ctx, node| async move {
        let shared = ctx.shared.clone();
        // Fail fast on what a real start checks before spawning QEMU.
        {
            let st = shared.state();
            let vm = st.vm_on(&node, vmid).map_err(|e| e.message)?;
            if vm.template() {
                return Err("you can't start a vm if it's a template".into());
            }
            if let Some(lock) = vm.lock() {
                return Err(format!("VM is locked ({lock})"));
            }
        }
        let fault = ctx.injected().await;
        ctx.work(ms).await;
        fault?;
        let mut st = shared.state();
        let result = admit_start(&mut st, &node, vmid);
        let held = match result {
            Ok(held) => held,
            Err(e) => {
                if let Some((first, rest)) = e.split_once('\n') {
                    ctx_log(&mut st, &ctx.upid, rest.to_owned());
                    return Err(first.to_owned());
                }
                return Err(e);
            }
        };
        let now = shared.clock.now_unix();
        if let Some(vm) = mark_running(&mut st, &node, vmid, held, now) {
            vm.agent = None;
        }
        drop(st);
        shared.emit(VmEvent::Started { node, vmid });
        Ok(())
    })
}

/// Marks a VM running with a fresh pid, its pending changes applied and the
/// PCI devices it holds; the VM, if it is still there.
fn mark_running<'a>(
    st: &'a mut State,
    node: &str,
    vmid: u32,
    held: Vec<String>,
    now: i64,
) -> Option<&'a mut Vm> {
    let pid = st.alloc_pid();
    let vm = st.vm_on_mut(node, vmid).ok()?;
    vm.apply_pending();
    vm.running = true;
    vm.pid = Some(pid);
    vm.started_at = Some(now);
    vm.pci = held;
    Some(vm)
}

/// Marks a VM stopped and releases what it held.
fn mark_stopped(st: &mut State, vmid: u32) {
    if let Some(vm) = st.vms.get_mut(&vmid) {
        vm.running = false;
        vm.pid = None;
        vm.started_at = None;
        vm.pci.clear();
        vm.agent = None;
    }
}

/// `qmstop` (no limit) or `qmshutdown` (`Some((timeout_ms, forceStop))`).
fn stop_task(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    kind: &'static str,
    ms: u64,
    limit: Option<(u64, bool)>,
) -> String {
    let stop_ms = shared.config.durations.stop_ms;
    vm_task(shared, node, vmid, kind, move |ctx, node| async move {
        let shared = ctx.shared.clone();
        if !unlocked_vm(&shared.state(), &node, vmid)?.running {
            return Ok(());
        }
        let fault = ctx.injected().await;
        match limit {
            Some((timeout, force)) if ms > timeout => {
                ctx.work(timeout).await;
                if !force {
                    return Err("VM quit/powerdown failed - got timeout".into());
                }
                ctx.log("VM still running - terminating now with SIGTERM");
                ctx.work(stop_ms).await;
            }
            _ => ctx.work(ms).await,
        }
        fault?;
        mark_stopped(&mut shared.state(), vmid);
        shared.emit(VmEvent::Stopped { vmid });
        Ok(())
    })
}

fn reboot_task(shared: &Arc<Shared>, node: &str, vmid: u32, ms: u64) -> String {
    vm_task(
        shared,
        node,
        vmid,
        "qmreboot",
        move |ctx, node| async move {
            let shared = ctx.shared.clone();
            if !unlocked_vm(&shared.state(), &node, vmid)?.running {
                return Err(format!("VM {vmid} not running"));
            }
            let fault = ctx.injected().await;
            ctx.work(ms / 2).await;
            fault?;
            mark_stopped(&mut shared.state(), vmid);
            shared.emit(VmEvent::Stopped { vmid });
            ctx.work(ms / 2).await;
            let held = {
                let mut st = shared.state();
                admit_start(&mut st, &node, vmid)?
            };
            let now = shared.clock.now_unix();
            mark_running(&mut shared.state(), &node, vmid, held, now);
            shared.emit(VmEvent::Started { node, vmid });
            Ok(())
        },
    )
}
