//! The client's error type: one [`ProxmoxError`] whose variants tell the
//! controller what to do (retry, wait, give up, fix config), built by
//! classifying the HTTP status and the real Proxmox message strings
//! (facts §2.2, §3.5–§3.14). The message names the operation; what the
//! server or the transport said stays in the [`Cause`] source. Callers
//! decide on [`ProxmoxError::kind`], never on the message: every reading
//! of Proxmox's words happens here, once, where the answer is classified.

use std::collections::BTreeMap;
use std::fmt;

/// The kind of capacity that ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Host memory: QEMU could not allocate guest RAM.
    Memory,
    /// A mapped PCI device (GPU) is held by another VM.
    Gpu,
    /// Storage space.
    Storage,
    /// The VMID range is exhausted.
    VmIds,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "host memory",
            Self::Gpu => "PCI device (GPU)",
            Self::Storage => "storage space",
            Self::VmIds => "free VMIDs",
        })
    }
}

/// What a failed call means to its caller: the decision a
/// [`ProxmoxError`] stands for, as a value to `match` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The VM, node, task, pool or mapping does not exist.
    NotFound,
    /// The VM carries a config lock.
    Locked,
    /// Memory, a GPU, storage space or VMIDs ran out.
    InsufficientCapacity,
    /// The token was refused or lacks a privilege.
    Auth,
    /// Worth retrying as is.
    Transient,
    /// What was to be created exists already: the VMID is taken (a
    /// `nextid` probe's "VM <id> already exists", a clone's "config file
    /// already exists", synchronous or from the task). Another create got
    /// there first; pick another VMID.
    AlreadyExists,
    /// Refused for good: retrying the same request cannot help.
    Permanent,
    /// A worker task ended with an error exit status.
    TaskFailed,
    /// The guest agent cannot answer yet: keep polling.
    AgentNotReady,
    /// A wait ran past its deadline; the task may still run.
    Timeout,
}

/// What went wrong underneath an operation: the `source` of every
/// [`ProxmoxError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The API answered with an error status.
    #[error("HTTP {status}: {}", message.trim_end())]
    Api {
        /// HTTP status code.
        status: u16,
        /// The message: the body's `message` key, else the reason phrase.
        message: String,
    },
    /// The request did not complete (connect, TLS, timeout, reset).
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    /// The answer was not what the API documents.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// A worker task ended with an error exit status.
    #[error("task {} ended with '{}'", .0.upid, .0.exitstatus)]
    Task(Box<TaskExit>),
    /// A deadline passed while waiting.
    #[error("deadline passed after {waited_ms} ms")]
    Deadline {
        /// How long was waited, in milliseconds.
        waited_ms: u128,
    },
}

/// How a failed task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskExit {
    /// The task.
    pub upid: String,
    /// The exit status: the error text itself (facts §3.9).
    pub exitstatus: String,
    /// The last lines of the task log, for the details.
    pub log_tail: Vec<String>,
}

impl Cause {
    /// The server's message or the exit status, if this cause has one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Api { message, .. } => Some(message),
            Self::Task(exit) => Some(&exit.exitstatus),
            _ => None,
        }
    }
}

