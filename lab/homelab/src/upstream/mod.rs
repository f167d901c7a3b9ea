//! `--kubernetes upstream`: the lab's Kubernetes side as the real control
//! plane instead of the emulator — etcd, kube-apiserver (authentication by
//! a static token file, `--authorization-mode=Node,RBAC`, service-account
//! signing keys), kube-scheduler, kube-controller-manager and kwok playing
//! the workers' kubelets — all children of the lab that die with it.
//!
//! # Time: one rule
//!
//! The lab runs simulated time `time_scale` times faster than real time,
//! while the real components stamp real time. The rule: **whatever anyone
//! reads through the lab is in the lab's simulated time**, as with the
//! emulator. The lab's kubeconfig points at a small proxy ([`proxy`]) in
//! front of the API server that maps every timestamp across the lab
//! clock's affine map ([`clock_map`]): answers and watch events real →
//! simulated, request bodies simulated → real. So a pod the scheduler
//! marked unschedulable one real second ago has, for Tidepool at 600×,
//! been waiting ten simulated minutes — exactly what the trigger window,
//! the health monitor and the TTL sweep compare against their clock — and
//! a Lease Tidepool renews in simulated time is stored in real time and
//! reads back as written. Tidepool's own WorkerClaims (only Tidepool
//! stamps them) pass unmapped. What the map cannot change is the real
//! components' own reaction times: kube-scheduler binds, the
//! controller-manager reacts and kwok runs pods in real time, so at a high
//! scale those steps take many simulated seconds; the node monitor's grace
//! period (40 s real) likewise. Tests wait in real time and are unaffected.
//!
//! Precision: the API server keeps `metav1.Time` in whole seconds, so a
//! simulated time written into such a field (an Event's `lastTimestamp`)
//! reads back up to `time_scale` seconds off; `MicroTime` fields (Lease
//! renewals, Event `eventTime`) come back within `time_scale` microseconds.
//!
//! Binaries come from `scripts/upstream.sh`: the lab looks in the
//! directories of `TIDEPOOL_UPSTREAM_BIN`, then on `PATH`.

pub mod client;
pub mod clock_map;
pub mod pki;
pub mod process;
pub mod proxy;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use client::Upstream;
use clock_map::ClockMap;
use pki::Pki;
use process::{Component, ProcessError};
use tidepool_lab_sim::{Faults, SimClock};

/// The label kwok selects the nodes it plays the kubelet of by.
pub const KWOK_LABEL: (&str, &str) = ("kwok.x-k8s.io/node", "lab");
/// The annotation that makes kwok leave a node's status to the lab (a node
/// whose machine is off, or whose conditions a scenario sets).
pub const KWOK_HANDS_OFF: (&str, &str) = ("kwok.x-k8s.io/status", "custom");

/// Real time the lab waits for one component to become ready.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Credentials.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// A component.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The proxy.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    /// The lab's client.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The cluster did not settle after start.
    #[error(
        "the API server did not settle: WorkerClaim CRD established: {established}, default service account: {account}"
    )]
    Settle {
        /// Whether the CRD was established.
        established: bool,
        /// Whether the `default` service account existed.
        account: bool,
    },
    /// The state directory.
    #[error("preparing {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A running control plane. Dropping it stops every component.
pub struct ControlPlane {
    /// The lab's endpoint (the proxy) that kubeconfigs point at.
    pub endpoint: SocketAddr,
    /// The API server's own address (https).
    pub apiserver: SocketAddr,
    /// The lab's client (administrator).
    pub client: Upstream,
    /// The credentials.
    pub pki: Pki,
    // Declared last so it drops last: stops in reverse start order below.
    components: Vec<Component>,
    proxy_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("endpoint", &self.endpoint)
            .field("apiserver", &self.apiserver)
            .finish_non_exhaustive()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.proxy_task.abort();
        // kwok, the controllers and the scheduler before the API server,
        // the API server before etcd.
        while let Some(c) = self.components.pop() {
            tracing::debug!(component = c.name(), "stopping");
            drop(c);
        }
    }
}

impl ControlPlane {
    /// Each component's name and process id, in start order.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.components
            .iter()
            .map(|c| (c.name().to_owned(), c.pid()))
            .collect()
    }

    /// The kubeconfig users get: the proxy, with the administrator's token.
    pub fn kubeconfig(&self) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.pki.ca_pem);
        tidepool_lab_kube::render_kubeconfig_for(
            &format!("https://{}", self.endpoint),
            self.pki.admin_token(),
            Some(&ca),
        )
    }
}

fn free_port() -> Result<u16, UpstreamError> {
    let io = |source| UpstreamError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
    Ok(l.local_addr().map_err(io)?.port())
}

