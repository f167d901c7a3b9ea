//! [`ProxmoxClient`]: the typed calls, the request path (auth header,
//! envelope, error classification, tracing span) and the retry rules.
//!
//! # Which calls are retried
//!
//! Only [`ProxmoxError::Transient`] failures are retried, at most
//! [`RetryPolicy::max_attempts`] times with jittered exponential backoff:
//!
//! | call | retried | why it is safe |
//! |---|---|---|
//! | every `GET` | yes | reads have no effect |
//! | `PUT …/config`, `POST …/config` | yes | the update sets absolute values; applying it twice gives the same config (`delete=` of a gone key is accepted) |
//! | `PUT /pools` membership | yes | adding or removing the same members again changes nothing |
//! | `DELETE …/qemu/{vmid}` | yes | a repeat after a lost answer reports [`ProxmoxError::NotFound`]; the caller's destroy interlock decides whether that VM was ours |
//! | `status/start`, `shutdown`, `stop`, `reboot` | yes | a repeated power action starts a second task that ends OK (stop, shutdown) or fails "already running" (start); callers confirm with `status/current` |
//! | `POST …/clone` | **not blindly** | see [`ProxmoxClient::clone_vm`] |
//!
//! A clone is never retried blindly: if its answer is lost after the
//! server accepted it, a second clone to a *new* id would leave two VMs.
//! After a transient failure the client first looks for the new VMID; if it
//! exists the clone was accepted ([`CloneStarted::Accepted`]), and only if
//! it does not is the clone sent again, with the same `newid`, so the worst
//! case is the server refusing it with "config file already exists", which
//! is read as acceptance too.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tidepool_core::config::{ProxmoxProvider, TlsVerify};
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::auth::{ApiToken, TokenError};
use crate::error::{self, Cause, ErrorKind, ProxmoxError};
use crate::retry::{RetryPolicy, TaskPolling};
use crate::tls::{self, TlsSetupError};
use crate::types::{
    CloneRequest, ClusterStorage, ClusterVm, ConfigUpdate, DeleteOptions, GuestInterface, NodeInfo,
    NodeStatus, NodeVm, PciMapping, PoolInfo, RawAgentResult, RawPciMapping, RawPoolDetails,
    ShutdownOptions, TaskLogLine, TaskStatus, Upid, Version, VmConfig, VmStatus, guest_members,
};

/// How many trailing task-log lines a task failure carries.
const LOG_TAIL: usize = 20;

/// Tunables of a client.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientOptions {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Polling cadence of task waits.
    pub polling: TaskPolling,
    /// Limit of one HTTP request, connect to last byte. Must exceed the
    /// server's 10 s config-lock wait and its 3 s delay on a bad token.
    pub request_timeout: Duration,
    /// Limit of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            polling: TaskPolling::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The token could not be resolved.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The endpoint is not an `https://` URL.
    #[error("Proxmox endpoint '{0}' is not an https:// URL")]
    Endpoint(String),
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// The result of starting a clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneStarted {
    /// The server answered with the clone task.
    Task(Upid),
    /// The answer was lost, but the new VM exists (or the server said its
    /// config already exists on a repeat): the clone was accepted and runs
    /// under a task whose UPID is unknown. Wait for the VM's `clone` lock to
    /// clear, as [`ProxmoxClient::clone_and_wait`] does.
    Accepted {
        /// The new VM id.
        vmid: u32,
    },
}

/// A typed Proxmox VE API client. Cheap to clone; share one per cluster.
#[derive(Clone)]
pub struct ProxmoxClient {
    http: reqwest::Client,
    base: Url,
    token: ApiToken,
    auth: HeaderValue,
    options: ClientOptions,
}

impl fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One request to make.
struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    form: Vec<(String, String)>,
    retry: bool,
}

impl Call {
    fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            form: Vec::new(),
            retry: true,
        }
    }

    fn get(segments: &[&str]) -> Self {
        Self::new(Method::GET, segments)
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    fn form(mut self, pairs: Vec<(String, String)>) -> Self {
        self.form = pairs;
        self
    }

    fn once(mut self) -> Self {
        self.retry = false;
        self
    }
}

