//! The lab's own client of the real API server: what the guest simulator
//! and the tests use in upstream mode where they would call [`KubeLab`]'s
//! in-process API on the emulator.
//!
//! Every call runs on a small runtime on a thread of its own, so that the
//! blocking form ([`Upstream::block`]) works from any context — a test's
//! current-thread runtime included — without waiting on the caller's own
//! runtime. Bodies cross the [`ClockMap`] like everything else that reaches
//! the API server through the lab: simulated → real on the way in, real →
//! simulated on the way out. Errors are the API server's `Status` answers
//! as [`ApiError`]s, so callers match on the same codes and reasons as with
//! the emulator.
//!
//! [`KubeLab`]: tidepool_lab_kube::KubeLab

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use tidepool_lab_kube::ApiError;

use super::clock_map::{ClockMap, Direction};

/// Errors of this module are [`ApiError`]s; this enum names the one failure
/// before any request: the client's own set-up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client or its runtime could not be built.
    #[error("building the lab's client of the API server: {0}")]
    Build(String),
}

/// The kind of a resource as discovery reports it.
#[derive(Clone, Debug)]
struct Discovered {
    plural: String,
    namespaced: bool,
}

/// A cheap, cloneable client of the real API server.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

struct Inner {
    server: String,
    token: String,
    http: reqwest::Client,
    map: ClockMap,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
    kinds: Mutex<HashMap<(String, String), Discovered>>,
}

fn transport(op: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: 503,
        reason: "ServiceUnavailable".into(),
        message: format!("{op}: {e}"),
        details: None,
    }
}

