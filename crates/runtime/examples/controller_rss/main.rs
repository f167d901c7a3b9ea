//! Memory, sync time and restart-to-steady-state of the controller's view
//! of a large cluster, against the Kubernetes emulator or the real API
//! server.
//!
//! The cluster holds 1,000 nodes and 30,000 pods shaped like real ones
//! ([`shapes`]), with container statuses as kubelets write them.
//!
//! - Emulator (the default): it runs in a child process (this binary run
//!   again with `serve`). The emulator drops `managedFields`, so that part
//!   of a real object's bulk is absent there.
//! - `--kubernetes upstream`: etcd and the real kube-apiserver (from
//!   `scripts/upstream.sh`, found through `TIDEPOOL_UPSTREAM_BIN`) with no
//!   scheduler, controllers or kubelets; this process creates the
//!   namespaces, service accounts, ReplicaSets, nodes and pods with
//!   parallel requests, and writes the statuses kubelets would
//!   ([`upstream`]). Real objects carry `managedFields` on top.
//!
//! Then this binary runs again as `measure`, once per run (`--runs N`,
//! default 3), each a fresh process doing what the controller does at
//! start: connect a `ClusterClient`, wait for the node and pod caches to
//! sync, and build the planner's view of every node and pod once. Each run
//! prints its memory (VmRSS and VmHWM from /proc/self/status) at each
//! stage and the time from its own start to the planner's view (the
//! restart-to-steady-state figure, leader election aside); the first also
//! checks every cached pod against the whole pod read from the API server.
//! The caches start with streaming lists as the controller's do;
//! `--paged` makes them list in pages (the fallback for API servers
//! without streaming lists).
//!
//! `cargo run --release -p tidepool-runtime --example controller_rss [-- [--kubernetes upstream] [--paged] [--runs N] [NODES] [PODS]]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod shapes;
mod upstream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use shapes::{NAMESPACES, REPLICAS};
use tidepool_cluster::nodes::node_snapshot;
use tidepool_cluster::{Cache, CachedPod, ClusterClient, ClusterOptions, client_from_kubeconfig};
use tidepool_core::quantity::Quantity;
use tidepool_core::sched::{NodeSnapshot, PodSpec};
use tidepool_lab_kube::{KubeLab, KubeOptions};
use tidepool_lab_sim::{Faults, SimClock};

/// VmRSS and VmHWM of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Loads the emulator (before any controller runs, so the ReplicaSets
/// find their pods already there), serves it, waits until the kubelets
/// report every pod Running, prints `READY <addr> <pod bytes> <node bytes>`
/// and serves until stdin closes.
fn serve(nodes: usize, pods: usize) {
    let options = KubeOptions {
        pod_start_delay: Duration::from_secs(1),
        controller_debounce: Duration::from_millis(200),
        history_limit: 1_000,
        ..KubeOptions::default()
    };
    let lab = KubeLab::with_options(SimClock::new(10.0), Arc::new(Faults::new(1)), options);
    for n in 0..NAMESPACES {
        lab.create(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("team-{n}")}}))
            .unwrap();
    }
    for i in 0..nodes {
        let name = format!("node-{i:04}");
        lab.register_node(&shapes::node_registration(i)).unwrap();
        lab.merge_patch(
            "v1",
            "Node",
            "",
            &name,
            &json!({"status": {"images": shapes::node_images(i)}}),
        )
        .unwrap();
    }
    let mut made = 0;
    for set in 0..pods.div_ceil(REPLICAS) {
        let count = REPLICAS.min(pods - made);
        let (rs, set_pods) = shapes::replica_set(set, count, made, nodes);
        let rs = lab.create(rs).unwrap();
        for mut pod in set_pods {
            pod["metadata"]["ownerReferences"][0]["uid"] = rs["metadata"]["uid"].clone();
            lab.create(pod).unwrap();
        }
        made += count;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let addr = lab
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        loop {
            let listed = lab.list("v1", "Pod", "", "").unwrap();
            if listed.iter().all(|p| p["status"]["phase"] == "Running") {
                break;
            }
            drop(listed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let bytes = |kind| {
            lab.list("v1", kind, "", "")
                .unwrap()
                .iter()
                .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
                .sum::<usize>()
        };
        println!("READY {addr} {} {}", bytes("Pod"), bytes("Node"));
        // Serve until the parent goes away (its end of stdin closes).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
    });
}

/// The planner's view of the cluster, as `plan_input` builds it: node
/// snapshots with the views of their pods, and the unbound pods.
fn planner_view(
    nodes: &[Arc<Node>],
    pods: &[Arc<CachedPod>],
) -> (Vec<NodeSnapshot>, Vec<Arc<PodSpec>>) {
    let mut by_node: BTreeMap<&str, Vec<Arc<PodSpec>>> = BTreeMap::new();
    let mut unbound = Vec::new();
    for pod in pods.iter().filter(|p| !p.phase.is_terminal()) {
        match &pod.node {
            Some(node) => by_node.entry(node).or_default().push(pod.spec.clone()),
            None => unbound.push(pod.spec.clone()),
        }
    }
    let snapshots = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            node_snapshot(n, by_node.remove(name).unwrap_or_default())
        })
        .collect();
    (snapshots, unbound)
}

