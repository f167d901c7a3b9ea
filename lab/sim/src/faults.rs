//! Deterministic fault injection shared by all emulators.
//!
//! An emulator calls [`Faults::check`] once per operation with its
//! [`Service`] and an operation name (for example `POST /nodes/pve-01/qemu/100/clone`
//! or `task:qmclone`). Every rule whose service matches and whose `op`
//! pattern matches the name may fire. Whether the *n*-th call of a given
//! operation fires is a pure function of (seed, rule, service, operation,
//! n), so a run with the same seed and the same sequence of calls per
//! operation injects exactly the same faults, however calls of different
//! operations interleave.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The emulated system an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The Proxmox VE API emulator.
    Proxmox,
    /// The Kubernetes API emulator, its scheduler and simulated kubelets.
    Kubernetes,
    /// The Talos API emulator.
    Talos,
}

/// One fault: which operations it hits, how often, and what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The service whose operations this rule targets.
    pub service: Service,
    /// Operation-name pattern; `*` matches any run of characters.
    pub op: String,
    /// Probability in `[0, 1]` that a matching call fails. Defaults to 1.
    #[serde(default = "one")]
    pub error_rate: f64,
    /// Status code of the injected failure (HTTP status, or gRPC code for
    /// Talos). `None` means the emulator's natural error for the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Message of the injected failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Latency added to every matching call (failing or not), in
    /// milliseconds of simulated time.
    #[serde(default)]
    pub latency_ms: u64,
    /// How many times the rule may fire an error before it retires;
    /// `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

fn one() -> f64 {
    1.0
}

/// The error part of an injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedError {
    /// Status code from the rule, if it gave one.
    pub status: Option<u16>,
    /// Message from the rule, or a generic one naming the operation.
    pub message: String,
}

/// What [`Faults::check`] decided for one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Simulated latency to add before answering.
    pub latency: Duration,
    /// The failure to return instead of the normal answer, if any.
    pub error: Option<InjectedError>,
}

/// The fault table of one lab.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rules: RwLock<Vec<RuleState>>,
    calls: Mutex<HashMap<(Service, String), u64>>,
    /// Errors injected since the table was made, whatever rules did it.
    injected: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct RuleState {
    id: u64,
    rule: FaultRule,
    fired: u64,
}

