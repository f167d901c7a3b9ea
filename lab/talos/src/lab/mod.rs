//! The simulated machines: their lifecycle (maintenance, install, running,
//! reboot, upgrade, shutdown, reset), the gRPC server each one runs on its
//! own loopback address, and the events the lab composition listens to.
//!
//! A machine is keyed by its IP. Every transition that takes the API down
//! bumps the machine's *epoch*; delayed work (finishing an install, coming
//! back from a reboot) re-checks the epoch before acting, so a power-off in
//! between cancels it, and a request arriving on a connection of an older
//! server is refused.

mod machines;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tidepool_lab_sim::{CertError, Faults, Issued, KeyAlgorithm, SimClock, TestCa};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, MachineConfig};
use crate::tls::{KeyForm, Role, render_talosconfig};

/// The port apid (and the maintenance server) listens on.
pub const DEFAULT_PORT: u16 = 50000;

/// The Talos version a machine reports until it is upgraded.
pub const DEFAULT_TALOS_VERSION: &str = "v1.10.6";

/// Largest gRPC message the servers accept (Talos: 32 MiB).
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Errors of the lab's in-process API.
#[derive(Debug, thiserror::Error)]
pub enum TalosLabError {
    /// Generating a certificate failed.
    #[error("generating Talos lab certificates")]
    Cert(#[from] CertError),
    /// The machine's address could not be bound.
    #[error("binding the Talos API of {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS configuration.
    #[error("configuring TLS for the Talos API of {ip}")]
    Tls {
        /// The machine.
        ip: IpAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The configuration given to a machine booting configured is invalid.
    #[error("booting {ip} with its configuration")]
    Config {
        /// The machine.
        ip: IpAddr,
        /// The cause.
        #[source]
        source: ConfigError,
    },
    /// The machine already serves its API (power it off first).
    #[error("machine {0} is already running")]
    AlreadyRunning(IpAddr),
}

impl TalosLabError {
    /// A stable category string for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            TalosLabError::Cert(_) => "cert",
            TalosLabError::Bind { .. } => "bind",
            TalosLabError::Tls { .. } => "tls",
            TalosLabError::Config { .. } => "config",
            TalosLabError::AlreadyRunning(_) => "already_running",
        }
    }
}

/// How long the simulated steps take, in simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TalosDurations {
    /// From an accepted apply in maintenance mode to the configured API
    /// (install + reboot).
    pub install: Duration,
    /// A reboot: API down to API up again.
    pub reboot: Duration,
    /// A shutdown: API down to powered off.
    pub shutdown: Duration,
    /// An upgrade before its reboot (image pull, drain, install).
    pub upgrade: Duration,
    /// A service restart until the service runs again.
    pub service_restart: Duration,
}

impl Default for TalosDurations {
    fn default() -> Self {
        Self {
            install: Duration::from_secs(45),
            reboot: Duration::from_secs(30),
            shutdown: Duration::from_secs(5),
            upgrade: Duration::from_secs(60),
            service_restart: Duration::from_secs(3),
        }
    }
}

/// How a machine boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootMode {
    /// No config found: the maintenance API (TLS without client
    /// certificates, only `ApplyConfiguration`).
    Maintenance,
    /// With a machine config (from disk or the platform, e.g. nocloud
    /// user-data): the regular mTLS API.
    Configured {
        /// The machine configuration YAML.
        config_yaml: String,
    },
}

/// Which API a running machine serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingMode {
    /// The maintenance API.
    Maintenance,
    /// The regular (configured) API.
    Configured,
}

/// Where a machine is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachinePhase {
    /// Not running (never booted, powered off, shut down).
    Off,
    /// Serving the maintenance API.
    Maintenance,
    /// Config accepted in maintenance: installing and rebooting.
    Installing,
    /// Serving the configured API.
    Running,
    /// Rebooting (API down).
    Rebooting,
    /// Upgrade accepted: pulling and installing, then rebooting.
    Upgrading,
    /// Shutting down (API down).
    ShuttingDown,
    /// Resetting (API down).
    Resetting,
}

