//! The generated tonic client of `tidepool-talos-proto` against the Talos
//! emulator over real TLS on 127.0.77.x loopback addresses.

// Test helpers outside #[test] functions fail loudly, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_lab_sim::{FaultRule, Faults, KeyAlgorithm, Service, SimClock, TestCa};
use tidepool_lab_talos::{
    ApplyMode, BootMode, MAINTENANCE_UNIMPLEMENTED, MachinePhase, ServingMode, TalosDurations,
    TalosEvent, TalosLab, UPGRADE_BOOT_FAULT,
};
use tidepool_talos_proto::machine::machine_service_client::MachineServiceClient;
use tidepool_talos_proto::machine::{
    ApplyConfigurationRequest, RebootRequest, ServiceRestartRequest, ShutdownRequest,
    UpgradeRequest, apply_configuration_request::Mode,
};
use tokio::sync::broadcast;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const PORT: u16 = 50000;

fn worker_config(hostname: &str) -> String {
    format!(
        "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n  type: worker\n  token: abc.def\n  ca:\n    crt: LS0tLS1CRUdJTg==\n    key: \"\"\n  network:\n    hostname: {hostname}\n  nodeLabels:\n    tidepool.io/pool: burst\ncluster:\n  controlPlane:\n    endpoint: https://127.0.0.1:6443\n  ca:\n    crt: LS0tLS1CRUdJTg==\n    key: \"\"\n"
    )
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 77, last])
}

fn lab(faults: Arc<Faults>) -> TalosLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // 1000× faster: a 45 s install takes 45 ms.
    TalosLab::new(SimClock::new(1000.0), faults, TalosDurations::default())
        .unwrap()
        .with_port(PORT)
}

async fn channel(
    ip: IpAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(ip.to_string());
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{ip}:{PORT}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn maintenance_client(lab: &TalosLab, ip: IpAddr) -> MachineServiceClient<Channel> {
    let ca = lab.maintenance_ca(ip).unwrap();
    MachineServiceClient::new(channel(ip, &ca, None).await.unwrap())
}

async fn admin_client(lab: &TalosLab, ip: IpAddr) -> MachineServiceClient<Channel> {
    let admin = lab.admin_identity();
    MachineServiceClient::new(
        channel(ip, lab.ca(), Some((&admin.cert_pem, &admin.key_pem)))
            .await
            .unwrap(),
    )
}

fn apply(config: &str, mode: Mode) -> ApplyConfigurationRequest {
    ApplyConfigurationRequest {
        data: config.as_bytes().to_vec(),
        mode: mode as i32,
        dry_run: false,
        try_mode_timeout: None,
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

/// Boots `ip` in maintenance, applies a worker config and waits until the
/// configured API is up.
async fn install_worker(lab: &TalosLab, ip: IpAddr, hostname: &str) {
    let mut events = lab.subscribe();
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut client = maintenance_client(lab, ip).await;
    client
        .apply_configuration(apply(&worker_config(hostname), Mode::Auto))
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Booted { ip: i, mode: ServingMode::Configured } if *i == ip),
    )
    .await;
}

#[tokio::test]
async fn maintenance_mode_refuses_every_method_but_apply_with_the_talos_errors() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(1);
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut client = maintenance_client(&lab, ip).await;

    let version = client.version(()).await.unwrap_err();
    assert_eq!(version.code(), Code::Unimplemented);
    assert_eq!(version.message(), MAINTENANCE_UNIMPLEMENTED);
    assert_eq!(
        version.message(),
        "API is not implemented in maintenance mode"
    );

    let reset = client
        .reset(tidepool_talos_proto::machine::ResetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reset.message(), MAINTENANCE_UNIMPLEMENTED);

    let hostname = client.hostname(()).await.unwrap_err();
    assert_eq!(hostname.code(), Code::Unimplemented);
    assert_eq!(hostname.message(), "method Hostname not implemented");

    let no_reboot = client
        .apply_configuration(apply(&worker_config("w"), Mode::NoReboot))
        .await
        .unwrap_err();
    assert_eq!(no_reboot.code(), Code::Unimplemented);
    assert_eq!(
        no_reboot.message(),
        "apply configuration --mode='no-reboot' is not supported in maintenance mode"
    );
    lab.power_off(ip).await;
}

