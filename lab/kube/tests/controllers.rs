//! The emulator's scheduler, kubelets and controllers, driven through the
//! in-process API, plus fault injection seen over HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{cluster, eventually, node, pods_on, running};
use serde_json::{Value, json};
use tidepool_lab_kube::Taint;
use tidepool_lab_sim::{FaultRule, Service};

fn pod(name: &str, requests: Value, extra_spec: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests, "limits": {}}}]}});
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    p
}

fn scheduled_condition(c: &common::Cluster, name: &str) -> Value {
    let p = c.lab.get("v1", "Pod", "default", name).unwrap();
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_is_marked_unschedulable_with_the_schedulers_message() {
    let c = cluster("unschedulable").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab
        .create(pod("huge", json!({"cpu": "8"}), json!({})))
        .unwrap();
    eventually(10, "the scheduler gives up on the pod", || {
        scheduled_condition(&c, "huge")["status"] == "False"
    })
    .await;
    let cond = scheduled_condition(&c, "huge");
    assert_eq!(cond["reason"], "Unschedulable");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .starts_with("0/1 nodes are available: 1 Insufficient cpu."),
        "{cond}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_pod_lands_on_the_tainted_gpu_node_it_tolerates_until_the_gpu_is_taken() {
    let c = cluster("gpu").await;
    c.lab.register_node(&node("cpu-1")).unwrap();
    let mut gpu = node("gpu-1");
    gpu.extended = BTreeMap::from([("nvidia.com/gpu".to_owned(), 1)]);
    gpu.labels = BTreeMap::from([("tidepool.dev/size".to_owned(), "gpu".to_owned())]);
    gpu.taints = vec![Taint {
        key: "nvidia.com/gpu".into(),
        value: "true".into(),
        effect: "NoSchedule".into(),
    }];
    c.lab.register_node(&gpu).unwrap();
    let gpu_spec = json!({
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "tidepool.dev/size", "operator": "In", "values": ["gpu"]}]}]}}},
    });
    c.lab
        .create(pod(
            "train-1",
            json!({"nvidia.com/gpu": "1"}),
            gpu_spec.clone(),
        ))
        .unwrap();
    c.lab
        .create(pod("train-2", json!({"nvidia.com/gpu": "1"}), gpu_spec))
        .unwrap();
    c.lab
        .create(pod("plain", json!({"cpu": "100m"}), json!({})))
        .unwrap();
    eventually(
        10,
        "one training pod is bound and the other refused",
        || {
            let bound: Vec<String> = ["train-1", "train-2"]
                .iter()
                .filter_map(|n| {
                    c.lab.get("v1", "Pod", "default", n).unwrap()["spec"]["nodeName"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            // The plain pod, created last, is bound in the same passes.
            bound == vec!["gpu-1".to_owned()]
                && scheduled_condition(&c, "train-2")["status"] == "False"
                && !c.lab.get("v1", "Pod", "default", "plain").unwrap()["spec"]["nodeName"]
                    .is_null()
        },
    )
    .await;
    let msg = scheduled_condition(&c, "train-2")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("1 Insufficient nvidia.com/gpu"), "{msg}");
    assert!(
        msg.contains("1 node(s) didn't match Pod's node affinity/selector"),
        "{msg}"
    );
    assert_eq!(
        c.lab.get("v1", "Pod", "default", "plain").unwrap()["spec"]["nodeName"],
        "cpu-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_recreates_a_deleted_pod_and_garbage_collection_follows_its_deployment() {
    let c = cluster("replicaset").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "api"}]}}}}))
        .unwrap();
    eventually(10, "two api pods run", || {
        running(&pods_on(&c.lab, "worker-1", "app=api")) == 2
    })
    .await;
    let victim = pods_on(&c.lab, "worker-1", "app=api")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    c.lab.delete("v1", "Pod", "default", &victim).unwrap();
    eventually(10, "a replacement runs", || {
        let pods = pods_on(&c.lab, "worker-1", "app=api");
        running(&pods) == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str())
    })
    .await;
    eventually(10, "the deployment reports two ready replicas", || {
        c.lab
            .get("apps/v1", "Deployment", "default", "api")
            .unwrap()["status"]["readyReplicas"]
            == 2
    })
    .await;

    c.lab
        .delete("apps/v1", "Deployment", "default", "api")
        .unwrap();
    eventually(15, "its ReplicaSet and pods are collected", || {
        c.lab
            .list("apps/v1", "ReplicaSet", "default", "")
            .unwrap()
            .is_empty()
            && c.lab
                .list("v1", "Pod", "default", "app=api")
                .unwrap()
                .is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_node_whose_kubelet_stops_are_marked_not_ready_and_the_node_is_tainted() {
    let c = cluster("not-ready").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.create(pod("p", json!({}), json!({}))).unwrap();
    eventually(10, "the pod is ready", || {
        let p = c.lab.get("v1", "Pod", "default", "p").unwrap();
        p["status"]["phase"] == "Running"
    })
    .await;
    c.lab.set_node_ready("worker-1", false).unwrap();
    eventually(
        10,
        "the pod is marked not ready and the node tainted unreachable",
        || {
            let p = c.lab.get("v1", "Pod", "default", "p").unwrap();
            let n = c.lab.get("v1", "Node", "", "worker-1").unwrap();
            let not_ready = p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "False");
            let tainted = n["spec"]["taints"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable")
            });
            not_ready && tainted
        },
    )
    .await;
    let n = c.lab.get("v1", "Node", "", "worker-1").unwrap();
    let ready = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_fault_answers_with_a_status_of_its_code() {
    let c = cluster("faults").await;
    c.faults.add_rule(FaultRule {
        service: Service::Kubernetes,
        op: "list nodes".into(),
        error_rate: 1.0,
        status: Some(503),
        message: Some("etcdserver: leader changed".into()),
        latency_ms: 0,
        times: Some(1),
    });
    let out = c
        .kubectl(&["get", "nodes", "-o", "json", "-v=0"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kubectl retries discovery but not the list; either way the message surfaces or the retry succeeds.
    assert!(
        !out.status.success() && stderr.contains("etcdserver: leader changed")
            || out.status.success(),
        "{stderr}"
    );
    let again = c.kubectl_ok(&["get", "nodes", "-o", "json"]).await;
    assert!(again.contains("\"items\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_an_unreachable_node_is_evicted_after_its_toleration_and_replaced_elsewhere() {
    let c = cluster("no-execute").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab
        .create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "svc", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "svc"}},
                "template": {"metadata": {"labels": {"app": "svc"}}, "spec": {
                    "containers": [{"name": "c", "image": "svc"}],
                    "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                     "effect": "NoExecute", "tolerationSeconds": 5}]}}}}))
        .unwrap();
    eventually(10, "the pod runs on worker-1", || {
        running(&pods_on(&c.lab, "worker-1", "app=svc")) == 1
    })
    .await;
    let first = c.lab.list("v1", "Pod", "default", "app=svc").unwrap()[0].clone();
    let defaults = first["spec"]["tolerations"].as_array().unwrap();
    assert!(
        defaults
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["tolerationSeconds"] == 300),
        "the DefaultTolerationSeconds admission adds a not-ready toleration: {defaults:?}"
    );
    c.lab.register_node(&node("worker-2")).unwrap();
    c.lab.set_node_ready("worker-1", false).unwrap();
    eventually(20, "a replacement runs on worker-2", || {
        running(&pods_on(&c.lab, "worker-2", "app=svc")) == 1
    })
    .await;
    let old = c
        .lab
        .get(
            "v1",
            "Pod",
            "default",
            first["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    assert!(
        old["metadata"]["deletionTimestamp"].is_string(),
        "the old pod stays Terminating on the dead node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_start_fault_leaves_the_pod_waiting_until_a_retry_succeeds() {
    let c = cluster("start-fault").await;
    c.faults.add_rule(FaultRule {
        service: Service::Kubernetes,
        op: "kubelet start pods".into(),
        error_rate: 1.0,
        status: None,
        message: Some("failed to pull image \"busybox\": registry unavailable".into()),
        latency_ms: 0,
        times: Some(1),
    });
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.create(pod("p", json!({}), json!({}))).unwrap();
    eventually(10, "the container waits with ErrImagePull", || {
        let p = c.lab.get("v1", "Pod", "default", "p").unwrap();
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    eventually(10, "the retry starts it", || {
        c.lab.get("v1", "Pod", "default", "p").unwrap()["status"]["phase"] == "Running"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_pod_anti_affinity_spreads_replicas_and_leaves_the_extra_one_pending() {
    let c = cluster("anti-affinity").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    c.lab.register_node(&node("worker-2")).unwrap();
    c.lab
        .create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                    "containers": [{"name": "c", "image": "db"}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}}}))
        .unwrap();
    eventually(10, "one replica runs per node and the third waits", || {
        let pods = c.lab.list("v1", "Pod", "default", "app=db").unwrap();
        let waiting = pods.iter().filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            })
        });
        running(&pods_on(&c.lab, "worker-1", "app=db")) == 1
            && running(&pods_on(&c.lab, "worker-2", "app=db")) == 1
            && waiting.count() == 1
    })
    .await;
    let pods = c.lab.list("v1", "Pod", "default", "app=db").unwrap();
    let message = pods
        .iter()
        .flat_map(|p| {
            p["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["reason"] == "Unschedulable")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("2 node(s) didn't match pod anti-affinity rules"),
        "{message}"
    );
}
