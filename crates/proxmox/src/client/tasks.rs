//! Tasks: status, log, and waiting for a task to end with growing pauses
//! up to a deadline; the failure of a task is classified from its exit
//! status and the tail of its log.

use std::time::Duration;

use tokio::time::Instant;

use super::ProxmoxClient;
use super::call::Call;
use crate::error::{self, Cause, ProxmoxError};
use crate::retry::TaskPolling;
use crate::types::{TaskLogLine, TaskStatus, Upid};

/// How many trailing task-log lines a task failure carries.
const LOG_TAIL: usize = 20;

/// Describes what a task does, for error messages of waits.
fn describe_task(upid: &Upid) -> String {
    let what = match upid.kind.as_str() {
        "qmclone" => "cloning VM",
        "qmstart" => "starting VM",
        "qmshutdown" => "shutting down VM",
        "qmstop" => "stopping VM",
        "qmreboot" => "rebooting VM",
        "qmdestroy" => "destroying VM",
        "qmconfig" => "updating the config of VM",
        other => return format!("task {other} {} on {}", upid.id, upid.node),
    };
    format!("{what} {} on {}", upid.id, upid.node)
}

impl ProxmoxClient {
    /// `GET /nodes/{node}/tasks/{upid}/status`, on the node in the UPID.
    ///
    /// # Errors
    /// An unknown task is `NotFound`.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ProxmoxError> {
        let op = format!("reading the status of task {}", describe_task(upid));
        self.get(
            &op,
            Call::get(&["nodes", &upid.node, "tasks", upid.as_str(), "status"]),
        )
        .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=`.
    ///
    /// # Errors
    /// An unknown task is `NotFound`.
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<Vec<TaskLogLine>, ProxmoxError> {
        let op = format!("reading the log of task {}", describe_task(upid));
        self.get(
            &op,
            Call::get(&["nodes", &upid.node, "tasks", upid.as_str(), "log"])
                .query("start", start)
                .query("limit", limit),
        )
        .await
    }

    /// Polls a task (on the node in its UPID) with growing pauses until it
    /// stops or `deadline` passes.
    ///
    /// # Guarantees
    /// Exit status `OK` and `WARNINGS: <n>` are success (facts §3.9).
    ///
    /// # Errors
    /// A failed task is classified from its exit status and the tail of its
    /// log: `InsufficientCapacity` (memory, GPU, storage), `Locked`,
    /// `Transient` (lock-wait timeouts), otherwise `TaskFailed` with the
    /// exit status as message. `Timeout` when the deadline passes first
    /// (the task keeps running). Polling errors are returned as they are.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        deadline: Instant,
    ) -> Result<TaskStatus, ProxmoxError> {
        self.wait_task_as(describe_task(upid), upid, deadline).await
    }

    /// [`ProxmoxClient::wait_task`] with errors naming `op`.
    pub(super) async fn wait_task_as(
        &self,
        op: String,
        upid: &Upid,
        deadline: Instant,
    ) -> Result<TaskStatus, ProxmoxError> {
        let mut pacer = Pacer::new(&self.options.polling, deadline);
        loop {
            let status = self.task_status(upid).await?;
            if status.is_stopped() {
                let exit = status.exitstatus.clone().unwrap_or_default();
                if error::exit_status_is_ok(&exit) {
                    return Ok(status);
                }
                let tail = match self.task_log(upid, 0, 1000).await {
                    Ok(lines) => {
                        let skip = lines.len().saturating_sub(LOG_TAIL);
                        lines.into_iter().skip(skip).map(|l| l.t).collect()
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the log of a failed task");
                        Vec::new()
                    }
                };
                return Err(error::classify_task(op, upid.to_string(), exit, tail));
            }
            pacer.pause(&op).await?;
        }
    }
}

/// The pace of a poll loop: pauses that grow as [`TaskPolling`] says,
/// until the next pause would pass the deadline.
pub(super) struct Pacer<'a> {
    polling: &'a TaskPolling,
    started: Instant,
    pause: Duration,
    deadline: Instant,
}

impl<'a> Pacer<'a> {
    /// Starts the clock of a poll that must end by `deadline`.
    pub(super) fn new(polling: &'a TaskPolling, deadline: Instant) -> Self {
        Self {
            polling,
            started: Instant::now(),
            pause: polling.initial,
            deadline,
        }
    }

    /// Sleeps before the next poll.
    ///
    /// # Errors
    /// `Timeout` naming `op` when the pause would pass the deadline (the
    /// awaited work may still be going on).
    pub(super) async fn pause(&mut self, op: &str) -> Result<(), ProxmoxError> {
        if Instant::now() + self.pause > self.deadline {
            return Err(ProxmoxError::Timeout {
                op: op.to_owned(),
                source: Cause::Deadline {
                    waited_ms: self.started.elapsed().as_millis(),
                },
            });
        }
        tokio::time::sleep(self.pause).await;
        self.pause = self.polling.next(self.pause);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_described_by_what_they_do() {
        let upid: Upid = "UPID:pve-01:0000A1B2:0001C3D4:679A423B:qmstart:154:root@pam!tp:"
            .parse()
            .unwrap();
        assert_eq!(describe_task(&upid), "starting VM 154 on pve-01");
    }
}
