//! Serves the Kubernetes API emulator on 127.0.0.1:PORT (default 6443) with
//! three worker nodes, and prints a kubeconfig: a quick way to poke at it
//! with kubectl.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tidepool_lab_kube::{KubeLab, NodeRegistration};
use tidepool_lab_sim::{Faults, SimClock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(6443);
    let lab = KubeLab::new(SimClock::new(10.0), Arc::new(Faults::new(1)));
    let addr = lab.serve(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    for i in 1..=3 {
        lab.register_node(&NodeRegistration {
            name: format!("worker-{i}"),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods: 110,
            extended: BTreeMap::new(),
            ..NodeRegistration::default()
        })?;
    }
    eprintln!("serving on http://{addr}");
    println!("{}", tidepool_lab_kube::render_kubeconfig(addr));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
