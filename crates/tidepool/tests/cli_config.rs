//! The `tidepool config` commands, run as a user would run them.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn tidepool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(args)
        .env_remove("TIDEPOOL_CONFIG")
        .output()
        .expect("run tidepool")
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidepool-cli-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn the_printed_example_passes_check_with_a_summary() {
    let example = tidepool(&["config", "example"]);
    assert!(example.status.success());
    let dir = tempdir();
    let file = write(
        &dir,
        "tidepool.yaml",
        &String::from_utf8(example.stdout).unwrap(),
    );
    let out = tidepool(&["config", "check", &file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary = stdout.split_once('\n').unwrap().1;
    insta::assert_snapshot!("example_summary", summary);
}

#[test]
fn an_invalid_file_lists_every_error_with_file_line_and_column_and_exits_2() {
    let dir = tempdir();
    let example = String::from_utf8(tidepool(&["config", "example"]).stdout).unwrap();
    let broken = example
        .replace(
            "limits: {minNodes: 3, maxNodes: 6}",
            "limits: {minNodes: 9, maxNodes: 6}",
        )
        .replace("sizes: [small]", "sizes: [smal]");
    let file = write(&dir, "broken.yaml", &broken);
    let out = tidepool(&["config", "check", &file]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Where the broken value sits in the file, as an editor counts (1-based).
    let line = broken
        .lines()
        .position(|l| l.contains("minNodes: 9"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "{file}:{line}:24: pools[0].limits.minNodes: minNodes (9) is greater than maxNodes (6)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("pools[2].sizes[0]: unknown size `smal`, did you mean `small`?"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors found"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_config_flag_and_environment_choose_the_file() {
    let dir = tempdir();
    let example = String::from_utf8(tidepool(&["config", "example"]).stdout).unwrap();
    let file = write(&dir, "via-env.yaml", &example);
    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(["config", "check"])
        .env("TIDEPOOL_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = tidepool(&["--config", &file, "config", "check"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn mcp_with_an_invalid_configuration_exits_2_before_serving() {
    let dir = tempdir();
    let bad = write(&dir, "tidepool.yaml", "pools: [\n");
    let out = tidepool(&["--config", &bad, "mcp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no MCP answer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid YAML"));
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let out = tidepool(&["config", "check", "/nonexistent/tidepool.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/tidepool.yaml: cannot read the configuration")
    );
}

#[test]
fn json_and_yaml_output_are_machine_readable() {
    let dir = tempdir();
    let example = String::from_utf8(tidepool(&["config", "example"]).stdout).unwrap();
    let file = write(&dir, "t.yaml", &example);
    let out = tidepool(&["-o", "json", "config", "check", &file]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pools"][1]["name"], "burst");
    assert_eq!(v["pools"][1]["ttl"], "4h");
    assert_eq!(v["providers"]["pve"]["token"]["env"], "PROXMOX_TOKEN");
    let out = tidepool(&["-o", "yaml", "config", "check", &file]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("name: burst")
    );
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(tidepool(&["config", "frobnicate"]).status.code(), Some(2));
    assert_eq!(
        tidepool(&["-o", "xml", "config", "example"]).status.code(),
        Some(2)
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = tidepool(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Exit codes:"));
    assert!(
        text.contains(
            "2  bad usage, an invalid request, or an invalid or unreadable configuration"
        )
    );
    assert!(text.contains("3  refused by a safety rule"));
    assert!(text.contains("4  no such worker"));
}

#[test]
fn version_names_the_build() {
    let out = tidepool(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("tidepool {}", env!("CARGO_PKG_VERSION")));
    for key in ["commit:", "target:", "profile:", "lab:"] {
        let line = lines.iter().find(|l| l.starts_with(key)).unwrap();
        assert!(line.len() > key.len() + 2, "{line}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_grammar() {
    for (shell, marker) in [
        ("bash", "_tidepool()"),
        ("zsh", "#compdef tidepool"),
        ("fish", "complete -c tidepool"),
    ] {
        let out = tidepool(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        // Every command and a flag of one of them (`--pool`; fish writes
        // `-l pool`) can be completed.
        for word in ["provision", "destroy", "orphans", "pool"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    assert_ne!(tidepool(&["completions", "tcsh"]).status.code(), Some(0));

    let out = tidepool(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH tidepool 1"), "{page}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH \"TIDEPOOL PROVISION\"",
        ".SH \"TIDEPOOL DESTROY\"",
        ".SH \"TIDEPOOL RUN\"",
    ] {
        assert!(page.contains(section), "missing {section}");
    }
    assert!(
        page.contains(r"\-\-pool"),
        "the provision options are listed"
    );
}
