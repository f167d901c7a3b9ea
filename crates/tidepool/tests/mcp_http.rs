//! MCP over streamable HTTP, seen by the official Python MCP client (PyPI
//! `mcp`, from the fidelity virtualenv) against the real binary
//! (`tidepool mcp --listen`) and a lab started in-process: no token or a
//! wrong one gets 401 and a foreign Origin 403; a read token cannot call a
//! mutating tool; destroying with force needs a confirmation; the audit
//! actor is the token's name; `--read-only` hides and refuses the mutating
//! tools; ten concurrent sessions make a hundred calls each without an
//! error; a server whose cluster does not answer still initializes;
//! `tidepool run` serves MCP beside the controller when configured; and no
//! answer ever holds a token or the lab's Proxmox token.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tidepool_lab::{LabOptions, RunningLab, Scenario};

const SCALE: &str = "100";
const WRITE_TOKEN: &str = "tp-write-3f9c1e7a5b2d4680";
const READ_TOKEN: &str = "tp-read-8d2e6a0c4f1b3957";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDEPOOL_FIDELITY_PYTHON") {
        return PathBuf::from(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = workspace.join("target/fidelity-venv/bin/python");
    assert!(
        venv.exists(),
        "the fidelity virtualenv is missing: run scripts/fidelity-venv.sh (or set \
         $TIDEPOOL_FIDELITY_PYTHON) — expected {}",
        venv.display()
    );
    venv
}

async fn lab(name: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-mcp-http-{name}-{}", std::process::id())),
        time_scale: SCALE.parse().unwrap(),
        seed: 5,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

/// The lab's configuration with `server.mcp`: a write token from the
/// environment and a read token from a file.
fn config_with_tokens(lab: &RunningLab) -> PathBuf {
    let dir = &lab.files.dir;
    std::fs::write(dir.join("mcp-read.token"), format!("{READ_TOKEN}\n")).unwrap();
    let mut text = std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap();
    text.push_str(
        "  mcp:\n    tokens:\n      \
         - {name: ops, scope: write, tokenFrom: {env: TP_MCP_WRITE}}\n      \
         - {name: dash, scope: read, tokenFrom: {file: mcp-read.token}}\n    \
         allowedOrigins: [\"https://agent.example.com\"]\n",
    );
    let path = dir.join("tidepool-mcp.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `tidepool mcp --listen` and its URL.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tidepool mcp --listen 127.0.0.1:0` with `extra` flags and reads
/// the address it serves from its stderr.
fn serve(lab: &RunningLab, config: &Path, kubeconfig: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--time-scale", SCALE])
        .args(["--time-origin", &lab.clock.origin_unix_ms().to_string()])
        .args(["mcp", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TP_MCP_WRITE", WRITE_TOKEN)
        .env("TIDEPOOL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tidepool mcp");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "tidepool mcp ended before serving");
        if let Some(url) = line.trim().strip_prefix("serving MCP at ") {
            break url.to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Served { child, url }
}

/// Runs one scenario of the Python client; its output on failure.
async fn client(lab: &RunningLab, scenario: &str, url: &str, tokens: &[&str]) -> String {
    let proxmox_token = std::fs::read_to_string(lab.files.dir.join("proxmox-token")).unwrap();
    let secrets = [WRITE_TOKEN, READ_TOKEN, proxmox_token.trim()].join("\n");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/http_client.py");
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .arg(scenario)
        .arg(url)
        .args(tokens)
        .env("MCP_SECRETS", secrets)
        .env("MCP_TOOLS", tidepool_core::config::MCP_TOOLS.join(","))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{scenario} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_origins_and_confirmation_over_http_with_the_python_client() {
    let lab = lab("access").await;
    let config = config_with_tokens(&lab);
    let served = serve(&lab, &config, &lab.files.kubeconfig, &[]);
    let out = client(&lab, "access", &served.url, &[WRITE_TOKEN, READ_TOKEN]).await;
    assert!(out.starts_with("ok access"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_hides_and_refuses_the_mutating_tools() {
    let lab = lab("readonly").await;
    let config = config_with_tokens(&lab);
    let served = serve(&lab, &config, &lab.files.kubeconfig, &["--read-only"]);
    let out = client(&lab, "readonly", &served.url, &[WRITE_TOKEN]).await;
    assert!(out.starts_with("ok readonly"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_sessions_make_a_hundred_calls_each_without_an_error() {
    let lab = lab("load").await;
    let config = config_with_tokens(&lab);
    let served = serve(&lab, &config, &lab.files.kubeconfig, &[]);
    let out = client(&lab, "load", &served.url, &[READ_TOKEN]).await;
    assert_eq!(out.trim(), "ok load 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_cluster_does_not_answer_still_initializes() {
    let lab = lab("unreachable").await;
    let config = config_with_tokens(&lab);
    // A kubeconfig naming a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = std::fs::read_to_string(&lab.files.kubeconfig).unwrap();
    let server_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        .to_owned();
    let kubeconfig = lab.files.dir.join("unreachable.kubeconfig");
    std::fs::write(
        &kubeconfig,
        text.replace(
            &server_line,
            &format!("    server: http://127.0.0.1:{port}"),
        ),
    )
    .unwrap();
    let served = serve(&lab, &config, &kubeconfig, &[]);
    let out = client(&lab, "unreachable", &served.url, &[READ_TOKEN]).await;
    assert!(out.starts_with("ok unreachable"), "{out}");
}

/// A loopback port free right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidepool_run_serves_mcp_beside_the_controller_when_configured() {
    let lab = lab("run").await;
    let config = config_with_tokens(&lab);
    let (metrics, mcp) = (free_port(), free_port());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "metricsAddr: 127.0.0.1:9464",
            &format!("metricsAddr: 127.0.0.1:{metrics}"),
        )
        .replace(
            "  mcp:\n",
            &format!("  mcp:\n    listen: 127.0.0.1:{mcp}\n"),
        );
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&lab.files.kubeconfig)
        .args(["--time-scale", SCALE])
        .args(["--time-origin", &lab.clock.origin_unix_ms().to_string()])
        .arg("run")
        .env("TP_MCP_WRITE", WRITE_TOKEN)
        .env("TIDEPOOL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidepool run");
    let served = Served {
        child,
        url: format!("http://127.0.0.1:{mcp}/mcp"),
    };
    // The controller binds its ports once connected: wait until MCP answers.
    let mut up = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", mcp))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(up, "tidepool run never listened on the MCP port");
    let out = client(&lab, "serves", &served.url, &[WRITE_TOKEN, READ_TOKEN]).await;
    assert!(out.starts_with("ok serves"), "{out}");
}
