//! `tidepool demo`: the whole product in one command, no hardware. It
//! starts the lab, runs the controller against it over real sockets, sends
//! three kinds of work — a burst of CI runners, a GPU job, a spot batch —
//! shows the workers coming and going, then removes the work and watches
//! the idle workers go. It ends with a summary. The controller runs on
//! the lab's clock ([`LabClock`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tidepool_controller::ports::{Clock, Sleep};
use tidepool_core::duration::Human;
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_lab_sim::SimClock;
use tidepool_live::connect::{LiveOptions, connect};
use tidepool_runtime::run::{RunOptions, run as run_controller};

use crate::exit::Exit;

/// The lab's simulated clock as the controller's, so both read the same
/// time and the controller's waits shrink with the lab's scale.
#[derive(Debug)]
struct LabClock(SimClock);

impl Clock for LabClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::try_from(self.0.now()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let clock = self.0.clone();
        Box::pin(async move { clock.sleep(d).await })
    }

    fn real(&self, d: Duration) -> Duration {
        self.0.real(d)
    }
}

/// One kind of demo work.
struct Work {
    label: &'static str,
    app: &'static str,
    object: Value,
    pods: usize,
    cpu_milli: u64,
}

fn deployment(app: &str, replicas: usize, pool: &str, toleration: Value, requests: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {
                "nodeSelector": {"node-pool": pool},
                "tolerations": [toleration],
                "containers": [{"name": app, "image": format!("registry.lab/{app}:1"), "resources": {"requests": requests}}]}}}
    })
}