/// Polls `ready` every 100 ms (real time) until it holds, failing early when
/// `component` exits.
async fn wait_ready<F, Fut>(component: &mut Component, mut ready: F) -> Result<(), ProcessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        component.check_alive()?;
        if ready().await {
            return Ok(());
        }
        if started.elapsed() > STARTUP_LIMIT {
            return Err(component.timeout(STARTUP_LIMIT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn path_arg(flag: &str, path: &Path) -> String {
    format!("--{flag}={}", path.display())
}

/// Starts etcd, the API server, the scheduler, the controller-manager and
/// kwok under `state_dir/upstream`, and the proxy (which applies the lab's
/// `faults`); returns once the API server answers `/readyz` and every
/// component runs.
///
/// # Errors
/// [`UpstreamError`] naming the component, with the end of its log.
pub async fn start(
    state_dir: &Path,
    clock: &SimClock,
    faults: &Arc<Faults>,
) -> Result<ControlPlane, UpstreamError> {
    let map = ClockMap::of(clock);
    let (dir, pki) = fresh_dir(state_dir)?;
    let mut components = Vec::new();

    let etcd = start_etcd(&dir).await?;
    let etcd_url = etcd.0;
    components.push(etcd.1);

    let (apiserver, server, api, client) = start_apiserver(&dir, &pki, &etcd_url, map).await?;
    components.push(api);

    for (name, user, extra) in [
        ("kube-scheduler", "system:kube-scheduler", scheduler_args()),
        (
            "kube-controller-manager",
            "system:kube-controller-manager",
            controller_manager_args(&pki),
        ),
        ("kwok", "kwok-controller", kwok_args()),
    ] {
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        pki.write_kubeconfig(&kubeconfig, &server, user)?;
        let mut all = vec![path_arg("kubeconfig", &kubeconfig)];
        all.extend(extra);
        components.push(Component::spawn(name, &dir, &all, None)?);
    }

    let (endpoint, proxy_task) = proxy::serve(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        proxy::Upstream {
            server: &server,
            ca_pem: &pki.ca_pem,
            serving: &pki.serving_pem,
            faults: faults.clone(),
            clock: clock.clone(),
        },
    )
    .await?;
    Ok(ControlPlane {
        endpoint,
        apiserver,
        client,
        pki,
        components,
        proxy_task,
    })
}

/// Starts only etcd and the API server under `state_dir/upstream`, with no
/// scheduler, controllers, kwok or proxy: `endpoint` is the API server
/// itself and nothing maps time. For benchmarks that load plain objects
/// and measure a client against the real API server alone.
///
/// # Errors
/// [`UpstreamError`] naming the component, with the end of its log.
pub async fn start_api_only(state_dir: &Path) -> Result<ControlPlane, UpstreamError> {
    let (dir, pki) = fresh_dir(state_dir)?;
    let (etcd_url, etcd) = start_etcd(&dir).await?;
    let (apiserver, _, api, client) =
        start_apiserver(&dir, &pki, &etcd_url, ClockMap::new(0, 1.0)).await?;
    Ok(ControlPlane {
        endpoint: apiserver,
        apiserver,
        client,
        pki,
        components: vec![etcd, api],
        proxy_task: tokio::spawn(async {}),
    })
}

/// `state_dir/upstream`, emptied, with fresh credentials in it.
fn fresh_dir(state_dir: &Path) -> Result<(PathBuf, Pki), UpstreamError> {
    let dir = state_dir.join("upstream");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| UpstreamError::Io {
        path: dir.clone(),
        source,
    })?;
    let pki = pki::create(&dir)?;
    Ok((dir, pki))
}

/// The API server, started against etcd at `etcd_url` and waited for until
/// `/readyz` answers: its address, its https URL, the process and the
/// lab's client (timestamps mapped by `map`).
async fn start_apiserver(
    dir: &Path,
    pki: &Pki,
    etcd_url: &str,
    map: ClockMap,
) -> Result<(SocketAddr, String, Component, Upstream), UpstreamError> {
    let port = free_port()?;
    let apiserver = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = format!("https://{apiserver}");
    let mut api = Component::spawn(
        "kube-apiserver",
        dir,
        &apiserver_args(pki, etcd_url, port),
        None,
    )?;
    let client = Upstream::new(&server, &pki.ca_pem, pki.admin_token(), map)?;
    let probe = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())
                .map_err(|e| client::ClientError::Build(e.to_string()))?,
        )
        .build()
        .map_err(|e| client::ClientError::Build(e.to_string()))?;
    let readyz = format!("{server}/readyz");
    wait_ready(&mut api, || {
        let req = probe.get(&readyz).bearer_auth(pki.admin_token()).send();
        async move { req.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await?;
    Ok((apiserver, server, api, client))
}

async fn start_etcd(dir: &Path) -> Result<(String, Component), UpstreamError> {
    let client_port = free_port()?;
    let peer_port = free_port()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("etcd");
    let mut etcd = Component::spawn(
        "etcd",
        dir,
        &[
            "--name=lab".to_owned(),
            path_arg("data-dir", &data),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=lab={peer_url}"),
            "--unsafe-no-fsync=true".to_owned(),
            // Room for a benchmark's 30,000 full-size pods (the default
            // quota is 2 GiB); the database grows only as it is used.
            "--quota-backend-bytes=8589934592".to_owned(),
            "--log-level=warn".to_owned(),
        ],
        Some(&data),
    )?;
    let http = reqwest::Client::new();
    let health = format!("{client_url}/health");
    wait_ready(&mut etcd, || {
        let req = http.get(&health).send();
        async move { req.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await?;
    Ok((client_url, etcd))
}

fn apiserver_args(pki: &Pki, etcd: &str, port: u16) -> Vec<String> {
    let mut a = args(&[
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--endpoint-reconciler-type=none",
        "--max-requests-inflight=2000",
        "--max-mutating-requests-inflight=1000",
    ]);
    a.push(format!("--secure-port={port}"));
    a.push(format!("--etcd-servers={etcd}"));
    a.push(path_arg("tls-cert-file", &pki.serving_cert));
    a.push(path_arg("tls-private-key-file", &pki.serving_key));
    a.push(path_arg("client-ca-file", &pki.ca_cert));
    a.push(path_arg("token-auth-file", &pki.token_file));
    a.push(path_arg(
        "service-account-key-file",
        &pki.service_account_public,
    ));
    a.push(path_arg(
        "service-account-signing-key-file",
        &pki.service_account_key,
    ));
    if let Some(dir) = pki.ca_cert.parent() {
        a.push(path_arg("cert-dir", dir));
    }
    a
}

fn scheduler_args() -> Vec<String> {
    args(&[
        "--leader-elect=false",
        "--secure-port=0",
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
    ])
}

fn controller_manager_args(pki: &Pki) -> Vec<String> {
    let mut a = args(&[
        "--leader-elect=false",
        "--secure-port=0",
        "--use-service-account-credentials=false",
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
        // What the lab's scenarios need: workloads, garbage collection,
        // node lifecycle (NotReady/unreachable taints, eviction),
        // disruption budgets, volume attachment, and what pods need to be
        // admitted (service accounts and their tokens, namespaces).
        "--controllers=deployment-controller,replicaset-controller,daemonset-controller,\
statefulset-controller,job-controller,garbage-collector-controller,\
node-lifecycle-controller,taint-eviction-controller,disruption-controller,\
persistentvolume-attach-detach-controller,pod-garbage-collector-controller,\
serviceaccount-controller,serviceaccount-token-controller,namespace-controller,\
endpointslice-controller",
    ]);
    a.push(path_arg(
        "service-account-private-key-file",
        &pki.service_account_key,
    ));
    a.push(path_arg("root-ca-file", &pki.ca_cert));
    a
}

fn kwok_args() -> Vec<String> {
    vec![
        "--manage-all-nodes=false".to_owned(),
        format!(
            "--manage-nodes-with-label-selector={}={}",
            KWOK_LABEL.0, KWOK_LABEL.1
        ),
        "--manage-nodes-with-annotation-selector=".to_owned(),
        format!(
            "--disregard-status-with-annotation-selector={}={}",
            KWOK_HANDS_OFF.0, KWOK_HANDS_OFF.1
        ),
        "--cidr=10.244.0.0/16".to_owned(),
        "--node-ip=10.0.0.1".to_owned(),
        "--node-lease-duration-seconds=40".to_owned(),
        "--server-address=".to_owned(),
    ]
}

/// Waits (real time) until the WorkerClaim CRD is established and the
/// `default` namespace has its service account, which the API server's
/// admission requires before it takes pods there.
///
/// # Errors
/// [`UpstreamError::Settle`] after [`STARTUP_LIMIT`].
pub async fn wait_settled(kube: &crate::LabKube) -> Result<(), UpstreamError> {
    let started = Instant::now();
    loop {
        let crd = kube
            .get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "workerclaims.tidepool.dev",
            )
            .ok();
        let established = crd.is_some_and(|crd| {
            crd["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            })
        });
        let account = kube
            .get("v1", "ServiceAccount", "default", "default")
            .is_ok();
        // Established can come a moment before the API server serves the
        // resource; a list that answers is the proof.
        let established = established
            && kube
                .list("tidepool.dev/v1alpha1", "WorkerClaim", "", "")
                .is_ok();
        if established && account {
            return Ok(());
        }
        if started.elapsed() > STARTUP_LIMIT {
            return Err(UpstreamError::Settle {
                established,
                account,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
