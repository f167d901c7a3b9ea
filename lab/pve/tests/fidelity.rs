//! Fidelity: proxmoxer, a Proxmox client we did not write, drives the
//! emulator through a worker's whole life (clone, config, start, agent
//! addresses, shutdown, delete) over HTTPS verified against the lab's CA.
//!
//! The interpreter is `$TIDEPOOL_FIDELITY_PYTHON`, or else
//! `<workspace>/target/fidelity-venv/bin/python`, which
//! `scripts/fidelity-venv.sh` creates. A missing interpreter fails the test.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{TEMPLATE, start, two_node_cluster};
use tidepool_lab_pve::VmEvent;

fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDEPOOL_FIDELITY_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fidelity-venv/bin/python")
}

#[tokio::test]
async fn proxmoxer_drives_a_worker_through_clone_config_start_agent_shutdown_and_delete() {
    let python = interpreter();
    assert!(
        python.exists(),
        "the fidelity interpreter {} is missing: run scripts/fidelity-venv.sh \
         (or set TIDEPOOL_FIDELITY_PYTHON to a python with proxmoxer installed)",
        python.display()
    );
    let mut cfg = two_node_cluster();
    // Scale 20: a 5 s linked clone takes 0.25 s, the 3 s 401 delay 0.15 s.
    cfg.durations.linked_clone_ms = 5_000;
    let lab = start(cfg, 20.0, 3).await;

    // The composition's part: once a start succeeds, the guest agent comes up.
    let mut events = lab.lab.subscribe();
    let handle = lab.lab.clone();
    let booter = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let VmEvent::Started { vmid, .. } = event {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let ip: IpAddr = "127.0.1.21".parse().unwrap();
                handle.set_agent(vmid, Some(vec![ip])).unwrap();
            }
        }
    });

    let dir = std::env::temp_dir().join(format!("tidepool-pve-fidelity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("pve-root-ca.pem");
    std::fs::write(&ca, lab.lab.ca_cert_pem()).unwrap();
    let (token_id, secret) = lab.token.rsplit_once('=').unwrap();
    let (user, token_name) = token_id.split_once('!').unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fidelity/proxmoxer_lifecycle.py");

    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("PVE_HOST", format!("127.0.0.1:{}", lab.addr.port()))
        .env("PVE_USER", user)
        .env("PVE_TOKEN_NAME", token_name)
        .env("PVE_TOKEN_VALUE", secret)
        .env("PVE_CA", &ca)
        .env("PVE_NODE", "pve-01")
        .env("PVE_TEMPLATE", TEMPLATE.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the proxmoxer script finished within 180 s")
        .expect("the fidelity interpreter runs");
    booter.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("FIDELITY OK"),
        "proxmoxer fidelity script failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}
