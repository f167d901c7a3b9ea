//! Shared fixtures of the fidelity tests: an emulator served on loopback,
//! a scratch directory with its kubeconfig, and a kubectl runner.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tidepool_lab_kube::{KubeLab, KubeOptions, NodeRegistration};
use tidepool_lab_sim::{Faults, SimClock};

/// A served emulator with a scratch directory holding its kubeconfig.
pub struct Cluster {
    pub lab: KubeLab,
    pub faults: Arc<Faults>,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn cluster(name: &str) -> Cluster {
    cluster_with(name, KubeOptions::default()).await
}

pub async fn cluster_with(name: &str, options: KubeOptions) -> Cluster {
    let faults = Arc::new(Faults::new(7));
    let lab = KubeLab::with_options(SimClock::new(10.0), faults.clone(), options);
    let addr = lab
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tidepool-lab-kube-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, tidepool_lab_kube::render_kubeconfig(addr)).unwrap();
    Cluster {
        faults,
        lab,
        dir,
        kubeconfig,
    }
}

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

pub fn kubectl_path() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/kubectl".into());
    assert!(
        path.exists(),
        "kubectl not found at {} (set $KUBECTL or install kubectl / Debian's kubernetes-client)",
        path.display()
    );
    path
}

impl Cluster {
    /// A kubectl command against this cluster, with its own discovery cache.
    pub fn kubectl(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(kubectl_path());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .env("KUBECACHEDIR", self.dir.join("cache"))
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl and asserts it succeeded; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out: Output = self.kubectl(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

pub fn pods_on(lab: &KubeLab, node: &str, label_selector: &str) -> Vec<Value> {
    lab.list("v1", "Pod", "", label_selector)
        .unwrap()
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

pub fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}
