//! Simulated kubelets and pod garbage collection: pods bound to a Ready
//! node turn Running and Ready after a start delay; pods on a node that is
//! not Ready are marked not ready; terminating pods go away once their
//! (shortened) grace period has passed; pods bound to a node that no
//! longer exists are force-deleted, as the pod GC does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use tidepool_lab_sim::{Faults, Service};

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResKey;
use crate::scheduler::set_condition;
use crate::store::{DeleteOptions, Part, Store};

/// Errors of this module are API errors.
pub type KubeletError = ApiError;

fn pods() -> ResKey {
    ResKey::new("", "pods")
}

/// Delays of the simulated kubelets (simulated time).
#[derive(Clone, Debug)]
pub struct KubeletTimings {
    /// From binding to Running+Ready.
    pub start_delay: Duration,
    /// Longest time a container takes to stop after deletion.
    pub kill_delay: Duration,
}

/// The state the kubelets keep between passes.
#[derive(Debug, Default)]
pub struct Kubelets {
    first_seen: HashMap<String, SystemTime>,
    orphaned_since: HashMap<String, SystemTime>,
}

/// How long the pod GC waits before deleting a pod whose node is gone.
const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);

fn pod_ip(uid: &str) -> String {
    let h = uid
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2)
}

fn running_status(pod: &mut Value, node: &Value, now: &str) {
    let host_ip = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("10.0.0.1")
        .to_owned();
    let ip = pod_ip(meta::uid(pod));
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"], "imageID": format!("{}@sha256:{}", c["image"].as_str().unwrap_or_default(), "0".repeat(64)),
                "containerID": format!("containerd://{}", meta::new_uid().replace('-', "")),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}, "lastState": {},
            })
        })
        .collect();
    pod["status"]["phase"] = json!("Running");
    pod["status"]["hostIP"] = json!(host_ip);
    pod["status"]["hostIPs"] = json!([{"ip": host_ip}]);
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{"ip": ip}]);
    pod["status"]["startTime"] = json!(now);
    pod["status"]["containerStatuses"] = json!(statuses);
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        set_condition(pod, kind, "True", None, None, now);
    }
}

/// A pod whose containers failed to start (a `kubelet start pods` fault):
/// Pending, containers waiting with `ErrImagePull`.
fn waiting_status(pod: &mut Value, message: &str) {
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false,
                   "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": message}},
                   "lastState": {}})
        })
        .collect();
    pod["status"]["containerStatuses"] = json!(statuses);
}

fn set_readiness(pod: &mut Value, ready: bool, now: &str) {
    let status = if ready { "True" } else { "False" };
    for kind in ["Ready", "ContainersReady"] {
        set_condition(pod, kind, status, None, None, now);
    }
    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
        for c in cs {
            c["ready"] = json!(ready);
        }
    }
}

/// The taint manager's decision for one pod: `None` when every NoExecute
/// taint of the node is tolerated indefinitely, otherwise how long until the
/// pod must go (zero: now). A toleration's `tolerationSeconds` counts from
/// the taint's `timeAdded`.
pub fn no_execute_deadline(pod: &Value, node: &Value, now: SystemTime) -> Option<Duration> {
    let tolerations = pod["spec"]["tolerations"].as_array();
    let mut soonest: Option<Duration> = None;
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        if taint["effect"] != "NoExecute" {
            continue;
        }
        let matching: Vec<&Value> = tolerations
            .into_iter()
            .flatten()
            .filter(|t| crate::scheduler::tolerates(t, taint))
            .collect();
        let left = if matching.is_empty() {
            Duration::ZERO
        } else if matching.iter().any(|t| t["tolerationSeconds"].is_null()) {
            continue;
        } else {
            let secs = matching
                .iter()
                .filter_map(|t| t["tolerationSeconds"].as_i64())
                .min()
                .unwrap_or(0)
                .max(0);
            let added = taint["timeAdded"]
                .as_str()
                .and_then(meta::parse_time)
                .unwrap_or(now);
            let deadline = added + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            deadline.duration_since(now).unwrap_or(Duration::ZERO)
        };
        soonest = Some(soonest.map_or(left, |s| s.min(left)));
    }
    soonest
}

/// What one pass of the kubelets works with.
struct Pass<'a> {
    store: &'a Store,
    faults: &'a Faults,
    timings: &'a KubeletTimings,
    now_t: SystemTime,
    now: String,
}

/// The sooner of two optional due times.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long until `at`, or `None` when it has come.
fn until(at: SystemTime, now: SystemTime) -> Option<Duration> {
    at.duration_since(now).ok().filter(|left| !left.is_zero())
}

/// Deletes a pod at once (grace period zero); a pod gone meanwhile is fine.
fn force_delete(store: &Store, pod: &Value) {
    let _ = store.delete(
        &pods(),
        meta::namespace(pod),
        meta::name(pod),
        &DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    );
}

