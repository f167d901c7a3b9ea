//! The shapes of the benchmark's objects: pods as a typical Helm chart
//! renders them (ReplicaSet-owned, one to three containers with env vars,
//! probes, mounts and security contexts, projected service-account
//! volumes, the last-applied annotation) and nodes with a busy kubelet's
//! image list. Both the emulator and the real API server are loaded from
//! here, so the two runs measure the same objects.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tidepool_lab_kube::NodeRegistration;

/// Pods per ReplicaSet.
pub const REPLICAS: usize = 100;
/// Namespaces the ReplicaSets are spread over.
pub const NAMESPACES: usize = 10;

/// A hex string of `len` digits derived from `seed` (stands in for digests).
pub fn hex(seed: usize, len: usize) -> String {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

fn probe(path: &str, delay: u32) -> Value {
    json!({"httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
           "initialDelaySeconds": delay, "periodSeconds": 10, "timeoutSeconds": 1,
           "successThreshold": 1, "failureThreshold": 3})
}

fn env_var(name: &str, field: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field}}})
}

/// One container as a typical Helm chart renders it.
fn container(name: &str, image: &str, port: u16, cpu: &str, memory: &str, token: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/entrypoint"],
        "args": [format!("--listen=:{port}"), "--log-format=json", "--config=/etc/app/config.yaml",
                 "--metrics-address=:9090", "--graceful-shutdown=25s"],
        "env": [
            env_var("POD_NAME", "metadata.name"),
            env_var("POD_NAMESPACE", "metadata.namespace"),
            env_var("POD_IP", "status.podIP"),
            env_var("NODE_NAME", "spec.nodeName"),
            {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"containerName": name,
                "resource": "limits.cpu", "divisor": "1"}}},
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "url"}}},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc.cluster.local:4317"},
            {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "service.namespace=shop,deployment.environment=production"},
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "FEATURE_FLAGS", "value": "checkout-v2,fast-search,new-cart,recommendations"},
            {"name": "JAVA_TOOL_OPTIONS", "value": "-XX:MaxRAMPercentage=75 -XX:+UseG1GC -Dfile.encoding=UTF-8"},
        ],
        "envFrom": [{"configMapRef": {"name": "app-env"}}, {"secretRef": {"name": "app-secrets"}}],
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      "limits": {"cpu": "2", "memory": memory}},
        "livenessProbe": probe("/healthz", 10),
        "readinessProbe": probe("/readyz", 5),
        "startupProbe": probe("/healthz", 0),
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": true},
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": true},
            {"name": token, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
        ],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    })
}

/// The metadata and spec a ReplicaSet's pods share: `index` varies the
/// container count (one to three), an init container (every fourth), an
/// emptyDir (every second) and a PVC (every tenth).
fn pod_template(index: usize, app: &str) -> (Value, Value) {
    let token = format!("kube-api-access-{}", &hex(index, 5));
    let mut containers = vec![container(
        "app",
        &format!("registry.example/shop/{app}:1.{}.{}", index % 7, index % 13),
        8080,
        "250m",
        "512Mi",
        &token,
    )];
    if index % 3 >= 1 {
        containers.push(container(
            "envoy",
            "registry.example/mesh/envoy:v1.33.2",
            15001,
            "100m",
            "128Mi",
            &token,
        ));
    }
    if index % 3 == 2 {
        containers.push(container(
            "log-shipper",
            "registry.example/observability/fluent-bit:3.2.4",
            2020,
            "50m",
            "64Mi",
            &token,
        ));
    }
    let mut volumes = vec![
        json!({"name": token, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}),
        json!({"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}}),
        json!({"name": "tls", "secret": {"secretName": format!("{app}-tls"), "defaultMode": 420}}),
    ];
    if index.is_multiple_of(2) {
        volumes.push(json!({"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}));
    }
    if index.is_multiple_of(10) {
        volumes.push(
            json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("{app}-data")}}),
        );
    }
    let mut spec = json!({
        "containers": containers,
        "volumes": volumes,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": app,
        "serviceAccount": app,
        "securityContext": {"fsGroup": 10001, "runAsNonRoot": true,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": app}}}}]}},
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
    });
    if index.is_multiple_of(4) {
        spec["initContainers"] = json!([container(
            "migrate",
            &format!("registry.example/shop/{app}-migrations:1.{}", index % 7),
            8081,
            "500m",
            "256Mi",
            &token,
        )]);
    }
    let labels = json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": format!("{app}-prod"),
        "app.kubernetes.io/version": format!("1.{}.{}", index % 7, index % 13),
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/managed-by": "Helm",
        "pod-template-hash": hex(index, 10),
    });
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "labels": labels},
        "spec": {"replicas": REPLICAS, "template": {"metadata": {"labels": labels}, "spec": spec}}});
    let annotations = json!({
        "kubectl.kubernetes.io/last-applied-configuration": applied.to_string(),
        "kubectl.kubernetes.io/restartedAt": "2026-03-02T09:14:07Z",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "checksum/config": hex(index + 1, 64),
    });
    (json!({"labels": labels, "annotations": annotations}), spec)
}

