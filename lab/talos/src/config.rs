//! Loading and validating the machine configuration a node receives through
//! `ApplyConfiguration` (or at boot), the way Talos does it, restricted to
//! what the lab needs: a worker machine.
//!
//! Talos loads a config in two steps, and the emulator keeps both, with
//! their distinct error shapes:
//! 1. *decode* (`configloader.NewFromBytes`): multi-document YAML, each
//!    document recognised as the `v1alpha1` document (no `kind`, top-level
//!    `version`/`machine`/`cluster`/`debug`/`persist`) or as a typed
//!    document (`apiVersion` + `kind`); duplicates and unknown keys are
//!    rejected. A failure becomes a plain error, which gRPC reports with code
//!    `Unknown` and the message `failed to parse config: ...`.
//! 2. *validate*: errors are collected and reported together in the
//!    `go-multierror` format, with code `InvalidArgument` and the message
//!    `configuration validation failed: N error(s) occurred: ...`.
//!
//! The lab emulates worker machines in detail; a config of type
//! `controlplane` (or the legacy `init`) is accepted so the lab's control
//! plane runs what a real one runs (etcd and trustd besides the worker's
//! services), without the worker-only CA rules.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Why a machine configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bytes are not a loadable Talos configuration (YAML syntax,
    /// unknown document kinds, unknown keys, duplicates, no documents).
    #[error("failed to parse config: {0}")]
    Load(String),
    /// The configuration loaded but failed validation; one entry per
    /// problem, in the order Talos checks them.
    #[error("configuration validation failed: {}", multierror(.0))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// A stable category string for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Load(_) => "config_load",
            ConfigError::Invalid(_) => "config_invalid",
        }
    }
}

/// Formats errors like Go's `hashicorp/go-multierror`, which Talos uses.
fn multierror(errors: &[String]) -> String {
    let mut out = if errors.len() == 1 {
        "1 error occurred:\n".to_owned()
    } else {
        format!("{} errors occurred:\n", errors.len())
    };
    for e in errors {
        out.push_str("\t* ");
        out.push_str(e);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A taint as `machine.kubelet.extraConfig.registerWithTaints` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterTaint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A loaded and validated worker machine configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    raw: String,
    v1alpha1: Value,
    hostname: Option<String>,
    control_plane: bool,
    warnings: Vec<String>,
}

/// Document kinds (API version `v1alpha1`) the emulator accepts beside the
/// `v1alpha1` document; their content is not interpreted except
/// `HostnameConfig`.
const KNOWN_KINDS: &[&str] = &[
    "HostnameConfig",
    "ResolverConfig",
    "TimeSyncConfig",
    "StaticHostConfig",
    "LinkConfig",
    "DHCPv4Config",
    "DHCPv6Config",
    "LinkAliasConfig",
    "VLANConfig",
    "BondConfig",
    "BridgeConfig",
    "KubeSpanEndpointsConfig",
    "EthernetConfig",
    "NetworkRuleConfig",
    "NetworkDefaultActionConfig",
    "ExtensionServiceConfig",
    "UserVolumeConfig",
    "VolumeConfig",
    "RawVolumeConfig",
    "ExistingVolumeConfig",
    "SwapVolumeConfig",
    "ZswapConfig",
    "KmsgLogConfig",
    "EventSinkConfig",
    "WatchdogTimerConfig",
    "TrustedRootsConfig",
    "SideroLinkConfig",
    "PCIDriverRebindConfig",
    "RunDefaultsConfig",
    "EnvironmentConfig",
];

const V1ALPHA1_KEYS: &[&str] = &["version", "debug", "persist", "machine", "cluster"];
const HOSTNAME_CONFIG_KEYS: &[&str] = &["apiVersion", "kind", "hostname", "auto"];

impl MachineConfig {
    /// Loads and validates `data` as a worker machine configuration.
    ///
    /// # Errors
    /// [`ConfigError::Load`] when the bytes cannot be decoded as Talos
    /// configuration documents, [`ConfigError::Invalid`] when they decode
    /// but are not a valid worker configuration.
    pub fn parse(data: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(data)
            .map_err(|e| ConfigError::Load(format!("decode error: yaml: invalid UTF-8: {e}")))?;
        let docs = decode(text)?;
        validate(text, docs)
    }

    /// The configuration exactly as received.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The `v1alpha1` document as a JSON value (for fields this type has
    /// no accessor for).
    pub fn v1alpha1(&self) -> &Value {
        &self.v1alpha1
    }

    /// The static hostname: `HostnameConfig.hostname`, else
    /// `machine.network.hostname`; `None` when the machine picks its own.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// Whether `machine.type` is `controlplane` (or the legacy `init`).
    pub fn is_control_plane(&self) -> bool {
        self.control_plane
    }

    /// Validation warnings (returned to the client in the apply reply).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `machine.nodeLabels`.
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        string_map(self.v1alpha1.pointer("/machine/nodeLabels"))
    }

    /// `machine.nodeAnnotations`.
    pub fn node_annotations(&self) -> BTreeMap<String, String> {
        string_map(self.v1alpha1.pointer("/machine/nodeAnnotations"))
    }

    /// `machine.nodeTaints` (`key: "value:Effect"` or `key: "Effect"`).
    pub fn node_taints(&self) -> BTreeMap<String, String> {
        string_map(self.v1alpha1.pointer("/machine/nodeTaints"))
    }

    /// `machine.kubelet.extraConfig.registerWithTaints`.
    pub fn register_with_taints(&self) -> Vec<RegisterTaint> {
        let Some(Value::Array(items)) = self
            .v1alpha1
            .pointer("/machine/kubelet/extraConfig/registerWithTaints")
        else {
            return Vec::new();
        };
        items
            .iter()
            .map(|t| RegisterTaint {
                key: scalar(t.get("key")).unwrap_or_default(),
                value: scalar(t.get("value")).unwrap_or_default(),
                effect: scalar(t.get("effect")).unwrap_or_default(),
            })
            .collect()
    }

    /// `cluster.controlPlane.endpoint`, if set.
    pub fn control_plane_endpoint(&self) -> Option<String> {
        scalar(self.v1alpha1.pointer("/cluster/controlPlane/endpoint"))
    }
}

