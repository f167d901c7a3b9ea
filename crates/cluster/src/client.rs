//! [`ClusterClient`]: one kube-rs [`Client`] plus the node and pod caches,
//! and the node operations (labels, annotations, taints, cordon, delete).
//!
//! Drain, claim and Event operations live in their own modules as further
//! `impl ClusterClient` blocks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint as KubeTaint};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};
use tidepool_core::conventions::{NodeMetadata, Taint, TaintEffect};

use crate::cache::Cache;
use crate::error::{ClusterError, ErrorCategory};
use crate::nodes::WireNode;
use crate::pods::{CachedPod, PodInterner, WirePod};

/// How many times a read-modify-write retries after losing a race.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Pods per page of the pod cache's list: a page's JSON is held whole
/// while it is read, and pods run to 20 KB each.
const POD_PAGE: u32 = 50;
/// Nodes per page of the node cache's list (a node's JSON runs to 10 KB
/// and more with its image list).
const NODE_PAGE: u32 = 100;

/// Builds a client from a kube-rs [`Config`], with kube-rs's built-in
/// retrying of 429/503/504 answers turned off.
///
/// kube-rs 5 retries those answers inside every request by default, up to
/// 15 times with backoff growing towards 1000 s. An eviction refused by a
/// PodDisruptionBudget answers 429, so with that default a single eviction
/// call can block for many minutes and a drain could not keep its
/// deadline or report its blocker. Tidepool retries itself, by
/// [`ErrorCategory`], where it knows the deadline. Clients handed to
/// [`ClusterClient::new`] should be built this way.
///
/// # Errors
/// Category Config when the TLS or proxy settings cannot be used.
pub fn client_from_config(mut config: Config) -> Result<Client, ClusterError> {
    config.default_retry = false;
    Client::try_from(config)
        .map_err(|source| ClusterError::api("building a Kubernetes client", source))
}

/// Builds a client from a kubeconfig file (its current context), as for
/// the lab; see [`client_from_config`] about retries.
///
/// # Errors
/// [`ClusterError::Kubeconfig`] when the file cannot be read or used.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, ClusterError> {
    let wrap = |source| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(wrap)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(wrap)?;
    client_from_config(config)
}

/// Builds a client from the service account and environment of the pod
/// the process runs in; see [`client_from_config`] about retries.
///
/// # Errors
/// [`ClusterError::InCluster`] outside a pod, or when the token or CA is unreadable.
pub fn client_in_cluster() -> Result<Client, ClusterError> {
    let config = Config::incluster().map_err(ClusterError::InCluster)?;
    client_from_config(config)
}

/// Settings of a [`ClusterClient`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `reportingInstance` of the Events this client records (the pod or
    /// host name of this controller replica).
    pub reporting_instance: String,
    /// Whether the node and pod caches start with a streaming list (a
    /// watch that sends the current objects first; see
    /// [`Cache::start_streaming`]), falling back to a paged list when the
    /// API server refuses one. `false` lists in pages from the start.
    pub streaming_lists: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "tidepool".to_owned());
        Self {
            reporting_instance: instance,
            streaming_lists: true,
        }
    }
}

/// Tidepool's handle on one cluster: the client, the node and pod caches,
/// and typed operations on nodes, pods, worker claims and Events.
///
/// Cheap to clone; clones share the client and the caches.
#[derive(Clone)]
pub struct ClusterClient {
    pub(crate) client: Client,
    pub(crate) options: ClusterOptions,
    nodes: Cache<Node>,
    pods: Cache<CachedPod>,
    /// Started on first use: only the controller watches claims.
    pub(crate) claim_cache: Arc<OnceLock<Cache<crate::claim::WorkerClaim>>>,
    /// Started on first use: the storage objects of the attach ceiling.
    storage: Arc<OnceLock<crate::storage::StorageCaches>>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("options", &self.options)
            .field("nodes", &self.nodes)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}

/// The outcome of deleting something that may already be gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The object existed and its deletion was accepted.
    Deleted,
    /// The object did not exist (which is what was wanted).
    AlreadyGone,
}

