//! Kubernetes Events (`core/v1`) on worker claims, nodes and pods: the
//! audit trail operators see in `kubectl describe` and `kubectl get events`.
//!
//! # Never put secrets in Events
//! Events are readable by anyone who can read the namespace (for
//! cluster-scoped objects, the `default` namespace), are kept for an hour
//! or more, and are often shipped to log stores. A message must never
//! contain API tokens, passwords, kubeconfigs, machine configurations,
//! bootstrap tokens or one-time join URLs. Name the operation and the
//! object; put only the error's category and a sanitised reason in the
//! message.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::client::ClusterClient;
use crate::error::ClusterError;

/// The `reportingComponent` (and `source.component`) of Tidepool's Events.
pub const REPORTING_CONTROLLER: &str = "tidepool";

/// The namespace the Events of cluster-scoped objects go to, as the
/// Kubernetes components do it.
pub const CLUSTER_SCOPED_EVENT_NAMESPACE: &str = "default";

/// The API's limit on an Event message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Normal or Warning, as the Events API knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something an operator may need to look at.
    Warning,
}

impl EventType {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTarget {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// UID, when known (lets `kubectl describe` match the Event exactly).
    pub uid: Option<String>,
}

impl EventTarget {
    /// The target describing any typed object (a `WorkerClaim`, `Node`, `Pod`...).
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            name: object.meta().name.clone().unwrap_or_default(),
            namespace: object.meta().namespace.clone(),
            uid: object.meta().uid.clone(),
        }
    }

    /// The namespace the Event is stored in.
    pub fn event_namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(CLUSTER_SCOPED_EVENT_NAMESPACE)
    }

    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// What happened, for [`ClusterClient::record_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// Normal or Warning.
    pub event_type: EventType,
    /// A short CamelCase reason (`Provisioned`, `DrainBlocked`).
    pub reason: &'a str,
    /// What Tidepool did or tried (`Drain`, `Provision`, `Destroy`).
    pub action: &'a str,
    /// A human-readable message. Never secrets (see the module docs);
    /// truncated to [`MAX_MESSAGE_BYTES`].
    pub message: &'a str,
}

/// Distinguishes Events created within the same nanosecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

impl ClusterClient {
    /// Records a `core/v1` Event about `target`, reported by the
    /// `tidepool` controller, and logs it as a structured line too.
    ///
    /// # Errors
    /// API failures (Forbidden without permission to create Events).
    pub async fn record_event(
        &self,
        target: &EventTarget,
        record: &EventRecord<'_>,
    ) -> Result<Event, ClusterError> {
        let now = Timestamp::now();
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.{:x}{:04x}",
            target.name,
            now.as_nanosecond(),
            sequence % 0x1_0000
        );
        let namespace = target.event_namespace().to_owned();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: target.reference(),
            reason: Some(record.reason.to_owned()),
            message: Some(truncate(record.message)),
            type_: Some(record.event_type.as_str().to_owned()),
            action: Some(record.action.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(self.options.reporting_instance.clone()),
            source: Some(EventSource {
                component: Some(REPORTING_CONTROLLER.to_owned()),
                host: None,
            }),
            ..Event::default()
        };
        match record.event_type {
            EventType::Normal => tracing::info!(
                kind = %target.kind, object = %target.name, reason = record.reason,
                action = record.action, message = record.message, "event"
            ),
            EventType::Warning => tracing::warn!(
                kind = %target.kind, object = %target.name, reason = record.reason,
                action = record.action, message = record.message, "event"
            ),
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event)
            .await
            .map_err(|e| {
                ClusterError::api(
                    format!(
                        "recording a {} event on {} {}",
                        record.reason, target.kind, target.name
                    ),
                    e,
                )
            })
    }

    /// The Events about `target`, oldest first.
    ///
    /// # Errors
    /// API failures.
    pub async fn events_for(&self, target: &EventTarget) -> Result<Vec<Event>, ClusterError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), target.event_namespace());
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            ClusterError::api(
                format!("listing the events of {} {}", target.kind, target.name),
                e,
            )
        })?;
        let mut events: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| {
                let o = &e.involved_object;
                o.kind.as_deref() == Some(target.kind.as_str())
                    && o.name.as_deref() == Some(target.name.as_str())
                    && (target.uid.is_none() || o.uid.is_none() || o.uid == target.uid)
            })
            .collect();
        events.sort_by_key(|e| (e.first_timestamp.clone().map(|t| t.0), e.name_any()));
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }
}
