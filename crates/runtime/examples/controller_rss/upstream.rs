//! Loading the real API server: etcd and kube-apiserver alone
//! (`tidepool_lab::upstream::start_api_only`), then the namespaces,
//! service accounts, ReplicaSets, nodes and pods of [`crate::shapes`],
//! created with parallel requests, and the statuses a kubelet would write
//! (nodes Ready with their image lists; pods Running with container
//! statuses) through the status subresource. No scheduler, controller or
//! kubelet runs, so nothing changes the objects afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};
use tidepool_lab::upstream::ControlPlane;
use tidepool_lab::upstream::client::Upstream;
use tokio::sync::{Mutex, mpsc};

use crate::shapes::{self, NAMESPACES, REPLICAS};

/// Requests in flight while loading.
const PARALLEL: usize = 48;

/// A loaded control plane; dropping it stops etcd and the API server.
pub struct Loaded {
    /// A kubeconfig reaching the API server as the lab's administrator.
    pub kubeconfig: PathBuf,
    _plane: ControlPlane,
}

const MERGE: &str = "application/merge-patch+json";

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Runs `work` on every item `produce` sends, `PARALLEL` at a time.
async fn parallel<T, F, Fut>(client: &Upstream, produce: impl FnOnce(mpsc::Sender<T>), work: F)
where
    T: Send + 'static,
    F: Fn(Upstream, T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<T>(PARALLEL * 4);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (rx, work, client) = (rx.clone(), work.clone(), client.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(item) = next else { break };
                    work(client.clone(), item).await;
                }
            })
        })
        .collect();
    produce(tx);
    for w in workers {
        w.await.unwrap();
    }
}

async fn send<T>(tx: &mpsc::Sender<T>, item: T) {
    tx.send(item).await.unwrap();
}

/// The pod status a kubelet writes once every container runs.
fn pod_status(pod: &Value, index: usize, node: &str, now: &str) -> Value {
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(k, c)| {
            let image = c["image"].as_str().unwrap_or_default();
            json!({"name": c["name"], "image": image,
                   "imageID": format!("{image}@sha256:{}", shapes::hex(index * 4 + k, 64)),
                   "containerID": format!("containerd://{}", shapes::hex(index * 8 + k, 64)),
                   "ready": true, "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}, "lastState": {}})
        })
        .collect();
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|kind| json!({"type": kind, "status": "True", "lastTransitionTime": now}))
    .collect();
    let host = node
        .trim_start_matches("node-")
        .parse::<usize>()
        .unwrap_or(0);
    let host_ip = format!("10.0.{}.{}", host / 250, host % 250 + 2);
    let ip = format!("10.244.{}.{}", index / 250 % 250, index % 250 + 2);
    json!({"status": {"phase": "Running", "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now, "qosClass": "Burstable", "containerStatuses": statuses}})
}

/// Starts etcd and the API server under `dir` and loads `nodes` nodes and
/// `pods` pods, printing how long each part took and the objects' size.
pub async fn load(dir: &Path, nodes: usize, pods: usize) -> Loaded {
    let started = Instant::now();
    let plane = tidepool_lab::upstream::start_api_only(dir).await.unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let server = format!("https://{}", plane.apiserver);
    plane
        .pki
        .write_kubeconfig(&kubeconfig, &server, "tidepool-lab-admin")
        .unwrap();
    println!(
        "  etcd and kube-apiserver ready: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let step = Instant::now();
    let sets = pods.div_ceil(REPLICAS);
    for n in 0..NAMESPACES {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("team-{n}")}});
        plane.client.create(ns).await.unwrap();
    }
    parallel(
        &plane.client,
        |tx| {
            tokio::spawn(async move {
                for set in 0..sets {
                    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": format!("svc-{set:03}"),
                                     "namespace": format!("team-{}", set % NAMESPACES)}});
                    send(&tx, account).await;
                }
            });
        },
        |client, account| async move {
            client.create(account).await.unwrap();
        },
    )
    .await;
    let now = now();
    let stamp = now.clone();
    parallel(
        &plane.client,
        |tx| {
            tokio::spawn(async move {
                for i in 0..nodes {
                    let mut node = tidepool_lab_kube::controllers::nodes::node_object(
                        &shapes::node_registration(i),
                        &stamp,
                    );
                    node["status"]["images"] = shapes::node_images(i);
                    send(&tx, node).await;
                }
            });
        },
        |client, mut node| async move {
            let status = node["status"].take();
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            client.create(node).await.unwrap();
            let path = format!("/api/v1/nodes/{name}/status");
            let body = json!({ "status": status });
            client
                .request(Method::PATCH, &path, Some((MERGE, body)))
                .await
                .unwrap();
        },
    )
    .await;
    println!(
        "  {NAMESPACES} namespaces, {sets} service accounts, {nodes} nodes Ready: {:.1} s",
        step.elapsed().as_secs_f64()
    );

    let step = Instant::now();
    let producer_client = plane.client.clone();
    parallel(
        &plane.client,
        |tx| {
            tokio::spawn(async move {
                let mut made = 0;
                for set in 0..sets {
                    let count = REPLICAS.min(pods - made);
                    let (rs, set_pods) = shapes::replica_set(set, count, made, nodes);
                    let rs = producer_client.create(rs).await.unwrap();
                    for (k, mut pod) in set_pods.into_iter().enumerate() {
                        pod["metadata"]["ownerReferences"][0]["uid"] =
                            rs["metadata"]["uid"].clone();
                        send(&tx, (made + k, pod)).await;
                    }
                    made += count;
                }
            });
        },
        move |client, (index, pod): (usize, Value)| {
            let now = now.clone();
            async move {
                let ns = pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let node = pod["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let status = pod_status(&pod, index, &node, &now);
                let collection = format!("/api/v1/namespaces/{ns}/pods");
                client
                    .request(Method::POST, &collection, Some(("application/json", pod)))
                    .await
                    .unwrap();
                let path = format!("{collection}/{name}/status");
                client
                    .request(Method::PATCH, &path, Some((MERGE, status)))
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    let took = step.elapsed().as_secs_f64();
    println!(
        "  {sets} ReplicaSets and {pods} pods created and Running: {took:.1} s ({:.0} pods/s, two writes each)",
        pods as f64 / took
    );

    let (count, bytes) = listed_bytes(&plane.client, "/api/v1/pods").await;
    let (_, node_bytes) = listed_bytes(&plane.client, "/api/v1/nodes").await;
    println!(
        "  objects as the API server returns them (JSON, managedFields included): pods {:.0} MB ({:.1} KB each), nodes {:.1} MB",
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / count.max(1) as f64,
        node_bytes as f64 / 1e6
    );
    Loaded {
        kubeconfig,
        _plane: plane,
    }
}

/// How many objects a list returns and their size as JSON, read in pages
/// of 500.
async fn listed_bytes(client: &Upstream, collection: &str) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    let mut token = String::new();
    loop {
        let path = format!("{collection}?limit=500&continue={token}");
        let page = client.request(Method::GET, &path, None).await.unwrap();
        for item in page["items"].as_array().into_iter().flatten() {
            count += 1;
            bytes += serde_json::to_vec(item).map_or(0, |v| v.len());
        }
        token = page["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            return (count, bytes);
        }
    }
}
