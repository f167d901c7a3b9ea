//! [`Joiner`] over Talos: apply the rendered worker config in maintenance
//! mode (`talos-api`), or serve it as nocloud user-data named by the VM's
//! SMBIOS serial (`nocloud`). The join method also carries the way to the
//! workers' OS afterwards ([`GuestOs`], through [`TalosGuest`]) when a
//! talosconfig is configured.
//!
//! Labels a kubelet may not set on its own Node (NodeRestriction) are left
//! out of the machine config; the executor's Label step sets them through
//! the API once the node is Ready.

use std::net::IpAddr;
use std::time::Duration;

use tidepool_core::NodeMetadata;
use tidepool_talos::nocloud::{KubeadmVars, render_kubeadm_cloud_config};
use tidepool_talos::render::node_may_set_label;
use tidepool_talos::{
    ErrorKind, NocloudServer, TalosError, WorkerIdentity, apply_maintenance, render_worker_config,
};
use tracing::info;

use tidepool_controller::claim::Claim;
use tidepool_controller::ports::{
    GuestOs, GuestService, Joiner, ProviderError, ProviderErrorKind, ProviderResult,
};

use crate::guest::TalosGuest;

/// How long one maintenance-mode apply may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The configured join method with what it needs.
pub enum LiveJoiner {
    /// Talos API apply in maintenance mode.
    TalosApi {
        /// The base `worker.yaml` (a secret: never logged).
        base_config: String,
        /// Talos API port.
        port: u16,
        /// The workers' OS for day-2 operations, when a talosconfig is
        /// configured.
        guest: Option<TalosGuest>,
    },
    /// nocloud user-data served by Tidepool.
    Nocloud {
        /// The base `worker.yaml`, or for cloud-init the `#cloud-config`
        /// template (secret: never logged).
        base_config: String,
        /// The user-data server.
        server: NocloudServer,
        /// For cloud-init images: the `kubeadm join` command that fills the
        /// template's `{{join_command}}` (secret). `None` for Talos images.
        join_command: Option<String>,
        /// The workers' OS for day-2 operations, when a talosconfig is
        /// configured.
        guest: Option<TalosGuest>,
    },
}

impl std::fmt::Debug for LiveJoiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TalosApi { port, .. } => f
                .debug_struct("TalosApi")
                .field("port", port)
                .finish_non_exhaustive(),
            Self::Nocloud { .. } => f.debug_struct("Nocloud").finish_non_exhaustive(),
        }
    }
}

fn render(base: &str, claim: &Claim, meta: &NodeMetadata) -> ProviderResult<String> {
    let mut identity = WorkerIdentity::new(claim.name.clone(), meta);
    identity.labels.retain(|k, _| node_may_set_label(k));
    render_worker_config(base, &identity).map_err(|e| {
        ProviderError::new(
            ProviderErrorKind::Permanent,
            format!("rendering the worker config for {}: {e}", claim.name),
        )
    })
}

fn classify(e: &TalosError, claim: &str) -> ProviderError {
    ProviderError::new(
        crate::guest::kind_of(e),
        format!("delivering the config of {claim}: {e}"),
    )
}

impl Joiner for LiveJoiner {
    async fn prepare(&self, claim: &Claim, meta: &NodeMetadata) -> ProviderResult<Option<String>> {
        match self {
            Self::TalosApi { .. } => Ok(None),
            Self::Nocloud {
                base_config,
                server,
                join_command,
                ..
            } => {
                let user_data = match join_command {
                    None => render(base_config, claim, meta)?,
                    Some(join) => {
                        let vars = KubeadmVars {
                            hostname: claim.name.clone(),
                            join_command: join.trim().to_owned(),
                            labels: meta
                                .labels
                                .iter()
                                .filter(|(k, _)| node_may_set_label(k))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                            taints: meta.taints.clone(),
                        };
                        render_kubeadm_cloud_config(base_config, &vars).map_err(|e| {
                            ProviderError::new(
                                ProviderErrorKind::Permanent,
                                format!(
                                    "rendering the cloud-init user-data for {}: {e}",
                                    claim.name
                                ),
                            )
                        })?
                    }
                };
                let meta_data = format!("instance-id: {0}\nlocal-hostname: {0}\n", claim.name);
                let reg = server.register(user_data, meta_data).map_err(|e| {
                    ProviderError::new(
                        ProviderErrorKind::Permanent,
                        format!("registering nocloud seed: {e}"),
                    )
                })?;
                Ok(Some(tidepool_talos::nocloud::smbios_serial(&reg.url)))
            }
        }
    }

    async fn deliver(&self, claim: &Claim, ip: IpAddr, meta: &NodeMetadata) -> ProviderResult<()> {
        let Self::TalosApi {
            base_config, port, ..
        } = self
        else {
            return Ok(());
        };
        let config = render(base_config, claim, meta)?;
        match apply_maintenance(ip, *port, config.as_bytes(), None, APPLY_TIMEOUT).await {
            Ok(_) => Ok(()),
            // The maintenance API is gone: the machine already has a
            // configuration (a previous life of this process applied it).
            // Whether it joined is checked by the next step's timeout.
            Err(e) if matches!(e.kind(), ErrorKind::Tls | ErrorKind::Unimplemented) => {
                info!(claim = %claim.name, %ip, "machine already left maintenance mode; treating the config as delivered");
                Ok(())
            }
            Err(e) => Err(classify(&e, &claim.name)),
        }
    }

    async fn shutdown_os(&self, claim: &Claim, ip: IpAddr) -> ProviderResult<()> {
        if let Self::Nocloud {
            join_command: Some(_),
            ..
        } = self
        {
            return Err(ProviderError::new(
                ProviderErrorKind::Permanent,
                "cloud-init machines have no Talos API",
            ));
        }
        self.guest()?.shutdown(ip).await?;
        info!(claim = %claim.name, %ip, "Talos shutdown requested");
        Ok(())
    }
}

impl LiveJoiner {
    /// The workers' OS, or why there is none.
    fn guest(&self) -> ProviderResult<&TalosGuest> {
        let guest = match self {
            Self::TalosApi { guest, .. } | Self::Nocloud { guest, .. } => guest.as_ref(),
        };
        guest.ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Permanent,
                "no talosconfig configured (join.talosconfigFrom): the workers' OS cannot be reached",
            )
        })
    }
}

impl GuestOs for LiveJoiner {
    async fn services(&self, ip: IpAddr) -> ProviderResult<Vec<GuestService>> {
        self.guest()?.services(ip).await
    }

    async fn restart_service(&self, ip: IpAddr, id: &str) -> ProviderResult<()> {
        self.guest()?.restart_service(ip, id).await
    }

    async fn reboot(&self, ip: IpAddr) -> ProviderResult<()> {
        self.guest()?.reboot(ip).await
    }

    async fn wipe_ephemeral(&self, ip: IpAddr) -> ProviderResult<()> {
        self.guest()?.wipe_ephemeral(ip).await
    }

    async fn version(&self, ip: IpAddr) -> ProviderResult<String> {
        self.guest()?.version(ip).await
    }

    async fn upgrade(&self, ip: IpAddr, image: &str, stage: bool) -> ProviderResult<()> {
        self.guest()?.upgrade(ip, image, stage).await
    }
}
