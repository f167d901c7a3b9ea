//! The `server.mcp` section: the streamable-HTTP listen address, the bearer
//! tokens (by reference, each with a name and a scope), the Origin and Host
//! allowlists, read-only mode, the tool allowlist, what destructive tools
//! do without a way to confirm, and the TLS files.

use std::collections::BTreeSet;

use crate::config::reader::{Errors, Obj, boolean, list, string};
use crate::config::yaml::Node;
use crate::config::{ConfirmFallback, McpScope, McpSettings, McpTls, McpToken};

use super::fields::{Fields, dns_label, unique_strings};
use super::secrets::{inline_secret, secret_ref};

/// The MCP tools a `tools` allowlist may name.
pub const TOOLS: [&str; 13] = [
    "list_workers",
    "get_worker_details",
    "get_worker_health",
    "provision_workers",
    "drain_worker",
    "destroy_worker",
    "extend_ttl",
    "cordon_worker",
    "uncordon_worker",
    "scale_up",
    "capacity_report",
    "plan_scaling",
    "run_doctor",
];

/// The `server.mcp` mapping over its defaults; `socket_addr` reads the
/// listen address.
pub(super) fn mcp(
    node: &Node,
    path: &str,
    errs: &mut Errors,
    socket_addr: fn(&Node, &str, &mut Errors) -> Option<String>,
) -> Option<McpSettings> {
    let mut out = McpSettings::default();
    let mut f = Fields::new(Obj::new(node, path, errs)?, errs);
    f.set("listen", &mut out.listen, |n, p, e| {
        socket_addr(n, p, e).map(Some)
    });
    f.set("tokens", &mut out.tokens, tokens);
    f.set("allowedOrigins", &mut out.allowed_origins, origins);
    f.set("allowedHosts", &mut out.allowed_hosts, |n, p, e| {
        unique_strings(n, p, "host", e).map(|v| v.into_iter().map(|s| s.value).collect())
    });
    f.set("readOnly", &mut out.read_only, boolean);
    f.set("tools", &mut out.tools, |n, p, e| {
        tool_list(n, p, e).map(Some)
    });
    f.set("confirmFallback", &mut out.confirm_fallback, fallback);
    f.set("tls", &mut out.tls, |n, p, e| tls(n, p, e).map(Some));
    if out.listen.is_some() && out.tokens.is_empty() && f.ok {
        f.errs.at(
            path,
            node.mark,
            "`listen` serves MCP over HTTP, which needs at least one bearer token: \
             add `tokens: [{name: NAME, scope: read|write, tokenFrom: {env: VAR}}]`",
        );
        f.ok = false;
    }
    f.finish().then_some(out)
}

/// The token list: unique names, each token by reference.
fn tokens(node: &Node, path: &str, errs: &mut Errors) -> Option<Vec<McpToken>> {
    let items = list(node, path, errs, token)?;
    let mut names = BTreeSet::new();
    let mut ok = true;
    for (t, item_path) in &items {
        if !names.insert(t.name.clone()) {
            errs.at(
                item_path,
                node.mark,
                format!("duplicate token name `{}`", t.name),
            );
            ok = false;
        }
    }
    ok.then(|| items.into_iter().map(|(t, _)| t).collect())
}

/// One token: `{name, scope, tokenFrom}`.
fn token(node: &Node, path: &str, errs: &mut Errors) -> Option<(McpToken, String)> {
    let mut obj = Obj::new(node, path, errs)?;
    let name = obj
        .require("name", errs)
        .and_then(|(n, p)| dns_label(n, &p, "token name", errs));
    let scope = obj.require("scope", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        match v.value.as_str() {
            "read" => Some(McpScope::Read),
            "write" => Some(McpScope::Write),
            other => {
                errs.at(
                    &p,
                    v.mark,
                    format!("scope must be `read` or `write`, got `{other}`"),
                );
                None
            }
        }
    });
    let token_from = obj
        .require("tokenFrom", errs)
        .and_then(|(n, p)| secret_ref(n, &p, errs));
    obj.finish_with(errs, |key| {
        matches!(key, "token" | "value" | "secret" | "bearer")
            .then(|| inline_secret(key, "tokenFrom"))
    });
    Some((
        McpToken {
            name: name?,
            scope: scope?,
            token_from: token_from?,
        },
        path.to_owned(),
    ))
}

/// Allowed origins: `scheme://host[:port]`, or `null`.
fn origins(node: &Node, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let items = unique_strings(node, path, "origin", errs)?;
    let mut ok = true;
    for item in &items {
        let v = item.value.as_str();
        let well_formed = v == "null"
            || v.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
        if !well_formed {
            errs.at(
                &item.path,
                item.mark,
                format!("`{v}` is not an origin such as https://agent.example.com:443"),
            );
            ok = false;
        }
    }
    ok.then(|| items.into_iter().map(|s| s.value).collect())
}

/// A tool allowlist: names of tools this server has.
fn tool_list(node: &Node, path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    let items = unique_strings(node, path, "tool", errs)?;
    let mut ok = true;
    for item in &items {
        if !TOOLS.contains(&item.value.as_str()) {
            errs.at(
                &item.path,
                item.mark,
                format!(
                    "unknown tool `{}`; the tools are {}",
                    item.value,
                    TOOLS.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok.then(|| items.into_iter().map(|s| s.value).collect())
}

/// `refuse-force`, `refuse` or `allow`.
fn fallback(node: &Node, path: &str, errs: &mut Errors) -> Option<ConfirmFallback> {
    let v = string(node, path, errs)?;
    match v.value.as_str() {
        "refuse-force" => Some(ConfirmFallback::RefuseForce),
        "refuse" => Some(ConfirmFallback::Refuse),
        "allow" => Some(ConfirmFallback::Allow),
        other => {
            errs.at(
                path,
                v.mark,
                format!("must be `refuse-force`, `refuse` or `allow`, got `{other}`"),
            );
            None
        }
    }
}

/// `{certFile, keyFile}`.
fn tls(node: &Node, path: &str, errs: &mut Errors) -> Option<McpTls> {
    let mut obj = Obj::new(node, path, errs)?;
    let cert = obj
        .require("certFile", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    let key = obj
        .require("keyFile", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    obj.finish(errs);
    Some(McpTls {
        cert_file: cert?.value,
        key_file: key?.value,
    })
}
