//! Proxmox property strings and list values: tags (facts §3.12), the
//! `smbios1` option with its `base64=1` encoding, `hostpciN` device values,
//! the MAC address inside a `netN` value, and the percent-encoding that
//! `sshkeys` expects (facts §3.6).
//!
//! Everything here is pure string handling, so it is unit-tested in place.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Splits a property string such as `virtio=BC:24:11:00:00:01,bridge=vmbr0`
/// into `(key, value)` pairs. A part without `=` has no key (`None`): it is
/// the value of the format's default key.
pub fn split_property_string(value: &str) -> Vec<(Option<String>, String)> {
    value
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
            None => (None, part.to_owned()),
        })
        .collect()
}

/// The value of `key` in a property string, if present.
pub fn property(value: &str, key: &str) -> Option<String> {
    split_property_string(value)
        .into_iter()
        .find(|(k, _)| k.as_deref() == Some(key))
        .map(|(_, v)| v)
}

/// Whether `tag` is a valid Proxmox tag: `^[a-z0-9_][a-z0-9_\-+.]*$`,
/// compared case-insensitively as the server does.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let body = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.');
    (first.is_ascii_alphanumeric() || first == '_') && chars.all(body)
}

/// Parses a tag list as Proxmox stores it: separated by `;`, `,` or
/// whitespace, then lower-cased, de-duplicated and sorted (the server's
/// default `tag-style`). Empty entries are dropped.
pub fn parse_tags(value: &str) -> Vec<String> {
    let mut tags: Vec<String> = value
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Renders tags the way the server stores them: normalised as
/// [`parse_tags`] does and joined with `;`.
pub fn format_tags<S: AsRef<str>>(tags: &[S]) -> String {
    let joined = tags.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(";");
    parse_tags(&joined).join(";")
}

/// The text fields of `smbios1` that `base64=1` applies to (all but `uuid`).
const SMBIOS_TEXT_FIELDS: [&str; 6] = [
    "manufacturer",
    "product",
    "version",
    "serial",
    "sku",
    "family",
];

/// The `smbios1` option of a VM, decoded.
///
/// With `base64=1` Proxmox stores every text field base64-encoded (so a
/// serial may hold `;`, `=` and `/`, as `ds=nocloud;s=http://…/` does);
/// the fields here are always the decoded text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Smbios1 {
    /// The SMBIOS system UUID, which Proxmox regenerates on clone.
    pub uuid: Option<String>,
    /// The system serial number.
    pub serial: Option<String>,
    /// The other text fields (`manufacturer`, `product`, `version`, `sku`,
    /// `family`) in the order they appeared.
    pub other: Vec<(String, String)>,
}

/// Why an `smbios1` value could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("smbios1 field '{field}' is not valid base64 text")]
pub struct Smbios1Error {
    /// The field that failed to decode.
    pub field: String,
}

