//! The emulated endpoints: routing of `/api2/json` paths to handlers, the
//! synchronous checks each one makes, and the worker tasks (clone, config,
//! start, shutdown, stop, reboot, destroy) they start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::lab::{Shared, TaskCtx, VmEvent, lock_timeout};
use crate::options::{self, Refusal};
use crate::params::{Params, parse_int};
use crate::state::{State, TaskStatus, Vm};

/// A successful answer: `data` plus the optional top-level `total`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub data: Value,
    pub total: Option<usize>,
}

impl From<Value> for Reply {
    fn from(data: Value) -> Self {
        Self { data, total: None }
    }
}

impl From<String> for Reply {
    fn from(upid: String) -> Self {
        Value::String(upid).into()
    }
}

/// The version this emulator claims to be.
const PVE_VERSION: &str = "8.4.1";
const PVE_REPOID: &str = "2a5fa54a8503f96d";

fn not_implemented() -> ApiError {
    // The server fills in "Method '<m> <path>' not implemented".
    ApiError::status(501, "")
}

type R = Result<Reply, ApiError>;

/// Dispatches one authenticated request.
pub(crate) async fn route(shared: &Arc<Shared>, method: &Method, seg: &[&str], p: &Params) -> R {
    let m = method.as_str();
    match (m, seg) {
        ("GET", ["version"]) => Ok(version().into()),
        ("GET", ["nodes"]) => Ok(nodes(shared).into()),
        ("GET", ["cluster", "nextid"]) => nextid(shared, p),
        ("GET", ["cluster", "resources"]) => resources(shared, p),
        ("GET", ["cluster", "mapping", "pci"]) => Ok(pci_mappings(shared, p).into()),
        ("GET", ["cluster", "mapping", "pci", id]) => pci_mapping(shared, id),
        ("GET", ["pools"]) => pools_get(shared, p),
        ("POST", ["pools"]) => pools_create(shared, p),
        ("PUT", ["pools"]) => pools_update(shared, p.required("poolid")?, p),
        ("DELETE", ["pools"]) => pools_delete(shared, p.required("poolid")?),
        ("GET", ["pools", id]) => pool_get(shared, id),
        ("PUT", ["pools", id]) => pools_update(shared, id, p),
        ("DELETE", ["pools", id]) => pools_delete(shared, id),
        (_, ["nodes", node, rest @ ..]) => {
            check_node(shared, node)?;
            node_route(shared, m, node, rest, p).await
        }
        _ => Err(not_implemented()),
    }
}

async fn node_route(shared: &Arc<Shared>, m: &str, node: &str, seg: &[&str], p: &Params) -> R {
    match (m, seg) {
        ("GET", ["status"]) => Ok(node_status(shared, node).into()),
        ("GET", ["qemu"]) => Ok(qemu_list(shared, node).into()),
        ("GET", ["tasks", upid, "status"]) => task_status(shared, node, upid),
        ("GET", ["tasks", upid, "log"]) => task_log(shared, node, upid, p),
        (_, ["qemu", vmid, rest @ ..]) => {
            let vmid = parse_vmid(vmid)?;
            vm_route(shared, m, node, vmid, rest, p).await
        }
        _ => Err(not_implemented()),
    }
}

async fn vm_route(
    shared: &Arc<Shared>,
    m: &str,
    node: &str,
    vmid: u32,
    seg: &[&str],
    p: &Params,
) -> R {
    match (m, seg) {
        ("GET", []) => {
            shared.state().vm_on(node, vmid)?;
            let dirs = ["config", "pending", "status", "agent", "clone"];
            Ok(Value::Array(dirs.iter().map(|d| json!({ "subdir": d })).collect()).into())
        }
        ("DELETE", []) => destroy(shared, node, vmid, p),
        ("POST", ["clone"]) => clone(shared, node, vmid, p),
        ("GET", ["config"]) => config_get(shared, node, vmid, p),
        ("POST", ["config"]) => config_update(shared, node, vmid, p, true).await,
        ("PUT", ["config"]) => config_update(shared, node, vmid, p, false).await,
        ("GET", ["pending"]) => pending(shared, node, vmid),
        ("GET", ["status", "current"]) => status_current(shared, node, vmid),
        ("POST", ["status", action]) => power(shared, node, vmid, action, p),
        ("GET", ["agent", "network-get-interfaces"]) => agent_interfaces(shared, node, vmid),
        _ => Err(not_implemented()),
    }
}

