//! Workload controllers: ReplicaSets keep their replica count (recreating
//! evicted or deleted pods), a Deployment keeps one ReplicaSet per pod
//! template (older ones scaled to zero), a DaemonSet keeps one pod on every
//! node that its template fits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResKey;
use crate::scheduler::{node_matches, untolerated_taint};
use crate::selectors::LabelSelector;
use crate::store::{DeleteOptions, Part, Store};

/// Errors of this module are API errors.
pub type WorkloadError = ApiError;

fn pods() -> ResKey {
    ResKey::new("", "pods")
}

fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

fn owner_ref(owner: &Value, kind: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": meta::name(owner), "uid": meta::uid(owner),
           "controller": true, "blockOwnerDeletion": true})
}

fn pod_from_template(owner: &Value, kind: &str, node: Option<&str>) -> Value {
    let template = &owner["spec"]["template"];
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-{}", meta::name(owner), meta::random_suffix(5)),
            "namespace": meta::namespace(owner),
            "labels": template["metadata"]["labels"],
            "ownerReferences": [owner_ref(owner, kind)],
        },
        "spec": template["spec"],
    });
    if template["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    }
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn active(pod: &Value) -> bool {
    !meta::is_terminating(pod)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

/// Deletes pod `p`, as a controller does: a pod already gone is no error.
fn delete_pod(store: &Store, p: &Value) {
    let _ = store.delete(
        &pods(),
        meta::namespace(p),
        meta::name(p),
        &DeleteOptions::default(),
    );
}

/// How many of `pods` are Ready.
fn ready_count(pods: &[impl AsRef<Value>]) -> usize {
    pods.iter()
        .filter(|p| meta::condition_true(p.as_ref(), "Ready"))
        .count()
}

/// Objects grouped by the uid of their controller.
type ByOwner = HashMap<String, Vec<Arc<Value>>>;

fn group_by_owner(all: &[Arc<Value>]) -> ByOwner {
    let mut map: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in all {
        if let Some(uid) = controller_uid(p) {
            map.entry(uid.to_owned()).or_default().push(p.clone());
        }
    }
    map
}

fn write_status(store: &Store, key: &ResKey, obj: &Value, status: Value) {
    let mut merged = obj["status"].clone();
    if !merged.is_object() {
        merged = json!({});
    }
    if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in s {
            m.insert(k.clone(), v.clone());
        }
    }
    if merged == obj["status"] {
        return;
    }
    let _ = store.modify(
        key,
        meta::namespace(obj),
        meta::name(obj),
        Part::Status,
        |o| {
            o["status"] = merged;
            Ok(())
        },
    );
}

/// The objects of `owner_key` that are not being deleted, with the objects
/// of `owned_key` grouped by their controller's uid (none are listed when
/// there are no owners).
fn live_owners(
    store: &Store,
    owner_key: &ResKey,
    owned_key: &ResKey,
) -> (Vec<Arc<Value>>, ByOwner) {
    let (owners, _) = store.list(owner_key, "");
    if owners.is_empty() {
        return (owners, HashMap::new());
    }
    let (owned, _) = store.list(owned_key, "");
    let live = owners
        .into_iter()
        .filter(|o| !meta::is_terminating(o))
        .collect();
    (live, group_by_owner(&owned))
}

/// The ReplicaSet controller.
pub fn reconcile_replicasets(store: &Store) {
    let key = ResKey::new("apps", "replicasets");
    let (sets, owned) = live_owners(store, &key, &pods());
    for rs in sets {
        let want = rs["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let mine: Vec<&Arc<Value>> = owned
            .get(meta::uid(&rs))
            .map(|v| v.iter().filter(|p| active(p)).collect())
            .unwrap_or_default();
        if mine.len() < want {
            for _ in mine.len()..want {
                let _ = store.create(
                    &pods(),
                    meta::namespace(&rs),
                    pod_from_template(&rs, "ReplicaSet", None),
                );
            }
        } else if mine.len() > want {
            let mut doomed = mine.clone();
            doomed.sort_by_key(|p| {
                (
                    p["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty()),
                    meta::condition_true(p, "Ready"),
                    std::cmp::Reverse(meta::resource_version(p)),
                )
            });
            for p in doomed.iter().take(mine.len() - want) {
                delete_pod(store, p);
            }
        }
        let selector = LabelSelector::from_object(&rs["spec"]["selector"]).unwrap_or_default();
        let ready = ready_count(&mine);
        write_status(
            store,
            &key,
            &rs,
            json!({
                "replicas": mine.len(),
                "fullyLabeledReplicas": mine.iter().filter(|p| selector.matches_object(p)).count(),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
            }),
        );
    }
}

/// The Deployment controller.
pub fn reconcile_deployments(store: &Store) {
    let key = ResKey::new("apps", "deployments");
    let rs_key = ResKey::new("apps", "replicasets");
    let (deployments, owned) = live_owners(store, &key, &rs_key);
    let now = meta::format_time(store.clock().now());
    for d in deployments {
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
        let hash = meta::stable_hash(&d["spec"]["template"]);
        let rs_name = format!("{}-{hash}", meta::name(&d));
        let mine = owned.get(meta::uid(&d)).cloned().unwrap_or_default();
        let current = mine.iter().find(|rs| meta::name(rs) == rs_name);
        match current {
            None => {
                let mut template = d["spec"]["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": rs_name, "namespace": meta::namespace(&d),
                        "labels": template["metadata"]["labels"],
                        "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string()},
                        "ownerReferences": [owner_ref(&d, "Deployment")]},
                    "spec": {"replicas": replicas, "selector": selector, "template": template},
                });
                let _ = store.create(&rs_key, meta::namespace(&d), rs);
            }
            Some(rs) if rs["spec"]["replicas"].as_u64() != Some(replicas) => {
                let _ = store.modify(
                    &rs_key,
                    meta::namespace(rs),
                    meta::name(rs),
                    Part::Main,
                    |o| {
                        o["spec"]["replicas"] = json!(replicas);
                        Ok(())
                    },
                );
            }
            Some(_) => {}
        }
        for old in mine.iter().filter(|rs| meta::name(rs) != rs_name) {
            if old["spec"]["replicas"].as_u64() != Some(0) {
                let _ = store.modify(
                    &rs_key,
                    meta::namespace(old),
                    meta::name(old),
                    Part::Main,
                    |o| {
                        o["spec"]["replicas"] = json!(0);
                        Ok(())
                    },
                );
            }
        }
        let sum = |field: &str| -> u64 {
            mine.iter()
                .map(|rs| rs["status"][field].as_u64().unwrap_or(0))
                .sum()
        };
        let updated = current.map_or(0, |rs| rs["status"]["replicas"].as_u64().unwrap_or(0));
        let available = sum("availableReplicas");
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": sum("replicas"),
            "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": replicas.saturating_sub(available),
        });
        let (avail, reason, message) = if available >= replicas {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let since = d["status"]["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "Available" && c["status"] == avail)
            })
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(now));
        status["conditions"] = json!([
            {"type": "Available", "status": avail, "reason": reason, "message": message,
             "lastUpdateTime": since, "lastTransitionTime": since},
        ]);
        write_status(store, &key, &d, status);
    }
}

