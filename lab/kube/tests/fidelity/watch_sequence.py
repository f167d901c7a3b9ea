"""Fidelity check with the official Python `kubernetes` client.

Lists ConfigMaps, then creates, patches and deletes one, and watches from
the list's resourceVersion: the watch must replay exactly ADDED, MODIFIED,
DELETED for it. Then checks that a watch from a resourceVersion older than
the server's retained history fails with 410 Gone (the emulator under test
keeps a short history). Exits non-zero on any mismatch.
"""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main() -> int:
    config.load_kube_config()
    v1 = client.CoreV1Api()
    ns = "default"

    listed = v1.list_namespaced_config_map(ns)
    start_rv = listed.metadata.resource_version

    v1.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"a": "1"})
    )
    v1.patch_namespaced_config_map("watched", ns, {"data": {"a": "2"}})
    v1.delete_namespaced_config_map("watched", ns)

    seen = []
    w = watch.Watch()
    for event in w.stream(
        v1.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=10
    ):
        obj = event["object"]
        if obj.metadata.name != "watched":
            continue
        seen.append((event["type"], obj.data.get("a") if obj.data else None))
        if event["type"] == "DELETED":
            w.stop()
    expected = [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
    if seen != expected:
        print(f"watch sequence {seen} != {expected}", file=sys.stderr)
        return 1

    # Push the old version out of the retained history, then resume from it.
    for i in range(40):
        v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"churn-{i}")))
    try:
        for _ in watch.Watch().stream(
            v1.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=5
        ):
            pass
    except ApiException as e:
        if e.status != 410:
            print(f"expected 410 Gone, got {e.status}: {e.reason}", file=sys.stderr)
            return 1
    else:
        print("a watch from a compacted resourceVersion did not fail with 410", file=sys.stderr)
        return 1

    print("ok: ADDED, MODIFIED, DELETED seen in order; stale watch got 410 Gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
