//! The emulator over real HTTPS with reqwest: authentication, envelopes and
//! error formats, the clone lifecycle and locks, config normalisation,
//! memory and GPU accounting, delete semantics, the guest agent and
//! deterministic fault injection.

mod common;

use std::net::IpAddr;

use common::{GPU_TEMPLATE, TEMPLATE, start, two_node_cluster};
use serde_json::json;
use tidepool_lab_pve::{ErrorBodies, VmEvent, VmSpec};
use tidepool_lab_sim::{FaultRule, Service};

const FAST: f64 = 1000.0;

#[tokio::test]
async fn a_request_without_a_token_gets_401_no_ticket_with_an_empty_body() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let a = lab.send(lab.client.get(lab.url("/version"))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.raw, "");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_the_right_token_accepted_in_either_syntax() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let bad = lab
        .send(
            lab.client
                .get(lab.url("/version"))
                .header("Authorization", "PVEAPIToken=root@pam!tidepool=wrong"),
        )
        .await;
    assert_eq!(bad.status, 401);
    let spaced = lab
        .send(
            lab.client
                .get(lab.url("/version"))
                .header("Authorization", format!("PVEAPIToken {}", lab.token)),
        )
        .await;
    assert_eq!(spaced.status, 200);
    assert_eq!(spaced.data()["version"], "8.4.1");
}

#[tokio::test]
async fn answers_come_in_the_data_envelope_with_numbers_where_pve_sends_numbers() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let nodes = lab.get("/nodes").await;
    assert_eq!(nodes.status, 200);
    let first = &nodes.data()[0];
    assert_eq!(first["node"], "pve-01");
    assert_eq!(first["status"], "online");
    assert_eq!(first["maxmem"], 16_384u64 * 1024 * 1024);
    assert_eq!(first["ssl_fingerprint"].as_str().unwrap().len(), 95);
    let status = lab.get("/nodes/pve-02/status").await;
    assert_eq!(status.data()["cpuinfo"]["mhz"], "3400.000");
    assert!(status.data()["loadavg"][0].is_string());
    let config = lab
        .get(&format!("/nodes/pve-01/qemu/{TEMPLATE}/config"))
        .await;
    assert_eq!(config.data()["memory"], "4096");
    assert_eq!(config.data()["cores"], 2);
    assert_eq!(config.data()["template"], 1);
    assert_eq!(config.data()["digest"].as_str().unwrap().len(), 40);
}

#[tokio::test]
async fn nextid_returns_a_string_and_refuses_a_taken_id_with_a_400_errors_map() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let free = lab.get("/cluster/nextid").await;
    assert_eq!(free.body, json!({ "data": "100" }));
    let taken = lab.get(&format!("/cluster/nextid?vmid={TEMPLATE}")).await;
    assert_eq!(taken.status, 400);
    assert_eq!(
        taken.body,
        json!({ "data": null, "errors": { "vmid": "VM 9000 already exists" },
                "message": "Parameter verification failed.\n" })
    );
}

#[tokio::test]
async fn errors_carry_a_message_key_only_in_the_newer_format() {
    let new = start(two_node_cluster(), FAST, 1).await;
    let a = new.get("/nodes/pve-01/qemu/4242/config").await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.body,
        json!({ "data": null,
                "message": "Configuration file 'nodes/pve-01/qemu-server/4242.conf' does not exist\n" })
    );
    let mut cfg = two_node_cluster();
    cfg.error_bodies = ErrorBodies::DataOnly;
    let old = start(cfg, FAST, 1).await;
    let a = old.get("/nodes/pve-01/qemu/4242/config").await;
    assert_eq!(a.body, json!({ "data": null }));
}

#[tokio::test]
async fn an_unknown_path_answers_501_not_implemented() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let a = lab.get("/nodes/pve-01/frobnicate").await;
    assert_eq!(a.status, 501);
    assert_eq!(
        a.body["message"],
        "Method 'GET /nodes/pve-01/frobnicate' not implemented\n"
    );
}

