//! The client against the Proxmox emulator over real HTTPS on loopback:
//! TLS verification modes, token auth, the whole worker lifecycle, error
//! classification of real failures, retries and the clone safety rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tidepool_core::config::TlsVerify;
use tidepool_lab_pve::{
    HostSpec, PciDevice, PciMapping, PoolSpec, PveConfig, PveLab, StorageSpec, VmSpec,
};
use tidepool_lab_sim::{FaultRule, Faults, KeyAlgorithm, Service, SimClock, TestCa};
use tidepool_proxmox::{
    ApiToken, Capacity, ClientOptions, CloneRequest, CloneStarted, ConfigUpdate, DeleteOptions,
    ProxmoxClient, ProxmoxError, RetryPolicy, ShutdownOptions, Smbios1, TaskPolling,
};
use tokio::time::Instant;

const TEMPLATE: u32 = 9000;
const FAST: f64 = 1000.0;

fn cluster() -> PveConfig {
    let host = |name: &str, mem| HostSpec {
        name: name.into(),
        memory_mib: mem,
        cores: 8,
        threads: None,
        storages: vec![StorageSpec {
            name: "local-lvm".into(),
            kind: "lvmthin".into(),
            total_gib: 500,
            free_gib: 400,
            shared: false,
        }],
        online: true,
    };
    let mut cfg = PveConfig::with_hosts(vec![host("pve-01", 16_384), host("pve-02", 65_536)]);
    cfg.pci_mappings = vec![PciMapping {
        id: "gpu".into(),
        description: Some("RTX 3090".into()),
        devices: vec![PciDevice {
            node: "pve-02".into(),
            path: "0000:01:00.0".into(),
            id: "10de:2204".into(),
            iommugroup: Some(14),
        }],
    }];
    cfg.pools = vec![PoolSpec {
        id: "tidepool".into(),
        comment: Some("workers".into()),
    }];
    cfg.vms = vec![VmSpec {
        vmid: TEMPLATE,
        node: "pve-01".into(),
        name: "talos-small".into(),
        template: true,
        cores: 2,
        memory_mib: 4096,
        disk_gib: 32,
        storage: None,
        tags: vec!["talos".into()],
        running: false,
        pool: None,
        extra_config: Default::default(),
    }];
    cfg
}

struct Env {
    lab: PveLab,
    faults: Arc<Faults>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_with(cfg: PveConfig) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let faults = Arc::new(Faults::new(7));
    let lab = PveLab::new(cfg, SimClock::new(FAST), faults.clone()).unwrap();
    let (addr, _server) = lab.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "tidepool-proxmox-test-{}-{}",
        std::process::id(),
        addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pve-root-ca.pem"), lab.ca_cert_pem()).unwrap();
    Env {
        lab,
        faults,
        addr,
        dir,
    }
}

async fn start() -> Env {
    start_with(cluster()).await
}

fn fast() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        polling: TaskPolling {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
    }
}

impl Env {
    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn client_with(&self, tls: TlsVerify, token: &str) -> ProxmoxClient {
        ProxmoxClient::new(
            &self.endpoint(),
            ApiToken::parse(token).unwrap(),
            &tls,
            &self.dir,
            fast(),
        )
        .unwrap()
    }

    fn client(&self) -> ProxmoxClient {
        self.client_with(
            TlsVerify::CaFile("pve-root-ca.pem".into()),
            &self.lab.token(),
        )
    }

