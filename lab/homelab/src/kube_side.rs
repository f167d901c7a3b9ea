//! The lab's Kubernetes side, whichever it is: the in-process emulator
//! ([`KubeLab`]) or the real control plane ([`Upstream`]). The guest
//! simulator registers and reports on Nodes through it, and the tests and
//! the demo create, read and delete objects through it, so both modes
//! share one guest simulator and one set of scenarios.
//!
//! In upstream mode a call is one request to the local API server and
//! blocks the caller for that round trip (see [`Upstream::block`]); nodes
//! are registered with kwok's label so that kwok plays their kubelet
//! (heartbeats, node Lease, running pods), and a condition the lab sets
//! itself — a machine powered off, an injected fault — comes with kwok's
//! hands-off annotation so that kwok's heartbeats do not overwrite it,
//! until the node is Ready again.

use std::sync::Arc;

use serde_json::{Value, json};
use tidepool_lab_kube::controllers::nodes::{condition_wording, node_object};
use tidepool_lab_kube::controllers::volumes::csi_node_object;
use tidepool_lab_kube::{ApiError, KubeLab, NodeRegistration};
use tidepool_lab_sim::SimClock;

use crate::upstream::client::Upstream;
use crate::upstream::{KWOK_HANDS_OFF, KWOK_LABEL};

/// Errors of this module are the API's own ([`ApiError`]).
pub type KubeSideError = ApiError;

/// Which Kubernetes the lab runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KubernetesMode {
    /// The in-process emulator (fast; the default).
    #[default]
    Emulator,
    /// The real kube-apiserver, scheduler and controller-manager, with kwok.
    Upstream,
}

impl KubernetesMode {
    /// The mode named by `TIDEPOOL_LAB_KUBERNETES` (`emulator` or
    /// `upstream`), the emulator when unset: how CI runs the same scenario
    /// suites against both.
    pub fn from_env() -> Self {
        match std::env::var("TIDEPOOL_LAB_KUBERNETES").as_deref() {
            Ok("upstream") => Self::Upstream,
            _ => Self::Emulator,
        }
    }

    /// `emulator` or `upstream`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Emulator => "emulator",
            Self::Upstream => "upstream",
        }
    }
}

impl std::str::FromStr for KubernetesMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "emulator" => Ok(Self::Emulator),
            "upstream" => Ok(Self::Upstream),
            other => Err(format!(
                "unknown Kubernetes `{other}` (emulator or upstream)"
            )),
        }
    }
}

/// A cheap, cloneable handle to the lab's Kubernetes side.
#[derive(Clone, Debug)]
pub enum LabKube {
    /// The emulator.
    Emulator(KubeLab),
    /// The real control plane, through the lab's client, with the lab's
    /// clock for the times the lab stamps itself.
    Upstream(Upstream, Arc<SimClock>),
}

/// Runs an [`Upstream`] call to completion from synchronous code.
macro_rules! blocking {
    ($up:expr, |$c:ident| $body:expr) => {
        $up.block(move |$c| Box::pin(async move { $body }))
    };
}

impl LabKube {
    /// The emulator, in emulator mode.
    pub fn emulator(&self) -> Option<&KubeLab> {
        match self {
            Self::Emulator(k) => Some(k),
            Self::Upstream(..) => None,
        }
    }

    /// Which mode this is.
    pub fn mode(&self) -> KubernetesMode {
        match self {
            Self::Emulator(_) => KubernetesMode::Emulator,
            Self::Upstream(..) => KubernetesMode::Upstream,
        }
    }

