//! `tidepool orphans` run as an operator would: a worker whose claim was
//! deleted without its finalizer leaves a VM carrying Tidepool's marker,
//! and the command lists it (table and JSON); VMs without the marker are
//! never listed.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::{Value, json};
use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";

async fn run(lab: &RunningLab, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let config = lab.files.tidepool_yaml.clone();
    let kubeconfig = lab.files.kubeconfig.clone();
    let origin = lab.clock.origin_unix_ms();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--time-scale", SCALE])
            .args(["--time-origin", &origin.to_string()])
            .args(args)
            .env("TIDEPOOL_LOG", "error")
            .output()
            .expect("run tidepool")
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_lists_the_vm_of_a_claim_deleted_without_its_finalizer() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-cli-orphans-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 5,
    })
    .await
    .unwrap();
    let out = run(&lab, &["orphans"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "No orphan VMs.\n");

    let out = run(
        &lab,
        &[
            "provision",
            "--pool",
            "burst",
            "--size",
            "small",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    assert_eq!(claims.len(), 1);
    let name = claims[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let vmid = claims[0]["status"]["vm"]["vmid"].as_u64().unwrap();
    lab.kube
        .merge_patch(
            "tidepool.dev/v1alpha1",
            "WorkerClaim",
            "",
            &name,
            &json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
    lab.kube
        .delete("tidepool.dev/v1alpha1", "WorkerClaim", "", &name)
        .unwrap();

    let out = run(&lab, &["orphans", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["claim"], name.as_str());
    assert_eq!(rows[0]["vmid"], vmid);
    assert_eq!(rows[0]["running"], true);

    let out = run(&lab, &["orphans"]).await;
    let table = text(&out.stdout);
    assert!(table.starts_with("VMID"), "{table}");
    assert!(table.contains(&name), "{table}");
    // The permanent workers and templates in the lab carry no marker.
    assert_eq!(table.lines().count(), 2, "{table}");
    lab.shutdown().await;
}
