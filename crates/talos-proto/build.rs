//! Compiles the vendored Talos `.proto` subset with the pure-Rust `protox`
//! compiler (no `protoc` needed) and generates prost messages plus tonic
//! clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/google/rpc/status.proto",
        "proto/common/common.proto",
        "proto/machine/machine.proto",
        "proto/cluster/cluster.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