#[tokio::test]
async fn a_clone_returns_a_upid_and_the_new_vm_stays_locked_until_the_task_ends() {
    let mut cfg = two_node_cluster();
    cfg.durations.linked_clone_ms = 120_000;
    let lab = start(cfg, 100.0, 1).await;
    let mut events = lab.lab.subscribe();
    let a = lab
        .post(
            &format!("/nodes/pve-01/qemu/{TEMPLATE}/clone"),
            &[("newid", "120"), ("name", "worker-1"), ("pool", "tidepool")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    let upid = a.data().as_str().unwrap().to_owned();
    let parts: Vec<&str> = upid.split(':').collect();
    assert_eq!(parts.len(), 9);
    assert_eq!(
        (parts[0], parts[1], parts[5], parts[6], parts[7], parts[8]),
        ("UPID", "pve-01", "qmclone", "9000", "root@pam!tidepool", "")
    );
    assert!(
        parts[2].len() == 8
            && parts[2]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );

    let early = lab.get("/nodes/pve-01/qemu/120/config").await;
    assert_eq!(early.data()["lock"], "clone");
    let row = lab.get("/cluster/resources?type=vm").await;
    let row = row
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["vmid"] == 120)
        .unwrap()
        .clone();
    assert_eq!(
        (row["status"].as_str(), row["lock"].as_str()),
        (Some("unknown"), Some("clone"))
    );
    assert!(row.get("name").is_none());
    let status = lab.get(&format!("/nodes/pve-01/tasks/{upid}/status")).await;
    assert_eq!(status.data()["status"], "running");
    assert_eq!(status.data()["user"], "root@pam");
    assert_eq!(status.data()["tokenid"], "tidepool");
    // The clone holds the new VM's file lock longer than a start waits for it.
    let start = lab.start_vm("pve-01", 120).await;
    assert_eq!(
        start["exitstatus"],
        "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout"
    );

    let done = lab.wait_task(&upid).await;
    assert_eq!(done["exitstatus"], "OK");
    let cfg = lab.get("/nodes/pve-01/qemu/120/config").await;
    let src = lab
        .get(&format!("/nodes/pve-01/qemu/{TEMPLATE}/config"))
        .await;
    assert!(cfg.data().get("lock").is_none());
    assert!(cfg.data().get("template").is_none());
    assert_eq!(cfg.data()["name"], "worker-1");
    assert_eq!(cfg.data()["tags"], "talos");
    assert_ne!(cfg.data()["net0"], src.data()["net0"]);
    assert_ne!(cfg.data()["smbios1"], src.data()["smbios1"]);
    assert!(
        cfg.data()["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:base-9000-disk-0/vm-120-disk-0")
    );
    let vm = lab.lab.vm(120).unwrap();
    assert_eq!(vm.pool.as_deref(), Some("tidepool"));
    assert!(vm.net0_mac.unwrap().starts_with("BC:24:11:"));
    let log = lab.get(&format!("/nodes/pve-01/tasks/{upid}/log")).await;
    assert_eq!(log.body["total"], log.data().as_array().unwrap().len());
    assert_eq!(
        log.data().as_array().unwrap().last().unwrap()["t"],
        "TASK OK"
    );
    loop {
        if let VmEvent::Cloned { vmid } = events.recv().await.unwrap() {
            assert_eq!(vmid, 120);
            break;
        }
    }
    let pool = lab.get("/pools?poolid=tidepool").await;
    assert_eq!(pool.data()[0]["members"][0]["vmid"], 120);
}

#[tokio::test]
async fn clones_on_one_storage_take_its_lock_in_turn_and_one_that_waits_too_long_fails() {
    let mut cfg = two_node_cluster();
    // Each clone holds the storage's lock for the whole of its 4 s; a
    // clone gives up after 6 s of waiting. Of three at once, the second
    // waits 4 s and the third 8 s.
    cfg.durations.linked_clone_ms = 4_000;
    cfg.durations.storage_lock_ms = 4_000;
    cfg.durations.storage_lock_timeout_ms = 6_000;
    let lab = start(cfg, 5.0, 1).await;
    let clone = |newid: &'static str| {
        let lab = &lab;
        async move {
            let a = lab
                .post(
                    &format!("/nodes/pve-01/qemu/{TEMPLATE}/clone"),
                    &[("newid", newid)],
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.raw);
            let task = lab.wait_task(a.data().as_str().unwrap()).await;
            task["exitstatus"].as_str().unwrap().to_owned()
        }
    };
    let (a, b, c) = tokio::join!(clone("120"), clone("121"), clone("122"));
    let mut outcomes = [a, b, c];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "OK",
            "OK",
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
        ]
    );
    assert_eq!(
        lab.lab.requests()["POST /nodes/pve-01/qemu/{id}/clone"],
        3,
        "the lab counts requests by path"
    );
}

