//! Typed requests and answers of the endpoints Tidepool uses (facts §3).
//!
//! Proxmox is loose with JSON types: numbers arrive as strings (`nextid`,
//! `memory`, `mhz`), booleans as `0`/`1`, lists as `;`- or `,`-joined
//! strings. The deserializers here accept every form the facts list, and
//! the types expose what Tidepool reasons about.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::power::VmState;
use crate::props::{self, HostPci, Smbios1};

/// Lenient deserializers for Proxmox's loosely typed JSON.
mod de {
    use super::*;

    pub(super) fn value_u64(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Value::String(s) => {
                let s = s.trim();
                let s = s.strip_prefix("current=").unwrap_or(s);
                let s = s.split(',').next().unwrap_or(s);
                s.parse::<u64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| *f >= 0.0)
                        .map(|f| f as u64)
                })
            }
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
    }

    pub(super) fn value_f64(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(super) fn value_bool(v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
            Value::String(s) => matches!(s.as_str(), "1" | "on" | "yes" | "true"),
            _ => false,
        }
    }

    pub(super) fn value_string(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    pub(super) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?
            .as_ref()
            .and_then(value_u64))
    }

    pub(super) fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(opt_u64(d)?.unwrap_or(0))
    }

    pub(super) fn u32_req<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = Value::deserialize(d)?;
        value_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {v}")))
    }

    pub(super) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Value>::deserialize(d)?
            .as_ref()
            .and_then(value_f64))
    }

    pub(super) fn bool01<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(Option::<Value>::deserialize(d)?
            .as_ref()
            .is_some_and(value_bool))
    }

    pub(super) fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?
            .map(|s| props::parse_tags(&s))
            .unwrap_or_default())
    }

    pub(super) fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?
            .map(|s| {
                s.split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }
}

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

/// Parameters of `POST /nodes/{node}/qemu/{vmid}/clone`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneRequest {
    /// The new VM id (required).
    pub newid: u32,
    /// The new VM's name (a DNS name).
    pub name: Option<String>,
    /// Target node; needs shared storage.
    pub target: Option<String>,
    /// Full (`true`) or linked (`false`) clone; `None` is the server's
    /// default (linked for templates).
    pub full: Option<bool>,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// Resource pool to add the new VM to.
    pub pool: Option<String>,
    /// Description (applied only when non-empty).
    pub description: Option<String>,
}

