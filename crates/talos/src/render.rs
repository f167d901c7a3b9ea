//! Rendering a worker's machine configuration from the user's base
//! `worker.yaml` (as `talosctl gen config` writes it) by targeted edits.
//!
//! Only the few places that make a machine *this* worker are touched:
//!
//! | what | where |
//! |---|---|
//! | hostname | `machine.network.hostname`, or the `hostname:` of a `HostnameConfig` document (Talos v1.12+) when the base has one — never both |
//! | labels | `machine.nodeLabels` |
//! | annotations | `machine.nodeAnnotations` |
//! | taints | `machine.kubelet.extraConfig.registerWithTaints` (`[{key, value, effect}]`) |
//!
//! # Why taints go to `registerWithTaints`, not `machine.nodeTaints`
//!
//! Talos applies `machine.nodeTaints` (and labels and annotations) with a
//! controller that updates the Node object *after* registration, using the
//! kubelet's own credentials on a worker. The Kubernetes `NodeRestriction`
//! admission plugin forbids a node to change its own taints, and because
//! the controller sends labels, annotations and taints in a single update,
//! the refused taint also keeps the labels and annotations from landing.
//! `registerWithTaints` is a kubelet setting: the kubelet sends the taints
//! in the Node it *creates*, which NodeRestriction allows. The price is that
//! they apply at first registration only; later taint changes are the
//! provisioner's job, with cluster credentials.
//!
//! For the same reason labels in the `kubernetes.io` / `k8s.io` namespaces
//! that a kubelet may not set on itself (e.g. `node-role.kubernetes.io/*`)
//! are refused here with [`RenderError::LabelNotSelfSettable`]: the
//! provisioner must apply them through the Kubernetes API.
//!
//! # How the edits are made
//!
//! The base is split into YAML documents at `---` lines. Documents that are
//! not edited are copied byte for byte. In the edited ones (the `v1alpha1`
//! document and, when present, `HostnameConfig`) only the lines of the keys
//! being set are replaced or inserted; comments and everything else stay as
//! written. The edit works on block-style YAML (what `talosctl` writes);
//! a parent key written in flow style (`kubelet: {image: x}`) is rewritten
//! as a block. After editing, each edited document is parsed again and
//! compared with the intended result; any difference is a
//! [`RenderError::Verification`] rather than a wrong config.
//!
//! The module stays one file (close to 800 lines) because its parts are
//! one algorithm: locating a key's lines, replacing or inserting them, and
//! verifying the result share the same line model, and splitting them
//! would only spread that model over files.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use tidepool_core::conventions::{NodeMetadata, Taint};
use tidepool_core::k8s_names;

/// The identity one worker gets in its machine configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerIdentity {
    /// The hostname (and so the Kubernetes node name).
    pub hostname: String,
    /// Node labels the node may set on itself.
    pub labels: BTreeMap<String, String>,
    /// Node annotations.
    pub annotations: BTreeMap<String, String>,
    /// Taints registered with the node.
    pub taints: Vec<Taint>,
}

impl WorkerIdentity {
    /// An identity from a hostname and the node metadata Tidepool's
    /// conventions produce for the worker.
    pub fn new(hostname: impl Into<String>, metadata: &NodeMetadata) -> Self {
        Self {
            hostname: hostname.into(),
            labels: metadata.labels.clone(),
            annotations: metadata.annotations.clone(),
            taints: metadata.taints.clone(),
        }
    }
}

