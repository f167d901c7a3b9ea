//! VM configuration options: which keys exist, how each value is validated
//! and normalised (tags, `netN` MACs, `smbios1`, `hostpciN`, memory), and
//! how values are typed when GET config returns them.

use base64::Engine;

use crate::params::parse_int;

/// A small deterministic generator for MACs, UUIDs and digests.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x0005_eed0_f7e5_7b00)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A MAC under Proxmox's default OUI `BC:24:11`, uppercase.
    pub(crate) fn mac(&mut self) -> String {
        let b = self.next().to_le_bytes();
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
    }

    /// A random (version 4) UUID, lowercase.
    pub(crate) fn uuid(&mut self) -> String {
        let hi = self.next();
        let lo = self.next();
        let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

/// Keys whose values GET config returns as JSON numbers.
const NUMERIC: &[&str] = &[
    "cores",
    "sockets",
    "vcpus",
    "balloon",
    "onboot",
    "protection",
    "template",
    "numa",
    "acpi",
    "tablet",
    "kvm",
    "ciupgrade",
    "cpuunits",
    "localtime",
    "reboot",
    "freeze",
    "shares",
];

/// Keys that only root@pam may set (a token gets "only root can set …").
const ROOT_ONLY: &[&str] = &["args", "lock", "hookscript", "vmstatestorage", "skiplock"];

/// Keys applied at once even on a running VM; everything else stays
/// pending until the next full start (hotplug defaults to network,disk,usb).
pub(crate) fn hotpluggable(key: &str) -> bool {
    matches!(
        key,
        "name" | "description" | "tags" | "onboot" | "protection" | "agent" | "startup"
    ) || indexed(key, "net", 31)
        || is_cloudinit(key)
        || is_disk(key)
}

/// Whether the value of `key` is rendered as a JSON number.
pub(crate) fn numeric(key: &str) -> bool {
    NUMERIC.contains(&key)
}

fn indexed(key: &str, prefix: &str, max: u32) -> bool {
    key.strip_prefix(prefix)
        .and_then(|n| {
            if n.len() > 1 && n.starts_with('0') {
                None
            } else {
                n.parse::<u32>().ok()
            }
        })
        .is_some_and(|n| n <= max)
}

fn is_cloudinit(key: &str) -> bool {
    matches!(
        key,
        "ciuser"
            | "cipassword"
            | "citype"
            | "cicustom"
            | "sshkeys"
            | "nameserver"
            | "searchdomain"
            | "ciupgrade"
    ) || indexed(key, "ipconfig", 31)
}

fn is_disk(key: &str) -> bool {
    indexed(key, "scsi", 30)
        || indexed(key, "virtio", 15)
        || indexed(key, "sata", 5)
        || indexed(key, "ide", 3)
        || indexed(key, "unused", 255)
        || key == "efidisk0"
        || key == "tpmstate0"
}

/// Whether `key` is a VM option a config update may set.
pub(crate) fn known(key: &str) -> bool {
    matches!(
        key,
        "cores"
            | "sockets"
            | "vcpus"
            | "memory"
            | "balloon"
            | "shares"
            | "cpu"
            | "cpulimit"
            | "cpuunits"
            | "numa"
            | "name"
            | "description"
            | "tags"
            | "onboot"
            | "protection"
            | "template"
            | "agent"
            | "ostype"
            | "startup"
            | "boot"
            | "bios"
            | "machine"
            | "scsihw"
            | "smbios1"
            | "vmgenid"
            | "vga"
            | "acpi"
            | "tablet"
            | "kvm"
            | "localtime"
            | "hotplug"
            | "keyboard"
            | "meta"
            | "reboot"
            | "freeze"
    ) || indexed(key, "net", 31)
        || indexed(key, "hostpci", 15)
        || indexed(key, "serial", 3)
        || indexed(key, "usb", 13)
        || is_cloudinit(key)
        || is_disk(key)
}

/// Whether `key` is one only root@pam may set.
pub(crate) fn root_only(key: &str) -> bool {
    ROOT_ONLY.contains(&key)
}

/// Why a value was refused: a 400 parameter error or a 500 `die`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Param(String),
    Die(String),
}

