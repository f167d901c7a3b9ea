//! Fidelity tests with a client we did not write: `kubectl` against the
//! emulator served on loopback.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{cluster, eventually, node, pods_on, running};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_nodes_as_json_and_labels_cordons_and_uncordons_them() {
    let c = cluster("label-cordon").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.register_node(&node("worker-2")).unwrap();

    let out = c.kubectl_ok(&["get", "nodes", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["worker-1", "worker-2"]);

    c.kubectl_ok(&["label", "node", "worker-1", "tidepool.dev/pool=gpu"])
        .await;
    let n = c.lab.get("v1", "Node", "", "worker-1").unwrap();
    assert_eq!(n["metadata"]["labels"]["tidepool.dev/pool"], "gpu");

    c.kubectl_ok(&["cordon", "worker-1"]).await;
    let n = c.lab.get("v1", "Node", "", "worker-1").unwrap();
    assert_eq!(n["spec"]["unschedulable"], true);
    let table = c.kubectl_ok(&["get", "node", "worker-1"]).await;
    assert!(table.contains("Ready,SchedulingDisabled"), "{table}");

    c.kubectl_ok(&["uncordon", "worker-1"]).await;
    let n = c.lab.get("v1", "Node", "", "worker-1").unwrap();
    assert_ne!(n["spec"]["unschedulable"], true);

    let missing = c.kubectl(&["get", "node", "nope"]).output().await.unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nodes \"nope\" not found"));
}

fn web_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                },
            },
        },
    })
}

