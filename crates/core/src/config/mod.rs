//! Tidepool's configuration file (spec §10): the schema, its validation and
//! the working objects built from it.
//!
//! Loading has two stages. [`validate`] parses the YAML and checks every
//! rule, collecting *all* problems, each with its field path and
//! line:column; it never stops at the first one. Only a document without
//! errors is then [built](ValidConfig::build) into a [`Config`], whose pools
//! refer to resolved sizes and whose patterns are compiled.
//!
//! Secrets (the Proxmox API token, the Talos worker config and client keys)
//! are only ever given by reference — an environment variable, a file, or a
//! Kubernetes Secret — never inline.

mod reader;
mod schema;
pub mod yaml;

pub use schema::mcp::TOOLS as MCP_TOOLS;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::conventions::{LabelKeys, Taint};
use crate::cron::Cron;
use crate::pool::{Limits, PoolKind, Size};
use crate::safety::ProtectedNames;

/// The schema version this build understands.
pub const SCHEMA_VERSION: &str = "v1alpha1";

/// A complete, commented configuration that passes validation; printed by
/// `tidepool config example`.
pub const EXAMPLE: &str = include_str!("example.yaml");

/// One problem in a configuration document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Field path, e.g. `pools[1].limits.minNodes` (empty for the document).
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, and how to fix it when that is known.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.path, self.message
            )
        }
    }
}

/// Every problem found in a document, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} configuration error{}",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A reference to a secret; the value itself never appears in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretRef {
    /// An environment variable of the Tidepool process.
    Env(String),
    /// A file; relative paths are relative to the configuration file.
    File(String),
    /// A key of a Kubernetes Secret.
    Secret {
        /// Namespace (defaults to Tidepool's own).
        namespace: Option<String>,
        /// Secret name.
        name: String,
        /// Key within the Secret's data.
        key: String,
    },
}

impl fmt::Display for SecretRef {
    /// Describes where the secret lives, never its value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env:{var}"),
            Self::File(path) => write!(f, "file:{path}"),
            Self::Secret {
                namespace,
                name,
                key,
            } => match namespace {
                Some(ns) => write!(f, "secret:{ns}/{name}#{key}"),
                None => write!(f, "secret:{name}#{key}"),
            },
        }
    }
}

/// How the Proxmox API's TLS certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TlsVerify {
    /// Against the system's trust roots.
    System,
    /// Against a CA certificate file (PEM).
    CaFile(String),
    /// By pinning the SHA-256 fingerprint of the server certificate
    /// (upper-case hex pairs separated by colons, as Proxmox shows it).
    Fingerprint(String),
    /// Not at all; allowed only when asked for explicitly, and warned about.
    InsecureSkipVerify,
}

/// A Proxmox VE cluster Tidepool creates workers on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxProvider {
    /// Name pools refer to.
    pub name: String,
    /// API base URL, ending in `/api2/json`.
    pub endpoint: String,
    /// The API token `user@realm!tokenid=secret`, by reference.
    pub token: SecretRef,
    /// Certificate verification.
    pub tls: TlsVerify,
    /// Hosts (Proxmox nodes) workers may be placed on.
    pub hosts: Vec<String>,
    /// First VMID Tidepool may use.
    pub vmid_lower: u32,
    /// Last VMID Tidepool may use.
    pub vmid_upper: u32,
    /// Host memory kept free for the host itself, MiB.
    pub host_memory_reserve_mib: u64,
    /// Memory each VM costs the host beyond its configured memory, MiB.
    pub vm_memory_overhead_mib: u64,
    /// vCPUs that may be allocated per physical core.
    pub cpu_overcommit: f64,
    /// Storage the worker disks are cloned to.
    pub storage: String,
    /// Proxmox resource pool the VMs join, if any.
    pub resource_pool: Option<String>,
    /// Full clones (independent disks) rather than linked clones.
    pub full_clone: bool,
    /// The attach-limited CSI driver of its VMs and its fallback limit.
    pub volumes: VolumeAttach,
    /// Clones Tidepool runs at once on one host and storage
    /// (`maxParallelClones`, default 3): Proxmox allocates each clone's
    /// volume under the storage's lock, and a clone that waits too long
    /// for it fails.
    pub max_parallel_clones: u32,
}

