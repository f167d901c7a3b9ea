//! The Proxmox checks of `tidepool doctor`: the API answers over verified
//! TLS, the token holds every privilege Tidepool uses on the exact ACL
//! paths (read from `/access/permissions`; the table is facts §1.5), each
//! pool's templates are usable on its hosts, GPU pools' PCI mappings exist
//! there, and the VMID range holds only Tidepool's own VMs.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_controller::executor::owner_from_description;
use tidepool_core::config::{Config, Pool, ProxmoxProvider, TlsVerify};
use tidepool_proxmox::{ClientOptions, ClusterStorage, ClusterVm, ProxmoxClient};

use super::{Check, DoctorOptions, Report, anyhow_chain};

/// Why a privilege is needed, on which path, for the report.
struct Need {
    path: String,
    privs: Vec<&'static str>,
    why: String,
}

/// The privileges a new worker VM needs (through its pool, else `/vms`).
const WORKER_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Options",
    "VM.Config.HWType",
    "VM.PowerMgmt",
    "VM.Monitor",
];

/// Every privilege Tidepool may need, for the role the guide creates.
pub const TIDEPOOL_ROLE: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Options",
    "VM.Config.HWType",
    "VM.Config.Cloudinit",
    "VM.PowerMgmt",
    "VM.Monitor",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "Sys.Audit",
    "Pool.Audit",
    "Mapping.Audit",
    "Mapping.Use",
    "SDN.Use",
];

/// The hosts `pool` may use on `provider`.
fn pool_hosts(pool: &Pool, provider: &ProxmoxProvider) -> Vec<String> {
    if pool.hosts.is_empty() {
        provider.hosts.clone()
    } else {
        pool.hosts.clone()
    }
}

/// The pools on `provider`.
fn pools_of<'a>(config: &'a Config, provider: &ProxmoxProvider) -> Vec<&'a Pool> {
    config
        .pools
        .iter()
        .filter(|p| p.provider == provider.name)
        .collect()
}

/// The GPU mapping each size of `pool` needs.
fn gpu_mappings(config: &Config, pool: &Pool) -> BTreeSet<String> {
    pool.sizes
        .iter()
        .filter_map(|s| config.size(s))
        .filter_map(|e| e.size.gpu.as_ref().map(|g| g.mapping.clone()))
        .collect()
}

/// What the cluster looks like to the token.
struct Seen {
    vms: Vec<ClusterVm>,
    storage: Vec<ClusterStorage>,
}

