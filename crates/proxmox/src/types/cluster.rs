//! What the cluster reports about itself: the API version, nodes and their
//! status, the guest and storage rows of `/cluster/resources`, the VMs of a
//! node and resource pools.

use serde::Deserialize;
use serde_json::Value;

use super::de;
use crate::power::VmState;

/// `GET /version`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Version {
    /// E.g. `8.4.1`.
    pub version: String,
    /// E.g. `8.4`.
    #[serde(default)]
    pub release: String,
    /// The git commit of pve-manager.
    #[serde(default)]
    pub repoid: String,
}

/// One row of `GET /nodes`. Stats are absent without `Sys.Audit`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// CPU load, a fraction of `maxcpu`.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    /// Logical CPUs.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Memory used, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    /// Memory installed, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    /// Seconds since boot.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    /// SHA-256 of the node's API certificate, `AA:BB:…`.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

impl NodeInfo {
    /// Whether the node is online.
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

/// Memory figures of `GET /nodes/{node}/status`, bytes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MemoryStatus {
    /// Installed.
    #[serde(deserialize_with = "de::u64_or_zero")]
    pub total: u64,
    /// Used (`MemTotal − MemAvailable` on PVE 8.4).
    #[serde(deserialize_with = "de::u64_or_zero")]
    pub used: u64,
    /// The kernel's raw `MemFree`; `free + used ≠ total` in general.
    #[serde(deserialize_with = "de::u64_or_zero")]
    pub free: u64,
}

/// CPU figures of `GET /nodes/{node}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CpuInfo {
    /// Logical CPUs.
    #[serde(deserialize_with = "de::u64_or_zero")]
    pub cpus: u64,
    /// Physical cores summed over sockets.
    #[serde(default, deserialize_with = "de::u64_or_zero")]
    pub cores: u64,
    /// Sockets.
    #[serde(default, deserialize_with = "de::u64_or_zero")]
    pub sockets: u64,
    /// CPU model name.
    #[serde(default)]
    pub model: String,
}

/// `GET /nodes/{node}/status` (the parts Tidepool uses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NodeStatus {
    /// Memory.
    pub memory: MemoryStatus,
    /// CPUs.
    pub cpuinfo: CpuInfo,
    /// Seconds since boot.
    #[serde(default, deserialize_with = "de::u64_or_zero")]
    pub uptime: u64,
    /// E.g. `pve-manager/8.4.14/b502d23c55afcba1`.
    #[serde(default)]
    pub pveversion: Option<String>,
}

impl NodeStatus {
    /// Memory available for placement: `total − used` (facts §3.4).
    pub fn available_memory(&self) -> u64 {
        self.memory.total.saturating_sub(self.memory.used)
    }
}

/// A guest row of `GET /cluster/resources?type=vm`.
///
/// `lock` and `tags` are live; `name`, `status` and the stats lag by up to
/// a pvestatd cycle (~10 s), and a fresh clone shows `status: unknown`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ClusterVm {
    /// `qemu/<vmid>`.
    pub id: String,
    /// The VM id.
    #[serde(deserialize_with = "de::u32_req")]
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `running`, `stopped`, `unknown`, `paused`, …
    #[serde(default)]
    pub status: VmState,
    /// Name, once pvestatd has seen it.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
    /// Configured memory, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    /// vCPUs.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Memory in use, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    /// Tags, normalised.
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
    /// The config lock, e.g. `clone`.
    #[serde(default)]
    pub lock: Option<String>,
    /// The resource pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// HA state, when HA-managed.
    #[serde(default)]
    pub hastate: Option<String>,
}

/// A storage row of `GET /cluster/resources?type=storage`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ClusterStorage {
    /// `storage/<node>/<sid>`.
    pub id: String,
    /// Storage id.
    pub storage: String,
    /// The node this row describes.
    pub node: String,
    /// Plugin type: `lvmthin`, `dir`, `zfspool`, `rbd`, …
    #[serde(default)]
    pub plugintype: String,
    /// `available` or `unknown`.
    #[serde(default)]
    pub status: String,
    /// Whether shared between nodes.
    #[serde(default, deserialize_with = "de::bool01")]
    pub shared: bool,
    /// Content types, e.g. `images`, `rootdir`.
    #[serde(default, deserialize_with = "de::comma_list")]
    pub content: Vec<String>,
    /// Used bytes.
    #[serde(default, deserialize_with = "de::u64_or_zero")]
    pub disk: u64,
    /// Size in bytes.
    #[serde(default, deserialize_with = "de::u64_or_zero")]
    pub maxdisk: u64,
}

impl ClusterStorage {
    /// Free bytes.
    pub fn free(&self) -> u64 {
        self.maxdisk.saturating_sub(self.disk)
    }
}

/// A row of `GET /nodes/{node}/qemu`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NodeVm {
    /// The VM id.
    #[serde(deserialize_with = "de::u32_req")]
    pub vmid: u32,
    /// `running` or `stopped`.
    #[serde(default)]
    pub status: VmState,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// vCPUs.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub cpus: Option<u64>,
    /// Configured memory, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    /// Tags, normalised.
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
    /// The config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
}

/// A row of `GET /pools`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PoolInfo {
    /// Pool id.
    pub poolid: String,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawPoolDetails {
    #[serde(default)]
    pub members: Vec<Value>,
}

/// Keeps the guest members of a pool (storage members have no vmid).
pub(crate) fn guest_members(members: Vec<Value>) -> Vec<ClusterVm> {
    members
        .into_iter()
        .filter(|m| matches!(m.get("type").and_then(Value::as_str), Some("qemu" | "lxc")))
        .filter_map(|m| serde_json::from_value(m).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_sent_as_strings_and_booleans_as_integers_are_accepted() {
        let row: ClusterVm = serde_json::from_value(json!({
            "id": "qemu/120", "vmid": "120", "node": "pve-01", "type": "qemu",
            "status": "unknown", "lock": "clone", "template": 0, "tags": "b;a"
        }))
        .unwrap();
        assert_eq!(row.vmid, 120);
        assert!(!row.template);
        assert_eq!(row.tags, vec!["a", "b"]);
        let st: ClusterStorage = serde_json::from_value(json!({
            "id": "storage/pve-01/local-lvm", "storage": "local-lvm", "node": "pve-01",
            "shared": 1, "content": "images,rootdir", "disk": 100, "maxdisk": 400
        }))
        .unwrap();
        assert!(st.shared);
        assert_eq!(st.content, vec!["images", "rootdir"]);
        assert_eq!(st.free(), 300);
    }
}
