//! `tidepool upgrade` with the real binary against the lab (no controller
//! runs, so nothing moves the rollout): a dry run prints the batches and
//! writes nothing; a start records the rollout, a second start is
//! refused; status shows it running; abort stops it, and a resume of an
//! aborted rollout is refused; an unknown pool is exit 4. And `tidepool
//! talos` on a worker (version, services, health, restart-service,
//! reboot), refusing a node that is not one of Tidepool's workers.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;
use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";
const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.11.0";

async fn tidepool(lab: &RunningLab, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let config = lab.files.tidepool_yaml.clone();
    let kubeconfig = lab.files.kubeconfig.clone();
    let origin = lab.clock.origin_unix_ms().to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--time-scale", SCALE, "--time-origin", &origin])
            .args(args)
            .env("TIDEPOOL_LOG", "error")
            .output()
            .expect("run tidepool")
    })
    .await
    .unwrap()
}

/// The exit code, with stderr shown when it is not `want`.
fn code(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_plans_starts_shows_and_aborts_a_rollout() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-cli-upgrade-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 5,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let out = tidepool(
        &lab,
        &[
            "provision",
            "--pool",
            "burst",
            "--size",
            "small",
            "--count",
            "2",
            "--wait",
        ],
    )
    .await;
    code(&out, 0);

    let start = ["upgrade", "--pool", "burst", "--talos-image", IMAGE];
    let out = tidepool(&lab, &[&start[..], &["--dry-run", "-o", "json"]].concat()).await;
    code(&out, 0);
    let plan = json(&out);
    assert_eq!(plan["version"], "v1.11.0");
    assert_eq!(plan["maxUnavailable"], "20%");
    assert_eq!(plan["batches"].as_array().unwrap().len(), 2, "{plan}");
    assert!(
        plan["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["version"] == "v1.10.6"),
        "{plan}"
    );
    let out = tidepool(&lab, &["upgrade", "status", "-o", "json"]).await;
    code(&out, 0);
    assert_eq!(json(&out), Value::Array(vec![]), "a dry run writes nothing");

    code(
        &tidepool(&lab, &[&start[..], &["--max-unavailable", "2"]].concat()).await,
        0,
    );
    code(&tidepool(&lab, &start).await, 2);
    let out = tidepool(
        &lab,
        &["upgrade", "status", "--pool", "burst", "-o", "json"],
    )
    .await;
    code(&out, 0);
    let status = json(&out);
    assert_eq!(status[0]["rollout"]["state"], "running", "{status}");
    assert_eq!(
        status[0]["rollout"]["maxUnavailable"]["count"], 2,
        "{status}"
    );
    assert_eq!(status[0]["pending"], 2, "{status}");
    let out = tidepool(&lab, &["upgrade", "status"]).await;
    code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("running"));

    code(
        &tidepool(&lab, &["upgrade", "abort", "--pool", "burst"]).await,
        0,
    );
    code(
        &tidepool(&lab, &["upgrade", "resume", "--pool", "burst"]).await,
        2,
    );
    let out = tidepool(&lab, &["upgrade", "status", "-o", "json"]).await;
    assert_eq!(json(&out)[0]["rollout"]["state"], "aborted");
    code(
        &tidepool(&lab, &["upgrade", "status", "--pool", "nope"]).await,
        4,
    );
    code(&tidepool(&lab, &["upgrade", "--pool", "burst"]).await, 2);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talos_operations_reach_a_worker_and_refuse_what_is_not_one() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-cli-talos-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 6,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let out = tidepool(
        &lab,
        &["provision", "--pool", "burst", "--size", "small", "--wait"],
    )
    .await;
    code(&out, 0);
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    let worker = claims[0]["metadata"]["name"].as_str().unwrap().to_owned();

    let out = tidepool(&lab, &["talos", "version", &worker]).await;
    code(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1.10.6");
    let out = tidepool(&lab, &["talos", "services", &worker, "-o", "json"]).await;
    code(&out, 0);
    let services = json(&out);
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "kubelet" && s["state"] == "Running"),
        "{services}"
    );
    let out = tidepool(&lab, &["talos", "health", &worker, "-o", "json"]).await;
    code(&out, 0);
    assert_eq!(json(&out)["healthy"], true);
    code(
        &tidepool(&lab, &["talos", "restart-service", &worker, "kubelet"]).await,
        0,
    );
    code(&tidepool(&lab, &["talos", "reboot", &worker]).await, 0);

    // Nodes Tidepool does not manage, the control plane among them.
    let nodes = lab.kube.list("v1", "Node", "", "").unwrap();
    let control_plane = nodes
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .find(|n| *n != worker)
        .unwrap();
    let out = tidepool(&lab, &["talos", "reboot", &control_plane]).await;
    code(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Tidepool worker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    code(&tidepool(&lab, &["talos", "version", "nobody"]).await, 3);
    lab.shutdown().await;
}
