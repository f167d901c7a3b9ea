//! Writes the `WorkerClaim` CRD to `deploy/crds/workerclaims.tidepool.dev.yaml`
//! (or prints it with `--stdout`). Run after changing `crates/cluster/src/claim.rs`:
//! `cargo run -p tidepool-cluster --example gen-crd`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match tidepool_cluster::claim::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("error: serialising the WorkerClaim CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--stdout") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds/workerclaims.tidepool.dev.yaml");
    if let Err(e) = std::fs::write(&path, yaml) {
        eprintln!("error: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
