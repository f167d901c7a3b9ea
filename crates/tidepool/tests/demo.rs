//! `tidepool demo`, the README's first command, run as a newcomer runs it
//! (faster): every workload gets capacity and every added worker goes away,
//! and the terminal shows the story only (the logs go to a file).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_scales_a_burst_up_and_back_down() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(["--time-scale", "1500", "demo", "--budget", "180"])
        .env_remove("TIDEPOOL_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The story stays clean: no log lines and no colour codes among it; the
    // logs (the Talos trust-on-first-use warnings among them) are in the
    // file the demo names.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("WARN") && !text.contains("INFO") && !text.contains('\u{1b}'),
            "{text}"
        );
    }
    let log = stdout
        .split("logs in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("the demo names its log file\n{stdout}"));
    let logged = std::fs::read_to_string(log).unwrap();
    assert!(
        logged.contains("WARN") && !logged.contains('\u{1b}'),
        "{logged}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "burst: 8 CI runners (3 CPU, 6Gi each)",
        "gpu: 1 inference job (1 nvidia.com/gpu)",
        "spot: 5 batch pods (1 CPU, 2Gi each)",
        "Every workload got capacity and every worker Tidepool added is gone again.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("NOT all Running"), "{stdout}");
    let added = stdout
        .lines()
        .find(|l| l.contains("workers added:"))
        .unwrap();
    let removed = stdout
        .lines()
        .find(|l| l.contains("workers removed:"))
        .unwrap();
    let count = |l: &str| {
        l.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert!(count(added) >= 4, "{added}");
    assert_eq!(count(added), count(removed));
    assert!(added.contains("gpu: 1 gpu"), "{added}");
}