fn parse_vmid(raw: &str) -> Result<u32, ApiError> {
    parse_int(raw, 100, 999_999_999)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .map_err(|m| ApiError::param("vmid", m))
}

fn check_node(shared: &Shared, node: &str) -> Result<(), ApiError> {
    let st = shared.state();
    match st.nodes.get(node) {
        None => Err(ApiError::die(format!(
            "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
        ))),
        Some(n) if !n.spec.online => Err(ApiError::status(595, "No route to host")),
        Some(_) => Ok(()),
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

fn version() -> Value {
    json!({ "version": PVE_VERSION, "release": "8.4", "repoid": PVE_REPOID })
}

fn node_mem_used(st: &State, node: &str) -> u64 {
    // The host itself uses some memory besides its guests.
    st.used_memory_mib(node) * MIB + 2 * GIB
}

fn nodes(shared: &Shared) -> Value {
    let st = shared.state();
    let fp = shared
        .fingerprint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let uptime = shared.clock.now_unix() - shared.boot_time;
    let rows: Vec<Value> = st
        .nodes
        .values()
        .map(|n| {
            let name = &n.spec.name;
            if !n.spec.online {
                return json!({ "node": name, "status": "offline", "id": format!("node/{name}"),
                               "type": "node", "level": "", "ssl_fingerprint": fp });
            }
            json!({
                "node": name, "status": "online", "id": format!("node/{name}"), "type": "node",
                "level": "", "cpu": 0.03, "maxcpu": threads(&n.spec),
                "mem": node_mem_used(&st, name), "maxmem": n.spec.memory_mib * MIB,
                "disk": 12 * GIB, "maxdisk": 94 * GIB, "uptime": uptime,
                "ssl_fingerprint": fp,
            })
        })
        .collect();
    Value::Array(rows)
}

fn threads(h: &crate::config::HostSpec) -> u32 {
    h.threads.unwrap_or(h.cores * 2)
}

fn node_status(shared: &Shared, node: &str) -> Value {
    let st = shared.state();
    let Some(n) = st.nodes.get(node) else {
        return Value::Null;
    };
    let total = n.spec.memory_mib * MIB;
    let used = node_mem_used(&st, node).min(total);
    let release = "6.8.12-9-pve";
    let kver = "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)";
    json!({
        "uptime": shared.clock.now_unix() - shared.boot_time,
        "idle": 0,
        "loadavg": ["0.42", "0.37", "0.31"],
        "kversion": format!("Linux {release} {kver}"),
        "cpu": 0.031,
        "wait": 0.0007,
        "current-kernel": { "sysname": "Linux", "release": release, "version": kver, "machine": "x86_64" },
        "boot-info": { "mode": "efi", "secureboot": 0 },
        "cpuinfo": {
            "model": "AMD Ryzen 9 5950X 16-Core Processor", "sockets": 1, "cores": n.spec.cores,
            "cpus": threads(&n.spec), "mhz": "3400.000", "hvm": "1", "user_hz": 100,
            "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid aperfmperf pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif v_spec_ctrl umip pku ospke vaes vpclmulqdq rdpid overflow_recov succor smca fsrm"
        },
        "memory": { "total": total, "used": used, "free": total - used },
        "swap": { "total": 8 * GIB, "used": 0, "free": 8 * GIB },
        "ksm": { "shared": 0 },
        "rootfs": { "total": 94 * GIB, "avail": 82 * GIB, "used": 12 * GIB, "free": 82 * GIB },
        "pveversion": format!("pve-manager/{PVE_VERSION}/{PVE_REPOID}"),
    })
}

fn nextid(shared: &Shared, p: &Params) -> R {
    p.only(|k| k == "vmid")?;
    let st = shared.state();
    if let Some(v) = p.int("vmid", 100, 999_999_999)? {
        let id = u32::try_from(v).unwrap_or(u32::MAX);
        if st.vms.contains_key(&id) {
            return Err(ApiError::param("vmid", format!("VM {id} already exists")));
        }
        return Ok(Value::String(id.to_string()).into());
    }
    let mut id = 100u32;
    while st.vms.contains_key(&id) {
        id += 1;
    }
    if id >= 1_000_000 {
        return Err(ApiError::die(
            "unable to get any free VMID in range [100, 1000000]",
        ));
    }
    Ok(Value::String(id.to_string()).into())
}

/// A `/cluster/resources` guest row.
fn vm_row(st: &State, vm: &Vm) -> Value {
    let mut row = json!({
        "id": format!("qemu/{}", vm.vmid), "vmid": vm.vmid, "node": vm.node, "type": "qemu",
        "template": u8::from(vm.template()),
    });
    let obj = row.as_object_mut();
    if let Some(obj) = obj {
        match st.rrd.get(&vm.vmid) {
            Some(rrd) => {
                obj.insert("status".into(), rrd.status.into());
                if let Some(name) = &rrd.name {
                    obj.insert("name".into(), name.clone().into());
                }
                obj.insert("maxmem".into(), rrd.maxmem.into());
                obj.insert("maxcpu".into(), rrd.maxcpu.into());
                obj.insert("uptime".into(), rrd.uptime.into());
                let running = rrd.status == "running";
                obj.insert(
                    "mem".into(),
                    (if running { rrd.maxmem / 2 } else { 0 }).into(),
                );
                obj.insert("cpu".into(), (if running { 0.02 } else { 0.0 }).into());
                obj.insert("maxdisk".into(), (vm.disk_gib * GIB).into());
                for k in ["disk", "netin", "netout", "diskread", "diskwrite"] {
                    obj.insert(k.into(), 0.into());
                }
            }
            None => {
                obj.insert("status".into(), "unknown".into());
            }
        }
        if let Some(tags) = vm.config.get("tags") {
            obj.insert("tags".into(), tags.clone().into());
        }
        if let Some(lock) = vm.lock() {
            obj.insert("lock".into(), lock.into());
        }
        if let Some(pool) = &vm.pool {
            obj.insert("pool".into(), pool.clone().into());
        }
    }
    row
}

fn resources(shared: &Shared, p: &Params) -> R {
    p.only(|k| k == "type")?;
    let kind = p.get("type");
    if let Some(t) = kind
        && !matches!(t, "vm" | "storage" | "node" | "sdn")
    {
        return Err(ApiError::param(
            "type",
            format!(
                "value '{t}' does not have a value in the enumeration 'vm, storage, node, sdn'"
            ),
        ));
    }
    let want = |k: &str| kind.is_none() || kind == Some(k);
    let st = shared.state();
    let mut rows = Vec::new();
    if want("vm") {
        rows.extend(st.vms.values().map(|vm| vm_row(&st, vm)));
    }
    if want("node") {
        for n in st.nodes.values() {
            let name = &n.spec.name;
            rows.push(json!({
                "id": format!("node/{name}"), "node": name, "type": "node",
                "status": if n.spec.online { "online" } else { "offline" },
                "level": "", "cgroup-mode": 2, "cpu": 0.03, "maxcpu": threads(&n.spec),
                "mem": node_mem_used(&st, name), "maxmem": n.spec.memory_mib * MIB,
                "disk": 12 * GIB, "maxdisk": 94 * GIB,
                "uptime": shared.clock.now_unix() - shared.boot_time,
            }));
        }
    }
    if want("storage") {
        for n in st.nodes.values() {
            for s in &n.storages {
                rows.push(json!({
                    "id": format!("storage/{}/{}", n.spec.name, s.spec.name),
                    "storage": s.spec.name, "node": n.spec.name, "type": "storage",
                    "plugintype": s.spec.kind, "status": "available",
                    "shared": u8::from(s.spec.shared), "content": "images,rootdir",
                    "disk": (s.spec.total_gib.saturating_sub(s.free_gib)) * GIB,
                    "maxdisk": s.spec.total_gib * GIB,
                }));
            }
        }
    }
    if kind.is_none() {
        for id in st.pools.keys() {
            rows.push(json!({ "id": format!("/pool/{id}"), "pool": id, "type": "pool" }));
        }
    }
    Ok(Value::Array(rows).into())
}

fn qemu_list(shared: &Shared, node: &str) -> Value {
    let st = shared.state();
    let now = shared.clock.now_unix();
    let rows = st
        .vms
        .values()
        .filter(|vm| vm.node == node)
        .map(|vm| {
            let mut row = json!({
                "vmid": vm.vmid,
                "status": if vm.running { "running" } else { "stopped" },
                "cpus": vm.cpus(), "maxmem": vm.memory_mib() * MIB,
                "mem": if vm.running { vm.memory_mib() * MIB / 2 } else { 0 },
                "maxdisk": vm.disk_gib * GIB, "disk": 0,
                "uptime": vm.started_at.map(|s| now - s).unwrap_or(0),
                "cpu": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            });
            if let Some(obj) = row.as_object_mut() {
                if let Some(name) = vm.name() {
                    obj.insert("name".into(), name.into());
                }
                if let Some(pid) = vm.pid {
                    obj.insert("pid".into(), pid.into());
                }
                if let Some(tags) = vm.config.get("tags") {
                    obj.insert("tags".into(), tags.clone().into());
                }
                if let Some(lock) = vm.lock() {
                    obj.insert("lock".into(), lock.into());
                }
                if vm.template() {
                    obj.insert("template".into(), 1.into());
                }
            }
            row
        })
        .collect();
    Value::Array(rows)
}

// ---------------------------------------------------------------- config

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
fn digest(config: &BTreeMap<String, String>) -> String {
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

fn config_get(shared: &Shared, node: &str, vmid: u32, p: &Params) -> R {
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

fn pending(shared: &Shared, node: &str, vmid: u32) -> R {
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

async fn config_update(
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

// ----------------------------------------------------------------- clone

fn clone(shared: &Arc<Shared>, node: &str, vmid: u32, p: &Params) -> R {
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
    let description = p
        .get("description")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let pool = p.get("pool").map(str::to_owned);
    let target = p.get("target").unwrap_or(node).to_owned();
    let storage_param = p.get("storage").map(str::to_owned);

    let mut st = shared.state();
    let src = st.vm_on(node, vmid)?.clone();
    if let Some(pool) = &pool
        && !st.pools.contains_key(pool)
    {
        return Err(ApiError::status(
            403,
            format!("Permission check failed (pool '{pool}' does not exist)"),
        ));
    }
    let Some(target_node) = st.nodes.get(&target).cloned() else {
        return Err(ApiError::die(format!("no such cluster node '{target}'")));
    };
    if let Some(snap) = p.get("snapname") {
        return Err(ApiError::die(format!("snapshot '{snap}' does not exist")));
    }
    if let Some(lock) = src.lock() {
        return Err(ApiError::die(format!("VM is locked ({lock})")));
    }
    let full = full.unwrap_or(!src.template());
    if !full && storage_param.is_some() {
        return Err(ApiError::die(
            "parameter 'storage' not allowed for linked clones",
        ));
    }
    if !full && p.get("format").is_some() {
        return Err(ApiError::die(
            "parameter 'format' not allowed for linked clones",
        ));
    }
    if !full && !src.template() {
        return Err(ApiError::die(
            "Linked clone feature is not supported for drive 'scsi0'",
        ));
    }
    if let Some((key, _)) = src
        .config
        .iter()
        .find(|(k, v)| k.starts_with("hostpci") && options::prop(v, "mapping").is_none())
    {
        return Err(ApiError::die(format!(
            "only root can set '{key}' config for non-mapped devices"
        )));
    }
    let storage = storage_param.clone().unwrap_or_else(|| src.storage.clone());
    let Some(target_storage) = target_node
        .storages
        .iter()
        .find(|s| s.spec.name == storage)
        .cloned()
    else {
        return Err(ApiError::die(format!("storage '{storage}' does not exist")));
    };
    if target != node && !target_storage.spec.shared {
        return Err(ApiError::die(format!(
            "can't clone VM to node '{target}' (VM uses local storage)"
        )));
    }
    if st.vms.get(&newid).is_some_and(|vm| vm.node == node) {
        return Err(ApiError::die(format!(
            "unable to create VM {newid}: config file already exists"
        )));
    }
    let taken_elsewhere = st.vms.contains_key(&newid);
    let new_guard = if taken_elsewhere {
        None
    } else {
        let guard = shared
            .try_lock_config(newid)
            .ok_or_else(|| ApiError::die(lock_timeout(newid)))?;
        st.vms.insert(
            newid,
            Vm {
                vmid: newid,
                node: node.to_owned(),
                config: BTreeMap::from([("lock".to_owned(), "clone".to_owned())]),
                pending: BTreeMap::new(),
                running: false,
                started_at: None,
                pid: None,
                agent: None,
                pool: None,
                linked_base: None,
                pci: Vec::new(),
                disk_gib: src.disk_gib,
                storage: storage.clone(),
            },
        );
        st.rrd.remove(&newid);
        Some(guard)
    };
    drop(st);

    let d = &shared.config.durations;
    let duration = if full {
        d.full_clone_ms
    } else {
        d.linked_clone_ms
    };
    let node_owned = node.to_owned();
    let upid = shared.start_task(
        node,
        "qmclone",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let shared = ctx.shared.clone();
            let Some(_new_guard) = new_guard else {
                return Err(format!(
                    "clone failed: unable to create VM {newid}: config file already exists"
                ));
            };
            let remove_new = |shared: &Shared| {
                let mut st = shared.state();
                st.vms.remove(&newid);
                st.rrd.remove(&newid);
            };
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
            let _source_guard = match source_lock {
                Ok(g) => g,
                Err(e) => {
                    remove_new(&shared);
                    return Err(e);
                }
            };
            let src_disk = src
                .config
                .get("scsi0")
                .map(|v| v.split(',').next().unwrap_or("").to_owned())
                .unwrap_or_default();
            ctx.log(format!(
                "create {} clone of drive scsi0 ({src_disk})",
                if full { "full" } else { "linked" }
            ));
            let fault = ctx.injected().await;
            ctx.work(duration).await;
            if let Err(e) = fault {
                remove_new(&shared);
                return Err(e);
            }
            let mut st = shared.state();
            if full {
                let free = st
                    .nodes
                    .get_mut(&target)
                    .and_then(|n| n.storages.iter_mut().find(|s| s.spec.name == storage));
                match free {
                    Some(s) if s.free_gib >= src.disk_gib => s.free_gib -= src.disk_gib,
                    _ => {
                        drop(st);
                        remove_new(&shared);
                        return Err(format!(
                            "clone failed: not enough free space on storage '{storage}'"
                        ));
                    }
                }
            }
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
                    let vol = if full {
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
            cfg.insert("name".to_owned(), name.unwrap_or(default_name));
            if let Some(d) = description {
                cfg.insert("description".to_owned(), d);
            }
            ctx_log(
                &mut st,
                &ctx.upid,
                format!("  Logical volume \"vm-{newid}-disk-0\" created."),
            );
            if let Some(vm) = st.vms.get_mut(&newid) {
                vm.config = cfg;
                vm.node = target.clone();
                vm.storage = storage.clone();
                vm.pool = pool;
                vm.linked_base = (!full).then_some(vmid);
                if !full {
                    vm.storage = src.storage.clone();
                }
            }
            if target != node_owned {
                ctx_log(
                    &mut st,
                    &ctx.upid,
                    format!("moving VM {newid} to node '{target}'"),
                );
            }
            drop(st);
            shared.emit(VmEvent::Cloned { vmid: newid });
            Ok(())
        },
    );
    Ok(Value::String(upid).into())
}

fn ctx_log(st: &mut State, upid: &str, line: String) {
    if let Some(t) = st.tasks.get_mut(upid) {
        t.log.push(line);
    }
}

// ----------------------------------------------------------------- power

fn status_current(shared: &Shared, node: &str, vmid: u32) -> R {
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

fn agent_enabled(vm: &Vm) -> bool {
    vm.config.get("agent").is_some_and(|a| {
        let first = a.split(',').next().unwrap_or("");
        matches!(
            first,
            "1" | "enabled=1" | "on" | "yes" | "true" | "enabled=on"
        )
    })
}

fn power(shared: &Arc<Shared>, node: &str, vmid: u32, action: &str, p: &Params) -> R {
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

fn start_task(shared: &Arc<Shared>, node: &str, vmid: u32, ms: u64) -> String {
    let node = node.to_owned();
    shared.clone().start_task(
        &node.clone(),
        "qmstart",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let shared = ctx.shared.clone();
            let _guard = shared.lock_config(vmid, Duration::from_secs(10)).await?;
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
            let pid = st.alloc_pid();
            if let Ok(vm) = st.vm_on_mut(&node, vmid) {
                vm.apply_pending();
                vm.running = true;
                vm.pid = Some(pid);
                vm.started_at = Some(now);
                vm.pci = held;
                vm.agent = None;
            }
            drop(st);
            shared.emit(VmEvent::Started { node, vmid });
            Ok(())
        },
    )
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
    let node = node.to_owned();
    let stop_ms = shared.config.durations.stop_ms;
    shared.clone().start_task(
        &node.clone(),
        kind,
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let shared = ctx.shared.clone();
            let _guard = shared.lock_config(vmid, Duration::from_secs(10)).await?;
            {
                let st = shared.state();
                let vm = st.vm_on(&node, vmid).map_err(|e| e.message)?;
                if let Some(lock) = vm.lock() {
                    return Err(format!("VM is locked ({lock})"));
                }
                if !vm.running {
                    return Ok(());
                }
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
        },
    )
}

fn reboot_task(shared: &Arc<Shared>, node: &str, vmid: u32, ms: u64) -> String {
    let node = node.to_owned();
    shared.clone().start_task(
        &node.clone(),
        "qmreboot",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let shared = ctx.shared.clone();
            let _guard = shared.lock_config(vmid, Duration::from_secs(10)).await?;
            {
                let st = shared.state();
                let vm = st.vm_on(&node, vmid).map_err(|e| e.message)?;
                if let Some(lock) = vm.lock() {
                    return Err(format!("VM is locked ({lock})"));
                }
                if !vm.running {
                    return Err(format!("VM {vmid} not running"));
                }
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
            {
                let mut st = shared.state();
                let pid = st.alloc_pid();
                if let Ok(vm) = st.vm_on_mut(&node, vmid) {
                    vm.apply_pending();
                    vm.running = true;
                    vm.pid = Some(pid);
                    vm.started_at = Some(now);
                    vm.pci = held;
                }
            }
            shared.emit(VmEvent::Started { node, vmid });
            Ok(())
        },
    )
}

// --------------------------------------------------------------- destroy

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

fn destroy(shared: &Arc<Shared>, node: &str, vmid: u32, p: &Params) -> R {
    p.only(|k| matches!(k, "purge" | "destroy-unreferenced-disks" | "skiplock"))?;
    if p.get("skiplock").is_some() {
        return Err(ApiError::die("Only root may use this option."));
    }
    p.bool("purge")?;
    p.bool("destroy-unreferenced-disks")?;
    destroy_check(&shared.state(), node, vmid)?;
    let ms = shared.config.durations.delete_ms;
    let node = node.to_owned();
    let upid = shared.clone().start_task(
        &node.clone(),
        "qmdestroy",
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let shared = ctx.shared.clone();
            let _guard = shared.lock_config(vmid, Duration::from_secs(10)).await?;
            {
                let st = shared.state();
                destroy_check(&st, &node, vmid).map_err(|e| e.message)?;
                let vm = st.vm_on(&node, vmid).map_err(|e| e.message)?;
                if let Some(lock) = vm.lock() {
                    return Err(format!("VM is locked ({lock})"));
                }
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

// ----------------------------------------------------------------- agent

fn agent_interfaces(shared: &Shared, node: &str, vmid: u32) -> R {
    let st = shared.state();
    let vm = st.vm_on(node, vmid)?;
    if !agent_enabled(vm) {
        return Err(ApiError::die("No QEMU guest agent configured"));
    }
    if !vm.running {
        return Err(ApiError::die(format!("VM {vmid} is not running")));
    }
    let Some(addrs) = &vm.agent else {
        return Err(ApiError::die("QEMU guest agent is not running"));
    };
    let mac = vm
        .config
        .get("net0")
        .and_then(|n| options::mac_of(n))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ips: Vec<Value> = addrs
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => {
                json!({ "ip-address": v4.to_string(), "ip-address-type": "ipv4", "prefix": 24 })
            }
            std::net::IpAddr::V6(v6) => {
                json!({ "ip-address": v6.to_string(), "ip-address-type": "ipv6", "prefix": 64 })
            }
        })
        .collect();
    let stats = json!({ "rx-bytes": 0, "rx-packets": 0, "rx-errs": 0, "rx-dropped": 0,
                        "tx-bytes": 0, "tx-packets": 0, "tx-errs": 0, "tx-dropped": 0 });
    Ok(json!({ "result": [
        { "name": "lo", "hardware-address": "00:00:00:00:00:00",
          "ip-addresses": [
              { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8 },
              { "ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128 }],
          "statistics": stats },
        { "name": "eth0", "hardware-address": mac, "ip-addresses": ips, "statistics": stats },
    ]})
    .into())
}

// ----------------------------------------------------------------- tasks

fn find_task(shared: &Shared, node: &str, upid: &str) -> Result<crate::state::Task, ApiError> {
    let parts: Vec<&str> = upid.split(':').collect();
    if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    let st = shared.state();
    st.tasks
        .get(upid)
        .filter(|t| t.node == node)
        .cloned()
        .ok_or_else(|| ApiError::die("no such task"))
}

fn task_status(shared: &Shared, node: &str, upid: &str) -> R {
    let t = find_task(shared, node, upid)?;
    let (user, tokenid) = match t.user.split_once('!') {
        Some((u, tok)) => (u.to_owned(), Some(tok.to_owned())),
        None => (t.user.clone(), None),
    };
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": user,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(tok) = tokenid {
            obj.insert("tokenid".into(), tok.into());
        }
        match t.status {
            TaskStatus::Running => {
                obj.insert("status".into(), "running".into());
            }
            TaskStatus::Stopped(exit) => {
                obj.insert("status".into(), "stopped".into());
                obj.insert("exitstatus".into(), exit.into());
            }
        }
    }
    Ok(v.into())
}

fn task_log(shared: &Shared, node: &str, upid: &str, p: &Params) -> R {
    p.only(|k| matches!(k, "start" | "limit" | "download"))?;
    let t = find_task(shared, node, upid)?;
    let start = usize::try_from(p.int("start", 0, i64::MAX)?.unwrap_or(0)).unwrap_or(0);
    let limit = usize::try_from(p.int("limit", 0, i64::MAX)?.unwrap_or(50)).unwrap_or(50);
    if t.log.is_empty() {
        return Ok(Reply {
            data: json!([{ "n": 1, "t": "no content" }]),
            total: Some(1),
        });
    }
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({ "n": i + 1, "t": l }))
        .collect();
    Ok(Reply {
        data: Value::Array(lines),
        total: Some(t.log.len()),
    })
}

// ----------------------------------------------------------------- pools

fn pool_id_ok(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        })
}

fn pool_members(st: &State, id: &str) -> Vec<Value> {
    st.vms
        .values()
        .filter(|vm| vm.pool.as_deref() == Some(id))
        .map(|vm| vm_row(st, vm))
        .collect()
}

fn pools_get(shared: &Shared, p: &Params) -> R {
    p.only(|k| matches!(k, "poolid" | "type"))?;
    let st = shared.state();
    if let Some(id) = p.get("poolid") {
        let Some(pool) = st.pools.get(id) else {
            return Err(ApiError::die(format!("pool '{id}' does not exist")));
        };
        let members = if matches!(p.get("type"), None | Some("qemu")) {
            pool_members(&st, id)
        } else {
            Vec::new()
        };
        let mut row = json!({ "poolid": id, "members": members });
        if let (Some(c), Some(obj)) = (&pool.comment, row.as_object_mut()) {
            obj.insert("comment".into(), c.clone().into());
        }
        return Ok(json!([row]).into());
    }
    let rows = st
        .pools
        .iter()
        .map(|(id, pool)| match &pool.comment {
            Some(c) => json!({ "poolid": id, "comment": c }),
            None => json!({ "poolid": id }),
        })
        .collect();
    Ok(Value::Array(rows).into())
}

fn pool_get(shared: &Shared, id: &str) -> R {
    let st = shared.state();
    let Some(pool) = st.pools.get(id) else {
        return Err(ApiError::die(format!("pool '{id}' does not exist")));
    };
    let mut v = json!({ "members": pool_members(&st, id) });
    if let (Some(c), Some(obj)) = (&pool.comment, v.as_object_mut()) {
        obj.insert("comment".into(), c.clone().into());
    }
    Ok(v.into())
}

fn pools_create(shared: &Shared, p: &Params) -> R {
    p.only(|k| matches!(k, "poolid" | "comment"))?;
    let id = p.required("poolid")?;
    if !pool_id_ok(id) {
        return Err(ApiError::param(
            "poolid",
            format!("invalid format - pool name '{id}' contains illegal characters"),
        ));
    }
    let mut st = shared.state();
    if st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "create pool failed: pool '{id}' already exists"
        )));
    }
    st.pools.insert(
        id.to_owned(),
        crate::state::Pool {
            comment: p.get("comment").map(str::to_owned),
        },
    );
    Ok(Value::Null.into())
}

fn pools_update(shared: &Shared, id: &str, p: &Params) -> R {
    p.only(|k| {
        matches!(
            k,
            "poolid" | "comment" | "vms" | "storage" | "delete" | "allow-move"
        )
    })?;
    let delete = p.bool("delete")?.unwrap_or(false);
    let allow_move = p.bool("allow-move")?.unwrap_or(false);
    let mut st = shared.state();
    if !st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "update pools failed: pool '{id}' does not exist"
        )));
    }
    let vmids: Vec<u32> = options::split_list(p.get("vms").unwrap_or(""))
        .iter()
        .map(|v| parse_vmid(v))
        .collect::<Result<_, _>>()?;
    for vmid in &vmids {
        let Some(vm) = st.vms.get(vmid) else {
            return Err(ApiError::die(format!(
                "update pools failed: VM {vmid} does not exist"
            )));
        };
        if delete {
            if vm.pool.as_deref() != Some(id) {
                return Err(ApiError::die(format!(
                    "update pools failed: VM {vmid} is not a pool member"
                )));
            }
        } else if let Some(other) = &vm.pool
            && other != id
            && !allow_move
        {
            return Err(ApiError::die(format!(
                "update pools failed: VM {vmid} is already a pool member"
            )));
        }
    }
    for vmid in vmids {
        if let Some(vm) = st.vms.get_mut(&vmid) {
            vm.pool = if delete { None } else { Some(id.to_owned()) };
        }
    }
    if let (Some(c), Some(pool)) = (p.get("comment"), st.pools.get_mut(id)) {
        pool.comment = Some(c.to_owned());
    }
    Ok(Value::Null.into())
}

