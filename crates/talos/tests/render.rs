//! Snapshot tests of rendered worker machine configs, checked again with
//! the Talos emulator's config loader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_lab_talos::MachineConfig;
use tidepool_talos::{RenderError, WorkerIdentity, render_worker_config};

const V1_10: &str = include_str!("fixtures/worker-v1.10.yaml");
const V1_12: &str = include_str!("fixtures/worker-v1.12.yaml");
const MULTIDOC: &str = include_str!("fixtures/worker-multidoc.yaml");
const WITH_LABELS: &str = include_str!("fixtures/worker-with-labels.yaml");

fn burst_worker() -> WorkerIdentity {
    WorkerIdentity {
        hostname: "burst-7f3k2".to_owned(),
        labels: BTreeMap::from([
            ("node-pool".to_owned(), "burst".to_owned()),
            ("worker-type".to_owned(), "burst".to_owned()),
            ("ttl-hours".to_owned(), "4".to_owned()),
            (
                "node.kubernetes.io/instance-type".to_owned(),
                "medium".to_owned(),
            ),
            ("tidepool.dev/managed".to_owned(), "true".to_owned()),
        ]),
        annotations: BTreeMap::from([(
            "tidepool.dev/expires-at".to_owned(),
            "2025-06-01T16:00:00Z".to_owned(),
        )]),
        taints: vec![Taint::new(
            "workload-type",
            "burst",
            TaintEffect::NoSchedule,
        )],
    }
}

fn loaded(config: &str) -> MachineConfig {
    MachineConfig::parse(config.as_bytes()).expect("the emulator accepts the rendered config")
}

fn error_report(err: &RenderError) -> String {
    format!("category: {}\nmessage: {err}", err.category())
}

#[test]
fn a_plain_v1alpha1_base_gets_hostname_labels_annotations_and_taints() {
    let out = render_worker_config(V1_10, &burst_worker()).unwrap();
    insta::assert_snapshot!(out);
    let cfg = loaded(&out);
    assert_eq!(cfg.hostname(), Some("burst-7f3k2"));
    assert_eq!(cfg.node_labels()["node-pool"], "burst");
    assert_eq!(cfg.node_labels()["tidepool.dev/managed"], "true");
    assert_eq!(
        cfg.node_annotations()["tidepool.dev/expires-at"],
        "2025-06-01T16:00:00Z"
    );
    let taints = cfg.register_with_taints();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0].key, "workload-type");
    assert_eq!(taints[0].effect, "NoSchedule");
    assert!(
        cfg.node_taints().is_empty(),
        "taints never go to nodeTaints"
    );
}

#[test]
fn a_base_with_a_hostname_config_document_gets_its_hostname_there() {
    let out = render_worker_config(V1_12, &burst_worker()).unwrap();
    insta::assert_snapshot!(out);
    assert!(!out.contains("auto: stable"));
    let cfg = loaded(&out);
    assert_eq!(cfg.hostname(), Some("burst-7f3k2"));
    assert!(
        cfg.v1alpha1()
            .pointer("/machine/network/hostname")
            .is_none(),
        "the hostname is set in one place only"
    );
}

#[test]
fn a_multi_document_base_keeps_its_other_documents_byte_for_byte() {
    let out = render_worker_config(MULTIDOC, &burst_worker()).unwrap();
    insta::assert_snapshot!(out);
    let tail_of = |text: &str| {
        let at = text
            .find("---\napiVersion: v1alpha1\nkind: ResolverConfig")
            .unwrap();
        text[at..].to_owned()
    };
    assert_eq!(tail_of(&out), tail_of(MULTIDOC));
    let cfg = loaded(&out);
    let taints: Vec<(String, String, String)> = cfg
        .register_with_taints()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect();
    assert_eq!(
        taints,
        vec![
            (
                "homelab.example/maintenance".to_owned(),
                "planned".to_owned(),
                "NoExecute".to_owned()
            ),
            (
                "workload-type".to_owned(),
                "burst".to_owned(),
                "NoSchedule".to_owned()
            ),
        ],
        "the base taint with the same key and effect is replaced, the other kept"
    );
    assert_eq!(
        cfg.v1alpha1()
            .pointer("/machine/kubelet/extraConfig/serializeImagePulls"),
        Some(&serde_json::Value::Bool(false))
    );
}

