//! Memory benchmark of the controller's view of a large cluster.
//!
//! The Kubernetes API emulator runs in a child process (this binary run
//! again with `serve`), loaded with 1,000 nodes and 30,000 pods shaped like
//! real ones: ReplicaSet-owned, one to three containers with env vars,
//! probes, volume mounts and security contexts, projected service-account
//! volumes, a `kubectl.kubernetes.io/last-applied-configuration`
//! annotation, and container statuses written by the simulated kubelets;
//! nodes carry an image list. The emulator drops `managedFields`, so that
//! part of a real object's bulk is absent here.
//!
//! This process then does what the controller does at start: connects a
//! `ClusterClient`, waits for the node and pod caches to sync, and builds
//! the planner's view of every node and pod once. It prints its own memory
//! (VmRSS and VmHWM from /proc/self/status) at each stage, and last checks
//! every cached pod against the whole pod read from the API server.
//!
//! `cargo run --release -p tidepool-controller --example controller_rss [-- [NODES] [PODS]]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use tidepool_cluster::nodes::node_snapshot;
use tidepool_cluster::{Cache, CachedPod, ClusterClient, client_from_kubeconfig};
use tidepool_core::quantity::Quantity;
use tidepool_core::sched::{NodeSnapshot, PodSpec};
use tidepool_lab_kube::{KubeLab, KubeOptions, NodeRegistration};
use tidepool_lab_sim::{Faults, SimClock};

/// Pods per ReplicaSet.
const REPLICAS: usize = 100;
/// Namespaces the ReplicaSets are spread over.
const NAMESPACES: usize = 10;

/// VmRSS and VmHWM of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A hex string of `len` digits derived from `seed` (stands in for digests).
fn hex(seed: usize, len: usize) -> String {
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
fn node_images(index: usize) -> Value {
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

/// Loads the emulator (before any controller runs, so the ReplicaSets
/// find their pods already there), serves it, waits until the kubelets
/// report every pod Running, prints `READY <addr> <pod bytes> <node bytes>`
/// and serves until stdin closes.
fn serve(nodes: usize, pods: usize) {
    let options = KubeOptions {
        pod_start_delay: Duration::from_secs(1),
        controller_debounce: Duration::from_millis(200),
        history_limit: 1_000,
        ..KubeOptions::default()
    };
    let lab = KubeLab::with_options(SimClock::new(10.0), Arc::new(Faults::new(1)), options);
    for n in 0..NAMESPACES {
        lab.create(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("team-{n}")}}))
            .unwrap();
    }
    for i in 0..nodes {
        let name = format!("node-{i:04}");
        let labels: BTreeMap<String, String> = [
            ("topology.kubernetes.io/zone", format!("zone-{}", i % 3)),
            ("node.kubernetes.io/instance-type", "pve-large".to_owned()),
            ("node-pool", "permanent".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let annotations: BTreeMap<String, String> = [
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
        .collect();
        lab.register_node(&NodeRegistration {
            name: name.clone(),
            cpu_millis: 32_000,
            memory_bytes: 128 << 30,
            pods: 110,
            labels,
            annotations,
            address: Some(format!("10.0.{}.{}", i / 250, i % 250 + 2)),
            provider_id: Some(format!("proxmox://pve/{}", 1000 + i)),
            ..NodeRegistration::default()
        })
        .unwrap();
        lab.merge_patch(
            "v1",
            "Node",
            "",
            &name,
            &json!({"status": {"images": node_images(i)}}),
        )
        .unwrap();
    }
    let sets = pods.div_ceil(REPLICAS);
    let mut made = 0;
    for r in 0..sets {
        let namespace = format!("team-{}", r % NAMESPACES);
        let app = format!("svc-{r:03}");
        let (template_meta, spec) = pod_template(r, &app);
        let rs_name = format!("{app}-{}", hex(r, 10));
        let count = REPLICAS.min(pods - made);
        let rs = lab
            .create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": namespace,
                             "labels": template_meta["labels"]},
                "spec": {"replicas": count,
                         "selector": {"matchLabels": {"app.kubernetes.io/name": app,
                                                      "pod-template-hash": hex(r, 10)}},
                         "template": {"metadata": template_meta, "spec": spec}}}))
            .unwrap();
        let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
            "uid": rs["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
        for k in 0..count {
            let mut metadata = template_meta.clone();
            metadata["name"] = json!(format!("{rs_name}-{}{k:02}", hex(made, 3)));
            metadata["generateName"] = json!(format!("{rs_name}-"));
            metadata["namespace"] = json!(namespace);
            metadata["ownerReferences"] = owner.clone();
            let mut spec = spec.clone();
            spec["nodeName"] = json!(format!("node-{:04}", made % nodes));
            lab.create(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}),
            )
            .unwrap();
            made += 1;
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let addr = lab
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        loop {
            let listed = lab.list("v1", "Pod", "", "").unwrap();
            if listed.iter().all(|p| p["status"]["phase"] == "Running") {
                break;
            }
            drop(listed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let bytes = |kind| {
            lab.list("v1", kind, "", "")
                .unwrap()
                .iter()
                .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
                .sum::<usize>()
        };
        println!("READY {addr} {} {}", bytes("Pod"), bytes("Node"));
        // Serve until the parent goes away (its end of stdin closes).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
    });
}

