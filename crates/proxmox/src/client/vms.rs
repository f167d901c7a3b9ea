//! Calls on one VM: listing a node's VMs, cloning (with the no-blind-retry
//! rule of the module docs), config reads and updates, status, power
//! actions and delete.

use reqwest::Method;
use tokio::time::Instant;

use super::call::{Call, bool01, decode_upid};
use super::tasks::Pacer;
use super::{CloneStarted, ProxmoxClient};
use crate::error::{Cause, ErrorKind, ProxmoxError};
use crate::types::{
    CloneRequest, ConfigUpdate, DeleteOptions, NodeVm, ShutdownOptions, Upid, VmConfig, VmStatus,
};

impl ProxmoxClient {
    /// `GET /nodes/{node}/qemu`: the VMs of one node.
    ///
    /// # Errors
    /// [`ProxmoxError`], classified.
    pub async fn node_vms(&self, node: &str) -> Result<Vec<NodeVm>, ProxmoxError> {
        let op = format!("listing VMs on {node}");
        self.get(&op, Call::get(&["nodes", node, "qemu"])).await
    }

    /// Starts `POST /nodes/{node}/qemu/{source}/clone`.
    ///
    /// # Guarantees
    /// Never creates a second VM for one request: after a transient failure
    /// it retries only once it has seen that `req.newid` does not exist, and
    /// always with the same `newid` (see the module docs).
    ///
    /// # Errors
    /// Synchronous refusals, classified: `Locked` for a locked source,
    /// `Permanent` for bad parameters or, of kind
    /// [`ErrorKind::AlreadyExists`], for "config file already exists" on the
    /// first attempt; `Auth`, `Transient` once retries are used up.
    pub async fn clone_vm(
        &self,
        node: &str,
        source: u32,
        req: &CloneRequest,
    ) -> Result<CloneStarted, ProxmoxError> {
        let op = format!("cloning VM {source} to {} on {node}", req.newid);
        let form: Vec<(String, String)> = req
            .form()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let source_id = source.to_string();
        let max = self.options.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let call = Call::new(Method::POST, &["nodes", node, "qemu", &source_id, "clone"])
                .form(form.clone())
                .once();
            match self.request(&op, call).await {
                Ok(data) => return decode_upid(&op, data).map(CloneStarted::Task),
                Err(e) if attempt > 1 && e.kind() == ErrorKind::AlreadyExists => {
                    tracing::info!(
                        vmid = req.newid,
                        "a repeated clone found the VM already created; treating the earlier attempt as accepted"
                    );
                    return Ok(CloneStarted::Accepted { vmid: req.newid });
                }
                Err(e) if e.is_transient() => {
                    // The answer may have been lost after the server acted.
                    match self.find_vm(req.newid).await {
                        Ok(Some(_)) => {
                            tracing::info!(vmid = req.newid, error = %e, "clone answer lost but the new VM exists; not cloning again");
                            return Ok(CloneStarted::Accepted { vmid: req.newid });
                        }
                        Ok(None) if attempt < max => {
                            let pause = self.options.retry.backoff(attempt);
                            tracing::debug!(error = %e, attempt, ?pause, "clone failed before the VM appeared; retrying with the same newid");
                            tokio::time::sleep(pause).await;
                            attempt += 1;
                        }
                        // Out of attempts, or unable to tell: do not clone blindly.
                        Ok(None) | Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Clones and waits until the new VM is ready (task finished, `clone`
    /// lock gone). Returns the node the new VM lives on.
    ///
    /// # Errors
    /// As [`ProxmoxClient::clone_vm`] and [`ProxmoxClient::wait_task`];
    /// `Timeout` when `deadline` passes.
    pub async fn clone_and_wait(
        &self,
        node: &str,
        source: u32,
        req: &CloneRequest,
        deadline: Instant,
    ) -> Result<String, ProxmoxError> {
        match self.clone_vm(node, source, req).await? {
            CloneStarted::Task(upid) => {
                let op = format!("cloning VM {source} to {} on {node}", req.newid);
                self.wait_task_as(op, &upid, deadline).await?;
                Ok(req.target.clone().unwrap_or_else(|| node.to_owned()))
            }
            CloneStarted::Accepted { vmid } => self.wait_clone_lock(source, vmid, deadline).await,
        }
    }

    /// Polls until `vmid` exists without a `clone` lock.
    async fn wait_clone_lock(
        &self,
        source: u32,
        vmid: u32,
        deadline: Instant,
    ) -> Result<String, ProxmoxError> {
        let op = format!("waiting for the clone of VM {source} to {vmid}");
        let mut pacer = Pacer::new(&self.options.polling, deadline);
        loop {
            match self.find_vm(vmid).await? {
                None => {
                    return Err(ProxmoxError::TaskFailed {
                        op,
                        upid: String::new(),
                        message: "the new VM disappeared before its clone finished".to_owned(),
                        already_exists: false,
                        source: Cause::Unexpected("clone task UPID unknown (answer lost)".into()),
                    });
                }
                Some(row) if row.lock.as_deref() != Some("clone") => return Ok(row.node),
                Some(_) => {}
            }
            pacer.pause(&op).await?;
        }
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config` (pending values folded in).
    ///
    /// # Errors
    /// A VM that is not on `node` (or nowhere) is `NotFound`.
    pub async fn vm_config(&self, node: &str, vmid: u32) -> Result<VmConfig, ProxmoxError> {
        let op = format!("reading the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let raw = self
            .get(&op, Call::get(&["nodes", node, "qemu", &id, "config"]))
            .await?;
        Ok(VmConfig::from_raw(raw))
    }

    /// `PUT …/config`: applies `update` synchronously. Meant for changes
    /// that need no hotplug or storage (names, tags, smbios, cloud-init,
    /// cores/memory of a stopped VM).
    ///
    /// # Errors
    /// `Locked` for a config lock; `Transient` when the 10 s file-lock wait
    /// ran out (after retries); `Permanent` with the per-field map for
    /// invalid values.
    pub async fn update_config(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<(), ProxmoxError> {
        let op = format!("updating the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let call =
            Call::new(Method::PUT, &["nodes", node, "qemu", &id, "config"]).form(update.form());
        self.request(&op, call).await.map(drop)
    }

    /// `POST …/config`: applies `update` in a `qmconfig` task.
    ///
    /// # Errors
    /// As [`ProxmoxClient::update_config`] for the synchronous checks.
    pub async fn update_config_async(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("updating the config of VM {vmid} on {node}");
        let id = vmid.to_string();
        let call =
            Call::new(Method::POST, &["nodes", node, "qemu", &id, "config"]).form(update.form());
        self.task(&op, call).await
    }

    /// `GET …/status/current`.
    ///
    /// # Errors
    /// A missing VM is `NotFound`.
    pub async fn vm_status(&self, node: &str, vmid: u32) -> Result<VmStatus, ProxmoxError> {
        let op = format!("reading the status of VM {vmid} on {node}");
        let id = vmid.to_string();
        self.get(
            &op,
            Call::get(&["nodes", node, "qemu", &id, "status", "current"]),
        )
        .await
    }

    async fn power(
        &self,
        op: String,
        node: &str,
        vmid: u32,
        action: &str,
        form: Vec<(String, String)>,
    ) -> Result<Upid, ProxmoxError> {
        let id = vmid.to_string();
        let call = Call::new(
            Method::POST,
            &["nodes", node, "qemu", &id, "status", action],
        )
        .form(form);
        self.task(&op, call).await
    }

    /// `POST …/status/start` → the `qmstart` task. Memory and GPU
    /// shortages show up when the task is waited for.
    ///
    /// # Errors
    /// Synchronous refusals, classified.
    pub async fn start(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("starting VM {vmid} on {node}");
        self.power(op, node, vmid, "start", Vec::new()).await
    }

    /// `POST …/status/shutdown` → the `qmshutdown` task.
    ///
    /// # Errors
    /// "VM is paused - cannot shutdown" without `force_stop` is `Permanent`.
    pub async fn shutdown(
        &self,
        node: &str,
        vmid: u32,
        options: &ShutdownOptions,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("shutting down VM {vmid} on {node}");
        let mut form = Vec::new();
        if let Some(t) = options.timeout_secs {
            form.push(("timeout".to_owned(), t.to_string()));
        }
        if options.force_stop {
            form.push(("forceStop".to_owned(), bool01(true)));
        }
        self.power(op, node, vmid, "shutdown", form).await
    }

    /// `POST …/status/stop` → the `qmstop` task (hard stop).
    ///
    /// # Errors
    /// Synchronous refusals, classified.
    pub async fn stop(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("stopping VM {vmid} on {node}");
        self.power(op, node, vmid, "stop", Vec::new()).await
    }

    /// `POST …/status/reboot` → the `qmreboot` task; applies pending
    /// changes.
    ///
    /// # Errors
    /// `VM <id> not running` is `Permanent`.
    pub async fn reboot(&self, node: &str, vmid: u32) -> Result<Upid, ProxmoxError> {
        let op = format!("rebooting VM {vmid} on {node}");
        self.power(op, node, vmid, "reboot", Vec::new()).await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` → the `qmdestroy` task, sent once
    /// (never retried by the client). This call does not check identity;
    /// callers run their destroy interlock (VMID, SMBIOS UUID, ownership
    /// marker) before each attempt.
    ///
    /// # Errors
    /// `VM <id> is running - destroy failed` is `Permanent`; a gone VM is
    /// `NotFound`; a transient failure is returned, not retried.
    pub async fn delete_vm(
        &self,
        node: &str,
        vmid: u32,
        options: &DeleteOptions,
    ) -> Result<Upid, ProxmoxError> {
        let op = format!("deleting VM {vmid} on {node}");
        let id = vmid.to_string();
        // Never retried here: a repeat must follow a fresh identity check
        // by the caller (the VMID may hold another VM by then).
        let mut call = Call::new(Method::DELETE, &["nodes", node, "qemu", &id]).once();
        if options.purge {
            call = call.query("purge", "1");
        }
        if options.destroy_unreferenced_disks {
            call = call.query("destroy-unreferenced-disks", "1");
        }
        self.task(&op, call).await
    }
}
