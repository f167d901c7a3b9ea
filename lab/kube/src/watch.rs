//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events
//! replayed from the store's history or initial state, then followed live,
//! filtered by namespace and selectors (an object that stops matching is
//! reported DELETED, one that starts matching ADDED), with bookmarks, a
//! timeout, and seamless recovery when a slow watcher falls behind the
//! broadcast channel (410 Gone if its position left the history meanwhile).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::resources::ResKey;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{EventType, Store, WatchEvent, WatchStart};

/// Errors of this module (none escape: failures become ERROR events).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The client went away.
    #[error("watch client disconnected")]
    Disconnected,
}

/// What a watch asks for.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The resource.
    pub key: ResKey,
    /// `kind` for bookmark objects.
    pub kind: String,
    /// `apiVersion` for bookmark objects.
    pub api_version: String,
    /// Only this namespace (empty: all).
    pub namespace: String,
    /// Where to start.
    pub start: WatchStart,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// Send BOOKMARK events every `bookmark_interval` (real time).
    pub bookmarks: bool,
    /// Real time between bookmarks.
    pub bookmark_interval: Duration,
    /// Send the `k8s.io/initial-events-end` bookmark after the initial events.
    pub initial_events_end: bool,
    /// Real time after which the server ends the watch.
    pub timeout: Duration,
    /// Render objects through this function (Table output), if set.
    pub render: Option<fn(&Value) -> Value>,
}

impl WatchRequest {
    fn matches(&self, obj: &Value) -> bool {
        (self.namespace.is_empty()
            || obj["metadata"]["namespace"].as_str() == Some(self.namespace.as_str()))
            && self.labels.matches_object(obj)
            && self.fields.matches(obj)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The wire form of one event after filtering, or `None` when the watcher
/// should not see it.
fn render_event(req: &WatchRequest, ev: &WatchEvent) -> Option<Bytes> {
    let now = req.matches(&ev.object);
    let kind = match ev.kind {
        EventType::Added if now => EventType::Added,
        EventType::Deleted if now => EventType::Deleted,
        EventType::Modified => {
            let was = ev.previous.as_deref().is_some_and(|p| req.matches(p));
            match (was, now) {
                (true, true) => EventType::Modified,
                (false, true) => EventType::Added,
                (true, false) => EventType::Deleted,
                (false, false) => return None,
            }
        }
        _ => return None,
    };
    match req.render {
        Some(render) => Some(line(kind.as_str(), &render(&ev.object))),
        None if kind == ev.kind => Some(
            ev.wire
                .get_or_init(|| line(kind.as_str(), &ev.object))
                .clone(),
        ),
        None => Some(line(kind.as_str(), &ev.object)),
    }
}

fn bookmark(req: &WatchRequest, rv: u64, initial_end: bool) -> Bytes {
    let mut object = json!({
        "kind": req.kind,
        "apiVersion": req.api_version,
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &object)
}

async fn send(
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    bytes: Bytes,
) -> Result<(), WatchError> {
    tx.send(Ok(bytes))
        .await
        .map_err(|_| WatchError::Disconnected)
}

/// Starts a watch and returns its body stream.
pub fn start(
    store: Arc<Store>,
    req: WatchRequest,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        // An error here only means the client disconnected.
        let _ = pump(store, req, tx).await;
    });
    ReceiverStream::new(rx)
}

async fn pump(
    store: Arc<Store>,
    req: WatchRequest,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) -> Result<(), WatchError> {
    let (backlog, mut rx, current) = match store.watch(&req.key, req.start) {
        Ok(parts) => parts,
        Err(e) => return send(&tx, line("ERROR", &e.to_status())).await,
    };
    let mut last = match req.start {
        WatchStart::Since(rv) => rv,
        WatchStart::Initial => 0,
    };
    for ev in &backlog {
        if let Some(bytes) = render_event(&req, ev) {
            send(&tx, bytes).await?;
        }
        last = last.max(ev.rv);
    }
    if req.start == WatchStart::Initial {
        last = current;
        if req.initial_events_end && req.bookmarks {
            send(&tx, bookmark(&req, current, true)).await?;
        }
    }
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(req.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Ok(ev) => {
                    if ev.rv <= last {
                        continue;
                    }
                    last = ev.rv;
                    if let Some(bytes) = render_event(&req, &ev) {
                        send(&tx, bytes).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match store.watch(&req.key, WatchStart::Since(last)) {
                        Ok((backlog, fresh, _)) => {
                            rx = fresh;
                            for ev in &backlog {
                                last = last.max(ev.rv);
                                if let Some(bytes) = render_event(&req, ev) {
                                    send(&tx, bytes).await?;
                                }
                            }
                        }
                        Err(e) => return send(&tx, line("ERROR", &e.to_status())).await,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ticker.tick(), if req.bookmarks => {
                send(&tx, bookmark(&req, last, false)).await?;
            }
            () = &mut deadline => return Ok(()),
            () = tx.closed() => return Err(WatchError::Disconnected),
        }
    }
}

/// The 410 a watch gets when it asks for a version older than the history.
pub fn expired_event(err: &ApiError) -> Bytes {
    line("ERROR", &err.to_status())
}
