//! The simulated guests: what happens inside a VM between `start` and a
//! Ready node.
//!
//! The Proxmox emulator only knows VMs; this module plays the part of the
//! operating system in them. When a VM starts it waits the boot delay,
//! takes a loopback address, and either boots Talos (in maintenance mode,
//! or configured from what is on its disk), or — when its SMBIOS serial
//! says `ds=nocloud;s=URL/` — fetches `URL/user-data` and `URL/meta-data`
//! as Talos nocloud and cloud-init images do. Once a machine runs with a
//! worker configuration, its kubelet registers the Node after the join
//! delay (a third of it after a reboot, registering the Node again if it
//! was deleted meanwhile). Stopping the VM powers the machine off and the Node goes
//! NotReady; deleting it forgets the machine.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_lab_kube::{NodeRegistration, Taint as KubeTaint};
use tidepool_lab_pve::{PveLab, VmEvent, VmSnapshot};
use tidepool_lab_sim::{Faults, Service, SimClock};
use tidepool_lab_talos::{BootMode, MachineConfig, ServingMode, TalosEvent, TalosLab};
use tracing::{debug, info, warn};

use crate::kube_side::LabKube;
use crate::scenario::GuestTimings;

const MIB: u64 = 1 << 20;

/// Hands out loopback addresses `127.<prefix>.x.y`, never reusing one, so
/// a machine's state can never leak into a VM created later.
#[derive(Debug)]
pub struct AddressPlan {
    prefix: u8,
    next: Mutex<u32>,
}

impl AddressPlan {
    /// A plan inside `127.<prefix>.0.0/16`.
    pub fn new(prefix: u8) -> Self {
        Self {
            prefix,
            next: Mutex::new(0),
        }
    }

    /// The next unused address.
    pub fn allocate(&self) -> IpAddr {
        let mut n = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let i = *n;
        *n += 1;
        let third = u8::try_from(1 + i / 250).unwrap_or(u8::MAX);
        let fourth = u8::try_from(2 + i % 250).unwrap_or(u8::MAX);
        IpAddr::V4(Ipv4Addr::new(127, self.prefix, third, fourth))
    }
}

/// Bookkeeping shared by the guest tasks.
#[derive(Debug, Default)]
struct Book {
    ip_of: HashMap<u32, IpAddr>,
    vmid_of: HashMap<IpAddr, u32>,
    node_of: HashMap<u32, String>,
    /// Nodes whose kubelet cannot report Ready (a sickness a reboot does
    /// not cure): they come back from a reboot NotReady, never flapping
    /// Ready in between.
    never_ready: std::collections::HashSet<String>,
}

/// The guest simulator; cheap to clone.
#[derive(Clone)]
pub struct Guests {
    inner: Arc<Inner>,
}

struct Inner {
    pve: PveLab,
    kube: LabKube,
    talos: TalosLab,
    clock: SimClock,
    faults: Arc<Faults>,
    timings: GuestTimings,
    plan: AddressPlan,
    book: Mutex<Book>,
    http: reqwest::Client,
    pve_api: String,
    pve_token: String,
}

