//! The in-process face of the emulator: [`PveLab`], a cheap handle the lab
//! composition uses to serve the API, watch VM lifecycle events, inspect
//! VMs and mark guest agents up; plus the shared core the HTTP handlers
//! and worker tasks run on (state, per-VM file locks, tasks, faults).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tidepool_lab_sim::{Faults, KeyAlgorithm, Service, SimClock, TestCa};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock, broadcast};
use tokio::task::JoinHandle;

use crate::config::PveConfig;
use crate::error::LabError;
use crate::options;
use crate::state::{State, Task, TaskStatus};

/// A VM lifecycle event, for the composition to drive boots and kubelets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// A start task succeeded: QEMU runs the VM on `node`.
    Started {
        /// The node the VM runs on.
        node: String,
        /// The VM id.
        vmid: u32,
    },
    /// The VM stopped (stop, shutdown, or the stop half of a reboot).
    Stopped {
        /// The VM id.
        vmid: u32,
    },
    /// The VM was destroyed.
    Deleted {
        /// The VM id.
        vmid: u32,
    },
    /// A clone finished and the new VM is unlocked.
    Cloned {
        /// The new VM's id.
        vmid: u32,
    },
}

/// What the composition can read about one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSnapshot {
    /// The VM id.
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// Its name, if set.
    pub name: Option<String>,
    /// Cores per socket.
    pub cores: u32,
    /// Sockets.
    pub sockets: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The raw `smbios1` value.
    pub smbios1: Option<String>,
    /// The SMBIOS uuid.
    pub smbios_uuid: Option<String>,
    /// The SMBIOS serial, base64-decoded when `base64=1`.
    pub smbios_serial: Option<String>,
    /// Normalised tags, split.
    pub tags: Vec<String>,
    /// The description.
    pub description: Option<String>,
    /// `hostpciN` values by key.
    pub hostpci: Vec<(String, String)>,
    /// PCI device paths held while running.
    pub pci_devices: Vec<String>,
    /// The MAC of `net0`.
    pub net0_mac: Option<String>,
    /// Cloud-init keys (`ciuser`, `ipconfig0`, `sshkeys`, …).
    pub cloud_init: Vec<(String, String)>,
    /// Whether QEMU runs.
    pub running: bool,
    /// Whether it is a template.
    pub template: bool,
    /// The config lock, e.g. `clone`.
    pub lock: Option<String>,
    /// The pool it belongs to.
    pub pool: Option<String>,
    /// Guest-agent addresses, `None` while the agent is down.
    pub agent: Option<Vec<IpAddr>>,
}