    fn fault(&self, op: &str, status: Option<u16>, message: Option<&str>, times: Option<u64>) {
        self.faults.add_rule(FaultRule {
            service: Service::Proxmox,
            op: op.into(),
            error_rate: 1.0,
            status,
            message: message.map(str::to_owned),
            latency_ms: 0,
            times,
        });
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn linked(newid: u32) -> CloneRequest {
    CloneRequest {
        newid,
        name: Some(format!("worker-{newid}")),
        ..CloneRequest::default()
    }
}

// ------------------------------------------------------------------ TLS

#[tokio::test]
async fn a_client_trusting_the_cluster_ca_file_talks_to_the_api() {
    let env = start().await;
    let v = env.client().version().await.unwrap();
    assert_eq!(v.version, "8.4.1");
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_permanently() {
    let env = start().await;
    let other = TestCa::new("Some Other CA", KeyAlgorithm::EcdsaP256).unwrap();
    std::fs::write(env.dir.join("other-ca.pem"), other.cert_pem()).unwrap();
    let client = env.client_with(TlsVerify::CaFile("other-ca.pem".into()), &env.lab.token());
    let err = client.version().await.unwrap_err();
    assert_eq!(err.category(), "permanent", "{err:?}");
}

#[tokio::test]
async fn pinning_the_served_fingerprint_works_and_a_wrong_pin_is_refused() {
    let env = start().await;
    let good = env.client_with(
        TlsVerify::Fingerprint(env.lab.fingerprint()),
        &env.lab.token(),
    );
    assert_eq!(good.version().await.unwrap().release, "8.4");
    let wrong = vec!["AB"; 32].join(":");
    let bad = env.client_with(TlsVerify::Fingerprint(wrong), &env.lab.token());
    let err = bad.version().await.unwrap_err();
    assert_eq!(err.category(), "permanent", "{err:?}");
}

#[tokio::test]
async fn insecure_mode_connects_without_verifying() {
    let env = start().await;
    let client = env.client_with(TlsVerify::InsecureSkipVerify, &env.lab.token());
    assert!(!client.nodes().await.unwrap().is_empty());
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn a_wrong_token_secret_is_an_auth_error_that_does_not_show_the_secret() {
    let env = start().await;
    let client = env.client_with(
        TlsVerify::CaFile("pve-root-ca.pem".into()),
        "root@pam!tidepool=not-the-secret-4711",
    );
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, ProxmoxError::Auth { status: 401, .. }),
        "{err:?}"
    );
    let shown = format!("{err} / {:?} / {}", err, err.cause());
    assert!(!shown.contains("not-the-secret-4711"), "{shown}");
}

#[tokio::test]
async fn the_token_secret_never_appears_in_debug_output_or_errors() {
    let env = start().await;
    let token = env.lab.token();
    let secret = token.rsplit_once('=').unwrap().1.to_owned();
    let client = env.client();
    assert!(!format!("{client:?}").contains(&secret));
    let err = client.vm_config("pve-01", 4242).await.unwrap_err();
    let shown = format!("{err} / {err:?} / {}", err.cause());
    assert!(!shown.contains(&secret), "{shown}");
    assert_eq!(err.category(), "not_found");
}

// ------------------------------------------------------------------ reads

#[tokio::test]
async fn nodes_capacity_storage_mappings_pools_and_ids_are_typed() {
    let env = start().await;
    let c = env.client();
    let nodes = c.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n.is_online()));
    assert_eq!(
        nodes[0].ssl_fingerprint.as_deref(),
        Some(env.lab.fingerprint().as_str())
    );
    let status = c.node_status("pve-02").await.unwrap();
    assert_eq!(status.memory.total, 65_536 * 1024 * 1024);
    assert_eq!(status.cpuinfo.cpus, 16);
    assert!(status.available_memory() > 0);
    let storage = c.cluster_storage().await.unwrap();
    assert_eq!(storage.len(), 2);
    assert_eq!(storage[0].free(), 400 * 1024 * 1024 * 1024);
    let maps = c.pci_mappings(Some("pve-02")).await.unwrap();
    assert_eq!(maps[0].id, "gpu");
    assert_eq!(
        maps[0].devices_on("pve-02").next().unwrap().path.as_deref(),
        Some("0000:01:00.0")
    );
    assert_eq!(c.pools().await.unwrap()[0].poolid, "tidepool");
    assert_eq!(c.next_id(None).await.unwrap(), 100);
    assert_eq!(c.next_id(Some(1250)).await.unwrap(), 1250);
    match c.next_id(Some(TEMPLATE)).await.unwrap_err() {
        ProxmoxError::Permanent { errors, .. } => {
            assert_eq!(errors["vmid"], "VM 9000 already exists");
        }
        other => panic!("{other:?}"),
    }
    let vms = c.node_vms("pve-01").await.unwrap();
    assert_eq!(vms[0].vmid, TEMPLATE);
    assert!(vms[0].template);
}

// ------------------------------------------------------------------ lifecycle

