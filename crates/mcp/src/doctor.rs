//! The `run_doctor` tool's port and types: the MCP crate knows only the
//! controller, so the front-end that has the live clients hands it a
//! [`DoctorPort`] that runs `tidepool doctor`'s checks (read-only) and
//! answers with a [`DoctorResult`].

use std::future::Future;
use std::pin::Pin;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Arguments of `run_doctor`: none.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("properties" = {}))]
pub struct DoctorArgs {}

/// One check: a precondition of the setup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DoctorCheck {
    /// A stable id, e.g. `proxmox pve privileges` or `template burst/small`.
    pub id: String,
    /// `pass`, `warn` or `fail`.
    pub status: String,
    /// What was found.
    pub message: String,
    /// What to do about a warning or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What `run_doctor` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DoctorResult {
    /// Whether no check failed (warnings allowed).
    pub ok: bool,
    /// Every check, in the order it ran.
    pub checks: Vec<DoctorCheck>,
}

/// The answer of one doctor run: the result, or why it could not run at
/// all (a message without secrets).
pub type DoctorRun<'a> = Pin<Box<dyn Future<Output = Result<DoctorResult, String>> + Send + 'a>>;

/// Runs the doctor's checks against the configured setup, read-only.
pub trait DoctorPort: Send + Sync {
    /// Runs every check once.
    fn run(&self) -> DoctorRun<'_>;
}
