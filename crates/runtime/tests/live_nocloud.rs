//! The nocloud join method against the lab: Tidepool serves each worker's
//! user-data with a one-time token and points the VM at it through its
//! SMBIOS serial; the simulated guest fetches it at boot, as Talos nocloud
//! images (a machine config) and cloud-init images (a `kubeadm join`) do.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{live_options, provision_one};
use tidepool_controller::service::Service;
use tidepool_core::Phase;
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_live::connect::connect;

async fn lab(name: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-nocloud-{name}-{}", std::process::id())),
        time_scale: 500.0,
        seed: 5,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn provision_with_join(lab: &RunningLab, join: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap();
    let start = text.find("join:\n").unwrap();
    let end = text.find("sizes:\n").unwrap();
    let config = format!("{}{join}{}", &text[..start], &text[end..]);
    let path = lab.files.dir.join("tidepool-nocloud.yaml");
    std::fs::write(&path, &config).unwrap();
    let config = Arc::new(tidepool_core::config::load(&config).unwrap_or_else(|e| panic!("{e}")));
    let exec = Arc::new(connect(config, &live_options(lab)).await.unwrap());
    let svc = Service::new(exec.clone());
    let name = provision_one(&svc, "nocloud-test").await;
    let phase = exec
        .run_until_idle(&name, Duration::from_secs(30), Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(phase, Phase::Ready, "{:?}", svc.get_worker(&name).await);
    let vm = lab
        .pve
        .vm(svc.get_worker(&name).await.unwrap().vmid.unwrap())
        .unwrap();
    let serial = vm.smbios_serial.unwrap();
    assert!(serial.starts_with("ds=nocloud"), "{serial}");
    lab.kube.get("v1", "Node", "", &name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talos_nocloud_worker_joins_with_the_user_data_tidepool_serves() {
    let lab = lab("talos").await;
    let port = free_port();
    let node = provision_with_join(
        &lab,
        &format!(
            "join:\n  method: nocloud\n  flavor: talos\n  listen: 127.0.0.1:{port}\n  advertiseUrl: http://127.0.0.1:{port}\n  workerConfigFrom: {{file: worker.yaml}}\n"
        ),
    )
    .await;
    assert_eq!(node["metadata"]["labels"]["node-pool"], "burst");
    assert_eq!(node["spec"]["taints"][0]["key"], "workload-type");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_init_worker_joins_with_the_rendered_kubeadm_join() {
    let lab = lab("kubeadm").await;
    std::fs::write(
        lab.files.dir.join("kubeadm.cloud-config"),
        tidepool_talos::nocloud::DEFAULT_KUBEADM_TEMPLATE,
    )
    .unwrap();
    std::fs::write(
        lab.files.dir.join("join-command"),
        "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00ff\n",
    )
    .unwrap();
    let port = free_port();
    let node = provision_with_join(
        &lab,
        &format!(
            "join:\n  method: nocloud\n  flavor: cloud-init\n  listen: 127.0.0.1:{port}\n  advertiseUrl: http://127.0.0.1:{port}\n  workerConfigFrom: {{file: kubeadm.cloud-config}}\n  joinCommandFrom: {{file: join-command}}\n"
        ),
    )
    .await;
    assert_eq!(node["metadata"]["labels"]["node-pool"], "burst");
    assert_eq!(node["metadata"]["labels"]["worker-type"], "temporary");
    assert!(
        node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "workload-type" && t["effect"] == "NoSchedule")
    );
    lab.shutdown().await;
}
