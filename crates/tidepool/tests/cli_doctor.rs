//! `tidepool doctor` against the lab: the default lab passes every check,
//! and each misconfiguration a scenario injects (a role without a
//! privilege, a template without the guest agent, a foreign VM in the
//! VMID range, a cluster without the CRD, too narrow RBAC) makes exactly
//! the matching check fail, with its fix. `run_doctor` over MCP answers
//! the same checks even when `tidepool mcp` cannot connect (no CRD).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use tidepool_lab::scenario::HOME_LAB;
use tidepool_lab::{LabOptions, RunningLab, Scenario};

async fn lab(name: &str, scenario: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::parse(scenario, name).unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-doctor-{name}-{}", std::process::id())),
        time_scale: 100.0,
        seed: 5,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

async fn doctor(lab: &RunningLab, format: &str) -> Output {
    let config = lab.files.tidepool_yaml.clone();
    let kubeconfig = lab.files.kubeconfig.clone();
    let format = format.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-o", &format, "doctor"])
            .env("TIDEPOOL_LOG", "error")
            .output()
            .expect("run tidepool")
    })
    .await
    .unwrap()
}

/// The checks of a JSON report that did not pass, by id.
async fn failures(lab: &RunningLab) -> (Option<i32>, Vec<Value>) {
    let out = doctor(lab, "json").await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass")
        .cloned()
        .collect();
    (out.status.code(), failed)
}

/// Asserts exactly one failing check, `id`, whose message contains
/// `message` and whose fix contains `fix`.
async fn only_failure(name: &str, scenario: &str, id: &str, message: &str, fix: &str) {
    let lab = lab(name, scenario).await;
    let (code, failed) = failures(&lab).await;
    assert_eq!(code, Some(1), "{failed:#?}");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["id"], id, "{failed:#?}");
    assert_eq!(failed[0]["status"], "fail");
    let text = |k: &str| failed[0][k].as_str().unwrap_or_default().to_owned();
    assert!(text("message").contains(message), "{failed:#?}");
    assert!(text("fix").contains(fix), "{failed:#?}");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_lab_passes_every_check() {
    let lab = lab("default", HOME_LAB).await;
    let (code, failed) = failures(&lab).await;
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(code, Some(0));
    let out = doctor(&lab, "table").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS"), "{text}");
    assert!(text.contains("0 failed"), "{text}");
    // The token's secret is read, never printed.
    let token =
        std::fs::read_to_string(lab.files.tidepool_yaml.with_file_name("proxmox-token")).unwrap();
    let secret = token.trim().rsplit_once('=').unwrap().1;
    assert!(!text.contains(secret));
    let yaml = doctor(&lab, "yaml").await;
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("status: pass"));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_a_privilege_fails_the_privilege_check_naming_the_403() {
    let scenario = HOME_LAB.replace("VM.Monitor, ", "");
    assert_ne!(scenario, HOME_LAB);
    only_failure(
        "role",
        &scenario,
        "proxmox pve privileges",
        "Permission check failed (/pool/tidepool, VM.Monitor)",
        "pveum role modify Tidepool --append 1 --privs VM.Monitor",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_the_guest_agent_fails_its_template_check() {
    let scenario = HOME_LAB.replace(
        "name: talos-worker-medium-v1.8.0, template: true, cores: 8, memoryMib: 16384, diskGib: 200}",
        "name: talos-worker-medium-v1.8.0, template: true, cores: 8, memoryMib: 16384, diskGib: 200, extraConfig: {agent: \"0\"}}",
    );
    assert_ne!(scenario, HOME_LAB);
    only_failure(
        "agent",
        &scenario,
        "template burst/medium",
        "does not have the guest agent enabled",
        "--agent enabled=1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_vm_in_the_vmid_range_is_named() {
    let scenario = HOME_LAB.replace(
        "    # The cluster.\n",
        "    - {vmid: 1260, node: pve-02, name: backup-server, running: true}\n    # The cluster.\n",
    );
    assert_ne!(scenario, HOME_LAB);
    only_failure(
        "foreign",
        &scenario,
        "proxmox pve vmid-range",
        "1260 (backup-server on pve-02)",
        "vmidRange",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_crd_fails_the_crd_check() {
    let scenario = format!("{HOME_LAB}\nkubernetes:\n  workerClaimCrd: false\n");
    only_failure(
        "nocrd",
        &scenario,
        "kubernetes crd",
        "workerclaims.tidepool.dev is not installed",
        "kubectl apply",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_narrow_rbac_fails_the_rbac_check_naming_each_denied_verb() {
    // Everything deploy/rbac.yaml grants except evictions.
    let scenario = format!(
        "{HOME_LAB}
kubernetes:
  rbacRules:
    - {{apiGroups: [\"\", policy, tidepool.dev, events.k8s.io, coordination.k8s.io, storage.k8s.io], resources: [nodes, pods, poddisruptionbudgets, workerclaims, workerclaims/status, events, leases, configmaps, persistentvolumes, persistentvolumeclaims, csinodes, storageclasses, volumeattachments], verbs: [\"*\"]}}
"
    );
    only_failure(
        "rbac",
        &scenario,
        "kubernetes rbac",
        "RBAC denies: create pods/eviction (core)",
        "deploy/rbac.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_doctor_over_mcp_names_the_missing_crd_without_a_connection() {
    let scenario = format!("{HOME_LAB}\nkubernetes:\n  workerClaimCrd: false\n");
    let lab = lab("mcp", &scenario).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(&lab.files.tidepool_yaml)
        .arg("--kubeconfig")
        .arg(&lab.files.kubeconfig)
        .arg("mcp")
        .env("TIDEPOOL_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let answer = tokio::task::spawn_blocking(move || {
        let mut send = |msg: Value| {
            writeln!(stdin, "{msg}").unwrap();
            stdin.flush().unwrap();
        };
        send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "doctor-test", "version": "1"}}}));
        lines.next().unwrap().unwrap();
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_doctor", "arguments": {}}}));
        let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        drop(stdin);
        answer
    })
    .await
    .unwrap();
    let _ = child.wait();
    let result = &answer["result"]["structuredContent"];
    assert_eq!(result["ok"], false, "{answer}");
    let failed: Vec<&Value> = result["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{answer}");
    assert_eq!(failed[0]["id"], "kubernetes crd");
    lab.shutdown().await;
}
