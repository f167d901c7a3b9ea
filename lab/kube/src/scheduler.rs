//! The scheduler: binds pending pods to Ready, schedulable nodes that fit
//! their requests (cpu, memory, pods, extended resources), node selector,
//! required node affinity and taints/tolerations; marks the rest
//! `PodScheduled=False, reason Unschedulable` with the real scheduler's
//! message (`0/3 nodes are available: ...`). Also the `binding` subresource.
//! CSI volumes count against each node's CSINode `allocatable.count`, as
//! the `NodeVolumeLimits` plugin counts them ("node(s) exceed max volume
//! count").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::controllers::volumes::{ATTACHABLE_PREFIX, VolumeFacts};
use crate::error::ApiError;
use crate::meta;
use crate::resources::ResKey;
use crate::selectors::{LabelSelector, labels_of};
use crate::store::{Part, Store};

/// Errors of this module are API errors.
pub type SchedulerError = ApiError;

/// Resources in use per node, by resource name.
pub type Usage = HashMap<String, BTreeMap<String, i128>>;

fn pods() -> ResKey {
    ResKey::new("", "pods")
}

fn nodes() -> ResKey {
    ResKey::new("", "nodes")
}

/// Parses a Kubernetes quantity (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) into
/// thousandths of its unit (so cpu `100m` is 100 and memory `1Ki` is 1,024,000).
pub fn parse_milli(q: &Value) -> i128 {
    let text = match q {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return 0,
    };
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| text.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((text.as_str(), 1.0));
    let value: f64 = number.parse().unwrap_or(0.0);
    (value * factor * 1000.0).round() as i128
}

/// What a pod asks for: containers summed, each init container as a floor.
pub fn pod_requests(pod: &Value) -> BTreeMap<String, i128> {
    let mut total: BTreeMap<String, i128> = BTreeMap::new();
    let requests_of = |c: &Value| -> BTreeMap<String, i128> {
        let mut r: BTreeMap<String, i128> = BTreeMap::new();
        for field in ["limits", "requests"] {
            if let Some(m) = c["resources"][field].as_object() {
                for (k, v) in m {
                    r.insert(k.clone(), parse_milli(v));
                }
            }
        }
        r
    };
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for (k, v) in requests_of(c) {
            *total.entry(k).or_default() += v;
        }
    }
    for c in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (k, v) in requests_of(c) {
            let slot = total.entry(k).or_default();
            *slot = (*slot).max(v);
        }
    }
    total.insert("pods".into(), 1000);
    total
}

fn node_allocatable(node: &Value) -> BTreeMap<String, i128> {
    let source = if node["status"]["allocatable"].is_object() {
        &node["status"]["allocatable"]
    } else {
        &node["status"]["capacity"]
    };
    source
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), parse_milli(v))).collect())
        .unwrap_or_default()
}

/// Whether a toleration tolerates a taint.
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect_ok = toleration["effect"].as_str().is_none_or(str::is_empty)
        || toleration["effect"] == taint["effect"];
    if !effect_ok {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or_default();
    let exists = toleration["operator"] == "Exists";
    if key.is_empty() {
        return exists;
    }
    if taint["key"].as_str() != Some(key) {
        return false;
    }
    exists
        || toleration["value"].as_str().unwrap_or_default()
            == taint["value"].as_str().unwrap_or_default()
}

