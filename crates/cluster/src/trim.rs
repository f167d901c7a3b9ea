//! Cutting cached nodes and pods down to the fields Tidepool reads.
//!
//! The node and pod caches keep every object of the cluster for the life
//! of the process. A real pod is 10–20 KB of JSON and several times that
//! once deserialized, and most of it is never looked at by Tidepool:
//! managed fields, the `kubectl apply` annotation, container images,
//! commands, env, probes, mounts and security settings, configMap and
//! secret volumes, container statuses; a node's image list and system
//! info. [`pod`] and [`node`] drop all of that; [`crate::Cache::start_with`]
//! applies them to every object before it enters the store.
//!
//! # Guarantees
//! Kept for pods, which covers everything the planner's pod view reads
//! (requests, selectors, affinity, tolerations, PVCs, DaemonSet ownership,
//! annotations, phase, the Unschedulable condition) and everything
//! [`crate::drain::classify`] reads:
//! - metadata: see below;
//! - spec: `nodeName`, `nodeSelector`, `tolerations`, the node affinity
//!   and pod anti-affinity (pod affinity is dropped); containers and init
//!   containers with only `name`, `resources.requests` and `restartPolicy`
//!   (limits are not read: the API server fills missing requests from
//!   them before the object is stored); the
//!   volumes that are `emptyDir`, `persistentVolumeClaim` or `ephemeral`,
//!   whole (every other volume is dropped);
//! - status: `phase` and the `PodScheduled` condition's `type`, `status`,
//!   `reason` and `lastTransitionTime`.
//!
//! Kept for nodes: the metadata below; spec `taints`, `unschedulable` and
//! `providerID`; status `capacity`, `allocatable`, `addresses`, and each
//! condition's `type`, `status`, `reason` and `lastTransitionTime`.
//!
//! Metadata of both: name, namespace, uid, resourceVersion, creation and
//! deletion timestamps, labels, owner references, and the annotations
//! except `kubectl.kubernetes.io/last-applied-configuration`.
//!
//! Everything else is gone from cached objects. Code that starts reading
//! another field from the caches must add it here first; code that needs
//! whole objects (the drain does) reads them from the API server.
//!
//! Trimming cannot shrink the objects below the size of the k8s-openapi
//! structs themselves (a `Pod` is about 2.4 KB before any string, each
//! `Container` about 2.3 KB and each `Volume` about 3.3 KB), which is why
//! containers and volumes that no reader needs are removed, not emptied.

use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec,
    PodStatus, ResourceRequirements, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The annotation `kubectl apply` stores the whole applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `Some` non-empty vector without spare capacity, or `None`.
fn compact<T>(v: Option<Vec<T>>) -> Option<Vec<T>> {
    v.filter(|v| !v.is_empty()).map(|mut v| {
        v.shrink_to_fit();
        v
    })
}

fn trim_metadata(meta: &mut ObjectMeta) {
    let old = std::mem::take(meta);
    let annotations = old
        .annotations
        .map(|mut a| {
            a.remove(LAST_APPLIED);
            a
        })
        .filter(|a| !a.is_empty());
    *meta = ObjectMeta {
        name: old.name,
        namespace: old.namespace,
        uid: old.uid,
        resource_version: old.resource_version,
        creation_timestamp: old.creation_timestamp,
        deletion_timestamp: old.deletion_timestamp,
        labels: old.labels,
        annotations,
        owner_references: compact(old.owner_references),
        ..ObjectMeta::default()
    };
}

fn trim_container(c: Container) -> Container {
    let requests = c.resources.and_then(|r| r.requests);
    Container {
        name: c.name,
        resources: requests.map(|requests| ResourceRequirements {
            requests: Some(requests),
            ..ResourceRequirements::default()
        }),
        restart_policy: c.restart_policy,
        ..Container::default()
    }
}

fn trim_containers(containers: Vec<Container>) -> Vec<Container> {
    let mut out: Vec<Container> = containers.into_iter().map(trim_container).collect();
    out.shrink_to_fit();
    out
}

/// Whether a volume matters to Tidepool: scratch space lost on eviction,
/// or a claim that attaches a disk.
fn volume_is_kept(v: &Volume) -> bool {
    v.empty_dir.is_some() || v.persistent_volume_claim.is_some() || v.ephemeral.is_some()
}

fn trim_affinity(a: Affinity) -> Option<Affinity> {
    let kept = Affinity {
        node_affinity: a.node_affinity,
        pod_anti_affinity: a.pod_anti_affinity,
        pod_affinity: None,
    };
    (kept.node_affinity.is_some() || kept.pod_anti_affinity.is_some()).then_some(kept)
}