fn scalar(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar(Some(v)).unwrap_or_default()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// One decoded document with the line it starts on.
#[derive(Debug)]
struct Doc {
    line: usize,
    kind: DocKind,
}

#[derive(Debug)]
enum DocKind {
    V1Alpha1(Value),
    Typed {
        kind: String,
        body: Map<String, Value>,
    },
}

/// Splits a YAML stream into documents at `---` markers, keeping the line
/// each document's content starts on (1-based).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start.unwrap_or(i + 1), std::mem::take(&mut current)));
            start = None;
            if let Some(rest) = trimmed.strip_prefix("--- ") {
                current.push_str(rest);
                current.push('\n');
                start = Some(i + 1);
            }
            continue;
        }
        let content = line.trim_start();
        if start.is_none() && !content.is_empty() && !content.starts_with('#') {
            start = Some(i + 1);
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start.unwrap_or(1), current));
    docs
}

fn decode(text: &str) -> Result<Vec<Doc>, ConfigError> {
    let mut decoded = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, source) in split_documents(text) {
        let value: Option<Value> = serde_saphyr::from_str(&source)
            .map_err(|e| ConfigError::Load(format!("decode error: {e}")))?;
        let map = match value {
            None | Some(Value::Null) => continue,
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(ConfigError::Load(format!(
                    "expected a YAML document at line {line}"
                )));
            }
        };
        let api_version = scalar(map.get("apiVersion")).unwrap_or_default();
        let kind_field = scalar(map.get("kind")).unwrap_or_default();
        let name = scalar(map.get("name")).unwrap_or_default();
        let id_kind = if kind_field.is_empty() {
            "v1alpha1".to_owned()
        } else {
            kind_field.clone()
        };
        if !seen.insert((api_version.clone(), id_kind.clone(), name.clone())) {
            return Err(ConfigError::Load(format!(
                "duplicate document {api_version}/{id_kind}/{name} is not allowed (line {line})"
            )));
        }
        let doc_err = |e: String| {
            ConfigError::Load(format!(
                "error decoding document {api_version}/{id_kind}/{name} (line {line}): {e}"
            ))
        };
        let is_v1alpha1 = ["machine", "cluster", "debug", "persist"]
            .iter()
            .any(|k| map.contains_key(*k));
        let version = if is_v1alpha1 {
            "v1alpha1".to_owned()
        } else {
            api_version.clone()
        };
        let kind = if version == "v1alpha1" && kind_field.is_empty() {
            check_unknown_keys(&map, V1ALPHA1_KEYS).map_err(doc_err)?;
            check_v1alpha1_strict(&map).map_err(doc_err)?;
            DocKind::V1Alpha1(Value::Object(map))
        } else if kind_field.is_empty() {
            return Err(doc_err("missing kind".to_owned()));
        } else if version.is_empty() {
            return Err(doc_err("missing apiVersion".to_owned()));
        } else if version != "v1alpha1" || !KNOWN_KINDS.contains(&kind_field.as_str()) {
            return Err(doc_err(format!(
                "\"{kind_field}\" \"{version}\": not registered"
            )));
        } else {
            if kind_field == "HostnameConfig" {
                check_unknown_keys(&map, HOSTNAME_CONFIG_KEYS).map_err(doc_err)?;
            }
            DocKind::Typed {
                kind: kind_field.clone(),
                body: map,
            }
        };
        decoded.push(Doc { line, kind });
    }
    if decoded.is_empty() {
        return Err(ConfigError::Load("config not found".to_owned()));
    }
    Ok(decoded)
}

