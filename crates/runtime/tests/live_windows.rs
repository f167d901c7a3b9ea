//! Windows measured in lab time, end to end: a worker's idle time counts
//! from when its last workload pod left, not from when it joined (issue
//! 12), and a week-long CPU pressure window, read from a configuration
//! that says `for: 7d`, is honoured across a controller restart because
//! its start is kept in the cluster (issue 14). Each test prints its
//! figures in lab time.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, eventually, provision_one, start};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Real time a step may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// The lab's time now.
fn lab_now(live: &Live) -> Timestamp {
    Timestamp::try_from(live.lab.clock.now()).unwrap()
}

/// A Ready burst worker, with its node registered.
async fn worker(live: &Live) -> String {
    let name = provision_one(&live.service(), "windows-test").await;
    let ready = eventually(PATIENCE, || {
        live.claim(&name)
            .is_some_and(|c| c["status"]["phase"] == "Ready")
            && live.nodes().contains(&name)
    })
    .await;
    assert!(ready, "the worker turned Ready\n{}", live.dump_claims());
    name
}

/// A pod bound to `node` asking for `cpu_milli` of its CPU, Running once
/// this returns.
async fn busy(live: &Live, node: &str, pod: &str, cpu_milli: u64) {
    live.lab
        .kube
        .apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default", "labels": {"app": pod}},
            "spec": {"nodeName": node,
                "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                "containers": [{"name": "work", "image": "work:1",
                    "resources": {"requests": {"cpu": format!("{cpu_milli}m"), "memory": "64Mi"}}}]}
        }))
        .unwrap();
    let running = eventually(PATIENCE, || {
        !live.running("default", &format!("app={pod}")).is_empty()
    })
    .await;
    assert!(running, "{pod} runs\n{}", live.dump_pods("default"));
}

/// Whether the worker is asked to go (or gone).
fn leaving(claim: Option<Value>) -> bool {
    claim.is_none_or(|c| c["spec"]["intent"]["action"] == "Remove")
}

