//! One table row per configuration rule: each bad document must produce the
//! expected message at the expected field path and line:column, and a
//! document with several problems must report all of them.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use tidepool_core::PoolKind;
use tidepool_core::config::{self, ConfigError, EXAMPLE, JoinMethod, SecretRef, TlsVerify};

const MINIMAL: &str = "\
schemaVersion: v1alpha1
providers:
  pve:
    type: proxmox
    endpoint: https://pve.lan:8006/api2/json
    tokenFrom: {env: PROXMOX_TOKEN}
    hosts: [pve-01, pve-02]
    vmidRange: {lower: 1250, upper: 1300}
join:
  method: talos-api
  workerConfigFrom: {file: worker.yaml}
pools:
  - name: burst
    kind: burst
    sizes: [small]
    template: talos-{size}
    limits: {maxNodes: 5}
";

fn errors(text: &str) -> Vec<ConfigError> {
    match config::load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// Replaces the first occurrence of `from` in the minimal document.
fn edit(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "fixture lacks {from:?}");
    MINIMAL.replacen(from, to, 1)
}

struct Case {
    rule: &'static str,
    doc: String,
    path: &'static str,
    line: usize,
    column: usize,
    message: &'static str,
}

fn case(
    rule: &'static str,
    doc: String,
    path: &'static str,
    at: (usize, usize),
    message: &'static str,
) -> Case {
    Case {
        rule,
        doc,
        path,
        line: at.0,
        column: at.1,
        message,
    }
}

