//! The disruption controller (PodDisruptionBudget status from matching
//! Running+Ready pods) and the eviction subresource that consults it.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResKey;
use crate::selectors::LabelSelector;
use crate::store::{DeleteOptions, Part, Store};

/// Errors of this module are API errors.
pub type DisruptionError = ApiError;

fn pdbs() -> ResKey {
    ResKey::new("policy", "poddisruptionbudgets")
}

fn pods() -> ResKey {
    ResKey::new("", "pods")
}

/// Whether a pod counts as healthy for a budget: Running, Ready, not terminating.
pub fn pod_healthy(pod: &Value) -> bool {
    !meta::is_terminating(pod)
        && pod["status"]["phase"] == "Running"
        && meta::condition_true(pod, "Ready")
}

/// Resolves an int-or-percent against `total` (percentages round up).
fn scaled(value: &Value, total: i64) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let pct: i64 = value.as_str()?.strip_suffix('%')?.trim().parse().ok()?;
    Some((pct * total + 99) / 100)
}

/// The status a budget should have given the pods of its namespace.
pub fn compute_status(pdb: &Value, pods: &[Arc<Value>]) -> Value {
    let selector = LabelSelector::from_object(&pdb["spec"]["selector"]).unwrap_or_default();
    let has_selector = pdb["spec"]["selector"].is_object();
    let matching: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| meta::namespace(p) == meta::namespace(pdb))
        .filter(|p| has_selector && selector.matches_object(p))
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    let expected = i64::try_from(matching.len()).unwrap_or(i64::MAX);
    let healthy =
        i64::try_from(matching.iter().filter(|p| pod_healthy(p)).count()).unwrap_or(i64::MAX);
    let desired = if let Some(min) = scaled(&pdb["spec"]["minAvailable"], expected) {
        min
    } else if let Some(max) = scaled(&pdb["spec"]["maxUnavailable"], expected) {
        (expected - max).max(0)
    } else {
        expected
    };
    let allowed = (healthy - desired).max(0);
    let mut status = json!({
        "observedGeneration": pdb["metadata"]["generation"],
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
    });
    let (cond, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let previous = meta::condition(pdb, "DisruptionAllowed");
    let since = previous
        .filter(|c| c["status"] == cond)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(Value::Null);
    status["conditions"] = json!([{"type": "DisruptionAllowed", "status": cond, "reason": reason,
        "message": "", "observedGeneration": pdb["metadata"]["generation"], "lastTransitionTime": since}]);
    status
}

/// Brings every budget's status up to date (writes only what changed).
pub fn reconcile(store: &Store) {
    let (budgets, _) = store.list(&pdbs(), "");
    if budgets.is_empty() {
        return;
    }
    let (all_pods, _) = store.list(&pods(), "");
    let now = meta::format_time(store.clock().now());
    for pdb in budgets {
        let mut status = compute_status(&pdb, &all_pods);
        if status["conditions"][0]["lastTransitionTime"].is_null() {
            status["conditions"][0]["lastTransitionTime"] = json!(now);
        }
        if pdb["status"] == status {
            continue;
        }
        // A budget deleted meanwhile is fine.
        let _ = store.modify(
            &pdbs(),
            meta::namespace(&pdb),
            meta::name(&pdb),
            Part::Status,
            |o| {
                o["status"] = status;
                Ok(())
            },
        );
    }
}

/// Handles `POST pods/{name}/eviction`.
///
/// # Errors
/// `NotFound` for a missing pod; `TooManyRequests` (429, cause
/// `DisruptionBudget`) while a matching budget allows no disruption;
/// `InternalError` when more than one budget matches, as the real server.
pub fn evict(store: &Store, namespace: &str, name: &str, eviction: &Value) -> Result<(), ApiError> {
    let _serialised = store.eviction_guard();
    let pod = store.get(&pods(), namespace, name)?;
    let opts = DeleteOptions {
        grace_period_seconds: eviction["deleteOptions"]["gracePeriodSeconds"].as_i64(),
        uid: eviction["deleteOptions"]["preconditions"]["uid"]
            .as_str()
            .map(str::to_owned),
        resource_version: eviction["deleteOptions"]["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
    };
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    );
    if meta::is_terminating(&pod) || terminal {
        store.delete(&pods(), namespace, name, &opts)?;
        return Ok(());
    }
    let (budgets, _) = store.list(&pdbs(), namespace);
    let matching: Vec<&Arc<Value>> = budgets
        .iter()
        .filter(|b| {
            b["spec"]["selector"].is_object()
                && LabelSelector::from_object(&b["spec"]["selector"])
                    .is_ok_and(|s| s.matches_object(&pod))
        })
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    if let Some(pdb) = matching.first() {
        let (ns_pods, _) = store.list(&pods(), namespace);
        let status = compute_status(pdb, &ns_pods);
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        let healthy = status["currentHealthy"].as_i64().unwrap_or(0);
        let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
        let pod_is_healthy = pod_healthy(&pod);
        let blocked = if pod_is_healthy {
            allowed <= 0
        } else {
            healthy < desired
        };
        if blocked {
            return Err(ApiError::disruption_budget(format!(
                "The disruption budget {} needs {desired} healthy pods and has {healthy} currently",
                meta::name(pdb)
            )));
        }
    }
    store.delete(&pods(), namespace, name, &opts)?;
    Ok(())
}
