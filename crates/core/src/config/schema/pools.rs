//! The `pools` section: each pool's kind, provider, sizes, template,
//! hosts, limits, lifetimes (TTL, idle timeout), schedule, labels and
//! taints, checked against the providers and sizes it refers to. The
//! scaling policies live in [`super::scaling`], the repair policy in
//! [`super::repair`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::config::reader::{Errors, Obj, Spanned, duration, join, list, string, uint, uint32};
use crate::config::yaml::{Mark, Node, Value};
use crate::config::{Pool, ProxmoxProvider, Scheduled, SizeEntry, Utilization};
use crate::conventions::{MAX_POOL_NAME_LEN, Taint, TaintEffect};
use crate::cron::Cron;
use crate::k8s_names::validate_qualified_name;
use crate::pool::{Limits, PoolKind};
use crate::safety::{MAX_TTL, MIN_TTL, did_you_mean};

use super::fields::{dns_label, label_value, positive_duration, qualified_name, unique_strings};
use super::repair::repair;
use super::scaling::{scale_down, scale_up, utilization};
use super::spares::spares;

/// The `pools` list: at least one pool, no name twice.
pub(super) fn pools(node: &Node, path: &str, known: &Known<'_>, errs: &mut Errors) -> Vec<Pool> {
    let mut seen: HashMap<String, Mark> = HashMap::new();
    let items = list(node, path, errs, |n, p, e| {
        let pool = pool(n, p, known, e)?;
        let name_mark = pool_name_mark(n).unwrap_or(n.mark);
        if let Some(first) = seen.get(&pool.name) {
            e.at(
                &join(p, "name"),
                name_mark,
                format!(
                    "duplicate pool name `{}` (first defined at {first})",
                    pool.name
                ),
            );
            return None;
        }
        seen.insert(pool.name.clone(), name_mark);
        Some(pool)
    })
    .unwrap_or_default();
    if matches!(&node.value, Value::Seq(s) if s.is_empty()) {
        errs.at(path, node.mark, "at least one pool is required");
    }
    items
}

/// Where the pool's `name` is written, for the duplicate-name error.
fn pool_name_mark(node: &Node) -> Option<Mark> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.text == "name")
            .map(|(_, v)| v.mark),
        _ => None,
    }
}

/// The providers and sizes a pool may refer to.
pub(super) struct Known<'k> {
    /// Providers by name.
    pub(super) providers: &'k BTreeMap<String, Spanned<ProxmoxProvider>>,
    /// Sizes by name.
    pub(super) sizes: &'k BTreeMap<String, Spanned<SizeEntry>>,
}

/// One pool of the `pools` list.
fn pool(node: &Node, path: &str, known: &Known<'_>, errs: &mut Errors) -> Option<Pool> {
    let mut obj = Obj::new(node, path, errs)?;
    let name = obj
        .require("name", errs)
        .and_then(|(n, p)| pool_name(n, &p, errs));
    let kind = obj
        .require("kind", errs)
        .and_then(|(n, p)| pool_kind(n, &p, errs));
    let provider = pool_provider(obj.get("provider"), node, path, known.providers, errs);
    let pool_sizes = obj
        .require("sizes", errs)
        .and_then(|(n, p)| pool_sizes(n, &p, kind, known.sizes, errs));
    let template = obj
        .require("template", errs)
        .and_then(|(n, p)| template(n, &p, errs));
    let provider_hosts = provider
        .as_ref()
        .and_then(|name| known.providers.get(name))
        .map(|p| &p.value.hosts);
    let hosts = pool_hosts(obj.get("hosts"), provider_hosts, errs);
    let limits = obj
        .require("limits", errs)
        .and_then(|(n, p)| limits(n, &p, errs));
    let ttl_field = obj.get("ttl");
    let idle_field = obj.get("idleTimeout");
    let scale_up = scale_up(obj.get("scaleUp"), errs);
    let scale_down = scale_down(obj.get("scaleDown"), errs);
    let utilization_field = obj.get("utilization");
    let repair_field = obj.get("repair");
    let spares_field = obj.get("spares");
    let schedule = match obj.get("schedule") {
        Some((n, p)) => list(n, &p, errs, scheduled),
        None => Some(Vec::new()),
    };
    let labels = match obj.get("labels") {
        Some((n, p)) => extra_labels(n, &p, errs),
        None => Some(BTreeMap::new()),
    };
    let taints = match obj.get("taints") {
        Some((n, p)) => list(n, &p, errs, taint),
        None => Some(Vec::new()),
    };
    obj.finish(errs);

    let kind = kind?;
    let ttl = lifetime(ttl_field, kind, &TTL, errs)?;
    let idle_timeout = lifetime(idle_field, kind, &IDLE_TIMEOUT, errs)?;
    let utilization = pool_utilization(utilization_field, kind, errs)?;
    let repair = repair(repair_field, Some(kind), errs)?;
    let spares = spares(spares_field, pool_sizes.as_deref(), limits.as_ref(), errs);
    let limits = limits?;
    let spares = spares?;
    let schedule = schedule?;
    check_schedule(&schedule, &limits, node, path, errs)?;
    Some(Pool {
        name: name?,
        kind,
        provider: provider?,
        sizes: pool_sizes?,
        template: template?,
        hosts: hosts?,
        limits,
        ttl,
        idle_timeout,
        scale_up: scale_up?,
        scale_down: scale_down?,
        utilization,
        schedule,
        labels: labels?,
        taints: taints?,
        repair,
        spares,
    })
}