/// A failed Proxmox call, classified.
///
/// Every variant carries `op`, a description of the operation
/// ("cloning VM 9000 to 120 on pve-01"), which starts the message, and the
/// underlying [`Cause`] as `source`.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// The VM, node, task, pool or mapping does not exist.
    #[error("{op}: not found")]
    NotFound {
        /// The operation.
        op: String,
        /// What the server said.
        source: Cause,
    },
    /// The VM carries a config lock (`VM is locked (<lock>)`).
    #[error("{op}: VM is locked ({lock})")]
    Locked {
        /// The operation.
        op: String,
        /// The lock kind: `clone`, `backup`, `migrate`, …
        lock: String,
        /// What the server said.
        source: Cause,
    },
    /// Memory, a GPU or storage space ran out.
    #[error("{op}: not enough {capacity}")]
    InsufficientCapacity {
        /// The operation.
        op: String,
        /// What ran out.
        capacity: Capacity,
        /// What the server said.
        source: Cause,
    },
    /// The token was refused (401) or lacks a privilege (403).
    #[error("{op}: authentication or permission refused (HTTP {status})")]
    Auth {
        /// The operation.
        op: String,
        /// 401 or 403.
        status: u16,
        /// What the server said.
        source: Cause,
    },
    /// Worth retrying: a gateway or proxy error, an unreachable node (595,
    /// 596), a lock wait that timed out, a broken connection.
    #[error("{op}: temporary failure")]
    Transient {
        /// The operation.
        op: String,
        /// What went wrong.
        source: Cause,
    },
    /// Not worth retrying as is: a parameter error (with the per-field
    /// `errors` map of a 400), a refused action, an unexpected answer.
    #[error("{op}: rejected{}", field_summary(errors))]
    Permanent {
        /// The operation.
        op: String,
        /// Per-parameter messages of a 400 "Parameter verification failed.".
        errors: BTreeMap<String, String>,
        /// Whether the refusal says the VMID to create is taken
        /// ([`ErrorKind::AlreadyExists`]).
        already_exists: bool,
        /// What the server said.
        source: Cause,
    },
    /// A worker task ended with an error exit status.
    #[error("{op}: task failed: {message}")]
    TaskFailed {
        /// The operation.
        op: String,
        /// The task.
        upid: String,
        /// The exit status text.
        message: String,
        /// Whether the exit status says the VMID to create is taken
        /// ([`ErrorKind::AlreadyExists`]).
        already_exists: bool,
        /// The exit status and log tail.
        source: Cause,
    },
    /// The guest agent cannot answer yet (VM not running, agent not
    /// started, agent timeout): keep polling.
    #[error("{op}: guest agent not ready")]
    AgentNotReady {
        /// The operation.
        op: String,
        /// What the server said.
        source: Cause,
    },
    /// A wait (for a task) ran past its deadline; the task may still run.
    #[error("{op}: timed out")]
    Timeout {
        /// The operation.
        op: String,
        /// How long was waited.
        source: Cause,
    },
}

fn field_summary(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let fields: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", fields.join("; "))
}

impl ProxmoxError {
    /// What the failure means to the caller: the value to decide on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Locked { .. } => ErrorKind::Locked,
            Self::InsufficientCapacity { .. } => ErrorKind::InsufficientCapacity,
            Self::Auth { .. } => ErrorKind::Auth,
            Self::Transient { .. } => ErrorKind::Transient,
            Self::Permanent {
                already_exists: true,
                ..
            }
            | Self::TaskFailed {
                already_exists: true,
                ..
            } => ErrorKind::AlreadyExists,
            Self::Permanent { .. } => ErrorKind::Permanent,
            Self::TaskFailed { .. } => ErrorKind::TaskFailed,
            Self::AgentNotReady { .. } => ErrorKind::AgentNotReady,
            Self::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    /// A stable, low-cardinality name for metrics and Events: the
    /// variant's. A taken VMID keeps the name of the variant it arrives in
    /// (`permanent` for a refused request, `task_failed` for a task), as
    /// it had before [`ErrorKind::AlreadyExists`] was told apart, so the
    /// labels did not change.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Locked { .. } => "locked",
            Self::InsufficientCapacity { .. } => "insufficient_capacity",
            Self::Auth { .. } => "auth",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::TaskFailed { .. } => "task_failed",
            Self::AgentNotReady { .. } => "agent_not_ready",
            Self::Timeout { .. } => "timeout",
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        match self {
            Self::NotFound { op, .. }
            | Self::Locked { op, .. }
            | Self::InsufficientCapacity { op, .. }
            | Self::Auth { op, .. }
            | Self::Transient { op, .. }
            | Self::Permanent { op, .. }
            | Self::TaskFailed { op, .. }
            | Self::AgentNotReady { op, .. }
            | Self::Timeout { op, .. } => op,
        }
    }

    /// The underlying cause.
    pub fn cause(&self) -> &Cause {
        match self {
            Self::NotFound { source, .. }
            | Self::Locked { source, .. }
            | Self::InsufficientCapacity { source, .. }
            | Self::Auth { source, .. }
            | Self::Transient { source, .. }
            | Self::Permanent { source, .. }
            | Self::TaskFailed { source, .. }
            | Self::AgentNotReady { source, .. }
            | Self::Timeout { source, .. } => source,
        }
    }

    /// A request that did not complete. Certificate verification failures
    /// are `Permanent` (retrying cannot fix a wrong CA or pin); everything
    /// else (refused, reset, timed out) is `Transient`.
    pub(crate) fn transport(op: String, e: reqwest::Error) -> Self {
        if is_certificate_failure(&e) {
            return Self::Permanent {
                op,
                errors: BTreeMap::new(),
                already_exists: false,
                source: Cause::Transport(e),
            };
        }
        Self::Transient {
            op,
            source: Cause::Transport(e),
        }
    }

    pub(crate) fn unexpected(op: String, what: impl Into<String>) -> Self {
        Self::Permanent {
            op,
            errors: BTreeMap::new(),
            already_exists: false,
            source: Cause::Unexpected(what.into()),
        }
    }
}