fn trim_pod_spec(s: PodSpec) -> PodSpec {
    PodSpec {
        node_name: s.node_name,
        node_selector: s.node_selector,
        affinity: s.affinity.and_then(trim_affinity),
        tolerations: compact(s.tolerations),
        containers: trim_containers(s.containers),
        init_containers: s
            .init_containers
            .map(trim_containers)
            .filter(|c| !c.is_empty()),
        volumes: compact(
            s.volumes
                .map(|v| v.into_iter().filter(volume_is_kept).collect()),
        ),
        ..PodSpec::default()
    }
}

fn trim_pod_status(s: PodStatus) -> PodStatus {
    let conditions = s.conditions.map(|cs| {
        cs.into_iter()
            .filter(|c| c.type_ == "PodScheduled")
            .map(|c| PodCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                last_transition_time: c.last_transition_time,
                ..PodCondition::default()
            })
            .collect()
    });
    PodStatus {
        phase: s.phase,
        conditions: compact(conditions),
        ..PodStatus::default()
    }
}

/// Cuts a pod down to the fields listed in the [module docs](self).
/// Idempotent.
pub fn pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    pod.spec = pod.spec.take().map(trim_pod_spec);
    pod.status = pod.status.take().map(trim_pod_status);
}

fn trim_node_condition(c: NodeCondition) -> NodeCondition {
    NodeCondition {
        type_: c.type_,
        status: c.status,
        reason: c.reason,
        last_transition_time: c.last_transition_time,
        ..NodeCondition::default()
    }
}

