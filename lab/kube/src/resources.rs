//! The resource registry: which group/version/resources the emulator serves
//! (built-in ones and those of established CRDs) and the discovery documents
//! (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) built from it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::meta;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A CRD object lacks a field the registry needs.
    #[error("customresourcedefinition is missing {0}")]
    MissingField(&'static str),
}

/// Identifies a stored resource: API group (empty for core) and plural.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    /// The API group, `""` for the core group.
    pub group: String,
    /// The plural resource name.
    pub plural: String,
}

impl ResKey {
    /// A key from group and plural.
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_owned(),
            plural: plural.to_owned(),
        }
    }
}

/// One served resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceDef {
    /// API group, `""` for core.
    pub group: String,
    /// Versions served, the first being the storage (preferred) version.
    pub versions: Vec<String>,
    /// Plural name (`pods`).
    pub plural: String,
    /// Singular name (`pod`).
    pub singular: String,
    /// Kind (`Pod`).
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Subresources with their verbs (`status`, `eviction`, ...).
    pub subresources: Vec<(String, Vec<&'static str>)>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// The storage version's `openAPIV3Schema`, for custom resources.
    pub schema: Option<std::sync::Arc<Value>>,
}

impl ResourceDef {
    /// The storage key of this resource.
    pub fn key(&self) -> ResKey {
        ResKey::new(&self.group, &self.plural)
    }

    /// `apiVersion` for `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether the resource has a `status` subresource.
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|(s, _)| s == "status")
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// One built-in resource, as a row of [`BUILTINS`]: group, plural, kind,
/// whether namespaced, short names, subresources, whether in category `all`.
/// Every built-in is served at `v1` only.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    bool,
);

const NAMESPACED: bool = true;
const CLUSTER: bool = false;

/// The built-in resources, one per line (the table is kept unformatted so
/// each row stays one line).
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    ("", "namespaces", "Namespace", CLUSTER, &["ns"], &["status", "finalize"], false),
    ("", "nodes", "Node", CLUSTER, &["no"], &["status"], false),
    ("", "pods", "Pod", NAMESPACED, &["po"], &["status", "eviction", "binding", "log"], true),
    ("", "events", "Event", NAMESPACED, &["ev"], &[], false),
    ("", "configmaps", "ConfigMap", NAMESPACED, &["cm"], &[], false),
    ("", "secrets", "Secret", NAMESPACED, &[], &[], false),
    ("", "services", "Service", NAMESPACED, &["svc"], &["status"], true),
    ("", "serviceaccounts", "ServiceAccount", NAMESPACED, &["sa"], &[], false),
    ("", "persistentvolumes", "PersistentVolume", CLUSTER, &["pv"], &["status"], false),
    ("", "persistentvolumeclaims", "PersistentVolumeClaim", NAMESPACED, &["pvc"], &["status"], false),
    ("apps", "deployments", "Deployment", NAMESPACED, &["deploy"], &["status", "scale"], true),
    ("apps", "replicasets", "ReplicaSet", NAMESPACED, &["rs"], &["status", "scale"], true),
    ("apps", "daemonsets", "DaemonSet", NAMESPACED, &["ds"], &["status"], true),
    ("apps", "statefulsets", "StatefulSet", NAMESPACED, &["sts"], &["status", "scale"], true),
    ("policy", "poddisruptionbudgets", "PodDisruptionBudget", NAMESPACED, &["pdb"], &["status"], false),
    ("coordination.k8s.io", "leases", "Lease", NAMESPACED, &[], &[], false),
    ("storage.k8s.io", "storageclasses", "StorageClass", CLUSTER, &["sc"], &[], false),
    ("storage.k8s.io", "csinodes", "CSINode", CLUSTER, &[], &[], false),
    ("storage.k8s.io", "volumeattachments", "VolumeAttachment", CLUSTER, &[], &["status"], false),
    // Stored so manifests apply; the emulated network lets everything through.
    ("networking.k8s.io", "networkpolicies", "NetworkPolicy", NAMESPACED, &["netpol"], &[], false),
    ("events.k8s.io", "events", "Event", NAMESPACED, &["ev"], &[], false),
    // RBAC objects are stored (so manifests apply) but not enforced:
    // the emulator accepts any credentials.
    ("rbac.authorization.k8s.io", "roles", "Role", NAMESPACED, &[], &[], false),
    ("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", NAMESPACED, &[], &[], false),
    ("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", CLUSTER, &[], &[], false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, &[], &[], false),
    // Stored, not enforced: the emulated cluster has no pod network.
    ("networking.k8s.io", "networkpolicies", "NetworkPolicy", NAMESPACED, &["netpol"], &[], false),
    ("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, &["crd", "crds"], &["status"], false),
];

/// The definition of one row of [`BUILTINS`].
fn builtin(&(group, plural, kind, namespaced, short, subs, all): &Builtin) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        versions: vec!["v1".into()],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        subresources: subs
            .iter()
            .map(|s| {
                let verbs = match *s {
                    "status" => STATUS_VERBS.to_vec(),
                    "scale" => STATUS_VERBS.to_vec(),
                    "log" => vec!["get"],
                    _ => vec!["create"],
                };
                ((*s).to_owned(), verbs)
            })
            .collect(),
        categories: if all { vec!["all".into()] } else { vec![] },
        schema: None,
    }
}

/// The built-in resources the emulator serves.
pub fn builtins() -> Vec<ResourceDef> {
    BUILTINS.iter().map(builtin).collect()
}