#[tokio::test]
async fn a_worker_is_cloned_configured_started_found_shut_down_and_deleted() {
    let env = start().await;
    let c = env.client();
    let req = CloneRequest {
        newid: 1250,
        name: Some("worker-1".into()),
        pool: Some("tidepool".into()),
        full: Some(false),
        description: Some("claim abc".into()),
        ..CloneRequest::default()
    };
    let upid = match c.clone_vm("pve-01", TEMPLATE, &req).await.unwrap() {
        CloneStarted::Task(upid) => upid,
        other => panic!("{other:?}"),
    };
    assert_eq!((upid.kind.as_str(), upid.id.as_str()), ("qmclone", "9000"));
    let done = c.wait_task(&upid, soon()).await.unwrap();
    assert!(done.succeeded());

    let before = c.vm_config("pve-01", 1250).await.unwrap();
    let uuid = before.smbios_uuid().unwrap().to_owned();
    assert_eq!(before.name.as_deref(), Some("worker-1"));
    assert_eq!(before.tags, vec!["talos"]);
    assert!(before.lock.is_none());
    assert!(before.net0_mac.as_deref().unwrap().starts_with("BC:24:11:"));

    let update = ConfigUpdate {
        tags: Some(vec![
            "tidepool".into(),
            "Claim-ABC".into(),
            "pool.small".into(),
        ]),
        smbios1: Some(Smbios1 {
            uuid: Some(uuid.clone()),
            serial: Some("ds=nocloud;s=http://10.0.0.1:8080/abc/".into()),
            other: vec![],
        }),
        cores: Some(4),
        ..ConfigUpdate::default()
    };
    c.update_config("pve-01", 1250, &update).await.unwrap();
    let after = c.vm_config("pve-01", 1250).await.unwrap();
    assert_eq!(after.tags, vec!["claim-abc", "pool.small", "tidepool"]);
    assert_eq!(after.cores, Some(4));
    assert_eq!(after.smbios_uuid(), Some(uuid.as_str()));
    assert_eq!(
        after.smbios1.as_ref().unwrap().serial.as_deref(),
        Some("ds=nocloud;s=http://10.0.0.1:8080/abc/")
    );
    assert_eq!(
        env.lab.vm(1250).unwrap().smbios_serial.as_deref(),
        Some("ds=nocloud;s=http://10.0.0.1:8080/abc/")
    );
    let members = c.pool_members("tidepool").await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.vmid).collect::<Vec<_>>(),
        vec![1250]
    );

    let started = c.start("pve-01", 1250).await.unwrap();
    c.wait_task(&started, soon()).await.unwrap();
    assert!(c.vm_status("pve-01", 1250).await.unwrap().is_running());

    let early = c.agent_addresses("pve-01", 1250).await.unwrap_err();
    assert_eq!(early.category(), "agent_not_ready", "{early:?}");
    let v4: IpAddr = "10.0.0.50".parse().unwrap();
    let v6: IpAddr = "fd00::50".parse().unwrap();
    env.lab.set_agent(1250, Some(vec![v4, v6])).unwrap();
    assert_eq!(
        c.agent_addresses("pve-01", 1250).await.unwrap(),
        vec![v4, v6]
    );
    let ifaces = c.agent_interfaces("pve-01", 1250).await.unwrap();
    assert!(ifaces.iter().any(|i| i.name == "lo"));

    let down = c
        .shutdown(
            "pve-01",
            1250,
            &ShutdownOptions {
                timeout_secs: Some(30),
                force_stop: true,
            },
        )
        .await
        .unwrap();
    c.wait_task(&down, soon()).await.unwrap();
    assert!(!c.vm_status("pve-01", 1250).await.unwrap().is_running());

    let gone = c
        .delete_vm(
            "pve-01",
            1250,
            &DeleteOptions {
                purge: true,
                destroy_unreferenced_disks: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(gone.kind, "qmdestroy");
    c.wait_task(&gone, soon()).await.unwrap();
    assert!(env.lab.vm(1250).is_none());
    let err = c.vm_config("pve-01", 1250).await.unwrap_err();
    assert_eq!(err.category(), "not_found");
    assert!(c.find_vm(1250).await.unwrap().is_none());
}

// ------------------------------------------------------------------ failures

#[tokio::test]
async fn cloning_from_a_vm_that_is_still_being_cloned_is_a_locked_error() {
    let mut cfg = cluster();
    cfg.durations.full_clone_ms = 60_000_000;
    let env = start_with(cfg).await;
    let c = env.client();
    let req = CloneRequest {
        full: Some(true),
        ..linked(130)
    };
    assert!(matches!(
        c.clone_vm("pve-01", TEMPLATE, &req).await.unwrap(),
        CloneStarted::Task(_)
    ));
    let err = c.clone_vm("pve-01", 130, &linked(131)).await.unwrap_err();
    match &err {
        ProxmoxError::Locked { lock, .. } => assert_eq!(lock, "clone"),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.category(), "locked");
    assert!(
        err.to_string()
            .starts_with("cloning VM 130 to 131 on pve-01: ")
    );
}

#[tokio::test]
async fn starting_a_vm_larger_than_the_free_host_memory_is_insufficient_capacity() {
    let env = start().await;
    let c = env.client();
    c.clone_and_wait("pve-01", TEMPLATE, &linked(140), soon())
        .await
        .unwrap();
    let big = ConfigUpdate {
        memory_mib: Some(32_768),
        ..ConfigUpdate::default()
    };
    c.update_config("pve-01", 140, &big).await.unwrap();
    let upid = c.start("pve-01", 140).await.unwrap();
    let err = c.wait_task(&upid, soon()).await.unwrap_err();
    match &err {
        ProxmoxError::InsufficientCapacity { capacity, .. } => {
            assert_eq!(*capacity, Capacity::Memory);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("starting VM 140 on pve-01: "));
}

#[tokio::test]
async fn an_injected_clone_task_failure_is_a_task_failed_error_with_the_exit_status() {
    let env = start().await;
    env.fault(
        "task:qmclone:*",
        None,
        Some("clone failed: storage migration failed: injected"),
        None,
    );
    let err = env
        .client()
        .clone_and_wait("pve-01", TEMPLATE, &linked(150), soon())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cloning VM 9000 to 150 on pve-01: task failed: "),
        "{err}"
    );
    match &err {
        ProxmoxError::TaskFailed { upid, message, .. } => {
            assert!(upid.contains(":qmclone:9000:"));
            assert_eq!(message, "clone failed: storage migration failed: injected");
        }
        other => panic!("{other:?}"),
    }
    assert!(env.lab.vm(150).is_none());
}

#[tokio::test]
async fn a_get_that_fails_twice_with_503_is_retried_and_succeeds() {
    let env = start().await;
    env.fault(
        "GET /version",
        Some(503),
        Some("Service Unavailable"),
        Some(2),
    );
    assert_eq!(env.client().version().await.unwrap().version, "8.4.1");
}

#[tokio::test]
async fn a_get_that_keeps_failing_gives_up_after_the_configured_attempts() {
    let env = start().await;
    env.fault("GET /version", Some(595), Some("No route to host"), Some(4));
    let err = env.client().version().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // The four failures are used up, so the next call goes through.
    assert!(env.client().version().await.is_ok());
}

#[tokio::test]
async fn a_delete_that_fails_with_503_is_not_retried_so_the_caller_checks_identity_again() {
    let env = start().await;
    let c = env.client();
    c.clone_and_wait("pve-01", TEMPLATE, &linked(190), soon())
        .await
        .unwrap();
    env.fault("DELETE /nodes/pve-01/qemu/190", Some(503), None, Some(1));
    let options = DeleteOptions {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    let err = c.delete_vm("pve-01", 190, &options).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(env.lab.vm(190).is_some(), "not sent a second time");
}

fn vm_count(env: &Env) -> usize {
    env.lab.vms().len()
}

#[tokio::test]
async fn an_injected_500_on_clone_is_not_retried_and_creates_no_vm() {
    let env = start().await;
    env.fault(
        &format!("POST /nodes/pve-01/qemu/{TEMPLATE}/clone"),
        Some(500),
        None,
        Some(1),
    );
    let c = env.client();
    let err = c
        .clone_vm("pve-01", TEMPLATE, &linked(160))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "permanent", "{err:?}");
    assert_eq!(vm_count(&env), 1);
    // Sent again by the caller, the same clone makes exactly one VM.
    c.clone_and_wait("pve-01", TEMPLATE, &linked(160), soon())
        .await
        .unwrap();
    assert_eq!(vm_count(&env), 2);
}

#[tokio::test]
async fn a_transient_clone_failure_before_the_vm_exists_is_resent_once_and_makes_one_vm() {
    let env = start().await;
    env.fault(
        &format!("POST /nodes/pve-01/qemu/{TEMPLATE}/clone"),
        Some(503),
        None,
        Some(1),
    );
    let c = env.client();
    let started = c.clone_vm("pve-01", TEMPLATE, &linked(170)).await.unwrap();
    let CloneStarted::Task(upid) = started else {
        panic!("{started:?}");
    };
    c.wait_task(&upid, soon()).await.unwrap();
    assert_eq!(vm_count(&env), 2);
    assert!(env.lab.vm(170).is_some());
}

#[tokio::test]
async fn a_clone_whose_answer_was_lost_adopts_the_vm_instead_of_cloning_again() {
    let mut cfg = cluster();
    cfg.durations.linked_clone_ms = 200_000;
    let env = start_with(cfg).await;
    let c = env.client();
    // The first attempt reached the server, which started the clone...
    let first = c.clone_vm("pve-01", TEMPLATE, &linked(180)).await.unwrap();
    assert!(matches!(first, CloneStarted::Task(_)));
    // ...but its answer was lost: the caller sends the same clone again,
    // and this time the proxy in front fails.
    env.fault(
        &format!("POST /nodes/pve-01/qemu/{TEMPLATE}/clone"),
        Some(596),
        Some("Errors during TLS negotiation, request sending and header processing"),
        Some(1),
    );
    let again = c.clone_vm("pve-01", TEMPLATE, &linked(180)).await.unwrap();
    assert_eq!(again, CloneStarted::Accepted { vmid: 180 });
    let node = c
        .clone_and_wait("pve-01", TEMPLATE, &linked(180), soon())
        .await
        .unwrap_err();
    // Without a lost answer, a repeat of an accepted clone is refused.
    assert_eq!(node.category(), "permanent", "{node:?}");
    assert_eq!(vm_count(&env), 2);
}

#[tokio::test]
async fn an_adopted_clone_is_waited_for_until_its_lock_clears() {
    let mut cfg = cluster();
    cfg.durations.linked_clone_ms = 200_000;
    let env = start_with(cfg).await;
    let c = env.client();
    c.clone_vm("pve-01", TEMPLATE, &linked(190)).await.unwrap();
    env.fault(
        &format!("POST /nodes/pve-01/qemu/{TEMPLATE}/clone"),
        Some(503),
        None,
        Some(1),
    );
    let node = c
        .clone_and_wait("pve-01", TEMPLATE, &linked(190), soon())
        .await
        .unwrap();
    assert_eq!(node, "pve-01");
    assert!(env.lab.vm(190).unwrap().lock.is_none());
    assert_eq!(vm_count(&env), 2);
}

// ------------------------------------------------------------------ more

#[tokio::test]
async fn a_provider_from_the_config_reads_its_token_file_relative_to_the_config_dir() {
    let env = start().await;
    std::fs::write(env.dir.join("pve-token"), format!("{}\n", env.lab.token())).unwrap();
    let provider = tidepool_core::config::ProxmoxProvider {
        name: "lab".into(),
        endpoint: format!("{}/api2/json", env.endpoint()),
        token: tidepool_core::config::SecretRef::File("pve-token".into()),
        tls: TlsVerify::CaFile("pve-root-ca.pem".into()),
        hosts: vec!["pve-01".into()],
        vmid_lower: 1000,
        vmid_upper: 1999,
        host_memory_reserve_mib: 2048,
        vm_memory_overhead_mib: 256,
        cpu_overcommit: 2.0,
        storage: "local-lvm".into(),
        resource_pool: None,
        full_clone: false,
        volumes: Default::default(),
        max_parallel_clones: 3,
    };
    let c = ProxmoxClient::from_provider(&provider, &env.dir, fast()).unwrap();
    assert_eq!(c.token_id(), "root@pam!tidepool");
    assert_eq!(c.version().await.unwrap().release, "8.4");
}

#[tokio::test]
async fn old_servers_without_a_message_body_are_classified_from_the_reason_phrase() {
    let mut cfg = cluster();
    cfg.error_bodies = tidepool_lab_pve::ErrorBodies::DataOnly;
    let env = start_with(cfg).await;
    let c = env.client();
    let err = c.vm_config("pve-01", 4242).await.unwrap_err();
    assert_eq!(err.category(), "not_found", "{err:?}");
    assert_eq!(
        err.cause().message(),
        Some("Configuration file 'nodes/pve-01/qemu-server/4242.conf' does not exist")
    );
    match c.next_id(Some(TEMPLATE)).await.unwrap_err() {
        ProxmoxError::Permanent { errors, .. } => {
            assert_eq!(errors["vmid"], "VM 9000 already exists");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_second_vm_on_a_busy_mapped_gpu_fails_to_start_for_lack_of_a_gpu() {
    let mut cfg = cluster();
    let mut gpu = cfg.vms[0].clone();
    gpu.vmid = 9001;
    gpu.node = "pve-02".into();
    gpu.name = "talos-gpu".into();
    gpu.extra_config.insert("machine".into(), "q35".into());
    cfg.vms.push(gpu);
    let env = start_with(cfg).await;
    let c = env.client();
    for id in [200, 201] {
        c.clone_and_wait("pve-02", 9001, &linked(id), soon())
            .await
            .unwrap();
        let gpu = ConfigUpdate {
            hostpci: [(0, tidepool_proxmox::HostPci::mapped("gpu"))].into(),
            ..ConfigUpdate::default()
        };
        let upid = c.update_config_async("pve-02", id, &gpu).await.unwrap();
        assert_eq!(upid.kind, "qmconfig");
        c.wait_task(&upid, soon()).await.unwrap();
        let cfg = c.vm_config("pve-02", id).await.unwrap();
        assert_eq!(cfg.hostpci[&0].mapping.as_deref(), Some("gpu"));
    }
    let first = c.start("pve-02", 200).await.unwrap();
    c.wait_task(&first, soon()).await.unwrap();
    let second = c.start("pve-02", 201).await.unwrap();
    match c.wait_task(&second, soon()).await.unwrap_err() {
        ProxmoxError::InsufficientCapacity { capacity, .. } => assert_eq!(capacity, Capacity::Gpu),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_config_update_that_cannot_get_the_file_lock_is_transient() {
    let mut cfg = cluster();
    cfg.durations.full_clone_ms = 60_000_000;
    let env = start_with(cfg).await;
    let c = env.client();
    let req = CloneRequest {
        full: Some(true),
        ..linked(210)
    };
    c.clone_vm("pve-01", TEMPLATE, &req).await.unwrap();
    let update = ConfigUpdate {
        cores: Some(4),
        ..ConfigUpdate::default()
    };
    let err = c.update_config("pve-01", 210, &update).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "updating the config of VM 210 on pve-01: temporary failure"
    );
}

#[tokio::test]
async fn a_task_wait_past_its_deadline_is_a_timeout() {
    let mut cfg = cluster();
    cfg.durations.linked_clone_ms = 60_000_000;
    let env = start_with(cfg).await;
    let c = env.client();
    let CloneStarted::Task(upid) = c.clone_vm("pve-01", TEMPLATE, &linked(220)).await.unwrap()
    else {
        panic!("expected a task");
    };
    let err = c
        .wait_task(&upid, Instant::now() + Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "timeout", "{err:?}");
    assert!(err.to_string().starts_with("cloning VM 9000 on pve-01"));
}

#[tokio::test]
async fn vms_join_and_leave_a_pool() {
    let env = start().await;
    let c = env.client();
    c.clone_and_wait("pve-01", TEMPLATE, &linked(230), soon())
        .await
        .unwrap();
    c.add_to_pool("tidepool", &[230], false).await.unwrap();
    let members = c.pool_members("tidepool").await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.vmid).collect::<Vec<_>>(),
        vec![230]
    );
    c.remove_from_pool("tidepool", &[230]).await.unwrap();
    assert!(c.pool_members("tidepool").await.unwrap().is_empty());
    let missing = c.pool_members("nope").await.unwrap_err();
    assert_eq!(missing.category(), "not_found", "{missing:?}");
}
