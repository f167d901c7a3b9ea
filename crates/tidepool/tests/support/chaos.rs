//! The chaos harness: the real `tidepool run` binary against a lab started
//! in this process, killed with SIGKILL, frozen with SIGSTOP and restarted
//! at random moments while bursts of pods come and go, faults are injected
//! into the emulated APIs at a rate, and CLI requests race the controller
//! for the same pools. A sampler looks at the lab continuously and records
//! every breach of the safety invariants:
//!
//! - never two VMs carrying one claim's marker;
//! - a VM or node that was there before Tidepool (permanent workers, the
//!   control plane, storage and network VMs, templates) is never changed;
//! - a pool never holds more live claims than its `maxNodes`;
//! - the memory of a host's running VMs stays under its total less the
//!   configured reserve;
//! - no node is cordoned unless its claim is on its way out.
//!
//! Once the chaos stops (faults cleared, every replica running, the pods
//! gone) everything must converge: no claim, no VM with our marker, no lock.
//!
//! Used by `tests/chaos.rs` (a short run in CI) and `examples/chaos.rs`
//! (the long run whose figures go into `docs/benchmarks.md`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_lab_sim::{FaultRule, Service as Emulator};

const CLAIMS: &str = "tidepool.dev/v1alpha1";
const NAMESPACE: &str = "tidepool-system";
const LEASE: &str = "tidepool-controller";

/// What one run does.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The `tidepool` binary to run.
    pub binary: PathBuf,
    /// Seed of every random choice (kills, bursts, faults).
    pub seed: u64,
    /// Controller replicas (two for failover).
    pub replicas: usize,
    /// SIGKILLs to deliver before the chaos stops.
    pub kills: u32,
    /// Real time between two disruptions, drawn in this range.
    pub kill_every: (Duration, Duration),
    /// Inject faults at a rate into Proxmox, Talos and Kubernetes.
    pub faults: bool,
    /// Race CLI requests against the controller.
    pub cli: bool,
    /// The lab's (and the controllers') time scale.
    pub time_scale: f64,
    /// How long convergence may take once the chaos stops (real time).
    pub converge_within: Duration,
    /// Where the lab state and the process logs go.
    pub dir: PathBuf,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    /// SIGKILLs delivered.
    pub kills: u32,
    /// SIGSTOP/SIGCONT freezes of a replica.
    pub freezes: u32,
    /// Spells during which Lease writes hung for longer than a Lease lasts.
    pub lease_hangs: u32,
    /// Errors the emulators injected.
    pub faults: u64,
    /// CLI requests made, and how many were refused or failed.
    pub requests: u32,
    /// CLI requests that did not exit 0 (refusals at a limit included).
    pub refused: u32,
    /// Bursts (scale-ups of the workload) during the chaos.
    pub bursts: u32,
    /// Claims seen over the run.
    pub claims_seen: usize,
    /// Of those, how many reached Ready.
    pub ready_seen: usize,
    /// Most VMs with our marker at one moment.
    pub peak_vms: usize,
    /// Samples taken.
    pub samples: u64,
    /// Every breach of an invariant, first occurrence of each.
    pub violations: Vec<String>,
    /// Failed workers an operator asked for, destroyed at the end as the
    /// operator would (Tidepool keeps them, with their reason, until then).
    pub cleared: u32,
    /// Whether everything converged once the chaos stopped.
    pub converged: bool,
    /// What was left when it did not.
    pub leftover: String,
    /// Real time of the chaos phase and of convergence.
    pub chaos_time: Duration,
    /// Real time convergence took.
    pub converge_time: Duration,
}

impl ChaosReport {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "kills={} freezes={} lease_hangs={} faults_injected={} cli_requests={} cli_refused={} bursts={} \
             claims={} ready={} peak_vms={} samples={} violations={} cleared_failed={} converged={} chaos={:.1}s converge={:.1}s",
            self.kills,
            self.freezes,
            self.lease_hangs,
            self.faults,
            self.requests,
            self.refused,
            self.bursts,
            self.claims_seen,
            self.ready_seen,
            self.peak_vms,
            self.samples,
            self.violations.len(),
            self.cleared,
            self.converged,
            self.chaos_time.as_secs_f64(),
            self.converge_time.as_secs_f64(),
        )
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays a run's
/// choices.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1);
        lo + Duration::from_millis(self.below(u64::try_from(span).unwrap_or(1)))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One controller replica: its config, its log, its process.
