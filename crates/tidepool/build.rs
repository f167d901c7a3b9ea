//! Build facts for `tidepool version`: the commit the binary was built from
//! (`unknown` outside a git checkout), the target triple and the profile.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { " (modified)" } else { "" };
    println!("cargo:rustc-env=TIDEPOOL_GIT_COMMIT={commit}{suffix}");
    println!(
        "cargo:rustc-env=TIDEPOOL_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=TIDEPOOL_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    // A new commit (or a checkout) changes HEAD or the ref it points at.
    for path in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/index",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
