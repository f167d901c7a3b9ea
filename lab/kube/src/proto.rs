//! Just enough of the Kubernetes protobuf wire format to read the request
//! bodies kubectl's typed clients send as `application/vnd.kubernetes.protobuf`
//! for subresources (Eviction, Binding) and for `kubectl create <kind>`
//! (Namespace, ConfigMap, Secret, Deployment, PodDisruptionBudget): the
//! `k8s\0` envelope (`runtime.Unknown`) and a schema table of the fields
//! those objects carry (field numbers from Kubernetes' `generated.proto`).
//! Fields outside the table are dropped; other kinds are refused with 415.

use serde_json::{Value, json};

/// Errors decoding protobuf bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The body lacks the `k8s\0` magic prefix.
    #[error("protobuf body lacks the k8s envelope prefix")]
    NoEnvelope,
    /// The bytes are not valid protobuf.
    #[error("malformed protobuf at byte {0}")]
    Malformed(usize),
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(ProtoError::Malformed(*pos))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtoError::Malformed(*pos))
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let field = match tag & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| ProtoError::Malformed(pos))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(ProtoError::Malformed(pos))?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            _ => return Err(ProtoError::Malformed(pos)),
        };
        out.push((tag >> 3, field));
    }
    Ok(out)
}

fn string(bytes: &[u8]) -> Value {
    json!(String::from_utf8_lossy(bytes))
}