/// Runs the Proxmox checks for `provider`; `token` is its resolved secret
/// (`None` when it did not resolve, which is reported already).
pub async fn check(
    config: &Config,
    provider: &ProxmoxProvider,
    token: Option<&str>,
    options: &DoctorOptions,
    report: &mut Report,
) {
    let id = format!("proxmox {} api", provider.name);
    let Some(token) = token else {
        report.checks.push(Check::fail(
            id,
            "not checked: the token did not resolve",
            "fix the token secret first",
        ));
        return;
    };
    let client = match tidepool_proxmox::ApiToken::parse(token.trim())
        .map_err(tidepool_proxmox::BuildError::Token)
        .and_then(|t| {
            let opts = ClientOptions {
                retry: tidepool_proxmox::RetryPolicy {
                    max_attempts: 1,
                    ..ClientOptions::default().retry
                },
                ..ClientOptions::default()
            };
            ProxmoxClient::from_provider_with_token(provider, t, &options.config_dir, opts)
        }) {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(Check::fail(
                id,
                anyhow_chain(&e),
                "the token must read `user@realm!name=<secret>` (pveum user token add prints both); the TLS settings must name a readable CA file or a fingerprint",
            ));
            return;
        }
    };
    let tls = match &provider.tls {
        TlsVerify::System => "by the system's trust roots".to_owned(),
        TlsVerify::CaFile(f) => format!("against CA {f}"),
        TlsVerify::Fingerprint(_) => "by the pinned fingerprint".to_owned(),
        TlsVerify::InsecureSkipVerify => "NOT verified".to_owned(),
    };
    match client.version().await {
        Ok(v) if matches!(provider.tls, TlsVerify::InsecureSkipVerify) => {
            report.checks.push(Check::warn(
                id,
                format!("Proxmox VE {} at {}, TLS {tls}", v.version, provider.endpoint),
                "set tls.caFile to the cluster's /etc/pve/pve-root-ca.pem or tls.fingerprint to the certificate's SHA-256 fingerprint",
            ));
        }
        Ok(v) => report.checks.push(Check::pass(
            id,
            format!(
                "Proxmox VE {} at {}, TLS verified {tls}",
                v.version, provider.endpoint
            ),
        )),
        Err(e) => {
            report.checks.push(Check::fail(
                id,
                anyhow_chain(&e),
                "check the endpoint (https://<host>:8006/api2/json), that the token exists and is not expired, and tls (caFile: the cluster's /etc/pve/pve-root-ca.pem, or fingerprint)",
            ));
            return;
        }
    }
    let seen = match (client.cluster_vms().await, client.cluster_storage().await) {
        (Ok(vms), Ok(storage)) => Seen { vms, storage },
        (Err(e), _) | (_, Err(e)) => {
            report.checks.push(Check::fail(
                format!("proxmox {} resources", provider.name),
                anyhow_chain(&e),
                "the token needs to read /cluster/resources",
            ));
            return;
        }
    };
    let needs = needs(config, provider, &client, &seen).await;
    report
        .checks
        .push(privileges(&client, provider, &needs).await);
    for pool in pools_of(config, provider) {
        for size in &pool.sizes {
            report
                .checks
                .push(template(config, provider, &client, &seen, pool, size).await);
        }
        for mapping in gpu_mappings(config, pool) {
            report
                .checks
                .push(pci_mapping(&client, provider, pool, &mapping).await);
        }
    }
    report
        .checks
        .push(vmid_range(&client, provider, &seen).await);
}

/// The templates of every pool on `provider`, as `(node, vmid)`.
fn templates<'a>(
    config: &Config,
    provider: &ProxmoxProvider,
    seen: &'a Seen,
) -> Vec<&'a ClusterVm> {
    let names: BTreeSet<String> = pools_of(config, provider)
        .iter()
        .flat_map(|p| p.sizes.iter().map(|s| p.template_for(s)))
        .collect();
    seen.vms
        .iter()
        .filter(|v| v.template)
        .filter(|v| {
            names.contains(&v.vmid.to_string())
                || v.name.as_ref().is_some_and(|n| names.contains(n))
        })
        .collect()
}

/// Every (path, privileges) Tidepool's operations need on `provider`.
async fn needs(
    config: &Config,
    provider: &ProxmoxProvider,
    client: &ProxmoxClient,
    seen: &Seen,
) -> Vec<Need> {
    let mut out = Vec::new();
    let mut bridges = BTreeSet::new();
    for t in templates(config, provider, seen) {
        out.push(Need {
            path: format!("/vms/{}", t.vmid),
            privs: vec!["VM.Clone", "VM.Audit"],
            why: format!("clone template {}", t.name.as_deref().unwrap_or("?")),
        });
        if let Ok(cfg) = client.vm_config(&t.node, t.vmid).await {
            for (k, v) in &cfg.raw {
                if let (true, Some(text)) = (k.starts_with("net"), v.as_str())
                    && let Some(b) = text.split(',').find_map(|p| p.strip_prefix("bridge="))
                {
                    bridges.insert(b.to_owned());
                }
            }
        }
    }
    let workers = provider
        .resource_pool
        .as_ref()
        .map_or_else(|| "/vms".to_owned(), |p| format!("/pool/{p}"));
    let mut worker_privs = WORKER_PRIVS.to_vec();
    if matches!(
        config.join.method,
        tidepool_core::config::JoinMethod::Nocloud { .. }
    ) {
        worker_privs.push("VM.Config.Cloudinit");
    }
    out.push(Need {
        path: workers,
        privs: worker_privs,
        why: "create, configure, power, watch and delete workers".into(),
    });
    if let Some(pool) = &provider.resource_pool {
        out.push(Need {
            path: format!("/pool/{pool}"),
            privs: vec!["Pool.Audit"],
            why: format!("see resource pool {pool}"),
        });
    }
    out.push(Need {
        path: format!("/storage/{}", provider.storage),
        privs: vec!["Datastore.AllocateSpace", "Datastore.Audit"],
        why: "allocate and measure worker disks".into(),
    });
    for host in &provider.hosts {
        out.push(Need {
            path: format!("/nodes/{host}"),
            privs: vec!["Sys.Audit"],
            why: format!("read host {host}'s memory and CPU"),
        });
    }
    for bridge in bridges {
        out.push(Need {
            path: format!("/sdn/zones/localnetwork/{bridge}"),
            privs: vec!["SDN.Use"],
            why: format!("attach workers to bridge {bridge}"),
        });
    }
    let mappings: BTreeSet<String> = pools_of(config, provider)
        .iter()
        .flat_map(|p| gpu_mappings(config, p))
        .collect();
    for m in mappings {
        out.push(Need {
            path: format!("/mapping/pci/{m}"),
            privs: vec!["Mapping.Use", "Mapping.Audit"],
            why: format!("pass GPU mapping {m} through"),
        });
    }
    out
}