/// The first NoSchedule/NoExecute taint of `node` the pod does not tolerate.
pub fn untolerated_taint<'a>(pod: &Value, node: &'a Value) -> Option<&'a Value> {
    let tolerations = pod["spec"]["tolerations"].as_array();
    node["spec"]["taints"].as_array()?.iter().find(|taint| {
        matches!(taint["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
            && !tolerations.is_some_and(|ts| ts.iter().any(|t| tolerates(t, taint)))
    })
}

fn match_expression(expr: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = expr["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match expr["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => match (
            value.and_then(number),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
        "Lt" => match (
            value.and_then(number),
            values.first().and_then(|v| number(v)),
        ) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
        _ => false,
    }
}

/// Whether a node satisfies the pod's nodeSelector and required node affinity.
pub fn node_matches(pod: &Value, node: &Value) -> bool {
    node_matches_labels(pod, meta::name(node), &labels_of(node))
}

fn node_matches_labels(pod: &Value, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    if let Some(sel) = pod["spec"]["nodeSelector"].as_object()
        && !sel
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    {
        return false;
    }
    let required =
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let Some(terms) = required["nodeSelectorTerms"].as_array() else {
        return true;
    };
    terms.iter().any(|term| {
        let exprs_ok = term["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                match_expression(e, labels.get(key).map(String::as_str))
            });
        let fields_ok = term["matchFields"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let value = (e["key"] == "metadata.name").then_some(node_name);
                match_expression(e, value)
            });
        let empty = term["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
            && term["matchFields"].as_array().is_none_or(Vec::is_empty);
        !empty && exprs_ok && fields_ok
    })
}

/// Resources in use on each node by the pods bound to it.
pub fn usage_by_node(pods: &[Arc<Value>]) -> Usage {
    let mut used: Usage = HashMap::new();
    for p in pods {
        let Some(node) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let entry = used.entry(node.to_owned()).or_default();
        for (k, v) in pod_requests(p) {
            *entry.entry(k).or_default() += v;
        }
    }
    used
}

/// Adds the CSI volumes in use on each node (distinct volumes per driver,
/// of pods not finished) to `used`.
fn volume_usage(volumes: &VolumeFacts, pods: &[Arc<Value>], used: &mut Usage) {
    let mut per_node: HashMap<&str, BTreeSet<(String, String)>> = HashMap::new();
    for p in pods {
        let Some(node) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        per_node
            .entry(node)
            .or_default()
            .extend(volumes.pod_volumes(p));
    }
    for (node, set) in per_node {
        let entry = used.entry(node.to_owned()).or_default();
        for (driver, _) in set {
            *entry
                .entry(format!("{ATTACHABLE_PREFIX}{driver}"))
                .or_default() += 1000;
        }
    }
}

/// What the scheduler needs of a node, computed once per pass.
struct NodeInfo<'a> {
    node: &'a Value,
    name: &'a str,
    ready: bool,
    labels: BTreeMap<String, String>,
    allocatable: BTreeMap<String, i128>,
}

fn reject_reason(
    pod: &Value,
    info: &NodeInfo<'_>,
    used: &BTreeMap<String, i128>,
    wants: &BTreeMap<String, i128>,
) -> Option<String> {
    let node = info.node;
    if node["spec"]["unschedulable"].as_bool() == Some(true)
        && !pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                tolerates(
                    t,
                    &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
                )
            })
        })
    {
        return Some("node(s) were unschedulable".into());
    }
    if !node_matches_labels(pod, info.name, &info.labels) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(taint) = untolerated_taint(pod, node) {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint["key"].as_str().unwrap_or_default(),
            taint["value"].as_str().unwrap_or_default()
        ));
    }
    let allocatable = &info.allocatable;
    for (resource, want) in wants {
        let volumes = resource.starts_with(ATTACHABLE_PREFIX);
        if *want == 0 || (volumes && !allocatable.contains_key(resource)) {
            continue;
        }
        let have = allocatable.get(resource).copied().unwrap_or(0);
        let in_use = used.get(resource).copied().unwrap_or(0);
        if in_use + want > have {
            return Some(if resource == "pods" {
                "Too many pods".into()
            } else if volumes {
                "node(s) exceed max volume count".into()
            } else {
                format!("Insufficient {resource}")
            });
        }
    }
    None
}

