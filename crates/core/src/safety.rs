//! The safety rules of spec §8 as pure functions: which workers may be
//! destroyed, and which requests are acceptable. Every front-end (CLI, MCP,
//! HTTP, the autoscaler) goes through these; none may relax them.

use std::time::Duration;

use regex::Regex;

use crate::duration::Human;
use crate::pool::{LimitError, PoolKind};

/// Most workers one request may ask for.
pub const MAX_REQUEST_COUNT: u32 = 10;
/// Shortest TTL a request may set.
pub const MIN_TTL: Duration = Duration::from_secs(3600);
/// Longest TTL a request may set.
pub const MAX_TTL: Duration = Duration::from_secs(168 * 3600);

/// Node names that must never be touched, as compiled regular expressions.
#[derive(Clone, Debug, Default)]
pub struct ProtectedNames {
    patterns: Vec<Regex>,
}

impl ProtectedNames {
    /// The default patterns: control-plane, master and permanent names.
    pub const DEFAULTS: [&'static str; 3] = ["^master-.*", "^control-plane-.*", "^permanent-.*"];

    /// Compiles `patterns`.
    ///
    /// # Errors
    /// The first pattern that is not a valid regular expression, with the
    /// regex error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, (String, regex::Error)> {
        let patterns = patterns
            .iter()
            .map(|p| Regex::new(p.as_ref()).map_err(|e| (p.as_ref().to_owned(), e)))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The pattern that protects `name`, if any.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|p| p.is_match(name))
            .map(Regex::as_str)
    }

    /// The patterns as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(Regex::as_str)
    }
}

/// What the safety check needs to know about a worker or node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestroyTarget<'a> {
    /// Node (or worker) name.
    pub name: &'a str,
    /// Whether Tidepool created and owns it (a claim and the managed label agree).
    pub managed: bool,
    /// Kind of its pool, when managed.
    pub kind: Option<PoolKind>,
    /// Whether the node is cordoned.
    pub cordoned: bool,
    /// Pods still on the node other than DaemonSet and mirror pods.
    pub remaining_pods: usize,
}

/// Why a destroy is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name matches a protected pattern.
    #[error("refusing to destroy `{name}`: the name matches the protected pattern `{pattern}`")]
    Protected {
        /// Node name.
        name: String,
        /// The pattern it matches.
        pattern: String,
    },
    /// Tidepool does not own it.
    #[error("refusing to destroy `{name}`: it is not managed by Tidepool")]
    Unmanaged {
        /// Node name.
        name: String,
    },
    /// It belongs to a permanent pool.
    #[error("refusing to destroy `{name}`: it is a permanent worker (scale the pool down instead)")]
    Permanent {
        /// Node name.
        name: String,
    },
    /// It has not been drained and `force` was not given.
    #[error("refusing to destroy `{name}`: {why}; drain it first or pass force")]
    NotDrained {
        /// Node name.
        name: String,
        /// What is missing.
        why: String,
    },
}

impl Refusal {
    /// A stable name of the rule, for metrics and audit records.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Protected { .. } => "protected-name",
            Self::Unmanaged { .. } => "unmanaged",
            Self::Permanent { .. } => "permanent",
            Self::NotDrained { .. } => "not-drained",
        }
    }
}

/// Decides whether `target` may be destroyed.
///
/// # Errors
/// A [`Refusal`] naming the rule. `force` only waives the drain
/// requirement; the protected-name, managed and permanent rules hold
/// whatever the caller says.
pub fn check_destroy(
    target: &DestroyTarget<'_>,
    protected: &ProtectedNames,
    force: bool,
) -> Result<(), Refusal> {
    let name = target.name.to_owned();
    if let Some(pattern) = protected.matching(target.name) {
        return Err(Refusal::Protected {
            name,
            pattern: pattern.to_owned(),
        });
    }
    if !target.managed {
        return Err(Refusal::Unmanaged { name });
    }
    match target.kind {
        None => return Err(Refusal::Unmanaged { name }),
        Some(PoolKind::Permanent) => return Err(Refusal::Permanent { name }),
        Some(_) => {}
    }
    if !force {
        if !target.cordoned {
            return Err(Refusal::NotDrained {
                name,
                why: "it is not cordoned".into(),
            });
        }
        if target.remaining_pods > 0 {
            return Err(Refusal::NotDrained {
                name,
                why: format!("{} pod(s) still run on it", target.remaining_pods),
            });
        }
    }
    Ok(())
}

/// One problem with a provisioning request; a request reports all of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Count outside 1–10.
    #[error("count must be between 1 and {MAX_REQUEST_COUNT}, got {0}")]
    Count(u32),
    /// TTL outside 1–168 h.
    #[error("ttl must be between 1h and 168h, got {0}")]
    Ttl(String),
    /// No such pool.
    #[error("unknown pool `{name}`{hint}")]
    UnknownPool {
        /// The name asked for.
        name: String,
        /// ", did you mean …?" or a list of pools.
        hint: String,
    },
    /// No such size.
    #[error("unknown size `{name}`{hint}")]
    UnknownSize {
        /// The name asked for.
        name: String,
        /// ", did you mean …?" or a list of sizes.
        hint: String,
    },
    /// The size exists but the pool does not offer it.
    #[error("pool `{pool}` does not offer size `{size}` (it offers: {offered})")]
    SizeNotInPool {
        /// Pool name.
        pool: String,
        /// Size name.
        size: String,
        /// The pool's sizes.
        offered: String,
    },
    /// A TTL was given for a permanent pool.
    #[error("pool `{0}` is permanent: its workers have no TTL")]
    TtlOnPermanent(String),
    /// A pool limit would be exceeded.
    #[error("pool `{pool}`: {source}")]
    Limit {
        /// Pool name.
        pool: String,
        /// The limit.
        #[source]
        source: LimitError,
    },
}