/// The pool's name: a DNS label short enough that worker names
/// (`<pool>-xxxxx`) stay within 63 characters.
fn pool_name(n: &Node, p: &str, errs: &mut Errors) -> Option<String> {
    let name = dns_label(n, p, "pool name", errs)?;
    if name.len() > MAX_POOL_NAME_LEN {
        errs.at(
            p,
            n.mark,
            format!(
                "pool name is {} characters; at most {MAX_POOL_NAME_LEN} are allowed so that worker names (`<pool>-xxxxx`) stay within 63",
                name.len()
            ),
        );
        return None;
    }
    Some(name)
}

/// The pool's kind.
fn pool_kind(n: &Node, p: &str, errs: &mut Errors) -> Option<PoolKind> {
    let v = string(n, p, errs)?;
    let kind = PoolKind::parse(&v.value);
    if kind.is_none() {
        let hint = did_you_mean(&v.value, PoolKind::ALL.iter().map(|k| k.as_str()));
        errs.at(p, v.mark, format!("unknown pool kind `{}`{hint}", v.value));
    }
    kind
}

/// The pool's provider: the one named, or the only one configured.
fn pool_provider(
    field: Option<(&Node, String)>,
    node: &Node,
    path: &str,
    providers: &BTreeMap<String, Spanned<ProxmoxProvider>>,
    errs: &mut Errors,
) -> Option<String> {
    match field {
        Some((n, p)) => string(n, &p, errs).and_then(|v| {
            if providers.contains_key(&v.value) {
                Some(v.value)
            } else {
                let hint = did_you_mean(&v.value, providers.keys().map(String::as_str));
                errs.at(&p, v.mark, format!("unknown provider `{}`{hint}", v.value));
                None
            }
        }),
        None => match providers.len() {
            1 => providers.keys().next().cloned(),
            0 => None, // `providers` itself reports that it is missing or empty
            _ => {
                errs.at(
                    path,
                    node.mark,
                    "missing required field `provider` (there is more than one provider)",
                );
                None
            }
        },
    }
}

/// The sizes the pool offers: known ones, each with a GPU in a gpu pool.
fn pool_sizes(
    n: &Node,
    p: &str,
    kind: Option<PoolKind>,
    sizes: &BTreeMap<String, Spanned<SizeEntry>>,
    errs: &mut Errors,
) -> Option<Vec<String>> {
    let names = unique_strings(n, p, "size", errs)?;
    if names.is_empty() {
        errs.at(p, n.mark, "list at least one size");
        return None;
    }
    let mut ok = true;
    for s in &names {
        match sizes.get(&s.value) {
            None => {
                let hint = did_you_mean(&s.value, sizes.keys().map(String::as_str));
                errs.at(&s.path, s.mark, format!("unknown size `{}`{hint}", s.value));
                ok = false;
            }
            Some(entry) if kind == Some(PoolKind::Gpu) && entry.value.size.gpu.is_none() => {
                errs.at(
                    &s.path,
                    s.mark,
                    format!("size `{}` has no GPU, but this is a gpu pool", s.value),
                );
                ok = false;
            }
            Some(_) => {}
        }
    }
    ok.then(|| names.into_iter().map(|s| s.value).collect::<Vec<_>>())
}

