//! The nocloud seed server over real HTTP (reqwest), token expiry, and the
//! kubeadm cloud-config as the lab's simulated guest reads it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_lab::guest::{KubeadmJoin, nocloud_url};
use tidepool_talos::{
    DEFAULT_KUBEADM_TEMPLATE, KubeadmVars, NocloudOptions, NocloudServer,
    render_kubeadm_cloud_config, smbios_serial,
};

async fn start(options: NocloudOptions) -> (NocloudServer, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = NocloudServer::new(format!("http://{addr}"), options);
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (server, reqwest::Client::new())
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_guest_fetches_its_seed_once_and_the_token_then_expires() {
    let (server, http) = start(NocloudOptions {
        ttl: Duration::from_secs(600),
        grace: Duration::from_millis(300),
    })
    .await;
    let reg = server
        .register("version: v1alpha1\n", "local-hostname: burst-1\n")
        .unwrap();

    assert_eq!(
        get(&http, &format!("{}meta-data", reg.url)).await,
        (200, "local-hostname: burst-1\n".to_owned())
    );
    assert_eq!(
        get(&http, &format!("{}user-data", reg.url)).await,
        (200, "version: v1alpha1\n".to_owned())
    );
    // Within the grace period the rest of the seed is still served.
    assert_eq!(
        get(&http, &format!("{}vendor-data", reg.url)).await,
        (200, String::new())
    );
    assert_eq!(
        get(&http, &format!("{}network-config", reg.url)).await.0,
        404
    );
    assert_eq!(get(&http, &format!("{}meta-data", reg.url)).await.0, 200);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&http, &format!("{}user-data", reg.url)).await.0, 410);
    assert_eq!(get(&http, &format!("{}meta-data", reg.url)).await.0, 410);
    assert!(!server.is_live(&reg.token));
}

#[tokio::test]
async fn a_token_expires_at_its_ttl_even_if_never_used() {
    let (server, http) = start(NocloudOptions {
        ttl: Duration::from_millis(200),
        grace: Duration::from_secs(60),
    })
    .await;
    let reg = server.register("x", "").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&http, &format!("{}user-data", reg.url)).await.0, 410);
}

#[tokio::test]
async fn a_revoked_token_is_gone_and_an_unknown_one_is_not_found() {
    let (server, http) = start(NocloudOptions::default()).await;
    let reg = server
        .register_with_network("x", "", Some("version: 2\n".to_owned()))
        .unwrap();
    assert_eq!(
        get(&http, &format!("{}network-config", reg.url)).await,
        (200, "version: 2\n".to_owned())
    );
    assert!(server.revoke(&reg.token));
    assert!(
        !server.revoke(&reg.token),
        "revoking twice reports nothing live"
    );
    assert_eq!(get(&http, &format!("{}user-data", reg.url)).await.0, 410);
    let unknown = reg
        .url
        .replace(&reg.token, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(get(&http, &format!("{unknown}user-data")).await.0, 404);
}

#[tokio::test]
async fn the_smbios_serial_leads_the_lab_guest_to_the_seed_url() {
    let (server, _) = start(NocloudOptions::default()).await;
    let reg = server.register("x", "").unwrap();
    assert_eq!(nocloud_url(&smbios_serial(&reg.url)), Some(reg.url.clone()));
}

#[test]
fn the_rendered_kubeadm_cloud_config_is_a_join_the_lab_guest_accepts() {
    let vars = KubeadmVars {
        hostname: "burst-7f3k2".to_owned(),
        join_command: "kubeadm join 10.0.0.10:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:1111111111111111111111111111111111111111111111111111111111111111".to_owned(),
        labels: BTreeMap::from([
            ("node-pool".to_owned(), "burst".to_owned()),
            ("worker-type".to_owned(), "burst".to_owned()),
        ]),
        taints: vec![
            Taint::new("workload-type", "burst", TaintEffect::NoSchedule),
            Taint::new("preemptible", "true", TaintEffect::PreferNoSchedule),
        ],
    };
    let rendered = render_kubeadm_cloud_config(DEFAULT_KUBEADM_TEMPLATE, &vars).unwrap();
    insta::assert_snapshot!(rendered);
    assert!(!format!("{vars:?}").contains("abcdef.0123456789abcdef"));

    let join = KubeadmJoin::parse(&rendered).expect("the lab guest finds a valid kubeadm join");
    assert_eq!(join.node_name.as_deref(), Some("burst-7f3k2"));
    assert_eq!(join.labels, vars.labels);
    let taints: Vec<(String, String, String)> = join
        .taints
        .iter()
        .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
        .collect();
    assert_eq!(
        taints,
        vec![
            (
                "workload-type".to_owned(),
                "burst".to_owned(),
                "NoSchedule".to_owned()
            ),
            (
                "preemptible".to_owned(),
                "true".to_owned(),
                "PreferNoSchedule".to_owned()
            ),
        ]
    );
    let parsed: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap();
    assert_eq!(parsed["hostname"], "burst-7f3k2");
}
