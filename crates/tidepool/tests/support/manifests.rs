//! What the manifest tests share: kubectl, `kubectl apply` into a lab, the
//! monitoring CRDs the Prometheus operator would bring, and waiting for the
//! controller's pods.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tidepool_lab::{LabOptions, RunningLab, Scenario};

/// The kubectl to run (`KUBECTL`, as scripts/test.sh sets it).
pub fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A CRD standing in for one of the Prometheus operator's (schema-less).
fn monitoring_crd(plural: &str, kind: &str) -> Value {
    serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// Installs the PrometheusRule and ServiceMonitor CRDs into `lab`.
pub fn install_monitoring_crds(lab: &RunningLab) {
    lab.kube
        .apply(monitoring_crd("prometheusrules", "PrometheusRule"))
        .unwrap();
    lab.kube
        .apply(monitoring_crd("servicemonitors", "ServiceMonitor"))
        .unwrap();
}

/// `kubectl apply -f -` of `text` against `lab`; panics with kubectl's
/// complaint when it refuses.
pub async fn kubectl_apply(lab: &RunningLab, text: String) {
    let kubeconfig = lab.files.kubeconfig.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
}

/// A default lab (its state directory named after `name`) with the
/// monitoring CRDs installed and `manifests` applied by kubectl.
pub async fn lab_with(name: &str, manifests: String) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-{name}-{}", std::process::id())),
        time_scale: 100.0,
        seed: 1,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    install_monitoring_crds(&lab);
    kubectl_apply(&lab, manifests).await;
    lab
}

/// How many pods matching `selector` in `namespace` run, once `want` do or
/// after five seconds.
pub async fn running_pods(lab: &RunningLab, namespace: &str, selector: &str, want: usize) -> usize {
    let mut running = 0;
    for _ in 0..200 {
        let pods = lab.kube.list("v1", "Pod", namespace, selector).unwrap();
        running = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if running == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    running
}
