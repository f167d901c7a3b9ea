//! What a running lab writes for its users: kubeconfig, Proxmox
//! credentials, talosconfig, a Talos worker config, and a Tidepool
//! configuration that points at the lab.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::LabError;

/// Everything the files are made from.
pub(crate) struct Endpoints<'a> {
    pub(crate) scenario: &'a str,
    /// The Kubernetes API's URL (`http://` for the emulator, `https://`
    /// for the real control plane's endpoint).
    pub(crate) kube_url: String,
    pub(crate) pve: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) kubeconfig: String,
    pub(crate) pve_token: String,
    pub(crate) pve_ca: &'a str,
    pub(crate) talosconfig: String,
    pub(crate) worker_config: String,
    pub(crate) talos_port: u16,
    pub(crate) hosts: Vec<String>,
    pub(crate) gpu_hosts: Vec<String>,
    pub(crate) time_scale: f64,
    pub(crate) time_origin_ms: i64,
    pub(crate) seed: u64,
}

/// Paths of the files a lab wrote.
#[derive(Clone, Debug)]
pub struct LabFiles {
    /// The state directory.
    pub dir: PathBuf,
    /// kubeconfig for the Kubernetes emulator.
    pub kubeconfig: PathBuf,
    /// `PROXMOX_ENDPOINT`, `PROXMOX_TOKEN`, `PROXMOX_CA_FILE`.
    pub proxmox_env: PathBuf,
    /// talosconfig for the Talos machines.
    pub talosconfig: PathBuf,
    /// A Tidepool configuration for this lab.
    pub tidepool_yaml: PathBuf,
    /// Written last, once everything accepts connections.
    pub ready: PathBuf,
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), LabError> {
    std::fs::write(path, text)
        .map_err(|e| LabError::Io(format!("writing {}: {e}", path.display())))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| LabError::Io(format!("protecting {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

pub(crate) fn write_all(dir: &Path, ep: &Endpoints<'_>) -> Result<LabFiles, LabError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LabError::Io(format!("creating {}: {e}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| LabError::Io(format!("resolving {}: {e}", dir.display())))?;
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let files = LabFiles {
        kubeconfig: dir.join("kubeconfig"),
        proxmox_env: dir.join("proxmox.env"),
        talosconfig: dir.join("talosconfig"),
        tidepool_yaml: dir.join("tidepool.yaml"),
        ready,
        dir: dir.clone(),
    };
    let ca_file = dir.join("proxmox-ca.pem");
    let endpoint = format!("https://{}/api2/json", ep.pve);
    write(&files.kubeconfig, &ep.kubeconfig, false)?;
    write(&ca_file, ep.pve_ca, false)?;
    write(&dir.join("proxmox-token"), &ep.pve_token, true)?;
    write(
        &files.proxmox_env,
        &format!(
            "PROXMOX_ENDPOINT={endpoint}\nPROXMOX_TOKEN={}\nPROXMOX_CA_FILE={}\n",
            ep.pve_token,
            ca_file.display()
        ),
        true,
    )?;
    write(&files.talosconfig, &ep.talosconfig, true)?;
    write(&dir.join("worker.yaml"), &ep.worker_config, true)?;
    let config = tidepool_yaml(ep, &endpoint);
    if let Err(errors) = tidepool_core::config::validate(&config) {
        return Err(LabError::Internal(format!(
            "the lab's own tidepool.yaml is invalid: {errors}"
        )));
    }
    write(&files.tidepool_yaml, &config, false)?;
    write(
        &dir.join("lab.env"),
        &format!(
            "export TIDEPOOL_CONFIG={}\nexport KUBECONFIG={}\nexport TIDEPOOL_TIME_SCALE={}\nexport TIDEPOOL_TIME_ORIGIN={}\n",
            files.tidepool_yaml.display(),
            files.kubeconfig.display(),
            ep.time_scale,
            ep.time_origin_ms
        ),
        false,
    )?;
    write(
        &dir.join("lab.json"),
        &serde_json::json!({
            "scenario": ep.scenario,
            "kubernetes": ep.kube_url,
            "proxmox": endpoint,
            "admin": format!("http://{}", ep.admin),
            "talosPort": ep.talos_port,
            "timeScale": ep.time_scale,
            "timeOrigin": ep.time_origin_ms,
            "seed": ep.seed,
        })
        .to_string(),
        false,
    )?;
    Ok(files)
}

/// Marks the lab ready (the file scripts wait for).
pub(crate) fn mark_ready(files: &LabFiles) -> Result<(), LabError> {
    write(&files.ready, "ready\n", false)
}

fn tidepool_yaml(ep: &Endpoints<'_>, endpoint: &str) -> String {
    let hosts = ep.hosts.join(", ");
    let gpu_pool = if ep.gpu_hosts.is_empty() {
        String::new()
    } else {
        format!(
            "  - name: gpu
    kind: gpu
    sizes: [gpu]
    template: talos-worker-gpu-v1.8.0
    hosts: [{}]
    limits: {{maxNodes: 1}}
    idleTimeout: 30m
",
            ep.gpu_hosts.join(", ")
        )
    };
    format!(
        "# Tidepool configuration for the lab `{scenario}` (written by `tidepool lab`).
# Relative paths are relative to this file.
schemaVersion: v1alpha1
pollingInterval: 30s
providers:
  pve:
    type: proxmox
    endpoint: {endpoint}
    tokenFrom: {{file: proxmox-token}}
    tls: {{caFile: proxmox-ca.pem}}
    hosts: [{hosts}]
    vmidRange: {{lower: 1250, upper: 1300}}
    hostMemoryReserveMiB: 4096
    storage: local-lvm
    resourcePool: tidepool
    fullClone: true
join:
  method: talos-api
  talosPort: {port}
  workerConfigFrom: {{file: worker.yaml}}
  talosconfigFrom: {{file: talosconfig}}
  registrationTimeout: 300s
sizes:
  gpu:
    gpu: {{count: 1, class: tesla-t4, memory: 16Gi, cuda: \"12.2\", mapping: tesla-t4}}
pools:
  - name: burst
    kind: burst
    sizes: [small, medium, large]
    template: talos-worker-{{size}}-v1.8.0
    limits: {{minNodes: 0, maxNodes: 10, cpuCores: 96, memoryMiB: 196608}}
    ttl: 4h
    idleTimeout: 30m
  - name: spot
    kind: spot
    sizes: [small]
    template: talos-worker-{{size}}-v1.8.0
    limits: {{maxNodes: 4}}
    idleTimeout: 30m
{gpu_pool}server:
  metricsAddr: 127.0.0.1:9464
  namespace: tidepool-system
",
        scenario = ep.scenario,
        port = ep.talos_port,
    )
}

/// A Talos worker machine config for the lab's cluster: the base that
/// Tidepool patches per worker.
pub(crate) fn worker_config(
    cluster: &str,
    control_plane: Option<IpAddr>,
    talos_ca_pem: &str,
    seed: u64,
) -> String {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let token = |n: u64| {
        format!(
            "{:06x}.{:016x}",
            (seed ^ n) & 0xff_ffff,
            seed.rotate_left(17) ^ n
        )
    };
    let endpoint = control_plane.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
    format!(
        "version: v1alpha1
debug: false
persist: true
machine:
  type: worker
  token: {machine_token}
  ca:
    crt: {ca}
    key: \"\"
  certSANs: []
  kubelet:
    image: ghcr.io/siderolabs/kubelet:v1.31.1
    defaultRuntimeSeccompProfileEnabled: true
  network: {{}}
  install:
    disk: /dev/sda
    image: ghcr.io/siderolabs/installer:v1.8.0
    wipe: false
cluster:
  id: {cluster_id}
  secret: {cluster_secret}
  controlPlane:
    endpoint: https://{endpoint}:6443
  clusterName: {cluster}
  network:
    dnsDomain: cluster.local
    podSubnets: [10.244.0.0/16]
    serviceSubnets: [10.96.0.0/12]
  token: {cluster_token}
  ca:
    crt: {ca}
    key: \"\"
",
        machine_token = token(1),
        cluster_token = token(2),
        cluster_id = b64(&format!("lab-cluster-{seed}")),
        cluster_secret = b64(&format!("lab-secret-{seed:x}")),
        ca = b64(talos_ca_pem),
    )
}