struct Replica {
    index: usize,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
}

/// The processes and what they need to start.
struct Fleet {
    binary: PathBuf,
    kubeconfig: PathBuf,
    scale: f64,
    origin: i64,
    replicas: Vec<Replica>,
}

impl Fleet {
    fn command(&self, config: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--time-scale", &self.scale.to_string()])
            .args(["--time-origin", &self.origin.to_string()]);
        cmd
    }

    fn start(&mut self, i: usize) {
        let (config, log, index) = {
            let r = &self.replicas[i];
            (r.config.clone(), r.log.clone(), r.index)
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = self
            .command(&config)
            .arg("run")
            .env("POD_NAME", format!("replica-{index}"))
            .env("TIDEPOOL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start tidepool run");
        let r = &mut self.replicas[i];
        r.child = Some(child);
        r.frozen = false;
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].child.as_ref().map(Child::id)
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].child.take() {
            // A frozen process dies of SIGKILL as well.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.replicas[i].frozen = false;
    }

    fn signal(&mut self, i: usize, sig: &str) {
        if let Some(pid) = self.pid(i) {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
            self.replicas[i].frozen = sig == "-STOP";
        }
    }

    /// A replica whose process exited on its own is a failure worth
    /// reporting (it should only ever die of our signals).
    fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &mut self.replicas {
            if let Some(child) = r.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push(format!(
                    "replica {} exited by itself with {status} (log {})",
                    r.index,
                    r.log.display()
                ));
                r.child = None;
            }
        }
        out
    }

    fn stop_all(&mut self) {
        for i in 0..self.replicas.len() {
            self.signal(i, "-CONT");
            self.kill(i);
        }
    }
}

/// What was there before Tidepool: VMs and nodes it must never change.
#[derive(Debug)]
struct Baseline {
    vms: BTreeMap<u32, String>,
    nodes: BTreeMap<String, String>,
    host_memory: BTreeMap<String, u64>,
}

/// A VM's fingerprint for "was it changed": everything an operator would
/// notice.
fn vm_print(vm: &tidepool_lab_pve::VmSnapshot) -> String {
    format!(
        "node={} name={:?} running={} cores={} mem={} desc={:?} tags={:?} lock={:?} template={} smbios={:?}",
        vm.node,
        vm.name,
        vm.running,
        vm.cores,
        vm.memory_mib,
        vm.description,
        vm.tags,
        vm.lock,
        vm.template,
        vm.smbios1
    )
}

/// A node's fingerprint: labels, taints, schedulability.
fn node_print(node: &Value) -> String {
    format!(
        "labels={} taints={} unschedulable={}",
        node["metadata"]["labels"], node["spec"]["taints"], node["spec"]["unschedulable"]
    )
}