impl CloneRequest {
    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("newid", self.newid.to_string())];
        let mut opt = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                f.push((k, v.clone()));
            }
        };
        opt("name", &self.name);
        opt("target", &self.target);
        opt("storage", &self.storage);
        opt("pool", &self.pool);
        opt("description", &self.description);
        if let Some(full) = self.full {
            f.push(("full", if full { "1" } else { "0" }.to_owned()));
        }
        f
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/config`, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct VmConfig {
    /// Name.
    pub name: Option<String>,
    /// Cores per socket.
    pub cores: Option<u32>,
    /// Sockets.
    pub sockets: Option<u32>,
    /// Memory in MiB (`[current=]<MiB>`, a string on PVE 8.1+).
    pub memory_mib: Option<u64>,
    /// Balloon target in MiB; 0 disables ballooning.
    pub balloon_mib: Option<u64>,
    /// Tags, normalised.
    pub tags: Vec<String>,
    /// Description.
    pub description: Option<String>,
    /// `smbios1`, decoded; `None` when absent or undecodable.
    pub smbios1: Option<Smbios1>,
    /// The MAC address of `net0`.
    pub net0_mac: Option<String>,
    /// `hostpciN` devices by N.
    pub hostpci: BTreeMap<u8, HostPci>,
    /// The config lock (`clone`, `backup`, …).
    pub lock: Option<String>,
    /// SHA-1 digest of the config, for optimistic updates.
    pub digest: Option<String>,
    /// Whether it is a template.
    pub template: bool,
    /// Every key as returned.
    pub raw: BTreeMap<String, Value>,
}

impl VmConfig {
    /// Builds the typed view from the `data` object.
    pub fn from_raw(raw: BTreeMap<String, Value>) -> Self {
        let s = |k: &str| raw.get(k).and_then(de::value_string);
        let n = |k: &str| raw.get(k).and_then(de::value_u64);
        let hostpci = raw
            .iter()
            .filter_map(|(k, v)| {
                let idx: u8 = k.strip_prefix("hostpci")?.parse().ok()?;
                Some((idx, HostPci::parse(v.as_str()?)))
            })
            .collect();
        Self {
            name: s("name"),
            cores: n("cores").and_then(|v| u32::try_from(v).ok()),
            sockets: n("sockets").and_then(|v| u32::try_from(v).ok()),
            memory_mib: n("memory"),
            balloon_mib: n("balloon"),
            tags: s("tags").map(|t| props::parse_tags(&t)).unwrap_or_default(),
            description: s("description"),
            smbios1: s("smbios1").and_then(|v| Smbios1::parse(&v).ok()),
            net0_mac: s("net0").and_then(|v| props::net_mac(&v)),
            hostpci,
            lock: s("lock"),
            digest: s("digest"),
            template: raw.get("template").is_some_and(de::value_bool),
            raw,
        }
    }

    /// The SMBIOS UUID, the VM's identity beside its VMID.
    pub fn smbios_uuid(&self) -> Option<&str> {
        self.smbios1.as_ref()?.uuid.as_deref()
    }
}

/// Cloud-init settings of a config update (facts §3.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInit {
    /// `ciuser`.
    pub user: Option<String>,
    /// `citype`: `nocloud`, `configdrive2` or `opennebula`.
    pub citype: Option<String>,
    /// `cicustom`, e.g. `user=local:snippets/u.yaml`.
    pub custom: Option<String>,
    /// SSH public keys, plain text (percent-encoded on the way out).
    pub ssh_keys: Option<String>,
    /// `ipconfigN` values by N, e.g. `ip=dhcp`.
    pub ipconfig: BTreeMap<u8, String>,
    /// `nameserver`.
    pub nameserver: Option<String>,
    /// `searchdomain`.
    pub searchdomain: Option<String>,
}

/// A VM config change, for `PUT` (synchronous) or `POST` (asynchronous)
/// `/nodes/{node}/qemu/{vmid}/config`. Unset fields are left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigUpdate {
    /// New name.
    pub name: Option<String>,
    /// Cores per socket.
    pub cores: Option<u32>,
    /// Sockets.
    pub sockets: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Balloon in MiB.
    pub balloon_mib: Option<u64>,
    /// The complete tag list (replaces the old one); sent `;`-joined.
    pub tags: Option<Vec<String>>,
    /// Description.
    pub description: Option<String>,
    /// `smbios1`; text fields go out base64-encoded with `base64=1`.
    pub smbios1: Option<Smbios1>,
    /// `hostpciN` devices to set, by N.
    pub hostpci: BTreeMap<u8, HostPci>,
    /// Cloud-init keys.
    pub cloud_init: CloudInit,
    /// Keys to remove (`delete=`), e.g. `hostpci0`, `tags`.
    pub delete: Vec<String>,
    /// Only apply if the config still has this digest.
    pub digest: Option<String>,
}

impl ConfigUpdate {
    /// The form fields to send. `;` and `+` in values are percent-encoded
    /// by the form encoder, as the server's `&`/`;` splitting requires.
    pub fn form(&self) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| f.push((k.to_owned(), v));
        if let Some(v) = &self.name {
            put("name", v.clone());
        }
        if let Some(v) = self.cores {
            put("cores", v.to_string());
        }
        if let Some(v) = self.sockets {
            put("sockets", v.to_string());
        }
        if let Some(v) = self.memory_mib {
            put("memory", v.to_string());
        }
        if let Some(v) = self.balloon_mib {
            put("balloon", v.to_string());
        }
        if let Some(v) = &self.tags {
            put("tags", props::format_tags(v));
        }
        if let Some(v) = &self.description {
            put("description", v.clone());
        }
        if let Some(v) = &self.smbios1 {
            put("smbios1", v.to_property_string());
        }
        for (n, dev) in &self.hostpci {
            put(&format!("hostpci{n}"), dev.to_property_string());
        }
        let ci = &self.cloud_init;
        if let Some(v) = &ci.user {
            put("ciuser", v.clone());
        }
        if let Some(v) = &ci.citype {
            put("citype", v.clone());
        }
        if let Some(v) = &ci.custom {
            put("cicustom", v.clone());
        }
        if let Some(v) = &ci.ssh_keys {
            put("sshkeys", props::encode_sshkeys(v));
        }
        for (n, v) in &ci.ipconfig {
            put(&format!("ipconfig{n}"), v.clone());
        }
        if let Some(v) = &ci.nameserver {
            put("nameserver", v.clone());
        }
        if let Some(v) = &ci.searchdomain {
            put("searchdomain", v.clone());
        }
        if !self.delete.is_empty() {
            put("delete", self.delete.join(","));
        }
        if let Some(v) = &self.digest {
            put("digest", v.clone());
        }
        f
    }

    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.form().iter().all(|(k, _)| k == "digest")
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current` (the parts Tidepool uses).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    pub status: VmState,
    /// QMP's view: `running`, `paused`, `prelaunch`, …
    #[serde(default)]
    pub qmpstatus: Option<VmState>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Seconds running.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    /// vCPUs.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub cpus: Option<u64>,
    /// Configured memory, bytes.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    /// QEMU's pid while running.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    /// Whether the guest agent is enabled in the config.
    #[serde(default, deserialize_with = "de::bool01")]
    pub agent: bool,
    /// The config lock.
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags, normalised.
    #[serde(default, deserialize_with = "de::tags")]
    pub tags: Vec<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "de::bool01")]
    pub template: bool,
}