/// The block volumes a provider's VMs can attach (spec §5): the CSI driver
/// whose volumes are attach-limited (proxmox-csi) and the limit assumed
/// for a node whose CSINode does not report one yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeAttach {
    /// The CSI driver's name (`csi.proxmox.sinextra.dev`).
    #[serde(rename = "csiDriver")]
    pub driver: String,
    /// Volumes a node can attach when its CSINode says nothing (24, the
    /// plugin's default).
    pub attach_limit: u32,
}

impl Default for VolumeAttach {
    fn default() -> Self {
        Self {
            driver: crate::volumes::PROXMOX_CSI_DRIVER.to_owned(),
            attach_limit: crate::volumes::DEFAULT_ATTACH_LIMIT,
        }
    }
}

/// How new workers receive their configuration and join the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "method")]
pub enum JoinMethod {
    /// Apply a Talos machine config over the Talos API in maintenance mode,
    /// to the address the guest agent reports.
    TalosApi {
        /// Port of the Talos API (50000).
        port: u16,
    },
    /// Serve user-data over HTTP and point the VM at it with an SMBIOS
    /// serial `ds=nocloud;s=URL/`.
    Nocloud {
        /// What the user-data is.
        flavor: NocloudFlavor,
        /// Address Tidepool's user-data server listens on.
        listen: String,
        /// Base URL the VMs reach that server at.
        advertise_url: String,
    },
}

/// What a nocloud image expects as user-data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NocloudFlavor {
    /// A Talos machine config (Talos nocloud images).
    Talos,
    /// A `#cloud-config` that runs `kubeadm join` (cloud-init images).
    CloudInit,
}

/// Join settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    /// The method.
    pub method: JoinMethod,
    /// The base worker machine config (Talos) or user-data template
    /// (cloud-init), by reference: it holds cluster secrets.
    pub worker_config: SecretRef,
    /// A talosconfig for day-2 operations (reboot, shutdown, upgrade), by reference.
    pub talosconfig: Option<SecretRef>,
    /// The `kubeadm join …` command (it carries a bootstrap token), by
    /// reference; required by the nocloud cloud-init flavor.
    pub join_command: Option<SecretRef>,
    /// How long a new node may take to register and turn Ready.
    #[serde(with = "secs")]
    pub registration_timeout: Duration,
}

/// A threshold held for a duration (CPU or memory request pressure).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pressure {
    /// Fraction of allocatable requested, in (0, 1].
    pub threshold: f64,
    /// How long it must hold.
    #[serde(with = "secs")]
    pub for_duration: Duration,
}

/// When a pool grows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUp {
    /// Unschedulable pods needed to trigger.
    pub pending_pods: u32,
    /// How long they must have waited.
    #[serde(with = "secs")]
    pub pending_for: Duration,
    /// Workers provisioned in parallel per batch.
    pub batch_size: u32,
    /// CPU request pressure trigger, if enabled.
    pub cpu_pressure: Option<Pressure>,
    /// Memory request pressure trigger, if enabled.
    pub memory_pressure: Option<Pressure>,
}

/// How a pool shrinks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDown {
    /// Largest fraction of the pool removed per interval.
    pub max_fraction: f64,
    /// Wait between removal batches.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// Drains running at once.
    pub max_concurrent: u32,
    /// How long a drain may take before it is given up.
    #[serde(with = "secs")]
    pub drain_timeout: Duration,
    /// Grace period given to evicted pods.
    #[serde(with = "secs")]
    pub grace_period: Duration,
}

