//! The Tidepool lab: a simulated home lab made of the Proxmox VE, Kubernetes
//! and Talos emulators, wired together so that cloning and starting a VM
//! through the Proxmox API, applying a Talos config to it, and watching its
//! Node turn Ready all happen over the real wire protocols.
//!
//! [`start`] brings a [`Scenario`] up on loopback and writes a kubeconfig,
//! Proxmox credentials, a talosconfig and a `tidepool.yaml` into the state
//! directory, then a `ready` file.

pub mod admin;
pub mod files;
pub mod forward;
pub mod guest;
pub mod kube_side;
pub mod scenario;
pub mod sickness;
pub mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tidepool_lab_kube::{KubeLab, Taint as KubeTaint};
use tidepool_lab_pve::PveLab;
use tidepool_lab_sim::{Faults, SimClock};
use tidepool_lab_talos::{TalosDurations, TalosLab};
use tracing::info;
use upstream::ControlPlane;

pub use files::LabFiles;
pub use guest::{AddressPlan, Guests};
pub use kube_side::{KubernetesMode, LabKube};
pub use scenario::{Scenario, ScenarioError};

/// Why a lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The scenario is unusable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The real control plane (`--kubernetes upstream`) did not start.
    #[error("starting the real Kubernetes control plane")]
    Upstream(#[from] upstream::UpstreamError),
    /// An emulator refused its configuration or could not bind.
    #[error("starting the {emulator} emulator: {message}")]
    Emulator {
        /// Which emulator.
        emulator: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Writing the state directory failed.
    #[error("{0}")]
    Io(String),
    /// A bug in the lab itself.
    #[error("internal lab error: {0}")]
    Internal(String),
}

impl LabError {
    /// A stable category for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Scenario(_) => "scenario",
            Self::Emulator { .. } => "emulator",
            Self::Upstream(_) => "upstream",
            Self::Io(_) => "io",
            Self::Internal(_) => "internal",
        }
    }
}

/// How to run a lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// What to simulate.
    pub scenario: Scenario,
    /// Where to write kubeconfig, credentials and `ready`.
    pub state_dir: PathBuf,
    /// Simulated time runs this many times faster than real time.
    pub time_scale: f64,
    /// Seed of every random decision (faults, addresses).
    pub seed: u64,
    /// The emulator, or the real control plane.
    pub kubernetes: KubernetesMode,
}

/// A running lab. Dropping it leaves the emulators running until the
/// runtime stops; [`RunningLab::shutdown`] stops them.
pub struct RunningLab {
    /// Files written for users.
    pub files: LabFiles,
    /// The Proxmox emulator.
    pub pve: PveLab,
    /// The Kubernetes side: the emulator or the real control plane.
    pub kube: LabKube,
    /// The Talos emulator.
    pub talos: TalosLab,
    /// The guest simulator.
    pub guests: Guests,
    /// Sick workers on demand (the health monitor's scenarios).
    pub sickness: sickness::Sickness,
    /// The shared fault table.
    pub faults: Arc<Faults>,
    /// The shared clock.
    pub clock: SimClock,
    /// Proxmox API address.
    pub pve_addr: SocketAddr,
    /// Kubernetes API address.
    pub kube_addr: SocketAddr,
    /// Admin endpoint address.
    pub admin_addr: SocketAddr,
    /// Port every Talos machine listens on.
    pub talos_port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The real control plane's processes, in upstream mode; they stop
    /// when the lab is dropped or shut down.
    control_plane: Option<ControlPlane>,
}

/// The URL of the lab's Kubernetes API.
fn kube_url(kube: &LabKube, addr: SocketAddr) -> String {
    match kube.mode() {
        KubernetesMode::Emulator => format!("http://{addr}"),
        KubernetesMode::Upstream => format!("https://{addr}"),
    }
}

impl RunningLab {
    /// The URL of the lab's Kubernetes API (what the kubeconfig names).
    pub fn kube_url(&self) -> String {
        kube_url(&self.kube, self.kube_addr)
    }

    /// Stops the emulators (and the control plane's processes) and removes
    /// the `ready` file.
    pub async fn shutdown(mut self) {
        let _ = std::fs::remove_file(&self.files.ready);
        self.talos.power_off_all().await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        drop(self.control_plane.take());
    }

    /// The real control plane, in upstream mode.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.control_plane.as_ref()
    }
}

/// The WorkerClaim CRD, as generated from the Rust types.
const WORKER_CLAIM_CRD: &str = include_str!("../../../deploy/crds/workerclaims.tidepool.dev.yaml");

fn emulator(emulator: &'static str) -> impl Fn(String) -> LabError {
    move |message| LabError::Emulator { emulator, message }
}

