//! The worker commands and the MCP server, run as a user would run them,
//! against a lab started in-process: provision with `--wait`, list as JSON,
//! the safety refusals with their exit codes, drain and destroy; the dry-run
//! plan and the capacity report; an MCP session over the binary's
//! stdin/stdout; and `tidepool orphans` listing the VM of a claim deleted
//! without its finalizer.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";

async fn lab(name: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-cli-lab-{name}-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 3,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

async fn run(lab: &RunningLab, args: &[&str]) -> Output {
    let lab_args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let config = lab.files.tidepool_yaml.clone();
    let kubeconfig = lab.files.kubeconfig.clone();
    let origin = lab.clock.origin_unix_ms();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--time-scale", SCALE])
            .args(["--time-origin", &origin.to_string()])
            .args(lab_args)
            .env("TIDEPOOL_LOG", "error")
            .output()
            .expect("run tidepool")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_provisions_lists_drains_and_destroys_workers_from_the_cli() {
    let lab = lab("flow").await;
    let out = run(
        &lab,
        &[
            "provision",
            "--pool",
            "burst",
            "--size",
            "small",
            "--count",
            "3",
            "--ttl",
            "4h",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count(),
        3,
        "{}",
        stdout(&out)
    );

    let out = run(
        &lab,
        &["-o", "json", "workers", "list", "--type", "temporary"],
    )
    .await;
    let workers: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 3);
    for w in workers {
        assert_eq!(w["phase"], "Ready");
        assert_eq!(w["pool"], "burst");
        assert!(w["expires_at"].is_string());
    }
    let name = workers[0]["name"].as_str().unwrap().to_owned();

    // Safety rules, with their exit codes.
    let out = run(&lab, &["destroy", "k8s-node1", "--force"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not managed by Tidepool"));
    let out = run(&lab, &["destroy", &name]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("drain it first or pass force"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &lab,
        &[
            "provision",
            "--pool",
            "burst",
            "--count",
            "11",
            "--ttl",
            "200h",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("count must be between 1 and 10, got 11"));
    let out = run(&lab, &["workers", "show", "nope"]).await;
    assert_eq!(out.status.code(), Some(4));

    let out = run(&lab, &["extend-ttl", &name, "2h"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&lab, &["drain", &name, "--wait"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let node = lab.kube.get("v1", "Node", "", &name).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    let out = run(&lab, &["destroy", &name, "--wait"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        lab.kube.get("v1", "Node", "", &name).is_err(),
        "node deleted"
    );
    assert_eq!(
        lab.pve
            .vms()
            .iter()
            .filter(|v| (1250..=1300).contains(&v.vmid))
            .count(),
        2,
        "exactly the two other VMs remain"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_lists_provisions_and_is_refused_over_stdio() {
    let lab = lab("mcp").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(&lab.files.tidepool_yaml)
        .arg("--kubeconfig")
        .arg(&lab.files.kubeconfig)
        .arg("mcp")
        .env("TIDEPOOL_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let calls = tokio::task::spawn_blocking(move || {
        let mut send = |msg: Value| {
            writeln!(stdin, "{msg}").unwrap();
            stdin.flush().unwrap();
        };
        let mut answers = Vec::new();
        send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cli-test", "version": "1"}}}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_workers", "arguments": {}}}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "destroy_worker", "arguments": {"worker_id": "k8s-master"}}}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "capacity_report", "arguments": {"pool": "burst"}}}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        send(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "provision_workers", "arguments": {"count": 1, "pool": "spot"}}}));
        answers.push(serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap());
        drop(stdin);
        answers
    })
    .await
    .unwrap();
    let _ = child.wait();
    assert_eq!(calls[0]["result"]["serverInfo"]["name"], "tidepool");
    let mut tools: Vec<&str> = calls[1]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    tools.sort_unstable();
    assert_eq!(
        tools,
        [
            "capacity_report",
            "cordon_worker",
            "destroy_worker",
            "drain_worker",
            "extend_ttl",
            "get_worker_details",
            "get_worker_health",
            "list_workers",
            "plan_scaling",
            "provision_workers",
            "run_doctor",
            "scale_up",
            "uncordon_worker"
        ]
    );
    let listed = &calls[2]["result"]["structuredContent"];
    assert!(listed["count"].as_u64().unwrap() >= 4, "{listed}");
    assert_eq!(calls[3]["result"]["isError"], true);
    assert!(
        calls[3]["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not managed by Tidepool")
    );
    // The capacity report, observed live through the lab's APIs.
    let capacity = &calls[4]["result"];
    assert_eq!(capacity["isError"], false, "{capacity}");
    let report = &capacity["structuredContent"];
    assert_home_lab_hosts(report);
    assert_eq!(report["pools"].as_array().unwrap().len(), 1);
    let large = &report["pools"][0]["sizes"][2];
    assert_eq!(large["size"], "large");
    assert_eq!(large["fits"], 3, "{large}");
    assert_eq!(large["binding"], "host-memory");

    assert_eq!(calls[5]["result"]["isError"], false, "{}", calls[5]);
    let name = calls[5]["result"]["structuredContent"]["workers"][0]["name"]
        .as_str()
        .unwrap();
    assert!(name.starts_with("spot-"));
    let claim = lab
        .kube
        .get("tidepool.dev/v1alpha1", "WorkerClaim", "", name)
        .unwrap();
    assert_eq!(claim["spec"]["requestedBy"], "mcp:cli-test");
    lab.shutdown().await;
}

/// An MCP session with `tidepool mcp` started in a minimal environment (no
/// `KUBECONFIG`, `HOME` an empty directory), with `args` before `mcp`: it
/// must answer `initialize` and `tools/list`, refuse a tool call with an
/// `unavailable` error naming `kubeconfig_at`, and, once the lab's
/// kubeconfig is copied there, serve the next call without a restart.
/// With `proxmox_down`, Proxmox refuses every request when the kubeconfig
/// appears, and the call in between must fail naming it. Returns the
/// answers to the calls: first the refusal, last the one served.
async fn mcp_without_a_kubeconfig(
    lab: &RunningLab,
    home: &std::path::Path,
    args: &[&str],
    kubeconfig_at: std::path::PathBuf,
    proxmox_down: bool,
) -> Vec<Value> {
    std::fs::create_dir_all(home).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(&lab.files.tidepool_yaml)
        .args(args)
        .arg("mcp")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home)
        .env("TIDEPOOL_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let source = lab.files.kubeconfig.clone();
    let faults = lab.faults.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut ask = |msg: Value| {
            writeln!(stdin, "{msg}").unwrap();
            stdin.flush().unwrap();
            if msg.get("id").is_none() {
                return Value::Null;
            }
            serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap()
        };
        let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "list_workers", "arguments": {}}});
        let mut answers = vec![
            ask(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "cli-test", "version": "1"}}}),
            ),
            ask(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
            ask(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})),
            ask(list.clone()),
        ];
        std::fs::create_dir_all(kubeconfig_at.parent().unwrap()).unwrap();
        std::fs::copy(&source, &kubeconfig_at).unwrap();
        if proxmox_down {
            faults.add_rule(tidepool_lab_sim::FaultRule {
                service: tidepool_lab_sim::Service::Proxmox,
                op: "*".into(),
                error_rate: 1.0,
                status: Some(401),
                message: Some("authentication failure".into()),
                latency_ms: 0,
                times: None,
            });
            answers.push(ask(list.clone()));
            faults.set_rules(Vec::new());
        }
        answers.push(ask(list));
        drop(stdin);
        answers
    })
    .await
    .unwrap();
    let _ = child.wait();
    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "tidepool");
    assert_eq!(
        answers[2]["result"]["tools"].as_array().unwrap().len(),
        tidepool_core::config::MCP_TOOLS.len(),
        "{}",
        answers[2]
    );
    let token = std::fs::read_to_string(lab.files.dir.join("proxmox-token")).unwrap();
    let secret = token.trim().rsplit('=').next().unwrap();
    let calls = answers[3..].to_vec();
    for refused in &calls[..calls.len() - 1] {
        let refused = &refused["result"];
        assert_eq!(refused["isError"], true, "{refused}");
        assert_eq!(
            refused["structuredContent"]["error"]["category"],
            "unavailable"
        );
        let text = refused["content"][0]["text"].as_str().unwrap();
        assert!(!text.contains(secret), "a secret in {text}");
    }
    calls
}

