//! `POST .../clone`: the synchronous checks of a clone request and the
//! worker task that copies the template.

use super::R;
use super::ctx_log;
use crate::error::ApiError;
use crate::lab::Shared;
use crate::lab::TaskCtx;
use crate::lab::VmEvent;
use crate::lab::lock_timeout;
use crate::options;
use crate::params::Params;
use crate::state::{State, Vm};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedRwLockWriteGuard;

/// The parameters of a clone request, checked for form.
struct CloneRequest {
    newid: u32,
    name: Option<String>,
    full: Option<bool>,
    description: Option<String>,
    pool: Option<String>,
    target: String,
    storage: Option<String>,
}

/// A clone that passed every check: what the worker task copies, and where.
struct CloneJob {
    vmid: u32,
    node: String,
    req: CloneRequest,
    /// The source VM as it was when the request was checked.
    src: Vm,
    full: bool,
    /// The storage the new disk goes to.
    storage: String,
}

pub(super) fn clone(shared: &Arc<Shared>, node: &str, vmid: u32, p: &Params) -> R {
    let req = parse_request(p, node)?;
    let mut st = shared.state();
    let job = check_clone(&st, node, vmid, p, req)?;
    let new_guard = reserve_newid(shared, &mut st, &job)?;
    drop(st);

    let d = &shared.config.durations;
    let duration = if job.full {
        d.full_clone_ms
    } else {
        d.linked_clone_ms
    };
    let upid = shared.start_task(
        node,
        "qmclone",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let Some(_new_guard) = new_guard else {
                return Err(format!(
                    "clone failed: unable to create VM {}: config file already exists",
                    job.req.newid
                ));
            };
            let result = copy(&ctx, &job, duration).await;
            if result.is_err() {
                let mut st = ctx.shared.state();
                st.vms.remove(&job.req.newid);
                st.rrd.remove(&job.req.newid);
            }
            result
        },
    );
    Ok(Value::String(upid).into())
}

/// Reads the request's parameters, refusing unknown and malformed ones.
fn parse_request(p: &Params, node: &str) -> Result<CloneRequest, ApiError> {
    p.only(|k| {
        matches!(
            k,
            "newid"
                | "name"
                | "description"
                | "pool"
                | "full"
                | "storage"
                | "format"
                | "target"
                | "snapname"
                | "bwlimit"
        )
    })?;
    let newid =
        u32::try_from(p.int("newid", 100, 999_999_999)?.ok_or_else(|| {
            ApiError::param("newid", "property is missing and it is not optional")
        })?)
        .unwrap_or(u32::MAX);
    let name = p.get("name").map(str::to_owned);
    if let Some(n) = &name
        && !options::dns_name(n)
    {
        return Err(ApiError::param(
            "name",
            "invalid format - value does not look like a valid DNS name",
        ));
    }
    let full = p.bool("full")?;
    p.int("bwlimit", 0, i64::MAX)?;
    if let Some(f) = p.get("format")
        && !matches!(f, "raw" | "qcow2" | "vmdk")
    {
        return Err(ApiError::param(
            "format",
            format!("value '{f}' does not have a value in the enumeration 'raw, qcow2, vmdk'"),
        ));
    }
    Ok(CloneRequest {
        newid,
        name,
        full,
        description: p
            .get("description")
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
        pool: p.get("pool").map(str::to_owned),
        target: p.get("target").unwrap_or(node).to_owned(),
        storage: p.get("storage").map(str::to_owned),
    })
}