/// Unwraps the `k8s\0` envelope: (`apiVersion`, `kind`, raw object bytes).
///
/// # Errors
/// [`ProtoError`] when the envelope is missing or malformed.
pub fn envelope(body: &[u8]) -> Result<(String, String, &[u8]), ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoEnvelope)?;
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta)? {
                    if let Field::Bytes(b) = g {
                        match m {
                            1 => api_version = String::from_utf8_lossy(b).into_owned(),
                            2 => kind = String::from_utf8_lossy(b).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

fn object_meta(buf: &[u8]) -> Result<Value, ProtoError> {
    let mut meta = json!({});
    for (n, f) in fields(buf)? {
        if let Field::Bytes(b) = f {
            match n {
                1 => meta["name"] = string(b),
                2 => meta["generateName"] = string(b),
                3 => meta["namespace"] = string(b),
                _ => {}
            }
        }
    }
    Ok(meta)
}

/// Decodes a policy/v1 Eviction (metadata and deleteOptions) into JSON.
///
/// # Errors
/// [`ProtoError::Malformed`].
pub fn eviction(raw: &[u8]) -> Result<Value, ProtoError> {
    let mut out = json!({"apiVersion": "policy/v1", "kind": "Eviction"});
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => out["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let mut opts = json!({});
                for (m, g) in fields(b)? {
                    match (m, g) {
                        (1, Field::Varint(v)) => opts["gracePeriodSeconds"] = json!(v as i64),
                        (2, Field::Bytes(p)) => {
                            let mut pre = json!({});
                            for (k, h) in fields(p)? {
                                if let Field::Bytes(s) = h {
                                    match k {
                                        1 => pre["uid"] = string(s),
                                        2 => pre["resourceVersion"] = string(s),
                                        _ => {}
                                    }
                                }
                            }
                            opts["preconditions"] = pre;
                        }
                        (4, Field::Bytes(s)) => opts["propagationPolicy"] = string(s),
                        _ => {}
                    }
                }
                out["deleteOptions"] = opts;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a core/v1 Binding (metadata and target) into JSON.
///
/// # Errors
/// [`ProtoError::Malformed`].
pub fn binding(raw: &[u8]) -> Result<Value, ProtoError> {
    let mut out = json!({"apiVersion": "v1", "kind": "Binding"});
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => out["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let mut target = json!({});
                for (m, g) in fields(b)? {
                    if let Field::Bytes(s) = g {
                        match m {
                            1 => target["kind"] = string(s),
                            2 => target["namespace"] = string(s),
                            3 => target["name"] = string(s),
                            _ => {}
                        }
                    }
                }
                out["target"] = target;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// How one protobuf field maps to JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [F]),
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>`, base64 in JSON.
    BytesMap,
    /// `map<string, Quantity>`.
    QuantityMap,
    /// `intstr.IntOrString`.
    IntOrString,
}

/// One field of a message schema: number, JSON name, type, repeated.
#[derive(Clone, Copy)]
struct F(u64, &'static str, Ty, bool);

const OBJECT_META: &[F] = &[
    F(1, "name", Ty::Str, false),
    F(2, "generateName", Ty::Str, false),
    F(3, "namespace", Ty::Str, false),
    F(11, "labels", Ty::StrMap, false),
    F(12, "annotations", Ty::StrMap, false),
    F(14, "finalizers", Ty::Str, true),
];
const REQUIREMENT: &[F] = &[
    F(1, "key", Ty::Str, false),
    F(2, "operator", Ty::Str, false),
    F(3, "values", Ty::Str, true),
];
const LABEL_SELECTOR: &[F] = &[
    F(1, "matchLabels", Ty::StrMap, false),
    F(2, "matchExpressions", Ty::Msg(REQUIREMENT), true),
];
const RESOURCES: &[F] = &[
    F(1, "limits", Ty::QuantityMap, false),
    F(2, "requests", Ty::QuantityMap, false),
];
const PORT: &[F] = &[
    F(1, "name", Ty::Str, false),
    F(3, "containerPort", Ty::Int, false),
    F(4, "protocol", Ty::Str, false),
];
const ENV: &[F] = &[F(1, "name", Ty::Str, false), F(2, "value", Ty::Str, false)];
const CONTAINER: &[F] = &[
    F(1, "name", Ty::Str, false),
    F(2, "image", Ty::Str, false),
    F(3, "command", Ty::Str, true),
    F(4, "args", Ty::Str, true),
    F(5, "workingDir", Ty::Str, false),
    F(6, "ports", Ty::Msg(PORT), true),
    F(7, "env", Ty::Msg(ENV), true),
    F(8, "resources", Ty::Msg(RESOURCES), false),
    F(13, "terminationMessagePath", Ty::Str, false),
    F(14, "imagePullPolicy", Ty::Str, false),
    F(20, "terminationMessagePolicy", Ty::Str, false),
];
const TOLERATION: &[F] = &[
    F(1, "key", Ty::Str, false),
    F(2, "operator", Ty::Str, false),
    F(3, "value", Ty::Str, false),
    F(4, "effect", Ty::Str, false),
    F(5, "tolerationSeconds", Ty::Int, false),
];
const POD_SPEC: &[F] = &[
    F(2, "containers", Ty::Msg(CONTAINER), true),
    F(3, "restartPolicy", Ty::Str, false),
    F(4, "terminationGracePeriodSeconds", Ty::Int, false),
    F(6, "dnsPolicy", Ty::Str, false),
    F(7, "nodeSelector", Ty::StrMap, false),
    F(8, "serviceAccountName", Ty::Str, false),
    F(10, "nodeName", Ty::Str, false),
    F(19, "schedulerName", Ty::Str, false),
    F(20, "initContainers", Ty::Msg(CONTAINER), true),
    F(22, "tolerations", Ty::Msg(TOLERATION), true),
    F(24, "priorityClassName", Ty::Str, false),
];
const POD_TEMPLATE: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(POD_SPEC), false),
];
const ROLLING_UPDATE: &[F] = &[
    F(1, "maxUnavailable", Ty::IntOrString, false),
    F(2, "maxSurge", Ty::IntOrString, false),
];
const STRATEGY: &[F] = &[
    F(1, "type", Ty::Str, false),
    F(2, "rollingUpdate", Ty::Msg(ROLLING_UPDATE), false),
];
const DEPLOYMENT_SPEC: &[F] = &[
    F(1, "replicas", Ty::Int, false),
    F(2, "selector", Ty::Msg(LABEL_SELECTOR), false),
    F(3, "template", Ty::Msg(POD_TEMPLATE), false),
    F(4, "strategy", Ty::Msg(STRATEGY), false),
    F(5, "minReadySeconds", Ty::Int, false),
];
const PDB_SPEC: &[F] = &[
    F(1, "minAvailable", Ty::IntOrString, false),
    F(2, "selector", Ty::Msg(LABEL_SELECTOR), false),
    F(3, "maxUnavailable", Ty::IntOrString, false),
    F(4, "unhealthyPodEvictionPolicy", Ty::Str, false),
];
const NAMESPACE_SPEC: &[F] = &[F(1, "finalizers", Ty::Str, true)];
const NAMESPACE: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(NAMESPACE_SPEC), false),
];
const CONFIG_MAP: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "data", Ty::StrMap, false),
    F(3, "binaryData", Ty::BytesMap, false),
    F(4, "immutable", Ty::Bool, false),
];
const SECRET: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "data", Ty::BytesMap, false),
    F(3, "type", Ty::Str, false),
    F(5, "immutable", Ty::Bool, false),
];
const DEPLOYMENT: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(DEPLOYMENT_SPEC), false),
];
const PDB: &[F] = &[
    F(1, "metadata", Ty::Msg(OBJECT_META), false),
    F(2, "spec", Ty::Msg(PDB_SPEC), false),
];

fn map_entry(bytes: &[u8]) -> Result<(String, Option<&[u8]>), ProtoError> {
    let mut key = String::new();
    let mut value = None;
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Bytes(b)) => value = Some(b),
            _ => {}
        }
    }
    Ok((key, value))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn decode_value(ty: Ty, field: &Field<'_>) -> Result<Value, ProtoError> {
    use base64::Engine as _;
    Ok(match (ty, field) {
        (Ty::Str, Field::Bytes(b)) => string(b),
        (Ty::Int, Field::Varint(v)) => json!(*v as i64),
        (Ty::Bool, Field::Varint(v)) => json!(*v != 0),
        (Ty::Msg(schema), Field::Bytes(b)) => decode_message(schema, b)?,
        (Ty::IntOrString, Field::Bytes(b)) => {
            let (mut kind, mut int, mut text) = (0, 0i64, String::new());
            for (n, f) in fields(b)? {
                match (n, f) {
                    (1, Field::Varint(v)) => kind = v,
                    (2, Field::Varint(v)) => int = v as i64,
                    (3, Field::Bytes(s)) => text = String::from_utf8_lossy(s).into_owned(),
                    _ => {}
                }
            }
            if kind == 1 { json!(text) } else { json!(int) }
        }
        (Ty::StrMap | Ty::BytesMap | Ty::QuantityMap, Field::Bytes(b)) => {
            let (key, value) = map_entry(b)?;
            let value = value.unwrap_or_default();
            let v = match ty {
                Ty::BytesMap => json!(base64::engine::general_purpose::STANDARD.encode(value)),
                Ty::QuantityMap => fields(value)?
                    .into_iter()
                    .find_map(|(n, f)| match (n, f) {
                        (1, Field::Bytes(s)) => Some(string(s)),
                        _ => None,
                    })
                    .unwrap_or_else(|| json!("0")),
                _ => string(value),
            };
            json!({ key: v })
        }
        _ => Value::Null,
    })
}

fn decode_message(schema: &[F], buf: &[u8]) -> Result<Value, ProtoError> {
    let mut out = serde_json::Map::new();
    for (n, field) in fields(buf)? {
        let Some(F(_, name, ty, repeated)) = schema.iter().find(|f| f.0 == n).copied() else {
            continue;
        };
        let v = decode_value(ty, &field)?;
        let is_map = matches!(ty, Ty::StrMap | Ty::BytesMap | Ty::QuantityMap);
        if is_map {
            let slot = out.entry(name).or_insert_with(|| json!({}));
            if let (Some(m), Value::Object(entry)) = (slot.as_object_mut(), v) {
                m.extend(entry);
            }
        } else if repeated {
            let slot = out.entry(name).or_insert_with(|| json!([]));
            if let Some(a) = slot.as_array_mut() {
                a.push(v);
            }
        } else if !is_empty(&v) {
            out.insert(name.to_owned(), v);
        }
    }
    out.retain(|_, v| !is_empty(v));
    Ok(Value::Object(out))
}

/// Decodes the object of a `kubectl create` for the kinds in the schema
/// table; `None` for other kinds.
///
/// # Errors
/// [`ProtoError::Malformed`].
pub fn object(api_version: &str, kind: &str, raw: &[u8]) -> Result<Option<Value>, ProtoError> {
    let schema = match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("policy/v1", "PodDisruptionBudget") => PDB,
        _ => return Ok(None),
    };
    let mut obj = decode_message(schema, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(Some(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(n: u8, b: &[u8]) -> Vec<u8> {
        let mut v = vec![(n << 3) | 2, u8::try_from(b.len()).unwrap()];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn an_enveloped_eviction_decodes_name_and_grace_period() {
        let meta = [bytes_field(1, b"web-1"), bytes_field(3, b"default")].concat();
        let opts = vec![1 << 3, 5];
        let raw = [bytes_field(1, &meta), bytes_field(2, &opts)].concat();
        let type_meta = [bytes_field(1, b"policy/v1"), bytes_field(2, b"Eviction")].concat();
        let body = [
            b"k8s\0".to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &raw),
        ]
        .concat();
        let (api_version, kind, raw) = envelope(&body).unwrap();
        assert_eq!(
            (api_version.as_str(), kind.as_str()),
            ("policy/v1", "Eviction")
        );
        let e = eviction(raw).unwrap();
        assert_eq!(e["metadata"]["name"], "web-1");
        assert_eq!(e["deleteOptions"]["gracePeriodSeconds"], 5);
    }
}
