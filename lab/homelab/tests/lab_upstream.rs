//! What the lab promises about its Kubernetes side in either mode
//! (`TIDEPOOL_LAB_KUBERNETES=upstream` runs them against the real control
//! plane): the kubeconfig authenticates and an unknown token is refused,
//! timestamps read through the lab are on the lab's clock, and a lab leaves
//! no process and no etcd data behind.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use serde_json::{Value, json};
use tidepool_lab::{KubernetesMode, LabOptions, RunningLab, Scenario};

const SCALE: f64 = 500.0;

async fn lab(name: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("tidepool-lab-up-{name}-{}", std::process::id()));
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: dir,
        time_scale: SCALE,
        seed: 7,
        kubernetes: KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

/// The server and token of the lab's kubeconfig, and a client that trusts
/// its CA (the real control plane's endpoint is HTTPS).
fn credentials(lab: &RunningLab) -> (String, String, reqwest::Client) {
    use base64::Engine as _;
    let text = std::fs::read_to_string(&lab.files.kubeconfig).unwrap();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let mut http = reqwest::Client::builder();
    if let Some(ca) = field("certificate-authority-data:") {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap();
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    (
        field("server:").unwrap(),
        field("token:").unwrap(),
        http.build().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_authenticates_and_an_unknown_token_is_refused() {
    let lab = lab("auth").await;
    let (server, token, http) = credentials(&lab);
    let url = format!("{server}/api/v1/namespaces/default");
    let ok = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = http
        .get(&url)
        .bearer_auth("not-the-labs-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let status: Value = refused.json().await.unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_read_through_the_lab_are_on_the_labs_clock() {
    let lab = lab("clock").await;
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = unix(lab.clock.now());
    lab.kube
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "stamped", "namespace": "default"}}))
        .unwrap();
    let (server, token, http) = credentials(&lab);
    let read: Value = http
        .get(format!(
            "{server}/api/v1/namespaces/default/configmaps/stamped"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after = unix(lab.clock.now());
    let stamped: jiff::Timestamp = read["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stamped = stamped.as_millisecond() as f64 / 1000.0;
    // The API server keeps creation times in whole seconds: one real second
    // is `SCALE` simulated ones.
    assert!(
        stamped + SCALE >= before && stamped <= after,
        "created at {stamped}, lab clock read {before} before and {after} after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_leaves_no_process_and_no_data_behind() {
    let lab = lab("processes").await;
    let processes = lab
        .control_plane()
        .map(tidepool_lab::upstream::ControlPlane::processes)
        .unwrap_or_default();
    if lab.kube.mode() == KubernetesMode::Upstream {
        let names: Vec<&str> = processes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "etcd",
                "kube-apiserver",
                "kube-scheduler",
                "kube-controller-manager",
                "kwok"
            ]
        );
    }
    let etcd_data = lab.files.dir.join("upstream").join("etcd");
    drop(lab);
    // etcd preallocates 64 MiB of log: a lab leaves no data behind either.
    assert!(
        !etcd_data.exists(),
        "{} outlived its lab",
        etcd_data.display()
    );
    for (name, pid) in processes {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) outlived its lab"
        );
    }
}
