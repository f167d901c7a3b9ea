//! A pool's scaling policies: when it grows (`scaleUp`, with its pressure
//! triggers), how it shrinks (`scaleDown`), and the utilization band of a
//! permanent pool.

use std::time::Duration;

use crate::config::reader::{Errors, Obj, Spanned};
use crate::config::yaml::{Node, Value};
use crate::config::{Pressure, ScaleDown, ScaleUp, Utilization};

use super::fields::{Fields, any_duration, at_least_one, fraction, positive_duration};

/// A pressure trigger's threshold and window; `default_threshold` when
/// the threshold is not given.
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

/// A pressure trigger: `false` turns it off, a mapping tunes it.
fn pressure_or_off(
    node: &Node,
    path: &str,
    default_threshold: f64,
    errs: &mut Errors,
) -> Option<Option<Pressure>> {
    if matches!(&node.value, Value::Scalar { text, plain: true } if text == "false") {
        return Some(None);
    }
    pressure(node, path, default_threshold, errs).map(Some)
}

/// The pool's `scaleUp` section over its defaults.
pub(super) fn scale_up(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<ScaleUp> {
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
    let mut f = Fields::new(Obj::new(node, &path, errs)?, errs);
    f.set("pendingPods", &mut out.pending_pods, at_least_one);
    f.set("pendingFor", &mut out.pending_for, any_duration);
    f.set("batchSize", &mut out.batch_size, at_least_one);
    f.set("cpuPressure", &mut out.cpu_pressure, |n, p, e| {
        pressure_or_off(n, p, 0.8, e)
    });
    f.set("memoryPressure", &mut out.memory_pressure, |n, p, e| {
        pressure_or_off(n, p, 0.85, e)
    });
    f.finish().then_some(out)
}

/// The pool's `scaleDown` section over its defaults.
pub(super) fn scale_down(section: Option<(&Node, String)>, errs: &mut Errors) -> Option<ScaleDown> {
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
    let mut f = Fields::new(Obj::new(node, &path, errs)?, errs);
    f.set("maxFraction", &mut out.max_fraction, |n, p, e| {
        fraction(n, p, e).map(|f| f.value)
    });
    f.set("interval", &mut out.interval, positive_duration);
    f.set("drainTimeout", &mut out.drain_timeout, positive_duration);
    f.set("gracePeriod", &mut out.grace_period, any_duration);
    f.set("maxConcurrent", &mut out.max_concurrent, at_least_one);
    f.finish().then_some(out)
}

/// A permanent pool's utilization band: `scaleDownBelow < target <
/// scaleUpAbove`.
pub(super) fn utilization(node: &Node, path: &str, errs: &mut Errors) -> Option<Utilization> {
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
