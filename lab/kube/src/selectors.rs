//! Label selectors (equality- and set-based, as in `?labelSelector=` and
//! `metav1.LabelSelector`) and field selectors (`?fieldSelector=`).

use std::collections::BTreeMap;

use serde_json::Value;

/// Errors parsing a selector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectorError {
    /// The selector text does not parse.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// A LabelSelector object uses an unknown operator.
    #[error("{0:?} is not a valid label selector operator")]
    Operator(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

impl LabelSelector {
    /// Parses the query-string form (`a=b,c in (d,e),!f`).
    ///
    /// # Errors
    /// [`SelectorError::Parse`] on malformed text.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self { reqs })
    }

    /// Builds a selector from a `metav1.LabelSelector` object
    /// (`matchLabels`, `matchExpressions`). A missing or empty selector
    /// matches everything.
    ///
    /// # Errors
    /// [`SelectorError::Operator`] on an unknown operator.
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                reqs.push((k.clone(), Op::Eq(v.as_str().unwrap_or_default().to_owned())));
            }
        }
        if let Some(exprs) = selector["matchExpressions"].as_array() {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                let values = crate::meta::strings(&e["values"]);
                let op = match e["operator"].as_str().unwrap_or_default() {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => return Err(SelectorError::Operator(other.to_owned())),
                };
                reqs.push((key, op));
            }
        }
        Ok(Self { reqs })
    }

    /// Whether the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::Eq(v) => value == Some(v),
                Op::NotEq(v) => value != Some(v),
                Op::In(vs) => value.is_some_and(|x| vs.contains(x)),
                Op::NotIn(vs) => !value.is_some_and(|x| vs.contains(x)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(&labels_of(obj))
    }
}

/// The labels of an object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Parse(whole.to_owned()))?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

fn parse_requirement(part: &str) -> Result<(String, Op), SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok((key.trim().to_owned(), Op::DoesNotExist));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok((k.trim().to_owned(), Op::NotEq(v.trim().to_owned())));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok((k.trim().to_owned(), Op::Eq(v.trim().to_owned())));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok((k.trim().to_owned(), Op::Eq(v.trim().to_owned())));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim().to_owned();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        return Ok((key, Op::Exists));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok((key, Op::NotIn(parse_set(set, part)?)));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok((key, Op::In(parse_set(set, part)?)));
    }
    Err(SelectorError::Parse(part.to_owned()))
}

/// A parsed field selector: `path=value` and `path!=value` terms, all of
/// which must hold. Any dotted path into the object is accepted; a missing
/// field compares as the empty string (so `spec.nodeName=` selects
/// unscheduled pods, as on a real server).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Running`.
    ///
    /// # Errors
    /// [`SelectorError::Parse`] on a term without an operator.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError::Parse(part.to_owned()));
            };
            terms.push((path.trim().to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }

    /// The value an equality term on `path` asks for, if there is one.
    pub fn equality(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(p, eq, _)| p == path && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn set_based_requirements_combine_with_equality_ones() {
        let s = LabelSelector::parse("app in (web, api),tier!=db,!legacy,zone").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("zone", "a"), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
        let n = LabelSelector::parse("app notin (web)").unwrap();
        assert!(n.matches(&labels(&[])));
    }

    #[test]
    fn label_selector_objects_use_match_labels_and_expressions() {
        let s = LabelSelector::from_object(&json!({"matchLabels": {"a": "b"},
            "matchExpressions": [{"key": "c", "operator": "Exists"}]}))
        .unwrap();
        assert!(s.matches(&labels(&[("a", "b"), ("c", "")])));
        assert!(!s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn an_empty_node_name_field_selector_selects_unscheduled_pods() {
        let f = FieldSelector::parse("spec.nodeName=,status.phase!=Failed").unwrap();
        assert!(f.matches(&json!({"spec": {}, "status": {"phase": "Pending"}})));
        assert!(!f.matches(&json!({"spec": {"nodeName": "n"}})));
    }
}