const DAEMON_TOLERATIONS: [(&str, &str); 7] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ("node.kubernetes.io/network-unavailable", "NoSchedule"),
];

/// The DaemonSet controller.
pub fn reconcile_daemonsets(store: &Store) {
    let key = ResKey::new("apps", "daemonsets");
    let (sets, owned) = live_owners(store, &key, &pods());
    if sets.is_empty() {
        return;
    }
    let (nodes, _) = store.list(&ResKey::new("", "nodes"), "");
    for ds in sets {
        let mut template_pod = pod_from_template(&ds, "DaemonSet", None);
        let tolerations = template_pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut all_tolerations = tolerations;
        for (k, effect) in DAEMON_TOLERATIONS {
            all_tolerations.push(json!({"key": k, "operator": "Exists", "effect": effect}));
        }
        template_pod["spec"]["tolerations"] = json!(all_tolerations);
        // Lifecycle NoSchedule taints for not-ready/unreachable are tolerated too.
        let mut probe = template_pod.clone();
        if let Some(ts) = probe["spec"]["tolerations"].as_array_mut() {
            ts.push(json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}));
            ts.push(json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}));
        }
        let eligible: Vec<&str> = nodes
            .iter()
            .filter(|n| node_matches(&probe, n) && untolerated_taint(&probe, n).is_none())
            .map(|n| meta::name(n))
            .collect();
        let mine: Vec<Arc<Value>> = owned
            .get(meta::uid(&ds))
            .map(|v| v.iter().filter(|p| active(p)).cloned().collect())
            .unwrap_or_default();
        let mut by_node: BTreeMap<&str, Vec<&Arc<Value>>> = BTreeMap::new();
        for p in &mine {
            by_node
                .entry(p["spec"]["nodeName"].as_str().unwrap_or_default())
                .or_default()
                .push(p);
        }
        for node in &eligible {
            if !by_node.contains_key(node) {
                let mut pod = template_pod.clone();
                pod["metadata"]["name"] =
                    json!(format!("{}-{}", meta::name(&ds), meta::random_suffix(5)));
                pod["spec"]["nodeName"] = json!(node);
                let _ = store.create(&pods(), meta::namespace(&ds), pod);
            }
        }
        for (node, ps) in &by_node {
            let keep = usize::from(eligible.contains(node));
            for p in ps.iter().skip(keep) {
                delete_pod(store, p);
            }
        }
        let scheduled = by_node.keys().filter(|n| eligible.contains(n)).count();
        let ready = ready_count(&mine);
        write_status(
            store,
            &key,
            &ds,
            json!({
                "desiredNumberScheduled": eligible.len(),
                "currentNumberScheduled": scheduled,
                "updatedNumberScheduled": scheduled,
                "numberMisscheduled": by_node.keys().filter(|n| !eligible.contains(n)).count(),
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": eligible.len().saturating_sub(ready),
                "observedGeneration": ds["metadata"]["generation"],
            }),
        );
    }
}