/// The planner's view of the cluster, as `plan_input` builds it: node
/// snapshots with the views of their pods, and the unbound pods.
fn planner_view(
    nodes: &[Arc<Node>],
    pods: &[Arc<CachedPod>],
) -> (Vec<NodeSnapshot>, Vec<Arc<PodSpec>>) {
    let mut by_node: BTreeMap<&str, Vec<Arc<PodSpec>>> = BTreeMap::new();
    let mut unbound = Vec::new();
    for pod in pods.iter().filter(|p| !p.phase.is_terminal()) {
        match &pod.node {
            Some(node) => by_node.entry(node).or_default().push(pod.spec.clone()),
            None => unbound.push(pod.spec.clone()),
        }
    }
    let snapshots = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            node_snapshot(n, by_node.remove(name).unwrap_or_default())
        })
        .collect();
    (snapshots, unbound)
}

/// CPU (millicores) and memory (bytes) a whole pod reserves, computed
/// here independently of the cache: the larger of its containers' sum and
/// its largest init container (the generated pods have no sidecars and no
/// overhead).
fn reserved(pod: &Pod) -> (u64, u64) {
    let request = |c: &k8s_openapi::api::core::v1::Container, key: &str, milli: bool| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(key))
            .map_or(0, |q| {
                if milli {
                    Quantity::milli_lenient(&q.0)
                } else {
                    Quantity::units_lenient(&q.0)
                }
            })
    };
    let spec = pod.spec.as_ref().unwrap();
    let sum = |key, milli| {
        spec.containers
            .iter()
            .map(|c| request(c, key, milli))
            .sum::<u64>()
    };
    let init = |key, milli| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| request(c, key, milli))
            .max()
            .unwrap_or(0)
    };
    (
        sum("cpu", true).max(init("cpu", true)),
        sum("memory", false).max(init("memory", false)),
    )
}

