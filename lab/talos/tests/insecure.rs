//! The maintenance API as `talosctl apply-config --insecure` reaches it: TLS
//! without verifying the server certificate and without a client
//! certificate (a rustls verifier that accepts anything, over tonic's
//! custom-connector hook).

// Test helpers outside #[test] functions fail loudly, like the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tidepool_lab_sim::{Faults, SimClock};
use tidepool_lab_talos::{BootMode, TalosDurations, TalosEvent, TalosLab};
use tidepool_talos_proto::machine::ApplyConfigurationRequest;
use tidepool_talos_proto::machine::machine_service_client::MachineServiceClient;
use tidepool_tls::{AcceptAny, CustomVerifier};
use tonic::transport::Endpoint;

async fn insecure_client(ip: IpAddr, port: u16) -> MachineServiceClient<tonic::transport::Channel> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CustomVerifier::new(AcceptAny, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{ip}:{port}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
                let tls = connector
                    .connect(ServerName::IpAddress(ip.into()), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    MachineServiceClient::new(channel)
}

#[tokio::test]
async fn an_insecure_client_without_certificates_can_apply_a_config_in_maintenance() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = TalosLab::new(
        SimClock::new(1000.0),
        Arc::new(Faults::new(1)),
        TalosDurations::default(),
    )
    .unwrap();
    let ip = IpAddr::from([127, 0, 77, 40]);
    let mut events = lab.subscribe();
    lab.boot_machine(ip, BootMode::Maintenance).await.unwrap();
    let mut client = insecure_client(ip, lab.port()).await;
    let config =
        "version: v1alpha1\nmachine:\n  type: worker\n  ca:\n    crt: Y2E=\n    key: \"\"\n";
    client
        .apply_configuration(ApplyConfigurationRequest {
            data: config.as_bytes().to_vec(),
            mode: 1,
            dry_run: false,
            try_mode_timeout: None,
        })
        .await
        .unwrap();
    loop {
        if let TalosEvent::ConfigApplied { ip: applied, .. } = events.recv().await.unwrap() {
            assert_eq!(applied, ip);
            break;
        }
    }
    lab.power_off(ip).await;
}
