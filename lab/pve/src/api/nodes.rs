//! Node and cluster reads: the version, the nodes and their status, the next
//! free VMID, `/cluster/resources` and a node's VM list.

use serde_json::{Value, json};

use super::{GIB, MIB, PVE_REPOID, PVE_VERSION, R};
use crate::error::ApiError;
use crate::lab::Shared;
use crate::params::Params;
use crate::state::{State, Vm};

pub(super) fn version() -> Value {
    json!({ "version": PVE_VERSION, "release": "8.4", "repoid": PVE_REPOID })
}

fn node_mem_used(st: &State, node: &str) -> u64 {
    // The host itself uses some memory besides its guests.
    st.used_memory_mib(node) * MIB + 2 * GIB
}

pub(super) fn nodes(shared: &Shared) -> Value {
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

pub(super) fn node_status(shared: &Shared, node: &str) -> Value {
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

pub(super) fn nextid(shared: &Shared, p: &Params) -> R {
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
pub(super) fn vm_row(st: &State, vm: &Vm) -> Value {
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

pub(super) fn resources(shared: &Shared, p: &Params) -> R {
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

pub(super) fn qemu_list(shared: &Shared, node: &str) -> Value {
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
