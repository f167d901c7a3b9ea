//! The control plane's processes: each a child of the lab with its output
//! in a log file under the state directory, killed (and reaped) when its
//! handle drops, so no test leaves an etcd or an API server behind.
//!
//! A lab can also die without dropping anything (a test harness's SIGKILL
//! after a timeout). So each component runs under a small `sh` watchdog
//! that holds the read end of a pipe from the lab: when the lab's end
//! closes — on drop, or because the lab died — the watchdog kills the
//! component. The watchdog exits with the component's status when the
//! component exits by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Why a component could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary is not installed where the lab looks.
    #[error(
        "{name} not found: build it with scripts/upstream.sh and point TIDEPOOL_UPSTREAM_BIN at the directories it prints (or put it on PATH)"
    )]
    Missing {
        /// The binary's name.
        name: String,
    },
    /// Spawning or logging failed.
    #[error("starting {name}")]
    Spawn {
        /// The binary's name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it became ready.
    #[error("{name} exited ({status}) before it was ready; the end of {log}:\n{tail}")]
    Exited {
        /// The binary's name.
        name: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: String,
        /// The last lines of the log.
        tail: String,
    },
    /// It did not become ready in time.
    #[error("{name} was not ready after {seconds} s; the end of {log}:\n{tail}")]
    Timeout {
        /// The binary's name.
        name: String,
        /// How long the lab waited.
        seconds: u64,
        /// Its log file.
        log: String,
        /// The last lines of the log.
        tail: String,
    },
}

/// Finds `name` in the directories of `TIDEPOOL_UPSTREAM_BIN` (a
/// `PATH`-style list, what `scripts/upstream.sh` prints), then on `PATH`.
///
/// # Errors
/// [`ProcessError::Missing`].
pub fn find_binary(name: &str) -> Result<PathBuf, ProcessError> {
    let dirs = std::env::var_os("TIDEPOOL_UPSTREAM_BIN")
        .into_iter()
        .chain(std::env::var_os("PATH"))
        .flat_map(|list| std::env::split_paths(&list).collect::<Vec<_>>());
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::Missing {
        name: name.to_owned(),
    })
}

/// Runs `$0 "$@"` in the background, kills it (SIGKILL: a lab's control
/// plane keeps nothing worth a graceful stop) once the lab's end of stdin
/// closes, then removes `$TIDEPOOL_LAB_DISCARD` (etcd's data: 64 MiB of
/// preallocated log per lab) and exits as the component exited. The reader
/// gets stdin through fd 3 because `sh` gives background jobs /dev/null.
const WATCHDOG: &str = r#"exec 3<&0; "$0" "$@" </dev/null & pid=$!; (cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null) & exec 3<&-; wait "$pid"; s=$?; [ -n "$TIDEPOOL_LAB_DISCARD" ] && rm -rf "$TIDEPOOL_LAB_DISCARD"; exit $s"#;

/// One running component; dropping it kills the process.
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Component {
    /// Starts `binary` with `args`, logging to `<log_dir>/<name>.log`;
    /// `discard` (a data directory) is removed once the process is gone,
    /// however the lab ends.
    ///
    /// # Errors
    /// [`ProcessError::Missing`] or [`ProcessError::Spawn`].
    pub fn spawn(
        name: &str,
        log_dir: &Path,
        args: &[String],
        discard: Option<&Path>,
    ) -> Result<Self, ProcessError> {
        let binary = find_binary(name)?;
        let spawn_err = |source| ProcessError::Spawn {
            name: name.to_owned(),
            source,
        };
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&binary)
            .args(args)
            .env("TIDEPOOL_LAB_DISCARD", discard.unwrap_or(Path::new("")))
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        tracing::debug!(component = name, pid = child.id(), "started");
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Err` when the process has exited.
    ///
    /// # Errors
    /// [`ProcessError::Exited`] with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), ProcessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.display().to_string(),
                tail: self.tail(),
            }),
            Err(e) => Err(ProcessError::Exited {
                name: self.name.clone(),
                status: e.to_string(),
                log: self.log.display().to_string(),
                tail: self.tail(),
            }),
        }
    }

    /// The error to give when the component was not ready after `seconds`.
    pub fn timeout(&self, seconds: u64) -> ProcessError {
        ProcessError::Timeout {
            name: self.name.clone(),
            seconds,
            log: self.log.display().to_string(),
            tail: self.tail(),
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill the component; the
        // watchdog exits once the component has.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
