//! The configuration schema: walks the YAML tree, checks every rule and
//! builds the [`Config`]. Each problem is recorded with its path and
//! position, and the walk continues so that one pass finds them all.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::reader::{
    Errors, Obj, Spanned, boolean, duration, join, list, number, quantity, string, uint, uint32,
};
use super::yaml::{self, Mark, Node, Value};
use super::{
    Config, ConfigErrors, Join, JoinMethod, NocloudFlavor, Pool, Pressure, ProxmoxProvider,
    SCHEMA_VERSION, ScaleDown, ScaleUp, Scheduled, SecretRef, Server, SizeEntry, TlsVerify,
    Utilization,
};
use crate::conventions::{LabelKeys, MAX_POOL_NAME_LEN, Taint, TaintEffect};
use crate::cron::Cron;
use crate::k8s_names::{
    validate_dns_label, validate_dns_subdomain, validate_label_value, validate_qualified_name,
};
use crate::pool::{DEFAULT_MAX_PODS, Limits, PoolKind, Resources, Size};
use crate::safety::{MAX_TTL, MIN_TTL, ProtectedNames, did_you_mean};

const MIB: u64 = 1 << 20;

pub(super) fn validate(text: &str) -> Result<Config, ConfigErrors> {
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
                errors.push(super::ConfigError {
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
        Some((n, p)) => pools(n, &p, &providers, &sizes, errs),
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

fn positive_duration(node: &Node, path: &str, errs: &mut Errors) -> Option<Duration> {
    let d = duration(node, path, errs)?;
    if d.value.is_zero() {
        errs.at(path, d.mark, "must be longer than zero");
        return None;
    }
    Some(d.value)
}

fn fraction(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<f64>> {
    let v = number(node, path, errs)?;
    if v.value <= 0.0 || v.value > 1.0 {
        errs.at(
            path,
            v.mark,
            format!("must be a fraction in (0, 1], got {}", v.value),
        );
        return None;
    }
    Some(v)
}

fn at_least_one(node: &Node, path: &str, errs: &mut Errors) -> Option<u32> {
    let v = uint32(node, path, errs)?;
    if v.value == 0 {
        errs.at(path, v.mark, "must be at least 1");
        return None;
    }
    Some(v.value)
}

fn inline_secret(key: &str, reference: &str) -> String {
    format!(
        "`{key}` would put a secret in the configuration file; give it by reference instead: \
         `{reference}: {{env: NAME}}`, `{{file: PATH}}` or `{{secret: {{name: NAME, key: KEY}}}}`"
    )
}

fn secret_ref(node: &Node, path: &str, errs: &mut Errors) -> Option<SecretRef> {
    let mut obj = Obj::new(node, path, errs)?;
    let env = obj.get("env");
    let file = obj.get("file");
    let secret = obj.get("secret");
    obj.finish(errs);
    let given = [env.is_some(), file.is_some(), secret.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        errs.at(
            path,
            node.mark,
            format!("give exactly one of `env`, `file` or `secret` (found {given})"),
        );
        return None;
    }
    if let Some((n, p)) = env {
        let v = string(n, &p, errs)?;
        let ok = v
            .value
            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && v.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            errs.at(
                &p,
                v.mark,
                format!("`{}` is not a valid environment variable name", v.value),
            );
            return None;
        }
        return Some(SecretRef::Env(v.value));
    }
    if let Some((n, p)) = file {
        let v = string(n, &p, errs)?;
        if v.value.is_empty() {
            errs.at(&p, v.mark, "file path must not be empty");
            return None;
        }
        return Some(SecretRef::File(v.value));
    }
    let (n, p) = secret?;
    let mut s = Obj::new(n, &p, errs)?;
    let name = s
        .require("name", errs)
        .and_then(|(n, p)| dns_subdomain(n, &p, "Secret name", errs));
    let key = s
        .require("key", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    let namespace = s
        .get("namespace")
        .and_then(|(n, p)| dns_label(n, &p, "namespace", errs));
    s.finish(errs);
    Some(SecretRef::Secret {
        namespace,
        name: name?,
        key: key?.value,
    })
}

fn dns_label(node: &Node, path: &str, what: &'static str, errs: &mut Errors) -> Option<String> {
    let v = string(node, path, errs)?;
    match validate_dns_label(&v.value, what) {
        Ok(()) => Some(v.value),
        Err(e) => {
            errs.at(path, v.mark, e.to_string());
            None
        }
    }
}

fn dns_subdomain(node: &Node, path: &str, what: &'static str, errs: &mut Errors) -> Option<String> {
    let v = string(node, path, errs)?;
    match validate_dns_subdomain(&v.value, what) {
        Ok(()) => Some(v.value),
        Err(e) => {
            errs.at(path, v.mark, e.to_string());
            None
        }
    }
}

fn unique_strings(
    node: &Node,
    path: &str,
    what: &str,
    errs: &mut Errors,
) -> Option<Vec<Spanned<String>>> {
    let items = list(node, path, errs, string)?;
    let mut seen: HashMap<&str, Mark> = HashMap::new();
    for item in &items {
        if let Some(first) = seen.get(item.value.as_str()) {
            errs.at(
                &item.path,
                item.mark,
                format!(
                    "duplicate {what} `{}` (first listed at {first})",
                    item.value
                ),
            );
        } else {
            seen.insert(&item.value, item.mark);
        }
    }
    Some(items)
}

fn providers(
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> BTreeMap<String, Spanned<ProxmoxProvider>> {
    let mut out = BTreeMap::new();
    let Some(obj) = Obj::new(node, path, errs) else {
        return out;
    };
    let Value::Map(entries) = &node.value else {
        return out;
    };
    if entries.is_empty() {
        errs.at(path, node.mark, "at least one provider is required");
    }
    drop(obj);
    for (key, value) in entries {
        let p = join(path, &key.text);
        if let Err(e) = validate_dns_label(&key.text, "provider name") {
            errs.at(&p, key.mark, e.to_string());
            continue;
        }
        if let Some(provider) = provider(&key.text, value, &p, errs) {
            out.insert(
                key.text.clone(),
                Spanned {
                    value: provider,
                    mark: key.mark,
                    path: p,
                },
            );
        }
    }
    out
}

fn provider(name: &str, node: &Node, path: &str, errs: &mut Errors) -> Option<ProxmoxProvider> {
    let mut obj = Obj::new(node, path, errs)?;
    if let Some((n, p)) = obj.require("type", errs)
        && let Some(t) = string(n, &p, errs)
        && t.value != "proxmox"
    {
        errs.at(
            &p,
            t.mark,
            format!("unknown provider type `{}`; supported: proxmox", t.value),
        );
    }
    let endpoint = obj.require("endpoint", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let lower = v.value.to_ascii_lowercase();
        if !lower.starts_with("https://") {
            errs.at(
                &p,
                v.mark,
                format!(
                    "`{}` must be an https:// URL (the Proxmox API is served over TLS)",
                    v.value
                ),
            );
            return None;
        }
        let trimmed = v.value.trim_end_matches('/');
        if !trimmed.ends_with("/api2/json") {
            errs.at(
                &p,
                v.mark,
                format!(
                    "`{}` must end in /api2/json, e.g. https://pve.example:8006/api2/json",
                    v.value
                ),
            );
            return None;
        }
        Some(trimmed.to_owned())
    });
    let token = obj
        .require("tokenFrom", errs)
        .and_then(|(n, p)| secret_ref(n, &p, errs));
    let tls = match obj.get("tls") {
        Some((n, p)) => tls(n, &p, errs),
        None => Some(TlsVerify::System),
    };
    let hosts = obj.require("hosts", errs).and_then(|(n, p)| {
        let hosts = unique_strings(n, &p, "host", errs)?;
        if hosts.is_empty() {
            errs.at(&p, n.mark, "list at least one Proxmox host");
        }
        Some(hosts.into_iter().map(|h| h.value).collect::<Vec<_>>())
    });
    let range = obj.require("vmidRange", errs).and_then(|(n, p)| {
        let mut r = Obj::new(n, &p, errs)?;
        let lower = r
            .require("lower", errs)
            .and_then(|(n, p)| uint32(n, &p, errs));
        let upper = r
            .require("upper", errs)
            .and_then(|(n, p)| uint32(n, &p, errs));
        r.finish(errs);
        let (lower, upper) = (lower?, upper?);
        let mut ok = true;
        for v in [&lower, &upper] {
            if !(100..=999_999_999).contains(&v.value) {
                errs.at(
                    &v.path,
                    v.mark,
                    format!("VMID {} is outside Proxmox's range 100-999999999", v.value),
                );
                ok = false;
            }
        }
        if ok && lower.value > upper.value {
            errs.at(
                &p,
                n.mark,
                format!(
                    "lower ({}) is greater than upper ({})",
                    lower.value, upper.value
                ),
            );
            ok = false;
        }
        ok.then_some((lower.value, upper.value))
    });
    let reserve = obj
        .get("hostMemoryReserveMiB")
        .and_then(|(n, p)| uint(n, &p, errs))
        .map_or(4096, |v| v.value);
    let overhead = obj
        .get("vmMemoryOverheadMiB")
        .and_then(|(n, p)| uint(n, &p, errs))
        .map_or(512, |v| v.value);
    let overcommit = match obj.get("cpuOvercommit") {
        Some((n, p)) => number(n, &p, errs).and_then(|v| {
            if !(0.1..=64.0).contains(&v.value) {
                errs.at(
                    &p,
                    v.mark,
                    format!("must be between 0.1 and 64, got {}", v.value),
                );
                return None;
            }
            Some(v.value)
        }),
        None => Some(4.0),
    };
    let storage = obj
        .get("storage")
        .and_then(|(n, p)| string(n, &p, errs))
        .map_or_else(|| "local-lvm".to_owned(), |v| v.value);
    let resource_pool = obj
        .get("resourcePool")
        .and_then(|(n, p)| string(n, &p, errs))
        .map(|v| v.value);
    let full_clone = obj
        .get("fullClone")
        .and_then(|(n, p)| boolean(n, &p, errs))
        .unwrap_or(true);
    obj.finish_with(errs, |key| {
        matches!(
            key,
            "token" | "tokenSecret" | "apiToken" | "password" | "secret"
        )
        .then(|| inline_secret(key, "tokenFrom"))
    });
    let (vmid_lower, vmid_upper) = range?;
    Some(ProxmoxProvider {
        name: name.to_owned(),
        endpoint: endpoint?,
        token: token?,
        tls: tls?,
        hosts: hosts?,
        vmid_lower,
        vmid_upper,
        host_memory_reserve_mib: reserve,
        vm_memory_overhead_mib: overhead,
        cpu_overcommit: overcommit?,
        storage,
        resource_pool,
        full_clone,
    })
}

fn tls(node: &Node, path: &str, errs: &mut Errors) -> Option<TlsVerify> {
    let mut obj = Obj::new(node, path, errs)?;
    let ca = obj.get("caFile").and_then(|(n, p)| string(n, &p, errs));
    let fp = obj.get("fingerprint").and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let parts: Vec<&str> = v.value.split(':').collect();
        let ok = parts.len() == 32 && parts.iter().all(|h| h.len() == 2 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            errs.at(&p, v.mark, "expected a SHA-256 fingerprint: 32 hex pairs separated by ':' (as shown by Proxmox)");
            return None;
        }
        Some(v.value.to_ascii_uppercase())
    });
    let insecure = obj
        .get("insecureSkipVerify")
        .and_then(|(n, p)| boolean(n, &p, errs))
        .unwrap_or(false);
    obj.finish(errs);
    match (ca, fp, insecure) {
        (Some(ca), None, false) => Some(TlsVerify::CaFile(ca.value)),
        (None, Some(fp), false) => Some(TlsVerify::Fingerprint(fp)),
        (None, None, true) => Some(TlsVerify::InsecureSkipVerify),
        (None, None, false) => Some(TlsVerify::System),
        _ => {
            errs.at(
                path,
                node.mark,
                "give at most one of `caFile`, `fingerprint` or `insecureSkipVerify: true`",
            );
            None
        }
    }
}

fn join_section(node: &Node, path: &str, errs: &mut Errors) -> Option<Join> {
    let mut obj = Obj::new(node, path, errs)?;
    let method = obj
        .require("method", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    let flavor = obj.get("flavor");
    let port = obj.get("talosPort");
    let listen = obj.get("listen");
    let advertise = obj.get("advertiseUrl");
    let worker_config = obj
        .require("workerConfigFrom", errs)
        .and_then(|(n, p)| secret_ref(n, &p, errs));
    let talosconfig = match obj.get("talosconfigFrom") {
        Some((n, p)) => secret_ref(n, &p, errs).map(Some),
        None => Some(None),
    };
    let join_command = match obj.get("joinCommandFrom") {
        Some((n, p)) => secret_ref(n, &p, errs).map(|r| Some((r, n.mark, p))),
        None => Some(None),
    };
    let registration_timeout = obj
        .get("registrationTimeout")
        .and_then(|(n, p)| positive_duration(n, &p, errs))
        .unwrap_or(Duration::from_secs(300));
    obj.finish_with(errs, |key| match key {
        "workerConfig" | "userData" => Some(inline_secret(key, "workerConfigFrom")),
        "talosconfig" => Some(inline_secret(key, "talosconfigFrom")),
        "joinCommand" => Some(inline_secret(key, "joinCommandFrom")),
        _ => None,
    });
    let method = method?;
    let not_for = |errs: &mut Errors, field: Option<(&Node, String)>, which: &str| {
        if let Some((n, p)) = field {
            errs.at(
                &p,
                n.mark,
                format!("only applies to the {which} join method"),
            );
        }
    };
    let method = match method.value.as_str() {
        "talos-api" => {
            not_for(errs, flavor, "nocloud");
            not_for(errs, listen, "nocloud");
            not_for(errs, advertise, "nocloud");
            let port = match port {
                Some((n, p)) => {
                    let v = uint(n, &p, errs)?;
                    match u16::try_from(v.value) {
                        Ok(port) if port > 0 => port,
                        _ => {
                            errs.at(&p, v.mark, format!("{} is not a TCP port", v.value));
                            return None;
                        }
                    }
                }
                None => 50000,
            };
            JoinMethod::TalosApi { port }
        }
        "nocloud" => {
            not_for(errs, port, "talos-api");
            let flavor = match flavor {
                Some((n, p)) => {
                    let v = string(n, &p, errs)?;
                    match v.value.as_str() {
                        "talos" => NocloudFlavor::Talos,
                        "cloud-init" => NocloudFlavor::CloudInit,
                        other => {
                            errs.at(
                                &p,
                                v.mark,
                                format!("unknown flavor `{other}`; expected talos or cloud-init"),
                            );
                            return None;
                        }
                    }
                }
                None => NocloudFlavor::Talos,
            };
            let listen = listen
                .and_then(|(n, p)| string(n, &p, errs))
                .map_or_else(|| "0.0.0.0:8088".to_owned(), |v| v.value);
            let Some((n, p)) = advertise else {
                errs.at(path, node.mark, "the nocloud method needs `advertiseUrl`, the base URL VMs reach Tidepool's user-data server at");
                return None;
            };
            let url = string(n, &p, errs)?;
            if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                errs.at(
                    &p,
                    url.mark,
                    format!("`{}` must be an http:// or https:// URL", url.value),
                );
                return None;
            }
            JoinMethod::Nocloud {
                flavor,
                listen,
                advertise_url: url.value.trim_end_matches('/').to_owned(),
            }
        }
        other => {
            let hint = did_you_mean(other, ["talos-api", "nocloud"]);
            errs.at(
                &method.path,
                method.mark,
                format!("unknown join method `{other}`{hint}"),
            );
            return None;
        }
    };
    let join_command = join_command?;
    let cloud_init = matches!(
        method,
        JoinMethod::Nocloud {
            flavor: NocloudFlavor::CloudInit,
            ..
        }
    );
    match (&join_command, cloud_init) {
        (None, true) => {
            errs.at(
                path,
                node.mark,
                "the nocloud cloud-init flavor needs `joinCommandFrom`, the `kubeadm join` command by reference",
            );
            return None;
        }
        (Some((_, mark, p)), false) => {
            errs.at(
                p,
                *mark,
                "only applies to the nocloud join method with flavor cloud-init",
            );
            return None;
        }
        _ => {}
    }
    Some(Join {
        method,
        worker_config: worker_config?,
        talosconfig: talosconfig?,
        join_command: join_command.map(|(r, _, _)| r),
        registration_timeout,
    })
}

fn label_keys(node: &Node, path: &str, errs: &mut Errors) -> Option<LabelKeys> {
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

fn sizes(
    section: Option<(&Node, String)>,
    errs: &mut Errors,
) -> BTreeMap<String, Spanned<SizeEntry>> {
    let mut out: BTreeMap<String, Spanned<SizeEntry>> = Size::defaults()
        .into_iter()
        .map(|size| {
            (
                size.name.clone(),
                Spanned {
                    value: SizeEntry { size, taint: false },
                    mark: Mark::default(),
                    path: String::new(),
                },
            )
        })
        .collect();
    let Some((node, path)) = section else {
        return out;
    };
    let Value::Map(entries) = &node.value else {
        errs.at(
            &path,
            node.mark,
            format!(
                "expected a mapping of size name to size, found {}",
                node.kind()
            ),
        );
        return out;
    };
    for (key, value) in entries {
        let p = join(&path, &key.text);
        if let Err(e) = validate_dns_label(&key.text, "size name") {
            errs.at(&p, key.mark, e.to_string());
            continue;
        }
        let base = out.get(&key.text).map(|s| s.value.clone());
        if let Some(entry) = size(&key.text, base, value, &p, errs) {
            out.insert(
                key.text.clone(),
                Spanned {
                    value: entry,
                    mark: key.mark,
                    path: p,
                },
            );
        }
    }
    out
}

fn whole_mib(q: &Spanned<crate::quantity::Quantity>, errs: &mut Errors) -> Option<u64> {
    let bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
    if bytes % MIB != 0 || bytes == 0 {
        errs.at(
            &q.path,
            q.mark,
            format!(
                "memory must be a positive whole number of MiB, got {} bytes",
                bytes
            ),
        );
        return None;
    }
    Some(bytes / MIB)
}

fn size(
    name: &str,
    base: Option<SizeEntry>,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<SizeEntry> {
    let mut obj = Obj::new(node, path, errs)?;
    let required = base.is_none();
    fn field<'a>(
        obj: &mut Obj<'a>,
        required: bool,
        key: &'static str,
        errs: &mut Errors,
    ) -> Option<(&'a Node, String)> {
        if required {
            obj.require(key, errs)
        } else {
            obj.get(key)
        }
    }
    let vcpu = field(&mut obj, required, "vcpu", errs).and_then(|(n, p)| {
        let v = uint32(n, &p, errs)?;
        if v.value == 0 || v.value > 512 {
            errs.at(
                &p,
                v.mark,
                format!("vcpu must be between 1 and 512, got {}", v.value),
            );
            return None;
        }
        Some(v.value)
    });
    let memory = field(&mut obj, required, "memory", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .and_then(|q| whole_mib(&q, errs));
    let disk = field(&mut obj, required, "disk", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .map(|q| {
            let bytes = q.value.units_ceil();
            u64::try_from(
                bytes.div_euclid(1_000_000_000) + i128::from(bytes.rem_euclid(1_000_000_000) != 0),
            )
            .unwrap_or(u64::MAX)
        });
    let taint = obj.get("taint").and_then(|(n, p)| boolean(n, &p, errs));
    let gpu = obj.get("gpu").map(|(n, p)| gpu_spec(n, &p, errs));
    let allocatable = obj.get("allocatable");
    obj.finish(errs);

    let mut entry = base.unwrap_or(SizeEntry {
        size: Size {
            name: name.to_owned(),
            vcpu: 0,
            memory_mib: 0,
            disk_gb: 0,
            gpu: None,
            allocatable: Resources::default(),
        },
        taint: false,
    });
    let shape_changed = vcpu.is_some() || memory.is_some() || gpu.is_some();
    if let Some(v) = vcpu {
        entry.size.vcpu = v;
    }
    if let Some(m) = memory {
        entry.size.memory_mib = m;
    }
    if let Some(d) = disk {
        entry.size.disk_gb = d;
    }
    if let Some(t) = taint {
        entry.taint = t;
    }
    if let Some(g) = gpu {
        entry.size.gpu = Some(g?);
    }
    if entry.size.vcpu == 0 || entry.size.memory_mib == 0 {
        return None;
    }
    if shape_changed {
        entry.size.allocatable = default_allocatable(&entry.size);
    }
    if let Some((n, p)) = allocatable {
        entry.size.allocatable = allocatable_section(&entry.size, n, &p, errs)?;
    }
    Some(entry)
}

fn default_allocatable(size: &Size) -> Resources {
    let memory = size.memory_mib * MIB;
    let mut extended = BTreeMap::new();
    if let Some(gpu) = &size.gpu {
        extended.insert("nvidia.com/gpu".to_owned(), u64::from(gpu.count));
    }
    Resources {
        cpu_milli: (u64::from(size.vcpu) * 1000).saturating_sub(200),
        memory_bytes: memory - memory / 16,
        ephemeral_storage_bytes: size.disk_gb * 1_000_000_000 * 9 / 10,
        pods: DEFAULT_MAX_PODS,
        extended,
    }
}

fn allocatable_section(
    size: &Size,
    node: &Node,
    path: &str,
    errs: &mut Errors,
) -> Option<Resources> {
    let mut obj = Obj::new(node, path, errs)?;
    let mut res = default_allocatable(size);
    let mut ok = true;
    if let Some((n, p)) = obj.get("cpu")
        && let Some(q) = quantity(n, &p, errs)
    {
        let milli = u64::try_from(q.value.milli()).unwrap_or(u64::MAX);
        if milli > u64::from(size.vcpu) * 1000 {
            errs.at(
                &p,
                q.mark,
                format!(
                    "allocatable cpu {milli}m is more than the size's {} vCPUs",
                    size.vcpu
                ),
            );
            ok = false;
        }
        res.cpu_milli = milli;
    }
    if let Some((n, p)) = obj.get("memory")
        && let Some(q) = quantity(n, &p, errs)
    {
        let bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
        if bytes > size.memory_mib * MIB {
            errs.at(
                &p,
                q.mark,
                format!(
                    "allocatable memory is more than the size's {} MiB",
                    size.memory_mib
                ),
            );
            ok = false;
        }
        res.memory_bytes = bytes;
    }
    if let Some((n, p)) = obj.get("pods")
        && let Some(v) = uint32(n, &p, errs)
    {
        if v.value == 0 {
            errs.at(&p, v.mark, "must be at least 1");
            ok = false;
        }
        res.pods = v.value;
    }
    if let Some((n, p)) = obj.get("ephemeralStorage")
        && let Some(q) = quantity(n, &p, errs)
    {
        res.ephemeral_storage_bytes = u64::try_from(q.value.units_ceil()).unwrap_or(u64::MAX);
    }
    obj.finish(errs);
    ok.then_some(res)
}

fn gpu_spec(node: &Node, path: &str, errs: &mut Errors) -> Option<crate::pool::GpuSpec> {
    let mut obj = Obj::new(node, path, errs)?;
    let count = obj
        .get("count")
        .and_then(|(n, p)| at_least_one(n, &p, errs))
        .unwrap_or(1);
    let class = obj
        .require("class", errs)
        .and_then(|(n, p)| label_value(n, &p, errs));
    let memory = obj
        .require("memory", errs)
        .and_then(|(n, p)| quantity(n, &p, errs))
        .and_then(|q| whole_mib(&q, errs));
    let cuda = obj
        .get("cuda")
        .and_then(|(n, p)| label_value(n, &p, errs))
        .unwrap_or_default();
    let mapping = obj
        .require("mapping", errs)
        .and_then(|(n, p)| string(n, &p, errs));
    obj.finish(errs);
    Some(crate::pool::GpuSpec {
        count,
        class: class?,
        memory_gib: u32::try_from(memory? / 1024).unwrap_or(u32::MAX),
        cuda,
        mapping: mapping?.value,
    })
}

fn label_value(node: &Node, path: &str, errs: &mut Errors) -> Option<String> {
    let v = string(node, path, errs)?;
    match validate_label_value(&v.value) {
        Ok(()) => Some(v.value),
        Err(e) => {
            errs.at(path, v.mark, e.to_string());
            None
        }
    }
}

fn pools(
    node: &Node,
    path: &str,
    providers: &BTreeMap<String, Spanned<ProxmoxProvider>>,
    sizes: &BTreeMap<String, Spanned<SizeEntry>>,
    errs: &mut Errors,
) -> Vec<Pool> {
    let mut seen: HashMap<String, Mark> = HashMap::new();
    let items = list(node, path, errs, |n, p, e| {
        let pool = pool(n, p, providers, sizes, e)?;
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

fn pool_name_mark(node: &Node) -> Option<Mark> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.text == "name")
            .map(|(_, v)| v.mark),
        _ => None,
    }
}

fn pool(
    node: &Node,
    path: &str,
    providers: &BTreeMap<String, Spanned<ProxmoxProvider>>,
    sizes: &BTreeMap<String, Spanned<SizeEntry>>,
    errs: &mut Errors,
) -> Option<Pool> {
    let mut obj = Obj::new(node, path, errs)?;
    let name = obj.require("name", errs).and_then(|(n, p)| {
        let name = dns_label(n, &p, "pool name", errs)?;
        if name.len() > MAX_POOL_NAME_LEN {
            errs.at(
                &p,
                n.mark,
                format!(
                    "pool name is {} characters; at most {MAX_POOL_NAME_LEN} are allowed so that worker names (`<pool>-xxxxx`) stay within 63",
                    name.len()
                ),
            );
            return None;
        }
        Some(name)
    });
    let kind = obj.require("kind", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let kind = PoolKind::parse(&v.value);
        if kind.is_none() {
            let hint = did_you_mean(&v.value, PoolKind::ALL.iter().map(|k| k.as_str()));
            errs.at(&p, v.mark, format!("unknown pool kind `{}`{hint}", v.value));
        }
        kind
    });
    let provider = match obj.get("provider") {
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
    };
    let kind_for_sizes = kind;
    let pool_sizes = obj.require("sizes", errs).and_then(|(n, p)| {
        let names = unique_strings(n, &p, "size", errs)?;
        if names.is_empty() {
            errs.at(&p, n.mark, "list at least one size");
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
                Some(entry)
                    if kind_for_sizes == Some(PoolKind::Gpu) && entry.value.size.gpu.is_none() =>
                {
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
    });
    let template = obj.require("template", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        let mut rest = v.value.as_str();
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').map(|e| start + e);
            let Some(end) = end else {
                errs.at(&p, v.mark, "unclosed `{` in template");
                return None;
            };
            let placeholder = &rest[start + 1..end];
            if placeholder != "size" {
                let hint = did_you_mean(placeholder, ["size"]);
                errs.at(
                    &p,
                    v.mark,
                    format!("unknown placeholder `{{{placeholder}}}` in template{hint}"),
                );
                return None;
            }
            rest = &rest[end + 1..];
        }
        if v.value.trim().is_empty() {
            errs.at(&p, v.mark, "template must not be empty");
            return None;
        }
        Some(v.value)
    });
    let hosts = match obj.get("hosts") {
        Some((n, p)) => unique_strings(n, &p, "host", errs).and_then(|hosts| {
            let known = provider
                .as_ref()
                .and_then(|name| providers.get(name))
                .map(|p| &p.value.hosts)?;
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
        }),
        None => provider
            .as_ref()
            .and_then(|name| providers.get(name))
            .map(|p| p.value.hosts.clone()),
    };
    let limits = obj
        .require("limits", errs)
        .and_then(|(n, p)| limits(n, &p, errs));
    let ttl_field = obj.get("ttl");
    let idle_field = obj.get("idleTimeout");
    let scale_up = scale_up(obj.get("scaleUp"), errs);
    let scale_down = scale_down(obj.get("scaleDown"), errs);
    let utilization_field = obj.get("utilization");
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
    let ttl = match ttl_field {
        Some((n, p)) => {
            let d = duration(n, &p, errs)?;
            if kind == PoolKind::Permanent {
                errs.at(
                    &p,
                    d.mark,
                    "permanent pools have no TTL; remove `ttl` or use kind burst",
                );
                return None;
            }
            if !(MIN_TTL..=MAX_TTL).contains(&d.value) {
                errs.at(
                    &p,
                    d.mark,
                    format!(
                        "ttl must be between 1h and 168h, got {}",
                        crate::duration::Human(d.value)
                    ),
                );
                return None;
            }
            Some(d.value)
        }
        None => kind
            .has_ttl_by_default()
            .then_some(Duration::from_secs(4 * 3600)),
    };
    let idle_timeout = match idle_field {
        Some((n, p)) => {
            let d = duration(n, &p, errs)?;
            if kind == PoolKind::Permanent {
                errs.at(
                    &p,
                    d.mark,
                    "permanent pools are not removed when idle; remove `idleTimeout`",
                );
                return None;
            }
            if d.value < Duration::from_secs(60) {
                errs.at(&p, d.mark, "idleTimeout must be at least 1m");
                return None;
            }
            Some(d.value)
        }
        None => {
            matches!(kind, PoolKind::Burst | PoolKind::Gpu).then_some(Duration::from_secs(30 * 60))
        }
    };
    let utilization = match utilization_field {
        Some((n, p)) => {
            if kind != PoolKind::Permanent {
                errs.at(
                    &p,
                    n.mark,
                    "utilization targets apply to permanent pools only",
                );
                return None;
            }
            Some(utilization(n, &p, errs)?)
        }
        None => None,
    };
    let limits = limits?;
    let schedule = schedule?;
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
    })
}

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

fn pressure(
    node: &Node,
    path: &str,
    default_threshold: f64,
    errs: &mut Errors,
) -> Option<Pressure> {
    let mut obj = Obj::new(node, path, errs)?;
    let threshold = obj.get("threshold").map(|(n, p)| fraction(n, &p, errs));
    let for_duration = obj.get("for").map(|(n, p)| positive_duration(n, &p, errs));
    obj.finish(errs);
    Some(Pressure {
        threshold: match threshold {
            Some(t) => t?.value,
            None => default_threshold,
        },
        for_duration: match for_duration {
            Some(d) => d?,
            None => Duration::from_secs(300),
        },
    })
}

/// Reads the optional field `key` with `parse` into `slot`; a field that is
/// present but invalid clears `ok` (its error is already recorded).
fn set<'a, T>(
    obj: &mut Obj<'a>,
    key: &'static str,
    errs: &mut Errors,
    ok: &mut bool,
    slot: &mut T,
    parse: impl FnOnce(&'a Node, &str, &mut Errors) -> Option<T>,
) {
    if let Some((n, p)) = obj.get(key) {
        match parse(n, &p, errs) {
            Some(v) => *slot = v,
            None => *ok = false,
        }
    }
}

fn scale_up(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<ScaleUp> {
    let mut out = ScaleUp {
        pending_pods: 5,
        pending_for: Duration::from_secs(120),
        batch_size: 3,
        cpu_pressure: Some(Pressure {
            threshold: 0.8,
            for_duration: Duration::from_secs(300),
        }),
        memory_pressure: Some(Pressure {
            threshold: 0.85,
            for_duration: Duration::from_secs(300),
        }),
    };
    let Some((node, path)) = section else {
        return Some(out);
    };
    let mut obj = Obj::new(node, &path, errs)?;
    let mut ok = true;
    set(
        &mut obj,
        "pendingPods",
        errs,
        &mut ok,
        &mut out.pending_pods,
        at_least_one,
    );
    set(
        &mut obj,
        "pendingFor",
        errs,
        &mut ok,
        &mut out.pending_for,
        |n, p, e| duration(n, p, e).map(|d| d.value),
    );
    set(
        &mut obj,
        "batchSize",
        errs,
        &mut ok,
        &mut out.batch_size,
        at_least_one,
    );
    for (key, slot, default) in [
        ("cpuPressure", &mut out.cpu_pressure, 0.8),
        ("memoryPressure", &mut out.memory_pressure, 0.85),
    ] {
        if let Some((n, p)) = obj.get(key) {
            // `false` disables the trigger; a mapping tunes it.
            if matches!(&n.value, Value::Scalar { text, plain: true } if text == "false") {
                *slot = None;
            } else {
                match pressure(n, &p, default, errs) {
                    Some(v) => *slot = Some(v),
                    None => ok = false,
                }
            }
        }
    }
    obj.finish(errs);
    ok.then_some(out)
}

fn scale_down(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<ScaleDown> {
    let mut out = ScaleDown {
        max_fraction: 0.2,
        interval: Duration::from_secs(30 * 60),
        max_concurrent: 1,
        drain_timeout: Duration::from_secs(600),
        grace_period: Duration::from_secs(300),
    };
    let Some((node, path)) = section else {
        return Some(out);
    };
    let mut obj = Obj::new(node, &path, errs)?;
    let mut ok = true;
    set(
        &mut obj,
        "maxFraction",
        errs,
        &mut ok,
        &mut out.max_fraction,
        |n, p, e| fraction(n, p, e).map(|f| f.value),
    );
    set(
        &mut obj,
        "interval",
        errs,
        &mut ok,
        &mut out.interval,
        positive_duration,
    );
    set(
        &mut obj,
        "drainTimeout",
        errs,
        &mut ok,
        &mut out.drain_timeout,
        positive_duration,
    );
    set(
        &mut obj,
        "gracePeriod",
        errs,
        &mut ok,
        &mut out.grace_period,
        |n, p, e| duration(n, p, e).map(|d| d.value),
    );
    set(
        &mut obj,
        "maxConcurrent",
        errs,
        &mut ok,
        &mut out.max_concurrent,
        at_least_one,
    );
    obj.finish(errs);
    ok.then_some(out)
}

fn utilization(node: &Node, path: &str, errs: &mut Errors) -> Option<Utilization> {
    let mut obj = Obj::new(node, path, errs)?;
    let target = obj.get("target").map(|(n, p)| fraction(n, &p, errs));
    let up = obj.get("scaleUpAbove").map(|(n, p)| fraction(n, &p, errs));
    let down = obj
        .get("scaleDownBelow")
        .map(|(n, p)| fraction(n, &p, errs));
    obj.finish(errs);
    let pick = |v: Option<Option<Spanned<f64>>>, d: f64| match v {
        Some(v) => v.map(|s| s.value),
        None => Some(d),
    };
    let u = Utilization {
        target: pick(target, 0.7)?,
        scale_up_above: pick(up, 0.8)?,
        scale_down_below: pick(down, 0.5)?,
    };
    if !(u.scale_down_below < u.target && u.target < u.scale_up_above) {
        errs.at(
            path,
            node.mark,
            format!(
                "need scaleDownBelow < target < scaleUpAbove, got {} / {} / {}",
                u.scale_down_below, u.target, u.scale_up_above
            ),
        );
        return None;
    }
    Some(u)
}

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

fn taint(node: &Node, path: &str, errs: &mut Errors) -> Option<Taint> {
    let mut obj = Obj::new(node, path, errs)?;
    let key = obj.require("key", errs).and_then(|(n, p)| {
        let v = string(n, &p, errs)?;
        match validate_qualified_name(&v.value, "taint key") {
            Ok(()) => Some(v.value),
            Err(e) => {
                errs.at(&p, v.mark, e.to_string());
                None
            }
        }
    });
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

fn safety(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<ProtectedNames> {
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

fn server(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<Server> {
    let mut out = Server {
        metrics_addr: "0.0.0.0:8080".into(),
        namespace: "tidepool-system".into(),
        leader_election: true,
        lease_name: "tidepool-controller".into(),
        lease_duration: Duration::from_secs(15),
        mcp_addr: None,
    };
    let Some((node, path)) = section else {
        return Some(out);
    };
    let mut obj = Obj::new(node, &path, errs)?;
    let mut ok = true;
    set(
        &mut obj,
        "metricsAddr",
        errs,
        &mut ok,
        &mut out.metrics_addr,
        socket_addr,
    );
    set(
        &mut obj,
        "namespace",
        errs,
        &mut ok,
        &mut out.namespace,
        |n, p, e| dns_label(n, p, "namespace", e),
    );
    if let Some((n, p)) = obj.get("leaderElection") {
        let mut le = Obj::new(n, &p, errs)?;
        set(
            &mut le,
            "enabled",
            errs,
            &mut ok,
            &mut out.leader_election,
            boolean,
        );
        set(
            &mut le,
            "leaseName",
            errs,
            &mut ok,
            &mut out.lease_name,
            |n, p, e| dns_subdomain(n, p, "Lease name", e),
        );
        set(
            &mut le,
            "leaseDuration",
            errs,
            &mut ok,
            &mut out.lease_duration,
            positive_duration,
        );
        le.finish(errs);
    }
    if let Some((n, p)) = obj.get("mcp") {
        let mut mcp = Obj::new(n, &p, errs)?;
        set(
            &mut mcp,
            "listen",
            errs,
            &mut ok,
            &mut out.mcp_addr,
            |n, p, e| socket_addr(n, p, e).map(Some),
        );
        mcp.finish(errs);
    }
    obj.finish(errs);
    ok.then_some(out)
}

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
