//! Requests and answers about one VM: clone parameters, its typed config,
//! config updates (with cloud-init), its current status and the options of
//! shutdown and delete.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::de;
use crate::power::VmState;
use crate::props::{self, HostPci, Smbios1};

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
}
