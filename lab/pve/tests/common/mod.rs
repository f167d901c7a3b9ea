//! Shared fixtures of the integration tests: a small two-node cluster with
//! a template and a GPU mapping, served over real HTTPS, and a reqwest
//! client that trusts the emulator's CA.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tidepool_lab_pve::{
    HostSpec, PciDevice, PciMapping, PoolSpec, PveConfig, PveLab, StorageSpec, VmSpec,
};
use tidepool_lab_sim::{Faults, SimClock};

pub const TEMPLATE: u32 = 9000;
pub const GPU_TEMPLATE: u32 = 9001;

/// pve-01 (16 GiB, local-lvm), pve-02 (64 GiB, one GPU mapped as `gpu`),
/// template 9000 on pve-01 and GPU template 9001 on pve-02.
pub fn two_node_cluster() -> PveConfig {
    let storage = |free| StorageSpec {
        name: "local-lvm".into(),
        kind: "lvmthin".into(),
        total_gib: 500,
        free_gib: free,
        shared: false,
    };
    let host = |name: &str, mem| HostSpec {
        name: name.into(),
        memory_mib: mem,
        cores: 8,
        threads: None,
        storages: vec![storage(400)],
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
    let template = |vmid, node: &str, name: &str| VmSpec {
        vmid,
        node: node.into(),
        name: name.into(),
        template: true,
        cores: 2,
        memory_mib: 4096,
        disk_gib: 32,
        storage: None,
        tags: vec!["talos".into()],
        running: false,
        pool: None,
        extra_config: Default::default(),
    };
    let mut gpu = template(GPU_TEMPLATE, "pve-02", "talos-gpu");
    gpu.extra_config
        .insert("hostpci0".into(), "mapping=gpu,pcie=1".into());
    gpu.extra_config.insert("machine".into(), "q35".into());
    cfg.vms = vec![template(TEMPLATE, "pve-01", "talos-small"), gpu];
    cfg
}

pub struct Lab {
    pub lab: PveLab,
    pub faults: Arc<Faults>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub token: String,
}

pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn start(cfg: PveConfig, scale: f64, seed: u64) -> Lab {
    install_ring();
    let faults = Arc::new(Faults::new(seed));
    let lab = PveLab::new(cfg, SimClock::new(scale), faults.clone()).unwrap();
    let (addr, _server) = lab.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ca = reqwest::Certificate::from_pem(lab.ca_cert_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let token = lab.token();
    Lab {
        lab,
        faults,
        addr,
        client,
        token,
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub raw: String,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl Lab {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/api2/json{path}", self.addr.port())
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let raw = resp.text().await.unwrap();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Answer { status, body, raw }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("Authorization", format!("PVEAPIToken={}", self.token))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.auth(self.client.get(self.url(path)))).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.auth(self.client.delete(self.url(path))))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(self.auth(self.client.post(self.url(path)).form(form)))
            .await
    }

    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(self.auth(self.client.put(self.url(path)).form(form)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Answer {
        self.send(self.auth(self.client.post(self.url(path)).json(&body)))
            .await
    }

    /// Polls a task until it stops; returns its status object.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap().to_owned();
        for _ in 0..2000 {
            let a = self
                .get(&format!("/nodes/{node}/tasks/{upid}/status"))
                .await;
            assert_eq!(a.status, 200, "{}", a.raw);
            if a.data()["status"] == "stopped" {
                return a.data().clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {upid} did not finish");
    }

    /// Clones `source` on `node` into `newid` and waits for the task.
    pub async fn clone_vm(&self, node: &str, source: u32, newid: u32) -> Value {
        let a = self
            .post(
                &format!("/nodes/{node}/qemu/{source}/clone"),
                &[("newid", &newid.to_string())],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.raw);
        self.wait_task(a.data().as_str().unwrap()).await
    }

    /// Starts a VM and waits for the task.
    pub async fn start_vm(&self, node: &str, vmid: u32) -> Value {
        let a = self
            .post(&format!("/nodes/{node}/qemu/{vmid}/status/start"), &[])
            .await;
        assert_eq!(a.status, 200, "{}", a.raw);
        self.wait_task(a.data().as_str().unwrap()).await
    }
}
