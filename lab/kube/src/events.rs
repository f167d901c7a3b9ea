//! One Event storage, two APIs: events written through `events.k8s.io/v1`
//! are stored as `core/v1` Events (as the real server does), so
//! `kubectl get events` shows what controllers record with kube-rs's
//! recorder, and either API reads the other's writes.

use serde_json::{Map, Value, json};

/// Errors of this module (conversion cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum EventConversionError {}

/// Field pairs: (core/v1 name, events.k8s.io/v1 name).
const RENAMES: [(&str, &str); 8] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingInstance", "reportingInstance"),
];

const SHARED: [&str; 7] = [
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "type",
];

fn convert(obj: &Value, api_version: &str, to_new: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    for k in SHARED {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    for (core, new) in RENAMES {
        let (from, to) = if to_new { (core, new) } else { (new, core) };
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// A stored core/v1 Event as an events.k8s.io/v1 Event.
pub fn to_events_v1(core: &Value) -> Value {
    convert(core, "events.k8s.io/v1", true)
}

/// An events.k8s.io/v1 Event as the core/v1 Event that is stored.
pub fn to_core(event: Value) -> Value {
    let mut core = convert(&event, "v1", false);
    if core["source"].is_null()
        && let Some(controller) = event["reportingController"].as_str()
    {
        core["source"] = json!({"component": controller});
    }
    core
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_v1_event_round_trips_through_core_storage() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "x.1", "namespace": "default"},
            "regarding": {"kind": "Node", "name": "n"}, "note": "drained", "reason": "Drained",
            "type": "Normal", "reportingController": "tidepool", "reportingInstance": "tidepool-0",
            "action": "Drain", "eventTime": "2025-01-01T00:00:00.000000Z"});
        let core = to_core(e.clone());
        assert_eq!(core["involvedObject"]["name"], "n");
        assert_eq!(core["message"], "drained");
        assert_eq!(core["source"]["component"], "tidepool");
        assert_eq!(to_events_v1(&core)["note"], "drained");
        assert_eq!(to_events_v1(&core)["regarding"], e["regarding"]);
    }
}
