//! Worker tasks by UPID: their status and their log.

use serde_json::{Value, json};

use super::{R, Reply};
use crate::error::ApiError;
use crate::lab::Shared;
use crate::params::Params;
use crate::state::TaskStatus;

fn find_task(shared: &Shared, node: &str, upid: &str) -> Result<crate::state::Task, ApiError> {
    let parts: Vec<&str> = upid.split(':').collect();
    if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    let st = shared.state();
    st.tasks
        .get(upid)
        .filter(|t| t.node == node)
        .cloned()
        .ok_or_else(|| ApiError::die("no such task"))
}

pub(super) fn task_status(shared: &Shared, node: &str, upid: &str) -> R {
    let t = find_task(shared, node, upid)?;
    let (user, tokenid) = match t.user.split_once('!') {
        Some((u, tok)) => (u.to_owned(), Some(tok.to_owned())),
        None => (t.user.clone(), None),
    };
    let mut v = json!({
        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": user,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(tok) = tokenid {
            obj.insert("tokenid".into(), tok.into());
        }
        match t.status {
            TaskStatus::Running => {
                obj.insert("status".into(), "running".into());
            }
            TaskStatus::Stopped(exit) => {
                obj.insert("status".into(), "stopped".into());
                obj.insert("exitstatus".into(), exit.into());
            }
        }
    }
    Ok(v.into())
}

pub(super) fn task_log(shared: &Shared, node: &str, upid: &str, p: &Params) -> R {
    p.only(|k| matches!(k, "start" | "limit" | "download"))?;
    let t = find_task(shared, node, upid)?;
    let start = usize::try_from(p.int("start", 0, i64::MAX)?.unwrap_or(0)).unwrap_or(0);
    let limit = usize::try_from(p.int("limit", 0, i64::MAX)?.unwrap_or(50)).unwrap_or(50);
    if t.log.is_empty() {
        return Ok(Reply {
            data: json!([{ "n": 1, "t": "no content" }]),
            total: Some(1),
        });
    }
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({ "n": i + 1, "t": l }))
        .collect();
    Ok(Reply {
        data: Value::Array(lines),
        total: Some(t.log.len()),
    })
}