    /// Creates an object (its `apiVersion` and `kind` pick the resource).
    ///
    /// # Errors
    /// As the API: `AlreadyExists`, `NotFound` (namespace), `Invalid`, ...
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        match self {
            Self::Emulator(k) => k.create(obj),
            Self::Upstream(u, _) => blocking!(u, |c| c.create(obj).await),
        }
    }

    /// Creates the object or applies it over the existing one (status
    /// included when given).
    ///
    /// # Errors
    /// As [`LabKube::create`].
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        match self {
            Self::Emulator(k) => k.apply(obj),
            Self::Upstream(u, _) => blocking!(u, |c| c.apply(obj).await),
        }
    }

    /// A JSON merge patch of an object (status included).
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
        match self {
            Self::Emulator(k) => k.merge_patch(api_version, kind, namespace, name, patch_doc),
            Self::Upstream(u, _) => {
                let (v, k, ns, n, p) = owned(api_version, kind, namespace, name, patch_doc);
                blocking!(u, |c| c.merge_patch(&v, &k, &ns, &n, p).await)
            }
        }
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
        match self {
            Self::Emulator(k) => k.get(api_version, kind, namespace, name),
            Self::Upstream(u, _) => {
                let (v, k, ns, n, _) = owned(api_version, kind, namespace, name, &Value::Null);
                blocking!(u, |c| c.get(&v, &k, &ns, &n).await)
            }
        }
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
        match self {
            Self::Emulator(k) => k.list(api_version, kind, namespace, label_selector),
            Self::Upstream(u, _) => {
                let (v, k, ns, sel, _) =
                    owned(api_version, kind, namespace, label_selector, &Value::Null);
                blocking!(u, |c| c.list(&v, &k, &ns, &sel).await)
            }
        }
    }

    /// Deletes an object as `kubectl delete` would.
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
        match self {
            Self::Emulator(k) => k.delete(api_version, kind, namespace, name),
            Self::Upstream(u, _) => {
                let (v, k, ns, n, _) = owned(api_version, kind, namespace, name, &Value::Null);
                blocking!(u, |c| c.delete(&v, &k, &ns, &n).await)
            }
        }
    }

    /// Registers a node as its kubelet would: capacity, labels, annotations,
    /// taints and `Ready=True` (in upstream mode kwok takes it over).
    ///
    /// # Errors
    /// `AlreadyExists` when a node of that name exists.
    pub fn register_node(&self, registration: &NodeRegistration) -> Result<Value, ApiError> {
        let node = match self {
            Self::Emulator(k) => k.register_node(registration),
            Self::Upstream(u, clock) => {
                let now = tidepool_lab_kube::meta::format_time(clock.now());
                let mut node = node_object(registration, &now);
                node["metadata"]["labels"][KWOK_LABEL.0] = json!(KWOK_LABEL.1);
                node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("0");
                blocking!(u, |c| c.create(node).await)
            }
        }?;
        // The proxmox-csi node plugin (a DaemonSet in a real cluster)
        // registers its driver with the node's attach limit. One left from
        // an earlier registration of the same name is kept.
        match self.create(csi_node_object(&node)) {
            Ok(_) | Err(ApiError { code: 409, .. }) => {}
            Err(e) => {
                tracing::warn!(node = %registration.name, error = %e, "CSINode not registered")
            }
        }
        Ok(node)
    }

    /// Sets the node's `Ready` condition: `true` → `True`; `false` →
    /// `Unknown` (the kubelet stopped posting status: a stopped VM).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn set_node_ready(&self, name: &str, ready: bool) -> Result<(), ApiError> {
        match self {
            Self::Emulator(k) => k.set_node_ready(name, ready),
            Self::Upstream(..) => {
                self.set_node_condition(name, "Ready", if ready { "True" } else { "Unknown" })
            }
        }
    }

    /// Sets any node condition to `True`, `False` or `Unknown`. In upstream
    /// mode anything but `Ready=True` hands the node's status to the lab
    /// (kwok leaves it alone); `Ready=True` gives it back to kwok.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn set_node_condition(&self, name: &str, kind: &str, status: &str) -> Result<(), ApiError> {
        match self {
            Self::Emulator(k) => k.set_node_condition(name, kind, status),
            Self::Upstream(u, clock) => {
                let now = tidepool_lab_kube::meta::format_time(clock.now());
                let healthy = kind == "Ready" && status == "True";
                let (name, kind, status) = (name.to_owned(), kind.to_owned(), status.to_owned());
                blocking!(u, |c| {
                    set_upstream_condition(&c, &name, &kind, &status, &now, healthy).await
                })
            }
        }
    }
}

fn owned(a: &str, b: &str, c: &str, d: &str, v: &Value) -> (String, String, String, String, Value) {
    (
        a.to_owned(),
        b.to_owned(),
        c.to_owned(),
        d.to_owned(),
        v.clone(),
    )
}

/// Sets one condition of a kwok-managed node: the hands-off annotation
/// first (so kwok's next heartbeat does not undo it), then the condition,
/// with a new `lastTransitionTime` only when its status changes.
async fn set_upstream_condition(
    c: &Upstream,
    name: &str,
    kind: &str,
    status: &str,
    now: &str,
    healthy: bool,
) -> Result<(), ApiError> {
    let hands_off = if healthy {
        Value::Null
    } else {
        json!(KWOK_HANDS_OFF.1)
    };
    c.merge_patch(
        "v1",
        "Node",
        "",
        name,
        json!({"metadata": {"annotations": {KWOK_HANDS_OFF.0: hands_off}}}),
    )
    .await?;
    let node = c.get("v1", "Node", "", name).await?;
    let previous = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str().map(str::to_owned));
    let transition = if previous.as_deref() == Some(status) {
        node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
            .map_or_else(|| json!(now), |c| c["lastTransitionTime"].clone())
    } else {
        json!(now)
    };
    let (reason, message) = condition_wording(kind, status);
    let condition = json!({"type": kind, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": transition});
    c.patch_status(
        "v1",
        "Node",
        name,
        json!({"status": {"conditions": [condition]}}),
    )
    .await?;
    Ok(())
}