/// Utilization targets of a permanent pool.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    /// Desired fraction of allocatable requested.
    pub target: f64,
    /// Grow above this.
    pub scale_up_above: f64,
    /// Shrink below this (never under `minNodes`).
    pub scale_down_below: f64,
}

/// A scheduled pre-scaling window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheduled {
    /// When the window opens (five-field cron, UTC).
    #[serde(serialize_with = "cron_text")]
    pub cron: Cron,
    /// Workers the pool holds at least while the window is open.
    pub min_nodes: u32,
    /// How long the window stays open.
    #[serde(with = "secs")]
    pub duration: Duration,
}

/// A pool of workers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    /// Name (a DNS label), used in labels, VM names and claims.
    pub name: String,
    /// Kind.
    pub kind: PoolKind,
    /// Provider the workers are created on.
    pub provider: String,
    /// Sizes offered, smallest first as configured.
    pub sizes: Vec<String>,
    /// Template name (with `{size}` substituted) or VMID.
    pub template: String,
    /// Hosts the pool may use (a subset of the provider's).
    pub hosts: Vec<String>,
    /// Limits.
    pub limits: Limits,
    /// TTL of new workers (burst and spot default 4h; none for permanent).
    #[serde(with = "opt_secs")]
    pub ttl: Option<Duration>,
    /// Idle timeout (burst default 30m).
    #[serde(with = "opt_secs")]
    pub idle_timeout: Option<Duration>,
    /// Scale-up triggers.
    pub scale_up: ScaleUp,
    /// Scale-down policy.
    pub scale_down: ScaleDown,
    /// Utilization targets (permanent pools).
    pub utilization: Option<Utilization>,
    /// Scheduled pre-scaling.
    pub schedule: Vec<Scheduled>,
    /// Extra labels for the pool's nodes.
    pub labels: BTreeMap<String, String>,
    /// Extra taints for the pool's nodes (besides the kind's defaults).
    pub taints: Vec<Taint>,
    /// How the pool's sick workers are repaired (spec §7).
    pub repair: crate::health::RepairPolicy,
    /// The cold spares the pool keeps, if any.
    pub spares: Option<crate::spares::Spares>,
}

impl Pool {
    /// The template for `size`: `{size}` replaced by the size name.
    pub fn template_for(&self, size: &str) -> String {
        self.template.replace("{size}", size)
    }
}

/// HTTP, leader-election and MCP settings of the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// `/metrics`, `/healthz`, `/readyz` listen address.
    pub metrics_addr: String,
    /// Namespace of Tidepool's Lease and Events.
    pub namespace: String,
    /// Whether replicas elect a leader with a Lease.
    pub leader_election: bool,
    /// Name of the Lease.
    pub lease_name: String,
    /// Lease duration, in real time (never scaled by `--time-scale`): a
    /// leader that has not renewed within two thirds of it stops acting,
    /// and a standby takes over once it has seen the Lease unchanged for
    /// all of it.
    #[serde(with = "secs")]
    pub lease_duration: Duration,
    /// The MCP server's settings: streamable HTTP and who may use it.
    pub mcp: McpSettings,
    /// How long a VM carrying Tidepool's marker must have been without its
    /// claim before it is removed as an orphan (it protects clones in
    /// flight).
    #[serde(with = "secs")]
    pub orphan_grace_period: Duration,
}

/// What an MCP bearer token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum McpScope {
    /// The read-only tools.
    Read,
    /// Every tool.
    Write,
}

/// One MCP bearer token: a name (the actor in the audit trail), a scope,
/// and where its value lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpToken {
    /// Who holds it; recorded as the actor of every call made with it.
    pub name: String,
    /// What it may do.
    pub scope: McpScope,
    /// Where the token's value lives.
    pub token_from: SecretRef,
}

/// What a destructive tool does when the client cannot be asked to confirm
/// (it declared no elicitation support).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmFallback {
    /// Go ahead, except with `force`, which is refused.
    #[default]
    RefuseForce,
    /// Refuse every destructive call.
    Refuse,
    /// Go ahead.
    Allow,
}

