//! The fake of the worker's operating system ([`GuestOs`]): each machine
//! (by address) has its services; every operation asked for is recorded;
//! a test says which operation heals which machine, and that operation
//! then clears the problems of the machine's node and makes it Ready.
//! Each machine runs [`FAKE_OS_VERSION`] until upgraded: an upgrade
//! reboots the machine (its next version reading fails, as a rebooting
//! machine's does) into the new version, or into the old one when the
//! test said the new one fails to boot.

use std::collections::{BTreeMap, BTreeSet};
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
    /// The OS version of each machine upgraded so far; the others run
    /// [`FAKE_OS_VERSION`].
    pub versions: BTreeMap<IpAddr, String>,
    /// Machines whose upgrades fail to boot: they stay on their version.
    pub upgrade_rolls_back: BTreeSet<IpAddr>,
    /// Machines rebooting after an upgrade: their next version reading
    /// fails.
    pub rebooting: BTreeSet<IpAddr>,
}

/// The OS version every fake machine runs until upgraded.
pub const FAKE_OS_VERSION: &str = "v1.10.6";

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

    async fn version(&self, ip: IpAddr) -> ProviderResult<String> {
        self.take("guest_version")?;
        let mut w = self.world();
        if w.guest.rebooting.remove(&ip) {
            return Err(crate::ports::ProviderError::new(
                crate::ports::ProviderErrorKind::Transient,
                format!("{ip} is rebooting"),
            ));
        }
        Ok(w.guest
            .versions
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| FAKE_OS_VERSION.to_owned()))
    }

    async fn upgrade(&self, ip: IpAddr, image: &str, stage: bool) -> ProviderResult<()> {
        self.take("upgrade")?;
        let staged = if stage { " --stage" } else { "" };
        self.guest_op(ip, format!("upgrade {image}{staged}"));
        let mut w = self.world();
        w.guest.rebooting.insert(ip);
        if !w.guest.upgrade_rolls_back.contains(&ip) {
            let tag = image.rsplit(':').next().unwrap_or(image).to_owned();
            w.guest.versions.insert(ip, tag);
        }
        Ok(())
    }
}
