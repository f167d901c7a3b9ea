//! The lab as a whole: a scenario comes up with its nodes Ready (checked
//! with kubectl), and a VM cloned and started through the Proxmox API joins
//! the cluster both ways Tidepool will use — Talos API apply in maintenance
//! mode, and nocloud user-data named by the SMBIOS serial.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_lab_sim::{FaultRule, Service};
use tidepool_talos_proto::machine::ApplyConfigurationRequest;
use tidepool_talos_proto::machine::machine_service_client::MachineServiceClient;
use tidepool_tls::{AcceptAny, CustomVerifier};

const SCALE: f64 = 500.0;

async fn lab(name: &str) -> RunningLab {
    let dir = std::env::temp_dir().join(format!("tidepool-lab-e2e-{name}-{}", std::process::id()));
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: dir,
        time_scale: SCALE,
        seed: 42,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Pve {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Pve {
    fn new(lab: &RunningLab) -> Self {
        let env = std::fs::read_to_string(&lab.files.proxmox_env).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let ca = std::fs::read(get("PROXMOX_CA_FILE")).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        Self {
            http,
            base: get("PROXMOX_ENDPOINT"),
            auth: format!("PVEAPIToken={}", get("PROXMOX_TOKEN")),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body["data"].clone()
    }

    async fn wait_task(&self, node: &str, upid: &str) {
        for _ in 0..400 {
            let s = self
                .call(
                    reqwest::Method::GET,
                    &format!("/nodes/{node}/tasks/{upid}/status"),
                    &[],
                )
                .await;
            if s["status"] == "stopped" {
                assert_eq!(s["exitstatus"], "OK", "task {upid}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("task {upid} did not finish");
    }

    /// Clones template 9001 to `vmid`, optionally sets an SMBIOS serial,
    /// starts it, and returns the address its guest agent reports.
    async fn clone_and_start(&self, vmid: u32, name: &str, serial: Option<&str>) -> Option<IpAddr> {
        let id = vmid.to_string();
        let upid = self
            .call(
                reqwest::Method::POST,
                "/nodes/pve-01/qemu/9001/clone",
                &[
                    ("newid", &id),
                    ("name", name),
                    ("full", "1"),
                    ("pool", "tidepool"),
                ],
            )
            .await;
        self.wait_task("pve-01", upid.as_str().unwrap()).await;
        if let Some(serial) = serial {
            let b64 = base64::engine::general_purpose::STANDARD.encode(serial);
            let smbios = format!("serial={b64},base64=1");
            self.call(
                reqwest::Method::PUT,
                &format!("/nodes/pve-01/qemu/{vmid}/config"),
                &[("smbios1", &smbios)],
            )
            .await;
        }
        let upid = self
            .call(
                reqwest::Method::POST,
                &format!("/nodes/pve-01/qemu/{vmid}/status/start"),
                &[],
            )
            .await;
        self.wait_task("pve-01", upid.as_str().unwrap()).await;
        for _ in 0..300 {
            let resp = self
                .http
                .get(format!(
                    "{}/nodes/pve-01/qemu/{vmid}/agent/network-get-interfaces",
                    self.base
                ))
                .header("Authorization", &self.auth)
                .send()
                .await
                .unwrap();
            if resp.status().is_success() {
                let v: Value = resp.json().await.unwrap();
                let ip = v["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|i| i["ip-addresses"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a["ip-address"].as_str().map(str::to_owned))
                    .find(|a| a.starts_with("127.") && a != "127.0.0.1")?;
                return ip.parse().ok();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

async fn wait_for_node(lab: &RunningLab, name: &str) -> Value {
    for _ in 0..500 {
        if let Ok(node) = lab.kube.get("v1", "Node", "", name) {
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return node;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node {name} never turned Ready");
}

fn worker_config(lab: &RunningLab, hostname: &str) -> String {
    let base = std::fs::read_to_string(lab.files.dir.join("worker.yaml")).unwrap();
    base.replace(
        "  network: {}\n",
        &format!(
            "  network:\n    hostname: {hostname}\n  nodeLabels:\n    node-pool: burst\n"
        ),
    )
    .replace(
        "    defaultRuntimeSeccompProfileEnabled: true\n",
        "    defaultRuntimeSeccompProfileEnabled: true\n    extraConfig:\n      registerWithTaints:\n        - {key: workload-type, value: burst, effect: NoSchedule}\n",
    )
}

// kubectl runs as a blocking child process: the emulators need other
// worker threads to answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_scenario_comes_up_with_every_node_ready_for_kubectl() {
    let lab = lab("nodes").await;
    assert!(lab.files.ready.exists());
    let nodes: Value = serde_json::from_str(&kubectl(
        &lab.files.kubeconfig,
        &["get", "nodes", "-o", "json"],
    ))
    .unwrap();
    let mut names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["k8s-master", "k8s-node1", "k8s-node2", "k8s-node3"]);
    kubectl(
        &lab.files.kubeconfig,
        &[
            "wait",
            "--for=condition=Ready",
            "node/k8s-node2",
            "--timeout=10s",
        ],
    );
    let cfg =
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap();
    assert_eq!(
        cfg.pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["burst", "spot", "gpu"]
    );
    lab.shutdown().await;
}

async fn maintenance_client(
    ip: IpAddr,
    port: u16,
) -> MachineServiceClient<tonic::transport::Channel> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CustomVerifier::new(AcceptAny, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
                let tls = connector
                    .connect(ServerName::IpAddress(ip.into()), tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    MachineServiceClient::new(channel)
}

#[tokio::test]
async fn a_cloned_vm_joins_after_a_talos_api_apply_in_maintenance_mode() {
    let lab = lab("talos").await;
    let pve = Pve::new(&lab);
    let ip = pve
        .clone_and_start(1250, "burst-tal01", None)
        .await
        .expect("agent address");
    let mut client = maintenance_client(ip, lab.talos_port).await;
    client
        .apply_configuration(ApplyConfigurationRequest {
            data: worker_config(&lab, "burst-tal01").into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap();
    let node = wait_for_node(&lab, "burst-tal01").await;
    assert_eq!(node["metadata"]["labels"]["node-pool"], "burst");
    assert_eq!(node["spec"]["taints"][0]["key"], "workload-type");
    assert_eq!(node["status"]["allocatable"]["cpu"], "3800m");
    // Stopping the VM takes the node down.
    let upid = pve
        .call(
            reqwest::Method::POST,
            "/nodes/pve-01/qemu/1250/status/stop",
            &[],
        )
        .await;
    pve.wait_task("pve-01", upid.as_str().unwrap()).await;
    let mut not_ready = false;
    for _ in 0..200 {
        let n = lab.kube.get("v1", "Node", "", "burst-tal01").unwrap();
        not_ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] != "True");
        if not_ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "node should leave Ready when its VM stops");
    lab.shutdown().await;
}

#[tokio::test]
async fn a_cloned_vm_with_a_nocloud_serial_fetches_its_user_data_and_joins() {
    let lab = lab("nocloud").await;
    let config = worker_config(&lab, "burst-noc01");
    let app = axum::Router::new()
        .route(
            "/w/one-time-token/user-data",
            axum::routing::get(move || async move { config }),
        )
        .route(
            "/w/one-time-token/meta-data",
            axum::routing::get(|| async { "local-hostname: burst-noc01\n" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pve = Pve::new(&lab);
    let serial = format!("ds=nocloud;s=http://{addr}/w/one-time-token/");
    pve.clone_and_start(1251, "burst-noc01", Some(&serial))
        .await
        .expect("agent address");
    let node = wait_for_node(&lab, "burst-noc01").await;
    assert_eq!(node["metadata"]["labels"]["node-pool"], "burst");
    lab.shutdown().await;
}

#[tokio::test]
async fn a_vm_whose_agent_is_faulted_never_reports_an_address() {
    let lab = lab("agent").await;
    lab.faults.add_rule(FaultRule {
        service: Service::Proxmox,
        op: "agent:1252".into(),
        error_rate: 1.0,
        status: None,
        message: None,
        latency_ms: 0,
        times: None,
    });
    let pve = Pve::new(&lab);
    assert_eq!(pve.clone_and_start(1252, "burst-agent", None).await, None);
    lab.shutdown().await;
}

#[tokio::test]
async fn faults_set_through_the_admin_endpoint_take_effect_at_once() {
    let lab = lab("admin").await;
    let admin = format!("http://{}/faults", lab.admin_addr);
    let http = reqwest::Client::new();
    let rules: Value = http
        .put(&admin)
        .json(&serde_json::json!([
            {"service": "proxmox", "op": "GET /version", "status": 503, "message": "maintenance", "times": 1}
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules[0]["op"], "GET /version");
    let pve = Pve::new(&lab);
    let first = pve
        .http
        .get(format!("{}/version", pve.base))
        .header("Authorization", &pve.auth)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 503);
    // `times: 1` — the second call goes through.
    assert!(pve.call(reqwest::Method::GET, "/version", &[]).await["release"].is_string());
    let bad = http
        .post(&admin)
        .json(&serde_json::json!({"service": "nope", "op": "x"}))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
    lab.shutdown().await;
}

#[tokio::test]
async fn a_machine_without_a_configured_hostname_registers_under_the_name_talos_reports() {
    let lab = lab("hostname").await;
    let pve = Pve::new(&lab);
    let ip = pve
        .clone_and_start(1251, "burst-tal02", None)
        .await
        .expect("agent address");
    let mut client = maintenance_client(ip, lab.talos_port).await;
    let base = std::fs::read_to_string(lab.files.dir.join("worker.yaml")).unwrap();
    assert!(!base.contains("hostname:"), "the base config names no host");
    client
        .apply_configuration(ApplyConfigurationRequest {
            data: base.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut hostname = None;
    for _ in 0..500 {
        hostname = lab
            .talos
            .machine_state(ip)
            .filter(|m| m.config.is_some())
            .map(|m| m.hostname);
        if hostname.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hostname = hostname.expect("the machine came up configured");
    assert!(hostname.starts_with("talos-"), "{hostname}");
    wait_for_node(&lab, &hostname).await;
    assert!(lab.kube.get("v1", "Node", "", "burst-tal02").is_err());
    lab.shutdown().await;
}