/// Whether some placed pod matching `term` runs in the same topology
/// domain (`topologyKey` value) as `info`'s node.
fn domain_has_match(
    pod: &Value,
    term: &Value,
    info: &NodeInfo<'_>,
    infos: &[NodeInfo<'_>],
    placed: &HashMap<String, Vec<Value>>,
) -> bool {
    let Some(key) = term["topologyKey"].as_str() else {
        return false;
    };
    let Some(domain) = info.labels.get(key) else {
        return false;
    };
    let selector = LabelSelector::from_object(&term["labelSelector"]).unwrap_or_default();
    let namespaces: Vec<&str> = term["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .filter(|v: &Vec<&str>| !v.is_empty())
        .unwrap_or_else(|| vec![meta::namespace(pod)]);
    infos
        .iter()
        .filter(|other| other.labels.get(key) == Some(domain))
        .filter_map(|other| placed.get(other.name))
        .flatten()
        .any(|q| {
            namespaces.contains(&meta::namespace(q))
                && term["labelSelector"].is_object()
                && selector.matches_object(q)
        })
}

/// Why required inter-pod (anti-)affinity rules the node out, if they do.
fn inter_pod_reason(
    pod: &Value,
    info: &NodeInfo<'_>,
    infos: &[NodeInfo<'_>],
    placed: &HashMap<String, Vec<Value>>,
) -> Option<String> {
    let affinity = &pod["spec"]["affinity"];
    let required = |kind: &str| -> Vec<Value> {
        affinity[kind]["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for term in required("podAntiAffinity") {
        if domain_has_match(pod, &term, info, infos, placed) {
            return Some("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    for term in required("podAffinity") {
        if domain_has_match(pod, &term, info, infos, placed) {
            continue;
        }
        // The first pod of a group may go anywhere if it matches its own term.
        let selector = LabelSelector::from_object(&term["labelSelector"]).unwrap_or_default();
        let anywhere = infos
            .iter()
            .any(|other| domain_has_match(pod, &term, other, infos, placed));
        if anywhere
            || !selector.matches_object(pod)
            || !info
                .labels
                .contains_key(term["topologyKey"].as_str().unwrap_or_default())
        {
            return Some("node(s) didn't match pod affinity rules".into());
        }
    }
    None
}

/// The message of a failed scheduling attempt.
fn unschedulable_message(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
        parts.join(", ")
    )
}

/// One scheduling pass over every pending pod.
pub fn reconcile(store: &Store) {
    let (all_pods, _) = store.list(&pods(), "");
    let pending: Vec<&Arc<Value>> = all_pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty))
        .filter(|p| !meta::is_terminating(p))
        .filter(|p| {
            p["spec"]["schedulerName"]
                .as_str()
                .is_none_or(|s| s == "default-scheduler")
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let (all_nodes, _) = store.list(&nodes(), "");
    let volumes = VolumeFacts::read(store);
    let infos: Vec<NodeInfo<'_>> = all_nodes
        .iter()
        .map(|n| {
            let mut allocatable = node_allocatable(n);
            allocatable.extend(volumes.node_limits(meta::name(n)));
            NodeInfo {
                node: n,
                name: meta::name(n),
                ready: meta::condition_true(n, "Ready"),
                labels: labels_of(n),
                allocatable,
            }
        })
        .collect();
    let mut used = usage_by_node(&all_pods);
    volume_usage(&volumes, &all_pods, &mut used);
    let mut placed: HashMap<String, Vec<Value>> = HashMap::new();
    let inter_pod = pending.iter().any(|p| {
        let a = &p["spec"]["affinity"];
        a["podAffinity"].is_object() || a["podAntiAffinity"].is_object()
    });
    for p in all_pods
        .iter()
        .filter(|p| inter_pod && !meta::is_terminating(p))
    {
        if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            placed.entry(n.to_owned()).or_default().push(placement(p));
        }
    }
    let now = meta::format_time(store.clock().now());
    for pod in pending {
        let mut wants = pod_requests(pod);
        wants.extend(volumes.pod_wants(pod));
        match choose_node(pod, &wants, &infos, &used, &placed) {
            Ok(node) => {
                let node_name = meta::name(node).to_owned();
                if !bind_chosen(store, pod, &node_name, &now) {
                    continue;
                }
                if inter_pod {
                    placed
                        .entry(node_name.clone())
                        .or_default()
                        .push(placement(pod));
                }
                let entry = used.entry(node_name).or_default();
                for (k, v) in wants {
                    *entry.entry(k).or_default() += v;
                }
            }
            Err(reasons) => {
                let message = unschedulable_message(all_nodes.len(), &reasons);
                mark_unschedulable(store, pod, &message, &now);
            }
        }
    }
}

/// What inter-pod affinity needs to know of a pod placed on a node: its
/// namespace and labels.
fn placement(pod: &Value) -> Value {
    json!({
        "metadata": {"namespace": pod["metadata"]["namespace"], "labels": pod["metadata"]["labels"]},
    })
}

/// The node `pod` goes to: of those that take it, the one with the most
/// free cpu (least allocated). Without one, the count of nodes per reason.
fn choose_node<'a>(
    pod: &Value,
    wants: &BTreeMap<String, i128>,
    infos: &[NodeInfo<'a>],
    used: &Usage,
    placed: &HashMap<String, Vec<Value>>,
) -> Result<&'a Value, BTreeMap<String, usize>> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut chosen: Option<&Value> = None;
    let mut best_free = i128::MIN;
    let empty = BTreeMap::new();
    for info in infos {
        let node = info.node;
        let node_used = used.get(info.name).unwrap_or(&empty);
        if !info.ready {
            // The lifecycle controller's not-ready taint explains it;
            // without one, report it the same way.
            let reason = untolerated_taint(pod, node)
                .map(|t| {
                    format!(
                        "node(s) had untolerated taint {{{}: }}",
                        t["key"].as_str().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| {
                    "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into()
                });
            *reasons.entry(reason).or_default() += 1;
            continue;
        }
        let verdict = reject_reason(pod, info, node_used, wants)
            .or_else(|| inter_pod_reason(pod, info, infos, placed));
        match verdict {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => {
                // Least allocated: prefer the node with most free cpu.
                let free = info.allocatable.get("cpu").copied().unwrap_or(0)
                    - node_used.get("cpu").copied().unwrap_or(0);
                if free > best_free {
                    best_free = free;
                    chosen = Some(node);
                }
            }
        }
    }
    chosen.ok_or(reasons)
}

/// Binds `pod` to `node_name` unless something bound it meanwhile; whether
/// the store took the change.
fn bind_chosen(store: &Store, pod: &Value, node_name: &str, now: &str) -> bool {
    store
        .modify(
            &pods(),
            meta::namespace(pod),
            meta::name(pod),
            Part::Internal,
            |p| {
                if p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    return Ok(());
                }
                p["spec"]["nodeName"] = json!(node_name);
                set_condition(p, "PodScheduled", "True", None, None, now);
                Ok(())
            },
        )
        .is_ok()
}

/// Marks `pod` `PodScheduled=False, reason Unschedulable` with `message`,
/// unless it already says so.
fn mark_unschedulable(store: &Store, pod: &Value, message: &str, now: &str) {
    let already = meta::condition(pod, "PodScheduled")
        .is_some_and(|c| c["status"] == "False" && c["message"] == message);
    if already {
        return;
    }
    // A pod deleted meanwhile is fine.
    let _ = store.modify(
        &pods(),
        meta::namespace(pod),
        meta::name(pod),
        Part::Internal,
        |p| {
            set_condition(
                p,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message),
                now,
            );
            Ok(())
        },
    );
}

/// Sets a condition on `status.conditions`, keeping lastTransitionTime
/// when the status does not change.
pub fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    now: &str,
) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let mut cond =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == kind) {
            Some(existing) => {
                if existing["status"] == status {
                    cond["lastTransitionTime"] = existing["lastTransitionTime"].clone();
                }
                *existing = cond;
            }
            None => list.push(cond),
        }
    }
}