/// Why a worker configuration could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A document of the base is not valid YAML.
    #[error("parsing document {document} of the base machine config: {message}")]
    Yaml {
        /// 1-based document number.
        document: usize,
        /// The parser's message (with its location in the document).
        message: String,
    },
    /// The base has no `v1alpha1` document (`version`/`machine`/...).
    #[error("the base machine config has no v1alpha1 document (with `machine:`)")]
    NoMachineDocument,
    /// The base has more than one document of a kind Talos allows once.
    #[error("the base machine config has more than one {kind} document")]
    DuplicateDocument {
        /// `v1alpha1` or the document kind.
        kind: String,
    },
    /// `machine.type` is not `worker`.
    #[error("the base machine config is for machine type `{found}`, expected `worker`")]
    NotAWorker {
        /// The type found (empty if missing).
        found: String,
    },
    /// The base sets a hostname both in `machine.network.hostname` and with
    /// a `HostnameConfig` document; Talos refuses such a config and it is
    /// unclear which one to replace.
    #[error(
        "the base machine config has both machine.network.hostname ({v1alpha1:?}) and a HostnameConfig document; keep only one of them"
    )]
    ConflictingHostnames {
        /// The `machine.network.hostname` value.
        v1alpha1: String,
    },
    /// A name in the worker identity is not valid Kubernetes syntax.
    #[error("invalid worker identity: {0}")]
    InvalidIdentity(String),
    /// A label a node may not set on itself (NodeRestriction).
    #[error(
        "label `{key}` cannot be set by the node itself (Kubernetes NodeRestriction); apply it through the Kubernetes API instead"
    )]
    LabelNotSelfSettable {
        /// The label key.
        key: String,
    },
    /// A key on the path to an edited field has a shape the editor cannot
    /// change (e.g. `machine.kubelet` is a list).
    #[error("cannot edit `{path}` in the base machine config: {reason}")]
    UnsupportedLayout {
        /// Dotted path of the key.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The edited document does not parse to the intended content (a bug
    /// of the editor on unusual YAML; the base is left as is).
    #[error("the edited machine config does not match the intended content: {0}")]
    Verification(String),
}

impl RenderError {
    /// A stable category string for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            RenderError::Yaml { .. } => "yaml",
            RenderError::NoMachineDocument => "no_machine_document",
            RenderError::DuplicateDocument { .. } => "duplicate_document",
            RenderError::NotAWorker { .. } => "not_a_worker",
            RenderError::ConflictingHostnames { .. } => "conflicting_hostnames",
            RenderError::InvalidIdentity(_) => "invalid_identity",
            RenderError::LabelNotSelfSettable { .. } => "label_not_self_settable",
            RenderError::UnsupportedLayout { .. } => "unsupported_layout",
            RenderError::Verification(_) => "verification",
        }
    }
}

