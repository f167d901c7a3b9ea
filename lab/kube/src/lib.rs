//! An emulator of the Kubernetes API server, scheduler and controllers for
//! the Tidepool lab.
//!
//! [`KubeLab`] is the handle: it serves the real HTTP/JSON API on loopback
//! (so kubectl, kube-rs and the Python client work against it), runs a
//! scheduler, simulated kubelets and the workload, disruption and garbage
//! collection controllers, and offers an in-process API for the lab
//! composition (create/apply/get/list/delete, node registration and node
//! conditions). Every HTTP request consults the lab's [`Faults`] table with
//! an operation named `"<verb> <resource>[/<subresource>]"`, for example
//! `"create pods"`, `"list nodes"`, `"watch pods"`, `"patch nodes"`,
//! `"update pods/status"`, and `"evict pods"` for evictions.

pub mod authz;
pub mod controllers;
pub mod error;
pub mod events;
pub mod handlers;
pub mod kubeconfig;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod resources;
pub mod scheduler;
pub mod schema;
pub mod selectors;
pub mod store;
pub mod table;
pub mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tidepool_lab_sim::{Faults, SimClock};

pub use controllers::nodes::{NodeRegistration, Taint};
pub use error::ApiError;
pub use kubeconfig::{render_kubeconfig, render_kubeconfig_for};

use crate::resources::{ResKey, ResourceDef};
use crate::selectors::LabelSelector;
use crate::store::{DeleteOptions, Part, Store, StoreConfig};

/// Converts a stored object to the form its API serves.
type Outward = fn(&Value) -> Value;

/// Errors of the lab handle.
#[derive(Debug, thiserror::Error)]
pub enum KubeLabError {
    /// Binding the listening socket failed.
    #[error("binding the Kubernetes API emulator to {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API refused an in-process request.
    #[error("Kubernetes API emulator request failed")]
    Api(#[from] ApiError),
}

impl KubeLabError {
    /// A stable category string for metrics and Events.
    pub fn category(&self) -> &str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Api(e) => e.category(),
        }
    }
}

/// Tunables of the emulator. Durations named "simulated" run on the lab's
/// [`SimClock`]; the others are real time.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Simulated time from binding to Running+Ready.
    pub pod_start_delay: Duration,
    /// Longest simulated time a pod takes to stop after deletion (bounded by
    /// its grace period).
    pub pod_kill_delay: Duration,
    /// Real time between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Watch events kept per resource for resumption.
    pub history_limit: usize,
    /// Simulated age after which events leave the history.
    pub history_window: Duration,
    /// Real time the controllers wait after a change before reacting (batching).
    pub controller_debounce: Duration,
    /// Real time between controller passes when nothing happens.
    pub resync_interval: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            pod_start_delay: Duration::from_secs(2),
            pod_kill_delay: Duration::from_secs(2),
            bookmark_interval: Duration::from_secs(60),
            history_limit: 10_000,
            history_window: Duration::from_secs(300),
            controller_debounce: Duration::from_millis(20),
            resync_interval: Duration::from_secs(1),
        }
    }
}

impl KubeOptions {
    fn kubelet_timings(&self) -> controllers::kubelet::KubeletTimings {
        controllers::kubelet::KubeletTimings {
            start_delay: self.pod_start_delay,
            kill_delay: self.pod_kill_delay,
        }
    }
}

/// State shared by the HTTP handlers, the controllers and the handles.
pub struct Shared {
    store: Arc<Store>,
    faults: Arc<Faults>,
    clock: SimClock,
    options: KubeOptions,
    address: OnceLock<SocketAddr>,
    controllers: AtomicBool,
}

impl Shared {
    fn server_address(&self) -> String {
        self.address
            .get()
            .map(ToString::to_string)
            .unwrap_or_else(|| "127.0.0.1:0".into())
    }
}

/// A cheap, cloneable handle to one emulated Kubernetes API server and its
/// controllers.
#[derive(Clone)]
pub struct KubeLab {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KubeLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLab")
            .field("address", &self.shared.address.get())
            .finish_non_exhaustive()
    }
}

impl KubeLab {
    /// A lab with default options. Controllers start at once when called
    /// inside a Tokio runtime, otherwise with [`KubeLab::serve`] or
    /// [`KubeLab::start_controllers`].
    pub fn new(clock: SimClock, faults: Arc<Faults>) -> Self {
        Self::with_options(clock, faults, KubeOptions::default())
    }

    /// A lab with the given options.
    pub fn with_options(clock: SimClock, faults: Arc<Faults>, options: KubeOptions) -> Self {
        let store = Store::new(
            clock.clone(),
            StoreConfig {
                history_limit: options.history_limit,
                history_window: options.history_window,
            },
        );
        let lab = Self {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                faults,
                clock,
                options,
                address: OnceLock::new(),
                controllers: AtomicBool::new(false),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            lab.start_controllers();
        }
        lab
    }

    /// Starts the scheduler, kubelets and controllers (idempotent; needs a
    /// Tokio runtime). They run until every handle and the server are gone.
    pub fn start_controllers(&self) {
        if self.shared.controllers.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(controllers::run(Arc::downgrade(&self.shared)));
    }