/// CPU (millicores) and memory (bytes) a whole pod reserves, computed
/// here independently of the cache: the larger of its containers' sum and
/// its largest init container (the generated pods have no sidecars and no
/// overhead).
fn reserved(pod: &Pod) -> (u64, u64) {
    let request = |c: &k8s_openapi::api::core::v1::Container, key: &str, milli: bool| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(key))
            .map_or(0, |q| {
                if milli {
                    Quantity::milli_lenient(&q.0)
                } else {
                    Quantity::units_lenient(&q.0)
                }
            })
    };
    let spec = pod.spec.as_ref().unwrap();
    let sum = |key, milli| {
        spec.containers
            .iter()
            .map(|c| request(c, key, milli))
            .sum::<u64>()
    };
    let init = |key, milli| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| request(c, key, milli))
            .max()
            .unwrap_or(0)
    };
    (
        sum("cpu", true).max(init("cpu", true)),
        sum("memory", false).max(init("memory", false)),
    )
}

/// Whether every cached pod agrees with the whole pod read from the API
/// server (a page at a time): node, phase, labels, node selector, CPU and
/// memory. Returns the number of pods that disagree or are missing.
async fn disagreements(client: kube::Client, cache: &Cache<CachedPod>) -> usize {
    let api = Api::<Pod>::all(client);
    let mut bad = 0;
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(t) = token.take() {
            params = params.continue_token(&t);
        }
        let page = api.list(&params).await.unwrap();
        for pod in &page.items {
            seen += 1;
            let meta = &pod.metadata;
            let Some(cached) = cache.get(meta.namespace.as_deref(), meta.name.as_deref().unwrap())
            else {
                bad += 1;
                continue;
            };
            let spec = pod.spec.as_ref().unwrap();
            let (cpu, memory) = reserved(pod);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let same = cached.node.as_deref() == spec.node_name.as_deref()
                && format!("{:?}", cached.phase) == phase.unwrap_or("Pending")
                && *cached.spec.labels == meta.labels.clone().unwrap_or_default()
                && *cached.spec.node_selector == spec.node_selector.clone().unwrap_or_default()
                && cached.spec.requests.cpu_milli == cpu
                && cached.spec.requests.memory_bytes == memory;
            bad += usize::from(!same);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    bad + cache.len().saturating_sub(seen)
}

/// One run, in a process of its own started at `started`: connects a
/// `ClusterClient` through `kubeconfig`, waits for both caches, builds the
/// planner's view, and prints what it measured; with `check`, compares
/// every cached pod with the API server's.
async fn measure(kubeconfig: &Path, nodes: usize, pods: usize, flags: &[String], started: Instant) {
    let check = flags.iter().any(|f| f == "check");
    let options = ClusterOptions {
        streaming_lists: !flags.iter().any(|f| f == "paged"),
        ..ClusterOptions::default()
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut rows: Vec<(String, String)> = Vec::new();
    let (rss, _) = rss_kib();
    rows.push(("RSS before connecting".into(), mib(rss)));

    let client = client_from_kubeconfig(kubeconfig).await.unwrap();
    let checker = client.clone();
    let connected = Instant::now();
    let caches = ClusterClient::with_options(client, options);
    let deadline = Duration::from_secs(600);
    caches.nodes().wait_until_synced(deadline).await.unwrap();
    caches.pods().wait_until_synced(deadline).await.unwrap();
    let synced = connected.elapsed();
    let (node_count, pod_count) = (caches.nodes().len(), caches.pods().len());
    assert_eq!(
        (node_count, pod_count),
        (nodes, pods),
        "a cache is incomplete"
    );
    rows.push((
        "caches synced".into(),
        format!(
            "{:.2} s for {node_count} nodes and {pod_count} pods",
            synced.as_secs_f64()
        ),
    ));
    let (rss, hwm) = rss_kib();
    rows.push((
        "RSS / peak after sync".into(),
        format!("{} / {}", mib(rss), mib(hwm)),
    ));

    let building = Instant::now();
    let node_state = caches.nodes().state();
    let pod_state = caches.pods().state();
    let (snapshots, unbound) = planner_view(&node_state, &pod_state);
    let built = building.elapsed();
    let steady = started.elapsed();
    let placed: usize = snapshots.iter().map(|n| n.pods.len()).sum();
    rows.push((
        "planner view built".into(),
        format!(
            "{:.0} ms ({placed} pods on {} nodes, {} unbound)",
            built.as_secs_f64() * 1e3,
            snapshots.len(),
            unbound.len()
        ),
    ));
    rows.push((
        "process start to planner view (restart)".into(),
        format!("{:.2} s", steady.as_secs_f64()),
    ));
    let (rss, hwm) = rss_kib();
    rows.push((
        "RSS / peak with the planner view".into(),
        format!("{} / {}", mib(rss), mib(hwm)),
    ));
    drop((snapshots, unbound, node_state, pod_state));
    let (rss, _) = rss_kib();
    rows.push(("RSS after dropping the view".into(), mib(rss)));

    if check {
        let bad = disagreements(checker, caches.pods()).await;
        rows.push((
            "cached pods that disagree with the API server".into(),
            bad.to_string(),
        ));
    }
    print_rows(&rows);
}

fn print_rows(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// The emulator in a child process, loaded and serving; returns it (it
/// stops when its stdin closes) and what loading took.
fn start_emulator(nodes: usize, pods: usize, dir: &Path) -> (std::process::Child, PathBuf, String) {
    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["serve", &nodes.to_string(), &pods.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("READY ")))
        .expect("the emulator did not start");
    let fields: Vec<&str> = ready.split_whitespace().collect();
    let addr: SocketAddr = fields[1].parse().unwrap();
    let pod_bytes: f64 = fields[2].parse().unwrap();
    let node_bytes: f64 = fields[3].parse().unwrap();
    let loaded = format!(
        "{:.1} s (child process); objects as JSON: pods {:.0} MB ({:.1} KB each), nodes {:.1} MB",
        started.elapsed().as_secs_f64(),
        pod_bytes / 1e6,
        pod_bytes / 1e3 / pods as f64,
        node_bytes / 1e6
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, tidepool_lab_kube::render_kubeconfig(addr)).unwrap();
    (child, kubeconfig, loaded)
}

/// Command-line options of the parent process.
struct Options {
    upstream: bool,
    paged: bool,
    runs: usize,
    nodes: usize,
    pods: usize,
}

fn parse(args: &[String]) -> Options {
    let mut options = Options {
        upstream: false,
        paged: false,
        runs: 3,
        nodes: 1000,
        pods: 30_000,
    };
    let mut numbers = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kubernetes" => {
                options.upstream = it.next().map(String::as_str) == Some("upstream");
            }
            "--paged" => options.paged = true,
            "--runs" => options.runs = it.next().and_then(|n| n.parse().ok()).unwrap_or(3),
            n => numbers.push(n.parse::<usize>().expect("NODES and PODS are numbers")),
        }
    }
    options.nodes = numbers.first().copied().unwrap_or(options.nodes);
    options.pods = numbers.get(1).copied().unwrap_or(options.pods);
    options
}