impl VmStatus {
    /// Whether QEMU runs.
    pub fn is_running(&self) -> bool {
        self.status.is_running()
    }
}

/// Options of `status/shutdown`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownOptions {
    /// Seconds to wait for the guest (server default 60).
    pub timeout_secs: Option<u64>,
    /// Hard-stop when the timeout passes instead of failing the task.
    pub force_stop: bool,
}

/// Options of `DELETE /nodes/{node}/qemu/{vmid}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Also remove the VMID from backup, replication and HA config.
    pub purge: bool,
    /// Also delete volumes named for the VMID that the config does not
    /// reference.
    pub destroy_unreferenced_disks: bool,
}

/// A task id, `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`
/// (facts §3.9). Displays as the original string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    /// The node that runs the task; poll it there.
    pub node: String,
    /// Task type, e.g. `qmclone`, `qmstart`.
    pub kind: String,
    /// Task object id (for `qmclone` the *source* VMID); may be empty.
    pub id: String,
    /// `user@realm` or `user@realm!token`.
    pub user: String,
    /// Start time, unix seconds.
    pub starttime: i64,
}

/// A string that is not a UPID.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a UPID")]
pub struct UpidParseError(pub String);

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UpidParseError(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
            return Err(bad());
        }
        let node = parts[1];
        let node_ok =
            !node.is_empty() && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let hex_ok = parts[2..5]
            .iter()
            .all(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !node_ok || !hex_ok || parts[5].is_empty() || parts[7].is_empty() {
            return Err(bad());
        }
        Ok(Self {
            raw: s.to_owned(),
            node: node.to_owned(),
            kind: parts[5].to_owned(),
            id: parts[6].to_owned(),
            user: parts[7].to_owned(),
            starttime: i64::from_str_radix(parts[4], 16).map_err(|_| bad())?,
        })
    }
}

impl Upid {
    /// The UPID string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.raw)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub upid: String,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// Task type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Once stopped: `OK`, `WARNINGS: n`, or the error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// `user@realm` (the token name is in `tokenid`).
    #[serde(default)]
    pub user: String,
    /// Token name, for token-owned tasks.
    #[serde(default)]
    pub tokenid: Option<String>,
}

impl TaskStatus {
    /// Whether the task has finished.
    pub fn is_stopped(&self) -> bool {
        self.status == "stopped"
    }