impl Faults {
    /// An empty fault table whose random decisions derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rules: RwLock::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            injected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The seed decisions derive from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replaces all rules.
    pub fn set_rules(&self, rules: Vec<FaultRule>) {
        let mut guard = self.rules.write().unwrap_or_else(|e| e.into_inner());
        *guard = rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| RuleState {
                id: i as u64,
                rule,
                fired: 0,
            })
            .collect();
    }

    /// Appends one rule.
    pub fn add_rule(&self, rule: FaultRule) {
        let mut guard = self.rules.write().unwrap_or_else(|e| e.into_inner());
        let id = guard.iter().map(|r| r.id + 1).max().unwrap_or(0);
        guard.push(RuleState { id, rule, fired: 0 });
    }

    /// The current rules.
    pub fn rules(&self) -> Vec<FaultRule> {
        let guard = self.rules.read().unwrap_or_else(|e| e.into_inner());
        guard.iter().map(|r| r.rule.clone()).collect()
    }

    /// How many errors the table has injected since it was made, across
    /// every rule it has held (replacing the rules keeps the count).
    pub fn injected_total(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decides the fault, if any, for one call of `op` on `service`.
    ///
    /// # Guarantees
    /// Latencies of all matching rules add up; the first matching rule that
    /// fires an error supplies it. A rule whose `times` is used up no longer
    /// fires errors but still adds its latency.
    pub fn check(&self, service: Service, op: &str) -> Injected {
        let mut out = Injected::default();
        {
            let guard = self.rules.read().unwrap_or_else(|e| e.into_inner());
            if !guard
                .iter()
                .any(|r| r.rule.service == service && glob_match(&r.rule.op, op))
            {
                return out;
            }
        }
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let counter = calls.entry((service, op.to_owned())).or_insert(0);
            *counter += 1;
            *counter
        };
        let mut guard = self.rules.write().unwrap_or_else(|e| e.into_inner());
        for state in guard.iter_mut() {
            if state.rule.service != service || !glob_match(&state.rule.op, op) {
                continue;
            }
            out.latency += Duration::from_millis(state.rule.latency_ms);
            if out.error.is_some() || state.rule.times.is_some_and(|t| state.fired >= t) {
                continue;
            }
            let roll = unit_interval(mix(self.seed, state.id, service, op, n));
            if roll < state.rule.error_rate {
                state.fired += 1;
                self.injected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.error = Some(InjectedError {
                    status: state.rule.status,
                    message: state
                        .rule
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("injected fault: {op}")),
                });
            }
        }
        out
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of
/// characters (including none) and every other character for itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn mix(seed: u64, rule: u64, service: Service, op: &str, n: u64) -> u64 {
    // FNV-1a over the inputs, then a SplitMix64 finaliser.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&seed.to_le_bytes());
    feed(&rule.to_le_bytes());
    feed(&[service as u8]);
    feed(op.as_bytes());
    feed(&n.to_le_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit_interval(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: &str, rate: f64) -> FaultRule {
        FaultRule {
            service: Service::Proxmox,
            op: op.into(),
            error_rate: rate,
            status: Some(500),
            message: None,
            latency_ms: 0,
            times: None,
        }
    }

    fn pattern(faults: &Faults, op: &str, calls: usize) -> Vec<bool> {
        (0..calls)
            .map(|_| faults.check(Service::Proxmox, op).error.is_some())
            .collect()
    }

    #[test]
    fn glob_patterns_match_runs_of_characters() {
        assert!(glob_match(
            "POST /nodes/*/qemu/*/clone",
            "POST /nodes/pve-01/qemu/9000/clone"
        ));
        assert!(glob_match("*", ""));
        assert!(!glob_match("GET /version", "GET /versions"));
        assert!(glob_match("task:*", "task:qmclone"));
        assert!(!glob_match("a*b", "acd"));
    }

    #[test]
    fn the_same_seed_injects_the_same_faults_whatever_the_interleaving() {
        let a = Faults::new(7);
        let b = Faults::new(7);
        a.set_rules(vec![rule("x*", 0.5)]);
        b.set_rules(vec![rule("x*", 0.5)]);
        let a_x = pattern(&a, "x1", 64);
        // b sees calls of another operation in between.
        let mut b_x = Vec::new();
        for _ in 0..64 {
            b.check(Service::Proxmox, "x2");
            b_x.push(b.check(Service::Proxmox, "x1").error.is_some());
        }
        assert_eq!(a_x, b_x);
        assert!(a_x.iter().any(|f| *f) && a_x.iter().any(|f| !*f));
    }

    #[test]
    fn the_injected_total_counts_every_error_across_rule_changes() {
        let f = Faults::new(5);
        f.set_rules(vec![rule("x*", 0.5)]);
        let first = pattern(&f, "x1", 40).iter().filter(|e| **e).count() as u64;
        assert_eq!(f.injected_total(), first);
        f.set_rules(vec![rule("y", 1.0)]);
        f.check(Service::Proxmox, "y");
        f.check(Service::Proxmox, "x1");
        assert_eq!(f.injected_total(), first + 1);
    }

    #[test]
    fn different_seeds_inject_different_faults() {
        let a = Faults::new(1);
        let b = Faults::new(2);
        a.set_rules(vec![rule("op", 0.5)]);
        b.set_rules(vec![rule("op", 0.5)]);
        assert_ne!(pattern(&a, "op", 64), pattern(&b, "op", 64));
    }

    #[test]
    fn a_rule_with_times_retires_after_firing_that_often() {
        let f = Faults::new(3);
        let mut r = rule("op", 1.0);
        r.times = Some(2);
        r.latency_ms = 5;
        f.set_rules(vec![r]);
        let fired = pattern(&f, "op", 5);
        assert_eq!(fired, vec![true, true, false, false, false]);
        assert_eq!(
            f.check(Service::Proxmox, "op").latency,
            Duration::from_millis(5)
        );
    }

    #[test]
    fn rules_of_another_service_do_not_fire() {
        let f = Faults::new(3);
        f.set_rules(vec![rule("*", 1.0)]);
        assert_eq!(f.check(Service::Talos, "anything"), Injected::default());
    }

    #[test]
    fn rules_parse_from_camel_case_json_with_defaults() {
        let r: FaultRule =
            serde_json::from_str(r#"{"service":"talos","op":"ApplyConfiguration","latencyMs":10}"#)
                .unwrap();
        assert_eq!(r.error_rate, 1.0);
        assert_eq!(r.latency_ms, 10);
        assert!(
            serde_json::from_str::<FaultRule>(r#"{"service":"talos","op":"x","bogus":1}"#).is_err()
        );
    }
}
