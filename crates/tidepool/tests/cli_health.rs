//! `tidepool health` with the real binary against the lab: a worker whose
//! claim records a NotReady window shows the problem with since when, its
//! latest repair, and the next action of the matrix with when it is due;
//! an unknown worker is an error.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::{Value, json};
use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_a_workers_problem_since_when_its_last_repair_and_the_next_action() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-cli-health-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 3,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let out = tidepool(
        &lab,
        &["provision", "--pool", "burst", "--size", "small", "--wait"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    let name = claims[0]["metadata"]["name"].as_str().unwrap().to_owned();
    // What the monitor records: NotReady since an hour ago, the kubelet
    // restart done 55 minutes ago.
    let now: jiff::Timestamp = jiff::Timestamp::try_from(lab.clock.now()).unwrap();
    let ago = |m: i64| (now - jiff::SignedDuration::from_mins(m)).to_string();
    lab.kube
        .merge_patch(
            "tidepool.dev/v1alpha1",
            "WorkerClaim",
            "",
            &name,
            &json!({"status": {"health": {
                "problems": [{"problem": "NotReady", "since": ago(60)}],
                "lastRepair": {"action": "RestartKubelet", "problem": "NotReady", "attempt": 1,
                               "startedAt": ago(55), "finishedAt": ago(55), "outcome": "Done",
                               "message": null},
                "repairs": 1, "escalatedAt": null, "cordoned": false
            }}}),
        )
        .unwrap();

    let out = tidepool(&lab, &["health", &name, "-o", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["worker"], name.as_str());
    assert_eq!(row["problems"][0]["problem"], "NotReady");
    assert_eq!(row["problems"][0]["since"], ago(60).as_str());
    assert_eq!(row["lastRepair"]["action"], "RestartKubelet");
    // Past 20 minutes and past the reboot's threshold: the highest level
    // passed is the replacement, which the lab's burst pool does not allow.
    assert_eq!(row["next"]["action"], "escalate", "{row}");
    assert_eq!(row["next"]["why"], "replace-not-allowed");

    let table = tidepool(&lab, &["health"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("WORKER"), "{text}");
    assert!(text.contains("NotReady for 1h"), "{text}");

    let unknown = tidepool(&lab, &["health", "nobody"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no worker named `nobody`"));
    lab.shutdown().await;
}