/// A `127.x` prefix for this lab's guest addresses, different across
/// concurrently running labs with high probability.
fn address_prefix(seed: u64) -> u8 {
    let salt = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    u8::try_from(16 + (seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 230).unwrap_or(16)
}

fn free_port() -> Result<u16, LabError> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| LabError::Io(format!("finding a free port for Talos: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LabError::Io(format!("finding a free port for Talos: {e}")))
}

/// Per-node machine config: the base with a hostname and node labels.
fn node_config(
    base: &str,
    hostname: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut machine_extra = format!("  network:\n    hostname: {hostname}\n");
    if !labels.is_empty() {
        machine_extra.push_str("  nodeLabels:\n");
        for (k, v) in labels {
            machine_extra.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    base.replace("  network: {}\n", &machine_extra)
}

/// Starts a lab and returns once every emulator accepts connections and the
/// `ready` file is written.
///
/// # Errors
/// [`LabError`] naming the emulator, scenario object or file that failed.
pub async fn start(opts: LabOptions) -> Result<RunningLab, LabError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scenario = opts.scenario;
    let clock = SimClock::new(opts.time_scale);
    let faults = Arc::new(Faults::new(opts.seed));
    faults.set_rules(scenario.faults.clone());
    let mut tasks = Vec::new();

    let pve = PveLab::new(scenario.proxmox.clone(), clock.clone(), faults.clone())
        .map_err(|e| emulator("Proxmox")(e.to_string()))?;
    let (pve_addr, pve_task) = pve
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| emulator("Proxmox")(e.to_string()))?;
    tasks.push(pve_task);
    let pve_api = format!("https://{pve_addr}/api2/json");

    let (kube, kube_addr, kubeconfig, control_plane) =
        start_kubernetes(opts.kubernetes, &opts.state_dir, &clock, &faults).await?;

    let talos_port = free_port()?;
    let talos = TalosLab::new(clock.clone(), faults.clone(), TalosDurations::default())
        .map_err(|e| emulator("Talos")(e.to_string()))?
        .with_port(talos_port);

    let ca = reqwest::Certificate::from_pem(pve.ca_cert_pem().as_bytes())
        .map_err(|e| LabError::Internal(format!("Proxmox CA: {e}")))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(|e| LabError::Internal(format!("HTTP client: {e}")))?;
    let guests = Guests::new(
        pve.clone(),
        kube.clone(),
        talos.clone(),
        clock.clone(),
        faults.clone(),
        scenario.guest.clone(),
        AddressPlan::new(address_prefix(opts.seed)),
        http,
        pve_api,
    );
    tasks.extend(guests.spawn());
    let sickness = sickness::Sickness::new(kube.clone(), talos.clone(), guests.clone());
    tasks.extend(sickness.spawn(std::time::Duration::from_millis(20)));

    install_cluster_basics(&kube, &scenario.kubernetes).await?;

    let cp_ip = scenario
        .cluster
        .control_plane
        .map(|vmid| guests.address_of(vmid));
    if let Some(ip) = cp_ip {
        tasks.extend(forward::control_plane(ip, kube_addr).await);
    }
    let base = files::worker_config(&scenario.name, cp_ip, talos.ca(), opts.seed);
    adopt_existing(&scenario, &pve, &guests, &base).await?;
    apply_workloads(&kube, &scenario)?;

    let (admin_addr, admin_task) = admin::serve(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        faults.clone(),
        sickness.router(),
    )
    .await?;
    tasks.push(admin_task);

    let gpu_hosts = gpu_hosts(&scenario);
    let endpoints: Vec<IpAddr> = cp_ip.into_iter().collect();
    let files = files::write_all(
        &opts.state_dir,
        &files::Endpoints {
            scenario: &scenario.name,
            kube_url: kube_url(&kube, kube_addr),
            pve: pve_addr,
            admin: admin_addr,
            kubeconfig,
            pve_token: pve.token(),
            pve_ca: pve.ca_cert_pem(),
            talosconfig: talos.talosconfig("lab", &endpoints),
            worker_config: base,
            talos_port,
            hosts: scenario
                .proxmox
                .hosts
                .iter()
                .map(|h| h.name.clone())
                .collect(),
            gpu_hosts,
            time_scale: clock.scale(),
            time_origin_ms: clock.origin_unix_ms(),
            seed: opts.seed,
        },
    )?;
    files::mark_ready(&files)?;
    info!(kubernetes = %kube_addr, proxmox = %pve_addr, admin = %admin_addr, "lab ready");
    Ok(RunningLab {
        files,
        pve,
        kube,
        talos,
        guests,
        sickness,
        faults,
        clock,
        pve_addr,
        kube_addr,
        admin_addr,
        talos_port,
        tasks,
        control_plane,
    })
}

/// The lab's Kubernetes side: the emulator served on loopback, or the real
/// control plane behind the lab's clock-mapping endpoint. Its handle, the
/// address kubeconfigs point at, the kubeconfig, and the control plane.
async fn start_kubernetes(
    mode: KubernetesMode,
    state_dir: &std::path::Path,
    clock: &SimClock,
    faults: &Arc<Faults>,
) -> Result<(LabKube, SocketAddr, String, Option<ControlPlane>), LabError> {
    match mode {
        KubernetesMode::Emulator => {
            let kube = KubeLab::new(clock.clone(), faults.clone());
            let addr = kube
                .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .map_err(|e| emulator("Kubernetes")(e.to_string()))?;
            let kubeconfig = kube.kubeconfig().unwrap_or_default();
            Ok((LabKube::Emulator(kube), addr, kubeconfig, None))
        }
        KubernetesMode::Upstream => {
            std::fs::create_dir_all(state_dir)
                .map_err(|e| LabError::Io(format!("{}: {e}", state_dir.display())))?;
            let cp = upstream::start(state_dir, clock, faults).await?;
            let kube = LabKube::Upstream(cp.client.clone(), Arc::new(clock.clone()));
            Ok((kube, cp.endpoint, cp.kubeconfig(), Some(cp)))
        }
    }
}

/// The namespaces every cluster has, the lab user's RBAC, and Tidepool's
/// WorkerClaim CRD (the cluster runs Tidepool) unless the scenario leaves
/// it out. On the real control plane, also waits until the CRD is served
/// and the `default` namespace has its service account (the admission
/// plugin refuses pods before).
async fn install_cluster_basics(
    kube: &LabKube,
    setup: &scenario::KubernetesSetup,
) -> Result<(), LabError> {
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "tidepool-system",
    ] {
        kube.apply(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .map_err(|e| LabError::Internal(format!("namespace {ns}: {e}")))?;
    }

    for obj in setup.rbac_objects() {
        kube.apply(obj)
            .map_err(|e| LabError::Internal(format!("the lab user's RBAC: {e}")))?;
    }
    if !setup.worker_claim_crd {
        return Ok(());
    }
    // The cluster runs Tidepool: its WorkerClaim CRD is installed.
    let crd: serde_json::Value = serde_saphyr::from_str(WORKER_CLAIM_CRD)
        .map_err(|e| LabError::Internal(format!("the WorkerClaim CRD does not parse: {e}")))?;
    kube.apply(crd)
        .map_err(|e| LabError::Internal(format!("installing the WorkerClaim CRD: {e}")))?;
    if kube.mode() == KubernetesMode::Upstream {
        upstream::wait_settled(kube).await?;
    }
    Ok(())
}

/// Adopts the scenario's existing machines (the control plane and the
/// permanent workers) as guests that have already joined, with their
/// labels and taints.
async fn adopt_existing(
    scenario: &Scenario,
    pve: &PveLab,
    guests: &Guests,
    base: &str,
) -> Result<(), LabError> {
    let mut existing: Vec<(
        u32,
        std::collections::BTreeMap<String, String>,
        Vec<KubeTaint>,
    )> = Vec::new();
    if let Some(vmid) = scenario.cluster.control_plane {
        let labels = [(
            "node-role.kubernetes.io/control-plane".to_owned(),
            String::new(),
        )]
        .into();
        let taints = vec![KubeTaint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        }];
        existing.push((vmid, labels, taints));
    }
    for w in &scenario.cluster.workers {
        let taints = w
            .taints
            .iter()
            .filter_map(|t| scenario::parse_taint(t))
            .map(|(key, value, effect)| KubeTaint { key, value, effect })
            .collect();
        existing.push((w.vmid, w.labels.clone(), taints));
    }
    for (vmid, labels, taints) in existing {
        let vm = pve
            .vm(vmid)
            .ok_or_else(|| LabError::Internal(format!("scenario VM {vmid} vanished")))?;
        let name = vm.name.clone().unwrap_or_else(|| format!("vm-{vmid}"));
        let mut config = node_config(base, &name, &labels);
        if Some(vmid) == scenario.cluster.control_plane {
            // The control plane runs as one: etcd and trustd in its services.
            config = config.replace("  type: worker\n", "  type: controlplane\n");
        }
        guests
            .adopt(&vm, &config, &taints)
            .await
            .map_err(LabError::Internal)?;
    }
    Ok(())
}

/// Applies the scenario's workloads; a refused one is a scenario error.
fn apply_workloads(kube: &LabKube, scenario: &Scenario) -> Result<(), LabError> {
    for (i, obj) in scenario.workloads.iter().enumerate() {
        kube.apply(obj.clone()).map_err(|e| {
            LabError::Scenario(ScenarioError::Invalid {
                origin: scenario.name.clone(),
                message: format!(
                    "workloads[{i}] ({} {}): {e}",
                    obj["kind"].as_str().unwrap_or("?"),
                    obj["metadata"]["name"].as_str().unwrap_or("?")
                ),
            })
        })?;
    }
    Ok(())
}

/// The hosts with a GPU in a PCI mapping.
fn gpu_hosts(scenario: &Scenario) -> Vec<String> {
    scenario
        .proxmox
        .pci_mappings
        .iter()
        .flat_map(|m| m.devices.iter().map(|d| d.node.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}
