//! The Grafana dashboard and the alert rules in `deploy/` ask only for what
//! the controller exports: a controller runs a burst in the lab, its
//! `/metrics` is scraped, and every metric and label name in every query of
//! `deploy/grafana/tidepool-dashboard.json` and `deploy/prometheusrule.yaml`
//! must be in that scrape.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Setup, start};
use serde_json::{Value, json};
use tidepool_lab_sim::{FaultRule, Service as Emulator};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

/// Metric and label names a PromQL expression uses.
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// Scans `expr` for names: an identifier followed by `(` is a function or
/// aggregation; the identifiers in the parentheses after `by`, `without`,
/// `on`, `ignoring` and `group_*`, and before a matcher's operator in
/// braces, are labels; durations in brackets, strings and Grafana
/// variables are skipped; every other identifier is a metric.
fn names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Names::default();
    let (mut i, mut in_braces, mut label_list_depth) = (0, false, None::<usize>);
    let mut depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += usize::from(chars[i] == '\\') + 1;
                }
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            '{' | '}' => {
                in_braces = c == '{';
                i += 1;
            }
            '(' => {
                depth += 1;
                i += 1;
            }
            ')' => {
                if label_list_depth == Some(depth) {
                    label_list_depth = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                let next = rest.chars().next();
                // An aggregation written `sum by (l) (…)` is an operator.
                let next_word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let aggregates = matches!(next_word.as_str(), "by" | "without");
                if in_braces || label_list_depth.is_some() {
                    out.labels.insert(word);
                } else if KEYWORDS.contains(&word.as_str()) {
                    if next == Some('(') && !matches!(word.as_str(), "and" | "or" | "unless") {
                        label_list_depth = Some(depth + 1);
                    }
                } else if next != Some('(') && !aggregates {
                    out.metrics.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, perhaps with an exponent or a unit (5m).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn the_scanner_tells_metrics_from_labels_and_functions() {
    let n = names(
        r#"histogram_quantile(0.95, sum by (le, pool) (rate(tidepool_provisioning_duration_seconds_bucket{pool=~"$pool"}[$__rate_interval]))) > 1e3"#,
    );
    assert_eq!(
        n.metrics,
        BTreeSet::from(["tidepool_provisioning_duration_seconds_bucket".to_owned()])
    );
    assert_eq!(
        n.labels,
        BTreeSet::from(["le".to_owned(), "pool".to_owned()])
    );
    let n = names("max(tidepool_leader) == 0 and on (pool) kube_node_info offset 5m");
    assert_eq!(
        n.metrics,
        BTreeSet::from(["kube_node_info".to_owned(), "tidepool_leader".to_owned()])
    );
    assert_eq!(n.labels, BTreeSet::from(["pool".to_owned()]));
}

/// What a scrape says of one series name.
#[derive(Debug, Default)]
struct Series {
    /// Whether it had samples (a family with none yet is known only by its
    /// declared names).
    sampled: bool,
    /// The label names seen on its samples.
    labels: BTreeSet<String>,
}

/// Each exported series name: from the samples, and for a family with no
/// samples yet from its declared names (`_total` for a counter, `_bucket`,
/// `_sum` and `_count` for a histogram).
fn exported(scrape: &str) -> BTreeMap<String, Series> {
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                out.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let series = out.entry(line[..name_end].to_owned()).or_default();
            series.sampled = true;
            if let (Some(open), Some(close)) = (line.find('{'), line.find('}')) {
                for pair in line[open + 1..close].split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        series.labels.insert(k.trim().to_owned());
                    }
                }
            }
        }
    }
    out
}

/// Every query of the dashboard, with the panel it belongs to.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/tidepool-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel '{}'", panel["title"].as_str().unwrap_or("?")),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.split_once(','))
                .map_or(q.to_owned(), |(m, l)| {
                    format!("count by ({}) ({m})", l.trim())
                });
            out.push((format!("variable '{}'", var["name"]), inner));
        }
    }
    out
}

