//! [`GuestOs`] over the Talos API: each call dials the worker at its
//! address with the talosconfig's client certificate (`join.talosconfigFrom`)
//! and asks it directly, as `talosctl -e <ip> -n <ip>` does.
//!
//! Kubelet and containerd failures are the `Failed` events among those
//! the node keeps for each service (Talos' restart runner records one
//! each time a service exits and is started again), so a crash loop shows
//! as a growing count until the next boot.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tidepool_controller::ports::{
    GuestOs, GuestService, ProviderError, ProviderErrorKind, ProviderResult,
};
use tidepool_talos::{RebootMode, TalosClient, TalosContext, TalosError};

/// How long one call to a worker's Talos API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The workers' Talos API, reached with one talosconfig context.
#[derive(Clone, Debug)]
pub struct TalosGuest {
    context: TalosContext,
    port: u16,
}

impl TalosGuest {
    /// Workers reached on `port` with `context`'s credentials (its
    /// endpoints are not used: each call dials the worker itself).
    pub fn new(context: TalosContext, port: u16) -> Self {
        Self { context, port }
    }

    async fn client(&self, ip: IpAddr) -> ProviderResult<TalosClient> {
        let mut context = self.context.clone();
        context.endpoints = vec![SocketAddr::new(ip, self.port).to_string()];
        TalosClient::connect(&context, CALL_TIMEOUT)
            .await
            .map_err(|e| classify(&e, "connecting to", ip))
    }

    /// Asks the worker to shut down, forced: by the time Tidepool asks,
    /// the node is drained and deleted, so nothing is left to wait for.
    ///
    /// # Errors
    /// The Talos API could not be reached or refused.
    pub async fn shutdown(&self, ip: IpAddr) -> ProviderResult<()> {
        self.client(ip)
            .await?
            .shutdown(true)
            .await
            .map_err(|e| classify(&e, "shutting down through", ip))?;
        Ok(())
    }
}

/// How a Talos error counts: retried when Talos says it is worth it.
pub(crate) fn kind_of(e: &TalosError) -> ProviderErrorKind {
    if e.is_retryable() {
        ProviderErrorKind::Transient
    } else {
        ProviderErrorKind::Permanent
    }
}

/// A Talos error as a provider error naming the operation and machine.
fn classify(e: &TalosError, what: &str, ip: IpAddr) -> ProviderError {
    ProviderError::new(kind_of(e), format!("{what} the Talos API of {ip}: {e}"))
}

impl GuestOs for TalosGuest {
    async fn services(&self, ip: IpAddr) -> ProviderResult<Vec<GuestService>> {
        let services = self
            .client(ip)
            .await?
            .service_list()
            .await
            .map_err(|e| classify(&e, "listing the services through", ip))?;
        Ok(services
            .into_iter()
            .map(|s| GuestService {
                id: s.id,
                state: s.state,
                healthy: s.healthy,
                failures: s.failures,
            })
            .collect())
    }

    async fn restart_service(&self, ip: IpAddr, id: &str) -> ProviderResult<()> {
        self.client(ip)
            .await?
            .service_restart(id)
            .await
            .map_err(|e| classify(&e, &format!("restarting {id} through"), ip))?;
        Ok(())
    }

    async fn reboot(&self, ip: IpAddr) -> ProviderResult<()> {
        self.client(ip)
            .await?
            .reboot(RebootMode::Default)
            .await
            .map_err(|e| classify(&e, "rebooting through", ip))?;
        Ok(())
    }

    async fn wipe_ephemeral(&self, ip: IpAddr) -> ProviderResult<()> {
        self.client(ip)
            .await?
            .wipe_ephemeral()
            .await
            .map_err(|e| classify(&e, "wiping EPHEMERAL through", ip))?;
        Ok(())
    }

    async fn version(&self, ip: IpAddr) -> ProviderResult<String> {
        let version = self
            .client(ip)
            .await?
            .version()
            .await
            .map_err(|e| classify(&e, "reading the version through", ip))?;
        Ok(version.tag)
    }

    async fn upgrade(&self, ip: IpAddr, image: &str, stage: bool) -> ProviderResult<()> {
        self.client(ip)
            .await?
            .upgrade(image, stage)
            .await
            .map_err(|e| classify(&e, &format!("upgrading to {image} through"), ip))?;
        Ok(())
    }
}