/// The set of served resources, keyed by storage key.
#[derive(Clone, Debug)]
pub struct Registry {
    defs: BTreeMap<ResKey, ResourceDef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry of the built-in resources.
    pub fn new() -> Self {
        Self {
            defs: builtins().into_iter().map(|d| (d.key(), d)).collect(),
        }
    }

    /// The resource served at `group`/`version` under `plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .get(&ResKey::new(group, plural))
            .filter(|d| d.versions.iter().any(|v| v == version))
    }

    /// The resource with this storage key.
    pub fn get(&self, key: &ResKey) -> Option<&ResourceDef> {
        self.defs.get(key)
    }

    /// The resource whose kind is `kind` in `api_version`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        let (group, version) = split_api_version(api_version);
        self.defs
            .values()
            .find(|d| d.group == group && d.kind == kind && d.versions.iter().any(|v| v == version))
    }

    /// Adds or replaces a resource (from a CRD).
    pub fn insert(&mut self, def: ResourceDef) {
        self.defs.insert(def.key(), def);
    }

    /// Removes a resource (its CRD was deleted).
    pub fn remove(&mut self, key: &ResKey) {
        self.defs.remove(key);
    }

    /// All served resources.
    pub fn all(&self) -> impl Iterator<Item = &ResourceDef> {
        self.defs.values()
    }

    /// `/api`: the core group's versions.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    /// `/apis`: every named group with its versions.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in self.defs.values().filter(|d| !d.group.is_empty()) {
            let versions = groups.entry(&d.group).or_default();
            for v in &d.versions {
                if !versions.contains(&v.as_str()) {
                    versions.push(v);
                }
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                let preferred = vs.first().cloned().unwrap_or(Value::Null);
                json!({"name": name, "versions": vs, "preferredVersion": preferred})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/{group}`: one group.
    pub fn group(&self, group: &str) -> Option<Value> {
        let list = self.group_list();
        list["groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == group)
            .map(|g| {
                let mut g = g.clone();
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                g
            })
    }

    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for d in self
            .defs
            .values()
            .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
        {
            let mut r = json!({
                "name": d.plural,
                "singularName": d.singular,
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": VERBS,
            });
            if !d.short_names.is_empty() {
                r["shortNames"] = json!(d.short_names);
            }
            if !d.categories.is_empty() {
                r["categories"] = json!(d.categories);
            }
            resources.push(r);
            for (sub, verbs) in &d.subresources {
                let kind = match sub.as_str() {
                    "eviction" => "Eviction",
                    "binding" => "Binding",
                    "scale" => "Scale",
                    _ => d.kind.as_str(),
                };
                let mut r = json!({
                    "name": format!("{}/{sub}", d.plural),
                    "singularName": "",
                    "namespaced": d.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                });
                match sub.as_str() {
                    "eviction" => {
                        r["group"] = json!("policy");
                        r["version"] = json!("v1");
                    }
                    "scale" => {
                        r["group"] = json!("autoscaling");
                        r["version"] = json!("v1");
                    }
                    _ => {}
                }
                resources.push(r);
            }
        }
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (`""`, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The resource a CustomResourceDefinition object declares.
///
/// # Errors
/// [`ResourceError::MissingField`] when group, names or versions are absent.
pub fn def_from_crd(crd: &Value) -> Result<ResourceDef, ResourceError> {
    let spec = &crd["spec"];
    let group = spec["group"]
        .as_str()
        .ok_or(ResourceError::MissingField("spec.group"))?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or(ResourceError::MissingField("spec.names.plural"))?;
    let kind = names["kind"]
        .as_str()
        .ok_or(ResourceError::MissingField("spec.names.kind"))?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let mut versions: Vec<(bool, String)> = spec["versions"]
        .as_array()
        .ok_or(ResourceError::MissingField("spec.versions"))?
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let name = v["name"].as_str()?;
            Some((v["storage"].as_bool().unwrap_or(false), name.to_owned()))
        })
        .collect();
    if versions.is_empty() {
        return Err(ResourceError::MissingField("spec.versions[].name"));
    }
    versions.sort_by_key(|(storage, _)| !*storage);
    let storage_schema = spec["versions"].as_array().and_then(|vs| {
        vs.iter()
            .find(|v| v["name"].as_str() == versions.first().map(|(_, n)| n.as_str()))
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
            .filter(Value::is_object)
    });
    let has_status = spec["versions"]
        .as_array()
        .is_some_and(|vs| vs.iter().any(|v| v["subresources"]["status"].is_object()));
    Ok(ResourceDef {
        group: group.to_owned(),
        versions: versions.into_iter().map(|(_, v)| v).collect(),
        plural: plural.to_owned(),
        singular,
        kind: kind.to_owned(),
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        short_names: meta::strings(&names["shortNames"]),
        subresources: if has_status {
            vec![("status".to_owned(), STATUS_VERBS.to_vec())]
        } else {
            vec![]
        },
        categories: meta::strings(&names["categories"]),
        schema: storage_schema.map(std::sync::Arc::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_resource_list_advertises_the_eviction_subresource_in_policy_v1() {
        let list = Registry::new().resource_list("", "v1").unwrap_or_default();
        let eviction = list["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "pods/eviction"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["kind"], "Eviction");
    }

    #[test]
    fn a_crd_declares_a_cluster_scoped_resource_with_its_storage_version_first() {
        let crd = json!({"spec": {"group": "tidepool.dev", "scope": "Cluster",
            "names": {"plural": "workerclaims", "kind": "WorkerClaim"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": false},
                         {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
        let def = def_from_crd(&crd).unwrap();
        assert!(!def.namespaced);
        assert_eq!(def.versions, vec!["v1", "v1alpha1"]);
        assert!(def.has_status());
        assert_eq!(def.singular, "workerclaim");
    }
}