/// Checks the count and TTL bounds of spec §8.
///
/// # Errors
/// Every bound broken, in order count then TTL.
pub fn check_bounds(count: u32, ttl: Option<Duration>) -> Result<(), Vec<RequestError>> {
    let mut errors = Vec::new();
    if !(1..=MAX_REQUEST_COUNT).contains(&count) {
        errors.push(RequestError::Count(count));
    }
    if let Some(ttl) = ttl
        && !(MIN_TTL..=MAX_TTL).contains(&ttl)
    {
        errors.push(RequestError::Ttl(Human(ttl).to_string()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// ", did you mean `x`?" when `wanted` is close to one of `known`, else
/// ", known: a, b, c" (or nothing when `known` is empty).
pub fn did_you_mean<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.into_iter().collect();
    let best = known
        .iter()
        .map(|k| {
            let jw = strsim::jaro_winkler(wanted, k);
            let dl = strsim::normalized_damerau_levenshtein(wanted, k);
            (jw.max(dl), *k)
        })
        .filter(|(score, _)| *score >= 0.66)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!(", did you mean `{k}`?"),
        None if known.is_empty() => String::new(),
        None => format!(" (known: {})", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> DestroyTarget<'_> {
        DestroyTarget {
            name,
            managed: true,
            kind: Some(PoolKind::Burst),
            cordoned: true,
            remaining_pods: 0,
        }
    }

    fn protected() -> ProtectedNames {
        ProtectedNames::new(&ProtectedNames::DEFAULTS).unwrap()
    }

    #[test]
    fn a_drained_managed_burst_worker_may_be_destroyed() {
        assert_eq!(
            check_destroy(&target("burst-abc"), &protected(), false),
            Ok(())
        );
    }

    #[test]
    fn protected_names_are_refused_even_with_force() {
        let err = check_destroy(&target("control-plane-1"), &protected(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to destroy `control-plane-1`: the name matches the protected pattern `^control-plane-.*`"
        );
        assert_eq!(err.rule(), "protected-name");
    }

    #[test]
    fn permanent_and_unmanaged_workers_are_refused_even_with_force() {
        let mut t = target("k8s-node2");
        t.kind = Some(PoolKind::Permanent);
        assert_eq!(
            check_destroy(&t, &protected(), true).unwrap_err().rule(),
            "permanent"
        );
        t.managed = false;
        assert_eq!(
            check_destroy(&t, &protected(), true).unwrap_err().rule(),
            "unmanaged"
        );
        let mut no_kind = target("x");
        no_kind.kind = None;
        assert_eq!(
            check_destroy(&no_kind, &protected(), true)
                .unwrap_err()
                .rule(),
            "unmanaged"
        );
    }

    #[test]
    fn an_undrained_worker_needs_force() {
        let mut t = target("burst-abc");
        t.cordoned = false;
        let err = check_destroy(&t, &protected(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to destroy `burst-abc`: it is not cordoned; drain it first or pass force"
        );
        t.cordoned = true;
        t.remaining_pods = 3;
        assert!(
            check_destroy(&t, &protected(), false)
                .unwrap_err()
                .to_string()
                .contains("3 pod(s)")
        );
        assert_eq!(check_destroy(&t, &protected(), true), Ok(()));
    }

    #[test]
    fn request_bounds_report_every_problem() {
        assert_eq!(check_bounds(1, Some(MIN_TTL)), Ok(()));
        assert_eq!(check_bounds(10, Some(MAX_TTL)), Ok(()));
        assert_eq!(check_bounds(5, None), Ok(()));
        let errs = check_bounds(11, Some(Duration::from_secs(60))).unwrap_err();
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "count must be between 1 and 10, got 11",
                "ttl must be between 1h and 168h, got 1m"
            ]
        );
        assert_eq!(
            check_bounds(0, Some(MAX_TTL + Duration::from_secs(1)))
                .unwrap_err()
                .len(),
            2
        );
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(
            did_you_mean("brust", ["burst", "spot"]),
            ", did you mean `burst`?"
        );
        assert_eq!(
            did_you_mean("zzz", ["burst", "spot"]),
            " (known: burst, spot)"
        );
        assert_eq!(did_you_mean("zzz", []), "");
    }

    #[test]
    fn a_bad_protected_pattern_is_named() {
        let (pattern, _) = ProtectedNames::new(&["^ok$", "(unclosed"]).unwrap_err();
        assert_eq!(pattern, "(unclosed");
    }
}