/// The checks Proxmox makes against the cluster as it is now, in its
/// order: the pool, the target node, the snapshot, the source's lock, the
/// linked-clone rules, unmapped PCI devices, the target storage, the new id.
fn check_clone(
    st: &State,
    node: &str,
    vmid: u32,
    p: &Params,
    req: CloneRequest,
) -> Result<CloneJob, ApiError> {
    let src = st.vm_on(node, vmid)?.clone();
    if let Some(pool) = &req.pool
        && !st.pools.contains_key(pool)
    {
        return Err(ApiError::status(
            403,
            format!("Permission check failed (pool '{pool}' does not exist)"),
        ));
    }
    let target = &req.target;
    let Some(target_node) = st.nodes.get(target) else {
        return Err(ApiError::die(format!("no such cluster node '{target}'")));
    };
    if let Some(snap) = p.get("snapname") {
        return Err(ApiError::die(format!("snapshot '{snap}' does not exist")));
    }
    if let Some(lock) = src.lock() {
        return Err(ApiError::die(format!("VM is locked ({lock})")));
    }
    let full = req.full.unwrap_or(!src.template());
    check_linked(full, &src, p, &req)?;
    if let Some((key, _)) = src
        .config
        .iter()
        .find(|(k, v)| k.starts_with("hostpci") && options::prop(v, "mapping").is_none())
    {
        return Err(ApiError::die(format!(
            "only root can set '{key}' config for non-mapped devices"
        )));
    }
    let storage = req.storage.clone().unwrap_or_else(|| src.storage.clone());
    let Some(target_storage) = target_node.storages.iter().find(|s| s.spec.name == storage) else {
        return Err(ApiError::die(format!("storage '{storage}' does not exist")));
    };
    if target != node && !target_storage.spec.shared {
        return Err(ApiError::die(format!(
            "can't clone VM to node '{target}' (VM uses local storage)"
        )));
    }
    let newid = req.newid;
    if st.vms.get(&newid).is_some_and(|vm| vm.node == node) {
        return Err(ApiError::die(format!(
            "unable to create VM {newid}: config file already exists"
        )));
    }
    Ok(CloneJob {
        vmid,
        node: node.to_owned(),
        req,
        src,
        full,
        storage,
    })
}

/// A linked clone takes no storage or format and needs a template.
fn check_linked(full: bool, src: &Vm, p: &Params, req: &CloneRequest) -> Result<(), ApiError> {
    if full {
        return Ok(());
    }
    if req.storage.is_some() {
        return Err(ApiError::die(
            "parameter 'storage' not allowed for linked clones",
        ));
    }
    if p.get("format").is_some() {
        return Err(ApiError::die(
            "parameter 'format' not allowed for linked clones",
        ));
    }
    if !src.template() {
        return Err(ApiError::die(
            "Linked clone feature is not supported for drive 'scsi0'",
        ));
    }
    Ok(())
}

/// Takes the new id's config lock and records a placeholder VM, locked
/// `clone`, under it. `None` when the id is taken on another node: the
/// task then fails, as Proxmox's does.
fn reserve_newid(
    shared: &Shared,
    st: &mut State,
    job: &CloneJob,
) -> Result<Option<OwnedRwLockWriteGuard<()>>, ApiError> {
    let newid = job.req.newid;
    if st.vms.contains_key(&newid) {
        return Ok(None);
    }
    let guard = shared
        .try_lock_config(newid)
        .ok_or_else(|| ApiError::die(lock_timeout(newid)))?;
    st.vms.insert(
        newid,
        Vm {
            vmid: newid,
            node: job.node.clone(),
            config: BTreeMap::from([("lock".to_owned(), "clone".to_owned())]),
            pending: BTreeMap::new(),
            running: false,
            started_at: None,
            pid: None,
            agent: None,
            pool: None,
            linked_base: None,
            pci: Vec::new(),
            disk_gib: job.src.disk_gib,
            storage: job.storage.clone(),
        },
    );
    st.rrd.remove(&newid);
    Ok(Some(guard))
}