/// Handles `POST pods/{name}/binding`.
///
/// # Errors
/// `NotFound`; `Conflict` when the pod is already bound.
pub fn bind(store: &Store, namespace: &str, name: &str, binding: &Value) -> Result<(), ApiError> {
    let target = binding["target"]["name"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("Binding", name, "target.name", "Required value"))?
        .to_owned();
    let now = meta::format_time(store.clock().now());
    store.modify(&pods(), namespace, name, Part::Internal, |p| {
        if let Some(current) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_with(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        p["spec"]["nodeName"] = json!(target);
        set_condition(p, "PodScheduled", "True", None, None, &now);
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_into_thousandths() {
        assert_eq!(parse_milli(&json!("100m")), 100);
        assert_eq!(parse_milli(&json!("2")), 2000);
        assert_eq!(parse_milli(&json!(2)), 2000);
        assert_eq!(parse_milli(&json!("1Ki")), 1_024_000);
        assert_eq!(parse_milli(&json!("1G")), 1_000_000_000_000);
    }

    #[test]
    fn an_exists_toleration_without_key_tolerates_every_taint() {
        let taint = json!({"key": "gpu", "value": "x", "effect": "NoSchedule"});
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(tolerates(
            &json!({"key": "gpu", "operator": "Equal", "value": "x"}),
            &taint
        ));
        assert!(!tolerates(&json!({"key": "gpu", "value": "y"}), &taint));
        assert!(!tolerates(
            &json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}),
            &taint
        ));
    }

    #[test]
    fn required_node_affinity_supports_set_and_numeric_operators() {
        let node = json!({"metadata": {"name": "n", "labels": {"zone": "a", "cores": "16"}}});
        let pod = |expr: Value| json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}}});
        assert!(node_matches(
            &pod(json!({"key": "zone", "operator": "In", "values": ["a", "b"]})),
            &node
        ));
        assert!(!node_matches(
            &pod(json!({"key": "zone", "operator": "NotIn", "values": ["a"]})),
            &node
        ));
        assert!(node_matches(
            &pod(json!({"key": "cores", "operator": "Gt", "values": ["8"]})),
            &node
        ));
        assert!(!node_matches(
            &pod(json!({"key": "cores", "operator": "Lt", "values": ["8"]})),
            &node
        ));
        assert!(node_matches(
            &pod(json!({"key": "gpu", "operator": "DoesNotExist"})),
            &node
        ));
    }

    #[test]
    fn required_pod_anti_affinity_keeps_replicas_on_different_hosts() {
        let node = |name: &str| {
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                   "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
        };
        let (a, b) = (node("a"), node("b"));
        let infos: Vec<NodeInfo<'_>> = [&a, &b]
            .iter()
            .map(|n| NodeInfo {
                node: n,
                name: meta::name(n),
                ready: true,
                labels: labels_of(n),
                allocatable: node_allocatable(n),
            })
            .collect();
        let pod = json!({"metadata": {"namespace": "default", "labels": {"app": "db"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
        let mut placed = HashMap::new();
        placed.insert(
            "a".to_owned(),
            vec![json!({"metadata": {"namespace": "default", "labels": {"app": "db"}}})],
        );
        assert_eq!(
            inter_pod_reason(&pod, &infos[0], &infos, &placed).as_deref(),
            Some("node(s) didn't match pod anti-affinity rules")
        );
        assert_eq!(inter_pod_reason(&pod, &infos[1], &infos, &placed), None);
    }

    #[test]
    fn the_unschedulable_message_counts_reasons_like_the_real_scheduler() {
        let mut reasons = BTreeMap::new();
        reasons.insert("Insufficient cpu".to_owned(), 2);
        reasons.insert("node(s) were unschedulable".to_owned(), 1);
        assert!(unschedulable_message(3, &reasons).starts_with(
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable."
        ));
    }
}
