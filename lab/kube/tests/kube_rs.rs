//! Fidelity test with the client Tidepool itself uses: kube-rs (typed
//! APIs, patches, eviction, server-side apply and the runtime watcher).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{cluster, eventually, node};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;

async fn client(c: &common::Cluster) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_patches_applies_and_evicts() {
    let c = cluster("kube-rs").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    let client = client(&c).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels("kubernetes.io/hostname=worker-1"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let cordoned = nodes
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));
    nodes
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let applied = pods
        .patch(
            "solo",
            &PatchParams::apply("tidepool").force(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.name.as_deref(), Some("solo"));
    // Update conflicts on an object no controller touches.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let cm = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let stale = {
        let mut m = cm.clone();
        m.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
        m
    };
    maps.replace("cfg", &PostParams::default(), &stale)
        .await
        .unwrap();
    let conflict = maps
        .replace("cfg", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref s) if s.code == 409),
        "{conflict:?}"
    );

    eventually(20, "the pod runs", || {
        c.lab.get("v1", "Pod", "default", "solo").unwrap()["status"]["phase"] == "Running"
    })
    .await;
    pods.evict("solo", &EvictParams::default()).await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match pods.get_opt("solo").await.unwrap() {
                None => break,
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the evicted pod terminates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_rs_watcher_sees_a_pod_scheduled_and_started() {
    let c = cluster("kube-rs-watch").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut stream = watcher(pods.clone(), watcher::Config::default().any_semantic())
        .applied_objects()
        .boxed();
    // A second watcher uses streaming lists (sendInitialEvents + bookmarks).
    let mut streaming = watcher(pods.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    c.lab
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
    let running = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(pod) = stream.try_next().await.unwrap() {
            let status = pod.status.unwrap_or_default();
            if status.phase.as_deref() == Some("Running") {
                return pod.spec.unwrap_or_default().node_name;
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(running.as_deref(), Some("worker-1"));
    let seen = tokio::time::timeout(Duration::from_secs(20), streaming.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_through_events_v1_show_in_kubectl_get_events() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let c = cluster("kube-rs-events").await;
    c.lab.register_node(&node("worker-1")).unwrap();
    let client = client(&c).await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tidepool".into(),
            instance: Some("tidepool-0".into()),
        },
    );
    let node_ref = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("worker-1".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Draining".into(),
        note: Some("draining burst worker".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&event, &node_ref).await.unwrap();
    // A repeat becomes a series on the same Event (a merge patch through events.k8s.io).
    recorder.publish(&event, &node_ref).await.unwrap();

    let out = c.kubectl_ok(&["get", "events", "-A", "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{out}");
    assert_eq!(items[0]["message"], "draining burst worker");
    assert_eq!(items[0]["involvedObject"]["name"], "worker-1");
    assert_eq!(items[0]["reportingComponent"], "tidepool");
    let table = c.kubectl_ok(&["get", "events", "-A"]).await;
    assert!(
        table.contains("node/worker-1") && table.contains("Draining"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selected_watch_reports_an_object_leaving_the_selection_as_deleted() {
    use kube::api::{WatchEvent, WatchParams};
    let c = cluster("kube-rs-selector").await;
    let client = client(&c).await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    let rv = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = maps
        .watch(
            &WatchParams::default().labels("team=infra").timeout(10),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    c.lab
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "labels": {"team": "apps"}}}))
        .unwrap();
    for labels in [
        json!({"team": "infra"}),
        json!({"team": "infra", "x": "1"}),
        json!({"team": "apps"}),
    ] {
        c.lab
            .merge_patch(
                "v1",
                "ConfigMap",
                "default",
                "a",
                &json!({"metadata": {"labels": labels}}),
            )
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(_)) => seen.push("ADDED"),
            Some(WatchEvent::Modified(_)) => seen.push("MODIFIED"),
            Some(WatchEvent::Deleted(_)) => seen.push("DELETED"),
            Some(WatchEvent::Bookmark(_)) => {}
            Some(WatchEvent::Error(e)) => panic!("watch error {e:?}"),
            None => break,
        }
    }
    assert_eq!(seen, vec!["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_allows_bookmarks_receives_them_with_the_current_resource_version() {
    use kube::api::{WatchEvent, WatchParams};
    let options = tidepool_lab_kube::KubeOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let c = common::cluster_with("kube-rs-bookmarks", options).await;
    let client = client(&c).await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "default");
    let rv = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = maps
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let created = c
        .lab
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "default"}}))
        .unwrap();
    let created_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let bookmark = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(WatchEvent::Bookmark(b)) = events.try_next().await.unwrap()
                && b.metadata.resource_version == created_rv
            {
                return b;
            }
        }
    })
    .await
    .expect("a bookmark carrying the version of the last change");
    assert_eq!(bookmark.types.kind, "ConfigMap");
}