    /// Whether it finished successfully (`OK` or `WARNINGS: n`).
    pub fn succeeded(&self) -> bool {
        self.is_stopped()
            && self
                .exitstatus
                .as_deref()
                .is_some_and(crate::error::exit_status_is_ok)
    }
}

/// One line of a task log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskLogLine {
    /// 1-based line number.
    pub n: u64,
    /// Text.
    pub t: String,
}

/// One address a guest interface reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestAddress {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// One interface from the guest agent's `network-get-interfaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInterface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// MAC address, lower-case, if reported.
    pub hardware_address: Option<String>,
    /// Addresses that parsed.
    pub addresses: Vec<GuestAddress>,
}

#[derive(Deserialize)]
pub(crate) struct RawAgentResult {
    #[serde(default)]
    pub result: Vec<RawGuestInterface>,
}

#[derive(Deserialize)]
pub(crate) struct RawGuestInterface {
    name: String,
    #[serde(rename = "hardware-address", default)]
    hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    ip_addresses: Vec<RawGuestIp>,
}

#[derive(Deserialize)]
struct RawGuestIp {
    #[serde(rename = "ip-address")]
    ip_address: String,
    #[serde(default, deserialize_with = "de::opt_u64")]
    prefix: Option<u64>,
}

impl From<RawGuestInterface> for GuestInterface {
    fn from(raw: RawGuestInterface) -> Self {
        Self {
            name: raw.name,
            hardware_address: raw.hardware_address,
            addresses: raw
                .ip_addresses
                .into_iter()
                .filter_map(|ip| {
                    // IPv6 link-local addresses may carry a zone: fe80::1%eth0.
                    let text = ip.ip_address.split('%').next().unwrap_or("");
                    Some(GuestAddress {
                        addr: text.parse().ok()?,
                        prefix: ip.prefix.and_then(|p| u8::try_from(p).ok()).unwrap_or(0),
                    })
                })
                .collect(),
        }
    }
}

/// One device entry of a PCI mapping's `map` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciMapEntry {
    /// The node that has the device.
    pub node: Option<String>,
    /// PCI path(s) with domain, e.g. `0000:01:00.0`.
    pub path: Option<String>,
    /// `vendor:device`.
    pub id: Option<String>,
    /// IOMMU group.
    pub iommugroup: Option<u32>,
    /// The property string as returned.
    pub raw: String,
}

impl PciMapEntry {
    fn parse(raw: &str) -> Self {
        Self {
            node: props::property(raw, "node"),
            path: props::property(raw, "path"),
            id: props::property(raw, "id"),
            iommugroup: props::property(raw, "iommugroup").and_then(|g| g.parse().ok()),
            raw: raw.to_owned(),
        }
    }
}

/// A diagnostic of `?check-node=`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MappingCheck {
    /// `warning`, `error`, …
    pub severity: String,
    /// The message.
    pub message: String,
}

/// An entry of `GET /cluster/mapping/pci`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciMapping {
    /// Mapping id, used as `hostpciN: mapping=<id>`.
    pub id: String,
    /// Description.
    pub description: Option<String>,
    /// Devices, one entry per node and device.
    pub map: Vec<PciMapEntry>,
    /// Checks for the node asked about, if any.
    pub checks: Vec<MappingCheck>,
}

#[derive(Deserialize)]
pub(crate) struct RawPciMapping {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    map: Vec<String>,
    #[serde(default)]
    checks: Vec<MappingCheck>,
}

impl From<RawPciMapping> for PciMapping {
    fn from(raw: RawPciMapping) -> Self {
        Self {
            id: raw.id,
            description: raw.description,
            map: raw.map.iter().map(|m| PciMapEntry::parse(m)).collect(),
            checks: raw.checks,
        }
    }
}