/// The shared core behind [`PveLab`] and the HTTP handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: PveConfig,
    pub clock: SimClock,
    pub faults: Arc<Faults>,
    pub ca: TestCa,
    pub state: Mutex<State>,
    flocks: Mutex<HashMap<u32, Arc<RwLock<()>>>>,
    /// Storage locks by `node/storage`.
    storage_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Authenticated requests by method and path, ids as `{id}`.
    requests: Mutex<BTreeMap<String, u64>>,
    pub events: broadcast::Sender<VmEvent>,
    /// `user@realm` of the token.
    pub token_user: String,
    /// The token's name.
    pub token_name: String,
    /// Simulated unix time the nodes booted.
    pub boot_time: i64,
    /// SHA-256 fingerprint of the served certificate, colon hex.
    pub fingerprint: Mutex<String>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn emit(&self, event: VmEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    fn flock(&self, vmid: u32) -> Arc<RwLock<()>> {
        let mut map = self.flocks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(vmid).or_default().clone()
    }

    /// Takes the exclusive flock of `vmid`, waiting up to `wait` of
    /// simulated time, as `lock_config` does.
    ///
    /// # Errors
    /// The real timeout message.
    pub(crate) async fn lock_config(
        &self,
        vmid: u32,
        wait: Duration,
    ) -> Result<OwnedRwLockWriteGuard<()>, String> {
        let lock = self.flock(vmid);
        tokio::time::timeout(self.clock.real(wait), lock.write_owned())
            .await
            .map_err(|_| lock_timeout(vmid))
    }

    /// Takes the exclusive flock of `vmid` at once, or fails.
    pub(crate) fn try_lock_config(&self, vmid: u32) -> Option<OwnedRwLockWriteGuard<()>> {
        self.flock(vmid).try_write_owned().ok()
    }

    /// Takes the shared flock of `vmid` (clones of a stopped source).
    pub(crate) async fn lock_shared(
        &self,
        vmid: u32,
        wait: Duration,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<()>, String> {
        let lock = self.flock(vmid);
        tokio::time::timeout(self.clock.real(wait), lock.read_owned())
            .await
            .map_err(|_| lock_timeout(vmid))
    }

    /// Counts one authenticated request to `path` (below `/api2/json`).
    pub(crate) fn count_request(&self, method: &str, path: &str) {
        let template: Vec<&str> = path
            .split('/')
            .map(|part| {
                if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                    "{id}"
                } else if part.starts_with("UPID:") {
                    "{upid}"
                } else {
                    part
                }
            })
            .collect();
        let key = format!("{method} {}", template.join("/"));
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_default() += 1;
    }

    /// Takes the lock of `storage` on `node`, waiting up to `wait` of
    /// simulated time, as PVE's `cluster_lock_storage` does for a local
    /// storage's volume allocation.
    ///
    /// # Errors
    /// The real timeout message.
    pub(crate) async fn lock_storage(
        &self,
        node: &str,
        storage: &str,
        wait: Duration,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, String> {
        let lock = {
            let mut map = self.storage_locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(format!("{node}/{storage}")).or_default().clone()
        };
        tokio::time::timeout(self.clock.real(wait), lock.lock_owned())
            .await
            .map_err(|_| {
                format!(
                    "can't lock file '/var/lock/pve-manager/pve-storage-{storage}' - got timeout"
                )
            })
    }

    /// Starts a worker task and returns its UPID. `work` runs on its own
    /// tokio task; its `Err` becomes the exit status.
    pub(crate) fn start_task<F, Fut>(
        self: &Arc<Self>,
        node: &str,
        kind: &str,
        id: &str,
        work: F,
    ) -> String
    where
        F: FnOnce(TaskCtx) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let now = self.clock.now_unix();
        let (upid, task) = {
            let mut st = self.state();
            let pid = st.alloc_pid();
            let pstart = u64::try_from((now - self.boot_time).max(0)).unwrap_or(0) * 100
                + u64::from(pid % 100);
            let user = format!("{}!{}", self.token_user, self.token_name);
            let upid = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:{kind}:{id}:{user}:");
            let task = Task {
                upid: upid.clone(),
                node: node.to_owned(),
                pid,
                pstart,
                starttime: now,
                kind: kind.to_owned(),
                id: id.to_owned(),
                user,
                status: TaskStatus::Running,
                log: Vec::new(),
            };
            st.tasks.insert(upid.clone(), task.clone());
            (upid, task)
        };
        let ctx = TaskCtx {
            shared: self.clone(),
            upid: upid.clone(),
            fault_op: format!("task:{}:{}", task.kind, task.id),
        };
        let fut = work(ctx);
        let shared = self.clone();
        let done_upid = upid.clone();
        tokio::spawn(async move {
            let result = fut.await;
            let mut st = shared.state();
            if let Some(task) = st.tasks.get_mut(&done_upid) {
                match result {
                    Ok(()) => {
                        task.log.push("TASK OK".to_owned());
                        task.status = TaskStatus::Stopped("OK".to_owned());
                    }
                    Err(msg) => {
                        let flat = msg.trim_end().replace(['\n', '\r'], " ");
                        task.log.push(format!("TASK ERROR: {flat}"));
                        task.status = TaskStatus::Stopped(flat);
                    }
                }
            }
        });
        upid
    }
}

/// The message of a flock timeout on a VM's config.
pub(crate) fn lock_timeout(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

/// A running worker's handle on its own task record.
#[derive(Debug)]
pub(crate) struct TaskCtx {
    pub shared: Arc<Shared>,
    pub upid: String,
    fault_op: String,
}

impl TaskCtx {
    /// Appends a line to the task log.
    pub(crate) fn log(&self, line: impl Into<String>) {
        let mut st = self.shared.state();
        if let Some(t) = st.tasks.get_mut(&self.upid) {
            t.log.push(line.into());
        }
    }

    /// Consults the fault table for this task (`task:<type>:<id>`), sleeps
    /// the injected latency, and returns the injected failure, if any.
    pub(crate) async fn injected(&self) -> Result<(), String> {
        let inj = self.shared.faults.check(Service::Proxmox, &self.fault_op);
        if !inj.latency.is_zero() {
            self.shared.clock.sleep(inj.latency).await;
        }
        match inj.error {
            Some(e) => Err(e.message),
            None => Ok(()),
        }
    }

    /// Sleeps `ms` of simulated time.
    pub(crate) async fn work(&self, ms: u64) {
        self.shared.clock.sleep(Duration::from_millis(ms)).await;
    }
}

/// The Proxmox VE emulator, as the lab composition holds it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PveLab {
    pub(crate) shared: Arc<Shared>,
}