fn check_unknown_keys(map: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    let unknown: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    unknown_keys_error(unknown)
}

fn unknown_keys_error(unknown: Map<String, Value>) -> Result<(), String> {
    if unknown.is_empty() {
        return Ok(());
    }
    let rendered = serde_saphyr::to_string(&Value::Object(unknown)).unwrap_or_default();
    Err(format!("unknown keys found during decoding:\n{rendered}"))
}

/// The strict-decoding traps the facts call out inside the v1alpha1
/// document (Talos rejects any unknown key; the emulator checks the ones
/// a provisioner is likely to get wrong).
fn check_v1alpha1_strict(map: &Map<String, Value>) -> Result<(), String> {
    if let Some(Value::Object(kubelet)) = map.get("machine").and_then(|m| m.get("kubelet"))
        && let Some(labels) = kubelet.get("nodeLabels")
    {
        let mut inner = Map::new();
        inner.insert("nodeLabels".to_owned(), labels.clone());
        let mut machine = Map::new();
        machine.insert("kubelet".to_owned(), Value::Object(inner));
        let mut top = Map::new();
        top.insert("machine".to_owned(), Value::Object(machine));
        return unknown_keys_error(top);
    }
    Ok(())
}

fn validate(text: &str, docs: Vec<Doc>) -> Result<MachineConfig, ConfigError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut v1alpha1 = None;
    let mut hostname_config: Option<(usize, Map<String, Value>)> = None;
    for doc in docs {
        match doc.kind {
            DocKind::V1Alpha1(value) => v1alpha1 = Some(value),
            DocKind::Typed { kind, body } if kind == "HostnameConfig" => {
                hostname_config = Some((doc.line, body));
            }
            DocKind::Typed { .. } => {}
        }
    }
    let Some(v1alpha1) = v1alpha1 else {
        return Err(ConfigError::Invalid(vec![
            "machine instructions are required".to_owned(),
        ]));
    };
    let Some(machine) = v1alpha1.get("machine").filter(|m| m.is_object()) else {
        return Err(ConfigError::Invalid(vec![
            "machine instructions are required".to_owned(),
        ]));
    };

    let machine_type = scalar(machine.get("type")).unwrap_or_default();
    match machine_type.as_str() {
        "worker" | "controlplane" => {}
        "join" => warnings.push(format!(
            "use \"worker\" instead of \"{machine_type}\" for machine type"
        )),
        "init" => warnings.push(format!(
            "use \"controlplane\" instead of \"{machine_type}\" for machine type"
        )),
        other => errors.push(format!("unknown machine type \"{other}\"")),
    }

    let control_plane = matches!(machine_type.as_str(), "controlplane" | "init");
    if !control_plane {
        worker_ca_rules(&v1alpha1, machine, &mut errors);
    }
    if v1alpha1.get("persist") == Some(&Value::Bool(false)) {
        errors.push(".persist should be enabled".to_owned());
    }

    let v1_hostname = scalar(machine.pointer("/network/hostname")).filter(|h| !h.is_empty());
    let mut hostname = v1_hostname.clone();
    if let Some((_, body)) = &hostname_config {
        let static_name = scalar(body.get("hostname")).filter(|h| !h.is_empty());
        let auto = scalar(body.get("auto")).filter(|a| !a.is_empty());
        if static_name.is_some() && auto.is_some() {
            errors.push("hostname and auto are mutually exclusive".to_owned());
        }
        if static_name.is_some() && v1_hostname.is_some() {
            errors.push("static hostname is already set in v1alpha1 config".to_owned());
        }
        if static_name.is_some() {
            hostname = static_name;
        }
    }

    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    Ok(MachineConfig {
        raw: text.to_owned(),
        v1alpha1,
        hostname,
        control_plane,
        warnings,
    })
}

