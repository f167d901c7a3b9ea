//! Tasks: the UPID that names one, its status and its log lines.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A task id, `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`
/// (facts §3.9). Displays as the original string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    /// The node that runs the task; poll it there.
    pub node: String,
    /// Task type, e.g. `qmclone`, `qmstart`.
    pub kind: String,
    /// Task object id (for `qmclone` the *source* VMID); may be empty.
    pub id: String,
    /// `user@realm` or `user@realm!token`.
    pub user: String,
    /// Start time, unix seconds.
    pub starttime: i64,
}

/// A string that is not a UPID.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a UPID")]
pub struct UpidParseError(pub String);

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UpidParseError(s.to_owned());
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
            return Err(bad());
        }
        let node = parts[1];
        let node_ok =
            !node.is_empty() && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let hex_ok = parts[2..5]
            .iter()
            .all(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !node_ok || !hex_ok || parts[5].is_empty() || parts[7].is_empty() {
            return Err(bad());
        }
        Ok(Self {
            raw: s.to_owned(),
            node: node.to_owned(),
            kind: parts[5].to_owned(),
            id: parts[6].to_owned(),
            user: parts[7].to_owned(),
            starttime: i64::from_str_radix(parts[4], 16).map_err(|_| bad())?,
        })
    }
}

impl Upid {
    /// The UPID string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.raw)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub upid: String,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// Task type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Once stopped: `OK`, `WARNINGS: n`, or the error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// `user@realm` (the token name is in `tokenid`).
    #[serde(default)]
    pub user: String,
    /// Token name, for token-owned tasks.
    #[serde(default)]
    pub tokenid: Option<String>,
}

impl TaskStatus {
    /// Whether the task has finished.
    pub fn is_stopped(&self) -> bool {
        self.status == "stopped"
    }

    /// Whether it finished successfully (`OK` or `WARNINGS: n`).
    pub fn succeeded(&self) -> bool {
        self.is_stopped()
            && self
                .exitstatus
                .as_deref()
                .is_some_and(crate::error::exit_status_is_ok)
    }
}

/// One line of a task log.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskLogLine {
    /// 1-based line number.
    pub n: u64,
    /// Text.
    pub t: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_upid_parses_into_its_parts_and_displays_unchanged() {
        let s = "UPID:pve-mp:00000ACD:00006AE8:679A423B:qmclone:112:capmox@pve!capi:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(u.node, "pve-mp");
        assert_eq!(u.kind, "qmclone");
        assert_eq!(u.id, "112");
        assert_eq!(u.user, "capmox@pve!capi");
        assert_eq!(u.starttime, 0x679A423B);
        assert_eq!(u.to_string(), s);
        assert!("UPID:x".parse::<Upid>().is_err());
        assert!("UPID:n:1:2:3:vzdump::root@pam:".parse::<Upid>().is_ok());
    }
}
