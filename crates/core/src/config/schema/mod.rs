//! The configuration schema: walks the YAML tree, checks every rule and
//! builds the [`Config`]. Each problem is recorded with its path and
//! position, and the walk continues so that one pass finds them all.
//!
//! One module per section of the document: [`providers`], [`join`],
//! [`sizes`], [`pools`] (with the pools' [`scaling`] and [`repair`] policies and
//! their [`spares`]) and the
//! document-wide [`settings`] (labels, safety, server); [`secrets`] reads
//! secret references and [`fields`] the value types they share.

mod fields;
mod join;
pub(crate) mod mcp;
mod pools;
mod providers;
mod repair;
mod scaling;
mod secrets;
mod settings;
mod sizes;
mod spares;

use std::collections::BTreeMap;
use std::time::Duration;

use super::reader::{Errors, Obj, string};
use super::yaml::{self, Node};
use super::{Config, ConfigError, ConfigErrors, SCHEMA_VERSION};

use fields::positive_duration;
use join::join_section;
use pools::{Known, pools};
use providers::providers;
use settings::{label_keys, safety, server};
use sizes::sizes;

/// Parses `text` and checks every rule; every problem found, sorted by
/// position, when there is any.
pub(in crate::config) fn validate(text: &str) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            errs.at("", e.mark, format!("invalid YAML: {}", e.message));
            return Err(ConfigErrors(errs.0));
        }
    };
    if root.is_null() {
        errs.at("", root.mark, "the configuration is empty");
        return Err(ConfigErrors(errs.0));
    }
    let config = document(&root, &mut errs);
    let mut errors = errs.0;
    errors.sort_by_key(|a| (a.line, a.column));
    errors.dedup();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            if errors.is_empty() {
                // Defensive: a walk that produced nothing must say why.
                errors.push(ConfigError {
                    path: String::new(),
                    line: root.mark.line,
                    column: root.mark.col,
                    message: "the configuration is incomplete".into(),
                });
            }
            Err(ConfigErrors(errors))
        }
    }
}

/// The whole document: every section, each read even when another fails.
fn document(root: &Node, errs: &mut Errors) -> Option<Config> {
    let mut obj = Obj::new(root, "", errs)?;
    if let Some((node, path)) = obj.require("schemaVersion", errs)
        && let Some(v) = string(node, &path, errs)
        && v.value != SCHEMA_VERSION
    {
        errs.at(
            &path,
            v.mark,
            format!(
                "unsupported schema version `{}`; this Tidepool reads `{SCHEMA_VERSION}`",
                v.value
            ),
        );
    }
    let polling_interval = obj
        .get("pollingInterval")
        .and_then(|(n, p)| positive_duration(n, &p, errs))
        .unwrap_or(Duration::from_secs(30));
    let providers = match obj.require("providers", errs) {
        Some((n, p)) => providers(n, &p, errs),
        None => BTreeMap::new(),
    };
    let join = obj
        .require("join", errs)
        .and_then(|(n, p)| join_section(n, &p, errs));
    let labels = obj
        .get("labels")
        .and_then(|(n, p)| label_keys(n, &p, errs))
        .unwrap_or_default();
    let sizes = sizes(obj.get("sizes"), errs);
    let pools = match obj.require("pools", errs) {
        Some((n, p)) => {
            let known = Known {
                providers: &providers,
                sizes: &sizes,
            };
            pools(n, &p, &known, errs)
        }
        None => Vec::new(),
    };
    let protected = safety(obj.get("safety"), errs);
    let server = server(obj.get("server"), errs);
    obj.finish(errs);
    Some(Config {
        polling_interval,
        providers: providers.into_iter().map(|(k, v)| (k, v.value)).collect(),
        join: join?,
        sizes: sizes.into_iter().map(|(k, v)| (k, v.value)).collect(),
        pools,
        labels,
        protected: protected?,
        server: server?,
    })
}
