//! RBAC evaluation for `SelfSubjectAccessReview`: the caller is the user
//! its bearer token names (the lab's token `tidepool-lab` is user
//! `tidepool-lab`), in group `system:authenticated`; it may do what the
//! stored ClusterRoleBindings and RoleBindings naming it (or one of its
//! groups) grant through their roles' rules, as the RBAC authorizer
//! decides. Members of `system:masters` may do everything.
//!
//! Requests themselves are not authorized: the review answers what RBAC
//! would allow, which is what `tidepool doctor` asks.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::ResKey;
use crate::store::Store;

/// Errors of this module: a review body that is not a review.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// The body is not a SelfSubjectAccessReview.
    #[error("SelfSubjectAccessReview in version \"v1\" cannot be handled: {0}")]
    Malformed(String),
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity of a bearer token: the lab's tokens name their user.
    pub fn of_token(token: Option<&str>) -> Self {
        let user = token.unwrap_or("system:anonymous").to_owned();
        let group = if token.is_some() {
            "system:authenticated"
        } else {
            "system:unauthenticated"
        };
        Self {
            user,
            groups: vec![group.to_owned()],
        }
    }
}

/// What is being asked about (`spec.resourceAttributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Namespace, empty for cluster scope.
    pub namespace: String,
    /// The verb, e.g. `list`.
    pub verb: String,
    /// The API group, empty for core.
    pub group: String,
    /// The resource plural.
    pub resource: String,
    /// The subresource, e.g. `status`.
    pub subresource: String,
    /// The object name, empty for any.
    pub name: String,
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn covers(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether one PolicyRule allows `attrs`.
fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resources = strings(&rule["resources"]);
    let resource_ok = covers(&resources, &resource)
        || (!attrs.subresource.is_empty()
            && resources
                .iter()
                .any(|r| *r == format!("*/{}", attrs.subresource)));
    let names = strings(&rule["resourceNames"]);
    covers(&strings(&rule["verbs"]), &attrs.verb)
        && covers(&strings(&rule["apiGroups"]), &attrs.group)
        && resource_ok
        && (names.is_empty() || names.contains(&attrs.name.as_str()))
}

fn binds(binding: &Value, who: &Identity) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| match s["kind"].as_str() {
            Some("User") => s["name"].as_str() == Some(who.user.as_str()),
            Some("Group") => s["name"]
                .as_str()
                .is_some_and(|g| who.groups.iter().any(|mine| mine == g)),
            _ => false,
        })
    })
}

/// The rules of the role a binding refers to.
fn role_rules(store: &Store, binding: &Value, namespace: &str) -> Vec<Value> {
    let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
    let found = match binding["roleRef"]["kind"].as_str() {
        Some("ClusterRole") => store
            .get(
                &ResKey::new("rbac.authorization.k8s.io", "clusterroles"),
                "",
                name,
            )
            .ok(),
        Some("Role") => store
            .get(
                &ResKey::new("rbac.authorization.k8s.io", "roles"),
                namespace,
                name,
            )
            .ok(),
        _ => None,
    };
    found
        .and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether RBAC allows `who` to do `attrs`, with the reason Kubernetes
/// gives when it does.
pub fn allowed(store: &Store, who: &Identity, attrs: &Attributes) -> (bool, String) {
    if who.groups.iter().any(|g| g == "system:masters") {
        return (true, String::new());
    }
    let rbac = |plural: &str| ResKey::new("rbac.authorization.k8s.io", plural);
    let (cluster, _) = store.list(&rbac("clusterrolebindings"), "");
    for b in cluster.iter().filter(|b| binds(b, who)) {
        if role_rules(store, b, "")
            .iter()
            .any(|r| rule_allows(r, attrs))
        {
            let name = b["metadata"]["name"].as_str().unwrap_or_default();
            let role = b["roleRef"]["name"].as_str().unwrap_or_default();
            return (
                true,
                format!(
                    "RBAC: allowed by ClusterRoleBinding \"{name}\" of ClusterRole \"{role}\" to User \"{}\"",
                    who.user
                ),
            );
        }
    }
    if !attrs.namespace.is_empty() {
        let (local, _) = store.list(&rbac("rolebindings"), &attrs.namespace);
        for b in local.iter().filter(|b| binds(b, who)) {
            if role_rules(store, b, &attrs.namespace)
                .iter()
                .any(|r| rule_allows(r, attrs))
            {
                let name = b["metadata"]["name"].as_str().unwrap_or_default();
                return (
                    true,
                    format!(
                        "RBAC: allowed by RoleBinding \"{name}/{}\" to User \"{}\"",
                        attrs.namespace, who.user
                    ),
                );
            }
        }
    }
    (false, String::new())
}

/// Answers a `SelfSubjectAccessReview` body for `who`.
///
/// # Errors
/// A 400 when the body is not a review with `resourceAttributes`.
pub fn review(store: &Store, who: &Identity, body: &[u8]) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::bad_request(AuthzError::Malformed(m).to_string());
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let ra = &obj["spec"]["resourceAttributes"];
    if !ra.is_object() {
        return Err(bad("spec.resourceAttributes is required".into()));
    }
    let text = |k: &str| ra[k].as_str().unwrap_or_default().to_owned();
    let attrs = Attributes {
        namespace: text("namespace"),
        verb: text("verb"),
        group: text("group"),
        resource: text("resource"),
        subresource: text("subresource"),
        name: text("name"),
    };
    let (ok, reason) = allowed(store, who, &attrs);
    obj["apiVersion"] = json!("authorization.k8s.io/v1");
    obj["kind"] = json!("SelfSubjectAccessReview");
    obj["metadata"] = json!({"creationTimestamp": null});
    obj["status"] = if ok {
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false})
    };
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_groups_resources_subresources_verbs_and_names() {
        let rule = json!({"apiGroups": ["tidepool.dev"], "resources": ["workerclaims", "workerclaims/status"], "verbs": ["get", "list", "patch"]});
        let mut a = Attributes {
            verb: "patch".into(),
            group: "tidepool.dev".into(),
            resource: "workerclaims".into(),
            subresource: "status".into(),
            ..Attributes::default()
        };
        assert!(rule_allows(&rule, &a));
        a.verb = "delete".into();
        assert!(!rule_allows(&rule, &a));
        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(&star, &a));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["pve"]});
        let s = Attributes {
            verb: "get".into(),
            resource: "secrets".into(),
            name: "other".into(),
            ..Attributes::default()
        };
        assert!(!rule_allows(&named, &s));
    }
}
