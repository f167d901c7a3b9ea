//! Token privileges as Proxmox VE evaluates them: the roles (built-in and
//! the scenario's own), the token's ACL entries, the path walk that turns
//! them into the privileges held on one path, the per-endpoint checks made
//! before a handler runs (403 "Permission check failed (<path>, <priv>)",
//! facts §1.5) and `GET /access/permissions`.
//!
//! A configuration without ACL entries leaves the token unrestricted, as a
//! `root@pam` token without privilege separation is.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::config::{AclSpec, PveConfig};
use crate::error::{ApiError, LabError};
use crate::params::Params;
use crate::state::State;

/// Every PVE 8 privilege (pve-access-control `$privgroups`).
pub const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// The privileges that enter a config update (any one of them).
const CONFIG_ANY: &[&str] = &[
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
];

/// The built-in roles this emulator knows (`create_roles`).
fn builtin_role(id: &str) -> Option<BTreeSet<String>> {
    let pick = |f: &dyn Fn(&str) -> bool| {
        ALL_PRIVILEGES
            .iter()
            .filter(|p| f(p))
            .map(|p| (*p).to_owned())
            .collect()
    };
    let list = |l: &[&str]| l.iter().map(|p| (*p).to_owned()).collect();
    Some(match id {
        "Administrator" => pick(&|_| true),
        "NoAccess" => BTreeSet::new(),
        "PVEAuditor" => pick(&|p| p.ends_with(".Audit")),
        "PVEVMAdmin" => pick(&|p| p.starts_with("VM.")),
        "PVETemplateUser" => list(&["VM.Clone", "VM.Audit"]),
        "PVEDatastoreUser" => list(&["Datastore.AllocateSpace", "Datastore.Audit"]),
        "PVEPoolUser" => list(&["Pool.Audit"]),
        "PVEPoolAdmin" => list(&["Pool.Allocate", "Pool.Audit"]),
        "PVEMappingUser" => list(&["Mapping.Use", "Mapping.Audit"]),
        "PVESDNUser" => list(&["SDN.Use", "SDN.Audit"]),
        _ => return None,
    })
}

/// The token's rights: roles by id and its ACL entries.
#[derive(Debug)]
pub(crate) struct Access<'a> {
    roles: BTreeMap<&'a str, BTreeSet<String>>,
    acls: &'a [AclSpec],
}

impl<'a> Access<'a> {
    /// The rights `config` gives its token.
    ///
    /// # Errors
    /// [`LabError::Config`] for an ACL naming an unknown role or a path
    /// that does not start with `/`, and a role with an unknown privilege.
    pub(crate) fn of(config: &'a PveConfig) -> Result<Self, LabError> {
        let mut roles = BTreeMap::new();
        for role in &config.roles {
            if let Some(bad) = role
                .privs
                .iter()
                .find(|p| !ALL_PRIVILEGES.contains(&p.as_str()))
            {
                return Err(LabError::Config(format!(
                    "role {}: unknown privilege '{bad}'",
                    role.id
                )));
            }
            roles.insert(role.id.as_str(), role.privs.iter().cloned().collect());
        }
        for acl in &config.acls {
            if !acl.path.starts_with('/') {
                return Err(LabError::Config(format!(
                    "acl path '{}' must start with /",
                    acl.path
                )));
            }
            if !roles.contains_key(acl.role.as_str()) {
                let role = builtin_role(&acl.role).ok_or_else(|| {
                    LabError::Config(format!("acl {}: unknown role '{}'", acl.path, acl.role))
                })?;
                roles.insert(acl.role.as_str(), role);
            }
        }
        Ok(Self {
            roles,
            acls: &config.acls,
        })
    }

    /// Whether no ACL restricts the token.
    fn unrestricted(&self) -> bool {
        self.acls.is_empty()
    }