#[tokio::test]
async fn a_locked_vm_refuses_config_changes_once_the_file_lock_wait_runs_out() {
    let mut cfg = two_node_cluster();
    cfg.durations.full_clone_ms = 60_000_000;
    let lab = start(cfg, 1000.0, 1).await;
    let a = lab
        .post(
            &format!("/nodes/pve-01/qemu/{TEMPLATE}/clone"),
            &[("newid", "130"), ("full", "1")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    let put = lab
        .put("/nodes/pve-01/qemu/130/config", &[("cores", "4")])
        .await;
    assert_eq!(put.status, 500);
    assert_eq!(
        put.body["message"],
        "can't lock file '/var/lock/qemu-server/lock-130.conf' - got timeout\n"
    );
    let again = lab
        .post("/nodes/pve-01/qemu/130/clone", &[("newid", "131")])
        .await;
    assert_eq!(again.body["message"], "VM is locked (clone)\n");
}

#[tokio::test]
async fn config_updates_normalise_tags_and_accept_form_and_json_bodies() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    lab.clone_vm("pve-01", TEMPLATE, 140).await;
    let put = lab
        .put(
            "/nodes/pve-01/qemu/140/config",
            &[
                ("tags", "Tidepool;claim-abc,tidepool pool.small"),
                ("ciuser", "talos"),
            ],
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.raw);
    assert_eq!(put.body, json!({ "data": null }));
    let post = lab
        .post_json(
            "/nodes/pve-01/qemu/140/config",
            json!({ "cores": 4, "memory": "8192", "onboot": true, "description": "claim abc",
                    "smbios1": "uuid=6b1c0b61-4e1f-4c41-9d3b-8a1c63b6f2a0,serial=ZHM9bm9jbG91ZDtzPWh0dHA6Ly8xMC4wLjAuMS8=,base64=1",
                    "hostpci0": "mapping=gpu,pcie=1", "ipconfig0": "ip=dhcp" }),
        )
        .await;
    assert_eq!(post.status, 200, "{}", post.raw);
    let done = lab.wait_task(post.data().as_str().unwrap()).await;
    assert_eq!(done["exitstatus"], "OK");
    let cfg = lab.get("/nodes/pve-01/qemu/140/config").await;
    assert_eq!(cfg.data()["tags"], "claim-abc;pool.small;tidepool");
    assert_eq!(cfg.data()["cores"], 4);
    assert_eq!(cfg.data()["memory"], "8192");
    assert_eq!(cfg.data()["onboot"], 1);
    let vm = lab.lab.vm(140).unwrap();
    assert_eq!(
        vm.smbios_serial.as_deref(),
        Some("ds=nocloud;s=http://10.0.0.1/")
    );
    assert_eq!(
        vm.hostpci,
        vec![("hostpci0".to_owned(), "mapping=gpu,pcie=1".to_owned())]
    );
    assert_eq!(vm.description.as_deref(), Some("claim abc"));
    assert_eq!(vm.tags, vec!["claim-abc", "pool.small", "tidepool"]);
}

#[tokio::test]
async fn invalid_values_get_400_with_the_schema_message_per_parameter() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let path = format!("/nodes/pve-01/qemu/{TEMPLATE}/config");
    let a = lab
        .put(
            &path,
            &[("onboot", "true"), ("tags", "-bad"), ("bogus", "1")],
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    let a = lab.put(&path, &[("onboot", "true")]).await;
    assert_eq!(
        a.body["errors"]["onboot"],
        "type check ('boolean') failed - got 'true'"
    );
    let a = lab.put(&path, &[("tags", "-bad")]).await;
    assert!(
        a.body["errors"]["tags"]
            .as_str()
            .unwrap()
            .contains("invalid characters in tag")
    );
    let a = lab.put(&path, &[("balloon", "8192")]).await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.body["message"],
        "balloon value too large (must be smaller than assigned memory)\n"
    );
    let a = lab.put(&path, &[("hostpci0", "0000:01:00.0")]).await;
    assert_eq!(
        a.body["message"],
        "only root can set 'hostpci0' config for non-mapped devices\n"
    );
}