/// Renders the machine configuration of one worker from the base
/// `worker.yaml`.
///
/// # Guarantees
/// - Documents other than the `v1alpha1` one and `HostnameConfig` are
///   copied byte for byte, in order, with their separators.
/// - Existing labels, annotations and `registerWithTaints` entries of the
///   base are kept unless the worker sets the same label/annotation key or
///   a taint with the same key and effect.
/// - The result parses to exactly the base plus the intended changes.
///
/// # Errors
/// See [`RenderError`]: an unparsable or non-worker base, a base with two
/// hostname forms, invalid names in `worker`, labels a node may not set on
/// itself, or a layout the editor cannot change.
pub fn render_worker_config(
    base_yaml: &str,
    worker: &WorkerIdentity,
) -> Result<String, RenderError> {
    validate_identity(worker)?;
    let mut docs = split_documents(base_yaml);

    let (machine_doc, hostname_doc) = find_documents(&docs)?;
    let (machine_index, machine) = machine_doc.ok_or(RenderError::NoMachineDocument)?;
    match machine.get("machine") {
        Some(Value::Object(_)) => {}
        _ => return Err(RenderError::NoMachineDocument),
    }
    let machine_type = machine
        .pointer("/machine/type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if machine_type != "worker" {
        return Err(RenderError::NotAWorker {
            found: machine_type.to_owned(),
        });
    }
    let v1_hostname = machine
        .pointer("/machine/network/hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty());
    if let (Some(h), Some(_)) = (v1_hostname, &hostname_doc) {
        return Err(RenderError::ConflictingHostnames {
            v1alpha1: h.to_owned(),
        });
    }

    // The v1alpha1 document.
    let mut editor = Editor::new(&docs[machine_index].body);
    let mut expected = machine.clone();
    if hostname_doc.is_none() {
        let value = Value::String(worker.hostname.clone());
        editor.upsert(
            &machine,
            &["machine", "network", "hostname"],
            &value,
            &value,
        )?;
        set_in(&mut expected, &["machine", "network", "hostname"], value);
    }
    let labels = merged_map(machine.pointer("/machine/nodeLabels"), &worker.labels);
    if !worker.labels.is_empty() {
        editor.upsert(&machine, &["machine", "nodeLabels"], &labels, &labels)?;
        set_in(&mut expected, &["machine", "nodeLabels"], labels);
    }
    let annotations = merged_map(
        machine.pointer("/machine/nodeAnnotations"),
        &worker.annotations,
    );
    if !worker.annotations.is_empty() {
        editor.upsert(
            &machine,
            &["machine", "nodeAnnotations"],
            &annotations,
            &annotations,
        )?;
        set_in(&mut expected, &["machine", "nodeAnnotations"], annotations);
    }
    if !worker.taints.is_empty() {
        let path = ["machine", "kubelet", "extraConfig", "registerWithTaints"];
        let (ordered, value) = merged_taints(
            machine.pointer("/machine/kubelet/extraConfig/registerWithTaints"),
            &worker.taints,
        )?;
        editor.upsert(&machine, &path, &ordered, &value)?;
        set_in(&mut expected, &path, value);
    }
    docs[machine_index].body = editor.finish();
    verify(&docs[machine_index].body, &expected)?;

    // The HostnameConfig document, when the base uses one.
    if let Some((index, parsed)) = hostname_doc {
        let mut editor = Editor::new(&docs[index].body);
        editor.remove(&["auto"]);
        let value = Value::String(worker.hostname.clone());
        editor.upsert(&parsed, &["hostname"], &value, &value)?;
        docs[index].body = editor.finish();
        let mut expected = parsed;
        if let Value::Object(map) = &mut expected {
            map.remove("auto");
        }
        set_in(&mut expected, &["hostname"], value);
        verify(&docs[index].body, &expected)?;
    }

    Ok(docs
        .iter()
        .map(|d| format!("{}{}", d.separator, d.body))
        .collect())
}

/// A document of the base: its index and its parsed body.
type FoundDocument = Option<(usize, Value)>;

/// The v1alpha1 document of a base and its HostnameConfig document, if any.
///
/// # Errors
/// An unparsable document, or two of either kind.
fn find_documents(docs: &[Document]) -> Result<(FoundDocument, FoundDocument), RenderError> {
    let mut machine_doc = None;
    let mut hostname_doc = None;
    for (i, doc) in docs.iter().enumerate() {
        let parsed: Option<Value> =
            serde_saphyr::from_str(&doc.body).map_err(|e| RenderError::Yaml {
                document: i + 1,
                message: e.to_string(),
            })?;
        let Some(Value::Object(map)) = parsed else {
            continue;
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        let is_v1alpha1 = kind.is_empty()
            && ["machine", "cluster", "version", "debug", "persist"]
                .iter()
                .any(|k| map.contains_key(*k));
        if is_v1alpha1 {
            if machine_doc.replace((i, Value::Object(map))).is_some() {
                return Err(RenderError::DuplicateDocument {
                    kind: "v1alpha1".to_owned(),
                });
            }
        } else if kind == "HostnameConfig"
            && hostname_doc.replace((i, Value::Object(map))).is_some()
        {
            return Err(RenderError::DuplicateDocument {
                kind: "HostnameConfig".to_owned(),
            });
        }
    }
    Ok((machine_doc, hostname_doc))
}

/// Checks names against the Kubernetes syntax and labels against what
/// NodeRestriction lets a kubelet set on its own node.
fn validate_identity(worker: &WorkerIdentity) -> Result<(), RenderError> {
    let invalid = |e: k8s_names::NameError| RenderError::InvalidIdentity(e.to_string());
    k8s_names::validate_dns_subdomain(&worker.hostname, "hostname").map_err(invalid)?;
    for (key, value) in &worker.labels {
        k8s_names::validate_qualified_name(key, "label key").map_err(invalid)?;
        k8s_names::validate_label_value(value).map_err(invalid)?;
        if !node_may_set_label(key) {
            return Err(RenderError::LabelNotSelfSettable { key: key.clone() });
        }
    }
    for key in worker.annotations.keys() {
        k8s_names::validate_qualified_name(key, "annotation key").map_err(invalid)?;
    }
    for taint in &worker.taints {
        k8s_names::validate_qualified_name(&taint.key, "taint key").map_err(invalid)?;
        k8s_names::validate_label_value(&taint.value).map_err(invalid)?;
    }
    Ok(())
}

/// Whether a kubelet may set `key` on its own Node (the kubelet's allowed
/// set in the `kubernetes.io` and `k8s.io` namespaces; any other namespace
/// is free).
pub fn node_may_set_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let in_namespace = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    if !in_namespace("kubernetes.io") && !in_namespace("k8s.io") {
        return true;
    }
    const ALLOWED_KEYS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    if ALLOWED_KEYS.contains(&key) {
        return true;
    }
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

fn merged_map(base: Option<&Value>, ours: &BTreeMap<String, String>) -> Value {
    let mut map = match base {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in ours {
        map.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(map)
}

/// One `registerWithTaints` entry, serialized in the `key, value, effect`
/// order people write.
#[derive(Serialize)]
#[serde(untagged)]
enum TaintEntry {
    Ours {
        key: String,
        value: String,
        effect: String,
    },
    Base(Value),
}

fn merged_taints(
    base: Option<&Value>,
    ours: &[Taint],
) -> Result<(Vec<TaintEntry>, Value), RenderError> {
    let base_items = match base {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(RenderError::UnsupportedLayout {
                path: "machine.kubelet.extraConfig.registerWithTaints".to_owned(),
                reason: "it is not a list".to_owned(),
            });
        }
    };
    let mut entries = Vec::new();
    let mut values = Vec::new();
    for item in base_items {
        let key = item.get("key").and_then(Value::as_str);
        let effect = item.get("effect").and_then(Value::as_str);
        let overridden = ours
            .iter()
            .any(|t| Some(t.key.as_str()) == key && Some(t.effect.as_str()) == effect);
        if !overridden {
            values.push(item.clone());
            let plain = item.as_object().is_some_and(|m| {
                m.keys()
                    .all(|k| ["key", "value", "effect"].contains(&k.as_str()))
                    && m.values().all(Value::is_string)
            });
            let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
            match (plain, field("key"), field("value"), field("effect")) {
                (true, Some(key), Some(value), Some(effect)) => {
                    entries.push(TaintEntry::Ours { key, value, effect });
                }
                _ => entries.push(TaintEntry::Base(item)),
            }
        }
    }
    for t in ours {
        let mut obj = Map::new();
        obj.insert("key".to_owned(), Value::String(t.key.clone()));
        obj.insert("value".to_owned(), Value::String(t.value.clone()));
        obj.insert(
            "effect".to_owned(),
            Value::String(t.effect.as_str().to_owned()),
        );
        values.push(Value::Object(obj));
        entries.push(TaintEntry::Ours {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: t.effect.as_str().to_owned(),
        });
    }
    Ok((entries, Value::Array(values)))
}

/// Sets `path` in `root` to `value`, creating (or replacing non-map)
/// intermediate maps.
fn set_in(root: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *root = value;
        return;
    };
    let mut node = root;
    for key in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        map.insert((*last).to_owned(), value);
    }
}

fn verify(text: &str, expected: &Value) -> Result<(), RenderError> {
    let parsed: Option<Value> = serde_saphyr::from_str(text).map_err(|e| {
        RenderError::Verification(format!("the edited document does not parse: {e}"))
    })?;
    if parsed.as_ref() == Some(expected) {
        Ok(())
    } else {
        Err(RenderError::Verification(
            "the edited document differs from the base plus the worker's settings".to_owned(),
        ))
    }
}

/// One YAML document of a stream: the separator line that precedes it
/// (`---\n`, or empty for the first) and its text.
#[derive(Debug)]
struct Document {
    separator: String,
    body: String,
}

fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = Document {
        separator: String::new(),
        body: String::new(),
    };
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- #") {
            let previous = std::mem::replace(
                &mut current,
                Document {
                    separator: line.to_owned(),
                    body: String::new(),
                },
            );
            docs.push(previous);
        } else {
            current.body.push_str(line);
        }
    }
    docs.push(current);
    docs
}