/// Validates and normalises one option value.
pub(crate) fn normalize(key: &str, value: &str, rng: &mut Rng) -> Result<String, Refusal> {
    let p = Refusal::Param;
    match key {
        "cores" | "sockets" | "vcpus" => int_string(value, 1, 1024).map_err(p),
        "balloon" | "shares" | "cpuunits" => int_string(value, 0, 4_194_304).map_err(p),
        "memory" => {
            let n = value.strip_prefix("current=").unwrap_or(value);
            int_string(n, 16, 4_178_944).map_err(p)
        }
        "onboot" | "protection" | "template" | "numa" | "acpi" | "tablet" | "kvm" | "localtime"
        | "reboot" | "freeze" | "ciupgrade" => match value {
            "0" | "1" => Ok(value.to_owned()),
            _ => Err(p(format!("type check ('boolean') failed - got '{value}'"))),
        },
        "name" => {
            if dns_name(value) {
                Ok(value.to_owned())
            } else {
                Err(p(
                    "invalid format - value does not look like a valid DNS name".into(),
                ))
            }
        }
        "description" => {
            if value.chars().count() > 8192 {
                Err(p("value may only be 8192 characters long".into()))
            } else {
                Ok(value.to_owned())
            }
        }
        "tags" => normalize_tags(value).map_err(p),
        "citype" => match value {
            "nocloud" | "configdrive2" | "opennebula" => Ok(value.to_owned()),
            _ => Err(p(format!(
                "value '{value}' does not have a value in the enumeration 'configdrive2, nocloud, opennebula'"
            ))),
        },
        "sshkeys" => {
            if value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c))
            {
                Ok(value.to_owned())
            } else {
                Err(p(
                    "invalid format - invalid urlencoded string: ".to_owned() + value
                ))
            }
        }
        "smbios1" => normalize_smbios(value).map_err(p),
        _ if indexed(key, "net", 31) => normalize_net(value, rng).map_err(p),
        _ if indexed(key, "hostpci", 15) => normalize_hostpci(key, value),
        _ if indexed(key, "ipconfig", 31) => normalize_ipconfig(value).map_err(p),
        _ => Ok(value.to_owned()),
    }
}

fn int_string(value: &str, min: i64, max: i64) -> Result<String, String> {
    parse_int(value, min, max).map(|n| n.to_string())
}

/// Whether `s` is a `dns-name`: dot-joined labels of letters, digits and
/// inner hyphens.
pub(crate) fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

/// Normalises a tag list: split on `;`, `,` and whitespace, validate each
/// tag, lowercase, deduplicate, sort and join with `;`.
///
/// # Errors
/// The per-field message of a 400 for the first invalid tag.
pub fn normalize_tags(value: &str) -> Result<String, String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in value
        .split([';', ',', ' ', '\t', '\n'])
        .filter(|t| !t.is_empty())
    {
        let ok = tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
        if !ok {
            return Err(format!(
                "invalid format - invalid characters in tag '{tag}'"
            ));
        }
        tags.push(tag.to_ascii_lowercase());
    }
    tags.sort();
    tags.dedup();
    Ok(tags.join(";"))
}

/// Splits a property string into `(key, value)` pairs; a part without `=`
/// has no key (the default key).
pub(crate) fn prop_pairs(s: &str) -> Vec<(Option<String>, String)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
            None => (None, part.to_owned()),
        })
        .collect()
}

/// Looks up `key` in a property string.
pub(crate) fn prop(s: &str, key: &str) -> Option<String> {
    prop_pairs(s)
        .into_iter()
        .find(|(k, _)| k.as_deref() == Some(key))
        .map(|(_, v)| v)
}

const NIC_MODELS: &[&str] = &[
    "virtio",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
];