/// The worker task's copy: locks the source, takes the time and the
/// injected fault, takes the space of a full copy, and turns the
/// placeholder into the clone. On an error the caller removes the
/// placeholder.
async fn copy(ctx: &TaskCtx, job: &CloneJob, duration: u64) -> Result<(), String> {
    let shared = &ctx.shared;
    let (vmid, newid, src) = (job.vmid, job.req.newid, &job.src);
    let source_lock = if src.running {
        shared
            .lock_config(vmid, Duration::from_secs(1))
            .await
            .map(|g| Box::new(g) as Box<dyn Send + Sync>)
    } else {
        shared
            .lock_shared(vmid, Duration::from_secs(1))
            .await
            .map(|g| Box::new(g) as Box<dyn Send + Sync>)
    };
    let _source_guard = source_lock?;
    let src_disk = src
        .config
        .get("scsi0")
        .map(|v| v.split(',').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    ctx.log(format!(
        "create {} clone of drive scsi0 ({src_disk})",
        if job.full { "full" } else { "linked" }
    ));
    let fault = ctx.injected().await;
    // The volume is allocated (or snapshotted) under the storage's lock,
    // one clone at a time per storage; the copy runs outside it.
    let d = &shared.config.durations;
    let storage = if job.full { &job.storage } else { &src.storage };
    let storage_guard = shared
        .lock_storage(
            &job.req.target,
            storage,
            Duration::from_millis(d.storage_lock_timeout_ms),
        )
        .await
        .map_err(|e| format!("clone failed: {e}"))?;
    let locked = d.storage_lock_ms.min(duration);
    ctx.work(locked).await;
    drop(storage_guard);
    ctx.work(duration - locked).await;
    fault?;
    let mut st = shared.state();
    if job.full {
        let free = st
            .nodes
            .get_mut(&job.req.target)
            .and_then(|n| n.storages.iter_mut().find(|s| s.spec.name == job.storage));
        match free {
            Some(s) if s.free_gib >= src.disk_gib => s.free_gib -= src.disk_gib,
            _ => {
                return Err(format!(
                    "clone failed: not enough free space on storage '{}'",
                    job.storage
                ));
            }
        }
    }
    let cfg = cloned_config(&mut st, job);
    ctx_log(
        &mut st,
        &ctx.upid,
        format!("  Logical volume \"vm-{newid}-disk-0\" created."),
    );
    let target = &job.req.target;
    if let Some(vm) = st.vms.get_mut(&newid) {
        vm.config = cfg;
        vm.node = target.clone();
        vm.storage = job.storage.clone();
        vm.pool = job.req.pool.clone();
        vm.linked_base = (!job.full).then_some(vmid);
        if !job.full {
            vm.storage = src.storage.clone();
        }
    }
    if *target != job.node {
        ctx_log(
            &mut st,
            &ctx.upid,
            format!("moving VM {newid} to node '{target}'"),
        );
    }
    drop(st);
    shared.emit(VmEvent::Cloned { vmid: newid });
    Ok(())
}

/// The clone's configuration: the source's, without `template` and `lock`,
/// with new MACs, SMBIOS UUID and generation id, its own disk and
/// cloud-init volumes, and its name and description.
fn cloned_config(st: &mut State, job: &CloneJob) -> BTreeMap<String, String> {
    let (vmid, newid, src, storage) = (job.vmid, job.req.newid, &job.src, &job.storage);
    let mut cfg = src.config.clone();
    cfg.remove("template");
    cfg.remove("lock");
    let keys: Vec<String> = cfg.keys().cloned().collect();
    for k in keys {
        let Some(v) = cfg.get(&k).cloned() else {
            continue;
        };
        let nv = if k.starts_with("net") && options::mac_of(&v).is_some() {
            options::regenerate_mac(&v, &mut st.rng)
        } else if k == "smbios1" {
            options::regenerate_smbios_uuid(&v, &mut st.rng)
        } else if k == "vmgenid" {
            st.rng.uuid()
        } else if k == "scsi0" {
            let opts: Vec<&str> = v.split(',').skip(1).collect();
            let vol = if job.full {
                format!("{storage}:vm-{newid}-disk-0")
            } else {
                format!("{}:base-{vmid}-disk-0/vm-{newid}-disk-0", src.storage)
            };
            std::iter::once(vol.as_str())
                .chain(opts)
                .collect::<Vec<_>>()
                .join(",")
        } else if v.contains("-cloudinit") {
            format!("{storage}:vm-{newid}-cloudinit,media=cdrom")
        } else {
            v
        };
        cfg.insert(k, nv);
    }
    let default_name = format!(
        "Copy-of-VM-{}",
        src.name()
            .map(str::to_owned)
            .unwrap_or_else(|| vmid.to_string())
    );
    cfg.insert(
        "name".to_owned(),
        job.req.name.clone().unwrap_or(default_name),
    );
    if let Some(d) = &job.req.description {
        cfg.insert("description".to_owned(), d.clone());
    }
    cfg
}
