//! The long chaos run whose figures `docs/benchmarks.md` quotes: the real
//! `tidepool run` against the lab, killed with SIGKILL (and, with two
//! replicas, frozen with SIGSTOP) at random moments while bursts come and
//! go, faults are injected at a rate and CLI requests race it.
//!
//! ```sh
//! cargo build -p tidepool && cargo run -p tidepool --example chaos -- --kills 200
//! ```
//!
//! Options: `--kills N` (200), `--replicas N` (2), `--seed N` (1),
//! `--scale X` (100), `--every-min-ms`/`--every-max-ms` (real time between
//! disruptions; 500-2500 with two replicas, 3500-8000 with one),
//! `--no-faults`, `--no-cli`. Exits non-zero when an
//! invariant broke or the lab did not converge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/chaos.rs"]
mod chaos;

use std::time::Duration;

use chaos::{ChaosOptions, run};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot read `{v}`"))
        })
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The binary is built beside this example, one directory up.
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("tidepool"))
        .filter(|b| b.exists())
        .unwrap_or_else(|| panic!("build the binary first: cargo build -p tidepool"));
    let replicas = arg(&args, "--replicas", 2);
    // With one replica a restarted controller waits out its predecessor's
    // Lease (3 s in the harness) before it acts: disrupt it less often, or
    // it never gets to do anything between kills.
    let (lo, hi) = if replicas > 1 {
        (500, 2500)
    } else {
        (3500, 8000)
    };
    let options = ChaosOptions {
        binary,
        seed: arg(&args, "--seed", 1),
        replicas,
        kills: arg(&args, "--kills", 200),
        kill_every: (
            Duration::from_millis(arg(&args, "--every-min-ms", lo)),
            Duration::from_millis(arg(&args, "--every-max-ms", hi)),
        ),
        faults: !args.iter().any(|a| a == "--no-faults"),
        cli: !args.iter().any(|a| a == "--no-cli"),
        time_scale: arg(&args, "--scale", 100.0),
        converge_within: Duration::from_secs(300),
        dir: std::env::temp_dir().join(format!("tidepool-chaos-bench-{}", std::process::id())),
    };
    println!("chaos run: {options:?}");
    let report = run(options).await;
    println!("{}", report.summary());
    for v in &report.violations {
        println!("violation: {v}");
    }
    if !report.converged {
        println!("not converged: {}", report.leftover);
    }
    if !report.violations.is_empty() || !report.converged {
        std::process::exit(1);
    }
}