fn pools_delete(shared: &Shared, id: &str) -> R {
    let mut st = shared.state();
    if !st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "delete pool failed: pool '{id}' does not exist"
        )));
    }
    if st.vms.values().any(|vm| vm.pool.as_deref() == Some(id)) {
        return Err(ApiError::die(format!(
            "delete pool failed: pool '{id}' is not empty"
        )));
    }
    st.pools.remove(id);
    Ok(Value::Null.into())
}

// -------------------------------------------------------------- mappings

fn mapping_json(m: &crate::config::PciMapping) -> Value {
    let map: Vec<String> = m
        .devices
        .iter()
        .map(|d| {
            let mut s = format!("id={},node={},path={}", d.id, d.node, d.path);
            if let Some(g) = d.iommugroup {
                s.push_str(&format!(",iommugroup={g}"));
            }
            s
        })
        .collect();
    let mut v = json!({ "id": m.id, "type": "pci", "map": map,
                        "digest": digest(&BTreeMap::from([(m.id.clone(), map.join(" "))])) });
    if let (Some(d), Some(obj)) = (&m.description, v.as_object_mut()) {
        obj.insert("description".into(), d.clone().into());
    }
    v
}

fn pci_mappings(shared: &Shared, p: &Params) -> Value {
    let check = p.get("check-node");
    let st = shared.state();
    Value::Array(
        st.pci_mappings
            .iter()
            .map(|m| {
                let mut v = mapping_json(m);
                if let (Some(node), Some(obj)) = (check, v.as_object_mut()) {
                    let checks: Vec<Value> = if m.devices.iter().any(|d| d.node == node) {
                        Vec::new()
                    } else {
                        vec![json!({ "severity": "warning",
                                     "message": format!("No mapping for node '{node}'.") })]
                    };
                    obj.insert("checks".into(), checks.into());
                }
                v
            })
            .collect(),
    )
}

fn pci_mapping(shared: &Shared, id: &str) -> R {
    let st = shared.state();
    st.pci_mappings
        .iter()
        .find(|m| m.id == id)
        .map(|m| mapping_json(m).into())
        .ok_or_else(|| ApiError::die(format!("PCI mapping '{id}' not found")))
}
