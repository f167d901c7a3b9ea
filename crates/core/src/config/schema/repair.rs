//! A pool's `repair:` section over spec §7's defaults
//! ([`RepairPolicy::default`]): switches (`enabled`, `dryRun`, `replace`),
//! the matrix's thresholds, and the brakes. Replacing is refused for
//! permanent pools, and the NotReady thresholds must climb.

use crate::config::reader::{Errors, Obj, boolean};
use crate::config::yaml::Node;
use crate::health::RepairPolicy;
use crate::pool::PoolKind;

use super::fields::{Fields, any_duration, at_least_one, fraction, positive_duration};

/// The pool's `repair` section over the defaults; `kind` is the pool's
/// kind when it is known.
pub(super) fn repair(
    section: Option<(&Node, String)>,
    kind: Option<PoolKind>,
    errs: &mut Errors,
) -> Option<RepairPolicy> {
    let mut out = RepairPolicy::default();
    let Some((node, path)) = section else {
        return Some(out);
    };
    let mut f = Fields::new(Obj::new(node, &path, errs)?, errs);
    let flag = |n: &Node, p: &str, e: &mut Errors| boolean(n, p, e);
    f.set("enabled", &mut out.enabled, flag);
    f.set("dryRun", &mut out.dry_run, flag);
    let mut replace_at = None;
    f.set("replace", &mut out.replace, |n, p, e| {
        replace_at = Some((n.mark, p.to_owned()));
        boolean(n, p, e)
    });
    f.set(
        "restartKubeletAfter",
        &mut out.restart_kubelet_after,
        any_duration,
    );
    f.set("rebootAfter", &mut out.reboot_after, any_duration);
    f.set("replaceAfter", &mut out.replace_after, any_duration);
    f.set(
        "memoryPressureAfter",
        &mut out.memory_pressure_after,
        any_duration,
    );
    f.set("escalateAfter", &mut out.escalate_after, any_duration);
    f.set(
        "crashLoopRestarts",
        &mut out.crash_loop_restarts,
        at_least_one,
    );
    f.set("maxConcurrent", &mut out.max_concurrent, at_least_one);
    f.set(
        "maxUnhealthyFraction",
        &mut out.max_unhealthy_fraction,
        |n, p, e| fraction(n, p, e).map(|v| v.value),
    );
    f.set("recovery", &mut out.recovery, any_duration);
    f.set("backoff", &mut out.backoff, positive_duration);
    f.set("maxAttempts", &mut out.max_attempts, at_least_one);
    let mut ok = f.finish();
    if out.replace
        && kind == Some(PoolKind::Permanent)
        && let Some((mark, p)) = replace_at
    {
        errs.at(
            &p,
            mark,
            "permanent pools are never replaced automatically (their sick workers are escalated); remove `replace` or use kind burst, spot or gpu",
        );
        ok = false;
    }
    if !(out.restart_kubelet_after < out.reboot_after && out.reboot_after < out.replace_after) {
        errs.at(
            &path,
            node.mark,
            format!(
                "need restartKubeletAfter < rebootAfter < replaceAfter, got {} / {} / {}",
                crate::duration::Human(out.restart_kubelet_after),
                crate::duration::Human(out.reboot_after),
                crate::duration::Human(out.replace_after)
            ),
        );
        ok = false;
    }
    ok.then_some(out)
}
