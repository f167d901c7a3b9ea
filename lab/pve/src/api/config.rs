//! A VM's configuration: reading it (current and pending) and changing it,
//! with the checks Proxmox makes (lock, digest, balloon) before the change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::R;
use crate::error::ApiError;
use crate::lab::{Shared, TaskCtx};
use crate::options;
use crate::options::Refusal;
use crate::params::Params;
use crate::state::{TaskStatus, Vm};

fn config_json(config: &BTreeMap<String, String>) -> Value {
    let mut obj = serde_json::Map::new();
    for (k, v) in config {
        let value = if k == "cipassword" {
            Value::String("**********".into())
        } else if options::numeric(k) {
            v.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| v.clone().into())
        } else {
            Value::String(v.clone())
        };
        obj.insert(k.clone(), value);
    }
    obj.insert("digest".into(), digest(config).into());
    Value::Object(obj)
}

/// A 40-hex digest of a config, standing in for the SHA1 of the file.
pub(super) fn digest(config: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in config {
        h.update(k.as_bytes());
        h.update(b": ");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) fn config_get(shared: &Shared, node: &str, vmid: u32, p: &Params) -> R {
    p.only(|k| matches!(k, "current" | "snapshot"))?;
    let current = p.bool("current")?.unwrap_or(false);
    if let Some(snap) = p.get("snapshot") {
        return Err(ApiError::die(format!("snapshot '{snap}' does not exist")));
    }
    let st = shared.state();
    let vm = st.vm_on(node, vmid)?;
    let cfg = if current {
        vm.config.clone()
    } else {
        vm.effective_config()
    };
    Ok(config_json(&cfg).into())
}

pub(super) fn pending(shared: &Shared, node: &str, vmid: u32) -> R {
    let st = shared.state();
    let vm = st.vm_on(node, vmid)?;
    let mut rows = Vec::new();
    for (k, v) in &vm.config {
        let mut row = json!({ "key": k, "value": v });
        if let Some(obj) = row.as_object_mut() {
            match vm.pending.get(k) {
                Some(Some(p)) => {
                    obj.insert("pending".into(), p.clone().into());
                }
                Some(None) => {
                    obj.insert("delete".into(), 1.into());
                }
                None => {}
            }
        }
        rows.push(row);
    }
    for (k, v) in &vm.pending {
        if let (false, Some(v)) = (vm.config.contains_key(k), v) {
            rows.push(json!({ "key": k, "pending": v }));
        }
    }
    Ok(Value::Array(rows).into())
}

/// A validated config change.
#[derive(Debug, Default)]
struct Change {
    set: Vec<(String, String)>,
    delete: Vec<String>,
    revert: Vec<String>,
    digest: Option<String>,
}

fn validate_change(shared: &Shared, p: &Params) -> Result<Change, ApiError> {
    const CONTROL: &[&str] = &[
        "delete",
        "revert",
        "digest",
        "force",
        "skiplock",
        "background_delay",
    ];
    for (k, _) in p.iter() {
        if options::root_only(k) {
            if k == "skiplock" {
                return Err(ApiError::die("Only root may use this option."));
            }
            return Err(ApiError::die(format!("only root can set '{k}' config")));
        }
    }
    p.only(|k| options::known(k) || CONTROL.contains(&k))?;
    p.bool("force")?;
    p.int("background_delay", 1, 30)?;
    let mut change = Change {
        digest: p.get("digest").map(str::to_owned),
        ..Change::default()
    };
    let mut errors = BTreeMap::new();
    let mut st = shared.state();
    for (k, v) in p.iter() {
        if CONTROL.contains(&k.as_str()) {
            continue;
        }
        match options::normalize(k, v, &mut st.rng) {
            Ok(v) => change.set.push((k.clone(), v)),
            Err(Refusal::Param(m)) => {
                errors.insert(k.clone(), m);
            }
            Err(Refusal::Die(m)) => return Err(ApiError::die(m)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::params(errors));
    }
    if let Some(d) = p.get("delete") {
        for key in options::split_list(d) {
            if !options::known(&key) {
                return Err(ApiError::die(format!("invalid key '{key}' in delete list")));
            }
            if change.set.iter().any(|(k, _)| *k == key) {
                return Err(ApiError::die(format!(
                    "you can't use '-{key}' and -delete {key}' at the same time"
                )));
            }
            change.delete.push(key);
        }
    }
    if let Some(r) = p.get("revert") {
        change.revert = options::split_list(r);
    }
    Ok(change)
}

/// Checks a change against the VM as it is now (lock, digest, balloon).
fn check_change(vm: &Vm, change: &Change) -> Result<(), ApiError> {
    if let Some(lock) = vm.lock() {
        return Err(ApiError::die(format!("VM is locked ({lock})")));
    }
    if let Some(d) = &change.digest
        && *d != digest(&vm.config)
    {
        return Err(ApiError::die(
            "checksum mismatch (file change by other user?)",
        ));
    }
    let mut after = vm.effective_config();
    for (k, v) in &change.set {
        after.insert(k.clone(), v.clone());
    }
    for k in &change.delete {
        after.remove(k);
    }
    let memory = options::memory_mib(after.get("memory").map(String::as_str));
    let balloon: u64 = after
        .get("balloon")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    if balloon > memory {
        return Err(ApiError::die(
            "balloon value too large (must be smaller than assigned memory)",
        ));
    }
    Ok(())
}

fn apply_change(vm: &mut Vm, change: &Change) {
    for k in &change.revert {
        vm.pending.remove(k);
    }
    for (k, v) in &change.set {
        if vm.running && !options::hotpluggable(k) {
            vm.pending.insert(k.clone(), Some(v.clone()));
        } else {
            vm.pending.remove(k);
            vm.config.insert(k.clone(), v.clone());
        }
    }
    for k in &change.delete {
        if vm.running && !options::hotpluggable(k) {
            vm.pending.insert(k.clone(), None);
        } else {
            vm.pending.remove(k);
            vm.config.remove(k);
        }
    }
}

pub(super) async fn config_update(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    p: &Params,
    is_async: bool,
) -> R {
    let change = validate_change(shared, p)?;
    shared.state().vm_on(node, vmid)?;
    let guard = shared
        .lock_config(vmid, Duration::from_secs(10))
        .await
        .map_err(ApiError::die)?;
    {
        let mut st = shared.state();
        let vm = st.vm_on_mut(node, vmid)?;
        check_change(vm, &change)?;
        if !is_async {
            apply_change(vm, &change);
            return Ok(Value::Null.into());
        }
    }
    let config_ms = shared.config.durations.config_ms;
    let node_owned = node.to_owned();
    let upid = shared.start_task(
        node,
        "qmconfig",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let _guard = guard;
            let fault = ctx.injected().await;
            ctx.work(config_ms).await;
            fault?;
            let mut st = ctx.shared.state();
            let vm = st.vm_on_mut(&node_owned, vmid).map_err(|e| e.message)?;
            apply_change(vm, &change);
            let lines: Vec<String> = change
                .set
                .iter()
                .map(|(k, v)| format!("update VM {vmid}: -{k} {v}"))
                .collect();
            if let Some(task) = st.tasks.get_mut(&ctx.upid) {
                task.log.extend(lines);
            }
            Ok(())
        },
    );
    if let Some(delay) = p.int("background_delay", 1, 30)? {
        let deadline = Duration::from_secs(u64::try_from(delay).unwrap_or(1));
        let step = deadline / 20;
        let mut waited = Duration::ZERO;
        while waited < deadline {
            shared.clock.sleep(step).await;
            waited += step;
            let st = shared.state();
            match st.tasks.get(&upid).map(|t| t.status.clone()) {
                Some(TaskStatus::Stopped(s)) if s == "OK" => return Ok(Value::Null.into()),
                Some(TaskStatus::Stopped(s)) => {
                    return Err(ApiError::die(format!("failed to update VM {vmid}: {s}")));
                }
                _ => {}
            }
        }
    }
    Ok(Value::String(upid).into())
}