impl PveLab {
    /// Builds the emulated cluster from `config`. Serve it with
    /// [`PveLab::serve`].
    ///
    /// # Errors
    /// [`LabError::Config`] for an inconsistent configuration (a VM on an
    /// unknown node, a duplicate vmid, a malformed token id),
    /// [`LabError::Cert`] if the CA cannot be generated.
    pub fn new(config: PveConfig, clock: SimClock, faults: Arc<Faults>) -> Result<Self, LabError> {
        let (user, name) = config
            .token_id
            .split_once('!')
            .filter(|(u, n)| u.contains('@') && !n.is_empty())
            .ok_or_else(|| {
                LabError::Config(format!(
                    "tokenId '{}' is not of the form user@realm!name",
                    config.token_id
                ))
            })?;
        let (token_user, token_name) = (user.to_owned(), name.to_owned());
        let now = clock.now_unix();
        crate::access::Access::of(&config)?;
        let state = State::new(&config, faults.seed(), now)?;
        let ca = TestCa::new("Proxmox Virtual Environment", KeyAlgorithm::EcdsaP256)
            .map_err(LabError::Cert)?;
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                clock,
                faults,
                ca,
                state: Mutex::new(state),
                flocks: Mutex::new(HashMap::new()),
                storage_locks: Mutex::new(HashMap::new()),
                requests: Mutex::new(BTreeMap::new()),
                events,
                token_user,
                token_name,
                boot_time: now - 86_400,
                fingerprint: Mutex::new(String::new()),
            }),
        })
    }

    /// Serves the API over HTTPS on `addr` (port 0 picks one) and returns
    /// the bound address and the server task; aborting the task stops the
    /// server and its connections. Also starts the simulated pvestatd.
    ///
    /// # Errors
    /// [`LabError::Bind`] if the address cannot be bound, [`LabError::Cert`]
    /// or [`LabError::Tls`] if the server certificate cannot be set up.
    pub async fn serve(&self, addr: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
        crate::server::serve(self.shared.clone(), addr).await
    }

    /// The self-signed CA that issued the server certificate (PEM), the
    /// lab's `pve-root-ca.pem`.
    pub fn ca_cert_pem(&self) -> &str {
        self.shared.ca.cert_pem()
    }

    /// SHA-256 fingerprint of the served certificate (`AA:BB:…`); empty
    /// until [`PveLab::serve`] ran.
    pub fn fingerprint(&self) -> String {
        self.shared
            .fingerprint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The full API token, `user@realm!name=secret`.
    pub fn token(&self) -> String {
        format!(
            "{}={}",
            self.shared.config.token_id, self.shared.config.token_secret
        )
    }

    /// Subscribes to VM lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.shared.events.subscribe()
    }

    /// A snapshot of VM `vmid`, config with pending changes applied.
    pub fn vm(&self, vmid: u32) -> Option<VmSnapshot> {
        let st = self.shared.state();
        st.vms.get(&vmid).map(snapshot)
    }

    /// How many authenticated requests the API has answered, by method and
    /// path with VMIDs as `{id}` and task ids as `{upid}`
    /// (`POST /nodes/pve-01/qemu/{id}/clone`).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Snapshots of all VMs, by vmid.
    pub fn vms(&self) -> Vec<VmSnapshot> {
        self.shared.state().vms.values().map(snapshot).collect()
    }

    /// The UPIDs of every task started so far, sorted.
    pub fn task_upids(&self) -> Vec<String> {
        let mut upids: Vec<String> = self.shared.state().tasks.keys().cloned().collect();
        upids.sort();
        upids
    }

    /// Marks the guest agent of `vmid` up with `addresses`, or down with
    /// `None`. Stopping the VM marks it down again.
    ///
    /// # Errors
    /// [`LabError::NoSuchVm`] if the VM does not exist.
    pub fn set_agent(&self, vmid: u32, addresses: Option<Vec<IpAddr>>) -> Result<(), LabError> {
        let mut st = self.shared.state();
        let vm = st.vms.get_mut(&vmid).ok_or(LabError::NoSuchVm(vmid))?;
        vm.agent = addresses;
        Ok(())
    }
}

fn snapshot(vm: &crate::state::Vm) -> VmSnapshot {
    let c = vm.effective_config();
    let get = |k: &str| c.get(k).cloned();
    let num = |k: &str, d: u32| c.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let smbios1 = get("smbios1");
    VmSnapshot {
        vmid: vm.vmid,
        node: vm.node.clone(),
        name: get("name"),
        cores: num("cores", 1),
        sockets: num("sockets", 1),
        memory_mib: options::memory_mib(c.get("memory").map(String::as_str)),
        smbios_uuid: smbios1.as_deref().and_then(|s| options::prop(s, "uuid")),
        smbios_serial: smbios1.as_deref().and_then(options::smbios_serial),
        smbios1,
        tags: c
            .get("tags")
            .map(|t| {
                t.split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        description: get("description"),
        hostpci: c
            .iter()
            .filter(|(k, _)| k.starts_with("hostpci"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        pci_devices: vm.pci.clone(),
        net0_mac: c.get("net0").and_then(|n| options::mac_of(n)),
        cloud_init: c
            .iter()
            .filter(|(k, _)| {
                k.starts_with("ci")
                    || k.starts_with("ipconfig")
                    || *k == "sshkeys"
                    || *k == "nameserver"
                    || *k == "searchdomain"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        running: vm.running,
        template: vm.template(),
        lock: vm.lock().map(str::to_owned),
        pool: vm.pool.clone(),
        agent: vm.agent.clone(),
    }
}

/// The SHA-256 fingerprint of a DER certificate in PVE's `AA:BB:…` form.
pub(crate) fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