/// Whether a transport error is rustls refusing the server certificate.
/// rustls errors travel inside `io::Error`s, whose `source()` skips the
/// wrapped error, so each link is also unwrapped with `get_ref`.
fn is_certificate_failure(e: &reqwest::Error) -> bool {
    let is_cert = |err: &(dyn std::error::Error + 'static)| {
        matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        )
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if is_cert(err) {
            return true;
        }
        let wrapped: Option<&(dyn std::error::Error + 'static)> = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        next = wrapped.or_else(|| err.source());
    }
    false
}

/// The lock kind in a `VM is locked (<lock>)` message.
fn locked_kind(message: &str) -> Option<String> {
    let rest = &message[message.find("VM is locked (")? + "VM is locked (".len()..];
    let end = rest.find(')')?;
    Some(rest[..end].to_owned())
}

/// Which capacity a message says ran out, if any. The strings are the
/// emulator's and the real ones (facts §3.5, §3.14; QEMU's allocation
/// failure for memory).
pub(crate) fn capacity_kind(message: &str) -> Option<Capacity> {
    let m = message.to_ascii_lowercase();
    if m.contains("cannot allocate memory") || m.contains("out of memory") {
        Some(Capacity::Memory)
    } else if (m.contains("pci device") && m.contains("already in use by vmid"))
        || m.contains("could not find a free device for")
    {
        Some(Capacity::Gpu)
    } else if m.contains("not enough free space")
        || m.contains("no space left on device")
        || m.contains("insufficient free space")
    {
        Some(Capacity::Storage)
    } else if m.contains("unable to get any free vmid") {
        Some(Capacity::VmIds)
    } else {
        None
    }
}

/// Whether a message says a lock wait or a cluster filesystem lock timed
/// out, or quorum is missing: all conditions that pass by themselves.
pub(crate) fn is_lock_timeout(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("can't lock file") && m.contains("got timeout"))
        || m.contains("got lock request timeout")
        || m.contains("cfs-lock") && m.contains("timeout")
        || m.contains("no quorum")
}

/// Whether a message says the object to create exists already: nextid's
/// "VM <id> already exists" (a 400's `errors`), a clone's "unable to
/// create VM <id>: config file already exists" (synchronous, or the task's
/// exit status when the VMID is taken on another node), facts §3.1, §3.5,
/// §3.13.
fn says_already_exists(message: &str) -> bool {
    message.contains("already exists")
}

fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("configuration file") && m.contains("does not exist"))
        || m.starts_with("no such task")
        || m.contains("no such cluster node")
        || (m.contains("hostname lookup") && m.contains("failed"))
        || (m.contains("pci mapping") && m.contains("not found"))
        || (m.starts_with("pool '") && m.contains("does not exist"))
}

