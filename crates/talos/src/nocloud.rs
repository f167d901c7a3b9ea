//! The nocloud join method: a small HTTP server that hands each new VM its
//! user-data once, the SMBIOS serial that points the VM at it, and the
//! kubeadm `#cloud-config` template renderer for cloud-init images.
//!
//! A registration gets an unguessable token (256 bits from the operating
//! system's random source) and the seed URL `<advertise>/nocloud/<token>/`,
//! under which the server answers `user-data`, `meta-data`, `vendor-data`
//! (empty) and, when one was given, `network-config`. The user-data holds
//! join secrets, so a token stops working (HTTP 410 Gone) a short grace
//! period after its user-data was first served — long enough for the guest
//! to fetch the remaining files — or at its TTL, whichever comes first, or
//! when revoked. Unknown tokens get 404.
//!
//! Times are measured with the tokio clock (`tokio::time::Instant`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tidepool_core::conventions::Taint;
use tokio::time::Instant;

/// Errors of the nocloud server and the cloud-init template renderer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NocloudError {
    /// The operating system's random source failed.
    #[error("generating a nocloud token: {0}")]
    Random(String),
    /// The template uses a variable that is not defined.
    #[error("cloud-init template line {line}: unknown variable {{{{{name}}}}} (known: {known})")]
    UnknownVariable {
        /// The variable name.
        name: String,
        /// 1-based line.
        line: usize,
        /// The defined names, comma-separated.
        known: String,
    },
    /// A `{{` without its `}}`.
    #[error("cloud-init template line {line}: `{{{{` is not closed by `}}}}`")]
    Unterminated {
        /// 1-based line.
        line: usize,
    },
    /// A value would break the template's YAML (it has a line break).
    #[error("cloud-init template variable {name} has a line break, which would break the YAML")]
    MultilineValue {
        /// The variable name.
        name: String,
    },
}

impl NocloudError {
    /// A stable category string for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            NocloudError::Random(_) => "random",
            NocloudError::UnknownVariable { .. } => "unknown_variable",
            NocloudError::Unterminated { .. } => "unterminated",
            NocloudError::MultilineValue { .. } => "multiline_value",
        }
    }
}

/// How long tokens live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NocloudOptions {
    /// A token expires this long after registration at the latest.
    pub ttl: Duration,
    /// ... and this long after its user-data was first served.
    pub grace: Duration,
}

impl Default for NocloudOptions {
    /// 30 minutes to boot, 2 minutes to fetch the rest after user-data.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 60),
            grace: Duration::from_secs(120),
        }
    }
}

/// A registered seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    /// The token (a URL path segment).
    pub token: String,
    /// The seed URL, ending in `/`.
    pub url: String,
}

impl fmt::Debug for Registration {
    /// The token is a credential: only its first characters are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.token.chars().take(6).collect();
        f.debug_struct("Registration")
            .field("token", &format!("{prefix}…"))
            .finish_non_exhaustive()
    }
}

struct Seed {
    user_data: String,
    meta_data: String,
    network_config: Option<String>,
    expires_at: Instant,
    revoked: bool,
}

struct Inner {
    advertise: String,
    options: NocloudOptions,
    seeds: Mutex<HashMap<String, Seed>>,
}

/// The nocloud user-data server. A cheap [`Clone`] handle; serve
/// [`NocloudServer::router`] with axum on the address `advertise` names.
#[derive(Clone)]
pub struct NocloudServer {
    inner: Arc<Inner>,
}

impl fmt::Debug for NocloudServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NocloudServer")
            .field("advertise", &self.inner.advertise)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a request for a file under a token gets.
enum Lookup {
    Found(String),
    Missing,
    Gone,
    Unknown,
}