/// A line editor for one block-style YAML document.
struct Editor {
    lines: Vec<String>,
    trailing_newline: bool,
    /// The document's indentation step (what its first nested key uses).
    step: usize,
}

/// Indentation of a line with content; `None` for blank and comment-only
/// lines.
fn indent_of(line: &str) -> Option<usize> {
    let content = line.trim_start_matches(' ');
    if content.is_empty() || content.starts_with('#') || content.trim().is_empty() {
        None
    } else {
        Some(line.len() - content.len())
    }
}

/// The key of a `key: value` line and what follows the colon; `None` for
/// list items and lines that are not mapping entries.
fn key_of(line: &str) -> Option<(String, &str)> {
    let content = line.trim_start_matches(' ');
    if content.starts_with('-') && (content.len() == 1 || content[1..].starts_with(' ')) {
        return None;
    }
    let (key, rest) =
        if let Some(quote) = content.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let end = content[1..].find(quote)? + 1;
            let key = content[1..end].to_owned();
            let rest = content[end + 1..].strip_prefix(':')?;
            (key, rest)
        } else {
            let mut split = None;
            for (i, c) in content.char_indices() {
                if c == ':' {
                    let after = &content[i + 1..];
                    if after.is_empty() || after.starts_with(' ') {
                        split = Some(i);
                        break;
                    }
                }
                if c == '#' && i > 0 && content[..i].ends_with(' ') {
                    break;
                }
            }
            let i = split?;
            (content[..i].trim_end().to_owned(), &content[i + 1..])
        };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some((key, rest))
}

