//! Shared fixtures of the integration tests: a Kubernetes API emulator on
//! loopback, a kube-rs client for it, and a [`ClusterClient`] over that.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tidepool_cluster::{ClusterClient, client_from_kubeconfig};
use tidepool_lab_kube::{KubeLab, NodeRegistration};
use tidepool_lab_sim::{FaultRule, Faults, Service, SimClock};

/// A served emulator, a kubeconfig file for it, and a cluster client.
pub struct Lab {
    pub kube: KubeLab,
    pub faults: Arc<Faults>,
    pub dir: PathBuf,
    pub cluster: ClusterClient,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Installs the ring crypto provider (once per process; later calls are no-ops).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves a fresh emulator on 127.0.0.1:0 and connects to it through a
/// kubeconfig file, as production code does.
pub async fn lab(name: &str) -> Lab {
    install_crypto();
    let faults = Arc::new(Faults::new(7));
    let kube = KubeLab::new(SimClock::new(10.0), faults.clone());
    kube.serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tidepool-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kube.kubeconfig().unwrap()).unwrap();
    let client = client_from_kubeconfig(&path).await.unwrap();
    let cluster = ClusterClient::new(client);
    Lab {
        kube,
        faults,
        dir,
        cluster,
    }
}

/// A fault rule failing `op` (for example `"evict pods"`) with `status`, `times` times.
pub fn fail(op: &str, status: u16, times: u64) -> FaultRule {
    FaultRule {
        service: Service::Kubernetes,
        op: op.into(),
        error_rate: 1.0,
        status: Some(status),
        message: Some(format!("injected {status}")),
        latency_ms: 0,
        times: Some(times),
    }
}

/// A 4-CPU, 8 GiB node registration.
pub fn node(name: &str) -> NodeRegistration {
    NodeRegistration {
        name: name.into(),
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        pods: 110,
        extended: BTreeMap::new(),
        ..NodeRegistration::default()
    }
}

/// Polls `check` every 50 ms until it holds, failing after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare pod pinned to `node` with extra metadata and volumes.
pub fn pod_on(name: &str, node: &str, metadata: Value, volumes: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        m.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "volumes": volumes,
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    })
}

/// A ReplicaSet of `replicas` pods labelled `app: <name>`.
pub fn replicaset(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}},
    })
}

/// The live pods in `default` on `node` whose names start with `prefix`.
pub fn running_on(kube: &KubeLab, node: &str, prefix: &str) -> Vec<String> {
    kube.list("v1", "Pod", "default", "")
        .unwrap()
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with(prefix))
        .collect()
}
