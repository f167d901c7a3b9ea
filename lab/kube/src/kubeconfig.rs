//! Renders the kubeconfig that points kubectl and kube-rs at the emulator.

use std::net::SocketAddr;

/// Errors of this module (rendering cannot fail; kept for the module convention).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {}

/// A kubeconfig YAML with one cluster, user and context, all named
/// `tidepool-lab`, for the plain-HTTP server at `addr`.
pub fn render_kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: tidepool-lab
  cluster:
    server: http://{addr}
users:
- name: tidepool-lab
  user:
    token: tidepool-lab
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
