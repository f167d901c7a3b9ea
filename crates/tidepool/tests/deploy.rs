//! The deployment manifests: `kubectl kustomize deploy/` renders them,
//! `kubectl apply` installs them into the lab's Kubernetes, the controller
//! Deployment's pods come up, and the configuration they mount is valid.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tidepool_lab::{LabOptions, Scenario};

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A minimal PrometheusRule CRD, standing in for the Prometheus operator's.
const PROMETHEUS_RULE_CRD: &str = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
"metadata":{"name":"prometheusrules.monitoring.coreos.com"},
"spec":{"group":"monitoring.coreos.com","scope":"Namespaced",
"names":{"plural":"prometheusrules","singular":"prometheusrule","kind":"PrometheusRule","listKind":"PrometheusRuleList"},
"versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_render_apply_and_run_in_the_lab() {
    let rendered = Command::new(kubectl())
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).unwrap();
    for kind in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Role",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PrometheusRule",
    ] {
        assert!(text.contains(&format!("kind: {kind}\n")), "missing {kind}");
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-deploy-{}", std::process::id())),
        time_scale: 100.0,
        seed: 1,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    lab.kube
        .apply(serde_json::from_str(PROMETHEUS_RULE_CRD).unwrap())
        .unwrap();
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

    let deployment = lab
        .kube
        .get("apps/v1", "Deployment", "tidepool-system", "tidepool")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let mut running = 0;
    for _ in 0..200 {
        let pods = lab
            .kube
            .list(
                "v1",
                "Pod",
                "tidepool-system",
                "app.kubernetes.io/name=tidepool",
            )
            .unwrap();
        running = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if running == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(running, 2, "both controller replicas run");

    // The configuration the pods mount passes `tidepool config check`.
    let maps = lab
        .kube
        .list("v1", "ConfigMap", "tidepool-system", "")
        .unwrap();
    let config: &Value = maps
        .iter()
        .find(|m| {
            m["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("tidepool-config")
        })
        .unwrap();
    let yaml = config["data"]["tidepool.yaml"].as_str().unwrap();
    tidepool_core::config::load(yaml).unwrap_or_else(|e| panic!("{e}"));
    let crd = lab
        .kube
        .get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "",
            "workerclaims.tidepool.dev",
        )
        .unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "WorkerClaim");
    lab.shutdown().await;
}