/// Whether the text after a key's colon holds a value (not just a comment).
fn has_inline_value(rest: &str) -> bool {
    let rest = rest.trim();
    !rest.is_empty() && !rest.starts_with('#')
}

/// Serializes a value as YAML with `step` spaces per level (no document
/// marker, trailing newline trimmed).
fn to_yaml<T: Serialize>(value: &T, step: usize) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.indent_step = step;
    serde_saphyr::to_string_with_options(value, options)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// `key: value` lines at `indent`, the value rendered as a block below the
/// key when it is a non-empty map or list.
fn block_lines(key: &str, value_yaml: &str, indent: usize, step: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let key = to_yaml(&key, step);
    let mut value_lines = value_yaml.lines();
    let single = value_yaml.lines().count() <= 1
        && !value_yaml.starts_with("- ")
        && !value_yaml.contains(": ");
    if single {
        return vec![format!(
            "{pad}{key}: {}",
            value_lines.next().unwrap_or_default()
        )];
    }
    let mut out = vec![format!("{pad}{key}:")];
    let inner = " ".repeat(indent + step);
    out.extend(value_yaml.lines().map(|l| format!("{inner}{l}")));
    out
}

/// Nested keys down to a value: `a:\n  b:\n    c: value`.
fn nested_lines(keys: &[&str], value_yaml: &str, indent: usize, step: usize) -> Vec<String> {
    match keys.split_first() {
        None => Vec::new(),
        Some((key, [])) => block_lines(key, value_yaml, indent, step),
        Some((key, rest)) => {
            let mut out = vec![format!("{}{}:", " ".repeat(indent), to_yaml(key, step))];
            out.extend(nested_lines(rest, value_yaml, indent + step, step));
            out
        }
    }
}

impl Editor {
    fn new(text: &str) -> Self {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let step = lines
            .iter()
            .filter_map(|l| indent_of(l))
            .find(|i| *i > 0)
            .unwrap_or(2);
        Self {
            lines,
            trailing_newline: text.ends_with('\n') || text.is_empty(),
            step,
        }
    }

