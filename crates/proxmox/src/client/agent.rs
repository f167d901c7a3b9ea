//! The guest agent: the interfaces a guest reports and its routable
//! addresses; "agent not running" answers become `AgentNotReady`.

use std::net::IpAddr;

use super::ProxmoxClient;
use super::call::Call;
use crate::error::{self, Cause, ProxmoxError};
use crate::types::{GuestInterface, RawAgentResult};

impl ProxmoxClient {
    /// `GET …/agent/network-get-interfaces`, every interface as reported.
    ///
    /// # Errors
    /// `AgentNotReady` while the VM or its agent is not running (or the
    /// agent timed out); "No QEMU guest agent configured" is `Permanent`.
    pub async fn agent_interfaces(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<GuestInterface>, ProxmoxError> {
        let op = format!("asking the guest agent of VM {vmid} on {node} for its addresses");
        let id = vmid.to_string();
        let call = Call::get(&[
            "nodes",
            node,
            "qemu",
            &id,
            "agent",
            "network-get-interfaces",
        ]);
        let result: Result<RawAgentResult, ProxmoxError> = self.get(&op, call).await;
        match result {
            Ok(raw) => Ok(raw.result.into_iter().map(GuestInterface::from).collect()),
            Err(e) => Err(agent_error(e)),
        }
    }

    /// The guest's routable addresses: IPv4 and IPv6 of every interface,
    /// without loopback and link-local addresses, in the agent's order.
    ///
    /// # Errors
    /// As [`ProxmoxClient::agent_interfaces`].
    pub async fn agent_addresses(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<IpAddr>, ProxmoxError> {
        let interfaces = self.agent_interfaces(node, vmid).await?;
        Ok(interfaces
            .into_iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| i.addresses)
            .map(|a| a.addr)
            .filter(|a| routable(*a))
            .collect())
    }
}

/// Whether an address is worth handing to other systems.
fn routable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

fn agent_error(e: ProxmoxError) -> ProxmoxError {
    let not_ready = matches!(
        e.cause(),
        Cause::Api { status: 500, message } if error::is_agent_not_ready(message)
    );
    if !not_ready {
        return e;
    }
    match e {
        ProxmoxError::Permanent { op, source, .. }
        | ProxmoxError::Transient { op, source }
        | ProxmoxError::NotFound { op, source } => ProxmoxError::AgentNotReady { op, source },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_addresses_are_not_routable() {
        for a in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"] {
            assert!(!routable(a.parse().unwrap()), "{a}");
        }
        for a in ["10.0.0.5", "192.168.1.20", "2001:db8::5", "fd00::1"] {
            assert!(routable(a.parse().unwrap()), "{a}");
        }
    }
}
