//! The guest agent's report of network interfaces and addresses, raw and
//! typed.

use std::net::IpAddr;

use serde::Deserialize;

use super::de;

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