impl ClusterClient {
    /// A cluster client with default options. Starts the node and pod
    /// watchers at once, so it must be called inside a Tokio runtime.
    ///
    /// Build `client` with [`client_from_config`] (or the helpers beside
    /// it): a client that retries 429 answers internally makes drains
    /// overrun their deadline.
    pub fn new(client: Client) -> Self {
        Self::with_options(client, ClusterOptions::default())
    }

    /// A cluster client with the given options (see [`ClusterClient::new`]).
    pub fn with_options(client: Client, options: ClusterOptions) -> Self {
        // Small pages when listing in pages: each page's JSON is held whole
        // while it is read. A streaming list holds one object at a time.
        let lists = |page| {
            let paged = watcher::Config::default().page_size(page);
            if options.streaming_lists {
                (watcher::Config::default().streaming_lists(), Some(paged))
            } else {
                (paged, None)
            }
        };
        let (config, fallback) = lists(NODE_PAGE);
        let nodes = Cache::start_streaming(
            Api::<WireNode>::all(client.clone()),
            config,
            fallback,
            WireNode::into_node,
        );
        let mut interner = PodInterner::default();
        let (config, fallback) = lists(POD_PAGE);
        let pods = Cache::start_streaming(
            Api::<WirePod>::all(client.clone()),
            config,
            fallback,
            move |pod| interner.project(pod),
        );
        Self {
            client,
            options,
            nodes,
            pods,
            claim_cache: Arc::new(OnceLock::new()),
            storage: Arc::new(OnceLock::new()),
        }
    }

    /// The caches of CSINodes, StorageClasses, volumes, claims and
    /// VolumeAttachments ([`crate::storage`]), started on first use.
    pub fn storage(&self) -> &crate::storage::StorageCaches {
        self.storage
            .get_or_init(|| crate::storage::StorageCaches::start(&self.client))
    }

    /// The underlying kube-rs client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The node cache. Its nodes hold only the fields listed in
    /// [`crate::nodes`]; read a node with [`ClusterClient::get_node`] when
    /// more is needed.
    pub fn nodes(&self) -> &Cache<Node> {
        &self.nodes
    }

    /// The pod cache (all namespaces), holding the planner's view of each
    /// pod ([`crate::pods`]), not whole pods.
    pub fn pods(&self) -> &Cache<CachedPod> {
        &self.pods
    }

    /// Whether both caches have completed their first list. The controller
    /// must not plan while this is false.
    pub fn is_synced(&self) -> bool {
        self.nodes.is_synced() && self.pods.is_synced()
    }

    /// Waits until both caches are synced.
    ///
    /// # Errors
    /// [`ClusterError::NotSynced`] when `timeout` passes first.
    pub async fn wait_until_synced(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.nodes
            .wait_until_synced(timeout)
            .await
            .map_err(ClusterError::NotSynced)?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.pods
            .wait_until_synced(left)
            .await
            .map_err(|_| ClusterError::NotSynced(timeout))
    }

    fn node_api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Reads a node from the API server (not the cache).
    ///
    /// # Errors
    /// API failures other than NotFound, which gives `Ok(None)`.
    pub async fn get_node(&self, name: &str) -> Result<Option<Node>, ClusterError> {
        self.node_api()
            .get_opt(name)
            .await
            .map_err(|e| ClusterError::api(format!("reading node {name}"), e))
    }

