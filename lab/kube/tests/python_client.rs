//! Fidelity test with a client we did not write: the official Python
//! `kubernetes` client (from the fidelity virtualenv) lists and watches
//! from a resourceVersion.

mod common;

use std::path::PathBuf;

use common::cluster_with;
use tidepool_lab_kube::KubeOptions;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDEPOOL_FIDELITY_PYTHON") {
        return PathBuf::from(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = workspace.join("target/fidelity-venv/bin/python");
    assert!(
        venv.exists(),
        "the fidelity virtualenv is missing: run scripts/fidelity-venv.sh (or set $TIDEPOOL_FIDELITY_PYTHON) — expected {}",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_sees_added_modified_deleted_in_order_and_410_for_a_stale_version() {
    let interpreter = python();
    let options = KubeOptions {
        history_limit: 20,
        ..KubeOptions::default()
    };
    let c = cluster_with("python", options).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fidelity/watch_sequence.py");
    let out = tokio::process::Command::new(&interpreter)
        .arg(&script)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{} {} failed:\n{}\n{}",
        interpreter.display(),
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
