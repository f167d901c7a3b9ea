//! The document-wide settings: the label keys, the protected node names
//! (`safety`) and the controller's own `server` settings.

use std::time::Duration;

use crate::config::Server;
use crate::config::reader::{Errors, Obj, boolean, list, string};
use crate::config::yaml::Node;
use crate::conventions::LabelKeys;
use crate::k8s_names::validate_qualified_name;
use crate::safety::ProtectedNames;

use super::fields::{Fields, dns_label, dns_subdomain, positive_duration};

/// The `labels` section: the label keys Tidepool reads and writes.
pub(super) fn label_keys(node: &Node, path: &str, errs: &mut Errors) -> Option<LabelKeys> {
    let mut obj = Obj::new(node, path, errs)?;
    let mut keys = LabelKeys::default();
    let key = |obj: &mut Obj<'_>, name: &'static str, slot: &mut String, errs: &mut Errors| {
        if let Some((n, p)) = obj.get(name)
            && let Some(v) = string(n, &p, errs)
        {
            match validate_qualified_name(&v.value, "label key") {
                Ok(()) => *slot = v.value,
                Err(e) => errs.at(&p, v.mark, e.to_string()),
            }
        }
    };
    key(&mut obj, "pool", &mut keys.pool, errs);
    key(&mut obj, "workerType", &mut keys.worker_type, errs);
    key(&mut obj, "provisionedAt", &mut keys.provisioned_at, errs);
    key(&mut obj, "ttl", &mut keys.ttl, errs);
    key(&mut obj, "ttlHours", &mut keys.ttl_hours, errs);
    key(&mut obj, "size", &mut keys.size, errs);
    key(&mut obj, "instanceType", &mut keys.instance_type, errs);
    if let Some((n, p)) = obj.get("domain")
        && let Some(d) = dns_subdomain(n, &p, "label domain", errs)
    {
        keys.domain = d;
    }
    obj.finish(errs);
    Some(keys)
}

/// The `safety` section: the node-name patterns never touched (the
/// defaults when not given).
pub(super) fn safety(
    section: Option<(&Node, String)>,
    errs: &mut Errors,
) -> Option<ProtectedNames> {
    let defaults = || ProtectedNames::new(&ProtectedNames::DEFAULTS).ok();
    let Some((node, path)) = section else {
        return defaults();
    };
    let mut obj = Obj::new(node, &path, errs)?;
    let patterns = obj.get("protectedNodePatterns").map(|(n, p)| {
        let items = list(n, &p, errs, string)?;
        let mut ok = true;
        for item in &items {
            if let Err(e) = regex::Regex::new(&item.value) {
                let first_line = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                errs.at(
                    &item.path,
                    item.mark,
                    format!(
                        "`{}` is not a valid regular expression: {first_line}",
                        item.value
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(items)
    });
    obj.finish(errs);
    match patterns {
        None => defaults(),
        Some(items) => {
            let items = items?;
            let texts: Vec<&str> = items.iter().map(|s| s.value.as_str()).collect();
            ProtectedNames::new(&texts).ok()
        }
    }
}

/// The `server` section over its defaults.
pub(super) fn server(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<Server> {
    let mut out = Server {
        metrics_addr: "0.0.0.0:8080".into(),
        namespace: "tidepool-system".into(),
        leader_election: true,
        lease_name: "tidepool-controller".into(),
        lease_duration: Duration::from_secs(15),
        mcp: crate::config::McpSettings::default(),
        orphan_grace_period: Duration::from_secs(600),
    };
    let Some((node, path)) = section else {
        return Some(out);
    };
    let mut f = Fields::new(Obj::new(node, &path, errs)?, errs);
    f.set("metricsAddr", &mut out.metrics_addr, socket_addr);
    f.set("namespace", &mut out.namespace, |n, p, e| {
        dns_label(n, p, "namespace", e)
    });
    if let Some((n, p)) = f.obj.get("leaderElection") {
        let mut le = Fields::new(Obj::new(n, &p, f.errs)?, f.errs);
        le.set("enabled", &mut out.leader_election, boolean);
        le.set("leaseName", &mut out.lease_name, |n, p, e| {
            dns_subdomain(n, p, "Lease name", e)
        });
        le.set("leaseDuration", &mut out.lease_duration, positive_duration);
        f.ok &= le.finish();
    }
    f.set(
        "orphanGracePeriod",
        &mut out.orphan_grace_period,
        positive_duration,
    );
    f.set("mcp", &mut out.mcp, |n, p, e| {
        super::mcp::mcp(n, p, e, socket_addr)
    });
    f.finish().then_some(out)
}

/// An `address:port` to listen on.
fn socket_addr(node: &Node, path: &str, errs: &mut Errors) -> Option<String> {
    let v = string(node, path, errs)?;
    if v.value.parse::<std::net::SocketAddr>().is_err() {
        errs.at(
            path,
            v.mark,
            format!("`{}` is not an address:port such as 0.0.0.0:8080", v.value),
        );
        return None;
    }
    Some(v.value)
}