/// Cuts a node down to the fields listed in the [module docs](self).
/// Idempotent.
pub fn node(node: &mut Node) {
    trim_metadata(&mut node.metadata);
    node.spec = node.spec.take().map(|s| NodeSpec {
        taints: compact(s.taints),
        unschedulable: s.unschedulable,
        provider_id: s.provider_id,
        ..NodeSpec::default()
    });
    node.status = node.status.take().map(|s| NodeStatus {
        capacity: s.capacity,
        allocatable: s.allocatable,
        addresses: compact(s.addresses),
        conditions: compact(
            s.conditions
                .map(|cs| cs.into_iter().map(trim_node_condition).collect()),
        ),
        ..NodeStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::{DO_NOT_DISRUPT, MIRROR_POD, SAFE_TO_EVICT, classify};
    use serde_json::{Value, json};

    fn full_container(name: &str, cpu: &str) -> Value {
        json!({
            "name": name, "image": "registry.example/shop/web:1.2.3",
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/web"], "args": ["--port=8080"],
            "env": [{"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "envFrom": [{"configMapRef": {"name": "web-env"}}],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": cpu, "memory": "256Mi", "nvidia.com/gpu": "1"},
                          "limits": {"memory": "256Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
            "startupProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
            "securityContext": {"runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
        })
    }

    /// A pod as the API server returns it, with everything a real one carries.
    fn full_pod(extra_meta: Value) -> Pod {
        let mut metadata = json!({
            "name": "web-7d9f-abcde", "namespace": "shop", "uid": "u-1",
            "resourceVersion": "42", "generateName": "web-7d9f-",
            "creationTimestamp": "2026-03-01T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "annotations": {LAST_APPLIED: "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
                            "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d9f", "uid": "rs-1", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
        });
        if let (Some(m), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
            for (k, v) in extra {
                match (m.get_mut(k).and_then(Value::as_object_mut), v.as_object()) {
                    (Some(existing), Some(more)) => existing.extend(more.clone()),
                    _ => {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": "worker-1",
                "nodeSelector": {"node-pool": "burst"},
                "tolerations": [{"key": "tidepool.dev/burst", "operator": "Exists",
                                 "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a"]}]}]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app": "web"}}}]},
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app": "cache"}}}]},
                },
                "containers": [full_container("web", "500m"), full_container("envoy", "100m")],
                "initContainers": [full_container("migrate", "1")],
                "volumes": [
                    {"name": "config", "configMap": {"name": "web-config"}},
                    {"name": "tls", "secret": {"secretName": "web-tls"}},
                    {"name": "kube-api-access-x1y2z", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
                ],
                "serviceAccountName": "web",
                "securityContext": {"fsGroup": 1000},
                "dnsPolicy": "ClusterFirst",
                "imagePullSecrets": [{"name": "registry"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-03-01T10:00:05Z"},
                    {"type": "PodScheduled", "status": "True", "reason": "Scheduled",
                     "message": "assigned to worker-1",
                     "lastTransitionTime": "2026-03-01T10:00:01Z"},
                ],
                "hostIP": "10.0.0.5", "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2026-03-01T10:00:01Z",
                "qosClass": "Burstable",
                "containerStatuses": [{"name": "web", "image": "registry.example/shop/web:1.2.3",
                    "imageID": "sha256:0", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-03-01T10:00:04Z"}}}],
            },
        }))
        .unwrap()
    }

    fn trimmed(mut p: Pod) -> Pod {
        pod(&mut p);
        p
    }

    #[test]
    fn a_trimmed_pod_keeps_what_the_planner_reads() {
        let full = full_pod(json!({}));
        let t = trimmed(full.clone());
        assert_eq!(t.metadata.name, full.metadata.name);
        assert_eq!(t.metadata.namespace, full.metadata.namespace);
        assert_eq!(t.metadata.uid, full.metadata.uid);
        assert_eq!(t.metadata.resource_version, full.metadata.resource_version);
        assert_eq!(t.metadata.labels, full.metadata.labels);
        assert_eq!(t.metadata.owner_references, full.metadata.owner_references);
        assert_eq!(
            t.metadata.annotations.unwrap()["prometheus.io/scrape"],
            "true"
        );

        let (spec, full_spec) = (t.spec.unwrap(), full.spec.unwrap());
        assert_eq!(spec.node_name.as_deref(), Some("worker-1"));
        assert_eq!(spec.node_selector, full_spec.node_selector);
        assert_eq!(spec.tolerations, full_spec.tolerations);
        let (affinity, full_affinity) = (spec.affinity.unwrap(), full_spec.affinity.unwrap());
        assert_eq!(affinity.node_affinity, full_affinity.node_affinity);
        assert_eq!(affinity.pod_anti_affinity, full_affinity.pod_anti_affinity);
        let names = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&spec.containers), ["web", "envoy"]);
        let requests = |c: &Container| c.resources.as_ref().and_then(|r| r.requests.clone());
        for (c, f) in spec.containers.iter().zip(&full_spec.containers) {
            assert_eq!(requests(c), requests(f));
            assert!(requests(c).is_some());
        }
        let init = spec.init_containers.unwrap();
        assert_eq!(names(&init), ["migrate"]);
        assert_eq!(
            requests(&init[0]),
            requests(&full_spec.init_containers.unwrap()[0])
        );
        let volumes = spec.volumes.unwrap();
        let volume_names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(volume_names, ["scratch", "data"]);
        assert!(volumes[0].empty_dir.is_some());
        assert_eq!(
            volumes[1]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "web-data"
        );

        let status = t.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "PodScheduled");
        assert_eq!(conditions[0].reason.as_deref(), Some("Scheduled"));
        assert!(conditions[0].last_transition_time.is_some());
    }

    #[test]
    fn a_trimmed_pod_loses_its_bulk() {
        let t = trimmed(full_pod(json!({})));
        assert!(t.metadata.managed_fields.is_none());
        assert!(t.metadata.generate_name.is_none());
        assert!(!t.metadata.annotations.unwrap().contains_key(LAST_APPLIED));

        let spec = t.spec.unwrap();
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            let requests = c.resources.as_ref().and_then(|r| r.requests.clone());
            assert!(requests.is_some());
            assert_eq!(
                c,
                &Container {
                    name: c.name.clone(),
                    resources: Some(ResourceRequirements {
                        requests,
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                },
                "container {} keeps only its name and requests",
                c.name
            );
        }
        for v in spec.volumes.iter().flatten() {
            assert!(v.config_map.is_none() && v.secret.is_none() && v.projected.is_none());
        }
        let affinity = spec.affinity.unwrap();
        assert!(affinity.pod_affinity.is_none());
        assert!(spec.service_account_name.is_none());
        assert!(spec.security_context.is_none());
        assert!(spec.dns_policy.is_none());
        assert!(spec.image_pull_secrets.is_none());

        let status = t.status.unwrap();
        assert!(status.container_statuses.is_none());
        assert!(status.start_time.is_none());
        assert!(status.pod_ip.is_none() && status.pod_ips.is_none());
        assert!(status.host_ip.is_none() && status.qos_class.is_none());
        assert!(status.conditions.unwrap()[0].message.is_none());
    }

    #[test]
    fn a_sidecar_init_container_stays_marked_as_one() {
        let mut p = full_pod(json!({}));
        if let Some(init) = p.spec.as_mut().and_then(|s| s.init_containers.as_mut()) {
            init[0].restart_policy = Some("Always".into());
        }
        let init = trimmed(p).spec.unwrap().init_containers.unwrap();
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn trimming_twice_changes_nothing() {
        let once = trimmed(full_pod(json!({})));
        assert_eq!(trimmed(once.clone()), once);
        let mut n = full_node();
        node(&mut n);
        let mut again = n.clone();
        node(&mut again);
        assert_eq!(again, n);
    }

    #[test]
    fn a_pod_whose_only_annotation_is_the_applied_manifest_has_none_left() {
        let mut p = full_pod(json!({}));
        p.metadata.annotations = Some([(LAST_APPLIED.to_owned(), "{}".to_owned())].into());
        assert!(trimmed(p).metadata.annotations.is_none());
    }

    #[test]
    fn the_drain_decides_the_same_for_a_trimmed_pod() {
        let daemon_set = json!({"ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "DaemonSet", "name": "ds", "uid": "ds-1", "controller": true}]});
        let cases = [
            json!({}),
            daemon_set,
            json!({"annotations": {MIRROR_POD: "abc"}}),
            json!({"annotations": {DO_NOT_DISRUPT: "true"}}),
            json!({"annotations": {SAFE_TO_EVICT: "false"}}),
            json!({"deletionTimestamp": "2026-03-01T11:00:00Z"}),
        ];
        for extra in cases {
            let full = full_pod(extra.clone());
            let t = trimmed(full.clone());
            for force in [false, true] {
                assert_eq!(
                    classify(&t, force),
                    classify(&full, force),
                    "{extra} (force: {force})"
                );
            }
        }
        let mut done = full_pod(json!({}));
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        assert_eq!(
            classify(&trimmed(done.clone()), false),
            classify(&done, false)
        );
    }

    fn full_node() -> Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker-1", "uid": "n-1", "resourceVersion": "7",
                "labels": {"kubernetes.io/hostname": "worker-1", "node-pool": "burst"},
                "annotations": {"tidepool.dev/claim": "burst-abcde", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"providerID": "proxmox://pve/1201", "podCIDR": "10.244.3.0/24",
                "podCIDRs": ["10.244.3.0/24"], "unschedulable": true,
                "taints": [{"key": "tidepool.dev/burst", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "7800m", "memory": "15Gi", "pods": "110",
                                "nvidia.com/gpu": "1"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.21"}],
                "conditions": [
                    {"type": "MemoryPressure", "status": "False",
                     "reason": "KubeletHasSufficientMemory",
                     "message": "kubelet has sufficient memory available",
                     "lastHeartbeatTime": "2026-03-01T10:05:00Z",
                     "lastTransitionTime": "2026-03-01T10:00:00Z"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady",
                     "message": "kubelet is posting ready status",
                     "lastHeartbeatTime": "2026-03-01T10:05:00Z",
                     "lastTransitionTime": "2026-03-01T10:00:00Z"},
                ],
                "images": [{"names": ["registry.example/shop/web@sha256:00",
                                      "registry.example/shop/web:1.2.3"],
                            "sizeBytes": 52_000_000}],
                "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b",
                    "kernelVersion": "6.12", "osImage": "Talos", "containerRuntimeVersion": "containerd://2",
                    "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux",
                    "architecture": "amd64"},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "volumesInUse": ["kubernetes.io/csi/csi.proxmox.sinextra.dev^pve/vm-1201-disk-1"],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_trimmed_node_keeps_allocatable_taints_and_conditions() {
        let full = full_node();
        let mut t = full.clone();
        node(&mut t);
        assert_eq!(t.metadata.name, full.metadata.name);
        assert_eq!(t.metadata.labels, full.metadata.labels);
        assert_eq!(
            t.metadata.annotations.unwrap()["tidepool.dev/claim"],
            "burst-abcde"
        );
        let (spec, full_spec) = (t.spec.unwrap(), full.spec.unwrap());
        assert_eq!(spec.taints, full_spec.taints);
        assert_eq!(spec.unschedulable, Some(true));
        assert_eq!(spec.provider_id, full_spec.provider_id);
        let (status, full_status) = (t.status.unwrap(), full.status.unwrap());
        assert_eq!(status.allocatable, full_status.allocatable);
        assert_eq!(status.capacity, full_status.capacity);
        assert_eq!(status.addresses, full_status.addresses);
        let conditions = status.conditions.unwrap();
        let kinds: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(kinds, [("MemoryPressure", "False"), ("Ready", "True")]);
        assert!(conditions.iter().all(|c| c.last_transition_time.is_some()));
    }

    #[test]
    fn a_trimmed_node_loses_images_and_system_info() {
        let mut t = full_node();
        node(&mut t);
        assert!(t.metadata.managed_fields.is_none());
        assert!(
            !t.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(LAST_APPLIED)
        );
        let spec = t.spec.unwrap();
        assert!(spec.pod_cidr.is_none() && spec.pod_cidrs.is_none());
        let status = t.status.unwrap();
        assert!(status.images.is_none());
        assert!(status.node_info.is_none());
        assert!(status.daemon_endpoints.is_none());
        assert!(status.volumes_in_use.is_none());
        for c in status.conditions.unwrap() {
            assert!(c.message.is_none() && c.last_heartbeat_time.is_none());
        }
    }
}