/// The template name, whose only placeholder is `{size}`, or a VMID.
fn template(n: &Node, p: &str, errs: &mut Errors) -> Option<String> {
    let v = string(n, p, errs)?;
    let mut rest = v.value.as_str();
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map(|e| start + e);
        let Some(end) = end else {
            errs.at(p, v.mark, "unclosed `{` in template");
            return None;
        };
        let placeholder = &rest[start + 1..end];
        if placeholder != "size" {
            let hint = did_you_mean(placeholder, ["size"]);
            errs.at(
                p,
                v.mark,
                format!("unknown placeholder `{{{placeholder}}}` in template{hint}"),
            );
            return None;
        }
        rest = &rest[end + 1..];
    }
    if v.value.trim().is_empty() {
        errs.at(p, v.mark, "template must not be empty");
        return None;
    }
    Some(v.value)
}

/// The hosts the pool may use: some of its provider's (`known`), all of
/// them when the field is absent.
fn pool_hosts(
    field: Option<(&Node, String)>,
    known: Option<&Vec<String>>,
    errs: &mut Errors,
) -> Option<Vec<String>> {
    let Some((n, p)) = field else {
        return known.cloned();
    };
    let hosts = unique_strings(n, &p, "host", errs)?;
    let known = known?;
    let mut ok = true;
    for h in &hosts {
        if !known.contains(&h.value) {
            let hint = did_you_mean(&h.value, known.iter().map(String::as_str));
            errs.at(
                &h.path,
                h.mark,
                format!(
                    "host `{}` is not one of the provider's hosts{hint}",
                    h.value
                ),
            );
            ok = false;
        }
    }
    ok.then(|| hosts.into_iter().map(|h| h.value).collect())
}

/// The rule of one limit on a worker's life (`ttl`, `idleTimeout`).
struct LifetimeRule {
    /// The value when the field is not given, by pool kind.
    default: fn(PoolKind) -> Option<Duration>,
    /// The message when a permanent pool gives the field.
    on_permanent: &'static str,
    /// What is wrong with a given value, if anything.
    invalid: fn(Duration) -> Option<String>,
}

/// The TTL of new workers: between 1h and 168h, none for permanent pools;
/// 4h when not given for the kinds that have one by default.
const TTL: LifetimeRule = LifetimeRule {
    default: |kind| {
        kind.has_ttl_by_default()
            .then_some(Duration::from_secs(4 * 3600))
    },
    on_permanent: "permanent pools have no TTL; remove `ttl` or use kind burst",
    invalid: |d| {
        (!(MIN_TTL..=MAX_TTL).contains(&d)).then(|| {
            format!(
                "ttl must be between 1h and 168h, got {}",
                crate::duration::Human(d)
            )
        })
    },
};

/// The idle timeout: at least 1m, none for permanent pools; 30m when not
/// given for burst and gpu pools.
const IDLE_TIMEOUT: LifetimeRule = LifetimeRule {
    default: |kind| {
        matches!(kind, PoolKind::Burst | PoolKind::Gpu).then_some(Duration::from_secs(30 * 60))
    },
    on_permanent: "permanent pools are not removed when idle; remove `idleTimeout`",
    invalid: |d| {
        (d < Duration::from_secs(60)).then(|| "idleTimeout must be at least 1m".to_owned())
    },
};

/// A limit on a worker's life checked against its `rule`: the rule's
/// default when not given; never for a permanent pool. `None` when invalid.
fn lifetime(
    field: Option<(&Node, String)>,
    kind: PoolKind,
    rule: &LifetimeRule,
    errs: &mut Errors,
) -> Option<Option<Duration>> {
    let Some((n, p)) = field else {
        return Some((rule.default)(kind));
    };
    let d = duration(n, &p, errs)?;
    if kind == PoolKind::Permanent {
        errs.at(&p, d.mark, rule.on_permanent);
        return None;
    }
    if let Some(message) = (rule.invalid)(d.value) {
        errs.at(&p, d.mark, message);
        return None;
    }
    Some(Some(d.value))
}

/// The utilization targets, for permanent pools only. `None` when invalid.
fn pool_utilization(
    field: Option<(&Node, String)>,
    kind: PoolKind,
    errs: &mut Errors,
) -> Option<Option<Utilization>> {
    let Some((n, p)) = field else {
        return Some(None);
    };
    if kind != PoolKind::Permanent {
        errs.at(
            &p,
            n.mark,
            "utilization targets apply to permanent pools only",
        );
        return None;
    }
    Some(Some(utilization(n, &p, errs)?))
}