/// The MCP server's settings (`server.mcp`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpSettings {
    /// Streamable-HTTP listen address, if enabled.
    pub listen: Option<String>,
    /// The bearer tokens accepted over HTTP.
    pub tokens: Vec<McpToken>,
    /// Browser origins allowed to call (`scheme://host[:port]`); a request
    /// carrying any other `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted besides the loopback names; empty
    /// accepts any host when listening beyond loopback.
    pub allowed_hosts: Vec<String>,
    /// Offer only the read-only tools.
    pub read_only: bool,
    /// Offer only these tools (every tool when `None`).
    pub tools: Option<Vec<String>>,
    /// What destructive tools do without a way to confirm.
    pub confirm_fallback: ConfirmFallback,
    /// TLS certificate and key (PEM files), to serve HTTPS.
    pub tls: Option<McpTls>,
}

/// The MCP server's certificate and key files (PEM); relative paths start
/// from the configuration file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpTls {
    /// Certificate chain file.
    pub cert_file: String,
    /// Private key file.
    pub key_file: String,
}

/// A validated, fully built configuration.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// How often the hypervisor is polled.
    #[serde(with = "secs")]
    pub polling_interval: Duration,
    /// Providers by name.
    pub providers: BTreeMap<String, ProxmoxProvider>,
    /// Join settings.
    pub join: Join,
    /// Sizes by name: the defaults of spec §2 merged with the file's.
    pub sizes: BTreeMap<String, SizeEntry>,
    /// Pools, in file order.
    pub pools: Vec<Pool>,
    /// Label keys.
    pub labels: LabelKeys,
    /// Node names that are never touched.
    #[serde(serialize_with = "protected_patterns")]
    pub protected: ProtectedNames,
    /// Controller settings.
    pub server: Server,
}

/// A size with its optional `workload-size` taint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SizeEntry {
    /// The size.
    #[serde(flatten)]
    pub size: Size,
    /// Whether workers of this size carry `workload-size=<name>:NoSchedule`.
    pub taint: bool,
}

impl Config {
    /// The attach-limited CSI drivers of all providers (usually one,
    /// proxmox-csi), whose volumes count against a node's attach limit.
    pub fn attach_limited_drivers(&self) -> std::collections::BTreeSet<String> {
        self.providers
            .values()
            .map(|p| p.volumes.driver.clone())
            .collect()
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The size called `name`.
    pub fn size(&self, name: &str) -> Option<&SizeEntry> {
        self.sizes.get(name)
    }

    /// Every template a pool clones its workers from, over all its sizes.
    pub fn templates(&self) -> std::collections::BTreeSet<String> {
        self.pools
            .iter()
            .flat_map(|p| p.sizes.iter().map(|s| p.template_for(s)))
            .collect()
    }
}

/// A document that passed validation, ready to [build](Self::build).
#[derive(Clone, Debug)]
pub struct ValidConfig(Config);

impl ValidConfig {
    /// Builds the working objects.
    pub fn build(self) -> Config {
        self.0
    }
}

/// Stage one: parses `text` and checks every rule.
///
/// # Errors
/// [`ConfigErrors`] holding every problem found, sorted by position.
pub fn validate(text: &str) -> Result<ValidConfig, ConfigErrors> {
    schema::validate(text).map(ValidConfig)
}

/// Both stages: validate, then build.
///
/// # Errors
/// As [`validate`].
pub fn load(text: &str) -> Result<Config, ConfigErrors> {
    validate(text).map(ValidConfig::build)
}

pub(crate) mod secs {
    //! A duration as human text (`5m`), for the config's JSON form.
    use std::time::Duration;
    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::Human(*d).to_string())
    }
}

mod opt_secs {
    use std::time::Duration;
    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&crate::duration::Human(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

fn cron_text<S: serde::Serializer>(c: &Cron, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

fn protected_patterns<S: serde::Serializer>(p: &ProtectedNames, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.patterns())
}
