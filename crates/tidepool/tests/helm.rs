//! The Helm chart: `helm lint --strict` passes with the defaults and with
//! every option on; `helm template` renders the objects an operator expects
//! with the RBAC rules and alerts of `deploy/` (one source for both), a
//! configuration Tidepool accepts, and no secret; the rendering applies to
//! the lab's Kubernetes API and the controller's pods come up.
//!
//! helm is built from Go modules by scripts/upstream.sh; scripts/test.sh
//! passes its path as `TIDEPOOL_HELM`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/manifests.rs"]
mod manifests;

use std::process::Command;

use manifests::{deploy_dir, lab_with, running_pods};
use serde_json::Value;

fn helm(args: &[&str]) -> String {
    let helm = std::env::var("TIDEPOOL_HELM").unwrap_or_else(|_| "helm".into());
    let out = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {helm} (scripts/upstream.sh helm builds it): {e}"));
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn chart() -> String {
    deploy_dir().join("helm/tidepool").display().to_string()
}

/// Every option of the chart switched on.
const ALL_ON: &str = "mcp.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true";

fn render(set: Option<&str>) -> (String, Vec<Value>) {
    let chart = chart();
    let mut args = vec![
        "template",
        "tp",
        chart.as_str(),
        "--namespace",
        "tidepool-system",
        "--include-crds",
        // The Kubernetes the lab answers as (helm assumes an old one offline).
        "--kube-version",
        "1.33.0",
    ];
    if let Some(set) = set {
        args.extend(["--set", set]);
    }
    let text = helm(&args);
    let objects = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|o| !o.is_null())
        .collect();
    (text, objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// One object of a multi-document file in `deploy/`, by kind.
fn from_deploy(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap()
}

#[test]
fn the_chart_lints_with_the_defaults_and_every_option() {
    let chart = chart();
    let out = helm(&["lint", "--strict", &chart]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = helm(&["lint", "--strict", &chart, "--set", ALL_ON]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn the_rendering_matches_deploy_and_keeps_secrets_out() {
    let (default_text, defaults) = render(None);
    let kinds: Vec<&str> = defaults
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for kind in ["ServiceMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(!kinds.contains(&kind), "{kind} is opt-in");
    }

    // One source for the permissions and the alerts.
    let rules = &find(&defaults, "ClusterRole", "tp-tidepool")["rules"];
    assert_eq!(rules, &from_deploy("rbac.yaml", "ClusterRole")["rules"]);
    let (all_text, all) = render(Some(ALL_ON));
    assert_eq!(
        find(&all, "PrometheusRule", "tp-tidepool")["spec"],
        from_deploy("prometheusrule.yaml", "PrometheusRule")["spec"]
    );
    let dashboard = &find(&all, "ConfigMap", "tp-tidepool-grafana-dashboard")["data"]["tidepool-dashboard.json"];
    let dashboard: Value = serde_json::from_str(dashboard.as_str().unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "tidepool");
    let policy = find(&all, "NetworkPolicy", "tp-tidepool-mcp");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "mcp");

    // The configuration loads; its server section follows the values.
    for (objects, mcp) in [(&defaults, false), (&all, true)] {
        let yaml = find(objects, "ConfigMap", "tp-tidepool-config")["data"]["tidepool.yaml"]
            .as_str()
            .unwrap();
        let config = tidepool_core::config::load(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let parsed: Value = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(parsed["server"]["namespace"], "tidepool-system");
        assert_eq!(parsed["server"]["metricsAddr"], "0.0.0.0:8080");
        assert_eq!(
            parsed["server"]["mcp"]["listen"].as_str(),
            mcp.then_some("0.0.0.0:8090"),
            "{yaml}"
        );
        assert!(!config.pools.is_empty());
    }

    // Non-root, read-only, the token from a Secret by reference only.
    let pod = &find(&defaults, "Deployment", "tp-tidepool")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        pod["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"],
        "tidepool-proxmox"
    );
    for text in [&default_text, &all_text] {
        assert!(
            !text.contains("kind: Secret\n"),
            "the chart creates no Secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendering_applies_to_the_lab_and_runs() {
    let (text, _) = render(Some(ALL_ON));
    let lab = lab_with("helm", text).await;
    let running = running_pods(
        &lab,
        "tidepool-system",
        "app.kubernetes.io/instance=tp,app.kubernetes.io/name=tidepool",
        2,
    )
    .await;
    assert_eq!(
        running,
        2,
        "both controller replicas run: {:?}",
        lab.kube.list("v1", "Pod", "tidepool-system", "").unwrap()
    );
    for (kind, api) in [
        ("ServiceMonitor", "monitoring.coreos.com/v1"),
        ("PrometheusRule", "monitoring.coreos.com/v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
    ] {
        let name = if kind == "NetworkPolicy" {
            "tp-tidepool-mcp"
        } else {
            "tp-tidepool"
        };
        lab.kube
            .get(api, kind, "tidepool-system", name)
            .unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
    }
    lab.shutdown().await;
}