impl Smbios1 {
    /// Parses an `smbios1` value such as
    /// `uuid=…,serial=ZHM9bm9jbG91ZA==,base64=1`.
    ///
    /// # Errors
    /// [`Smbios1Error`] when `base64=1` is set and a text field is not
    /// valid base64 of UTF-8 text.
    pub fn parse(value: &str) -> Result<Self, Smbios1Error> {
        let pairs = split_property_string(value);
        let encoded = pairs.iter().any(|(k, v)| {
            k.as_deref() == Some("base64") && matches!(v.as_str(), "1" | "on" | "yes" | "true")
        });
        let decode = |field: &str, v: &str| -> Result<String, Smbios1Error> {
            if !encoded {
                return Ok(v.to_owned());
            }
            STANDARD
                .decode(v.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Smbios1Error {
                    field: field.to_owned(),
                })
        };
        let mut out = Self::default();
        for (key, v) in pairs {
            match key.as_deref() {
                Some("uuid") => out.uuid = Some(v),
                Some("serial") => out.serial = Some(decode("serial", &v)?),
                Some(k) if SMBIOS_TEXT_FIELDS.contains(&k) => {
                    out.other.push((k.to_owned(), decode(k, &v)?));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Renders the value to send: `uuid` in clear, every text field
    /// base64-encoded and `base64=1` appended when there is any text field,
    /// so serials with `;`, `=` or `,` survive.
    pub fn to_property_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(uuid) = &self.uuid {
            parts.push(format!("uuid={uuid}"));
        }
        let mut text: Vec<(&str, &str)> = Vec::new();
        if let Some(serial) = &self.serial {
            text.push(("serial", serial));
        }
        text.extend(self.other.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in &text {
            parts.push(format!("{k}={}", STANDARD.encode(v.as_bytes())));
        }
        if !text.is_empty() {
            parts.push("base64=1".to_owned());
        }
        parts.join(",")
    }
}

/// A `hostpciN` value: either raw host addresses or a cluster PCI mapping,
/// plus options (`pcie`, `x-vga`, `rombar`, …) as they appeared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPci {
    /// Raw `host=` device address(es), `;`-separated (root@pam only).
    pub host: Option<String>,
    /// A cluster mapping id (`mapping=`), what tokens must use.
    pub mapping: Option<String>,
    /// Other options in order, e.g. `("pcie", "1")`.
    pub options: Vec<(String, String)>,
}

impl HostPci {
    /// A device from the cluster PCI mapping `id`, as PCIe (needs q35).
    pub fn mapped(id: impl Into<String>) -> Self {
        Self {
            host: None,
            mapping: Some(id.into()),
            options: vec![("pcie".to_owned(), "1".to_owned())],
        }
    }

    /// Parses a `hostpciN` value such as `mapping=gpu,pcie=1` or
    /// `0000:01:00.0,x-vga=1`.
    pub fn parse(value: &str) -> Self {
        let mut out = Self {
            host: None,
            mapping: None,
            options: Vec::new(),
        };
        for (key, v) in split_property_string(value) {
            match key.as_deref() {
                None | Some("host") => out.host = Some(v),
                Some("mapping") => out.mapping = Some(v),
                Some(k) => out.options.push((k.to_owned(), v)),
            }
        }
        out
    }

    /// Whether option `key` is set to a true value.
    pub fn flag(&self, key: &str) -> bool {
        self.options
            .iter()
            .any(|(k, v)| k == key && matches!(v.as_str(), "1" | "on" | "yes" | "true"))
    }

    /// Renders the value to send.
    pub fn to_property_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(mapping) = &self.mapping {
            parts.push(format!("mapping={mapping}"));
        }
        parts.extend(self.options.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join(",")
    }
}

/// The MAC address inside a `netN` value (`virtio=BC:24:11:…,bridge=…`):
/// the value of the leading model key, when it looks like a MAC.
pub fn net_mac(value: &str) -> Option<String> {
    split_property_string(value)
        .into_iter()
        .filter(|(k, _)| k.as_deref() != Some("bridge"))
        .map(|(_, v)| v)
        .find(|v| v.len() == 17 && v.split(':').count() == 6)
}

/// Percent-encodes a value for the `sshkeys` option, which accepts only
/// `[-%a-zA-Z0-9_.!~*'()]`: spaces become `%20`, newlines `%0A`.
pub fn encode_sshkeys(keys: &str) -> String {
    let mut out = String::with_capacity(keys.len());
    for b in keys.bytes() {
        let c = char::from(b);
        if c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_on_semicolons_commas_and_whitespace_and_come_back_sorted_lowercase_unique() {
        assert_eq!(
            parse_tags("Tidepool;claim-abc,tidepool pool.small\tgo-proxmox+cloud-init"),
            vec![
                "claim-abc",
                "go-proxmox+cloud-init",
                "pool.small",
                "tidepool"
            ]
        );
        assert!(parse_tags("").is_empty());
        assert!(parse_tags(" ;; ,").is_empty());
    }

    #[test]
    fn tags_are_formatted_as_the_server_stores_them() {
        assert_eq!(format_tags(&["b", "A", "a"]), "a;b");
        assert_eq!(format_tags::<&str>(&[]), "");
    }

    #[test]
    fn tag_validity_follows_the_pve_tag_regex() {
        for ok in ["tidepool", "go-proxmox+cloud-init", "_x", "0a.b", "Pool"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", "-bad", "+x", ".x", "a b", "a;b", "ä"] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn a_base64_smbios1_decodes_its_serial_and_keeps_the_uuid_in_clear() {
        let s = Smbios1::parse(
            "uuid=6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly8xMC4wLjAuMS8=,base64=1",
        )
        .unwrap();
        assert_eq!(
            s.uuid.as_deref(),
            Some("6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0")
        );
        assert_eq!(s.serial.as_deref(), Some("ds=nocloud;s=http://10.0.0.1/"));
    }

    #[test]
    fn a_plain_smbios1_is_read_as_is() {
        let s = Smbios1::parse("uuid=u-1,serial=ABC123,manufacturer=Tidepool").unwrap();
        assert_eq!(s.serial.as_deref(), Some("ABC123"));
        assert_eq!(
            s.other,
            vec![("manufacturer".to_owned(), "Tidepool".to_owned())]
        );
    }

    #[test]
    fn a_broken_base64_smbios1_field_is_an_error_naming_the_field() {
        let err = Smbios1::parse("uuid=u,serial=***,base64=1").unwrap_err();
        assert_eq!(err.field, "serial");
    }

    #[test]
    fn smbios1_encoding_base64s_the_text_fields_and_round_trips() {
        let s = Smbios1 {
            uuid: Some("u-1".into()),
            serial: Some("ds=nocloud;s=http://10.0.0.1/".into()),
            other: vec![],
        };
        let text = s.to_property_string();
        assert_eq!(
            text,
            "uuid=u-1,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly8xMC4wLjAuMS8=,base64=1"
        );
        assert_eq!(Smbios1::parse(&text).unwrap(), s);
        let uuid_only = Smbios1 {
            uuid: Some("u-2".into()),
            ..Smbios1::default()
        };
        assert_eq!(uuid_only.to_property_string(), "uuid=u-2");
    }

    #[test]
    fn hostpci_values_parse_mappings_raw_hosts_and_options() {
        let m = HostPci::parse("mapping=gpu,pcie=1");
        assert_eq!(m.mapping.as_deref(), Some("gpu"));
        assert!(m.flag("pcie"));
        assert_eq!(m.to_property_string(), "mapping=gpu,pcie=1");
        let raw = HostPci::parse("0000:01:00.0;0000:01:00.1,x-vga=1");
        assert_eq!(raw.host.as_deref(), Some("0000:01:00.0;0000:01:00.1"));
        assert!(raw.flag("x-vga") && !raw.flag("pcie"));
        assert_eq!(HostPci::mapped("gpu"), m);
    }

    #[test]
    fn the_mac_is_found_in_a_net_value() {
        assert_eq!(
            net_mac("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1").as_deref(),
            Some("BC:24:11:AA:BB:CC")
        );
        assert_eq!(net_mac("bridge=vmbr0"), None);
    }

    #[test]
    fn sshkeys_are_percent_encoded_with_percent_twenty_for_spaces() {
        assert_eq!(
            encode_sshkeys("ssh-ed25519 AAAA+/= me@host\n"),
            "ssh-ed25519%20AAAA%2B%2F%3D%20me%40host%0A"
        );
    }
}
