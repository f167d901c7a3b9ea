//! talosctl (built from the upstream Talos sources by `scripts/upstream.sh`
//! and passed in `TIDEPOOL_UPSTREAM_BIN`) as an independent judge of the
//! emulator: with the lab's talosconfig it applies a config in maintenance
//! mode, reads the version and services, reboots, and upgrades — once into
//! the new version, once into a failing image that rolls back.
//!
//! Without a talosctl (neither `TIDEPOOL_UPSTREAM_BIN` nor `PATH` has one)
//! the test says so and passes; `scripts/test.sh` always provides it.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidepool_lab_sim::{FaultRule, Faults, Service, SimClock};
use tidepool_lab_talos::{BootMode, MachinePhase, TalosDurations, TalosLab, UPGRADE_BOOT_FAULT};

fn talosctl() -> Option<PathBuf> {
    let from_env = std::env::var_os("TIDEPOOL_UPSTREAM_BIN")
        .map(|dir| Path::new(&dir).join("talosctl"))
        .filter(|p| p.is_file());
    from_env.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("talosctl"))
                .find(|p| p.is_file())
        })
    })
}

fn worker_config() -> String {
    // No hostname: the machine picks its own, as real Talos does.
    "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n  type: worker\n  token: abc.def\n  ca:\n    crt: LS0tLS1CRUdJTg==\n    key: \"\"\ncluster:\n  controlPlane:\n    endpoint: https://127.0.0.1:6443\n  ca:\n    crt: LS0tLS1CRUdJTg==\n    key: \"\"\n".to_owned()
}

/// Runs talosctl with `args`; its exit status and output.
async fn run(bin: &Path, home: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).env("HOME", home).env_remove("TALOSCONFIG");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("talosctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether talosctl's `version` output reports `tag` (client or server).
fn reports_tag(out: &str, tag: &str) -> bool {
    out.lines()
        .filter(|l| l.trim_start().starts_with("Tag:"))
        .any(|l| l.split_whitespace().last() == Some(tag))
}

/// Waits (bounded) until the machine at `ip` serves its configured API
/// again with a boot count above `boots`.
async fn booted_after(lab: &TalosLab, ip: IpAddr, boots: u64) {
    for _ in 0..1000 {
        if let Some(m) = lab.machine_state(ip)
            && m.boots > boots
            && m.phase == MachinePhase::Running
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{ip} did not come back: {:?}", lab.machine_state(ip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talosctl_drives_the_lab_machines() {
    let Some(bin) = talosctl() else {
        eprintln!("no talosctl (TIDEPOOL_UPSTREAM_BIN or PATH): skipped");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let faults = Arc::new(Faults::new(3));
    let lab = TalosLab::new(
        SimClock::new(1000.0),
        faults.clone(),
        TalosDurations::default(),
    )
    .unwrap();
    let ip: IpAddr = "127.0.78.10".parse().unwrap();
    let node = ip.to_string();
    let home = std::env::temp_dir().join(format!("talosctl-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let config_file = home.join("worker.yaml");
    std::fs::write(&config_file, worker_config()).unwrap();
    let talosconfig = home.join("talosconfig");
    std::fs::write(&talosconfig, lab.talosconfig("lab", &[ip])).unwrap();
    let tc = talosconfig.to_str().unwrap();
    let with_config = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--talosconfig".into(), tc.into(), "-n".into(), node.clone()];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    };
    let talosctl = |args: Vec<String>| {
        let (bin, home) = (bin.clone(), home.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&bin, &home, &args).await
        }
    };

    // Maintenance mode: apply-config --insecure.
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let (ok, out) = talosctl(
        [
            "apply-config",
            "--insecure",
            "-n",
            &node,
            "--file",
            config_file.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert!(ok, "apply-config --insecure: {out}");
    booted_after(&lab, ip, 1).await;

    // version: the server's tag, under the hostname the machine picked.
    let (ok, out) = talosctl(with_config(&["version"])).await;
    assert!(ok, "version: {out}");
    let state = lab.machine_state(ip).unwrap();
    assert!(reports_tag(&out, &state.version), "{out}");
    assert!(
        out.contains(&state.hostname) || out.contains(&node),
        "{out}"
    );

    // services: kubelet running and healthy.
    let (ok, out) = talosctl(with_config(&["services"])).await;
    assert!(ok, "services: {out}");
    let kubelet = out
        .lines()
        .find(|l| l.contains(" kubelet "))
        .unwrap_or_else(|| panic!("no kubelet in {out}"));
    assert!(
        kubelet.contains("Running") && kubelet.contains("OK"),
        "{out}"
    );

    // reboot. (`--wait`, talosctl's default, follows the `Events` stream,
    // which the emulator does not serve: it answers Unimplemented.)
    let boots = lab.machine_state(ip).unwrap().boots;
    let (ok, out) = talosctl(with_config(&["reboot", "--wait=false"])).await;
    assert!(ok, "reboot: {out}");
    booted_after(&lab, ip, boots).await;

    // upgrade into the image's version.
    let boots = lab.machine_state(ip).unwrap().boots;
    let image = "ghcr.io/siderolabs/installer:v1.11.2";
    let (ok, out) = talosctl(with_config(&["upgrade", "--image", image, "--wait=false"])).await;
    assert!(ok, "upgrade: {out}");
    booted_after(&lab, ip, boots).await;
    let (ok, out) = talosctl(with_config(&["version"])).await;
    assert!(ok && reports_tag(&out, "v1.11.2"), "{out}");

    // An image that fails to boot: back on v1.11.2.
    faults.add_rule(FaultRule {
        service: Service::Talos,
        op: format!("{UPGRADE_BOOT_FAULT}:{ip}"),
        error_rate: 1.0,
        status: None,
        message: Some("kernel panic".into()),
        latency_ms: 0,
        times: Some(1),
    });
    let boots = lab.machine_state(ip).unwrap().boots;
    let image = "ghcr.io/siderolabs/installer:v1.11.3";
    let (ok, out) = talosctl(with_config(&["upgrade", "--image", image, "--wait=false"])).await;
    assert!(ok, "upgrade: {out}");
    booted_after(&lab, ip, boots).await;
    let (ok, out) = talosctl(with_config(&["version"])).await;
    assert!(ok && reports_tag(&out, "v1.11.2"), "{out}");

    // A staged upgrade: reboots at once and comes back on the new version.
    let boots = lab.machine_state(ip).unwrap().boots;
    let image = "ghcr.io/siderolabs/installer:v1.11.4";
    let args = ["upgrade", "--image", image, "--stage", "--wait=false"];
    let (ok, out) = talosctl(with_config(&args)).await;
    assert!(ok, "upgrade --stage: {out}");
    booted_after(&lab, ip, boots).await;
    let (ok, out) = talosctl(with_config(&["version"])).await;
    assert!(ok && reports_tag(&out, "v1.11.4"), "{out}");

    lab.power_off_all().await;
    std::fs::remove_dir_all(&home).unwrap();
}
