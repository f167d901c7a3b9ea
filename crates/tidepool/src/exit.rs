//! Exit codes scripts can rely on.

use std::process::ExitCode;

/// How a `tidepool` invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 1: the operation failed (an API error, a timeout, a failed step).
    Failure,
    /// 2: bad usage, an invalid request, or an invalid or unreadable configuration.
    Invalid,
    /// 3: a safety rule refused the operation.
    Refused,
    /// 4: no such worker.
    NotFound,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Failure => 1,
            Self::Invalid => 2,
            Self::Refused => 3,
            Self::NotFound => 4,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// The table printed at the end of `tidepool --help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (API error, timeout, failed lifecycle step)
  2  bad usage, an invalid request, or an invalid or unreadable configuration
  3  refused by a safety rule (permanent, unmanaged or protected worker; not drained)
  4  no such worker";