    /// The privileges the path walk gives on `path`, each with whether it
    /// propagates: the deepest of `path` and its ancestors that carries
    /// entries wins, an ancestor's only when they propagate.
    fn walk(&self, path: &str) -> BTreeMap<String, bool> {
        if self.unrestricted() {
            return ALL_PRIVILEGES
                .iter()
                .map(|p| ((*p).to_owned(), true))
                .collect();
        }
        let path = normalize(path);
        for candidate in ancestry(&path) {
            let exact = candidate == path;
            let entries: Vec<&AclSpec> = self
                .acls
                .iter()
                .filter(|a| normalize(&a.path) == candidate && (exact || a.propagate))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let mut out = BTreeMap::new();
            for acl in entries {
                for p in self.roles.get(acl.role.as_str()).into_iter().flatten() {
                    let slot = out.entry(p.clone()).or_insert(false);
                    *slot |= acl.propagate;
                }
            }
            return out;
        }
        BTreeMap::new()
    }

    /// The privileges held on `path`; a VM's also include those of its
    /// resource pool.
    fn held(&self, st: &State, path: &str) -> BTreeSet<String> {
        let mut held: BTreeSet<String> = self.walk(path).into_keys().collect();
        let pool = path
            .strip_prefix("/vms/")
            .and_then(|id| id.parse::<u32>().ok())
            .and_then(|id| st.vms.get(&id))
            .and_then(|vm| vm.pool.clone());
        if let Some(pool) = pool {
            held.extend(self.walk(&format!("/pool/{pool}")).into_keys());
        }
        held
    }

    /// Whether any of `privs` is held on `path`.
    fn has_any(&self, st: &State, path: &str, privs: &[&str]) -> bool {
        let held = self.held(st, path);
        privs.iter().any(|p| held.contains(*p))
    }

    /// `check_full`: fails with "Permission check failed (<path>, <privs>)"
    /// unless one of `privs` is held on `path`.
    fn need(&self, st: &State, path: &str, privs: &[&str]) -> Result<(), ApiError> {
        if self.has_any(st, path, privs) {
            Ok(())
        } else {
            Err(denied(&format!("{path}, {}", privs.join("|"))))
        }
    }
}

