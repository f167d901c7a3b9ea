//! Just enough of the Kubernetes protobuf wire format to read the request
//! bodies kubectl's typed clients send as `application/vnd.kubernetes.protobuf`
//! for subresources (Eviction, Binding): the `k8s\0` envelope
//! (`runtime.Unknown`) and the few fields those objects carry. Other
//! protobuf bodies are refused with 415.

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
