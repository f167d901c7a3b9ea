//! The `providers` section: each Proxmox VE cluster with its endpoint,
//! token reference, TLS verification, hosts, VMID range and the figures
//! that bound its hosts (memory reserve, VM overhead, CPU overcommit).

use std::collections::BTreeMap;

use crate::config::reader::{Errors, Obj, Spanned, boolean, number, string, uint, uint32};
use crate::config::yaml::{Node, Value};
use crate::config::{ProxmoxProvider, TlsVerify, VolumeAttach};
use crate::volumes::HARD_ATTACH_LIMIT;

use super::fields::{at_least_one, named_entries, unique_strings};
use super::secrets::{inline_secret, secret_ref};

/// Clones at once per host and storage when the file does not say: PVE
/// allocates each clone's volume under the storage's lock and gives up on
/// a wait of 10 s, so a few at a time keep clear of that.
const DEFAULT_MAX_PARALLEL_CLONES: u32 = 3;

/// The `providers` mapping, by name.
pub(super) fn providers(
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> BTreeMap<String, Spanned<ProxmoxProvider>> {
    let mut out = BTreeMap::new();
    let Some(obj) = Obj::new(node, path, errs) else {
        return out;
    };
    let Value::Map(entries) = &node.value else {
        return out;
    };
    if entries.is_empty() {
        errs.at(path, node.mark, "at least one provider is required");
    }
    drop(obj);
    named_entries(
        entries,
        path,
        "provider name",
        errs,
        &mut out,
        |_, name, n, p, e| provider(name, n, p, e),
    );
    out
}

/// One provider, `name`, of the `providers` mapping.
fn provider(name: &str, node: &Node, path: &str, errs: &mut Errors) -> Option<ProxmoxProvider> {
    let mut obj = Obj::new(node, path, errs)?;
    if let Some((n, p)) = obj.require("type", errs)
        && let Some(t) = string(n, &p, errs)
        && t.value != "proxmox"
    {
        errs.at(
            &p,
            t.mark,
            format!("unknown provider type `{}`; supported: proxmox", t.value),
        );
    }
    let endpoint = obj
        .require("endpoint", errs)
        .and_then(|(n, p)| endpoint(n, &p, errs));
    let token = obj
        .require("tokenFrom", errs)
        .and_then(|(n, p)| secret_ref(n, &p, errs));
    let tls = match obj.get("tls") {
        Some((n, p)) => tls(n, &p, errs),
        None => Some(TlsVerify::System),
    };
    let hosts = obj
        .require("hosts", errs)
        .and_then(|(n, p)| hosts(n, &p, errs));
    let range = obj
        .require("vmidRange", errs)
        .and_then(|(n, p)| vmid_range(n, &p, errs));
    let reserve = obj
        .get("hostMemoryReserveMiB")
        .and_then(|(n, p)| uint(n, &p, errs))
        .map_or(4096, |v| v.value);
    let overhead = obj
        .get("vmMemoryOverheadMiB")
        .and_then(|(n, p)| uint(n, &p, errs))
        .map_or(512, |v| v.value);
    let overcommit = match obj.get("cpuOvercommit") {
        Some((n, p)) => cpu_overcommit(n, &p, errs),
        None => Some(4.0),
    };
    let storage = obj
        .get("storage")
        .and_then(|(n, p)| string(n, &p, errs))
        .map_or_else(|| "local-lvm".to_owned(), |v| v.value);
    let resource_pool = obj
        .get("resourcePool")
        .and_then(|(n, p)| string(n, &p, errs))
        .map(|v| v.value);
    let full_clone = obj
        .get("fullClone")
        .and_then(|(n, p)| boolean(n, &p, errs))
        .unwrap_or(true);
    let volumes = match obj.get("volumes") {
        Some((n, p)) => volume_attach(n, &p, errs),
        None => Some(VolumeAttach::default()),
    };
    let max_parallel_clones = obj
        .get("maxParallelClones")
        .and_then(|(n, p)| at_least_one(n, &p, errs))
        .unwrap_or(DEFAULT_MAX_PARALLEL_CLONES);
    obj.finish_with(errs, |key| {
        matches!(
            key,
            "token" | "tokenSecret" | "apiToken" | "password" | "secret"
        )
        .then(|| inline_secret(key, "tokenFrom"))
    });
    let (vmid_lower, vmid_upper) = range?;
    Some(ProxmoxProvider {
        name: name.to_owned(),
        endpoint: endpoint?,
        token: token?,
        tls: tls?,
        hosts: hosts?,
        vmid_lower,
        vmid_upper,
        host_memory_reserve_mib: reserve,
        vm_memory_overhead_mib: overhead,
        cpu_overcommit: overcommit?,
        storage,
        resource_pool,
        full_clone,
        volumes: volumes?,
        max_parallel_clones,
    })
}

/// The `volumes` section: the attach-limited CSI driver and the limit
/// assumed for a node whose CSINode does not report one yet (1 to 30, the
/// most proxmox-csi ever advertises).
fn volume_attach(n: &Node, p: &str, errs: &mut Errors) -> Option<VolumeAttach> {
    let mut obj = Obj::new(n, p, errs)?;
    let defaults = VolumeAttach::default();
    let driver = obj
        .get("csiDriver")
        .and_then(|(n, p)| string(n, &p, errs))
        .map_or(defaults.driver, |v| v.value);
    let limit = match obj.get("attachLimit") {
        Some((n, p)) => {
            let v = uint32(n, &p, errs)?;
            if !(1..=HARD_ATTACH_LIMIT).contains(&v.value) {
                errs.at(
                    &v.path,
                    v.mark,
                    format!(
                        "attachLimit {} is outside 1-{HARD_ATTACH_LIMIT} (a VM has 30 SCSI slots)",
                        v.value
                    ),
                );
                return None;
            }
            v.value
        }
        None => defaults.attach_limit,
    };
    obj.finish(errs);
    Some(VolumeAttach {
        driver,
        attach_limit: limit,
    })
}

/// The API base URL: https, ending in `/api2/json` (a trailing slash is
/// dropped).
fn endpoint(n: &Node, p: &str, errs: &mut Errors) -> Option<String> {
    let v = string(n, p, errs)?;
    let lower = v.value.to_ascii_lowercase();
    if !lower.starts_with("https://") {
        errs.at(
            p,
            v.mark,
            format!(
                "`{}` must be an https:// URL (the Proxmox API is served over TLS)",
                v.value
            ),
        );
        return None;
    }
    let trimmed = v.value.trim_end_matches('/');
    if !trimmed.ends_with("/api2/json") {
        errs.at(
            p,
            v.mark,
            format!(
                "`{}` must end in /api2/json, e.g. https://pve.example:8006/api2/json",
                v.value
            ),
        );
        return None;
    }
    Some(trimmed.to_owned())
}

/// The Proxmox hosts workers may be placed on: at least one, none twice.
fn hosts(n: &Node, p: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let hosts = unique_strings(n, p, "host", errs)?;
    if hosts.is_empty() {
        errs.at(p, n.mark, "list at least one Proxmox host");
    }
    Some(hosts.into_iter().map(|h| h.value).collect::<Vec<_>>())
}

/// The VMID range `{lower, upper}`, within Proxmox's own range.
fn vmid_range(n: &Node, p: &str, errs: &mut Errors) -> Option<(u32, u32)> {
    let mut r = Obj::new(n, p, errs)?;
    let lower = r
        .require("lower", errs)
        .and_then(|(n, p)| uint32(n, &p, errs));
    let upper = r
        .require("upper", errs)
        .and_then(|(n, p)| uint32(n, &p, errs));
    r.finish(errs);
    let (lower, upper) = (lower?, upper?);
    let mut ok = true;
    for v in [&lower, &upper] {
        if !(100..=999_999_999).contains(&v.value) {
            errs.at(
                &v.path,
                v.mark,
                format!("VMID {} is outside Proxmox's range 100-999999999", v.value),
            );
            ok = false;
        }
    }
    if ok && lower.value > upper.value {
        errs.at(
            p,
            n.mark,
            format!(
                "lower ({}) is greater than upper ({})",
                lower.value, upper.value
            ),
        );
        ok = false;
    }
    ok.then_some((lower.value, upper.value))
}

/// vCPUs per physical core, between 0.1 and 64.
fn cpu_overcommit(n: &Node, p: &str, errs: &mut Errors) -> Option<f64> {
    let v = number(n, p, errs)?;
    if !(0.1..=64.0).contains(&v.value) {
        errs.at(
            p,
            v.mark,
            format!("must be between 0.1 and 64, got {}", v.value),
        );
        return None;
    }
    Some(v.value)
}

/// How the API's certificate is verified: at most one of a CA file, a
/// pinned fingerprint or no verification at all.
fn tls(node: &Node, path: &str, errs: &mut Errors) -> Option<TlsVerify> {
    let mut obj = Obj::new(node, path, errs)?;
    let ca = obj.get("caFile").and_then(|(n, p)| string(n, &p, errs));
    let fp = obj.get("fingerprint").and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let parts: Vec<&str> = v.value.split(':').collect();
        let ok = parts.len() == 32 && parts.iter().all(|h| h.len() == 2 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            errs.at(&p, v.mark, "expected a SHA-256 fingerprint: 32 hex pairs separated by ':' (as shown by Proxmox)");
            return None;
        }
        Some(v.value.to_ascii_uppercase())
    });
    let insecure = obj
        .get("insecureSkipVerify")
        .and_then(|(n, p)| boolean(n, &p, errs))
        .unwrap_or(false);
    obj.finish(errs);
    match (ca, fp, insecure) {
        (Some(ca), None, false) => Some(TlsVerify::CaFile(ca.value)),
        (None, Some(fp), false) => Some(TlsVerify::Fingerprint(fp)),
        (None, None, true) => Some(TlsVerify::InsecureSkipVerify),
        (None, None, false) => Some(TlsVerify::System),
        _ => {
            errs.at(
                path,
                node.mark,
                "give at most one of `caFile`, `fingerprint` or `insecureSkipVerify: true`",
            );
            None
        }
    }
}