impl NocloudServer {
    /// A server whose seed URLs start with `advertise` (e.g.
    /// `http://10.0.0.2:8088`, the address guests can reach).
    pub fn new(advertise: impl Into<String>, options: NocloudOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                advertise: advertise.into().trim_end_matches('/').to_owned(),
                options,
                seeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers a seed without network-config.
    ///
    /// # Errors
    /// [`NocloudError::Random`] if the random source fails.
    pub fn register(
        &self,
        user_data: impl Into<String>,
        meta_data: impl Into<String>,
    ) -> Result<Registration, NocloudError> {
        self.register_with_network(user_data, meta_data, None)
    }

    /// Registers a seed, with a cloud-init `network-config` if given.
    ///
    /// # Errors
    /// [`NocloudError::Random`] if the random source fails.
    pub fn register_with_network(
        &self,
        user_data: impl Into<String>,
        meta_data: impl Into<String>,
        network_config: Option<String>,
    ) -> Result<Registration, NocloudError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| NocloudError::Random(e.to_string()))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut seeds = lock(&self.inner.seeds);
        // Forget seeds long past their TTL.
        let ttl = self.inner.options.ttl;
        seeds.retain(|_, s| s.expires_at + ttl > now);
        seeds.insert(
            token.clone(),
            Seed {
                user_data: user_data.into(),
                meta_data: meta_data.into(),
                network_config,
                expires_at: now + ttl,
                revoked: false,
            },
        );
        let url = format!("{}/nocloud/{token}/", self.inner.advertise);
        Ok(Registration { token, url })
    }

    /// Revokes a token at once; returns whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        let mut seeds = lock(&self.inner.seeds);
        match seeds.get_mut(token) {
            Some(seed) if !seed.revoked && seed.expires_at > Instant::now() => {
                seed.revoked = true;
                true
            }
            _ => false,
        }
    }

    /// Whether `token` still serves its files.
    pub fn is_live(&self, token: &str) -> bool {
        let seeds = lock(&self.inner.seeds);
        seeds
            .get(token)
            .is_some_and(|s| !s.revoked && s.expires_at > Instant::now())
    }

    fn lookup(&self, token: &str, file: &str) -> Lookup {
        let now = Instant::now();
        let mut seeds = lock(&self.inner.seeds);
        let Some(seed) = seeds.get_mut(token) else {
            return Lookup::Unknown;
        };
        if seed.revoked || seed.expires_at <= now {
            return Lookup::Gone;
        }
        match file {
            "user-data" => {
                let after_grace = now + self.inner.options.grace;
                if after_grace < seed.expires_at {
                    seed.expires_at = after_grace;
                }
                Lookup::Found(seed.user_data.clone())
            }
            "meta-data" => Lookup::Found(seed.meta_data.clone()),
            "vendor-data" => Lookup::Found(String::new()),
            "network-config" => seed
                .network_config
                .clone()
                .map_or(Lookup::Missing, Lookup::Found),
            _ => Lookup::Missing,
        }
    }

    /// The HTTP routes: `GET /nocloud/{token}/{file}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/nocloud/{token}/{file}", get(serve_file))
            .with_state(self.clone())
    }
}

async fn serve_file(
    State(server): State<NocloudServer>,
    Path((token, file)): Path<(String, String)>,
) -> Response {
    let (status, body) = match server.lookup(&token, &file) {
        Lookup::Found(body) => (StatusCode::OK, body),
        Lookup::Missing | Lookup::Unknown => (StatusCode::NOT_FOUND, String::new()),
        Lookup::Gone => (StatusCode::GONE, String::new()),
    };
    if status == StatusCode::OK {
        tracing::info!(file = %file, "nocloud seed file served");
    } else {
        tracing::debug!(file = %file, %status, "nocloud seed file refused");
    }
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The SMBIOS system serial that makes a nocloud guest fetch its seed from
/// `url`: `ds=nocloud-net;s=<url>`.
///
/// Talos reads the network seed only when the datasource is spelled
/// `nocloud-net` (its nocloud platform ignores `s=` under `ds=nocloud`);
/// cloud-init accepts both spellings. The URL should end in `/`.
pub fn smbios_serial(url: &str) -> String {
    format!("ds=nocloud-net;s={url}")
}

/// [`smbios_serial`] base64-encoded, as Proxmox takes it in
/// `smbios1: serial=<value>,base64=1` (the `;` would otherwise split the
/// option string).
pub fn smbios_serial_base64(url: &str) -> String {
    STANDARD.encode(smbios_serial(url))
}

/// A `#cloud-config` for a kubeadm image: hostname, kubelet labels and
/// taints (through `KUBELET_EXTRA_ARGS`, which the kubeadm packages' kubelet
/// unit reads) and the join.
pub const DEFAULT_KUBEADM_TEMPLATE: &str = "#cloud-config
hostname: {{hostname}}
fqdn: {{hostname}}
write_files:
  - path: /etc/default/kubelet
    content: |
      KUBELET_EXTRA_ARGS=--node-labels={{node_labels}} --register-with-taints={{register_with_taints}}
runcmd:
  - {{join_command}} --node-name {{hostname}}
";

/// The values a kubeadm cloud-init template can use.
#[derive(Clone, PartialEq, Eq)]
pub struct KubeadmVars {
    /// `{{hostname}}`: the node name.
    pub hostname: String,
    /// `{{join_command}}`: `kubeadm join <endpoint> --token ...
    /// --discovery-token-ca-cert-hash sha256:...` (a secret).
    pub join_command: String,
    /// Rendered as `{{node_labels}}`: `k=v,k2=v2`.
    pub labels: BTreeMap<String, String>,
    /// Rendered as `{{register_with_taints}}`: `k=v:Effect,...`.
    pub taints: Vec<Taint>,
}

impl fmt::Debug for KubeadmVars {
    /// The join command carries the bootstrap token and is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeadmVars")
            .field("hostname", &self.hostname)
            .field("join_command", &"<redacted>")
            .field("labels", &self.labels)
            .field("taints", &self.taints)
            .finish()
    }
}

