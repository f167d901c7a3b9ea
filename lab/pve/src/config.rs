//! The emulated datacenter as a scenario declares it: hosts, storages, PCI
//! mappings, the VMs that exist at start, the API token and how long each
//! kind of task takes.
//!
//! Everything here deserializes from camelCase YAML or JSON and refuses
//! unknown fields, so a scenario file can embed a [`PveConfig`] directly.

use serde::{Deserialize, Serialize};

/// The whole emulated Proxmox VE cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PveConfig {
    /// The cluster nodes.
    pub hosts: Vec<HostSpec>,
    /// Cluster-wide PCI resource mappings (`/cluster/mapping/pci`).
    #[serde(default)]
    pub pci_mappings: Vec<PciMapping>,
    /// Resource pools that exist at start.
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// VMs (templates included) that exist at start.
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// The API token id, `user@realm!name`.
    #[serde(default = "default_token_id")]
    pub token_id: String,
    /// The API token secret (a UUID on real clusters).
    #[serde(default = "default_token_secret")]
    pub token_secret: String,
    /// Simulated durations of tasks.
    #[serde(default)]
    pub durations: PveDurations,
    /// Which error-body format to speak (facts §2.2).
    #[serde(default)]
    pub error_bodies: ErrorBodies,
    /// Roles besides the built-in ones (`pveum role add`).
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    /// The token's ACL entries (`pveum acl modify`). Without any, the
    /// token may do everything, as a `root@pam` token without privilege
    /// separation may.
    #[serde(default)]
    pub acls: Vec<AclSpec>,
}

/// A role: a named set of privileges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// Role id, e.g. `Tidepool`.
    pub id: String,
    /// Its privileges, e.g. `VM.Allocate`.
    pub privs: Vec<String>,
}

/// One ACL entry of the token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AclSpec {
    /// ACL path, e.g. `/`, `/vms/9001`, `/pool/tidepool`.
    pub path: String,
    /// A role id: built-in (`PVEVMAdmin`, …) or one of `roles`.
    pub role: String,
    /// Whether the entry holds on the paths below too.
    #[serde(default = "yes")]
    pub propagate: bool,
}

fn default_token_id() -> String {
    "root@pam!tidepool".to_owned()
}

fn default_token_secret() -> String {
    "0b7c5cc2-6f3e-4d0a-9a4f-2d1f3c7e9b11".to_owned()
}

impl PveConfig {
    /// A cluster of the given hosts with no VMs and default settings.
    pub fn with_hosts(hosts: Vec<HostSpec>) -> Self {
        Self {
            hosts,
            pci_mappings: Vec::new(),
            pools: Vec::new(),
            vms: Vec::new(),
            token_id: default_token_id(),
            token_secret: default_token_secret(),
            durations: PveDurations::default(),
            error_bodies: ErrorBodies::default(),
            roles: Vec::new(),
            acls: Vec::new(),
        }
    }
}

/// The error-body format of the emulated pve-http-server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorBodies {
    /// pve-http-server 5.2 and later (PVE 8.3/8.4): `{"data":null,"message":"…"}`.
    #[default]
    WithMessage,
    /// Older PVE 8: `{"data":null}`, the message only in the reason phrase.
    DataOnly,
}

/// One Proxmox VE node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    /// Node name, e.g. `pve-01`.
    pub name: String,
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Physical cores (summed over sockets).
    pub cores: u32,
    /// Logical CPUs; defaults to twice the cores.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Storages on this node.
    #[serde(default)]
    pub storages: Vec<StorageSpec>,
    /// Whether the node is online. An offline node answers 595 for its paths.
    #[serde(default = "yes")]
    pub online: bool,
}

fn yes() -> bool {
    true
}

/// One storage of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// Storage id, e.g. `local-lvm`.
    pub name: String,
    /// Plugin type, e.g. `lvmthin`, `dir`, `zfspool`, `rbd`.
    #[serde(default = "default_storage_kind")]
    pub kind: String,
    /// Size in GiB.
    pub total_gib: u64,
    /// Free space in GiB.
    pub free_gib: u64,
    /// Whether the storage is shared between nodes.
    #[serde(default)]
    pub shared: bool,
}

fn default_storage_kind() -> String {
    "lvmthin".to_owned()
}

/// A cluster PCI resource mapping: one id, one or more devices per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PciMapping {
    /// Mapping id, used as `hostpciN: mapping=<id>`.
    pub id: String,
    /// Free-text description.
    #[serde(default)]
    pub description: Option<String>,
    /// The devices this id maps to.
    pub devices: Vec<PciDevice>,
}