/// The apply mode, as Talos' `ApplyConfigurationRequest.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Apply and reboot.
    Reboot,
    /// Let the node decide (resolved before events are emitted).
    Auto,
    /// Apply live.
    NoReboot,
    /// Store for the next reboot.
    Staged,
    /// Apply live and roll back after a timeout.
    Try,
}

/// Which disks a reset wipes, as Talos' `ResetRequest.WipeMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WipeMode {
    /// System disk and user disks.
    All,
    /// Only the system disk.
    SystemDisk,
    /// Only the user disks.
    UserDisks,
}

/// What happened on a simulated machine; the lab composition reacts to
/// these (register the Kubernetes node, stop the VM, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TalosEvent {
    /// The machine's API came up (boot, end of install, after a reboot or
    /// upgrade).
    Booted {
        /// The machine.
        ip: IpAddr,
        /// Which API it serves now.
        mode: ServingMode,
    },
    /// A configuration was accepted (in maintenance mode: install follows,
    /// then `Booted{Configured}`). Also emitted when a try-mode apply rolls
    /// back, with the previous configuration.
    ConfigApplied {
        /// The machine.
        ip: IpAddr,
        /// The raw configuration as received.
        config_yaml: String,
        /// The resolved mode (never `Auto`).
        mode: ApplyMode,
    },
    /// A reboot started (the API is down until the next `Booted`).
    Rebooted {
        /// The machine.
        ip: IpAddr,
    },
    /// A shutdown was accepted; the machine powers off after
    /// [`TalosDurations::shutdown`], and the composition should stop the VM.
    ShutdownRequested {
        /// The machine.
        ip: IpAddr,
        /// Skip cordon and drain.
        force: bool,
    },
    /// A reset was accepted.
    ResetRequested {
        /// The machine.
        ip: IpAddr,
        /// Cordon and drain first.
        graceful: bool,
        /// Reboot afterwards (else power off).
        reboot: bool,
        /// Which disks.
        wipe: WipeMode,
        /// System partition labels to wipe; empty = the whole system disk.
        partitions: Vec<String>,
    },
    /// An upgrade was accepted; the machine reboots into the new version.
    UpgradeRequested {
        /// The machine.
        ip: IpAddr,
        /// The installer image.
        image: String,
        /// Staged: the install runs early in the next boot (no drain).
        stage: bool,
    },
    /// The upgraded image failed to boot and the machine booted back into
    /// its previous one (A/B rollback); emitted as it comes back up.
    UpgradeRolledBack {
        /// The machine.
        ip: IpAddr,
        /// The version that failed to boot.
        failed_version: String,
        /// The version it runs again.
        version: String,
    },
    /// A service was restarted through the API.
    ServiceRestarted {
        /// The machine.
        ip: IpAddr,
        /// The service id (e.g. `kubelet`).
        service: String,
    },
}

/// A snapshot of one machine.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineStatus {
    /// Lifecycle phase.
    pub phase: MachinePhase,
    /// The active configuration, if any.
    pub config: Option<MachineConfig>,
    /// A configuration staged for the next reboot.
    pub staged: Option<MachineConfig>,
    /// The hostname the machine reports.
    pub hostname: String,
    /// The Talos version tag the machine reports.
    pub version: String,
    /// How many times the API came up.
    pub boots: u64,
}