impl KubeadmVars {
    /// The variables by name.
    pub fn variables(&self) -> BTreeMap<&'static str, String> {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let taints: Vec<String> = self.taints.iter().map(ToString::to_string).collect();
        BTreeMap::from([
            ("hostname", self.hostname.clone()),
            ("join_command", self.join_command.clone()),
            ("node_labels", labels.join(",")),
            ("register_with_taints", taints.join(",")),
        ])
    }
}

/// Renders a kubeadm cloud-init template with [`KubeadmVars`].
///
/// # Errors
/// See [`render_template`].
pub fn render_kubeadm_cloud_config(
    template: &str,
    vars: &KubeadmVars,
) -> Result<String, NocloudError> {
    render_template(template, &vars.variables())
}

/// Replaces `{{name}}` (spaces inside the braces allowed) with the value
/// of `name`.
///
/// # Errors
/// [`NocloudError::UnknownVariable`] for a name not in `vars`,
/// [`NocloudError::Unterminated`] for a `{{` without `}}` on its line,
/// [`NocloudError::MultilineValue`] for a used value with a line break.
pub fn render_template(
    template: &str,
    vars: &BTreeMap<&str, String>,
) -> Result<String, NocloudError> {
    let mut out = String::with_capacity(template.len());
    for (index, line) in template.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(NocloudError::Unterminated { line: index + 1 })?;
            let name = after[..end].trim();
            let value = vars
                .get(name)
                .ok_or_else(|| NocloudError::UnknownVariable {
                    name: name.to_owned(),
                    line: index + 1,
                    known: vars.keys().copied().collect::<Vec<_>>().join(", "),
                })?;
            if value.contains('\n') || value.contains('\r') {
                return Err(NocloudError::MultilineValue {
                    name: name.to_owned(),
                });
            }
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let server = NocloudServer::new("http://10.0.0.2:8088/", NocloudOptions::default());
        let a = server.register("a", "").unwrap();
        let b = server.register("b", "").unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 43, "256 bits in unpadded base64url");
        assert_eq!(a.url, format!("http://10.0.0.2:8088/nocloud/{}/", a.token));
        assert!(!format!("{a:?}").contains(&a.token));
    }

    #[test]
    fn unknown_template_variables_are_named_with_their_line() {
        let vars = BTreeMap::from([("hostname", "w".to_owned())]);
        let err = render_template("#cloud-config\nhostname: {{ hostnme }}\n", &vars).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloud-init template line 2: unknown variable {{hostnme}} (known: hostname)"
        );
        assert_eq!(err.category(), "unknown_variable");
    }

    #[test]
    fn an_unclosed_variable_is_an_error() {
        let err = render_template("a: {{hostname\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.category(), "unterminated");
    }

    #[test]
    fn a_value_with_a_line_break_is_refused() {
        let vars = BTreeMap::from([("x", "a\nb".to_owned())]);
        let err = render_template("v: {{x}}\n", &vars).unwrap_err();
        assert_eq!(err.category(), "multiline_value");
    }

    #[test]
    fn the_serial_names_the_network_datasource() {
        assert_eq!(
            smbios_serial("http://10.0.0.2:8088/nocloud/t/"),
            "ds=nocloud-net;s=http://10.0.0.2:8088/nocloud/t/"
        );
    }
}