/// Every alert expression of the PrometheusRule.
fn alert_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheusrule.yaml")).unwrap();
    let rule: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            out.push((
                format!("alert {}", r["alert"].as_str().unwrap_or("?")),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// A host whose status never answers, so the unreadable-host gauge has a
/// sample.
fn faults() -> Vec<FaultRule> {
    vec![FaultRule {
        service: Emulator::Proxmox,
        op: "GET /nodes/pve-02/status".into(),
        error_rate: 1.0,
        status: Some(500),
        message: Some("got timeout".into()),
        latency_ms: 0,
        times: None,
    }]
}

/// Families a run without failures leaves without samples.
const QUIET: &[&str] = &[
    "tidepool_errors_total",
    "tidepool_step_failures_total",
    "tidepool_worker_unhealthy",
    "tidepool_repairs_total",
];

/// Adds one scrape's series to what earlier scrapes saw.
fn merge(into: &mut BTreeMap<String, Series>, scrape: &str) {
    for (name, series) in exported(scrape) {
        let seen = into.entry(name).or_default();
        seen.sampled |= series.sampled;
        seen.labels.extend(series.labels);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_names_only_exported_metrics() {
    let queries: Vec<_> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let wanted: BTreeSet<String> = queries.iter().flat_map(|(_, q)| names(q).metrics).collect();

    let live = start(Setup::new("dashboards")).await;
    live.lab.faults.set_rules(faults());
    live.lab
        .kube
        .apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ci", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ci"}},
                "template": {"metadata": {"labels": {"app": "ci"}}, "spec": {
                    "nodeSelector": {"node-pool": "burst"},
                    "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
                    "containers": [{"name": "runner", "image": "runner:1", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}}}
        }))
        .unwrap();
    // Every registered family by its declared names; then scrape through
    // the burst (workers on their way, then Ready) until every family the
    // queries use has had samples (their label names are checked then),
    // but for the error families, which a run that goes well leaves empty:
    // those are checked by name alone unless they have samples.
    let mut seen = BTreeMap::new();
    for (name, kind) in tidepool_runtime::run::Metrics::new().declared() {
        merge(&mut seen, &format!("# TYPE {name} {kind}\n"));
    }
    let mut scrape = String::new();
    for _ in 0..1200 {
        scrape = live.metrics().await;
        merge(&mut seen, &scrape);
        if wanted
            .iter()
            .filter(|m| !QUIET.contains(&m.as_str()))
            .all(|m| seen.get(m).is_some_and(|s: &Series| s.sampled))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unsampled: Vec<_> = wanted
        .iter()
        .filter(|m| !seen.get(*m).is_some_and(|s| s.sampled))
        .collect();
    let by_labels_too = queries
        .iter()
        .filter(|(_, q)| names(q).metrics.iter().all(|m| !unsampled.contains(&m)))
        .count();

    let mut problems = Vec::new();
    for (origin, expr) in &queries {
        let n = names(expr);
        assert!(!n.metrics.is_empty(), "{origin}: no metric in {expr}");
        let mut known_labels = BTreeSet::new();
        let mut sampled = true;
        for m in &n.metrics {
            match seen.get(m) {
                Some(series) => {
                    sampled &= series.sampled;
                    known_labels.extend(series.labels.iter().cloned());
                }
                None => problems.push(format!("{origin}: {m} is not exported ({expr})")),
            }
        }
        if sampled {
            for l in n.labels.iter().filter(|l| !known_labels.contains(*l)) {
                problems.push(format!(
                    "{origin}: no exported series has label {l} ({expr})"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nnever sampled: {unsampled:?}\nfaults injected: {}\n\nlast scrape:\n{scrape}",
        problems.join("\n"),
        live.lab.faults.injected_total()
    );
    eprintln!(
        "{} queries over {} metric families: every name exported; {by_labels_too} queries checked by label too (never sampled: {unsampled:?})",
        queries.len(),
        wanted.len()
    );
    live.stop().await;
}