/// The 403 Proxmox answers when a permission check fails.
fn denied(detail: &str) -> ApiError {
    if detail.is_empty() {
        ApiError::status(403, "Permission check failed")
    } else {
        ApiError::status(403, format!("Permission check failed ({detail})"))
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `path` and its ancestors, deepest first: `/vms/100`, `/vms`, `/`.
fn ancestry(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    let mut cur = path.to_owned();
    while let Some((parent, _)) = cur.rsplit_once('/') {
        let parent = if parent.is_empty() { "/" } else { parent };
        if parent == cur {
            break;
        }
        out.push(parent.to_owned());
        cur = parent.to_owned();
    }
    out
}

/// The privileges a config key needs (any one of each inner list), or
/// `None` for keys the handler itself refuses (root only, unknown).
fn config_key_privs(key: &str) -> Option<&'static [&'static str]> {
    let indexed = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    Some(match key {
        "cores" | "sockets" | "cpu" | "cpulimit" | "cpuunits" | "vcpus" | "numa" | "affinity" => {
            &["VM.Config.CPU"]
        }
        "memory" | "balloon" | "shares" => &["VM.Config.Memory"],
        "acpi" | "hotplug" | "kvm" | "machine" | "scsihw" | "smbios1" | "tablet" | "vga"
        | "watchdog" => &["VM.Config.HWType"],
        "name" | "description" | "onboot" | "agent" | "ostype" | "protection" | "template"
        | "tags" | "startup" | "boot" | "bios" | "keyboard" | "localtime" | "reboot" | "freeze"
        | "vmgenid" | "meta" => &["VM.Config.Options"],
        "ciuser" | "cipassword" | "citype" | "cicustom" | "sshkeys" | "nameserver"
        | "searchdomain" | "ciupgrade" => &["VM.Config.Cloudinit", "VM.Config.Network"],
        _ if indexed("ipconfig") => &["VM.Config.Cloudinit", "VM.Config.Network"],
        _ if indexed("net") => &["VM.Config.Network"],
        _ if indexed("hostpci") || indexed("usb") || indexed("serial") => &["VM.Config.HWType"],
        _ if ["scsi", "virtio", "sata", "ide", "unused"]
            .iter()
            .any(|p| indexed(p))
            || key == "efidisk0"
            || key == "tpmstate0" =>
        {
            &["VM.Config.Disk"]
        }
        _ => return None,
    })
}

/// The storage id at the front of a disk value (`local-lvm:vm-1-disk-0,…`).
fn disk_storage(value: &str) -> Option<&str> {
    let volume = value.split(',').next()?;
    let (storage, _) = volume.split_once(':')?;
    (storage != "none").then_some(storage)
}

/// The `mapping=<id>` of a `hostpciN` value.
fn pci_mapping(value: &str) -> Option<&str> {
    value
        .split(',')
        .find_map(|part| part.strip_prefix("mapping="))
}

/// The bridge of a `netN` value.
fn net_bridge(value: &str) -> Option<&str> {
    value
        .split(',')
        .find_map(|part| part.strip_prefix("bridge="))
}

/// The checks Proxmox makes before (or first thing in) the handler of a
/// request, for the endpoints the emulator serves.
///
/// # Errors
/// A 403 "Permission check failed …" naming the path and privilege.
pub(crate) fn authorize(
    config: &PveConfig,
    st: &State,
    m: &str,
    seg: &[&str],
    p: &Params,
) -> Result<(), ApiError> {
    let access = Access::of(config).map_err(|e| ApiError::die(e.to_string()))?;
    if access.unrestricted() {
        return Ok(());
    }
    let need = |path: String, privs: &[&str]| access.need(st, &path, privs);
    match (m, seg) {
        ("GET", ["nodes", n, "status"]) => need(format!("/nodes/{n}"), &["Sys.Audit"]),
        ("GET", ["pools", id]) => need(format!("/pool/{id}"), &["Pool.Audit"]),
        ("GET", ["pools"]) => match p.get("poolid") {
            Some(id) => need(format!("/pool/{id}"), &["Pool.Audit"]),
            None => Ok(()),
        },
        ("PUT", ["pools", id]) => need(format!("/pool/{id}"), &["Pool.Allocate"]),
        ("PUT" | "DELETE", ["pools"]) => need(
            format!("/pool/{}", p.required("poolid")?),
            &["Pool.Allocate"],
        ),
        ("POST", ["pools"]) => need(
            format!("/pool/{}", p.required("poolid")?),
            &["Pool.Allocate"],
        ),
        ("GET", ["cluster", "mapping", "pci", id]) => {
            need(format!("/mapping/pci/{id}"), &["Mapping.Audit"])
        }
        (_, ["nodes", _, "qemu", vmid, rest @ ..]) => {
            let Ok(vmid) = vmid.parse::<u32>() else {
                return Ok(());
            };
            authorize_vm(&access, st, m, vmid, rest, p)
        }
        _ => Ok(()),
    }
}

fn authorize_vm(
    access: &Access<'_>,
    st: &State,
    m: &str,
    vmid: u32,
    seg: &[&str],
    p: &Params,
) -> Result<(), ApiError> {
    let vm_path = format!("/vms/{vmid}");
    let need = |privs: &[&str]| access.need(st, &vm_path, privs);
    match (m, seg) {
        ("GET", [] | ["config"] | ["pending"] | ["status", "current"]) => need(&["VM.Audit"]),
        ("GET", ["agent", ..]) => need(&["VM.Monitor"]),
        ("POST", ["status", _]) => need(&["VM.PowerMgmt"]),
        ("DELETE", []) => need(&["VM.Allocate"]),
        ("POST", ["clone"]) => authorize_clone(access, st, vmid, p),
        ("POST" | "PUT", ["config"]) => {
            need(CONFIG_ANY)?;
            authorize_config(access, st, &vm_path, p)
        }
        _ => Ok(()),
    }
}

/// Clone: `VM.Clone` on the source and `VM.Allocate` on the new id or the
/// pool (an `and`/`or` rule, so a bare "Permission check failed"), then
/// space on the target storage and `SDN.Use` on every bridge.
fn authorize_clone(access: &Access<'_>, st: &State, vmid: u32, p: &Params) -> Result<(), ApiError> {
    let src = format!("/vms/{vmid}");
    let allocate_new = p
        .get("newid")
        .is_some_and(|id| access.has_any(st, &format!("/vms/{id}"), &["VM.Allocate"]));
    let allocate_pool = p
        .get("pool")
        .is_some_and(|pool| access.has_any(st, &format!("/pool/{pool}"), &["VM.Allocate"]));
    if !access.has_any(st, &src, &["VM.Clone"]) || !(allocate_new || allocate_pool) {
        return Err(denied(""));
    }
    let config = st.vms.get(&vmid).map(|vm| &vm.config);
    let storages: BTreeSet<String> = match p.get("storage") {
        Some(s) => BTreeSet::from([s.to_owned()]),
        None => config
            .into_iter()
            .flatten()
            .filter(|(k, _)| config_key_privs(k).is_some_and(|p| p == ["VM.Config.Disk"]))
            .filter(|(_, v)| !v.contains("media=cdrom"))
            .filter_map(|(_, v)| disk_storage(v).map(str::to_owned))
            .collect(),
    };
    for storage in storages {
        access.need(
            st,
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
        )?;
    }
    for (key, value) in config.into_iter().flatten() {
        if key.starts_with("net")
            && let Some(bridge) = net_bridge(value)
        {
            let path = format!("/sdn/zones/localnetwork/{bridge}");
            access.need(st, &path, &["SDN.Use"])?;
        }
        if key.starts_with("hostpci")
            && let Some(id) = pci_mapping(value)
        {
            access.need(st, &format!("/mapping/pci/{id}"), &["Mapping.Use"])?;
        }
    }
    Ok(())
}

/// A config update: each key set or deleted needs its group's privilege;
/// mapped PCI devices `Mapping.Use`, disks space on their storage.
fn authorize_config(
    access: &Access<'_>,
    st: &State,
    vm_path: &str,
    p: &Params,
) -> Result<(), ApiError> {
    let deleted = p
        .get("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|k| !k.is_empty())
                .map(|k| (k.to_owned(), String::new()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let set = p
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "delete" | "digest" | "revert" | "skiplock"))
        .map(|(k, v)| (k.clone(), v.clone()));
    for (key, value) in set.chain(deleted) {
        let Some(privs) = config_key_privs(&key) else {
            continue;
        };
        access.need(st, vm_path, privs)?;
        if key.starts_with("hostpci")
            && let Some(id) = pci_mapping(&value)
        {
            access.need(st, &format!("/mapping/pci/{id}"), &["Mapping.Use"])?;
        }
        if privs == ["VM.Config.Disk"]
            && let Some(storage) = disk_storage(&value)
            && !value.contains("media=cdrom")
        {
            let path = format!("/storage/{storage}");
            access.need(st, &path, &["Datastore.AllocateSpace"])?;
        }
    }
    Ok(())
}

/// Drops the rows of `/cluster/resources` the token may not see: guests
/// without `VM.Audit`, storages without `Datastore.Audit`, pools without
/// `Pool.Audit` (node rows stay; their figures need `Sys.Audit`).
pub(crate) fn filter_resources(config: &PveConfig, st: &State, rows: &mut Value) {
    let Ok(access) = Access::of(config) else {
        return;
    };
    if access.unrestricted() {
        return;
    }
    let Some(rows) = rows.as_array_mut() else {
        return;
    };
    rows.retain(|row| {
        let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default();
        match text("type") {
            "qemu" | "lxc" => {
                let vmid = row.get("vmid").and_then(Value::as_u64).unwrap_or_default();
                access.has_any(st, &format!("/vms/{vmid}"), &["VM.Audit"])
            }
            "storage" => access.has_any(
                st,
                &format!("/storage/{}", text("storage")),
                &["Datastore.Audit"],
            ),
            "pool" => access.has_any(st, &format!("/pool/{}", text("pool")), &["Pool.Audit"]),
            _ => true,
        }
    });
}

/// `GET /access/permissions[?path=]`: the token's effective privileges,
/// by path, each with whether it propagates (1) or not (0). Without a
/// path, every path that carries an ACL entry, and `/`.
pub(crate) fn permissions(config: &PveConfig, st: &State, p: &Params) -> Result<Value, ApiError> {
    p.only(|k| matches!(k, "path" | "userid"))?;
    let access = Access::of(config).map_err(|e| ApiError::die(e.to_string()))?;
    let paths: BTreeSet<String> = match p.get("path") {
        Some(path) => BTreeSet::from([normalize(path)]),
        None => std::iter::once("/".to_owned())
            .chain(access.acls.iter().map(|a| normalize(&a.path)))
            .collect(),
    };
    let mut out = serde_json::Map::new();
    for path in paths {
        let mut privs = access.walk(&path);
        for extra in access.held(st, &path) {
            privs.entry(extra).or_insert(false);
        }
        let map: serde_json::Map<String, Value> = privs
            .into_iter()
            .map(|(k, prop)| (k, json!(u8::from(prop))))
            .collect();
        out.insert(path, Value::Object(map));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostSpec, RoleSpec};

    fn config(acls: Vec<AclSpec>) -> PveConfig {
        let mut cfg = PveConfig::with_hosts(vec![HostSpec {
            name: "pve-01".into(),
            memory_mib: 1024,
            cores: 2,
            threads: None,
            storages: vec![],
            online: true,
        }]);
        cfg.roles = vec![RoleSpec {
            id: "Workers".into(),
            privs: vec!["VM.Audit".into(), "VM.PowerMgmt".into()],
        }];
        cfg.acls = acls;
        cfg
    }

    fn acl(path: &str, role: &str, propagate: bool) -> AclSpec {
        AclSpec {
            path: path.into(),
            role: role.into(),
            propagate,
        }
    }

    #[test]
    fn the_deepest_path_with_entries_wins_and_only_propagating_ones_inherit() {
        let cfg = config(vec![
            acl("/", "PVEAuditor", true),
            acl("/vms", "Workers", true),
            acl("/nodes/pve-01", "NoAccess", false),
        ]);
        let access = Access::of(&cfg).unwrap();
        assert!(access.walk("/vms/100").contains_key("VM.PowerMgmt"));
        assert!(!access.walk("/vms/100").contains_key("Datastore.Audit"));
        assert!(
            access
                .walk("/storage/local")
                .contains_key("Datastore.Audit")
        );
        assert!(access.walk("/nodes/pve-01").is_empty());
        assert!(access.walk("/nodes/pve-01/x").contains_key("Sys.Audit"));
    }

    #[test]
    fn a_missing_privilege_is_named_with_its_path() {
        let cfg = config(vec![acl("/", "Workers", true)]);
        let st = State::new(&cfg, 1, 0).unwrap();
        let err = authorize(
            &cfg,
            &st,
            "DELETE",
            &["nodes", "pve-01", "qemu", "100"],
            &Params::default(),
        )
        .unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(
            err.message,
            "Permission check failed (/vms/100, VM.Allocate)"
        );
        let ok = authorize(
            &cfg,
            &st,
            "POST",
            &["nodes", "pve-01", "qemu", "100", "status", "start"],
            &Params::default(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn config_keys_need_their_group() {
        let cfg = config(vec![acl("/", "PVEVMAdmin", true)]);
        let st = State::new(&cfg, 1, 0).unwrap();
        let p = Params::from_pairs([("hostpci0", "mapping=gpu,pcie=1")]);
        let err = authorize(
            &cfg,
            &st,
            "PUT",
            &["nodes", "pve-01", "qemu", "100", "config"],
            &p,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Permission check failed (/mapping/pci/gpu, Mapping.Use)"
        );
    }

    #[test]
    fn unknown_roles_are_refused() {
        let cfg = config(vec![acl("/", "Nope", true)]);
        assert!(Access::of(&cfg).is_err());
    }
}