/// Classifies an HTTP error answer of `op`.
///
/// # Guarantees
/// - 401 and 403 are [`ProxmoxError::Auth`].
/// - 502, 503, 504 and 595–599 (pveproxy's proxying failures) are
///   [`ProxmoxError::Transient`], as are lock-wait timeouts and lost quorum.
/// - A missing config, node, task, pool or mapping is `NotFound`;
///   `VM is locked (…)` is `Locked`; memory, GPU and storage exhaustion is
///   `InsufficientCapacity`.
/// - Everything else, including a plain 500 with an unknown message and a
///   400 with its `errors` map, is `Permanent`; of those, a message or a
///   field error saying the VMID already exists is
///   [`ErrorKind::AlreadyExists`].
pub fn classify(
    op: String,
    status: u16,
    message: String,
    errors: BTreeMap<String, String>,
) -> ProxmoxError {
    let first_error = errors.values().next().cloned().unwrap_or_default();
    let text = if message.trim().is_empty() {
        first_error.clone()
    } else {
        message.clone()
    };
    let source = Cause::Api { status, message };
    if matches!(status, 401 | 403) {
        return ProxmoxError::Auth { op, status, source };
    }
    if matches!(status, 502..=504 | 595..=599) || is_lock_timeout(&text) {
        return ProxmoxError::Transient { op, source };
    }
    if let Some(lock) = locked_kind(&text) {
        return ProxmoxError::Locked { op, lock, source };
    }
    if let Some(capacity) = capacity_kind(&text) {
        return ProxmoxError::InsufficientCapacity {
            op,
            capacity,
            source,
        };
    }
    if status >= 500 && is_not_found(&text) {
        return ProxmoxError::NotFound { op, source };
    }
    let already_exists = source.message().is_some_and(says_already_exists)
        || errors.values().any(|m| says_already_exists(m));
    ProxmoxError::Permanent {
        op,
        errors,
        already_exists,
        source,
    }
}