/// The privileges check: one failure lists every missing (path, privilege)
/// with the 403 Proxmox would answer.
async fn privileges(client: &ProxmoxClient, provider: &ProxmoxProvider, needs: &[Need]) -> Check {
    let id = format!("proxmox {} privileges", provider.name);
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut missing = Vec::new();
    for need in needs {
        if !held.contains_key(&need.path) {
            match client.permissions_on(&need.path).await {
                Ok(p) => {
                    held.insert(need.path.clone(), p);
                }
                Err(e) => {
                    return Check::fail(
                        id,
                        format!("reading the token's privileges: {}", anyhow_chain(&e)),
                        "GET /access/permissions must answer for the token",
                    );
                }
            }
        }
        let on_path = held.get(&need.path).cloned().unwrap_or_default();
        for p in &need.privs {
            if !on_path.contains(*p) {
                missing.push((need.path.clone(), *p, need.why.clone()));
            }
        }
    }
    if missing.is_empty() {
        return Check::pass(
            id,
            format!(
                "the token holds every privilege Tidepool uses on {} path(s)",
                held.len()
            ),
        );
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|(path, p, why)| format!("{path} lacks {p} (to {why}): Proxmox would answer 403 \"Permission check failed ({path}, {p})\""))
        .collect();
    let privs: BTreeSet<&str> = missing.iter().map(|(_, p, _)| *p).collect();
    let paths: BTreeSet<&str> = missing.iter().map(|(path, _, _)| path.as_str()).collect();
    Check::fail(
        id,
        lines.join("; "),
        format!(
            "add {} to the token's role (pveum role modify Tidepool --append 1 --privs {}) and make sure the role is granted on {} (pveum acl modify <path> --tokens '{}' --roles Tidepool)",
            privs.iter().copied().collect::<Vec<_>>().join(", "),
            privs.iter().copied().collect::<Vec<_>>().join(","),
            paths.iter().copied().collect::<Vec<_>>().join(", "),
            client.token_id(),
        ),
    )
}

/// The `size=` of a disk value, in GiB.
fn disk_gib(value: &str) -> Option<u64> {
    let size = value.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "T" => n * 1024,
        "G" => n,
        "M" => n.div_ceil(1024),
        _ => return None,
    })
}

/// The boot disk (first of scsi0, virtio0, sata0, ide0 that is no CD-ROM).
fn boot_disk(raw: &BTreeMap<String, serde_json::Value>) -> Option<(String, String)> {
    ["scsi0", "virtio0", "sata0", "ide0"].iter().find_map(|k| {
        let v = raw.get(*k)?.as_str()?;
        (!v.contains("media=cdrom")).then(|| ((*k).to_owned(), v.to_owned()))
    })
}