#[tokio::test]
async fn invalid_configs_are_rejected_with_the_talos_messages_and_the_machine_stays_in_maintenance()
{
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(2);
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut client = maintenance_client(&lab, ip).await;

    let not_yaml = client
        .apply_configuration(apply("machine: [unclosed\n", Mode::Auto))
        .await
        .unwrap_err();
    assert_eq!(not_yaml.code(), Code::Unknown);
    assert!(
        not_yaml
            .message()
            .starts_with("failed to parse config: decode error: "),
        "{}",
        not_yaml.message()
    );

    let no_version = client
        .apply_configuration(apply("hostname: w-1\n", Mode::Auto))
        .await
        .unwrap_err();
    assert_eq!(no_version.code(), Code::Unknown);
    assert_eq!(
        no_version.message(),
        "failed to parse config: error decoding document /v1alpha1/ (line 1): missing kind"
    );

    let bogus = worker_config("w").replace("type: worker", "type: bogus");
    let err = client
        .apply_configuration(apply(&bogus, Mode::Auto))
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "configuration validation failed: 1 error occurred:\n\t* unknown machine type \"bogus\"\n\n"
    );

    assert_eq!(
        lab.machine_state(ip).unwrap().phase,
        MachinePhase::Maintenance
    );
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_worker_config_installs_the_machine_which_then_answers_only_over_mtls() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(3);
    let mut events = lab.subscribe();
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut maintenance = maintenance_client(&lab, ip).await;
    let config = worker_config("burst-1");
    let reply = maintenance
        .apply_configuration(apply(&config, Mode::Auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.messages.len(), 1);
    assert!(reply.messages[0].metadata.is_none());

    let applied = wait_for(&mut events, |e| {
        matches!(e, TalosEvent::ConfigApplied { .. })
    })
    .await;
    assert_eq!(
        applied,
        TalosEvent::ConfigApplied {
            ip,
            config_yaml: config.clone(),
            mode: ApplyMode::Reboot
        }
    );
    wait_for(&mut events, |e| {
        matches!(
            e,
            TalosEvent::Booted {
                mode: ServingMode::Configured,
                ..
            }
        )
    })
    .await;

    let mut admin = admin_client(&lab, ip).await;
    let version = admin.version(()).await.unwrap().into_inner();
    assert_eq!(version.messages[0].version.as_ref().unwrap().tag, "v1.10.6");
    let hostname = admin.hostname(()).await.unwrap().into_inner();
    assert_eq!(hostname.messages[0].hostname, "burst-1");
    assert!(hostname.messages[0].metadata.is_none());

    // Without a client certificate the configured API refuses the call.
    let anonymous = async {
        let ch = channel(ip, lab.ca(), None).await?;
        MachineServiceClient::new(ch)
            .version(())
            .await
            .map_err(|s| s.to_string())
            .map(|_| ())
            .map_err(|e| e.into())
    };
    let anonymous: Result<(), Box<dyn std::error::Error>> = anonymous.await;
    assert!(anonymous.is_err());

    // A certificate from another CA is refused.
    let other = TestCa::new("other", KeyAlgorithm::Ed25519).unwrap();
    let stranger = other.issue_client("admin", &["os:admin"]).unwrap();
    let refused: Result<(), Box<dyn std::error::Error>> = async {
        let ch = channel(ip, lab.ca(), Some((&stranger.cert_pem, &stranger.key_pem))).await?;
        MachineServiceClient::new(ch)
            .version(())
            .await
            .map(|_| ())
            .map_err(|s| s.into())
    }
    .await;
    assert!(refused.is_err());

    // A reader may read but not reboot.
    let reader = lab.issue_client("viewer", &["os:reader"]).unwrap();
    let mut reader = MachineServiceClient::new(
        channel(ip, lab.ca(), Some((&reader.cert_pem, &reader.key_pem)))
            .await
            .unwrap(),
    );
    assert!(reader.version(()).await.is_ok());
    let denied = reader.reboot(RebootRequest { mode: 0 }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "not authorized");

    // An operator may not apply configuration.
    let operator = lab.issue_client("op", &["os:operator"]).unwrap();
    let mut operator = MachineServiceClient::new(
        channel(ip, lab.ca(), Some((&operator.cert_pem, &operator.key_pem)))
            .await
            .unwrap(),
    );
    let denied = operator
        .apply_configuration(apply(&config, Mode::NoReboot))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    lab.power_off(ip).await;
}

