//! `docs/production.md` is exact: its `pveum role add` grants the very
//! privileges `tidepool doctor` checks for (and the lab's default role),
//! the README links it, and every command in its `sh lab` blocks runs
//! against the lab, in the lab's state directory, and succeeds.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tidepool_lab::{LabOptions, Scenario};
use tidepool_live::doctor::proxmox::TIDEPOOL_ROLE;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guide() -> String {
    std::fs::read_to_string(repo().join("docs/production.md")).unwrap()
}

/// The lines of the fenced blocks whose info string is `sh lab`.
fn lab_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = !inside && line.trim() == "```sh lab";
            continue;
        }
        if inside && !line.trim().is_empty() {
            out.push(line.to_owned());
        }
    }
    out
}

#[test]
fn the_guides_role_is_the_privilege_list_doctor_checks() {
    let text = guide();
    let line = text
        .lines()
        .find(|l| l.starts_with("pveum role add Tidepool --privs "))
        .expect("the guide creates the Tidepool role");
    let privs: BTreeSet<&str> = line.split('"').nth(1).unwrap().split_whitespace().collect();
    let doctor: BTreeSet<&str> = TIDEPOOL_ROLE.iter().copied().collect();
    assert_eq!(privs, doctor);
    let lab = Scenario::default_home_lab().unwrap();
    let role = lab
        .proxmox
        .roles
        .iter()
        .find(|r| r.id == "Tidepool")
        .unwrap();
    let lab_privs: BTreeSet<&str> = role.privs.iter().map(String::as_str).collect();
    assert_eq!(lab_privs, doctor);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("(docs/production.md)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_lab_commands_run_against_the_lab() {
    let commands = lab_commands(&guide());
    assert!(
        commands.iter().any(|c| c == "tidepool doctor"),
        "{commands:?}"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-guide-{}", std::process::id())),
        time_scale: 100.0,
        seed: 13,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let dir = lab.files.tidepool_yaml.parent().unwrap().to_owned();
    let bin = Path::new(env!("CARGO_BIN_EXE_tidepool")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in commands {
        let (dir, path) = (dir.clone(), path.clone());
        let (config, kubeconfig) = (
            lab.files.tidepool_yaml.clone(),
            lab.files.kubeconfig.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .args(["-c", &command])
                .current_dir(dir)
                .env("PATH", path)
                .env("TIDEPOOL_CONFIG", config)
                .env("KUBECONFIG", kubeconfig)
                .env("TIDEPOOL_LOG", "error")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secret = lab
        .kube
        .get("v1", "Secret", "tidepool-system", "tidepool-talos")
        .unwrap();
    assert!(secret["data"]["worker.yaml"].is_string(), "{secret}");
    lab.shutdown().await;
}
