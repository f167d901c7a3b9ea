//! `tidepool doctor`: every precondition of a configured setup, checked
//! read-only before Tidepool touches anything, each as a [`Check`] that
//! passes, warns or fails with the fix. The Proxmox checks (API and TLS,
//! the token's privileges, templates, PCI mappings, the VMID range) are in
//! [`proxmox`], the Kubernetes ones (API, CRD, RBAC) in [`kube`], the
//! join's (worker config, control-plane endpoint) in [`join`].
//!
//! Secrets are resolved to prove they resolve; their values are never put
//! into a check's message.

pub mod join;
pub mod kube;
pub mod proxmox;

use std::path::PathBuf;

use serde::Serialize;
use tidepool_core::config::{Config, SecretRef};

use crate::connect::resolve_secret;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The precondition holds.
    Pass,
    /// It holds, but something deserves a look.
    Warn,
    /// It does not hold: Tidepool would fail at this.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// A stable id, e.g. `proxmox.privileges` or `template burst/small`.
    pub id: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            status: Status::Pass,
            message: message.into(),
            fix: None,
        }
    }

    /// A failed check with its fix.
    pub fn fail(id: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// A warning with its fix.
    pub fn warn(id: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(id, message, fix)
        }
    }
}

/// Every check of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The checks in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed (warnings allowed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The check with `id`, if it ran.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Errors of the doctor's own plumbing (a check's failure is a [`Check`],
/// not an error).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The Kubernetes client could not be built from the kubeconfig.
    #[error("building the Kubernetes client")]
    Kubernetes(#[source] tidepool_cluster::ClusterError),
}

/// Where the doctor looks.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// Directory relative file references start from.
    pub config_dir: PathBuf,
    /// A kubeconfig; `None` for in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
}

/// The secrets a configuration refers to, named by their setting.
fn secret_refs(config: &Config) -> Vec<(String, SecretRef)> {
    let mut refs: Vec<(String, SecretRef)> = config
        .providers
        .values()
        .map(|p| (format!("providers.{}.tokenFrom", p.name), p.token.clone()))
        .collect();
    refs.push((
        "join.workerConfigFrom".into(),
        config.join.worker_config.clone(),
    ));
    if let Some(r) = &config.join.talosconfig {
        refs.push(("join.talosconfigFrom".into(), r.clone()));
    }
    if let Some(r) = &config.join.join_command {
        refs.push(("join.joinCommandFrom".into(), r.clone()));
    }
    refs
}

/// Runs every check against a loaded (so valid) configuration.
///
/// # Errors
/// [`DoctorError`] only when the Kubernetes client cannot be built at all;
/// everything else is a check.
pub async fn run(config: &Config, options: &DoctorOptions) -> Result<Report, DoctorError> {
    let mut report = Report::default();
    report.checks.push(Check::pass(
        "config",
        format!(
            "valid: {} pool(s), {} provider(s)",
            config.pools.len(),
            config.providers.len()
        ),
    ));
    let client = match &options.kubeconfig {
        Some(path) => tidepool_cluster::client_from_kubeconfig(path).await,
        None => tidepool_cluster::client_in_cluster(),
    }
    .map_err(DoctorError::Kubernetes)?;
    let namespace = config.server.namespace.clone();
    let mut secrets = std::collections::BTreeMap::new();
    for (setting, reference) in secret_refs(config) {
        match resolve_secret(&reference, &options.config_dir, &client, &namespace).await {
            Ok(value) => {
                secrets.insert(setting.clone(), value);
                report.checks.push(Check::pass(
                    format!("secret {setting}"),
                    format!("{reference} resolves"),
                ));
            }
            Err(e) => report.checks.push(Check::fail(
                format!("secret {setting}"),
                anyhow_chain(&e),
                format!("make {reference} hold the value (a file relative to the configuration, an environment variable, or a key of a Secret in {namespace})"),
            )),
        }
    }
    for provider in config.providers.values() {
        let token = secrets.get(&format!("providers.{}.tokenFrom", provider.name));
        proxmox::check(
            config,
            provider,
            token.map(String::as_str),
            options,
            &mut report,
        )
        .await;
    }
    kube::check(&client, &namespace, &mut report).await;
    join::check(
        config,
        secrets.get("join.workerConfigFrom").map(String::as_str),
        &mut report,
    )
    .await;
    Ok(report)
}

/// An error and its sources, joined with `: `.
pub(crate) fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