    async fn merge_patch_node(
        &self,
        name: &str,
        what: &str,
        patch: &Value,
    ) -> Result<Node, ClusterError> {
        self.node_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| ClusterError::api(format!("{what} of node {name}"), e))
    }

    /// Sets (`Some`) or removes (`None`) labels and annotations on a node
    /// with one JSON merge patch; other keys are left alone.
    ///
    /// # Errors
    /// NotFound when the node does not exist; Invalid for malformed keys or values.
    pub async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> Result<Node, ClusterError> {
        let mut metadata = serde_json::Map::new();
        if !labels.is_empty() {
            metadata.insert("labels".into(), json!(labels));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), json!(annotations));
        }
        self.merge_patch_node(
            name,
            "patching labels and annotations",
            &json!({ "metadata": metadata }),
        )
        .await
    }

    /// Gives a node the labels, annotations and taints of a worker (from
    /// [`tidepool_core::conventions::node_metadata`]): one merge patch for
    /// the metadata, then each taint added as by [`ClusterClient::add_taint`].
    /// Idempotent.
    ///
    /// # Errors
    /// As [`ClusterClient::patch_node_metadata`] and [`ClusterClient::add_taint`].
    pub async fn apply_node_metadata(
        &self,
        name: &str,
        metadata: &NodeMetadata,
    ) -> Result<Node, ClusterError> {
        let some = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        let mut node = self
            .patch_node_metadata(name, &some(&metadata.labels), &some(&metadata.annotations))
            .await?;
        for taint in &metadata.taints {
            node = self.add_taint(name, taint).await?;
        }
        Ok(node)
    }

    /// Changes a node's taint list with optimistic concurrency: reads the
    /// node, applies `change`, and writes the list back guarded by the
    /// resourceVersion read, retrying when another writer got there first.
    async fn update_taints(
        &self,
        name: &str,
        what: &str,
        change: impl Fn(&mut Vec<KubeTaint>) -> bool,
    ) -> Result<Node, ClusterError> {
        let api = self.node_api();
        for _ in 0..CONFLICT_ATTEMPTS {
            let node = api
                .get(name)
                .await
                .map_err(|e| ClusterError::api(format!("reading node {name}"), e))?;
            let mut taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if !change(&mut taints) {
                return Ok(node);
            }
            let taints = serde_json::to_value(&taints).map_err(|source| ClusterError::Encode {
                what: "node taints",
                source,
            })?;
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            match self.merge_patch_node(name, what, &patch).await {
                Err(e) if e.category() == ErrorCategory::Conflict => continue,
                other => return other,
            }
        }
        Err(ClusterError::ConflictRetriesExhausted {
            operation: format!("{what} of node {name}"),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    /// Adds a taint, or updates the value of the taint with the same key and
    /// effect; every other taint is preserved.
    ///
    /// # Errors
    /// NotFound when the node does not exist; Conflict after repeated races.
    pub async fn add_taint(&self, name: &str, taint: &Taint) -> Result<Node, ClusterError> {
        let wanted = to_kube_taint(taint);
        self.update_taints(name, "adding a taint", |taints| {
            match taints
                .iter_mut()
                .find(|t| t.key == wanted.key && t.effect == wanted.effect)
            {
                Some(existing) if existing.value == wanted.value => false,
                Some(existing) => {
                    existing.value.clone_from(&wanted.value);
                    true
                }
                None => {
                    taints.push(wanted.clone());
                    true
                }
            }
        })
        .await
    }

    /// Removes the taints with this key (and this effect, when given);
    /// every other taint is preserved. Removing an absent taint is a no-op.
    ///
    /// # Errors
    /// NotFound when the node does not exist; Conflict after repeated races.
    pub async fn remove_taint(
        &self,
        name: &str,
        key: &str,
        effect: Option<TaintEffect>,
    ) -> Result<Node, ClusterError> {
        self.update_taints(name, "removing a taint", |taints| {
            let before = taints.len();
            taints.retain(|t| !(t.key == key && effect.is_none_or(|e| t.effect == e.as_str())));
            taints.len() != before
        })
        .await
    }

    /// Marks a node unschedulable (idempotent).
    ///
    /// # Errors
    /// NotFound when the node does not exist.
    pub async fn cordon(&self, name: &str) -> Result<Node, ClusterError> {
        self.merge_patch_node(name, "cordoning", &json!({"spec": {"unschedulable": true}}))
            .await
    }

    /// Marks a node schedulable again (idempotent).
    ///
    /// # Errors
    /// NotFound when the node does not exist.
    pub async fn uncordon(&self, name: &str) -> Result<Node, ClusterError> {
        self.merge_patch_node(
            name,
            "uncordoning",
            &json!({"spec": {"unschedulable": null}}),
        )
        .await
    }

    /// Deletes a node object. A node that is already gone is success.
    ///
    /// # Errors
    /// Any API failure other than NotFound.
    pub async fn delete_node(&self, name: &str) -> Result<Deletion, ClusterError> {
        match self.node_api().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(Deletion::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Deletion::AlreadyGone),
            Err(e) => Err(ClusterError::api(format!("deleting node {name}"), e)),
        }
    }
}

/// The API form of a core taint.
pub fn to_kube_taint(taint: &Taint) -> KubeTaint {
    KubeTaint {
        key: taint.key.clone(),
        value: (!taint.value.is_empty()).then(|| taint.value.clone()),
        effect: taint.effect.as_str().to_owned(),
        time_added: None,
    }
}

/// The core form of an API taint; `None` for an effect Kubernetes does not define.
pub fn from_kube_taint(taint: &KubeTaint) -> Option<Taint> {
    Some(Taint {
        key: taint.key.clone(),
        value: taint.value.clone().unwrap_or_default(),
        effect: TaintEffect::parse(&taint.effect)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tidepool_lab_kube::{KubeLab, NodeRegistration};
    use tidepool_lab_sim::{Faults, SimClock};

    #[test]
    fn taints_convert_both_ways_and_an_empty_value_is_omitted() {
        let t = Taint::new("tidepool.dev/burst", "", TaintEffect::NoSchedule);
        let k = to_kube_taint(&t);
        assert_eq!(k.value, None);
        assert_eq!(k.effect, "NoSchedule");
        assert_eq!(from_kube_taint(&k), Some(t));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_caches_hold_slim_nodes_and_planner_views_of_pods() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube = KubeLab::new(SimClock::new(10.0), Arc::new(Faults::new(3)));
        let addr = kube
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        kube.register_node(&NodeRegistration {
            name: "worker-1".into(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods: 110,
            ..NodeRegistration::default()
        })
        .unwrap();
        for name in ["web-1", "web-2"] {
            kube.create(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default",
                    "labels": {"app": "web", "pod-template-hash": "7d9f"},
                    "annotations": {crate::nodes::LAST_APPLIED: "{}", "karpenter.sh/do-not-disrupt": "true"}},
                "spec": {"nodeName": "worker-1",
                    "tolerations": [{"key": "tidepool.dev/burst", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1d"],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                    "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                                {"name": "data", "persistentVolumeClaim": {"claimName": name}}]},
            }))
            .unwrap();
        }
        let dir = std::env::temp_dir().join(format!("tidepool-slim-caches-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(&path, tidepool_lab_kube::render_kubeconfig(addr)).unwrap();
        let cluster = ClusterClient::new(client_from_kubeconfig(&path).await.unwrap());
        cluster
            .wait_until_synced(Duration::from_secs(10))
            .await
            .unwrap();

        let (one, two) = (
            cluster.pods().get(Some("default"), "web-1").unwrap(),
            cluster.pods().get(Some("default"), "web-2").unwrap(),
        );
        assert_eq!(one.spec.key(), "default/web-1");
        assert_eq!(one.node.as_deref(), Some("worker-1"));
        assert_eq!(one.spec.requests.cpu_milli, 100);
        assert_eq!(one.spec.requests.memory_bytes, 64 << 20);
        assert_eq!(one.spec.volumes.len(), 1);
        assert!(one.spec.blocks_disruption());
        assert_eq!(one.spec.labels["app"], "web");
        // The two pods share one copy of what they have in common.
        assert!(Arc::ptr_eq(&one.spec.labels, &two.spec.labels));
        assert!(Arc::ptr_eq(&one.spec.tolerations, &two.spec.tolerations));
        assert!(Arc::ptr_eq(&one.spec.namespace, &two.spec.namespace));

        let node = cluster.nodes().get(None, "worker-1").unwrap();
        let status = node.status.clone().unwrap();
        let info = status.node_info.unwrap();
        assert!(!info.system_uuid.is_empty(), "the system UUID is kept");
        assert!(
            info.kernel_version.is_empty(),
            "the rest of nodeInfo is not"
        );
        assert!(status.allocatable.unwrap().contains_key("cpu"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