/// Classifies a task that stopped with an error exit status.
///
/// Capacity failures (also when only the log names them, as QEMU's
/// "Cannot allocate memory" under "start failed: QEMU exited with code 1"),
/// config locks and lock-wait timeouts keep their own variants; anything
/// else is [`ProxmoxError::TaskFailed`], of kind
/// [`ErrorKind::AlreadyExists`] when the exit status says the VMID is
/// taken.
pub fn classify_task(
    op: String,
    upid: String,
    exitstatus: String,
    log_tail: Vec<String>,
) -> ProxmoxError {
    let everything = std::iter::once(exitstatus.as_str())
        .chain(log_tail.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    let capacity = capacity_kind(&everything);
    let lock = locked_kind(&exitstatus);
    let timeout = is_lock_timeout(&exitstatus);
    let source = Cause::Task(Box::new(TaskExit {
        upid: upid.clone(),
        exitstatus: exitstatus.clone(),
        log_tail,
    }));
    if let Some(capacity) = capacity {
        return ProxmoxError::InsufficientCapacity {
            op,
            capacity,
            source,
        };
    }
    if let Some(lock) = lock {
        return ProxmoxError::Locked { op, lock, source };
    }
    if timeout {
        return ProxmoxError::Transient { op, source };
    }
    ProxmoxError::TaskFailed {
        op,
        upid,
        already_exists: says_already_exists(&exitstatus),
        message: exitstatus,
        source,
    }
}

/// Whether a task exit status means success: `OK` or `WARNINGS: <n>`
/// (pve-common `upid_status_is_error`).
pub fn exit_status_is_ok(exitstatus: &str) -> bool {
    exitstatus == "OK"
        || exitstatus
            .strip_prefix("WARNINGS: ")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether an agent call's 500 means "not ready yet, keep polling"
/// (facts §3.10).
pub(crate) fn is_agent_not_ready(message: &str) -> bool {
    message.contains("QEMU guest agent is not running")
        || (message.starts_with("VM ") && message.contains(" is not running"))
        || (message.contains("qmp command") && message.contains("got timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(status: u16, msg: &str) -> ProxmoxError {
        classify("op".into(), status, msg.into(), BTreeMap::new())
    }

    #[test]
    fn unauthorized_and_forbidden_are_auth_errors() {
        assert_eq!(c(401, "Authentication failed!").category(), "auth");
        assert_eq!(
            c(403, "Permission check failed (/vms/100, VM.Allocate)").category(),
            "auth"
        );
    }

    #[test]
    fn proxy_failures_gateway_errors_and_lock_timeouts_are_transient() {
        for (status, msg) in [
            (595, "No route to host"),
            (596, "Errors during TLS negotiation"),
            (503, "Service Unavailable"),
            (
                500,
                "can't lock file '/var/lock/qemu-server/lock-130.conf' - got timeout\n",
            ),
            (
                500,
                "cfs-lock 'storage-ceph' error: got lock request timeout",
            ),
            (500, "cluster not ready - no quorum?"),
        ] {
            assert!(c(status, msg).is_transient(), "{status} {msg}");
        }
    }

    #[test]
    fn a_missing_config_is_not_found() {
        let e = c(
            500,
            "Configuration file 'nodes/pve-01/qemu-server/4242.conf' does not exist\n",
        );
        assert_eq!(e.category(), "not_found");
        assert_eq!(c(500, "no such task").category(), "not_found");
    }

    #[test]
    fn a_config_lock_names_its_kind() {
        match c(500, "VM is locked (clone)\n") {
            ProxmoxError::Locked { lock, .. } => assert_eq!(lock, "clone"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gpu_storage_and_vmid_exhaustion_are_capacity_errors() {
        let kind = |e: ProxmoxError| match e {
            ProxmoxError::InsufficientCapacity { capacity, .. } => Some(capacity),
            _ => None,
        };
        assert_eq!(
            kind(c(
                500,
                "PCI device '0000:01:00.0' already in use by VMID '160'"
            )),
            Some(Capacity::Gpu)
        );
        assert_eq!(
            kind(c(500, "could not find a free device for 'hostpci0'")),
            Some(Capacity::Gpu)
        );
        assert_eq!(
            kind(c(
                500,
                "clone failed: not enough free space on storage 'local-lvm'"
            )),
            Some(Capacity::Storage)
        );
        assert_eq!(
            kind(c(
                500,
                "unable to get any free VMID in range [100, 1000000]"
            )),
            Some(Capacity::VmIds)
        );
    }

    #[test]
    fn parameter_errors_are_permanent_and_keep_the_field_map() {
        let errors = BTreeMap::from([("vmid".to_owned(), "VM 200 already exists".to_owned())]);
        let e = classify(
            "probing VMID 200".into(),
            400,
            "Parameter verification failed.\n".into(),
            errors,
        );
        assert_eq!(e.category(), "permanent");
        assert_eq!(
            e.to_string(),
            "probing VMID 200: rejected (vmid: VM 200 already exists)"
        );
        assert_eq!(
            c(500, "VM 170 is running - destroy failed").category(),
            "permanent"
        );
        assert_eq!(
            c(501, "Method 'GET /x' not implemented").category(),
            "permanent"
        );
    }

    #[test]
    fn a_memory_failure_named_only_in_the_task_log_is_a_capacity_error() {
        let e = classify_task(
            "starting VM 154 on pve-01".into(),
            "UPID:x".into(),
            "start failed: QEMU exited with code 1".into(),
            vec!["kvm: cannot set up guest memory 'pc.ram': Cannot allocate memory".into()],
        );
        assert!(matches!(
            e,
            ProxmoxError::InsufficientCapacity {
                capacity: Capacity::Memory,
                ..
            }
        ));
    }

    #[test]
    fn other_task_failures_carry_the_exit_status_as_message() {
        let e = classify_task(
            "op".into(),
            "UPID:y".into(),
            "you can't start a vm if it's a template".into(),
            vec![],
        );
        match &e {
            ProxmoxError::TaskFailed { upid, message, .. } => {
                assert_eq!(upid, "UPID:y");
                assert_eq!(message, "you can't start a vm if it's a template");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "op: task failed: you can't start a vm if it's a template"
        );
    }

    #[test]
    fn wire_answers_map_to_the_kinds_callers_decide_on() {
        use ErrorKind as K;
        let vmid_taken = BTreeMap::from([("vmid".to_owned(), "VM 200 already exists".to_owned())]);
        let bad_field = BTreeMap::from([(
            "cores".to_owned(),
            "value must have a minimum value of 1".to_owned(),
        )]);
        for (status, message, errors, kind) in [
            (401, "Authentication failed!", BTreeMap::new(), K::Auth),
            (595, "No route to host", BTreeMap::new(), K::Transient),
            (500, "no such task", BTreeMap::new(), K::NotFound),
            (500, "VM is locked (backup)\n", BTreeMap::new(), K::Locked),
            (
                500,
                "unable to get any free VMID in range [100, 1000000]",
                BTreeMap::new(),
                K::InsufficientCapacity,
            ),
            (
                400,
                "Parameter verification failed.\n",
                vmid_taken.clone(),
                K::AlreadyExists,
            ),
            // Servers before pve-http-server 5.2 send only the `errors` map.
            (400, "", vmid_taken, K::AlreadyExists),
            (
                500,
                "unable to create VM 120: config file already exists",
                BTreeMap::new(),
                K::AlreadyExists,
            ),
            (
                400,
                "Parameter verification failed.\n",
                bad_field,
                K::Permanent,
            ),
            (
                500,
                "VM 170 is running - destroy failed",
                BTreeMap::new(),
                K::Permanent,
            ),
        ] {
            let e = classify("op".into(), status, message.into(), errors);
            assert_eq!(e.kind(), kind, "{status} {message:?}: {e}");
        }
    }

    #[test]
    fn a_taken_vmid_keeps_the_category_of_its_variant() {
        let refused = c(500, "unable to create VM 120: config file already exists");
        assert_eq!(refused.kind(), ErrorKind::AlreadyExists);
        assert_eq!(refused.category(), "permanent");
        let task = classify_task(
            "cloning VM 9000 to 120 on pve-02".into(),
            "UPID:z".into(),
            "clone failed: unable to create VM 120: config file already exists".into(),
            vec![],
        );
        assert_eq!(task.kind(), ErrorKind::AlreadyExists);
        assert_eq!(task.category(), "task_failed");
    }

    #[test]
    fn task_exits_map_to_kinds() {
        let kind =
            |exit: &str| classify_task("op".into(), "UPID:t".into(), exit.into(), vec![]).kind();
        assert_eq!(kind("VM is locked (clone)"), ErrorKind::Locked);
        assert_eq!(
            kind("can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout"),
            ErrorKind::Transient
        );
        assert_eq!(
            kind("start failed: QEMU exited with code 1: Cannot allocate memory"),
            ErrorKind::InsufficientCapacity
        );
        assert_eq!(kind("interrupted by signal"), ErrorKind::TaskFailed);
    }

    #[test]
    fn ok_and_warnings_exit_statuses_are_success() {
        assert!(exit_status_is_ok("OK"));
        assert!(exit_status_is_ok("WARNINGS: 3"));
        assert!(!exit_status_is_ok("WARNINGS: "));
        assert!(!exit_status_is_ok("interrupted by signal"));
        assert!(!exit_status_is_ok("unexpected status"));
    }

    #[test]
    fn agent_startup_messages_mean_not_ready() {
        assert!(is_agent_not_ready("QEMU guest agent is not running\n"));
        assert!(is_agent_not_ready("VM 180 is not running\n"));
        assert!(is_agent_not_ready(
            "VM 180 qmp command 'guest-network-get-interfaces' failed - got timeout"
        ));
        assert!(!is_agent_not_ready("No QEMU guest agent configured"));
    }
}