/// Normalises `netN`: `model[=MAC]` first (a missing MAC is generated),
/// then the other keys sorted.
fn normalize_net(value: &str, rng: &mut Rng) -> Result<String, String> {
    let mut model: Option<(String, Option<String>)> = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in prop_pairs(value) {
        match k {
            None => model = Some((v, None)),
            Some(k) if NIC_MODELS.contains(&k.as_str()) => model = Some((k, Some(v))),
            Some(k) if k == "model" => model = Some((v, None)),
            Some(k) if k == "macaddr" => {
                if let Some((_, mac)) = model.as_mut() {
                    *mac = Some(v);
                } else {
                    rest.push((k, v));
                }
            }
            Some(k) => rest.push((k, v)),
        }
    }
    let macaddr = rest
        .iter()
        .position(|(k, _)| k == "macaddr")
        .map(|i| rest.remove(i).1);
    let Some((model, mac)) = model else {
        return Err(
            "invalid format - format error\nnet.model: property is missing and it is not optional"
                .into(),
        );
    };
    if !NIC_MODELS.contains(&model.as_str()) {
        return Err(format!(
            "invalid format - format error\nnet.model: value '{model}' does not have a value in the enumeration"
        ));
    }
    let mac = mac
        .or(macaddr)
        .unwrap_or_else(|| rng.mac())
        .to_ascii_uppercase();
    rest.sort();
    let mut out = format!("{model}={mac}");
    for (k, v) in rest {
        out.push_str(&format!(",{k}={v}"));
    }
    Ok(out)
}

/// Replaces the MAC of a `netN` value with a fresh one.
pub(crate) fn regenerate_mac(value: &str, rng: &mut Rng) -> String {
    let mut out = Vec::new();
    for (k, v) in prop_pairs(value) {
        match k {
            Some(k) if NIC_MODELS.contains(&k.as_str()) => out.push(format!("{k}={}", rng.mac())),
            Some(k) => out.push(format!("{k}={v}")),
            None => out.push(v),
        }
    }
    out.join(",")
}

/// The MAC of a `netN` value.
pub(crate) fn mac_of(value: &str) -> Option<String> {
    prop_pairs(value)
        .into_iter()
        .find(|(k, _)| k.as_deref().is_some_and(|k| NIC_MODELS.contains(&k)))
        .map(|(_, v)| v)
}

/// `hostpciN`: `mapping=<id>` for tokens; raw `host=` is root@pam only.
fn normalize_hostpci(key: &str, value: &str) -> Result<String, Refusal> {
    let pairs = prop_pairs(value);
    let mapping = pairs.iter().any(|(k, _)| k.as_deref() == Some("mapping"));
    let host = pairs
        .iter()
        .any(|(k, _)| k.is_none() || k.as_deref() == Some("host"));
    if host || !mapping {
        return Err(Refusal::Die(format!(
            "only root can set '{key}' config for non-mapped devices"
        )));
    }
    Ok(value.to_owned())
}

fn normalize_ipconfig(value: &str) -> Result<String, String> {
    for (k, _) in prop_pairs(value) {
        match k.as_deref() {
            Some("ip" | "gw" | "ip6" | "gw6") => {}
            _ => {
                return Err(format!(
                    "invalid format - format error\nipconfig: invalid key in comma-separated list property: {}",
                    k.unwrap_or_default()
                ));
            }
        }
    }
    Ok(value.to_owned())
}

const SMBIOS_STRINGS: &[&str] = &[
    "version",
    "serial",
    "manufacturer",
    "product",
    "sku",
    "family",
];

/// `smbios1`: the string fields must look like base64 (they are base64
/// when `base64=1`), `uuid` must be a UUID.
fn normalize_smbios(value: &str) -> Result<String, String> {
    for (k, v) in prop_pairs(value) {
        let Some(k) = k else {
            return Err("invalid format - format error\nsmbios1: invalid key".into());
        };
        let ok = match k.as_str() {
            "uuid" => v.len() == 36 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
            "base64" => matches!(
                v.as_str(),
                "0" | "1" | "on" | "off" | "yes" | "no" | "true" | "false"
            ),
            s if SMBIOS_STRINGS.contains(&s) => base64_chars(&v),
            _ => {
                return Err(format!(
                    "invalid format - format error\nsmbios1.{k}: property is not defined in schema and the schema does not allow additional properties"
                ));
            }
        };
        if !ok {
            return Err(format!(
                "invalid format - format error\nsmbios1.{k}: value does not match the regex pattern"
            ));
        }
    }
    Ok(value.to_owned())
}

