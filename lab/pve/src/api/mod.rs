//! The emulated endpoints: routing of `/api2/json` paths to handlers, the
//! synchronous checks each one makes, and the worker tasks (clone, config,
//! start, shutdown, stop, reboot, destroy) they start.

mod agent;
mod clone;
mod config;
mod destroy;
mod mappings;
mod nodes;
mod pools;
mod power;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::lab::{Shared, TaskCtx};
use crate::params::{Params, parse_int};
use crate::state::{State, Vm};
use agent::agent_interfaces;
use clone::clone;
use config::{config_get, config_update, pending};
use destroy::destroy;
use mappings::{pci_mapping, pci_mappings};
use nodes::{nextid, node_status, nodes, qemu_list, resources, version};
use pools::{pool_get, pools_create, pools_delete, pools_get, pools_update};
use power::{power, status_current};
use tasks::{task_log, task_status};

/// A successful answer: `data` plus the optional top-level `total`.
#[derive(Debug)]
pub(crate) struct Reply {
    pub data: Value,
    pub total: Option<usize>,
}

impl From<Value> for Reply {
    fn from(data: Value) -> Self {
        Self { data, total: None }
    }
}

impl From<String> for Reply {
    fn from(upid: String) -> Self {
        Value::String(upid).into()
    }
}

/// The version this emulator claims to be.
const PVE_VERSION: &str = "8.4.1";
const PVE_REPOID: &str = "2a5fa54a8503f96d";

fn not_implemented() -> ApiError {
    // The server fills in "Method '<m> <path>' not implemented".
    ApiError::status(501, "")
}

type R = Result<Reply, ApiError>;

/// Dispatches one authenticated request.
pub(crate) async fn route(shared: &Arc<Shared>, method: &Method, seg: &[&str], p: &Params) -> R {
    let m = method.as_str();
    {
        let st = shared.state();
        crate::access::authorize(&shared.config, &st, m, seg, p)?;
    }
    match (m, seg) {
        ("GET", ["access", "permissions"]) => {
            let st = shared.state();
            Ok(crate::access::permissions(&shared.config, &st, p)?.into())
        }
        ("GET", ["version"]) => Ok(version().into()),
        ("GET", ["nodes"]) => Ok(nodes(shared).into()),
        ("GET", ["cluster", "nextid"]) => nextid(shared, p),
        ("GET", ["cluster", "resources"]) => {
            let mut reply = resources(shared, p)?;
            crate::access::filter_resources(&shared.config, &shared.state(), &mut reply.data);
            Ok(reply)
        }
        ("GET", ["cluster", "mapping", "pci"]) => Ok(pci_mappings(shared, p).into()),
        ("GET", ["cluster", "mapping", "pci", id]) => pci_mapping(shared, id),
        ("GET", ["pools"]) => pools_get(shared, p),
        ("POST", ["pools"]) => pools_create(shared, p),
        ("PUT", ["pools"]) => pools_update(shared, p.required("poolid")?, p),
        ("DELETE", ["pools"]) => pools_delete(shared, p.required("poolid")?),
        ("GET", ["pools", id]) => pool_get(shared, id),
        ("PUT", ["pools", id]) => pools_update(shared, id, p),
        ("DELETE", ["pools", id]) => pools_delete(shared, id),
        (_, ["nodes", node, rest @ ..]) => {
            check_node(shared, node)?;
            node_route(shared, m, node, rest, p).await
        }
        _ => Err(not_implemented()),
    }
}

async fn node_route(shared: &Arc<Shared>, m: &str, node: &str, seg: &[&str], p: &Params) -> R {
    match (m, seg) {
        ("GET", ["status"]) => Ok(node_status(shared, node).into()),
        ("GET", ["qemu"]) => Ok(qemu_list(shared, node).into()),
        ("GET", ["tasks", upid, "status"]) => task_status(shared, node, upid),
        ("GET", ["tasks", upid, "log"]) => task_log(shared, node, upid, p),
        (_, ["qemu", vmid, rest @ ..]) => {
            let vmid = parse_vmid(vmid)?;
            vm_route(shared, m, node, vmid, rest, p).await
        }
        _ => Err(not_implemented()),
    }
}

async fn vm_route(
    shared: &Arc<Shared>,
    m: &str,
    node: &str,
    vmid: u32,
    seg: &[&str],
    p: &Params,
) -> R {
    match (m, seg) {
        ("GET", []) => {
            shared.state().vm_on(node, vmid)?;
            let dirs = ["config", "pending", "status", "agent", "clone"];
            Ok(Value::Array(dirs.iter().map(|d| json!({ "subdir": d })).collect()).into())
        }
        ("DELETE", []) => destroy(shared, node, vmid, p),
        ("POST", ["clone"]) => clone(shared, node, vmid, p),
        ("GET", ["config"]) => config_get(shared, node, vmid, p),
        ("POST", ["config"]) => config_update(shared, node, vmid, p, true).await,
        ("PUT", ["config"]) => config_update(shared, node, vmid, p, false).await,
        ("GET", ["pending"]) => pending(shared, node, vmid),
        ("GET", ["status", "current"]) => status_current(shared, node, vmid),
        ("POST", ["status", action]) => power(shared, node, vmid, action, p),
        ("GET", ["agent", "network-get-interfaces"]) => agent_interfaces(shared, node, vmid),
        _ => Err(not_implemented()),
    }
}

fn parse_vmid(raw: &str) -> Result<u32, ApiError> {
    parse_int(raw, 100, 999_999_999)
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
        .map_err(|m| ApiError::param("vmid", m))
}

fn check_node(shared: &Shared, node: &str) -> Result<(), ApiError> {
    let st = shared.state();
    match st.nodes.get(node) {
        None => Err(ApiError::die(format!(
            "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
        ))),
        Some(n) if !n.spec.online => Err(ApiError::status(595, "No route to host")),
        Some(_) => Ok(()),
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Starts task `kind` on VM `vmid`, running `work` (given the task and the
/// node name) while it holds the VM's config lock, waited for up to 10 s as
/// `qm` does. Returns the UPID.
fn vm_task<F, Fut>(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    kind: &'static str,
    work: F,
) -> String
where
    F: FnOnce(TaskCtx, String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let owned = node.to_owned();
    shared.start_task(
        node,
        kind,
        &vmid.to_string(),
        move |ctx: TaskCtx| async move {
            let _guard = ctx
                .shared
                .lock_config(vmid, Duration::from_secs(10))
                .await?;
            work(ctx, owned).await
        },
    )
}

/// VM `vmid` on `node` for a task's early checks, refused while it carries
/// a config lock.
fn unlocked_vm<'a>(st: &'a State, node: &str, vmid: u32) -> Result<&'a Vm, String> {
    let vm = st.vm_on(node, vmid).map_err(|e| e.message)?;
    if let Some(lock) = vm.lock() {
        return Err(format!("VM is locked ({lock})"));
    }
    Ok(vm)
}

/// Appends a line to a task's log, under the state lock.
fn ctx_log(st: &mut State, upid: &str, line: String) {
    if let Some(t) = st.tasks.get_mut(upid) {
        t.log.push(line);
    }
}