fn work() -> Vec<Work> {
    vec![
        Work {
            label: "burst: 8 CI runners (3 CPU, 6Gi each)",
            app: "ci-runners",
            object: deployment(
                "ci-runners",
                8,
                "burst",
                json!({"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}),
                json!({"cpu": "3", "memory": "6Gi"}),
            ),
            pods: 8,
            cpu_milli: 3000,
        },
        Work {
            label: "gpu: 1 inference job (1 nvidia.com/gpu)",
            app: "whisper",
            object: deployment(
                "whisper",
                1,
                "gpu",
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
                json!({"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}),
            ),
            pods: 1,
            cpu_milli: 2000,
        },
        Work {
            label: "spot: 5 batch pods (1 CPU, 2Gi each)",
            app: "batch",
            object: deployment(
                "batch",
                5,
                "spot",
                json!({"key": "workload-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}),
                json!({"cpu": "1", "memory": "2Gi"}),
            ),
            pods: 5,
            cpu_milli: 1000,
        },
    ]
}

fn running(lab: &RunningLab, app: &str) -> usize {
    lab.kube
        .list("v1", "Pod", "default", &format!("app={app}"))
        .map(|pods| {
            pods.iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count()
        })
        .unwrap_or(0)
}

/// (pool → phase → count) of the autoscaler's workers.
fn workers(lab: &RunningLab) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap_or_default()
    {
        let pool = c["spec"]["pool"].as_str().unwrap_or("?").to_owned();
        let phase = c["status"]["phase"]
            .as_str()
            .unwrap_or("Requested")
            .to_owned();
        *out.entry(pool).or_default().entry(phase).or_default() += 1;
    }
    out
}

/// Adds the claims there are now to `seen` (name → pool and size).
fn note(lab: &RunningLab, seen: &mut BTreeMap<String, (String, String)>) {
    for (name, pool, size) in claim_names(lab) {
        seen.entry(name).or_insert((pool, size));
    }
}

fn claim_names(lab: &RunningLab) -> Vec<(String, String, String)> {
    lab.kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                c["spec"]["pool"].as_str().unwrap_or("").to_owned(),
                c["spec"]["size"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pending(lab: &RunningLab) -> usize {
    lab.kube
        .list("v1", "Pod", "default", "")
        .map(|pods| {
            pods.iter()
                .filter(|p| p["status"]["phase"] == "Pending")
                .count()
        })
        .unwrap_or(0)
}

/// The state shown on a status line, without its time: a line is printed
/// only when this changes.
fn state(lab: &RunningLab) -> String {
    let pools: Vec<String> = workers(lab)
        .iter()
        .map(|(pool, phases)| {
            let parts: Vec<String> = phases.iter().map(|(p, n)| format!("{n} {p}")).collect();
            format!("{pool}: {}", parts.join(", "))
        })
        .collect();
    format!(
        "pending pods {:>2}  | {}",
        pending(lab),
        if pools.is_empty() {
            "no Tidepool workers".to_owned()
        } else {
            pools.join(" | ")
        }
    )
}

/// What the demo keeps an eye on while the lab runs: the time budget, the
/// status line last printed, and every worker seen.
struct Watch<'a> {
    lab: &'a RunningLab,
    started: Instant,
    budget: Duration,
    sim_start: SystemTime,
    last_line: String,
    /// Every worker seen during the run (name → pool and size): some come
    /// and go (a TTL can expire before the last workload is placed).
    seen: BTreeMap<String, (String, String)>,
}

impl<'a> Watch<'a> {
    fn new(lab: &'a RunningLab, budget: Duration) -> Self {
        Self {
            lab,
            started: Instant::now(),
            budget,
            sim_start: lab.clock.now(),
            last_line: String::new(),
            seen: BTreeMap::new(),
        }
    }

    /// Simulated time since the start.
    fn simulated(&self) -> Duration {
        self.lab
            .clock
            .now()
            .duration_since(self.sim_start)
            .unwrap_or_default()
    }

    fn within_budget(&self) -> bool {
        self.started.elapsed() < self.budget
    }

    /// Prints a status line when the state shown on it changed.
    fn print_if_changed(&mut self) {
        let now = state(self.lab);
        if now != self.last_line {
            println!(
                "  t+{:>6}  {now}",
                Human(Duration::from_secs(self.simulated().as_secs())).to_string()
            );
            self.last_line = now;
        }
    }

    /// Waits until every workload runs all its pods (or the budget is
    /// spent); returns when each did, in simulated time.
    async fn scale_up(&mut self, work: &[Work]) -> BTreeMap<&'static str, Duration> {
        let mut capacity_at = BTreeMap::new();
        while self.within_budget() {
            note(self.lab, &mut self.seen);
            for w in work {
                if !capacity_at.contains_key(w.app) && running(self.lab, w.app) == w.pods {
                    capacity_at.insert(w.app, self.simulated());
                }
            }
            self.print_if_changed();
            if capacity_at.len() == work.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        note(self.lab, &mut self.seen);
        capacity_at
    }

    /// Waits until no Tidepool worker is left (or the budget is spent);
    /// true when none is.
    async fn scale_down(&mut self) -> bool {
        while self.within_budget() {
            note(self.lab, &mut self.seen);
            self.print_if_changed();
            if claim_names(self.lab).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// How much of the CPU added by every worker seen the work left
    /// unrequested, in words; empty when nothing was added.
    fn waste(&self, work: &[Work]) -> anyhow::Result<String> {
        let cfg =
            tidepool_core::config::load(&std::fs::read_to_string(&self.lab.files.tidepool_yaml)?)?;
        let alloc: u64 = self
            .seen
            .values()
            .map(|(_, size)| cfg.size(size).map_or(0, |s| s.size.allocatable.cpu_milli))
            .sum();
        let used: u64 = work.iter().map(|w| w.pods as u64 * w.cpu_milli).sum();
        Ok(if alloc > 0 {
            format!(
                "{:.0}% of the added CPU unrequested",
                100.0 * (1.0 - used as f64 / alloc as f64)
            )
        } else {
            String::new()
        })
    }
}

/// The demo's state directory (the lab's files and the log).
fn state_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tidepool-demo-{}", std::process::id()))
}

/// Where the demo's logs go unless `-v` sends them to stderr.
pub fn log_path() -> std::path::PathBuf {
    state_dir().join("tidepool.log")
}

/// Starts the lab and says what it is.
async fn start_lab(time_scale: f64) -> anyhow::Result<RunningLab> {
    let dir = state_dir();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab()?,
        state_dir: dir,
        time_scale,
        seed: 1,
        kubernetes: tidepool_lab::KubernetesMode::Emulator,
    })
    .await?;
    println!(
        "Tidepool demo: a two-host Proxmox home lab with Talos workers, simulated {time_scale}x faster than real time."
    );
    println!(
        "  lab state in {} (kubeconfig, tidepool.yaml, ...); logs in {} (-v shows them here)",
        lab.files.dir.display(),
        log_path().display()
    );
    Ok(lab)
}

/// The controller, autoscaling, running against the lab on its clock until
/// told to stop.
type Controller = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), tidepool_runtime::RunError>>,
);

/// Connects to the lab and starts the controller on it.
async fn start_controller(lab: &RunningLab) -> anyhow::Result<Controller> {
    let config = Arc::new(tidepool_core::config::load(&std::fs::read_to_string(
        &lab.files.tidepool_yaml,
    )?)?);
    let exec = Arc::new(
        connect(
            config,
            &LiveOptions {
                config_dir: lab.files.dir.clone(),
                kubeconfig: Some(lab.files.kubeconfig.clone()),
                clock: Arc::new(LabClock(lab.clock.clone())),
            },
        )
        .await?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let controller = tokio::spawn(run_controller(
        exec,
        RunOptions {
            metrics_addr: "127.0.0.1:0".parse()?,
            lease: None,
            autoscale: true,
        },
        stop_rx,
        Some(bound_tx),
    ));
    if let Ok(addr) = bound_rx.await {
        println!("  web dashboard at http://{addr}/ while the demo runs");
    }
    Ok((stop_tx, controller))
}

/// How the run went, for the summary.
struct Outcome {
    /// When each workload had all its pods Running, in simulated time.
    capacity_at: BTreeMap<&'static str, Duration>,
    /// Every worker seen (name → pool and size).
    seen: BTreeMap<String, (String, String)>,
    /// Workers still there at the end.
    remaining: usize,
    /// The CPU left unrequested, in words (empty when none was added).
    waste: String,
    /// Simulated time of the whole run.
    simulated: Duration,
    /// When the run started, in real time.
    started: Instant,
}

/// Prints the summary: when each workload got capacity, the workers added
/// and removed, the packing and the time taken.
fn print_summary(work: &[Work], outcome: &Outcome) {
    println!("\nSummary");
    for w in work {
        match outcome.capacity_at.get(w.app) {
            Some(t) => println!(
                "  {:<44} all {} pod(s) Running after {} simulated",
                w.label,
                w.pods,
                Human(Duration::from_secs(t.as_secs()))
            ),
            None => println!("  {:<44} NOT all Running", w.label),
        }
    }
    let mut by_pool: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (pool, size) in outcome.seen.values() {
        *by_pool.entry(pool).or_default().entry(size).or_default() += 1;
    }
    let described: Vec<String> = by_pool
        .iter()
        .map(|(pool, sizes)| {
            let s: Vec<String> = sizes
                .iter()
                .map(|(size, n)| format!("{n} {size}"))
                .collect();
            format!("{pool}: {}", s.join(" + "))
        })
        .collect();
    let seen = outcome.seen.len();
    println!("  workers added: {seen} ({})", described.join("; "));
    println!(
        "  workers removed: {}",
        seen.saturating_sub(outcome.remaining)
    );
    if !outcome.waste.is_empty() {
        println!("  packing: {}", outcome.waste);
    }
    println!(
        "  {} simulated in {:.1} s of real time",
        Human(Duration::from_secs(outcome.simulated.as_secs())),
        outcome.started.elapsed().as_secs_f64()
    );
}

/// Runs the demo; exit 0 when every workload got capacity and every
/// autoscaled worker was removed again.
///
/// # Errors
/// Runtime start-up failures.
pub fn run(time_scale: f64, budget: Duration) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let lab = start_lab(time_scale).await?;
        let (stop_tx, controller) = start_controller(&lab).await?;

        let mut watch = Watch::new(&lab, budget);
        let work = work();
        println!("\nSending work:");
        for w in &work {
            println!("  - {}", w.label);
            lab.kube
                .apply(w.object.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        println!("\nScaling up:");
        let capacity_at = watch.scale_up(&work).await;
        let all_up = capacity_at.len() == work.len();
        let waste = watch.waste(&work)?;
        println!(
            "\nWork is done: removing it, the idle workers go (gradually: at most 20% of a pool per interval)."
        );
        for w in &work {
            let _ = lab.kube.delete("apps/v1", "Deployment", "default", w.app);
        }
        let all_down = watch.scale_down().await;
        let remaining = claim_names(&lab).len();
        let simulated = watch.simulated();
        let Watch { seen, started, .. } = watch;
        let _ = stop_tx.send(true);
        let _ = controller.await;
        lab.shutdown().await;

        let outcome = Outcome {
            capacity_at,
            seen,
            remaining,
            waste,
            simulated,
            started,
        };
        print_summary(&work, &outcome);
        if all_up && all_down {
            println!("\nEvery workload got capacity and every worker Tidepool added is gone again.");
            Ok(Exit::Ok)
        } else {
            println!(
                "\nThe demo did not finish within {}s of real time.",
                budget.as_secs()
            );
            Ok(Exit::Failure)
        }
    })
}
