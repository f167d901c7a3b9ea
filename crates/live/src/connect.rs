//! Builds the live executor from a configuration: the Proxmox client, the
//! join method with its worker config, and the Kubernetes client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tidepool_cluster::{ClusterClient, client_from_kubeconfig, client_in_cluster};
use tidepool_core::config::{Config, JoinMethod, SecretRef};
use tidepool_proxmox::{ClientOptions, ProxmoxClient};
use tidepool_talos::nocloud::{NocloudOptions, NocloudServer};

use crate::join::LiveJoiner;
use crate::kube::KubeCluster;
use crate::pve::PveHypervisor;
use tidepool_controller::executor::Executor;
use tidepool_controller::ports::Clock;

/// The executor over the production adapters.
pub type LiveExecutor = Executor<PveHypervisor, LiveJoiner, KubeCluster, KubeCluster>;

/// The service layer over the live adapters.
pub type LiveService =
    tidepool_controller::service::Service<PveHypervisor, LiveJoiner, KubeCluster, KubeCluster>;

/// Why the live stack could not be built. Messages name the operation and
/// the setting or reference; the cause stays in `source` and never holds a
/// secret's value (an environment variable that is not UTF-8 is reported
/// as unset, and bytes that are not UTF-8 only by position).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// A secret's environment variable is not set (or not UTF-8).
    #[error("reading secret {reference}: the variable is not set")]
    SecretUnset {
        /// Where the secret was to come from.
        reference: String,
    },
    /// A secret's file could not be read.
    #[error("reading secret {reference} from {}", path.display())]
    SecretFile {
        /// Where the secret was to come from.
        reference: String,
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secret's Kubernetes Secret could not be read.
    #[error("reading secret {reference}")]
    SecretApi {
        /// Where the secret was to come from.
        reference: String,
        /// The API error.
        source: kube::Error,
    },
    /// The Kubernetes Secret has no such key.
    #[error("reading secret {reference}: the Secret has no key `{key}`")]
    SecretKeyMissing {
        /// Where the secret was to come from.
        reference: String,
        /// The key asked for.
        key: String,
    },
    /// A secret's value is not UTF-8.
    #[error("reading secret {reference}: the value is not UTF-8")]
    SecretNotUtf8 {
        /// Where the secret was to come from.
        reference: String,
        /// Where decoding stopped (no bytes of the value).
        source: std::str::Utf8Error,
    },
    /// The Proxmox client could not be built (its token included).
    #[error("setting up Proxmox provider {provider}")]
    Proxmox {
        /// Provider name.
        provider: String,
        /// Why.
        source: tidepool_proxmox::BuildError,
    },
    /// The Kubernetes client could not be built.
    #[error("setting up the Kubernetes client")]
    Kubernetes(#[source] tidepool_cluster::ClusterError),
    /// The nocloud user-data server could not listen.
    #[error("starting the nocloud server on {addr}")]
    Nocloud {
        /// Listen address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where the live stack connects.
#[derive(Clone)]
pub struct LiveOptions {
    /// Directory relative file references are resolved against (the
    /// configuration file's directory).
    pub config_dir: PathBuf,
    /// A kubeconfig; `None` for in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// The controller's clock. The clients' real-time pauses, such as
    /// Proxmox task polling, are its [`Clock::real`] durations, so a
    /// simulated minute is not overshot by real seconds.
    pub clock: Arc<dyn Clock>,
}

/// Proxmox client options on `clock`: task polls pause for the real time
/// their interval lasts on it, so a task's end is seen as soon in the
/// clock's time as it would be in real time.
fn client_options(clock: &dyn Clock) -> ClientOptions {
    let defaults = ClientOptions::default();
    let floor = std::time::Duration::from_millis(5);
    ClientOptions {
        polling: tidepool_proxmox::TaskPolling {
            initial: clock.real(defaults.polling.initial).max(floor),
            max: clock.real(defaults.polling.max).max(floor),
        },
        ..defaults
    }
}

impl std::fmt::Debug for LiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOptions")
            .field("config_dir", &self.config_dir)
            .field("kubeconfig", &self.kubeconfig)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Resolves a secret reference: an environment variable, a file (relative
/// to `base`), or a key of a Kubernetes Secret.
///
/// # Errors
/// One of the `ConnectError::Secret*` variants, naming the reference.
pub async fn resolve_secret(
    reference: &SecretRef,
    base: &Path,
    kube: &kube::Client,
    default_namespace: &str,
) -> Result<String, ConnectError> {
    let named = || reference.to_string();
    match reference {
        SecretRef::Env(var) => {
            std::env::var(var).map_err(|_| ConnectError::SecretUnset { reference: named() })
        }
        SecretRef::File(path) => {
            let path = base.join(path);
            std::fs::read_to_string(&path).map_err(|source| ConnectError::SecretFile {
                reference: named(),
                path,
                source,
            })
        }
        SecretRef::Secret {
            namespace,
            name,
            key,
        } => {
            let ns = namespace.as_deref().unwrap_or(default_namespace);
            let secret = Api::<Secret>::namespaced(kube.clone(), ns)
                .get(name)
                .await
                .map_err(|source| ConnectError::SecretApi {
                    reference: named(),
                    source,
                })?;
            let bytes = secret
                .data
                .and_then(|d| d.get(key).cloned())
                .ok_or_else(|| ConnectError::SecretKeyMissing {
                    reference: named(),
                    key: key.clone(),
                })?;
            // The error keeps only where decoding stopped, not the bytes.
            String::from_utf8(bytes.0).map_err(|e| ConnectError::SecretNotUtf8 {
                reference: named(),
                source: e.utf8_error(),
            })
        }
    }
}

/// Connects to the configured hypervisor and cluster.
///
/// # Errors
/// [`ConnectError`] naming what could not be reached or resolved.
pub async fn connect(
    config: Arc<Config>,
    options: &LiveOptions,
) -> Result<LiveExecutor, ConnectError> {
    let kube = match &options.kubeconfig {
        Some(path) => client_from_kubeconfig(path).await,
        None => client_in_cluster(),
    }
    .map_err(ConnectError::Kubernetes)?;
    let namespace = config.server.namespace.clone();
    let mut providers = config
        .pools
        .iter()
        .map(|p| p.provider.as_str())
        .collect::<Vec<_>>();
    providers.sort_unstable();
    providers.dedup();
    let [provider_name] = providers.as_slice() else {
        return Err(ConnectError::Unsupported(format!(
            "pools use {} providers; this version drives exactly one",
            providers.len()
        )));
    };
    let provider = config
        .providers
        .get(*provider_name)
        .ok_or_else(|| ConnectError::Unsupported(format!("unknown provider {provider_name}")))?
        .clone();
    let token = resolve_secret(&provider.token, &options.config_dir, &kube, &namespace).await?;
    let proxmox = |source| ConnectError::Proxmox {
        provider: provider.name.clone(),
        source,
    };
    let token = tidepool_proxmox::ApiToken::parse(&token)
        .map_err(|e| proxmox(tidepool_proxmox::BuildError::Token(e)))?;
    let pve = ProxmoxClient::from_provider_with_token(
        &provider,
        token,
        &options.config_dir,
        client_options(options.clock.as_ref()),
    )
    .map_err(proxmox)?;
    let base_config = resolve_secret(
        &config.join.worker_config,
        &options.config_dir,
        &kube,
        &namespace,
    )
    .await?;
    let talosconfig = match &config.join.talosconfig {
        Some(reference) => {
            Some(resolve_secret(reference, &options.config_dir, &kube, &namespace).await?)
        }
        None => None,
    };
    let joiner = match &config.join.method {
        JoinMethod::TalosApi { port } => LiveJoiner::TalosApi {
            base_config,
            port: *port,
            talosconfig,
        },
        JoinMethod::Nocloud {
            flavor,
            listen,
            advertise_url,
        } => {
            let join_command = match (flavor, &config.join.join_command) {
                (tidepool_core::config::NocloudFlavor::CloudInit, Some(reference)) => {
                    Some(resolve_secret(reference, &options.config_dir, &kube, &namespace).await?)
                }
                (tidepool_core::config::NocloudFlavor::CloudInit, None) => {
                    return Err(ConnectError::Unsupported(
                        "the nocloud cloud-init flavor needs join.joinCommandFrom".into(),
                    ));
                }
                (tidepool_core::config::NocloudFlavor::Talos, _) => None,
            };
            let server = NocloudServer::new(advertise_url.clone(), NocloudOptions::default());
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| ConnectError::Nocloud {
                    addr: listen.clone(),
                    source,
                })?;
            let router = server.router();
            tokio::spawn(async move {
                if let Err(e) = axum_serve(listener, router).await {
                    tracing::warn!(error = %e, "nocloud server stopped");
                }
            });
            LiveJoiner::Nocloud {
                base_config,
                server,
                join_command,
                talosconfig,
            }
        }
    };
    let cluster =
        KubeCluster::new(ClusterClient::new(kube), options.clock.clone()).with_namespace(namespace);
    Ok(Executor::new(
        PveHypervisor::new(pve, provider),
        joiner,
        cluster.clone(),
        cluster,
        config,
        options.clock.clone(),
    ))
}

async fn axum_serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A client for a server that is never asked: environment and file
    /// secrets do not use it.
    fn unused_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn an_unset_variable_names_the_reference() {
        let reference = SecretRef::Env("TIDEPOOL_TEST_SECRET_THAT_IS_NEVER_SET".into());
        let err = resolve_secret(&reference, Path::new("."), &unused_client(), "tidepool")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::SecretUnset { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "reading secret env:TIDEPOOL_TEST_SECRET_THAT_IS_NEVER_SET: the variable is not set"
        );
    }

    #[tokio::test]
    async fn an_unreadable_secret_file_keeps_the_io_error_as_its_source() {
        let dir = std::env::temp_dir().join("tidepool-connect-test-missing");
        let reference = SecretRef::File("token".into());
        let err = resolve_secret(&reference, &dir, &unused_client(), "tidepool")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "reading secret file:token from {}",
                dir.join("token").display()
            )
        );
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
