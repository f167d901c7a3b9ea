//! Scale benchmark of the Kubernetes API emulator: loads 1,000 nodes and
//! 30,000 pods through the in-process API, waits for the simulated
//! kubelets to report every pod Running, then measures over HTTP a full
//! pod list, a watch replaying the initial state, live watch throughput
//! and the process's memory. Prints a table.
//!
//! `cargo run --release -p tidepool-lab-kube --example scale [NODES] [PODS]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidepool_lab_kube::{KubeLab, KubeOptions, NodeRegistration};
use tidepool_lab_sim::{Faults, SimClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

async fn request(addr: SocketAddr, path: &str) -> Result<TcpStream, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    Ok(stream)
}

/// Reads a watch stream until `want` events arrived; returns the time taken.
async fn count_events(mut stream: TcpStream, want: usize) -> Result<(Duration, usize), BoxError> {
    let start = Instant::now();
    // Every event line ends with `"type":"..."}` and a newline; JSON
    // strings cannot contain a raw newline.
    let needle = b"\"}\n";
    let mut seen = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    while seen < want {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        seen += carry.windows(needle.len()).filter(|w| *w == needle).count();
        let keep = carry.len().saturating_sub(needle.len() - 1);
        carry.drain(..keep);
    }
    Ok((start.elapsed(), seen))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let options = KubeOptions {
        pod_start_delay: Duration::from_secs(1),
        controller_debounce: Duration::from_millis(200),
        history_limit: std::env::var("SCALE_HISTORY")
            .ok()
            .and_then(|h| h.parse().ok())
            .unwrap_or(10_000),
        ..KubeOptions::default()
    };
    let lab = KubeLab::with_options(SimClock::new(10.0), Arc::new(Faults::new(1)), options);
    let addr = lab.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut rows: Vec<(String, String)> = Vec::new();

    let t = Instant::now();
    for i in 0..nodes {
        let mut labels = BTreeMap::new();
        labels.insert(
            "topology.kubernetes.io/zone".to_owned(),
            format!("zone-{}", i % 3),
        );
        lab.register_node(&NodeRegistration {
            name: format!("node-{i:04}"),
            cpu_millis: 32_000,
            memory_bytes: 128 << 30,
            pods: 110,
            labels,
            ..NodeRegistration::default()
        })?;
    }
    for i in 0..pods {
        lab.create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{i:05}"), "namespace": "default",
                         "labels": {"app": format!("app-{}", i % 100), "tier": "bench"}},
            "spec": {"nodeName": format!("node-{:04}", i % nodes),
                     "containers": [{"name": "main", "image": "registry.example/app:1.0",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        }))?;
    }
    let load = t.elapsed();
    rows.push((
        "load (in-process create)".into(),
        format!(
            "{:.2}s, {:.0} objects/s",
            load.as_secs_f64(),
            (nodes + pods) as f64 / load.as_secs_f64()
        ),
    ));

    let (rss, _) = rss_kib();
    rows.push((
        "RSS after load".into(),
        format!("{:.0} MiB", rss as f64 / 1024.0),
    ));
    let t = Instant::now();
    loop {
        let running = lab
            .list("v1", "Pod", "default", "tier=bench")?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if running == pods {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rows.push((
        "all pods Running (kubelets)".into(),
        format!("{:.2}s", t.elapsed().as_secs_f64()),
    ));

    for round in 0..3 {
        let t = Instant::now();
        let mut stream = request(addr, "/api/v1/pods").await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        let elapsed = t.elapsed();
        rows.push((
            format!("list pods over HTTP #{}", round + 1),
            format!(
                "{:.3}s, {:.1} MB, {:.0} objects/s",
                elapsed.as_secs_f64(),
                body.len() as f64 / 1e6,
                pods as f64 / elapsed.as_secs_f64()
            ),
        ));
    }
    let t = Instant::now();
    let mut stream = request(
        addr,
        "/api/v1/nodes?labelSelector=topology.kubernetes.io%2Fzone%3Dzone-1",
    )
    .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    rows.push((
        "list nodes by label over HTTP".into(),
        format!("{:.3}s", t.elapsed().as_secs_f64()),
    ));

    let initial = request(addr, "/api/v1/pods?watch=1").await?;
    let (took, seen) = count_events(initial, pods).await?;
    rows.push((
        "watch initial state (ADDED)".into(),
        format!(
            "{seen} events in {:.3}s, {:.0} events/s",
            took.as_secs_f64(),
            seen as f64 / took.as_secs_f64()
        ),
    ));

    let mut stream = request(addr, "/api/v1/pods?limit=1").await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let rv: String = text
        .split("\"resourceVersion\":\"")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    let live: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(request(addr, &format!("/api/v1/pods?watch=1&resourceVersion={rv}")).await?);
        }
        v
    };
    // Give the watches a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counters: Vec<_> = live
        .into_iter()
        .map(|s| tokio::spawn(count_events(s, pods)))
        .collect();
    let t = Instant::now();
    let writer = lab.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..pods {
            let _ = writer.merge_patch(
                "v1",
                "Pod",
                "default",
                &format!("pod-{i:05}"),
                &json!({"metadata": {"labels": {"bench-round": "1"}}}),
            );
        }
    })
    .await?;
    let writes = t.elapsed();
    rows.push((
        "patch every pod (in-process)".into(),
        format!(
            "{:.2}s, {:.0} writes/s",
            writes.as_secs_f64(),
            pods as f64 / writes.as_secs_f64()
        ),
    ));
    let mut slowest = Duration::ZERO;
    let mut total = 0;
    for c in counters {
        let (_, seen) = c.await??;
        total += seen;
        slowest = slowest.max(t.elapsed());
    }
    rows.push((
        "live watch fan-out (4 watchers)".into(),
        format!(
            "{total} events delivered in {:.2}s, {:.0} events/s",
            slowest.as_secs_f64(),
            total as f64 / slowest.as_secs_f64()
        ),
    ));

    // Scheduling: 30 ReplicaSets of 100 unbound pods each go through the
    // scheduler (1,000 candidate nodes per pod) and the kubelets.
    let t = Instant::now();
    for r in 0..30 {
        lab.create(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("rs-{r:02}"), "namespace": "default"},
            "spec": {"replicas": 100, "selector": {"matchLabels": {"rs": format!("rs-{r:02}")}},
                "template": {"metadata": {"labels": {"rs": format!("rs-{r:02}"), "tier": "scheduled"}},
                    "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0",
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}}},
        }))?;
    }
    loop {
        let listed = lab.list("v1", "Pod", "default", "tier=scheduled")?;
        if listed.len() == 3000 && listed.iter().all(|p| p["status"]["phase"] == "Running") {
            break;
        }
        drop(listed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rows.push((
        "3,000 ReplicaSet pods scheduled + Running".into(),
        format!("{:.2}s", t.elapsed().as_secs_f64()),
    ));

    let (rss, hwm) = rss_kib();
    rows.push((
        "process RSS / peak".into(),
        format!(
            "{:.0} MiB / {:.0} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    ));

    println!("Kubernetes API emulator at {nodes} nodes and {pods} pods");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    Ok(())
}
