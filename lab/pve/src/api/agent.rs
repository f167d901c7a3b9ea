//! The guest agent: the network interfaces a running guest reports.

use serde_json::{Value, json};

use super::R;
use super::power::agent_enabled;
use crate::error::ApiError;
use crate::lab::Shared;
use crate::options;

pub(super) fn agent_interfaces(shared: &Shared, node: &str, vmid: u32) -> R {
    let st = shared.state();
    let vm = st.vm_on(node, vmid)?;
    if !agent_enabled(vm) {
        return Err(ApiError::die("No QEMU guest agent configured"));
    }
    if !vm.running {
        return Err(ApiError::die(format!("VM {vmid} is not running")));
    }
    let Some(addrs) = &vm.agent else {
        return Err(ApiError::die("QEMU guest agent is not running"));
    };
    let mac = vm
        .config
        .get("net0")
        .and_then(|n| options::mac_of(n))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let ips: Vec<Value> = addrs
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => {
                json!({ "ip-address": v4.to_string(), "ip-address-type": "ipv4", "prefix": 24 })
            }
            std::net::IpAddr::V6(v6) => {
                json!({ "ip-address": v6.to_string(), "ip-address-type": "ipv6", "prefix": 64 })
            }
        })
        .collect();
    let stats = json!({ "rx-bytes": 0, "rx-packets": 0, "rx-errs": 0, "rx-dropped": 0,
                        "tx-bytes": 0, "tx-packets": 0, "tx-errs": 0, "tx-dropped": 0 });
    Ok(json!({ "result": [
        { "name": "lo", "hardware-address": "00:00:00:00:00:00",
          "ip-addresses": [
              { "ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8 },
              { "ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128 }],
          "statistics": stats },
        { "name": "eth0", "hardware-address": mac, "ip-addresses": ips, "statistics": stats },
    ]})
    .into())
}