/// One pool size's template: on every host the pool may use (or on shared
/// storage), a template, guest agent on, a disk the size can grow from,
/// and room on the provider's storage.
async fn template(
    config: &Config,
    provider: &ProxmoxProvider,
    client: &ProxmoxClient,
    seen: &Seen,
    pool: &Pool,
    size: &str,
) -> Check {
    let id = format!("template {}/{size}", pool.name);
    let name = pool.template_for(size);
    let matching: Vec<&ClusterVm> = seen
        .vms
        .iter()
        .filter(|v| v.vmid.to_string() == name || v.name.as_deref() == Some(name.as_str()))
        .collect();
    let want_gib = config.size(size).map_or(0, |e| e.size.disk_gb);
    let shared: BTreeSet<&str> = seen
        .storage
        .iter()
        .filter(|s| s.shared)
        .map(|s| s.storage.as_str())
        .collect();
    let mut problems = Vec::new();
    let mut fixes = BTreeSet::new();
    for host in pool_hosts(pool, provider) {
        let here = matching.iter().find(|v| v.node == host);
        let found = here.or_else(|| matching.first());
        let Some(vm) = found else {
            problems.push(format!("no VM named {name} on {host}"));
            fixes.insert(format!("create template {name} on {host} (see docs/production.md, \"A Talos worker template\")"));
            continue;
        };
        let cfg = match client.vm_config(&vm.node, vm.vmid).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("reading VM {}: {}", vm.vmid, anyhow_chain(&e)));
                continue;
            }
        };
        let disk = boot_disk(&cfg.raw);
        let on_shared = disk
            .as_ref()
            .is_some_and(|(_, v)| v.split(':').next().is_some_and(|s| shared.contains(s)));
        if here.is_none() && !on_shared {
            problems.push(format!("{name} is on {} only and its disk is not on shared storage, so it cannot be cloned to {host}", vm.node));
            fixes.insert(format!("copy the template to {host} (qm clone {} <id> --target {host} --full, then qm template <id>) or keep its disk on shared storage", vm.vmid));
        }
        if !vm.template {
            problems.push(format!("VM {} ({name}) is not a template", vm.vmid));
            fixes.insert(format!("qm template {}", vm.vmid));
        }
        let agent = cfg.raw.get("agent").and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.starts_with('1') || s.contains("enabled=1")),
            serde_json::Value::Number(n) => Some(n.as_u64() == Some(1)),
            _ => None,
        });
        if agent != Some(true) {
            problems.push(format!("VM {} ({name}) does not have the guest agent enabled: Tidepool learns a worker's address from it", vm.vmid));
            fixes.insert(format!("qm set {} --agent enabled=1 (and use an image with the qemu-guest-agent extension)", vm.vmid));
        }
        match disk.as_ref().and_then(|(k, v)| disk_gib(v).map(|g| (k, g))) {
            None => {
                problems.push(format!(
                    "VM {} ({name}) has no boot disk with a size",
                    vm.vmid
                ));
                fixes.insert(format!("give template {} a boot disk (scsi0)", vm.vmid));
            }
            Some((k, gib)) if want_gib > 0 && gib > want_gib => {
                problems.push(format!("VM {} ({name}) has a {gib} GiB {k}, larger than size {size}'s {want_gib} GiB: a disk cannot shrink", vm.vmid));
                fixes.insert(format!(
                    "make the template's disk at most {want_gib} GiB, or raise size {size}'s disk"
                ));
            }
            Some(_) => {}
        }
        if let Some((problem, fix)) = storage_room(provider, seen, &host, size, want_gib) {
            problems.push(problem);
            fixes.insert(fix);
        }
    }
    if problems.is_empty() {
        Check::pass(
            id,
            format!(
                "{name}: a template with the guest agent on, usable on every host of pool {}",
                pool.name
            ),
        )
    } else {
        Check::fail(
            id,
            problems.join("; "),
            fixes.into_iter().collect::<Vec<_>>().join("; "),
        )
    }
}

