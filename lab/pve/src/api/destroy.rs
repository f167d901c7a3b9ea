//! `DELETE .../qemu/{vmid}`: the checks and the destroy task.

use std::sync::Arc;

use serde_json::Value;

use super::{R, ctx_log, unlocked_vm, vm_task};
use crate::error::ApiError;
use crate::lab::{Shared, VmEvent};
use crate::params::Params;
use crate::state::State;

fn destroy_check(st: &State, node: &str, vmid: u32) -> Result<(), ApiError> {
    let vm = st.vm_on(node, vmid)?;
    if vm.config.get("protection").is_some_and(|v| v == "1") {
        return Err(ApiError::die(format!(
            "can't remove VM {vmid} - protection mode enabled"
        )));
    }
    if vm.running {
        return Err(ApiError::die(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    Ok(())
}

pub(super) fn destroy(shared: &Arc<Shared>, node: &str, vmid: u32, p: &Params) -> R {
    p.only(|k| matches!(k, "purge" | "destroy-unreferenced-disks" | "skiplock"))?;
    if p.get("skiplock").is_some() {
        return Err(ApiError::die("Only root may use this option."));
    }
    p.bool("purge")?;
    p.bool("destroy-unreferenced-disks")?;
    destroy_check(&shared.state(), node, vmid)?;
    let ms = shared.config.durations.delete_ms;
    let upid = vm_task(
        shared,
        node,
        vmid,
        "qmdestroy",
        move |ctx, node| async move {
            let shared = ctx.shared.clone();
            {
                let st = shared.state();
                destroy_check(&st, &node, vmid).map_err(|e| e.message)?;
                let vm = unlocked_vm(&st, &node, vmid)?;
                if vm.template() && st.vms.values().any(|v| v.linked_base == Some(vmid)) {
                    return Err(format!(
                        "base volume '{}:base-{vmid}-disk-0' is still in use by linked cloned",
                        vm.storage
                    ));
                }
            }
            let fault = ctx.injected().await;
            ctx.work(ms).await;
            fault?;
            let mut st = shared.state();
            if let Some(vm) = st.vms.remove(&vmid) {
                if vm.linked_base.is_none() {
                    let storage = vm.storage.clone();
                    if let Some(s) = st
                        .nodes
                        .get_mut(&vm.node)
                        .and_then(|n| n.storages.iter_mut().find(|s| s.spec.name == storage))
                    {
                        s.free_gib = (s.free_gib + vm.disk_gib).min(s.spec.total_gib);
                    }
                }
                st.rrd.remove(&vmid);
                ctx_log(
                    &mut st,
                    &ctx.upid,
                    format!("  Logical volume \"vm-{vmid}-disk-0\" successfully removed."),
                );
            }
            drop(st);
            shared.emit(VmEvent::Deleted { vmid });
            Ok(())
        },
    );
    Ok(Value::String(upid).into())
}