#[test]
fn the_minimal_document_and_the_shipped_example_are_valid() {
    let minimal = config::load(MINIMAL).unwrap();
    assert_eq!(minimal.pools[0].provider, "pve");
    assert_eq!(
        minimal.pools[0].ttl,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
    assert_eq!(minimal.pools[0].hosts, ["pve-01", "pve-02"]);
    let example = config::load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(example.pools.len(), 4);
    assert_eq!(example.pool("gpu").unwrap().kind, PoolKind::Gpu);
    assert_eq!(
        example.providers["pve"].token,
        SecretRef::Env("PROXMOX_TOKEN".into())
    );
    assert_eq!(
        example.providers["pve"].tls,
        TlsVerify::CaFile("/etc/tidepool/pve-root-ca.pem".into())
    );
    assert!(example.size("large").unwrap().taint);
    assert!(matches!(
        example.join.method,
        JoinMethod::TalosApi { port: 50000 }
    ));
}

#[test]
fn each_rule_reports_its_message_at_the_field() {
    let cases = vec![
        case("malformed YAML", "a: [1, 2\nb: 3\n".into(), "", (2, 2), "invalid YAML"),
        case("empty document", "".into(), "", (1, 1), "the configuration is empty"),
        case("top level is not a mapping", "- 1\n- 2\n".into(), "", (1, 1), "expected a mapping, found a list"),
        case(
            "duplicate YAML key",
            edit("join:\n", "join:\n  method: nocloud\n"),
            "",
            (11, 3),
            "duplicate key `method` (first defined at 10:3)",
        ),
        case(
            "unsupported schema version",
            edit("v1alpha1", "v2"),
            "schemaVersion",
            (1, 16),
            "unsupported schema version `v2`",
        ),
        case(
            "unknown top-level key with suggestion",
            edit("pools:", "pols: []\npools:"),
            "pols",
            (12, 1),
            "unknown field `pols`, did you mean `pools`?",
        ),
        case(
            "unknown nested key with suggestion",
            edit("{maxNodes: 5}", "{maxNode: 5}"),
            "pools[0].limits.maxNode",
            (17, 14),
            "unknown field `maxNode`, did you mean `maxNodes`?",
        ),
        case(
            "wrong type: string for an integer",
            edit("{maxNodes: 5}", "{maxNodes: \"5\"}"),
            "pools[0].limits.maxNodes",
            (17, 24),
            "expected a non-negative integer, found the quoted string \"5\"",
        ),
        case(
            "wrong type: mapping for a list",
            edit("sizes: [small]", "sizes: {small: 1}"),
            "pools[0].sizes",
            (15, 12),
            "expected a list, found a mapping",
        ),
        case(
            "bad duration",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    idleTimeout: 30 minutes"),
            "pools[0].idleTimeout",
            (18, 18),
            "`30 minutes` is not a valid duration: unknown unit",
        ),
        case(
            "duration without a unit",
            edit("schemaVersion: v1alpha1", "schemaVersion: v1alpha1\npollingInterval: 30"),
            "pollingInterval",
            (2, 18),
            "`30` is not a valid duration: missing unit",
        ),
        case(
            "limits min greater than max",
            edit("{maxNodes: 5}", "{minNodes: 7, maxNodes: 5}"),
            "pools[0].limits.minNodes",
            (17, 24),
            "minNodes (7) is greater than maxNodes (5)",
        ),
        case(
            "unknown size in a pool",
            edit("[small]", "[smal]"),
            "pools[0].sizes[0]",
            (15, 13),
            "unknown size `smal`, did you mean `small`?",
        ),
        case(
            "duplicate pool names",
            format!("{MINIMAL}  - name: burst\n    kind: spot\n    sizes: [small]\n    template: t\n    limits: {{maxNodes: 1}}\n"),
            "pools[1].name",
            (18, 11),
            "duplicate pool name `burst` (first defined at 13:11)",
        ),
        case(
            "missing providers section",
            MINIMAL.replace(
                "providers:\n  pve:\n    type: proxmox\n    endpoint: https://pve.lan:8006/api2/json\n    tokenFrom: {env: PROXMOX_TOKEN}\n    hosts: [pve-01, pve-02]\n    vmidRange: {lower: 1250, upper: 1300}\n",
                "",
            ),
            "",
            (1, 1),
            "missing required field `providers`",
        ),
        case(
            "pool names an unknown provider",
            edit("    kind: burst\n", "    kind: burst\n    provider: pev\n"),
            "pools[0].provider",
            (15, 15),
            "unknown provider `pev`, did you mean `pve`?",
        ),
        case(
            "secret given inline",
            edit("    tokenFrom: {env: PROXMOX_TOKEN}\n", "    tokenFrom: {env: PROXMOX_TOKEN}\n    token: root@pam!tp=1234\n"),
            "providers.pve.token",
            (7, 5),
            "`token` would put a secret in the configuration file; give it by reference instead",
        ),
        case(
            "worker config given inline",
            edit("  workerConfigFrom: {file: worker.yaml}\n", "  workerConfigFrom: {file: worker.yaml}\n  workerConfig: |\n    machine: {}\n"),
            "join.workerConfig",
            (12, 3),
            "`workerConfig` would put a secret in the configuration file",
        ),
        case(
            "secret reference with two sources",
            edit("{env: PROXMOX_TOKEN}", "{env: PROXMOX_TOKEN, file: /x}"),
            "providers.pve.tokenFrom",
            (6, 16),
            "give exactly one of `env`, `file` or `secret` (found 2)",
        ),
        case(
            "bad environment variable name",
            edit("{env: PROXMOX_TOKEN}", "{env: 9TOKEN}"),
            "providers.pve.tokenFrom.env",
            (6, 22),
            "`9TOKEN` is not a valid environment variable name",
        ),
        case(
            "endpoint not https",
            edit("https://pve.lan", "http://pve.lan"),
            "providers.pve.endpoint",
            (5, 15),
            "must be an https:// URL",
        ),
        case(
            "endpoint without /api2/json",
            edit(":8006/api2/json", ":8006/"),
            "providers.pve.endpoint",
            (5, 15),
            "must end in /api2/json",
        ),
        case(
            "unknown provider type",
            edit("type: proxmox", "type: vmware"),
            "providers.pve.type",
            (4, 11),
            "unknown provider type `vmware`; supported: proxmox",
        ),
        case(
            "VMID range reversed",
            edit("{lower: 1250, upper: 1300}", "{lower: 1300, upper: 1250}"),
            "providers.pve.vmidRange",
            (8, 16),
            "lower (1300) is greater than upper (1250)",
        ),
        case(
            "VMID below Proxmox's range",
            edit("lower: 1250", "lower: 99"),
            "providers.pve.vmidRange.lower",
            (8, 24),
            "VMID 99 is outside Proxmox's range 100-999999999",
        ),
        case(
            "two TLS modes at once",
            edit("    hosts:", "    tls: {caFile: /ca.pem, insecureSkipVerify: true}\n    hosts:"),
            "providers.pve.tls",
            (7, 10),
            "give at most one of `caFile`, `fingerprint` or `insecureSkipVerify: true`",
        ),
        case(
            "malformed fingerprint",
            edit("    hosts:", "    tls: {fingerprint: \"AB:CD\"}\n    hosts:"),
            "providers.pve.tls.fingerprint",
            (7, 24),
            "expected a SHA-256 fingerprint",
        ),
        case(
            "duplicate host",
            edit("[pve-01, pve-02]", "[pve-01, pve-01]"),
            "providers.pve.hosts[1]",
            (7, 21),
            "duplicate host `pve-01` (first listed at 7:13)",
        ),
        case(
            "pool host not in the provider",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    hosts: [pve-03]"),
            "pools[0].hosts[0]",
            (18, 13),
            "host `pve-03` is not one of the provider's hosts",
        ),
        case(
            "unknown join method",
            edit("method: talos-api", "method: talos"),
            "join.method",
            (10, 11),
            "unknown join method `talos`, did you mean `talos-api`?",
        ),
        case(
            "nocloud without advertiseUrl",
            edit("method: talos-api", "method: nocloud"),
            "join",
            (10, 3),
            "the nocloud method needs `advertiseUrl`",
        ),
        case(
            "talos port on nocloud",
            edit("method: talos-api", "method: nocloud\n  advertiseUrl: http://10.0.0.5:8088\n  talosPort: 50000"),
            "join.talosPort",
            (12, 14),
            "only applies to the talos-api join method",
        ),
        case(
            "cloud-init flavor without a join command",
            edit("method: talos-api", "method: nocloud\n  flavor: cloud-init\n  advertiseUrl: http://10.0.0.5:8088"),
            "join",
            (10, 3),
            "the nocloud cloud-init flavor needs `joinCommandFrom`",
        ),
        case(
            "join command for talos-api",
            edit("  workerConfigFrom: {file: worker.yaml}\n", "  workerConfigFrom: {file: worker.yaml}\n  joinCommandFrom: {env: JOIN}\n"),
            "join.joinCommandFrom",
            (12, 20),
            "only applies to the nocloud join method with flavor cloud-init",
        ),
        case(
            "pool name not a DNS label",
            edit("name: burst", "name: Burst_Pool"),
            "pools[0].name",
            (13, 11),
            "`Burst_Pool` is not a valid pool name",
        ),
        case(
            "pool name too long for worker names",
            edit("name: burst", &format!("name: {}", "b".repeat(58))),
            "pools[0].name",
            (13, 11),
            "pool name is 58 characters; at most 57 are allowed",
        ),
        case(
            "unknown pool kind",
            edit("kind: burst", "kind: brust"),
            "pools[0].kind",
            (14, 11),
            "unknown pool kind `brust`, did you mean `burst`?",
        ),
        case(
            "TTL on a permanent pool",
            edit("kind: burst", "kind: permanent\n    ttl: 4h"),
            "pools[0].ttl",
            (15, 10),
            "permanent pools have no TTL",
        ),
        case(
            "TTL out of range",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    ttl: 200h"),
            "pools[0].ttl",
            (18, 10),
            "ttl must be between 1h and 168h, got 8d8h",
        ),
        case(
            "gpu pool with a size without GPU",
            edit("kind: burst", "kind: gpu"),
            "pools[0].sizes[0]",
            (15, 13),
            "size `small` has no GPU, but this is a gpu pool",
        ),
        case(
            "unknown template placeholder",
            edit("talos-{size}", "talos-{sise}"),
            "pools[0].template",
            (16, 15),
            "unknown placeholder `{sise}` in template, did you mean `size`?",
        ),
        case(
            "fraction out of range",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    scaleDown: {maxFraction: 1.5}"),
            "pools[0].scaleDown.maxFraction",
            (18, 30),
            "must be a fraction in (0, 1], got 1.5",
        ),
        case(
            "batch size zero",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    scaleUp: {batchSize: 0}"),
            "pools[0].scaleUp.batchSize",
            (18, 26),
            "must be at least 1",
        ),
        case(
            "bad cron expression",
            edit(
                "    limits: {maxNodes: 5}",
                "    limits: {maxNodes: 5}\n    schedule:\n      - {cron: \"61 * * * *\", minNodes: 1, duration: 1h}",
            ),
            "pools[0].schedule[0].cron",
            (19, 16),
            "minute: `61` is outside 0-59",
        ),
        case(
            "utilization on a burst pool",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    utilization: {target: 0.7}"),
            "pools[0].utilization",
            (18, 18),
            "utilization targets apply to permanent pools only",
        ),
        case(
            "invalid label key",
            edit("    limits: {maxNodes: 5}", "    limits: {maxNodes: 5}\n    labels: {\"bad key!\": x}"),
            "pools[0].labels.bad key!",
            (18, 14),
            "`bad key!` is not a valid label key",
        ),
        case(
            "invalid taint effect",
            edit(
                "    limits: {maxNodes: 5}",
                "    limits: {maxNodes: 5}\n    taints: [{key: dedicated, value: ci, effect: NoSchedul}]",
            ),
            "pools[0].taints[0].effect",
            (18, 50),
            "unknown taint effect `NoSchedul`, did you mean `NoSchedule`?",
        ),
        case(
            "invalid protected pattern",
            format!("{MINIMAL}safety:\n  protectedNodePatterns: [\"(unclosed\"]\n"),
            "safety.protectedNodePatterns[0]",
            (19, 27),
            "`(unclosed` is not a valid regular expression",
        ),
        case(
            "size without required fields",
            format!("{MINIMAL}sizes:\n  xl: {{vcpu: 32}}\n"),
            "sizes.xl",
            (19, 7),
            "missing required field `memory`",
        ),
        case(
            "allocatable larger than the size",
            format!("{MINIMAL}sizes:\n  xl: {{vcpu: 2, memory: 4Gi, disk: 50G, allocatable: {{cpu: 3}}}}\n"),
            "sizes.xl.allocatable.cpu",
            (19, 60),
            "allocatable cpu 3000m is more than the size's 2 vCPUs",
        ),
        case(
            "memory not in whole MiB",
            format!("{MINIMAL}sizes:\n  xl: {{vcpu: 2, memory: 1000k, disk: 50G}}\n"),
            "sizes.xl.memory",
            (19, 25),
            "memory must be a positive whole number of MiB",
        ),
        case(
            "bad listen address",
            format!("{MINIMAL}server:\n  metricsAddr: localhost\n"),
            "server.metricsAddr",
            (19, 16),
            "`localhost` is not an address:port",
        ),
        case(
            "no pools",
            edit("pools:\n", "pools: []\nx:\n").split("  - name").next().unwrap().to_owned(),
            "pools",
            (12, 8),
            "at least one pool is required",
        ),
        case(
            "a permanent pool is never replaced automatically",
            edit("kind: burst", "kind: permanent").replace("maxNodes: 5}\n", "maxNodes: 5}\n    repair: {replace: true}\n"),
            "pools[0].repair.replace",
            (18, 23),
            "permanent pools are never replaced automatically",
        ),
        case(
            "unknown repair field with suggestion",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    repair: {dryrun: true}\n"),
            "pools[0].repair.dryrun",
            (18, 14),
            "unknown field `dryrun`, did you mean `dryRun`?",
        ),
        case(
            "the NotReady thresholds climb",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    repair: {rebootAfter: 2m}\n"),
            "pools[0].repair",
            (18, 13),
            "need restartKubeletAfter < rebootAfter < replaceAfter, got 5m / 2m / 20m",
        ),
        case(
            "the unhealthy fraction is a fraction",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    repair: {maxUnhealthyFraction: 2}\n"),
            "pools[0].repair.maxUnhealthyFraction",
            (18, 36),
            "must be a fraction in (0, 1]",
        ),
        case(
            "spares are of one of the pool's sizes",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    spares: {count: 1, size: smal}\n"),
            "pools[0].spares.size",
            (18, 30),
            "size `smal` is not one of the pool's sizes (small), did you mean `small`?",
        ),
        case(
            "spares leave room for a worker under maxNodes",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    spares: {count: 5, size: small}\n"),
            "pools[0].spares.count",
            (18, 21),
            "5 spares leave no room under maxNodes (5): spares count against it",
        ),
        case(
            "spares name their count",
            edit("maxNodes: 5}\n", "maxNodes: 5}\n    spares: {size: small}\n"),
            "pools[0].spares",
            (18, 13),
            "missing required field `count`",
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let errs = errors(&c.doc);
        let hit = errs.iter().any(|e| {
            e.path == c.path
                && e.line == c.line
                && e.column == c.column
                && e.message.contains(c.message)
        });
        if !hit {
            failures.push(format!(
                "rule `{}`: wanted {}:{} {} ~ {:?}\n  got: {:#?}",
                c.rule, c.line, c.column, c.path, c.message, errs
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rules failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_pool_keeps_the_spares_it_asks_for() {
    let doc = edit(
        "maxNodes: 5}\n",
        "maxNodes: 5}\n    spares: {count: 2, size: small}\n",
    );
    let cfg = config::load(&doc).unwrap();
    let spares = cfg.pools[0].spares.as_ref().unwrap();
    assert_eq!((spares.count, spares.size.as_str()), (2, "small"));
    assert!(config::load(MINIMAL).unwrap().pools[0].spares.is_none());
}

#[test]
fn every_problem_in_a_document_is_reported_at_once() {
    let doc = MINIMAL
        .replace("v1alpha1", "v9")
        .replace("{maxNodes: 5}", "{minNodes: 9, maxNodes: 5}")
        .replace("[small]", "[tiny]")
        .replace("method: talos-api", "method: carrier-pigeon")
        .replace("    hosts:", "    token: hunter2\n    hosts:");
    let errs = errors(&doc);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for wanted in [
        "schemaVersion",
        "providers.pve.token",
        "join.method",
        "pools[0].sizes[0]",
        "pools[0].limits.minNodes",
    ] {
        assert!(paths.contains(&wanted), "missing {wanted} in {paths:?}");
    }
    // Sorted by position.
    let positions: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

#[test]
fn errors_never_echo_the_value_of_an_inline_secret() {
    let doc = edit(
        "    hosts:",
        "    token: root@pam!tidepool=8f1c0d2e-secret\n    hosts:",
    );
    let text = config::load(&doc).unwrap_err().to_string();
    assert!(!text.contains("8f1c0d2e-secret"), "{text}");
    assert!(text.contains("providers.pve.token"));
}

#[test]
fn error_display_names_line_column_and_path() {
    let errs = config::load(&edit("{maxNodes: 5}", "{maxNodes: -1}")).unwrap_err();
    assert_eq!(
        errs.to_string(),
        "1 configuration error\n  17:24: pools[0].limits.maxNodes: expected a non-negative integer, found `-1`"
    );
}

#[test]
fn defaults_fill_in_what_the_document_leaves_out() {
    let c = config::load(MINIMAL).unwrap();
    let burst = &c.pools[0];
    assert_eq!(burst.scale_up.pending_pods, 5);
    assert_eq!(burst.scale_up.pending_for.as_secs(), 120);
    assert_eq!(burst.scale_down.max_fraction, 0.2);
    assert_eq!(burst.scale_down.grace_period.as_secs(), 300);
    assert_eq!(burst.idle_timeout.map(|d| d.as_secs()), Some(1800));
    assert_eq!(c.providers["pve"].tls, TlsVerify::System);
    assert_eq!(c.sizes.len(), 4);
    assert_eq!(
        c.protected.matching("control-plane-1"),
        Some("^control-plane-.*")
    );
    assert_eq!(c.join.registration_timeout.as_secs(), 300);
}

#[test]
fn the_mcp_section_reads_tokens_by_reference_and_checks_every_field() {
    let doc = format!(
        "{MINIMAL}server:\n  mcp:\n    listen: 127.0.0.1:8090\n    tokens:\n      \
         - {{name: ops, scope: write, tokenFrom: {{env: OPS_TOKEN}}}}\n      \
         - {{name: dash, scope: read, tokenFrom: {{secret: {{name: mcp, key: dash}}}}}}\n    \
         allowedOrigins: [\"https://agent.example.com:443\"]\n    readOnly: true\n    \
         tools: [list_workers, scale_up]\n    confirmFallback: refuse\n    \
         tls: {{certFile: tls.crt, keyFile: tls.key}}\n"
    );
    let cfg = config::load(&doc).unwrap();
    let mcp = &cfg.server.mcp;
    assert_eq!(mcp.listen.as_deref(), Some("127.0.0.1:8090"));
    assert_eq!(mcp.tokens.len(), 2);
    assert_eq!(mcp.tokens[0].name, "ops");
    assert_eq!(mcp.tokens[0].scope, config::McpScope::Write);
    assert_eq!(mcp.tokens[0].token_from, SecretRef::Env("OPS_TOKEN".into()));
    assert_eq!(mcp.tokens[1].scope, config::McpScope::Read);
    assert!(mcp.read_only);
    assert_eq!(
        mcp.tools.as_deref(),
        Some(&["list_workers".to_owned(), "scale_up".to_owned()][..])
    );
    assert_eq!(mcp.confirm_fallback, config::ConfirmFallback::Refuse);
    assert_eq!(mcp.tls.as_ref().unwrap().key_file, "tls.key");

    let bad = format!(
        "{MINIMAL}server:\n  mcp:\n    listen: 127.0.0.1:8090\n    tokens:\n      \
         - {{name: ops, scope: admin, token: hunter2, tokenFrom: {{env: OPS}}}}\n    \
         allowedOrigins: [agent.example.com]\n    tools: [delete_cluster]\n    \
         confirmFallback: maybe\n"
    );
    let messages: Vec<String> = errors(&bad).iter().map(ToString::to_string).collect();
    let all = messages.join("\n");
    assert!(all.contains("scope must be `read` or `write`"), "{all}");
    assert!(all.contains("give it by reference instead"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("is not an origin"), "{all}");
    assert!(all.contains("unknown tool `delete_cluster`"), "{all}");
    assert!(all.contains("`refuse-force`, `refuse` or `allow`"), "{all}");

    let tokenless = format!("{MINIMAL}server:\n  mcp:\n    listen: 127.0.0.1:8090\n");
    let all: Vec<String> = errors(&tokenless).iter().map(ToString::to_string).collect();
    assert!(
        all[0].contains("needs at least one bearer token"),
        "{all:?}"
    );
}

#[test]
fn windows_of_days_and_weeks_are_accepted_as_the_runbook_writes_them() {
    let doc = edit(
        "    limits: {maxNodes: 5}\n",
        "    limits: {maxNodes: 5}
    idleTimeout: 30d
    scaleUp:
      pendingFor: 1d
      cpuPressure: {threshold: 0.8, for: 7d}
      memoryPressure: {for: 2w}
    scaleDown: {interval: 7d}
",
    );
    let cfg = config::load(&doc).unwrap();
    let pool = cfg.pool("burst").unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(pool.idle_timeout, Some(day * 30));
    assert_eq!(pool.scale_up.pending_for, day);
    assert_eq!(pool.scale_up.cpu_pressure.unwrap().for_duration, day * 7);
    assert_eq!(
        pool.scale_up.memory_pressure.unwrap().for_duration,
        day * 14
    );
    assert_eq!(pool.scale_down.interval, day * 7);
}