fn bool01(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

fn decode<T: DeserializeOwned>(op: &str, data: Value) -> Result<T, ProxmoxError> {
    serde_json::from_value(data)
        .map_err(|e| ProxmoxError::unexpected(op.to_owned(), format!("cannot decode answer: {e}")))
}

fn decode_upid(op: &str, data: Value) -> Result<Upid, ProxmoxError> {
    let text = data.as_str().ok_or_else(|| {
        ProxmoxError::unexpected(op.to_owned(), format!("expected a UPID, got {data}"))
    })?;
    text.parse().map_err(|e: crate::types::UpidParseError| {
        ProxmoxError::unexpected(op.to_owned(), e.to_string())
    })
}

/// Describes what a task does, for error messages of waits.
fn describe_task(upid: &Upid) -> String {
    let what = match upid.kind.as_str() {
        "qmclone" => "cloning VM",
        "qmstart" => "starting VM",
        "qmshutdown" => "shutting down VM",
        "qmstop" => "stopping VM",
        "qmreboot" => "rebooting VM",
        "qmdestroy" => "destroying VM",
        "qmconfig" => "updating the config of VM",
        other => return format!("task {other} {} on {}", upid.id, upid.node),
    };
    format!("{what} {} on {}", upid.id, upid.node)
}

impl ProxmoxClient {
    /// A client for `endpoint` (`https://host:8006`, with or without the
    /// `/api2/json` suffix) authenticating with `token`. Relative CA file
    /// paths are taken from `base_dir`.
    ///
    /// # Errors
    /// [`BuildError`] for a non-https endpoint, unusable TLS settings or a
    /// token that cannot go into a header.
    pub fn new(
        endpoint: &str,
        token: ApiToken,
        tls: &TlsVerify,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        let bad = || BuildError::Endpoint(endpoint.to_owned());
        let mut base = Url::parse(endpoint).map_err(|_| bad())?;
        if base.scheme() != "https" || base.cannot_be_a_base() {
            return Err(bad());
        }
        let path = base.path().trim_end_matches('/').to_owned();
        let path = if path.ends_with("/api2/json") {
            path
        } else {
            format!("{path}/api2/json")
        };
        base.set_path(&path);
        base.set_query(None);
        let config = tls::client_config(tls, base_dir)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .http1_only()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("tidepool-proxmox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Http)?;
        let mut auth = HeaderValue::from_str(&token.header_value()).map_err(|_| {
            BuildError::Token(TokenError::Malformed {
                origin: "value".to_owned(),
            })
        })?;
        auth.set_sensitive(true);
        Ok(Self {
            http,
            base,
            token,
            auth,
            options,
        })
    }

    /// A client for a configured provider, resolving its token from the
    /// environment or a file (relative to `base_dir`).
    ///
    /// # Errors
    /// As [`ProxmoxClient::new`]; [`TokenError::SecretRef`] for a
    /// Kubernetes Secret reference, which needs
    /// [`ProxmoxClient::from_provider_with_token`].
    pub fn from_provider(
        provider: &ProxmoxProvider,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        let token = ApiToken::resolve(&provider.token, base_dir)?;
        Self::from_provider_with_token(provider, token, base_dir, options)
    }

    /// A client for a configured provider with a token the caller resolved
    /// (e.g. from a Kubernetes Secret).
    ///
    /// # Errors
    /// As [`ProxmoxClient::new`].
    pub fn from_provider_with_token(
        provider: &ProxmoxProvider,
        token: ApiToken,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        Self::new(&provider.endpoint, token, &provider.tls, base_dir, options)
    }

    /// The API base URL, ending in `/api2/json`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The token id this client authenticates as.
    pub fn token_id(&self) -> &str {
        self.token.id()
    }

    // ------------------------------------------------------------ plumbing

    fn url(&self, op: &str, segments: &[String]) -> Result<Url, ProxmoxError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ProxmoxError::unexpected(op.to_owned(), "endpoint cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One attempt: send, read the envelope, classify an error answer.
    async fn attempt(&self, op: &str, call: &Call, url: &Url) -> Result<Value, ProxmoxError> {
        let mut req = self
            .http
            .request(call.method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if !call.form.is_empty() {
            req = req.form(&call.form);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProxmoxError::transport(op.to_owned(), e.without_url()))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProxmoxError::transport(op.to_owned(), e.without_url()))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            let Some(mut json) = json else {
                return Err(ProxmoxError::unexpected(
                    op.to_owned(),
                    "the answer is not JSON",
                ));
            };
            return Ok(json.get_mut("data").map(Value::take).unwrap_or(Value::Null));
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(reason);
        let errors = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), text.trim_end().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(error::classify(
            op.to_owned(),
            status.as_u16(),
            message,
            errors,
        ))
    }

    /// Sends `call`, retrying transient failures when the call allows it.
    async fn request(&self, op: &str, call: Call) -> Result<Value, ProxmoxError> {
        let url = self.url(op, &call.segments)?;
        let span = tracing::debug_span!(
            "proxmox.call",
            method = %call.method,
            path = %url.path(),
            attempts = tracing::field::Empty,
        );
        async {
            let max = if call.retry {
                self.options.retry.max_attempts.max(1)
            } else {
                1
            };
            let mut attempt = 1;
            loop {
                match self.attempt(op, &call, &url).await {
                    Ok(v) => {
                        tracing::Span::current().record("attempts", attempt);
                        return Ok(v);
                    }
                    Err(e) if e.is_transient() && attempt < max => {
                        let pause = self.options.retry.backoff(attempt);
                        tracing::debug!(error = %e, cause = %e.cause(), attempt, ?pause, "retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::Span::current().record("attempts", attempt);
                        tracing::debug!(error = %e, cause = %e.cause(), category = e.category(), "call failed");
                        return Err(e);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn get<T: DeserializeOwned>(&self, op: &str, call: Call) -> Result<T, ProxmoxError> {
        decode(op, self.request(op, call).await?)
    }

    async fn task(&self, op: &str, call: Call) -> Result<Upid, ProxmoxError> {
        decode_upid(op, self.request(op, call).await?)
    }

    // ------------------------------------------------------------ cluster

    /// `GET /version`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn version(&self) -> Result<Version, ProxmoxError> {
        self.get("reading the API version", Call::get(&["version"]))
            .await
    }

    /// `GET /nodes`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ProxmoxError> {
        self.get("listing nodes", Call::get(&["nodes"])).await
    }

    /// `GET /nodes/{node}/status`: memory and CPU figures.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified; an offline node is `Transient` (595).
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, ProxmoxError> {
        let op = format!("reading the status of node {node}");
        self.get(&op, Call::get(&["nodes", node, "status"])).await
    }

    /// `GET /cluster/nextid`: the lowest free VMID, or with `probe`, that
    /// id if it is free. Not a reservation: clone and handle the race.
    ///
    /// # Errors
    /// A taken `probe` is `Permanent` with `errors["vmid"]` = `VM <id>
    /// already exists`; an exhausted range is `InsufficientCapacity`.
    pub async fn next_id(&self, probe: Option<u32>) -> Result<u32, ProxmoxError> {
        let op = match probe {
            Some(id) => format!("probing VMID {id}"),
            None => "allocating a VMID".to_owned(),
        };
        let mut call = Call::get(&["cluster", "nextid"]);
        if let Some(id) = probe {
            call = call.query("vmid", id);
        }
        let data = self.request(&op, call).await?;
        let text = match &data {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        text.parse()
            .map_err(|_| ProxmoxError::unexpected(op, format!("expected a VMID, got {data}")))
    }

    /// `GET /cluster/resources?type=vm`: every guest in the cluster.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, ProxmoxError> {
        self.get(
            "listing cluster VMs",
            Call::get(&["cluster", "resources"]).query("type", "vm"),
        )
        .await
    }

    /// `GET /cluster/resources?type=storage`: every storage on every node.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn cluster_storage(&self) -> Result<Vec<ClusterStorage>, ProxmoxError> {
        self.get(
            "listing cluster storage",
            Call::get(&["cluster", "resources"]).query("type", "storage"),
        )
        .await
    }

    /// The cluster row of `vmid`, if the VM exists anywhere.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn find_vm(&self, vmid: u32) -> Result<Option<ClusterVm>, ProxmoxError> {
        Ok(self
            .cluster_vms()
            .await?
            .into_iter()
            .find(|row| row.vmid == vmid && row.kind == "qemu"))
    }

    /// `GET /cluster/mapping/pci[?check-node=]`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn pci_mappings(
        &self,
        check_node: Option<&str>,
    ) -> Result<Vec<PciMapping>, ProxmoxError> {
        let mut call = Call::get(&["cluster", "mapping", "pci"]);
        if let Some(node) = check_node {
            call = call.query("check-node", node);
        }
        let raw: Vec<RawPciMapping> = self.get("listing PCI mappings", call).await?;
        Ok(raw.into_iter().map(PciMapping::from).collect())
    }

    /// `GET /pools`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn pools(&self) -> Result<Vec<PoolInfo>, ProxmoxError> {
        self.get("listing pools", Call::get(&["pools"])).await
    }

    /// The guests in pool `poolid` (`GET /pools?poolid=`, PVE 8.1+).
    ///
    /// # Errors
    /// A missing pool is `NotFound`.
    pub async fn pool_members(&self, poolid: &str) -> Result<Vec<ClusterVm>, ProxmoxError> {
        let op = format!("listing members of pool {poolid}");
        let rows: Vec<RawPoolDetails> = self
            .get(&op, Call::get(&["pools"]).query("poolid", poolid))
            .await?;
        Ok(rows
            .into_iter()
            .flat_map(|r| guest_members(r.members))
            .collect())
    }

    /// Adds VMs to pool `poolid` (`PUT /pools?poolid=`); with
    /// `allow_move` a VM may be taken from another pool.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn add_to_pool(
        &self,
        poolid: &str,
        vmids: &[u32],
        allow_move: bool,
    ) -> Result<(), ProxmoxError> {
        let op = format!("adding VMs {vmids:?} to pool {poolid}");
        let mut form = vec![("vms".to_owned(), join_ids(vmids))];
        if allow_move {
            form.push(("allow-move".to_owned(), bool01(true)));
        }
        let call = Call::new(Method::PUT, &["pools"])
            .query("poolid", poolid)
            .form(form);
        self.request(&op, call).await.map(drop)
    }

    /// Removes VMs from pool `poolid`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn remove_from_pool(&self, poolid: &str, vmids: &[u32]) -> Result<(), ProxmoxError> {
        let op = format!("removing VMs {vmids:?} from pool {poolid}");
        let form = vec![
            ("vms".to_owned(), join_ids(vmids)),
            ("delete".to_owned(), bool01(true)),
        ];
        let call = Call::new(Method::PUT, &["pools"])
            .query("poolid", poolid)
            .form(form);
        self.request(&op, call).await.map(drop)
    }

    // ------------------------------------------------------------ VMs

    /// `GET /nodes/{node}/qemu`: the VMs of one node.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn node_vms(&self, node: &str) -> Result<Vec<NodeVm>, ProxmoxError> {
        let op = format!("listing VMs on {node}");
        self.get(&op, Call::get(&["nodes", node, "qemu"])).await
    }

    /// Starts `POST /nodes/{node}/qemu/{source}/clone`.
    ///
    /// # Guarantees
    /// Never creates a second VM for one request: after a transient failure
    /// it retries only once it has seen that `req.newid` does not exist, and
    /// always with the same `newid` (see the module docs).
    ///
    /// # Errors
    /// Synchronous refusals, classified: `Locked` for a locked source,
    /// `Permanent` for bad parameters or, of kind
    /// [`ErrorKind::AlreadyExists`], for "config file already exists" on the
    /// first attempt; `Auth`, `Transient` once retries are used up.
    pub async fn clone_vm(
        &self,
        node: &str,
        source: u32,
        req: &CloneRequest,
    ) -> Result<CloneStarted, ProxmoxError> {
        let op = format!("cloning VM {source} to {} on {node}", req.newid);
        let form: Vec<(String, String)> = req
            .form()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let source_id = source.to_string();
        let max = self.options.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let call = Call::new(Method::POST, &["nodes", node, "qemu", &source_id, "clone"])
                .form(form.clone())
                .once();
            match self.request(&op, call).await {
                Ok(data) => return decode_upid(&op, data).map(CloneStarted::Task),
                Err(e) if attempt > 1 && e.kind() == ErrorKind::AlreadyExists => {
                    tracing::info!(
                        vmid = req.newid,
                        "a repeated clone found the VM already created; treating the earlier attempt as accepted"
                    );
                    return Ok(CloneStarted::Accepted { vmid: req.newid });
                }
                Err(e) if e.is_transient() => {
                    // The answer may have been lost after the server acted.
                    match self.find_vm(req.newid).await {
                        Ok(Some(_)) => {
                            tracing::info!(vmid = req.newid, error = %e, "clone answer lost but the new VM exists; not cloning again");
                            return Ok(CloneStarted::Accepted { vmid: req.newid });
                        }
                        Ok(None) if attempt < max => {
                            let pause = self.options.retry.backoff(attempt);
                            tracing::debug!(error = %e, attempt, ?pause, "clone failed before the VM appeared; retrying with the same newid");
                            tokio::time::sleep(pause).await;
                            attempt += 1;
                        }
                        // Out of attempts, or unable to tell: do not clone blindly.
                        Ok(None) | Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Clones and waits until the new VM is ready (task finished, `clone`
    /// lock gone). Returns the node the new VM lives on.
    ///
    /// # Errors
    /// As [`ProxmoxClient::clone_vm`] and [`ProxmoxClient::wait_task`];
    /// `Timeout` when `deadline` passes.
    pub async fn clone_and_wait(
        &self,
        node: &str,
        source: u32,
        req: &CloneRequest,
        deadline: Instant,
    ) -> Result<String, ProxmoxError> {
        match self.clone_vm(node, source, req).await? {
            CloneStarted::Task(upid) => {
                let op = format!("cloning VM {source} to {} on {node}", req.newid);
                self.wait_task_as(op, &upid, deadline).await?;
                Ok(req.target.clone().unwrap_or_else(|| node.to_owned()))
            }
            CloneStarted::Accepted { vmid } => self.wait_clone_lock(source, vmid, deadline).await,
        }
    }

    /// Polls until `vmid` exists without a `clone` lock.
    async fn wait_clone_lock(
        &self,
        source: u32,
        vmid: u32,
        deadline: Instant,
    ) -> Result<String, ProxmoxError> {
        let op = format!("waiting for the clone of VM {source} to {vmid}");
        let started = Instant::now();
        let mut pause = self.options.polling.initial;
        loop {
            match self.find_vm(vmid).await? {
                None => {
                    return Err(ProxmoxError::TaskFailed {
                        op,
                        upid: String::new(),
                        message: "the new VM disappeared before its clone finished".to_owned(),
                        already_exists: false,
                        source: Cause::Unexpected("clone task UPID unknown (answer lost)".into()),
                    });
                }
                Some(row) if row.lock.as_deref() != Some("clone") => return Ok(row.node),
                Some(_) => {}
            }
            if Instant::now() + pause > deadline {
                return Err(ProxmoxError::Timeout {
                    op,
                    source: Cause::Deadline {
                        waited_ms: started.elapsed().as_millis(),
                    },
                });
            }
            tokio::time::sleep(pause).await;
            pause = self.options.polling.next(pause);
        }
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config` (pending values folded in).
    ///
    /// # Errors
    /// A VM that is not on `node` (or nowhere) is `NotFound`.
    pub async fn vm_config(&self, node: &str, vmid: u32) -> Result<VmConfig, ProxmoxError> {
        let op = format!("reading the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let raw = self
            .get(&op, Call::get(&["nodes", node, "qemu", &id, "config"]))
            .await?;
        Ok(VmConfig::from_raw(raw))
    }

    /// `PUT …/config`: applies `update` synchronously. Meant for changes
    /// that need no hotplug or storage (names, tags, smbios, cloud-init,
    /// cores/memory of a stopped VM).
    ///
    /// # Errors
    /// `Locked` for a config lock; `Transient` when the 10 s file-lock wait
    /// ran out (after retries); `Permanent` with the per-field map for
    /// invalid values.
    pub async fn update_config(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<(), ProxmoxError> {
        let op = format!("updating the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let call =
            Call::new(Method::PUT, &["nodes", node, "qemu", &id, "config"]).form(update.form());
        self.request(&op, call).await.map(drop)
    }

    /// `POST …/config`: applies `update` in a `qmconfig` task.
    ///
    /// # Errors
    /// As [`ProxmoxClient::update_config`] for the synchronous checks.
    pub async fn update_config_async(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("updating the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let call =
            Call::new(Method::POST, &["nodes", node, "qemu", &id, "config"]).form(update.form());
        self.task(&op, call).await
    }

    /// `GET …/status/current`.
    ///
    /// # Errors
    /// A missing VM is `NotFound`.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> Result<VmStatus, ProxmoxError> {
        let op = format!("reading the status of VM {vmid} on {node}");
        let id = vmid.to_string();
        self.get(
            &op,
            Call::get(&["nodes", node, "qemu", &id, "status", "current"]),
        )
        .await
    }

    async fn power(
        &self,
        op: String,
        node: &str,
        vmid: u32,
        action: &str,
        form: Vec<(String, String)>,
    ) -> Result<Upid, ProxmoxError> {
        let id = vmid.to_string();
        let call = Call::new(
            Method::POST,
            &["nodes", node, "qemu", &id, "status", action],
        )
        .form(form);
        self.task(&op, call).await
    }

    /// `POST …/status/start` → the `qmstart` task. Memory and GPU
    /// shortages show up when the task is waited for.
    ///
    /// # Errors
    /// Synchronous refusals, classified.
    pub async fn start(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("starting VM {vmid} on {node}");
        self.power(op, node, vmid, "start", Vec::new()).await
    }

    /// `POST …/status/shutdown` → the `qmshutdown` task.
    ///
    /// # Errors
    /// "VM is paused - cannot shutdown" without `force_stop` is `Permanent`.
    pub async fn shutdown(
        &self,
        node: &str,
        vmid: u32,
        options: &ShutdownOptions,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("shutting down VM {vmid} on {node}");
        let mut form = Vec::new();
        if let Some(t) = options.timeout_secs {
            form.push(("timeout".to_owned(), t.to_string()));
        }
        if options.force_stop {
            form.push(("forceStop".to_owned(), bool01(true)));
        }
        self.power(op, node, vmid, "shutdown", form).await
    }

    /// `POST …/status/stop` → the `qmstop` task (hard stop).
    ///
    /// # Errors
    /// Synchronous refusals, classified.
    pub async fn stop(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("stopping VM {vmid} on {node}");
        self.power(op, node, vmid, "stop", Vec::new()).await
    }

    /// `POST …/status/reboot` → the `qmreboot` task; applies pending
    /// changes.
    ///
    /// # Errors
    /// `VM <id> not running` is `Permanent`.
    pub async fn reboot(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("rebooting VM {vmid} on {node}");
        self.power(op, node, vmid, "reboot", Vec::new()).await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` → the `qmdestroy` task. This call
    /// does not check identity; callers run their destroy interlock (VMID,
    /// SMBIOS UUID, ownership tag) first.
    ///
    /// # Errors
    /// `VM <id> is running - destroy failed` is `Permanent`; a gone VM is
    /// `NotFound`.
    pub async fn delete_vm(
        &self,
        node: &str,
        vmid: u32,
        options: &DeleteOptions,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("deleting VM {vmid} on {node}");
        let id = vmid.to_string();
        let mut call = Call::new(Method::DELETE, &["nodes", node, "qemu", &id]);
        if options.purge {
            call = call.query("purge", "1");
        }
        if options.destroy_unreferenced_disks {
            call = call.query("destroy-unreferenced-disks", "1");
        }
        self.task(&op, call).await
    }

    // ------------------------------------------------------------ tasks

    /// `GET /nodes/{node}/tasks/{upid}/status`, on the node in the UPID.
    ///
    /// # Errors
    /// An unknown task is `NotFound`.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ProxmoxError> {
        let op = format!("reading the status of task {}", describe_task(upid));
        self.get(
            &op,
            Call::get(&["nodes", &upid.node, "tasks", upid.as_str(), "status"]),
        )
        .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=`.
    ///
    /// # Errors
    /// An unknown task is `NotFound`.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<Vec<TaskLogLine>, ProxmoxError> {
        let op = format!("reading the log of task {}", describe_task(upid));
        self.get(
            &op,
            Call::get(&["nodes", &upid.node, "tasks", upid.as_str(), "log"])
                .query("start", start)
                .query("limit", limit),
        )
        .await
    }

    /// Polls a task (on the node in its UPID) with growing pauses until it
    /// stops or `deadline` passes.
    ///
    /// # Guarantees
    /// Exit status `OK` and `WARNINGS: <n>` are success (facts §3.9).
    ///
    /// # Errors
    /// A failed task is classified from its exit status and the tail of its
    /// log: `InsufficientCapacity` (memory, GPU, storage), `Locked`,
    /// `Transient` (lock-wait timeouts), otherwise `TaskFailed` with the
    /// exit status as message. `Timeout` when the deadline passes first
    /// (the task keeps running). Polling errors are returned as they are.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        deadline: Instant,
    ) -> Result<TaskStatus, ProxmoxError> {
        self.wait_task_as(describe_task(upid), upid, deadline).await
    }

    /// [`ProxmoxClient::wait_task`] with errors naming `op`.
    async fn wait_task_as(
        &self,
        op: String,
        upid: &Upid,
        deadline: Instant,
    ) -> Result<TaskStatus, ProxmoxError> {
        let started = Instant::now();
        let mut pause = self.options.polling.initial;
        loop {
            let status = self.task_status(upid).await?;
            if status.is_stopped() {
                let exit = status.exitstatus.clone().unwrap_or_default();
                if error::exit_status_is_ok(&exit) {
                    return Ok(status);
                }
                let tail = match self.task_log(upid, 0, 1000).await {
                    Ok(lines) => {
                        let skip = lines.len().saturating_sub(LOG_TAIL);
                        lines.into_iter().skip(skip).map(|l| l.t).collect()
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the log of a failed task");
                        Vec::new()
                    }
                };
                return Err(error::classify_task(op, upid.to_string(), exit, tail));
            }
            if Instant::now() + pause > deadline {
                return Err(ProxmoxError::Timeout {
                    op,
                    source: Cause::Deadline {
                        waited_ms: started.elapsed().as_millis(),
                    },
                });
            }
            tokio::time::sleep(pause).await;
            pause = self.options.polling.next(pause);
        }
    }

    // ------------------------------------------------------------ agent

    /// `GET …/agent/network-get-interfaces`, every interface as reported.
    ///
    /// # Errors
    /// `AgentNotReady` while the VM or its agent is not running (or the
    /// agent timed out); "No QEMU guest agent configured" is `Permanent`.
    pub async fn agent_interfaces(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<GuestInterface>, ProxmoxError> {
        let op = format!("asking the guest agent of VM {vmid} on {node} for its addresses");
        let id = vmid.to_string();
        let call = Call::get(&[
            "nodes",
            node,
            "qemu",
            &id,
            "agent",
            "network-get-interfaces",
        ]);
        let result: Result<RawAgentResult, ProxmoxError> = self.get(&op, call).await;
        match result {
            Ok(raw) => Ok(raw.result.into_iter().map(GuestInterface::from).collect()),
            Err(e) => Err(agent_error(e)),
        }
    }

    /// The guest's routable addresses: IPv4 and IPv6 of every interface,
    /// without loopback and link-local addresses, in the agent's order.
    ///
    /// # Errors
    /// As [`ProxmoxClient::agent_interfaces`].
    pub async fn agent_addresses(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<IpAddr>, ProxmoxError> {
        let interfaces = self.agent_interfaces(node, vmid).await?;
        Ok(interfaces
            .into_iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| i.addresses)
            .map(|a| a.addr)
            .filter(|a| routable(*a))
            .collect())
    }
}

/// Whether an address is worth handing to other systems.
fn routable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

fn agent_error(e: ProxmoxError) -> ProxmoxError {
    let not_ready = matches!(
        e.cause(),
        Cause::Api { status: 500, message } if error::is_agent_not_ready(message)
    );
    if !not_ready {
        return e;
    }
    match e {
        ProxmoxError::Permanent { op, source, .. }
        | ProxmoxError::Transient { op, source }
        | ProxmoxError::NotFound { op, source } => ProxmoxError::AgentNotReady { op, source },
        other => other,
    }
}

fn join_ids(vmids: &[u32]) -> String {
    vmids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_addresses_are_not_routable() {
        for a in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"] {
            assert!(!routable(a.parse().unwrap()), "{a}");
        }
        for a in ["10.0.0.5", "192.168.1.20", "2001:db8::5", "fd00::1"] {
            assert!(routable(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn tasks_are_described_by_what_they_do() {
        let upid: Upid = "UPID:pve-01:0000A1B2:0001C3D4:679A423B:qmstart:154:root@pam!tp:"
            .parse()
            .unwrap();
        assert_eq!(describe_task(&upid), "starting VM 154 on pve-01");
    }

    #[test]
    fn an_endpoint_without_the_api_suffix_gets_it_and_http_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = ApiToken::parse("root@pam!tp=s3cr3t-value").unwrap();
        let c = ProxmoxClient::new(
            "https://pve.example:8006/",
            token.clone(),
            &TlsVerify::InsecureSkipVerify,
            Path::new("."),
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(c.base_url().as_str(), "https://pve.example:8006/api2/json");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        let plain = ProxmoxClient::new(
            "http://pve.example:8006",
            token,
            &TlsVerify::InsecureSkipVerify,
            Path::new("."),
            ClientOptions::default(),
        );
        assert!(matches!(plain, Err(BuildError::Endpoint(_))));
    }
}
