//! The Talos client against the Talos emulator over real TLS on
//! 127.0.93.x loopback addresses: maintenance apply (trust on first use
//! and pinned), then the mutual-TLS client from the lab's talosconfig.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_lab_sim::{Faults, SimClock};
use tidepool_lab_talos::{
    BootMode, MachinePhase, ServingMode, TalosDurations, TalosEvent, TalosLab,
};
use tidepool_talos::{
    RebootMode, Sha256Fingerprint, TalosClient, TalosError, Talosconfig, WorkerIdentity,
    apply_maintenance, probe_maintenance_certificate, render_worker_config,
};
use tokio::sync::broadcast;

const PORT: u16 = 50000;
const TIMEOUT: Duration = Duration::from_secs(10);
const BASE: &str = include_str!("fixtures/worker-v1.10.yaml");

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 93, last])
}

fn lab() -> TalosLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TalosLab::new(
        SimClock::new(1000.0),
        Arc::new(Faults::new(7)),
        TalosDurations::default(),
    )
    .unwrap()
    .with_port(PORT)
}

fn worker(hostname: &str) -> WorkerIdentity {
    WorkerIdentity {
        hostname: hostname.to_owned(),
        labels: BTreeMap::from([("node-pool".to_owned(), "burst".to_owned())]),
        annotations: BTreeMap::new(),
        taints: vec![Taint::new(
            "workload-type",
            "burst",
            TaintEffect::NoSchedule,
        )],
    }
}

async fn wait_for(
    rx: &mut broadcast::Receiver<TalosEvent>,
    mut wanted: impl FnMut(&TalosEvent) -> bool,
) -> TalosEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = rx.recv().await.unwrap();
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event within 10 s")
}

/// Boots `ip` in maintenance, applies a rendered config without a pin and
/// waits for the configured API.
async fn install(lab: &TalosLab, ip: IpAddr, hostname: &str) {
    let mut events = lab.subscribe();
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let config = render_worker_config(BASE, &worker(hostname)).unwrap();
    apply_maintenance(ip, PORT, config.as_bytes(), None, TIMEOUT)
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Booted { ip: i, mode: ServingMode::Configured } if *i == ip),
    )
    .await;
}

async fn admin_client(lab: &TalosLab, ip: IpAddr) -> TalosClient {
    let config = Talosconfig::parse(&lab.talosconfig("lab", &[ip])).unwrap();
    TalosClient::connect(&config.current().unwrap(), TIMEOUT)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rendered_config_applied_in_maintenance_brings_the_machine_up_configured() {
    let lab = lab();
    let ip = ip(10);
    let mut events = lab.subscribe();
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let config = render_worker_config(BASE, &worker("burst-aaaaa")).unwrap();

    let outcome = apply_maintenance(ip, PORT, config.as_bytes(), None, TIMEOUT)
        .await
        .unwrap();
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);

    let applied = wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::ConfigApplied { ip: i, .. } if *i == ip),
    )
    .await;
    let TalosEvent::ConfigApplied { config_yaml, .. } = applied else {
        unreachable!()
    };
    assert_eq!(config_yaml, config);
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Booted { ip: i, mode: ServingMode::Configured } if *i == ip),
    )
    .await;
    let state = lab.machine_state(ip).unwrap();
    assert_eq!(state.phase, MachinePhase::Running);
    assert_eq!(state.hostname, "burst-aaaaa");
    let cfg = state.config.unwrap();
    assert_eq!(cfg.node_labels()["node-pool"], "burst");
    assert_eq!(cfg.register_with_taints()[0].key, "workload-type");
    lab.power_off(ip).await;
}

#[tokio::test]
async fn an_apply_pinned_to_the_probed_certificate_is_accepted() {
    let lab = lab();
    let ip = ip(11);
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let presented = probe_maintenance_certificate(ip, PORT, TIMEOUT)
        .await
        .unwrap();
    // Pin the key the way the Talos console prints it (base64 SPKI hash).
    let pin = Sha256Fingerprint::parse(&presented.spki_sha256.unwrap().to_base64()).unwrap();
    let config = render_worker_config(BASE, &worker("burst-bbbbb")).unwrap();
    apply_maintenance(ip, PORT, config.as_bytes(), Some(pin), TIMEOUT)
        .await
        .unwrap();
    lab.power_off(ip).await;
}

#[tokio::test]
async fn an_apply_to_a_certificate_that_does_not_match_the_pin_is_refused_before_sending() {
    let lab = lab();
    let ip = ip(12);
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let pin = Sha256Fingerprint::of(b"some other machine");
    let config = render_worker_config(BASE, &worker("burst-ccccc")).unwrap();
    let err = apply_maintenance(ip, PORT, config.as_bytes(), Some(pin), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "fingerprint_mismatch", "{err}");
    assert!(!err.is_retryable());
    let state = lab.machine_state(ip).unwrap();
    assert_eq!(state.phase, MachinePhase::Maintenance);
    assert!(state.config.is_none(), "nothing was applied");
    lab.power_off(ip).await;
}