impl Guests {
    /// A guest simulator over the three emulators.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pve: PveLab,
        kube: LabKube,
        talos: TalosLab,
        clock: SimClock,
        faults: Arc<Faults>,
        timings: GuestTimings,
        plan: AddressPlan,
        http: reqwest::Client,
        pve_api: String,
    ) -> Self {
        let pve_token = pve.token();
        Self {
            inner: Arc::new(Inner {
                pve,
                kube,
                talos,
                clock,
                faults,
                timings,
                plan,
                book: Mutex::new(Book::default()),
                http,
                pve_api,
                pve_token,
            }),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The address of a VM's guest, allocating one on first use.
    pub fn address_of(&self, vmid: u32) -> IpAddr {
        let mut book = self.book();
        if let Some(ip) = book.ip_of.get(&vmid) {
            return *ip;
        }
        let ip = self.inner.plan.allocate();
        book.ip_of.insert(vmid, ip);
        book.vmid_of.insert(ip, vmid);
        ip
    }

    /// Brings up a VM that is already a node when the lab starts: its
    /// machine runs configured with `config`, its agent answers, and its
    /// Node is registered at once.
    ///
    /// # Errors
    /// When the machine cannot be booted or the Node registered.
    pub async fn adopt(
        &self,
        vm: &VmSnapshot,
        config: &str,
        extra_taints: &[KubeTaint],
    ) -> Result<IpAddr, String> {
        let ip = self.address_of(vm.vmid);
        self.inner
            .talos
            .boot_machine(
                ip,
                BootMode::Configured {
                    config_yaml: config.to_owned(),
                },
            )
            .await
            .map_err(|e| format!("booting machine of VM {}: {e}", vm.vmid))?;
        self.inner
            .pve
            .set_agent(vm.vmid, Some(vec![ip]))
            .map_err(|e| format!("agent of VM {}: {e}", vm.vmid))?;
        let parsed = MachineConfig::parse(config.as_bytes()).map_err(|e| e.to_string())?;
        let hostname = self.inner.talos.machine_state(ip).map(|m| m.hostname);
        let mut reg = registration(vm, &parsed, ip, hostname);
        reg.taints.extend(extra_taints.iter().cloned());
        match self.inner.kube.register_node(&reg) {
            Ok(_) => {}
            // At a high time scale the machine's own join (after a join
            // delay of lab time) can register its node first.
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(format!("registering node {}: {e}", reg.name)),
        }
        self.book().node_of.insert(vm.vmid, reg.name);
        Ok(ip)
    }

    /// The address of the machine whose node is `node`, if it joined.
    pub fn address_of_node(&self, node: &str) -> Option<IpAddr> {
        let book = self.book();
        let vmid = book.node_of.iter().find(|(_, n)| *n == node)?.0;
        book.ip_of.get(vmid).copied()
    }

    /// Keeps `node`'s kubelet from reporting Ready (or lets it again).
    pub fn hold_not_ready(&self, node: &str, held: bool) {
        let mut book = self.book();
        if held {
            book.never_ready.insert(node.to_owned());
        } else {
            book.never_ready.remove(node);
        }
    }

    /// Runs the simulator until the emulators' event streams close.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let me = self.clone();
        let vm_events = follow(self.inner.pve.subscribe(), "Proxmox", move |event| {
            me.on_vm_event(event);
        });
        let me = self.clone();
        let talos_events = follow(self.inner.talos.subscribe(), "Talos", move |event| {
            me.on_talos_event(event);
        });
        vec![vm_events, talos_events]
    }

    fn on_vm_event(&self, event: VmEvent) {
        match event {
            VmEvent::Started { vmid, .. } => {
                let me = self.clone();
                tokio::spawn(async move { me.boot(vmid).await });
            }
            VmEvent::Stopped { vmid } => {
                let me = self.clone();
                tokio::spawn(async move { me.power_off(vmid, false).await });
            }
            VmEvent::Deleted { vmid } => {
                let me = self.clone();
                tokio::spawn(async move { me.power_off(vmid, true).await });
            }
            VmEvent::Cloned { .. } => {}
        }
    }

    fn on_talos_event(&self, event: TalosEvent) {
        match event {
            TalosEvent::Booted {
                ip,
                mode: ServingMode::Configured,
            } => {
                let me = self.clone();
                tokio::spawn(async move { me.join(ip).await });
            }
            TalosEvent::Rebooted { ip } | TalosEvent::ResetRequested { ip, .. } => {
                self.set_ready_by_ip(ip, false);
            }
            TalosEvent::ShutdownRequested { ip, .. } => {
                let me = self.clone();
                tokio::spawn(async move { me.guest_shutdown(ip).await });
            }
            _ => {}
        }
    }

    fn set_ready_by_ip(&self, ip: IpAddr, ready: bool) {
        let node = {
            let book = self.book();
            book.vmid_of
                .get(&ip)
                .and_then(|vmid| book.node_of.get(vmid))
                .cloned()
        };
        if let Some(node) = node
            && let Err(e) = self.inner.kube.set_node_ready(&node, ready)
        {
            debug!(%node, error = %e, "node readiness not updated");
        }
    }

    async fn boot(&self, vmid: u32) {
        let Some(vm) = self.inner.pve.vm(vmid) else {
            return;
        };
        if vm.template {
            return;
        }
        self.inner.clock.sleep(self.inner.timings.boot_delay).await;
        let Some(vm) = self.inner.pve.vm(vmid).filter(|v| v.running) else {
            return;
        };
        let ip = self.address_of(vmid);
        let nocloud = vm.smbios_serial.as_deref().and_then(nocloud_url);
        let boot = match nocloud {
            Some(url) => self.boot_nocloud(&vm, ip, &url).await,
            None => {
                let on_disk = self.inner.talos.machine_state(ip).and_then(|m| m.config);
                let mode = match on_disk {
                    Some(cfg) => BootMode::Configured {
                        config_yaml: cfg.raw().to_owned(),
                    },
                    None => BootMode::Maintenance,
                };
                self.inner
                    .talos
                    .boot_machine(ip, mode)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = boot {
            warn!(vmid, %ip, error = %e, "guest failed to boot");
            return;
        }
        let agent = self
            .inner
            .faults
            .check(Service::Proxmox, &format!("agent:{vmid}"));
        self.inner.clock.sleep(agent.latency).await;
        if agent.error.is_some() {
            info!(vmid, "guest agent never answers (injected fault)");
            return;
        }
        if let Err(e) = self.inner.pve.set_agent(vmid, Some(vec![ip])) {
            debug!(vmid, error = %e, "agent not set (VM gone?)");
        }
        info!(vmid, %ip, "guest booted");
    }

    async fn boot_nocloud(&self, vm: &VmSnapshot, ip: IpAddr, url: &str) -> Result<(), String> {
        let user_data = self.fetch(&format!("{url}user-data")).await?;
        let meta_data = self
            .fetch(&format!("{url}meta-data"))
            .await
            .unwrap_or_default();
        if user_data.trim_start().starts_with("#cloud-config") {
            let join = KubeadmJoin::parse(&user_data).ok_or_else(|| {
                "cloud-config has no valid `kubeadm join` (needs --token and --discovery-token-ca-cert-hash)".to_owned()
            })?;
            let name = join
                .node_name
                .clone()
                .or_else(|| meta_value(&meta_data, "local-hostname"))
                .or_else(|| vm.name.clone())
                .unwrap_or_else(|| format!("vm-{}", vm.vmid));
            let me = self.clone();
            let vm = vm.clone();
            tokio::spawn(async move {
                me.inner.clock.sleep(me.inner.timings.join_delay).await;
                let mut reg = capacity(&vm, ip);
                reg.name = name;
                reg.labels = join.labels;
                reg.taints = join.taints;
                me.register(vm.vmid, reg);
            });
            return Ok(());
        }
        self.inner
            .talos
            .boot_machine(
                ip,
                BootMode::Configured {
                    config_yaml: user_data,
                },
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        // cloud-init and Talos retry the datasource while the network settles.
        let mut last = String::new();
        for _ in 0..5 {
            match self.inner.http.get(url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    return resp.text().await.map_err(|e| e.to_string());
                }
                Ok(resp) => last = format!("GET {url}: HTTP {}", resp.status()),
                Err(e) => last = format!("GET {url}: {e}"),
            }
            self.inner.clock.sleep(Duration::from_secs(5)).await;
        }
        Err(last)
    }

    async fn join(&self, ip: IpAddr) {
        let Some(vmid) = self.book().vmid_of.get(&ip).copied() else {
            return;
        };
        let already = self.book().node_of.get(&vmid).cloned();
        if let Some(node) = &already {
            // A reboot: the kubelet comes back on its existing Node, or,
            // when the Node was deleted meanwhile (a parked spare), registers
            // it again as a kubelet does at start.
            self.inner
                .clock
                .sleep(self.inner.timings.join_delay / 3)
                .await;
            if self.inner.kube.get("v1", "Node", "", node).is_ok() {
                let _ = self.inner.kube.set_node_ready(node, true);
                return;
            }
        } else {
            self.inner.clock.sleep(self.inner.timings.join_delay).await;
        }
        let (Some(vm), Some(state)) = (
            self.inner.pve.vm(vmid).filter(|v| v.running),
            self.inner.talos.machine_state(ip),
        ) else {
            return;
        };
        let Some(config) = state.config else {
            return;
        };
        let reg = registration(&vm, &config, ip, Some(state.hostname));
        self.register(vmid, reg);
    }

    fn register(&self, vmid: u32, reg: NodeRegistration) {
        let name = reg.name.clone();
        let fault = self
            .inner
            .faults
            .check(Service::Kubernetes, &format!("kubelet:ready:{name}"));
        let existing = self.inner.kube.get("v1", "Node", "", &name).ok();
        // A node of this name that another machine registered is not this
        // machine's to report on (its kubelet cannot take the name over).
        if let Some(node) = &existing {
            let theirs = node["status"]["nodeInfo"]["systemUUID"].as_str();
            if theirs.is_some_and(|u| Some(u) != reg.system_uuid.as_deref()) {
                warn!(node = %name, vmid, "node name taken by another machine; not registering");
                return;
            }
        }
        let held = self.book().never_ready.contains(&name);
        let outcome = if existing.is_some() && held {
            self.inner.kube.set_node_condition(&name, "Ready", "False")
        } else if existing.is_some() {
            self.inner.kube.set_node_ready(&name, true)
        } else {
            self.inner.kube.register_node(&reg).map(|_| ())
        };
        if let Err(e) = outcome {
            warn!(node = %name, error = %e, "kubelet could not register");
            return;
        }
        self.book().node_of.insert(vmid, name.clone());
        if fault.error.is_some() {
            info!(node = %name, "node never turns Ready (injected fault)");
            let _ = self.inner.kube.set_node_condition(&name, "Ready", "False");
        } else {
            info!(node = %name, vmid, "node joined");
        }
    }

    async fn power_off(&self, vmid: u32, deleted: bool) {
        let (ip, node) = {
            let mut book = self.book();
            let ip = book.ip_of.get(&vmid).copied();
            let node = book.node_of.get(&vmid).cloned();
            if deleted {
                book.ip_of.remove(&vmid);
                book.node_of.remove(&vmid);
                if let Some(ip) = ip {
                    book.vmid_of.remove(&ip);
                }
            }
            (ip, node)
        };
        if let Some(ip) = ip {
            self.inner.talos.power_off(ip).await;
        }
        if let Some(node) = node {
            let _ = self.inner.kube.set_node_ready(&node, false);
        }
    }

    async fn guest_shutdown(&self, ip: IpAddr) {
        let Some(vmid) = self.book().vmid_of.get(&ip).copied() else {
            return;
        };
        let Some(vm) = self.inner.pve.vm(vmid) else {
            return;
        };
        // The OS powering itself off looks like a stop to Proxmox.
        let url = format!(
            "{}/nodes/{}/qemu/{vmid}/status/stop",
            self.inner.pve_api, vm.node
        );
        let result = self
            .inner
            .http
            .post(&url)
            .header(
                "Authorization",
                format!("PVEAPIToken={}", self.inner.pve_token),
            )
            .send()
            .await;
        if let Err(e) = result {
            warn!(vmid, error = %e, "could not stop the VM after a guest shutdown");
        }
    }
}

/// Extracts `URL` from an SMBIOS serial `ds=nocloud;s=URL` (also accepting
/// the `seedfrom=` spelling), with a trailing `/` ensured.
pub fn nocloud_url(serial: &str) -> Option<String> {
    let mut parts = serial.split(';');
    let ds = parts.next()?;
    if !matches!(ds, "ds=nocloud" | "ds=nocloud-net") {
        return None;
    }
    for part in parts {
        if let Some(url) = part
            .strip_prefix("s=")
            .or_else(|| part.strip_prefix("seedfrom="))
        {
            let mut url = url.to_owned();
            if !url.ends_with('/') {
                url.push('/');
            }
            return Some(url);
        }
    }
    None
}

fn meta_value(meta: &str, key: &str) -> Option<String> {
    meta.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The parts of a `kubeadm join` the simulated kubelet needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KubeadmJoin {
    /// `--node-name`, if given.
    pub node_name: Option<String>,
    /// `--node-labels` from the kubelet arguments.
    pub labels: BTreeMap<String, String>,
    /// `--register-with-taints` from the kubelet arguments.
    pub taints: Vec<KubeTaint>,
}

impl KubeadmJoin {
    /// Finds the `kubeadm join` command in a cloud-config and checks it
    /// carries a token and a CA hash.
    pub fn parse(cloud_config: &str) -> Option<Self> {
        let line = cloud_config.lines().find(|l| l.contains("kubeadm join"))?;
        let args: Vec<&str> = line
            .split_whitespace()
            .map(|a| a.trim_matches(|c| c == '"' || c == '\'' || c == ','))
            .collect();
        let value = |flag: &str| -> Option<String> {
            args.iter().enumerate().find_map(|(i, a)| {
                a.strip_prefix(&format!("{flag}="))
                    .map(str::to_owned)
                    .or_else(|| {
                        (*a == flag)
                            .then(|| args.get(i + 1).map(|s| (*s).to_owned()))
                            .flatten()
                    })
            })
        };
        value("--token")?;
        value("--discovery-token-ca-cert-hash")?;
        let mut join = Self {
            node_name: value("--node-name"),
            ..Self::default()
        };
        let kubelet_arg = |name: &str| {
            cloud_config.lines().find_map(|l| {
                let l = l.trim();
                l.split_once(&format!("--{name}="))
                    .map(|(_, v)| {
                        v.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .trim_matches(['"', '\''])
                            .to_owned()
                    })
                    .or_else(|| {
                        l.strip_prefix(&format!("{name}:"))
                            .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
                    })
            })
        };
        if let Some(labels) = kubelet_arg("node-labels") {
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                join.labels.insert(k.to_owned(), v.to_owned());
            }
        }
        if let Some(taints) = kubelet_arg("register-with-taints") {
            for t in taints.split(',').filter(|p| !p.is_empty()) {
                if let Some((key, value, effect)) = crate::scenario::parse_taint(t) {
                    join.taints.push(KubeTaint { key, value, effect });
                }
            }
        }
        Some(join)
    }
}

/// A Node registration with the VM's capacity and no metadata yet.
fn capacity(vm: &VmSnapshot, ip: IpAddr) -> NodeRegistration {
    let memory = vm.memory_mib * MIB;
    let cpus = u64::from(vm.cores.max(1)) * u64::from(vm.sockets.max(1));
    let gpus = vm
        .hostpci
        .iter()
        .filter(|(_, v)| v.contains("mapping=") || v.contains(':'))
        .count() as u64;
    let mut extended = BTreeMap::new();
    if gpus > 0 {
        extended.insert("nvidia.com/gpu".to_owned(), gpus);
    }
    NodeRegistration {
        name: vm.name.clone().unwrap_or_else(|| format!("vm-{}", vm.vmid)),
        // What the kubelet reports as allocatable after its reservations.
        cpu_millis: cpus * 1000 - 200,
        memory_bytes: memory - memory / 16,
        pods: 110,
        extended,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        taints: Vec::new(),
        provider_id: Some(format!("proxmox://{}/{}", vm.node, vm.vmid)),
        address: Some(ip.to_string()),
        // The kubelet reads the VM's SMBIOS UUID, in lower case.
        system_uuid: vm.smbios_uuid.as_deref().map(str::to_ascii_lowercase),
    }
}

/// Hands every event of `rx` to `handle` until the stream closes; events
/// missed by falling behind are logged, naming the emulator `source`.
fn follow<E: Clone + Send + 'static>(
    mut rx: tokio::sync::broadcast::Receiver<E>,
    source: &'static str,
    handle: impl Fn(E) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => handle(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "guest simulator fell behind {source} events");
                }
                Err(_) => break,
            }
        }
    })
}

