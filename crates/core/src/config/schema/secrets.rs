//! Secrets given by reference (`{env: NAME}`, `{file: PATH}` or
//! `{secret: {name, key}}`), and the message for a secret written inline.

use crate::config::SecretRef;
use crate::config::reader::{Errors, Obj, string};
use crate::config::yaml::Node;

use super::fields::{dns_label, dns_subdomain};

/// The message for a secret written inline under `key`, pointing at the
/// `reference` field that takes it by reference instead.
pub(super) fn inline_secret(key: &str, reference: &str) -> String {
    format!(
        "`{key}` would put a secret in the configuration file; give it by reference instead: \
         `{reference}: {{env: NAME}}`, `{{file: PATH}}` or `{{secret: {{name: NAME, key: KEY}}}}`"
    )
}

/// A secret reference: exactly one of `env`, `file` or `secret`.
pub(super) fn secret_ref(node: &Node, path: &str, errs: &mut Errors) -> Option<SecretRef> {
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