    fn finish(self) -> String {
        let mut out = self.lines.join("\n");
        if self.trailing_newline || !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// The end (exclusive) of the value of the key on line `key_line`:
    /// deeper lines, and list items at the key's own indentation; trailing
    /// blank and comment lines are left outside.
    fn extent(&self, key_line: usize, key_indent: usize, limit: usize) -> usize {
        let mut end = key_line + 1;
        for i in key_line + 1..limit {
            let line = &self.lines[i];
            match indent_of(line) {
                None => continue,
                Some(ind) if ind > key_indent => end = i + 1,
                Some(ind) if ind == key_indent && line.trim_start().starts_with('-') => {
                    end = i + 1;
                }
                Some(_) => break,
            }
        }
        end
    }

    /// The mapping entries directly inside `range` (at the indentation of
    /// its first content line): `(line, indent, key)`.
    fn children(&self, range: (usize, usize)) -> Vec<(usize, usize, String)> {
        let Some(child_indent) = (range.0..range.1).find_map(|i| indent_of(&self.lines[i])) else {
            return Vec::new();
        };
        (range.0..range.1)
            .filter(|i| indent_of(&self.lines[*i]) == Some(child_indent))
            .filter_map(|i| key_of(&self.lines[i]).map(|(k, _)| (i, child_indent, k)))
            .collect()
    }

    /// Sets `path` to a value: `yaml_value` is what is written (its own key
    /// order), `json_value` is the same value for the rare case where a
    /// flow-style parent must be rewritten. `parsed` is the document as
    /// parsed before any edit.
    fn upsert<T: Serialize>(
        &mut self,
        parsed: &Value,
        path: &[&str],
        yaml_value: &T,
        json_value: &Value,
    ) -> Result<(), RenderError> {
        let step = self.step;
        let value_yaml = to_yaml(yaml_value, step);
        let mut range = (0, self.lines.len());
        for depth in 0..path.len() {
            let key = path[depth];
            let last = depth + 1 == path.len();
            if !last {
                // The parent must be a map (or absent/null) to hold the key.
                let pointer = format!("/{}", path[..=depth].join("/"));
                match parsed.pointer(&pointer) {
                    None | Some(Value::Null) | Some(Value::Object(_)) => {}
                    Some(_) => {
                        return Err(RenderError::UnsupportedLayout {
                            path: path[..=depth].join("."),
                            reason: "it is not a map".to_owned(),
                        });
                    }
                }
            }
            let found = self.children(range).into_iter().find(|(_, _, k)| k == key);
            match found {
                Some((line, indent, _)) => {
                    let end = self.extent(line, indent, range.1);
                    let rest = key_of(&self.lines[line])
                        .map(|(_, r)| r.to_owned())
                        .unwrap_or_default();
                    if last {
                        self.lines
                            .splice(line..end, block_lines(key, &value_yaml, indent, step));
                        return Ok(());
                    }
                    if has_inline_value(&rest) || end == line + 1 {
                        // A flow-style or empty parent: rewrite it whole.
                        let pointer = format!("/{}", path[..=depth].join("/"));
                        let mut merged = match parsed.pointer(&pointer) {
                            Some(Value::Object(m)) => Value::Object(m.clone()),
                            _ => Value::Object(Map::new()),
                        };
                        set_in(&mut merged, &path[depth + 1..], json_value.clone());
                        let merged_yaml = to_yaml(&merged, step);
                        self.lines
                            .splice(line..end, block_lines(key, &merged_yaml, indent, step));
                        return Ok(());
                    }
                    range = (line + 1, end);
                }
                None => {
                    let children = self.children(range);
                    let indent = match (children.first(), depth) {
                        (Some((_, ind, _)), _) => *ind,
                        (None, 0) => 0,
                        (None, _) => {
                            // Only reached for an empty parent, handled above.
                            return Err(RenderError::UnsupportedLayout {
                                path: path[..depth].join("."),
                                reason: "it has no entries to align with".to_owned(),
                            });
                        }
                    };
                    // Insert after the parent's last content line.
                    let at = (range.0..range.1)
                        .rev()
                        .find(|i| indent_of(&self.lines[*i]).is_some())
                        .map_or(range.1, |i| i + 1);
                    let new_lines = nested_lines(&path[depth..], &value_yaml, indent, step);
                    self.lines.splice(at..at, new_lines);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Removes a key (and its value) at `path`, if present.
    fn remove(&mut self, path: &[&str]) {
        let mut range = (0, self.lines.len());
        for (depth, key) in path.iter().enumerate() {
            let Some((line, indent, _)) =
                self.children(range).into_iter().find(|(_, _, k)| k == key)
            else {
                return;
            };
            let end = self.extent(line, indent, range.1);
            if depth + 1 == path.len() {
                self.lines.drain(line..end);
                return;
            }
            range = (line + 1, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_plain_and_quoted() {
        assert_eq!(key_of("  machine:"), Some(("machine".to_owned(), "")));
        assert_eq!(
            key_of("  \"a.b/c\": d # x"),
            Some(("a.b/c".to_owned(), " d # x"))
        );
        assert_eq!(key_of("  - key: a"), None);
        assert_eq!(
            key_of("  url: http://x"),
            Some(("url".to_owned(), " http://x"))
        );
        assert_eq!(key_of("  http://x"), None);
    }

    #[test]
    fn node_restriction_allows_only_the_kubelet_label_set() {
        assert!(node_may_set_label("node-pool"));
        assert!(node_may_set_label("tidepool.dev/claim"));
        assert!(node_may_set_label("node.kubernetes.io/instance-type"));
        assert!(node_may_set_label("foo.node.kubernetes.io/bar"));
        assert!(node_may_set_label("topology.kubernetes.io/zone"));
        assert!(!node_may_set_label("node-role.kubernetes.io/worker"));
        assert!(!node_may_set_label("example.k8s.io/x"));
    }
}