#[test]
fn existing_node_labels_are_merged_and_overridden_per_key() {
    let out = render_worker_config(WITH_LABELS, &burst_worker()).unwrap();
    insta::assert_snapshot!(out);
    let cfg = loaded(&out);
    let labels = cfg.node_labels();
    assert_eq!(labels["homelab.example/rack"], "r2", "base label kept");
    assert_eq!(labels["node-pool"], "burst", "worker label wins");
    let annotations = cfg.node_annotations();
    assert_eq!(annotations["homelab.example/owner"], "ops");
    assert_eq!(
        annotations["tidepool.dev/expires-at"],
        "2025-06-01T16:00:00Z"
    );
    assert_eq!(cfg.hostname(), Some("burst-7f3k2"));
    assert_eq!(
        cfg.v1alpha1().pointer("/machine/network/nameservers/0"),
        Some(&serde_json::Value::String("10.0.0.1".to_owned()))
    );
}

#[test]
fn rendering_twice_gives_the_same_config() {
    let once = render_worker_config(V1_10, &burst_worker()).unwrap();
    let twice = render_worker_config(&once, &burst_worker()).unwrap();
    assert_eq!(once, twice);
}

#[test]
fn a_worker_without_labels_or_taints_only_gets_a_hostname() {
    let worker = WorkerIdentity {
        hostname: "plain-1".to_owned(),
        ..WorkerIdentity::default()
    };
    let out = render_worker_config(V1_10, &worker).unwrap();
    assert!(!out.contains("nodeLabels"));
    assert!(!out.contains("registerWithTaints"));
    assert_eq!(loaded(&out).hostname(), Some("plain-1"));
}

#[test]
fn a_control_plane_base_is_refused() {
    let base = V1_10.replace("type: worker", "type: controlplane");
    let err = render_worker_config(&base, &burst_worker()).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn a_base_with_both_hostname_forms_is_refused() {
    let base = V1_12.replace(
        "    network: {}\n",
        "    network:\n        hostname: old-name\n",
    );
    let err = render_worker_config(&base, &burst_worker()).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn a_node_role_label_is_refused_because_the_node_cannot_set_it() {
    let mut worker = burst_worker();
    worker
        .labels
        .insert("node-role.kubernetes.io/worker".to_owned(), String::new());
    let err = render_worker_config(V1_10, &worker).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn an_invalid_hostname_is_refused() {
    let mut worker = burst_worker();
    worker.hostname = "Burst_7F".to_owned();
    let err = render_worker_config(V1_10, &worker).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn a_base_without_a_machine_document_is_refused() {
    let base = "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
    let err = render_worker_config(base, &burst_worker()).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn a_broken_base_names_the_document_that_does_not_parse() {
    let base =
        format!("{V1_10}---\napiVersion: v1alpha1\nkind: ResolverConfig\nnameservers: [unclosed\n");
    let err = render_worker_config(&base, &burst_worker()).unwrap_err();
    assert_eq!(err.category(), "yaml");
    assert!(err.to_string().starts_with("parsing document 2 "), "{err}");
}

#[test]
fn a_kubelet_written_as_a_list_is_refused_as_an_unsupported_layout() {
    let base = V1_10.replace(
        "    kubelet:\n        image: ghcr.io/siderolabs/kubelet:v1.33.3 # The `image` field is an optional reference to an alternative kubelet image.\n        defaultRuntimeSeccompProfileEnabled: true # Enable container runtime default Seccomp profile.\n        disableManifestsDirectory: true # The `disableManifestsDirectory` field configures the kubelet to get static pod manifests from the /etc/kubernetes/manifests directory.\n",
        "    kubelet:\n        - oops\n",
    );
    let err = render_worker_config(&base, &burst_worker()).unwrap_err();
    insta::assert_snapshot!(error_report(&err));
}

#[test]
fn a_flow_style_kubelet_is_rewritten_as_a_block() {
    let base = WITH_LABELS.replace(
        "  network:\n",
        "  kubelet: {image: \"ghcr.io/siderolabs/kubelet:v1.33.3\"}\n  network:\n",
    );
    let out = render_worker_config(&base, &burst_worker()).unwrap();
    let cfg = loaded(&out);
    assert_eq!(cfg.register_with_taints().len(), 1);
    assert_eq!(
        cfg.v1alpha1().pointer("/machine/kubelet/image"),
        Some(&serde_json::Value::String(
            "ghcr.io/siderolabs/kubelet:v1.33.3".to_owned()
        ))
    );
}