fn log_daemonset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "logs", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "logs"}},
            "template": {"metadata": {"labels": {"app": "logs"}},
                         "spec": {"containers": [{"name": "logs", "image": "fluent-bit"}]}},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_retries_while_a_disruption_budget_blocks_and_finishes_once_it_allows() {
    let c = cluster("drain").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.create(web_deployment()).unwrap();
    c.lab.create(log_daemonset()).unwrap();
    c.lab
        .create(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
        )
        .unwrap();
    eventually(
        20,
        "both web pods and the daemon pod run on worker-1",
        || {
            running(&pods_on(&c.lab, "worker-1", "app=web")) == 2
                && running(&pods_on(&c.lab, "worker-1", "app=logs")) == 1
        },
    )
    .await;
    eventually(10, "the budget allows no disruption", || {
        c.lab
            .get("policy/v1", "PodDisruptionBudget", "default", "web")
            .unwrap()["status"]["disruptionsAllowed"]
            == 0
    })
    .await;
    c.lab.register_node(&node("worker-2")).unwrap();

    let log_path = c.dir().join("drain.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut drain = c
        .kubectl(&[
            "drain",
            "worker-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=90s",
        ])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    eventually(30, "drain reports the budget blocking it", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("Cannot evict pod as it would violate the pod's disruption budget.")
    })
    .await;
    assert!(
        drain.try_wait().unwrap().is_none(),
        "drain must keep retrying while blocked"
    );

    c.lab
        .merge_patch(
            "policy/v1",
            "PodDisruptionBudget",
            "default",
            "web",
            &json!({"spec": {"minAvailable": 1}}),
        )
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), drain.wait())
        .await
        .unwrap()
        .unwrap();
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "drain failed:\n{output}");
    assert!(output.contains("evicted"), "{output}");
    assert!(output.contains("node/worker-1 drained"), "{output}");

    assert!(pods_on(&c.lab, "worker-1", "app=web").is_empty());
    assert_eq!(
        pods_on(&c.lab, "worker-1", "app=logs").len(),
        1,
        "daemon pods are ignored, not evicted"
    );
    eventually(
        20,
        "the ReplicaSet recreated both web pods on worker-2",
        || running(&pods_on(&c.lab, "worker-2", "app=web")) == 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_returns_once_a_node_turns_ready() {
    let c = cluster("wait").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.set_node_ready("worker-1", false).unwrap();
    let waiting = c
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "node/worker-1",
            "--timeout=30s",
        ])
        .output();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "wait must block while the node is not ready"
    );
    c.lab.set_node_ready("worker-1", true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node/worker-1 condition met"));
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: workerclaims.tidepool.dev
spec:
  group: tidepool.dev
  scope: Cluster
  names:
    plural: workerclaims
    singular: workerclaim
    kind: WorkerClaim
    shortNames: [wc]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [pool]
            properties:
              pool: {type: string}
              size: {type: string, enum: [small, large], default: small}
              ttlSeconds: {type: integer, default: 3600}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const CLAIM: &str = r#"
apiVersion: tidepool.dev/v1alpha1
kind: WorkerClaim
metadata:
  name: burst-1
  finalizers: [tidepool.dev/vm]
spec:
  pool: burst
  size: large
  typo: dropped
"#;

const BAD_CLAIM: &str = r#"
apiVersion: tidepool.dev/v1alpha1
kind: WorkerClaim
metadata:
  name: burst-2
spec:
  size: huge
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_crd_and_then_an_instance_that_keeps_its_finalizer() {
    let c = cluster("crd").await;
    let crd = c.write("crd.yaml", CRD);
    let out = c.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/workerclaims.tidepool.dev created"
        ),
        "{out}"
    );
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/workerclaims.tidepool.dev",
        "--timeout=10s",
    ])
    .await;

    let claim = c.write("claim.yaml", CLAIM);
    // kubectl asks for strict field validation: the typo is refused, as
    // the real API server refuses it, before any schema validation.
    let strict = c
        .kubectl(&["apply", "-f", claim.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!strict.status.success());
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(
        stderr.contains(
            "WorkerClaim in version \"v1alpha1\" cannot be handled as a WorkerClaim: strict decoding error: unknown field \"spec.typo\""
        ),
        "{stderr}"
    );
    // Without it the field is pruned.
    let lax = ["apply", "--validate=false", "-f", claim.to_str().unwrap()];
    let out = c.kubectl_ok(&lax).await;
    assert!(
        out.contains("workerclaim.tidepool.dev/burst-1 created"),
        "{out}"
    );
    let again = c.kubectl_ok(&lax).await;
    assert!(
        again.contains("unchanged") || again.contains("configured"),
        "{again}"
    );

    let got: Value =
        serde_json::from_str(&c.kubectl_ok(&["get", "wc", "burst-1", "-o", "json"]).await).unwrap();
    assert_eq!(got["spec"]["pool"], "burst");
    assert_eq!(
        got["spec"]["ttlSeconds"], 3600,
        "schema defaults are filled in"
    );
    assert!(got["spec"]["typo"].is_null(), "unknown fields are pruned");
    assert_eq!(got["metadata"]["generation"], 1);

    let bad = c.write("bad.yaml", BAD_CLAIM);
    let refused = c
        .kubectl(&["apply", "-f", bad.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("The WorkerClaim \"burst-2\" is invalid"),
        "{stderr}"
    );
    assert!(stderr.contains("spec.pool: Required value"), "{stderr}");

    c.kubectl_ok(&["delete", "workerclaim", "burst-1", "--wait=false"])
        .await;
    let marked = c
        .lab
        .get("tidepool.dev/v1alpha1", "WorkerClaim", "", "burst-1")
        .unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "a finalizer keeps the claim"
    );
    c.kubectl_ok(&[
        "patch",
        "workerclaim",
        "burst-1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    let gone = c
        .lab
        .get("tidepool.dev/v1alpha1", "WorkerClaim", "", "burst-1")
        .unwrap_err();
    assert_eq!(gone.code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pages_through_a_long_list_with_continue_tokens() {
    let c = cluster("paging").await;
    for i in 0..1234 {
        c.lab
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:04}"), "namespace": "default", "labels": {"even": (i % 2 == 0).to_string()}}}))
            .unwrap();
    }
    let names = c
        .kubectl_ok(&["get", "configmaps", "-o", "name", "--chunk-size=100"])
        .await;
    assert_eq!(names.lines().count(), 1234);
    let even = c
        .kubectl_ok(&["get", "configmaps", "-o", "name", "-l", "even in (true)"])
        .await;
    assert_eq!(even.lines().count(), 617);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_dry_run_changes_nothing() {
    let c = cluster("dry-run").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    let out = c
        .kubectl_ok(&["cordon", "worker-1", "--dry-run=server"])
        .await;
    assert!(out.contains("cordoned (server dry run)"), "{out}");
    assert_ne!(
        c.lab.get("v1", "Node", "", "worker-1").unwrap()["spec"]["unschedulable"],
        true
    );
    c.kubectl_ok(&["delete", "node", "worker-1", "--dry-run=server"])
        .await;
    assert!(c.lab.get("v1", "Node", "", "worker-1").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_subcommands_that_send_protobuf_and_kubectl_scale_work() {
    let c = cluster("create-scale").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.kubectl_ok(&["create", "namespace", "apps"]).await;
    c.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "apps",
        "--from-literal=mode=burst",
    ])
    .await;
    c.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "apps",
        "--image=nginx",
        "--replicas=1",
        "--port=80",
    ])
    .await;
    c.kubectl_ok(&[
        "create",
        "poddisruptionbudget",
        "web",
        "-n",
        "apps",
        "--selector=app=web",
        "--min-available=1",
    ])
    .await;
    let cm = c.lab.get("v1", "ConfigMap", "apps", "settings").unwrap();
    assert_eq!(cm["data"]["mode"], "burst");
    let d = c.lab.get("apps/v1", "Deployment", "apps", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );

    c.kubectl_ok(&["scale", "deployment", "web", "-n", "apps", "--replicas=3"])
        .await;
    eventually(20, "three web pods run", || {
        running(&pods_on(&c.lab, "worker-1", "app=web")) == 3
    })
    .await;
    c.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "apps",
        "--timeout=20s",
    ])
    .await;
    let pdb = c
        .lab
        .get("policy/v1", "PodDisruptionBudget", "apps", "web")
        .unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}
