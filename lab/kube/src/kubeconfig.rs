//! Renders the kubeconfig that points kubectl and kube-rs at the emulator.

use std::net::SocketAddr;

/// Errors of this module (rendering cannot fail; kept for the module convention).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {}

/// A kubeconfig YAML with one cluster, user and context, all named
/// `tidepool-lab`, for the plain-HTTP server at `addr`.
pub fn render_kubeconfig(addr: SocketAddr) -> String {
    render_kubeconfig_for(&format!("http://{addr}"), "tidepool-lab", None)
}

/// The same kubeconfig for any `server` URL and bearer `token`, trusting
/// the base64 PEM `ca_data` when given (an HTTPS server with its own CA).
pub fn render_kubeconfig_for(server: &str, token: &str, ca_data: Option<&str>) -> String {
    let ca = ca_data
        .map(|ca| format!("\n    certificate-authority-data: {ca}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: tidepool-lab
  cluster:
    server: {server}{ca}
users:
- name: tidepool-lab
  user:
    token: {token}
contexts:
- name: tidepool-lab
  context:
    cluster: tidepool-lab
    user: tidepool-lab
    namespace: default
current-context: tidepool-lab
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_points_at_the_plain_http_address() {
        let text = render_kubeconfig(SocketAddr::from(([127, 0, 0, 1], 6443)));
        assert!(text.contains("server: http://127.0.0.1:6443"));
        assert!(text.contains("current-context: tidepool-lab"));
    }
}
