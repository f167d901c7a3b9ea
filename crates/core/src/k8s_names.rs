//! Kubernetes naming rules for label keys and values, taint keys and
//! object names, as the API server enforces them.

use std::fmt;

/// Why a name is not valid Kubernetes syntax.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}: {reason}")]
pub struct NameError {
    /// The rejected text.
    pub value: String,
    /// What it was meant to be ("label key", "label value", ...).
    pub what: &'static str,
    /// The rule it breaks.
    pub reason: String,
}

fn fail(value: &str, what: &'static str, reason: impl fmt::Display) -> NameError {
    NameError {
        value: value.to_owned(),
        what,
        reason: reason.to_string(),
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn check_name_part(s: &str, whole: &str, what: &'static str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(fail(whole, what, "the name part must not be empty"));
    }
    if s.len() > 63 {
        return Err(fail(
            whole,
            what,
            format!(
                "the name part is {} characters, at most 63 are allowed",
                s.len()
            ),
        ));
    }
    let ok_edges = s.starts_with(is_alnum) && s.ends_with(is_alnum);
    let ok_chars = s
        .chars()
        .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'));
    if !ok_edges || !ok_chars {
        return Err(fail(
            whole,
            what,
            "must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (≤ 253 characters of lowercase
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric).
///
/// # Errors
/// A [`NameError`] naming the broken rule.
pub fn validate_dns_subdomain(s: &str, what: &'static str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > 253 {
        return Err(fail(s, what, "must be 1 to 253 characters"));
    }
    for label in s.split('.') {
        if !lowercase_label(label) {
            return Err(fail(
                s,
                what,
                "must be lowercase alphanumerics, '-' or '.', each dot-separated part starting and ending with an alphanumeric",
            ));
        }
    }
    Ok(())
}

/// Whether `s` is lowercase alphanumerics and `-`, starting and ending with
/// an alphanumeric (so not empty): one part of a DNS-1123 name.
fn lowercase_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.chars().all(|c| alnum(c) || c == '-') && s.starts_with(alnum) && s.ends_with(alnum)
}

/// Checks a DNS-1123 label (≤ 63 lowercase alphanumerics or `-`, starting
/// and ending with an alphanumeric) — the rule for pool and size names,
/// which end up in label values, VM names and object names.
///
/// # Errors
/// A [`NameError`] naming the broken rule.
pub fn validate_dns_label(s: &str, what: &'static str) -> Result<(), NameError> {
    if s.is_empty() || s.len() > 63 {
        return Err(fail(s, what, "must be 1 to 63 characters"));
    }
    if !lowercase_label(s) {
        return Err(fail(
            s,
            what,
            "must be lowercase alphanumerics or '-', starting and ending with an alphanumeric",
        ));
    }
    Ok(())
}

/// Checks a qualified name as used for label, annotation and taint keys:
/// an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
///
/// # Errors
/// A [`NameError`] naming the broken rule.
pub fn validate_qualified_name(s: &str, what: &'static str) -> Result<(), NameError> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        validate_dns_subdomain(prefix, what)
            .map_err(|e| fail(s, what, format!("prefix {}", e.reason)))?;
    }
    if name.contains('/') {
        return Err(fail(s, what, "at most one '/' is allowed"));
    }
    check_name_part(name, s, what)
}

/// Checks a label value: empty, or at most 63 characters of alphanumerics,
/// `-`, `_` and `.`, starting and ending with an alphanumeric.
///
/// # Errors
/// A [`NameError`] naming the broken rule.
pub fn validate_label_value(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Ok(());
    }
    check_name_part(s, s, "label value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_follow_the_api_server_rules() {
        for ok in [
            "node-pool",
            "tidepool.dev/claim",
            "node.kubernetes.io/instance-type",
            "a",
            "A_b.c",
        ] {
            assert!(validate_qualified_name(ok, "label key").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Tide.dev/x",
            "a/b/c",
            "/x",
            "x/",
            &"a".repeat(64),
        ] {
            assert!(validate_qualified_name(bad, "label key").is_err(), "{bad}");
        }
        let long_prefix = format!("{}/x", "a".repeat(254));
        assert!(validate_qualified_name(&long_prefix, "label key").is_err());
    }

    #[test]
    fn label_values_may_be_empty_but_not_long_or_odd() {
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("1767225600").is_ok());
        assert!(validate_label_value("12.2").is_ok());
        assert!(validate_label_value("a b").is_err());
        assert!(validate_label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn dns_labels_are_lowercase() {
        assert!(validate_dns_label("burst-1", "pool name").is_ok());
        let e = validate_dns_label("Burst", "pool name").unwrap_err();
        assert_eq!(e.what, "pool name");
        assert!(validate_dns_label("a.b", "pool name").is_err());
    }
}