/// Loads the cluster, then runs `measure` in fresh processes.
async fn benchmark(options: Options) {
    let Options {
        upstream,
        paged,
        runs,
        nodes,
        pods,
    } = options;
    let dir = std::env::temp_dir().join(format!("tidepool-controller-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kind = if upstream {
        "the real API server"
    } else {
        "the emulator"
    };
    let lists = if paged { "paged" } else { "streaming" };
    println!("Controller memory at {nodes} nodes and {pods} pods against {kind}, {lists} lists");
    let (server, kubeconfig) = if upstream {
        let loaded = upstream::load(&dir, nodes, pods).await;
        let kubeconfig = loaded.kubeconfig.clone();
        (
            Server::Upstream {
                _loaded: Box::new(loaded),
            },
            kubeconfig,
        )
    } else {
        let (child, kubeconfig, loaded) = start_emulator(nodes, pods, &dir);
        println!("  emulator loaded, all pods Running: {loaded}");
        (Server::Emulator(child), kubeconfig)
    };
    let exe = std::env::current_exe().unwrap();
    for run in 1..=runs {
        println!("run {run} of {runs} (a fresh process):");
        let check = if run == 1 { "check" } else { "no-check" };
        let status = Command::new(&exe)
            .arg("measure")
            .arg(&kubeconfig)
            .args([&nodes.to_string(), &pods.to_string(), check, lists])
            .status()
            .unwrap();
        assert!(status.success(), "run {run} failed");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What serves the cluster; dropping it stops it.
enum Server {
    Emulator(std::process::Child),
    /// Kept for its drop, which stops etcd and the API server.
    Upstream {
        _loaded: Box<upstream::Loaded>,
    },
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Emulator(child) = self {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    match args.first().map(String::as_str) {
        Some("serve") => {
            let n = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap();
            serve(n(1), n(2));
        }
        Some("measure") => {
            let n = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap();
            let kubeconfig = PathBuf::from(&args[1]);
            runtime().block_on(measure(&kubeconfig, n(2), n(3), &args[4..], started));
        }
        _ => runtime().block_on(benchmark(parse(&args))),
    }
}
