//! Request parameters as pve-http-server decodes them: query string merged
//! over a form or JSON body, forms split on `&` *and* `;`, `+` as a space,
//! and the schema checks (types, booleans as 0/1, unknown properties) whose
//! messages clients see in a 400's `errors` map.

use std::collections::BTreeMap;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// The largest body accepted (pve-http-server 5.2.1 and later).
pub const MAX_BODY: usize = 512 * 1024;

/// Decoded parameters of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

/// Decodes `a=1&b=2;c=3` the way `decode_urlencoded` does.
pub fn decode_urlencoded(input: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in input.split(['&', ';']) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(unescape(k), unescape(v));
    }
    out
}

fn unescape(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

impl Params {
    /// Parses a request's query string and body.
    ///
    /// # Errors
    /// 501 for a body on GET or DELETE and for an oversized body, 506 for a
    /// content type other than form or JSON, 400 for malformed JSON.
    pub fn parse(
        method: &Method,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        if !body.is_empty() {
            if method == Method::GET || method == Method::DELETE {
                return Err(ApiError::status(
                    501,
                    format!("Unexpected content for method '{method}'"),
                ));
            }
            if body.len() > MAX_BODY {
                return Err(ApiError::status(501, "for data too large"));
            }
            let ct = content_type
                .unwrap_or("application/x-www-form-urlencoded")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match ct.as_str() {
                "application/x-www-form-urlencoded" | "" => {
                    values = decode_urlencoded(&String::from_utf8_lossy(body));
                }
                "application/json" => values = decode_json(body)?,
                other => {
                    return Err(ApiError::status(
                        506,
                        format!("unsupported content type '{other}'"),
                    ));
                }
            }
        }
        if let Some(q) = query {
            values.extend(decode_urlencoded(q));
        }
        Ok(Self { values })
    }

    /// Parameters from explicit pairs (for tests and internal calls).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// All parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }

    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Fails with the schema's message for every parameter that `allowed`
    /// does not accept.
    ///
    /// # Errors
    /// 400 naming each unknown parameter.
    pub fn only(&self, allowed: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        let errors: BTreeMap<String, String> = self
            .values
            .keys()
            .filter(|k| !allowed(k))
            .map(|k| {
                (
                    k.clone(),
                    "property is not defined in schema and the schema does not allow additional properties"
                        .to_owned(),
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::params(errors))
        }
    }

    /// A required string.
    ///
    /// # Errors
    /// 400 "property is missing and it is not optional".
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::param(name, "property is missing and it is not optional"))
    }

    /// An optional integer within `[min, max]`.
    ///
    /// # Errors
    /// 400 with the schema's type or range message.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        parse_int(raw, min, max)
            .map(Some)
            .map_err(|m| ApiError::param(name, m))
    }

    /// An optional boolean: only `0` and `1` are accepted at the top level.
    ///
    /// # Errors
    /// 400 "type check ('boolean') failed - got `'<v>'`".
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(other) => Err(ApiError::param(
                name,
                format!("type check ('boolean') failed - got '{other}'"),
            )),
        }
    }
}

/// Parses an integer as the schema does.
pub(crate) fn parse_int(raw: &str, min: i64, max: i64) -> Result<i64, String> {
    let v: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("type check ('integer') failed - got '{raw}'"))?;
    if v < min {
        return Err(format!("value must have a minimum value of {min}"));
    }
    if v > max {
        return Err(format!("value must have a maximum value of {max}"));
    }
    Ok(v)
}

fn decode_json(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::status(400, format!("malformed JSON string: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::status(
            400,
            "malformed JSON string: not an object",
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(b) => if b { "1" } else { "0" }.to_owned(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            obj @ serde_json::Value::Object(_) => obj.to_string(),
        };
        out.insert(k, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_split_on_semicolons_and_decode_plus_as_space() {
        let m = decode_urlencoded("tags=a;b&name=x+y&sshkeys=ssh-ed25519%20AAA");
        assert_eq!(m["tags"], "a");
        assert_eq!(m["b"], "");
        assert_eq!(m["name"], "x y");
        assert_eq!(m["sshkeys"], "ssh-ed25519 AAA");
        let m = decode_urlencoded("tags=a%3Bb%2Bc");
        assert_eq!(m["tags"], "a;b+c");
    }

    #[test]
    fn the_query_string_wins_over_the_body() {
        let p =
            Params::parse(&Method::POST, Some("cores=4"), None, b"cores=2&memory=1024").unwrap();
        assert_eq!(p.get("cores"), Some("4"));
        assert_eq!(p.get("memory"), Some("1024"));
    }

    #[test]
    fn json_booleans_become_zero_and_one_but_true_strings_are_refused() {
        let p = Params::parse(
            &Method::POST,
            None,
            Some("application/json"),
            br#"{"full":true,"onboot":false,"cores":4}"#,
        )
        .unwrap();
        assert_eq!(p.bool("full").unwrap(), Some(true));
        assert_eq!(p.bool("onboot").unwrap(), Some(false));
        assert_eq!(p.get("cores"), Some("4"));
        let p = Params::from_pairs([("full", "true")]);
        let e = p.bool("full").unwrap_err();
        assert_eq!(
            e.errors["full"],
            "type check ('boolean') failed - got 'true'"
        );
    }

    #[test]
    fn bodies_on_get_and_unknown_content_types_are_refused() {
        let e = Params::parse(&Method::DELETE, None, None, b"x=1").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (501, "Unexpected content for method 'DELETE'")
        );
        let e = Params::parse(&Method::POST, None, Some("text/plain"), b"x").unwrap_err();
        assert_eq!(e.status, 506);
    }
}
