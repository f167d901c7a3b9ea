//! The release artifacts that scripts/release.sh builds (scripts/test.sh
//! runs it and passes the directory as `TIDEPOOL_RELEASE_DIR`): a static
//! binary without the lab, and an OCI image around it that runs as the
//! non-root user 65532 with `tidepool` as its entrypoint and no shell. The
//! image is read as any registry client would — index, manifest, config,
//! layers, each checked against its digest — then unpacked, and the binary
//! runs from it (inside a chroot of the unpacked image when the tests run
//! as root).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn release_dir() -> PathBuf {
    PathBuf::from(std::env::var("TIDEPOOL_RELEASE_DIR").unwrap_or_else(|_| {
        panic!("TIDEPOOL_RELEASE_DIR is not set: run scripts/release.sh (scripts/test.sh does)")
    }))
}

/// A blob of the layout, checked against its digest.
fn blob(oci: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = oci.join("blobs/sha256").join(hex);
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    let sum = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        sum.split_whitespace().next(),
        Some(hex),
        "{digest} is intact"
    );
    std::fs::read(path).unwrap()
}

fn json_blob(oci: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(oci, digest)).unwrap()
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP segment).
fn wants_loader(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[32..40].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

fn unpack(layer: &[u8], into: &Path) -> Vec<String> {
    std::fs::create_dir_all(into).unwrap();
    let tgz = into.with_extension("tgz");
    std::fs::write(&tgz, layer).unwrap();
    let list = Command::new("tar").arg("-tzf").arg(&tgz).output().unwrap();
    assert!(list.status.success());
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(ok.success());
    String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect()
}

#[test]
fn the_release_binary_is_static_and_has_no_lab() {
    let bin = release_dir().join("tidepool");
    assert!(!wants_loader(&std::fs::read(&bin).unwrap()), "static");
    let out = Command::new(&bin).arg("version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    // scripts/test.sh checks a dev-profile build; release.sh ships `release`.
    let profile = std::env::var("TIDEPOOL_RELEASE_PROFILE").unwrap_or_else(|_| "release".into());
    let profile = if profile == "dev" { "debug" } else { "release" };
    assert!(text.contains(&format!("profile: {profile}")), "{text}");
    assert!(text.contains("lab:     left out"), "{text}");
    let lab = Command::new(&bin).arg("lab").output().unwrap();
    assert!(!lab.status.success(), "no lab in a release binary");
    eprintln!(
        "static release binary: {} bytes",
        std::fs::metadata(&bin).unwrap().len()
    );
}

#[test]
fn the_image_runs_tidepool_as_non_root_without_a_shell() {
    let oci = release_dir().join("oci");
    let layout: Value =
        serde_json::from_str(&std::fs::read_to_string(oci.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(oci.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let manifest = json_blob(&oci, manifests[0]["digest"].as_str().unwrap());
    let config = json_blob(&oci, manifest["config"]["digest"].as_str().unwrap());

    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/tidepool"])
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "tidepool"
    );

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    let dir = std::env::temp_dir().join(format!("tidepool-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let layer = blob(&oci, layers[0]["digest"].as_str().unwrap());
    let files = unpack(&layer, &dir.join("rootfs"));
    let rootfs = dir.join("rootfs");
    for want in ["tidepool", "etc/passwd", "etc/group", "tmp/"] {
        assert!(files.iter().any(|f| f == want), "{want} in {files:?}");
    }
    for shell in ["bin/sh", "bin/bash", "bin/busybox", "usr/bin/env"] {
        assert!(!rootfs.join(shell).exists(), "no {shell}");
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    // Run the entrypoint from the unpacked image: as root, confined to it
    // (chroot, as user 65532), which also proves it needs nothing else.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let out = if is_root {
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/tidepool", "version"])
            .output()
            .unwrap()
    } else {
        Command::new(rootfs.join("tidepool"))
            .arg("version")
            .output()
            .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("tidepool "), "{text}");
    eprintln!(
        "image: one layer of {} bytes (compressed); ran in a chroot: {is_root}",
        layer.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