/// Whether every cached pod agrees with the whole pod read from the API
/// server (a page at a time): node, phase, labels, node selector, CPU and
/// memory. Returns the number of pods that disagree or are missing.
async fn disagreements(client: kube::Client, cache: &Cache<CachedPod>) -> usize {
    let api = Api::<Pod>::all(client);
    let mut bad = 0;
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(t) = token.take() {
            params = params.continue_token(&t);
        }
        let page = api.list(&params).await.unwrap();
        for pod in &page.items {
            seen += 1;
            let meta = &pod.metadata;
            let Some(cached) = cache.get(meta.namespace.as_deref(), meta.name.as_deref().unwrap())
            else {
                bad += 1;
                continue;
            };
            let spec = pod.spec.as_ref().unwrap();
            let (cpu, memory) = reserved(pod);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let same = cached.node.as_deref() == spec.node_name.as_deref()
                && format!("{:?}", cached.phase) == phase.unwrap_or("Pending")
                && *cached.spec.labels == meta.labels.clone().unwrap_or_default()
                && *cached.spec.node_selector == spec.node_selector.clone().unwrap_or_default()
                && cached.spec.requests.cpu_milli == cpu
                && cached.spec.requests.memory_bytes == memory;
            bad += usize::from(!same);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    bad + cache.len().saturating_sub(seen)
}

async fn measure(nodes: usize, pods: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut rows: Vec<(String, String)> = Vec::new();
    let (rss, _) = rss_kib();
    rows.push(("RSS before connecting".into(), mib(rss)));

    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["serve", &nodes.to_string(), &pods.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("READY ")))
        .expect("the emulator did not start");
    let fields: Vec<&str> = ready.split_whitespace().collect();
    let addr: SocketAddr = fields[1].parse().unwrap();
    let pod_bytes: f64 = fields[2].parse().unwrap();
    let node_bytes: f64 = fields[3].parse().unwrap();
    rows.push((
        "emulator loaded, all pods Running".into(),
        format!(
            "{:.1} s (child process); objects as JSON: pods {:.0} MB ({:.1} KB each), nodes {:.1} MB",
            started.elapsed().as_secs_f64(),
            pod_bytes / 1e6,
            pod_bytes / 1e3 / pods as f64,
            node_bytes / 1e6
        ),
    ));

    let dir = std::env::temp_dir().join(format!("tidepool-controller-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, tidepool_lab_kube::render_kubeconfig(addr)).unwrap();
    let client = client_from_kubeconfig(&kubeconfig).await.unwrap();
    let checker = client.clone();

    let started = Instant::now();
    let caches = ClusterClient::new(client);
    let deadline = Duration::from_secs(600);
    caches.nodes().wait_until_synced(deadline).await.unwrap();
    caches.pods().wait_until_synced(deadline).await.unwrap();
    let synced = started.elapsed();
    let (node_count, pod_count) = (caches.nodes().len(), caches.pods().len());
    assert_eq!(
        (node_count, pod_count),
        (nodes, pods),
        "a cache is incomplete"
    );
    rows.push((
        "caches synced".into(),
        format!(
            "{:.2} s for {node_count} nodes and {pod_count} pods",
            synced.as_secs_f64()
        ),
    ));
    let (rss, hwm) = rss_kib();
    rows.push((
        "RSS / peak after sync".into(),
        format!("{} / {}", mib(rss), mib(hwm)),
    ));

    let started = Instant::now();
    let node_state = caches.nodes().state();
    let pod_state = caches.pods().state();
    let (snapshots, unbound) = planner_view(&node_state, &pod_state);
    let built = started.elapsed();
    let placed: usize = snapshots.iter().map(|n| n.pods.len()).sum();
    rows.push((
        "planner view built".into(),
        format!(
            "{:.0} ms ({placed} pods on {} nodes, {} unbound)",
            built.as_secs_f64() * 1e3,
            snapshots.len(),
            unbound.len()
        ),
    ));
    let (rss, hwm) = rss_kib();
    rows.push((
        "RSS / peak with the planner view".into(),
        format!("{} / {}", mib(rss), mib(hwm)),
    ));
    drop((snapshots, unbound, node_state, pod_state));
    let (rss, _) = rss_kib();
    rows.push(("RSS after dropping the view".into(), mib(rss)));

    let bad = disagreements(checker, caches.pods()).await;
    rows.push((
        "cached pods that disagree with the API server".into(),
        bad.to_string(),
    ));

    println!("Controller memory at {nodes} nodes and {pods} pods");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    drop(caches);
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let serving = args.first().is_some_and(|a| a == "serve");
    if serving {
        args.remove(0);
    }
    let nodes: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let pods: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30_000);
    if serving {
        serve(nodes, pods);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure(nodes, pods));
}