impl Upstream {
    /// A client of the API server at `server` (https, the lab's CA in
    /// `ca_pem`) authenticating with `token`.
    ///
    /// # Errors
    /// [`ClientError::Build`].
    pub fn new(
        server: &str,
        ca_pem: &str,
        token: &str,
        map: ClockMap,
    ) -> Result<Self, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("lab-upstream-client".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                server: server.trim_end_matches('/').to_owned(),
                token: token.to_owned(),
                http,
                map,
                runtime: handle,
                _stop: stop,
                kinds: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Runs `call` on the client's thread and waits for it, blocking the
    /// calling thread for one round trip to the local API server.
    pub fn block<T: Send + 'static>(
        &self,
        call: impl FnOnce(Self) -> std::pin::Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send>>,
    ) -> Result<T, ApiError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = call(self.clone());
        self.inner.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .unwrap_or_else(|e| Err(transport("the lab's API client stopped", e)))
    }

    /// One request; the body and the answer cross the clock map.
    ///
    /// # Errors
    /// The API server's `Status` as an [`ApiError`]; transport failures
    /// as `503 ServiceUnavailable`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.inner.server);
        let mut req = self
            .inner
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.inner.token)
            .header("Accept", "application/json");
        if let Some((content_type, mut body)) = body {
            self.inner.map.map_value(&mut body, Direction::ToReal);
            req = req
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let op = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| transport(&op, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| transport(&op, e))?;
        let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 300 {
            return Err(ApiError {
                code: status,
                reason: value["reason"].as_str().unwrap_or("Unknown").to_owned(),
                message: value["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_owned,
                ),
                details: value.get("details").cloned(),
            });
        }
        self.inner.map.map_value(&mut value, Direction::ToSim);
        Ok(value)
    }

    async fn discover(&self, api_version: &str, kind: &str) -> Result<Discovered, ApiError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(d) = self.kinds().get(&key) {
            return Ok(d.clone());
        }
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let list = self.request(Method::GET, &path, None).await?;
        let mut kinds = self.kinds();
        for r in list["resources"].as_array().into_iter().flatten() {
            let (Some(name), Some(k)) = (r["name"].as_str(), r["kind"].as_str()) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            kinds.insert(
                (api_version.to_owned(), k.to_owned()),
                Discovered {
                    plural: name.to_owned(),
                    namespaced: r["namespaced"].as_bool().unwrap_or(false),
                },
            );
        }
        kinds.get(&key).cloned().ok_or_else(|| ApiError {
            code: 400,
            reason: "BadRequest".into(),
            message: format!("no kind \"{kind}\" is registered for version \"{api_version}\""),
            details: None,
        })
    }

    fn kinds(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Discovered>> {
        self.inner.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a collection (`name` empty) or an object.
    async fn path(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<String, ApiError> {
        let d = self.discover(api_version, kind).await?;
        let root = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let ns = match (d.namespaced, namespace) {
            (true, "") if !name.is_empty() => "/namespaces/default".to_owned(),
            (true, "") => String::new(),
            (true, ns) => format!("/namespaces/{ns}"),
            (false, _) => String::new(),
        };
        let tail = if name.is_empty() {
            String::new()
        } else {
            format!("/{name}")
        };
        Ok(format!("{root}{ns}/{}{tail}", d.plural))
    }

    async fn path_of(&self, obj: &Value) -> Result<String, ApiError> {
        self.path(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
            obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            obj["metadata"]["name"].as_str().unwrap_or_default(),
        )
        .await
    }

    /// Creates an object.
    ///
    /// # Errors
    /// As the API server answers.
    pub async fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let path = self.path_of(&obj).await?;
        let collection = path.rsplit_once('/').map_or(path.as_str(), |(c, _)| c);
        self.request(Method::POST, collection, Some(("application/json", obj)))
            .await
    }

    /// Server-side apply with force, status (when given) through the status
    /// subresource.
    ///
    /// # Errors
    /// As the API server answers.
    pub async fn apply(&self, mut obj: Value) -> Result<Value, ApiError> {
        let path = self.path_of(&obj).await?;
        let status = obj.as_object_mut().and_then(|o| o.remove("status"));
        let query = "?fieldManager=tidepool-lab&force=true";
        let applied = self
            .request(
                Method::PATCH,
                &format!("{path}{query}"),
                Some(("application/apply-patch+yaml", obj.clone())),
            )
            .await?;
        let Some(status) = status else {
            return Ok(applied);
        };
        let mut with_status = json!({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {"name": obj["metadata"]["name"]}, "status": status});
        if let Some(ns) = obj["metadata"]["namespace"].as_str() {
            with_status["metadata"]["namespace"] = json!(ns);
        }
        self.request(
            Method::PATCH,
            &format!("{path}/status{query}"),
            Some(("application/apply-patch+yaml", with_status)),
        )
        .await
    }

    /// A JSON merge patch of the object, then of its status when the patch
    /// has one.
    ///
    /// # Errors
    /// As the API server answers.
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        mut patch: Value,
    ) -> Result<Value, ApiError> {
        let path = self.path(api_version, kind, namespace, name).await?;
        let status = patch.as_object_mut().and_then(|o| o.remove("status"));
        let merge = "application/merge-patch+json";
        let mut out = self
            .request(Method::PATCH, &path, Some((merge, patch)))
            .await?;
        if let Some(status) = status {
            out = self
                .request(
                    Method::PATCH,
                    &format!("{path}/status"),
                    Some((merge, json!({"status": status}))),
                )
                .await?;
        }
        Ok(out)
    }

    /// A strategic merge patch of the status subresource.
    ///
    /// # Errors
    /// As the API server answers.
    pub async fn patch_status(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let path = self.path(api_version, kind, "", name).await?;
        self.request(
            Method::PATCH,
            &format!("{path}/status"),
            Some(("application/strategic-merge-patch+json", patch)),
        )
        .await
    }

    /// Reads one object.
    ///
    /// # Errors
    /// `NotFound` and the like.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let path = self.path(api_version, kind, namespace, name).await?;
        self.request(Method::GET, &path, None).await
    }

    /// Lists objects, all namespaces when `namespace` is empty.
    ///
    /// # Errors
    /// As the API server answers.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let path = self.path(api_version, kind, namespace, "").await?;
        let query = if label_selector.is_empty() {
            String::new()
        } else {
            format!(
                "?labelSelector={}",
                url::form_urlencoded::byte_serialize(label_selector.as_bytes()).collect::<String>()
            )
        };
        let list = self
            .request(Method::GET, &format!("{path}{query}"), None)
            .await?;
        let item_kind = kind.to_owned();
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut item| {
                // Lists leave out each item's apiVersion and kind.
                item["apiVersion"] = json!(api_version);
                item["kind"] = json!(item_kind);
                item
            })
            .collect())
    }

    /// Deletes an object (graceful, as `kubectl delete`).
    ///
    /// # Errors
    /// `NotFound` and the like.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let path = self.path(api_version, kind, namespace, name).await?;
        self.request(Method::DELETE, &path, None).await.map(|_| ())
    }
}