/// One service in `ServiceList`.
#[derive(Clone, Debug)]
pub(crate) struct ServiceState {
    pub(crate) state: &'static str,
    pub(crate) healthy: bool,
    pub(crate) events: Vec<(String, &'static str, SystemTime)>,
    pub(crate) last_change: SystemTime,
}

/// Services a Talos worker runs (no etcd, no trustd).
const WORKER_SERVICES: &[&str] = &[
    "apid",
    "auditd",
    "containerd",
    "cri",
    "dashboard",
    "kubelet",
    "machined",
    "syslogd",
    "udevd",
];

struct RunningServer {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub(crate) struct Machine {
    pub(crate) phase: MachinePhase,
    pub(crate) config: Option<MachineConfig>,
    pub(crate) staged: Option<MachineConfig>,
    pub(crate) version: String,
    pub(crate) epoch: u64,
    pub(crate) serving: Option<ServingMode>,
    server: Option<RunningServer>,
    pub(crate) maintenance_ca: Option<String>,
    pub(crate) services: BTreeMap<String, ServiceState>,
    pub(crate) boots: u64,
    pub(crate) try_token: u64,
}

impl Machine {
    fn new(version: String) -> Self {
        Self {
            phase: MachinePhase::Off,
            config: None,
            staged: None,
            version,
            epoch: 0,
            serving: None,
            server: None,
            maintenance_ca: None,
            services: BTreeMap::new(),
            boots: 0,
            try_token: 0,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) clock: SimClock,
    pub(crate) faults: Arc<Faults>,
    pub(crate) durations: TalosDurations,
    port: AtomicU16,
    default_version: Mutex<String>,
    ca: TestCa,
    admin: Issued,
    machines: Mutex<HashMap<IpAddr, Machine>>,
    events: broadcast::Sender<TalosEvent>,
    actor_ids: AtomicU64,
}

/// The Talos emulator: a set of simulated machines, each serving the Talos
/// API on its own IP. A cheap [`Clone`] handle.
#[derive(Clone)]
pub struct TalosLab {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TalosLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosLab")
            .field("port", &self.port())
            .finish_non_exhaustive()
    }
}

impl TalosLab {
    /// A lab with a fresh Ed25519 Talos CA and admin client certificate,
    /// serving on [`DEFAULT_PORT`].
    ///
    /// # Errors
    /// Fails only if certificate generation fails.
    pub fn new(
        clock: SimClock,
        faults: Arc<Faults>,
        durations: TalosDurations,
    ) -> Result<Self, TalosLabError> {
        let ca = TestCa::new("talos", KeyAlgorithm::Ed25519)?;
        let admin = ca.issue_client("admin", &[Role::Admin.as_str()])?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
                faults,
                durations,
                port: AtomicU16::new(DEFAULT_PORT),
                default_version: Mutex::new(DEFAULT_TALOS_VERSION.to_owned()),
                ca,
                admin,
                machines: Mutex::new(HashMap::new()),
                events,
                actor_ids: AtomicU64::new(0),
            }),
        })
    }

    /// Serves machines booted from now on on `port` instead of 50000.
    pub fn with_port(self, port: u16) -> Self {
        self.inner.port.store(port, Ordering::SeqCst);
        self
    }

    /// Machines booted from now on report `tag` (e.g. `v1.12.1`) until
    /// upgraded.
    pub fn with_talos_version(self, tag: &str) -> Self {
        *lock(&self.inner.default_version) = tag.to_owned();
        self
    }

    /// The port the machines serve on.
    pub fn port(&self) -> u16 {
        self.inner.port.load(Ordering::SeqCst)
    }

    /// The Talos OS CA certificate (PEM) that signs the configured-mode
    /// server certificates and that client certificates must chain to.
    pub fn ca(&self) -> &str {
        self.inner.ca.cert_pem()
    }

    /// The admin (`os:admin`) client certificate and key the talosconfig
    /// carries.
    pub fn admin_identity(&self) -> &Issued {
        &self.inner.admin
    }

    /// Issues another client certificate from the lab's Talos CA with the
    /// given roles (e.g. `["os:reader"]`).
    ///
    /// # Errors
    /// Fails only if key generation fails.
    pub fn issue_client(&self, common_name: &str, roles: &[&str]) -> Result<Issued, TalosLabError> {
        Ok(self.inner.ca.issue_client(common_name, roles)?)
    }

    /// A talosconfig (YAML) with one context named `context`, the given
    /// endpoints (IPs; port 50000 is implied) and the admin identity. The
    /// key is PKCS#8 version 1 (as Go and real Talos write Ed25519 keys,
    /// loadable by OpenSSL) under the standard `PRIVATE KEY` PEM label,
    /// which both rustls and Go accept.
    pub fn talosconfig(&self, context: &str, endpoints: &[IpAddr]) -> String {
        self.render(context, endpoints, KeyForm::Standard)
    }

    /// Like [`TalosLab::talosconfig`], but the key is PKCS#8 version 2
    /// (with the public key), to test that clients load both forms.
    pub fn talosconfig_with_pkcs8_v2_key(&self, context: &str, endpoints: &[IpAddr]) -> String {
        self.render(context, endpoints, KeyForm::Pkcs8V2)
    }

    /// Like [`TalosLab::talosconfig`], but the key carries the
    /// `ED25519 PRIVATE KEY` label exactly as `talosctl gen config` writes
    /// it, to test clients against real talosconfigs.
    pub fn talosconfig_with_talos_key_label(&self, context: &str, endpoints: &[IpAddr]) -> String {
        self.render(context, endpoints, KeyForm::TalosLabel)
    }

    fn render(&self, context: &str, endpoints: &[IpAddr], form: KeyForm) -> String {
        let port = self.port();
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|ip| {
                if port == DEFAULT_PORT {
                    ip.to_string()
                } else {
                    SocketAddr::new(*ip, port).to_string()
                }
            })
            .collect();
        render_talosconfig(
            context,
            &endpoints,
            self.inner.ca.cert_pem(),
            &self.inner.admin,
            form,
        )
    }

    /// Boots the machine at `ip`: it starts serving on `ip:port` at once,
    /// in maintenance mode or configured with `config_yaml`. A machine
    /// booted before keeps its version across power cycles.
    ///
    /// # Errors
    /// [`TalosLabError::AlreadyRunning`] if it serves already,
    /// [`TalosLabError::Config`] if the config is not a valid worker
    /// config, and bind or TLS errors.
    pub async fn boot_machine(&self, ip: IpAddr, mode: BootMode) -> Result<(), TalosLabError> {
        let config = match &mode {
            BootMode::Maintenance => None,
            BootMode::Configured { config_yaml } => Some(
                MachineConfig::parse(config_yaml.as_bytes())
                    .map_err(|source| TalosLabError::Config { ip, source })?,
            ),
        };
        {
            let default_version = lock(&self.inner.default_version).clone();
            let mut machines = lock(&self.inner.machines);
            let machine = machines
                .entry(ip)
                .or_insert_with(|| Machine::new(default_version));
            if machine.phase != MachinePhase::Off {
                return Err(TalosLabError::AlreadyRunning(ip));
            }
            machine.epoch += 1;
            machine.staged = None;
            machine.config = config;
            machine.phase = match mode {
                BootMode::Maintenance => MachinePhase::Maintenance,
                BootMode::Configured { .. } => MachinePhase::Running,
            };
        }
        let serving = match mode {
            BootMode::Maintenance => ServingMode::Maintenance,
            BootMode::Configured { .. } => ServingMode::Configured,
        };
        if let Err(e) = self.inner.start_server(ip, serving).await {
            self.inner.with_machine(ip, |m| m.phase = MachinePhase::Off);
            return Err(e);
        }
        Ok(())
    }

    /// Powers the machine off: the API stops at once and pending
    /// transitions (install, reboot) are cancelled. The configuration stays
    /// "on disk" (see [`TalosLab::machine_state`]). Does nothing for an
    /// unknown or stopped machine.
    pub async fn power_off(&self, ip: IpAddr) {
        self.inner.with_machine(ip, |m| {
            m.phase = MachinePhase::Off;
            m.epoch += 1;
        });
        self.inner.stop_server(ip).await;
    }

    /// A snapshot of the machine, `None` if it never booted.
    pub fn machine_state(&self, ip: IpAddr) -> Option<MachineStatus> {
        let machines = lock(&self.inner.machines);
        machines.get(&ip).map(|m| MachineStatus {
            phase: m.phase,
            config: m.config.clone(),
            staged: m.staged.clone(),
            hostname: hostname_of(ip, m),
            version: m.version.clone(),
            boots: m.boots,
        })
    }

    /// The PEM certificate of the ephemeral CA that signed the machine's
    /// current maintenance-mode server certificate (clients of the
    /// maintenance API normally skip verification, as `talosctl --insecure`
    /// does; this lets a test verify instead).
    pub fn maintenance_ca(&self, ip: IpAddr) -> Option<String> {
        let machines = lock(&self.inner.machines);
        machines.get(&ip).and_then(|m| m.maintenance_ca.clone())
    }

    /// Subscribes to machine events.
    pub fn subscribe(&self) -> broadcast::Receiver<TalosEvent> {
        self.inner.events.subscribe()
    }

    /// Makes service `id` of the machine at `ip` crash `times` times and
    /// come back each time, as Talos' restart runner reports it: a
    /// `Failed` event, then `Running` again, so `ServiceList` shows the
    /// failures until the next boot. `false` for an unknown machine or
    /// service.
    pub fn crash_service(&self, ip: IpAddr, id: &str, times: u32) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .with_machine(ip, |m| {
                let Some(s) = m.services.get_mut(id) else {
                    return false;
                };
                for _ in 0..times {
                    s.events.push((
                        format!("Error running {id}: exit status 1, going to restart forever"),
                        "Failed",
                        now,
                    ));
                    s.events
                        .push(("Health check successful".to_owned(), "Running", now));
                }
                s.state = "Running";
                s.healthy = true;
                s.last_change = now;
                true
            })
            .unwrap_or(false)
    }

    /// Stops service `id` of the machine at `ip` as if it had exited (state
    /// `Finished`, unhealthy) until it is restarted or the machine boots
    /// again. `false` for an unknown machine or service.
    pub fn stop_service(&self, ip: IpAddr, id: &str) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .with_machine(ip, |m| {
                let Some(s) = m.services.get_mut(id) else {
                    return false;
                };
                s.state = "Finished";
                s.healthy = false;
                s.last_change = now;
                s.events
                    .push(("Service finished successfully".to_owned(), "Finished", now));
                true
            })
            .unwrap_or(false)
    }

    /// Powers off every machine.
    pub async fn power_off_all(&self) {
        let ips: Vec<IpAddr> = lock(&self.inner.machines).keys().copied().collect();
        for ip in ips {
            self.power_off(ip).await;
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The hostname a machine reports: from its config, else a stable name
/// derived from its address (Talos' `talos-xxx-yyy` form).
pub(crate) fn hostname_of(ip: IpAddr, machine: &Machine) -> String {
    if let Some(name) = machine.config.as_ref().and_then(|c| c.hostname()) {
        return name.to_owned();
    }
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ip.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut chars = String::new();
    for i in 0..6 {
        if i == 3 {
            chars.push('-');
        }
        let idx = ((h >> (i * 8)) % ALPHABET.len() as u64) as usize;
        chars.push(char::from(ALPHABET[idx]));
    }
    format!("talos-{chars}")
}

/// What a control plane runs besides the worker's services.
const CONTROL_PLANE_SERVICES: &[&str] = &["etcd", "trustd"];

fn fresh_services(now: SystemTime, control_plane: bool) -> BTreeMap<String, ServiceState> {
    let extra = if control_plane {
        CONTROL_PLANE_SERVICES
    } else {
        &[]
    };
    WORKER_SERVICES
        .iter()
        .chain(extra)
        .map(|id| {
            (
                (*id).to_owned(),
                ServiceState {
                    state: "Running",
                    healthy: true,
                    events: vec![
                        ("Starting service".to_owned(), "Starting", now),
                        ("Health check successful".to_owned(), "Running", now),
                    ],
                    last_change: now,
                },
            )
        })
        .collect()
}
