//! A guest's power state as the API reports it ([`VmState`]): the `status`
//! of `/cluster/resources` rows, of `/nodes/{node}/qemu` rows and of
//! `status/current`, read once here into a value callers `match` on.
//!
//! `/cluster/resources` passes on QMP's status while a VM runs, so besides
//! `running` and `stopped` it may say `paused`, `prelaunch`, `suspended`,
//! `inmigrate`, `postmigrate`, and `unknown` before pvestatd has seen a
//! fresh clone (facts §3.2). Values this list does not know are kept, not
//! refused: a new Proxmox release must not make a whole listing unreadable.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The power state of a guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum VmState {
    /// QEMU runs the guest.
    Running,
    /// No QEMU process.
    Stopped,
    /// The guest is paused (QMP `paused`).
    Paused,
    /// QEMU started but the guest has not begun (QMP `prelaunch`).
    Prelaunch,
    /// Suspended to disk or memory (QMP `suspended`).
    Suspended,
    /// The incoming side of a live migration (QMP `inmigrate`).
    InMigrate,
    /// The outgoing side after a live migration (QMP `postmigrate`).
    PostMigrate,
    /// Not known yet (pvestatd has no data, e.g. a fresh clone), or the
    /// field was missing.
    #[default]
    Unknown,
    /// A value this client does not know, as sent.
    Other(String),
}

impl VmState {
    /// The state a wire value names; unknown values become [`Self::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            "prelaunch" => Self::Prelaunch,
            "suspended" => Self::Suspended,
            "inmigrate" => Self::InMigrate,
            "postmigrate" => Self::PostMigrate,
            "unknown" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
            Self::Prelaunch => "prelaunch",
            Self::Suspended => "suspended",
            Self::InMigrate => "inmigrate",
            Self::PostMigrate => "postmigrate",
            Self::Unknown => "unknown",
            Self::Other(value) => value,
        }
    }

    /// Whether QEMU runs the guest: `running` only (a paused or migrating
    /// guest is not).
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for VmState {
    /// Any string is accepted; `null` is [`VmState::Unknown`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Option::<String>::deserialize(deserializer)?;
        Ok(value.as_deref().map_or(Self::Unknown, Self::parse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_map_to_states_and_back() {
        for (wire, state) in [
            ("running", VmState::Running),
            ("stopped", VmState::Stopped),
            ("paused", VmState::Paused),
            ("prelaunch", VmState::Prelaunch),
            ("suspended", VmState::Suspended),
            ("inmigrate", VmState::InMigrate),
            ("postmigrate", VmState::PostMigrate),
            ("unknown", VmState::Unknown),
            ("hibernating", VmState::Other("hibernating".into())),
        ] {
            assert_eq!(VmState::parse(wire), state, "{wire}");
            assert_eq!(state.as_str(), wire);
        }
    }

    #[test]
    fn only_running_counts_as_running() {
        assert!(VmState::Running.is_running());
        for state in [
            VmState::Paused,
            VmState::Prelaunch,
            VmState::InMigrate,
            VmState::Unknown,
            VmState::Other("Running".into()),
        ] {
            assert!(!state.is_running(), "{state}");
        }
    }

    #[test]
    fn unknown_and_missing_values_do_not_fail_parsing() {
        let parse = |json: &str| serde_json::from_str::<VmState>(json).unwrap();
        assert_eq!(parse(r#""running""#), VmState::Running);
        assert_eq!(parse(r#""io-error""#), VmState::Other("io-error".into()));
        assert_eq!(parse("null"), VmState::Unknown);
    }
}