/// The lab time at which `name` is first seen asked to go.
async fn removal_of(live: &Live, name: &str) -> Timestamp {
    let asked = eventually(PATIENCE, || leaving(live.claim(name))).await;
    assert!(asked, "{name} goes in the end\n{}", live.dump_claims());
    lab_now(live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_busy_longer_than_its_idle_timeout_stays_the_full_timeout_after_its_last_pod() {
    let live = start(Setup {
        config: |c| {
            for p in &mut c.pools {
                p.ttl = None;
                p.idle_timeout = Some(Duration::from_secs(10 * 60));
            }
        },
        ..Setup::new("idle-means-idle")
    })
    .await;
    let name = worker(&live).await;
    busy(&live, &name, "ci-job", 100).await;
    // Busy for three idle timeouts.
    let busy_from = lab_now(&live);
    live.lab.clock.sleep(Duration::from_secs(30 * 60)).await;
    assert!(
        !leaving(live.claim(&name)),
        "a busy worker stays\n{}",
        live.dump_claims()
    );
    let busy_for = lab_now(&live).duration_since(busy_from);

    live.lab
        .kube
        .delete("v1", "Pod", "default", "ci-job")
        .unwrap();
    let left = lab_now(&live);
    let removed = removal_of(&live, &name).await;
    let idle = removed.duration_since(left);
    eprintln!(
        "figures: busy {:.1} min, then asked to go {:.1} min after its last pod left (idle timeout 10 min)",
        busy_for.as_secs_f64() / 60.0,
        idle.as_secs_f64() / 60.0
    );
    assert!(
        idle >= SignedDuration::from_mins(10),
        "idle only {idle:?} after its last pod left"
    );
    let for_idleness = eventually(PATIENCE, || {
        live.scale_down_events(&name)
            .iter()
            .any(|m| m.contains("idle"))
    })
    .await;
    assert!(
        for_idleness,
        "it goes for idleness: {:?}",
        live.scale_down_events(&name)
    );
    live.stop().await;
}

/// The burst pool's section with a week-long CPU pressure window, no TTL
/// and an idle timeout of a month, as an operator would write it; and a
/// registration timeout long enough for the lab's real-time join at a time
/// scale where a week passes in seconds.
fn week_long_window(yaml: String) -> String {
    let yaml = yaml.replace("registrationTimeout: 300s", "registrationTimeout: 30d");
    let burst = "    ttl: 4h\n    idleTimeout: 30m\n  - name: spot";
    assert!(yaml.contains(burst), "the lab's burst pool moved:\n{yaml}");
    yaml.replace(
        burst,
        "    idleTimeout: 30d\n    scaleUp:\n      cpuPressure: {threshold: 0.8, for: 7d}\n      memoryPressure: false\n  - name: spot",
    )
}

/// The burst pool's durable record.
fn burst_record(live: &Live) -> Value {
    let map = live
        .lab
        .kube
        .get("v1", "ConfigMap", "tidepool-system", "tidepool-pool-burst")
        .unwrap();
    serde_json::from_str(map["data"]["record"].as_str().unwrap()).unwrap()
}

/// When the burst pool's CPU pressure window started, as recorded.
fn pressure_since(live: &Live) -> Option<Timestamp> {
    live.lab
        .kube
        .get("v1", "ConfigMap", "tidepool-system", "tidepool-pool-burst")
        .ok()?;
    burst_record(live)["timers"]["cpuPressureSince"]
        .as_str()
        .map(|s| s.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_long_pressure_window_is_honoured_across_a_controller_restart() {
    let mut live = start(Setup {
        yaml: week_long_window,
        // Burst workers have a TTL unless told otherwise.
        config: |c| {
            for p in &mut c.pools {
                p.ttl = None;
            }
        },
        time_scale: 50_000.0,
        ..Setup::new("week-window")
    })
    .await;
    let pool = live.config.pool("burst").unwrap();
    let window = pool.scale_up.cpu_pressure.unwrap().for_duration;
    assert_eq!(window, Duration::from_secs(7 * 24 * 3600), "7d is accepted");

    let first = worker(&live).await;
    let node = live.lab.kube.get("v1", "Node", "", &first).unwrap();
    let cpu = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap()
        .to_owned();
    let cpu_milli = match cpu.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap(),
        None => cpu.parse::<u64>().unwrap() * 1000,
    };
    busy(&live, &first, "hungry", cpu_milli * 9 / 10).await;
    let opened = eventually(PATIENCE, || pressure_since(&live).is_some()).await;
    assert!(opened, "the window is recorded: {}", burst_record(&live));
    let since = pressure_since(&live).unwrap();

    // A day into the window the controller restarts: nothing in memory.
    live.lab.clock.sleep(Duration::from_secs(24 * 3600)).await;
    assert_eq!(live.claims_of("burst").len(), 1, "{}", live.dump_claims());
    live.restart_controller().await;
    let restarted = lab_now(&live);

    let grown = eventually(PATIENCE, || live.claims_of("burst").len() > 1).await;
    assert!(
        grown,
        "the window ends in a new worker\n{}\n{:?}\n{}",
        live.dump_claims(),
        live.events(""),
        burst_record(&live)
    );
    let created: Timestamp = live
        .claims_of("burst")
        .iter()
        .filter(|c| c["metadata"]["name"] != first.as_str())
        .map(|c| {
            c["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap()
        })
        .min()
        .unwrap();
    let days = |t: Timestamp| t.duration_since(since).as_secs_f64() / 86_400.0;
    eprintln!(
        "figures: pressure from day 0, controller restarted at day {:.2}, new worker at day {:.2} (window 7 d)",
        days(restarted),
        days(created)
    );
    assert!(
        created >= since + SignedDuration::from_hours(7 * 24),
        "not before the week is over"
    );
    assert!(
        created < restarted + SignedDuration::from_hours(7 * 24),
        "the window went on from its start, not from the restart"
    );
    live.stop().await;
}
