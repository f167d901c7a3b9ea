//! Field readers every section of the schema shares: durations, fractions
//! and counts with their ranges, Kubernetes names and label values, lists
//! without duplicates, and [`Fields`], which reads optional fields over
//! their defaults.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::config::reader::{Errors, Obj, Spanned, duration, join, list, number, string, uint32};
use crate::config::yaml::{Key, Mark, Node};
use crate::k8s_names::{
    NameError, validate_dns_label, validate_dns_subdomain, validate_label_value,
    validate_qualified_name,
};

/// A duration of any length, zero included.
pub(super) fn any_duration(node: &Node, path: &str, errs: &mut Errors) -> Option<Duration> {
    duration(node, path, errs).map(|d| d.value)
}

/// A duration longer than zero.
pub(super) fn positive_duration(node: &Node, path: &str, errs: &mut Errors) -> Option<Duration> {
    let d = duration(node, path, errs)?;
    if d.value.is_zero() {
        errs.at(path, d.mark, "must be longer than zero");
        return None;
    }
    Some(d.value)
}

/// A number in (0, 1].
pub(super) fn fraction(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<f64>> {
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

/// A count of at least one.
pub(super) fn at_least_one(node: &Node, path: &str, errs: &mut Errors) -> Option<u32> {
    let v = uint32(node, path, errs)?;
    if v.value == 0 {
        errs.at(path, v.mark, "must be at least 1");
        return None;
    }
    Some(v.value)
}

/// A string that `check` accepts; what `check` says against it is recorded
/// otherwise.
fn checked(
    node: &Node,
    path: &str,
    errs: &mut Errors,
    check: impl FnOnce(&str) -> Result<(), NameError>,
) -> Option<String> {
    let v = string(node, path, errs)?;
    match check(&v.value) {
        Ok(()) => Some(v.value),
        Err(e) => {
            errs.at(path, v.mark, e.to_string());
            None
        }
    }
}

/// A DNS label (RFC 1123), such as a namespace; `what` names it in errors.
pub(super) fn dns_label(
    node: &Node,
    path: &str,
    what: &'static str,
    errs: &mut Errors,
) -> Option<String> {
    checked(node, path, errs, |s| validate_dns_label(s, what))
}

/// A DNS subdomain (RFC 1123), such as a Secret name; `what` names it in
/// errors.
pub(super) fn dns_subdomain(
    node: &Node,
    path: &str,
    what: &'static str,
    errs: &mut Errors,
) -> Option<String> {
    checked(node, path, errs, |s| validate_dns_subdomain(s, what))
}

/// A qualified name (`[prefix/]name`), such as a label or taint key; `what`
/// names it in errors.
pub(super) fn qualified_name(
    node: &Node,
    path: &str,
    what: &'static str,
    errs: &mut Errors,
) -> Option<String> {
    checked(node, path, errs, |s| validate_qualified_name(s, what))
}

/// A label value.
pub(super) fn label_value(node: &Node, path: &str, errs: &mut Errors) -> Option<String> {
    checked(node, path, errs, validate_label_value)
}

/// A list of strings in which no entry appears twice; `what` names an entry
/// in errors.
pub(super) fn unique_strings(
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

/// Reads every entry of a mapping keyed by names into `out`, in document
/// order, each under its name (replacing what `out` held there). A name
/// must be a DNS label (`what` names it in errors); `parse` reads one value,
/// given `out` as it stands, the name, the value and its path. An entry
/// that fails leaves `out` as it was.
pub(super) fn named_entries<T>(
    entries: &[(Key, Node)],
    path: &str,
    what: &'static str,
    errs: &mut Errors,
    out: &mut BTreeMap<String, Spanned<T>>,
    mut parse: impl FnMut(&BTreeMap<String, Spanned<T>>, &str, &Node, &str, &mut Errors) -> Option<T>,
) {
    for (key, value) in entries {
        let p = join(path, &key.text);
        if let Err(e) = validate_dns_label(&key.text, what) {
            errs.at(&p, key.mark, e.to_string());
            continue;
        }
        if let Some(value) = parse(out, &key.text, value, &p, errs) {
            out.insert(
                key.text.clone(),
                Spanned {
                    value,
                    mark: key.mark,
                    path: p,
                },
            );
        }
    }
}

/// A mapping whose optional fields are read into slots that already hold
/// their defaults. A field that is present but invalid keeps its default
/// and marks the whole mapping invalid (its error is already recorded).
pub(super) struct Fields<'a, 'e> {
    /// The mapping.
    pub(super) obj: Obj<'a>,
    /// Where problems go.
    pub(super) errs: &'e mut Errors,
    /// No field read so far was invalid.
    pub(super) ok: bool,
}

impl<'a, 'e> Fields<'a, 'e> {
    /// Starts reading `obj`.
    pub(super) fn new(obj: Obj<'a>, errs: &'e mut Errors) -> Self {
        Self {
            obj,
            errs,
            ok: true,
        }
    }

    /// Reads the optional field `key` with `parse` into `slot`.
    pub(super) fn set<T>(
        &mut self,
        key: &'static str,
        slot: &mut T,
        parse: impl FnOnce(&'a Node, &str, &mut Errors) -> Option<T>,
    ) {
        if let Some((n, p)) = self.obj.get(key) {
            match parse(n, &p, self.errs) {
                Some(v) => *slot = v,
                None => self.ok = false,
            }
        }
    }

    /// Reports the unknown fields; whether every field read was valid.
    pub(super) fn finish(self) -> bool {
        self.obj.finish(self.errs);
        self.ok
    }
}