#[tokio::test]
async fn a_template_cannot_be_started() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let done = lab.start_vm("pve-01", TEMPLATE).await;
    assert_eq!(
        done["exitstatus"],
        "you can't start a vm if it's a template"
    );
}

#[tokio::test]
async fn a_start_fails_when_running_vms_would_exceed_the_host_memory() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    for id in [150, 151, 152, 153] {
        lab.clone_vm("pve-01", TEMPLATE, id).await;
    }
    for id in [150, 151, 152] {
        assert_eq!(lab.start_vm("pve-01", id).await["exitstatus"], "OK");
    }
    // 3 x 4 GiB run on a 16 GiB host; a fourth 4 GiB VM still fits, a fifth would not.
    assert_eq!(lab.start_vm("pve-01", 153).await["exitstatus"], "OK");
    lab.clone_vm("pve-01", TEMPLATE, 154).await;
    let failed = lab.start_vm("pve-01", 154).await;
    assert_eq!(
        failed["exitstatus"],
        "start failed: QEMU exited with code 1"
    );
    assert!(!lab.lab.vm(154).unwrap().running);
}

#[tokio::test]
async fn a_second_vm_mapped_to_the_same_gpu_cannot_start_while_the_first_runs() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    lab.clone_vm("pve-02", GPU_TEMPLATE, 160).await;
    lab.clone_vm("pve-02", GPU_TEMPLATE, 161).await;
    assert_eq!(lab.start_vm("pve-02", 160).await["exitstatus"], "OK");
    assert_eq!(lab.lab.vm(160).unwrap().pci_devices, vec!["0000:01:00.0"]);
    let failed = lab.start_vm("pve-02", 161).await;
    assert_eq!(
        failed["exitstatus"],
        "PCI device '0000:01:00.0' already in use by VMID '160'"
    );
    let stop = lab.post("/nodes/pve-02/qemu/160/status/stop", &[]).await;
    lab.wait_task(stop.data().as_str().unwrap()).await;
    assert_eq!(lab.start_vm("pve-02", 161).await["exitstatus"], "OK");
}

#[tokio::test]
async fn a_vm_running_at_start_holds_its_mapped_gpu() {
    let mut cfg = two_node_cluster();
    cfg.vms.push(VmSpec {
        vmid: 170,
        node: "pve-02".into(),
        name: "plex".into(),
        template: false,
        cores: 4,
        memory_mib: 8192,
        disk_gib: 32,
        storage: None,
        tags: vec![],
        running: true,
        pool: None,
        extra_config: [("hostpci0".to_owned(), "mapping=gpu,pcie=1".to_owned())].into(),
    });
    let lab = start(cfg, FAST, 1).await;
    assert_eq!(lab.lab.vm(170).unwrap().pci_devices, vec!["0000:01:00.0"]);
    lab.clone_vm("pve-02", GPU_TEMPLATE, 160).await;
    let failed = lab.start_vm("pve-02", 160).await;
    assert_eq!(
        failed["exitstatus"],
        "PCI device '0000:01:00.0' already in use by VMID '170'"
    );
}