    /// Serves the API over plain HTTP on `addr` (port 0 picks a free port)
    /// until the runtime shuts down; returns the bound address.
    ///
    /// # Errors
    /// [`KubeLabError::Bind`] when the socket cannot be bound.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, KubeLabError> {
        self.start_controllers();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| KubeLabError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| KubeLabError::Bind { addr, source })?;
        let _ = self.shared.address.set(bound);
        let app = handlers::router(self.shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "Kubernetes API emulator stopped");
            }
        });
        Ok(bound)
    }

    /// The address [`KubeLab::serve`] bound, if serving.
    pub fn address(&self) -> Option<SocketAddr> {
        self.shared.address.get().copied()
    }

    /// A kubeconfig for the served address, if serving.
    pub fn kubeconfig(&self) -> Option<String> {
        self.address().map(render_kubeconfig)
    }

    /// The lab's clock.
    pub fn clock(&self) -> &SimClock {
        &self.shared.clock
    }

    fn def_for(&self, api_version: &str, kind: &str) -> Result<ResourceDef, ApiError> {
        self.shared
            .store
            .resource_for_kind(api_version, kind)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no kind \"{kind}\" is registered for version \"{api_version}\""
                ))
            })
    }

    /// Where a served kind is stored, with the conversion out of storage
    /// (events.k8s.io Events live with core Events).
    fn storage(&self, def: &ResourceDef) -> (ResKey, Option<Outward>) {
        if def.group == "events.k8s.io" && def.plural == "events" {
            (ResKey::new("", "events"), Some(events::to_events_v1))
        } else {
            (def.key(), None)
        }
    }

    fn def_of(&self, obj: &Value) -> Result<ResourceDef, ApiError> {
        self.def_for(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )
    }

    /// Creates an object (its `apiVersion` and `kind` pick the resource).
    ///
    /// # Errors
    /// As the API: `AlreadyExists`, `NotFound` (namespace), `Invalid`, ...
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let def = self.def_of(&obj)?;
        let ns = meta::namespace(&obj).to_owned();
        let (key, outward) = self.storage(&def);
        let obj = match outward {
            Some(_) => events::to_core(obj),
            None => obj,
        };
        let created = self.shared.store.create(&key, &ns, obj)?;
        Ok(outward.map_or_else(|| (*created).clone(), |f| f(&created)))
    }

    /// Creates the object, or merges it into the existing one (server-side
    /// apply with force; status included when given).
    ///
    /// # Errors
    /// As [`KubeLab::create`].
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        let def = self.def_of(&obj)?;
        let ns = meta::namespace(&obj).to_owned();
        let name = meta::name(&obj).to_owned();
        let key = def.key();
        match self.shared.store.get(&key, &ns, &name) {
            Err(e) if e.code == 404 => Ok((*self.shared.store.create(&key, &ns, obj)?).clone()),
            Err(e) => Err(e),
            Ok(_) => Ok((*self
                .shared
                .store
                .modify(&key, &ns, &name, Part::Internal, |live| {
                    patch::apply_merge(live, &obj);
                    Ok(())
                })?)
            .clone()),
        }
    }

    /// Applies a JSON merge patch to an object (status included).
    ///
    /// # Errors
    /// `NotFound` and the like.
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        patch_doc: &Value,
    ) -> Result<Value, ApiError> {
        let def = self.def_for(api_version, kind)?;
        Ok((*self
            .shared
            .store
            .modify(&def.key(), namespace, name, Part::Internal, |o| {
                patch::merge_patch(o, patch_doc);
                Ok(())
            })?)
        .clone())
    }

    /// Reads one object (`namespace` is ignored for cluster-scoped kinds).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let def = self.def_for(api_version, kind)?;
        let (key, outward) = self.storage(&def);
        let obj = self.shared.store.get(&key, namespace, name)?;
        Ok(outward.map_or_else(|| (*obj).clone(), |f| f(&obj)))
    }

    /// Lists objects of a kind (all namespaces when `namespace` is empty)
    /// matching a label selector (`""` for all).
    ///
    /// # Errors
    /// `BadRequest` for a malformed selector or unknown kind.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let def = self.def_for(api_version, kind)?;
        let selector = LabelSelector::parse(label_selector)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (key, outward) = self.storage(&def);
        let (items, _) = self.shared.store.list(&key, namespace);
        Ok(items
            .iter()
            .filter(|o| selector.matches_object(o))
            .map(|o| outward.map_or_else(|| (**o).clone(), |f| f(o)))
            .collect())
    }

    /// Deletes an object as `kubectl delete` would (graceful for bound pods).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let def = self.def_for(api_version, kind)?;
        self.shared
            .store
            .delete(&def.key(), namespace, name, &DeleteOptions::default())?;
        Ok(())
    }

    /// Registers a node as its kubelet would: capacity, labels, annotations,
    /// taints, and `Ready=True`.
    ///
    /// # Errors
    /// `AlreadyExists` when a node of that name exists.
    pub fn register_node(&self, registration: &NodeRegistration) -> Result<Value, ApiError> {
        let now = meta::format_time(self.shared.clock.now());
        let node = controllers::nodes::node_object(registration, &now);
        Ok((*self
            .shared
            .store
            .create(&ResKey::new("", "nodes"), "", node)?)
        .clone())
    }

    /// Sets the node's `Ready` condition: `true` → `True` (KubeletReady);
    /// `false` → `Unknown` (NodeStatusUnknown, "Kubelet stopped posting node
    /// status."), which is what a stopped VM looks like. Use
    /// [`KubeLab::set_node_condition`] for an explicit `False`.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn set_node_ready(&self, name: &str, ready: bool) -> Result<(), ApiError> {
        let status = if ready { "True" } else { "Unknown" };
        controllers::nodes::set_node_condition(&self.shared.store, name, "Ready", status)
    }

    /// Sets any node condition (`Ready`, `MemoryPressure`, `DiskPressure`,
    /// `PIDPressure`, ...) to `True`, `False` or `Unknown`.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn set_node_condition(&self, name: &str, kind: &str, status: &str) -> Result<(), ApiError> {
        controllers::nodes::set_node_condition(&self.shared.store, name, kind, status)
    }
}
