//! Resource pools: listing, reading, creating, updating and deleting them.

use serde_json::{Value, json};

use super::nodes::vm_row;
use super::{R, parse_vmid};
use crate::error::ApiError;
use crate::lab::Shared;
use crate::options;
use crate::params::Params;
use crate::state::State;

fn pool_id_ok(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        })
}

fn pool_members(st: &State, id: &str) -> Vec<Value> {
    st.vms
        .values()
        .filter(|vm| vm.pool.as_deref() == Some(id))
        .map(|vm| vm_row(st, vm))
        .collect()
}

pub(super) fn pools_get(shared: &Shared, p: &Params) -> R {
    p.only(|k| matches!(k, "poolid" | "type"))?;
    let st = shared.state();
    if let Some(id) = p.get("poolid") {
        let Some(pool) = st.pools.get(id) else {
            return Err(ApiError::die(format!("pool '{id}' does not exist")));
        };
        let members = if matches!(p.get("type"), None | Some("qemu")) {
            pool_members(&st, id)
        } else {
            Vec::new()
        };
        let mut row = json!({ "poolid": id, "members": members });
        if let (Some(c), Some(obj)) = (&pool.comment, row.as_object_mut()) {
            obj.insert("comment".into(), c.clone().into());
        }
        return Ok(json!([row]).into());
    }
    let rows = st
        .pools
        .iter()
        .map(|(id, pool)| match &pool.comment {
            Some(c) => json!({ "poolid": id, "comment": c }),
            None => json!({ "poolid": id }),
        })
        .collect();
    Ok(Value::Array(rows).into())
}

pub(super) fn pool_get(shared: &Shared, id: &str) -> R {
    let st = shared.state();
    let Some(pool) = st.pools.get(id) else {
        return Err(ApiError::die(format!("pool '{id}' does not exist")));
    };
    let mut v = json!({ "members": pool_members(&st, id) });
    if let (Some(c), Some(obj)) = (&pool.comment, v.as_object_mut()) {
        obj.insert("comment".into(), c.clone().into());
    }
    Ok(v.into())
}

pub(super) fn pools_create(shared: &Shared, p: &Params) -> R {
    p.only(|k| matches!(k, "poolid" | "comment"))?;
    let id = p.required("poolid")?;
    if !pool_id_ok(id) {
        return Err(ApiError::param(
            "poolid",
            format!("invalid format - pool name '{id}' contains illegal characters"),
        ));
    }
    let mut st = shared.state();
    if st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "create pool failed: pool '{id}' already exists"
        )));
    }
    st.pools.insert(
        id.to_owned(),
        crate::state::Pool {
            comment: p.get("comment").map(str::to_owned),
        },
    );
    Ok(Value::Null.into())
}

pub(super) fn pools_update(shared: &Shared, id: &str, p: &Params) -> R {
    p.only(|k| {
        matches!(
            k,
            "poolid" | "comment" | "vms" | "storage" | "delete" | "allow-move"
        )
    })?;
    let delete = p.bool("delete")?.unwrap_or(false);
    let allow_move = p.bool("allow-move")?.unwrap_or(false);
    let mut st = shared.state();
    if !st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "update pools failed: pool '{id}' does not exist"
        )));
    }
    let vmids: Vec<u32> = options::split_list(p.get("vms").unwrap_or(""))
        .iter()
        .map(|v| parse_vmid(v))
        .collect::<Result<_, _>>()?;
    for vmid in &vmids {
        let Some(vm) = st.vms.get(vmid) else {
            return Err(ApiError::die(format!(
                "update pools failed: VM {vmid} does not exist"
            )));
        };
        if delete {
            if vm.pool.as_deref() != Some(id) {
                return Err(ApiError::die(format!(
                    "update pools failed: VM {vmid} is not a pool member"
                )));
            }
        } else if let Some(other) = &vm.pool
            && other != id
            && !allow_move
        {
            return Err(ApiError::die(format!(
                "update pools failed: VM {vmid} is already a pool member"
            )));
        }
    }
    for vmid in vmids {
        if let Some(vm) = st.vms.get_mut(&vmid) {
            vm.pool = if delete { None } else { Some(id.to_owned()) };
        }
    }
    if let (Some(c), Some(pool)) = (p.get("comment"), st.pools.get_mut(id)) {
        pool.comment = Some(c.to_owned());
    }
    Ok(Value::Null.into())
}

pub(super) fn pools_delete(shared: &Shared, id: &str) -> R {
    let mut st = shared.state();
    if !st.pools.contains_key(id) {
        return Err(ApiError::die(format!(
            "delete pool failed: pool '{id}' does not exist"
        )));
    }
    if st.vms.values().any(|vm| vm.pool.as_deref() == Some(id)) {
        return Err(ApiError::die(format!(
            "delete pool failed: pool '{id}' is not empty"
        )));
    }
    st.pools.remove(id);
    Ok(Value::Null.into())
}
