//! The request path every call takes: the URL, the auth header, the
//! Proxmox envelope, error classification, the tracing span and retries of
//! transient failures; and decoding of the answer.

use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;
use url::Url;

use super::ProxmoxClient;
use crate::error::{self, ProxmoxError};
use crate::types::{Upid, UpidParseError};

/// One request to make.
pub(super) struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    form: Vec<(String, String)>,
    retry: bool,
}

impl Call {
    pub(super) fn new(method: Method, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            form: Vec::new(),
            retry: true,
        }
    }

    pub(super) fn get(segments: &[&str]) -> Self {
        Self::new(Method::GET, segments)
    }

    pub(super) fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub(super) fn form(mut self, pairs: Vec<(String, String)>) -> Self {
        self.form = pairs;
        self
    }

    pub(super) fn once(mut self) -> Self {
        self.retry = false;
        self
    }
}

pub(super) fn bool01(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

pub(super) fn decode<T: DeserializeOwned>(op: &str, data: Value) -> Result<T, ProxmoxError> {
    serde_json::from_value(data)
        .map_err(|e| ProxmoxError::unexpected(op.to_owned(), format!("cannot decode answer: {e}")))
}

pub(super) fn decode_upid(op: &str, data: Value) -> Result<Upid, ProxmoxError> {
    let text = data.as_str().ok_or_else(|| {
        ProxmoxError::unexpected(op.to_owned(), format!("expected a UPID, got {data}"))
    })?;
    text.parse()
        .map_err(|e: UpidParseError| ProxmoxError::unexpected(op.to_owned(), e.to_string()))
}

impl ProxmoxClient {
    fn url(&self, op: &str, segments: &[String]) -> Result<Url, ProxmoxError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ProxmoxError::unexpected(op.to_owned(), "endpoint cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One attempt: send, read the envelope, classify an error answer.
    async fn attempt(&self, op: &str, call: &Call, url: &Url) -> Result<Value, ProxmoxError> {
        let mut req = self
            .http
            .request(call.method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if !call.form.is_empty() {
            req = req.form(&call.form);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ProxmoxError::transport(op.to_owned(), e.without_url()))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProxmoxError::transport(op.to_owned(), e.without_url()))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            let Some(mut json) = json else {
                return Err(ProxmoxError::unexpected(
                    op.to_owned(),
                    "the answer is not JSON",
                ));
            };
            return Ok(json.get_mut("data").map(Value::take).unwrap_or(Value::Null));
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(reason);
        let errors = json
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let text = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), text.trim_end().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(error::classify(
            op.to_owned(),
            status.as_u16(),
            message,
            errors,
        ))
    }

    /// Sends `call`, retrying transient failures when the call allows it.
    pub(super) async fn request(&self, op: &str, call: Call) -> Result<Value, ProxmoxError> {
        let url = self.url(op, &call.segments)?;
        let span = tracing::debug_span!(
            "proxmox.call",
            method = %call.method,
            path = %url.path(),
            attempts = tracing::field::Empty,
        );
        async {
            let max = if call.retry {
                self.options.retry.max_attempts.max(1)
            } else {
                1
            };
            let mut attempt = 1;
            loop {
                match self.attempt(op, &call, &url).await {
                    Ok(v) => {
                        tracing::Span::current().record("attempts", attempt);
                        return Ok(v);
                    }
                    Err(e) if e.is_transient() && attempt < max => {
                        let pause = self.options.retry.backoff(attempt);
                        tracing::debug!(error = %e, cause = %e.cause(), attempt, ?pause, "retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::Span::current().record("attempts", attempt);
                        tracing::debug!(error = %e, cause = %e.cause(), category = e.category(), "call failed");
                        return Err(e);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        op: &str,
        call: Call,
    ) -> Result<T, ProxmoxError> {
        decode(op, self.request(op, call).await?)
    }

    pub(super) async fn task(&self, op: &str, call: Call) -> Result<Upid, ProxmoxError> {
        decode_upid(op, self.request(op, call).await?)
    }
}