/// One device of a PCI mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PciDevice {
    /// The node that has the device.
    pub node: String,
    /// PCI path with the 4-digit domain, e.g. `0000:01:00.0`.
    pub path: String,
    /// `vendor:device`, e.g. `10de:2204`.
    #[serde(default = "default_pci_id")]
    pub id: String,
    /// IOMMU group.
    #[serde(default)]
    pub iommugroup: Option<u32>,
}

fn default_pci_id() -> String {
    "10de:2204".to_owned()
}

/// A resource pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// Pool id.
    pub id: String,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A VM or template that exists when the lab starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// The VM id.
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Whether it is a template (`template: 1`).
    #[serde(default)]
    pub template: bool,
    /// Cores per socket.
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Boot disk size in GiB.
    #[serde(default = "default_disk")]
    pub disk_gib: u64,
    /// Storage of the boot disk; defaults to the node's first storage.
    #[serde(default)]
    pub storage: Option<String>,
    /// Tags (normalised like a config update).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether it is running at start.
    #[serde(default)]
    pub running: bool,
    /// The pool it belongs to.
    #[serde(default)]
    pub pool: Option<String>,
    /// Further raw config keys (`hostpci0`, `agent`, `smbios1`, …) as they
    /// would appear in GET config.
    #[serde(default)]
    pub extra_config: std::collections::BTreeMap<String, String>,
}

fn default_cores() -> u32 {
    2
}

fn default_memory() -> u64 {
    2048
}

fn default_disk() -> u64 {
    32
}

/// Simulated durations of the emulated tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PveDurations {
    /// A full clone, in milliseconds of simulated time.
    pub full_clone_ms: u64,
    /// A linked clone.
    pub linked_clone_ms: u64,
    /// The part of a clone (full or linked) spent allocating or
    /// snapshotting its volume under the storage's lock (PVE's
    /// `/var/lock/pve-manager/pve-storage-<id>` on the target node), which
    /// clones on one storage take one at a time; part of the clone's
    /// duration, not added to it.
    pub storage_lock_ms: u64,
    /// How long a clone waits for the storage's lock before its task fails
    /// with PVE's "can't lock file … got timeout" (PVE: 10 s).
    pub storage_lock_timeout_ms: u64,
    /// An async config update (`qmconfig`).
    pub config_ms: u64,
    /// `status/start` until QEMU runs.
    pub start_ms: u64,
    /// `status/shutdown` until the guest has powered off.
    pub shutdown_ms: u64,
    /// `status/stop`.
    pub stop_ms: u64,
    /// `status/reboot` (shutdown plus start).
    pub reboot_ms: u64,
    /// Destroying a VM.
    pub delete_ms: u64,
    /// The pvestatd cycle: how stale `/cluster/resources` rows are.
    pub status_interval_ms: u64,
    /// The delay before answering an unauthenticated call (real PVE: 3 s).
    pub unauthorized_delay_ms: u64,
}

impl Default for PveDurations {
    fn default() -> Self {
        Self {
            full_clone_ms: 60_000,
            linked_clone_ms: 5_000,
            storage_lock_ms: 2_000,
            storage_lock_timeout_ms: 10_000,
            config_ms: 500,
            start_ms: 3_000,
            shutdown_ms: 10_000,
            stop_ms: 1_000,
            reboot_ms: 15_000,
            delete_ms: 3_000,
            status_interval_ms: 10_000,
            unauthorized_delay_ms: 3_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_yaml_shaped_json_config_parses_with_defaults() {
        let cfg: PveConfig = serde_json::from_str(
            r#"{"hosts":[{"name":"pve-01","memoryMib":65536,"cores":16,
                 "storages":[{"name":"local-lvm","totalGib":500,"freeGib":400}]}],
                "vms":[{"vmid":9000,"node":"pve-01","name":"talos-small","template":true}],
                "durations":{"fullCloneMs":1000}}"#,
        )
        .unwrap();
        assert_eq!(cfg.hosts[0].storages[0].kind, "lvmthin");
        assert_eq!(cfg.vms[0].cores, 2);
        assert_eq!(cfg.durations.full_clone_ms, 1000);
        assert_eq!(cfg.durations.linked_clone_ms, 5000);
        assert_eq!(cfg.error_bodies, ErrorBodies::WithMessage);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<PveConfig>(r#"{"hosts":[],"bogus":1}"#);
        assert!(err.is_err());
    }
}