/// What is wrong with the room on the provider's storage on `host` for a
/// `size` worker (of `want_gib`), with the fix.
fn storage_room(
    provider: &ProxmoxProvider,
    seen: &Seen,
    host: &str,
    size: &str,
    want_gib: u64,
) -> Option<(String, String)> {
    let room = seen
        .storage
        .iter()
        .find(|s| s.storage == provider.storage && (s.node == host || s.shared))
        .map(|s| s.maxdisk.saturating_sub(s.disk) / (1024 * 1024 * 1024));
    match room {
        None => Some((
            format!("storage {} is not on {host}", provider.storage),
            format!(
                "set providers.{}.storage to a storage every host has",
                provider.name
            ),
        )),
        Some(free) if free < want_gib => Some((
            format!(
                "storage {} on {host} has {free} GiB free, a {size} worker needs {want_gib} GiB",
                provider.storage
            ),
            format!(
                "free space on {} or choose another storage",
                provider.storage
            ),
        )),
        Some(_) => None,
    }
}

/// A GPU pool's PCI mapping: it exists and has a device on each host.
async fn pci_mapping(
    client: &ProxmoxClient,
    provider: &ProxmoxProvider,
    pool: &Pool,
    mapping: &str,
) -> Check {
    let id = format!("pci-mapping {}/{mapping}", pool.name);
    let mappings = match client.pci_mappings(None).await {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                id,
                anyhow_chain(&e),
                "the token needs Mapping.Audit on /mapping/pci",
            );
        }
    };
    let Some(found) = mappings.iter().find(|m| m.id == mapping) else {
        return Check::fail(
            id,
            format!("no PCI mapping {mapping}"),
            format!(
                "create it under Datacenter > Resource Mappings > PCI Devices (pvesh create /cluster/mapping/pci --id {mapping} --map node=<host>,path=<0000:01:00.0>,id=<vendor:device>)"
            ),
        );
    };
    let missing: Vec<String> = pool_hosts(pool, provider)
        .into_iter()
        .filter(|h| {
            !found
                .map
                .iter()
                .any(|e| e.node.as_deref() == Some(h.as_str()))
        })
        .collect();
    if missing.is_empty() {
        Check::pass(
            id,
            format!(
                "mapping {mapping} has a device on every host of pool {}",
                pool.name
            ),
        )
    } else {
        Check::fail(
            id,
            format!("mapping {mapping} has no device on {}", missing.join(", ")),
            format!(
                "add the hosts' devices to mapping {mapping}, or limit pool {}'s hosts to those with one",
                pool.name
            ),
        )
    }
}

/// The VMID range: free, or holding only VMs that carry Tidepool's marker.
async fn vmid_range(client: &ProxmoxClient, provider: &ProxmoxProvider, seen: &Seen) -> Check {
    let id = format!("proxmox {} vmid-range", provider.name);
    let range = provider.vmid_lower..=provider.vmid_upper;
    let mut own = 0;
    let mut foreign = Vec::new();
    for vm in seen.vms.iter().filter(|v| range.contains(&v.vmid)) {
        let description = client
            .vm_config(&vm.node, vm.vmid)
            .await
            .ok()
            .and_then(|c| c.description);
        match description
            .as_deref()
            .and_then(|d| owner_from_description(d, vm.vmid))
        {
            Some(_) => own += 1,
            None => foreign.push(format!(
                "{} ({} on {})",
                vm.vmid,
                vm.name.as_deref().unwrap_or("unnamed"),
                vm.node
            )),
        }
    }
    let span = format!("{}-{}", provider.vmid_lower, provider.vmid_upper);
    if foreign.is_empty() {
        Check::pass(
            id,
            format!("{span}: {own} of Tidepool's own VM(s), nothing else"),
        )
    } else {
        Check::fail(
            id,
            format!(
                "{span} holds VMs that are not Tidepool's: {}",
                foreign.join(", ")
            ),
            format!(
                "move them out of the range (or choose a range no other VM uses: providers.{}.vmidRange)",
                provider.name
            ),
        )
    }
}
