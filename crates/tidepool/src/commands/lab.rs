//! `tidepool lab`: runs the emulated home lab in the foreground.

use std::path::PathBuf;

use clap::Args;
use tidepool_lab::{KubernetesMode, LabOptions, Scenario};

use crate::exit::Exit;

/// Options of `tidepool lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Scenario file (YAML); the built-in home lab when omitted.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Where to write kubeconfig, proxmox.env, talosconfig, tidepool.yaml and ready.
    #[arg(long, default_value = "./.tidepool-lab")]
    pub state_dir: PathBuf,
    /// Seed for fault injection and other random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The lab's Kubernetes: `emulator` (fast, in-process) or `upstream`
    /// (etcd, kube-apiserver, kube-scheduler, kube-controller-manager and
    /// kwok, built by scripts/upstream.sh and found through
    /// TIDEPOOL_UPSTREAM_BIN or PATH).
    #[arg(long, default_value = "emulator", value_parser = parse_kubernetes)]
    pub kubernetes: KubernetesMode,
}

/// Waits for Ctrl-C or SIGTERM (so that the lab stops its control plane's
/// processes either way).
async fn stopped() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

fn parse_kubernetes(s: &str) -> Result<KubernetesMode, String> {
    s.parse()
}

/// Starts the lab, prints where everything is, and waits for Ctrl-C.
///
/// # Errors
/// Runtime start-up failures; an unusable scenario is `Exit::Invalid`.
pub fn run(args: &LabArgs, time_scale: f64) -> anyhow::Result<Exit> {
    let scenario = match &args.scenario {
        None => Scenario::default_home_lab(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Scenario::parse(&text, &path.display().to_string()),
            Err(e) => {
                eprintln!("{}: cannot read the scenario: {e}", path.display());
                return Ok(Exit::Invalid);
            }
        },
    };
    let scenario = match scenario {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Invalid);
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let name = scenario.name.clone();
        let lab = match tidepool_lab::start(LabOptions {
            scenario,
            state_dir: args.state_dir.clone(),
            time_scale,
            seed: args.seed,
            kubernetes: args.kubernetes,
        })
        .await
        {
            Ok(lab) => lab,
            Err(e @ tidepool_lab::LabError::Scenario(_)) => {
                eprintln!("{e}");
                return Ok(Exit::Invalid);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("starting the lab")),
        };
        let dir = lab.files.dir.display().to_string();
        println!(
            "Tidepool lab `{name}` is ready (time scale {}x, Kubernetes: {}).",
            lab.clock.scale(),
            lab.kube.mode().name()
        );
        println!("  Kubernetes API   {}", lab.kube_url());
        println!("  Proxmox VE API   https://{}/api2/json", lab.pve_addr);
        println!(
            "  Talos API        port {} on each machine's 127.x address",
            lab.talos_port
        );
        println!("  Fault admin      http://{}/faults", lab.admin_addr);
        println!();
        println!("  source {dir}/lab.env      # TIDEPOOL_CONFIG, KUBECONFIG and the lab's clock");
        println!("  kubectl get nodes");
        println!("  tidepool workers list");
        println!(
            "  tidepool run                 # then the web dashboard at http://127.0.0.1:9464/"
        );
        println!();
        println!("Press Ctrl-C to stop.");
        stopped().await?;
        lab.shutdown().await;
        Ok(Exit::Ok)
    })
}