#[tokio::test]
async fn an_injected_fault_fails_apply_configuration_once_then_the_apply_succeeds() {
    let faults = Arc::new(Faults::new(7));
    let lab = lab(faults.clone());
    let ip = ip(4);
    faults.add_rule(FaultRule {
        service: Service::Talos,
        op: format!("ApplyConfiguration:{ip}"),
        error_rate: 1.0,
        status: Some(14),
        message: Some("simulated network blip".into()),
        latency_ms: 0,
        times: Some(1),
    });
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut client = maintenance_client(&lab, ip).await;
    let err = client
        .apply_configuration(apply(&worker_config("w-4"), Mode::Auto))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "simulated network blip");
    assert!(
        client
            .apply_configuration(apply(&worker_config("w-4"), Mode::Auto))
            .await
            .is_ok()
    );
    lab.power_off(ip).await;
}

#[tokio::test]
async fn reboot_upgrade_and_shutdown_follow_the_talos_lifecycle() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(5);
    install_worker(&lab, ip, "w-5").await;
    let mut events = lab.subscribe();

    let mut admin = admin_client(&lab, ip).await;
    let reply = admin
        .reboot(RebootRequest { mode: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.messages[0].actor_id.is_empty());
    wait_for(&mut events, |e| matches!(e, TalosEvent::Rebooted { .. })).await;
    wait_for(&mut events, |e| matches!(e, TalosEvent::Booted { .. })).await;

    let mut admin = admin_client(&lab, ip).await;
    let upgrade = admin
        .upgrade(UpgradeRequest {
            image: "ghcr.io/siderolabs/installer:v1.11.2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upgrade.messages[0].ack, "Upgrade request received");
    wait_for(&mut events, |e| {
        matches!(e, TalosEvent::UpgradeRequested { .. })
    })
    .await;
    wait_for(&mut events, |e| matches!(e, TalosEvent::Booted { .. })).await;
    let mut admin = admin_client(&lab, ip).await;
    let version = admin.version(()).await.unwrap().into_inner();
    assert_eq!(version.messages[0].version.as_ref().unwrap().tag, "v1.11.2");

    let services = admin.service_list(()).await.unwrap().into_inner();
    let kubelet = services.messages[0]
        .services
        .iter()
        .find(|s| s.id == "kubelet")
        .unwrap();
    assert_eq!(kubelet.state, "Running");
    assert!(kubelet.health.as_ref().unwrap().healthy);

    let restarted = admin
        .service_restart(ServiceRestartRequest {
            id: "kubelet".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restarted.messages[0].resp, "Service \"kubelet\" restarted");
    wait_for(&mut events, |e| {
        matches!(e, TalosEvent::ServiceRestarted { .. })
    })
    .await;
    let refused = admin
        .service_restart(ServiceRestartRequest { id: "apid".into() })
        .await
        .unwrap_err();
    assert_eq!(
        refused.message(),
        "service \"apid\" doesn't support restart operation via API"
    );

    admin
        .shutdown(ShutdownRequest { force: false })
        .await
        .unwrap();
    wait_for(&mut events, |e| {
        matches!(e, TalosEvent::ShutdownRequested { .. })
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while lab.machine_state(ip).unwrap().phase != MachinePhase::Off {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_nodes_header_fans_out_and_tags_each_reply_with_the_node() {
    let lab = lab(Arc::new(Faults::new(1)));
    let (a, b) = (ip(6), ip(7));
    lab.boot_machine(
        a,
        BootMode::Configured {
            config_yaml: worker_config("node-a"),
        },
    )
    .await
    .unwrap();
    lab.boot_machine(
        b,
        BootMode::Configured {
            config_yaml: worker_config("node-b"),
        },
    )
    .await
    .unwrap();
    let mut admin = admin_client(&lab, a).await;
    let mut request = tonic::Request::new(());
    for node in [a.to_string(), b.to_string(), ip(250).to_string()] {
        request
            .metadata_mut()
            .append("nodes", node.parse().unwrap());
    }
    let reply = admin.hostname(request).await.unwrap().into_inner();
    let got: Vec<(String, String, bool)> = reply
        .messages
        .iter()
        .map(|m| {
            let md = m.metadata.clone().unwrap();
            (md.hostname, m.hostname.clone(), md.error.is_empty())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (a.to_string(), "node-a".to_owned(), true),
            (b.to_string(), "node-b".to_owned(), true),
            (ip(250).to_string(), String::new(), false),
        ]
    );
    lab.power_off_all().await;
}

#[tokio::test]
async fn a_machine_booted_configured_takes_its_hostname_from_a_hostname_config_document() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(8);
    let config = worker_config("x").replace("  network:\n    hostname: x\n", "")
        + "---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: from-doc\n";
    lab.boot_machine(
        ip,
        BootMode::Configured {
            config_yaml: config,
        },
    )
    .await
    .unwrap();
    let mut admin = admin_client(&lab, ip).await;
    let reply = admin.hostname(()).await.unwrap().into_inner();
    assert_eq!(reply.messages[0].hostname, "from-doc");
    lab.power_off(ip).await;
    assert!(
        channel(ip, lab.ca(), None).await.is_err(),
        "a powered-off machine accepts no connection"
    );
}

#[tokio::test]
async fn the_talosconfig_carries_the_lab_ca_and_an_admin_identity() {
    let lab = lab(Arc::new(Faults::new(1)));
    let text = lab.talosconfig("tidepool-lab", &[ip(9)]);
    assert!(text.starts_with("context: tidepool-lab\ncontexts:\n    tidepool-lab:\n"));
    assert!(text.contains("- 127.0.77.9\n"));
    use base64::Engine;
    let field = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}: ")))
            .unwrap();
        let value = line.trim_start().trim_start_matches(&format!("{name}: "));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(field("ca"), lab.ca());
    assert_eq!(field("crt"), lab.admin_identity().cert_pem);
    assert!(field("key").starts_with("-----BEGIN PRIVATE KEY-----"));
    // OpenSSL (what grpcio and Python's ssl use) loads the key: it is
    // PKCS#8 version 1, as Go and real Talos write Ed25519 keys.
    let key_file = std::env::temp_dir().join(format!("lab-talos-key-{}.pem", std::process::id()));
    std::fs::write(&key_file, field("key")).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&key_file)
        .output()
        .expect("openssl on PATH");
    std::fs::remove_file(&key_file).unwrap();
    assert!(
        out.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ED25519 Private-Key"));
    let quirky = lab.talosconfig_with_talos_key_label("c", &[ip(9)]);
    let key_line = quirky
        .lines()
        .find(|l| l.trim_start().starts_with("key: "))
        .unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_line.trim_start().trim_start_matches("key: "))
        .unwrap();
    assert!(
        String::from_utf8(key)
            .unwrap()
            .starts_with("-----BEGIN ED25519 PRIVATE KEY-----")
    );
}

#[tokio::test]
async fn a_live_apply_renames_the_machine_and_a_bad_one_is_an_invalid_argument() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(10);
    lab.boot_machine(
        ip,
        BootMode::Configured {
            config_yaml: worker_config("before"),
        },
    )
    .await
    .unwrap();
    let mut events = lab.subscribe();
    let mut admin = admin_client(&lab, ip).await;
    let reply = admin
        .apply_configuration(apply(&worker_config("after"), Mode::Auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.messages[0].mode, Mode::NoReboot as i32);
    let applied = wait_for(&mut events, |e| {
        matches!(e, TalosEvent::ConfigApplied { .. })
    })
    .await;
    assert!(matches!(
        applied,
        TalosEvent::ConfigApplied {
            mode: ApplyMode::NoReboot,
            ..
        }
    ));
    let hostname = admin.hostname(()).await.unwrap().into_inner();
    assert_eq!(hostname.messages[0].hostname, "after");

    let bad = admin
        .apply_configuration(apply("machine: [", Mode::Auto))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_reset_that_wipes_state_and_reboots_returns_the_machine_to_maintenance() {
    let lab = lab(Arc::new(Faults::new(1)));
    let ip = ip(11);
    install_worker(&lab, ip, "w-11").await;
    let mut events = lab.subscribe();
    let mut admin = admin_client(&lab, ip).await;
    admin
        .reset(tidepool_talos_proto::machine::ResetRequest {
            graceful: true,
            reboot: true,
            system_partitions_to_wipe: vec![
                tidepool_talos_proto::machine::ResetPartitionSpec {
                    label: "STATE".into(),
                    wipe: true,
                },
                tidepool_talos_proto::machine::ResetPartitionSpec {
                    label: "EPHEMERAL".into(),
                    wipe: true,
                },
            ],
            user_disks_to_wipe: vec![],
            mode: 1,
        })
        .await
        .unwrap();
    let requested = wait_for(&mut events, |e| {
        matches!(e, TalosEvent::ResetRequested { .. })
    })
    .await;
    assert_eq!(
        requested,
        TalosEvent::ResetRequested {
            ip,
            graceful: true,
            reboot: true,
            wipe: tidepool_lab_talos::WipeMode::SystemDisk,
            partitions: vec!["STATE".into(), "EPHEMERAL".into()],
        }
    );
    wait_for(&mut events, |e| {
        matches!(
            e,
            TalosEvent::Booted {
                mode: ServingMode::Maintenance,
                ..
            }
        )
    })
    .await;
    let state = lab.machine_state(ip).unwrap();
    assert_eq!(state.phase, MachinePhase::Maintenance);
    assert!(state.config.is_none());
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_failed_upgrade_rolls_back_and_a_staged_one_reboots_twice() {
    let faults = Arc::new(Faults::new(1));
    let lab = lab(faults.clone());
    let ip = ip(12);
    install_worker(&lab, ip, "w-12").await;
    let before = lab.machine_state(ip).unwrap().version;
    let mut events = lab.subscribe();

    // The new image fails to boot: the machine comes back on the old one.
    faults.add_rule(FaultRule {
        service: Service::Talos,
        op: format!("{UPGRADE_BOOT_FAULT}:{ip}"),
        error_rate: 1.0,
        status: None,
        message: Some("kernel panic".into()),
        latency_ms: 0,
        times: Some(1),
    });
    let mut admin = admin_client(&lab, ip).await;
    admin
        .upgrade(UpgradeRequest {
            image: "ghcr.io/siderolabs/installer:v1.11.2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let rolled_back = wait_for(&mut events, |e| {
        matches!(e, TalosEvent::UpgradeRolledBack { .. })
    })
    .await;
    assert_eq!(
        rolled_back,
        TalosEvent::UpgradeRolledBack {
            ip,
            failed_version: "v1.11.2".into(),
            version: before.clone(),
        }
    );
    wait_for(&mut events, |e| matches!(e, TalosEvent::Booted { .. })).await;
    let mut admin = admin_client(&lab, ip).await;
    let version = admin.version(()).await.unwrap().into_inner();
    assert_eq!(version.messages[0].version.as_ref().unwrap().tag, before);

    // Staged: the machine goes down at once (no install phase while
    // serving) and comes back on the new version.
    let boots = lab.machine_state(ip).unwrap().boots;
    admin
        .upgrade(UpgradeRequest {
            image: "ghcr.io/siderolabs/installer:v1.11.3".into(),
            stage: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let requested = wait_for(&mut events, |e| {
        matches!(e, TalosEvent::UpgradeRequested { .. })
    })
    .await;
    assert!(matches!(
        requested,
        TalosEvent::UpgradeRequested { stage: true, .. }
    ));
    assert_ne!(
        lab.machine_state(ip).unwrap().phase,
        MachinePhase::Upgrading
    );
    wait_for(&mut events, |e| matches!(e, TalosEvent::Booted { .. })).await;
    let state = lab.machine_state(ip).unwrap();
    assert_eq!(state.version, "v1.11.3");
    assert_eq!(state.boots, boots + 1);
    lab.power_off(ip).await;
}

#[tokio::test]
async fn a_control_plane_runs_etcd_and_trustd_and_a_worker_does_not() {
    let lab = lab(Arc::new(Faults::new(1)));
    let (worker_ip, cp_ip) = (ip(13), ip(14));
    install_worker(&lab, worker_ip, "w-13").await;
    let mut events = lab.subscribe();
    let control_plane = worker_config("cp-1").replace("type: worker", "type: controlplane");
    lab.boot_machine(
        cp_ip,
        BootMode::Configured {
            config_yaml: control_plane,
        },
    )
    .await
    .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, TalosEvent::Booted { ip: i, mode: ServingMode::Configured } if *i == cp_ip),
    )
    .await;
    for (ip, expect) in [(worker_ip, false), (cp_ip, true)] {
        let mut admin = admin_client(&lab, ip).await;
        let list = admin.service_list(()).await.unwrap().into_inner();
        let ids: Vec<&str> = list.messages[0]
            .services
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        for id in ["etcd", "trustd"] {
            assert_eq!(ids.contains(&id), expect, "{ip}: {ids:?}");
        }
        assert!(ids.contains(&"kubelet") && ids.contains(&"apid"));
    }
    lab.power_off_all().await;
}
