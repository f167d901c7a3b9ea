//! The fake of the worker's operating system ([`GuestOs`]): each machine
//! (by address) has its services; every operation asked for is recorded;
//! a test says which operation heals which machine, and that operation
//! then clears the problems of the machine's node and makes it Ready.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Fake;
use crate::ports::{GuestOs, GuestService, ProviderResult};

/// The guest side of the fake world.
#[derive(Debug, Default)]
pub struct FakeGuests {
    /// Services by machine; a machine not listed runs kubelet and
    /// containerd without failures.
    pub services: BTreeMap<IpAddr, Vec<GuestService>>,
    /// Operations asked for, in order: the machine and `restart kubelet`,
    /// `reboot` or `wipe-ephemeral`.
    pub ops: Vec<(IpAddr, String)>,
    /// The operation that heals each machine (as in `ops`).
    pub heals: BTreeMap<IpAddr, String>,
}

/// Kubelet and containerd, running, no failures.
fn running() -> Vec<GuestService> {
    ["containerd", "kubelet"]
        .into_iter()
        .map(|id| GuestService {
            id: id.to_owned(),
            state: "Running".to_owned(),
            healthy: Some(true),
            failures: 0,
        })
        .collect()
}

impl Fake {
    /// Records `op` on the machine at `ip`; when it is the one that heals
    /// it, its node turns Ready without problems and its services start
    /// afresh (a reboot clears the failure counts).
    fn guest_op(&self, ip: IpAddr, op: String) {
        let mut w = self.world();
        w.guest.ops.push((ip, op.clone()));
        if w.guest.heals.get(&ip) != Some(&op) {
            return;
        }
        w.guest.services.remove(&ip);
        let node = w
            .claims
            .values()
            .find(|c| c.status.ip == Some(ip))
            .map(|c| c.name.clone());
        if let Some(node) = node.and_then(|n| w.nodes.get_mut(&n)) {
            node.ready = true;
            node.problems.clear();
        }
    }

    /// The operations asked of the machine of claim `name`, in order.
    pub fn guest_ops_of(&self, name: &str) -> Vec<String> {
        let w = self.world();
        let ip = w.claims.get(name).and_then(|c| c.status.ip);
        w.guest
            .ops
            .iter()
            .filter(|(at, _)| Some(*at) == ip)
            .map(|(_, op)| op.clone())
            .collect()
    }
}

impl GuestOs for Fake {
    async fn services(&self, ip: IpAddr) -> ProviderResult<Vec<GuestService>> {
        self.take("guest_services")?;
        Ok(self
            .world()
            .guest
            .services
            .get(&ip)
            .cloned()
            .unwrap_or_else(running))
    }

    async fn restart_service(&self, ip: IpAddr, id: &str) -> ProviderResult<()> {
        self.take("restart_service")?;
        self.guest_op(ip, format!("restart {id}"));
        Ok(())
    }

    async fn reboot(&self, ip: IpAddr) -> ProviderResult<()> {
        self.take("reboot")?;
        self.guest_op(ip, "reboot".to_owned());
        Ok(())
    }

    async fn wipe_ephemeral(&self, ip: IpAddr) -> ProviderResult<()> {
        self.take("wipe_ephemeral")?;
        self.guest_op(ip, "wipe-ephemeral".to_owned());
        Ok(())
    }
}