impl Kubelets {
    /// One pass over all bound pods. Returns how long (simulated) until a
    /// pending start or termination is due, if any.
    pub fn reconcile(
        &mut self,
        store: &Store,
        faults: &Faults,
        timings: &KubeletTimings,
    ) -> Option<Duration> {
        let (all_pods, _) = store.list(&pods(), "");
        let (all_nodes, _) = store.list(&ResKey::new("", "nodes"), "");
        let nodes: HashMap<&str, &Value> = all_nodes
            .iter()
            .map(|n| (meta::name(n), n.as_ref()))
            .collect();
        let now_t = store.clock().now();
        let pass = Pass {
            store,
            faults,
            timings,
            now_t,
            now: meta::format_time(now_t),
        };
        let mut next: Option<Duration> = None;
        let mut live: HashSet<&str> = HashSet::new();
        for pod in &all_pods {
            let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
                continue;
            };
            live.insert(meta::uid(pod));
            let due = match nodes.get(node_name) {
                None => self.collect_orphan(&pass, pod),
                Some(node) => self.run_pod(&pass, pod, node),
            };
            next = earliest(next, due);
        }
        self.first_seen.retain(|uid, _| live.contains(uid.as_str()));
        let orphans: HashSet<&str> = all_pods
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty() && !nodes.contains_key(n))
            })
            .map(|p| meta::uid(p))
            .collect();
        self.orphaned_since
            .retain(|uid, _| orphans.contains(uid.as_str()));
        next
    }

    /// A pod bound to a node that no longer exists: force-deleted once it
    /// has been orphaned for the quarantine, as the pod GC does.
    fn collect_orphan(&mut self, pass: &Pass<'_>, pod: &Value) -> Option<Duration> {
        let since = *self
            .orphaned_since
            .entry(meta::uid(pod).to_owned())
            .or_insert(pass.now_t);
        let left = until(since + ORPHAN_QUARANTINE, pass.now_t);
        if left.is_none() {
            force_delete(pass.store, pod);
        }
        left
    }

    /// A pod on an existing node: termination, taint eviction, start and
    /// readiness. Returns when this pod next needs a look, if ever.
    fn run_pod(&mut self, pass: &Pass<'_>, pod: &Value, node: &Value) -> Option<Duration> {
        let (store, now_t) = (pass.store, pass.now_t);
        let node_ready = meta::condition_true(node, "Ready");
        if meta::is_terminating(pod) {
            if !node_ready {
                return None;
            }
            let deadline = pod["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(meta::parse_time)
                .unwrap_or(now_t);
            let grace = Duration::from_secs(
                pod["metadata"]["deletionGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(0),
            );
            let started = deadline.checked_sub(grace).unwrap_or(deadline);
            let left = until(started + grace.min(pass.timings.kill_delay), now_t);
            if left.is_none() {
                force_delete(store, pod);
            }
            return left;
        }
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        let mut due = None;
        if let Some(evict_in) = no_execute_deadline(pod, node, now_t) {
            if evict_in.is_zero() {
                // The taint manager deletes the pod; its controller replaces it.
                let _ = store.delete(&pods(), ns, name, &DeleteOptions::default());
                return None;
            }
            due = Some(evict_in);
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        match phase {
            "Pending" if node_ready => earliest(due, self.start_pod(pass, pod, node)),
            "Running" => {
                let ready = meta::condition_true(pod, "Ready");
                if ready != node_ready {
                    let _ = store.modify(&pods(), ns, name, Part::Internal, |p| {
                        set_readiness(p, node_ready, &pass.now);
                        Ok(())
                    });
                }
                due
            }
            _ => due,
        }
    }

    /// A pending pod on a Ready node: Running and Ready once the start delay
    /// since it was first seen has passed, unless a `kubelet start pods`
    /// fault fails the start (then it waits another delay).
    fn start_pod(&mut self, pass: &Pass<'_>, pod: &Value, node: &Value) -> Option<Duration> {
        let (store, now_t, timings) = (pass.store, pass.now_t, pass.timings);
        let (ns, name, uid) = (meta::namespace(pod), meta::name(pod), meta::uid(pod));
        let seen = *self.first_seen.entry(uid.to_owned()).or_insert(now_t);
        if let Some(left) = until(seen + timings.start_delay, now_t) {
            return Some(left);
        }
        let injected = pass.faults.check(Service::Kubernetes, "kubelet start pods");
        if let Some(err) = injected.error {
            // The start fails; the kubelet retries after another delay.
            self.first_seen.insert(uid.to_owned(), now_t);
            let _ = store.modify(&pods(), ns, name, Part::Internal, |p| {
                waiting_status(p, &err.message);
                Ok(())
            });
            return Some(timings.start_delay);
        }
        let _ = store.modify(&pods(), ns, name, Part::Internal, |p| {
            running_status(p, node, &pass.now);
            Ok(())
        });
        None
    }
}
