//! The web dashboard in a real browser: headless Chromium (Debian's, which
//! scripts/tools.sh installs) loads the page `tidepool run` serves while
//! the lab goes through a burst, and the page — after its own scripts have
//! fetched `/api/state` and drawn it — shows the workers Ready, the hosts'
//! room, the scale-up with its reason; then, once the burst is over, the
//! scale-down and the removals. Screenshots of both moments are saved (in
//! `target/screenshots/`, or `TIDEPOOL_SCREENSHOTS`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Setup, start};
use serde_json::json;

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("TIDEPOOL_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium, headless and quiet (no background networking: these machines
/// refuse it), with a fresh profile; `extra` says what to produce. The page
/// gets a budget of virtual time to run its scripts and fetches first.
fn chromium(url: &str, extra: &[String]) -> String {
    let profile = tempdir("chromium-profile");
    let out = Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running chromium (scripts/tools.sh installs it): {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidepool-web-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page's DOM after its scripts ran, and a screenshot named `shot`.
fn look(url: &str, shot: &str) -> String {
    let png = screenshots().join(shot);
    chromium(url, &[format!("--screenshot={}", png.display())]);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "{} is a real picture ({size} bytes)",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
    chromium(url, &["--dump-dom".to_owned()])
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_burst_scaling_up_and_down() {
    let live = start(Setup::new("web")).await;
    let url = format!("http://{}/", live.metrics_addr);
    let lab = &live.lab;
    lab.kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-burst", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web-burst"}},
                "template": {"metadata": {"labels": {"app": "web-burst"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "runner", "image": "runner:1", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
        }))
        .unwrap();
    let burst_ready = || {
        live.claims_of("burst")
            .iter()
            .filter(|c| c["status"]["phase"] == "Ready")
            .count()
    };
    let running = || {
        lab.kube
            .list("v1", "Pod", "default", "app=web-burst")
            .unwrap()
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
    };
    assert!(
        // Pods may run on a node a moment before its claim says Ready.
        common::eventually(Duration::from_secs(60), || running() == 4
            && burst_ready() >= 1)
        .await,
        "{}",
        live.dump_claims()
    );
    let ready = burst_ready();
    assert!(ready >= 1, "{ready} burst workers Ready");

    // During the burst: the page lists the Ready workers, the hosts' room
    // and the scale-up with the planner's reason.
    let dom = look(&url, "dashboard-burst.png");
    assert!(
        count(&dom, "data-phase=\"Ready\"") >= ready,
        "{ready} Ready rows in\n{dom}"
    );
    assert!(dom.contains("data-host=\"pve-01\""), "{dom}");
    assert!(dom.contains("data-kind=\"scale-up\""), "{dom}");
    assert!(
        dom.contains("pending-pods"),
        "the reason code is shown\n{dom}"
    );
    assert!(dom.contains("data-kind=\"ready\""), "{dom}");
    assert!(dom.contains(">leader<"), "{dom}");

    // The burst is over: the idle workers go, and the page says so.
    lab.kube
        .delete("apps/v1", "Deployment", "default", "web-burst")
        .unwrap();
    assert!(
        common::eventually(Duration::from_secs(90), || live
            .claims_of("burst")
            .is_empty())
        .await,
        "{}",
        live.dump_claims()
    );
    // The controller notices the claims are gone at its next look.
    let state = format!("{url}api/state");
    let mut removed = 0;
    for _ in 0..200 {
        let body = reqwest::get(&state).await.unwrap().text().await.unwrap();
        removed = count(&body, "\"kind\":\"removed\"");
        if removed >= ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(removed >= ready, "{removed} removals recorded");
    let dom = look(&url, "dashboard-after.png");
    assert_eq!(count(&dom, "data-phase=\"Ready\""), 0, "{dom}");
    assert!(dom.contains("data-kind=\"scale-down\""), "{dom}");
    assert!(
        count(&dom, "data-kind=\"removed\"") >= ready,
        "each removed worker is on the timeline\n{dom}"
    );
    assert!(dom.contains("No workers yet."), "{dom}");
    live.stop().await;
}