#[tokio::test]
async fn an_invalid_config_is_rejected_with_the_nodes_message() {
    let lab = lab();
    let ip = ip(13);
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let err = apply_maintenance(
        ip,
        PORT,
        b"version: v1alpha1\nmachine:\n  type: bogus\n",
        None,
        TIMEOUT,
    )
    .await
    .unwrap_err();
    let TalosError::ConfigRejected { message } = &err else {
        panic!("expected ConfigRejected, got {err:?}");
    };
    assert!(message.contains("unknown machine type"), "{message}");
    assert_eq!(err.category(), "config_rejected");
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_machine_that_is_not_listening_yet_is_not_ready_and_retryable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = apply_maintenance(ip(14), PORT, b"x", None, TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "not_ready", "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_admin_talosconfig_client_reads_restarts_and_reboots_a_configured_node() {
    let lab = lab();
    let ip = ip(20);
    install(&lab, ip, "burst-ddddd").await;
    let client = admin_client(&lab, ip).await;

    let version = client.version().await.unwrap();
    assert_eq!(version.tag, tidepool_lab_talos::DEFAULT_TALOS_VERSION);
    assert_eq!(client.hostname().await.unwrap(), "burst-ddddd");
    let services = client.service_list().await.unwrap();
    let kubelet = services.iter().find(|s| s.id == "kubelet").unwrap();
    assert_eq!(kubelet.state, "Running");

    let mut events = lab.subscribe();
    let resp = client.service_restart("kubelet").await.unwrap();
    assert!(resp.contains("kubelet"), "{resp}");
    wait_for(&mut events, |e| matches!(e, TalosEvent::ServiceRestarted { ip: i, service } if *i == ip && service == "kubelet")).await;

    client.reboot(RebootMode::Default).await.unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Rebooted { ip: i } if *i == ip),
    )
    .await;
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Booted { ip: i, mode: ServingMode::Configured } if *i == ip),
    )
    .await;
    // After the reboot a new connection works again.
    let client = admin_client(&lab, ip).await;
    assert_eq!(client.hostname().await.unwrap(), "burst-ddddd");
    lab.power_off(ip).await;
}

#[tokio::test]
async fn the_client_loads_pkcs8_version_1_and_version_2_keys() {
    let lab = lab();
    let ip = ip(22);
    install(&lab, ip, "burst-fffff").await;
    for text in [
        lab.talosconfig("lab", &[ip]),
        lab.talosconfig_with_pkcs8_v2_key("lab", &[ip]),
    ] {
        let key_b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("key: "))
            .unwrap();
        let key_pem = String::from_utf8(STANDARD.decode(key_b64).unwrap()).unwrap();
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).unwrap();
        let version = der[4];
        let config = Talosconfig::parse(&text).unwrap();
        let client = TalosClient::connect(&config.current().unwrap(), TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("PKCS#8 version {}: {e}", version + 1));
        assert_eq!(client.hostname().await.unwrap(), "burst-fffff");
    }
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_talosconfig_with_the_ed25519_private_key_label_works() {
    let lab = lab();
    let ip = ip(21);
    install(&lab, ip, "burst-eeeee").await;
    let text = lab.talosconfig_with_talos_key_label("lab", &[ip]);
    let key_b64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .unwrap();
    let key_pem = String::from_utf8(STANDARD.decode(key_b64).unwrap()).unwrap();
    assert!(key_pem.starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));

    let config = Talosconfig::parse(&text).unwrap();
    let client = TalosClient::connect(&config.current().unwrap(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(client.hostname().await.unwrap(), "burst-eeeee");
    assert_eq!(
        client.version().await.unwrap().tag,
        tidepool_lab_talos::DEFAULT_TALOS_VERSION
    );
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_reader_may_read_but_is_denied_a_reboot() {
    let lab = lab();
    let ip = ip(22);
    install(&lab, ip, "burst-fffff").await;
    let reader = lab.issue_client("viewer", &["os:reader"]).unwrap();
    let text = format!(
        "context: viewer\ncontexts:\n  viewer:\n    endpoints:\n      - {ip}\n    ca: {}\n    crt: {}\n    key: {}\n",
        STANDARD.encode(lab.ca()),
        STANDARD.encode(&reader.cert_pem),
        STANDARD.encode(&reader.key_pem),
    );
    let config = Talosconfig::parse(&text).unwrap();
    let client = TalosClient::connect(&config.current().unwrap(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(client.hostname().await.unwrap(), "burst-fffff");
    let err = client.reboot(RebootMode::Default).await.unwrap_err();
    let TalosError::PermissionDenied { method, message } = &err else {
        panic!("expected PermissionDenied, got {err:?}");
    };
    assert_eq!(method, "Reboot");
    assert_eq!(message, "not authorized");
    assert_eq!(err.category(), "permission_denied");
    assert_eq!(lab.machine_state(ip).unwrap().phase, MachinePhase::Running);
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_configured_node_refuses_a_client_without_a_certificate() {
    let lab = lab();
    let ip = ip(23);
    install(&lab, ip, "burst-ggggg").await;
    let err = apply_maintenance(ip, PORT, b"x", None, TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "tls", "{err:?}");
    assert!(!err.is_retryable());
    lab.power_off(ip).await;
}

#[tokio::test]
async fn calls_through_the_nodes_header_reach_the_named_node() {
    let lab = lab();
    let (a, b) = (ip(24), ip(25));
    install(&lab, a, "burst-hhhhh").await;
    install(&lab, b, "burst-iiiii").await;
    let client = admin_client(&lab, a).await;
    assert_eq!(
        client.for_node(b.to_string()).hostname().await.unwrap(),
        "burst-iiiii"
    );
    lab.power_off(b).await;
    let err = client.for_node(b.to_string()).hostname().await.unwrap_err();
    assert_eq!(err.category(), "node_error", "{err:?}");
    lab.power_off(a).await;
}