/// The image list a busy node's kubelet reports.
pub fn node_images(index: usize) -> Value {
    let images: Vec<Value> = (0..40)
        .map(|k| {
            let repo = format!("registry.example/shop/app-{}", (index + k) % 300);
            json!({"names": [format!("{repo}@sha256:{}", hex(index * 64 + k, 64)),
                             format!("{repo}:1.{}.{}", k % 7, k % 13)],
                   "sizeBytes": 20_000_000 + k * 1_234_567})
        })
        .collect();
    json!(images)
}

/// The labels of node `index`.
fn node_labels(index: usize) -> BTreeMap<String, String> {
    [
        ("topology.kubernetes.io/zone", format!("zone-{}", index % 3)),
        ("node.kubernetes.io/instance-type", "pve-large".to_owned()),
        ("node-pool", "permanent".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The annotations of node `name`.
fn node_annotations(name: &str) -> BTreeMap<String, String> {
    [
        ("node.alpha.kubernetes.io/ttl", "0".to_owned()),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true".to_owned(),
        ),
        (
            "csi.volume.kubernetes.io/nodeid",
            format!("{{\"csi.proxmox.sinextra.dev\":\"{name}\"}}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// What node `index`'s kubelet registers: 32 cores, 128 GiB, 110 pods.
pub fn node_registration(index: usize) -> NodeRegistration {
    let name = format!("node-{index:04}");
    NodeRegistration {
        cpu_millis: 32_000,
        memory_bytes: 128 << 30,
        pods: 110,
        labels: node_labels(index),
        annotations: node_annotations(&name),
        address: Some(format!("10.0.{}.{}", index / 250, index % 250 + 2)),
        provider_id: Some(format!("proxmox://pve/{}", 1000 + index)),
        name,
        ..NodeRegistration::default()
    }
}

/// One ReplicaSet of the workload and its pods, pods bound round-robin
/// over `nodes` nodes starting at pod number `first`. Each pod's owner
/// reference has an empty `uid`: the loader sets it once the ReplicaSet
/// exists.
pub fn replica_set(set: usize, count: usize, first: usize, nodes: usize) -> (Value, Vec<Value>) {
    let namespace = format!("team-{}", set % NAMESPACES);
    let app = format!("svc-{set:03}");
    let (template_meta, spec) = pod_template(set, &app);
    let rs_name = format!("{app}-{}", hex(set, 10));
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs_name, "namespace": namespace,
                     "labels": template_meta["labels"]},
        "spec": {"replicas": count,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": app,
                                              "pod-template-hash": hex(set, 10)}},
                 "template": {"metadata": template_meta, "spec": spec}}});
    let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
        "uid": "", "controller": true, "blockOwnerDeletion": true}]);
    let pods = (0..count)
        .map(|k| {
            let made = first + k;
            let mut metadata = template_meta.clone();
            metadata["name"] = json!(format!("{rs_name}-{}{k:02}", hex(made, 3)));
            metadata["generateName"] = json!(format!("{rs_name}-"));
            metadata["namespace"] = json!(namespace);
            metadata["ownerReferences"] = owner.clone();
            let mut spec = spec.clone();
            spec["nodeName"] = json!(format!("node-{:04}", made % nodes));
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
        })
        .collect();
    (rs, pods)
}