/// The claim a VM's description marks it for.
fn marker(vm: &tidepool_lab_pve::VmSnapshot) -> Option<String> {
    vm.description.as_deref().and_then(|d| {
        d.lines()
            .find_map(|l| l.trim().strip_prefix("tidepool-claim:"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

/// Shared state of a run.
struct Run {
    lab: RunningLab,
    baseline: Baseline,
    limits: BTreeMap<String, usize>,
    reserve_mib: u64,
    violations: Mutex<Vec<String>>,
    seen: Mutex<BTreeSet<String>>,
    claims_seen: Mutex<BTreeSet<String>>,
    ready_seen: Mutex<BTreeSet<String>>,
    peak_vms: AtomicU64,
    samples: AtomicU64,
}

impl Run {
    fn violation(&self, key: String, detail: String) {
        let mut seen = self.seen.lock().unwrap();
        if seen.insert(key) {
            eprintln!("chaos: VIOLATION {detail}");
            self.violations.lock().unwrap().push(detail);
        }
    }

    fn claims(&self) -> Vec<Value> {
        self.lab
            .kube
            .list(CLAIMS, "WorkerClaim", "", "")
            .unwrap_or_default()
    }

    fn nodes(&self) -> Vec<Value> {
        self.lab.kube.list("v1", "Node", "", "").unwrap_or_default()
    }

    /// One look at the lab: every invariant that must hold at all times.
    fn sample(&self) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        let vms = self.lab.pve.vms();
        let claims = self.claims();
        let nodes = self.nodes();
        {
            let mut seen = self.claims_seen.lock().unwrap();
            let mut ready = self.ready_seen.lock().unwrap();
            for c in &claims {
                if let Some(n) = c["metadata"]["name"].as_str() {
                    seen.insert(n.to_owned());
                    if c["status"]["phase"] == "Ready" {
                        ready.insert(n.to_owned());
                    }
                }
            }
        }
        // Never two VMs for one claim.
        let mut by_claim: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for vm in &vms {
            if self.baseline.vms.contains_key(&vm.vmid) {
                continue;
            }
            if let Some(owner) = marker(vm) {
                by_claim.entry(owner).or_default().push(vm.vmid);
            }
        }
        let ours: usize = by_claim.values().map(Vec::len).sum();
        self.peak_vms.fetch_max(ours as u64, Ordering::Relaxed);
        for (claim, ids) in &by_claim {
            if ids.len() > 1 {
                self.violation(
                    format!("two-vms:{claim}"),
                    format!("claim {claim} has {} VMs: {ids:?}", ids.len()),
                );
            }
        }
        // What was there before is never changed.
        for (vmid, print) in &self.baseline.vms {
            match vms.iter().find(|v| v.vmid == *vmid) {
                None => self.violation(
                    format!("foreign-vm-gone:{vmid}"),
                    format!("foreign VM {vmid} was deleted"),
                ),
                Some(vm) if vm_print(vm) != *print => self.violation(
                    format!("foreign-vm-changed:{vmid}"),
                    format!("foreign VM {vmid} was changed: {print} -> {}", vm_print(vm)),
                ),
                Some(_) => {}
            }
        }
        for (name, print) in &self.baseline.nodes {
            match nodes
                .iter()
                .find(|n| n["metadata"]["name"].as_str() == Some(name))
            {
                None => self.violation(
                    format!("foreign-node-gone:{name}"),
                    format!("node {name} (not Tidepool's) was deleted"),
                ),
                Some(n) if node_print(n) != *print => self.violation(
                    format!("foreign-node-changed:{name}"),
                    format!(
                        "node {name} (not Tidepool's) was changed: {print} -> {}",
                        node_print(n)
                    ),
                ),
                Some(_) => {}
            }
        }
        self.check_limits(&claims);
        self.check_memory(&vms);
        self.check_cordons(&nodes, &claims);
    }

    /// A pool never holds more live claims (not on their way out) than its
    /// `maxNodes`.
    fn check_limits(&self, claims: &[Value]) {
        let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in claims {
            let leaving = !c["metadata"]["deletionTimestamp"].is_null()
                || c["spec"]["intent"]["action"] == "Remove"
                || c["status"]["phase"] == "Terminated";
            if !leaving {
                live.entry(c["spec"]["pool"].as_str().unwrap_or("?").to_owned())
                    .or_default()
                    .push(c["metadata"]["name"].as_str().unwrap_or("?").to_owned());
            }
        }
        for (pool, names) in live {
            let max = self.limits.get(&pool).copied().unwrap_or(usize::MAX);
            if names.len() > max {
                self.violation(
                    format!("limit:{pool}:{}", names.len()),
                    format!(
                        "pool {pool} holds {} live claims, limit {max}: {names:?}",
                        names.len()
                    ),
                );
            }
        }
    }

    /// The running VMs of a host fit its memory less the reserve.
    fn check_memory(&self, vms: &[tidepool_lab_pve::VmSnapshot]) {
        for (host, total) in &self.baseline.host_memory {
            let running: u64 = vms
                .iter()
                .filter(|v| &v.node == host && v.running)
                .map(|v| v.memory_mib)
                .sum();
            if running > total.saturating_sub(self.reserve_mib) {
                self.violation(
                    format!("memory:{host}"),
                    format!(
                        "host {host} runs {running} MiB of VMs, more than {total} MiB less the {} MiB reserve",
                        self.reserve_mib
                    ),
                );
            }
        }
    }

    /// A cordoned node belongs to a claim on its way out.
    fn check_cordons(&self, nodes: &[Value], claims: &[Value]) {
        for n in nodes {
            let name = n["metadata"]["name"].as_str().unwrap_or("?");
            if n["spec"]["unschedulable"] != true || self.baseline.nodes.contains_key(name) {
                continue;
            }
            let leaving = claims.iter().any(|c| {
                c["metadata"]["name"].as_str() == Some(name)
                    && (!c["metadata"]["deletionTimestamp"].is_null()
                        || matches!(
                            c["spec"]["intent"]["action"].as_str(),
                            Some("Drain" | "Remove")
                        ))
            });
            if !leaving {
                self.violation(
                    format!("cordon:{name}"),
                    format!("node {name} is cordoned without a claim that is draining it"),
                );
            }
        }
    }

    /// The VMs with our marker, by claim, and the locked ones.
    fn leftovers(&self) -> (Vec<String>, Vec<Value>, Vec<u32>) {
        let vms = self.lab.pve.vms();
        let marked = vms
            .iter()
            .filter(|v| !self.baseline.vms.contains_key(&v.vmid))
            .map(|v| format!("{}:{}", v.vmid, marker(v).unwrap_or_else(|| "-".into())))
            .collect();
        let locked = vms
            .iter()
            .filter(|v| v.lock.is_some())
            .map(|v| v.vmid)
            .collect();
        (marked, self.claims(), locked)
    }
}

fn lab_config(lab: &RunningLab, dir: &Path, index: usize, port: u16) -> PathBuf {
    let base = std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap();
    // Short idle timeouts so bursts come and go many times in one run; a
    // short Lease (it is real time) so a standby takes over quickly.
    let text = base
        .replace("idleTimeout: 30m", "idleTimeout: 4m")
        .replace(
            "metricsAddr: 127.0.0.1:9464",
            &format!(
                "metricsAddr: 127.0.0.1:{port}\n  leaderElection: {{enabled: true, leaseName: {LEASE}, leaseDuration: 3s}}"
            ),
        );
    assert_ne!(text, base, "the lab's configuration changed shape");
    // Relative paths in the configuration are relative to it: keep it
    // beside the lab's own.
    let dir_of_lab = lab.files.tidepool_yaml.parent().unwrap_or(dir);
    let path = dir_of_lab.join(format!("tidepool-replica-{index}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workload whose bursts drive the autoscaler.
fn burst(lab: &RunningLab, replicas: u32) {
    lab.kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "chaos-ci", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "chaos-ci"}},
                "template": {"metadata": {"labels": {"app": "chaos-ci"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "runner", "image": "runner:1",
                        "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
        }))
        .unwrap();
}

/// Faults at a rate on every API Tidepool calls (what the issue lists:
/// 20 % 5xx on Proxmox clone/config/delete, failed and slow tasks, Talos
/// UNAVAILABLE, Kubernetes 5xx).
fn fault_rules() -> Vec<FaultRule> {
    let rule =
        |service, op: &str, rate: f64, status: Option<u16>, message: &str, latency_ms| FaultRule {
            service,
            op: op.into(),
            error_rate: rate,
            status,
            message: Some(message.into()),
            latency_ms,
            times: None,
        };
    vec![
        rule(
            Emulator::Proxmox,
            "POST /nodes/*/qemu/*/clone",
            0.2,
            Some(500),
            "can't lock file '/var/lock/qemu-server/lock-9001.conf' - got timeout",
            0,
        ),
        rule(
            Emulator::Proxmox,
            "PUT /nodes/*/qemu/*/config",
            0.2,
            Some(500),
            "got timeout",
            0,
        ),
        rule(
            Emulator::Proxmox,
            "POST /nodes/*/qemu/*/config",
            0.2,
            Some(500),
            "got timeout",
            0,
        ),
        rule(
            Emulator::Proxmox,
            "DELETE /nodes/*/qemu/*",
            0.2,
            Some(500),
            "got timeout",
            0,
        ),
        rule(
            Emulator::Proxmox,
            "task:qmclone:*",
            0.1,
            None,
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout",
            20_000,
        ),
        rule(
            Emulator::Proxmox,
            "task:qmstart:*",
            0.05,
            None,
            "start failed: got timeout",
            5_000,
        ),
        rule(
            Emulator::Proxmox,
            "GET /cluster/resources",
            0.1,
            Some(596),
            "Errors during TLS negotiation, request sending and header processing",
            0,
        ),
        rule(
            Emulator::Talos,
            "ApplyConfiguration:*",
            0.2,
            Some(14),
            "connection refused",
            0,
        ),
        rule(
            Emulator::Kubernetes,
            "patch workerclaims/status",
            0.1,
            Some(500),
            "etcdserver: request timed out",
            0,
        ),
        rule(
            Emulator::Kubernetes,
            "create workerclaims",
            0.1,
            Some(503),
            "the server is currently unable to handle the request",
            0,
        ),
        rule(
            Emulator::Kubernetes,
            "patch nodes",
            0.1,
            Some(500),
            "etcdserver: request timed out",
            0,
        ),
        rule(
            Emulator::Kubernetes,
            "delete nodes",
            0.1,
            Some(500),
            "etcdserver: request timed out",
            0,
        ),
        rule(
            Emulator::Kubernetes,
            "evict pods",
            0.1,
            Some(500),
            "etcdserver: request timed out",
            0,
        ),
    ]
}

/// One MCP session over the binary's stdio, as an agent would run it:
/// provision a spot worker, then try to destroy a permanent node with
/// `force`. Returns (tool calls made, calls answered with an error).
fn mcp_session(mut cmd: Command) -> (u64, u64) {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut child) = cmd
        .arg("mcp")
        .env("TIDEPOOL_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return (0, 0);
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return (0, 0);
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut send = |msg: Value| {
        writeln!(stdin, "{msg}")
            .and_then(|()| stdin.flush())
            .is_ok()
    };
    let mut answer = || -> Option<Value> { serde_json::from_str(&lines.next()?.ok()?).ok() };
    let calls = [
        json!({"name": "provision_workers", "arguments": {"count": 1, "pool": "spot", "reason": "chaos agent"}}),
        json!({"name": "destroy_worker", "arguments": {"worker_id": "k8s-node3", "force": true}}),
    ];
    let (mut made, mut errors) = (0, 0);
    let ok = send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "chaos", "version": "1"}}}),
    ) && answer().is_some()
        && send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    if ok {
        for (id, params) in calls.into_iter().enumerate() {
            if !send(
                json!({"jsonrpc": "2.0", "id": id + 1, "method": "tools/call", "params": params}),
            ) {
                break;
            }
            made += 1;
            match answer() {
                Some(a) if a["result"]["isError"] == false => {}
                _ => errors += 1,
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (made, errors)
}

/// The replica holding the Lease, if the Lease names a running one.
fn leader(lab: &RunningLab, fleet: &Fleet) -> Option<usize> {
    let lease = lab
        .kube
        .get("coordination.k8s.io/v1", "Lease", NAMESPACE, LEASE)
        .ok()?;
    let holder = lease["spec"]["holderIdentity"].as_str()?.to_owned();
    fleet.replicas.iter().position(|r| {
        r.child
            .as_ref()
            .is_some_and(|c| holder == format!("replica-{}-{}", r.index, c.id()))
    })
}

/// Runs one chaos experiment and reports what it measured.
pub async fn run(opts: ChaosOptions) -> ChaosReport {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = std::fs::remove_dir_all(&opts.dir);
    std::fs::create_dir_all(&opts.dir).unwrap();
    let scenario = Scenario::default_home_lab().unwrap();
    let host_memory = scenario
        .proxmox
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.memory_mib))
        .collect();
    let lab = tidepool_lab::start(LabOptions {
        scenario,
        state_dir: opts.dir.join("lab"),
        time_scale: opts.time_scale,
        seed: opts.seed,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let baseline = Baseline {
        vms: lab
            .pve
            .vms()
            .iter()
            .map(|v| (v.vmid, vm_print(v)))
            .collect(),
        nodes: lab
            .kube
            .list("v1", "Node", "", "")
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap().to_owned(),
                    node_print(n),
                )
            })
            .collect(),
        host_memory,
    };
    let mut fleet = Fleet {
        binary: opts.binary.clone(),
        kubeconfig: lab.files.kubeconfig.clone(),
        scale: opts.time_scale,
        origin: lab.clock.origin_unix_ms(),
        replicas: (0..opts.replicas)
            .map(|i| Replica {
                index: i,
                config: lab_config(&lab, &opts.dir, i, free_port()),
                log: opts.dir.join(format!("replica-{i}.log")),
                child: None,
                frozen: false,
            })
            .collect(),
    };
    let cli_config = fleet.replicas[0].config.clone();
    let run = Arc::new(Run {
        lab,
        baseline,
        limits: [("burst", 10), ("spot", 4), ("gpu", 1)]
            .into_iter()
            .map(|(p, n)| (p.to_owned(), n))
            .collect(),
        reserve_mib: 4096,
        violations: Mutex::new(Vec::new()),
        seen: Mutex::new(BTreeSet::new()),
        claims_seen: Mutex::new(BTreeSet::new()),
        ready_seen: Mutex::new(BTreeSet::new()),
        peak_vms: AtomicU64::new(0),
        samples: AtomicU64::new(0),
    });
    for i in 0..opts.replicas {
        fleet.start(i);
    }
    let fleet = Arc::new(Mutex::new(fleet));
    let stop = Arc::new(AtomicBool::new(false));
    let mut report = ChaosReport::default();

    // The sampler: every invariant, all the time.
    let sampler = {
        let run = Arc::clone(&run);
        let stop = Arc::clone(&stop);
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                run.sample();
                for exit in fleet.lock().unwrap().exited() {
                    run.violation(exit.clone(), exit);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // CLI requests racing the controller for the spot pool (limit 4).
    let requests = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let cli = opts.cli.then(|| {
        let stop = Arc::clone(&stop);
        let requests = Arc::clone(&requests);
        let refused = Arc::clone(&refused);
        let fleet = Arc::clone(&fleet);
        let run = Arc::clone(&run);
        let config = cli_config.clone();
        let seed = opts.seed;
        let log = opts.dir.join("cli.log");
        let cli_log = move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_or_else(|_| Stdio::null(), Stdio::from)
        };
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ 0xC11);
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                for _ in 0..3 {
                    let wait = rng.chance(30);
                    let mut cmd = fleet.lock().unwrap().command(&config);
                    cmd.args(["provision", "--pool", "spot", "--count", "1"])
                        .args(["--reason", "chaos"]);
                    if wait {
                        cmd.arg("--wait");
                    }
                    cmd.env("TIDEPOOL_LOG", "error")
                        .stdout(Stdio::null())
                        .stderr(cli_log());
                    batch.push(tokio::task::spawn_blocking(move || cmd.status()));
                }
                // An agent over MCP at the same time: one more worker for the
                // same pool, and a forced destroy of a permanent node (refused).
                let mcp = {
                    let cmd = fleet.lock().unwrap().command(&config);
                    tokio::task::spawn_blocking(move || mcp_session(cmd))
                };
                for b in batch {
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !matches!(b.await, Ok(Ok(s)) if s.success()) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let (made, errors) = mcp.await.unwrap_or((0, 0));
                requests.fetch_add(made, Ordering::Relaxed);
                refused.fetch_add(errors, Ordering::Relaxed);
                // Now and then, remove a spot worker the way an operator would.
                if rng.chance(50) {
                    let spot: Vec<String> = run
                        .claims()
                        .iter()
                        .filter(|c| c["spec"]["pool"] == "spot" && c["status"]["phase"] == "Ready")
                        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
                        .collect();
                    if let Some(name) = spot.get(rng.below(spot.len() as u64) as usize) {
                        let mut cmd = fleet.lock().unwrap().command(&config);
                        cmd.args(["destroy", name, "--force"])
                            .env("TIDEPOOL_LOG", "error")
                            .stdout(Stdio::null())
                            .stderr(Stdio::null());
                        requests.fetch_add(1, Ordering::Relaxed);
                        if !matches!(tokio::task::spawn_blocking(move || cmd.status()).await, Ok(Ok(s)) if s.success()) {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(rng.between((Duration::from_millis(500), Duration::from_millis(2500)))).await;
            }
        })
    });
    if opts.faults {
        run.lab.faults.set_rules(fault_rules());
    }

    // The chaos: bursts up and down, and a disruption every so often.
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let mut next_burst = Instant::now();
    let mut hung_leases: Option<Instant> = None;
    while report.kills < opts.kills {
        if Instant::now() >= next_burst {
            let replicas = if rng.chance(35) {
                0
            } else {
                2 + rng.below(9) as u32
            };
            burst(&run.lab, replicas);
            if replicas > 0 {
                report.bursts += 1;
            }
            next_burst =
                Instant::now() + rng.between((Duration::from_secs(2), Duration::from_secs(8)));
        }
        tokio::time::sleep(rng.between(opts.kill_every)).await;
        let mut f = fleet.lock().unwrap();
        let target = if f.replicas.len() > 1 && rng.chance(50) {
            leader(&run.lab, &f).unwrap_or_else(|| rng.below(f.replicas.len() as u64) as usize)
        } else {
            rng.below(f.replicas.len() as u64) as usize
        };
        if f.replicas[target].frozen {
            f.signal(target, "-CONT");
        } else if opts.faults && rng.chance(10) {
            // Lease writes hang for longer than the Lease lasts, for a while:
            // the leader cannot renew, and must stop acting before another
            // replica may start.
            let mut rules = fault_rules();
            if hung_leases.is_none() {
                rules.push(FaultRule {
                    service: Emulator::Kubernetes,
                    op: "update leases".into(),
                    error_rate: 0.0,
                    status: None,
                    message: None,
                    latency_ms: 200_000,
                    times: None,
                });
                hung_leases = Some(Instant::now());
                report.lease_hangs += 1;
            } else {
                hung_leases = None;
            }
            run.lab.faults.set_rules(rules);
        } else if f.replicas.len() > 1 && rng.chance(20) {
            // Frozen: its Lease lapses while it still believes it leads.
            f.signal(target, "-STOP");
            report.freezes += 1;
        } else {
            f.kill(target);
            report.kills += 1;
            f.start(target);
        }
    }
    report.chaos_time = started.elapsed();

    // Quiet: no faults, no disruptions, every replica running, no pods.
    stop.store(true, Ordering::Relaxed);
    if let Some(cli) = cli {
        let _ = cli.await;
    }
    let _ = sampler.await;
    run.lab.faults.set_rules(Vec::new());
    {
        let mut f = fleet.lock().unwrap();
        for i in 0..f.replicas.len() {
            if f.replicas[i].frozen {
                f.signal(i, "-CONT");
            }
            if f.replicas[i].child.is_none() {
                f.start(i);
            }
        }
    }
    burst(&run.lab, 0);
    let converging = Instant::now();
    let mut last_cleanup = Instant::now();
    loop {
        run.sample();
        let (marked, claims, locked) = run.leftovers();
        // Spot workers made by the CLI have no pods either: they go when idle.
        if marked.is_empty() && claims.is_empty() && locked.is_empty() {
            report.converged = true;
            break;
        }
        // A worker an operator asked for that failed stays, with its reason,
        // for the operator: clear those as one would, once the rest settled.
        let settled = claims.iter().all(|c| c["status"]["phase"] == "Failed");
        if settled && last_cleanup.elapsed() > Duration::from_secs(5) {
            last_cleanup = Instant::now();
            for c in &claims {
                let name = c["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let mut cmd = fleet.lock().unwrap().command(&cli_config);
                cmd.args(["destroy", &name, "--force"])
                    .env("TIDEPOOL_LOG", "error")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = tokio::task::spawn_blocking(move || cmd.status()).await;
                report.cleared += 1;
            }
        }
        if converging.elapsed() > opts.converge_within {
            report.leftover = format!(
                "VMs with a marker: {marked:?}; locked: {locked:?}; claims: {}",
                claims
                    .iter()
                    .map(|c| format!(
                        "{} phase={} intent={} error={}",
                        c["metadata"]["name"].as_str().unwrap_or("?"),
                        c["status"]["phase"],
                        c["spec"]["intent"],
                        c["status"]["lastError"]
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.converge_time = converging.elapsed();
    fleet.lock().unwrap().stop_all();
    report.faults = run.lab.faults.injected_total();
    report.requests = u32::try_from(requests.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
    report.refused = u32::try_from(refused.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
    report.peak_vms = usize::try_from(run.peak_vms.load(Ordering::Relaxed)).unwrap_or(0);
    report.samples = run.samples.load(Ordering::Relaxed);
    report.claims_seen = run.claims_seen.lock().unwrap().len();
    report.ready_seen = run.ready_seen.lock().unwrap().len();
    report.violations = run.violations.lock().unwrap().clone();
    report
}
