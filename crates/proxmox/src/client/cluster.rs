//! Cluster-wide reads and writes: version, nodes, VMID allocation, the
//! guest and storage rows of `/cluster/resources`, PCI mappings and
//! resource pools.

use reqwest::Method;
use serde_json::Value;

use super::ProxmoxClient;
use super::call::{Call, bool01};
use crate::error::ProxmoxError;
use crate::types::{
    ClusterStorage, ClusterVm, NodeInfo, NodeStatus, PciMapping, PoolInfo, RawPciMapping,
    RawPoolDetails, Version, guest_members,
};

impl ProxmoxClient {
    /// `GET /version`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn version(&self) -> Result<Version, ProxmoxError> {
        self.get("reading the API version", Call::get(&["version"]))
            .await
    }

    /// `GET /nodes`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ProxmoxError> {
        self.get("listing nodes", Call::get(&["nodes"])).await
    }

    /// `GET /nodes/{node}/status`: memory and CPU figures.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified; an offline node is `Transient` (595).
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, ProxmoxError> {
        let op = format!("reading the status of node {node}");
        self.get(&op, Call::get(&["nodes", node, "status"])).await
    }

    /// `GET /cluster/nextid`: the lowest free VMID, or with `probe`, that
    /// id if it is free. Not a reservation: clone and handle the race.
    ///
    /// # Errors
    /// A taken `probe` is `Permanent` with `errors["vmid"]` = `VM <id>
    /// already exists`; an exhausted range is `InsufficientCapacity`.
    pub async fn next_id(&self, probe: Option<u32>) -> Result<u32, ProxmoxError> {
        let op = match probe {
            Some(id) => format!("probing VMID {id}"),
            None => "allocating a VMID".to_owned(),
        };
        let mut call = Call::get(&["cluster", "nextid"]);
        if let Some(id) = probe {
            call = call.query("vmid", id);
        }
        let data = self.request(&op, call).await?;
        let text = match &data {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        text.parse()
            .map_err(|_| ProxmoxError::unexpected(op, format!("expected a VMID, got {data}")))
    }

    /// `GET /cluster/resources?type=vm`: every guest in the cluster.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, ProxmoxError> {
        self.get(
            "listing cluster VMs",
            Call::get(&["cluster", "resources"]).query("type", "vm"),
        )
        .await
    }

    /// `GET /cluster/resources?type=storage`: every storage on every node.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn cluster_storage(&self) -> Result<Vec<ClusterStorage>, ProxmoxError> {
        self.get(
            "listing cluster storage",
            Call::get(&["cluster", "resources"]).query("type", "storage"),
        )
        .await
    }

    /// The cluster row of `vmid`, if the VM exists anywhere.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn find_vm(&self, vmid: u32) -> Result<Option<ClusterVm>, ProxmoxError> {
        Ok(self
            .cluster_vms()
            .await?
            .into_iter()
            .find(|row| row.vmid == vmid && row.kind == "qemu"))
    }

    /// `GET /cluster/mapping/pci[?check-node=]`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn pci_mappings(
        &self,
        check_node: Option<&str>,
    ) -> Result<Vec<PciMapping>, ProxmoxError> {
        let mut call = Call::get(&["cluster", "mapping", "pci"]);
        if let Some(node) = check_node {
            call = call.query("check-node", node);
        }
        let raw: Vec<RawPciMapping> = self.get("listing PCI mappings", call).await?;
        Ok(raw.into_iter().map(PciMapping::from).collect())
    }

    /// `GET /access/permissions?path=`: the privileges the token holds on
    /// `path` (its own ACLs, inherited ones and, for a VM, its pool's).
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn permissions_on(
        &self,
        path: &str,
    ) -> Result<std::collections::BTreeSet<String>, ProxmoxError> {
        let op = format!("reading the token's privileges on {path}");
        let by_path: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Value>> =
            self.get(
                &op,
                Call::get(&["access", "permissions"]).query("path", path),
            )
            .await?;
        Ok(by_path
            .into_values()
            .flat_map(std::collections::BTreeMap::into_keys)
            .collect())
    }

    /// `GET /pools`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn pools(&self) -> Result<Vec<PoolInfo>, ProxmoxError> {
        self.get("listing pools", Call::get(&["pools"])).await
    }

    /// The guests in pool `poolid` (`GET /pools?poolid=`, PVE 8.1+).
    ///
    /// # Errors
    /// A missing pool is `NotFound`.
    pub async fn pool_members(&self, poolid: &str) -> Result<Vec<ClusterVm>, ProxmoxError> {
        let op = format!("listing members of pool {poolid}");
        let rows: Vec<RawPoolDetails> = self
            .get(&op, Call::get(&["pools"]).query("poolid", poolid))
            .await?;
        Ok(rows
            .into_iter()
            .flat_map(|r| guest_members(r.members))
            .collect())
    }

    /// Adds VMs to pool `poolid` (`PUT /pools?poolid=`); with
    /// `allow_move` a VM may be taken from another pool.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn add_to_pool(
        &self,
        poolid: &str,
        vmids: &[u32],
        allow_move: bool,
    ) -> Result<(), ProxmoxError> {
        let op = format!("adding VMs {vmids:?} to pool {poolid}");
        let mut form = vec![("vms".to_owned(), join_ids(vmids))];
        if allow_move {
            form.push(("allow-move".to_owned(), bool01(true)));
        }
        let call = Call::new(Method::PUT, &["pools"])
            .query("poolid", poolid)
            .form(form);
        self.request(&op, call).await.map(drop)
    }

    /// Removes VMs from pool `poolid`.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn remove_from_pool(&self, poolid: &str, vmids: &[u32]) -> Result<(), ProxmoxError> {
        let op = format!("removing VMs {vmids:?} from pool {poolid}");
        let form = vec![
            ("vms".to_owned(), join_ids(vmids)),
            ("delete".to_owned(), bool01(true)),
        ];
        let call = Call::new(Method::PUT, &["pools"])
            .query("poolid", poolid)
            .form(form);
        self.request(&op, call).await.map(drop)
    }
}

fn join_ids(vmids: &[u32]) -> String {
    vmids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