/// No schedule entry asks for more workers than the pool's `maxNodes`.
fn check_schedule(
    schedule: &[Scheduled],
    limits: &Limits,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<()> {
    for (i, s) in schedule.iter().enumerate() {
        if s.min_nodes > limits.max_nodes {
            errs.at(
                &format!("{path}.schedule[{i}].minNodes"),
                node.mark,
                format!(
                    "minNodes ({}) is greater than the pool's maxNodes ({})",
                    s.min_nodes, limits.max_nodes
                ),
            );
            return None;
        }
    }
    Some(())
}

/// The pool's limits: `maxNodes` at least `minNodes`, optional ceilings.
fn limits(node: &Node, path: &str, errs: &mut Errors) -> Option<Limits> {
    let mut obj = Obj::new(node, path, errs)?;
    let min = obj.get("minNodes").map(|(n, p)| uint32(n, &p, errs));
    let max = obj
        .require("maxNodes", errs)
        .and_then(|(n, p)| uint32(n, &p, errs));
    let cpu = obj.get("cpuCores").map(|(n, p)| uint(n, &p, errs));
    let mem = obj.get("memoryMiB").map(|(n, p)| uint(n, &p, errs));
    obj.finish(errs);
    let min = match min {
        Some(v) => Some(v?),
        None => None,
    };
    let max = max?;
    if let Some(min) = &min
        && min.value > max.value
    {
        errs.at(
            &min.path,
            min.mark,
            format!(
                "minNodes ({}) is greater than maxNodes ({})",
                min.value, max.value
            ),
        );
        return None;
    }
    let cpu = match cpu {
        Some(v) => Some(v?.value),
        None => None,
    };
    let mem = match mem {
        Some(v) => Some(v?.value),
        None => None,
    };
    Some(Limits {
        min_nodes: min.map_or(0, |m| m.value),
        max_nodes: max.value,
        cpu_cores: cpu,
        memory_mib: mem,
    })
}

/// One scheduled pre-scaling window.
fn scheduled(node: &Node, path: &str, errs: &mut Errors) -> Option<Scheduled> {
    let mut obj = Obj::new(node, path, errs)?;
    let cron = obj.require("cron", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        match Cron::parse(&v.value) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.at(&p, v.mark, e.to_string());
                None
            }
        }
    });
    let min_nodes = obj
        .require("minNodes", errs)
        .and_then(|(n, p)| uint32(n, &p, errs));
    let dur = obj
        .require("duration", errs)
        .and_then(|(n, p)| positive_duration(n, &p, errs));
    obj.finish(errs);
    Some(Scheduled {
        cron: cron?,
        min_nodes: min_nodes?.value,
        duration: dur?,
    })
}

/// The extra labels of the pool's nodes.
fn extra_labels(node: &Node, path: &str, errs: &mut Errors) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        errs.at(
            path,
            node.mark,
            format!(
                "expected a mapping of label to value, found {}",
                node.kind()
            ),
        );
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, value) in entries {
        let p = join(path, &key.text);
        if let Err(e) = validate_qualified_name(&key.text, "label key") {
            errs.at(&p, key.mark, e.to_string());
            ok = false;
            continue;
        }
        match label_value(value, &p, errs) {
            Some(v) => {
                out.insert(key.text.clone(), v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One extra taint of the pool's nodes.
fn taint(node: &Node, path: &str, errs: &mut Errors) -> Option<Taint> {
    let mut obj = Obj::new(node, path, errs)?;
    let key = obj
        .require("key", errs)
        .and_then(|(n, p)| qualified_name(n, &p, "taint key", errs));
    let value = match obj.get("value") {
        Some((n, p)) => label_value(n, &p, errs),
        None => Some(String::new()),
    };
    let effect = obj.require("effect", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let effect = TaintEffect::parse(&v.value);
        if effect.is_none() {
            let hint = did_you_mean(&v.value, ["NoSchedule", "PreferNoSchedule", "NoExecute"]);
            errs.at(
                &p,
                v.mark,
                format!("unknown taint effect `{}`{hint}", v.value),
            );
        }
        effect
    });
    obj.finish(errs);
    Some(Taint {
        key: key?,
        value: value?,
        effect: effect?,
    })
}