impl PciMapping {
    /// The device entries on `node`.
    pub fn devices_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PciMapEntry> {
        self.map
            .iter()
            .filter(move |m| m.node.as_deref() == Some(node))
    }
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
    fn a_config_with_string_memory_tags_smbios_and_a_mapped_gpu_is_typed() {
        let raw: BTreeMap<String, Value> = serde_json::from_value(json!({
            "name": "worker-1", "cores": 4, "sockets": 1, "memory": "8192", "balloon": 0,
            "tags": "tidepool;claim-abc", "description": "claim abc",
            "smbios1": "uuid=6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly8xMC4wLjAuMS8=,base64=1",
            "net0": "virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=1",
            "hostpci0": "mapping=gpu,pcie=1", "lock": "clone",
            "digest": "0123456789abcdef0123456789abcdef01234567", "template": 1
        }))
        .unwrap();
        let c = VmConfig::from_raw(raw);
        assert_eq!(c.memory_mib, Some(8192));
        assert_eq!(c.balloon_mib, Some(0));
        assert_eq!(c.tags, vec!["claim-abc", "tidepool"]);
        assert_eq!(
            c.smbios_uuid(),
            Some("6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0")
        );
        assert_eq!(
            c.smbios1.as_ref().unwrap().serial.as_deref(),
            Some("ds=nocloud;s=http://10.0.0.1/")
        );
        assert_eq!(c.net0_mac.as_deref(), Some("BC:24:11:12:34:56"));
        assert_eq!(c.hostpci[&0].mapping.as_deref(), Some("gpu"));
        assert_eq!(c.lock.as_deref(), Some("clone"));
        assert!(c.template);
        let old = VmConfig::from_raw(serde_json::from_value(json!({"memory": 2048})).unwrap());
        assert_eq!(old.memory_mib, Some(2048));
        let current =
            VmConfig::from_raw(serde_json::from_value(json!({"memory": "current=4096"})).unwrap());
        assert_eq!(current.memory_mib, Some(4096));
    }

    #[test]
    fn a_config_update_renders_the_form_the_server_expects() {
        let u = ConfigUpdate {
            tags: Some(vec!["Tidepool".into(), "claim-abc".into()]),
            smbios1: Some(Smbios1 {
                uuid: Some("u".into()),
                serial: Some("ds=nocloud;s=http://h/".into()),
                other: vec![],
            }),
            hostpci: BTreeMap::from([(0, HostPci::mapped("gpu"))]),
            delete: vec!["hostpci1".into(), "balloon".into()],
            ..ConfigUpdate::default()
        };
        let f: BTreeMap<String, String> = u.form().into_iter().collect();
        assert_eq!(f["tags"], "claim-abc;tidepool");
        assert_eq!(
            f["smbios1"],
            "uuid=u,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly9oLw==,base64=1"
        );
        assert_eq!(f["hostpci0"], "mapping=gpu,pcie=1");
        assert_eq!(f["delete"], "hostpci1,balloon");
        assert!(ConfigUpdate::default().is_empty());
        assert!(!u.is_empty());
    }

    #[test]
    fn a_upid_parses_into_its_parts_and_displays_unchanged() {
        let s = "UPID:pve-mp:00000ACD:00006AE8:679A423B:qmclone:112:capmox@pve!capi:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(u.node, "pve-mp");
        assert_eq!(u.kind, "qmclone");
        assert_eq!(u.id, "112");
        assert_eq!(u.user, "capmox@pve!capi");
        assert_eq!(u.starttime, 0x679A423B);
        assert_eq!(u.to_string(), s);
        assert!("UPID:x".parse::<Upid>().is_err());
        assert!("UPID:n:1:2:3:vzdump::root@pam:".parse::<Upid>().is_ok());
    }

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

    #[test]
    fn pci_map_strings_are_split_into_fields() {
        let m: PciMapping = serde_json::from_value::<RawPciMapping>(json!({
            "id": "gpu", "type": "pci", "digest": "x",
            "map": ["id=10de:2204,node=pve-02,path=0000:01:00.0,iommugroup=14"]
        }))
        .unwrap()
        .into();
        let on = m.devices_on("pve-02").next().unwrap();
        assert_eq!(on.path.as_deref(), Some("0000:01:00.0"));
        assert_eq!(on.iommugroup, Some(14));
        assert_eq!(m.devices_on("pve-01").count(), 0);
    }
}