/// The Node a Talos machine registers: named by the hostname the machine
/// reports (its Talos `Hostname`, which is the config's static hostname or
/// one the machine picked itself, so both agree as on real Talos), labels,
/// annotations and taints from its configuration.
fn registration(
    vm: &VmSnapshot,
    config: &MachineConfig,
    ip: IpAddr,
    reported_hostname: Option<String>,
) -> NodeRegistration {
    let mut reg = capacity(vm, ip);
    if let Some(h) = reported_hostname.or_else(|| config.hostname().map(str::to_owned)) {
        reg.name = h;
    }
    reg.labels = config.node_labels();
    reg.annotations = config.node_annotations();
    reg.taints = config
        .register_with_taints()
        .into_iter()
        .map(|t| KubeTaint {
            key: t.key,
            value: t.value,
            effect: t.effect,
        })
        .collect();
    for (key, v) in config.node_taints() {
        let (value, effect) = v.rsplit_once(':').unwrap_or(("", v.as_str()));
        reg.taints.push(KubeTaint {
            key,
            value: value.to_owned(),
            effect: effect.to_owned(),
        });
    }
    reg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_never_reused() {
        let plan = AddressPlan::new(77);
        let a = plan.allocate();
        let b = plan.allocate();
        assert_eq!(a.to_string(), "127.77.1.2");
        assert_eq!(b.to_string(), "127.77.1.3");
        for _ in 0..300 {
            plan.allocate();
        }
        assert_eq!(plan.allocate().to_string(), "127.77.2.54");
    }

    #[test]
    fn nocloud_serials_give_the_seed_url() {
        assert_eq!(
            nocloud_url("ds=nocloud;s=http://10.0.0.5:8088/w/abc"),
            Some("http://10.0.0.5:8088/w/abc/".into())
        );
        assert_eq!(
            nocloud_url("ds=nocloud-net;seedfrom=http://x/"),
            Some("http://x/".into())
        );
        assert_eq!(nocloud_url("serial-123"), None);
    }

    #[test]
    fn a_kubeadm_join_yields_name_labels_and_taints() {
        let cc = "#cloud-config\nruncmd:\n  - kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00ff --node-name burst-x1y2z\nwrite_files:\n  - path: /etc/default/kubelet\n    content: KUBELET_EXTRA_ARGS=--node-labels=node-pool=burst,worker-type=temporary --register-with-taints=workload-type=burst:NoSchedule\n";
        let j = KubeadmJoin::parse(cc).unwrap();
        assert_eq!(j.node_name.as_deref(), Some("burst-x1y2z"));
        assert_eq!(j.labels["node-pool"], "burst");
        assert_eq!(j.taints[0].effect, "NoSchedule");
        assert!(
            KubeadmJoin::parse(
                "#cloud-config\nruncmd:\n  - kubeadm join 10.0.0.1:6443 --token x\n"
            )
            .is_none()
        );
    }
}
