//! Cluster PCI mappings (the GPUs a VM may be given).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::R;
use super::config::digest;
use crate::error::ApiError;
use crate::lab::Shared;
use crate::params::Params;

fn mapping_json(m: &crate::config::PciMapping) -> Value {
    let map: Vec<String> = m
        .devices
        .iter()
        .map(|d| {
            let mut s = format!("id={},node={},path={}", d.id, d.node, d.path);
            if let Some(g) = d.iommugroup {
                s.push_str(&format!(",iommugroup={g}"));
            }
            s
        })
        .collect();
    let mut v = json!({ "id": m.id, "type": "pci", "map": map,
                        "digest": digest(&BTreeMap::from([(m.id.clone(), map.join(" "))])) });
    if let (Some(d), Some(obj)) = (&m.description, v.as_object_mut()) {
        obj.insert("description".into(), d.clone().into());
    }
    v
}

pub(super) fn pci_mappings(shared: &Shared, p: &Params) -> Value {
    let check = p.get("check-node");
    let st = shared.state();
    Value::Array(
        st.pci_mappings
            .iter()
            .map(|m| {
                let mut v = mapping_json(m);
                if let (Some(node), Some(obj)) = (check, v.as_object_mut()) {
                    let checks: Vec<Value> = if m.devices.iter().any(|d| d.node == node) {
                        Vec::new()
                    } else {
                        vec![json!({ "severity": "warning",
                                     "message": format!("No mapping for node '{node}'.") })]
                    };
                    obj.insert("checks".into(), checks.into());
                }
                v
            })
            .collect(),
    )
}

pub(super) fn pci_mapping(shared: &Shared, id: &str) -> R {
    let st = shared.state();
    st.pci_mappings
        .iter()
        .find(|m| m.id == id)
        .map(|m| mapping_json(m).into())
        .ok_or_else(|| ApiError::die(format!("PCI mapping '{id}' not found")))
}