#[tokio::test]
async fn a_running_vm_cannot_be_deleted_and_a_stopped_one_is_destroyed_by_a_task() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let mut events = lab.lab.subscribe();
    lab.clone_vm("pve-01", TEMPLATE, 170).await;
    lab.start_vm("pve-01", 170).await;
    let a = lab.delete("/nodes/pve-01/qemu/170?purge=1").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.body["message"], "VM 170 is running - destroy failed\n");
    let stop = lab
        .post("/nodes/pve-01/qemu/170/status/shutdown", &[])
        .await;
    assert_eq!(
        lab.wait_task(stop.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let a = lab
        .delete("/nodes/pve-01/qemu/170?purge=1&destroy-unreferenced-disks=1")
        .await;
    let upid = a.data().as_str().unwrap().to_owned();
    assert!(upid.contains(":qmdestroy:170:"));
    assert_eq!(lab.wait_task(&upid).await["exitstatus"], "OK");
    assert!(lab.lab.vm(170).is_none());
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(seen.contains(&VmEvent::Started {
        node: "pve-01".into(),
        vmid: 170
    }));
    assert!(seen.contains(&VmEvent::Stopped { vmid: 170 }));
    assert!(seen.contains(&VmEvent::Deleted { vmid: 170 }));
    let tmpl = lab.delete(&format!("/nodes/pve-01/qemu/{TEMPLATE}")).await;
    assert_eq!(
        lab.wait_task(tmpl.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
}

#[tokio::test]
async fn a_template_with_linked_clones_cannot_be_destroyed() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    lab.clone_vm("pve-01", TEMPLATE, 175).await;
    let a = lab.delete(&format!("/nodes/pve-01/qemu/{TEMPLATE}")).await;
    let done = lab.wait_task(a.data().as_str().unwrap()).await;
    assert_eq!(
        done["exitstatus"],
        "base volume 'local-lvm:base-9000-disk-0' is still in use by linked cloned"
    );
}

#[tokio::test]
async fn the_agent_answers_500_until_the_lab_marks_it_up_and_stopping_marks_it_down() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    lab.clone_vm("pve-01", TEMPLATE, 180).await;
    let path = "/nodes/pve-01/qemu/180/agent/network-get-interfaces";
    assert_eq!(
        lab.get(path).await.body["message"],
        "VM 180 is not running\n"
    );
    lab.start_vm("pve-01", 180).await;
    assert_eq!(
        lab.get(path).await.body["message"],
        "QEMU guest agent is not running\n"
    );
    let ip: IpAddr = "127.0.1.7".parse().unwrap();
    lab.lab.set_agent(180, Some(vec![ip])).unwrap();
    let a = lab.get(path).await;
    assert_eq!(a.status, 200);
    let eth0 = &a.data()["result"][1];
    assert_eq!(eth0["ip-addresses"][0]["ip-address"], "127.0.1.7");
    assert_eq!(eth0["ip-addresses"][0]["ip-address-type"], "ipv4");
    let mac = lab
        .lab
        .vm(180)
        .unwrap()
        .net0_mac
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(eth0["hardware-address"], mac);
    let stop = lab.post("/nodes/pve-01/qemu/180/status/stop", &[]).await;
    lab.wait_task(stop.data().as_str().unwrap()).await;
    assert!(lab.lab.vm(180).unwrap().agent.is_none());
}

fn rule(op: &str, rate: f64, message: Option<&str>) -> FaultRule {
    FaultRule {
        service: Service::Proxmox,
        op: op.into(),
        error_rate: rate,
        status: None,
        message: message.map(str::to_owned),
        latency_ms: 0,
        times: None,
    }
}

#[tokio::test]
async fn http_faults_repeat_exactly_for_the_same_seed() {
    let mut patterns = Vec::new();
    for _ in 0..2 {
        let lab = start(two_node_cluster(), FAST, 42).await;
        lab.faults
            .set_rules(vec![rule("GET /version", 0.5, Some("injected outage"))]);
        let mut pattern = Vec::new();
        for _ in 0..24 {
            let a = lab.get("/version").await;
            if a.status == 500 {
                assert_eq!(a.body["message"], "injected outage\n");
            }
            pattern.push(a.status);
        }
        patterns.push(pattern);
    }
    assert_eq!(patterns[0], patterns[1]);
    assert!(patterns[0].contains(&500) && patterns[0].contains(&200));
}

#[tokio::test]
async fn a_task_fault_ends_the_clone_with_the_injected_message_and_removes_the_new_vm() {
    let lab = start(two_node_cluster(), FAST, 7).await;
    lab.faults.set_rules(vec![rule(
        "task:qmclone:9000",
        1.0,
        Some("clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"),
    )]);
    let done = lab.clone_vm("pve-01", TEMPLATE, 190).await;
    assert_eq!(
        done["exitstatus"],
        "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
    );
    assert!(lab.lab.vm(190).is_none());
}

#[tokio::test]
async fn pools_can_be_created_listed_and_filled() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    let a = lab
        .post(
            "/pools",
            &[("poolid", "burst"), ("comment", "burst workers")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    let dup = lab.post("/pools", &[("poolid", "burst")]).await;
    assert_eq!(dup.status, 500);
    lab.clone_vm("pve-01", TEMPLATE, 195).await;
    let put = lab.put("/pools/burst", &[("vms", "195")]).await;
    assert_eq!(put.status, 200, "{}", put.raw);
    let one = lab.get("/pools/burst").await;
    assert_eq!(one.data()["comment"], "burst workers");
    assert_eq!(one.data()["members"][0]["id"], "qemu/195");
    let all = lab.get("/pools").await;
    assert_eq!(all.data().as_array().unwrap().len(), 2);
    let mapping = lab.get("/cluster/mapping/pci?check-node=pve-02").await;
    assert_eq!(mapping.data()[0]["id"], "gpu");
    assert_eq!(
        mapping.data()[0]["map"][0],
        "id=10de:2204,node=pve-02,path=0000:01:00.0,iommugroup=14"
    );
}

#[tokio::test]
async fn changes_to_a_running_vm_stay_pending_until_a_reboot() {
    let lab = start(two_node_cluster(), FAST, 1).await;
    lab.clone_vm("pve-01", TEMPLATE, 200).await;
    lab.start_vm("pve-01", 200).await;
    let put = lab
        .put(
            "/nodes/pve-01/qemu/200/config",
            &[("memory", "8192"), ("name", "renamed")],
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.raw);
    let folded = lab.get("/nodes/pve-01/qemu/200/config").await;
    assert_eq!(folded.data()["memory"], "8192");
    let current = lab.get("/nodes/pve-01/qemu/200/config?current=1").await;
    assert_eq!(current.data()["memory"], "4096");
    assert_eq!(current.data()["name"], "renamed");
    let pending = lab.get("/nodes/pve-01/qemu/200/pending").await;
    let row = pending
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "memory")
        .unwrap()
        .clone();
    assert_eq!(
        (row["value"].as_str(), row["pending"].as_str()),
        (Some("4096"), Some("8192"))
    );
    let reboot = lab.post("/nodes/pve-01/qemu/200/status/reboot", &[]).await;
    assert_eq!(
        lab.wait_task(reboot.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let after = lab.get("/nodes/pve-01/qemu/200/config?current=1").await;
    assert_eq!(after.data()["memory"], "8192");
}

#[tokio::test]
async fn nextid_skips_an_id_whose_clone_is_still_running() {
    let mut cfg = two_node_cluster();
    cfg.durations.linked_clone_ms = 60_000_000;
    let lab = start(cfg, FAST, 1).await;
    let a = lab
        .post(
            &format!("/nodes/pve-01/qemu/{TEMPLATE}/clone"),
            &[("newid", "100")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert_eq!(lab.get("/cluster/nextid").await.data(), "101");
    let dup = lab
        .post(
            &format!("/nodes/pve-01/qemu/{TEMPLATE}/clone"),
            &[("newid", "100")],
        )
        .await;
    assert_eq!(
        dup.body["message"],
        "unable to create VM 100: config file already exists\n"
    );
}
