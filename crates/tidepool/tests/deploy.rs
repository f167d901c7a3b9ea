//! The deployment manifests: `kubectl kustomize deploy/` renders them,
//! `kubectl apply` installs them into the lab's Kubernetes, the controller
//! Deployment's pods come up, the configuration they mount is valid, and
//! the MCP port has its Service and NetworkPolicy.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/manifests.rs"]
mod manifests;

use std::process::Command;

use manifests::{deploy_dir, kubectl, lab_with, running_pods};
use serde_json::Value;

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
        "Service",
        "NetworkPolicy",
    ] {
        assert!(text.contains(&format!("kind: {kind}\n")), "missing {kind}");
    }

    let lab = lab_with("deploy", text).await;

    let deployment = lab
        .kube
        .get("apps/v1", "Deployment", "tidepool-system", "tidepool")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let running = running_pods(
        &lab,
        "tidepool-system",
        "app.kubernetes.io/name=tidepool",
        2,
    )
    .await;
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
    // The MCP port: a Service in front of it and a policy limiting it.
    let service = lab
        .kube
        .get("v1", "Service", "tidepool-system", "tidepool-mcp")
        .unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "mcp");
    let policy = lab
        .kube
        .get(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "tidepool-system",
            "tidepool-mcp",
        )
        .unwrap();
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "mcp");
    let mcp = tidepool_core::config::load(yaml).unwrap().server.mcp;
    assert_eq!(mcp.listen.as_deref(), Some("0.0.0.0:8090"));
    lab.shutdown().await;
}