/// The text of a tool call's answer.
fn text_of(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_starts_without_a_kubeconfig_and_connects_once_one_appears() {
    let lab = lab("mcp-later").await;
    let scratch = lab.files.dir.join("mcp-later");

    // A kubeconfig named by the flag that does not exist yet, and Proxmox
    // refusing every request when it appears.
    let later = scratch.join("later").join("kubeconfig");
    let flag = later.to_str().unwrap().to_owned();
    let calls = mcp_without_a_kubeconfig(
        &lab,
        &scratch.join("home-flag"),
        &["--kubeconfig", &flag],
        later.clone(),
        true,
    )
    .await;
    let text = text_of(&calls[0]);
    assert!(
        text.starts_with("list_workers failed (unavailable): no kubeconfig found:"),
        "{text}"
    );
    assert!(text.contains(&flag), "{text}");
    let text = text_of(&calls[1]);
    assert!(
        text.contains("not connected to Proxmox: listing cluster VMs")
            && text.contains("authentication failure"),
        "{text}"
    );
    let served = &calls[2];
    assert_eq!(served["result"]["isError"], false, "{served}");
    let count = served["result"]["structuredContent"]["count"].as_u64();
    assert!(count.unwrap() >= 4, "{served}");

    // No flag, no KUBECONFIG: the default place, in an empty HOME.
    let home = scratch.join("home-default");
    let calls =
        mcp_without_a_kubeconfig(&lab, &home, &[], home.join(".kube").join("config"), false).await;
    let text = text_of(&calls[0]);
    assert!(text.contains("KUBECONFIG are not set"), "{text}");
    assert!(text.contains(".kube/config does not exist"), "{text}");
    assert!(text.contains("KUBERNETES_SERVICE_HOST"), "{text}");
    assert_eq!(calls[1]["result"]["isError"], false, "{}", calls[1]);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_scale_up_the_pending_pods_need_with_reasons() {
    let lab = lab("plan").await;
    lab.kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ci-runners", "namespace": "default"},
            "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "ci"}},
                "template": {"metadata": {"labels": {"app": "ci"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "runner", "image": "runner:1", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
        }))
        .unwrap();
    // Let the pods be unschedulable for longer than the pool's window (120 s simulated).
    tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
    let out = run(&lab, &["-o", "json", "plan"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["pending_pods"], 6, "{plan}");
    let action = &plan["actions"][0];
    assert_eq!(action["action"], "provision", "{plan}");
    assert_eq!(action["pool"], "burst");
    assert_eq!(action["reason"], "pending-pods");
    assert!(
        action["message"]
            .as_str()
            .unwrap()
            .contains("waited 120s or more")
    );
    // A dry run: nothing was created.
    assert!(
        lab.kube
            .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
            .unwrap()
            .is_empty()
    );
    lab.shutdown().await;
}

/// The hosts of the home-lab scenario as the capacity report sees them,
/// with the lab configuration's 4 GiB reserve, 512 MiB per-VM overhead and
/// 4× vCPU overcommit: pve-01 (192 GiB, 32 cores) runs truenas, k8s-master
/// and k8s-node1 (96 GiB, 24 vCPUs) and has the T4; pve-02 (128 GiB, 24
/// cores) runs pfsense, k8s-node2 and k8s-node3 (68 GiB, 18 vCPUs). Like
/// Proxmox's `cpuinfo.cpus`, the lab reports two threads per core, and
/// those are what the overcommit ratio multiplies.
fn assert_home_lab_hosts(report: &Value) {
    let pve01 = &report["hosts"][0];
    assert_eq!(pve01["name"], "pve-01", "{report}");
    assert_eq!(pve01["online"], true);
    assert_eq!(pve01["memory_total_mib"], 196_608);
    assert_eq!(pve01["memory_used_mib"], 49_152 + 16_384 + 32_768);
    assert_eq!(pve01["memory_free_mib"], 196_608 - 98_304 - 4096);
    assert_eq!(pve01["cores"], 64);
    assert_eq!(pve01["vcpus_left"], 64.0 * 4.0 - 24.0);
    assert_eq!(pve01["storage_free_gib"]["local-lvm"], 2600);
    assert_eq!(pve01["gpu_free"]["tesla-t4"], 1);
    let pve02 = &report["hosts"][1];
    assert_eq!(pve02["name"], "pve-02");
    assert_eq!(
        pve02["memory_free_mib"],
        131_072 - (4096 + 2 * 32_768) - 4096
    );
    assert_eq!(pve02["vcpus_left"], 48.0 * 4.0 - 18.0);
    assert_eq!(pve02["storage_free_gib"]["local-lvm"], 1200);
    assert_eq!(report["providers"][0]["vmids_left"], 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_reports_every_dimension_of_the_home_lab_and_what_binds_first() {
    let lab = lab("capacity").await;
    let out = run(&lab, &["-o", "json", "capacity"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_home_lab_hosts(&report);
    // The control plane and three permanent workers; no Tidepool worker yet.
    assert_eq!(report["cluster"]["nodes"], 4, "{}", report["cluster"]);
    assert_eq!(report["cluster"]["workers_on_the_way"], 0);

    let fit = |pool: &str, size: &str| {
        report["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .and_then(|p| {
                p["sizes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["size"] == size)
            })
            .unwrap_or_else(|| panic!("{pool}/{size} in {report}"))
            .clone()
    };
    // A small VM takes 8192 + 512 MiB: 10 on pve-01, 6 on pve-02, but
    // the burst pool stops at maxNodes 10.
    let small = fit("burst", "small");
    assert_eq!(small["hosts"][0]["fits"], 10);
    assert_eq!(small["hosts"][1]["fits"], 6);
    assert_eq!(small["on_hosts"], 16);
    assert_eq!(small["fits"], 10);
    assert_eq!(small["binding"], "limit-max-nodes");
    // A large one (33280 MiB): 2 + 1, memory runs out before the pool's
    // 96-core / 192 GiB ceilings (6 each).
    let large = fit("burst", "large");
    assert_eq!(large["within_limits"], 6);
    assert_eq!(large["fits"], 3);
    assert_eq!(large["binding"], "host-memory");
    assert_eq!(large["hosts"][0]["binding"], "host-memory");
    // One T4, one GPU worker allowed: the pool limit is named first.
    let gpu = fit("gpu", "gpu");
    assert_eq!(gpu["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(gpu["hosts"][0]["by_gpu"], 1);
    assert_eq!(gpu["fits"], 1);
    assert_eq!(gpu["binding"], "limit-max-nodes");
    let spot = fit("spot", "small");
    assert_eq!(
        (spot["fits"].clone(), spot["binding"].clone()),
        (json!(4), json!("limit-max-nodes"))
    );

    // What-if: one more small burst worker goes to pve-02 — pve-01 has
    // more memory but also the spare T4, kept for GPU workers — and
    // leaves 48640 MiB there.
    let add = report["what_if"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pool"] == "burst" && a["size"] == "small")
        .unwrap();
    assert_eq!(add["host"], "pve-02");
    assert_eq!(add["host_after"]["memory_free_mib"], 57_344 - 8704);
    assert_eq!(add["host_after"]["vcpus_left"], 192.0 - 18.0 - 4.0);
    assert_eq!(add["limits_after"]["nodes_left"], 9);
    assert_eq!(add["fits_after"], 9);
    // No Tidepool worker to remove yet.
    assert!(report["what_if"]["remove"].as_array().unwrap().is_empty());

    // The table names the binding dimension of every pool and size.
    let out = run(&lab, &["capacity"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("pve-01"), "{text}");
    assert!(text.contains("host-memory"), "{text}");
    assert!(text.contains("limit-max-nodes"), "{text}");
    assert!(text.contains("51 VMIDs left in 1250–1300"), "{text}");
    let out = run(&lab, &["capacity", "--pool", "brust"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no pool named `brust`"));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_requests_workers_for_waiting_pods_at_once_within_limits() {
    let lab = lab("scale-up").await;
    // Two pods: below the burst pool's threshold of five, so the
    // autoscaler alone would wait; an operator does not.
    for name in ["urgent-a", "urgent-b"] {
        lab.kube
            .apply(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Exists"}],
                    "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}
            }))
            .unwrap();
    }
    let out = run(&lab, &["scale-up", "--pool", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no pool named `nope`"),
        "{}",
        stderr(&out)
    );

    let mut done = None;
    for _ in 0..50 {
        let out = run(&lab, &["-o", "json", "scale-up", "--pool", "burst"]).await;
        let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
        if doc["plan"]["pending_pods"] == 2 {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            done = Some(doc);
            break;
        }
        // The lab's scheduler has not marked both pods yet.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let doc = done.expect("both pods seen as unschedulable");
    let created: Vec<String> = doc["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(!created.is_empty(), "{doc}");
    let action = &doc["plan"]["actions"][0];
    assert_eq!(action["reason"], "emergency", "{doc}");
    assert_eq!(action["pool"], "burst");
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    assert_eq!(claims.len(), created.len(), "{claims:?}");
    for c in &claims {
        assert!(created.contains(&c["metadata"]["name"].as_str().unwrap().to_owned()));
        assert!(
            c["spec"]["requestedBy"]
                .as_str()
                .unwrap()
                .starts_with("cli"),
            "{c}"
        );
        assert!(
            c["spec"]["host"].is_string(),
            "the planner's host goes with the claim: {c}"
        );
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_host_status_fails_capacity_and_plan_naming_the_host() {
    let lab = lab("bad-host-status").await;
    // pve-02 answers its status request with a body that is no status.
    lab.faults.add_rule(tidepool_lab_sim::FaultRule {
        service: tidepool_lab_sim::Service::Proxmox,
        op: "GET /nodes/pve-02/status".into(),
        error_rate: 1.0,
        status: Some(200),
        message: Some("not a status".into()),
        latency_ms: 0,
        times: None,
    });
    for command in ["capacity", "plan"] {
        let out = run(&lab, &["-o", "json", command]).await;
        assert_eq!(out.status.code(), Some(1), "{command}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("host pve-02"), "{command}: {err}");
        assert!(err.contains("cannot decode"), "{command}: {err}");
    }
    // A host that does not answer at all is only offline.
    lab.faults.set_rules(vec![tidepool_lab_sim::FaultRule {
        service: tidepool_lab_sim::Service::Proxmox,
        op: "GET /nodes/pve-02/status".into(),
        error_rate: 1.0,
        status: Some(595),
        message: Some("no route to host".into()),
        latency_ms: 0,
        times: None,
    }]);
    let out = run(&lab, &["-o", "json", "capacity"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["hosts"][1]["name"], "pve-02");
    assert_eq!(report["hosts"][1]["online"], false, "{report}");
}

/// The lab's clock as an in-process controller's.
#[derive(Debug)]
struct LabClock(tidepool_lab_sim::SimClock);

impl tidepool_controller::ports::Clock for LabClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::try_from(self.0.now()).unwrap()
    }

    fn sleep(&self, d: std::time::Duration) -> tidepool_controller::ports::Sleep {
        let clock = self.0.clone();
        Box::pin(async move { clock.sleep(d).await })
    }

    fn real(&self, d: std::time::Duration) -> std::time::Duration {
        self.0.real(d)
    }
}

fn lease(lab: &RunningLab) -> Option<Value> {
    lab.kube
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "tidepool-system",
            "tidepool-controller",
        )
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_wait_beside_a_running_controller_leaves_the_driving_to_it() {
    let lab = lab("wait-beside").await;
    let config = std::sync::Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    let options = tidepool_live::LiveOptions {
        config_dir: lab.files.dir.clone(),
        kubeconfig: Some(lab.files.kubeconfig.clone()),
        clock: std::sync::Arc::new(LabClock(lab.clock.clone())),
    };
    let exec = std::sync::Arc::new(
        tidepool_live::connect(config.clone(), &options)
            .await
            .unwrap(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = &config.server;
    let controller = tokio::spawn(tidepool_runtime::run(
        exec,
        tidepool_runtime::RunOptions {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            lease: Some(tidepool_runtime::leader::LeaseConfig {
                namespace: server.namespace.clone(),
                name: server.lease_name.clone(),
                identity: "controller".into(),
                duration: server.lease_duration,
            }),
            autoscale: false,
        },
        stop_rx,
        None,
    ));
    for _ in 0..400 {
        if lease(&lab).is_some_and(|l| l["spec"]["holderIdentity"] == "controller") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let out = run(
        &lab,
        &[
            "-o",
            "json",
            "provision",
            "--pool",
            "burst",
            "--count",
            "2",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("controller holds the controller's Lease: waiting for it"),
        "{}",
        stderr(&out)
    );
    let workers: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<String> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{workers}");
    let vms = lab.pve.vms();
    for name in &names {
        let owned =
            vms.iter()
                .filter(|v| {
                    v.description.as_deref().and_then(|d| {
                        tidepool_controller::executor::owner_from_description(d, v.vmid)
                    }) == Some(name.as_str())
                })
                .count();
        assert_eq!(owned, 1, "{name}: one VM, cloned by one executor");
    }
    // The controller kept the Lease throughout: the command never drove.
    let held = lease(&lab).unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "controller", "{held}");
    assert_eq!(held["spec"]["leaseTransitions"], 0, "{held}");
    stop.send(true).unwrap();
    controller.await.unwrap().unwrap();
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_with_an_error_when_its_health_port_is_taken_and_never_takes_the_lease() {
    let lab = lab("port-taken").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(&lab.files.tidepool_yaml)
        .unwrap()
        .replace(
            "metricsAddr: 127.0.0.1:9464",
            &format!("metricsAddr: 127.0.0.1:{port}"),
        );
    let config = lab.files.dir.join("tidepool-port-taken.yaml");
    std::fs::write(&config, yaml).unwrap();
    let kubeconfig = lab.files.kubeconfig.clone();
    let origin = lab.clock.origin_unix_ms();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--time-scale", SCALE])
        .args(["--time-origin", &origin.to_string()])
        .arg("run")
        .env("TIDEPOOL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It ends on its own (a bound, not a measurement: a controller that
    // cannot serve its health endpoints must not linger).
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("`tidepool run` kept running with its health port taken");
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "listening for /healthz, /readyz and /metrics on 127.0.0.1:{port}"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        lease(&lab).is_none_or(|l| l["spec"]["holderIdentity"].is_null()),
        "{:?}",
        lease(&lab)
    );
    drop(taken);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_lists_the_vm_of_a_claim_deleted_without_its_finalizer() {
    let lab = lab("orphans").await;
    let out = run(&lab, &["orphans"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "No orphan VMs.\n");

    let out = run(
        &lab,
        &[
            "provision",
            "--pool",
            "burst",
            "--size",
            "small",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let claims = lab
        .kube
        .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
        .unwrap();
    assert_eq!(claims.len(), 1);
    let name = claims[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let vmid = claims[0]["status"]["vm"]["vmid"].as_u64().unwrap();
    lab.kube
        .merge_patch(
            "tidepool.dev/v1alpha1",
            "WorkerClaim",
            "",
            &name,
            &json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
    lab.kube
        .delete("tidepool.dev/v1alpha1", "WorkerClaim", "", &name)
        .unwrap();

    let out = run(&lab, &["orphans", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["claim"], name.as_str());
    assert_eq!(rows[0]["vmid"], vmid);
    assert_eq!(rows[0]["running"], true);

    let out = run(&lab, &["orphans"]).await;
    let table = stdout(&out);
    assert!(table.starts_with("VMID"), "{table}");
    assert!(table.contains(&name), "{table}");
    // The permanent workers and templates in the lab carry no marker.
    assert_eq!(table.lines().count(), 2, "{table}");
    lab.shutdown().await;
}
