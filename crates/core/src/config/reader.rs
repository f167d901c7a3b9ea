//! Reading the YAML tree field by field while collecting every error.
//!
//! The schema walker asks a [`Obj`] for each field it knows; whatever is
//! left when it calls [`Obj::finish`] is an unknown key, reported with a
//! suggestion. Type and format problems are recorded in [`Errors`] and the
//! walk goes on, so one run reports everything that is wrong.

use std::time::Duration;

use super::ConfigError;
use super::yaml::{Key, Mark, Node, Value};
use crate::duration::parse_duration;
use crate::quantity::Quantity;
use crate::safety::did_you_mean;

/// The errors found so far.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<ConfigError>);

impl Errors {
    pub(crate) fn at(&mut self, path: &str, mark: Mark, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            line: mark.line,
            column: mark.col,
            message: message.into(),
        });
    }
}

/// A value with the place it was written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) mark: Mark,
    pub(crate) path: String,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping being read.
pub(crate) struct Obj<'a> {
    pub(crate) path: String,
    pub(crate) mark: Mark,
    entries: &'a [(Key, Node)],
    asked: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    /// Views `node` as a mapping, or records that it should be one.
    pub(crate) fn new(node: &'a Node, path: &str, errs: &mut Errors) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => Some(Self {
                path: path.to_owned(),
                mark: node.mark,
                entries,
                asked: Vec::new(),
            }),
            _ => {
                errs.at(
                    path,
                    node.mark,
                    format!("expected a mapping, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// The node under `key`, if present and not null.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<(&'a Node, String)> {
        self.asked.push(key);
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .filter(|(_, v)| !v.is_null())
            .map(|(_, v)| (v, join(&self.path, key)))
    }

    /// The node under `key`, recording an error if it is missing.
    pub(crate) fn require(
        &mut self,
        key: &'static str,
        errs: &mut Errors,
    ) -> Option<(&'a Node, String)> {
        let found = self.get(key);
        if found.is_none() {
            errs.at(
                &self.path,
                self.mark,
                format!("missing required field `{key}`"),
            );
        }
        found
    }

    /// Reports every key that was not asked for.
    pub(crate) fn finish(self, errs: &mut Errors) {
        self.finish_with(errs, |_| None);
    }

    /// Like [`Obj::finish`], with a custom message for some unknown keys
    /// (for example inline secrets).
    pub(crate) fn finish_with(self, errs: &mut Errors, special: impl Fn(&str) -> Option<String>) {
        for (key, _) in self.entries {
            if self.asked.contains(&key.text.as_str()) {
                continue;
            }
            let path = join(&self.path, &key.text);
            let message = special(&key.text).unwrap_or_else(|| {
                let hint = did_you_mean(&key.text, self.asked.iter().copied());
                format!("unknown field `{}`{hint}", key.text)
            });
            errs.at(&path, key.mark, message);
        }
    }
}

fn scalar(node: &Node) -> Option<(&str, bool)> {
    match &node.value {
        Value::Scalar { text, plain } => Some((text, *plain)),
        _ => None,
    }
}

/// A string scalar (any scalar is accepted as its text).
pub(crate) fn string(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<String>> {
    match scalar(node) {
        Some((text, _)) => Some(Spanned {
            value: text.to_owned(),
            mark: node.mark,
            path: path.to_owned(),
        }),
        None => {
            errs.at(
                path,
                node.mark,
                format!("expected a string, found {}", node.kind()),
            );
            None
        }
    }
}

/// An unsigned integer written as a plain scalar.
pub(crate) fn uint(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<u64>> {
    match scalar(node) {
        Some((text, true)) => match text.replace('_', "").parse::<u64>() {
            Ok(value) => Some(Spanned {
                value,
                mark: node.mark,
                path: path.to_owned(),
            }),
            Err(_) => {
                errs.at(
                    path,
                    node.mark,
                    format!("expected a non-negative integer, found `{text}`"),
                );
                None
            }
        },
        Some((text, false)) => {
            errs.at(
                path,
                node.mark,
                format!("expected a non-negative integer, found the quoted string \"{text}\""),
            );
            None
        }
        None => {
            errs.at(
                path,
                node.mark,
                format!("expected a non-negative integer, found {}", node.kind()),
            );
            None
        }
    }
}

/// An unsigned integer that must fit in `u32`.
pub(crate) fn uint32(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<u32>> {
    let v = uint(node, path, errs)?;
    match u32::try_from(v.value) {
        Ok(value) => Some(Spanned {
            value,
            mark: v.mark,
            path: v.path,
        }),
        Err(_) => {
            errs.at(path, node.mark, format!("{} is too large", v.value));
            None
        }
    }
}

/// A number (integer or decimal) written as a plain scalar.
pub(crate) fn number(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<f64>> {
    match scalar(node) {
        Some((text, true)) => match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Some(Spanned {
                value,
                mark: node.mark,
                path: path.to_owned(),
            }),
            _ => {
                errs.at(
                    path,
                    node.mark,
                    format!("expected a number, found `{text}`"),
                );
                None
            }
        },
        _ => {
            errs.at(
                path,
                node.mark,
                format!("expected a number, found {}", describe(node)),
            );
            None
        }
    }
}

/// A boolean (`true` / `false`).
pub(crate) fn boolean(node: &Node, path: &str, errs: &mut Errors) -> Option<bool> {
    match scalar(node) {
        Some(("true" | "True" | "TRUE", true)) => Some(true),
        Some(("false" | "False" | "FALSE", true)) => Some(false),
        _ => {
            errs.at(
                path,
                node.mark,
                format!("expected true or false, found {}", describe(node)),
            );
            None
        }
    }
}

/// A duration such as `30s` or `4h`.
pub(crate) fn duration(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<Duration>> {
    let text = string(node, path, errs)?;
    match parse_duration(&text.value) {
        Ok(value) => Some(Spanned {
            value,
            mark: text.mark,
            path: text.path,
        }),
        Err(e) => {
            errs.at(path, node.mark, e.to_string());
            None
        }
    }
}

/// A Kubernetes quantity such as `8Gi` or `3800m`.
pub(crate) fn quantity(node: &Node, path: &str, errs: &mut Errors) -> Option<Spanned<Quantity>> {
    let text = string(node, path, errs)?;
    match Quantity::parse(&text.value) {
        Ok(q) if q.milli() >= 0 => Some(Spanned {
            value: q,
            mark: text.mark,
            path: text.path,
        }),
        Ok(_) => {
            errs.at(
                path,
                node.mark,
                format!("`{}` must not be negative", text.value),
            );
            None
        }
        Err(e) => {
            errs.at(path, node.mark, e.to_string());
            None
        }
    }
}

/// A list; each item is handed to `item` with its indexed path.
pub(crate) fn list<'a, T>(
    node: &'a Node,
    path: &str,
    errs: &mut Errors,
    mut item: impl FnMut(&'a Node, &str, &mut Errors) -> Option<T>,
) -> Option<Vec<T>> {
    match &node.value {
        Value::Seq(items) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| item(n, &format!("{path}[{i}]"), errs))
                .collect(),
        ),
        _ => {
            errs.at(
                path,
                node.mark,
                format!("expected a list, found {}", describe(node)),
            );
            None
        }
    }
}

fn describe(node: &Node) -> String {
    match scalar(node) {
        Some((text, true)) if !node.is_null() => format!("`{text}`"),
        Some((text, false)) => format!("the string \"{text}\""),
        _ => node.kind().to_owned(),
    }
}