/// The CA rules for non-control-plane machines: they trust the Talos CA
/// (its certificate or accepted CAs) but may not hold its key, nor the
/// Kubernetes CA's.
fn worker_ca_rules(v1alpha1: &Value, machine: &Value, errors: &mut Vec<String>) {
    let ca = machine.get("ca").filter(|c| !c.is_null());
    let accepted = machine
        .get("acceptedCAs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    match ca {
        None if !accepted => errors.push(
            "issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)"
                .to_owned(),
        ),
        None => {}
        Some(ca) => {
            let key = scalar(ca.get("key")).unwrap_or_default();
            let crt = scalar(ca.get("crt")).unwrap_or_default();
            if !key.is_empty() {
                errors.push(
                    "issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)"
                        .to_owned(),
                );
            }
            if crt.is_empty() && !accepted {
                errors.push("trusted CA certificates are required on non-controlplane nodes (.machine.ca.crt, .machine.acceptedCAs)".to_owned());
            }
        }
    }
    if scalar(v1alpha1.pointer("/cluster/ca/key")).is_some_and(|k| !k.is_empty()) {
        errors.push(
            "issuing Kubernetes API CA key is not allowed on non-controlplane nodes (.cluster.ca)"
                .to_owned(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER: &str = "version: v1alpha1\nmachine:\n  type: worker\n  token: t\n  ca:\n    crt: Y2E=\n    key: \"\"\n  network:\n    hostname: w-1\n  nodeLabels:\n    pool: burst\ncluster:\n  controlPlane:\n    endpoint: https://10.0.0.10:6443\n";

    #[test]
    fn a_generated_style_worker_config_loads_with_its_hostname_and_labels() {
        let cfg = MachineConfig::parse(WORKER.as_bytes()).unwrap();
        assert_eq!(cfg.hostname(), Some("w-1"));
        assert_eq!(
            cfg.node_labels().get("pool").map(String::as_str),
            Some("burst")
        );
        assert_eq!(
            cfg.control_plane_endpoint().as_deref(),
            Some("https://10.0.0.10:6443")
        );
    }

    #[test]
    fn a_hostname_config_document_names_the_machine() {
        let text = "version: v1alpha1\nmachine:\n  type: worker\n  ca:\n    crt: Y2E=\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: worker-33\n";
        let cfg = MachineConfig::parse(text.as_bytes()).unwrap();
        assert_eq!(cfg.hostname(), Some("worker-33"));
    }

    #[test]
    fn two_static_hostnames_are_refused() {
        let text =
            format!("{WORKER}---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: x\n");
        let err = MachineConfig::parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration validation failed: 1 error occurred:\n\t* static hostname is already set in v1alpha1 config\n\n"
        );
    }

    #[test]
    fn errors_are_listed_in_the_go_multierror_format() {
        let text = "version: v1alpha1\nmachine:\n  type: bogus\npersist: false\n";
        let err = MachineConfig::parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration validation failed: 3 errors occurred:\n\t* unknown machine type \"bogus\"\n\t* issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)\n\t* .persist should be enabled\n\n"
        );
    }

    #[test]
    fn a_document_without_version_or_machine_is_missing_its_kind() {
        let err = MachineConfig::parse(b"foo: bar\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to parse config: error decoding document /v1alpha1/ (line 1): missing kind"
        );
    }

    #[test]
    fn a_scalar_document_is_not_a_config() {
        let err = MachineConfig::parse(b"# hello\njust some text\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to parse config: expected a YAML document at line 2"
        );
    }

    #[test]
    fn an_empty_stream_has_no_config() {
        let err = MachineConfig::parse(b"---\n").unwrap_err();
        assert_eq!(err.to_string(), "failed to parse config: config not found");
    }

    #[test]
    fn kubelet_node_labels_is_an_unknown_key() {
        let text = "version: v1alpha1\nmachine:\n  type: worker\n  kubelet:\n    nodeLabels:\n      a: b\n";
        let err = MachineConfig::parse(text.as_bytes()).unwrap_err();
        assert!(matches!(err, ConfigError::Load(_)));
        assert!(
            err.to_string()
                .contains("unknown keys found during decoding"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_documents_are_refused_with_their_line() {
        let text = "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: b\n";
        let err = MachineConfig::parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to parse config: duplicate document v1alpha1/HostnameConfig/ is not allowed (line 5)"
        );
    }

    #[test]
    fn broken_yaml_is_a_decode_error() {
        let err = MachineConfig::parse(b"machine: [unclosed\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to parse config: decode error: "),
            "{err}"
        );
    }
}