fn base64_chars(v: &str) -> bool {
    let body = v.trim_end_matches('=');
    !body.is_empty()
        && v.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// The SMBIOS serial of an `smbios1` value, decoded when `base64=1`.
pub(crate) fn smbios_serial(value: &str) -> Option<String> {
    let serial = prop(value, "serial")?;
    let b64 =
        prop(value, "base64").is_some_and(|b| matches!(b.as_str(), "1" | "on" | "yes" | "true"));
    if b64 {
        base64::engine::general_purpose::STANDARD
            .decode(serial.as_bytes())
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    } else {
        Some(serial)
    }
}

/// Replaces (or adds) the `uuid` of an `smbios1` value.
pub(crate) fn regenerate_smbios_uuid(value: &str, rng: &mut Rng) -> String {
    let mut parts: Vec<String> = prop_pairs(value)
        .into_iter()
        .filter(|(k, _)| k.as_deref() != Some("uuid"))
        .map(|(k, v)| match k {
            Some(k) => format!("{k}={v}"),
            None => v,
        })
        .collect();
    parts.insert(0, format!("uuid={}", rng.uuid()));
    parts.join(",")
}

/// Memory in MiB of a config's `memory` value (PVE's default is 512).
pub(crate) fn memory_mib(value: Option<&str>) -> u64 {
    value
        .map(|v| v.strip_prefix("current=").unwrap_or(v))
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Splits a `delete`/`revert` list on commas, semicolons and whitespace.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split([',', ';', ' ', '\t', '\0'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lowercased_deduplicated_sorted_and_joined_with_semicolons() {
        assert_eq!(
            normalize_tags("Tidepool, pool-gpu;tidepool  claim.x+1").unwrap(),
            "claim.x+1;pool-gpu;tidepool"
        );
        assert!(
            normalize_tags("-bad")
                .unwrap_err()
                .contains("invalid characters in tag")
        );
        assert!(normalize_tags("a/b").is_err());
    }

    #[test]
    fn a_nic_without_mac_gets_one_under_the_proxmox_oui() {
        let mut rng = Rng::new(1);
        let v = normalize_net("bridge=vmbr0,virtio,firewall=1", &mut rng).unwrap();
        assert!(v.starts_with("virtio=BC:24:11:"), "{v}");
        assert!(v.ends_with(",bridge=vmbr0,firewall=1"), "{v}");
        let v = normalize_net(
            "model=virtio,macaddr=bc:24:11:00:00:01,bridge=vmbr0",
            &mut rng,
        )
        .unwrap();
        assert_eq!(v, "virtio=BC:24:11:00:00:01,bridge=vmbr0");
    }

    #[test]
    fn a_base64_smbios_serial_is_decoded() {
        let v = "uuid=6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly8xMC4wLjAuMS8=,base64=1";
        assert!(normalize_smbios(v).is_ok());
        assert_eq!(smbios_serial(v).unwrap(), "ds=nocloud;s=http://10.0.0.1/");
        assert!(normalize_smbios("serial=ds=nocloud;s=x").is_err());
    }

    #[test]
    fn raw_host_pci_devices_are_refused_for_tokens() {
        assert_eq!(
            normalize_hostpci("hostpci0", "0000:01:00.0,pcie=1"),
            Err(Refusal::Die(
                "only root can set 'hostpci0' config for non-mapped devices".into()
            ))
        );
        assert!(normalize_hostpci("hostpci0", "mapping=gpu,pcie=1").is_ok());
    }

    #[test]
    fn generated_uuids_look_like_version_four_uuids() {
        let u = Rng::new(9).uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
