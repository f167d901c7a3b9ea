//! PCI resource mappings (`/cluster/mapping/pci`) with their per-node
//! device entries and checks.

use serde::Deserialize;

use crate::props;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
